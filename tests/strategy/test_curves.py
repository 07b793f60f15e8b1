"""cnnkit.strategy.curves: error vs epochs (from results.csv) and vs training-set size."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.strategy import learning_curve, size_curve
from cnnkit.train.classify import train

FAST = {"precision": "fp32", "memory_format": "contiguous", "compile": False}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("curves")
    return train(
        model="lenet5", data="digits", epochs=2, batch=64, verbose=0, project=str(tmp), **FAST
    )


@pytest.fixture(scope="module")
def sizes(tmp_path_factory):
    out = tmp_path_factory.mktemp("sizes") / "size.png"
    curve = size_curve(
        model="lenet5",
        data="digits",
        fractions=(0.3, 0.1),
        human=0.005,
        out=out,
        epochs=2,
        batch=64,
        verbose=0,
        **FAST,
    )
    return curve


def _valid_png(path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_learning_curve_reads_errors_from_results_csv(run):
    curve = learning_curve(run.run_dir, human=0.01)
    with open(run.run_dir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert curve.kind == "epochs" and curve.x == [1, 2]
    assert curve.train_error == [1 - float(r["train_accuracy"]) for r in rows]
    assert curve.dev_error == [1 - float(r["dev_accuracy"]) for r in rows]
    # and they are the trainer's own numbers (results.csv keeps 6 significant digits)
    for e, h in zip(curve.dev_error, run.fit.history):
        assert e == pytest.approx(1 - h["dev_accuracy"], abs=1e-6)
    assert curve.human == 0.01
    assert curve.png == run.run_dir / "learning_curve.png"
    assert _valid_png(curve.png) == (640, 420)
    text = curve.table()
    assert "avoidable bias" in text and "variance" in text and "human-level error 1.00%" in text


def test_learning_curve_out_and_results_csv_path(run, tmp_path):
    out = tmp_path / "plots" / "curve.png"
    curve = learning_curve(run.run_dir / "results.csv", out=out)
    assert curve.png == out and _valid_png(out)
    assert curve.human is None and "avoidable bias" not in curve.table()


def test_size_curve_errors_match_an_independent_evaluation(sizes):
    d = sizes.data
    n = len(d.train)
    labels = d.train.labels.numpy()
    assert sizes.kind == "size" and sizes.fractions == [0.1, 0.3]  # sorted
    assert sizes.x == [round(0.1 * n), round(0.3 * n)]
    for f, idx, model, tr, dv in zip(
        sizes.fractions, sizes.indices, sizes.models, sizes.train_error, sizes.dev_error
    ):
        assert len(idx) == round(f * n) and len(np.unique(idx)) == len(idx)
        # stratified: every class keeps its share of the training split (within one image)
        for c in np.unique(labels):
            assert abs((labels[idx] == c).sum() - f * (labels == c).sum()) <= 1
        model.eval()
        with torch.no_grad():
            x = d.train.preprocess.normalize(d.train.images[torch.as_tensor(idx)])
            wrong = (model(x).argmax(1) != d.train.labels[torch.as_tensor(idx)]).sum()
            assert tr == pytest.approx(int(wrong) / len(idx), abs=1e-12)
            x = d.dev.preprocess.normalize(d.dev.images)
            wrong = (model(x).argmax(1) != d.dev.labels).sum()
            assert dv == pytest.approx(int(wrong) / len(d.dev), abs=1e-12)
    assert sizes.models[0] is not sizes.models[1]
    p0, p1 = (next(iter(m.parameters())) for m in sizes.models)
    assert not torch.equal(p0, p1)  # each fraction trained its own copy


def test_size_curve_writes_png_and_csv(sizes):
    assert _valid_png(sizes.png) == (640, 420)
    assert sizes.csv == sizes.png.with_suffix(".csv")
    with open(sizes.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["x"]) for r in rows] == sizes.x
    assert [float(r["train_error"]) for r in rows] == sizes.train_error
    assert [float(r["dev_error"]) for r in rows] == sizes.dev_error
    assert {r["human"] for r in rows} == {"0.005"}
    assert "10%" in sizes.table() and "30%" in sizes.table()


def test_size_curve_with_a_module_and_loaded_data(sizes, tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    curve = size_curve(
        model=net,
        data=sizes.data,
        fractions=(0.5, 1.0),
        out=tmp_path / "lin.png",
        epochs=1,
        batch=128,
        verbose=0,
        **FAST,
    )
    assert curve.x == [round(0.5 * len(sizes.data.train)), len(sizes.data.train)]
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())  # copied
    assert all(0 <= e <= 1 for e in curve.train_error + curve.dev_error)
    assert curve.png.is_file() and curve.title == "Sequential on digits"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fractions": (0.0, 0.5)}, "fractions"),
        ({"fractions": (1.5,)}, "fractions"),
        ({"fractions": (0.5, 0.5)}, "repeat"),
        ({"fractions": "0.5"}, "fractions"),
        ({"human": 5}, "human"),
        ({"out": "curve.jpg"}, r"\.png"),
        ({"epochz": 2}, "did you mean epochs"),
        ({"model": 3}, "model"),
    ],
)
def test_size_curve_mistakes(kwargs, match):
    with pytest.raises(CnnkitError, match=match):
        size_curve(**{"verbose": 0, **kwargs})


def test_learning_curve_mistakes(run, tmp_path):
    with pytest.raises(CnnkitError, match=r"no results\.csv"):
        learning_curve(tmp_path)
    with pytest.raises(CnnkitError, match="human"):
        learning_curve(run.run_dir, human=1.5)
    with pytest.raises(CnnkitError, match=r"\.png"):
        learning_curve(run.run_dir, out=tmp_path / "x.jpg")
    empty = tmp_path / "results.csv"
    empty.write_text("epoch,train_loss,train_accuracy\n")
    with pytest.raises(CnnkitError, match="no epochs"):
        learning_curve(empty)
