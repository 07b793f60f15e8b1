"""ConvNets on 1D signals and 3D volumes: test accuracy and time of ``cnnkit train``.

Writes the two synthetic tasks of :mod:`cnnkit.data.signals` with fixed seeds into a
temporary folder, as ``DIR/{train,val,test}/<class>/<k>.npy``:

* signals: 4 classes (chirp, sawtooth, sine, square) x 1000 noisy waveforms of 256
  samples (60/20/20 split: 2400 train, 800 val, 800 test), noise 0.5;
* volumes: 3 classes (cube, cylinder, sphere) x 500 noisy 32x32x32 volumes holding one
  solid shape (900 train, 300 val, 300 test), noise 0.3;

then trains each with the command a user types (``cnnkit train model=resnet1d
data=DIR ...`` and ``cnnkit train model=convnet3d data=DIR ...``) in a subprocess
with 2 threads, and prints one table: task, model, wall seconds of the command (data
loading, training, scoring, report), seconds of the training epochs, test accuracy
(best-dev weights), a linear baseline on the raw samples (logistic regression, for how
hard the task is), and the command. A task passes when it reaches >= 95% test
accuracy within 300 s wall time. It appends the table to ``benchmarks/RESULTS.md``
(``--no-record``: do not). About 6 minutes on 2 quiet cores:

    .venv/bin/python benchmarks/signals_volumes.py
    .venv/bin/python benchmarks/signals_volumes.py --tasks signals --no-record
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import _record
import numpy as np

from cnnkit.data.signals import write_signals, write_volumes

#: task -> (model, writer settings, train settings)
TASKS: dict[str, dict] = {
    "signals": {
        "model": "resnet1d",
        "write": lambda out: write_signals(out, n=1000, length=256, seed=0, noise=0.5),
        "what": "4 classes x 1000 signals of 256x1, noise 0.5",
        "train": ["epochs=12", "batch=32", "lr=0.002"],
    },
    "volumes": {
        "model": "convnet3d",
        "write": lambda out: write_volumes(out, n=500, size=32, seed=0, noise=0.3),
        "what": "3 classes x 500 volumes of 32x32x32x1, noise 0.3",
        "train": ["epochs=14", "batch=16", "lr=0.003"],
    },
}
LIMIT_S = 300.0
TARGET = 0.95


def _split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A split's examples, flattened, and labels (class folders in sorted order)."""
    xs, ys = [], []
    for k, c in enumerate(sorted(p.name for p in (root / split).iterdir())):
        for f in sorted((root / split / c).glob("*.npy")):
            xs.append(np.load(f).reshape(-1))  # (n_C, *spatial) -> (n_C * prod(spatial),)
            ys.append(k)
    return np.stack(xs), np.asarray(ys)


def linear_baseline(root: Path) -> float:
    """Test accuracy of a logistic regression on the raw (standardized) samples."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    xtr, ytr = _split(root, "train")
    xte, yte = _split(root, "test")
    scale = StandardScaler().fit(xtr)
    clf = LogisticRegression(max_iter=300, C=0.1).fit(scale.transform(xtr), ytr)
    return float((clf.predict(scale.transform(xte)) == yte).mean())


def run_task(name: str, tmp: Path, threads: int) -> dict[str, str]:
    """Write one task's data, train it with the CLI, and return its table row."""
    spec = TASKS[name]
    data = tmp / name
    t = time.perf_counter()
    spec["write"](data)
    write_s = time.perf_counter() - t
    base = linear_baseline(data)
    project = tmp / "runs"
    args = [f"model={spec['model']}", f"data={data}", *spec["train"]]
    cmd = [sys.executable, "-m", "cnnkit.cli", "train", *args, f"project={project}"]
    cmd += [f"name={name}", "verbose=0"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{name}: cnnkit train failed ({proc.returncode}):\n{proc.stderr}")
    run = project / "classify" / name
    summary = (run / "summary.txt").read_text()
    acc = float(re.search(r"test accuracy ([\d.]+)%", summary).group(1)) / 100
    with open(run / "results.csv") as f:
        rows = list(csv.DictReader(f))
    train_s = sum(float(r["seconds"]) for r in rows)
    ok = acc >= TARGET and wall <= LIMIT_S
    shown = " ".join(["cnnkit train", *args]).replace(str(data), f"DIR/{name}")
    print(
        f"{name}: test {100 * acc:.1f}% in {wall:.0f} s wall ({train_s:.0f} s training, "
        f"{len(rows)} epochs; data written in {write_s:.0f} s); linear baseline "
        f"{100 * base:.1f}%; {'ok' if ok else 'FAIL'}",
        flush=True,
    )
    return {
        "task": f"{name} ({spec['what']})",
        "model": spec["model"],
        "wall s": f"{wall:.0f}",
        "train s": f"{train_s:.0f}",
        "test accuracy": f"{100 * acc:.1f}%",
        "linear baseline": f"{100 * base:.1f}%",
        "pass": "yes" if ok else "no",
        "command": f"`{shown}`",
    }


def main() -> None:
    """Run the tasks, print and record the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--threads", type=int, default=2, help="threads of each training run")
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    machine = _record.machine()
    print(machine, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_task(t, Path(tmp), args.threads) for t in args.tasks]
    head = list(rows[0])
    table = _record.md_table(head, [[r[h] for h in head] for r in rows])
    note = (
        "\nData written by `cnnkit data synth signals|volumes` with seed 0 (as "
        "DIR/{train,val,test}/<class>/<k>.npy, 60/20/20); test accuracy of the best-dev "
        f"weights; pass: >= {100 * TARGET:.0f}% test accuracy within {LIMIT_S:.0f} s wall "
        "time of the whole command (loading, training, scoring, report.html), run in a "
        f"subprocess with {args.threads} threads. Linear baseline: logistic regression "
        "(C=0.1) on the standardized raw samples of the same train / test split.\n"
    )
    print()
    print(table)
    print(note)
    if not args.no_record:
        _record.record(
            "ConvNets on 1D signals and 3D volumes (cnnkit.data.signals)",
            table + "\n" + note,
            machine_line=machine,
        )


if __name__ == "__main__":
    main()
