"""TensorBoard logging (``tensorboard=true``): the event files read back and checked.

The scalars are compared with ``results.csv`` (the same numbers, float32 in the event
file), the image grid's size with ``torchvision.utils.make_grid`` of the same batch
shape, a resumed run's event files with the epochs it trained; a missing ``tensorboard``
package is refused before anything is trained or written.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import TensorDataset
from torchvision.utils import make_grid

from cnnkit.errors import CnnkitError
from cnnkit.train import fit, tboard
from cnnkit.train import loop as loop_mod
from cnnkit.train.classify import resume, train
from cnnkit.train.config import TrainConfig

EventAccumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator"
).EventAccumulator


FAST = {"precision": "fp32", "memory_format": "contiguous", "compile": False, "verbose": 0}
TAGS = {
    "loss/train",
    "accuracy/train",
    "loss/dev",
    "accuracy/dev",
    "lr",
    "speed/seconds",
    "speed/img_per_s",
    "speed/data_s",
}


def _digits(tmp_path: Path, **kw) -> TrainConfig:
    """LeNet-5 on the bundled digits (1,258 training images, 32x32): ~1 s an epoch."""
    return TrainConfig(model="lenet5", data="digits", project=str(tmp_path), **{**FAST, **kw})


def _results(run: Path) -> list[dict[str, float]]:
    with open(run / "results.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _events(path: Path):
    ea = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    return ea


def _scalars(ea, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in ea.Scalars(tag)}


def _event_files(run: Path) -> list[Path]:
    return sorted((run / "tensorboard").glob("events.out.tfevents.*"))


def _tiny(n: int = 24, c: int = 3, hw: int = 6, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, c, hw, hw, generator=g), torch.randint(0, classes, (n,)))


def _net(c: int = 3, hw: int = 6, classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(c, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * (hw - 2) ** 2, classes)
    )


def test_scalars_match_results_csv_and_the_first_batch_is_shown(tmp_path):
    r = train(_digits(tmp_path, epochs=2, batch=64, tensorboard=True))
    rows = _results(r.run_dir)
    assert [row["epoch"] for row in rows] == [1.0, 2.0]
    files = _event_files(r.run_dir)
    assert len(files) == 1
    ea = _events(r.run_dir / "tensorboard")
    assert set(ea.Tags()["scalars"]) == TAGS
    checks = {
        "loss/dev": "dev_loss",
        "loss/train": "train_loss",
        "accuracy/train": "train_accuracy",
        "accuracy/dev": "dev_accuracy",
        "lr": "lr",
        "speed/img_per_s": "img_per_s",
        "speed/seconds": "seconds",
        "speed/data_s": "data_s",
    }
    for tag, col in checks.items():
        got = _scalars(ea, tag)
        assert sorted(got) == [1, 2], tag
        for row, hist in zip(rows, r.fit.history, strict=True):
            step = int(row["epoch"])
            # results.csv keeps 6 significant digits; the event file float32
            assert got[step] == pytest.approx(row[col], rel=1e-5, abs=1e-9), tag
            assert got[step] == pytest.approx(hist[col], rel=1e-6, abs=1e-12), tag
    assert _scalars(ea, "loss/dev")[2] < _scalars(ea, "loss/dev")[1]  # it really trained

    images = ea.Images("train/batch")
    assert [im.step for im in images] == [0]  # once, at step 0
    grid = make_grid(torch.zeros(16, 1, 32, 32))  # 16 of 64 grey 32x32 images, 8 a row
    png = Image.open(io.BytesIO(images[0].encoded_image_string))
    assert (images[0].width, images[0].height) == (grid.shape[2], grid.shape[1])
    assert png.size == (grid.shape[2], grid.shape[1]) == (274, 70)
    pixels = torch.tensor(np.array(png.convert("L")), dtype=torch.float32)
    assert pixels.max() > 200 and pixels.min() < 30  # digits on a dark ground, not a blank
    assert pixels.std() > 20


def test_no_tensorboard_folder_when_off(tmp_path):
    r = train(_digits(tmp_path, epochs=1, batch=256))
    assert (r.run_dir / "results.csv").is_file()
    assert not (r.run_dir / "tensorboard").exists()


def test_resume_appends_an_event_file_and_continues_the_epochs(tmp_path):
    r1 = train(_digits(tmp_path, epochs=1, batch=128, tensorboard=True))
    run = r1.run_dir
    assert len(_event_files(run)) == 1
    r2 = resume(run, epochs=2, verbose=0)
    assert r2.run_dir == run
    files = _event_files(run)
    assert len(files) == 2  # a new event file beside the first
    rows = _results(run)
    ea = _events(run / "tensorboard")  # the folder: both files, in order
    for tag, col in (("loss/dev", "dev_loss"), ("lr", "lr"), ("accuracy/train", "train_accuracy")):
        got = _scalars(ea, tag)
        assert sorted(got) == [1, 2], tag
        for row in rows:
            assert got[int(row["epoch"])] == pytest.approx(row[col], rel=1e-5, abs=1e-9)
    first, second = (_events(f) for f in files)
    assert sorted(_scalars(first, "loss/dev")) == [1]
    assert sorted(_scalars(second, "loss/dev")) == [2]
    assert [im.step for im in first.Images("train/batch")] == [0]
    assert second.Tags()["images"] == []  # the images only once, not after resume
    assert [im.step for im in ea.Images("train/batch")] == [0]


def test_a_run_resumed_after_a_lost_checkpoint_hides_the_repeated_epoch(tmp_path):
    """Scalars logged before a kill outran the epoch's checkpoint are superseded."""
    run = tmp_path / "run"
    fit(_net(), _tiny(), _tiny(seed=1), run_dir=run, epochs=2, batch=8, tensorboard=True, **FAST)
    # as if killed after epoch 2 was logged but before its checkpoint: resume from epoch 1
    log = tboard.TensorBoardLog(run, purge_step=2)  # what fit() opens on that resume
    log.epoch({"epoch": 2, "dev_loss": 123.0})
    log.close()
    ea = _events(run / "tensorboard")
    assert 2 not in _scalars(ea, "loss/train")  # the first file's epoch 2: hidden
    assert _scalars(ea, "loss/dev")[2] == 123.0
    assert 1 in _scalars(ea, "loss/train")


def test_generic_dataset_images_are_min_max_scaled(tmp_path):
    run = tmp_path / "run"
    r = fit(_net(c=5), _tiny(c=5), None, run_dir=run, epochs=1, batch=8, tensorboard=True, **FAST)
    ea = _events(run / "tensorboard")
    assert set(ea.Tags()["scalars"]) == {
        "loss/train",
        "accuracy/train",
        "lr",
        "speed/seconds",
        "speed/img_per_s",
        "speed/data_s",
    }
    assert _scalars(ea, "loss/train")[1] == pytest.approx(r.history[0]["train_loss"], rel=1e-6)
    (im,) = ea.Images("train/batch")
    grid = make_grid(torch.zeros(8, 1, 6, 6))  # 5 channels: the first one shown
    assert (im.width, im.height) == (grid.shape[2], grid.shape[1])


def test_display_images_undo_normalization_or_stretch_each_image():
    x01 = torch.rand(4, 3, 5, 5)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    back = tboard.display_images((x01 - m) / s, mean, std)
    torch.testing.assert_close(back, x01, atol=1e-6, rtol=0)
    stretched = tboard.display_images(torch.randn(4, 1, 5, 5) * 7 + 3)
    flat = stretched.reshape(4, -1)
    torch.testing.assert_close(flat.min(1).values, torch.zeros(4))
    torch.testing.assert_close(flat.max(1).values, torch.ones(4))
    assert tboard.display_images(torch.full((2, 3, 4, 4), 5.0)).eq(0).all()  # flat: no NaN


def test_scalar_tags():
    assert tboard.scalar_tag("train_loss") == "loss/train"
    assert tboard.scalar_tag("dev_top5_accuracy") == "top5_accuracy/dev"
    assert tboard.scalar_tag("lr") == "lr"
    assert tboard.scalar_tag("img_per_s") == "speed/img_per_s"
    assert tboard.scalar_tag("data_s") == "speed/data_s"
    assert tboard.scalar_tag("seconds") == "speed/seconds"


def test_missing_tensorboard_is_refused_before_training(tmp_path, monkeypatch):
    real = tboard.find_spec
    monkeypatch.setattr(
        tboard, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a)
    )
    with pytest.raises(CnnkitError, match="pip install tensorboard"):
        train(_digits(tmp_path, epochs=1, tensorboard=True))
    assert not list(tmp_path.rglob("*.safetensors"))
    assert not list(tmp_path.rglob("last_state.pt"))
    assert not list(tmp_path.rglob("results.csv"))
    assert not list(tmp_path.rglob("tensorboard"))

    steps = []
    net = _net()
    net.register_forward_hook(lambda *a: steps.append(1))
    with pytest.raises(CnnkitError, match=r"cnnkit\[tensorboard\]"):
        fit(net, _tiny(), None, run_dir=tmp_path / "fit", epochs=1, tensorboard=True, **FAST)
    assert steps == []  # not one forward pass
    assert not (tmp_path / "fit").exists()
    # without a run folder nothing would be written: no package needed
    r = fit(_net(), _tiny(), None, epochs=1, batch=8, tensorboard=True, **FAST)
    assert len(r.history) == 1


def test_writer_is_closed_on_early_stop_and_on_errors(tmp_path, monkeypatch):
    closed = []
    real_close = tboard.TensorBoardLog.close

    def close(self):
        closed.append(self.folder)
        real_close(self)

    monkeypatch.setattr(tboard.TensorBoardLog, "close", close)
    # early stop: only the first epoch counts as an improvement, patience 1
    monkeypatch.setattr(loop_mod, "_better", lambda value, best, higher: best is None)
    r = fit(
        _net(),
        _tiny(),
        _tiny(seed=1),
        run_dir=tmp_path / "stop",
        epochs=5,
        batch=8,
        patience=1,
        tensorboard=True,
        **FAST,
    )
    assert r.stopped_early and len(r.history) == 2
    assert closed == [tmp_path / "stop" / "tensorboard"]
    assert sorted(_scalars(_events(tmp_path / "stop" / "tensorboard"), "loss/dev")) == [1, 2]

    # an error in the second epoch: the first epoch's scalars are on disk, the file closed
    net = _net()
    calls = [0]

    def boom(module, args):
        calls[0] += 1
        if calls[0] > 4:  # 24 examples of 8: 3 steps, then 1 dev batch of 24; then epoch 2
            raise RuntimeError("boom")

    net.register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        fit(net, _tiny(), _tiny(seed=1), run_dir=tmp_path / "err", epochs=3, batch=8,
            tensorboard=True, **FAST)  # fmt: skip
    assert closed[-1] == tmp_path / "err" / "tensorboard"
    assert sorted(_scalars(_events(tmp_path / "err" / "tensorboard"), "loss/dev")) == [1]


def test_only_the_main_process_writes(tmp_path, monkeypatch):
    made = []
    monkeypatch.setattr(loop_mod, "TensorBoardLog", lambda *a, **k: made.append(a))
    monkeypatch.setattr(loop_mod.DistContext, "is_main", property(lambda self: False), raising=True)
    fit(_net(), _tiny(), None, run_dir=tmp_path / "r", epochs=1, batch=8, tensorboard=True, **FAST)
    assert made == []
    assert not (tmp_path / "r" / "tensorboard").exists()
