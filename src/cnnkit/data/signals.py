"""1D signals and 3D volumes: folders of ``.npy`` / ``.csv`` files, and synthetic tasks.

On disk a dataset is laid out like an ImageFolder, one file per example::

    ROOT/<class>/*.npy                          (train / dev / test carved, stratified)
    ROOT/{train,dev|val,test}/<class>/*.npy     (the splits as given)

Each file is one example. A ``.npy`` file (read with ``np.load(allow_pickle=False)``:
never a pickle) holds

* a **1D signal**: shape ``(n,)`` (one channel) or ``(n_C, n)``, or
* a **3D volume**: shape ``(n_D, n_H, n_W)`` (one channel) or ``(n_C, n_D, n_H, n_W)``;

the array's rank says which (a rank-2 array is a multi-channel signal, never a 2D
image). A ``.csv`` file holds a 1D signal, one row per channel, comma-separated
numbers (``np.loadtxt(delimiter=",", ndmin=2)``). Every file of a folder has the same
shape; a bad file (unreadable, an object array, non-numbers, NaN or infinity, the
wrong rank, another shape than the first file's) stops the load with one sentence
naming it and the fix.

:func:`load_arrays` reads such a folder into :class:`~cnnkit.data.ArraySet` splits
(float32 in memory, normalized per channel with the training split's mean and std),
which ``cnnkit train data=ROOT`` trains on with the same trainer as images.

Synthetic tasks (deterministic for a seed): :func:`synth_signals` draws noisy
waveforms of four classes (``chirp``, ``sawtooth``, ``sine``, ``square``) and
:func:`synth_volumes` noisy volumes holding one solid shape (``cube``, ``cylinder``,
``sphere``); :func:`write_signals` and :func:`write_volumes` save them as
``ROOT/{train,val,test}/<class>/<k>.npy``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.data.datasets import (
    ArraySet,
    Data,
    DataInfo,
    Preprocess,
    array_stats,
    stratified_split,
)
from cnnkit.errors import CnnkitError

__all__ = [
    "ARRAY_SUFFIXES",
    "SIGNAL_CLASSES",
    "VOLUME_CLASSES",
    "array_files",
    "as_example",
    "describe",
    "is_array_folder",
    "load_arrays",
    "peek_folder",
    "read_array",
    "read_array_folder",
    "read_inputs",
    "shape_mask",
    "synth_signals",
    "synth_volumes",
    "write_signals",
    "write_volumes",
]

#: File suffixes of signals and volumes.
ARRAY_SUFFIXES = (".npy", ".csv")
#: The classes of :func:`synth_signals`, in label order (sorted, as a folder's are).
SIGNAL_CLASSES = ("chirp", "sawtooth", "sine", "square")
#: The classes of :func:`synth_volumes`, in label order.
VOLUME_CLASSES = ("cube", "cylinder", "sphere")
_SPLITS = (("train", 0.6), ("val", 0.2), ("test", 0.2))
_MAX_BYTES = 4 * 2**30


def describe(dims: int, shape: Sequence[int]) -> str:
    """An example's kind and shape in the course's order.

    Args:
        dims: 1 (signal) or 3 (volume).
        shape: ``(n_C, *spatial)`` as stored in memory.

    Returns:
        For example ``"1D signals (n x n_C = 256x1)"`` or
        ``"3D volumes (n_D x n_H x n_W x n_C = 32x32x32x1)"``.
    """
    course = "x".join(str(v) for v in (*shape[1:], shape[0]))
    axes = "n x n_C" if dims == 1 else "n_D x n_H x n_W x n_C"
    kind = "1D signals" if dims == 1 else "3D volumes"
    return f"{kind} ({axes} = {course})"


def read_array(path: str | os.PathLike) -> np.ndarray:
    """Read one example file: a ``.npy`` array (never unpickled) or a ``.csv`` signal.

    Args:
        path: The file.

    Returns:
        A float32 array of the file's own shape (a ``.csv`` file is 2D: channels x n).

    Raises:
        CnnkitError: For a file that cannot be read, an object array, non-numeric values,
            an empty array or NaN / infinite values (one sentence naming the file).
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        try:
            a = np.loadtxt(p, delimiter=",", ndmin=2, dtype=np.float64)
        except (ValueError, OSError) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CnnkitError(
                f"{str(p)!r} is not comma-separated numbers ({why}); write one row of numbers "
                "per channel, e.g. np.savetxt(path, a, delimiter=',')."
            ) from None
    elif suffix == ".npy":
        try:
            a = np.load(p, allow_pickle=False)
        except ValueError as e:
            if "allow_pickle" in str(e) or "pickle" in str(e).lower():
                raise CnnkitError(
                    f"{str(p)!r} holds Python objects (an object array), which cnnkit never "
                    "unpickles; save a numeric array, e.g. np.save(path, a.astype('float32'))."
                ) from None
            raise CnnkitError(
                f"{str(p)!r} is not a readable NumPy .npy file ({e}); save each example "
                "with np.save(path, array)."
            ) from None
        except (OSError, EOFError) as e:
            raise CnnkitError(
                f"{str(p)!r} cannot be read as a NumPy .npy file ({type(e).__name__}: {e}); "
                "save each example with np.save(path, array)."
            ) from None
        if not isinstance(a, np.ndarray):  # an .npz archive saved under a .npy name
            raise CnnkitError(
                f"{str(p)!r} is an .npz archive, not one array; save each example with "
                "np.save(path, array)."
            )
        if a.dtype.kind not in "biuf":
            raise CnnkitError(
                f"{str(p)!r} holds {a.dtype} values, not real numbers; save a numeric array, "
                "e.g. np.save(path, a.astype('float32'))."
            )
    else:
        raise CnnkitError(
            f"{str(p)!r} is not a .npy or .csv file; save signals and volumes with "
            "np.save(path, array)."
        )
    if a.size == 0:
        raise CnnkitError(f"{str(p)!r} holds an empty array; remove it or write its values.")
    with np.errstate(over="ignore"):
        a = np.ascontiguousarray(a, dtype=np.float32)  # beyond float32's range becomes inf
    bad = ~np.isfinite(a)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise CnnkitError(
            f"{str(p)!r} holds {int(bad.sum())} NaN or infinite value(s) (the first at index "
            f"{first}) as float32; replace them (e.g. np.nan_to_num) or remove the file."
        )
    return a


def as_example(a: np.ndarray, path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """An array as one example with a channel axis, and its number of spatial axes.

    Args:
        a: The file's array.
        path: The file (for the message).

    Returns:
        ``(array (n_C, *spatial), dims)``: rank 1 -> ``(1, n)`` and rank 2 -> itself
        (1D signals); rank 3 -> ``(1, n_D, n_H, n_W)`` and rank 4 -> itself (3D volumes).

    Raises:
        CnnkitError: For another rank, or a signal with more channels than samples
            (saved transposed).
    """
    if a.ndim == 1:
        return a[None], 1  # (n,) -> (1, n)
    if a.ndim == 2:
        if a.shape[0] > a.shape[1]:
            raise CnnkitError(
                f"{str(path)!r} has shape {a.shape}: {a.shape[0]} channels of {a.shape[1]} "
                "sample(s), which looks transposed; save signals as (channels, length), e.g. "
                "np.save(path, a.T)."
            )
        return a, 1
    if a.ndim == 3:
        return a[None], 3  # (n_D, n_H, n_W) -> (1, n_D, n_H, n_W)
    if a.ndim == 4:
        return a, 3
    raise CnnkitError(
        f"{str(path)!r} has shape {a.shape}; a 1D signal is (length,) or (channels, length) "
        "and a 3D volume (D, H, W) or (channels, D, H, W): reshape it."
    )


def _has_arrays_not_images(root: Path) -> bool:
    """Whether the class folders below ``root`` hold signals / volumes rather than images.

    Images (and no ``.npy``) make an ImageFolder, even with ``.csv`` files among them (a
    labels table); ``.npy``/``.csv`` files and no image make a folder of arrays; images
    and ``.npy`` files together are refused. Files at the top of ``root`` (a
    ``labels.csv``, a ``mean.npy``) and hidden files or folders (``.ipynb_checkpoints``)
    do not count.

    Raises:
        CnnkitError: Images and ``.npy`` files in one dataset, both named.
    """
    from cnnkit.data.images import IMAGE_SUFFIXES

    image = npy = csv = None
    for dirpath, dirnames, fnames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if Path(dirpath) == root:
            continue
        for f in sorted(fnames):
            low = f.lower()
            if f.startswith("."):
                continue
            if image is None and low.endswith(IMAGE_SUFFIXES):
                image = Path(dirpath) / f
            elif npy is None and low.endswith(".npy"):
                npy = Path(dirpath) / f
            elif csv is None and low.endswith(".csv"):
                csv = Path(dirpath) / f
        if image is not None and npy is not None:
            raise CnnkitError(
                f"{str(image)!r} is an image in a folder of signals / volumes ({str(npy)!r} is "
                "one); keep images and .npy/.csv examples in separate folders."
            )
    return image is None and (npy is not None or csv is not None)


def _first_array_file(root: Path) -> Path | None:
    """The first ``.npy``/``.csv`` file of the class folders (sorted walk order), or None."""
    for dirpath, dirnames, fnames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if Path(dirpath) == root:
            continue
        for f in sorted(fnames):
            if not f.startswith(".") and f.lower().endswith(ARRAY_SUFFIXES):
                return Path(dirpath) / f
    return None


def is_array_folder(root: str | os.PathLike) -> bool:
    """Whether a dataset folder holds signals / volumes (``.npy``, ``.csv``) rather than images.

    Its class folders decide: arrays and no image file in them (see
    :func:`_has_arrays_not_images`); any image makes it an ImageFolder, as before.

    Args:
        root: The dataset folder.

    Returns:
        True for a folder of signals or volumes.
    """
    return _has_arrays_not_images(Path(root))


def peek_folder(root: str | os.PathLike) -> tuple[int, tuple[int, ...], Path]:
    """The kind and shape of a folder's examples, from its first file (reads one file).

    Args:
        root: A folder of ``.npy`` / ``.csv`` examples.

    Returns:
        ``(dims, shape (n_C, *spatial), the file read)``.
    """
    first = _first_array_file(Path(root))
    if first is None:
        raise CnnkitError(
            f"{str(root)!r} holds no .npy or .csv files; lay examples out as {root}/<class>/*.npy."
        )
    a, dims = as_example(read_array(first), first)
    return dims, tuple(int(v) for v in a.shape), first


def _list_folder(root: Path) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    from cnnkit.data.sources import _list_image_folder

    classes, _, files = _list_image_folder(root, suffixes=ARRAY_SUFFIXES, what="signal or volume")
    return classes, files


def read_array_folder(
    root: str | os.PathLike,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str], dict[str, list[str]], int]:
    """Read every example of a folder of signals or volumes, checking each file.

    Args:
        root: ``ROOT/<class>/*.npy|csv`` or ``ROOT/{train,dev|val,test}/<class>/...``.

    Returns:
        ``(pools, classes, ids, dims)``: split (``"all"`` for a flat folder) ->
        ``(float32 (N, n_C, *spatial), int64 labels (N,))``, the class names, split ->
        file paths, and 1 or 3.

    Raises:
        CnnkitError: For a bad file (named), image files mixed in, files of another rank
            or shape than the first file's (the first offender named).
    """
    from cnnkit.data.images import IMAGE_SUFFIXES

    root = Path(root)
    classes, files = _list_folder(root)
    for dirpath, dirnames, fnames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        imgs = [f for f in sorted(fnames) if f.lower().endswith(IMAGE_SUFFIXES) and f[0] != "."]
        if imgs:
            raise CnnkitError(
                f"{str(Path(dirpath) / imgs[0])!r} is an image in a folder of signals / volumes "
                f"({str(root)!r}); keep images and .npy/.csv examples in separate folders."
            )
    first: tuple[Path, int, tuple[int, ...]] | None = None
    pools: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    ids: dict[str, list[str]] = {}
    for split, found in files.items():
        arrays = []
        for path, _ in found:
            a, dims = as_example(read_array(path), path)
            if first is None:
                first = (path, dims, a.shape)
            elif dims != first[1]:
                raise CnnkitError(
                    f"{str(path)!r} holds {describe(dims, a.shape)} but the first file "
                    f"{str(first[0])!r} holds {describe(first[1], first[2])}; a data folder "
                    "holds one kind of example: move the other kind out."
                )
            elif a.shape != first[2]:
                fix = "length" if dims == 1 else "size"
                raise CnnkitError(
                    f"{str(path)!r} has shape {describe(dims, a.shape).split(' (')[1][:-1]} but "
                    f"the first file {str(first[0])!r} has "
                    f"{describe(dims, first[2]).split(' (')[1][:-1]}; every example must have "
                    f"one shape: crop or pad them to one {fix}."
                )
            arrays.append(a)
        assert first is not None or not arrays
        shape = first[2] if first is not None else (1, 1)
        x = np.stack(arrays) if arrays else np.zeros((0, *shape), np.float32)
        pools[split] = (x, np.asarray([lab for _, lab in found], dtype=np.int64))
        ids[split] = [str(p) for p, _ in found]
    if first is None:
        raise CnnkitError(f"{str(root)!r} holds no .npy or .csv examples.")
    return pools, classes, ids, first[1]


def load_arrays(
    root: str | os.PathLike,
    *,
    size: Sequence[int] | int | None = None,
    channels: int | None = None,
    dev: float | int = 0.1,
    test: float | int = 0.2,
    train_dev: float | int = 0.0,
    seed: int = 0,
    name: str | None = None,
) -> Data:
    """Load a folder of signals or volumes into memory, split into train / dev / test.

    The splits follow :func:`cnnkit.data.load`'s rules: given split folders are kept, a
    missing dev split is carved from train, a flat folder also gets its test split
    carved first (stratified, fixed by ``seed``), and the per-channel mean / std come
    from the final training split only. Arrays are never resampled or converted.

    Args:
        root: The folder (see the module docstring).
        size: The spatial shape the weights expect (``(n,)`` or ``(n_D, n_H, n_W)``),
            checked against the files'; None: the files'.
        channels: The channel count the weights expect, checked; None: the files'.
        dev: Dev split when carved (a fraction of the pool it is carved from, or a count).
        test: Test split when carved (flat folders only).
        train_dev: Train-dev split carved from train (0: none).
        seed: Seed of the splits.
        name: The dataset's name (default: the folder's name).

    Returns:
        :class:`~cnnkit.data.Data` with :class:`~cnnkit.data.ArraySet` splits.
    """
    root = Path(root)
    pools, classes, ids, dims = read_array_folder(root)
    shape = next(iter(pools.values()))[0].shape[1:]
    what = describe(dims, shape)
    if size is not None:
        want = (size,) * dims if isinstance(size, int) else tuple(int(v) for v in size)
        if want != tuple(shape[1:]):
            model_kind = {1: "1D signals", 2: "2D images", 3: "3D volumes"}.get(len(want), "")
            shown = "x".join(map(str, want))
            raise CnnkitError(
                f"the model takes {model_kind} of size {shown} but {str(root)!r} holds {what}; "
                "signals and volumes are not resampled: use data of that size or train a "
                "model for this data."
            )
    if channels is not None and channels != shape[0]:
        raise CnnkitError(
            f"the model takes {channels} channel(s) but {str(root)!r} holds {what}; use data "
            "with that many channels or train a model for this data."
        )
    n_bytes = sum(x.nbytes for x, _ in pools.values())
    if n_bytes > _MAX_BYTES:
        raise CnnkitError(
            f"{str(root)!r} needs {n_bytes / 2**30:.1f} GiB in memory as float32; use fewer "
            "or smaller examples."
        )
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor, list[str]]] = {
        k: (torch.from_numpy(x), torch.from_numpy(y), ids[k]) for k, (x, y) in pools.items()
    }
    how: dict[str, str] = {}

    def take(t: tuple[torch.Tensor, torch.Tensor, list[str]], idx: np.ndarray) -> tuple:
        i = torch.as_tensor(idx, dtype=torch.long)
        return t[0][i], t[1][i], [t[2][j] for j in idx]

    if "all" in tensors:
        whole = tensors.pop("all")
        parts = stratified_split(whole[1].numpy(), {"test": test, "dev": dev}, seed)
        for k in ("test", "dev"):
            tensors[k] = take(whole, parts[k])
            how[k] = f"carved from the source ({len(parts[k])} examples, stratified, seed {seed})"
        tensors["train"] = take(whole, parts["rest"])
    elif "dev" not in tensors:
        tr = tensors["train"]
        want_split = {"dev": dev} if "test" in tensors else {"test": test, "dev": dev}
        parts = stratified_split(tr[1].numpy(), want_split, seed)
        for k in want_split:
            tensors[k] = take(tr, parts[k])
            how[k] = f"carved from train ({len(parts[k])} examples, stratified, seed {seed})"
        tensors["train"] = take(tr, parts["rest"])
    if train_dev:
        tr = tensors["train"]
        parts = stratified_split(tr[1].numpy(), {"train_dev": train_dev}, seed + 1)
        tensors["train_dev"] = take(tr, parts["train_dev"])
        tensors["train"] = take(tr, parts["rest"])
        how["train_dev"] = (
            f"carved from train ({len(parts['train_dev'])} examples, never trained on)"
        )
    for k in tensors:
        how.setdefault(k, "source")
    if len(tensors["train"][0]) == 0:
        raise CnnkitError(
            f"{str(root)!r} leaves no training examples after the splits; use smaller dev/test "
            "fractions."
        )
    mean, std = array_stats(tensors["train"][0])
    pre = Preprocess(
        size=tuple(int(v) for v in shape[1:]),
        channels=int(shape[0]),
        mean=mean,
        std=std,
        dims=dims,
    )
    sets = {k: ArraySet(x, y, pre, k, n) for k, (x, y, n) in tensors.items()}
    info = DataInfo(
        name=name or root.name,
        classes=list(classes),
        preprocess=pre,
        native_size=tuple(int(v) for v in shape[1:]),  # type: ignore[arg-type]
        source=str(root),
        splits_from=how,
    )

    def nonempty(k: str) -> ArraySet | None:
        s = sets.get(k)
        return s if s is not None and len(s) else None

    return Data(
        train=sets["train"],
        dev=nonempty("dev"),
        test=nonempty("test"),
        info=info,
        train_dev=sets.get("train_dev"),
    )


def array_files(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The example files ``predict`` reads: one file, a list, or a folder (recursive).

    Args:
        source: A ``.npy`` / ``.csv`` file, a list of them, or a folder.

    Returns:
        The files, sorted for a folder.
    """
    if isinstance(source, (list, tuple)):
        return [Path(s) for s in source]
    src = Path(source)
    if not str(source) or not src.exists():
        raise CnnkitError(
            f"source={str(source)!r} does not exist; pass a .npy or .csv file or a folder of them."
        )
    if not src.is_dir():
        return [src]
    files = sorted(
        p
        for p in src.rglob("*")
        if p.suffix.lower() in ARRAY_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(src).parts)
    )
    if not files:
        raise CnnkitError(f"no .npy or .csv files in {str(src)!r}.")
    return files


def read_inputs(paths: Sequence[str | os.PathLike], pre: Preprocess) -> torch.Tensor:
    """Read example files for weights with preprocessing ``pre`` (not normalized).

    Args:
        paths: ``.npy`` / ``.csv`` files.
        pre: The weights' preprocessing (its ``dims``, ``channels`` and ``size``).

    Returns:
        float32 ``(N, n_C, *size)``.

    Raises:
        CnnkitError: For a bad file, or one whose kind or shape is not the weights'.
    """
    want = (pre.channels, *pre.size)
    out = []
    for p in paths:
        a, dims = as_example(read_array(p), p)
        if dims != pre.dims or a.shape != want:
            raise CnnkitError(
                f"{str(p)!r} holds {describe(dims, a.shape)} but the model takes "
                f"{describe(pre.dims, want)}; pass examples of that shape."
            )
        out.append(torch.from_numpy(a))
    return torch.stack(out)  # N x (C, *S) -> (N, C, *S)


# -- synthetic tasks ---------------------------------------------------------------------


def _check_n(n: Any, key: str, low: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < low:
        raise CnnkitError(f"{key} must be an integer >= {low}, got {n!r}.")
    return int(n)


def synth_signals(
    n_per_class: int,
    length: int = 256,
    *,
    seed: int = 0,
    noise: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Noisy waveforms of four classes: chirp, sawtooth, sine, square.

    Each example is ``amplitude * wave(t) + offset + N(0, noise^2)`` on ``length``
    samples (``t`` from 0 to 1), one channel. The drawn parameters: ``freq`` cycles per
    signal ``U(3, 12)`` (a chirp starts there and sweeps linearly up by ``U(8, 16)``
    cycles), ``phase`` ``U(0, 2 pi)``, ``amplitude`` ``U(0.5, 1.5)``, ``offset``
    ``U(-0.5, 0.5)``. The classes differ in shape (harmonics) and, for the chirp, in
    a frequency that changes over time, not in level or frequency range: random
    phase and frequency make a linear classifier on the raw samples fail.

    Args:
        n_per_class: Examples of each class.
        length: Samples per signal (at least 32).
        seed: Seed of everything drawn (the same seed gives the same arrays).
        noise: Standard deviation of the additive Gaussian noise.

    Returns:
        ``(x float32 (N, 1, length), y int64 (N,), params)`` with examples in class order
        (:data:`SIGNAL_CLASSES`) and ``params`` the drawn ``freq``, ``sweep``, ``phase``,
        ``amplitude``, ``offset`` per example.
    """
    n_per_class = _check_n(n_per_class, "n", 1)
    length = _check_n(length, "length", 32)
    if not (isinstance(noise, (int, float)) and noise >= 0):
        raise CnnkitError(f"noise must be a number >= 0, got {noise!r}.")
    rng = np.random.default_rng(seed)
    N = n_per_class * len(SIGNAL_CLASSES)
    y = np.repeat(np.arange(len(SIGNAL_CLASSES)), n_per_class).astype(np.int64)
    freq = rng.uniform(3.0, 12.0, N)
    sweep = np.where(y == SIGNAL_CLASSES.index("chirp"), rng.uniform(8.0, 16.0, N), 0.0)
    phase = rng.uniform(0.0, 2 * np.pi, N)
    amp = rng.uniform(0.5, 1.5, N)
    offset = rng.uniform(-0.5, 0.5, N)
    t = np.arange(length) / length  # (L,)
    # cycles elapsed at t: f t + sweep t^2 / 2 (instantaneous frequency f + sweep t)
    cycles = freq[:, None] * t[None] + 0.5 * sweep[:, None] * t[None] ** 2  # (N, L)
    theta = 2 * np.pi * cycles + phase[:, None]
    frac = np.mod(theta / (2 * np.pi), 1.0)
    waves = {
        "chirp": np.sin(theta),
        "sawtooth": 2.0 * frac - 1.0,
        "sine": np.sin(theta),
        "square": np.where(frac < 0.5, 1.0, -1.0),
    }
    x = np.empty((N, length), np.float64)
    for k, c in enumerate(SIGNAL_CLASSES):
        rows = y == k
        x[rows] = waves[c][rows]
    x = amp[:, None] * x + offset[:, None] + rng.normal(0.0, noise, (N, length))
    params = {"freq": freq, "sweep": sweep, "phase": phase, "amplitude": amp, "offset": offset}
    return x[:, None].astype(np.float32), y, params  # (N, L) -> (N, 1, L)


def shape_mask(
    kind: str,
    size: int,
    center: Sequence[float],
    radius: float,
    axis: int = 0,
) -> np.ndarray:
    """The voxels (centres at integer coordinates) inside one solid shape.

    Args:
        kind: ``"sphere"`` (``|p - c| <= r``), ``"cube"`` (axis-aligned, side ``2r``) or
            ``"cylinder"`` (radius ``r``, height ``2r``, along ``axis``).
        size: The volume is ``size^3``.
        center: ``(d, h, w)`` of the centre, in voxels (may be fractional).
        radius: ``r`` in voxels.
        axis: The cylinder's axis (0, 1 or 2).

    Returns:
        bool ``(size, size, size)``.
    """
    g = np.arange(size, dtype=np.float64)
    d = [g - center[0], g - center[1], g - center[2]]
    dd, hh, ww = np.meshgrid(*d, indexing="ij")  # each (size, size, size)
    r2 = float(radius) ** 2
    if kind == "sphere":
        return (dd * dd + hh * hh + ww * ww) <= r2
    if kind == "cube":
        return (np.abs(dd) <= radius) & (np.abs(hh) <= radius) & (np.abs(ww) <= radius)
    if kind == "cylinder":
        along = (dd, hh, ww)[axis]
        a, b = [v for i, v in enumerate((dd, hh, ww)) if i != axis]
        return ((a * a + b * b) <= r2) & (np.abs(along) <= radius)
    raise CnnkitError(f"unknown shape {kind!r}; use one of {', '.join(VOLUME_CLASSES)}.")


def synth_volumes(
    n_per_class: int,
    size: int = 32,
    *,
    seed: int = 0,
    noise: float = 0.3,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Noisy volumes holding one solid shape each: a cube, a cylinder or a sphere.

    The shape has radius (half-side, half-height) ``r ~ U(0.2, 0.35) * size``, a
    centre drawn so it lies inside the volume, an intensity ``U(0.5, 1.5)`` on a
    background level ``U(-0.5, 0.5)``; a cylinder lies along a random axis. Gaussian
    noise of standard deviation ``noise`` is added to every voxel. Size and intensity
    ranges are the same for every class (a cube holds 6/pi times a sphere's voxels
    at the same ``r``, but ``r`` varies 1.75x, so the volume 5.4x).

    Args:
        n_per_class: Examples of each class.
        size: The volumes are ``size^3`` (at least 8).
        seed: Seed of everything drawn.
        noise: Standard deviation of the voxel noise.

    Returns:
        ``(x float32 (N, 1, size, size, size), y int64 (N,), params)`` in class order
        (:data:`VOLUME_CLASSES`); ``params`` holds ``radius``, ``center`` ``(N, 3)``,
        ``axis``, ``intensity``, ``background``.
    """
    n_per_class = _check_n(n_per_class, "n", 1)
    size = _check_n(size, "size", 8)
    if not (isinstance(noise, (int, float)) and noise >= 0):
        raise CnnkitError(f"noise must be a number >= 0, got {noise!r}.")
    rng = np.random.default_rng(seed)
    N = n_per_class * len(VOLUME_CLASSES)
    y = np.repeat(np.arange(len(VOLUME_CLASSES)), n_per_class).astype(np.int64)
    radius = rng.uniform(0.2, 0.35, N) * size
    center = radius[:, None] + rng.uniform(0, 1, (N, 3)) * (size - 1 - 2 * radius[:, None])
    axis = rng.integers(0, 3, N)
    intensity = rng.uniform(0.5, 1.5, N)
    background = rng.uniform(-0.5, 0.5, N)
    x = np.empty((N, 1, size, size, size), np.float32)
    for i in range(N):
        m = shape_mask(VOLUME_CLASSES[y[i]], size, center[i], radius[i], int(axis[i]))
        v = background[i] + intensity[i] * m + rng.normal(0.0, noise, (size,) * 3)
        x[i, 0] = v
    params = {
        "radius": radius,
        "center": center,
        "axis": axis,
        "intensity": intensity,
        "background": background,
    }
    return x, y, params


def _write_splits(out: Path, x: np.ndarray, y: np.ndarray, classes: Sequence[str]) -> Path:
    """Save examples as ``out/{train,val,test}/<class>/<k>.npy`` (60 / 20 / 20 per class)."""
    out.mkdir(parents=True, exist_ok=True)
    for k, c in enumerate(classes):
        rows = np.flatnonzero(y == k)
        n = len(rows)
        n_val = n_test = max(1, round(0.2 * n)) if n >= 3 else 0
        cuts = {
            "train": rows[: n - n_val - n_test],
            "val": rows[n - n_val - n_test : n - n_test],
            "test": rows[n - n_test :],
        }
        for split, idx in cuts.items():
            folder = out / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for j, i in enumerate(idx):
                np.save(folder / f"{j:05d}.npy", x[i], allow_pickle=False)
    return out


def write_signals(
    out: str | os.PathLike,
    n: int = 200,
    length: int = 256,
    *,
    seed: int = 0,
    noise: float = 0.5,
) -> Path:
    """Write :func:`synth_signals` as ``out/{train,val,test}/<class>/<k>.npy``.

    Args:
        out: The folder to write.
        n: Examples per class, split 60% train, 20% val, 20% test.
        length: Samples per signal.
        seed: Seed.
        noise: Noise standard deviation.

    Returns:
        ``out`` (train with ``cnnkit train model=resnet1d data=out``).
    """
    x, y, _ = synth_signals(n, length, seed=seed, noise=noise)
    return _write_splits(Path(out), x, y, SIGNAL_CLASSES)


def write_volumes(
    out: str | os.PathLike,
    n: int = 200,
    size: int = 32,
    *,
    seed: int = 0,
    noise: float = 0.3,
) -> Path:
    """Write :func:`synth_volumes` as ``out/{train,val,test}/<class>/<k>.npy``.

    Args:
        out: The folder to write.
        n: Examples per class, split 60% train, 20% val, 20% test.
        size: The volumes are ``size^3``.
        seed: Seed.
        noise: Noise standard deviation.

    Returns:
        ``out`` (train with ``cnnkit train model=convnet3d data=out``).
    """
    x, y, _ = synth_volumes(n, size, seed=seed, noise=noise)
    return _write_splits(Path(out), x, y, VOLUME_CLASSES)
