"""Segmentation metrics from one confusion matrix, with the averaging stated.

Every metric here is computed from the per-pixel confusion matrix ``cm`` of shape
``(C, C)`` (row: the true class, column: the predicted class), summed over all
pixels of all images (a *global* average over pixels, not a mean of per-image
scores). Pixels whose true class is ``ignore_index`` (255, the "void" of VOC-style
masks) are left out.

Per class ``c``: ``TP = cm[c, c]``, ``FP = sum(cm[:, c]) - TP``, ``FN = sum(cm[c, :]) - TP``;

- IoU (Jaccard) ``= TP / (TP + FP + FN)``;
- Dice (F1) ``= 2 TP / (2 TP + FP + FN)``;
- pixel accuracy ``= trace(cm) / sum(cm)``.

Empty classes: a class absent from both the masks and the predictions has no IoU or
Dice (NaN, nothing to score) and is left out of the means; a class absent from the
masks but predicted scores 0. ``mean_iou`` and ``mean_dice`` are the plain means over
the classes that have a score (macro averages: every class weighs the same, however
many pixels it has).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cnnkit.errors import CnnkitError

__all__ = [
    "IGNORE_INDEX",
    "check_mask",
    "confusion_matrix",
    "dice_per_class",
    "iou_per_class",
    "mean_dice",
    "mean_iou",
    "pixel_accuracy",
    "segmentation_scores",
]

IGNORE_INDEX = 255


def check_mask(mask: np.ndarray | torch.Tensor, num_classes: int, file: str = "") -> None:
    """Refuse a mask with values that are not class indices (or ``IGNORE_INDEX``).

    Args:
        mask: Class indices, any shape.
        num_classes: ``C``; valid values are ``0 .. C-1`` and 255.
        file: The mask's file, named in the message.

    Raises:
        CnnkitError: Naming the file, the first bad value and the valid range.
    """
    m = mask.long() if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask)).long()
    bad = (m < 0) | ((m >= num_classes) & (m != IGNORE_INDEX))
    if bool(bad.any()):
        where = f"mask {file!r}" if file else "the mask"
        raise CnnkitError(
            f"{where} holds the value {int(m[bad].flatten()[0])}, not a class index: masks "
            f"hold 0..{num_classes - 1} (or {IGNORE_INDEX} for pixels to ignore); fix the "
            "mask or the class names."
        )


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """The ``(C, C)`` pixel confusion matrix (row: true class, column: predicted).

    Args:
        pred: Predicted class indices ``(N, n_H, n_W)`` (or any shape).
        target: True class indices, same shape; ``ignore_index`` pixels are skipped.
        num_classes: ``C``.
        ignore_index: The "void" value.

    Returns:
        int64 counts.

    Raises:
        CnnkitError: Shapes differ, or a value is out of range.
    """
    if pred.shape != target.shape:
        raise CnnkitError(
            f"predictions {tuple(pred.shape)} and masks {tuple(target.shape)} must have one "
            "shape; predict at the masks' size."
        )
    t = target.reshape(-1).long()  # (N, n_H, n_W) -> (N*n_H*n_W,)
    p = pred.reshape(-1).long()  # (N, n_H, n_W) -> (N*n_H*n_W,)
    keep = t != ignore_index
    t, p = t[keep], p[keep]
    check_mask(t, num_classes)
    if len(p) and (int(p.min()) < 0 or int(p.max()) >= num_classes):
        raise CnnkitError(f"predicted classes must be 0..{num_classes - 1}.")
    counts = torch.bincount(t * num_classes + p, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes)  # (C*C,) -> (C, C)


def _parts(cm: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cm = cm.double().numpy()
    tp = np.diag(cm)
    return tp, cm.sum(0) - tp, cm.sum(1) - tp


def iou_per_class(cm: torch.Tensor) -> np.ndarray:
    """``TP / (TP + FP + FN)`` per class; NaN where the class is nowhere.

    Args:
        cm: The confusion matrix.

    Returns:
        ``(C,)`` float64.
    """
    tp, fp, fn = _parts(cm)
    den = tp + fp + fn
    return np.divide(tp, den, out=np.full_like(tp, np.nan), where=den > 0)


def dice_per_class(cm: torch.Tensor) -> np.ndarray:
    """``2 TP / (2 TP + FP + FN)`` per class; NaN where the class is nowhere.

    Args:
        cm: The confusion matrix.

    Returns:
        ``(C,)`` float64.
    """
    tp, fp, fn = _parts(cm)
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.full_like(tp, np.nan), where=den > 0)


def pixel_accuracy(cm: torch.Tensor) -> float:
    """Share of (non-ignored) pixels labelled right."""
    total = float(cm.sum())
    return float(cm.diag().sum()) / total if total else float("nan")


def mean_iou(cm: torch.Tensor) -> float:
    """Mean IoU over the classes that have one (macro)."""
    v = iou_per_class(cm)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def mean_dice(cm: torch.Tensor) -> float:
    """Mean Dice over the classes that have one (macro)."""
    v = dice_per_class(cm)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def segmentation_scores(cm: torch.Tensor, names: Sequence[str] | None = None) -> dict:
    """Every score of a confusion matrix.

    Args:
        cm: The confusion matrix.
        names: Class names (default ``0 .. C-1``).

    Returns:
        ``{"pixel_accuracy", "mean_iou", "mean_dice", "iou": {name: v}, "dice": {...}}``.
    """
    names = [str(n) for n in (names or range(cm.shape[0]))]
    return {
        "pixel_accuracy": pixel_accuracy(cm),
        "mean_iou": mean_iou(cm),
        "mean_dice": mean_dice(cm),
        "iou": dict(zip(names, iou_per_class(cm).tolist())),
        "dice": dict(zip(names, dice_per_class(cm).tolist())),
    }
