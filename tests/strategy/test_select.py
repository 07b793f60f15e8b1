"""``cnnkit.strategy.selection``: one optimizing metric, satisficing limits, real measurements."""

from __future__ import annotations

import math

import pytest

from cnnkit.cli import main
from cnnkit.errors import CnnkitError
from cnnkit.strategy import measure_latency, select
from cnnkit.strategy.selection import NoRunSatisfiesError, canonical_metric, maximize

# "Satisficing and Optimizing metric / Another cat classification example":
#   Classifier  Accuracy  Running time
#   A           90%       80ms
#   B           92%       95ms
#   C           95%       1500ms
#   maximize accuracy s.t. running time <= 100ms  ->  B
CATS = {
    "A": {"accuracy": 0.90, "running_time_ms": 80},
    "B": {"accuracy": 0.92, "running_time_ms": 95},
    "C": {"accuracy": 0.95, "running_time_ms": 1500},
}


def test_course_table_picks_b():
    sel = select(CATS, optimize="accuracy", satisfice={"running_time_ms": 100})
    assert sel.best is not None and sel.best.name == "B"
    assert sel.maximize
    assert [c.violations for c in sel.candidates] == [[], [], ["running_time_ms"]]
    text = sel.table()
    assert "optimizing: accuracy (maximize)" in text
    assert "satisficing: running_time_ms <= 100 ms" in text
    row_c = next(line for line in text.splitlines() if line.startswith("C "))
    assert "95.0%" in row_c and "1,500 ms" in row_c and "running_time_ms <= 100 ms" in row_c
    row_b = next(line for line in text.splitlines() if line.startswith("B "))
    assert row_b.endswith("<- picked") and "none" in row_b
    # without the satisficing metric the most accurate wins; with a tight one, none does
    assert select(CATS, optimize="accuracy").best.name == "C"
    with pytest.raises(NoRunSatisfiesError) as e:
        select(CATS, optimize="accuracy", satisfice={"running_time_ms": 50})
    assert isinstance(e.value, CnnkitError)
    assert "no run meets running_time_ms <= 50 ms (A: running_time_ms 80 ms;" in str(e.value)
    assert len(e.value.selection.candidates) == 3 and e.value.selection.best is None
    # a maximized satisficing metric is a lower bound: accuracy >= 93% leaves C alone
    sel = select(CATS, optimize="running_time_ms", satisfice={"accuracy": "93%"})
    assert sel.best.name == "C" and not sel.maximize


def test_directions_and_names():
    assert canonical_metric("dev_acc") == "dev_accuracy"
    assert canonical_metric("train_dev_err") == "train_dev_error"
    assert canonical_metric("TEST-F1") == "test_f1"
    for up in ("dev_acc", "accuracy", "test_f1", "dev_accuracy"):
        assert maximize(up)
    for down in ("dev_loss", "test_error", "latency_ms", "params", "macs", "running_time_ms"):
        assert not maximize(down)
    with pytest.raises(CnnkitError, match="can't tell whether to maximize or minimize 'speed'"):
        maximize("speed")
    with pytest.raises(CnnkitError, match="can't tell whether to maximize or minimize 'speed'"):
        select({"A": {"speed": 3.0}}, optimize="speed")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"optimize": "acuracy"}, "row 'A' has no 'acuracy': did you mean 'accuracy'?"),
        ({"optimize": "accuracy", "satisfice": {"accuracy": 0.9}}, "both the optimizing metric"),
        ({"optimize": "accuracy", "satisfice": {"running_time_ms": "fast"}}, "is not a number"),
        ({"optimize": "accuracy", "satisfice": {"running_time_ms": -1}}, "is negative"),
        ({"optimize": "speed"}, "row 'A' has no 'speed': it has accuracy, running_time_ms."),
    ],
)
def test_table_mistakes(kwargs, message):
    with pytest.raises(CnnkitError) as e:
        select(CATS, **kwargs)
    assert message in str(e.value)


# ---------------------------------------------------------------- real runs

TRAIN = {
    "data": "digits",
    "batch": 64,
    "verbose": 0,
    "precision": "fp32",
    "memory_format": "contiguous",
    "compile": False,
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """LeNet-5 trained 2 epochs (about 80% on dev, 61,706 parameters) and softmax
    regression barely trained (lr 1e-6: about chance, 10,250 parameters)."""
    from cnnkit.train.classify import train

    project = str(tmp_path_factory.mktemp("select"))
    big = train(model="lenet5", epochs=2, name="lenet", project=project, **TRAIN).run_dir
    small = train(
        model="logistic", epochs=1, lr=1e-6, name="logistic", project=project, **TRAIN
    ).run_dir
    return big, small


def test_most_accurate_run_breaks_a_limit(runs):
    from cnnkit.train.classify import evaluate, load_run_model

    big, small = runs
    sel = select([big, small], optimize="dev_acc", satisfice={"latency_ms": 1000, "params": 20000})
    by = {c.name: c for c in sel.candidates}
    b, s = by[str(big)], by[str(small)]
    # measured, not guessed
    for run, c in ((big, b), (small, s)):
        model, _ = load_run_model(run)
        assert c.values["params"] == sum(p.numel() for p in model.parameters())
        assert c.values["dev_accuracy"] == evaluate(run, split="dev")["accuracy"]
        assert c.values["dev_error"] == pytest.approx(1 - c.values["dev_accuracy"])
        assert 0 < c.values["latency_ms"] < 1000 and math.isfinite(c.values["latency_ms"])
        assert c.n["dev"] == 180
    assert b.values["params"] == 61706 and s.values["params"] == 32 * 32 * 10 + 10
    assert b.values["dev_accuracy"] > s.values["dev_accuracy"]  # LeNet-5 is the most accurate
    assert b.violations == ["params"] and s.violations == []
    assert sel.best is s
    text = sel.table()
    big_row = next(line for line in text.splitlines() if line.startswith(str(big)))
    small_row = next(line for line in text.splitlines() if line.startswith(str(small)))
    assert "61,706" in big_row and "params <= 20,000" in big_row and "picked" not in big_row
    assert "10,250" in small_row and small_row.endswith("<- picked")
    assert f"picked {small}: the best dev_accuracy" in text
    # no limit on size: LeNet-5; minimizing dev loss picks it too
    assert select([big, small], optimize="dev_acc").best.name == str(big)
    assert select(f"{big},{small}", optimize="dev_loss").best.name == str(big)


def test_f1_is_the_macro_average(runs):
    import torch
    from sklearn.metrics import f1_score

    from cnnkit.data import Preprocess, load
    from cnnkit.train.classify import load_run_model

    big, small = runs
    sel = select([big, small], optimize="dev_f1", repeats=3)
    model, meta = load_run_model(big)
    pre = Preprocess.from_dict(meta["preprocess"])
    dev = load("digits", size=pre.size).dev  # the runs' split: dev=0.1, test=0.2, seed 0
    with torch.no_grad():
        pred = model(pre.normalize(dev.images)).argmax(1)
    want = f1_score(dev.labels.numpy(), pred.numpy(), average="macro")
    assert sel.candidates[0].values["dev_f1"] == pytest.approx(want, abs=1e-6)
    assert sel.best.name == str(big) and sel.maximize


def test_cli_select(runs, capsys):
    big, small = runs
    argv = ["select", f"runs={big},{small}", "optimize=dev_acc", "latency_ms=1000", "params=2e4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"picked {small}" in out and "params <= 20,000" in out
    # positional run folders work too; no run meets a 100-parameter limit
    assert main(["select", str(big), str(small), "params=100", "repeats=3"]) == 2
    cap = capsys.readouterr()
    assert "limits broken" in cap.out and "<- picked" not in cap.out
    assert cap.err.startswith("cnnkit: error: no run meets params <= 100 (lenet: params 61,706")
    assert cap.err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["runs=a", "latncy_ms=100"], "unknown key 'latncy_ms' for `cnnkit select`: did you mean"),
        (["optimize=dev_acc"], "no runs to choose from"),
        (["runs=nowhere", "optimize=dev_acc"], "'nowhere' is not a run folder"),
        (["runs=a", "optimize=dev_speed"], "cnnkit can't measure 'dev_speed' on a run"),
        (["runs=a", "repeats=0"], "repeats must be an integer >= 1"),
        (["runs=a", "threads=two"], "threads must be an integer >= 1"),
        (["runs=a", "dev_acc=95"], "the limit dev_acc=95 is over 1"),
    ],
)
def test_cli_select_mistakes(argv, message, capsys):
    assert main(["select", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_measure_latency():
    import torch

    from cnnkit.models import create

    model = create("lenet5")
    ms = measure_latency(model, "32x32x1", repeats=5, warmup=1)
    assert 0 < ms < 1000
    assert model.training  # left as it was
    with pytest.raises(CnnkitError, match="LeNet-5 takes 32x32 inputs"):
        measure_latency(model, (8, 8, 1))
    with pytest.raises(CnnkitError, match="the model does not take input 32x32x3"):
        measure_latency(torch.nn.Conv2d(1, 4, 3), "32x32x3")
    with pytest.raises(CnnkitError, match="repeats must be an integer >= 1"):
        measure_latency(model, "32x32x1", repeats=0)
    # one thread while timing by default; torch's own setting is restored after
    before = torch.get_num_threads()
    assert measure_latency(model, (32, 32, 1), repeats=3, threads=None) > 0
    assert torch.get_num_threads() == before
    with pytest.raises(CnnkitError, match="threads must be an integer >= 1"):
        measure_latency(model, "32x32x1", threads=0)
