"""Detection metrics through pycocotools: mAP@0.5, mAP@[.5:.95], per-class AP, P/R curves.

cnnkit does not re-implement COCO's average precision: it writes the ground truth and
the detections in COCO's formats and runs ``pycocotools.cocoeval.COCOeval``, so the
numbers it reports are pycocotools' own (a test loads the same ``predictions.json``
with pycocotools directly and compares to 1e-6).

Image ids are the image files' stems, as integers when they are integers (COCO's
convention: ``000123.png`` is image 123), else the image's position.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.errors import CnnkitError

__all__ = [
    "DetectionScores",
    "coco_ground_truth",
    "coco_predictions",
    "evaluate_coco",
    "image_ids",
]


def image_ids(stems: Sequence[str]) -> list[int]:
    """COCO image ids for image file stems: the stem as an int when every stem is one.

    Args:
        stems: File stems (``"000123"``), in dataset order.

    Returns:
        One int per image: ``int(stem)`` when all stems are distinct integers, else the
        position ``0..N-1``.
    """
    try:
        ids = [int(s) for s in stems]
    except (TypeError, ValueError):
        return list(range(len(stems)))
    return ids if len(set(ids)) == len(ids) else list(range(len(stems)))


def coco_ground_truth(
    boxes: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    ids: Sequence[int],
    classes: Sequence[str],
    sizes: Sequence[tuple[int, int]] | tuple[int, int],
    category_ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """A COCO ground-truth dictionary (``images``, ``annotations``, ``categories``).

    Args:
        boxes: Per image, ``(K, 4)`` absolute ``xyxy`` boxes.
        labels: Per image, ``(K,)`` class indices.
        ids: Per image, its COCO id.
        classes: Class names.
        sizes: ``(n_H, n_W)`` per image, or one for all.
        category_ids: COCO category id per class (default ``0..C-1``).

    Returns:
        The dictionary, as in a COCO ``instances_*.json``.
    """
    cats = list(range(len(classes))) if category_ids is None else list(category_ids)
    if isinstance(sizes, tuple):
        sizes = [sizes] * len(boxes)
    images, anns = [], []
    for b, lab, i, (h, w) in zip(boxes, labels, ids, sizes):
        images.append({"id": int(i), "width": int(w), "height": int(h)})
        for box, c in zip(b.tolist(), lab.tolist()):
            x1, y1, x2, y2 = box
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": int(i),
                    "category_id": cats[int(c)],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": cats[k], "name": str(n)} for k, n in enumerate(classes)]
    return {"images": images, "annotations": anns, "categories": categories}


def coco_predictions(
    detections: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    ids: Sequence[int],
    category_ids: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Detections in COCO's results format (what ``predictions.json`` holds).

    Args:
        detections: Per image ``(scores (K,), boxes (K, 4) xyxy absolute, classes (K,))``.
        ids: Per image, its COCO id.
        category_ids: COCO category id per class index (default the index).

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``.
    """
    out = []
    for (scores, b, cls), i in zip(detections, ids):
        for s, box, c in zip(scores.tolist(), b.tolist(), cls.tolist()):
            x1, y1, x2, y2 = box
            cat = int(c) if category_ids is None else int(category_ids[int(c)])
            out.append(
                {
                    "image_id": int(i),
                    "category_id": cat,
                    "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                    "score": round(float(s), 5),
                }
            )
    return out


@dataclass
class DetectionScores:
    """COCO's numbers for one set of detections.

    Attributes:
        map50: AP at IoU 0.5, averaged over classes (mAP@0.5).
        map: AP averaged over IoU 0.50:0.05:0.95 and classes (mAP@[.5:.95]).
        per_class: ``{class name: AP@0.5}`` (NaN for a class with no ground truth).
        recall: Recall levels of the precision curves (101 points).
        precision: ``{class name: precision at each recall level}`` at IoU 0.5.
        stats: pycocotools' 12 summary numbers (``COCOeval.stats``).
    """

    map50: float
    map: float
    per_class: dict[str, float] = field(default_factory=dict)
    recall: list[float] = field(default_factory=list)
    precision: dict[str, list[float]] = field(default_factory=dict)
    stats: list[float] = field(default_factory=list)

    def table(self) -> str:
        """mAP lines and per-class AP@0.5 as text."""
        lines = [f"mAP@0.5 {self.map50:.4f}   mAP@[.5:.95] {self.map:.4f}", ""]
        w = max(5, *(len(c) for c in self.per_class)) if self.per_class else 5
        lines.append(f"{'class':<{w}}  AP@0.5")
        for c, ap in self.per_class.items():
            lines.append(f"{c:<{w}}  {'-' if np.isnan(ap) else f'{ap:.4f}'}")
        return "\n".join(lines)


def evaluate_coco(
    ground_truth: dict[str, Any] | str | os.PathLike,
    predictions: list[dict[str, Any]] | str | os.PathLike,
) -> DetectionScores:
    """Run pycocotools' COCOeval (bbox) and return its numbers.

    Args:
        ground_truth: A COCO dictionary or a JSON file.
        predictions: COCO results (a list) or a ``predictions.json`` file.

    Returns:
        :class:`DetectionScores` (``map50`` is ``stats[1]``, ``map`` is ``stats[0]``).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = ground_truth
    if not isinstance(gt, dict):
        gt = json.loads(Path(gt).read_text())
    if not gt.get("annotations"):
        raise CnnkitError("the ground truth has no boxes: mAP is undefined; label some objects.")
    preds = predictions
    if not isinstance(preds, list):
        preds = json.loads(Path(preds).read_text())
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it goes
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))  # a copy: pycocotools adds keys
        coco.createIndex()
        if preds:
            dt = coco.loadRes(json.loads(json.dumps(preds)))
        else:  # loadRes refuses an empty list: no detections score 0
            dt = COCO()
            dt.dataset = {"images": gt["images"], "annotations": [], "categories": gt["categories"]}
            dt.createIndex()
        ev = COCOeval(coco, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(s) for s in ev.stats]
    # precision: [T IoUs, R recall levels, K classes, A areas, M max dets]; IoU 0.5 is
    # T index 0, area "all" is A index 0, 100 detections is M index 2
    P = ev.eval["precision"]
    names = {c["id"]: c["name"] for c in gt["categories"]}
    per_class, curves = {}, {}
    for k, cat in enumerate(ev.params.catIds):
        p = P[0, :, k, 0, 2]  # (R,)
        valid = p[p > -1]
        per_class[names[cat]] = float(valid.mean()) if len(valid) else float("nan")
        curves[names[cat]] = [float(v) for v in p]
    return DetectionScores(
        map50=stats[1],
        map=stats[0],
        per_class=per_class,
        recall=[float(r) for r in ev.params.recThrs],
        precision=curves,
        stats=stats,
    )
