"""Pickle payloads never run: as a ``.pt``, renamed ``.safetensors``, or planted in a run folder.

Each payload's ``__reduce__`` would create a sentinel file when unpickled. Every loader
(in Python and through every ``weights=`` / ``run=`` / ``resume=`` option of the command
line, as real subprocesses) must refuse it with an error naming the file, and the
sentinel must never appear. The control (``trust_pickle=true``) proves the payloads are
live: there, and only there, the sentinel appears, after a warning.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.models import create, read_state_dict
from cnnkit.train import CheckpointError, load_state, load_weights_file


class _Payload:
    """Unpickling this calls ``Path.touch(sentinel)``: code run from a data file."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (pathlib.Path.touch, (self.sentinel,))


def _write_payload(path: Path, sentinel: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"features.0.weight": _Payload(sentinel), "x": torch.zeros(1)}, path)
    return path


def test_python_loaders_refuse_payloads(tmp_path: Path) -> None:
    sentinel = tmp_path / "payload-ran"
    pt = _write_payload(tmp_path / "model.pt", sentinel)
    renamed = tmp_path / "model.safetensors"
    shutil.copy(pt, renamed)
    state = tmp_path / "weights" / "last_state.pt"
    state.parent.mkdir()
    shutil.copy(pt, state)
    attempts = [
        (lambda: read_state_dict(pt), pt),
        (lambda: read_state_dict(renamed), renamed),
        (lambda: create("lenet5", weights=str(pt)), pt),
        (lambda: create("lenet5", weights=str(renamed)), renamed),
        (lambda: load_weights_file(renamed), renamed),
        (lambda: load_weights_file(pt), pt),
        (lambda: load_state(state), state),
        (lambda: load_state(pt), pt),
    ]
    for attempt, path in attempts:
        with pytest.raises(CnnkitError) as e:
            attempt()
        assert str(path) in str(e.value)
        assert not sentinel.exists()
    with pytest.raises(CheckpointError, match="cnnkit did not write it"):
        load_state(state)  # no trust_pickle is offered for a state file
    assert not sentinel.exists()


def test_trust_pickle_is_the_only_way_and_warns(tmp_path: Path) -> None:
    sentinel = tmp_path / "payload-ran"
    pt = _write_payload(tmp_path / "model.pt", sentinel)
    with pytest.warns(UserWarning, match="trust_pickle=true"), pytest.raises(CnnkitError):
        read_state_dict(pt, trust_pickle=True)  # loads (and runs it), then: not tensors
    assert sentinel.exists()  # the control: the payload was live all along


def test_a_pth_state_dict_of_tensors_needs_no_trust(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = create("lenet5").state_dict()
    p = tmp_path / "lenet5.pth"
    torch.save(ref, p)
    model = create("lenet5", weights=str(p))
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref[k]), k


@pytest.fixture(scope="module")
def planted(
    tmp_path_factory: pytest.TempPathFactory, cnnkit_cli
) -> dict[str, subprocess.CompletedProcess]:
    """A real run, then payloads planted everywhere; every command tried once, concurrently."""
    root = tmp_path_factory.mktemp("planted")
    sentinel = root / "payload-ran"
    r = cnnkit_cli(["train", "epochs=1", "batch=256", "verbose=0", "name=r", "report=false"], root)
    assert r.returncode == 0, r.stderr
    run = root / "runs" / "classify" / "r"
    payload = _write_payload(root / "evil.pt", sentinel)
    shutil.copy(payload, root / "evil.pth")
    shutil.copy(payload, root / "evil.safetensors")
    # run folders with a payload in place of a checkpoint file (one with the manifest
    # rewritten to match the payload, as an attacker who edits the folder would)
    for name, target in (("best", "best.safetensors"), ("state", "last_state.pt")):
        for forged in (False, True):
            d = root / f"run_{name}{'_forged' if forged else ''}"
            shutil.copytree(run, d)
            shutil.copy(payload, d / "weights" / target)
            if forged:
                stem = "best" if name == "best" else "last"
                m = d / "weights" / f"{stem}.manifest.json"
                man = json.loads(m.read_text())
                data = (d / "weights" / target).read_bytes()
                man["files"][target] = {
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
                m.write_text(json.dumps(man))
    from PIL import Image

    Image.new("L", (8, 8), 128).save(root / "img.png")
    jobs = {
        "summary_pth": ["summary", "lenet5", "weights=evil.pth"],
        "summary_pt": ["summary", "lenet5", "weights=evil.pt"],
        "summary_renamed": ["summary", "lenet5", "weights=evil.safetensors"],
        "val_renamed": ["val", "weights=evil.safetensors"],
        "predict_renamed": ["predict", "weights=evil.safetensors", "source=img.png"],
        "val_pth": ["val", "weights=evil.pth"],
        "val_run_best": ["val", "run=run_best"],
        "predict_run_best": ["predict", "run=run_best", "source=img.png"],
        "val_run_best_forged": ["val", "run=run_best_forged"],
        "predict_run_best_forged": ["predict", "run=run_best_forged", "source=img.png"],
        "resume_state": ["train", "resume=run_state"],
        "resume_state_forged": ["train", "resume=run_state_forged"],
        "val_weights_in_run": ["val", "weights=run_best/weights/best.safetensors"],
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {k: pool.submit(cnnkit_cli, v, root) for k, v in jobs.items()}
        results = {k: f.result() for k, f in futures.items()}
    results["sentinel_after_refusals"] = sentinel.exists()  # type: ignore[assignment]
    control = cnnkit_cli(["summary", "lenet5", "weights=evil.pth", "trust_pickle=true"], root)
    results["control"] = control
    results["sentinel_after_control"] = sentinel.exists()  # type: ignore[assignment]
    return results


NAMED = {
    "summary_pth": "evil.pth",
    "summary_pt": "evil.pt",
    "summary_renamed": "evil.safetensors",
    "val_renamed": "evil.safetensors",
    "predict_renamed": "evil.safetensors",
    "val_pth": "evil.pth",
    "val_run_best": "best.safetensors",
    "predict_run_best": "best.safetensors",
    "val_run_best_forged": "best.safetensors",
    "predict_run_best_forged": "best.safetensors",
    "resume_state": "last_state.pt",
    "resume_state_forged": "last_state.pt",
    "val_weights_in_run": "best.safetensors",
}


@pytest.mark.parametrize("job", list(NAMED))
def test_every_cli_option_refuses_the_payload(planted, job: str) -> None:
    r = planted[job]
    assert r.returncode == 2, (job, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnkit: error: "), r.stderr
    assert NAMED[job] in lines[0]


def test_no_payload_ran_until_trusted_explicitly(planted) -> None:
    assert planted["sentinel_after_refusals"] is False
    control = planted["control"]
    assert "cnnkit: warning: loading" in control.stderr and "trust_pickle=true" in control.stderr
    assert planted["sentinel_after_control"] is True  # the payloads were live


def test_a_damaged_pt_is_called_damaged_not_a_pickle(tmp_path: Path) -> None:
    p = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(3)}, p)
    data = bytearray(p.read_bytes())
    at = data.find(b"data.pkl") + 60  # inside the pickle stream of the zip
    data[at : at + 10] = b"\xff" * 10
    p.write_bytes(bytes(data))
    with pytest.raises(CnnkitError) as e:
        read_state_dict(p)
    assert "is damaged" in str(e.value) and str(p) in str(e.value)
    assert "trust_pickle" not in str(e.value)  # never advise unpickling a broken file
