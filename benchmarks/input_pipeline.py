"""Input pipeline throughput, measured apart from the model, and its share of training.

What ``fit`` does to deliver batches, timed alone (img/s, median of ``--repeats``
epochs after one warm-up, batch 128):

- **in memory** (every built-in dataset, and any :class:`cnnkit.data.ImageSet`):
  uint8 tensors indexed per batch, converted and normalized as one tensor, with
  cnnkit's default augmentation (rotation 10 deg, shift 0.1, zoom 0.1) applied to the
  whole batch at once (``affine_grid`` + ``grid_sample``) or switched off;
- **a generic Dataset** that decodes one PNG file per example (a user's own
  ``torch.utils.data.Dataset``): ``fit``'s DataLoader with ``workers=0`` and with the
  default, one worker per spare core;
- **reading a folder into memory** once (``cnnkit.data.load(FOLDER)``: decode, resize,
  split), in images per second.

Then the share of a real LeNet-5 epoch (``fit``, default augmentation, 12,800
in-memory images) spent waiting for batches, from the ``data_s`` that ``fit`` records
in its history.

    .venv/bin/python benchmarks/input_pipeline.py
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _record import machine, record
from PIL import Image

from cnnkit.data import Augment, ImageSet, Preprocess, TensorBatches, default_workers, load
from cnnkit.models import create
from cnnkit.train import fit
from cnnkit.train.loop import _LoaderBatches

AUG = Augment(degrees=10.0, translate=0.1, scale=0.1)


def images(n: int, n_C: int, hw: int = 32) -> ImageSet:
    """``n`` random uint8 images with labels 0-9."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, n_C, hw, hw), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return ImageSet(x, y, Preprocess((hw, hw), n_C, (0.5,) * n_C, (0.25,) * n_C), "train")


class PngFiles(torch.utils.data.Dataset):
    """A user's Dataset: one PNG decoded and normalized per example."""

    def __init__(self, paths: list[Path], labels: list[int]) -> None:
        self.paths, self.labels = paths, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        a = np.asarray(Image.open(self.paths[i]).convert("RGB"))  # (H, W, 3) uint8
        x = torch.from_numpy(a).permute(2, 0, 1).float().div_(255)  # (H, W, C) -> (C, H, W)
        return (x - 0.5) / 0.25, self.labels[i]


def rate(epoch, n: int, repeats: int) -> tuple[float, float, float]:
    """Median, min, max img/s of ``repeats`` full passes of ``epoch(e)`` after a warm-up."""
    for _ in epoch(0):
        pass
    rates = []
    for e in range(1, repeats + 1):
        t0 = time.perf_counter()
        for _ in epoch(e):
            pass
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates), min(rates), max(rates)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    where = machine()
    print(where)
    rows = []
    n = 128 * 100
    for n_C in (1, 3):
        data = images(n, n_C)
        for aug in (None, AUG):
            tb = TensorBatches(data, 128, shuffle=True, augment=aug)
            g = torch.Generator().manual_seed(0)
            r = rate(lambda e, tb=tb, g=g: tb.epoch(e, 0, g), n, args.repeats)
            what = "default augmentation" if aug else "no augmentation"
            rows.append((f"in memory, 32x32x{n_C}, {what}", *r))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        paths, labels = [], []
        for i in range(2048):
            c = i % 10
            (root / str(c)).mkdir(exist_ok=True)
            p = root / str(c) / f"{i}.png"
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(p)
            paths.append(p)
            labels.append(c)
        ds = PngFiles(paths, labels)
        for w in sorted({0, default_workers()}):
            lb = _LoaderBatches(ds, 128, shuffle=True, seed=0, workers=w)
            r = rate(lambda e, lb=lb: lb.epoch(e), len(ds), args.repeats)
            rows.append((f"PNG files, 32x32x3, DataLoader workers={w}", *r))
        reads = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            load(root, size=32)
            reads.append(len(ds) / (time.perf_counter() - t0))
        rows.append(
            (
                "read a folder of PNGs into memory once",
                statistics.median(reads),
                min(reads),
                max(reads),
            )
        )
    torch.manual_seed(0)
    r = fit(
        create("lenet5", num_classes=10, in_channels=1),
        images(n, 1),
        epochs=2,
        batch=128,
        verbose=0,
    )
    share = ", ".join(f"{row['data_s'] / row['seconds']:.1%}" for row in r.history)
    trained = ", ".join(f"{row['img_per_s']:,.0f}" for row in r.history)
    lines = ["| pipeline | img/s median | min | max |", "|---|---:|---:|---:|"]
    lines += [f"| {w} | {m:,.0f} | {lo:,.0f} | {hi:,.0f} |" for w, m, lo, hi in rows]
    lines += [
        "",
        f"A LeNet-5 `fit` (default augmentation, {n:,} in-memory images, batch 128) waited for "
        f"its batches {share} of each epoch's time ({trained} img/s trained).",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"default workers here: {default_workers()}.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        record("Input pipeline: `benchmarks/input_pipeline.py`", text, machine_line=where)


if __name__ == "__main__":
    main()
