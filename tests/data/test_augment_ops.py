"""Every augmentation op of cnnkit.data.augment: what it does, shape/dtype, seeding, RNG."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F2
from torchvision.transforms import InterpolationMode

from cnnkit.data import ImageSet, Preprocess
from cnnkit.data.augment import Augment, elastic_sigma, fit_pca, gaussian_blur, preview_grid
from cnnkit.errors import CnnkitError
from cnnkit.train.config import AUG_OPS, AUG_PRESETS, TrainConfig

BILINEAR = InterpolationMode.BILINEAR
EIGVALS = (0.04, 0.01, 0.002)
EIGVECS = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(n=6, c=3, h=12, w=16, seed=0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=_g(seed))


def _dot(n_H: int, n_W: int, row: int, col: int) -> torch.Tensor:
    """One bright pixel on black, ``(1, 1, n_H, n_W)``."""
    x = torch.zeros(1, 1, n_H, n_W)
    x[0, 0, row, col] = 1.0
    return x


def _peak(img: torch.Tensor) -> tuple[float, float]:
    """Intensity-weighted centre ``(row, col)`` of a 2-D image."""
    h, w = img.shape
    m = img.clamp_min(0)
    rows = torch.arange(h, dtype=torch.float32)[:, None]
    cols = torch.arange(w, dtype=torch.float32)[None, :]
    s = m.sum()
    return float((m * rows).sum() / s), float((m * cols).sum() / s)


# one instance per op, for the generic properties (shape, dtype, seeding, RNG)
OPS = {
    "fliplr": Augment(fliplr=0.5),
    "degrees": Augment(degrees=30),
    "translate": Augment(translate=0.2),
    "scale": Augment(scale=0.2),
    "shear": Augment(shear=20),
    "crop": Augment(crop=0.25),
    "resized_crop": Augment(resized_crop=0.3),
    "elastic": Augment(elastic=2.0),
    "color_shift": Augment(color_shift=0.2),
    "pca_color": Augment(pca_color=0.5, pca_eigvals=EIGVALS, pca_eigvecs=EIGVECS),
    "erase": Augment(erase=0.7),
}


def test_every_op_of_the_config_has_a_test_instance():
    assert set(OPS) == set(AUG_OPS)


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_op_keeps_shape_dtype_and_is_seeded(name, dtype):
    aug = OPS[name]
    assert aug.active
    x = _batch(n=8, h=12, w=16).to(dtype)
    before = torch.random.get_rng_state()
    a = aug(x, _g(1))
    assert torch.equal(torch.random.get_rng_state(), before), "the global RNG was used"
    assert a.shape == x.shape and a.dtype == dtype
    assert torch.equal(a, aug(x, _g(1)))  # same seed, same images
    assert not torch.equal(a, aug(x, _g(2)))  # another seed, others
    assert not torch.equal(a, x)
    assert float(a.min()) >= 0 and float(a.max()) <= 1


def test_all_ops_at_once_and_presets():
    x = _batch(n=8, h=16, w=16)
    aug = Augment(
        **{k: v.__getattribute__(k) for k, v in OPS.items()},
        pca_eigvals=EIGVALS,
        pca_eigvecs=EIGVECS,
    )
    a = aug(x, _g(5))
    assert a.shape == x.shape and torch.equal(a, aug(x, _g(5)))
    assert not AUG_PRESETS["none"] or not Augment(**AUG_PRESETS["none"]).active
    for name, preset in AUG_PRESETS.items():
        if preset["pca_color"]:
            preset = {**preset, "pca_eigvals": EIGVALS, "pca_eigvecs": EIGVECS}
        assert Augment(**preset).active == (name != "none")


def test_new_ops_off_keep_the_old_stream_bit_for_bit():
    """With the new ops at 0, the draws and the output are those of the 4-op Augment."""
    x = _batch(n=5)
    aug = Augment(degrees=20, translate=0.1, scale=0.1, fliplr=0.5)
    g = _g(3)
    u = torch.rand(5, 5, generator=g) * 2 - 1
    angle = u[:, 0] * (20 * math.pi / 180)
    zoom = 1 + u[:, 1] * 0.1
    flip = torch.where(u[:, 2] * 0.5 + 0.5 < 0.5, -1.0, 1.0)
    tx, ty = u[:, 3] * 0.2, u[:, 4] * 0.2
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    r = 12 / 16
    theta = torch.stack(
        [torch.stack([cos * flip, -sin * r, tx], 1), torch.stack([sin / r * flip, cos, ty], 1)], 1
    )
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    want = torch.nn.functional.grid_sample(x, grid, align_corners=False)
    g2 = _g(3)
    assert torch.equal(aug(x, g2), want)
    assert torch.equal(g2.get_state(), g.get_state())  # no extra draws


# ----------------------------------------------------------------------------- geometry


def test_mirror_is_an_exact_flip():
    x = _batch()
    out = Augment(fliplr=1.0)(x, _g(0))
    torch.testing.assert_close(out, x.flip(-1), rtol=0, atol=1e-6)
    torch.testing.assert_close(out[0], F2.horizontal_flip(x[0]), rtol=0, atol=1e-6)


def test_rotation_by_90_degrees_maps_a_known_pixel():
    """A pixel at (row 2, col 10) of a 16x16 image turns about the centre by 90 degrees."""
    aug = Augment(degrees=90)
    x = _dot(16, 16, 2, 10).repeat(64, 1, 1, 1)
    p = aug.params(x.shape, _g(0))
    p["theta"][:, :, :2] = torch.tensor([[0.0, -1.0], [1.0, 0.0]])  # the drawn +-90 extreme
    out = aug.apply(x, p)
    # from the centre (7.5, 7.5), y down: (x, y) = (2.5, -5.5) -> sampled at R @ q
    # out(q) = in(R q): the dot lands where R q = (2.5, -5.5), q = (-5.5, -2.5)
    assert _peak(out[0, 0]) == pytest.approx((7.5 - 2.5, 7.5 - 5.5), abs=1e-4)
    assert float(out[0, 0].max()) == pytest.approx(1.0)
    ref = F2.rotate(x[0], 90.0, interpolation=BILINEAR)  # counter-clockwise
    torch.testing.assert_close(out[0], ref, rtol=0, atol=1e-5)


def test_rotation_matches_torchvision_affine_with_the_drawn_angle():
    x = _batch(n=4)
    aug = Augment(degrees=40)
    p = aug.params(x.shape, _g(1))
    out = aug.apply(x, p)
    assert float(p["angle"].abs().max()) <= 40
    for i in range(4):
        ref = F2.affine(x[i], float(p["angle"][i]), [0, 0], 1.0, [0.0, 0.0], BILINEAR)
        torch.testing.assert_close(out[i], ref, rtol=0, atol=1e-5)


def test_shear_by_a_known_angle_maps_a_known_point():
    aug = Augment(shear=40)
    x = _dot(32, 32, 26, 16).repeat(16, 1, 1, 1)
    p = aug.params(x.shape, _g(2))
    out = aug.apply(x, p)
    cx = cy = 15.5
    for i in range(16):
        phi = math.radians(float(p["shear"][i]))
        assert abs(float(p["shear"][i])) <= 40
        # forward map from the centre, y down: (x, y) -> (x - tan(phi) y, y)
        y = 26 - cy
        want = (26.0, 16 - cx - math.tan(phi) * y + cx)
        got = _peak(out[i, 0])
        assert got[0] == pytest.approx(want[0], abs=0.5)
        assert got[1] == pytest.approx(want[1], abs=1.0)
        ref = F2.affine(x[i], 0.0, [0, 0], 1.0, [float(p["shear"][i]), 0.0], BILINEAR)
        torch.testing.assert_close(out[i], ref, rtol=0, atol=1e-5)
    assert float(p["shear"].std()) > 5  # every image its own angle


def test_crop_is_an_exact_integer_shift_of_the_padded_image():
    x = _batch(n=16, h=8, w=12)
    aug = Augment(crop=0.25)
    p = aug.params(x.shape, _g(3))
    out = aug.apply(x, p)
    pad_H, pad_W = 2, 3  # round(0.25 * 8), round(0.25 * 12)
    padded = torch.nn.functional.pad(x, (pad_W, pad_W, pad_H, pad_H))
    for i in range(16):
        dy, dx = (int(v) for v in p["crop"][i])
        assert abs(dy) <= pad_H and abs(dx) <= pad_W
        want = padded[i, :, pad_H + dy : pad_H + dy + 8, pad_W + dx : pad_W + dx + 12]
        assert torch.equal(out[i], want)
    assert len({tuple(v.tolist()) for v in p["crop"]}) > 4


def test_resized_crop_equals_resizing_a_sub_rectangle():
    x = _batch(n=12, h=16, w=20)
    aug = Augment(resized_crop=0.3)
    p = aug.params(x.shape, _g(4))
    out = aug.apply(x, p)
    areas = []
    for i in range(12):
        t, left, h, w = (int(v) for v in p["resized_crop"][i])
        assert t >= 0 and t + h <= 16 and left >= 0 and left + w <= 20
        areas.append(h * w / (16 * 20))
        ref = F2.resized_crop(x[i], t, left, h, w, [16, 20], BILINEAR, antialias=True)
        torch.testing.assert_close(out[i], ref, rtol=0, atol=1e-5)
    assert min(areas) >= 0.3 - 0.1 and max(areas) <= 1
    assert np.ptp(areas) > 0.1


def test_elastic_zero_is_identity_and_displacement_is_bounded():
    x = _batch(n=6, h=16, w=20)
    assert torch.equal(Augment(elastic=0)(x, _g(0)), x)
    aug = Augment(elastic=1.5)
    p = aug.params(x.shape, _g(5))
    out = aug.apply(x, p)
    d = p["elastic"]  # (N, n_H, n_W, 2) pixels
    assert d.shape == (6, 16, 20, 2)
    length = d.norm(dim=-1).amax(dim=(1, 2))
    torch.testing.assert_close(length, torch.full((6,), 1.5))  # largest move: alpha pixels
    for i in range(6):  # torchvision's elastic with that field (grid units span 2)
        disp = d[i : i + 1] * torch.tensor([2 / 20, 2 / 16])
        torch.testing.assert_close(out[i], F2.elastic(x[i], disp), rtol=0, atol=1e-5)
    # smooth: neighbouring displacements differ much less than alpha
    assert float((d[:, 1:] - d[:, :-1]).abs().max()) < 0.75
    assert elastic_sigma(32, 32) == 4 and elastic_sigma(8, 8) == 1 and elastic_sigma(99, 300) == 5


@pytest.mark.parametrize(("hw", "sigma"), [((32, 32), 4.0), ((8, 8), 1.0), ((12, 20), 1.5)])
def test_separable_blur_is_torchvisions_gaussian_blur(hw, sigma):
    x = torch.rand(3, 2, *hw, generator=_g(0))
    ks = int(8 * sigma + 1)
    ks += 1 - ks % 2
    ref = F2.gaussian_blur(x, [ks, ks], [sigma, sigma])
    torch.testing.assert_close(gaussian_blur(x, sigma), ref, rtol=0, atol=1e-5)


def test_elastic_after_affine_is_one_resampling():
    """With rotation too, the displacement goes through the affine map (no second blur)."""
    x = _batch(n=3, h=16, w=16)
    aug = Augment(degrees=30, elastic=1.0)
    p = aug.params(x.shape, _g(6))
    out = aug.apply(x, p)
    rot = aug.apply(x, {k: v for k, v in p.items() if k != "elastic"})
    assert (out - rot).abs().max() > 1e-3  # the warp is there
    assert (out - rot).abs().mean() < 0.2  # and it is local


# ----------------------------------------------------------------------------- colour


def test_color_shift_adds_one_constant_per_channel_within_the_bound():
    x = 0.3 + 0.4 * _batch(n=10)  # in [0.3, 0.7]: nothing is clipped
    aug = Augment(color_shift=0.25)
    out = aug(x, _g(7))
    diff = out - x  # (N, 3, n_H, n_W)
    per = diff.flatten(2)  # (N, 3, n_H, n_W) -> (N, 3, n_H*n_W)
    torch.testing.assert_close(per.amax(2), per.amin(2), rtol=0, atol=1e-6)
    assert float(diff.abs().max()) <= 0.25 + 1e-6
    assert float(per[:, :, 0].std()) > 0.05  # channels and images differ
    assert float((aug(torch.ones(2, 3, 4, 4), _g(8))).max()) <= 1.0  # clipped


def test_fit_pca_matches_numpy_eigh_of_the_pixel_covariance():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, size=(20, 1, 6, 7))
    images = np.concatenate([base, base // 2 + 40, rng.integers(0, 256, size=(20, 1, 6, 7))], 1)
    images = torch.from_numpy(images.astype(np.uint8))
    vals, vecs = fit_pca(images, chunk=7)
    px = images.permute(0, 2, 3, 1).reshape(-1, 3).double().numpy() / 255  # (N*H*W, 3)
    w, v = np.linalg.eigh(np.cov(px, rowvar=False))
    np.testing.assert_allclose(vals.numpy(), w[::-1], rtol=1e-9, atol=1e-12)
    for k in range(3):
        assert abs(float(np.dot(vecs[:, k].numpy(), v[:, 2 - k]))) == pytest.approx(1, abs=1e-9)
    assert vals[0] >= vals[1] >= vals[2] >= 0


def test_pca_color_moves_every_pixel_along_the_fitted_eigenvectors():
    x = 0.3 + 0.4 * _batch(n=8)
    aug = Augment(pca_color=0.3, pca_eigvals=EIGVALS, pca_eigvecs=EIGVECS)
    p = aug.params(x.shape, _g(9))
    out = aug.apply(x, p)
    diff = (out - x).double()
    for i in range(8):
        d = diff[i].flatten(1)  # (3, n_H, n_W) -> (3, n_H*n_W)
        torch.testing.assert_close(d.amax(1), d.amin(1), rtol=0, atol=1e-6)  # one 3-vector
        coef = EIGVECS.T @ d[:, 0].numpy()  # coordinates in the eigenbasis
        want = p["pca_alpha"][i].numpy() * np.array(EIGVALS)
        np.testing.assert_allclose(coef, want, atol=1e-6)
    assert float(p["pca_alpha"].std()) == pytest.approx(0.3, rel=0.5)


def test_colour_ops_refuse_grey_images():
    with pytest.raises(CnnkitError, match="channel"):
        Augment(color_shift=0.1)(_batch(c=1), _g(0))


# ----------------------------------------------------------------------------- erasing


def test_erase_sets_one_rectangle_to_zero_and_leaves_the_rest():
    x = 0.5 + 0.5 * _batch(n=40, h=32, w=32)  # no pixel is 0
    aug = Augment(erase=0.5)
    p = aug.params(x.shape, _g(10))
    out = aug.apply(x, p)
    n_erased = 0
    for i in range(40):
        changed = (out[i] != x[i]).any(0)  # (n_H, n_W)
        if not bool(p["erase_on"][i]):
            assert not changed.any()
            continue
        n_erased += 1
        rows, cols = torch.nonzero(changed, as_tuple=True)
        t, left = int(rows.min()), int(cols.min())
        h, w = int(rows.max()) - t + 1, int(cols.max()) - left + 1
        assert int(changed.sum()) == h * w  # a full rectangle
        assert (out[i][:, changed] == 0).all()  # filled with 0
        assert [t, left, h, w] == p["erase_box"][i].tolist()
        slack = (h + w) / 2 + 1  # rounding h and w
        assert 0.02 * 1024 - slack <= h * w <= 0.33 * 1024 + slack
        assert 0.3 / 1.5 <= w / h <= 3.3 * 1.5
        ref = F2.erase(x[i], t, left, h, w, torch.tensor(0.0))
        assert torch.equal(out[i], ref)
    assert 8 <= n_erased <= 32


# ----------------------------------------------------------------------------- config


def _set(c: int, n=12, h=6, w=6) -> ImageSet:
    images = torch.randint(0, 256, (n, c, h, w), generator=_g(0), dtype=torch.uint8)
    return ImageSet(images, torch.arange(n) % 3, Preprocess((h, w), c, (0.5,) * c, (0.25,) * c))


def test_from_config_resolves_presets_and_overrides():
    aug = Augment.from_config(TrainConfig(aug="strong", shear=5.0, erase=0.0))
    want = {**AUG_PRESETS["strong"], "shear": 5.0, "erase": 0.0}
    assert {k: getattr(aug, k) for k in AUG_OPS} == want
    assert not Augment.from_config(TrainConfig(aug="none")).active


def test_from_config_fits_pca_on_the_training_images():
    train = _set(3)
    aug = Augment.from_config(TrainConfig(aug="photo"), train)
    vals, vecs = fit_pca(train.images)
    np.testing.assert_allclose(aug.pca_eigvals, vals.numpy())
    np.testing.assert_allclose(np.array(aug.pca_eigvecs), vecs.numpy())
    assert aug.pca_color == AUG_PRESETS["photo"]["pca_color"]


def test_from_config_refuses_colour_on_grey_images_and_pca_without_images():
    with pytest.raises(CnnkitError, match="channel") as e:
        Augment.from_config(TrainConfig(aug="photo"), _set(1))
    assert str(e.value).count(". ") == 0  # one sentence
    with pytest.raises(CnnkitError, match=r"color_shift=0.1 .*channel"):
        Augment.from_config(TrainConfig(color_shift=0.1), _set(1))
    with pytest.raises(CnnkitError, match=r"pca_color.*in memory"):
        Augment.from_config(TrainConfig(pca_color=0.1), None)
    with pytest.raises(CnnkitError, match="pca_color"):
        Augment(pca_color=0.1)
    with pytest.raises(CnnkitError, match="<= 1"):
        Augment(erase=1.5)
    with pytest.raises(CnnkitError, match="shear"):
        Augment(shear=90)


# ----------------------------------------------------------------------------- preview


def test_preview_grid_is_deterministic_and_laid_out():
    images = _set(1, n=3, h=8, w=8).images
    aug = Augment.from_config(TrainConfig(aug="strong"))
    a = preview_grid(images, aug, k=4, seed=0)
    assert a.dtype == np.uint8 and a.shape == (2 + 3 * 66, 2 + 5 * 66, 3)  # 8 px x 8 + 2 gap
    assert np.array_equal(a, preview_grid(images, aug, k=4, seed=0))
    assert not np.array_equal(a, preview_grid(images, aug, k=4, seed=1))
    # column 0 is the original, upscaled 8x (nearest)
    tile = a[2 : 2 + 64 : 8, 2 : 2 + 64 : 8, 0]
    assert np.array_equal(tile, images[0, 0].numpy())


# ----------------------------------------------------------------------------- the trainer


def test_fit_uses_the_preset_and_refuses_colour_on_grey():
    from torch import nn

    from cnnkit.train import fit

    plain = {"optimizer": "sgd", "schedule": "constant", "warmup_epochs": 0, "verbose": 0}

    def run(aug: str, c: int = 3) -> torch.Tensor:
        torch.manual_seed(0)
        m = nn.Sequential(nn.Conv2d(c, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
        fit(m, _set(c), epochs=1, batch=6, lr=0.5, aug=aug, workers=0, **plain)
        return m[3].weight.detach().clone()

    none, photo = run("none"), run("photo")
    assert not torch.allclose(none, photo)
    assert torch.equal(photo, run("photo"))  # seeded
    with pytest.raises(CnnkitError, match="channel"):
        run("photo", c=1)
