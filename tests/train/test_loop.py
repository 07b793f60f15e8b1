"""The training loop against hand-written PyTorch loops, losses and metrics.

Every number the trainer produces is compared with an independent computation:
a plain ``torch.optim`` loop over the same batches, ``torch.nn.functional`` losses,
a manual argmax, the files it leaves in ``run_dir``.
"""

from __future__ import annotations

import copy
import csv
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from cnnkit.data import ImageSet, Preprocess, epoch_order
from cnnkit.errors import CnnkitError
from cnnkit.train import (
    Classification,
    evaluate_model,
    fit,
    load_state,
    load_weights_file,
)
from cnnkit.train import loop as loop_mod
from cnnkit.train.config import TrainConfig
from cnnkit.train.loop import build_optimizer

NOAUG = {"degrees": 0, "translate": 0, "scale": 0, "fliplr": 0}
PLAIN = {
    "optimizer": "sgd",
    "schedule": "constant",
    "warmup_epochs": 0,
    "label_smoothing": 0.0,
    "verbose": 0,
    "workers": 0,
    **NOAUG,
}
HEADER = [
    "epoch",
    "train_loss",
    "train_accuracy",
    "dev_loss",
    "dev_accuracy",
    "lr",
    "seconds",
    "img_per_s",
    "data_s",
]


def _images(n: int, *, classes: int = 3, c: int = 1, hw: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, c, hw, hw), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, classes, (n,), generator=g)
    return images, labels


def _identity(c: int = 1, hw: int = 4) -> Preprocess:
    return Preprocess((hw, hw), c, (0.0,) * c, (1.0,) * c)


def _as_float(images: torch.Tensor) -> torch.Tensor:
    """What an ImageSet with mean 0 / std 1 feeds the model."""
    return images.float().mul(1.0 / 255.0)


def _convnet(out: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 2 * 2, out))


def _params(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _assert_same_weights(a: nn.Module | dict, b: nn.Module | dict, **tol) -> None:
    da = a.state_dict() if isinstance(a, nn.Module) else a
    db = b.state_dict() if isinstance(b, nn.Module) else b
    assert da.keys() == db.keys()
    for k in da:
        torch.testing.assert_close(da[k], db[k], msg=lambda s, k=k: f"{k}: {s}", **tol)


def _hand_loop(
    model, X, Y, *, epochs, batch, seed, opt, loss_fn, sched_step=None, sched_epoch=None, l2=0.0
):
    """Mini-batch gradient descent written out: the order of epoch e is epoch_order(n, seed, e)."""
    n = len(X)
    lrs = []
    for e in range(epochs):
        order = epoch_order(n, seed, e)
        for b in range(math.ceil(n / batch)):
            idx = order[b * batch : (b + 1) * batch]
            opt.zero_grad()
            loss_fn(model(X[idx]), Y[idx]).backward()
            if l2:
                m = len(idx)
                with torch.no_grad():
                    for p in model.parameters():
                        if p.ndim > 1:  # d/dW of lambda/(2m) ||W||^2
                            p.grad += (l2 / m) * p
            opt.step()
            last_lr = opt.param_groups[0]["lr"]
            if sched_step is not None:
                sched_step.step()
        lrs.append(last_lr)
        if sched_epoch is not None:
            sched_epoch.step()
    return lrs


def _last(run) -> dict[str, torch.Tensor]:
    """The weights after the last epoch (the model itself holds the best epoch's)."""
    return load_weights_file(run / "weights" / "last.safetensors")[0]


# ---------------------------------------------------------------- one step by hand


@pytest.mark.parametrize("generic", [False, True], ids=["ImageSet", "TensorDataset"])
def test_one_full_batch_epoch_is_one_sgd_step(generic):
    images, labels = _images(20)
    X = _as_float(images)
    data = TensorDataset(X, labels) if generic else ImageSet(images, labels, _identity())
    model = _convnet()
    ref = copy.deepcopy(model)
    lr = 0.5

    res = fit(model, data, epochs=1, batch=len(data), lr=lr, **PLAIN)

    opt = torch.optim.SGD(ref.parameters(), lr=lr)
    loss = F.cross_entropy(ref(X), labels)
    loss.backward()
    opt.step()
    _assert_same_weights(model, ref)
    assert res.history[0]["train_loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert res.history[0]["lr"] == lr
    assert res.epochs == 1 and len(res.history) == 1
    # the step moved the weights (the comparison above has teeth)
    assert not torch.allclose(model[3].weight, _convnet()[3].weight)


def test_l2_adds_lambda_over_2m_times_squared_weights():
    images, labels = _images(16)
    X = _as_float(images)
    data = ImageSet(images, labels, _identity())
    lam, lr, m = 4.0, 0.3, len(data)
    model = _convnet()
    w0 = _params(model)

    fit(model, data, epochs=1, batch=m, lr=lr, l2=lam, **PLAIN)

    ref = copy.deepcopy(_convnet())
    F.cross_entropy(ref(X), labels).backward()
    want = {}
    for name, p in ref.named_parameters():
        g = p.grad
        if p.ndim > 1:  # conv and FC weights: dJ/dW = dL/dW + lambda/m * W
            g = g + lam / m * w0[name]
        want[name] = w0[name] - lr * g  # biases: no decay
    _assert_same_weights(model, want)

    plain = _convnet()
    fit(plain, data, epochs=1, batch=m, lr=lr, **PLAIN)
    torch.testing.assert_close(plain[0].bias, model[0].bias)  # biases: no decay
    assert not torch.allclose(plain[0].weight, model[0].weight)


def test_l2_uses_each_batch_size_including_the_last_smaller_one(tmp_path):
    images, labels = _images(10)
    X = _as_float(images)
    data = ImageSet(images, labels, _identity())
    lam, lr, batch, seed = 3.0, 0.2, 4, 5
    model = _convnet()
    ref = copy.deepcopy(model)

    fit(model, data, epochs=2, batch=batch, lr=lr, l2=lam, seed=seed, run_dir=tmp_path, **PLAIN)

    opt = torch.optim.SGD(ref.parameters(), lr=lr)
    _hand_loop(
        ref, X, labels, epochs=2, batch=batch, seed=seed, opt=opt, loss_fn=F.cross_entropy, l2=lam
    )
    _assert_same_weights(_last(tmp_path), ref)


def test_clip_grad_scales_the_global_norm():
    images, labels = _images(12)
    X = _as_float(images)
    data = ImageSet(images, labels, _identity())
    clip, lr = 0.05, 1.0
    model = _convnet()
    w0 = _params(model)

    fit(model, data, epochs=1, batch=len(data), lr=lr, clip_grad=clip, **PLAIN)

    ref = _convnet()
    F.cross_entropy(ref(X), labels).backward()
    grads = {k: p.grad for k, p in ref.named_parameters()}
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values())).item()
    assert norm > clip  # clipping is active
    scale = clip / (norm + 1e-6)
    want = {k: w0[k] - lr * scale * g for k, g in grads.items()}
    _assert_same_weights(model, want)


# ---------------------------------------------------------------- several epochs by hand


def test_momentum_with_step_schedule_matches_torch_loop(tmp_path):
    images, labels = _images(12)
    X = _as_float(images)
    data = ImageSet(images, labels, _identity())
    lr, seed, batch, epochs = 0.2, 3, 4, 4
    model = _convnet()
    ref = copy.deepcopy(model)

    res = fit(
        model,
        data,
        epochs=epochs,
        batch=batch,
        lr=lr,
        seed=seed,
        optimizer="momentum",
        schedule="step",
        step_size=2,
        decay_rate=0.5,
        run_dir=tmp_path,
        **{k: v for k, v in PLAIN.items() if k not in ("optimizer", "schedule")},
    )

    # optimizer="momentum" is the course's v = beta*v + (1 - beta)*dW: dampening = beta
    opt = torch.optim.SGD(ref.parameters(), lr=lr, momentum=0.9, dampening=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    lrs = _hand_loop(
        ref,
        X,
        labels,
        epochs=epochs,
        batch=batch,
        seed=seed,
        opt=opt,
        loss_fn=F.cross_entropy,
        sched_epoch=sched,
    )
    _assert_same_weights(_last(tmp_path), ref)
    assert [r["lr"] for r in res.history] == pytest.approx(lrs, rel=1e-9)
    assert lrs == pytest.approx([0.2, 0.2, 0.1, 0.1])


def test_adam_with_warmup_and_cosine_matches_torch_loop(tmp_path):
    images, labels = _images(15)
    X = _as_float(images)
    data = ImageSet(images, labels, _identity())
    lr, seed, batch, epochs = 0.01, 0, 4, 3  # 4 steps per epoch, the last one of 3 images
    spe = 4
    total, warm = spe * epochs, spe  # warmup_epochs=1
    model = _convnet()
    ref = copy.deepcopy(model)

    res = fit(
        model,
        data,
        epochs=epochs,
        batch=batch,
        lr=lr,
        seed=seed,
        optimizer="adam",
        schedule="cosine",
        warmup_epochs=1,
        run_dir=tmp_path,
        **{k: v for k, v in PLAIN.items() if k not in ("optimizer", "schedule", "warmup_epochs")},
    )

    opt = torch.optim.Adam(ref.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: 0.5 * (1 + math.cos(math.pi * s / total)) * ((s + 1) / warm if s < warm else 1.0),
    )
    lrs = _hand_loop(
        ref,
        X,
        labels,
        epochs=epochs,
        batch=batch,
        seed=seed,
        opt=opt,
        loss_fn=F.cross_entropy,
        sched_step=sched,
    )
    _assert_same_weights(_last(tmp_path), ref)
    assert [r["lr"] for r in res.history] == pytest.approx(lrs, rel=1e-9)


def test_label_smoothing_in_training_loss_only():
    images, labels = _images(24)
    X = _as_float(images)
    data = ImageSet(images, labels, _identity())
    model = _convnet()
    before = copy.deepcopy(model)
    settings = {**PLAIN, "label_smoothing": 0.2}

    res = fit(model, data, data, epochs=1, batch=len(data), lr=0.1, **settings)

    with torch.no_grad():
        train_loss = F.cross_entropy(before(X), labels, label_smoothing=0.2).item()
        dev_loss = F.cross_entropy(model(X), labels).item()
        dev_acc = (model(X).argmax(1) == labels).float().mean().item()
    row = res.history[0]
    assert row["train_loss"] == pytest.approx(train_loss, rel=1e-5)
    assert row["dev_loss"] == pytest.approx(dev_loss, rel=1e-5)
    assert row["dev_accuracy"] == pytest.approx(dev_acc)


# ---------------------------------------------------------------- generic datasets


def test_tensordataset_trains_like_the_same_imageset():
    images, labels = _images(23)
    dev_images, dev_labels = _images(9, seed=1)
    settings = {**PLAIN, "optimizer": "momentum", "epochs": 2, "batch": 5, "lr": 0.1, "seed": 7}

    a = _convnet()
    b = copy.deepcopy(a)
    ra = fit(
        a,
        ImageSet(images, labels, _identity()),
        ImageSet(dev_images, dev_labels, _identity()),
        **settings,
    )
    rb = fit(
        b,
        TensorDataset(_as_float(images), labels),
        TensorDataset(_as_float(dev_images), dev_labels),
        **settings,
    )

    _assert_same_weights(a, b)
    assert len(ra.history) == len(rb.history) == 2
    for x, y in zip(ra.history, rb.history, strict=True):
        for k in ("train_loss", "train_accuracy", "dev_loss", "dev_accuracy", "lr"):
            assert x[k] == pytest.approx(y[k], rel=1e-6), k
    assert ra.best_epoch == rb.best_epoch


def test_imageset_normalization_is_applied():
    """A non-identity mean/std must reach the model: same as the normalized tensors."""
    images, labels = _images(12)
    pre = Preprocess((4, 4), 1, (0.4,), (0.2,))
    Xn = pre.normalize(images)
    a = _convnet()
    b = copy.deepcopy(a)
    fit(a, ImageSet(images, labels, pre), epochs=1, batch=12, lr=0.3, **PLAIN)
    fit(b, TensorDataset(Xn, labels), epochs=1, batch=12, lr=0.3, **PLAIN)
    _assert_same_weights(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- early stopping, best weights


def _blobs(n: int, seed: int, flip: bool = False):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centers = torch.tensor([[2.0, 0.0], [-1.0, 2.0], [-1.0, -2.0]])
    x = centers[y] + 0.3 * torch.randn(n, 2, generator=g)
    return TensorDataset(x, (y + 1) % 3 if flip else y)


def test_early_stopping_restores_best_weights(tmp_path):
    train = _blobs(60, 0)
    dev = _blobs(30, 1, flip=True)  # mislabeled: the better the model, the worse the dev loss
    torch.manual_seed(0)
    model = nn.Linear(2, 3)
    run = tmp_path / "run"

    res = fit(
        model,
        train,
        dev,
        epochs=20,
        batch=60,
        lr=0.5,
        patience=2,
        run_dir=run,
        monitor="dev_loss",
        **PLAIN,
    )

    dev_losses = [r["dev_loss"] for r in res.history]
    assert res.stopped_early
    assert len(res.history) == 3
    assert dev_losses[0] < dev_losses[1] < dev_losses[2]
    assert res.best_epoch == 1 and res.best == dev_losses[0] and res.monitor == "dev_loss"
    best, meta = load_weights_file(run / "weights" / "best.safetensors")
    last, last_meta = load_weights_file(run / "weights" / "last.safetensors")
    assert meta["epoch"] == 1 and last_meta["epoch"] == 3
    _assert_same_weights(model, best, rtol=0, atol=0)
    assert not torch.equal(last["weight"], best["weight"])
    assert evaluate_model(model, dev)["loss"] == pytest.approx(dev_losses[0], rel=1e-6)
    state = load_state(run / "weights" / "last_state.pt")
    assert state["epoch"] == 3 and state["best_epoch"] == 1 and state["bad_epochs"] == 2
    with open(run / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 3


def test_best_weights_follow_the_monitor_through_noisy_training(tmp_path):
    """Whatever epoch is best, the model ends with that epoch's weights and dev numbers."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 6, generator=g)
    y = torch.randint(0, 2, (40,), generator=g)  # noise: dev accuracy wanders
    xd = torch.randn(40, 6, generator=g)
    yd = torch.randint(0, 2, (40,), generator=g)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    run = tmp_path / "noisy"

    res = fit(
        model,
        TensorDataset(x, y),
        TensorDataset(xd, yd),
        epochs=8,
        batch=8,
        lr=0.3,
        monitor="dev_accuracy",
        run_dir=run,
        **PLAIN,
    )

    acc = [r["dev_accuracy"] for r in res.history]
    best_epoch = max(range(len(acc)), key=lambda i: (acc[i], i)) + 1  # ties: the later epoch
    assert res.best_epoch == best_epoch and res.best == acc[best_epoch - 1]
    best, meta = load_weights_file(run / "weights" / "best.safetensors")
    assert meta["epoch"] == best_epoch
    _assert_same_weights(model, best, rtol=0, atol=0)
    ev = evaluate_model(model, TensorDataset(xd, yd))
    assert ev["accuracy"] == acc[best_epoch - 1]
    assert ev["loss"] == pytest.approx(res.history[best_epoch - 1]["dev_loss"], rel=1e-6)


def test_monitor_falls_back_to_train_loss_without_dev(tmp_path):
    train = _blobs(30, 0)
    torch.manual_seed(0)
    model = nn.Linear(2, 3)
    res = fit(
        model,
        train,
        epochs=4,
        batch=10,
        lr=0.1,
        run_dir=tmp_path / "r",
        monitor="dev_accuracy",
        **PLAIN,
    )
    assert res.monitor == "train_loss"
    losses = [r["train_loss"] for r in res.history]
    want = min(range(4), key=lambda i: (losses[i], -i)) + 1
    assert res.best_epoch == want and res.best == losses[want - 1]
    assert all("dev_loss" not in r for r in res.history)
    best, meta = load_weights_file(tmp_path / "r" / "weights" / "best.safetensors")
    assert meta["epoch"] == want
    _assert_same_weights(model, best, rtol=0, atol=0)
    with open(tmp_path / "r" / "results.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == HEADER
    assert all(r[3] == "" and r[4] == "" for r in rows[1:])


def test_train_monitor_is_kept_and_higher_accuracy_is_better():
    train = _blobs(30, 0)
    torch.manual_seed(0)
    res = fit(
        nn.Linear(2, 3), train, epochs=3, batch=10, lr=0.05, monitor="train_accuracy", **PLAIN
    )
    acc = [r["train_accuracy"] for r in res.history]
    assert res.monitor == "train_accuracy"
    assert res.best == max(acc)
    assert res.best_epoch == max(range(3), key=lambda i: (acc[i], i)) + 1


def test_patience_does_not_stop_an_improving_run():
    train = _blobs(60, 0)
    dev = _blobs(30, 1)
    torch.manual_seed(0)
    res = fit(
        nn.Linear(2, 3),
        train,
        dev,
        epochs=4,
        batch=60,
        lr=0.05,
        patience=1,
        monitor="dev_loss",
        **PLAIN,
    )
    assert not res.stopped_early and len(res.history) == 4 and res.best_epoch == 4


def test_misspelled_monitor_is_refused():
    """A monitor naming no logged metric can never improve: best weights are never kept (and
    with patience, early stopping fires for no reason). Like a typo in any other setting it
    should be a CnnkitError naming the setting, not a silently ignored value."""
    train, dev = _blobs(30, 0), _blobs(15, 1)
    with pytest.raises(CnnkitError, match="monitor"):
        fit(nn.Linear(2, 3), train, dev, epochs=2, batch=10, lr=0.1, monitor="dev_acuracy", **PLAIN)


@pytest.mark.parametrize("case", ["empty_dev", "monitor_dev_acc"])
def test_early_stop_without_any_best_value_does_not_crash(case):
    """When the monitor never has a value (NaN dev metrics of an empty dev set, or
    ``monitor="dev_acc"``, the abbreviation the progress lines print), patience ends the run;
    that end must not crash while printing the (absent) best value."""
    train = _blobs(30, 0)
    if case == "empty_dev":
        dev, monitor = (
            TensorDataset(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)),
            "dev_loss",
        )
    else:
        dev, monitor = _blobs(15, 1), "dev_acc"
    try:
        res = fit(
            nn.Linear(2, 3),
            train,
            dev,
            epochs=3,
            batch=10,
            lr=0.1,
            patience=1,
            monitor=monitor,
            **PLAIN,
        )
    except CnnkitError:
        return  # refusing the set-up front is a fine answer too
    assert res.stopped_early and res.best_epoch is None and len(res.history) == 1


# ---------------------------------------------------------------- run folder


def test_results_csv_and_checkpoints(tmp_path):
    images, labels = _images(20)
    dev_images, dev_labels = _images(8, seed=2)
    run = tmp_path / "run"
    model = _convnet()
    res = fit(
        model,
        ImageSet(images, labels, _identity()),
        ImageSet(dev_images, dev_labels, _identity()),
        epochs=3,
        batch=8,
        lr=0.1,
        run_dir=run,
        meta={"model": "tiny", "classes": ["a", "b", "c"]},
        **PLAIN,
    )

    with open(run / "results.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == HEADER
    assert len(rows) == 1 + 3
    assert [int(r[0]) for r in rows[1:]] == [1, 2, 3]
    for r, h in zip(rows[1:], res.history, strict=True):
        for i, k in enumerate(HEADER[1:6], start=1):
            assert float(r[i]) == pytest.approx(h[k], rel=1e-5), k
        assert float(r[6]) >= 0
    assert res.run_dir == run
    state = torch.load(run / "weights" / "last_state.pt", weights_only=True)
    assert state["epoch"] == 3 and state["global_step"] == 9
    assert state["meta"] == {"model": "tiny", "classes": ["a", "b", "c"]}
    last, meta = load_weights_file(run / "weights" / "last.safetensors")
    assert meta["model"] == "tiny" and meta["classes"] == ["a", "b", "c"] and meta["epoch"] == 3
    best, bmeta = load_weights_file(run / "weights" / "best.safetensors")
    assert bmeta["epoch"] == res.best_epoch
    _assert_same_weights(model, best, rtol=0, atol=0)
    if res.best_epoch == 3:
        _assert_same_weights(last, best, rtol=0, atol=0)


def test_verbose_2_prints_one_line_per_epoch_and_0_nothing(capsys):
    train, dev = _blobs(20, 0), _blobs(10, 1)
    res = fit(nn.Linear(2, 3), train, dev, epochs=2, batch=10, lr=0.1, **{**PLAIN, "verbose": 2})
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in lines] == ["1/2", "2/2"]
    for ln, row in zip(lines, res.history, strict=True):
        assert f"train_loss {row['train_loss']:.4f}" in ln
        assert f"dev_acc {100 * row['dev_accuracy']:.2f}%" in ln
    fit(nn.Linear(2, 3), train, dev, epochs=2, batch=10, lr=0.1, **PLAIN)
    assert capsys.readouterr().out == ""


def test_no_run_dir_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fit(
        _convnet(),
        TensorDataset(torch.rand(8, 1, 4, 4), torch.arange(8) % 3),
        epochs=1,
        batch=4,
        lr=0.1,
        **PLAIN,
    )
    assert list(tmp_path.iterdir()) == []


def test_same_seed_same_run_and_flag_restored():
    images, labels = _images(20)
    data = ImageSet(images, labels, _identity())
    aug = {"degrees": 15, "translate": 0.2, "scale": 0.1, "fliplr": 0.5}
    settings = {**PLAIN, **aug, "epochs": 2, "batch": 6, "lr": 0.1, "deterministic": True}
    before = torch.are_deterministic_algorithms_enabled()
    a, b, c = _convnet(), _convnet(), _convnet()
    fit(a, data, seed=1, **settings)
    fit(b, data, seed=1, **settings)
    fit(c, data, seed=2, **settings)
    assert torch.are_deterministic_algorithms_enabled() == before
    _assert_same_weights(a, b, rtol=0, atol=0)
    assert not torch.equal(a[3].weight, c[3].weight)


def test_augmentation_changes_training():
    images, labels = _images(16)
    data = ImageSet(images, labels, _identity())
    a, b = _convnet(), _convnet()
    fit(a, data, epochs=1, batch=16, lr=0.5, **PLAIN)
    fit(b, data, epochs=1, batch=16, lr=0.5, **{**PLAIN, "degrees": 30, "translate": 0.3})
    assert not torch.allclose(a[3].weight, b[3].weight)


def test_nonfinite_loss_stops_with_advice():
    x = torch.rand(6, 1, 4, 4)
    x[2, 0, 1, 1] = float("nan")
    with pytest.raises(CnnkitError, match="lr"):
        fit(_convnet(), TensorDataset(x, torch.arange(6) % 3), epochs=1, batch=6, lr=0.1, **PLAIN)


def test_empty_training_set_refused():
    with pytest.raises(CnnkitError, match="empty"):
        fit(
            _convnet(),
            TensorDataset(torch.zeros(0, 1, 4, 4), torch.zeros(0, dtype=torch.long)),
            epochs=1,
            **PLAIN,
        )


# ---------------------------------------------------------------- binary and multi-label


def test_binary_loss_is_logistic_loss():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(11, 1, generator=g)
    y = torch.randint(0, 2, (11,), generator=g)
    task = Classification()
    want = F.binary_cross_entropy_with_logits(z.squeeze(1), y.float())
    torch.testing.assert_close(task.loss(z, y), want)
    torch.testing.assert_close(task.loss(z.squeeze(1), y), want)
    # the course's formula: -(y log p + (1-y) log(1-p)), p = sigmoid(z)
    p = torch.sigmoid(z.squeeze(1).double())
    course = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    torch.testing.assert_close(task.loss(z, y).double(), course, rtol=1e-5, atol=1e-6)
    assert task.mode(z, y) == "binary"
    # label smoothing does not change a logistic loss' eval_loss
    torch.testing.assert_close(Classification(label_smoothing=0.3).eval_loss(z, y), want)


def test_multilabel_loss_and_accuracy():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(9, 4, generator=g)
    t = (torch.rand(9, 4, generator=g) > 0.5).float()
    task = Classification()
    assert task.mode(z, t) == "multilabel"
    torch.testing.assert_close(task.loss(z, t), F.binary_cross_entropy_with_logits(z, t))
    sums = torch.zeros(task.n_sums, dtype=torch.float64)
    task.count(sums, z, t, task.loss(z, t))
    out = task.summarize(sums)
    assert out["accuracy"] == pytest.approx(
        ((torch.sigmoid(z) > 0.5) == (t > 0.5)).float().mean().item()
    )
    assert out["loss"] == pytest.approx(task.loss(z, t).item(), rel=1e-6)
    with pytest.raises(CnnkitError):
        task.loss(torch.randn(9, 3), t)


def test_multiclass_loss_smoothing_and_eval_loss():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(10, 5, generator=g)
    y = torch.randint(0, 5, (10,), generator=g)
    task = Classification(label_smoothing=0.1)
    torch.testing.assert_close(task.loss(z, y), F.cross_entropy(z, y, label_smoothing=0.1))
    torch.testing.assert_close(task.eval_loss(z, y), F.cross_entropy(z, y))
    assert not torch.allclose(task.loss(z, y), task.eval_loss(z, y))
    with pytest.raises(CnnkitError, match="bce"):
        Classification("bce").loss(z, y)


def test_binary_accuracy_threshold_and_summary():
    task = Classification()
    z = torch.tensor([[2.0], [-1.0], [0.5], [-0.2], [3.0]])
    y = torch.tensor([1, 0, 0, 1, 1])
    sums = torch.zeros(task.n_sums, dtype=torch.float64)
    task.count(sums, z[:3], y[:3], task.loss(z[:3], y[:3]))
    task.count(sums, z[3:], y[3:], task.loss(z[3:], y[3:]))
    out = task.summarize(sums)
    assert out["accuracy"] == pytest.approx(3 / 5)
    want = (3 * task.loss(z[:3], y[:3]).item() + 2 * task.loss(z[3:], y[3:]).item()) / 5
    assert out["loss"] == pytest.approx(want)
    assert out["loss"] == pytest.approx(
        F.binary_cross_entropy_with_logits(z[:, 0], y.float()).item(), rel=1e-6
    )
    assert task.predict(z).tolist() == [1, 0, 1, 0, 1]
    assert math.isnan(task.summarize(torch.zeros(4, dtype=torch.float64))["loss"])


def test_binary_training_step_is_logistic_regression():
    images, _ = _images(14, hw=3)
    labels = torch.tensor([0, 1] * 7)
    X = _as_float(images)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(9, 1))
    ref = copy.deepcopy(model)
    res = fit(model, ImageSet(images, labels, _identity(hw=3)), epochs=1, batch=14, lr=0.7, **PLAIN)
    loss = F.binary_cross_entropy_with_logits(ref(X).squeeze(1), labels.float())
    loss.backward()
    torch.optim.SGD(ref.parameters(), lr=0.7).step()
    _assert_same_weights(model, ref)
    assert res.history[0]["train_loss"] == pytest.approx(loss.item(), rel=1e-5)


def test_multilabel_training_step():
    g = torch.Generator().manual_seed(4)
    X = torch.randn(10, 5, generator=g)
    T = (torch.rand(10, 3, generator=g) > 0.5).float()
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    ref = copy.deepcopy(model)
    res = fit(model, TensorDataset(X, T), TensorDataset(X, T), epochs=1, batch=10, lr=0.4, **PLAIN)
    loss = F.binary_cross_entropy_with_logits(ref(X), T)
    loss.backward()
    torch.optim.SGD(ref.parameters(), lr=0.4).step()
    _assert_same_weights(model, ref)
    with torch.no_grad():
        acc = ((ref(X) > 0) == (T > 0.5)).float().mean().item()
    assert res.history[0]["dev_accuracy"] == pytest.approx(acc)


# ---------------------------------------------------------------- evaluate_model


class _DropBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 3, 3),
            nn.BatchNorm2d(3),
            nn.ReLU(),
            nn.Flatten(),
            nn.Dropout(0.5),
            nn.Linear(12, 4),
        )

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("generic", [False, True], ids=["ImageSet", "TensorDataset"])
def test_evaluate_model_matches_manual_argmax(generic):
    images, labels = _images(31, classes=4, seed=5)
    X = _as_float(images)
    data = TensorDataset(X, labels) if generic else ImageSet(images, labels, _identity())
    torch.manual_seed(0)
    model = _DropBN()
    with torch.no_grad():  # non-trivial running statistics
        model.body[1].running_mean.uniform_(-0.5, 0.5)
        model.body[1].running_var.uniform_(0.5, 2.0)
    model.train()

    out = evaluate_model(model, data, batch=7)

    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        logits = model(X)
    assert out["n"] == 31
    assert out["accuracy"] == pytest.approx((logits.argmax(1) == labels).sum().item() / 31)
    assert out["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    model.train()
    again = evaluate_model(model, data, batch=31)
    assert again["accuracy"] == out["accuracy"]
    assert again["loss"] == pytest.approx(out["loss"], rel=1e-6)


def test_evaluate_model_ignores_task_smoothing():
    images, labels = _images(12, seed=6)
    X = _as_float(images)
    model = _convnet()
    out = evaluate_model(model, TensorDataset(X, labels), task=Classification(label_smoothing=0.3))
    with torch.no_grad():
        assert out["loss"] == pytest.approx(F.cross_entropy(model(X), labels).item(), rel=1e-6)


# ---------------------------------------------------------------- a real network on real data


def test_lenet5_learns_digits():
    from cnnkit.data import load
    from cnnkit.models import create

    data = load("digits", size=32)
    train = data.train.subset(np.arange(400), "train")
    dev = data.dev
    torch.manual_seed(0)
    model = create("lenet5")
    before = evaluate_model(model, dev)
    res = fit(
        model,
        train,
        dev,
        epochs=3,
        batch=32,
        lr=3e-3,
        optimizer="adam",
        verbose=0,
        workers=0,
        **NOAUG,
    )
    after = evaluate_model(model, dev)
    assert len(res.history) == 3
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert after["loss"] < before["loss"]
    assert after["accuracy"] > 0.5 > before["accuracy"]
    best = res.history[res.best_epoch - 1]
    assert after["loss"] == pytest.approx(best["dev_loss"], rel=1e-5)
    assert after["accuracy"] == pytest.approx(best["dev_accuracy"])


# --- input pipeline: the time spent waiting for batches ---------------------------------------


class _SlowSet(torch.utils.data.Dataset):
    """A dataset whose every example takes ``delay`` seconds to read."""

    def __init__(self, n: int, delay: float) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 1, 4, 4, generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g)
        self.delay = delay

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        import time

        time.sleep(self.delay)
        return self.x[i], self.y[i]


def test_a_starved_input_pipeline_is_measured_and_named(monkeypatch):
    # 200 reads of 6 ms in the main process: at least 1.2 s of waiting, against a few ms
    # of compute on a 4x4 input (the note's minimum epoch lowered from 5 s to 1 s)
    monkeypatch.setattr(loop_mod, "STARVED_MIN_S", 1.0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    r = fit(model, _SlowSet(200, 0.006), epochs=1, batch=50, workers=0, verbose=0)
    (row,) = r.history
    assert 1.2 <= row["data_s"] <= row["seconds"]
    assert row["data_s"] > 0.5 * row["seconds"]
    (note,) = [n for n in r.notes if n.startswith("input pipeline:")]
    assert note.startswith(f"input pipeline: epoch 1 waited {row['data_s']:.1f} s of ")
    assert "raise workers= (now 0)" in note
    assert note.endswith("(an ImageFolder through cnnkit.data.load)")


def test_in_memory_batches_wait_little_and_say_nothing():
    data = ImageSet(
        torch.randint(0, 256, (512, 1, 8, 8), dtype=torch.uint8),
        torch.randint(0, 3, (512,)),
        Preprocess((8, 8), 1, (0.5,), (0.25,)),
        "train",
    )
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    r = fit(model, data, epochs=1, batch=64, verbose=0)
    (row,) = r.history
    assert 0 < row["data_s"] < row["seconds"]
    assert not [n for n in r.notes if n.startswith("input pipeline:")]


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam", "adamw"])
def test_optimizers_use_the_fused_kernel_with_pytorchs_results(name, monkeypatch):
    # the fused kernel is a speed choice only: 5 steps match PyTorch's default
    # (for-loop) implementation of the same update
    cfg = TrainConfig(optimizer=name, lr=0.05, momentum=0.9, weight_decay=1e-3)
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    b = copy.deepcopy(a)
    opt_a = build_optimizer(a, cfg)
    assert opt_a.defaults["fused"] is True
    monkeypatch.setattr(loop_mod, "_fusable", lambda params: None)
    opt_b = build_optimizer(b, cfg)
    assert not opt_b.defaults["fused"] and not opt_b.defaults["foreach"]
    x, y = torch.randn(16, 6), torch.randint(0, 2, (16,))
    for _ in range(5):
        for m, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_the_starvation_note_of_in_memory_data_names_augmentation(monkeypatch):
    # thresholds at 0: any wait is noted; in memory, workers= would not help
    monkeypatch.setattr(loop_mod, "STARVED_MIN_S", 0.0)
    monkeypatch.setattr(loop_mod, "STARVED_SHARE", 0.0)
    data = ImageSet(
        torch.randint(0, 256, (256, 1, 8, 8), dtype=torch.uint8),
        torch.randint(0, 3, (256,)),
        Preprocess((8, 8), 1, (0.5,), (0.25,)),
        "train",
    )
    r = fit(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), data, epochs=2, batch=64, verbose=0)
    notes = [n for n in r.notes if n.startswith("input pipeline:")]
    assert len(notes) == 1  # once per run, not per epoch
    assert notes[0].startswith(f"input pipeline: epoch 1 waited {r.history[0]['data_s']:.1f} s")
    assert "augmentation (degrees=, translate=, scale=, fliplr=)" in notes[0]
    assert "workers=" not in notes[0]
