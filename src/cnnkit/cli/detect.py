"""``cnnkit detect train | val | predict | summary``: parse, validate, call one function, print."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

from cnnkit.cli.args import check_keys, task_mode
from cnnkit.errors import CnnkitError

HELP = """\
usage: cnnkit detect train data=PATH/data.yaml [size=64 anchors=5 stride=8 epochs=30 ...]
       cnnkit detect train data=PATH/data.yaml model=fasterrcnn_mobilenet_v3 [rcnn_size=160]
       cnnkit detect val run=runs/detect/NAME [data=... split=val]
       cnnkit detect predict run=runs/detect/NAME source=IMAGE_OR_DIR [conf=0.3]
       cnnkit detect summary run=runs/detect/NAME

YOLO (v2-style, anchor boxes) on a YOLO-txt data.yaml or a COCO .json: the grid is
S x S with S = size / stride, B = anchors anchor boxes per cell (k-means on 1 - IoU over
the training boxes), output S x S x B x (5 + C). val prints mAP@0.5, mAP@[.5:.95] and
per-class AP (pycocotools). predict writes predictions.json (COCO results, image_id = the
file's stem) and predict/*.png with the boxes drawn. model=fasterrcnn_mobilenet_v3
trains torchvision's Faster R-CNN (region proposals; untrained MobileNetV3 + FPN) on the
same data with the same trainer and scoring, for comparison.

train settings: {settings}
"""

MODES = ("train", "val", "predict", "summary")


def _plot(scores, path) -> None:
    from cnnkit.report.plots import plot_pr_curves

    plot_pr_curves(scores.recall, scores.precision, title="AP@0.5").savefig(path, dpi=100)


def _pr_curves(result) -> None:
    """After ``cnnkit detect train``: the val split's precision/recall curves as a PNG."""
    _plot(result.scores, result.run_dir / "pr_curves.png")


def detect(argv: Sequence[str]) -> int:
    """``cnnkit detect MODE key=value ...``."""
    from cnnkit.detect.train import DetectConfig

    keys = [f.name for f in fields(DetectConfig) if f.name != "extra"]
    parsed = task_mode(argv, "detect", MODES, HELP.format(settings=", ".join(keys)))
    if parsed is None:  # help was printed
        return 0
    mode, opts = parsed
    from cnnkit.detect import train as job

    if mode == "train":
        check_keys(opts, keys, "detect train")
        job.train(after=_pr_curves, **opts)
        return 0
    if "run" not in opts or opts["run"] is True:
        raise CnnkitError(f"`cnnkit detect {mode}` needs run=runs/detect/NAME.")
    if mode == "val":
        check_keys(opts, ["run", "data", "split"], "detect val")
        s = job.val(str(opts["run"]), opts.get("data"), opts.get("split"))
        print(s.table())
        from pathlib import Path

        path = Path(str(opts["run"])) / "pr_curves_val.png"
        _plot(s, path)
        print(f"precision/recall curves saved in {path}")
        return 0
    if mode == "predict":
        check_keys(opts, ["run", "source", "conf", "iou", "max_boxes"], "detect predict")
        if "source" not in opts:
            raise CnnkitError("`cnnkit detect predict` needs source=IMAGE_OR_DIR.")
        path = job.predict(
            str(opts["run"]),
            str(opts["source"]),
            score_threshold=opts.get("conf", 0.3),
            iou_threshold=opts.get("iou"),
            max_boxes=opts.get("max_boxes"),
        )
        print(f"predictions saved in {path} (boxes drawn in {path.parent / 'predict'}/)")
        return 0
    check_keys(opts, ["run"], "detect summary")
    print(job.summary_text(str(opts["run"])))
    return 0
