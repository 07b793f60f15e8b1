"""Multi-task learning on the synthetic driving scenes: masked ``?`` labels and single-task nets.

Draws the synthetic multi-label task of :mod:`cnnkit.data.synthetic` (four labels:
pedestrian, car, stop sign, traffic light; each present with probability 0.5), writes
the PNG files once with a ``split`` column (``--train`` training scenes, ``--test`` test
scenes; dev is carved from train by ``cnnkit train``), and trains LeNet-5 through the
CSV manifest (``cnnkit.train.classify.train``, the code ``cnnkit train data=labels.csv``
runs) in four ways:

(a) ``full``: every label present;
(b) ``masked``: ``--missing`` (30%) of the training (and dev) label entries written as
    ``?``, skipped by the loss and the metrics (with ``--dev N``, N training scenes form a
    dev split whose labels all stay present);
(c) ``as 0``: the same entries written as ``0``, the naive reading of ``?``;
(d) ``single``: four single-task networks (the same LeNet-5, one sigmoid output), each
    trained on one label column with every label present.

All are scored on the same test scenes, whose labels are all present. For each seed
(initialization, order, augmentation and the choice of hidden entries) it prints the
per-label F1 on the test split, then the mean over seeds, and appends the table to
``benchmarks/RESULTS.md``. About 4 minutes on 2 cores with the defaults; the runs that
train to convergence (10,000 or 20,000 scenes, no augmentation, (a) and (b) only) take
10-30 minutes:

    .venv/bin/python benchmarks/multitask.py
    .venv/bin/python benchmarks/multitask.py --train 20000 --epochs 30 --aug none \
        --no-single --no-zeros
    .venv/bin/python benchmarks/multitask.py --seeds 0 --no-record
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import _record

from cnnkit.data.synthetic import SCENE_LABELS, missing_mask, write_manifest, write_scenes
from cnnkit.evaluate.metrics import multilabel_outputs, multilabel_report
from cnnkit.train.classify import train


def scene_csv(root: Path, splits: list[str], seed: int) -> tuple[list[str], np.ndarray]:
    """Write the scenes once; return the image paths and the full 0/1 labels."""
    path = write_scenes(root, len(splits), size=32, seed=seed, splits=splits)
    lines = path.read_text().splitlines()[1:]
    files = [ln.split(",")[0] for ln in lines]
    targets = np.array([[int(v) for v in ln.split(",")[1:-1]] for ln in lines])
    return files, targets


def run(
    csv: Path,
    seed: int,
    epochs: int | str,
    project: Path,
    name: str,
    width: float = 1.0,
    aug: str = "default",
) -> list[float]:
    """Train LeNet-5 on a manifest; per-label F1 on its (fully labelled) test split."""
    res = train(
        data=str(csv),
        model="lenet5",
        model_args={"width": width} if width != 1 else {},
        aug=aug,
        epochs=epochs,
        seed=seed,
        split_seed=0,
        project=str(project),
        name=name,
        verbose=0,
    )
    z, y = multilabel_outputs(res.fit.model, res.data.test)
    assert not np.isnan(y.numpy()).any(), "the test labels must all be present"
    return multilabel_report(z, y, res.data.info.classes).f1


def main() -> None:
    """Write the data, train every variant for every seed, print and record the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=2000, help="training scenes (dev carved)")
    ap.add_argument("--test", type=int, default=1000, help="test scenes (all labels present)")
    ap.add_argument(
        "--dev",
        type=int,
        default=0,
        help="training scenes set aside as a dev split whose labels are all present "
        "(0: dev is carved from train by cnnkit train and masked like it)",
    )
    ap.add_argument("--missing", type=float, default=0.3, help="fraction of label entries '?'")
    ap.add_argument("--epochs", default="auto")
    ap.add_argument("--width", type=float, default=1.0, help="LeNet-5 width multiplier")
    ap.add_argument("--aug", default="default", help="augmentation preset of every run")
    ap.add_argument("--no-zeros", action="store_true", help="skip the '? as 0' runs (c)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--no-single", action="store_true", help="skip the single-task nets (d)")
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    epochs = args.epochs if args.epochs == "auto" else int(args.epochs)
    machine = _record.machine()
    L = len(SCENE_LABELS)
    variants = ["(a) full", f"(b) {args.missing:.0%} ? masked", f"(c) {args.missing:.0%} ? as 0"]
    if not args.no_single:
        variants.append("(d) 4 single-task nets")
    f1: dict[str, list[list[float]]] = {v: [] for v in variants}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "scenes"
        n_dev = args.dev
        splits = ["train"] * (args.train - n_dev) + ["dev"] * n_dev + ["test"] * args.test
        files, targets = scene_csv(root, splits, seed=0)
        is_train = np.array([s == "train" for s in splits])
        project = Path(tmp) / "runs"
        for seed in args.seeds:
            mask = missing_mask(targets.shape, args.missing, seed=100 + seed, rows=is_train)
            csvs = {
                variants[0]: write_manifest(root / "full.csv", files, targets, SCENE_LABELS,
                                            splits=splits),
                variants[1]: write_manifest(root / "masked.csv", files, targets, SCENE_LABELS,
                                            missing=mask, splits=splits),
                variants[2]: write_manifest(root / "zeros.csv", files, targets, SCENE_LABELS,
                                            missing=mask, missing_as="0", splits=splits),
            }  # fmt: skip
            for v, csv in csvs.items():
                if v == variants[2] and args.no_zeros:
                    continue
                f1[v].append(
                    run(csv, seed, epochs, project, f"{v[:3]}-{seed}", args.width, args.aug)
                )
            if args.no_single:
                print(f"seed {seed} done ({time.perf_counter() - t0:.0f} s)", flush=True)
                continue
            single = []
            for j, label in enumerate(SCENE_LABELS):
                csv = write_manifest(
                    root / f"only_{label}.csv", files, targets[:, j : j + 1], [label], splits=splits
                )  # (N, L) -> (N, 1): one label column
                single += run(
                    csv, seed, epochs, project, f"single-{label}-{seed}", args.width, args.aug
                )
            f1[variants[3]].append(single)
            print(f"seed {seed} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    head = ["variant", *SCENE_LABELS, "mean F1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    shown = [v for v in variants if f1[v]]  # (c) is left out with --no-zeros
    for v in shown:
        per = np.array(f1[v])  # (seeds, L)
        for s, row in zip(args.seeds, per):
            cells = [f"{100 * x:.1f}" for x in row] + [f"{100 * row.mean():.1f}"]
            lines.append(f"| {v}, seed {s} | " + " | ".join(cells) + " |")
        mean = per.mean(0)
        sd = statistics.stdev(per.mean(1)) if len(per) > 1 else 0.0
        cells = [f"**{100 * x:.1f}**" for x in mean] + [
            f"**{100 * mean.mean():.1f}** ± {100 * sd:.1f}"
        ]
        lines.append(f"| **{v}, mean of {len(per)}** | " + " | ".join(cells) + " |")
    full = np.array(f1[variants[0]])
    gaps = {
        v: float(np.abs(np.array(f1[v]).mean(0) - full.mean(0)).max())
        for v in variants[1:3]
        if f1[v]
    }
    notes = [
        "",
        f"Per-label F1 (%) on {args.test:,} test scenes (all labels present), LeNet-5"
        + (f" (width {args.width:g})" if args.width != 1 else "")
        + f", {args.train:,} training scenes ("
        + (
            f"{args.dev:,} of them a dev split with every label present"
            if args.dev
            else "dev carved from them and masked like them"
        )
        + f"), epochs={args.epochs}, aug={args.aug}, seeds {args.seeds}; {L} labels.",
        "Largest per-label gap to (a), mean over seeds: "
        + ", ".join(f"{v}: {100 * g:.1f} points" for v, g in gaps.items())
        + f". Total time {time.perf_counter() - t0:.0f} s.",
        "",
        f"Command: `{_record.command()}`",
    ]
    body = "\n".join(lines + notes)
    print(body)
    if not args.no_record:
        _record.record("Multi-task learning: masked ? labels vs full vs single-task", body,
                       machine_line=machine)  # fmt: skip


if __name__ == "__main__":
    main()
