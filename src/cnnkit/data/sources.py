"""``cnnkit.data.load``: a dataset by name, folder or multi-label CSV manifest, split into
train / dev / test / train-dev.

Also ``cnnkit.data.check_folder``: every file of an ImageFolder decoded (the checks
``load`` applies), counted per split and class, the bad ones listed with their reasons.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.data.datasets import (
    Data,
    DataInfo,
    ImageSet,
    Preprocess,
    channel_stats,
    resize_uint8,
    stratified_split,
)
from cnnkit.data.formats import (
    find_cifar,
    find_idx,
    read_cifar,
    read_digits,
    read_manifest,
    read_mnist,
)
from cnnkit.data.images import (
    ALLOWED_FORMATS,
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    BadFile,
    ImageDecodeError,
    decode_image,
    to_channels,
)
from cnnkit.errors import CnnkitError, unknown_name

__all__ = ["DATASETS", "MAX_BAD_FRACTION", "FolderReport", "check_folder", "load", "resolve_source"]

#: Default ``max_bad_fraction``: with ``on_error=skip``, a folder where more than 5% of
#: the image files cannot be decoded stops the load. A few broken downloads are left
#: out; a systematic failure (the wrong format, a half-copied folder) is not trained on.
MAX_BAD_FRACTION = 0.05

#: Named datasets: name -> (format, folder name under data_dir, how to get the files)
DATASETS: dict[str, tuple[str, str]] = {
    "digits": ("digits", "scikit-learn's bundled 8x8 digits (no files needed)"),
    "mnist": ("idx", "the four MNIST IDX files (train-images-idx3-ubyte.gz, ...)"),
    "fashion-mnist": ("idx", "the four Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, ...)"),
    "cifar10": ("cifar", "the extracted cifar-10-batches-py folder"),
    "cifar100": ("cifar", "the extracted cifar-100-python folder"),
}
_SPLIT_DIRS = {
    "train": "train",
    "dev": "dev",
    "val": "dev",
    "valid": "dev",
    "validation": "dev",
    "test": "test",
}
_MAX_BYTES = 4 * 2**30
_DIGIT_NAMES = [str(i) for i in range(10)]
_FASHION = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def default_data_dir() -> Path:
    """Where named datasets are looked for: ``$CNNKIT_DATA``, else ``./data``."""
    return Path(os.environ.get("CNNKIT_DATA", "data"))


def resolve_source(
    source: str | os.PathLike, data_dir: str | os.PathLike | None = None
) -> tuple[str, Path | None]:
    """Find what a ``data=`` value points at, without reading the images (cheap, for validation).

    Args:
        source: A dataset name (``"digits"``, ``"mnist"``, ...), a folder, or a multi-label
            CSV manifest (``labels.csv``).
        data_dir: Where named datasets live (default :func:`default_data_dir`).

    Returns:
        ``(kind, folder)`` with kind ``"digits"``, ``"idx"``, ``"cifar10"``, ``"cifar100"``,
        ``"folder"``, ``"arrays"`` (a class folder of ``.npy`` / ``.csv`` signals or
        volumes, see :mod:`cnnkit.data.signals`) or ``"manifest"`` (then ``folder`` is the
        CSV file); folder is None for digits and for a named dataset not on disk yet.

    Raises:
        CnnkitError: For an unknown name or a missing / unrecognised folder.
    """
    text = str(source)
    name = text.lower()
    if name in DATASETS:
        if name == "digits":
            return "digits", None
        folder = Path(data_dir) if data_dir is not None else default_data_dir()
        folder = folder / name
        kind = DATASETS[name][0]
        if kind == "cifar":
            kind = name
        return kind, folder if folder.exists() else None
    p = Path(text).expanduser()
    if not p.exists():
        looks_like_path = os.sep in text or text.startswith(".") or "/" in text
        if looks_like_path:
            raise CnnkitError(
                f"data folder {text!r} does not exist; pass data=digits (bundled), "
                "mnist, fashion-mnist, cifar10, cifar100, or an existing folder."
            )
        raise unknown_name("dataset", text, list(DATASETS), "cnnkit train --help")
    if not p.is_dir():
        if p.suffix.lower() == ".csv":
            return "manifest", p
        if p.suffix.lower() == ".npy":
            raise CnnkitError(
                f"data={text!r} is one example; pass the folder that holds them, laid out as "
                "FOLDER/<class>/*.npy (or FOLDER/train/<class>/...)."
            )
        raise CnnkitError(
            f"data={text!r} is a file; pass the folder that holds the dataset, or a multi-label "
            "CSV manifest (labels.csv)."
        )
    if find_idx(p) is not None:
        return "idx", p
    hit = find_cifar(p)
    if hit is not None:
        return hit[0], hit[1]
    subdirs = [d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if not subdirs:
        raise CnnkitError(
            f"{text!r} holds no class folders, MNIST IDX files or CIFAR batches; lay images "
            "out as FOLDER/<class>/*.png (or FOLDER/train/<class>/...)."
        )
    from cnnkit.data.signals import is_array_folder

    if is_array_folder(p):
        return "arrays", p
    return "folder", p


def load(
    source: str | os.PathLike = "digits",
    *,
    size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    dev: float | int = 0.1,
    test: float | int = 0.2,
    train_dev: float | int = 0.0,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    on_error: str = "raise",
    max_bad_fraction: float = MAX_BAD_FRACTION,
    max_pixels: int = MAX_PIXELS,
) -> Data:
    """Load a dataset into memory, split into train / dev / test (and train-dev).

    Splits are stratified and fixed by ``seed``. A source that has no dev split gets
    one carved from its training images; a source with a single pool of images
    (digits, a flat ImageFolder) also gets its test split carved first. Normalization
    statistics (mean/std per channel) come from the final training split only.

    Args:
        source: ``"digits"`` (bundled), ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``,
            ``"cifar100"`` (files in ``data_dir/<name>``), or a folder: MNIST IDX files,
            CIFAR batches, or images as ``root/<class>/*`` or ``root/{train,dev,test}/<class>/*``;
            or a multi-label CSV manifest ``image,<label1>,...[,split]`` (see
            :func:`~cnnkit.data.formats.read_manifest`): labels are then float ``(N, L)``
            with NaN for a missing (``?``) label, ``info.multilabel`` is True, and carved
            splits are seeded random (not stratified); or a folder of ``.npy`` / ``.csv``
            1D signals or 3D volumes laid out the same way (:mod:`cnnkit.data.signals`):
            the splits are then :class:`~cnnkit.data.ArraySet` (float32, not resampled;
            ``size`` and ``channels`` are checked against the files, not converted).
        size: ``(n_H, n_W)`` (or one int) to resize to; None keeps the source's size.
        channels: 1 or 3; None keeps the source's (grey sources give 1).
        dev: Dev split when carved: a fraction of the pool it is carved from, or a count.
        test: Test split when carved (single-pool sources only), same units.
        train_dev: Train-dev split carved from train (0 for none): same distribution as
            train, never trained on; for the data-mismatch diagnosis.
        seed: Seed of the splits.
        data_dir: Folder of named datasets (default ``$CNNKIT_DATA`` or ``./data``).
        download: Download a named dataset through torchvision when it is missing.
        on_error: ``"raise"`` (an undecodable image stops with its path) or ``"skip"``
            (left out and listed with its reason in ``info.skipped``).
        max_bad_fraction: With ``on_error="skip"``: the largest fraction (0-1) of an
            ImageFolder's files that may be undecodable; above it the load stops, naming
            the count, the fraction and the first bad file.
        max_pixels: Largest image (``n_H * n_W``) decoded from an ImageFolder; larger
            files are refused from their header (decompression bombs).

    Returns:
        :class:`Data` with ``train``, ``dev``, ``test``, ``train_dev`` and ``info``.
    """
    if on_error not in ("raise", "skip"):
        raise unknown_name("on_error", str(on_error), ["raise", "skip"])
    kind, folder = resolve_source(source, data_dir)
    if kind == "arrays":  # 1D signals / 3D volumes: float arrays, never resampled
        from cnnkit.data.signals import load_arrays

        assert folder is not None
        return load_arrays(
            folder,
            size=size,
            channels=channels,
            dev=dev,
            test=test,
            train_dev=train_dev,
            seed=seed,
            name=Path(str(source)).name,
        )
    if (
        isinstance(max_bad_fraction, bool)
        or not isinstance(max_bad_fraction, (int, float))
        or not 0 <= max_bad_fraction <= 1
    ):
        raise CnnkitError(
            f"max_bad_fraction must be a number from 0 to 1, got {max_bad_fraction!r}; "
            "e.g. max_bad_fraction=0.05."
        )
    if channels not in (None, 1, 3):
        raise CnnkitError(f"channels must be 1 or 3, got {channels!r}.")
    if isinstance(size, int):
        size = (size, size)
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise CnnkitError(f"size must be a positive int or (n_H, n_W), got {size!r}.")
    name = str(source).lower() if str(source).lower() in DATASETS else Path(str(source)).name
    skipped: list[BadFile] = []
    ids: dict[str, list[str]] | None = None
    if kind == "digits":
        x, y = read_digits()
        pools = {"all": (x, y)}
        classes = list(_DIGIT_NAMES)
        where = "sklearn.datasets.load_digits"
    elif kind == "folder":
        assert folder is not None
        pools, classes, ids, skipped = _read_image_folder(
            folder, channels, on_error, max_bad_fraction, max_pixels
        )
        where = str(folder)
    elif kind == "manifest":
        assert folder is not None
        pools, classes, ids, skipped = _read_manifest_images(
            folder, channels, on_error, max_bad_fraction, max_pixels
        )
        where = str(folder)
    else:
        if folder is None:
            folder = _download_or_explain(name, kind, data_dir, download)
        if kind == "idx":
            pools = read_mnist(folder)
            classes = _FASHION if "fashion" in name else list(_DIGIT_NAMES)
        else:
            pools, classes = read_cifar(folder, kind)
        where = str(folder)
    return _build(
        name, pools, classes, ids, where, skipped, size, channels, dev, test, train_dev, seed
    )


def _download_or_explain(name: str, kind: str, data_dir: Any, download: bool) -> Path:
    root = (Path(data_dir) if data_dir is not None else default_data_dir()) / name
    what = DATASETS[name][1]
    if not download:
        raise CnnkitError(
            f"{name} is not on disk: put {what} in {str(root)!r} (or pass data=FOLDER), or "
            "pass download=true when this machine is online."
        )
    import torchvision.datasets as tvd

    cls = {
        "mnist": tvd.MNIST,
        "fashion-mnist": tvd.FashionMNIST,
        "cifar10": tvd.CIFAR10,
        "cifar100": tvd.CIFAR100,
    }[name]
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as e:  # no network, proxy, ...
        raise CnnkitError(
            f"cannot download {name} ({type(e).__name__}); put {what} in {str(root)!r} by hand."
        ) from None
    return root


def _list_image_folder(
    root: Path,
    suffixes: tuple[str, ...] = IMAGE_SUFFIXES,
    what: str = "image",
) -> tuple[list[str], dict[str, Path], dict[str, list[tuple[Path, int]]]]:
    """The layout of an ImageFolder, without decoding anything.

    Args:
        root: The folder.
        suffixes: The file suffixes listed (images; ``.npy`` / ``.csv`` for arrays).
        what: What the files are, for the messages.

    Returns:
        ``(classes, folders, files)``: the class names (from train/ or the root),
        ``split -> folder`` and ``split -> [(file, class index), ...]``; the split is
        ``"all"`` for a flat ``root/<class>/*`` folder.
    """
    subdirs = {
        d.name: d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")
    }
    split_dirs = {d: _SPLIT_DIRS[d.lower()] for d in subdirs if d.lower() in _SPLIT_DIRS}
    if split_dirs:
        if "train" not in split_dirs.values():
            raise CnnkitError(
                f"{str(root)!r} has {sorted(split_dirs)} folders but no train/; "
                "add train/<class>/... ."
            )
        layout = {split: subdirs[d] for d, split in split_dirs.items()}
    else:
        layout = {"all": root}
    base = layout.get("train", layout.get("all"))
    assert base is not None
    classes = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise CnnkitError(
            f"{str(base)!r} has no class folders; lay {what}s out as {base}/<class>/*{suffixes[0]}."
        )
    files: dict[str, list[tuple[Path, int]]] = {}
    for split, folder in layout.items():
        here = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
        extra = [c for c in here if c not in classes]
        if extra:
            raise CnnkitError(
                f"{str(folder)!r} has class folders {extra} that {str(base)!r} lacks; every "
                "split must use the training classes."
            )
        found = []
        for ci, c in enumerate(classes):
            cdir = folder / c
            if not cdir.is_dir():
                continue
            for dirpath, dirnames, fnames in os.walk(cdir):
                dirnames.sort()
                for f in sorted(fnames):
                    if f.lower().endswith(suffixes) and not f.startswith("."):
                        found.append((Path(dirpath) / f, ci))
        files[split] = found
    empty = [
        c
        for ci, c in enumerate(classes)
        if not any(lab == ci for _, lab in files.get("train", files.get("all", [])))
    ]
    if empty:
        kinds = "images (.png, .jpg, ...)" if what == "image" else f"{what} files (.npy, .csv)"
        raise CnnkitError(f"class folder(s) {empty} in {str(base)!r} hold no {kinds}.")
    return classes, layout, files


def _read_image_folder(
    root: Path, channels: int | None, on_error: str, max_bad_fraction: float, max_pixels: int
) -> tuple[dict, list[str], dict[str, list[str]], list[BadFile]]:
    classes, _, files = _list_image_folder(root)
    if channels is None:
        channels = _guess_channels([p for p, _ in next(iter(files.values()))[:64]])
    pools: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    ids: dict[str, list[str]] = {}
    skipped: list[BadFile] = []
    sizes = Counter()
    for split, found in files.items():
        arrays, kept = _decode_files(
            [path for path, _ in found], channels, on_error, max_pixels, skipped, sizes
        )
        labels = [found[i][1] for i in kept]
        names = [str(found[i][0]) for i in kept]
        pools[split] = (arrays, np.asarray(labels, dtype=np.int64))  # type: ignore[assignment]
        ids[split] = names
    total = sum(len(found) for found in files.values())
    if skipped and len(skipped) / total > max_bad_fraction:
        first = skipped[0]
        raise CnnkitError(
            f"{len(skipped)} of {total} image files ({_percent(len(skipped), total)}) in "
            f"{str(root)!r} cannot be decoded, more than max_bad_fraction={max_bad_fraction:g} "
            f"allows; the first is {first.path!r} ({first.reason}), and `cnnkit data check "
            f"{root}` lists them all."
        )
    if not sizes:
        raise CnnkitError(f"no image in {str(root)!r} could be decoded.")
    return _stack_common(pools, sizes, channels), classes, ids, skipped


def _stack_common(pools: dict, sizes: Counter, channels: int) -> dict:
    """Stack each split's images, resizing the odd ones to the most common size."""
    common = sizes.most_common(1)[0][0]
    for split, (arrays, labels) in list(pools.items()):
        same = [a if a.shape[:2] == common else _resize_np(a, common) for a in arrays]
        h, w = common
        pools[split] = (np.stack(same) if same else np.zeros((0, h, w, channels), np.uint8), labels)
    return pools


def _read_manifest_images(
    csv_path: Path, channels: int | None, on_error: str, max_bad_fraction: float, max_pixels: int
) -> tuple[dict, list[str], dict[str, list[str]], list[BadFile]]:
    """Decode the images a multi-label manifest lists; labels float ``(n, L)``, NaN = missing."""
    m = read_manifest(csv_path)
    if channels is None:
        channels = _guess_channels(m.files[:64])
    rows: dict[str, list[int]] = {}
    for i in range(len(m.files)):
        rows.setdefault(m.splits[i] if m.splits is not None else "all", []).append(i)
    pools: dict[str, tuple[list[np.ndarray], np.ndarray]] = {}
    ids: dict[str, list[str]] = {}
    skipped: list[BadFile] = []
    sizes: Counter = Counter()
    for split, idx in rows.items():
        arrays, kept = _decode_files(
            [m.files[i] for i in idx], channels, on_error, max_pixels, skipped, sizes
        )
        keep = [idx[k] for k in kept]
        pools[split] = (arrays, m.values[keep].reshape(len(keep), len(m.labels)))
        ids[split] = [str(m.files[i]) for i in keep]
    if skipped and len(skipped) / len(m.files) > max_bad_fraction:
        first = skipped[0]
        raise CnnkitError(
            f"{len(skipped)} of {len(m.files)} images listed in {str(csv_path)!r} cannot be "
            f"decoded, more than max_bad_fraction={max_bad_fraction:g} allows; the first is "
            f"{first.path!r} ({first.reason}): fix or remove those rows."
        )
    if not sizes:
        raise CnnkitError(f"no image listed in {str(csv_path)!r} could be decoded.")
    return _stack_common(pools, sizes, channels), list(m.labels), ids, skipped


def _decode_files(
    paths: list[Any],
    channels: int | None,
    on_error: str,
    max_pixels: int,
    skipped: list[BadFile],
    sizes: Counter,
) -> tuple[list[np.ndarray], list[int]]:
    """Decode ``paths``; an undecodable file raises, or (``on_error="skip"``) is listed.

    Returns:
        ``(the decoded (n_H, n_W, n_C) arrays, the indices in paths they came from)``;
        ``sizes`` counts each decoded image's ``(n_H, n_W)``.
    """
    arrays, kept = [], []
    for i, path in enumerate(paths):
        try:
            a = decode_image(path, channels, max_pixels=max_pixels)
        except ImageDecodeError as e:
            if on_error == "raise":
                raise
            skipped.append(BadFile(e.path, e.reason))
            continue
        arrays.append(a)
        kept.append(i)
        sizes[a.shape[:2]] += 1
    return arrays, kept


def _resize_np(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(a).permute(2, 0, 1)[None]  # (H, W, C) -> (1, C, H, W)
    return resize_uint8(t, size)[0].permute(1, 2, 0).numpy()  # -> (H, W, C)


def _guess_channels(paths: list[Path]) -> int:
    from PIL import Image

    for p in paths:
        try:
            with Image.open(p, formats=ALLOWED_FORMATS) as im:
                if im.mode not in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
                    return 3
        except Exception:  # decoded (and reported) later
            continue
    return 1


def _build(
    name: str,
    pools: dict,
    classes: list[str],
    ids: dict[str, list[str]] | None,
    where: str,
    skipped: list[BadFile],
    size: tuple[int, int] | None,
    channels: int | None,
    dev: float | int,
    test: float | int,
    train_dev: float | int,
    seed: int,
) -> Data:
    native = tuple(next(iter(pools.values()))[0].shape[1:3])
    multilabel = np.asarray(next(iter(pools.values()))[1]).ndim == 2  # float (N, L) labels

    def strata(y: torch.Tensor) -> np.ndarray:
        # multi-label: one stratum, so the split is a seeded random one of exact size
        return np.zeros(len(y), np.int64) if multilabel else y.numpy()

    how_split = "random" if multilabel else "stratified"
    want_c = channels or next(iter(pools.values()))[0].shape[-1]
    target = tuple(size) if size is not None else native
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor, list[str]]] = {}
    for split, (x, y) in pools.items():
        n_bytes = len(x) * target[0] * target[1] * want_c
        if n_bytes > _MAX_BYTES:
            raise CnnkitError(
                f"{name} at {target[0]}x{target[1]}x{want_c} needs {n_bytes / 2**30:.1f} GiB in "
                "memory; pass a smaller size=."
            )
        x = to_channels(x, want_c)
        t = (
            torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()
        )  # (N,H,W,C) -> (N,C,H,W)
        t = resize_uint8(t, target)
        names = ids[split] if ids is not None else [f"{split}/{i}" for i in range(len(y))]
        y = torch.as_tensor(y, dtype=torch.float32 if multilabel else torch.long)
        tensors[split] = (t, y, names)
    how: dict[str, str] = {}
    if "all" in tensors:
        x, y, names = tensors.pop("all")
        parts = stratified_split(strata(y), {"test": test, "dev": dev}, seed)
        for k in ("test", "dev"):
            tensors[k] = _take(x, y, names, parts[k])
            how[k] = f"carved from the source ({len(parts[k])} images, {how_split}, seed {seed})"
        tensors["train"] = _take(x, y, names, parts["rest"])
    elif "dev" not in tensors:
        x, y, names = tensors["train"]
        want = {"dev": dev} if "test" in tensors else {"test": test, "dev": dev}
        parts = stratified_split(strata(y), want, seed)
        for k in want:
            tensors[k] = _take(x, y, names, parts[k])
            how[k] = f"carved from train ({len(parts[k])} images, {how_split}, seed {seed})"
        tensors["train"] = _take(x, y, names, parts["rest"])
    if train_dev:
        x, y, names = tensors["train"]
        parts = stratified_split(strata(y), {"train_dev": train_dev}, seed + 1)
        tensors["train_dev"] = _take(x, y, names, parts["train_dev"])
        tensors["train"] = _take(x, y, names, parts["rest"])
        how["train_dev"] = f"carved from train ({len(parts['train_dev'])} images, never trained on)"
    for k in tensors:
        how.setdefault(k, "source")
    xtr = tensors["train"][0]
    if len(xtr) == 0:
        raise CnnkitError(
            f"{name} leaves no training images after the splits; use smaller dev/test fractions."
        )
    mean, std = channel_stats(xtr)
    pre = Preprocess(
        size=(int(target[0]), int(target[1])), channels=int(want_c), mean=mean, std=std
    )
    sets = {k: ImageSet(x, y, pre, k, names) for k, (x, y, names) in tensors.items()}
    info = DataInfo(
        name=name,
        classes=list(classes),
        preprocess=pre,
        native_size=(int(native[0]), int(native[1])),
        source=where,
        skipped=skipped,
        splits_from=how,
        multilabel=multilabel,
    )
    return Data(
        train=sets["train"],
        dev=sets.get("dev") if sets.get("dev") is not None and len(sets["dev"]) else None,
        test=sets.get("test") if sets.get("test") is not None and len(sets["test"]) else None,
        info=info,
        train_dev=sets.get("train_dev"),
    )


def _take(x: torch.Tensor, y: torch.Tensor, names: list[str], idx: np.ndarray):
    t = torch.as_tensor(idx, dtype=torch.long)
    return x[t], y[t], [names[i] for i in idx]


def _percent(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "0%"


@dataclass
class FolderReport:
    """What :func:`check_folder` found: files per split and class, and the bad ones.

    Attributes:
        root: The folder checked.
        classes: Class names (from ``train/`` or the root).
        folders: Split -> its folder (``"all"`` -> the root for a flat folder).
        counts: Split -> class -> image files that decode.
        bad_counts: Split -> class -> image files that do not.
        bad: The files that do not decode, with their reasons, in walk order.
    """

    root: str
    classes: list[str]
    folders: dict[str, str]
    counts: dict[str, dict[str, int]]
    bad_counts: dict[str, dict[str, int]]
    bad: list[BadFile] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every image file decodes."""
        return not self.bad

    @property
    def n_files(self) -> int:
        """Image files found (good and bad)."""
        return sum(sum(c.values()) for c in self.counts.values()) + len(self.bad)

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for JSON."""
        return asdict(self)

    def to_text(self) -> str:
        """The report as ``cnnkit data check`` prints it.

        Returns:
            A table of images per split and class, the bad files with their reasons,
            and a closing line saying what to do.
        """
        names = {s: Path(f).name if s != "all" else "all" for s, f in self.folders.items()}
        w_split = max(len("split"), *(len(n) for n in names.values()))
        w_class = max(len("class"), *(len(c) for c in self.classes))
        lines = [
            f"{self.root}: {len(self.classes)} classes, {self.n_files:,} image files",
            f"{'split':<{w_split}}  {'class':<{w_class}}  {'images':>7}  {'bad':>5}",
        ]
        for split in self.counts:
            for c in self.classes:
                good, bad = self.counts[split][c], self.bad_counts[split][c]
                lines.append(f"{names[split]:<{w_split}}  {c:<{w_class}}  {good:>7,}  {bad:>5,}")
        if self.ok:
            lines.append(f"all {self.n_files:,} image files decode.")
            return "\n".join(lines) + "\n"
        lines.append(f"bad files ({len(self.bad):,}):")
        lines += [f"  {b.path}: {b.reason}" for b in self.bad]
        frac = len(self.bad) / self.n_files
        how = "train with on_error=skip"
        if frac > MAX_BAD_FRACTION:
            how += f" max_bad_fraction={math.ceil(frac * 100) / 100:g}"
        how += " to leave them out"
        lines.append(
            f"{len(self.bad):,} of {self.n_files:,} image files "
            f"({_percent(len(self.bad), self.n_files)}) cannot be decoded: fix or remove them, "
            f"or {how}."
        )
        return "\n".join(lines) + "\n"


def check_folder(
    root: str | os.PathLike, *, channels: int | None = None, max_pixels: int = MAX_PIXELS
) -> FolderReport:
    """Decode every file of an ImageFolder, as :func:`load` would, and report the bad ones.

    The layout rules are :func:`load`'s: ``root/<class>/*`` or
    ``root/{train,dev|val,test}/<class>/*``. A folder whose report is ``ok`` loads with
    ``on_error="raise"``.

    Args:
        root: The ImageFolder.
        channels: 1 or 3 (None: guessed from the images, as :func:`load` does).
        max_pixels: Largest image (``n_H * n_W``) decoded; larger files are reported.

    Returns:
        A :class:`FolderReport` (``report.ok``, ``report.bad``, ``report.to_text()``).

    Raises:
        CnnkitError: If ``root`` does not exist or is not laid out as an ImageFolder.
    """
    folder = Path(root).expanduser()
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise CnnkitError(
            f"folder {str(root)!r} {what}; pass an ImageFolder laid out as DIR/<class>/*.png "
            "or DIR/train/<class>/*.png."
        )
    if channels not in (None, 1, 3):
        raise CnnkitError(f"channels must be 1 or 3, got {channels!r}.")
    classes, layout, files = _list_image_folder(folder)
    if channels is None:
        channels = _guess_channels([p for p, _ in next(iter(files.values()))[:64]])
    order = ("all", "train", "dev", "test")
    files = {s: files[s] for s in sorted(files, key=order.index)}
    counts = {s: dict.fromkeys(classes, 0) for s in files}
    bad_counts = {s: dict.fromkeys(classes, 0) for s in files}
    bad: list[BadFile] = []
    for split, found in files.items():
        for path, label in found:
            try:
                decode_image(path, channels, max_pixels=max_pixels)
            except ImageDecodeError as e:
                bad.append(BadFile(e.path, e.reason))
                bad_counts[split][classes[label]] += 1
            else:
                counts[split][classes[label]] += 1
    return FolderReport(
        root=str(root),
        classes=classes,
        folders={s: str(f) for s, f in layout.items()},
        counts=counts,
        bad_counts=bad_counts,
        bad=bad,
    )
