"""U-Net blocks: two 'same' convs, a contracting step, an expanding step with skip."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from cnnkit.blocks._checks import positive_int
from cnnkit.blocks.conv import ConvBNAct
from cnnkit.errors import CnnkitError

__all__ = ["DoubleConv", "UNetDown", "UNetUp"]


class DoubleConv(nn.Sequential):
    """Two 3x3 'same' conv -> batch norm -> ReLU layers (the unit of every U-Net level).

    Both convs keep the spatial size (``p = 1``); the first maps ``in_channels``
    to ``out_channels``, the second ``out_channels`` to ``out_channels``.

    Args:
        in_channels: ``n_C_prev``.
        out_channels: ``n_C`` of both convs.
        dims: 1, 2 or 3 spatial dimensions.
    """

    def __init__(self, in_channels: int, out_channels: int, dims: int = 2) -> None:
        super().__init__(
            ConvBNAct(in_channels, out_channels, f=3, dims=dims),
            ConvBNAct(out_channels, out_channels, f=3, dims=dims),
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.dims = dims


class UNetDown(nn.Module):
    """One contracting step of U-Net: :class:`DoubleConv`, then 2x2 max pool with ``s=2``.

    ``forward`` returns ``(pooled, skip)``: ``skip`` is the DoubleConv output
    (``n_H x n_W x out_channels``), kept for the expanding path; ``pooled``
    halves it to ``floor(n_H/2) x floor(n_W/2) x out_channels``.

    Args:
        in_channels: ``n_C_prev``.
        out_channels: ``n_C`` of the DoubleConv.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = DoubleConv(in_channels, out_channels)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.in_channels = in_channels
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Convolve, keep the result as the skip, and pool it.

        Args:
            x: Input of shape ``(B, in_channels, n_H, n_W)``.

        Returns:
            ``(pooled, skip)`` with shapes ``(B, out_channels, n_H//2, n_W//2)``
            and ``(B, out_channels, n_H, n_W)``.
        """
        skip = self.conv(x)
        return self.pool(skip), skip


class UNetUp(nn.Module):
    """One expanding step of U-Net: transposed conv up, concatenate the skip, DoubleConv.

    The transposed conv (``f=2``, ``s=2``, ``p=0``) gives
    ``(n - 1)s - 2p + f = 2n`` per axis (see
    :func:`cnnkit.shapes.conv_transpose_output_size`). When the skip is not
    exactly twice as large (an odd size was floored by the pooling on the way
    down), the upsampled map is zero-padded (or cropped) to the skip's size
    before concatenation, so odd input sizes never fail. The skip comes first
    on the channel axis, then the upsampled map.

    Args:
        in_channels: ``n_C`` of the input from the level below.
        out_channels: ``n_C`` after the transposed conv and of the output.
        skip_channels: ``n_C`` of the skip connection (default ``out_channels``).
    """

    def __init__(
        self, in_channels: int, out_channels: int, skip_channels: int | None = None
    ) -> None:
        super().__init__()
        positive_int("in_channels", in_channels)
        positive_int("out_channels", out_channels)
        skip_channels = out_channels if skip_channels is None else skip_channels
        positive_int("skip_channels", skip_channels)
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = DoubleConv(out_channels + skip_channels, out_channels)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.skip_channels = skip_channels

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """Upsample ``x``, match it to ``skip``, concatenate and convolve.

        Args:
            x: Input of shape ``(B, in_channels, n_H, n_W)``.
            skip: Skip connection of shape ``(B, skip_channels, n_H', n_W')``,
                usually ``n_H' in {2 n_H, 2 n_H + 1}``.

        Returns:
            Output of shape ``(B, out_channels, n_H', n_W')``.

        Raises:
            CnnkitError: When ``skip`` does not have ``skip_channels`` channels.
        """
        if skip.dim() != 4 or skip.shape[1] != self.skip_channels:
            got = str(skip.shape[1]) if skip.dim() > 1 else "?"
            raise CnnkitError(
                f"UNetUp expected a skip of shape (B, {self.skip_channels}, n_H, n_W), got "
                f"{list(skip.shape)}: pass skip_channels={got} when building it."
            )
        x = self.up(x)  # (B, C_in, H, W) -> (B, C_out, 2H, 2W)
        dH = skip.shape[-2] - x.shape[-2]
        dW = skip.shape[-1] - x.shape[-1]
        if dH or dW:
            # (B, C_out, 2H, 2W) -> (B, C_out, H', W'); negative pads crop.
            x = F.pad(x, [dW // 2, dW - dW // 2, dH // 2, dH - dH // 2])
        # (B, C_skip, H', W') + (B, C_out, H', W') -> (B, C_skip + C_out, H', W')
        x = torch.cat([skip, x], dim=1)
        return self.conv(x)
