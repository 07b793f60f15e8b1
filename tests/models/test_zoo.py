"""The model zoo: tests generated from the registry, and the published figures."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import cnnkit
from cnnkit.errors import CnnkitError
from cnnkit.models import create, get_model_info, list_models, register_model

ALL = list_models()


def _batch(name: str, n: int = 2) -> torch.Tensor:
    *spatial, n_C = get_model_info(name).test_input
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, n_C, *spatial, generator=g)  # course (..., n_C) -> NCL/NCHW/NCDHW


def test_registry_lists_every_family():
    families = {get_model_info(n).family for n in ALL}
    assert families >= {
        "lenet",
        "alexnet",
        "vgg",
        "resnet",
        "googlenet",
        "mobilenet_v1",
        "mobilenet_v2",
        "efficientnet",
        "fc",
    }
    expected = {
        "lenet5",
        "alexnet",
        "googlenet",
        "mobilenet_v1",
        "mobilenet_v2",
        "logistic",
        "mlp",
        *(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")),
        *(f"resnet{d}" for d in (18, 34, 50, 101, 152)),
        *(f"efficientnet_b{i}" for i in range(8)),
    }
    assert expected <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_forward_and_backward(name):
    """Output shape (B, num_classes), no NaN; every parameter receives a gradient."""
    torch.manual_seed(0)
    model = create(name, num_classes=5)
    model.train()
    x = _batch(name)
    out = model(x)
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    for o in outs:
        assert o.shape == (2, 5)
        assert torch.isfinite(o).all()
    target = torch.tensor([1, 3])
    if hasattr(model, "compute_loss"):
        loss = model.compute_loss(out, target)
    else:
        loss = F.cross_entropy(outs[0], target)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", ALL)
def test_head_api(name):
    """forward_features + forward_head == forward; reset_classifier changes the classes."""
    torch.manual_seed(0)
    model = create(name, num_classes=4).eval()
    x = _batch(name, 1)
    with torch.no_grad():
        full = model(x)
        feats = model.forward_features(x)
        assert torch.allclose(model.forward_head(feats), full, atol=1e-5)
        model.reset_classifier(3)
        assert model.get_classifier().out_features == 3
        assert model(x).shape == (1, 3)


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):

        @register_model("lenet5", family="lenet", input_size=(32, 32, 1))
        def again(**kw):  # pragma: no cover
            return nn.Identity()


def test_unknown_model_suggests_close_match():
    with pytest.raises(CnnkitError, match="did you mean 'resnet18'"):
        create("resnet81")
    with pytest.raises(CnnkitError, match="has no option 'depht'"):
        create("resnet18", depht=3)
    assert list_models("resnet*") == [
        "resnet1d",  # the 1D ResNet for signals
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
    ]
    assert list_models("b7") == ["efficientnet_b7"]


def test_lenet5_is_the_course_network():
    model = create("lenet5")
    assert sum(p.numel() for p in model.parameters()) == 61_706
    assert [p.numel() for p in model.parameters()] == [
        150,
        6,
        2400,
        16,
        48000,
        120,
        10080,
        84,
        840,
        10,
    ]
    shapes = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
        for m in model.features
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d))
    ]
    model(torch.zeros(1, 1, 32, 32))
    for h in hooks:
        h.remove()
    assert shapes == [(6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5)]
    # the modern LeNet-5 by default; the 1998 paper's with activation=tanh, pool=avg
    assert isinstance(model.features[1], nn.ReLU)
    paper = create("lenet5", activation="tanh", pool="avg")
    assert isinstance(paper.features[1], nn.Tanh) and isinstance(paper.features[2], nn.AvgPool2d)
    assert sum(p.numel() for p in paper.parameters()) == 61_706
    assert isinstance(create("lenet5", activation="relu").features[1], nn.ReLU)
    with pytest.raises(CnnkitError, match="32x32"):
        model(torch.zeros(1, 1, 28, 28))


@pytest.mark.parametrize("w", [0.5, 2, 3])
def test_lenet5_width_multiplies_every_layer(w):
    # 6w, 16w filters and 120w, 84w units: 60,480 w^2 + 1,216 w + 10 parameters (10 classes)
    model = create("lenet5", width=w)
    c1, c2, h1, h2 = (round(n * w) for n in (6, 16, 120, 84))
    expected = (25 * c1 + c1) + (25 * c1 * c2 + c2) + (25 * c2 * h1 + h1) + (h1 * h2 + h2)
    expected += h2 * 10 + 10
    assert sum(p.numel() for p in model.parameters()) == expected
    if w != 0.5:  # whole multiples follow the closed form exactly
        assert expected == 60_480 * w * w + 1_216 * w + 10
    assert model.forward_features(torch.zeros(2, 1, 32, 32)).shape == (2, c2, 5, 5)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    with pytest.raises(CnnkitError, match="width must be a positive number"):
        create("lenet5", width=0)


@pytest.mark.parametrize(
    "name", ["alexnet", "vgg16_bn", "resnet50", "googlenet", "mobilenet_v2", "efficientnet_b0"]
)
def test_state_dict_keys_match_torchvision(name):
    """torchvision's weights load unchanged: same keys, same shapes."""
    kw = {"aux_logits": False} if name == "googlenet" else {}
    with torch.device("meta"):
        ours = create(name, **kw).state_dict()
        theirs = torchvision.models.get_model(name, weights=None, **kw).state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)


def test_small_input_resnet_keeps_spatial_detail():
    x = torch.zeros(1, 3, 32, 32)
    with torch.no_grad():
        plain = create("resnet18").eval().forward_features(x)
        small = create("resnet18", small_input=True).eval().forward_features(x)
    assert plain.shape == (1, 512, 1, 1)
    assert small.shape == (1, 512, 4, 4)
    m = create("resnet18", small_input=True)
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert isinstance(m.maxpool, nn.Identity)


def test_in_channels_adapts_the_stem():
    for name in ("resnet18", "vgg11", "mobilenet_v1", "efficientnet_b0", "lenet5"):
        m = create(name, in_channels=1 if name != "lenet5" else 3)
        first = next(mod for mod in m.modules() if isinstance(mod, nn.Conv2d))
        assert first.in_channels == (1 if name != "lenet5" else 3)


def test_googlenet_side_branches_add_to_the_loss():
    torch.manual_seed(0)
    model = create("googlenet", num_classes=6)
    assert model.aux_logits and model.aux_weight == 0.3
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, 5])
    model.train()
    out = model(x)
    assert isinstance(out, cnnkit.models.googlenet.GoogLeNetOutputs)
    expected = F.cross_entropy(out.logits, y) + 0.3 * (
        F.cross_entropy(out.aux_logits1, y) + F.cross_entropy(out.aux_logits2, y)
    )
    assert torch.allclose(model.compute_loss(out, y), expected)
    model.eval()
    with torch.no_grad():
        plain = model(x)
    assert isinstance(plain, torch.Tensor) and plain.shape == (2, 6)
    assert torch.allclose(model.compute_loss(plain, y), F.cross_entropy(plain, y))


def test_googlenet_inference_graph_size():
    assert sum(p.numel() for p in create("googlenet", aux_logits=False).parameters()) == 6_624_904


def test_efficientnet_variants_recorded():
    from cnnkit.models.efficientnet import ALPHA, BETA, GAMMA, VARIANTS, scaling_table

    assert pytest.approx(1.92, abs=0.01) == ALPHA * BETA**2 * GAMMA**2  # ~2: FLOPs double
    b7 = get_model_info("efficientnet_b7")
    assert b7.input_size == (600, 600, 3)
    assert b7.meta == {"phi": 7, "width": 2.0, "depth": 3.1, "resolution": 600, "dropout": 0.5}
    assert VARIANTS["efficientnet_b3"].formula["width"] == pytest.approx(1.1**3, abs=1e-3)
    assert "efficientnet_b4" in scaling_table() and "380" in scaling_table()
    assert create("efficientnet_b5").classifier[0].p == 0.4


def test_mobilenet_v1_width_multiplier():
    full = sum(p.numel() for p in create("mobilenet_v1").parameters())
    half = create("mobilenet_v1", alpha=0.5)
    assert full == 4_231_976
    assert half.fc.in_features == 512
    # pointwise convs dominate: parameters shrink roughly by alpha^2 (plus the head by alpha)
    n_half = sum(p.numel() for p in half.parameters())
    assert 0.3 * full < n_half < 0.45 * full


def test_fc_models_of_the_first_course():
    lr = create("logistic", input_size=(8, 8, 1))
    assert sum(p.numel() for p in lr.parameters()) == 8 * 8 + 1  # w (n_x) and b
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        z = lr(x)
        assert torch.allclose(z, x.flatten(1) @ lr.fc.weight.T + lr.fc.bias)
    m = create("mlp", num_classes=3, input_size="8x8x1", hidden=[20, 7, 5])
    sizes = [mod.out_features for mod in m.modules() if isinstance(mod, nn.Linear)]
    assert sizes == [20, 7, 5, 3]
    assert sum(p.numel() for p in m.parameters()) == (64 + 1) * 20 + 21 * 7 + 8 * 5 + 6 * 3
