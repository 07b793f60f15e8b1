"""Checkpoint manifests: what they record, and every way a torn checkpoint is refused.

A real (tiny) run writes the checkpoints; the tests then truncate, flip, delete or edit
its files and check that loading fails with an error naming the file and the field,
while the other checkpoint (and, after a failed save, the previous one) still loads.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import cnnkit
import cnnkit.train.checkpoint as ck
from cnnkit.train import CheckpointError, fit, load_state, load_weights_file
from cnnkit.train.checkpoint import (
    manifest_path,
    remove_leftovers,
    save_checkpoint,
    verify_checkpoint,
    weights_bytes,
)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _data(n: int = 48) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % 3)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-epoch run (last and best checkpoints), copied afresh by each test."""
    d = tmp_path_factory.mktemp("run") / "run"
    fit(_net(), _data(), _data(24), run_dir=d, epochs=2, batch=16, verbose=0, workers=0)
    return d


@pytest.fixture
def copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_manifest_records_versions_architecture_and_each_file(copy: Path) -> None:
    w = copy / "weights"
    m = json.loads((w / "last.manifest.json").read_text())
    assert m["format"] == "cnnkit-manifest" and m["format_version"] == 1
    assert m["cnnkit_version"] == cnnkit.__version__
    assert m["architecture"] == "torch.nn.modules.container.Sequential"
    assert (m["epoch"], m["step"]) == (2, 6)  # 48 images / 16 = 3 steps an epoch
    assert set(m["files"]) == {"last.safetensors", "last_state.pt"}
    for name, entry in m["files"].items():  # checked against hashlib, independently
        assert entry == {"bytes": (w / name).stat().st_size, "sha256": _sha(w / name)}
    b = json.loads((w / "best.manifest.json").read_text())
    assert set(b["files"]) == {"best.safetensors"}
    assert b["files"]["best.safetensors"]["sha256"] == _sha(w / "best.safetensors")
    assert verify_checkpoint(w, "last") == m


@pytest.mark.parametrize("name", ["last_state.pt", "last.safetensors"])
def test_truncated_at_ten_offsets_is_refused_naming_file_and_field(copy: Path, name: str) -> None:
    w = copy / "weights"
    original = (w / name).read_bytes()
    n = len(original)
    offsets = sorted({0, 1, 8, n // 10, n // 4, n // 3, n // 2, 2 * n // 3, 9 * n // 10, n - 1})
    assert len(offsets) == 10
    for cut in offsets:
        (w / name).write_bytes(original[:cut])
        with pytest.raises(CheckpointError) as e:
            verify_checkpoint(w, "last")
        assert str(w / name) in str(e.value) and f"files.{name}.bytes" in str(e.value), cut
        with pytest.raises(CheckpointError) as e:  # resume refuses it too
            fit(_net(), _data(), _data(24), run_dir=copy, resume=True, epochs=3, verbose=0)
        assert str(w / name) in str(e.value)
    # the other checkpoint is untouched and still loads
    verify_checkpoint(w, "best")
    state, _ = load_weights_file(w / "best.safetensors")
    assert set(state) == set(_net().state_dict())


@pytest.mark.parametrize("name", ["last_state.pt", "last.safetensors"])
def test_flipped_bytes_are_refused_naming_the_sha256_field(copy: Path, name: str) -> None:
    w = copy / "weights"
    original = (w / name).read_bytes()
    for at in (0, len(original) // 2, len(original) - 1):
        flipped = bytearray(original)
        flipped[at] ^= 0x01
        (w / name).write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError) as e:
            verify_checkpoint(w, "last")
        assert str(w / name) in str(e.value) and f"files.{name}.sha256" in str(e.value)
    (w / name).write_bytes(original)
    verify_checkpoint(w, "last")  # the control: the restored file passes


def test_missing_manifest_is_refused_even_though_the_files_are_fine(copy: Path) -> None:
    w = copy / "weights"
    (w / "last.manifest.json").unlink()
    with pytest.raises(CheckpointError) as e:
        verify_checkpoint(w, "last")
    assert str(w / "last.manifest.json") in str(e.value) and "missing" in str(e.value)
    with pytest.raises(CheckpointError) as e:
        fit(_net(), _data(), _data(24), run_dir=copy, resume=True, epochs=3, verbose=0)
    assert "last.manifest.json" in str(e.value)
    load_state(w / "last_state.pt")  # the file itself is whole: only its manifest is gone


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda m: m.update(format="something-else"), "'format'"),
        (lambda m: m.update(format_version="one"), "'format_version'"),
        (lambda m: m.update(files={}), "'files'"),
        (lambda m: m["files"]["last_state.pt"].pop("sha256"), "'files.last_state.pt'"),
    ],
)
def test_malformed_manifest_fields_are_named(copy: Path, edit, field: str) -> None:
    mpath = copy / "weights" / "last.manifest.json"
    m = json.loads(mpath.read_text())
    edit(m)
    mpath.write_text(json.dumps(m))
    with pytest.raises(CheckpointError) as e:
        verify_checkpoint(copy / "weights", "last")
    assert str(mpath) in str(e.value) and field in str(e.value)


def test_manifest_that_is_not_json_and_newer_formats_are_refused(copy: Path) -> None:
    mpath = copy / "weights" / "last.manifest.json"
    good = mpath.read_text()
    mpath.write_text(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="damaged") as e:
        verify_checkpoint(copy / "weights", "last")
    assert str(mpath) in str(e.value)
    m = json.loads(good)
    m["format_version"] = 99
    mpath.write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match="format_version 99; upgrade cnnkit"):
        verify_checkpoint(copy / "weights", "last")


def test_resume_into_another_architecture_names_the_field(copy: Path) -> None:
    class Other(nn.Sequential):
        pass

    torch.manual_seed(0)
    other = Other(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    with pytest.raises(CheckpointError) as e:
        fit(other, _data(), _data(24), run_dir=copy, resume=True, epochs=3, verbose=0)
    assert "'architecture'" in str(e.value) and "Sequential" in str(e.value)


def test_failed_save_leaves_the_previous_checkpoint_loadable(copy: Path, monkeypatch) -> None:
    w = copy / "weights"
    before = {n: _sha(w / n) for n in ("last.manifest.json", "last.safetensors", "last_state.pt")}

    def boom(stage: str, path: Path) -> None:
        if stage == "fsynced" and path.name.startswith(".last.manifest.json"):
            raise OSError("disk full")  # after the files were written, before the commit

    monkeypatch.setattr(ck, "_crash_point", boom)
    new = {"last.safetensors": weights_bytes({"w": torch.ones(3)}, {}), "last_state.pt": b"x"}
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(w, "last", new, {"architecture": "x", "epoch": 9, "step": 99})
    monkeypatch.undo()
    assert {n: _sha(w / n) for n in before} == before
    assert verify_checkpoint(w, "last")["step"] == 6
    assert remove_leftovers(w) == [w / ".last.safetensors.pending", w / ".last_state.pt.pending"]
    assert not list(w.glob(".*"))


def test_commit_interrupted_after_the_manifest_is_finished_on_load(copy: Path, monkeypatch):
    w = copy / "weights"

    def stop(stage: str, path: Path) -> None:
        if stage == "committed":
            raise KeyboardInterrupt  # the manifest is in place, no file renamed yet

    monkeypatch.setattr(ck, "_crash_point", stop)
    new = {"best.safetensors": weights_bytes({"w": torch.full((3,), 7.0)}, {"epoch": 5})}
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(w, "best", new, {"architecture": "x", "epoch": 5, "step": 15})
    monkeypatch.undo()
    assert (w / ".best.safetensors.pending").exists()
    assert verify_checkpoint(w, "best")["epoch"] == 5  # rolled forward
    assert not (w / ".best.safetensors.pending").exists()
    state, meta = load_weights_file(w / "best.safetensors")
    assert torch.equal(state["w"], torch.full((3,), 7.0)) and meta["epoch"] == 5


def test_saving_over_a_memory_mapped_file_leaves_the_reader_the_old_bytes(tmp_path: Path) -> None:
    from safetensors import safe_open

    w = tmp_path / "weights"
    old = {"a": torch.arange(100_000, dtype=torch.float32)}
    save_checkpoint(w, "best", {"best.safetensors": weights_bytes(old, {})}, {"architecture": "x"})
    with safe_open(str(w / "best.safetensors"), framework="pt") as f:  # mmaps the file
        new = {"a": -torch.arange(100_000, dtype=torch.float32)}
        blob = weights_bytes(new, {})
        save_checkpoint(w, "best", {"best.safetensors": blob}, {"architecture": "x"})
        assert torch.equal(f.get_tensor("a"), old["a"])  # read after the save: still the old
    state, _ = load_weights_file(w / "best.safetensors")
    assert torch.equal(state["a"], new["a"])
    assert verify_checkpoint(w, "best")["files"]["best.safetensors"]["sha256"] == (
        hashlib.sha256(blob).hexdigest()
    )


def test_val_of_a_run_refuses_a_torn_best_instead_of_using_last(copy: Path) -> None:
    from cnnkit.train.classify import load_run_model

    # a classify run's folder layout, with this run's files: the best file torn in place
    w = copy / "weights"
    data = (w / "best.safetensors").read_bytes()
    (w / "best.safetensors").write_bytes(data[:-10])
    with pytest.raises(CheckpointError) as e:
        load_run_model(copy)
    assert str(w / "best.safetensors") in str(e.value)
    assert manifest_path(w, "last").exists()  # a good `last` was there: it was not used


def test_readers_never_rename_and_read_a_committed_pending_file(copy: Path, monkeypatch):
    from cnnkit.train.checkpoint import checkpoint_files

    w = copy / "weights"

    def stop(stage: str, path: Path) -> None:
        if stage == "committed":
            raise KeyboardInterrupt  # the writer is "between" its commit and its renames

    monkeypatch.setattr(ck, "_crash_point", stop)
    new = {"best.safetensors": weights_bytes({"w": torch.full((3,), 4.0)}, {"epoch": 9})}
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(w, "best", new, {"architecture": "x", "epoch": 9, "step": 27})
    monkeypatch.undo()
    before = sorted(p.name for p in w.iterdir())
    paths = checkpoint_files(w, "best")
    assert paths == {"best.safetensors": w / ".best.safetensors.pending"}
    assert sorted(p.name for p in w.iterdir()) == before  # nothing renamed by a reader
    state, meta = load_weights_file(paths["best.safetensors"])
    assert torch.equal(state["w"], torch.full((3,), 4.0)) and meta["epoch"] == 9


def test_manifest_naming_a_file_outside_its_folder_is_refused(copy: Path) -> None:
    mpath = copy / "weights" / "best.manifest.json"
    m = json.loads(mpath.read_text())
    m["files"]["../config.yaml"] = m["files"].pop("best.safetensors")
    mpath.write_text(json.dumps(m))
    wanted = re.escape("names '../config.yaml', not a file of this folder")
    with pytest.raises(CheckpointError, match=wanted):
        verify_checkpoint(copy / "weights", "best")
