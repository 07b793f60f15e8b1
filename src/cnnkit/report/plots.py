"""Plots of a training run and of what a trained network does with single images.

- :func:`plot_learning_curves`: loss and error (%) against epochs from a run's history or
  ``results.csv``, with the human-level error as a dashed line (the course's bias/variance
  picture: avoidable bias = training error - human-level error, variance = dev error -
  training error);
- :func:`plot_confusion`: the row-normalized confusion matrix, readable up to 100 classes;
- :func:`plot_gallery` and :func:`plot_top_losses`: images with titles, the latter the ones
  the model gets most wrong (highest ``-log p(true class)``);
- :func:`saliency` and :func:`plot_saliency`: the gradient of a class score with respect to
  the input pixels (Simonyan et al. 2013, "Deep Inside Convolutional Networks");
- :func:`plot_augmentation`: :func:`cnnkit.data.augment.preview_grid` as a figure;
- :func:`draw_boxes` and :func:`overlay_mask` (torchvision's ``draw_bounding_boxes`` and
  ``draw_segmentation_masks``) with their figures :func:`plot_boxes` and :func:`plot_masks`.

Every plot returns a :class:`matplotlib.figure.Figure` (no pyplot, no display needed) that
holds the plotted numbers: ``ax.get_lines()[i].get_ydata()``, ``ax.images[0].get_array()``.
"""

from __future__ import annotations

import csv
import math
import operator
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.report.filters import panels, unit_range

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from cnnkit.data.augment import Augment

__all__ = [
    "PALETTE",
    "class_color",
    "draw_boxes",
    "learning_curve_data",
    "overlay_mask",
    "plain",
    "plot_augmentation",
    "plot_boxes",
    "plot_confusion",
    "plot_gallery",
    "plot_learning_curves",
    "plot_masks",
    "plot_pr_curves",
    "plot_saliency",
    "plot_top_losses",
    "saliency",
    "top_loss_order",
]

#: Fixed colours of classes in box and mask overlays (matplotlib's ``tab20``, RGB 0-255):
#: class ``k`` is ``PALETTE[k % 20]`` (see :func:`class_color`).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (199, 199, 199),
    (219, 219, 141),
    (158, 218, 229),
)

#: Confusion matrices up to this many classes write the count in every cell.
CELL_TEXT_MAX = 20


def class_color(k: int) -> tuple[int, int, int]:
    """The overlay colour of class ``k`` (RGB 0-255): ``PALETTE[k % len(PALETTE)]``."""
    return PALETTE[int(k) % len(PALETTE)]


# ----------------------------------------------------------------------------------------
# learning curves


def _number(v: Any) -> float:
    """A ``results.csv`` cell or history value as a float (NaN when empty or not a number)."""
    if v is None:
        return math.nan
    if isinstance(v, torch.Tensor):
        v = v.item()
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def learning_curve_data(
    history: Sequence[dict[str, Any]] | str | os.PathLike,
) -> dict[str, list[float]]:
    """The columns of a run's history as lists of floats, one entry per epoch.

    Args:
        history: The rows of a run's ``results.csv`` (``FitResult.history``: one dict per
            epoch with ``epoch``, ``train_loss``, ``train_accuracy``, ``dev_loss``, ...), or
            the path of a ``results.csv`` (or of the run folder holding it).

    Returns:
        ``{column: values}``; empty cells and missing keys are NaN, and ``epoch`` is
        ``1..n`` when the rows have none.

    Raises:
        CnnkitError: For a missing file, no rows, or no ``train_loss`` column.
    """
    if isinstance(history, (str, os.PathLike)):
        path = Path(history)
        if path.is_dir():
            path = path / "results.csv"
        if not path.is_file():
            raise CnnkitError(
                f"{str(history)!r} is not a results.csv; pass a run's results.csv or its "
                "FitResult.history."
            )
        with open(path, newline="") as f:
            rows: list[dict[str, Any]] = list(csv.DictReader(f))
        where = repr(str(path))
    else:
        rows = [dict(r) for r in history]
        where = "the history"
    if not rows:
        raise CnnkitError(f"{where} has no epochs; train at least one epoch before plotting.")
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    if "train_loss" not in keys:
        raise CnnkitError(
            f"{where} has no train_loss column; pass the rows of a run's results.csv "
            "(FitResult.history)."
        )
    data = {k: [_number(r.get(k)) for r in rows] for k in keys}
    if "epoch" not in data or any(math.isnan(e) for e in data["epoch"]):
        data["epoch"] = [float(i + 1) for i in range(len(rows))]
    return data


def _finite(values: list[float]) -> bool:
    return any(math.isfinite(v) for v in values)


def _last(values: list[float]) -> float:
    """The last finite value (NaN when none)."""
    return next((v for v in reversed(values) if math.isfinite(v)), math.nan)


def _curve_panel(
    ax: Axes, x: list[float], data: dict[str, list[float]], name: str, f: Any, ylabel: str
) -> None:
    """Train and dev lines of one metric, ``f`` applied to each value."""
    from matplotlib.ticker import MaxNLocator

    for split, style in (("train", "o-"), ("dev", "s-")):
        key = f"{split}_{name}"
        if key in data and _finite(data[key]):
            ax.plot(x, [f(v) for v in data[key]], style, label=split, markersize=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def plot_learning_curves(
    history: Sequence[dict[str, Any]] | str | os.PathLike,
    human: float | None = None,
    title: str = "",
) -> Figure:
    """Loss and error against epochs, train and dev side by side: bias and variance at a glance.

    Panel 1 is the loss; panel 2 (when there is an accuracy column) the error in percent,
    ``100 * (1 - accuracy)``, with the human-level error as a dashed line: the gap from
    human to train is the avoidable bias, from train to dev the variance. Every other
    ``train_X`` / ``dev_X`` pair gets a panel of its own, as is.

    Args:
        history: The rows of a run's ``results.csv`` (``FitResult.history``) or its path.
        human: Human-level error as a fraction (0.02 for 2%), or None.
        title: The figure's title.

    Returns:
        The figure; lines are labelled ``train``, ``dev`` and ``human-level 2.0%``.

    Raises:
        CnnkitError: For no epochs, no ``train_loss`` column, or a human-level error
            outside ``[0, 1)``.
    """
    from matplotlib.figure import Figure

    if human is not None and (
        isinstance(human, bool) or not isinstance(human, (int, float)) or not 0 <= human < 1
    ):
        raise CnnkitError(
            f"human must be an error rate from 0 to 1, got {human!r}; e.g. human=0.02 for 2%."
        )
    data = learning_curve_data(history)
    x = data["epoch"]
    extra = sorted(
        {
            k.split("_", 1)[1]
            for k in data
            if k.startswith(("train_", "dev_")) and k.split("_", 1)[1] not in ("loss", "accuracy")
        }
    )
    has_acc = any(f"{s}_accuracy" in data for s in ("train", "dev"))
    n = 1 + has_acc + len(extra)
    fig = Figure(figsize=(4.5 * n, 3.6), layout="constrained")
    if title:
        fig.suptitle(plain(title), fontsize=10)
    axes = [fig.add_subplot(1, n, i + 1) for i in range(n)]
    _curve_panel(axes[0], x, data, "loss", float, "loss")
    axes[0].set_title("loss", fontsize=9)
    if has_acc:
        ax = axes[1]
        _curve_panel(ax, x, data, "accuracy", lambda v: 100 * (1 - v), "error (%)")
        if human is not None:
            h = 100 * human
            ax.axhline(h, color="k", linestyle="--", linewidth=1, label=f"human-level {h:.1f}%")
        # no gaps in the title: a run's train numbers are running means over augmented
        # batches; the diagnosis measures the gaps on the best weights in eval mode
        ax.set_title("error", fontsize=9)
    for ax, name in zip(axes[1 + has_acc :], extra):
        _curve_panel(ax, x, data, name, float, name)
        ax.set_title(name, fontsize=9)
    for ax in axes:
        if ax.get_lines():
            ax.legend(fontsize=8)
    return fig


# ----------------------------------------------------------------------------------------
# confusion matrix


def plain(text: object) -> str:
    """Text for a matplotlib label, shown as written: ``$`` does not start mathtext.

    Args:
        text: A class name, file name or title.

    Returns:
        The text with every ``$`` escaped.
    """
    return str(text).replace("$", r"\$")


def plot_confusion(
    confusion: torch.Tensor | np.ndarray,
    classes: Sequence[str] | None = None,
    normalize: bool = True,
    title: str = "",
) -> Figure:
    """A confusion matrix as an image: rows the true class, columns the predicted one.

    The colour is each row's share (a row sums to 1: the recall of its class on the
    diagonal) when ``normalize``, else the count. Up to 20 classes every cell shows its
    count; above that only the colours, on a square-root scale so that small confusions
    stay visible, with a figure that grows with the number of classes (at most 12 inches
    wide) and smaller tick labels (at least 4 pt), one per class.

    Args:
        confusion: ``(K, K)`` counts, ``confusion[i, j]`` = examples of class ``i``
            predicted as ``j``.
        classes: ``K`` class names (None: ``0..K-1``).
        normalize: Colour by the row-normalized share instead of the count; a class
            without examples has a row of zeros.
        title: Title; the accuracy is added to it.

    Returns:
        The figure; ``fig.axes[0].images[0].get_array()`` holds the coloured numbers.

    Raises:
        CnnkitError: For a matrix that is not square, or a wrong number of class names.
    """
    from matplotlib.figure import Figure

    c = confusion.detach().cpu().numpy() if isinstance(confusion, torch.Tensor) else confusion
    c = np.asarray(c, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] == 0:
        raise CnnkitError(
            f"confusion must be a square (K, K) matrix of counts, got shape {c.shape}; "
            "rows are true classes, columns predicted ones."
        )
    K = c.shape[0]
    names = [str(i) for i in range(K)] if classes is None else [plain(s) for s in classes]
    if len(names) != K:
        raise CnnkitError(
            f"classes has {len(names)} names for a {K}x{K} confusion matrix; pass one name per row."
        )
    support = c.sum(1, keepdims=True)  # (K, 1)
    share = c / np.where(support > 0, support, 1.0)  # zero-support rows stay 0
    shown = share if normalize else c
    side = min(12.0, 4.5 + 0.25 * K)
    fig = Figure(figsize=(side, side - 0.8), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    vmax = 1.0 if normalize else max(float(c.max()), 1.0)
    # without numbers in the cells, a square-root colour scale keeps the few-percent
    # confusions off the diagonal visible next to the diagonal's large shares
    from matplotlib.colors import Normalize, PowerNorm

    norm = PowerNorm(0.5, 0.0, vmax) if K > CELL_TEXT_MAX else Normalize(0.0, vmax)
    im = ax.imshow(shown, cmap="Blues", norm=norm, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true class" if normalize else "count")
    cell_pt = (side - 1.5) * 72 / K  # points per cell, roughly
    tick_pt = max(4.0, min(10.0, 0.6 * cell_pt))
    ax.set_xticks(range(K), labels=names, rotation=90, fontsize=tick_pt)
    ax.set_yticks(range(K), labels=names, fontsize=tick_pt)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    total = c.sum()
    acc = f"accuracy {100 * np.trace(c) / total:.1f}% of {int(total)}" if total > 0 else ""
    ax.set_title(": ".join(s for s in (title, acc) if s), fontsize=10)
    if K <= CELL_TEXT_MAX:
        text_pt = min(9.0, 0.35 * cell_pt)
        for i in range(K):
            for j in range(K):
                light = shown[i, j] / vmax > 0.5  # dark cell: white text
                ax.text(
                    j,
                    i,
                    f"{c[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=text_pt,
                    color="white" if light else "black",
                )
    return fig


# ----------------------------------------------------------------------------------------
# galleries and top losses


def _hwc(images: torch.Tensor, what: str) -> np.ndarray:
    """Images ``(n, n_C, n_H, n_W)`` as floats in [0, 1], ``(n, n_H, n_W, n_C)``.

    uint8 images are divided by 255; float images outside [0, 1] (normalized ones) are
    each rescaled to 0..1.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise CnnkitError(
            f"{what} wants images (n, 1 or 3, n_H, n_W), got {shape}; stack them with "
            "torch.stack or add the channel axis with x.unsqueeze(1)."
        )
    x = images.detach().cpu()
    if x.dtype == torch.uint8:
        x = x.float() / 255
    else:
        x = x.float()
        if len(x) and (x.min() < 0 or x.max() > 1):
            x = torch.stack([unit_range(t) for t in x])
    return x.permute(0, 2, 3, 1).numpy()  # (n, n_C, n_H, n_W) -> (n, n_H, n_W, n_C)


def plot_gallery(
    images: torch.Tensor,
    titles: Sequence[str],
    cols: int = 8,
    title: str = "",
    colors: Sequence[str] | None = None,
) -> Figure:
    """A grid of small images, each with its title.

    Args:
        images: ``(n, n_C, n_H, n_W)`` with ``n_C`` 1 (grey) or 3 (RGB): float in [0, 1]
            or uint8 (float images outside [0, 1] are each rescaled to 0..1).
        titles: ``n`` titles, one per image (may hold line breaks).
        cols: Panels per row.
        title: The figure's title.
        colors: ``n`` title colours (e.g. ``"green"`` right, ``"red"`` wrong), or None.

    Returns:
        The figure; panel ``i`` shows image ``i`` (``ax.images[0].get_array()``).

    Raises:
        CnnkitError: For a wrong image shape, or titles / colours not one per image.
    """
    x = _hwc(images, "plot_gallery")
    n = len(x)
    titles = [plain(t) for t in titles]
    if len(titles) != n or (colors is not None and len(colors) != n):
        raise CnnkitError(
            f"plot_gallery got {n} images, {len(titles)} titles and "
            f"{'no' if colors is None else len(colors)} colours; pass one title (and colour) "
            "per image."
        )
    if cols < 1:
        raise CnnkitError(f"cols must be at least 1, got {cols!r}; e.g. cols=8.")
    cols = max(1, min(int(cols), n))
    rows = max(1, math.ceil(n / cols))
    lines = max((t.count("\n") + 1 for t in titles), default=1)
    fig, axes = panels(title, n, rows, cols, size=(1.4, 1.3 + 0.12 * lines))
    for i, ax in enumerate(axes):
        if x.shape[-1] == 1:
            ax.imshow(x[i, :, :, 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            ax.imshow(x[i], interpolation="nearest")
        ax.set_title(titles[i], fontsize=7, **({} if colors is None else {"color": colors[i]}))
    return fig


def _losses(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``-log p(true class)`` per example, float64 ``(n,)``."""
    p = torch.as_tensor(probs).detach().cpu().double()
    y = torch.as_tensor(labels).detach().cpu().long().reshape(-1)  # (n,)
    if p.ndim != 2 or len(p) != len(y):
        raise CnnkitError(
            f"probs must be (n, K) softmax probabilities for n={len(y)} labels, got "
            f"{tuple(p.shape)}; pass logits.softmax(1)."
        )
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise CnnkitError(
            f"labels must be class indices 0..{p.shape[1] - 1}, got "
            f"{int(y.min())}..{int(y.max())}; pass the true class of each image."
        )
    p_true = p.gather(1, y[:, None])[:, 0]  # (n, 1) -> (n,)
    return -torch.log(p_true.clamp_min(1e-300))


def top_loss_order(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The examples by loss ``-log p(true class)``, highest first (ties keep their order).

    Args:
        probs: ``(n, K)`` softmax probabilities.
        labels: ``(n,)`` true classes.

    Returns:
        int64 ``(n,)`` indices.
    """
    return torch.sort(_losses(probs, labels), descending=True, stable=True).indices


def plot_top_losses(
    images: torch.Tensor,
    labels: torch.Tensor,
    preds: torch.Tensor | None,
    probs: torch.Tensor,
    classes: Sequence[str] | None = None,
    k: int = 16,
) -> Figure:
    """The ``k`` images with the highest loss: what the model gets most confidently wrong.

    Each title reads ``true 3 / pred 8 (91%) / loss 2.41`` (the predicted class and its
    probability), red when the prediction is wrong and green when right.

    Args:
        images: ``(n, n_C, n_H, n_W)`` images to show (uint8, or float in [0, 1]).
        labels: ``(n,)`` true classes.
        preds: ``(n,)`` predicted classes (None: the argmax of ``probs``).
        probs: ``(n, K)`` softmax probabilities.
        classes: ``K`` class names (None: the indices).
        k: Images to show.

    Returns:
        The figure (:func:`plot_gallery`).
    """
    p = torch.as_tensor(probs).detach().cpu().double()
    loss = _losses(p, labels)
    y = torch.as_tensor(labels).detach().cpu().long().reshape(-1)  # (n,)
    yhat = p.argmax(1) if preds is None else torch.as_tensor(preds).detach().cpu().long()
    if len(images) != len(y) or yhat.shape != y.shape:
        raise CnnkitError(
            f"plot_top_losses got {len(images)} images, {len(y)} labels and "
            f"{len(yhat)} predictions; pass one of each per image."
        )
    names = [str(i) for i in range(p.shape[1])] if classes is None else [str(c) for c in classes]
    if len(names) != p.shape[1]:
        raise CnnkitError(
            f"classes has {len(names)} names for {p.shape[1]} probabilities per image; pass "
            "one name per class."
        )
    order = top_loss_order(p, y)[: max(0, int(k))]
    titles, colors = [], []
    for i in order.tolist():
        t, q = int(y[i]), int(yhat[i])
        titles.append(
            f"true {names[t]}\npred {names[q]} ({100 * float(p[i, q]):.0f}%)\n"
            f"loss {float(loss[i]):.2f}"
        )
        colors.append("green" if t == q else "red")
    return plot_gallery(images[order], titles, cols=8, title="top losses", colors=colors)


# ----------------------------------------------------------------------------------------
# saliency


def _index(v: Any) -> int | None:
    """``v`` as an int index (Python, NumPy or 0-d tensor integer), else None."""
    if isinstance(v, bool):
        return None
    try:
        return operator.index(v)
    except TypeError:
        return None


def saliency(model: nn.Module, image: torch.Tensor, target: int | None = None) -> torch.Tensor:
    """Saliency map: how much each pixel changes a class score (Simonyan et al. 2013).

    The gradient of the score (the logit, before softmax) of class ``target`` with respect
    to the input, ``|d score / d x|``, maximum over the channels. The model runs in eval
    mode (its mode is restored afterwards) and the gradient is taken with respect to the
    input only: the parameters' ``.grad`` are left as they were.

    A two-class net with one sigmoid output ``z`` (``(1, 1)`` scores) has classes 0 and
    1: ``log p1 - log p0 = z``, so the map of either class is ``|d z / d x|``.

    Args:
        model: A classifier returning ``(1, K)`` scores (``(1, 1)``: two classes).
        image: One image as the model eats it (normalized) ``(n_C, n_H, n_W)`` or
            ``(1, n_C, n_H, n_W)``.
        target: The class whose score to explain (None: the predicted class).

    Returns:
        float ``(n_H, n_W)``, on the image's device.

    Raises:
        CnnkitError: For a batch of several images, a non-float image, a model whose
            output is not ``(1, K)`` scores, or a target outside ``0..K-1``.
    """
    x = image.unsqueeze(0) if image.dim() == 3 else image  # (n_C, n_H, n_W) -> (1, n_C, n_H, n_W)
    if x.dim() != 4 or x.shape[0] != 1:
        raise CnnkitError(
            f"saliency takes one image (n_C, n_H, n_W), got shape {tuple(image.shape)}; "
            "pass images[i]."
        )
    if not x.is_floating_point():
        raise CnnkitError(
            f"saliency needs the float image the model eats, got {x.dtype}; convert and "
            "normalize it as in training (e.g. data.preprocess)."
        )
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(param.device)
    x = x.detach().clone().requires_grad_(True)
    was_training = model.training
    try:
        model.eval()
        with torch.enable_grad():
            scores = model(x)
            if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or len(scores) != 1:
                shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores)
                raise CnnkitError(
                    f"saliency needs a classifier returning (1, K) scores, got {shape}; "
                    "use a classification model."
                )
            K = scores.shape[1]
            n_classes = 2 if K == 1 else K  # one sigmoid output: classes 0 and 1
            t = int(scores[0].argmax()) if target is None else _index(target)
            if t is None or not 0 <= t < n_classes:
                raise CnnkitError(
                    f"target must be a class index from 0 to {n_classes - 1}, got {target!r}; "
                    "or None for the predicted class."
                )
            (grad,) = torch.autograd.grad(scores[0, 0 if K == 1 else t], x)
    finally:
        model.train(was_training)
    sal = grad[0].abs().amax(0)  # (1, n_C, n_H, n_W) -> (n_H, n_W)
    return sal.detach().to(image.device)


def plot_saliency(image: torch.Tensor, sal: torch.Tensor, title: str = "") -> Figure:
    """An image, its saliency map, and the map over the image.

    Args:
        image: ``(n_C, n_H, n_W)`` (or a batch of one), any range: shown rescaled to 0..1
            (in grey, the mean over the channels, unless ``n_C`` is 1 or 3).
        sal: ``(n_H, n_W)`` saliency (:func:`saliency`).
        title: The figure's title.

    Returns:
        The figure; the second panel holds the raw saliency values.

    Raises:
        CnnkitError: For shapes that do not match.
    """
    x = image[0] if image.dim() == 4 and len(image) == 1 else image
    s = sal.detach().float().cpu()
    if x.dim() != 3 or s.shape != x.shape[1:]:
        raise CnnkitError(
            f"plot_saliency wants an image (n_C, n_H, n_W) and a saliency (n_H, n_W), got "
            f"{tuple(image.shape)} and {tuple(sal.shape)}; pass images[i] and saliency(...)."
        )
    x = x.detach().cpu()
    if x.shape[0] not in (1, 3):
        x = x.float().mean(0, keepdim=True)  # (n_C, n_H, n_W) -> (1, n_H, n_W)
    shown = _hwc(x.unsqueeze(0), "plot_saliency")[0]  # (1, n_C, n_H, n_W) -> (n_H, n_W, n_C)
    fig, axes = panels(plain(title), 3, 1, 3, size=(2.6, 2.6))
    grey = x.shape[0] == 1
    kw: dict[str, Any] = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0} if grey else {}
    axes[0].imshow(shown[:, :, 0] if grey else shown, interpolation="nearest", **kw)
    axes[0].set_title("image", fontsize=8)
    axes[1].imshow(s.numpy(), cmap="hot", interpolation="nearest")
    axes[1].set_title("saliency |d score / d x|", fontsize=8)
    axes[2].imshow(shown[:, :, 0] if grey else shown, interpolation="nearest", **kw)
    axes[2].imshow(unit_range(s).numpy(), cmap="hot", alpha=0.5, interpolation="nearest")
    axes[2].set_title("overlay", fontsize=8)
    return fig


# ----------------------------------------------------------------------------------------
# augmentation


def plot_augmentation(
    images: torch.Tensor, augment: Augment, k: int = 5, seed: int = 0, title: str = ""
) -> Figure:
    """Augmentation at a glance: one row per image, the original then ``k`` augmented copies.

    Args:
        images: uint8 ``(n, n_C, n_H, n_W)``, ``n_C`` 1 or 3.
        augment: The augmentation, e.g. ``Augment.from_config(TrainConfig(aug="strong"))``.
        k: Augmented copies per image.
        seed: Seed of the augmentation (same seed, same picture).
        title: The figure's title.

    Returns:
        The figure; ``fig.axes[0].images[0].get_array()`` is
        :func:`cnnkit.data.augment.preview_grid`'s picture.
    """
    from matplotlib.figure import Figure

    from cnnkit.data.augment import preview_grid

    grid = preview_grid(images, augment, k, seed)  # (height, width, 3) uint8
    height, width = grid.shape[:2]
    inch = min(12.0 / width, 8.0 / height)  # inches per pixel: fit 12 x 8 inches
    fig = Figure(figsize=(width * inch + 0.3, height * inch + 0.6), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(grid, interpolation="nearest")
    tile = (width - 2) / (1 + int(k))  # tile + 2-pixel gap
    ax.set_xticks(
        [2 + j * tile + (tile - 2) / 2 for j in range(1 + int(k))],
        labels=["original"] + [f"aug {j}" for j in range(1, int(k) + 1)],
        fontsize=8,
    )
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        fig.suptitle(plain(title), fontsize=10)
    return fig


# ----------------------------------------------------------------------------------------
# detection and segmentation overlays


def _rgb_uint8(image: torch.Tensor, what: str) -> torch.Tensor:
    """``image`` (1 or 3, n_H, n_W), uint8 or float in [0, 1], as uint8 (3, n_H, n_W)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] not in (1, 3):
        shape = tuple(image.shape) if hasattr(image, "shape") else type(image).__name__
        raise CnnkitError(
            f"{what} wants one image (1 or 3, n_H, n_W), got {shape}; pass images[i]."
        )
    x = image.detach().cpu()
    if x.dtype != torch.uint8:
        if not x.is_floating_point():
            raise CnnkitError(f"{what} wants a uint8 or float image, got {x.dtype}.")
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise CnnkitError(
                f"{what} wants a float image in [0, 1], got values "
                f"{float(x.min()):.2f}..{float(x.max()):.2f}; undo the normalization "
                "(x * std + mean) or pass the uint8 image."
            )
        x = (x.float() * 255).round().to(torch.uint8)
    return x.expand(3, -1, -1).contiguous()  # (1 or 3, n_H, n_W) -> (3, n_H, n_W)


def _indices(v: Any, n: int, what: str) -> list[int]:
    t = torch.as_tensor(v).detach().cpu().reshape(-1)  # (n,)
    if len(t) != n:
        raise CnnkitError(f"draw_boxes got {n} boxes and {len(t)} {what}; pass one per box.")
    return [int(a) for a in t.tolist()] if what == "labels" else [float(a) for a in t.tolist()]


def draw_boxes(
    image: torch.Tensor,
    boxes: torch.Tensor,
    labels: Sequence[int] | torch.Tensor | None = None,
    scores: Sequence[float] | torch.Tensor | None = None,
    classes: Sequence[str] | None = None,
    width: int = 2,
) -> torch.Tensor:
    """Bounding boxes drawn on an image (torchvision's ``draw_bounding_boxes``).

    Each box is drawn in its class's colour (:func:`class_color`) with a text such as
    ``car 0.87`` (class name and score); the inside is not filled.

    Args:
        image: ``(1 or 3, n_H, n_W)``, uint8 or float in [0, 1].
        boxes: ``(N, 4)`` absolute ``(x1, y1, x2, y2)`` pixel corners.
        labels: ``N`` class indices, or None.
        scores: ``N`` confidences, or None.
        classes: Class names indexed by label (None: the label numbers).
        width: Line width in pixels.

    Returns:
        uint8 ``(3, n_H, n_W)``.

    Raises:
        CnnkitError: For a wrong image or box shape, a box with ``x2 < x1`` or ``y2 < y1``,
            or labels / scores that are not one per box.
    """
    from torchvision.utils import draw_bounding_boxes

    img = _rgb_uint8(image, "draw_boxes")
    b = torch.as_tensor(boxes).detach().cpu().float()
    if b.ndim == 1 and b.numel() == 0:
        b = b.reshape(0, 4)  # () -> (0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise CnnkitError(
            f"boxes must be (N, 4) corners (x1, y1, x2, y2), got shape {tuple(b.shape)}; "
            "convert (cx, cy, w, h) with torchvision.ops.box_convert."
        )
    if not torch.isfinite(b).all():
        raise CnnkitError("boxes hold NaN or infinite corners; draw only finite boxes.")
    bad = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise CnnkitError(
            f"box {i} {[round(v, 2) for v in b[i].tolist()]} has x2 < x1 or y2 < y1; pass "
            "(x1, y1, x2, y2) corners (torchvision.ops.box_convert converts (x, y, w, h))."
        )
    n = len(b)
    if n == 0:
        return img
    ids = _indices(labels, n, "labels") if labels is not None else None
    conf = _indices(scores, n, "scores") if scores is not None else None
    texts: list[str] | None = None
    if ids is not None or conf is not None:
        texts = []
        for i in range(n):
            parts = []
            if ids is not None:
                if classes is not None and not 0 <= ids[i] < len(classes):
                    raise CnnkitError(
                        f"label {ids[i]} has no name among the {len(classes)} classes; pass "
                        "the class names the detector was trained with."
                    )
                parts.append(str(classes[ids[i]]) if classes is not None else str(ids[i]))
            if conf is not None:
                parts.append(f"{conf[i]:.2f}")
            texts.append(" ".join(parts))
    colors = [class_color(i) for i in ids] if ids is not None else [PALETTE[0]] * n
    return draw_bounding_boxes(img, b, labels=texts, colors=colors, width=int(width))


def overlay_mask(
    image: torch.Tensor,
    mask: torch.Tensor,
    num_classes: int | None = None,
    alpha: float = 0.5,
) -> torch.Tensor:
    """A segmentation mask blended over an image (torchvision's ``draw_segmentation_masks``).

    Pixels of class ``k > 0`` become ``(1 - alpha) * image + alpha * class_color(k)``
    (rounded); class 0, the background, is left exactly as it was.

    Args:
        image: ``(1 or 3, n_H, n_W)``, uint8 or float in [0, 1].
        mask: ``(n_H, n_W)`` integer class per pixel.
        num_classes: Number of classes including the background (None: ``mask.max() + 1``).
        alpha: Opacity of the colours, 0..1.

    Returns:
        uint8 ``(3, n_H, n_W)``.

    Raises:
        CnnkitError: For a mask of another size than the image, a non-integer mask, a
            class outside ``0..num_classes-1``, or ``alpha`` outside [0, 1].
    """
    from torchvision.utils import draw_segmentation_masks

    img = _rgb_uint8(image, "overlay_mask")
    m = torch.as_tensor(mask).detach().cpu()
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]  # (1, n_H, n_W) -> (n_H, n_W)
    if m.shape != img.shape[1:]:
        raise CnnkitError(
            f"mask has shape {tuple(m.shape)} but the image is {tuple(img.shape[1:])}; pass "
            "the (n_H, n_W) mask of this image (resize with nearest interpolation)."
        )
    if m.is_floating_point() or m.dtype == torch.bool:
        raise CnnkitError(
            f"mask must hold integer class indices, got {m.dtype}; use mask.long() "
            "(argmax over the class scores for a model's output)."
        )
    if not 0 <= alpha <= 1:
        raise CnnkitError(f"alpha must be from 0 to 1, got {alpha!r}; e.g. alpha=0.5.")
    m = m.long()
    K = int(m.max()) + 1 if num_classes is None else int(num_classes)
    if m.numel() and (m.min() < 0 or m.max() >= K):
        raise CnnkitError(
            f"mask holds classes {int(m.min())}..{int(m.max())} but num_classes={K}; pass "
            "the number of classes including the background (map ignore values such as "
            "255 to 0 first)."
        )
    present = [k for k in range(1, K) if (m == k).any()]
    if not present:
        return img
    masks = torch.stack([m == k for k in present])  # (len(present), n_H, n_W), disjoint
    colors = [class_color(k) for k in present]
    # blend in float and round (uint8 blending in torchvision truncates)
    out = draw_segmentation_masks(img.float() / 255, masks, alpha=float(alpha), colors=colors)
    out = (out * 255).round().clamp(0, 255).to(torch.uint8)
    return torch.where(m > 0, out, img)  # background exactly unchanged


def _figure_of(rgb: torch.Tensor, title: str) -> tuple[Figure, Axes]:
    """A figure showing one uint8 ``(3, n_H, n_W)`` image."""
    from matplotlib.figure import Figure

    n_H, n_W = rgb.shape[1:]
    s = 6.0 / max(n_H, n_W)
    fig = Figure(figsize=(max(2.5, n_W * s), max(2.5, n_H * s) + 0.4), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(rgb.permute(1, 2, 0).numpy(), interpolation="nearest")  # (3, H, W) -> (H, W, 3)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return fig, ax


def plot_boxes(
    image: torch.Tensor,
    boxes: torch.Tensor,
    labels: Sequence[int] | torch.Tensor | None = None,
    scores: Sequence[float] | torch.Tensor | None = None,
    classes: Sequence[str] | None = None,
    width: int = 2,
    title: str = "",
) -> Figure:
    """A figure of :func:`draw_boxes` (same arguments, plus a title).

    Returns:
        The figure; ``fig.axes[0].images[0].get_array()`` is the drawn image ``(n_H, n_W, 3)``.
    """
    return _figure_of(draw_boxes(image, boxes, labels, scores, classes, width), title)[0]


def plot_masks(
    image: torch.Tensor,
    mask: torch.Tensor,
    num_classes: int | None = None,
    classes: Sequence[str] | None = None,
    alpha: float = 0.5,
    title: str = "",
) -> Figure:
    """A figure of :func:`overlay_mask` with a legend of the classes present.

    Args:
        image: ``(1 or 3, n_H, n_W)``, uint8 or float in [0, 1].
        mask: ``(n_H, n_W)`` integer class per pixel.
        num_classes: Number of classes including the background (None: from the mask).
        classes: Class names indexed by class (None: the numbers).
        alpha: Opacity of the colours.
        title: The figure's title.

    Returns:
        The figure; ``fig.axes[0].images[0].get_array()`` is the overlay ``(n_H, n_W, 3)``.
    """
    from matplotlib.patches import Patch

    rgb = overlay_mask(image, mask, num_classes, alpha)
    fig, ax = _figure_of(rgb, title)
    m = torch.as_tensor(mask).detach().cpu().long()
    present = [int(k) for k in torch.unique(m).tolist() if k > 0]
    if present:
        handles = [
            Patch(
                color=tuple(c / 255 for c in class_color(k)),
                label=str(classes[k]) if classes is not None and k < len(classes) else str(k),
            )
            for k in present
        ]
        ax.legend(handles=handles, fontsize=7, loc="upper right", framealpha=0.7)
    return fig


def plot_pr_curves(
    recall: Sequence[float], precision: dict[str, Sequence[float]], title: str = ""
) -> Figure:
    """Precision against recall per class (COCO's interpolated curves at IoU 0.5).

    Args:
        recall: The recall levels (COCO: 101 points, 0 to 1).
        precision: ``{class: precision at each recall level}``; ``-1`` (COCO's "no
            data") is left out of the line.
        title: Figure title.

    Returns:
        The figure; each line is labelled ``class (AP x.xxx)`` with AP the mean precision.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    r = np.asarray(recall, dtype=float)
    for name, p in precision.items():
        p = np.asarray(p, dtype=float)
        ok = p > -1
        ap = float(p[ok].mean()) if ok.any() else float("nan")
        ax.plot(r[ok], p[ok], label=plain(f"{name} (AP {ap:.3f})"))
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if precision:
        ax.legend(fontsize=8, loc="lower left")
    if title:
        ax.set_title(plain(title), fontsize=10)
    return fig
