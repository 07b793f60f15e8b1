"""cnnkit.summary: counts checked against published figures and independent computations."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnkit
from cnnkit.errors import CnnkitError
from cnnkit.models import create

# (params, MACs, resolution): torchvision's published numbers (its "GFLOPS" are MACs)
PUBLISHED = {
    "alexnet": (61_100_840, 714.2e6, 224),
    "vgg16": (138_357_544, 15.47e9, 224),
    "vgg19": (143_667_240, 19.63e9, 224),
    "resnet18": (11_689_512, 1.814e9, 224),
    "resnet50": (25_557_032, 4.089e9, 224),
    "resnet152": (60_192_808, 11.51e9, 224),
    "googlenet": (6_624_904, 1.498e9, 224),
    "mobilenet_v2": (3_504_872, 300.8e6, 224),
    "efficientnet_b0": (5_288_548, 385.8e6, 224),
    "efficientnet_b7": (66_347_960, 37.75e9, 600),
    "mobilenet_v1": (4_231_976, 568.7e6, 224),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_params_and_macs(name):
    params, macs, res = PUBLISHED[name]
    kw = {"aux_logits": False} if name == "googlenet" else {}
    s = cnnkit.summary(create(name, **kw), f"{res}x{res}x3")
    assert s.total_params == params
    assert s.macs == pytest.approx(macs, rel=0.005)
    assert s.flops == 2 * s.macs
    assert sum(r.params for r in s.rows) == s.total_params
    assert sum(r.macs for r in s.rows) == s.macs


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "googlenet", "efficientnet_b0"])
def test_macs_equal_torch_flop_counter(name):
    """Independent count: torch's FlopCounterMode (FLOPs = 2 x MACs of conv/linear/matmul)."""
    model = create(name).eval()
    x = torch.zeros(1, 3, 64, 64)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x)
    assert cnnkit.summary(model, "64x64x3").flops == fc.get_total_flops()


class _Shared(nn.Module):
    """A module used twice, a bare parameter, tied weights and an unused branch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.scale = nn.Parameter(torch.ones(1, 3, 1, 1))
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(3, 4)
        self.fc2.weight = self.fc1.weight  # tied
        self.unused = nn.Linear(10, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.conv(x)) * self.scale
        x = x.mean(dim=(2, 3))
        return self.fc1(x) + self.fc2(x)


def test_shared_module_bare_parameter_counted_once():
    model = _Shared()
    s = cnnkit.summary(model, "8x8x3")
    truth = sum(p.numel() for p in model.parameters())  # unique parameters
    assert s.total_params == truth == 84 + 3 + 16 + 4 + 110
    assert sum(r.params for r in s.rows) == truth
    conv_rows = [r for r in s.rows if r.name == "conv"]
    assert [r.params for r in conv_rows] == [84, 0]  # counted at its first call only
    assert "shared" in conv_rows[1].note
    assert [r.params for r in s.rows if r.name == "(model) (ops)"] == [3]  # the bare scale
    assert [r.params for r in s.rows if r.name == "unused (not run)"] == [110]
    assert s.params_not_run == 110
    # MACs: two convs 8*8*3 * 3*3*3 each, two FCs 3*4 each
    assert s.macs == 2 * (8 * 8 * 3 * 27) + 2 * 12


def test_frozen_and_buffers():
    model = create("resnet18", num_classes=10)
    for p in model.parameters():
        p.requires_grad = False
    model.reset_classifier(10)
    s = cnnkit.summary(model, "32x32x3")
    assert s.trainable_params == 512 * 10 + 10
    assert s.non_trainable_params == s.total_params - 5130
    bn_stats = sum(2 * m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert s.buffers == bn_stats
    assert "non-trainable" in s.to_text()


def test_residual_add_is_counted_not_zero():
    s = cnnkit.summary(create("resnet18"), "64x64x3", depth=3)
    adds = [r for r in s.rows if r.name == "layer1.0 (ops)"]
    assert len(adds) == 1 and "add" in adds[0].type
    assert adds[0].other_ops == 16 * 16 * 64  # one add per output element of the block
    assert sum(r.other_ops for r in s.rows) == s.other_ops


def test_depth_folds_rows_without_changing_totals():
    model = create("resnet18")
    deep = cnnkit.summary(model, "32x32x3", depth=None)
    shallow = cnnkit.summary(model, "32x32x3", depth=1)
    assert len(shallow.rows) < len(deep.rows)
    assert [r.name for r in shallow.rows] == [
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "avgpool",
        "fc",
    ]
    for attr in ("total_params", "macs", "other_ops"):
        assert getattr(shallow, attr) == getattr(deep, attr)


def test_explain_formulas_and_course_order_shapes():
    s = cnnkit.summary(create("lenet5"), "32x32x1", explain=True)
    conv1 = s.rows[0]
    assert conv1.output_shapes == [(28, 28, 6)]
    assert "n_H = n_W: 28 = floor((32 + 2*0 - 5)/1) + 1" in conv1.formula
    assert "156 = (5*5*1 + 1)*6" in conv1.formula
    assert [r.output for r in s.rows if r.type in ("Conv2d", "MaxPool2d")] == [
        "28x28x6",
        "14x14x6",
        "10x10x16",
        "5x5x16",
    ]
    text = s.to_text()
    assert "FLOPs" in text and "2 x MACs" in text and "61,706" in text


def test_course_39x39_network_explained():
    net = cnnkit.models.sequential(
        [
            {"conv": {"f": 3, "n_C": 10}},
            "relu",
            {"conv": {"f": 5, "s": 2, "n_C": 20}},
            "relu",
            {"conv": {"f": 5, "s": 2, "n_C": 40}},
            "relu",
            "flatten",
            {"fc": 1},
        ],
        "39x39x3",
    )
    s = cnnkit.summary(net, explain=True)
    assert [r.output for r in s.rows if r.type == "Conv2d"] == ["37x37x10", "17x17x20", "7x7x40"]
    assert [r.output for r in s.rows if r.type == "Flatten"] == ["1960"]
    assert "37 = floor((39 + 2*0 - 3)/1) + 1" in s.rows[0].formula
    assert "280 = (3*3*3 + 1)*10" in s.rows[0].formula


def test_multiple_outputs_and_1d_3d_models():
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(2, 4, 5)
            self.a = nn.Linear(4, 3)
            self.b = nn.Linear(4, 2)

        def forward(self, x):
            h = self.conv(x).amax(dim=2)
            return self.a(h), self.b(h)

    s = cnnkit.summary(TwoHeads(), "100x2")
    assert s.rows[0].output_shapes == [(96, 4)]
    assert s.macs == 96 * 4 * 5 * 2 + 4 * 3 + 4 * 2
    net3d = nn.Sequential(nn.Conv3d(1, 4, 3), nn.ReLU(), nn.MaxPool3d(2))
    s3 = cnnkit.summary(net3d, "8x16x16x1")
    assert s3.rows[0].output_shapes == [(6, 14, 14, 4)]
    assert s3.rows[-1].output_shapes == [(3, 7, 7, 4)]
    assert s3.macs == 6 * 14 * 14 * 4 * 27


def test_googlenet_side_branches_reported_as_not_run():
    model = create("googlenet")  # side branches built, used in training only
    s = cnnkit.summary(model, "224x224x3")
    assert s.total_params == sum(p.numel() for p in model.parameters()) == 13_004_888
    assert s.params_not_run == 13_004_888 - 6_624_904
    assert {r.name for r in s.rows if r.name.endswith("(not run)")} == {
        "aux1 (not run)",
        "aux2 (not run)",
    }
    assert model.training  # the summary restores the mode


@pytest.mark.parametrize(
    ("size", "match"),
    [
        ("0x0x3", "not positive"),
        ("3x224x224", "did you mean 224x224x3"),
        ("224x224", "1D inputs|2D inputs"),
        ("abc", "not a size"),
    ],
)
def test_bad_input_sizes(size, match):
    with pytest.raises(CnnkitError, match=match):
        cnnkit.summary(create("resnet18"), size)


def test_input_too_small_names_the_layer():
    with pytest.raises(CnnkitError, match=r"layer 'features\.\d+' \(MaxPool2d\)") as e:
        cnnkit.summary(create("alexnet"), "32x32x3")
    assert "\n" not in str(e.value)
