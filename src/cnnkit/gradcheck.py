"""Gradient checking, as the course teaches it: two-sided differences against backprop.

For every parameter element ``theta_i`` (or a random sample of them) the cost ``J`` is
computed twice, with ``theta_i`` nudged by ``+eps`` and ``-eps``::

    dtheta_approx[i] = (J(theta + eps e_i) - J(theta - eps e_i)) / (2 eps)

and compared with backprop's ``dtheta`` by the course's relative difference::

    ||dtheta_approx - dtheta||_2 / (||dtheta_approx||_2 + ||dtheta||_2)

per parameter tensor and overall: below ``1e-7`` is great, around ``1e-5`` deserves a
careful look, above ``1e-3`` is likely a bug. The per-tensor rows say *where* (``db``?
``dW`` of which layer?), as the course advises.

The check runs on a float64 copy of the model (the user's model, its mode, its buffers
and the global random state are left exactly as they were). Dropout is switched off in
the copy ("turn off dropout, check, then turn it back on"); every other module keeps
its mode, so batch norm in training mode uses the batch's statistics, a deterministic
function of the batch, and its running statistics are restored before every
evaluation of ``J``. Any other randomness (a functional ``F.dropout``, stochastic
depth) is fixed by re-seeding a forked random state before each evaluation, so ``J``
is the same deterministic function of ``theta`` in all ``2n + 1`` evaluations.

Use it while debugging, never in training: it costs two forward passes per checked
element (``max_per_tensor=`` checks a random sample of each tensor in bigger nets).

Example::

    report = cnnkit.gradcheck.check(model, x, y)   # cross-entropy for integer labels
    print(report.table())
    assert report.ok
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.errors import CnnkitError, unknown_name

__all__ = [
    "BUG",
    "GREAT",
    "OK_BELOW",
    "GradCheckReport",
    "TensorCheck",
    "check",
    "relative_difference",
    "verdict",
]

GREAT = 1e-7
"""Below this relative difference the gradient is great (the course's 10^-7)."""
OK_BELOW = 1e-5
"""``GradCheckReport.ok`` needs every difference below this (the course's "check" level)."""
BUG = 1e-3
"""Above this relative difference there is likely a bug (the course's 10^-3)."""

DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
LOSSES = ("auto", "ce", "cross_entropy", "bce", "mse")


def verdict(difference: float) -> str:
    """The course's reading of a relative difference.

    Args:
        difference: ``||dtheta_approx - dtheta|| / (||dtheta_approx|| + ||dtheta||)``.

    Returns:
        ``"great"`` (below 1e-7), ``"check"`` (1e-7 to 1e-3: fine at a kink or in a big
        net, otherwise look at the components) or ``"likely a bug"`` (above 1e-3).
    """
    if not math.isfinite(difference) or difference > BUG:
        return "likely a bug"
    return "great" if difference < GREAT else "check"


def relative_difference(dtheta_approx: torch.Tensor, dtheta: torch.Tensor) -> float:
    """``||dtheta_approx - dtheta||_2 / (||dtheta_approx||_2 + ||dtheta||_2)``, 0 when both are 0.

    Args:
        dtheta_approx: The two-sided differences.
        dtheta: Backprop's gradient at the same elements.

    Returns:
        The course's relative difference.
    """
    a = dtheta_approx.double().reshape(-1)
    b = dtheta.double().reshape(-1)
    den = float(a.norm() + b.norm())
    if den == 0:
        return 0.0
    return float((a - b).norm()) / den


@dataclass
class TensorCheck:
    """The check of one parameter tensor (or one input tensor).

    Attributes:
        name: Parameter name (``conv1.weight``) or ``input`` / ``input[i]``.
        kind: ``"parameter"`` or ``"input"``.
        shape: The tensor's shape (PyTorch order).
        numel: Its number of elements.
        index: Flat indices of the checked elements (all, or a sorted random sample).
        dtheta_approx: Two-sided differences at those elements (float64).
        dtheta: Backprop's gradient at those elements (float64).
        difference: The course's relative difference over the checked elements.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    numel: int
    index: torch.Tensor = field(repr=False)
    dtheta_approx: torch.Tensor = field(repr=False)
    dtheta: torch.Tensor = field(repr=False)
    difference: float = 0.0

    @property
    def checked(self) -> int:
        """How many elements were checked."""
        return int(self.index.numel())

    @property
    def verdict(self) -> str:
        """``great``, ``check`` or ``likely a bug`` (see :func:`verdict`)."""
        return verdict(self.difference)

    def worst(self) -> tuple[tuple[int, ...], float, float]:
        """The element where the two gradients differ most.

        Returns:
            ``(multi-index, dtheta_approx, dtheta)`` of that element.
        """
        if self.checked == 0:
            return (), 0.0, 0.0
        j = int((self.dtheta_approx - self.dtheta).abs().argmax())
        flat = int(self.index[j])
        where = tuple(int(i) for i in np.unravel_index(flat, self.shape)) if self.shape else ()
        return where, float(self.dtheta_approx[j]), float(self.dtheta[j])


@dataclass
class GradCheckReport:
    """What :func:`check` found.

    Attributes:
        rows: One :class:`TensorCheck` per checked tensor (parameters, then inputs).
        difference: The relative difference over every checked element together.
        eps: The nudge epsilon.
        J: The cost at theta (float64).
        notes: What the check did on the copy (dropout off, elements sampled, tensors
            left out) and why.
    """

    rows: list[TensorCheck]
    difference: float
    eps: float
    J: float
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """The overall verdict (see :func:`verdict`)."""
        return verdict(self.difference)

    @property
    def ok(self) -> bool:
        """True when the overall and every tensor's difference are below 1e-5 (no sign of a bug)."""
        diffs = [self.difference, *(r.difference for r in self.rows)]
        return all(math.isfinite(d) and d < OK_BELOW for d in diffs)

    def row(self, name: str) -> TensorCheck:
        """The row of one tensor, by name.

        Args:
            name: A parameter name such as ``conv1.weight``, or ``input``.

        Returns:
            Its :class:`TensorCheck`.
        """
        for r in self.rows:
            if r.name == name:
                return r
        raise unknown_name("checked tensor", name, [r.name for r in self.rows])

    def table(self) -> str:
        """A readable table: one line per tensor, the overall line and the notes.

        Returns:
            The table as text.
        """
        head = ("tensor", "shape", "checked", "difference", "verdict", "worst: approx vs backprop")
        lines = []
        for r in self.rows:
            where, a, b = r.worst()
            at = "[" + ",".join(map(str, where)) + "]"
            lines.append(
                (
                    r.name,
                    "x".join(map(str, r.shape)) or "scalar",
                    f"{r.checked:,}/{r.numel:,}",
                    f"{r.difference:.2e}",
                    r.verdict,
                    f"{at} {a:.6g} vs {b:.6g}",
                )
            )
        n = sum(r.checked for r in self.rows)
        total = sum(r.numel for r in self.rows)
        lines.append(
            ("overall", "", f"{n:,}/{total:,}", f"{self.difference:.2e}", self.verdict, "")
        )
        widths = [max(len(str(row[i])) for row in [head, *lines]) for i in range(len(head))]

        def fmt(row: Sequence[str]) -> str:
            return "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()

        out = [
            f"gradient check: J = {self.J:.6g}, eps = {self.eps:g}, float64; "
            "difference = ||dtheta_approx - dtheta|| / (||dtheta_approx|| + ||dtheta||)",
            fmt(head),
            *(fmt(row) for row in lines),
            "verdicts: < 1e-7 great, around 1e-5 check, > 1e-3 likely a bug"
            f" -> {'ok' if self.ok else 'NOT ok'}",
        ]
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        """Plain types (for JSON): the overall numbers and one entry per tensor.

        Returns:
            ``{"difference", "verdict", "ok", "eps", "J", "notes", "rows": [...]}``.
        """
        rows = []
        for r in self.rows:
            where, a, b = r.worst()
            rows.append(
                {
                    "name": r.name,
                    "kind": r.kind,
                    "shape": list(r.shape),
                    "numel": r.numel,
                    "checked": r.checked,
                    "difference": r.difference,
                    "verdict": r.verdict,
                    "worst": {"index": list(where), "dtheta_approx": a, "dtheta": b},
                }
            )
        return {
            "difference": self.difference,
            "verdict": self.verdict,
            "ok": self.ok,
            "eps": self.eps,
            "J": self.J,
            "notes": list(self.notes),
            "rows": rows,
        }


def _as_tuple(inputs: Any) -> tuple[Any, ...]:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def _device_of(module: Any, xs: Sequence[Any]) -> torch.device:
    dev = None
    if isinstance(module, nn.Module):
        for t in [*module.parameters(), *module.buffers()]:
            dev = t.device
            break
    if dev is None:
        dev = next((x.device for x in xs if isinstance(x, torch.Tensor)), torch.device("cpu"))
    return torch.device("cpu") if dev.type == "mps" else dev  # MPS has no float64


def _to64(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        x = x.detach().to(device)
        return x.to(torch.float64) if x.is_floating_point() else x
    return x


def _check_settings(eps: Any, max_per_tensor: Any, seed: Any, l2: Any) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise CnnkitError(
            f"eps must be a small positive number, got {eps!r}; e.g. eps=1e-7 (the course's)."
        )
    if max_per_tensor is not None and (
        isinstance(max_per_tensor, bool)
        or not isinstance(max_per_tensor, int)
        or max_per_tensor < 1
    ):
        raise CnnkitError(
            f"max_per_tensor must be a whole number >= 1 or None (all elements), got "
            f"{max_per_tensor!r}; e.g. max_per_tensor=50."
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise CnnkitError(f"seed must be an integer, got {seed!r}; e.g. seed=0.")
    if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not l2 >= 0:
        raise CnnkitError(f"l2 must be a number >= 0 (lambda), got {l2!r}; e.g. l2=0.01.")


def _objective(
    loss: str | Callable[..., torch.Tensor],
    targets: Any,
    seed: int,
    device: torch.device,
) -> Callable[[Any], torch.Tensor]:
    """Output -> scalar cost J, following ``loss`` (see :func:`check`)."""
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise unknown_name("loss", loss, LOSSES)
    elif not callable(loss):
        raise CnnkitError(
            f"loss must be a name ({', '.join(LOSSES)}) or a function (output, targets) -> J, "
            f"got {type(loss).__name__}."
        )
    elif isinstance(loss, nn.Module):
        loss = copy.deepcopy(loss).to(device=device, dtype=torch.float64)

    projection: list[torch.Tensor] = []

    def tensor_out(out: Any) -> torch.Tensor:
        if not isinstance(out, torch.Tensor):
            raise CnnkitError(
                f"the model returns a {type(out).__name__}, not a tensor; pass "
                "loss=a function (output, targets) -> J that makes the cost from it."
            )
        return out

    def cost_of(out: Any) -> torch.Tensor:
        if callable(loss):
            return loss(out, targets) if targets is not None else loss(out)
        out = tensor_out(out)
        name = loss
        if name == "auto":
            if targets is None:
                if out.numel() == 1:  # the function is the cost itself
                    return out.reshape(())
                # a fixed random weighting of every output element: J = sum(R * out)
                if not projection:
                    g = torch.Generator().manual_seed(seed)
                    r = torch.randn(out.shape, generator=g, dtype=torch.float64)
                    projection.append(r.to(out.device))
                return (projection[0] * out).sum()
            name = "ce" if not targets.is_floating_point() else "mse"
        if targets is None:
            raise CnnkitError(f"loss={loss!r} needs targets=; pass the labels of the inputs.")
        if name in ("ce", "cross_entropy"):
            return F.cross_entropy(out, targets)
        t = targets.to(out.dtype)
        if out.shape != t.shape and out.numel() == t.numel():
            out = out.reshape(t.shape)  # (N, 1) outputs against (N,) targets
        if name == "bce":
            return F.binary_cross_entropy_with_logits(out, t)
        return F.mse_loss(out, t)

    return cost_of


def _sample(numel: int, max_per_tensor: int | None, gen: torch.Generator) -> torch.Tensor:
    if max_per_tensor is None or numel <= max_per_tensor:
        return torch.arange(numel)
    return torch.randperm(numel, generator=gen)[:max_per_tensor].sort().values


def check(
    module_or_fn: nn.Module | Callable[..., Any],
    inputs: torch.Tensor | Sequence[Any],
    targets: torch.Tensor | None = None,
    loss: str | Callable[..., torch.Tensor] = "auto",
    eps: float = 1e-7,
    max_per_tensor: int | None = None,
    seed: int = 0,
    *,
    wrt_inputs: bool = False,
    l2: float = 0.0,
) -> GradCheckReport:
    """Check backprop's gradients of a module (or a loss) with two-sided differences.

    ``J(theta) = loss(module_or_fn(*inputs), targets)`` (+ the L2 term), all in float64
    on a copy of the module; for each checked element
    ``dtheta_approx[i] = (J(theta + eps e_i) - J(theta - eps e_i)) / (2 eps)``.

    Args:
        module_or_fn: Any ``nn.Module`` (its trainable parameters are checked; it is
            deep-copied to float64 and left untouched), or a function of the inputs (a
            cost such as a loss): then the gradients w.r.t. the inputs are checked; it
            is called as is with float64 inputs, so it must compute in float64.
        inputs: One tensor or a sequence of arguments (``module_or_fn(*inputs)``);
            floating-point tensors are converted to float64.
        targets: Labels for ``loss`` (None: no targets).
        loss: ``"auto"`` (integer targets: softmax cross-entropy; float targets: mean
            squared error; no targets: the output itself when it is one number, else
            ``sum(R * output)`` for a fixed random ``R``, so that every output element
            counts with its own weight), ``"ce"``, ``"bce"`` (sigmoid + logistic loss),
            ``"mse"``, or a function ``(output, targets) -> J`` (``output -> J``
            without targets); a loss module is copied to float64 too.
        eps: The nudge (the course's 1e-7).
        max_per_tensor: Check at most this many elements per tensor, a random sample
            drawn with ``seed`` (None: every element); for bigger nets.
        seed: Seed of the sample, of the projection ``R`` and of any randomness left in
            the forward pass (the same in every evaluation of J).
        wrt_inputs: Also check the gradients w.r.t. the floating-point inputs (always
            done for a function or a module without trainable parameters).
        l2: The course's L2 lambda: adds ``lambda / (2m) * sum ||W||^2`` over the
            weights with more than one dimension (as the trainer does), ``m`` being the
            first input's batch size. "Remember regularization": J must be the cost
            whose gradient backprop computes.

    Returns:
        A :class:`GradCheckReport`: ``.table()``, ``.ok``, one row per tensor.

    Raises:
        CnnkitError: On a bad setting, a loss that is not one number, or nothing to check.
    """
    _check_settings(eps, max_per_tensor, seed, l2)
    is_module = isinstance(module_or_fn, nn.Module)
    if not is_module and not callable(module_or_fn):
        raise CnnkitError(
            f"check() needs an nn.Module or a function of the inputs, got "
            f"{type(module_or_fn).__name__}."
        )
    eps = float(eps)
    raw = _as_tuple(inputs)
    device = _device_of(module_or_fn, raw)
    notes: list[str] = []
    if is_module:
        try:
            net: Any = copy.deepcopy(module_or_fn)
        except Exception as e:  # a module holding something that cannot be copied
            raise CnnkitError(
                f"the model cannot be copied for the check ({type(e).__name__}: {e}); pass "
                "a function that runs a float64 copy of it instead."
            ) from None
        net = net.to(device=device, dtype=torch.float64)
        drops = [(n, m) for n, m in net.named_modules() if isinstance(m, DROPOUT_TYPES)]
        off_now = [f"{n or 'model'}: {type(m).__name__}" for n, m in drops if m.training]
        for m in net.modules():
            if isinstance(m, DROPOUT_TYPES):
                m.eval()
        if off_now:
            notes.append(
                f"dropout switched off in the copy ({', '.join(off_now)}); the model you "
                "passed keeps its mode"
            )
        elif drops:
            notes.append("dropout was already off (eval mode)")
        bn = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if bn:
            how = "batch" if bn[0].training else "running"
            notes.append(
                f"batch norm kept in the model's mode (normalizing with the {how} statistics); "
                "its running statistics are restored before every evaluation of J"
            )
        params = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
        frozen = [n for n, p in net.named_parameters() if not p.requires_grad]
        if frozen:
            shown = ", ".join(frozen[:4]) + (", ..." if len(frozen) > 4 else "")
            notes.append(f"{len(frozen)} frozen parameter tensor(s) not checked ({shown})")
    else:
        net = module_or_fn
        params = []
    xs = [_to64(x, device) for x in raw]
    check_inputs = wrt_inputs or not params
    leaves: list[tuple[str, torch.Tensor, str]] = [(n, p, "parameter") for n, p in params]
    if check_inputs:
        floats = [
            i for i, x in enumerate(xs) if isinstance(x, torch.Tensor) and x.is_floating_point()
        ]
        for i in floats:
            xs[i] = xs[i].clone().requires_grad_(True)
            name = "input" if len(raw) == 1 else f"input[{i}]"
            leaves.append((name, xs[i], "input"))
    if not leaves:
        raise CnnkitError(
            "nothing to check: no trainable parameters and no floating-point inputs; pass "
            "a module with parameters or float inputs."
        )
    tgt = _to64(targets, device)
    objective = _objective(loss, tgt, seed, device)
    buffers = [(b, b.detach().clone()) for b in net.buffers()] if is_module else []
    first = xs[0] if xs else None
    m = int(first.shape[0]) if isinstance(first, torch.Tensor) and first.ndim else 1
    weights = [p for _, p in params if p.ndim > 1]
    cuda = [device.index or 0] if device.type == "cuda" else []

    def cost_at_theta() -> torch.Tensor:
        """J at the current (possibly nudged) theta, in the same defined state every time."""
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        with torch.random.fork_rng(devices=cuda):
            torch.random.default_generator.manual_seed(seed)  # only the forked states
            if cuda:
                torch.cuda.default_generators[cuda[0]].manual_seed(seed)
            cost = objective(net(*xs))
        if not isinstance(cost, torch.Tensor) or cost.numel() != 1:
            shape = tuple(cost.shape) if isinstance(cost, torch.Tensor) else type(cost).__name__
            raise CnnkitError(
                f"the cost J has shape {shape}; the loss must return one number, e.g. reduce "
                "it with .mean()."
            )
        cost = cost.reshape(())
        if l2 and weights:
            cost = cost + sum((w * w).sum() for w in weights) * (float(l2) / (2 * m))
        return cost

    J0 = cost_at_theta()
    if not J0.requires_grad:
        raise CnnkitError(
            "the cost J does not depend on the checked tensors through autograd; compute it "
            "with torch operations on the module's output."
        )
    grads = torch.autograd.grad(J0, [t for _, t, _ in leaves], allow_unused=True)
    gen = torch.Generator().manual_seed(seed)
    rows: list[TensorCheck] = []
    for (name, t, kind), g in zip(leaves, grads):
        index = _sample(t.numel(), max_per_tensor, gen)
        dtheta = (torch.zeros_like(t) if g is None else g).detach().reshape(-1)[index].double()
        approx = torch.empty(len(index), dtype=torch.float64)
        with torch.no_grad():
            for j, flat in enumerate(index.tolist()):
                at = tuple(int(i) for i in np.unravel_index(flat, t.shape)) if t.ndim else ()
                theta_i = t[at].clone()
                t[at] = theta_i + eps
                J_plus = float(cost_at_theta())
                t[at] = theta_i - eps
                J_minus = float(cost_at_theta())
                t[at] = theta_i
                approx[j] = (J_plus - J_minus) / (2 * eps)
        rows.append(
            TensorCheck(
                name=name,
                kind=kind,
                shape=tuple(t.shape),
                numel=t.numel(),
                index=index,
                dtheta_approx=approx,
                dtheta=dtheta.cpu(),
                difference=relative_difference(approx, dtheta.cpu()),
            )
        )
    sampled = [r for r in rows if r.checked < r.numel]
    if sampled:
        notes.append(
            f"max_per_tensor={max_per_tensor}: a random sample (seed {seed}) of "
            f"{len(sampled)} tensor(s) checked, not every element"
        )
    overall = relative_difference(
        torch.cat([r.dtheta_approx for r in rows]), torch.cat([r.dtheta for r in rows])
    )
    return GradCheckReport(
        rows=rows, difference=overall, eps=eps, J=float(J0.detach()), notes=notes
    )
