"""One registry for every model cnnkit can build.

Model files register their builders with :func:`register_model`; users call
:func:`create` and :func:`list_models`. A name can be registered only once.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from cnnkit.errors import CnnkitError, did_you_mean, unknown_name

__all__ = [
    "ModelInfo",
    "conv_features",
    "create",
    "feature_map_shape",
    "get_model_info",
    "list_models",
    "register_model",
]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model.

    Attributes:
        name: Registered name (``"resnet18"``).
        builder: Function ``builder(num_classes=..., in_channels=..., weights=..., **kw)``.
        family: Model family (``"resnet"``); one file per family.
        input_size: Default input as ``(n_H, n_W, n_C)`` (course order).
        test_input: A small input ``(n_H, n_W, n_C)`` used by the generated tests.
        num_classes: Default number of classes.
        paper: Where the architecture comes from.
        torchvision: The torchvision builder with the same ``state_dict`` keys, if any.
        dims: 1, 2 or 3 spatial axes.
        meta: Family-specific facts (e.g. EfficientNet's phi, width, depth, resolution).
    """

    name: str
    builder: Callable[..., nn.Module]
    family: str
    input_size: tuple[int, ...]
    test_input: tuple[int, ...]
    num_classes: int = 1000
    paper: str = ""
    torchvision: str | None = None
    dims: int = 2
    meta: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str,
    *,
    family: str,
    input_size: tuple[int, ...],
    test_input: tuple[int, ...] | None = None,
    num_classes: int = 1000,
    paper: str = "",
    torchvision: str | None = None,
    dims: int = 2,
    meta: dict[str, Any] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a model builder under ``name``.

    Args:
        name: The public name; must not be registered already.
        family: The model family.
        input_size: Default input ``(n_H, n_W, n_C)``.
        test_input: Small input for the generated tests (default ``input_size``).
        num_classes: Default number of classes.
        paper: Reference.
        torchvision: Name of torchvision's matching builder, if any.
        dims: Spatial axes.
        meta: Family-specific facts.

    Returns:
        The decorator (it returns the builder unchanged).

    Raises:
        ValueError: If ``name`` is already registered (a programming error).
    """

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered by {_REGISTRY[name].builder}")
        _REGISTRY[name] = ModelInfo(
            name=name,
            builder=fn,
            family=family,
            input_size=tuple(input_size),
            test_input=tuple(test_input or input_size),
            num_classes=num_classes,
            paper=paper,
            torchvision=torchvision,
            dims=dims,
            meta=dict(meta or {}),
        )
        return fn

    return deco


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted, optionally filtered by a glob pattern.

    Args:
        pattern: e.g. ``"resnet*"`` or ``"*efficientnet*"``; a plain word matches
            as a substring.

    Returns:
        The matching names.
    """
    names = sorted(_REGISTRY, key=_natural)
    if not pattern:
        return names
    if not any(ch in pattern for ch in "*?["):
        pattern = f"*{pattern}*"
    return [n for n in names if fnmatch.fnmatch(n, pattern)]


def _natural(name: str) -> list[Any]:
    """Sort key putting resnet18 before resnet101."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a registered model.

    Args:
        name: Registered name.

    Returns:
        Its info.

    Raises:
        CnnkitError: For an unknown name, with a close-match suggestion.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        err = unknown_name("model", name, _REGISTRY, "cnnkit models")
        hits = did_you_mean(str(name), _REGISTRY)
        swapped = [h for h in hits if sorted(h.lower()) == sorted(str(name).lower())]
        if swapped and hits[0] not in swapped:
            # two letters swapped (resnet81: resnet18) first, before an equally close
            # other name (resnet1d)
            order = [*swapped, *(h for h in hits if h not in swapped)]
            err = CnnkitError(
                f"unknown model {name!r}: did you mean {' or '.join(map(repr, order))}?"
            )
        raise err from None


def create(
    name: str,
    num_classes: int | None = None,
    in_channels: int | None = None,
    weights: str | None = None,
    *,
    trust_pickle: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model, or a network from a layer-list YAML file.

    Args:
        name: Registered name (see :func:`list_models`) or a ``.yaml`` network file.
        num_classes: Number of output classes (default: the model's own).
        in_channels: Input channels ``n_C`` (default: the model's own).
        weights: ``None`` (random init), a local ``.safetensors`` file, a
            torchvision ``.pth`` (read with ``weights_only=True``), or a
            torchvision weights name such as ``"IMAGENET1K_V1"`` or ``"DEFAULT"``.
        trust_pickle: Allow a ``.pth``/``.pt`` that holds Python objects (a full pickle,
            which runs any code it contains) to load, with a warning. Off by default: such
            files are refused and never run.
        **kwargs: Family-specific options (e.g. ``small_input=True`` for ResNets,
            ``alpha=0.5`` for MobileNet v1, ``activation="relu"`` for LeNet-5).

    Returns:
        The model, in training mode, with ``forward_features``, ``forward_head``,
        ``get_classifier`` and ``reset_classifier``.

    Raises:
        CnnkitError: For an unknown name (with a suggestion), bad options or
            unusable weights.
    """
    from cnnkit.models._base import TRUST_PICKLE

    token = TRUST_PICKLE.set(bool(trust_pickle))
    try:
        return _create(name, num_classes, in_channels, weights, kwargs)
    finally:
        TRUST_PICKLE.reset(token)


def _create(
    name: str,
    num_classes: int | None,
    in_channels: int | None,
    weights: str | None,
    kwargs: dict[str, Any],
) -> nn.Module:
    if str(name).endswith((".yaml", ".yml")):
        return _create_from_yaml(str(name), num_classes, in_channels, weights, kwargs)
    info = get_model_info(name)
    if num_classes is not None and (isinstance(num_classes, bool) or int(num_classes) < 1):
        raise CnnkitError(f"num_classes must be a positive integer, got {num_classes!r}.")
    if in_channels is not None and (isinstance(in_channels, bool) or int(in_channels) < 1):
        raise CnnkitError(f"in_channels must be a positive integer, got {in_channels!r}.")
    try:
        model = info.builder(
            num_classes=info.num_classes if num_classes is None else int(num_classes),
            in_channels=info.input_size[-1] if in_channels is None else int(in_channels),
            weights=weights,
            **kwargs,
        )
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            bad = str(e).split("'")[-2] if "'" in str(e) else str(e)
            hits = did_you_mean(bad, _options(info.builder))
            hint = f"did you mean {hits[0]}?" if hits else "see"
            raise CnnkitError(
                f"model {name!r} has no option {bad!r}; {hint} "
                f"help(cnnkit.models.{info.family}) lists its options."
            ) from None
        raise
    model.cnnkit_name = name  # type: ignore[attr-defined]
    return model


def _options(builder: Callable[..., Any]) -> list[str]:
    """A builder's keyword options (and its class's, for builders that pass ``**kw`` on)."""
    import inspect

    names = [
        n
        for n, p in inspect.signature(builder).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    ret = inspect.signature(builder).return_annotation
    cls = getattr(inspect.getmodule(builder), ret, None) if isinstance(ret, str) else ret
    if isinstance(cls, type):
        names += [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
    return [n for n in dict.fromkeys(names) if n not in ("num_classes", "in_channels", "weights")]


def _create_from_yaml(
    path: str,
    num_classes: int | None,
    in_channels: int | None,
    weights: str | None,
    kwargs: dict[str, Any],
) -> nn.Module:
    from cnnkit.models._base import load_weights
    from cnnkit.models.sequential import from_yaml

    if kwargs:
        raise CnnkitError(f"a YAML network takes no options, got {sorted(kwargs)}.")
    model = from_yaml(path, num_classes=num_classes, in_channels=in_channels)
    if weights is not None:
        load_weights(model, weights, model_name=path)
    return model


def conv_features(name: str, in_channels: int = 3, weights: str | None = None) -> nn.Module:
    """A zoo model's convolutional part: its ``features``, or its layers before the global pool.

    Detection grids, face embeddings and U-Net encoders are built on it. Networks without
    a ``features`` block (ResNet, GoogLeNet) give their children up to the first global
    pool, flatten or linear layer, leaving out GoogLeNet's training-only side heads.

    Args:
        name: A registered model name.
        in_channels: ``n_C`` of the inputs.
        weights: Passed to :func:`create` (a local file), or None.

    Returns:
        A module mapping ``(B, n_C, n_H, n_W)`` to a feature map ``(B, C', n_H', n_W')``.
    """
    m = create(name, num_classes=2, in_channels=in_channels, weights=weights)
    net = getattr(m, "features", None)
    if net is not None:
        return net
    kids = []
    for child, c in m.named_children():
        if isinstance(c, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Linear)):
            break
        if not child.startswith("aux"):  # GoogLeNet's training-only side heads
            kids.append(c)
    return nn.Sequential(*kids)


def feature_map_shape(
    net: nn.Module, name: str, in_channels: int, size: int, default: str
) -> tuple[int, ...]:
    """The ``(C, n_H', n_W')`` map a backbone gives for ``size x size`` images, or one sentence.

    Args:
        net: The feature extractor (left in training mode afterwards).
        name: Its name as the user gave it (for the message).
        in_channels: ``n_C`` of the images.
        size: Image side.
        default: The task's own small backbone, suggested instead.

    Returns:
        The output shape without the batch axis.

    Raises:
        CnnkitError: When the network fails on that input or gives no convolutional map.
    """
    import torch

    try:
        with torch.no_grad():
            z = net.eval()(torch.zeros(1, in_channels, size, size))
    except Exception as e:  # any failure: this backbone cannot take the size
        raise CnnkitError(
            f"backbone={name} cannot take {size}x{size}x{in_channels} images ({e}); try a "
            f"larger size= or backbone={default}."
        ) from e
    finally:
        net.train()
    if z.ndim != 4 or not len(list(net.parameters())):
        raise CnnkitError(
            f"backbone={name} gives no convolutional map (output {tuple(z.shape)}); use "
            f"backbone={default} or a convolutional zoo model such as vgg11 or resnet18."
        )
    return tuple(int(v) for v in z.shape[1:])
