"""Drawing for the synthetic sets: textured backgrounds and filled shapes.

Detection (:func:`cnnkit.detect.data.synth_shapes`), segmentation
(:func:`cnnkit.segment.data.synth_segment`) and faces draw with these, so that the task
packages do not import each other.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["shape_mask", "textured_background"]


def textured_background(rng: np.random.Generator, size: int, plain: bool) -> np.ndarray:
    """A float ``(size, size, 3)`` background: one colour, or a gradient plus smooth noise."""
    if plain:
        return np.broadcast_to(rng.integers(0, 256, 3).astype(np.float64), (size, size, 3)).copy()
    c1, c2 = rng.uniform(0, 255, (2, 3))
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    t = xx * math.cos(angle) + yy * math.sin(angle)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
    base = c1 * (1 - t)[..., None] + c2 * t[..., None]  # (n_H, n_W, 3)
    k = int(rng.integers(3, 9))
    coarse = torch.from_numpy(rng.normal(0, 1, (1, 3, k, k)))
    smooth = torch.nn.functional.interpolate(
        coarse, size=(size, size), mode="bicubic", align_corners=False
    )[0].permute(1, 2, 0)  # (3, n_H, n_W) -> (n_H, n_W, 3)
    return base + rng.uniform(10, 40) * smooth.numpy()


def shape_mask(shape: str, x0: int, y0: int, s: int, size: int, flip: bool):
    """A PIL ``L`` image, 255 inside a ``shape`` of side ``s`` at ``(x0, y0)``, 0 elsewhere.

    Args:
        shape: ``circle``, ``square``, ``triangle`` or ``diamond``.
        x0: Left column of its bounding square.
        y0: Top row.
        s: Side in pixels.
        size: Side of the (square) canvas.
        flip: Triangles point down instead of up.

    Returns:
        The mask as a PIL image.
    """
    from PIL import Image, ImageDraw

    mask = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(mask)
    x1, y1 = x0 + s - 1, y0 + s - 1
    if shape == "circle":
        d.ellipse([x0, y0, x1, y1], fill=255)
    elif shape == "square":
        d.rectangle([x0, y0, x1, y1], fill=255)
    elif shape == "triangle":
        apex, base = (y1, y0) if flip else (y0, y1)
        d.polygon([(x0 + (s - 1) / 2, apex), (x1, base), (x0, base)], fill=255)
    else:  # diamond
        mx, my = x0 + (s - 1) / 2, y0 + (s - 1) / 2
        d.polygon([(mx, y0), (x1, my), (mx, y1), (x0, my)], fill=255)
    return mask
