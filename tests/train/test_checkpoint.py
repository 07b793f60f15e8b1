"""Checkpoint files: round trips, refusal of torn / flipped / pickled files, atomic writes."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.train import (
    CheckpointError,
    atomic_write,
    load_state,
    load_weights_file,
    save_state,
    save_weights,
)


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    nan_inf = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1.5])
    return {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=g),
        "conv.bias": torch.randn(4, generator=g),
        "fc.weight": torch.randn(1000, generator=g).reshape(10, 100),  # a big, easy-to-find payload
        "bn.num_batches_tracked": torch.tensor(17, dtype=torch.int64),
        "half": torch.randn(5, generator=g).half(),
        "bf16": torch.randn(6, generator=g).bfloat16(),
        "f64": torch.randn(2, 2, generator=g, dtype=torch.float64),
        "u8": torch.randint(0, 256, (7,), generator=g, dtype=torch.uint8),
        "mask": torch.tensor([True, False, True]),
        "special": nan_inf,
        "empty": torch.zeros(0, 3),
    }


META = {
    "model": "lenet5",
    "epoch": 3,
    "lr": 0.001,
    "classes": ["zero", "one", "two"],
    "preprocess": {"size": [32, 32], "channels": 1, "mean": [0.5], "std": [0.25]},
    "note": None,
    "ok": True,
    "unicode": "héllo ✓",
}


def _bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(
        a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8)
    )


def _flip(path: Path, pos: int, mask: int = 0xFF) -> None:
    blob = bytearray(path.read_bytes())
    blob[pos] ^= mask
    path.write_bytes(bytes(blob))


# ---------------------------------------------------------------- weights (.safetensors)


def test_weights_round_trip(tmp_path):
    p = tmp_path / "w.safetensors"
    src = _tensors()
    save_weights(p, src, META)
    got, meta = load_weights_file(p)
    assert set(got) == set(src)
    for k in src:
        assert _bitwise_equal(got[k], src[k]), k
    for k, v in META.items():
        assert meta[k] == v, k


def test_weights_are_plain_safetensors(tmp_path):
    from safetensors.torch import load_file

    p = tmp_path / "w.safetensors"
    src = _tensors()
    save_weights(p, src, META)
    plain = load_file(str(p))
    assert all(_bitwise_equal(plain[k], src[k]) for k in src)


def test_weights_from_a_noncontiguous_gpu_free_state_dict(tmp_path):
    p = tmp_path / "w.safetensors"
    t = torch.arange(12.0).reshape(3, 4).t()  # not contiguous
    save_weights(p, {"t": t}, {})
    got, _ = load_weights_file(p)
    assert torch.equal(got["t"], t)


def test_foreign_safetensors_load_unverified(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "foreign.safetensors"
    t = {"a": torch.arange(6.0).reshape(2, 3)}
    save_file(t, str(p), metadata={"author": "someone"})
    got, meta = load_weights_file(p)
    assert torch.equal(got["a"], t["a"])
    assert meta == {}


def test_missing_weights_file(tmp_path):
    p = tmp_path / "nope.safetensors"
    with pytest.raises(CheckpointError) as e:
        load_weights_file(p)
    assert str(p) in str(e.value)


def test_checkpoint_error_is_a_cnnkit_error():
    assert issubclass(CheckpointError, CnnkitError)


def _weights_file(tmp_path) -> tuple[Path, bytes, int]:
    p = tmp_path / "w.safetensors"
    save_weights(p, _tensors(), META)
    blob = p.read_bytes()
    header_len = int.from_bytes(blob[:8], "little")
    return p, blob, 8 + header_len


@pytest.mark.parametrize("cut", [0, 1, 7, 8, 20, "header-1", "header", "header+1", "mid", "end-1"])
def test_truncated_weights_refused(tmp_path, cut):
    p, blob, data_start = _weights_file(tmp_path)
    n = {
        "header-1": data_start - 1,
        "header": data_start,
        "header+1": data_start + 1,
        "mid": (data_start + len(blob)) // 2,
        "end-1": len(blob) - 1,
    }.get(cut, cut)
    p.write_bytes(blob[:n])
    with pytest.raises(CheckpointError) as e:
        load_weights_file(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("frac", [0.0, 0.1, 0.25, 0.5, 0.77, 0.999])
@pytest.mark.parametrize("mask", [0xFF, 0x01, 0x80])
def test_flipped_byte_in_weights_payload_refused(tmp_path, frac, mask):
    p, blob, data_start = _weights_file(tmp_path)
    pos = data_start + int(frac * (len(blob) - data_start - 1))
    _flip(p, pos, mask)
    with pytest.raises(CheckpointError) as e:
        load_weights_file(p)
    assert str(p) in str(e.value)


def test_flipped_byte_in_middle_of_weights_file_refused(tmp_path):
    p, blob, _ = _weights_file(tmp_path)
    _flip(p, len(blob) // 2)
    with pytest.raises(CheckpointError, match=r"digest|damaged"):
        load_weights_file(p)


def test_altered_metadata_in_weights_header_refused(tmp_path):
    p, blob, data_start = _weights_file(tmp_path)
    pos = blob.index(b"lenet5", 0, data_start)
    _flip(p, pos, 0x01)  # 'l' -> 'm': still valid JSON, different metadata
    with pytest.raises(CheckpointError) as e:
        load_weights_file(p)
    assert str(p) in str(e.value)


def test_weights_file_that_is_not_safetensors(tmp_path):
    p = tmp_path / "w.safetensors"
    torch.save({"a": torch.ones(2)}, p)
    with pytest.raises(CheckpointError) as e:
        load_weights_file(p)
    assert str(p) in str(e.value)


# ---------------------------------------------------------------- training state (.pt)


def _state() -> dict:
    g = torch.Generator().manual_seed(1)
    return {
        "epoch": 4,
        "global_step": 123,
        "best": 0.25,
        "best_epoch": None,
        "history": [{"epoch": 1, "train_loss": 1.5}, {"epoch": 2, "train_loss": 1.25}],
        "model": {"w": torch.randn(5000, generator=g), "b": torch.zeros(3)},
        "optimizer": {"state": {0: {"step": torch.tensor(5.0)}}, "param_groups": [{"lr": 0.1}]},
        "rng": {"torch": torch.get_rng_state(), "python": list(range(10))},
        "config": {"schedule": "cosine-distinct-marker", "lr": 0.001, "deterministic": False},
        "pair": (1, "two"),
    }


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and _bitwise_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


def test_state_round_trip(tmp_path):
    p = tmp_path / "last_state.pt"
    s = _state()
    save_state(p, s)
    got = load_state(p)
    for k, v in s.items():
        assert _same(got[k], v), k
    assert "sha256" not in got


def test_state_loads_with_plain_torch_load_weights_only(tmp_path):
    p = tmp_path / "last_state.pt"
    s = _state()
    save_state(p, s)
    plain = torch.load(p, weights_only=True)
    assert isinstance(plain["sha256"], str) and len(plain["sha256"]) == 64
    assert _same(plain["model"], s["model"])
    assert plain["history"] == s["history"]


def _state_file(tmp_path) -> tuple[Path, bytes]:
    p = tmp_path / "last_state.pt"
    save_state(p, _state())
    return p, p.read_bytes()


@pytest.mark.parametrize("frac", [0.0, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_truncated_state_refused(tmp_path, frac):
    p, blob = _state_file(tmp_path)
    n = int(frac * len(blob))
    p.write_bytes(blob[:n])
    with pytest.raises(CheckpointError) as e:
        load_state(p)
    assert str(p) in str(e.value)


def test_state_cut_by_one_byte_refused(tmp_path):
    p, blob = _state_file(tmp_path)
    p.write_bytes(blob[:-1])
    with pytest.raises(CheckpointError) as e:
        load_state(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("frac", [0.0, 0.2, 0.5, 0.8, 0.999])
def test_flipped_byte_in_state_tensor_data_refused(tmp_path, frac):
    p, blob = _state_file(tmp_path)
    payload = _state()["model"]["w"].numpy().tobytes()
    start = blob.find(payload)
    assert start > 0, "the tensor bytes are stored uncompressed in the zip"
    _flip(p, start + int(frac * (len(payload) - 1)))
    with pytest.raises(CheckpointError) as e:
        load_state(p)
    assert str(p) in str(e.value)


def test_altered_string_in_state_pickle_refused(tmp_path):
    p, blob = _state_file(tmp_path)
    pos = blob.index(b"cosine-distinct-marker")
    _flip(p, pos, 0x01)  # 'c' -> 'b': still a valid pickle, different config
    with pytest.raises(CheckpointError) as e:
        load_state(p)
    assert str(p) in str(e.value)


def test_state_middle_of_file_flips_refused(tmp_path):
    """Flips anywhere inside the biggest tensor, which spans the middle of the file."""
    p, blob = _state_file(tmp_path)
    payload = _state()["model"]["w"].numpy().tobytes()
    start = blob.find(payload)
    mid = len(blob) // 2
    assert start <= mid < start + len(payload)
    for pos in (mid - 7, mid, mid + 13):
        p.write_bytes(blob)
        _flip(p, pos)
        with pytest.raises(CheckpointError):
            load_state(p)


class _Evil:
    """Unpickling this runs code that creates ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').close()",))


def test_pickle_payload_is_real(tmp_path):
    """Sanity check of the payload itself: an unsafe load does run it."""
    sentinel = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Evil(sentinel)))
    assert sentinel.exists()


def test_torch_saved_pickle_payload_is_refused_and_never_runs(tmp_path):
    sentinel = tmp_path / "pwned"
    p = tmp_path / "last_state.pt"
    torch.save({"format": "cnnkit-checkpoint", "format_version": 1, "x": _Evil(sentinel)}, p)
    with pytest.raises(CheckpointError) as e:
        load_state(p)
    assert str(p) in str(e.value)
    assert not sentinel.exists()


def test_raw_pickle_payload_is_refused_and_never_runs(tmp_path):
    sentinel = tmp_path / "pwned"
    p = tmp_path / "last_state.pt"
    with open(p, "wb") as f:
        pickle.dump({"format": "cnnkit-checkpoint", "x": _Evil(sentinel)}, f, protocol=2)
    with pytest.raises(CheckpointError) as e:
        load_state(p)
    assert str(p) in str(e.value)
    assert not sentinel.exists()


def test_foreign_state_refused(tmp_path):
    p = tmp_path / "model.pt"
    torch.save({"model": {"w": torch.ones(2)}}, p)
    with pytest.raises(CheckpointError) as e:
        load_state(p)
    assert str(p) in str(e.value)


def test_state_without_digest_refused(tmp_path):
    p = tmp_path / "last_state.pt"
    torch.save({"format": "cnnkit-checkpoint", "format_version": 1, "epoch": 2}, p)
    with pytest.raises(CheckpointError, match="digest"):
        load_state(p)


def test_state_with_edited_value_and_old_digest_refused(tmp_path):
    p, _ = _state_file(tmp_path)
    obj = torch.load(p, weights_only=True)
    obj["epoch"] = 5
    torch.save(obj, p)
    with pytest.raises(CheckpointError, match="digest"):
        load_state(p)


def test_newer_state_format_refused(tmp_path):
    p = tmp_path / "last_state.pt"
    save_state(p, {"format_version": 99, "epoch": 1})
    with pytest.raises(CheckpointError, match="version"):
        load_state(p)


def test_missing_state_file(tmp_path):
    p = tmp_path / "weights" / "last_state.pt"
    with pytest.raises(CheckpointError) as e:
        load_state(p)
    assert str(p) in str(e.value)


# ---------------------------------------------------------------- atomic writes


def test_atomic_write_creates_and_replaces(tmp_path):
    p = tmp_path / "sub" / "dir" / "f.bin"
    atomic_write(p, lambda f: f.write(b"first"))
    assert p.read_bytes() == b"first"
    atomic_write(p, lambda f: f.write(b"second, longer"))
    assert p.read_bytes() == b"second, longer"
    assert sorted(os.listdir(p.parent)) == ["f.bin"]


def test_atomic_write_failure_keeps_old_content_and_no_temp(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"previous content")

    class BoomError(RuntimeError):
        pass

    def write(f):
        f.write(b"half of the new con")
        f.flush()
        raise BoomError("disk full")

    with pytest.raises(BoomError):
        atomic_write(p, write)
    assert p.read_bytes() == b"previous content"
    assert sorted(os.listdir(tmp_path)) == ["f.bin"]


def test_atomic_write_failure_on_new_file_leaves_nothing(tmp_path):
    p = tmp_path / "new.bin"

    def write(f):
        f.write(b"x" * 1000)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(p, write)
    assert os.listdir(tmp_path) == []


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    p = tmp_path / "w.safetensors"
    save_weights(p, {"a": torch.ones(3)}, {"epoch": 1})
    before = p.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 (json refuses the object)
        save_weights(p, {"a": torch.zeros(3)}, {"epoch": object()})
    assert p.read_bytes() == before
    got, meta = load_weights_file(p)
    assert torch.equal(got["a"], torch.ones(3)) and meta["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["w.safetensors"]
