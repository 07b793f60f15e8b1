"""Per-pixel cross-entropy and soft Dice against torch and an independent NumPy Dice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit.errors import CnnkitError
from cnnkit.segment.losses import cross_entropy, dice_loss, segmentation_loss


def _multiclass_case(seed: int, B: int = 2, C: int = 4, H: int = 7, W: int = 9):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, C, H, W, generator=g, dtype=torch.float64) * 2
    target = torch.randint(0, C, (B, H, W), generator=g)
    target[torch.rand(B, H, W, generator=g) < 0.2] = 255
    target[0, 0, 0] = 255
    return logits, target


def _np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _np_sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _np_dice(p: np.ndarray, y: np.ndarray, keep: np.ndarray, smooth: float = 1.0) -> float:
    """``1 - mean_c (2 sum(p y) + s) / (sum p + sum y + s)``, sums over kept pixels of the batch.

    ``p``, ``y``: ``(B, K, H, W)``; ``keep``: bool ``(B, K, H, W)``.
    """
    K = p.shape[1]
    scores = []
    for c in range(K):
        pc = p[:, c][keep[:, c]]
        yc = y[:, c][keep[:, c]]
        scores.append((2 * np.sum(pc * yc) + smooth) / (np.sum(pc) + np.sum(yc) + smooth))
    return 1.0 - float(np.mean(scores))


def _np_dice_multiclass(logits: torch.Tensor, target: torch.Tensor) -> float:
    z = logits.double().numpy()
    t = target.numpy()
    C = z.shape[1]
    p = _np_softmax(z)
    keep1 = t != 255
    y = np.stack([(t == c).astype(np.float64) for c in range(C)], axis=1)
    keep = np.repeat(keep1[:, None], C, axis=1)
    return _np_dice(p, y, keep)


# ---------------------------------------------------------------- cross-entropy


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiclass_ce_equals_torch_with_ignore_index(seed):
    logits, target = _multiclass_case(seed)
    ours = cross_entropy(logits, target)
    ref = F.cross_entropy(logits, target, ignore_index=255)
    assert torch.allclose(ours, ref, atol=1e-12)
    # and by hand: mean of -log softmax at the true class over kept pixels
    z = logits.numpy()
    t = target.numpy()
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    b, i, j = np.nonzero(t != 255)
    by_hand = -logp[b, t[b, i, j], i, j].mean()
    assert abs(float(ours) - by_hand) < 1e-10


def test_ignored_pixels_get_exactly_zero_gradient():
    logits, target = _multiclass_case(5)
    logits.requires_grad_(True)
    cross_entropy(logits, target).backward()
    ignored = (target == 255).unsqueeze(1).expand_as(logits)
    assert int(ignored.sum()) > 0
    assert torch.all(logits.grad[ignored] == 0)
    kept = ~ignored
    assert float(logits.grad[kept].abs().sum()) > 0


def test_all_ignored_batch_gives_zero_and_zero_gradient():
    logits = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    target = torch.full((2, 4, 5), 255, dtype=torch.long)
    loss = cross_entropy(logits, target)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_binary_ce_equals_torch_bce_on_kept_pixels():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 1, 6, 8, generator=g, dtype=torch.float64)
    target = torch.randint(0, 2, (3, 6, 8), generator=g)
    target[torch.rand(3, 6, 8, generator=g) < 0.25] = 255
    keep = target != 255
    ref = F.binary_cross_entropy_with_logits(logits[:, 0][keep], target[keep].double())
    assert abs(float(cross_entropy(logits, target, "binary")) - float(ref)) < 1e-12
    # (B, H, W) logits are accepted too
    assert abs(float(cross_entropy(logits[:, 0], target, "binary")) - float(ref)) < 1e-12


def test_multilabel_ce_ignores_nan_targets():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64)
    target = torch.randint(0, 2, (2, 3, 5, 5), generator=g).double()
    target[torch.rand(2, 3, 5, 5, generator=g) < 0.3] = float("nan")
    keep = ~torch.isnan(target)
    ref = F.binary_cross_entropy_with_logits(logits[keep], target[keep])
    ours = cross_entropy(logits, target, "multilabel")
    assert not torch.isnan(ours)
    assert abs(float(ours) - float(ref)) < 1e-12
    # by hand: softplus(z) - y z
    z, y = logits[keep].numpy(), target[keep].numpy()
    by_hand = np.mean(np.log1p(np.exp(z)) - y * z)
    assert abs(float(ours) - by_hand) < 1e-10


# ---------------------------------------------------------------- Dice


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiclass_dice_equals_numpy_formula(seed):
    logits, target = _multiclass_case(seed)
    ours = float(dice_loss(logits, target))
    assert abs(ours - _np_dice_multiclass(logits, target)) < 1e-6


def test_multiclass_dice_absent_class_counts_as_about_one():
    # class 3 never in targets and (huge negative logits) never predicted: Dice_3 = 1/1
    B, C, H, W = 1, 4, 3, 3
    target = torch.tensor([[[0, 1, 2], [0, 1, 2], [0, 0, 255]]])
    logits = torch.full((B, C, H, W), -50.0, dtype=torch.float64)
    for c in range(3):
        logits[:, c][target == c] = 50.0
    ours = float(dice_loss(logits, target))
    assert abs(ours - _np_dice_multiclass(logits, target)) < 1e-6
    assert ours < 1e-6


def test_binary_dice_equals_numpy_formula():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 1, 6, 7, generator=g, dtype=torch.float64)
    target = torch.randint(0, 2, (2, 6, 7), generator=g)
    target[torch.rand(2, 6, 7, generator=g) < 0.2] = 255
    t = target.numpy()
    keep = (t != 255)[:, None]
    p = _np_sigmoid(logits.numpy())
    y = (t == 1).astype(np.float64)[:, None]
    ref = _np_dice(p, y, keep)  # foreground only
    assert abs(float(dice_loss(logits, target, "binary")) - ref) < 1e-6


def test_multilabel_dice_equals_numpy_formula_with_nan_ignored():
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64)
    target = torch.randint(0, 2, (2, 3, 5, 6), generator=g).double()
    target[torch.rand(2, 3, 5, 6, generator=g) < 0.3] = float("nan")
    tn = target.numpy()
    keep = ~np.isnan(tn)
    ref = _np_dice(_np_sigmoid(logits.numpy()), np.nan_to_num(tn), keep)
    ours = dice_loss(logits, target, "multilabel")
    assert not torch.isnan(ours)
    assert abs(float(ours) - ref) < 1e-6


def test_perfect_huge_logits_give_dice_loss_near_zero():
    target = torch.tensor([[[0, 1, 1, 2], [2, 2, 0, 1], [0, 0, 0, 0]]])
    logits = F.one_hot(target, 3).permute(0, 3, 1, 2).double() * 200 - 100
    # every class present: Dice_c = (2n + 1) / (2n + 1) = 1 up to exp(-200)
    assert float(dice_loss(logits, target)) < 1e-9
    binary_t = (target > 0).long()
    binary_z = (binary_t.double() * 200 - 100)[:, None]
    assert float(dice_loss(binary_z, binary_t, "binary")) < 1e-9
    wrong = -logits  # every pixel's true class gets the lowest score: p_true = 0
    # class c: sum p = pixels not of class c / 2 (two tied classes), sum(p y) = 0
    n = [6, 3, 3]
    by_hand = 1 - np.mean([1 / ((12 - k) / 2 + k + 1) for k in n])
    assert abs(float(dice_loss(wrong, target)) - by_hand) < 1e-6  # float32 inside


def test_changing_logits_at_ignored_pixels_changes_no_loss():
    logits, target = _multiclass_case(9)
    other = logits.clone()
    ign = (target == 255).unsqueeze(1).expand_as(logits)
    other[ign] = torch.randn(int(ign.sum()), dtype=torch.float64) * 100
    for fn in (dice_loss, cross_entropy):
        a, b = float(fn(logits, target)), float(fn(other, target))
        assert abs(a - b) < 1e-12, fn.__name__
    # binary mode too
    g = torch.Generator().manual_seed(10)
    z = torch.randn(2, 1, 5, 5, generator=g, dtype=torch.float64)
    t = torch.randint(0, 2, (2, 5, 5), generator=g)
    t[:, 0] = 255
    z2 = z.clone()
    z2[:, 0, 0] = 30.0
    assert abs(float(dice_loss(z, t, "binary")) - float(dice_loss(z2, t, "binary"))) < 1e-12
    assert abs(float(cross_entropy(z, t, "binary")) - float(cross_entropy(z2, t, "binary"))) < 1e-12


# ---------------------------------------------------------------- combined, errors


@pytest.mark.parametrize("w", [0.0, 0.5, 2.0])
def test_ce_plus_dice_is_ce_plus_weighted_dice(w):
    logits, target = _multiclass_case(11)
    ce = F.cross_entropy(logits, target, ignore_index=255).item()
    d = _np_dice_multiclass(logits, target)
    ours = float(segmentation_loss(logits, target, kind="ce+dice", dice_weight=w))
    assert abs(ours - (ce + w * d)) < 1e-6
    assert abs(float(segmentation_loss(logits, target, kind="ce")) - ce) < 1e-12
    assert abs(float(segmentation_loss(logits, target, kind="dice")) - d) < 1e-6


def test_unknown_kind_and_mode_raise_with_did_you_mean():
    logits, target = _multiclass_case(0)
    with pytest.raises(CnnkitError, match=r"did you mean 'ce\+dice'"):
        segmentation_loss(logits, target, kind="ce+dic")
    with pytest.raises(CnnkitError, match="did you mean 'multiclass'"):
        segmentation_loss(logits, target, mode="multiclas")
    with pytest.raises(CnnkitError, match="did you mean 'binary'"):
        dice_loss(logits, target, mode="binar")


def test_shape_mismatches_raise_cnnkit_error():
    logits = torch.randn(2, 3, 4, 5)
    with pytest.raises(CnnkitError, match="do not fit"):
        cross_entropy(logits, torch.zeros(2, 4, 6, dtype=torch.long))
    with pytest.raises(CnnkitError, match="do not fit"):
        dice_loss(logits, torch.zeros(3, 4, 5, dtype=torch.long))
    with pytest.raises(CnnkitError, match="do not fit"):
        cross_entropy(logits, torch.zeros(2, 3, 4, 4), "multilabel")
    with pytest.raises(CnnkitError, match="one logit per pixel"):
        dice_loss(logits, torch.zeros(2, 4, 5, dtype=torch.long), "binary")
    with pytest.raises(CnnkitError, match=r"\(B, K, n_H, n_W\)"):
        cross_entropy(torch.randn(2, 3), torch.zeros(2, dtype=torch.long))
