"""Error analysis, as the course runs it: look at the dev-set mistakes, tag them, count.

The workflow (``cnnkit analyze``):

1. :func:`export_errors` scores a run on a split (dev by default) and writes, into one
   folder, ``errors.csv`` (one row per misclassified example:
   ``id,file,source,label,pred,prob,loss,suspect,mislabeled,<tags>,notes``),
   ``images/<id>.png`` (each misclassified image, as the model saw it before
   normalization), ``contact_sheet.png`` (a grid of the errors captioned
   ``label -> pred``) and ``errors.json`` (the split's size and error rate, so the
   table can be computed from the folder alone). It also finds the top-loss examples
   (:func:`top_losses`), the most-confused class pairs (:func:`confused_pairs`) and the
   examples whose label is suspect (:func:`suspected_mislabels`).
2. The user fills the tag cells (``1``, ``x`` or ``yes``), the ``mislabeled`` column
   and the notes, and may add columns for new tags (the course's "instagram filters").
3. :func:`read_tags` reads the tagged CSV back and validates it; :func:`tag_table`
   gives the course's table: per tag, the share of the errors and the ceiling fixing
   it puts on the error (``new error >= error * (1 - share)``), and the split of the
   error into "errors due to incorrect labels" and "errors due to other causes", with
   the course's advice on whether fixing labels is worth it.

The suspected mislabels are a confident-learning estimate (Northcutt, Jiang and
Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels", JAIR 70,
2021): from out-of-sample predicted probabilities, class ``j``'s threshold ``t_j`` is
the mean of ``p_j`` over the examples labelled ``j``; an example labelled ``i`` is
suspect when, among the classes ``k`` with ``p_k >= t_k``, the most probable one is
some ``j != i`` (an off-diagonal entry of the confident joint, cleanlab's
``filter_by="confident_learning"``, without its calibration step).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.errors import CnnkitError, did_you_mean, unknown_name

__all__ = [
    "DEFAULT_TAGS",
    "SHEET_MAX",
    "ConfusedPair",
    "ErrorExport",
    "HighLoss",
    "Suspect",
    "TagRow",
    "TagTable",
    "TaggedErrors",
    "class_thresholds",
    "confused_pairs",
    "export_errors",
    "read_tags",
    "suspected_mislabels",
    "tag_table",
    "top_losses",
]

DEFAULT_TAGS = ("blurry", "ambiguous", "other")
"""Tag columns of ``errors.csv`` when none are named (``tags=dog,great_cat,blurry``)."""
SHEET_MAX = 100
"""Errors drawn on the contact sheet by default (the course examines about 100)."""
SPLITS = ("dev", "test", "train_dev", "train")
COLUMNS_BEFORE = ("id", "file", "source", "label", "pred", "prob", "loss", "suspect")
FIXED = (*COLUMNS_BEFORE, "mislabeled", "notes")
REQUIRED = ("id", "label", "pred", "mislabeled")
YES = ("1", "x", "yes", "y", "true", "1.0", "✓", "✔")
NO = ("", "0", "no", "n", "false", "0.0", "-")
SIDECAR_FORMAT = "cnnkit-errors/1"
_TAG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_LABEL_ADVICE_LOW = 0.1  # below this share of the errors, incorrect labels are not the priority
_LABEL_ADVICE_HIGH = 0.3  # from this share on, fixing the labels is worth the time


# ---------------------------------------------------------------------------------------------
# the estimates: thresholds, suspects, top losses, confused pairs


@dataclass
class Suspect:
    """An example whose label confident learning doubts.

    Attributes:
        index: Position in the arrays given (the row in the split).
        label: Its given class index ``i``.
        suggested: The class ``j`` confident learning assigns it (``p_j >= t_j``, largest).
        prob_label: ``p_i``, the predicted probability of its given label.
        prob_suggested: ``p_j``.
    """

    index: int
    label: int
    suggested: int
    prob_label: float
    prob_suggested: float


@dataclass
class HighLoss:
    """One of the examples with the largest loss ``-log p(label)``.

    Attributes:
        index: Position in the arrays given.
        label: Its class index.
        pred: The predicted class index (the argmax).
        prob_label: The probability of its label.
        prob_pred: The probability of the prediction.
        loss: ``-log prob_label`` (cross-entropy).
    """

    index: int
    label: int
    pred: int
    prob_label: float
    prob_pred: float
    loss: float


@dataclass
class ConfusedPair:
    """A (true class, predicted class) pair and how often the model mistook one for the other.

    Attributes:
        label: True class index.
        pred: Predicted class index (``!= label``).
        count: Examples of ``label`` predicted as ``pred``.
        share: ``count`` over all errors.
    """

    label: int
    pred: int
    count: int
    share: float


def _as_probs(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(N, K)`` float64 probabilities and ``(N,)`` int64 labels, checked."""
    P = probs.detach().cpu().double().numpy() if torch.is_tensor(probs) else np.asarray(probs)
    y = labels.detach().cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
    P = P.astype(np.float64)
    if P.ndim != 2 or P.shape[1] < 2:
        raise CnnkitError(
            f"probabilities must be an (N, K) array with K >= 2 classes, got shape {P.shape}."
        )
    if y.ndim != 1 or len(y) != len(P):
        raise CnnkitError(
            f"labels must be a vector of {len(P)} class indices (one per row of the "
            f"probabilities), got shape {y.shape}."
        )
    if len(y) and not np.issubdtype(y.dtype, np.integer) and not np.all(np.mod(y, 1) == 0):
        raise CnnkitError("labels must be whole class indices, e.g. [3, 0, 7].")
    y = y.astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= P.shape[1]):
        raise CnnkitError(
            f"labels must be class indices in 0..{P.shape[1] - 1} (the probabilities have "
            f"{P.shape[1]} columns), got {int(y.min())}..{int(y.max())}."
        )
    if not np.isfinite(P).all() or (P < 0).any():
        raise CnnkitError("probabilities must be finite and >= 0 (pass softmax outputs).")
    return P, y


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise CnnkitError(f"k must be a whole number >= 1, got {k!r}; e.g. k=10.")
    return int(k)


def class_thresholds(probs: Any, labels: Any) -> np.ndarray:
    """Confident learning's thresholds: ``t_j`` = mean ``p_j`` over the examples labelled ``j``.

    Args:
        probs: Out-of-sample predicted probabilities ``(N, K)``.
        labels: Given labels ``(N,)``.

    Returns:
        float64 ``(K,)``; ``inf`` for a class no example is labelled with (never reached).
    """
    P, y = _as_probs(probs, labels)
    K = P.shape[1]
    sums = np.zeros(K)
    np.add.at(sums, y, P[np.arange(len(y)), y])
    counts = np.bincount(y, minlength=K)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = sums / counts
    t[counts == 0] = np.inf
    return t


def suspected_mislabels(probs: Any, labels: Any) -> list[Suspect]:
    """Examples whose given label is suspect, by confident learning (Northcutt et al. 2021).

    With thresholds ``t_j`` from :func:`class_thresholds`, an example labelled ``i`` is
    suspect when some class ``j != i`` has ``p_j >= t_j`` and ``p_j`` is the largest
    among its classes above threshold. The probabilities must be out-of-sample (a dev
    split scored by a model trained on the train split, or cross-validated ones):
    on its own training data a network is confident in every label, noisy or not.

    Args:
        probs: Predicted probabilities ``(N, K)`` (numpy or torch).
        labels: Given class indices ``(N,)``.

    Returns:
        The suspects, most doubtful first (lowest ``p(label)``; ties by index).
    """
    P, y = _as_probs(probs, labels)
    if not len(y):
        return []
    t = class_thresholds(P, y)
    above = t[None, :] <= P  # (N, K): p_k >= t_k, class k is confidently present
    best = np.where(above, P, -np.inf).argmax(1)  # the most probable class above threshold
    suspect = above.any(1) & (best != y)
    idx = np.flatnonzero(suspect)
    idx = idx[np.lexsort((idx, P[idx, y[idx]]))]  # by p(label), then index
    return [
        Suspect(int(i), int(y[i]), int(best[i]), float(P[i, y[i]]), float(P[i, best[i]]))
        for i in idx
    ]


def _losses(P: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``-log p(label)`` per example (float64; a probability of 0 gives about 690)."""
    return -np.log(np.clip(P[np.arange(len(y)), y], 1e-300, None))


def top_losses(probs: Any, labels: Any, k: int = 10) -> list[HighLoss]:
    """The ``k`` examples with the largest cross-entropy ``-log p(label)``.

    High-loss examples are the confident mistakes: often mislabeled, ambiguous, or a
    class the model has not learned.

    Args:
        probs: Predicted probabilities ``(N, K)``.
        labels: Class indices ``(N,)``.
        k: How many.

    Returns:
        Up to ``k`` examples, largest loss first (ties by index).
    """
    k = _check_k(k)
    P, y = _as_probs(probs, labels)
    loss = _losses(P, y)
    order = np.lexsort((np.arange(len(y)), -loss))[:k]
    pred = P.argmax(1)
    return [
        HighLoss(
            int(i), int(y[i]), int(pred[i]), float(P[i, y[i]]), float(P[i, pred[i]]), float(loss[i])
        )
        for i in order
    ]


def confused_pairs(labels: Any, preds: Any, k: int = 10) -> list[ConfusedPair]:
    """The most frequent (true class -> predicted class) mistakes: the confusion matrix's
    largest off-diagonal cells.

    Args:
        labels: True class indices ``(N,)``.
        preds: Predicted class indices ``(N,)``.
        k: How many pairs.

    Returns:
        Up to ``k`` pairs with a count > 0, most frequent first (ties by label, then pred).
    """
    k = _check_k(k)
    y = np.asarray(labels.cpu() if torch.is_tensor(labels) else labels).astype(np.int64)
    p = np.asarray(preds.cpu() if torch.is_tensor(preds) else preds).astype(np.int64)
    if y.ndim != 1 or y.shape != p.shape:
        raise CnnkitError(
            f"labels and preds must be vectors of the same length, got {y.shape} and {p.shape}."
        )
    if len(y) and min(y.min(), p.min()) < 0:
        raise CnnkitError("labels and preds must be class indices >= 0.")
    K = int(max(y.max(), p.max())) + 1 if len(y) else 1
    cm = np.bincount(y * K + p, minlength=K * K).reshape(K, K)  # (K*K,) -> (K, K)
    np.fill_diagonal(cm, 0)
    errors = int(cm.sum())
    flat = cm.reshape(-1)  # (K, K) -> (K*K,)
    order = np.lexsort((np.arange(K * K), -flat))  # count desc, then row-major (label, pred)
    return [
        ConfusedPair(int(c // K), int(c % K), int(flat[c]), float(flat[c] / errors))
        for c in order[:k]
        if flat[c] > 0
    ]


# ---------------------------------------------------------------------------------------------
# export: the run's errors to a folder


@dataclass
class ErrorExport:
    """What :func:`export_errors` wrote and found.

    Attributes:
        folder: The output folder.
        csv: ``errors.csv``.
        sidecar: ``errors.json`` (split size, error rate, classes, suspects).
        contact_sheet: ``contact_sheet.png``, or None when there was no error.
        split: The split analysed.
        examples: Images in the split.
        errors: Misclassified images (rows of the CSV).
        tags: The tag columns.
        shown: Errors drawn on the contact sheet.
        classes: Class names.
        ids: Row ``id`` (position in the split) of every error, in CSV order.
        top: The top-loss examples of the whole split.
        pairs: The most-confused class pairs.
        suspects: Suspected mislabels in the whole split (correct predictions included).
        source_ids: Each split example's source (file path or ``all/123``).
        notes: Caveats worth printing.
    """

    folder: Path
    csv: Path
    sidecar: Path
    contact_sheet: Path | None
    split: str
    examples: int
    errors: int
    tags: list[str]
    shown: int
    classes: list[str]
    ids: list[int]
    top: list[HighLoss]
    pairs: list[ConfusedPair]
    suspects: list[Suspect]
    source_ids: list[str] = field(default_factory=list, repr=False)
    notes: list[str] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        """Errors over examples."""
        return self.errors / self.examples if self.examples else 0.0

    def lines(self) -> list[str]:
        """What ``cnnkit analyze run=...`` prints."""
        c, err = self.classes, set(self.ids)
        cw = min(20, max(9, *(len(x) for x in c)))  # class-name column width
        out = [
            f"{self.split}: {self.errors:,} errors in {self.examples:,} images (error "
            f"{_pct(self.error_rate, self.error_rate)}) -> {self.folder}/",
            f"  errors.csv          one row per error: {','.join(_header(self.tags))}",
            f"  images/<id>.png     the {self.errors:,} misclassified images",
        ]
        if self.contact_sheet is not None:
            cap = "" if self.shown == self.errors else f" (the first {self.shown} rows; sheet=N)"
            out.append(f"  contact_sheet.png   {self.shown:,} errors, label -> pred{cap}")
        out.append("  errors.json         the split size and error rate, for the tag table")
        out += [f"note: {n}" for n in self.notes]
        if self.top:
            out.append(f"top losses over all {self.examples:,} images (loss = -log p(label)):")
            out.append(
                f"  {'id':>6}  {'label':<{cw}} {'pred':<{cw}} {'p(label)':>8} {'p(pred)':>8} "
                f"{'loss':>7}  result"
            )
            for h in self.top:
                out.append(
                    f"  {h.index:>6}  {c[h.label]:<{cw}} {c[h.pred]:<{cw}} {h.prob_label:>8.3f} "
                    f"{h.prob_pred:>8.3f} {h.loss:>7.3f}  "
                    f"{'error' if h.pred != h.label else 'right (low confidence)'}"
                )
        if self.pairs:
            out.append("most-confused pairs (label -> pred):")
            for pr in self.pairs:
                out.append(
                    f"  {c[pr.label]} -> {c[pr.pred]}: {pr.count} "
                    f"error{'s' if pr.count != 1 else ''} ({100 * pr.share:.1f}% of errors)"
                )
        out.append(
            f"suspected mislabels (confident learning, Northcutt et al. 2021): "
            f"{len(self.suspects)} of {self.examples:,} {self.split} images"
        )
        if self.suspects:
            out.append(
                f"  {'id':>6}  {'label':<{cw}} {'suggests':<{cw}} {'p(label)':>8} "
                f"{'p(sugg.)':>8}  {'source'}"
            )
            for s in self.suspects[:20]:
                where = "" if s.index in err else "  (predicted right: not in errors.csv)"
                src = self.source_ids[s.index] if self.source_ids else ""
                out.append(
                    f"  {s.index:>6}  {c[s.label]:<{cw}} {c[s.suggested]:<{cw}} "
                    f"{s.prob_label:>8.3f} {s.prob_suggested:>8.3f}  {src}{where}"
                )
            if len(self.suspects) > 20:
                out.append(f"  ... {len(self.suspects) - 20} more in {self.sidecar.name}")
        if self.errors:
            out.append(
                "next: mark each row's tag cells (1, x or yes), the mislabeled column and notes "
                "(add columns for new tags), then run: "
                f"cnnkit analyze tags={self.csv}"
            )
        return out


def _header(tags: Sequence[str]) -> list[str]:
    return [*COLUMNS_BEFORE, "mislabeled", *tags, "notes"]


def _check_tag_names(tags: Iterable[str] | str) -> list[str]:
    if isinstance(tags, str):
        tags = tags.split(",")
    names = [str(t).strip() for t in tags]
    seen: set[str] = set()
    for t in names:
        if not _TAG_NAME.match(t):
            raise CnnkitError(
                f"tag name {t!r} must be letters, digits, _ or - (no spaces); "
                "e.g. tags=dog,great_cat,blurry."
            )
        if t.lower() in FIXED:
            raise CnnkitError(
                f"tag name {t!r} is a column errors.csv already has; pick another name."
            )
        if t.lower() in seen:
            raise CnnkitError(f"tag {t!r} is named twice; name each tag once.")
        seen.add(t.lower())
    if not names:
        raise CnnkitError("name at least one tag, e.g. tags=dog,great_cat,blurry.")
    return names


def _has_tags(path: Path) -> bool:
    """Whether an existing ``errors.csv`` holds any hand-made mark or note (to keep it)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return True  # not ours to overwrite silently
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return False
    head = [h.strip().lower() for h in rows[0]]
    keep = [i for i, h in enumerate(head) if h not in COLUMNS_BEFORE]
    return any(i < len(r) and r[i].strip() for r in rows[1:] for i in keep)


def _log_probs(model: torch.nn.Module, ds: Any, batch: int) -> torch.Tensor:
    """float64 ``(N, K)`` log-probabilities of an ImageSet (a single output: a sigmoid)."""
    import torch.nn.functional as F

    out = []
    with torch.inference_mode():
        for i in range(0, len(ds), batch):
            z = model(ds.preprocess.normalize(ds.images[i : i + batch])).double()
            if z.ndim == 1 or z.shape[1] == 1:
                z = z.reshape(-1)  # (B, 1) -> (B,)
                out.append(torch.stack([F.logsigmoid(-z), F.logsigmoid(z)], 1))  # (B,) -> (B, 2)
            else:
                out.append(z.log_softmax(1))
    return torch.cat(out)


def _run_split(run: Path, split: str) -> tuple[torch.nn.Module, Any, list[str]]:
    """The run's model and split (rebuilt from its config.yaml with the same seed)."""
    from cnnkit.data import Preprocess
    from cnnkit.train.classify import load_run_model, run_config, run_data

    run_config(run)  # a run folder with a readable config.yaml, before the weights
    model, meta = load_run_model(run)
    dims = int(meta["preprocess"].get("dims", 2))
    if dims != 2:
        raise CnnkitError(
            f"cnnkit analyze writes image files and a contact sheet of the mistakes, and this "
            f"run trains on {'1D signals' if dims == 1 else '3D volumes'}; list its mistakes "
            "with cnnkit predict run=RUN source=FOLDER instead."
        )
    pre = Preprocess.from_dict(meta["preprocess"])
    data = run_data(run, meta)
    ds = getattr(data, split)
    if ds is None or not len(ds):
        have = ", ".join(k for k in data.splits() if k != "train")
        raise CnnkitError(f"the run's data has no {split} split; pass split= one of {have}.")
    if data.info.classes != list(meta["classes"]):
        raise CnnkitError(
            f"the run's data now has classes {data.info.classes[:5]}, its model "
            f"{list(meta['classes'])[:5]}; analyse the run on the data it was trained on."
        )
    ds.preprocess = pre  # the weights' normalization
    return model, ds, list(meta["classes"])


def export_errors(
    run: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    split: str = "dev",
    tags: Iterable[str] | str = DEFAULT_TAGS,
    sheet: int = SHEET_MAX,
    top: int = 10,
    overwrite: bool = False,
    batch: int = 256,
) -> ErrorExport:
    """Write a run's misclassified examples for error analysis (``cnnkit analyze run=...``).

    The run's ``config.yaml`` rebuilds the same split (same seed); its best weights
    score every example. Written into ``out``: ``errors.csv``, ``errors.json``,
    ``images/<id>.png`` and ``contact_sheet.png`` (see the module docstring). ``id`` is
    the example's position in the split.

    Args:
        run: Run folder (``runs/classify/NAME``).
        out: Output folder (default ``RUN/analysis/SPLIT``).
        split: ``dev`` (the course's choice), ``train_dev``, ``test`` or ``train``.
        tags: Tag column names (a list or ``"dog,great_cat,blurry"``).
        sheet: At most this many errors on the contact sheet (the first rows of the CSV).
        top: Top-loss examples and confused pairs to list.
        overwrite: Replace an ``errors.csv`` that already holds tags or notes.
        batch: Images per forward pass.

    Returns:
        An :class:`ErrorExport`.

    Raises:
        CnnkitError: On a bad setting, a missing run, or a tagged ``errors.csv`` in ``out``.
    """
    if split not in SPLITS:
        raise unknown_name("split", str(split), SPLITS)
    names = _check_tag_names(tags)
    for key, v, eg in (("sheet", sheet, 100), ("top", top, 10), ("batch", batch, 256)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if key == "sheet" else 1):
            low = 0 if key == "sheet" else 1
            raise CnnkitError(f"{key} must be a whole number >= {low}, got {v!r}; e.g. {key}={eg}.")
    run = Path(run)
    folder = Path(out) if out is not None else run / "analysis" / split
    csv_path = folder / "errors.csv"
    if folder.exists() and not folder.is_dir():
        raise CnnkitError(f"out={str(folder)!r} is a file; pass a folder, e.g. out=analysis/dev.")
    if csv_path.is_file() and not overwrite and _has_tags(csv_path):
        raise CnnkitError(
            f"{csv_path} already holds tags or notes; pass another out= or overwrite=true."
        )
    model, ds, classes = _run_split(run, split)
    logp = _log_probs(model, ds, batch)
    P = logp.exp().numpy()
    y = ds.labels.numpy().astype(np.int64)
    pred = P.argmax(1)
    loss = _losses(P, y)
    wrong = np.flatnonzero(pred != y)
    source_ids = list(ds.ids) if ds.ids is not None else [f"{split}/{i}" for i in range(len(y))]
    suspects = suspected_mislabels(P, y)
    sus = {s.index: s for s in suspects}
    notes = []
    if split == "train":
        notes.append(
            "train probabilities are in-sample: the network is confident in its own training "
            "labels, so the suspected-mislabel estimate misses most of them (use split=dev)"
        )
    if split == "test":
        notes.append(
            "tuning on what the test errors show makes the test estimate optimistic; the "
            "course analyses dev errors"
        )

    from cnnkit.train.checkpoint import atomic_write

    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for old in images.glob("*.png"):  # a previous export's images
        if old.stem.isdigit():
            old.unlink()
    for i in wrong:
        _to_pil(ds.images[int(i)]).save(images / f"{int(i)}.png")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_header(names))
    for i in wrong:
        i = int(i)
        w.writerow(
            [
                i,
                f"images/{i}.png",
                source_ids[i],
                classes[y[i]],
                classes[pred[i]],
                f"{P[i, pred[i]]:.4f}",
                f"{loss[i]:.4f}",
                classes[sus[i].suggested] if i in sus else "",
                "",
                *([""] * len(names)),
                "",
            ]
        )
    atomic_write(csv_path, lambda f: f.write(buf.getvalue().encode()))
    shown = min(sheet, len(wrong))
    sheet_path = folder / "contact_sheet.png"
    if sheet_path.exists():
        sheet_path.unlink()
    if shown:
        _contact_sheet(
            [ds.images[int(i)] for i in wrong[:shown]],
            [f"#{int(i)} {classes[y[i]]} -> {classes[pred[i]]}" for i in wrong[:shown]],
            [f"p {P[i, pred[i]]:.2f}" for i in wrong[:shown]],
            f"{split} errors of {run.name}: {shown} of {len(wrong)} shown"
            + ("" if shown == len(wrong) else f" (the first {shown} rows of errors.csv)")
            + "; caption: #id label -> pred, p = probability of pred",
        ).save(sheet_path)
    thresholds = class_thresholds(P, y)
    side = {
        "format": SIDECAR_FORMAT,
        "run": str(run),
        "split": split,
        "examples": len(y),
        "errors": len(wrong),
        "error_rate": len(wrong) / len(y),
        "classes": classes,
        "tags": names,
        "contact_sheet": {"file": "contact_sheet.png" if shown else None, "shown": shown},
        "confident_learning": {
            "reference": "Northcutt, Jiang, Chuang. Confident Learning: Estimating "
            "Uncertainty in Dataset Labels. JAIR 70 (2021)",
            "thresholds": {
                c: (None if math.isinf(t) else round(float(t), 6))
                for c, t in zip(classes, thresholds)
            },
            "suspects": [
                {
                    "id": s.index,
                    "source": source_ids[s.index],
                    "label": classes[s.label],
                    "suggested": classes[s.suggested],
                    "prob_label": round(s.prob_label, 6),
                    "prob_suggested": round(s.prob_suggested, 6),
                    "misclassified": bool(pred[s.index] != y[s.index]),
                }
                for s in suspects
            ],
        },
    }
    side_path = folder / "errors.json"
    atomic_write(side_path, lambda f: f.write((json.dumps(side, indent=1) + "\n").encode()))
    return ErrorExport(
        folder=folder,
        csv=csv_path,
        sidecar=side_path,
        contact_sheet=sheet_path if shown else None,
        split=split,
        examples=len(y),
        errors=len(wrong),
        tags=names,
        shown=shown,
        classes=classes,
        ids=[int(i) for i in wrong],
        top=top_losses(P, y, top),
        pairs=confused_pairs(y, pred, top),
        suspects=suspects,
        source_ids=source_ids,
        notes=notes,
    )


def _to_pil(image: torch.Tensor) -> Any:
    """uint8 ``(n_C, n_H, n_W)`` -> a PIL image (grey or RGB)."""
    from PIL import Image

    a = image.permute(1, 2, 0).contiguous().numpy()  # (C, H, W) -> (H, W, C)
    return Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)  # uint8: L or RGB


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except Exception:  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def _contact_sheet(
    images: Sequence[torch.Tensor], captions: Sequence[str], subs: Sequence[str], title: str
) -> Any:
    """A grid of images (each scaled to about 96 px), two caption lines under each."""
    from PIL import Image, ImageDraw

    font, title_font = _font(13), _font(14)
    h, w = images[0].shape[1:]
    side = 96
    scale = side / max(h, w)
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max(probe.textlength(t, font=font) for t in [*captions, *subs])
    cell_w = int(max(tw, text_w)) + 12
    line_h = int(font.size if hasattr(font, "size") else 11) + 4
    cell_h = th + 2 * line_h + 10
    cols = min(10, len(images))
    rows = -(-len(images) // cols)
    title_h = line_h + 12
    width = max(cols * cell_w, int(probe.textlength(title, font=title_font)) + 16)
    sheet = Image.new("RGB", (width, title_h + rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((8, 6), title, fill="black", font=title_font)
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BILINEAR
    for k, (img, cap, sub) in enumerate(zip(images, captions, subs)):
        r, c = divmod(k, cols)
        x0, y0 = c * cell_w, title_h + r * cell_h
        tile = _to_pil(img).convert("RGB").resize((tw, th), resample)
        sheet.paste(tile, (x0 + (cell_w - tw) // 2, y0 + 4))
        draw.rectangle(
            [x0 + (cell_w - tw) // 2 - 1, y0 + 3, x0 + (cell_w + tw) // 2, y0 + th + 4],
            outline=(160, 160, 160),
        )
        draw.text((x0 + 6, y0 + th + 7), cap, fill=(170, 0, 0), font=font)
        draw.text((x0 + 6, y0 + th + 7 + line_h), sub, fill=(60, 60, 60), font=font)
    return sheet


# ---------------------------------------------------------------------------------------------
# reading the tagged CSV back, and the course's table


@dataclass
class TaggedErrors:
    """A tagged ``errors.csv``, validated.

    Attributes:
        path: The CSV.
        split: The split it came from (``"dev"`` when unknown).
        examples: Images in the split.
        errors: Errors in the split (the CSV may hold a sample of them).
        tags: Tag column names, in file order (without ``mislabeled``).
        ids: ``id`` of each row.
        marks: Tag -> one bool per row.
        mislabeled: One bool per row.
        notes: Each row's notes.
    """

    path: Path
    split: str
    examples: int
    errors: int
    tags: list[str]
    ids: list[int]
    marks: dict[str, list[bool]]
    mislabeled: list[bool]
    notes: list[str]

    @property
    def error_rate(self) -> float:
        """The split's error: errors over examples."""
        return self.errors / self.examples

    @property
    def examined(self) -> int:
        """Rows of the CSV: the errors looked at."""
        return len(self.ids)


def _mark(value: str, row: int, rid: str, column: str, path: Path) -> bool:
    v = value.strip().lower()
    if v in YES:
        return True
    if v in NO:
        return False
    raise CnnkitError(
        f"{path.name} row {row} (id {rid}), column {column!r}: {value.strip()!r} is not a "
        "mark; put 1, x or yes in a tagged cell and leave the others empty (words go in notes)."
    )


def read_tags(
    path: str | os.PathLike, *, examples: int | None = None, errors: int | None = None
) -> TaggedErrors:
    """Read a tagged ``errors.csv`` back, and check it.

    Every column other than ``id,file,source,label,pred,prob,loss,suspect,mislabeled,notes``
    is a tag (add columns for new tags). A tag or ``mislabeled`` cell holds ``1``, ``x``,
    ``yes`` (tagged) or nothing, ``0``, ``no`` (not tagged). Rows may be deleted to tag a
    sample of the errors (the course examines about 100). The split's size and error
    count come from ``errors.json`` beside the CSV (``<name>.json`` or ``errors.json``),
    or from ``examples`` (and ``errors``, default: the number of rows).

    Args:
        path: The tagged CSV.
        examples: Images in the split, when the sidecar JSON is missing.
        errors: Errors in the split, when the sidecar JSON is missing.

    Returns:
        A :class:`TaggedErrors`.

    Raises:
        CnnkitError: On a missing file, column or sidecar, a duplicate id, or a cell that
            is not a mark.
    """
    p = Path(path)
    if not p.is_file():
        raise CnnkitError(
            f"{str(p)!r} does not exist; pass tags=FOLDER/errors.csv written by "
            "`cnnkit analyze run=...`."
        )
    try:
        text = p.read_text(encoding="utf-8-sig")  # a spreadsheet may add a byte-order mark
    except UnicodeDecodeError:
        raise CnnkitError(f"{p} is not UTF-8 text; save it as CSV (UTF-8).") from None
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first.count)  # a spreadsheet's locale may save ; or tabs
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    numbered = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]
    table = [r for _, r in numbered]
    if not table:
        raise CnnkitError(f"{p} is empty; export it with `cnnkit analyze run=RUN`.")
    head = [h.strip().lower() for h in table[0]]
    while head and not head[-1]:  # a spreadsheet's trailing unnamed column, if it is empty
        last = len(head) - 1
        if any(len(r) > last and r[last].strip() for r in table[1:]):
            break
        head.pop()
    for i, h in enumerate(head):
        if not h:
            raise CnnkitError(f"{p.name} column {i + 1} has no name; name it (a tag) or delete it.")
        if head.count(h) > 1:
            raise CnnkitError(f"{p.name} has two {h!r} columns; keep one.")
    for col in REQUIRED:
        if col not in head:
            hits = did_you_mean(col, [h for h in head if h not in FIXED])
            hint = f" ({hits[0]!r} looks like it: rename it)" if hits else ""
            raise CnnkitError(
                f"{p.name} has no {col!r} column{hint}; the header needs "
                f"{', '.join(REQUIRED)} (as `cnnkit analyze run=...` writes it)."
            )
    tags = [h for h in head if h not in FIXED]
    ids: list[int] = []
    marks: dict[str, list[bool]] = {t: [] for t in tags}
    mis: list[bool] = []
    notes: list[str] = []
    col = {h: i for i, h in enumerate(head)}
    for n, r in numbered[1:]:  # n: the row's line in the file
        if len(r) > len(head) and any(c.strip() for c in r[len(head) :]):
            raise CnnkitError(
                f"{p.name} row {n} has {len(r)} cells but the header names {len(head)} "
                "columns; name the extra column (a new tag) in the header."
            )
        r = r + [""] * (len(head) - len(r))
        rid = r[col["id"]].strip()
        try:
            ids.append(int(rid))
        except ValueError:
            raise CnnkitError(
                f"{p.name} row {n}: id {rid!r} is not a whole number; keep the ids as exported."
            ) from None
        for t in tags:
            marks[t].append(_mark(r[col[t]], n, rid, t, p))
        mis.append(_mark(r[col["mislabeled"]], n, rid, "mislabeled", p))
        notes.append(r[col["notes"]] if "notes" in col else "")
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise CnnkitError(f"{p.name} lists id {dup[0]} twice; keep one row per error.")
    split, n_ex, n_err = "dev", examples, errors
    side = next(
        (s for s in (p.with_suffix(".json"), p.parent / "errors.json") if s.is_file()), None
    )
    if n_ex is None:
        if side is None:
            raise CnnkitError(
                f"no errors.json beside {p} (it holds the split's size and error rate); keep "
                "it beside the CSV or pass examples=N (the number of images in the split)."
            )
        try:
            meta = json.loads(side.read_text())
            n_ex, split = int(meta["examples"]), str(meta.get("split", "dev"))
            n_err = int(meta["errors"]) if n_err is None else n_err
        except (ValueError, KeyError, TypeError):
            raise CnnkitError(
                f"{side} is not the errors.json `cnnkit analyze` writes; export again, or "
                "pass examples=N."
            ) from None
    if n_err is None:
        n_err = len(ids)
    for key, v in (("examples", n_ex), ("errors", n_err)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise CnnkitError(f"{key} must be a whole number >= 0, got {v!r}; e.g. {key}=180.")
    if n_ex < 1 or n_err > n_ex:
        raise CnnkitError(
            f"errors ({n_err}) must be at most examples ({n_ex}), and examples >= 1; "
            "pass the split's real counts."
        )
    if len(ids) > n_err:
        raise CnnkitError(
            f"{p.name} has {len(ids)} rows but the split has only {n_err} errors; "
            "keep one row per error (or pass errors=N)."
        )
    return TaggedErrors(p, split, n_ex, n_err, tags, ids, marks, mis, notes)


@dataclass
class TagRow:
    """One line of the course's table.

    Attributes:
        tag: The tag (or ``mislabeled``).
        count: Examined errors with the tag.
        share: ``count`` over the examined errors.
        error: The split's error now.
        best: The lowest error reachable by fixing all of them: ``error * (1 - share)``.
    """

    tag: str
    count: int
    share: float
    error: float
    best: float


@dataclass
class TagTable:
    """The course's error-analysis table, and the case for fixing labels.

    Attributes:
        split: The split.
        examples: Images in it.
        errors: Errors in it.
        examined: Errors tagged (rows of the CSV).
        rows: One :class:`TagRow` per tag, most frequent first; ``mislabeled`` included.
        untagged: Examined errors with no tag and no mislabeled mark.
        mislabeled: Examined errors marked mislabeled.
        label_error: Errors due to incorrect labels: ``error * mislabeled / examined``.
        other_error: Errors due to other causes: ``error - label_error``.
        advice: The course's verdict on fixing labels.
        path: The CSV.
    """

    split: str
    examples: int
    errors: int
    examined: int
    rows: list[TagRow]
    untagged: int
    mislabeled: int
    label_error: float
    other_error: float
    advice: str
    path: Path | None = None

    @property
    def error(self) -> float:
        """The split's error rate."""
        return self.errors / self.examples

    def lines(self) -> list[str]:
        """What ``cnnkit analyze tags=...`` prints."""
        E = self.error
        sample = (
            f"all {self.examined:,} errors examined"
            if self.examined == self.errors
            else f"{self.examined:,} of {self.errors:,} errors examined (a sample: the shares are "
            "estimates)"
        )
        out = [
            f"{self.split} error {_pct(E, E)} ({self.errors:,} of {self.examples:,} images); "
            f"{sample}",
            f"{'tag':<16} {'errors':>6}  {'% of errors':>11}  ceiling (if all fixed)",
        ]
        for r in self.rows:
            out.append(
                f"{r.tag:<16} {r.count:>6}  {100 * r.share:>10.1f}%  "
                f"error {_pct(E, E)} -> at least {_pct(r.best, E)}"
            )
        if self.untagged:
            out.append(
                f"{'(untagged)':<16} {self.untagged:>6}  "
                f"{100 * self.untagged / self.examined:>10.1f}%"
            )
        out.append("an error may carry several tags, so the percentages need not add up to 100%.")
        out += [
            "",
            f"incorrect labels: {self.mislabeled} of {self.examined} examined errors mislabeled",
            f"  {'overall ' + self.split + ' error':<30} {_pct(E, E):>7}",
            f"  errors due to incorrect labels {_pct(self.label_error, E):>7}",
            f"  errors due to other causes     {_pct(self.other_error, E):>7}",
            f"advice: {self.advice}",
        ]
        return out


def _pct(x: float, scale: float) -> str:
    """A percentage with enough decimals for errors of this size (2 below 1%)."""
    d = 1 if scale >= 0.01 or scale == 0 else 2 if scale >= 0.001 else 3
    return f"{100 * x:.{d}f}%"


def _advice(mislabeled: int, examined: int, E: float, label_error: float, split: str) -> str:
    share = mislabeled / examined
    course = (
        f"incorrect labels cause {_pct(label_error, E)} of the {_pct(E, E)} {split} error "
        f"({100 * share:.0f}% of the errors)"
    )
    both = (
        "fix the dev and test sets together (they must stay from the same distribution), "
        "look at examples the model got right too, and leave the training set: deep "
        "learning is robust to random label errors (not to systematic ones)"
    )
    if mislabeled == 0:
        return "no error is marked mislabeled: work on the other causes."
    if share < _LABEL_ADVICE_LOW:
        return (
            f"{course}: other causes matter more, so fixing labels is not the priority now "
            "(the course's first case: 0.6% of a 10% error)."
        )
    if share < _LABEL_ADVICE_HIGH:
        return (
            f"{course}: a noticeable share; fix them if it is cheap, but the other causes "
            f"still dominate. If you do: {both}."
        )
    return (
        f"{course}: a large share of what is left, so take the time to fix the labels "
        f"(the course's second case: 0.6% of a 2% error); {both}."
    )


def tag_table(tagged: TaggedErrors | str | os.PathLike) -> TagTable:
    """The course's table from a tagged ``errors.csv``: per tag, its share of the errors and
    the ceiling it puts on the error reduction.

    Fixing every error with a tag that ``share`` of the errors carry leaves at best
    ``error * (1 - share)`` ("5% of the errors are dogs: fixing dogs brings 10% to at
    best 9.5%"). The ``mislabeled`` column splits the error into "errors due to
    incorrect labels" (``error * share``) and "errors due to other causes".

    Args:
        tagged: A :class:`TaggedErrors` or the CSV's path (read with :func:`read_tags`).

    Returns:
        A :class:`TagTable`.

    Raises:
        CnnkitError: When the CSV has no rows.
    """
    t = tagged if isinstance(tagged, TaggedErrors) else read_tags(tagged)
    m = t.examined
    if m == 0:
        raise CnnkitError(
            f"{t.path.name} has no rows: there is no error to analyse (or all rows were deleted)."
        )
    E = t.error_rate
    counts = {tag: sum(v) for tag, v in t.marks.items()}
    counts["mislabeled"] = sum(t.mislabeled)
    order = sorted(counts, key=lambda k: (-counts[k], [*t.tags, "mislabeled"].index(k)))
    rows = [TagRow(k, counts[k], counts[k] / m, E, E * (1 - counts[k] / m)) for k in order]
    untagged = sum(
        1 for i in range(m) if not t.mislabeled[i] and not any(t.marks[tag][i] for tag in t.tags)
    )
    mis = counts["mislabeled"]
    label_error = E * mis / m
    return TagTable(
        split=t.split,
        examples=t.examples,
        errors=t.errors,
        examined=m,
        rows=rows,
        untagged=untagged,
        mislabeled=mis,
        label_error=label_error,
        other_error=E - label_error,
        advice=_advice(mis, m, E, label_error, t.split),
        path=t.path,
    )
