"""Resume parity: a run killed with SIGKILL and resumed ends bitwise equal to an uninterrupted one.

Every run is a real subprocess. The driver kills itself with SIGKILL from an
optimizer-step hook (at a random step) or in the middle of writing the state file
(the temporary file is half written, never renamed). Then the same driver resumes the
run and finishes it. Weights, optimizer state and every RNG state must match the
uninterrupted run bit for bit (CPU, deterministic=true).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cnnkit.train import load_state, load_weights_file

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
    kill_save = int(os.environ.get("KILL_IN_STATE_SAVE", "-1"))

    steps = [0]
    def hook(opt, args, kwargs):
        steps[0] += 1
        if steps[0] == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)
    from torch.optim.optimizer import register_optimizer_step_post_hook
    register_optimizer_step_post_hook(hook)

    saves = [0]
    original = ck.atomic_write
    def torn_write(path, write):
        if str(path).endswith("last_state.pt"):
            saves[0] += 1
            if saves[0] == kill_save:
                def half(f):
                    import io
                    buf = io.BytesIO()
                    write(buf)
                    data = buf.getvalue()
                    f.write(data[: len(data) // 2])
                    f.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
                return original(path, half)
        return original(path, write)
    ck.atomic_write = torn_write

    data = load("digits", size=32, seed=0)
    torch.manual_seed(0)
    model = create("lenet5")
    fit(model, data.train, data.dev, run_dir=run_dir, resume=resume, epochs=3, batch=64,
        save_every=SAVE_EVERY, deterministic=True, verbose=0, seed=0)
    """
)


def _run(
    tmp: Path, run_dir: Path, mode: str, save_every: int, **env: int
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


def _final(run_dir: Path) -> tuple[dict, dict]:
    state = load_state(run_dir / "weights" / "last_state.pt")
    weights, _ = load_weights_file(run_dir / "weights" / "last.safetensors")
    return state, weights


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
    return [{k: v for k, v in row.items() if k not in ("seconds", "img_per_s")} for row in h]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[dict, dict]]:
    """Uninterrupted runs, with epoch-end checkpoints only and with one every 7 steps."""
    out = {}
    for save_every in (0, 7):
        tmp = tmp_path_factory.mktemp(f"ref{save_every}")
        r = _run(tmp, tmp / "run", "new", save_every)
        assert r.returncode == 0, r.stderr
        out[save_every] = _final(tmp / "run")
    return out


def _check_parity(ref: tuple[dict, dict], got: tuple[dict, dict]) -> None:
    (s_ref, w_ref), (s_got, w_got) = ref, got
    _assert_same(w_ref, w_got, "last.safetensors")
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


# digits: 1,259 training images, 3 epochs of ceil(1259 / 64) = 20 steps: 60 steps in all
@pytest.mark.parametrize("save_every", [0, 7])
def test_sigkill_at_random_step_then_resume_is_bitwise_equal(
    tmp_path: Path, reference, save_every: int
) -> None:
    step = random.Random(1234 + save_every).randint(5, 58)
    killed = _run(tmp_path, tmp_path / "run", "new", save_every, KILL_AT_STEP=step)
    assert killed.returncode == -signal.SIGKILL, f"not killed at step {step}: {killed.stderr}"
    resumed = _run(tmp_path, tmp_path / "run", "resume", save_every)
    assert resumed.returncode == 0, f"resume after a kill at step {step} failed: {resumed.stderr}"
    _check_parity(reference[save_every], _final(tmp_path / "run"))


def test_sigkill_inside_state_write_keeps_previous_checkpoint_and_resumes_equal(
    tmp_path: Path, reference
) -> None:
    # state saves with save_every=7: steps 7, 14, 20 (end of epoch 1), 21 <- killed in this one
    killed = _run(tmp_path, tmp_path / "run", "new", 7, KILL_IN_STATE_SAVE=4)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    weights_dir = tmp_path / "run" / "weights"
    torn = list(weights_dir.glob(".last_state.pt.tmp-*"))
    assert torn, "the kill should leave the half-written temporary file behind"
    previous = load_state(weights_dir / "last_state.pt")  # intact, and verified by its digest
    assert previous["global_step"] == 20 and previous["epoch"] == 1
    resumed = _run(tmp_path, tmp_path / "run", "resume", 7)
    assert resumed.returncode == 0, resumed.stderr
    _check_parity(reference[7], _final(tmp_path / "run"))
