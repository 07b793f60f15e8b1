"""In-memory image datasets, the preprocessing that travels with the weights, and splits."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from cnnkit.data.images import BadFile
from cnnkit.errors import CnnkitError

__all__ = [
    "Data",
    "DataInfo",
    "ImageSet",
    "Preprocess",
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
    """How raw images become the model's input; saved with every checkpoint.

    Attributes:
        size: ``(n_H, n_W)`` the images are resized to (bilinear, antialiased).
        channels: ``n_C``: 1 (grey) or 3 (RGB).
        mean: Per-channel mean of the training images (in 0-1 units), subtracted.
        std: Per-channel standard deviation, divided by.
    """

    size: tuple[int, int]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for YAML/JSON."""
        return {
            "size": list(self.size),
            "channels": self.channels,
            "mean": [float(m) for m in self.mean],
            "std": [float(s) for s in self.std],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocess:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(d["size"]), int(d["channels"]), tuple(d["mean"]), tuple(d["std"]))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0-1 float) ``(N, n_C, n_H, n_W)`` -> float32 ``(x/255 - mean) / std``."""
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std

    def load_files(self, paths: Sequence[str | os.PathLike]) -> torch.Tensor:
        """Decode, resize and normalize image files into one batch.

        Args:
            paths: Image files.

        Returns:
            float32 ``(N, n_C, n_H, n_W)``.
        """
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

    Attributes:
        train: Training set.
        dev: Development (validation) set, for choosing models and early stopping.
        test: Test set, for the final unbiased estimate (None when the source has none).
        train_dev: Held out from train, same distribution, never trained on (optional).
        info: Classes, preprocessing, source.
    """

    train: ImageSet
    dev: ImageSet | None
    test: ImageSet | None
    info: DataInfo
    train_dev: ImageSet | None = None

    def splits(self) -> dict[str, ImageSet]:
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
