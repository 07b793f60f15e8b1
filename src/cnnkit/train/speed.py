"""Automatic speed settings: precision, memory format and ``torch.compile``.

A net with convolutions of fewer than ``MIN_CONV_MACS`` multiply-adds per example keeps
fp32 + contiguous (its steps are mostly per-operation overhead). For larger ones
``precision=auto`` / ``memory_format=auto`` are resolved by a short calibration: a few
timed training steps (forward, loss, backward, optimizer step) of each candidate on a
throwaway copy of the model and a fresh optimizer, on the first mini-batch of the real
training set, the candidates taking turns step by step. The fastest candidate wins when
it is at least ``MIN_GAIN`` times faster than fp32 + contiguous, and bf16 only when its
loss on that batch is within ``BF16_LOSS_TOLERANCE`` of the fp32 loss. The model, the
optimizer and every random number generator are left exactly as they were. The result is
cached in ``$CNNKIT_CACHE/speed.json`` (default ``$XDG_CACHE_HOME/cnnkit`` or
``~/.cache/cnnkit``) under the architecture, input shape, batch, torch version and CPU
capability, so later runs skip the calibration (and choose alike). A calibration on a
busy machine (load average over ``BUSY_LOAD`` times its cores) says so in its note.

``compile=auto`` compiles only when the estimated run time (the calibrated fp32 step
time x steps) is over ``COMPILE_REPAY`` times ``COMPILE_COST_S``, the assumed compile
cost; short runs never compile.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "SpeedChoice",
    "autocast",
    "bf16_supported",
    "cache_file",
    "has_conv",
    "resolve_speed",
]

#: A candidate must beat fp32 + contiguous by this factor to be chosen (timing noise).
MIN_GAIN = 1.1
#: A net with fewer convolution multiply-adds per example keeps fp32 + contiguous without
#: calibrating: its steps are mostly per-operation overhead. LeNet-5 (0.36 M) is above it
#: and calibrated: channels_last made it 1.3x faster on a 2-core AVX-512 CPU with torch
#: 2.14 (``benchmarks/train_bench.py``); a CIFAR-size ResNet-18 has 556 M.
MIN_CONV_MACS = 0.1e6
#: Timed steps per candidate (at least; after one warm-up step), the candidates taking
#: turns, until ``MIN_CALIBRATION_S`` have passed or ``MAX_STEPS`` rounds are done.
STEPS = 2
MIN_CALIBRATION_S = 0.5
MAX_STEPS = 20
#: A CPU whose load average is over this many times its cores is busy: the calibration
#: says so, as its choice may not be the fastest on a quiet machine.
BUSY_LOAD = 1.5
#: The bf16 loss on the calibration batch may differ from fp32's by this fraction.
BF16_LOSS_TOLERANCE = 0.02
#: Assumed cost of ``torch.compile`` of one model, in seconds (measured 20-30 s on CPU).
COMPILE_COST_S = 25.0
#: ``compile=auto`` compiles when the estimated run time exceeds this many compile costs.
COMPILE_REPAY = 20.0


@dataclass
class SpeedChoice:
    """The resolved speed settings of a run.

    Attributes:
        precision: ``fp32`` or ``bf16``.
        memory_format: ``contiguous`` or ``channels_last``.
        compile: Whether the model is compiled.
        step_ms: The calibrated fp32 step time in ms (None: not measured).
        reason: Why, for the note line.
    """

    precision: str = "fp32"
    memory_format: str = "contiguous"
    compile: bool = False
    step_ms: float | None = None
    reason: str = "forced"

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for the training state."""
        return asdict(self)

    def note(self) -> str:
        """The line printed at the start of training."""
        what = f"{self.precision} + {self.memory_format}"
        if self.compile:
            what += " + compile"
        return f"speed: {what} ({self.reason})"


def has_conv(model: nn.Module) -> bool:
    """Whether ``model`` holds a 2-D convolution (the layers channels_last and bf16 help)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast has fast kernels on ``device`` (AVX-512 BF16 / AMX, or CUDA)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((check is not None and check()) or (amx is not None and amx()))


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context for forward + loss: bf16 autocast, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cache_root() -> Path:
    """cnnkit's cache folder: ``$CNNKIT_CACHE``, else ``$XDG_CACHE_HOME/cnnkit`` or
    ``~/.cache/cnnkit`` (speed choices, cached features)."""
    root = os.environ.get("CNNKIT_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(xdg) / "cnnkit")
    return Path(root)


def cache_file() -> Path:
    """``$CNNKIT_CACHE/speed.json``, by default under ``$XDG_CACHE_HOME/cnnkit``."""
    return cache_root() / "speed.json"


def _cache_key(arch: str, x: torch.Tensor, device: torch.device, candidates: list) -> str:
    cap = torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else str(device)
    if device.type == "cuda":
        cap = torch.cuda.get_device_name(device)
    shape = "x".join(str(s) for s in x.shape)
    cands = ",".join(f"{p}/{m}" for p, m in candidates)
    return (
        f"{arch}|{shape}|torch {torch.__version__}|{cap}|threads {torch.get_num_threads()}|{cands}"
    )


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, key: str, value: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache(path)
        data[key] = value
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:  # a read-only home: calibrate again next time
        pass


class _Candidate:
    """One candidate setting on its own throwaway copy of the model, ready to step."""

    def __init__(
        self,
        model: nn.Module,
        make_opt: Callable[[nn.Module], torch.optim.Optimizer],
        x: torch.Tensor,
        precision: str,
        memory_format: str,
    ) -> None:
        self.precision, self.memory_format = precision, memory_format
        self.m = _bare_copy(model)
        self.m.train()
        self.x = x
        if memory_format == "channels_last":
            self.m.to(memory_format=torch.channels_last)
            self.x = x.contiguous(memory_format=torch.channels_last)
        self.opt = make_opt(self.m)
        self.times: list[float] = []
        self.first_loss = float("nan")

    def step(
        self,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        y: torch.Tensor,
        device: torch.device,
        timed: bool,
    ) -> None:
        """One training step; its milliseconds are kept when ``timed``, else its loss."""
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        with autocast(self.precision, device):
            loss = loss_fn(self.m(self.x), y)
        loss.backward()
        self.opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if timed:
            self.times.append((time.perf_counter() - t0) * 1000)
        else:
            self.first_loss = float(loss.detach())


def _time_candidates(
    model: nn.Module,
    make_opt: Callable[[nn.Module], torch.optim.Optimizer],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    candidates: list[tuple[str, str]],
    device: torch.device,
    steps: int,
) -> list[tuple[float, float, list[float]]]:
    """Per candidate, each on its own copy: its fastest timed training step (ms), the
    loss of its warm-up step, and all its step times.

    The candidates take turns, one step each per round, so that a burst of load from
    another process slows all of them alike rather than one: at least ``steps`` rounds,
    more (up to ``MAX_STEPS``) until ``MIN_CALIBRATION_S`` have passed, so that fast
    steps are timed often enough to rise above the noise.
    """
    cands = [_Candidate(model, make_opt, x, p, f) for p, f in candidates]
    for c in cands:
        c.step(loss_fn, y, device, timed=False)
    t0 = time.perf_counter()
    rounds = 0
    while rounds < steps or (rounds < MAX_STEPS and time.perf_counter() - t0 < MIN_CALIBRATION_S):
        for c in cands:
            c.step(loss_fn, y, device, timed=True)
        rounds += 1
    return [(min(c.times), c.first_loss, c.times) for c in cands]


def _load_average() -> float | None:
    """The 1-minute load average, where the system has one."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _busy(device: torch.device) -> str:
    """Why timings taken now may mislead ("" when the machine is quiet).

    A CPU whose 1-minute load average exceeds ``BUSY_LOAD`` times its usable cores is
    shared with other work: a calibration there may pick a setting that is not the
    fastest on a quiet machine.
    """
    if device.type != "cpu":
        return ""
    load = _load_average()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if load is None or not cores or load <= BUSY_LOAD * cores:
        return ""
    return f"the machine was busy (load average {load:.1f} on {cores} cores)"


_HOOKS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def _bare_copy(model: nn.Module) -> nn.Module:
    """A deep copy without the module hooks, so that the user's hooks never see calibration."""
    m = copy.deepcopy(model)
    for mod in m.modules():
        for name in _HOOKS:
            hooks = getattr(mod, name, None)
            if isinstance(hooks, dict):
                hooks.clear()
    return m


def conv_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of the 2-D convolutions for one example (a forward pass on a copy)."""
    m = _bare_copy(model).eval()
    total = 0

    def hook(mod: nn.Module, inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        k = mod.weight.shape[1] * mod.weight.shape[2] * mod.weight.shape[3]
        total += out[0].numel() * k

    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            mod.register_forward_hook(hook)
    with torch.no_grad():
        m(x[:1])
    return total


def _rng_snapshot(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), random.getstate(), np.random.get_state(), cuda


def _rng_restore(snap: tuple, device: torch.device) -> None:
    torch.set_rng_state(snap[0])
    random.setstate(snap[1])
    np.random.set_state(snap[2])
    if snap[3] is not None:
        torch.cuda.set_rng_state(snap[3], device)


def resolve_speed(
    model: nn.Module,
    arch: str,
    x: torch.Tensor | None,
    y: torch.Tensor | None,
    *,
    precision: str,
    memory_format: str,
    compile: bool | str,
    make_opt: Callable[[nn.Module], torch.optim.Optimizer],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    device: torch.device,
    total_steps: int,
    use_cache: bool = True,
) -> tuple[SpeedChoice, bool]:
    """Turn ``auto`` settings into concrete ones, calibrating when needed.

    Args:
        model: The model to train (left untouched: the timing runs on copies).
        arch: Its architecture name (part of the cache key).
        x: The calibration mini-batch (on ``device``; needed when a setting is ``auto``).
        y: Its targets.
        precision: ``auto``, ``fp32`` or ``bf16``.
        memory_format: ``auto``, ``contiguous`` or ``channels_last``.
        compile: ``auto``, True or False.
        make_opt: Builds a fresh optimizer for a model copy.
        loss_fn: ``loss(outputs, targets)``.
        device: Where training runs.
        total_steps: Optimizer steps of the whole run (for ``compile=auto``).
        use_cache: Read and write the calibration cache.

    Returns:
        ``(choice, calibrated)``; ``calibrated`` is True when timing steps ran.
    """
    choice = SpeedChoice(
        precision="fp32" if precision == "auto" else precision,
        memory_format="contiguous" if memory_format == "auto" else memory_format,
        compile=compile is True,
    )
    calibrated = False
    if precision == "auto" or memory_format == "auto":
        assert x is not None and y is not None
        conv = has_conv(model) and x.ndim == 4
        bf16 = bf16_supported(device)
        precs = ["fp32", "bf16"] if precision == "auto" and bf16 and conv else [choice.precision]
        fmts = (
            ["contiguous", "channels_last"]
            if memory_format == "auto" and conv
            else [choice.memory_format]
        )
        # bf16 is tried with channels_last only where both are open (oneDNN's fast path)
        candidates = [
            (p, f)
            for p in precs
            for f in fmts
            if not (
                p == "bf16" and f == "contiguous" and "channels_last" in fmts and "fp32" in precs
            )
        ]
        key = _cache_key(arch, x, device, candidates)
        path = cache_file()
        hit = _read_cache(path).get(key) if use_cache and len(candidates) > 1 else None
        if len(candidates) == 1:
            why = "no convolutions" if not conv else "no bf16 support on this device"
            choice.reason = f"auto: {why}"
        elif isinstance(hit, dict) and {"precision", "memory_format"} <= set(hit):
            choice.precision, choice.memory_format = hit["precision"], hit["memory_format"]
            choice.step_ms = hit.get("step_ms")
            choice.reason = f"cached in {path}: {hit.get('reason', '')}"
        elif (macs := conv_macs(model, x)) < MIN_CONV_MACS:
            choice.reason = (
                f"auto: {macs / 1e6:.2g} M conv multiply-adds per example, under "
                f"{MIN_CONV_MACS / 1e6:g} M: too small for bf16 or channels_last to pay off"
            )
        else:
            snap = _rng_snapshot(device)
            try:
                _calibrate(choice, candidates, model, make_opt, loss_fn, x, y, device)
            finally:
                _rng_restore(snap, device)
            calibrated = True
            busy = _busy(device)
            if busy:
                choice.reason += f"; {busy}: delete {path} to calibrate again on a quiet one"
            if use_cache:
                _write_cache(path, key, choice.to_dict())
    if compile == "auto":
        est = (choice.step_ms or 0.0) / 1000 * total_steps
        choice.compile = est > COMPILE_REPAY * COMPILE_COST_S
        if choice.compile:
            choice.reason += (
                f"; compiled: about {est:.0f} s of training > {COMPILE_REPAY:g} x "
                f"{COMPILE_COST_S:g} s compile cost"
            )
    return choice, calibrated


def _calibrate(
    choice: SpeedChoice,
    candidates: list[tuple[str, str]],
    model: nn.Module,
    make_opt: Callable[[nn.Module], torch.optim.Optimizer],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
) -> None:
    """Time each candidate and write the winner into ``choice``."""
    shape = "x".join(str(s) for s in x.shape)
    timed = _time_candidates(model, make_opt, loss_fn, x, y, candidates, device, STEPS)
    steps = len(timed[0][2])
    base = candidates[0]
    base_ms, base_loss, _ = timed[0]
    choice.step_ms = base_ms
    best, best_ms, refused = base, base_ms, ""
    for cand, (ms, loss, _) in zip(candidates[1:], timed[1:], strict=True):
        if cand[0] == "bf16":
            rel = abs(loss - base_loss) / max(abs(base_loss), 1e-12)
            if not rel < BF16_LOSS_TOLERANCE:
                refused = (
                    f"; bf16 refused: its loss differs from fp32's by {rel:.1%} "
                    f"(> {BF16_LOSS_TOLERANCE:.0%})"
                )
                continue
        if ms * MIN_GAIN <= base_ms and ms < best_ms:
            best, best_ms = cand, ms
    choice.precision, choice.memory_format = best
    choice.reason = (
        f"calibrated: {base_ms / best_ms:.2f}x fp32 on {steps} steps of {shape}, "
        f"fp32 {base_ms:.0f} ms/step{refused}"
    )
