"""Multi-task learning: the masked loss, per-label metrics, a CLI run, and single-task nets.

The course's autonomous-driving example: one network, one sigmoid per label
(pedestrian, car, stop sign, traffic light), the loss summed only over the labels
present (``?`` skipped, never read as 0).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import precision_recall_fscore_support
from torch import nn

import cnnkit.data as d
from cnnkit.cli import main
from cnnkit.evaluate.metrics import multilabel_outputs, multilabel_report
from cnnkit.train import fit
from cnnkit.train.tasks import Classification, masked_bce


def _logits_targets(n: int = 40, L: int = 4, missing: float = 0.3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, L, generator=g) * 2
    y = (torch.rand(n, L, generator=g) > 0.5).float()
    mask = torch.from_numpy(d.synthetic.missing_mask((n, L), missing, seed))
    return z, y, y.masked_fill(mask, float("nan")), mask


def test_masked_loss_is_the_mean_over_present_labels():
    z, y, t, mask = _logits_targets()
    assert mask.float().mean() == pytest.approx(0.3, abs=1 / 160)
    task = Classification()
    assert task.mode(z, t) == "multilabel"
    per = F.binary_cross_entropy_with_logits(z, y, reduction="none")  # (N, L)
    by_hand = per[~mask].sum() / (~mask).sum()  # present entries only
    torch.testing.assert_close(task.loss(z, t), by_hand)
    torch.testing.assert_close(masked_bce(z, t), by_hand)
    # the course's form: -(y log p + (1-y) log(1-p)) over the present entries
    p = torch.sigmoid(z.double())
    course = -(y * p.log() + (1 - y) * (1 - p).log())[~mask].mean()
    torch.testing.assert_close(task.loss(z, t).double(), course, rtol=1e-5, atol=1e-6)
    # reading ? as 0 is a different loss
    as_zero = F.binary_cross_entropy_with_logits(z, y.masked_fill(mask, 0.0))
    assert abs(task.loss(z, t).item() - as_zero.item()) > 1e-2
    # no label missing: the plain mean BCE, as before
    torch.testing.assert_close(task.loss(z, y), F.binary_cross_entropy_with_logits(z, y))


def test_missing_labels_give_no_gradient_and_an_empty_batch_no_loss():
    z, _, t, mask = _logits_targets(seed=1)
    z = z.clone().requires_grad_(True)
    Classification().loss(z, t).backward()
    assert torch.all(z.grad[mask] == 0) and torch.all(z.grad[~mask] != 0)
    z2 = torch.randn(3, 4, requires_grad=True)
    loss = Classification().loss(z2, torch.full((3, 4), float("nan")))
    assert loss.item() == 0.0 and torch.isfinite(loss)
    loss.backward()
    assert torch.all(z2.grad == 0)


def test_counts_skip_missing_labels():
    z, y, t, mask = _logits_targets(seed=2)
    task = Classification()
    sums = torch.zeros(task.n_sums, dtype=torch.float64)
    for part in (slice(0, 13), slice(13, 40)):  # two batches
        task.count(sums, z[part], t[part], task.loss(z[part], t[part]))
    out = task.summarize(sums)
    present = ~mask
    acc = (((z > 0) == (y > 0.5)) & present).sum() / present.sum()
    assert out["accuracy"] == pytest.approx(acc.item())
    per = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    assert out["loss"] == pytest.approx((per[present].sum() / present.sum()).item(), rel=1e-6)


def test_multilabel_report_matches_sklearn_on_present_entries():
    z, y, t, mask = _logits_targets(n=60, seed=3)
    r = multilabel_report(z, t, ["pedestrian", "car", "stop_sign", "traffic_light"])
    for j in range(4):
        keep = ~mask[:, j]
        P, R, F1, _ = precision_recall_fscore_support(
            y[keep, j].numpy(), (z[keep, j] > 0).numpy(), average="binary", zero_division=0
        )
        assert (r.precision[j], r.recall[j], r.f1[j]) == pytest.approx((P, R, F1))
        assert r.support[j] == int(keep.sum()) and r.missing[j] == int((~keep).sum())
        assert r.positives[j] == int(y[keep, j].sum())
    keep = ~mask.reshape(-1)  # (N, L) -> (N*L,)
    P, R, F1, _ = precision_recall_fscore_support(
        y.reshape(-1)[keep].numpy(), (z.reshape(-1)[keep] > 0).numpy(), average="binary"
    )
    assert (r.micro["precision"], r.micro["recall"], r.micro["f1"]) == pytest.approx((P, R, F1))
    assert r.macro["f1"] == pytest.approx(np.mean(r.f1))
    assert r.loss == pytest.approx(masked_bce(z, t).item(), rel=1e-6)
    assert "traffic_light" in r.table() and "missing" in r.table()
    # the ? read as 0 would count differently
    r0 = multilabel_report(z, y.masked_fill(mask, 0.0))
    assert r0.support != r.support


def test_cli_train_and_val_on_a_manifest(tmp_path, capsys):
    csv = d.write_scenes(tmp_path / "scenes", 90, size=32, seed=0, missing=0.3)
    runs = tmp_path / "runs"
    args = ["train", f"data={csv}", "model=lenet5", "epochs=2", "batch=16", "report=false"]
    assert main([*args, f"project={runs}", "verbose=0", "name=mt"]) == 0
    run = runs / "classify" / "mt"
    assert (run / "weights" / "best.safetensors").is_file()
    capsys.readouterr()
    assert main(["val", f"run={run}"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert main(["val", f"run={run}", "report=true"]) == 0
    out = capsys.readouterr().out
    for word in ("pedestrian", "car", "stop_sign", "traffic_light", "F1", "missing"):
        assert word in out
    image = csv.parent / "images" / "00000.png"
    assert main(["predict", f"run={run}", f"source={image}"]) == 0
    out = capsys.readouterr().out
    assert "top-4" in out and all(name in out for name in d.SCENE_LABELS)


def _net(outputs: int) -> nn.Module:
    """One small CNN for every task (16x16 grey in, ``outputs`` logits out)."""
    layers: list[nn.Module] = []
    for c_in, c_out in ((1, 8), (8, 16), (16, 16)):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        layers.append(nn.MaxPool2d(2))
    layers += [nn.Flatten(), nn.Linear(16 * 2 * 2, outputs)]  # (B, 16, 2, 2) -> (B, 64)
    return nn.Sequential(*layers)


def test_one_multitask_net_against_four_single_task_nets():
    """Same small CNN, 400 training scenes of 16x16, 10 epochs. Measured mean F1 on 200
    test scenes: multi-task 0.809, four single-task nets 0.888 (seed 0; 0.824 vs 0.869
    with seed 1). Each single-task net has the whole network, and 4x the parameters and
    compute in all, for its one shape, so the shared net is behind by 0.05-0.08 here
    (see docs/multitask.md); the margin asserted is 0.12."""
    x, t = d.multilabel_scenes(600, size=16, seed=0)
    images, targets = torch.from_numpy(x), torch.from_numpy(t).float()
    pre = d.Preprocess((16, 16), 1, (0.2,), (0.2,))
    train, test = slice(0, 400), slice(400, 600)
    kw = {"epochs": 10, "batch": 32, "lr": 1e-2, "verbose": 0, "workers": 0, "aug": "none"}

    def trained(cols: slice) -> list[float]:
        torch.manual_seed(0)
        model = _net(cols.stop - cols.start)
        fit(model, d.ImageSet(images[train], targets[train, cols], pre), seed=0, **kw)
        z, y = multilabel_outputs(model, d.ImageSet(images[test], targets[test, cols], pre))
        return multilabel_report(z, y).f1

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is the fastest on 2 busy cores
    try:
        multi = trained(slice(0, 4))
        single = [f for j in range(4) for f in trained(slice(j, j + 1))]
    finally:
        torch.set_num_threads(threads)
    m, s = float(np.mean(multi)), float(np.mean(single))
    print(f"multi-task mean F1 {m:.3f}, single-task mean F1 {s:.3f}")
    assert m > 0.72 and s > 0.72  # above always-present (F1 2/3 at p = 0.5)
    assert m >= s - 0.12  # measured gap 0.079 (seed 0)
