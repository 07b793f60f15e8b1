"""The classify job: data + model + ``fit`` + a run folder; and ``evaluate`` / ``predict`` on a run.

``cnnkit train``, ``cnnkit val`` and ``cnnkit predict`` call these functions, and so
can Python users::

    result = cnnkit.train.classify.train(TrainConfig(model="lenet5", data="digits"))
    cnnkit.evaluate("runs/classify/train", split="test")
    cnnkit.predict("runs/classify/train", "digit.png")

A run folder ``runs/classify/<name>/`` holds ``config.yaml`` (every resolved setting;
``cnnkit train cfg=.../config.yaml`` repeats the run), ``results.csv`` (one row per
epoch), ``weights/last.safetensors``, ``weights/best.safetensors``,
``weights/last_state.pt`` (the training state) and ``summary.txt``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from cnnkit.data import ArraySet, Data, ImageSet, Preprocess, load, resolve_source
from cnnkit.data.images import IMAGE_SUFFIXES
from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.train.checkpoint import (
    atomic_write,
    checkpoint_files,
    load_weights_file,
    manifest_path,
)
from cnnkit.train.config import TrainConfig
from cnnkit.train.distributed import DistContext, claim_run_dir, in_torchrun
from cnnkit.train.loop import FitResult, evaluate_model, fit, resolve_epochs
from cnnkit.train.tasks import Classification

__all__ = [
    "FitPlan",
    "Prediction",
    "RunResult",
    "check",
    "evaluate",
    "load_run_model",
    "predict",
    "predict_with",
    "prepare",
    "run_config",
    "run_data",
    "train",
]

_RESUME_KEYS = {"epochs", "verbose", "save_every", "workers", "patience", "resume", "devices"}
_RESUME_KEYS |= {"nonfinite", "max_consecutive_skips"}  # e.g. skip the steps that blew up
_RESUME_KEYS |= {"report", "human", "tensorboard"}  # what is written beside, not what trains
_NATIVE = {"digits": (8, 8), "idx": (28, 28), "cifar10": (32, 32), "cifar100": (32, 32)}


@dataclass
class RunResult:
    """What :func:`train` returns.

    Attributes:
        run_dir: The run folder.
        fit: The trainer's result (model with the best weights, history).
        scores: Final scores per split, e.g. ``{"test": {"loss":..., "accuracy":..., "n":...}}``.
        data: The loaded data (splits and info).
        notes: Decisions cnnkit took (input size, epochs) and why.
    """

    run_dir: Path
    fit: FitResult
    scores: dict[str, dict[str, float]]
    data: Data
    notes: list[str] = field(default_factory=list)


def next_run_dir(root: Path, name: str | None, exist_ok: bool = False) -> Path:
    """The folder of a new run: ``root/name``, else ``name2``, ``name3``, ... when taken.

    Args:
        root: The task's folder of runs (``runs/classify``, ``runs/detect``).
        name: The run's name (None: ``train``).
        exist_ok: Reuse ``root/name`` even if it exists.

    Returns:
        The folder (not created).
    """
    base = name or "train"
    cand = root / base
    if exist_ok or not cand.exists():
        return cand
    i = 2
    while (root / f"{base}{i}").exists():
        i += 1
    return root / f"{base}{i}"


def _next_run_dir(cfg: TrainConfig) -> Path:
    return next_run_dir(Path(cfg.project) / "classify", cfg.name, cfg.exist_ok)


def _native_size(kind: str, folder: Path | None) -> tuple[int, int] | None:
    if kind in _NATIVE:
        return _NATIVE[kind]
    if folder is None:
        return None
    from PIL import Image

    if kind == "manifest":  # the CSV file: look at the images beside it
        folder = folder.parent
    sizes: Counter = Counter()
    for p in sorted(folder.rglob("*"))[:5000]:
        if p.suffix.lower() in IMAGE_SUFFIXES:
            try:
                with Image.open(p) as im:
                    sizes[(im.height, im.width)] += 1
            except Exception:  # reported when decoded
                continue
            if sum(sizes.values()) >= 64:
                break
    return sizes.most_common(1)[0][0] if sizes else None


def _accepts(model: nn.Module, size: tuple[int, int], channels: int) -> bool:
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, channels, *size))
        return True
    except Exception:  # any failure means "not this size"
        return False
    finally:
        model.train(was)


def check(cfg: TrainConfig) -> tuple[Any, str, Path | None]:
    """The cheap checks of a training run (settings, model name, data path); reads no data.

    ``cnnkit train devices=N`` runs them before starting N processes, so a mistake is
    reported once.

    Args:
        cfg: Settings.

    Returns:
        ``(model info or None for a layer-list file, data kind, data folder or None)``.

    Raises:
        CnnkitError: On a bad setting, an unknown model or a missing data folder.
    """
    from cnnkit.models import get_model_info

    cfg.validate()
    metrics = [f"{p}_{m}" for p in ("train", "dev") for m in ("loss", *Classification.metric_names)]
    if cfg.monitor not in metrics:  # fit() checks it too, but only after the data is read
        raise unknown_name("monitor metric", cfg.monitor, metrics)
    is_yaml = str(cfg.model).endswith((".yaml", ".yml"))
    info = None if is_yaml else get_model_info(cfg.model)
    if is_yaml and not Path(cfg.model).is_file():
        raise CnnkitError(f"model file {cfg.model!r} does not exist.")
    if cfg.model_args:  # a wrong option or value fails here, before the data is read
        from cnnkit.models import create

        with torch.random.fork_rng():
            create(cfg.model, **cfg.model_args)
    kind, folder = resolve_source(cfg.data, cfg.data_dir)
    if kind == "arrays":
        assert folder is not None
        _check_arrays(cfg, info, folder)
    elif info is not None and info.dims != 2:
        raise CnnkitError(
            f"model {cfg.model} takes {_DIMS_WORDS[info.dims]} but data={cfg.data} holds 2D "
            f"images; pass a folder of {'.npy/.csv signals' if info.dims == 1 else '.npy volumes'}"
            f" (cnnkit data synth {'signals' if info.dims == 1 else 'volumes'} out=DIR makes one)"
            f" or use an image model, e.g. model=lenet5."
        )
    return info, kind, folder


_DIMS_WORDS = {1: "1D signals", 2: "2D images", 3: "3D volumes"}


def _models_for(dims: int) -> list[str]:
    """Registered models for inputs with ``dims`` spatial axes (for a suggestion)."""
    from cnnkit.models import get_model_info, list_models

    return [n for n in list_models() if get_model_info(n).dims == dims]


def _check_arrays(cfg: TrainConfig, info: Any, folder: Path) -> tuple[int, tuple[int, ...]]:
    """The cheap checks of a run on signals or volumes: the model's dims, ``size=`` and
    augmentation, from the folder's first file.

    Args:
        cfg: Settings.
        info: The zoo model's info (None for a layer-list file).
        folder: The data folder.

    Returns:
        ``(dims, shape (n_C, *spatial))`` of the data.
    """
    from cnnkit.data.signals import describe, peek_folder
    from cnnkit.train.config import AUG_OPS

    dims, shape, _ = peek_folder(folder)
    what = describe(dims, shape)
    model_dims = info.dims if info is not None else None
    if model_dims is None:  # a layer-list file: its input line says
        import yaml

        from cnnkit import shapes

        try:
            doc = yaml.safe_load(Path(cfg.model).read_text())
            model_dims = len(shapes.parse_size(str(doc["input"]), what="input")) - 1
        except Exception:  # the builder reports a broken file itself
            model_dims = None
    if model_dims is not None and model_dims != dims:
        fit = _models_for(dims)
        use = f"use model={fit[0]}" if fit else "use a model for them"
        raise CnnkitError(
            f"model {cfg.model} takes {_DIMS_WORDS.get(model_dims, f'{model_dims}D inputs')} "
            f"but data={cfg.data} holds {what}; {use}."
        )
    if cfg.size is not None:
        want = [cfg.size] * dims if isinstance(cfg.size, int) else list(cfg.size)
        if want != list(shape[1:]):
            raise CnnkitError(
                f"size={cfg.size} does not match data={cfg.data}, which holds {what}; signals "
                "and volumes are not resampled: drop size=."
            )
    ops = [k for k in AUG_OPS if getattr(cfg, k)]
    if ops or cfg.aug not in ("default", "none"):
        k = ops[0] if ops else "aug"
        v = f"{getattr(cfg, k):g}" if ops else cfg.aug
        raise CnnkitError(
            f"{k}={v} is an image augmentation and data={cfg.data} holds {what}; "
            f"{'drop ' + k + '=' if ops else 'use aug=none'} (signals and volumes are trained "
            "without augmentation)."
        )
    return dims, shape


def prepare(cfg: TrainConfig) -> tuple[Data, nn.Module, list[str]]:
    """Check the settings, load the data and build the model (no training).

    Cheap checks come first (settings, model name, data path), so a mistake is
    reported before any data is read.

    Args:
        cfg: Settings.

    Returns:
        ``(data, model, notes)``.
    """
    from cnnkit.models import create

    info, kind, folder = check(cfg)
    if kind == "arrays":
        return _prepare_arrays(cfg, folder)  # type: ignore[arg-type]
    notes: list[str] = []
    size = cfg.size
    if isinstance(size, int):
        size = (size, size)
    channels_guess = (
        3 if kind in ("cifar10", "cifar100") else 1 if kind in ("digits", "idx") else None
    )
    if size is None:
        native = _native_size(kind, folder)
        c = channels_guess or (info.input_size[-1] if info else 3)
        torch.manual_seed(cfg.seed)
        probe = create(cfg.model, in_channels=c, **cfg.model_args) if info else create(cfg.model)
        if native is not None and _accepts(probe, native, c):
            size = native
            notes.append(
                f"input {native[0]}x{native[1]} (the data's own size; the model accepts it)"
            )
        elif info is not None:
            size = info.input_size[:2]
            why = f"the data's {native[0]}x{native[1]} does not fit it" if native else "its default"
            notes.append(
                f"input {size[0]}x{size[1]}: {cfg.model}'s input size ({why}); images are resized"
            )
        else:
            size = getattr(probe, "input_size", None)
            size = tuple(size[:2]) if size else native
    data = load_splits(cfg, size)
    K = data.info.num_classes
    outputs = 1 if K == 2 and cfg.loss in ("auto", "bce") else K
    if data.info.multilabel:  # one sigmoid per label, even for two labels
        if cfg.loss == "ce":
            raise CnnkitError(
                "loss=ce is a softmax over classes, but this data is multi-label (a CSV "
                "manifest); use loss=auto or loss=bce (one sigmoid per label)."
            )
        outputs = K
        notes.append(
            f"multi-label: {K} sigmoid outputs ({', '.join(data.info.classes)}), logistic loss "
            "averaged over the labels present (? skipped)"
        )
    torch.manual_seed(cfg.seed)
    model = create(
        cfg.model,
        num_classes=outputs,
        in_channels=data.info.preprocess.channels,
        **cfg.model_args,
    )
    if outputs == 1 and not data.info.multilabel:
        notes.append(
            "two classes: one sigmoid output with the logistic loss (loss=ce for a 2-way softmax)"
        )
    return data, model, notes


def _prepare_arrays(cfg: TrainConfig, folder: Path) -> tuple[Data, nn.Module, list[str]]:
    """:func:`prepare` for a folder of signals or volumes: read them as they are (no
    resizing), build the model for their channels, and try it on one example."""
    from cnnkit.data.signals import describe
    from cnnkit.models import create

    data = load_splits(cfg, None)
    pre = data.info.preprocess
    shape = (pre.channels, *pre.size)
    notes = [f"input {describe(pre.dims, shape)}, normalized per channel (train split's mean/std)"]
    K = data.info.num_classes
    outputs = 1 if K == 2 and cfg.loss in ("auto", "bce") else K
    torch.manual_seed(cfg.seed)
    model = create(cfg.model, num_classes=outputs, in_channels=pre.channels, **cfg.model_args)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *shape))  # (1, n_C, *spatial): one example, shape check only
    except CnnkitError as e:
        raise CnnkitError(f"model {cfg.model} does not take data={cfg.data}: {e}") from None
    except RuntimeError as e:
        raise CnnkitError(
            f"model {cfg.model} cannot run on data={cfg.data}, which holds "
            f"{describe(pre.dims, shape)} ({str(e).splitlines()[0]}); use larger examples or "
            "another model."
        ) from None
    finally:
        model.train(was)
    n, b = len(data.train), int(cfg.batch)
    if b == 1 or n % b == 1:  # a batch of one example will train: can batch norm take it?
        import copy

        try:
            copy.deepcopy(model).train()(torch.zeros(1, *shape))  # a copy: stats untouched
        except ValueError as e:
            raise CnnkitError(
                f"{describe(pre.dims, shape)} shrink to one value per channel before a batch "
                f"norm, which cannot train on a batch of one example (batch={b} with {n} "
                f"training examples leaves one); use another batch= or longer examples "
                f"({str(e).splitlines()[0]})."
            ) from None
    if outputs == 1:
        notes.append(
            "two classes: one sigmoid output with the logistic loss (loss=ce for a 2-way softmax)"
        )
    return data, model, notes


def _args_text(args: dict[str, Any]) -> str:
    """`` (layers=3, units=64)`` for a model's options, ``""`` for none."""
    return f" ({', '.join(f'{k}={v}' for k, v in args.items())})" if args else ""


def _meta(cfg: TrainConfig, data: Data, model: nn.Module) -> dict[str, Any]:
    out_features = _out_features(model, data)
    return {
        "task": "classify",
        "model": str(cfg.model),
        "model_args": dict(cfg.model_args),
        "num_outputs": out_features,
        "in_channels": data.info.preprocess.channels,
        "preprocess": data.info.preprocess.to_dict(),
        "classes": data.info.classes,
        "multilabel": data.info.multilabel,
        "data": str(cfg.data),
    }


def _out_features(model: nn.Module, data: Data) -> int:
    get = getattr(model, "get_classifier", None)
    if callable(get):
        return int(get().out_features)
    if data.info.multilabel:
        return data.info.num_classes
    return 1 if data.info.num_classes == 2 else data.info.num_classes


def load_splits(
    cfg: TrainConfig, size: tuple[int, int] | None, channels: int | None = None
) -> Data:
    """The data and splits that settings name: the same source, seed and split fractions,
    so a run's ``config.yaml`` rebuilds exactly the splits it was trained and scored on.

    ``classes`` keeps only those classes (relabelled 0..K-1 in the order given) and
    ``per_class`` only that many training images of each (the first in a permutation
    fixed by the split seed); dev and test keep all their images of those classes.

    Args:
        cfg: The settings (e.g. ``TrainConfig.from_dict`` of a run's ``config.yaml``).
        size: Input ``(n_H, n_W)`` the images are resized to (a run's preprocess size).
        channels: 1 or 3 to convert the images to (None: the source's).

    Returns:
        The loaded :class:`~cnnkit.data.Data`.
    """
    data = load(
        cfg.data,
        size=size,
        channels=channels,
        dev=cfg.dev,
        test=cfg.test,
        train_dev=cfg.train_dev,
        seed=cfg.seed if cfg.split_seed is None else cfg.split_seed,
        data_dir=cfg.data_dir,
        download=cfg.download,
        on_error=cfg.on_error,
        max_bad_fraction=cfg.max_bad_fraction,
    )
    if cfg.classes is None and cfg.per_class is None:
        return data
    return subset_classes(
        data, cfg.classes, cfg.per_class, cfg.seed if cfg.split_seed is None else cfg.split_seed
    )


def subset_classes(
    data: Data, classes: Sequence[Any] | None, per_class: int | None, seed: int = 0
) -> Data:
    """Keep some classes, and a few training images per class (few-shot transfer).

    Args:
        data: Loaded data.
        classes: Class names or indices to keep, in their new order (None: all).
        per_class: Training images kept per class (None: all); dev and test keep theirs.
        seed: Seed of which training images are kept.

    Returns:
        A new :class:`~cnnkit.data.Data`; normalization statistics from the new training split.
    """
    from dataclasses import replace

    from cnnkit.data.datasets import array_stats, channel_stats

    names = list(data.info.classes)
    keep = list(range(len(names)))
    if classes is not None:
        keep = []
        for c in classes:
            if str(c) in names:
                keep.append(names.index(str(c)))
            elif isinstance(c, int) and not isinstance(c, bool) and 0 <= c < len(names):
                keep.append(c)
            else:
                raise unknown_name("class", str(c), names)
        if len(set(keep)) != len(keep):
            raise CnnkitError(f"classes lists a class twice: {list(classes)}; list each once.")
        if len(keep) < 2:
            raise CnnkitError("classes must keep at least two classes; e.g. classes=[5, 6, 7].")
    new_label = torch.full((len(names),), -1, dtype=torch.long)
    new_label[torch.tensor(keep)] = torch.arange(len(keep))
    pre = data.info.preprocess

    def take(ds: ImageSet | ArraySet | None, limit: int | None) -> ImageSet | ArraySet | None:
        if ds is None:
            return None
        lab = new_label[ds.labels]
        idx = torch.nonzero(lab >= 0).flatten()
        if limit is not None:
            g = torch.Generator().manual_seed(int(seed) + 7919)
            perm = idx[torch.randperm(len(idx), generator=g)]
            chosen = [perm[lab[perm] == k][:limit] for k in range(len(keep))]
            short = [names[keep[k]] for k, c in enumerate(chosen) if len(c) < limit]
            if short:
                raise CnnkitError(
                    f"per_class={limit}: class {short[0]!r} has fewer training images; "
                    "pass a smaller per_class."
                )
            idx = torch.sort(torch.cat(chosen)).values
        ids = [ds.ids[i] for i in idx.tolist()] if ds.ids is not None else None
        if isinstance(ds, ArraySet):
            return ArraySet(ds.x[idx], lab[idx], pre, ds.name, ids)
        return ImageSet(ds.images[idx], lab[idx], pre, ds.name, ids)

    train = take(data.train, per_class)
    assert train is not None
    if isinstance(train, ArraySet):
        mean, std = array_stats(train.x)
    else:
        mean, std = channel_stats(train.images)
    pre = Preprocess(pre.size, pre.channels, mean, std, pre.dims)
    sets = {
        k: take(getattr(data, k), per_class if k == "train" else None)
        for k in ("train", "dev", "test", "train_dev")
    }
    for ds in sets.values():
        if ds is not None:
            ds.preprocess = pre
    info = replace(data.info, classes=[names[i] for i in keep], preprocess=pre)
    return Data(
        train=sets["train"],  # type: ignore[arg-type]
        dev=sets["dev"] if sets["dev"] is not None and len(sets["dev"]) else None,
        test=sets["test"] if sets["test"] is not None and len(sets["test"]) else None,
        info=info,
        train_dev=sets["train_dev"],
    )


_load_splits = load_splits  # the name older callers use


def run_config(run: str | os.PathLike) -> TrainConfig:
    """The settings a run folder was trained with (its ``config.yaml``).

    Args:
        run: Run folder.

    Returns:
        The :class:`TrainConfig`.
    """
    import yaml

    r = Path(run)
    if not r.is_dir():
        raise CnnkitError(f"run folder {str(r)!r} does not exist; runs are in runs/classify/.")
    if not (r / "config.yaml").is_file():
        raise CnnkitError(
            f"{str(r)!r} is not a run folder (no config.yaml); pass run=runs/classify/NAME."
        )
    return TrainConfig.from_dict(
        yaml.safe_load((r / "config.yaml").read_text()), source=str(r / "config.yaml")
    )


def run_data(
    run: str | os.PathLike,
    meta: Mapping[str, Any],
    cache: dict[Any, Any] | None = None,
) -> Data:
    """A run's own data and splits, rebuilt from its ``config.yaml`` (the same seeded split).

    Args:
        run: Run folder.
        meta: Its weights' metadata (the input size is the weights' preprocessing).
        cache: Loaded data shared between calls: runs with the same data and split
            settings (an ensemble, a model selection) read it once.

    Returns:
        The :class:`~cnnkit.data.Data`.
    """
    from cnnkit.data import Preprocess

    cfg = run_config(run)
    pre = Preprocess.from_dict(meta["preprocess"])
    size, channels = tuple(pre.size), pre.channels
    split_seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
    keys = ("data", "dev", "test", "train_dev", "data_dir", "on_error", "max_bad_fraction")
    keys += ("classes", "per_class")
    key = (*(str(getattr(cfg, k)) for k in keys), split_seed, size, channels)
    if cache is None:
        return load_splits(cfg, size, channels)
    if key not in cache:
        cache[key] = load_splits(cfg, size, channels)
    return cache[key]


def split_of(data: Data, split: str, meta: Mapping[str, Any]) -> ImageSet | ArraySet:
    """One split of ``data`` for weights with ``meta``, refused when missing or when its
    classes are not the weights' classes.

    Args:
        data: Loaded data.
        split: ``test``, ``dev``, ``train_dev`` or ``train``.
        meta: The weights' metadata (its ``classes``).

    Returns:
        The split's :class:`~cnnkit.data.ImageSet` (:class:`~cnnkit.data.ArraySet` for
        signals and volumes).
    """
    ds = getattr(data, split)
    if ds is None:
        raise CnnkitError(f"the data has no {split} split; pass split=dev or split=test.")
    if data.info.classes != list(meta["classes"]):
        raise CnnkitError(
            f"the data's classes {data.info.classes[:5]} differ from the model's "
            f"{list(meta['classes'])[:5]}; evaluate on data with the same classes."
        )
    return ds


def percent(q: float, digits: int = 1) -> str:
    """``q`` (a fraction) as a percentage that never rounds to 100% or 0% unless exact.

    Args:
        q: A fraction in [0, 1].
        digits: Decimals shown when they suffice.

    Returns:
        For example ``"99.4%"``, ``"99.98%"`` (not ``"100.0%"``), ``"100.0%"`` only for 1.
    """
    for d in range(digits, digits + 6):
        text = f"{100 * q:.{d}f}"
        if (float(text) != 100 or q >= 1) and (float(text) != 0 or q <= 0):
            return text + "%"
    return text + "%"


def score_line(split: str, s: Mapping[str, float]) -> str:
    """``test accuracy 99.4%  (loss 0.129, 359 images)``: a split's result, said plainly."""
    loss, n = s["loss"], int(s["n"])
    return f"{split} accuracy {percent(s['accuracy'])}  (loss {loss:.3f}, {n:,} images)"


@dataclass
class FitPlan:
    """What :func:`fit` trains for a prepared run, when it is not simply the model on the data.

    Transfer learning (``cnnkit.transfer``) hands one to :func:`train`: a head trained on
    cached features, or parameter groups with their own learning rates and start epochs.

    Attributes:
        model: What ``fit`` trains; it shares its modules with the run's model, and its
            ``state_dict`` is the run's model's (so the checkpoints are the whole network).
        train: Training examples for ``model``.
        dev: Dev examples for ``model`` (None: none).
        param_groups: See :func:`cnnkit.train.build_optimizer` (None: every trainable
            parameter at ``lr``).
        notes: Lines printed at the start of the run.
        meta: Extra values saved with the weights.
        settings: Settings ``fit`` uses instead of the run's (e.g. ``workers=0`` for
            data already in memory); ``config.yaml`` keeps the run's.
    """

    model: nn.Module
    train: Dataset
    dev: Dataset | None
    param_groups: list[dict[str, Any]] | None = None
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


Builder = Callable[[TrainConfig], "tuple[Data, nn.Module, list[str]]"]
Planner = Callable[[TrainConfig, Data, nn.Module], FitPlan]
After = Callable[["RunResult"], None]
_TRANSFER_KEYS = ("pretrained", "freeze", "bn", "fine_tune", "cache_features")


def transfer_settings(cfg: TrainConfig) -> list[str]:
    """The transfer-learning settings ``cfg`` gives (``pretrained``, ``freeze``, ...): a
    run with any of them is trained by ``cnnkit.transfer.train``, not by :func:`train`.

    Args:
        cfg: Settings.

    Returns:
        Their names; empty for a plain run (``freeze=none`` or ``0`` freezes nothing).
    """
    return [
        k
        for k in _TRANSFER_KEYS
        if getattr(cfg, k) not in (None, "auto", False)
        and not (k == "freeze" and cfg.freeze in ("none", 0))
    ]


def _refuse_transfer_settings(cfg: TrainConfig) -> None:
    """Plain training ignores no setting silently: transfer settings need cnnkit.transfer."""
    given = transfer_settings(cfg)
    if given:
        raise CnnkitError(
            f"{'=, '.join(given)}= are applied by cnnkit.transfer.train(cfg), not by "
            "cnnkit.train.classify.train; call that instead (`cnnkit train` does)."
        )


def train(
    cfg: TrainConfig | None = None,
    *,
    build: Builder | None = None,
    plan: Planner | None = None,
    after: After | None = None,
    **settings: Any,
) -> RunResult:
    """Train a classifier and leave a run folder (the ``cnnkit train`` command).

    Args:
        cfg: Settings (default :class:`TrainConfig`: LeNet-5 on the bundled digits).
        build: Instead of :func:`prepare`: ``build(cfg) -> (data, model, notes)``
            (``cnnkit.transfer`` builds from pretrained weights and their preprocessing).
        plan: ``plan(cfg, data, model) -> FitPlan``: what ``fit`` trains (default: the
            model on the data).
        after: ``after(result)``, called (on the main process) once the run is scored and
            saved, before the last line; ``cnnkit train`` writes ``report.html`` with it.
        **settings: Single settings overriding ``cfg``.

    Returns:
        A :class:`RunResult`; the model holds the best weights.

    Under torchrun every process calls this: rank 0 picks the run folder (after a
    torchrun restart, the one this job started, which is then resumed), writes the files
    and prints; ``config.yaml`` records the number of processes as ``devices``.
    """
    with DistContext.from_env() as ctx:
        return _train(cfg, ctx, build, plan, after, **settings)


def _train(
    cfg: TrainConfig | None,
    ctx: DistContext,
    build: Builder | None,
    plan: Planner | None,
    after: After | None,
    **settings: Any,
) -> RunResult:
    base = (cfg or TrainConfig()).to_dict()
    base.update(settings)
    cfg = TrainConfig.from_dict(base)
    if build is None:
        _refuse_transfer_settings(cfg)
    if cfg.tensorboard:  # before any folder is made
        from cnnkit.train.tboard import require_tensorboard

        require_tensorboard()
    data, model, notes = (build or prepare)(cfg)
    root, name = Path(cfg.project) / "classify", cfg.name or "train"
    run = claim_run_dir(root, name, lambda: _next_run_dir(cfg), ctx)
    if cfg.devices > ctx.world_size and not in_torchrun():
        notes.append(
            f"devices={cfg.devices}: this Python call trains in one process; "
            f"`cnnkit train devices={cfg.devices}` or torchrun --nproc_per_node={cfg.devices} "
            "starts them all"
        )
    import yaml

    steps = -(-len(data.train) // cfg.batch)
    resolved = cfg.to_dict()
    resolved["epochs"], _ = resolve_epochs(cfg, steps)
    # images: the size trained at; signals / volumes are never resampled (their own)
    pre = data.info.preprocess
    resolved["size"] = list(pre.size) if pre.dims == 2 else None
    resolved["name"] = run.name
    resolved["devices"] = ctx.world_size
    if ctx.is_main:
        text = yaml.safe_dump(resolved, sort_keys=False)
        atomic_write(run / "config.yaml", lambda f: f.write(text.encode()))
    return _fit_and_report(
        cfg, data, model, run, notes, resume=False, ctx=ctx, plan=plan, after=after
    )


def resume(
    run_dir: str | os.PathLike,
    *,
    build: Builder | None = None,
    plan: Planner | None = None,
    after: After | None = None,
    **settings: Any,
) -> RunResult:
    """Continue an interrupted run exactly where it stopped (``cnnkit train resume=RUN``).

    Args:
        run_dir: The run folder.
        build: As in :func:`train` (``cnnkit.transfer.resume`` passes its own).
        plan: As in :func:`train`.
        after: As in :func:`train`.
        **settings: Only ``epochs`` (re-plans the schedule), ``patience``, ``verbose``,
            ``save_every`` and ``workers`` may change.

    Returns:
        A :class:`RunResult`.
    """
    with DistContext.from_env() as ctx:
        return _resume(run_dir, ctx, build, plan, after, **settings)


def _resume(
    run_dir: str | os.PathLike,
    ctx: DistContext,
    build: Builder | None,
    plan: Planner | None,
    after: After | None,
    **settings: Any,
) -> RunResult:
    import yaml

    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise CnnkitError(
            f"{str(run)!r} is not a run folder (no config.yaml); pass resume=runs/classify/NAME."
        )
    bad = sorted(set(settings) - _RESUME_KEYS)
    if bad:
        raise CnnkitError(
            f"cannot change {', '.join(bad)} when resuming (the run would not be the same run); "
            "start a new run with cfg=" + str(run / "config.yaml") + " instead."
        )
    saved = yaml.safe_load((run / "config.yaml").read_text())
    changes = {k: v for k, v in settings.items() if k != "resume"}
    saved.update(changes)
    cfg = TrainConfig.from_dict({**saved, "exist_ok": True}, source=str(run / "config.yaml"))
    if build is None:
        _refuse_transfer_settings(cfg)
    data, model, notes = (build or prepare)(cfg)
    if changes and ctx.is_main:  # config.yaml keeps describing the run as it is now planned
        text = yaml.safe_dump(saved, sort_keys=False)
        atomic_write(run / "config.yaml", lambda f: f.write(text.encode()))
    return _fit_and_report(
        cfg, data, model, run, notes, resume=True, ctx=ctx, plan=plan, after=after
    )


def _fit_and_report(
    cfg: TrainConfig,
    data: Data,
    model: nn.Module,
    run: Path,
    notes: list[str],
    *,
    resume: bool,
    ctx: DistContext,
    plan: Planner | None = None,
    after: After | None = None,
) -> RunResult:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 160)

    def say(line: str) -> None:
        if cfg.verbose and ctx.is_main:
            console.print(line, markup=False, soft_wrap=True)

    sizes = ", ".join(f"{k} {len(v):,}" for k, v in data.splits().items())
    arrays = isinstance(data.train, ArraySet)
    say(
        f"{'resuming' if resume else 'training'} {cfg.model}{_args_text(cfg.model_args)} on "
        f"{data.info.name} "
        f"({sizes} {'examples' if arrays else 'images'}) -> {run}"
    )
    if data.info.skipped and ctx.is_main:
        notes = [_write_skipped(run, data), *notes]
    how = plan(cfg, data, model) if plan is not None else FitPlan(model, data.train, data.dev)
    notes = [*notes, *how.notes]
    for n in notes:
        say(n)
    result = fit(
        how.model,
        how.train,
        how.dev,
        config=cfg,
        run_dir=run,
        resume=resume,
        meta={**_meta(cfg, data, model), **how.meta},
        param_groups=how.param_groups,
        **how.settings,
    )
    scores: dict[str, dict[str, float]] = {}
    task = Classification(cfg.loss, cfg.label_smoothing)
    model.eval()  # the whole network, holding the best weights (fit's model shares them)
    for split in ("train_dev", "dev", "test"):
        ds = getattr(data, split)
        if ds is not None:
            scores[split] = evaluate_model(model, ds, task=task, dist=ctx)
    lines = []
    if result.best_epoch is not None:
        lines.append(
            f"best weights: epoch {result.best_epoch} of {result.epochs} "
            f"({result.monitor} {result.best:.4g})"
        )
    lines += [score_line(k, v) for k, v in scores.items()]
    # the speed settings the run trained with, and why (printed at its start too)
    speed = [n for n in result.notes if n.startswith("speed: ")]
    text = "\n".join(lines + speed) + "\n"
    if ctx.is_main:
        atomic_write(run / "summary.txt", lambda f: f.write(text.encode()))
    for line in lines:
        say(line)
    out = RunResult(run_dir=run, fit=result, scores=scores, data=data, notes=notes + result.notes)
    if after is not None and ctx.is_main:
        after(out)
    example = "FILE.npy" if isinstance(data.train, ArraySet) else "IMAGE"
    nxt = f"cnnkit val run={run}; cnnkit predict run={run} source={example}"
    say(f"run saved in {run}/: {saved_files(run)} ({nxt})")
    return out


def saved_files(run: Path) -> str:
    """What a run folder holds, for the last line: ``report.html, plots/, results.csv, ...``.

    Args:
        run: The run folder.

    Returns:
        The names, the page first, folders with a trailing ``/``.
    """
    first = ["report.html", "plots", "results.csv", "weights", "tensorboard", "config.yaml"]
    names = [p.name for p in run.iterdir()] if run.is_dir() else []
    order = sorted(names, key=lambda n: (first.index(n) if n in first else len(first), n))
    return ", ".join(n + "/" if (run / n).is_dir() else n for n in order)


def _write_skipped(run: Path, data: Data) -> str:
    """Write ``skipped.csv`` (``path,reason``) in the run folder; return the note saying so."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "reason"])
    writer.writerows([b.path, b.reason] for b in data.info.skipped)
    atomic_write(run / "skipped.csv", lambda f: f.write(buf.getvalue().encode()))
    first = data.info.skipped[0]
    return (
        f"skipped {len(data.info.skipped)} undecodable image(s) (on_error=skip), "
        f"e.g. {first.path} ({first.reason}); all listed in {run / 'skipped.csv'}"
    )


def load_run_model(
    run: str | os.PathLike | None = None, weights: str | os.PathLike | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained model from a run folder (best weights) or a cnnkit weights file.

    Args:
        run: Run folder (uses ``weights/best.safetensors``, else ``last``).
        weights: A ``.safetensors`` file written by cnnkit.

    Returns:
        ``(model in eval mode, metadata)`` with ``preprocess`` and ``classes`` in the metadata.
    """
    from cnnkit.models import create

    if (run is None) == (weights is None):
        raise CnnkitError("pass exactly one of run=runs/classify/NAME or weights=FILE.safetensors.")
    if run is not None:
        r = Path(run)
        if not r.is_dir():
            raise CnnkitError(f"run folder {str(r)!r} does not exist; runs are in runs/classify/.")
        # best, verified by its manifest; last only in a run that never had a best
        # (no best manifest at all), never as a silent fallback for a damaged best
        name = "best" if manifest_path(r / "weights", "best").exists() else "last"
        if name == "last" and (r / "weights" / "best.safetensors").exists():
            name = "best"  # a best file without its manifest: the check refuses it
        path = checkpoint_files(r / "weights", name)[f"{name}.safetensors"]  # read-only
    else:
        path = Path(weights)  # type: ignore[arg-type]
        if path.suffix != ".safetensors":
            raise CnnkitError(f"weights={str(path)!r}: pass a .safetensors file written by cnnkit.")
        path = _verify_if_listed(path)
    state, meta = load_weights_file(path)
    if meta.get("task") != "classify" or "preprocess" not in meta:
        raise CnnkitError(
            f"{str(path)!r} has no cnnkit metadata (model, preprocessing, classes); use a "
            "file from "
            "a cnnkit run, or build the model with cnnkit.models.create(..., weights=FILE)."
        )
    model = create(
        meta["model"],
        num_classes=int(meta["num_outputs"]),
        in_channels=int(meta["in_channels"]),
        **meta.get("model_args", {}),
    )
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CnnkitError(
            f"{str(path)!r} does not fit {meta['model']} ({str(e).splitlines()[0]})."
        ) from None
    model.eval()
    meta["weights_file"] = str(path)
    return model, meta


def _verify_if_listed(path: Path) -> Path:
    """A run's weights file (``NAME.safetensors`` beside ``NAME.manifest.json``) is checked
    against its manifest; a standalone file relies on its own embedded digest."""
    if manifest_path(path.parent, path.stem).exists():
        return checkpoint_files(path.parent, path.stem).get(path.name, path)
    return path


def evaluate(
    run: str | os.PathLike | nn.Module | None = None,
    data: str | os.PathLike | Data | Dataset | None = None,
    *,
    weights: str | os.PathLike | None = None,
    split: str = "test",
    batch: int = 256,
) -> dict[str, float]:
    """Score a classifier on a split (``cnnkit val``; ``cnnkit.evaluate`` in Python).

    With a run folder, its ``config.yaml`` rebuilds the same splits (same seed), or
    ``data`` names another source, read with the run's preprocessing. Any ``nn.Module``
    works too, with any torch ``Dataset`` of ``(x, y)`` (or a :class:`cnnkit.data.Data`).

    Args:
        run: Run folder, or a model.
        data: Dataset name / folder, a loaded :class:`~cnnkit.data.Data`, or a torch Dataset.
        weights: Instead of ``run``: a cnnkit ``.safetensors`` file (then ``data`` is needed).
        split: ``test``, ``dev``, ``train_dev`` or ``train`` (for names, folders and Data).
        batch: Batch size.

    Returns:
        ``{"loss", "accuracy", "n"}``.
    """

    if split not in ("test", "dev", "train_dev", "train"):
        raise unknown_name("split", str(split), ["test", "dev", "train_dev", "train"])
    _check_count("batch", batch, 256)
    if isinstance(run, nn.Module):
        if data is None:
            raise CnnkitError("evaluate(model, data): pass the data to score the model on.")
        ds = getattr(data, split) if isinstance(data, Data) else data
        if ds is None or isinstance(ds, (str, os.PathLike)):
            raise CnnkitError(f"evaluate(model, ...) needs a Dataset or Data with a {split} split.")
        return evaluate_model(run, ds, batch=batch)
    model, _, ds = run_split(run, data, weights=weights, split=split)
    return evaluate_model(model, ds, batch=batch)


def run_split(
    run: str | os.PathLike | None,
    data: str | os.PathLike | Data | Dataset | None = None,
    *,
    weights: str | os.PathLike | None = None,
    split: str = "test",
    cache: dict[Any, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any], Dataset]:
    """A run's (or a weights file's) network and the split it is scored on.

    Args:
        run: Run folder (its best weights and, without ``data``, its own seeded splits).
        data: Another source (name or folder), a :class:`~cnnkit.data.Data`, or a torch
            Dataset (used as it is).
        weights: Instead of ``run``: a cnnkit ``.safetensors`` file (then ``data`` is needed).
        split: ``test``, ``dev``, ``train_dev`` or ``train`` (for names, folders and Data).
        cache: Loaded data shared between calls (an ensemble reads its splits once).

    Returns:
        ``(model in eval mode, the weights' metadata, the split)``; an ImageSet split is
        a copy normalized as the weights expect.
    """
    model, meta = load_run_model(run, weights)
    pre = Preprocess.from_dict(meta["preprocess"])
    if isinstance(data, Dataset) and not isinstance(data, Data):
        return model, meta, data
    cache = {} if cache is None else cache
    if isinstance(data, Data):
        d = data
    elif data is None and run is not None:
        d = run_data(run, meta, cache)
    elif data is not None:
        from cnnkit.data.sources import resolve_source

        arrays = resolve_source(data)[0] == "arrays"
        if arrays != (pre.dims != 2):
            trained = {1: "1D signals", 2: "2D images", 3: "3D volumes"}[pre.dims]
            holds = "signals or volumes" if arrays else "2D images"
            raise CnnkitError(
                f"the weights were trained on {trained} but data={data} holds {holds}; "
                "score them on data of the kind they learned."
            )
        key = (str(data), tuple(pre.size), pre.channels)
        if key not in cache:
            cache[key] = load(data, size=pre.size, channels=pre.channels)
        d = cache[key]
    else:
        raise CnnkitError("weights= needs data= to evaluate on (a dataset name or folder).")
    ds = split_of(d, split, meta)
    # the weights' normalization, on a copy: the (cached or given) data stays as it was
    if isinstance(ds, ArraySet):
        return model, meta, ds.with_preprocess(pre)
    return model, meta, ImageSet(ds.images, ds.labels, pre, ds.name, ds.ids)


@dataclass
class Prediction:
    """One image's prediction.

    Attributes:
        path: The image file.
        label: Predicted class name.
        prob: Its probability.
        top: Up to 5 ``(class, probability)`` pairs, best first.
    """

    path: str
    label: str
    prob: float
    top: list[tuple[str, float]]


def predict(
    run: str | os.PathLike | nn.Module | None = None,
    source: str | os.PathLike | Sequence[str | os.PathLike] | torch.Tensor = "",
    *,
    weights: str | os.PathLike | None = None,
    preprocess: Preprocess | None = None,
    classes: Sequence[str] | None = None,
    batch: int = 64,
    topk: int = 5,
) -> list[Prediction]:
    """Classify images (``cnnkit predict``; ``cnnkit.predict`` in Python).

    A run or weights file brings its own preprocessing (size, channels, mean/std) and
    class names. Any ``nn.Module`` works too: give ``preprocess`` for image files, or
    pass a tensor batch ``(N, n_C, n_H, n_W)`` that is already the model's input.

    Args:
        run: Run folder, or a model.
        source: An image, a folder of images (searched recursively), a list of files, or
            a tensor batch.
        weights: Instead of ``run``: a cnnkit ``.safetensors`` file.
        preprocess: For a bare model and image files.
        classes: Class names for a bare model (default ``"0"``, ``"1"``, ...).
        batch: Images per forward pass.
        topk: Classes listed per image.

    Returns:
        One :class:`Prediction` per image, in file (or row) order.
    """
    _check_count("batch", batch, 64)
    _check_count("topk", topk, 5)
    if isinstance(run, nn.Module):
        model, pre = run, preprocess
        names = list(classes) if classes is not None else None
        was = model.training
        model.eval()
    else:
        model, meta = load_run_model(run, weights)
        pre, names, was = Preprocess.from_dict(meta["preprocess"]), list(meta["classes"]), False
    multilabel = not isinstance(run, nn.Module) and bool(meta.get("multilabel"))
    try:
        return predict_with(
            model, source, preprocess=pre, classes=names, batch=batch, topk=topk,
            multilabel=multilabel,
        )  # fmt: skip
    finally:
        model.train(was)


def predict_with(
    forward: Callable[[torch.Tensor], torch.Tensor],
    source: str | os.PathLike | Sequence[str | os.PathLike] | torch.Tensor,
    *,
    preprocess: Preprocess | None = None,
    classes: Sequence[str] | None = None,
    batch: int = 64,
    topk: int = 5,
    multilabel: bool = False,
) -> list[Prediction]:
    """Classify images with any forward function: the decode/resize/normalize and top-k of
    :func:`predict`, shared by every backend (``cnnkit.export`` runs ONNX Runtime through it).

    Args:
        forward: Maps a float32 batch ``(N, n_C, n_H, n_W)`` to logits ``(N, K)``
            (an ``nn.Module`` in eval mode, or an ONNX Runtime wrapper).
        source: An image, a folder of images, a list of files, or a tensor batch.
        preprocess: Size, channels and mean/std applied to image files.
        classes: Class names (default ``"0"``, ``"1"``, ...).
        batch: Images per forward pass.
        topk: Classes listed per image.
        multilabel: One sigmoid per label (a multi-label run): ``top`` lists each label's
            own probability and ``label`` joins the labels above 0.5 with ``+``.

    Returns:
        One :class:`Prediction` per image, in file (or row) order.
    """
    _check_count("batch", batch, 64)
    _check_count("topk", topk, 5)
    pre = preprocess
    names = list(classes) if classes is not None else None
    dims = pre.dims if pre is not None else 2
    if isinstance(source, torch.Tensor):
        if source.ndim != 2 + dims and not (pre is None and source.ndim in (3, 5)):
            want = {1: "(N, n_C, n)", 2: "(N, n_C, n_H, n_W)", 3: "(N, n_C, n_D, n_H, n_W)"}
            raise CnnkitError(f"a tensor source must be {want[dims]}, got {tuple(source.shape)}.")
        inputs = list(source.split(batch))
        paths = [f"[{i}]" for i in range(len(source))]
    else:
        if pre is None:
            raise CnnkitError("predict(model, files) needs preprocess= (size, channels, mean/std).")
        if dims != 2:  # signals / volumes: .npy and .csv files
            from cnnkit.data.signals import array_files

            files = array_files(source)
        else:
            files = _image_files(source)
        paths = [str(f) for f in files]
        inputs = [pre.load_files(files[i : i + batch]) for i in range(0, len(files), batch)]
    out: list[Prediction] = []
    with torch.no_grad():
        for x in inputs:
            logits = forward(x)
            if multilabel:  # one sigmoid per label, independent probabilities
                probs = torch.sigmoid(logits)
            elif logits.shape[1] == 1:  # binary: p(class 1) = sigmoid(z)
                p1 = torch.sigmoid(logits[:, 0])
                probs = torch.stack([1 - p1, p1], 1)  # (B,) -> (B, 2)
            else:
                probs = logits.softmax(1)
            if names is None:
                names = [str(j) for j in range(probs.shape[1])]
            vals, idx = probs.topk(min(topk, probs.shape[1]), dim=1)
            for r, (v, ix) in enumerate(zip(vals.tolist(), idx.tolist())):
                top = [(names[j], float(q)) for j, q in zip(ix, v)]
                label = top[0][0]
                if multilabel:  # every label above 0.5, in column order
                    label = "+".join(c for c, q in zip(names, probs[r].tolist()) if q > 0.5)
                out.append(Prediction(paths[len(out)], label or "none", top[0][1], top))
    return out


def _check_count(key: str, v: Any, example: int) -> None:
    """``batch`` / ``topk`` of ``evaluate`` and ``predict``: a whole number >= 1."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise CnnkitError(f"{key} must be an integer, got {v!r}; e.g. {key}={example}.")
    if v < 1:
        raise CnnkitError(f"{key} must be >= 1, got {v!r}; e.g. {key}={example}.")


def _image_files(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    if isinstance(source, (list, tuple)):
        return [Path(s) for s in source]
    src = Path(source)
    if not str(source) or not src.exists():
        raise CnnkitError(
            f"source={str(source)!r} does not exist; pass an image file or a folder of images."
        )
    if not src.is_dir():
        return [src]
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CnnkitError(f"no images (.png, .jpg, ...) in {str(src)!r}.")
    return files
