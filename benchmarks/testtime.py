"""Test-time multi-crop and ensembles on real digits runs: accuracy and cost.

Trains LeNet-5 on the bundled digits with one split (``split_seed=0``) and three
initial weights (``seed=1,2,3``), for the default number of epochs (``epochs=auto``)
and, as a less-trained contrast, 10 epochs. Then, for every run and for the dev and
test splits, it scores:

- 1 crop;
- 5 crops, ``mode="shift"`` with the default ``shift=1/32`` (1 pixel at 32x32) and with
  ``shift=1/16`` (2 pixels);
- 5 crops, ``mode="resize"`` (1.125x, the AlexNet/VGG recipe);
- the ensemble of the three runs (1 crop and 5 shifted crops).

It prints one table (accuracy in %, the 5-crop cost measured against 1 crop) and
appends it to ``benchmarks/RESULTS.md``. About 3 minutes on 2 cores:

    .venv/bin/python benchmarks/testtime.py
    .venv/bin/python benchmarks/testtime.py --epochs auto --seeds 1 2 3 --no-record
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import _record

import cnnkit.evaluate as ev
from cnnkit.train.classify import train

VIEWS = [
    ("5 crops, shift 1/32", {"crops": 5, "mode": "shift", "shift": 1 / 32}),
    ("5 crops, shift 1/16", {"crops": 5, "mode": "shift", "shift": 1 / 16}),
    ("5 crops, resize 1.125", {"crops": 5, "mode": "resize"}),
]


def pct(x: float) -> str:
    """Accuracy as ``98.3``."""
    return f"{100 * x:.1f}"


def main() -> None:
    """Train the runs, score every view, print and record the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", nargs="+", default=["auto", "10"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    machine = _record.machine()
    head = ["epochs", "run", "split", "1 crop", *(v[0] for v in VIEWS), "5-crop cost"]
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for epochs in args.epochs:
            e = epochs if epochs == "auto" else int(epochs)
            runs = []
            for seed in args.seeds:
                r = train(
                    model="lenet5",
                    data="digits",
                    epochs=e,
                    split_seed=0,
                    seed=seed,
                    project=tmp,
                    name=f"e{epochs}_s{seed}",
                    verbose=0,
                )
                runs.append(r.run_dir)
            for split in ("test", "dev"):
                for seed, run in zip(args.seeds, runs):
                    res = [ev.evaluate_crops(run, split=split, **kw) for _, kw in VIEWS]
                    rows.append(
                        [
                            str(epochs),
                            f"seed {seed}",
                            split,
                            pct(res[0].single.accuracy),
                            *(pct(r.multi.accuracy) for r in res),
                            f"{res[0].slowdown:.1f}x",
                        ]
                    )
                one = ev.ensemble(runs, split=split)
                five = ev.ensemble(runs, split=split, crops=5)
                best = max(m.accuracy for m in one.members)
                rows.append(
                    [
                        str(epochs),
                        f"ensemble of {len(runs)} (best member {pct(best)})",
                        split,
                        pct(one.ensemble.accuracy),
                        pct(five.ensemble.accuracy),
                        "",
                        "",
                        f"{five.ensemble.seconds / one.best_member.seconds:.1f}x",
                    ]
                )
                print(" | ".join(rows[-1]), flush=True)
    table = _record.md_table(head, rows)
    body = (
        f"{table}\n\nAccuracy in % on the digits' 359 test and 180 dev images (one image is "
        "0.28 and 0.56 points). 5-crop cost: measured forward time of 5 shifted crops "
        "over 1 crop (for an ensemble: its 5-crop forward time over its best member's "
        "1-crop time)."
    )
    print()
    print(body)
    if not args.no_record:
        _record.record(
            "Test-time multi-crop and ensembles (benchmarks/testtime.py)",
            body,
            machine_line=machine,
        )


if __name__ == "__main__":
    main()
