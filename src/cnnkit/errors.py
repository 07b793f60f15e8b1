"""User-facing errors: one sentence naming the thing and the fix.

Every mistake a user can make (an unknown model, a stride of 0, a kernel larger
than its padded input) raises :class:`CnnkitError`. The command line prints its
message and exits with status 2; Python callers can catch it (it is also a
``ValueError``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["CnnkitError", "did_you_mean", "unknown_name"]


class CnnkitError(ValueError):
    """A user mistake, described in one sentence with the fix."""

    exit_code = 2


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Close matches of ``name`` among ``choices`` (case-insensitive).

    Args:
        name: The misspelled name.
        choices: The valid names.
        n: At most this many suggestions.

    Returns:
        The suggestions, best first (possibly empty).
    """
    choices = list(choices)
    lower = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lower), n=n, cutoff=0.6)
    return [lower[h] for h in hits]


def unknown_name(kind: str, name: str, choices: Iterable[str], listing: str = "") -> CnnkitError:
    """Build the error for an unknown name, with a close-match suggestion.

    Args:
        kind: What was looked up, e.g. ``"model"``.
        name: The name the user gave.
        choices: The valid names.
        listing: How to list the valid names, e.g. ``"cnnkit models"``.

    Returns:
        The error to raise.
    """
    choices = list(choices)
    hits = did_you_mean(name, choices)
    msg = f"unknown {kind} {name!r}"
    if hits:
        msg += ": did you mean " + " or ".join(repr(h) for h in hits) + "?"
    elif listing:
        msg += f": run `{listing}` to see the available ones."
    else:
        msg += ": use one of " + ", ".join(repr(c) for c in choices) + "."
    return CnnkitError(msg)
