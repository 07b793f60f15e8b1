"""MNIST IDX and CIFAR python-batch readers, on tiny files written in the standard formats."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

from cnnkit.data import read_cifar, read_idx, read_mnist
from cnnkit.errors import CnnkitError

_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def idx_bytes(arr: np.ndarray) -> bytes:
    """The IDX encoding of ``arr`` written by hand: magic, big-endian dims, big-endian data."""
    arr = np.asarray(arr)
    head = bytes([0, 0, _CODES[arr.dtype], arr.ndim])
    head += b"".join(struct.pack(">I", d) for d in arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = idx_bytes(arr)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def mnist_arrays(n_train=12, n_test=5, h=6, w=5, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (n_train, h, w), dtype=np.uint8),
        rng.integers(0, 10, n_train).astype(np.uint8),
        rng.integers(0, 256, (n_test, h, w), dtype=np.uint8),
        rng.integers(0, 10, n_test).astype(np.uint8),
    )


def write_mnist(folder: Path, arrays, gz: bool = True, skip: str | None = None) -> None:
    suffix = ".gz" if gz else ""
    names = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    for name, arr in zip(names, arrays):
        if name != skip:
            write_idx(folder / (name + suffix), arr, gz)


# ----------------------------------------------------------------------------- read_idx


def test_read_idx_matches_torchvision_uint8(tmp_path):
    a = np.random.default_rng(1).integers(0, 256, (4, 7, 3), dtype=np.uint8)
    p = write_idx(tmp_path / "x-idx3-ubyte", a)
    got = read_idx(p)
    ref = read_sn3_pascalvincent_tensor(str(p), strict=False).numpy()
    assert got.shape == (4, 7, 3) == ref.shape
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(got, a)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_read_idx_other_typecodes(tmp_path, dtype):
    rng = np.random.default_rng(2)
    if np.dtype(dtype).kind == "f":
        a = (rng.standard_normal((3, 5)) * 1000).astype(dtype)
    else:
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, (3, 5), endpoint=True).astype(dtype)
        a[0, 0], a[0, 1] = info.min, info.max
    p = write_idx(tmp_path / "v-idx2-ubyte", a)
    got = read_idx(p)
    assert got.dtype.isnative
    assert got.dtype.kind == np.dtype(dtype).kind and got.dtype.itemsize == np.dtype(dtype).itemsize
    np.testing.assert_array_equal(got, a)
    ref = read_sn3_pascalvincent_tensor(str(p), strict=False)
    np.testing.assert_array_equal(got, ref.numpy())


def test_read_idx_gzip_equals_plain_and_ignores_suffix(tmp_path):
    a = np.random.default_rng(3).integers(0, 256, (5, 4, 4), dtype=np.uint8)
    plain = read_idx(write_idx(tmp_path / "a-idx3-ubyte", a))
    gz = read_idx(write_idx(tmp_path / "a-idx3-ubyte.gz", a, gz=True))
    no_suffix = read_idx(write_idx(tmp_path / "b-idx3-ubyte", a, gz=True))  # gzip, no .gz
    np.testing.assert_array_equal(plain, a)
    np.testing.assert_array_equal(gz, a)
    np.testing.assert_array_equal(no_suffix, a)


def test_read_idx_labels_1d(tmp_path):
    y = np.array([3, 1, 4, 1, 5, 9, 2, 6], np.uint8)
    got = read_idx(write_idx(tmp_path / "l-idx1-ubyte", y))
    assert got.shape == (8,)
    np.testing.assert_array_equal(got, y)


def _err(fn, *args) -> str:
    with pytest.raises(CnnkitError) as e:
        fn(*args)
    return str(e.value)


def test_read_idx_truncated_data_names_file(tmp_path):
    a = np.zeros((3, 4, 4), np.uint8)
    p = tmp_path / "t-idx3-ubyte"
    p.write_bytes(idx_bytes(a)[:-5])
    assert str(p) in _err(read_idx, p)


def test_read_idx_trailing_bytes_names_file(tmp_path):
    p = tmp_path / "t-idx3-ubyte"
    p.write_bytes(idx_bytes(np.zeros((3, 4, 4), np.uint8)) + b"\x00\x01")
    assert str(p) in _err(read_idx, p)


def test_read_idx_truncated_header_names_file(tmp_path):
    p = tmp_path / "h-idx3-ubyte"
    p.write_bytes(idx_bytes(np.zeros((3, 4, 4), np.uint8))[:9])  # 4 magic + 5 of 12 dim bytes
    assert str(p) in _err(read_idx, p)


def test_read_idx_bad_magic_names_file(tmp_path):
    p = tmp_path / "m-idx1-ubyte"
    p.write_bytes(b"\x01\x02\x08\x01" + struct.pack(">I", 2) + b"\x00\x00")
    assert str(p) in _err(read_idx, p)
    q = tmp_path / "code-idx1-ubyte"
    q.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"\x00\x00")  # unknown type code
    assert str(q) in _err(read_idx, q)


def test_read_idx_truncated_gzip_names_file(tmp_path):
    p = tmp_path / "g-idx3-ubyte.gz"
    gz = gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8).reshape(2, 10, 10)))
    p.write_bytes(gz[: len(gz) // 2])
    assert str(p) in _err(read_idx, p)


def test_read_idx_corrupt_gzip_names_file(tmp_path):
    """A gzip file whose deflate stream is damaged (not just cut short)."""
    p = tmp_path / "c-idx1-ubyte.gz"
    gz = bytearray(gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8))))
    assert gz[3] == 0  # no optional gzip header fields: the deflate data starts at byte 10
    gz[10] = 0xFF  # first deflate block header -> block type 3, which is invalid
    p.write_bytes(bytes(gz))
    assert str(p) in _err(read_idx, p)


# ----------------------------------------------------------------------------- read_mnist


@pytest.mark.parametrize("sub", ["", "raw", "MNIST/raw"])
@pytest.mark.parametrize("gz", [True, False])
def test_read_mnist_finds_files_at_depth(tmp_path, sub, gz):
    arrays = mnist_arrays()
    write_mnist(tmp_path / sub if sub else tmp_path, arrays, gz=gz)
    out = read_mnist(tmp_path)
    xtr, ytr = out["train"]
    xte, yte = out["test"]
    assert xtr.dtype == np.uint8 and xtr.shape == (12, 6, 5, 1)
    assert ytr.dtype == np.int64 and yte.dtype == np.int64
    np.testing.assert_array_equal(xtr[..., 0], arrays[0])
    np.testing.assert_array_equal(ytr, arrays[1])
    np.testing.assert_array_equal(xte[..., 0], arrays[2])
    np.testing.assert_array_equal(yte, arrays[3])


def test_read_mnist_prefers_extracted_over_gz(tmp_path):
    a = mnist_arrays(seed=1)
    b = mnist_arrays(seed=2)
    write_mnist(tmp_path, a, gz=True)
    write_mnist(tmp_path, b, gz=False)
    out = read_mnist(tmp_path)
    np.testing.assert_array_equal(out["train"][0][..., 0], b[0])


@pytest.mark.parametrize(
    "missing", ["t10k-labels-idx1-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"]
)
def test_read_mnist_missing_file_listed(tmp_path, missing):
    write_mnist(tmp_path, mnist_arrays(), gz=True, skip=missing)
    msg = _err(read_mnist, tmp_path)
    stem = missing.rsplit("-", 2)[0]  # e.g. "t10k-labels"
    assert stem in msg
    assert str(tmp_path) in msg
    others = {"train-images", "train-labels", "t10k-images", "t10k-labels"} - {stem}
    assert not any(o in msg for o in others)


def test_read_mnist_empty_folder(tmp_path):
    assert str(tmp_path) in _err(read_mnist, tmp_path)


def test_read_mnist_count_mismatch_names_file(tmp_path):
    x, y, xt, yt = mnist_arrays()
    write_mnist(tmp_path, (x, y[:-1], xt, yt), gz=False)
    msg = _err(read_mnist, tmp_path)
    assert str(tmp_path / "train-images-idx3-ubyte") in msg


def test_read_mnist_truncated_member_names_it(tmp_path):
    write_mnist(tmp_path, mnist_arrays(), gz=False)
    p = tmp_path / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-3])
    assert str(p) in _err(read_mnist, tmp_path)


# ----------------------------------------------------------------------------- read_cifar


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> (N, 3072) in the CIFAR layout, element by element."""
    n = len(images)
    rows = np.zeros((n, 3072), np.uint8)
    c, y, x = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    pos = (c * 1024 + y * 32 + x).ravel()
    for i in range(n):
        rows[i, pos] = images[i][y.ravel(), x.ravel(), c.ravel()]
    return rows


def _dump(obj, path: Path, protocol: int = 2) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def write_cifar10(folder: Path, per_batch=3, n_test=4, seed=0, meta=True, protocol=2):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, per_batch)]
        _dump(
            {b"batch_label": b"x", b"data": cifar_rows(x), b"labels": y},
            folder / f"data_batch_{i}",
            protocol,
        )
        xs.append(x)
        ys += y
    xt = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
    yt = [int(v) for v in rng.integers(0, 10, n_test)]
    _dump({b"data": cifar_rows(xt), b"labels": yt}, folder / "test_batch", protocol)
    names = [f"class{i}" for i in range(10)]
    if meta:
        _dump(
            {b"label_names": [n.encode() for n in names], b"num_vis": 3072},
            folder / "batches.meta",
            protocol,
        )
    return (np.concatenate(xs), np.array(ys)), (xt, np.array(yt)), names


def test_cifar_pixel_layout_single_pixels(tmp_path):
    # one image, three known pixels: R plane first, then G, then B, each row-major
    row = np.zeros((1, 3072), np.uint8)
    row[0, 0 * 1024 + 0 * 32 + 1] = 11  # R at (y=0, x=1)
    row[0, 1 * 1024 + 2 * 32 + 0] = 22  # G at (y=2, x=0)
    row[0, 2 * 1024 + 31 * 32 + 30] = 33  # B at (y=31, x=30)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for i in range(1, 6):
        _dump({b"data": row, b"labels": [i]}, d / f"data_batch_{i}")
    _dump({b"data": row, b"labels": [0]}, d / "test_batch")
    out, _ = read_cifar(d)
    x = out["train"][0]
    assert x.shape == (5, 32, 32, 3) and x.dtype == np.uint8
    img = x[0]
    assert img[0, 1, 0] == 11 and img[2, 0, 1] == 22 and img[31, 30, 2] == 33
    assert int(img.astype(int).sum()) == 66
    np.testing.assert_array_equal(out["train"][1], [1, 2, 3, 4, 5])


def test_read_cifar10_values_labels_and_names(tmp_path):
    (x, y), (xt, yt), names = write_cifar10(tmp_path / "cifar-10-batches-py")
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):  # parent or the folder itself
        out, got_names = read_cifar(root)
        np.testing.assert_array_equal(out["train"][0], x)
        np.testing.assert_array_equal(out["train"][1], y)
        np.testing.assert_array_equal(out["test"][0], xt)
        np.testing.assert_array_equal(out["test"][1], yt)
        assert out["train"][1].dtype == np.int64
        assert got_names == names


def test_read_cifar10_without_meta_numbers_classes(tmp_path):
    write_cifar10(tmp_path, meta=False)
    _, names = read_cifar(tmp_path)
    assert names == [str(i) for i in range(10)]


def test_read_cifar100_fine_labels(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    y = [0, 99, 42, 7, 7, 1]
    xt = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    names = [f"fine{i}" for i in range(100)]
    _dump({b"data": cifar_rows(x), b"fine_labels": y, b"coarse_labels": [0] * 6}, d / "train")
    _dump({b"data": cifar_rows(xt), b"fine_labels": [3, 4], b"coarse_labels": [1, 1]}, d / "test")
    _dump({b"fine_label_names": names, b"coarse_label_names": ["c"] * 20}, d / "meta")
    out, got = read_cifar(tmp_path, "cifar100")
    np.testing.assert_array_equal(out["train"][0], x)
    np.testing.assert_array_equal(out["train"][1], y)
    np.testing.assert_array_equal(out["test"][0], xt)
    np.testing.assert_array_equal(out["test"][1], [3, 4])
    assert got == names


def test_read_cifar_kind_mismatch_and_missing(tmp_path):
    write_cifar10(tmp_path)
    assert str(tmp_path) in _err(read_cifar, tmp_path, "cifar100")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert str(empty) in _err(read_cifar, empty)


def test_read_cifar_missing_batch_named(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    assert str(tmp_path / "data_batch_3") in _err(read_cifar, tmp_path)


def test_read_cifar_torn_batch_named(tmp_path):
    write_cifar10(tmp_path)
    p = tmp_path / "data_batch_2"
    p.write_bytes(p.read_bytes()[:1000])
    assert str(p) in _err(read_cifar, tmp_path)


def test_read_cifar_wrong_data_shape_named(tmp_path):
    write_cifar10(tmp_path)
    p = tmp_path / "test_batch"
    _dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, p)
    assert str(p) in _err(read_cifar, tmp_path)


def test_read_cifar_batch_without_labels_named(tmp_path):
    write_cifar10(tmp_path)
    p = tmp_path / "test_batch"
    _dump({b"data": np.zeros((2, 3072), np.uint8)}, p)  # no b"labels"
    assert str(p) in _err(read_cifar, tmp_path)


def test_read_cifar_label_count_mismatch_named(tmp_path):
    write_cifar10(tmp_path)
    p = tmp_path / "test_batch"
    _dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1, 2]}, p)
    assert str(p) in _err(read_cifar, tmp_path)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_read_cifar_any_pickle_protocol(tmp_path, protocol):
    """A dict of numpy arrays is read whatever protocol pickled it (5 is Python 3.14's default)."""
    (x, y), (xt, yt), _ = write_cifar10(tmp_path, protocol=protocol)
    out, _ = read_cifar(tmp_path)
    np.testing.assert_array_equal(out["train"][0], x)
    np.testing.assert_array_equal(out["train"][1], y)
    np.testing.assert_array_equal(out["test"][0], xt)
    np.testing.assert_array_equal(out["test"][1], yt)


# ----------------------------------------------------------------------------- pickle safety


class _TouchViaSystem:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch '{self.target}'",))


class _TouchViaExec:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (exec, (f"open({str(self.target)!r}, 'w').close()",))


class _TouchViaPath:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


@pytest.mark.parametrize("evil", [_TouchViaSystem, _TouchViaExec, _TouchViaPath])
@pytest.mark.parametrize("where", ["data_batch_1", "test_batch", "batches.meta"])
@pytest.mark.parametrize("nested", [False, True])
def test_malicious_pickle_never_runs(tmp_path, evil, where, nested):
    write_cifar10(tmp_path / "c")
    sentinel = tmp_path / "SENTINEL"
    payload = evil(sentinel)
    obj = {b"data": payload, b"labels": [0]} if nested else payload
    blob = pickle.dumps(obj, protocol=2)

    # the payload is live: a plain unpickler runs it
    pickle.loads(blob)
    assert sentinel.exists()
    sentinel.unlink()

    p = tmp_path / "c" / where
    p.write_bytes(blob)
    with pytest.raises(CnnkitError) as e:
        read_cifar(tmp_path / "c")
    assert str(p) in str(e.value)
    assert not sentinel.exists()
