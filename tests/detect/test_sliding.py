"""Sliding windows done convolutionally (OverFeat): the same scores as crop by crop, less work."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from torch import nn

from cnnkit.detect.sliding import (
    effective_stride,
    fc_to_conv,
    sliding_windows_conv,
    sliding_windows_naive,
    window_grid,
)
from cnnkit.errors import CnnkitError
from cnnkit.inspect import summary
from cnnkit.models import create


def course_net(seed: int = 0) -> nn.Sequential:
    """The course's 14x14x3 classifier: conv 5x5x16 -> max-pool 2 -> FC 400 -> FC 400 -> FC 4."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, kernel_size=5),  # 14x14x3 -> 10x10x16
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=2, stride=2),  # -> 5x5x16
        nn.Flatten(),  # (B, 16, 5, 5) -> (B, 400)
        nn.Linear(400, 400),
        nn.ReLU(),
        nn.Linear(400, 400),
        nn.ReLU(),
        nn.Linear(400, 4),
        nn.Softmax(dim=1),
    ).eval()


def image(n_C: int, n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n_C, n, n, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- the course's network


@pytest.mark.parametrize(("n", "grid"), [(14, (1, 1)), (16, (2, 2)), (28, (8, 8))])
def test_course_network_conv_equals_crop_by_crop(n, grid):
    net = course_net()
    conv = fc_to_conv(net, (14, 14, 3))
    assert effective_stride(net) == effective_stride(conv) == 2
    assert window_grid(n, 14, 2) == grid
    img = image(3, n)
    fast = sliding_windows_conv(conv, img)
    slow = sliding_windows_naive(net, img, 14, 2)
    assert fast.shape == slow.shape == (*grid, 4)
    assert torch.allclose(fast, slow, atol=1e-5)
    assert torch.allclose(fast.sum(-1), torch.ones(grid))  # a softmax per window
    # window (i, j) is the crop whose top-left corner is (2i, 2j)
    i, j = grid[0] - 1, grid[1] - 1
    crop = img[:, 2 * i : 2 * i + 14, 2 * j : 2 * j + 14]
    with torch.no_grad():
        assert torch.allclose(fast[i, j], net(crop[None])[0], atol=1e-5)
    # the default stride of the naive version is the effective stride
    assert torch.equal(sliding_windows_naive(net, img, 14), slow)


def test_course_network_layers_and_weights_copied_exactly():
    net = course_net().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    conv = fc_to_conv(net, (14, 14, 3))
    types = [type(m) for m in conv]
    assert types == [
        nn.Conv2d,
        nn.ReLU,
        nn.MaxPool2d,
        nn.Conv2d,
        nn.ReLU,
        nn.Conv2d,
        nn.ReLU,
        nn.Conv2d,
        nn.Softmax,
    ]
    fc1, fc2, fc3 = conv[3], conv[5], conv[7]
    assert (fc1.in_channels, fc1.out_channels, fc1.kernel_size) == (16, 400, (5, 5))
    assert fc2.kernel_size == fc3.kernel_size == (1, 1)
    # (400, 400) -> (400, 16, 5, 5): PyTorch flattens C, H, W
    assert torch.equal(fc1.weight, net[4].weight.reshape(400, 16, 5, 5))
    assert torch.equal(fc1.weight[7, 3, 2, 4], net[4].weight[7, 3 * 25 + 2 * 5 + 4])
    assert torch.equal(fc3.weight[:, :, 0, 0], net[8].weight)
    assert torch.equal(fc1.bias, net[4].bias)
    assert torch.equal(conv[0].weight, net[0].weight)
    assert conv[0].weight is not net[0].weight  # a copy
    # the original is untouched, still in training mode; the result is in eval mode
    assert net.training and not conv.training
    assert isinstance(net[4], nn.Linear) and isinstance(net[3], nn.Flatten)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


def _conv_macs(n_H: int, n_W: int, n_C: int, f: int, n_C_prev: int) -> int:
    """The course's count: one MAC per weight use, n_H * n_W * n_C * f * f * n_C_prev."""
    return n_H * n_W * n_C * f * f * n_C_prev


def test_course_network_macs_by_hand_and_from_summary():
    net = course_net()
    conv = fc_to_conv(net, (14, 14, 3))
    # one 14x14x3 window: conv 10x10x16, pool 5x5x16, FC 400, FC 400, FC 4
    per_window = _conv_macs(10, 10, 16, 5, 3) + 400 * 400 + 400 * 400 + 400 * 4
    assert per_window == 120_000 + 160_000 + 160_000 + 1_600 == 441_600
    assert summary(net, (14, 14, 3)).macs == per_window
    # 16x16x3: conv 12x12x16, pool 6x6x16, conv 5x5 -> 2x2x400, 1x1 -> 2x2x400, 1x1 -> 2x2x4
    whole_16 = (
        _conv_macs(12, 12, 16, 5, 3)
        + _conv_macs(2, 2, 400, 5, 16)
        + _conv_macs(2, 2, 400, 1, 400)
        + _conv_macs(2, 2, 4, 1, 400)
    )
    assert whole_16 == 172_800 + 640_000 + 640_000 + 6_400 == 1_459_200
    assert summary(conv, (16, 16, 3)).macs == whole_16
    assert Fraction(whole_16, 4 * per_window) == Fraction(1_459_200, 1_766_400)
    # 28x28x3: conv 24x24x16, pool 12x12x16, conv 5x5 -> 8x8x400, 1x1, 1x1 -> 8x8x4
    whole_28 = (
        _conv_macs(24, 24, 16, 5, 3)
        + _conv_macs(8, 8, 400, 5, 16)
        + _conv_macs(8, 8, 400, 1, 400)
        + _conv_macs(8, 8, 4, 1, 400)
    )
    assert whole_28 == 21_273_600
    assert summary(conv, (28, 28, 3)).macs == whole_28
    assert Fraction(whole_28, 64 * per_window) == Fraction(21_273_600, 28_262_400)
    assert whole_28 < 64 * per_window


# ---------------------------------------------------------------- cnnkit's LeNet-5


@pytest.mark.parametrize("kw", [{}, {"activation": "tanh", "pool": "avg"}])
def test_lenet5_on_a_48x48_image(kw):
    torch.manual_seed(0)
    model = create("lenet5", num_classes=10, in_channels=1, **kw)
    conv = fc_to_conv(model, (32, 32, 1))
    assert model.training  # untouched
    assert effective_stride(model) == effective_stride(conv) == 4  # its two pools of stride 2
    assert window_grid((48, 48), 32, 4) == (5, 5)  # floor((48 - 32)/4) + 1
    img = image(1, 48)
    fast = sliding_windows_conv(conv, img)
    slow = sliding_windows_naive(model, img, 32, effective_stride(model))
    assert fast.shape == slow.shape == (5, 5, 10)
    assert torch.allclose(fast, slow, atol=1e-5)
    assert model.training  # the naive version restores the mode
    # features 44 -> 22 -> 18 -> 9, then FC 120 as 5x5x16 filters -> 5x5x120
    assert conv[6].kernel_size == (5, 5) and conv[6].out_channels == 120
    # less work than 25 crops: 25 * 416,520 MACs by the course's arithmetic
    per_window = (
        _conv_macs(28, 28, 6, 5, 1) + _conv_macs(10, 10, 16, 5, 6) + 400 * 120 + 120 * 84 + 84 * 10
    )
    assert per_window == summary(model, (32, 32, 1)).macs == 416_520
    whole = (
        _conv_macs(44, 44, 6, 5, 1)
        + _conv_macs(18, 18, 16, 5, 6)
        + _conv_macs(5, 5, 120, 5, 16)
        + _conv_macs(5, 5, 84, 1, 120)
        + _conv_macs(5, 5, 10, 1, 84)
    )
    assert summary(conv, (48, 48, 1)).macs == whole < 25 * per_window


# ---------------------------------------------------------------- other structures


def test_nested_sequential_dropout_batchnorm_and_log_softmax():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU()),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Sequential(nn.Linear(4 * 3 * 3, 8), nn.BatchNorm1d(8), nn.PReLU(8)),
        nn.Linear(8, 3),
        nn.LogSoftmax(dim=-1),
    )
    with torch.no_grad():  # non-trivial running statistics
        net[4][1].running_mean.uniform_(-1, 1)
        net[4][1].running_var.uniform_(0.5, 2)
    conv = fc_to_conv(net, (8, 8, 2))
    assert isinstance(conv[-1], nn.LogSoftmax) and conv[-1].dim == 1
    assert any(isinstance(m, nn.BatchNorm2d) and m.num_features == 8 for m in conv)
    img = image(2, 15)
    fast = sliding_windows_conv(conv, img)
    slow = sliding_windows_naive(net, img, 8)
    assert fast.shape == slow.shape == (*window_grid(15, 8, 2), 3) == (4, 4, 3)
    assert torch.allclose(fast, slow, atol=1e-5)


def test_adaptive_pools_identity_and_global():
    torch.manual_seed(0)
    identity = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 2)
    )
    conv = fc_to_conv(identity, (6, 6, 1))
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in conv)
    img = image(1, 11)
    assert torch.allclose(
        sliding_windows_conv(conv, img), sliding_windows_naive(identity, img, 6), atol=1e-5
    )
    pooled = nn.Sequential(
        nn.Conv2d(1, 3, 3, stride=2), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(3, 2)
    )
    conv = fc_to_conv(pooled, (9, 9, 1))
    assert effective_stride(conv) == effective_stride(pooled) == 2
    fast = sliding_windows_conv(conv, img)
    assert fast.shape == (2, 2, 2)
    assert torch.allclose(fast, sliding_windows_naive(pooled, img, 9), atol=1e-5)


def test_already_convolutional_classifier_is_kept():
    net = nn.Sequential(nn.Conv2d(1, 5, 4), nn.ReLU(), nn.Conv2d(5, 2, 3)).eval()
    conv = fc_to_conv(net, (6, 6, 1))
    img = image(1, 10)
    assert torch.allclose(
        sliding_windows_conv(conv, img), sliding_windows_naive(net, img, 6), atol=1e-5
    )


# ---------------------------------------------------------------- grid and errors


def test_window_grid_formula():
    assert window_grid(16, 14, 2) == (2, 2)
    assert window_grid(28, 14, 2) == (8, 8)
    assert window_grid((29, 20), (14, 10), (2, 3)) == (8, 4)  # floor(15/2)+1, floor(10/3)+1
    with pytest.raises(CnnkitError, match="does not fit"):
        window_grid(10, 14, 2)
    with pytest.raises(CnnkitError, match="stride"):
        window_grid(16, 14, 0)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(x + self.conv(x)))


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


@pytest.mark.parametrize(
    ("model", "size", "match"),
    [
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(2, 2)), (4, 4, 1), "no nn.Flatten"),
        (nn.Sequential(nn.Linear(16, 2)), (4, 4, 1), "no nn.Flatten"),
        (nn.Sequential(nn.Flatten(), Head()), (4, 4, 1), "not an nn.Sequential"),
        (
            nn.Sequential(nn.Flatten(), nn.LayerNorm(16), nn.Linear(16, 2)),
            (4, 4, 1),
            "LayerNorm",
        ),
        (nn.Sequential(nn.Flatten(start_dim=2), nn.Linear(4, 2)), (4, 4, 1), "start_dim=1"),
        (
            nn.Sequential(nn.Flatten(), nn.Linear(16, 2), nn.Softmax(dim=0)),
            (4, 4, 1),
            "dim=1",
        ),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()), (4, 4, 1), "ends in an nn.Flatten"),
        (nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), (5, 5, 1), "cannot take"),
        (nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), (4, 4), "three positive ints"),
        (Residual(), (4, 4, 1), "registration order"),
    ],
)
def test_unconvertible_structures_raise(model, size, match):
    with pytest.raises(CnnkitError, match=match):
        fc_to_conv(model, size)


def test_lenet5_wrong_window_raises():
    with pytest.raises(CnnkitError, match=r"built for \(32x32x1\)"):
        fc_to_conv(create("lenet5"), (28, 28, 1))


def test_sliding_errors():
    net = course_net()
    conv = fc_to_conv(net, (14, 14, 3))
    with pytest.raises(CnnkitError, match="does not fit"):
        sliding_windows_conv(conv, image(3, 12))
    with pytest.raises(CnnkitError, match="batch of one"):
        sliding_windows_conv(conv, torch.zeros(2, 3, 16, 16))
    with pytest.raises(CnnkitError, match="fc_to_conv"):
        sliding_windows_conv(nn.Sequential(nn.Flatten()), image(3, 16))
    with pytest.raises(CnnkitError, match="does not fit"):
        sliding_windows_naive(net, image(3, 12), 14)
    with pytest.raises(CnnkitError, match="stride 2x1"):
        effective_stride(nn.Conv2d(1, 1, 3, stride=(2, 1)))
