"""Pixel accuracy, IoU and Dice against torchmetrics and by hand; empty classes; bad masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassF1Score, MulticlassJaccardIndex

from cnnkit.errors import CnnkitError
from cnnkit.segment.metrics import (
    check_mask,
    confusion_matrix,
    dice_per_class,
    iou_per_class,
    mean_dice,
    mean_iou,
    pixel_accuracy,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iou_and_dice_match_torchmetrics_on_random_masks(seed):
    g = torch.Generator().manual_seed(seed)
    C = 4
    target = torch.randint(0, C, (3, 17, 23), generator=g)
    pred = torch.where(
        torch.rand(target.shape, generator=g) < 0.7,
        target,
        torch.randint(0, C, target.shape, generator=g),
    )
    target[0, :3] = 255  # ignored pixels
    cm = confusion_matrix(pred, target, C)
    jac = MulticlassJaccardIndex(C, average=None, ignore_index=255)(pred, target)
    f1 = MulticlassF1Score(C, average=None, ignore_index=255, multidim_average="global")(
        pred, target
    )
    assert np.allclose(iou_per_class(cm), jac.numpy(), atol=1e-6)
    assert np.allclose(dice_per_class(cm), f1.numpy(), atol=1e-6)
    keep = target != 255
    assert pixel_accuracy(cm) == pytest.approx(float((pred[keep] == target[keep]).float().mean()))
    assert mean_iou(cm) == pytest.approx(float(jac.mean()), abs=1e-6)
    macro = MulticlassJaccardIndex(C, average="macro", ignore_index=255)(pred, target)
    assert mean_iou(cm) == pytest.approx(float(macro), abs=1e-6)


def test_empty_classes_as_stated():
    # class 0: 2 pixels right, 1 wrong; class 1: 1 pixel, predicted 0; class 2: nowhere;
    # class 3: absent from the mask but predicted once
    target = torch.tensor([0, 0, 0, 1, 0])
    pred = torch.tensor([0, 0, 3, 0, 0])
    cm = confusion_matrix(pred, target, 4)
    iou = iou_per_class(cm)
    # class 0: TP 3, FP 1 (the 1 predicted 0), FN 1 (predicted 3) -> 3/5
    assert iou[0] == pytest.approx(3 / 5) and iou[1] == 0 and iou[3] == 0
    assert math.isnan(iou[2])  # nothing to score: left out of the mean
    assert mean_iou(cm) == pytest.approx((3 / 5 + 0 + 0) / 3)
    assert dice_per_class(cm)[0] == pytest.approx(6 / 8)
    assert mean_dice(cm) == pytest.approx((6 / 8) / 3)


def test_masks_with_values_out_of_range_are_refused_naming_the_file():
    check_mask(np.array([[0, 1], [2, 255]]), 3)
    with pytest.raises(CnnkitError, match=r"mask 'masks/train/a.png' holds the value 7") as e:
        check_mask(np.array([[0, 7], [1, 1]]), 3, "masks/train/a.png")
    assert "\n" not in str(e.value) and "0..2" in str(e.value)
    with pytest.raises(CnnkitError, match="holds the value 3"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 3]), 3)
