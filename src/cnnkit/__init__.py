"""cnnkit: convolutional neural networks, as the course teaches them, on PyTorch.

``import cnnkit.shapes`` never imports torch; everything else is loaded lazily
on first use (``cnnkit.summary``, ``cnnkit.models``, ``cnnkit.train.fit``,
``cnnkit.evaluate``, ``cnnkit.predict``, ...).
"""

from __future__ import annotations

import importlib
from typing import Any

from cnnkit.errors import CnnkitError

__version__ = "0.1.0"
__all__ = [
    "CnnkitError",
    "__version__",
    "blocks",
    "data",
    "evaluate",
    "models",
    "predict",
    "shapes",
    "strategy",
    "summary",
    "train",
]

_LAZY_MODULES = {
    "models",
    "blocks",
    "shapes",
    "inspect",
    "cli",
    "data",
    "train",
    "export",
    "strategy",
    "gradcheck",
}


def __getattr__(name: str) -> Any:
    if name == "summary":
        from cnnkit.inspect import summary

        return summary
    if name == "evaluate":  # the metrics package, callable as classify.evaluate
        return importlib.import_module("cnnkit.evaluate")
    if name == "predict":
        from cnnkit.train import classify

        return classify.predict
    if name in _LAZY_MODULES:
        return importlib.import_module(f"cnnkit.{name}")
    raise AttributeError(f"module 'cnnkit' has no attribute {name!r}")
