"""The one training loop: mini-batch gradient descent with checkpoints, resume and early stopping.

``fit(model, train, dev)`` accepts any ``nn.Module`` and any torch ``Dataset`` yielding
``(x, y)``. An in-memory :class:`cnnkit.data.ImageSet` is served batch-wise from
memory (no per-sample Python work); other datasets go through a ``DataLoader``.
"""

from __future__ import annotations

import csv
import io
import math
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from cnnkit.data.augment import Augment, TensorBatches, epoch_order
from cnnkit.data.datasets import ImageSet, Preprocess, default_workers, seed_worker
from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.train.checkpoint import (
    atomic_write,
    load_state,
    load_weights_file,
    save_state,
    save_weights,
)
from cnnkit.train.config import TrainConfig, lr_factor
from cnnkit.train.progress import Progress
from cnnkit.train.tasks import Classification, Task

__all__ = ["FitResult", "build_optimizer", "evaluate_model", "fit", "resolve_epochs"]

RESULTS_COLUMNS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "dev_loss",
    "dev_accuracy",
    "lr",
    "seconds",
    "img_per_s",
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


class _EpochSampler(Sampler[int]):
    """Yields epoch ``e``'s permutation (fixed by seed and epoch) from position ``start``."""

    def __init__(self, n: int, seed: int, shuffle: bool) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch, self.start = 0, 0

    def __iter__(self) -> Iterator[int]:
        return iter(epoch_order(self.n, self.seed, self.epoch, self.shuffle)[self.start :].tolist())

    def __len__(self) -> int:
        return self.n - self.start


class _LoaderBatches:
    """DataLoader-backed batches with the same ``epoch(epoch, start, generator)`` interface."""

    def __init__(
        self, data: Dataset, batch: int, *, shuffle: bool, seed: int, workers: int | None
    ) -> None:
        self.n = len(data)  # type: ignore[arg-type]
        self.batch = batch
        self.sampler = _EpochSampler(self.n, seed, shuffle)
        self.seed = seed
        w = default_workers() if workers is None else workers
        self.loader = DataLoader(
            data,
            batch_size=batch,
            sampler=self.sampler,
            num_workers=w,
            worker_init_fn=seed_worker if w else None,
            generator=torch.Generator(),
            persistent_workers=False,
        )

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch)

    def epoch(self, epoch: int = 0, start: int = 0, generator: torch.Generator | None = None):
        self.sampler.epoch, self.sampler.start = epoch, start * self.batch
        self.loader.generator.manual_seed((self.seed * 1_000_003 + epoch) % 2**63)  # worker seeds
        yield from self.loader


def _batches(
    data: Dataset,
    batch: int,
    *,
    shuffle: bool,
    seed: int,
    augment: Augment | None,
    workers: int | None,
):
    if isinstance(data, ImageSet):
        return TensorBatches(data, batch, shuffle=shuffle, seed=seed, augment=augment)
    return _LoaderBatches(data, batch, shuffle=shuffle, seed=seed, workers=workers)


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


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named in ``cfg``, with the course's hyperparameter names mapped to PyTorch's.

    Args:
        model: Its trainable parameters are optimized.
        cfg: Settings (``optimizer``, ``lr``, ``momentum``, ``beta1``, ``beta2``, ``eps``,
            ``weight_decay``).

    Returns:
        A ``torch.optim`` optimizer.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
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
        params, lr=cfg.lr, betas=(cfg.beta1, cfg.resolved("beta2")), eps=cfg.eps, weight_decay=wd
    )


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
) -> dict[str, float]:
    """Loss and metrics of ``model`` on ``data`` (eval mode: dropout off, batch-norm running stats).

    Args:
        model: The network.
        data: An ImageSet or any Dataset of ``(x, y)``.
        batch: Batch size.
        task: How to score (default classification).
        workers: DataLoader workers for generic datasets.
        device: Where to run.

    Returns:
        ``{"loss": ..., "accuracy": ..., "n": ...}``.
    """
    task = task or Classification()
    was_training = model.training
    model.eval()
    sums = torch.zeros(task.n_sums, dtype=torch.float64)
    try:
        for x, y in _batches(
            data, batch, shuffle=False, seed=0, augment=None, workers=workers
        ).epoch(0):
            x, y = x.to(device), y.to(device)
            out = model(x)
            task.count(sums, out.float(), y, task.eval_loss(out.float(), y))
    finally:
        model.train(was_training)
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
        train: An :class:`~cnnkit.data.ImageSet` or any Dataset of ``(x, y)``.
        dev: Dataset for model selection and early stopping (optional).
        config: Settings (default :class:`TrainConfig`); ``settings`` override single keys.
        task: Loss and metrics (default :class:`Classification` with ``config.loss``).
        run_dir: Folder for checkpoints and ``results.csv`` (None: keep nothing on disk).
        resume: Continue from ``run_dir/weights/last_state.pt``.
        meta: Plain values saved with the weights (model name, preprocessing, classes).
        device: Where to train.
        **settings: Any :class:`TrainConfig` key, e.g. ``epochs=5, lr=1e-3``.

    Returns:
        A :class:`FitResult`.
    """
    base = (config or TrainConfig()).to_dict()
    base.update(settings)
    cfg = TrainConfig.from_dict(base, source="fit()")
    task = task or Classification(cfg.loss, cfg.label_smoothing)
    meta = dict(meta or {})
    device = torch.device(device)
    model.to(device)
    if len(train) == 0:  # type: ignore[arg-type]
        raise CnnkitError("the training set is empty.")
    augment = Augment(cfg.degrees, cfg.translate, cfg.scale, cfg.fliplr)
    batches = _batches(
        train, cfg.batch, shuffle=True, seed=cfg.seed, augment=augment, workers=cfg.workers
    )
    steps_per_epoch = len(batches)
    epochs, note = resolve_epochs(cfg, steps_per_epoch)
    notes = [note] if note else []
    opt = build_optimizer(model, cfg)
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1)
    metrics = [f"{p}_{m}" for p in ("train", "dev") for m in ("loss", *task.metric_names)]
    if cfg.monitor not in metrics:
        raise unknown_name("monitor metric", cfg.monitor, metrics)
    higher = not cfg.monitor.endswith("loss")
    monitor = cfg.monitor if dev is not None or cfg.monitor.startswith("train_") else "train_loss"
    if monitor != cfg.monitor:
        higher = False
    run = Path(run_dir) if run_dir is not None else None
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
    }
    best_state: dict[str, torch.Tensor] | None = None
    if not resume:  # one seed fixes dropout, order and augmentation (restored on resume)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        torch.manual_seed(cfg.seed)
    if resume:
        if run is None:
            raise CnnkitError("resume needs run_dir=, the folder of the run to continue.")
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
        if (run / "weights" / "best.safetensors").is_file() and st["best_epoch"] is not None:
            best_state, _ = load_weights_file(run / "weights" / "best.safetensors")
        if st["epoch"] >= epochs:
            notes.append(f"the run already finished its {epochs} epochs; nothing to resume")
    total_steps = epochs * steps_per_epoch
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch) if cfg.schedule != "onecycle" else 0
    decay_rate = cfg.resolved("decay_rate")
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(bool(cfg.deterministic))
    stopped = False
    bar = Progress(cfg.verbose, epochs, steps_per_epoch)
    for n in notes:
        bar.note(n)
    if run is not None:
        (run / "weights").mkdir(parents=True, exist_ok=True)

    def checkpoint() -> None:
        if run is None:
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
        save_state(run / "weights" / "last_state.pt", state)
        save_weights(
            run / "weights" / "last.safetensors",
            model.state_dict(),
            _weights_meta(meta, cfg, st["epoch"]),
        )
        _write_results(run / "results.csv", st["history"])

    try:
        with bar:
            while st["epoch"] < epochs and not stopped:
                epoch = st["epoch"]
                model.train()
                bar.start_epoch(epoch, st["step_in_epoch"])
                t0 = time.perf_counter()
                seen = 0
                sums = st["sums"]
                for x, y in batches.epoch(epoch, st["step_in_epoch"], aug_gen):
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
                    for g in opt.param_groups:
                        g["lr"] = lr
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    out = model(x)
                    loss = task.loss(out, y)
                    if not torch.isfinite(loss):
                        raise CnnkitError(
                            f"the loss became {loss.item()} at epoch {epoch + 1}, step "
                            f"{st['step_in_epoch'] + 1}; lower lr (now {lr:.3g}) or set "
                            "clip_grad=1."
                        )
                    total = loss + _l2_term(model, cfg.l2, x.shape[0]) if cfg.l2 else loss
                    opt.zero_grad(set_to_none=True)
                    total.backward()
                    if cfg.clip_grad:
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                    opt.step()
                    task.count(sums, out.detach(), y, loss.detach())
                    st["global_step"] += 1
                    st["step_in_epoch"] += 1
                    seen += x.shape[0]
                    bar.step(sums, task, lr, seen, time.perf_counter() - t0)
                    if cfg.save_every and st["global_step"] % cfg.save_every == 0:
                        st["train_seconds"] += time.perf_counter() - t0
                        t0, seen = time.perf_counter(), 0
                        checkpoint()
                seconds = time.perf_counter() - t0
                st["train_seconds"] += seconds
                row: dict[str, Any] = {"epoch": epoch + 1}
                row.update({f"train_{k}": v for k, v in task.summarize(sums).items()})
                if dev is not None:
                    res = evaluate_model(model, dev, task=task, workers=cfg.workers, device=device)
                    row.update({f"dev_{k}": v for k, v in res.items() if k != "n"})
                row["lr"] = lr_now(opt)
                row["seconds"] = round(seconds, 3)
                row["img_per_s"] = round(seen / seconds, 1) if seconds > 0 else float("nan")
                st["history"].append(row)
                value = row.get(monitor, float("nan"))
                improved = _better(value, st["best"], higher)
                if improved:
                    st["best"], st["best_epoch"], st["bad_epochs"] = value, epoch + 1, 0
                    best_state = {
                        k: v.detach().cpu().clone() for k, v in model.state_dict().items()
                    }
                    if run is not None:
                        save_weights(
                            run / "weights" / "best.safetensors",
                            best_state,
                            _weights_meta(meta, cfg, epoch + 1),
                        )
                else:
                    st["bad_epochs"] += 1
                st["epoch"] = epoch + 1
                st["step_in_epoch"] = 0
                st["sums"] = torch.zeros(task.n_sums, dtype=torch.float64)
                if cfg.patience and st["bad_epochs"] >= cfg.patience and st["epoch"] < epochs:
                    stopped = True
                checkpoint()
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
    )


def lr_now(opt: torch.optim.Optimizer) -> float:
    """The learning rate of the first parameter group."""
    return float(opt.param_groups[0]["lr"])


def preprocess_of(meta: Mapping[str, Any]) -> Preprocess | None:
    """The :class:`Preprocess` stored in weights metadata, if any."""
    p = meta.get("preprocess")
    return Preprocess.from_dict(p) if isinstance(p, Mapping) else None
