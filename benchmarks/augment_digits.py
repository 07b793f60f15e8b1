"""Augmentation presets on the bundled digits: dev and test accuracy of LeNet-5.

Trains LeNet-5 on the bundled digits (32x32, the default split) with ``aug=none``,
``default``, ``light`` and ``strong``, three seeds each (``seed=1,2,3``: weights, order
and augmentation), for the default number of epochs (``epochs=auto``), and reports the
dev and test accuracy (best-dev weights) per seed and their mean. It prints one table and
appends it to ``benchmarks/RESULTS.md``. About 6 minutes on 2 quiet cores; ``--jobs N``
trains N runs side by side (each run is seeded; the number of threads can move a run's
accuracy by an image or so):

    .venv/bin/python benchmarks/augment_digits.py
    .venv/bin/python benchmarks/augment_digits.py --jobs 4
    .venv/bin/python benchmarks/augment_digits.py --aug none strong --seeds 1 --no-record
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import _record

from cnnkit.train.classify import train


def pct(x: float) -> str:
    """Accuracy as ``98.3``."""
    return f"{100 * x:.1f}"


def one_run(aug: str, seed: int, epochs: int | str, project: str) -> tuple[float, float, float]:
    """Train one LeNet-5 and return ``(dev accuracy, test accuracy, seconds)``."""
    t = time.perf_counter()
    r = train(
        model="lenet5",
        data="digits",
        aug=aug,
        seed=seed,
        epochs=epochs,
        project=project,
        name=f"{aug}_s{seed}",
        verbose=0,
    )
    secs = time.perf_counter() - t
    dev, test = r.scores["dev"]["accuracy"], r.scores["test"]["accuracy"]
    print(f"aug={aug} seed={seed}: dev {pct(dev)} test {pct(test)}", flush=True)
    return dev, test, secs


def main() -> None:
    """Train every (preset, seed), print and record the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--aug", nargs="+", default=["none", "default", "light", "strong"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--epochs", default="auto")
    ap.add_argument("--jobs", type=int, default=1, help="runs trained side by side")
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    machine = _record.machine()
    epochs = args.epochs if args.epochs == "auto" else int(args.epochs)
    seeds = " / ".join(f"seed {s}" for s in args.seeds)
    head = ["aug", "dev mean", f"dev ({seeds})", "test mean", f"test ({seeds})", "s / run"]
    rows: list[list[str]] = []
    jobs = [(aug, seed) for aug in args.aug for seed in args.seeds]
    with tempfile.TemporaryDirectory() as tmp:
        if args.jobs > 1:
            ctx = mp.get_context("spawn")
            with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
                futures = [pool.submit(one_run, a, s, epochs, tmp) for a, s in jobs]
                done = dict(zip(jobs, (f.result() for f in futures)))
        else:
            done = {(a, s): one_run(a, s, epochs, tmp) for a, s in jobs}
    for aug in args.aug:
        dev, test, secs = zip(*(done[(aug, seed)] for seed in args.seeds))
        rows.append(
            [
                aug,
                pct(sum(dev) / len(dev)),
                " / ".join(pct(v) for v in dev),
                pct(sum(test) / len(test)),
                " / ".join(pct(v) for v in test),
                f"{sum(secs) / len(secs):.0f}",
            ]
        )
    table = _record.md_table(head, rows)
    note = (
        "\nLeNet-5, bundled digits resized to 32x32 (dev 180, test 359 images), "
        f"epochs={args.epochs}, accuracy in % of the best-dev weights. One dev image is "
        f"0.56 points, one test image 0.28. {args.jobs} run(s) side by side (s / run is the "
        "wall time of one run)."
    )
    print(table + "\n" + note)
    if not args.no_record:
        _record.record(
            "Augmentation presets on digits (benchmarks/augment_digits.py)",
            table + "\n" + note,
            machine_line=machine,
        )


if __name__ == "__main__":
    main()
