"""Networks from layer lists (Python and YAML): shapes, counts and errors as the course gives them.

Every shape is checked twice: against the model's own ``trace`` (inferred by cnnkit.shapes)
and against a real torch forward (forward hooks on the torch modules), both compared with
the numbers the course prints.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models import LayerNet, create, from_yaml, sequential

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"

_SHAPE_MODULES = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.Flatten,
)


def _course(t: torch.Tensor) -> tuple[int, ...]:
    """(B, n_C, *spatial) -> (*spatial, n_C); (B, n) -> (n,)."""
    if t.dim() == 2:
        return (t.shape[1],)
    return (*t.shape[2:], t.shape[1])


def _forward_shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    """Course-order output shapes of every conv / pool / flatten module, from a real forward."""
    seen: list[tuple[int, ...]] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: seen.append(_course(out)))
        for m in model.modules()
        if isinstance(m, _SHAPE_MODULES)
    ]
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _trace_shapes(model: LayerNet) -> list[tuple[int, ...]]:
    """Trace rows that correspond to one hooked module each (conv, pool, flatten, gap)."""
    keep = ("conv", "conv_transpose", "max pool", "avg pool", "global avg pool")
    return [r.output for r in model.trace if r.kind in keep or r.kind.startswith("flatten")]


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _input(size: tuple[int, ...], batch: int = 1) -> torch.Tensor:
    *spatial, n_C = size
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, n_C, *spatial, generator=g)


# --- the three shipped examples --------------------------------------------------------------

COURSE = {
    "course_39x39": {
        "input": (39, 39, 3),
        "shapes": [(37, 37, 10), (17, 17, 20), (7, 7, 40), (1960,)],
        "params": (3 * 3 * 3 + 1) * 10
        + (5 * 5 * 10 + 1) * 20
        + (5 * 5 * 20 + 1) * 40
        + (1960 + 1) * 10,
        "classes": 10,
    },
    "lenet5": {
        "input": (32, 32, 1),
        "shapes": [(28, 28, 6), (14, 14, 6), (10, 10, 16), (5, 5, 16), (400,)],
        "params": 61_706,
        "classes": 10,
    },
    "alexnet_course": {
        "input": (227, 227, 3),
        "shapes": [
            (55, 55, 96),
            (27, 27, 96),
            (27, 27, 256),
            (13, 13, 256),
            (13, 13, 384),
            (13, 13, 384),
            (13, 13, 256),
            (6, 6, 256),
            (9216,),
        ],
        "params": 62_378_344,
        "classes": 1000,
    },
}


@pytest.mark.parametrize("name", list(COURSE))
def test_shipped_example_shapes_and_params(name):
    want = COURSE[name]
    torch.manual_seed(0)
    model = from_yaml(EXAMPLES / f"{name}.yaml")
    assert isinstance(model, LayerNet)
    assert model.input_size == want["input"]
    # the model's own trace ...
    assert _trace_shapes(model) == want["shapes"]
    assert model.trace[-1].output == (want["classes"],)
    assert sum(r.params for r in model.trace) == want["params"]
    # ... and the truth: a real forward and the real parameter tensors
    x = _input(want["input"])
    assert _forward_shapes(model, x) == want["shapes"]
    with torch.no_grad():
        assert model(x).shape == (1, want["classes"])
    assert _n_params(model) == want["params"]
    assert model.output_activation == "softmax"


def test_course_39x39_total_matches_the_course_arithmetic():
    # 280 + 5,020 + 20,040 + 19,610 (the written sums, independent of cnnkit.shapes)
    assert COURSE["course_39x39"]["params"] == 280 + 5_020 + 20_040 + 19_610
    model = from_yaml(EXAMPLES / "course_39x39.yaml")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [_n_params(c) for c in convs] == [280, 5_020, 20_040]


def test_lenet5_yaml_per_layer_params():
    model = from_yaml(EXAMPLES / "lenet5.yaml")
    learned = [(r.kind, r.params) for r in model.trace if r.params]
    assert learned == [("conv", 156), ("conv", 2_416), ("fc", 48_120), ("fc", 10_164), ("fc", 850)]
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [_n_params(m) for m in layers] == [156, 2_416, 48_120, 10_164, 850]


# --- the same LeNet-5 as a Python list --------------------------------------------------------

LENET5_LIST = [
    {"conv": {"f": 5, "s": 1, "n_C": 6}},
    "tanh",
    {"pool": {"type": "avg", "f": 2, "s": 2}},
    {"conv": {"f": 5, "s": 1, "n_C": 16}},
    "tanh",
    {"pool": {"type": "avg", "f": 2, "s": 2}},
    {"fc": 120},
    "tanh",
    {"fc": 84},
    "tanh",
    {"fc": 10},
    "softmax",
]


def test_python_list_lenet5_equals_yaml_and_zoo():
    torch.manual_seed(0)
    listed = sequential(LENET5_LIST, "32x32x1", name="lenet_list")
    yaml_net = from_yaml(EXAMPLES / "lenet5.yaml")
    zoo = create("lenet5", activation="tanh", pool="avg")  # the 1998 paper's, as the list
    assert _n_params(listed) == _n_params(yaml_net) == _n_params(zoo) == 61_706
    assert listed.name == "lenet_list"
    # same tensors, in the same order, with the same shapes
    assert [p.shape for p in listed.parameters()] == [p.shape for p in zoo.parameters()]
    x = _input((32, 32, 1), batch=2)
    want = [(28, 28, 6), (14, 14, 6), (10, 10, 16), (5, 5, 16), (400,)]
    assert _forward_shapes(listed, x) == _forward_shapes(zoo, x) == want
    assert _trace_shapes(listed) == want
    # and the same function: copy the zoo's weights by position, outputs agree
    with torch.no_grad():
        for mine, theirs in zip(listed.parameters(), zoo.parameters(), strict=True):
            mine.copy_(theirs)
        assert torch.allclose(listed.eval()(x), zoo.eval()(x), atol=1e-6)


def test_create_accepts_a_yaml_path():
    model = create(str(EXAMPLES / "lenet5.yaml"))
    assert isinstance(model, LayerNet)
    assert _n_params(model) == 61_706
    with pytest.raises(CnnkitError):
        create(str(EXAMPLES / "lenet5.yaml"), small_input=True)


def test_from_yaml_overrides_num_classes_and_in_channels():
    model = from_yaml(EXAMPLES / "lenet5.yaml", num_classes=3, in_channels=3)
    assert model.input_size == (32, 32, 3)
    assert model.num_classes == 3
    # conv1 (5*5*3 + 1)*6 = 456 instead of 156; head (84 + 1)*3 = 255 instead of 850
    assert _n_params(model) == 61_706 - 156 + 456 - 850 + 255
    with torch.no_grad():
        assert model(_input((32, 32, 3), batch=2)).shape == (2, 3)


# --- 1D and 3D -------------------------------------------------------------------------------


def test_1d_network_builds_and_matches_its_trace():
    layers = [
        {"conv": {"f": 5, "n_C": 8}},
        "relu",
        {"pool": {"type": "max", "f": 2, "s": 2}},
        {"conv": {"f": 3, "s": 2, "n_C": 16}},
        {"fc": 32},
        "relu",
        {"fc": 3},
    ]
    model = sequential(layers, "100x4")
    assert isinstance(model.layers[0], nn.Conv1d)
    # 96 = 100 - 5 + 1; 48 = 96/2; 23 = floor((48 - 3)/2) + 1; 23*16 = 368
    want = [(96, 8), (48, 8), (23, 16), (368,)]
    assert _trace_shapes(model) == want
    x = _input((100, 4), batch=2)
    assert _forward_shapes(model, x) == want
    with torch.no_grad():
        assert model(x).shape == (2, 3)
    assert _n_params(model) == sum(r.params for r in model.trace)
    assert _n_params(model) == (5 * 4 + 1) * 8 + (3 * 8 + 1) * 16 + (368 + 1) * 32 + (32 + 1) * 3


def test_3d_network_builds_and_matches_its_trace():
    layers = [
        {"conv": {"f": 3, "n_C": 4}},
        "bn",
        "relu",
        {"pool": {"type": "avg", "f": 2}},
        {"conv": {"f": 3, "p": "same", "n_C": 6}},
        "flatten",
        {"fc": 5},
    ]
    model = sequential(layers, "8x16x16x1")
    assert isinstance(model.layers[0], nn.Conv3d)
    # 6x14x14 after the 3x3x3 conv, halved by the pool, kept by the 'same' conv
    want = [(6, 14, 14, 4), (3, 7, 7, 4), (3, 7, 7, 6), (3 * 7 * 7 * 6,)]
    assert _trace_shapes(model) == want
    x = _input((8, 16, 16, 1), batch=2)
    assert _forward_shapes(model, x) == want
    with torch.no_grad():
        assert model(x).shape == (2, 5)
    assert _n_params(model) == (27 + 1) * 4 + 2 * 4 + (27 * 4 + 1) * 6 + (882 + 1) * 5


# --- single layers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "f", "s", "p", "n_C_prev", "n_C"),
    [
        (8, 4, 2, 1, 3, 2),
        (7, 3, 2, 0, 1, 5),
        (5, 3, 1, 1, 2, 2),
        (4, 2, 2, 0, 4, 1),
        (3, 5, 3, 2, 1, 3),
    ],
)
def test_conv_transpose_output_size(n, f, s, p, n_C_prev, n_C):
    model = sequential(
        [{"conv_transpose": {"f": f, "s": s, "p": p, "n_C": n_C}}], f"{n}x{n}x{n_C_prev}"
    )
    out = (n - 1) * s - 2 * p + f
    assert model.trace[0].output == (out, out, n_C)
    x = _input((n, n, n_C_prev), batch=2)
    assert _forward_shapes(model, x) == [(out, out, n_C)]
    assert _n_params(model) == model.trace[0].params == f * f * n_C_prev * n_C + n_C


@pytest.mark.parametrize("f", [1, 3, 5, 7])
def test_same_padding_keeps_n_at_stride_1(f):
    model = sequential([{"conv": {"f": f, "p": "same", "n_C": 4}}], "11x9x2")
    assert model.trace[0].output == (11, 9, 4)
    assert model.layers[0].padding == ((f - 1) // 2, (f - 1) // 2)
    assert _forward_shapes(model, _input((11, 9, 2))) == [(11, 9, 4)]


def test_dropout_keep_prob_and_rate():
    model = sequential(
        [{"fc": 4}, {"dropout": {"keep_prob": 0.8}}, {"dropout": 0.3}, {"dropout": {"rate": 0.1}}],
        "6x2",
    )
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert [d.p for d in drops] == pytest.approx([0.2, 0.3, 0.1])
    assert _n_params(model) == (12 + 1) * 4


@pytest.mark.parametrize("n_C", [1, 7, 32])
def test_bn_adds_two_params_per_channel(n_C):
    without = sequential([{"conv": {"f": 3, "n_C": n_C}}], "8x8x3")
    with_bn = sequential([{"conv": {"f": 3, "n_C": n_C}}, "bn"], "8x8x3")
    assert _n_params(with_bn) - _n_params(without) == 2 * n_C
    assert with_bn.trace[1].params == 2 * n_C
    assert isinstance(with_bn.layers[1], nn.BatchNorm2d)
    assert with_bn.layers[1].num_features == n_C


def test_gap_gives_one_feature_per_channel():
    model = sequential([{"conv": {"f": 3, "n_C": 12}}, "relu", "gap"], "10x10x3")
    assert model.trace[-1].output == (12,)
    x = _input((10, 10, 3), batch=2)
    with torch.no_grad():
        out = model.eval()(x)
        conv_out = model.layers[1](model.layers[0](x))
    assert out.shape == (2, 12)
    assert torch.allclose(out, conv_out.mean(dim=(2, 3)), atol=1e-6)


def test_final_softmax_returns_logits():
    torch.manual_seed(0)
    layers = [{"conv": {"f": 3, "n_C": 4}}, "relu", {"fc": 6}]
    plain = sequential(layers, "8x8x2")
    soft = sequential([*layers, "softmax"], "8x8x2")
    assert soft.output_activation == "softmax"
    assert plain.output_activation is None
    soft.load_state_dict(plain.state_dict())
    x = _input((8, 8, 2), batch=3) * 5
    with torch.no_grad():
        z = soft.eval()(x)
        assert torch.equal(z, plain.eval()(x))  # forward returns z[L], the logits
    assert not torch.allclose(z.sum(dim=1), torch.ones(3), atol=1e-3)
    assert (z < 0).any()  # not probabilities either


# --- the head ---------------------------------------------------------------------------------


def test_num_classes_overrides_the_last_fc():
    layers = [{"conv": {"f": 3, "n_C": 4}}, {"fc": 20}, {"fc": 10}, "softmax"]
    model = sequential(layers, "8x8x1", num_classes=4)
    assert model.trace[-1].output == (4,)
    assert model.num_classes == 4
    fcs = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in fcs] == [(144, 20), (20, 4)]
    with torch.no_grad():
        assert model(_input((8, 8, 1), batch=2)).shape == (2, 4)
    filled = sequential([{"fc": 5}, {"fc": "num_classes"}], "3x3x1", num_classes=7)
    assert filled.num_classes == 7


def test_reset_classifier():
    model = from_yaml(EXAMPLES / "lenet5.yaml")
    fc2 = model.get_classifier()
    assert (fc2.in_features, fc2.out_features) == (84, 10)
    model.reset_classifier(5)
    assert model.get_classifier().out_features == 5
    assert model.get_classifier().in_features == 84
    with torch.no_grad():
        assert model(_input((32, 32, 1), batch=2)).shape == (2, 5)
    assert _n_params(model) == 61_706 - 850 + 85 * 5


def test_forward_features_stops_before_flatten():
    torch.manual_seed(0)
    model = from_yaml(EXAMPLES / "course_39x39.yaml").eval()
    x = _input((39, 39, 3), batch=2)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 40, 7, 7)  # 7x7x40, still a volume
        assert torch.equal(model.forward_head(feats), model(x))


# --- errors -----------------------------------------------------------------------------------


def _error(layers, size="8x8x1", **kw) -> str:
    with pytest.raises(CnnkitError) as info:
        sequential(layers, size, **kw)
    msg = str(info.value)
    assert "\n" not in msg.strip()
    return msg


def test_unknown_layer_kind_suggests_and_names_the_layer():
    msg = _error([{"conv": {"f": 3, "n_C": 4}}, {"cnov": {"f": 3, "n_C": 4}}])
    assert "'cnov'" in msg
    assert "did you mean 'conv'" in msg
    assert "layer 2" in msg


def test_conv_without_filter_count():
    msg = _error([{"conv": {"f": 3}}])
    assert "layer 1" in msg
    assert "n_C" in msg


def test_unknown_setting_names_the_key():
    msg = _error(["relu", {"conv": {"f": 3, "n_C": 2, "stirde": 2}}])
    assert "layer 2" in msg
    assert "'stirde'" in msg
    rest = msg.split("'stirde'", 1)[1]  # what to use instead follows the bad key
    assert re.search(r"\bs\b", rest)


def test_kernel_larger_than_padded_input_names_the_layer():
    msg = _error([{"conv": {"f": 3, "n_C": 2}}, {"conv": {"f": 9, "p": 1, "n_C": 2}}])
    assert "layer 2" in msg
    assert "9" in msg
    # a pool that does not fit is named too
    msg = _error(["relu", "relu", {"pool": {"f": 9}}])
    assert "layer 3" in msg


def test_fc_num_classes_needs_num_classes():
    msg = _error([{"conv": {"f": 3, "n_C": 2}}, {"fc": "num_classes"}])
    assert "layer 2" in msg
    assert "num_classes" in msg
    # given num_classes, the same entry is filled in
    assert sequential([{"fc": "num_classes"}], "2x2", num_classes=3).num_classes == 3


def test_missing_yaml_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(CnnkitError, match=re.escape("nope.yaml")):
        from_yaml(path)
    with pytest.raises(CnnkitError, match=re.escape("nope.yaml")):
        create(str(path))


def test_invalid_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("input: 8x8x1\nlayers: [relu, {conv: {f: 3\n")
    with pytest.raises(CnnkitError) as info:
        from_yaml(path)
    msg = str(info.value)
    assert "broken.yaml" in msg
    assert "YAML" in msg
    assert "\n" not in msg


def test_yaml_without_layers(tmp_path):
    path = tmp_path / "nolayers.yaml"
    path.write_text("input: 8x8x1\nnum_classes: 3\n")
    with pytest.raises(CnnkitError, match="layers"):
        from_yaml(path)


def test_yaml_unknown_top_level_key(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("input: 8x8x1\nnum_clases: 3\nlayers:\n  - fc: 3\n")
    with pytest.raises(CnnkitError) as info:
        from_yaml(path)
    msg = str(info.value)
    assert "'num_clases'" in msg
    assert "num_classes" in msg.split("'num_clases'", 1)[1]


def test_yaml_layer_error_names_the_layer(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("input: 8x8x1\nlayers:\n  - relu\n  - conv: {f: 11, n_C: 4}\n")
    with pytest.raises(CnnkitError, match="layer 2"):
        from_yaml(path)


def test_forward_with_wrong_input_size_names_both_sizes():
    model = sequential([{"conv": {"f": 3, "n_C": 2}}, {"fc": 3}], "8x8x1")
    with pytest.raises(CnnkitError) as info:
        model(torch.zeros(1, 1, 9, 9))
    msg = str(info.value)
    assert "8x8x1" in msg
    assert "9x9x1" in msg
    with pytest.raises(CnnkitError, match="8x8x2"):
        model(torch.zeros(1, 2, 8, 8))
