"""Training speed of cnnkit's defaults against plain PyTorch and Keras 3 on JAX.

One command measures and prints every figure of the performance issue, then appends
the tables to ``benchmarks/RESULTS.md`` (``--no-record`` to skip that):

1. **Trainer throughput** of LeNet-5 (batch 128, 32x32x1) and a CIFAR-size ResNet-18
   (batch 128, 32x32x3) on synthetic data: ``cnnkit.train.fit`` with its defaults (the
   whole call timed from outside, set-up included) against hand-written PyTorch loops:
   plain fp32 eager with the default Adam, and hand-tuned variants (fused Adam;
   channels_last; bf16 autocast + channels_last; ``--with-compile`` adds
   ``torch.compile``). All variants run alternately in one process, one epoch each,
   ``--repeats`` times after a warm-up (each repeat starting one variant later); the
   table gives median, min and max img/s and ratios from that one run.
2. **Loss check**: a short run trained by ``fit`` forced to fp32 + contiguous and with
   its automatic choice; final train losses compared (LeNet-5: 3 epochs on brightness
   deciles; ResNet-18: 1 epoch (16 steps) of 2,048 images of the templates task of
   section 4, where the loss is still far from 0), and fp32 against itself with the
   examples in another order (the run-to-run spread).
3. **GEMM ceilings and achieved GFLOP/s**: the best of square fp32 and bf16 matrix
   products (``torch.mm``, n = 1024, 2048, 4096) measured here, and ResNet-18 training
   FLOPs per image counted by ``torch.utils.flop_counter`` (forward + backward) times
   cnnkit's measured img/s.
4. **Time to accuracy**: LeNet-5 on the bundled digits with ``cnnkit train``'s defaults
   (test accuracy after every epoch; train seconds until 98% and 99%), and ResNet-18 on
   a synthetic-but-learnable 32x32x3 task (10 classes: a smooth colour template each,
   shifted by up to 4 px, with heavy pixel noise; 1,024 train and 512 test images) until
   90% and 95% test accuracy, with the defaults and forced to fp32.
5. **Peak memory**: every run of sections 1 and 4 again in a fresh process, its peak
   RSS (``VmHWM``) reported by itself.
6. **Keras 3 on JAX**, in its own venv (``benchmarks/.venv-keras``; ``make
   bench-keras-venv`` creates it): ``benchmarks/keras_jax.py`` on the same two models
   and batch; skipped with a note when that venv is missing.

    .venv/bin/python benchmarks/train_bench.py                 # everything, ~15 min
    .venv/bin/python benchmarks/train_bench.py --only throughput gemm
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from _record import machine, record
from torch import nn
from trainer_overhead import FIT_SETTINGS

from cnnkit.data import ImageSet, Preprocess
from cnnkit.models import create
from cnnkit.train import fit

HERE = Path(__file__).resolve().parent
KERAS_PYTHON = HERE / ".venv-keras" / "bin" / "python"
SECTIONS = ("throughput", "loss", "gemm", "tta", "rss", "keras")
#: fit settings of the throughput runs: cnnkit's defaults, but a constant lr and no
#: augmentation, so that the work per step equals the hand loops'
FAIR = dict(FIT_SETTINGS)
MODELS = {
    "lenet5": dict(title="LeNet-5, 32x32x1, batch 128", size=(32, 32, 1), kw={}),
    "resnet18": dict(
        title="ResNet-18 (CIFAR), 32x32x3, batch 128", size=(32, 32, 3), kw={"small_input": True}
    ),
}
# hand-written variants: (name, bf16 autocast, channels_last, fused Adam, compile)
HAND = {
    "hand fp32": (False, False, False, False),
    "hand fp32, fused Adam": (False, False, True, False),
    "hand fp32 + channels_last, fused Adam": (False, True, True, False),
    "hand bf16 + channels_last, fused Adam": (True, True, True, False),
}
COMPILED = {"hand compile + bf16 + channels_last, fused Adam": (True, True, True, True)}


#: Weight of the pattern all classes share in the templates task (the rest is the class's).
MIX = 0.7
#: Epochs of the ResNet-18 time-to-accuracy runs.
TTA_EPOCHS = 8


# --- data ------------------------------------------------------------------------------------


def synthetic(size: tuple[int, int, int], n: int) -> tuple[ImageSet, torch.Tensor, torch.Tensor]:
    """``n`` random uint8 images labelled by brightness decile: an ImageSet and its floats."""
    n_H, n_W, n_C = size
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, n_C, n_H, n_W), dtype=torch.uint8, generator=g)
    mean = images[:, :, : n_H // 2, : n_W // 2].float().mean((1, 2, 3))
    labels = torch.bucketize(mean, torch.quantile(mean, torch.linspace(0, 1, 11)[1:-1]))
    pre = Preprocess((n_H, n_W), n_C, (0.5,) * n_C, (0.25,) * n_C)
    return ImageSet(images, labels, pre, "train"), pre.normalize(images), labels


def templates_task(n: int, seed: int) -> ImageSet:
    """A learnable 32x32x3 task: 10 smooth colour templates, shifted, under heavy noise.

    Args:
        n: Number of images.
        seed: Seed of the labels, shifts and noise (the templates are fixed).

    Returns:
        An ImageSet of uint8 images and labels 0-9.
    """
    base = torch.rand(11, 3, 4, 4, generator=torch.Generator().manual_seed(1234))
    smooth = F.interpolate(base, size=(32, 32), mode="bicubic", align_corners=False)
    tmpl = MIX * smooth[10:] + (1 - MIX) * smooth[:10]  # a shared pattern + each class's own
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    shifts = torch.randint(-4, 5, (n, 2), generator=g)
    x = torch.stack(
        [torch.roll(tmpl[c], (int(s[0]), int(s[1])), dims=(1, 2)) for c, s in zip(y, shifts)]
    )
    x = x + 0.5 * torch.randn(x.shape, generator=g)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    pre = Preprocess((32, 32), 3, (0.5,) * 3, (0.3,) * 3)
    return ImageSet(images, y, pre, f"templates-{seed}")


# --- hand loops ------------------------------------------------------------------------------


class Hand:
    """A hand-written training loop with one fixed speed setting."""

    def __init__(self, model: nn.Module, setting: tuple[bool, bool, bool, bool]) -> None:
        self.bf16, self.cl, fused, compiled = setting
        self.model = model.to(memory_format=torch.channels_last) if self.cl else model
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, fused=fused or None)
        self.net = torch.compile(self.model) if compiled else self.model

    def epoch(self, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
        """One epoch over ``x``; returns its seconds."""
        self.model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            xb = x[idx]
            if self.cl:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                loss = F.cross_entropy(self.net(xb), y[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return time.perf_counter() - t0


def stats(n: int, seconds: list[float]) -> dict[str, float]:
    """Median, min and max img/s of epochs of ``n`` images."""
    rates = [n / s for s in seconds]
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


# --- 1. throughput -----------------------------------------------------------------------------


def throughput(key: str, steps: int, repeats: int, with_compile: bool) -> dict:
    """Img/s of every hand variant and of fit's defaults, measured alternately."""
    spec = MODELS[key]
    n = 128 * steps
    data, x, y = synthetic(spec["size"], n)
    torch.manual_seed(0)
    init = create(key, num_classes=10, in_channels=spec["size"][2], **spec["kw"])
    variants = {**HAND, **(COMPILED if with_compile else {})}
    runners: dict[str, Callable[[], float]] = {}
    for name, setting in variants.items():
        h = Hand(copy.deepcopy(init), setting)
        runners[name] = lambda h=h: h.epoch(x, y, 128)
    m_fit = copy.deepcopy(init)

    def run_fit() -> float:
        t0 = time.perf_counter()
        r = fit(m_fit, data, batch=128, **FAIR)
        run_fit.speed = r.speed  # type: ignore[attr-defined]
        return time.perf_counter() - t0

    runners["cnnkit defaults"] = run_fit
    warm = {name: run() for name, run in runners.items()}  # compile, calibration, caches
    times: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    for r in range(repeats):  # alternating, each repeat starting one variant later
        for name in order[r % len(order) :] + order[: r % len(order)]:
            times[name].append(runners[name]())
    rows = {name: stats(n, t) for name, t in times.items()}
    best = max(variants, key=lambda v: rows[v]["median"])
    sp = run_fit.speed  # type: ignore[attr-defined]
    choice = f"{sp['precision']} + {sp['memory_format']}" + (" + compile" if sp["compile"] else "")
    return {
        "key": key,
        "title": spec["title"],
        "n": n,
        "rows": rows,
        "best_hand": best,
        "choice": choice,
        "first_fit_s": warm["cnnkit defaults"],
        "vs_hand": rows["cnnkit defaults"]["median"] / rows["hand fp32"]["median"],
        "vs_best": rows["cnnkit defaults"]["median"] / rows[best]["median"],
    }


# --- 2. loss check ---------------------------------------------------------------------------


def loss_check(key: str, steps: int) -> dict:
    """Final train loss of a short run: fit forced to fp32 + contiguous vs its auto choice.

    LeNet-5 learns brightness deciles of random images; ResNet-18, which would memorize
    those to a loss near 0 (where a relative difference means nothing), learns the
    templates task.
    """
    spec = MODELS[key]
    if key == "resnet18":
        data = templates_task(128 * steps, 0)
        epochs = 1
    else:
        data, _, _ = synthetic(spec["size"], 128 * steps)
        epochs = 3
    torch.manual_seed(0)
    init = create(key, num_classes=10, in_channels=spec["size"][2], **spec["kw"])
    out = {}
    fp32 = dict(precision="fp32", memory_format="contiguous")
    for label, forced, seed in (("fp32", fp32, 0), ("auto", {}, 0), ("fp32 seed 1", fp32, 1)):
        kw = {**FAIR, "epochs": epochs, "seed": seed, **forced}
        r = fit(copy.deepcopy(init), data, batch=128, **kw)
        out[label] = r.history[-1]["train_loss"]
        if label == "auto":
            out["note"] = next(n for n in r.notes if n.startswith("speed: "))
    out["rel"] = abs(out["auto"] - out["fp32"]) / out["fp32"]
    out["rel_seed"] = abs(out["fp32 seed 1"] - out["fp32"]) / out["fp32"]
    return out


# --- 3. GEMM ceilings ------------------------------------------------------------------------


def gemm_ceiling(dtype: torch.dtype, repeats: int = 5) -> tuple[float, int]:
    """The best median GFLOP/s of square matrix products, and the size that gave it."""
    best = (0.0, 0)
    for n in (1024, 2048, 4096):
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        for _ in range(2):
            a @ b
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            ts.append(time.perf_counter() - t0)
        best = max(best, (2 * n**3 / statistics.median(ts) / 1e9, n))
    return best


def train_flops_per_image(key: str) -> float:
    """FLOPs of one training step (forward + backward) per image, counted by PyTorch."""
    from torch.utils.flop_counter import FlopCounterMode

    spec = MODELS[key]
    m = create(key, num_classes=10, in_channels=spec["size"][2], **spec["kw"])
    n_H, n_W, n_C = spec["size"]
    x, y = torch.randn(4, n_C, n_H, n_W), torch.randint(0, 10, (4,))
    with FlopCounterMode(display=False) as fc:
        F.cross_entropy(m(x), y).backward()
    return fc.get_total_flops() / 4


# --- 4. time to accuracy (child processes) ---------------------------------------------------


def tta_lenet_digits() -> dict:
    """LeNet-5 on digits with ``cnnkit train``'s defaults, test accuracy after every epoch."""
    from cnnkit.train.classify import prepare
    from cnnkit.train.config import TrainConfig

    cfg = TrainConfig(model="lenet5", data="digits", verbose=0)
    data, model, _ = prepare(cfg)
    t0 = time.perf_counter()
    r = fit(model, data.train, data.test, config=cfg)
    return {"history": r.history, "wall": time.perf_counter() - t0, "speed": r.speed}


def tta_resnet_templates(forced: dict) -> dict:
    """ResNet-18 (CIFAR) on the templates task, cnnkit's defaults (or ``forced``)."""
    train, test = templates_task(1024, 0), templates_task(512, 1)
    test.name = "test"
    torch.manual_seed(0)
    model = create("resnet18", num_classes=10, in_channels=3, small_input=True)
    t0 = time.perf_counter()
    r = fit(model, train, test, epochs=TTA_EPOCHS, patience=0, verbose=0, **forced)
    return {"history": r.history, "wall": time.perf_counter() - t0, "speed": r.speed}


def reached(history: list[dict], target: float) -> tuple[int | None, float | None]:
    """First epoch whose test accuracy reaches ``target``, and train seconds until then."""
    total = 0.0
    for row in history:
        total += row["seconds"]
        if row["dev_accuracy"] >= target:
            return row["epoch"], total
    return None, None


def rss_run(key: str, variant: str) -> dict:
    """A few steps of one throughput variant in this (fresh) process."""
    spec = MODELS[key]
    data, x, y = synthetic(spec["size"], 128 * 3)
    torch.manual_seed(0)
    m = create(key, num_classes=10, in_channels=spec["size"][2], **spec["kw"])
    if variant == "cnnkit defaults":
        fit(m, data, batch=128, **FAIR)
    else:
        Hand(m, {**HAND, **COMPILED}[variant]).epoch(x, y, 128)
    return {}


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB (Linux ``VmHWM``).

    Not ``getrusage``: on Linux a child's ``ru_maxrss`` starts from its parent's peak
    at ``fork`` and keeps it across ``exec``, so every child of a large parent would
    report the parent's figure.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(spec: str) -> None:
    """Run one measurement named by ``spec``; print its JSON as the last line."""
    kind, _, arg = spec.partition(":")
    if kind == "tta-lenet":
        out = tta_lenet_digits()
    elif kind == "tta-resnet":
        forced = dict(precision="fp32", memory_format="contiguous") if arg == "fp32" else {}
        out = tta_resnet_templates(forced)
    elif kind == "rss":
        key, _, variant = arg.partition(":")
        out = rss_run(key, variant)
    else:
        raise SystemExit(f"unknown child {spec!r}")
    out["peak_rss_mib"] = peak_rss_mib()
    print("JSON " + json.dumps(out))


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> tuple[dict, float]:
    """Run ``cmd``; its last ``JSON`` line and the peak RSS in MiB that it reported."""
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("JSON ")][-1]
    out = json.loads(line[5:])
    return out, float(out.get("peak_rss_mib", float("nan")))


def me(spec: str, threads: int) -> list[str]:
    """The command that runs ``child(spec)`` in a fresh process."""
    return [sys.executable, __file__, "--child", spec, "--threads", str(threads)]


# --- tables ----------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table (numbers right-aligned)."""
    out = ["| " + " | ".join(header) + " |"]
    out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--lenet-steps", type=int, default=100, help="steps per timed epoch")
    ap.add_argument("--resnet-steps", type=int, default=6, help="steps per timed epoch")
    ap.add_argument("--with-compile", action="store_true", help="add a torch.compile variant")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("CNNKIT_CACHE", tempfile.mkdtemp(prefix="cnnkit-bench-"))
    if args.child:
        child(args.child)
        return
    where = machine()
    print(where)
    head = f"torch {torch.__version__}, {args.threads} threads"
    parts = [head + "."]
    tp: dict[str, dict] = {}
    steps = {"lenet5": args.lenet_steps, "resnet18": args.resnet_steps}
    want = set(args.only)
    if "gemm" in want:  # first, on a machine not yet warmed by training
        ceilings = {dt: gemm_ceiling(dt) for dt in (torch.float32, torch.bfloat16)}
    if want & {"throughput", "gemm", "keras"}:
        for key in MODELS:
            tp[key] = throughput(key, steps[key], args.repeats, args.with_compile)
        rows = []
        for t in tp.values():
            for name, r in t["rows"].items():
                mark = " (best hand)" if name == t["best_hand"] else ""
                rows.append(
                    [
                        t["title"] if name == "hand fp32" else "",
                        name + mark + (f": {t['choice']}" if name == "cnnkit defaults" else ""),
                        f"{r['median']:,.0f}",
                        f"{r['min']:,.0f}",
                        f"{r['max']:,.0f}",
                        f"{r['median'] / t['rows']['hand fp32']['median']:.2f}",
                    ]
                )
        txt = table(["model", "loop", "img/s median", "min", "max", "x hand fp32"], rows)
        notes = [
            f"- {t['title']}: cnnkit defaults / hand fp32 = **{t['vs_hand']:.2f}x**, / best hand "
            f"({t['best_hand']}) = **{t['vs_best']:.2f}x**; epochs of {t['n']:,} images, "
            f"median of {args.repeats} alternating; cnnkit's first call (calibration "
            f"included) took {t['first_fit_s']:.1f} s"
            for t in tp.values()
        ]
        parts.append("### Trainer throughput\n\n" + txt + "\n\n" + "\n".join(notes))
        print(parts[-1])
    if "loss" in want:
        rows = []
        notes: list[str] = []
        for key, n_steps in (("lenet5", 40), ("resnet18", 16)):
            lc = loss_check(key, n_steps)
            notes.append(f"{MODELS[key]['title']}: {lc['note']}")
            rows.append(
                [
                    MODELS[key]["title"],
                    f"{lc['fp32']:.4f}",
                    f"{lc['auto']:.4f}",
                    f"{lc['rel']:.2%}",
                    f"{lc['fp32 seed 1']:.4f}",
                    f"{lc['rel_seed']:.2%}",
                ]
            )
        head = ["model", "loss fp32", "loss cnnkit defaults", "rel diff"]
        head += ["fp32, examples in another order", "rel diff fp32 vs fp32"]
        txt = table(head, rows) + "\n\n" + "\n".join(f"- {n}" for n in notes)
        parts.append(
            "### Final train loss, fp32 vs cnnkit's choice (LeNet-5: 3 epochs of 5,120 images, "
            "brightness deciles; ResNet-18: 1 epoch of 2,048 images of the templates task, "
            "so that the loss is still far from 0); the last two columns: fp32 against itself "
            "with the examples in another order, the run-to-run spread\n\n" + txt
        )
        print(parts[-1])
    if "gemm" in want:
        f32, n32 = ceilings[torch.float32]
        b16, nb16 = ceilings[torch.bfloat16]
        flops = train_flops_per_image("resnet18")
        ours = tp["resnet18"]["rows"]["cnnkit defaults"]["median"] * flops / 1e9
        hand = tp["resnet18"]["rows"]["hand fp32"]["median"] * flops / 1e9
        rows = [
            ["GEMM ceiling fp32", f"{f32:,.0f}", f"n={n32}", "", ""],
            ["GEMM ceiling bf16", f"{b16:,.0f}", f"n={nb16}", "", ""],
            [
                "ResNet-18 train, hand fp32",
                f"{hand:,.0f}",
                f"{flops / 1e9:.2f} GFLOP/img",
                f"{hand / f32:.0%}",
                f"{hand / b16:.0%}",
            ],
            [
                f"ResNet-18 train, cnnkit defaults ({tp['resnet18']['choice']})",
                f"{ours:,.0f}",
                f"{flops / 1e9:.2f} GFLOP/img",
                f"{ours / f32:.0%}",
                f"{ours / b16:.0%}",
            ],
        ]
        txt = table(["what", "GFLOP/s", "note", "of fp32 ceiling", "of bf16 ceiling"], rows)
        parts.append("### Achieved GFLOP/s against the machine's GEMM ceilings\n\n" + txt)
        print(parts[-1])
    rss: dict[str, float] = {}
    if "tta" in want:
        rows = []
        runs = [("LeNet-5, digits, defaults", "tta-lenet", (0.98, 0.99))]
        runs += [
            ("ResNet-18, templates, defaults", "tta-resnet:auto", (0.90, 0.95)),
            ("ResNet-18, templates, fp32 forced", "tta-resnet:fp32", (0.90, 0.95)),
        ]
        for title, spec, targets in runs:
            out, peak = run_child(me(spec, args.threads))
            rss[title] = peak
            h = out["history"]
            for target in targets:
                ep, secs = reached(h, target)
                rows.append(
                    [
                        title,
                        f"{out['speed']['precision']} + {out['speed']['memory_format']}",
                        f"{target:.0%}",
                        "not reached" if ep is None else f"{secs:.1f}",
                        "-" if ep is None else f"{ep} of {len(h)}",
                        f"{max(r['dev_accuracy'] for r in h):.1%}",
                        f"{out['wall']:.1f}",
                    ]
                )
        txt = table(
            ["run", "speed", "target", "train s to target", "epoch", "best test acc", "wall s"],
            rows,
        )
        parts.append("### Time to accuracy (train seconds, evaluation excluded)\n\n" + txt)
        print(parts[-1])
    if "rss" in want:
        for key in MODELS:
            for variant in (
                "hand fp32",
                "hand fp32 + channels_last, fused Adam",
                "hand bf16 + channels_last, fused Adam",
                "cnnkit defaults",
            ):
                _, peak = run_child(me(f"rss:{key}:{variant}", args.threads))
                rss[f"{MODELS[key]['title']}: {variant}"] = peak
    if rss:
        txt = table(["run", "peak RSS MiB"], [[k, f"{v:,.0f}"] for k, v in rss.items()])
        parts.append("### Peak memory (RSS of a fresh process; throughput runs: 3 steps)\n\n" + txt)
        print(parts[-1])
    if "keras" in want:
        parts.append(keras_section(tp, args))
        print(parts[-1])
    if not args.no_record:
        record(
            "Training speed: `benchmarks/train_bench.py`", "\n\n".join(parts), machine_line=where
        )


def keras_section(tp: dict[str, dict], args: argparse.Namespace) -> str:
    """Run keras_jax.py in its own venv and compare; a note when it cannot run."""
    if not KERAS_PYTHON.exists():
        return (
            "### Keras 3 on JAX\n\nskipped: no venv at benchmarks/.venv-keras "
            "(`make bench-keras-venv` creates it)."
        )
    cmd = [
        str(KERAS_PYTHON),
        str(HERE / "keras_jax.py"),
        "--threads",
        str(args.threads),
        "--repeats",
        str(args.repeats),
        "--lenet-steps",
        str(args.lenet_steps),
        "--resnet-steps",
        str(args.resnet_steps),
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        out, peak = run_child(cmd, env=env)
    except RuntimeError as e:
        return f"### Keras 3 on JAX\n\nskipped: it failed to run: {str(e).splitlines()[0]}"
    names = {"lenet5": "lenet5", "resnet18_cifar": "resnet18"}
    rows = []
    for r in out["rows"]:
        t = tp[names[r["model"]]]
        ours = t["rows"]["cnnkit defaults"]["median"]
        rows.append(
            [
                t["title"],
                f"{r['img_per_s_median']:,.0f}",
                f"{r['img_per_s_min']:,.0f}",
                f"{r['img_per_s_max']:,.0f}",
                f"{ours:,.0f}",
                f"{ours / r['img_per_s_median']:.2f}",
                f"{r.get('compile_s', float('nan')):.1f}",
            ]
        )
    txt = table(
        ["model", "Keras img/s median", "min", "max", "cnnkit img/s", "cnnkit / Keras", "JIT s"],
        rows,
    )
    return (
        f"### Keras {out['keras']} on JAX {out['jax']} (own venv, same batch and models)\n\n"
        f"{txt}\n\nPeak RSS of the Keras process: {peak:,.0f} MiB. cnnkit's figure is its "
        "median from the throughput table above (a separate process, measured just before)."
    )


if __name__ == "__main__":
    main()
