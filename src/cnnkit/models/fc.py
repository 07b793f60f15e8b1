"""The fully connected models of the first course: logistic regression and an L-layer MLP.

Both flatten the image first: ``(B, n_C, n_H, n_W) -> (B, n_x)`` with
``n_x = n_H * n_W * n_C``. With ``num_classes=1`` the output is one logit for a
sigmoid (binary, ``y_hat = sigma(w^T x + b)``); with more it is softmax regression.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cnnkit.blocks import ACTIVATIONS
from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.models._base import ClassifierMixin, finish
from cnnkit.models._registry import register_model
from cnnkit.shapes import parse_size

__all__ = ["MLP", "LogisticRegression", "logistic", "mlp"]


class LogisticRegression(ClassifierMixin, nn.Module):
    """``z = w^T x + b`` on the flattened pixels.

    Args:
        num_classes: 1 for binary (sigmoid) or the number of classes (softmax).
        input_size: ``(n_H, n_W, n_C)`` of the images.
    """

    classifier_path = "fc"

    def __init__(self, num_classes: int = 1, input_size: Sequence[int] = (32, 32, 1)) -> None:
        super().__init__()
        self.input_size = tuple(input_size)
        self.flatten = nn.Flatten()  # (B, n_C, n_H, n_W) -> (B, n_x)
        self.fc = nn.Linear(math.prod(self.input_size), num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened input ``x`` of shape (B, n_x)."""
        return self.flatten(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """``z = w^T x + b``."""
        return self.fc(x)


class MLP(ClassifierMixin, nn.Module):
    """An L-layer fully connected network: ``[LINEAR -> act] x (L-1) -> LINEAR``.

    Args:
        num_classes: Output units.
        input_size: ``(n_H, n_W, n_C)`` of the images.
        hidden: Units of the hidden layers ``n[1], ..., n[L-1]``.
        activation: Hidden activation: relu, tanh, sigmoid or leaky_relu.
        dropout: Drop rate after each hidden layer (``1 - keep_prob``).
    """

    classifier_path = "fc"

    def __init__(
        self,
        num_classes: int = 10,
        input_size: Sequence[int] = (32, 32, 1),
        hidden: Sequence[int] = (128, 64),
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise unknown_name("MLP activation", activation, ACTIVATIONS)
        if not hidden or any(int(h) < 1 for h in hidden):
            raise CnnkitError(f"hidden must list positive layer sizes, got {list(hidden)}.")
        self.input_size = tuple(input_size)
        layers: list[nn.Module] = [nn.Flatten()]  # (B, n_C, n_H, n_W) -> (B, n_x)
        n_prev = math.prod(self.input_size)
        for h in hidden:
            layers += [nn.Linear(n_prev, int(h)), ACTIVATIONS[activation]()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            n_prev = int(h)
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(n_prev, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Activations of the last hidden layer, (B, n[L-1])."""
        return self.body(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """The output layer's ``z[L]``."""
        return self.fc(x)


def _input_size(input_size: Any, in_channels: int) -> tuple[int, ...]:
    size = parse_size(input_size, what="input_size")
    return (*size[:-1], in_channels)


@register_model(
    "logistic",
    family="fc",
    input_size=(32, 32, 1),
    num_classes=1,
    paper="the first course: logistic regression as a neural network",
)
def logistic(
    num_classes: int = 1,
    in_channels: int = 1,
    weights: str | None = None,
    input_size: Any = (32, 32, 1),
) -> LogisticRegression:
    """Logistic (num_classes=1) or softmax regression on flattened pixels; ``input_size``."""
    model = LogisticRegression(num_classes, _input_size(input_size, in_channels))
    return finish(model, name="logistic", in_channels=in_channels, weights=weights)


@register_model(
    "mlp",
    family="fc",
    input_size=(32, 32, 1),
    num_classes=10,
    paper="the first course: deep L-layer neural network",
)
def mlp(
    num_classes: int = 10,
    in_channels: int = 1,
    weights: str | None = None,
    input_size: Any = (32, 32, 1),
    layers: int | None = None,
    units: int | None = None,
    **kw: Any,
) -> MLP:
    """L-layer network. Options: ``input_size``, ``hidden``, ``activation``, ``dropout``.

    ``layers`` and ``units`` are the search-friendly form of ``hidden``: ``layers`` hidden
    layers of ``units`` each (``hidden=[units] * layers``; defaults 2 and 128), two whole
    numbers a hyperparameter search can draw (``cnnkit tune model=mlp model.layers=1..4:int
    model.units=16..512:intlog``).
    """
    if layers is not None or units is not None:
        if "hidden" in kw:
            raise CnnkitError(
                "give the MLP either hidden=[...] or layers= and units=, not both; "
                "e.g. layers=2 units=64."
            )
        for key, v in (("layers", layers), ("units", units)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise CnnkitError(f"{key} must be a positive whole number, got {v!r}.")
        kw["hidden"] = [128 if units is None else units] * (2 if layers is None else layers)
    model = MLP(num_classes, _input_size(input_size, in_channels), **kw)
    return finish(model, name="mlp", in_channels=in_channels, weights=weights)
