"""AlexNet (Krizhevsky, Sutskever and Hinton 2012), torchvision's single-tower version.

torchvision's definition (64-192-384-256-256 filters, 61,100,840 parameters at
1000 classes) is the one whose pretrained weights exist. The course's drawing
(227x227x3, 96-256-384-384-256 filters, 62,378,344 parameters) ships as a layer
list: ``examples/models/alexnet_course.yaml``.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from cnnkit.models._base import ClassifierMixin, finish
from cnnkit.models._registry import register_model

_tv = importlib.import_module("torchvision.models.alexnet")  # module, not function

__all__ = ["AlexNet", "alexnet"]


class AlexNet(ClassifierMixin, _tv.AlexNet):
    """torchvision's AlexNet with ``forward_features`` and a replaceable head."""

    classifier_path = "classifier.6"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Conv/pool stack: ``(B, 3, 224, 224) -> (B, 256, 6, 6)``."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Average-pool to 6x6, flatten, three FC layers."""
        x = self.avgpool(x)
        x = torch.flatten(x, 1)  # (B, 256, 6, 6) -> (B, 9216)
        return self.classifier(x)


@register_model(
    "alexnet",
    family="alexnet",
    input_size=(224, 224, 3),
    test_input=(64, 64, 3),
    paper="Krizhevsky et al. 2012, ImageNet classification with deep CNNs",
    torchvision="alexnet",
)
def alexnet(
    num_classes: int = 1000, in_channels: int = 3, weights: str | None = None, **kw: Any
) -> AlexNet:
    """AlexNet (61,100,840 parameters at 1000 classes). Option: ``dropout``."""
    model = AlexNet(num_classes=num_classes, **kw)
    return finish(
        model, name="alexnet", torchvision_name="alexnet", in_channels=in_channels, weights=weights
    )
