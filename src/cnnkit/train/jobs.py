"""What the task jobs (detect, faces, ...) share around the one trainer.

A task job makes a run folder with its resolved settings, then trains with a plain
configuration: AdamW with cosine decay, fp32, no classification augmentation (the task
augments its own examples, boxes or identity groups included).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from cnnkit.train.classify import next_run_dir
from cnnkit.train.config import TrainConfig

__all__ = ["job_config", "start_run"]


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
