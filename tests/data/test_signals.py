"""Folders of 1D signals and 3D volumes (.npy / .csv) and the synthetic tasks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cnnkit.cli import main
from cnnkit.data import ArraySet, load, resolve_source
from cnnkit.data.signals import (
    SIGNAL_CLASSES,
    VOLUME_CLASSES,
    is_array_folder,
    peek_folder,
    shape_mask,
    synth_signals,
    synth_volumes,
    write_signals,
    write_volumes,
)
from cnnkit.errors import CnnkitError


def _write(root: Path, arrays: dict[str, list[np.ndarray]], suffix: str = ".npy") -> Path:
    """``root/<class>/<k>.npy|csv`` for each class's arrays."""
    for c, items in arrays.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for k, a in enumerate(items):
            if suffix == ".npy":
                np.save(root / c / f"{k:03d}.npy", a)
            else:
                np.savetxt(root / c / f"{k:03d}.csv", np.atleast_2d(a), delimiter=",")
    return root


def _signals(n: int = 10, length: int = 32, channels: int | None = None, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    shape = (length,) if channels is None else (channels, length)
    return {
        "a": [rng.normal(0, 1, shape).astype(np.float32) for _ in range(n)],
        "b": [rng.normal(3, 2, shape).astype(np.float32) for _ in range(n)],
    }


def test_flat_signal_folder_loads_with_stratified_carved_splits(tmp_path: Path) -> None:
    root = _write(tmp_path / "sig", _signals(n=20, length=32))
    assert resolve_source(root) == ("arrays", root)
    assert is_array_folder(root)
    assert peek_folder(root)[:2] == (1, (1, 32))
    data = load(root, dev=0.2, test=0.2, seed=3)
    assert isinstance(data.train, ArraySet) and data.train.dims == 1
    assert data.info.classes == ["a", "b"]
    sizes = {k: len(v) for k, v in data.splits().items()}
    assert sizes == {"train": 24, "dev": 8, "test": 8}
    for ds in data.splits().values():  # stratified: each class keeps its half
        assert int((ds.labels == 0).sum()) * 2 == len(ds)
        assert ds.x.shape[1:] == (1, 32)  # (n,) -> (1, n): one channel
    pre = data.info.preprocess
    assert (pre.dims, pre.size, pre.channels) == (1, (32,), 1)
    # statistics of the training split only
    assert pre.mean[0] == pytest.approx(float(data.train.x.double().mean()), abs=1e-9)
    assert pre.std[0] == pytest.approx(float(data.train.x.double().std(unbiased=False)), rel=1e-6)
    assert pre.to_dict()["dims"] == 1
    x, _ = data.train[0]  # normalized
    assert torch.allclose(x, (data.train.x[0] - pre.mean[0]) / pre.std[0])
    # the same seed gives the same split
    again = load(root, dev=0.2, test=0.2, seed=3)
    assert again.test.ids == data.test.ids


def test_split_folders_multichannel_signals_and_val(tmp_path: Path) -> None:
    root = tmp_path / "sig"
    _write(root / "train", _signals(n=8, length=40, channels=3, seed=1))
    _write(root / "val", _signals(n=2, length=40, channels=3, seed=2))
    _write(root / "test", _signals(n=3, length=40, channels=3, seed=3))
    data = load(root)
    assert {k: len(v) for k, v in data.splits().items()} == {"train": 16, "dev": 4, "test": 6}
    assert data.info.splits_from["dev"] == "source"
    assert data.train.x.shape == (16, 3, 40)
    pre = data.info.preprocess
    want = data.train.x.double().mean(dim=(0, 2))  # per channel over N and n
    assert np.allclose(pre.mean, want.numpy(), atol=1e-9)


def test_volumes_rank3_and_rank4(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    one = {c: [rng.normal(0, 1, (6, 7, 8)) for _ in range(10)] for c in ("x", "y")}
    data = load(_write(tmp_path / "v1", one))
    assert data.train.dims == 3 and data.train.x.shape[1:] == (1, 6, 7, 8)
    assert data.info.preprocess.size == (6, 7, 8) and data.info.preprocess.dims == 3
    two = {c: [rng.normal(0, 1, (2, 5, 5, 5)) for _ in range(10)] for c in ("x", "y")}
    data = load(_write(tmp_path / "v2", two))
    assert data.train.x.shape[1:] == (2, 5, 5, 5) and data.info.preprocess.channels == 2
    assert data.train.x.dtype == torch.float32


def test_csv_equals_npy(tmp_path: Path) -> None:
    arrays = _signals(n=6, length=24, channels=2, seed=5)
    a = load(_write(tmp_path / "npy", arrays), seed=1)
    b = load(_write(tmp_path / "csv", arrays, ".csv"), seed=1)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.train.labels, b.train.labels)
    assert a.info.preprocess.mean == b.info.preprocess.mean
    # a one-row csv is a 1-channel signal
    c = load(_write(tmp_path / "csv1", _signals(n=6, length=24), ".csv"))
    assert c.train.x.shape[1:] == (1, 24)


def _bad_cases() -> dict[str, tuple]:
    """name -> (writer(path), words the message holds)."""

    def obj(p: Path) -> None:
        np.save(p, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)

    return {
        "object": (obj, "object array"),
        "nan": (lambda p: np.save(p, np.array([1.0, np.nan] * 16)), "NaN or infinite"),
        "inf": (lambda p: np.save(p, np.full(32, np.inf)), "NaN or infinite"),
        "rank5": (lambda p: np.save(p, np.zeros((1, 2, 2, 2, 2))), "reshape it"),
        "transposed": (lambda p: np.save(p, np.zeros((32, 1))), "looks transposed"),
        "strings": (lambda p: np.save(p, np.array(["a", "b"])), "not real numbers"),
        "not_npy": (lambda p: p.write_bytes(b"hello, not an array"), "np.save"),
        "empty": (lambda p: np.save(p, np.zeros(0)), "empty"),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_file_refused_by_the_cli(case: str, tmp_path: Path, capsys) -> None:
    root = _write(tmp_path / "sig", _signals(n=4, length=32))
    writer, words = _bad_cases()[case]
    bad = root / "b" / "zzz.npy"  # read last: the good files come first
    writer(bad)
    rc = main(["train", "model=resnet1d", f"data={root}", f"project={tmp_path / 'runs'}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert str(bad) in err and words in err
    assert err.count("\n") == 0 and err.endswith(".")  # one sentence
    assert not (tmp_path / "runs").exists()  # refused before a run folder exists


def test_bad_csv_refused(tmp_path: Path) -> None:
    root = _write(tmp_path / "sig", _signals(n=4, length=32), ".csv")
    bad = root / "a" / "zzz.csv"
    bad.write_text("1,2,3\n4,five,6\n")
    with pytest.raises(CnnkitError, match="is not comma-separated numbers") as e:
        load(root)
    assert str(bad) in str(e.value)


def test_mixed_shapes_and_ranks_name_the_first_offender(tmp_path: Path, capsys) -> None:
    root = _write(tmp_path / "sig", _signals(n=4, length=32))
    np.save(root / "b" / "x_short.npy", np.zeros(30))
    np.save(root / "b" / "y_short.npy", np.zeros(29))
    rc = main(["train", "model=resnet1d", f"data={root}", f"project={tmp_path / 'runs'}"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "x_short.npy" in err and "y_short.npy" not in err and "30x1" in err
    assert str(root / "a" / "000.npy") in err and "32x1" in err
    root2 = _write(tmp_path / "mix", _signals(n=4, length=32))
    np.save(root2 / "b" / "vol.npy", np.zeros((4, 4, 4)))
    with pytest.raises(CnnkitError, match=r"3D volumes .* but the first file .* 1D signals"):
        load(root2)


def test_images_mixed_in_and_size_refused(tmp_path: Path) -> None:
    from PIL import Image

    root = _write(tmp_path / "sig", _signals(n=4, length=32))
    Image.new("L", (4, 4)).save(root / "b" / "zz.png")
    with pytest.raises(CnnkitError, match="is an image in a folder of signals"):
        load(root)
    (root / "b" / "zz.png").unlink()
    with pytest.raises(CnnkitError, match="not resampled"):
        load(root, size=(28, 28))
    with pytest.raises(CnnkitError, match="one example"):
        resolve_source(root / "a" / "000.npy")


def test_synthetic_signals_deterministic_and_class_signal_present() -> None:
    x, y, p = synth_signals(12, 256, seed=7)
    x2, y2, _ = synth_signals(12, 256, seed=7)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert not np.array_equal(x, synth_signals(12, 256, seed=8)[0])
    assert x.shape == (48, 1, 256) and x.dtype == np.float32
    assert list(np.bincount(y)) == [12] * 4
    # without noise: a sine's dominant FFT frequency is the drawn one (cycles per signal)
    clean, yc, pc = synth_signals(12, 256, seed=7, noise=0.0)
    for c in ("sine", "square", "sawtooth"):  # the fundamental dominates each
        rows = yc == SIGNAL_CLASSES.index(c)
        spec = np.abs(np.fft.rfft(clean[rows, 0] - clean[rows, 0].mean(1, keepdims=True)))
        assert np.array_equal(spec.argmax(1), np.round(pc["freq"][rows]))
    # with noise, the sine's peak is still at the drawn frequency (within one bin)
    rows = y == SIGNAL_CLASSES.index("sine")
    spec = np.abs(np.fft.rfft(x[rows, 0] - x[rows, 0].mean(1, keepdims=True)))
    assert np.all(np.abs(spec.argmax(1) - p["freq"][rows]) <= 1)
    # a chirp's frequency rises: its second half has a higher dominant frequency
    rows = yc == SIGNAL_CLASSES.index("chirp")
    parts = [clean[rows, 0, :128], clean[rows, 0, 128:]]
    half = [np.abs(np.fft.rfft(h - h.mean(1, keepdims=True))).argmax(1) for h in parts]
    assert np.all(half[1] > half[0])
    # a square wave takes two values, a sawtooth ramps (its samples cover the range)
    rows = yc == SIGNAL_CLASSES.index("square")
    levels = (clean[rows, 0] - pc["offset"][rows, None]) / pc["amplitude"][rows, None]
    assert np.allclose(np.abs(levels), 1.0, atol=1e-5)


def test_shape_voxel_counts_match_geometry() -> None:
    r, c = 10.0, (32.5, 32.5, 32.5)
    sphere = int(shape_mask("sphere", 64, c, r).sum())
    cube = int(shape_mask("cube", 64, c, r).sum())
    cyl = int(shape_mask("cylinder", 64, c, r, axis=1).sum())
    assert sphere == pytest.approx(4 / 3 * np.pi * r**3, rel=0.03)
    assert cube == pytest.approx((2 * r) ** 3, rel=0.03)
    assert cyl == pytest.approx(np.pi * r**2 * 2 * r, rel=0.03)
    assert cube / sphere == pytest.approx(6 / np.pi, rel=0.05)


def test_synthetic_volumes_deterministic_and_shape_present() -> None:
    x, y, _ = synth_volumes(3, 16, seed=1)
    assert np.array_equal(x, synth_volumes(3, 16, seed=1)[0])
    assert x.shape == (9, 1, 16, 16, 16) and list(np.bincount(y)) == [3, 3, 3]
    clean, yc, pc = synth_volumes(3, 16, seed=1, noise=0.0)
    for i in range(len(yc)):
        kind = VOLUME_CLASSES[yc[i]]
        m = shape_mask(kind, 16, pc["center"][i], pc["radius"][i], int(pc["axis"][i]))
        v = clean[i, 0]
        assert m.any() and not m.all()
        assert np.allclose(v[m], pc["background"][i] + pc["intensity"][i], atol=1e-5)
        assert np.allclose(v[~m], pc["background"][i], atol=1e-5)


def test_write_and_cli_synth(tmp_path: Path, capsys) -> None:
    out = write_signals(tmp_path / "s", n=5, length=48, seed=2)
    data = load(out)
    assert {k: len(v) for k, v in data.splits().items()} == {"train": 12, "dev": 4, "test": 4}
    assert data.info.classes == list(SIGNAL_CLASSES)
    out = write_volumes(tmp_path / "v", n=5, size=8, seed=2)
    assert load(out).train.x.shape == (9, 1, 8, 8, 8)
    assert main(["data", "synth", "signals", f"out={tmp_path / 'c'}", "n=5", "length=64"]) == 0
    assert "train with: cnnkit train model=resnet1d" in capsys.readouterr().out
    a = np.load(tmp_path / "c" / "train" / "sine" / "00000.npy")
    b = np.load(tmp_path / "s" / "train" / "sine" / "00000.npy")
    assert a.shape == (1, 64) and b.shape == (1, 48)
    assert main(["data", "synth", "volumes", f"out={tmp_path / 'cv'}", "n=3", "size=8"]) == 0
    assert sorted(p.name for p in (tmp_path / "cv" / "test").iterdir()) == list(VOLUME_CLASSES)
    assert main(["data", "synth", "volumes", f"out={tmp_path / 'x'}", "length=9"]) == 2
    assert "unknown key 'length'" in capsys.readouterr().err
    assert main(["data", "synth", "signals", f"out={tmp_path / 'x'}", "noise=-1"]) == 2


def test_an_image_folder_with_arrays_beside_its_classes_stays_an_image_folder(tmp_path: Path):
    """A mean.npy at the top, a labels CSV inside a class folder, a hidden notebook folder of
    arrays: the class folders hold images, so it is an ImageFolder, as before signals."""
    from PIL import Image

    from cnnkit.data import load

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for k in range(6):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(
                tmp_path / c / f"{k}.png"
            )
    np.save(tmp_path / "mean.npy", np.zeros(3))
    (tmp_path / "a" / "annotations.csv").write_text("x,y\n")
    (tmp_path / "b" / ".ipynb_checkpoints").mkdir()
    np.save(tmp_path / "b" / ".ipynb_checkpoints" / "x.npy", np.zeros(4))
    data = load(tmp_path, test=0.25, dev=0.25)
    assert type(data.train).__name__ == "ImageSet"
    assert sum(len(s) for s in data.splits().values()) == 12  # the 12 PNGs, nothing else


def test_values_beyond_float32_are_refused_not_turned_into_inf(tmp_path: Path) -> None:
    from cnnkit.data.signals import read_array

    np.save(tmp_path / "big.npy", np.array([1.0, 1e39, 2.0]))
    with pytest.raises(
        CnnkitError,
        match=r"big\.npy.*1 NaN or infinite value\(s\) \(the first at index \(1,\)\) as float32",
    ):
        read_array(tmp_path / "big.npy")
