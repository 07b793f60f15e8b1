"""Non-finite losses and gradients: raise (naming step, epoch and samples), skip_step, stop.

A NaN is injected at a chosen training forward pass k (the k-th optimizer step) by a
model that multiplies its output by NaN there, or (for gradients) adds
``0 * sqrt(w - w)``: a finite loss whose gradient is NaN.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.data import TensorDataset

from cnnkit.errors import CnnkitError
from cnnkit.train import fit, load_state

N, BATCH = 64, 16  # 4 steps an epoch


class Spiky(nn.Module):
    """A small conv net that turns bad at chosen training forward passes (1-based)."""

    def __init__(self, bad: set[int] | None = None, bad_from: int | None = None, grad=False):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
        self.bad, self.bad_from, self.grad = bad or set(), bad_from, grad
        self.calls = 0
        self.inputs: dict[int, torch.Tensor] = {}
        self.params: dict[int, dict[str, torch.Tensor]] = {}
        self.opt_states: dict[int, dict] = {}
        self.opt: torch.optim.Optimizer | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if not self.training:
            return out
        self.calls += 1
        k = self.calls
        self.inputs[k] = x.detach().clone()
        self.params[k] = {n: p.detach().clone() for n, p in self.net.named_parameters()}
        if self.opt is not None:
            self.opt_states[k] = copy.deepcopy(self.opt.state_dict())
        if k in self.bad or (self.bad_from is not None and k >= self.bad_from):
            w = self.net[3].bias
            if self.grad:  # finite loss, NaN gradient
                return out + 0.0 * torch.sqrt(w - w.detach()).sum()
            return out * float("nan")
        return out


@pytest.fixture
def data() -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(N, 1, 8, 8, generator=g), torch.arange(N) % 3)


@pytest.fixture
def grab_optimizer():
    """Hand the trainer's optimizer to the model after its first step."""
    models: list[Spiky] = []

    def hook(opt, args, kwargs):
        for m in models:
            m.opt = opt

    handle = register_optimizer_step_post_hook(hook)
    yield models.append
    handle.remove()


def _rows_of(x: torch.Tensor, data: TensorDataset) -> set[int]:
    """Which dataset rows a batch holds (found by value: independent of the sampler)."""
    pool = data.tensors[0].reshape(N, -1)
    return {int((pool == row).all(1).nonzero()[0]) for row in x.reshape(len(x), -1)}


def _assert_same_state(a: dict, b: dict) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same_state(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        for x, y in zip(a, b):
            _assert_same_state(x, y)
    else:
        assert a == b


def _fit(model: nn.Module, data: TensorDataset, **kw):
    kw = {"epochs": 3, "batch": BATCH, "verbose": 0, "workers": 0, "seed": 0, **kw}
    return fit(model, data, data, **kw)


def test_raise_names_the_step_epoch_and_samples(data) -> None:
    model = Spiky(bad={6})  # epoch 2, its 2nd step
    with pytest.raises(CnnkitError) as e:
        _fit(model, data)
    msg = str(e.value)
    assert "the loss became nan at step 6 (epoch 2, step 2 of 4; samples " in msg
    named = msg.split("samples ")[1].split(")")[0].replace(", ...", "").split(" (")[0]
    shown = {int(s) for s in named.split(", ")}
    assert shown <= _rows_of(model.inputs[6], data) and len(shown) == 6  # the first six
    assert "(16 in all)" in msg
    assert "nonfinite=skip_step" in msg


def test_skip_step_leaves_weights_and_optimizer_bitwise_unchanged(
    data, tmp_path: Path, grab_optimizer
) -> None:
    model = Spiky(bad={6})
    grab_optimizer(model)
    res = _fit(model, data, nonfinite="skip_step", run_dir=tmp_path / "run")
    assert model.calls == 12  # every step of the 3 epochs ran
    for name in model.params[6]:  # step 6 was skipped: the weights before 7 are those before 6
        assert torch.equal(model.params[6][name], model.params[7][name]), name
    # Adam's moments and step count (param_groups' lr is the schedule's, set every step)
    _assert_same_state(model.opt_states[6]["state"], model.opt_states[7]["state"])
    assert not torch.equal(model.params[7]["3.bias"], model.params[8]["3.bias"])  # control
    assert model.opt_states[8]["state"][0]["step"] == 6  # 7 steps taken, one skipped
    state = load_state(tmp_path / "run" / "weights" / "last_state.pt")
    assert state["skipped_steps"] == 1 and state["global_step"] == 12
    assert len(res.history) == 3


def test_a_nan_gradient_with_a_finite_loss_is_caught(data, grab_optimizer) -> None:
    model = Spiky(bad={3}, grad=True)
    grab_optimizer(model)
    _fit(model, data, nonfinite="skip_step", epochs=1)
    for name in model.params[3]:
        assert torch.equal(model.params[3][name], model.params[4][name]), name
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_skip_step_stops_after_max_consecutive_skips_keeping_the_last_checkpoint(
    data, tmp_path: Path
) -> None:
    model = Spiky(bad_from=6)
    run = tmp_path / "run"
    with pytest.raises(CnnkitError) as e:
        _fit(model, data, nonfinite="skip_step", max_consecutive_skips=3, run_dir=run, save_every=1)
    msg = str(e.value)
    # steps 6, 7 and 8 are skipped (3 in a row may be); the 4th bad one in a row stops the run
    assert msg.startswith("4 steps in a row had a non-finite loss, the last at step 9 (epoch 3,")
    assert "max_consecutive_skips=3" in msg
    assert model.calls == 9
    state = load_state(run / "weights" / "last_state.pt")
    # saved after every step but the skipped ones; the end of epoch 2 (step 8) is saved
    # too, and holds the weights of step 5, untouched by the skips
    assert state["global_step"] == 8 and state["skipped_steps"] == 3
    for name, p in model.params[6].items():  # the checkpoint holds the last good weights
        assert torch.equal(state["model"][f"net.{name}"], p), name


def test_one_skip_allowed_means_one_skip(data) -> None:
    model = Spiky(bad={3})
    res = _fit(model, data, nonfinite="skip_step", max_consecutive_skips=1, epochs=1)
    assert model.calls == 4 and len(res.history) == 1  # skipped, then trained on


def test_stop_ends_training_with_the_best_weights(data, tmp_path: Path) -> None:
    model = Spiky(bad={7})  # epoch 2, step 3
    res = _fit(model, data, nonfinite="stop", run_dir=tmp_path / "run")
    assert res.stopped_early and model.calls == 7
    assert len(res.history) == 1 and res.best_epoch == 1
    state = load_state(tmp_path / "run" / "weights" / "last_state.pt")
    assert state["epoch"] == 1 and state["global_step"] == 4  # the epoch-1 checkpoint, kept
    for k, v in model.state_dict().items():  # the best (epoch 1) weights are in the model
        assert torch.equal(v, state["model"][k]), k


def test_bad_settings_are_refused_before_training() -> None:
    with pytest.raises(CnnkitError, match="unknown nonfinite 'skip': did you mean 'skip_step'"):
        fit(
            nn.Linear(2, 2),
            TensorDataset(torch.zeros(4, 2), torch.zeros(4).long()),
            nonfinite="skip",
        )
    with pytest.raises(CnnkitError, match="max_consecutive_skips must be >= 1"):
        fit(
            nn.Linear(2, 2),
            TensorDataset(torch.zeros(4, 2), torch.zeros(4).long()),
            max_consecutive_skips=0,
        )
