"""Checkpoints that are safe to write, safe to read and verified.

- Weights are ``.safetensors`` (no code can hide in them); the training state
  (optimizer, epoch, step, RNG states, config, preprocessing) is a ``torch.save`` file
  of tensors, numbers, strings, lists and dicts only, so it loads with
  ``torch.load(weights_only=True)``.
- Every file is written atomically: a temporary file in the same folder, flushed and
  fsync'ed, then renamed over the old one (and the folder fsync'ed). A crash during a
  save leaves the previous file intact.
- Every file carries a SHA-256 digest of its content (tensor names, dtypes, shapes,
  bytes and metadata). torch's zip reader does not check its CRCs and safetensors has
  no checksum, so a flipped byte would otherwise load as silently wrong numbers.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from cnnkit.errors import CnnkitError

__all__ = [
    "CheckpointError",
    "atomic_write",
    "load_state",
    "load_weights_file",
    "save_state",
    "save_weights",
]

FORMAT = "cnnkit-checkpoint"
FORMAT_VERSION = 1
_MAX_BYTES = 4 * 2**30


class CheckpointError(CnnkitError):
    """A checkpoint file is missing, torn, tampered with or of the wrong kind."""


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write a file so that it either holds the complete new content or is left unchanged.

    Args:
        path: Final file name.
        write: Writes the content to the open temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover (platforms without directory fds)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _hash_tensor(h: Any, name: str, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def _digest(obj: Any, h: Any | None = None, key: str = "") -> str:
    """SHA-256 over a nested structure of tensors and plain values, in a fixed order."""
    top = h is None
    h = hashlib.sha256() if h is None else h
    if isinstance(obj, torch.Tensor):
        _hash_tensor(h, key, obj)
    elif isinstance(obj, Mapping):
        h.update(f"{key}|dict{len(obj)}|".encode())
        for k in sorted(obj, key=str):
            _digest(obj[k], h, f"{key}/{k}")
    elif isinstance(obj, (list, tuple)):
        h.update(f"{key}|{type(obj).__name__}{len(obj)}|".encode())
        for i, v in enumerate(obj):
            _digest(v, h, f"{key}/{i}")
    else:
        h.update(f"{key}|{type(obj).__name__}|{obj!r}|".encode())
    return h.hexdigest() if top else ""


def _check_size(p: Path, what: str) -> None:
    if not p.is_file():
        raise CheckpointError(f"{what} {str(p)!r} does not exist; check the run folder.")
    if p.stat().st_size > _MAX_BYTES:
        raise CheckpointError(f"{what} {str(p)!r} is larger than 4 GiB; refusing to load it.")


def save_weights(
    path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]
) -> None:
    """Save weights as ``.safetensors`` with JSON metadata and a content digest, atomically.

    Args:
        path: Target ``.safetensors`` file.
        state_dict: The model's tensors.
        metadata: Plain values (architecture, preprocessing, class names, ...).
    """
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
    meta.update({k: json.dumps(v) for k, v in metadata.items()})
    meta["sha256"] = _digest({"tensors": tensors, "meta": meta})
    blob = save(tensors, metadata=meta)
    atomic_write(path, lambda f: f.write(blob))


def load_weights_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load and verify a ``.safetensors`` file written by :func:`save_weights`.

    Files from elsewhere (no cnnkit digest) load too, unverified, with empty metadata.

    Args:
        path: The file.

    Returns:
        ``(state_dict, metadata)``.

    Raises:
        CheckpointError: If the file is missing, torn or its digest does not match.
    """
    from safetensors import safe_open

    p = Path(path)
    _check_size(p, "weights file")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open API)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"weights file {str(p)!r} is damaged or not a safetensors file ({first}); "
            "restore it from a good copy or retrain."
        ) from None
    stored = meta.pop("sha256", None)
    if stored is None:
        return tensors, {}
    if _digest({"tensors": tensors, "meta": meta}) != stored:
        raise CheckpointError(
            f"weights file {str(p)!r} does not match its SHA-256 digest (flipped or torn "
            "bytes); restore it from a good copy or retrain."
        )
    out: dict[str, Any] = {}
    for k, v in meta.items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return tensors, out


def save_state(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Save a training state (tensors and plain values only) with a digest, atomically.

    Args:
        path: Target file (``.pt``); it loads with ``torch.load(weights_only=True)``.
        state: Nested dicts/lists of tensors, numbers, strings, bools and None.
    """
    obj = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    obj["sha256"] = _digest(obj)
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, lambda f: f.write(buf.getbuffer()))


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Load and verify a training state written by :func:`save_state` (never unpickles objects).

    Args:
        path: The state file.

    Returns:
        The state dict.

    Raises:
        CheckpointError: If the file is missing, torn, altered or holds Python objects.
    """
    p = Path(path)
    _check_size(p, "state file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        text = str(e)
        if "weights_only" in text or "global" in text.lower():
            raise CheckpointError(
                f"state file {str(p)!r} holds Python objects (a pickle), which cnnkit never "
                "runs; it was not written by cnnkit."
            ) from None
        first = text.splitlines()[0] if text else type(e).__name__
        raise CheckpointError(
            f"state file {str(p)!r} is damaged ({first}); restore it from a good copy or "
            "start a new run."
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{str(p)!r} is not a cnnkit training state.")
    stored = obj.pop("sha256", None)
    if stored is None or _digest(obj) != stored:
        raise CheckpointError(
            f"state file {str(p)!r} does not match its SHA-256 digest (flipped or torn "
            "bytes); restore it from a good copy or start a new run."
        )
    if obj.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"state file {str(p)!r} has format version {obj['format_version']}; upgrade cnnkit "
            "to read it."
        )
    return obj
