"""Learning-rate schedules: ``lr_factor`` against PyTorch's schedulers and the course's formulas."""

from __future__ import annotations

import math

import pytest
import torch

from cnnkit.train import lr_factor

LR0 = 0.1


def _opt(lr: float = LR0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _per_epoch_lrs(make_sched, epochs: int) -> list[float]:
    """lr of each epoch from a PyTorch scheduler stepped once per epoch."""
    opt = _opt()
    sched = make_sched(opt)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _per_step_lrs(make_sched, total: int) -> list[float]:
    """lr of each step from a PyTorch scheduler stepped once per optimizer step."""
    opt = _opt()
    sched = make_sched(opt)
    out = []
    for i in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if i < total - 1:  # OneCycleLR refuses a step past total_steps
            sched.step()
    return out


def _ours(schedule: str, spe: int, total: int, **kw) -> list[float]:
    return [LR0 * lr_factor(schedule, s, spe, total, **kw) for s in range(total)]


def _close(got: list[float], want: list[float], rel: float = 1e-6, abs_: float = 1e-12) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == pytest.approx(w, rel=rel, abs=abs_), f"step {i}: got {g}, want {w}"


@pytest.mark.parametrize(("spe", "epochs"), [(1, 30), (3, 25), (7, 12)])
def test_constant_is_one_everywhere(spe, epochs):
    total = spe * epochs
    assert all(lr_factor("constant", s, spe, total) == 1.0 for s in range(total))


@pytest.mark.parametrize(
    ("spe", "epochs", "step_size", "gamma"),
    [(1, 25, 10, 0.1), (4, 30, 10, 0.1), (5, 12, 3, 0.5), (2, 9, 1, 0.7)],
)
def test_step_matches_steplr_per_epoch(spe, epochs, step_size, gamma):
    per_epoch = _per_epoch_lrs(
        lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=step_size, gamma=gamma), epochs
    )
    want = [per_epoch[s // spe] for s in range(spe * epochs)]
    got = _ours("step", spe, spe * epochs, decay_rate=gamma, step_size=step_size)
    _close(got, want)


@pytest.mark.parametrize(("spe", "epochs", "gamma"), [(1, 40, 0.95), (3, 20, 0.95), (6, 10, 0.8)])
def test_exponential_matches_exponentiallr_per_epoch(spe, epochs, gamma):
    per_epoch = _per_epoch_lrs(
        lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=gamma), epochs
    )
    want = [per_epoch[s // spe] for s in range(spe * epochs)]
    _close(_ours("exponential", spe, spe * epochs, decay_rate=gamma), want)
    # the course: alpha = 0.95**epoch_num * alpha0
    if gamma == 0.95:
        _close(
            _ours("exponential", spe, spe * epochs, decay_rate=gamma),
            [0.95 ** (s // spe) * LR0 for s in range(spe * epochs)],
        )


@pytest.mark.parametrize(("spe", "epochs", "rate"), [(1, 20, 1.0), (4, 15, 1.0), (3, 10, 0.25)])
def test_inverse_matches_course_formula(spe, epochs, rate):
    # the course: alpha = alpha0 / (1 + decay_rate * epoch_num)
    per_epoch = _per_epoch_lrs(
        lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1.0 / (1.0 + rate * e)), epochs
    )
    want = [per_epoch[s // spe] for s in range(spe * epochs)]
    _close(_ours("inverse", spe, spe * epochs, decay_rate=rate), want)
    assert lr_factor("inverse", 2 * spe, spe, spe * epochs, decay_rate=rate) == pytest.approx(
        1 / (1 + 2 * rate)
    )


@pytest.mark.parametrize(("spe", "epochs"), [(1, 10), (5, 8), (13, 3), (1, 1)])
def test_cosine_matches_cosineannealinglr_per_step(spe, epochs):
    total = spe * epochs
    want = _per_step_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total, eta_min=0.0), total
    )
    _close(_ours("cosine", spe, total), want, rel=1e-6, abs_=1e-9)
    # reaches 0 at total_steps and stays there
    assert lr_factor("cosine", total, spe, total) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor("cosine", total + 3, spe, total) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("total", [1, 2, 3, 4, 7, 10, 33, 100, 257])
def test_onecycle_matches_onecyclelr_defaults_at_every_step(total):
    want = _per_step_lrs(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=LR0, total_steps=total), total
    )
    got = _ours("onecycle", max(total // 3, 1), total)
    _close(got, want, rel=1e-6, abs_=0.0)


def test_onecycle_shape():
    total = 100
    f = [lr_factor("onecycle", s, 10, total) for s in range(total)]
    assert f[0] == pytest.approx(1 / 25)
    assert max(f) == pytest.approx(1.0)
    assert f.index(max(f)) == 29  # 30 % of the steps rising
    assert f[-1] == pytest.approx(1 / 25 / 1e4)


def test_onecycle_ignores_warmup():
    total = 50
    for s in range(total):
        assert lr_factor("onecycle", s, 5, total, warmup_steps=20) == lr_factor(
            "onecycle", s, 5, total
        )


@pytest.mark.parametrize(
    ("schedule", "kw"),
    [
        ("constant", {}),
        ("cosine", {}),
        ("step", {"decay_rate": 0.5, "step_size": 1}),
        ("exponential", {"decay_rate": 0.9}),
        ("inverse", {"decay_rate": 1.0}),
    ],
)
@pytest.mark.parametrize("warmup", [1, 4, 7])
def test_warmup_multiplies_by_linear_ramp(schedule, kw, warmup):
    spe, total = 3, 30
    for s in range(total):
        plain = lr_factor(schedule, s, spe, total, **kw)
        got = lr_factor(schedule, s, spe, total, warmup_steps=warmup, **kw)
        want = plain * (s + 1) / warmup if s < warmup else plain
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15), s
    # the ramp reaches the schedule's own value at the last warmup step
    assert lr_factor("constant", warmup - 1, spe, total, warmup_steps=warmup) == 1.0
    assert lr_factor("constant", 0, spe, total, warmup_steps=warmup) == pytest.approx(1 / warmup)


def test_warmup_then_cosine_against_torch_chain():
    """Warmup (LambdaLR ramp) times cosine (CosineAnnealingLR), both stepped per step."""
    spe, epochs, warmup = 4, 5, 6
    total = spe * epochs
    ramp = _per_step_lrs(
        lambda o: torch.optim.lr_scheduler.LambdaLR(
            o, lambda s: (s + 1) / warmup if s < warmup else 1.0
        ),
        total,
    )
    cos = _per_step_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total, eta_min=0.0), total
    )
    want = [r * c / LR0 for r, c in zip(ramp, cos, strict=True)]
    _close(_ours("cosine", spe, total, warmup_steps=warmup), want, rel=1e-6, abs_=1e-9)


def test_factor_is_pure_function_of_step():
    """A resumed run asks for step k directly and must get what the uninterrupted run got."""
    spe, total = 7, 70
    for sched in ("step", "exponential", "inverse", "cosine", "onecycle"):
        a = [
            lr_factor(sched, s, spe, total, warmup_steps=5, decay_rate=0.5, step_size=2)
            for s in range(total)
        ]
        b = [
            lr_factor(sched, s, spe, total, warmup_steps=5, decay_rate=0.5, step_size=2)
            for s in reversed(range(total))
        ][::-1]
        assert a == b
        assert all(math.isfinite(v) and v >= 0 for v in a)
