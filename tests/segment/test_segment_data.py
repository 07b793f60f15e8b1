"""Masks on disk, the palette, the layout, the synthetic set and paired augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cnnkit.errors import CnnkitError
from cnnkit.segment.data import (
    augment_pair,
    mask_path,
    overlay,
    palette,
    read_mask,
    read_segmentation,
    synth_segment,
    write_mask,
)

#: PASCAL VOC's colour map, as published with the VOC2012 devkit (class: RGB).
VOC = {
    0: (0, 0, 0),
    1: (128, 0, 0),
    2: (0, 128, 0),
    3: (128, 128, 0),
    4: (0, 0, 128),
    5: (128, 0, 128),
    6: (0, 128, 128),
    7: (128, 128, 128),
    8: (64, 0, 0),
    9: (192, 0, 0),
    10: (64, 128, 0),
    11: (192, 128, 0),
    12: (64, 0, 128),
    13: (192, 0, 128),
    14: (64, 128, 128),
    15: (192, 128, 128),
    16: (0, 64, 0),
    17: (128, 64, 0),
    18: (0, 192, 0),
    19: (128, 192, 0),
    20: (0, 64, 128),
    255: (224, 224, 192),
}


# ---------------------------------------------------------------- palette, mask files


def test_palette_is_the_voc_colour_map():
    p = palette()
    assert p.shape == (256, 3) and p.dtype == np.uint8
    for c, rgb in VOC.items():
        assert tuple(int(v) for v in p[c]) == rgb, c
    assert len({tuple(r) for r in p.tolist()}) == 256  # every class its own colour
    assert np.array_equal(palette(21), p[:21])


def _mask_values(seed: int = 0, shape=(9, 13), C: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = rng.integers(0, C, shape).astype(np.uint8)
    m[0, :4] = 255
    m[-1, -1] = C - 1
    return m


def test_write_then_read_mask_round_trips_as_a_voc_palette_png(tmp_path):
    m = _mask_values()
    f = tmp_path / "m.png"
    write_mask(m, f)
    got = read_mask(f, 4)
    assert got.dtype == np.uint8 and np.array_equal(got, m)
    assert int((got == 255).sum()) == 4
    with Image.open(f) as im:
        assert im.format == "PNG" and im.mode == "P"
        pal = np.array(im.getpalette(), dtype=np.uint8).reshape(-1, 3)
        assert np.array_equal(np.array(im), m)  # stored values are the class indices
        shown = np.array(im.convert("RGB"))
    for c, rgb in VOC.items():
        assert tuple(int(v) for v in pal[c]) == rgb
    assert np.array_equal(shown[0, 0], [224, 224, 192])  # 255 shown cream
    ys, xs = np.nonzero(m == 1)
    assert np.array_equal(shown[ys[0], xs[0]], [128, 0, 0])
    # a torch tensor is accepted too
    write_mask(torch.from_numpy(m), tmp_path / "t.png")
    assert np.array_equal(read_mask(tmp_path / "t.png", 4), m)


def test_greyscale_png_mask_reads_the_same(tmp_path):
    m = _mask_values(1)
    Image.fromarray(m, mode="L").save(tmp_path / "g.png")
    assert np.array_equal(read_mask(tmp_path / "g.png", 4), m)


def test_rgb_png_mask_is_refused_naming_the_file(tmp_path):
    f = tmp_path / "rgb_mask.png"
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(f)
    with pytest.raises(CnnkitError, match="is a RGB image") as e:
        read_mask(f, 4)
    assert str(f) in str(e.value)


def test_value_out_of_range_is_refused_naming_file_and_value(tmp_path):
    m = np.zeros((4, 6), np.uint8)
    m[2, 3] = 7
    f = tmp_path / "bad7.png"
    write_mask(m, f)
    with pytest.raises(CnnkitError) as e:
        read_mask(f, 4)
    msg = str(e.value)
    assert str(f) in msg and "the value 7" in msg and "0..3" in msg
    assert np.array_equal(read_mask(f, 8), m)  # 8 classes: 7 is fine


def test_jpeg_and_missing_masks_are_refused(tmp_path):
    f = tmp_path / "m.jpg"
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(f, format="JPEG")
    with pytest.raises(CnnkitError, match="is JPEG, not PNG") as e:
        read_mask(f, 2)
    assert str(f) in str(e.value)
    gone = tmp_path / "gone.png"
    with pytest.raises(CnnkitError, match="does not exist") as e:
        read_mask(gone, 2)
    assert str(gone) in str(e.value)


# ---------------------------------------------------------------- layout


def test_mask_path_mirrors_the_images_folder(tmp_path):
    root = tmp_path / "ds"
    split = root / "images" / "train"
    (split / "a").mkdir(parents=True)
    got = mask_path(split / "a" / "X.jpg", root, split)
    assert got == root / "masks" / "train" / "a" / "X.png"
    assert mask_path(split / "Y.png", root, split, "labels") == root / "labels" / "train" / "Y.png"
    # a split folder that is not under images/: kept whole under masks/
    pics = root / "pics" / "val"
    pics.mkdir(parents=True)
    assert mask_path(pics / "Z.bmp", root, pics) == root / "masks" / "pics" / "val" / "Z.png"
    # a split folder outside the root: its own name
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert mask_path(other / "W.png", root, other) == root / "masks" / "elsewhere" / "W.png"
    # a .txt list: the last images/ folder of the image's path becomes masks/
    listed = tmp_path / "x" / "images" / "y" / "images" / "val" / "V.jpg"
    assert mask_path(listed, root, root / "val.txt") == Path(
        tmp_path / "x" / "images" / "y" / "masks" / "val" / "V.png"
    )
    with pytest.raises(CnnkitError, match="no 'images' folder"):
        mask_path(tmp_path / "flat" / "V.jpg", root, root / "val.txt")


def _write_set(root: Path, sizes, names, mask_fn=None, split="train"):
    """Images root/images/split/iK.png and masks root/masks/split/iK.png; returns the yaml."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "masks" / split).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            root / "images" / split / f"i{k}.png"
        )
        m = mask_fn(h, w) if mask_fn else np.zeros((h, w), np.uint8)
        write_mask(m, root / "masks" / split / f"i{k}.png")
    y = root / "data.yaml"
    y.write_text(yaml.safe_dump({split: f"images/{split}", "names": names}))
    return y


def _stripes(h, w):
    m = np.zeros((h, w), np.uint8)
    m[:, ::2] = 3  # alternating 0 / 3: a bilinear resize would make 1s and 2s
    m[0, 0] = 255
    return m


def test_read_segmentation_resizes_masks_by_nearest_and_takes_a_names_list(tmp_path):
    y = _write_set(tmp_path, [(10, 12), (14, 9)], ["bg", "a", "b", "c"], _stripes)
    ds = read_segmentation(y, "train", size=(5, 7))
    assert ds.classes == ["bg", "a", "b", "c"]
    assert tuple(ds.images.shape) == (2, 3, 5, 7) and ds.images.dtype == torch.uint8
    assert tuple(ds.masks.shape) == (2, 5, 7) and ds.masks.dtype == torch.uint8
    assert set(ds.masks.unique().tolist()) <= {0, 3, 255}
    assert {0, 3} <= set(ds.masks.unique().tolist())
    assert ds.ids == ["i0", "i1"]
    # no resize: the files' own values
    one = _write_set(tmp_path / "one", [(6, 8)], ["bg", "a", "b", "c"], _stripes)
    ds1 = read_segmentation(one, "train")
    assert np.array_equal(ds1.masks[0].numpy(), _stripes(6, 8))


def test_read_segmentation_refuses_a_mask_of_another_size_naming_it(tmp_path):
    y = _write_set(tmp_path, [(8, 8)], ["bg", "fg"])
    bad = tmp_path / "masks" / "train" / "i0.png"
    write_mask(np.zeros((8, 9), np.uint8), bad)
    with pytest.raises(CnnkitError, match="is 8x9 but its image") as e:
        read_segmentation(y, "train", size=8)
    assert str(bad) in str(e.value)


def test_read_segmentation_refuses_a_missing_mask_naming_it(tmp_path):
    y = _write_set(tmp_path, [(8, 8), (8, 8)], ["bg", "fg"])
    gone = tmp_path / "masks" / "train" / "i1.png"
    gone.unlink()
    with pytest.raises(CnnkitError, match="does not exist") as e:
        read_segmentation(y, "train")
    assert str(gone) in str(e.value)


def test_read_segmentation_refuses_a_missing_split(tmp_path):
    y = _write_set(tmp_path, [(8, 8)], ["bg", "fg"])
    with pytest.raises(CnnkitError, match="has no 'val' split") as e:
        read_segmentation(y, "val")
    assert "it has train" in str(e.value)


def test_read_segmentation_refuses_a_bad_mask_value_naming_the_file(tmp_path):
    def nine(h, w):
        m = np.zeros((h, w), np.uint8)
        m[1, 1] = 9
        return m

    y = _write_set(tmp_path, [(8, 8)], ["bg", "fg"], nine)
    with pytest.raises(CnnkitError, match="the value 9") as e:
        read_segmentation(y, "train")
    assert str(tmp_path / "masks" / "train" / "i0.png") in str(e.value)


# ---------------------------------------------------------------- synthetic set


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    base = tmp_path_factory.mktemp("synth")
    a = synth_segment(base / "a", n=20, size=32, seed=5)
    b = synth_segment(base / "b", n=20, size=32, seed=5)
    c = synth_segment(base / "c", n=20, size=32, seed=6)
    return a.parent, b.parent, c.parent


def _files(root: Path) -> dict[str, bytes]:
    return {
        f.relative_to(root).as_posix(): f.read_bytes()
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


def test_synth_segment_is_deterministic_in_its_seed(synth):
    a, b, c = synth
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert len(fa) == 1 + 2 * 20
    assert fa == fb
    assert set(fa) == set(fc)
    differ = [k for k in fa if k != "data.yaml" and fa[k] != fc[k]]
    assert len(differ) == 40


def test_synth_segment_layout_and_classes(synth):
    root = synth[0]
    spec = yaml.safe_load((root / "data.yaml").read_text())
    assert spec["path"] == "." and spec["train"] == "images/train"
    assert spec["val"] == "images/val" and spec["masks"] == "masks"
    assert spec["names"] == {0: "background", 1: "circle", 2: "square", 3: "triangle"}
    tr = sorted(p.name for p in (root / "images" / "train").iterdir())
    va = sorted(p.name for p in (root / "images" / "val").iterdir())
    assert len(tr) == 16 and len(va) == 4  # 0.8 / 0.2 of 20
    assert tr == sorted(p.name for p in (root / "masks" / "train").iterdir())
    assert va == sorted(p.name for p in (root / "masks" / "val").iterdir())
    assert tr[0] == "00000.png" and va[0] == "00016.png"


def test_synth_masks_agree_with_the_images(synth):
    root = synth[0]
    ds = read_segmentation(root / "data.yaml", "train")
    img = ds.images.permute(0, 2, 3, 1).numpy().astype(np.int64)  # (N, H, W, 3)
    m = ds.masks.numpy()
    assert set(np.unique(m).tolist()) == {0, 1, 2, 3}  # every class drawn
    for k in range(len(m)):
        fg = (m[k] > 0).mean()
        # 1..4 shapes of side 15-45% (5..14 px of 32): at least a small triangle
        assert 5 * 5 / 2 / 32**2 * 0.5 <= fg <= 4 * 0.45**2 + 0.01, (k, fg)
    # neighbouring pixels inside one class region share a flat colour (noise sd 4);
    # pairs across a shape's edge differ (the colour was picked to stand out)
    same, cross = [], []
    for dy, dx in ((0, 1), (1, 0)):
        a = img[:, : img.shape[1] - dy, : img.shape[2] - dx]
        b = img[:, dy:, dx:]
        ma = m[:, : m.shape[1] - dy, : m.shape[2] - dx]
        mb = m[:, dy:, dx:]
        d = np.abs(a - b).sum(-1)
        same.append(d[(ma == mb) & (ma > 0)])
        cross.append(d[(ma == 0) != (mb == 0)])
    same, cross = np.concatenate(same), np.concatenate(cross)
    assert (same < 45).mean() > 0.95
    assert np.median(cross) > 60
    assert np.median(cross) > 4 * np.median(same)


# ---------------------------------------------------------------- augmentation


def test_flip_only_is_torch_flip_of_both():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 6, 9, generator=g)
    mask = torch.randint(0, 4, (6, 9), generator=g)
    im2, m2 = augment_pair(img, mask, flip=1.0)
    assert torch.equal(im2, torch.flip(img, [-1])) and torch.equal(m2, torch.flip(mask, [-1]))
    assert im2.dtype == img.dtype and m2.dtype == mask.dtype
    im3, m3 = augment_pair(img, mask, flip=0.0, vflip=1.0)
    assert torch.equal(im3, torch.flip(img, [-2])) and torch.equal(m3, torch.flip(mask, [-2]))
    im4, m4 = augment_pair(img, mask, flip=0.0)
    assert torch.equal(im4, img) and torch.equal(m4, mask)


def _painted(seed: int, H: int = 48, W: int = 40):
    """A mask of blocks of classes 0..3 and the image painted with their VOC colours."""
    g = torch.Generator().manual_seed(seed)
    small = torch.randint(0, 4, (H // 8, W // 8), generator=g)
    mask = small.repeat_interleave(8, 0).repeat_interleave(8, 1)
    colours = torch.tensor([VOC[c] for c in range(4)], dtype=torch.float32) / 255
    img = colours[mask].permute(2, 0, 1).contiguous()  # (H, W, 3) -> (3, H, W)
    return img, mask, colours


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_affine_moves_image_and_mask_together(seed):
    img, mask, colours = _painted(seed)
    torch.manual_seed(100 + seed)
    im2, m2 = augment_pair(img, mask, degrees=15, scale=0.2, translate=0.1, flip=0.5)
    assert im2.shape == img.shape and im2.dtype == img.dtype
    assert m2.shape == mask.shape and m2.dtype == mask.dtype
    assert set(m2.unique().tolist()) <= {0, 1, 2, 3, 255}
    px = im2.permute(1, 2, 0).reshape(-1, 3)  # (3, H, W) -> (H*W, 3)
    nearest = torch.cdist(px, colours).argmin(1)
    mv = m2.reshape(-1)
    keep = mv != 255
    assert int(keep.sum()) > 0.5 * mv.numel()
    agree = (nearest[keep] == mv[keep]).double().mean()
    assert float(agree) >= 0.95


def test_uncovered_pixels_are_ignored_in_the_mask():
    img = torch.ones(3, 40, 40)
    mask = torch.ones(40, 40, dtype=torch.long)
    torch.manual_seed(0)
    im2, m2 = augment_pair(img, mask, flip=0.0, degrees=30, scale=0.3, translate=0.2)
    assert m2.dtype == torch.long
    uncovered = (im2 == 0).all(0)
    covered = (im2 > 0.999).all(0)
    assert int(uncovered.sum()) > 0 and int(covered.sum()) > 0
    assert bool((m2[uncovered] == 255).all())
    assert bool((m2[covered] == 1).all())
    assert set(m2.unique().tolist()) == {1, 255}


# ---------------------------------------------------------------- overlay


@pytest.mark.parametrize("alpha", [0.5, 0.3])
def test_overlay_paints_classes_only(alpha):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    mask = np.array(
        [[0, 1, 2, 3, 255, 15]] * 5,
        dtype=np.uint8,
    )
    out = overlay(image, mask, alpha)
    assert out.shape == (5, 6, 3) and out.dtype == np.uint8
    assert np.array_equal(out[:, 0], image[:, 0])  # background
    assert np.array_equal(out[:, 4], image[:, 4])  # ignored
    for col, c in ((1, 1), (2, 2), (3, 3), (5, 15)):
        want = np.rint((1 - alpha) * image[:, col].astype(float) + alpha * np.array(VOC[c]))
        assert np.array_equal(out[:, col], want.astype(np.uint8)), c
    grey = overlay(image[..., :1], mask, alpha)  # one channel: repeated to RGB
    assert np.array_equal(grey[:, 0], np.repeat(image[:, 0, :1], 3, axis=1))
