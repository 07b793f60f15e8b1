"""Detection data: YOLO and COCO round trips, label validation, synthetic shapes, augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cnnkit.detect.data import (
    DetectionSample,
    DetectionSet,
    affine_detection,
    augment_detection,
    collate_detection,
    read_coco,
    read_yolo,
    synth_shapes,
    write_coco,
    write_yolo,
)
from cnnkit.errors import CnnkitError

__all__: list[str] = []

CLASSES = ["cat", "dog", "bird"]


def _set(ids=("00007", "img_b", "3"), n_H: int = 24, n_W: int = 32, seed: int = 0):
    """Three non-square RGB images with fractional boxes; the second has none."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (len(ids), 3, n_H, n_W), generator=g, dtype=torch.uint8)
    boxes = [
        torch.tensor([[1.25, 2.5, 10.75, 20.0], [15.0, 0.0, 32.0, 24.0]]),
        torch.zeros(0, 4),
        torch.tensor([[0.1, 0.2, 31.9, 23.8]]),
    ]
    labels = [torch.tensor([0, 2]), torch.zeros(0, dtype=torch.int64), torch.tensor([1])]
    return DetectionSet(images, boxes, labels, list(ids), CLASSES)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------ dataset


def test_dataset_items_and_collate():
    ds = _set()
    assert len(ds) == 3 and ds.size == (24, 32) and ds.n_objects == 3
    image, target = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, 24, 32)
    assert torch.allclose(image * 255, ds.images[0].float())
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_detection)
    x, targets = next(iter(loader))
    assert x.shape == (3, 3, 24, 32) and [len(t["boxes"]) for t in targets] == [2, 0, 1]
    s = ds.sample(2)
    assert isinstance(s, DetectionSample) and s.id == "3"
    again = DetectionSet.from_samples([ds.sample(i) for i in range(3)], CLASSES)
    assert torch.equal(again.images, ds.images)


def test_dataset_refuses_a_box_outside_the_image():
    with pytest.raises(CnnkitError, match="outside its 24x32 image"):
        DetectionSet(
            torch.zeros(1, 3, 24, 32, dtype=torch.uint8),
            [torch.tensor([[0.0, 0.0, 40.0, 10.0]])],
            [torch.tensor([0])],
            ["a"],
            CLASSES,
        )


# --------------------------------------------------------------------------- YOLO


def test_yolo_round_trip(tmp_path):
    ds, dv = _set(), _set(ids=("v1", "v2", "v3"), seed=1)
    yp = write_yolo(tmp_path, {"train": ds, "val": dv})
    assert yp == tmp_path / "data.yaml"
    spec = yaml.safe_load(yp.read_text())
    assert spec["train"] == "images/train" and spec["val"] == "images/val"
    assert spec["names"] == {0: "cat", 1: "dog", 2: "bird"} and spec["nc"] == 3
    assert (tmp_path / "labels/train/img_b.txt").read_text() == ""  # no objects
    first = (tmp_path / "labels/train/00007.txt").read_text().splitlines()[0].split()
    assert first[0] == "0" and float(first[1]) == pytest.approx((1.25 + 10.75) / 2 / 32)

    back = read_yolo(yp, "train")
    order = [back.ids.index(i) for i in ds.ids]  # read in file-name order
    assert back.classes == CLASSES and sorted(back.ids) == sorted(ds.ids)
    for k, j in enumerate(order):
        assert torch.equal(back.images[j], ds.images[k])
        assert torch.equal(back.labels[j], ds.labels[k])
        assert back.boxes[j].dtype == torch.float32
        assert torch.allclose(back.boxes[j], ds.boxes[k], atol=1e-4, rtol=0)
    assert read_yolo(yp, "val").ids == ["v1", "v2", "v3"]


def test_yolo_reads_ultralytics_spellings_and_resizes(tmp_path):
    write_yolo(tmp_path / "ds", {"train": _set()})
    (tmp_path / "ds/data.yaml").unlink()
    yp = tmp_path / "cfg" / "my.yaml"
    yp.parent.mkdir()
    # a relative `path`, names as a list, and an image without a label file
    yp.write_text("path: ../ds\ntrain: images/train\nnames: [cat, dog, bird]\nnc: 3\n")
    (tmp_path / "ds/labels/train/img_b.txt").unlink()
    ds = read_yolo(yp, "train", size=(48, 64))
    assert ds.images.shape == (3, 3, 48, 64)
    assert torch.allclose(ds.boxes[ds.ids.index("00007")][0], torch.tensor([2.5, 5, 21.5, 40]))
    assert len(ds.boxes[ds.ids.index("img_b")]) == 0


@pytest.mark.parametrize(
    "line, words",
    [
        ("0 0.5 1.2 0.1 0.1", "outside [0, 1]"),
        ("3 0.5 0.5 0.1 0.1", "class id 3 is outside 0..2"),
        ("0 0.5 0.5 0.1", "has 4 values"),
        ("0 0.5 abc 0.1 0.1", "'abc' is not a number"),
        ("1.5 0.5 0.5 0.1 0.1", "'1.5' is not an integer"),
        ("0 0.5 0.5 0.0 0.1", "must be above 0"),
    ],
)
def test_malformed_label_names_file_and_line(tmp_path, line, words):
    yp = write_yolo(tmp_path, {"train": _set()})
    bad = tmp_path / "labels/train/img_b.txt"
    bad.write_text(f"1 0.5 0.5 0.2 0.2\n\n{line}\n")  # the bad line is line 3
    with pytest.raises(CnnkitError) as e:
        read_yolo(yp)
    msg = str(e.value)
    assert str(bad) in msg and "line 3" in msg and words in msg


def test_empty_label_file_is_no_objects(tmp_path):
    yp = write_yolo(tmp_path, {"train": _set()})
    (tmp_path / "labels/train/00007.txt").write_text("\n  \n")
    ds = read_yolo(yp)
    assert ds.boxes[ds.ids.index("00007")].shape == (0, 4)
    assert ds.labels[ds.ids.index("00007")].shape == (0,)


def test_yolo_dataset_errors(tmp_path):
    yp = write_yolo(tmp_path, {"train": _set()})
    with pytest.raises(CnnkitError, match="has no 'val' key"):
        read_yolo(yp, "val")
    yp.write_text("train: images/train\n")
    with pytest.raises(CnnkitError, match="no 'names' key") as e:
        read_yolo(yp)
    assert str(yp) in str(e.value)
    yp.write_text("train: images/nowhere\nnames: [a, b, c]\n")
    with pytest.raises(CnnkitError, match="does not exist") as e:
        read_yolo(yp)
    assert str(tmp_path / "images/nowhere") in str(e.value)
    yp.write_text("train: images/train\nnames: [a, b, c]\nnc: 4\n")
    with pytest.raises(CnnkitError, match="nc: 4 but names has 3"):
        read_yolo(yp)
    yp.write_text("train: images/train\nnames: [a, b, c]\n")
    broken = tmp_path / "images/train/img_b.png"
    broken.write_bytes(b"not a png at all")
    with pytest.raises(CnnkitError, match="cannot decode image") as e:
        read_yolo(yp)
    assert str(broken) in str(e.value)


def test_yolo_mixed_sizes_need_size(tmp_path):
    yp = write_yolo(tmp_path, {"train": _set()})
    small = DetectionSet(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), [[]], [[]], ["zz"], CLASSES)
    write_yolo(tmp_path / "other", {"train": small})
    (tmp_path / "other/images/train/zz.png").rename(tmp_path / "images/train/zz.png")
    with pytest.raises(CnnkitError, match=r"pass size=\(n_H, n_W\)"):
        read_yolo(yp)
    assert read_yolo(yp, size=20).images.shape == (4, 3, 20, 20)


# --------------------------------------------------------------------------- COCO


def test_coco_round_trip(tmp_path):
    ds = _set()
    jp = write_coco(ds, tmp_path / "ann.json", tmp_path / "images")
    doc = json.loads(jp.read_text())
    ids = {im["file_name"]: im["id"] for im in doc["images"]}
    assert ids["00007.png"] == 7 and ids["3.png"] == 3 and ids["img_b.png"] == 1
    assert [c["id"] for c in doc["categories"]] == [1, 2, 3]
    a = doc["annotations"][0]
    assert a["bbox"] == [1.25, 2.5, 9.5, 17.5] and a["area"] == 9.5 * 17.5
    assert a["iscrowd"] == 0 and a["category_id"] == 1 and a["image_id"] == 7

    back = read_coco(jp)  # images found in the JSON's images/ folder
    assert back.ids == ds.ids and back.classes == CLASSES
    assert torch.equal(back.images, ds.images)
    for b, b0, y, y0 in zip(back.boxes, ds.boxes, back.labels, ds.labels):
        assert torch.equal(b, b0) and torch.equal(y, y0)


def test_yolo_to_coco_gives_identical_boxes(tmp_path):
    ys = read_yolo(write_yolo(tmp_path / "y", {"train": _set()}))
    cs = read_coco(
        write_coco(ys, tmp_path / "c/train.json", tmp_path / "c/pics"), tmp_path / "c/pics"
    )
    assert cs.ids == ys.ids and cs.classes == ys.classes
    for b, b0, y, y0 in zip(cs.boxes, ys.boxes, cs.labels, ys.labels):
        assert torch.equal(b, b0) and torch.equal(y, y0)


def _coco_doc(tmp_path, anns, cats=None):
    (tmp_path / "images").mkdir(exist_ok=True)
    from PIL import Image

    Image.new("RGB", (40, 30), (9, 9, 9)).save(tmp_path / "images/a.png")
    doc = {
        "images": [{"id": 5, "file_name": "a.png", "width": 40, "height": 30}],
        "annotations": anns,
        "categories": cats or [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}],
    }
    jp = tmp_path / "x.json"
    jp.write_text(json.dumps(doc))
    return jp


def test_coco_reads_categories_in_id_order_and_skips_crowds(tmp_path):
    anns = [
        {"id": 1, "image_id": 5, "category_id": 7, "bbox": [1, 2, 10, 5]},
        {"id": 2, "image_id": 5, "category_id": 3, "bbox": [0, 0, 40, 30], "iscrowd": 1},
        {"id": 3, "image_id": 5, "category_id": 3, "bbox": [30, 20, 10, 10]},
    ]
    ds = read_coco(_coco_doc(tmp_path, anns), size=(60, 80))
    assert ds.classes == ["a", "b"] and ds.labels[0].tolist() == [1, 0]
    assert ds.boxes[0].tolist() == [[2, 4, 22, 14], [60, 40, 80, 60]]


@pytest.mark.parametrize(
    "ann, words",
    [
        ({"id": 11, "image_id": 5, "category_id": 4, "bbox": [1, 1, 5, 5]}, "annotation id 11"),
        ({"id": 12, "image_id": 5, "category_id": 3, "bbox": [30, 1, 15, 5]}, "outside its 40x30"),
        ({"id": 13, "image_id": 5, "category_id": 3, "bbox": [1, 1, 0, 5]}, "annotation id 13"),
        ({"id": 14, "image_id": 9, "category_id": 3, "bbox": [1, 1, 5, 5]}, "image_id 9"),
        ({"id": 15, "image_id": 5, "bbox": [1, 1, 5, 5]}, "lacks the key 'category_id'"),
    ],
)
def test_coco_errors(tmp_path, ann, words):
    jp = _coco_doc(tmp_path, [ann])
    with pytest.raises(CnnkitError, match=words) as e:
        read_coco(jp)
    assert str(jp) in str(e.value)


def test_coco_missing_top_level_key(tmp_path):
    jp = tmp_path / "x.json"
    jp.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(CnnkitError, match="lacks the key 'annotations'"):
        read_coco(jp)


# ----------------------------------------------------------------------- synthetic


def test_synth_shapes_is_deterministic(tmp_path):
    a = synth_shapes(tmp_path / "a", 12, size=32, seed=3)
    synth_shapes(tmp_path / "b", 12, size=32, seed=3)
    synth_shapes(tmp_path / "c", 12, size=32, seed=4)
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert fa == fb and len(fa) == 2 * 12 + 1
    assert fa != _files(tmp_path / "c")
    assert a.name == "data.yaml"


def test_synth_shapes_yolo_content(tmp_path):
    yp = synth_shapes(tmp_path, 40, size=48, max_objects=4, seed=0)
    train, val = read_yolo(yp, "train"), read_yolo(yp, "val")
    assert (len(train), len(val)) == (32, 8) and train.size == (48, 48)
    assert train.classes == ["circle", "square", "triangle"]
    assert set(torch.cat(train.labels).tolist()) == {0, 1, 2}
    for b in train.boxes + val.boxes:
        assert 1 <= len(b) <= 4
        side = torch.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
        assert (side >= 4).all() and (side <= 0.4 * 48 + 1).all()


def test_synth_shapes_boxes_are_tight(tmp_path):
    jp = synth_shapes(tmp_path, 30, size=64, seed=1, fmt="coco", background="plain", splits=(1,))
    ds = read_coco(jp)
    assert len(ds) == 30 and (tmp_path / "images/00029.png").is_file()
    for k in range(len(ds)):
        img = ds.images[k].permute(1, 2, 0).reshape(-1, 3)  # (n_H * n_W, 3)
        colours, counts = torch.unique(img, dim=0, return_counts=True)
        bg = colours[counts.argmax()]
        shape = (ds.images[k] != bg.view(3, 1, 1)).any(0)  # (n_H, n_W)
        inside = torch.zeros_like(shape)
        for x1, y1, x2, y2 in ds.boxes[k].int().tolist():
            inside[y1:y2, x1:x2] = True
            # tight: each side of the box touches a non-background pixel
            assert shape[y1, x1:x2].any() and shape[y2 - 1, x1:x2].any()
            assert shape[y1:y2, x1].any() and shape[y1:y2, x2 - 1].any()
        assert not (shape & ~inside).any()


def test_synth_shapes_refuses_unknown_shape(tmp_path):
    with pytest.raises(CnnkitError, match="did you mean 'circle'"):
        synth_shapes(tmp_path, 4, classes=("circel",))


# -------------------------------------------------------------------- augmentation


def test_flip_maps_a_box_exactly():
    image = torch.rand(3, 20, 30)
    out, boxes, keep = augment_detection(
        image, torch.tensor([[2.0, 3.0, 10.0, 8.0]]), flip=1.0, scale=0, translate=0, color=0
    )
    assert boxes.tolist() == [[20.0, 3.0, 28.0, 8.0]] and keep.tolist() == [True]
    assert torch.equal(out, image.flip(-1))


def test_zero_strength_changes_nothing():
    g = torch.Generator().manual_seed(0)
    image, boxes = torch.rand(3, 20, 30), torch.tensor([[2.0, 3.0, 10.0, 8.0], [0, 0, 30, 20]])
    out, b, keep = augment_detection(image, boxes, g, flip=0, scale=0, translate=0, color=0)
    assert torch.equal(out, image) and torch.equal(b, boxes) and keep.all()


def test_translation_moves_image_and_boxes_alike():
    image = torch.zeros(1, 32, 32)
    image[:, 8:16, 4:12] = 1.0
    out, b, keep = affine_detection(image, torch.tensor([[4.0, 8.0, 12.0, 16.0]]), 1.0, (5, -3))
    assert b.tolist() == [[9.0, 5.0, 17.0, 13.0]] and keep.tolist() == [True]
    ys, xs = torch.nonzero(out[0] > 0.5, as_tuple=True)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (9, 5, 17, 13)
    # zoom x2 about the centre (16, 16): 4 -> -8 (clipped to 0), 12 -> 8
    _, b, keep = affine_detection(image, torch.tensor([[4.0, 8.0, 12.0, 16.0]]), 2.0)
    assert b.tolist() == [[0.0, 0.0, 8.0, 16.0]] and keep.tolist() == [True]
    # a box pushed mostly out of the image is dropped
    _, b, keep = affine_detection(image, torch.tensor([[4.0, 8.0, 12.0, 16.0]]), 1.0, (-11, 0))
    assert b.shape == (0, 4) and keep.tolist() == [False]


def test_random_augmentation_keeps_boxes_inside_and_is_seeded():
    image = torch.rand(3, 40, 50)
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 10.0, 45.0, 38.0], [40, 30, 50, 40]])
    runs = []
    for seed in (0, 0, 1):
        g = torch.Generator().manual_seed(seed)
        out, b, keep = augment_detection(image, boxes, g, flip=0.5, scale=0.3, translate=0.2)
        assert out.shape == image.shape and out.min() >= 0 and out.max() <= 1
        assert len(b) == int(keep.sum())
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= 50).all() and (b[:, 1] >= 0).all()
        assert (b[:, 3] <= 40).all() and (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        runs.append((out, b))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0], runs[2][0])
    many = [augment_detection(image, boxes, torch.Generator().manual_seed(s))[1] for s in range(30)]
    assert np.isfinite(torch.cat(many).numpy()).all()
