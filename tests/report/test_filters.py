"""Filters and feature maps, checked on the course's edge-detection example."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models import create
from cnnkit.report import feature_maps, find_layer, plot_feature_maps, plot_filters

VERTICAL = torch.tensor([[1.0, 0, -1], [1, 0, -1], [1, 0, -1]])
HORIZONTAL = VERTICAL.T.contiguous()
SOBEL = torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]])


def edge_net() -> nn.Module:
    """A 3-filter conv layer set to the course's vertical and horizontal filters and Sobel."""
    net = nn.Sequential(nn.Conv2d(1, 3, 3, bias=False), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.stack([VERTICAL, HORIZONTAL, SOBEL]).unsqueeze(1))
    return net


def edge_image() -> torch.Tensor:
    """The course's 6x6 image: bright (10) left half, dark (0) right half."""
    x = torch.zeros(1, 6, 6)
    x[:, :, :3] = 10
    return x


def test_edge_filters_give_the_course_feature_maps():
    maps = feature_maps(edge_net(), edge_image().unsqueeze(0), "0")  # (1, 3, 4, 4)
    assert maps.shape == (1, 3, 4, 4)
    # the course: a 4x4 output with 30 in the two middle columns (the edge), 0 elsewhere
    assert torch.equal(maps[0, 0], torch.tensor([[0.0, 30, 30, 0]] * 4))
    assert torch.equal(maps[0, 1], torch.zeros(4, 4))  # no horizontal edge
    assert torch.equal(maps[0, 2], torch.tensor([[0.0, 40, 40, 0]] * 4))  # Sobel: 1+2+1 = 4x10
    # the dark-to-bright edge (mirrored image) gives -30, which the ReLU after it zeroes
    flipped = edge_image().flip(-1).unsqueeze(0)
    assert torch.equal(feature_maps(edge_net(), flipped, "0")[0, 0], -maps[0, 0])
    assert torch.equal(feature_maps(edge_net(), flipped, "1")[0, 0], torch.zeros(4, 4))


def test_plots_hold_the_numbers():
    net = edge_net()
    fig = plot_filters(net)  # the first convolution
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 3
    for ax, w in zip(panels, [VERTICAL, HORIZONTAL, SOBEL]):
        im = ax.images[0]
        assert torch.equal(torch.as_tensor(im.get_array().data), w)
        assert im.get_clim() == (-2.0, 2.0)  # symmetric about 0, shared by every filter
    fig = plot_feature_maps(net, edge_image(), "0")
    got = [torch.as_tensor(ax.images[0].get_array().data) for ax in fig.axes if ax.images]
    assert torch.equal(got[0], torch.tensor([[0.0, 30, 30, 0]] * 4))
    assert torch.equal(got[2], torch.tensor([[0.0, 40, 40, 0]] * 4))


def test_rgb_filters_and_a_real_model(tmp_path):
    model = create("resnet18", num_classes=3, small_input=True)
    name, conv = find_layer(model)
    assert name == "conv1" and conv.in_channels == 3
    fig = plot_filters(model, max_filters=8)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 8
    w = conv.weight.detach()[:8]
    want = ((w - w.min()) / (w.max() - w.min())).permute(0, 2, 3, 1)  # scaled together to 0..1
    got = torch.as_tensor(panels[0].images[0].get_array().data)
    assert torch.allclose(got, want[0], atol=1e-6)
    fig.savefig(tmp_path / "filters.png")
    assert (tmp_path / "filters.png").stat().st_size > 0
    maps = feature_maps(model, torch.randn(2, 3, 32, 32), "layer2")
    assert maps.shape == (2, 128, 16, 16)
    assert model.training  # restored


def test_mistakes_are_one_sentence():
    close = r"unknown layer 'featurez\.0': did you mean 'features\.0'"
    with pytest.raises(CnnkitError, match=close):
        feature_maps(create("lenet5"), torch.zeros(1, 1, 32, 32), "featurez.0")
    with pytest.raises(CnnkitError, match="not a 2D convolution"):
        plot_filters(create("lenet5"), "features.1")
    with pytest.raises(CnnkitError, match="has no convolution"):
        plot_filters(create("mlp"))
    with pytest.raises(CnnkitError, match="did not run in the forward pass"):
        feature_maps(create("googlenet", num_classes=3), torch.zeros(1, 3, 64, 64), "aux1.fc2")
    with pytest.raises(CnnkitError, match="not feature maps"):
        plot_feature_maps(create("lenet5"), torch.zeros(1, 32, 32), "classifier.0")
