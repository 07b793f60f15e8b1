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

:class:`EncoderUNet` puts a zoo model's convolutional part (``vgg11``, ``resnet18``,
``mobilenet_v2``, ..., optionally with pretrained weights from a local file) in place of
the contracting path: its last output at each resolution is a skip, and the expanding
path climbs back with the same transposed-convolution steps.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.blocks.unet import DoubleConv, UNetUp
from cnnkit.errors import CnnkitError, unknown_name

__all__ = ["PADDINGS", "EncoderUNet", "UNet"]

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


class EncoderUNet(nn.Module):
    """U-Net whose contracting path is a zoo model's convolutional part (transfer learning).

    The encoder (:func:`cnnkit.models.conv_features`) is probed once with a
    ``probe x probe`` input: the last output at every resolution becomes a skip. Each
    expanding step is :class:`~cnnkit.blocks.unet.UNetUp` (2x2 transposed convolution,
    ``s=2``, the skip concatenated, two 3x3 convolutions), to ``max(skip channels,
    width)`` channels; when the encoder's first skip is already down-sampled (ResNet's
    stride-2 stem), further steps climb to full resolution with the input image itself as
    the last skip. Inputs are padded to a multiple of the encoder's total stride and the
    scores cropped back, as in :class:`UNet`.

    Args:
        encoder: A registered model name.
        in_channels: ``n_C`` of the images.
        num_classes: Classes (background included).
        width: Fewest channels of a decoder step.
        weights: The encoder's weights (a local file), or None for random ones.
        probe: Side of the probe input used to find the resolutions.
    """

    def __init__(
        self,
        encoder: str,
        in_channels: int = 3,
        num_classes: int = 2,
        width: int = 16,
        weights: str | None = None,
        probe: int = 64,
    ) -> None:
        super().__init__()
        from cnnkit.models import conv_features

        self.encoder_name = encoder
        self.encoder = conv_features(encoder, in_channels=in_channels, weights=weights)
        if not any(isinstance(m, nn.Conv2d) for m in self.encoder.modules()):
            raise CnnkitError(
                f"encoder {encoder} has no 2D convolutions; a U-Net encoder is an image "
                "ConvNet such as vgg11, resnet18 or mobilenet_v2."
            )
        stages = list(self.encoder.children()) or [self.encoder]
        was = self.encoder.training
        self.encoder.eval()
        sizes, chans = [], []
        try:
            with torch.no_grad():
                x = torch.zeros(1, in_channels, probe, probe)
                for m in stages:
                    x = m(x)
                    sizes.append(x.shape[-1])
                    chans.append(x.shape[1])
        except (RuntimeError, ValueError) as e:
            raise CnnkitError(
                f"encoder {encoder} does not take {probe}x{probe}x{in_channels} images "
                f"({str(e).splitlines()[0]}); use an image ConvNet such as vgg11, resnet18 or "
                "mobilenet_v2."
            ) from None
        self.encoder.train(was)
        # the last stage at each resolution is a tap (a skip, or the bottom for the last)
        taps = [k for k in range(len(stages)) if k == len(stages) - 1 or sizes[k + 1] != sizes[k]]
        res = [probe, *(sizes[k] for k in taps)]
        for a, b in itertools.pairwise(res):
            if b != a and b * 2 != a:
                raise CnnkitError(
                    f"encoder {encoder} goes from {a} to {b} pixels in one step; a U-Net "
                    "encoder must halve the size at most once per stage (try vgg11, resnet18 "
                    "or mobilenet_v2)."
                )
        self.stages = stages
        self.taps = taps
        self.stride = probe // sizes[taps[-1]]
        skip_c = [chans[k] for k in taps[:-1]]
        skip_s = [sizes[k] for k in taps[:-1]]
        extra = sizes[taps[0]] < probe  # the input itself is the last skip
        if extra:
            skip_c, skip_s = [in_channels, *skip_c], [probe, *skip_s]
        self.with_input = extra
        self.up = nn.ModuleList()
        c = chans[taps[-1]]
        for sc in reversed(skip_c):
            out = max(sc, width)
            self.up.append(UNetUp(c, out, skip_channels=sc))
            c = out
        self.head = nn.Conv2d(c, num_classes, 1)
        self._skip_sizes = skip_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores per class and pixel, ``(B, num_classes, n_H, n_W)``."""
        n_H, n_W = x.shape[-2:]
        m = self.stride
        pad_H, pad_W = -n_H % m, -n_W % m
        if pad_H or pad_W:
            x = F.pad(x, [0, pad_W, 0, pad_H])  # (B, C, H, W) -> (B, C, H+pH, W+pW)
        skips = [x] if self.with_input else []
        tapped = set(self.taps[:-1])
        for k, stage in enumerate(self.stages):
            x = stage(x)
            if k in tapped:
                skips.append(x)
        for up, skip in zip(self.up, reversed(skips)):
            x = up(x, skip)
        return self.head(x)[..., :n_H, :n_W]  # crop the padding back off
