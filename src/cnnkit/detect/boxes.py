"""Bounding boxes and intersection over union (IoU), as the course defines them.

Inside cnnkit a box is four absolute corner coordinates ``(x1, y1, x2, y2)``
(torchvision's ``xyxy``): ``(x1, y1)`` the upper-left corner, ``(x2, y2)`` the
lower-right one, with ``x1 <= x2`` and ``y1 <= y2`` (image coordinates, ``y`` grows
downwards). :func:`convert` changes between torchvision's formats:

* ``xyxy``: ``(x1, y1, x2, y2)``, the corners;
* ``xywh``: ``(x1, y1, w, h)``, the upper-left corner and the size;
* ``cxcywh``: ``(b_x, b_y, b_w, b_h)``, the centre and the size (what YOLO predicts).

IoU is the course's "intersection over union": the area of the intersection of two
boxes divided by the area of their union,

    xi1 = max(x1, x1'),  yi1 = max(y1, y1'),  xi2 = min(x2, x2'),  yi2 = min(y2, y2')
    inter_area = max(0, xi2 - xi1) * max(0, yi2 - yi1)
    union_area = box1_area + box2_area - inter_area
    iou = inter_area / union_area

so boxes that only touch (an edge or a corner) have IoU exactly 0, identical boxes 1,
and two zero-area boxes (union 0) are given IoU 0 rather than NaN. Detection
conventionally calls a prediction correct when its IoU with the ground truth is >= 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_convert, box_iou

from cnnkit.errors import CnnkitError, unknown_name

__all__ = ["FORMATS", "check_boxes", "convert", "iou"]

FORMATS: tuple[str, ...] = ("xyxy", "xywh", "cxcywh")
"""Box formats :func:`convert` understands (torchvision's names)."""

BoxesLike = Tensor | Sequence[float] | Sequence[Sequence[float]]


def _as_float_tensor(boxes: object, name: str) -> Tensor:
    """``boxes`` as a floating tensor.

    Tensors and arrays keep a floating dtype (integers become the default float dtype);
    lists and tuples of Python numbers are read as float64, as exact as the numbers.
    """
    if isinstance(boxes, Tensor):
        t = boxes
    else:
        try:
            if isinstance(boxes, (list, tuple)):
                t = torch.as_tensor(boxes, dtype=torch.float64)
            else:
                t = torch.as_tensor(boxes)
        except (TypeError, ValueError, RuntimeError) as e:
            raise CnnkitError(
                f"{name} must be a tensor (or nested list) of numbers, got "
                f"{type(boxes).__name__}; pass e.g. torch.tensor([[x1, y1, x2, y2]])."
            ) from e
    if t.dtype == torch.bool or t.is_complex():
        raise CnnkitError(
            f"{name} must hold real numbers, got dtype {t.dtype}; cast with .float()."
        )
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return t


def _check_last_axis(t: Tensor, name: str) -> None:
    if t.ndim == 0 or t.shape[-1] != 4:
        raise CnnkitError(
            f"{name} must have shape (..., 4) with four coordinates per box, got shape "
            f"{tuple(t.shape)}; stack the boxes as rows of (x1, y1, x2, y2)."
        )


def _check_format(fmt: object, which: str) -> str:
    if not isinstance(fmt, str):
        raise CnnkitError(
            f"{which} must be a box format name, one of "
            f"{', '.join(repr(f) for f in FORMATS)}, got {fmt!r}."
        )
    if fmt not in FORMATS:
        raise unknown_name("box format", fmt, FORMATS)
    return fmt


def check_boxes(boxes: BoxesLike, name: str = "boxes") -> Tensor:
    """Check corner boxes ``(x1, y1, x2, y2)`` and return them as a floating tensor.

    Accepts any leading shape: a single box ``(4,)``, a list of boxes ``(N, 4)``
    (``N`` may be 0) or a grid such as YOLO's ``(19, 19, 5, 4)``. Floating tensors and
    arrays keep their dtype (a floating tensor comes back as the same object), integer
    ones become the default float dtype, and lists or tuples of Python numbers float64.

    Args:
        boxes: Boxes in ``xyxy`` format, shape ``(..., 4)``.
        name: What to call them in error messages, e.g. ``"box1"``.

    Returns:
        ``boxes`` as a floating tensor of the same shape.

    Raises:
        CnnkitError: If ``boxes`` is not numeric, its last axis is not 4, a coordinate
            is NaN or infinite, or a box has ``x2 < x1`` or ``y2 < y1``.
    """
    t = _as_float_tensor(boxes, name)
    _check_last_axis(t, name)
    if t.numel() == 0:
        return t
    if not bool(torch.isfinite(t).all()):
        raise CnnkitError(
            f"{name} has a NaN or infinite coordinate; give finite (x1, y1, x2, y2) corners."
        )
    flat = t.detach().reshape(-1, 4)  # (..., 4) -> (N, 4)
    bad = (flat[:, 2] < flat[:, 0]) | (flat[:, 3] < flat[:, 1])  # (N,)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        where = f" (box {i}: {[round(v, 6) for v in flat[i].tolist()]})" if t.ndim > 1 else ""
        raise CnnkitError(
            f"{name} has a box with x2 < x1 or y2 < y1{where}; boxes must be corners "
            f"(x1, y1, x2, y2) with x1 <= x2 and y1 <= y2 (use convert() for other formats)."
        )
    return t


def convert(boxes: BoxesLike, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert boxes between ``xyxy``, ``xywh`` and ``cxcywh`` (torchvision's names).

    ``xyxy`` is ``(x1, y1, x2, y2)``; ``xywh`` is ``(x1, y1, w, h)``; ``cxcywh`` is the
    course's ``(b_x, b_y, b_w, b_h)``: the centre and the size. For example the box
    with corners ``(1, 2, 4, 6)`` is ``(1, 2, 3, 4)`` in ``xywh`` and
    ``(2.5, 4, 3, 4)`` in ``cxcywh``.

    Args:
        boxes: Boxes of shape ``(..., 4)`` in ``in_fmt`` (any leading shape).
        in_fmt: The format of ``boxes``: one of :data:`FORMATS`.
        out_fmt: The format to convert to: one of :data:`FORMATS`.

    Returns:
        The boxes in ``out_fmt``, a new floating tensor of the same shape.

    Raises:
        CnnkitError: If a format is unknown (with a close-match suggestion) or the last
            axis of ``boxes`` is not 4.
    """
    _check_format(in_fmt, "in_fmt")
    _check_format(out_fmt, "out_fmt")
    t = _as_float_tensor(boxes, "boxes")
    _check_last_axis(t, "boxes")
    return box_convert(t, in_fmt=in_fmt, out_fmt=out_fmt)


def iou(box1: BoxesLike, box2: BoxesLike) -> float | Tensor:
    """Intersection over union of two boxes, or of every pair from two sets of boxes.

    For two single boxes this is the course's ``iou(box1, box2)``: with
    ``(xi1, yi1, xi2, yi2)`` the corners of the intersection,
    ``inter_area = max(0, xi2 - xi1) * max(0, yi2 - yi1)``,
    ``union_area = box1_area + box2_area - inter_area`` and
    ``iou = inter_area / union_area``. For example ``iou((2, 1, 4, 3), (1, 2, 3, 4))``
    is ``1 / 7``. Boxes that only touch give exactly 0, identical boxes 1; a zero
    union (two zero-area boxes) gives 0, never NaN.

    For two sets of boxes it is the ``(N, M)`` matrix of every pair
    (:func:`torchvision.ops.box_iou`), with the same zero-union rule.

    Args:
        box1: One box ``(x1, y1, x2, y2)`` of shape ``(4,)``, or ``N`` boxes ``(N, 4)``.
        box2: One box of shape ``(4,)``, or ``M`` boxes ``(M, 4)`` (the same kind as
            ``box1``).

    Returns:
        A Python ``float`` for two single boxes; otherwise a tensor of shape
        ``(N, M)`` whose entry ``[i, j]`` is the IoU of ``box1[i]`` and ``box2[j]``.

    Raises:
        CnnkitError: If a box is not ``(4,)`` or ``(N, 4)``, one argument is a single box
            and the other a set, a coordinate is not finite, or a box has ``x2 < x1`` or
            ``y2 < y1``.
    """
    b1 = check_boxes(box1, "box1")
    b2 = check_boxes(box2, "box2")
    for b, name in ((b1, "box1"), (b2, "box2")):
        if b.ndim > 2:
            raise CnnkitError(
                f"{name} must be one box (4,) or a list of boxes (N, 4), got shape "
                f"{tuple(b.shape)}; flatten it with {name}.reshape(-1, 4)."
            )
    if b1.ndim != b2.ndim:
        single = "box1" if b1.ndim == 1 else "box2"
        raise CnnkitError(
            f"{single} is a single box but the other argument is a list of boxes; pass both "
            f"as (4,) for one IoU, or make {single} a list with {single}[None] for the matrix."
        )
    if b1.ndim == 1:
        x1, y1, x2, y2 = b1.tolist()
        x1_, y1_, x2_, y2_ = b2.tolist()
        xi1, yi1 = max(x1, x1_), max(y1, y1_)
        xi2, yi2 = min(x2, x2_), min(y2, y2_)
        inter_area = max(0.0, xi2 - xi1) * max(0.0, yi2 - yi1)
        box1_area = (x2 - x1) * (y2 - y1)
        box2_area = (x2_ - x1_) * (y2_ - y1_)
        union_area = box1_area + box2_area - inter_area
        return inter_area / union_area if union_area > 0 else 0.0
    out = box_iou(b1, b2)  # (N, M)
    # validated finite boxes give NaN only as 0 / 0: both boxes of zero area
    return torch.nan_to_num(out, nan=0.0)
