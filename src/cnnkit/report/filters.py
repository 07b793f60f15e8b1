"""What a convolution looks for and where it finds it: filters and feature maps.

``feature_maps`` returns the output of any layer for a batch of images (a forward hook,
no copy of the model); ``plot_filters`` draws a convolution's filters as images and
``plot_feature_maps`` a layer's feature maps for one image. The plots hold the raw
numbers (``ax.images[0].get_array()``): a filter is drawn with a colour scale
symmetric about 0, so an edge detector's positive and negative weights read at a glance.
Both return a :class:`matplotlib.figure.Figure` (no pyplot, no display needed).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from cnnkit.errors import CnnkitError, unknown_name

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["feature_maps", "find_layer", "plot_feature_maps", "plot_filters"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def find_layer(model: nn.Module, layer: str | None = None) -> tuple[str, nn.Module]:
    """A layer of ``model`` by its dotted name, or the first convolution.

    Args:
        model: The network.
        layer: A name from ``model.named_modules()`` (``"features.0"``), or None for the
            first convolution.

    Returns:
        ``(name, module)``.

    Raises:
        CnnkitError: For an unknown name (with the closest names), or a model without
            a convolution when ``layer`` is None.
    """
    named = dict(model.named_modules())
    if layer is None:
        for name, m in named.items():
            if isinstance(m, _CONVS):
                return name, m
        raise CnnkitError(
            f"{type(model).__name__} has no convolution; name the layer to show, e.g. "
            f"layer={next((k for k in named if k), 'features.0')!r}."
        )
    if layer not in named or layer == "":
        raise unknown_name("layer", layer, [k for k in named if k])
    return layer, named[layer]


def feature_maps(model: nn.Module, x: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """The output of one layer for a batch of images (the model in eval mode, no gradient).

    Args:
        model: The network.
        x: Input batch ``(B, n_C, n_H, n_W)``, prepared as the model expects.
        layer: Dotted layer name (None: the first convolution).

    Returns:
        The layer's output, e.g. ``(B, n_C_out, n_H_out, n_W_out)`` for a convolution.
    """
    name, module = find_layer(model, layer)
    out: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, i, o: out.append(o.detach()))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
        model.train(was_training)
    if not out:
        raise CnnkitError(
            f"layer {name!r} did not run in the forward pass (a training-only branch?); "
            "pick a layer on the path from input to output."
        )
    return out[0]


def _grid(n: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def panels(
    title: str, n: int, rows: int, cols: int, size: tuple[float, float]
) -> tuple[Figure, list[Axes]]:
    """A titled figure of ``rows x cols`` panels without axes; the first ``n`` to draw in.

    Args:
        title: The figure's title.
        n: Panels that will hold an image.
        rows: Rows of panels.
        cols: Columns of panels.
        size: Width and height of one panel, inches.

    Returns:
        ``(figure, the first n axes)``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * cols, size[1] * rows + 0.4), layout="constrained")
    fig.suptitle(title, fontsize=9)
    axes = []
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.set_axis_off()
        if i < n:
            axes.append(ax)
    return fig, axes


def unit_range(t: torch.Tensor) -> torch.Tensor:
    """``t`` scaled together to 0..1 (the colour images of filters and patches)."""
    lo, hi = t.min(), t.max()
    return (t - lo) / (hi - lo + 1e-12)


def plot_filters(model: nn.Module, layer: str | None = None, max_filters: int = 64) -> Figure:
    """A convolution's filters as images: one panel per filter.

    A filter over 3 input channels is drawn in colour (its weights scaled to 0..1
    together); over 1 channel in grey with a colour scale symmetric about 0, shared by
    all panels; over other channel counts as the mean over its input channels.

    Args:
        model: The network.
        layer: The convolution's dotted name (None: the first one).
        max_filters: Draw at most this many (the first ones).

    Returns:
        The figure.

    Raises:
        CnnkitError: If the layer is not a 2D convolution.
    """
    name, conv = find_layer(model, layer)
    if not isinstance(conv, nn.Conv2d):
        raise CnnkitError(
            f"layer {name!r} is a {type(conv).__name__}, not a 2D convolution; pick a "
            "Conv2d layer (None picks the first one)."
        )
    w = conv.weight.detach().float().cpu()[:max_filters]  # (n_C, n_C_prev, f, f)
    n = w.shape[0]
    title = f"{name}: {conv.out_channels} filters {tuple(w.shape[1:])}"
    fig, axes = panels(title, n, *_grid(n), size=(1.2, 1.2))
    rgb = w.shape[1] == 3
    grey = w[:, 0] if w.shape[1] == 1 else w.mean(1)  # (n, C, f, f) -> (n, f, f)
    shown = unit_range(w).permute(0, 2, 3, 1) if rgb else grey  # (n, C, f, f) -> (n, f, f, C)
    m = float(w.abs().max()) or 1.0
    for i, ax in enumerate(axes):
        if rgb:
            ax.imshow(shown[i].numpy(), interpolation="nearest")
        else:
            ax.imshow(shown[i].numpy(), cmap="gray", vmin=-m, vmax=m, interpolation="nearest")
        ax.set_title(str(i), fontsize=7)
    return fig


def plot_feature_maps(
    model: nn.Module, image: torch.Tensor, layer: str | None = None, max_maps: int = 64
) -> Figure:
    """One image's feature maps at a layer: one panel per channel.

    Args:
        model: The network.
        image: One prepared image ``(n_C, n_H, n_W)`` or a batch of one.
        layer: Dotted layer name (None: the first convolution).
        max_maps: Draw at most this many channels (the first ones).

    Returns:
        The figure; each panel holds the map's raw values.
    """
    x = image.unsqueeze(0) if image.dim() == 3 else image  # (n_C, n_H, n_W) -> (1, n_C, n_H, n_W)
    if x.dim() != 4 or x.shape[0] != 1:
        raise CnnkitError(
            f"plot_feature_maps takes one image (n_C, n_H, n_W), got shape {tuple(image.shape)}; "
            "pass images[i]."
        )
    name, _ = find_layer(model, layer)
    a = feature_maps(model, x, name)[0].float().cpu()  # (1, n_C, n_H, n_W) -> (n_C, n_H, n_W)
    if a.dim() != 3:
        raise CnnkitError(
            f"layer {name!r} outputs shape {tuple(a.shape)}, not feature maps (n_C, n_H, n_W); "
            "pick a convolution, pooling or activation layer."
        )
    a = a[:max_maps]
    fig, axes = panels(
        f"{name}: {tuple(a.shape)} feature maps", len(a), *_grid(len(a)), size=(1.4, 1.4)
    )
    for i, ax in enumerate(axes):
        ax.imshow(a[i].numpy(), cmap="viridis", interpolation="nearest")
        ax.set_title(str(i), fontsize=7)
    return fig
