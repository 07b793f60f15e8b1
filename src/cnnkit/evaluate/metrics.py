"""Classification metrics from logits and labels, as the course defines them.

* accuracy, error rate ``1 - accuracy`` and top-k accuracy (the true class among the k
  largest outputs);
* per class: precision ``P = TP / (TP + FP)`` (of the images predicted as the class, the
  fraction that are), recall ``R = TP / (TP + FN)`` (of the images of the class, the
  fraction found) and ``F1 = 2 P R / (P + R)``, their harmonic mean;
* macro averages (the mean over classes, each class counting the same) and micro
  averages (TP, FP and FN summed over classes first; for single-label classes micro
  precision = micro recall = micro F1 = accuracy);
* the confusion matrix ``C[i, j]`` = images of true class ``i`` predicted as ``j``, as
  counts and row-normalized (each row sums to 1: row ``i`` shows where class ``i`` goes);
* the weighted error ``sum_i w(i) 1[yhat(i) != y(i)] / sum_i w(i)``, to make some
  mistakes count more (the course: weigh a pornographic image let through 10x).

A class that never occurs and is never predicted has precision, recall and F1 of 0 and
is left out of the macro averages, as ``sklearn.metrics`` (without ``labels=``) and
``torchmetrics`` (``average="macro"``) do. A class never predicted has precision 0.

Everything comes from the ``(K, K)`` confusion matrix, one ``torch.bincount``; the tests
check every number against ``sklearn.metrics`` and ``torchmetrics``.

Multi-label outputs (one sigmoid per label, the course's multi-task learning) have
their own report, :func:`multilabel_report`: per label precision, recall, F1 and
accuracy at the 0.5 threshold, counted over the entries whose label is *present* (a
missing label, NaN in the targets, is skipped, never read as 0), the masked logistic
loss, and macro / micro averages. :func:`multilabel_run_report` scores a multi-label run.
:func:`classification_report` computes all of it at once; :func:`report` runs a
trained run (or any model) over a split first.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.errors import CnnkitError, unknown_name

__all__ = [
    "MultilabelReport",
    "Report",
    "accuracy",
    "classification_report",
    "confusion_matrix",
    "error_rate",
    "log_probs",
    "multilabel_outputs",
    "multilabel_report",
    "multilabel_run_report",
    "precision_recall_f1",
    "report",
    "topk_accuracy",
    "weighted_error",
]


# --- inputs ---------------------------------------------------------------------------------


def log_probs(outputs: torch.Tensor) -> torch.Tensor:
    """Log-probabilities ``(N, K)`` from a model's raw outputs.

    ``(N, K)`` logits of a softmax classifier give ``log_softmax``; one output per
    image (``(N,)`` or ``(N, 1)``, a sigmoid classifier) gives the two classes
    ``log(1 - sigmoid(z)), log(sigmoid(z))``, which is ``log_softmax([0, z])``.

    Args:
        outputs: Logits ``(N, K)``, or ``(N,)`` / ``(N, 1)`` for one sigmoid output.

    Returns:
        float32 ``(N, K)`` (``K = 2`` for one sigmoid output).
    """
    z = _check_outputs(outputs)
    return z.float().log_softmax(1)


def _check_outputs(outputs: Any) -> torch.Tensor:
    """Outputs as ``(N, K)`` logits: one sigmoid output ``z`` becomes ``[0, z]``."""
    z = torch.as_tensor(outputs)
    if not z.is_floating_point():
        raise CnnkitError(
            f"the outputs must be float logits (N, K), got {z.dtype}; pass the model's raw outputs."
        )
    if z.ndim == 2 and z.shape[1] == 1:
        z = z[:, 0]  # (N, 1) -> (N,)
    if z.ndim == 1:  # one sigmoid output: softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]
        z = torch.stack([torch.zeros_like(z), z], 1)  # (N,) -> (N, 2)
    if z.ndim != 2:
        raise CnnkitError(
            f"the outputs must be logits of shape (N, K), got {tuple(z.shape)}; "
            "multi-label outputs are not supported here."
        )
    if torch.isnan(z).any():
        raise CnnkitError("the outputs contain NaN; check the model (or its weights) first.")
    return z


def _check_labels(labels: Any, n: int, K: int) -> torch.Tensor:
    y = torch.as_tensor(labels)
    if y.is_floating_point():
        if not torch.equal(y, y.round()):
            raise CnnkitError("labels must be class indices 0..K-1, got fractional values.")
        y = y.long()
    if y.ndim != 1 or len(y) != n:
        raise CnnkitError(
            f"labels must be one class index per output row ({n}), got shape {tuple(y.shape)}."
        )
    if n and (int(y.min()) < 0 or int(y.max()) >= K):
        raise CnnkitError(
            f"labels must lie in 0..{K - 1} (the outputs have {K} classes), "
            f"got {int(y.min())}..{int(y.max())}."
        )
    return y.long()


def _preds_labels(
    outputs: Any, labels: Any, num_classes: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(predicted class, true class, K)``; integer ``outputs`` are predictions already."""
    o = torch.as_tensor(outputs)
    if not o.is_floating_point():
        if o.ndim != 1:
            raise CnnkitError(
                f"integer outputs must be one predicted class per image (N,), got {tuple(o.shape)}."
            )
        y = torch.as_tensor(labels)
        K = num_classes or 1 + max([0, *o.tolist(), *torch.as_tensor(y).long().tolist()])
        return _check_labels(o, len(o), K), _check_labels(y, len(o), K), K
    z = _check_outputs(o)
    K = z.shape[1]
    if num_classes is not None and num_classes != K:
        raise CnnkitError(f"the outputs have {K} classes but num_classes={num_classes}.")
    return z.argmax(1), _check_labels(labels, len(z), K), K


def _nonempty(n: int) -> None:
    if n == 0:
        raise CnnkitError("there are no examples to score; pass a non-empty split.")


# --- single metrics -------------------------------------------------------------------------


def accuracy(outputs: Any, labels: Any) -> float:
    """Fraction of images whose largest output is the true class.

    Args:
        outputs: Logits ``(N, K)`` (or one sigmoid output), or predicted classes ``(N,)`` int.
        labels: True classes ``(N,)``.

    Returns:
        Accuracy in [0, 1].
    """
    yhat, y, _ = _preds_labels(outputs, labels)
    _nonempty(len(y))
    return float((yhat == y).double().mean())


def error_rate(outputs: Any, labels: Any) -> float:
    """``1 - accuracy``: the fraction of images misclassified.

    Args:
        outputs: Logits ``(N, K)`` or predicted classes ``(N,)`` int.
        labels: True classes ``(N,)``.

    Returns:
        Error in [0, 1].
    """
    return 1.0 - accuracy(outputs, labels)


def topk_accuracy(outputs: Any, labels: Any, k: int = 5) -> float:
    """Fraction of images whose true class is among the ``k`` largest outputs.

    Args:
        outputs: Logits (or probabilities) ``(N, K)``.
        labels: True classes ``(N,)``.
        k: How many of the top classes count (``k >= K`` gives 1).

    Returns:
        Top-k accuracy in [0, 1].
    """
    _check_k(k)
    z = _check_outputs(outputs)
    y = _check_labels(labels, len(z), z.shape[1])
    _nonempty(len(y))
    top = z.topk(min(k, z.shape[1]), dim=1).indices  # (N, k)
    return float((top == y[:, None]).any(1).double().mean())


def _check_k(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise CnnkitError(f"k (top-k) must be a whole number >= 1, got {k!r}; e.g. k=5.")


def weighted_error(
    outputs: Any,
    labels: Any,
    weights: Any,
    classes: Sequence[str] | None = None,
) -> float:
    """The course's weighted error ``sum_i w(i) 1[yhat(i) != y(i)] / sum_i w(i)``.

    Args:
        outputs: Logits ``(N, K)`` or predicted classes ``(N,)`` int.
        labels: True classes ``(N,)``.
        weights: ``w(i)`` per image ``(N,)`` (>= 0, not all 0), or a mapping from a true
            class (name or index) to its weight, the others weighing 1: ``{"cat": 10}``
            makes each misclassified cat count as 10 mistakes.
        classes: Class names, for a mapping keyed by name (default ``"0"``, ``"1"``, ...).

    Returns:
        The weighted error in [0, 1] (the plain error when all weights are equal).
    """
    yhat, y, K = _preds_labels(outputs, labels)
    _nonempty(len(y))
    names = list(classes) if classes is not None else [str(j) for j in range(K)]
    w = _example_weights(weights, y, names)
    return float((w * (yhat != y).double()).sum() / w.sum())


def _example_weights(weights: Any, y: torch.Tensor, classes: list[str]) -> torch.Tensor:
    """``w(i)`` as float64 ``(N,)``: given per image, or per true class (others 1)."""
    if isinstance(weights, Mapping):
        w = torch.ones(len(y), dtype=torch.float64)
        for key, value in weights.items():
            if isinstance(key, int) and not isinstance(key, bool) and 0 <= key < len(classes):
                j = key
            elif str(key) in classes:
                j = classes.index(str(key))
            else:
                raise unknown_name("class", str(key), classes)
            w[y == j] = float(value)
    else:
        w = torch.as_tensor(weights, dtype=torch.float64)
        if w.ndim != 1 or len(w) != len(y):
            raise CnnkitError(
                f"weights must give one w(i) per image ({len(y)}), got shape {tuple(w.shape)}."
            )
    if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise CnnkitError("weights must be finite and >= 0, and not all 0; e.g. 1 or 10 each.")
    return w


def confusion_matrix(
    outputs: Any, labels: Any, num_classes: int | None = None, normalize: bool = False
) -> torch.Tensor:
    """``C[i, j]``: the images of true class ``i`` predicted as class ``j``.

    Args:
        outputs: Logits ``(N, K)`` or predicted classes ``(N,)`` int.
        labels: True classes ``(N,)``.
        num_classes: ``K`` (needed with predicted classes when some class never shows).
        normalize: Divide each row by its sum (row ``i``: where class ``i``'s images go;
            a class with no images keeps a row of zeros).

    Returns:
        int64 counts ``(K, K)``, or float64 rows summing to 1 with ``normalize=True``.
    """
    yhat, y, K = _preds_labels(outputs, labels, num_classes)
    C = torch.bincount(y * K + yhat, minlength=K * K).reshape(K, K)  # (K*K,) -> (K, K)
    return _row_normalize(C) if normalize else C


def _row_normalize(C: torch.Tensor) -> torch.Tensor:
    rows = C.sum(1, keepdim=True).double()
    return C.double() / rows.clamp_min(1)


def precision_recall_f1(
    confusion: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class precision, recall, F1 and support from a confusion matrix.

    Args:
        confusion: Counts ``(K, K)``, rows the true class.

    Returns:
        float64 ``(K,)`` precision ``TP / (TP + FP)``, recall ``TP / (TP + FN)``,
        ``F1 = 2PR / (P + R)`` (each 0 where its denominator is 0) and int64 support
        (images per true class).
    """
    C = confusion.double()
    tp = C.diagonal()
    predicted, support = C.sum(0), C.sum(1)  # tp + fp, tp + fn
    P = tp / predicted.clamp_min(1)
    R = tp / support.clamp_min(1)
    F1 = torch.where(P + R > 0, 2 * P * R / (P + R).clamp_min(1e-300), torch.zeros_like(P))
    return P, R, F1, confusion.sum(1).long()


# --- the report -----------------------------------------------------------------------------


@dataclass
class Report:
    """Every classification metric of one set of outputs.

    Attributes:
        classes: Class names, in index order.
        n: Images scored.
        loss: Mean cross-entropy ``-log p(true class)`` (no label smoothing).
        accuracy: Fraction correct (top-1).
        topk: ``{k: top-k accuracy}`` (empty when ``k >= K``).
        precision: Per class.
        recall: Per class.
        f1: Per class.
        support: Images of each true class.
        macro: ``{"precision", "recall", "f1"}`` averaged over classes.
        micro: ``{"precision", "recall", "f1"}`` from counts summed over classes.
        confusion: int64 ``(K, K)`` counts, rows the true class, columns the predicted.
        weighted_error: The weighted error when weights were given, else None.
        title: What was scored, e.g. ``"test split of runs/classify/train"``.
        notes: How the outputs were obtained (crops, ensemble members).
    """

    classes: list[str]
    n: int
    loss: float
    accuracy: float
    topk: dict[int, float]
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    macro: dict[str, float]
    micro: dict[str, float]
    confusion: torch.Tensor
    weighted_error: float | None = None
    title: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def error(self) -> float:
        """``1 - accuracy``."""
        return 1.0 - self.accuracy

    @property
    def confusion_normalized(self) -> torch.Tensor:
        """float64 ``(K, K)``: each row divided by its sum (where class ``i`` goes)."""
        return _row_normalize(self.confusion)

    def top_confusions(self, top: int = 10) -> list[tuple[str, str, int, float]]:
        """The largest off-diagonal cells, most frequent first.

        Args:
            top: How many.

        Returns:
            ``(true class, predicted class, count, share of the true class's images)``.
        """
        C = self.confusion.clone()
        C.fill_diagonal_(0)
        K = len(self.classes)
        flat = C.reshape(-1)  # (K, K) -> (K*K,)
        order = torch.argsort(flat, descending=True, stable=True)[:top]
        share = self.confusion_normalized
        out = []
        for ix in order.tolist():
            i, j = divmod(ix, K)
            if flat[ix] == 0:
                break
            out.append((self.classes[i], self.classes[j], int(flat[ix]), float(share[i, j])))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain types (for JSON or YAML): every field, the confusion matrix as lists."""
        return {
            "title": self.title,
            "classes": list(self.classes),
            "n": self.n,
            "loss": self.loss,
            "accuracy": self.accuracy,
            "error": self.error,
            "topk": {int(k): v for k, v in self.topk.items()},
            "precision": list(self.precision),
            "recall": list(self.recall),
            "f1": list(self.f1),
            "support": list(self.support),
            "macro": dict(self.macro),
            "micro": dict(self.micro),
            "confusion": self.confusion.tolist(),
            "weighted_error": self.weighted_error,
            "notes": list(self.notes),
        }

    def table(self, max_classes: int = 20, top: int = 10) -> str:
        """The report as text: scores, per-class P/R/F1, averages, confusion matrix.

        Args:
            max_classes: The full confusion matrix is printed up to this many classes;
                above it only the ``top`` largest confusions are listed.
            top: How many of the largest confusions to list.

        Returns:
            Lines of text (no trailing newline).
        """
        from cnnkit.train.classify import percent

        K = len(self.classes)
        lines = []
        head = f"{self.title}: " if self.title else ""
        lines.append(f"{head}{self.n:,} images, {K} classes")
        scores = [f"accuracy {percent(self.accuracy)}", f"error {percent(self.error)}"]
        scores += [f"top-{k} accuracy {percent(v)}" for k, v in self.topk.items()]
        scores.append(f"loss {self.loss:.4f}")
        if self.weighted_error is not None:
            scores.append(f"weighted error {percent(self.weighted_error)}")
        lines.append("   ".join(scores))
        lines += self.notes
        lines.append("")
        names = [_short(c) for c in self.classes]
        w = max(9, *(len(c) for c in names))
        lines.append(f"{'class':<{w}}  {'precision':>9}  {'recall':>8}  {'F1':>8}  {'support':>8}")
        rows = zip(names, self.precision, self.recall, self.f1, self.support)
        for name, p, r, f, s in rows:
            lines.append(f"{name:<{w}}  {percent(p):>9}  {percent(r):>8}  {percent(f):>8}  {s:>8,}")
        for label, avg in (("macro avg", self.macro), ("micro avg", self.micro)):
            lines.append(
                f"{label:<{w}}  {percent(avg['precision']):>9}  {percent(avg['recall']):>8}  "
                f"{percent(avg['f1']):>8}  {self.n:>8,}"
            )
        lines.append("")
        lines += self._confusion_lines(max_classes, top)
        return "\n".join(lines)

    def _confusion_lines(self, max_classes: int, top: int) -> list[str]:
        n_classes = len(self.classes)
        lines = []
        if n_classes <= max_classes:
            lines.append("confusion matrix (rows: true class, columns: predicted class, counts):")
            plain = all(len(c) <= 3 for c in self.classes)
            cols = list(self.classes) if plain else [str(j) for j in range(n_classes)]
            rows = cols if plain else [f"{j} {_short(c)}" for j, c in enumerate(self.classes)]
            cell = max(3, len(f"{int(self.confusion.max()):,}"), *(len(c) for c in cols)) + 1
            corner = "true \\ pred"
            lw = max(len(corner), *(len(r) for r in rows))
            lines.append(f"{corner:<{lw}}" + "".join(f"{c:>{cell}}" for c in cols))
            for r, counts in zip(rows, self.confusion.tolist()):
                lines.append(f"{r:<{lw}}" + "".join(f"{v:>{cell},}" for v in counts))
            lines.append("")
            lines.append("top confusions (true -> predicted: count, share of the true class):")
        else:
            lines.append(
                f"confusion matrix: {n_classes} classes are too many to print (more than "
                f"{max_classes}); its {top} largest off-diagonal cells "
                "(true -> predicted: count, share of the true class):"
            )
        from cnnkit.train.classify import percent

        worst = self.top_confusions(top)
        if not worst:
            lines.append("  none: every image is on the diagonal")
        for t, p, c, s in worst:
            lines.append(f"  {t} -> {p}: {c:,} ({percent(s)})")
        return lines


def _short(name: str, width: int = 24) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."


def classification_report(
    logits: Any,
    labels: Any,
    classes: Sequence[str] | None = None,
    k: int = 5,
    weights: Any = None,
    title: str = "",
) -> Report:
    """Every metric of a classifier's outputs at once.

    Args:
        logits: ``(N, K)`` logits or log-probabilities (one sigmoid output ``(N,)`` or
            ``(N, 1)`` counts as two classes).
        labels: True classes ``(N,)``.
        classes: Class names (default ``"0"``, ``"1"``, ...).
        k: Also report top-k accuracy (when ``k < K``).
        weights: ``w(i)`` per image, or ``{class: weight}``, for the weighted error
            (see :func:`weighted_error`); None for none.
        title: What was scored, printed first by :meth:`Report.table`.

    Returns:
        A :class:`Report`; ``report.table()`` renders it as text.
    """
    _check_k(k)
    z = _check_outputs(logits)
    N, K = z.shape
    y = _check_labels(labels, N, K)
    _nonempty(N)
    names = [str(c) for c in classes] if classes is not None else [str(j) for j in range(K)]
    if len(names) != K:
        raise CnnkitError(f"{len(names)} class names for outputs of {K} classes; pass {K} names.")
    yhat = z.argmax(1)
    C = torch.bincount(y * K + yhat, minlength=K * K).reshape(K, K)  # (K*K,) -> (K, K)
    P, R, F1, support = precision_recall_f1(C)
    seen = (support > 0) | (C.sum(0) > 0)  # classes in the labels or the predictions
    macro = {n: float(v[seen].mean()) for n, v in (("precision", P), ("recall", R), ("f1", F1))}
    tp = float(C.diagonal().sum())
    mp, mr = tp / float(C.sum()), tp / float(C.sum())  # tp+fp and tp+fn both sum to N
    micro = {"precision": mp, "recall": mr, "f1": 2 * mp * mr / (mp + mr) if mp + mr else 0.0}
    topk = {k: topk_accuracy(z, y, k)} if k < K else {}
    loss = float(F.cross_entropy(z.double(), y))
    werr = None
    if weights is not None:
        w = _example_weights(weights, y, names)
        werr = float((w * (yhat != y).double()).sum() / w.sum())
    return Report(
        classes=names,
        n=N,
        loss=loss if math.isfinite(loss) else float("inf"),
        accuracy=float((yhat == y).double().mean()),
        topk=topk,
        precision=P.tolist(),
        recall=R.tolist(),
        f1=F1.tolist(),
        support=support.tolist(),
        macro=macro,
        micro=micro,
        confusion=C,
        weighted_error=werr,
        title=title,
    )


def report(
    run: str | os.PathLike | nn.Module | None = None,
    data: Any = None,
    *,
    weights: str | os.PathLike | None = None,
    split: str = "test",
    batch: int = 256,
    k: int = 5,
    crops: int = 1,
    example_weights: Any = None,
) -> Report:
    """Run a trained run (or any model) over a split and report every metric.

    The run is read as ``cnnkit val`` reads it: its best weights, its preprocessing and
    its own seeded splits (or ``data`` read with its preprocessing).

    Args:
        run: Run folder, or an ``nn.Module`` (then ``data`` is a Dataset or Data).
        data: Another source (name or folder), a :class:`~cnnkit.data.Data` or a Dataset.
        weights: Instead of ``run``: a cnnkit ``.safetensors`` file (with ``data``).
        split: ``test``, ``dev``, ``train_dev`` or ``train``.
        batch: Images per forward pass.
        k: Top-k accuracy's ``k``.
        crops: 1, 5 or 10 test-time crops (see :mod:`cnnkit.evaluate.testtime`).
        example_weights: ``w(i)`` per image (split order) or ``{class: weight}``, for
            the weighted error.

    Returns:
        A :class:`Report`.
    """
    from cnnkit.evaluate.testtime import check_crops, load_member, predict_log_probs

    crops = check_crops(crops)
    _check_k(k)
    m = load_member(run, data, weights=weights, split=split, batch=batch)
    out = predict_log_probs(m.model, m.dataset, crops=crops, batch=batch)
    r = classification_report(
        out.log_probs,
        out.labels,
        classes=m.classes,
        k=k,
        weights=example_weights,
        title=f"{split} split of {m.name}",
    )
    if crops > 1:
        r.notes.append(out.describe())
    return r


# --- multi-label ----------------------------------------------------------------------------


@dataclass
class MultilabelReport:
    """Per-label metrics of a multi-label classifier, over the present labels only.

    Attributes:
        labels: Label names.
        n: Images scored.
        loss: Mean logistic loss over the present entries (the masked training loss).
        accuracy: Per label: fraction of its present entries predicted right (z > 0 vs y).
        precision: Per label: ``TP / (TP + FP)`` (0 when nothing is predicted positive).
        recall: Per label: ``TP / (TP + FN)`` (0 when no present entry is positive).
        f1: Per label: ``2PR / (P + R)`` (0 when both are 0).
        support: Per label: entries present (labelled 0 or 1), the ones scored.
        positives: Per label: present entries that are 1 (sklearn's "support").
        missing: Per label: entries missing (NaN), skipped.
        macro: ``{"precision", "recall", "f1", "accuracy"}``, the mean over labels.
        micro: ``{"precision", "recall", "f1", "accuracy"}`` from counts summed over labels.
        title: What was scored.
    """

    labels: list[str]
    n: int
    loss: float
    accuracy: list[float]
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    positives: list[int]
    missing: list[int]
    macro: dict[str, float]
    micro: dict[str, float]
    title: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for JSON or YAML."""
        from dataclasses import asdict

        return asdict(self)

    def table(self) -> str:
        """The report as text: one row per label, then the macro and micro averages.

        Returns:
            Lines of text (no trailing newline).
        """
        from cnnkit.train.classify import percent

        head = f"{self.title}: " if self.title else ""
        lines = [
            f"{head}{self.n:,} images, {len(self.labels)} labels (multi-label, one sigmoid "
            f"each; missing labels skipped)",
            f"loss {self.loss:.4f} (mean over present labels)   "
            f"mean label accuracy {percent(self.macro['accuracy'])}",
            "",
        ]
        names = [_short(c) for c in self.labels]
        w = max(9, *(len(c) for c in names))
        lines.append(
            f"{'label':<{w}}  {'precision':>9}  {'recall':>8}  {'F1':>8}  {'accuracy':>8}  "
            f"{'support':>8}  {'positive':>8}  {'missing':>8}"
        )
        rows = zip(
            names, self.precision, self.recall, self.f1, self.accuracy, self.support,
            self.positives, self.missing,
        )  # fmt: skip
        for name, p, r, f, a, s, pos, miss in rows:
            lines.append(
                f"{name:<{w}}  {percent(p):>9}  {percent(r):>8}  {percent(f):>8}  "
                f"{percent(a):>8}  {s:>8,}  {pos:>8,}  {miss:>8,}"
            )
        for label, avg in (("macro avg", self.macro), ("micro avg", self.micro)):
            lines.append(
                f"{label:<{w}}  {percent(avg['precision']):>9}  {percent(avg['recall']):>8}  "
                f"{percent(avg['f1']):>8}  {percent(avg['accuracy']):>8}  "
                f"{sum(self.support):>8,}  {sum(self.positives):>8,}  {sum(self.missing):>8,}"
            )
        return "\n".join(lines)


def _prf(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Precision, recall and F1 from counts (0 where a denominator is 0, as sklearn)."""
    P = tp / (tp + fp).clamp_min(1)
    R = tp / (tp + fn).clamp_min(1)
    F1 = torch.where(P + R > 0, 2 * P * R / (P + R).clamp_min(1e-300), torch.zeros_like(P))
    return P, R, F1


def multilabel_report(
    logits: Any, targets: Any, names: Sequence[str] | None = None, title: str = ""
) -> MultilabelReport:
    """Per-label precision / recall / F1 of multi-label outputs, skipping missing labels.

    A label is predicted present when its logit is > 0 (sigmoid > 0.5). Only the
    entries whose target is 0 or 1 are counted; NaN targets (``?`` in a manifest) are
    left out of every count and of the loss.

    Args:
        logits: ``(N, L)`` raw outputs, one per label.
        targets: ``(N, L)`` with 1, 0, or NaN for a missing label.
        names: Label names (default ``"0"``, ``"1"``, ...).
        title: What was scored, printed first by :meth:`MultilabelReport.table`.

    Returns:
        A :class:`MultilabelReport`.

    Raises:
        CnnkitError: On shapes that differ, NaN logits, or targets other than 0/1/NaN.
    """
    from cnnkit.train.tasks import masked_bce

    z = torch.as_tensor(logits)
    y = torch.as_tensor(targets)
    if not z.is_floating_point() or z.ndim != 2:
        raise CnnkitError(
            f"multi-label outputs must be float logits (N, L), got {z.dtype} {tuple(z.shape)}."
        )
    if tuple(y.shape) != tuple(z.shape):
        raise CnnkitError(
            f"targets {tuple(y.shape)} and outputs {tuple(z.shape)} differ; pass one 0/1/NaN "
            "target per output."
        )
    if torch.isnan(z).any():
        raise CnnkitError("the outputs contain NaN; check the model (or its weights) first.")
    y = y.double()
    present = ~torch.isnan(y)  # (N, L)
    if not torch.isin(y[present], torch.tensor([0.0, 1.0], dtype=y.dtype)).all():
        raise CnnkitError("multi-label targets must be 1, 0 or NaN (missing); got other values.")
    N, L = z.shape
    _nonempty(N)
    labels = [str(c) for c in names] if names is not None else [str(j) for j in range(L)]
    if len(labels) != L:
        raise CnnkitError(f"{len(labels)} label names for outputs of {L} labels; pass {L} names.")
    pred, true = z > 0, y > 0.5
    tp = (pred & true & present).sum(0).double()  # (N, L) -> (L,)
    fp = (pred & ~true & present).sum(0).double()
    fn = (~pred & true & present).sum(0).double()
    support = present.sum(0)
    correct = ((pred == true) & present).sum(0).double()
    P, R, F1 = _prf(tp, fp, fn)
    acc = correct / support.clamp_min(1).double()
    mP, mR, mF1 = _prf(tp.sum(), fp.sum(), fn.sum())
    loss = float(masked_bce(z.double(), y))
    return MultilabelReport(
        labels=labels,
        n=N,
        loss=loss if math.isfinite(loss) else float("inf"),
        accuracy=acc.tolist(),
        precision=P.tolist(),
        recall=R.tolist(),
        f1=F1.tolist(),
        support=support.tolist(),
        positives=(true & present).sum(0).tolist(),
        missing=(~present).sum(0).tolist(),
        macro={
            "precision": float(P.mean()),
            "recall": float(R.mean()),
            "f1": float(F1.mean()),
            "accuracy": float(acc.mean()),
        },
        micro={
            "precision": float(mP),
            "recall": float(mR),
            "f1": float(mF1),
            "accuracy": float(correct.sum() / max(int(support.sum()), 1)),
        },
        title=title,
    )


@torch.no_grad()
def multilabel_outputs(
    model: nn.Module, data: Any, batch: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """A model's raw outputs over a dataset, in order, with the targets.

    Args:
        model: The network (put in eval mode while it runs).
        data: An :class:`~cnnkit.data.ImageSet` or any Dataset of ``(x, y)``.
        batch: Images per forward pass.

    Returns:
        ``(logits (N, L), targets (N, L))``.
    """
    from torch.utils.data import DataLoader

    from cnnkit.data import ImageSet

    was = model.training
    model.eval()
    outs, ys = [], []
    try:
        if isinstance(data, ImageSet):
            for i in range(0, len(data), batch):
                x = data.preprocess.normalize(data.images[i : i + batch])
                outs.append(model(x).float())
                ys.append(data.labels[i : i + batch])
        else:
            for x, y in DataLoader(data, batch_size=batch):
                outs.append(model(x).float())
                ys.append(y)
    finally:
        model.train(was)
    return torch.cat(outs), torch.cat(ys)


def multilabel_run_report(
    run: str | os.PathLike | None = None,
    data: Any = None,
    *,
    weights: str | os.PathLike | None = None,
    split: str = "test",
    batch: int = 256,
) -> MultilabelReport | None:
    """Score a multi-label run (``cnnkit val run=... report=true``) on a split.

    Args:
        run: Run folder (best weights, its own seeded splits).
        data: Another source (a manifest) read with the run's preprocessing.
        weights: Instead of ``run``: a cnnkit ``.safetensors`` file (with ``data``).
        split: ``test``, ``dev``, ``train_dev`` or ``train``.
        batch: Images per forward pass.

    Returns:
        The :class:`MultilabelReport`, or None when the run is not multi-label (then
        :func:`report` applies).
    """
    from cnnkit.evaluate.testtime import load_member
    from cnnkit.train.classify import load_run_model

    _, meta = load_run_model(run, weights)
    if not meta.get("multilabel"):
        return None
    m = load_member(run, data, weights=weights, split=split, batch=batch)
    z, y = multilabel_outputs(m.model, m.dataset, batch)
    return multilabel_report(z, y, m.classes, title=f"{split} split of {m.name}")
