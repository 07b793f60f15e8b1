"""decode_image: EXIF orientation, 16-bit scaling, alpha/palette compositing, broken files.

Expected values are computed independently with numpy from the arrays written to disk.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnkit.data import decode_image
from cnnkit.errors import CnnkitError


def _rgb(h: int = 6, w: int = 9, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(arr: np.ndarray, path, mode: str | None = None, **kw):
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(path, **kw)
    return path


def test_rgb_png_roundtrip_and_gray_expansion(tmp_path):
    a = _rgb()
    p = _save(a, tmp_path / "rgb.png")
    out = decode_image(p)
    assert out.dtype == np.uint8 and out.shape == (6, 9, 3)
    np.testing.assert_array_equal(out, a)

    g = a[..., 0].copy()
    pg = _save(g, tmp_path / "gray.png")
    out3 = decode_image(pg, 3)
    assert out3.shape == (6, 9, 3)
    for c in range(3):
        np.testing.assert_array_equal(out3[..., c], g)
    out1 = decode_image(pg, 1)
    assert out1.shape == (6, 9, 1)
    np.testing.assert_array_equal(out1[..., 0], g)


def test_rgb_to_one_channel_is_itu601_luma(tmp_path):
    a = _rgb(8, 8, seed=1)
    out = decode_image(_save(a, tmp_path / "rgb.png"), 1)
    assert out.shape == (8, 8, 1)
    want = a.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(out[..., 0].astype(np.float64) - want).max() <= 1.0


def test_bilevel_image_gives_0_and_255(tmp_path):
    bits = np.array([[1, 0, 1], [0, 0, 1]], dtype=bool)
    p = tmp_path / "b.png"
    Image.fromarray(bits).convert("1").save(p)
    out = decode_image(p, 1)
    np.testing.assert_array_equal(out[..., 0], np.where(bits, 255, 0))


@pytest.mark.parametrize(
    "orientation, expected",
    [
        (1, lambda a: a),
        (2, lambda a: a[:, ::-1]),  # mirrored horizontally
        (3, lambda a: a[::-1, ::-1]),  # rotated 180
        (4, lambda a: a[::-1, :]),  # mirrored vertically
        (6, lambda a: np.rot90(a, k=-1)),  # displayed after a 90 degree clockwise turn
        (8, lambda a: np.rot90(a, k=1)),  # displayed after a 90 degree counter-clockwise turn
    ],
)
def test_exif_orientation_is_applied(tmp_path, orientation, expected):
    a = _rgb(3, 5, seed=orientation)  # non-square so a missed rotation changes the shape
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / f"o{orientation}.png"
    Image.fromarray(a).save(p, exif=exif)
    out = decode_image(p)
    want = expected(a)
    assert out.shape == want.shape
    np.testing.assert_array_equal(out, want)


def test_exif_orientation_also_for_gray_jpeg_shape(tmp_path):
    # JPEG is lossy: check geometry via a strong left/right contrast on a non-square image.
    a = np.zeros((16, 32), np.uint8)
    a[:, :16] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to display: the left half ends up on top
    p = tmp_path / "o6.jpg"
    Image.fromarray(a).save(p, exif=exif, quality=95)
    out = decode_image(p, 1)[..., 0].astype(int)
    assert out.shape == (32, 16)
    assert out[:14].mean() > 240 and out[18:].mean() < 15


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_is_scaled_not_clamped(tmp_path, suffix):
    v = np.array([[0, 100, 255, 257, 1000], [20000, 32768, 50000, 65534, 65535]], np.uint16)
    p = tmp_path / f"d16{suffix}"
    Image.fromarray(v).save(p)
    with Image.open(p) as im:
        assert im.mode.startswith("I;16")  # really a 16-bit file
    want = np.floor(v.astype(np.float64) * 255.0 / 65535.0 + 0.5).astype(np.uint8)
    out1 = decode_image(p, 1)
    np.testing.assert_array_equal(out1[..., 0], want)
    out3 = decode_image(p, 3)
    for c in range(3):
        np.testing.assert_array_equal(out3[..., c], want)
    # a clamping decoder would give 255 for everything above 255
    assert out1[0, 4, 0] == 4 and out1[1, 0, 0] == 78


def test_dark_16bit_image_stays_dark(tmp_path):
    # values all <= 255 in a 16-bit file are nearly black, not full scale
    v = np.array([[0, 50, 128, 200, 255]], np.uint16)
    p = tmp_path / "dark16.png"
    Image.fromarray(v).save(p)
    out = decode_image(p, 1)[..., 0]
    np.testing.assert_array_equal(out, np.array([[0, 0, 0, 1, 1]], np.uint8))


def _composite(rgb: np.ndarray, alpha: np.ndarray, bg: int) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255.0
    return rgb.astype(np.float64) * a + bg * (1.0 - a)


@pytest.mark.parametrize("bg", [255, 0, 128])
def test_rgba_is_composited_over_background(tmp_path, bg):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    alpha = np.array([[0, 255, 128, 64, 200, 10]] * 4, np.uint8)
    p = _save(np.dstack([rgb, alpha]), tmp_path / "rgba.png", "RGBA")
    out = decode_image(p, 3, background=bg).astype(np.float64)
    want = _composite(rgb, alpha, bg)
    assert np.abs(out - want).max() <= 1.0
    # fully transparent pixels are exactly the background, opaque ones exactly the colour
    np.testing.assert_array_equal(out[:, 0], np.full((4, 3), bg))
    np.testing.assert_array_equal(out[:, 1], rgb[:, 1])


def test_la_is_composited_and_gray_output(tmp_path):
    g = np.array([[10, 200, 90, 0]], np.uint8)
    alpha = np.array([[0, 255, 128, 255]], np.uint8)
    p = tmp_path / "la.png"
    Image.fromarray(np.dstack([g, alpha]), "LA").save(p)
    out = decode_image(p, 1, background=255)
    assert out.shape == (1, 4, 1)
    want = g * (alpha / 255.0) + 255 * (1 - alpha / 255.0)
    assert np.abs(out[..., 0] - want).max() <= 1.0
    assert out[0, 0, 0] == 255  # transparent -> background, not the hidden grey 10


def test_palette_with_transparency_is_composited(tmp_path):
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255, 7, 7, 7]
    idx = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette(palette + [0] * (768 - len(palette)))
    p = tmp_path / "p.png"
    im.save(p, transparency=1)  # index 1 (green) is transparent
    out = decode_image(p, 3, background=128)
    pal = np.array(palette, np.uint8).reshape(-1, 3)
    want = pal[idx].copy()
    want[idx == 1] = 128
    np.testing.assert_array_equal(out, want)

    q = tmp_path / "p_opaque.png"
    im.save(q)  # no transparency: plain palette lookup
    np.testing.assert_array_equal(decode_image(q, 3, background=128), pal[idx])


def test_palette_gif_with_transparency(tmp_path):
    palette = [10, 20, 30, 200, 100, 50, 0, 0, 0]
    idx = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette(palette + [0] * (768 - len(palette)))
    p = tmp_path / "t.gif"
    im.save(p, transparency=2)
    out = decode_image(p, 3, background=255)
    pal = np.array(palette, np.uint8).reshape(-1, 3)
    want = pal[idx].copy()
    want[idx == 2] = 255
    np.testing.assert_array_equal(out, want)


def test_missing_file_names_path(tmp_path):
    p = tmp_path / "nope" / "missing.png"
    with pytest.raises(CnnkitError) as e:
        decode_image(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_truncated_image_raises_naming_path(tmp_path, fmt):
    p = tmp_path / f"cut.{fmt}"
    Image.fromarray(_rgb(32, 32, seed=9)).save(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CnnkitError) as e:
        decode_image(p)
    assert str(p) in str(e.value)


def test_garbage_file_raises_naming_path(tmp_path):
    p = tmp_path / "junk.png"
    p.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(CnnkitError) as e:
        decode_image(p)
    assert str(p) in str(e.value)


def test_bad_channels_rejected(tmp_path):
    p = _save(_rgb(), tmp_path / "x.png")
    with pytest.raises(CnnkitError):
        decode_image(p, 2)
