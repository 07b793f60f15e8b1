"""The course's shape arithmetic, in pure Python (this module never imports torch).

Notation follows the course: ``n`` is an input size (``n_H``, ``n_W``, or the
depth ``n_D`` of a 3D volume), ``f`` the filter (kernel) size, ``p`` the
padding, ``s`` the stride, ``d`` the dilation, ``n_C_prev`` the input channels
and ``n_C`` the output channels (number of filters).

Every function takes ints, or tuples with one entry per spatial axis (1D, 2D or
3D); an int means "the same on every axis". Pass ``explain=True`` to get a
:class:`Worked` result: the value plus the formula written out with the numbers,
e.g. ``37 = floor((39 + 2*0 - 3)/1) + 1``.

Invalid input (a stride of 0, a negative size, a kernel larger than its padded
input) raises :class:`cnnkit.errors.CnnkitError` with one sentence saying what
is wrong and how to fix it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

from cnnkit.errors import CnnkitError

__all__ = [
    "Worked",
    "bn_params",
    "conv_macs",
    "conv_output_size",
    "conv_params",
    "conv_transpose_macs",
    "conv_transpose_output_size",
    "depthwise_separable_macs",
    "depthwise_separable_params",
    "fc_macs",
    "fc_params",
    "notation",
    "padding",
    "parse_size",
    "pool_output_size",
    "receptive_field",
    "same_padding",
]

Size = Union[int, tuple[int, ...]]
_AXES = {1: ("n",), 2: ("n_H", "n_W"), 3: ("n_D", "n_H", "n_W")}


@dataclass(frozen=True)
class Worked:
    """A computed value with the formula that produced it.

    Attributes:
        value: The result (an int, or a tuple with one int per axis).
        text: The formula with the numbers substituted, one line per axis.
    """

    value: Size
    text: str

    def __str__(self) -> str:
        return self.text

    def __int__(self) -> int:
        if isinstance(self.value, tuple):
            raise TypeError("this result has one value per axis; use .value")
        return self.value


def _fmt(x: int) -> str:
    return f"{x:,}"


def _as_int(name: str, v: object, *, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise CnnkitError(f"{name} must be an integer, got {v!r}.")
    if v < minimum:
        what = "positive" if minimum == 1 else "non-negative"
        fix = " (use 1 for no striding)" if name.startswith("s") else ""
        raise CnnkitError(f"{name} must be a {what} integer, got {v}{fix}.")
    return v


def _broadcast(dims: int | None, **kw: object) -> tuple[int, dict[str, tuple]]:
    """Turn ints/tuples into per-axis tuples of one common length."""
    lengths = {len(v) for v in kw.values() if isinstance(v, (tuple, list))}
    if len(lengths) > 1:
        parts = ", ".join(f"{k}={tuple(v)}" for k, v in kw.items() if isinstance(v, (tuple, list)))
        raise CnnkitError(f"per-axis values must all have the same length, got {parts}.")
    n_axes = lengths.pop() if lengths else (dims or 1)
    if dims is not None and n_axes != dims:
        raise CnnkitError(f"expected {dims} values (one per axis), got {n_axes}.")
    if n_axes not in _AXES:
        raise CnnkitError(f"only 1D, 2D and 3D are supported, got {n_axes} axes.")
    out = {}
    for k, v in kw.items():
        out[k] = tuple(v) if isinstance(v, (tuple, list)) else (v,) * n_axes
    return n_axes, out


def _result(values: list[int], lines: list[str], scalar: bool, explain: bool) -> Size | Worked:
    value: Size = values[0] if scalar else tuple(values)
    if not explain:
        return value
    return Worked(value, "\n".join(lines))


def _axis_label(n_axes: int, i: int, scalar: bool) -> str:
    return "" if scalar else f"{_AXES[n_axes][i]}: "


def _resolve_padding(p: object, f: tuple[int, ...], d: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(p, str):
        mode = p.lower()
        if mode == "valid":
            return (0,) * len(f)
        if mode == "same":
            for fi, di in zip(f, d):
                if (di * (fi - 1)) % 2:
                    raise CnnkitError(
                        f"'same' padding with an even kernel f={fi} needs an uneven split "
                        "(see same_padding()); give p as an int per side, or use an odd f."
                    )
            return tuple(di * (fi - 1) // 2 for fi, di in zip(f, d))
        raise CnnkitError(f"padding must be an integer, 'valid' or 'same', got {p!r}.")
    return p  # type: ignore[return-value]


def padding(mode: str, f: Size, d: Size = 1) -> Size:
    """Padding ``p`` per side for the course's two padding modes.

    ``valid`` means no padding (``p = 0``); ``same`` keeps ``n_H x n_W`` at stride
    1 with ``p = (f - 1)/2``. For an even ``f`` that is not an integer: use
    :func:`same_padding` to see how the total is split.

    Args:
        mode: ``"valid"`` or ``"same"``.
        f: Filter size (int or per axis).
        d: Dilation (int or per axis).

    Returns:
        ``p`` per side (int, or tuple per axis).
    """
    scalar = not isinstance(f, (tuple, list)) and not isinstance(d, (tuple, list))
    _, kw = _broadcast(None, f=f, d=d)
    p = _resolve_padding(mode, kw["f"], kw["d"])
    return p[0] if scalar else p


def same_padding(f: Size, d: Size = 1, *, explain: bool = False) -> tuple | Worked:
    """How 'same' padding is split before and after, per axis, for any ``f``.

    The total padding is ``d*(f - 1)``. When it is odd (an even ``f``), PyTorch's
    ``padding='same'`` and TensorFlow/Keras both put the extra pixel *after*
    (bottom/right): ``before = total // 2``, ``after = total - before``.

    Args:
        f: Filter size (int or per axis).
        d: Dilation (int or per axis).
        explain: Return a :class:`Worked` with the formula.

    Returns:
        ``(before, after)`` for an int ``f``, else a tuple of such pairs per axis.
    """
    scalar = not isinstance(f, (tuple, list)) and not isinstance(d, (tuple, list))
    n_axes, kw = _broadcast(None, f=f, d=d)
    pairs, lines = [], []
    for i, (fi, di) in enumerate(zip(kw["f"], kw["d"])):
        _as_int("f", fi, minimum=1)
        _as_int("d", di, minimum=1)
        total = di * (fi - 1)
        before, after = total // 2, total - total // 2
        pairs.append((before, after))
        eff = f"{di}*({fi} - 1)" if di != 1 else f"{fi} - 1"
        note = "" if before == after else " (even f: the extra pixel goes after, bottom/right)"
        lines.append(
            f"{_axis_label(n_axes, i, scalar)}total = {eff} = {total}: "
            f"{before} before, {after} after{note}"
        )
    value = pairs[0] if scalar else tuple(pairs)
    return Worked(value, "\n".join(lines)) if explain else value


def conv_output_size(
    n: Size, f: Size, p: Size | str = 0, s: Size = 1, d: Size = 1, *, explain: bool = False
) -> Size | Worked:
    """Output size of a convolution: ``floor((n + 2p - f)/s) + 1``.

    With dilation ``d`` the effective kernel is ``d*(f - 1) + 1``, as in
    ``torch.nn.Conv2d``.

    Args:
        n: Input size (``n_H``, ``n_W``, ...): int or per axis.
        f: Filter size: int or per axis.
        p: Padding per side: int, per axis, ``"valid"`` or ``"same"``.
        s: Stride: int or per axis (at least 1).
        d: Dilation: int or per axis (at least 1).
        explain: Return a :class:`Worked` with the formula.

    Returns:
        The output size (int, or tuple per axis), or a :class:`Worked`.

    Raises:
        CnnkitError: On a stride of 0, negative sizes, or a kernel larger than
            the padded input.
    """
    return _window_output("conv", n, f, p, s, d, explain=explain)


def pool_output_size(
    n: Size,
    f: Size,
    s: Size | None = None,
    p: Size = 0,
    d: Size = 1,
    *,
    ceil_mode: bool = False,
    explain: bool = False,
) -> Size | Worked:
    """Output size of max or average pooling: ``floor((n + 2p - f)/s) + 1``.

    The stride defaults to ``f`` (as in PyTorch and Keras). Pooling has no
    parameters, only these hyperparameters. ``ceil_mode`` rounds up instead, with
    PyTorch's rule that the last window must start inside the input or its left
    padding.

    Args:
        n: Input size: int or per axis.
        f: Window size: int or per axis.
        s: Stride (default ``f``).
        p: Padding per side (at most half the window, as PyTorch requires).
        d: Dilation (max pooling only).
        ceil_mode: Round up instead of down.
        explain: Return a :class:`Worked` with the formula.

    Returns:
        The output size (int, or tuple per axis), or a :class:`Worked`.
    """
    return _window_output(
        "pool", n, f, p, f if s is None else s, d, ceil_mode=ceil_mode, explain=explain
    )


def _window_output(
    kind: str,
    n: Size,
    f: Size,
    p: Size | str,
    s: Size,
    d: Size,
    *,
    ceil_mode: bool = False,
    explain: bool,
) -> Size | Worked:
    scalar = not any(isinstance(v, (tuple, list)) for v in (n, f, p, s, d))
    p_in = p if not isinstance(p, str) else 0
    n_axes, kw = _broadcast(None, n=n, f=f, p=p_in, s=s, d=d)
    for i in range(n_axes):
        _as_int("n", kw["n"][i], minimum=0)
        _as_int("f", kw["f"][i], minimum=1)
        _as_int("s (the stride)", kw["s"][i], minimum=1)
        _as_int("d (the dilation)", kw["d"][i], minimum=1)
    pad = _resolve_padding(p, kw["f"], kw["d"]) if isinstance(p, str) else kw["p"]
    values, lines = [], []
    for i in range(n_axes):
        ni, fi, pi, si, di = kw["n"][i], kw["f"][i], pad[i], kw["s"][i], kw["d"][i]
        _as_int("p (the padding)", pi, minimum=0)
        f_eff = di * (fi - 1) + 1
        if kind == "pool" and 2 * pi > fi:
            raise CnnkitError(
                f"pooling padding p={pi} is more than half the window f={fi}; use p <= {fi // 2}."
            )
        padded = ni + 2 * pi
        num = padded - f_eff
        dropped = False
        if ceil_mode:
            out = -(-num // si) + 1
            if (out - 1) * si >= ni + pi:  # PyTorch: the last window must start inside
                out -= 1
                dropped = True
        else:
            out = num // si + 1
        if f_eff > padded and (not ceil_mode or out < 1):
            what = "kernel" if kind == "conv" else "pooling window"
            fdesc = f"f={fi}" if di == 1 else f"f={fi} with dilation d={di} (spans {f_eff})"
            axis = "" if scalar else f" on axis {_AXES[n_axes][i]}"
            raise CnnkitError(
                f"{what} {fdesc} is larger than the padded input n + 2p = "
                f"{ni} + 2*{pi} = {padded}{axis}; use a larger input, more padding "
                "or a smaller kernel."
            )
        values.append(out)
        fterm = str(fi) if di == 1 else f"{di}*({fi} - 1) - 1"
        rnd = "ceil" if ceil_mode else "floor"
        drop = " - 1  # the last window would start in the padding: dropped" if dropped else ""
        lines.append(
            f"{_axis_label(n_axes, i, scalar)}{out} = {rnd}(({ni} + 2*{pi} - {fterm})/{si}) + 1"
            f"{drop}"
        )
    return _result(values, lines, scalar, explain)


def conv_transpose_output_size(
    n: Size,
    f: Size,
    p: Size = 0,
    s: Size = 1,
    output_padding: Size = 0,
    d: Size = 1,
    *,
    explain: bool = False,
) -> Size | Worked:
    """Output size of a transposed convolution: ``(n - 1)s - 2p + f (+ output_padding)``.

    With dilation the ``f`` term becomes ``d*(f - 1) + 1`` (as in
    ``torch.nn.ConvTranspose2d``). ``output_padding`` resolves the ambiguity of a
    strided convolution (several input sizes map to the same output) and must be
    smaller than the stride or the dilation.

    Args:
        n: Input size: int or per axis.
        f: Filter size: int or per axis.
        p: Padding removed from each side.
        s: Stride (the upsampling factor).
        output_padding: Extra size added on one side.
        d: Dilation.
        explain: Return a :class:`Worked` with the formula.

    Returns:
        The output size (int, or tuple per axis), or a :class:`Worked`.
    """
    scalar = not any(isinstance(v, (tuple, list)) for v in (n, f, p, s, output_padding, d))
    n_axes, kw = _broadcast(None, n=n, f=f, p=p, s=s, op=output_padding, d=d)
    values, lines = [], []
    for i in range(n_axes):
        ni = _as_int("n", kw["n"][i], minimum=1)
        fi = _as_int("f", kw["f"][i], minimum=1)
        pi = _as_int("p (the padding)", kw["p"][i], minimum=0)
        si = _as_int("s (the stride)", kw["s"][i], minimum=1)
        oi = _as_int("output_padding", kw["op"][i], minimum=0)
        di = _as_int("d (the dilation)", kw["d"][i], minimum=1)
        if oi >= max(si, di):
            raise CnnkitError(
                f"output_padding={oi} must be smaller than the stride s={si} "
                f"or the dilation d={di}."
            )
        f_eff = di * (fi - 1) + 1
        out = (ni - 1) * si - 2 * pi + f_eff + oi
        if out <= 0:
            raise CnnkitError(
                f"transposed convolution gives a non-positive size {out}: "
                f"padding p={pi} is too large for n={ni}, f={fi}, s={si}."
            )
        values.append(out)
        fterm = str(fi) if di == 1 else f"({di}*({fi} - 1) + 1)"
        opterm = f" + {oi}" if oi else ""
        lines.append(
            f"{_axis_label(n_axes, i, scalar)}{out} = ({ni} - 1)*{si} - 2*{pi} + {fterm}{opterm}"
        )
    return _result(values, lines, scalar, explain)


def _kernel(f: Size, dims: int) -> tuple[int, ...]:
    ks = tuple(f) if isinstance(f, (tuple, list)) else (f,) * dims
    for k in ks:
        _as_int("f", k, minimum=1)
    return ks


def _groups_check(n_C_prev: int, n_C: int, groups: int) -> None:
    _as_int("n_C_prev", n_C_prev, minimum=1)
    _as_int("n_C", n_C, minimum=1)
    _as_int("groups", groups, minimum=1)
    if n_C_prev % groups or n_C % groups:
        raise CnnkitError(f"groups={groups} must divide both n_C_prev={n_C_prev} and n_C={n_C}.")


def conv_params(
    f: Size,
    n_C_prev: int,
    n_C: int,
    *,
    bias: bool = True,
    groups: int = 1,
    dims: int = 2,
    explain: bool = False,
) -> int | Worked:
    """Learnable parameters of a conv layer: ``(f*f*n_C_prev + 1)*n_C``.

    Each of the ``n_C`` filters is ``f x f x n_C_prev`` plus one bias. A grouped
    convolution sees only ``n_C_prev/groups`` input channels per filter; a
    depthwise convolution is the case ``groups = n_C_prev``.

    Args:
        f: Filter size (int or per axis).
        n_C_prev: Input channels.
        n_C: Output channels (number of filters).
        bias: Whether each filter has a bias.
        groups: Number of channel groups.
        dims: 1, 2 or 3 (when ``f`` is an int).
        explain: Return a :class:`Worked` with the formula.

    Returns:
        The parameter count, or a :class:`Worked`.
    """
    ks = _kernel(f, dims)
    _groups_check(n_C_prev, n_C, groups)
    per_filter = math.prod(ks) * (n_C_prev // groups)
    total = (per_filter + int(bias)) * n_C
    if not explain:
        return total
    kterm = "*".join(map(str, ks))
    cterm = str(n_C_prev) if groups == 1 else f"({n_C_prev}/{groups})"
    bterm = " + 1" if bias else ""
    return Worked(total, f"{_fmt(total)} = ({kterm}*{cterm}{bterm})*{n_C}")


def fc_params(n_in: int, n_out: int, *, bias: bool = True, explain: bool = False) -> int | Worked:
    """Learnable parameters of a fully connected layer: ``(n_in + 1)*n_out``.

    Args:
        n_in: Input features (e.g. ``n_H*n_W*n_C`` after flattening).
        n_out: Output units.
        bias: Whether each unit has a bias.
        explain: Return a :class:`Worked` with the formula.

    Returns:
        The parameter count, or a :class:`Worked`.
    """
    _as_int("n_in", n_in, minimum=1)
    _as_int("n_out", n_out, minimum=1)
    total = (n_in + int(bias)) * n_out
    if not explain:
        return total
    bterm = " + 1" if bias else ""
    return Worked(total, f"{_fmt(total)} = ({n_in}{bterm})*{n_out}")


def bn_params(n_C: int, *, explain: bool = False) -> int | Worked:
    """Learnable parameters of batch norm: ``gamma`` and ``beta`` per channel, ``2*n_C``.

    Batch norm also keeps a running mean and variance per channel (``2*n_C``
    numbers) used at test time; they are statistics, not learned by gradient
    descent, so PyTorch stores them as buffers and Keras lists them as
    non-trainable.

    Args:
        n_C: Channels.
        explain: Return a :class:`Worked` with the formula.

    Returns:
        ``2*n_C``, or a :class:`Worked`.
    """
    _as_int("n_C", n_C, minimum=1)
    total = 2 * n_C
    if not explain:
        return total
    return Worked(
        total,
        f"{_fmt(total)} = 2*{n_C} (gamma, beta; plus 2*{n_C} running mean/var, not learned)",
    )


def conv_macs(
    n_out: Size,
    n_C: int,
    f: Size,
    n_C_prev: int,
    *,
    groups: int = 1,
    explain: bool = False,
) -> int | Worked:
    """Multiplications of a conv layer: ``n_H*n_W*n_C * f*f*n_C_prev``.

    Every one of the ``n_H*n_W*n_C`` output numbers is a dot product of an
    ``f x f x n_C_prev`` filter with a patch of the input. One multiplication
    with its addition is one MAC (multiply-accumulate); FLOPs are ``2 x MACs``.

    Args:
        n_out: Output spatial size (``n_H`` for a square map, or per axis).
        n_C: Output channels.
        f: Filter size (int or per axis; an int uses as many axes as ``n_out``).
        n_C_prev: Input channels.
        groups: Channel groups (``n_C_prev`` for depthwise).
        explain: Return a :class:`Worked` with the formula.

    Returns:
        The number of multiplications (MACs), or a :class:`Worked`.
    """
    dims = (
        len(n_out)
        if isinstance(n_out, (tuple, list))
        else (len(f) if isinstance(f, (tuple, list)) else 2)
    )
    outs = tuple(n_out) if isinstance(n_out, (tuple, list)) else (n_out,) * dims
    for o in outs:
        _as_int("n_out", o, minimum=1)
    ks = _kernel(f, dims)
    _groups_check(n_C_prev, n_C, groups)
    total = math.prod(outs) * n_C * math.prod(ks) * (n_C_prev // groups)
    if not explain:
        return total
    oterm = "*".join(map(str, outs))
    kterm = "*".join(map(str, ks))
    cterm = str(n_C_prev) if groups == 1 else f"({n_C_prev}/{groups})"
    return Worked(total, f"{_fmt(total)} = {oterm}*{n_C} * {kterm}*{cterm}")


def conv_transpose_macs(
    n_in: Size,
    n_C_prev: int,
    f: Size,
    n_C: int,
    *,
    groups: int = 1,
    explain: bool = False,
) -> int | Worked:
    """Multiplications of a transposed conv: ``n_H_in*n_W_in*n_C_prev * f*f*n_C``.

    Each input number is multiplied by an ``f x f x n_C`` filter and scattered
    into the output.

    Args:
        n_in: Input spatial size (int for square, or per axis).
        n_C_prev: Input channels.
        f: Filter size.
        n_C: Output channels.
        groups: Channel groups.
        explain: Return a :class:`Worked` with the formula.

    Returns:
        The number of multiplications (MACs), or a :class:`Worked`.
    """
    dims = (
        len(n_in)
        if isinstance(n_in, (tuple, list))
        else (len(f) if isinstance(f, (tuple, list)) else 2)
    )
    ins = tuple(n_in) if isinstance(n_in, (tuple, list)) else (n_in,) * dims
    for o in ins:
        _as_int("n_in", o, minimum=1)
    ks = _kernel(f, dims)
    _groups_check(n_C_prev, n_C, groups)
    total = math.prod(ins) * n_C_prev * math.prod(ks) * (n_C // groups)
    if not explain:
        return total
    iterm = "*".join(map(str, ins))
    kterm = "*".join(map(str, ks))
    cterm = str(n_C) if groups == 1 else f"({n_C}/{groups})"
    return Worked(total, f"{_fmt(total)} = {iterm}*{n_C_prev} * {kterm}*{cterm}")


def fc_macs(n_in: int, n_out: int, *, explain: bool = False) -> int | Worked:
    """Multiplications of a fully connected layer: ``n_in*n_out``.

    Args:
        n_in: Input features.
        n_out: Output units.
        explain: Return a :class:`Worked` with the formula.

    Returns:
        The number of multiplications (MACs), or a :class:`Worked`.
    """
    _as_int("n_in", n_in, minimum=1)
    _as_int("n_out", n_out, minimum=1)
    total = n_in * n_out
    return Worked(total, f"{_fmt(total)} = {n_in}*{n_out}") if explain else total


def depthwise_separable_params(
    f: Size, n_C_prev: int, n_C: int, *, bias: bool = True, dims: int = 2, explain: bool = False
) -> int | Worked:
    """Parameters of a depthwise ``f x f`` conv followed by a pointwise ``1x1`` conv.

    Args:
        f: Depthwise filter size.
        n_C_prev: Input channels.
        n_C: Output channels of the pointwise conv.
        bias: Whether both convs have biases.
        dims: 1, 2 or 3.
        explain: Return a :class:`Worked` with the formula.

    Returns:
        The parameter count, or a :class:`Worked`.
    """
    dw = conv_params(f, n_C_prev, n_C_prev, bias=bias, groups=n_C_prev, dims=dims, explain=True)
    pw = conv_params(1, n_C_prev, n_C, bias=bias, dims=dims, explain=True)
    total = dw.value + pw.value  # type: ignore[operator]
    if not explain:
        return total
    return Worked(total, f"{_fmt(total)} = depthwise [{dw.text}] + pointwise [{pw.text}]")


def depthwise_separable_macs(
    n_out: Size, n_C_prev: int, f: Size, n_C: int, *, explain: bool = False
) -> int | Worked:
    """Multiplications of a depthwise-separable conv (depthwise then pointwise).

    Compared with a standard conv this costs ``1/n_C + 1/f^2`` as much.

    Args:
        n_out: Output spatial size.
        n_C_prev: Input channels.
        f: Depthwise filter size.
        n_C: Output channels.
        explain: Return a :class:`Worked` with the formula.

    Returns:
        The number of multiplications (MACs), or a :class:`Worked`.
    """
    dw = conv_macs(n_out, n_C_prev, f, n_C_prev, groups=n_C_prev, explain=True)
    pw = conv_macs(n_out, n_C, 1, n_C_prev, explain=True)
    total = dw.value + pw.value  # type: ignore[operator]
    if not explain:
        return total
    return Worked(total, f"{_fmt(total)} = depthwise [{dw.text}] + pointwise [{pw.text}]")


@dataclass(frozen=True)
class ReceptiveField:
    """Where one unit of a layer looks in the input (square windows, in input pixels).

    Attributes:
        r: Receptive-field size: each unit sees ``r x r`` input pixels (padding included).
        j: Jump: input pixels between neighbouring units (the product of the strides).
        start: Input coordinate of the centre of the first unit's field (pixel ``i`` is
            centred at ``i``; negative or fractional where padding or even windows shift it).
        text: The recurrences with the numbers, one line per layer.
    """

    r: int
    j: int
    start: float
    text: str

    def window(self, u: int) -> tuple[int, int]:
        """The input rows (or columns) unit ``u`` sees, as ``[first, last]`` (may leave the image).

        Args:
            u: The unit's index along the axis.

        Returns:
            ``(first, last)`` input indices, ``last - first + 1 == r``.
        """
        first = self.start + u * self.j - (self.r - 1) / 2
        lo = math.floor(first + 0.5)
        return lo, lo + self.r - 1

    def __str__(self) -> str:
        return self.text


def receptive_field(layers: Sequence[Sequence[int]]) -> ReceptiveField:
    """Receptive field of the last of a stack of convolution and pooling layers.

    The recurrences (Araujo et al. 2019), starting from one input pixel
    ``r = 1, j = 1, start = 0``; with the effective window ``f' = d*(f - 1) + 1``::

        r_out = r_in + (f' - 1) * j_in
        j_out = j_in * s
        start_out = start_in + ((f' - 1)/2 - p) * j_in

    Layers that do not mix pixels (activations, batch norm, 1x1 convolutions with
    stride 1) leave all three unchanged and need not be listed.

    Args:
        layers: One ``(f, s)``, ``(f, s, p)`` or ``(f, s, p, d)`` per layer, in order.

    Returns:
        A :class:`ReceptiveField`.

    Raises:
        CnnkitError: On an empty stack, a layer that is not 2 to 4 integers, or a
            window, stride or dilation below 1, or a negative padding.
    """
    if not layers:
        raise CnnkitError("receptive_field needs at least one layer, e.g. [(5, 1), (2, 2)].")
    r, j, start = 1, 1, 0.0
    lines = []
    for i, layer in enumerate(layers, start=1):
        vals = tuple(layer) if isinstance(layer, (tuple, list)) else (layer,)
        if not 2 <= len(vals) <= 4 or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in vals
        ):
            raise CnnkitError(
                f"layer {i} of receptive_field is {layer!r}; give (f, s), (f, s, p) or "
                "(f, s, p, d) as integers, e.g. (3, 1, 1)."
            )
        f, s = vals[:2]
        p = vals[2] if len(vals) > 2 else 0
        d = vals[3] if len(vals) > 3 else 1
        if f < 1 or s < 1 or d < 1 or p < 0:
            raise CnnkitError(
                f"layer {i} of receptive_field has f={f}, s={s}, p={p}, d={d}; f, s and d "
                "must be at least 1 and p at least 0."
            )
        fe = d * (f - 1) + 1
        r_new, j_new = r + (fe - 1) * j, j * s
        start_new = start + ((fe - 1) / 2 - p) * j
        lines.append(
            f"layer {i} (f={f}, s={s}, p={p}{f', d={d}' if d != 1 else ''}): "
            f"r = {r} + {fe - 1}*{j} = {r_new}, j = {j}*{s} = {j_new}, "
            f"start = {start:g} + ({(fe - 1) / 2:g} - {p})*{j} = {start_new:g}"
        )
        r, j, start = r_new, j_new, start_new
    return ReceptiveField(r, j, start, "\n".join(lines))


def notation(n_axes: int) -> str:
    """The course's notation of one example with ``n_axes`` spatial axes, channels last.

    Args:
        n_axes: 1 (a signal), 2 (an image) or 3 (a volume).

    Returns:
        ``"n x n_C"``, ``"n_H x n_W x n_C"`` or ``"n_D x n_H x n_W x n_C"``.

    Raises:
        CnnkitError: For any other number of axes.
    """
    if isinstance(n_axes, bool) or n_axes not in _AXES:
        raise CnnkitError(f"only 1D, 2D and 3D are supported, got {n_axes!r} axes.")
    return " x ".join((*_AXES[n_axes], "n_C"))


def parse_size(text: str | Sequence[int], *, what: str = "input") -> tuple[int, ...]:
    """Parse a size written in the course's order, ``"n_H x n_W x n_C"``.

    ``"224x224x3"`` -> ``(224, 224, 3)``; a 1D signal is ``"n x n_C"`` and a 3D
    volume ``"n_D x n_H x n_W x n_C"``. Tuples and lists pass through (checked).

    Args:
        text: The size, e.g. ``"32x32x1"`` or ``(32, 32, 1)``.
        what: What the size is, for messages.

    Returns:
        The sizes as a tuple of positive ints.

    Raises:
        CnnkitError: On anything but 2 to 4 positive integers.
    """
    if isinstance(text, str):
        parts = [t.strip() for t in text.lower().replace("*", "x").split("x")]
        try:
            values = tuple(int(t) for t in parts)
        except ValueError:
            raise CnnkitError(
                f"{what} {text!r} is not a size; write n_H x n_W x n_C, e.g. 224x224x3."
            ) from None
    else:
        values = tuple(text)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise CnnkitError(f"{what} {tuple(text)!r} must hold integers, e.g. (224, 224, 3).")
    shown = "x".join(map(str, values))
    if not 2 <= len(values) <= 4:
        raise CnnkitError(
            f"{what} {shown} must have 2 to 4 sizes (n x n_C, n_H x n_W x n_C or "
            "n_D x n_H x n_W x n_C), e.g. 224x224x3."
        )
    if any(v <= 0 for v in values):
        raise CnnkitError(
            f"{what} {shown} has a size that is not positive; every size must be at least 1, "
            "e.g. 224x224x3."
        )
    return values
