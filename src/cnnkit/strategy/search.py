"""Hyperparameter search as the course teaches it, and the learning-rate range test.

The course's recipe (Improving Deep Neural Networks, week 3):

- sample at random, not on a grid: every trial tries a new value of every
  hyperparameter, so the important ones get as many distinct values as there are trials;
- pick the right scale: the learning rate alpha in 1e-4..1 is ``alpha = 10**r`` with
  ``r`` uniform in [-4, 0] (``log``); a momentum or Adam beta in 0.9..0.999 is
  ``1 - beta = 10**r`` with ``r`` uniform in [-3, -1] (``rlog``); layer and unit counts
  are integers sampled uniformly (``int``);
- go coarse to fine: after a coarse round, narrow every range around the best trials
  and sample again.

:class:`Space` holds the ranges (``Space.parse("lr=1e-4..1:log beta2=0.9..0.999:rlog")``),
:func:`tune` runs the study with Optuna (a seeded ``RandomSampler``; the study lives in a
real database, SQLite by default, so it survives a killed process and several machines
can share it) and trains each trial with :func:`cnnkit.train.classify.train`.
:func:`lr_find` is the exponential learning-rate range test (Smith 2017, fastai).

Grammar of one range (command line, ``Space.parse`` and ``Space(lr="...")``)::

    KEY=LOW..HIGH[:SCALE]      SCALE: linear (default), log, rlog, int, intlog
    KEY=A|B|C                  a choice (also a YAML list: KEY=[A, B, C])
    KEY=VALUE                  a fixed setting (not searched)

What happens to a trial whose process dies (killed, machine lost): its state stays
RUNNING in the database. Every ``tune`` call first looks for such trials: one started
on this machine by a process that no longer exists is marked FAIL at once; one from
another machine is marked FAIL by Optuna's heartbeat check once it has missed its
heartbeats for ``grace`` seconds. A failed trial does not count towards ``trials``;
its parameters are queued again (a new trial, with ``retry_of`` naming the old number,
since Optuna never reuses a trial number) and its partial run folder is deleted.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import math
import os
import random
import shutil
import socket
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError, did_you_mean

__all__ = [
    "METRICS",
    "SCALES",
    "Dim",
    "LRFindResult",
    "Space",
    "TrialRecord",
    "TuneResult",
    "lr_find",
    "tune",
]

SCALES = ("linear", "log", "rlog", "int", "intlog")
METRICS = {"dev_accuracy": "maximize", "dev_loss": "minimize"}
_CONTROLLED = ("name", "exist_ok")  # tune names each trial's run folder itself
_GRAMMAR = "write LOW..HIGH[:SCALE] with SCALE one of " + ", ".join(SCALES)


# --------------------------------------------------------------------------- the space


def _scalar(text: str) -> Any:
    """``"3"`` -> 3, ``"0.5"`` -> 0.5, ``"true"`` -> True, anything else stays text."""
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(t)
        except ValueError:
            pass
    return t


def _number(name: str, text: str, spec: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise CnnkitError(
            f"{name}={spec} has {text.strip()!r} where a number belongs; {_GRAMMAR}, "
            f"e.g. {name}=1e-4..1:log."
        ) from None
    if not math.isfinite(v):
        raise CnnkitError(f"{name}={spec} needs finite ends; e.g. {name}=1e-4..1:log.")
    return v


@dataclass(frozen=True)
class Dim:
    """One searched hyperparameter: a range on a scale, or a list of choices.

    Attributes:
        name: The setting (a :class:`~cnnkit.train.TrainConfig` key for :func:`tune`).
        low: Smallest value (ranges).
        high: Largest value (ranges).
        scale: ``linear`` (uniform), ``log`` (``10**r``, r uniform), ``rlog``
            (``1 - 10**r``, r uniform: betas), ``int`` (uniform integers), ``intlog``
            (integers, log-uniform).
        choices: The values of a choice (then ``low``/``high`` are None).
    """

    name: str
    low: float | None = None
    high: float | None = None
    scale: str = "linear"
    choices: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        n = self.name
        if not (isinstance(n, str) and all(part.isidentifier() for part in n.split(".", 1))):
            raise CnnkitError(f"{n!r} is not a setting name; use names such as lr or beta2.")
        if self.choices is not None:
            if len(self.choices) < 1:
                raise CnnkitError(f"{n} has no choices; e.g. {n}=adam|sgd.")
            for c in self.choices:
                if not (c is None or isinstance(c, (bool, int, float, str))):
                    raise CnnkitError(f"{n}'s choice {c!r} must be a number, text or true/false.")
            return
        if self.scale not in SCALES:
            hits = did_you_mean(str(self.scale), SCALES)
            hint = f"did you mean {hits[0]!r}?" if hits else f"use one of {', '.join(SCALES)}."
            raise CnnkitError(f"{n} has an unknown scale {self.scale!r}: {hint}")
        lo, hi = self.low, self.high
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)):
            raise CnnkitError(f"{n} needs numbers for both ends; {_GRAMMAR}.")
        assert lo is not None and hi is not None
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise CnnkitError(f"{n} needs finite ends; e.g. {n}=1e-4..1:log.")
        if lo > hi:
            raise CnnkitError(
                f"{n}={_g(lo)}..{_g(hi)} runs backwards; write the smaller end first: "
                f"{n}={_g(hi)}..{_g(lo)}."
            )
        if self.scale in ("log", "intlog") and lo <= 0:
            raise CnnkitError(
                f"{n}'s {self.scale} scale needs LOW > 0 (10**r is never {_g(lo)}); "
                f"e.g. {n}=1e-4..1:log."
            )
        if self.scale == "rlog" and not (lo >= 0 and hi < 1):
            raise CnnkitError(
                f"{n}'s rlog scale (1 - 10**r) needs 0 <= LOW and HIGH < 1, got "
                f"{_g(lo)}..{_g(hi)}; e.g. {n}=0.9..0.999:rlog."
            )
        if self.scale in ("int", "intlog") and not (
            float(lo).is_integer() and float(hi).is_integer()
        ):
            raise CnnkitError(
                f"{n}'s {self.scale} scale needs whole numbers, got {_g(lo)}..{_g(hi)}; "
                f"e.g. {n}=16..128:int."
            )

    @property
    def is_choice(self) -> bool:
        """Whether this is a list of choices rather than a range."""
        return self.choices is not None

    @property
    def param(self) -> str:
        """Optuna's name of the sampled variable (``1-beta2`` for an rlog beta2)."""
        return f"1-{self.name}" if self.scale == "rlog" and not self.is_choice else self.name

    def to_text(self) -> str:
        """The dimension in the command-line grammar, e.g. ``lr=0.0001..1:log``."""
        if self.is_choice:
            return f"{self.name}=" + "|".join(_g(c) for c in self.choices or ())
        tail = "" if self.scale == "linear" else f":{self.scale}"
        return f"{self.name}={_g(self.low)}..{_g(self.high)}{tail}"

    def coord(self, value: float) -> float:
        """Where ``value`` sits on the sampling scale: log10 (log), log10(1 - v) (rlog), v."""
        if self.scale in ("log", "intlog"):
            return math.log10(value)
        if self.scale == "rlog":
            return math.log10(max(1.0 - value, 1e-300))
        return float(value)

    def suggest(self, trial: Any) -> Any:
        """Draw this hyperparameter in an Optuna trial (a fixed value in a re-queued one).

        Args:
            trial: An ``optuna.trial.Trial``.

        Returns:
            The value, on this dimension's scale.
        """
        lo, hi = self.low, self.high
        if self.is_choice:
            return trial.suggest_categorical(self.name, list(self.choices or ()))
        assert lo is not None and hi is not None
        if self.scale in ("int", "intlog"):
            return trial.suggest_int(self.name, int(lo), int(hi), log=self.scale == "intlog")
        if self.scale == "rlog":
            # 1 - beta = 10**r, r uniform in [log10(1 - high), log10(1 - low)]
            one_minus = trial.suggest_float(self.param, 1.0 - hi, 1.0 - lo, log=True)
            return self.value({self.param: one_minus})
        return trial.suggest_float(self.name, lo, hi, log=self.scale == "log")

    def value(self, params: Mapping[str, Any]) -> Any:
        """This hyperparameter's value from an Optuna trial's ``params``."""
        v = params[self.param]
        if self.scale == "rlog" and not self.is_choice:
            assert self.low is not None and self.high is not None
            return min(max(1.0 - float(v), self.low), self.high)
        return v

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in this dimension."""
        if self.is_choice:
            return value in (self.choices or ())
        assert self.low is not None and self.high is not None
        return self.low <= value <= self.high

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON), for the study's record."""
        if self.is_choice:
            return {"name": self.name, "choices": list(self.choices or ())}
        return {"name": self.name, "low": self.low, "high": self.high, "scale": self.scale}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Dim:
        """Inverse of :meth:`to_dict`."""
        if "choices" in d:
            return cls(d["name"], choices=tuple(d["choices"]))
        return cls(d["name"], float(d["low"]), float(d["high"]), str(d["scale"]))


def _g(v: Any) -> str:
    """A number as a user writes it (``0.0001``, ``1e-05``, ``16``); text as is."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    if isinstance(v, float):
        return f"{v:.10g}"
    return str(v)


def parse_dim(name: str, spec: Any) -> Dim | None:
    """Read one ``KEY=SPEC`` of the grammar; None when ``spec`` is a fixed value.

    Args:
        name: The setting.
        spec: ``"LOW..HIGH[:SCALE]"``, ``"A|B|C"``, a list of choices, a ``(low, high[,
            scale])`` tuple, a :class:`Dim`, or a fixed value.

    Returns:
        The dimension, or None for a fixed value.

    Raises:
        CnnkitError: On a malformed range, with the grammar.
    """
    if isinstance(spec, Dim):
        return (
            spec if spec.name == name else Dim(name, spec.low, spec.high, spec.scale, spec.choices)
        )
    if isinstance(spec, tuple):
        if len(spec) not in (2, 3):
            raise CnnkitError(f"{name}={spec!r}: a range is (low, high) or (low, high, scale).")
        scale = str(spec[2]) if len(spec) == 3 else "linear"
        return Dim(name, spec[0], spec[1], scale)
    if isinstance(spec, list):
        return Dim(name, choices=tuple(spec))
    if not isinstance(spec, str):
        return None
    text = spec.strip()
    if "|" in text:
        parts = [p.strip() for p in text.split("|")]
        if any(not p for p in parts):
            raise CnnkitError(f"{name}={spec} has an empty choice; e.g. {name}=adam|sgd.")
        return Dim(name, choices=tuple(_scalar(p) for p in parts))
    if ".." not in text:
        return None
    body, scale = text, "linear"
    if ":" in text:
        body, _, scale = text.rpartition(":")
        scale = scale.strip().lower()
        if not scale:
            raise CnnkitError(f"{name}={spec} ends in ':' without a scale; {_GRAMMAR}.")
    low, _, high = body.partition("..")
    if not (low.strip() and high.strip()) or ".." in high:
        raise CnnkitError(f"{name}={spec} is not a range; {_GRAMMAR}, e.g. {name}=1e-4..1:log.")
    return Dim(name, _number(name, low, spec), _number(name, high, spec), scale)


class Space:
    """The hyperparameters to search, each on its scale.

    Examples::

        Space(lr=(1e-4, 1, "log"), beta2=(0.9, 0.999, "rlog"), batch=(16, 128, "int"))
        Space(lr="1e-4..1:log", optimizer=["adam", "sgd"])
        Space.parse("lr=1e-4..1:log beta2=0.9..0.999:rlog batch=16..128:int")

    Args:
        dims: Dimensions (:class:`Dim`) or a mapping ``name -> spec``.
        **specs: More ``name=spec``; a spec is ``(low, high[, scale])``, ``"LOW..HIGH[:SCALE]"``,
            ``"A|B"``, a list of choices or a :class:`Dim`.
    """

    def __init__(self, dims: Iterable[Dim] | Mapping[str, Any] | None = None, **specs: Any) -> None:
        items: list[Dim] = []
        pairs: list[tuple[str, Any]] = []
        if isinstance(dims, Mapping):
            pairs += list(dims.items())
        elif dims is not None:
            items += list(dims)
        pairs += list(specs.items())
        for name, spec in pairs:
            d = parse_dim(name, spec)
            if d is None:
                raise CnnkitError(
                    f"{name}={spec!r} is not a range or a choice; {_GRAMMAR} or A|B, "
                    f"e.g. {name}=1e-4..1:log."
                )
            items.append(d)
        self.dims: dict[str, Dim] = {}
        for d in items:
            if d.name in self.dims:
                raise CnnkitError(f"{d.name} is searched twice; keep one {d.name}=... .")
            self.dims[d.name] = d

    @classmethod
    def parse(cls, text: str | Sequence[str]) -> Space:
        """A space from the command-line grammar.

        Args:
            text: ``"lr=1e-4..1:log beta2=0.9..0.999:rlog"`` or a list of such words.

        Returns:
            The space.
        """
        words = text.split() if isinstance(text, str) else list(text)
        dims = []
        for w in words:
            name, eq, spec = w.partition("=")
            if not eq or not name:
                raise CnnkitError(f"{w!r} is not KEY=LOW..HIGH[:SCALE]; e.g. lr=1e-4..1:log.")
            d = parse_dim(name.strip(), spec)
            if d is None:
                raise CnnkitError(
                    f"{w} is not a range or a choice; {_GRAMMAR}, e.g. {name}=1e-4..1:log."
                )
            dims.append(d)
        return cls(dims)

    def __iter__(self) -> Iterator[Dim]:
        return iter(self.dims.values())

    def __len__(self) -> int:
        return len(self.dims)

    def __getitem__(self, name: str) -> Dim:
        return self.dims[name]

    def __contains__(self, name: object) -> bool:
        return name in self.dims

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Space) and self.dims == other.dims

    def __repr__(self) -> str:
        return f"Space.parse({str(self)!r})"

    def __str__(self) -> str:
        return " ".join(d.to_text() for d in self)

    @property
    def names(self) -> list[str]:
        """The searched settings, in order."""
        return list(self.dims)

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Draw every hyperparameter in an Optuna trial.

        Args:
            trial: An ``optuna.trial.Trial``.

        Returns:
            ``{name: value}`` on the user's scale (beta, not 1 - beta).
        """
        return {d.name: d.suggest(trial) for d in self}

    def values(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The hyperparameters of a finished trial from its Optuna ``params``."""
        return {d.name: d.value(params) for d in self if d.param in params}

    def contains(self, values: Mapping[str, Any]) -> bool:
        """Whether every value lies in its dimension."""
        return all(d.contains(values[d.name]) for d in self if d.name in values)

    def to_list(self) -> list[dict[str, Any]]:
        """Plain values (JSON)."""
        return [d.to_dict() for d in self]

    @classmethod
    def from_list(cls, items: Iterable[Mapping[str, Any]]) -> Space:
        """Inverse of :meth:`to_list`."""
        return cls([Dim.from_dict(d) for d in items])

    def zoom(
        self,
        points: Sequence[tuple[Mapping[str, Any], float]],
        *,
        maximize: bool = True,
        top: float = 0.25,
    ) -> Space:
        """The next, finer space: each range narrowed around the best trials.

        The best ``top`` fraction of the trials (at least 2) spans, on each range's own
        scale (log10 for log, log10(1 - beta) for rlog), an interval; it is widened by 10%
        of its width (at least 5% of the old range) on both sides and clipped to the old
        range. So the new range lies inside the old one and holds the best trial. Choices
        are kept as they are (Optuna needs a choice's list to stay the same in a study).

        Args:
            points: ``(values, objective)`` of finished trials.
            maximize: Whether a larger objective is better.
            top: Fraction of the trials that decides the new ranges.

        Returns:
            The narrowed space.
        """
        if not 0 < top <= 1:
            raise CnnkitError(f"top must be a fraction in (0, 1], got {top!r}; e.g. top=0.25.")
        ok = [(v, y) for v, y in points if y is not None and not math.isnan(y)]
        if not ok:
            raise CnnkitError("no finished trial to zoom in on; run the coarse round first.")
        ok.sort(key=lambda p: -p[1] if maximize else p[1])
        k = min(len(ok), max(2, math.ceil(top * len(ok))))
        best = ok[:k]
        dims = []
        for d in self:
            if d.is_choice:
                dims.append(d)
                continue
            assert d.low is not None and d.high is not None
            c_old = sorted((d.coord(d.low), d.coord(d.high)))
            cs = [d.coord(v[d.name]) for v, _ in best if d.name in v]
            if not cs:
                dims.append(d)
                continue
            lo, hi = min(cs), max(cs)
            pad = max(0.1 * (hi - lo), 0.05 * (c_old[1] - c_old[0]))
            lo, hi = max(lo - pad, c_old[0]), min(hi + pad, c_old[1])
            a, b = sorted((_from_coord(d, lo), _from_coord(d, hi)))
            a, b = max(a, d.low), min(b, d.high)
            if d.scale in ("int", "intlog"):
                a, b = math.floor(a + 1e-9), math.ceil(b - 1e-9)
                a, b = max(a, int(d.low)), min(b, int(d.high))
            dims.append(Dim(d.name, float(a), float(b), d.scale))
        return Space(dims)

    def sample(self, n: int, seed: int = 0) -> list[dict[str, Any]]:
        """``n`` draws from Optuna's seeded ``RandomSampler`` (no training; an in-memory study).

        Args:
            n: Number of draws.
            seed: Sampler seed.

        Returns:
            ``n`` dicts ``{name: value}``.
        """
        optuna = _optuna()
        out: list[dict[str, Any]] = []
        with _quiet_optuna(optuna):
            study = optuna.create_study(sampler=_sampler(seed))

            def objective(trial: Any) -> float:
                out.append(self.suggest(trial))
                return 0.0

            study.optimize(objective, n_trials=n)
        return out


def _from_coord(d: Dim, c: float) -> float:
    if d.scale in ("log", "intlog"):
        return 10.0**c
    if d.scale == "rlog":
        return 1.0 - 10.0**c
    return c


def as_space(space: Space | Mapping[str, Any] | str | Sequence[str]) -> Space:
    """A :class:`Space` from a space, a mapping of specs or the grammar's text."""
    if isinstance(space, Space):
        return space
    if isinstance(space, Mapping):
        return Space(space)
    return Space.parse(space)


# --------------------------------------------------------------------------- optuna glue


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:  # pragma: no cover (a dependency)
        raise CnnkitError(
            "hyperparameter search needs optuna; install it with pip install 'optuna>=3.6'."
        ) from None
    return optuna


@contextlib.contextmanager
def _quiet_optuna(optuna: Any) -> Iterator[None]:
    """Optuna's log lines and experimental-feature warnings off, for the duration.

    cnnkit says what happens to each trial itself; an error in a trial is raised.
    """
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def _sampler(seed: int) -> Any:
    """Optuna's ``RandomSampler``, seeded per trial: trial k's draws depend on (seed, k) only.

    A study resumed after a kill, or shared by several machines, so never repeats the
    draws of earlier trials (one sampler seeded once per process would start its
    sequence again in every process).
    """
    optuna = _optuna()

    class TrialSeededRandomSampler(optuna.samplers.RandomSampler):
        """``RandomSampler`` whose draw of parameter p in trial k is seeded by (seed, k, p)."""

        def __init__(self, seed: int) -> None:
            super().__init__(seed=seed)
            self.base_seed = seed

        def sample_independent(
            self, study: Any, trial: Any, param_name: str, param_distribution: Any
        ) -> Any:
            s = np.random.SeedSequence(
                [self.base_seed, trial.number, zlib.crc32(param_name.encode())]
            ).generate_state(1)[0]
            inner = optuna.samplers.RandomSampler(seed=int(s))
            return inner.sample_independent(study, trial, param_name, param_distribution)

    return TrialSeededRandomSampler(seed)


def _storage(
    optuna: Any, url: str, heartbeat: int, grace: int, on_stale: Callable[[Any, Any], None]
) -> Any:
    if url == "memory":
        return optuna.storages.InMemoryStorage()
    if "://" not in url:
        raise CnnkitError(
            f"storage={url!r} is not a database URL; e.g. storage=sqlite:///study.db or "
            "storage=postgresql://user@host/db."
        )
    import inspect

    # Optuna 4.9 renamed failed_trial_callback (kept until 6.0, with a warning)
    known = inspect.signature(optuna.storages.RDBStorage).parameters
    renamed = "heartbeat_stale_trial_callback" in known
    callback = {"heartbeat_stale_trial_callback" if renamed else "failed_trial_callback": on_stale}
    try:
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=heartbeat,
            grace_period=grace,
            **callback,
            engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
        )
    except Exception as e:  # a bad URL, a missing driver, a database that cannot be reached
        raise CnnkitError(
            f"cannot open storage={url!r} ({str(e).splitlines()[0][:160]}); check the URL."
        ) from None


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """``(state, start time)`` of a process from ``/proc`` (Linux), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text.rpartition(")")[2].split()
    return (rest[0], rest[19]) if len(rest) > 19 else None


def _owner() -> dict[str, Any]:
    st = _proc_stat(os.getpid())
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": st[1] if st else None}


def _dead_here(ft: Any) -> bool:
    """Whether a RUNNING trial's process is gone: it ran on this machine and no longer exists.

    A trial records its owner (host, pid, process start time) as its first act; one
    without an owner a minute after it started died in that instant, wherever it ran.
    """
    attrs = ft.user_attrs
    if "owner" not in attrs:
        started = ft.datetime_start
        return started is not None and (datetime.now() - started).total_seconds() > 60
    owner = attrs.get("owner")
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return False  # another machine's: Optuna's heartbeat check decides
    pid = int(owner.get("pid", -1))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        pass
    st = _proc_stat(pid)
    if st is None:
        return False  # no /proc: the process exists, trust it
    return st[0] in ("Z", "X") or (owner.get("start") is not None and st[1] != owner["start"])


# --------------------------------------------------------------------------- results


@dataclass
class TrialRecord:
    """One trial of a study, as cnnkit reports it.

    Attributes:
        number: Optuna's trial number (never reused).
        round: 0 for the coarse round, 1 for the first zoom, ...
        state: ``COMPLETE``, ``FAIL``, ``RUNNING``, ``WAITING`` or ``PRUNED``.
        value: The objective (None unless complete).
        params: The hyperparameters on the user's scale.
        run_dir: The trial's run folder (None for a Python objective).
        seconds: Wall time of the trial.
        retry_of: The number of the failed trial whose parameters this one re-runs.
    """

    number: int
    round: int
    state: str
    value: float | None
    params: dict[str, Any]
    run_dir: Path | None = None
    seconds: float | None = None
    retry_of: int | None = None


@dataclass
class TuneResult:
    """What :func:`tune` returns.

    Attributes:
        study: Optuna study name.
        storage: The storage URL (``memory`` for an in-memory study).
        study_dir: Folder of the study: ``study.db``, ``trials.csv``, ``tune.png``, trial runs.
        metric: The objective's name.
        direction: ``maximize`` or ``minimize``.
        spaces: The space of each round (round 0 is the one given).
        trials: Every trial of the study, by number.
        plot: The PNG of the metric against each hyperparameter (None when not drawn).
        notes: What tune did besides training (failed trials re-queued, ...).
    """

    study: str
    storage: str
    study_dir: Path
    metric: str
    direction: str
    spaces: list[Space]
    trials: list[TrialRecord]
    plot: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> list[TrialRecord]:
        """The finished trials, best first."""
        done = [t for t in self.trials if t.state == "COMPLETE" and t.value is not None]
        return sorted(done, key=lambda t: (-t.value if self.maximize else t.value, t.number))  # type: ignore[operator]

    @property
    def maximize(self) -> bool:
        """Whether a larger metric is better."""
        return self.direction == "maximize"

    @property
    def best(self) -> TrialRecord | None:
        """The best finished trial."""
        done = self.complete
        return done[0] if done else None

    def table(self, n: int = 5) -> str:
        """The ``n`` best trials as a text table (rank, trial, round, metric, hyperparameters)."""
        names = [d.name for d in self.spaces[0]] if self.spaces else []
        rows = [["rank", "trial", "round", self.metric, *names, "seconds", "run"]]
        for i, t in enumerate(self.complete[:n], 1):
            dims = self.spaces[min(t.round, len(self.spaces) - 1)] if self.spaces else Space()
            vals = [_fmt(dims.dims.get(k), t.params.get(k)) for k in names]
            run = "" if t.run_dir is None else str(t.run_dir)
            secs = "" if t.seconds is None else f"{t.seconds:.1f}"
            rows.append(
                [str(i), str(t.number), str(t.round + 1), f"{t.value:.4g}", *vals, secs, run]
            )
        widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
        lines = []
        for r in rows:
            cells = [c.rjust(w) if j < len(r) - 1 else c for j, (c, w) in enumerate(zip(r, widths))]
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)


def _fmt(d: Dim | None, v: Any) -> str:
    if v is None:
        return "-"
    if d is not None and d.scale == "rlog" and isinstance(v, float):
        return f"{v:.5f}"
    if isinstance(v, float):
        return f"{v:.3g}"
    return _g(v)


# --------------------------------------------------------------------------- tune


def _check_metric(metric: str) -> str:
    if metric in METRICS:
        return METRICS[metric]
    if metric.startswith("test_"):
        raise CnnkitError(
            f"metric={metric} would tune on the test set, whose estimate must stay unbiased; "
            "tune on the dev set: metric=dev_accuracy or metric=dev_loss."
        )
    hits = did_you_mean(metric, METRICS)
    hint = f"did you mean {hits[0]}?" if hits else "use dev_accuracy or dev_loss."
    raise CnnkitError(f"unknown metric {metric!r}: {hint}")


def _check_settings(space: Space, settings: dict[str, Any]) -> None:
    """Every name is a training setting and every end of every range is a valid value."""
    from cnnkit.train.classify import check
    from cnnkit.train.config import TrainConfig

    known = TrainConfig.keys()
    for k in [*space.names, *settings]:
        if k in _CONTROLLED:
            raise CnnkitError(
                f"{k}= is set by tune (each trial's run is named trial_NNNN); "
                "name the study with study=NAME."
            )
        if k not in known and not k.startswith("model."):  # model.KEY: built below
            hits = did_you_mean(k, known)
            hint = f"did you mean {hits[0]}=?" if hits else "see `cnnkit train --help`."
            raise CnnkitError(f"unknown setting {k!r} for tune: {hint}")
    base = {**settings, "verbose": 0}
    cfg = TrainConfig.from_dict(base, source="tune settings")
    for d in space:
        ends = list(d.choices or ()) if d.is_choice else [d.low, d.high]
        for v in ends:
            if d.scale in ("int", "intlog") and isinstance(v, float):
                v = int(v)
            try:
                end = TrainConfig.from_dict({**base, d.name: v})
                if d.name.startswith("model."):  # the model's option: build it at this end
                    check(end)
            except CnnkitError as e:
                raise CnnkitError(
                    f"{d.to_text()} reaches {d.name}={_g(v)}, which training refuses: {e}"
                ) from None
    check(cfg)  # model name, data path: before any study is opened


def tune(
    space: Space | Mapping[str, Any] | str | Sequence[str],
    trials: int = 20,
    *,
    metric: str = "dev_accuracy",
    rounds: int = 1,
    zoom: bool = False,
    top: float = 0.25,
    study: str = "tune",
    storage: str | None = None,
    seed: int = 0,
    project: str = "runs",
    plot: bool = True,
    objective: Callable[[dict[str, Any]], float] | None = None,
    direction: str | None = None,
    heartbeat: int = 60,
    grace: int = 180,
    verbose: int = 1,
    **settings: Any,
) -> TuneResult:
    """Random search (coarse to fine) of training settings, in a persistent Optuna study.

    Each trial draws every hyperparameter of ``space`` with a seeded random sampler,
    trains with :func:`cnnkit.train.classify.train` (the fixed ``settings`` plus the
    drawn ones; its run folder is ``<study_dir>/classify/trial_NNNN``) and reports the
    dev metric of the best weights. Calling again with the same arguments resumes the
    study: a round is complete when it has ``trials`` finished trials.

    Args:
        space: The ranges (:class:`Space`, a mapping of specs, or the grammar's text).
        trials: Finished trials wanted in each round.
        metric: ``dev_accuracy`` (maximized) or ``dev_loss`` (minimized); with
            ``objective=``, just the name of what it returns.
        rounds: Rounds: the first is coarse, each later one zooms in (see :meth:`Space.zoom`).
        zoom: Shorthand for ``rounds=2`` (when ``rounds`` is 1).
        top: Fraction of a round's best trials that sets the next round's ranges.
        study: Study name; also its folder ``<project>/tune/<study>``.
        storage: Any Optuna database URL (``sqlite:///...``, ``postgresql://...``) so
            several machines can share the study; ``memory`` keeps it in this process.
            None: ``sqlite:///<project>/tune/<study>/study.db``.
        seed: Seeds the sampler (trial k's draws depend on seed and k only) and training.
        project: Root folder of runs.
        plot: Write ``tune.png`` (the metric against each hyperparameter).
        objective: Instead of training, call ``objective(values) -> float`` (e.g. a quick
            function of the hyperparameters); no run folders are made.
        direction: ``maximize`` or ``minimize`` for ``objective`` (None: from ``metric``).
        heartbeat: Seconds between a running trial's heartbeats in the database.
        grace: Seconds without a heartbeat after which another machine's trial is failed.
        verbose: 0 silent, 1 one line per trial (the trials' own progress bars are off).
        **settings: Fixed training settings (``model``, ``data``, ``epochs``, ``batch``...),
            any :class:`~cnnkit.train.TrainConfig` key but ``name`` and ``exist_ok``.

    Returns:
        A :class:`TuneResult`.

    Raises:
        CnnkitError: On a bad range, setting, metric or storage, before any training; or
            when the study's stored settings differ from these.
    """
    space = as_space(space)
    if len(space) == 0:
        raise CnnkitError("nothing to search: give at least one range, e.g. lr=1e-4..1:log.")
    for key, v, lo in (("trials", trials, 1), ("rounds", rounds, 1), ("heartbeat", heartbeat, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise CnnkitError(f"{key} must be a whole number >= {lo}, got {v!r}; e.g. {key}=12.")
    if isinstance(grace, bool) or not isinstance(grace, int) or grace <= heartbeat:
        raise CnnkitError(f"grace must be a whole number of seconds > heartbeat, got {grace!r}.")
    if isinstance(top, bool) or not isinstance(top, (int, float)) or not 0 < top <= 1:
        raise CnnkitError(f"top must be a fraction in (0, 1], got {top!r}; e.g. top=0.25.")
    if (
        not isinstance(study, str)
        or not study
        or any(c in study for c in "/\\")
        or study in (".", "..")
    ):
        raise CnnkitError(f"study must be a plain name, got {study!r}; e.g. study=lenet_lr.")
    if zoom and rounds == 1:
        rounds = 2
    if objective is None:
        direction = _check_metric(metric)
        if "seed" not in settings:
            settings["seed"] = seed
        _check_settings(space, settings)
    elif direction not in ("maximize", "minimize"):
        direction = METRICS.get(metric) if direction is None else None
        if direction is None:
            raise CnnkitError("with objective=, pass direction='maximize' or 'minimize'.")
    maximize = direction == "maximize"

    optuna = _optuna()
    study_dir = Path(project) / "tune" / study
    url = storage
    if url is None:
        study_dir.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{(study_dir / 'study.db').resolve()}"
    notes: list[str] = []

    def say(line: str) -> None:
        if verbose:
            print(line, flush=True)

    def on_stale(st: Any, ft: Any) -> None:  # Optuna's heartbeat check failed a trial
        _requeue(st, ft, study_dir, notes, say, "it missed its heartbeats")

    with _quiet_optuna(optuna):
        rdb = _storage(optuna, url, heartbeat, grace, on_stale)
        identity = json.dumps(
            {
                "metric": metric,
                "direction": direction,
                "space": str(space),
                "settings": {
                    k: _g(v) if not isinstance(v, list) else v for k, v in sorted(settings.items())
                },
                "seed": seed,
            },
            sort_keys=True,
            default=str,
        )
        sampler = _sampler(seed)
        try:
            st = optuna.load_study(study_name=study, storage=rdb, sampler=sampler)
        except KeyError:
            st = optuna.create_study(
                study_name=study,
                storage=rdb,
                sampler=sampler,
                direction=direction,
                load_if_exists=True,
            )
        stored = st.user_attrs.get("cnnkit")
        if stored is None:
            st.set_user_attr("cnnkit", identity)
            st.set_user_attr("space_round_0", space.to_list())
        elif stored != identity:
            old, new = json.loads(stored), json.loads(identity)
            what = next(k for k in new if old.get(k) != new[k])
            raise CnnkitError(
                f"study {study!r} in {url} was started with another {what} "
                f"({_short(old.get(what))}, now {_short(new[what])}); repeat its settings to "
                "resume it, or pass study=NEW_NAME for a new study."
            )
        if verbose:
            n_done = sum(t.state.name == "COMPLETE" for t in st.get_trials(deepcopy=False))
            verb = "resuming" if n_done else "starting"
            say(
                f"{verb} study {study!r} ({url}): {trials} trials x {rounds} round(s), "
                f"{direction} {metric}; {n_done} trials finished so far"
            )

        _fail_dead(optuna, st, study_dir, notes, say)

        spaces: list[Space] = []
        for r in range(rounds):
            space_r = _round_space(st, r, space, trials, maximize, top, notes, say)
            spaces.append(space_r)
            while True:
                done, pending = _count(optuna, st, r)
                if done >= trials:
                    break
                if done + pending >= trials:  # other workers are running the rest
                    _fail_dead(optuna, st, study_dir, notes, say)
                    optuna.storages.fail_stale_trials(st)
                    time.sleep(min(heartbeat, 5))
                    continue
                current: dict[str, Any] = {}
                fn = _objective(
                    st, r, spaces, space, study_dir, metric, settings, objective, current, say
                )
                try:
                    st.optimize(fn, n_trials=1, catch=())
                except KeyboardInterrupt:
                    if "number" in current:  # the interrupted draw is tried again next time
                        ft = st.get_trials(deepcopy=False)[current["number"]]
                        _requeue(st, ft, study_dir, notes, say, "it was interrupted")
                    raise
        n_rounds = max(rounds, _max_round(st) + 1)
        recorded = [st.user_attrs.get(f"space_round_{i}") for i in range(n_rounds)]
        records = _records(st, [Space.from_list(x) if x else space for x in recorded])
        result = TuneResult(
            study=study,
            storage=url,
            study_dir=study_dir,
            metric=metric,
            direction=direction,
            spaces=spaces,
            trials=records,
            notes=notes,
        )
    if storage != "memory":
        study_dir.mkdir(parents=True, exist_ok=True)
        _write_csv(study_dir / "trials.csv", result)
        if plot and result.complete:
            result.plot = plot_study(result, study_dir / "tune.png")
    return result


def _short(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _max_round(st: Any) -> int:
    return max(
        (int(t.user_attrs.get("round", 0)) for t in st.get_trials(deepcopy=False)), default=0
    )


def _count(optuna: Any, st: Any, r: int) -> tuple[int, int]:
    """``(finished, running or queued)`` trials of round ``r``."""
    S = optuna.trial.TrialState
    done = pending = 0
    for t in st.get_trials(deepcopy=False):
        if int(t.user_attrs.get("round", 0)) != r and not (
            t.state == S.WAITING and "round" not in t.user_attrs
        ):
            continue
        if t.state == S.COMPLETE:
            done += 1
        elif t.state in (S.RUNNING, S.WAITING):
            pending += 1
    return done, pending


def _round_space(
    st: Any,
    r: int,
    space: Space,
    trials: int,
    maximize: bool,
    top: float,
    notes: list[str],
    say: Callable[..., Any],
) -> Space:
    """Round ``r``'s space: the study's record of it, or (first time) the zoom of round r-1."""
    key = f"space_round_{r}"
    if r == 0:
        return space
    if key in st.user_attrs:
        return Space.from_list(st.user_attrs[key])
    prev = Space.from_list(st.user_attrs[f"space_round_{r - 1}"])
    done = [
        t
        for t in st.get_trials(deepcopy=False)
        if t.state.name == "COMPLETE" and int(t.user_attrs.get("round", 0)) == r - 1
    ]
    done = sorted(done, key=lambda t: t.number)[:trials]  # the same ones on every worker
    finer = prev.zoom([(prev.values(t.params), t.value) for t in done], maximize=maximize, top=top)
    st.set_user_attr(key, finer.to_list())
    k = min(len(done), max(2, math.ceil(top * len(done))))
    shown = " ".join(
        d.to_text()
        if d.is_choice
        else f"{d.name}={_fmt(d, d.low)}..{_fmt(d, d.high)}"
        + ("" if d.scale == "linear" else f":{d.scale}")
        for d in finer
    )
    line = f"round {r + 1}: zoomed in on the best {k} of {len(done)} trials: {shown}"
    notes.append(line)
    say(line)
    return finer


def _fail_dead(
    optuna: Any, st: Any, study_dir: Path, notes: list[str], say: Callable[..., Any]
) -> None:
    """Mark FAIL (and queue again) the trials left RUNNING by a dead process of this machine."""
    S = optuna.trial.TrialState
    for ft in st.get_trials(deepcopy=False, states=(S.RUNNING,)):
        if _dead_here(ft):
            try:
                st.tell(ft.number, state=S.FAIL)  # raises when already finished
            except Exception:  # another worker finished it first
                continue
            _requeue(st, ft, study_dir, notes, say, "its process no longer exists")


def _requeue(
    st: Any, ft: Any, study_dir: Path, notes: list[str], say: Callable[..., Any], why: str
) -> None:
    """Queue a failed trial's parameters again and delete its partial run folder."""
    attrs = {"round": int(ft.user_attrs.get("round", 0)), "retry_of": ft.number}
    if ft.params:
        st.enqueue_trial(dict(ft.params), user_attrs=attrs)
    run = ft.user_attrs.get("run_dir")
    if run and Path(run).is_dir() and Path(run).resolve().is_relative_to(study_dir.resolve()):
        shutil.rmtree(run, ignore_errors=True)
    again = "its draw is queued again" if ft.params else "it had drawn nothing yet"
    line = f"trial {ft.number} did not finish ({why}): marked FAIL, not counted; {again}"
    notes.append(line)
    say(line)


def _objective(
    st: Any,
    r: int,
    spaces: list[Space],
    space0: Space,
    study_dir: Path,
    metric: str,
    settings: dict[str, Any],
    objective: Callable[[dict[str, Any]], float] | None,
    current: dict[str, Any],
    say: Callable[..., Any],
) -> Callable[[Any], float]:
    def fn(trial: Any) -> float:
        current["number"] = trial.number
        rr = int(trial.user_attrs.get("round", r))  # a re-queued trial keeps its round
        trial.set_user_attr("round", rr)
        trial.set_user_attr("owner", _owner())
        sp = (
            spaces[rr]
            if rr < len(spaces)
            else Space.from_list(st.user_attrs.get(f"space_round_{rr}", space0.to_list()))
        )
        values = sp.suggest(trial)
        trial.set_user_attr("values", {k: v for k, v in values.items()})
        t0 = time.perf_counter()
        if objective is not None:
            value = float(objective(dict(values)))
        else:
            value = _train_trial(trial, values, study_dir, metric, settings)
        secs = time.perf_counter() - t0
        trial.set_user_attr("seconds", round(secs, 3))
        shown = " ".join(f"{k}={_fmt(sp[k], v)}" for k, v in values.items())
        retry = trial.user_attrs.get("retry_of")
        again = f" (again for trial {retry})" if retry is not None else ""
        say(
            f"trial {trial.number:>3} [round {rr + 1}]{again} {shown} -> {metric} "
            f"{value:.4g} ({secs:.1f} s)"
        )
        return value

    return fn


def _train_trial(
    trial: Any, values: dict[str, Any], study_dir: Path, metric: str, settings: dict[str, Any]
) -> float:
    from cnnkit.train.classify import train

    name = f"trial_{trial.number:04d}"
    run = study_dir / "classify" / name
    if run.exists():  # numbers are never reused: only a dead attempt of this trial left it
        shutil.rmtree(run)
    trial.set_user_attr("run_dir", str(run))
    kw = {**settings, **values}
    kw.setdefault("monitor", metric)
    kw.update(project=str(study_dir), name=name, exist_ok=True)
    kw.setdefault("verbose", 0)
    result = train(**kw)
    split, _, key = metric.partition("_")
    if split not in result.scores:
        raise CnnkitError(
            f"metric={metric} needs a {split} split, and this data has none; set dev=0.1."
        )
    value = float(result.scores[split][key])
    if not math.isfinite(value):  # a diverged run: the worst possible loss
        trial.set_user_attr("diverged", True)
        value = math.inf
    return value


def _records(st: Any, spaces: list[Space]) -> list[TrialRecord]:
    out = []
    for t in st.get_trials(deepcopy=False):
        r = int(t.user_attrs.get("round", 0))
        sp = spaces[min(r, len(spaces) - 1)]
        vals = t.user_attrs.get("values") or sp.values(t.params)
        run = t.user_attrs.get("run_dir")
        out.append(
            TrialRecord(
                number=t.number,
                round=r,
                state=t.state.name,
                value=t.value if t.state.name == "COMPLETE" else None,
                params=dict(vals),
                run_dir=Path(run) if run else None,
                seconds=t.user_attrs.get("seconds"),
                retry_of=t.user_attrs.get("retry_of"),
            )
        )
    return out


def _write_csv(path: Path, result: TuneResult) -> None:
    from cnnkit.train.checkpoint import atomic_write

    names = result.spaces[0].names if result.spaces else []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["trial", "round", "state", result.metric, *names, "seconds", "retry_of", "run"])
    for t in result.trials:
        w.writerow(
            [
                t.number,
                t.round + 1,
                t.state,
                "" if t.value is None else repr(t.value),
                *("" if t.params.get(k) is None else t.params[k] for k in names),
                "" if t.seconds is None else t.seconds,
                "" if t.retry_of is None else t.retry_of,
                "" if t.run_dir is None else t.run_dir,
            ]
        )
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def plot_study(result: TuneResult, path: str | os.PathLike) -> Path:
    """Draw the metric against each hyperparameter (log axes where the scale is log).

    An rlog beta is drawn as ``1 - beta`` on a log axis turned around, so beta grows to
    the right. Rounds get their own marker; the best trial is a star.

    Args:
        result: A study's result.
        path: The PNG to write.

    Returns:
        The path written.
    """
    from matplotlib.figure import Figure

    dims = list(result.spaces[0]) if result.spaces else []
    done = [t for t in result.complete if t.value is not None and math.isfinite(t.value)]
    n = max(len(dims), 1)
    fig = Figure(figsize=(3.6 * n, 3.3), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    best = result.best
    markers = "os^Dv"
    for ax, d in zip(axes, dims):

        def x_of(v: Any, d: Dim = d) -> Any:
            if d.is_choice:
                return list(d.choices or ()).index(v) if v in (d.choices or ()) else float("nan")
            return 1.0 - v if d.scale == "rlog" else v

        rounds = sorted({t.round for t in done})
        for r in rounds:
            pts = [
                (x_of(t.params[d.name]), t.value)
                for t in done
                if t.round == r and d.name in t.params
            ]
            if pts:
                xs, ys = zip(*pts)
                ax.scatter(
                    xs,
                    ys,
                    s=22,
                    marker=markers[r % len(markers)],
                    alpha=0.75,
                    label=f"round {r + 1}",
                )
        if best is not None and d.name in best.params:
            ax.scatter(
                [x_of(best.params[d.name])],
                [best.value],
                s=160,
                marker="*",
                color="crimson",
                zorder=5,
                label=f"best (trial {best.number})",
            )
        if d.is_choice:
            ax.set_xticks(range(len(d.choices or ())), [_g(c) for c in d.choices or ()])
            ax.set_xlabel(d.name)
        elif d.scale in ("log", "intlog"):
            from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

            assert d.low is not None and d.high is not None
            ax.set_xscale("log")
            ax.set_xlim(d.low / 1.25, d.high * 1.25)
            # labelled ticks only: powers of 2 for whole numbers, else decades (or the
            # ends and their geometric middle inside one decade); no crowded minor labels
            if d.scale == "intlog":
                k0, k1 = math.ceil(math.log2(d.low)), math.floor(math.log2(d.high))
                ticks = [2.0**k for k in range(k0, k1 + 1)]
                ticks = ticks[:: max(1, math.ceil(len(ticks) / 6))]
            else:
                k0, k1 = math.ceil(math.log10(d.low)), math.floor(math.log10(d.high))
                ticks = [10.0**k for k in range(k0, k1 + 1)]
            if len(ticks) < 2:
                ticks = [d.low, math.sqrt(d.low * d.high), d.high]
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_major_formatter(
                FuncFormatter(lambda x, _: str(int(x)) if x >= 1 and x == int(x) else f"{x:.3g}")
            )
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(f"{d.name} (log scale)")
        elif d.scale == "rlog":  # drawn at 1 - beta on a log axis, labelled with beta
            from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

            assert d.low is not None and d.high is not None
            ax.set_xscale("log")
            ax.set_xlim((1 - d.low) * 1.25, (1 - d.high) / 1.25)  # beta grows to the right
            k0 = math.floor(math.log10(max(1 - d.high, 1e-12)))
            k1 = math.ceil(math.log10(max(1 - d.low, 1e-12)))
            ax.xaxis.set_major_locator(FixedLocator([10.0**k for k in range(k0, k1 + 1)]))
            ax.xaxis.set_major_formatter(
                FuncFormatter(lambda x, _: f"{1 - x:.{max(0, -math.floor(math.log10(x)))}f}")
            )
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(f"{d.name} (log scale of 1 - {d.name})")
        else:
            if d.scale == "int":  # whole numbers: no 1.5 or 2.5 ticks
                from matplotlib.ticker import MaxNLocator

                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel(d.name)
        ax.set_ylabel(result.metric)
        ax.grid(True, alpha=0.3)
    if dims and (len({t.round for t in done}) > 1 or best is not None):
        axes[0].legend(fontsize=7)
    fig.suptitle(f"study {result.study}: {result.direction} {result.metric} ({len(done)} trials)")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


# --------------------------------------------------------------------------- lr_find


@dataclass
class LRFindResult:
    """What :func:`lr_find` returns.

    Attributes:
        lrs: Learning rate of each step.
        losses: The smoothed loss (bias-corrected exponentially weighted average).
        raw_losses: Each step's mini-batch loss.
        lr_steep: Where the smoothed loss falls fastest (per decade of lr), at or below
            ``suggestion``.
        lr_min_loss: Where the smoothed loss is lowest.
        suggestion: ``lr_min_loss / 10``: a safe learning rate for training.
        range: ``(lr_steep, suggestion)``: the rates worth trying.
        stopped: Why the test ended (``diverged``, ``not finite`` or ``lr_max``).
        plot: The PNG written, if any.
    """

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    lr_steep: float
    lr_min_loss: float
    suggestion: float
    range: tuple[float, float]
    stopped: str
    plot: Path | None = None

    def to_text(self) -> str:
        """What the test found, in three lines."""
        lo, hi = self.range
        why = {"diverged": "the loss passed 4x its best", "not finite": "the loss was not finite"}
        end = why.get(self.stopped, "lr_max reached")
        return (
            f"lr range test: {len(self.lrs)} steps, lr {self.lrs[0]:.2g} -> {self.lrs[-1]:.3g} "
            f"(stopped: {end})\n"
            f"lowest smoothed loss {min(self.losses):.4g} at lr {self.lr_min_loss:.3g}; "
            f"steepest descent at lr {self.lr_steep:.3g}\n"
            f"suggested lr {self.suggestion:.3g} (min-loss lr / 10); range {lo:.3g} .. {hi:.3g}"
        )


def _lr_batches(data: Any, batch: int, gen: Any) -> Iterator[tuple[Any, Any]]:
    """Shuffled mini-batches without end (no augmentation), from a seeded generator."""
    import torch

    from cnnkit.data.datasets import ImageSet

    if isinstance(data, ImageSet):
        n = len(data)
        while True:
            order = torch.randperm(n, generator=gen)
            for b in range(0, n, batch):
                idx = order[b : b + batch]
                yield data.preprocess.normalize(data.images[idx]), data.labels[idx]
    from torch.utils.data import DataLoader

    loader = DataLoader(data, batch_size=batch, shuffle=True, generator=gen, num_workers=0)
    while True:
        yield from loader


def check_lr_range(lr_min: Any, lr_max: Any, steps: Any) -> tuple[float, float]:
    """Check the range test's ``lr_min``, ``lr_max`` and ``steps`` (cheap; before any data is read).

    Args:
        lr_min: First learning rate.
        lr_max: Last learning rate.
        steps: Number of steps.

    Returns:
        ``(lr_min, lr_max)`` as floats.

    Raises:
        CnnkitError: On a value the test cannot use.
    """

    def positive(key: str, v: Any) -> float:
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float))
            or not (math.isfinite(v) and v > 0)
        ):
            raise CnnkitError(f"{key} must be a positive number, got {v!r}; e.g. {key}=1e-7.")
        return float(v)

    lo, hi = positive("lr_min", lr_min), positive("lr_max", lr_max)
    if lo >= hi:
        raise CnnkitError(
            f"lr_min ({_g(lo)}) must be below lr_max ({_g(hi)}); e.g. lr_min=1e-7 lr_max=10."
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 5:
        raise CnnkitError(f"steps must be a whole number >= 5, got {steps!r}; e.g. steps=100.")
    return lo, hi


def lr_find(
    model: Any,
    train_data: Any,
    *,
    lr_min: float = 1e-7,
    lr_max: float = 10.0,
    steps: int = 100,
    batch: int | None = None,
    optimizer: Any = None,
    beta: float = 0.9,
    diverge: float = 4.0,
    seed: int = 0,
    task: Any = None,
    config: Any = None,
    device: str = "cpu",
    plot: str | os.PathLike | None = None,
    **settings: Any,
) -> LRFindResult:
    """The exponential learning-rate range test (Smith 2017; fastai's ``lr_find``).

    The learning rate grows geometrically from ``lr_min`` to ``lr_max`` over ``steps``
    mini-batch steps; the loss is smoothed with the course's bias-corrected exponentially
    weighted average (``v = beta*v + (1-beta)*loss``, ``v / (1 - beta**t)``), and the test
    stops once the smoothed loss exceeds ``diverge`` times its best. Afterwards the model
    (parameters, buffers, gradients, train/eval mode), the optimizer and the random
    number generators are exactly as before.

    Args:
        model: Any ``nn.Module`` producing logits.
        train_data: An :class:`~cnnkit.data.ImageSet` or any Dataset of ``(x, y)``.
        lr_min: First learning rate.
        lr_max: Last learning rate.
        steps: Steps from ``lr_min`` to ``lr_max``.
        batch: Mini-batch size (None: the config's ``batch``).
        optimizer: A ``torch.optim`` optimizer over the model, or an optimizer name
            (None: the config's, as :func:`cnnkit.train.build_optimizer` builds it; Adam
            by default).
        beta: Smoothing of the loss curve: 0.9 averages about the last 10 steps, about
            one decade of lr at 100 steps over 8 decades (fastai's 0.98 averages half the
            test and shifts the minimum to larger rates).
        diverge: Stop when the smoothed loss passes this multiple of its best.
        seed: Order of the mini-batches.
        task: Loss (default classification with the config's ``loss`` and ``label_smoothing``).
        config: A :class:`~cnnkit.train.TrainConfig` (default: cnnkit's recipe).
        device: Where to run.
        plot: Write the curve to this PNG.
        **settings: Single :class:`~cnnkit.train.TrainConfig` keys, e.g. ``optimizer="sgd"``.

    Returns:
        A :class:`LRFindResult` with the curve and the suggested learning rates.
    """
    import torch

    from cnnkit.train.config import TrainConfig
    from cnnkit.train.loop import build_optimizer
    from cnnkit.train.tasks import Classification

    lr_min, lr_max = check_lr_range(lr_min, lr_max, steps)
    if not (isinstance(beta, (int, float)) and 0 <= beta < 1):
        raise CnnkitError(f"beta must be in [0, 1), got {beta!r}; e.g. beta=0.9.")
    if not (isinstance(diverge, (int, float)) and diverge > 1):
        raise CnnkitError(f"diverge must be > 1, got {diverge!r}; e.g. diverge=4.")
    if isinstance(optimizer, str):  # a name, as in TrainConfig
        settings["optimizer"], optimizer = optimizer, None
    base = (config or TrainConfig()).to_dict()
    base.update(settings)
    cfg = TrainConfig.from_dict(base, source="lr_find()")
    m = cfg.batch if batch is None else batch
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise CnnkitError(f"batch must be a positive whole number, got {m!r}; e.g. batch=64.")
    if len(train_data) == 0:
        raise CnnkitError("the training set is empty.")
    task = task or Classification(cfg.loss, cfg.label_smoothing)
    model.to(device)
    opt = optimizer if optimizer is not None else build_optimizer(model, cfg)

    # everything the test changes, to put back exactly
    params = list(model.parameters())
    saved_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
    saved_grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
    saved_opt = copy.deepcopy(opt.state_dict())
    was_training = model.training
    rng = (torch.get_rng_state(), np.random.get_state(), random.getstate())

    lrs: list[float] = []
    smooth: list[float] = []
    raw: list[float] = []
    stopped = "lr_max"
    mult = (lr_max / lr_min) ** (1.0 / (steps - 1))
    try:
        gen = torch.Generator().manual_seed(seed)
        model.train()
        avg, best = 0.0, math.inf
        batches = _lr_batches(train_data, m, gen)
        for i in range(steps):
            x, y = next(batches)
            x, y = x.to(device), y.to(device)
            lr = lr_min * mult**i
            for g in opt.param_groups:
                g["lr"] = lr
            loss = task.loss(model(x), y)
            value = float(loss.detach())
            if not math.isfinite(value):
                stopped = "not finite"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            avg = beta * avg + (1 - beta) * value
            s = avg / (1 - beta ** (i + 1))
            lrs.append(lr)
            raw.append(value)
            smooth.append(s)
            best = min(best, s)
            if i > 0 and s > diverge * best:
                stopped = "diverged"
                break
    finally:
        model.load_state_dict(saved_model)
        for p, g in zip(params, saved_grads):
            p.grad = g
        opt.load_state_dict(saved_opt)
        model.train(was_training)
        torch.set_rng_state(rng[0])
        np.random.set_state(rng[1])
        random.setstate(rng[2])
    if len(smooth) < 3:
        raise CnnkitError(
            f"the loss diverged within {len(smooth)} steps of the range test; lower lr_min "
            f"(now {_g(lr_min)})."
        )
    y = np.asarray(smooth)
    i_min = int(np.argmin(y))
    lr_min_loss = lrs[i_min]
    suggestion = lr_min_loss / 10
    # steepest descent per decade of lr, among the rates up to the suggestion (the first
    # tenth of the curve is skipped: the average has barely started there)
    skip = max(1, len(y) // 10)
    end = int(np.searchsorted(lrs, suggestion, side="right"))
    if end - skip >= 3:
        slope = np.gradient(y[:end], np.log10(lrs[:end]))
        lr_steep = lrs[skip + int(np.argmin(slope[skip:]))]
    else:
        lr_steep = suggestion
    res = LRFindResult(
        lrs=lrs,
        losses=smooth,
        raw_losses=raw,
        lr_steep=lr_steep,
        lr_min_loss=lr_min_loss,
        suggestion=suggestion,
        range=(lr_steep, suggestion),
        stopped=stopped,
    )
    if plot is not None:
        res.plot = plot_lr_find(res, plot)
    return res


def plot_lr_find(res: LRFindResult, path: str | os.PathLike) -> Path:
    """Draw the loss against the learning rate (log axis) with the suggestion marked.

    Args:
        res: The range test's result.
        path: The PNG to write.

    Returns:
        The path written.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot(res.lrs, res.raw_losses, color="0.75", lw=0.8, label="mini-batch loss")
    ax.plot(res.lrs, res.losses, color="C0", lw=1.8, label="smoothed loss")
    lo, hi = res.range
    ax.axvspan(lo, hi, color="C2", alpha=0.15, label=f"suggested range {lo:.2g}..{hi:.2g}")
    ax.axvline(
        res.suggestion, color="C2", ls="--", label=f"min-loss lr / 10 = {res.suggestion:.2g}"
    )
    ax.axvline(res.lr_steep, color="C3", ls=":", label=f"steepest descent = {res.lr_steep:.2g}")
    ax.set_xscale("log")
    top = max(res.losses[0], min(res.losses)) * 1.6
    ax.set_ylim(min(min(res.losses), min(res.raw_losses)) * 0.9, top)
    ax.set_xlabel("learning rate alpha (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title("learning-rate range test")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
