"""Readers for the standard on-disk dataset formats: MNIST IDX, CIFAR python batches, digits,
and multi-label CSV manifests.

Nothing here downloads. Each image reader takes a folder as distributed (gzipped or
extracted) and returns uint8 images ``(N, n_H, n_W, n_C)`` with int64 labels;
:func:`read_manifest` parses a ``labels.csv`` (paths and 0/1/? labels) without
decoding any image.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from cnnkit.errors import CnnkitError

__all__ = [
    "Manifest",
    "find_cifar",
    "find_idx",
    "read_cifar",
    "read_digits",
    "read_idx",
    "read_manifest",
    "read_mnist",
]

# IDX type codes (http://yann.lecun.com/exdb/mnist/): big-endian payloads.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _open_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the suffix says
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise CnnkitError(f"cannot decompress {str(path)!r} ({e}); the file is torn.") from None
    return raw


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzipped or not.

    Args:
        path: The ``*-idx?-ubyte`` file (``.gz`` or extracted).

    Returns:
        The array, in native byte order.

    Raises:
        CnnkitError: If the header or size is wrong (the path is named).
    """
    p = Path(path)
    raw = _open_bytes(p)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise CnnkitError(f"{str(p)!r} is not an IDX file (bad magic number).")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise CnnkitError(f"{str(p)!r} is truncated (its IDX header is incomplete).")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - head != need:
        raise CnnkitError(
            f"{str(p)!r} holds {len(raw) - head} data bytes but its header {shape} needs "
            f"{need}; the file is truncated or not the one named."
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=head).reshape(shape).astype(dtype.newbyteorder("="))
    )


def find_idx(root: Path) -> dict[str, Path] | None:
    """Find the four MNIST-style IDX files under ``root`` (searching two levels down).

    Args:
        root: The folder.

    Returns:
        ``{"train_images", "train_labels", "test_images", "test_labels"}`` paths, or
        None when ``root`` holds no train images file.
    """
    found: dict[str, Path] = {}
    patterns = {
        "train_images": "train-images*idx3*",
        "train_labels": "train-labels*idx1*",
        "test_images": "t10k-images*idx3*",
        "test_labels": "t10k-labels*idx1*",
    }
    for depth in ("", "*/", "*/*/"):
        for key, pat in patterns.items():
            if key not in found:
                hits = sorted(root.glob(depth + pat))
                # prefer the extracted file when both are present
                hits.sort(key=lambda h: h.suffix == ".gz")
                if hits:
                    found[key] = hits[0]
    if "train_images" not in found:
        return None
    missing = [k for k in patterns if k not in found]
    if missing:
        names = ", ".join(patterns[k].replace("*", "-") for k in missing)
        raise CnnkitError(
            f"{str(root)!r} has MNIST-style IDX files but lacks {names}; put all four "
            "files (train/t10k images and labels) in the folder."
        )
    return found


def read_mnist(root: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read MNIST or Fashion-MNIST IDX files from a folder.

    Args:
        root: Folder with ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
            ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]``.

    Returns:
        ``{"train": (images, labels), "test": (images, labels)}``, images uint8
        ``(N, 28, 28, 1)``, labels int64.
    """
    files = find_idx(Path(root))
    if files is None:
        raise CnnkitError(f"no MNIST IDX files (train-images-idx3-ubyte...) in {str(root)!r}.")
    out = {}
    for split, prefix in (("train", "train"), ("test", "test")):
        x = read_idx(files[f"{prefix}_images"])
        y = read_idx(files[f"{prefix}_labels"])
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise CnnkitError(
                f"{str(files[prefix + '_images'])!r} and its labels file disagree: images "
                f"{x.shape}, labels {y.shape}."
            )
        out[split] = (x.astype(np.uint8)[..., None], y.astype(np.int64))  # (N,H,W)->(N,H,W,1)
    return out


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, bytes and numpy arrays; refuses every other global."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy._core.numeric", "_frombuffer"),  # arrays pickled with protocol 5
        ("numpy.core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def _load_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise CnnkitError(
            f"{str(path)!r} is not a CIFAR python batch ({e}); cnnkit reads only dicts of "
            "arrays from it and never runs code in a pickle."
        ) from None
    if not isinstance(obj, dict):
        raise CnnkitError(f"{str(path)!r} is not a CIFAR python batch (not a dict).")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def find_cifar(root: Path) -> tuple[str, Path] | None:
    """Find CIFAR python batches under ``root``.

    Args:
        root: The folder (``cifar-10-batches-py`` itself or a parent).

    Returns:
        ``("cifar10" | "cifar100", folder)`` or None.
    """
    for cand in (root, root / "cifar-10-batches-py", root / "cifar-100-python"):
        if (cand / "data_batch_1").is_file():
            return "cifar10", cand
        if (cand / "train").is_file() and (cand / "meta").is_file():
            return "cifar100", cand
    return None


def _cifar_images(batch: dict, path: Path) -> np.ndarray:
    data = np.asarray(batch.get("data"))
    if data.ndim != 2 or data.shape[1] != 3072:
        raise CnnkitError(f"{str(path)!r} has no (N, 3072) 'data' array; not a CIFAR batch.")
    return data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # -> (N,32,32,3)


def read_cifar(
    root: str | os.PathLike, kind: str | None = None
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Read CIFAR-10 or CIFAR-100 python batches (fine labels for CIFAR-100).

    Args:
        root: ``cifar-10-batches-py`` / ``cifar-100-python`` or a parent folder.
        kind: ``"cifar10"`` or ``"cifar100"`` to insist on one; None to detect.

    Returns:
        ``({"train": (images, labels), "test": (images, labels)}, class_names)``.
    """
    hit = find_cifar(Path(root))
    if hit is None or (kind is not None and hit[0] != kind):
        want = kind or "cifar10"
        folder = "cifar-10-batches-py" if want == "cifar10" else "cifar-100-python"
        raise CnnkitError(
            f"no {want} python batches in {str(root)!r}; extract {folder} (from the "
            f"{want}-python.tar.gz archive) there."
        )
    found, folder = hit
    if found == "cifar10":
        parts = {
            "train": [folder / f"data_batch_{i}" for i in range(1, 6)],
            "test": [folder / "test_batch"],
        }
        meta_file, names_key, label_key = folder / "batches.meta", "label_names", "labels"
    else:
        parts = {"train": [folder / "train"], "test": [folder / "test"]}
        meta_file, names_key, label_key = folder / "meta", "fine_label_names", "fine_labels"
    out = {}
    for split, files in parts.items():
        xs, ys = [], []
        for f in files:
            if not f.is_file():
                raise CnnkitError(f"CIFAR batch {str(f)!r} is missing; extract the whole archive.")
            b = _load_batch(f)
            x = _cifar_images(b, f)
            if not isinstance(b.get(label_key), (list, np.ndarray)):
                raise CnnkitError(f"{str(f)!r} has no {label_key!r} list; not a {found} batch.")
            y = np.asarray(b[label_key], dtype=np.int64)
            if len(y) != len(x):
                raise CnnkitError(
                    f"{str(f)!r} holds {len(x)} images but {len(y)} labels; the file is damaged."
                )
            xs.append(x)
            ys.append(y)
        out[split] = (np.concatenate(xs), np.concatenate(ys))
    names: list[str] = []
    if meta_file.is_file():
        meta = _load_batch(meta_file)
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(names_key, [])]
    n_classes = 10 if found == "cifar10" else 100
    if len(names) != n_classes:
        names = [str(i) for i in range(n_classes)]
    return out, names


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0-16) as uint8 0-255.

    Returns:
        ``(images (1797, 8, 8, 1) uint8, labels (1797,) int64)``.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # (N,8,8)->(N,8,8,1)
    return x, d.target.astype(np.int64)


# --- multi-label CSV manifests ---------------------------------------------------------------

#: Cells that mean "this label is not known for this image" (masked in the loss).
MISSING = ("?", "")
_SPLIT_VALUES = {"train": "train", "dev": "dev", "val": "dev", "valid": "dev", "test": "test"}


@dataclass
class Manifest:
    """A parsed multi-label manifest (no image decoded yet).

    Attributes:
        path: The CSV file.
        labels: Label names, in column order.
        files: Image paths (resolved against the CSV's folder), one per row.
        values: float32 ``(N, L)``: 1.0, 0.0, or NaN for a missing label.
        splits: ``"train"``, ``"dev"`` or ``"test"`` per row, or None without a split column.
    """

    path: Path
    labels: list[str]
    files: list[Path]
    values: np.ndarray
    splits: list[str] | None


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Parse a multi-label CSV manifest: ``image,<label1>,<label2>,...[,split]``.

    Image paths are relative to the CSV's folder (absolute paths are kept). A label cell
    is ``1`` or ``0``, or ``?`` / empty for a missing label (masked in the loss, not
    counted as 0). An optional ``split`` column says ``train``, ``dev`` (or ``val``) or
    ``test`` per row.

    Args:
        path: The CSV file.

    Returns:
        A :class:`Manifest`.

    Raises:
        CnnkitError: On a missing ``image`` column, no label column, a duplicate or empty
            column name, a row of the wrong length, a value other than 0/1/?/empty, an
            unknown split, or an image file that does not exist (each names the row and
            column, counting the header as row 1).
    """
    import csv

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise CnnkitError(
            f"cannot read the manifest {str(p)!r} ({type(e).__name__}); pass a UTF-8 CSV file."
        ) from None
    rows = [r for r in csv.reader(text.splitlines()) if any(c.strip() for c in r)]
    if not rows:
        raise CnnkitError(
            f"{str(p)!r} is empty; write a header such as image,pedestrian,car and one row "
            "per image."
        )
    header = [c.strip() for c in rows[0]]
    if not header or header[0].lower() != "image":
        raise CnnkitError(
            f"{str(p)!r}: the first column of the header must be 'image' (got "
            f"{header[0] if header else ''!r}); write image,<label1>,<label2>,... ."
        )
    for j, name in enumerate(header):
        if not name:
            raise CnnkitError(f"{str(p)!r}: column {j + 1} of the header has no name; name it.")
        if name.lower() in (h.lower() for h in header[:j]):
            raise CnnkitError(
                f"{str(p)!r}: column {name!r} appears twice in the header; "
                "give every label column its own name."
            )
    split_col = next((j for j, h in enumerate(header) if h.lower() == "split"), None)
    label_cols = [j for j in range(1, len(header)) if j != split_col]
    if not label_cols:
        raise CnnkitError(
            f"{str(p)!r} has no label columns; add one column per label, e.g. "
            "image,pedestrian,car,stop_sign,traffic_light."
        )
    root = p.parent
    files: list[Path] = []
    values = np.empty((len(rows) - 1, len(label_cols)), dtype=np.float32)
    splits: list[str] | None = [] if split_col is not None else None
    for i, row in enumerate(rows[1:]):
        where = f"{str(p)!r} row {i + 2}"
        if len(row) != len(header):
            raise CnnkitError(
                f"{where} has {len(row)} cells but the header has {len(header)}; "
                "give every row one cell per column (? for a missing label)."
            )
        cell = row[0].strip()
        if not cell:
            raise CnnkitError(f"{where} has an empty image path; fill it in or delete the row.")
        f = Path(cell) if Path(cell).is_absolute() else root / cell
        if not f.is_file():
            raise CnnkitError(
                f"{where}: image {cell!r} does not exist ({str(f)!r}); image paths are "
                "relative to the CSV's folder, so fix the path or delete the row."
            )
        files.append(f)
        for k, j in enumerate(label_cols):
            v = row[j].strip()
            if v in MISSING:
                values[i, k] = np.nan
            elif v in ("0", "1"):
                values[i, k] = float(v)
            else:
                raise CnnkitError(
                    f"{where}, column {header[j]!r}: {v!r} is not a label; write 1 (present), "
                    "0 (absent), or ? (or nothing) when it is not known."
                )
        if splits is not None:
            v = row[split_col].strip().lower()  # type: ignore[index]
            if v not in _SPLIT_VALUES:
                raise CnnkitError(
                    f"{where}, column 'split': {row[split_col]!r} is not a split; "  # type: ignore[index]
                    "write train, dev or test."
                )
            splits.append(_SPLIT_VALUES[v])
    if not files:
        raise CnnkitError(f"{str(p)!r} has a header but no rows; add one row per image.")
    if splits is not None and "train" not in splits:
        raise CnnkitError(
            f"{str(p)!r}: no row has split=train; mark the training images with train."
        )
    return Manifest(p, [header[j] for j in label_cols], files, values, splits)
