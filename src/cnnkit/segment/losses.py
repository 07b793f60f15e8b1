"""Per-pixel losses: cross-entropy and soft Dice, in binary, multiclass and multilabel modes.

Modes (the same names as segmentation_models_pytorch, with what each expects stated):

- ``multiclass``: logits ``(B, C, n_H, n_W)``, one class per pixel; targets int
  ``(B, n_H, n_W)`` of ``0 .. C-1`` (255: ignored). Softmax over the classes.
- ``binary``: logits ``(B, 1, n_H, n_W)`` (or ``(B, n_H, n_W)``), targets 0 / 1
  (255: ignored). One sigmoid per pixel.
- ``multilabel``: logits ``(B, L, n_H, n_W)``, targets float 0 / 1 of the same shape (a
  pixel may carry several labels; NaN entries are ignored). One sigmoid per label.

Cross-entropy is the mean over the pixels that are not ignored (over pixels x labels in
multilabel mode). Soft Dice, for each class ``c`` with probabilities ``p`` and one-hot
targets ``y`` over the *whole batch's* non-ignored pixels:

    Dice_c = (2 sum(p * y) + smooth) / (sum(p) + sum(y) + smooth),  loss = 1 - mean_c Dice_c

(multiclass averages over the C classes, background included; binary scores the
foreground only; multilabel averages over the L labels). ``smooth = 1`` keeps a class
that is absent from the batch and not predicted at Dice about 1 (no penalty) instead of
0/0. The combined loss is ``CE + dice_weight * Dice``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.segment.metrics import IGNORE_INDEX

__all__ = ["MODES", "cross_entropy", "dice_loss", "segmentation_loss"]

MODES = ("multiclass", "binary", "multilabel")


def _check(logits: torch.Tensor, target: torch.Tensor, mode: str) -> torch.Tensor:
    """Logits as ``(B, K, n_H, n_W)``, checked against the target for ``mode``."""
    if mode not in MODES:
        raise unknown_name("segmentation loss mode", str(mode), MODES)
    if mode == "binary" and logits.ndim == target.ndim:
        logits = logits.unsqueeze(1)  # (B, H, W) -> (B, 1, H, W)
    if logits.ndim < 3:
        raise CnnkitError(f"logits must be (B, K, n_H, n_W), got {tuple(logits.shape)}.")
    want = target.shape if mode == "multilabel" else (target.shape[0], *target.shape[1:])
    got = logits.shape if mode == "multilabel" else (logits.shape[0], *logits.shape[2:])
    if tuple(want) != tuple(got):
        raise CnnkitError(
            f"{mode} logits {tuple(logits.shape)} do not fit targets {tuple(target.shape)}: "
            + (
                "multilabel targets have the logits' shape."
                if mode == "multilabel"
                else "targets are (B, n_H, n_W) class indices at the logits' n_H x n_W."
            )
        )
    if mode == "binary" and logits.shape[1] != 1:
        raise CnnkitError(
            f"binary mode wants one logit per pixel, got {logits.shape[1]} channels; use "
            "mode=multiclass for several classes."
        )
    return logits


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    mode: str = "multiclass",
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Mean per-pixel cross-entropy over the pixels that are not ignored.

    Args:
        logits: See the module's modes.
        target: See the module's modes.
        mode: ``multiclass``, ``binary`` or ``multilabel``.
        ignore_index: The target value that is skipped (multiclass, binary).

    Returns:
        A scalar (0 with a zero gradient when every pixel is ignored).
    """
    logits = _check(logits, target, mode)
    if mode == "multiclass":
        keep = target != ignore_index
        if not bool(keep.any()):
            return logits.sum() * 0
        return F.cross_entropy(logits, target.long(), ignore_index=ignore_index)
    if mode == "binary":
        z = logits[:, 0]  # (B, 1, H, W) -> (B, H, W)
        keep = target != ignore_index
        y = torch.where(keep, target, torch.zeros_like(target)).to(z.dtype)
        per = F.binary_cross_entropy_with_logits(z, y, reduction="none")
        return (per * keep).sum() / keep.sum().clamp_min(1)
    keep = ~torch.isnan(target)
    y = torch.where(keep, target, torch.zeros_like(target)).to(logits.dtype)
    per = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return (per * keep).sum() / keep.sum().clamp_min(1)


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    mode: str = "multiclass",
    ignore_index: int = IGNORE_INDEX,
    smooth: float = 1.0,
) -> torch.Tensor:
    """``1 - mean Dice`` of the soft predictions (see the module for the formula).

    Args:
        logits: See the module's modes.
        target: See the module's modes.
        mode: ``multiclass``, ``binary`` or ``multilabel``.
        ignore_index: Target value left out (multiclass, binary).
        smooth: Added to the numerator and denominator of every class's Dice.

    Returns:
        A scalar in ``[0, 1]``.
    """
    logits = _check(logits, target, mode)
    if mode == "multiclass":
        C = logits.shape[1]
        keep = (target != ignore_index).unsqueeze(1)  # (B, H, W) -> (B, 1, H, W)
        t = torch.where(keep[:, 0], target.long(), torch.zeros_like(target.long()))
        p = logits.float().softmax(1) * keep
        y = F.one_hot(t, C).permute(0, 3, 1, 2).to(p.dtype) * keep  # (B,H,W,C) -> (B,C,H,W)
    elif mode == "binary":
        keep = (target != ignore_index).unsqueeze(1)
        t = torch.where(keep[:, 0], target, torch.zeros_like(target))
        p = torch.sigmoid(logits.float()) * keep
        y = t.unsqueeze(1).to(p.dtype) * keep  # (B, H, W) -> (B, 1, H, W)
    else:
        keep = ~torch.isnan(target)
        p = torch.sigmoid(logits.float()) * keep
        y = torch.where(keep, target, torch.zeros_like(target)).to(p.dtype)
    dims = (0, *range(2, p.ndim))  # every axis but the class axis
    inter = (p * y).sum(dims)
    dice = (2 * inter + smooth) / (p.sum(dims) + y.sum(dims) + smooth)  # (K,)
    return 1 - dice.mean()


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    mode: str = "multiclass",
    kind: str = "ce+dice",
    dice_weight: float = 1.0,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Cross-entropy, Dice, or ``CE + dice_weight * Dice``.

    Args:
        logits: See the module's modes.
        target: See the module's modes.
        mode: ``multiclass``, ``binary`` or ``multilabel``.
        kind: ``ce``, ``dice`` or ``ce+dice``.
        dice_weight: The Dice term's weight in ``ce+dice``.
        ignore_index: Target value left out.

    Returns:
        A scalar.
    """
    if kind == "ce":
        return cross_entropy(logits, target, mode, ignore_index)
    if kind == "dice":
        return dice_loss(logits, target, mode, ignore_index)
    if kind == "ce+dice":
        return cross_entropy(logits, target, mode, ignore_index) + dice_weight * dice_loss(
            logits, target, mode, ignore_index
        )
    raise unknown_name("segmentation loss", str(kind), ("ce", "dice", "ce+dice"))
