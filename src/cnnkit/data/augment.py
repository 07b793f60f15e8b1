"""Batched augmentation on in-memory tensors, and the batch iterator the trainer uses.

torchvision's ``transforms.v2.RandomAffine`` draws one set of parameters per call, so
a whole batch would get the same rotation; calling it per image costs a Python loop
per sample. Here each image in a batch gets its own rotation, shift, scale and
mirror from one ``affine_grid`` + ``grid_sample`` call, with a dedicated
``torch.Generator`` whose state is saved in checkpoints (so a resumed run draws the
same augmentations it would have drawn).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cnnkit.data.datasets import ImageSet
from cnnkit.errors import CnnkitError

__all__ = ["Augment", "TensorBatches", "epoch_order", "shard_batch"]


@dataclass(frozen=True)
class Augment:
    """Random geometric augmentation, drawn independently for every image.

    Attributes:
        degrees: Rotation drawn from ``[-degrees, degrees]``.
        translate: Shift drawn from ``[-translate, translate]`` of the width / height.
        scale: Zoom drawn from ``[1 - scale, 1 + scale]``.
        fliplr: Probability of a left-right mirror (0 for digits and text).
    """

    degrees: float = 0.0
    translate: float = 0.0
    scale: float = 0.0
    fliplr: float = 0.0

    def __post_init__(self) -> None:
        for k in ("degrees", "translate", "scale", "fliplr"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise CnnkitError(f"{k} must be a number >= 0, got {v!r}.")
        if self.translate > 1 or self.scale >= 1 or self.fliplr > 1:
            raise CnnkitError("translate and fliplr must be <= 1 and scale < 1.")

    @property
    def active(self) -> bool:
        """Whether any transform is switched on."""
        return any((self.degrees, self.translate, self.scale, self.fliplr))

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a float batch ``(N, n_C, n_H, n_W)``; borders are filled with 0.

        Args:
            x: Images (float, before normalization).
            generator: Source of randomness (its state is part of the checkpoint).

        Returns:
            The augmented batch, same shape.
        """
        if not self.active:
            return x
        n = x.shape[0]
        u = torch.rand(n, 5, generator=generator) * 2 - 1  # (N, 5) in [-1, 1)
        angle = u[:, 0] * (self.degrees * math.pi / 180)
        zoom = 1 + u[:, 1] * self.scale
        flip = torch.where(u[:, 2] * 0.5 + 0.5 < self.fliplr, -1.0, 1.0)
        tx, ty = u[:, 3] * self.translate * 2, u[:, 4] * self.translate * 2  # grid units span 2
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        n_H, n_W = x.shape[-2:]
        r = n_H / n_W  # a rotation in pixels, written in affine_grid's [-1, 1] coordinates
        theta = torch.stack(
            [torch.stack([cos * flip, -sin * r, tx], 1), torch.stack([sin / r * flip, cos, ty], 1)],
            1,
        )  # (N, 2, 3): output -> input sampling coordinates
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """The order of the examples in one epoch: a permutation fixed by ``(seed, epoch)``.

    Deriving it from the epoch (instead of a running generator) lets a resumed run
    rebuild any epoch's order, and skip the batches it already trained on.

    Args:
        n: Number of examples.
        seed: Run seed.
        epoch: Epoch index (0-based).
        shuffle: False gives ``0..n-1``.

    Returns:
        int64 indices ``(n,)``.
    """
    if not shuffle:
        return torch.arange(n)
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch)) % (2**63))
    return torch.randperm(n, generator=g)


def shard_batch(idx: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Process ``rank``'s part of a global mini-batch: examples ``rank, rank + N, rank + 2N, ...``.

    Over an epoch every process sees a disjoint part of the same seeded permutation (what
    ``DistributedSampler`` with ``set_epoch`` gives), and together the processes train on
    exactly the mini-batches one process would, with no padding by repeated examples. A
    part that would be empty (a last batch with fewer examples than processes) holds the
    batch's first example instead; the trainer weights it 0.

    Args:
        idx: Indices of the global mini-batch.
        rank: This process (0-based).
        world_size: Number of processes.

    Returns:
        The indices process ``rank`` trains on (``idx`` itself for one process).
    """
    if world_size == 1:
        return idx
    part = idx[rank::world_size]
    return part if len(part) else idx[:1]


class TensorBatches:
    """Batches straight from an :class:`ImageSet` in memory: no per-sample Python work.

    Args:
        data: The images.
        batch: Batch size.
        shuffle: Shuffle each epoch (train) or keep the order (evaluation).
        seed: Seed of the order.
        augment: Augmentation for training, or None.
        drop_last: Drop a last, smaller batch.
        rank: With several processes: this one (each takes its :func:`shard_batch`).
        world_size: Number of processes; ``batch`` is the global mini-batch of all of them.
    """

    def __init__(
        self,
        data: ImageSet,
        batch: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        augment: Augment | None = None,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.data = data
        self.rank, self.world_size = rank, world_size
        self.batch = int(batch)
        self.shuffle = shuffle
        self.seed = seed
        self.augment = augment if augment is not None and augment.active else None
        self.drop_last = drop_last and len(data) > self.batch
        p = data.preprocess
        self._mean = torch.tensor(p.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self._inv_std = 1.0 / torch.tensor(p.std, dtype=torch.float32).view(1, -1, 1, 1)

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch if self.drop_last else math.ceil(n / self.batch)

    def epoch(
        self, epoch: int = 0, start: int = 0, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` batches of one epoch, from batch ``start`` on.

        Args:
            epoch: Epoch index (fixes the order).
            start: Batches to skip (already trained on before a resume).
            generator: Augmentation randomness.

        Yields:
            Normalized float32 ``(B, n_C, n_H, n_W)`` images and their labels.
        """
        order = epoch_order(len(self.data), self.seed, epoch, self.shuffle)
        images, labels = self.data.images, self.data.labels
        for b in range(start, len(self)):
            idx = shard_batch(
                order[b * self.batch : (b + 1) * self.batch], self.rank, self.world_size
            )
            x = images[idx].float().mul_(1.0 / 255.0)
            if self.augment is not None:
                x = self.augment(x, generator if generator is not None else torch.default_generator)
            yield x.sub_(self._mean).mul_(self._inv_std), labels[idx]
