"""Networks from a list of layers, written in the course's terms (Python or YAML).

    input: 39x39x3                       # n_H x n_W x n_C
    layers:
      - conv: {f: 3, s: 1, p: 0, n_C: 10}
      - relu
      - pool: {type: max, f: 2, s: 2}
      - fc: 120
      - dropout: 0.5                     # the drop rate (1 - keep_prob)
      - fc: num_classes
      - softmax

Layer kinds: ``conv`` (``f``, ``n_C``, ``s=1``, ``p=0|valid|same``, ``d=1``,
``groups=1``, ``bias=true``), ``conv_transpose`` (``f``, ``n_C``, ``s``, ``p``,
``output_padding``), ``pool`` (``type: max|avg``, ``f``, ``s=f``, ``p=0``), ``gap``
(global average pool), ``flatten`` (inserted automatically before the first
``fc`` on a volume), ``fc`` (units, or ``{n: units, bias: false}``), ``dropout``
(rate, or ``{keep_prob: 0.8}``), ``bn``, activations (``relu``, ``relu6``,
``leaky_relu``, ``tanh``, ``sigmoid``, ``elu``, ``gelu``, ``silu``, ``swish``) and ``softmax``.
A 1D input is ``n x n_C`` and a 3D one ``n_D x n_H x n_W x n_C``.

Output shapes are inferred layer by layer with :mod:`cnnkit.shapes` when the
network is built, so a kernel that does not fit is reported before any tensor
exists, naming the layer. A final ``softmax`` is applied by the loss
(cross-entropy on logits, the numerically stable form) and by ``predict``:
``forward`` returns the logits ``z[L]``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnkit import shapes
from cnnkit.blocks import ACTIVATIONS
from cnnkit.errors import CnnkitError, did_you_mean, unknown_name
from cnnkit.models._base import ClassifierMixin

__all__ = ["LayerNet", "TraceRow", "from_yaml", "sequential"]

_ACTS = ACTIVATIONS  # the activation names every block accepts
_KINDS = [
    "conv",
    "conv_transpose",
    "pool",
    "gap",
    "flatten",
    "fc",
    "dropout",
    "bn",
    "softmax",
    *_ACTS,
]
_ARGS = {
    "conv": {"f", "n_C", "s", "p", "d", "groups", "bias"},
    "conv_transpose": {"f", "n_C", "s", "p", "output_padding", "bias"},
    "pool": {"type", "f", "s", "p"},
    "fc": {"n", "bias"},
    "dropout": {"rate", "keep_prob"},
}


@dataclass(frozen=True)
class TraceRow:
    """One layer as the course writes it.

    Attributes:
        index: Position in the list (1-based, as written).
        kind: Layer kind (``conv``, ``pool``, ...).
        output: Output shape in course order, e.g. ``(37, 37, 10)`` or ``(400,)``.
        params: Learnable parameters.
        formula: The worked formula(s) behind the shape and the count.
    """

    index: int
    kind: str
    output: tuple[int, ...]
    params: int
    formula: str


class SoftmaxOutput(nn.Identity):
    """Marks a final softmax: the loss and ``predict`` apply it; ``forward`` returns logits."""


class LayerNet(ClassifierMixin, nn.Module):
    """A network built from a layer list (see the module docstring).

    Attributes:
        layers: The ``nn.Sequential`` of torch layers.
        trace: One :class:`TraceRow` per written layer (shapes inferred by cnnkit.shapes).
        input_size: ``(n_H, n_W, n_C)`` (or 1D/3D) the network is defined for.
        output_activation: ``"softmax"`` when the list ends with one, else ``None``.
    """

    def __init__(
        self,
        layers: nn.Sequential,
        trace: list[TraceRow],
        input_size: tuple[int, ...],
        head_start: int,
        name: str = "sequential",
        output_activation: str | None = None,
    ) -> None:
        super().__init__()
        self.layers = layers
        self.trace = trace
        self.input_size = input_size
        self.name = name
        self.output_activation = output_activation
        self._head_start = head_start
        linear = [i for i, m in enumerate(layers) if isinstance(m, nn.Linear)]
        self.classifier_path = f"layers.{linear[-1]}" if linear else ""

    def get_classifier(self) -> nn.Linear:
        """The last FC layer."""
        if not self.classifier_path:
            raise CnnkitError(f"network {self.name!r} has no FC layer to use as its classifier.")
        return super().get_classifier()

    def _check(self, x: torch.Tensor) -> None:
        # course order (n_H, n_W, n_C) vs torch (B, n_C, n_H, n_W)
        got = (*x.shape[2:], x.shape[1]) if x.dim() > 2 else tuple(x.shape[1:])
        if got != self.input_size:
            want = "x".join(map(str, self.input_size))
            raise CnnkitError(
                f"network {self.name!r} is defined for {want} inputs but got "
                f"{'x'.join(map(str, got))}; resize the input or change its `input:` line."
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Layers before the first flatten / global pool (the conv part)."""
        self._check(x)
        return self.layers[: self._head_start](x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Layers from the first flatten / global pool on."""
        return self.layers[self._head_start :](x)

    def describe(self) -> str:
        """The layer list with shapes and parameter counts, as the course writes them.

        Returns:
            A text table, one line per layer, then the total.
        """
        lines = [f"{'#':>3}  {'layer':<15}{'output':>16}{'params':>13}"]
        lines.append(f"{'':>3}  {'input':<15}{'x'.join(map(str, self.input_size)):>16}")
        for r in self.trace:
            shown = "x".join(map(str, r.output))
            lines.append(f"{r.index:>3}  {r.kind:<15}{shown:>16}{r.params:>13,}")
        lines.append(f"total parameters: {sum(r.params for r in self.trace):,}")
        return "\n".join(lines)


def _spec(entry: Any, i: int) -> tuple[str, Any]:
    if isinstance(entry, str):
        return entry.strip().lower(), None
    if isinstance(entry, dict) and len(entry) == 1:
        ((k, v),) = entry.items()
        return str(k).strip().lower(), v
    raise CnnkitError(
        f"layer {i} must be a name (e.g. relu) or one `kind: settings` pair "
        f"(e.g. conv: {{f: 3, n_C: 10}}), got {entry!r}."
    )


def _args(kind: str, v: Any, i: int, scalar_key: str | None = None) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        if scalar_key is None:
            raise CnnkitError(f"layer {i} ({kind}) takes settings like {{f: 3}}, got {v!r}.")
        return {scalar_key: v}
    allowed = _ARGS.get(kind, set())
    for key in v:
        if key not in allowed:
            hits = did_you_mean(str(key), allowed)
            hint = f"did you mean {hits[0]!r}?" if hits else f"use {', '.join(sorted(allowed))}."
            raise CnnkitError(f"layer {i} ({kind}) has no setting {key!r}: {hint}")
    return dict(v)


def _need(args: dict, key: str, kind: str, i: int, what: str) -> Any:
    if key not in args:
        raise CnnkitError(f"layer {i} ({kind}) needs {key}, {what}.")
    return args[key]


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def sequential(
    layers: Sequence[Any],
    input_size: str | Sequence[int],
    num_classes: int | None = None,
    name: str = "sequential",
) -> LayerNet:
    """Build a network from a list of layers in the course's terms.

    Args:
        layers: Layer entries, e.g. ``[{"conv": {"f": 5, "n_C": 6}}, "tanh", {"fc": 120}]``.
        input_size: ``"32x32x1"`` or ``(32, 32, 1)`` in course order.
        num_classes: Units of the last ``fc`` (replaces its value, or fills
            ``fc: num_classes``).
        name: Name used in messages and summaries.

    Returns:
        The network, with its layer-by-layer :attr:`LayerNet.trace`.

    Raises:
        CnnkitError: On an unknown layer, a missing setting, or a layer that does
            not fit its input (naming the layer).
    """
    size = shapes.parse_size(input_size, what="input")
    dims = len(size) - 1
    conv_t = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    convT_t = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[dims]
    bn_t = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
    max_t = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[dims]
    avg_t = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}[dims]
    gap_t = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}[dims]

    entries = [_spec(e, i) for i, e in enumerate(layers, start=1)]
    if not entries:
        raise CnnkitError("the layer list is empty; give at least one layer.")
    fc_idx = [i for i, (k, _) in enumerate(entries, start=1) if k == "fc"]
    spatial: tuple[int, ...] | None = size[:-1]
    n_C = size[-1]
    flat = 0
    modules: list[nn.Module] = []
    trace: list[TraceRow] = []
    head_start: int | None = None
    output_activation = None

    def out_shape() -> tuple[int, ...]:
        return (*spatial, n_C) if spatial is not None else (flat,)

    def flatten(i: int, auto: bool) -> None:
        nonlocal spatial, flat, head_start
        if spatial is None:
            return
        flat = math.prod(spatial) * n_C
        if head_start is None:
            head_start = len(modules)
        modules.append(nn.Flatten())  # (B, n_C, n_H, n_W) -> (B, n_H*n_W*n_C)
        text = f"{flat} = " + "*".join(map(str, (*spatial, n_C)))
        spatial = None
        trace.append(TraceRow(i, "flatten (auto)" if auto else "flatten", (flat,), 0, text))

    for i, (kind, raw) in enumerate(entries, start=1):
        where = f"layer {i} ({kind})"
        try:
            if kind not in _KINDS:
                raise unknown_name("layer kind", kind, _KINDS)
            if kind in ("conv", "conv_transpose", "pool", "gap") and spatial is None:
                raise CnnkitError(f"{where} needs a volume but the input here is flat ({flat}).")
            if kind == "conv":
                a = _args(kind, raw, i)
                f = _need(a, "f", kind, i, "the filter size")
                c_out = _need(a, "n_C", kind, i, "the number of filters")
                s, p, d = a.get("s", 1), a.get("p", 0), a.get("d", 1)
                groups, bias = a.get("groups", 1), bool(a.get("bias", True))
                w = shapes.conv_output_size(spatial, f, p, s, d, explain=True)
                pw = shapes.conv_params(
                    f, n_C, c_out, bias=bias, groups=groups, dims=dims, explain=True
                )
                torch_p = shapes.padding(p, f, d) if isinstance(p, str) else p
                modules.append(
                    conv_t(
                        n_C,
                        c_out,
                        f,
                        stride=s,
                        padding=torch_p,
                        dilation=d,
                        groups=groups,
                        bias=bias,
                    )
                )
                spatial, n_C = w.value, c_out
                trace.append(TraceRow(i, kind, out_shape(), pw.value, f"{w.text}\n{pw.text}"))
            elif kind == "conv_transpose":
                a = _args(kind, raw, i)
                f = _need(a, "f", kind, i, "the filter size")
                c_out = _need(a, "n_C", kind, i, "the number of filters")
                s, p, op = a.get("s", 1), a.get("p", 0), a.get("output_padding", 0)
                bias = bool(a.get("bias", True))
                w = shapes.conv_transpose_output_size(spatial, f, p, s, op, explain=True)
                pw = shapes.conv_params(f, c_out, n_C, bias=False, dims=dims, explain=True)
                params = pw.value + (c_out if bias else 0)
                modules.append(
                    convT_t(n_C, c_out, f, stride=s, padding=p, output_padding=op, bias=bias)
                )
                text = f"{w.text}\n{params:,} = {'*'.join(map(str, _tuple(f, dims)))}*{n_C}*{c_out}"
                text += f" + {c_out}" if bias else ""
                spatial, n_C = w.value, c_out
                trace.append(TraceRow(i, kind, out_shape(), params, text))
            elif kind == "pool":
                a = _args(kind, raw, i)
                ptype = str(a.get("type", "max")).lower()
                if ptype not in ("max", "avg"):
                    raise unknown_name("pooling type", ptype, ["max", "avg"])
                f = _need(a, "f", kind, i, "the window size")
                s, p = a.get("s", f), a.get("p", 0)
                w = shapes.pool_output_size(spatial, f, s, p, explain=True)
                modules.append((max_t if ptype == "max" else avg_t)(f, stride=s, padding=p))
                spatial = w.value
                trace.append(
                    TraceRow(
                        i,
                        f"{ptype} pool",
                        out_shape(),
                        0,
                        f"{w.text}\n0 parameters (only hyperparameters f, s)",
                    )
                )
            elif kind == "gap":
                if head_start is None:
                    head_start = len(modules)
                modules += [gap_t(1), nn.Flatten()]  # (B, n_C, n_H, n_W) -> (B, n_C)
                spatial, flat = None, n_C
                trace.append(
                    TraceRow(
                        i,
                        "global avg pool",
                        (flat,),
                        0,
                        f"{flat} = n_C (average over each channel's map)",
                    )
                )
            elif kind == "flatten":
                flatten(i, auto=False)
            elif kind == "fc":
                a = _args(kind, raw, i, scalar_key="n")
                n_out = _need(a, "n", kind, i, "the number of units")
                is_last = i == fc_idx[-1]
                if num_classes is not None and is_last:
                    n_out = num_classes
                elif n_out == "num_classes":
                    raise CnnkitError(f"{where} says num_classes; pass num_classes=N.")
                if spatial is not None:
                    flatten(i, auto=True)
                pw = shapes.fc_params(flat, n_out, bias=bool(a.get("bias", True)), explain=True)
                modules.append(nn.Linear(flat, n_out, bias=bool(a.get("bias", True))))
                flat = n_out
                trace.append(TraceRow(i, "fc", (flat,), pw.value, pw.text))
            elif kind == "dropout":
                a = _args(kind, raw, i, scalar_key="rate")
                rate = 1 - a["keep_prob"] if "keep_prob" in a else a.get("rate", 0.5)
                if not 0 <= rate < 1:
                    raise CnnkitError(f"{where} rate must be in [0, 1), got {rate}.")
                modules.append(nn.Dropout(rate))
                trace.append(
                    TraceRow(
                        i,
                        f"dropout {rate:g}",
                        out_shape(),
                        0,
                        f"drop rate {rate:g} = 1 - keep_prob",
                    )
                )
            elif kind == "bn":
                c = n_C if spatial is not None else flat
                modules.append(bn_t(c) if spatial is not None else nn.BatchNorm1d(c))
                pw = shapes.bn_params(c, explain=True)
                trace.append(TraceRow(i, "batch norm", out_shape(), pw.value, pw.text))
            elif kind == "softmax":
                last = i == len(entries)
                modules.append(SoftmaxOutput() if last else nn.Softmax(dim=1))
                if last:
                    output_activation = "softmax"
                trace.append(
                    TraceRow(
                        i,
                        "softmax",
                        out_shape(),
                        0,
                        "applied by the loss and predict" if last else "",
                    )
                )
            else:
                modules.append(_ACTS[kind]())
                trace.append(TraceRow(i, kind, out_shape(), 0, ""))
        except CnnkitError as e:
            msg = str(e)
            if not msg.startswith("layer "):
                msg = f"{where} of {name!r}: {msg[0].lower()}{msg[1:]}"
            raise CnnkitError(msg) from None
    return LayerNet(
        nn.Sequential(*modules),
        trace,
        size,
        head_start if head_start is not None else len(modules),
        name,
        output_activation,
    )


def _tuple(f: Any, dims: int) -> tuple[int, ...]:
    return tuple(f) if isinstance(f, (list, tuple)) else (f,) * dims


_YAML_KEYS = {"name", "input", "layers", "num_classes", "description"}


def from_yaml(
    path: str | os.PathLike,
    num_classes: int | None = None,
    in_channels: int | None = None,
) -> LayerNet:
    """Build a network from a YAML file with ``input:`` and ``layers:`` (see module doc).

    Args:
        path: The YAML file.
        num_classes: Overrides the last ``fc``.
        in_channels: Overrides the ``n_C`` of ``input``.

    Returns:
        The network.

    Raises:
        CnnkitError: If the file is missing, not YAML, or describes an invalid network.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise CnnkitError(f"network file {str(p)!r} does not exist; check the path.")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise CnnkitError(f"network file {str(p)!r} is not valid YAML{where}.") from None
    if not isinstance(doc, dict) or "layers" not in doc or "input" not in doc:
        raise CnnkitError(
            f"network file {str(p)!r} needs `input: n_H x n_W x n_C` and a `layers:` list."
        )
    for key in doc:
        if key not in _YAML_KEYS:
            raise unknown_name(f"key in {p.name}", str(key), _YAML_KEYS)
    size = shapes.parse_size(str(doc["input"]), what=f"input of {p.name}")
    if in_channels is not None:
        size = (*size[:-1], in_channels)
    n = num_classes if num_classes is not None else doc.get("num_classes")
    return sequential(doc["layers"], size, num_classes=n, name=str(doc.get("name", p.stem)))
