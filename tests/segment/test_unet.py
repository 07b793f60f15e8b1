"""U-Net's shapes: the paper's configuration, odd input sizes, gradients."""

from __future__ import annotations

import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.segment import UNet


def test_the_papers_unet_572_in_388_out_and_its_parameters():
    net = UNet(in_channels=1, num_classes=2, depth=4, width=64, padding="valid")
    # Ronneberger et al. 2015, Fig. 1: unpadded 3x3 convs, 2x2 up-convs, cropped skips
    assert sum(p.numel() for p in net.parameters()) == 31_030_658
    with torch.no_grad():
        y = net(torch.zeros(1, 1, 572, 572))
    assert y.shape == (1, 2, 388, 388)


@pytest.mark.parametrize("n_H, n_W", [(97, 131), (64, 64), (33, 17), (16, 100)])
@pytest.mark.parametrize("depth", [1, 3])
def test_any_size_gives_a_mask_of_its_own_size(n_H, n_W, depth):
    net = UNet(in_channels=3, num_classes=4, depth=depth, width=4).eval()
    with torch.no_grad():
        y = net(torch.rand(2, 3, n_H, n_W))
    assert y.shape == (2, 4, n_H, n_W)


def test_padding_does_not_leak_into_the_kept_pixels():
    """A 60x60 image is padded to 64x64 (depth 3: a multiple of 8) and cropped back."""
    torch.manual_seed(0)
    net = UNet(in_channels=1, num_classes=3, depth=3, width=4).eval()  # 60 -> 64 = 8 x 8
    x = torch.rand(1, 1, 60, 60)
    with torch.no_grad():
        padded = net(torch.nn.functional.pad(x, [0, 4, 0, 4]))[..., :60, :60]
        assert torch.allclose(net(x), padded, atol=1e-6)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    net = UNet(in_channels=3, num_classes=3, depth=2, width=4)
    y = net(torch.rand(2, 3, 32, 32))
    target = torch.randint(0, 3, (2, 32, 32))
    torch.nn.functional.cross_entropy(y, target).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_mistakes_are_one_sentence():
    with pytest.raises(CnnkitError, match="did you mean 'valid'"):
        UNet(padding="vaild")
    with pytest.raises(CnnkitError, match="depth must be a positive integer"):
        UNet(depth=0)
