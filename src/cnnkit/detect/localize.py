"""Classification with localization and landmark detection (CNN course, week 3).

Classification with localization: besides the class, the network outputs a bounding box
for the one object in the image. The course's target is the vector

    y = [p_c, b_x, b_y, b_h, b_w, c_1, ..., c_n]

with ``p_c = 1`` when an object is present, ``(b_x, b_y)`` the object's midpoint and
``b_h, b_w`` its height and width, all as fractions of the image (the top-left corner is
``(0, 0)``, the bottom-right ``(1, 1)``), and ``c_1..c_n`` the one-hot class. When
``p_c = 0`` the other components are "don't care": the loss reads only ``p_c``.

Landmark detection: the network outputs ``p_c`` (a face, or not) and ``K`` landmarks
``l_x1, l_y1, ..., l_xK, l_yK`` (fractions of the image), always in the same order across
the dataset (landmark 1 is, say, always the left corner of the left eye).

:class:`LocalizationHead` / :func:`localization_loss` / :func:`decode_localization` and
:class:`LandmarkHead` / :func:`landmark_loss` / :func:`decode_landmarks` are the two
output layers; :func:`localizer` builds a small complete ConvNet with either head;
:class:`LocalizationTask` and :class:`LandmarkTask` let :func:`cnnkit.train.fit` train
them. Data is a CSV beside its images (:func:`read_localization_csv`,
:func:`write_localization_csv`), and :func:`synth_localization` draws a seeded set::

    root/labels.csv       image,p_c,b_x,b_y,b_h,b_w,class
                          images/00000.png,1,0.5,0.4,0.3,0.25,circle
                          images/00001.png,0,,,,,
    root/images/00000.png

or, for landmarks, ``image,p_c,x1,y1,...,xK,yK`` (a missing landmark leaves its two
fields empty). Image paths are relative to the CSV's folder. Nothing written is a pickle.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from torchvision.ops import box_iou

from cnnkit.blocks.conv import ConvBNAct
from cnnkit.errors import CnnkitError
from cnnkit.train.tasks import Task

__all__ = [
    "BOX_HEADER",
    "SYNTH_CLASSES",
    "LandmarkHead",
    "LandmarkTask",
    "LocalizationHead",
    "LocalizationSet",
    "LocalizationTask",
    "Localizer",
    "cxcyhw_to_xyxy",
    "decode_landmarks",
    "decode_localization",
    "landmark_header",
    "landmark_loss",
    "localization_loss",
    "localizer",
    "read_localization_csv",
    "synth_localization",
    "write_localization_csv",
]

#: The CSV header of classification with localization (course order).
BOX_HEADER = ("image", "p_c", "b_x", "b_y", "b_h", "b_w", "class")
#: The classes :func:`synth_localization` draws, in class-index order.
SYNTH_CLASSES = ("circle", "square", "triangle")

_LANDMARK_COL = re.compile(r"^([xy])(\d+)$")


# ----------------------------------------------------------------------------- checks


def _check_2d(outputs: torch.Tensor, targets: torch.Tensor, what: str) -> None:
    if outputs.ndim != 2 or tuple(outputs.shape) != tuple(targets.shape):
        raise CnnkitError(
            f"{what} needs outputs and targets of the same shape (N, D), got "
            f"{tuple(outputs.shape)} and {tuple(targets.shape)}; pass one target row per example."
        )


def _positive_int(v: Any, name: str, low: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < low:
        raise CnnkitError(f"{name} must be an integer >= {low}, got {v!r}.")
    return int(v)


# ------------------------------------------------------------------ localization head


class LocalizationHead(nn.Module):
    """The output layer of classification with localization: ``Linear -> (N, 5 + C)``.

    The raw outputs are ``[z_pc, z_bx, z_by, z_bh, z_bw, z_1, ..., z_C]``; the
    probability is ``p_c = sigmoid(z_pc)``, the box ``sigmoid(z_b)`` (fractions of the
    image) and the class probabilities ``softmax(z_1..z_C)`` (:func:`decode_localization`).

    Args:
        in_features: Features of the input vector (the flattened conv volume).
        num_classes: ``C``, the number of object classes (at least 1).

    Raises:
        CnnkitError: If a size is not a positive integer.
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features")
        self.num_classes = _positive_int(num_classes, "num_classes")
        self.fc = nn.Linear(self.in_features, 5 + self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs ``(N, 5 + C)`` from features ``(N, in_features)``."""
        return self.fc(x)


def localization_loss(
    outputs: torch.Tensor, targets: torch.Tensor, *, box_weight: float = 1.0
) -> torch.Tensor:
    """The loss of classification with localization, mean over the batch.

    For example ``i`` with raw outputs ``z`` and target ``y = [p_c, b_x, b_y, b_h, b_w,
    c_1..c_C]``::

        L = -(p_c log s(z_pc) + (1 - p_c) log(1 - s(z_pc)))            always
            + p_c * box_weight * sum_k (s(z_bk) - b_k)^2               if p_c = 1
            + p_c * -sum_j c_j log softmax(z_1..z_C)_j                  if p_c = 1

    with ``s`` the sigmoid; the cost is ``J = 1/N sum_i L(i)``. When ``p_c = 0`` only the
    first term is read: the box and class entries of that target are "don't care" and
    may hold anything (NaN included) without changing the loss or its gradient.

    The course first writes the loss as squared error on every component,
    ``(yhat_1 - y_1)^2 + ... + (yhat_8 - y_8)^2`` when ``p_c = 1`` and
    ``(yhat_1 - y_1)^2`` when ``p_c = 0``, and then says that in practice one would use
    a log-likelihood (logistic) loss for ``p_c``, a softmax log-likelihood for the
    classes and squared error for the box. That practical version is what is computed
    here; the box is squashed by a sigmoid (as YOLO does) so it stays inside the image.

    Args:
        outputs: Raw outputs ``(N, 5 + C)`` of :class:`LocalizationHead`.
        targets: ``(N, 5 + C)`` in course order; ``p_c > 0.5`` counts as an object.
        box_weight: Weight of the box's squared error against the log losses.

    Returns:
        The scalar cost.

    Raises:
        CnnkitError: If the shapes differ or have fewer than 6 columns.
    """
    _check_2d(outputs, targets, "localization_loss")
    if outputs.shape[1] < 6:
        raise CnnkitError(
            f"localization outputs need 5 + C >= 6 columns (p_c, box, classes), got "
            f"{outputs.shape[1]}; build the head with num_classes >= 1."
        )
    z = outputs.float()
    y = targets.to(z.dtype)
    pos = y[:, 0] > 0.5  # (N,) bool: examples with an object
    pc_loss = F.binary_cross_entropy_with_logits(z[:, 0], pos.to(z.dtype), reduction="none")
    # don't-care entries (p_c = 0) become 0 before any arithmetic, so NaN there is harmless
    y_rest = torch.where(pos[:, None], y[:, 1:], torch.zeros_like(y[:, 1:]))  # (N, 4 + C)
    box_se = ((torch.sigmoid(z[:, 1:5]) - y_rest[:, :4]) ** 2).sum(1)  # (N,)
    class_ce = -(y_rest[:, 4:] * F.log_softmax(z[:, 5:], dim=1)).sum(1)  # (N,)
    rest = torch.where(pos, box_weight * box_se + class_ce, torch.zeros_like(box_se))
    return (pc_loss + rest).mean()


def decode_localization(outputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Turn raw :class:`LocalizationHead` outputs into probabilities and boxes.

    Args:
        outputs: Raw outputs ``(N, 5 + C)``.

    Returns:
        ``{"p_c": (N,) sigmoid probability of an object, "box": (N, 4) b_x, b_y, b_h, b_w
        as fractions of the image, "class_probs": (N, C) softmax, "classes": (N,) the most
        likely class index}``.

    Raises:
        CnnkitError: If ``outputs`` is not ``(N, 5 + C)`` with ``C >= 1``.
    """
    if outputs.ndim != 2 or outputs.shape[1] < 6:
        raise CnnkitError(
            f"decode_localization needs raw outputs (N, 5 + C) with C >= 1, got "
            f"{tuple(outputs.shape)}; pass the LocalizationHead's output."
        )
    z = outputs.float()
    probs = torch.softmax(z[:, 5:], dim=1)  # (N, C)
    return {
        "p_c": torch.sigmoid(z[:, 0]),
        "box": torch.sigmoid(z[:, 1:5]),
        "class_probs": probs,
        "classes": probs.argmax(1),
    }


def cxcyhw_to_xyxy(box: torch.Tensor) -> torch.Tensor:
    """Course-order boxes ``(..., 4)`` ``b_x, b_y, b_h, b_w`` to corners ``x1, y1, x2, y2``.

    Args:
        box: Midpoint, height and width (note: height before width, as in the course).

    Returns:
        ``(..., 4)`` corners in the same units.
    """
    bx, by, bh, bw = box.unbind(-1)
    return torch.stack((bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2), dim=-1)


# ---------------------------------------------------------------------- landmark head


class LandmarkHead(nn.Module):
    """The output layer of landmark detection: ``Linear -> (N, 1 + 2K)``.

    The raw outputs are ``[z_pc, z_x1, z_y1, ..., z_xK, z_yK]``; ``p_c = sigmoid(z_pc)``
    and landmark ``k`` is ``(sigmoid(z_xk), sigmoid(z_yk))`` as fractions of the image
    (:func:`decode_landmarks`).

    Args:
        in_features: Features of the input vector.
        num_landmarks: ``K``, the number of landmarks (at least 1).

    Raises:
        CnnkitError: If a size is not a positive integer.
    """

    def __init__(self, in_features: int, num_landmarks: int) -> None:
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features")
        self.num_landmarks = _positive_int(num_landmarks, "num_landmarks")
        self.fc = nn.Linear(self.in_features, 1 + 2 * self.num_landmarks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs ``(N, 1 + 2K)`` from features ``(N, in_features)``."""
        return self.fc(x)


def _check_landmark_width(d: int, what: str) -> None:
    if d < 3 or d % 2 == 0:
        raise CnnkitError(
            f"{what} needs 1 + 2K columns (p_c, then x and y of K >= 1 landmarks), got {d}; "
            "build the head with num_landmarks >= 1."
        )


def landmark_loss(
    outputs: torch.Tensor, targets: torch.Tensor, *, landmark_weight: float = 1.0
) -> torch.Tensor:
    """The loss of landmark detection, mean over the batch.

    For example ``i`` with target ``[p_c, l_x1, l_y1, ..., l_xK, l_yK]``::

        L = -(p_c log s(z_pc) + (1 - p_c) log(1 - s(z_pc)))
            + p_c * landmark_weight * sum_{present coordinates} (s(z_l) - l)^2

    A landmark coordinate given as NaN (missing: an occluded eye) is masked out: it adds
    nothing to the loss and its output gets no gradient. Examples with ``p_c = 0`` (no
    face) read only ``p_c``; their landmark entries are "don't care".

    Args:
        outputs: Raw outputs ``(N, 1 + 2K)`` of :class:`LandmarkHead`.
        targets: ``(N, 1 + 2K)``; ``p_c > 0.5`` counts as present.
        landmark_weight: Weight of the squared error against the logistic loss.

    Returns:
        The scalar cost.

    Raises:
        CnnkitError: If the shapes differ or are not ``(N, 1 + 2K)``.
    """
    _check_2d(outputs, targets, "landmark_loss")
    _check_landmark_width(outputs.shape[1], "landmark_loss")
    z = outputs.float()
    y = targets.to(z.dtype)
    pos = y[:, 0] > 0.5  # (N,) bool
    pc_loss = F.binary_cross_entropy_with_logits(z[:, 0], pos.to(z.dtype), reduction="none")
    keep = pos[:, None] & ~torch.isnan(y[:, 1:])  # (N, 2K) bool: present coordinates
    l_true = torch.where(keep, y[:, 1:], torch.zeros_like(y[:, 1:]))  # (N, 2K)
    se = (torch.sigmoid(z[:, 1:]) - l_true) ** 2  # (N, 2K)
    se = torch.where(keep, se, torch.zeros_like(se)).sum(1)  # (N, 2K) -> (N,)
    return (pc_loss + landmark_weight * se).mean()


def decode_landmarks(outputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Turn raw :class:`LandmarkHead` outputs into ``p_c`` and landmark points.

    Args:
        outputs: Raw outputs ``(N, 1 + 2K)``.

    Returns:
        ``{"p_c": (N,) probability, "landmarks": (N, K, 2) (x, y) fractions of the image}``.

    Raises:
        CnnkitError: If ``outputs`` is not ``(N, 1 + 2K)``.
    """
    if outputs.ndim != 2:
        raise CnnkitError(
            f"decode_landmarks needs raw outputs (N, 1 + 2K), got {tuple(outputs.shape)}."
        )
    _check_landmark_width(outputs.shape[1], "decode_landmarks")
    z = outputs.float()
    pts = torch.sigmoid(z[:, 1:]).reshape(z.shape[0], -1, 2)  # (N, 2K) -> (N, K, 2)
    return {"p_c": torch.sigmoid(z[:, 0]), "landmarks": pts}


# ----------------------------------------------------------------------------- model


class Localizer(nn.Module):
    """A small complete ConvNet for classification with localization or landmarks.

    ``len(channels)`` blocks of ``ConvBNAct(3x3, 'same') -> max pool 2x2``, then an
    adaptive average pool to ``pool x pool``, a flatten and the head. With ``pool=1``
    this is a global average pool; the default ``pool=4`` keeps a coarse map of *where*
    the features are, which the box and landmark outputs need (a global average is
    nearly translation-invariant, so it can say "a circle" but hardly "at the left").
    At ``32 x 32`` inputs and three blocks the map is already ``4 x 4`` and the pool
    changes nothing, as in the course's conv -> FC localization networks.

    Args:
        num_classes: ``C`` for the localization head; with ``landmarks > 0`` the model
            predicts only ``p_c`` and the landmarks, so it must be 0 or 1.
        in_channels: ``n_C`` of the images.
        landmarks: ``K``; above 0 the head is a :class:`LandmarkHead`.
        channels: Filters of each conv block.
        pool: Side of the pooled map before the head.

    Raises:
        CnnkitError: On a non-positive size, or classes asked of a landmark model.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        landmarks: int = 0,
        channels: Sequence[int] = (16, 32, 64),
        pool: int = 4,
    ) -> None:
        super().__init__()
        landmarks = _positive_int(landmarks, "landmarks", low=0)
        in_channels = _positive_int(in_channels, "in_channels")
        pool = _positive_int(pool, "pool")
        if landmarks > 0 and num_classes not in (0, 1):
            raise CnnkitError(
                f"a landmark model (landmarks={landmarks}) predicts p_c and the landmarks but "
                f"no classes, got num_classes={num_classes!r}; pass num_classes=1."
            )
        chans = [_positive_int(c, "channels") for c in channels]
        if not chans:
            raise CnnkitError("channels is empty; give the filters of at least one conv block.")
        layers: list[nn.Module] = []
        prev = in_channels
        for c in chans:
            layers += [ConvBNAct(prev, c, f=3, act="relu"), nn.MaxPool2d(2)]
            prev = c
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        n_in = prev * pool * pool
        self.num_landmarks = landmarks
        self.head: LocalizationHead | LandmarkHead = (
            LandmarkHead(n_in, landmarks) if landmarks else LocalizationHead(n_in, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw head outputs ``(N, 5 + C)`` or ``(N, 1 + 2K)`` from images ``(N, n_C, n_H, n_W)``."""
        a = self.pool(self.features(x))  # (N, n_C, pool, pool)
        a = torch.flatten(a, 1)  # (N, n_C, pool, pool) -> (N, n_C*pool*pool)
        return self.head(a)


def localizer(num_classes: int, in_channels: int = 3, landmarks: int = 0) -> Localizer:
    """A small :class:`Localizer` (three conv-BN-ReLU-maxpool blocks of 16, 32, 64 filters).

    Args:
        num_classes: ``C`` object classes (0 or 1 for a landmark model).
        in_channels: ``n_C`` of the images.
        landmarks: ``K`` landmarks; 0 builds classification with localization.

    Returns:
        The model, outputting raw ``(N, 5 + C)`` or ``(N, 1 + 2K)``.

    Raises:
        CnnkitError: On a non-positive size, or classes asked of a landmark model.
    """
    return Localizer(num_classes, in_channels=in_channels, landmarks=landmarks)


# ----------------------------------------------------------------------------- tasks


def _count_presence(
    sums: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Add ``loss * n``, the correct ``p_c`` and ``n`` to ``sums[0:3]`` (both tasks' start).

    Returns:
        ``(outputs, targets)`` as float and detached, and ``pos`` ``(N,)``: ``p_c = 1``.
    """
    z, y = outputs.detach().float(), targets.float()
    n = y.shape[0]
    pos = y[:, 0] > 0.5  # (N,) bool
    sums[0] += loss.detach().double() * n
    sums[1] += ((z[:, 0] > 0) == pos).sum()
    sums[2] += n
    return z, y, pos


class LocalizationTask(Task):
    """The trainer's view of classification with localization.

    Metrics: ``accuracy`` of ``p_c`` (thresholded at 0.5) over all examples; ``iou``, the
    mean IoU of the predicted box with the true one over the examples with an object
    (whatever ``p_c`` was predicted); ``class_accuracy`` over those same examples.

    Args:
        box_weight: See :func:`localization_loss`.
    """

    metric_names = ("accuracy", "iou", "class_accuracy")
    higher_is_better: ClassVar[dict[str, bool]] = {
        "loss": False,
        "accuracy": True,
        "iou": True,
        "class_accuracy": True,
    }
    n_sums = 6  # loss * n, p_c correct, n, IoU sum, class correct, positives

    def __init__(self, box_weight: float = 1.0) -> None:
        self.box_weight = float(box_weight)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """:func:`localization_loss` of a batch."""
        return localization_loss(outputs, targets, box_weight=self.box_weight)

    def count(
        self, sums: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor
    ) -> None:
        """Add ``loss * n``, correct ``p_c``, ``n``, the IoU sum, correct classes, positives."""
        z, y, pos = _count_presence(sums, outputs, targets, loss)
        if pos.any():
            pred = cxcyhw_to_xyxy(torch.sigmoid(z[pos, 1:5]))  # (P, 4) xyxy
            true = cxcyhw_to_xyxy(y[pos, 1:5])  # (P, 4) xyxy
            sums[3] += box_iou(pred, true).diagonal().double().sum()  # (P, P) -> (P,)
            sums[4] += (z[pos, 5:].argmax(1) == y[pos, 5:].argmax(1)).sum()
            sums[5] += int(pos.sum())

    def summarize(self, sums: torch.Tensor) -> dict[str, float]:
        """``{"loss", "accuracy", "iou", "class_accuracy"}`` (NaN where nothing was counted)."""
        loss_n, correct, n, iou, cls, p = sums.tolist()
        nan = float("nan")
        return {
            "loss": loss_n / n if n else nan,
            "accuracy": correct / n if n else nan,
            "iou": iou / p if p else nan,
            "class_accuracy": cls / p if p else nan,
        }


class LandmarkTask(Task):
    """The trainer's view of landmark detection.

    Metrics: ``accuracy`` of ``p_c`` (thresholded at 0.5); ``landmark_error``, the mean
    Euclidean distance between predicted and true landmarks, in fractions of the image
    side, over the present landmarks of the examples with ``p_c = 1`` (lower is better:
    ``monitor=dev_landmark_error`` keeps the epoch where it is lowest).

    Args:
        landmark_weight: See :func:`landmark_loss`.
    """

    metric_names = ("accuracy", "landmark_error")
    higher_is_better: ClassVar[dict[str, bool]] = {
        "loss": False,
        "accuracy": True,
        "landmark_error": False,
    }
    n_sums = 5  # loss * n, p_c correct, n, distance sum, landmarks counted

    def __init__(self, landmark_weight: float = 1.0) -> None:
        self.landmark_weight = float(landmark_weight)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """:func:`landmark_loss` of a batch."""
        return landmark_loss(outputs, targets, landmark_weight=self.landmark_weight)

    def count(
        self, sums: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor
    ) -> None:
        """Add ``loss * n``, correct ``p_c``, ``n``, the distance sum and landmarks counted."""
        z, y, pos = _count_presence(sums, outputs, targets, loss)
        n = y.shape[0]
        pred = torch.sigmoid(z[:, 1:]).reshape(n, -1, 2)  # (N, 2K) -> (N, K, 2)
        true = y[:, 1:].reshape(n, -1, 2)  # (N, 2K) -> (N, K, 2)
        keep = pos[:, None] & ~torch.isnan(true).any(-1)  # (N, K) bool
        dist = torch.linalg.vector_norm(pred - torch.nan_to_num(true), dim=-1)  # (N, K)
        sums[3] += dist[keep].double().sum()
        sums[4] += int(keep.sum())

    def summarize(self, sums: torch.Tensor) -> dict[str, float]:
        """``{"loss", "accuracy", "landmark_error"}`` (NaN where nothing was counted)."""
        loss_n, correct, n, dist, k = sums.tolist()
        nan = float("nan")
        return {
            "loss": loss_n / n if n else nan,
            "accuracy": correct / n if n else nan,
            "landmark_error": dist / k if k else nan,
        }


# ------------------------------------------------------------------------------ data


class LocalizationSet(Dataset):
    """Images with one localization (or landmark) target each, in memory.

    ``ds[i]`` is ``(image, target)``: the image as float ``(n_C, n_H, n_W)`` in ``[0, 1]``
    and the target as float32 ``(5 + C)`` ``[p_c, b_x, b_y, b_h, b_w, one-hot]`` or
    ``(1 + 2K)`` ``[p_c, l_x1, l_y1, ...]`` (NaN for a missing landmark). Entries of a
    ``p_c = 0`` target other than ``p_c`` are "don't care" and stored as 0.

    Args:
        images: uint8 ``(N, n_C, n_H, n_W)``.
        targets: float ``(N, D)``.
        files: The image paths as written in the CSV (relative to its folder).
        classes: Class names (box layout), or None for landmarks.

    Attributes:
        num_landmarks: ``K`` (0 for the box layout).

    Raises:
        CnnkitError: If the sizes disagree.
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        files: Sequence[str],
        classes: Sequence[str] | None = None,
    ) -> None:
        if images.ndim != 4 or images.dtype != torch.uint8:
            raise CnnkitError(
                f"images must be uint8 (N, n_C, n_H, n_W), got {images.dtype} "
                f"{tuple(images.shape)}; stack the decoded images."
            )
        n = images.shape[0]
        if targets.ndim != 2 or targets.shape[0] != n or len(files) != n:
            raise CnnkitError(
                f"{n} images need {n} target rows and {n} file names, got targets "
                f"{tuple(targets.shape)} and {len(files)} names."
            )
        self.images = images
        self.targets = targets.float()
        self.files = [str(f) for f in files]
        self.classes = None if classes is None else [str(c) for c in classes]
        d = self.targets.shape[1]
        if self.classes is not None:
            if d != 5 + len(self.classes):
                raise CnnkitError(
                    f"box targets for {len(self.classes)} classes need {5 + len(self.classes)} "
                    f"columns, got {d}."
                )
            self.num_landmarks = 0
        else:
            _check_landmark_width(d, "landmark targets")
            self.num_landmarks = (d - 1) // 2

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i].float() / 255, self.targets[i]

    def task(self) -> Task:
        """The matching :class:`LocalizationTask` or :class:`LandmarkTask`."""
        return LandmarkTask() if self.num_landmarks else LocalizationTask()

    def __repr__(self) -> str:
        what = f"landmarks={self.num_landmarks}"
        if self.classes is not None:
            what = f"classes={self.classes}"
        return f"LocalizationSet(n={len(self)}, size={tuple(self.images.shape[1:])}, {what})"


def landmark_header(k: int) -> list[str]:
    """The landmark CSV header ``image, p_c, x1, y1, ..., xK, yK``.

    Args:
        k: Number of landmarks.

    Returns:
        The column names.
    """
    return ["image", "p_c", *(f"{a}{j}" for j in range(1, k + 1) for a in "xy")]


def _layout(header: list[str], path: Path) -> int:
    """``-1`` for the box layout, else ``K`` for the landmark layout."""
    cols = [h.strip() for h in header]
    if tuple(cols) == BOX_HEADER:
        return -1
    k = (len(cols) - 2) // 2
    if k >= 1 and cols == landmark_header(k):
        return k
    raise CnnkitError(
        f"{str(path)!r}, line 1: unknown column layout {','.join(cols)!r}; write the header "
        f"{','.join(BOX_HEADER)!r} (boxes) or 'image,p_c,x1,y1,...,xK,yK' (landmarks)."
    )


def _fraction(cell: str, col: str, where: str) -> float:
    try:
        v = float(cell)
    except ValueError:
        raise CnnkitError(
            f"{where}: {col} is {cell!r}, not a number; write a fraction of the image in [0, 1]."
        ) from None
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise CnnkitError(
            f"{where}: {col} = {cell} is outside [0, 1]; divide x and widths by the image "
            "width, y and heights by its height."
        )
    return v


def _decode(path: Path, channels: int, size: tuple[int, int] | None, where: str) -> torch.Tensor:
    from PIL import Image

    from cnnkit.data.images import ImageDecodeError, decode_image

    if not path.is_file():
        raise CnnkitError(
            f"{where}: image {str(path)!r} does not exist; fix the path (relative to the CSV's "
            "folder) or remove the line."
        )
    try:
        a = decode_image(path, channels)  # (n_H, n_W, n_C)
    except ImageDecodeError as e:
        raise CnnkitError(
            f"{where}: cannot decode image {str(path)!r} ({e.reason}); replace or remove it."
        ) from None
    if size is not None and tuple(a.shape[:2]) != size:
        mode = "L" if channels == 1 else "RGB"
        im = Image.fromarray(a[..., 0] if channels == 1 else a, mode=mode)
        im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        # (n_H, n_W) or (n_H, n_W, 3) -> (n_H, n_W, n_C)
        a = np.asarray(im, dtype=np.uint8).reshape(size[0], size[1], channels)
    return torch.from_numpy(np.array(a, copy=True)).permute(2, 0, 1)  # (n_H, n_W, n_C) -> (n_C, ..)


def read_localization_csv(
    path: str | os.PathLike,
    size: int | Sequence[int] | None = None,
    *,
    classes: Sequence[str] | None = None,
    channels: int = 3,
) -> LocalizationSet:
    """Read a localization or landmark CSV and its images.

    The header chooses the layout: ``image,p_c,b_x,b_y,b_h,b_w,class`` (classification
    with localization; ``class`` is a name) or ``image,p_c,x1,y1,...,xK,yK`` (landmarks).
    ``p_c`` is 0 or 1; coordinates are fractions of the image in ``[0, 1]``. A ``p_c = 0``
    row leaves every other field empty; a ``p_c = 1`` row fills them, except that a
    missing landmark leaves both its fields empty (read as NaN). Image paths are relative
    to the CSV's folder. Blank lines are skipped.

    Args:
        path: The CSV file.
        size: Resize every image to ``size x size`` (or ``(n_H, n_W)``); None keeps them,
            and then they must all have the same size. Fractions do not change.
        classes: The class names in index order (box layout); None takes the sorted names
            found in the file. Give the training set's classes when reading a dev split.
        channels: 1 (grayscale) or 3 (RGB).

    Returns:
        The :class:`LocalizationSet`.

    Raises:
        CnnkitError: Naming the file and line, for an unknown header, a wrong number of
            fields, a value that is not a number or is outside ``[0, 1]``, ``p_c`` not
            0 or 1, fields filled when ``p_c = 0`` or empty when ``p_c = 1``, an unknown
            class, or a missing or undecodable image; also for an empty file, images of
            different sizes without ``size``, or ``channels`` not 1 or 3.
    """
    p = Path(path)
    if channels not in (1, 3):
        raise CnnkitError(f"channels must be 1 or 3, got {channels!r}.")
    hw: tuple[int, int] | None = None
    if size is not None:
        s = (size, size) if isinstance(size, int) else tuple(int(v) for v in size)
        if len(s) != 2 or min(s) < 1:
            raise CnnkitError(f"size must be n or (n_H, n_W) with positive sides, got {size!r}.")
        hw = (int(s[0]), int(s[1]))
    if not p.is_file():
        raise CnnkitError(f"CSV file {str(p)!r} does not exist; check the path.")
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError:
        raise CnnkitError(f"{str(p)!r} is not UTF-8 text; save it as UTF-8 CSV.") from None
    except csv.Error as e:
        raise CnnkitError(f"{str(p)!r} is not a readable CSV ({e}); fix the quoting.") from None
    if not rows or not any(c.strip() for c in rows[0]):
        raise CnnkitError(
            f"{str(p)!r}, line 1: the header is missing; start the file with "
            f"{','.join(BOX_HEADER)!r} or 'image,p_c,x1,y1,...,xK,yK'."
        )
    k = _layout(rows[0], p)
    width = len(rows[0])
    parsed: list[tuple[int, str, list[float], str | None]] = []  # line, image, values, class
    for n, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        where = f"{str(p)!r}, line {n}"
        if len(row) != width:
            raise CnnkitError(
                f"{where} has {len(row)} fields but the header has {width}; write one value "
                "per column (empty fields still need their commas)."
            )
        cells = [c.strip() for c in row]
        image, pc_cell, rest = cells[0], cells[1], cells[2:]
        if not image:
            raise CnnkitError(f"{where}: the image field is empty; write the image's path.")
        if pc_cell not in ("0", "1", "0.0", "1.0"):
            raise CnnkitError(
                f"{where}: p_c is {pc_cell!r}; write 1 when the image shows an object, else 0."
            )
        pc = float(pc_cell)
        names = rows[0][2:]
        if pc == 0:
            if any(rest):
                raise CnnkitError(
                    f"{where}: p_c is 0 but the other fields are filled; leave them empty "
                    "(they are don't-care entries) or set p_c to 1."
                )
            parsed.append((n, image, [], None))
            continue
        if k < 0:  # box layout
            empty = [c.strip() for c, v in zip(names, rest) if not v]
            if empty:
                raise CnnkitError(
                    f"{where}: p_c is 1 but {', '.join(empty)} is empty; fill in the box and "
                    "class or set p_c to 0."
                )
            vals = [_fraction(v, c.strip(), where) for c, v in zip(names[:4], rest[:4])]
            parsed.append((n, image, vals, rest[4]))
        else:
            vals = []
            for j in range(k):
                x, y = rest[2 * j], rest[2 * j + 1]
                if bool(x) != bool(y):
                    raise CnnkitError(
                        f"{where}: landmark {j + 1} has only one of x{j + 1}, y{j + 1}; give "
                        "both, or leave both empty when the landmark is missing."
                    )
                if not x:
                    vals += [math.nan, math.nan]
                else:
                    vals += [_fraction(x, f"x{j + 1}", where), _fraction(y, f"y{j + 1}", where)]
            parsed.append((n, image, vals, None))
    if not parsed:
        raise CnnkitError(f"{str(p)!r} has a header but no rows; add one line per image.")
    names_out: list[str] | None = None
    if k < 0:
        found = sorted({c for *_, c in parsed if c is not None})
        names_out = list(classes) if classes is not None else found
        index = {c: i for i, c in enumerate(names_out)}
        for n, _, _, c in parsed:
            if c is not None and c not in index:
                raise CnnkitError(
                    f"{str(p)!r}, line {n}: unknown class {c!r}; use one of "
                    f"{', '.join(map(repr, names_out))} or add it to classes."
                )
    d = 5 + len(names_out) if names_out is not None else 1 + 2 * k
    targets = torch.zeros(len(parsed), d)
    images: list[torch.Tensor] = []
    for i, (n, image, vals, c) in enumerate(parsed):
        where = f"{str(p)!r}, line {n}"
        images.append(_decode(p.parent / image, channels, hw, where))
        if vals:
            targets[i, 0] = 1.0
            targets[i, 1 : 1 + len(vals)] = torch.tensor(vals)
            if names_out is not None:
                targets[i, 5 + index[c]] = 1.0
        if tuple(images[-1].shape) != tuple(images[0].shape):
            raise CnnkitError(
                f"{where}: image {image!r} is {images[-1].shape[1]}x{images[-1].shape[2]} but "
                f"{parsed[0][1]!r} is {images[0].shape[1]}x{images[0].shape[2]}; pass "
                "size=(n_H, n_W) to resize every image on load."
            )
    return LocalizationSet(torch.stack(images), targets, [r[1] for r in parsed], names_out)


def _fmt(v: float) -> str:
    return format(float(v), ".9g")  # enough digits to read a float32 back exactly


def write_localization_csv(
    path: str | os.PathLike,
    files: Sequence[str],
    targets: torch.Tensor,
    *,
    classes: Sequence[str] | None = None,
) -> Path:
    """Write targets as a localization (``classes`` given) or landmark CSV.

    Only the CSV is written; the images must already lie at ``files``, relative to the
    CSV's folder (as :func:`synth_localization` does). ``p_c = 0`` rows get empty
    fields; NaN landmarks are written as empty fields.

    Args:
        path: The CSV file to write (its folder is created).
        files: Image paths relative to the CSV's folder, one per target row.
        targets: ``(N, 5 + C)`` box targets (with ``classes``) or ``(N, 1 + 2K)`` landmark
            targets (without).
        classes: The class names in index order, for the box layout.

    Returns:
        The CSV path.

    Raises:
        CnnkitError: If the shapes disagree, ``p_c`` is not 0 or 1, a value is outside
            ``[0, 1]``, or a box row has no single class.
    """
    out = Path(path)
    t = torch.as_tensor(targets).detach().double().cpu()
    if t.ndim != 2 or t.shape[0] != len(files):
        raise CnnkitError(
            f"targets must be (N, D) with one row per file, got {tuple(t.shape)} for "
            f"{len(files)} files."
        )
    d = t.shape[1]
    if classes is not None:
        names = [str(c) for c in classes]
        if d != 5 + len(names):
            raise CnnkitError(
                f"box targets for {len(names)} classes need {5 + len(names)} columns, got {d}; "
                "pass the classes the targets were made with."
            )
        header = list(BOX_HEADER)
    else:
        _check_landmark_width(d, "landmark targets")
        header = landmark_header((d - 1) // 2)
    lines: list[list[str]] = []
    for i, (f, row) in enumerate(zip(files, t.tolist())):
        what = f"target row {i} ({f!r})"
        if row[0] not in (0.0, 1.0):
            raise CnnkitError(f"{what}: p_c is {row[0]}; it must be 0 or 1.")
        if row[0] == 0.0:
            lines.append([str(f), "0", *[""] * (len(header) - 2)])
            continue
        coords = row[1:5] if classes is not None else row[1:]
        if any(not math.isnan(v) and not 0.0 <= v <= 1.0 for v in coords) or (
            classes is not None and any(math.isnan(v) for v in coords)
        ):
            raise CnnkitError(
                f"{what}: coordinates {coords} are not all fractions in [0, 1]; divide by the "
                "image size."
            )
        if classes is not None:
            onehot = row[5:]
            if sorted(onehot) != [0.0] * (len(onehot) - 1) + [1.0]:
                raise CnnkitError(f"{what}: classes {onehot} are not one-hot; set exactly one 1.")
            cells = [_fmt(v) for v in coords] + [names[onehot.index(1.0)]]
        else:
            cells = ["" if math.isnan(v) else _fmt(v) for v in coords]
        lines.append([str(f), "1", *cells])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(lines)
    os.replace(tmp, out)
    return out


# ------------------------------------------------------------------------- synthetic


def _contrast(rng: np.random.Generator, under: float) -> np.ndarray:
    """An RGB colour whose mean differs from the grey level ``under`` by at least 80."""
    lo, hi = (under + 80, 255.0) if under < 128 else (0.0, under - 80)
    return rng.uniform(lo, hi, 3) if hi > lo else np.full(3, 255.0 if under < 128 else 0.0)


def synth_localization(
    root: str | os.PathLike,
    n: int,
    size: int = 32,
    seed: int = 0,
    landmarks: bool = False,
) -> Path:
    """Draw a seeded localization (or landmark) set: PNGs and a CSV.

    Each image is a noisy grey background with, in about 80% of the images, one shape
    (side 30-70% of the image, anywhere inside it) of a contrasting colour, and nothing
    (``p_c = 0``) in the rest. For the box layout the shape is a circle, square or
    triangle (the classes of :data:`SYNTH_CLASSES`) and the box is the tight pixel bounds
    of what was drawn. With ``landmarks=True`` every shape is a triangle and its three
    corners, always in the order top, bottom-left, bottom-right, are ``K = 3`` landmarks
    (continuous coordinates: pixel ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``). The
    same arguments give the same files.

    Args:
        root: Folder to write to (created): ``root/images/*.png`` and ``root/labels.csv``.
        n: Number of images.
        size: Image side in pixels (at least 8).
        seed: Seed of everything drawn.
        landmarks: Write the landmark layout instead of boxes.

    Returns:
        The CSV path.

    Raises:
        CnnkitError: If ``n < 1`` or ``size < 8``.
    """
    from PIL import Image, ImageDraw

    n = _positive_int(n, "n")
    size = _positive_int(size, "size", low=8)
    out = Path(root)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    k = len(SYNTH_CLASSES)
    d = 1 + 2 * 3 if landmarks else 5 + k
    targets = torch.zeros(n, d, dtype=torch.float64)
    files: list[str] = []
    for i in range(n):
        grey = float(rng.uniform(30, 225))
        img = np.full((size, size, 3), grey) + rng.normal(0, 12, (size, size, 3))
        if rng.uniform() >= 0.2:
            c = 2 if landmarks else int(rng.integers(k))
            w = int(rng.integers(max(3, round(0.3 * size)), round(0.7 * size) + 1))
            if SYNTH_CLASSES[c] == "triangle":  # any height; circles and squares: h = w
                h = int(rng.integers(max(3, round(0.3 * size)), round(0.7 * size) + 1))
            else:
                h = w
            x0 = int(rng.integers(0, size - w + 1))
            y0 = int(rng.integers(0, size - h + 1))
            mask = Image.new("L", (size, size), 0)
            draw = ImageDraw.Draw(mask)
            # PIL draws in pixel-centre coordinates: continuous (x, y) is PIL (x - .5, y - .5)
            if SYNTH_CLASSES[c] == "circle":
                draw.ellipse([x0, y0, x0 + w - 1, y0 + h - 1], fill=255)
                corners = None
            elif SYNTH_CLASSES[c] == "square":
                draw.rectangle([x0, y0, x0 + w - 1, y0 + h - 1], fill=255)
                corners = None
            else:
                apex = x0 + float(rng.uniform(0.2, 0.8)) * w
                corners = np.array([[apex, y0], [x0, y0 + h], [x0 + w, y0 + h]], np.float64)
                draw.polygon([(x - 0.5, y - 0.5) for x, y in corners.tolist()], fill=255)
            m = np.asarray(mask) > 0  # (n_H, n_W) bool
            img[m] = _contrast(rng, grey) + rng.normal(0, 6, (int(m.sum()), 3))
            bx0, by0, bx1, by1 = mask.getbbox()  # tight bounds: columns bx0..bx1 - 1
            targets[i, 0] = 1.0
            if landmarks:
                targets[i, 1:] = torch.from_numpy(corners.reshape(-1) / size)  # (3, 2) -> (6,)
            else:
                targets[i, 1:5] = (
                    torch.tensor(
                        [(bx0 + bx1) / 2, (by0 + by1) / 2, by1 - by0, bx1 - bx0],
                        dtype=torch.float64,
                    )
                    / size
                )
                targets[i, 5 + c] = 1.0
        a = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        name = f"images/{i:05d}.png"
        Image.fromarray(a, mode="RGB").save(out / name, format="PNG")
        files.append(name)
    return write_localization_csv(
        out / "labels.csv", files, targets, classes=None if landmarks else SYNTH_CLASSES
    )
