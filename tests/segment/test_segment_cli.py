"""``cnnkit data synth segment`` and ``cnnkit segment train | val | predict`` end to end."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnkit.cli import main
from cnnkit.shapes import conv_transpose_output_size

NAMES = ["background", "circle", "square", "triangle"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """40 synthetic 32x32 images (32 train, 8 val) and a 2-epoch U-Net run on them."""
    base = tmp_path_factory.mktemp("seg")
    data = base / "shapes"
    assert main(["data", "synth", "segment", f"out={data}", "n=40", "size=32", "seed=1"]) == 0
    args = ["segment", "train", f"data={data / 'data.yaml'}", "size=32", "depth=2", "width=8"]
    args += ["epochs=2", "batch=8", f"project={base / 'runs'}", "name=t", "verbose=0"]
    args += ["workers=0"]
    assert main(args) == 0
    return base / "runs" / "segment" / "t", data, base


@pytest.fixture(scope="module")
def rich(run):
    """A second run, 4 epochs of batches of 4: it predicts several classes, not only the
    background (the 2-epoch run labels every val pixel background)."""
    _, data, base = run
    args = ["segment", "train", f"data={data / 'data.yaml'}", "size=32", "depth=2", "width=8"]
    args += ["epochs=4", "batch=4", f"project={base / 'runs'}", "name=rich", "verbose=0"]
    args += ["workers=0"]
    assert main(args) == 0
    return base / "runs" / "segment" / "rich", data, base


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("cnnkit: error: ")
    return err[0]


def test_synth_writes_the_set(run):
    _, data, _ = run
    assert len(list((data / "images" / "train").glob("*.png"))) == 32
    assert len(list((data / "images" / "val").glob("*.png"))) == 8
    assert len(list((data / "masks" / "val").glob("*.png"))) == 8


def test_run_folder_holds_every_file(run):
    folder, _, _ = run
    for name in ("config.yaml", "results.csv", "scores.json", "summary.txt"):
        assert (folder / name).is_file(), name
    assert (folder / "weights" / "best.safetensors").is_file()
    with open(folder / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    assert "dev_mean_iou" in rows[0]
    for r in rows:
        assert 0 <= float(r["dev_mean_iou"]) <= 1
    scores = json.loads((folder / "scores.json").read_text())
    assert list(scores["iou"]) == NAMES and scores["split"] == "val"
    assert "mean IoU" in (folder / "summary.txt").read_text()


def _confusion(pred: np.ndarray, true: np.ndarray, C: int) -> np.ndarray:
    cm = np.zeros((C, C), dtype=np.int64)
    keep = true != 255
    for t, p in zip(true[keep].ravel(), pred[keep].ravel()):
        cm[t, p] += 1
    return cm


@pytest.mark.parametrize("which", ["run", "rich"])
def test_scores_equal_a_numpy_recount_of_the_predicted_masks(which, request, tmp_path, capsys):
    folder, data, _ = request.getfixturevalue(which)
    out = tmp_path / "pred"
    src = data / "images" / "val"
    assert main(["segment", "predict", f"run={folder}", f"source={src}", f"out={out}"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]  # after the fixture's lines
    assert last.startswith(f"8 masks saved in {out}/")
    stems = sorted(p.stem for p in src.glob("*.png"))
    preds, trues = [], []
    for s in stems:
        with Image.open(out / f"{s}.png") as im:
            assert im.mode == "P"
            preds.append(np.array(im))
        with Image.open(data / "masks" / "val" / f"{s}.png") as im:
            trues.append(np.array(im))
        assert (out / "overlays" / f"{s}.png").is_file()
    pred, true = np.stack(preds).astype(np.int64), np.stack(trues).astype(np.int64)
    assert pred.shape == true.shape == (8, 32, 32)
    cm = _confusion(pred, true, 4)
    if which == "rich":
        assert len(np.unique(pred)) >= 3  # a recount worth the name: several classes
    scores = json.loads((folder / "scores.json").read_text())
    assert np.array_equal(np.array(scores["confusion_matrix"]), cm)
    tp = np.diag(cm).astype(float)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    iou, dice = {}, {}
    for c, name in enumerate(NAMES):
        den = tp[c] + fp[c] + fn[c]
        iou[name] = tp[c] / den if den else float("nan")
        dice[name] = 2 * tp[c] / (2 * tp[c] + fp[c] + fn[c]) if den else float("nan")
    acc = tp.sum() / cm.sum()
    assert abs(scores["pixel_accuracy"] - acc) < 1e-9
    present = [n for n in NAMES if not np.isnan(iou[n])]
    assert abs(scores["mean_iou"] - np.mean([iou[n] for n in present])) < 1e-9
    assert abs(scores["mean_dice"] - np.mean([dice[n] for n in present])) < 1e-9
    for n in present:
        assert abs(scores["iou"][n] - iou[n]) < 1e-9, n
        assert abs(scores["dice"][n] - dice[n]) < 1e-9, n
    # cnnkit segment val prints the same mean IoU
    assert main(["segment", "val", f"run={folder}"]) == 0
    first = capsys.readouterr().out.splitlines()[0].split()
    # "pixel accuracy 0.1234   mean IoU 0.1234   mean Dice 0.1234"
    assert first[3:5] == ["mean", "IoU"]
    assert float(first[2]) == pytest.approx(acc, abs=5e-5)
    assert float(first[5]) == pytest.approx(scores["mean_iou"], abs=5e-5)
    assert float(first[8]) == pytest.approx(scores["mean_dice"], abs=5e-5)


def test_predict_on_an_odd_size_image_writes_a_mask_of_its_size(run, tmp_path, capsys):
    folder, _, _ = run
    rng = np.random.default_rng(0)
    f = tmp_path / "odd.png"
    Image.fromarray(rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)).save(f)
    out = tmp_path / "o"
    assert main(["segment", "predict", f"run={folder}", f"source={f}", f"out={out}"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("1 masks saved")
    with Image.open(out / "odd.png") as im:
        m = np.array(im)
    assert m.shape == (97, 131)
    assert set(np.unique(m).tolist()) <= {0, 1, 2, 3}
    with Image.open(out / "overlays" / "odd.png") as im:
        assert im.size == (131, 97) and im.mode == "RGB"


def test_a_bad_val_mask_value_is_named(run, tmp_path, capsys):
    _, data, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    bad = sorted((copy / "masks" / "val").glob("*.png"))[3]
    with Image.open(bad) as im:
        m = np.array(im)
    m[5, 7] = 9
    Image.fromarray(m, mode="L").save(bad)
    args = ["segment", "train", f"data={copy / 'data.yaml'}", "size=32", "depth=2", "width=8"]
    args += ["epochs=1", f"project={tmp_path / 'runs'}", "verbose=0", "workers=0"]
    capsys.readouterr()
    assert main(args) == 2
    line = _one_error_line(capsys)
    assert str(bad) in line and "the value 9" in line
    assert not (tmp_path / "runs").exists()  # refused before a run folder is made


@pytest.mark.parametrize(
    "argv,needles",
    [
        (["segment", "train", "data=D", "epoch=3"], ["'epoch'", "did you mean epochs=?"]),
        (["segment", "train", "data=shapes/data.txt"], ["data='shapes/data.txt'", "data.yaml"]),
        (["segment", "predict", "run=R", "source=S"], ["needs source=", "out=DIR"]),
        (["segment", "val", "run=NOT_A_RUN"], ["'NOT_A_RUN' is not a run folder"]),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, needles, capsys):
    capsys.readouterr()
    assert main(argv) == 2
    line = _one_error_line(capsys)
    for n in needles:
        assert n in line, (n, line)


def test_binary_mode_with_four_classes_is_refused(run, tmp_path, capsys):
    _, data, _ = run
    args = ["segment", "train", f"data={data / 'data.yaml'}", "mode=binary", "size=32"]
    args += ["depth=2", "width=8", "epochs=1", f"project={tmp_path}", "verbose=0"]
    capsys.readouterr()
    assert main(args) == 2
    line = _one_error_line(capsys)
    assert "mode=binary needs exactly 2 classes" in line and "names 4" in line


def test_conv_transpose_output_size_matches_torch():
    rng = np.random.default_rng(12345)
    checked = 0
    while checked < 300:
        n = int(rng.integers(1, 17))
        f = int(rng.integers(1, 6))
        s = int(rng.integers(1, 5))
        p = int(rng.integers(0, f))  # torch wants padding <= dilation * (f - 1)
        op = int(rng.integers(0, s))
        want = (n - 1) * s - 2 * p + f + op
        if want < 1:
            continue
        layer = nn.ConvTranspose2d(1, 1, f, stride=s, padding=p, output_padding=op)
        with torch.no_grad():
            got = layer(torch.zeros(1, 1, n, n)).shape
        assert tuple(got[2:]) == (want, want), (n, f, s, p, op)
        assert conv_transpose_output_size(n, f, p, s, op) == want, (n, f, s, p, op)
        checked += 1
