"""Parsing ``key=value`` and ``--key value`` arguments (the ultralytics-style grammar)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from cnnkit.errors import CnnkitError, did_you_mean

__all__ = ["check_keys", "flag", "parse_value", "split_args"]


def parse_value(text: str) -> Any:
    """Type a value: ``"true"`` -> True, ``"3"`` -> 3, ``"1e-3"`` -> 0.001, ``"[64, 32]"`` -> list.

    Args:
        text: The raw value.

    Returns:
        The typed value.
    """
    import yaml

    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 and 1E4 (no dot) as text
        try:
            number = float(value)
        except ValueError:
            return text
        return number if math.isfinite(number) else text
    return value if isinstance(value, (bool, int, float, list)) else text


def task_mode(
    argv: Sequence[str], task: str, modes: Sequence[str], help_text: str
) -> tuple[str, dict[str, Any]] | None:
    """``cnnkit TASK MODE key=value ...``: the mode and its options, or None after help.

    Args:
        argv: The arguments after the task.
        task: The task's name (``detect``, ``faces``).
        modes: Its modes.
        help_text: Printed for ``--help`` (then None is returned).

    Returns:
        ``(mode, options)``, or None when help was printed.

    Raises:
        CnnkitError: For an unknown mode (with a close match) or a positional argument.
    """
    from cnnkit.errors import CnnkitError, did_you_mean

    if not argv or argv[0] in ("-h", "--help", "help"):
        print(help_text, end="")
        return None
    mode, rest = argv[0], argv[1:]
    if mode not in modes:
        hits = did_you_mean(mode, modes)
        hint = (
            f"did you mean `cnnkit {task} {hits[0]}`?"
            if hits
            else f"use one of {', '.join(modes)}."
        )
        raise CnnkitError(f"unknown {task} mode {mode!r}: {hint}")
    pos, opts, wants_help = split_args(rest)
    if wants_help:
        print(help_text, end="")
        return None
    if pos:
        raise CnnkitError(
            f"`cnnkit {task} {mode}` takes key=value settings, got {' '.join(pos)!r}."
        )
    return mode, opts


def split_args(argv: Sequence[str]) -> tuple[list[str], dict[str, Any], bool]:
    """Split arguments into positionals, ``key=value`` options and a help flag.

    ``--key value``, ``--key=value`` and ``key=value`` are equivalent; a bare
    ``--flag`` means ``flag=true``. Dashes in keys become underscores.

    Args:
        argv: The arguments after the command.

    Returns:
        ``(positionals, options, wants_help)``.

    Raises:
        CnnkitError: On a key given twice.
    """
    pos: list[str] = []
    opts: dict[str, Any] = {}
    wants_help = False
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-h", "--help", "help"):
            wants_help = True
        elif a.startswith("--"):
            key, eq, val = a[2:].partition("=")
            if not eq:
                nxt = argv[i + 1] if i + 1 < len(argv) else None
                if nxt is not None and not nxt.startswith("--") and "=" not in nxt:
                    val, i = nxt, i + 1
                else:
                    val = "true"
            _put(opts, key, val)
        elif "=" in a and not a.startswith("="):
            key, _, val = a.partition("=")
            _put(opts, key, val)
        else:
            pos.append(a)
        i += 1
    return pos, opts, wants_help


def _put(opts: dict[str, Any], key: str, val: str) -> None:
    key = key.strip().replace("-", "_")
    if key in opts:
        raise CnnkitError(f"{key} is given twice; keep one {key}=... .")
    opts[key] = parse_value(val)


def flag(opts: dict[str, Any], key: str, default: bool = False) -> bool:
    """A true/false option (``details=true``, a bare ``--details``), refusing anything else.

    Args:
        opts: Parsed options.
        key: The option.
        default: Its value when absent.

    Returns:
        The value.

    Raises:
        CnnkitError: When the value is not true or false.
    """
    v = opts.get(key, default)
    if not isinstance(v, bool):
        raise CnnkitError(f"{key} must be true or false, got {v!r}; e.g. {key}=true.")
    return v


def check_keys(
    opts: dict[str, Any], allowed: Iterable[str], command: str, prefixes: tuple[str, ...] = ()
) -> None:
    """Refuse unknown keys, with a close-match suggestion.

    Args:
        opts: Parsed options.
        allowed: Valid keys.
        command: The command, for the message.
        prefixes: Key prefixes checked elsewhere (``"model."``: the model's options,
            checked when the model is built).

    Raises:
        CnnkitError: On the first unknown key.
    """
    allowed = list(allowed)
    for key in opts:
        if key not in allowed and not (prefixes and key.startswith(prefixes)):
            hits = did_you_mean(key, allowed)
            hint = f"did you mean {hits[0]}=?" if hits else f"valid keys: {', '.join(allowed)}."
            raise CnnkitError(f"unknown key {key!r} for `cnnkit {command}`: {hint}")


def read_cfg_file(path_text: Any) -> dict[str, Any]:
    """The settings in a ``cfg=FILE.yaml`` file, each mistake refused in one sentence.

    Args:
        path_text: The file, as given on the command line.

    Returns:
        The ``key: value`` settings (not yet checked against any command's keys).
    """
    from pathlib import Path

    import yaml

    path = Path(str(path_text))
    if not path.is_file():
        raise CnnkitError(f"cfg file {str(path)!r} does not exist.")
    try:
        base = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise CnnkitError(
            f"cfg file {str(path)!r} is not valid YAML ({str(e).splitlines()[0]})."
        ) from None
    if not isinstance(base, dict):
        raise CnnkitError(f"cfg file {str(path)!r} must hold key: value settings.")
    return base
