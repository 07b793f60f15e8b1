"""ONNX export with a parity check, ONNX Runtime inference and latency timing.

Exporter: ``torch.onnx.export(..., dynamo=True)``, the default and maintained exporter
of torch 2.x (``torch.export`` graph -> ONNX through ``onnxscript``). It works offline;
its only extra requirement is the ``onnxscript`` package, a declared dependency of
cnnkit. The batch axis is dynamic (``torch.export.Dim``), so one file serves batch 1
and batch 256.

The file carries what ``predict`` needs in ``metadata_props`` (JSON strings):
``cnnkit.preprocess`` (size, channels, mean/std), ``cnnkit.classes``, ``cnnkit.model``
and ``cnnkit.task``.
"""

from __future__ import annotations

import json
import os
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnkit.data import Preprocess
from cnnkit.errors import CnnkitError
from cnnkit.train.checkpoint import atomic_write
from cnnkit.train.classify import Prediction, load_run_model, predict_with

__all__ = [
    "FORMATS",
    "PARITY_TOL",
    "ExportResult",
    "OnnxClassifier",
    "Timing",
    "benchmark",
    "check_parity",
    "load_onnx",
    "predict",
    "time_forward",
    "to_onnx",
]

FORMATS = ("onnx",)
PARITY_TOL = 1e-4  # max abs difference of fp32 logits, PyTorch eager vs ONNX Runtime
#: A parity failure below this relative difference (diff / largest logit) is fp32 rounding.
ROUNDING_REL = 1e-5
INPUT_NAME, OUTPUT_NAME = "images", "logits"
_META_KEYS = ("task", "model", "preprocess", "classes", "num_outputs", "in_channels")


@dataclass
class Timing:
    """Forward-pass timing of one backend at one batch size.

    Attributes:
        backend: ``"PyTorch eager"`` or ``"ONNX Runtime"``.
        batch: Images per forward pass.
        repeats: Timed runs (after warm-up).
        median_ms: Median time of one forward pass, in milliseconds.
        min_ms: Fastest run.
        max_ms: Slowest run.
    """

    backend: str
    batch: int
    repeats: int
    median_ms: float
    min_ms: float
    max_ms: float

    @property
    def images_per_s(self) -> float:
        """Throughput at the median time."""
        return self.batch / (self.median_ms / 1000.0)


@dataclass
class ExportResult:
    """What :func:`to_onnx` returns.

    Attributes:
        path: The ``.onnx`` file written.
        size_bytes: Its size.
        opset: The ONNX opset of the default domain.
        input_size: One example's size in course order ``(n_H, n_W, n_C)``.
        dynamic_batch: Whether the batch axis is dynamic.
        parity: Max abs difference of the logits, PyTorch eager vs ONNX Runtime (fp32).
        parity_images: Images in the seeded random batch the parity was measured on.
        metadata: The ``metadata_props`` written (JSON strings).
        timings: Latency and throughput per backend (empty unless ``bench`` was asked).
    """

    path: Path
    size_bytes: int
    opset: int
    input_size: tuple[int, int, int]
    dynamic_batch: bool
    parity: float
    parity_images: int
    metadata: dict[str, str]
    timings: list[Timing] = field(default_factory=list)


def _session(model: str | os.PathLike | bytes, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session (as many intra-op threads as torch uses, for a fair race)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.log_severity_level = 3  # errors only
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, sess_options=so, providers=["CPUExecutionProvider"])


def _input_size(
    model: nn.Module, input_size: str | Sequence[int] | None, meta: dict[str, Any] | None
) -> tuple[int, int, int]:
    from cnnkit.shapes import parse_size

    if input_size is None and meta is not None:
        pre = meta["preprocess"]
        if int(pre.get("dims", 2)) != 2:
            raise CnnkitError(
                "ONNX export here covers image models (n_H x n_W x n_C) and this run trains "
                f"on {'1D signals' if int(pre['dims']) == 1 else '3D volumes'}; export its "
                "network with torch.onnx.export on a (1, n_C, ...) example instead."
            )
        return (int(pre["size"][0]), int(pre["size"][1]), int(pre["channels"]))
    if input_size is None:
        input_size = getattr(model, "input_size", None)
    if input_size is None:
        raise CnnkitError(
            "to_onnx(model, ...) needs the input size of one example; pass input_size='64x64x3'."
        )
    size = parse_size(input_size)
    if len(size) != 3:
        raise CnnkitError(
            f"input_size={input_size!r} must be n_H x n_W x n_C for an image model, e.g. 64x64x3."
        )
    return (int(size[0]), int(size[1]), int(size[2]))


def _export_proto(
    model: nn.Module, example: torch.Tensor, opset: int | None, dynamic_batch: bool
) -> Any:
    """The model as an ``onnx.ModelProto`` (dynamo exporter, optional dynamic batch)."""
    dynamic = ({0: torch.export.Dim("batch", min=1, max=65536)},) if dynamic_batch else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=dynamic,
                opset_version=opset,
                verbose=False,
                report=False,
            )
    except ImportError as e:
        raise CnnkitError(
            f"ONNX export needs the onnx and onnxscript packages ({e}); "
            "pip install onnx onnxscript onnxruntime."
        ) from None
    except Exception as e:  # the exporter's own errors are long; keep the first line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CnnkitError(
            f"torch.onnx.export could not export {type(model).__name__} ({first[:200]}); "
            "check that the model runs on a (N, n_C, n_H, n_W) batch of the input size."
        ) from None
    return program.model_proto


def check_parity(
    model: nn.Module,
    onnx_model: str | os.PathLike | bytes | Any,
    input_size: tuple[int, int, int],
    *,
    n: int = 4,
    seed: int = 0,
) -> float:
    """Max abs difference of the outputs, PyTorch eager vs ONNX Runtime, on a seeded batch.

    Args:
        model: The PyTorch model (evaluated in eval mode; its mode is restored).
        onnx_model: An ``.onnx`` file, its bytes, or an ONNX Runtime session.
        input_size: One example's size ``(n_H, n_W, n_C)``.
        n: Images in the random batch.
        seed: Seed of the batch (``torch.randn``).

    Returns:
        The max abs difference over all ``n`` rows of logits (fp32).
    """
    H, W, C = input_size
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, C, H, W, generator=g)  # NCHW
    sess = (
        onnx_model if hasattr(onnx_model, "run") else _session(onnx_model)  # type: ignore[arg-type]
    )
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = model(x)
    finally:
        model.train(was)
    got = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
    return float((ref.float() - got.float()).abs().max())


def _eval_passes(
    model: nn.Module, input_size: tuple[int, int, int], n: int, passes: int
) -> list[torch.Tensor]:
    """``passes`` eval-mode PyTorch outputs (fp32) on the seeded parity batch of ``n`` images."""
    H, W, C = input_size
    x = torch.randn(n, C, H, W, generator=torch.Generator().manual_seed(0))  # NCHW
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return [model(x).float() for _ in range(passes)]
    finally:
        model.train(was)


def time_forward(
    forward: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    *,
    backend: str,
    repeats: int = 30,
    warmup: int = 2,
    budget_s: float = 2.0,
) -> Timing:
    """Time a forward pass: ``repeats`` runs after ``warmup``, stopping early at ``budget_s``.

    Args:
        forward: Called as ``forward(x)``.
        x: The input batch ``(N, n_C, n_H, n_W)``.
        backend: Name shown in tables.
        repeats: Most timed runs.
        warmup: Untimed runs first.
        budget_s: Stop after this many seconds of timed runs (at least 3 runs are kept).

    Returns:
        A :class:`Timing`.
    """
    with torch.inference_mode():
        for _ in range(warmup):
            forward(x)
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < repeats:
            t = time.perf_counter()
            forward(x)
            times.append(time.perf_counter() - t)
            if len(times) >= 3 and time.perf_counter() - start > budget_s:
                break
    ms = [1000.0 * t for t in times]
    return Timing(backend, len(x), len(ms), statistics.median(ms), min(ms), max(ms))


def to_onnx(
    run_or_model: str | os.PathLike | nn.Module | None,
    path: str | os.PathLike | None = None,
    *,
    weights: str | os.PathLike | None = None,
    input_size: str | Sequence[int] | None = None,
    opset: int | None = None,
    dynamic_batch: bool = True,
    preprocess: Preprocess | None = None,
    classes: Sequence[str] | None = None,
    bench: bool = False,
    bench_batch: int = 64,
    tol: float = PARITY_TOL,
) -> ExportResult:
    """Export a run's best weights (or any model) to ONNX, checked against PyTorch.

    The export is held in memory, compared with PyTorch eager on a seeded batch of 4
    random images through ONNX Runtime (CPU), and written atomically only when the
    logits agree within ``tol`` (default :data:`PARITY_TOL`).

    Args:
        run_or_model: A run folder (its verified best weights), an ``nn.Module``, or None
            with ``weights``.
        path: The ``.onnx`` file (default: beside the weights, ``weights/best.onnx``).
        weights: Instead of a run: a cnnkit ``.safetensors`` file.
        input_size: For a bare model: one example's size, ``"64x64x3"`` or ``(64, 64, 3)``
            (a run knows its own).
        opset: ONNX opset (default: the exporter's).
        dynamic_batch: Make the batch axis dynamic (else the file takes batch 1 only).
        preprocess: For a bare model: the preprocessing stored for ``predict``.
        classes: For a bare model: class names stored for ``predict``.
        bench: Also time batch-1 latency and ``bench_batch`` throughput of both backends.
        bench_batch: The throughput batch.
        tol: The largest max abs difference of the logits that passes.

    Returns:
        An :class:`ExportResult`.

    Raises:
        CnnkitError: On a missing run, an unsupported model, or a parity failure.
    """
    import onnx

    if isinstance(run_or_model, nn.Module):
        model, meta = run_or_model, None
    else:
        model, meta = load_run_model(run_or_model, weights)
    H, W, C = _input_size(model, input_size, meta)
    if path is None:
        if meta is None:
            raise CnnkitError(
                "to_onnx(model, path): pass the .onnx file to write, e.g. model.onnx."
            )
        path = Path(meta["weights_file"]).with_suffix(".onnx")
    path = Path(path)
    if path.suffix != ".onnx":
        raise CnnkitError(f"out={str(path)!r} must end in .onnx, e.g. out=model.onnx.")

    was = model.training
    model.eval()
    try:
        example = torch.zeros(2 if dynamic_batch else 1, C, H, W)  # NCHW; 2: batch not 0/1
        proto = _export_proto(model, example, opset, dynamic_batch)
    finally:
        model.train(was)

    props: dict[str, Any] = {}
    if meta is not None:
        props = {k: meta[k] for k in _META_KEYS if k in meta}
    else:
        props = {"task": "classify", "model": type(model).__name__}
        if preprocess is not None:
            props["preprocess"] = preprocess.to_dict()
        if classes is not None:
            props["classes"] = list(classes)
    metadata = {f"cnnkit.{k}": json.dumps(v) for k, v in props.items()}
    for k, v in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "cnnkit"
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    opset_used = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)

    sess = _session(data)
    n = 4
    diff = check_parity(model, sess, (H, W, C), n=n)
    if not diff <= tol:  # also catches NaN
        first, second = _eval_passes(model, (H, W, C), n, 2)
        own = float((first - second).abs().max())
        if own > tol:
            raise CnnkitError(
                f"the model is random at inference: two PyTorch passes over the same {n} images "
                f"differ by {own:.2g} in eval mode, so no export can match it and nothing was "
                "written; make its forward deterministic in eval mode (e.g. F.dropout(x, p, "
                "training=self.training), not training=True)."
            )
        big = float(first.abs().max())
        rel = diff / big if big > 0 else float("inf")
        if rel < ROUNDING_REL:
            suggest = float(f"{10 * diff:.0e}")
            raise CnnkitError(
                f"the ONNX model's logits differ from PyTorch's by {diff:.2g} (> tol={tol:g}) on "
                f"{n} random images, but they reach {big:.2g}, so that is a relative difference "
                f"of {rel:.1g}, fp32 rounding at this scale; nothing was written; pass "
                f"tol={suggest:g} to accept it."
            )
        raise CnnkitError(
            f"the ONNX model's logits differ from PyTorch's by {diff:.2g} (> tol={tol:g}) on "
            f"{n} random images, so nothing was written; report the model, or try another opset."
        )
    atomic_write(path, lambda f: f.write(data))
    result = ExportResult(
        path=path,
        size_bytes=path.stat().st_size,
        opset=int(opset_used),
        input_size=(H, W, C),
        dynamic_batch=dynamic_batch,
        parity=diff,
        parity_images=n,
        metadata=metadata,
    )
    if bench:
        result.timings = benchmark(model, sess, (H, W, C), batches=(1, bench_batch))
    return result


def benchmark(
    model: nn.Module,
    sess: Any,
    input_size: tuple[int, int, int],
    *,
    batches: Sequence[int] = (1, 64),
    repeats: int = 30,
    budget_s: float = 1.0,
) -> list[Timing]:
    """Time PyTorch eager and an ONNX Runtime session at each batch size.

    Args:
        model: The PyTorch model (eval mode during timing; its mode is restored).
        sess: The ONNX Runtime session of the same model.
        input_size: One example's size ``(n_H, n_W, n_C)``.
        batches: Batch sizes to time.
        repeats: Most timed runs per measurement.
        budget_s: Seconds per measurement (at least 3 runs).

    Returns:
        One :class:`Timing` per backend and batch, PyTorch first.
    """
    H, W, C = input_size
    name = sess.get_inputs()[0].name
    was = model.training
    model.eval()
    out: list[Timing] = []
    try:
        for b in batches:
            x = torch.randn(b, C, H, W, generator=torch.Generator().manual_seed(0))  # NCHW
            xn = x.numpy()
            out.append(
                time_forward(model, x, backend="PyTorch eager", repeats=repeats, budget_s=budget_s)
            )
            out.append(
                time_forward(
                    lambda _x, xn=xn: sess.run(None, {name: xn}),
                    x,
                    backend="ONNX Runtime",
                    repeats=repeats,
                    budget_s=budget_s,
                )
            )
    finally:
        model.train(was)
    return out


class OnnxClassifier:
    """An exported classifier run by ONNX Runtime (CPU), callable like the PyTorch model.

    Args:
        path: The ``.onnx`` file.

    Attributes:
        path: The file.
        metadata: The ``cnnkit.*`` metadata, decoded (``preprocess``, ``classes``, ``model``).
        preprocess: The stored preprocessing, or None when the file has none.
        classes: The stored class names, or None.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        p = Path(path)
        if p.suffix != ".onnx":
            raise CnnkitError(
                f"model={str(p)!r} is not an .onnx file; export one with "
                "`cnnkit export run=runs/classify/NAME format=onnx`."
            )
        if not p.is_file():
            raise CnnkitError(
                f"model={str(p)!r} does not exist; export it with "
                "`cnnkit export run=runs/classify/NAME format=onnx`."
            )
        try:
            self.session = _session(p)
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CnnkitError(
                f"{str(p)!r} is not a valid ONNX model ({first[:160]}); export it again."
            ) from None
        self.path = p
        raw = self.session.get_modelmeta().custom_metadata_map
        self.metadata: dict[str, Any] = {}
        for k, v in raw.items():
            if k.startswith("cnnkit."):
                try:
                    self.metadata[k[len("cnnkit.") :]] = json.loads(v)
                except json.JSONDecodeError:
                    raise CnnkitError(
                        f"{str(p)!r} has unreadable metadata {k!r}; export it again."
                    ) from None
        pre = self.metadata.get("preprocess")
        self.preprocess = Preprocess.from_dict(pre) if pre else None
        cls = self.metadata.get("classes")
        self.classes = [str(c) for c in cls] if cls else None
        self._input = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a float32 ``(N, n_C, n_H, n_W)`` batch."""
        arr = x.detach().to(torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self._input: arr})[0])


def load_onnx(path: str | os.PathLike) -> OnnxClassifier:
    """Open an exported ``.onnx`` classifier for inference (see :class:`OnnxClassifier`).

    Args:
        path: The file.

    Returns:
        An :class:`OnnxClassifier`.
    """
    return OnnxClassifier(path)


def predict(
    model: str | os.PathLike | OnnxClassifier,
    source: str | os.PathLike | Sequence[str | os.PathLike] | torch.Tensor,
    *,
    batch: int = 64,
    topk: int = 5,
) -> list[Prediction]:
    """Classify images with an exported ``.onnx`` file (``cnnkit predict backend=onnxruntime``).

    The file's stored preprocessing and classes are applied exactly as
    :func:`cnnkit.train.classify.predict` applies a run's (the same decode, resize and
    normalize code).

    Args:
        model: The ``.onnx`` file or an opened :class:`OnnxClassifier`.
        source: An image, a folder of images, a list of files, or a tensor batch.
        batch: Images per forward pass.
        topk: Classes listed per image.

    Returns:
        One :class:`~cnnkit.train.classify.Prediction` per image, in file order.
    """
    clf = model if isinstance(model, OnnxClassifier) else OnnxClassifier(model)
    if clf.preprocess is None and not isinstance(source, torch.Tensor):
        raise CnnkitError(
            f"{str(clf.path)!r} has no cnnkit preprocessing metadata; export it from a run "
            "(`cnnkit export run=...`) or with to_onnx(..., preprocess=...)."
        )
    return predict_with(
        clf, source, preprocess=clf.preprocess, classes=clf.classes, batch=batch, topk=topk
    )
