"""The one training loop: mini-batch gradient descent with checkpoints, resume and early stopping.

``fit(model, train, dev)`` accepts any ``nn.Module`` and any torch ``Dataset`` yielding
``(x, y)``. An in-memory :class:`cnnkit.data.ImageSet` (images) or
:class:`cnnkit.data.ArraySet` (1D signals, 3D volumes) is served batch-wise from
memory (no per-sample Python work); other datasets go through a ``DataLoader``.
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, default_collate

from cnnkit.data.augment import Augment, TensorBatches, epoch_order, shard_batch
from cnnkit.data.datasets import (
    ArrayBatches,
    ArraySet,
    ImageSet,
    Preprocess,
    default_workers,
    seed_worker,
)
from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.train.checkpoint import (
    CheckpointError,
    atomic_write,
    load_state,
    load_weights_file,
    manifest_path,
    remove_leftovers,
    save_checkpoint,
    state_bytes,
    verify_checkpoint,
    weights_bytes,
)
from cnnkit.train.config import TrainConfig, lr_factor
from cnnkit.train.distributed import DistContext, rank_seed, shard_weight
from cnnkit.train.progress import Progress
from cnnkit.train.speed import SpeedChoice, autocast, resolve_speed
from cnnkit.train.tasks import Classification, Task
from cnnkit.train.tboard import MAX_IMAGES, TensorBoardLog, require_tensorboard

__all__ = [
    "FitResult",
    "array_augment",
    "build_optimizer",
    "evaluate_model",
    "fit",
    "resolve_epochs",
]

RESULTS_COLUMNS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "dev_loss",
    "dev_accuracy",
    "lr",
    "seconds",
    "img_per_s",
    "data_s",
)


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        model: The trained model, holding the best weights (by ``monitor``).
        history: One dict per epoch (the rows of ``results.csv``).
        epochs: Planned epochs.
        best_epoch: Epoch (1-based) of the best weights, or None.
        best: The best ``monitor`` value.
        monitor: The metric that chose the best weights.
        stopped_early: Whether early stopping ended the run.
        run_dir: The run folder, if any.
        notes: Things the trainer decided and said (epochs auto, re-planned schedule, ...).
        speed: The resolved speed settings (``precision``, ``memory_format``, ``compile``,
            ``step_ms``, ``reason``), also saved as ``speed`` in ``last_state.pt``.
    """

    model: nn.Module
    history: list[dict[str, float]]
    epochs: int
    best_epoch: int | None
    best: float | None
    monitor: str
    stopped_early: bool = False
    run_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    speed: dict[str, Any] = field(default_factory=dict)


class _EpochBatchSampler(Sampler[list[int]]):
    """Epoch ``e``'s mini-batches (a permutation fixed by seed and epoch) from batch ``start`` on.

    With several processes each gets its :func:`~cnnkit.data.augment.shard_batch` of every
    global mini-batch. That is what ``DistributedSampler`` + ``set_epoch`` give (a disjoint
    share of the same seeded permutation), but N processes then train on exactly the
    mini-batches of one process, nothing is padded with repeated examples, and a resumed
    run can start mid-epoch.
    """

    def __init__(
        self, n: int, batch: int, seed: int, shuffle: bool, rank: int = 0, world_size: int = 1
    ) -> None:
        self.n, self.batch, self.seed, self.shuffle = n, batch, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose permutation is served next."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        order = epoch_order(self.n, self.seed, self.epoch, self.shuffle)
        for b in range(self.start, math.ceil(self.n / self.batch)):
            idx = order[b * self.batch : (b + 1) * self.batch]
            yield shard_batch(idx, self.rank, self.world_size).tolist()

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch) - self.start


class _LoaderBatches:
    """DataLoader-backed batches with the same ``epoch(epoch, start, generator)`` interface."""

    def __init__(
        self,
        data: Dataset,
        batch: int,
        *,
        shuffle: bool,
        seed: int,
        workers: int | None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.n = len(data)  # type: ignore[arg-type]
        self.batch = batch
        self.sampler = _EpochBatchSampler(self.n, batch, seed, shuffle, rank, world_size)
        self.seed, self.rank = seed, rank
        w = default_workers() if workers is None else workers
        if workers is None and world_size > 1:  # the machine's cores are shared by its processes
            local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
            w = max(0, (w + 1) // max(local, 1) - 1)
        self.loader = DataLoader(
            data,
            batch_sampler=self.sampler,
            num_workers=w,
            worker_init_fn=seed_worker if w else None,
            generator=torch.Generator(),
            persistent_workers=False,
        )

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch)

    def epoch(self, epoch: int = 0, start: int = 0, generator: torch.Generator | None = None):
        self.sampler.set_epoch(epoch)
        self.sampler.start = start
        # worker seeds: fixed by (seed, epoch), and different on every process
        self.loader.generator.manual_seed(
            rank_seed((self.seed * 1_000_003 + epoch) % 2**63, self.rank)
        )
        yield from self.loader


def _batches(
    data: Dataset,
    batch: int,
    *,
    shuffle: bool,
    seed: int,
    augment: Augment | None,
    workers: int | None,
    rank: int = 0,
    world_size: int = 1,
):
    if isinstance(data, ArraySet):  # signals / volumes: no augmentation (see array_augment)
        return ArrayBatches(
            data, batch, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size
        )
    if isinstance(data, ImageSet):
        return TensorBatches(
            data,
            batch,
            shuffle=shuffle,
            seed=seed,
            augment=augment,
            rank=rank,
            world_size=world_size,
        )
    return _LoaderBatches(
        data, batch, shuffle=shuffle, seed=seed, workers=workers, rank=rank, world_size=world_size
    )


#: An epoch longer than this that waits for its batches more than this share of its time
#: gets one note (shorter epochs are too noisy to judge).
STARVED_MIN_S = 5.0
STARVED_SHARE = 0.25


def _timed(batches: Iterator[Any], waited: list[float]) -> Iterator[Any]:
    """Yield from ``batches``, adding the seconds spent waiting for each to ``waited[0]``."""
    it = iter(batches)
    while True:
        t = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            return
        waited[0] += time.perf_counter() - t
        yield item


def _shard_dataset(data: Dataset, rank: int, world_size: int) -> Dataset:
    """Examples ``rank, rank + N, ...`` of ``data``: one process's part of an evaluation."""
    idx = np.arange(rank, len(data), world_size)  # type: ignore[arg-type]
    if isinstance(data, (ImageSet, ArraySet)):
        return data.subset(idx, data.name)
    return Subset(data, idx.tolist())


def array_augment(cfg: TrainConfig, train: ArraySet) -> str | None:
    """Image augmentation does not apply to signals and volumes: the default preset is
    switched off (with a note), an augmentation asked for by name is refused.

    Args:
        cfg: The settings.
        train: The training signals or volumes.

    Returns:
        The note saying augmentation is off (None when ``aug=none`` was given).

    Raises:
        CnnkitError: For a preset other than ``default`` / ``none`` or an op set above 0.
    """
    from cnnkit.train.config import AUG_OPS

    what = "1D signals" if train.dims == 1 else "3D volumes"
    ops = [k for k in AUG_OPS if getattr(cfg, k)]
    if ops:
        k = ops[0]
        raise CnnkitError(
            f"{k}={getattr(cfg, k):g} is an image augmentation and this data holds {what}; "
            f"drop {k}= (signals and volumes are trained without augmentation)."
        )
    if cfg.aug not in ("default", "none"):
        raise CnnkitError(
            f"aug={cfg.aug} is an image augmentation preset and this data holds {what}; use "
            "aug=none (signals and volumes are trained without augmentation)."
        )
    return f"augmentation: none ({what} are not augmented)" if cfg.aug == "default" else None


def resolve_epochs(cfg: TrainConfig, steps_per_epoch: int) -> tuple[int, str | None]:
    """Turn ``epochs="auto"`` into a number: about ``auto_steps`` steps, 3 to 60 epochs.

    Args:
        cfg: The settings.
        steps_per_epoch: Batches per epoch.

    Returns:
        ``(epochs, note)``; the note says why when it was chosen automatically.
    """
    if cfg.epochs != "auto":
        return int(cfg.epochs), None
    e = max(3, min(60, round(cfg.auto_steps / max(steps_per_epoch, 1))))
    return e, (
        f"epochs=auto: {e} epochs of {steps_per_epoch} steps (about {cfg.auto_steps:,} optimizer "
        "steps, at least 3 and at most 60 epochs)"
    )


def build_optimizer(
    model: nn.Module, cfg: TrainConfig, groups: Sequence[Mapping[str, Any]] | None = None
) -> torch.optim.Optimizer:
    """The optimizer named in ``cfg``, with the course's hyperparameter names mapped to PyTorch's.

    Args:
        model: Its trainable parameters are optimized.
        cfg: Settings (``optimizer``, ``lr``, ``momentum``, ``beta1``, ``beta2``, ``eps``,
            ``weight_decay``).
        groups: Parameter groups instead of all trainable parameters: dicts with
            ``params`` and optionally ``lr_mult`` (the group's learning rate is ``lr_mult``
            times the schedule's, discriminative rates) and ``start_epoch`` (the group
            trains from that epoch on; before it, its parameters are frozen).

    Returns:
        A ``torch.optim`` optimizer.
    """
    if groups is not None:
        params: Any = [
            {
                "params": list(g["params"]),
                "lr_mult": float(g.get("lr_mult", 1.0)),
                "start_epoch": int(g.get("start_epoch", 0)),
            }
            for g in groups
            if len(list(g["params"]))
        ]
        flat = [p for g in params for p in g["params"]]
    else:
        params = flat = [p for p in model.parameters() if p.requires_grad]
    if not flat:
        raise CnnkitError("the model has no trainable parameters; unfreeze some layers.")
    wd = cfg.resolved("weight_decay")
    name = cfg.optimizer
    if name in ("sgd", "momentum", "nesterov"):
        beta = cfg.resolved("momentum")
        # "momentum" is the course's v = beta*v + (1 - beta)*dW (PyTorch's dampening=beta);
        # "sgd" with momentum= and "nesterov" use PyTorch's v = beta*v + dW
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=beta,
            dampening=beta if name == "momentum" else 0.0,
            nesterov=name == "nesterov",
            weight_decay=wd,
            fused=_fusable(flat),
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(
            params,
            lr=cfg.lr,
            alpha=cfg.resolved("beta2"),
            eps=cfg.eps,
            momentum=cfg.momentum or 0.0,
            weight_decay=wd,
        )
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return cls(
        params,
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.resolved("beta2")),
        eps=cfg.eps,
        weight_decay=wd,
        fused=_fusable(flat),
    )


def _fusable(params: list[nn.Parameter]) -> bool | None:
    """Whether to use the fused optimizer kernel: one kernel for all parameters per step.

    On the CPU, PyTorch's default is a Python loop over the parameters; the fused kernel
    (CPU and CUDA, floating-point parameters) makes LeNet-5 steps about 5% faster at the
    same results (``benchmarks/train_bench.py``).

    Args:
        params: The parameters to optimize.

    Returns:
        True where the fused kernel applies, else None (PyTorch's default).
    """
    ok = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return True if ok and len({p.device for p in params}) == 1 else None


def _l2_term(model: nn.Module, lam: float, m: int) -> torch.Tensor:
    """The course's ``lambda / (2m) * sum_l ||W^[l]||_F^2`` over conv and FC weights."""
    total = sum(
        (p * p).sum() for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1
    )
    return total * (lam / (2 * m))


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    data: Dataset,
    *,
    batch: int = 256,
    task: Task | None = None,
    workers: int | None = 0,
    device: torch.device | str = "cpu",
    dist: DistContext | None = None,
) -> dict[str, float]:
    """Loss and metrics of ``model`` on ``data`` (eval mode: dropout off, batch-norm running stats).

    Args:
        model: The network.
        data: An ImageSet or any Dataset of ``(x, y)``.
        batch: Batch size.
        task: How to score (default classification).
        workers: DataLoader workers for generic datasets.
        device: Where to run.
        dist: With several processes, each scores every N-th example and the sums are
            added up, so every process returns the scores of the whole ``data``.

    Returns:
        ``{"loss": ..., "accuracy": ..., "n": ...}``.
    """
    task = task or Classification()
    was_training = model.training
    model.eval()
    sums = torch.zeros(task.n_sums, dtype=torch.float64)
    part = data
    if dist is not None and dist.distributed:
        part = _shard_dataset(data, dist.rank, dist.world_size)
    try:
        for x, y in (
            _batches(part, batch, shuffle=False, seed=0, augment=None, workers=workers).epoch(0)
            if len(part)
            else ()
        ):  # type: ignore[arg-type]
            x, y = x.to(device), y.to(device)
            out = task.eval_forward(model, x, y)
            task.count(sums, out.float(), y, task.eval_loss(out.float(), y))
    finally:
        model.train(was_training)
    if dist is not None:
        dist.all_reduce_sum(sums)
    out = task.summarize(sums)
    out["n"] = len(data)  # type: ignore[arg-type]
    return out


def _rng_state(aug: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "augment": aug.get_state(),
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
    }


def _set_rng_state(s: Mapping[str, Any], aug: torch.Generator) -> None:
    torch.set_rng_state(s["torch"])
    aug.set_state(s["augment"])
    random.setstate((s["python_version"], tuple(s["python"]), s["python_gauss"]))
    np.random.set_state(
        (
            "MT19937",
            s["numpy_keys"].numpy().astype(np.uint32),
            s["numpy_pos"],
            s["numpy_has_gauss"],
            s["numpy_gauss"],
        )
    )


def _weights_meta(meta: Mapping[str, Any], cfg: TrainConfig, epoch: int) -> dict[str, Any]:
    from cnnkit import __version__

    return {**meta, "epoch": epoch, "cnnkit_version": __version__, "seed": cfg.seed}


def architecture_of(model: nn.Module, meta: Mapping[str, Any]) -> str:
    """The architecture a checkpoint records: the zoo name, else the module's class path."""
    name = meta.get("model")
    if isinstance(name, str):
        return name
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def _write_results(path: Path, history: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    cols = list(RESULTS_COLUMNS) + [
        k for k in (history[0] if history else {}) if k not in RESULTS_COLUMNS
    ]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def _grads_finite(model: nn.Module) -> bool:
    """Whether every gradient is finite (one fused norm per dtype, one sync)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return True
    norms = torch._foreach_norm(grads, float("inf"))
    return bool(torch.isfinite(torch.stack([n.float() for n in norms])).all())


def _batch_ids(data: Dataset, cfg: TrainConfig, epoch: int, step: int, show: int = 6) -> str:
    """The ids of training mini-batch ``step`` of ``epoch`` (the global batch), for messages."""
    order = epoch_order(len(data), cfg.seed, epoch, True)  # type: ignore[arg-type]
    idx = order[step * cfg.batch : (step + 1) * cfg.batch].tolist()
    ids = getattr(data, "ids", None)
    names = [str(ids[i]) if ids is not None else str(i) for i in idx]
    more = f", ... ({len(names)} in all)" if len(names) > show else ""
    return ", ".join(names[:show]) + more


def _best_on_resume(
    folder: Path,
    st: Mapping[str, Any],
    saved: Mapping[str, Any],
    arch: str,
    ctx: DistContext,
    meta: Mapping[str, Any],
    cfg: TrainConfig,
) -> dict[str, torch.Tensor]:
    """The best weights of a resumed run, checked against the training state.

    ``last`` is committed before ``best`` at an epoch end, so a run killed between the
    two has a ``last`` that names the epoch just finished as the best one, and a ``best``
    one improvement behind: its weights are then exactly ``last``'s, and ``best`` is
    committed again from them. Any other disagreement is an error.
    """
    have = None
    if manifest_path(folder, "best").exists():
        have = verify_checkpoint(folder, "best", architecture=arch).get("epoch")
        if have == st["best_epoch"]:
            return load_weights_file(folder / "best.safetensors")[0]
    if st["best_epoch"] == st["epoch"] and st["step_in_epoch"] == 0:
        best = {k: v.clone() for k, v in saved["model"].items()}
        if ctx.is_main:
            save_checkpoint(
                folder,
                "best",
                {"best.safetensors": weights_bytes(best, _weights_meta(meta, cfg, st["epoch"]))},
                {"architecture": arch, "epoch": st["epoch"], "step": st["global_step"]},
            )
        return best
    raise CheckpointError(
        f"checkpoint manifest {str(manifest_path(folder, 'best'))!r}: field 'epoch' is {have!r} "
        f"but the training state names epoch {st['best_epoch']} as the best; restore the run "
        "folder from a good copy or start a new run."
    )


def _has_checkpoint(folder: Path) -> bool:
    """Whether any trace of a committed ``last`` checkpoint exists (then it must verify)."""
    return any(
        (folder / n).exists() for n in ("last.manifest.json", "last_state.pt", "last.safetensors")
    )


def _collect_ranks(st: dict[str, Any], ctx: DistContext, aug: torch.Generator) -> None:
    """Before a checkpoint (every process): fold the partial train sums into rank 0's and
    gather every process's RNG states, so that rank 0's file can restart them all exactly."""
    ctx.all_reduce_sum(st["sums"])
    if not ctx.is_main:
        st["sums"].zero_()
    st["rank_rng"] = ctx.gather(_rng_state(aug))


def _resume_ranks(
    st: dict[str, Any], ctx: DistContext, aug: torch.Generator, cfg: TrainConfig
) -> None:
    """After loading rank 0's checkpoint on every process: each takes back its own RNG
    states (a process the run did not have gets fresh streams), and only rank 0 keeps the
    epoch's partial train sums."""
    saved = st.get("rank_rng") or []
    if ctx.rank > 0 and ctx.rank < len(saved):
        _set_rng_state(saved[ctx.rank], aug)
    elif ctx.rank > 0:
        s = rank_seed(cfg.seed + st["global_step"], ctx.rank)
        random.seed(s)
        np.random.seed(s % 2**32)
        torch.manual_seed(s)
        aug.manual_seed(rank_seed(cfg.seed + 1 + st["global_step"], ctx.rank))
    if not ctx.is_main:
        st["sums"] = torch.zeros_like(st["sums"])


def _better(value: float, best: float | None, higher: bool) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value >= best if higher else value <= best  # ties: the later, longer-trained weights


def fit(
    model: nn.Module,
    train: Dataset,
    dev: Dataset | None = None,
    *,
    config: TrainConfig | None = None,
    task: Task | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    meta: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
    param_groups: Sequence[Mapping[str, Any]] | None = None,
    **settings: Any,
) -> FitResult:
    """Train ``model`` on ``train``, choosing the best weights on ``dev``.

    Each epoch: mini-batches in a seeded order, the learning rate from the schedule,
    ``loss.backward()``, optional gradient clipping, the optimizer step; then the dev
    loss/metrics, ``results.csv``, ``weights/last.safetensors`` + ``weights/last_state.pt``
    and, when ``monitor`` improves, ``weights/best.safetensors``. At every end of
    training (last epoch, early stop or Ctrl-C) the model is left holding the best weights.

    Args:
        model: Any ``nn.Module`` producing logits.
        train: An :class:`~cnnkit.data.ImageSet`, :class:`~cnnkit.data.ArraySet` (1D
            signals, 3D volumes: never augmented) or any Dataset of ``(x, y)``.
        dev: Dataset for model selection and early stopping (optional).
        config: Settings (default :class:`TrainConfig`); ``settings`` override single keys.
        task: Loss and metrics (default :class:`Classification` with ``config.loss``).
        run_dir: Folder for checkpoints and ``results.csv`` (None: keep nothing on disk).
        resume: Continue from ``run_dir/weights/last_state.pt``.
        meta: Plain values saved with the weights (model name, preprocessing, classes).
        device: Where to train.
        param_groups: What to optimize, in groups with their own learning-rate multiplier
            and start epoch (see :func:`build_optimizer`); None: every parameter that
            requires a gradient, at ``lr``.
        **settings: Any :class:`TrainConfig` key, e.g. ``epochs=5, lr=1e-3``.

    Under torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` set) every process calls
    ``fit`` with the same arguments: the model trains as DistributedDataParallel, each
    process on its share of every mini-batch of ``batch`` examples (the global
    mini-batch), metrics are summed over processes, and only rank 0 writes files and
    prints. After a torchrun restart (``TORCHELASTIC_RESTART_COUNT`` > 0) a run folder
    with a checkpoint is resumed automatically.

    Returns:
        A :class:`FitResult`.
    """
    with DistContext.from_env(device) as dist_ctx:
        return _fit(
            model,
            train,
            dev,
            config=config,
            task=task,
            run_dir=run_dir,
            resume=resume,
            meta=meta,
            dist_ctx=dist_ctx,
            param_groups=param_groups,
            **settings,
        )


def _fit(
    model: nn.Module,
    train: Dataset,
    dev: Dataset | None,
    *,
    config: TrainConfig | None,
    task: Task | None,
    run_dir: str | Path | None,
    resume: bool,
    meta: Mapping[str, Any] | None,
    dist_ctx: DistContext,
    param_groups: Sequence[Mapping[str, Any]] | None = None,
    **settings: Any,
) -> FitResult:
    base = (config or TrainConfig()).to_dict()
    base.update(settings)
    cfg = TrainConfig.from_dict(base, source="fit()")
    if cfg.tensorboard and run_dir is not None:
        require_tensorboard()  # before anything is trained or written
    task = task or Classification(cfg.loss, cfg.label_smoothing)
    meta = dict(meta or {})
    device = dist_ctx.device
    model.to(device)
    if len(train) == 0:  # type: ignore[arg-type]
        raise CnnkitError("the training set is empty.")
    if isinstance(train, ArraySet):
        augment, note_aug = None, array_augment(cfg, train)
    else:
        augment = Augment.from_config(cfg, train if isinstance(train, ImageSet) else None)
        note_aug = None
    batches = _batches(
        train,
        cfg.batch,
        shuffle=True,
        seed=cfg.seed,
        augment=augment,
        workers=cfg.workers,
        rank=dist_ctx.rank,
        world_size=dist_ctx.world_size,
    )
    steps_per_epoch = len(batches)
    epochs, note = resolve_epochs(cfg, steps_per_epoch)
    notes = [n for n in (note, note_aug) if n]
    opt = build_optimizer(model, cfg, param_groups)
    aug_gen = torch.Generator().manual_seed(rank_seed(cfg.seed + 1, dist_ctx.rank))
    metrics = [f"{p}_{m}" for p in ("train", "dev") for m in ("loss", *task.metric_names)]
    if cfg.monitor not in metrics:
        raise unknown_name("monitor metric", cfg.monitor, metrics)
    # the task says which of its metrics grow when better (an error or a distance shrinks)
    name = cfg.monitor.split("_", 1)[1]
    higher = task.higher_is_better.get(name, not cfg.monitor.endswith("loss"))
    monitor = cfg.monitor if dev is not None or cfg.monitor.startswith("train_") else "train_loss"
    if monitor != cfg.monitor:
        higher = False
    run = Path(run_dir) if run_dir is not None else None
    if not resume and run is not None and dist_ctx.restart_count > 0:
        resume = bool(dist_ctx.broadcast(_has_checkpoint(run / "weights")))  # rank 0 looks
        if resume:
            notes.append(
                f"torchrun restart {dist_ctx.restart_count}: continuing from the last checkpoint"
            )
    arch = architecture_of(model, meta)
    st: dict[str, Any] = {
        "epoch": 0,
        "step_in_epoch": 0,
        "global_step": 0,
        "best": None,
        "best_epoch": None,
        "bad_epochs": 0,
        "history": [],
        "sums": torch.zeros(task.n_sums, dtype=torch.float64),
        "train_seconds": 0.0,
        "skipped_steps": 0,
        "bad_in_a_row": 0,
    }
    if dist_ctx.distributed:
        st["rank_rng"] = []  # every process's RNG states, saved by rank 0
    best_state: dict[str, torch.Tensor] | None = None
    if resume and run is None:
        raise CnnkitError("resume needs run_dir=, the folder of the run to continue.")
    if resume and not _has_checkpoint(run / "weights"):  # type: ignore[operator]
        resume = False  # killed before its first checkpoint: the run starts over, as it was
        notes.append(f"no checkpoint in {run} yet (stopped before the first save): from step 0")
    if resume and dist_ctx.distributed and run is not None:
        # verifying may finish a commit cut short (renames): rank 0 alone, then all read;
        # its verdict goes to every process, so none waits for a rank 0 that has failed
        problem = None
        if dist_ctx.is_main:
            try:
                for name in ("last", "best"):
                    if name == "last" or manifest_path(run / "weights", name).exists():
                        verify_checkpoint(run / "weights", name, architecture=arch)
            except CheckpointError as e:
                problem = str(e)
        problem = dist_ctx.broadcast(problem)
        if problem is not None:
            raise CheckpointError(problem)
    if not resume:  # one seed fixes dropout, order and augmentation (restored on resume)
        random.seed(rank_seed(cfg.seed, dist_ctx.rank))  # rank 0: the seed itself
        np.random.seed(rank_seed(cfg.seed, dist_ctx.rank) % 2**32)
        torch.manual_seed(rank_seed(cfg.seed, dist_ctx.rank))
    if resume:
        assert run is not None
        verify_checkpoint(run / "weights", "last", architecture=arch)
        saved = load_state(run / "weights" / "last_state.pt")
        try:
            model.load_state_dict(saved["model"])
        except RuntimeError as e:
            raise CnnkitError(
                f"{run / 'weights' / 'last_state.pt'} was saved from another architecture "
                f"({str(e).splitlines()[0]})."
            ) from None
        opt.load_state_dict(saved["optimizer"])
        _set_rng_state(saved["rng"], aug_gen)
        for k in st:
            if k in saved:
                st[k] = saved[k]
        planned = int(saved.get("epochs", epochs))
        if cfg.epochs == "auto":
            epochs = planned
        elif epochs != planned:
            notes.append(
                f"epochs {planned} -> {epochs}: the {cfg.schedule} schedule is re-planned over "
                f"{epochs} epochs from step {st['global_step']}"
            )
        if st["best_epoch"] is not None:
            best_state = _best_on_resume(run / "weights", st, saved, arch, dist_ctx, meta, cfg)
        if st["epoch"] >= epochs:
            notes.append(f"the run already finished its {epochs} epochs; nothing to resume")
    if resume and dist_ctx.distributed:
        _resume_ranks(st, dist_ctx, aug_gen, cfg)
    total_steps = epochs * steps_per_epoch
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch) if cfg.schedule != "onecycle" else 0
    decay_rate = cfg.resolved("decay_rate")
    recorded = saved.get("speed") if resume else None
    speed = _resolve_speed(model, train, cfg, task, arch, device, total_steps, recorded, dist_ctx)
    st["speed"] = speed.to_dict()
    notes.append(speed.note())
    if speed.memory_format == "channels_last":
        model.to(memory_format=torch.channels_last)  # in place: the optimizer keeps its params
    to_channels_last = speed.memory_format == "channels_last"
    amp = autocast(speed.precision, device)
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(bool(cfg.deterministic))
    stopped = False
    bar = Progress(cfg.verbose if dist_ctx.is_main else 0, epochs, steps_per_epoch)
    for n in notes:
        bar.note(n)
    if run is not None and dist_ctx.is_main:
        (run / "weights").mkdir(parents=True, exist_ok=True)
        remove_leftovers(run / "weights")  # of a run killed in a checkpoint write

    def save_best(state: dict[str, torch.Tensor], epoch: int) -> None:
        if run is None or not dist_ctx.is_main:
            return
        save_checkpoint(
            run / "weights",
            "best",
            {"best.safetensors": weights_bytes(state, _weights_meta(meta, cfg, epoch))},
            {"architecture": arch, "epoch": epoch, "step": st["global_step"]},
        )

    def checkpoint() -> None:
        if run is None or not dist_ctx.is_main:
            return
        state = {
            **{k: v for k, v in st.items()},
            "epochs": epochs,
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimizer": opt.state_dict(),
            "rng": _rng_state(aug_gen),
            "config": cfg.to_dict(),
            "meta": meta,
        }
        weights = weights_bytes(model.state_dict(), _weights_meta(meta, cfg, st["epoch"]))
        save_checkpoint(
            run / "weights",
            "last",
            {"last.safetensors": weights, "last_state.pt": state_bytes(state)},
            {"architecture": arch, "epoch": st["epoch"], "step": st["global_step"]},
        )
        _write_results(run / "results.csv", st["history"])

    net = dist_ctx.wrap(model)  # DistributedDataParallel across processes, else model itself
    if speed.compile:
        net = torch.compile(net)
    n_train = len(train)  # type: ignore[arg-type]

    def save_point() -> None:
        if run is not None and dist_ctx.distributed:  # collective: every process takes part
            _collect_ranks(st, dist_ctx, aug_gen)
        checkpoint()

    tb: TensorBoardLog | None = None  # TensorBoard event files (main process, run_dir)
    shown: torch.Tensor | None = None  # the first batch, for its image grid
    try:
        if cfg.tensorboard and run is not None and dist_ctx.is_main and st["epoch"] < epochs:
            # on resume TensorBoard hides what an earlier writer logged from the first
            # epoch trained now on (written before a kill outran its checkpoint); a run
            # that starts over hides all of it
            tb = TensorBoardLog(run, purge_step=st["epoch"] + 1 if resume else 0)
        grab = tb is not None and not resume and st["epoch"] == 0
        with bar:
            while st["epoch"] < epochs and not stopped:
                epoch = st["epoch"]
                halted = False
                model.train()
                for g in opt.param_groups:  # a group trains from its start epoch on
                    for p in g["params"]:
                        p.requires_grad_(epoch >= g.get("start_epoch", 0))
                bar.start_epoch(epoch, st["step_in_epoch"])
                t0 = time.perf_counter()
                seen = 0
                sums = st["sums"]
                waited = [0.0]  # seconds this epoch spent waiting for its batches
                for x, y in _timed(batches.epoch(epoch, st["step_in_epoch"], aug_gen), waited):
                    f = lr_factor(
                        cfg.schedule,
                        st["global_step"],
                        steps_per_epoch,
                        total_steps,
                        warmup_steps=warmup_steps,
                        decay_rate=decay_rate,
                        step_size=cfg.step_size,
                    )
                    lr = cfg.lr * f
                    for g in opt.param_groups:  # discriminative rates: lr_mult per group
                        g["lr"] = lr * g.get("lr_mult", 1.0)
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    if to_channels_last and x.ndim == 4:
                        x = x.contiguous(memory_format=torch.channels_last)
                    if grab:  # once: the first batch as the network sees it (augmented)
                        grab = False
                        shown = x[:MAX_IMAGES].detach().to("cpu", copy=True)
                    with amp:
                        out = task.forward(net, x, y)
                        loss = task.loss(out, y)
                    # one decision on every process: one that skipped backward() would
                    # leave the others waiting in it
                    bad = dist_ctx.any(not bool(torch.isfinite(loss.detach())))
                    m = min(cfg.batch, n_train - st["step_in_epoch"] * cfg.batch)  # global batch
                    w = shard_weight(m, dist_ctx.rank, dist_ctx.world_size)
                    total = loss * w if dist_ctx.distributed else loss  # DDP's mean: the m's mean
                    if cfg.l2:
                        total = total + _l2_term(model, cfg.l2, m)
                    opt.zero_grad(set_to_none=True)
                    if not bad:
                        total.backward()
                        if cfg.nonfinite != "raise":  # a finite loss can still give inf gradients
                            bad = dist_ctx.any(not _grads_finite(model))
                    if bad:
                        opt.zero_grad(set_to_none=True)
                        what = "loss" if not torch.isfinite(loss.detach()) else "gradient"
                        where = (
                            f"at step {st['global_step'] + 1} (epoch {epoch + 1}, step "
                            f"{st['step_in_epoch'] + 1} of {steps_per_epoch}; samples "
                            f"{_batch_ids(train, cfg, epoch, st['step_in_epoch'])})"
                        )
                        if cfg.nonfinite == "stop":
                            stopped = True
                            kept = (
                                f"the model holds the best weights (epoch {st['best_epoch']})"
                                if st["best_epoch"] is not None
                                else "no epoch had finished, so the model holds the last "
                                "step's weights"
                            )
                            notes.append(
                                f"stopped (nonfinite=stop): the {what} was not finite {where}; "
                                f"{kept}; the last checkpoint is kept"
                            )
                            bar.note(notes[-1])
                            halted = True
                            break
                        if cfg.nonfinite == "raise":
                            raise CnnkitError(
                                f"the {what} became {loss.item()} {where}; lower lr (now "
                                f"{lr:.3g}), set clip_grad=1, or nonfinite=skip_step to skip such "
                                "steps."
                            )
                        st["skipped_steps"] += 1  # skip_step: weights and optimizer untouched
                        st["bad_in_a_row"] += 1
                        if st["bad_in_a_row"] > cfg.max_consecutive_skips:
                            raise CnnkitError(
                                f"{st['bad_in_a_row']} steps in a row had a non-finite {what}, "
                                f"the last {where}; stopping (max_consecutive_skips="
                                f"{cfg.max_consecutive_skips}); the last good checkpoint is kept; "
                                "lower lr or set clip_grad=1."
                            )
                        st["global_step"] += 1
                        st["step_in_epoch"] += 1
                        continue
                    st["bad_in_a_row"] = 0
                    if cfg.clip_grad:
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                    opt.step()
                    if w > 0:  # (0: a stand-in example on a process with no share of the batch)
                        task.count(sums, out.detach(), y, loss.detach())
                    st["global_step"] += 1
                    st["step_in_epoch"] += 1
                    seen += m * task.images_per_example  # images/s, also for P x K groups
                    bar.step(sums, task, lr, seen, time.perf_counter() - t0)
                    if cfg.save_every and st["global_step"] % cfg.save_every == 0:
                        st["train_seconds"] += time.perf_counter() - t0
                        t0, seen = time.perf_counter(), 0
                        save_point()
                if halted:  # nonfinite=stop: the epoch is not finished; nothing is saved
                    break
                seconds = time.perf_counter() - t0
                st["train_seconds"] += seconds
                dist_ctx.all_reduce_sum(sums)  # the epoch's train sums of all processes
                dist_ctx.sync_buffers(model)  # rank 0's batch-norm statistics everywhere
                row: dict[str, Any] = {"epoch": epoch + 1}
                row.update({f"train_{k}": v for k, v in task.summarize(sums).items()})
                if dev is not None:
                    res = evaluate_model(
                        model, dev, task=task, workers=cfg.workers, device=device, dist=dist_ctx
                    )
                    row.update({f"dev_{k}": v for k, v in res.items() if k != "n"})
                row["lr"] = lr_now(opt)
                row["seconds"] = round(seconds, 3)
                row["img_per_s"] = round(seen / seconds, 1) if seconds > 0 else float("nan")
                row["data_s"] = round(waited[0], 3)
                starved = seconds > STARVED_MIN_S and waited[0] > STARVED_SHARE * seconds
                if starved and not st.get("starved_noted"):
                    st["starved_noted"] = True
                    if isinstance(train, ArraySet):  # in memory, nothing to augment
                        fix = "its batches are sliced from memory in the training thread"
                    elif isinstance(train, ImageSet):  # in memory: the batches' own work
                        fix = (
                            "its batches are made in the training thread, and augmentation "
                            "(degrees=, translate=, scale=, fliplr=) is most of that work; "
                            "aug=light or aug=none does less"
                        )
                    else:
                        now = cfg.workers if cfg.workers is not None else "auto"
                        fix = (
                            f"raise workers= (now {now}), store the images smaller, or read "
                            "them into memory (an ImageFolder through cnnkit.data.load)"
                        )
                    notes.append(
                        f"input pipeline: epoch {epoch + 1} waited {waited[0]:.1f} s of "
                        f"{seconds:.1f} s for its batches; {fix}"
                    )
                    bar.note(notes[-1])
                st["history"].append(row)
                if tb is not None:  # before the checkpoint: a resume hides a repeat
                    if shown is not None and shown.ndim != 4:  # signals / volumes: no picture
                        shown = None
                    if shown is not None:
                        p = train.preprocess if isinstance(train, ImageSet) else None
                        mean, std = (p.mean, p.std) if p is not None else (None, None)
                        tb.images(shown, "train/batch", 0, mean=mean, std=std)
                        shown = None
                    tb.epoch(row)
                value = row.get(monitor, float("nan"))
                improved = _better(value, st["best"], higher)
                if improved:
                    st["best"], st["best_epoch"], st["bad_epochs"] = value, epoch + 1, 0
                    best_state = {
                        k: v.detach().cpu().clone() for k, v in model.state_dict().items()
                    }
                else:
                    st["bad_epochs"] += 1
                st["epoch"] = epoch + 1
                st["step_in_epoch"] = 0
                st["sums"] = torch.zeros(task.n_sums, dtype=torch.float64)
                if cfg.patience and st["bad_epochs"] >= cfg.patience and st["epoch"] < epochs:
                    stopped = True
                save_point()  # `last` first: it records this epoch as the best one, so a
                if improved:  # kill before `best` is committed is repaired on resume
                    save_best(best_state, epoch + 1)  # type: ignore[arg-type]
                bar.end_epoch(row, improved, monitor)
                if stopped:
                    best = "none" if st["best"] is None else f"{st['best']:.4g}"
                    bar.note(
                        f"early stop: {monitor} did not improve for {cfg.patience} epochs; best "
                        f"{best} at epoch {st['best_epoch']}"
                    )
    finally:
        torch.use_deterministic_algorithms(prev_det)
        if best_state is not None:  # best weights at any end of training
            model.load_state_dict(best_state)
        if tb is not None:
            tb.close()
    return FitResult(
        model=model,
        history=st["history"],
        epochs=epochs,
        best_epoch=st["best_epoch"],
        best=st["best"],
        monitor=monitor,
        stopped_early=stopped,
        run_dir=run,
        notes=notes,
        speed=st["speed"],
    )


def _resolve_speed(
    model: nn.Module,
    train: Dataset,
    cfg: TrainConfig,
    task: Task,
    arch: str,
    device: torch.device,
    total_steps: int,
    recorded: Any,
    dist_ctx: DistContext,
) -> SpeedChoice:
    """The run's precision, memory format and compile choice (see :mod:`cnnkit.train.speed`).

    A resumed run keeps what its state recorded for every ``auto`` setting; otherwise
    rank 0 calibrates on the first mini-batch (when a setting is ``auto``) and every
    process takes its choice.
    """
    if isinstance(recorded, Mapping):
        return SpeedChoice(
            precision=recorded["precision"] if cfg.precision == "auto" else cfg.precision,
            memory_format=(
                recorded["memory_format"] if cfg.memory_format == "auto" else cfg.memory_format
            ),
            compile=bool(recorded["compile"]) if cfg.compile == "auto" else bool(cfg.compile),
            step_ms=recorded.get("step_ms"),
            reason="as recorded in the resumed run",
        )
    choice = SpeedChoice()
    if dist_ctx.is_main:
        x = y = None
        if "auto" in (cfg.precision, cfg.memory_format):
            k = min(cfg.batch, len(train))  # type: ignore[arg-type]
            if isinstance(train, ImageSet):
                x, y = train.preprocess.normalize(train.images[:k]), train.labels[:k]
            elif isinstance(train, ArraySet):
                x, y = train.preprocess.normalize(train.x[:k]), train.labels[:k]
            else:
                x, y = default_collate([train[i] for i in range(k)])
            x, y = x.to(device), y.to(device)
        choice, _ = resolve_speed(
            model,
            arch,
            x,
            y,
            precision=cfg.precision,
            memory_format=cfg.memory_format,
            compile=cfg.compile,
            make_opt=lambda m: build_optimizer(m, cfg),
            loss_fn=task.loss,
            device=device,
            total_steps=total_steps,
        )
    if dist_ctx.distributed:
        choice = SpeedChoice(**dist_ctx.broadcast(choice.to_dict()))
    return choice


def lr_now(opt: torch.optim.Optimizer) -> float:
    """The schedule's learning rate: the largest group's (the head's, with discriminative rates)."""
    return max(float(g["lr"]) for g in opt.param_groups)


def preprocess_of(meta: Mapping[str, Any]) -> Preprocess | None:
    """The :class:`Preprocess` stored in weights metadata, if any."""
    p = meta.get("preprocess")
    return Preprocess.from_dict(p) if isinstance(p, Mapping) else None
