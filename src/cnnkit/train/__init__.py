"""One training loop for every task: ``cnnkit.train.fit(model, train, dev, ...)``.

Settings live in :class:`TrainConfig` (the course's names: ``lr``, ``beta1``,
``beta2``, ``eps``, ``l2``...); checkpoints are safetensors plus a verified state file
that loads with ``torch.load(weights_only=True)``; a run resumes exactly.
"""

from cnnkit.train.checkpoint import (
    CheckpointError,
    atomic_write,
    load_state,
    load_weights_file,
    save_state,
    save_weights,
)
from cnnkit.train.config import OPTIMIZERS, SCHEDULES, TrainConfig, lr_factor
from cnnkit.train.loop import FitResult, build_optimizer, evaluate_model, fit, resolve_epochs
from cnnkit.train.tasks import Classification, Task

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "CheckpointError",
    "Classification",
    "FitResult",
    "Task",
    "TrainConfig",
    "atomic_write",
    "build_optimizer",
    "evaluate_model",
    "fit",
    "load_state",
    "load_weights_file",
    "lr_factor",
    "resolve_epochs",
    "save_state",
    "save_weights",
]
