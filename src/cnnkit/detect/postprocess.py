"""The course's YOLO post-processing ("Car detection with YOLO"), in torch.

YOLO with a 608x608 input, a 19x19 grid, 5 anchor boxes per cell and 80 classes
outputs for every cell ``c`` and anchor ``a``:

* ``box_confidence`` ``(19, 19, 5, 1)``: ``p_c``, the probability there is an object;
* ``box_xy`` ``(19, 19, 5, 2)`` and ``box_wh`` ``(19, 19, 5, 2)``: the centre
  ``(b_x, b_y)`` and size ``(b_w, b_h)`` of the box, relative to the image (in [0, 1]);
* ``box_class_probs`` ``(19, 19, 5, 80)``: ``(c_1, ..., c_80)``, the class probabilities
  given an object.

:func:`yolo_eval` turns these 19 * 19 * 5 = 1805 candidate boxes into a few detections
as the course does: :func:`yolo_boxes_to_corners` (centre and size -> corners),
:func:`filter_boxes` (score ``p_c * c_i`` of the best class, kept when >= a threshold),
:func:`scale_boxes` (relative -> pixels of the image) and :func:`non_max_suppression`
(per class, drop a box whose IoU with a higher-scoring kept box is > a threshold; keep
at most ``max_boxes``).

Boxes are cnnkit's ``xyxy`` corners ``(x1, y1, x2, y2)`` throughout. The course's
Keras code orders them ``(y1, x1, y2, x2)`` because ``tf.image.non_max_suppression``
wants that; here they follow torchvision. Any leading shape works in place of
``(19, 19, 5)`` (e.g. a batch of one ``(1, 19, 19, 5)``, or another grid).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_convert, nms

from cnnkit.detect.boxes import check_boxes
from cnnkit.errors import CnnkitError

__all__ = [
    "filter_boxes",
    "non_max_suppression",
    "scale_boxes",
    "yolo_boxes_to_corners",
    "yolo_eval",
]


def _tensor(x: object, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as e:
        raise CnnkitError(
            f"{name} must be a tensor of numbers, got {type(x).__name__}; pass a torch.Tensor."
        ) from e


def _last_axis(t: Tensor, name: str, size: int, what: str) -> None:
    if t.ndim == 0 or t.shape[-1] != size:
        raise CnnkitError(
            f"{name} must have shape (..., {size}) ({what}), got shape {tuple(t.shape)}; "
            f"the course's is (19, 19, 5, {size})."
        )


def _same_lead(shapes: Sequence[tuple[str, Tensor]]) -> None:
    (name0, t0), *rest = shapes
    for name, t in rest:
        if t.shape[:-1] != t0.shape[:-1]:
            raise CnnkitError(
                f"{name} has leading shape {tuple(t.shape[:-1])} but {name0} has "
                f"{tuple(t0.shape[:-1])}; give every output for the same grid of boxes "
                f"(e.g. (19, 19, 5, ...))."
            )


def _real(name: str, v: object, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise CnnkitError(f"{name} must be a finite number, got {v!r}.")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise CnnkitError(f"{name} must be between {lo} and {hi}, got {v!r}.")
    return float(v)


def filter_boxes(
    box_confidence: Tensor,
    boxes: Tensor,
    box_class_probs: Tensor,
    threshold: float = 0.6,
) -> tuple[Tensor, Tensor, Tensor]:
    """Keep the boxes whose best class score is at least ``threshold``.

    The course's ``yolo_filter_boxes``: ``box_scores = box_confidence *
    box_class_probs`` (``p_c * c_i`` per class), ``box_classes`` the argmax over the
    classes (the first on a tie), ``box_class_scores`` the max, and the filtering mask
    ``box_class_scores >= threshold``. Kept boxes come out in row-major order of the
    leading axes (cell row, cell column, anchor), as ``tf.boolean_mask`` gives them.

    Args:
        box_confidence: ``p_c`` per box, shape ``(..., 1)``, e.g. ``(19, 19, 5, 1)``.
        boxes: The boxes, shape ``(..., 4)``, e.g. ``(19, 19, 5, 4)`` (any format: they
            are only selected).
        box_class_probs: Class probabilities per box, shape ``(..., C)``, e.g.
            ``(19, 19, 5, 80)``.
        threshold: Keep a box when its best class score is >= this.

    Returns:
        ``(scores, boxes, classes)`` of the ``K`` kept boxes: the scores ``(K,)``, the
        boxes ``(K, 4)`` and the class indices ``(K,)`` (int64). ``K`` may be 0.

    Raises:
        CnnkitError: If the last axes are not 1, 4 and ``C`` >= 1, the leading shapes
            differ, or ``threshold`` is not a finite number.
    """
    box_confidence = _tensor(box_confidence, "box_confidence")
    boxes = _tensor(boxes, "boxes")
    box_class_probs = _tensor(box_class_probs, "box_class_probs")
    _last_axis(box_confidence, "box_confidence", 1, "one p_c per box")
    _last_axis(boxes, "boxes", 4, "four coordinates per box")
    if box_class_probs.ndim == 0 or box_class_probs.shape[-1] == 0:
        raise CnnkitError(
            f"box_class_probs must have shape (..., C) with C >= 1 classes, got shape "
            f"{tuple(box_class_probs.shape)}; the course's is (19, 19, 5, 80)."
        )
    _same_lead(
        [("box_confidence", box_confidence), ("boxes", boxes), ("box_class_probs", box_class_probs)]
    )
    threshold = _real("threshold", threshold)

    box_scores = box_confidence * box_class_probs  # (..., 1) * (..., C) -> (..., C)
    box_classes = torch.argmax(box_scores, dim=-1)  # (..., C) -> (...)
    # the max itself, at the argmax: (..., C) -> (..., 1) -> (...)
    box_class_scores = torch.gather(box_scores, -1, box_classes[..., None])[..., 0]
    filtering_mask = box_class_scores >= threshold  # (...)
    # boolean masks flatten the leading axes, row-major:
    scores = box_class_scores[filtering_mask]  # (...) -> (K,)
    kept_boxes = boxes[filtering_mask]  # (..., 4) -> (K, 4)
    classes = box_classes[filtering_mask]  # (...) -> (K,)
    return scores, kept_boxes, classes


def non_max_suppression(
    scores: Tensor,
    boxes: Tensor,
    classes: Tensor,
    max_boxes: int = 10,
    iou_threshold: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class non-max suppression, keeping at most ``max_boxes`` boxes in all.

    Greedy, per class: take the highest-scoring box left, keep it, and drop every
    other box of its class whose IoU with it is > ``iou_threshold`` (so IoU equal to
    the threshold survives); repeat. Boxes of different classes never suppress each
    other. Of the survivors the ``max_boxes`` highest scores are kept, over all classes,
    sorted by score, highest first (equal scores keep their input order).

    Each class runs :func:`torchvision.ops.nms` on its own boxes. This is what
    :func:`torchvision.ops.batched_nms` computes, except that its offset trick assumes
    coordinates >= 0: a YOLO box reaching past the image's top or left edge (negative
    ``x1`` or ``y1``) can there suppress a box of another class.

    The course's Keras code calls ``tf.image.non_max_suppression`` once over all
    classes; to do that here, pass ``classes=torch.zeros_like(classes)``.

    Args:
        scores: Score per box, shape ``(K,)``.
        boxes: Corners ``(x1, y1, x2, y2)``, shape ``(K, 4)``.
        classes: Class index per box, shape ``(K,)``, an integer tensor.
        max_boxes: Keep at most this many boxes in all.
        iou_threshold: Suppress a box when its IoU with a kept box of its class is
            greater than this (in [0, 1]).

    Returns:
        ``(scores, boxes, classes)`` of the ``k <= min(K, max_boxes)`` kept boxes,
        shapes ``(k,)``, ``(k, 4)`` and ``(k,)``, sorted by score, highest first.

    Raises:
        CnnkitError: If the shapes do not match ``(K,)``, ``(K, 4)``, ``(K,)``, a box is
            not valid corners, ``classes`` is not integer, ``max_boxes`` is not a
            positive integer, or ``iou_threshold`` is outside [0, 1].
    """
    scores = _tensor(scores, "scores")
    boxes = check_boxes(_tensor(boxes, "boxes"), "boxes")
    classes = _tensor(classes, "classes")
    if boxes.ndim != 2:
        raise CnnkitError(
            f"boxes must have shape (K, 4), got {tuple(boxes.shape)}; flatten a grid of "
            f"boxes with filter_boxes() or boxes.reshape(-1, 4)."
        )
    k = boxes.shape[0]
    for name, t in (("scores", scores), ("classes", classes)):
        if tuple(t.shape) != (k,):
            raise CnnkitError(
                f"{name} must have shape ({k},), one per box, got {tuple(t.shape)}; "
                f"pass what filter_boxes() returns."
            )
    if not scores.is_floating_point():
        scores = scores.to(boxes.dtype)
    if classes.is_floating_point() or classes.is_complex() or classes.dtype == torch.bool:
        raise CnnkitError(
            f"classes must hold integer class indices, got dtype {classes.dtype}; "
            f"cast with classes.long()."
        )
    if isinstance(max_boxes, bool) or not isinstance(max_boxes, int) or max_boxes < 1:
        raise CnnkitError(f"max_boxes must be a positive integer, got {max_boxes!r}.")
    iou_threshold = _real("iou_threshold", iou_threshold, 0.0, 1.0)

    nms_boxes = boxes.detach()
    nms_scores = scores.detach().to(boxes.dtype)
    keep = [torch.empty(0, dtype=torch.long, device=boxes.device)]
    for c in torch.unique(classes):
        idx = (classes == c).nonzero()[:, 0]  # the K_c boxes of class c: (K_c, 1) -> (K_c,)
        keep.append(idx[nms(nms_boxes[idx], nms_scores[idx], iou_threshold)])
    kept = torch.cat(keep)  # indices into the K boxes
    # highest score first; equal scores in input order (a stable sort of sorted indices)
    kept = kept.sort().values
    kept = kept[torch.sort(nms_scores[kept], descending=True, stable=True).indices]
    kept = kept[:max_boxes]
    return scores[kept], boxes[kept], classes[kept]


def yolo_boxes_to_corners(box_xy: Tensor, box_wh: Tensor) -> Tensor:
    """Turn YOLO's centre and size into corners ``(x1, y1, x2, y2)``.

    ``x1 = b_x - b_w / 2``, ``y1 = b_y - b_h / 2``, ``x2 = b_x + b_w / 2``,
    ``y2 = b_y + b_h / 2``. Note the order: cnnkit's ``xyxy``, where the course's Keras
    code returns ``(y1, x1, y2, x2)``.

    Args:
        box_xy: Centres ``(b_x, b_y)``, shape ``(..., 2)``, e.g. ``(19, 19, 5, 2)``.
        box_wh: Sizes ``(b_w, b_h)``, shape ``(..., 2)`` (the same leading shape).

    Returns:
        The corners, shape ``(..., 4)``, in the units of the inputs.

    Raises:
        CnnkitError: If the last axes are not 2 or the leading shapes differ.
    """
    box_xy = _tensor(box_xy, "box_xy")
    box_wh = _tensor(box_wh, "box_wh")
    _last_axis(box_xy, "box_xy", 2, "the centre (b_x, b_y) per box")
    _last_axis(box_wh, "box_wh", 2, "the size (b_w, b_h) per box")
    _same_lead([("box_xy", box_xy), ("box_wh", box_wh)])
    box_xywh = torch.cat([box_xy, box_wh], dim=-1)  # (..., 2) + (..., 2) -> (..., 4)
    return box_convert(box_xywh, in_fmt="cxcywh", out_fmt="xyxy")


def scale_boxes(boxes: Tensor, image_shape: Sequence[float]) -> Tensor:
    """Scale boxes from units of the image (in [0, 1]) to its pixels.

    ``x1`` and ``x2`` are multiplied by the image's width, ``y1`` and ``y2`` by its
    height.

    Args:
        boxes: Corners ``(x1, y1, x2, y2)`` relative to the image, shape ``(..., 4)``.
        image_shape: ``(height, width)`` of the image in pixels, e.g. ``(720, 1280)``.

    Returns:
        The boxes in pixels, same shape as ``boxes``.

    Raises:
        CnnkitError: If the last axis of ``boxes`` is not 4 or ``image_shape`` is not two
            positive numbers.
    """
    boxes = _tensor(boxes, "boxes")
    _last_axis(boxes, "boxes", 4, "four coordinates per box")
    try:
        dims = [float(v) for v in image_shape]
    except (TypeError, ValueError):
        dims = []
    if len(dims) != 2 or not all(math.isfinite(v) and v > 0 for v in dims):
        raise CnnkitError(
            f"image_shape must be (height, width) in pixels, two positive numbers, got "
            f"{image_shape!r}; e.g. (720, 1280)."
        )
    height, width = dims
    dtype = boxes.dtype if boxes.is_floating_point() else torch.get_default_dtype()
    image_dims = torch.tensor([width, height, width, height], dtype=dtype, device=boxes.device)
    return boxes * image_dims  # (..., 4) * (4,) -> (..., 4)


def yolo_eval(
    outputs: Sequence[Tensor],
    image_shape: Sequence[float] = (720, 1280),
    max_boxes: int = 10,
    score_threshold: float = 0.6,
    iou_threshold: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor]:
    """The course's ``yolo_eval``: YOLO's outputs to the final detections on the image.

    In the course's order: :func:`yolo_boxes_to_corners`, :func:`filter_boxes` with
    ``score_threshold``, :func:`scale_boxes` to ``image_shape``, then
    :func:`non_max_suppression` with ``max_boxes`` and ``iou_threshold``.

    Args:
        outputs: ``(box_xy, box_wh, box_confidence, box_class_probs)`` with shapes
            ``(..., 2)``, ``(..., 2)``, ``(..., 1)`` and ``(..., C)``, e.g.
            ``(19, 19, 5, 2)``, ``(19, 19, 5, 2)``, ``(19, 19, 5, 1)`` and
            ``(19, 19, 5, 80)``; ``box_xy`` and ``box_wh`` are the centre and size of
            each box relative to the image (in [0, 1]).
        image_shape: ``(height, width)`` of the image in pixels.
        max_boxes: Keep at most this many boxes.
        score_threshold: Keep a box when its best class score ``p_c * c_i`` is >= this.
        iou_threshold: Per class, suppress a box whose IoU with a kept box is > this.

    Returns:
        ``(scores, boxes, classes)``: shapes ``(k,)``, ``(k, 4)`` (``xyxy`` corners in
        pixels) and ``(k,)`` (int64), ``k <= max_boxes``, highest score first.

    Raises:
        CnnkitError: If ``outputs`` is not four tensors or any check of the steps fails.
    """
    is_seq = isinstance(outputs, Sequence) and not isinstance(outputs, (Tensor, str))
    if not is_seq or len(outputs) != 4:
        got = f"{len(outputs)} items" if is_seq else f"a {type(outputs).__name__}"
        raise CnnkitError(
            f"outputs must be the four tensors (box_xy, box_wh, box_confidence, "
            f"box_class_probs), got {got}."
        )
    box_xy, box_wh, box_confidence, box_class_probs = outputs
    boxes = yolo_boxes_to_corners(box_xy, box_wh)  # (..., 4)
    scores, boxes, classes = filter_boxes(
        box_confidence, boxes, box_class_probs, threshold=score_threshold
    )  # (K,), (K, 4), (K,)
    boxes = scale_boxes(boxes, image_shape)  # (K, 4)
    return non_max_suppression(
        scores, boxes, classes, max_boxes=max_boxes, iou_threshold=iou_threshold
    )
