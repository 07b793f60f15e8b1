"""The model zoo: one registry, ``create(name, ...)`` and ``list_models(pattern)``.

Families (one file each): LeNet-5, AlexNet, VGG, ResNet, GoogLeNet, MobileNet v1
and v2, EfficientNet B0-B7, the fully connected ``logistic`` and ``mlp``, and
networks written as layer lists (:func:`sequential`, YAML files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from cnnkit.models import (  # noqa: F401  (importing registers the builders)
    alexnet,
    efficientnet,
    fc,
    googlenet,
    lenet,
    mobilenet_v1,
    mobilenet_v2,
    resnet,
    vgg,
)
from cnnkit.models._base import adapt_in_channels, load_weights, read_state_dict
from cnnkit.models._registry import ModelInfo, get_model_info, list_models, register_model
from cnnkit.models._registry import create as _create_registered
from cnnkit.models.sequential import LayerNet, from_yaml, sequential

__all__ = [
    "LayerNet",
    "ModelInfo",
    "adapt_in_channels",
    "create",
    "from_yaml",
    "get_model_info",
    "list_models",
    "load_weights",
    "read_state_dict",
    "register_model",
    "sequential",
]


def create(
    name: str,
    num_classes: int | None = None,
    in_channels: int | None = None,
    weights: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by registered name, or from a layer-list YAML file.

    Args:
        name: A name from :func:`list_models` (``"resnet18"``) or a path to a
            ``.yaml`` network file.
        num_classes: Number of classes (default: the model's own).
        in_channels: Input channels ``n_C`` (default: the model's own).
        weights: ``None``, a ``.safetensors`` / ``.pth`` file, or a torchvision
            weights name (``"IMAGENET1K_V1"``, ``"DEFAULT"``).
        **kwargs: Family options (``small_input``, ``alpha``, ``activation``, ...).

    Returns:
        The model (training mode). It has ``forward_features``, ``forward_head``,
        ``get_classifier`` and ``reset_classifier``.

    Raises:
        CnnkitError: Unknown name (with a suggestion), bad option, unusable weights.
    """
    if str(name).endswith((".yaml", ".yml")):
        model = from_yaml(name, num_classes=num_classes, in_channels=in_channels)
        if kwargs:
            from cnnkit.errors import CnnkitError

            raise CnnkitError(f"a YAML network takes no options, got {sorted(kwargs)}.")
        if weights is not None:
            load_weights(model, weights, model_name=Path(name).name)
        return model
    return _create_registered(name, num_classes, in_channels, weights, **kwargs)
