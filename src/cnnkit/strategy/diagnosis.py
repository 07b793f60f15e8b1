"""Bias, variance, data mismatch and dev-set overfitting, read from a ladder of errors.

The course puts the errors one above the other and names each gap::

    human-level error (proxy for Bayes error)
        avoidable bias      = training error  - human-level error
    training error
        variance            = training-dev error - training error
    training-dev error      (same distribution as training, never trained on)
        data mismatch       = dev error - training-dev error
    dev error
        degree of overfitting to the dev set = test error - dev error
    test error

Without a training-dev set, variance is ``dev - train`` (which then also holds any data
mismatch). The largest gap is the problem to work on first, with the course's remedies
for it; a gap at least three quarters of the largest is named too (the course's "bias +
data mismatch" case).

Errors are fractions (``0.08``) or percentages (``8``, ``"8%"``). The rule: a value
written with ``%`` or larger than 1 makes the whole set percent; otherwise every value
is a fraction. A bare value of at most 1 beside values written with ``%`` is refused
as ambiguous (``train=8% dev=0.1``: 0.1% or 10%?); ``unit="percent"`` or
``unit="fraction"`` settles any doubt.

Example (the course's cat classifier, "Avoidable bias")::

    print(diagnose(human=0.01, train=0.08, dev=0.10))   # avoidable bias 7.0%, variance 2.0%
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError, unknown_name

__all__ = ["GAPS", "REMEDIES", "Diagnosis", "diagnose", "diagnose_run", "fmt_percent"]

#: The gaps, in the course's order (the order also breaks ties: fit the training set first).
GAPS = ("avoidable bias", "variance", "data mismatch", "dev overfitting")

#: The course's remedies for each problem (with the cnnkit setting or command that does it).
REMEDIES: dict[str, list[str]] = {
    "avoidable bias": [
        "train a bigger model (model=, a deeper or wider network)",
        "train longer (epochs=)",
        "use a better optimization algorithm: momentum, RMSprop, Adam (optimizer=)",
        "NN architecture / hyperparameter search (cnnkit tune)",
    ],
    "variance": [
        "get more training data",
        "regularization: L2 (weight_decay=), dropout, data augmentation "
        "(degrees=, translate=, scale=, fliplr=)",
        "NN architecture / hyperparameter search (cnnkit tune)",
    ],
    "data mismatch": [
        "carry out manual error analysis to understand the difference between the "
        "training and dev/test sets (cnnkit analyze)",
        "make the training data more similar to dev/test: artificial data synthesis "
        "(e.g. clean audio + car noise; beware of synthesizing from a small subset)",
        "collect more training data similar to the dev/test sets",
    ],
    "dev overfitting": [
        "get a bigger dev set (choosing on the dev set has overfit it)",
    ],
}

#: A gap at least this fraction of the largest one is named as a problem too.
NAMED_RATIO = 0.75

_ERRORS = ("train", "train_dev", "dev", "test")
_LABELS = {
    "human": "human-level error (proxy for Bayes error)",
    "train": "training error",
    "train_dev": "training-dev error",
    "dev": "dev error",
    "test": "test error",
}
_NUMBER = re.compile(r"^\s*([-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)\s*(%?)\s*$")


def fmt_percent(q: float | None) -> str:
    """A fraction as the course writes it: ``0.08`` -> ``"8.0%"``, ``0.007`` -> ``"0.7%"``.

    Args:
        q: A fraction (may be negative), or None.

    Returns:
        The percentage with one decimal, two when needed (``"0.05%"``, ``"0.35%"`` for
        0.003534), ``"?"`` for None.
    """
    if q is None:
        return "?"
    p = round(100 * q, 6)
    return f"{p:.1f}%" if abs(round(p, 1) - p) < 1e-9 else f"{p:.2f}%"


@dataclass
class Diagnosis:
    """Errors, the gaps between them, the dominant problem and what to try.

    Every error and gap is a fraction (``0.07`` is 7%); a gap that cannot be known is
    None (avoidable bias without a human-level error, or once training error is below
    it).

    Attributes:
        human: Human-level error used as the proxy for Bayes error (the best level given).
        human_levels: Every human-level error given, by label (``"typical doctor"``,
            or ``"level 1"``, ...).
        train: Training error.
        train_dev: Training-dev error (same distribution as training, never trained on).
        dev: Dev error.
        test: Test error.
        human_dev: Human-level error on the dev/test distribution, if given (the
            rearview-mirror table).
        avoidable_bias: ``train - human``.
        variance: ``train_dev - train``, or ``dev - train`` without a training-dev set.
        data_mismatch: ``dev - train_dev`` (negative: the dev data is easier).
        dev_overfitting: ``test - dev``, the degree of overfitting to the dev set.
        problem: The dominant problem (the largest positive gap), or None.
        problems: Every named problem, largest first (the dominant one first).
        remedies: The course's remedies for each named problem.
        notes: What else the numbers say (unknown bias, easier dev data, ...).
        counts: Images behind each measured error (from :func:`diagnose_run`).
        noise: For each gap between measured errors: two standard errors of the
            difference (about a 95% margin), from the split sizes in ``counts``. A gap
            no larger than its noise may be chance and is not named as a problem.
        source: The run folder the errors were measured on, if any.
    """

    human: float | None
    human_levels: dict[str, float]
    train: float | None
    train_dev: float | None
    dev: float | None
    test: float | None
    human_dev: float | None
    avoidable_bias: float | None
    variance: float | None
    data_mismatch: float | None
    dev_overfitting: float | None
    problem: str | None
    problems: list[str]
    remedies: dict[str, list[str]]
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    noise: dict[str, float] = field(default_factory=dict)
    source: str | None = None

    def gaps(self) -> dict[str, float | None]:
        """The four gaps by the course's names (None where unknown or not computable)."""
        return {
            "avoidable bias": self.avoidable_bias,
            "variance": self.variance,
            "data mismatch": self.data_mismatch,
            "dev overfitting": self.dev_overfitting,
        }

    def table(self) -> str:
        """The ladder of errors and gaps, the dominant problem, remedies and notes."""
        return _render(self)

    def __str__(self) -> str:
        return self.table()


# ---------------------------------------------------------------- reading the numbers


@dataclass
class _Raw:
    key: str  # "train", "human", ...
    label: str  # "train", "human (typical doctor)", for messages
    number: float
    marked: bool  # written with %


def _one(key: str, label: str, v: Any) -> _Raw:
    if isinstance(v, bool):
        raise CnnkitError(f"{label} must be an error rate, got {v!r}; e.g. {key}=0.08 or {key}=8%.")
    if isinstance(v, (int, float)):
        number, marked = float(v), False
    elif isinstance(v, str):
        m = _NUMBER.match(v)
        if not m:
            raise CnnkitError(
                f"{label}={v!r} is not an error rate; write it as a fraction or a "
                f"percentage, e.g. {key}=0.08 or {key}=8%."
            )
        number, marked = float(m.group(1)), bool(m.group(5))
    else:
        raise CnnkitError(
            f"{label} must be a number, got {type(v).__name__}; e.g. {key}=0.08 or {key}=8%."
        )
    if not math.isfinite(number) or number < 0:
        raise CnnkitError(f"{label}={v!r} must be a rate from 0 up, e.g. {key}=0.08 or {key}=8%.")
    return _Raw(key, label, number, marked)


def _human_levels(v: Any) -> list[tuple[str, Any]]:
    """``0.01``, ``"3%,1%"``, ``[0.03, 0.01]`` or ``{"typical doctor": 0.01}`` -> (label, value)."""
    if isinstance(v, Mapping):
        items = [(str(k), x) for k, x in v.items()]
    elif isinstance(v, str) and "," in v:
        items = [(f"level {i + 1}", x.strip()) for i, x in enumerate(v.split(","))]
    elif isinstance(v, Sequence) and not isinstance(v, str):
        items = [(f"level {i + 1}", x) for i, x in enumerate(v)]
    else:
        return [("human-level", v)]
    if not items:
        raise CnnkitError("human= lists no error; give one or more, e.g. human=0.01,0.007,0.005.")
    return items


def _resolve_unit(raws: list[_Raw], unit: str) -> str:
    if unit not in ("auto", "fraction", "percent"):
        raise unknown_name("unit", str(unit), ["auto", "fraction", "percent"])
    if unit != "auto":
        for r in raws:
            if r.marked and unit == "fraction":
                raise CnnkitError(
                    f"{r.label} is written with % but unit=fraction; drop the % or the unit."
                )
        return unit
    marked = [r for r in raws if r.marked]
    if marked:
        for r in raws:
            if not r.marked and r.number <= 1:
                shown = f"{r.number:g}"
                raise CnnkitError(
                    f"{r.label}={shown} is ambiguous next to {marked[0].label}="
                    f"{marked[0].number:g}%: write {r.key}={shown}% or "
                    f"{r.key}={100 * r.number:g}% (or pass unit=percent / unit=fraction)."
                )
        return "percent"
    return "percent" if any(r.number > 1 for r in raws) else "fraction"


def _to_fraction(r: _Raw, unit: str) -> float:
    q = r.number / 100 if unit == "percent" else r.number
    if q > 1:
        shown = f"{r.number:g}{'%' if unit == 'percent' else ''}"
        raise CnnkitError(
            f"{r.label}={shown} is over 100%; an error rate is at most 100% (or 1 as a fraction)."
        )
    return round(q, 12)


def _gap(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 12)


# ---------------------------------------------------------------- the diagnosis


def diagnose(
    human: Any = None,
    train: Any = None,
    train_dev: Any = None,
    dev: Any = None,
    test: Any = None,
    *,
    human_dev: Any = None,
    unit: str = "auto",
    counts: Mapping[str, int] | None = None,
) -> Diagnosis:
    """Name the gaps between human-level, training, training-dev, dev and test errors.

    Args:
        human: Human-level error, the proxy for Bayes error: one value, or several
            levels (``[0.03, 0.01, 0.007, 0.005]``, ``"3%,1%,0.7%,0.5%"`` or
            ``{"typical human": 0.03, "team of experienced doctors": 0.005}``), of which
            the best (lowest) is used, since Bayes error is at most the best. None when
            unknown (avoidable bias then can't be known).
        train: Training error.
        train_dev: Training-dev error (held out from the training distribution).
        dev: Dev error.
        test: Test error.
        human_dev: Human-level error on the dev/test distribution, when it differs from
            the training distribution (the course's rearview-mirror table).
        unit: ``"auto"`` (see the module's rule), ``"fraction"`` or ``"percent"``.
        counts: Images behind each error (``{"train": 1132, "dev": 180, ...}``), when
            known: gaps within the noise of such split sizes are not named as problems.

    Returns:
        A :class:`Diagnosis` (print it for the table).

    Raises:
        CnnkitError: On a value that is not a rate, over 100%, ambiguous units, or
            fewer errors than one gap needs.
    """
    raws: list[_Raw] = []
    levels: list[tuple[str, _Raw]] = []
    if human is not None:
        many = _human_levels(human)
        for label, v in many:
            shown = "human" if len(many) == 1 else f"human ({label})"
            levels.append((label, _one("human", shown, v)))
        raws += [r for _, r in levels]
    given: dict[str, _Raw] = {}
    for key, v in (("train", train), ("train_dev", train_dev), ("dev", dev), ("test", test)):
        if v is not None:
            given[key] = _one(key, key, v)
    if human_dev is not None:
        given["human_dev"] = _one("human_dev", "human_dev", human_dev)
    raws += list(given.values())
    u = _resolve_unit(raws, unit)
    q = {k: _to_fraction(r, u) for k, r in given.items()}
    human_levels = {label: _to_fraction(r, u) for label, r in levels}
    h = min(human_levels.values()) if human_levels else None
    tr, td, dv, ts = (q.get(k) for k in _ERRORS)
    n_gaps = sum(
        x is not None
        for x in (_gap(tr, h), _gap(td if td is not None else dv, tr), _gap(dv, td), _gap(ts, dv))
    )
    if n_gaps == 0:
        raise CnnkitError(
            "give at least two neighbouring errors to compare, e.g. human=1% train=8% dev=10% "
            "(or train=0.08 dev=0.10)."
        )
    n = _check_counts(counts)
    return _analyse(h, human_levels, tr, td, dv, ts, q.get("human_dev"), n)


def _check_counts(counts: Mapping[str, int] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for k, v in (counts or {}).items():
        if k not in _ERRORS:
            raise unknown_name("split", str(k), _ERRORS)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise CnnkitError(f"counts[{k!r}] must be a number of images >= 1, got {v!r}.")
        out[k] = v
    return out


def _noise(errors: Mapping[str, float | None], counts: Mapping[str, int]) -> dict[str, float]:
    """Two standard errors of each gap between measured errors (binomial, Laplace-smoothed)."""

    def var(split: str) -> float | None:
        p, n = errors.get(split), counts.get(split)
        if p is None or n is None:
            return None
        q = (p * n + 1) / (n + 2)  # never 0: no errors out of n is not certainty
        return q * (1 - q) / n

    lower = "train_dev" if errors.get("train_dev") is not None else "dev"
    pairs = {
        "avoidable bias": ("train", None),  # human-level carries no count
        "variance": (lower, "train"),
        "data mismatch": ("dev", "train_dev"),
        "dev overfitting": ("test", "dev"),
    }
    out: dict[str, float] = {}
    for gap, (a, b) in pairs.items():
        va = var(a)
        vb = var(b) if b is not None else 0.0
        if va is not None and vb is not None:
            out[gap] = round(2 * math.sqrt(va + vb), 12)
    return out


def _analyse(
    h: float | None,
    human_levels: dict[str, float],
    tr: float | None,
    td: float | None,
    dv: float | None,
    ts: float | None,
    hd: float | None,
    counts: dict[str, int],
) -> Diagnosis:
    notes: list[str] = []
    if len(human_levels) > 1:
        best = min(human_levels, key=lambda k: human_levels[k])
        listed = ", ".join(f"{k} {fmt_percent(v)}" for k, v in human_levels.items())
        notes.append(
            f"human-level error: {fmt_percent(h)} ({best}), the best of {listed}; "
            "Bayes error is at most the best human performance, so the best is its proxy."
        )
    bias = _gap(tr, h)
    if tr is not None and h is None:
        notes.append(
            "avoidable bias can't be known without a human-level error (the proxy for "
            "Bayes error); pass human=..."
        )
    elif bias is not None and bias < 0:
        notes.append(
            f"training error {fmt_percent(tr)} is below human-level {fmt_percent(h)}: the model "
            "surpasses human-level performance, so the avoidable bias can't be known (Bayes "
            "error may be lower still) and progress usually slows (human labels and insight "
            "help less)."
        )
        bias = None
    if td is not None:
        variance = _gap(td, tr)
        mismatch = _gap(dv, td)
    else:
        variance = _gap(dv, tr)
        mismatch = None
        if variance is not None:
            notes.append(
                "no training-dev set: variance is dev - train, which also holds any data "
                "mismatch when the dev data comes from another distribution (carve a "
                "training-dev set, e.g. train_dev=0.1, to tell them apart)."
            )
    if variance is not None and variance < 0:
        what = "training-dev" if td is not None else "dev"
        notes.append(
            f"{what} error is below training error: no sign of variance (a small {what} set "
            "gives noisy errors)."
        )
    errors = {"train": tr, "train_dev": td, "dev": dv, "test": ts}
    margins = _noise(errors, counts)
    if mismatch is not None and mismatch < -margins.get("data mismatch", 0):
        notes.append(
            f"dev error {fmt_percent(dv)} is below training-dev error {fmt_percent(td)}: the "
            "dev/test data is easier than the training distribution (negative data mismatch), "
            "not a problem to fix."
        )
    overfit = _gap(ts, dv)
    if overfit is not None and overfit < 0:
        notes.append(
            f"test error {fmt_percent(ts)} is below dev error {fmt_percent(dv)}: no sign of "
            "overfitting to the dev set."
        )
    if hd is not None:
        if h is not None and hd != h:
            harder = "harder" if hd > h else "easier"
            notes.append(
                f"human-level error on the dev/test data is {fmt_percent(hd)} against "
                f"{fmt_percent(h)} on the training distribution: the dev/test data is "
                f"{harder} for humans too."
            )
        if dv is not None:
            dgap = _gap(dv, hd)
            assert dgap is not None
            if dgap <= 0:
                notes.append(
                    f"dev error {fmt_percent(dv)} is at human-level on the dev/test data "
                    f"({fmt_percent(hd)})."
                )
            else:
                notes.append(
                    f"dev error {fmt_percent(dv)} is {fmt_percent(dgap)} above human-level on "
                    f"the dev/test data ({fmt_percent(hd)})."
                )
    gaps = dict(zip(GAPS, (bias, variance, mismatch, overfit)))
    noise = {k: v for k, v in margins.items() if gaps[k] is not None}
    positive = {k: v for k, v in gaps.items() if v is not None and v > 0}
    chance = {k: v for k, v in positive.items() if k in noise and v <= noise[k]}
    real = {k: v for k, v in positive.items() if k not in chance}
    problems: list[str] = []
    if real:
        top = max(real.values())
        # largest first; ties keep the course's order (fit the training set first)
        order = sorted(real, key=lambda k: (-real[k], GAPS.index(k)))
        problems = [k for k in order if real[k] >= NAMED_RATIO * top - 1e-12]
    elif not positive:
        notes.append("no gap is positive: nothing in these errors to fix.")
    if chance:
        listed = ", ".join(
            f"{k} {fmt_percent(v)} (noise ±{fmt_percent(noise[k])})" for k, v in chance.items()
        )
        notes.append(
            f"within the noise of the split sizes (two standard errors): {listed}; such a gap "
            "may be chance, so it is not named as a problem (bigger splits would tell)."
        )
    return Diagnosis(
        human=h,
        human_levels=human_levels,
        train=tr,
        train_dev=td,
        dev=dv,
        test=ts,
        human_dev=hd,
        avoidable_bias=bias,
        variance=variance,
        data_mismatch=mismatch,
        dev_overfitting=overfit,
        problem=problems[0] if problems else None,
        problems=problems,
        remedies={p: list(REMEDIES[p]) for p in problems},
        notes=notes,
        counts=dict(counts),
        noise=noise,
    )


def diagnose_run(
    run: str | os.PathLike,
    human: Any = None,
    *,
    human_dev: Any = None,
    unit: str = "auto",
    batch: int = 256,
) -> Diagnosis:
    """Diagnose a run from errors measured on its own splits.

    The run's ``config.yaml`` rebuilds the same splits (same seed); its best weights are
    scored with :func:`cnnkit.train.classify.evaluate` on train, train-dev (when the run
    has one: ``train_dev=0.1``), dev and test. Error = 1 - accuracy.

    Args:
        run: The run folder, e.g. ``runs/classify/train``.
        human: Human-level error(s), as in :func:`diagnose` (None: unknown).
        human_dev: Human-level error on the dev/test distribution, if known.
        unit: Unit of ``human`` / ``human_dev``: ``"auto"``, ``"fraction"`` or ``"percent"``.
        batch: Batch size for scoring.

    Returns:
        A :class:`Diagnosis` with ``counts`` (images per split) and ``source`` set.

    Raises:
        CnnkitError: When ``run`` is not a run folder, or on a bad human-level error.
    """
    from cnnkit.train.classify import evaluate, load_run_model, run_config, run_data

    r = Path(run)
    run_config(r)  # a run folder with a readable config.yaml, before anything else
    # the human-level errors are read (and checked) before any data is
    h = _human_in_unit(human, unit)
    hd = _human_in_unit(human_dev, unit)
    _, meta = load_run_model(r)
    # one load of the run's splits (the same seed, so the same split as evaluate(run) makes)
    data = run_data(r, meta)
    errors: dict[str, float] = {}
    counts: dict[str, int] = {}
    for split in _ERRORS:
        if getattr(data, split) is None:
            continue
        s = evaluate(r, data, split=split, batch=batch)
        errors[split] = 1.0 - float(s["accuracy"])
        counts[split] = int(s["n"])
    d = diagnose(h, **errors, human_dev=hd, unit="fraction", counts=counts)
    if "train_dev" not in errors:
        d.notes.append(
            "the run has no training-dev split; to separate variance from data mismatch, "
            f"train again with one: cnnkit train cfg={r}/config.yaml train_dev=0.1"
        )
    d.source = str(r)
    return d


def _human_in_unit(human: Any, unit: str) -> Any:
    """Human-level error(s) as fractions, read with :func:`diagnose`'s unit rule on their own."""
    if human is None:
        return None
    many = _human_levels(human)
    raws = [_one("human", "human" if len(many) == 1 else f"human ({k})", v) for k, v in many]
    u = _resolve_unit(raws, unit)
    out = {k: _to_fraction(r, u) for (k, _), r in zip(many, raws)}
    return out if len(many) > 1 or isinstance(human, (Mapping, list, tuple)) else out[many[0][0]]


# ---------------------------------------------------------------- the table


def _render(d: Diagnosis) -> str:
    rows: list[tuple[str, str, str, str]] = []  # (label, error, gap, mark)

    def err(key: str, value: float | None) -> None:
        if value is None:
            return
        n = d.counts.get(key)
        extra = f"  ({round(value * n):,} of {n:,} images wrong)" if n is not None else ""
        rows.append((_LABELS[key], fmt_percent(value), "", extra))

    def gap(name: str, value: float | None, how: str, known: bool = True) -> None:
        mark = ""
        if name in d.noise:
            mark = f"  ±{fmt_percent(d.noise[name])}"
            if value is not None and 0 < value <= d.noise[name]:
                mark += " (within noise)"
        if name == d.problem:
            mark += "  <- dominant problem"
        elif name in d.problems:
            mark += "  <- problem too"
        shown = fmt_percent(value) if known else "can't know"
        rows.append((f"    {name}{how}", "", shown, mark))

    err("human", d.human)
    if d.train is not None:
        if d.avoidable_bias is not None:
            gap("avoidable bias", d.avoidable_bias, "")
        else:  # no human-level error, or training error below it
            gap("avoidable bias", None, "", known=False)
    err("train", d.train)
    if d.train_dev is not None:
        if d.variance is not None:
            gap("variance", d.variance, "")
        err("train_dev", d.train_dev)
        if d.data_mismatch is not None:
            gap("data mismatch", d.data_mismatch, "")
    elif d.variance is not None:
        gap("variance", d.variance, " (dev - train)")
    err("dev", d.dev)
    if d.dev_overfitting is not None:
        gap("dev overfitting", d.dev_overfitting, " (test - dev)")
    err("test", d.test)
    w = max(len(r[0]) for r in rows)
    lines = []
    if d.source:
        lines.append(f"diagnosis of {d.source} (errors measured on its splits, best weights)")
    lines.append(f"{'':<{w}}  {'error':>8}  {'gap':>10}")
    for label, e, g, mark in rows:
        lines.append(f"{label:<{w}}  {e:>8}  {g:>10}{mark}".rstrip())
    if d.human_dev is not None:
        lines.append(f"{'human-level error on dev/test data':<{w}}  {fmt_percent(d.human_dev):>8}")
    lines.append("")
    if d.noise:
        lines.append("(± two standard errors of a gap, from the split sizes)")
    if d.problem is None:
        positive = [v for v in d.gaps().values() if v is not None and v > 0]
        why = "every positive gap is within its noise" if positive else "no gap is positive"
        lines.append(f"no dominant problem ({why}).")
    else:
        gaps = d.gaps()
        value = gaps[d.problem]
        largest = "the largest gap"
        if d.train is not None and d.avoidable_bias is None:
            largest = "the largest known gap; avoidable bias can't be known"
        lines.append(f"dominant problem: {d.problem} ({fmt_percent(value)}, {largest})")
        for p in d.problems[1:]:
            lines.append(f"also a problem: {p} ({fmt_percent(gaps[p])}, close to the largest)")
        for p in d.problems:
            lines.append(f"to reduce {p}, try:")
            lines += [f"  - {r}" for r in d.remedies[p]]
    if d.notes:
        lines.append("notes:")
        lines += [f"  - {n}" for n in d.notes]
    return "\n".join(lines)
