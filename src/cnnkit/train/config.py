"""Every training setting and its default, in one place, with validation.

The command line, ``config.yaml`` in each run and ``cnnkit.train.fit`` all use these
names; hyperparameters are named as in the course (``lr`` is alpha, ``beta1``,
``beta2``, ``eps``, ``weight_decay`` / ``l2`` is lambda, ``momentum`` is beta).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from cnnkit.errors import CnnkitError, did_you_mean, unknown_name

__all__ = [
    "AUG_OPS",
    "AUG_PRESETS",
    "OPTIMIZERS",
    "SCHEDULES",
    "TrainConfig",
    "human_level",
    "lr_factor",
]

OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "step", "exponential", "inverse", "cosine", "onecycle")
LOSSES = ("auto", "ce", "bce")
NONFINITE = ("raise", "skip_step", "stop")
PRECISIONS = ("auto", "fp32", "bf16")
MEMORY_FORMATS = ("auto", "contiguous", "channels_last")
FREEZE = ("auto", "none", "backbone")
BN_POLICIES = ("auto", "train", "freeze_stats", "freeze_all")

# augmentation: each op's setting; None in a TrainConfig means "the preset's value"
AUG_OPS = (
    "degrees",  # rotation range, degrees
    "translate",  # shift, fraction of the size
    "scale",  # zoom range
    "fliplr",  # probability of a mirror
    "shear",  # shear range, degrees
    "crop",  # random crop after zero-padding by this fraction of the size
    "resized_crop",  # random-resized crop: smallest area fraction kept (0: off)
    "elastic",  # local warping: displacement strength alpha, pixels (0: off)
    "color_shift",  # +/- per RGB channel, fraction of the range
    "pca_color",  # AlexNet PCA colour: std of the eigen-coefficients (0.1 in the paper)
    "erase",  # random erasing: probability per image
)
_OFF = dict.fromkeys(AUG_OPS, 0.0)
AUG_PRESETS: dict[str, dict[str, float]] = {
    "none": dict(_OFF),
    "default": {**_OFF, "degrees": 10.0, "translate": 0.1, "scale": 0.1},
    "light": {**_OFF, "degrees": 5.0, "translate": 0.05, "scale": 0.05},
    "strong": {
        **_OFF,
        "degrees": 15.0,
        "translate": 0.1,
        "scale": 0.15,
        "shear": 10.0,
        "elastic": 1.0,
        "erase": 0.25,
    },
    "photo": {**_OFF, "fliplr": 0.5, "crop": 0.125, "color_shift": 0.1, "pca_color": 0.1},
}


def human_level(v: Any) -> float | None:
    """A human-level error as a fraction: ``0.02``, ``"2%"`` or None (unknown).

    Args:
        v: A fraction in [0, 1), a string ``"N%"`` or None.

    Returns:
        The fraction, or None.

    Raises:
        CnnkitError: For anything else (one sentence with an example).
    """
    if v is None or (isinstance(v, str) and v.strip().lower() in ("", "none", "null")):
        return None
    q: Any = v
    if isinstance(v, str):
        t = v.strip()
        try:
            q = float(t[:-1]) / 100 if t.endswith("%") else float(t)
        except ValueError:
            q = None
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 <= q < 1:
        raise CnnkitError(
            f"human must be a human-level error as a fraction in [0, 1) or a percentage, "
            f"got {v!r}; e.g. human=0.02 or human=2%."
        )
    return float(q)


@dataclass
class TrainConfig:
    """All settings of a training run (the defaults are cnnkit's recipe).

    Attributes:
        model: Zoo name or layer-list YAML (``cnnkit models``).
        model_args: The model family's options, e.g. ``{"layers": 3, "units": 64}`` for
            ``mlp`` (``help(cnnkit.models.create)``); ``model.KEY=VALUE`` on the command
            line and in :meth:`from_dict`. Saved with the weights, so the run rebuilds it.
        data: ``digits``, ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100`` or a folder.
        epochs: Passes over the training set; ``"auto"`` picks about ``auto_steps``
            optimizer steps, at least 3 and at most 60 epochs.
        batch: Mini-batch size ``m``.
        optimizer: ``sgd``, ``momentum``, ``nesterov``, ``rmsprop``, ``adam``, ``adamw``.
            ``momentum`` is the course's exponentially weighted average
            ``v = beta*v + (1-beta)*dW`` (PyTorch's ``dampening=beta``; PyTorch starts
            ``v`` at the first gradient instead of 0); ``sgd`` with ``momentum=`` and
            ``nesterov`` use PyTorch's ``v = beta*v + dW``, a 1/(1-beta) larger step.
        lr: Learning rate alpha (the peak after warmup).
        momentum: beta of momentum (None: 0.9 for momentum/nesterov, 0 otherwise).
        beta1: Adam's first-moment decay.
        beta2: Adam's second-moment decay; RMSprop's decay (None: 0.999 Adam, 0.99 RMSprop).
        eps: epsilon in Adam / RMSprop denominators.
        weight_decay: PyTorch's weight decay (None: 0.01 for AdamW, else 0).
        l2: The course's L2 regularization lambda: adds ``lambda/(2m) * sum ||W||^2``
            over conv / FC weights to each mini-batch's cost.
        schedule: ``constant``, ``step``, ``exponential`` (``decay_rate**epoch * lr``),
            ``inverse`` (``lr / (1 + decay_rate * epoch)``), ``cosine``, ``onecycle``.
        decay_rate: Per-schedule constant (None: 0.1 step, 0.95 exponential, 1.0 inverse).
        step_size: Epochs between drops of the ``step`` schedule.
        warmup_epochs: Linear warmup from 0 to ``lr`` over this many epochs (fractions allowed).
        loss: ``auto`` (softmax cross-entropy for classes; sigmoid logistic loss for two
            classes or multi-hot labels), ``ce`` or ``bce``.
        label_smoothing: Cross-entropy label smoothing.
        patience: Early stopping: epochs without dev improvement before stopping (0: off).
        monitor: Metric for early stopping and best weights (``dev_accuracy``, ``dev_loss``, ...).
        clip_grad: Clip the gradient's global L2 norm to this (0: off).
        aug: Augmentation preset: ``none``, ``default`` (rotation 10, shift 0.1, zoom 0.1),
            ``light``, ``strong``, ``photo`` (mirror, random crop, colour); each op below
            left at None takes the preset's value, a value given overrides it.
        degrees: Augmentation: random rotation range.
        translate: Augmentation: random shift, fraction of the size.
        scale: Augmentation: random zoom range.
        fliplr: Augmentation: probability of a mirror (0 for digits and text).
        shear: Augmentation: random shear range, degrees.
        crop: Augmentation: random crop of the image zero-padded by this fraction.
        resized_crop: Augmentation: random-resized crop keeping at least this area
            fraction (0: off).
        elastic: Augmentation: elastic (local) warping strength alpha in pixels (0: off).
        color_shift: Augmentation: add a random +/- shift per RGB channel, fraction of range.
        pca_color: Augmentation: AlexNet's PCA colour shift, std of the coefficients
            (fitted on the training set's pixels; 0.1 in the paper).
        erase: Augmentation: probability of erasing a random rectangle.
        pretrained: Start from these weights: a run folder, a cnnkit ``.safetensors``, a
            torchvision ``.pth`` or a torchvision weights name (``IMAGENET1K_V1``). Their
            preprocessing (size, channels, mean and std) is used for the data.
        freeze: ``none``, ``backbone`` (all but the head) or K (the first K stages);
            ``auto``: ``backbone`` with ``pretrained``, else ``none``.
        bn: Batch-norm policy: ``train`` (batch statistics, running averages updated),
            ``freeze_stats`` (running averages used and kept), ``freeze_all`` (also
            gamma and beta fixed); ``auto``: ``freeze_stats`` with ``pretrained``.
        fine_tune: Train the head alone for ``head_epochs``, then unfreeze the last
            ``unfreeze`` stages with discriminative learning rates.
        head_epochs: Epochs of head-only training before unfreezing (``fine_tune``).
        unfreeze: Stages unfrozen after the head epochs; ``auto`` from the training set's
            size (the course: more data, unfreeze more).
        lr_mult: Discriminative rates: each stage's learning rate is this times the next
            (later) stage's; the head trains at ``lr``.
        cache_features: Compute the frozen backbone's output once and train the head on it;
            ``auto``: when the whole backbone is frozen and nothing makes it vary
            (augmentation off, batch norm frozen).
        classes: Keep only these classes of the data (names or indices), e.g. ``[5, 6, 7,
            8, 9]``.
        per_class: Keep only this many training examples per class (a small labelled set).
        report: Write ``report.html`` (and ``plots/*.png``) in the run folder when
            ``cnnkit train`` ends; ``cnnkit report run=...`` rebuilds it.
        human: Human-level error (a fraction such as 0.02, or ``"2%"``), the proxy for
            Bayes error: drawn on the learning curves and used by the report's diagnosis
            (None: unknown).
        tensorboard: Also write TensorBoard event files (``run/tensorboard/``): the epoch
            metrics and learning rate as scalars and a few training images.
        size: Input ``n_H`` (int or ``[n_H, n_W]``); None: the model's when it needs one,
            else the data's. Signals and volumes are never resampled (their runs keep
            None; an int given must be their length, or each side of a cubic volume).
        dev: Dev split carved from train when the source has none (fraction or count).
        test: Test split carved when the source has only one pool (fraction or count).
        train_dev: Train-dev split carved from train (0: none).
        data_dir: Folder of named datasets (None: ``$CNNKIT_DATA`` or ``./data``).
        download: Download a named dataset when missing (needs network).
        on_error: ``raise`` or ``skip`` undecodable images.
        max_bad_fraction: With ``on_error=skip``: stop when more than this fraction of
            the image files cannot be decoded (0-1); the skipped ones go to ``skipped.csv``.
        seed: Seed of splits, initialization, order and augmentation.
        split_seed: Seed of the splits alone (None: ``seed``). Runs with one
            ``split_seed`` and different ``seed`` share their train / dev / test split but
            start from other weights: members of an ensemble.
        deterministic: Use only deterministic kernels (bitwise-repeatable on CPU).
        workers: DataLoader workers for generic datasets (None: one per spare core).
        devices: Processes to train with on this machine: ``cnnkit train devices=N``
            re-launches itself under torchrun (``--nproc_per_node=N``); ``batch`` stays
            the global mini-batch. Ignored inside torchrun, where the launcher decides.
        nonfinite: A loss (or, with skip_step/stop, a gradient) that is NaN or infinite:
            ``raise`` an error naming the step, epoch and samples; ``skip_step`` (leave the
            weights and optimizer state untouched, count the skip, and raise when more
            than ``max_consecutive_skips`` come in a row); ``stop`` (end training there
            with the best weights; the last checkpoint is kept).
        max_consecutive_skips: With ``nonfinite=skip_step``, the most steps in a row that
            may be skipped before the run stops with an error.
        verbose: 0 silent, 1 progress bar, 2 one line per epoch.
        save_every: Also checkpoint every this many steps inside an epoch (0: epoch ends only).
        project: Folder of runs (runs land in ``project/classify/name``).
        name: Run name (None: ``train``, ``train2``, ...).
        exist_ok: Reuse an existing run folder of the same name.
        auto_steps: Optimizer steps that ``epochs=auto`` aims for.
        precision: ``fp32``, ``bf16`` (autocast around forward and loss) or ``auto``
            (a short calibration picks the faster; bf16 only on CPUs with bf16 support,
            for nets with convolutions, and when its loss matches fp32's within 2%).
        memory_format: ``contiguous``, ``channels_last`` (model and batches) or ``auto``.
        compile: ``torch.compile`` the model: true, false or ``auto`` (only when the
            estimated run time exceeds 20 times the compile cost).
    """

    model: str = "lenet5"
    data: str = "digits"
    epochs: int | str = "auto"
    batch: int = 32
    optimizer: str = "adam"
    lr: float = 2e-3
    momentum: float | None = None
    beta1: float = 0.9
    beta2: float | None = None
    eps: float = 1e-8
    weight_decay: float | None = None
    l2: float = 0.0
    schedule: str = "cosine"
    decay_rate: float | None = None
    step_size: int = 10
    warmup_epochs: float = 1.0
    loss: str = "auto"
    label_smoothing: float = 0.1
    patience: int = 0
    monitor: str = "dev_loss"
    clip_grad: float = 0.0
    aug: str = "default"
    degrees: float | None = None
    translate: float | None = None
    scale: float | None = None
    fliplr: float | None = None
    shear: float | None = None
    crop: float | None = None
    resized_crop: float | None = None
    elastic: float | None = None
    color_shift: float | None = None
    pca_color: float | None = None
    erase: float | None = None
    size: Any = None
    dev: float | int = 0.1
    test: float | int = 0.2
    train_dev: float | int = 0.0
    data_dir: str | None = None
    download: bool = False
    on_error: str = "raise"
    max_bad_fraction: float = 0.05
    seed: int = 0
    split_seed: int | None = None
    deterministic: bool = False
    workers: int | None = None
    devices: int = 1
    nonfinite: str = "raise"
    max_consecutive_skips: int = 10
    verbose: int = 1
    save_every: int = 0
    project: str = "runs"
    name: str | None = None
    exist_ok: bool = False
    auto_steps: int = 1500
    precision: str = "auto"
    memory_format: str = "auto"
    compile: bool | str = "auto"
    model_args: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = None
    freeze: str | int = "auto"
    bn: str = "auto"
    fine_tune: bool = False
    head_epochs: int = 2
    unfreeze: str | int = "auto"
    lr_mult: float = 0.3
    cache_features: bool | str = "auto"
    classes: list[Any] | None = None
    per_class: int | None = None
    report: bool = True
    human: float | str | None = None
    tensorboard: bool = False

    @classmethod
    def keys(cls) -> list[str]:
        """All setting names."""
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "settings") -> TrainConfig:
        """Build from a dict, refusing unknown keys with a close-match suggestion.

        Args:
            d: Settings.
            source: Where they came from, for the message.

        Returns:
            The validated config.
        """
        known = cls.keys()
        d = dict(d)
        nested = {k: d.pop(k) for k in [k for k in d if isinstance(k, str) and k[:6] == "model."]}
        if nested:  # model.KEY=VALUE -> model_args[KEY]
            args = d.get("model_args") or {}
            if not isinstance(args, dict):
                raise CnnkitError(
                    f"model_args must be a mapping, got {args!r}; e.g. model.units=64."
                )
            d["model_args"] = {**args, **{k[6:]: v for k, v in nested.items()}}
        for k in d:
            if k not in known:
                hits = did_you_mean(k, known)
                hint = f"did you mean {hits[0]}=?" if hits else "see `cnnkit train --help`."
                raise CnnkitError(f"unknown setting {k!r} in {source}: {hint}")
        for k in ("aug", "freeze"):  # `aug=none` reads as YAML's null
            if k in d and d[k] is None:
                d[k] = "none"
        d = {k: str(v) if k in _TEXT and _is_number(v) else v for k, v in d.items()}
        d = {k: _yaml_float(v) if k not in _TEXT else v for k, v in d.items()}
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for ``config.yaml``."""
        return asdict(self)

    def validate(self) -> None:
        """Check every value; raise one sentence naming the setting and the fix."""

        def num(
            key: str,
            *,
            low: float | None = None,
            low_open: bool = False,
            high: float | None = None,
            high_open: bool = False,
            integer: bool = False,
            allow_none: bool = False,
        ) -> None:
            v = getattr(self, key)
            if v is None and allow_none:
                return
            ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
            if (
                isinstance(v, bool)
                or not ok_type
                or (isinstance(v, float) and not math.isfinite(v))
            ):
                kind = "an integer" if integer else "a number"
                raise CnnkitError(f"{key} must be {kind}, got {v!r}.")
            if low is not None and (v <= low if low_open else v < low):
                rel = ">" if low_open else ">="
                raise CnnkitError(
                    f"{key} must be {rel} {low:g}, got {v!r}; e.g. {key}={_example(key)}."
                )
            if high is not None and (v >= high if high_open else v > high):
                rel = "<" if high_open else "<="
                raise CnnkitError(f"{key} must be {rel} {high:g}, got {v!r}.")

        def flag(key: str) -> None:
            v = getattr(self, key)
            if not isinstance(v, bool):
                raise CnnkitError(f"{key} must be true or false, got {v!r}; e.g. {key}=true.")

        def text(key: str, allow_none: bool = False) -> None:
            v = getattr(self, key)
            if isinstance(v, os.PathLike) or (v is None and allow_none):
                return
            if not (isinstance(v, str) and v.strip()):
                raise CnnkitError(f"{key} must be a name or path, got {v!r}.")

        def split(key: str) -> None:
            v = getattr(self, key)
            if not (_is_number(v) and math.isfinite(v) and v >= 0 and (v < 1 or v == int(v))):
                raise CnnkitError(
                    f"{key} must be a fraction in [0, 1) or a whole count of images, got {v!r}; "
                    f"e.g. {key}=0.1."
                )

        for key in ("model", "data", "project"):
            text(key)
        if not isinstance(self.model_args, dict) or not all(
            isinstance(k, str) and k.isidentifier() for k in self.model_args
        ):
            raise CnnkitError(
                f"model_args must map option names to values, got {self.model_args!r}; "
                "e.g. model.units=64 (cnnkit.models.create's options)."
            )
        for key in ("name", "data_dir"):
            text(key, allow_none=True)
        if isinstance(self.epochs, str) and self.epochs != "auto":
            raise CnnkitError(
                f"epochs must be an integer or auto, got {self.epochs!r}; e.g. epochs=10."
            )
        if self.epochs != "auto":
            num("epochs", low=1, integer=True)
        num("batch", low=1, integer=True)
        num("lr", low=0, low_open=True)
        num("momentum", low=0, high=1, allow_none=True)
        num("beta1", low=0, high=1)
        if isinstance(self.beta1, (int, float)) and self.beta1 >= 1:
            raise CnnkitError(f"beta1 must be < 1, got {self.beta1!r}; e.g. beta1=0.9.")
        num("beta2", low=0, high=1, allow_none=True)
        if isinstance(self.beta2, (int, float)) and self.beta2 >= 1:
            raise CnnkitError(f"beta2 must be < 1, got {self.beta2!r}; e.g. beta2=0.999.")
        num("eps", low=0, low_open=True)
        num("weight_decay", low=0, allow_none=True)
        num("l2", low=0)
        num("decay_rate", low=0, low_open=True, allow_none=True)
        num("step_size", low=1, integer=True)
        num("warmup_epochs", low=0)
        num("label_smoothing", low=0, high=1, high_open=True)
        num("max_bad_fraction", low=0, high=1)
        num("patience", low=0, integer=True)
        num("clip_grad", low=0)
        num("seed", low=0, integer=True)
        num("split_seed", low=0, integer=True, allow_none=True)
        num("verbose", low=0, high=2, integer=True)
        num("save_every", low=0, integer=True)
        num("workers", low=0, integer=True, allow_none=True)
        num("devices", low=1, integer=True)
        num("auto_steps", low=1, integer=True)
        if self.optimizer not in OPTIMIZERS:
            raise unknown_name("optimizer", str(self.optimizer), OPTIMIZERS)
        if self.schedule not in SCHEDULES:
            raise unknown_name("schedule", str(self.schedule), SCHEDULES)
        if self.loss not in LOSSES:
            raise unknown_name("loss", str(self.loss), LOSSES)
        if self.on_error not in ("raise", "skip"):
            raise unknown_name("on_error", str(self.on_error), ["raise", "skip"])
        if self.nonfinite not in NONFINITE:
            raise unknown_name("nonfinite", str(self.nonfinite), NONFINITE)
        num("max_consecutive_skips", low=1, integer=True)
        if self.precision not in PRECISIONS:
            raise unknown_name("precision", str(self.precision), PRECISIONS)
        if self.memory_format not in MEMORY_FORMATS:
            raise unknown_name("memory_format", str(self.memory_format), MEMORY_FORMATS)
        if isinstance(self.compile, str) and self.compile.lower() in ("true", "false"):
            self.compile = self.compile.lower() == "true"  # "false" from Python, as on the CLI
        if not (isinstance(self.compile, bool) or self.compile == "auto"):
            raise unknown_name("compile", str(self.compile), ("auto", "true", "false"))
        if not isinstance(self.monitor, str) or not self.monitor.startswith(("dev_", "train_")):
            # the metric names themselves are checked by fit(), which knows the task's metrics
            raise CnnkitError(
                "monitor must name a logged metric such as dev_accuracy or dev_loss, got "
                f"{self.monitor!r}."
            )
        if self.aug not in AUG_PRESETS:
            raise unknown_name("aug preset", str(self.aug), AUG_PRESETS)
        for key in AUG_OPS:
            num(key, low=0, allow_none=True)
        num("degrees", low=0, high=180, allow_none=True)
        num("shear", low=0, high=80, allow_none=True)
        num("translate", low=0, high=1, allow_none=True)
        num("scale", low=0, high=1, high_open=True, allow_none=True)
        for key in ("fliplr", "crop", "resized_crop", "color_shift", "erase"):
            num(key, low=0, high=1, allow_none=True)
        text("pretrained", allow_none=True)
        if not (isinstance(self.freeze, int) and not isinstance(self.freeze, bool)):
            if self.freeze not in FREEZE:
                raise CnnkitError(
                    f"freeze must be none, backbone, auto or a number of stages, got "
                    f"{self.freeze!r}; e.g. freeze=backbone or freeze=2."
                )
        else:
            num("freeze", low=0, integer=True)
        if self.bn not in BN_POLICIES:
            raise unknown_name("bn policy", str(self.bn), BN_POLICIES)
        flag("fine_tune")
        num("head_epochs", low=0, integer=True)
        if not (isinstance(self.unfreeze, int) and not isinstance(self.unfreeze, bool)):
            if self.unfreeze != "auto":
                raise CnnkitError(
                    f"unfreeze must be auto or a number of stages, got {self.unfreeze!r}; "
                    "e.g. unfreeze=2."
                )
        else:
            num("unfreeze", low=0, integer=True)
        num("lr_mult", low=0, high=1)
        if self.cache_features not in (True, False, "auto"):
            raise CnnkitError(
                f"cache_features must be true, false or auto, got {self.cache_features!r}."
            )
        if self.classes is not None:
            if isinstance(self.classes, (str, int)) and not isinstance(self.classes, bool):
                self.classes = [self.classes]
            if not isinstance(self.classes, (list, tuple)) or not self.classes:
                raise CnnkitError(
                    f"classes must list class names or indices, got {self.classes!r}; "
                    "e.g. classes=[5, 6, 7, 8, 9]."
                )
            self.classes = list(self.classes)
        num("per_class", low=1, integer=True, allow_none=True)
        self.human = human_level(self.human)
        for key in ("dev", "test", "train_dev"):
            split(key)
        for key in ("download", "deterministic", "exist_ok", "report", "tensorboard"):
            flag(key)
        if self.size is not None:
            s = self.size
            if isinstance(s, int) and not isinstance(s, bool):
                s = [s, s]
            if not (
                isinstance(s, (list, tuple))
                and len(s) == 2
                and all(isinstance(v, int) and v >= 1 for v in s)
            ):
                raise CnnkitError(
                    f"size must be a positive int or [n_H, n_W], got {self.size!r}; e.g. size=32."
                )

    def resolved(self, key: str) -> Any:
        """A setting whose None default depends on the optimizer, schedule, or ``aug`` preset."""
        v = getattr(self, key)
        if v is not None:
            return v
        if key in AUG_OPS:
            return AUG_PRESETS[self.aug][key]
        if key == "momentum":
            return 0.9 if self.optimizer in ("momentum", "nesterov") else 0.0
        if key == "beta2":
            return 0.99 if self.optimizer == "rmsprop" else 0.999
        if key == "weight_decay":
            return 0.01 if self.optimizer == "adamw" else 0.0
        if key == "decay_rate":
            return {"step": 0.1, "exponential": 0.95, "inverse": 1.0}.get(self.schedule, 1.0)
        return v


_TEXT = ("model", "data", "project", "name", "data_dir", "pretrained")


def _yaml_float(v: Any) -> Any:
    """``"1e-3"`` -> 0.001: YAML 1.1 (PyYAML) reads exponents without a dot as text."""
    if isinstance(v, str) and any(c in v for c in "eE"):
        try:
            f = float(v)
        except ValueError:
            return v
        return f if math.isfinite(f) else v
    return v


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _example(key: str) -> str:
    examples = {"lr": "0.001", "epochs": "10", "batch": "32", "devices": "2", "momentum": "0.9"}
    examples.update({"eps": "1e-08", "label_smoothing": "0.1", "decay_rate": "0.1"})
    return examples.get(key, "1")


def lr_factor(
    schedule: str,
    step: int,
    steps_per_epoch: int,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    decay_rate: float = 1.0,
    step_size: int = 10,
) -> float:
    """The learning rate at a global step, as a fraction of the peak ``lr``.

    A pure function of the step: a resumed run gets the exact rate it would have had,
    and extending ``epochs`` re-plans the schedule. ``epoch`` in the course's formulas is
    ``step // steps_per_epoch``. Cosine anneals to 0 at ``total_steps`` (PyTorch's
    ``CosineAnnealingLR`` with ``eta_min=0``, stepped per batch); ``onecycle`` follows
    ``OneCycleLR``'s defaults (30% rise from lr/25, cosine down to lr/1e4) and replaces
    the warmup.

    Args:
        schedule: One of ``SCHEDULES``.
        step: Global optimizer step (0-based).
        steps_per_epoch: Batches per epoch.
        total_steps: Steps of the whole run.
        warmup_steps: Linear warmup length (ignored by onecycle).
        decay_rate: Step gamma, exponential base or inverse-time rate.
        step_size: Epochs between step drops.

    Returns:
        The multiplier of ``lr``.
    """
    epoch = step // max(steps_per_epoch, 1)
    if schedule == "onecycle":
        # torch.optim.lr_scheduler.OneCycleLR, three_phase=False, anneal_strategy="cos"
        initial, final = 1 / 25, 1 / 25 / 1e4
        up_end = 0.3 * total_steps - 1
        if step <= up_end:
            pct = step / up_end if up_end > 0 else 1.0
            return final_cos(initial, 1.0, pct)
        down = total_steps - 1 - up_end
        pct = (step - up_end) / down if down > 0 else 1.0
        return final_cos(1.0, final, min(pct, 1.0))
    if schedule == "constant":
        f = 1.0
    elif schedule == "step":
        f = decay_rate ** (epoch // step_size)
    elif schedule == "exponential":
        f = decay_rate**epoch
    elif schedule == "inverse":
        f = 1.0 / (1.0 + decay_rate * epoch)
    elif schedule == "cosine":
        f = 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    else:  # pragma: no cover (validated before)
        raise unknown_name("schedule", schedule, SCHEDULES)
    if warmup_steps and step < warmup_steps:
        f *= (step + 1) / warmup_steps
    return f


def final_cos(start: float, end: float, pct: float) -> float:
    """Cosine interpolation from ``start`` (pct 0) to ``end`` (pct 1)."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
