"""``cnnkit tune KEY=LOW..HIGH:SCALE trials=N`` and ``cnnkit tune lr_find=true``: glue only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnkit.cli.args import check_keys, flag, read_cfg_file, split_args
from cnnkit.errors import CnnkitError

TUNE_HELP = """\
usage: cnnkit tune [model=lenet5 data=digits ...] KEY=LOW..HIGH[:SCALE] ... [trials=20]
                   [metric=dev_accuracy] [rounds=1 | zoom=true] [study=tune] [storage=URL]
       cnnkit tune lr_find=true [model=lenet5 data=digits ...] [lr_min=1e-7 lr_max=10 steps=100]

Random search, as the course recommends, of any training setting (`cnnkit train --help`).
Ranges:
  lr=1e-4..1:log           alpha = 10**r, r uniform in [-4, 0]
  beta2=0.9..0.999:rlog    1 - beta = 10**r, r uniform in [-3, -1]
  batch=16..128:int        whole numbers, uniform (intlog: log-uniform)
  l2=0..0.1                uniform (linear, the default scale)
  optimizer=adam|sgd       a choice (also optimizer=[adam, sgd])
  model.units=16..512:intlog  the model's own options (model=mlp: model.layers=1..4:int
                           model.units=..., model.dropout=0..0.5; help(cnnkit.models.create))
Any other KEY=VALUE is a fixed setting of every trial (epochs=1 batch=64 ...).

Each trial trains with the fixed settings plus its draws and leaves a run folder
runs/tune/STUDY/classify/trial_NNNN; the study is kept in runs/tune/STUDY/study.db
(SQLite), so the same command resumes it after a crash or Ctrl-C (a trial cut off is
marked FAIL and its draw queued again), and storage=postgresql://... or a shared
sqlite:/// file lets several machines work on one study. zoom=true (rounds=2) narrows
every range around the best `top` fraction of the trials and samples again. At the end:
the best trials, runs/tune/STUDY/trials.csv and tune.png (metric against each setting).

lr_find=true runs the learning-rate range test instead (Smith 2017): lr grows from lr_min
to lr_max over `steps` mini-batches until the loss passes 4x its best; the model is left
untouched; prints the suggested range and writes runs/tune/STUDY/lr_find.png and .csv.

settings: trials=20, metric=dev_accuracy (maximize) | dev_loss (minimize), rounds=1,
zoom=false, top=0.25, study=tune, storage=sqlite:///runs/tune/STUDY/study.db, seed=0,
project=runs, plot=true, show=5 (best trials listed), heartbeat=60, grace=180, verbose=1;
lr_find, lr_min=1e-7, lr_max=10, steps=100
"""

_TUNE_KEYS = [
    "trials",
    "metric",
    "rounds",
    "zoom",
    "top",
    "study",
    "storage",
    "plot",
    "show",
    "heartbeat",
    "grace",
    "cfg",
]
_LR_KEYS = ["lr_find", "lr_min", "lr_max", "steps"]


def _int(opts: dict[str, Any], key: str, default: int, low: int = 1) -> int:
    v = opts.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise CnnkitError(
            f"{key} must be a whole number >= {low}, got {v!r}; e.g. {key}={default}."
        )
    return v


def tune(argv: Sequence[str]) -> int:
    """``cnnkit tune KEY=LOW..HIGH:SCALE ... trials=N`` or ``cnnkit tune lr_find=true ...``."""
    pos, opts, wants_help = split_args(argv)
    if wants_help:
        print(TUNE_HELP, end="")
        return 0
    if pos:
        raise CnnkitError(
            f"`cnnkit tune` takes key=value settings, got {' '.join(pos)!r}; "
            "e.g. lr=1e-4..1:log trials=20."
        )
    from cnnkit.train.config import TrainConfig

    check_keys(opts, [*_TUNE_KEYS, *_LR_KEYS, *TrainConfig.keys()], "tune", prefixes=("model.",))
    settings: dict[str, Any] = read_cfg_file(opts.pop("cfg")) if "cfg" in opts else {}
    if flag(opts, "lr_find"):
        return _lr_find(opts, settings)
    for k in ("lr_min", "lr_max", "steps"):
        if k in opts:
            raise CnnkitError(f"{k}= belongs to the range test; add lr_find=true or drop {k}=.")
    opts.pop("lr_find", None)
    from cnnkit.strategy.search import Space, parse_dim
    from cnnkit.strategy.search import tune as run_tune

    own = {k: opts.pop(k) for k in list(opts) if k in _TUNE_KEYS}
    settings.update(opts)
    dims = []
    for k in list(settings):
        d = parse_dim(k, settings[k])
        if d is not None:
            dims.append(d)
            del settings[k]
    if not dims:
        raise CnnkitError(
            "nothing to search: give at least one range, e.g. `cnnkit tune lr=1e-4..1:log`."
        )
    zoom = flag(own, "zoom")
    plot = flag(own, "plot", True)
    show = _int(own, "show", 5)
    top = own.get("top", 0.25)
    seed = settings.pop("seed", 0)
    verbose = settings.pop("verbose", 1)
    project = settings.pop("project", "runs")
    res = run_tune(
        Space(dims),
        _int(own, "trials", 20),
        metric=str(own.get("metric", "dev_accuracy")),
        rounds=_int(own, "rounds", 1),
        zoom=zoom,
        top=top,
        study=str(own.get("study", "tune")),
        storage=None if own.get("storage") is None else str(own["storage"]),
        seed=seed,
        project=str(project),
        plot=plot,
        heartbeat=_int(own, "heartbeat", 60),
        grace=_int(own, "grace", 180),
        verbose=verbose,
        **settings,
    )
    done = res.complete
    shown = min(show, len(done))
    print(f"\nbest {shown} of {len(done)} finished trials ({res.direction} {res.metric}):")
    print(res.table(show))
    if res.best is not None:
        b = res.best
        words = [f"{k}={v}" for k, v in settings.items() if k != "seed"]
        words += [
            f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in b.params.items()
        ]
        value = f"{res.metric} {b.value:.4g}"
        print(f"best: trial {b.number}, {value}: cnnkit train {' '.join(words)}")
    files = "trials.csv" + (f", {Path(res.plot).name}" if res.plot is not None else "")
    print(f"study saved in {res.study_dir}/: {files}, trial runs (optuna {res.storage})")
    return 0


def _lr_find(opts: dict[str, Any], settings: dict[str, Any]) -> int:
    from cnnkit.strategy.search import check_lr_range, lr_find, parse_dim
    from cnnkit.train.classify import prepare
    from cnnkit.train.config import TrainConfig

    for k in ("trials", "metric", "rounds", "zoom", "top", "storage", "heartbeat", "grace", "show"):
        if k in opts:
            raise CnnkitError(f"{k}= belongs to the search; drop it or lr_find=true.")
    opts.pop("lr_find")
    kw = {k: opts.pop(k) for k in ("lr_min", "lr_max", "steps") if k in opts}
    check_lr_range(kw.get("lr_min", 1e-7), kw.get("lr_max", 10.0), kw.get("steps", 100))
    study = str(opts.pop("study", "lr_find"))
    plot = flag(opts, "plot", True)
    opts.pop("plot", None)
    settings.update(opts)
    for k, v in settings.items():
        if parse_dim(k, v) is not None:
            raise CnnkitError(
                f"{k}={v} is a range, but lr_find=true trains one model; give {k} one value."
            )
    cfg = TrainConfig.from_dict({**settings, "verbose": 0})
    data, model, notes = prepare(cfg)
    folder = Path(cfg.project) / "tune" / study
    res = lr_find(
        model,
        data.train,
        config=cfg,
        seed=cfg.seed,
        plot=folder / "lr_find.png" if plot else None,
        **kw,
    )
    for n in notes:
        print(n)
    print(f"{cfg.model} on {data.info.name}, {cfg.optimizer}, batch {cfg.batch}:")
    print(res.to_text())
    folder.mkdir(parents=True, exist_ok=True)
    import csv

    with open(folder / "lr_find.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "lr", "loss", "smoothed_loss"])
        for i, (lr, raw, sm) in enumerate(zip(res.lrs, res.raw_losses, res.losses)):
            w.writerow([i, f"{lr:.6g}", f"{raw:.6g}", f"{sm:.6g}"])
    print(f"train with it: cnnkit train model={cfg.model} data={cfg.data} lr={res.suggestion:.2g}")
    png = f", {Path(res.plot).name}" if res.plot else ""
    print(f"curve saved in {folder}/: lr_find.csv{png}")
    return 0
