"""MobileNet v2 (Sandler et al. 2018): inverted residuals with linear bottlenecks.

Each block expands the channels with a 1x1 conv (factor t), filters them with a
3x3 depthwise conv, and projects back with a linear 1x1 conv; the residual joins
only when stride is 1 and the channel counts match. torchvision's definition.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
import torch.nn.functional as F

from cnnkit.models._base import ClassifierMixin, finish
from cnnkit.models._registry import register_model

_tv = importlib.import_module("torchvision.models.mobilenetv2")  # module, not function

__all__ = ["MobileNetV2", "mobilenet_v2"]


class MobileNetV2(ClassifierMixin, _tv.MobileNetV2):
    """torchvision's MobileNetV2 with ``forward_features`` and a replaceable head."""

    classifier_path = "classifier.1"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, 17 inverted residuals, last 1x1 conv: ``-> (B, 1280, 7, 7)`` at 224."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool, flatten, dropout + FC."""
        x = F.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)  # (B, 1280, 1, 1) -> (B, 1280)
        return self.classifier(x)


@register_model(
    "mobilenet_v2",
    family="mobilenet_v2",
    input_size=(224, 224, 3),
    test_input=(32, 32, 3),
    paper="Sandler et al. 2018, MobileNetV2: inverted residuals and linear bottlenecks",
    torchvision="mobilenet_v2",
)
def mobilenet_v2(
    num_classes: int = 1000,
    in_channels: int = 3,
    weights: str | None = None,
    alpha: float = 1.0,
    **kw: Any,
) -> MobileNetV2:
    """MobileNet v2; ``alpha`` is the width multiplier (torchvision's ``width_mult``)."""
    model = MobileNetV2(num_classes=num_classes, width_mult=alpha, **kw)
    return finish(
        model,
        name="mobilenet_v2",
        torchvision_name="mobilenet_v2",
        in_channels=in_channels,
        weights=weights,
    )
