"""U-Net (Ronneberger, Fischer and Brox 2015): a contracting path, an expanding path of
transposed convolutions, and skip connections that bring back the detail lost on the
way down.

Each level of the contracting path is two 3x3 convolutions (ReLU) and a 2x2 max-pool
with ``s=2``; the width doubles per level. Each level of the expanding path is a 2x2
transposed convolution with ``s=2`` (output ``(n - 1)s - 2p + f = 2n`` per axis),
halving the channels, the skip of the same level concatenated on the channel axis
(skip first), and two 3x3 convolutions. A final 1x1 convolution gives one score per
class and pixel.

``padding="valid"`` is the paper: unpadded convolutions (each 3x3 takes 2 pixels off a
side), no batch norm, and each skip centre-cropped to the upsampled map. With
``depth=4, width=64`` and a 572x572x1 input the output is 388x388x2, from 31,030,658
parameters. ``padding="same"`` (the default for training) pads every 3x3 convolution
(``p=1``) and adds batch norm (:class:`cnnkit.blocks.unet.UNetDown` /
:class:`~cnnkit.blocks.unet.UNetUp`); an input whose sides do not divide by
``2^depth`` is zero-padded up to the next multiple and the scores are cropped back, so
any size gives a mask of its own size (97x131 in, 97x131 out).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.blocks.unet import DoubleConv, UNetUp
from cnnkit.errors import CnnkitError, unknown_name

__all__ = ["PADDINGS", "UNet"]

PADDINGS = ("same", "valid")


def _valid_double(c_in: int, c_out: int) -> nn.Sequential:
    """The paper's unit: two unpadded 3x3 convolutions with ReLU (``n -> n - 4``)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3),
        nn.ReLU(inplace=True),
    )


def _center_crop(x: torch.Tensor, n_H: int, n_W: int) -> torch.Tensor:
    """The centre ``n_H x n_W`` of ``x`` ``(B, C, H, W)`` (the paper's skip cropping)."""
    top, left = (x.shape[-2] - n_H) // 2, (x.shape[-1] - n_W) // 2
    return x[..., top : top + n_H, left : left + n_W]


class UNet(nn.Module):
    """U-Net: ``(B, in_channels, n_H, n_W)`` -> ``(B, num_classes, n_H', n_W')`` scores.

    Args:
        in_channels: ``n_C`` of the images.
        num_classes: Classes (background included).
        depth: Pooling steps on the contracting path (the paper: 4).
        width: Filters of the first level (the paper: 64); level ``k`` has
            ``width * 2^k``.
        padding: ``same`` (output as large as the input) or ``valid`` (the paper).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        depth: int = 4,
        width: int = 64,
        padding: str = "same",
    ) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("num_classes", num_classes)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise CnnkitError(f"{name} must be a positive integer, got {v!r}.")
        for name, v in (("depth", depth), ("width", width)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise CnnkitError(f"U-Net {name} must be a positive integer, got {v!r}.")
        if padding not in PADDINGS:
            raise unknown_name("U-Net padding", str(padding), PADDINGS)
        self.depth, self.padding = depth, padding
        widths = [width * 2**k for k in range(depth + 1)]
        unit = _valid_double if padding == "valid" else DoubleConv
        self.down = nn.ModuleList()
        c = in_channels
        for w in widths[:-1]:
            self.down.append(unit(c, w))
            c = w
        self.pool = nn.MaxPool2d(2, 2)
        self.bottom = unit(widths[-2], widths[-1])
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for w_in, w_out in zip(widths[:0:-1], widths[-2::-1]):
            if padding == "same":
                self.up.append(UNetUp(w_in, w_out))
            else:
                self.up.append(nn.ConvTranspose2d(w_in, w_out, 2, 2))
                self.up_conv.append(_valid_double(2 * w_out, w_out))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores per class and pixel.

        Args:
            x: ``(B, in_channels, n_H, n_W)``.

        Returns:
            ``(B, num_classes, n_H, n_W)`` with ``padding="same"``; smaller with
            ``valid`` (572 -> 388 at depth 4).
        """
        n_H, n_W = x.shape[-2:]
        if self.padding == "same":
            m = 2**self.depth
            pad_H, pad_W = -n_H % m, -n_W % m
            if pad_H or pad_W:  # up to the next multiple of 2^depth, cropped back below
                x = F.pad(x, [0, pad_W, 0, pad_H])  # (B, C, H, W) -> (B, C, H+pH, W+pW)
        skips = []
        for level in self.down:
            x = level(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for k, skip in enumerate(reversed(skips)):
            if self.padding == "same":
                x = self.up[k](x, skip)
            else:
                x = self.up[k](x)  # (B, C, H, W) -> (B, C/2, 2H, 2W)
                skip = _center_crop(skip, x.shape[-2], x.shape[-1])
                x = self.up_conv[k](torch.cat([skip, x], dim=1))  # skip first, then up
        x = self.head(x)
        if self.padding == "same":
            x = x[..., :n_H, :n_W]  # crop the padding back off
        return x
