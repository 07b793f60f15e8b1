"""TrainConfig validation, dependent defaults, epochs=auto, build_optimizer's PyTorch mapping."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.train import OPTIMIZERS, SCHEDULES, TrainConfig, build_optimizer, fit, resolve_epochs


def _bad(**kw) -> str:
    with pytest.raises(CnnkitError) as e:
        TrainConfig(**kw).validate()
    return str(e.value)


def test_defaults_validate_and_round_trip():
    cfg = TrainConfig()
    cfg.validate()
    d = cfg.to_dict()
    assert set(d) == set(TrainConfig.keys())
    assert TrainConfig.from_dict(d) == cfg
    assert cfg.optimizer in OPTIMIZERS and cfg.schedule in SCHEDULES


def test_from_dict_overrides_single_keys():
    cfg = TrainConfig.from_dict({"lr": 0.5, "optimizer": "sgd", "epochs": 3})
    assert (cfg.lr, cfg.optimizer, cfg.epochs) == (0.5, "sgd", 3)
    assert cfg.batch == TrainConfig().batch


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"lr": 0}, "lr"),
        ({"lr": -1e-3}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"lr": float("inf")}, "lr"),
        ({"lr": "0.1"}, "lr"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": -2}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"epochs": True}, "epochs"),
        ({"epochs": "many"}, "epochs"),
        ({"batch": 0}, "batch"),
        ({"batch": 1.5}, "batch"),
        ({"beta1": 1}, "beta1"),
        ({"beta1": 1.0}, "beta1"),
        ({"beta1": 1.5}, "beta1"),
        ({"beta1": -0.1}, "beta1"),
        ({"beta2": 1.0}, "beta2"),
        ({"momentum": 1.2}, "momentum"),
        ({"eps": 0}, "eps"),
        ({"l2": -1}, "l2"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"decay_rate": 0}, "decay_rate"),
        ({"step_size": 0}, "step_size"),
        ({"warmup_epochs": -1}, "warmup_epochs"),
        ({"label_smoothing": 1.5}, "label_smoothing"),
        ({"patience": -1}, "patience"),
        ({"clip_grad": -1}, "clip_grad"),
        ({"seed": -1}, "seed"),
        ({"verbose": 3}, "verbose"),
        ({"workers": -1}, "workers"),
        ({"degrees": -5}, "degrees"),
        ({"fliplr": -0.5}, "fliplr"),
        ({"monitor": "accuracy"}, "monitor"),
        ({"size": 0}, "size"),
        ({"size": [32]}, "size"),
        ({"size": [32, 0]}, "size"),
        ({"on_error": "ignore"}, "on_error"),
        ({"loss": "mse"}, "loss"),
    ],
)
def test_invalid_values_name_the_setting(kw, name):
    msg = _bad(**kw)
    assert name in msg, msg


@pytest.mark.parametrize(
    ("key", "typo", "right"),
    [
        ("optimizer", "adma", "adam"),
        ("optimizer", "nesterv", "nesterov"),
        ("optimizer", "rmsporp", "rmsprop"),
        ("schedule", "cosin", "cosine"),
        ("schedule", "onecylce", "onecycle"),
    ],
)
def test_unknown_names_suggest_the_right_one(key, typo, right):
    msg = _bad(**{key: typo})
    assert key in msg and typo in msg and repr(right) in msg, msg


def test_unknown_optimizer_without_close_match():
    msg = _bad(optimizer="lbfgs")
    assert "optimizer" in msg and "lbfgs" in msg


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(CnnkitError) as e:
        TrainConfig.from_dict({"optimzer": "adam"})
    msg = str(e.value)
    assert "optimzer" in msg and "optimizer" in msg.replace("optimzer", "")
    with pytest.raises(CnnkitError) as e:
        TrainConfig.from_dict({"learnig_rate_xyz": 1}, source="config.yaml")
    assert "learnig_rate_xyz" in str(e.value) and "config.yaml" in str(e.value)


def test_from_dict_validates_values():
    with pytest.raises(CnnkitError, match="batch"):
        TrainConfig.from_dict({"batch": 0})


@pytest.mark.parametrize(
    "ok",
    [
        {"epochs": "auto"},
        {"epochs": 1},
        {"size": 32},
        {"size": [28, 32]},
        {"size": (16, 16)},
        {"beta1": 0.0},
        {"momentum": 0.0},
        {"label_smoothing": 0.0},
        {"warmup_epochs": 0.5},
        {"lr": 10},
    ],
)
def test_valid_edge_values_pass(ok):
    TrainConfig(**ok).validate()


def test_fit_refuses_bad_settings_before_training():
    model = nn.Linear(2, 2)
    w = model.weight.detach().clone()
    data = torch.utils.data.TensorDataset(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(CnnkitError, match="optimizer"):
        fit(model, data, optimzer="sgd", verbose=0)
    with pytest.raises(CnnkitError, match="lr"):
        fit(model, data, lr=0.0, verbose=0)
    with pytest.raises(CnnkitError, match="adam"):
        fit(model, data, optimizer="adma", verbose=0)
    assert torch.equal(model.weight, w)


@pytest.mark.parametrize(
    ("optimizer", "momentum", "beta2", "wd"),
    [
        ("sgd", 0.0, 0.999, 0.0),
        ("momentum", 0.9, 0.999, 0.0),
        ("nesterov", 0.9, 0.999, 0.0),
        ("rmsprop", 0.0, 0.99, 0.0),
        ("adam", 0.0, 0.999, 0.0),
        ("adamw", 0.0, 0.999, 0.01),
    ],
)
def test_resolved_defaults_depend_on_optimizer(optimizer, momentum, beta2, wd):
    cfg = TrainConfig(optimizer=optimizer)
    assert cfg.resolved("momentum") == momentum
    assert cfg.resolved("beta2") == beta2
    assert cfg.resolved("weight_decay") == wd
    # explicit values win
    cfg = TrainConfig(optimizer=optimizer, momentum=0.5, beta2=0.9, weight_decay=0.2)
    assert (cfg.resolved("momentum"), cfg.resolved("beta2"), cfg.resolved("weight_decay")) == (
        0.5,
        0.9,
        0.2,
    )


@pytest.mark.parametrize(
    ("schedule", "rate"),
    [("step", 0.1), ("exponential", 0.95), ("inverse", 1.0), ("cosine", 1.0), ("constant", 1.0)],
)
def test_resolved_decay_rate(schedule, rate):
    assert TrainConfig(schedule=schedule).resolved("decay_rate") == rate
    assert TrainConfig(schedule=schedule, decay_rate=0.3).resolved("decay_rate") == 0.3


@pytest.mark.parametrize(
    ("steps", "auto_steps", "want"),
    [
        (1, 1500, 60),
        (10, 1500, 60),
        (25, 1500, 60),
        (30, 1500, 50),
        (100, 1500, 15),
        (499, 1500, 3),
        (1000, 1500, 3),
        (10_000, 1500, 3),
        (7, 100, 14),
    ],
)
def test_resolve_epochs_auto(steps, auto_steps, want):
    e, note = resolve_epochs(TrainConfig(auto_steps=auto_steps), steps)
    assert e == want
    assert note and str(e) in note
    assert e == max(3, min(60, round(auto_steps / steps)))


def test_resolve_epochs_explicit():
    assert resolve_epochs(TrainConfig(epochs=7), 123) == (7, None)


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3))


def _hp(opt: torch.optim.Optimizer) -> dict:
    return opt.param_groups[0]


def test_build_sgd_family():
    m = _net()
    o = build_optimizer(m, TrainConfig(optimizer="sgd", lr=0.3))
    assert type(o) is torch.optim.SGD
    assert (_hp(o)["lr"], _hp(o)["momentum"], _hp(o)["nesterov"], _hp(o)["weight_decay"]) == (
        0.3,
        0.0,
        False,
        0.0,
    )
    o = build_optimizer(m, TrainConfig(optimizer="momentum", lr=0.3))
    assert type(o) is torch.optim.SGD
    # the course's v = beta*v + (1 - beta)*dW is PyTorch's dampening = beta
    assert (_hp(o)["momentum"], _hp(o)["dampening"], _hp(o)["nesterov"]) == (0.9, 0.9, False)
    o = build_optimizer(m, TrainConfig(optimizer="nesterov", momentum=0.8, weight_decay=1e-4))
    assert type(o) is torch.optim.SGD
    assert (_hp(o)["momentum"], _hp(o)["nesterov"], _hp(o)["weight_decay"]) == (0.8, True, 1e-4)


def test_build_rmsprop():
    o = build_optimizer(_net(), TrainConfig(optimizer="rmsprop", lr=1e-3, eps=1e-7))
    assert type(o) is torch.optim.RMSprop
    g = _hp(o)
    assert (g["lr"], g["alpha"], g["eps"], g["momentum"], g["weight_decay"]) == (
        1e-3,
        0.99,
        1e-7,
        0.0,
        0.0,
    )
    g = _hp(build_optimizer(_net(), TrainConfig(optimizer="rmsprop", beta2=0.9, momentum=0.5)))
    assert (g["alpha"], g["momentum"]) == (0.9, 0.5)


@pytest.mark.parametrize(
    ("name", "cls", "wd"), [("adam", torch.optim.Adam, 0.0), ("adamw", torch.optim.AdamW, 0.01)]
)
def test_build_adam_family(name, cls, wd):
    o = build_optimizer(_net(), TrainConfig(optimizer=name, lr=5e-4, beta1=0.8, eps=1e-6))
    assert type(o) is cls
    g = _hp(o)
    assert (g["lr"], tuple(g["betas"]), g["eps"], g["weight_decay"]) == (
        5e-4,
        (0.8, 0.999),
        1e-6,
        wd,
    )
    g = _hp(build_optimizer(_net(), TrainConfig(optimizer=name, beta2=0.98, weight_decay=0.1)))
    assert (tuple(g["betas"]), g["weight_decay"]) == ((0.9, 0.98), 0.1)


def test_build_optimizer_skips_frozen_and_refuses_all_frozen():
    m = _net()
    m[0].weight.requires_grad_(False)
    o = build_optimizer(m, TrainConfig())
    ids = {id(p) for g in o.param_groups for p in g["params"]}
    assert id(m[0].weight) not in ids
    assert ids == {id(p) for p in m.parameters() if p.requires_grad}
    for p in m.parameters():
        p.requires_grad_(False)
    with pytest.raises(CnnkitError, match="trainable"):
        build_optimizer(m, TrainConfig())


def _first_step(optimizer: str, **kw) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(w before, grad, w after) of one optimizer step on a fixed quadratic."""
    torch.manual_seed(0)
    m = nn.Linear(3, 1, bias=False)
    w0 = m.weight.detach().clone()
    opt = build_optimizer(m, TrainConfig(optimizer=optimizer, **kw))
    x = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.1, -1.0]])
    loss = (m(x) ** 2).sum()
    opt.zero_grad()
    loss.backward()
    g = m.weight.grad.detach().clone()
    opt.step()
    return w0, g, m.weight.detach().clone()


def test_first_steps_follow_the_course_formulas():
    lr = 0.01
    # Adam: m_hat = g, v_hat = g^2 -> W -= lr * g / (|g| + eps)
    w0, g, w1 = _first_step("adam", lr=lr, eps=1e-8)
    torch.testing.assert_close(w1, w0 - lr * g / (g.abs() + 1e-8))
    # RMSprop: s = (1 - beta2) g^2 -> W -= lr * g / (sqrt(s) + eps), beta2 = 0.99 by default
    w0, g, w1 = _first_step("rmsprop", lr=lr, eps=1e-8)
    torch.testing.assert_close(w1, w0 - lr * g / ((0.01 * g * g).sqrt() + 1e-8))
    # AdamW: decoupled decay 0.01 applied to W, then the Adam step
    w0, g, w1 = _first_step("adamw", lr=lr, eps=1e-8)
    torch.testing.assert_close(w1, w0 * (1 - lr * 0.01) - lr * g / (g.abs() + 1e-8))
    # plain gradient descent
    w0, g, w1 = _first_step("sgd", lr=lr)
    torch.testing.assert_close(w1, w0 - lr * g)


def test_dataclass_fields_have_defaults():
    for f in dataclasses.fields(TrainConfig):
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
