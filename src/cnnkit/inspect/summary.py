"""``cnnkit.summary(model, input_size)``: every layer's output, parameters and cost.

How it counts, so that no number is ambiguous:

- **Parameters** are counted once each, however often a module or tensor is
  reused, and include bare ``nn.Parameter``s used in a ``forward``. Parameters of
  modules that this forward did not run (e.g. GoogLeNet's training-only side
  classifiers) are listed in their own rows. The total is always
  ``sum(p.numel() for p in model.parameters())``. Batch norm's running mean and
  variance are *buffers* (statistics, not learned), reported apart.
- **MACs** are the course's multiplications: one multiply-accumulate per weight
  use in a convolution, a fully connected layer or a matrix product
  (``n_H*n_W*n_C * f*f*n_C_prev`` for a conv). **FLOPs = 2 x MACs**, labelled.
- **Other ops** are everything else, counted apart rather than as zero: one per
  output element of element-wise ops (batch norm, activations, residual adds),
  one per window element of a pooling, one per input element of a global
  average.

Costs are measured by running the model once (batch 1, eval mode, no grad) and
attributing each tensor operation to the module running it, so operations
written in a ``forward`` (``x + shortcut``) appear too, as ``name (ops)`` rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from cnnkit import shapes
from cnnkit.errors import CnnkitError

__all__ = ["Row", "Summary", "summary"]


@dataclass
class Row:
    """One line of a summary.

    Attributes:
        name: Module path (``layer1.0.conv1``); ``name (ops)`` for operations
            written in a module's ``forward``; ``name (not run)`` for unused modules.
        type: Module class, or the operations seen.
        depth: Nesting depth (1 = a child of the model).
        input_shape: Input in course order (``n_H, n_W, n_C``; ``n, n_C`` for a
            signal, ``n_D, n_H, n_W, n_C`` for a volume), first input only.
        output_shapes: Output(s) in course order.
        params: Learnable parameters counted in this row.
        trainable: Of which ``requires_grad``.
        macs: Multiply-accumulates (conv, FC, matmul).
        other_ops: Other operations (see module docstring).
        formula: The course's formulas behind the row (with ``explain=True``).
        note: Extra facts (shared module, not run).
    """

    name: str
    type: str
    depth: int
    input_shape: tuple[int, ...] | None = None
    output_shapes: list[tuple[int, ...]] = field(default_factory=list)
    params: int = 0
    trainable: int = 0
    macs: int = 0
    other_ops: int = 0
    formula: str = ""
    note: str = ""

    @property
    def non_trainable(self) -> int:
        """Parameters with ``requires_grad=False`` (frozen)."""
        return self.params - self.trainable

    @property
    def output(self) -> str:
        """Output shape(s) as ``n_H x n_W x n_C`` text (``n x n_C``, ``n_D x n_H x n_W x n_C``)."""
        return "; ".join(_shape_text(s) for s in self.output_shapes)


@dataclass
class Summary:
    """The result of :func:`summary`: rows and totals.

    Attributes:
        model_name: The model's name.
        input_size: Input in course order.
        rows: One :class:`Row` per shown layer.
        total_params: ``sum(p.numel())`` over the unique parameters.
        trainable_params: Of which ``requires_grad``.
        buffers: Numbers kept in buffers (batch norm running mean/var), not learned.
        macs: Total multiply-accumulates.
        other_ops: Total other operations.
        activation_bytes: Memory of the shown rows' outputs at batch 1.
        param_bytes: Memory of the parameters.
        params_not_run: Parameters of modules this forward did not use.
        explain: Whether :meth:`__str__` prints the formulas.
    """

    model_name: str
    input_size: tuple[int, ...]
    rows: list[Row]
    total_params: int
    trainable_params: int
    buffers: int
    macs: int
    other_ops: int
    activation_bytes: int
    param_bytes: int
    params_not_run: int = 0
    explain: bool = False

    @property
    def non_trainable_params(self) -> int:
        """Frozen parameters (``requires_grad=False``)."""
        return self.total_params - self.trainable_params

    @property
    def flops(self) -> int:
        """FLOPs = 2 x MACs (one multiply and one add per MAC)."""
        return 2 * self.macs

    def to_text(self, explain: bool | None = None) -> str:
        """The summary as a plain-text table.

        Args:
            explain: Print the formula under each conv/pool/FC/BN row
                (default: the value given to :func:`summary`).

        Returns:
            The table and totals.
        """
        explain = self.explain if explain is None else explain
        w_name = max([len("layer"), *(len(r.name) for r in self.rows)])
        w_type = max([len("type"), *(len(r.type) for r in self.rows)])
        w_out = max([len("output"), *(len(r.output) for r in self.rows)])
        frozen = any(r.non_trainable for r in self.rows)
        head = f"{'layer':<{w_name}}  {'type':<{w_type}}  {'output':>{w_out}}  {'params':>12}"
        head += f"  {'(frozen)':>12}" if frozen else ""
        head += f"  {'MACs':>15}  {'other ops':>12}"
        sep = "-" * len(head)
        lines = [
            f"{self.model_name}   input {_shape_text(self.input_size)}   "
            f"(shapes as {_notation(len(self.input_size) - 1)}, batch 1)",
            sep,
            head,
            sep,
        ]
        for r in self.rows:
            line = f"{r.name:<{w_name}}  {r.type:<{w_type}}  {r.output:>{w_out}}  {r.params:>12,}"
            line += f"  {r.non_trainable:>12,}" if frozen else ""
            line += f"  {r.macs:>15,}  {r.other_ops:>12,}"
            if r.note:
                line += f"   {r.note}"
            lines.append(line)
            if explain and r.formula:
                lines += [f"{'':<{w_name}}    {t}" for t in r.formula.splitlines()]
        lines.append(sep)
        lines.append(
            f"params      {self.total_params:,}  (trainable {self.trainable_params:,}, "
            f"non-trainable {self.non_trainable_params:,})"
        )
        if self.params_not_run:
            lines.append(
                f"            of which {self.params_not_run:,} in modules this forward does "
                "not run (training-only branches)"
            )
        if self.buffers:
            lines.append(
                f"buffers     {self.buffers:,}  (batch-norm running mean/var: statistics, "
                "not learned)"
            )
        lines.append(
            f"MACs        {self.macs:,}  ({_human(self.macs)} multiply-accumulates in "
            "conv/FC/matmul)"
        )
        lines.append(f"FLOPs       {self.flops:,}  ({_human(self.flops)} = 2 x MACs)")
        lines.append(
            f"other ops   {self.other_ops:,}  ({_human(self.other_ops)}: BN, activations, "
            "adds, pooling; not in MACs)"
        )
        lines.append(
            f"memory      activations {_mb(self.activation_bytes)} (forward, batch 1), "
            f"parameters {_mb(self.param_bytes)}"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def _human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.4g}{unit}"
    return str(int(n))


def _mb(nbytes: int) -> str:
    return f"{nbytes / 2**20:.2f} MB"


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape)) if len(shape) else "scalar"


def _notation(n_axes: int) -> str:
    """``n x n_C`` / ``n_H x n_W x n_C`` / ``n_D x n_H x n_W x n_C`` (images when unknown)."""
    return shapes.notation(n_axes if n_axes in (1, 2, 3) else 2)


def _course(shape: torch.Size | Sequence[int]) -> tuple[int, ...]:
    """Torch layout without the batch axis -> course order, channels last.

    ``(B, C, L) -> (L, C)``, ``(B, C, H, W) -> (H, W, C)``, ``(B, C, D, H, W) -> (D, H, W, C)``;
    a flat ``(B, N)`` stays ``(N,)``.
    """
    s = tuple(shape)[1:]
    if len(s) >= 2:
        return (*s[1:], s[0])
    return s


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    return []


# ---------------------------------------------------------------- op costs

_CONV = {
    "convolution",
    "_convolution",
    "convolution_overrideable",
    "mkldnn_convolution",
    "cudnn_convolution",
    "miopen_convolution",
    "_slow_conv2d_forward",
}
_POOL = {
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "max_pool2d_with_indices",
    "max_pool3d_with_indices",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "max_pool1d_with_indices",
}
_REDUCE = {
    "_adaptive_avg_pool2d",
    "_adaptive_avg_pool3d",
    "adaptive_avg_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "mean",
    "sum",
    "amax",
}
_NORM = {
    "native_batch_norm",
    "_native_batch_norm_legit",
    "_native_batch_norm_legit_no_training",
    "native_layer_norm",
    "native_group_norm",
    "_softmax",
    "_log_softmax",
}


def _op_cost(func: Any, args: tuple, out: Any) -> tuple[int, int]:
    """(MACs, other ops) of one aten call."""
    name = func._overloadpacket.__name__
    if name in _CONV:
        x, w = args[0], args[1]
        transposed = bool(args[6]) if name in ("convolution", "_convolution") else False
        per = w[0].numel()  # (C_out, C_in/g, f, f)[0] or transposed (C_in, C_out/g, f, f)[0]
        n = x.numel() if transposed else _tensors(out)[0].numel()
        return n * per, 0
    if name in ("mm", "bmm"):
        return args[0].numel() * args[1].shape[-1], 0
    if name in ("addmm", "baddbmm", "addbmm"):
        return args[1].numel() * args[2].shape[-1], 0
    outs = _tensors(out)
    if not outs:
        return 0, 0
    if name in _POOL:
        k = args[1] if len(args) > 1 else 1
        k = [k] if isinstance(k, int) else list(k)
        spatial = outs[0].dim() - 2
        window = math.prod(k) if len(k) == spatial else k[0] ** spatial
        return 0, outs[0].numel() * window
    if name in _REDUCE:
        return 0, args[0].numel() if isinstance(args[0], torch.Tensor) else 0
    if name in _NORM:
        return 0, outs[0].numel()
    if torch.Tag.pointwise in func.tags:
        return 0, outs[0].numel()
    return 0, 0


class _OpCounter(TorchDispatchMode):
    """Counts MACs and other ops of every aten call, attributing them to a frame."""

    def __init__(self, tracker: _Tracker) -> None:
        super().__init__()
        self.tracker = tracker

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        macs, other = _op_cost(func, args, out)
        if macs or other:
            self.tracker.add(func._overloadpacket.__name__, macs, other)
        return out


# ---------------------------------------------------------------- tracking


@dataclass
class _Frame:
    name: str
    module: nn.Module
    depth: int
    display: bool
    macs0: int
    other0: int
    input_shape: tuple[int, ...] | None
    accounted_macs: int = 0
    accounted_other: int = 0
    ops: dict[str, int] = field(default_factory=dict)


class _Tracker:
    def __init__(self, model: nn.Module, max_depth: int | None, explain: bool) -> None:
        self.model = model
        self.max_depth = max_depth
        self.explain = explain
        self.names = {id(m): n for n, m in model.named_modules()}
        self.stack: list[_Frame] = []
        self.rows: list[Row] = []
        self.macs = 0
        self.other = 0
        self.seen_params: set[int] = set()
        self.calls: dict[int, int] = {}
        self.hidden = 0  # > 0 while inside a display module

    def add(self, op: str, macs: int, other: int) -> None:
        self.macs += macs
        self.other += other
        if self.stack:
            ops = self.stack[-1].ops
            ops[op] = ops.get(op, 0) + 1

    def _depth(self, name: str) -> int:
        return 0 if name == "" else name.count(".") + 1

    def pre(self, module: nn.Module, args: tuple) -> None:
        self.calls[id(module)] = self.calls.get(id(module), 0) + 1
        if self.hidden:
            self.hidden += 1
            return
        name = self.names.get(id(module), "?")
        depth = self._depth(name)
        leaf = not any(True for _ in module.children())
        display = leaf or (self.max_depth is not None and depth >= self.max_depth)
        ins = _tensors(args)
        shape = _course(ins[0].shape) if ins else None
        self.stack.append(_Frame(name, module, depth, display, self.macs, self.other, shape))
        if display:
            self.hidden = 1

    def post(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self.hidden > 1:
            self.hidden -= 1
            return
        self.hidden = 0
        frame = self.stack.pop()
        total_macs = self.macs - frame.macs0
        total_other = self.other - frame.other0
        outs = [_course(t.shape) for t in _tensors(output)]
        shared = self.calls[id(module)] > 1
        if frame.display:
            params = self._take(module.parameters())
            params_any = any(True for _ in module.parameters())
            row = Row(
                name=frame.name or "(model)",
                type=type(module).__name__,
                depth=frame.depth,
                input_shape=frame.input_shape,
                output_shapes=outs,
                params=params[0],
                trainable=params[1],
                macs=total_macs,
                other_ops=total_other,
                note=(
                    (
                        "called again (shared module): parameters counted once"
                        if params_any
                        else "called again (shared module)"
                    )
                    if shared
                    else ""
                ),
            )
            if self.explain:
                row.formula = _formula(module, frame.input_shape)
            self.rows.append(row)
        else:
            self_macs = total_macs - frame.accounted_macs
            self_other = total_other - frame.accounted_other
            params = self._take(module.parameters(recurse=False))
            if self_macs or self_other or params[0]:
                ops = ", ".join(sorted(frame.ops)) or "parameters"
                self.rows.append(
                    Row(
                        name=f"{frame.name or '(model)'} (ops)",
                        type=ops,
                        depth=frame.depth,
                        output_shapes=outs if frame.name == "" else [],
                        params=params[0],
                        trainable=params[1],
                        macs=self_macs,
                        other_ops=self_other,
                        note="operations written in its forward()",
                    )
                )
        if self.stack:
            self.stack[-1].accounted_macs += total_macs
            self.stack[-1].accounted_other += total_other

    def _take(self, params: Any) -> tuple[int, int]:
        n = t = 0
        for p in params:
            if id(p) in self.seen_params:
                continue
            self.seen_params.add(id(p))
            n += p.numel()
            t += p.numel() if p.requires_grad else 0
        return n, t

    def not_run_rows(self) -> list[Row]:
        """Rows for parameters of modules the forward never called."""
        groups: dict[str, list[int]] = {}
        for pname, p in self.model.named_parameters():
            if id(p) in self.seen_params:
                continue
            self.seen_params.add(id(p))
            owner = pname.rpartition(".")[0]
            parts = owner.split(".") if owner else []
            group = owner
            for k in range(1, len(parts) + 1):
                prefix = ".".join(parts[:k])
                mod = self.model.get_submodule(prefix)
                if self.calls.get(id(mod), 0) == 0:
                    group = prefix
                    break
            g = groups.setdefault(group, [0, 0])
            g[0] += p.numel()
            g[1] += p.numel() if p.requires_grad else 0
        rows = []
        for group, (n, t) in groups.items():
            mod = self.model.get_submodule(group) if group else self.model
            rows.append(
                Row(
                    name=f"{group or '(model)'} (not run)",
                    type=type(mod).__name__,
                    depth=self._depth(group),
                    params=n,
                    trainable=t,
                    note="not used by this forward (e.g. a training-only branch)",
                )
            )
        return rows


def _collapse(text: str) -> str:
    """Merge per-axis lines with the same right side: ``n_H = n_W: 28 = ...``."""
    lines = text.splitlines()
    if len(lines) > 1 and all(": " in ln for ln in lines):
        labels, rests = zip(*(ln.split(": ", 1) for ln in lines))
        if len(set(rests)) == 1:
            return " = ".join(labels) + ": " + rests[0]
    return text


def _formula(module: nn.Module, in_shape: tuple[int, ...] | None) -> str:
    """The course's formulas for one conv / pool / FC / BN layer."""
    return "\n".join(
        _collapse(block) for block in _formula_blocks(module, in_shape).split("\n\n")
    ).strip()


def _formula_blocks(module: nn.Module, in_shape: tuple[int, ...] | None) -> str:
    """Formula blocks separated by blank lines (the size block may span one line per axis)."""
    try:
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and in_shape:
            n = in_shape[:-1]
            p = module.padding if isinstance(module.padding, str) else tuple(module.padding)
            size = shapes.conv_output_size(
                n,
                tuple(module.kernel_size),
                p,
                tuple(module.stride),
                tuple(module.dilation),
                explain=True,
            )
            prm = shapes.conv_params(
                tuple(module.kernel_size),
                module.in_channels,
                module.out_channels,
                bias=module.bias is not None,
                groups=module.groups,
                explain=True,
            )
            mac = shapes.conv_macs(
                size.value,
                module.out_channels,
                tuple(module.kernel_size),
                module.in_channels,
                groups=module.groups,
                explain=True,
            )
            return f"{size.text}\n\nparams {prm.text}\n\nMACs {mac.text}"
        if (
            isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))
            and in_shape
        ):
            size = shapes.conv_transpose_output_size(
                in_shape[:-1],
                tuple(module.kernel_size),
                tuple(module.padding),
                tuple(module.stride),
                tuple(module.output_padding),
                tuple(module.dilation),
                explain=True,
            )
            mac = shapes.conv_transpose_macs(
                in_shape[:-1],
                module.in_channels,
                tuple(module.kernel_size),
                module.out_channels,
                groups=module.groups,
                explain=True,
            )
            return f"{size.text}\n\nMACs {mac.text}"
        if (
            isinstance(
                module,
                (
                    nn.MaxPool1d,
                    nn.MaxPool2d,
                    nn.MaxPool3d,
                    nn.AvgPool1d,
                    nn.AvgPool2d,
                    nn.AvgPool3d,
                ),
            )
            and in_shape
        ):
            dims = len(in_shape) - 1

            def t(v: Any) -> tuple:
                return tuple(v) if isinstance(v, (tuple, list)) else (v,) * dims

            d = t(getattr(module, "dilation", 1))
            size = shapes.pool_output_size(
                in_shape[:-1],
                t(module.kernel_size),
                t(module.stride),
                t(module.padding),
                d,
                ceil_mode=bool(module.ceil_mode),
                explain=True,
            )
            return f"{size.text}\n\nparams 0 (pooling has hyperparameters f, s only)"
        if isinstance(module, nn.Linear):
            prm = shapes.fc_params(
                module.in_features, module.out_features, bias=module.bias is not None, explain=True
            )
            mac = shapes.fc_macs(module.in_features, module.out_features, explain=True)
            return f"params {prm.text}\n\nMACs {mac.text}"
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            return "params " + shapes.bn_params(module.num_features, explain=True).text
    except Exception:  # a formula is an explanation; never fail the summary for it
        return ""
    return ""


def _default_input(model: nn.Module) -> tuple[int, ...] | None:
    size = getattr(model, "input_size", None)
    if size is not None:
        return tuple(size)
    name = getattr(model, "cnnkit_name", None)
    if name:
        from cnnkit.models import get_model_info

        return get_model_info(name).input_size
    return None


def _first_conv(model: nn.Module) -> nn.Module | None:
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            return m
    return None


def _check_channels(model: nn.Module, size: tuple[int, ...], label: str) -> None:
    """Refuse, in one sentence, an input with the wrong number of axes or channels."""
    first = _first_conv(model)
    if not isinstance(first, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return
    want = first.in_channels
    dims = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[type(first)]
    if len(size) - 1 != dims:
        try:
            default = _default_input(model)
        except CnnkitError:  # a name set by hand that is not registered
            default = None
        if default is not None and len(default) == dims + 1:
            example = _shape_text((*default[:-1], want))
        else:
            example = {1: f"256x{want}", 2: f"224x224x{want}", 3: f"32x32x32x{want}"}[dims]
        raise CnnkitError(
            f"{label} takes {dims}D inputs but the input {_shape_text(size)} has "
            f"{len(size) - 1} spatial {'axis' if len(size) == 2 else 'axes'}; give "
            f"{dims + 1} sizes ({_notation(dims)}), e.g. {example}."
        )
    if size[-1] != want:
        hint = ""
        if want in size[:-1]:
            i = size.index(want)
            rest = [v for k, v in enumerate(size) if k != i]
            hint = f"; sizes are {_notation(dims)}, so did you mean {_shape_text((*rest, want))}?"
        fix = hint or f"; change the last size or build the model with in_channels={size[-1]}."
        raise CnnkitError(
            f"{label} expects n_C={want} input channels but the input "
            f"{_shape_text(size)} has n_C={size[-1]}{fix}"
        )


def summary(
    model: nn.Module,
    input_size: str | Sequence[int] | None = None,
    *,
    depth: int | None = 3,
    explain: bool = False,
    input_data: torch.Tensor | None = None,
    name: str | None = None,
) -> Summary:
    """Summarise a model: per layer output ``n_H x n_W x n_C``, parameters and MACs.

    1D models (``Conv1d``, inputs ``(B, n_C, n)``) show ``n x n_C`` and 3D models
    (``Conv3d``, inputs ``(B, n_C, n_D, n_H, n_W)``) ``n_D x n_H x n_W x n_C``, with the
    same formulas per axis.

    Args:
        model: Any ``torch.nn.Module``.
        input_size: One example's size in course order, ``"224x224x3"`` or
            ``(224, 224, 3)`` (a 1D signal ``"n x n_C"``, a volume
            ``"n_D x n_H x n_W x n_C"``). Default: the model's own input size.
        depth: Show modules down to this nesting depth (deeper ones are folded
            into their parent row); ``None`` shows every leaf.
        explain: Attach the course's formulas to conv / pool / FC / BN rows
            (``37 = floor((39 + 2*0 - 3)/1) + 1``, ``280 = (3*3*3 + 1)*10``).
        input_data: An example batch (NCHW) instead of ``input_size``.
        name: Name for the header (default: the registered name or class name).

    Returns:
        A :class:`Summary` (print it, or read ``rows`` and the totals).

    Raises:
        CnnkitError: On a bad input size, or an input the model cannot take
            (naming the layer that fails).
    """
    label = name or getattr(model, "cnnkit_name", None) or type(model).__name__
    if depth is not None and (isinstance(depth, bool) or int(depth) < 1):
        raise CnnkitError(f"depth must be a positive integer or None, got {depth!r}.")
    if input_data is not None:
        x = input_data
        size = _course(x.shape)
    else:
        if input_size is None:
            input_size = _default_input(model)
            if input_size is None:
                raise CnnkitError(
                    f"{label} has no default input size; pass input_size, e.g. '224x224x3'."
                )
        size = shapes.parse_size(input_size, what="input")
        _check_channels(model, size, label)
        x = torch.zeros(1, size[-1], *size[:-1])  # course (..., n_C) -> (1, n_C, ...): NCHW
        if isinstance(_first_conv(model), nn.Linear) and not any(
            isinstance(m, nn.Flatten) for m in model.modules()
        ):
            x = torch.zeros(1, math.prod(size))  # an FC-only model on flat vectors
    param = next(iter(model.parameters()), None)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype if param.is_floating_point() else x.dtype)

    tracker = _Tracker(model, depth, explain)
    handles = []
    for m in {id(m): m for m in model.modules()}.values():
        handles.append(m.register_forward_pre_hook(tracker.pre))
        handles.append(m.register_forward_hook(tracker.post))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _OpCounter(tracker):
            model(x)
    except CnnkitError:
        raise
    except (RuntimeError, ValueError, IndexError) as e:
        where = tracker.stack[-1] if tracker.stack else None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        layer = (
            f"layer {where.name!r} ({type(where.module).__name__})"
            if where and where.name
            else label
        )
        got = f" given {_shape_text(where.input_shape)}" if where and where.input_shape else ""
        default = _default_input(model)
        hint = f"; {label} is built for {_shape_text(default)}" if default else ""
        raise CnnkitError(
            f"{label} cannot take a {_shape_text(size)} input: {layer} fails{got} ({first}){hint}."
        ) from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    rows = tracker.rows + tracker.not_run_rows()
    unique = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in unique.values())
    trainable = sum(p.numel() for p in unique.values() if p.requires_grad)
    not_run = sum(r.params for r in rows if r.name.endswith("(not run)"))
    buffers = sum(b.numel() for b in model.buffers() if b.is_floating_point())
    act_bytes = sum(
        math.prod(s) * x.element_size()
        for r in rows
        if not r.name.endswith(")")
        for s in r.output_shapes
    )
    param_bytes = sum(p.numel() * p.element_size() for p in unique.values())
    return Summary(
        model_name=label,
        input_size=size,
        rows=rows,
        total_params=total,
        trainable_params=trainable,
        buffers=buffers,
        macs=tracker.macs,
        other_ops=tracker.other,
        activation_bytes=act_bytes,
        param_bytes=param_bytes,
        params_not_run=not_run,
        explain=explain,
    )
