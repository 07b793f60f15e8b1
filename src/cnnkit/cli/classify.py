"""``cnnkit [classify] train | val | predict``: parse, validate, call one function, print."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnkit.cli.args import check_keys, flag, read_cfg_file, split_args
from cnnkit.errors import CnnkitError

TRAIN_HELP = """\
usage: cnnkit train [key=value ...]        (--key value works too)
       cnnkit train resume=runs/classify/NAME [epochs=N]
       cnnkit train cfg=runs/classify/NAME/config.yaml [key=value ...]

Train a classifier (default: LeNet-5 on the bundled digits) and leave a run folder
runs/classify/NAME/ with config.yaml, results.csv, weights/{{last,best}}.safetensors,
weights/last_state.pt and summary.txt.

settings (default):
{settings}
"""

VAL_HELP = """\
usage: cnnkit val run=runs/classify/NAME [split=test|dev|train_dev|train] [data=DATA]
       cnnkit val weights=FILE.safetensors data=DATA [split=test]
       cnnkit val run=runs/classify/NAME [crops=1|5|10] [report=true] [topk=5]
       cnnkit val runs=runs/classify/A,runs/classify/B,... [crops=1] [report=true]

Score the run's best weights on a split (the same seeded splits as in training).

report=true  also print per-class precision / recall / F1, their macro and micro
             averages, top-k accuracy (topk=5) and the confusion matrix (for many
             classes: its largest off-diagonal cells).
crops=5      test-time multi-crop: each image is padded by 1/32 of its size (1 pixel
             for a 32x32 model) and cropped at the center and 4 corners, so the
             corners are the image shifted as training's translate augmentation
             shifts it; the softmax probabilities are averaged. crops=10 adds the 5
             mirror images (wrong for digits and text). Prints 1 crop against N crops
             and the cost (N forward passes per image, measured time).
             shift=0.03125 sets the padding (a fraction of the size);
             crop_mode=resize instead enlarges the image resize=1.125x (36x36 for
             32x32) and crops that, the AlexNet/VGG recipe for larger photos.
runs=A,B,C   an ensemble: the runs' probabilities averaged on the same images (the
             runs must share data, seed, dev and test settings); prints accuracy,
             parameters and forward time per member and for the ensemble.
"""

PREDICT_HELP = """\
usage: cnnkit predict run=runs/classify/NAME source=IMAGE_OR_FOLDER [topk=5]
       cnnkit predict weights=FILE.safetensors source=IMAGE_OR_FOLDER
       cnnkit predict model=FILE.onnx backend=onnxruntime source=IMAGE_OR_FOLDER

Classify images with the preprocessing stored in the weights (size, channels,
mean/std): one line per image with the class, its probability and the top 5.
backend=torch (the default) runs a run's weights in PyTorch; backend=onnxruntime
runs a file written by `cnnkit export` (model=FILE.onnx), with the same preprocessing.
For a run on 1D signals or 3D volumes, source= is a .npy / .csv file (one example, the
shape it was trained on) or a folder of them.
"""


def _settings_help() -> str:
    from cnnkit.train.config import TrainConfig

    d = TrainConfig().to_dict()
    items = [f"{k}={'none' if v is None else v}" for k, v in d.items()]
    lines, line = [], " "
    for it in items:
        if len(line) + len(it) + 2 > 88:
            lines.append(line)
            line = " "
        line += " " + it
    lines.append(line)
    return "\n".join(lines) + "\nSee `help(cnnkit.train.TrainConfig)` for what each does."


def train(argv: Sequence[str]) -> int:
    """``cnnkit train key=value ...``."""
    pos, opts, wants_help = split_args(argv)
    if wants_help:
        print(TRAIN_HELP.format(settings=_settings_help()), end="")
        return 0
    if pos:
        raise CnnkitError(
            f"`cnnkit train` takes key=value settings, got {' '.join(pos)!r}; e.g. model={pos[0]}."
        )
    from cnnkit.train import classify
    from cnnkit.train.config import TrainConfig
    from cnnkit.train.distributed import in_torchrun, launch

    if "resume" in opts:
        run = opts.pop("resume")
        if run is True:
            raise CnnkitError("resume needs the run folder: resume=runs/classify/NAME.")
        check_keys(opts, TrainConfig.keys(), "train")
        devices = TrainConfig.from_dict({"devices": opts.get("devices", 1)}).devices
        if devices > 1 and not in_torchrun():  # the same command in N processes
            return launch(["train", *argv], devices)
        if (Path(str(run)) / "config.yaml").is_file() and classify.transfer_settings(
            classify.run_config(str(run))
        ):
            from cnnkit import transfer

            transfer.resume(str(run), after=_after(run, opts), **opts)
        else:
            classify.resume(str(run), after=_after(run, opts), **opts)
        return 0
    base: dict[str, Any] = {}
    if "cfg" in opts:
        path = Path(str(opts.pop("cfg")))
        base = read_cfg_file(path)
        TrainConfig.from_dict(base, source=str(path))  # unknown keys named with the file
    check_keys(opts, TrainConfig.keys(), "train", prefixes=("model.",))
    base.update(opts)
    cfg = TrainConfig.from_dict(base)
    if cfg.devices > 1 and not in_torchrun():  # the same command in N processes
        classify.check(cfg)
        return launch(["train", *argv], cfg.devices)
    if classify.transfer_settings(cfg):
        from cnnkit import transfer

        transfer.train(cfg, after=_after(None, cfg.to_dict()))
        return 0
    classify.train(cfg, after=_after(None, cfg.to_dict()))
    return 0


def _after(run: Any, settings: dict[str, Any]) -> Any:
    """What runs once a training run is saved: write its ``report.html`` (unless report=false).

    Args:
        run: The run folder when resuming (its config.yaml, read once the run is saved,
            decides), else None.
        settings: The run's settings (or, when resuming, the ones given on the line).

    Returns:
        The callback for ``classify.train(after=...)``.
    """

    def write(result: Any) -> None:
        s = settings
        if run is not None:  # resuming: the run's own settings, changed by the given ones
            from cnnkit.train.classify import run_config

            s = {**run_config(str(run)).to_dict(), **settings}
        if not s.get("report", True):
            return
        from cnnkit.report import write_report

        try:
            write_report(result.run_dir)
        except Exception as e:  # the run is saved; only its page is missing
            if s.get("verbose", 1):
                print(
                    f"report.html was not written ({e}); rebuild it with "
                    f"cnnkit report run={result.run_dir}"
                )

    return write


def val(argv: Sequence[str]) -> int:
    """``cnnkit val run=... [split=test] [crops=5] [report=true]`` or ``runs=A,B,C``."""
    pos, opts, wants_help = split_args(argv)
    if wants_help:
        print(VAL_HELP, end="")
        return 0
    keys = ["run", "runs", "weights", "split", "data", "batch", "crops", "report", "topk"]
    keys += ["crop_mode", "shift", "resize"]
    check_keys(opts, keys, "val")
    if pos:
        raise CnnkitError(f"`cnnkit val` takes key=value settings, got {' '.join(pos)!r}.")
    from cnnkit.evaluate.testtime import RESIZE, SHIFT, _check_canvas, check_crops, check_mode

    crops = check_crops(opts.get("crops", 1))
    canvas = {
        "mode": check_mode(opts.get("crop_mode", "shift")),
        "shift": opts.get("shift", SHIFT),
        "resize": opts.get("resize", RESIZE),
    }
    _check_canvas(canvas["mode"], canvas["resize"], canvas["shift"])
    show_report = flag(opts, "report")
    topk = opts.get("topk", 5)
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise CnnkitError(f"topk must be a positive integer, got {topk!r}; e.g. topk=5.")
    split = str(opts.get("split", "test"))
    batch = opts.get("batch", 256)
    if "runs" in opts:
        return _val_ensemble(opts, split, batch, crops, show_report, topk, canvas)
    from cnnkit.train.classify import score_line

    if crops == 1 and not show_report:
        from cnnkit.train import classify

        s = classify.evaluate(
            opts.get("run"),
            weights=opts.get("weights"),
            split=split,
            data=opts.get("data"),
            batch=batch,
        )
        print(score_line(split, s))
        return 0
    from cnnkit.evaluate.metrics import multilabel_run_report

    ml = multilabel_run_report(
        opts.get("run"), opts.get("data"), weights=opts.get("weights"), split=split, batch=batch
    )
    if ml is not None:  # a multi-label run: per-label P/R/F1 over the present labels
        if crops > 1:
            raise CnnkitError("crops= is for single-label runs; drop it for this multi-label run.")
        print(score_line(split, {"loss": ml.loss, "accuracy": ml.micro["accuracy"], "n": ml.n}))
        print()
        print(ml.table())
        return 0
    from cnnkit.evaluate.testtime import evaluate_crops

    if crops > 1:
        _refuse_crops_on_arrays(crops, opts.get("run"), opts.get("weights"))
    res = evaluate_crops(
        opts.get("run"),
        opts.get("data"),
        weights=opts.get("weights"),
        split=split,
        crops=crops,
        batch=batch,
        k=topk,
        **canvas,
    )
    r = res.multi
    if crops > 1:
        print("\n".join(res.lines(split)))
    else:
        print(score_line(split, {"loss": r.loss, "accuracy": r.accuracy, "n": r.n}))
    if show_report:
        print()
        print(r.table())
    return 0


def _val_ensemble(
    opts: dict[str, Any],
    split: str,
    batch: Any,
    crops: int,
    show_report: bool,
    topk: int,
    canvas: dict[str, Any],
) -> int:
    """``cnnkit val runs=A,B,C``: the accuracy-vs-cost table of an ensemble."""
    if "run" in opts or "weights" in opts:
        raise CnnkitError(
            "pass run= (one run) or runs=A,B,C (an ensemble), not both; list every member in runs=."
        )
    raw = opts["runs"]
    runs = [str(r).strip() for r in raw] if isinstance(raw, list) else str(raw).split(",")
    runs = [r.strip() for r in runs if r.strip()]
    if len(runs) < 2 or raw is True:
        raise CnnkitError(
            "runs= needs two or more run folders separated by commas, e.g. "
            "runs=runs/classify/a,runs/classify/b (for one run use run=)."
        )
    from cnnkit.evaluate.testtime import ensemble

    if crops > 1:
        for r in runs:
            _refuse_crops_on_arrays(crops, r, None)
    res = ensemble(runs, opts.get("data"), split=split, crops=crops, batch=batch, k=topk, **canvas)
    print(res.table())
    if show_report:
        print()
        print(res.ensemble.report.table())
    return 0


def _refuse_crops_on_arrays(crops: int, run: Any, weights: Any) -> None:
    """Test-time crops are image crops: refused for a run on 1D signals or 3D volumes."""
    from cnnkit.train.classify import load_run_model

    _, meta = load_run_model(run, weights)
    dims = int(meta["preprocess"].get("dims", 2))
    if dims != 2:
        what = "1D signals" if dims == 1 else "3D volumes"
        raise CnnkitError(
            f"crops={crops} crops 2D images but {run or weights} was trained on {what}; use "
            "crops=1."
        )


def predict(argv: Sequence[str]) -> int:
    """``cnnkit predict run=... source=...``."""
    pos, opts, wants_help = split_args(argv)
    if wants_help:
        print(PREDICT_HELP, end="")
        return 0
    check_keys(opts, ["run", "weights", "model", "backend", "source", "topk", "batch"], "predict")
    if pos and "source" not in opts and len(pos) == 1:
        opts["source"] = pos[0]
    elif pos:
        raise CnnkitError(f"`cnnkit predict` takes key=value settings, got {' '.join(pos)!r}.")
    if "source" not in opts:
        raise CnnkitError("`cnnkit predict` needs source=IMAGE_OR_FOLDER.")
    topk = opts.get("topk", 5)
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise CnnkitError(f"topk must be a positive integer, got {topk!r}.")
    backend = _backend(opts)
    from cnnkit.train.classify import percent

    if backend == "onnxruntime":
        from cnnkit.export import predict as onnx_predict

        preds = onnx_predict(
            str(opts["model"]), str(opts["source"]), topk=topk, batch=opts.get("batch", 64)
        )
    else:
        from cnnkit.train import classify

        preds = classify.predict(
            opts.get("run"),
            str(opts["source"]),
            weights=opts.get("weights"),
            topk=topk,
            batch=opts.get("batch", 64),
        )
    for p in preds:
        top = ", ".join(f"{c} {percent(q)}" for c, q in p.top)
        print(f"{p.path}: {p.label} {percent(p.prob)}   top-{len(p.top)}: {top}")
    return 0


def _backend(opts: dict[str, Any]) -> str:
    """``backend=torch`` (run= or weights=) or ``backend=onnxruntime`` (model=FILE.onnx)."""
    backend = str(opts.get("backend", "torch")).lower()
    if backend not in ("torch", "onnxruntime"):
        raise CnnkitError(
            f"backend={opts['backend']!r} is not known; use backend=torch or backend=onnxruntime."
        )
    model = opts.get("model")
    if backend == "onnxruntime":
        if model is None or "run" in opts or "weights" in opts:
            raise CnnkitError(
                "backend=onnxruntime runs an exported file: pass model=FILE.onnx instead of run= "
                "or weights= (make it with `cnnkit export run=runs/classify/NAME format=onnx`)."
            )
        return backend
    if model is not None:
        hint = "add backend=onnxruntime" if str(model).endswith(".onnx") else "use run= or weights="
        raise CnnkitError(f"model={model!r} is for backend=onnxruntime (an .onnx file); {hint}.")
    if str(opts.get("weights", "")).endswith(".onnx"):
        raise CnnkitError(
            f"weights={opts['weights']!r} is an ONNX file; run it with "
            f"model={opts['weights']} backend=onnxruntime."
        )
    return backend
