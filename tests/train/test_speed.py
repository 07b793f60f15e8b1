"""Automatic speed settings: precision, memory format, compile, calibration and its cache."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
from torch import nn

from cnnkit.cli import main
from cnnkit.data import ImageSet, Preprocess
from cnnkit.errors import CnnkitError
from cnnkit.train import TrainConfig, fit, load_state
from cnnkit.train import speed as speed_mod

QUICK = {
    "epochs": 1,
    "batch": 16,
    "optimizer": "sgd",
    "lr": 0.05,
    "schedule": "constant",
    "warmup_epochs": 0,
    "degrees": 0,
    "translate": 0,
    "scale": 0,
    "fliplr": 0,
    "verbose": 0,
    "workers": 0,
}
ALLOWED = {("fp32", "contiguous"), ("fp32", "channels_last"), ("bf16", "channels_last")}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path / "cache"))
    # a quiet machine, whatever else runs beside the tests (see test_busy_machine_...)
    monkeypatch.setattr(speed_mod, "_load_average", lambda: 0.0)


def _data(n: int = 64, hw: int = 8) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, hw, hw), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 3, (n,), generator=g)
    return ImageSet(images, labels, Preprocess((hw, hw), 1, (0.5,), (0.25,)), "train")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 3),
    )


def _speed_note(notes: list[str]) -> str:
    hits = [n for n in notes if n.startswith("speed: ")]
    assert len(hits) == 1, notes
    return hits[0]


def test_auto_small_net_keeps_fp32_and_records_it(tmp_path):
    r = fit(_net(), _data(), run_dir=tmp_path / "run", **QUICK)
    note = _speed_note(r.notes)
    assert note == (
        "speed: fp32 + contiguous (auto: 0.0013 M conv multiply-adds per example, under 0.1 M: "
        "too small for bf16 or channels_last to pay off)"
    )
    assert not (tmp_path / "cache").exists()  # nothing timed, nothing cached
    assert r.speed["precision"] == "fp32" and r.speed["memory_format"] == "contiguous"
    assert r.speed["compile"] is False
    st = load_state(tmp_path / "run" / "weights" / "last_state.pt")
    assert st["speed"] == r.speed


def test_full_calibration_picks_from_the_allowed_set_and_caches(tmp_path, monkeypatch):
    monkeypatch.setattr(speed_mod, "MIN_CONV_MACS", 0)
    calls = []
    real = speed_mod._calibrate
    monkeypatch.setattr(speed_mod, "_calibrate", lambda *a, **k: calls.append(1) or real(*a, **k))
    r = fit(_net(), _data(), **QUICK)
    assert (r.speed["precision"], r.speed["memory_format"]) in ALLOWED
    note = _speed_note(r.notes)
    m = re.search(r"x fp32 on (\d+) steps of 16x1x8x8", note)
    assert m and speed_mod.STEPS <= int(m[1]) <= speed_mod.MAX_STEPS, note
    assert calls == [1]
    cache = json.loads((tmp_path / "cache" / "speed.json").read_text())
    (key,) = cache
    assert "16x1x8x8" in key and torch.__version__ in key
    r2 = fit(_net(), _data(), **QUICK)
    assert calls == [1]  # the second run did no calibration
    assert "(cached in " in _speed_note(r2.notes)
    assert r2.speed["precision"] == r.speed["precision"]
    assert r2.speed["memory_format"] == r.speed["memory_format"]


def test_calibration_leaves_training_bitwise_identical(monkeypatch):
    monkeypatch.setattr(speed_mod, "MIN_CONV_MACS", 0)
    monkeypatch.setattr(speed_mod, "MIN_GAIN", 1e9)  # every candidate is timed; fp32 wins
    calls = []
    real = speed_mod._calibrate
    monkeypatch.setattr(speed_mod, "_calibrate", lambda *a, **k: calls.append(1) or real(*a, **k))
    kw = {**QUICK, "epochs": 2, "deterministic": True}
    auto = fit(_net(), _data(), **kw)
    assert calls == [1] and auto.speed["precision"] == "fp32"
    assert auto.speed["memory_format"] == "contiguous"
    forced = fit(_net(), _data(), precision="fp32", memory_format="contiguous", **kw)
    assert calls == [1]
    assert "(forced)" in _speed_note(forced.notes)
    a, b = auto.model.state_dict(), forced.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert auto.history[-1]["train_loss"] == forced.history[-1]["train_loss"]


def test_forced_channels_last_converts_the_weights():
    r = fit(_net(), _data(), precision="fp32", memory_format="channels_last", **QUICK)
    assert _speed_note(r.notes) == "speed: fp32 + channels_last (forced)"
    weights = [p for p in r.model.parameters() if p.ndim == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_forced_precision_is_used_in_the_loop(precision):
    net = _net()
    seen: list[torch.dtype] = []
    net[4].register_forward_hook(lambda m, inp, out: seen.append(out.dtype) if m.training else None)
    r = fit(net, _data(), precision=precision, memory_format="contiguous", **QUICK)
    want = torch.bfloat16 if precision == "bf16" else torch.float32
    assert seen and set(seen) == {want}
    assert r.speed["precision"] == precision


def test_bf16_refused_when_its_loss_differs(monkeypatch):
    if not speed_mod.bf16_supported(torch.device("cpu")):
        pytest.skip("no bf16 support on this CPU")
    monkeypatch.setattr(speed_mod, "MIN_CONV_MACS", 0)
    monkeypatch.setattr(speed_mod, "BF16_LOSS_TOLERANCE", 0.0)
    r = fit(_net(), _data(), **QUICK)
    assert r.speed["precision"] == "fp32"
    assert "bf16 refused: its loss differs from fp32's by" in _speed_note(r.notes)


def test_resume_keeps_the_recorded_settings(tmp_path, monkeypatch):
    run = tmp_path / "run"
    first = fit(_net(), _data(), run_dir=run, memory_format="channels_last", **QUICK)
    assert first.speed["memory_format"] == "channels_last"

    def boom(*a, **k):
        raise AssertionError("a resumed run must not calibrate")

    monkeypatch.setattr(speed_mod, "_calibrate", boom)
    monkeypatch.setattr(speed_mod, "MIN_CONV_MACS", 0)
    r = fit(_net(), _data(), run_dir=run, resume=True, **{**QUICK, "epochs": 2})
    assert _speed_note(r.notes) == "speed: fp32 + channels_last (as recorded in the resumed run)"
    assert load_state(run / "weights" / "last_state.pt")["speed"]["memory_format"] == (
        "channels_last"
    )


def test_no_conv_no_calibration(monkeypatch):
    monkeypatch.setattr(speed_mod, "MIN_CONV_MACS", 0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    r = fit(net, _data(), **QUICK)
    assert _speed_note(r.notes) == "speed: fp32 + contiguous (auto: no convolutions)"


def test_compile_auto_rule(monkeypatch):
    monkeypatch.setattr(speed_mod, "MIN_CONV_MACS", 0)
    net = _net()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    kw = dict(
        precision="fp32",
        memory_format="auto",
        make_opt=lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
        loss_fn=nn.functional.cross_entropy,
        device=torch.device("cpu"),
        use_cache=False,
    )
    short, calibrated = speed_mod.resolve_speed(
        net, "tiny", x, y, compile="auto", total_steps=10, **kw
    )
    assert calibrated and short.compile is False
    long, _ = speed_mod.resolve_speed(net, "tiny", x, y, compile="auto", total_steps=10**12, **kw)
    assert long.compile is True and "compile cost" in long.reason
    forced, _ = speed_mod.resolve_speed(net, "tiny", x, y, compile=False, total_steps=10**12, **kw)
    assert forced.compile is False


@pytest.mark.parametrize(
    ("key", "value", "hint"),
    [
        ("precision", "bf61", "'bf16'"),
        ("precision", "fp16", "'bf16'"),
        ("memory_format", "channel_last", "'channels_last'"),
        ("compile", "ture", "'true'"),
    ],
)
def test_invalid_values_are_refused_with_a_suggestion(key, value, hint):
    with pytest.raises(CnnkitError, match=f"unknown {key} '{value}': did you mean {hint}"):
        TrainConfig.from_dict({key: value})


def test_cli_exits_2_on_a_bad_precision(capsys):
    assert main(["train", "precision=fp16"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_calibration_is_invisible_to_the_models_hooks(monkeypatch):
    monkeypatch.setattr(speed_mod, "MIN_CONV_MACS", 0)
    net = _net()
    calls = []
    net.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    fit(net, _data(), **QUICK)
    assert calls == [16] * 4  # the 4 training steps of 64 examples, nothing from calibration


def test_compile_accepts_true_and_false_written_as_text() -> None:
    from cnnkit.train import TrainConfig

    assert TrainConfig.from_dict({"compile": "false"}).compile is False
    assert TrainConfig.from_dict({"compile": "True"}).compile is True
    with pytest.raises(CnnkitError, match="unknown compile 'maybe': use one of"):
        TrainConfig.from_dict({"compile": "maybe"})


def test_a_calibration_on_a_busy_machine_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(speed_mod, "MIN_CONV_MACS", 0)
    monkeypatch.setattr(speed_mod, "_load_average", lambda: 99.0)
    r = fit(_net(), _data(), **QUICK)
    assert (r.speed["precision"], r.speed["memory_format"]) in ALLOWED
    cache = tmp_path / "cache" / "speed.json"
    note = _speed_note(r.notes)
    assert note.endswith(
        f"; the machine was busy (load average 99.0 on {len(os.sched_getaffinity(0))} cores): "
        f"delete {cache} to calibrate again on a quiet one)"
    ), note
    # cached all the same, so that the next runs choose alike
    assert cache.exists()
    again = fit(_net(), _data(), **QUICK)
    assert "(cached in " in _speed_note(again.notes)
    assert again.speed["precision"] == r.speed["precision"]
    assert again.speed["memory_format"] == r.speed["memory_format"]


def test_fast_steps_are_timed_more_often(monkeypatch):
    # rounds continue until MIN_CALIBRATION_S has passed, at least STEPS, at most MAX_STEPS
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))

    def one_candidate():
        return speed_mod._time_candidates(
            _net(),
            lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
            nn.functional.cross_entropy,
            x,
            y,
            [("fp32", "contiguous")],
            torch.device("cpu"),
            steps=2,
        )

    # a long time budget: the rounds stop at MAX_STEPS (deterministic whatever the load)
    monkeypatch.setattr(speed_mod, "MIN_CALIBRATION_S", 60.0)
    ((ms, _, times),) = one_candidate()
    assert len(times) == speed_mod.MAX_STEPS and ms == min(times)
    monkeypatch.setattr(speed_mod, "MIN_CALIBRATION_S", 0.0)
    ((_, _, times),) = one_candidate()
    assert len(times) == 2


def test_candidates_take_turns_step_by_step(monkeypatch):
    order = []
    real = speed_mod._Candidate.step

    def spy(self, loss_fn, y, device, timed):
        order.append((self.precision, self.memory_format, timed))
        return real(self, loss_fn, y, device, timed)

    monkeypatch.setattr(speed_mod._Candidate, "step", spy)
    cands = [("fp32", "contiguous"), ("fp32", "channels_last")]
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    out = speed_mod._time_candidates(
        _net(),
        lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
        nn.functional.cross_entropy,
        x,
        y,
        cands,
        torch.device("cpu"),
        steps=2,
    )
    warm = [(p, f, False) for p, f in cands]
    rounds = [(p, f, True) for p, f in cands]
    n = len(out[0][2])
    assert n >= 2 and order == warm + rounds * n
    assert len(out) == 2 and all(ms > 0 and 0 < loss < 10 for ms, loss, _ in out)
