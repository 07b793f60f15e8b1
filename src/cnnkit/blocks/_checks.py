"""Argument checks shared by the blocks: each failure is one CnnkitError sentence."""

from __future__ import annotations

from collections.abc import Iterable

from cnnkit.errors import CnnkitError, unknown_name

_DIMS = (1, 2, 3)


def positive_int(name: str, v: object) -> int:
    """Return ``v`` if it is an integer >= 1, else raise a CnnkitError naming ``name``."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise CnnkitError(f"{name} must be an integer, got {v!r}.")
    if v < 1:
        fix = " (use 1 for no striding)" if name.startswith("s") else ""
        raise CnnkitError(f"{name} must be a positive integer, got {v}{fix}.")
    return v


def per_axis(name: str, v: object, dims: int, *, minimum: int = 1) -> tuple[int, ...]:
    """Broadcast an int, or check a tuple, to one integer >= ``minimum`` per spatial axis."""
    values = tuple(v) if isinstance(v, (tuple, list)) else (v,) * dims
    if len(values) != dims:
        raise CnnkitError(
            f"{name} needs {dims} values (one per axis) for a {dims}D block, got {len(values)}."
        )
    for x in values:
        if isinstance(x, bool) or not isinstance(x, int) or x < minimum:
            what = "positive" if minimum >= 1 else "non-negative"
            raise CnnkitError(f"{name} must be a {what} integer per axis, got {v!r}.")
    return values


def check_dims(dims: object) -> int:
    """Check that ``dims`` is 1, 2 or 3."""
    if dims not in _DIMS or isinstance(dims, bool):
        raise CnnkitError(f"dims must be 1, 2 or 3 (1D, 2D or 3D convolutions), got {dims!r}.")
    return dims  # type: ignore[return-value]


def choice(kind: str, value: object, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise with a close-match suggestion."""
    choices = list(choices)
    if not isinstance(value, str):
        raise CnnkitError(
            f"{kind} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}."
        )
    if value not in choices:
        err = unknown_name(kind, value, choices)
        if "did you mean" not in str(err):
            err = CnnkitError(
                f"unknown {kind} {value!r}: use one of {', '.join(repr(c) for c in choices)}."
            )
        raise err
    return value


def check_groups(in_channels: int, out_channels: int, groups: int) -> None:
    """Check that ``groups`` divides both channel counts."""
    positive_int("groups", groups)
    if in_channels % groups or out_channels % groups:
        raise CnnkitError(
            f"groups={groups} must divide both in_channels={in_channels} and "
            f"out_channels={out_channels}."
        )
