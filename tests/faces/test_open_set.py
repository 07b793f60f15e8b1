"""Identification's threshold checked on simulated databases of persons the calibration
never saw: encodings in clusters, one per person, each with its own spread."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit.faces.verify import calibrate, distance_matrix, open_set_threshold


def _people(rng: np.random.Generator, persons: int, per: int, d: int = 6):
    """Encodings of ``persons`` clusters: unit-variance centres, each person's images
    spread by their own amount (0.2 to 0.9), so some strangers look like many people."""
    centres = rng.normal(size=(persons, d))
    spread = rng.uniform(0.2, 0.9, persons)
    labels = np.repeat(np.arange(persons), per)
    noise = rng.normal(size=(len(labels), d)) * spread[labels][:, None]
    return centres[labels] + noise, labels


@pytest.mark.parametrize("n", [1, 10, 40])
def test_open_set_threshold_keeps_new_strangers_out_at_the_target(n):
    rng = np.random.default_rng(2)
    enc, labels = _people(rng, 300, 6)  # the user's dev persons: every pair calibrates
    i, j = np.triu_indices(len(labels), k=1)
    cal = calibrate(distance_matrix(enc, enc)[i, j], labels[i] == labels[j], "far", 0.01)
    t = open_set_threshold(cal, n)
    # new persons: databases of n of them (one image each), strangers from the rest
    enc, labels = _people(rng, 300, 6)
    D = distance_matrix(enc, enc)
    let_in, one_to_one = [], []
    for _ in range(300):
        persons = rng.choice(300, n, replace=False)
        gallery = persons * 6 + rng.integers(0, 6, n)
        strangers = np.nonzero(~np.isin(labels, persons))[0]
        let_in.append((D[np.ix_(strangers, gallery)].min(1) <= t).mean())
        # and the 1:1 threshold would let in about 1 - 0.99^n of them
        one_to_one.append((D[np.ix_(strangers, gallery)].min(1) <= cal.threshold).mean())
    assert np.mean(let_in) == pytest.approx(0.01, abs=0.004)
    assert np.mean(one_to_one) == pytest.approx(1 - 0.99**n, rel=0.3)


def _line_faces(persons: int, offsets=(0.0, 1.0, 2.0, 3.0)):
    """Persons 10 apart on a line, each with images at ``10 p + offsets``."""
    import torch

    from cnnkit.faces.data import FaceSet

    labels = np.repeat(np.arange(persons), len(offsets))
    x = 10.0 * labels + np.tile(offsets, persons)
    enc = np.stack([x, np.zeros_like(x)], 1)  # (N, 2)
    images = torch.zeros(len(labels), 1, 2, 2, dtype=torch.uint8)
    names = [f"p{k:02d}" for k in range(persons)]
    return enc, FaceSet(images, labels, names, [f"{k}.png" for k in range(len(labels))])


def test_one_shot_by_size_by_hand():
    from cnnkit.faces.train import one_shot_by_size
    from cnnkit.faces.verify import Calibration

    enc, faces = _line_faces(20)
    cal = Calibration("far", "euclidean", 1.5, 0, 0, 1, 0, 1, 0.01, 1, 1)  # no tail: t = 1.5
    rows = one_shot_by_size(enc, faces, cal, sizes=(5, 10, 20, 30), draws=400, seed=0)
    assert [r.enrolled for r in rows] == [5, 10]  # a size needs persons left as strangers
    for r in rows:
        assert r.threshold == 1.5 and r.top1 == 1.0 and r.unknown_rejected == 1.0
        # enrolled image at offset g, a query at another offset o: accepted when |o - g| <= 1,
        # 1/3 of the others for g = 0 or 3, 2/3 for g = 1 or 2: 1/2 over a random g
        assert r.top1_at_threshold == pytest.approx(0.5, abs=0.03)
    # images at 10 q + (0, 0, 0, 8.8): a stranger q's image at 10 q + 8.8 is 1.2 from
    # person q + 1's images at offset 0, let in when q + 1 is enrolled (10 of the 19
    # others) from one of them (3/4); its images at 10 q are 1.2 from q - 1's image at
    # offset 8.8 (10/19 x 1/4). Over a random q (q - 1 and q + 1 exist 19 times in 20):
    # (3 x 1/2 x 1/4 + 1/2 x 3/4) / 4 = 3/16 of the strangers' images are let in.
    enc2, faces2 = _line_faces(20, offsets=(0.0, 0.0, 0.0, 8.8))
    (r,) = one_shot_by_size(enc2, faces2, cal, sizes=(10,), draws=1000, seed=1)
    assert r.unknown_rejected == pytest.approx(1 - 3 / 16, abs=0.01)


def test_flip_encoder_averages_the_mirror_image():
    import torch

    from cnnkit.faces.model import build_embedder
    from cnnkit.faces.train import Encoder

    torch.manual_seed(0)
    net = build_embedder("small", 3, 8, 32, 4).eval()
    pre = {"size": [32, 32], "channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3}
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    plain = Encoder(net, {"preprocess": pre, "dim": 8})(images)
    flip = Encoder(net, {"preprocess": pre, "dim": 8, "flip": True})
    got = flip(images)
    mirrored = Encoder(net, {"preprocess": pre, "dim": 8})(images.flip(-1))
    want = plain + mirrored
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    assert np.allclose(got, want, atol=1e-6) and flip.count == 5  # images, not forwards
    assert np.allclose(flip(images.flip(-1)), got, atol=1e-6)  # a mirror encodes the same


def test_pair_task_is_the_balanced_logistic_loss_of_every_pair():
    import torch

    from cnnkit.faces.losses import SiameseHead
    from cnnkit.faces.train import PairTask

    torch.manual_seed(0)
    head = SiameseHead(4, "l1")
    task = PairTask(head, per_person=2)
    f = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)  # P=3 persons x K=2
    y = torch.tensor([[0, 0], [1, 1], [2, 2]])
    w, b = head.fc.weight[0].detach().numpy(), float(head.fc.bias.detach())
    same_l, diff_l, errors = [], [], [[], []]
    e = f.numpy()
    lab = y.reshape(-1).numpy()
    for i in range(6):
        for j in range(i + 1, 6):
            z = float(np.abs(e[i] - e[j]) @ w + b)
            yhat = 1 / (1 + np.exp(-z))
            one = lab[i] == lab[j]
            (same_l if one else diff_l).append(-np.log(yhat if one else 1 - yhat))
            errors[0 if one else 1].append((z > 0) != one)
    assert len(same_l) == 3 and len(diff_l) == 12
    want = (np.mean(same_l) + np.mean(diff_l)) / 2
    assert task.loss(f, y).item() == pytest.approx(want, rel=1e-5)
    sums = torch.zeros(task.n_sums, dtype=torch.float64)
    task.count(sums, f, y, task.loss(f, y))
    got = task.summarize(sums)
    assert got["loss"] == pytest.approx(want, rel=1e-5)
    assert got["pair_error"] == pytest.approx((np.mean(errors[0]) + np.mean(errors[1])) / 2)
