"""The detect job: YOLO (or Faster R-CNN) on a YOLO-txt (``data.yaml``) or COCO dataset.

``cnnkit detect train data=PATH/data.yaml`` calls :func:`train`: it reads the splits,
clusters ``anchors`` anchor shapes from the training boxes (k-means on ``1 - IoU``),
builds :class:`~cnnkit.detect.yolo.YOLO`, trains it with :func:`cnnkit.train.fit` (the
same loop as classification: checkpoints, resume, early stopping, progress) on targets
encoded per image after box-aware augmentation, and scores the best weights with
pycocotools' mAP on the validation split. The run folder is ``runs/detect/NAME``.
``model=fasterrcnn_mobilenet_v3`` trains torchvision's Faster R-CNN through the same
trainer instead (:mod:`cnnkit.detect.rcnn`), scored the same way, for comparison.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from cnnkit.detect.data import DetectionSet, read_coco, read_yolo
from cnnkit.detect.metrics import (
    DetectionScores,
    coco_ground_truth,
    coco_predictions,
    evaluate_coco,
    image_ids,
)
from cnnkit.detect.postprocess import yolo_eval
from cnnkit.detect.rcnn import RCNN_MODELS, RcnnTargets, RcnnTask, build_fasterrcnn, detect_rcnn
from cnnkit.detect.yolo import YOLO, YoloLoss, decode, encode_targets, kmeans_anchors, tiny_backbone
from cnnkit.errors import CnnkitError
from cnnkit.train.classify import saved_files
from cnnkit.train.tasks import Task

__all__ = [
    "DetectConfig",
    "DetectRun",
    "YoloTask",
    "detect",
    "detections",
    "load_detector",
    "predict",
    "score",
    "score_detections",
    "summary_text",
    "train",
    "val",
]


@dataclass
class DetectConfig:
    """Every setting of a detect run.

    Attributes:
        data: ``data.yaml`` (YOLO txt) or a COCO ``.json`` (its images beside it).
        val: The validation split: its name in ``data.yaml`` or another COCO ``.json``.
        model: ``yolo`` (anchor-based, v2-style) or ``fasterrcnn_mobilenet_v3``
            (torchvision's Faster R-CNN, untrained, for comparison; ``backbone``,
            ``anchors``, ``stride``, ``width`` and the ``lambda`` weights are YOLO's and do
            not apply to it).
        size: Images are resized to ``size x size``.
        rcnn_size: Faster R-CNN only: the side it resizes images to inside the network
            (its smallest anchor is 32 px, so small images are scaled up to meet it).
        backbone: ``tiny`` (a small Darknet-like net, :func:`tiny_backbone`) or a zoo
            model whose convolutional features are used (``vgg11``, ``mobilenet_v2``,
            ``resnet18``, ``lenet5``, ...; the grid is then their output's size).
        anchors: ``B``, anchor boxes per cell, clustered from the training boxes.
        stride: Down-sampling of the tiny backbone: the grid is ``S = size / stride``.
        width: Filters of the tiny backbone's first convolution (doubled after each pool).
        epochs: Passes over the training images.
        batch: Mini-batch size.
        lr: Adam's learning rate (cosine decay after one warmup epoch).
        weight_decay: AdamW's decay.
        flip: Augmentation: probability of a horizontal flip (boxes mirrored).
        scale: Augmentation: largest zoom change.
        translate: Augmentation: largest shift, fraction of the side.
        color: Augmentation: brightness / contrast jitter.
        lambda_coord: Weight of the box terms of the loss.
        lambda_noobj: Weight of the objectness loss of empty slots.
        score_threshold: Detections kept for mAP need ``p_c * c_i`` at least this.
        iou_threshold: Non-max suppression drops boxes of a class with IoU above this.
        max_boxes: Detections kept per image.
        seed: Seed of the weights, order and augmentation.
        workers: DataLoader workers (None: one per spare core).
        project: Folder of runs (``project/detect/name``).
        name: Run name (None: ``train``, ``train2``, ...).
        verbose: 0 silent, 1 progress bar, 2 one line per epoch.
    """

    data: str = ""
    val: str = "val"
    model: str = "yolo"
    backbone: str = "tiny"
    size: int = 64
    rcnn_size: int = 160
    anchors: int = 5
    stride: int = 8
    width: int = 16
    epochs: int = 30
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 5e-4
    flip: float = 0.5
    scale: float = 0.2
    translate: float = 0.1
    color: float = 0.1
    lambda_coord: float = 5.0
    lambda_noobj: float = 0.5
    score_threshold: float = 0.01
    iou_threshold: float = 0.5
    max_boxes: int = 100
    seed: int = 0
    workers: int | None = None
    project: str = "runs"
    name: str | None = None
    verbose: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    _POSITIVE: ClassVar[tuple[str, ...]] = (
        "size",
        "rcnn_size",
        "anchors",
        "stride",
        "width",
        "epochs",
        "batch",
    )

    def validate(self) -> None:
        """Check every setting; one sentence per mistake.

        Raises:
            CnnkitError: On a bad value.
        """
        if not self.data or not isinstance(self.data, str):
            raise CnnkitError(
                "detect needs data=PATH/data.yaml (YOLO txt) or data=FILE.json (COCO)."
            )
        if not isinstance(self.val, str) or not self.val:
            raise CnnkitError(f"val must name a split or a COCO .json file, got {self.val!r}.")
        if self.data.lower().endswith(".json") and not self.val.lower().endswith(".json"):
            raise CnnkitError(
                "COCO data needs its validation split as a file: add val=FILE.json (a COCO "
                "json of other images), or the model would be scored on its training images."
            )
        from cnnkit.train.jobs import check_numbers

        check_numbers(self, positive_int=self._POSITIVE)
        models = ("yolo", *RCNN_MODELS)
        if self.model not in models:
            from cnnkit.errors import unknown_name

            raise unknown_name("model", str(self.model), list(models))
        if self.model != "yolo" and self.backbone != "tiny":
            raise CnnkitError(
                f"backbone= chooses YOLO's backbone; model={self.model} has its own "
                "(MobileNetV3): drop backbone= or use model=yolo."
            )
        if self.backbone != "tiny":
            from cnnkit.errors import unknown_name
            from cnnkit.models import list_models

            names = list_models()
            if self.backbone not in names:
                raise unknown_name("backbone", str(self.backbone), ["tiny", *names])
        if self.model == "yolo" and self.backbone == "tiny" and self.size % self.stride:
            raise CnnkitError(
                f"size={self.size} is not a multiple of stride={self.stride}; e.g. size="
                f"{max(self.stride, self.size // self.stride * self.stride)}."
            )
        check_numbers(
            self,
            positive=("lr",),
            unit=("flip", "score_threshold", "iou_threshold"),
            below_one=("scale", "translate"),
            non_negative=("color", "lambda_coord", "lambda_noobj", "weight_decay"),
        )
        mb = self.max_boxes
        if isinstance(mb, bool) or not isinstance(mb, int) or mb < 1:
            raise CnnkitError(f"max_boxes must be a positive integer, got {mb!r}.")


@dataclass
class DetectRun:
    """What :func:`train` returns.

    Attributes:
        run_dir: The run folder.
        model: The network with the best weights (eval mode).
        anchors: ``(B, 2)`` anchor widths and heights (fractions of the image).
        scores: mAP and per-class AP on the validation split.
        history: The rows of ``results.csv``.
        seconds: Wall time of training.
    """

    run_dir: Path
    model: nn.Module
    anchors: torch.Tensor
    scores: DetectionScores
    history: list[dict[str, float]]
    seconds: float


class YoloTask(Task):
    """The trainer's view of YOLO: the loss, and the mean loss as the only metric."""

    metric_names = ()
    higher_is_better: ClassVar[dict[str, bool]] = {"loss": False}
    n_sums = 2

    def __init__(self, lambda_coord: float = 5.0, lambda_noobj: float = 0.5) -> None:
        self.fn = YoloLoss(lambda_coord, lambda_noobj)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The YOLO loss of a batch (summed over the grid, mean over images)."""
        return self.fn(outputs, targets)

    def count(
        self, sums: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor
    ) -> None:
        """Add ``loss * n`` and ``n``."""
        n = targets.shape[0]
        sums[0] += loss.double() * n
        sums[1] += n

    def summarize(self, sums: torch.Tensor) -> dict[str, float]:
        """``{"loss": mean loss per image}``."""
        return {"loss": float(sums[0] / sums[1]) if sums[1] else float("nan")}


class YoloTargets(Dataset):
    """A :class:`DetectionSet` as ``(normalized image, target volume)`` pairs for ``fit``.

    Args:
        ds: The images and boxes.
        S: Grid size.
        anchors: ``(B, 2)`` anchors.
        mean: Per-channel mean (0-1 units) subtracted.
        std: Per-channel std divided by.
        augment: Box-aware augmentation settings (None: none).
    """

    def __init__(
        self,
        ds: DetectionSet,
        S: int,
        anchors: torch.Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        augment: dict[str, float] | None = None,
    ) -> None:
        self.ds, self.S, self.anchors, self.augment = ds, S, anchors, augment
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.ds.images[i].float() / 255
        boxes, labels = self.ds.boxes[i], self.ds.labels[i]
        if self.augment:  # torch's global generator: seeded per worker by the DataLoader
            img, boxes, keep = fast_augment(img, boxes, **self.augment)
            labels = labels[keep]
        y = encode_targets(
            boxes, labels, self.S, self.anchors, len(self.ds.classes), tuple(img.shape[1:])
        )
        return (img - self.mean) / self.std, y


def fast_augment(
    img: torch.Tensor,
    boxes: torch.Tensor,
    flip: float = 0.5,
    scale: float = 0.2,
    translate: float = 0.1,
    color: float = 0.1,
    min_visible: float = 0.25,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Box-aware augmentation in whole pixels, cheap enough for every training image.

    The same steps as :func:`cnnkit.detect.data.augment_detection` (which resamples with
    sub-pixel accuracy through torchvision and costs about 10 ms per 64x64 image): a
    mirror with probability ``flip``; a zoom by ``1 + U(-scale, scale)`` about the centre
    (bilinear resize, then centre crop or grey pad); a shift by whole pixels up to
    ``translate`` of the side; per-channel contrast and brightness jitter. Boxes follow
    exactly (up to the rounding of the zoomed size), are clipped to the image, and a box
    left less than ``min_visible`` visible is dropped.

    Args:
        img: Float ``(n_C, n_H, n_W)`` in ``[0, 1]``.
        boxes: ``(K, 4)`` absolute ``xyxy``.
        flip: Probability of the horizontal mirror.
        scale: Largest relative zoom change.
        translate: Largest shift, fraction of the side.
        color: Largest brightness shift and relative contrast change.
        min_visible: Boxes keeping less than this fraction of their area are dropped.

    Returns:
        ``(image, kept boxes, keep mask (K,))``.
    """
    import torch.nn.functional as F

    n_C, n_H, n_W = img.shape
    b = boxes.clone().float()
    area0 = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    if flip and float(torch.rand(())) < flip:
        img = img.flip(-1)
        b = torch.stack([n_W - b[:, 2], b[:, 1], n_W - b[:, 0], b[:, 3]], 1)
    if scale:
        z = 1 + (2 * float(torch.rand(())) - 1) * scale
        h2, w2 = max(1, round(n_H * z)), max(1, round(n_W * z))
        big = F.interpolate(img[None], size=(h2, w2), mode="bilinear", align_corners=False)[0]
        canvas = torch.full_like(img, 0.5)
        oy, ox = (h2 - n_H) // 2, (w2 - n_W) // 2  # crop (>0) or pad (<0) offsets
        sy, sx = max(oy, 0), max(ox, 0)
        dy, dx = max(-oy, 0), max(-ox, 0)
        hh, ww = min(n_H - dy, h2 - sy), min(n_W - dx, w2 - sx)
        canvas[:, dy : dy + hh, dx : dx + ww] = big[:, sy : sy + hh, sx : sx + ww]
        img = canvas
        b = b * torch.tensor([w2 / n_W, h2 / n_H, w2 / n_W, h2 / n_H]) - torch.tensor(
            [ox, oy, ox, oy], dtype=torch.float32
        )
        area0 = area0 * (w2 / n_W) * (h2 / n_H)
    if translate:
        ty = int(torch.randint(-int(translate * n_H), int(translate * n_H) + 1, ()))
        tx = int(torch.randint(-int(translate * n_W), int(translate * n_W) + 1, ()))
        shifted = torch.full_like(img, 0.5)
        ys, yd = (0, ty) if ty >= 0 else (-ty, 0)
        xs, xd = (0, tx) if tx >= 0 else (-tx, 0)
        h, w = n_H - abs(ty), n_W - abs(tx)
        shifted[:, yd : yd + h, xd : xd + w] = img[:, ys : ys + h, xs : xs + w]
        img = shifted
        b = b + torch.tensor([tx, ty, tx, ty], dtype=torch.float32)
    b[:, 0::2] = b[:, 0::2].clamp(0, n_W)
    b[:, 1::2] = b[:, 1::2].clamp(0, n_H)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    keep = area >= min_visible * area0.clamp_min(1e-6)
    if color:
        c = 1 + (2 * torch.rand(n_C, 1, 1) - 1) * color
        m = img.mean((1, 2), keepdim=True)
        img = ((img - m) * c + m + (2 * torch.rand(n_C, 1, 1) - 1) * color).clamp(0, 1)
    return img, b[keep], keep


def build_backbone(
    name: str, in_channels: int, size: int, width: int = 16, stride: int = 8
) -> tuple[nn.Module, int]:
    """The backbone of a YOLO run and its grid size ``S``.

    Args:
        name: ``tiny`` or a zoo model name (its ``features``, or its layers up to the
            global pool for networks without a ``features`` block, such as ResNets).
        in_channels: ``n_C`` of the images.
        size: Image side (the grid is measured with one forward pass).
        width: The tiny backbone's first filters.
        stride: The tiny backbone's down-sampling.

    Returns:
        ``(backbone with an out_channels attribute, S)``.

    Raises:
        CnnkitError: For an unknown model, or one without a square convolutional map.
    """
    from cnnkit.models import conv_features, feature_map_shape

    net = (
        tiny_backbone(in_channels, width, stride)
        if name == "tiny"
        else conv_features(name, in_channels)
    )
    C, n_H, n_W = feature_map_shape(net, name, in_channels, size, "tiny")
    if n_H != n_W:
        raise CnnkitError(
            f"backbone={name} gives a {n_H}x{n_W} map, not a square grid; use a convolutional "
            "model such as vgg11, mobilenet_v2, resnet18 or tiny."
        )
    net.out_channels = C  # type: ignore[assignment]
    return net, n_H


def _read(path: str, split: str, size: int) -> DetectionSet:
    p = Path(path)
    if p.suffix.lower() == ".json":
        return read_coco(p, size=size)
    if p.suffix.lower() in (".yaml", ".yml"):
        return read_yolo(p, split=split, size=size)
    raise CnnkitError(
        f"data={path!r} is neither a data.yaml (YOLO txt) nor a COCO .json; pass one of those."
    )


def _run_config(run: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    from cnnkit.train.jobs import run_folder

    return run_folder(run, "detect")


def detect(
    model: nn.Module,
    images: torch.Tensor,
    anchors: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    score_threshold: float = 0.01,
    iou_threshold: float = 0.5,
    max_boxes: int = 100,
    batch: int = 64,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Detections per image: decode the grid, then the course's ``yolo_eval``.

    Args:
        model: A :class:`YOLO` network.
        images: uint8 ``(N, n_C, n_H, n_W)``.
        anchors: ``(B, 2)`` anchors.
        mean: Normalization mean (0-1 units).
        std: Normalization std.
        score_threshold: Keep ``p_c * c_i`` at least this.
        iou_threshold: Per-class NMS threshold.
        max_boxes: Most detections per image.
        batch: Images per forward pass.

    Returns:
        Per image ``(scores (K,), boxes (K, 4) absolute xyxy, classes (K,))``.
    """
    was = model.training
    model.eval()
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    n_H, n_W = images.shape[2:]
    out = []
    try:
        with torch.no_grad():
            for k in range(0, len(images), batch):
                x = (images[k : k + batch].float() / 255 - m) / s
                xy, wh, conf, probs = decode(model(x), anchors)
                for j in range(len(x)):
                    out.append(
                        yolo_eval(
                            (xy[j], wh[j], conf[j], probs[j]),
                            image_shape=(n_H, n_W),
                            max_boxes=max_boxes,
                            score_threshold=score_threshold,
                            iou_threshold=iou_threshold,
                        )
                    )
    finally:
        model.train(was)
    return out


def score(
    model: nn.Module,
    ds: DetectionSet,
    anchors: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    **kw: Any,
) -> tuple[DetectionScores, list[dict[str, Any]], dict[str, Any]]:
    """mAP of ``model`` on ``ds`` through pycocotools.

    Args:
        model: The network.
        ds: Images with their boxes.
        anchors: The model's anchors.
        mean: Normalization mean.
        std: Normalization std.
        **kw: :func:`detect`'s thresholds.

    Returns:
        ``(scores, COCO results list, COCO ground-truth dict)``.
    """
    return score_detections(detect(model, ds.images, anchors, mean, std, **kw), ds)


def score_detections(
    dets: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], ds: DetectionSet
) -> tuple[DetectionScores, list[dict[str, Any]], dict[str, Any]]:
    """mAP of detections of ``ds``'s images through pycocotools.

    Args:
        dets: Per image ``(scores, boxes xyxy, classes)``, in ``ds``'s order.
        ds: The images' ground truth.

    Returns:
        ``(scores, COCO results list, COCO ground-truth dict)``.
    """
    ids = image_ids(list(ds.ids))
    gt = coco_ground_truth(ds.boxes, ds.labels, ids, ds.classes, tuple(ds.images.shape[2:]))
    preds = coco_predictions(dets, ids)
    return evaluate_coco(gt, preds), preds, gt


def detections(
    model: nn.Module, meta: dict[str, Any], images: torch.Tensor, **kw: Any
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Detections of a YOLO or Faster R-CNN run's network, whichever ``meta`` names.

    Args:
        model: The network.
        meta: Its weights' metadata (``model``, ``anchors``, ``preprocess``).
        images: uint8 ``(N, n_C, n_H, n_W)`` at the run's size.
        **kw: Thresholds (``score_threshold``, ``iou_threshold``, ``max_boxes``).

    Returns:
        Per image ``(scores (K,), boxes (K, 4) absolute xyxy, classes (K,))``.
    """
    if meta.get("model", "yolo") in RCNN_MODELS:
        roi = model.roi_heads  # type: ignore[union-attr]
        roi.score_thresh = kw.get("score_threshold", roi.score_thresh)
        roi.nms_thresh = kw.get("iou_threshold", roi.nms_thresh)
        roi.detections_per_img = kw.get("max_boxes", roi.detections_per_img)
        return detect_rcnn(model, images)
    pre = meta["preprocess"]
    anchors = torch.tensor(meta["anchors"])
    return detect(model, images, anchors, pre["mean"], pre["std"], **kw)


def train(cfg: DetectConfig | None = None, *, after: Any = None, **settings: Any) -> DetectRun:
    """Train YOLO and leave a run folder (``cnnkit detect train``).

    Args:
        cfg: Settings (see :class:`DetectConfig`).
        after: ``after(result)``, called once the run is scored and saved, before the
            last line (``cnnkit detect train`` draws the precision/recall curves with it).
        **settings: Single settings overriding ``cfg``.

    Returns:
        A :class:`DetectRun`; ``scores`` holds mAP@0.5 and mAP@[.5:.95] on ``val``.
    """
    import time

    from cnnkit.train.jobs import job_config, start_run
    from cnnkit.train.loop import fit

    base = asdict(cfg or DetectConfig())
    base.update(settings)
    cfg = DetectConfig(**base)
    cfg.validate()
    tr = _read(cfg.data, "train", cfg.size)
    va = _read(cfg.val if cfg.val.endswith(".json") else cfg.data, cfg.val, cfg.size)
    if tr.classes != va.classes:
        raise CnnkitError(f"the train and {cfg.val} splits name different classes.")
    if not tr.n_objects:
        raise CnnkitError(f"{cfg.data}: the training split has no boxes to learn from.")
    n_H, n_W = tr.images.shape[2:]
    x = tr.images.float() / 255
    mean = x.mean((0, 2, 3)).tolist()
    std = x.std((0, 2, 3)).clamp_min(1e-3).tolist()
    n_C = tr.images.shape[1]
    aug = {"flip": cfg.flip, "scale": cfg.scale, "translate": cfg.translate, "color": cfg.color}
    kw = {
        "score_threshold": cfg.score_threshold,
        "iou_threshold": cfg.iou_threshold,
        "max_boxes": cfg.max_boxes,
    }
    pre = {"size": [cfg.size, cfg.size], "channels": n_C, "mean": mean, "std": std}
    torch.manual_seed(cfg.seed)
    task: Task
    if cfg.model == "yolo":
        wh = torch.cat([b[:, 2:] - b[:, :2] for b in tr.boxes if len(b)])
        wh = wh / torch.tensor([n_W, n_H])
        anchors = kmeans_anchors(wh, min(cfg.anchors, len(wh)), seed=cfg.seed)
        backbone, S = build_backbone(cfg.backbone, n_C, cfg.size, cfg.width, cfg.stride)
        model: nn.Module = YOLO(len(tr.classes), anchors, backbone)
        train_set: Dataset = YoloTargets(tr, S, anchors, mean, std, aug)
        dev_set: Dataset = YoloTargets(va, S, anchors, mean, std, None)
        task = YoloTask(cfg.lambda_coord, cfg.lambda_noobj)
        meta = {
            "model": "yolo",
            "task": "detect",
            "classes": list(tr.classes),
            "anchors": anchors.tolist(),
            "backbone": cfg.backbone,
            "grid": S,
            "stride": cfg.stride,
            "width": cfg.width,
            "preprocess": pre,
        }
    else:
        anchors = torch.zeros(0, 2)  # Faster R-CNN's anchors are its own (32-512 px, 3 ratios)
        rgb_mean, rgb_std = (mean * 3)[:3], (std * 3)[:3]  # grey images are repeated to RGB
        model = build_fasterrcnn(
            cfg.model,
            len(tr.classes),
            rcnn_size=cfg.rcnn_size,
            mean=rgb_mean,
            std=rgb_std,
            **kw,
        )
        M = max([1, *(len(b) for b in tr.boxes), *(len(b) for b in va.boxes)])
        train_set, dev_set = RcnnTargets(tr, M, aug), RcnnTargets(va, M, None)
        task = RcnnTask()
        meta = {
            "model": cfg.model,
            "task": "detect",
            "classes": list(tr.classes),
            "rcnn_size": cfg.rcnn_size,
            "thresholds": kw,
            "preprocess": {**pre, "rgb_mean": rgb_mean, "rgb_std": rgb_std},
        }
    run = start_run(cfg, "detect")
    tc = job_config(
        epochs=cfg.epochs,
        batch=cfg.batch,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        seed=cfg.seed,
        workers=cfg.workers,
        verbose=cfg.verbose,
    )
    t0 = time.perf_counter()
    res = fit(
        model,
        train_set,
        dev_set,
        config=tc,
        task=task,
        run_dir=run,
        meta=meta,
    )
    seconds = time.perf_counter() - t0
    model.eval()
    scores, preds, gt = score_detections(detections(model, meta, va.images, **kw), va)
    (run / "val_predictions.json").write_text(json.dumps(preds))
    (run / "val_ground_truth.json").write_text(json.dumps(gt))
    text = f"training {seconds:.1f} s\n" + scores.table() + "\n"
    (run / "summary.txt").write_text(text)
    out = DetectRun(run, model, anchors, scores, res.history, seconds)
    if after is not None:
        after(out)
    if cfg.verbose:
        print(scores.table())
        print(f"run saved in {run}/: {saved_files(run)}")
    return out


def load_detector(run: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained detector (YOLO or Faster R-CNN) from its run folder (best weights).

    Args:
        run: The run folder.

    Returns:
        ``(model in eval mode, metadata)``.
    """
    from cnnkit.train.jobs import best_weights

    state, meta = best_weights(run, "detect")
    pre = meta["preprocess"]
    model: nn.Module
    if meta.get("model", "yolo") in RCNN_MODELS:
        model = build_fasterrcnn(
            meta["model"],
            len(meta["classes"]),
            rcnn_size=meta["rcnn_size"],
            mean=pre["rgb_mean"],
            std=pre["rgb_std"],
            **meta["thresholds"],
        )
    else:
        backbone, _ = build_backbone(
            meta.get("backbone", "tiny"),
            pre["channels"],
            pre["size"][0],
            meta["width"],
            meta["stride"],
        )
        model = YOLO(len(meta["classes"]), meta["anchors"], backbone)
    model.load_state_dict(state)
    return model.eval(), meta


def val(
    run: str | os.PathLike, data: str | None = None, split: str | None = None
) -> DetectionScores:
    """mAP of a detect run's best weights on a split (``cnnkit detect val``).

    Args:
        run: The run folder.
        data: Another ``data.yaml`` / COCO ``.json`` (default: the run's own).
        split: The split in ``data.yaml`` (default: the run's ``val``).

    Returns:
        :class:`~cnnkit.detect.metrics.DetectionScores` from pycocotools.
    """
    r, cfg = _run_config(run)
    model, meta = load_detector(r)
    pre = meta["preprocess"]
    split = split or (cfg.get("val", "val") if data is None else "val")
    path = data or (split if str(split).endswith(".json") else cfg["data"])
    named = str(split) == str(path) or (data is not None and split == "val")
    if str(path).lower().endswith(".json") and not named:
        raise CnnkitError(
            "a COCO run is scored on a COCO file: pass split=FILE.json (or data=FILE.json), "
            f"not split={split}."
        )
    ds = _read(str(path), str(split), int(pre["size"][0]))
    if list(ds.classes) != list(meta["classes"]):
        raise CnnkitError(f"{path} names classes {ds.classes}, the run {meta['classes']}.")
    kw = {
        "score_threshold": cfg.get("score_threshold", 0.01),
        "iou_threshold": cfg.get("iou_threshold", 0.5),
        "max_boxes": cfg.get("max_boxes", 100),
    }
    return score_detections(detections(model, meta, ds.images, **kw), ds)[0]


def predict(
    run: str | os.PathLike,
    source: str | os.PathLike,
    *,
    score_threshold: float = 0.3,
    iou_threshold: float | None = None,
    max_boxes: int | None = None,
    draw: bool = True,
) -> Path:
    """Detect objects in an image folder; write ``predictions.json`` and drawn images.

    ``predictions.json`` (in the run folder) is in COCO's results format with
    ``image_id`` = the image file's stem (an int when it is one) and boxes in the
    image's own pixels; ``predict/<stem>.png`` shows the boxes with class and score.

    Args:
        run: The run folder.
        source: An image file or a folder of images.
        score_threshold: Keep detections with ``p_c * c_i`` at least this.
        iou_threshold: Per-class NMS threshold (default: the run's).
        max_boxes: Most detections per image (default: the run's).
        draw: Also write the images with their boxes.

    Returns:
        The ``predictions.json`` path.
    """
    from PIL import Image
    from torchvision.utils import draw_bounding_boxes

    from cnnkit.data.images import decode_image
    from cnnkit.train.classify import _image_files

    r, cfg = _run_config(run)
    files = _image_files(source)  # an image, or a folder's images (sorted), or one sentence
    model, meta = load_detector(r)
    pre = meta["preprocess"]
    n_H, n_W = pre["size"]
    ids = image_ids([f.stem for f in files])
    results, out_dir = [], r / "predict"
    if draw:
        out_dir.mkdir(parents=True, exist_ok=True)
    for f, i in zip(files, ids):
        arr = decode_image(f, channels=pre["channels"])  # uint8 (H, W, n_C)
        img = torch.from_numpy(np.array(arr)).permute(2, 0, 1).contiguous()  # -> (n_C, H, W)
        H, W = img.shape[1:]
        small = torch.from_numpy(
            np.array(Image.fromarray(_hwc(img)).resize((n_W, n_H), Image.BILINEAR))
        )
        small = small.reshape(n_H, n_W, -1).permute(2, 0, 1)  # (n_H, n_W, n_C) -> (n_C, n_H, n_W)
        ((scores, boxes, classes),) = detections(
            model,
            meta,
            small[None],
            score_threshold=score_threshold,
            iou_threshold=iou_threshold
            if iou_threshold is not None
            else cfg.get("iou_threshold", 0.5),
            max_boxes=max_boxes if max_boxes is not None else cfg.get("max_boxes", 100),
        )
        boxes = boxes * torch.tensor([W / n_W, H / n_H, W / n_W, H / n_H])  # back to the image
        results += coco_predictions([(scores, boxes, classes)], [i])
        if draw:
            names = [f"{meta['classes'][int(c)]} {float(s):.2f}" for s, c in zip(scores, classes)]
            rgb = img.expand(3, -1, -1) if img.shape[0] == 1 else img
            drawn = (
                draw_bounding_boxes(rgb, boxes, labels=names, colors="red", width=2)
                if len(boxes)
                else rgb
            )
            Image.fromarray(_hwc(drawn)).save(out_dir / f"{f.stem}.png")
    path = r / "predictions.json"
    path.write_text(json.dumps(results))
    return path


def _hwc(img: torch.Tensor) -> np.ndarray:
    a = img.permute(1, 2, 0).contiguous().numpy()  # (n_C, H, W) -> (H, W, n_C)
    return a[:, :, 0] if a.shape[2] == 1 else a


def summary_text(run: str | os.PathLike) -> str:
    """A detect run's grid, anchors and thresholds as text (``cnnkit detect summary``).

    Args:
        run: The run folder.

    Returns:
        Lines of text.
    """
    r, cfg = _run_config(run)
    model, meta = load_detector(r)
    n_H, n_W = meta["preprocess"]["size"]
    n_params = sum(p.numel() for p in model.parameters())
    if meta.get("model") in RCNN_MODELS:
        sizes = model.rpn.anchor_generator.sizes[0]  # type: ignore[union-attr]
        ratios = model.rpn.anchor_generator.aspect_ratios[0]  # type: ignore[union-attr]
        return "\n".join(
            [
                f"Faster R-CNN (torchvision's {RCNN_MODELS[meta['model']]}, MobileNetV3-Large "
                f"+ FPN) on {n_H}x{n_W}x{meta['preprocess']['channels']} images, resized "
                f"inside to {meta['rcnn_size']}x{meta['rcnn_size']}; parameters {n_params:,}",
                f"region proposals: anchors of {', '.join(str(a) for a in sizes)} px x aspect "
                f"ratios {', '.join(f'{a:g}' for a in ratios)} at every position of each "
                "feature map; 64 regions per image sampled for the head's loss",
                f"thresholds: score {cfg.get('score_threshold')} (mAP), IoU "
                f"{cfg.get('iou_threshold')} (NMS, per class), at most {cfg.get('max_boxes')} "
                "boxes per image",
                f"classes: {', '.join(meta['classes'])} (+ background, class 0 inside torchvision)",
            ]
        )
    S = meta.get("grid", n_H // meta["stride"])
    B, C = len(meta["anchors"]), len(meta["classes"])
    lines = [
        f"YOLO on {n_H}x{n_W}x{meta['preprocess']['channels']} images: grid S = {S} "
        f"(stride {n_H / S:g}), B = {B} anchors, C = {C} classes "
        f"-> output {S} x {S} x {B} x (5 + {C}) = {S * S * B * (5 + C):,} numbers",
        f"backbone {meta.get('backbone', 'tiny')}, parameters {n_params:,}",
        "anchors (k-means on 1 - IoU over the training boxes), width x height in pixels:",
    ]
    for k, (w, h) in enumerate(meta["anchors"]):
        lines.append(f"  {k}: {w * n_W:.1f} x {h * n_H:.1f}")
    lines.append(
        f"thresholds: score {cfg.get('score_threshold')} (mAP), IoU {cfg.get('iou_threshold')} "
        f"(NMS, per class), at most {cfg.get('max_boxes')} boxes per image"
    )
    lines.append(f"classes: {', '.join(meta['classes'])}")
    return "\n".join(lines)
