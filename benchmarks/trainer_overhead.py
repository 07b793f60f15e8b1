"""Does cnnkit's trainer cost anything over a hand-written PyTorch loop?

Same process, same model, same synthetic data, same optimizer (Adam, constant lr):

- **hand loop**: the leanest loop one can write: pre-normalized float tensors indexed
  per batch, ``zero_grad / forward / cross_entropy / backward / step``.
- **cnnkit fit**: ``cnnkit.train.fit`` on a uint8 :class:`cnnkit.data.ImageSet` (so it
  also pays for converting and normalizing every batch), augmentation off, no dev
  set, the whole ``fit()`` call timed from outside (set-up included). With
  ``--checkpoints`` it also writes its per-epoch checkpoints into a temporary folder.

The two are timed alternately, one epoch each, ``--repeats`` times after a warm-up;
the table shows medians and the throughput ratio cnnkit / hand (1.00 = no overhead).

    python benchmarks/trainer_overhead.py            # LeNet-5 b128 and ResNet-18 (CIFAR) b64
    python benchmarks/trainer_overhead.py --quick    # fewer repeats
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from cnnkit.data import ImageSet, Preprocess
from cnnkit.models import create
from cnnkit.train import fit

FIT_SETTINGS = dict(
    epochs=1,
    optimizer="adam",
    lr=1e-3,
    schedule="constant",
    warmup_epochs=0,
    label_smoothing=0.0,
    degrees=0,
    translate=0,
    scale=0,
    fliplr=0,
    verbose=0,
)


def hand_loop(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, opt: torch.optim.Optimizer
) -> float:
    """One epoch of the leanest hand-written loop; returns seconds."""
    model.train()
    t0 = time.perf_counter()
    perm = torch.randperm(len(x))
    for i in range(0, len(x), batch):
        idx = perm[i : i + batch]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def synthetic(
    size: tuple[int, int, int], n: int, labels: torch.Tensor | None = None
) -> tuple[ImageSet, torch.Tensor, torch.Tensor]:
    """``n`` random uint8 images as an ImageSet, their normalized floats and labels."""
    n_H, n_W, n_C = size
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, n_C, n_H, n_W), dtype=torch.uint8, generator=g)
    if labels is None:
        labels = torch.randint(0, 10, (n,), generator=g)
    pre = Preprocess((n_H, n_W), n_C, (0.5,) * n_C, (0.25,) * n_C)
    return ImageSet(images, labels, pre, "train"), pre.normalize(images), labels


def bench(
    name: str,
    model_name: str,
    size: tuple[int, int, int],
    batch: int,
    n: int,
    repeats: int,
    checkpoints: bool,
    **kw: object,
) -> dict[str, float]:
    """Median img/s of both loops and their ratio."""
    n_C = size[2]
    data, x, labels = synthetic(size, n)  # the hand loop gets its floats for free
    torch.manual_seed(0)
    m_hand = create(model_name, num_classes=10, in_channels=n_C, **kw)
    m_fit = copy.deepcopy(m_hand)
    opt = torch.optim.Adam(m_hand.parameters(), lr=1e-3)
    hand_s, fit_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = tmp if checkpoints else None
        hand_loop(m_hand, x, labels, batch, opt)  # warm-up
        fit(m_fit, data, batch=batch, run_dir=run_dir, **FIT_SETTINGS)
        for r in range(repeats):
            hand_s.append(hand_loop(m_hand, x, labels, batch, opt))
            t0 = time.perf_counter()
            fit(m_fit, data, batch=batch, run_dir=run_dir, seed=r, exist_ok=True, **FIT_SETTINGS)
            fit_s.append(time.perf_counter() - t0)
    hand = n / statistics.median(hand_s)
    ours = n / statistics.median(fit_s)
    return {"name": name, "hand": hand, "fit": ours, "ratio": ours / hand, "repeats": repeats}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="3 repeats")
    ap.add_argument(
        "--checkpoints", action="store_true", help="let fit write its per-epoch checkpoints"
    )
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    reps = 3 if args.quick else args.repeats
    rows = [
        bench(
            "LeNet-5, 32x32x1, batch 128",
            "lenet5",
            (32, 32, 1),
            128,
            128 * 100,
            reps,
            args.checkpoints,
        ),
        bench(
            "ResNet-18 (CIFAR), 32x32x3, batch 64",
            "resnet18",
            (32, 32, 3),
            64,
            64 * 6,
            reps,
            args.checkpoints,
            small_input=True,
        ),
    ]
    print(
        f"torch {torch.__version__}, {args.threads} threads, "
        f"checkpoints={'on' if args.checkpoints else 'off'}, "
        f"median of {reps} alternating epochs"
    )
    print(f"{'model':<40}{'hand img/s':>12}{'cnnkit img/s':>14}{'ratio':>8}")
    for r in rows:
        print(f"{r['name']:<40}{r['hand']:>12,.0f}{r['fit']:>14,.0f}{r['ratio']:>8.3f}")


if __name__ == "__main__":
    main()
