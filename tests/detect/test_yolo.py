"""YOLO's grid: anchors by k-means on 1 - IoU, target encoding, decoding, the loss."""

from __future__ import annotations

import math

import pytest
import torch

from cnnkit.detect.yolo import YOLO, YoloLoss, decode, encode_targets, kmeans_anchors, shape_iou
from cnnkit.errors import CnnkitError


def test_shape_iou_is_the_iou_of_boxes_sharing_a_centre():
    wh1 = torch.tensor([[2.0, 4.0], [1.0, 1.0]])
    wh2 = torch.tensor([[4.0, 2.0]])
    # 2x4 and 4x2 at one centre: overlap 2x2 = 4, union 8 + 8 - 4 = 12
    assert torch.allclose(shape_iou(wh1, wh2), torch.tensor([[4 / 12], [1 / 8]]))
    assert torch.allclose(shape_iou(wh2, wh2), torch.ones(1, 1))


def test_kmeans_finds_three_shape_clusters_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.05, 0.05], [0.3, 0.1], [0.2, 0.6]])
    wh = torch.cat([c * (1 + 0.05 * torch.randn(40, 2, generator=g)) for c in centres])
    a = kmeans_anchors(wh, 3, seed=1)
    assert a.shape == (3, 2)
    # sorted by area; each near a true centre (IoU of shapes > 0.85)
    assert bool((a[:, 0] * a[:, 1]).diff().gt(0).all())
    order = torch.argsort(centres[:, 0] * centres[:, 1])
    assert bool(torch.diagonal(shape_iou(a, centres[order])).gt(0.85).all())
    assert torch.equal(a, kmeans_anchors(wh, 3, seed=1))
    # the distance is 1 - IoU: every box is assigned to the anchor of highest IoU, and
    # each anchor is the median of its boxes
    assign = shape_iou(wh, a.double()).argmax(1)
    for j in range(3):
        assert torch.allclose(wh[assign == j].median(0).values.float(), a[j], atol=1e-6)


@pytest.mark.parametrize(
    "wh, k, words",
    [(torch.ones(2, 2), 3, "2 boxes cannot make 3"), (torch.zeros(4, 2), 2, "positive")],
)
def test_kmeans_mistakes(wh, k, words):
    with pytest.raises(CnnkitError, match=words):
        kmeans_anchors(wh, k)


def test_the_midpoint_picks_the_cell_and_the_best_shape_picks_the_anchor():
    anchors = torch.tensor([[0.1, 0.1], [0.2, 0.5], [0.5, 0.2]])
    # a 64x128 (h x w) image, a box 60 px wide, 24 px tall centred at (x=70, y=20)
    boxes = torch.tensor([[40.0, 8.0, 100.0, 32.0]])
    y = encode_targets(boxes, torch.tensor([2]), 4, anchors, 3, (64, 128))
    assert y.shape == (4, 4, 3, 8)
    i, j = int(20 / 64 * 4), int(70 / 128 * 4)  # row 1, column 2
    w, h = 60 / 128, 24 / 64
    a = int(shape_iou(torch.tensor([[w, h]]), anchors).argmax())
    assert a == 2  # wide anchor
    slot = y[i, j, a]
    want = [70 / 128 * 4 - j, 20 / 64 * 4 - i, math.log(w / 0.5), math.log(h / 0.2), 1, 0, 0, 1]
    assert torch.allclose(slot, torch.tensor(want), atol=1e-6)
    assert int((y[..., 4] > 0).sum()) == 1  # every other slot is background


def test_decode_inverts_encode():
    anchors = torch.tensor([[0.1, 0.1], [0.3, 0.3]])
    boxes = torch.tensor([[10.0, 20.0, 30.0, 36.0], [50.0, 5.0, 60.0, 60.0]])
    y = encode_targets(boxes, torch.tensor([0, 1]), 8, anchors, 2, (64, 64))
    raw = y.clone()
    obj = y[..., 4] > 0
    raw[..., 0:2] = torch.logit(y[..., 0:2].clamp(1e-6, 1 - 1e-6))  # sigmoid^-1
    raw[..., 4] = torch.where(obj, 20.0, -20.0)
    xy, wh, conf, probs = decode(raw[None], anchors)
    got = torch.cat([xy[0][obj] - wh[0][obj] / 2, xy[0][obj] + wh[0][obj] / 2], 1) * 64
    # slots come out in grid order: row-major cells
    assert torch.allclose(got[got[:, 1].argsort()], boxes[boxes[:, 1].argsort()], atol=1e-3)
    assert bool((conf[0][obj] > 0.99).all()) and bool((conf[0][~obj] < 0.01).all())
    assert torch.allclose(probs.sum(-1), torch.ones(1, 8, 8, 2))


def test_loss_by_hand_on_one_object():
    anchors = torch.tensor([[0.25, 0.25]])
    y = encode_targets(
        torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.tensor([1]), 2, anchors, 2, (16, 16)
    )
    y = y[None]  # a batch of one image
    out = torch.zeros(1, 2, 2, 1, 7)
    loss = YoloLoss(lambda_coord=5.0, lambda_noobj=0.5)(out, y)
    # object slot (0, 0): centre (4, 4) of 16 px on a 2x2 grid -> xy target (0.5, 0.5) =
    # sigmoid(0), no xy loss; wh target log(0.5 / 0.25) twice; objectness -log
    # sigmoid(0) = log 2; class CE over 2 equal logits = log 2; 3 empty slots: 0.5 log 2
    assert torch.allclose(y[0, 0, 0, 0, :4], torch.tensor([0.5, 0.5, math.log(2), math.log(2)]))
    tw = math.log(2)
    want = 5 * (2 * tw**2) + math.log(2) + math.log(2) + 3 * 0.5 * math.log(2)
    assert abs(float(loss) - want) < 1e-5
    # a perfect prediction leaves only the (vanishing) logistic terms
    good = y.clone()
    good[..., 0:2] = torch.logit(y[..., 0:2].clamp(1e-6, 1 - 1e-6))
    good[..., 4] = torch.where(y[..., 4] > 0, 30.0, -30.0)
    good[..., 5:] = y[..., 5:] * 30
    assert float(YoloLoss()(good, y)) < 1e-4


def test_yolo_output_volume_and_gradients():
    anchors = torch.tensor([[0.1, 0.1], [0.3, 0.2], [0.5, 0.5]])
    net = YOLO(num_classes=4, anchors=anchors)
    x = torch.randn(2, 3, 64, 64)
    out = net(x)
    assert out.shape == (2, 8, 8, 3, 9)  # S = 64 / 8, B = 3, 5 + C = 9
    y = torch.stack(
        [
            encode_targets(
                torch.tensor([[8.0, 8, 30, 40]]), torch.tensor([3]), 8, anchors, 4, (64, 64)
            )
        ]
        * 2
    )
    YoloLoss()(out, y).backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in net.parameters())
