"""One optimizing metric under satisficing limits: the course's way to choose a model.

"If you have n metrics, pick one to optimize, and all the others are satisficing":
maximize accuracy subject to running time <= 100 ms. :func:`select` measures each run
(nothing is guessed): the optimizing metric by scoring the run's best weights on the
named split, the parameters by counting them, the latency by timing batch-1 forward
passes on one CPU thread (median after warm-up, :func:`measure_latency`). It then picks the
best run among those that meet every limit.

Metric names: ``SPLIT_MEASURE`` with SPLIT in ``train``, ``train_dev``, ``dev``,
``test`` and MEASURE in ``accuracy`` (``acc``), ``error`` (``err``), ``loss``, ``f1``
(binary F1 of the positive class, or the macro average over classes); and the costs
``latency_ms``, ``params`` and ``macs``. Names ending in acc/accuracy/f1 are maximized,
everything else (loss, error, costs) minimized. A satisficing value is an upper bound
for a minimized metric (``latency_ms=100``: at most 100 ms) and a lower bound for a
maximized one (``dev_acc=0.95``: at least 95%).

A table of numbers you already have works too, e.g. the course's cat classifiers::

    select({"A": {"accuracy": 0.90, "running_time_ms": 80},
            "B": {"accuracy": 0.92, "running_time_ms": 95},
            "C": {"accuracy": 0.95, "running_time_ms": 1500}},
           optimize="accuracy", satisfice={"running_time_ms": 100})   # -> B
"""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnkit.errors import CnnkitError, did_you_mean

__all__ = [
    "COSTS",
    "SPLITS",
    "Candidate",
    "NoRunSatisfiesError",
    "Selection",
    "canonical_metric",
    "maximize",
    "measurable_metrics",
    "measure_latency",
    "select",
]

SPLITS = ("train", "train_dev", "dev", "test")
_MEASURES = {
    "accuracy": "accuracy",
    "acc": "accuracy",
    "error": "error",
    "err": "error",
    "loss": "loss",
    "f1": "f1",
}
#: Costs measured on the model itself (always minimized).
COSTS = ("latency_ms", "params", "macs")
_MAX_SUFFIXES = ("acc", "accuracy", "f1", "precision", "recall", "auc", "map", "iou")
_MIN_SUFFIXES = ("loss", "error", "err", "ms", "time", "latency", "params", "macs", "flops")
_MIN_SUFFIXES += ("size", "mb", "bytes", "memory", "cost")


def canonical_metric(name: str) -> str:
    """``dev_acc`` -> ``dev_accuracy``, ``test_err`` -> ``test_error``; other names unchanged.

    Args:
        name: A metric name.

    Returns:
        The name cnnkit measures it under.
    """
    n = str(name).strip().lower().replace("-", "_")
    for split in sorted(SPLITS, key=len, reverse=True):
        if n.startswith(split + "_") and n[len(split) + 1 :] in _MEASURES:
            return f"{split}_{_MEASURES[n[len(split) + 1 :]]}"
    return n


def measurable_metrics() -> list[str]:
    """Every metric :func:`select` can measure on a run (canonical names and short aliases)."""
    names = [f"{s}_{m}" for s in SPLITS for m in _MEASURES]
    return [*names, *COSTS]


def maximize(name: str) -> bool:
    """Whether a metric is maximized (acc, accuracy, f1, ...) or minimized (loss, error, costs).

    Args:
        name: A metric name.

    Returns:
        True to maximize, False to minimize.

    Raises:
        CnnkitError: When the name says neither.
    """
    n = canonical_metric(name)
    last = re.split(r"[_\s]+", n)[-1]
    if last in _MAX_SUFFIXES or n.endswith(_MAX_SUFFIXES):
        return True
    if last in _MIN_SUFFIXES or n.endswith(_MIN_SUFFIXES):
        return False
    raise CnnkitError(
        f"can't tell whether to maximize or minimize {name!r}; name it ..._acc, ..._f1 "
        "(maximized) or ..._loss, ..._error, ..._ms (minimized)."
    )


@dataclass
class Candidate:
    """One run (or table row) and how it measures up.

    Attributes:
        name: The run folder, or the row's name.
        values: Metric -> value (fractions for accuracy/error/f1, ms for latency).
        violations: The satisficing metrics whose limits it breaks.
        n: Images behind the split metrics, by split.
    """

    name: str
    values: dict[str, float]
    violations: list[str] = field(default_factory=list)
    n: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether it meets every satisficing limit."""
        return not self.violations


@dataclass
class Selection:
    """What :func:`select` returns.

    Attributes:
        optimize: The optimizing metric.
        maximize: Its direction.
        satisfice: The satisficing limits, metric -> bound.
        candidates: Every run, in the order given.
        best: The run picked (None only inside :class:`NoRunSatisfiesError`).
        notes: How things were measured and anything to beware of.
    """

    optimize: str
    maximize: bool
    satisfice: dict[str, float]
    candidates: list[Candidate]
    best: Candidate | None
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        """The runs, their metrics, the limits each breaks, and the pick."""
        return _render(self)

    def __str__(self) -> str:
        return self.table()


class NoRunSatisfiesError(CnnkitError):
    """No run meets every satisficing limit; ``selection`` holds the measured table."""

    def __init__(self, message: str, selection: Selection) -> None:
        super().__init__(message)
        self.selection = selection


def measure_latency(
    model: nn.Module,
    input_size: str | Sequence[int],
    *,
    repeats: int = 30,
    warmup: int = 3,
    budget_s: float = 3.0,
    threads: int | None = 1,
) -> float:
    """Median time of one batch-1 forward pass on the CPU, in milliseconds.

    The model runs in eval mode under ``torch.inference_mode``; ``warmup`` untimed
    passes come first. One thread by default: batch-1 latency of a small model is
    dominated by thread synchronization otherwise, and on a busy machine several
    threads wait for each other (a 0.5 ms LeNet-5 took 136 ms with 2 threads on 2
    cores shared with other jobs).

    Args:
        model: Any ``nn.Module`` (moved to the CPU for timing: it stays on its device).
        input_size: One example in course order, ``"32x32x1"`` or ``(32, 32, 1)``.
        repeats: Timed passes (at most).
        warmup: Untimed passes first.
        budget_s: Stop timing after this many seconds (at least 3 passes are kept).
        threads: Intra-op threads while timing (None: ``torch.get_num_threads()`` as set).

    Returns:
        The median latency in milliseconds.

    Raises:
        CnnkitError: On a bad size or count, or an input the model cannot take.
    """
    from cnnkit.shapes import parse_size

    size = parse_size(input_size, what="input_size")
    for key, v, low in (("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise CnnkitError(f"{key} must be an integer >= {low}, got {v!r}; e.g. {key}=30.")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise CnnkitError(f"threads must be an integer >= 1, got {threads!r}; e.g. threads=1.")
    x = torch.zeros(1, size[-1], *size[:-1])
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    cpu = model if device.type == "cpu" else _cpu_copy(model)
    was = cpu.training
    cpu.eval()
    times: list[float] = []
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            try:
                cpu(x)
            except CnnkitError:  # a cnnkit model says what it takes
                raise
            except Exception as e:  # the size, not the timing, is the mistake
                raise CnnkitError(
                    f"the model does not take input {'x'.join(map(str, size))} "
                    f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                    "pass its input size, e.g. 32x32x1."
                ) from None
            for _ in range(max(0, warmup - 1)):
                cpu(x)
            start = time.perf_counter()
            while len(times) < repeats:
                t = time.perf_counter()
                cpu(x)
                times.append(time.perf_counter() - t)
                if len(times) >= 3 and time.perf_counter() - start > budget_s:
                    break
    finally:
        cpu.train(was)
        torch.set_num_threads(before)
    return 1000.0 * statistics.median(times)


def _cpu_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).cpu()


# ---------------------------------------------------------------- measuring runs


def _bound(metric: str, v: Any) -> float:
    """A satisficing limit as a number (``"95%"`` -> 0.95 for rates)."""
    if isinstance(v, str):
        text = v.strip()
        try:
            v = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise CnnkitError(
                f"the limit {metric}={v!r} is not a number; e.g. latency_ms=100 or dev_acc=95%."
            ) from None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        raise CnnkitError(
            f"the limit {metric}={v!r} is not a number; e.g. latency_ms=100 or dev_acc=0.95."
        )
    if v < 0:
        raise CnnkitError(f"the limit {metric}={v!r} is negative; limits are from 0 up.")
    m = canonical_metric(metric)
    if m.endswith(("_accuracy", "_error", "_f1")) and v > 1:
        raise CnnkitError(
            f"the limit {metric}={v:g} is over 1; write rates as fractions or with %, "
            f"e.g. {metric}={v / 100:g} or {metric}={v:g}%."
        )
    return float(v)


def _split_of(metric: str) -> str | None:
    for split in sorted(SPLITS, key=len, reverse=True):
        if metric.startswith(split + "_"):
            return split
    return None


def _f1(model: nn.Module, ds: Any, batch: int) -> float:
    """F1 on an ImageSet: of class 1 for a binary model, else the macro average."""
    from torchmetrics.functional.classification import binary_f1_score, multiclass_f1_score

    preds, labels = [], []
    k = 0  # outputs of the model
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(ds), batch):
            out = model(ds.preprocess.normalize(ds.images[i : i + batch]))
            k = out.shape[1]  # one sigmoid output: class 1 when the logit > 0
            preds.append((out[:, 0] > 0).long() if k == 1 else out.argmax(1))
            labels.append(ds.labels[i : i + batch])
    p, y = torch.cat(preds), torch.cat(labels)
    if k == 1:
        return float(binary_f1_score(p, y))
    return float(multiclass_f1_score(p, y, num_classes=k, average="macro"))


def _measure_run(
    run: Path,
    wanted: list[str],
    *,
    repeats: int,
    threads: int | None,
    batch: int,
    cache: dict[str, Any],
) -> Candidate:
    from cnnkit.data import Preprocess
    from cnnkit.train.classify import evaluate, load_run_model, run_data

    model, meta = load_run_model(run)
    pre = Preprocess.from_dict(meta["preprocess"])
    values: dict[str, float] = {}
    counts: dict[str, int] = {}
    values["params"] = float(sum(p.numel() for p in model.parameters()))
    size = (*pre.size, pre.channels)
    if "macs" in wanted:
        from cnnkit.inspect import summary

        values["macs"] = float(summary(model, size).macs)
    values["latency_ms"] = measure_latency(model, size, repeats=repeats, threads=threads)
    splits = sorted({s for m in wanted if (s := _split_of(m)) is not None}, key=SPLITS.index)
    if splits:
        data = run_data(run, meta, cache)  # runs of one split share one load of the data
        for split in splits:
            if getattr(data, split) is None:
                raise CnnkitError(
                    f"run {str(run)!r} has no {split} split; optimize or limit a split it has "
                    "(train, dev, test; train_dev only for runs trained with train_dev=...)."
                )
            s = evaluate(run, data, split=split, batch=batch)
            values[f"{split}_accuracy"] = float(s["accuracy"])
            values[f"{split}_error"] = 1.0 - float(s["accuracy"])
            values[f"{split}_loss"] = float(s["loss"])
            counts[split] = int(s["n"])
            if f"{split}_f1" in wanted:
                ds = getattr(data, split)
                ds.preprocess = pre
                values[f"{split}_f1"] = _f1(model, ds, batch)
    return Candidate(str(run), values, n=counts)


def _runs_list(runs: Any) -> list[str]:
    if isinstance(runs, (str, os.PathLike)):
        runs = [r for r in str(runs).split(",") if r.strip()]
    out = [str(r).strip() for r in runs]
    if not out:
        raise CnnkitError("no runs to choose from; pass runs=runs/classify/a,runs/classify/b.")
    return out


# ---------------------------------------------------------------- choosing


def select(
    runs: Sequence[str | os.PathLike] | str | Mapping[str, Mapping[str, float]],
    optimize: str = "dev_accuracy",
    satisfice: Mapping[str, Any] | None = None,
    *,
    repeats: int = 30,
    threads: int | None = 1,
    batch: int = 256,
) -> Selection:
    """Pick the run with the best optimizing metric among those meeting every limit.

    Args:
        runs: Run folders (a list, or one comma-separated string), or a table
            ``{name: {metric: value}}`` of numbers you already have.
        optimize: The optimizing metric, e.g. ``"dev_acc"`` (maximized) or
            ``"dev_loss"`` (minimized).
        satisfice: Limits, e.g. ``{"latency_ms": 100, "params": 5e6}``: upper bounds for
            minimized metrics, lower bounds for maximized ones (``"dev_acc": 0.95``).
        repeats: Timed forward passes per run for the latency.
        threads: Threads for the latency (None: torch's current setting).
        batch: Batch size for scoring splits.

    Returns:
        A :class:`Selection` (print it for the table); ``best`` is the pick.

    Raises:
        NoRunSatisfiesError: A :class:`~cnnkit.errors.CnnkitError` when no run meets the
            limits (its ``selection`` holds the measured table).
        CnnkitError: On an unknown metric or run folder.
    """
    limits_in = dict(satisfice or {})
    table = isinstance(runs, Mapping)
    opt = canonical_metric(optimize) if not table else str(optimize)
    limits = {
        (canonical_metric(k) if not table else str(k)): _bound(str(k), v)
        for k, v in limits_in.items()
    }
    if opt in limits:
        raise CnnkitError(
            f"{optimize} is both the optimizing metric and a satisficing one; "
            "pick one metric to optimize and limit the others."
        )
    notes: list[str] = []
    if table:
        cands = _table_candidates(runs, [opt, *limits])  # type: ignore[arg-type]
        up = maximize(opt)
        directions = {m: maximize(m) for m in limits}
    else:
        known = [canonical_metric(m) for m in measurable_metrics()]
        for m, raw in [(opt, optimize), *zip(limits, limits_in)]:
            if m not in known:
                hits = did_you_mean(str(raw), measurable_metrics())
                hint = f"did you mean {hits[0]}?" if hits else "e.g. dev_acc, latency_ms, params."
                raise CnnkitError(f"cnnkit can't measure {raw!r} on a run: {hint}")
        up = maximize(opt)
        directions = {m: maximize(m) for m in limits}
        paths = [Path(r) for r in _runs_list(runs)]
        for p in paths:
            if not (p / "config.yaml").is_file():
                raise CnnkitError(
                    f"{str(p)!r} is not a run folder (no config.yaml); runs are in runs/classify/."
                )
        cache: dict[str, Any] = {}
        wanted = [opt, *limits]
        cands = [
            _measure_run(p, wanted, repeats=repeats, threads=threads, batch=batch, cache=cache)
            for p in paths
        ]
        n_threads = threads if threads is not None else torch.get_num_threads()
        notes.append(
            f"latency: batch 1 on the CPU, {n_threads} thread(s), median of up "
            f"to {repeats} forward passes after warm-up; split metrics (e.g. dev_accuracy) "
            "score each run's best weights on the run's own split."
        )
        if opt.startswith("test_"):
            notes.append(
                "choosing by the test set makes its error an optimistic estimate; choose on "
                "dev and keep test for the final, unbiased number."
            )
    for c in cands:
        for m, bound in limits.items():
            v = c.values[m]
            if (v < bound) if directions[m] else (v > bound):
                c.violations.append(m)
    ok = [c for c in cands if c.ok]
    sel = Selection(opt, up, limits, cands, None, notes)
    if not ok:
        worst = "; ".join(
            f"{Path(c.name).name}: "
            + ", ".join(f"{m} {_fmt(m, c.values[m])}" for m in c.violations)
            for c in cands
        )
        lims = " and ".join(f"{m} {_op(directions[m])} {_fmt(m, b)}" for m, b in limits.items())
        raise NoRunSatisfiesError(
            f"no run meets {lims} ({worst}); relax a limit or add a smaller/faster run.",
            sel,
        )
    best = ok[0]
    for c in ok[1:]:
        if (c.values[opt] > best.values[opt]) if up else (c.values[opt] < best.values[opt]):
            best = c
    sel.best = best
    return sel


def _table_candidates(
    rows: Mapping[str, Mapping[str, float]], wanted: list[str]
) -> list[Candidate]:
    if not rows:
        raise CnnkitError("the table has no rows; give {name: {metric: value}}.")
    out = []
    for name, row in rows.items():
        if not isinstance(row, Mapping):
            raise CnnkitError(f"row {name!r} must map metric names to numbers, got {row!r}.")
        for m in wanted:
            if m not in row:
                hits = did_you_mean(m, list(row))
                hint = f"did you mean {hits[0]!r}?" if hits else f"it has {', '.join(row)}."
                raise CnnkitError(f"row {name!r} has no {m!r}: {hint}")
        values = {}
        for k, v in row.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise CnnkitError(f"row {name!r}: {k}={v!r} is not a number.")
            values[str(k)] = float(v)
        out.append(Candidate(str(name), values))
    return out


# ---------------------------------------------------------------- the table


def _op(up: bool) -> str:
    return ">=" if up else "<="


def _fmt(metric: str, v: float) -> str:
    m = canonical_metric(metric)
    if m.endswith(("_accuracy", "_error", "_f1")) or m in ("accuracy", "error", "f1"):
        from cnnkit.strategy.diagnosis import fmt_percent

        return fmt_percent(v)
    if m == "ms" or m.endswith("_ms"):
        if float(v).is_integer():
            return f"{v:,.0f} ms"
        return f"{v:.3f} ms" if v < 10 else f"{v:.1f} ms"
    if m in ("params", "macs") or float(v).is_integer():
        return f"{v:,.0f}"
    return f"{v:.4g}"


def _render(sel: Selection) -> str:
    cols = [sel.optimize, *sel.satisfice]
    for extra in ("params", "latency_ms"):
        if extra not in cols and all(extra in c.values for c in sel.candidates):
            cols.append(extra)
    header = ["run", *cols, "limits broken", ""]
    body = []
    for c in sel.candidates:
        mark = "<- picked" if c is sel.best else ""
        broken = ", ".join(
            f"{m} {_op(maximize(m))} {_fmt(m, sel.satisfice[m])}" for m in c.violations
        )
        body.append([c.name, *(_fmt(m, c.values[m]) for m in cols), broken or "none", mark])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [
        f"optimizing: {sel.optimize} ({'maximize' if sel.maximize else 'minimize'})",
        "satisficing: "
        + (
            ", ".join(f"{m} {_op(maximize(m))} {_fmt(m, b)}" for m, b in sel.satisfice.items())
            or "none"
        ),
        "",
    ]
    for r in [header, *body]:
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, len(cols) + 1)]
        cells += [r[-2].ljust(widths[-2]), r[-1]]
        lines.append("  ".join(cells).rstrip())
    lines.append("")
    if sel.best is not None:
        lines.append(
            f"picked {sel.best.name}: the best {sel.optimize} "
            f"({_fmt(sel.optimize, sel.best.values[sel.optimize])}) among the runs meeting "
            "every limit"
        )
    for n in sel.notes:
        lines.append(f"note: {n}")
    return "\n".join(lines)
