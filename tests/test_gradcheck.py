"""cnnkit.gradcheck: the course's two-sided differences against backprop, in float64."""

from __future__ import annotations

import copy
import importlib
import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.gradcheck import GradCheckReport, check, relative_difference, verdict


class BadTanh(torch.autograd.Function):
    """tanh whose backward is wrong: a factor, or a flipped sign where tanh is negative."""

    factor = 1.0
    flip_negative = False

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        a = torch.tanh(z)
        ctx.save_for_backward(a)
        return a

    @staticmethod
    def backward(ctx, da: torch.Tensor) -> torch.Tensor:
        (a,) = ctx.saved_tensors
        dz = da * (1 - a * a) * BadTanh.factor
        if BadTanh.flip_negative:
            dz = torch.where(a < 0, -dz, dz)
        return dz


class SmallNet(nn.Module):
    """conv (1 -> 3, f=3) + activation + pool (f=2, s=2) + [dropout] + linear (12 -> 4)."""

    def __init__(
        self,
        act: str = "tanh",
        pool: str = "avg",
        dropout: float = 0.0,
        bn: bool = False,
        bad: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)  # 6x6x1 -> 4x4x3
        self.bn = nn.BatchNorm2d(3) if bn else nn.Identity()
        self.pool = nn.AvgPool2d(2) if pool == "avg" else nn.MaxPool2d(2)  # -> 2x2x3
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(12, 4)
        self.act, self.bad = act, bad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.bn(self.conv(x))
        a = torch.tanh(z) if self.act == "tanh" else torch.relu(z)
        if self.bad:
            a = BadTanh.apply(z)
        return self.fc(self.drop(self.pool(a).flatten(1)))


NAMES = ["conv.weight", "conv.bias", "fc.weight", "fc.bias"]


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 1, 6, 6, generator=g), torch.tensor([1, 3])


def _net(seed: int = 0, **kw) -> SmallNet:
    torch.manual_seed(seed)
    return SmallNet(**kw)


def _backprop64(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """dtheta of the cross-entropy, computed here on our own float64 copy."""
    net64 = copy.deepcopy(net).double()
    J = F.cross_entropy(net64(x.double()), y)
    return [g.reshape(-1) for g in torch.autograd.grad(J, list(net64.parameters()))]


def test_correct_small_conv_net_is_great():
    net, (x, y) = _net(), _data()
    report = check(net, x, y)
    assert isinstance(report, GradCheckReport)
    assert [r.name for r in report.rows] == NAMES
    assert [r.checked for r in report.rows] == [27, 3, 48, 4]  # every element
    for r, g in zip(report.rows, _backprop64(net, x, y)):
        assert r.difference < 1e-7, r
        assert r.verdict == "great"
        torch.testing.assert_close(r.dtheta, g, rtol=0, atol=1e-15)
    assert report.difference < 1e-7 and report.verdict == "great" and report.ok
    J = F.cross_entropy(copy.deepcopy(net).double()(x.double()), y)
    assert abs(report.J - float(J.detach())) < 1e-12


def test_relu_and_max_pool_away_from_kinks_are_great():
    """ReLU and max-pool have kinks (z = 0, tied maxima); these random inputs are far from any."""
    net, (x, y) = _net(act="relu", pool="max"), _data()
    z = net.conv(x).detach()
    assert z.abs().min() > 1e-4  # no pre-activation within reach of eps = 1e-7
    windows = torch.relu(z).unfold(2, 2, 2).unfold(3, 2, 2).reshape(-1, 4)
    top2 = windows.topk(2, dim=1).values
    positive = top2[:, 0] > 0
    assert (top2[positive, 0] - top2[positive, 1]).min() > 1e-4  # no tie for a max
    report = check(net, x, y)
    assert report.difference < 1e-7 and report.ok


def test_a_kink_straddled_by_eps_shows_as_one_element():
    """relu at exactly 0: (relu(eps) - relu(-eps)) / 2eps = 0.5, backprop says 0."""
    report = check(lambda x: torch.relu(x).sum(), torch.tensor([0.0, 1.0, -2.0]))
    row = report.row("input")
    assert row.dtheta.tolist() == [0.0, 1.0, 0.0]
    assert row.dtheta_approx[0].item() == pytest.approx(0.5, abs=1e-9)
    assert row.worst()[0] == (0,)
    assert report.difference > 1e-3  # one element at a kink spoils the tensor


class _FunctionalDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.dropout(x, 0.5, training=self.training))  # no Dropout module


def test_other_randomness_is_the_same_in_every_evaluation():
    torch.manual_seed(0)
    net = _FunctionalDropout().train()
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 1])
    report = check(net, x, y)
    assert report.difference < 1e-7 and report.ok


def test_wrong_backward_is_flagged_where_it_is():
    net, (x, y) = _net(bad=True), _data()
    BadTanh.flip_negative = True
    try:
        report = check(net, x, y)
    finally:
        BadTanh.flip_negative = False
    # the bug sits between the conv and the linear layer: dW of the conv is wrong,
    # the linear layer's gradients (computed before the bad backward) are right
    assert report.row("conv.weight").difference > 1e-3
    assert report.row("conv.bias").difference > 1e-3
    assert report.row("conv.weight").verdict == "likely a bug"
    assert report.row("fc.weight").difference < 1e-7
    assert report.row("fc.bias").difference < 1e-7
    assert report.difference > 1e-3 and not report.ok
    assert "likely a bug" in report.table()
    # torch's own check agrees that this backward is wrong
    z = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    BadTanh.flip_negative = True
    try:
        assert not torch.autograd.gradcheck(BadTanh.apply, (z,), raise_exception=False)
    finally:
        BadTanh.flip_negative = False


def test_backward_off_by_a_factor_gives_the_hand_computed_difference():
    """dtheta = 1.5 * dtheta_approx: ||a - 1.5a|| / (||a|| + 1.5||a||) = 0.5 / 2.5 = 0.2."""
    net, (x, y) = _net(bad=True), _data()
    BadTanh.factor = 1.5
    try:
        report = check(net, x, y)
    finally:
        BadTanh.factor = 1.0
    assert report.row("conv.weight").difference == pytest.approx(0.2, abs=1e-7)
    assert report.row("conv.bias").difference == pytest.approx(0.2, abs=1e-7)
    assert report.row("fc.weight").difference < 1e-7


def test_dropout_is_off_while_checking_and_the_model_is_untouched():
    net, (x, y) = _net(dropout=0.5), _data()
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    modes = [m.training for m in net.modules()]
    rng = torch.get_rng_state()
    report = check(net, x, y)
    assert report.difference < 1e-7 and report.ok
    assert any("dropout switched off" in n for n in report.notes)
    # the user's model: same mode everywhere (dropout still on), bitwise the same weights
    assert [m.training for m in net.modules()] == modes and net.drop.training
    after = net.state_dict()
    assert all(
        after[k].dtype == torch.float32 and torch.equal(after[k], v) for k, v in before.items()
    )
    assert torch.equal(torch.get_rng_state(), rng)  # the global random state too
    assert not torch.equal(net(x), net(x))  # dropout is active again in the user's model
    # with dropout on, the cost itself is random: no difference quotient could match
    assert not torch.equal(F.cross_entropy(net(x), y), F.cross_entropy(net(x), y))


def test_batch_norm_in_training_mode_checks_and_keeps_its_statistics():
    net, (x, y) = _net(bn=True), _data()
    net.train()
    mean, var = net.bn.running_mean.clone(), net.bn.running_var.clone()
    report = check(net, x, y)
    assert report.difference < 1e-7
    names = [r.name for r in report.rows]
    assert names == ["conv.weight", "conv.bias", "bn.weight", "bn.bias", "fc.weight", "fc.bias"]
    assert torch.equal(net.bn.running_mean, mean) and torch.equal(net.bn.running_var, var)
    assert int(net.bn.num_batches_tracked) == 0


def _numerical_jacobian(fn, inputs: tuple[torch.Tensor, ...], eps: float) -> list[torch.Tensor]:
    """torch.autograd.gradcheck's numerical Jacobian of a scalar fn, one per input."""
    gc = importlib.import_module("torch.autograd.gradcheck")  # the module, not the function

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if hasattr(gc, "get_numerical_jacobian"):
            jac = gc.get_numerical_jacobian(lambda inps: fn(*inps), inputs, eps=eps)
            return [j.reshape(-1) for j in jac]
        jac = gc._get_numerical_jacobian(fn, inputs, eps=eps)  # pragma: no cover
        return [j[0].reshape(-1) for j in jac]  # pragma: no cover


def test_two_sided_differences_agree_with_torch_numerical_jacobian():
    net, (x, y) = _net(), _data()
    x64 = x.double()
    theta = tuple(p.detach().double().clone().requires_grad_(True) for p in net.parameters())

    def cost(cw, cb, fw, fb):
        a = F.avg_pool2d(torch.tanh(F.conv2d(x64, cw, cb)), 2)
        return F.cross_entropy(F.linear(a.flatten(1), fw, fb), y)

    assert torch.autograd.gradcheck(cost, theta)  # torch agrees the backprop is right
    for eps in (1e-6, 1e-7):
        report = check(net, x, y, eps=eps)
        for r, jac in zip(report.rows, _numerical_jacobian(cost, theta, eps)):
            torch.testing.assert_close(r.dtheta_approx, jac, rtol=1e-6, atol=1e-8)


def test_gradients_with_respect_to_inputs():
    net, (x, y) = _net(), _data()
    report = check(net, x, y, wrt_inputs=True)
    assert [r.name for r in report.rows] == [*NAMES, "input"]
    row = report.row("input")
    assert row.kind == "input" and row.shape == (2, 1, 6, 6) and row.difference < 1e-7
    x64 = x.double().requires_grad_(True)
    (dx,) = torch.autograd.grad(F.cross_entropy(copy.deepcopy(net).double()(x64), y), [x64])
    torch.testing.assert_close(row.dtheta, dx.reshape(-1), rtol=0, atol=1e-15)


def test_a_loss_function_is_checked_against_the_hand_gradient():
    """Cross-entropy's dJ/dz = (softmax(z) - onehot(y)) / m."""
    z = torch.tensor([[1.0, -0.5, 2.0], [0.3, 0.1, -1.2]])
    y = torch.tensor([2, 0])
    report = check(nn.CrossEntropyLoss(), (z, y))
    row = report.row("input[0]")
    hand = (z.double().softmax(1) - F.one_hot(y, 3).double()) / 2
    torch.testing.assert_close(row.dtheta, hand.reshape(-1), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(row.dtheta_approx, hand.reshape(-1), rtol=1e-6, atol=1e-8)
    assert report.difference < 1e-7
    # a plain function of the inputs: J = sum(x^3), dJ/dx = 3x^2
    x = torch.tensor([1.0, -2.0, 0.5])
    r = check(lambda t: (t**3).sum(), x).row("input")
    torch.testing.assert_close(r.dtheta, torch.tensor([3.0, 12.0, 0.75], dtype=torch.float64))
    assert r.difference < 1e-7


class _Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.w * x) ** 2).sum()  # J = sum (w_i x_i)^2


def test_hand_arithmetic_and_the_l2_term():
    # dJ/dw_i = 2 w_i x_i^2 = [2, 4, 24] for w = [1, 2, 3], x = [1, 1, 2]
    report = check(_Scaled(), torch.tensor([1.0, 1.0, 2.0]))
    row = report.row("w")
    assert row.dtheta.tolist() == [2.0, 4.0, 24.0]
    torch.testing.assert_close(row.dtheta_approx, row.dtheta, rtol=1e-7, atol=0)
    assert report.J == 1 + 4 + 36
    # J = sum of the 4 outputs W x (x all ones) + lambda/(2m) ||W||^2, m = 4:
    # dJ/dW = [4, 4] + lambda/m * W = [4, 4] + 0.125 * [1, 2] for lambda = 0.5
    lin = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0]]))
    report = check(lin, torch.ones(4, 2), loss=lambda out: out.sum(), l2=0.5)
    r = report.row("weight")
    assert r.dtheta.tolist() == [4.125, 4.25]
    torch.testing.assert_close(r.dtheta_approx, r.dtheta, rtol=1e-7, atol=0)
    assert abs(report.J - (12 + 0.5 / 8 * 5)) < 1e-12


def test_a_sample_of_elements_per_tensor():
    net, (x, y) = _net(), _data()
    full = check(net, x, y)
    part = check(net, x, y, max_per_tensor=10)
    assert [r.checked for r in part.rows] == [10, 3, 10, 4]
    assert [r.numel for r in part.rows] == [27, 3, 48, 4]
    for p, f in zip(part.rows, full.rows):
        assert p.index.unique().numel() == p.checked and bool((p.index < p.numel).all())
        # the same elements give the same differences as in the full check
        assert torch.equal(p.dtheta_approx, f.dtheta_approx[p.index])
        assert torch.equal(p.dtheta, f.dtheta[p.index])
    assert part.ok and any("max_per_tensor=10" in n for n in part.notes)
    again = check(net, x, y, max_per_tensor=10)
    other = check(net, x, y, max_per_tensor=10, seed=1)
    assert torch.equal(again.rows[0].index, part.rows[0].index)
    assert not torch.equal(other.rows[0].index, part.rows[0].index)


def test_verdicts_table_and_json():
    assert verdict(5e-8) == "great"
    assert verdict(1e-5) == "check"
    assert verdict(2e-3) == "likely a bug"
    assert verdict(float("nan")) == "likely a bug"
    a = torch.tensor([3.0, 4.0])
    assert relative_difference(a, a) == 0.0
    assert relative_difference(a, -a) == 1.0  # ||2a|| / (2||a||)
    assert relative_difference(torch.zeros(2), torch.zeros(2)) == 0.0
    report = check(_net(), *_data())
    text = report.table()
    assert "conv.weight" in text and "overall" in text and "great" in text
    assert "3x1x3x3" in text and "27/27" in text
    d = json.loads(json.dumps(report.to_dict()))
    assert d["ok"] is True and [r["name"] for r in d["rows"]] == NAMES


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": 0}, "eps"),
        ({"eps": -1e-7}, "eps"),
        ({"max_per_tensor": 0}, "max_per_tensor"),
        ({"loss": "crossentropy"}, "did you mean"),
        ({"loss": lambda out, t: out}, "one number"),
        ({"loss": 3}, "loss"),
        ({"l2": -1.0}, "l2"),
    ],
)
def test_mistakes_are_one_sentence(kwargs, match):
    x, y = _data()
    with pytest.raises(CnnkitError, match=match):
        check(_net(), x, y, **kwargs)


def test_nothing_to_check():
    lin = nn.Linear(2, 2)
    lin.requires_grad_(False)
    with pytest.raises(CnnkitError, match="nothing to check"):
        check(lin, torch.tensor([[1, 2]]))
    with pytest.raises(CnnkitError, match=r"nn\.Module or a function"):
        check(42, torch.ones(2))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("loss", "fn"),
    [("mse", F.mse_loss), ("auto", F.mse_loss), ("bce", F.binary_cross_entropy_with_logits)],
)
def test_named_losses_with_float_targets(loss, fn):
    torch.manual_seed(0)
    lin = nn.Linear(3, 1)
    x, t = torch.randn(5, 3), torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0])
    report = check(lin, x, t, loss=loss)  # (5, 1) outputs against (5,) targets
    J = fn(copy.deepcopy(lin).double()(x.double()).reshape(-1), t.double())
    assert abs(report.J - float(J.detach())) < 1e-12
    assert report.difference < 1e-7
