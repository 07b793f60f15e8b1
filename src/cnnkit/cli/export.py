"""``cnnkit export run=... format=onnx``: parse, validate, call ``to_onnx``, print."""

from __future__ import annotations

from collections.abc import Sequence

from cnnkit.cli.args import check_keys, flag, split_args
from cnnkit.errors import CnnkitError

EXPORT_HELP = """\
usage: cnnkit export run=runs/classify/NAME format=onnx [out=FILE.onnx] [bench=true]
       cnnkit export weights=FILE.safetensors format=onnx [out=FILE.onnx]

Export the run's best weights (verified by the checkpoint manifest) to ONNX with a
dynamic batch axis; the preprocessing and class names travel in the file's metadata,
so `cnnkit predict model=FILE.onnx backend=onnxruntime source=IMG` needs nothing else.
The file is written only after PyTorch and ONNX Runtime agree on 4 random images
(max abs difference of the logits <= tol, 1e-4 by default). Then batch-1 latency and batch-64
throughput of both backends are printed (bench=false skips the timing).

settings: run, weights, format=onnx, out (default: weights/best.onnx beside the
weights), opset (default: the exporter's), bench=true, tol=1e-4
"""


def _size(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def export(argv: Sequence[str]) -> int:
    """``cnnkit export run=... format=onnx [out=FILE.onnx] [bench=false]``."""
    pos, opts, wants_help = split_args(argv)
    if wants_help:
        print(EXPORT_HELP, end="")
        return 0
    check_keys(opts, ["run", "weights", "format", "out", "opset", "bench", "tol"], "export")
    if pos:
        raise CnnkitError(
            f"`cnnkit export` takes key=value settings, got {' '.join(pos)!r}; "
            "e.g. run=runs/classify/NAME format=onnx."
        )
    from cnnkit.export import FORMATS

    fmt = str(opts.get("format", "onnx")).lower()
    if fmt not in FORMATS:
        raise CnnkitError(
            f"format={opts['format']!r} is not supported; allowed formats: {', '.join(FORMATS)}."
        )
    if ("run" in opts) == ("weights" in opts):
        raise CnnkitError("pass exactly one of run=runs/classify/NAME or weights=FILE.safetensors.")
    opset = opts.get("opset")
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 7):
        raise CnnkitError(f"opset must be an ONNX opset number, got {opset!r}; e.g. opset=18.")
    bench = flag(opts, "bench", True)
    tol = opts.get("tol", 1e-4)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
        raise CnnkitError(f"tol must be a positive number, got {tol!r}; e.g. tol=1e-3.")
    out = opts.get("out")
    if out is not None and not str(out).endswith(".onnx"):
        raise CnnkitError(f"out={out!r} must end in .onnx, e.g. out=model.onnx.")

    from cnnkit.export import to_onnx

    res = to_onnx(
        str(opts["run"]) if "run" in opts else None,
        None if out is None else str(out),
        weights=opts.get("weights"),
        opset=opset,
        bench=bench,
        tol=float(tol),
    )
    H, W, C = res.input_size
    print(
        f"exported {res.path} ({_size(res.size_bytes)}, ONNX opset {res.opset}, "
        f"input N x {H} x {W} x {C}{', dynamic batch' if res.dynamic_batch else ''})"
    )
    print(f"parity: max abs diff {res.parity:.2g} over {res.parity_images} images (fp32)")
    if res.timings:
        print(
            f"{'backend':<15} {'batch':>5} {'median ms':>10} {'min ms':>8} {'max ms':>8} "
            f"{'runs':>5} {'images/s':>10}"
        )
        for t in res.timings:
            print(
                f"{t.backend:<15} {t.batch:>5} {t.median_ms:>10.3f} {t.min_ms:>8.3f} "
                f"{t.max_ms:>8.3f} {t.repeats:>5} {t.images_per_s:>10,.0f}"
            )
    print(
        f"model saved in {res.path} (cnnkit predict model={res.path} backend=onnxruntime "
        "source=IMAGE_OR_FOLDER)"
    )
    return 0
