"""A synthetic multi-label task: the course's autonomous-driving example, drawn in pixels.

Each scene is a noisy grey image in which every label's shape is present or not,
independently with probability ``p`` (0.5 by default), at a random position:

========================  =================================================
label (default name)      shape
========================  =================================================
``pedestrian``            a thin vertical bar (2 px wide, ~40% of the height)
``car``                   a filled wide rectangle (about 2.2 : 1)
``stop_sign``             a filled disc (an octagon at this resolution)
``traffic_light``         a column of three dots
========================  =================================================

Shapes may overlap, intensities and background vary, and Gaussian noise is added, so
the task is learnable but not trivial (the bar and the column of dots, the disc and the
rectangle are easy to confuse when small or overlapping). Everything is fixed by
``seed``.

:func:`multilabel_scenes` returns the arrays; :func:`write_scenes` saves them as PNG
files with a ``labels.csv`` manifest (:func:`write_manifest`), optionally with a
fraction of the label entries replaced by ``?`` (:func:`missing_mask`), which
``cnnkit train data=.../labels.csv`` reads.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnnkit.errors import CnnkitError

__all__ = [
    "SCENE_LABELS",
    "missing_mask",
    "multilabel_scenes",
    "write_manifest",
    "write_scenes",
]

#: The course's four labels, in column order.
SCENE_LABELS = ("pedestrian", "car", "stop_sign", "traffic_light")
_SHAPES = ("bar", "box", "disc", "dots")


def _draw(canvas: np.ndarray, shape: str, rng: np.random.Generator, level: float) -> None:
    """Draw one shape of grey ``level`` at a random place of ``canvas`` (H, W) in place."""
    H, W = canvas.shape
    s = min(H, W) / 32.0  # shapes scale with the image; sizes below are for 32x32
    yy, xx = np.mgrid[0:H, 0:W]
    if shape == "bar":
        h, w = round(rng.uniform(10, 14) * s), max(1, round(2 * s))
        y0, x0 = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
        canvas[y0 : y0 + h, x0 : x0 + w] = level
    elif shape == "box":
        w, h = round(rng.uniform(10, 13) * s), round(rng.uniform(4.5, 6) * s)
        y0, x0 = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
        canvas[y0 : y0 + h, x0 : x0 + w] = level
    elif shape == "disc":
        r = max(2.0, rng.uniform(3.5, 5) * s)
        cy, cx = rng.uniform(r, H - r), rng.uniform(r, W - r)
        canvas[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = level
    else:  # dots: a column of three
        r, gap = max(0.9, 1.3 * s), max(2.5, 4.0 * s)  # dots stay visible at 16x16
        cy, cx = rng.uniform(r + gap, H - r - gap), rng.uniform(r, W - r)
        for k in (-1, 0, 1):
            canvas[(yy - cy - k * gap) ** 2 + (xx - cx) ** 2 <= r * r] = level


def multilabel_scenes(
    n: int,
    size: int = 32,
    seed: int = 0,
    labels: Sequence[str] = SCENE_LABELS,
    *,
    p: float = 0.5,
    noise: float = 25.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` scenes and their multi-hot labels.

    Args:
        n: Number of images.
        size: Side ``n_H = n_W`` in pixels (16 or more).
        seed: Seed (the same seed gives the same scenes).
        labels: One to four label names; the k-th gets the k-th shape (bar, rectangle,
            disc, column of dots).
        p: Probability that each label is present, independently.
        noise: Standard deviation of the Gaussian pixel noise (grey levels 0-255).

    Returns:
        ``(images, targets)``: uint8 ``(n, 1, size, size)`` and int64 ``(n, L)`` of 0/1.

    Raises:
        CnnkitError: For a bad ``n``, ``size``, ``p`` or number of labels.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise CnnkitError(f"n must be a whole number of images >= 0, got {n!r}; e.g. n=1000.")
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise CnnkitError(f"size must be an integer >= 16 pixels, got {size!r}; e.g. size=32.")
    if not 1 <= len(labels) <= len(_SHAPES):
        raise CnnkitError(
            f"labels must name 1 to {len(_SHAPES)} labels (one per shape), got {len(labels)}."
        )
    if not 0 <= p <= 1:
        raise CnnkitError(f"p must be a probability in [0, 1], got {p!r}.")
    rng = np.random.default_rng(seed)
    L = len(labels)
    targets = (rng.random((n, L)) < p).astype(np.int64)
    images = np.empty((n, 1, size, size), np.uint8)
    for i in range(n):
        canvas = np.full((size, size), rng.uniform(0, 70), np.float64)
        order = rng.permutation(L)  # which shape is drawn on top varies
        for j in order:
            if targets[i, j]:
                _draw(canvas, _SHAPES[j], rng, rng.uniform(150, 255))
        canvas += rng.normal(0, noise, canvas.shape)
        images[i, 0] = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return images, targets


def missing_mask(
    shape: tuple[int, int],
    fraction: float,
    seed: int = 0,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Which label entries to hide: exactly ``round(fraction * entries)`` of them, at random.

    Args:
        shape: ``(N, L)`` of the targets.
        fraction: Fraction of the eligible entries to hide, in [0, 1].
        seed: Seed of the choice.
        rows: Boolean ``(N,)``: only these rows' entries may be hidden (default all).

    Returns:
        Boolean ``(N, L)``, True where the label is missing.
    """
    if not 0 <= fraction <= 1:
        raise CnnkitError(f"the missing fraction must be in [0, 1], got {fraction!r}.")
    N, L = shape
    eligible = np.ones(N, bool) if rows is None else np.asarray(rows, bool)
    cells = np.flatnonzero(np.repeat(eligible, L))  # (N,) -> (N*L,) entry indices
    k = round(fraction * len(cells))
    mask = np.zeros(N * L, bool)
    mask[np.random.default_rng(seed).choice(cells, size=k, replace=False)] = True
    return mask.reshape(N, L)  # (N*L,) -> (N, L)


def write_manifest(
    path: str | os.PathLike,
    files: Sequence[str],
    targets: np.ndarray,
    labels: Sequence[str],
    *,
    missing: np.ndarray | None = None,
    missing_as: str = "?",
    splits: Sequence[str] | None = None,
) -> Path:
    """Write a ``labels.csv`` manifest: ``image,<label1>,...[,split]``.

    Args:
        path: The CSV file to write.
        files: Image paths, relative to the CSV's folder.
        targets: 0/1 ``(N, L)``.
        labels: The label names (column headers).
        missing: Boolean ``(N, L)``: write ``missing_as`` instead of the label there.
        missing_as: ``"?"`` (missing, masked in the loss) or e.g. ``"0"`` (the naive
            reading that counts an unknown label as absent).
        splits: ``train`` / ``dev`` / ``test`` per row, written as a ``split`` column.

    Returns:
        The path written.
    """
    t = np.asarray(targets)
    if t.ndim != 2 or t.shape != (len(files), len(labels)):
        raise CnnkitError(
            f"targets must be (files, labels) = ({len(files)}, {len(labels)}), got {t.shape}."
        )
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", *labels, *(["split"] if splits is not None else [])])
    for i, f in enumerate(files):
        cells = [
            missing_as if missing is not None and missing[i, j] else str(int(t[i, j]))
            for j in range(t.shape[1])
        ]
        w.writerow([f, *cells, *([splits[i]] if splits is not None else [])])
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(buf.getvalue())
    return out


def write_scenes(
    folder: str | os.PathLike,
    n: int,
    size: int = 32,
    seed: int = 0,
    labels: Sequence[str] = SCENE_LABELS,
    *,
    missing: float = 0.0,
    splits: Sequence[str] | None = None,
    hide_in: Sequence[str] = ("train", "dev"),
) -> Path:
    """Draw ``n`` scenes, save them as PNG files and write ``folder/labels.csv``.

    Args:
        folder: Where ``images/00000.png, ...`` and ``labels.csv`` go.
        n: Number of images.
        size: Image side in pixels.
        seed: Seed of the scenes and of the missing entries.
        labels: Label names (see :func:`multilabel_scenes`).
        missing: Fraction of the label entries written as ``?`` (of the rows whose split is
            in ``hide_in``, or of all rows without ``splits``).
        splits: ``train`` / ``dev`` / ``test`` per image (a ``split`` column), or None.
        hide_in: Splits whose labels may be hidden (the test labels stay complete, to
            score on).

    Returns:
        The path of ``labels.csv``.
    """
    from PIL import Image

    images, targets = multilabel_scenes(n, size, seed, labels)
    root = Path(folder)
    (root / "images").mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        name = f"images/{i:05d}.png"
        Image.fromarray(images[i, 0], mode="L").save(root / name)  # (1, H, W) -> (H, W)
        files.append(name)
    rows = None if splits is None else np.isin(np.asarray(splits), list(hide_in))
    mask = missing_mask(targets.shape, missing, seed + 1, rows) if missing else None
    return write_manifest(root / "labels.csv", files, targets, labels, missing=mask, splits=splits)
