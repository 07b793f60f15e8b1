"""What the task jobs (detect, faces, ...) share around the one trainer.

A task job makes a run folder with its resolved settings, then trains with a plain
configuration: AdamW with cosine decay, fp32, no classification augmentation (the task
augments its own examples, boxes or identity groups included).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError
from cnnkit.train.classify import next_run_dir
from cnnkit.train.config import TrainConfig

__all__ = ["best_weights", "check_numbers", "job_config", "run_folder", "start_run"]


def start_run(settings: Any, task: str) -> Path:
    """Create ``project/task/name`` (``train``, ``train2``, ... when unnamed) with config.yaml.

    Args:
        settings: The job's settings dataclass (with ``project``, ``name`` and ``extra``).
        task: The task folder (``detect``, ``faces``).

    Returns:
        The new run folder.
    """
    import yaml

    run = next_run_dir(Path(settings.project) / task, settings.name)
    run.mkdir(parents=True, exist_ok=False)
    resolved = {**asdict(settings), "name": run.name}
    resolved.pop("extra", None)
    (run / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    return run


def job_config(
    *,
    epochs: int,
    batch: int,
    lr: float,
    weight_decay: float,
    seed: int,
    workers: int | None,
    verbose: int,
    monitor: str = "dev_loss",
    patience: int = 0,
) -> TrainConfig:
    """The trainer's settings for a task job.

    Args:
        epochs: Passes over the training examples.
        batch: Examples per mini-batch.
        lr: AdamW's learning rate.
        weight_decay: AdamW's decay.
        seed: Seed of the weights, order and augmentation.
        workers: DataLoader workers (None: one per spare core).
        verbose: 0 silent, 1 progress bar, 2 one line per epoch.
        monitor: The metric that picks the best weights (``dev_mean_iou``, ...).
        patience: Early stopping after this many epochs without a better ``monitor``.

    Returns:
        A :class:`TrainConfig`: AdamW, fp32, contiguous, not compiled, no augmentation
        or label smoothing of its own.
    """
    return TrainConfig(
        epochs=epochs,
        batch=batch,
        optimizer="adamw",
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        workers=workers,
        verbose=verbose,
        monitor=monitor,
        patience=patience,
        label_smoothing=0.0,
        aug="none",
        precision="fp32",
        memory_format="contiguous",
        compile=False,
    )


def _number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float))


def check_numbers(
    settings: Any,
    *,
    positive_int: tuple[str, ...] = (),
    positive: tuple[str, ...] = (),
    unit: tuple[str, ...] = (),
    below_one: tuple[str, ...] = (),
    non_negative: tuple[str, ...] = (),
) -> None:
    """The number checks every task job's settings share, one sentence per mistake.

    Args:
        settings: The job's settings dataclass.
        positive_int: Names that must be integers >= 1.
        positive: Numbers > 0 (the message gives the default as an example).
        unit: Numbers in [0, 1] (probabilities, thresholds).
        below_one: Numbers in [0, 1) (zoom, shift).
        non_negative: Numbers >= 0 (weights, jitter, decay).

    Raises:
        CnnkitError: Naming the first bad setting and its value.
    """
    from dataclasses import fields

    defaults = {f.name: f.default for f in fields(settings)}
    for k in positive_int:
        v = getattr(settings, k)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise CnnkitError(f"{k} must be a positive integer, got {v!r}.")
    for k in positive:
        v = getattr(settings, k)
        if not _number(v) or v <= 0:
            raise CnnkitError(f"{k} must be > 0, got {v!r}; e.g. {k}={defaults[k]:g}.")
    for k in unit:
        v = getattr(settings, k)
        if not _number(v) or not 0 <= v <= 1:
            raise CnnkitError(f"{k} must be between 0 and 1, got {v!r}.")
    for k in below_one:
        v = getattr(settings, k)
        if not _number(v) or not 0 <= v < 1:
            raise CnnkitError(f"{k} must be in [0, 1), got {v!r}; e.g. {k}=0.1.")
    for k in non_negative:
        v = getattr(settings, k)
        if not _number(v) or v < 0:
            raise CnnkitError(f"{k} must be a number >= 0, got {v!r}.")


def run_folder(run: str | Path, task: str) -> tuple[Path, dict[str, Any]]:
    """A task run's folder and its ``config.yaml``, refused in one sentence when not one.

    Args:
        run: The folder.
        task: ``detect``, ``segment``, ... (named in the message).

    Returns:
        ``(folder, settings)``.
    """
    import yaml

    r = Path(run)
    if not (r / "config.yaml").is_file():
        raise CnnkitError(
            f"{str(r)!r} is not a run folder (no config.yaml); pass run=runs/{task}/NAME."
        )
    return r, yaml.safe_load((r / "config.yaml").read_text())


def best_weights(run: str | Path, task: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A task run's best weights and their metadata, checked to be that task's.

    Args:
        run: The run folder.
        task: The task the weights must be for (their metadata's ``task``).

    Returns:
        ``(state_dict, metadata)``.
    """
    from cnnkit.train.checkpoint import load_weights_file

    path = Path(run) / "weights" / "best.safetensors"
    if not path.is_file():
        raise CnnkitError(f"{run} has no weights/best.safetensors; pass a {task} run folder.")
    state, meta = load_weights_file(path)
    if meta.get("task") != task:
        raise CnnkitError(f"{run} is not a {task} run; train one with cnnkit {task} train.")
    return state, meta
