"""stratified_split, resize/statistics/normalization helpers, Augment and TensorBatches."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.data import (
    Augment,
    ImageSet,
    Preprocess,
    TensorBatches,
    channel_stats,
    epoch_order,
    resize_uint8,
    stratified_split,
)
from cnnkit.errors import CnnkitError

# ----------------------------------------------------------------------------- stratified_split


def _labels() -> np.ndarray:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), [50, 30, 20])
    return rng.permutation(y)


def test_stratified_split_partition_and_proportions():
    y = _labels()
    parts = stratified_split(y, {"dev": 0.1, "test": 30}, seed=0)
    assert set(parts) == {"dev", "test", "rest"}
    allidx = np.concatenate(list(parts.values()))
    assert len(allidx) == len(y) and set(allidx.tolist()) == set(range(len(y)))
    for k, v in parts.items():
        assert np.all(np.diff(v) > 0), f"{k} not sorted / has duplicates"
    assert len(parts["dev"]) == 10 and len(parts["test"]) == 30
    for name, total in (("dev", 10), ("test", 30)):
        got = Counter(y[parts[name]].tolist())
        for c in range(3):
            exact = total * np.sum(y == c) / len(y)
            assert abs(got[c] - exact) <= 1


def test_stratified_split_fraction_uneven_classes():
    rng = np.random.default_rng(1)
    y = rng.permutation(np.repeat(np.arange(7), [31, 17, 23, 5, 40, 12, 9]))
    parts = stratified_split(y, {"test": 0.2, "dev": 0.15}, seed=5)
    n = len(y)
    for name, frac in (("test", 0.2), ("dev", 0.15)):
        got = Counter(y[parts[name]].tolist())
        for c in range(7):
            exact = frac * n * np.sum(y == c) / n
            assert abs(got[c] - exact) <= 1, (name, c, got[c], exact)


@pytest.mark.parametrize(
    "counts, sizes",
    [
        ([15] * 10, {"test": 5}),  # half an image per class
        ([5, 5, 5, 5], {"dev": 2}),
        ([7, 9, 11], {"dev": 0.1, "test": 0.2}),
        ([178, 182, 177, 183, 181, 182, 181, 179, 174, 180], {"test": 0.2, "dev": 0.1}),  # digits
    ],
)
def test_stratified_split_honours_requested_total(counts, sizes):
    y = np.repeat(np.arange(len(counts)), counts)
    n = len(y)
    parts = stratified_split(y, sizes, seed=0)
    for name, v in sizes.items():
        want = round(v * n) if isinstance(v, float) else v
        assert len(parts[name]) == want, (name, len(parts[name]), want)
        got = Counter(y[parts[name]].tolist())
        for c, nc in enumerate(counts):
            assert abs(got[c] - want * nc / n) <= 1


def test_stratified_split_seeded():
    y = _labels()
    a = stratified_split(y, {"dev": 0.2}, seed=7)
    b = stratified_split(y, {"dev": 0.2}, seed=7)
    c = stratified_split(y, {"dev": 0.2}, seed=8)
    np.testing.assert_array_equal(a["dev"], b["dev"])
    assert not np.array_equal(a["dev"], c["dev"])


@pytest.mark.parametrize("sizes", [{"dev": 0.5, "test": 0.5}, {"test": 100}, {"a": 60, "b": 0.4}])
def test_stratified_split_taking_everything_rejected(sizes):
    with pytest.raises(CnnkitError):
        stratified_split(_labels(), sizes, seed=0)


@pytest.mark.parametrize("bad", [-0.1, 2.5, "0.1", True])
def test_stratified_split_bad_sizes(bad):
    with pytest.raises(CnnkitError):
        stratified_split(_labels(), {"dev": bad}, seed=0)


# ------------------------------------------------------------- resize / stats / normalize


@pytest.mark.parametrize(
    "src, dst", [((32, 32), (16, 16)), ((8, 8), (20, 20)), ((24, 18), (10, 7))]
)
def test_resize_uint8_matches_pil_bilinear(src, dst):
    a = np.random.default_rng(4).integers(0, 256, (2, *src, 3), dtype=np.uint8)
    t = torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()
    out = resize_uint8(t, dst)
    assert out.dtype == torch.uint8 and tuple(out.shape) == (2, 3, *dst)
    for i in range(2):
        want = np.asarray(Image.fromarray(a[i]).resize(dst[::-1], Image.BILINEAR)).astype(int)
        got = out[i].permute(1, 2, 0).numpy().astype(int)
        assert np.abs(got - want).max() <= 1


def test_resize_uint8_same_size_untouched():
    t = torch.randint(0, 256, (3, 1, 5, 6), dtype=torch.uint8)
    assert resize_uint8(t, (5, 6)) is t


def test_channel_stats_match_numpy():
    a = torch.randint(
        0, 256, (7, 3, 5, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    a[:, 1] //= 3  # distinct channels
    mean, std = channel_stats(a)
    x = a.numpy().astype(np.float64) / 255.0
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3)), atol=1e-6)
    assert len(mean) == 3 and len(std) == 3


def test_channel_stats_constant_images_std_positive():
    mean, std = channel_stats(torch.full((2, 1, 3, 3), 51, dtype=torch.uint8))
    assert mean[0] == pytest.approx(0.2)
    assert 0 < std[0] < 0.01


def test_preprocess_normalize_and_roundtrip():
    pre = Preprocess((4, 3), 3, (0.5, 0.25, 0.1), (0.2, 0.5, 1.0))
    x = torch.randint(0, 256, (2, 3, 4, 3), dtype=torch.uint8)
    got = pre.normalize(x)
    assert got.dtype == torch.float32
    a = x.numpy().astype(np.float64) / 255.0
    want = (a - np.array([0.5, 0.25, 0.1])[None, :, None, None]) / np.array([0.2, 0.5, 1.0])[
        None, :, None, None
    ]
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
    # a float input is taken as already in 0-1
    np.testing.assert_allclose(pre.normalize(torch.from_numpy(a).float()).numpy(), want, atol=1e-5)
    back = Preprocess.from_dict(pre.to_dict())
    assert back == pre


def test_preprocess_load_files(tmp_path):
    rng = np.random.default_rng(2)
    same = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    big = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(same).save(tmp_path / "same.png")
    Image.fromarray(big).save(tmp_path / "big.png")
    mean, std = np.array([0.4, 0.5, 0.6]), np.array([0.2, 0.25, 0.3])
    pre = Preprocess((8, 8), 3, tuple(mean), tuple(std))
    out = pre.load_files([tmp_path / "same.png", str(tmp_path / "big.png")])
    assert tuple(out.shape) == (2, 3, 8, 8) and out.dtype == torch.float32
    want0 = (same.transpose(2, 0, 1) / 255.0 - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(out[0].numpy(), want0, atol=1e-5)
    r = np.asarray(Image.fromarray(big).resize((8, 8), Image.BILINEAR)).transpose(2, 0, 1)
    want1 = (r / 255.0 - mean[:, None, None]) / std[:, None, None]
    tol = 1.0 / 255.0 / std.min() + 1e-5
    assert np.abs(out[1].numpy() - want1).max() <= tol

    gray = Preprocess((8, 8), 1, (0.5,), (0.5,)).load_files([tmp_path / "same.png"])
    luma = same.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(gray[0, 0].numpy() - (luma / 255.0 - 0.5) / 0.5).max() <= 1.0 / 255 / 0.5 + 1e-5


def test_imageset_getitem_normalizes():
    x = torch.randint(0, 256, (3, 1, 2, 2), dtype=torch.uint8)
    s = ImageSet(x, torch.tensor([2, 0, 1]), Preprocess((2, 2), 1, (0.5,), (0.25,)))
    img, lab = s[1]
    np.testing.assert_allclose(img.numpy(), (x[1].numpy() / 255.0 - 0.5) / 0.25, atol=1e-6)
    assert int(lab) == 0
    with pytest.raises(CnnkitError):
        ImageSet(x.float(), torch.zeros(3, dtype=torch.long), s.preprocess)
    with pytest.raises(CnnkitError):
        ImageSet(x, torch.zeros(2, dtype=torch.long), s.preprocess)


# ----------------------------------------------------------------------------- Augment


def _batch(n=6, c=3, h=12, w=12, seed=0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_augment_all_zero_is_identity():
    x = _batch()
    aug = Augment()
    assert not aug.active
    out = aug(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x, rtol=0, atol=0)


@pytest.mark.parametrize("hw", [(12, 12), (10, 16)])
def test_augment_fliplr_one_mirrors_exactly(hw):
    x = _batch(h=hw[0], w=hw[1])
    out = Augment(fliplr=1.0)(x, torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, torch.flip(x, dims=[3]), rtol=0, atol=1e-5)


def test_augment_fliplr_half_mirrors_some_images():
    x = _batch(n=64, h=6, w=6)
    out = Augment(fliplr=0.5)(x, torch.Generator().manual_seed(2))
    flipped = torch.flip(x, dims=[3])
    same = (out - x).abs().amax(dim=(1, 2, 3)) < 1e-5
    mirr = (out - flipped).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert bool((same | mirr).all())
    assert 10 < int(mirr.sum()) < 54


def test_augment_same_seed_same_output_and_per_image_parameters():
    aug = Augment(degrees=20, translate=0.1, scale=0.1, fliplr=0.5)
    one = _batch(n=1, seed=3)
    x = one.repeat(8, 1, 1, 1)  # the same image 8 times
    a = aug(x, torch.Generator().manual_seed(11))
    b = aug(x, torch.Generator().manual_seed(11))
    c = aug(x, torch.Generator().manual_seed(12))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    for i in range(8):
        for j in range(i + 1, 8):
            assert (a[i] - a[j]).abs().max() > 1e-3, f"images {i} and {j} got the same transform"


def _coord_batch(n: int, h: int, w: int) -> torch.Tensor:
    """Channels: x pixel coordinate, y pixel coordinate, ones (linear, so bilinear is exact)."""
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    img = torch.stack([xx, yy, torch.ones(h, w, dtype=torch.float64)])
    return img[None].repeat(n, 1, 1, 1).float()


def _fit_maps(out: torch.Tensor):
    """For each image, the affine map output pixel -> sampled input pixel, by least squares.

    Only output pixels whose sample falls wholly inside the image are used (ones channel == 1).
    Returns a list of (A (2x2), t (2,)) with input = A @ output + t in pixel units.
    """
    n, _, h, w = out.shape
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    maps = []
    for i in range(n):
        o = out[i].double().numpy()
        m = np.abs(o[2] - 1) < 1e-5
        assert m.sum() > 20, "too few interior pixels to fit"
        design = np.stack([xx[m], yy[m], np.ones(m.sum())], 1)
        sol, *_ = np.linalg.lstsq(design, np.stack([o[0][m], o[1][m]], 1), rcond=None)
        fit = design @ sol
        assert np.abs(fit - np.stack([o[0][m], o[1][m]], 1)).max() < 1e-3, "not an affine map"
        maps.append((sol[:2].T, sol[2]))
    return maps


@pytest.mark.parametrize("hw", [(16, 16), (12, 20), (20, 12)])
def test_augment_rotation_is_rigid_in_pixels(hw):
    """Rotation turns the picture, also when it is not square: no shear, no stretch."""
    h, w = hw
    deg = 30.0
    out = Augment(degrees=deg)(_coord_batch(8, h, w), torch.Generator().manual_seed(4))
    angles = []
    cx, cy = (w - 1) / 2, (h - 1) / 2
    for A, t in _fit_maps(out):
        np.testing.assert_allclose(A @ A.T, np.eye(2), atol=1e-3)  # orthonormal
        assert np.linalg.det(A) > 0  # a rotation, not a mirror
        # the centre stays put
        np.testing.assert_allclose(A @ np.array([cx, cy]) + t, [cx, cy], atol=1e-3)
        angles.append(np.degrees(np.arctan2(A[1, 0], A[0, 0])))
    angles = np.array(angles)
    assert np.all(np.abs(angles) <= deg + 1e-3)
    assert np.ptp(angles) > 5  # different images, different angles


@pytest.mark.parametrize("hw", [(16, 16), (12, 20)])
def test_augment_scale_and_translate_in_pixels(hw):
    h, w = hw
    s, tr = 0.2, 0.1
    out = Augment(scale=s)(_coord_batch(8, h, w), torch.Generator().manual_seed(5))
    cx, cy = (w - 1) / 2, (h - 1) / 2
    zooms = []
    for A, t in _fit_maps(out):
        k = A[0, 0]
        np.testing.assert_allclose(A, k * np.eye(2), atol=1e-4)  # isotropic, no rotation
        assert 1 / (1 + s) - 1e-4 <= k <= 1 / (1 - s) + 1e-4
        np.testing.assert_allclose(A @ np.array([cx, cy]) + t, [cx, cy], atol=1e-3)
        zooms.append(k)
    assert np.ptp(zooms) > 0.02

    # translation: sampled input = output + shift, shift within translate * size
    big = _coord_batch(8, h * 2, w * 2)
    out = Augment(translate=tr)(big, torch.Generator().manual_seed(6))
    shifts = []
    for A, t in _fit_maps(out):
        np.testing.assert_allclose(A, np.eye(2), atol=1e-4)
        assert abs(t[0]) <= tr * 2 * w + 1e-3 and abs(t[1]) <= tr * 2 * h + 1e-3
        shifts.append(t)
    assert np.ptp(np.array(shifts)[:, 0]) > 0.5 and np.ptp(np.array(shifts)[:, 1]) > 0.5


def test_augment_rejects_bad_parameters():
    for kw in (
        {"degrees": -1},
        {"translate": 1.5},
        {"scale": 1.0},
        {"fliplr": 2},
        {"fliplr": True},
    ):
        with pytest.raises(CnnkitError):
            Augment(**kw)


# ------------------------------------------------------------- epoch_order / TensorBatches


def _indexed_set(n=23, c=1, h=3, w=4) -> ImageSet:
    """Image i holds i in pixel (0, 0) of every channel and random content elsewhere."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)
    x[:, :, 0, 0] = torch.arange(n, dtype=torch.uint8)[:, None]
    mean = tuple(0.3 + 0.1 * k for k in range(c))
    std = tuple(0.2 + 0.05 * k for k in range(c))
    return ImageSet(x, torch.arange(n) % 3, Preprocess((h, w), c, mean, std), "train")


def _decode_idx(xb: torch.Tensor, s: ImageSet) -> np.ndarray:
    m, sd = s.preprocess.mean[0], s.preprocess.std[0]
    return np.rint((xb[:, 0, 0, 0].double().numpy() * sd + m) * 255).astype(int)


def test_epoch_order_is_a_seeded_permutation():
    a = epoch_order(50, 3, 0)
    assert sorted(a.tolist()) == list(range(50))
    assert torch.equal(a, epoch_order(50, 3, 0))
    assert not torch.equal(a, epoch_order(50, 3, 1))
    assert not torch.equal(a, epoch_order(50, 4, 0))
    assert torch.equal(epoch_order(50, 3, 0, shuffle=False), torch.arange(50))


def test_tensor_batches_values_order_and_coverage():
    s = _indexed_set(c=2)
    tb = TensorBatches(s, 5, shuffle=True, seed=3)
    assert len(tb) == 5
    batches = list(tb.epoch(0))
    assert [len(b[0]) for b in batches] == [5, 5, 5, 5, 3]
    idx = np.concatenate([_decode_idx(x, s) for x, _ in batches])
    assert sorted(idx.tolist()) == list(range(23))  # every image once
    np.testing.assert_array_equal(idx, epoch_order(23, 3, 0).numpy())
    mean = np.array(s.preprocess.mean)[:, None, None]
    std = np.array(s.preprocess.std)[:, None, None]
    for x, y in batches:
        ids = _decode_idx(x, s)
        want = (s.images[ids].numpy() / 255.0 - mean) / std
        np.testing.assert_allclose(x.numpy(), want, atol=1e-5)
        np.testing.assert_array_equal(y.numpy(), ids % 3)
        assert x.dtype == torch.float32


def test_tensor_batches_epochs_and_seeds():
    s = _indexed_set()
    tb = TensorBatches(s, 4, shuffle=True, seed=1)

    def order(t, e):
        return np.concatenate([_decode_idx(x, s) for x, _ in t.epoch(e)])

    e0, e0b, e1 = order(tb, 0), order(tb, 0), order(tb, 1)
    np.testing.assert_array_equal(e0, e0b)
    assert not np.array_equal(e0, e1)
    assert sorted(e1.tolist()) == list(range(23))
    other = order(TensorBatches(s, 4, shuffle=True, seed=2), 0)
    assert not np.array_equal(e0, other)
    np.testing.assert_array_equal(order(TensorBatches(s, 4, shuffle=False), 5), np.arange(23))


@pytest.mark.parametrize("start", [0, 1, 3, 5, 6])
def test_tensor_batches_start_resumes_same_epoch(start):
    s = _indexed_set()
    tb = TensorBatches(s, 4, shuffle=True, seed=9)
    full = list(tb.epoch(2))
    rest = list(tb.epoch(2, start=start))
    assert len(full) == 6 and len(rest) == 6 - start
    for (xa, ya), (xb, yb) in zip(full[start:], rest):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_tensor_batches_drop_last():
    s = _indexed_set()
    tb = TensorBatches(s, 5, shuffle=True, seed=0, drop_last=True)
    assert len(tb) == 4
    batches = list(tb.epoch(0))
    assert [len(x) for x, _ in batches] == [5, 5, 5, 5]
    idx = np.concatenate([_decode_idx(x, s) for x, _ in batches])
    assert len(set(idx.tolist())) == 20


def test_tensor_batches_with_augment():
    s = _indexed_set(n=10, c=3, h=6, w=6)
    mean = np.array(s.preprocess.mean)[:, None, None]
    std = np.array(s.preprocess.std)[:, None, None]
    tb = TensorBatches(s, 4, shuffle=True, seed=0, augment=Augment(fliplr=1.0))
    order = epoch_order(10, 0, 0).numpy()
    got = torch.cat([x for x, _ in tb.epoch(0, generator=torch.Generator().manual_seed(0))])
    want = (torch.flip(s.images[order], dims=[3]).numpy() / 255.0 - mean) / std
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)

    rnd = TensorBatches(s, 4, shuffle=True, seed=0, augment=Augment(degrees=25, translate=0.1))
    a = [x for x, _ in rnd.epoch(0, generator=torch.Generator().manual_seed(5))]
    b = [x for x, _ in rnd.epoch(0, generator=torch.Generator().manual_seed(5))]
    c = [x for x, _ in rnd.epoch(0, generator=torch.Generator().manual_seed(6))]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not all(torch.allclose(p, q) for p, q in zip(a, c))
    plain = torch.cat([x for x, _ in TensorBatches(s, 4, shuffle=True, seed=0).epoch(0)])
    assert not torch.allclose(torch.cat(a), plain)
