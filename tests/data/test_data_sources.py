"""cnnkit.data.load: digits, IDX and CIFAR folders, ImageFolder layouts, splits and statistics."""

from __future__ import annotations

import gzip
import pickle
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.data import load
from cnnkit.errors import CnnkitError

# ----------------------------------------------------------------------------- helpers


def np_stats(images) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean / population std of uint8 (N, C, H, W) in 0-1 units, by numpy."""
    x = images.numpy().astype(np.float64) / 255.0
    return x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))


def split_ids(data) -> dict[str, list[str]]:
    return {k: list(v.ids) for k, v in data.splits().items()}


def assert_partition(data, universe: set[str]) -> None:
    ids = split_ids(data)
    seen: list[str] = []
    for v in ids.values():
        seen += v
    assert len(seen) == len(set(seen)), "splits overlap"
    assert set(seen) == universe


def write_idx(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    path.write_bytes(gzip.compress(raw + arr.astype(np.uint8).tobytes()))


def write_mnist(folder: Path, n_train=40, n_test=10, hw=(6, 6), seed=0):
    rng = np.random.default_rng(seed)
    xtr = rng.integers(0, 256, (n_train, *hw), dtype=np.uint8)
    ytr = np.arange(n_train) % 4
    xte = rng.integers(0, 256, (n_test, *hw), dtype=np.uint8)
    yte = np.arange(n_test) % 4
    write_idx(folder / "train-images-idx3-ubyte.gz", xtr)
    write_idx(folder / "train-labels-idx1-ubyte.gz", ytr)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", xte)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", yte)
    return xtr, ytr, xte, yte


def cifar_rows(images: np.ndarray) -> np.ndarray:
    n = len(images)
    rows = np.zeros((n, 3072), np.uint8)
    for i in range(n):
        for c in range(3):
            rows[i, c * 1024 : (c + 1) * 1024] = images[i, :, :, c].ravel()
    return rows


def write_cifar10(folder: Path, per_batch=4, n_test=6, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for b in range(1, 6):
        x = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        y = [(b + i) % 2 for i in range(per_batch)]
        with open(folder / f"data_batch_{b}", "wb") as f:
            pickle.dump({b"data": cifar_rows(x), b"labels": y}, f, protocol=2)
        xs.append(x)
        ys += y
    xt = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
    yt = [i % 2 for i in range(n_test)]
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": cifar_rows(xt), b"labels": yt}, f, protocol=2)
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in names]}, f, protocol=2)
    return np.concatenate(xs), np.array(ys), xt, np.array(yt), names


def write_png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def make_folder(root: Path, counts: dict[str, int], hw=(8, 8), rgb=True, seed=0, offset=0):
    """root/<class>/<i>.png with random content; returns {path: array}."""
    rng = np.random.default_rng(seed)
    files = {}
    for cls, n in counts.items():
        for i in range(n):
            shape = (*hw, 3) if rgb else hw
            a = rng.integers(0, 256, shape, dtype=np.uint8)
            if offset:
                a = np.clip(a.astype(int) // 4 + offset, 0, 255).astype(np.uint8)
            files[str(write_png(root / cls / f"{i:03d}.png", a))] = a
    return files


def chw(a: np.ndarray) -> np.ndarray:
    return a.transpose(2, 0, 1) if a.ndim == 3 else a[None]


# ----------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def sk_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


@pytest.fixture(scope="module")
def digits():
    return load("digits")


def test_digits_sizes_and_partition(digits, sk_digits):
    n = len(sk_digits[1])
    assert n == 1797
    assert digits.train_dev is None
    assert len(digits.train) + len(digits.dev) + len(digits.test) == n
    assert_partition(digits, {f"all/{i}" for i in range(n)})
    assert abs(len(digits.test) - 0.2 * n) <= 5
    assert abs(len(digits.dev) - 0.1 * n) <= 5
    assert digits.info.classes == [str(i) for i in range(10)]
    assert digits.info.native_size == (8, 8)
    assert digits.info.preprocess.size == (8, 8) and digits.info.preprocess.channels == 1
    for s in digits.splits().values():
        assert s.images.dtype.is_floating_point is False and s.images.shape[1:] == (1, 8, 8)
        assert str(s.labels.dtype) == "torch.int64"


def test_digits_pixels_and_labels_match_sklearn(digits, sk_digits):
    images, target = sk_digits
    for s in digits.splits().values():
        idx = np.array([int(i.split("/")[1]) for i in s.ids])
        want = np.floor(images[idx] * (255.0 / 16.0) + 0.5).astype(np.uint8)
        np.testing.assert_array_equal(s.images[:, 0].numpy(), want)
        np.testing.assert_array_equal(s.labels.numpy(), target[idx])


def test_digits_split_is_stratified(digits, sk_digits):
    _, target = sk_digits
    n = len(target)
    per_class = Counter(target.tolist())
    for name, share in (("test", len(digits.test)), ("dev", len(digits.dev))):
        got = Counter(getattr(digits, name).labels.tolist())
        for c, nc in per_class.items():
            assert abs(got[c] - share * nc / n) <= 1, (name, c, got[c], share * nc / n)


def test_digits_mean_std_from_train_only(digits):
    mean, std = np_stats(digits.train.images)
    pre = digits.info.preprocess
    np.testing.assert_allclose(pre.mean, mean, atol=2e-6)
    np.testing.assert_allclose(pre.std, std, atol=2e-6)
    for s in digits.splits().values():
        assert s.preprocess == pre


def test_digits_seed(digits):
    again = load("digits", seed=0)
    other = load("digits", seed=1)
    assert split_ids(again) == split_ids(digits)
    assert set(other.test.ids) != set(digits.test.ids)
    assert set(other.dev.ids) != set(digits.dev.ids)


def test_digits_train_dev(digits):
    d = load("digits", train_dev=0.1)
    assert_partition(d, {f"all/{i}" for i in range(1797)})
    # dev and test do not move: train_dev comes out of train only
    assert d.dev.ids == digits.dev.ids and d.test.ids == digits.test.ids
    before = set(digits.train.ids)
    assert set(d.train_dev.ids) | set(d.train.ids) == before
    assert not set(d.train_dev.ids) & set(d.train.ids)
    assert abs(len(d.train_dev) - 0.1 * len(before)) <= 5
    # statistics now come from the smaller train split
    mean, std = np_stats(d.train.images)
    np.testing.assert_allclose(d.info.preprocess.mean, mean, atol=2e-6)
    np.testing.assert_allclose(d.info.preprocess.std, std, atol=2e-6)


def test_digits_counts_size_and_channels():
    d = load("digits", dev=100, test=200, size=12, channels=3)
    assert len(d.dev) == 100 and len(d.test) == 200
    assert d.train.images.shape[1:] == (3, 12, 12)
    assert d.info.native_size == (8, 8) and d.info.preprocess.size == (12, 12)
    x = d.train.images
    assert (x[:, 0] == x[:, 1]).all() and (x[:, 1] == x[:, 2]).all()
    assert len(d.info.preprocess.mean) == 3


@pytest.mark.parametrize("dev, test", [(0.3, 0.7), (0.5, 0.5), (597, 1200)])
def test_splits_taking_everything_rejected(dev, test):
    # the requested dev + test fractions (or counts) add up to all 1797 images
    with pytest.raises(CnnkitError):
        load("digits", dev=dev, test=test)


# ----------------------------------------------------------------------------- names and errors


def test_unknown_name_suggests():
    with pytest.raises(CnnkitError) as e:
        load("mnst")
    assert "'mnist'" in str(e.value)


def test_missing_folder_named(tmp_path):
    p = tmp_path / "no" / "such"
    with pytest.raises(CnnkitError) as e:
        load(str(p))
    assert str(p) in str(e.value)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "cifar100"])
def test_named_dataset_not_on_disk_says_where(tmp_path, name):
    with pytest.raises(CnnkitError) as e:
        load(name, data_dir=tmp_path)
    assert str(tmp_path / name) in str(e.value)


def test_bad_options(tmp_path):
    with pytest.raises(CnnkitError):
        load("digits", on_error="ignore")
    with pytest.raises(CnnkitError):
        load("digits", channels=2)


# ----------------------------------------------------------------------------- IDX / CIFAR


def test_mnist_folder_dev_carved_from_train(tmp_path):
    xtr, ytr, xte, yte = write_mnist(tmp_path / "mnist" / "MNIST" / "raw")
    d = load("mnist", data_dir=tmp_path, dev=0.2)
    assert d.info.classes == [str(i) for i in range(10)]
    # test is the source's test split, in order
    np.testing.assert_array_equal(d.test.images[:, 0].numpy(), xte)
    np.testing.assert_array_equal(d.test.labels.numpy(), yte)
    assert "source" in d.info.splits_from["test"]
    assert "carved" in d.info.splits_from["dev"]
    # train + dev = the source's train split
    assert len(d.dev) == 8
    assert_partition(d, {f"train/{i}" for i in range(40)} | {f"test/{i}" for i in range(10)})
    for s in (d.train, d.dev):
        idx = np.array([int(i.split("/")[1]) for i in s.ids])
        np.testing.assert_array_equal(s.images[:, 0].numpy(), xtr[idx])
        np.testing.assert_array_equal(s.labels.numpy(), ytr[idx])
    assert Counter(d.dev.labels.tolist()) == {0: 2, 1: 2, 2: 2, 3: 2}
    mean, std = np_stats(d.train.images)
    np.testing.assert_allclose(d.info.preprocess.mean, mean, atol=2e-6)
    np.testing.assert_allclose(d.info.preprocess.std, std, atol=2e-6)


def test_fashion_mnist_names(tmp_path):
    write_mnist(tmp_path / "fashion-mnist")
    d = load("fashion-mnist", data_dir=tmp_path)
    assert len(d.info.classes) == 10
    assert d.info.classes[0] == "T-shirt/top" and d.info.classes[9] == "Ankle boot"


def test_idx_folder_by_path(tmp_path):
    xtr, *_ = write_mnist(tmp_path / "anywhere")
    d = load(str(tmp_path / "anywhere"), dev=0.2)
    assert len(d.train) + len(d.dev) == len(xtr)


def test_cifar10_named(tmp_path):
    x, y, xt, yt, names = write_cifar10(tmp_path / "cifar10" / "cifar-10-batches-py")
    d = load("cifar10", data_dir=tmp_path, dev=0.2)
    assert d.info.classes == names
    assert d.train.images.shape[1:] == (3, 32, 32)
    np.testing.assert_array_equal(d.test.images.numpy(), xt.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(d.test.labels.numpy(), yt)
    assert len(d.dev) == 4
    assert Counter(d.dev.labels.tolist()) == {0: 2, 1: 2}
    assert_partition(d, {f"train/{i}" for i in range(20)} | {f"test/{i}" for i in range(6)})
    for s in (d.train, d.dev):
        idx = np.array([int(i.split("/")[1]) for i in s.ids])
        np.testing.assert_array_equal(s.images.numpy(), x[idx].transpose(0, 3, 1, 2))
        np.testing.assert_array_equal(s.labels.numpy(), y[idx])
    mean, std = np_stats(d.train.images)
    np.testing.assert_allclose(d.info.preprocess.mean, mean, atol=2e-6)
    np.testing.assert_allclose(d.info.preprocess.std, std, atol=2e-6)


def test_cifar10_resized_matches_pil(tmp_path):
    x, *_ = write_cifar10(tmp_path / "c" / "cifar-10-batches-py")
    d = load(str(tmp_path / "c"), size=16, dev=0.2)
    assert d.info.native_size == (32, 32)
    assert d.test.images.shape[1:] == (3, 16, 16)
    for s in (d.train, d.dev):
        for k, i in enumerate(s.ids):
            src = x[int(i.split("/")[1])]
            want = np.asarray(Image.fromarray(src).resize((16, 16), Image.BILINEAR)).astype(int)
            got = s.images[k].numpy().transpose(1, 2, 0).astype(int)
            assert np.abs(got - want).max() <= 1


# ----------------------------------------------------------------------------- ImageFolder


def test_flat_folder(tmp_path):
    files = make_folder(tmp_path / "ds", {"dog": 20, "cat": 10, "ant": 10})
    d = load(str(tmp_path / "ds"), dev=0.1, test=0.2)
    assert d.info.classes == ["ant", "cat", "dog"]
    assert d.info.preprocess.channels == 3
    assert_partition(d, set(files))
    assert len(d.test) == 8 and len(d.dev) == 4
    assert Counter(d.test.labels.tolist()) == {0: 2, 1: 2, 2: 4}
    assert Counter(d.dev.labels.tolist()) == {0: 1, 1: 1, 2: 2}
    for s in d.splits().values():
        for k, path in enumerate(s.ids):
            np.testing.assert_array_equal(s.images[k].numpy(), chw(files[path]))
            assert d.info.classes[int(s.labels[k])] == Path(path).parent.name
    mean, std = np_stats(d.train.images)
    np.testing.assert_allclose(d.info.preprocess.mean, mean, atol=2e-6)
    np.testing.assert_allclose(d.info.preprocess.std, std, atol=2e-6)


def test_flat_folder_seed(tmp_path):
    make_folder(tmp_path / "ds", {"a": 15, "b": 15})
    a = load(str(tmp_path / "ds"), seed=3)
    b = load(str(tmp_path / "ds"), seed=3)
    c = load(str(tmp_path / "ds"), seed=4)
    assert split_ids(a) == split_ids(b)
    assert split_ids(a) != split_ids(c)


def test_gray_folder_gives_one_channel(tmp_path):
    files = make_folder(tmp_path / "g", {"x": 6, "y": 6}, rgb=False)
    d = load(str(tmp_path / "g"), dev=2, test=2)
    assert d.train.images.shape[1:] == (1, 8, 8)
    for k, path in enumerate(d.train.ids):
        np.testing.assert_array_equal(d.train.images[k, 0].numpy(), files[path])


@pytest.mark.parametrize("devname", ["val", "dev"])
def test_split_dirs_used_as_given(tmp_path, devname):
    root = tmp_path / "sp"
    tr = make_folder(root / "train", {"a": 6, "b": 6}, seed=1, offset=10)  # dark
    dv = make_folder(root / devname, {"a": 2, "b": 2}, seed=2, offset=150)
    te = make_folder(root / "test", {"a": 3, "b": 3}, seed=3, offset=190)  # bright
    d = load(str(root))
    assert set(d.train.ids) == set(tr)
    assert set(d.dev.ids) == set(dv)
    assert set(d.test.ids) == set(te)
    assert d.info.splits_from == {"train": "source", "dev": "source", "test": "source"}
    for s, files in ((d.train, tr), (d.dev, dv), (d.test, te)):
        for k, path in enumerate(s.ids):
            np.testing.assert_array_equal(s.images[k].numpy(), chw(files[path]))
            assert d.info.classes[int(s.labels[k])] == Path(path).parent.name
    # statistics from train/ only (the bright dev/test images would raise the mean a lot)
    mean, std = np_stats(d.train.images)
    np.testing.assert_allclose(d.info.preprocess.mean, mean, atol=2e-6)
    np.testing.assert_allclose(d.info.preprocess.std, std, atol=2e-6)
    assert max(d.info.preprocess.mean) < 0.4


def test_split_dirs_missing_dev_carved_from_train(tmp_path):
    root = tmp_path / "sp"
    tr = make_folder(root / "train", {"a": 10, "b": 10}, seed=1)
    te = make_folder(root / "test", {"a": 3, "b": 3}, seed=2)
    d = load(str(root), dev=0.2)
    assert set(d.test.ids) == set(te)
    assert not set(d.dev.ids) & set(d.train.ids)
    assert set(d.dev.ids) | set(d.train.ids) == set(tr)
    assert Counter(d.dev.labels.tolist()) == {0: 2, 1: 2}
    assert "carved" in d.info.splits_from["dev"] and d.info.splits_from["test"] == "source"


def test_train_dev_from_folder_never_overlaps(tmp_path):
    root = tmp_path / "sp"
    tr = make_folder(root / "train", {"a": 10, "b": 10}, seed=1)
    dv = make_folder(root / "val", {"a": 2, "b": 2}, seed=2)
    te = make_folder(root / "test", {"a": 2, "b": 2}, seed=3)
    d = load(str(root), train_dev=4)
    assert len(d.train_dev) == 4
    assert Counter(d.train_dev.labels.tolist()) == {0: 2, 1: 2}
    assert set(d.train_dev.ids) | set(d.train.ids) == set(tr)
    assert_partition(d, set(tr) | set(dv) | set(te))


def test_mixed_sizes_resized_to_most_common(tmp_path):
    files = make_folder(tmp_path / "m", {"a": 4, "b": 4}, hw=(8, 10))
    odd = np.random.default_rng(7).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    odd_path = str(write_png(tmp_path / "m" / "a" / "zz_big.png", odd))
    d = load(str(tmp_path / "m"), dev=0, test=0)
    assert d.info.native_size == (8, 10)
    assert d.train.images.shape == (9, 3, 8, 10)
    k = d.train.ids.index(odd_path)
    want = np.asarray(Image.fromarray(odd).resize((10, 8), Image.BILINEAR)).astype(int)
    assert np.abs(d.train.images[k].numpy().transpose(1, 2, 0).astype(int) - want).max() <= 1
    j = d.train.ids.index(next(iter(files)))
    np.testing.assert_array_equal(d.train.images[j].numpy(), chw(files[next(iter(files))]))


def test_hidden_and_non_image_files_ignored(tmp_path):
    files = make_folder(tmp_path / "h", {"a": 5, "b": 5})
    (tmp_path / "h" / "a" / "._000.png").write_bytes(b"\x00\x05\x16\x07 apple double junk")
    (tmp_path / "h" / "b" / "notes.txt").write_text("hello")
    d = load(str(tmp_path / "h"), dev=0, test=0)
    assert set(d.train.ids) == set(files)


def test_broken_image_raise_names_path(tmp_path):
    make_folder(tmp_path / "b", {"a": 5, "b": 5})
    bad = tmp_path / "b" / "b" / "broken.png"
    good = (tmp_path / "b" / "b" / "000.png").read_bytes()
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(CnnkitError) as e:
        load(str(tmp_path / "b"))
    assert str(bad) in str(e.value)


def test_broken_image_skip_lists_it(tmp_path):
    files = make_folder(tmp_path / "b", {"a": 10, "b": 10})
    bad = tmp_path / "b" / "a" / "broken.png"
    bad.write_bytes(b"not a png")
    d = load(str(tmp_path / "b"), on_error="skip", dev=0.1, test=0.2)
    assert [s.path for s in d.info.skipped] == [str(bad)]
    assert_partition(d, set(files))


def test_empty_class_folder_rejected(tmp_path):
    make_folder(tmp_path / "e", {"a": 3})
    (tmp_path / "e" / "empty").mkdir()
    with pytest.raises(CnnkitError) as e:
        load(str(tmp_path / "e"))
    assert "empty" in str(e.value)


def test_split_class_not_in_train_rejected(tmp_path):
    make_folder(tmp_path / "s" / "train", {"a": 3, "b": 3})
    make_folder(tmp_path / "s" / "test", {"a": 1, "zebra": 1})
    with pytest.raises(CnnkitError) as e:
        load(str(tmp_path / "s"))
    assert "zebra" in str(e.value)


def test_folder_without_classes_rejected(tmp_path):
    (tmp_path / "flat").mkdir()
    write_png(tmp_path / "flat" / "x.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(CnnkitError) as e:
        load(str(tmp_path / "flat"))
    assert str(tmp_path / "flat") in str(e.value)
