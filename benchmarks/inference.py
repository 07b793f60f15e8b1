"""PyTorch eager vs ONNX Runtime on the CPU: batch-1 latency and batch-256 throughput.

For each model (torchvision architectures built by ``cnnkit.models.create``, random
weights, 224x224x3, eval mode; batch-norm statistics computed on 16 random images, as
freshly initialised MobileNetV2 otherwise gives logits of about 1e-9, which would make
the parity check meaningless), the model is exported with
:func:`cnnkit.export.to_onnx` (dynamo exporter, dynamic batch; the export itself checks
parity on 4 seeded images) and both backends are timed on the same input, with as many
intra-op threads as torch uses:

- **batch 1**: median, min and max of ``--repeats`` forward passes after a warm-up;
- **batch 256**: median of ``--big-repeats`` passes, as images per second.

    python benchmarks/inference.py                        # resnet18, mobilenet_v2
    python benchmarks/inference.py --big-repeats 2 --models resnet18

The table is appended to ``benchmarks/RESULTS.md`` (``--no-record`` to skip that).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import onnxruntime
import torch
from _record import machine, record

from cnnkit.export import OnnxClassifier, benchmark, check_parity, to_onnx
from cnnkit.models import create


def calibrate_batchnorm(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """Give every batch norm the mean/variance of ``x``'s activations; return the model in eval.

    Args:
        model: The model.
        x: A batch ``(N, n_C, n_H, n_W)``.

    Returns:
        ``model``, in eval mode.
    """
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the calibration batch
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def main() -> None:
    """Parse the options, export and time each model, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    ap.add_argument("--size", type=int, default=224, help="n_H = n_W of the input")
    ap.add_argument("--batch", type=int, default=256, help="the throughput batch")
    ap.add_argument("--repeats", type=int, default=30, help="timed batch-1 passes")
    ap.add_argument("--big-repeats", type=int, default=3, help="timed large-batch passes")
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    where = machine()

    print(
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = create(name, num_classes=1000)
        size = (args.size, args.size, 3)
        calibrate_batchnorm(model, torch.randn(16, 3, args.size, args.size))
        with torch.no_grad():
            scale = float(model(torch.randn(4, 3, args.size, args.size)).abs().max())
        with tempfile.TemporaryDirectory() as tmp:
            res = to_onnx(model, Path(tmp) / f"{name}.onnx", input_size=size)
            sess = OnnxClassifier(res.path).session
            parity = check_parity(model, sess, size, n=4, seed=1)  # independent of the export's
            small = benchmark(model, sess, size, batches=(1,), repeats=args.repeats, budget_s=30.0)
            big = benchmark(
                model, sess, size, batches=(args.batch,), repeats=args.big_repeats, budget_s=120.0
            )
        for s, b in zip(small, big):
            rows.append((name, s, b, parity, scale))
            print(
                f"  {name} {s.backend}: batch 1 median {s.median_ms:.2f} ms; "
                f"batch {b.batch} {b.images_per_s:.0f} img/s",
                flush=True,
            )

    lines = [
        f"| model | backend | batch 1 median ms | min | max | batch {args.batch} img/s "
        "| parity (max abs diff) | max abs logit |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s, b, parity, scale in rows:
        lines.append(
            f"| {name} | {s.backend} | {s.median_ms:.2f} | {s.min_ms:.2f} | {s.max_ms:.2f} "
            f"| {b.images_per_s:,.0f} | {parity:.1e} | {scale:.2g} |"
        )
    lines.append(
        f"\nbatch 1: {args.repeats} passes after 2 warm-up; batch {args.batch}: "
        f"median of {args.big_repeats} passes after 2 warm-up; torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, {torch.get_num_threads()} threads."
    )
    text = "\n".join(lines)
    print("\n" + text)
    if not args.no_record:
        record("Inference: `benchmarks/inference.py`", text, machine_line=where)


if __name__ == "__main__":
    main()
