"""The segment job: U-Net on a ``data.yaml`` of images and masks (``cnnkit segment ...``).

``cnnkit segment train data=PATH/data.yaml`` calls :func:`train`: it reads the splits
(:func:`~cnnkit.segment.data.read_segmentation`, every image and mask resized to
``size x size``), builds a :class:`~cnnkit.segment.unet.UNet` (or an
:class:`~cnnkit.segment.unet.EncoderUNet` on a zoo encoder), and trains it with
:func:`cnnkit.train.fit` (the one trainer: checkpoints, resume, early stopping, progress,
``results.csv``) on mask-aware augmented pairs, with the per-pixel cross-entropy + Dice
loss. The best weights are chosen by the dev mean IoU, then scored on ``val``: pixel
accuracy, per-class IoU and Dice, mean IoU and mean Dice (all from one confusion matrix
summed over every pixel of the split; macro means over the classes present). The run
folder is ``runs/segment/NAME``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from cnnkit.data.yolo_layout import load_yaml
from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.segment.data import SegmentationSet, augment_pair, check_splits, read_segmentation
from cnnkit.segment.losses import segmentation_loss
from cnnkit.segment.metrics import (
    IGNORE_INDEX,
    confusion_matrix,
    mean_dice,
    mean_iou,
    pixel_accuracy,
    segmentation_scores,
)
from cnnkit.segment.unet import EncoderUNet, UNet
from cnnkit.train.tasks import Task

__all__ = [
    "SegmentConfig",
    "SegmentRun",
    "SegmentTask",
    "load_segmenter",
    "predict",
    "predict_masks",
    "scores_table",
    "summary_text",
    "train",
    "val",
]

LOSSES = ("ce+dice", "ce", "dice")


@dataclass
class SegmentConfig:
    """Every setting of a segment run.

    Attributes:
        data: The ``data.yaml`` (images/, masks/, names).
        val: The split scored after training and used as dev set.
        size: Images and masks are resized to ``size x size`` (masks by nearest neighbour).
        channels: 1 or 3.
        depth: U-Net pooling steps.
        width: Filters of U-Net's first level (doubled per level).
        encoder: A zoo model whose convolutional part replaces the contracting path
            (``vgg11``, ``resnet18``, ``mobilenet_v2``, ...), or None for U-Net's own.
        encoder_weights: Weights for the encoder (a local ``.safetensors``/``.pth`` file).
        mode: ``multiclass`` (softmax over the classes) or ``binary`` (two classes, one
            sigmoid output).
        loss: ``ce+dice``, ``ce`` or ``dice``.
        dice_weight: Weight of the Dice term in ``ce+dice``.
        epochs: Passes over the training images.
        batch: Mini-batch size.
        lr: AdamW's learning rate (cosine decay).
        weight_decay: AdamW's decay.
        flip: Augmentation: probability of a left-right mirror (image and mask).
        vflip: Augmentation: probability of an up-down mirror.
        degrees: Augmentation: largest rotation.
        scale: Augmentation: largest zoom change.
        translate: Augmentation: largest shift, fraction of the side.
        color: Augmentation: brightness / contrast jitter (image only).
        seed: Seed of the weights, order and augmentation.
        workers: DataLoader workers (None: one per spare core).
        patience: Early stopping after this many epochs without a better dev mean IoU
            (0: off).
        project: Folder of runs (``project/segment/name``).
        name: Run name (None: ``train``, ``train2``, ...).
        verbose: 0 silent, 1 progress bar, 2 one line per epoch.
    """

    data: str = ""
    val: str = "val"
    size: int = 64
    channels: int = 3
    depth: int = 3
    width: int = 16
    encoder: str | None = None
    encoder_weights: str | None = None
    mode: str = "multiclass"
    loss: str = "ce+dice"
    dice_weight: float = 1.0
    epochs: int = 30
    batch: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    flip: float = 0.5
    vflip: float = 0.0
    degrees: float = 0.0
    scale: float = 0.1
    translate: float = 0.1
    color: float = 0.1
    seed: int = 0
    workers: int | None = None
    patience: int = 0
    project: str = "runs"
    name: str | None = None
    verbose: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    _POSITIVE: ClassVar[tuple[str, ...]] = ("size", "depth", "width", "epochs", "batch")

    def validate(self) -> None:
        """Check every setting; one sentence per mistake.

        Raises:
            CnnkitError: On a bad value.
        """
        if not self.data or not isinstance(self.data, str):
            raise CnnkitError("segment needs data=PATH/data.yaml (images/, masks/, names).")
        if not self.data.lower().endswith((".yaml", ".yml")):
            raise CnnkitError(
                f"data={self.data!r} is not a data.yaml; pass the yaml that names the images, "
                "masks and classes (cnnkit data synth segment out=DIR writes one)."
            )
        from cnnkit.train.jobs import check_numbers

        check_numbers(self, positive_int=self._POSITIVE)
        if self.channels not in (1, 3):
            raise CnnkitError(f"channels must be 1 or 3, got {self.channels!r}.")
        if self.mode not in ("multiclass", "binary"):
            raise unknown_name("mode", str(self.mode), ("multiclass", "binary"))
        if self.loss not in LOSSES:
            raise unknown_name("loss", str(self.loss), LOSSES)
        if self.encoder is not None:
            from cnnkit.models import get_model_info, list_models

            names = [n for n in list_models() if get_model_info(n).dims == 2]
            if self.encoder not in names:
                raise unknown_name("encoder (a 2D image model)", str(self.encoder), names)
        elif self.encoder_weights is not None:
            raise CnnkitError("encoder_weights= needs encoder=NAME (a zoo model).")
        if self.encoder is None and self.size < 2**self.depth:
            raise CnnkitError(
                f"size={self.size} is smaller than 2^depth = {2**self.depth}: there would be "
                f"nothing left to pool; use depth <= {max(1, self.size.bit_length() - 1)}."
            )
        check_numbers(
            self,
            positive=("lr",),
            unit=("flip", "vflip"),
            below_one=("scale", "translate"),
            non_negative=("degrees", "color", "dice_weight", "weight_decay"),
        )
        p = self.patience
        if isinstance(p, bool) or not isinstance(p, int) or p < 0:
            raise CnnkitError(f"patience must be an integer >= 0, got {p!r}.")


@dataclass
class SegmentRun:
    """What :func:`train` returns.

    Attributes:
        run_dir: The run folder.
        model: The network with the best weights (eval mode).
        scores: :func:`~cnnkit.segment.metrics.segmentation_scores` on the val split.
        history: The rows of ``results.csv``.
        seconds: Wall time of training.
    """

    run_dir: Path
    model: nn.Module
    scores: dict[str, Any]
    history: list[dict[str, float]]
    seconds: float


class SegmentTask(Task):
    """The trainer's view of segmentation: the per-pixel loss and the confusion matrix.

    The sums are ``[loss * pixels, pixels, cm (C*C)]``; ``summarize`` gives the loss
    (per pixel), pixel accuracy, mean IoU and mean Dice of the whole split.

    Args:
        num_classes: ``C`` (background included).
        mode: ``multiclass`` (``C`` logits) or ``binary`` (one logit, ``C = 2``).
        loss: ``ce+dice``, ``ce`` or ``dice``.
        dice_weight: Weight of the Dice term.
    """

    metric_names = ("pixel_accuracy", "mean_iou", "mean_dice")
    higher_is_better: ClassVar[dict[str, bool]] = {
        "loss": False,
        "pixel_accuracy": True,
        "mean_iou": True,
        "mean_dice": True,
    }

    def __init__(
        self,
        num_classes: int,
        mode: str = "multiclass",
        loss: str = "ce+dice",
        dice_weight: float = 1.0,
    ) -> None:
        self.C, self.mode, self.kind, self.dice_weight = num_classes, mode, loss, dice_weight
        self.n_sums = 2 + num_classes * num_classes

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The batch's loss (ignored pixels left out)."""
        return segmentation_loss(outputs, targets, self.mode, self.kind, self.dice_weight)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        """Class indices ``(B, n_H, n_W)`` from scores ``(B, K, n_H, n_W)``."""
        if self.mode == "binary":
            return (outputs[:, 0] > 0).long()
        return outputs.max(1).indices  # argmax, 10x faster on the CPU for (B, C, H, W)

    def count(
        self, sums: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor
    ) -> None:
        """Add ``loss * pixels``, the pixels scored and the confusion matrix."""
        pixels = int((targets != IGNORE_INDEX).sum())
        sums[0] += loss.double() * pixels
        sums[1] += pixels
        cm = confusion_matrix(self.predict(outputs.detach()), targets, self.C)
        sums[2:] += cm.reshape(-1).double()  # (C, C) -> (C*C,)

    def confusion(self, sums: torch.Tensor) -> torch.Tensor:
        """The ``(C, C)`` confusion matrix held in ``sums``."""
        return sums[2:].reshape(self.C, self.C).long()  # (C*C,) -> (C, C)

    def summarize(self, sums: torch.Tensor) -> dict[str, float]:
        """``{"loss", "pixel_accuracy", "mean_iou", "mean_dice"}`` of the split."""
        if float(sums[1]) == 0:
            return {k: float("nan") for k in ("loss", *self.metric_names)}
        cm = self.confusion(sums)
        return {
            "loss": float(sums[0] / sums[1]),
            "pixel_accuracy": pixel_accuracy(cm),
            "mean_iou": mean_iou(cm),
            "mean_dice": mean_dice(cm),
        }


class MaskTargets(Dataset):
    """A :class:`SegmentationSet` as ``(normalized image, mask)`` pairs for ``fit``.

    Args:
        ds: Images and masks.
        mean: Per-channel mean (0-1 units) subtracted.
        std: Per-channel std divided by.
        augment: :func:`augment_pair` settings (None: none).
    """

    def __init__(
        self,
        ds: SegmentationSet,
        mean: list[float],
        std: list[float],
        augment: dict[str, float] | None = None,
    ) -> None:
        self.ds, self.augment = ds, augment
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.ds.images[i].float() / 255
        mask = self.ds.masks[i].long()
        if self.augment:  # torch's global generator: seeded per worker by the DataLoader
            img, mask = augment_pair(img, mask, **self.augment)
        return (img - self.mean) / self.std, mask


def _channel_stats(images: torch.Tensor, chunk: int = 256) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (0-1 units) of uint8 ``(N, n_C, n_H, n_W)``, in chunks."""
    n_C = images.shape[1]
    s1 = torch.zeros(n_C, dtype=torch.float64)
    s2 = torch.zeros(n_C, dtype=torch.float64)
    for k in range(0, len(images), chunk):
        x = images[k : k + chunk].double() / 255
        s1 += x.sum((0, 2, 3))
        s2 += (x * x).sum((0, 2, 3))
    n = images.numel() // n_C
    mean = s1 / n
    var = (s2 - n * mean * mean) / max(n - 1, 1)  # the unbiased variance, as torch.std
    return mean.tolist(), var.clamp_min(0).sqrt().clamp_min(1e-3).tolist()


def build_segmenter(meta: dict[str, Any], weights: str | None = None) -> nn.Module:
    """The network a run's metadata describes (U-Net, or U-Net on a zoo encoder).

    Args:
        meta: ``classes``, ``mode``, ``preprocess`` and ``net`` (the architecture).
        weights: The encoder's weights file (training only).

    Returns:
        The network (random weights).
    """
    net = meta["net"]
    K = 1 if meta["mode"] == "binary" else len(meta["classes"])
    n_C = meta["preprocess"]["channels"]
    if net.get("encoder"):
        return EncoderUNet(net["encoder"], n_C, K, width=net["width"], weights=weights)
    return UNet(n_C, K, depth=net["depth"], width=net["width"], padding=net["padding"])


def _run_config(run: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    from cnnkit.train.jobs import run_folder

    return run_folder(run, "segment")


def predict_masks(
    model: nn.Module,
    meta: dict[str, Any],
    images: torch.Tensor,
    batch: int = 32,
) -> torch.Tensor:
    """Class indices for uint8 images at the run's size.

    Args:
        model: The network.
        meta: Its metadata (``preprocess``, ``mode``).
        images: uint8 ``(N, n_C, n_H, n_W)``.
        batch: Images per forward pass.

    Returns:
        int64 ``(N, n_H, n_W)``.
    """
    out = []
    for k in range(0, len(images), batch):
        s = _scores(model, meta, images[k : k + batch], batch)
        out.append((s[:, 0] > 0).long() if meta["mode"] == "binary" else s.max(1).indices)
    return torch.cat(out) if out else torch.zeros(0, *images.shape[2:], dtype=torch.long)


def _scores(model: nn.Module, meta: dict[str, Any], images: torch.Tensor, batch: int = 32):
    pre = meta["preprocess"]
    m = torch.tensor(pre["mean"]).view(1, -1, 1, 1)
    s = torch.tensor(pre["std"]).view(1, -1, 1, 1)
    was = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for k in range(0, len(images), batch):
                out.append(model((images[k : k + batch].float() / 255 - m) / s))
    finally:
        model.train(was)
    return torch.cat(out)


def score(
    model: nn.Module, meta: dict[str, Any], ds: SegmentationSet
) -> tuple[dict[str, Any], torch.Tensor]:
    """Pixel accuracy, per-class IoU and Dice, their means, on ``ds``.

    Args:
        model: The network.
        meta: Its metadata.
        ds: Images and masks at the run's size.

    Returns:
        ``(scores, confusion matrix)``.
    """
    pred = predict_masks(model, meta, ds.images)
    cm = confusion_matrix(pred, ds.masks.long(), len(meta["classes"]))
    return segmentation_scores(cm, meta["classes"]), cm


def scores_table(scores: dict[str, Any]) -> str:
    """The scores as text: the means first, then one line per class."""
    lines = [
        f"pixel accuracy {scores['pixel_accuracy']:.4f}   mean IoU {scores['mean_iou']:.4f}   "
        f"mean Dice {scores['mean_dice']:.4f}",
        "(one confusion matrix over every pixel of the split; means over the classes present)",
        f"{'class':<16}{'IoU':>8}{'Dice':>8}",
    ]
    for name, iou in scores["iou"].items():
        d = scores["dice"][name]
        lines.append(f"{name:<16}{iou:>8.4f}{d:>8.4f}")
    return "\n".join(lines)


def train(
    cfg: SegmentConfig | None = None,
    *,
    after: Any = None,
    resume: str | os.PathLike | None = None,
    **settings: Any,
) -> SegmentRun:
    """Train a U-Net and leave a run folder (``cnnkit segment train``).

    Args:
        cfg: Settings (see :class:`SegmentConfig`).
        after: ``after(result)``, called once the run is scored and saved.
        resume: A run folder to continue where it stopped (its ``config.yaml`` gives the
            settings; ``epochs=`` may be raised to train longer). The trainer restores the
            weights, optimizer, schedule, random states and position in the epoch.
        **settings: Single settings overriding ``cfg``.

    Returns:
        A :class:`SegmentRun`; ``scores`` on the ``val`` split.
    """
    import time

    import yaml

    from cnnkit.train.classify import saved_files
    from cnnkit.train.jobs import job_config, start_run
    from cnnkit.train.loop import fit

    keys = {f.name for f in fields(SegmentConfig)} - {"extra"}
    if resume is not None:
        r, saved = _run_config(resume)
        changed = sorted(k for k in settings if k not in ("epochs", "verbose", "workers"))
        if changed:
            raise CnnkitError(
                f"a resumed run keeps its settings; only epochs=, verbose= and workers= may "
                f"change, got {changed[0]}= (start a new run to change it)."
            )
        base = {k: v for k, v in saved.items() if k in keys}
        base.update(settings, project=str(r.parent.parent), name=r.name)
    else:
        base = asdict(cfg or SegmentConfig())
        base.update(settings)
    cfg = SegmentConfig(**base)
    cfg.validate()
    check_splits(cfg.data, ["train", cfg.val])  # before decoding anything
    tr = read_segmentation(cfg.data, "train", cfg.size, cfg.channels)
    va = read_segmentation(cfg.data, cfg.val, cfg.size, cfg.channels)
    te = None  # a test split, when the data has one, is scored at the end (never chosen on)
    if cfg.val != "test" and "test" in load_yaml(Path(cfg.data)):
        te = read_segmentation(cfg.data, "test", cfg.size, cfg.channels)
    C = len(tr.classes)
    if cfg.mode == "binary" and C != 2:
        raise CnnkitError(
            f"mode=binary needs exactly 2 classes (background and one), {cfg.data} names {C}; "
            "use mode=multiclass."
        )
    mean, std = _channel_stats(tr.images)
    net = {
        "encoder": cfg.encoder,
        "depth": cfg.depth,
        "width": cfg.width,
        "padding": "same",
    }
    meta = {
        "task": "segment",
        "model": f"unet_{cfg.encoder}" if cfg.encoder else "unet",
        "classes": list(tr.classes),
        "mode": cfg.mode,
        "net": net,
        "preprocess": {
            "size": [cfg.size, cfg.size],
            "channels": cfg.channels,
            "mean": mean,
            "std": std,
        },
    }
    torch.manual_seed(cfg.seed)
    model = build_segmenter(meta, cfg.encoder_weights)
    aug = {
        "flip": cfg.flip,
        "vflip": cfg.vflip,
        "degrees": cfg.degrees,
        "scale": cfg.scale,
        "translate": cfg.translate,
        "color": cfg.color,
    }
    train_set = MaskTargets(tr, mean, std, aug)
    dev_set = MaskTargets(va, mean, std, None)
    task = SegmentTask(C, cfg.mode, cfg.loss, cfg.dice_weight)
    if resume is None:
        run = start_run(cfg, "segment")
    else:
        run = Path(resume)
        resolved = {**asdict(cfg), "name": run.name}
        resolved.pop("extra", None)
        (run / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    tc = job_config(
        epochs=cfg.epochs,
        batch=cfg.batch,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        seed=cfg.seed,
        workers=cfg.workers,
        verbose=cfg.verbose,
        monitor="dev_mean_iou",
        patience=cfg.patience,
    )
    t0 = time.perf_counter()
    res = fit(
        model,
        train_set,
        dev_set,
        config=tc,
        task=task,
        run_dir=run,
        meta=meta,
        resume=resume is not None,
    )
    seconds = time.perf_counter() - t0
    model.eval()
    scores, cm = score(model, meta, va)
    scores["confusion_matrix"] = cm.tolist()
    scores["split"] = cfg.val
    scores["train_seconds"] = seconds
    text = (
        f"training {seconds:.1f} s; {cfg.val} split, {len(va)} images (it chose the best "
        "weights, so its scores lean optimistic)\n" + scores_table(scores) + "\n"
    )
    if te is not None:
        t_scores, t_cm = score(model, meta, te)
        scores["test"] = {**t_scores, "confusion_matrix": t_cm.tolist(), "images": len(te)}
        text += f"test split, {len(te)} images (held out)\n" + scores_table(t_scores) + "\n"
    (run / "scores.json").write_text(json.dumps(_no_nan(scores), indent=1))
    (run / "summary.txt").write_text(text)
    out = SegmentRun(run, model, scores, res.history, seconds)
    if after is not None:
        after(out)
    if cfg.verbose:
        print(text, end="")
        print(f"run saved in {run}/: {saved_files(run)}")
    return out


def _no_nan(v: Any) -> Any:
    """``v`` with NaN (a class with no score) as None, so that the JSON is standard (null)."""
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, dict):
        return {k: _no_nan(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_no_nan(x) for x in v]
    return v


def load_segmenter(run: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained segmenter from its run folder (best weights).

    Args:
        run: The run folder.

    Returns:
        ``(model in eval mode, metadata)``.
    """
    from cnnkit.train.jobs import best_weights

    state, meta = best_weights(run, "segment")
    model = build_segmenter(meta)
    model.load_state_dict(state)
    return model.eval(), meta


def val(
    run: str | os.PathLike, data: str | None = None, split: str | None = None
) -> dict[str, Any]:
    """Scores of a segment run's best weights on a split (``cnnkit segment val``).

    Args:
        run: The run folder.
        data: Another ``data.yaml`` (default: the run's own).
        split: The split (default: the run's ``val``).

    Returns:
        :func:`~cnnkit.segment.metrics.segmentation_scores`.
    """
    r, cfg = _run_config(run)
    model, meta = load_segmenter(r)
    pre = meta["preprocess"]
    ds = read_segmentation(
        data or cfg["data"], split or cfg.get("val", "val"), pre["size"], pre["channels"]
    )
    if list(ds.classes) != list(meta["classes"]):
        raise CnnkitError(
            f"{data or cfg['data']} names classes {ds.classes}, the run {meta['classes']}."
        )
    return score(model, meta, ds)[0]


def predict(
    run: str | os.PathLike,
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    alpha: float = 0.5,
) -> list[Path]:
    """Segment images; write ``out/X.png`` masks of class indices and ``out/overlays/X.png``.

    An image in a subfolder of ``source`` gets its mask at the same place under ``out``
    (``source/a/X.jpg`` -> ``out/a/X.png``); two images that would share a mask file
    are refused before any work, and files already under ``out`` are not read as inputs.
    Each image is resized to the run's training size (the scale the network learned),
    its scores are resized back bilinearly to the image's own ``n_H x n_W``, and the
    mask is their argmax: a mask of the image's own size, whatever that is.

    Args:
        run: The run folder.
        source: An image file or a folder of images.
        out: Folder for the masks (created).
        alpha: Opacity of the classes' colours in the overlays.

    Returns:
        The mask files written.
    """
    from PIL import Image

    from cnnkit.data.datasets import resize_uint8
    from cnnkit.data.images import decode_image
    from cnnkit.segment.data import overlay, write_mask
    from cnnkit.train.classify import _image_files

    r, _ = _run_config(run)
    src, dest = Path(source), Path(out)
    base = src if src.is_dir() else src.parent
    files = [f for f in _image_files(source) if not _inside(f, dest)]  # not earlier outputs
    targets: dict[Path, Path] = {}
    for f in files:  # out/<the image's path under source>.png: no two images on one file
        t = (dest / f.relative_to(base)).with_suffix(".png")
        if t in targets:
            raise CnnkitError(
                f"{str(targets[t])!r} and {str(f)!r} would both write {str(t)!r}; rename one "
                "of them (masks are PNGs named after their image)."
            )
        targets[t] = f
    model, meta = load_segmenter(r)
    pre = meta["preprocess"]
    n_H, n_W = pre["size"]
    written = []
    for t, f in targets.items():
        a = decode_image(f, channels=pre["channels"])  # uint8 (H, W, n_C)
        img = torch.from_numpy(np.array(a)).permute(2, 0, 1)  # (H, W, n_C) -> (n_C, H, W)
        H, W = img.shape[1:]
        small = resize_uint8(img[None], (n_H, n_W))
        s = _scores(model, meta, small)
        if (n_H, n_W) != (H, W):
            s = F.interpolate(s, size=(H, W), mode="bilinear", align_corners=False)
        mask = (s[0, 0] > 0).long() if meta["mode"] == "binary" else s[0].argmax(0)
        m = mask.numpy().astype(np.uint8)
        t.parent.mkdir(parents=True, exist_ok=True)
        write_mask(m, t)
        over = dest / "overlays" / t.relative_to(dest)
        over.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(overlay(np.asarray(a), m, alpha)).save(over)
        written.append(t)
    return written


def _inside(f: Path, folder: Path) -> bool:
    try:
        f.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def summary_text(run: str | os.PathLike) -> str:
    """A segment run's network, classes and scores as text (``cnnkit segment summary``).

    Args:
        run: The run folder.

    Returns:
        Lines of text.
    """
    r, _ = _run_config(run)
    model, meta = load_segmenter(r)
    pre, net = meta["preprocess"], meta["net"]
    n = sum(p.numel() for p in model.parameters())
    if net.get("encoder"):
        arch = f"U-Net on the {net['encoder']} encoder (total stride {model.stride})"
    else:
        arch = (
            f"U-Net, depth {net['depth']}, width {net['width']} (levels "
            + ", ".join(str(net["width"] * 2**k) for k in range(net["depth"] + 1))
            + f" filters), padding {net['padding']}: inputs padded to a multiple of "
            f"{2 ** net['depth']} and cropped back"
        )
    K = 1 if meta["mode"] == "binary" else len(meta["classes"])
    lines = [
        f"{arch}; parameters {n:,}",
        f"input {pre['size'][0]}x{pre['size'][1]}x{pre['channels']} -> output "
        f"{pre['size'][0]}x{pre['size'][1]}x{K} ({meta['mode']})",
        f"classes: {', '.join(f'{k}={c}' for k, c in enumerate(meta['classes']))}; 255 = ignored",
    ]
    if (r / "summary.txt").is_file():
        lines.append((r / "summary.txt").read_text().rstrip())
    return "\n".join(lines)
