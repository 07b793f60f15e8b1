"""Mobile blocks: depthwise-separable conv (MobileNet v1), inverted residual (v2), MBConv."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch.nn as nn
from torchvision.models.efficientnet import MBConv as _TVMBConv
from torchvision.models.efficientnet import MBConvConfig
from torchvision.models.mobilenetv2 import InvertedResidual as _TVInvertedResidual
from torchvision.ops import SqueezeExcitation

from cnnkit.blocks._checks import positive_int
from cnnkit.blocks.conv import Activation, ConvBNAct
from cnnkit.errors import CnnkitError

__all__ = ["DepthwiseSeparableConv", "InvertedResidual", "MBConv", "SqueezeExcitation"]


def _check_stride_1_or_2(s: object) -> int:
    positive_int("s (the stride)", s)
    if s not in (1, 2):
        raise CnnkitError(f"s (the stride) must be 1 or 2 in a mobile block, got {s}.")
    return s  # type: ignore[return-value]


def _check_expand_ratio(t: object) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0:
        raise CnnkitError(
            f"expand_ratio must be a positive number (1 for no expansion, 6 in MobileNet v2), "
            f"got {t!r}."
        )
    return float(t)


class DepthwiseSeparableConv(nn.Sequential):
    """MobileNet v1's block: a depthwise ``f x f`` conv, then a pointwise ``1x1`` conv.

    The depthwise conv applies one ``f x f`` filter per input channel
    (``groups = n_C_prev``, no bias), followed by batch norm and the activation;
    the pointwise conv mixes channels with ``n_C`` filters of size
    ``1 x 1 x n_C_prev`` (no bias), followed by batch norm and the activation.
    Compared with one ``f x f`` conv this costs ``1/n_C + 1/f^2`` as much
    (see :func:`cnnkit.shapes.depthwise_separable_macs`).

    Parameters: ``f*f*n_C_prev + 2*n_C_prev + n_C_prev*n_C + 2*n_C``.

    Args:
        in_channels: ``n_C_prev``.
        out_channels: ``n_C``.
        f: Depthwise filter size (padding ``(f - 1)//2``).
        s: Stride of the depthwise conv.
        act: Activation after each batch norm (see :class:`ConvBNAct`).

    Attributes:
        depthwise: The depthwise :class:`ConvBNAct`.
        pointwise: The pointwise :class:`ConvBNAct`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        f: int = 3,
        s: int = 1,
        act: Activation = "relu",
    ) -> None:
        positive_int("in_channels", in_channels)
        depthwise = ConvBNAct(in_channels, in_channels, f=f, s=s, groups=in_channels, act=act)
        pointwise = ConvBNAct(in_channels, out_channels, f=1, act=act)
        super().__init__(OrderedDict(depthwise=depthwise, pointwise=pointwise))
        self.in_channels = in_channels
        self.out_channels = out_channels


class InvertedResidual(_TVInvertedResidual):
    """MobileNet v2's inverted residual (bottleneck) block: torchvision's ``InvertedResidual``.

    Expansion ``1x1`` conv to ``n_C_prev * t`` channels (skipped when ``t = 1``),
    a depthwise ``3x3`` conv with stride ``s``, and a *linear* projection ``1x1``
    conv back to ``out_channels`` (batch norm, no activation); ReLU6 after the
    first two. The residual connection is added only when ``s == 1`` and
    ``in_channels == out_channels`` (:attr:`use_res_connect`).

    Args:
        in_channels: ``n_C_prev``.
        out_channels: ``n_C`` of the output.
        s: Stride of the depthwise conv, 1 or 2.
        expand_ratio: Expansion factor ``t`` (6 in MobileNet v2).

    Raises:
        CnnkitError: On a stride other than 1 or 2, or a non-positive size.
    """

    def __init__(
        self, in_channels: int, out_channels: int, s: int = 1, expand_ratio: float = 6
    ) -> None:
        positive_int("in_channels", in_channels)
        positive_int("out_channels", out_channels)
        _check_stride_1_or_2(s)
        t = _check_expand_ratio(expand_ratio)
        if round(in_channels * t) < 1:
            raise CnnkitError(
                f"expand_ratio={expand_ratio} leaves no channels for in_channels={in_channels}: "
                "use expand_ratio >= 1."
            )
        super().__init__(in_channels, out_channels, s, expand_ratio)
        self.in_channels = in_channels
        self.expand_ratio = expand_ratio


class _ExactConfig(MBConvConfig):
    """``MBConvConfig`` without torchvision's rounding of channels to multiples of 8.

    The expanded width is exactly ``round(n_C_prev * t)``, as the course writes
    it; for EfficientNet's own widths (multiples of 8) this is the same number.
    """

    @staticmethod
    def adjust_channels(channels: int, width_mult: float, min_value: int | None = None) -> int:
        return max(1, round(channels * width_mult))


def _se_layer(in_channels: int, se_ratio: float | None) -> Callable[..., nn.Module]:
    def build(
        expanded_channels: int, squeeze_channels: int, activation: Callable[..., nn.Module]
    ) -> nn.Module:
        if not se_ratio:
            return nn.Identity()
        return SqueezeExcitation(
            expanded_channels, max(1, int(in_channels * se_ratio + 1e-9)), activation=activation
        )

    return build


class MBConv(_TVMBConv):
    """EfficientNet's MBConv block: torchvision's ``MBConv`` with course-style arguments.

    Expansion ``1x1`` conv to ``n_C_prev * t`` channels (skipped when ``t = 1``),
    depthwise ``f x f`` conv with stride ``s``, squeeze-and-excitation
    (global average pool -> 1x1 conv to ``max(1, n_C_prev * se_ratio)`` channels
    -> SiLU -> 1x1 conv back -> sigmoid, scaling each channel), then a linear
    ``1x1`` projection to ``out_channels``. Activations are SiLU (swish). When
    ``s == 1`` and ``in_channels == out_channels`` the input is added back,
    after stochastic depth (which drops the whole residual branch of a sample
    with probability ``stochastic_depth_prob`` during training).

    Submodules and ``state_dict`` keys are torchvision's (``block.0.0.weight``,
    ...). Unlike torchvision's ``MBConvConfig``, channel counts are not rounded
    to multiples of 8.

    Args:
        in_channels: ``n_C_prev``.
        out_channels: ``n_C`` of the output.
        f: Depthwise filter size (3 or 5 in EfficientNet; padding ``(f - 1)//2``).
        s: Stride of the depthwise conv, 1 or 2.
        expand_ratio: Expansion factor ``t``.
        se_ratio: Squeeze channels as a fraction of ``in_channels`` (torchvision
            uses ``in_channels // 4``, i.e. 0.25); 0 or ``None`` for no SE.
        stochastic_depth_prob: Probability of dropping the residual branch.

    Raises:
        CnnkitError: On a stride other than 1 or 2, or an out-of-range ratio.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        f: int = 3,
        s: int = 1,
        expand_ratio: float = 6,
        se_ratio: float | None = 0.25,
        stochastic_depth_prob: float = 0.0,
    ) -> None:
        positive_int("in_channels", in_channels)
        positive_int("out_channels", out_channels)
        positive_int("f (the filter size)", f)
        _check_stride_1_or_2(s)
        t = _check_expand_ratio(expand_ratio)
        if se_ratio is not None and not 0 <= se_ratio <= 1:
            raise CnnkitError(f"se_ratio must be between 0 and 1 (0.25 is usual), got {se_ratio}.")
        if not 0 <= stochastic_depth_prob <= 1:
            raise CnnkitError(
                f"stochastic_depth_prob must be between 0 and 1, got {stochastic_depth_prob}."
            )
        cnf = _ExactConfig(t, f, s, in_channels, out_channels, num_layers=1)
        super().__init__(
            cnf,
            stochastic_depth_prob,
            norm_layer=nn.BatchNorm2d,
            se_layer=_se_layer(in_channels, se_ratio),
        )
        self.in_channels = in_channels
        self.expand_ratio = expand_ratio
