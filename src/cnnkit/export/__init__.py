"""ONNX export and fast inference (``cnnkit export``, ``cnnkit predict backend=onnxruntime``).

A floor above :mod:`cnnkit.train`: it loads a run's verified best weights, writes an
``.onnx`` file that carries the preprocessing and class names, checks it against
PyTorch, and times both::

    res = cnnkit.export.to_onnx("runs/classify/train", "lenet5.onnx")
    res.parity  # max abs difference of the logits, PyTorch eager vs ONNX Runtime
    cnnkit.export.predict("lenet5.onnx", "digit.png")
"""

from __future__ import annotations

from cnnkit.export._onnx import (
    FORMATS,
    ExportResult,
    OnnxClassifier,
    Timing,
    benchmark,
    check_parity,
    load_onnx,
    predict,
    time_forward,
    to_onnx,
)

__all__ = [
    "FORMATS",
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
