"""Do cnnkit's automatic speed settings beat a plain fp32 loop, and keep the loss?

Same process, same model, same synthetic data, Adam at a constant lr:

- **hand fp32**: the leanest fp32 eager loop (``trainer_overhead.hand_loop``).
- **cnnkit auto**: ``cnnkit.train.fit`` with its defaults (``precision=auto``,
  ``memory_format=auto``, ``compile=auto``), the whole call timed from outside. The
  first call calibrates (its extra time is shown); later ones read the cache (a fresh
  temporary ``CNNKIT_CACHE``).

Both are timed alternately, one epoch each, ``--repeats`` times; the table shows median
throughputs and their ratio. Then a short fixed run (``--epochs`` epochs, same seed) is
trained twice by ``fit``, forced to fp32 + contiguous and with the auto choice, and the
final train losses are compared. The labels follow a brightness quantile of the image,
so the loss falls.

    python benchmarks/speed.py            # LeNet-5 and ResNet-18 (CIFAR), batch 128
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time

import torch
from trainer_overhead import FIT_SETTINGS, hand_loop, synthetic

from cnnkit.models import create
from cnnkit.train import fit


def quantile_labels(size: tuple[int, int, int], n: int) -> torch.Tensor:
    """Labels 0-9: the decile of each image's mean brightness (a learnable target)."""
    _, x, _ = synthetic(size, n)
    mean = x[:, :, : size[0] // 2, : size[1] // 2].mean((1, 2, 3))
    edges = torch.quantile(mean, torch.linspace(0, 1, 11)[1:-1])
    return torch.bucketize(mean, edges)


def bench(
    name: str, model_name: str, size: tuple[int, int, int], batch: int, n: int, repeats: int, **kw
) -> dict[str, object]:
    """Throughputs of the hand fp32 loop and fit(auto), and the fixed run's final losses."""
    labels = quantile_labels(size, n)
    data, x, labels = synthetic(size, n, labels)
    torch.manual_seed(0)
    m_hand = create(model_name, num_classes=10, in_channels=size[2], **kw)
    m_fit = copy.deepcopy(m_hand)
    m_init = copy.deepcopy(m_hand)
    opt = torch.optim.Adam(m_hand.parameters(), lr=1e-3)
    hand_loop(m_hand, x, labels, batch, opt)  # warm-up
    t0 = time.perf_counter()
    first = fit(m_fit, data, batch=batch, **FIT_SETTINGS)  # calibrates
    first_s = time.perf_counter() - t0
    hand_s, fit_s = [], []
    for r in range(repeats):
        hand_s.append(hand_loop(m_hand, x, labels, batch, opt))
        t0 = time.perf_counter()
        fit(m_fit, data, batch=batch, seed=r, **FIT_SETTINGS)
        fit_s.append(time.perf_counter() - t0)
    hand = n / statistics.median(hand_s)
    ours = n / statistics.median(fit_s)
    losses = {}
    for label, forced in (
        ("fp32", dict(precision="fp32", memory_format="contiguous")),
        ("auto", {}),
    ):
        r = fit(copy.deepcopy(m_init), data, batch=batch, **{**FIT_SETTINGS, "epochs": 3, **forced})
        losses[label] = r.history[-1]["train_loss"]
    return {
        "name": name,
        "hand": hand,
        "fit": ours,
        "ratio": ours / hand,
        "choice": f"{first.speed['precision']} + {first.speed['memory_format']}"
        + (" + compile" if first.speed["compile"] else ""),
        "note": next(n for n in first.notes if n.startswith("speed:")),
        "calib_s": first_s - statistics.median(fit_s),
        "loss32": losses["fp32"],
        "loss_auto": losses["auto"],
        "rel": abs(losses["auto"] - losses["fp32"]) / losses["fp32"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["CNNKIT_CACHE"] = tempfile.mkdtemp(prefix="cnnkit-speed-")
    rows = [
        bench("LeNet-5, 32x32x1, batch 128", "lenet5", (32, 32, 1), 128, 128 * 40, args.repeats),
        bench(
            "ResNet-18 (CIFAR), 32x32x3, batch 128",
            "resnet18",
            (32, 32, 3),
            128,
            128 * 2,
            args.repeats,
            small_input=True,
        ),
    ]
    print(
        f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats} "
        "alternating epochs; final train loss after 3 epochs"
    )
    print(
        f"{'model':<40}{'auto choice':>24}{'hand fp32':>11}{'cnnkit auto':>13}{'ratio':>7}"
        f"{'calib s':>9}{'loss fp32':>11}{'loss auto':>11}{'rel diff':>10}"
    )
    for r in rows:
        print(
            f"{r['name']:<40}{r['choice']:>24}{r['hand']:>11,.0f}{r['fit']:>13,.0f}"
            f"{r['ratio']:>7.2f}{r['calib_s']:>9.1f}{r['loss32']:>11.4f}{r['loss_auto']:>11.4f}"
            f"{r['rel']:>10.2%}"
        )
    for r in rows:
        print(r["note"])


if __name__ == "__main__":
    main()
