"""``cnnkit report run=... plot=NAME``: one plot of a run as a PNG, and its mistakes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 1-epoch LeNet-5 digits run (no page) and one digit as a PNG file."""
    from sklearn.datasets import load_digits

    from cnnkit.train.classify import train
    from cnnkit.train.config import TrainConfig

    root = tmp_path_factory.mktemp("report_cli")
    cfg = TrainConfig(epochs=1, project=str(root), verbose=0, report=False, compile=False)
    r = train(cfg)
    digit = load_digits().images[0]  # an 8x8 zero, values 0..16
    png = root / "zero.png"
    Image.fromarray((digit * 255 / 16).astype(np.uint8)).save(png)
    return r.run_dir, png


def _ok(capsys, args):
    code = main(args)
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out.strip().splitlines()[-1]


def _error(capsys, args) -> str:
    code = main(args)
    out = capsys.readouterr()
    assert code == 2, (out.out, out.err)
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnkit: error: "), out.err
    return lines[0]


def test_each_plot_is_saved_where_the_last_line_says(run, capsys, tmp_path):
    folder, png = run
    cases = {
        "filters": ["plot=filters"],
        "feature_maps": ["plot=feature_maps", f"image={png}", "layer=features.3"],
        "top_patches": ["plot=top_patches", "layer=features.3", "channel=2", "k=4"],
        "saliency": ["plot=saliency", f"image={png}"],
        "curves": ["plot=curves", "human=2%"],
    }
    for name, args in cases.items():
        out = tmp_path / f"{name}.png"
        last = _ok(capsys, ["report", f"run={folder}", *args, f"out={out}"])
        assert last == f"plot saved in {out}"
        with Image.open(out) as im:
            assert im.width > 100 and im.height > 100, name
    # the default place: run/plots/<plot>_<layer>.png
    last = _ok(capsys, ["report", f"run={folder}", "plot=filters", "layer=features.3"])
    assert last == f"plot saved in {folder / 'plots' / 'filters_features.3.png'}"


def test_saliency_plot_draws_the_input_gradient_of_the_predicted_class(run):
    """plot_run's saliency equals the gradient computed here by hand."""
    from cnnkit.data import Preprocess
    from cnnkit.report.plots import saliency
    from cnnkit.train.classify import load_run_model

    folder, png = run
    model, meta = load_run_model(folder)
    x = Preprocess.from_dict(meta["preprocess"]).load_files([png])  # (1, 1, 32, 32)
    with torch.no_grad():
        c = int(model(x).argmax(1))
    xg = x.clone().requires_grad_(True)
    model(xg)[0, c].backward()
    want = xg.grad[0].abs().amax(0)  # (1, n_H, n_W) -> (n_H, n_W)
    assert torch.allclose(saliency(model, x[0]), want, atol=1e-6)


@pytest.mark.parametrize(
    "args, words",
    [
        (["plot=filtres"], ["plot", "filters"]),
        (["plot=saliency"], ["plot=saliency needs image=FILE"]),
        (["plot=feature_maps", "image=/no/such.png"], ["'/no/such.png' is not a file"]),
        (["plot=top_patches"], ["needs layer="]),
        (["plot=filters", "layer=features.9"], ["features.9"]),
        (["plot=top_patches", "layer=features.3", "channel=-1"], ["channel"]),
        (["layer=features.0"], ["goes with plot="]),
        (["human=abc"], ["human", "human=2%"]),
        (["split=deev"], ["split", "dev"]),
        (["split=train_dev"], ["no train_dev split", "split= one of dev, test"]),
        (["plots=filters"], ["plot"]),
    ],
)
def test_mistakes_are_one_sentence_and_exit_2(run, capsys, args, words):
    folder, _ = run
    line = _error(capsys, ["report", f"run={folder}", *args])
    for w in words:
        assert w in line, line


def test_a_folder_that_is_not_a_run(capsys, tmp_path):
    line = _error(capsys, ["report", f"run={tmp_path}"])
    assert "config.yaml" in line or "not a run" in line, line
    line = _error(capsys, ["report"])
    assert "run=" in line


def test_multilabel_run_gets_per_label_scores_and_no_confusion_matrix(tmp_path):
    """A multi-label run (synthetic driving scenes, 30% of labels missing) gets a page too."""
    import cnnkit.data as d
    from cnnkit.evaluate.metrics import multilabel_run_report
    from cnnkit.report import write_report
    from cnnkit.train.classify import train
    from cnnkit.train.config import TrainConfig

    csv = d.write_scenes(tmp_path / "scenes", 60, size=32, seed=0, missing=0.3)
    cfg = TrainConfig(
        data=str(csv), epochs=1, batch=16, project=str(tmp_path), verbose=0, report=False
    )
    r = train(cfg)
    rep = write_report(r.run_dir)
    assert rep.sections == ["summary", "curves", "filters", "augmentation", "speed", "config"]
    assert any("multi-label" in n for n in rep.notes)
    text = rep.path.read_text()
    ml = multilabel_run_report(r.run_dir, None, split="dev")
    import html

    assert html.escape(ml.table()) in text  # the per-label table of cnnkit val report=true
    assert sorted(rep.plots) == ["augmentation", "filters", "learning_curves"]


def test_training_error_of_a_large_training_set_is_measured_on_a_sample(run, monkeypatch, tmp_path):
    """Above TRAIN_CAP training images the diagnosis uses a seeded sample, and says so."""
    import cnnkit.report.html as page

    folder, _ = run
    monkeypatch.setattr(page, "TRAIN_CAP", 100)
    rep = page.write_report(folder, out=tmp_path / "r.html")
    note = "training error measured on a random 100 of the 1,258 training images"
    assert note in rep.notes
    text = rep.path.read_text()
    assert "(of 100 images wrong)" in text or " of 100 images wrong)" in text
    assert f"Note: {note}." in text


def test_two_class_run_with_one_sigmoid_output_gets_its_page_and_saliency(tmp_path):
    """A two-class run has one output unit; saliency is |d z / d x| whichever class."""
    from cnnkit.report import write_report
    from cnnkit.report.plots import saliency
    from cnnkit.train.classify import load_run_model, train
    from cnnkit.train.config import TrainConfig

    cfg = TrainConfig(classes=[3, 8], epochs=1, lr=3e-3, dev=0.5, project=str(tmp_path), verbose=0)
    r = train(cfg, report=False)
    model, _ = load_run_model(r.run_dir)
    x = torch.zeros(1, 1, 32, 32)
    assert model(x).shape == (1, 1)  # one sigmoid output
    rep = write_report(r.run_dir)
    assert "saliency" in rep.sections and "errors" in rep.sections
    xg = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    xr = xg.clone().requires_grad_(True)
    model(xr)[0, 0].backward()
    want = xr.grad[0].abs().amax(0)
    assert torch.allclose(saliency(model, xg[0], target=0), want)
    assert torch.allclose(saliency(model, xg[0], target=1), want)  # log p1 - log p0 = z


def test_a_run_without_dev_split_shows_test_and_a_rebuild_drops_stale_plots(run, tmp_path):
    from cnnkit.report import write_report
    from cnnkit.train.classify import train
    from cnnkit.train.config import TrainConfig

    r = train(TrainConfig(epochs=1, dev=0, project=str(tmp_path), verbose=0, report=False))
    rep = write_report(r.run_dir)
    assert "the run has no dev split: the test split is shown" in rep.notes
    assert "On the test split (359 images)" in rep.path.read_text()
    # a stale page plot (from an earlier build) does not survive a rebuild
    stale = r.run_dir / "plots" / "saliency.png"
    stale.write_bytes(b"old")
    mine = r.run_dir / "plots" / "filters_features.3.png"  # a plot= file is left alone
    mine.write_bytes(b"mine")
    rep = write_report(r.run_dir)
    assert stale.exists() == ("saliency" in rep.plots)
    if stale.exists():
        assert stale.read_bytes() != b"old"
    assert mine.read_bytes() == b"mine"
