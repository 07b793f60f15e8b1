"""The top-activating patches: their size is the receptive field, their place the unit's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models import create
from cnnkit.report import layer_stack, plot_top_patches, top_patches
from cnnkit.shapes import receptive_field


def lenet() -> nn.Module:
    torch.manual_seed(0)
    return create("lenet5")


def images(n: int = 20) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(n, 1, 32, 32)


def test_patch_size_is_the_receptive_field_of_shapes():
    model, x = lenet(), images()
    # LeNet-5 written out by hand: conv 5x5, pool 2/2, conv 5x5, pool 2/2 -> 16x16
    by_hand = {
        "features.0": [(5, 1)],
        "features.2": [(5, 1), (2, 2)],
        "features.3": [(5, 1), (2, 2), (5, 1)],
        "features.5": [(5, 1), (2, 2), (5, 1), (2, 2)],
    }
    for layer, stack in by_hand.items():
        r = receptive_field(stack).r
        top = top_patches(model, x, layer, channel=1, k=4)
        assert top.patches.shape == (4, 1, r, r)
        assert top.field.r == r
    assert [receptive_field(s).r for s in by_hand.values()] == [5, 6, 14, 16]


def test_patches_are_what_the_units_see():
    model, x = lenet(), images()
    conv = model.features[0]
    top = top_patches(model, x, "features.0", channel=3, k=5)
    maps = conv(x).detach()[:, 3]  # (N, 6, 28, 28) -> (N, 28, 28)
    assert torch.allclose(top.scores, maps.reshape(-1).topk(5).values)
    for patch, score, (i, y, xx) in zip(top.patches, top.scores, top.where):
        assert torch.equal(patch, x[i, :, y : y + 5, xx : xx + 5])  # stride 1, no padding
        assert torch.allclose((conv.weight[3] * patch).sum() + conv.bias[3], score, atol=1e-5)
    # after ReLU and 2x2 max pooling (r = 6): the patch alone reproduces the activation
    top = top_patches(model, x, "features.2", channel=3, k=3)
    for patch, score in zip(top.patches, top.scores):
        z = F.relu(conv(patch.unsqueeze(0)))[0, 3]  # (1, 1, 6, 6) -> (2, 2)
        assert torch.allclose(z.max(), score, atol=1e-5)


def test_a_field_that_leaves_the_image_is_zero_padded():
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, bias=False))
    nn.init.constant_(net[0].weight, 1.0)
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 0, 0] = 5.0  # only the top-left pixel is lit
    x[0, 0, 0, 1] = 1.0
    same = nn.Sequential(nn.Conv2d(1, 1, 3, padding="same", bias=False))
    assert layer_stack(same, "0") == layer_stack(net, "0") == [(3, 1, 1, 1)]
    top = top_patches(net, x, "0", k=1)
    assert top.where == [(0, 0, 0)]  # unit (0, 0) sees the padding, the two lit pixels
    want = torch.zeros(1, 3, 3)
    want[0, 1, 1], want[0, 1, 2] = 5.0, 1.0
    assert torch.equal(top.patches[0], want)
    fig = plot_top_patches(top)
    assert "3x3 receptive field" in fig.texts[0].get_text()


def test_branching_models_and_mistakes():
    with pytest.raises(CnnkitError, match="a block with its own paths"):
        layer_stack(create("resnet18", num_classes=3), "layer2")
    assert layer_stack(create("resnet18", num_classes=3), "maxpool") == [
        (7, 2, 3, 1),
        (3, 2, 1, 1),
    ]
    with pytest.raises(CnnkitError, match="has 6 channels, channel=6"):
        top_patches(lenet(), images(2), "features.0", channel=6)
    with pytest.raises(CnnkitError, match="not feature maps"):
        top_patches(lenet(), images(2), "classifier.0")


def test_colour_patches_are_drawn_in_colour():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2))
    top = top_patches(net, torch.rand(6, 3, 16, 16), "1", channel=2, k=3)
    assert top.patches.shape == (3, 3, 4, 4)  # r = 3 + 1 = 4
    fig = plot_top_patches(top)
    shown = torch.as_tensor(fig.axes[0].images[0].get_array())
    p = top.patches[0]
    assert torch.allclose(shown, ((p - p.min()) / (p.max() - p.min())).permute(1, 2, 0), atol=1e-6)
