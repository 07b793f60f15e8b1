"""``cnnkit diagnose`` and ``cnnkit select``: parse, validate, call ``cnnkit.strategy``, print."""

from __future__ import annotations

from collections.abc import Sequence

from cnnkit.cli.args import check_keys, split_args
from cnnkit.errors import CnnkitError

DIAGNOSE_HELP = """\
usage: cnnkit diagnose human=1% train=8% [train_dev=9%] dev=10% [test=10%] [human_dev=...]
       cnnkit diagnose run=runs/classify/NAME [human=0.5%]

Read the course's ladder of errors: avoidable bias = train - human, variance =
train_dev - train (dev - train without a training-dev set), data mismatch = dev -
train_dev, overfitting to the dev set = test - dev. The largest gap is the problem to
work on, with the course's remedies. With run=, the errors are measured on the run's
own splits (its best weights; train with train_dev=0.1 to get a training-dev split).

Errors are fractions (0.08) or percentages (8 or 8%): a value with % or above 1 makes
every value percent, otherwise all are fractions; unit=percent or unit=fraction says so
outright. human= may list several levels (human=3%,1%,0.7%,0.5%): the best is the
proxy for Bayes error.

settings: human, train, train_dev, dev, test, human_dev (human-level error on the
dev/test data), unit=auto, run, batch=256 (with run=)
"""

SELECT_HELP = """\
usage: cnnkit select runs=runs/classify/a,runs/classify/b optimize=dev_acc [latency_ms=100]
                     [params=5e6] [METRIC=LIMIT ...]
       cnnkit select runs/classify/a runs/classify/b optimize=dev_loss latency_ms=5

Pick one optimizing metric and make every other metric satisficing: each run is
measured (the metric on the run's own split with its best weights, parameters
counted, batch-1 CPU latency on one thread timed as the median of repeated passes
after warm-up), and the best run that meets every limit is picked. Metrics ending in
acc/accuracy/f1 are maximized, loss/error and costs minimized; a limit is an upper
bound for a minimized metric (latency_ms=100) and a lower bound for a maximized one
(dev_acc=95%).

metrics: SPLIT_MEASURE with SPLIT train, train_dev, dev, test and MEASURE acc, error,
loss, f1 (e.g. dev_acc, test_error); latency_ms, params, macs
settings: runs, optimize=dev_acc, repeats=30 (timed passes), threads=1 (while timing),
batch=256
"""

_ERROR_KEYS = ("human", "train", "train_dev", "dev", "test", "human_dev")


def diagnose(argv: Sequence[str]) -> int:
    """``cnnkit diagnose human=1% train=8% dev=10%`` or ``cnnkit diagnose run=RUN human=0.5%``."""
    pos, opts, wants_help = split_args(argv)
    if wants_help:
        print(DIAGNOSE_HELP, end="")
        return 0
    check_keys(opts, [*_ERROR_KEYS, "unit", "run", "batch"], "diagnose")
    if pos:
        raise CnnkitError(
            f"`cnnkit diagnose` takes key=value settings, got {' '.join(pos)!r}; "
            "e.g. human=1% train=8% dev=10%."
        )
    for key in _ERROR_KEYS:
        if key in opts and opts[key] in (None, ""):
            raise CnnkitError(f"{key}= has no value; e.g. {key}=8% or {key}=0.08.")
    unit = str(opts.get("unit", "auto"))
    from cnnkit.strategy.diagnosis import diagnose as run_diagnose
    from cnnkit.strategy.diagnosis import diagnose_run

    if "run" in opts:
        measured = [k for k in ("train", "train_dev", "dev", "test") if k in opts]
        if measured:
            raise CnnkitError(
                f"with run= the errors are measured, so drop {', '.join(measured)}= "
                "(or drop run= and give every error)."
            )
        batch = opts.get("batch", 256)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise CnnkitError(f"batch must be an integer >= 1, got {batch!r}; e.g. batch=256.")
        d = diagnose_run(
            str(opts["run"]),
            opts.get("human"),
            human_dev=opts.get("human_dev"),
            unit=unit,
            batch=batch,
        )
    else:
        if "batch" in opts:
            raise CnnkitError("batch= is for run=; drop it when giving the errors.")
        d = run_diagnose(**{k: opts.get(k) for k in _ERROR_KEYS}, unit=unit)
    print(d.table())
    return 0


def select(argv: Sequence[str]) -> int:
    """``cnnkit select runs=a,b optimize=dev_acc latency_ms=100 params=5e6``."""
    pos, opts, wants_help = split_args(argv)
    if wants_help:
        print(SELECT_HELP, end="")
        return 0
    from cnnkit.strategy.selection import NoRunSatisfiesError, measurable_metrics
    from cnnkit.strategy.selection import select as run_select

    settings_keys = ["runs", "optimize", "repeats", "threads", "batch"]
    check_keys(opts, [*settings_keys, *measurable_metrics()], "select")
    runs: list[str] = [p for p in str(opts.get("runs", "")).split(",") if p.strip()] + pos
    if "runs" in opts and not isinstance(opts["runs"], str):
        raise CnnkitError(
            f"runs={opts['runs']!r} must be run folders, e.g. runs=runs/classify/a,runs/classify/b."
        )
    if not runs:
        raise CnnkitError(
            "no runs to choose from; pass runs=runs/classify/a,runs/classify/b (or the folders)."
        )
    optimize = opts.get("optimize", "dev_accuracy")
    if not isinstance(optimize, str):
        raise CnnkitError(f"optimize={optimize!r} must be a metric name, e.g. optimize=dev_acc.")
    limits = {k: v for k, v in opts.items() if k not in settings_keys}
    settings = {}
    for key, default in (("repeats", 30), ("threads", 1), ("batch", 256)):
        v = opts.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise CnnkitError(f"{key} must be an integer >= 1, got {v!r}; e.g. {key}={default}.")
        settings[key] = v
    try:
        sel = run_select(runs, optimize, limits, **settings)
    except NoRunSatisfiesError as e:
        print(e.selection.table())
        raise
    print(sel.table())
    return 0
