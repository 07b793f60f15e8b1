"""Scoring classifiers: metrics, reports, multi-crop evaluation and ensembles.

``cnnkit.evaluate`` is both this package and a function: calling it scores a run as
before (``cnnkit.evaluate("runs/classify/train")`` is
:func:`cnnkit.train.classify.evaluate`, returning ``{"loss", "accuracy", "n"}``), and
its attributes are the metrics::

    r = cnnkit.evaluate.report("runs/classify/train")          # every metric of a run
    print(r.table())                                           # per-class P/R/F1, confusion
    r = cnnkit.evaluate.classification_report(logits, labels)  # from outputs you have
    cnnkit.evaluate.evaluate_crops("runs/classify/train", crops=5)
    cnnkit.evaluate.ensemble(["runs/classify/a", "runs/classify/b"]).table()
"""

from __future__ import annotations

import sys
import types
from typing import Any

from cnnkit.evaluate.metrics import (
    MultilabelReport,
    Report,
    accuracy,
    classification_report,
    confusion_matrix,
    error_rate,
    log_probs,
    multilabel_outputs,
    multilabel_report,
    multilabel_run_report,
    precision_recall_f1,
    report,
    topk_accuracy,
    weighted_error,
)
from cnnkit.evaluate.testtime import (
    CROPS,
    MODES,
    RESIZE,
    SHIFT,
    CostRow,
    CropResult,
    EnsembleResult,
    Member,
    Outputs,
    check_crops,
    check_mode,
    crop_views,
    describe_crops,
    ensemble,
    evaluate_crops,
    load_member,
    predict_log_probs,
    resized_size,
    shift_pixels,
)

__all__ = [
    "CROPS",
    "MODES",
    "RESIZE",
    "SHIFT",
    "CostRow",
    "CropResult",
    "EnsembleResult",
    "Member",
    "MultilabelReport",
    "Outputs",
    "Report",
    "accuracy",
    "check_crops",
    "check_mode",
    "classification_report",
    "confusion_matrix",
    "crop_views",
    "describe_crops",
    "ensemble",
    "error_rate",
    "evaluate_crops",
    "load_member",
    "log_probs",
    "multilabel_outputs",
    "multilabel_report",
    "multilabel_run_report",
    "precision_recall_f1",
    "predict_log_probs",
    "report",
    "resized_size",
    "shift_pixels",
    "topk_accuracy",
    "weighted_error",
]


class _CallableModule(types.ModuleType):
    """This package, callable as :func:`cnnkit.train.classify.evaluate`."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        """Score a classifier on a split: :func:`cnnkit.train.classify.evaluate`.

        Args:
            *args: As for :func:`cnnkit.train.classify.evaluate` (a run folder or a model,
                then data).
            **kwargs: ``weights``, ``split``, ``batch``, ``data``.

        Returns:
            ``{"loss", "accuracy", "n"}``.
        """
        from cnnkit.train.classify import evaluate

        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
