"""Tests for cnnkit.shapes: the course's worked numbers, and the formulas against PyTorch.

The property tests build the real torch layer for random sizes and check that cnnkit
predicts exactly the output shape torch produces, raises exactly when torch raises,
and counts exactly the parameters and multiplications torch has.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnkit.errors import CnnkitError
from cnnkit.shapes import (
    Worked,
    bn_params,
    conv_macs,
    conv_output_size,
    conv_params,
    conv_transpose_macs,
    conv_transpose_output_size,
    depthwise_separable_macs,
    depthwise_separable_params,
    fc_macs,
    fc_params,
    padding,
    pool_output_size,
    receptive_field,
    same_padding,
)

PROPS = settings(max_examples=60, deadline=None)
FEW = settings(max_examples=25, deadline=None)

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_AXES = {1: ("n",), 2: ("n_H", "n_W"), 3: ("n_D", "n_H", "n_W")}
CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


# ----------------------------------------------------------------------------- helpers


def _per_axis(v, dims):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * dims


def _expected(spatial, scalar):
    """cnnkit returns an int when every argument was an int, else one int per axis."""
    spatial = tuple(spatial)
    if scalar:
        assert len(set(spatial)) == 1, spatial
        return spatial[0]
    return spatial


def _is_scalar(*vals):
    return not any(isinstance(v, (tuple, list)) for v in vals)


def _run(fn):
    """(result, None) or (None, exception), catching only the expected error types."""
    try:
        return fn(), None
    except (CnnkitError, RuntimeError) as e:  # cnnkit raises the first, torch the second
        return None, e


def _flops(module, *inputs):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*inputs)
    return counter.get_total_flops()


def _check_formula(worked):
    """Every line 'LHS = RHS' of a Worked text must evaluate to its value."""
    values = worked.value if isinstance(worked.value, tuple) else (worked.value,)
    lines = worked.text.split("\n")
    assert len(lines) == len(values)
    for line, value in zip(lines, values, strict=True):
        line = re.sub(r"^n(_[DHW])?: ", "", line)
        lhs, rhs = line.split(" = ", 1)
        assert int(lhs.replace(",", "")) == value, line
        got = eval(rhs, {"__builtins__": {}}, {"floor": math.floor, "ceil": math.ceil})
        assert got == value, f"{line!r} evaluates to {got}, not {value}"


def _assert_one_sentence(err):
    msg = str(err)
    assert msg, "empty message"
    assert "\n" not in msg, msg
    assert msg.endswith((".", "?")), msg
    # one sentence: no full stop followed by a new capitalised sentence
    assert not re.search(r"[.!?]\s+[A-Z]", msg), msg


# ----------------------------------------------------------------------------- 1. course numbers


def test_ten_3x3x3_filters_have_280_params():
    assert conv_params(3, 3, 10) == 280
    w = conv_params(3, 3, 10, explain=True)
    assert isinstance(w, Worked)
    assert w.value == 280
    assert w.text == "280 = (3*3*3 + 1)*10"
    assert str(w) == w.text
    assert int(w) == 280


def test_39x39x3_network_shapes():
    n1 = conv_output_size(39, 3, 0, 1)
    n2 = conv_output_size(n1, 5, 0, 2)
    n3 = conv_output_size(n2, 5, 0, 2)
    assert (n1, n2, n3) == (37, 17, 7)
    assert n3 * n3 * 40 == 1960
    assert conv_output_size(39, 3, explain=True).text == "37 = floor((39 + 2*0 - 3)/1) + 1"
    assert conv_output_size(37, 5, s=2, explain=True).text == "17 = floor((37 + 2*0 - 5)/2) + 1"


def test_inception_5x5_cost_and_bottleneck():
    assert conv_macs(28, 32, 5, 192) == 120_422_400
    assert conv_macs(28, 16, 1, 192) == 2_408_448
    assert conv_macs(28, 32, 5, 16) == 10_035_200
    assert conv_macs(28, 16, 1, 192) + conv_macs(28, 32, 5, 16) == 12_443_648
    assert conv_macs(28, 32, 5, 192, explain=True).text == "120,422,400 = 28*28*32 * 5*5*192"


def test_lenet5_shapes_and_params():
    n = conv_output_size(32, 5)
    assert n == 28
    n = pool_output_size(n, 2)
    assert n == 14
    n = conv_output_size(n, 5)
    assert n == 10
    n = pool_output_size(n, 2)
    assert n == 5
    params = [
        conv_params(5, 1, 6),
        conv_params(5, 6, 16),
        fc_params(n * n * 16, 120),
        fc_params(120, 84),
        fc_params(84, 10),
    ]
    assert params == [156, 2416, 48120, 10164, 850]
    assert sum(params) == 61_706
    assert conv_params(5, 6, 16, explain=True).text == "2,416 = (5*5*6 + 1)*16"
    assert fc_params(400, 120, explain=True).text == "48,120 = (400 + 1)*120"


def test_conv_vs_fully_connected_param_count():
    # 32x32x3 -> 28x28x6 with six 5x5 filters versus a dense layer between the two volumes
    assert conv_output_size(32, 5) == 28
    assert conv_params(5, 3, 6) == (5 * 5 * 3 + 1) * 6 == 456
    dense = fc_params(32 * 32 * 3, 28 * 28 * 6)
    assert dense == 3073 * 4704 == 14_455_392
    assert dense > 14_000_000
    assert fc_params(3072, 4704, bias=False) == 3072 * 4704


def test_bn_and_fc_macs_and_no_bias():
    assert bn_params(64) == 128
    assert bn_params(64, explain=True).text.startswith("128 = 2*64")
    assert fc_macs(400, 120) == 48_000
    assert fc_macs(400, 120, explain=True).text == "48,000 = 400*120"
    assert conv_params(3, 3, 10, bias=False) == 270
    assert conv_params(3, 3, 10, bias=False, explain=True).text == "270 = (3*3*3)*10"


def test_depthwise_separable_course_numbers():
    # 6x6x3 input, 3x3 filters, 5 output channels -> 4x4x5
    assert depthwise_separable_macs(4, 3, 3, 5) == 4 * 4 * 3 * 9 + 4 * 4 * 5 * 3 == 672
    assert conv_macs(4, 5, 3, 3) == 2160
    assert depthwise_separable_params(3, 3, 5) == (9 + 1) * 3 + (3 + 1) * 5 == 50
    assert depthwise_separable_params(3, 3, 5, bias=False) == 27 + 15


def test_conv_transpose_worked_number():
    assert conv_transpose_output_size(2, 3, p=1, s=2) == 3
    assert conv_transpose_output_size(7, 4, p=1, s=2) == 14
    w = conv_transpose_output_size(7, 4, p=1, s=2, output_padding=1, explain=True)
    assert w.value == 15
    assert w.text == "15 = (7 - 1)*2 - 2*1 + 4 + 1"
    assert conv_transpose_macs(2, 1, 3, 1) == 2 * 2 * 9


# ----------------------------------------------------------------------------- 2. shapes vs torch


def _axis_values(draw, dims, strategy):
    """An int (same on every axis) or, for 2D/3D, a tuple with one value per axis."""
    if dims > 1 and draw(st.booleans()):
        return tuple(draw(strategy) for _ in range(dims))
    return draw(strategy)


@st.composite
def conv_cases(draw):
    dims = draw(st.sampled_from([1, 2, 3]))
    nmax = 20 if dims < 3 else 9
    return {
        "dims": dims,
        "n": _axis_values(draw, dims, st.integers(1, nmax)),
        "f": _axis_values(draw, dims, st.integers(1, 7)),
        "p": _axis_values(draw, dims, st.integers(0, 3)),
        "s": _axis_values(draw, dims, st.integers(1, 4)),
        "d": _axis_values(draw, dims, st.integers(1, 3)),
        "c_in": draw(st.integers(1, 2)),
        "c_out": draw(st.integers(1, 2)),
    }


@PROPS
@given(conv_cases())
@example({"dims": 2, "n": 39, "f": 3, "p": 0, "s": 1, "d": 1, "c_in": 1, "c_out": 1})
@example({"dims": 2, "n": (4, 9), "f": 5, "p": (0, 1), "s": 1, "d": 1, "c_in": 1, "c_out": 1})
@example({"dims": 3, "n": 5, "f": 3, "p": 0, "s": 1, "d": 3, "c_in": 2, "c_out": 1})
def test_conv_output_size_matches_torch(case):
    dims, n, f, p, s, d = (case[k] for k in ("dims", "n", "f", "p", "s", "d"))
    got, err = _run(lambda: conv_output_size(n, f, p, s, d))
    layer = CONV[dims](case["c_in"], case["c_out"], f, stride=s, padding=p, dilation=d)
    x = torch.zeros(1, case["c_in"], *_per_axis(n, dims))
    with torch.no_grad():
        out, torch_err = _run(lambda: layer(x))
    if err is not None:
        assert isinstance(err, CnnkitError), err
        assert torch_err is not None, f"cnnkit raised {err} but torch gave {tuple(out.shape)}"
        return
    assert torch_err is None, f"torch raised {torch_err} but cnnkit gave {got}"
    assert got == _expected(out.shape[2:], _is_scalar(n, f, p, s, d))


@st.composite
def pool_cases(draw):
    kind = draw(st.sampled_from(["max", "avg"]))
    return {
        "kind": kind,
        "n": _axis_values(draw, 2, st.integers(1, 16)),
        "f": _axis_values(draw, 2, st.integers(1, 6)),
        "s": _axis_values(draw, 2, st.integers(1, 4)),
        "p": _axis_values(draw, 2, st.integers(0, 3)),
        "d": _axis_values(draw, 2, st.integers(1, 3)) if kind == "max" else 1,
        "ceil_mode": draw(st.booleans()),
    }


@PROPS
@given(pool_cases())
@example({"kind": "max", "n": 28, "f": 2, "s": 2, "p": 0, "d": 1, "ceil_mode": False})
@example({"kind": "avg", "n": 5, "f": 2, "s": 2, "p": 1, "d": 1, "ceil_mode": True})
@example({"kind": "max", "n": 5, "f": 3, "s": 3, "p": 1, "d": 1, "ceil_mode": True})
@example({"kind": "max", "n": 10, "f": 3, "s": 1, "p": 2, "d": 1, "ceil_mode": False})
# dilated window: torch limits p to f//2 (the raw kernel), not half the dilated span
@example({"kind": "max", "n": 10, "f": 3, "s": 1, "p": 2, "d": 2, "ceil_mode": False})
# ceil_mode: torch keeps a last window that overhangs the (padded) input
@example({"kind": "max", "n": 1, "f": 2, "s": 2, "p": 0, "d": 1, "ceil_mode": True})
@example({"kind": "max", "n": 2, "f": 5, "s": 2, "p": 1, "d": 1, "ceil_mode": True})
@example({"kind": "avg", "n": 2, "f": 5, "s": 2, "p": 1, "d": 1, "ceil_mode": True})
def test_pool_output_size_matches_torch(case):
    kind, n, f, s, p, d = (case[k] for k in ("kind", "n", "f", "s", "p", "d"))
    ceil_mode = case["ceil_mode"]
    got, err = _run(lambda: pool_output_size(n, f, s, p, d, ceil_mode=ceil_mode))
    if kind == "max":
        layer = nn.MaxPool2d(f, stride=s, padding=p, dilation=d, ceil_mode=ceil_mode)
    else:
        layer = nn.AvgPool2d(f, stride=s, padding=p, ceil_mode=ceil_mode)
    x = torch.zeros(1, 1, *_per_axis(n, 2))
    out, torch_err = _run(lambda: layer(x))
    if err is not None:
        assert isinstance(err, CnnkitError), err
        assert torch_err is not None, f"cnnkit raised {err} but torch gave {tuple(out.shape)}"
        return
    assert torch_err is None, f"torch raised {torch_err} but cnnkit gave {got}"
    assert got == _expected(out.shape[2:], _is_scalar(n, f, s, p, d))


def test_pool_padding_limit_with_dilation_is_torchs():
    # torch: MaxPool2d(3, stride=1, padding=2, dilation=2) raises "pad should be smaller than
    # or equal to half of kernel size" -- the limit is f//2 = 1, not half the dilated span 5
    with pytest.raises(RuntimeError, match="half of kernel size"):
        nn.MaxPool2d(3, stride=1, padding=2, dilation=2)(torch.zeros(1, 1, 10, 10))
    with pytest.raises(CnnkitError, match="p=2"):
        pool_output_size(10, 3, s=1, p=2, d=2)


def test_pool_ceil_mode_keeps_overhanging_last_window():
    # torch keeps a ceil-mode window that starts inside the input even when it runs past
    # the padded input: MaxPool1d(2, 2, ceil_mode=True) on a length-1 input gives 1
    assert nn.MaxPool1d(2, 2, ceil_mode=True)(torch.zeros(1, 1, 1)).shape[-1] == 1
    assert nn.AvgPool2d(5, 2, 1, ceil_mode=True)(torch.zeros(1, 1, 2, 2)).shape[-1] == 1
    assert pool_output_size(1, 2, ceil_mode=True) == 1
    assert pool_output_size(2, 5, s=2, p=1, ceil_mode=True) == 1
    # without ceil_mode the same window is an error in both
    with pytest.raises(CnnkitError):
        pool_output_size(1, 2)


def test_pool_stride_defaults_to_window():
    assert pool_output_size(28, 2) == 14
    assert pool_output_size(28, 3) == 9 == nn.MaxPool2d(3)(torch.zeros(1, 1, 28, 28)).shape[-1]
    assert pool_output_size((28, 9), (2, 3)) == (14, 3)


@st.composite
def conv_t_cases(draw):
    dims = draw(st.sampled_from([1, 2, 3]))
    nmax = 10 if dims < 3 else 5
    s = _axis_values(draw, dims, st.integers(1, 3))
    d = _axis_values(draw, dims, st.integers(1, 3))
    max_sd = [max(a, b) for a, b in zip(_per_axis(s, dims), _per_axis(d, dims), strict=True)]
    if draw(st.integers(0, 4)) == 0:  # sometimes an invalid output_padding
        op = draw(st.integers(0, 3))
    elif dims > 1 and draw(st.booleans()):
        op = tuple(draw(st.integers(0, m - 1)) for m in max_sd)
    else:
        op = draw(st.integers(0, min(max_sd) - 1))
    return {
        "dims": dims,
        "n": _axis_values(draw, dims, st.integers(1, nmax)),
        "f": _axis_values(draw, dims, st.integers(1, 5)),
        "p": _axis_values(draw, dims, st.integers(0, 4)),
        "s": s,
        "op": op,
        "d": d,
    }


@PROPS
@given(conv_t_cases())
@example({"dims": 2, "n": 7, "f": 4, "p": 1, "s": 2, "op": 1, "d": 1})
@example({"dims": 2, "n": 5, "f": 3, "p": 0, "s": 1, "op": 1, "d": 2})
@example({"dims": 2, "n": 1, "f": 1, "p": 1, "s": 1, "op": 0, "d": 1})
@example({"dims": 2, "n": 5, "f": 3, "p": 0, "s": 2, "op": 2, "d": 1})
@example({"dims": 2, "n": 1, "f": 4, "p": 2, "s": 1, "op": 0, "d": 1})
def test_conv_transpose_output_size_matches_torch(case):
    dims, n, f, p, s, op, d = (case[k] for k in ("dims", "n", "f", "p", "s", "op", "d"))
    got, err = _run(lambda: conv_transpose_output_size(n, f, p, s, op, d))
    layer = CONV_T[dims](1, 1, f, stride=s, padding=p, output_padding=op, dilation=d)
    x = torch.zeros(1, 1, *_per_axis(n, dims))
    with torch.no_grad():
        out, torch_err = _run(lambda: layer(x))
    if err is not None:
        assert isinstance(err, CnnkitError), err
        if torch_err is None:
            # torch returns an empty tensor for a size of 0; cnnkit rejects that size on purpose
            assert 0 in out.shape[2:], f"cnnkit raised {err} but torch gave {tuple(out.shape)}"
            assert "non-positive size 0" in str(err)
        return
    assert torch_err is None, f"torch raised {torch_err} but cnnkit gave {got}"
    assert got == _expected(out.shape[2:], _is_scalar(n, f, p, s, op, d))


@PROPS
@given(
    dims=st.sampled_from([1, 2, 3]),
    n=st.integers(1, 12),
    f=st.integers(1, 7),
    d=st.integers(1, 3),
)
def test_same_padding_string_matches_torch(dims, n, f, d):
    if dims == 3:
        n = min(n, 6)
    total = d * (f - 1)
    if total % 2:
        # an uneven split cannot be one p per side; cnnkit points to same_padding()
        with pytest.raises(CnnkitError, match=f"f={f}"):
            conv_output_size(n, f, "same", 1, d)
        with pytest.raises(CnnkitError, match="same_padding"):
            padding("same", f, d)
        return
    assert padding("same", f, d) == total // 2
    assert padding("valid", f, d) == 0
    layer = CONV[dims](1, 1, f, padding="same", dilation=d)
    with torch.no_grad():
        out = layer(torch.zeros(1, 1, *(n,) * dims))
    assert conv_output_size(n, f, "same", 1, d) == out.shape[-1] == n
    assert conv_output_size(n, f, "SAME", 1, d) == n
    assert conv_output_size((n,) * dims, f, "same", 1, d) == tuple(out.shape[2:])
    valid = conv_output_size(n, f, "valid", 1, d) if n >= total + 1 else None
    if valid is not None:
        assert valid == CONV[dims](1, 1, f, dilation=d)(torch.zeros(1, 1, *(n,) * dims)).shape[-1]


def test_same_padding_per_axis_and_worked_text():
    assert padding("same", (3, 5)) == (1, 2)
    assert padding("same", 3, (1, 2)) == (1, 2)
    assert same_padding(3) == (1, 1)
    assert same_padding(4) == (1, 2)
    assert same_padding(2, 3) == (1, 2)
    assert same_padding((4, 3)) == ((1, 2), (1, 1))
    w = same_padding(4, explain=True)
    assert w.value == (1, 2)
    assert w.text == (
        "total = 4 - 1 = 3: 1 before, 2 after (even f: the extra pixel goes after, bottom/right)"
    )
    w = same_padding((4, 3), (1, 2), explain=True)
    assert w.text.split("\n") == [
        "n_H: total = 4 - 1 = 3: 1 before, 2 after"
        " (even f: the extra pixel goes after, bottom/right)",
        "n_W: total = 2*(3 - 1) = 4: 2 before, 2 after",
    ]


# ----------------------------------------------------------------------------- 3. even-f split


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@FEW
@given(
    fh=st.integers(1, 6),
    fw=st.integers(1, 6),
    dh=st.integers(1, 3),
    dw=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
@example(fh=4, fw=4, dh=1, dw=1, seed=0)
@example(fh=2, fw=6, dh=3, dw=1, seed=1)
def test_same_padding_split_matches_torch_conv2d_same(fh, fw, dh, dw, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 1, 9, 8, generator=g, dtype=torch.float64)
    w = torch.randn(1, 1, fh, fw, generator=g, dtype=torch.float64)
    (hb, ha), (wb, wa) = same_padding((fh, fw), (dh, dw))
    assert hb + ha == dh * (fh - 1) and wb + wa == dw * (fw - 1)
    torch_same = F.conv2d(x, w, padding="same", dilation=(dh, dw))
    ours = F.conv2d(F.pad(x, (wb, wa, hb, ha)), w, dilation=(dh, dw))
    assert ours.shape == torch_same.shape == x.shape
    torch.testing.assert_close(ours, torch_same, rtol=0, atol=1e-12)
    if (hb, wb) != (ha, wa):
        # the split matters: padding the other way round gives a different result
        swapped = F.conv2d(F.pad(x, (wa, wb, ha, hb)), w, dilation=(dh, dw))
        assert not torch.allclose(swapped, torch_same)


def test_same_padding_even_f_ones_kernel():
    x = torch.ones(1, 1, 6, 6)
    w = torch.ones(1, 1, 4, 4)
    before, after = same_padding(4)
    assert (before, after) == (1, 2)
    want = F.conv2d(x, w, padding="same")
    got = F.conv2d(F.pad(x, (before, after, before, after)), w)
    torch.testing.assert_close(got, want)
    # first row sees 1 padded row above (3 real rows), last row sees 2 below (2 real rows)
    assert want[0, 0, 0, 0].item() == 9.0 and want[0, 0, -1, -1].item() == 4.0


# ----------------------------------------------------------------------------- 4. params vs torch


def _n_params(*modules):
    return sum(p.numel() for m in modules for p in m.parameters())


@st.composite
def grouped_conv(draw):
    dims = draw(st.sampled_from([1, 2, 3]))
    groups = draw(st.integers(1, 4))
    c_in = groups * draw(st.integers(1, 4))
    c_out = groups * draw(st.integers(1, 4))
    if dims > 1 and draw(st.booleans()):
        f = tuple(draw(st.integers(1, 5)) for _ in range(dims))
    else:
        f = draw(st.integers(1, 5))
    return dims, f, c_in, c_out, groups, draw(st.booleans())


@FEW
@given(grouped_conv())
@example((2, 3, 3, 10, 1, True))
@example((2, 3, 8, 8, 8, True))  # depthwise
@example((3, (3, 5, 1), 4, 6, 2, False))
def test_conv_params_matches_torch(case):
    dims, f, c_in, c_out, groups, bias = case
    layer = CONV[dims](c_in, c_out, f, groups=groups, bias=bias)
    want = _n_params(layer)
    assert conv_params(f, c_in, c_out, bias=bias, groups=groups, dims=dims) == want
    w = conv_params(f, c_in, c_out, bias=bias, groups=groups, dims=dims, explain=True)
    assert w.value == want
    _check_formula(w)


@FEW
@given(n_in=st.integers(1, 300), n_out=st.integers(1, 300), bias=st.booleans())
def test_fc_params_matches_linear(n_in, n_out, bias):
    want = _n_params(nn.Linear(n_in, n_out, bias=bias))
    assert fc_params(n_in, n_out, bias=bias) == want
    _check_formula(fc_params(n_in, n_out, bias=bias, explain=True))


@FEW
@given(n_c=st.integers(1, 512))
def test_bn_params_matches_batchnorm(n_c):
    bn = nn.BatchNorm2d(n_c)
    assert bn_params(n_c) == _n_params(bn) == 2 * n_c
    # running mean/var are buffers, not parameters
    assert sum(b.numel() for b in bn.buffers() if b.dim() > 0) == 2 * n_c
    assert bn_params(n_c, explain=True).value == 2 * n_c


@FEW
@given(
    dims=st.sampled_from([1, 2, 3]),
    f=st.integers(1, 5),
    c_in=st.integers(1, 12),
    c_out=st.integers(1, 12),
    bias=st.booleans(),
)
def test_depthwise_separable_params_matches_torch_pair(dims, f, c_in, c_out, bias):
    dw = CONV[dims](c_in, c_in, f, groups=c_in, bias=bias)
    pw = CONV[dims](c_in, c_out, 1, bias=bias)
    want = _n_params(dw, pw)
    assert depthwise_separable_params(f, c_in, c_out, bias=bias, dims=dims) == want
    w = depthwise_separable_params(f, c_in, c_out, bias=bias, dims=dims, explain=True)
    assert w.value == want
    assert "depthwise [" in w.text and "pointwise [" in w.text
    assert conv_params(f, c_in, c_in, bias=bias, groups=c_in, dims=dims) == _n_params(dw)


# ----------------------------------------------------------------------------- 5. MACs vs torch


@st.composite
def mac_cases(draw):
    dims = draw(st.sampled_from([1, 2, 3]))
    groups = draw(st.integers(1, 3))
    c_in = groups * draw(st.integers(1, 3))
    c_out = groups * draw(st.integers(1, 3))
    f = draw(st.integers(1, 4))
    n = draw(st.integers(f, 10 if dims < 3 else 6))
    s = draw(st.integers(1, 3))
    p = draw(st.integers(0, 2))
    return dims, n, f, c_in, c_out, groups, s, p


@FEW
@given(mac_cases())
@example((2, 28, 5, 192, 32, 1, 1, 2))
@example((2, 8, 3, 6, 6, 6, 1, 1))
@example((2, 9, 3, 4, 6, 2, 2, 0))
def test_conv_macs_matches_torch(case):
    dims, n, f, c_in, c_out, groups, s, p = case
    layer = CONV[dims](c_in, c_out, f, stride=s, padding=p, groups=groups, bias=False)
    x = torch.zeros(1, c_in, *(n,) * dims)
    with torch.no_grad():
        out = layer(x)
    n_out = tuple(out.shape[2:])
    assert n_out == _per_axis(conv_output_size((n,) * dims, f, p, s), dims)
    # every output number is one dot product with one filter (weight[0])
    independent = out.numel() * layer.weight[0].numel()
    assert independent == out.numel() * layer.weight.numel() // c_out
    macs = conv_macs(n_out, c_out, f, c_in, groups=groups)
    assert macs == independent
    assert 2 * macs == _flops(layer, x)
    if dims == 2:
        assert conv_macs(n_out[0], c_out, f, c_in, groups=groups) == macs
    _check_formula(conv_macs(n_out, c_out, f, c_in, groups=groups, explain=True))


@FEW
@given(mac_cases(), st.integers(0, 1))
@example((2, 3, 3, 4, 6, 2, 2, 1), 1)
@example((2, 4, 4, 8, 4, 1, 2, 1), 0)
def test_conv_transpose_macs_matches_torch(case, op):
    dims, n, f, c_in, c_out, groups, s, p = case
    op = min(op, s - 1)
    p = min(p, f - 1)  # keep the transposed output non-empty
    layer = CONV_T[dims](c_in, c_out, f, stride=s, padding=p, output_padding=op, groups=groups)
    x = torch.zeros(1, c_in, *(n,) * dims)
    # weight is (in, out/groups, *k): each input number scales one out/groups x k slab
    assert tuple(layer.weight.shape) == (c_in, c_out // groups, *(f,) * dims)
    independent = x.numel() * layer.weight[0].numel()
    macs = conv_transpose_macs((n,) * dims, c_in, f, c_out, groups=groups)
    assert macs == independent == n**dims * c_in * f**dims * (c_out // groups)
    assert 2 * macs == _flops(layer, x)
    _check_formula(conv_transpose_macs((n,) * dims, c_in, f, c_out, groups=groups, explain=True))


@FEW
@given(n_in=st.integers(1, 200), n_out=st.integers(1, 200))
def test_fc_macs_matches_torch(n_in, n_out):
    layer = nn.Linear(n_in, n_out)
    assert fc_macs(n_in, n_out) == layer.weight.numel()
    assert 2 * fc_macs(n_in, n_out) == _flops(layer, torch.zeros(1, n_in))


@FEW
@given(
    n=st.integers(3, 12),
    f=st.sampled_from([1, 3, 5]),
    c_in=st.integers(1, 8),
    c_out=st.integers(1, 8),
)
def test_depthwise_separable_macs_matches_torch(n, f, c_in, c_out):
    dw = nn.Conv2d(c_in, c_in, f, padding=f // 2, groups=c_in, bias=False)
    pw = nn.Conv2d(c_in, c_out, 1, bias=False)
    x = torch.zeros(1, c_in, n, n)
    want = (_flops(dw, x) + _flops(pw, x)) // 2
    assert depthwise_separable_macs(n, c_in, f, c_out) == want
    standard = conv_macs(n, c_out, f, c_in)
    ratio = depthwise_separable_macs(n, c_in, f, c_out) / standard
    assert math.isclose(ratio, 1 / c_out + 1 / f**2)


# ----------------------------------------------------------------------------- 6. errors


ERRORS = [
    ("stride 0", lambda: conv_output_size(10, 3, s=0), ["stride", "got 0"]),
    ("pool stride 0", lambda: pool_output_size(10, 2, s=0), ["stride"]),
    ("transpose stride 0", lambda: conv_transpose_output_size(4, 3, s=0), ["stride"]),
    ("negative n", lambda: conv_output_size(-1, 3), ["n must", "-1"]),
    ("zero f", lambda: conv_output_size(10, 0), ["f must", "0"]),
    ("dilation 0", lambda: conv_output_size(10, 3, d=0), ["dilation"]),
    ("negative p", lambda: conv_output_size(10, 3, p=-1), ["padding", "-1"]),
    ("non-int f", lambda: conv_output_size(10, 2.5), ["f must be an integer", "2.5"]),
    ("kernel > input", lambda: conv_output_size(3, 5), ["f=5", "3 + 2*0 = 3"]),
    ("dilated > input", lambda: conv_output_size(4, 3, d=2), ["f=3", "d=2", "spans 5"]),
    ("kernel > input axis", lambda: conv_output_size((10, 3), 5), ["f=5", "n_W"]),
    ("pool window > input", lambda: pool_output_size(2, 3), ["pooling window", "f=3"]),
    ("pool padding", lambda: pool_output_size(10, 3, p=2), ["p=2", "f=3", "p <= 1"]),
    ("groups", lambda: conv_params(3, 4, 6, groups=3), ["groups=3", "n_C_prev=4"]),
    ("groups macs", lambda: conv_macs(8, 6, 3, 4, groups=4), ["groups=4", "n_C=6"]),
    (
        "output_padding",
        lambda: conv_transpose_output_size(5, 3, s=2, output_padding=2),
        ["output_padding=2", "s=2"],
    ),
    ("transpose too small", lambda: conv_transpose_output_size(1, 1, p=1), ["p=1"]),
    ("same even f", lambda: conv_output_size(10, 4, "same"), ["f=4", "same"]),
    ("padding same even f", lambda: padding("same", 4), ["f=4"]),
    ("unknown padding", lambda: conv_output_size(10, 3, "full"), ["'full'", "padding"]),
    ("unknown padding mode", lambda: padding("causal", 3), ["'causal'"]),
    ("axis lengths", lambda: conv_output_size((10, 10), (3, 3, 3)), ["same length"]),
    ("4 axes", lambda: conv_output_size((5, 5, 5, 5), 3), ["only 1D, 2D and 3D", "4"]),
    ("fc n_in 0", lambda: fc_params(0, 3), ["n_in"]),
    ("bn n_C 0", lambda: bn_params(0), ["n_C"]),
]


@pytest.mark.parametrize(("call", "needles"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_are_one_sentence_cnnkit_errors(call, needles):
    with pytest.raises(CnnkitError) as info:
        call()
    assert isinstance(info.value, ValueError)
    _assert_one_sentence(info.value)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_cnnkit_error_is_value_error():
    assert issubclass(CnnkitError, ValueError)
    with pytest.raises(ValueError, match="stride"):
        conv_output_size(10, 3, s=0)


# ----------------------------------------------------------------------------- 7. no torch


def test_import_shapes_does_not_import_torch():
    code = (
        "import sys, cnnkit.shapes\n"
        "assert cnnkit.shapes.conv_params(3, 3, 10) == 280\n"
        "print('torch' in sys.modules, any(m.startswith('torch.') for m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]


# ----------------------------------------------------------------------------- 8. Worked objects


def test_worked_2d_one_line_per_axis():
    w = conv_output_size((39, 20), 3, explain=True)
    assert w.value == (37, 18)
    assert w.text == (
        "n_H: 37 = floor((39 + 2*0 - 3)/1) + 1\nn_W: 18 = floor((20 + 2*0 - 3)/1) + 1"
    )
    with pytest.raises(TypeError):
        int(w)


def test_worked_3d_labels_and_per_axis_values():
    w = conv_output_size((8, 39, 20), (3, 3, 5), p=(1, 0, 2), s=(1, 2, 1), explain=True)
    assert w.value == (8, 19, 20)
    lines = w.text.split("\n")
    assert [line.split(":")[0] for line in lines] == ["n_D", "n_H", "n_W"]
    assert lines[1] == "n_H: 19 = floor((39 + 2*0 - 3)/2) + 1"
    assert lines[2] == "n_W: 20 = floor((20 + 2*2 - 5)/1) + 1"
    w = pool_output_size((4, 4, 4), 2, explain=True)
    assert w.value == (2, 2, 2)
    assert w.text.split("\n")[0] == "n_D: 2 = floor((4 + 2*0 - 2)/2) + 1"


def test_worked_scalar_has_no_label_and_1tuple_has_n():
    assert conv_output_size(39, 3, explain=True).text.startswith("37 = ")
    w = conv_output_size((39,), 3, explain=True)
    assert w.value == (37,)
    assert w.text == "n: 37 = floor((39 + 2*0 - 3)/1) + 1"


def test_worked_dilation_text():
    w = conv_output_size(10, 3, d=2, explain=True)
    assert w.value == 6
    assert w.text == "6 = floor((10 + 2*0 - 2*(3 - 1) - 1)/1) + 1"
    _check_formula(w)
    w = conv_transpose_output_size(5, 3, d=2, explain=True)
    up = nn.ConvTranspose2d(1, 1, 3, dilation=2)
    assert w.value == 9 == up(torch.zeros(1, 1, 5, 5)).shape[-1]
    assert w.text == "9 = (5 - 1)*1 - 2*0 + (2*(3 - 1) + 1)"
    w = pool_output_size(10, 3, s=1, d=2, explain=True)
    assert w.text == "6 = floor((10 + 2*0 - 2*(3 - 1) - 1)/1) + 1"


def test_worked_ceil_text():
    w = pool_output_size(7, 2, ceil_mode=True, explain=True)
    assert w.value == 4
    assert w.text == "4 = ceil((7 + 2*0 - 2)/2) + 1"


def test_worked_ceil_text_when_torch_drops_last_window():
    # ceil((5 + 2 - 2)/2) + 1 = 4, but the 4th window would start in the right padding,
    # so torch (and cnnkit) give 3: the written formula must still evaluate to the value
    w = pool_output_size(5, 2, p=1, ceil_mode=True, explain=True)
    assert w.value == 3 == nn.MaxPool1d(2, 2, 1, ceil_mode=True)(torch.zeros(1, 1, 5)).shape[-1]
    _check_formula(w)


@PROPS
@given(pool_cases())
@example({"kind": "max", "n": 39, "f": 3, "s": 1, "p": 0, "d": 2, "ceil_mode": False})
@example({"kind": "max", "n": (8, 5), "f": 3, "s": (2, 1), "p": 1, "d": 1, "ceil_mode": True})
# ceil_mode where torch drops the last window (it would start in the right padding)
@example({"kind": "max", "n": 5, "f": 2, "s": 2, "p": 1, "d": 1, "ceil_mode": True})
def test_worked_window_text_evaluates_to_value(case):
    n, f, s, p, d = (case[k] for k in ("n", "f", "s", "p", "d"))
    ceil_mode = case["ceil_mode"]
    for fn in (
        lambda: pool_output_size(n, f, s, p, d, ceil_mode=ceil_mode, explain=True),
        lambda: conv_output_size(n, f, p, s, d, explain=True),
    ):
        w, err = _run(fn)
        if err is None:
            _check_formula(w)


@PROPS
@given(conv_t_cases())
def test_worked_transpose_text_evaluates_to_value(case):
    n, f, p, s, op, d = (case[k] for k in ("n", "f", "p", "s", "op", "d"))
    w, err = _run(lambda: conv_transpose_output_size(n, f, p, s, op, d, explain=True))
    if err is None:
        _check_formula(w)
        if isinstance(w.value, tuple):
            labels = [line.split(":")[0] for line in w.text.split("\n")]
            assert labels == list(_AXES[case["dims"]])


@pytest.mark.parametrize(
    "layers",
    [
        [(5, 1), (2, 2), (5, 1), (2, 2)],  # LeNet-5: the last pooling unit sees 16x16
        [(7, 2, 3), (3, 2, 1), (3, 1, 1), (3, 1, 1)],  # ResNet stem and a basic block
        [(3, 1, 1, 2), (3, 2, 0, 3), (2, 2)],  # dilated, and an even window
    ],
)
def test_receptive_field_matches_the_input_gradient(layers):
    # the input pixels that change a unit's output are exactly its receptive field
    rf = receptive_field(layers)
    n = 96
    convs = []
    for f, s, *rest in layers:
        p = rest[0] if rest else 0
        d = rest[1] if len(rest) > 1 else 1
        conv = nn.Conv2d(1, 1, f, stride=s, padding=p, dilation=d, bias=False)
        nn.init.constant_(conv.weight, 1.0)
        convs.append(conv)
    x = torch.ones(1, 1, n, n, requires_grad=True)
    y = nn.Sequential(*convs)(x)
    u = y.shape[-1] // 2  # a unit whose field lies inside the image
    y[0, 0, u, u].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    first, last = rf.window(u)
    assert first > 0 and last < n - 1
    assert (rows.min().item(), rows.max().item()) == (first, last)
    assert last - first + 1 == rf.r
    assert rf.j == math.prod(s for _, s, *_ in layers)


def test_receptive_field_worked_and_mistakes():
    rf = receptive_field([(5, 1), (2, 2), (5, 1), (2, 2)])
    assert (rf.r, rf.j, rf.start) == (16, 4, 7.5)
    assert "r = 14 + 1*2 = 16" in str(rf)
    assert receptive_field([(3, 1)] * 3).r == 7  # three 3x3 convs see 7x7 (VGG's argument)
    with pytest.raises(CnnkitError, match="at least one layer"):
        receptive_field([])
    with pytest.raises(CnnkitError, match="layer 2 of receptive_field"):
        receptive_field([(3, 1), (3,)])
    with pytest.raises(CnnkitError, match="must be at least 1"):
        receptive_field([(3, 0)])
