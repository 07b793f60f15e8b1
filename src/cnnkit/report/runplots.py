"""One plot of a run as a PNG (``cnnkit report run=... plot=NAME``).

The page (:func:`cnnkit.report.write_report`) holds the plots that need nothing but
the run; these take a layer, an image or a unit: a convolution's filters, the feature
maps of a layer for an image, the image patches that most activate a unit (the course's
receptive-field view) and the saliency of a prediction.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError, unknown_name

__all__ = ["PLOTS", "plot_run"]

PLOTS = ("filters", "feature_maps", "top_patches", "saliency", "curves")
_NEEDS_IMAGE = ("feature_maps", "saliency")


def plot_run(
    run: str | os.PathLike,
    plot: str,
    *,
    layer: str | None = None,
    image: str | os.PathLike | None = None,
    channel: int = 0,
    k: int = 16,
    split: str = "dev",
    human: Any = None,
    out: str | os.PathLike | None = None,
) -> Path:
    """Draw one plot of a run and save it as a PNG.

    Args:
        run: The run folder.
        plot: ``filters`` (of ``layer``, default the first convolution), ``feature_maps``
            (of ``layer`` for ``image``), ``top_patches`` (the ``k`` patches of the
            ``split`` images that most activate ``channel`` of ``layer``), ``saliency``
            (of the prediction for ``image``) or ``curves`` (learning curves, with
            ``human``).
        layer: Dotted layer name (``cnnkit summary`` and ``model.named_modules()`` list them).
        image: An image file, for ``feature_maps`` and ``saliency``.
        channel: The unit (output channel) of ``top_patches``.
        k: Patches of ``top_patches``.
        split: Images searched by ``top_patches``.
        human: Human-level error for ``curves`` (a fraction or ``"2%"``).
        out: The PNG (default ``run/plots/<plot>[_<layer>].png``).

    Returns:
        The PNG's path.

    Raises:
        CnnkitError: An unknown plot, a missing image, a bad layer or unit (one sentence).
    """
    from cnnkit.train.classify import run_config
    from cnnkit.train.config import human_level

    r = Path(run)
    if plot not in PLOTS:
        raise unknown_name("plot", str(plot), PLOTS)
    run_config(r)  # a run folder, before anything heavy
    if plot in _NEEDS_IMAGE:
        if image is None:
            raise CnnkitError(f"plot={plot} needs image=FILE (the image to look at).")
        if not Path(image).is_file():
            raise CnnkitError(f"image={str(image)!r} is not a file; pass an image file.")
    if plot == "top_patches" and layer is None:
        raise CnnkitError("plot=top_patches needs layer=NAME (e.g. layer=features.3).")
    for key, v, low in (("channel", channel, 0), ("k", k, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise CnnkitError(f"{key} must be an integer >= {low}, got {v!r}.")
    h = human_level(human)
    fig = _figure(r, plot, layer, image, channel, k, split, h)
    suffix = f"_{layer}" if layer else ""
    path = Path(out) if out is not None else r / "plots" / f"{plot}{suffix}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _figure(
    r: Path,
    plot: str,
    layer: str | None,
    image: Any,
    channel: int,
    k: int,
    split: str,
    human: float | None,
) -> Any:
    if plot == "curves":
        from cnnkit.report.plots import plot_learning_curves

        if not (r / "results.csv").is_file():
            raise CnnkitError(f"{r} has no results.csv (no finished epoch) to plot.")
        return plot_learning_curves(r / "results.csv", human=human)
    from cnnkit.data import Preprocess
    from cnnkit.train.classify import load_run_model

    model, meta = load_run_model(r)
    pre = Preprocess.from_dict(meta["preprocess"])
    if pre.dims != 2:  # signals / volumes
        what = "1D signals" if pre.dims == 1 else "3D volumes"
        raise CnnkitError(
            f"plot={plot} draws 2D images and this run is on {what}; use plot=curves or the "
            "page (cnnkit report run=RUN)."
        )
    if plot == "filters":
        from cnnkit.report.filters import plot_filters

        return plot_filters(model, layer)
    if plot == "top_patches":
        from cnnkit.report.receptive import plot_top_patches, top_patches
        from cnnkit.train.classify import run_data, split_of

        ds = split_of(run_data(r, meta), split, meta)
        res = top_patches(model, pre.normalize(ds.images), layer, channel=channel, k=k)
        return plot_top_patches(res)
    x = pre.load_files([Path(image)])  # (1, n_C, n_H, n_W), normalized as in training
    if plot == "feature_maps":
        from cnnkit.report.filters import plot_feature_maps

        return plot_feature_maps(model, x[0], layer)
    import torch

    from cnnkit.evaluate.metrics import log_probs
    from cnnkit.report.plots import plot_saliency, saliency

    with torch.no_grad():
        z = model(x)
    p = log_probs(z).exp()[0]  # softmax, or (1 - p, p) for one sigmoid output
    c = int(p.argmax())
    sal = saliency(model, x[0], target=c)
    name = list(meta["classes"])[c]
    return plot_saliency(x[0], sal, title=f"{Path(image).name}: {name} ({100 * float(p[c]):.1f}%)")
