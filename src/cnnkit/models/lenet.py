"""LeNet-5, as the course draws it (LeCun et al. 1998, "Gradient-based learning
applied to document recognition").

32x32x1 -> conv 5x5, 6 filters -> 28x28x6 -> avg-pool f=2 s=2 -> 14x14x6
-> conv 5x5, 16 filters -> 10x10x16 -> avg-pool f=2 s=2 -> 5x5x16 = 400
-> FC 120 -> FC 84 -> softmax over num_classes.

With 10 classes it has exactly 61,706 parameters: 156 + 2,416 + 48,120 +
10,164 + 850. The paper's sparse C3 connection table and RBF output layer are
left out, as in the course. The paper used tanh and average pooling; as the course
notes, a modern LeNet-5 uses ReLU and max pooling, which is cnnkit's default (it
trains to higher accuracy with the same shapes and parameters).
``activation="tanh", pool="avg"`` builds the 1998 network.

``width=w`` multiplies every layer's width (6w and 16w filters, 120w and 84w hidden
units, each rounded, at least 1): ``60,480 w^2 + 1,216 w + 10`` parameters for 10
classes. A wider LeNet-5 has room for several tasks at once (multi-task learning) and
is what ``tune`` can search as ``model.width=0.5..4:log``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.models._base import ClassifierMixin, finish
from cnnkit.models._registry import register_model

__all__ = ["LeNet5", "lenet5"]

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid}


class LeNet5(ClassifierMixin, nn.Module):
    """LeNet-5: CONV - POOL - CONV - POOL - FC - FC - FC (softmax).

    Args:
        num_classes: Outputs of the last FC layer.
        in_channels: Input channels ``n_C`` (1 for grey digits).
        activation: ``"relu"`` (modern, the default), ``"tanh"`` (the paper) or ``"sigmoid"``.
        pool: ``"max"`` (modern, the default) or ``"avg"`` (the paper).
        width: Multiplier of every layer's width (1 is the paper's 6-16-120-84).
    """

    classifier_path = "classifier.4"

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        activation: str = "relu",
        pool: str = "max",
        width: float = 1.0,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise unknown_name("LeNet-5 activation", activation, _ACTIVATIONS)
        if pool not in ("avg", "max"):
            raise unknown_name("LeNet-5 pooling", pool, ["avg", "max"])
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
            raise CnnkitError(
                f"LeNet-5 width must be a positive number (a multiplier of 6-16-120-84), "
                f"got {width!r}; e.g. model.width=2."
            )
        c1, c2, h1, h2 = (max(1, round(n * width)) for n in (6, 16, 120, 84))
        act = _ACTIVATIONS[activation]
        pool_cls = nn.AvgPool2d if pool == "avg" else nn.MaxPool2d
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=5),  # 32x32xC -> 28x28x6 (width 1)
            act(),
            pool_cls(kernel_size=2, stride=2),  # -> 14x14x6
            nn.Conv2d(c1, c2, kernel_size=5),  # -> 10x10x16
            act(),
            pool_cls(kernel_size=2, stride=2),  # -> 5x5x16
        )
        self.flatten = nn.Flatten()  # (B, 16, 5, 5) -> (B, 400)
        self.classifier = nn.Sequential(
            nn.Linear(c2 * 5 * 5, h1),
            act(),
            nn.Linear(h1, h2),
            act(),
            nn.Linear(h2, num_classes),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Conv/pool stack: ``(B, n_C, 32, 32) -> (B, 16 * width, 5, 5)``."""
        if x.shape[-2:] != (32, 32):
            c2 = self.features[3].out_channels  # 16 * width
            raise CnnkitError(
                f"LeNet-5 takes 32x32 inputs (its first FC layer reads 5x5x{c2} = {25 * c2} "
                f"features) but got {x.shape[-2]}x{x.shape[-1]}; resize or pad the images "
                "to 32x32."
            )
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """FC layers: ``(B, 16, 5, 5) -> (B, num_classes)``."""
        return self.classifier(self.flatten(x))


@register_model(
    "lenet5",
    family="lenet",
    input_size=(32, 32, 1),
    num_classes=10,
    paper="LeCun et al. 1998, Gradient-based learning applied to document recognition",
)
def lenet5(
    num_classes: int = 10, in_channels: int = 1, weights: str | None = None, **kw: Any
) -> LeNet5:
    """LeNet-5 (61,706 parameters for 10 classes). Options: ``activation``, ``pool``, ``width``."""
    model = LeNet5(num_classes=num_classes, in_channels=in_channels, **kw)
    return finish(model, name="lenet5", in_channels=in_channels, weights=weights)
