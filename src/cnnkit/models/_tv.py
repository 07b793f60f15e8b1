"""Glue for families built on torchvision's definitions."""

from __future__ import annotations

from torch import nn

from cnnkit.models._base import adapt_in_channels, load_weights


def finish(
    model: nn.Module,
    *,
    name: str,
    torchvision_name: str | None,
    in_channels: int,
    weights: str | None,
) -> nn.Module:
    """Adapt the stem to ``in_channels``, then load ``weights`` if given.

    Args:
        model: The freshly built model (3 input channels).
        name: cnnkit name, for messages.
        torchvision_name: torchvision builder with the same keys, for weights names.
        in_channels: Wanted input channels.
        weights: ``None``, a file or a torchvision weights name.

    Returns:
        The model.
    """
    adapt_in_channels(model, in_channels)
    if weights is not None:
        load_weights(model, weights, torchvision_name=torchvision_name, model_name=name)
    return model
