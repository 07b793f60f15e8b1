"""Cached features against recomputing the frozen backbone every epoch.

With the backbone frozen (``freeze=backbone bn=freeze_stats aug=none``), cnnkit runs the
backbone once and trains the head on the stored features (``cache_features=auto``).
This script trains the same head both ways on the bundled digits (all 10 classes,
1,258 training images) and reads each epoch's training time from the runs'
``results.csv``. The ratio of the median epoch times is the speed-up per epoch. The
one-time cost of computing the features is the first cached run's extra wall time. It
does this for LeNet-5 and for a CIFAR-style ResNet-18 (``model.small_input=true``) at
32x32. It prints a table and appends it to ``benchmarks/RESULTS.md``:

    .venv/bin/python benchmarks/cached_features.py
    .venv/bin/python benchmarks/cached_features.py --epochs 5 --no-record
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import _record

from cnnkit import transfer

MODELS = [("lenet5", {}), ("resnet18", {"small_input": True})]


def epoch_seconds(run: Path) -> list[float]:
    """Training seconds of every epoch of a run."""
    with open(run / "results.csv", newline="") as f:
        return [float(r["seconds"]) for r in csv.DictReader(f)]


def main() -> None:
    """Train each head twice (cached, recomputed), print and record the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    machine = _record.machine()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CNNKIT_CACHE"] = str(Path(tmp) / "cache")  # a cold cache
        for name, options in MODELS:
            common = dict(
                model=name,
                model_args=options,
                data="digits",
                freeze="backbone",
                bn="freeze_stats",
                aug="none",
                epochs=args.epochs,
                verbose=0,
                project=tmp,
                precision="fp32",
                memory_format="contiguous",
                compile=False,
            )
            wall = {}
            runs = {}
            for how in ("recomputed", "cached"):
                t0 = time.perf_counter()
                r = transfer.train(cache_features=how == "cached", name=f"{name}_{how}", **common)
                wall[how] = time.perf_counter() - t0
                runs[how] = r
            t0 = time.perf_counter()  # the same run again: features read from the cache
            transfer.train(cache_features=True, name=f"{name}_again", **common)
            wall["again"] = time.perf_counter() - t0
            e_plain = statistics.median(epoch_seconds(runs["recomputed"].run_dir))
            e_cached = statistics.median(epoch_seconds(runs["cached"].run_dir))
            rows.append(
                [
                    name + (" (small_input)" if options else ""),
                    f"{1000 * e_plain:.0f} ms",
                    f"{1000 * e_cached:.1f} ms",
                    f"**{e_plain / e_cached:.0f}x**",
                    f"{wall['recomputed']:.1f} s",
                    f"{wall['cached']:.1f} s",
                    f"{wall['again']:.1f} s",
                    f"{100 * runs['recomputed'].scores['test']['accuracy']:.1f}% / "
                    f"{100 * runs['cached'].scores['test']['accuracy']:.1f}%",
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
    head = [
        "backbone",
        "epoch, recomputed",
        "epoch, cached",
        "per-epoch speed-up",
        "run, recomputed",
        "run, cached (features computed)",
        "run, cached (features read)",
        "test accuracy recomputed / cached",
    ]
    table = _record.md_table(head, rows)
    body = (
        f"{table}\n\nThe head trained on the frozen backbone's output, {args.epochs} epochs on "
        "the bundled digits (1,258 training images, 32x32), fp32; epoch times are medians "
        "of the runs' `results.csv`; the run times include loading the data and scoring "
        "dev and test."
    )
    print()
    print(body)
    if not args.no_record:
        _record.record(
            "Cached features (benchmarks/cached_features.py)", body, machine_line=machine
        )


if __name__ == "__main__":
    main()
