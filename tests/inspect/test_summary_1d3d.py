"""`cnnkit summary` for 1D signals (n x n_C) and 3D volumes (n_D x n_H x n_W x n_C).

Shapes are checked against the modules' real outputs and ``cnnkit.shapes``; MACs of
a conv against ``f^d * n_C_prev * n_C * prod(output sizes)`` and torch's own
FlopCounterMode.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnkit
from cnnkit import shapes
from cnnkit.cli import main
from cnnkit.errors import CnnkitError
from cnnkit.models import create


def course(t: torch.Tensor) -> tuple[int, ...]:
    """(B, C, *spatial) -> (*spatial, C), computed here independently of the summary."""
    return (*t.shape[2:], t.shape[1]) if t.dim() > 2 else tuple(t.shape[1:])


def real_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple]:
    """Leaf name -> (module, input shape, output) from forward hooks."""
    names = {m: n for n, m in model.named_modules()}
    seen: dict[str, tuple] = {}

    def hook(m: nn.Module, i: tuple, o: torch.Tensor) -> None:
        seen.setdefault(names[m], (m, tuple(i[0].shape), o.detach()))

    hooks = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if not any(True for _ in m.children())
    ]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return seen


CASES = [
    ("resnet1d", "256x2", (1, 2, 256), nn.Conv1d),
    ("resnet1d", "100x3", (1, 3, 100), nn.Conv1d),
    ("convnet3d", "32x32x32x1", (1, 1, 32, 32, 32), nn.Conv3d),
    ("convnet3d", "16x24x40x2", (1, 2, 16, 24, 40), nn.Conv3d),
]


@pytest.mark.parametrize(("name", "size", "x", "conv"), CASES)
def test_every_leaf_shape_params_and_macs(name, size, x, conv):
    model = create(name, num_classes=6, in_channels=x[1])
    s = cnnkit.summary(model, size, depth=None)
    truth = real_outputs(model, torch.zeros(*x))
    rows = {r.name: r for r in s.rows if not r.name.endswith(")")}
    assert set(rows) == set(truth)
    n_convs = 0
    for row_name, (m, in_shape, out) in truth.items():
        row = rows[row_name]
        assert row.output_shapes == [course(out)], row_name
        assert row.params == sum(p.numel() for p in m.parameters()), row_name
        if isinstance(m, conv):
            n_convs += 1
            f = m.kernel_size
            d = len(f)
            assert d == (1 if conv is nn.Conv1d else 3)
            n_out = shapes.conv_output_size(in_shape[2:], f, m.padding, m.stride)
            assert tuple(out.shape[2:]) == n_out  # the module agrees with the course formula
            assert row.params == math.prod(f) * m.in_channels * m.out_channels  # no bias (BN)
            assert row.macs == math.prod(f) * m.in_channels * m.out_channels * math.prod(n_out)
            assert row.macs == shapes.conv_macs(n_out, m.out_channels, f, m.in_channels)
        elif isinstance(m, (nn.MaxPool1d, nn.MaxPool3d)):
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            n_out = shapes.pool_output_size(in_shape[2:], k, m.stride, m.padding)
            assert tuple(out.shape[2:]) == tuple(n_out)
            assert row.params == 0 and row.macs == 0
            assert row.other_ops == out.numel() * k ** (out.dim() - 2)  # one per window element
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm3d)):
            assert row.params == 2 * m.num_features and row.macs == 0
            assert row.other_ops == out.numel()
        elif isinstance(m, nn.Linear):
            assert row.macs == m.in_features * m.out_features
            assert row.params == (m.in_features + 1) * m.out_features
    assert n_convs >= 3
    assert s.total_params == sum(p.numel() for p in model.parameters())
    assert sum(r.params for r in s.rows) == s.total_params
    assert sum(r.macs for r in s.rows) == s.macs
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.zeros(*x))
    assert s.flops == fc.get_total_flops()


def test_resnet1d_rows_in_course_notation():
    s = cnnkit.summary(create("resnet1d"), "256x2", explain=True)
    text = s.to_text()
    assert "input 256x2   (shapes as n x n_C, batch 1)" in text
    out = {r.name: r.output for r in s.rows}
    assert out["features.stem.0"] == "128x32"
    assert out["features.pool"] == "64x32"
    assert [out[f"features.layer{i}.1"] for i in (1, 2, 3)] == ["64x32", "32x64", "16x128"]
    assert out["avgpool"] == "1x128" and out["fc"] == "10"
    stem = next(r for r in s.rows if r.name == "features.stem.0")
    assert "n: 128 = floor((256 + 2*3 - 7)/2) + 1" in stem.formula
    assert "params 448 = (7*2)*32" in stem.formula
    assert "MACs 57,344 = 128*32 * 7*2" in stem.formula
    assert stem.macs == 57_344 == 7 * 2 * 32 * 128
    pool = next(r for r in s.rows if r.name == "features.pool")
    assert "n: 64 = floor((128 + 2*1 - 3)/2) + 1" in pool.formula
    assert s.total_params == 241_546


def test_convnet3d_rows_in_course_notation():
    s = cnnkit.summary(create("convnet3d"), "32x32x32x1", explain=True)
    assert "(shapes as n_D x n_H x n_W x n_C, batch 1)" in s.to_text()
    convs = [r for r in s.rows if r.type == "Conv3d"]
    assert [r.output for r in convs] == ["32x32x32x16", "16x16x16x32", "8x8x8x64"]
    assert [r.output for r in s.rows if r.type == "MaxPool3d"] == [
        "16x16x16x16",
        "8x8x8x32",
        "4x4x4x64",
    ]
    assert "n_D = n_H = n_W: 32 = floor((32 + 2*1 - 3)/1) + 1" in convs[0].formula
    assert "params 432 = (3*3*3*1)*16" in convs[0].formula
    assert "MACs 56,623,104 = 16*16*16*32 * 3*3*3*16" in convs[1].formula
    assert [r.macs for r in convs] == [
        27 * 1 * 16 * 32**3,
        27 * 16 * 32 * 16**3,
        27 * 32 * 64 * 8**3,
    ]
    pool = next(r for r in s.rows if r.type == "MaxPool3d")
    assert "n_D = n_H = n_W: 16 = floor((32 + 2*0 - 2)/2) + 1" in pool.formula
    assert s.macs == sum(r.macs for r in convs) + 64 * 10
    assert s.total_params == 70_426


def test_uneven_volume_explains_each_axis():
    s = cnnkit.summary(create("convnet3d"), "16x24x40x1", explain=True)
    pool = next(r for r in s.rows if r.type == "MaxPool3d")
    assert pool.output == "8x12x20x16"
    assert "n_D: 8 = floor((16 + 2*0 - 2)/2) + 1" in pool.formula
    assert "n_H: 12 = floor((24 + 2*0 - 2)/2) + 1" in pool.formula
    assert "n_W: 20 = floor((40 + 2*0 - 2)/2) + 1" in pool.formula


def test_default_input_is_the_registered_one():
    assert cnnkit.summary(create("resnet1d")).input_size == (256, 2)
    assert cnnkit.summary(create("convnet3d")).input_size == (32, 32, 32, 1)


@pytest.mark.parametrize(
    ("name", "size", "match"),
    [
        ("convnet3d", "32x32x3", r"takes 3D inputs .* 2 spatial axes; give 4 sizes \(n_D x n_H"),
        ("resnet1d", "32x32x2", r"takes 1D inputs .* 2 spatial axes; give 2 sizes \(n x n_C\)"),
        ("resnet1d", "2x256", "sizes are n x n_C, so did you mean 256x2"),
        ("convnet3d", "1x32x32x32", "sizes are n_D x n_H x n_W x n_C, so did you mean 32x32x32x1"),
        ("resnet1d", "256x1", "in_channels=1"),
        ("convnet3d", "4x4x4x1", "at least 8"),
    ],
)
def test_mismatched_inputs_are_one_sentence(name, size, match):
    with pytest.raises(CnnkitError, match=match) as err:
        cnnkit.summary(create(name), size)
    assert "\n" not in str(err.value)


def test_notation():
    assert shapes.notation(1) == "n x n_C"
    assert shapes.notation(2) == "n_H x n_W x n_C"
    assert shapes.notation(3) == "n_D x n_H x n_W x n_C"
    with pytest.raises(CnnkitError, match="1D, 2D and 3D"):
        shapes.notation(4)


def test_2d_header_unchanged():
    assert "(shapes as n_H x n_W x n_C, batch 1)" in cnnkit.summary(create("lenet5")).to_text()


# ---------------------------------------------------------------- the command line


def test_cli_summary_resnet1d(capsys):
    assert main(["summary", "resnet1d", "input=256x2"]) == 0
    out = capsys.readouterr().out
    assert "resnet1d   input 256x2   (shapes as n x n_C, batch 1)" in out
    stem = next(ln for ln in out.splitlines() if ln.startswith("features.stem.0 "))
    assert stem.split()[1:5] == ["Conv1d", "128x32", "448", "57,344"]
    assert "16x128" in out and "241,546" in out


def test_cli_summary_convnet3d_explain(capsys):
    assert main(["summary", "convnet3d", "input=32x32x32x1", "explain=true"]) == 0
    out = capsys.readouterr().out
    assert "(shapes as n_D x n_H x n_W x n_C, batch 1)" in out
    conv = next(ln for ln in out.splitlines() if ln.startswith("features.conv1.0 "))
    assert conv.split()[1:5] == ["Conv3d", "32x32x32x16", "432", "14,155,776"]
    assert "n_D = n_H = n_W: 16 = floor((32 + 2*0 - 2)/2) + 1" in out
    assert "70,426" in out


def test_cli_summary_with_other_channels(capsys):
    assert main(["summary", "resnet1d", "input=500x1", "in_channels=1", "num_classes=3"]) == 0
    out = capsys.readouterr().out
    stem = next(ln for ln in out.splitlines() if ln.startswith("features.stem.0 "))
    assert stem.split()[1:4] == ["Conv1d", "250x32", f"{7 * 1 * 32}"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["convnet3d", "input=32x32x3"], ["convnet3d takes 3D inputs", "e.g. 32x32x32x1"]),
        (["resnet1d", "input=2x256"], ["did you mean 256x2"]),
        (["resnet1d", "input=224x224x3"], ["resnet1d takes 1D inputs", "e.g. 256x2"]),
    ],
)
def test_cli_wrong_input_exit_status_2(args, words, capsys):
    assert main(["summary", *args]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnkit: error: ")
    assert lines[0].endswith((".", "?"))
    assert "Traceback" not in cap.err
    for w in words:
        assert w in lines[0]
