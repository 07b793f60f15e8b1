"""The triplet loss, the miners, the Siamese head and the verification threshold, checked
against hand computations, brute force, PyTorch and scikit-learn."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve
from sklearn.metrics.pairwise import cosine_distances

from cnnkit.errors import CnnkitError
from cnnkit.faces.losses import (
    SiameseHead,
    batch_all_triplets,
    batch_hard_triplets,
    random_triplets,
    semi_hard_triplets,
    triplet_loss,
)
from cnnkit.faces.verify import (
    calibrate,
    distance_matrix,
    open_set_threshold,
    pair_distances,
    roc,
)


def test_triplet_loss_by_hand():
    A = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    P = torch.tensor([[1.0, 0.0], [1.0, 2.0]])  # d_ap = 1, 1
    N = torch.tensor([[0.0, 2.0], [1.0, 1.5]])  # d_an = 4, 0.25
    # per triplet: max(1 - 4 + 0.2, 0) = 0 and max(1 - 0.25 + 0.2, 0) = 0.95
    assert triplet_loss(A, P, N).item() == pytest.approx(0.95)
    assert triplet_loss(A, P, N, reduction="mean").item() == pytest.approx(0.475)
    assert triplet_loss(A, P, N, alpha=3.5, reduction="none").tolist() == pytest.approx([0.5, 4.25])
    # the pitfall: summing over the batch before the hinge lets the easy triplet pay
    # for the hard one: max(2 - 4.25 + 0.2, 0) = 0, not 0.95
    wrong = torch.clamp(((A - P) ** 2).sum() - ((A - N) ** 2).sum() + 0.2, min=0)
    assert wrong.item() == 0.0 and triplet_loss(A, P, N).item() > 0.9


def test_triplet_loss_agrees_with_torch_on_squared_distances():
    g = torch.Generator().manual_seed(0)
    A, P, N = (torch.randn(64, 16, generator=g) for _ in range(3))
    ref = torch.nn.TripletMarginWithDistanceLoss(
        distance_function=lambda x, y: (x - y).pow(2).sum(-1), margin=0.2, reduction="sum"
    )
    assert triplet_loss(A, P, N, alpha=0.2).item() == pytest.approx(ref(A, P, N).item(), rel=1e-6)
    # TripletMarginLoss uses ||.|| (not squared): equal when fed encodings whose squared
    # distances are those norms, e.g. 1-d encodings of sqrt-spaced points
    a = torch.zeros(5, 1)
    p = torch.tensor([[1.0], [2.0], [0.5], [3.0], [0.1]])  # squared distances to a
    n = torch.tensor([[2.0], [1.0], [3.0], [0.5], [4.0]])
    ours = triplet_loss(a, p.sqrt(), n.sqrt(), alpha=0.3, reduction="mean")
    theirs = torch.nn.TripletMarginLoss(margin=0.3, p=2, eps=0)(a, p, n)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    with pytest.raises(CnnkitError, match="one shape"):
        triplet_loss(A, P[:3], N)


def _batch(seed=0, persons=4, K=3, d=8):
    g = torch.Generator().manual_seed(seed)
    emb = torch.nn.functional.normalize(torch.randn(persons * K, d, generator=g), dim=1)
    labels = torch.arange(persons).repeat_interleave(K)
    return emb, labels


def test_batch_hard_is_the_farthest_positive_and_nearest_negative():
    emb, labels = _batch(1)
    D = torch.cdist(emb, emb) ** 2
    a, p, n = batch_hard_triplets(emb, labels)
    assert a.tolist() == list(range(len(labels)))
    for i in range(len(labels)):
        pos = [j for j in range(len(labels)) if labels[j] == labels[i] and j != i]
        neg = [j for j in range(len(labels)) if labels[j] != labels[i]]
        assert p[i].item() == max(pos, key=lambda j: D[i, j].item())
        assert n[i].item() == min(neg, key=lambda j: D[i, j].item())


def test_semi_hard_by_brute_force():
    emb, labels = _batch(2, persons=5, K=4)
    D = (torch.cdist(emb, emb) ** 2).tolist()
    a, p, n = semi_hard_triplets(emb, labels)
    got = {(int(x), int(y)): int(z) for x, y, z in zip(a, p, n)}
    L = labels.tolist()
    pairs = [(i, j) for i, j in itertools.permutations(range(len(L)), 2) if L[i] == L[j]]
    assert set(got) == set(pairs)
    for i, j in pairs:
        neg = [k for k in range(len(L)) if L[k] != L[i]]
        semi = [k for k in neg if D[i][k] > D[i][j]]
        want = min(semi, key=lambda k: D[i][k]) if semi else max(neg, key=lambda k: D[i][k])
        assert got[(i, j)] == want


def test_random_and_batch_all_triplets_are_valid_and_complete():
    _, labels = _batch(3)
    a, p, n = random_triplets(labels, torch.Generator().manual_seed(0))
    assert len(a) == 4 * 3 * 2  # every ordered positive pair
    assert (labels[a] == labels[p]).all() and (a != p).all() and (labels[a] != labels[n]).all()
    a, p, n = batch_all_triplets(labels)
    assert len(a) == 4 * 3 * 2 * 9  # times every negative
    assert (labels[a] != labels[n]).all()


def test_triplet_task_loss_and_active_share():
    from cnnkit.faces.train import TripletTask

    emb, labels = _batch(4, persons=3, K=2)
    y = labels.view(3, 2)  # (P, K)
    task = TripletTask("batch_hard", alpha=0.5)
    a, p, n = batch_hard_triplets(emb, labels)
    want = triplet_loss(emb[a], emb[p], emb[n], 0.5, reduction="mean")
    assert task.loss(emb, y).item() == pytest.approx(want.item())
    sums = torch.zeros(task.n_sums, dtype=torch.float64)
    task.count(sums, emb, y, task.loss(emb, y))
    D = (torch.cdist(emb, emb) ** 2).tolist()
    L = labels.tolist()
    trip = [
        (i, j, k)
        for i, j, k in itertools.product(range(6), repeat=3)
        if L[i] == L[j] and i != j and L[k] != L[i]
    ]
    active = sum(D[i][j] - D[i][k] + 0.5 > 0 for i, j, k in trip)
    assert task.summarize(sums)["active"] == pytest.approx(active / len(trip))
    assert task.eval_loss(emb, y).item() == pytest.approx(
        np.mean([max(D[i][j] - D[i][k] + 0.5, 0) for i, j, k in trip]), rel=1e-5
    )


def test_siamese_head_is_the_course_formula():
    g = torch.Generator().manual_seed(5)
    fi, fj = torch.rand(4, 6, generator=g), torch.rand(4, 6, generator=g)
    for variant in ("l1", "chi2"):
        head = SiameseHead(6, variant)
        w, b = head.fc.weight.detach()[0], head.fc.bias.detach()[0]
        phi = (fi - fj).abs() if variant == "l1" else (fi - fj) ** 2 / (fi + fj + 1e-6)
        want = torch.sigmoid((phi * w).sum(1) + b)
        assert torch.allclose(torch.sigmoid(head(fi, fj)), want, atol=1e-6)
    same = torch.tensor([1, 0, 1, 0])
    bce = torch.nn.functional.binary_cross_entropy(want, same.float())
    assert head.loss(fi, fj, same).item() == pytest.approx(bce.item(), rel=1e-5)


def test_distances_match_numpy_and_sklearn():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(4, 5))
    D = distance_matrix(a, b)
    assert np.allclose(D, np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)))
    assert np.allclose(distance_matrix(a, b, "cosine"), cosine_distances(a, b))
    assert np.allclose(pair_distances(a[:4], b), np.diag(D[:4]))
    u = a / np.linalg.norm(a, axis=1, keepdims=True)
    # on unit vectors euclidean^2 = 2 * cosine
    assert np.allclose(distance_matrix(u, u) ** 2, 2 * distance_matrix(u, u, "cosine"))


def test_roc_matches_sklearn_and_the_three_thresholds():
    rng = np.random.default_rng(1)
    same = rng.random(400) < 0.5
    d = np.where(same, rng.normal(0.6, 0.2, 400), rng.normal(1.1, 0.2, 400))
    d = np.clip(d, 0.05, None).round(2)  # distances are >= 0; rounding makes ties
    t, far, tar = roc(d, same)
    fpr, tpr, _ = roc_curve(same, -d, drop_intermediate=False)
    assert {(round(x, 12), round(y, 12)) for x, y in zip(far, tar)} == {
        (round(x, 12), round(y, 12)) for x, y in zip(fpr, tpr)
    }
    # brute force over every threshold
    acc = np.array([((d <= x) == same).mean() for x in t])
    cal = calibrate(d, same, "accuracy")
    assert cal.accuracy == pytest.approx(acc.max())
    assert ((d <= cal.threshold) == same).mean() == pytest.approx(cal.accuracy)
    cal = calibrate(d, same, "far", target_far=0.05)
    assert cal.far <= 0.05 and (d[~same] <= cal.threshold).mean() == pytest.approx(cal.far)
    bigger = t[t > cal.threshold]
    assert not len(bigger) or (d[~same] <= bigger[0]).mean() > 0.05  # the most accepting one
    cal = calibrate(d, same, "eer")
    gaps = np.abs(far - (1 - tar))
    assert abs(cal.far - cal.frr) == pytest.approx(gaps.min())
    assert cal.eer == pytest.approx((cal.far + cal.frr) / 2)
    from sklearn.metrics import roc_auc_score

    assert cal.auc == pytest.approx(roc_auc_score(same, -d), abs=1e-9)
    with pytest.raises(CnnkitError, match="pairs of one person and pairs of two"):
        calibrate(d[same], same[same])


def test_open_set_threshold_keeps_strangers_out_at_the_target():
    rng = np.random.default_rng(2)
    same = np.r_[np.ones(2000, bool), np.zeros(200_000, bool)]
    d = np.r_[rng.normal(0.5, 0.1, 2000), rng.normal(1.2, 0.15, 200_000)]
    cal = calibrate(d, same, "far", target_far=0.01)
    assert open_set_threshold(cal, 1) == pytest.approx(cal.threshold)  # 1:1 is verification
    neg = np.sort(d[~same])
    for N in (10, 100):
        t = open_set_threshold(cal, N)
        p = 1 - 0.99 ** (1 / N)  # what each of the N comparisons may let in
        assert (neg <= t).mean() <= p < (neg <= neg[neg > t][0]).mean()
        # new strangers, each compared with N enrolled persons: about 1% get in
        nearest = rng.normal(1.2, 0.15, (20_000, N)).min(1)
        assert (nearest <= t).mean() == pytest.approx(0.01, abs=0.004)
        # while the 1:1 threshold would let in about 1 - 0.99^N of them
        assert (nearest <= cal.threshold).mean() > 0.05


def test_open_set_threshold_stays_safe_past_the_kept_tail_and_never_negative():
    rng = np.random.default_rng(3)
    same = np.r_[np.ones(10_000, bool), np.zeros(1_000_000, bool)]
    d = np.r_[rng.normal(0.5, 0.2, 10_000), rng.normal(1.2, 0.2, 1_000_000)].clip(0.01)
    cal = calibrate(d, same, "eer", target_far=0.01)  # EER: a loose 1:1 threshold
    assert len(cal.low_tail) == 10_001 and cal.far > 0.01
    neg = d[~same]
    rates = [(neg <= open_set_threshold(cal, N)).mean() for N in (1, 2, 3)]
    assert all(r <= 0.01 for r in rates) and rates[0] >= rates[1] >= rates[2]
    t = open_set_threshold(cal, 1, target_far=0.05)  # asks past the kept tail
    assert (neg <= t).mean() <= 0.05 and t <= cal.threshold
    # the same image filed under two names: distance 0 between "different" persons
    z = calibrate(np.array([0.0, 0.0, 0.3, 0.5]), np.array([False, True, True, False]), "far", 0.0)
    assert z.threshold >= 0 and open_set_threshold(z, 10) >= 0


def test_identify_counts_every_stored_encoding_as_a_comparison(tmp_path):
    from cnnkit.faces.db import FaceDB
    from cnnkit.faces.recognize import identification_threshold
    from cnnkit.faces.verify import Calibration

    rng = np.random.default_rng(4)
    same = np.r_[np.ones(500, bool), np.zeros(50_000, bool)]
    d = np.r_[rng.normal(0.5, 0.2, 500), rng.normal(1.2, 0.2, 50_000)].clip(0.01)
    cal = calibrate(d, same, "far", target_far=0.01)
    with FaceDB(tmp_path / "f.db", model_id="m", dim=4) as db:
        db.set_threshold(cal.threshold, cal.to_dict())
        for name in ("ann", "bob"):
            db.enroll(name, rng.normal(size=(3, 4)).astype(np.float32))
        t = identification_threshold(db)
    assert t == open_set_threshold(Calibration.from_dict(cal.to_dict()), 6)  # 2 persons x 3
    assert t < open_set_threshold(cal, 2)
