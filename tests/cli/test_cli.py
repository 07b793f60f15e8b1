"""The real command line, in a real subprocess: exit status, stdout and stderr.

Each command runs once, all of them side by side: every run pays the torch import.
"""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from cnnkit.models import create, list_models

ROOT = Path(__file__).resolve().parents[2]


# every command the tests run; they start together (the torch import dominates each one)
COMMANDS = [
    ("summary", "nosuchnet"),
    ("summary", "resnt18"),
    ("summary", "vgg16", "input=0x0x3"),
    ("summary", "lenet5", "input=2x2x1"),
    ("summary", "resnet18", "input=3x224x224"),
    ("summary", "lenet5", "--depht", "2"),
    ("summry",),
    ("models", "nosuch"),
    ("summary", "lenet5", "input=32x32x1", "explain=true"),
    ("summary", "lenet5", "--input", "32x32x1"),
    ("summary", "lenet5", "input=32x32x1"),
    ("summary", "resnet18", "small_input=true", "input=32x32x3"),
    ("summary", "examples/models/alexnet_course.yaml"),
    ("models",),
    ("models", "resnet"),
    ("models", "efficientnet", "details=true"),
    ("--help",),
    ("summary", "--help"),
    ("models", "--help"),
]
_RESULTS: dict[tuple[str, ...], subprocess.CompletedProcess] = {}


def _run(args: tuple[str, ...]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cnnkit.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module", autouse=True)
def _start_all_commands():
    with ThreadPoolExecutor(max_workers=4) as pool:
        _RESULTS.update(zip(COMMANDS, pool.map(_run, COMMANDS), strict=True))
    yield
    _RESULTS.clear()


def cnnkit(*args: str) -> subprocess.CompletedProcess:
    if args not in _RESULTS:
        _RESULTS[args] = _run(args)
    return _RESULTS[args]


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    """Exit 2, nothing on stdout, exactly one line on stderr; returns that line."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("cnnkit: error: ")
    assert lines[0].rstrip().endswith((".", "?"))  # a sentence
    return lines[0]


def _number(text: str, label: str) -> int:
    m = re.search(rf"^{label}\s+([\d,]+)", text, re.MULTILINE)
    assert m, f"no {label!r} line in:\n{text}"
    return int(m.group(1).replace(",", ""))


# --- mistakes: one sentence, exit status 2 ----------------------------------------------------


def test_unknown_model():
    line = _one_line_error(cnnkit("summary", "nosuchnet"))
    assert "unknown model" in line
    assert "'nosuchnet'" in line


def test_misspelled_model_gets_a_suggestion():
    line = _one_line_error(cnnkit("summary", "resnt18"))
    assert "'resnet18'" in line
    assert "did you mean" in line


def test_zero_input_size():
    line = _one_line_error(cnnkit("summary", "vgg16", "input=0x0x3"))
    assert "0x0x3" in line


def test_input_too_small_for_lenet5():
    line = _one_line_error(cnnkit("summary", "lenet5", "input=2x2x1"))
    assert "32x32" in line
    assert "2x2" in line


def test_channels_first_input_suggests_course_order():
    line = _one_line_error(cnnkit("summary", "resnet18", "input=3x224x224"))
    assert "224x224x3" in line


def test_misspelled_key_suggests_depth():
    line = _one_line_error(cnnkit("summary", "lenet5", "--depht", "2"))
    assert "'depht'" in line
    assert "depth" in line.split("'depht'", 1)[1]


def test_misspelled_command_suggests_summary():
    line = _one_line_error(cnnkit("summry"))
    assert "'summry'" in line
    assert "cnnkit summary" in line


def test_models_pattern_without_match():
    line = _one_line_error(cnnkit("models", "nosuch"))
    assert "'nosuch'" in line


# --- summary -----------------------------------------------------------------------------------


def test_lenet5_summary_explained():
    r = cnnkit("summary", "lenet5", "input=32x32x1", "explain=true")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for text in (
        "61,706",
        "28x28x6",
        "14x14x6",
        "10x10x16",
        "5x5x16",
        "156 = (5*5*1 + 1)*6",
        "FLOPs",
    ):
        assert text in out, text
    assert _number(out, "params") == 61_706
    macs, flops = _number(out, "MACs"), _number(out, "FLOPs")
    assert flops == 2 * macs
    # LeNet-5's MACs, by hand: conv1 28*28*6*25, conv2 10*10*16*150, FC 400*120 + 120*84 + 84*10
    assert macs == 28 * 28 * 6 * 25 + 10 * 10 * 16 * 150 + 400 * 120 + 120 * 84 + 84 * 10


def test_dash_dash_key_value_equals_key_equals_value():
    a = cnnkit("summary", "lenet5", "--input", "32x32x1")
    b = cnnkit("summary", "lenet5", "input=32x32x1")
    assert a.returncode == b.returncode == 0, (a.stderr, b.stderr)
    assert a.stdout == b.stdout
    assert "61,706" in a.stdout
    assert "(5*5*1 + 1)*6" not in a.stdout  # explain is off by default


def test_resnet18_small_input():
    r = cnnkit("summary", "resnet18", "small_input=true", "input=32x32x3")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^conv1\s+Conv2d\s+32x32x64\s", r.stdout, re.MULTILINE), r.stdout
    assert re.search(r"^maxpool\s+Identity\s+32x32x64\s", r.stdout, re.MULTILINE)
    # no stem down-sampling: 32 -> 16 -> 8 -> 4 over the three strided stages
    assert re.search(r"^layer4\.1\.bn2\s+BatchNorm2d\s+4x4x512\s", r.stdout, re.MULTILINE)


def test_summary_of_a_yaml_network():
    r = cnnkit("summary", "examples/models/alexnet_course.yaml")
    assert r.returncode == 0, r.stderr
    assert "62,378,344" in r.stdout
    assert _number(r.stdout, "params") == 62_378_344
    assert "55x55x96" in r.stdout


# --- models ------------------------------------------------------------------------------------

# published parameter counts (torchvision's model cards; LeNet-5 from the course)
PUBLISHED = {
    "lenet5": 61_706,
    "alexnet": 61_100_840,
    "vgg16": 138_357_544,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "mobilenet_v2": 3_504_872,
    "efficientnet_b0": 5_288_548,
}


def _listed(out: str) -> dict[str, str]:
    """model name -> its params column, from the `cnnkit models` table."""
    rows = {}
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 4 and re.fullmatch(r"[\d,]+", parts[3]):
            rows[parts[0]] = parts[3]
    return rows


def test_models_lists_every_model_with_its_params():
    r = cnnkit("models")
    assert r.returncode == 0, r.stderr
    rows = _listed(r.stdout)
    assert set(rows) == set(list_models())
    for name, n in PUBLISHED.items():
        assert rows[name] == f"{n:,}", name
    with torch.device("meta"):
        for name in list_models():
            n = sum(p.numel() for p in create(name).parameters())
            assert rows[name] == f"{n:,}", name
    lenet_line = next(ln for ln in r.stdout.splitlines() if ln.startswith("lenet5 "))
    assert "61,706" in lenet_line


def test_models_pattern_lists_only_resnets():
    r = cnnkit("models", "resnet")
    assert r.returncode == 0, r.stderr
    want = {f"resnet{d}" for d in (18, 34, 50, 101, 152)} | {"resnet1d"}  # the 1D one too
    assert set(_listed(r.stdout)) == want
    assert _listed(r.stdout)["resnet50"] == "25,557,032"


def test_models_efficientnet_details():
    r = cnnkit("models", "efficientnet", "details=true")
    assert r.returncode == 0, r.stderr
    assert set(_listed(r.stdout)) == {f"efficientnet_b{i}" for i in range(8)}
    table = r.stdout.split("phi", 1)[1]
    facts = {}
    for line in table.splitlines():
        parts = line.split()
        if parts and parts[0].startswith("efficientnet_b"):
            facts[parts[0]] = (int(parts[1]), float(parts[2]), float(parts[3]), int(parts[4]))
    # (phi, width, depth, resolution) of the reference implementation
    assert facts == {
        "efficientnet_b0": (0, 1.0, 1.0, 224),
        "efficientnet_b1": (1, 1.0, 1.1, 240),
        "efficientnet_b2": (2, 1.1, 1.2, 260),
        "efficientnet_b3": (3, 1.2, 1.4, 300),
        "efficientnet_b4": (4, 1.4, 1.8, 380),
        "efficientnet_b5": (5, 1.6, 2.2, 456),
        "efficientnet_b6": (6, 1.8, 2.6, 528),
        "efficientnet_b7": (7, 2.0, 3.1, 600),
    }


# --- help ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (("--help",), ("models", "summary")),
        (("summary", "--help"), ("input=", "explain")),
        (("models", "--help"), ("PATTERN", "details")),
    ],
)
def test_help_at_every_level(args, mentions):
    r = cnnkit(*args)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: cnnkit")
    assert r.stderr == ""
    for word in mentions:
        assert word in r.stdout


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1e-3", 0.001),  # YAML 1.1 alone reads exponents without a dot as text
        ("1E4", 10000.0),
        ("-2e-1", -0.2),
        ("3", 3),
        ("0.5", 0.5),
        ("[64, 32]", [64, 32]),
        ("true", True),
        ("none", None),
        ("adam", "adam"),
        ("nan", "nan"),  # not a usable number: left as text for the validators to name
        ("1e4x", "1e4x"),
    ],
)
def test_values_are_typed_as_written(text, value):
    from cnnkit.cli.args import parse_value

    got = parse_value(text)
    assert got == value and type(got) is type(value)


def test_config_reads_exponent_floats_from_yaml_text():
    from cnnkit.train import TrainConfig

    cfg = TrainConfig.from_dict({"lr": "1e-3", "eps": "1E-7", "name": "1e3"})
    assert (cfg.lr, cfg.eps, cfg.name) == (0.001, 1e-7, "1e3")
