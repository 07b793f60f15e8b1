"""Transfer learning on the bundled digits: pretrain on 0-4, transfer to 5-9 with 10 per class.

For each seed it trains a network (``--model``: LeNet-5 by default, or the CIFAR-style
ResNet-18, ``--model resnet18``) on the digits 0-4 (all their training images; cnnkit's
own pretrained checkpoint, since nothing can be downloaded here), then trains on the
digits 5-9 with only ``--per-class`` labelled training images per class (10 and 3), in several
ways: from scratch, and from the pretrained weights with the head alone (cached
features), the convolutions frozen, guided fine-tuning, and everything fine-tuned. Every
run of one seed is scored on the same dev and test images of 5-9. Prints the table of
test accuracy (mean over seeds and each seed) and appends it to
``benchmarks/RESULTS.md``. About 8 minutes on 2 idle cores for LeNet-5, 15 for ResNet-18
with 10 per class:

    .venv/bin/python benchmarks/transfer_digits.py
    .venv/bin/python benchmarks/transfer_digits.py --model resnet18 --per-class 10
    .venv/bin/python benchmarks/transfer_digits.py --seeds 0 1 2 --per-class 10 3 1 --no-record
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import _record

from cnnkit import transfer
from cnnkit.train.classify import train

SOURCE = [0, 1, 2, 3, 4]
TARGET = [5, 6, 7, 8, 9]
#: the networks compared: LeNet-5 (62k parameters) and the CIFAR-style ResNet-18 (11M)
MODELS: dict[str, dict] = {
    "lenet5": {"model": "lenet5"},
    "resnet18": {"model": "resnet18", "model_args": {"small_input": True}},
}
LABEL = {"lenet5": "LeNet-5", "resnet18": "ResNet-18 (CIFAR-style stem, `small_input`)"}
#: pretraining epochs on 0-4: epochs=auto for LeNet-5; 15 (1 minute) for ResNet-18
PRE_EPOCHS: dict[str, int | str] = {"lenet5": "auto", "resnet18": 15}
VARIANTS: list[tuple[str, dict]] = [
    ("from scratch", {}),
    ("pretrained, head only (cached features)", {"freeze": "backbone", "aug": "none"}),
    ("pretrained, first 2 stages frozen (freeze=2)", {"freeze": 2}),
    ("pretrained, fine_tune (head, then last stage)", {"fine_tune": True}),
    ("pretrained, everything fine-tuned (freeze=none)", {"freeze": "none"}),
]


def main() -> None:
    """Pretrain, transfer every way, print and record the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--per-class", nargs="+", type=int, default=[10, 3])
    ap.add_argument("--model", default="lenet5", choices=sorted(MODELS))
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    machine = _record.machine()
    acc: dict[tuple[int, str], list[float]] = {}
    dev: dict[tuple[int, str], list[float]] = {}
    source_acc: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            common = {"data": "digits", "seed": seed, "verbose": 0, **MODELS[args.model]}
            pre = train(
                classes=SOURCE, project=tmp, name=f"pre{seed}", epochs=PRE_EPOCHS[args.model],
                **common,
            )  # fmt: skip
            source_acc.append(pre.scores["test"]["accuracy"])
            for n in args.per_class:
                for i, (name, extra) in enumerate(VARIANTS):
                    settings = {
                        **common,
                        "classes": TARGET,
                        "per_class": n,
                        "project": tmp,
                        "name": f"s{seed}_n{n}_v{i}",
                        **extra,
                    }
                    if name == "from scratch":
                        r = train(**settings)
                    else:
                        r = transfer.train(pretrained=str(pre.run_dir), **settings)
                    acc.setdefault((n, name), []).append(r.scores["test"]["accuracy"])
                    dev.setdefault((n, name), []).append(r.scores["dev"]["accuracy"])
                    print(
                        f"seed {seed}  {n:>2}/class  {name:<50} "
                        f"test {100 * acc[(n, name)][-1]:.1f}%",
                        flush=True,
                    )
    head = [
        "images per class",
        "training on 5-9",
        "test accuracy (mean)",
        *(f"seed {s}" for s in args.seeds),
        "dev (mean)",
    ]
    rows = [
        [
            str(n),
            name,
            f"**{100 * statistics.mean(acc[(n, name)]):.1f}%**",
            *(f"{100 * a:.1f}%" for a in acc[(n, name)]),
            f"{100 * statistics.mean(dev[(n, name)]):.1f}%",
        ]
        for n in args.per_class
        for name, _ in VARIANTS
    ]
    table = _record.md_table(head, rows)
    body = (
        f"{table}\n\n{LABEL[args.model]} pretrained on the digits 0-4 (test accuracy on 0-4: "
        f"{', '.join(f'{100 * a:.1f}%' for a in source_acc)}), then trained on 5-9 with "
        "that many labelled training images per class; 179 test and 90 dev images of 5-9, "
        "the same for every run of a seed."
    )
    print()
    print(body)
    if not args.no_record:
        _record.record(
            f"Transfer learning: digits 0-4 -> 5-9, {LABEL[args.model]} "
            "(benchmarks/transfer_digits.py)",
            body,
            machine_line=machine,
        )


if __name__ == "__main__":
    main()
