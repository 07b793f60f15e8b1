"""Embedding networks: a ConvNet whose output is an L2-normalised encoding ``f(x)``.

Instead of a softmax over known persons, the network outputs a vector (128 numbers by
default) with ``||f(x)|| = 1``; two pictures of one person should be close, two persons
far apart, so a new person is added by storing one encoding, without retraining.

``backbone="small"`` is a CPU-sized ConvNet (four stages of two 3x3 convolutions with
batch-norm, each halving the side); any zoo model's convolutional part
(:func:`cnnkit.models.conv_features`) can stand in for it. The head is a global average
pool and a linear layer to ``dim``, then the L2 normalisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EmbeddingNet", "build_embedder", "small_backbone"]


class EmbeddingNet(nn.Module):
    """``f(x)``: features -> global average pool -> linear -> L2 normalisation.

    Args:
        features: A module mapping images to a feature map ``(B, C, n_H', n_W')``.
        channels: ``C``, the feature map's channels.
        dim: Encoding size ``d``.

    Attributes:
        head: The Siamese head (:class:`~cnnkit.faces.losses.SiameseHead`) of a network
            trained with ``loss=binary``, saved with it; None otherwise. ``forward``
            does not use it.
    """

    def __init__(self, features: nn.Module, channels: int, dim: int = 128) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()  # (B, C, 1, 1) -> (B, C)
        self.fc = nn.Linear(channels, dim)
        self.dim = dim
        self.head: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encodings ``(B, d)`` with unit L2 norm."""
        z = self.fc(self.flatten(self.pool(self.features(x))))
        return F.normalize(z, dim=1)


def small_backbone(in_channels: int = 3, width: int = 32) -> nn.Sequential:
    """Four stages of conv3x3-BN-ReLU x 2 and a 2x2 max pool; widths w, 2w, 4w, 8w.

    A 64x64 image ends as a 4x4 x 8w map.

    Args:
        in_channels: ``n_C`` of the images.
        width: Filters of the first stage.

    Returns:
        The feature extractor (``out_channels`` attribute set).
    """
    layers: list[nn.Module] = []
    c_in = in_channels
    for k in range(4):
        c = width * 2**k
        for _ in range(2):
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
            c_in = c
        layers.append(nn.MaxPool2d(2))  # n_H x n_W -> n_H/2 x n_W/2
    net = nn.Sequential(*layers)
    net.out_channels = c_in  # type: ignore[assignment]
    return net


def build_embedder(
    backbone: str = "small",
    in_channels: int = 3,
    dim: int = 128,
    size: int = 64,
    width: int = 32,
) -> EmbeddingNet:
    """An embedding network on ``backbone``.

    Args:
        backbone: ``small`` or a zoo model name (``resnet18``, ``mobilenet_v2``, ...).
        in_channels: ``n_C`` of the images.
        dim: Encoding size.
        size: Image side (checked with one forward pass).
        width: The small backbone's first filters.

    Returns:
        The :class:`EmbeddingNet` (training mode).

    Raises:
        CnnkitError: When the backbone cannot take ``size x size`` images.
    """
    from cnnkit.models import conv_features, feature_map_shape

    features: nn.Module = (
        small_backbone(in_channels, width)
        if backbone == "small"
        else conv_features(backbone, in_channels)
    )
    C = feature_map_shape(features, backbone, in_channels, size, "small")[0]
    return EmbeddingNet(features, C, dim)
