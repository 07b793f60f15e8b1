"""Learning curves: training and dev error against epochs and against training-set size.

Two views the course uses to decide what to do next, both drawn against the
human-level error (a horizontal line, the proxy for Bayes error):

- :func:`learning_curve` reads a run's ``results.csv``: error = 1 - accuracy per epoch,
  for the training and the dev set. Training error far above human level is avoidable
  bias (a bigger network, train longer); dev error far above training error is variance
  (more data, regularization).
- :func:`size_curve` trains the same settings on growing, stratified fractions of the
  training split (10%, 25%, 50%, 100%) and measures each model's training and dev
  error. A dev error still falling at 100% says more data would help; training and dev
  error meeting above human level say it would not (bias).

Both return the numbers as a :class:`LearningCurve` and write a PNG (matplotlib, Agg,
without touching pyplot's global state).
"""

from __future__ import annotations

import copy
import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from cnnkit.data import Data, load, stratified_split
from cnnkit.errors import CnnkitError
from cnnkit.train.checkpoint import atomic_write
from cnnkit.train.config import TrainConfig
from cnnkit.train.loop import evaluate_model, fit
from cnnkit.train.tasks import Classification

__all__ = ["LearningCurve", "learning_curve", "size_curve"]

DEFAULT_FRACTIONS = (0.1, 0.25, 0.5, 1.0)


@dataclass
class LearningCurve:
    """Training and dev error (1 - accuracy) against epochs or training-set size.

    Attributes:
        kind: ``"epochs"`` (:func:`learning_curve`) or ``"size"`` (:func:`size_curve`).
        x: Epoch numbers, or the number of training examples ``m`` of each model.
        train_error: Training error at each ``x`` (a fraction, 0-1).
        dev_error: Dev error at each ``x`` (NaN where the run had no dev set).
        human: Human-level error (a fraction), or None.
        title: What the curve is of (the run folder, or model and data).
        png: The plot written, if any.
        csv: The numbers written beside the plot (size curves), if any.
        fractions: The fractions of the training split (size curves).
        models: The trained model of each fraction, holding its best weights (size curves).
        indices: The indices into the training split that each model trained on.
        data: The data the size curve was measured on (splits and preprocessing).
    """

    kind: str
    x: list[int]
    train_error: list[float]
    dev_error: list[float]
    human: float | None = None
    title: str = ""
    png: Path | None = None
    csv: Path | None = None
    fractions: list[float] | None = None
    models: list[nn.Module] = field(default_factory=list, repr=False)
    indices: list[np.ndarray] = field(default_factory=list, repr=False)
    data: Data | None = field(default=None, repr=False)

    @property
    def x_label(self) -> str:
        """The x-axis name."""
        return "epoch" if self.kind == "epochs" else "training examples m"

    def table(self) -> str:
        """The numbers as a table, with avoidable bias and variance at each point.

        Returns:
            One line per point: x, (fraction), training error, dev error,
            avoidable bias (training - human) when ``human`` is known, and
            variance (dev - training).
        """
        head = [self.x_label]
        if self.fractions is not None:
            head.append("fraction")
        head += ["train error", "dev error"]
        if self.human is not None:
            head.append("avoidable bias")
        head.append("variance")
        rows = [head]
        for i, x in enumerate(self.x):
            tr, dv = self.train_error[i], self.dev_error[i]
            row = [f"{x:,}"]
            if self.fractions is not None:
                row.append(f"{100 * self.fractions[i]:g}%")
            row += [_pct(tr), _pct(dv)]
            if self.human is not None:
                row.append(_pct(tr - self.human))
            row.append(_pct(dv - tr))
            rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
        top = f"learning curve ({self.title})" if self.title else "learning curve"
        if self.human is not None:
            top += f"; human-level error {_pct(self.human)}"
        return "\n".join([top, *lines])

    def __str__(self) -> str:
        return self.table()

    def plot(self, out: str | os.PathLike) -> Path:
        """Draw training and dev error (and the human-level line) into a PNG file.

        Args:
            out: The ``.png`` file to write (folders are created).

        Returns:
            The path written.
        """
        path = _png_path(out)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator, PercentFormatter

        fig = Figure(figsize=(6.4, 4.2), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        during = " (counted during each epoch)" if self.kind == "epochs" else ""
        ax.plot(self.x, self.train_error, "o-", color="tab:blue", label="training error" + during)
        if any(math.isfinite(v) for v in self.dev_error):
            ax.plot(self.x, self.dev_error, "s-", color="tab:orange", label="dev error")
        if self.human is not None:
            ax.axhline(
                self.human,
                linestyle="--",
                color="gray",
                label=f"human-level error ({_pct(self.human)})",
            )
        ax.set_xlabel(self.x_label)
        ax.set_ylabel("error (1 - accuracy)")
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        what = "epochs" if self.kind == "epochs" else "training-set size"
        ax.set_title(f"error vs {what}" + (f": {self.title}" if self.title else ""), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        atomic_write(path, lambda f: f.write(buf.getvalue()))
        self.png = path
        return path

    def to_csv(self, out: str | os.PathLike) -> Path:
        """Write the numbers as CSV (``x,fraction,train_error,dev_error,human``).

        Args:
            out: The ``.csv`` file to write.

        Returns:
            The path written.
        """
        path = Path(out)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["x", "fraction", "train_error", "dev_error", "human"])
        for i, x in enumerate(self.x):
            frac = "" if self.fractions is None else repr(self.fractions[i])
            human = "" if self.human is None else repr(self.human)
            w.writerow([x, frac, repr(self.train_error[i]), repr(self.dev_error[i]), human])
        atomic_write(path, lambda f: f.write(buf.getvalue().encode()))
        self.csv = path
        return path


def _pct(q: float) -> str:
    return "n/a" if not math.isfinite(q) else f"{100 * q:.2f}%"


def _png_path(out: str | os.PathLike) -> Path:
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise CnnkitError(f"out={str(out)!r} must name a .png file; e.g. out=curve.png.")
    return path


def _check_human(human: Any) -> float | None:
    if human is None:
        return None
    if (
        isinstance(human, bool)
        or not isinstance(human, (int, float))
        or not math.isfinite(human)
        or not 0 <= human < 1
    ):
        raise CnnkitError(
            f"human must be an error rate from 0 to 1, got {human!r}; e.g. human=0.01 for 1%."
        )
    return float(human)


def _error(value: str | None) -> float:
    """``1 - accuracy`` of one ``results.csv`` cell (NaN when empty)."""
    if value is None or value.strip() == "":
        return math.nan
    return 1 - float(value)


def learning_curve(
    run_dir: str | os.PathLike,
    human: float | None = None,
    out: str | os.PathLike | None = None,
) -> LearningCurve:
    """Training and dev error against epochs, read from a run's ``results.csv``.

    Errors are ``1 - train_accuracy`` and ``1 - dev_accuracy`` of each epoch's row.
    The training accuracy there is counted while the epoch trains (dropout and
    augmentation on, weights changing); the dev accuracy is measured after the epoch.

    Args:
        run_dir: A run folder (``runs/classify/train``) or its ``results.csv``.
        human: Human-level error as a fraction (0.01 for 1%), drawn as a horizontal line.
        out: The PNG to write (default ``learning_curve.png`` in the run folder).

    Returns:
        A :class:`LearningCurve` with ``kind="epochs"``; ``png`` is the plot.

    Raises:
        CnnkitError: When there is no ``results.csv``, it has no rows, or no accuracy.
    """
    human = _check_human(human)
    given = Path(run_dir)
    path = given if given.suffix.lower() == ".csv" else given / "results.csv"
    if not path.is_file():
        raise CnnkitError(
            f"{str(given)!r} has no results.csv; pass a run folder such as runs/classify/train."
        )
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise CnnkitError(f"{str(path)!r} has no epochs yet; train at least one epoch.")
    if "train_accuracy" not in rows[0] or "epoch" not in rows[0]:
        raise CnnkitError(
            f"{str(path)!r} has no epoch and train_accuracy columns; pass the run folder of a "
            "classification run."
        )
    curve = LearningCurve(
        kind="epochs",
        x=[int(r["epoch"]) for r in rows],
        train_error=[_error(r["train_accuracy"]) for r in rows],
        dev_error=[_error(r.get("dev_accuracy")) for r in rows],
        human=human,
        title=str(path.parent),
    )
    curve.plot(out if out is not None else path.parent / "learning_curve.png")
    return curve


def _check_fractions(fractions: Any) -> list[float]:
    bad = CnnkitError(
        f"fractions must be numbers in (0, 1], got {fractions!r}; e.g. "
        "fractions=(0.1, 0.25, 0.5, 1.0)."
    )
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, Sequence) or not fractions:
        raise bad
    out = []
    for f in fractions:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            raise bad
        out.append(float(f))
    if len(set(out)) != len(out):
        raise CnnkitError(f"fractions {fractions!r} repeat a value; give each fraction once.")
    return sorted(out)


def _subset_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified ``fraction`` of the training split (all of it for 1)."""
    n = len(labels)
    m = round(fraction * n)
    if m >= n:
        return np.arange(n)
    if m == 0:
        raise CnnkitError(
            f"fraction {fraction:g} of the {n} training images is no image; use a larger fraction."
        )
    return stratified_split(labels, {"part": m}, seed=seed)["part"]


def size_curve(
    model: str | os.PathLike | nn.Module = "lenet5",
    data: str | os.PathLike | Data = "digits",
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    human: float | None = None,
    out: str | os.PathLike | None = None,
    **train_settings: Any,
) -> LearningCurve:
    """Training and dev error against training-set size: the same run on growing fractions.

    Each fraction of the training split (stratified by class, drawn with the settings'
    ``seed``) trains a fresh copy of the same initial model with the same settings
    (:func:`cnnkit.train.fit`, no run folder); its training error is then measured on
    the images it trained on and its dev error on the whole dev split, both in eval mode
    with the best weights (``monitor``, ``dev_loss`` by default).

    Args:
        model: A zoo name (``cnnkit models``), a layer-list YAML, or an ``nn.Module``
            (copied for every fraction, so all start from the same weights).
        data: A dataset name or folder (split as ``cnnkit train`` splits it), or a loaded
            :class:`~cnnkit.data.Data` with a dev split.
        fractions: Fractions of the training split, each in (0, 1].
        human: Human-level error as a fraction (0.01 for 1%), drawn as a horizontal line.
        out: The PNG to write (default ``<project>/size_curve.png``); the numbers go to a
            CSV beside it.
        **train_settings: Any :class:`~cnnkit.train.TrainConfig` key, e.g. ``epochs=5``.

    Returns:
        A :class:`LearningCurve` with ``kind="size"``, ``x`` the training-set sizes, and
        the trained ``models`` and their training ``indices``.

    Raises:
        CnnkitError: On a bad fraction or setting, or data without a dev split.
    """
    from cnnkit.train.classify import prepare

    human = _check_human(human)
    fracs = _check_fractions(fractions)
    settings = dict(train_settings)
    for key, value in (("model", model), ("data", data)):
        if key in settings:
            raise CnnkitError(f"pass {key}= once, as size_curve's own argument.")
        if isinstance(value, (str, os.PathLike)):
            settings[key] = str(value)
    if not isinstance(model, (str, os.PathLike, nn.Module)):
        raise CnnkitError(
            f"model must be a zoo name or an nn.Module, got {type(model).__name__}; "
            "e.g. model='lenet5'."
        )
    if not isinstance(data, (str, os.PathLike, Data)):
        raise CnnkitError(
            f"data must be a dataset name, a folder or a cnnkit.data.Data, got "
            f"{type(data).__name__}; e.g. data='digits'."
        )
    if out is not None:
        _png_path(out)
    cfg = TrainConfig.from_dict(settings, source="size_curve()")
    if isinstance(model, nn.Module):
        net = model
        if isinstance(data, Data):
            d = data
        else:
            size = tuple(cfg.size) if isinstance(cfg.size, (list, tuple)) else cfg.size
            d = load(
                cfg.data,
                size=size,
                dev=cfg.dev,
                test=cfg.test,
                train_dev=cfg.train_dev,
                seed=cfg.seed,
                data_dir=cfg.data_dir,
                download=cfg.download,
                on_error=cfg.on_error,
                max_bad_fraction=cfg.max_bad_fraction,
            )
    elif isinstance(data, Data):
        import torch

        from cnnkit.models import create

        d = data
        K = d.info.num_classes
        outputs = 1 if K == 2 and cfg.loss in ("auto", "bce") else K
        torch.manual_seed(cfg.seed)
        net = create(
            cfg.model,
            num_classes=outputs,
            in_channels=d.info.preprocess.channels,
            **cfg.model_args,
        )
    else:
        d, net, _ = prepare(cfg)
    if d.dev is None or len(d.dev) == 0:
        raise CnnkitError("the data has no dev split to measure the dev error on; set dev=0.1.")
    initial = copy.deepcopy(net)
    labels = d.train.labels.numpy()
    task = Classification(cfg.loss, cfg.label_smoothing)
    name = model if not isinstance(model, nn.Module) else type(model).__name__
    curve = LearningCurve(
        kind="size",
        x=[],
        train_error=[],
        dev_error=[],
        human=human,
        title=f"{name} on {d.info.name}",
        fractions=fracs,
        data=d,
    )
    for f in fracs:
        idx = _subset_indices(labels, f, cfg.seed)
        part = d.train.subset(idx, "train")
        if cfg.verbose:
            print(f"size curve: {100 * f:g}% of the training split ({len(idx):,} images)")
        result = fit(copy.deepcopy(initial), part, d.dev, config=cfg)
        train_score = evaluate_model(result.model, part, task=task)
        dev_score = evaluate_model(result.model, d.dev, task=task)
        curve.x.append(len(idx))
        curve.train_error.append(1 - train_score["accuracy"])
        curve.dev_error.append(1 - dev_score["accuracy"])
        curve.models.append(result.model)
        curve.indices.append(idx)
    png = Path(out) if out is not None else Path(cfg.project) / "size_curve.png"
    curve.plot(png)
    curve.to_csv(png.with_suffix(".csv"))
    return curve
