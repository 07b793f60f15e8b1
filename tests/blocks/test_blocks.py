"""Tests for cnnkit.blocks: shapes, parameter counts and outputs, computed independently."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.googlenet import Inception
from torchvision.models.resnet import BasicBlock, Bottleneck

import cnnkit.blocks as blocks
from cnnkit import shapes
from cnnkit.blocks import (
    ConvBNAct,
    DepthwiseSeparableConv,
    DoubleConv,
    InceptionModule,
    InvertedResidual,
    MBConv,
    ResidualBlock,
    SqueezeExcitation,
    UNetDown,
    UNetUp,
)
from cnnkit.errors import CnnkitError

B = 2


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def assert_one_sentence(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg[-1] in ".?", msg
    # exactly one sentence end: the final character
    assert len(re.findall(r"[.?!](?:\s|$)", msg)) == 1, msg
    return msg


def randomize_bn(m: nn.Module) -> None:
    """Give every batch norm non-trivial running stats and affine parameters."""
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)


def bn_eval(x: torch.Tensor, bn: nn.Module) -> torch.Tensor:
    return F.batch_norm(
        x, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps
    )


# ---------------------------------------------------------------- ConvBNAct


@pytest.mark.parametrize(
    ("dims", "n", "f", "s", "p", "d"),
    [
        (2, 13, 3, 1, None, 1),
        (2, 13, 3, 2, None, 1),
        (2, 16, 5, 2, 0, 1),
        (2, 15, 3, 1, None, 2),
        (2, 12, 4, 1, None, 1),  # even f: p = 3//2 = 1, so the map shrinks by one
        (2, 12, 4, 1, None, 2),  # even f, d=2: p = 2*3//2 = 3 keeps 'same'
        (2, 11, 3, 1, "valid", 1),
        (2, 11, 5, 1, "same", 1),
        (1, 20, 5, 3, None, 1),
        (3, 9, 3, 2, 1, 1),
    ],
)
def test_convbnact_output_shape(dims: int, n: int, f: int, s: int, p, d: int) -> None:
    block = ConvBNAct(3, 6, f=f, s=s, p=p, d=d, dims=dims)
    if p is None:
        p_expected = d * (f - 1) // 2
    elif p == "valid":
        p_expected = 0
    elif p == "same":
        p_expected = (f - 1) // 2
    else:
        p_expected = p
    out = block(torch.randn(B, 3, *([n] * dims)))
    n_out = shapes.conv_output_size(n, f, p_expected, s, d)
    assert tuple(out.shape) == (B, 6, *([n_out] * dims))
    assert block.conv.padding == (p_expected,) * dims
    if p is None and f % 2 == 1 and s == 1:
        assert n_out == n  # 'same'


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("bn", [True, False])
def test_convbnact_params_and_bias(dims: int, bn: bool) -> None:
    block = ConvBNAct(4, 8, f=3, bn=bn, dims=dims)
    conv_type = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    assert isinstance(block.conv, conv_type)
    kernel = 3**dims
    if bn:
        assert block.conv.bias is None
        assert isinstance(block.bn, nn.modules.batchnorm._BatchNorm)
        assert n_params(block) == kernel * 4 * 8 + 2 * 8
    else:
        assert block.conv.bias is not None
        assert block.bn is None
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in block.modules())
        assert n_params(block) == (kernel * 4 + 1) * 8
    expected = shapes.conv_params(3, 4, 8, bias=not bn, dims=dims) + (
        shapes.bn_params(8) if bn else 0
    )
    assert n_params(block) == expected


def test_convbnact_groups_depthwise_params() -> None:
    block = ConvBNAct(16, 16, f=3, groups=16)
    assert n_params(block) == 9 * 16 + 2 * 16


def test_convbnact_is_torchvision_block_with_same_keys() -> None:
    ours = ConvBNAct(3, 8, f=3, s=2)
    theirs = torchvision.ops.Conv2dNormActivation(3, 8, kernel_size=3, stride=2)
    assert isinstance(ours, torchvision.ops.misc.ConvNormActivation)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    ours.eval()
    theirs.eval()
    x = torch.randn(B, 3, 10, 10)
    torch.testing.assert_close(ours(x), theirs(x))


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("relu", nn.ReLU),
        ("relu6", nn.ReLU6),
        ("silu", nn.SiLU),
        ("swish", nn.SiLU),
        ("tanh", nn.Tanh),
        ("sigmoid", nn.Sigmoid),
        ("leaky_relu", nn.LeakyReLU),
        ("gelu", nn.GELU),
        ("ReLU", nn.ReLU),
    ],
)
def test_convbnact_activation_names(name: str, cls: type) -> None:
    block = ConvBNAct(2, 3, act=name)
    assert type(block.act) is cls
    assert type(block[-1]) is cls


def test_convbnact_activation_none_and_class() -> None:
    assert ConvBNAct(2, 3, act=None).act is None
    assert len(ConvBNAct(2, 3, act=None)) == 2
    assert len(ConvBNAct(2, 3, act=None, bn=False)) == 1
    assert type(ConvBNAct(2, 3, act=nn.Hardswish).act) is nn.Hardswish
    assert type(ConvBNAct(2, 3, act=nn.ELU).act) is nn.ELU


def test_convbnact_forward_equals_conv_bn_act() -> None:
    block = ConvBNAct(3, 5, f=3, s=2, act="leaky_relu")
    randomize_bn(block)
    block.eval()
    x = torch.randn(B, 3, 11, 11)
    z = F.conv2d(x, block.conv.weight, stride=2, padding=1)
    expected = F.leaky_relu(bn_eval(z, block.bn), 0.01)
    torch.testing.assert_close(block(x), expected)


def test_convbnact_unknown_activation_suggests() -> None:
    with pytest.raises(CnnkitError) as err:
        ConvBNAct(3, 8, act="rleu")
    msg = assert_one_sentence(err)
    assert "did you mean" in msg
    assert "'relu'" in msg


def test_convbnact_bad_arguments() -> None:
    with pytest.raises(CnnkitError) as err:
        ConvBNAct(3, 8, dims=4)
    assert "dims" in assert_one_sentence(err)
    with pytest.raises(CnnkitError) as err:
        ConvBNAct(3, 8, s=0)
    assert "stride" in assert_one_sentence(err)
    with pytest.raises(CnnkitError) as err:
        ConvBNAct(6, 8, groups=4)
    assert "groups" in assert_one_sentence(err)
    with pytest.raises(CnnkitError):
        ConvBNAct(3, 8, act=42)


# ---------------------------------------------------------------- residual blocks


def basic_params(c_in: int, c_out: int) -> int:
    return 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + 2 * c_out


def bottleneck_params(c_in: int, c_out: int) -> int:
    w = c_out // 4
    return c_in * w + 2 * w + 9 * w * w + 2 * w + w * c_out + 2 * c_out


@pytest.mark.parametrize(
    ("c_in", "c_out", "s", "kind", "projection"),
    [
        (8, 8, 1, "basic", False),
        (8, 16, 1, "basic", True),
        (8, 16, 2, "basic", True),
        (8, 8, 2, "basic", True),
        (16, 16, 1, "bottleneck", False),
        (8, 32, 2, "bottleneck", True),
    ],
)
def test_residual_block_shape_and_params(
    c_in: int, c_out: int, s: int, kind: str, projection: bool
) -> None:
    block = ResidualBlock(c_in, c_out, s=s, kind=kind)
    assert isinstance(block, ResidualBlock)
    assert isinstance(block, BasicBlock if kind == "basic" else Bottleneck)
    assert block.uses_projection is projection
    out = block(torch.randn(B, c_in, 15, 15))
    n_out = shapes.conv_output_size(15, 3, 1, s)
    assert tuple(out.shape) == (B, c_out, n_out, n_out)
    main = basic_params(c_in, c_out) if kind == "basic" else bottleneck_params(c_in, c_out)
    assert n_params(block) == main + (c_in * c_out + 2 * c_out if projection else 0)


def test_residual_projection_adds_in_times_out_plus_2out() -> None:
    identity = ResidualBlock(16, 16, shortcut="identity")
    projected = ResidualBlock(16, 16, shortcut="projection")
    assert projected.uses_projection and not identity.uses_projection
    assert n_params(projected) - n_params(identity) == 16 * 16 + 2 * 16


def test_residual_basic_forward_is_relu_of_main_plus_shortcut() -> None:
    block = ResidualBlock(4, 8, s=2)
    randomize_bn(block)
    block.eval()
    x = torch.randn(B, 4, 9, 9)
    a = F.relu(bn_eval(F.conv2d(x, block.conv1.weight, stride=2, padding=1), block.bn1))
    main = bn_eval(F.conv2d(a, block.conv2.weight, padding=1), block.bn2)
    conv_s, bn_s = block.downsample
    shortcut = bn_eval(F.conv2d(x, conv_s.weight, stride=2), bn_s)
    torch.testing.assert_close(block(x), F.relu(main + shortcut))


def test_residual_identity_forward_adds_input() -> None:
    block = ResidualBlock(6, 6)
    randomize_bn(block)
    block.eval()
    x = torch.randn(B, 6, 8, 8)
    a = F.relu(bn_eval(F.conv2d(x, block.conv1.weight, padding=1), block.bn1))
    main = bn_eval(F.conv2d(a, block.conv2.weight, padding=1), block.bn2)
    torch.testing.assert_close(block(x), F.relu(main + x))


def test_residual_bottleneck_forward() -> None:
    block = ResidualBlock(8, 16, s=2, kind="bottleneck")
    randomize_bn(block)
    block.eval()
    x = torch.randn(B, 8, 8, 8)
    a = F.relu(bn_eval(F.conv2d(x, block.conv1.weight), block.bn1))
    a = F.relu(bn_eval(F.conv2d(a, block.conv2.weight, stride=2, padding=1), block.bn2))
    main = bn_eval(F.conv2d(a, block.conv3.weight), block.bn3)
    conv_s, bn_s = block.downsample
    shortcut = bn_eval(F.conv2d(x, conv_s.weight, stride=2), bn_s)
    torch.testing.assert_close(block(x), F.relu(main + shortcut))


@pytest.mark.parametrize(("c_in", "c_out", "s"), [(16, 16, 1), (8, 16, 2)])
def test_residual_basic_state_dict_matches_torchvision(c_in: int, c_out: int, s: int) -> None:
    ours = ResidualBlock(c_in, c_out, s=s, kind="basic")
    downsample = None
    if s != 1 or c_in != c_out:
        downsample = nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride=s, bias=False), nn.BatchNorm2d(c_out)
        )
    theirs = BasicBlock(c_in, c_out, s, downsample=downsample)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        assert ours.state_dict()[key].shape == value.shape
    ours.load_state_dict(theirs.state_dict(), strict=True)


def test_residual_bottleneck_state_dict_matches_torchvision() -> None:
    ours = ResidualBlock(16, 32, s=2, kind="bottleneck")
    theirs = Bottleneck(
        16, 8, 2, downsample=nn.Sequential(nn.Conv2d(16, 32, 1, 2, bias=False), nn.BatchNorm2d(32))
    )
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)


def test_residual_loads_resnet18_layer_weights() -> None:
    layer = torchvision.models.resnet18(weights=None).layer2[0]
    ours = ResidualBlock(64, 128, s=2)
    ours.load_state_dict(layer.state_dict(), strict=True)


def test_residual_identity_with_mismatched_shapes_raises() -> None:
    with pytest.raises(CnnkitError) as err:
        ResidualBlock(8, 16, shortcut="identity")
    msg = assert_one_sentence(err)
    assert "a[l]" in msg and "a[l+2]" in msg and "shortcut='projection'" in msg
    with pytest.raises(CnnkitError):
        ResidualBlock(8, 8, s=2, shortcut="identity")


def test_residual_bottleneck_not_divisible_by_4_raises() -> None:
    with pytest.raises(CnnkitError) as err:
        ResidualBlock(8, 30, kind="bottleneck")
    msg = assert_one_sentence(err)
    assert "divisible by 4" in msg


def test_residual_unknown_kind_and_shortcut() -> None:
    with pytest.raises(CnnkitError) as err:
        ResidualBlock(8, 8, kind="botleneck")
    assert "did you mean 'bottleneck'" in assert_one_sentence(err)
    with pytest.raises(CnnkitError) as err:
        ResidualBlock(8, 8, shortcut="projecton")
    assert "did you mean 'projection'" in assert_one_sentence(err)


# ---------------------------------------------------------------- inception


def inception_params(c_in: int, c1: int, r3: int, c3: int, r5: int, c5: int, pp: int, k5=5) -> int:
    b1 = c_in * c1 + 2 * c1
    b2 = c_in * r3 + 2 * r3 + 9 * r3 * c3 + 2 * c3
    b3 = c_in * r5 + 2 * r5 + k5 * k5 * r5 * c5 + 2 * c5
    b4 = c_in * pp + 2 * pp
    return b1 + b2 + b3 + b4


def test_inception_shape_and_params() -> None:
    args = (12, 4, 6, 8, 2, 3, 5)
    module = InceptionModule(*args)
    out = module(torch.randn(B, 12, 11, 11))
    assert tuple(out.shape) == (B, 4 + 8 + 3 + 5, 11, 11)
    assert module.out_channels == 20
    assert n_params(module) == inception_params(*args)
    # 12*4+8 + 12*6+12 + 9*6*8+16 + 12*2+4 + 25*2*3+6 + 12*5+10, written out
    assert n_params(module) == 56 + 84 + 448 + 28 + 156 + 70


def test_inception_5x5_branch_is_really_5x5() -> None:
    module = InceptionModule(4, 2, 2, 2, 3, 4, 2)
    conv = module.branch3[1].conv
    assert conv.kernel_size == (5, 5) and conv.padding == (2, 2)
    assert tuple(conv.weight.shape) == (4, 3, 5, 5)
    # Receptive field: a small impulse changes the 5x5 branch's output exactly on the
    # 5x5 window around it (a 3x3 would reach 1 pixel away). Large BN betas keep every
    # ReLU of the branch active, so the branch is linear around this input.
    module.eval()
    with torch.no_grad():
        for bn in (module.branch3[0].bn, module.branch3[1].bn):
            bn.bias.fill_(10.0)
        base = torch.zeros(1, 4, 9, 9)
        impulse = base.clone()
        impulse[0, :, 4, 4] = 0.1
        lo = 2 + 2  # the branch's channels in the output: after ch1x1=2 and ch3x3=2
        diff = module(impulse)[:, lo : lo + 4] - module(base)[:, lo : lo + 4]
    changed = diff.abs().sum(dim=(0, 1)) > 0
    window = torch.zeros(9, 9, dtype=torch.bool)
    window[2:7, 2:7] = True
    assert torch.equal(changed, window)


def test_inception_kernel_3_matches_torchvision() -> None:
    ours = InceptionModule(8, 4, 4, 6, 2, 3, 2, kernel_5x5=3)
    theirs = Inception(8, 4, 4, 6, 2, 3, 2)
    assert isinstance(ours, Inception)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    ours.load_state_dict(theirs.state_dict())
    ours.eval()
    theirs.eval()
    x = torch.randn(B, 8, 7, 7)
    torch.testing.assert_close(ours(x), theirs(x))
    assert n_params(ours) == inception_params(8, 4, 4, 6, 2, 3, 2, k5=3)


def test_inception_even_kernel_raises() -> None:
    with pytest.raises(CnnkitError) as err:
        InceptionModule(8, 4, 4, 6, 2, 3, 2, kernel_5x5=4)
    assert "kernel_5x5" in assert_one_sentence(err)


# ---------------------------------------------------------------- depthwise separable


def test_depthwise_separable_params() -> None:
    block = DepthwiseSeparableConv(32, 64)
    assert n_params(block) == 9 * 32 + 2 * 32 + 32 * 64 + 2 * 64
    assert n_params(block) == (
        shapes.depthwise_separable_params(3, 32, 64, bias=False)
        + shapes.bn_params(32)
        + shapes.bn_params(64)
    )
    assert block.depthwise.conv.groups == 32
    assert block.depthwise.conv.bias is None and block.pointwise.conv.bias is None
    assert block.pointwise.conv.kernel_size == (1, 1)
    assert isinstance(block.depthwise, ConvBNAct) and isinstance(block.pointwise, ConvBNAct)


@pytest.mark.parametrize(("n", "f", "s"), [(16, 3, 1), (15, 3, 2), (16, 5, 2)])
def test_depthwise_separable_shape(n: int, f: int, s: int) -> None:
    block = DepthwiseSeparableConv(4, 10, f=f, s=s, act="relu6")
    out = block(torch.randn(B, 4, n, n))
    n_out = shapes.conv_output_size(n, f, (f - 1) // 2, s)
    assert tuple(out.shape) == (B, 10, n_out, n_out)
    assert type(block.depthwise.act) is nn.ReLU6


def test_depthwise_separable_forward() -> None:
    block = DepthwiseSeparableConv(3, 5)
    randomize_bn(block)
    block.eval()
    x = torch.randn(B, 3, 8, 8)
    a = F.relu(
        bn_eval(F.conv2d(x, block.depthwise.conv.weight, padding=1, groups=3), block.depthwise.bn)
    )
    expected = F.relu(bn_eval(F.conv2d(a, block.pointwise.conv.weight), block.pointwise.bn))
    torch.testing.assert_close(block(x), expected)


# ---------------------------------------------------------------- inverted residual


def inverted_residual_params(c_in: int, c_out: int, t: int) -> int:
    h = c_in * t
    expand = c_in * h + 2 * h if t != 1 else 0
    return expand + 9 * h + 2 * h + h * c_out + 2 * c_out


@pytest.mark.parametrize(
    ("c_in", "c_out", "s", "t", "residual"),
    [(8, 8, 1, 6, True), (8, 12, 1, 6, False), (8, 8, 2, 6, False), (8, 8, 1, 1, True)],
)
def test_inverted_residual(c_in: int, c_out: int, s: int, t: int, residual: bool) -> None:
    block = InvertedResidual(c_in, c_out, s, t)
    assert isinstance(block, torchvision.models.mobilenetv2.InvertedResidual)
    assert block.use_res_connect is residual
    assert n_params(block) == inverted_residual_params(c_in, c_out, t)
    block.eval()  # keep the fresh running stats (mean 0, var 1) of the last batch norm
    x = torch.randn(B, c_in, 9, 9)
    n_out = shapes.conv_output_size(9, 3, 1, s)
    assert tuple(block(x).shape) == (B, c_out, n_out, n_out)
    # With the linear projection zeroed the main path gives exactly 0 in eval mode:
    # the output is the input when the residual is used, else all zeros.
    project = [m for m in block.conv if isinstance(m, nn.Conv2d)][-1]
    assert project.kernel_size == (1, 1)
    with torch.no_grad():
        project.weight.zero_()
        out = block(x)
    if residual:
        torch.testing.assert_close(out, x)
    else:
        assert torch.count_nonzero(out) == 0


def test_inverted_residual_bad_stride() -> None:
    with pytest.raises(CnnkitError) as err:
        InvertedResidual(8, 8, 3, 6)
    assert "1 or 2" in assert_one_sentence(err)


# ---------------------------------------------------------------- MBConv


def mbconv_params(c_in: int, c_out: int, f: int, t: int, sq: int | None) -> int:
    h = c_in * t
    expand = c_in * h + 2 * h if t != 1 else 0
    depthwise = f * f * h + 2 * h
    se = (h * sq + sq + sq * h + h) if sq else 0
    return expand + depthwise + se + h * c_out + 2 * c_out


@pytest.mark.parametrize(
    ("c_in", "c_out", "f", "s", "t"),
    [(16, 16, 3, 1, 6), (16, 24, 5, 2, 6), (3, 8, 3, 1, 6), (8, 8, 3, 1, 1)],
)
def test_mbconv_shape_and_params(c_in: int, c_out: int, f: int, s: int, t: int) -> None:
    block = MBConv(c_in, c_out, f=f, s=s, expand_ratio=t)
    assert isinstance(block, torchvision.models.efficientnet.MBConv)
    out = block(torch.randn(B, c_in, 12, 12))
    n_out = shapes.conv_output_size(12, f, (f - 1) // 2, s)
    assert tuple(out.shape) == (B, c_out, n_out, n_out)
    sq = max(1, c_in // 4)
    assert n_params(block) == mbconv_params(c_in, c_out, f, t, sq)
    se = [m for m in block.modules() if isinstance(m, SqueezeExcitation)]
    assert len(se) == 1 and se[0].fc1.out_channels == sq
    assert any(isinstance(m, nn.SiLU) for m in block.modules())
    assert block.use_res_connect is (s == 1 and c_in == c_out)


def test_mbconv_without_se() -> None:
    block = MBConv(8, 8, se_ratio=0)
    assert not any(isinstance(m, SqueezeExcitation) for m in block.modules())
    assert n_params(block) == mbconv_params(8, 8, 3, 6, None)


def test_mbconv_residual_only_when_shapes_match() -> None:
    for c_out, s, residual in [(8, 1, True), (12, 1, False), (8, 2, False)]:
        block = MBConv(8, c_out, s=s).eval()
        x = torch.randn(B, 8, 8, 8)
        with torch.no_grad():
            block.block[-1][0].weight.zero_()  # the linear 1x1 projection
            out = block(x)
        if residual:
            torch.testing.assert_close(out, x)
        else:
            assert torch.count_nonzero(out) == 0


def test_mbconv_bad_arguments() -> None:
    with pytest.raises(CnnkitError):
        MBConv(8, 8, s=3)
    with pytest.raises(CnnkitError):
        MBConv(8, 8, stochastic_depth_prob=1.5)
    with pytest.raises(CnnkitError):
        MBConv(8, 8, se_ratio=2.0)


def test_mbconv_stochastic_depth() -> None:
    x = torch.randn(B, 8, 6, 6)
    always_dropped = MBConv(8, 8, stochastic_depth_prob=1.0)
    randomize_bn(always_dropped)
    # training: the whole residual branch is dropped, only the shortcut remains
    torch.testing.assert_close(always_dropped.train()(x), x)
    # test time: stochastic depth is the identity, the branch is always added
    always_dropped.eval()
    with torch.no_grad():
        expected = always_dropped.block(x) + x
    torch.testing.assert_close(always_dropped(x), expected)


def test_squeeze_excitation_is_torchvisions() -> None:
    assert SqueezeExcitation is torchvision.ops.SqueezeExcitation


# ---------------------------------------------------------------- U-Net


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_double_conv(dims: int) -> None:
    block = DoubleConv(3, 6, dims=dims)
    n = 8 if dims == 3 else 13
    out = block(torch.randn(B, 3, *([n] * dims)))
    assert tuple(out.shape) == (B, 6, *([n] * dims))
    k = 3**dims
    assert n_params(block) == k * 3 * 6 + 2 * 6 + k * 6 * 6 + 2 * 6


@pytest.mark.parametrize("n", [24, 25])
def test_unet_down(n: int) -> None:
    down = UNetDown(3, 8)
    pooled, skip = down(torch.randn(B, 3, n, n))
    assert tuple(skip.shape) == (B, 8, n, n)
    m = shapes.pool_output_size(n, 2, 2)
    assert tuple(pooled.shape) == (B, 8, m, m)
    torch.testing.assert_close(pooled, F.max_pool2d(skip, 2, 2))
    assert n_params(down) == n_params(DoubleConv(3, 8))


def test_unet_up_even_sizes() -> None:
    up = UNetUp(16, 8)
    x = torch.randn(B, 16, 6, 6)
    skip = torch.randn(B, 8, 12, 12)
    n_up = shapes.conv_transpose_output_size(6, 2, 0, 2)
    assert n_up == 12
    assert tuple(up.up(x).shape) == (B, 8, n_up, n_up)
    assert tuple(up(x, skip).shape) == (B, 8, 12, 12)
    assert n_params(up) == 16 * 8 * 4 + 8 + n_params(DoubleConv(16, 8))


def test_unet_up_forward_concatenates_skip_then_upsampled() -> None:
    up = UNetUp(6, 4, skip_channels=3)
    randomize_bn(up)
    up.eval()
    x = torch.randn(B, 6, 5, 5)
    skip = torch.randn(B, 3, 10, 10)
    upsampled = F.conv_transpose2d(x, up.up.weight, up.up.bias, stride=2)
    expected = up.conv(torch.cat([skip, upsampled], dim=1))
    torch.testing.assert_close(up(x, skip), expected)


def test_unet_up_odd_sizes() -> None:
    up = UNetUp(16, 8)
    x = torch.randn(B, 16, 12, 12)
    skip = torch.randn(B, 8, 25, 25)
    assert tuple(up(x, skip).shape) == (B, 8, 25, 25)
    # non-square and a skip smaller than the upsampled map
    up2 = UNetUp(4, 4, skip_channels=2)
    assert tuple(up2(torch.randn(B, 4, 7, 6), torch.randn(B, 2, 15, 13)).shape) == (B, 4, 15, 13)
    assert tuple(up2(torch.randn(B, 4, 7, 7), torch.randn(B, 2, 13, 13)).shape) == (B, 4, 13, 13)


def test_unet_down_up_roundtrip_odd() -> None:
    down, up = UNetDown(3, 8), UNetUp(16, 8)
    bottom = DoubleConv(8, 16)
    pooled, skip = down(torch.randn(B, 3, 25, 25))
    out = up(bottom(pooled), skip)
    assert tuple(out.shape) == (B, 8, 25, 25)


def test_unet_up_wrong_skip_channels() -> None:
    up = UNetUp(16, 8)
    with pytest.raises(CnnkitError) as err:
        up(torch.randn(B, 16, 4, 4), torch.randn(B, 5, 8, 8))
    assert "skip_channels=5" in assert_one_sentence(err)


# ---------------------------------------------------------------- all blocks


def _x(*spatial: int, c: int = 4) -> torch.Tensor:
    return torch.randn(B, c, *spatial)


# Built inside the (seeded) test, so each case is deterministic.
BLOCKS = {
    "convbnact": lambda: (ConvBNAct(4, 6, act="silu"), (_x(10, 10),)),
    "convbnact1d": lambda: (ConvBNAct(4, 6, dims=1), (_x(12),)),
    "convbnact3d": lambda: (ConvBNAct(4, 6, dims=3, act="gelu"), (_x(5, 5, 5),)),
    "basic": lambda: (ResidualBlock(4, 8, s=2), (_x(10, 10),)),
    "bottleneck": lambda: (ResidualBlock(4, 16, kind="bottleneck"), (_x(10, 10),)),
    "inception": lambda: (InceptionModule(4, 2, 2, 3, 2, 3, 2), (_x(10, 10),)),
    "dsconv": lambda: (DepthwiseSeparableConv(4, 8, s=2), (_x(10, 10),)),
    "inverted": lambda: (InvertedResidual(4, 4, 1, 6), (_x(10, 10),)),
    "mbconv": lambda: (MBConv(4, 8, s=2), (_x(10, 10),)),
    "se": lambda: (SqueezeExcitation(16, 8), (_x(10, 10, c=16),)),
    "doubleconv": lambda: (DoubleConv(4, 6), (_x(10, 10),)),
    "down": lambda: (UNetDown(4, 6), (_x(11, 11),)),
    "up": lambda: (UNetUp(4, 3), (_x(5, 5), _x(11, 11, c=3))),
}


@pytest.mark.parametrize("name", list(BLOCKS))
def test_backward_reaches_every_parameter(name: str) -> None:
    block, inputs = BLOCKS[name]()
    block.train()
    out = block(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    # A random projection of the output (a plain sum is flat through batch norm).
    loss = sum((o * torch.randn_like(o)).sum() for o in outs)
    loss.backward()
    for pname, p in block.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_all_exports() -> None:
    for name in blocks.__all__:
        assert getattr(blocks, name) is not None
    for name in [
        "ConvBNAct",
        "ResidualBlock",
        "InceptionModule",
        "DepthwiseSeparableConv",
        "InvertedResidual",
        "MBConv",
        "SqueezeExcitation",
        "DoubleConv",
        "UNetDown",
        "UNetUp",
    ]:
        assert name in blocks.__all__
