"""The course's "visualising what a unit responds to": the input patches that most
activate a unit, each cut to the unit's receptive field.

``layer_stack`` reads the convolutions and poolings up to a layer, and
:func:`cnnkit.shapes.receptive_field` turns them into the field's size ``r``, jump ``j``
and the window of every unit. ``top_patches`` runs the images, finds the largest
activations of one channel of that layer over every image and position, and cuts the
``r x r`` input patch each of those units sees (zero-padded where the field leaves the
image, as the convolutions' padding does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.report.filters import feature_maps, find_layer, panels, unit_range
from cnnkit.shapes import ReceptiveField, receptive_field

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["TopPatches", "layer_stack", "plot_top_patches", "top_patches"]

_WINDOWS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
_CHAINS = (nn.Sequential, nn.ModuleList)


def _pair(v: int | tuple[int, ...], what: str, name: str) -> int:
    t = (v, v) if isinstance(v, int) else tuple(v)
    if t[0] != t[1]:
        raise CnnkitError(
            f"layer {name!r} has a non-square {what} {t}; the receptive-field view needs "
            "square windows."
        )
    return int(t[0])


def layer_stack(model: nn.Module, layer: str) -> list[tuple[int, int, int, int]]:
    """The ``(f, s, p, d)`` of every convolution and pooling up to and including ``layer``.

    Only chains are read: the model's own children and ``nn.Sequential`` containers in
    definition order (LeNet-5, VGG, AlexNet, cnnkit's sequential models). Residual and
    inception blocks have several paths, which one chain cannot describe.

    Args:
        model: The network.
        layer: Dotted layer name (see ``model.named_modules()``).

    Returns:
        One ``(f, s, p, d)`` per window layer, in forward order.

    Raises:
        CnnkitError: For an unknown layer, a branching block on the way, or a
            non-square window.
    """
    find_layer(model, layer)
    stack: list[tuple[int, int, int, int]] = []
    reached = False
    for name, m in model.named_modules():  # definition order: the forward order of a chain
        inside = name == layer or name.startswith(layer + ".")
        if reached and not inside:
            break
        reached = reached or name == layer
        if isinstance(m, _WINDOWS):
            f = _pair(m.kernel_size, "window", name)
            s = _pair(m.stride, "stride", name)
            d = _pair(getattr(m, "dilation", 1), "dilation", name)
            if isinstance(m.padding, str):  # Conv2d(padding="same" | "valid")
                p = d * (f - 1) // 2 if m.padding == "same" else 0
            else:
                p = _pair(m.padding, "padding", name)
            stack.append((f, s, p, d))
        elif (
            name
            and not isinstance(m, _CHAINS)
            and any(isinstance(c, _WINDOWS) for c in m.modules() if c is not m)
        ):
            raise CnnkitError(
                f"layer {layer!r} comes after {name!r} ({type(m).__name__}), a block with "
                "its own paths; the receptive-field view reads chains of layers (LeNet-5, "
                "VGG, AlexNet), so pick a layer before it."
            )
    if not stack:
        raise CnnkitError(
            f"no convolution or pooling up to layer {layer!r}; pick a layer after the first "
            "convolution."
        )
    return stack


@dataclass
class TopPatches:
    """The input patches that most activate one channel of a layer.

    Attributes:
        layer: The layer's dotted name.
        channel: The channel (unit) of that layer.
        field: Its receptive field (``field.r`` is the patch size).
        patches: ``(k, n_C, r, r)`` input patches, best first.
        scores: ``(k,)`` the activations.
        where: ``(image index, row, column)`` of each unit in the layer's output.
    """

    layer: str
    channel: int
    field: ReceptiveField
    patches: torch.Tensor
    scores: torch.Tensor
    where: list[tuple[int, int, int]]


def top_patches(
    model: nn.Module,
    images: torch.Tensor,
    layer: str,
    channel: int = 0,
    k: int = 9,
    batch: int = 256,
) -> TopPatches:
    """The ``k`` input patches that most activate ``channel`` of ``layer``.

    Args:
        model: The network (a chain up to ``layer``; see :func:`layer_stack`).
        images: Prepared images ``(N, n_C, n_H, n_W)``.
        layer: Dotted layer name.
        channel: Which channel of the layer's output.
        k: How many patches (the largest activations over every image and position).
        batch: Images per forward pass.

    Returns:
        A :class:`TopPatches`.
    """
    field = receptive_field(layer_stack(model, layer))
    maps = torch.cat(
        [feature_maps(model, images[i : i + batch], layer) for i in range(0, len(images), batch)]
    )
    if maps.dim() != 4:
        raise CnnkitError(
            f"layer {layer!r} outputs shape {tuple(maps.shape[1:])}, not feature maps "
            "(n_C, n_H, n_W); pick a convolution, pooling or activation layer."
        )
    if not 0 <= channel < maps.shape[1]:
        raise CnnkitError(
            f"layer {layer!r} has {maps.shape[1]} channels, channel={channel} was asked; "
            f"pick 0 to {maps.shape[1] - 1}."
        )
    a = maps[:, channel]  # (N, n_C, n_H, n_W) -> (N, n_H, n_W)
    n_H, n_W = a.shape[1:]
    scores, flat = a.reshape(-1).topk(min(k, a.numel()))  # (N, n_H, n_W) -> (N*n_H*n_W,)
    r = field.r
    pad = r  # enough for any window that leaves the image
    padded = F.pad(images, (pad, pad, pad, pad))  # zeros, as the convolutions' padding
    patches, where = [], []
    for idx in flat.tolist():
        i, rest = divmod(idx, n_H * n_W)
        y, x = divmod(rest, n_W)
        (y0, _), (x0, _) = field.window(y), field.window(x)
        patches.append(padded[i, :, y0 + pad : y0 + pad + r, x0 + pad : x0 + pad + r])
        where.append((i, y, x))
    return TopPatches(layer, channel, field, torch.stack(patches), scores, where)


def plot_top_patches(top: TopPatches) -> Figure:
    """The patches of :func:`top_patches` in a grid, each titled with its activation.

    Args:
        top: The patches.

    Returns:
        The figure.
    """
    n = len(top.patches)
    cols = min(n, 8)
    title = (
        f"{top.layer}, channel {top.channel}: top {n} patches ({top.field.r}x{top.field.r} "
        "receptive field)"
    )
    fig, axes = panels(title, n, -(-n // cols), cols, size=(1.3, 1.4))
    for i, ax in enumerate(axes):
        p = top.patches[i].float()
        if p.shape[0] == 3:
            ax.imshow(unit_range(p).permute(1, 2, 0).numpy())  # (C, r, r) -> (r, r, C)
        else:
            ax.imshow(p.mean(0).numpy(), cmap="gray", interpolation="nearest")
        ax.set_title(f"{float(top.scores[i]):.3g}", fontsize=7)
    return fig
