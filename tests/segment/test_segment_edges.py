"""Segmentation edge cases: EXIF-turned photos, predict's output paths, held-out test
scores, encoders that cannot be one, and sets that would mix with old files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cnnkit.cli import main
from cnnkit.errors import CnnkitError
from cnnkit.segment.data import read_segmentation, synth_segment, write_mask
from cnnkit.segment.unet import EncoderUNet


def _photo_with_mask(root, orientation: int) -> None:
    """A 40x60 JPEG stored with its left half white, EXIF saying how to turn it, and the
    mask of the stored pixels: left half class 1."""
    (root / "images" / "train").mkdir(parents=True)
    (root / "masks" / "train").mkdir(parents=True)
    a = np.zeros((40, 60, 3), np.uint8)
    a[:, :30] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(a).save(root / "images" / "train" / "p.jpg", exif=exif, quality=95)
    m = np.zeros((40, 60), np.uint8)
    m[:, :30] = 1
    write_mask(m, root / "masks" / "train" / "p.png")
    (root / "data.yaml").write_text("train: images/train\nnames: [background, bright]\n")


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_a_turned_photo_keeps_its_labels_on_its_pixels(tmp_path, orientation):
    _photo_with_mask(tmp_path, orientation)
    ds = read_segmentation(tmp_path / "data.yaml", "train", channels=1)
    img, mask = ds.images[0, 0].numpy(), ds.masks[0].numpy()
    assert mask.shape == img.shape  # 60x40 when turned a quarter
    bright = img > 128
    # every white pixel is labelled 1, every dark one 0, whichever way the photo was turned
    assert (mask[bright] == 1).mean() > 0.98 and (mask[~bright] == 0).mean() > 0.98


def test_synth_refuses_a_folder_that_already_holds_a_set(tmp_path):
    synth_segment(tmp_path / "d", n=10, size=16)
    with pytest.raises(CnnkitError, match="already holds files"):
        synth_segment(tmp_path / "d", n=5, size=16)


def test_encoders_that_are_not_image_convnets_are_refused_in_one_sentence(tmp_path, capsys):
    with pytest.raises(CnnkitError, match="no 2D convolutions"):
        EncoderUNet("logistic", in_channels=3, num_classes=2)
    synth_segment(tmp_path / "d", n=10, size=16)
    for enc in ("resnet1d", "convnet3d"):
        code = main(["segment", "train", f"data={tmp_path / 'd' / 'data.yaml'}", f"encoder={enc}"])
        assert code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "2D image model" in err[0], err


@pytest.fixture(scope="module")
def run3(tmp_path_factory):
    """A set with a test split, and a 1-epoch run on it."""
    base = tmp_path_factory.mktemp("seg3")
    data = synth_segment(base / "d", n=30, size=16, seed=2, splits=(0.6, 0.2, 0.2))
    args = ["segment", "train", f"data={data}", "size=16", "depth=2", "width=4", "epochs=1"]
    args += ["batch=6", f"project={base / 'runs'}", "name=r", "verbose=0", "workers=0"]
    assert main(args) == 0
    return base / "runs" / "segment" / "r", base


def test_a_test_split_is_scored_apart_from_the_split_that_chose_the_weights(run3):
    r, _ = run3

    def no_nan(c):
        raise AssertionError(f"{c} in scores.json")

    s = json.loads((r / "scores.json").read_text(), parse_constant=no_nan)  # standard JSON
    assert s["split"] == "val" and s["test"]["images"] == 6
    cm = np.array(s["test"]["confusion_matrix"])
    assert cm.sum() == 6 * 16 * 16  # every test pixel, once
    assert s["test"]["pixel_accuracy"] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-12)
    assert "held out" in (r / "summary.txt").read_text()


def test_predict_mirrors_subfolders_and_refuses_two_images_on_one_mask(run3, capsys):
    r, base = run3
    src = base / "src"
    for sub in ("a", "b"):
        (src / sub).mkdir(parents=True)
        Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(src / sub / "same.png")
    out = src / "out"  # inside the source: its files must not be read back as inputs
    assert main(["segment", "predict", f"run={r}", f"source={src}", f"out={out}"]) == 0
    assert "2 masks saved" in capsys.readouterr().out
    for sub in ("a", "b"):
        assert np.array(Image.open(out / sub / "same.png")).shape == (20, 30)
        assert (out / "overlays" / sub / "same.png").is_file()
    assert main(["segment", "predict", f"run={r}", f"source={src}", f"out={out}"]) == 0
    assert "2 masks saved" in capsys.readouterr().out  # the first run's outputs were skipped
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / "a" / "same.jpg")
    assert main(["segment", "predict", f"run={r}", f"source={src}", f"out={base / 'o2'}"]) == 2
    err = capsys.readouterr().err
    assert "same.jpg" in err and "would both write" in err
    assert not (base / "o2").exists()  # refused before any work


def test_a_run_resumes_where_it_stopped_and_keeps_its_settings(tmp_path, capsys):
    data = synth_segment(tmp_path / "d", n=24, size=16, seed=0)
    args = ["segment", "train", f"data={data}", "size=16", "depth=2", "width=4", "batch=6"]
    args += ["epochs=1", f"project={tmp_path / 'runs'}", "name=r", "verbose=0", "workers=0"]
    assert main(args) == 0
    run = tmp_path / "runs" / "segment" / "r"
    first = (run / "results.csv").read_text().splitlines()
    assert main(["segment", "train", f"resume={run}", "epochs=3", "verbose=0"]) == 0
    rows = (run / "results.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]
    assert rows[1] == first[1]  # epoch 1 kept as it was, not trained again
    assert "epochs: 3" in (run / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["segment", "train", f"resume={run}", "lr=0.1"]) == 2
    assert "only epochs=, verbose= and workers= may change" in capsys.readouterr().err
