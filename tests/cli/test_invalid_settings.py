"""Every invalid setting of every command: exit status 2, one sentence, before any heavy work.

A table of mistakes (a wrong type, a value out of range, a value not among the allowed
ones, an unknown key, a missing file) across ``cnnkit train``, ``val``, ``predict``,
``summary``, ``models`` and the task form ``cnnkit classify train``. Each runs the real
command line as a subprocess in a folder of its own, and must print exactly one line
``cnnkit: error: ...`` naming the key (and the suggestion, when there is a close one),
print nothing on stdout, and leave no run folder behind.

``{run}``, ``{weights}`` and ``{img}`` stand for a tiny real run trained once by the
module fixture, its best weights and one image, so that the ``val`` and ``predict``
cases fail on their bad key alone.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# one intra-op thread per subprocess: several of them share two cores
WORKERS = 3
PREFIX = "cnnkit: error: "

# id -> (argv, a substring the error line must contain)
CASES: dict[str, tuple[tuple[str, ...], str]] = {
    # --- wrong type ---------------------------------------------------------------------------
    "lr-abc": (("train", "lr=abc"), "lr must be a number, got 'abc'"),
    "batch-float": (("train", "batch=2.5"), "batch must be an integer, got 2.5"),
    "epochs-word": (("train", "epochs=ten"), "epochs must be an integer or auto"),
    "deterministic-maybe": (("train", "deterministic=maybe"), "deterministic must be true or"),
    "download-2": (("train", "download=2"), "download must be true or false"),
    "size-axb": (("train", "size=axb"), "size must be"),
    "verbose-yes": (("train", "verbose=yes"), "verbose must be an integer"),
    "seed-float": (("train", "seed=1.5"), "seed must be an integer"),
    "workers-word": (("train", "--workers", "two"), "workers must be an integer"),
    "name-list": (("train", "name=[1, 2]"), "name must be a name or path"),
    # --- out of range -------------------------------------------------------------------------
    "lr-0": (("train", "lr=0"), "lr must be > 0"),
    "beta1-1": (("train", "beta1=1"), "beta1 must be < 1"),
    "beta2-1.5": (("train", "beta2=1.5"), "beta2 must be"),
    "momentum-neg": (("train", "momentum=-0.1"), "momentum must be >= 0"),
    "eps-0": (("train", "eps=0"), "eps must be > 0"),
    "label_smoothing-1": (("train", "label_smoothing=1"), "label_smoothing must be < 1"),
    "dev-1.5": (("train", "dev=1.5"), "dev must be a fraction in [0, 1) or a whole count"),
    "test-neg": (("train", "test=-1"), "test must be a fraction"),
    "train_dev-neg": (("train", "train_dev=-0.1"), "train_dev must be a fraction"),
    "degrees-200": (("train", "degrees=200"), "degrees must be <= 180"),
    "translate-2": (("train", "translate=2"), "translate must be <= 1"),
    "scale-1": (("train", "scale=1"), "scale must be < 1"),
    "fliplr-2": (("train", "fliplr=2"), "fliplr must be <= 1"),
    "patience-neg": (("train", "patience=-1"), "patience must be >= 0"),
    "clip_grad-neg": (("train", "clip_grad=-1"), "clip_grad must be >= 0"),
    "warmup-neg": (("train", "warmup_epochs=-1"), "warmup_epochs must be >= 0"),
    "workers-neg": (("train", "workers=-1"), "workers must be >= 0"),
    "save_every-neg": (("train", "save_every=-1"), "save_every must be >= 0"),
    "verbose-3": (("train", "verbose=3"), "verbose must be <= 2"),
    "step_size-0": (("train", "step_size=0"), "step_size must be >= 1"),
    # --- allowed values -----------------------------------------------------------------------
    "optimizer-adm": (("train", "optimizer=adm"), "unknown optimizer 'adm': did you mean 'adam'"),
    "schedule-cosin": (("train", "schedule=cosin"), "did you mean 'cosine'"),
    "loss-mse": (("train", "loss=mse"), "unknown loss 'mse': use one of 'auto', 'ce', 'bce'"),
    "monitor-dev_acc": (("train", "monitor=dev_acc"), "did you mean 'dev_accuracy'"),
    "on_error-ignore": (
        ("train", "on_error=ignore"),
        "unknown on_error 'ignore': use one of 'raise', 'skip'",
    ),
    "model-lenet6": (("train", "model=lenet6"), "did you mean 'lenet5'"),
    # --- unknown keys -------------------------------------------------------------------------
    "key-optimzer": (("train", "optimzer=adam"), "unknown key 'optimzer'"),
    "key-batchsize": (("train", "batchsize=64"), "did you mean batch=?"),
    "key-lerning_rate": (("train", "lerning_rate=0.1"), "unknown key 'lerning_rate'"),
    # --- missing files ------------------------------------------------------------------------
    "cfg-missing": (("train", "cfg=/no/such.yaml"), "cfg file '/no/such.yaml' does not exist"),
    "model-missing": (("train", "model=/no/net.yaml"), "model file '/no/net.yaml' does not exist"),
    "data-missing": (("train", "data=/no/such/dir"), "data folder '/no/such/dir' does not exist"),
    "resume-missing": (("train", "resume=/no/run"), "'/no/run' is not a run folder"),
    # --- the task form ------------------------------------------------------------------------
    "classify-lr": (("classify", "train", "lr=-1"), "lr must be > 0"),
    "classify-key": (("classify", "train", "optimzer=adam"), "did you mean optimizer=?"),
    # --- cnnkit val ---------------------------------------------------------------------------
    "val-split": (
        ("val", "run={run}", "split=validation"),
        "unknown split 'validation': use one of",
    ),
    "val-batch-0": (("val", "run={run}", "batch=0"), "batch must be >= 1"),
    "val-batch-abc": (("val", "run={run}", "batch=abc"), "batch must be an integer"),
    "val-key": (("val", "run={run}", "spilt=dev"), "did you mean split=?"),
    "val-run-missing": (("val", "run=/no/run"), "run folder '/no/run' does not exist"),
    "val-weights-missing": (
        ("val", "weights=/no/file.safetensors", "data=digits"),
        "/no/file.safetensors",
    ),
    "val-data-missing": (("val", "run={run}", "data=/no/dir"), "'/no/dir' does not exist"),
    # --- cnnkit predict -----------------------------------------------------------------------
    "predict-topk-0": (("predict", "run={run}", "source={img}", "topk=0"), "topk must be"),
    "predict-topk-abc": (("predict", "run={run}", "source={img}", "topk=abc"), "topk must be"),
    "predict-batch-0": (("predict", "run={run}", "source={img}", "batch=0"), "batch must be >= 1"),
    "predict-key": (("predict", "run={run}", "source={img}", "tokp=3"), "did you mean topk=?"),
    "predict-source-missing": (("predict", "run={run}", "source=/no/dir"), "source='/no/dir'"),
    "predict-run-missing": (("predict", "run=/no/run", "source={img}"), "'/no/run' does not exist"),
    "predict-weights-missing": (
        ("predict", "weights=/no/file.safetensors", "source={img}"),
        "/no/file.safetensors",
    ),
    # --- cnnkit summary -----------------------------------------------------------------------
    "summary-depth-0": (("summary", "lenet5", "depth=0"), "depth must be a positive integer"),
    "summary-input-axb": (("summary", "lenet5", "input=axb"), "input"),
    "summary-explain": (("summary", "lenet5", "explain=maybe"), "explain must be true or false"),
    "summary-model": (("summary", "lenet6"), "did you mean 'lenet5'"),
    "summary-key": (("summary", "lenet5", "dpeth=2"), "did you mean depth=?"),
    "summary-file-missing": (("summary", "/no/net.yaml"), "'/no/net.yaml'"),
    "summary-weights-missing": (
        ("summary", "lenet5", "weights=/no/file.safetensors"),
        "/no/file.safetensors",
    ),
    # --- cnnkit models ------------------------------------------------------------------------
    "models-details": (("models", "details=maybe"), "details must be true or false"),
    "models-key": (("models", "detials=true"), "did you mean details=?"),
    "models-pattern": (("models", "lenet6"), "did you mean 'lenet5'"),
}

NEEDS_RUN = {k for k, (argv, _) in CASES.items() if any("{" in a for a in argv)}


def _argv(case: str, places: dict[str, str]) -> list[str]:
    argv = [a.format(**places) for a in CASES[case][0]]
    if "train" in argv[:2]:  # were a mistake accepted, the run would be one silent epoch
        given = {a.partition("=")[0] for a in argv}
        argv += [f"{k}={v}" for k, v in (("epochs", 1), ("verbose", 0)) if k not in given]
    return argv


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, cnnkit_cli) -> dict[str, tuple[Path, object]]:
    """Every case run once, side by side; the val / predict ones once the tiny run exists."""
    base = tmp_path_factory.mktemp("invalid")
    img = base / "digit.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4, "L").save(img)
    run = base / "runs" / "classify" / "r"
    places = {"run": str(run), "weights": str(run / "weights" / "best.safetensors")}
    places["img"] = str(img)
    dirs = {}
    for case in CASES:
        dirs[case] = base / f"case-{case}"
        dirs[case].mkdir()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        build = pool.submit(
            cnnkit_cli,
            ["train", "epochs=1", "batch=256", "verbose=0", "name=r", "report=false"],
            base,
        )
        futures = {
            c: pool.submit(cnnkit_cli, _argv(c, places), dirs[c])
            for c in CASES
            if c not in NEEDS_RUN
        }
        made = build.result()
        assert made.returncode == 0, made.stderr
        futures.update({c: pool.submit(cnnkit_cli, _argv(c, places), dirs[c]) for c in NEEDS_RUN})
        return {c: (dirs[c], f.result()) for c, f in futures.items()}


def test_the_table_is_large_and_covers_every_command() -> None:
    assert len(CASES) >= 30
    commands = {argv[0] if argv[0] != "classify" else argv[1] for argv, _ in CASES.values()}
    assert {"train", "val", "predict", "summary", "models"} <= commands
    assert any(argv[0] == "classify" for argv, _ in CASES.values())


@pytest.mark.parametrize("case", list(CASES))
def test_invalid_setting_exits_2_with_one_sentence(
    results: dict[str, tuple[Path, subprocess.CompletedProcess]], case: str
) -> None:
    cwd, r = results[case]
    shown = f"cnnkit {' '.join(r.args[3:])}\nstdout: {r.stdout!r}\nstderr: {r.stderr!r}"
    assert r.returncode == 2, shown
    assert r.stdout == "", shown
    assert "Traceback" not in r.stderr, shown
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and r.stderr.endswith("\n"), shown
    line = lines[0]
    assert line.startswith(PREFIX), shown
    assert CASES[case][1] in line, shown
    assert line.rstrip().endswith((".", "?")), shown  # a sentence
    assert not (cwd / "runs").exists(), f"a run folder was created: {shown}"
