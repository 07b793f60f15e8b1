"""A small 3D ConvNet for volumes (CT/MRI scans, video clips as frames x height x width).

In 3D the filter gains an axis, ``f x f x f x n_C_prev``, and slides along depth,
height and width: an ``n_D x n_H x n_W x n_C`` volume gives
``floor((n + 2p - f)/s) + 1`` outputs on each of the three axes, and a conv layer has
``(f*f*f*n_C_prev + 1)*n_C`` parameters (``f^3*n_C_prev*n_C`` without the bias that
batch norm replaces). Inputs are ``(B, n_C, n_D, n_H, n_W)`` tensors.

For the default 32x32x32x1 input and 10 classes, three stages of a 'same' 3x3x3 conv
(+ BN + ReLU) and a 2x2x2 max-pool (s=2):

    32x32x32x1 -> conv 16 -> 32x32x32x16 -> pool -> 16x16x16x16
    -> conv 32 -> 16x16x16x32 -> pool -> 8x8x8x32
    -> conv 64 -> 8x8x8x64 -> pool -> 4x4x4x64
    -> global average pool -> 64 -> FC -> 10

70,426 parameters: 432 + 32, 13,824 + 64, 55,296 + 128 (conv, BN per stage) and
650 (FC); 99.1M MACs. Each side must be at least ``2^stages`` (8 by default), since
every stage halves it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cnnkit.blocks import ConvBNAct
from cnnkit.errors import CnnkitError
from cnnkit.models._base import ClassifierMixin, finish
from cnnkit.models._registry import register_model

__all__ = ["CONFIGS", "ConvNet3d", "convnet3d"]


class ConvNet3d(ClassifierMixin, nn.Module):
    """3D ConvNet: stages of CONV3D (f=3, p=1) - BN - ReLU - MAXPOOL3D (f=2, s=2), then FC.

    Args:
        num_classes: Outputs of the FC layer.
        in_channels: Input channels ``n_C`` of the volume.
        widths: Filters ``n_C`` of each stage's conv (one stage per entry).
        dropout: Dropout probability before the FC layer.

    Raises:
        CnnkitError: On widths that are not positive integers or a dropout outside [0, 1).
    """

    classifier_path = "fc"

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        widths: Sequence[int] = (16, 32, 64),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        ok = isinstance(widths, (list, tuple)) and len(widths) > 0
        if not ok or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in widths
        ):
            raise CnnkitError(
                f"convnet3d widths must be a non-empty list of positive integers, one per "
                f"stage (e.g. widths=[16, 32, 64]), got {widths!r}."
            )
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise CnnkitError(f"convnet3d dropout must be a number in [0, 1), got {dropout!r}.")
        if not 0 <= dropout < 1:
            raise CnnkitError(f"convnet3d dropout must be in [0, 1), got {dropout!r}; e.g. 0.2.")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        n_C_prev = in_channels
        for i, n_C in enumerate(widths):
            layers.update(_stage(i + 1, n_C_prev, n_C))
            n_C_prev = n_C
        self.features = nn.Sequential(layers)
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(n_C_prev, num_classes)
        self.min_size = 2 ** len(widths)  # every stage halves n_D, n_H and n_W
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Conv/pool stages: ``(B, n_C, 32, 32, 32) -> (B, 64, 4, 4, 4)`` with the defaults.

        Args:
            x: Volumes ``(B, n_C, n_D, n_H, n_W)``.

        Returns:
            The last feature map ``(B, widths[-1], n_D', n_H', n_W')``.

        Raises:
            CnnkitError: If ``x`` is not a batch of volumes, or a side is too small.
        """
        if x.dim() != 5:
            raise CnnkitError(
                f"convnet3d takes volumes shaped (B, n_C, n_D, n_H, n_W) (course order "
                f"n_D x n_H x n_W x n_C) but got a {x.dim()}D tensor {tuple(x.shape)}; use a "
                "2D model for images."
            )
        if min(x.shape[2:]) < self.min_size:
            size = "x".join(map(str, x.shape[2:]))
            raise CnnkitError(
                f"convnet3d halves n_D, n_H and n_W {self.min_size.bit_length() - 1} times, so "
                f"each must be at least {self.min_size}, but the volume is {size}; resize or "
                "pad it."
            )
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool, flatten, dropout, FC: ``(B, C, d, h, w) -> (B, num_classes)``."""
        x = self.avgpool(x)
        x = torch.flatten(x, 1)  # (B, C, 1, 1, 1) -> (B, C)
        return self.fc(self.dropout(x))


def _stage(i: int, n_C_prev: int, n_C: int) -> OrderedDict[str, nn.Module]:
    """Stage ``i``: 'same' 3x3x3 conv + BN + ReLU (n -> n), then 2x2x2 max-pool (n -> n/2)."""
    return OrderedDict(
        [
            (f"conv{i}", ConvBNAct(n_C_prev, n_C, f=3, s=1, p=1, dims=3)),
            (f"pool{i}", nn.MaxPool3d(kernel_size=2, stride=2)),
        ]
    )


# name -> filters per stage
CONFIGS: dict[str, tuple[int, ...]] = {
    "convnet3d": (16, 32, 64),
}


def _convnet3d(
    name: str, num_classes: int, in_channels: int, weights: str | None, **kw: Any
) -> ConvNet3d:
    kw.setdefault("widths", CONFIGS[name])
    model = ConvNet3d(num_classes=num_classes, in_channels=in_channels, **kw)
    return finish(model, name=name, in_channels=in_channels, weights=weights)


@register_model(
    "convnet3d",
    family="convnet3d",
    input_size=(32, 32, 32, 1),
    test_input=(8, 8, 8, 1),
    num_classes=10,
    paper="the course's ConvNet with 3D filters (as in Tran et al. 2015, C3D)",
    dims=3,
    meta={"widths": list(CONFIGS["convnet3d"])},
)
def convnet3d(
    num_classes: int = 10, in_channels: int = 1, weights: str | None = None, **kw: Any
) -> ConvNet3d:
    """3D ConvNet for ``n_D x n_H x n_W x n_C`` volumes (70,426 parameters: 1 channel, 10 classes).

    Args:
        num_classes: Classes.
        in_channels: Channels ``n_C`` of the volume.
        weights: ``None`` or a ``.safetensors`` / ``.pth`` file of a trained convnet3d.
        **kw: ``widths``, ``dropout`` (see :class:`ConvNet3d`).

    Returns:
        The model.
    """
    return _convnet3d("convnet3d", num_classes, in_channels, weights, **kw)
