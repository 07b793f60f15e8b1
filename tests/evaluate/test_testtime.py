"""Multi-crop evaluation and ensembles: the crops' geometry, the averaging, real runs and cost.

The crops are checked pixel by pixel against slices of the padded (``mode="shift"``) or
resized (``mode="resize"``) image; the averaging against a softmax worked out by hand.
Three real LeNet-5 runs on the bundled digits (same data and seed, so the same test
split; different learning rates and batch sizes) are scored with 5 crops and as an
ensemble; the scores are recomputed independently (slices of ``F.pad`` and
``F.interpolate``, a softmax averaged by hand) and the cost is reported.

The runs here train 2 epochs (the suite's budget), so they are far from converged;
docs/evaluate.md has the measured comparison on trained runs (5 shifted crops matched
or beat 1 crop on every run and split there). Checked here: that the shifted crops
beat the zoomed ones on the digits (which fill their frame, so zooming cuts strokes),
and that the ensemble's log loss is at most the members' mean (``-log`` is convex).
"""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import TensorDataset

import cnnkit.evaluate as ev
from cnnkit.errors import CnnkitError


@pytest.mark.parametrize("mode", ["shift", "resize"])
def test_five_and_ten_crops_are_the_center_and_corners_of_the_enlarged_image(mode):
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    if mode == "resize":
        big = F.interpolate(x, size=(36, 36), mode="bilinear", antialias=True)
    else:  # padded by 2 pixels with the fill value, per channel
        fill = torch.tensor([-1.0, -2.0, -3.0]).view(1, 3, 1, 1)
        big = fill.expand(2, 3, 36, 36).clone()
        big[..., 2:34, 2:34] = x
    assert ev.resized_size((32, 32)) == (36, 36) and ev.resized_size((8, 8)) == (9, 9)
    assert ev.shift_pixels((32, 32)) == (1, 1) and ev.shift_pixels((8, 8)) == (1, 1)
    assert ev.shift_pixels((224, 224)) == (7, 7) and ev.shift_pixels((32, 32), 0.0625) == (2, 2)
    assert ev.shift_pixels((64, 16), 0.125) == (8, 2) and ev.shift_pixels((2, 2), 0.9) == (1, 1)
    v5 = ev.crop_views(x, 5, mode=mode, shift=0.0625, fill=torch.tensor([-1.0, -2.0, -3.0]))
    want = [
        big[..., 2:34, 2:34],  # center
        big[..., :32, :32],  # top left
        big[..., :32, 4:],  # top right
        big[..., 4:, :32],  # bottom left
        big[..., 4:, 4:],  # bottom right
    ]
    assert len(v5) == 5
    for got, w in zip(v5, want):
        assert got.shape == (2, 3, 32, 32)
        torch.testing.assert_close(got, w, atol=1e-3, rtol=1e-5)
    if mode == "shift":  # the center is the image itself; a corner is the image moved 2 pixels
        assert torch.equal(v5[0], x)
        assert torch.equal(v5[4][..., :30, :30], x[..., 2:, 2:])
        assert (v5[4][:, 0, 30:, :] == -1).all() and (v5[4][:, 2, :, 30:] == -3).all()
    v10 = ev.crop_views(x, 10, mode=mode, shift=0.0625, fill=torch.tensor([-1.0, -2.0, -3.0]))
    assert len(v10) == 10
    for a, b in zip(v10[:5], v5):
        assert torch.equal(a, b)
    # the mirrored crops: the center, then the mirror of each corner (left and right swap)
    for m, src in zip(v10[5:], [v5[0], v5[2], v5[1], v5[4], v5[3]]):
        torch.testing.assert_close(m, src.flip(-1))
    assert ev.crop_views(x, 1)[0] is x


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "shfit"}, r"did you mean 'shift'"),
        ({"mode": "shift", "shift": 0}, r"^shift must be a number > 0 and < 1, got 0"),
        ({"mode": "shift", "shift": 1.5}, r"^shift must be a number > 0 and < 1"),
        ({"mode": "resize", "resize": 0.9}, r"^resize must be a number > 1, got 0\.9"),
    ],
)
def test_bad_crop_settings_are_refused_with_the_fix(kwargs, match):
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(CnnkitError, match=match):
        ev.predict_log_probs(nn.Flatten(), TensorDataset(x, torch.zeros(1)), crops=5, **kwargs)


def test_crops_average_softmax_probabilities():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))  # (B, 3, 8, 8) -> (B, 192)
    x = torch.randn(10, 3, 8, 8)
    y = torch.randint(0, 4, (10,))
    out = ev.predict_log_probs(model, TensorDataset(x, y), crops=5, batch=4)
    with torch.no_grad():
        probs = [model(v).softmax(1) for v in ev.crop_views(x, 5)]
    mean = sum(probs) / 5
    torch.testing.assert_close(out.log_probs.exp(), mean)
    assert torch.equal(out.labels, y) and out.crops == 5 and out.seconds > 0
    assert out.describe() == (
        "5 crops: center + 4 corners (8x8) of the image padded by 1 pixel (10x10; "
        "the image shifted by 1 pixel), no mirrors; 5 forward passes per image"
    )
    assert ev.describe_crops(10, (8, 8), mode="resize") == (
        "10 crops: center + 4 corners (8x8) of the image resized to 9x9, each also mirrored; "
        "10 forward passes per image"
    )
    one = ev.predict_log_probs(model, TensorDataset(x, y), crops=1)
    with torch.no_grad():
        torch.testing.assert_close(one.log_probs, model(x).log_softmax(1))


@pytest.mark.parametrize("crops", [0, 2, 3, 4, 6, 7, 12, True, "5", 5.5])
def test_crops_other_than_1_5_10_are_refused(crops):
    with pytest.raises(CnnkitError, match=r"^crops must be 1, 5 or 10, got .*; e\.g\. crops=5"):
        ev.check_crops(crops)


def test_ensemble_of_models_averages_probabilities_and_counts_cost():
    torch.manual_seed(1)
    x = torch.randn(40, 1, 8, 8)
    y = torch.randint(0, 3, (40,))
    nets = [nn.Sequential(nn.Flatten(), nn.Linear(64, 3)) for _ in range(3)]
    res = ev.ensemble(nets, TensorDataset(x, y))
    with torch.no_grad():
        mean = sum(n(x).softmax(1) for n in nets) / 3
    want = ev.classification_report(mean.log(), y)
    assert res.ensemble.report.accuracy == pytest.approx(want.accuracy)
    assert res.ensemble.report.loss == pytest.approx(want.loss, abs=1e-5)
    assert [r.params for r in res.members] == [195] * 3  # 64 * 3 + 3
    assert res.ensemble.params == 585 and res.ensemble.passes_per_image == 3
    assert res.ensemble.seconds == pytest.approx(sum(r.seconds for r in res.members))
    with pytest.raises(CnnkitError, match="two or more runs"):
        ev.ensemble(nets[:1], TensorDataset(x, y))


# --- real runs -------------------------------------------------------------------------------

# the same data and seed (so the same test split), different learning rates and batches
MEMBERS = {
    "a": {"lr": 2e-3, "batch": 64},
    "b": {"lr": 1e-3, "batch": 32},
    "c": {"lr": 4e-3, "batch": 128},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from cnnkit.train.classify import train

    root = tmp_path_factory.mktemp("testtime_runs")
    out = {}
    for name, settings in MEMBERS.items():
        r = train(
            model="lenet5",
            data="digits",
            epochs=2,
            verbose=0,
            project=str(root),
            name=name,
            **settings,
        )
        out[name] = r.run_dir
    return out


def _by_hand(run, crops5: str | None) -> tuple[float, torch.Tensor]:
    """Accuracy and mean probabilities on the test split, crops cut with plain slicing."""
    m = ev.load_member(run)
    ds = m.dataset
    x = ds.preprocess.normalize(ds.images)
    if crops5:
        if crops5 == "resize":
            big = F.interpolate(x, size=(36, 36), mode="bilinear", antialias=True)
        else:  # black borders, normalized, as the augmentation's zero fill
            black = ds.preprocess.normalize(torch.zeros(1, 1, 34, 34, dtype=torch.uint8))
            big = black.expand(len(x), 1, 34, 34).clone()
            big[..., 1:33, 1:33] = x
        d = big.shape[-1] - 32  # 2 (shift) or 4 (resize to 36x36)
        views = [
            big[..., i : i + 32, j : j + 32]
            for i, j in [(d // 2, d // 2), (0, 0), (0, d), (d, 0), (d, d)]
        ]
    else:
        views = [x]
    with torch.no_grad():
        probs = sum(m.model(v).softmax(1) for v in views) / len(views)
    return float((probs.argmax(1) == ds.labels).double().mean()), probs


def test_five_crops_are_scored_and_their_cost_reported(runs):
    res = ev.evaluate_crops(runs["a"], crops=5)
    zoomed = ev.evaluate_crops(runs["a"], crops=5, mode="resize")
    single = ev(runs["a"])
    assert res.single.accuracy == pytest.approx(single["accuracy"], abs=1e-12)
    assert res.multi.n == res.single.n == zoomed.multi.n == 359
    for r, how in ((res, "shift"), (zoomed, "resize")):
        acc5, _ = _by_hand(runs["a"], crops5=how)
        assert r.multi.accuracy == pytest.approx(acc5, abs=1.01 / 359)  # a near-tie may flip
    # the digits fill their frame: zoomed corners cut strokes, shifted ones do not
    assert res.multi.accuracy > zoomed.multi.accuracy, (res.multi.accuracy, zoomed.multi.accuracy)
    assert res.multi.accuracy > 0.5, (res.multi.accuracy, res.single.accuracy)
    assert res.crops == 5 and res.seconds > res.single_seconds > 0
    lines = res.lines()
    assert lines[0].endswith("  1 crop") and lines[1].endswith("  5 crops")
    assert lines[2] == (
        "5 crops: center + 4 corners (32x32) of the image padded by 1 pixel (34x34; the image "
        "shifted by 1 pixel), no mirrors; 5 forward passes per image"
    )
    assert zoomed.description.startswith("5 crops: center + 4 corners (32x32) of the image resized")
    assert lines[3].startswith("cost: 5 forward passes per image; measured ")
    assert f"({res.slowdown:.1f}x)" in lines[3]
    ten = ev.evaluate_crops(runs["a"], crops=10)
    assert any("trained without mirror images (fliplr=0)" in n for n in ten.notes)


def test_ensemble_of_three_runs_averages_probabilities_and_reports_cost(runs):
    res = ev.ensemble([runs["a"], runs["b"], runs["c"]])
    accs = [m.accuracy for m in res.members]
    mean = sum(_by_hand(runs[key], crops5=None)[1] for key in "abc") / 3
    labels = ev.load_member(runs["a"]).dataset.labels
    by_hand = float((mean.argmax(1) == labels).double().mean())
    assert res.ensemble.accuracy == pytest.approx(by_hand, abs=1.01 / 359), (by_hand, accs)
    want_loss = float(F.nll_loss(mean.double().log(), labels))
    assert res.ensemble.report.loss == pytest.approx(want_loss, abs=1e-4)
    # -log is convex: the ensemble's log loss is at most the members' mean
    assert res.ensemble.report.loss <= sum(m.report.loss for m in res.members) / 3
    for m, key in zip(res.members, "abc"):
        assert m.accuracy == pytest.approx(ev(runs[key])["accuracy"], abs=1e-12)
        assert m.params == 61_706 and m.passes_per_image == 1 and m.seconds > 0
    assert res.ensemble.params == 3 * 61_706 and res.ensemble.passes_per_image == 3
    text = res.table()
    assert text.splitlines()[1].split() == [
        "model",
        "accuracy",
        "error",
        "loss",
        "params",
        "passes/image",
        "forward",
        "s",
        "ms/image",
    ]
    assert "ensemble of 3" in text and "185,118" in text
    assert "ensemble vs best member" in text


def test_runs_with_other_splits_are_refused(runs, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(runs["a"], other)
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["seed"] = 1  # another seed: another test split, part of it a's training images
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(CnnkitError) as e:
        ev.ensemble([runs["a"], other])
    msg = str(e.value)
    assert "hold different images in their test split (split_seed 0 vs 1)" in msg
    assert "train the members with the same data, dev, test and split_seed" in msg


def test_cli_val_crops_and_runs(runs, capsys):
    from cnnkit.cli import main

    assert main(["val", f"run={runs['a']}", "crops=5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("test accuracy ") and out[0].endswith("  1 crop")
    assert out[1].endswith("  5 crops") and out[3].startswith("cost: 5 forward passes per image")
    assert main(["val", f"run={runs['a']}", "crops=5", "crop_mode=resize", "resize=1.25"]) == 0
    assert "of the image resized to 40x40, no mirrors" in capsys.readouterr().out
    assert main(["val", f"runs={runs['a']},{runs['b']},{runs['c']}"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("test split, 359 images: each member, and the ensemble")
    assert "ensemble of 3" in out
    for args, msg in [
        (["val", f"run={runs['a']}", "crops=3"], "crops must be 1, 5 or 10, got 3"),
        (["val", f"runs={runs['a']}"], "runs= needs two or more run folders"),
        (["val", f"run={runs['a']}", f"runs={runs['a']},{runs['b']}"], "not both"),
        (["val", f"run={runs['a']}", "crosp=5"], "did you mean crops=?"),
        (["val", f"run={runs['a']}", "crops=5", "crop_mode=resise"], "did you mean 'resize'"),
        (["val", f"run={runs['a']}", "crops=5", "shift=2"], "shift must be a number > 0 and < 1"),
    ]:
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("cnnkit: error: ") and msg in err[0]
