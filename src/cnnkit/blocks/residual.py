"""Residual blocks (ResNet): a[l+2] = g(z[l+2] + a[l]), built as torchvision's blocks.

2D blocks are torchvision's exactly; ``dims=1`` or ``dims=3`` builds the same block
with ``Conv1d``/``BatchNorm1d`` (signals) or ``Conv3d``/``BatchNorm3d`` (volumes).
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from cnnkit.blocks._checks import check_dims, choice, positive_int
from cnnkit.blocks.conv import _BN, _CONV
from cnnkit.errors import CnnkitError

__all__ = ["BasicResidualBlock", "BottleneckResidualBlock", "ResidualBlock"]

_SHORTCUTS = ("auto", "identity", "projection")


def _shortcut(
    in_channels: int, out_channels: int, s: int, shortcut: str, dims: int = 2
) -> nn.Module | None:
    """Build ``W_s`` (1x1 conv, stride ``s``, + batch norm) or ``None`` for the identity."""
    choice("shortcut", shortcut, _SHORTCUTS)
    positive_int("s (the stride)", s)
    same_shape = s == 1 and in_channels == out_channels
    if shortcut == "identity" and not same_shape:
        raise CnnkitError(
            f"an identity shortcut needs a[l] and a[l+2] to have the same shape, but this block "
            f"maps {in_channels} to {out_channels} channels with stride s={s}: "
            "use shortcut='projection' (or 'auto')."
        )
    if shortcut == "projection" or (shortcut == "auto" and not same_shape):
        # torchvision's `downsample`: conv1x1 (stride s, no bias) then batch norm.
        if dims == 2:
            return nn.Sequential(
                conv1x1(in_channels, out_channels, s), nn.BatchNorm2d(out_channels)
            )
        return nn.Sequential(
            _CONV[dims](in_channels, out_channels, kernel_size=1, stride=s, bias=False),
            _BN[dims](out_channels),
        )
    return None


def _conv(dims: int, c_in: int, c_out: int, f: int, s: int = 1) -> nn.Module:
    """A bias-free ``dims``-D conv with padding ``(f - 1)/2`` (torchvision's conv3x3 / conv1x1)."""
    return _CONV[dims](c_in, c_out, kernel_size=f, stride=s, padding=(f - 1) // 2, bias=False)


class ResidualBlock(nn.Module):
    """A ResNet residual block: ``a[l+2] = relu(F(a[l]) + shortcut(a[l]))``.

    Calling ``ResidualBlock(...)`` builds a :class:`BasicResidualBlock` (two 3x3
    convs, ``kind="basic"``) or a :class:`BottleneckResidualBlock` (1x1 -> 3x3 ->
    1x1, ``kind="bottleneck"``). Both are subclasses of this class *and* of
    torchvision's ``BasicBlock`` / ``Bottleneck``, so their ``state_dict`` keys
    (``conv1.weight``, ``bn1.*``, ``downsample.0.weight``, ...) are torchvision's
    and ResNet weights load into them.

    The shortcut (skip connection) adds ``a[l]`` unchanged when it has the same
    shape as the main path's output. When it does not (``s > 1`` or a different
    ``n_C``), a projection ``W_s a[l]`` makes the shapes match: a 1x1 conv with
    stride ``s`` and batch norm (torchvision's ``downsample``), adding
    ``in_channels*out_channels + 2*out_channels`` parameters.

    Args:
        in_channels: ``n_C`` of ``a[l]``.
        out_channels: ``n_C`` of ``a[l+2]``. For a bottleneck this is the block's
            output (``4 x`` the inner width, torchvision's ``planes * 4``), so it
            must be divisible by 4.
        s: Stride of the block (2 halves ``n_H`` and ``n_W``). Torchvision puts it
            on the first 3x3 conv (and, for the bottleneck, on its 3x3 conv, the
            "ResNet v1.5" variant).
        kind: ``"basic"`` or ``"bottleneck"``.
        shortcut: ``"auto"`` (identity when shapes match, else projection),
            ``"identity"`` or ``"projection"``.
        dims: Spatial axes: 2 (images, torchvision's block, the default), 1
            (signals ``(B, C, L)``: ``Conv1d``, ``BatchNorm1d``, filters of size 3)
            or 3 (volumes ``(B, C, D, H, W)``: ``Conv3d``, ``BatchNorm3d``, 3x3x3
            filters). The shortcut and ``state_dict`` keys are the same in every case.

    Raises:
        CnnkitError: On an unknown ``kind`` or ``shortcut``, an identity shortcut
            between different shapes, a bottleneck ``out_channels`` not
            divisible by 4, or ``dims`` not in 1, 2, 3.
    """

    # TorchScript compiles forward() only; it skips these Python-side properties.
    __jit_unused_properties__ = ("uses_projection",)

    def __new__(cls, *args: Any, **kwargs: Any) -> ResidualBlock:
        if cls is ResidualBlock:
            kind = kwargs.get("kind", args[3] if len(args) > 3 else "basic")
            cls = _KINDS[choice("residual block kind", kind, _KINDS)]
        return super().__new__(cls)

    @property
    def uses_projection(self) -> bool:
        """Whether the shortcut is the projection ``W_s`` (else the identity)."""
        return self.downsample is not None  # type: ignore[attr-defined]


class BasicResidualBlock(ResidualBlock, BasicBlock):
    """Two 3x3 conv-BN layers with a shortcut: torchvision's ``BasicBlock`` (ResNet-18/34).

    ``a[l+2] = relu(bn2(conv2(relu(bn1(conv1(a[l]))))) + shortcut(a[l]))``.
    See :class:`ResidualBlock` for the arguments.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        s: int = 1,
        kind: str = "basic",
        shortcut: str = "auto",
        dims: int = 2,
    ) -> None:
        if kind != "basic":
            raise CnnkitError(
                f"BasicResidualBlock is kind 'basic', got kind={kind!r}: use ResidualBlock(...)."
            )
        dims = check_dims(dims)
        positive_int("in_channels", in_channels)
        positive_int("out_channels", out_channels)
        downsample = _shortcut(in_channels, out_channels, s, shortcut, dims)
        super().__init__(
            in_channels, out_channels, stride=s, downsample=downsample, norm_layer=_BN[dims]
        )
        if dims != 2:  # the same block with 1D / 3D filters (torchvision's are 2D)
            self.conv1 = _conv(dims, in_channels, out_channels, 3, s)
            self.conv2 = _conv(dims, out_channels, out_channels, 3)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kind = "basic"
        self.dims = dims


class BottleneckResidualBlock(ResidualBlock, Bottleneck):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4) with a shortcut: torchvision's ``Bottleneck``.

    The inner width is ``out_channels // 4`` (torchvision's ``planes``); the
    stride sits on the 3x3 conv. See :class:`ResidualBlock` for the arguments.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        s: int = 1,
        kind: str = "bottleneck",
        shortcut: str = "auto",
        dims: int = 2,
    ) -> None:
        if kind != "bottleneck":
            raise CnnkitError(
                f"BottleneckResidualBlock is kind 'bottleneck', got kind={kind!r}: "
                "use ResidualBlock(...)."
            )
        dims = check_dims(dims)
        positive_int("in_channels", in_channels)
        positive_int("out_channels", out_channels)
        if out_channels % Bottleneck.expansion:
            raise CnnkitError(
                f"a bottleneck block's out_channels must be divisible by 4 (its inner width is "
                f"out_channels/4), got {out_channels}: use a multiple of 4 such as "
                f"{4 * max(1, out_channels // 4)}."
            )
        downsample = _shortcut(in_channels, out_channels, s, shortcut, dims)
        width = out_channels // Bottleneck.expansion
        super().__init__(in_channels, width, stride=s, downsample=downsample, norm_layer=_BN[dims])
        if dims != 2:  # the same block with 1D / 3D filters (torchvision's are 2D)
            self.conv1 = _conv(dims, in_channels, width, 1)
            self.conv2 = _conv(dims, width, width, 3, s)
            self.conv3 = _conv(dims, width, out_channels, 1)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kind = "bottleneck"
        self.dims = dims


_KINDS: dict[str, type[ResidualBlock]] = {
    "basic": BasicResidualBlock,
    "bottleneck": BottleneckResidualBlock,
}
