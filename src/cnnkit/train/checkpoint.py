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
- A checkpoint of several files (``last``: weights and training state; ``best``:
  weights) is committed as one unit by its manifest, ``NAME.manifest.json`` (format
  version, cnnkit version, architecture, epoch, step, and the size and SHA-256 of each
  file). The protocol: each file is written to ``.FILE.pending`` and fsync'ed; then the
  manifest is written atomically (the commit point); then the pending files are renamed
  into place. A crash before the commit leaves the previous checkpoint, whole and
  matching its manifest; a crash after it is finished on the next load (the pending
  files match the new manifest and are renamed). A file that matches neither is an
  error naming the file and the field; nothing falls back silently to an older file.
- Files are replaced by rename, never rewritten in place, so a reader that has the old
  file open or memory-mapped (safetensors does) keeps reading the old bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from cnnkit._safe_io import check_size, first_line, torch_load
from cnnkit.errors import CnnkitError

__all__ = [
    "CheckpointError",
    "atomic_write",
    "checkpoint_files",
    "load_state",
    "load_weights_file",
    "manifest_path",
    "remove_leftovers",
    "save_checkpoint",
    "save_state",
    "save_weights",
    "state_bytes",
    "verify_checkpoint",
    "weights_bytes",
]

FORMAT = "cnnkit-checkpoint"
FORMAT_VERSION = 1
MANIFEST_FORMAT = "cnnkit-manifest"
MANIFEST_VERSION = 1
_MAX_MANIFEST_BYTES = 2**20


def _crash_point(stage: str, path: Path) -> None:
    """Called at each step of a checkpoint commit; the crash tests replace it to kill there."""


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
        _crash_point("fsynced", tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover (platforms without directory fds)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


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


def weights_bytes(state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> bytes:
    """A ``.safetensors`` file's bytes, with JSON metadata and a content digest.

    Args:
        state_dict: The model's tensors.
        metadata: Plain values (architecture, preprocessing, class names, ...).

    Returns:
        The file content.
    """
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
    meta.update({k: json.dumps(v) for k, v in metadata.items()})
    meta["sha256"] = _digest({"tensors": tensors, "meta": meta})
    return save(tensors, metadata=meta)


def save_weights(
    path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]
) -> None:
    """Save one standalone ``.safetensors`` weights file, atomically (no manifest).

    Args:
        path: Target ``.safetensors`` file.
        state_dict: The model's tensors.
        metadata: Plain values (architecture, preprocessing, class names, ...).
    """
    blob = weights_bytes(state_dict, metadata)
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

    p = check_size(path, "weights file", error=CheckpointError)
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open API)
    except Exception as e:
        raise CheckpointError(
            f"weights file {str(p)!r} is damaged or not a safetensors file ({first_line(e)}); "
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


def state_bytes(state: Mapping[str, Any]) -> bytes:
    """A training-state file's bytes (``torch.save`` of plain values) with a digest.

    Args:
        state: Nested dicts/lists of tensors, numbers, strings, bools and None.

    Returns:
        The file content; it loads with ``torch.load(weights_only=True)``.
    """
    obj = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    obj["sha256"] = _digest(obj)
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_state(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Save one standalone training state with a digest, atomically (no manifest).

    Args:
        path: Target file (``.pt``); it loads with ``torch.load(weights_only=True)``.
        state: Nested dicts/lists of tensors, numbers, strings, bools and None.
    """
    blob = state_bytes(state)
    atomic_write(path, lambda f: f.write(blob))


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
    fix = "; restore it from a good copy or start a new run"
    obj = torch_load(p, "state file", trust_pickle=None, error=CheckpointError, fix=fix)
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


def manifest_path(folder: str | os.PathLike, name: str) -> Path:
    """The manifest of checkpoint ``name`` (``last``, ``best``) in ``folder``."""
    return Path(folder) / f"{name}.manifest.json"


def _pending(final: Path) -> Path:
    return final.with_name(f".{final.name}.pending")


def save_checkpoint(
    folder: str | os.PathLike,
    name: str,
    files: Mapping[str, bytes],
    info: Mapping[str, Any],
) -> Path:
    """Commit several files as one checkpoint, described by ``NAME.manifest.json``.

    Each file is written to ``.FILE.pending`` and fsync'ed; the manifest (with each
    file's size and SHA-256) is then written atomically, which commits the checkpoint;
    the pending files are then renamed into place. Killed at any point, the folder holds
    either the previous checkpoint or the new one (finished by :func:`verify_checkpoint`).

    Args:
        folder: The checkpoint folder (a run's ``weights/``).
        name: The checkpoint's name (``last``, ``best``).
        files: File name -> content.
        info: Plain values recorded in the manifest (``architecture``, ``epoch``, ``step``).

    Returns:
        The manifest's path.
    """
    from cnnkit import __version__

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    entries = {}
    for fname, blob in files.items():
        pending = _pending(folder / fname)
        with open(pending, "wb") as f:
            view, half = memoryview(blob), len(blob) // 2
            f.write(view[:half])
            _crash_point("writing", pending)  # half of the file written
            f.write(view[half:])
            f.flush()
            os.fsync(f.fileno())
        _crash_point("pending", pending)
        entries[fname] = {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    _fsync_dir(folder)  # the pending files' names are durable before the commit names them
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "cnnkit_version": __version__,
        **info,
        "files": entries,
    }
    text = json.dumps(manifest, indent=1, sort_keys=True).encode()
    mpath = manifest_path(folder, name)
    atomic_write(mpath, lambda f: f.write(text))  # the commit point
    _crash_point("committed", mpath)
    _finish(folder, list(entries))
    return mpath


def _finish(folder: Path, names: list[str]) -> None:
    """Rename the pending files of a committed manifest into place."""
    moved = False
    for fname in names:
        try:
            os.replace(_pending(folder / fname), folder / fname)
        except FileNotFoundError:  # renamed already (by the writer, or a commit finished)
            continue
        moved = True
        _crash_point("renamed", folder / fname)
    if moved:
        _fsync_dir(folder)


def _manifest_error(mpath: Path, field: str, problem: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint manifest {str(mpath)!r}: field {field!r} {problem}; restore the run "
        "folder from a good copy or start a new run."
    )


def verify_checkpoint(
    folder: str | os.PathLike, name: str, *, architecture: str | None = None
) -> dict[str, Any]:
    """Check checkpoint ``name`` against its manifest, finishing a commit cut short.

    For the writer of the run (``fit`` on resume): a commit killed after its manifest
    is completed by renaming the pending files into place. Readers use
    :func:`checkpoint_files`, which never renames.

    Args:
        folder: The checkpoint folder (a run's ``weights/``).
        name: The checkpoint's name (``last``, ``best``).
        architecture: When given, the manifest's ``architecture`` must equal it.

    Returns:
        The manifest.

    Raises:
        CheckpointError: If the manifest is missing or malformed, of a newer format, for
            another architecture, or a file does not match it (the file and field named).
    """
    folder = Path(folder)
    manifest, paths = _check(folder, name, architecture)
    unfinished = [f for f, p in paths.items() if p != folder / f]
    if unfinished:
        _finish(folder, unfinished)
    return manifest


def checkpoint_files(
    folder: str | os.PathLike, name: str, *, architecture: str | None = None
) -> dict[str, Path]:
    """Verify checkpoint ``name`` without changing anything, for a reader (``val``, ``predict``).

    A training run may be committing a new checkpoint meanwhile: a manifest that changes
    under the check is read again, and a committed file not yet renamed into place is
    read from its pending name.

    Args:
        folder: The checkpoint folder (a run's ``weights/``).
        name: The checkpoint's name (``last``, ``best``).
        architecture: When given, the manifest's ``architecture`` must equal it.

    Returns:
        File name -> the path that holds its verified content.

    Raises:
        CheckpointError: As :func:`verify_checkpoint`.
    """
    folder = Path(folder)
    for attempt in range(3):
        before = _read_bytes(manifest_path(folder, name))
        try:
            return _check(folder, name, architecture)[1]
        except CheckpointError:
            if attempt == 2 or _read_bytes(manifest_path(folder, name)) == before:
                raise  # the manifest did not move: the checkpoint really is bad
    raise AssertionError("unreachable")  # pragma: no cover


def _read_bytes(p: Path) -> bytes | None:
    try:
        return p.read_bytes()
    except OSError:
        return None


def _check(
    folder: Path, name: str, architecture: str | None
) -> tuple[dict[str, Any], dict[str, Path]]:
    """The manifest and, per file, the path holding matching content (final or pending)."""
    mpath = manifest_path(folder, name)
    if not mpath.is_file():
        raise CheckpointError(
            f"checkpoint manifest {str(mpath)!r} is missing, so the {name} checkpoint in "
            f"{str(folder)!r} cannot be verified; restore it from a good copy or start a new run."
        )
    check_size(mpath, "checkpoint manifest", max_bytes=_MAX_MANIFEST_BYTES, error=CheckpointError)
    try:
        manifest = json.loads(mpath.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"checkpoint manifest {str(mpath)!r} is damaged ({first_line(e)}); restore the run "
            "folder from a good copy or start a new run."
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise _manifest_error(mpath, "format", f"is not {MANIFEST_FORMAT!r}")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise _manifest_error(mpath, "format_version", "is not a number")
    if version > MANIFEST_VERSION:
        raise CheckpointError(
            f"checkpoint manifest {str(mpath)!r} has format_version {version}; upgrade cnnkit "
            "to read it."
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise _manifest_error(mpath, "files", "lists no files")
    for fname, entry in files.items():
        if not isinstance(fname, str) or Path(fname).name != fname or fname.startswith("."):
            raise _manifest_error(mpath, "files", f"names {fname!r}, not a file of this folder")
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not isinstance(entry.get("bytes"), int)
        ):
            raise _manifest_error(mpath, f"files.{fname}", "lacks bytes or sha256")
    if architecture is not None and manifest.get("architecture") != architecture:
        raise CheckpointError(
            f"checkpoint manifest {str(mpath)!r}: field 'architecture' is "
            f"{manifest.get('architecture')!r}, not {architecture!r}; this checkpoint belongs "
            "to another model."
        )

    def matches(p: Path, entry: Mapping[str, Any]) -> bool:
        if not p.is_file() or p.stat().st_size != entry["bytes"]:
            return False
        try:
            return _sha256_file(p) == entry["sha256"]
        except FileNotFoundError:  # renamed away while being read
            return False

    paths: dict[str, Path] = {}
    for fname, entry in files.items():
        final = folder / fname
        if matches(final, entry):
            paths[fname] = final
            continue
        if matches(_pending(final), entry):
            paths[fname] = _pending(final)  # committed, not yet renamed into place
            continue
        if not final.is_file():
            raise CheckpointError(
                f"{str(final)!r} is missing but listed in its manifest {mpath.name}; restore "
                "it from a good copy or start a new run."
            )
        field = "bytes" if final.stat().st_size != entry["bytes"] else "sha256"
        raise CheckpointError(
            f"{str(final)!r} does not match field 'files.{fname}.{field}' of its manifest "
            f"{mpath.name} (torn or altered); restore it from a good copy or start a new run."
        )
    return manifest, paths


def remove_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Tidy a checkpoint folder after a crash: finish committed checkpoints, drop the rest.

    Every committed checkpoint whose files were not all renamed into place is finished
    (as :func:`verify_checkpoint` does); then pending files of commits that never
    happened and temporary files of other (dead) processes are removed.

    Args:
        folder: The checkpoint folder (a run's ``weights/``).

    Returns:
        The files removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    for m in sorted(folder.glob("*.manifest.json")):
        # a bad checkpoint is reported when it is loaded; never repaired by guessing
        with contextlib.suppress(CheckpointError):
            verify_checkpoint(folder, m.name.removesuffix(".manifest.json"))
    removed = []
    mine = f".tmp-{os.getpid()}"
    for p in sorted(folder.glob(".*")):
        if p.name.endswith(".pending") or (".tmp-" in p.name and not p.name.endswith(mine)):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
