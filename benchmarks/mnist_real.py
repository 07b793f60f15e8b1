"""The default recipe on the real MNIST files: test accuracy and wall time per seed.

The issue's bar: `cnnkit train model=lenet5 data=FOLDER` on the real MNIST IDX files
reaches at least 98.5% test accuracy in under a minute on 2 cores. This script runs
exactly that command a new user would run, as a subprocess, once per seed, and prints
a table of the final test accuracy (parsed from the command's last lines) and the
wall time of the whole command (reading, split, training, evaluation, checkpoints).

The files are not in this repository and nothing here downloads them. Put the four
IDX files (gzipped as distributed or extracted, any of the usual names) in a folder:

    python benchmarks/mnist_real.py --folder ~/data/mnist --seeds 0 1 2
    python benchmarks/mnist_real.py --folder ~/data/fashion-mnist -- epochs=10

Before training it checks that the folder holds MNIST's 60,000 + 10,000 images and
prints the class counts, so a table is never made on the wrong files.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cnnkit.data.formats import read_mnist

SCORE = re.compile(r"^test accuracy ([\d.]+)%", re.MULTILINE)


def run_once(folder: Path, seed: int, project: Path, extra: list[str]) -> tuple[float, float]:
    """One `cnnkit train` run; returns (test accuracy in %, wall seconds)."""
    cnnkit = Path(sys.executable).with_name("cnnkit")
    cmd = [str(cnnkit), "train", "model=lenet5", f"data={folder}", f"seed={seed}"]
    cmd += [f"project={project}", f"name=seed{seed}", "verbose=2", *extra]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - t0
    print(out, flush=True)
    m = SCORE.search(out)
    if m is None:
        raise SystemExit("the command printed no 'test accuracy' line")
    return float(m.group(1)), wall


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--folder", required=True, help="folder with the four IDX files")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("extra", nargs="*", help="more train settings, e.g. epochs=5")
    args = ap.parse_args()
    folder = Path(args.folder)
    splits = read_mnist(folder)
    n_train, n_test = len(splits["train"][1]), len(splits["test"][1])
    print(f"{folder}: train {n_train:,}, test {n_test:,} images")
    print("train class counts", np.bincount(splits["train"][1]).tolist())
    print("test class counts ", np.bincount(splits["test"][1]).tolist())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            rows.append((seed, *run_once(folder, seed, Path(tmp), args.extra)))
    print(f"{'seed':>4}  {'test accuracy':>13}  {'wall time':>9}")
    for seed, acc, wall in rows:
        print(f"{seed:>4}  {acc:>12.1f}%  {wall:>8.1f}s")
    accs, walls = [r[1] for r in rows], [r[2] for r in rows]
    print(
        f"min {min(accs):.1f}%, median {statistics.median(accs):.1f}%; "
        f"median wall {statistics.median(walls):.1f} s, max {max(walls):.1f} s"
    )


if __name__ == "__main__":
    main()
