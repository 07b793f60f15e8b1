"""U-Net on synthetic shapes: mean IoU on the held-out split, time and speed.

Generates a seeded segmentation set with :func:`cnnkit.segment.data.synth_segment`
(background + 3 classes: circle, square, triangle on textured backgrounds; 1-4
overlapping shapes per image; 64x64 px; 80% train / 20% val), trains ``cnnkit segment
train`` on it in a real subprocess (2 threads), and prints the wall time of the whole
command with pixel accuracy, mean IoU, mean Dice and per-class IoU on the val split.
The issue's bar: mean IoU >= 0.85 within 10 minutes on 2 CPU cores. ``img/s`` is the
median training throughput over the epochs (``results.csv``).

    .venv/bin/python benchmarks/segment_shapes.py
    .venv/bin/python benchmarks/segment_shapes.py --images 1000 --epochs 20 --no-record
    .venv/bin/python benchmarks/segment_shapes.py --encoder resnet18
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import _record

from cnnkit.segment.data import synth_segment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1500)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--encoder", default=None, help="a zoo encoder, e.g. resnet18")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    machine = _record.machine()
    print(machine)
    with tempfile.TemporaryDirectory() as tmp:
        data = synth_segment(Path(tmp) / "shapes", args.images, size=args.size, seed=args.seed)
        cmd = [sys.executable, "-m", "cnnkit.cli", "segment", "train", f"data={data}"]
        cmd += [f"size={args.size}", f"epochs={args.epochs}", f"seed={args.seed}"]
        cmd += [f"depth={args.depth}", f"width={args.width}", f"batch={args.batch}"]
        cmd += [f"project={tmp}/runs", "verbose=2", "workers=1"]
        if args.encoder:
            cmd += [f"encoder={args.encoder}"]
        env = {**os.environ, "OMP_NUM_THREADS": "2"}
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - t
        if p.returncode:
            raise SystemExit(p.stderr)
        run = Path(tmp) / "runs" / "segment" / "train"
        scores = json.loads((run / "scores.json").read_text())
        with open(run / "results.csv") as f:
            speed = statistics.median(float(r["img_per_s"]) for r in csv.DictReader(f))
    model = f"U-Net on {args.encoder}" if args.encoder else f"U-Net d{args.depth} w{args.width}"
    miou = scores["mean_iou"]
    rows = [
        [
            model,
            f"{args.images} x {args.size}px, 3 classes + background",
            str(args.epochs),
            str(args.batch),
            f"{seconds / 60:.1f} min",
            f"{speed:.1f}",
            f"{scores['pixel_accuracy']:.4f}",
            f"{miou:.4f}",
            f"{scores['mean_dice']:.4f}",
            "yes" if miou >= 0.85 and seconds <= 600 else "no",
        ]
    ]
    table = _record.md_table(
        [
            "model",
            "shapes (80/20 split)",
            "epochs",
            "batch",
            "wall time",
            "train img/s",
            "pixel acc.",
            "mean IoU",
            "mean Dice",
            "bar met",
        ],
        rows,
    )
    per = "; ".join(f"{k} {v:.4f}" for k, v in scores["iou"].items())
    body = table + "\n\nPer-class IoU on val: " + per
    print(body)
    if not args.no_record:
        _record.record(
            "U-Net on synthetic shapes (cnnkit segment train)", body, machine_line=machine
        )


if __name__ == "__main__":
    main()
