"""What every cnnkit classifier shares: a replaceable head, input-channel adaptation, weights.

Every classifier exposes ``forward_features(x)`` (the last feature map, before
global pooling and the head), ``forward_head(features)``, ``get_classifier()``
and ``reset_classifier(num_classes)`` (transfer learning builds on these).
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnkit._safe_io import check_size, first_line, torch_load
from cnnkit.errors import CnnkitError, unknown_name

__all__ = [
    "ClassifierMixin",
    "adapt_in_channels",
    "finish",
    "first_conv_name",
    "load_weights",
    "read_state_dict",
]


class ClassifierMixin:
    """Head access shared by the zoo's classifiers.

    Subclasses set ``classifier_path``: the dotted name of the final ``nn.Linear``.
    """

    classifier_path: str = "fc"

    def get_classifier(self) -> nn.Linear:
        """The final fully connected layer (the softmax's logits).

        Returns:
            The ``nn.Linear`` producing the class scores.
        """
        return self.get_submodule(self.classifier_path)  # type: ignore[attr-defined]

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised one for ``num_classes`` classes.

        Args:
            num_classes: New number of classes.
        """
        if isinstance(num_classes, bool) or int(num_classes) < 1:
            raise CnnkitError(f"num_classes must be a positive integer, got {num_classes!r}.")
        old = self.get_classifier()
        new = nn.Linear(old.in_features, int(num_classes), bias=old.bias is not None)
        set_submodule(self, self.classifier_path, new)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``forward_head(forward_features(x))``: the class scores (logits)."""
        return self.forward_head(self.forward_features(x))  # type: ignore[attr-defined]

    @property
    def num_classes(self) -> int:
        """Number of classes the head predicts."""
        return self.get_classifier().out_features


def set_submodule(model: nn.Module, dotted: str, new: nn.Module) -> None:
    """Replace the submodule at a dotted path (``"features.0.0"``).

    Args:
        model: The root module.
        dotted: Path of the module to replace.
        new: The replacement.
    """
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def first_conv_name(model: nn.Module) -> str | None:
    """Dotted name of the first convolution registered in ``model`` (``None`` if it has none)."""
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return name
    return None


def _adapt_weight(w: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a stem filter bank (n_C, n_C_prev, f, f) to ``in_channels`` inputs.

    One channel: the sum over RGB (a grey image then gives the same response as
    the equivalent colour image). Otherwise: cycle the channels and rescale so
    the expected response magnitude stays the same.
    """
    c_prev = w.shape[1]
    if in_channels == c_prev:
        return w
    if in_channels == 1:
        return w.sum(dim=1, keepdim=True)
    reps = -(-in_channels // c_prev)
    return w.repeat(1, reps, *([1] * (w.dim() - 2)))[:, :in_channels] * (c_prev / in_channels)


def adapt_in_channels(model: nn.Module, in_channels: int) -> nn.Module:
    """Change the input channels of the model's first convolution, in place.

    Args:
        model: A model whose stem is its first registered convolution.
        in_channels: New ``n_C`` of the input.

    Returns:
        The same model.
    """
    name = first_conv_name(model)
    if name is None:
        raise CnnkitError(
            f"{type(model).__name__} has no convolution whose input channels to change."
        )
    conv = model.get_submodule(name)
    if conv.in_channels == in_channels:
        return model
    if conv.groups != 1:
        raise CnnkitError(f"cannot change the input channels of grouped conv {name!r}.")
    new = type(conv)(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    with torch.no_grad():
        new.weight.copy_(_adapt_weight(conv.weight, in_channels))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    set_submodule(model, name, new)
    return model


# set by ``create(..., trust_pickle=True)`` for the duration of one build
TRUST_PICKLE: ContextVar[bool] = ContextVar("cnnkit_trust_pickle", default=False)


def read_state_dict(
    path: str | os.PathLike, *, trust_pickle: bool | None = None
) -> dict[str, torch.Tensor]:
    """Read weights from a ``.safetensors`` file or a ``.pth/.pt`` (``weights_only=True``).

    The size is checked before reading; a pickle holding Python objects is refused
    (never run) unless ``trust_pickle`` is true, and then loaded with a warning.

    Args:
        path: The file.
        trust_pickle: Load a ``.pth``/``.pt`` full pickle (runs any code in it); None:
            the setting of the ``create`` call in progress (default False).

    Returns:
        The state dict (tensors on the CPU).

    Raises:
        CnnkitError: If the file is missing, too large, a refused pickle, or not a
            weights file.
    """
    p = check_size(path, "weights file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except Exception as e:  # safetensors' own error type changed name across versions
            raise CnnkitError(
                f"cannot read weights file {str(p)!r}: {first_line(e)} (truncated or not "
                "a safetensors file?)."
            ) from None
    if p.suffix in {".pth", ".pt", ".bin"}:
        trust = TRUST_PICKLE.get() if trust_pickle is None else trust_pickle
        obj = torch_load(p, "weights file", trust_pickle=trust, fix=" (truncated?)")
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
        if isinstance(obj, nn.Module) and trust:  # a whole pickled model: take its weights
            obj = obj.state_dict()
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CnnkitError(f"{str(p)!r} does not hold a state dict of tensors.")
        return obj
    raise CnnkitError(
        f"weights file {str(p)!r} has an unknown format; use .safetensors or a .pth state dict."
    )


def is_weights_file(weights: str | os.PathLike) -> bool:
    """Whether a ``weights=`` setting names a file rather than a torchvision weights name.

    Args:
        weights: The setting (``runs/x/best.safetensors``, ``IMAGENET1K_V1``, ...).

    Returns:
        True for a path (a separator or a weights suffix) or an existing file.
    """
    w = str(weights)
    looks_like_file = os.sep in w or "/" in w or Path(w).suffix in {".safetensors", ".pth", ".pt"}
    return looks_like_file or Path(w).exists()


def _torchvision_state_dict(tv_name: str | None, weights: str, model_name: str) -> dict:
    if tv_name is None:
        raise CnnkitError(
            f"{model_name} has no torchvision pretrained weights; pass weights=FILE.safetensors."
        )
    import torchvision.models as tvm

    enum = tvm.get_model_weights(tv_name)
    short = weights.split(".", 1)[1] if weights.startswith(enum.__name__ + ".") else weights
    choices = [m for m in enum.__members__]
    if short not in enum.__members__:
        raise unknown_name(f"weights for {model_name}", weights, [*choices, "DEFAULT"])
    w = enum[short]
    fname = Path(w.url).name
    cached = Path(torch.hub.get_dir()) / "checkpoints" / fname
    if cached.is_file():
        return read_state_dict(cached, trust_pickle=False)  # torchvision's files are tensors
    try:
        return w.get_state_dict(progress=False, check_hash=True)
    except Exception as e:
        raise CnnkitError(
            f"cannot download {w} ({type(e).__name__}: no network?); download {w.url} "
            f"elsewhere and pass weights=PATH/{fname}."
        ) from None


def load_weights(
    model: nn.Module,
    weights: str | os.PathLike,
    *,
    torchvision_name: str | None = None,
    model_name: str = "model",
) -> list[str]:
    """Load weights into ``model``: a file, or a torchvision weights name.

    A head with a different number of classes is kept freshly initialised
    (transfer learning); a stem with 3 input channels is adapted to the model's
    ``n_C``. Anything else that does not fit is an error: the weights are for
    another architecture.

    Args:
        model: The freshly built model.
        weights: ``.safetensors`` / ``.pth`` path, or a name like ``"IMAGENET1K_V1"``.
        torchvision_name: torchvision builder name, for weights names.
        model_name: The name used in messages.

    Returns:
        The keys left at their initial values (a replaced head).

    Raises:
        CnnkitError: If the weights cannot be read or do not fit.
    """
    w = str(weights)
    if is_weights_file(w):
        sd = read_state_dict(w)
    else:
        sd = _torchvision_state_dict(torchvision_name, w, model_name)
    own = model.state_dict()
    head_prefix = getattr(model, "classifier_path", None)
    stem_conv = first_conv_name(model)
    stem = f"{stem_conv}.weight" if stem_conv is not None else ""
    optional = tuple(getattr(model, "optional_prefixes", ()))
    missing = [
        k
        for k in own
        if k not in sd and not k.endswith("num_batches_tracked") and not k.startswith(optional)
    ]
    unexpected = [k for k in sd if k not in own and not (optional and k.startswith(optional))]
    skipped: list[str] = []
    fixed: dict[str, Any] = {}
    bad_shape = []
    for k, v in sd.items():
        if k not in own:
            continue
        if own[k].shape == v.shape:
            fixed[k] = v
        elif k == stem and v.dim() == own[k].dim() and v.shape[0] == own[k].shape[0]:
            fixed[k] = _adapt_weight(v, own[k].shape[1])
        elif head_prefix and k.startswith(head_prefix + "."):
            skipped.append(k)
        else:
            bad_shape.append(f"{k}: weights {tuple(v.shape)} vs model {tuple(own[k].shape)}")
    if missing or unexpected or bad_shape:
        parts = []
        if bad_shape:
            parts.append(f"{len(bad_shape)} shapes differ (e.g. {bad_shape[0]})")
        if missing:
            parts.append(f"{len(missing)} keys missing (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]!r})")
        raise CnnkitError(
            f"weights {w!r} do not fit {model_name}: {'; '.join(parts)}; "
            "they are probably for another architecture."
        )
    model.load_state_dict({**own, **fixed})
    return skipped


def finish(
    model: nn.Module,
    *,
    name: str,
    torchvision_name: str | None = None,
    in_channels: int,
    weights: str | None,
) -> nn.Module:
    """Adapt the stem to ``in_channels``, then load ``weights`` if given.

    Every builder ends here. A model without convolutions (``logistic``, ``mlp``)
    is built for its ``in_channels`` already and has no stem to adapt.

    Args:
        model: The freshly built model.
        name: cnnkit name, for messages.
        torchvision_name: torchvision builder with the same keys, for weights names.
        in_channels: Wanted input channels.
        weights: ``None``, a file or a torchvision weights name.

    Returns:
        The model.
    """
    if first_conv_name(model) is not None:
        adapt_in_channels(model, in_channels)
    model.torchvision_name = torchvision_name  # type: ignore[assignment]  # its weights' preprocessing
    if weights is not None:
        load_weights(model, weights, torchvision_name=torchvision_name, model_name=name)
    return model
