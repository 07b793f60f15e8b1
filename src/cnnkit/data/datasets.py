"""In-memory datasets (uint8 images; float 1D signals and 3D volumes), the preprocessing that
travels with the weights, and splits."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from cnnkit.data.images import BadFile
from cnnkit.errors import CnnkitError

__all__ = [
    "ArrayBatches",
    "ArraySet",
    "Data",
    "DataInfo",
    "ImageSet",
    "Preprocess",
    "array_stats",
    "channel_stats",
    "default_workers",
    "resize_uint8",
    "seed_worker",
    "stratified_split",
]


def resize_uint8(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a uint8 batch ``(N, n_C, n_H, n_W)`` to ``size`` with antialiased bilinear.

    Args:
        images: uint8 tensor.
        size: ``(n_H, n_W)`` wanted.

    Returns:
        uint8 tensor ``(N, n_C, *size)`` (the input itself when the size already matches).
    """
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    out = []
    for chunk in images.split(4096):
        f = F.interpolate(
            chunk.float(), size=size, mode="bilinear", antialias=True, align_corners=False
        )
        out.append(f.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out) if out else images.new_zeros((0, images.shape[1], *size))


@dataclass
class Preprocess:
    """How raw inputs become the model's input; saved with every checkpoint.

    Attributes:
        size: ``(n_H, n_W)`` the images are resized to (bilinear, antialiased); for 1D
            signals ``(n,)`` and for 3D volumes ``(n_D, n_H, n_W)``, the shape every
            example has (signals and volumes are never resampled).
        channels: ``n_C``: 1 (grey) or 3 (RGB) for images, any count for arrays.
        mean: Per-channel mean of the training inputs (images: in 0-1 units), subtracted.
        std: Per-channel standard deviation, divided by.
        dims: Spatial axes: 2 for images, 1 for signals, 3 for volumes.
    """

    size: tuple[int, ...]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dims: int = 2

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for YAML/JSON (``dims`` only for signals and volumes)."""
        d: dict[str, Any] = {
            "size": list(self.size),
            "channels": self.channels,
            "mean": [float(m) for m in self.mean],
            "std": [float(s) for s in self.std],
        }
        if self.dims != 2:
            d["dims"] = self.dims
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocess:
        """Inverse of :meth:`to_dict`."""
        return cls(
            tuple(d["size"]),
            int(d["channels"]),
            tuple(d["mean"]),
            tuple(d["std"]),
            int(d.get("dims", 2)),
        )

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (divided by 255) or float inputs ``(N, n_C, *spatial)`` ->
        float32 ``(x - mean) / std`` per channel."""
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        shape = (1, -1) + (1,) * (x.ndim - 2)  # per channel, broadcast over N and space
        mean = torch.tensor(self.mean, dtype=x.dtype).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype).view(shape)
        return (x - mean) / std

    def load_files(self, paths: Sequence[str | os.PathLike]) -> torch.Tensor:
        """Decode, resize and normalize image files (or read signal / volume files) into one batch.

        Args:
            paths: Image files; ``.npy`` / ``.csv`` files for a signal or volume model.

        Returns:
            float32 ``(N, n_C, n_H, n_W)`` (``(N, n_C, *size)`` for arrays).
        """
        if self.dims != 2:
            from cnnkit.data.signals import read_inputs

            return self.normalize(read_inputs(paths, self))
        from cnnkit.data.images import decode_image

        batch = []
        for p in paths:
            a = torch.from_numpy(decode_image(p, self.channels))  # (H, W, C)
            batch.append(resize_uint8(a.permute(2, 0, 1)[None], self.size))  # -> (1, C, H, W)
        return self.normalize(torch.cat(batch))


class ImageSet(Dataset):
    """Images held in memory as uint8 ``(N, n_C, n_H, n_W)`` with their labels.

    Labels are int64 class indices ``(N,)``, or, for multi-label data, float
    ``(N, L)`` with 1 / 0 per label and NaN where a label is missing.

    Indexing returns ``(normalized float image, label)`` like any torch Dataset; the
    trainer recognises an ImageSet and serves whole batches from memory instead.

    Args:
        images: uint8 tensor ``(N, n_C, n_H, n_W)``.
        labels: int64 ``(N,)`` class indices, or float ``(N, L)`` multi-label targets.
        preprocess: The normalization to apply.
        name: ``"train"``, ``"dev"``, ``"test"`` or ``"train_dev"``.
        ids: Optional identifiers (file paths or indices in the source), for error analysis.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        preprocess: Preprocess,
        name: str = "",
        ids: list[str] | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise CnnkitError(
                "ImageSet wants uint8 (N, C, H, W) images, got "
                f"{images.dtype} {tuple(images.shape)}."
            )
        if len(images) != len(labels):
            raise CnnkitError(f"{len(images)} images but {len(labels)} labels.")
        self.images = images
        self.labels = labels
        self.preprocess = preprocess
        self.name = name
        self.ids = ids

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.preprocess.normalize(self.images[i : i + 1])[0], self.labels[i]

    def subset(self, idx: np.ndarray, name: str) -> ImageSet:
        """The images at ``idx`` as a new set named ``name``."""
        t = torch.as_tensor(idx, dtype=torch.long)
        ids = [self.ids[i] for i in idx] if self.ids is not None else None
        return ImageSet(self.images[t], self.labels[t], self.preprocess, name, ids)


class ArraySet(Dataset):
    """1D signals or 3D volumes held in memory as float32 with their labels.

    The counterpart of :class:`ImageSet` for arrays that are not 8-bit pictures:
    ``x`` is float32 ``(N, n_C, n)`` (signals) or ``(N, n_C, n_D, n_H, n_W)``
    (volumes), as read from ``.npy`` / ``.csv`` files, unnormalized; labels are int64
    class indices ``(N,)``. Indexing returns ``(normalized x, label)``; the trainer
    recognises an ArraySet and serves whole batches from memory (:class:`ArrayBatches`).
    Image augmentation does not apply to it.

    Args:
        x: float32 ``(N, n_C, *spatial)`` with 1 or 3 spatial axes.
        labels: int64 ``(N,)`` class indices.
        preprocess: The normalization to apply (``preprocess.dims`` spatial axes).
        name: ``"train"``, ``"dev"``, ``"test"`` or ``"train_dev"``.
        ids: Optional identifiers (the files), for error analysis.
    """

    def __init__(
        self,
        x: torch.Tensor,
        labels: torch.Tensor,
        preprocess: Preprocess,
        name: str = "",
        ids: list[str] | None = None,
    ) -> None:
        if x.dtype != torch.float32 or x.ndim not in (3, 5):
            raise CnnkitError(
                "ArraySet wants float32 (N, C, n) signals or (N, C, D, H, W) volumes, got "
                f"{x.dtype} {tuple(x.shape)}."
            )
        if len(x) != len(labels):
            raise CnnkitError(f"{len(x)} arrays but {len(labels)} labels.")
        self.x = x
        self.labels = labels
        self.preprocess = preprocess
        self.name = name
        self.ids = ids

    @property
    def dims(self) -> int:
        """Spatial axes: 1 (signals) or 3 (volumes)."""
        return self.x.ndim - 2

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.preprocess.normalize(self.x[i : i + 1])[0], self.labels[i]

    def subset(self, idx: np.ndarray, name: str) -> ArraySet:
        """The examples at ``idx`` as a new set named ``name``."""
        t = torch.as_tensor(idx, dtype=torch.long)
        ids = [self.ids[i] for i in idx] if self.ids is not None else None
        return ArraySet(self.x[t], self.labels[t], self.preprocess, name, ids)

    def with_preprocess(self, preprocess: Preprocess) -> ArraySet:
        """The same examples, normalized with ``preprocess`` (e.g. a checkpoint's)."""
        return ArraySet(self.x, self.labels, preprocess, self.name, self.ids)


class ArrayBatches:
    """Batches straight from an :class:`ArraySet` in memory: no per-sample Python work.

    The same ``epoch(epoch, start, generator)`` interface as
    :class:`~cnnkit.data.augment.TensorBatches` (seeded order, resume mid-epoch, a share
    per process), without augmentation.

    Args:
        data: The arrays.
        batch: Batch size (the global mini-batch of all processes).
        shuffle: Shuffle each epoch (train) or keep the order (evaluation).
        seed: Seed of the order.
        rank: With several processes: this one.
        world_size: Number of processes.
    """

    def __init__(
        self,
        data: ArraySet,
        batch: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.data = data
        self.batch = int(batch)
        self.shuffle, self.seed = shuffle, seed
        self.rank, self.world_size = rank, world_size
        p = data.preprocess
        shape = (1, -1) + (1,) * data.dims  # per channel: (1, n_C, 1[, 1, 1])
        self._mean = torch.tensor(p.mean, dtype=torch.float32).view(shape)
        self._inv_std = 1.0 / torch.tensor(p.std, dtype=torch.float32).view(shape)

    def __len__(self) -> int:
        return math.ceil(len(self.data) / self.batch)

    def epoch(
        self, epoch: int = 0, start: int = 0, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` batches of one epoch, from batch ``start`` on.

        Args:
            epoch: Epoch index (fixes the order).
            start: Batches to skip (already trained on before a resume).
            generator: Unused (no augmentation); accepted for the common interface.

        Yields:
            Normalized float32 ``(B, n_C, *spatial)`` inputs and their labels.
        """
        from cnnkit.data.augment import epoch_order, shard_batch

        order = epoch_order(len(self.data), self.seed, epoch, self.shuffle)
        x, labels = self.data.x, self.data.labels
        for b in range(start, len(self)):
            idx = shard_batch(
                order[b * self.batch : (b + 1) * self.batch], self.rank, self.world_size
            )
            yield (x[idx] - self._mean).mul_(self._inv_std), labels[idx]


@dataclass
class DataInfo:
    """What a loaded dataset is: its source, classes and preprocessing.

    Attributes:
        name: ``"digits"``, ``"mnist"``, ... or the folder.
        classes: Class names, index order.
        preprocess: Size, channels and train-set mean/std.
        native_size: ``(n_H, n_W)`` of the source images (before resizing).
        source: Where the files came from.
        skipped: Files left out with ``on_error=skip``, each a
            :class:`~cnnkit.data.images.BadFile` ``(path, reason)``.
        splits_from: How each split was obtained (``"source"`` or ``"carved from train"``).
        multilabel: True for a multi-label source (a CSV manifest): ``classes`` are then
            the label names, and labels are float ``(N, L)`` (1, 0, NaN for missing).
    """

    name: str
    classes: list[str]
    preprocess: Preprocess
    native_size: tuple[int, int]
    source: str = ""
    skipped: list[BadFile] = field(default_factory=list)
    splits_from: dict[str, str] = field(default_factory=dict)
    multilabel: bool = False

    @property
    def num_classes(self) -> int:
        """Number of classes (of labels, for multi-label data)."""
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for YAML/JSON."""
        d = asdict(self)
        d["preprocess"] = self.preprocess.to_dict()
        d["native_size"] = list(self.native_size)
        return d


@dataclass
class Data:
    """The splits of a dataset and what they are.

    Image sources give :class:`ImageSet` splits; folders of ``.npy`` / ``.csv`` signals
    or volumes give :class:`ArraySet` splits.

    Attributes:
        train: Training set.
        dev: Development (validation) set, for choosing models and early stopping.
        test: Test set, for the final unbiased estimate (None when the source has none).
        train_dev: Held out from train, same distribution, never trained on (optional).
        info: Classes, preprocessing, source.
    """

    train: ImageSet | ArraySet
    dev: ImageSet | ArraySet | None
    test: ImageSet | ArraySet | None
    info: DataInfo
    train_dev: ImageSet | ArraySet | None = None

    def splits(self) -> dict[str, ImageSet | ArraySet]:
        """The non-empty splits by name."""
        out = {"train": self.train, "train_dev": self.train_dev, "dev": self.dev, "test": self.test}
        return {k: v for k, v in out.items() if v is not None}


def _count(frac: float | int, n: int, what: str) -> int:
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or frac < 0:
        raise CnnkitError(
            f"{what} must be a fraction in [0, 1) or a count of images, got {frac!r}."
        )
    if isinstance(frac, float) and frac < 1:
        return round(frac * n)
    if float(frac) != int(frac):
        raise CnnkitError(f"{what} must be a fraction in [0, 1) or a whole count, got {frac!r}.")
    return int(frac)


def stratified_split(
    labels: np.ndarray, sizes: Mapping[str, float | int], seed: int = 0
) -> dict[str, np.ndarray]:
    """Split indices by class so every split keeps the class proportions.

    Args:
        labels: Class index per example.
        sizes: Split name -> fraction of all examples (``0.1``) or a count (``500``);
            what is left goes to ``"rest"``.
        seed: Seed of the shuffle (the same seed gives the same split).

    Returns:
        Split name -> sorted indices, plus ``"rest"``.
    """
    labels = np.asarray(labels)
    n = len(labels)
    want = {k: _count(v, n, k) for k, v in sizes.items()}
    fractions = [v for v in sizes.values() if isinstance(v, float) and v < 1]
    if sum(want.values()) >= n or sum(fractions) >= 1:
        raise CnnkitError(
            f"the splits {dict(sizes)} take all {n} examples and leave none to train on; "
            "use smaller fractions."
        )
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    # per split: every class gets the floor of its exact share, then the remainders go
    # to the classes with the largest fractional parts, so each split has its exact size
    left = counts.copy()
    take: dict[str, np.ndarray] = {}
    for k, m in want.items():
        exact = m * counts / n
        base = np.minimum(np.floor(exact).astype(np.int64), left)
        extra = m - int(base.sum())
        order = np.argsort(-(exact - np.floor(exact)), kind="stable")
        for c in order:
            if extra <= 0:
                break
            if base[c] < left[c]:
                base[c] += 1
                extra -= 1
        take[k] = base
        left = left - base
    out: dict[str, list[np.ndarray]] = {k: [] for k in [*want, "rest"]}
    for ci, c in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        start = 0
        for k in want:
            out[k].append(idx[start : start + take[k][ci]])
            start += take[k][ci]
        out["rest"].append(idx[start:])
    return {k: np.sort(np.concatenate(v)) if v else np.zeros(0, np.int64) for k, v in out.items()}


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images, in 0-1 units.

    Args:
        images: uint8 ``(N, n_C, n_H, n_W)``.

    Returns:
        ``(mean, std)`` tuples of length ``n_C``.
    """
    n_C = images.shape[1]
    s = torch.zeros(n_C, dtype=torch.float64)
    s2 = torch.zeros(n_C, dtype=torch.float64)
    count = 0
    for chunk in images.split(8192):
        f = chunk.double().div_(255.0)
        s += f.sum(dim=(0, 2, 3))
        s2 += (f * f).sum(dim=(0, 2, 3))
        count += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
    mean = s / max(count, 1)
    std = (s2 / max(count, 1) - mean**2).clamp_min(1e-12).sqrt().clamp_min(1e-3)
    return tuple(round(float(m), 6) for m in mean), tuple(round(float(v), 6) for v in std)


def array_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of float signals or volumes.

    Args:
        x: float ``(N, n_C, *spatial)``.

    Returns:
        ``(mean, std)`` tuples of length ``n_C`` (a constant channel gets std 1, so
        normalizing it only centres it).
    """
    n_C = x.shape[1]
    s = torch.zeros(n_C, dtype=torch.float64)
    s2 = torch.zeros(n_C, dtype=torch.float64)
    count = 0
    for chunk in x.split(4096):
        f = chunk.double().transpose(0, 1).reshape(n_C, -1)  # (N, C, *S) -> (C, N*prod(S))
        s += f.sum(dim=1)
        s2 += (f * f).sum(dim=1)
        count += f.shape[1]
    mean = s / max(count, 1)
    var = (s2 / max(count, 1) - mean**2).clamp_min(0.0)
    std = torch.where(var > 1e-12, var.sqrt(), torch.ones_like(var))
    return tuple(float(m) for m in mean), tuple(float(v) for v in std)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` from the worker's torch seed.

    Args:
        worker_id: Given by the DataLoader.
    """
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def default_workers() -> int:
    """DataLoader workers for this machine: one per spare core, at most 8."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, n - 1))
