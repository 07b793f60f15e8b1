"""``report.html``: one self-contained page per run (``cnnkit report run=...``).

The page holds the run's settings, its scores, the learning curves (with the
human-level line when it is known), the confusion matrix and per-class precision,
recall and F1 on the dev split, the bias / variance diagnosis, the misclassified dev
images with their label, prediction and probability, what the first-layer filters
look like, saliency maps of the worst errors, an augmentation preview and the speed
settings the run trained with. Every image is a PNG embedded as a ``data:`` URI, so
the file opens offline, can be mailed, and prints (the CSS has a print layout). The
plots are also written as ``plots/*.png`` beside it.

Everything is recomputed from the run folder (``config.yaml``, ``results.csv``,
``summary.txt`` and the best weights), so ``cnnkit report run=RUN human=2%`` rebuilds
the page of any run, with another human-level error, at any time.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from cnnkit.errors import CnnkitError

__all__ = ["RunReport", "write_report"]

SPLITS = ("train", "train_dev", "dev", "test")
#: The plots the page writes in ``plots/`` (``plot=`` ones have other names).
PAGE_PLOTS = ("learning_curves", "confusion", "top_losses", "saliency", "filters", "augmentation")
#: The training error of the diagnosis is measured on at most this many training images
#: (a seeded random subset): its noise is then under 1.5 points, and a large training
#: set does not make the page slow to build.
TRAIN_CAP = 10_000
SECTIONS = {
    "summary": "Summary",
    "curves": "Learning curves",
    "diagnosis": "Diagnosis",
    "per-class": "Per-class precision, recall, F1",
    "confusion": "Confusion matrix",
    "errors": "Misclassified examples",
    "saliency": "Saliency",
    "filters": "First-layer filters",
    "augmentation": "Augmentation",
    "speed": "Speed",
    "config": "Settings",
}


@dataclass
class RunReport:
    """What :func:`write_report` wrote.

    Attributes:
        path: The ``report.html`` file.
        plots: ``{name: PNG file}`` written in ``plots/``.
        size: Bytes of ``report.html``.
        sections: The ids of the page's sections, in order.
        notes: What the page could not show and why.
    """

    path: Path
    plots: dict[str, Path] = field(default_factory=dict)
    size: int = 0
    sections: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _png(fig: Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _image_png(image: torch.Tensor) -> bytes:
    """uint8 ``(n_C, n_H, n_W)`` -> PNG bytes."""
    from PIL import Image

    a = image.permute(1, 2, 0).numpy()  # (n_C, n_H, n_W) -> (n_H, n_W, n_C)
    if a.shape[2] == 1:
        a = a[:, :, 0]  # (n_H, n_W, 1) -> (n_H, n_W)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG")
    return buf.getvalue()


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _e(v: Any) -> str:
    return html.escape(str(v))


def _pct(q: float | None, digits: int = 1) -> str:
    if q is None or (isinstance(q, float) and math.isnan(q)):
        return "-"
    return f"{100 * q:.{digits}f}%"


def _table(head: list[str] | None, rows: list[list[Any]], cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    out = [f"<table{c}>"]
    if head:
        out.append("<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead>")
    out.append("<tbody>")
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in r) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1d1d1f; margin: 0; background: #fff; }
main { max-width: 1100px; margin: 0 auto; padding: 1.2em 1.5em 3em; }
h1 { font-size: 1.5em; margin: 0.2em 0; }
h2 { font-size: 1.2em; margin: 1.6em 0 0.5em; border-bottom: 1px solid #ddd;
     padding-bottom: 0.2em; }
p.sub { color: #555; margin: 0 0 1em; }
nav { font-size: 0.9em; margin: 0.6em 0 1em; }
nav a { margin-right: 0.9em; color: #0a58ca; text-decoration: none; white-space: nowrap; }
table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
table.keys td { text-align: left; }
.settings { column-width: 17em; column-gap: 2em; font-size: 0.85em; margin: 0.5em 0; }
.settings div { break-inside: avoid; border-bottom: 1px dotted #ddd; padding: 0.1em 0; }
.settings .k { font-family: ui-monospace, monospace; color: #555; }
.settings .v { font-family: ui-monospace, monospace; float: right; }
img.plot.small { max-width: 640px; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: 0.7em; overflow-x: auto;
      font-size: 0.85em; white-space: pre-wrap; }
img.plot { max-width: 100%; height: auto; display: block; margin: 0.4em 0; }
.gallery { display: flex; flex-wrap: wrap; gap: 8px; }
.gallery figure { margin: 0; width: 104px; border: 1px solid #ddd; padding: 4px;
                  font-size: 0.78em; text-align: center; break-inside: avoid; }
.gallery img { width: 96px; height: 96px; image-rendering: pixelated; object-fit: contain;
               background: #000; }
.bad { color: #b00020; }
.cols { column-count: 2; column-gap: 2em; }
@media (max-width: 800px) { .cols { column-count: 1; } }
@media print {
  nav { display: none; }
  main { max-width: none; padding: 0; }
  section { break-inside: avoid-page; }
  img.plot { max-width: 100%; break-inside: avoid; }
  h2 { break-after: avoid; }
  body { font-size: 11pt; }
}
"""


def _section(sid: str, body: str) -> str:
    return f'<section id="{sid}">\n<h2>{_e(SECTIONS[sid])}</h2>\n{body}\n</section>'


def _plot(name: str, png: bytes, alt: str, plots: dict[str, bytes], cls: str = "plot") -> str:
    plots[name] = png
    return f'<img class="{cls}" src="{_uri(png)}" alt="{_e(alt)}">'


def write_report(
    run: str | os.PathLike,
    *,
    human: Any = None,
    split: str | None = None,
    gallery: int = 48,
    batch: int = 256,
    out: str | os.PathLike | None = None,
) -> RunReport:
    """Write ``report.html`` (and ``plots/*.png``) for a run folder.

    Args:
        run: The run folder (``runs/classify/NAME``).
        human: Human-level error, a fraction or ``"2%"`` (None: the run's ``human``
            setting, else unknown).
        split: The split of the confusion matrix, per-class scores and gallery
            (``dev``, ``test``, ``train_dev`` or ``train``; None: ``dev``, else the
            first of the others the run has).
        gallery: At most this many misclassified images, highest loss first.
        batch: Images per forward pass.
        out: Where to write the page (default ``run/report.html``); the PNGs go in a
            ``plots`` folder beside it.

    Returns:
        A :class:`RunReport`.

    Raises:
        CnnkitError: When ``run`` is not a run folder, or on a bad ``human`` or ``split``.
    """
    import yaml

    from cnnkit.train.classify import run_config
    from cnnkit.train.config import human_level

    r = Path(run)
    run_config(r)  # a run folder with a readable config.yaml, before anything heavy
    if split is not None and split not in SPLITS:
        from cnnkit.errors import unknown_name

        raise unknown_name("split", str(split), SPLITS)
    if isinstance(gallery, bool) or not isinstance(gallery, int) or gallery < 0:
        raise CnnkitError(f"gallery must be a count of images >= 0, got {gallery!r}.")
    cfg = yaml.safe_load((r / "config.yaml").read_text())
    h = human_level(human if human is not None else cfg.get("human"))
    page = _Page(r, cfg, h, split, gallery, batch)
    text = page.build()
    path = Path(out) if out is not None else r / "report.html"
    plot_dir = path.parent / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    from cnnkit.train.checkpoint import atomic_write

    for name in PAGE_PLOTS:  # a rebuild must not leave plots of another split behind
        (plot_dir / f"{name}.png").unlink(missing_ok=True)
    written = {}
    for name, png in page.plots.items():
        p = plot_dir / f"{name}.png"
        atomic_write(p, lambda f, b=png: f.write(b))
        written[name] = p
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))
    return RunReport(path, written, len(data), page.sections, page.notes)


class _Page:
    """Builds the HTML of one run's report."""

    def __init__(
        self,
        run: Path,
        cfg: dict[str, Any],
        human: float | None,
        split: str | None,
        gallery: int,
        batch: int,
    ) -> None:
        self.run, self.cfg, self.human = run, cfg, human
        self.split, self.gallery, self.batch = split, gallery, batch
        self.plots: dict[str, bytes] = {}
        self.sections: list[str] = []
        self.notes: list[str] = []

    # -- data --------------------------------------------------------------------------

    def _load(self) -> None:
        from cnnkit.data import Preprocess
        from cnnkit.data.datasets import ArraySet, ImageSet
        from cnnkit.evaluate.testtime import predict_log_probs
        from cnnkit.train.classify import load_run_model, run_data

        self.model, self.meta = load_run_model(self.run)
        self.classes = list(self.meta["classes"])
        pre = Preprocess.from_dict(self.meta["preprocess"])
        self.data = run_data(self.run, self.meta)
        self.sets: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}
        for name, ds in self.data.splits().items():
            if ds is None or not len(ds):
                continue
            self.sets[name] = ds
        if self.split is None:  # dev, else test, else train-dev, else train
            order = ("dev", "test", "train_dev", "train")
            self.split = next(s for s in order if s in self.sets)
            if self.split != "dev":
                self.notes.append(f"the run has no dev split: the {self.split} split is shown")
        if self.split not in self.sets:
            have = ", ".join(k for k in self.sets if k != "train") or "train"
            raise CnnkitError(
                f"the run's data has no {self.split} split; pass split= one of {have}."
            )
        first = next(iter(self.sets.values()))
        self.multilabel = first.labels.ndim == 2
        #: signals / volumes: the image-only parts (thumbnails, saliency, filters) are skipped
        self.arrays = isinstance(first, ArraySet)
        if self.multilabel:
            return
        for name, ds in list(self.sets.items()):
            if name == "train" and len(ds) > TRAIN_CAP:
                g = torch.Generator().manual_seed(0)
                keep = torch.randperm(len(ds), generator=g)[:TRAIN_CAP].sort().values
                ids = [ds.ids[i] for i in keep.tolist()] if ds.ids is not None else None
                if isinstance(ds, ArraySet):
                    ds = ds.subset(keep.numpy(), ds.name)
                else:
                    ds = ImageSet(ds.images[keep], ds.labels[keep], ds.preprocess, ds.name, ids)
                self.sets[name] = ds
                self.notes.append(
                    f"training error measured on a random {TRAIN_CAP:,} of the "
                    f"{len(self.data.train):,} training images"
                )
            if isinstance(ds, ArraySet):
                norm = ds.with_preprocess(pre)
            else:
                norm = ImageSet(ds.images, ds.labels, pre, ds.name, ds.ids)
            self.outputs[name] = predict_log_probs(self.model, norm, batch=self.batch)
        self.pre = pre

    # -- sections ----------------------------------------------------------------------

    def build(self) -> str:
        from cnnkit.report.plots import learning_curve_data

        self._load()
        results = self.run / "results.csv"
        history = learning_curve_data(results) if results.is_file() else {}
        summary = self.run / "summary.txt"
        self.summary_lines = summary.read_text().splitlines() if summary.is_file() else []
        parts = []
        for sid, fn in (
            ("summary", self._summary),
            ("curves", lambda: self._curves(history)),
            ("diagnosis", self._diagnosis),
            ("per-class", self._per_class),
            ("confusion", self._confusion),
            ("errors", self._errors),
            ("saliency", self._saliency),
            ("filters", self._filters),
            ("augmentation", self._augmentation),
            ("speed", lambda: self._speed(history)),
            ("config", self._config),
        ):
            body = fn()
            if body is None:
                continue
            parts.append(_section(sid, body))
            self.sections.append(sid)
        nav = " ".join(f'<a href="#{s}">{_e(SECTIONS[s])}</a>' for s in self.sections)
        title = f"{self.cfg.get('model')} on {self.cfg.get('data')}"
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>cnnkit report: {_e(title)}</title>\n"
            # the page fetches nothing: every image is inline
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "img-src data:; style-src 'unsafe-inline'\">\n"
            f"<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<h1>cnnkit report: {_e(title)}</h1>\n"
            f'<p class="sub">run <code>{_e(self.run)}</code></p>\n'
            f"<nav>{nav}</nav>\n" + "\n".join(parts) + "\n</main>\n</body>\n</html>\n"
        )

    def _summary(self) -> str:
        n_params = sum(p.numel() for p in self.model.parameters())
        pre = self.meta["preprocess"]
        size = pre.get("size", ["?", "?"])
        axes = {1: "n x n_C", 3: "n_D x n_H x n_W x n_C"}.get(pre.get("dims", 2), "n_H x n_W x n_C")
        shown = " x ".join(str(v) for v in [*size, pre.get("channels", "?")])
        rows = [
            ["model", f"{self.cfg.get('model')} ({n_params:,} parameters)"],
            ["data", f"{self.cfg.get('data')} ({len(self.classes)} classes)"],
            ["input", f"{shown} ({axes})"],
        ]
        best = next((x for x in self.summary_lines if x.startswith("best weights")), "")
        if best:
            rows.append(["best weights", best.removeprefix("best weights: ")])
        if self.human is not None:
            rows.append(["human-level error", _pct(self.human, 2)])
        out = [_table(None, rows, cls="keys")]
        if self.multilabel:
            out.append(self._multilabel_scores())
            return "\n".join(out)
        srows = []
        for name, o in self.outputs.items():
            y = o.labels
            pred = o.log_probs.argmax(1)
            acc = float((pred == y).double().mean())
            loss = float(-o.log_probs.gather(1, y[:, None]).mean())
            srows.append([name, f"{len(y):,}", f"{loss:.4f}", _pct(acc, 2), _pct(1 - acc, 2)])
        out.append(_table(["split", "images", "loss", "accuracy", "error"], srows))
        out.append(
            '<p class="sub">Loss is the mean cross-entropy -log p(true class) of the best '
            "weights, without label smoothing; error = 1 - accuracy."
            + "".join(f" Note: {_e(n)}." for n in self.notes)
            + "</p>"
        )
        return "\n".join(out)

    def _multilabel_scores(self) -> str:
        from cnnkit.evaluate.metrics import multilabel_run_report

        split = self.split
        ml = multilabel_run_report(self.run, None, split=split, batch=self.batch)
        self.notes.append("a multi-label run: per-label scores only (no confusion matrix)")
        return f"<p>Per-label scores on the {_e(split)} split:</p><pre>{_e(ml.table())}</pre>"

    def _curves(self, history: dict[str, list[float]]) -> str | None:
        from cnnkit.report.plots import plot_learning_curves

        if not history:
            self.notes.append("no results.csv: no learning curves")
            return None
        rows = [dict(zip(history, v)) for v in zip(*history.values())]  # columns -> rows
        fig = plot_learning_curves(rows, human=self.human)
        img = _plot("learning_curves", _png(fig), "learning curves", self.plots)
        say = (
            "Train and dev loss and error per epoch. The training numbers are running means "
            "over each epoch's mini-batches (with augmentation and dropout on); the dev "
            "numbers are measured at the end of the epoch."
        )
        if self.human is not None:
            say += (
                f" The dashed line is human-level error ({_pct(self.human, 2)}), the proxy for "
                "Bayes error: the gap down to it from training error is avoidable bias."
            )
        else:
            say += " Pass human=2% (for example) to draw the human-level line."
        return f"<p>{_e(say)}</p>\n{img}"

    def _diagnosis(self) -> str | None:
        from cnnkit.strategy.diagnosis import diagnose

        if self.multilabel:
            return None
        errors, counts = {}, {}
        for name, o in self.outputs.items():
            errors[name] = float((o.log_probs.argmax(1) != o.labels).double().mean())
            counts[name] = len(o.labels)
        head = (
            "Errors of the best weights measured on every split, in evaluation mode (the "
            "training error here is not the running mean of the curves)."
        )
        if "dev" not in errors and "test" in errors:  # the test error stands in for dev
            errors["dev"], counts["dev"] = errors.pop("test"), counts.pop("test")
            head += " The run has no dev split: its test error stands in for the dev error."
        try:
            d = diagnose(self.human, **errors, unit="fraction", counts=counts)
        except CnnkitError as e:  # e.g. a training error alone: nothing to compare
            self.notes.append(f"no diagnosis: {e}")
            return None
        d.source = str(self.run)
        head += "".join(f" Note: {n}." for n in self.notes if n.startswith("training error"))
        return f"<p>{_e(head)}</p>\n<pre>{_e(d.table())}</pre>"

    def _report(self) -> Any:
        from cnnkit.evaluate.metrics import classification_report

        if not hasattr(self, "_rep"):
            name = self.split
            o = self.outputs[name]
            self._rep_split = name
            self._rep = classification_report(
                o.log_probs, o.labels, classes=self.classes, title=f"{name} split"
            )
        return self._rep

    def _per_class(self) -> str | None:
        if self.multilabel:
            return None
        rep = self._report()
        rows = []
        for c, p, rc, f, s in zip(rep.classes, rep.precision, rep.recall, rep.f1, rep.support):
            rows.append([c, _pct(p), _pct(rc), _pct(f), f"{s:,}"])
        for label, avg in (("macro avg", rep.macro), ("micro avg", rep.micro)):
            rows.append(
                [label, _pct(avg["precision"]), _pct(avg["recall"]), _pct(avg["f1"]), f"{rep.n:,}"]
            )
        head = f"<p>On the {_e(self._rep_split)} split ({rep.n:,} images).</p>"
        return head + _table(["class", "precision", "recall", "F1", "support"], rows)

    def _confusion(self) -> str | None:
        from cnnkit.report.plots import plot_confusion

        if self.multilabel:
            return None
        rep = self._report()
        fig = plot_confusion(rep.confusion, rep.classes, title=f"{self._rep_split} split")
        img = _plot("confusion", _png(fig), "confusion matrix", self.plots)
        worst = rep.top_confusions(10)
        rows = [[t, p, f"{c:,}", _pct(s)] for t, p, c, s in worst]
        table = (
            _table(["true class", "predicted", "images", "share of the true class"], rows)
            if rows
            else "<p>No confusions: every image is on the diagonal.</p>"
        )
        say = (
            "Rows are the true class, columns the predicted class; the colour is the share "
            "of the row (where the images of a class go). The largest confusions:"
        )
        return f"{img}\n<p>{_e(say)}</p>\n{table}"

    def _worst(self) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """The misclassified images of the report split, highest loss first."""
        o = self.outputs[self._rep_split]
        P = o.log_probs.exp()
        pred = P.argmax(1)
        loss = -o.log_probs.gather(1, o.labels[:, None])[:, 0]  # (N, 1) -> (N,)
        wrong = torch.nonzero(pred != o.labels)[:, 0]  # (M, 1) -> (M,)
        order = wrong[torch.argsort(loss[wrong], descending=True, stable=True)]
        return o, P, order

    def _errors(self) -> str | None:
        if self.multilabel:
            return None
        self._report()
        o, P, order = self._worst()
        ds = self.sets[self._rep_split]
        n_wrong = len(order)
        if not n_wrong:
            return "<p>No misclassified images on the split.</p>"
        shown = order[: self.gallery]
        if self.arrays:  # no thumbnails of signals / volumes: a table of the files
            return self._errors_table(o, P, ds, shown, n_wrong)
        cells = []
        for i in shown.tolist():
            t, p = int(o.labels[i]), int(P[i].argmax())
            cap = (
                f'true {_e(self.classes[t])}<br><span class="bad">pred {_e(self.classes[p])} '
                f"{_pct(float(P[i, p]))}</span><br>p(true) {_pct(float(P[i, t]))}"
            )
            ident = f' title="{_e(ds.ids[i])}"' if ds.ids is not None else ""
            cells.append(
                f'<figure><img src="{_uri(_image_png(ds.images[i]))}" alt="image {i}"{ident}>'
                f"<figcaption>{cap}</figcaption></figure>"
            )
        from cnnkit.report.plots import plot_top_losses

        k = min(16, n_wrong)
        images = ds.images[order[:k]].float() / 255
        sel = order[:k]
        fig = plot_top_losses(images, o.labels[sel], P[sel].argmax(1), P[sel], self.classes, k=k)
        self.plots["top_losses"] = _png(fig)
        say = (
            f"{n_wrong:,} of {len(o.labels):,} {self._rep_split} images are misclassified; "
            f"{'all' if len(shown) == n_wrong else f'the {len(shown)} with the highest loss'} "
            "are shown, highest loss -log p(true) first, with the true class, the prediction "
            "and its probability, and the probability of the true class. Tag them with "
            f"cnnkit analyze run={self.run} to count what the errors have in common."
        )
        return f'<p>{_e(say)}</p>\n<div class="gallery">\n' + "\n".join(cells) + "\n</div>"

    def _errors_table(
        self, o: Any, P: torch.Tensor, ds: Any, shown: torch.Tensor, n_wrong: int
    ) -> str:
        """The misclassified signals / volumes as a table of files (no thumbnails)."""
        rows = []
        for i in shown.tolist():
            t, p = int(o.labels[i]), int(P[i].argmax())
            ident = ds.ids[i] if ds.ids is not None else f"#{i}"
            rows.append([ident, self.classes[t], self.classes[p], _pct(float(P[i, p])),
                         _pct(float(P[i, t]))])  # fmt: skip
        self.notes.append(
            "signals / volumes: misclassified examples listed by file (no thumbnails); no "
            "saliency maps or first-layer filter images (they draw 2D images)"
        )
        say = (
            f"{n_wrong:,} of {len(o.labels):,} {self._rep_split} examples are misclassified; "
            f"{'all' if len(shown) == n_wrong else f'the {len(shown)} with the highest loss'} "
            "are listed, highest loss -log p(true) first (signals and volumes are listed by "
            "file, not drawn)."
        )
        head = ["file", "true", "predicted", "p(predicted)", "p(true)"]
        return f"<p>{_e(say)}</p>\n" + _table(head, rows)

    def _saliency(self) -> str | None:
        from cnnkit.report.filters import panels, unit_range
        from cnnkit.report.plots import plain, saliency

        if self.multilabel or self.arrays:  # saliency maps are drawn as 2D images
            return None
        o, P, order = self._worst()
        if not len(order):
            return None
        ds = self.sets[self._rep_split]
        idx = order[:6].tolist()
        fig, axes = panels("", 2 * len(idx), 2, len(idx), (1.6, 1.6))
        for j, i in enumerate(idx):
            x = self.pre.normalize(ds.images[i : i + 1])[0]
            sal = saliency(self.model, x, target=int(P[i].argmax()))
            img = ds.images[i].float() / 255
            show = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)  # CHW -> HWC
            axes[j].imshow(show.numpy(), cmap="gray" if img.shape[0] == 1 else None)
            t, p = self.classes[int(o.labels[i])], self.classes[int(P[i].argmax())]
            axes[j].set_title(plain(f"true {t}\npred {p}"), fontsize=8)
            axes[len(idx) + j].imshow(unit_range(sal).numpy(), cmap="hot")
        img = _plot("saliency", _png(fig), "saliency maps", self.plots, "plot small")
        say = (
            "Top row: the misclassified images with the highest loss; bottom row: their "
            "saliency, |d score(predicted class) / d pixel| (the largest over the colour "
            "channels; Simonyan et al. 2013): the pixels whose change would move the wrong "
            "score most."
        )
        return f"<p>{_e(say)}</p>\n{img}"

    def _filters(self) -> str | None:
        from cnnkit.report.filters import find_layer, plot_filters

        if self.arrays:  # 1D / 3D kernels are not drawn as 2D filter images
            return None
        try:
            name, _ = find_layer(self.model)
        except CnnkitError:
            self.notes.append("the model has no convolution: no filters to show")
            return None
        fig = plot_filters(self.model, name)
        img = _plot("filters", _png(fig), "first-layer filters", self.plots)
        say = (
            f"The filters of the first convolution ({name}), one panel per filter: the "
            "weights as an image (grey: one input channel, 0 is mid-grey; colour: RGB)."
        )
        return f"<p>{_e(say)}</p>\n{img}"

    def _augmentation(self) -> str | None:
        from cnnkit.data.augment import Augment
        from cnnkit.report.plots import plot_augmentation
        from cnnkit.train.config import TrainConfig

        train = self.sets.get("train")
        if train is None:
            return None
        if self.arrays:
            return "<p>No augmentation: signals and volumes are trained without it.</p>"
        keys = set(TrainConfig.keys())
        tc = TrainConfig.from_dict({k: v for k, v in self.cfg.items() if k in keys})
        aug = Augment.from_config(tc, train)
        if not aug.active:
            return f"<p>No augmentation (aug={_e(self.cfg.get('aug'))}).</p>"
        fig = plot_augmentation(train.images[:4], aug, k=5, seed=0)
        img = _plot("augmentation", _png(fig), "augmentation preview", self.plots, "plot small")
        return (
            f"<p>Four training images and five augmented copies of each "
            f"(aug={_e(self.cfg.get('aug'))}, as the run trained).</p>\n{img}"
        )

    def _speed(self, history: dict[str, list[float]]) -> str:
        rows = []
        lines = self.summary_lines
        chosen = [x.removeprefix("speed: ") for x in lines if x.startswith("speed: ")]
        for key in ("precision", "memory_format", "compile", "batch", "workers"):
            rows.append([key, str(self.cfg.get(key))])
        if history:  # columns of results.csv, NaN where a cell is empty
            ips = [v for v in history.get("img_per_s", []) if not math.isnan(v)]
            secs = float(np.nansum(history.get("seconds", [])))
            wait = float(np.nansum(history.get("data_s", [])))
            if ips:
                rows.append(["median images / s", f"{float(np.median(ips)):,.0f}"])
            rows.append(["training time", f"{secs:.1f} s over {len(history['epoch'])} epochs"])
            rows.append(["waiting for batches", f"{wait:.1f} s"])
        body = _table(["setting", "value"], rows)
        if chosen:
            body = f"<p>{_e(chosen[0])}</p>\n" + body
        return body

    def _config(self) -> str:
        items = "\n".join(
            f'<div><span class="k">{_e(k)}</span> <span class="v">'
            f"{_e('none' if v is None else v)}</span></div>"
            for k, v in self.cfg.items()
        )
        say = (
            f"Every resolved setting (config.yaml): cnnkit train cfg={self.run}/config.yaml "
            "repeats the run."
        )
        return f'<p>{_e(say)}</p>\n<div class="settings">\n{items}\n</div>'
