"""mAP through pycocotools: known cases by hand, and parity with pycocotools itself."""

from __future__ import annotations

import json

import pytest
import torch

from cnnkit.detect.metrics import coco_ground_truth, coco_predictions, evaluate_coco, image_ids
from cnnkit.errors import CnnkitError


def _gt():
    boxes = [torch.tensor([[10.0, 10, 30, 30]]), torch.tensor([[5.0, 5, 25, 45], [40, 40, 60, 60]])]
    labels = [torch.tensor([0]), torch.tensor([1, 0])]
    return coco_ground_truth(boxes, labels, [7, 8], ["circle", "square"], (64, 64))


def test_image_ids_are_integer_stems_when_they_can_be():
    assert image_ids(["000123", "7"]) == [123, 7]
    assert image_ids(["a", "b"]) == [0, 1]
    assert image_ids(["1", "01"]) == [0, 1]  # not distinct as integers


def test_perfect_detections_score_one_and_a_confident_false_positive_halves_ap():
    gt = _gt()
    perfect = [
        (torch.tensor([0.9]), torch.tensor([[10.0, 10, 30, 30]]), torch.tensor([0])),
        (
            torch.tensor([0.8, 0.7]),
            torch.tensor([[5.0, 5, 25, 45], [40, 40, 60, 60]]),
            torch.tensor([1, 0]),
        ),
    ]
    s = evaluate_coco(gt, coco_predictions(perfect, [7, 8]))
    assert s.map50 == pytest.approx(1.0) and s.map == pytest.approx(1.0)
    assert s.per_class == {"circle": pytest.approx(1.0), "square": pytest.approx(1.0)}
    # a square detection far from any square, scored above the true one: at recall 1 the
    # precision is 1/2, so the interpolated AP of "square" is 0.5 and the mean 0.75
    fp = (torch.tensor([0.95]), torch.tensor([[0.0, 40, 20, 60]]), torch.tensor([1]))
    dets = [
        perfect[0],
        (
            torch.cat([perfect[1][0], fp[0]]),
            *tuple(torch.cat([a, b]) for a, b in zip(perfect[1][1:], fp[1:])),
        ),
    ]
    s = evaluate_coco(gt, coco_predictions(dets, [7, 8]))
    assert s.per_class["square"] == pytest.approx(0.5, abs=1e-9)
    assert s.map50 == pytest.approx(0.75, abs=1e-9)
    assert s.precision["square"][0] == pytest.approx(0.5) and len(s.recall) == 101


def test_scores_equal_pycocotools_own_on_the_same_files(tmp_path, cocoeval_stats):
    g = torch.Generator().manual_seed(0)
    gt = _gt()
    dets = []
    for _ in range(2):
        xy = torch.rand(6, 2, generator=g) * 40
        wh = 5 + torch.rand(6, 2, generator=g) * 20
        dets.append(
            (
                torch.rand(6, generator=g),
                torch.cat([xy, xy + wh], 1),
                torch.randint(0, 2, (6,), generator=g),
            )
        )
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "predictions.json").write_text(json.dumps(coco_predictions(dets, [7, 8])))
    ours = evaluate_coco(tmp_path / "gt.json", tmp_path / "predictions.json")
    stats = cocoeval_stats(tmp_path / "gt.json", tmp_path / "predictions.json")
    assert ours.stats == pytest.approx(stats, abs=1e-6)
    assert abs(ours.map50 - stats[1]) < 1e-6 and abs(ours.map - stats[0]) < 1e-6


def test_no_detections_score_zero_and_no_ground_truth_is_refused():
    s = evaluate_coco(_gt(), [])
    assert s.map50 == 0 and s.map == 0
    empty = coco_ground_truth(
        [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)], [1], ["a"], (8, 8)
    )
    with pytest.raises(CnnkitError, match="no boxes"):
        evaluate_coco(empty, [])
