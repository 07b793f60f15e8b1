"""``cnnkit train | val | predict`` as real subprocesses: exit status, output and the run folder.

Every command runs once in its own folder (runs land in ``cwd/runs/classify/NAME``).
They all start from one module fixture, side by side, each as soon as the run it
needs exists: the torch import dominates most of them and the trainings are tiny
(LeNet-5 on the bundled digits, or 16x16 ImageFolders written here).
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

# (torch and cnnkit are imported inside the tests: the subprocesses need not wait for them)

# one intra-op thread per subprocess: several of them share two cores
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
WORKERS = 3
RESULTS_HEADER = [
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
SCORE = re.compile(
    r"^(?P<split>\w+) accuracy (?P<acc>\d+\.\d)%  "
    r"\(loss (?P<loss>\d\.\d{3}), (?P<n>[\d,]+) images\)$"
)
PREDICTION = re.compile(
    r"^(?P<path>.+): (?P<label>\S+) (?P<prob>\d+\.\d)%   top-(?P<k>\d+): (?P<top>.+)$"
)
COLOURS = [(230, 20, 20), (20, 200, 40), (30, 40, 220)]


@dataclass
class Job:
    args: tuple[str, ...]
    cwd: Path
    after: tuple[str, ...] = ()  # jobs that must have finished first
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class World:
    """Folders the commands ran in, their results and what the tests compare against."""

    dirs: dict[str, Path]
    results: dict[str, subprocess.CompletedProcess]
    snapshots: dict[str, str]

    def __getitem__(self, name: str) -> subprocess.CompletedProcess:
        return self.results[name]

    def save(self, path: Path) -> None:
        results = {
            k: [list(r.args), r.returncode, r.stdout, r.stderr] for k, r in self.results.items()
        }
        dirs = {k: str(v) for k, v in self.dirs.items()}
        path.write_text(json.dumps({"dirs": dirs, "results": results, "snaps": self.snapshots}))

    @classmethod
    def load(cls, path: Path) -> World:
        d = json.loads(path.read_text())
        return cls(
            {k: Path(v) for k, v in d["dirs"].items()},
            {k: subprocess.CompletedProcess(*v) for k, v in d["results"].items()},
            d["snaps"],
        )


def _run(job: Job) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cnnkit.cli", *job.args],
        cwd=job.cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**ENV, **job.env},
    )


def _run_all(
    jobs: dict[str, Job],
    hooks: dict[str, Callable[[], None]],
    meanwhile: Callable[[], None] | None,
) -> dict[str, subprocess.CompletedProcess]:
    """Run every job once its prerequisites are done.

    ``hooks[name]`` runs when job ``name`` ends, before the jobs waiting on it start;
    ``meanwhile`` runs once the first jobs are started (anything that needs its work
    waits on a job).
    """
    done: dict[str, subprocess.CompletedProcess] = {}
    pending = dict(jobs)
    running = {}
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        while pending or running:
            for name, job in list(pending.items()):
                if all(d in done for d in job.after):
                    running[pool.submit(_run, job)] = name
                    del pending[name]
            assert running, f"jobs waiting on unknown prerequisites: {sorted(pending)}"
            if meanwhile is not None:
                meanwhile()
                meanwhile = None
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                name = running.pop(fut)
                done[name] = fut.result()
                if name in hooks:
                    hooks[name]()
    return done


# --- data written for the tests -------------------------------------------------------------------


def _write_colour_folder(root: Path, n: int = 12) -> None:
    """3 classes x n 16x16 RGB PNGs: a solid colour each, a bright bar at varying rows."""
    rng = np.random.default_rng(0)
    for ci, name in enumerate(("red", "green", "blue")):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = np.empty((16, 16, 3), np.uint8)
            a[...] = COLOURS[ci]
            a[i % 16, :] = 255
            a = np.clip(a.astype(int) + rng.integers(-10, 11, a.shape), 0, 255).astype(np.uint8)
            Image.fromarray(a, "RGB").save(d / f"{i:02d}.png")


def _write_digit_pngs(folder: Path, n: int = 20) -> dict[str, int]:
    """scikit-learn's first n digits as 8x8 grayscale PNGs; returns file name -> true digit."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder.mkdir(parents=True)
    truth = {}
    for i in range(n):
        a = np.rint(digits.images[i] * (255 / 16)).astype(np.uint8)
        name = f"{i:02d}_digit{int(digits.target[i])}.png"
        Image.fromarray(a, "L").save(folder / name)
        truth[name] = int(digits.target[i])
    return truth


def _write_idx(path: Path, array: np.ndarray) -> None:
    """A uint8 array as an extracted IDX file (magic 0x0000080N, big-endian dimensions)."""
    head = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    path.write_bytes(head + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _write_idx_folder(folder: Path, n_train: int = 300, n_test: int = 50) -> None:
    """MNIST's layout, extracted, with the dotted names some mirrors use
    (``train-images.idx3-ubyte``): scikit-learn's digits scaled to 16x16 in a 28x28 frame."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    d = load_digits()
    small = torch.from_numpy(d.images[: n_train + n_test].astype(np.float32) * (255 / 16))
    big = F.interpolate(small[:, None], size=(16, 16), mode="bilinear")
    big = big[:, 0]  # (N, 1, 16, 16) -> (N, 16, 16)
    x = np.zeros((n_train + n_test, 28, 28), np.uint8)
    x[:, 6:22, 6:22] = big.round().clamp(0, 255).numpy().astype(np.uint8)
    y = d.target[: n_train + n_test].astype(np.uint8)
    folder.mkdir(parents=True)
    _write_idx(folder / "train-images.idx3-ubyte", x[:n_train])
    _write_idx(folder / "train-labels.idx1-ubyte", y[:n_train])
    _write_idx(folder / "t10k-images.idx3-ubyte", x[n_train:])
    _write_idx(folder / "t10k-labels.idx1-ubyte", y[n_train:])


# --- every command, started once ------------------------------------------------------------------

LONG_NAME = "a_run_name_longer_than_any_terminal_" * 6

TRAIN_ERRORS = {  # id -> the settings (each would train just one silent epoch if accepted)
    "lr": ("lr=-1", "epochs=1", "verbose=0"),
    "epochs": ("epochs=0", "verbose=0"),
    "batch": ("batch=0", "epochs=1", "verbose=0"),
    "model": ("model=lenet6", "epochs=1", "verbose=0"),
    "data_dir": ("data=/no/such/dir", "epochs=1", "verbose=0"),
    "key": ("optimzer=adam", "epochs=1", "verbose=0"),
    "dataset": ("data=mnst", "epochs=1", "verbose=0"),
    "mnist": ("data=mnist", "epochs=1", "verbose=0"),
    "resume": ("resume=runs/classify/nope",),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    """Every command's result, computed once per test session.

    Under pytest-xdist the workers share the session's temporary folder: the first one
    to get here runs the commands, the others wait for it and read its results.
    """
    from filelock import FileLock  # a dependency of torch

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # pytest-N/, shared by pytest-N/popen-gw0, popen-gw1, ...
    saved = base / "train_cli.json"
    with FileLock(str(base / "train_cli.lock")):
        if saved.is_file():
            return World.load(saved)
        w = _make_world(base / "train_cli")
        w.save(saved)
        return w


def _make_world(root: Path) -> World:
    def mk(name: str) -> Path:
        (root / name).mkdir(parents=True)
        return root / name

    dirs = {
        k: mk(k)
        for k in (
            *("digits", "resume", "data", "raise", "skip", "split", "help", "predict_err"),
            "idx",
        )
    }
    data = dirs["data"]
    _write_colour_folder(data / "flat")
    bad = data / "flat" / "green" / "broken.png"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes())
    for split in ("train", "val"):
        _write_colour_folder(data / "split" / split)
    (data / "empty_data").mkdir()
    _write_idx_folder(data / "idx")

    D, R = dirs["digits"], dirs["resume"]
    run_abs = D / "runs" / "classify" / "train"
    cfg_args = (
        "train",
        "cfg=runs/classify/train/config.yaml",
        "epochs=1",
        "deterministic=true",
        "seed=3",
        "verbose=0",
        "report=false",  # the page is tested with the digits run and in tests/report
    )
    jobs: dict[str, Job] = {
        # the long chains first
        "digits": Job(("train", "epochs=2", "batch=64", "verbose=2"), D),
        "r": Job(("train", "epochs=1", "name=r", "batch=64", "verbose=2", "report=false"), R),
        "r_ext": Job(("train", "resume=runs/classify/r", "epochs=2", "verbose=2"), R, ("r",)),
        "r_refused": Job(("train", "resume=runs/classify/r", "lr=0.1"), R, ("r",)),
        "r_again": Job(("train", "resume=runs/classify/r", "verbose=2"), R, ("r_ext",)),
        "cfg1": Job(cfg_args, D, ("digits",)),
        "cfg2": Job(cfg_args, D, ("cfg1",)),
        "val": Job(("val", "run=runs/classify/train"), D, ("digits",)),
        "predict_run": Job(("predict", "run=runs/classify/train", "source=pngs"), D, ("digits",)),
        "predict_weights": Job(
            ("predict", "weights=runs/classify/train/weights/best.safetensors", "source=pngs"),
            D,
            ("digits",),
        ),
        "predict_err": Job(
            ("predict", f"run={run_abs}", "source=/no/such.png"), dirs["predict_err"], ("digits",)
        ),
        "corrupt_raise": Job(
            ("train", f"data={data / 'flat'}", "epochs=1", "verbose=2"), dirs["raise"]
        ),
        "corrupt_skip": Job(
            (
                "train",
                f"data={data / 'flat'}",
                "epochs=1",
                "on_error=skip",
                "verbose=2",
                "report=false",
            ),
            dirs["skip"],
        ),
        "split": Job(
            # the task named, and --key value: the same grammar as key=value
            (
                *("classify", "train", "--data", str(data / "split"), "--model", "lenet5"),
                *("--epochs", "1", "--batch", "64", "--verbose", "2"),
                *("--name", LONG_NAME),  # longer than any terminal: lines must not wrap
                *("--report", "false"),
            ),
            dirs["split"],
        ),
        "val_err": Job(("val", "run=nope"), mk("val_err")),
        "idx": Job(
            ("train", "model=lenet5", f"data={data / 'idx'}", "verbose=2", "report=false"),
            dirs["idx"],
        ),
    }
    for key, args in TRAIN_ERRORS.items():
        dirs[f"err_{key}"] = mk(f"err_{key}")
        env = {"CNNKIT_DATA": str(data / "empty_data")} if key == "mnist" else {}
        jobs[f"err_{key}"] = Job(("train", *args), dirs[f"err_{key}"], env=env)
    for args in (("train", "--help"), ("val", "--help"), ("predict", "-h")):
        jobs["help_" + "_".join(args)] = Job(args, dirs["help"])
    dirs["val_err"] = jobs["val_err"].cwd

    snapshots: dict[str, str] = {}

    def after_r() -> None:
        snapshots["r_results"] = (R / "runs/classify/r/results.csv").read_text()
        snapshots["r_config"] = (R / "runs/classify/r/config.yaml").read_text()

    # the digit PNGs are needed by predict only, which waits for the digits run
    results = _run_all(jobs, {"r": after_r}, lambda: _write_digit_pngs(D / "pngs"))
    return World(dirs, results, snapshots)


# --- helpers --------------------------------------------------------------------------------------


def _ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, (r.args, r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    return r.stdout


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    """Exit 2, nothing on stdout, exactly one line on stderr; returns that line."""
    assert r.returncode == 2, (r.args, r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("cnnkit: error: ")
    return lines[0]


def _scores(text: str) -> dict[str, re.Match]:
    out = {}
    for line in text.splitlines():
        m = SCORE.match(line.strip())
        if m:
            out[m["split"]] = m
    return out


def _results(run: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(run / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _split_sizes(stdout: str) -> dict[str, int]:
    m = re.search(r"^training \S+ on \S+ \((.*) images\) -> ", stdout, re.MULTILINE)
    assert m, stdout
    return {k: int(v.replace(",", "")) for k, v in re.findall(r"(\w+) ([\d,]+)", m.group(1))}


# --- 1. mistakes: one sentence, exit 2, no run started --------------------------------------------


@pytest.mark.parametrize(
    ("key", "wanted"),
    [
        ("lr", ("lr must be > 0", "-1")),
        ("epochs", ("epochs must be >= 1", "got 0")),
        ("batch", ("batch must be >= 1", "got 0")),
        ("model", ("'lenet6'", "did you mean 'lenet5'")),
        ("data_dir", ("'/no/such/dir'", "does not exist")),
        ("key", ("'optimzer'", "did you mean optimizer=")),
        ("dataset", ("'mnst'", "did you mean 'mnist'")),
        ("resume", ("'runs/classify/nope'", "not a run folder")),
    ],
)
def test_train_mistake_is_one_line_and_starts_nothing(world, key, wanted):
    line = _one_line_error(world[f"err_{key}"])
    for text in wanted:
        assert text in line, line
    assert not (world.dirs[f"err_{key}"] / "runs").exists()


def test_missing_mnist_says_where_to_put_the_files(world):
    line = _one_line_error(world["err_mnist"])
    where = world.dirs["data"] / "empty_data" / "mnist"
    assert f"'{where}'" in line, line
    assert "not on disk" in line
    assert "IDX" in line  # what to put there
    assert not (world.dirs["err_mnist"] / "runs").exists()


def test_val_of_a_missing_run(world):
    line = _one_line_error(world["val_err"])
    assert "'nope'" in line and "does not exist" in line, line
    assert not (world.dirs["val_err"] / "runs").exists()


def test_predict_on_a_missing_image(world):
    line = _one_line_error(world["predict_err"])
    assert "'/no/such.png'" in line and "does not exist" in line, line
    assert not (world.dirs["predict_err"] / "runs").exists()


# --- 2. an undecodable image in an ImageFolder ----------------------------------------------------


def test_corrupt_image_is_named_and_stops_before_training(world):
    line = _one_line_error(world["corrupt_raise"])
    bad = world.dirs["data"] / "flat" / "green" / "broken.png"
    assert f"'{bad}'" in line, line
    assert "on_error=skip" in line  # the way out is named
    assert not (world.dirs["raise"] / "runs").exists()


def test_corrupt_image_skipped_with_on_error_skip(world):
    out = _ok(world["corrupt_skip"])
    bad = world.dirs["data"] / "flat" / "green" / "broken.png"
    note = next(ln for ln in out.splitlines() if ln.startswith("skipped "))
    assert note.startswith("skipped 1 undecodable image"), note
    assert str(bad) in note
    sizes = _split_sizes(out)
    assert set(sizes) == {"train", "dev", "test"}
    assert sum(sizes.values()) == 3 * 12  # the 37 files less the broken one
    run = world.dirs["skip"] / "runs" / "classify" / "train"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["on_error"] == "skip"
    summary = _scores((run / "summary.txt").read_text())
    assert int(summary["test"]["n"]) == sizes["test"]
    assert int(summary["dev"]["n"]) == sizes["dev"]


# --- 3. a digits run and its folder ---------------------------------------------------------------


def test_digits_run_prints_its_scores_last(world):
    out = _ok(world["digits"])
    lines = out.rstrip("\n").splitlines()
    assert re.fullmatch(r"test accuracy \d+\.\d%  \(loss \d\.\d{3}, 359 images\)", lines[-2]), lines
    assert lines[-1].startswith("run saved in runs/classify/train/: report.html, plots/, "), lines[
        -1
    ]
    assert "weights/" in lines[-1] and lines[-1].endswith(" source=IMAGE)")
    sizes = _split_sizes(out)
    assert set(sizes) == {"train", "dev", "test"} and sum(sizes.values()) == 1797
    assert sizes["test"] == 359 and abs(sizes["dev"] - 0.1 * 1797) < 1  # test=0.2, dev=0.1
    assert sum(1 for ln in lines if re.match(r"epoch \d/2 ", ln)) == 2  # verbose=2: a line each
    assert "32x32" in out  # 8x8 digits resized to LeNet-5's input
    assert float(_scores(out)["test"]["acc"]) > 50  # chance is 10%


def test_digits_run_folder(world):
    import torch
    from safetensors.torch import load_file

    from cnnkit.train.config import TrainConfig

    _ok(world["digits"])
    run = world.dirs["digits"] / "runs" / "classify" / "train"
    for f in ("config.yaml", "results.csv", "summary.txt"):
        assert (run / f).is_file(), f
    for f in ("last.safetensors", "best.safetensors", "last_state.pt"):
        assert (run / "weights" / f).is_file(), f

    header, rows = _results(run)
    assert header == RESULTS_HEADER
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for r in rows:
        assert 0 <= float(r["train_accuracy"]) <= 1 and 0 <= float(r["dev_accuracy"]) <= 1
        assert float(r["train_loss"]) > 0 and float(r["dev_loss"]) > 0
        assert 0 < float(r["lr"]) <= 0.002  # never above the peak lr
        assert float(r["seconds"]) > 0 and float(r["img_per_s"]) > 0
    assert float(rows[1]["lr"]) < float(rows[0]["lr"])  # cosine decay

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert set(cfg) == set(TrainConfig.keys())  # every setting
    assert cfg["epochs"] == 2
    assert cfg["size"] == [32, 32]
    assert (cfg["model"], cfg["data"], cfg["name"]) == ("lenet5", "digits", "train")
    assert cfg["batch"] == 64
    assert cfg["lr"] == 0.002 and cfg["optimizer"] == "adam"

    # the best weights' dev score in summary.txt is the dev score logged at that epoch
    summary = (run / "summary.txt").read_text()
    m = re.search(r"^best weights: epoch (\d) of 2 \(dev_loss ([\d.]+)\)$", summary, re.MULTILINE)
    assert m, summary
    best = rows[int(m.group(1)) - 1]
    assert abs(float(best["dev_loss"]) - float(m.group(2))) < 1e-3
    scores = _scores(summary)
    assert set(scores) == {"dev", "test"}
    # the speed settings it trained with are kept with the scores
    speed = summary.splitlines()[-1]
    assert re.fullmatch(
        r"speed: (fp32|bf16) \+ (contiguous|channels_last) \((calibrated: [\d.]+x fp32 on "
        r"\d+ steps of 64x1x32x32, fp32 [\d.]+ ms/step.*|cached in .*)\)",
        speed,
    ), summary
    assert scores["dev"]["acc"] == f"{100 * float(best['dev_accuracy']):.1f}"
    sizes = _split_sizes(world["digits"].stdout)
    assert int(scores["test"]["n"]) == 359 == sizes["test"]
    assert int(scores["dev"]["n"]) == sizes["dev"]
    assert f"{summary.rstrip().splitlines()[-1]}\n" in world["digits"].stdout  # the same lines

    state = torch.load(run / "weights" / "last_state.pt", weights_only=True)
    assert state["epoch"] == 2 and state["epochs"] == 2
    assert len(state["history"]) == 2
    last = load_file(run / "weights" / "last.safetensors")
    assert set(state["model"]) == set(last)
    for k, v in last.items():
        assert torch.equal(state["model"][k], v), k


def test_mnist_style_idx_folder_trains_lenet5(world):
    """An MNIST-layout folder (extracted IDX files, dotted names) trains with the defaults:
    the 28x28 images are resized to LeNet-5's 32x32, the t10k files are the test split,
    and the default recipe learns the digits from 270 images."""
    out = _ok(world["idx"])
    sizes = _split_sizes(out)
    assert sizes == {"train": 270, "dev": 30, "test": 50}  # dev = 10% of train, stratified
    assert "input 32x32: lenet5's input size (the data's 28x28 does not fit it)" in out
    scores = _scores(out)
    assert scores["test"]["n"] == "50" and scores["dev"]["n"] == "30"
    assert "epochs=auto: 60 epochs of 9 steps" in out
    assert float(scores["test"]["acc"]) >= 85.0  # 96.0% when written; 10% is chance


def test_val_reproduces_the_test_score(world):
    _ok(world["digits"])
    out = _ok(world["val"]).strip()
    m = SCORE.match(out)
    assert m and m["split"] == "test", out
    summary = (world.dirs["digits"] / "runs/classify/train/summary.txt").read_text()
    test = _scores(summary)["test"]
    assert m["acc"] == test["acc"]
    assert m["n"] == test["n"] == "359"
    assert abs(float(m["loss"]) - float(test["loss"])) <= 0.0015


# --- 4. predict -----------------------------------------------------------------------------------


def _parse_predictions(out: str) -> list[dict]:
    preds = []
    for line in out.splitlines():
        m = PREDICTION.match(line)
        assert m, line
        top = [re.fullmatch(r"(\S+) (\d+\.\d)%", t) for t in m["top"].split(", ")]
        assert all(top), line
        assert int(m["k"]) == len(top)
        preds.append(
            {
                "path": m["path"],
                "label": m["label"],
                "prob": float(m["prob"]),
                "top": [(t.group(1), float(t.group(2))) for t in top],
            }
        )
    return preds


def test_predict_matches_an_independent_forward_pass(world):
    import torch

    from cnnkit.data import Preprocess
    from cnnkit.models import create
    from cnnkit.train import load_weights_file

    _ok(world["digits"])
    D = world.dirs["digits"]
    preds = _parse_predictions(_ok(world["predict_run"]))
    files = sorted((D / "pngs").glob("*.png"))
    assert [p["path"] for p in preds] == [f"pngs/{f.name}" for f in files]

    state, meta = load_weights_file(D / "runs/classify/train/weights/best.safetensors")
    assert meta["classes"] == [str(i) for i in range(10)]
    assert (meta["num_outputs"], meta["in_channels"]) == (10, 1)
    model = create("lenet5", num_classes=10, in_channels=1)
    model.load_state_dict(state)
    model.eval()
    pre = Preprocess.from_dict(meta["preprocess"])
    assert list(pre.size) == [32, 32] and pre.channels == 1
    correct = 0
    for f, p in zip(files, preds, strict=True):
        x = pre.load_files([f])
        assert x.shape == (1, 1, 32, 32)
        with torch.no_grad():
            probs = model(x).softmax(1)[0]
        best = int(probs.argmax())
        assert p["label"] == meta["classes"][best], (f.name, p, probs)
        assert abs(p["prob"] - 100 * float(probs[best])) <= 0.05 + 1e-4, (f.name, p, probs)
        vals, idx = probs.topk(5)
        assert [c for c, _ in p["top"]] == [meta["classes"][i] for i in idx.tolist()]
        for (_, q), v in zip(p["top"], vals.tolist()):
            assert abs(q - 100 * v) <= 0.05 + 1e-4
        assert abs(sum(q for _, q in p["top"]) - 100 * float(vals.sum())) <= 0.3
        correct += p["label"] == f.stem.split("digit")[1]
    assert correct >= len(files) // 2, f"{correct}/{len(files)} digits right"


def test_predict_with_weights_file_equals_predict_with_run(world):
    a, b = _ok(world["predict_run"]), _ok(world["predict_weights"])
    assert a == b
    assert len(a.splitlines()) == 20


# --- 5. an ImageFolder with train/ and val/ -------------------------------------------------------


def test_split_image_folder_val_is_dev_and_images_are_resized(world):
    out = _ok(world["split"])
    assert _split_sizes(out) == {"train": 36, "dev": 36}  # val/ is the dev split, no test carved
    note = next(ln for ln in out.splitlines() if ln.startswith("input "))
    assert "32x32" in note and "16x16" in note, note
    run = world.dirs["split"] / "runs" / "classify" / LONG_NAME
    lines = out.rstrip("\n").splitlines()
    assert lines[0].endswith(f" -> runs/classify/{LONG_NAME}"), lines[0]  # one line each
    # report=false: no page, and the last line lists what the folder holds
    assert lines[-1] == (
        f"run saved in runs/classify/{LONG_NAME}/: results.csv, weights/, config.yaml, "
        f"summary.txt (cnnkit val run=runs/classify/{LONG_NAME}; "
        f"cnnkit predict run=runs/classify/{LONG_NAME} source=IMAGE)"
    ), lines[-1]
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["size"] == [32, 32]
    assert cfg["model"] == "lenet5" and cfg["epochs"] == 1 and cfg["batch"] == 64
    assert cfg["data"] == str(world.dirs["data"] / "split")
    summary = (run / "summary.txt").read_text()
    scores = _scores(summary)
    assert set(scores) == {"dev"}, summary
    assert int(scores["dev"]["n"]) == 36
    assert not any(ln.startswith("test") for ln in summary.splitlines())
    from cnnkit.train import load_weights_file

    _, meta = load_weights_file(run / "weights" / "best.safetensors")
    assert meta["classes"] == ["blue", "green", "red"]
    assert meta["preprocess"]["channels"] == 3 and meta["preprocess"]["size"] == [32, 32]


# --- 6. resume ------------------------------------------------------------------------------------


def test_resume_with_more_epochs_keeps_the_first_epoch(world):
    import torch

    _ok(world["r"])
    out = _ok(world["r_ext"])
    assert "re-planned" in out
    assert "epochs 1 -> 2" in out
    run = world.dirs["resume"] / "runs" / "classify" / "r"
    header, rows = _results(run)
    assert header == RESULTS_HEADER
    assert [r["epoch"] for r in rows] == ["1", "2"]
    before = world.snapshots["r_results"].splitlines()
    after = (run / "results.csv").read_text().splitlines()
    assert len(before) == 2 and len(after) == 3
    assert after[:2] == before  # header and epoch 1 untouched
    state = torch.load(run / "weights" / "last_state.pt", weights_only=True)
    assert state["epoch"] == 2 and state["epochs"] == 2
    assert sorted(p.name for p in run.parent.iterdir()) == ["r"]  # no new run folder


def test_resume_refuses_other_settings(world):
    line = _one_line_error(world["r_refused"])
    assert "cannot change lr" in line, line
    assert "cfg=runs/classify/r/config.yaml" in line


def test_resume_after_extending_remembers_the_new_epochs(world):
    """config.yaml must describe the run: after `resume epochs=2` the run has 2 epochs.

    A plain `resume=` afterwards (say the extended run was interrupted) must go on to
    epoch 2, not re-plan the schedule back to the original 1 epoch.
    """
    _ok(world["r_ext"])
    run = world.dirs["resume"] / "runs" / "classify" / "r"
    assert yaml.safe_load(world.snapshots["r_config"])["epochs"] == 1
    out = _ok(world["r_again"])
    assert "re-planned" not in out, out
    assert "epoch 2 of 2" in out, out
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 2


# --- 7. repeating a run from its config.yaml ------------------------------------------------------


def test_cfg_repeat_is_bitwise_repeatable_in_new_folders(world):
    import torch
    from safetensors.torch import load_file

    _ok(world["digits"])
    assert _ok(world["cfg1"]) == "" and _ok(world["cfg2"]) == ""  # verbose=0: silent
    root = world.dirs["digits"] / "runs" / "classify"
    assert sorted(p.name for p in root.iterdir()) == ["train", "train2", "train3"]
    base = yaml.safe_load((root / "train" / "config.yaml").read_text())
    changed = {"epochs": 1, "deterministic": True, "seed": 3, "verbose": 0, "report": False}
    for name in ("train2", "train3"):
        cfg = yaml.safe_load((root / name / "config.yaml").read_text())
        assert cfg == {**base, **changed, "name": name}
        assert [r["epoch"] for r in _results(root / name)[1]] == ["1"]
    a = load_file(root / "train2" / "weights" / "last.safetensors")
    b = load_file(root / "train3" / "weights" / "last.safetensors")
    assert set(a) == set(b) and a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    orig = load_file(root / "train" / "weights" / "last.safetensors")
    assert any(not torch.equal(a[k], orig[k]) for k in a)  # a different run (seed 3, 1 epoch)


# --- 8. help --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (("train", "--help"), ("lr=0.002", "optimizer=adam", "epochs=auto", "resume=", "cfg=")),
        (("val", "--help"), ("run=", "split=test", "weights=")),
        (("predict", "-h"), ("run=", "source=", "topk=5", "weights=")),
    ],
)
def test_help(world, args, mentions):
    from cnnkit.train.config import TrainConfig

    r = world["help_" + "_".join(args)]
    out = _ok(r)
    assert r.stderr == ""
    assert out.startswith("usage: cnnkit")
    for text in mentions:
        assert text in out, text
    if "train" in args:
        for key in TrainConfig().to_dict():
            assert re.search(rf"(?<![\w]){key}=", out), key
    assert not (world.dirs["help"] / "runs").exists()


def test_train_help_lists_every_default(world):
    from cnnkit.train.config import TrainConfig

    out = _ok(world["help_train_--help"])
    listed = dict(re.findall(r"(?<!\S)(\w+)=(\S+)", out.split("settings (default):", 1)[1]))
    for key, value in TrainConfig().to_dict().items():
        want = "none" if value is None else str(value)
        assert listed.get(key) == want, (key, listed.get(key), want)
