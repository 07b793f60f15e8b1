"""YOLO (or Faster R-CNN) on synthetic shapes: mAP on the held-out split, time and speed.

Generates a seeded shapes set with :func:`cnnkit.detect.data.synth_shapes` (3 classes:
circle, square, triangle on textured backgrounds; 1-4 objects per image; 64x64 px;
80% train / 20% val), trains ``cnnkit detect train`` on it in a real subprocess (2
threads), and prints the wall time of the whole command with mAP@0.5 and
mAP@[.5:.95] on the val split (pycocotools). The issue's bar: mAP@0.5 >= 0.90 within
10 minutes on 2 CPU cores. ``--model fasterrcnn_mobilenet_v3`` trains torchvision's
Faster R-CNN (untrained MobileNetV3 backbone) on the same data through the same command,
for comparison; ``img/s`` is the median training throughput over the epochs
(``results.csv``).

    .venv/bin/python benchmarks/detect_shapes.py
    .venv/bin/python benchmarks/detect_shapes.py --model fasterrcnn_mobilenet_v3 --epochs 6
    .venv/bin/python benchmarks/detect_shapes.py --images 2000 --epochs 40 --no-record
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import _record

from cnnkit.detect.data import synth_shapes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="yolo", help="yolo or fasterrcnn_mobilenet_v3")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    machine = _record.machine()
    print(machine)
    with tempfile.TemporaryDirectory() as tmp:
        data = synth_shapes(Path(tmp) / "shapes", args.images, size=args.size, seed=args.seed)
        cmd = [sys.executable, "-m", "cnnkit.cli", "detect", "train", f"data={data}"]
        cmd += [f"size={args.size}", f"epochs={args.epochs}", f"seed={args.seed}"]
        cmd += [f"project={tmp}/runs", "verbose=2", "workers=1", f"model={args.model}"]
        cmd += [f"batch={args.batch}"]
        env = {**os.environ, "OMP_NUM_THREADS": "2"}
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - t
        if p.returncode:
            raise SystemExit(p.stderr)
        m = re.search(r"mAP@0\.5 ([\d.]+)\s+mAP@\[\.5:\.95\] ([\d.]+)", p.stdout)
        per_class = p.stdout[m.end() :].strip().splitlines()[1:4] if m else []
        with open(Path(tmp) / "runs" / "detect" / "train" / "results.csv") as f:
            speed = statistics.median(float(r["img_per_s"]) for r in csv.DictReader(f))
    assert m, p.stdout
    map50, map_ = float(m.group(1)), float(m.group(2))
    rows = [
        [
            args.model,
            f"{args.images} x {args.size}px, 3 classes",
            str(args.epochs),
            str(args.batch),
            f"{seconds / 60:.1f} min",
            f"{speed:.1f}",
            f"{map50:.3f}",
            f"{map_:.3f}",
            ("yes" if map50 >= 0.90 and seconds <= 600 else "no")
            if args.model == "yolo"
            else "n/a (comparison)",
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
            "mAP@0.5",
            "mAP@[.5:.95]",
            "bar met",
        ],
        rows,
    )
    body = table + "\n\nPer-class AP@0.5: " + "; ".join(x.strip() for x in per_class)
    print(body)
    if not args.no_record:
        _record.record(
            f"{args.model} on synthetic shapes (cnnkit detect train)", body, machine_line=machine
        )


if __name__ == "__main__":
    main()
