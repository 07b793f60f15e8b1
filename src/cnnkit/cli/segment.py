"""``cnnkit segment train | val | predict | summary``: parse, validate, call one function, print."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

from cnnkit.cli.args import check_keys, task_mode
from cnnkit.errors import CnnkitError

HELP = """\
usage: cnnkit segment train data=PATH/data.yaml [size=64 depth=3 width=16 epochs=30 ...]
       cnnkit segment train data=PATH/data.yaml encoder=resnet18 [encoder_weights=FILE]
       cnnkit segment train resume=runs/segment/NAME [epochs=N]
       cnnkit segment val run=runs/segment/NAME [data=... split=val]
       cnnkit segment predict run=runs/segment/NAME source=IMAGE_OR_DIR out=DIR
       cnnkit segment summary run=runs/segment/NAME

U-Net (a contracting path of 3x3 convolutions and 2x2 max-pools, an expanding path of
2x2 transposed convolutions, skip connections) labels every pixel. data.yaml names
images/{{train,val}}/X.png, their masks masks/{{train,val}}/X.png (single-channel PNGs of
class indices, 255 = ignored) and the classes (names). Any image size works: U-Net pads
to a multiple of 2^depth and crops back. The loss is per-pixel cross-entropy + Dice;
val prints pixel accuracy, IoU and Dice per class and their means (one confusion matrix
over every pixel; means over the classes present). predict writes DIR/X.png masks of
class indices at each image's own size and DIR/overlays/X.png to look at.
Make a dataset with: cnnkit data synth segment out=DIR

train settings: {settings}
"""

MODES = ("train", "val", "predict", "summary")


def segment(argv: Sequence[str]) -> int:
    """``cnnkit segment MODE key=value ...``."""
    from cnnkit.segment.train import SegmentConfig

    keys = [f.name for f in fields(SegmentConfig) if f.name != "extra"]
    parsed = task_mode(argv, "segment", MODES, HELP.format(settings=", ".join(keys)))
    if parsed is None:  # help was printed
        return 0
    mode, opts = parsed
    from cnnkit.segment import train as job

    if mode == "train":
        check_keys(opts, [*keys, "resume"], "segment train")
        if opts.get("resume") is True:
            raise CnnkitError("resume= names the run folder to continue: resume=runs/segment/NAME.")
        job.train(**opts)
        return 0
    if "run" not in opts or opts["run"] is True:
        raise CnnkitError(f"`cnnkit segment {mode}` needs run=runs/segment/NAME.")
    if mode == "val":
        check_keys(opts, ["run", "data", "split"], "segment val")
        print(job.scores_table(job.val(str(opts["run"]), opts.get("data"), opts.get("split"))))
        return 0
    if mode == "predict":
        check_keys(opts, ["run", "source", "out", "alpha"], "segment predict")
        for k in ("source", "out"):
            if k not in opts or opts[k] is True:
                raise CnnkitError("`cnnkit segment predict` needs source=IMAGE_OR_DIR and out=DIR.")
        alpha = opts.get("alpha", 0.5)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise CnnkitError(f"alpha must be between 0 and 1, got {alpha!r}.")
        files = job.predict(str(opts["run"]), str(opts["source"]), str(opts["out"]), alpha=alpha)
        print(
            f"{len(files)} masks saved in {opts['out']}/ (class indices; colours in "
            f"{opts['out']}/overlays/)"
        )
        return 0
    check_keys(opts, ["run"], "segment summary")
    print(job.summary_text(str(opts["run"])))
    return 0
