"""Boxes and IoU: formats, the course's IoU examples, torchvision and NumPy agreement, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import box_iou

from cnnkit.detect.boxes import FORMATS, check_boxes, convert, iou
from cnnkit.errors import CnnkitError


def np_iou(box1: np.ndarray, box2: np.ndarray) -> float:
    """The course's iou(), written independently in NumPy."""
    xi1, yi1 = max(box1[0], box2[0]), max(box1[1], box2[1])
    xi2, yi2 = min(box1[2], box2[2]), min(box1[3], box2[3])
    inter = max(xi2 - xi1, 0.0) * max(yi2 - yi1, 0.0)
    union = (
        (box1[2] - box1[0]) * (box1[3] - box1[1])
        + (box2[2] - box2[0]) * (box2[3] - box2[1])
        - inter
    )
    return float(inter / union) if union > 0 else 0.0


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 100, size=(n, 2))
    wh = rng.uniform(0.5, 40, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)  # (n, 2) + (n, 2) -> (n, 4)


# ---- convert -----------------------------------------------------------------------------


def test_convert_known_values():
    xyxy = torch.tensor([[1.0, 2.0, 4.0, 6.0], [0.0, 0.0, 10.0, 20.0]])
    xywh = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 10.0, 20.0]])
    cxcywh = torch.tensor([[2.5, 4.0, 3.0, 4.0], [5.0, 10.0, 10.0, 20.0]])
    torch.testing.assert_close(convert(xyxy, "xyxy", "xywh"), xywh, rtol=0, atol=0)
    torch.testing.assert_close(convert(xyxy, "xyxy", "cxcywh"), cxcywh, rtol=0, atol=0)
    torch.testing.assert_close(convert(cxcywh, "cxcywh", "xyxy"), xyxy, rtol=0, atol=0)
    torch.testing.assert_close(convert(xywh, "xywh", "cxcywh"), cxcywh, rtol=0, atol=0)
    torch.testing.assert_close(convert(xyxy, "xyxy", "xyxy"), xyxy, rtol=0, atol=0)


def test_convert_accepts_lists_ints_and_leading_axes():
    out = convert([1, 2, 4, 6], "xyxy", "cxcywh")
    assert out.dtype == torch.float64  # Python numbers are doubles
    assert out.tolist() == [2.5, 4.0, 3.0, 4.0]
    grid = torch.rand(3, 5, 2, 4, dtype=torch.float64)
    out = convert(grid, "cxcywh", "xyxy")
    assert out.shape == (3, 5, 2, 4) and out.dtype == torch.float64
    torch.testing.assert_close(out[..., :2], grid[..., :2] - grid[..., 2:] / 2)
    torch.testing.assert_close(out[..., 2:], grid[..., :2] + grid[..., 2:] / 2)


@pytest.mark.parametrize("a", FORMATS)
@pytest.mark.parametrize("b", FORMATS)
def test_convert_round_trips(a, b):
    boxes = convert(torch.from_numpy(random_boxes(np.random.default_rng(0), 20)), "xyxy", a)
    back = convert(convert(boxes, a, b), b, a)
    torch.testing.assert_close(back, boxes, rtol=1e-12, atol=1e-12)


def test_convert_unknown_format_suggests():
    with pytest.raises(CnnkitError, match=r"unknown box format 'xyxyy': did you mean 'xyxy'"):
        convert(torch.zeros(1, 4), "xyxyy", "xywh")
    with pytest.raises(CnnkitError, match=r"unknown box format 'CXCYWH'.*'cxcywh'"):
        convert(torch.zeros(1, 4), "xyxy", "CXCYWH")
    with pytest.raises(CnnkitError, match=r"unknown box format 'corners': use one of 'xyxy'"):
        convert(torch.zeros(1, 4), "corners", "xyxy")
    with pytest.raises(CnnkitError, match="out_fmt must be a box format name"):
        convert(torch.zeros(1, 4), "xyxy", None)


def test_convert_bad_shape():
    with pytest.raises(CnnkitError, match=r"shape \(\.\.\., 4\).*got shape \(2, 5\)"):
        convert(torch.zeros(2, 5), "xyxy", "xywh")
    with pytest.raises(CnnkitError, match=r"got shape \(\)"):
        convert(torch.tensor(1.0), "xyxy", "xywh")


# ---- iou: the course's cases -----------------------------------------------------------


def test_iou_course_example():
    value = iou((2, 1, 4, 3), (1, 2, 3, 4))
    assert isinstance(value, float)
    assert value == 1 / 7  # inter 1, union 4 + 4 - 1 = 7
    assert iou(torch.tensor([2.0, 1, 4, 3]), torch.tensor([1.0, 2, 3, 4])) == pytest.approx(
        0.14285714, abs=1e-8
    )


@pytest.mark.parametrize(
    ("box1", "box2"),
    [
        ((1, 1, 2, 2), (2, 1, 3, 2)),  # touching along an edge
        ((1, 1, 2, 2), (2, 2, 3, 3)),  # touching at a corner (the course's vertex case)
        ((1, 1, 3, 3), (2, 3, 3, 4)),  # the course's edge case
        ((1, 2, 3, 4), (5, 6, 7, 8)),  # disjoint (the course's case)
        ((0, 0, 1, 1), (10, 0, 11, 1)),  # disjoint in x only
    ],
)
def test_iou_touching_and_disjoint_are_exactly_zero(box1, box2):
    assert iou(box1, box2) == 0.0
    assert iou(box2, box1) == 0.0
    matrix = iou(torch.tensor([box1], dtype=torch.float32), torch.tensor([box2]).float())
    assert matrix.tolist() == [[0.0]]


def test_iou_identical_contained_and_partial():
    assert iou((0.5, 1.5, 3.25, 7.0), (0.5, 1.5, 3.25, 7.0)) == 1.0
    assert iou((0, 0, 4, 4), (1, 1, 3, 3)) == 4 / 16  # contained: inter 4, union 16
    assert iou((0, 0, 2, 1), (0, 0, 1, 1)) == 0.5
    assert iou((0, 0, 2, 2), (1, 0, 3, 2)) == 2 / 6


def test_iou_zero_area_union_is_zero_not_nan():
    assert iou((1, 1, 1, 1), (1, 1, 1, 1)) == 0.0
    assert iou((1, 1, 1, 3), (1, 1, 1, 3)) == 0.0  # zero width, same line
    assert iou((1, 1, 1, 1), (0, 0, 2, 2)) == 0.0  # a point inside a box
    m = iou(torch.tensor([[1.0, 1, 1, 1], [0, 0, 2, 2]]), torch.tensor([[1.0, 1, 1, 1]]))
    assert m.tolist() == [[0.0], [0.0]]


# ---- iou: pairwise against torchvision and NumPy ----------------------------------------


def test_iou_matrix_against_numpy_loop():
    rng = np.random.default_rng(7)
    a, b = random_boxes(rng, 6), random_boxes(rng, 9)
    a[1] = b[4]  # one identical pair
    b[0] = [a[2, 2], a[2, 1], a[2, 2] + 5, a[2, 3]]  # one touching pair
    m = iou(torch.from_numpy(a), torch.from_numpy(b))
    assert m.shape == (6, 9) and m.dtype == torch.float64
    expected = np.array([[np_iou(a[i], b[j]) for j in range(9)] for i in range(6)])
    np.testing.assert_allclose(m.numpy(), expected, rtol=1e-12, atol=1e-15)
    assert m[1, 4].item() == pytest.approx(1.0, abs=1e-15)
    assert m[2, 0].item() == 0.0
    assert 0 < (expected > 0).sum() < expected.size  # some overlap, some not
    for i, j in [(0, 0), (1, 4), (2, 0), (5, 8)]:
        assert iou(a[i].tolist(), b[j].tolist()) == pytest.approx(expected[i, j], abs=1e-15)


def test_iou_matrix_empty():
    m = iou(torch.zeros(0, 4), torch.tensor([[0.0, 0, 1, 1]]))
    assert m.shape == (0, 1)
    assert iou(torch.tensor([[0.0, 0, 1, 1]]), torch.zeros(0, 4)).shape == (1, 0)


_coord = st.floats(min_value=-100, max_value=100, allow_nan=False, width=64)
_size = st.floats(min_value=0.01, max_value=50, allow_nan=False, width=64)
_boxes = st.lists(st.tuples(_coord, _coord, _size, _size), min_size=1, max_size=8)


@settings(max_examples=50, deadline=None)
@given(_boxes, _boxes)
def test_iou_matrix_matches_torchvision_and_single_boxes(xywh1, xywh2):
    b1 = convert(torch.tensor(xywh1, dtype=torch.float64), "xywh", "xyxy")
    b2 = convert(torch.tensor(xywh2, dtype=torch.float64), "xywh", "xyxy")
    m = iou(b1, b2)
    assert m.shape == (len(xywh1), len(xywh2))
    torch.testing.assert_close(m, box_iou(b1, b2), rtol=1e-12, atol=1e-12)
    assert bool(((m >= 0) & (m <= 1 + 1e-12)).all())
    torch.testing.assert_close(m, iou(b2, b1).T, rtol=1e-12, atol=1e-12)
    for i in range(len(xywh1)):
        for j in range(len(xywh2)):
            assert iou(b1[i], b2[j]) == pytest.approx(m[i, j].item(), rel=1e-9, abs=1e-12)


# ---- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("box1", "box2", "message"),
    [
        ((1, 2, 3), (0, 0, 1, 1), r"box1 must have shape \(\.\.\., 4\).*got shape \(3,\)"),
        (torch.zeros(2, 5), torch.zeros(3, 4), r"box1 .*got shape \(2, 5\)"),
        (torch.zeros(2, 4), torch.zeros(2, 3, 4), r"box2 must be one box \(4,\) or a list"),
        ((0, 0, 1, 1), torch.zeros(3, 4), r"box1 is a single box.*box1\[None\]"),
        ((3, 0, 1, 1), (0, 0, 1, 1), "box1 has a box with x2 < x1 or y2 < y1"),
        (torch.tensor([[0.0, 0, 1, 1], [0, 5, 1, 2]]), torch.zeros(1, 4), r"box 1: \[0.0, 5.0"),
        ((0, 0, 1, 1), (0, 0, float("nan"), 1), "box2 has a NaN or infinite coordinate"),
        ("abcd", (0, 0, 1, 1), "box1 must be a tensor"),
        (torch.ones(4, dtype=torch.bool), (0, 0, 1, 1), "box1 must hold real numbers"),
    ],
)
def test_iou_errors(box1, box2, message):
    with pytest.raises(CnnkitError, match=message):
        iou(box1, box2)


def test_check_boxes():
    grid = torch.rand(19, 19, 5, 4)
    grid[..., 2:] += grid[..., :2]
    assert check_boxes(grid) is grid
    out = check_boxes([[0, 0, 2, 3]])
    assert out.dtype == torch.float64 and out.tolist() == [[0.0, 0.0, 2.0, 3.0]]
    out = check_boxes(torch.tensor([[0, 0, 2, 3]]))
    assert out.dtype == torch.get_default_dtype() and out.tolist() == [[0.0, 0.0, 2.0, 3.0]]
    assert check_boxes(np.array([[0.0, 0, 2, 3]], dtype=np.float32)).dtype == torch.float32
    assert check_boxes(torch.zeros(0, 4)).shape == (0, 4)
    assert check_boxes((1, 1, 1, 1)).tolist() == [1.0, 1.0, 1.0, 1.0]  # zero area is valid
    with pytest.raises(CnnkitError, match=r"^gt_boxes has a box with x2 < x1"):
        check_boxes(torch.tensor([[0.0, 0, 1, 1], [0, 0, -1, 1]]), name="gt_boxes")
    with pytest.raises(CnnkitError, match=r"^anchors must have shape"):
        check_boxes(torch.zeros(5, 2), name="anchors")
    with pytest.raises(CnnkitError, match="infinite"):
        check_boxes(torch.tensor([0.0, 0, float("inf"), 1]))
    assert issubclass(CnnkitError, ValueError)
