"""The discipline of an ML project, as the course teaches it.

- :mod:`cnnkit.strategy.diagnosis`: human-level, train, train-dev, dev and test errors
  into avoidable bias, variance, data mismatch and dev-set overfitting, with remedies.
- :mod:`cnnkit.strategy.selection`: one optimizing metric under satisficing limits.
- :mod:`cnnkit.strategy.analysis`: error analysis of a run's dev-set mistakes (tags,
  ceilings, suspected mislabels, top losses, confused pairs).
- :mod:`cnnkit.strategy.search`: hyperparameter search with Optuna (random sampling on
  the course's scales, coarse to fine), and the learning-rate finder.
- :mod:`cnnkit.strategy.curves`: learning curves against epochs and training-set size.

Names are imported lazily, so ``import cnnkit.strategy`` stays cheap. No module is
named like a function it exports (``diagnose`` lives in ``diagnosis``), so that
importing a module never hides a function of the package.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Diagnosis": "diagnosis",
    "diagnose": "diagnosis",
    "diagnose_run": "diagnosis",
    "select": "selection",
    "measure_latency": "selection",
    "export_errors": "analysis",
    "read_tags": "analysis",
    "tag_table": "analysis",
    "suspected_mislabels": "analysis",
    "top_losses": "analysis",
    "confused_pairs": "analysis",
    "tune": "search",
    "Space": "search",
    "lr_find": "search",
    "learning_curve": "curves",
    "size_curve": "curves",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"cnnkit.strategy.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'cnnkit.strategy' has no attribute {name!r}")
