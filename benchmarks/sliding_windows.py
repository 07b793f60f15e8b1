"""Sliding windows crop by crop versus convolutionally (OverFeat): work and time.

LeNet-5 (random weights; the timing does not depend on them) classifies every 32x32
window of a 128x128 grey image at its effective stride 4 (its two pools): 25 x 25 =
625 windows. The naive way crops the 625 windows and runs them as one batch; the
convolutional way (``cnnkit.detect.fc_to_conv``) runs the converted network once on the
whole image and shares the work of overlapping windows. MACs come from
``cnnkit.summary`` (one window times the number of windows, against the whole image);
times are the median of alternating repeats on 2 threads. Both ways are checked to
give the same scores. A few seconds:

    .venv/bin/python benchmarks/sliding_windows.py
    .venv/bin/python benchmarks/sliding_windows.py --sizes 64 128 --repeats 15 --no-record
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import _record
import torch

from cnnkit.detect.sliding import (
    effective_stride,
    fc_to_conv,
    sliding_windows_conv,
    sliding_windows_naive,
    window_grid,
)
from cnnkit.inspect import summary
from cnnkit.models import create

WINDOW = 32


def ms(seconds: list[float]) -> str:
    """Median of the timings, in milliseconds."""
    return f"{1000 * statistics.median(seconds):.2f}"


def main() -> None:
    """Time both ways on every image size, print and record the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[128], help="image sides n")
    ap.add_argument("--repeats", type=int, default=21, help="timed runs of each way")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    machine = _record.machine()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create("lenet5", num_classes=10, in_channels=1).eval()
    conv = fc_to_conv(model, (WINDOW, WINDOW, 1))
    s = effective_stride(model)
    per_window = summary(model, (WINDOW, WINDOW, 1)).macs
    head = [
        "image",
        "windows",
        "naive MACs",
        "conv MACs",
        "MAC ratio",
        "naive ms",
        "conv ms",
        "speed-up",
    ]
    rows: list[list[str]] = []
    for n in args.sizes:
        image = torch.randn(1, n, n, generator=torch.Generator().manual_seed(n))
        n_rows, n_cols = window_grid(n, WINDOW, s)
        windows = n_rows * n_cols
        naive_macs = windows * per_window
        conv_macs = summary(conv, (n, n, 1)).macs
        slow = sliding_windows_naive(model, image, WINDOW, s, batch_size=windows)
        fast = sliding_windows_conv(conv, image)
        assert fast.shape == slow.shape == (n_rows, n_cols, 10)
        assert torch.allclose(fast, slow, atol=1e-4), (fast - slow).abs().max()
        times: dict[str, list[float]] = {"naive": [], "conv": []}
        for _ in range(3):  # warm-up
            sliding_windows_naive(model, image, WINDOW, s, batch_size=windows)
            sliding_windows_conv(conv, image)
        for _ in range(args.repeats):  # alternate, so that drifts hit both ways alike
            t = time.perf_counter()
            sliding_windows_naive(model, image, WINDOW, s, batch_size=windows)
            times["naive"].append(time.perf_counter() - t)
            t = time.perf_counter()
            sliding_windows_conv(conv, image)
            times["conv"].append(time.perf_counter() - t)
        speedup = statistics.median(times["naive"]) / statistics.median(times["conv"])
        rows.append(
            [
                f"{n}x{n}x1",
                f"{n_rows}x{n_cols} = {windows}",
                f"{naive_macs / 1e6:.1f}M",
                f"{conv_macs / 1e6:.1f}M",
                f"{naive_macs / conv_macs:.2f}x",
                ms(times["naive"]),
                ms(times["conv"]),
                f"{speedup:.1f}x",
            ]
        )
        print(" | ".join(rows[-1]), flush=True)
    table = _record.md_table(head, rows)
    body = (
        f"{table}\n\nLeNet-5 (61,706 parameters, {per_window:,} MACs per 32x32x1 window), "
        f"windows at its effective stride {s}. Naive: every window cropped and classified "
        "in one batch; conv: the network with its FC layers turned into convolutions, run "
        f"once on the image. Median of {args.repeats} alternating runs each, "
        f"{args.threads} threads, batch of one image; both give the same scores (checked)."
    )
    print()
    print(body)
    if not args.no_record:
        _record.record(
            "Sliding windows, naive vs convolutional (benchmarks/sliding_windows.py)",
            body,
            machine_line=machine,
        )


if __name__ == "__main__":
    main()
