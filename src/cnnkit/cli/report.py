"""``cnnkit report``: rebuild a run's report.html, or draw one plot of it as a PNG."""

from __future__ import annotations

from collections.abc import Sequence

from cnnkit.cli.args import check_keys, split_args
from cnnkit.errors import CnnkitError

HELP = """\
usage: cnnkit report run=runs/classify/NAME [human=2%] [split=dev] [gallery=48] [out=FILE]
       cnnkit report run=RUN plot=filters [layer=NAME]
       cnnkit report run=RUN plot=feature_maps image=FILE [layer=NAME]
       cnnkit report run=RUN plot=top_patches layer=NAME [channel=0] [k=16] [split=dev]
       cnnkit report run=RUN plot=saliency image=FILE
       cnnkit report run=RUN plot=curves [human=2%]

Without plot=: write the run's report.html (cnnkit train writes it at the end of every
run; report=false turns that off): one self-contained page with the settings, scores,
learning curves (human-level line with human=), diagnosis, per-class precision / recall
/ F1 and confusion matrix on the split, the misclassified images (highest loss first, at
most gallery=), saliency of the worst errors, first-layer filters, an augmentation
preview and the speed settings. Its plots are also saved as run/plots/*.png.

With plot=: one plot as run/plots/PLOT[_LAYER].png (or out=FILE.png). Layer names are
those of model.named_modules(), e.g. layer=features.3; the default layer is the first
convolution.
"""

KEYS = ["run", "human", "split", "gallery", "out", "plot", "layer", "image", "channel", "k"]


def report(argv: Sequence[str]) -> int:
    """``cnnkit report run=... [plot=...]``."""
    pos, opts, wants_help = split_args(argv)
    if wants_help:
        print(HELP, end="")
        return 0
    if pos and "run" not in opts and len(pos) == 1:
        opts["run"] = pos[0]
    elif pos:
        raise CnnkitError(f"`cnnkit report` takes key=value settings, got {' '.join(pos)!r}.")
    check_keys(opts, KEYS, "report")
    if "run" not in opts or opts["run"] is True:
        raise CnnkitError("`cnnkit report` needs the run folder: run=runs/classify/NAME.")
    run = str(opts["run"])
    if "plot" in opts:
        bad = sorted(set(opts) & {"gallery"})
        if bad:
            raise CnnkitError(f"{bad[0]}= is for the whole page; drop it or drop plot=.")
        from cnnkit.report.runplots import plot_run

        layer = opts.get("layer")
        path = plot_run(
            run,
            str(opts["plot"]),
            layer=None if layer is None else str(layer),
            image=opts.get("image"),
            channel=opts.get("channel", 0),
            k=opts.get("k", 16),
            split=str(opts.get("split", "dev")),
            human=opts.get("human"),
            out=opts.get("out"),
        )
        print(f"plot saved in {path}")
        return 0
    bad = sorted(set(opts) & {"layer", "image", "channel", "k"})
    if bad:
        raise CnnkitError(
            f"{bad[0]}= goes with plot=NAME (e.g. plot=filters); add plot= or drop it."
        )
    from cnnkit.report import write_report

    rep = write_report(
        run,
        human=opts.get("human"),
        split=None if "split" not in opts else str(opts["split"]),
        gallery=opts.get("gallery", 48),
        out=opts.get("out"),
    )
    for note in rep.notes:
        print(f"note: {note}")
    print(
        f"report saved in {rep.path} ({rep.size / 1e6:.2f} MB, {len(rep.sections)} sections; "
        f"plots in {rep.path.parent / 'plots'}/)"
    )
    return 0
