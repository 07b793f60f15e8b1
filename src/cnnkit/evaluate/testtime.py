"""Test-time tricks from the course: multi-crop evaluation and ensembles, with their cost.

**Multi-crop** (the 10-crop of AlexNet and VGG): the test image is cut at the center
and the four corners of a slightly larger canvas (``crops=5``); ``crops=10`` adds the
mirror image of each of those five. The model's softmax probabilities are averaged over
the crops. Two ways to make the larger canvas (``mode``):

- ``"shift"`` (default): pad the image by ``shift`` of its size on every side (1/32:
  1 pixel for a 32x32 model, 7 for 224x224) with black, the border the training augmentation's
  ``translate`` fills in, so the corner crops are the image moved by that many pixels,
  at its own scale; what the network saw in training.
- ``"resize"``: enlarge the image ``resize`` times (1.125: 36x36 for a 32x32 model, at
  least one pixel more) and crop at the input size, the AlexNet/VGG recipe for photos
  taken larger than the network's input. On images that fill their frame (the digits)
  the zoomed corners cut the strokes, and it lost accuracy there.

Each crop is one more forward pass: 5 or 10 per image instead of 1, and about that much
more time. Mirrors are wrong for digits and text (a mirrored 2 is no 2): use ``crops=5``
there.

**Ensembles**: several trained runs score the same images and their probabilities are
averaged (outputs, not weights: the members may be different architectures). The cost
is every member's forward pass, and the parameters of all of them.

Probabilities are averaged in log space: ``log mean_v p_v = logsumexp_v(log p_v) - log V``,
so the averaged outputs are log-probabilities that :func:`classification_report` scores
like logits.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.evaluate.metrics import Report, classification_report, log_probs

__all__ = [
    "CROPS",
    "MODES",
    "RESIZE",
    "SHIFT",
    "CostRow",
    "CropResult",
    "EnsembleResult",
    "Member",
    "Outputs",
    "check_crops",
    "check_mode",
    "crop_views",
    "describe_crops",
    "ensemble",
    "evaluate_crops",
    "load_member",
    "predict_log_probs",
    "resized_size",
    "shift_pixels",
]

CROPS = (1, 5, 10)
RESIZE = 1.125  # mode="resize": 32x32 -> 36x36, then 32x32 crops
SHIFT = 0.03125  # mode="shift": 32x32 padded by 1 pixel each side, then 32x32 crops
MODES = ("shift", "resize")
SPLITS = ("test", "dev", "train_dev", "train")


def check_crops(crops: Any) -> int:
    """Refuse a number of crops other than 1, 5 or 10.

    Args:
        crops: The value given.

    Returns:
        ``crops`` as an int.
    """
    if isinstance(crops, bool) or crops not in CROPS:
        raise CnnkitError(
            f"crops must be 1, 5 or 10, got {crops!r}; e.g. crops=5 (center + 4 corners; "
            "10 adds their mirror images)."
        )
    return int(crops)


def check_mode(mode: Any) -> str:
    """Refuse a crop mode other than ``shift`` or ``resize``, with the closest name.

    Args:
        mode: The value given.

    Returns:
        ``mode``.
    """
    if mode not in MODES:
        raise unknown_name("crop mode", str(mode), MODES)
    return str(mode)


def shift_pixels(size: Sequence[int], shift: float = SHIFT) -> tuple[int, int]:
    """The padding of ``mode="shift"``: ``round(n * shift)`` pixels, at least 1, under ``n``.

    Args:
        size: ``(n_H, n_W)`` the model takes.
        shift: Fraction of the size (> 0 and < 1).

    Returns:
        ``(p_H, p_W)``: the corner crops are the image moved by that many pixels.
    """
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not 0 < shift < 1:
        raise CnnkitError(f"shift must be a number > 0 and < 1, got {shift!r}; e.g. shift=0.03125.")
    return tuple(min(n - 1, max(1, round(n * shift))) for n in size)  # type: ignore[return-value]


def _check_canvas(mode: str, resize: float, shift: float) -> None:
    """Refuse a bad ``resize`` (``mode="resize"``) or ``shift`` (``mode="shift"``)."""
    if mode == "resize":
        resized_size((2, 2), resize)
    else:
        shift_pixels((2, 2), shift)


def resized_size(size: Sequence[int], resize: float = RESIZE) -> tuple[int, int]:
    """The size images are enlarged to before cropping: ``round(n * resize)``, at least ``n + 1``.

    Args:
        size: ``(n_H, n_W)`` the model takes.
        resize: Enlargement factor (> 1).

    Returns:
        ``(n_H', n_W')``.
    """
    if isinstance(resize, bool) or not isinstance(resize, (int, float)) or not resize > 1:
        raise CnnkitError(f"resize must be a number > 1, got {resize!r}; e.g. resize=1.125.")
    return tuple(max(n + 1, round(n * resize)) for n in size)  # type: ignore[return-value]


def crop_views(
    x: torch.Tensor,
    crops: int,
    resize: float = RESIZE,
    *,
    mode: str = "shift",
    shift: float = SHIFT,
    fill: torch.Tensor | float = 0.0,
) -> list[torch.Tensor]:
    """The views of a batch that multi-crop evaluation averages over.

    Args:
        x: A batch ``(N, n_C, n_H, n_W)`` at the model's input size.
        crops: 1 (``x`` itself), 5 (center and 4 corners of the larger canvas) or 10
            (those 5 and their mirror images).
        resize: ``mode="resize"``: how much larger the image is made before cropping.
        mode: ``"shift"`` (pad, so the corners are the image moved by ``shift``) or
            ``"resize"`` (enlarge by ``resize``).
        shift: ``mode="shift"``: the padding, a fraction of the size.
        fill: ``mode="shift"``: the padding's value, a number or one per channel
            (``(n_C,)``); the normalized black of the training augmentation's border.

    Returns:
        ``crops`` tensors, each ``(N, n_C, n_H, n_W)``; the center crop first.
    """
    import torch.nn.functional as F
    from torchvision.transforms.v2 import functional as TF

    crops = check_crops(crops)
    mode = check_mode(mode)
    if crops == 1:
        return [x]
    n_H, n_W = x.shape[-2:]
    if mode == "resize":
        big = TF.resize(x, list(resized_size((n_H, n_W), resize)), antialias=True)
    else:
        p_H, p_W = shift_pixels((n_H, n_W), shift)
        f = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
        # pad x - fill with zeros, then add fill back: a border of value fill, per channel
        big = F.pad(x - f, (p_W, p_W, p_H, p_H)) + f
    # (N, n_C, n_H, n_W) -> (N, n_C, n_H', n_W'), then each crop back to (N, n_C, n_H, n_W)
    if crops == 5:
        tl, tr, bl, br, center = TF.five_crop(big, [n_H, n_W])
        return [center, tl, tr, bl, br]
    tl, tr, bl, br, center, *mirrored = TF.ten_crop(big, [n_H, n_W])
    return [center, tl, tr, bl, br, mirrored[4], *mirrored[:4]]


def describe_crops(
    crops: int,
    size: Sequence[int],
    resize: float = RESIZE,
    *,
    mode: str = "shift",
    shift: float = SHIFT,
) -> str:
    """One line saying what ``crops`` means for a model of input ``size``.

    Args:
        crops: 1, 5 or 10.
        size: ``(n_H, n_W)`` of the model.
        resize: ``mode="resize"``: enlargement factor.
        mode: ``"shift"`` or ``"resize"``.
        shift: ``mode="shift"``: the padding, a fraction of the size.

    Returns:
        E.g. ``"5 crops: center + 4 corners (32x32) of the image padded by 1 pixel
        (34x34; the image shifted by 1 pixel), no mirrors; 5 forward passes per image"``.
    """
    crops = check_crops(crops)
    mode = check_mode(mode)
    if crops == 1:
        return "1 crop: the image at the model's input size; 1 forward pass per image"
    which = "no mirrors" if crops == 5 else "each also mirrored"
    if mode == "resize":
        R_H, R_W = resized_size(size, resize)
        canvas = f"the image resized to {R_H}x{R_W}"
    else:
        p_H, p_W = shift_pixels(size, shift)
        px = f"{p_H}" if p_H == p_W else f"{p_H}x{p_W}"
        s = "" if px == "1" else "s"
        canvas = (
            f"the image padded by {px} pixel{s} ({size[0] + 2 * p_H}x{size[1] + 2 * p_W}; "
            f"the image shifted by {px} pixel{s})"
        )
    return (
        f"{crops} crops: center + 4 corners ({size[0]}x{size[1]}) of {canvas}, {which}; "
        f"{crops} forward passes per image"
    )


# --- running a model over a split -----------------------------------------------------------


@dataclass
class Outputs:
    """A model's averaged outputs on a dataset.

    Attributes:
        log_probs: float32 ``(N, K)``: log of the probabilities averaged over the crops.
        labels: int64 ``(N,)`` true classes.
        ids: Image identifiers (paths or source indices) when the dataset has them.
        crops: Views per image (forward passes per image).
        seconds: Wall time of the crops and forward passes (no data loading).
        size: ``(n_H, n_W)`` of the model's input.
        resize: The enlargement factor of ``mode="resize"``.
        mode: How the crops were made: ``"shift"`` or ``"resize"``.
        shift: The padding of ``mode="shift"``, a fraction of the size.
    """

    log_probs: torch.Tensor
    labels: torch.Tensor
    ids: list[str] | None
    crops: int
    seconds: float
    size: tuple[int, int]
    resize: float = RESIZE
    mode: str = "shift"
    shift: float = SHIFT

    def describe(self) -> str:
        """What the crops were, in one line (see :func:`describe_crops`)."""
        return describe_crops(self.crops, self.size, self.resize, mode=self.mode, shift=self.shift)


def _batches(data: Dataset, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(normalized images, labels)`` in order: straight from memory for an ImageSet."""
    from cnnkit.data import ImageSet

    if isinstance(data, ImageSet):
        for i in range(0, len(data), batch):
            yield data.preprocess.normalize(data.images[i : i + batch]), data.labels[i : i + batch]
        return
    for x, y in DataLoader(data, batch_size=batch, shuffle=False, num_workers=0):
        yield x, torch.as_tensor(y)


def predict_log_probs(
    model: nn.Module,
    data: Dataset,
    *,
    crops: int = 1,
    batch: int = 256,
    resize: float = RESIZE,
    device: torch.device | str = "cpu",
    mode: str = "shift",
    shift: float = SHIFT,
) -> Outputs:
    """Run ``model`` (in eval mode) over ``data``, averaging probabilities over crops.

    Args:
        model: A classifier (softmax logits ``(B, K)`` or one sigmoid output).
        data: An ImageSet or any Dataset of ``(image, label)`` at the model's input size.
        crops: 1, 5 or 10 (see :func:`crop_views`).
        batch: Images per forward pass.
        resize: ``mode="resize"``: enlargement before cropping.
        device: Where to run.
        mode: ``"shift"`` or ``"resize"`` (see :func:`crop_views`).
        shift: ``mode="shift"``: the padding, a fraction of the size. The border is the
            normalized black of an ImageSet's preprocessing (what augmentation fills in),
            or 0 (the mean) for other datasets.

    Returns:
        :class:`Outputs`, timed (forward passes and crops only, after untimed warm-up
        passes at the batch sizes it will see).
    """
    from cnnkit.data import ImageSet
    from cnnkit.train.classify import _check_count

    crops = check_crops(crops)
    mode = check_mode(mode)
    _check_count("batch", batch, 256)
    if crops > 1:
        _check_canvas(mode, resize, shift)  # before any work
    if len(data) == 0:  # type: ignore[arg-type]
        raise CnnkitError("the split has no images to score; pick another split.")
    fill: torch.Tensor | float = 0.0
    if isinstance(data, ImageSet):  # black, normalized: ((0 - mean) / std) per channel
        fill = -torch.tensor(data.preprocess.mean) / torch.tensor(data.preprocess.std)
    n = len(data)  # type: ignore[arg-type]

    def scores(x: torch.Tensor) -> torch.Tensor:
        views = crop_views(x, crops, resize, mode=mode, shift=shift, fill=fill)
        lp = [log_probs(model(v)) for v in views]
        # mean of the probabilities, in log space: (V, B, K) -> (B, K)
        return torch.logsumexp(torch.stack(lp), 0) - math.log(len(lp))

    was = model.training
    model.eval()
    chunks: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    seconds, size = 0.0, (0, 0)
    try:
        with torch.inference_mode():
            for i, (x, y) in enumerate(_batches(data, batch)):
                x = x.to(device)
                if i == 0:
                    size = (int(x.shape[-2]), int(x.shape[-1]))
                    # warm-up: one-time set-up (kernels, memory) stays out of timing, for
                    # the full batches and for the last, smaller one (a new shape)
                    scores(x)
                    if n % batch and n > batch:
                        scores(x[: n % batch])
                t0 = time.perf_counter()
                avg = scores(x)
                seconds += time.perf_counter() - t0
                chunks.append(avg.cpu())
                labels.append(y.long().cpu())
    finally:
        model.train(was)
    return Outputs(
        log_probs=torch.cat(chunks),
        labels=torch.cat(labels),
        ids=list(data.ids) if getattr(data, "ids", None) is not None else None,  # type: ignore[attr-defined]
        crops=crops,
        seconds=seconds,
        size=size,
        resize=resize,
        mode=mode,
        shift=shift,
    )


@dataclass
class Member:
    """A model ready to score a split.

    Attributes:
        name: How it is shown (``"runs/classify/train (lenet5)"``).
        model: The network, in eval mode.
        dataset: The split, with the model's preprocessing.
        classes: Class names (None for a bare Dataset).
        config: The run's ``config.yaml`` settings (None for a bare model).
    """

    name: str
    model: nn.Module
    dataset: Dataset
    classes: list[str] | None
    config: dict[str, Any] | None = None

    @property
    def params(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.model.parameters())


_SPLIT_KEYS = ("data", "dev", "test", "train_dev", "split_seed", "data_dir", "on_error")


def _split_value(config: dict[str, Any], key: str) -> Any:
    """A split setting of a run's config; the split seed is ``split_seed``, else ``seed``."""
    if key == "split_seed" and config.get("split_seed") is None:
        return config.get("seed", 0)
    return config.get(key)


def load_member(
    run: str | os.PathLike | nn.Module | None,
    data: Any = None,
    *,
    weights: str | os.PathLike | None = None,
    split: str = "test",
    batch: int = 256,
    cache: dict[Any, Any] | None = None,
) -> Member:
    """A run's (or a model's) network with the split it is scored on, as ``cnnkit val`` reads it.

    Args:
        run: Run folder (best weights, its own seeded splits), or an ``nn.Module``.
        data: Another source (name or folder), a :class:`~cnnkit.data.Data` or a Dataset.
        weights: Instead of ``run``: a cnnkit ``.safetensors`` file (with ``data``).
        split: ``test``, ``dev``, ``train_dev`` or ``train``.
        batch: Checked here (images per forward pass).
        cache: Loaded data shared between calls (an ensemble reads its splits once).

    Returns:
        A :class:`Member`.
    """
    import yaml

    from cnnkit.data import Data
    from cnnkit.train.classify import _check_count, run_split

    if split not in SPLITS:
        raise unknown_name("split", str(split), SPLITS)
    _check_count("batch", batch, 256)
    if isinstance(run, nn.Module):
        if data is None:
            raise CnnkitError("a model needs data= to be scored on (a Dataset or Data).")
        ds = getattr(data, split) if isinstance(data, Data) else data
        if ds is None or isinstance(ds, (str, os.PathLike)):
            raise CnnkitError(f"a model needs data= as a Dataset or a Data with a {split} split.")
        classes = list(data.info.classes) if isinstance(data, Data) else None
        return Member(type(run).__name__, run, ds, classes)
    model, meta, ds = run_split(run, data, weights=weights, split=split, cache=cache)
    name = f"{run if run is not None else Path(str(weights)).name} ({meta['model']})"
    config = None
    if run is not None:
        config = yaml.safe_load((Path(run) / "config.yaml").read_text())
    return Member(name, model, ds, list(meta["classes"]), config)


# --- multi-crop -----------------------------------------------------------------------------


@dataclass
class CropResult:
    """Multi-crop against one crop, on the same images.

    Attributes:
        single: The 1-crop report.
        multi: The ``crops``-crop report.
        crops: 5 or 10 (or 1).
        single_seconds: Forward time of 1 crop over the split.
        seconds: Forward time (crops included) of ``crops`` crops.
        description: What the crops were.
        notes: Warnings (e.g. mirrors on a run trained without them).
    """

    single: Report
    multi: Report
    crops: int
    single_seconds: float
    seconds: float
    description: str
    notes: list[str] = field(default_factory=list)

    @property
    def slowdown(self) -> float:
        """Measured wall time of ``crops`` crops over 1 crop."""
        return self.seconds / self.single_seconds if self.single_seconds > 0 else float("nan")

    def lines(self, split: str = "test") -> list[str]:
        """The 1-crop and multi-crop scores and the cost, as ``cnnkit val crops=N`` prints them.

        Args:
            split: The split's name, for the text.

        Returns:
            Lines of text.
        """
        from cnnkit.train.classify import score_line

        def line(r: Report) -> str:
            return score_line(split, {"loss": r.loss, "accuracy": r.accuracy, "n": r.n})

        return [
            f"{line(self.single)}  1 crop",
            f"{line(self.multi)}  {self.crops} crops",
            self.description,
            f"cost: {self.crops} forward passes per image; measured {self.seconds:.3f} s vs "
            f"{self.single_seconds:.3f} s for 1 crop ({self.slowdown:.1f}x)",
            *self.notes,
        ]


def evaluate_crops(
    run: str | os.PathLike | nn.Module | None = None,
    data: Any = None,
    *,
    weights: str | os.PathLike | None = None,
    split: str = "test",
    crops: int = 5,
    batch: int = 256,
    resize: float = RESIZE,
    k: int = 5,
    mode: str = "shift",
    shift: float = SHIFT,
) -> CropResult:
    """Score a run with ``crops`` test-time crops and with 1, and time both.

    Args:
        run: Run folder, or a model (then ``data`` is a Dataset or Data).
        data: Another source, a Data or a Dataset (default: the run's own split).
        weights: Instead of ``run``: a cnnkit ``.safetensors`` file (with ``data``).
        split: ``test``, ``dev``, ``train_dev`` or ``train``.
        crops: 1, 5 or 10.
        batch: Images per forward pass.
        resize: ``mode="resize"``: enlargement before cropping.
        k: Top-k accuracy's ``k``.
        mode: ``"shift"`` (default: the image moved by ``shift``, as augmentation does) or
            ``"resize"`` (enlarged by ``resize``); see :func:`crop_views`.
        shift: ``mode="shift"``: the padding, a fraction of the size.

    Returns:
        A :class:`CropResult`.
    """
    crops = check_crops(crops)
    mode = check_mode(mode)
    if crops > 1:
        _check_canvas(mode, resize, shift)
    m = load_member(run, data, weights=weights, split=split, batch=batch)
    one = predict_log_probs(m.model, m.dataset, crops=1, batch=batch)
    many = one
    if crops > 1:
        many = predict_log_probs(
            m.model, m.dataset, crops=crops, batch=batch, resize=resize, mode=mode, shift=shift
        )
    title = f"{split} split of {m.name}"
    single = classification_report(one.log_probs, one.labels, m.classes, k=k, title=title)
    multi = classification_report(many.log_probs, many.labels, m.classes, k=k, title=title)
    if crops > 1:
        multi.notes.append(many.describe())
    notes = []
    if crops == 10 and m.config is not None and _fliplr(m.config) == 0:
        notes.append(
            "note: this run trained without mirror images (fliplr=0), so the 5 mirrored crops "
            "show it images unlike any it learned from; crops=5 has no mirrors."
        )
    return CropResult(single, multi, crops, one.seconds, many.seconds, many.describe(), notes)


def _fliplr(config: dict[str, Any]) -> float:
    """The mirror probability a run trained with (its own setting, else its preset's)."""
    from cnnkit.train.config import TrainConfig

    return float(TrainConfig.from_dict(config).resolved("fliplr"))


# --- ensembles ------------------------------------------------------------------------------


@dataclass
class CostRow:
    """One line of the accuracy-vs-cost table.

    Attributes:
        name: The member (or ``ensemble of N``).
        report: Its scores.
        params: Parameters (the sum over members for the ensemble).
        passes_per_image: Forward passes per image.
        seconds: Forward time over the split (the sum over members for the ensemble).
    """

    name: str
    report: Report
    params: int
    passes_per_image: int
    seconds: float

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy."""
        return self.report.accuracy


@dataclass
class EnsembleResult:
    """Members and their ensemble on the same images.

    Attributes:
        members: One row per member.
        ensemble: The averaged probabilities' row.
        split: The split scored.
        crops: Crops per member.
    """

    members: list[CostRow]
    ensemble: CostRow
    split: str
    crops: int = 1

    @property
    def best_member(self) -> CostRow:
        """The most accurate member."""
        return max(self.members, key=lambda r: r.accuracy)

    def table(self) -> str:
        """The accuracy-vs-cost table, as ``cnnkit val runs=...`` prints it.

        Returns:
            Lines of text (no trailing newline).
        """
        from cnnkit.train.classify import percent

        rows = [*self.members, self.ensemble]
        w = max(len("model"), *(len(r.name) for r in rows))
        n = self.ensemble.report.n
        head = (
            f"{'model':<{w}}  {'accuracy':>8}  {'error':>7}  {'loss':>7}  {'params':>11}  "
            f"{'passes/image':>12}  {'forward s':>9}  {'ms/image':>8}"
        )
        lines = [
            f"{self.split} split, {n:,} images: each member, and the ensemble averaging their "
            f"probabilities",
            head,
        ]
        for r in rows:
            lines.append(
                f"{r.name:<{w}}  {percent(r.accuracy):>8}  {percent(r.report.error):>7}  "
                f"{r.report.loss:>7.4f}  {r.params:>11,}  {r.passes_per_image:>12}  "
                f"{r.seconds:>9.3f}  {1000 * r.seconds / n:>8.3f}"
            )
        best = self.best_member
        gain = self.ensemble.accuracy - best.accuracy
        lines.append(
            f"ensemble vs best member ({best.name}): {100 * gain:+.2f} points of accuracy for "
            f"{self.ensemble.seconds / max(best.seconds, 1e-12):.1f}x its forward time and "
            f"{self.ensemble.params / max(best.params, 1):.1f}x its parameters"
        )
        if self.crops > 1:
            lines.append(f"each member: {self.ensemble.report.notes[0]}")
        return "\n".join(lines)


def ensemble(
    runs: Sequence[str | os.PathLike | nn.Module],
    data: Any = None,
    *,
    split: str = "test",
    crops: int = 1,
    batch: int = 256,
    resize: float = RESIZE,
    k: int = 5,
    mode: str = "shift",
    shift: float = SHIFT,
) -> EnsembleResult:
    """Average the probabilities of several runs on the same images; report accuracy and cost.

    Each run is read with its own preprocessing (the members may differ in architecture
    and input size). They must be scored on the same images: with the runs' own splits,
    every run must hold the same images in ``split`` (the same data, seed, dev and test
    settings), or one member would be scored on images it trained on.

    Args:
        runs: Two or more run folders (or models, with ``data`` a Dataset or Data).
        data: Another source for all of them, a Data or a Dataset.
        split: ``test``, ``dev``, ``train_dev`` or ``train``.
        crops: Test-time crops per member (1, 5 or 10).
        batch: Images per forward pass.
        resize: ``mode="resize"``: enlargement before cropping.
        k: Top-k accuracy's ``k``.
        mode: ``"shift"`` or ``"resize"`` (see :func:`crop_views`).
        shift: ``mode="shift"``: the padding, a fraction of the size.

    Returns:
        An :class:`EnsembleResult`; ``.table()`` is the accuracy-vs-cost table.
    """
    crops = check_crops(crops)
    mode = check_mode(mode)
    if crops > 1:
        _check_canvas(mode, resize, shift)
    if isinstance(runs, (str, os.PathLike)) or len(runs) < 2:
        raise CnnkitError(
            "an ensemble needs two or more runs, e.g. runs=runs/classify/a,runs/classify/b."
        )
    cache: dict[Any, Any] = {}
    members = [load_member(r, data, split=split, batch=batch, cache=cache) for r in runs]
    classes = next((m.classes for m in members if m.classes is not None), None)
    for m in members:
        if m.classes is not None and m.classes != classes:
            raise CnnkitError(
                f"{m.name} has classes {m.classes[:5]}, {members[0].name} {classes[:5]}; "  # type: ignore[index]
                "ensemble runs trained on the same classes."
            )
    outs = [
        predict_log_probs(
            m.model, m.dataset, crops=crops, batch=batch, resize=resize, mode=mode, shift=shift
        )
        for m in members
    ]
    for i in range(1, len(outs)):
        outs[i] = _align(outs[0], outs[i], members[0], members[i], split)
    labels = outs[0].labels
    title = f"{split} split"
    rows = []
    for m, o in zip(members, outs):
        r = classification_report(o.log_probs, labels, classes, k=k, title=f"{title} of {m.name}")
        rows.append(CostRow(m.name, r, m.params, crops, o.seconds))
    # the mean of the members' probabilities, in log space: (M, N, K) -> (N, K)
    avg = torch.logsumexp(torch.stack([o.log_probs for o in outs]), 0) - math.log(len(outs))
    M = len(members)
    rep = classification_report(avg, labels, classes, k=k, title=f"{title}, ensemble of {M}")
    rep.notes.append(f"ensemble of {M}: the mean of the members' probabilities")
    if crops > 1:
        rep.notes.insert(0, outs[0].describe())
    row = CostRow(
        f"ensemble of {M}",
        rep,
        sum(r.params for r in rows),
        crops * M,
        sum(r.seconds for r in rows),
    )
    return EnsembleResult(rows, row, split, crops)


def _align(first: Outputs, other: Outputs, a: Member, b: Member, split: str) -> Outputs:
    """``other`` in the image order of ``first``; refuse members scored on different images."""
    same = len(first.labels) == len(other.labels)
    if first.ids is not None and other.ids is not None:
        if first.ids != other.ids:
            pos = {i: n for n, i in enumerate(other.ids)}
            if len(pos) != len(other.ids) or set(pos) != set(first.ids):
                raise CnnkitError(
                    f"{a.name} and {b.name} hold different images in their {split} split "
                    f"({_split_settings(a, b)}), so a member would be scored on images it "
                    "trained on; train the members with the same data, dev, test and split_seed "
                    "(seed may differ: split_seed=0 seed=1, seed=2, ...), or pass data= a "
                    "source none of them trained on."
                )
            order = torch.tensor([pos[i] for i in first.ids])
            other = replace(
                other,
                log_probs=other.log_probs[order],
                labels=other.labels[order],
                ids=list(first.ids),
            )
    elif not same:
        raise CnnkitError(
            f"{a.name} and {b.name} were scored on {len(first.labels)} and "
            f"{len(other.labels)} images; give every member the same data."
        )
    if not torch.equal(first.labels, other.labels):
        raise CnnkitError(
            f"{a.name} and {b.name} label the same images differently; "
            "give every member the same data."
        )
    return other


def _split_settings(a: Member, b: Member) -> str:
    """Which split settings differ between two runs, e.g. ``seed 0 vs 1``."""
    if a.config is None or b.config is None:
        return "different data"
    diff = [
        f"{k} {_split_value(a.config, k)} vs {_split_value(b.config, k)}"
        for k in _SPLIT_KEYS
        if _split_value(a.config, k) != _split_value(b.config, k)
    ]
    return ", ".join(diff) or "different data"
