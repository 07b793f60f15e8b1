"""Many processes, one run: torchrun, DistributedDataParallel and elastic restarts.

``torchrun --nproc_per_node=N -m cnnkit.cli train ...`` (or ``cnnkit train devices=N``,
which re-launches itself that way) starts N copies of the same command. Each reads
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from its environment; :class:`DistContext`
turns them into a process group (gloo on the CPU, NCCL on CUDA), and is a no-op in a
plain single process, so the trainer calls it unconditionally.

How the work is divided:

- ``batch`` is the *global* mini-batch ``m``: every optimizer step uses ``m`` examples
  in total, whatever the number of processes. Each process takes every N-th example of
  the global batch (:func:`shard`), and its loss is weighted by :func:`shard_weight`, so
  DistributedDataParallel's mean over processes is exactly the mean over the ``m``
  examples (also for a last, smaller batch that does not divide evenly). N processes
  therefore follow the same trajectory as one process, up to float rounding.
- Every process draws from its own random streams (augmentation, dropout, DataLoader
  workers): :func:`rank_seed` gives rank 0 the run's seed and every other rank a
  different one.
- Only rank 0 writes files and prints; metrics are summed over all processes first.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch import nn

from cnnkit.data.augment import shard_batch as shard
from cnnkit.errors import CnnkitError

__all__ = [
    "DistContext",
    "claim_run_dir",
    "in_torchrun",
    "launch",
    "launch_id",
    "rank_seed",
    "restart_count",
    "shard",
    "shard_weight",
]

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
_GOLDEN = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads rank seeds far apart
_GROUPS_MADE = [0]  # process groups this process has made (each gets fresh store keys)


def in_torchrun() -> bool:
    """Whether torchrun started this process (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` are set).

    Returns:
        True under ``torchrun`` / ``python -m torch.distributed.run``.
    """
    return all(k in os.environ for k in _ENV)


def restart_count() -> int:
    """How many times torchrun has restarted this job's workers (``TORCHELASTIC_RESTART_COUNT``).

    Returns:
        0 on the first attempt and outside torchrun.
    """
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def launch_id() -> str | None:
    """An identity of this torchrun job that stays the same when torchrun restarts its workers.

    It joins torchrun's rendezvous id, the host name and the process id of the torchrun
    agent (the workers' parent, which lives through every restart). A run folder marked
    with it is found again by the restarted workers, so they continue the same run
    instead of starting ``train2``.

    Returns:
        The identity, or None outside torchrun.
    """
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id is None:
        return None
    return f"{run_id}@{socket.gethostname()}:{os.getppid()}"


def rank_seed(seed: int, rank: int) -> int:
    """The seed of process ``rank``'s random streams: ``seed`` itself on rank 0.

    Args:
        seed: The run's seed.
        rank: The process rank.

    Returns:
        A seed in ``[0, 2**63)``, different for every rank.
    """
    return int(seed) if rank == 0 else (int(seed) + rank * _GOLDEN) % 2**63


def shard_weight(n: int, rank: int, world_size: int) -> float:
    """The loss weight of process ``rank`` for a global mini-batch of ``n`` examples.

    DistributedDataParallel averages the gradients of the processes. With ``n_r``
    examples on process ``r`` and its mean loss weighted by ``n_r * N / n``, that
    average is the gradient of the mean loss over all ``n`` examples.

    Args:
        n: Examples in the global mini-batch.
        rank: This process.
        world_size: Number of processes.

    Returns:
        ``n_r * world_size / n`` (0 for a process whose part is empty).
    """
    if world_size == 1:
        return 1.0
    return len(range(rank, n, world_size)) * world_size / n


@dataclass
class DistContext:
    """The processes of one run: rank, world size, device and the collectives the trainer needs.

    Use it as a context manager: under torchrun it joins the process group on entry
    (``init_process_group``, gloo on the CPU, NCCL on CUDA) and leaves it on exit; if a
    group already exists (the caller made one) it is used and left alone. Outside
    torchrun every method is a no-op, so single-process code pays nothing.

    Attributes:
        rank: This process (0 is the main process: it writes files and prints).
        world_size: Number of processes.
        local_rank: This process on its machine (picks its GPU).
        device: Where this process trains.
        restart_count: torchrun restarts so far (``TORCHELASTIC_RESTART_COUNT``).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    restart_count: int = 0
    _owns_group: bool = field(default=False, repr=False)
    _old_sigterm: Any = field(default=None, repr=False)

    @classmethod
    def from_env(cls, device: str | torch.device = "cpu") -> DistContext:
        """Read this process's place from torchrun's environment (or an existing process group).

        Args:
            device: Where to train. ``"cuda"`` without an index becomes ``cuda:LOCAL_RANK``.

        Returns:
            The context (not yet entered).
        """
        import torch.distributed as dist

        dev = torch.device(device)
        rank, world, local = 0, 1, 0
        if dist.is_available() and dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
            local = int(os.environ.get("LOCAL_RANK", "0"))
        elif in_torchrun():
            try:
                rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
                local = int(os.environ["LOCAL_RANK"])
            except ValueError:
                raise CnnkitError(
                    "RANK, WORLD_SIZE and LOCAL_RANK must be integers; start the processes "
                    "with torchrun."
                ) from None
        if world > 1 and dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", local)
        return cls(rank, world, local, dev, restart_count())

    @property
    def distributed(self) -> bool:
        """Whether more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes files and prints."""
        return self.rank == 0

    @property
    def backend(self) -> str:
        """``"nccl"`` on CUDA, ``"gloo"`` on the CPU."""
        return "nccl" if self.device.type == "cuda" else "gloo"

    def __enter__(self) -> DistContext:
        import torch.distributed as dist

        if self.distributed and not dist.is_initialized():
            if not dist.is_available():
                raise CnnkitError(
                    "this torch build has no torch.distributed; install a build with it or "
                    "run one process."
                )
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group(
                self.backend, rank=self.rank, world_size=self.world_size, store=self._store()
            )
            self._owns_group = True
        if (
            "TORCHELASTIC_RUN_ID" in os.environ
            and threading.current_thread() is threading.main_thread()
        ):
            # torchrun stops the surviving workers with SIGTERM when one fails; as an exception
            # it unwinds `finally` blocks, so a checkpoint being written leaves no temporary file
            self._old_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        import torch.distributed as dist

        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None
        if self._owns_group and dist.is_initialized():
            if exc_type is None:
                dist.barrier()  # every process leaves together: none tears down mid-collective
                dist.destroy_process_group()
            # after an error a peer may be gone: leave the teardown to process exit
            self._owns_group = False

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over all processes, in place (nothing to do in one process).

        Args:
            t: A tensor (any device; moved to this process's device for NCCL).

        Returns:
            ``t``, now holding the sum.
        """
        if not self.distributed:
            return t
        import torch.distributed as dist

        if self.backend == "nccl" and t.device != self.device:
            buf = t.to(self.device)
            dist.all_reduce(buf)
            t.copy_(buf.to(t.device))
        else:
            dist.all_reduce(t)
        return t

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is True on at least one (for collective decisions).

        Args:
            flag: This process's vote.

        Returns:
            Whether any process voted True.
        """
        if not self.distributed:
            return bool(flag)
        return bool(self.all_reduce_sum(torch.tensor([float(flag)], dtype=torch.float64)).item())

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process (a picklable value).

        Args:
            obj: The value (only rank 0's is used).

        Returns:
            Rank 0's value.
        """
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self._object_device())
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order, on every process.

        Args:
            obj: This process's picklable value.

        Returns:
            ``[obj of rank 0, obj of rank 1, ...]``.
        """
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model to train: ``DistributedDataParallel(model)`` across processes, else ``model``.

        DDP copies rank 0's weights to every process once, then averages the gradients in
        ``backward()``. Save and evaluate ``model`` itself (its ``state_dict`` keys carry no
        ``module.`` prefix).

        Args:
            model: The network, already on :attr:`device`.

        Returns:
            The wrapped (or same) model.
        """
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def sync_buffers(self, model: nn.Module) -> None:
        """Copy rank 0's buffers (batch-norm running statistics) to every process.

        Args:
            model: The (unwrapped) network.
        """
        if not self.distributed:
            return
        import torch.distributed as dist

        for b in model.buffers():
            dist.broadcast(b.data, src=0)

    def _store(self) -> Any:
        """torchrun's store with a key space of this group's own (None: torch's env:// default).

        torchrun shares its rendezvous store with the workers and keeps it through
        restarts, so restarted workers would read their predecessors' addresses and fail
        to connect (pytorch/pytorch#135712). A prefix per attempt, and per group made in
        this process (``fit`` called twice makes two), keeps them apart.
        """
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
            return None
        from torch.distributed import PrefixStore, TCPStore
        from torch.distributed.constants import default_pg_timeout

        store = TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            self.world_size,
            is_master=False,
            timeout=default_pg_timeout,
        )
        _GROUPS_MADE[0] += 1
        return PrefixStore(f"cnnkit/attempt_{self.restart_count}/group_{_GROUPS_MADE[0]}", store)

    def _object_device(self) -> torch.device | None:
        return self.device if self.backend == "nccl" else None


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def claim_run_dir(
    root: Path, base: str, new: Callable[[], Path], ctx: DistContext, *, marker: str = ".launch"
) -> Path:
    """The run folder that every process, and every torchrun restart of the job, agrees on.

    Rank 0 decides, creates the folder and tells the others. On a torchrun restart it
    takes the newest folder named ``base``, ``base2``, ... that this job marked on its
    first attempt (:func:`launch_id`), so the restarted workers continue that run instead
    of starting another; otherwise it takes ``new()``. Under torchrun the folder gets the
    marker file.

    Args:
        root: Folder of the runs (``runs/classify``).
        base: The run name (``train`` by default).
        new: Picks a fresh folder (``train``, then ``train2``, ...).
        ctx: The processes.
        marker: File in the run folder that holds the launch identity.

    Returns:
        The run folder (created).
    """
    chosen = ""
    if ctx.is_main:
        ident = launch_id()
        found: tuple[int, Path] | None = None
        if ident is not None and ctx.restart_count > 0 and root.is_dir():
            for c in root.iterdir():
                suffix = c.name[len(base) :]
                if not c.name.startswith(base) or not (suffix == "" or suffix.isdigit()):
                    continue
                m = c / marker
                if m.is_file() and m.read_text().strip() == ident:
                    number = int(suffix) if suffix else 1
                    if found is None or number > found[0]:
                        found = (number, c)
        run = found[1] if found is not None else new()
        run.mkdir(parents=True, exist_ok=True)
        if ident is not None and found is None:
            from cnnkit.train.checkpoint import atomic_write

            atomic_write(run / marker, lambda f: f.write(ident.encode() + b"\n"))
        chosen = str(run)
    return Path(ctx.broadcast(chosen))


def launch(argv: Sequence[str], nproc: int, *, module: str = "cnnkit.cli") -> int:
    """Run ``python -m MODULE ARGV...`` in ``nproc`` processes under torchrun and wait for it.

    This is what ``cnnkit train devices=N`` does: the same command, started by
    ``python -m torch.distributed.run --standalone --nproc_per_node=N``, each process
    with ``OMP_NUM_THREADS`` = its share of the cores (unless already set).

    Args:
        argv: The command's arguments (e.g. ``["train", "devices=2", ...]``).
        nproc: Processes on this machine.
        module: The module to run.

    Returns:
        torchrun's exit status (0 when every process succeeded).
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise CnnkitError(f"devices must be an integer >= 1, got {nproc!r}; e.g. devices=2.")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        module,
        *argv,
    ]
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:  # the cores shared out (torchrun would say 1, with a banner)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        env["OMP_NUM_THREADS"] = str(max(1, (cores or 1) // nproc))
    return subprocess.call(cmd, env=env)
