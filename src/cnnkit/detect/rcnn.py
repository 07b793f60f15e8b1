"""torchvision's Faster R-CNN (the course's R-CNN family) trained by cnnkit's one trainer.

A region-proposal detector for comparison with YOLO on the same data and command
(``cnnkit detect train data=... model=fasterrcnn_mobilenet_v3``). The network is
torchvision's ``fasterrcnn_mobilenet_v3_large_320_fpn`` built without pretrained
weights (nothing downloads), so its batch-norm layers are ordinary ``BatchNorm2d`` and
every layer trains. Three of torchvision's settings are changed, and stated:

- images are resized inside the network to ``rcnn_size x rcnn_size`` (its
  ``min_size``/``max_size``; default 160): its smallest anchor is 32 px, so the small
  objects of 64 px images are scaled up to meet it;
- the detection head samples 64 regions per image for its loss
  (``box_batch_size_per_image``; torchvision's 512 is made for COCO's crowded images
  and costs 8x the head's time on CPU);
- it normalizes with the training images' own mean and std, like YOLO runs.

In training mode torchvision's detectors take the targets and return a dict of four
losses; :class:`RcnnTask` feeds them from a padded target tensor and sums them. The
dev loss is the same four losses with batch-norm in eval mode (running statistics,
never updated by dev images) and the region sampler seeded, so it is the same number
every epoch for the same weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from cnnkit.detect.data import DetectionSet
from cnnkit.train.tasks import Task

__all__ = [
    "LOSS_KEYS",
    "RCNN_MODELS",
    "RcnnTargets",
    "RcnnTask",
    "build_fasterrcnn",
    "detect_rcnn",
    "pad_targets",
    "unpad_targets",
]

#: cnnkit's model name -> torchvision's builder.
RCNN_MODELS = {"fasterrcnn_mobilenet_v3": "fasterrcnn_mobilenet_v3_large_320_fpn"}

#: torchvision's loss names, in the order of :class:`RcnnTask`'s output vector.
LOSS_KEYS = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")


def build_fasterrcnn(
    name: str,
    num_classes: int,
    *,
    rcnn_size: int = 160,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    score_threshold: float = 0.01,
    iou_threshold: float = 0.5,
    max_boxes: int = 100,
) -> nn.Module:
    """torchvision's Faster R-CNN for ``num_classes`` object classes, untrained.

    Args:
        name: A key of :data:`RCNN_MODELS`.
        num_classes: Object classes ``C`` (torchvision adds the background class 0).
        rcnn_size: Side the network resizes images to (``min_size = max_size``).
        mean: Per-channel normalization mean (3 values, 0-1 units).
        std: Per-channel normalization std.
        score_threshold: Detections below this class score are dropped.
        iou_threshold: Per-class non-max suppression threshold.
        max_boxes: Detections kept per image.

    Returns:
        The ``FasterRCNN`` module (training mode).
    """
    from torchvision.models import detection

    builder = getattr(detection, RCNN_MODELS[name])
    return builder(
        weights=None,
        weights_backbone=None,
        num_classes=num_classes + 1,
        min_size=rcnn_size,
        max_size=rcnn_size,
        image_mean=list(mean),
        image_std=list(std),
        box_batch_size_per_image=64,
        box_score_thresh=score_threshold,
        box_nms_thresh=iou_threshold,
        box_detections_per_img=max_boxes,
    )


def pad_targets(boxes: torch.Tensor, labels: torch.Tensor, M: int) -> torch.Tensor:
    """One image's boxes as a fixed-size ``(M, 5)`` tensor, so that batches stack.

    Args:
        boxes: ``(K, 4)`` absolute ``xyxy`` with ``K <= M``.
        labels: ``(K,)`` class indices from 0.
        M: Rows (the most objects of any image).

    Returns:
        ``(M, 5)`` rows ``x1, y1, x2, y2, class``; unused rows have class ``-1``.
    """
    out = torch.full((M, 5), -1.0)
    K = len(boxes)
    out[:K, :4] = boxes.float()
    out[:K, 4] = labels.float()
    return out


def unpad_targets(y: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """A padded ``(B, M, 5)`` batch as torchvision's list of target dicts.

    Args:
        y: ``(B, M, 5)`` from :func:`pad_targets`.

    Returns:
        Per image ``{"boxes": (K, 4) float, "labels": (K,) int64}``, labels shifted by
        one (torchvision's class 0 is the background).
    """
    out = []
    for t in y:
        keep = t[:, 4] >= 0
        out.append({"boxes": t[keep, :4], "labels": t[keep, 4].long() + 1})
    return out


class RcnnTargets(Dataset):
    """A :class:`DetectionSet` as ``(image in [0, 1], padded targets)`` pairs for ``fit``.

    Grey images are repeated to 3 channels (the MobileNetV3 backbone takes RGB).

    Args:
        ds: The images and boxes.
        M: Rows of the padded targets (at least the most objects of an image).
        augment: Box-aware augmentation settings for
            :func:`cnnkit.detect.train.fast_augment` (None: none).
    """

    def __init__(self, ds: DetectionSet, M: int, augment: dict[str, float] | None = None) -> None:
        self.ds, self.M, self.augment = ds, M, augment

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from cnnkit.detect.train import fast_augment

        img = self.ds.images[i].float() / 255
        boxes, labels = self.ds.boxes[i], self.ds.labels[i]
        if self.augment:
            img, boxes, keep = fast_augment(img, boxes, **self.augment)
            labels = labels[keep]
        if img.shape[0] == 1:
            img = img.expand(3, -1, -1)  # (1, n_H, n_W) -> (3, n_H, n_W)
        return img.contiguous(), pad_targets(boxes, labels, self.M)


class RcnnTask(Task):
    """The trainer's view of Faster R-CNN: the network computes its own four losses.

    :meth:`forward` returns them as a vector in :data:`LOSS_KEYS` order; the loss is
    their sum (torchvision's training recipe). Each is also reported on its own.
    """

    metric_names = LOSS_KEYS
    higher_is_better: ClassVar[dict[str, bool]] = {"loss": False, **dict.fromkeys(LOSS_KEYS, False)}
    n_sums = 2 + len(LOSS_KEYS)

    def forward(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The four losses of a batch, shape ``(4,)``."""
        d = net(list(x), unpad_targets(y))  # (B, 3, n_H, n_W) -> B images; dict of losses
        return torch.stack([d[k] for k in LOSS_KEYS])

    def eval_forward(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The four losses on dev images, without touching batch-norm statistics.

        Only the modules that switch between losses and detections (the network
        itself, its transform, RPN and ROI heads) are put in training mode; every
        other layer stays in eval mode. The region samplers draw from a generator
        seeded with 0, so the dev loss of given weights never changes.
        """
        heads = [m for m in (net, *_switches(net)) if m is not None]
        was = [m.training for m in heads]
        try:
            for m in heads:
                m.training = True
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                return self.forward(net, x, y)
        finally:
            for m, w in zip(heads, was):
                m.training = w

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The sum of the four losses."""
        return outputs.sum()

    def count(
        self, sums: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor
    ) -> None:
        """Add ``loss * n``, ``n`` and each loss times ``n``."""
        n = targets.shape[0]
        sums[0] += loss.double() * n
        sums[1] += n
        sums[2:] += outputs.double() * n

    def summarize(self, sums: torch.Tensor) -> dict[str, float]:
        """``{"loss": mean summed loss, loss_classifier: ..., ...}`` per image."""
        n = float(sums[1])
        if not n:
            return {"loss": float("nan"), **dict.fromkeys(LOSS_KEYS, float("nan"))}
        out = {"loss": float(sums[0]) / n}
        out.update({k: float(v) / n for k, v in zip(LOSS_KEYS, sums[2:].tolist())})
        return out


def _switches(net: nn.Module) -> tuple[Any, ...]:
    inner = getattr(net, "module", net)  # DistributedDataParallel wraps the network
    return (
        inner,
        getattr(inner, "transform", None),
        getattr(inner, "rpn", None),
        getattr(inner, "roi_heads", None),
    )


def detect_rcnn(
    model: nn.Module, images: torch.Tensor, *, batch: int = 32, **_: Any
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Detections per image, in the same form as YOLO's :func:`cnnkit.detect.train.detect`.

    The score threshold, NMS threshold and box limit are the model's own (set by
    :func:`build_fasterrcnn`).

    Args:
        model: A Faster R-CNN from :func:`build_fasterrcnn`.
        images: uint8 ``(N, n_C, n_H, n_W)``.
        batch: Images per forward pass.

    Returns:
        Per image ``(scores (K,), boxes (K, 4) absolute xyxy, classes (K,) from 0)``.
    """
    was = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for k in range(0, len(images), batch):
                x = images[k : k + batch].float() / 255
                if x.shape[1] == 1:
                    x = x.expand(-1, 3, -1, -1)  # (B, 1, n_H, n_W) -> (B, 3, n_H, n_W)
                for d in model(list(x)):
                    out.append((d["scores"], d["boxes"], d["labels"] - 1))
    finally:
        model.train(was)
    return out
