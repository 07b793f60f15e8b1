"""Residual networks (He et al. 2016): ``a[l+2] = g(z[l+2] + a[l])``.

torchvision's definitions (its weights load unchanged), plus an explicit
``small_input=True`` for CIFAR-size images: a 3x3 stride-1 stem and no max-pool,
so a 32x32 input reaches the last stage as 4x4 instead of 1x1.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

from cnnkit.models._base import ClassifierMixin, finish
from cnnkit.models._registry import register_model

_tv = importlib.import_module("torchvision.models.resnet")  # module, not function

__all__ = ["CONFIGS", "ResNet"]


class ResNet(ClassifierMixin, _tv.ResNet):
    """torchvision's ResNet with ``forward_features``, a replaceable head and a small-input stem.

    Args:
        block: ``BasicBlock`` (two 3x3 convs) or ``Bottleneck`` (1x1 - 3x3 - 1x1).
        layers: Blocks per stage.
        num_classes: Classes.
        small_input: Use a 3x3 stride-1 stem without max-pool (CIFAR-size inputs).
        **kw: torchvision's ResNet options (``zero_init_residual``, ...).
    """

    classifier_path = "fc"

    def __init__(
        self,
        block: type,
        layers: list[int],
        num_classes: int = 1000,
        small_input: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(block, layers, num_classes=num_classes, **kw)
        self.small_input = small_input
        if small_input:
            self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.maxpool = nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and four stages: ``(B, 3, 224, 224) -> (B, 512*expansion, 7, 7)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool, flatten, FC."""
        x = self.avgpool(x)
        x = torch.flatten(x, 1)  # (B, C, 1, 1) -> (B, C)
        return self.fc(x)


# name -> (block, blocks per stage)
CONFIGS: dict[str, tuple[type, list[int]]] = {
    "resnet18": (_tv.BasicBlock, [2, 2, 2, 2]),
    "resnet34": (_tv.BasicBlock, [3, 4, 6, 3]),
    "resnet50": (_tv.Bottleneck, [3, 4, 6, 3]),
    "resnet101": (_tv.Bottleneck, [3, 4, 23, 3]),
    "resnet152": (_tv.Bottleneck, [3, 8, 36, 3]),
}


def _resnet(
    name: str,
    num_classes: int,
    in_channels: int,
    weights: str | None,
    small_input: bool = False,
    **kw: Any,
) -> ResNet:
    block, layers = CONFIGS[name]
    model = ResNet(block, layers, num_classes=num_classes, small_input=small_input, **kw)
    return finish(model, name=name, torchvision_name=name, in_channels=in_channels, weights=weights)


def _register(name: str) -> None:
    block, layers = CONFIGS[name]

    @register_model(
        name,
        family="resnet",
        input_size=(224, 224, 3),
        test_input=(32, 32, 3),
        paper="He et al. 2016, Deep residual learning for image recognition",
        torchvision=name,
        meta={"block": block.__name__, "layers": layers},
    )
    def builder(
        num_classes: int = 1000,
        in_channels: int = 3,
        weights: str | None = None,
        small_input: bool = False,
        **kw: Any,
    ) -> ResNet:
        return _resnet(name, num_classes, in_channels, weights, small_input, **kw)

    builder.__name__ = name
    builder.__doc__ = f"{name}: {block.__name__} x {layers}. ``small_input=True`` for 32x32 images."
    globals()[name] = builder


for _name in CONFIGS:
    _register(_name)
