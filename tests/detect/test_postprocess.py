"""YOLO post-processing against an independent NumPy version and torchvision.

The NumPy reference below is written from the course's description, not from the
torch code: scores ``p_c * c_i``, argmax, mask; greedy NMS per class in score order,
suppressing IoU > threshold, capped at ``max_boxes`` over all classes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms

from cnnkit.detect.postprocess import (
    filter_boxes,
    non_max_suppression,
    scale_boxes,
    yolo_boxes_to_corners,
    yolo_eval,
)
from cnnkit.errors import CnnkitError

GRID = (19, 19, 5)  # 19x19 cells, 5 anchor boxes
N_CLASSES = 80
IMAGE = (720, 1280)  # (height, width)

# ---- the NumPy reference -----------------------------------------------------------------


def np_filter(conf, boxes, probs, threshold):
    box_scores = conf * probs  # (19, 19, 5, 80)
    box_classes = np.argmax(box_scores, axis=-1)  # (19, 19, 5)
    box_class_scores = np.max(box_scores, axis=-1)  # (19, 19, 5)
    mask = box_class_scores >= threshold
    return box_class_scores[mask], boxes[mask], box_classes[mask]


def np_iou_one_to_many(box, others):
    xi1 = np.maximum(box[0], others[:, 0])
    yi1 = np.maximum(box[1], others[:, 1])
    xi2 = np.minimum(box[2], others[:, 2])
    yi2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(xi2 - xi1, 0, None) * np.clip(yi2 - yi1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / (area + areas - inter)


def np_nms_indices(scores, boxes, classes, max_boxes, iou_threshold):
    boxes = boxes.astype(np.float64)
    keep: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        same = [j for j in keep if classes[j] == classes[i]]
        if same and (np_iou_one_to_many(boxes[i], boxes[same]) > iou_threshold).any():
            continue
        keep.append(int(i))
    return np.array(keep[:max_boxes], dtype=np.int64)


def np_nms(scores, boxes, classes, max_boxes, iou_threshold):
    keep = np_nms_indices(scores, boxes, classes, max_boxes, iou_threshold)
    return scores[keep], boxes[keep], classes[keep]


def np_yolo_eval(box_xy, box_wh, conf, probs, image_shape, max_boxes, score_thr, iou_thr):
    corners = np.concatenate([box_xy - box_wh / 2, box_xy + box_wh / 2], axis=-1)
    scores, boxes, classes = np_filter(conf, corners, probs, score_thr)
    height, width = image_shape
    boxes = boxes * np.array([width, height, width, height], dtype=boxes.dtype)
    return np_nms(scores, boxes, classes, max_boxes, iou_thr)


def course_outputs(seed: int, dtype=np.float32, n_objects: int = 8):
    """Random YOLO outputs of the course's shapes: 19x19x5 anchors, 80 classes.

    A scene of ``n_objects`` objects (some sharing a class): every anchor guesses one of
    them, with a jittered centre and size (in [0, 1] units of the image) and logits
    favouring its class, so that overlapping boxes of the same class need suppressing.
    """
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.1, 0.9, size=(n_objects, 2))
    sizes = rng.uniform(0.05, 0.5, size=(n_objects, 2))
    labels = rng.integers(0, 6, size=n_objects)
    obj = rng.integers(0, n_objects, size=GRID)  # (19, 19, 5): the object each anchor sees
    box_xy = centres[obj] + rng.normal(0, 0.03, size=(*GRID, 2))
    box_wh = sizes[obj] * rng.uniform(0.7, 1.3, size=(*GRID, 2))
    conf = rng.uniform(0.2, 1, size=(*GRID, 1))
    logits = rng.normal(0, 2, size=(*GRID, N_CLASSES))
    logits[np.eye(N_CLASSES, dtype=bool)[labels[obj]]] += 4  # (19, 19, 5, 80) mask
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return tuple(a.astype(dtype) for a in (box_xy, box_wh, conf, probs))


def assert_same(torch_out, np_out, *, exact=True):
    (s, b, c), (s_np, b_np, c_np) = torch_out, np_out
    assert s.shape == s_np.shape and b.shape == b_np.shape and c.shape == c_np.shape
    assert c.dtype == torch.int64
    np.testing.assert_array_equal(c.numpy(), c_np)
    if exact:
        np.testing.assert_array_equal(s.numpy(), s_np)
        np.testing.assert_array_equal(b.numpy(), b_np)
    else:
        np.testing.assert_allclose(s.numpy(), s_np, rtol=1e-6)
        np.testing.assert_allclose(b.numpy(), b_np, rtol=1e-6, atol=1e-4)


# ---- filter_boxes ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.3, 0.6])
def test_filter_boxes_matches_numpy(seed, threshold):
    box_xy, box_wh, conf, probs = course_outputs(seed)
    boxes = np.concatenate([box_xy, box_wh], axis=-1)  # any 4 numbers per box
    out = filter_boxes(
        torch.from_numpy(conf), torch.from_numpy(boxes), torch.from_numpy(probs), threshold
    )
    ref = np_filter(conf, boxes, probs, threshold)
    assert 0 < len(ref[0]) < np.prod(GRID)  # some boxes pass, not all
    assert_same(out, ref)
    assert bool((out[0] >= threshold).all())


def test_filter_boxes_course_values():
    # three boxes of a 1x3 grid with 3 classes, by hand
    conf = torch.tensor([[[0.9], [0.5], [1.0]]])  # (1, 3, 1)
    probs = torch.tensor([[[0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.7, 0.1, 0.2]]])  # (1, 3, 3)
    boxes = torch.arange(12.0).reshape(1, 3, 4)  # (12,) -> (1, 3, 4)
    scores, kept, classes = filter_boxes(conf, boxes, probs, threshold=0.6)
    # scores: 0.9*0.8 = 0.72 (class 1), 0.5*0.6 = 0.3 (dropped), 1.0*0.7 = 0.7 (class 0)
    torch.testing.assert_close(scores, torch.tensor([0.72, 0.7]))
    assert kept.tolist() == [[0.0, 1.0, 2.0, 3.0], [8.0, 9.0, 10.0, 11.0]]
    assert classes.tolist() == [1, 0]


def test_filter_boxes_batch_axis_and_ties():
    conf = torch.ones(2, 3, 1)
    probs = torch.tensor([0.5, 0.5, 0.0]).expand(2, 3, 3)  # a tie: the first class wins
    scores, boxes, classes = filter_boxes(conf, torch.zeros(2, 3, 4), probs, threshold=0.5)
    assert scores.tolist() == [0.5] * 6 and classes.tolist() == [0] * 6
    assert boxes.shape == (6, 4)


def test_filter_boxes_nothing_passes():
    box_xy, box_wh, conf, probs = (torch.from_numpy(a) for a in course_outputs(3))
    scores, boxes, classes = filter_boxes(conf, torch.cat([box_xy, box_wh], -1), probs, 1.01)
    assert scores.shape == (0,) and boxes.shape == (0, 4) and classes.shape == (0,)
    assert scores.dtype == torch.float32 and boxes.dtype == torch.float32
    assert classes.dtype == torch.int64


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        (((19, 19, 5, 2), (19, 19, 5, 4), (19, 19, 5, 80)), r"box_confidence must have shape"),
        (((19, 19, 5, 1), (19, 19, 5, 2), (19, 19, 5, 80)), r"boxes must have shape \(\.\.\., 4\)"),
        (((19, 19, 5, 1), (19, 19, 5, 4), (19, 19, 5, 0)), r"C >= 1 classes"),
        (((19, 19, 5, 1), (19, 19, 4, 4), (19, 19, 5, 80)), r"boxes has leading shape"),
        (((19, 19, 5, 1), (19, 19, 5, 4), (19, 5, 80)), r"box_class_probs has leading shape"),
    ],
)
def test_filter_boxes_shape_errors(shapes, message):
    conf, boxes, probs = (torch.zeros(s) for s in shapes)
    with pytest.raises(CnnkitError, match=message):
        filter_boxes(conf, boxes, probs)


def test_filter_boxes_threshold_error():
    with pytest.raises(CnnkitError, match="threshold must be a finite number"):
        filter_boxes(torch.ones(3, 1), torch.zeros(3, 4), torch.ones(3, 2), threshold="0.6")


# ---- non_max_suppression -----------------------------------------------------------------


def random_detections(seed: int, n: int = 400, n_classes: int = 5, dtype=np.float64):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-50, 600, size=(n, 2))
    wh = rng.uniform(5, 150, size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(dtype)  # (n, 2) + (n, 2) -> (n, 4)
    scores = rng.uniform(0, 1, size=n).astype(dtype)
    classes = rng.integers(0, n_classes, size=n)
    assert np.unique(scores).size == n  # distinct scores: no ties in the comparison
    return scores, boxes, classes


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("max_boxes", [10, 1000])
def test_nms_matches_numpy(seed, iou_threshold, max_boxes):
    scores, boxes, classes = random_detections(seed)
    out = non_max_suppression(
        torch.from_numpy(scores),
        torch.from_numpy(boxes),
        torch.from_numpy(classes),
        max_boxes=max_boxes,
        iou_threshold=iou_threshold,
    )
    ref = np_nms(scores, boxes, classes, max_boxes, iou_threshold)
    if max_boxes == 10:
        assert len(ref[0]) == 10
    else:  # all survivors: NMS suppressed some
        assert 10 < len(ref[0]) < len(scores)
    assert_same(out, ref)
    assert bool((out[0][:-1] > out[0][1:]).all())  # highest score first


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("iou_threshold", [0.0, 0.5, 1.0])
def test_nms_matches_torchvision_batched_nms(seed, iou_threshold):
    scores, boxes, classes = (torch.from_numpy(a) for a in random_detections(seed))
    boxes = boxes + 50  # batched_nms's offset trick needs coordinates >= 0
    assert bool((boxes >= 0).all())
    keep = batched_nms(boxes, scores, classes, iou_threshold)
    for max_boxes in (10, len(scores)):
        s, b, c = non_max_suppression(scores, boxes, classes, max_boxes, iou_threshold)
        k = keep[:max_boxes]
        assert torch.equal(s, scores[k]) and torch.equal(b, boxes[k]) and torch.equal(c, classes[k])
    if iou_threshold == 1.0:  # IoU is never > 1: nothing suppressed
        assert len(keep) == len(scores)


def test_nms_negative_coordinates_keep_classes_apart():
    # two identical boxes reaching past the image's left and top edges, different classes
    boxes = torch.tensor([[-30.0, -30.0, 5.0, 5.0], [-30.0, -30.0, 5.0, 5.0]])
    scores, classes = torch.tensor([0.9, 0.8]), torch.tensor([0, 1])
    s, b, c = non_max_suppression(scores, boxes, classes, iou_threshold=0.3)
    assert s.tolist() == pytest.approx([0.9, 0.8]) and c.tolist() == [0, 1]
    assert torch.equal(b, boxes)
    # (torchvision 0.29's batched_nms keeps only one here: its offset trick assumes >= 0)
    # the same class: the second is suppressed (IoU 1)
    s, b, c = non_max_suppression(scores, boxes, torch.tensor([3, 3]), iou_threshold=0.3)
    assert s.tolist() == pytest.approx([0.9]) and c.tolist() == [3]
    assert b.tolist() == [[-30.0, -30.0, 5.0, 5.0]]


def test_nms_by_hand():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 2.0, 1.0],  # 0
            [0.0, 0.0, 1.0, 1.0],  # 1: IoU with 0 is exactly 0.5
            [0.0, 0.0, 2.0, 1.0],  # 2: same as 0, another class
            [5.0, 5.0, 6.0, 6.0],  # 3
            [5.0, 5.0, 6.0, 6.1],  # 4: IoU with 3 is 1/1.1
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.95])
    classes = torch.tensor([2, 2, 7, 2, 2])
    s, b, c = non_max_suppression(scores, boxes, classes, iou_threshold=0.5)
    # IoU equal to the threshold survives; box 3 loses to box 4; box 2 is another class
    torch.testing.assert_close(s, torch.tensor([0.95, 0.9, 0.8, 0.7]))
    torch.testing.assert_close(b, boxes[[4, 0, 1, 2]])
    assert c.tolist() == [2, 2, 2, 7]
    s, b, c = non_max_suppression(scores, boxes, classes, iou_threshold=0.49)
    torch.testing.assert_close(s, torch.tensor([0.95, 0.9, 0.7]))
    # the cap keeps the highest scores over all classes
    s, b, c = non_max_suppression(scores, boxes, classes, max_boxes=2, iou_threshold=0.5)
    torch.testing.assert_close(s, torch.tensor([0.95, 0.9]))
    assert c.tolist() == [2, 2]
    # class-agnostic, as the course's Keras code: box 2 now loses to box 0
    s, b, c = non_max_suppression(scores, boxes, torch.zeros(5, dtype=torch.long))
    torch.testing.assert_close(s, torch.tensor([0.95, 0.9, 0.8]))


def test_nms_ties_in_input_order():
    boxes = torch.tensor([[float(10 * i), 0.0, 10.0 * i + 5, 5.0] for i in range(6)])
    scores = torch.tensor([0.5, 0.7, 0.5, 0.7, 0.5, 0.7])
    classes = torch.tensor([0, 1, 2, 0, 1, 2])
    for _ in range(3):
        s, b, c = non_max_suppression(scores, boxes, classes, max_boxes=4)
        assert s.tolist() == pytest.approx([0.7, 0.7, 0.7, 0.5])
        torch.testing.assert_close(b, boxes[[1, 3, 5, 0]])
        assert c.tolist() == [1, 0, 2, 0]
    # many ties (an unstable sort reorders these): 400 disjoint boxes, two scores
    xy = torch.stack(torch.meshgrid(torch.arange(20.0), torch.arange(20.0), indexing="xy"), -1)
    xy = 10 * xy.reshape(-1, 2)  # (20, 20, 2) -> (400, 2)
    boxes = torch.cat([xy, xy + 5], dim=1)  # (400, 2) + (400, 2) -> (400, 4)
    scores = torch.tensor([0.5, 0.7]).repeat(200)  # (400,)
    classes = torch.arange(400) % 3
    s, b, c = non_max_suppression(scores, boxes, classes, max_boxes=400)
    order = torch.cat([torch.arange(1, 400, 2), torch.arange(0, 400, 2)])
    torch.testing.assert_close(b, boxes[order], rtol=0, atol=0)
    assert torch.equal(c, classes[order])


def test_nms_empty():
    s, b, c = non_max_suppression(
        torch.zeros(0), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    )
    assert s.shape == (0,) and b.shape == (0, 4) and c.shape == (0,)
    assert c.dtype == torch.int64 and s.dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scores": torch.zeros(3, 1)}, r"scores must have shape \(3,\)"),
        ({"classes": torch.zeros(2, dtype=torch.long)}, r"classes must have shape \(3,\)"),
        ({"boxes": torch.zeros(3, 5)}, r"boxes must have shape \(\.\.\., 4\)"),
        ({"boxes": torch.zeros(1, 3, 4)}, r"boxes must have shape \(K, 4\)"),
        ({"boxes": torch.tensor([[0.0, 0, 1, 1]] * 2 + [[2.0, 0, 1, 1]])}, "x2 < x1"),
        ({"classes": torch.zeros(3)}, r"classes must hold integer class indices.*\.long\(\)"),
        ({"max_boxes": 0}, "max_boxes must be a positive integer, got 0"),
        ({"max_boxes": 2.5}, "max_boxes must be a positive integer"),
        ({"iou_threshold": 1.5}, "iou_threshold must be between 0.0 and 1.0, got 1.5"),
        ({"iou_threshold": float("nan")}, "iou_threshold must be a finite number"),
    ],
)
def test_nms_errors(kwargs, message):
    args = {
        "scores": torch.tensor([0.9, 0.8, 0.7]),
        "boxes": torch.tensor([[0.0, 0, 1, 1]] * 3),
        "classes": torch.zeros(3, dtype=torch.long),
        **kwargs,
    }
    with pytest.raises(CnnkitError, match=message):
        non_max_suppression(**args)


# ---- corners, scaling, yolo_eval ---------------------------------------------------------


def test_yolo_boxes_to_corners_is_xyxy():
    box_xy = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
    box_wh = torch.tensor([[0.2, 0.4], [0.5, 0.1]])
    corners = yolo_boxes_to_corners(box_xy, box_wh)
    torch.testing.assert_close(corners, torch.tensor([[0.4, 0.3, 0.6, 0.7], [0.0, 0.7, 0.5, 0.8]]))
    box_xy, box_wh, _, _ = (torch.from_numpy(a) for a in course_outputs(0))
    corners = yolo_boxes_to_corners(box_xy, box_wh)
    assert corners.shape == (*GRID, 4)
    torch.testing.assert_close((corners[..., :2] + corners[..., 2:]) / 2, box_xy)
    torch.testing.assert_close(corners[..., 2:] - corners[..., :2], box_wh)
    with pytest.raises(CnnkitError, match=r"box_wh must have shape \(\.\.\., 2\)"):
        yolo_boxes_to_corners(box_xy, torch.zeros(*GRID, 4))
    with pytest.raises(CnnkitError, match="box_wh has leading shape"):
        yolo_boxes_to_corners(box_xy, torch.zeros(19, 19, 4, 2))


def test_scale_boxes():
    boxes = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 1.0, 1.0]])
    out = scale_boxes(boxes, (720, 1280))
    torch.testing.assert_close(
        out, torch.tensor([[128.0, 144.0, 384.0, 288.0], [0.0, 0.0, 1280.0, 720.0]])
    )
    assert scale_boxes(torch.ones(*GRID, 4, dtype=torch.float64), IMAGE).dtype == torch.float64
    for bad in [(720,), (720, 0), (720, -5), "big", (720, float("nan"))]:
        with pytest.raises(CnnkitError, match=r"image_shape must be \(height, width\)"):
            scale_boxes(boxes, bad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(("max_boxes", "iou_threshold"), [(10, 0.5), (10_000, 0.5), (30, 0.3)])
def test_yolo_eval_matches_numpy(dtype, seed, max_boxes, iou_threshold):
    outputs = course_outputs(seed, dtype=dtype)
    scores, boxes, classes = yolo_eval(
        tuple(torch.from_numpy(a) for a in outputs),
        image_shape=IMAGE,
        max_boxes=max_boxes,
        score_threshold=0.6,
        iou_threshold=iou_threshold,
    )
    ref = np_yolo_eval(*outputs, IMAGE, max_boxes, 0.6, iou_threshold)
    filtered = np_filter(outputs[2], outputs[0], outputs[3], 0.6)[0]
    assert np.unique(filtered).size == filtered.size  # distinct scores
    assert 10 <= len(ref[0]) < len(filtered)  # NMS suppressed some, kept enough
    assert_same((scores, boxes, classes), ref, exact=dtype == np.float64)
    assert boxes.dtype == torch.from_numpy(outputs[0]).dtype
    assert bool((boxes[:, 2] <= 1280 * 1.3).all())  # in pixels, not relative units
    assert bool((boxes[:, 2] > 2).any())


def test_yolo_eval_defaults_and_batch_axis():
    outputs = tuple(torch.from_numpy(a)[None] for a in course_outputs(5))  # (1, 19, 19, 5, .)
    scores, boxes, classes = yolo_eval(outputs)
    ref = np_yolo_eval(*(a[0].numpy() for a in outputs), (720, 1280), 10, 0.6, 0.5)
    assert scores.shape == (10,) and boxes.shape == (10, 4) and classes.shape == (10,)
    assert_same((scores, boxes, classes), ref, exact=False)


def test_yolo_eval_nothing_passes():
    outputs = tuple(torch.from_numpy(a) for a in course_outputs(0))
    scores, boxes, classes = yolo_eval(outputs, score_threshold=1.01)
    assert scores.shape == (0,) and boxes.shape == (0, 4) and classes.shape == (0,)
    assert classes.dtype == torch.int64


def test_yolo_eval_errors():
    outputs = tuple(torch.from_numpy(a) for a in course_outputs(0))
    with pytest.raises(CnnkitError, match=r"outputs must be the four tensors.*got 3 items"):
        yolo_eval(outputs[:3])
    with pytest.raises(CnnkitError, match=r"outputs must be the four tensors.*got a Tensor"):
        yolo_eval(torch.zeros(4, 19, 19, 5, 2))
    swapped = (outputs[2], *outputs[1:2], outputs[0], outputs[3])  # box_confidence first
    with pytest.raises(CnnkitError, match=r"box_xy must have shape \(\.\.\., 2\)"):
        yolo_eval(swapped)
    with pytest.raises(CnnkitError, match="image_shape"):
        yolo_eval(outputs, image_shape=(720, 1280, 3))
