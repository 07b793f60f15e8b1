"""``cnnkit detect train | val | predict | summary`` on a tiny synthetic shapes set."""

from __future__ import annotations

import json

import pytest
import torch

from cnnkit.cli import main
from cnnkit.detect.train import fast_augment


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-epoch YOLO run on 60 synthetic 32x32 images (48 train, 12 val)."""
    from cnnkit.detect.data import synth_shapes

    root = tmp_path_factory.mktemp("det")
    yaml_path = synth_shapes(root / "shapes", 60, size=32, seed=3)
    args = ["detect", "train", f"data={yaml_path}", "size=32", "epochs=2", "batch=16"]
    args += [f"project={root / 'runs'}", "verbose=0", "workers=0", "anchors=3"]
    assert main(args) == 0
    return root / "runs" / "detect" / "train", yaml_path, root


def test_run_folder_and_map_parity_with_pycocotools(run, capsys, cocoeval_stats):
    folder, _, _ = run
    for name in (
        "config.yaml",
        "results.csv",
        "summary.txt",
        "val_predictions.json",
        "pr_curves.png",
    ):
        assert (folder / name).is_file(), name
    assert (folder / "weights" / "best.safetensors").is_file()
    capsys.readouterr()
    assert main(["detect", "val", f"run={folder}"]) == 0
    out = capsys.readouterr().out
    ours = float(out.split()[1])  # "mAP@0.5 0.1234   mAP@[.5:.95] ..."
    stats = cocoeval_stats(folder / "val_ground_truth.json", folder / "val_predictions.json")
    assert abs(ours - stats[1]) < 1e-4  # printed with 4 decimals
    from cnnkit.detect.train import val

    s = val(folder)  # the values themselves: pycocotools' own to 1e-6
    assert abs(s.map50 - stats[1]) < 1e-6 and abs(s.map - stats[0]) < 1e-6


def test_predict_writes_coco_results_keyed_by_file_stem(run, capsys):
    folder, yaml_path, _ = run
    src = yaml_path.parent / "images" / "val"
    assert main(["detect", "predict", f"run={folder}", f"source={src}", "conf=0.0"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"predictions saved in {folder / 'predictions.json'}")
    preds = json.loads((folder / "predictions.json").read_text())
    stems = sorted(int(p.stem) for p in src.glob("*.png"))
    assert {p["image_id"] for p in preds} <= set(stems) and preds
    for p in preds:
        _, _, w, h = p["bbox"]
        assert 0 <= p["score"] <= 1 and w >= 0 and h >= 0 and p["category_id"] in (0, 1, 2)
    assert sorted(int(p.stem) for p in (folder / "predict").glob("*.png")) == stems


def test_summary_shows_grid_and_the_kmeans_anchors(run, capsys):
    from cnnkit.detect.data import read_yolo
    from cnnkit.detect.yolo import kmeans_anchors

    folder, yaml_path, _ = run
    assert main(["detect", "summary", f"run={folder}"]) == 0
    out = capsys.readouterr().out
    assert "grid S = 4 (stride 8), B = 3 anchors, C = 3 classes" in out
    assert "output 4 x 4 x 3 x (5 + 3) = 384 numbers" in out
    tr = read_yolo(yaml_path, "train", 32)
    wh = torch.cat([b[:, 2:] - b[:, :2] for b in tr.boxes]) / 32
    a = kmeans_anchors(wh, 3, seed=0) * 32
    for k, (w, h) in enumerate(a.tolist()):
        assert f"  {k}: {w:.1f} x {h:.1f}" in out


def test_a_zoo_backbone_sets_the_grid(run, capsys):
    """backbone=lenet5: its features map 32x32 to 5x5x16, so S = 5."""
    _, yaml_path, root = run
    args = ["detect", "train", f"data={yaml_path}", "size=32", "epochs=1", "batch=16"]
    args += [f"project={root / 'runs'}", "verbose=0", "workers=0", "anchors=2"]
    assert main([*args, "backbone=lenet5", "name=lenet"]) == 0
    capsys.readouterr()
    assert main(["detect", "summary", f"run={root / 'runs' / 'detect' / 'lenet'}"]) == 0
    out = capsys.readouterr().out
    assert "grid S = 5 (stride 6.4), B = 2 anchors" in out and "backbone lenet5" in out


@pytest.mark.parametrize(
    "args, words",
    [
        (["detect", "trian"], "did you mean `cnnkit detect train`"),
        (
            ["detect", "train", "data=d.yaml", "backbone=vgg1"],
            "unknown backbone 'vgg1': did you mean",
        ),
        (["detect", "train", "data=x.yaml", "epohcs=2"], "did you mean epochs="),
        (["detect", "train", "data=/no/such.yaml"], "/no/such.yaml"),
        (["detect", "train", "data=d.yaml", "size=60"], "multiple of stride=8"),
        (["detect", "val"], "run="),
        (["detect", "predict", "run=/nope", "source=x"], "not a run folder"),
    ],
)
def test_mistakes_are_one_sentence(capsys, args, words):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err


def test_fast_augment_moves_boxes_with_the_pixels():
    img = torch.zeros(3, 32, 32)
    img[:, 4:10, 6:16] = 1.0  # a white box x 6..16, y 4..10
    box = torch.tensor([[6.0, 4.0, 16.0, 10.0]])
    torch.manual_seed(0)
    out, b, keep = fast_augment(img, box, flip=1.0, scale=0, translate=0, color=0)
    assert torch.equal(b, torch.tensor([[16.0, 4.0, 26.0, 10.0]])) and bool(keep.all())
    assert torch.equal(out, img.flip(-1))
    # a shift: the white pixels' bounding box equals the moved box
    for seed in range(5):
        torch.manual_seed(seed)
        out, b, keep = fast_augment(img, box, flip=0, scale=0, translate=0.2, color=0)
        ys, xs = torch.nonzero(out[0] == 1.0, as_tuple=True)
        got = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
        assert torch.equal(b, got), (seed, b, got)
    # a zoom keeps the box on the shape (up to the resampling's blur)
    torch.manual_seed(1)
    out, b, keep = fast_augment(img, box, flip=0, scale=0.3, translate=0, color=0)
    ys, xs = torch.nonzero(out[0] > 0.5, as_tuple=True)
    got = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
    assert (b[0] - got).abs().max() <= 1.0, (b, got)


def test_data_synth_detect_writes_the_seeded_shapes(tmp_path, capsys):
    from cnnkit.detect.data import read_yolo, synth_shapes

    args = ["data", "synth", "detect", f"out={tmp_path / 'a'}", "n=10", "size=32", "seed=4"]
    assert main(args) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"shapes saved in {tmp_path / 'a'}/")
    synth_shapes(tmp_path / "b", 10, size=32, seed=4)
    for p in sorted((tmp_path / "b").rglob("*.*")):
        assert (tmp_path / "a" / p.relative_to(tmp_path / "b")).read_bytes() == p.read_bytes()
    assert len(read_yolo(tmp_path / "a" / "data.yaml", "train")) == 8
    assert main(["data", "synth", "detect", f"out={tmp_path / 'c'}", "n=abc"]) == 2
    assert "n must be an integer" in capsys.readouterr().err


class _Oracle(torch.nn.Module):
    """Returns the logits of the encoded truth of each image (looked up by its pixels)."""

    def __init__(self, ds, anchors, S):
        from cnnkit.detect.yolo import encode_targets

        super().__init__()
        self.truth = []
        for i in range(len(ds)):
            y = encode_targets(ds.boxes[i], ds.labels[i], S, anchors, len(ds.classes), (32, 48))
            z = y.clone()
            z[..., 0:2] = torch.logit(y[..., 0:2].clamp(1e-6, 1 - 1e-6))
            z[..., 4] = torch.where(y[..., 4] > 0, 12.0, -12.0)
            z[..., 5:] = y[..., 5:] * 12
            self.truth.append(z)

    def forward(self, x):
        return torch.stack([self.truth[round(float(v))] for v in x[:, 0, 0, 0]])


def test_a_perfect_model_scores_map_one_through_the_whole_chain():
    """encode -> decode -> yolo_eval -> COCO files -> pycocotools: a perfect grid gives 1.0.

    The images are 32 x 48 (not square) and each box is a distinct cell/anchor, so a
    swapped axis, a wrong scale or a wrong xywh conversion would lose AP.
    """
    from cnnkit.detect.data import DetectionSet
    from cnnkit.detect.train import score

    boxes = [
        torch.tensor([[2.0, 3.0, 14.0, 11.0], [30.0, 18.0, 46.0, 30.0]]),
        torch.tensor([[20.0, 1.0, 27.0, 20.0]]),
    ]
    labels = [torch.tensor([0, 1]), torch.tensor([2])]
    images = torch.zeros(2, 1, 32, 48, dtype=torch.uint8)
    images[1] += 1  # the oracle reads the image's index from its first pixel
    ds = DetectionSet(images, boxes, labels, ["0", "1"], ["a", "b", "c"])
    anchors = torch.tensor([[0.2, 0.2], [0.3, 0.6]])
    s, preds, gt = score(_Oracle(ds, anchors, 4), ds, anchors, [0.0], [1 / 255])
    assert s.map50 == pytest.approx(1.0) and s.map > 0.9
    assert gt["annotations"][0]["bbox"] == [2.0, 3.0, 12.0, 8.0]  # xywh
    best = max((p for p in preds if p["image_id"] == 1), key=lambda p: p["score"])
    assert best["bbox"] == pytest.approx([20.0, 1.0, 7.0, 19.0], abs=1e-2)
    assert best["category_id"] == 2


@pytest.mark.parametrize(
    "args, words",
    [
        (["translate=2"], "translate must be in [0, 1)"),
        (["lambda_coord=abc"], "lambda_coord must be a number"),
        (["val=true"], "val must name a split"),
        (["max_boxes=0"], "max_boxes must be a positive integer"),
        (["data=train.json"], "add val=FILE.json"),
    ],
)
def test_bad_settings_stop_before_any_data_is_read(capsys, args, words):
    data = [] if any(a.startswith("data=") for a in args) else ["data=d.yaml"]
    assert main(["detect", "train", *data, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err


def test_predict_scales_boxes_back_to_each_images_own_size(run, tmp_path, capsys):
    """The same image stretched to twice its width: x and w double, y and h stay."""
    from PIL import Image

    folder, yaml_path, _ = run
    src = sorted((yaml_path.parent / "images" / "val").glob("*.png"))[0]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    im = Image.open(src).convert("RGB")
    im.save(tmp_path / "a" / "1.png")
    im.resize((64, 32), Image.NEAREST).save(tmp_path / "b" / "1.png")
    got = {}
    for k in ("a", "b"):
        assert main(["detect", "predict", f"run={folder}", f"source={tmp_path / k}", "conf=0"]) == 0
        got[k] = json.loads((folder / "predictions.json").read_text())
    capsys.readouterr()
    assert got["a"] and len(got["a"]) == len(got["b"])
    # each of the 5 best boxes of the original has its stretched twin in the other set
    # (scores differ by resampling, so the order may too: match by position, not rank)
    for p in sorted(got["a"], key=lambda p: -p["score"])[:5]:
        x, y, w, h = p["bbox"]
        want = torch.tensor([2 * x, y, 2 * w, h])
        same = [q for q in got["b"] if q["category_id"] == p["category_id"]]
        d = min(float((torch.tensor(q["bbox"]) - want).abs().max()) for q in same)
        assert d < 0.25, (p, d)  # a few hundredths of a pixel apart
