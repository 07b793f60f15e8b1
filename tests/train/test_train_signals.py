"""``cnnkit train / val / predict`` on 1D signals and 3D volumes (folders of .npy files)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from cnnkit.cli import main
from cnnkit.train.checkpoint import load_weights_file


def _easy(root: Path, shape: tuple[int, ...], n: int = 24, seed: int = 0) -> Path:
    """Three classes told apart by their level (-1.5, 0, +1.5) under unit noise, written as
    ``root/{train,val,test}/<class>/<k>.npy`` (n per class: 60/20/20)."""
    rng = np.random.default_rng(seed)
    for c, level in (("high", 1.5), ("low", -1.5), ("mid", 0.0)):
        for split, count in (("train", n * 6 // 10), ("val", n // 5), ("test", n // 5)):
            folder = root / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                a = (level + rng.normal(0, 1, shape)).astype(np.float32)
                np.save(folder / f"{k:03d}.npy", a)
    return root


def _train_mean(root: Path) -> float:
    files = sorted((root / "train").rglob("*.npy"))
    return float(np.mean([np.load(f).astype(np.float64) for f in files]))


@pytest.mark.parametrize(
    ("model", "shape", "epochs"),
    [("resnet1d", (64,), 4), ("convnet3d", (8, 8, 8), 4)],
    ids=["signals", "volumes"],
)
def test_train_val_predict(model: str, shape: tuple, epochs: int, tmp_path: Path, capsys) -> None:
    data = _easy(tmp_path / "data", shape)
    project = tmp_path / "runs"
    rc = main(
        [
            "train",
            f"model={model}",
            f"data={data}",
            f"epochs={epochs}",
            "batch=16",
            "lr=0.005",
            f"project={project}",
            "name=run",
            "verbose=0",
        ]
    )
    out = capsys.readouterr()
    assert rc == 0, out.err
    run = project / "classify" / "run"
    for f in ("config.yaml", "results.csv", "summary.txt", "report.html"):
        assert (run / f).is_file(), f
    summary = (run / "summary.txt").read_text()
    acc = float(re.search(r"test accuracy ([\d.]+)%", summary).group(1))
    assert acc >= 80.0, summary  # chance is 33%
    # the checkpoint records the preprocessing, from the training split only
    _, meta = load_weights_file(run / "weights" / "best.safetensors")
    pre = meta["preprocess"]
    assert pre["dims"] == len(shape) and pre["size"] == list(shape) and pre["channels"] == 1
    assert pre["mean"][0] == pytest.approx(_train_mean(data), abs=1e-5)
    assert meta["classes"] == ["high", "low", "mid"]
    # val rebuilds the same split and gives the same score
    assert main(["val", f"run={run}"]) == 0
    line = capsys.readouterr().out
    assert f"test accuracy {acc}" in line or f"test accuracy {acc:.1f}" in line
    # predict a file: the class of an easy example
    f = data / "test" / "high" / "000.npy"
    assert main(["predict", f"run={run}", f"source={f}"]) == 0
    assert f"{f}: high" in capsys.readouterr().out
    # the page: image-only parts are skipped with a reason, nothing crashes
    page = (run / "report.html").read_text()
    assert "listed by file" in page or "No misclassified" in page
    assert "trained without it" in page


def test_resume_and_wrong_file_for_predict(tmp_path: Path, capsys) -> None:
    data = _easy(tmp_path / "data", (32,), n=10)
    project = tmp_path / "runs"
    args = ["train", "model=resnet1d", f"data={data}", "batch=8", f"project={project}"]
    assert main([*args, "epochs=1", "name=r", "verbose=0", "report=false"]) == 0
    run = project / "classify" / "r"
    assert main(["train", f"resume={run}", "epochs=2", "verbose=0"]) == 0
    rows = (run / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + 2 epochs
    capsys.readouterr()
    np.save(tmp_path / "long.npy", np.zeros(40, np.float32))
    assert main(["predict", f"run={run}", f"source={tmp_path / 'long.npy'}"]) == 2
    err = capsys.readouterr().err
    assert "long.npy" in err and "n x n_C = 40x1" in err and "32x1" in err
    # image-only tools refuse in one sentence: test-time crops, filter plots
    assert main(["val", f"run={run}", "crops=5"]) == 2
    assert "crops=5 crops 2D images" in capsys.readouterr().err
    assert main(["report", f"run={run}", "plot=filters"]) == 2
    assert "this run is on 1D signals; use plot=curves" in capsys.readouterr().err
    assert main(["report", f"run={run}", "plot=curves"]) == 0
    # scored on images, the run is refused naming both kinds
    assert main(["val", f"run={run}", "data=digits"]) == 2
    assert "trained on 1D signals but data=digits holds 2D images" in capsys.readouterr().err
    # so do ONNX export, error analysis (image files, a contact sheet) and data preview
    assert main(["export", f"run={run}"]) == 2
    assert "this run trains on 1D signals" in capsys.readouterr().err
    assert main(["analyze", f"run={run}"]) == 2
    assert "this run trains on 1D signals" in capsys.readouterr().err
    assert main(["data", "preview", f"data={data}", f"out={tmp_path / 'p.png'}"]) == 2
    assert "holds 1D signals or 3D volumes" in capsys.readouterr().err


def test_mismatches_refused_before_any_work(tmp_path: Path, capsys) -> None:
    sig = _easy(tmp_path / "sig", (64,), n=5)
    vol = _easy(tmp_path / "vol", (8, 8, 8), n=5)
    project = tmp_path / "runs"
    cases = [
        (["model=lenet5", f"data={sig}"], "holds 1D signals (n x n_C = 64x1); use model=resnet1d."),
        (["model=lenet5", f"data={vol}"], "model lenet5 takes 2D images but data="),
        (["model=resnet1d", f"data={vol}"], "model resnet1d takes 1D signals but data="),
        (["model=convnet3d", f"data={sig}"], "holds 1D signals (n x n_C = 64x1); use model="),
        (["model=resnet1d", "data=digits"], "model resnet1d takes 1D signals but data=digits"),
        (["model=resnet1d", f"data={sig}", "aug=strong"], "aug=strong is an image augmentation"),
        (["model=resnet1d", f"data={sig}", "degrees=5"], "degrees=5 is an image augmentation"),
        (["model=resnet1d", f"data={sig}", "size=32"], "size=32 does not match"),
    ]
    for argv, words in cases:
        assert main(["train", *argv, f"project={project}"]) == 2, argv
        err = capsys.readouterr().err
        assert words in err, err
        assert err.strip().count("\n") == 0
    assert not project.exists()


def test_layer_list_yaml_model_on_signals(tmp_path: Path, capsys) -> None:
    net = tmp_path / "net.yaml"
    net.write_text(
        "name: tiny1d\ninput: 32x1\nlayers:\n"
        "  - conv: {f: 3, p: same, n_C: 4}\n  - relu\n  - gap\n  - fc: num_classes\n"
    )
    data = _easy(tmp_path / "data", (32,), n=10)
    project = tmp_path / "runs"
    argv = ["train", f"model={net}", f"data={data}", "epochs=1", f"project={project}"]
    assert main([*argv, "verbose=0", "report=false"]) == 0
    wrong = _easy(tmp_path / "wrong", (8, 8, 8), n=5)
    assert main(["train", f"model={net}", f"data={wrong}", f"project={project}"]) == 2
    assert "takes 1D signals but data=" in capsys.readouterr().err


def test_a_last_batch_of_one_that_batch_norm_cannot_take_is_refused(tmp_path: Path, capsys):
    """Signals of 16 samples reach resnet1d's last batch norm as 1 value per channel: a
    batch of one example cannot be normalized in training, so the run is refused first."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 11), ("val", 4), ("test", 4)):
        for k in range(n):
            folder = tmp_path / "d" / split / "ab"[k % 2]
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"{k}.npy", rng.normal(size=16).astype(np.float32))
    args = ["train", "model=resnet1d", f"data={tmp_path / 'd'}", "epochs=1", "verbose=0"]
    args += [f"project={tmp_path / 'runs'}"]
    assert main([*args, "batch=5"]) == 2  # 11 = 2 x 5 + 1
    err = capsys.readouterr().err
    assert "batch=5 with 11 training examples leaves one" in err and "16x1" in err
    assert not (tmp_path / "runs").exists()  # refused before a run folder
    assert main([*args, "batch=4", "report=false"]) == 0  # 11 = 2 x 4 + 3 trains
