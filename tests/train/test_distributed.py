"""Many processes: torchrun + DDP follow one process, restarts resume exactly, only rank 0 writes.

The multi-process tests start real jobs with ``python -m torch.distributed.run`` (gloo
on 127.0.0.1, ``--standalone`` picks a free port) and compare numbers:

- 2 processes end with the weights of 1 process on the same global batch (atol 1e-6:
  DDP adds the two half-batch gradients in another order than one process sums the
  batch), through the in-memory ImageSet path and the DataLoader path, with a last
  batch of 1 example (one process gets no share of it);
- a job whose rank 1 kills itself with SIGKILL mid-epoch, under ``--max-restarts=1``,
  resumes in the same run folder and ends bitwise equal to an uninterrupted job
  (augmentation and dropout on: every rank's RNG streams are restored);
- rank 1 never writes a file; the run folder holds exactly the expected files;
- every rank draws its own augmentation;

and, in one process, that seeded runs are bitwise repeatable with 0 and 2 DataLoader
workers and that workers (and ranks) never repeat each other's random draws.
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, get_worker_info

from cnnkit.data import ImageSet, Preprocess
from cnnkit.data.augment import Augment, TensorBatches, shard_batch
from cnnkit.errors import CnnkitError
from cnnkit.train import TrainConfig, fit, load_state, load_weights_file
from cnnkit.train.distributed import (
    DistContext,
    claim_run_dir,
    rank_seed,
    shard_weight,
)

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="this torch build has no torch.distributed"
)

TIMEOUT = 300


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # same math in every run
    env.update(extra)
    return env


def _torchrun(args: list[str], cwd: Path, *, restarts: int = 0, **env: str):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        f"--max-restarts={restarts}",
        *args,
    ]
    t = time.perf_counter()
    r = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, env=_env(**env), timeout=TIMEOUT
    )
    print(f"{' '.join(args[:3])}: {time.perf_counter() - t:.1f} s")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    return r


# ------------------------------------------------------------------ 1 process == 2 processes

FIT_DRIVER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset
    from safetensors.torch import save_file
    from cnnkit.data import ImageSet, Preprocess
    from cnnkit.train import fit

    out = sys.argv[1]
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    g = torch.Generator().manual_seed(0)
    # 41 = 5 x 8 + 1: the last global mini-batch holds 1 example, rank 1 has no share of it
    images = torch.randint(0, 256, (41, 1, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 3, (41,), generator=g)
    pre = Preprocess((8, 8), 1, (0.5,), (0.25,))
    train = ImageSet(images, labels, pre, "train")
    dev = ImageSet(images[:13], labels[:13], pre, "dev")

    def net():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)
        )

    settings = dict(
        epochs=2, batch=8, optimizer="momentum", lr=0.1, l2=0.05, clip_grad=1.0,
        degrees=0, translate=0, scale=0, workers=0, verbose=0, deterministic=True, seed=0,
    )
    report = {}
    for kind in ("imageset", "loader"):
        model = net()
        if kind == "imageset":
            tr, dv = train, dev
        else:  # a generic Dataset: the DataLoader path
            tr = TensorDataset(pre.normalize(images), labels)
            dv = TensorDataset(pre.normalize(images[:13]), labels[:13])
        r = fit(model, tr, dv, **settings)
        report[kind] = {"history": r.history, "best_epoch": r.best_epoch}
        if rank == 0:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                      f"{out}/{kind}-{world}.safetensors")
    if rank == 0:
        with open(f"{out}/report-{world}.json", "w") as f:
            json.dump(report, f)
    if world > 1:  # augmentation streams: 16 copies of one image, so only the draws differ
        same = ImageSet(images[:1].repeat(16, 1, 1, 1), labels[:16], pre, "train")
        seen = []
        model = net()
        model.register_forward_pre_hook(lambda m, a: None if seen else seen.append(a[0].clone()))
        fit(model, same, None, epochs=1, batch=8, degrees=30, translate=0.2, scale=0.2,
            verbose=0, seed=0)
        save_file({"x": seen[0]}, f"{out}/augment-rank{rank}.safetensors")
    """
)


@pytest.fixture(scope="module")
def fit_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same script in 1 process and in 2 processes under torchrun."""
    tmp = tmp_path_factory.mktemp("fit")
    script = tmp / "driver.py"
    script.write_text(FIT_DRIVER)
    one = subprocess.run(
        [sys.executable, str(script), str(tmp)],
        cwd=tmp,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=TIMEOUT,
    )
    assert one.returncode == 0, one.stderr[-4000:]
    _torchrun([str(script), str(tmp)], tmp)
    return tmp


@pytest.mark.parametrize("kind", ["imageset", "loader"])
def test_two_processes_end_with_the_weights_of_one(fit_runs: Path, kind: str) -> None:
    from safetensors.torch import load_file

    one = load_file(fit_runs / f"{kind}-1.safetensors")
    two = load_file(fit_runs / f"{kind}-2.safetensors")
    assert set(one) == set(two)
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=0, atol=1e-6, msg=f"{kind}: {k}")
        assert not torch.equal(one[k], torch.zeros_like(one[k]))
    r1 = json.loads((fit_runs / "report-1.json").read_text())[kind]
    r2 = json.loads((fit_runs / "report-2.json").read_text())[kind]
    assert r1["best_epoch"] == r2["best_epoch"]
    assert len(r1["history"]) == len(r2["history"]) == 2
    for a, b in zip(r1["history"], r2["history"]):  # global metrics, summed over processes
        for key in ("train_loss", "train_accuracy", "dev_loss", "dev_accuracy", "lr"):
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-7), key


def test_every_rank_draws_its_own_augmentation(fit_runs: Path) -> None:
    from safetensors.torch import load_file

    x = [load_file(fit_runs / f"augment-rank{r}.safetensors")["x"] for r in (0, 1)]
    assert x[0].shape == x[1].shape == (4, 1, 8, 8)  # each rank: half of a global batch of 8
    assert (x[0] - x[1]).abs().max() > 0.1  # the same image, different draws
    for r in (0, 1):  # exactly rank r's stream: the generator seeded with rank_seed(seed + 1, r)
        g = torch.Generator().manual_seed(0)
        raw = torch.randint(0, 256, (41, 1, 8, 8), dtype=torch.uint8, generator=g)
        pre = Preprocess((8, 8), 1, (0.5,), (0.25,))
        same = ImageSet(raw[:1].repeat(16, 1, 1, 1), torch.zeros(16, dtype=torch.long), pre)
        tb = TensorBatches(
            same, 8, shuffle=True, augment=Augment(30, 0.2, 0.2), rank=r, world_size=2
        )
        images, _ = next(tb.epoch(0, 0, torch.Generator().manual_seed(rank_seed(1, r))))
        assert torch.equal(images, x[r])
        assert len({tuple(row.flatten().tolist()) for row in x[r]}) == 4  # per-image draws


# ------------------------------------------------------- the command: devices=N, restarts

TINY_MODEL = textwrap.dedent(
    """
    name: tiny
    input: 8x8x1
    num_classes: 10
    layers:
      - conv: {f: 3, s: 1, p: same, n_C: 8}
      - relu
      - flatten
      - dropout: 0.2
      - fc: num_classes
    """
)

# torchrun runs this instead of `-m cnnkit.cli`: it logs, as it happens, every file the
# process opens for writing (and every rename, removal, mkdir) under the watched folder, and
# "EXIT" at a normal exit; in the first attempt rank 1 kills itself with SIGKILL after
# optimizer step KILL_AT.
WRAPPER = textwrap.dedent(
    """
    import atexit, os, signal, sys
    rank, attempt = os.environ["RANK"], os.environ["TORCHELASTIC_RESTART_COUNT"]
    watch, log = os.environ["WATCH"], os.environ["LOG"]
    record = open(os.path.join(log, f"writes-{attempt}-{rank}.txt"), "w", buffering=1)

    def audit(event, args):
        if event == "open" and isinstance(args[2], int) and args[0] is not None:
            flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
            if args[2] & flags and str(args[0]).startswith(watch):
                record.write(f"open {args[0]}\\n")
        elif event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir"):
            if str(args[0]).startswith(watch):
                record.write(f"{event} {args[0]}\\n")

    sys.addaudithook(audit)
    atexit.register(lambda: record.write("EXIT\\n"))
    if rank == "1" and attempt == "0":
        from torch.optim.optimizer import register_optimizer_step_post_hook

        steps = [0]

        def kill(opt, args, kwargs):
            steps[0] += 1
            if steps[0] == int(os.environ["KILL_AT"]):
                os.kill(os.getpid(), signal.SIGKILL)

        register_optimizer_step_post_hook(kill)
    from cnnkit.cli import main

    sys.exit(main())  # as the `cnnkit` program: argv from sys.argv
    """
)

RUN_FILES = {
    ".launch",
    "report.html",  # written by rank 0 alone, once the run is saved
    "config.yaml",
    "results.csv",
    "summary.txt",
    "weights/best.manifest.json",
    "weights/best.safetensors",
    "weights/last.manifest.json",
    "weights/last.safetensors",
    "weights/last_state.pt",
}


def _train_args(tmp: Path, project: Path) -> list[str]:
    # digits: 1,258 training images = 20 steps of 64; save_every=3 checkpoints mid-epoch
    return [
        "train",
        f"model={tmp / 'tiny.yaml'}",
        "data=digits",
        "epochs=2",
        "batch=64",
        "save_every=3",
        "verbose=2",
        f"project={project}",
    ]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """`cnnkit train devices=2`, and the same job under torchrun with rank 1 killed at step 25."""
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "tiny.yaml").write_text(TINY_MODEL)
    (tmp / "wrapper.py").write_text(WRAPPER)
    (tmp / "log").mkdir()
    t = time.perf_counter()
    whole = subprocess.run(
        [sys.executable, "-m", "cnnkit.cli", *_train_args(tmp, tmp / "whole"), "devices=2"],
        cwd=tmp,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=TIMEOUT,
    )
    print(f"cnnkit train devices=2: {time.perf_counter() - t:.1f} s")
    assert whole.returncode == 0, whole.stdout[-3000:] + whole.stderr[-6000:]
    killed = _torchrun(
        [str(tmp / "wrapper.py"), *_train_args(tmp, tmp / "killed"), "devices=2"],
        tmp,
        restarts=1,
        KILL_AT="25",
        WATCH=str(tmp / "killed"),
        LOG=str(tmp / "log"),
    )
    return {"tmp": tmp, "whole": whole, "killed": killed}


def _files(run: Path) -> set[str]:
    """The run's files; the page's plots (which depend on the errors made) checked apart."""
    files = {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}
    plots = {f for f in files if f.startswith("plots/")}
    assert "plots/learning_curves.png" in plots and all(f.endswith(".png") for f in plots)
    return files - plots


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "results.csv") as f:
        return [
            {k: v for k, v in row.items() if k not in ("seconds", "img_per_s", "data_s")}
            for row in csv.DictReader(f)
        ]


def test_devices_2_runs_two_processes_and_rank_0_alone_reports(cli_runs: dict) -> None:
    tmp: Path = cli_runs["tmp"]  # type: ignore[assignment]
    out = cli_runs["whole"].stdout  # type: ignore[union-attr]
    root = tmp / "whole" / "classify"
    assert sorted(p.name for p in root.iterdir()) == ["train"]
    run = root / "train"
    assert _files(run) == RUN_FILES  # no temporary or pending files left
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["devices"] == 2 and cfg["name"] == "train"
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]  # one row per epoch
    for line in ("training ", "epoch 1/2", "epoch 2/2", "test accuracy", "run saved in"):
        assert sum(line in x for x in out.splitlines()) == 1, (line, out)  # printed once
    test_line = next(x for x in out.splitlines() if x.startswith("test accuracy"))
    assert test_line.strip() in (run / "summary.txt").read_text()
    # the metrics are those of all 1,258 images (summed over both processes), not of one half
    state = load_state(run / "weights" / "last_state.pt")
    assert state["global_step"] == 40 and len(state["rank_rng"]) == 2
    assert not torch.equal(state["rank_rng"][0]["augment"], state["rank_rng"][1]["augment"])


def test_a_killed_rank_is_restarted_and_the_run_continues_exactly(cli_runs: dict) -> None:
    tmp: Path = cli_runs["tmp"]  # type: ignore[assignment]
    out = cli_runs["killed"].stdout + cli_runs["killed"].stderr  # type: ignore[union-attr]
    assert "torchrun restart 1: continuing from the last checkpoint" in out
    root = tmp / "killed" / "classify"
    assert sorted(p.name for p in root.iterdir()) == ["train"]  # the restart made no train2
    killed, whole = root / "train", tmp / "whole" / "classify" / "train"
    assert _files(killed) == RUN_FILES
    assert _rows(killed) == _rows(whole)
    # the same scores; the speed note differs only in where the choice came from
    *k_scores, k_speed = (killed / "summary.txt").read_text().splitlines()
    *w_scores, w_speed = (whole / "summary.txt").read_text().splitlines()
    assert k_scores == w_scores
    assert w_speed.startswith("speed: fp32 + contiguous (auto: ")
    assert k_speed == "speed: fp32 + contiguous (as recorded in the resumed run)"
    for name in ("last", "best"):
        a, _ = load_weights_file(whole / "weights" / f"{name}.safetensors")
        b, _ = load_weights_file(killed / "weights" / f"{name}.safetensors")
        assert set(a) == set(b)
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k}"
    sa = load_state(whole / "weights" / "last_state.pt")
    sb = load_state(killed / "weights" / "last_state.pt")
    for key in ("epoch", "global_step", "best_epoch", "best"):
        assert sa[key] == sb[key], key
    for key in ("model", "rng"):
        for k, v in sa[key].items():
            assert torch.equal(v, sb[key][k]) if torch.is_tensor(v) else v == sb[key][k], k
    for ra, rb in zip(sa["rank_rng"], sb["rank_rng"]):  # both processes' streams
        for k, v in ra.items():
            assert torch.equal(v, rb[k]) if torch.is_tensor(v) else v == rb[k], k
    opt_a, opt_b = sa["optimizer"]["state"], sb["optimizer"]["state"]
    for i in opt_a:
        for k, v in opt_a[i].items():
            assert torch.equal(v, opt_b[i][k]), (i, k)


def test_only_rank_0_writes_files(cli_runs: dict) -> None:
    log: Path = cli_runs["tmp"] / "log"  # type: ignore[operator]
    records = {p.stem: p.read_text().splitlines() for p in log.glob("writes-*.txt")}
    assert set(records) == {"writes-0-0", "writes-0-1", "writes-1-0", "writes-1-1"}
    assert "EXIT" not in records["writes-0-1"]  # rank 1 really died (SIGKILL) in attempt 0
    assert records["writes-1-0"][-1] == records["writes-1-1"][-1] == "EXIT"
    for name in ("writes-0-1", "writes-1-1"):
        assert [w for w in records[name] if w != "EXIT"] == [], f"rank 1 wrote {records[name]}"
    assert any("last_state.pt" in w for w in records["writes-0-0"])  # checkpoints before the kill
    for what in ("config.yaml", "last_state.pt", "results.csv", "summary.txt"):
        assert any(what in w for w in records["writes-1-0"]), what


# ------------------------------------------------------------ one process: the pieces


def test_shards_and_weights_give_the_global_mean() -> None:
    g = torch.Generator().manual_seed(0)
    for n in range(1, 12):
        idx = torch.randperm(100, generator=g)[:n]
        losses = torch.rand(100, generator=g, dtype=torch.float64)
        for world in range(1, 5):
            parts = [shard_batch(idx, r, world) for r in range(world)]
            weights = [shard_weight(n, r, world) for r in range(world)]
            real = [p for p, w in zip(parts, weights) if w > 0]
            assert sorted(torch.cat(real).tolist()) == sorted(idx.tolist())  # a partition
            assert all(len(p) >= 1 for p in parts)  # every process takes a step
            ddp_mean = sum(w * losses[p].mean() for p, w in zip(parts, weights)) / world
            assert float(ddp_mean) == pytest.approx(float(losses[idx].mean()), rel=1e-12)
    assert shard_weight(8, 0, 1) == 1.0 and torch.equal(shard_batch(idx, 0, 1), idx)


def test_rank_seeds() -> None:
    assert rank_seed(7, 0) == 7  # one process keeps the run's seed
    seeds = {rank_seed(s, r) for s in range(4) for r in range(8)}
    assert len(seeds) == 32 and all(0 <= s < 2**63 for s in seeds)


def test_one_process_context_is_a_no_op() -> None:
    with DistContext.from_env() as ctx:
        assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)
        t = torch.tensor([1.5, 2.0], dtype=torch.float64)
        assert ctx.all_reduce_sum(t) is t and t.tolist() == [1.5, 2.0]
        assert ctx.gather({"a": 1}) == [{"a": 1}] and ctx.broadcast(3) == 3
        assert ctx.any(True) and not ctx.any(False)
        model = nn.Linear(2, 2)
        assert ctx.wrap(model) is model
    assert not torch.distributed.is_initialized()


def test_a_restarted_job_finds_its_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "classify"

    def claim(run_id: str | None, restart: int) -> Path:
        if run_id is None:
            monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
        else:
            monkeypatch.setenv("TORCHELASTIC_RUN_ID", run_id)
        monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", str(restart))
        ctx = DistContext.from_env()

        def new() -> Path:
            i = 1
            while (root / ("train" if i == 1 else f"train{i}")).exists():
                i += 1
            return root / ("train" if i == 1 else f"train{i}")

        return claim_run_dir(root, "train", new, ctx)

    assert claim("job-a", 0) == root / "train"
    assert (root / "train" / ".launch").read_text().startswith("job-a@")
    assert claim("job-a", 1) == root / "train"  # the restart continues its run: no train2
    assert claim("job-b", 0) == root / "train2"  # another job gets a new folder
    assert claim("job-b", 2) == root / "train2"
    assert claim("job-c", 1) == root / "train3"  # a restart that finds nothing of its own
    assert claim(None, 0) == root / "train4"  # outside torchrun: as before, no marker
    assert not (root / "train4" / ".launch").exists()


def test_devices_is_validated(capsys: pytest.CaptureFixture[str]) -> None:
    from cnnkit.cli import main

    with pytest.raises(CnnkitError, match=r"devices must be >= 1, got 0; e.g. devices=2"):
        TrainConfig(devices=0).validate()
    assert main(["train", "devices=0"]) == 2
    assert "devices must be >= 1" in capsys.readouterr().err


class NoisyData(Dataset):
    """``(x, y)`` whose x carries fresh draws from torch, numpy and ``random`` and the worker id."""

    def __init__(self, n: int = 24) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, generator=g)
        self.y = torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        info = get_worker_info()
        draws = [torch.rand(()).item(), float(np.random.rand()), random.random()]
        wid = -1.0 if info is None else float(info.id)
        extra = torch.tensor([*draws, wid], dtype=torch.float64)
        return torch.cat([self.x[i].double(), extra]).float(), self.y[i]


def _noisy_run(workers: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 2))
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()) if m.training else None)
    fit(
        model,
        NoisyData(),
        None,
        epochs=2,
        batch=4,
        optimizer="sgd",
        lr=0.1,
        workers=workers,
        seed=3,
        deterministic=True,
        verbose=0,
    )
    return {k: v.clone() for k, v in model.state_dict().items()}, torch.cat(seen)


@pytest.mark.parametrize("workers", [0, 2])
def test_seeded_runs_are_bitwise_equal_and_workers_draw_apart(workers: int) -> None:
    w1, x1 = _noisy_run(workers)
    w2, x2 = _noisy_run(workers)
    assert torch.equal(x1, x2)  # the same items, the same draws, in the same order
    for k in w1:
        assert torch.equal(w1[k], w2[k]), k
    assert x1.shape == (48, 7)  # 2 epochs of 24
    wid = x1[:, 6]
    if workers == 0:
        assert (wid == -1).all()
    else:
        assert set(wid.tolist()) == {0.0, 1.0}
        for col in (3, 4, 5):  # torch, numpy, random: no draw of worker 0 is one of worker 1's
            a, b = set(x1[wid == 0, col].tolist()), set(x1[wid == 1, col].tolist())
            assert len(a) == len(b) == 24 and not a & b, col
    for col in (3, 4, 5):  # and no item repeats another's draw (across epochs, too)
        assert len(set(x1[:, col].tolist())) == 48, col


def test_dataloader_worker_streams_differ_by_rank() -> None:
    from cnnkit.train.loop import _LoaderBatches

    draws = []
    for rank in (0, 1):
        lb = _LoaderBatches(
            NoisyData(), 8, shuffle=True, seed=3, workers=2, rank=rank, world_size=2
        )
        x = torch.cat([b for b, _ in lb.epoch(0)])
        assert x.shape == (12, 7)  # half of each global batch of 8
        draws.append({v for col in (3, 4, 5) for v in x[:, col].tolist()})
        again = torch.cat([b for b, _ in lb.epoch(0)])
        assert torch.equal(x, again)  # fixed by (seed, epoch, rank)
    assert len(draws[0]) == len(draws[1]) == 36 and not draws[0] & draws[1]
