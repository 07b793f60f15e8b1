"""The model zoo: one registry, ``create(name, ...)`` and ``list_models(pattern)``.

Families (one file each): LeNet-5, AlexNet, VGG, ResNet, GoogLeNet, MobileNet v1
and v2, EfficientNet B0-B7, the fully connected ``logistic`` and ``mlp``, the 1D
``resnet1d`` (signals) and 3D ``convnet3d`` (volumes), and networks written as layer
lists (:func:`sequential`, YAML files).
"""

from __future__ import annotations

from cnnkit.models import (  # noqa: F401  (importing registers the builders)
    alexnet,
    convnet3d,
    efficientnet,
    fc,
    googlenet,
    lenet,
    mobilenet_v1,
    mobilenet_v2,
    resnet,
    resnet1d,
    vgg,
)
from cnnkit.models._base import adapt_in_channels, load_weights, read_state_dict
from cnnkit.models._registry import (
    ModelInfo,
    conv_features,
    create,
    feature_map_shape,
    get_model_info,
    list_models,
    register_model,
)
from cnnkit.models.sequential import LayerNet, from_yaml, sequential

__all__ = [
    "LayerNet",
    "ModelInfo",
    "adapt_in_channels",
    "conv_features",
    "create",
    "feature_map_shape",
    "from_yaml",
    "get_model_info",
    "list_models",
    "load_weights",
    "read_state_dict",
    "register_model",
    "sequential",
]
