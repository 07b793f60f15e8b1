"""Resume parity: a run killed with SIGKILL and resumed ends bitwise equal to an uninterrupted one.

Every run is a real subprocess. The driver kills itself with SIGKILL at one of twelve
points: at chosen optimizer steps (an optimizer-step hook), or at a chosen stage of a
checkpoint commit (``cnnkit.train.checkpoint._crash_point``, called at each stage):
half-way through writing a file, after a pending file is fsync'ed, between the
manifest's fsync and its rename, after the manifest commit but before the files are
renamed into place, and between two of those renames. Then the same driver resumes the
run and finishes it. Weights, optimizer state, the schedule's position (the learning
rate is a pure function of the global step, which is compared) and every RNG state
must match the uninterrupted run bit for bit (CPU, deterministic=true).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cnnkit.train import load_state, load_weights_file
from cnnkit.train.checkpoint import verify_checkpoint

DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    import cnnkit.train.checkpoint as ck
    from cnnkit.data import load
    from cnnkit.models import create
    from cnnkit.train import fit

    run_dir, resume = sys.argv[1], sys.argv[2] == "resume"
    kill_step = int(os.environ.get("KILL_AT_STEP", "-1"))
    # KILL_AT_STAGE=stage:file:n -> die the n-th time that stage is reached for that file
    stage, fname, nth = (os.environ.get("KILL_AT_STAGE") or "::0").split(":")

    steps = [0]
    def hook(opt, args, kwargs):
        steps[0] += 1
        if steps[0] == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)
    from torch.optim.optimizer import register_optimizer_step_post_hook
    register_optimizer_step_post_hook(hook)

    seen = [0]
    def crash_point(at, path):
        if at == stage and path.name.lstrip(".").startswith(fname):
            seen[0] += 1
            if seen[0] == int(nth):
                os.kill(os.getpid(), signal.SIGKILL)
    ck._crash_point = crash_point

    data = load("digits", size=32, seed=0)
    torch.manual_seed(0)
    model = create("lenet5")
    fit(model, data.train, data.dev, run_dir=run_dir, resume=resume, epochs=3, batch=64,
        save_every=SAVE_EVERY, deterministic=True, verbose=0, seed=0)
    """
)


def _run(
    tmp: Path, run_dir: Path, mode: str, save_every: int, **env: object
) -> subprocess.CompletedProcess:
    script = tmp / "driver.py"
    script.write_text(DRIVER.replace("SAVE_EVERY", str(save_every)))
    e = dict(os.environ, **{k: str(v) for k, v in env.items()})
    return subprocess.run(
        [sys.executable, str(script), str(run_dir), mode],
        capture_output=True,
        text=True,
        env=e,
        timeout=300,
    )


def _final(run_dir: Path) -> tuple[dict, dict, dict]:
    verify_checkpoint(run_dir / "weights", "last")
    state = load_state(run_dir / "weights" / "last_state.pt")
    weights, _ = load_weights_file(run_dir / "weights" / "last.safetensors")
    best_epoch = verify_checkpoint(run_dir / "weights", "best")["epoch"]
    assert best_epoch == state["best_epoch"]
    best, _ = load_weights_file(run_dir / "weights" / "best.safetensors")
    return state, weights, best


def _assert_same(a: object, b: object, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        for k in a:
            _assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}/{i}")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


def _history_without_times(h: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k not in ("seconds", "img_per_s", "data_s")} for row in h
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[dict, dict, dict]]:
    """Uninterrupted runs, with epoch-end checkpoints only and with one every 7 steps."""
    out = {}
    for save_every in (0, 7):
        tmp = tmp_path_factory.mktemp(f"ref{save_every}")
        r = _run(tmp, tmp / "run", "new", save_every)
        assert r.returncode == 0, r.stderr
        out[save_every] = _final(tmp / "run")
    return out


def _check_parity(ref: tuple[dict, dict, dict], got: tuple[dict, dict, dict]) -> None:
    (s_ref, w_ref, b_ref), (s_got, w_got, b_got) = ref, got
    _assert_same(w_ref, w_got, "last.safetensors")
    _assert_same(b_ref, b_got, "best.safetensors")
    _assert_same(s_ref["model"], s_got["model"], "model")
    _assert_same(s_ref["optimizer"], s_got["optimizer"], "optimizer")
    _assert_same(s_ref["rng"], s_got["rng"], "rng")
    for k in ("epoch", "global_step", "step_in_epoch", "best", "best_epoch", "bad_epochs"):
        assert s_ref[k] == s_got[k], k
    _assert_same(
        _history_without_times(s_ref["history"]),
        _history_without_times(s_got["history"]),
        "history",
    )


# digits: 1,258 training images, 3 epochs of ceil(1258 / 64) = 20 steps: 60 steps in all.
# With save_every=7 the `last` checkpoint is committed at steps 7, 14, 20 (epoch end), 21,
# 28, 35, 40, 42, ...: its 4th commit is the one at step 21.
KILLS = {
    # id: (save_every, environment of the killed run)
    "step 9": (0, {"KILL_AT_STEP": 9}),
    "step 33": (0, {"KILL_AT_STEP": 33}),
    "step 57": (0, {"KILL_AT_STEP": 57}),
    "step 12, save_every 7": (7, {"KILL_AT_STEP": 12}),
    "step 44, save_every 7": (7, {"KILL_AT_STEP": 44}),
    "half-written state": (7, {"KILL_AT_STAGE": "writing:last_state.pt:4"}),
    "state fsynced, not committed": (7, {"KILL_AT_STAGE": "pending:last_state.pt:4"}),
    "manifest fsynced, not renamed": (7, {"KILL_AT_STAGE": "fsynced:last.manifest.json:4"}),
    "committed, no file renamed": (7, {"KILL_AT_STAGE": "committed:last.manifest.json:4"}),
    "between the two renames": (7, {"KILL_AT_STAGE": "renamed:last.safetensors:4"}),
    "best committed, not renamed": (7, {"KILL_AT_STAGE": "committed:best.manifest.json:2"}),
    # `last` names epoch 2 the best; `best` still holds epoch 1: repaired from `last`
    "last committed, best not yet": (7, {"KILL_AT_STAGE": "pending:best.safetensors:2"}),
}
# where the `last` checkpoint on disk must stand (global step) right after the kill
STEP_ON_DISK = {
    "half-written state": 20,
    "state fsynced, not committed": 20,
    "manifest fsynced, not renamed": 20,
    "committed, no file renamed": 21,  # committed: finished by the next load
    "between the two renames": 21,
}


@pytest.mark.parametrize("kill", list(KILLS))
def test_sigkill_then_resume_is_bitwise_equal(tmp_path: Path, reference, kill: str) -> None:
    save_every, env = KILLS[kill]
    run = tmp_path / "run"
    killed = _run(tmp_path, run, "new", save_every, **env)
    assert killed.returncode == -signal.SIGKILL, f"not killed ({kill}): {killed.stderr}"
    if kill in STEP_ON_DISK:
        manifest = verify_checkpoint(run / "weights", "last")  # whole, or finished now
        state = load_state(run / "weights" / "last_state.pt")
        assert manifest["step"] == state["global_step"] == STEP_ON_DISK[kill]
        weights, _meta = load_weights_file(run / "weights" / "last.safetensors")
        _assert_same(weights, state["model"], "last.safetensors vs state")  # one checkpoint
        assert not list((run / "weights").glob(".*.pending")) or kill.startswith(
            ("half", "state fsynced", "manifest")
        )
    resumed = _run(tmp_path, run, "resume", save_every)
    assert resumed.returncode == 0, f"resume after the kill ({kill}) failed: {resumed.stderr}"
    _check_parity(reference[save_every], _final(run))
    assert not list((run / "weights").glob(".*.tmp-*")), "a temporary file was left behind"
