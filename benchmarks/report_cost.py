"""What reporting costs: TensorBoard logging during training, and building report.html.

1. ``tensorboard=false`` vs ``tensorboard=true``: LeNet-5 on the bundled digits
   (``epochs`` epochs, fp32, contiguous, no compile), alternating, ``--repeats`` runs
   each; the training seconds are summed from each run's ``results.csv`` (the loop
   itself, without start-up), and the medians and their ratio are printed.
2. ``cnnkit.report.write_report`` on the last run: the seconds to build the page
   (median of ``--repeats``, imports already done), its size and its sections.

    .venv/bin/python benchmarks/report_cost.py
    .venv/bin/python benchmarks/report_cost.py --repeats 3 --epochs 5 --no-record
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import _record

from cnnkit.report import write_report
from cnnkit.train.classify import train


def train_seconds(project: str, name: str, epochs: int, tensorboard: bool) -> tuple[float, Path]:
    """Train one LeNet-5 run; return (seconds in the training loop, run folder)."""
    r = train(
        epochs=epochs,
        project=project,
        name=name,
        verbose=0,
        report=False,
        tensorboard=tensorboard,
        precision="fp32",
        memory_format="contiguous",
        compile=False,
    )
    return sum(row["seconds"] for row in r.fit.history), r.run_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    machine = _record.machine()
    print(machine)
    times: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        run = None
        for i in range(args.repeats):
            for tb in (False, True):
                s, run = train_seconds(tmp, f"tb{int(tb)}_{i}", args.epochs, tb)
                times[tb].append(s)
        off, on = statistics.median(times[False]), statistics.median(times[True])
        builds = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            rep = write_report(run, human="1%")
            builds.append(time.perf_counter() - t)
    n = 1258 * args.epochs
    rows = [
        ["tensorboard=false", f"{off:.2f}", f"{n / off:,.0f}", "1.000"],
        ["tensorboard=true", f"{on:.2f}", f"{n / on:,.0f}", f"{on / off:.3f}"],
    ]
    t1 = _record.md_table(["LeNet-5, digits", "train s (median)", "img/s", "time ratio"], rows)
    t2 = _record.md_table(
        ["report.html", "build s (median)", "size MB", "sections", "plots"],
        [
            [
                "digits run",
                f"{statistics.median(builds):.2f}",
                f"{rep.size / 1e6:.2f}",
                str(len(rep.sections)),
                str(len(rep.plots)),
            ]
        ],
    )
    body = (
        f"{args.epochs} epochs per run, {args.repeats} alternating repeats; training "
        f"seconds from results.csv.\n\n{t1}\n\n{t2}"
    )
    print(body)
    if not args.no_record:
        _record.record(
            "Reports: TensorBoard logging and report.html cost", body, machine_line=machine
        )


if __name__ == "__main__":
    main()
