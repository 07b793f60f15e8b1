"""Starting weights and the preprocessing that travels with them.

Weights only work with the inputs they were trained on: the same size, channels, mean
and standard deviation (Keras's ``preprocess_input`` is the classic place this goes
silently wrong). :func:`load_source` reads the weights together with that preprocessing:

- a cnnkit run folder or cnnkit ``.safetensors``: the architecture, its options, the
  classes and the preprocessing are in the file's metadata;
- a torchvision weights name (``IMAGENET1K_V1``, when online or in torch's hub cache) or a
  torchvision ``.pth`` (read with ``weights_only=True``): torchvision's own transform for
  those weights (crop size, ImageNet mean and std, interpolation).

:func:`check_preprocess` refuses data prepared otherwise, in one sentence.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnkit.data import Data, Preprocess
from cnnkit.errors import CnnkitError

__all__ = ["Source", "check_preprocess", "load_source", "with_preprocess"]


@dataclass
class Source:
    """Pretrained weights, loaded into their own architecture.

    Attributes:
        model: The network with the weights (its original head).
        name: The registered model name.
        model_args: The model's options.
        preprocess: What the weights expect (None when the file does not say).
        classes: The classes the head was trained on (None when unknown).
        origin: Where the weights came from, for messages.
        interpolation: How images were resized for these weights (``bilinear``).
    """

    model: nn.Module
    name: str
    model_args: dict[str, Any]
    preprocess: Preprocess | None
    classes: list[str] | None
    origin: str
    interpolation: str = "bilinear"


def _is_cnnkit_file(path: Path) -> bool:
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return "preprocess" in meta and "model" in meta


def load_source(
    pretrained: str | os.PathLike,
    model: str = "lenet5",
    model_args: dict[str, Any] | None = None,
) -> Source:
    """Read pretrained weights and the preprocessing they expect.

    Args:
        pretrained: A run folder, a cnnkit ``.safetensors``, a torchvision ``.pth`` or
            weights name.
        model: The architecture for a ``.pth`` or a weights name (a cnnkit file names its
            own; if ``model`` is another, that is refused).
        model_args: The model's options for a ``.pth`` or weights name.

    Returns:
        A :class:`Source`.
    """
    from cnnkit.models import create
    from cnnkit.train.classify import load_run_model

    p = Path(str(pretrained))
    if p.is_dir() or _is_cnnkit_file(p):
        net, meta = load_run_model(p if p.is_dir() else None, None if p.is_dir() else p)
        name = str(meta["model"])
        if model not in (name, "lenet5"):  # lenet5: the default, not a choice
            raise CnnkitError(
                f"pretrained={str(p)!r} holds a {name}, not a {model}; pass model={name} "
                "(or weights for a " + model + ")."
            )
        return Source(
            net.train(),
            name,
            dict(meta.get("model_args") or {}),
            Preprocess.from_dict(meta["preprocess"]),
            list(meta["classes"]),
            str(p),
        )
    if p.suffix == ".safetensors" and not p.is_file():
        raise CnnkitError(f"pretrained={str(p)!r} does not exist; pass a run folder or a file.")
    torch.manual_seed(0)
    net = create(model, weights=str(pretrained), **(model_args or {}))
    pre, interp = _torchvision_preprocess(net)
    return Source(net, model, dict(model_args or {}), pre, None, str(pretrained), interp)


def _torchvision_preprocess(net: nn.Module) -> tuple[Preprocess | None, str]:
    """What torchvision's default weights for this architecture expect (no download)."""
    tv_name = getattr(net, "torchvision_name", None)
    if tv_name is None:
        return None, "bilinear"
    import torchvision.models as tvm

    t = tvm.get_model_weights(tv_name).DEFAULT.transforms()
    size = int(t.crop_size[0])
    interp = str(getattr(t.interpolation, "value", t.interpolation))
    pre = Preprocess(
        (size, size), 3, tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std)
    )
    return pre, interp


def check_preprocess(expected: Preprocess, got: Preprocess, origin: str = "the weights") -> None:
    """Refuse inputs prepared for other weights: another size or number of channels.

    Args:
        expected: What the weights expect.
        got: How the data is prepared.
        origin: The weights, for the message.
    """
    if tuple(got.size) != tuple(expected.size):
        raise CnnkitError(
            f"{origin} expect {expected.size[0]}x{expected.size[1]} inputs, the data is "
            f"prepared at {got.size[0]}x{got.size[1]}; drop size= (the weights' size is "
            "used) or load the data with size="
            f"{expected.size[0]}."
        )
    if got.channels != expected.channels:
        raise CnnkitError(
            f"{origin} expect {expected.channels}-channel inputs, the data has "
            f"{got.channels}; load it with channels={expected.channels}."
        )


def with_preprocess(data: Data, pre: Preprocess) -> Data:
    """The same data normalized with the weights' mean and std (every split, in place).

    Args:
        data: Loaded at the weights' size and channels.
        pre: The weights' preprocessing.

    Returns:
        ``data``.
    """
    check_preprocess(pre, data.info.preprocess)
    data.info.preprocess = pre
    for ds in data.splits().values():
        ds.preprocess = pre
    return data
