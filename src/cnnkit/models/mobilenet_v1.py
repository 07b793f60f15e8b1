"""MobileNet v1 (Howard et al. 2017): a stack of depthwise-separable convolutions.

torchvision has no MobileNet v1. A depthwise-separable conv replaces an
``f x f x n_C_prev x n_C`` convolution by an ``f x f`` depthwise conv per channel
followed by a 1x1 pointwise conv, costing ``1/n_C + 1/f^2`` as much. The width
multiplier ``alpha`` thins every layer (``n_C -> alpha * n_C``); the resolution
multiplier is simply the input size. At alpha 1.0 and 224x224: 4,231,976
parameters and 568.7M multiply-adds (the paper: 4.2M and 569M).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models._utils import _make_divisible

from cnnkit.blocks import ConvBNAct, DepthwiseSeparableConv
from cnnkit.errors import CnnkitError
from cnnkit.models._base import ClassifierMixin, finish
from cnnkit.models._registry import register_model

__all__ = ["CONFIG", "MobileNetV1", "mobilenet_v1"]


class MobileNetV1(ClassifierMixin, nn.Module):
    """MobileNet v1.

    Args:
        num_classes: Classes.
        in_channels: Input channels.
        alpha: Width multiplier in (0, 1] (the paper uses 1, 0.75, 0.5, 0.25).
        dropout: Dropout before the FC layer (the paper uses none).
    """

    classifier_path = "fc"

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        alpha: float = 1.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 < alpha <= 4:
            raise CnnkitError(f"width multiplier alpha must be in (0, 4], got {alpha}.")

        def ch(c: int) -> int:
            return _make_divisible(c * alpha, 8)

        layers: list[nn.Module] = [ConvBNAct(in_channels, ch(32), f=3, s=2)]
        n_C_prev = ch(32)
        for n_C, s in CONFIG:
            layers.append(DepthwiseSeparableConv(n_C_prev, ch(n_C), f=3, s=s))
            n_C_prev = ch(n_C)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(n_C_prev, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and 13 depthwise-separable convs: ``-> (B, 1024*alpha, 7, 7)`` at 224."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool, flatten, dropout, FC."""
        x = torch.flatten(self.avgpool(x), 1)  # (B, C, 1, 1) -> (B, C)
        return self.fc(self.dropout(x))


# (n_C, s) of the 13 depthwise-separable blocks (Table 1 of the paper; its last
# stride-2 entry is a known typo: the map stays 7x7).
CONFIG: list[tuple[int, int]] = [
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
]


@register_model(
    "mobilenet_v1",
    family="mobilenet_v1",
    input_size=(224, 224, 3),
    test_input=(32, 32, 3),
    paper="Howard et al. 2017, MobileNets: efficient CNNs for mobile vision applications",
)
def mobilenet_v1(
    num_classes: int = 1000,
    in_channels: int = 3,
    weights: str | None = None,
    alpha: float = 1.0,
    **kw: Any,
) -> MobileNetV1:
    """MobileNet v1 with width multiplier ``alpha``. Option: ``dropout``."""
    model = MobileNetV1(num_classes=num_classes, in_channels=in_channels, alpha=alpha, **kw)
    return finish(
        model, name="mobilenet_v1", torchvision_name=None, in_channels=in_channels, weights=weights
    )
