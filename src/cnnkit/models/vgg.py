"""VGG (Simonyan and Zisserman 2015): only 3x3 'same' convs (s=1) and 2x2 max-pools (s=2).

Configurations A (VGG-11), B (13), D (16) and E (19), with or without batch norm,
from torchvision's definition so its weights load unchanged.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from cnnkit.models._base import ClassifierMixin, finish
from cnnkit.models._registry import register_model

_tv = importlib.import_module("torchvision.models.vgg")  # module, not function

__all__ = ["CONFIGS", "VGG"]  # builders vgg11 ... vgg19_bn are generated below


class VGG(ClassifierMixin, _tv.VGG):
    """torchvision's VGG with ``forward_features`` and a replaceable head."""

    classifier_path = "classifier.6"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Conv/pool stack: ``(B, 3, 224, 224) -> (B, 512, 7, 7)``."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Average-pool to 7x7, flatten, FC 4096 - FC 4096 - FC num_classes."""
        x = self.avgpool(x)
        x = torch.flatten(x, 1)  # (B, 512, 7, 7) -> (B, 25088)
        return self.classifier(x)


# Filters per conv, "M" = 2x2 max-pool (torchvision's table).
CONFIGS = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}


def _vgg(
    name: str, batch_norm: bool, num_classes: int, in_channels: int, weights: str | None, **kw: Any
) -> VGG:
    cfg = _tv.cfgs[CONFIGS[name]]
    model = VGG(
        _tv.make_layers(cfg, batch_norm=batch_norm),
        num_classes=num_classes,
        init_weights=True,
        **kw,
    )
    full = name + ("_bn" if batch_norm else "")
    return finish(model, name=full, torchvision_name=full, in_channels=in_channels, weights=weights)


def _register(name: str, batch_norm: bool) -> None:
    full = name + ("_bn" if batch_norm else "")

    @register_model(
        full,
        family="vgg",
        input_size=(224, 224, 3),
        test_input=(32, 32, 3),
        paper="Simonyan & Zisserman 2015, Very deep convolutional networks",
        torchvision=full,
        meta={"config": CONFIGS[name], "batch_norm": batch_norm},
    )
    def builder(
        num_classes: int = 1000, in_channels: int = 3, weights: str | None = None, **kw: Any
    ) -> VGG:
        return _vgg(name, batch_norm, num_classes, in_channels, weights, **kw)

    builder.__name__ = full
    builder.__doc__ = f"{full.upper()} (configuration {CONFIGS[name]}). Option: ``dropout``."
    globals()[full] = builder


for _name in CONFIGS:
    _register(_name, False)
    _register(_name, True)
