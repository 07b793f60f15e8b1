"""Hyperparameter search and the learning-rate finder, on real data and a real database.

- the course's scales: 2,000 draws of Optuna's seeded RandomSampler through a Space are
  uniform in log10(alpha) on [-4, 0] and in log10(1 - beta) on [-3, -1] (KS test), and
  not uniform in alpha or beta themselves;
- coarse to fine: the second round's ranges lie inside the first's and hold its best trial;
- a 12-trial study on digits in SQLite survives SIGKILL: the same command resumes it and
  ends with exactly 12 finished trials, the killed one marked FAIL and its draw re-run;
- lr_find leaves model and optimizer bitwise as they were, and its suggestion trains;
- command-line mistakes: exit status 2 and one sentence, before any work.
"""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")
stats = pytest.importorskip("scipy.stats")

from cnnkit.cli import main  # noqa: E402
from cnnkit.errors import CnnkitError  # noqa: E402
from cnnkit.strategy import Space, lr_find, tune  # noqa: E402
from cnnkit.strategy.search import Dim  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
PNG = b"\x89PNG\r\n\x1a\n"

# --------------------------------------------------------------------------- grammar


def test_grammar_reads_every_scale_and_writes_it_back():
    text = "lr=1e-4..1:log beta2=0.9..0.999:rlog batch=16..128:int l2=0..0.1 optimizer=adam|sgd"
    space = Space.parse(text)
    assert space.names == ["lr", "beta2", "batch", "l2", "optimizer"]
    assert space["lr"] == Dim("lr", 1e-4, 1.0, "log")
    assert space["beta2"] == Dim("beta2", 0.9, 0.999, "rlog")
    assert space["batch"] == Dim("batch", 16, 128, "int")
    assert space["l2"].scale == "linear"
    assert space["optimizer"].choices == ("adam", "sgd")
    assert Space.parse(str(space)) == space
    # the Python forms mean the same
    same = Space(
        lr=(1e-4, 1, "log"),
        beta2="0.9..0.999:rlog",
        batch=(16, 128, "int"),
        l2=(0, 0.1),
        optimizer=["adam", "sgd"],
    )
    assert same == space


@pytest.mark.parametrize(
    ("spec", "wanted"),
    [
        ("lr=1e-4..:log", "is not a range; write LOW..HIGH[:SCALE]"),
        ("lr=1e-4..1:lgo", "unknown scale 'lgo': did you mean 'log'?"),
        ("lr=1..1e-4:log", "runs backwards; write the smaller end first: lr=0.0001..1"),
        ("lr=0..1:log", "log scale needs LOW > 0"),
        ("beta2=0.9..1:rlog", "needs 0 <= LOW and HIGH < 1"),
        ("batch=16..100.5:int", "needs whole numbers"),
        ("lr=a..1", "has 'a' where a number belongs"),
        ("optimizer=adam||sgd", "has an empty choice"),
    ],
)
def test_grammar_mistakes_are_one_sentence(spec, wanted):
    with pytest.raises(CnnkitError) as e:
        Space.parse(spec)
    assert wanted in str(e.value)
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- scales


def test_random_draws_are_uniform_on_the_courses_scales():
    space = Space.parse("lr=1e-4..1:log beta2=0.9..0.999:rlog batch=16..128:int")
    draws = space.sample(2000, seed=0)
    lr = np.array([d["lr"] for d in draws])
    beta = np.array([d["beta2"] for d in draws])
    batch = np.array([d["batch"] for d in draws])
    assert lr.min() >= 1e-4 and lr.max() <= 1
    assert beta.min() >= 0.9 and beta.max() <= 0.999
    # alpha = 10**r, r uniform in [-4, 0]
    assert stats.kstest(np.log10(lr), "uniform", args=(-4, 4)).pvalue > 0.01
    assert stats.kstest(lr, "uniform", args=(1e-4, 1 - 1e-4)).pvalue < 1e-6
    # 1 - beta = 10**r, r uniform in [-3, -1]
    assert stats.kstest(np.log10(1 - beta), "uniform", args=(-3, 2)).pvalue > 0.01
    assert stats.kstest(beta, "uniform", args=(0.9, 0.099)).pvalue < 1e-6
    # a quarter of the draws in each decade of alpha, as the course wants
    per_decade = np.histogram(np.log10(lr), bins=[-4, -3, -2, -1, 0])[0]
    assert all(abs(n - 500) < 80 for n in per_decade)
    # whole numbers, every one of 16..128 reachable, uniform
    assert batch.dtype.kind == "i" and batch.min() == 16 and batch.max() == 128
    assert stats.chisquare(np.bincount(batch - 16, minlength=113)).pvalue > 0.01


def test_trial_k_draws_depend_on_seed_and_k_only():
    space = Space.parse("lr=1e-4..1:log beta2=0.9..0.999:rlog")
    a, b = space.sample(6, seed=3), space.sample(6, seed=3)
    assert a == b
    assert space.sample(6, seed=4) != a
    assert len({d["lr"] for d in a}) == 6  # no trial repeats another's draw


# --------------------------------------------------------------------------- coarse to fine


def test_second_round_zooms_inside_the_first_around_the_best():
    def objective(v):  # best near lr=1e-2, beta2=0.99, batch=64
        return (
            -((math.log10(v["lr"]) + 2) ** 2)
            - (math.log10(1 - v["beta2"]) + 2) ** 2
            - ((v["batch"] - 64) / 64) ** 2
        )

    space = Space.parse("lr=1e-4..1:log beta2=0.9..0.999:rlog batch=16..128:int")
    res = tune(
        space,
        24,
        rounds=2,
        objective=objective,
        direction="maximize",
        storage="memory",
        verbose=0,
        seed=1,
    )
    coarse, fine = res.spaces
    assert coarse == space
    first = [t for t in res.trials if t.round == 0 and t.state == "COMPLETE"]
    second = [t for t in res.trials if t.round == 1 and t.state == "COMPLETE"]
    assert len(first) == 24 and len(second) == 24
    best1 = max(first, key=lambda t: t.value)
    for d in fine:
        old = coarse[d.name]
        assert old.low <= d.low <= d.high <= old.high, d
        assert d.low <= best1.params[d.name] <= d.high, d
        width = d.coord(d.high) - d.coord(d.low)
        assert abs(width) < abs(old.coord(old.high) - old.coord(old.low)), d  # narrower
    assert all(fine.contains(t.params) for t in second)
    # the finer round finds at least as good a point
    assert res.best.value >= best1.value
    assert max(t.value for t in second) > np.median([t.value for t in first])


def test_zoom_keeps_choices_and_whole_numbers():
    space = Space.parse("layers=1..8:int optimizer=adam|sgd")
    pts = [({"layers": k, "optimizer": "adam"}, float(-abs(k - 3))) for k in range(1, 9)]
    fine = space.zoom(pts, maximize=True, top=0.25)
    assert fine["optimizer"] == space["optimizer"]
    lo, hi = fine["layers"].low, fine["layers"].high
    assert float(lo).is_integer() and float(hi).is_integer()
    assert 1 <= lo <= 3 <= hi <= 8 and hi - lo < 7


# --------------------------------------------------------------------------- a real study


def _trials_by_state(db: Path) -> dict[str, int]:
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            rows = con.execute("SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall()
            # a running trial that has recorded its draw is training
            owned = con.execute(
                "SELECT COUNT(*) FROM trials t JOIN trial_user_attributes a "
                "ON a.trial_id = t.trial_id WHERE t.state = 'RUNNING' AND a.key = 'values'"
            ).fetchone()[0]
    except sqlite3.Error:  # tables not made yet, or locked for a moment
        return {}
    return {**{str(s): n for s, n in rows}, "TRAINING": owned}


TUNE_ARGS = [
    "tune",
    "model=lenet5",
    "data=digits",
    "epochs=1",
    "batch=64",
    "precision=fp32",
    "memory_format=contiguous",
    "compile=false",
    "lr=1e-4..1e-1:log",
    "beta2=0.9..0.999:rlog",
    "trials=12",
    "study=digits",
]


def test_study_survives_sigkill_and_resumes_to_exactly_12_trials(tmp_path, monkeypatch):
    db = tmp_path / "runs" / "tune" / "digits" / "study.db"
    cmd = [sys.executable, "-m", "cnnkit.cli", *TUNE_ARGS]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 240
    try:
        while True:  # kill it in the middle of a trial, with at least 3 finished
            counts = _trials_by_state(db)
            if counts.get("COMPLETE", 0) >= 3 and counts.get("TRAINING", 0) >= 1:
                break
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the study did not get going"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        out1 = proc.communicate()[0]
    assert proc.returncode == -signal.SIGKILL
    before = _trials_by_state(db)
    assert before.get("RUNNING") == 1 and 3 <= before["COMPLETE"] < 12, before
    assert "resuming" not in out1 and "trial   0 [round 1]" in out1

    again = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    out = again.stdout
    assert "resuming study 'digits'" in out
    assert "did not finish (its process no longer exists): marked FAIL, not counted" in out

    study = optuna.load_study(study_name="digits", storage=f"sqlite:///{db}")
    S = optuna.trial.TrialState
    done = [t for t in study.trials if t.state == S.COMPLETE]
    failed = [t for t in study.trials if t.state == S.FAIL]
    assert len(done) == 12
    assert len(failed) == 1 and not any(t.state == S.RUNNING for t in study.trials)
    killed = failed[0].number
    numbers = [t.number for t in done]
    assert len(set(numbers)) == 12 and set(numbers) == set(range(13)) - {killed}
    # the killed trial's draw was run again, once, and nothing else was repeated
    retry = [t for t in done if t.user_attrs.get("retry_of") == killed]
    assert len(retry) == 1 and retry[0].params == failed[0].params
    assert len({tuple(sorted(t.params.items())) for t in done}) == 12
    # one run folder per finished trial, holding that trial's settings and scores
    runs = tmp_path / "runs" / "tune" / "digits" / "classify"
    assert sorted(p.name for p in runs.iterdir()) == sorted(f"trial_{n:04d}" for n in numbers)
    import yaml

    for t in done:
        cfg = yaml.safe_load((runs / f"trial_{t.number:04d}" / "config.yaml").read_text())
        assert cfg["lr"] == t.params["lr"] and cfg["epochs"] == 1 and cfg["batch"] == 64
        assert abs(cfg["beta2"] - (1 - t.params["1-beta2"])) < 1e-12
        assert (runs / f"trial_{t.number:04d}" / "weights" / "best.safetensors").is_file()
        assert 0 <= t.value <= 1
    # the table of the best trials, trials.csv and the plot
    best = max(done, key=lambda t: t.value)
    assert "best 5 of 12 finished trials (maximize dev_accuracy):" in out
    assert f"best: trial {best.number}, dev_accuracy {best.value:.4g}" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("study saved in runs/tune/digits/: trials.csv, tune.png, trial runs ")
    folder = tmp_path / "runs" / "tune" / "digits"
    assert (folder / "tune.png").read_bytes()[:8] == PNG
    rows = (folder / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("trial,round,state,dev_accuracy,lr,beta2")
    assert len(rows) == 1 + 13
    assert best.value > 0.5  # some learning rates in 1e-4..1e-1 do train in one epoch

    # a third call has nothing left to do and changes nothing
    monkeypatch.chdir(tmp_path)
    assert main(TUNE_ARGS) == 0
    assert len(optuna.load_study(study_name="digits", storage=f"sqlite:///{db}").trials) == 13


def test_resuming_with_other_ranges_is_refused(tmp_path):
    def objective(v):
        return -abs(math.log10(v["lr"]) + 2)

    kw = {"objective": objective, "direction": "maximize", "project": str(tmp_path), "verbose": 0}
    first = tune("lr=1e-4..1:log", 3, **kw)
    assert first.storage == f"sqlite:///{(tmp_path / 'tune' / 'tune' / 'study.db').resolve()}"
    assert len(first.complete) == 3 and (tmp_path / "tune" / "tune" / "tune.png").is_file()
    assert len(tune("lr=1e-4..1:log", 4, plot=False, **kw).complete) == 4  # one more trial
    with pytest.raises(CnnkitError) as e:
        tune("lr=1e-3..1:log", 4, plot=False, **kw)
    msg = str(e.value)
    assert "was started with another space (lr=0.0001..1:log, now lr=0.001..1:log)" in msg
    assert "study=NEW_NAME" in msg


def test_ctrl_c_fails_the_trial_and_queues_its_draw_again(tmp_path):
    calls = []

    def interrupted(v):
        calls.append(v["lr"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return math.log10(v["lr"])

    kw = {"direction": "maximize", "project": str(tmp_path), "verbose": 0, "plot": False}
    with pytest.raises(KeyboardInterrupt):
        tune("lr=1e-4..1:log", 5, objective=interrupted, **kw)
    res = tune("lr=1e-4..1:log", 5, objective=lambda v: math.log10(v["lr"]), **kw)
    states = [t.state for t in res.trials]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    retry = res.trials[3]
    assert retry.retry_of == 2 and retry.params["lr"] == calls[2]


# --------------------------------------------------------------------------- lr_find


@pytest.fixture(scope="module")
def digits():
    from cnnkit.train.classify import prepare
    from cnnkit.train.config import TrainConfig

    data, _, _ = prepare(TrainConfig(model="lenet5", data="digits"))
    return data


def _lenet(data):
    import torch

    from cnnkit.models import create

    torch.manual_seed(0)
    return create("lenet5", num_classes=10, in_channels=1)


def test_lr_find_restores_model_and_optimizer_bitwise(digits):
    import torch

    from cnnkit.train import TrainConfig, build_optimizer

    model = _lenet(digits)
    opt = build_optimizer(model, TrainConfig())
    x = digits.train.preprocess.normalize(digits.train.images[:32])
    for _ in range(2):  # some optimizer state and a gradient left in place
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), digits.train.labels[:32]).backward()
        opt.step()
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    opt_state = {
        k: {n: t.clone() for n, t in s.items()} for k, s in opt.state_dict()["state"].items()
    }
    groups = [dict(g) for g in opt.state_dict()["param_groups"]]
    rng = torch.get_rng_state()

    res = lr_find(model, digits.train, optimizer=opt, steps=60)

    assert len(res.lrs) >= 10
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in state.items())
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert not model.training
    sd = opt.state_dict()
    assert sd["param_groups"] == groups
    assert all(
        torch.equal(sd["state"][k][n], t) for k, s in opt_state.items() for n, t in s.items()
    )
    assert torch.equal(torch.get_rng_state(), rng)


def test_lr_find_suggests_a_learning_rate_that_trains_digits(digits, tmp_path):
    from cnnkit.train.classify import train

    model = _lenet(digits)
    res = lr_find(model, digits.train, batch=32, plot=tmp_path / "lr.png")
    assert all(b > a for a, b in zip(res.lrs, res.lrs[1:]))
    assert res.lrs[0] == pytest.approx(1e-7) and res.lrs[-1] <= 10 * (1 + 1e-9)
    assert min(res.losses) < res.losses[0] - 0.1  # the loss did fall somewhere
    lo, hi = res.range
    assert lo == res.lr_steep <= hi == res.suggestion == pytest.approx(res.lr_min_loss / 10)
    # cnnkit's tried default for LeNet-5 with Adam is 2e-3: the suggestion is near it
    assert 2e-4 <= res.suggestion <= 2e-2, res.suggestion
    assert (tmp_path / "lr.png").read_bytes()[:8] == PNG
    run = train(
        model="lenet5",
        data="digits",
        lr=res.suggestion,
        epochs=3,
        verbose=0,
        project=str(tmp_path),
        precision="fp32",
        memory_format="contiguous",
        compile=False,
    )
    assert run.scores["dev"]["accuracy"] > 0.85, run.scores
    # plain SGD blows up before lr_max: the test stops once the loss passes 4x its best
    sgd = lr_find(_lenet(digits), digits.train, optimizer="sgd")
    assert sgd.stopped == "diverged" and sgd.lrs[-1] < 10
    assert sgd.losses[-1] > 4 * min(sgd.losses)


def test_lr_find_from_the_command_line(tmp_path, capsys):
    args = ["tune", "lr_find=true", "model=lenet5", "data=digits", "steps=50"]
    assert main([*args, f"project={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "lr range test: " in out and "suggested lr " in out and "range " in out
    folder = tmp_path / "tune" / "lr_find"
    assert out.strip().splitlines()[-1] == f"curve saved in {folder}/: lr_find.csv, lr_find.png"
    assert (folder / "lr_find.png").read_bytes()[:8] == PNG
    rows = (folder / "lr_find.csv").read_text().splitlines()
    assert rows[0] == "step,lr,loss,smoothed_loss" and 10 <= len(rows) <= 51
    assert float(rows[1].split(",")[1]) == pytest.approx(1e-7)


# --------------------------------------------------------------------------- mistakes


@pytest.mark.parametrize(
    ("args", "wanted"),
    [
        (["lr=1e-4..:log"], "lr=1e-4..:log is not a range; write LOW..HIGH[:SCALE]"),
        (["lr=1e-4..1:lgo"], "lr has an unknown scale 'lgo': did you mean 'log'?"),
        (["lrr=1e-4..1:log"], "unknown key 'lrr' for `cnnkit tune`: did you mean lr=?"),
        (
            ["lr=1e-4..1:log", "metric=dev_acuracy"],
            "unknown metric 'dev_acuracy': did you mean dev_accuracy?",
        ),
        (["lr=1e-4..1:log", "metric=test_accuracy"], "would tune on the test set"),
        (["lr=0..1"], "lr=0..1 reaches lr=0, which training refuses: lr must be > 0"),
        (["lr=1e-4..1:log", "model=lenet"], "unknown model 'lenet'"),
        (["lr=1e-4..1:log", "name=x"], "name= is set by tune"),
        (["epochs=1"], "nothing to search"),
        (
            ["model=mlp", "model.layers=0..3:int"],
            "model.layers=0..3:int reaches model.layers=0, which training refuses: layers must "
            "be a positive whole number, got 0",
        ),
        (["model=mlp", "model.unitz=8..64:int"], "has no option 'unitz'; did you mean units?"),
        (["lr_find=true", "lr=1e-4..1:log"], "is a range, but lr_find=true trains one model"),
        (["lr_find=true", "lr_min=1", "lr_max=0.1"], "lr_min (1) must be below lr_max (0.1)"),
    ],
)
def test_cli_mistakes_exit_2_with_one_sentence(args, wanted, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["tune", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnkit: error: ") and wanted in err, err
    assert "\n" not in err
    assert not (tmp_path / "runs").exists()  # refused before any study or run was made


def test_cli_mistake_in_a_real_process(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "cnnkit.cli", "tune", "beta2=0.9..0.999:rlg"],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr == "cnnkit: error: beta2 has an unknown scale 'rlg': did you mean 'rlog'?\n"
