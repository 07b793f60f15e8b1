"""How long does the default recipe take on a folder of MNIST-sized IDX files?

This machine has no network, so the real MNIST files cannot be fetched. This script
writes files of exactly MNIST's format and size instead (60,000 training and 10,000
test images, 28x28x1, gzipped IDX as distributed): scikit-learn's 8x8 digits scaled to
20x20, centred in 28x28 like MNIST, shifted by up to 2 pixels, with a little noise. It
then runs the command a new user would run, as a subprocess, and reports its wall time:

    cnnkit train model=lenet5 data=FOLDER

The accuracy it prints is on these synthetic digits, not MNIST's; the time is what the
real files would cost (same count, same size, same format, same recipe).

    python benchmarks/mnist_like.py                  # writes /tmp/cnnkit-mnist-like, trains
    python benchmarks/mnist_like.py --folder DIR --keep
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (magic 0x0000080N, big-endian dims)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim)
    header += struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def mnist_like(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28x28 uint8 digit images and their labels."""
    import torch
    import torch.nn.functional as F

    d = load_digits()
    idx = rng.integers(0, len(d.images), n)
    small = torch.from_numpy(d.images[idx].astype(np.float32) * (255 / 16))[:, None]
    big = F.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False)
    big = big[:, 0].numpy()  # (n, 1, 20, 20) -> (n, 20, 20)
    out = np.zeros((n, 28, 28), np.float32)
    dy, dx = rng.integers(2, 7, n), rng.integers(2, 7, n)  # centred at 4, +-2 pixels
    for i in range(n):
        out[i, dy[i] : dy[i] + 20, dx[i] : dx[i] + 20] = big[i]
    out += rng.normal(0, 8, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8), d.target[idx].astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--folder", default="/tmp/cnnkit-mnist-like")
    ap.add_argument("--keep", action="store_true", help="keep the files and the run")
    ap.add_argument("extra", nargs="*", help="more train settings, e.g. epochs=5")
    args = ap.parse_args()
    root = Path(args.folder)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 60_000), ("t10k", 10_000)):
        x, y = mnist_like(n, rng)
        write_idx(root / f"{split}-images-idx3-ubyte.gz", x)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", y)
    cnnkit = Path(sys.executable).with_name("cnnkit")
    cmd = [str(cnnkit), "train", "model=lenet5", f"data={root}", f"project={root / 'runs'}"]
    cmd += args.extra
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"wall time of the whole command: {time.perf_counter() - t0:.1f} s")
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
