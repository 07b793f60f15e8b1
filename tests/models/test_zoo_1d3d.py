"""The 1D (resnet1d) and 3D (convnet3d) ConvNets, and residual blocks in 1D and 3D.

Every count is checked against an independent computation: the course's formulas
written out layer by layer, a plain ``nn.Sequential`` of the same layers, or a
functional forward pass with ``torch.nn.functional``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit import shapes
from cnnkit.blocks import ResidualBlock
from cnnkit.errors import CnnkitError
from cnnkit.models import conv_features, create, get_model_info, list_models


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def one_sentence(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.endswith((".", "?")), msg
    return msg


# ---------------------------------------------------------------- registry


def test_registered_with_course_order_input_sizes():
    assert {"resnet1d", "convnet3d"} <= set(list_models())
    r, c = get_model_info("resnet1d"), get_model_info("convnet3d")
    assert (r.dims, r.input_size, r.family) == (1, (256, 2), "resnet1d")  # n x n_C
    assert (c.dims, c.input_size, c.family) == (3, (32, 32, 32, 1), "convnet3d")  # n_D..n_C
    assert len(r.test_input) == 2 and len(c.test_input) == 4
    assert r.num_classes == c.num_classes == 10


# ---------------------------------------------------------------- resnet1d


def resnet1d_param_formula(c_in: int, k: int, widths, blocks, f: int = 7) -> int:
    """The course's count, layer by layer: conv f*n_C_prev*n_C (no bias: BN's beta), BN 2*n_C."""
    total = f * c_in * widths[0] + 2 * widths[0]  # stem
    prev = widths[0]
    for i, (w, b) in enumerate(zip(widths, blocks)):
        for j in range(b):
            c = prev if j == 0 else w
            s = 2 if (i > 0 and j == 0) else 1
            total += 3 * c * w + 2 * w + 3 * w * w + 2 * w  # two f=3 conv + BN
            if s != 1 or c != w:
                total += c * w + 2 * w  # projection W_s: 1x1 conv + BN
        prev = w
    return total + (prev + 1) * k  # FC


@pytest.mark.parametrize(
    ("c_in", "k", "kw"),
    [
        (2, 10, {}),
        (3, 5, {}),
        (1, 4, {"widths": [8, 16], "blocks": [1, 3]}),
        (4, 2, {"widths": [8, 8, 16, 16], "blocks": [1, 1, 1, 2], "stem_f": 5}),
    ],
)
def test_resnet1d_params_follow_the_formula(c_in, k, kw):
    model = create("resnet1d", num_classes=k, in_channels=c_in, **kw)
    widths = kw.get("widths", [32, 64, 128])
    blocks = kw.get("blocks", [2, 2, 2])
    expected = resnet1d_param_formula(c_in, k, widths, blocks, kw.get("stem_f", 7))
    assert n_params(model) == expected


def test_resnet1d_default_size_and_parts():
    model = create("resnet1d")
    assert n_params(model) == 241_546 == 448 + 64 + 12_544 + 45_696 + 181_504 + 1_290
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    assert convs[0].kernel_size == (7,) and convs[0].stride == (2,) and convs[0].padding == (3,)
    assert all(
        isinstance(m, nn.Conv1d) for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)
    )
    assert not any(isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) for m in model.modules())
    # one projection shortcut per stride/width change: stages 2 and 3
    projections = [m for m in model.modules() if isinstance(m, ResidualBlock) and m.uses_projection]
    assert [(b.in_channels, b.out_channels) for b in projections] == [(32, 64), (64, 128)]


def test_resnet1d_layer_shapes_follow_conv_output_size():
    """Output length of every conv / pool equals floor((n + 2p - f)/s) + 1, in sequence."""
    model = create("resnet1d").eval()
    seen = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: seen.append((m, tuple(i[0].shape), tuple(o.shape))))
        for m in model.modules()
        if isinstance(m, (nn.Conv1d, nn.MaxPool1d))
    ]
    with torch.no_grad():
        model(torch.zeros(1, 2, 256))
    for h in hooks:
        h.remove()
    for m, (_, _, n_in), (_, c_out, n_out) in seen:
        if isinstance(m, nn.Conv1d):
            want = shapes.conv_output_size(n_in, m.kernel_size[0], m.padding[0], m.stride[0])
            assert c_out == m.out_channels
        else:
            want = shapes.pool_output_size(n_in, m.kernel_size, m.stride, m.padding)
        assert n_out == want
    # stem 128, pool 64, then 64 (layer1), 32 (layer2), 16 (layer3) on the main path
    main = [o[2] for m, _, o in seen if isinstance(m, nn.MaxPool1d) or m.kernel_size == (7,)]
    assert main == [128, 64]
    assert model.forward_features(torch.zeros(1, 2, 256)).shape == (1, 128, 16)
    assert model.forward_features(torch.zeros(1, 2, 100)).shape == (1, 128, 7)


def _bn(x: torch.Tensor, bn: nn.Module) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps)


def _randomize_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_resnet1d_forward_equals_functional_resnet():
    """An independent forward with F.conv1d: stem, pool, a[l+2] = relu(main + shortcut), GAP, FC."""
    torch.manual_seed(0)
    model = create("resnet1d", num_classes=3, in_channels=2, widths=[8, 16], blocks=[2, 1])
    _randomize_bn(model)
    model.eval()
    x = torch.randn(4, 2, 50)
    stem = model.features.stem
    a = F.relu(_bn(F.conv1d(x, stem[0].weight, stride=2, padding=3), stem[1]))
    a = F.max_pool1d(a, 3, 2, 1)
    for stage, first_stride in ((model.features.layer1, 1), (model.features.layer2, 2)):
        for j, block in enumerate(stage):
            s = first_stride if j == 0 else 1
            z = F.relu(_bn(F.conv1d(a, block.conv1.weight, stride=s, padding=1), block.bn1))
            z = _bn(F.conv1d(z, block.conv2.weight, padding=1), block.bn2)
            if block.downsample is not None:
                conv_s, bn_s = block.downsample
                short = _bn(F.conv1d(a, conv_s.weight, stride=s), bn_s)
            else:
                short = a
            a = F.relu(z + short)
    logits = F.linear(a.mean(dim=2), model.fc.weight, model.fc.bias)  # (B, C, n) -> (B, C)
    with torch.no_grad():
        torch.testing.assert_close(model(x), logits)


def test_resnet1d_learns_a_synthetic_signal_task():
    """Two classes: a slow or a fast sine in noise; 40 Adam steps on the CPU separate them."""
    torch.manual_seed(0)
    n, length = 64, 128
    y = torch.arange(n) % 2
    t = torch.linspace(0, 1, length)
    freq = torch.where(y == 0, 3.0, 12.0)[:, None]
    phase = torch.rand(n, 1) * 6.28
    x = torch.sin(2 * torch.pi * freq * t + phase) + 0.3 * torch.randn(n, length)
    x = torch.stack([x, torch.randn(n, length) * 0.1], dim=1)  # (B, 2, n)
    model = create("resnet1d", num_classes=2, widths=[8, 16], blocks=[1, 1])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    first = None
    for _ in range(40):
        loss = F.cross_entropy(model(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert loss.item() < 0.5 * first
    assert acc >= 0.9


# ---------------------------------------------------------------- convnet3d


def plain_convnet3d(c_in: int, k: int, widths) -> nn.Sequential:
    layers: list[nn.Module] = []
    prev = c_in
    for w in widths:
        layers += [
            nn.Conv3d(prev, w, 3, padding=1, bias=False),
            nn.BatchNorm3d(w),
            nn.ReLU(),
            nn.MaxPool3d(2),
        ]
        prev = w
    layers += [nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(prev, k)]
    return nn.Sequential(*layers)


@pytest.mark.parametrize(
    ("c_in", "k", "widths"), [(1, 10, None), (3, 4, None), (2, 6, [4, 8]), (1, 2, [4, 4, 8, 8])]
)
def test_convnet3d_equals_a_plain_sequential(c_in, k, widths):
    """Same parameters (count and shapes, in order) and, with the weights copied, same outputs."""
    torch.manual_seed(0)
    kw = {"widths": widths} if widths else {}
    model = create("convnet3d", num_classes=k, in_channels=c_in, **kw)
    widths = widths or [16, 32, 64]
    plain = plain_convnet3d(c_in, k, widths)
    assert n_params(model) == n_params(plain)
    ours, theirs = model.state_dict(), plain.state_dict()
    assert [v.shape for v in ours.values()] == [v.shape for v in theirs.values()]
    # the course's formula: (f^3*n_C_prev)*n_C per conv (no bias), 2*n_C per BN, (n+1)*k FC
    prev, formula = c_in, 0
    for w in widths:
        formula += 27 * prev * w + 2 * w
        prev = w
    assert n_params(model) == formula + (prev + 1) * k
    _randomize_bn(model)
    plain.load_state_dict(dict(zip(theirs, model.state_dict().values())))
    model.eval()
    plain.eval()
    n = 2 ** len(widths) * 2
    x = torch.randn(2, c_in, n, n + 2, n + 4)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x))


def test_convnet3d_default_size_and_feature_map():
    model = create("convnet3d")
    assert n_params(model) == 70_426 == 432 + 32 + 13_824 + 64 + 55_296 + 128 + 650
    with torch.no_grad():
        feats = model.eval().forward_features(torch.zeros(1, 1, 32, 32, 32))
        assert feats.shape == (1, 64, 4, 4, 4)  # 32 -> 16 -> 8 -> 4 on every axis
        assert model.forward_features(torch.zeros(1, 1, 16, 24, 40)).shape == (1, 64, 2, 3, 5)
    assert not any(isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) for m in model.modules())


# ---------------------------------------------------------------- both


@pytest.mark.parametrize(
    ("name", "x"), [("resnet1d", (3, 5, 40)), ("convnet3d", (3, 5, 9, 10, 11))]
)
def test_create_with_classes_and_channels(name, x):
    torch.manual_seed(0)
    model = create(name, num_classes=7, in_channels=5)
    first = next(m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv3d)))
    assert first.in_channels == 5
    out = model(torch.randn(*x))
    assert out.shape == (3, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert conv_features(name, in_channels=5)(torch.randn(*x)).dim() == len(x)


@pytest.mark.parametrize(
    ("name", "x", "match"),
    [
        ("resnet1d", (1, 2, 32, 32), "signals shaped"),
        ("convnet3d", (1, 1, 32, 32), "volumes shaped"),
        ("convnet3d", (1, 1, 8, 7, 8), "at least 8"),
    ],
)
def test_wrong_input_is_one_sentence(name, x, match):
    model = create(name)
    with pytest.raises(CnnkitError, match=match) as err:
        model(torch.zeros(*x))
    one_sentence(err)


@pytest.mark.parametrize(
    ("name", "kw", "match"),
    [
        ("resnet1d", {"widths": [32, 0]}, "widths must be"),
        ("resnet1d", {"widths": [8, 16], "blocks": [1]}, "block count per stage"),
        ("resnet1d", {"blocks": 2}, "blocks must be"),
        ("resnet1d", {"dropout": 1.5}, "dropout"),
        ("convnet3d", {"widths": []}, "widths must be"),
        ("convnet3d", {"widths": [8, 2.5]}, "widths must be"),
        ("convnet3d", {"widht": [8]}, "did you mean widths"),
    ],
)
def test_bad_options_are_one_sentence(name, kw, match):
    with pytest.raises(CnnkitError, match=match) as err:
        create(name, **kw)
    one_sentence(err)


@pytest.mark.parametrize(("name", "x"), [("resnet1d", (2, 2, 64)), ("convnet3d", (2, 1, 8, 8, 8))])
def test_weights_file_round_trip(name, x, tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = create(name, num_classes=3).eval()
    path = tmp_path / f"{name}.safetensors"
    save_file(model.state_dict(), str(path))
    again = create(name, num_classes=3, weights=str(path)).eval()
    inp = torch.randn(*x)
    with torch.no_grad():
        torch.testing.assert_close(again(inp), model(inp))


# ---------------------------------------------------------------- residual blocks in 1D and 3D


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize(
    ("c_in", "c_out", "s", "kind", "projection"),
    [
        (8, 8, 1, "basic", False),
        (8, 16, 2, "basic", True),
        (8, 32, 2, "bottleneck", True),
        (16, 16, 1, "bottleneck", False),
    ],
)
def test_residual_block_dims_shapes_params_keys(dims, c_in, c_out, s, kind, projection):
    block = ResidualBlock(c_in, c_out, s=s, kind=kind, dims=dims)
    flat = ResidualBlock(c_in, c_out, s=s, kind=kind)  # the 2D (torchvision) block
    assert block.uses_projection is projection
    conv = nn.Conv1d if dims == 1 else nn.Conv3d
    convs = [m for m in block.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    assert convs and all(type(m) is conv for m in convs)
    # same state_dict keys as torchvision's 2D block; each conv weight loses/gains a 3-axis
    assert list(block.state_dict()) == list(flat.state_dict())
    for key, v in block.state_dict().items():
        w = flat.state_dict()[key]
        if v.dim() >= 3:
            f = w.shape[-1]
            assert v.shape == (*w.shape[:2], *(f,) * dims)
        else:
            assert v.shape == w.shape
    # params: the 2D count with every f*f filter replaced by f^dims
    per_filter_2d = sum(
        m.weight[0].numel() * m.out_channels for m in flat.modules() if isinstance(m, nn.Conv2d)
    )
    per_filter_nd = sum(m.weight[0].numel() * m.out_channels for m in convs)
    assert n_params(block) - per_filter_nd == n_params(flat) - per_filter_2d
    x = torch.randn(2, c_in, *(9,) * dims)
    n_out = shapes.conv_output_size(9, 3, 1, s)
    assert tuple(block(x).shape) == (2, c_out, *(n_out,) * dims)


@pytest.mark.parametrize("dims", [1, 3])
def test_residual_block_dims_forward_is_relu_of_main_plus_shortcut(dims):
    conv = {1: F.conv1d, 3: F.conv3d}[dims]
    torch.manual_seed(0)
    block = ResidualBlock(4, 8, s=2, dims=dims)
    _randomize_bn(block)
    block.eval()
    x = torch.randn(2, 4, *(7,) * dims)
    a = F.relu(_bn(conv(x, block.conv1.weight, stride=2, padding=1), block.bn1))
    main = _bn(conv(a, block.conv2.weight, padding=1), block.bn2)
    conv_s, bn_s = block.downsample
    shortcut = _bn(conv(x, conv_s.weight, stride=2), bn_s)
    with torch.no_grad():
        torch.testing.assert_close(block(x), F.relu(main + shortcut))


def test_residual_block_2d_is_unchanged_and_bad_dims_refused():
    block = ResidualBlock(8, 16, s=2)
    assert block.dims == 2
    assert all(
        isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Sequential, ResidualBlock))
        for m in block.modules()
    )
    with pytest.raises(CnnkitError, match="dims must be 1, 2 or 3") as err:
        ResidualBlock(8, 8, dims=4)
    one_sentence(err)
