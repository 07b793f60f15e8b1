"""The faces job: train an embedding with the triplet loss, calibrate, and recognise.

``cnnkit faces train data=DIR`` reads one folder per identity, splits the *identities*
(never images of one person) into train / dev / test, trains an
:class:`~cnnkit.faces.model.EmbeddingNet` with :func:`cnnkit.train.fit` (the one
trainer: checkpoints, resume, progress) on P x K batches (P persons, K images each)
with mined triplets (``loss=triplet``) or as the course's Siamese binary classifier of
every pair of the batch (``loss=binary``, :class:`PairTask`), then:

1. calibrates the verification threshold on pairs of the *dev* identities
   (:mod:`cnnkit.faces.verify`), and draws their ROC (``roc.png``);
2. measures, on the *test* identities (never seen in training or calibration):
   verification on pairs at that threshold, and one-shot identification: half of the
   test persons are enrolled with ONE image each, their other images must be
   recognised (top-1, and top-1 *at the threshold*: right and accepted), and the
   images of the other half (unknown persons) must be rejected ("not recognised").

The numbers go to ``summary.txt`` and ``faces.json`` in the run folder, the threshold
to ``calibration.json`` (``cnnkit faces calibrate`` refits it on other pairs). The
weights' metadata carries the preprocessing and the distance; their fingerprint (a
SHA-256 of the tensors) is the model identity a recognition database
(:mod:`cnnkit.faces.db`) checks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.faces.data import (
    FaceSet,
    PKGroups,
    load_images,
    read_faces,
    sample_pairs,
    split_identities,
)
from cnnkit.faces.losses import (
    MINERS,
    SiameseHead,
    mine_triplets,
    pairwise_sq_distances,
    triplet_loss,
)
from cnnkit.faces.model import build_embedder
from cnnkit.faces.verify import (
    METHODS,
    METRICS,
    Calibration,
    calibrate,
    distance_matrix,
    open_set_threshold,
    pair_distances,
    plot_roc,
)
from cnnkit.train.classify import saved_files
from cnnkit.train.tasks import Task

__all__ = [
    "Encoder",
    "FacesConfig",
    "FacesRun",
    "GalleryScores",
    "OneShotScores",
    "PairTask",
    "TripletTask",
    "distances_of",
    "evaluate_one_shot",
    "load_encoder",
    "one_shot_by_size",
    "pairs_of",
    "train",
]


#: Training losses of ``cnnkit faces train``.
LOSSES = ("triplet", "binary")


@dataclass
class FacesConfig:
    """Every setting of a faces run.

    Attributes:
        data: A folder with one sub-folder of images per identity (``root/<person>/*.jpg``).
        size: Images are resized to ``size x size``.
        channels: 3 (RGB) or 1 (grey).
        backbone: ``small`` (a CPU-sized ConvNet) or a zoo model (``resnet18``, ...).
        width: The small backbone's first filters.
        dim: Encoding size ``d``.
        flip: Encode each image and its mirror image and average the two (then
            normalise): test-time augmentation matching training's random flips; stored
            with the weights, so enrolling and querying do the same.
        loss: ``triplet`` (the triplet loss on mined triplets) or ``binary`` (the
            Siamese alternative: a logistic unit on ``phi(f(x_i), f(x_j))`` says whether
            a pair is one person; every pair of the batch, the two kinds weighted
            equally; ``mining`` and ``alpha`` are then unused).
        siamese: For ``loss=binary``: ``phi`` is ``l1`` (``|f_i - f_j|``) or ``chi2``
            (``(f_i - f_j)^2 / (f_i + f_j)``).
        mining: Triplets per batch: ``semi_hard`` (FaceNet), ``batch_hard``, ``random``.
        alpha: The triplet loss margin. 0.5 rather than the course's 0.2: on unit
            vectors squared distances run from 0 to 4, and with 0.2 nearly every mined
            triplet is satisfied early (0.1% still active) while the rare look-alikes
            that a strict identification threshold must keep out are not pushed away
            (measured in ``benchmarks/RESULTS.md``).
        persons: ``P``, persons per batch.
        per_person: ``K``, images of each person per batch.
        epochs: Passes over the training identities (each pass: every identity once,
            with ``K`` of its images).
        lr: AdamW's learning rate (cosine decay after warmup).
        weight_decay: AdamW's decay.
        dev: Share of the identities held out for calibration (and the dev loss).
        test: Share held out for the final measurements.
        metric: ``euclidean`` or ``cosine`` distance.
        calibrate: Threshold rule: ``eer``, ``far`` (``target_far``) or ``accuracy``.
        target_far: The largest false-accept rate for ``calibrate=far``.
        pairs: Pairs drawn for calibration and test rates when a split has more than
            3,000 images (smaller splits use every pair).
        seed: Seed of the split, weights, order and augmentation.
        workers: DataLoader workers (None: one per spare core).
        project: Folder of runs (``project/faces/name``).
        name: Run name (None: ``train``, ``train2``, ...).
        verbose: 0 silent, 1 progress bar, 2 one line per epoch.
    """

    data: str = ""
    size: int = 64
    channels: int = 3
    backbone: str = "small"
    width: int = 16
    dim: int = 128
    flip: bool = True
    loss: str = "triplet"
    siamese: str = "l1"
    mining: str = "semi_hard"
    alpha: float = 0.5
    persons: int = 16
    per_person: int = 4
    epochs: int = 60
    lr: float = 2e-3
    weight_decay: float = 5e-4
    dev: float = 0.2
    test: float = 0.2
    metric: str = "euclidean"
    calibrate: str = "eer"
    target_far: float = 0.01
    pairs: int = 2000
    seed: int = 0
    workers: int | None = None
    project: str = "runs"
    name: str | None = None
    verbose: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    _POSITIVE: ClassVar[tuple[str, ...]] = (
        "size",
        "width",
        "dim",
        "persons",
        "epochs",
        "pairs",
    )

    def validate(self) -> None:
        """Check every setting; one sentence per mistake.

        Raises:
            CnnkitError: On a bad value.
        """
        if not self.data or not isinstance(self.data, str):
            raise CnnkitError("faces train needs data=DIR (one sub-folder of images per person).")
        for k in self._POSITIVE:
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise CnnkitError(f"{k} must be a positive integer, got {v!r}.")
        k = self.per_person
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise CnnkitError(
                f"per_person must be an integer >= 2 (a triplet needs two images of one "
                f"person), got {k!r}; e.g. per_person=4."
            )
        if self.persons < 2:
            raise CnnkitError(
                f"persons must be >= 2 (a triplet needs another person), got {self.persons}."
            )
        if not isinstance(self.flip, bool):
            raise CnnkitError(f"flip must be true or false, got {self.flip!r}.")
        if self.channels not in (1, 3):
            raise CnnkitError(f"channels must be 1 or 3, got {self.channels!r}.")
        if self.loss not in LOSSES:
            raise unknown_name("loss", str(self.loss), LOSSES)
        if self.siamese not in ("l1", "chi2"):
            raise unknown_name("siamese", str(self.siamese), ["l1", "chi2"])
        if self.mining not in MINERS:
            raise unknown_name("mining", str(self.mining), MINERS)
        if self.metric not in METRICS:
            raise unknown_name("metric", str(self.metric), METRICS)
        if self.calibrate not in METHODS:
            raise unknown_name("calibrate", str(self.calibrate), METHODS)
        if self.backbone != "small":
            from cnnkit.models import list_models

            if self.backbone not in list_models():
                raise unknown_name("backbone", str(self.backbone), ["small", *list_models()])
        for k2, lo, hi in (("dev", 0, 1), ("test", 0, 1), ("target_far", 0, 1)):
            v = getattr(self, k2)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo < v < hi:
                raise CnnkitError(f"{k2} must be between 0 and 1 (exclusive), got {v!r}.")
        if self.dev + self.test >= 1:
            raise CnnkitError(
                f"dev + test = {self.dev + self.test:g} leaves no identities to train on; "
                "e.g. dev=0.2 test=0.2."
            )
        for k2 in ("alpha", "lr", "weight_decay"):
            v = getattr(self, k2)
            bad = isinstance(v, bool) or not isinstance(v, (int, float))
            if bad or v < 0 or (k2 == "lr" and v == 0):
                raise CnnkitError(
                    f"{k2} must be a number {'>' if k2 == 'lr' else '>='} 0, got {v!r}."
                )


class _GroupsTask(Task):
    """A task on P x K batches: ``x (P, K, n_C, n_H, n_W)`` encoded as ``P*K`` images."""

    def forward(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Encodings of the batch's ``P*K`` images, ``(P*K, d)``."""
        return net(x.flatten(0, 1))  # (P, K, n_C, n_H, n_W) -> (P*K, n_C, n_H, n_W)

    def eval_forward(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """As :meth:`forward`, in eval mode."""
        return self.forward(net, x, y)


class TripletTask(_GroupsTask):
    """The trainer's view of triplet training on P x K batches.

    A batch arrives as ``x (P, K, n_C, n_H, n_W)`` and ``y (P, K)``; :meth:`forward`
    encodes the ``P*K`` images. The training loss is the course's triplet loss over the
    triplets chosen by ``mining``, averaged over them (so the learning rate does not
    depend on how many are found). The dev loss uses *every* valid triplet of the batch
    (the same yardstick whatever the miner), and ``active`` is the share of those
    triplets still inside the margin (``d_ap - d_an + alpha > 0``).

    Args:
        mining: ``semi_hard``, ``batch_hard`` or ``random``.
        alpha: The margin.
        per_person: ``K`` (the trainer reports images per second).
    """

    metric_names = ("active",)
    higher_is_better: ClassVar[dict[str, bool]] = {"loss": False, "active": False}
    n_sums = 4  # loss * n, n, active triplets, triplets

    def __init__(self, mining: str = "semi_hard", alpha: float = 0.2, per_person: int = 1) -> None:
        self.mining, self.alpha = mining, alpha
        self.images_per_example = per_person  # the trainer's speed counts images, not groups

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean triplet loss over the mined triplets (0 when the batch has none)."""
        labels = targets.reshape(-1)  # (P, K) -> (P*K,)
        a, p, n = mine_triplets(outputs, labels, self.mining)
        if not len(a):
            return outputs.sum() * 0
        return triplet_loss(outputs[a], outputs[p], outputs[n], self.alpha, reduction="mean")

    def _all_triplets(self, outputs: torch.Tensor, targets: torch.Tensor):
        """Hinge terms of every valid triplet, as a ``(pairs, P*K)`` matrix and its mask.

        Row ``r`` is an anchor-positive pair ``(a, p)``, column ``n`` a candidate
        negative: ``max(D[a, p] - D[a, n] + alpha, 0)``, valid where ``n`` is another
        person. Built from the distance matrix, never from ``P*K`` cubed gathers.
        """
        labels = targets.reshape(-1)  # (P, K) -> (P*K,)
        D = pairwise_sq_distances(outputs)  # (P*K, P*K)
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        a, p = (same & ~eye).nonzero(as_tuple=True)
        terms = torch.clamp(D[a, p][:, None] - D[a] + self.alpha, min=0)  # (T, P*K)
        return terms, ~same[a]

    def eval_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean triplet loss over every valid triplet of the batch."""
        terms, valid = self._all_triplets(outputs, targets)
        if not valid.any():
            return outputs.sum() * 0
        return terms[valid].mean()

    def count(
        self, sums: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor
    ) -> None:
        """Add ``loss * P``, ``P``, the active triplets and all triplets of the batch."""
        n = targets.shape[0]
        with torch.no_grad():
            terms, valid = self._all_triplets(outputs, targets)
        sums[0] += loss.double() * n
        sums[1] += n
        sums[2] += int(((terms > 0) & valid).sum())
        sums[3] += int(valid.sum())

    def summarize(self, sums: torch.Tensor) -> dict[str, float]:
        """``{"loss", "active"}``."""
        loss_n, n, active, total = sums.tolist()
        return {
            "loss": loss_n / n if n else float("nan"),
            "active": active / total if total else float("nan"),
        }


class PairTask(_GroupsTask):
    """The trainer's view of the Siamese binary alternative on P x K batches.

    Every pair ``(i, j)``, ``i < j``, of the batch's ``P*K`` encodings is classified by
    ``head`` (a :class:`~cnnkit.faces.losses.SiameseHead`: ``yhat = sigmoid(sum_k w_k
    phi_k + b)``) as one person or two. A batch has far more pairs of two persons
    (``P*K*(P-1)*K/2``) than of one (``P*K*(K-1)/2``), so the loss is the mean logistic
    loss of the same-person pairs and that of the different-person pairs, averaged.
    ``pair_error`` is the balanced error at ``yhat = 0.5``: (false rejects + false
    accepts) / 2.

    Args:
        head: The Siamese head (a sub-module of the trained network, so the trainer
            updates and saves its ``w_k`` and ``b``).
        per_person: ``K``.
    """

    metric_names = ("pair_error",)
    higher_is_better: ClassVar[dict[str, bool]] = {"loss": False, "pair_error": False}
    n_sums = 4  # loss * n, n, balanced error * n, n

    def __init__(self, head: SiameseHead, per_person: int = 1) -> None:
        self.head = head
        self.images_per_example = per_person

    def pairs(self, outputs: torch.Tensor, targets: torch.Tensor):
        """Logits and same-person flags of every pair of the batch, each ``(n(n-1)/2,)``."""
        labels = targets.reshape(-1)  # (P, K) -> (P*K,)
        i, j = torch.triu_indices(len(labels), len(labels), 1, device=labels.device)
        return self.head(outputs[i], outputs[j]), labels[i] == labels[j]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Balanced logistic loss: mean over same pairs and over different pairs, averaged."""
        logits, same = self.pairs(outputs, targets)
        bce = nn.functional.binary_cross_entropy_with_logits(logits, same.float(), reduction="none")
        parts = [bce[m].mean() for m in (same, ~same) if m.any()]
        return torch.stack(parts).mean() if parts else outputs.sum() * 0

    def count(
        self, sums: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor
    ) -> None:
        """Add ``loss * P``, ``P``, the balanced error times ``P``, and ``P``."""
        n = targets.shape[0]
        with torch.no_grad():
            logits, same = self.pairs(outputs, targets)
            rates = [((logits > 0) != same)[m].float().mean() for m in (same, ~same) if m.any()]
        sums[0] += loss.double() * n
        sums[1] += n
        if rates:
            sums[2] += float(torch.stack(rates).mean()) * n
            sums[3] += n

    def summarize(self, sums: torch.Tensor) -> dict[str, float]:
        """``{"loss", "pair_error"}``."""
        loss_n, n, err_n, m = sums.tolist()
        return {
            "loss": loss_n / n if n else float("nan"),
            "pair_error": err_n / m if m else float("nan"),
        }


class Encoder:
    """Images to encodings with a trained network, counting every image it encodes.

    With ``meta["flip"]`` an image's encoding is ``normalise(f(x) + f(mirror(x)))``.

    Args:
        model: The :class:`~cnnkit.faces.model.EmbeddingNet`.
        meta: Its weights' metadata (``preprocess``, ``metric``, ``model_id``, ``flip``).
    """

    def __init__(self, model: nn.Module, meta: dict[str, Any]) -> None:
        self.model, self.meta = model.eval(), meta
        pre = meta["preprocess"]
        self.size, self.channels = int(pre["size"][0]), int(pre["channels"])
        self.mean = torch.tensor(pre["mean"]).view(1, -1, 1, 1)
        self.std = torch.tensor(pre["std"]).view(1, -1, 1, 1)
        self.flip = bool(meta.get("flip", False))
        self.count = 0  # images encoded so far

    @property
    def dim(self) -> int:
        """Encoding size."""
        return int(self.meta["dim"])

    def __call__(self, images: torch.Tensor, batch: int = 256) -> np.ndarray:
        """Encodings of uint8 ``(N, n_C, size, size)`` images, float32 ``(N, d)``."""
        out = []
        with torch.no_grad():
            for k in range(0, len(images), batch):
                x = (images[k : k + batch].float() / 255 - self.mean) / self.std
                if self.flip:
                    z = self.model(torch.cat([x, x.flip(-1)]))  # (2B, d): images, mirrors
                    z = torch.nn.functional.normalize(z[: len(x)] + z[len(x) :], dim=1)
                else:
                    z = self.model(x)
                out.append(z.numpy().astype(np.float32))
        self.count += len(images)
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def files(self, files: Sequence[Path]) -> np.ndarray:
        """Encodings of image files (decoded and resized as in training)."""
        return self(load_images(files, self.size, self.channels))


@dataclass
class OneShotScores:
    """One-shot identification on persons the network never saw.

    Attributes:
        enrolled: Persons enrolled, each from ONE image.
        queries: Other images of enrolled persons.
        top1: Share of queries whose nearest enrolled person is right.
        top1_at_threshold: Share right AND within the threshold (recognised correctly).
        unknown_persons: Persons not enrolled.
        unknown_queries: Their images.
        unknown_rejected: Share of those answered "not recognised".
        pair_far: False-accept rate on test pairs at the threshold.
        pair_frr: False-reject rate on test pairs.
        pair_accuracy: Verification accuracy on test pairs.
        threshold: The 1:1 (verification) threshold.
        id_threshold: The identification threshold for ``enrolled`` persons
            (:func:`~cnnkit.faces.verify.open_set_threshold`).
        target_far: The strangers' acceptance rate it aims at.
        pairs_same: Same-person test pairs.
        pairs_diff: Different-person test pairs.
    """

    enrolled: int
    queries: int
    top1: float
    top1_at_threshold: float
    unknown_persons: int
    unknown_queries: int
    unknown_rejected: float
    pair_far: float
    pair_frr: float
    pair_accuracy: float
    threshold: float = float("nan")
    id_threshold: float = float("nan")
    target_far: float = float("nan")
    pairs_same: int = 0
    pairs_diff: int = 0

    def table(self) -> str:
        """The scores as text."""
        return "\n".join(
            [
                f"one-shot identification: {self.enrolled} persons enrolled from 1 image each, "
                f"{self.queries} queries",
                f"  top-1 accuracy {self.top1:.2%}; at the identification threshold "
                f"{self.id_threshold:.4f} (right and accepted) {self.top1_at_threshold:.2%}",
                f"  unknown persons: {self.unknown_persons}, {self.unknown_queries} images, "
                f"{self.unknown_rejected:.2%} rejected (target: at most "
                f"{self.target_far:.2%} let in)",
                f"verification on {self.pairs_same} same / {self.pairs_diff} different test "
                f"pairs at {self.threshold:.4f}: FAR {self.pair_far:.2%}, FRR "
                f"{self.pair_frr:.2%}, accuracy {self.pair_accuracy:.2%}",
            ]
        )


def _identify(
    enc: np.ndarray, labels: np.ndarray, gallery: np.ndarray, metric: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-shot identification against ``gallery``, one image per enrolled person.

    Args:
        enc: ``(N, d)`` encodings.
        labels: ``(N,)`` persons.
        gallery: Indices of the enrolled images (one per person).
        metric: ``euclidean`` or ``cosine``.

    Returns:
        ``(right, d_query, d_stranger)``: for each query (an enrolled person's other
        images), whether its nearest enrolled image is that person's and the distance to
        it; for each stranger image (persons not enrolled), its distance to the nearest
        enrolled image.
    """
    is_gallery = np.zeros(len(labels), bool)
    is_gallery[gallery] = True
    enrolled = np.isin(labels, labels[gallery])
    q = np.nonzero(enrolled & ~is_gallery)[0]
    u = np.nonzero(~enrolled)[0]
    dq = distance_matrix(enc[q], enc[gallery], metric)  # (queries, enrolled)
    du = distance_matrix(enc[u], enc[gallery], metric)  # (strangers, enrolled)
    return labels[gallery][dq.argmin(1)] == labels[q], dq.min(1), du.min(1)


def evaluate_one_shot(
    enc: np.ndarray,
    faces: FaceSet,
    cal: Calibration,
    metric: str = "euclidean",
    pairs: int = 2000,
    seed: int = 0,
) -> OneShotScores:
    """One-shot identification and open-set rejection on held-out identities.

    The persons are split in two halves (sorted names, even / odd positions): the first
    is enrolled with each person's first image; the rest of their images are the
    queries; the second half are unknown persons, whose images should be rejected.
    Identification uses :func:`~cnnkit.faces.verify.open_set_threshold` for that many
    enrolled persons; verification rates use the 1:1 threshold on test pairs.

    Args:
        enc: ``(N, d)`` encodings of ``faces``' images.
        faces: The held-out identities.
        cal: The calibration (from other identities).
        metric: ``euclidean`` or ``cosine``.
        pairs: Test pairs when the set is too large for all of them.
        seed: Seed of those pairs.

    Returns:
        :class:`OneShotScores`.
    """
    labels = faces.labels.numpy()
    persons = sorted(set(labels.tolist()))
    known, unknown = persons[0::2], persons[1::2]
    gallery = np.array([int(np.nonzero(labels == p)[0][0]) for p in known])
    right, dq, du = _identify(enc, labels, gallery, metric)
    q, u = len(right), len(du)
    threshold = cal.threshold
    t_id = open_set_threshold(cal, len(known))
    i, j, same = pairs_of(faces, pairs, seed=seed)
    dp = distances_of(enc, i, j, metric)
    acc = same & (dp <= threshold) | ~same & (dp > threshold)
    return OneShotScores(
        enrolled=len(known),
        queries=q,
        top1=float(right.mean()) if q else float("nan"),
        top1_at_threshold=float((right & (dq <= t_id)).mean()) if q else float("nan"),
        unknown_persons=len(unknown),
        unknown_queries=u,
        unknown_rejected=float((du > t_id).mean()) if u else float("nan"),
        pair_far=float((dp[~same] <= threshold).mean()),
        pair_frr=float((dp[same] > threshold).mean()),
        pair_accuracy=float(acc.mean()),
        threshold=threshold,
        id_threshold=t_id,
        target_far=cal.target_far,
        pairs_same=int(same.sum()),
        pairs_diff=int((~same).sum()),
    )


#: Database sizes :func:`one_shot_by_size` measures (those below the persons held out).
GALLERY_SIZES = (10, 30, 100)


@dataclass
class GalleryScores:
    """One-shot identification with databases of one size, averaged over random draws.

    Attributes:
        enrolled: Persons in each database, each enrolled from ONE random image.
        draws: Databases drawn.
        threshold: The identification threshold for that size.
        top1: Share of the enrolled persons' other images whose nearest person is right.
        top1_at_threshold: Share right AND within the threshold.
        unknown_rejected: Share of the other persons' images answered "not recognised".
    """

    enrolled: int
    draws: int
    threshold: float
    top1: float
    top1_at_threshold: float
    unknown_rejected: float

    def line(self) -> str:
        """One line of the summary."""
        return (
            f"  {self.enrolled:>4} enrolled (threshold {self.threshold:.4f}, {self.draws} "
            f"draws): top-1 {self.top1:.2%}, at the threshold {self.top1_at_threshold:.2%}, "
            f"strangers rejected {self.unknown_rejected:.2%}"
        )


def one_shot_by_size(
    enc: np.ndarray,
    faces: FaceSet,
    cal: Calibration,
    metric: str = "euclidean",
    sizes: Sequence[int] = GALLERY_SIZES,
    draws: int = 100,
    seed: int = 0,
) -> list[GalleryScores]:
    """One-shot identification as the database grows (a larger one needs a stricter
    threshold to keep strangers out, so fewer of its persons are accepted).

    For each size ``n`` below the number of persons in ``faces``, ``draws`` times: ``n``
    persons drawn at random are enrolled from one random image each; their other images
    are queries; every image of the other persons is a stranger. The threshold is
    :func:`~cnnkit.faces.verify.open_set_threshold` for ``n`` persons.

    Args:
        enc: ``(N, d)`` encodings of ``faces``' images.
        faces: Held-out identities.
        cal: The calibration (from other identities).
        metric: ``euclidean`` or ``cosine``.
        sizes: Database sizes.
        draws: Databases per size.
        seed: Seed of the draws.

    Returns:
        One :class:`GalleryScores` per size measured.
    """
    labels = faces.labels.numpy()
    persons = np.unique(labels)
    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        if n >= len(persons):
            continue
        t = open_set_threshold(cal, n)
        top1, at_t, rejected = [], [], []
        for _ in range(draws):
            known = rng.choice(persons, n, replace=False)
            gallery = np.array([rng.choice(np.nonzero(labels == p)[0]) for p in known])
            right, dq, du = _identify(enc, labels, gallery, metric)
            top1.append(right.mean())
            at_t.append((right & (dq <= t)).mean())
            rejected.append((du > t).mean())
        out.append(
            GalleryScores(
                n, draws, t, float(np.mean(top1)), float(np.mean(at_t)), float(np.mean(rejected))
            )
        )
    return out


#: Up to this many images, calibration and test rates use every pair of images.
ALL_PAIRS_MAX = 3000


def pairs_of(
    faces: FaceSet, pairs: int = 2000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of images of ``faces`` (up to :data:`ALL_PAIRS_MAX` images), else a sample.

    All pairs give the rare false accepts a strict threshold is about (60 persons x 8
    images: 1,680 same-person and 113,280 different-person pairs) at the cost of one
    distance matrix; larger sets draw ``pairs`` pairs, half same-person.

    Args:
        faces: The images and labels.
        pairs: Pairs drawn for larger sets.
        seed: Seed of the draw.

    Returns:
        ``(i, j, same)`` index arrays and flags.
    """
    n = len(faces)
    if n > ALL_PAIRS_MAX:
        return sample_pairs(faces, pairs, seed=seed)
    i, j = np.triu_indices(n, k=1)
    labels = faces.labels.numpy()
    return i.astype(np.int64), j.astype(np.int64), labels[i] == labels[j]


def distances_of(enc: np.ndarray, i: np.ndarray, j: np.ndarray, metric: str) -> np.ndarray:
    """Distances of the pairs ``(enc[i], enc[j])``, through one ``N x N`` matrix.

    Gathering both sides of 4.5 million pairs of 128-d encodings would take gigabytes;
    the matrix of 3,000 images is 72 MB.

    Args:
        enc: ``(N, d)`` encodings.
        i: First image of each pair.
        j: Second image.
        metric: ``euclidean`` or ``cosine``.

    Returns:
        ``(len(i),)`` distances.
    """
    if len(enc) > ALL_PAIRS_MAX:  # a sample of pairs: gather them
        return pair_distances(enc[i], enc[j], metric)
    return distance_matrix(enc, enc, metric)[i, j]


@dataclass
class FacesRun:
    """What :func:`train` returns.

    Attributes:
        run_dir: The run folder.
        model: The embedding network with the best weights (eval mode).
        calibration: The threshold chosen on dev pairs.
        scores: One-shot identification and verification on the test identities.
        history: The rows of ``results.csv``.
        seconds: Wall time of training.
    """

    run_dir: Path
    model: nn.Module
    calibration: Calibration
    scores: OneShotScores
    history: list[dict[str, float]]
    seconds: float


def fingerprint_model(model: nn.Module) -> str:
    """The model's identity: a SHA-256 over its parameter names and bytes."""
    from cnnkit.faces.db import fingerprint

    return fingerprint((k, v.detach().cpu().numpy()) for k, v in model.state_dict().items())


def calibrate_on(
    encoder: Encoder,
    faces: FaceSet,
    *,
    method: str = "eer",
    target_far: float = 0.01,
    pairs: int = 2000,
    seed: int = 0,
) -> tuple[Calibration, np.ndarray, np.ndarray]:
    """Fit the threshold on pairs of ``faces``.

    Args:
        encoder: The trained encoder (its ``meta["metric"]`` is the distance).
        faces: Labelled identities (the user's own; not the training identities).
        method: ``eer``, ``far`` or ``accuracy``.
        target_far: For ``far``, and the strangers' acceptance rate of identification.
        pairs: Pairs drawn when the set is too large for all pairs (:func:`pairs_of`).
        seed: Seed of the pairs.

    Returns:
        ``(calibration, pair distances, same flags)``.
    """
    enc = encoder(faces.images)
    i, j, same = pairs_of(faces, pairs, seed=seed)
    metric = encoder.meta["metric"]
    d = distances_of(enc, i, j, metric)
    return calibrate(d, same, method, target_far, metric), d, same


def train(cfg: FacesConfig | None = None, *, after: Any = None, **settings: Any) -> FacesRun:
    """Train an embedding, calibrate its threshold and measure it (``cnnkit faces train``).

    Args:
        cfg: Settings (see :class:`FacesConfig`).
        after: ``after(result)``, called once the run is measured and saved.
        **settings: Single settings overriding ``cfg``.

    Returns:
        A :class:`FacesRun`.
    """
    import time

    from cnnkit.train.jobs import job_config, start_run
    from cnnkit.train.loop import fit

    base = asdict(cfg or FacesConfig())
    base.update(settings)
    cfg = FacesConfig(**base)
    cfg.validate()
    faces = read_faces(cfg.data, size=cfg.size, channels=cfg.channels)
    tr_names, dev_names, te_names = split_identities(faces.names, cfg.dev, cfg.test, cfg.seed)
    tr, dv, te = faces.subset(tr_names), faces.subset(dev_names), faces.subset(te_names)
    for split, part in (("train", tr), ("dev", dv), ("test", te)):
        n2 = sum(1 for c in part.counts().values() if c >= 2)
        if n2 < 2:
            raise CnnkitError(
                f"the {split} split has {n2} {'identity' if n2 == 1 else 'identities'} with 2 "
                f"or more images ({len(part.names)} "
                f"of the {len(faces.names)} identities, with dev={cfg.dev} test={cfg.test}) and "
                "needs at least 2; add identities with several images each, or change dev= / "
                "test=."
            )
    x = tr.images.float() / 255
    mean = x.mean((0, 2, 3)).tolist()
    std = x.std((0, 2, 3)).clamp_min(1e-3).tolist()
    torch.manual_seed(cfg.seed)
    model = build_embedder(cfg.backbone, cfg.channels, cfg.dim, cfg.size, cfg.width)
    if cfg.loss == "binary":
        model.head = SiameseHead(cfg.dim, cfg.siamese)  # trained and saved with the network
    train_set = PKGroups(tr, cfg.per_person, mean, std, augment=True)
    dev_set = PKGroups(dv, cfg.per_person, mean, std, augment=False)
    run = start_run(cfg, "faces")
    meta: dict[str, Any] = {
        "model": "embedding",
        "task": "faces",
        "backbone": cfg.backbone,
        "width": cfg.width,
        "dim": cfg.dim,
        "flip": cfg.flip,
        "loss": cfg.loss,
        "siamese": cfg.siamese if cfg.loss == "binary" else None,
        "metric": cfg.metric,
        "preprocess": {
            "size": [cfg.size, cfg.size],
            "channels": cfg.channels,
            "mean": mean,
            "std": std,
        },
        "identities": {"train": tr_names, "dev": dev_names, "test": te_names},
    }
    tc = job_config(
        epochs=cfg.epochs,
        batch=cfg.persons,  # P identity groups of K images
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        seed=cfg.seed,
        workers=cfg.workers,
        verbose=cfg.verbose,
    )
    t0 = time.perf_counter()
    res = fit(
        model,
        train_set,
        dev_set,
        config=tc,
        task=(
            PairTask(model.head, cfg.per_person)
            if cfg.loss == "binary"
            else TripletTask(cfg.mining, cfg.alpha, cfg.per_person)
        ),
        run_dir=run,
        meta=meta,
    )
    seconds = time.perf_counter() - t0
    model.eval()
    meta["model_id"] = fingerprint_model(model)
    encoder = Encoder(model, meta)
    cal, d, same = calibrate_on(
        encoder,
        dv,
        method=cfg.calibrate,
        target_far=cfg.target_far,
        pairs=cfg.pairs,
        seed=cfg.seed,
    )
    enc_te = encoder(te.images)
    scores = evaluate_one_shot(enc_te, te, cal, cfg.metric, cfg.pairs, cfg.seed + 1)
    by_size = one_shot_by_size(enc_te, te, cal, cfg.metric, seed=cfg.seed + 2)
    (run / "calibration.json").write_text(json.dumps(cal.to_dict(), indent=2))
    plot_roc(d, same, cal).savefig(run / "roc.png", dpi=100)
    result = {
        "calibration": cal.to_dict(),
        "test": asdict(scores),
        "by_size": [asdict(g) for g in by_size],
        "seconds": seconds,
        "loss": cfg.loss,
        "mining": cfg.mining,
    }
    (run / "faces.json").write_text(json.dumps(result, indent=2))
    how = f"{cfg.mining} triplets" if cfg.loss == "triplet" else f"Siamese {cfg.siamese} pairs"
    text = f"training {seconds:.1f} s ({how})\n{cal.line()}\n{scores.table()}\n"
    if by_size:
        text += "one-shot identification by database size (random persons and images):\n"
        text += "".join(g.line() + "\n" for g in by_size)
    (run / "summary.txt").write_text(text)
    out = FacesRun(run, model, cal, scores, res.history, seconds)
    if after is not None:
        after(out)
    if cfg.verbose:
        print(text, end="")
        print(f"run saved in {run}/: {saved_files(run)}")
    return out


def _run_dir(run: str | os.PathLike) -> Path:
    r = Path(run)
    if not (r / "weights" / "best.safetensors").is_file():
        raise CnnkitError(
            f"{str(r)!r} is not a faces run folder (no weights/best.safetensors); pass "
            "run=runs/faces/NAME."
        )
    return r


def load_encoder(run: str | os.PathLike) -> Encoder:
    """The trained encoder of a faces run (best weights, with their preprocessing).

    Args:
        run: The run folder.

    Returns:
        An :class:`Encoder` (``meta`` holds ``model_id``, ``metric``, ``calibration``).
    """
    from cnnkit.train.checkpoint import load_weights_file

    r = _run_dir(run)
    state, meta = load_weights_file(r / "weights" / "best.safetensors")
    if meta.get("task") != "faces":
        raise CnnkitError(f"{str(r)!r} is not a faces run; train one with cnnkit faces train.")
    pre = meta["preprocess"]
    model = build_embedder(
        meta["backbone"], pre["channels"], meta["dim"], pre["size"][0], meta["width"]
    )
    if meta.get("loss") == "binary":
        model.head = SiameseHead(meta["dim"], meta["siamese"])
    model.load_state_dict(state)
    meta["model_id"] = fingerprint_model(model)
    cal = r / "calibration.json"
    meta["calibration"] = json.loads(cal.read_text()) if cal.is_file() else None
    return Encoder(model.eval(), meta)
