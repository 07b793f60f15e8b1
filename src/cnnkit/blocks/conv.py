"""Conv -> batch norm -> activation, the unit every ConvNet in the course is built from."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable

import torch.nn as nn
from torchvision.ops.misc import ConvNormActivation

from cnnkit import shapes
from cnnkit.blocks._checks import check_dims, check_groups, per_axis, positive_int
from cnnkit.errors import CnnkitError, unknown_name

__all__ = ["ACTIVATIONS", "Activation", "ConvBNAct", "resolve_activation"]

#: Activation names accepted wherever a block takes ``act=``.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
}

Activation = str | None | type[nn.Module] | nn.Module | Callable[..., nn.Module]

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _takes_inplace(factory: Callable[..., nn.Module]) -> bool:
    target = factory.__init__ if isinstance(factory, type) else factory
    try:
        return "inplace" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


def resolve_activation(act: Activation) -> tuple[Callable[..., nn.Module] | None, bool | None]:
    """Turn an ``act=`` argument into a layer factory and its ``inplace`` setting.

    Args:
        act: A name from :data:`ACTIVATIONS` (case-insensitive), ``None`` for no
            activation (a linear layer), an ``nn.Module`` class (or any callable
            returning a module), or a module instance (copied into each block).

    Returns:
        ``(factory, inplace)`` as ``torchvision.ops.misc.ConvNormActivation``
        takes them: ``inplace`` is ``True`` when the layer accepts it, else ``None``.

    Raises:
        CnnkitError: On an unknown activation name (with a close-match suggestion).
    """
    if act is None:
        return None, None
    if isinstance(act, str):
        key = act.lower()
        if key not in ACTIVATIONS:
            raise unknown_name("activation", act, ACTIVATIONS)
        factory: Callable[..., nn.Module] = ACTIVATIONS[key]
    elif isinstance(act, nn.Module):
        module = act

        def factory() -> nn.Module:
            return copy.deepcopy(module)

        return factory, None
    elif callable(act):
        if isinstance(act, type) and not issubclass(act, nn.Module):
            raise CnnkitError(
                f"act must be an activation name or a torch.nn.Module class, got the class "
                f"{act.__name__}."
            )
        factory = act
    else:
        raise CnnkitError(
            f"act must be an activation name such as 'relu', None or a torch.nn.Module class, "
            f"got {act!r}."
        )
    return factory, (True if _takes_inplace(factory) else None)


class ConvBNAct(ConvNormActivation):
    """Convolution -> batch norm -> activation, in 1D, 2D or 3D.

    The course's standard layer: ``n_C`` filters of size ``f x f x n_C_prev``
    slide with stride ``s`` over the input padded by ``p``, giving
    ``floor((n + 2p - f)/s) + 1`` per spatial axis (see
    :func:`cnnkit.shapes.conv_output_size`). Batch norm then normalises each
    channel with a learned ``gamma`` and ``beta``, so the conv has no bias
    (``beta`` plays its part); without batch norm the conv keeps its bias.

    This *is* ``torchvision.ops.misc.ConvNormActivation`` (the base of
    ``Conv2dNormActivation``), so its ``state_dict`` keys (``0.weight``,
    ``1.running_mean``, ...) match torchvision's blocks.

    Args:
        in_channels: ``n_C_prev``, channels of the input.
        out_channels: ``n_C``, the number of filters.
        f: Filter size, an int or one per axis.
        s: Stride, an int or one per axis.
        p: Padding per side: ``None`` for 'same'-style ``d*(f - 1)//2`` (exactly
            'same' at ``s=1`` for an odd ``f``), an int or one per axis, or
            ``"same"`` / ``"valid"``.
        d: Dilation, an int or one per axis.
        groups: Channel groups (``in_channels`` gives a depthwise conv).
        act: Activation: one of ``relu, relu6, silu, swish (= silu), tanh,
            sigmoid, leaky_relu, gelu``, ``None`` for none, or an ``nn.Module`` class.
        bn: Whether to add batch norm after the conv.
        dims: 1, 2 or 3 spatial dimensions (``Conv1d``, ``Conv2d`` or ``Conv3d``).

    Raises:
        CnnkitError: On an unknown activation, a non-positive size or stride,
            ``groups`` not dividing the channels, or ``dims`` not in 1, 2, 3.
    """

    # TorchScript compiles forward() only; it skips these Python-side properties.
    __jit_unused_properties__ = ("conv", "bn", "act")

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        f: int | tuple[int, ...] = 3,
        s: int | tuple[int, ...] = 1,
        p: int | tuple[int, ...] | str | None = None,
        d: int | tuple[int, ...] = 1,
        groups: int = 1,
        act: Activation = "relu",
        bn: bool = True,
        dims: int = 2,
    ) -> None:
        dims = check_dims(dims)
        positive_int("in_channels", in_channels)
        positive_int("out_channels", out_channels)
        ks = per_axis("f (the filter size)", f, dims)
        ss = per_axis("s (the stride)", s, dims)
        ds = per_axis("d (the dilation)", d, dims)
        check_groups(in_channels, out_channels, groups)
        if p is None:
            pads = tuple(di * (fi - 1) // 2 for fi, di in zip(ks, ds, strict=True))
        elif isinstance(p, str):
            pads = shapes.padding(p, ks, ds)  # type: ignore[assignment]
        else:
            pads = per_axis("p (the padding)", p, dims, minimum=0)
        factory, inplace = resolve_activation(act)
        super().__init__(
            in_channels,
            out_channels,
            kernel_size=ks,
            stride=ss,
            padding=pads,
            groups=groups,
            norm_layer=_BN[dims] if bn else None,
            activation_layer=factory,
            dilation=ds,
            inplace=inplace,
            bias=not bn,
            conv_layer=_CONV[dims],
        )
        self.in_channels = in_channels
        self.dims = dims
        self._has_bn = bool(bn)
        self._has_act = factory is not None

    @property
    def conv(self) -> nn.Module:
        """The convolution layer."""
        return self[0]

    @property
    def bn(self) -> nn.Module | None:
        """The batch norm layer, or ``None`` when built with ``bn=False``."""
        return self[1] if self._has_bn else None

    @property
    def act(self) -> nn.Module | None:
        """The activation layer, or ``None`` when built with ``act=None``."""
        return self[-1] if self._has_act else None
