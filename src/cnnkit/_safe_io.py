"""Reading files that may come from anywhere, without running code from them.

One place for the rules every loader follows (weights for ``cnnkit.models``,
checkpoints for ``cnnkit.train``):

- the size is checked before anything is read (a 40 GB "weights" file is refused at
  once, not after filling the memory);
- ``torch.load`` always runs with ``weights_only=True``: a pickle that names a Python
  global (the way a payload runs code) is refused, never executed;
- only with an explicit ``trust_pickle=True`` is a full pickle loaded, and then with
  a warning naming the file.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError

__all__ = ["MAX_FILE_BYTES", "UnsafeFileWarning", "check_size", "first_line", "torch_load"]

MAX_FILE_BYTES = 4 * 2**30


class UnsafeFileWarning(UserWarning):
    """A file was loaded as a full pickle because the user passed ``trust_pickle=True``."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # torch colours parts of its load errors


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, without terminal colour codes (or its
    type name when it has none)."""
    text = _ANSI.sub("", str(e)).strip()
    return text.splitlines()[0].rstrip(".") if text else type(e).__name__


def check_size(
    path: str | os.PathLike,
    what: str,
    *,
    max_bytes: int = MAX_FILE_BYTES,
    error: type[CnnkitError] = CnnkitError,
) -> Path:
    """Check that ``path`` is a file no larger than ``max_bytes``, before it is read.

    Args:
        path: The file.
        what: What the file is, for the message (``"weights file"``).
        max_bytes: The cap.
        error: The error class to raise.

    Returns:
        The path.

    Raises:
        CnnkitError: If the file is missing or too large (the path is named).
    """
    p = Path(path)
    if not p.is_file():
        raise error(f"{what} {str(p)!r} does not exist; check the path.")
    size = p.stat().st_size
    if size > max_bytes:
        raise error(
            f"{what} {str(p)!r} is {size / 2**30:.1f} GiB, above the {max_bytes / 2**30:.0f} GiB "
            "cap; refusing to load it."
        )
    return p


def _is_pickle_refusal(e: BaseException) -> bool:
    """Whether torch refused the file for naming Python globals (objects, code), as opposed
    to being damaged: torch words every unpickling failure with "weights_only", so only
    its "Unsupported global" marks a pickle that would build objects."""
    return "Unsupported global" in str(e)


def torch_load(
    path: str | os.PathLike,
    what: str,
    *,
    trust_pickle: bool | None = False,
    error: type[CnnkitError] = CnnkitError,
    fix: str = "",
) -> Any:
    """``torch.load`` a file on the CPU with ``weights_only=True``, after the size check.

    Args:
        path: The ``.pt`` / ``.pth`` file.
        what: What the file is, for messages.
        trust_pickle: Load a full pickle when the safe load refuses it (runs any code the
            file holds: only for files from a source you trust). A warning names the file.
            None: the option does not exist for this kind of file (and is not offered).
        error: The error class to raise.
        fix: What to do about a damaged file, appended to its message.

    Returns:
        The loaded object.

    Raises:
        CnnkitError: If the file is missing, too large, torn, or holds Python objects
            (without ``trust_pickle``).
    """
    import torch

    p = check_size(path, what, error=error)
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle payloads with globals, torn files, ...
        if not _is_pickle_refusal(e):
            raise error(f"{what} {str(p)!r} is damaged ({first_line(e)}){fix}.") from None
        if trust_pickle is None:
            raise error(
                f"{what} {str(p)!r} holds Python objects (a pickle, which can run code), which "
                "cnnkit never loads; cnnkit did not write it."
            ) from None
        if not trust_pickle:
            raise error(
                f"{what} {str(p)!r} holds Python objects (a pickle, which can run code), which "
                "cnnkit never loads; re-save it as a state dict of tensors or as .safetensors, "
                "or pass trust_pickle=true if you trust its source."
            ) from None
    warnings.warn(
        f"loading {str(p)!r} as a full pickle because trust_pickle=true: any code in it runs now.",
        UnsafeFileWarning,
        stacklevel=2,
    )
    try:
        return torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:
        raise error(f"{what} {str(p)!r} is damaged ({first_line(e)}){fix}.") from None
