"""Neural style transfer speed and convergence on 2 CPU cores: Adam against L-BFGS.

Runs ``cnnkit.style.transfer`` on scikit-learn's bundled photos (``china.jpg`` as the
content, ``flower.jpg`` as the style) with VGG-19 (random weights: no download), the
course's layers and weights (alpha=10, beta=40), once per optimiser with the same
image size, steps and seed, in this process with 2 threads. Reports the wall time, the
median seconds per step (an L-BFGS step includes its line search, several evaluations
of J), and J, J_content and J_style at the start and the end.

    .venv/bin/python benchmarks/style_speed.py
    .venv/bin/python benchmarks/style_speed.py --size 128 --steps 50 --no-record
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

import _record
from sklearn.datasets import load_sample_image

from cnnkit.style.features import build_features
from cnnkit.style.transfer import load_image, transfer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--optimizers", default="adam,lbfgs")
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    torch.set_num_threads(2)
    machine = _record.machine()
    print(machine)
    C = load_image(load_sample_image("china.jpg"), args.size)
    S = load_image(load_sample_image("flower.jpg"), args.size)
    net = build_features("vgg19")
    rows = []
    for opt in args.optimizers.split(","):
        stamps: list[float] = []
        res = transfer(
            C,
            S,
            size=args.size,
            steps=args.steps,
            optimizer=opt,
            features=net,
            verbose=0,
            callback=lambda step, G, stamps=stamps: stamps.append(time.perf_counter()),
        )
        per_step = float(np.median(np.diff(stamps))) if len(stamps) > 1 else res.seconds
        h0, h1 = res.history[0], res.history[-1]
        rows.append(
            [
                opt,
                f"{args.size}x{args.size}",
                str(args.steps),
                f"{res.seconds:.1f} s",
                f"{per_step:.2f} s",
                f"{h0['J']:.4g} -> {h1['J']:.4g} ({1 - h1['J'] / h0['J']:.1%} lower)",
                f"{h0['J_content']:.3g} -> {h1['J_content']:.3g}",
                f"{h0['J_style']:.3g} -> {h1['J_style']:.3g}",
            ]
        )
        print(" | ".join(rows[-1]), flush=True)
    head = ["optimizer", "image", "steps", "wall time", "s / step (median)", "J", "J_content"]
    head.append("J_style")
    body = _record.md_table(head, rows) + (
        "\n\nContent china.jpg, style flower.jpg (scikit-learn's sample photos), VGG-19 "
        "with random weights, content layer block5_conv4, style layers blockN_conv1 "
        "(0.2 each), alpha=10, beta=40, G from C plus noise in [-0.25, 0.25]; Adam lr "
        "0.02, L-BFGS lr 1 with a strong-Wolfe line search (1 iteration per step)."
    )
    print(body)
    if not args.no_record:
        _record.record(
            "Neural style transfer: Adam and L-BFGS (cnnkit.style.transfer)",
            body,
            machine_line=machine,
        )


if __name__ == "__main__":
    main()
