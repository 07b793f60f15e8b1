"""One-shot face recognition on synthetic faces: triplet mining strategies compared.

Generates a seeded set of synthetic faces (:func:`cnnkit.faces.data.synth_faces`),
then trains ``cnnkit faces train`` once per mining strategy (``random``,
``batch_hard``, ``semi_hard``) and once as the Siamese binary classifier of pairs
(``binary``: ``loss=binary``), with the same settings and budget (same epochs, batch
and seed), each in a real subprocess with 2 threads. Each run calibrates its
threshold on dev identities and is measured on test identities it never saw:
one-shot identification (one enrolled image per person) top-1 and top-1 at the
threshold, the share of unknown persons' images rejected, and the false-accept rate
on test pairs; then the same for databases of 10, 30 and 100 random test persons
(each enrolled from one random image, 100 draws each), since a larger database needs
a stricter threshold to keep strangers out. The issue's bars: top-1 at the threshold
>= 90% with >= 10 enrolled persons; unknown persons rejected at the target
false-accept rate.

    .venv/bin/python benchmarks/faces_oneshot.py
    .venv/bin/python benchmarks/faces_oneshot.py --miners semi_hard --epochs 30 --no-record
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import _record

from cnnkit.faces.data import synth_faces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--identities", type=int, default=1000)
    ap.add_argument("--per-identity", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--miners", default="random,batch_hard,semi_hard,binary")
    ap.add_argument("--calibrate", default="far")
    ap.add_argument("--target-far", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], help="more train settings, key=value")
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    machine = _record.machine()
    print(machine)
    rows, sizes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        data = synth_faces(
            Path(tmp) / "faces",
            identities=args.identities,
            per_identity=args.per_identity,
            size=args.size,
            seed=args.seed,
        )
        for mining in args.miners.split(","):
            cmd = [sys.executable, "-m", "cnnkit.cli", "faces", "train", f"data={data}"]
            cmd += [f"size={args.size}", f"epochs={args.epochs}", f"seed={args.seed}"]
            how = ["loss=binary"] if mining == "binary" else [f"mining={mining}"]
            cmd += [*how, f"calibrate={args.calibrate}", "verbose=2"]
            cmd += [f"target_far={args.target_far}", f"project={tmp}/runs", f"name={mining}"]
            cmd += args.set
            env = {**os.environ, "OMP_NUM_THREADS": "2"}
            t = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, text=True, env=env)
            seconds = time.perf_counter() - t
            if p.returncode:
                raise SystemExit(p.stderr)
            res = json.loads((Path(tmp) / "runs" / "faces" / mining / "faces.json").read_text())
            cal, te = res["calibration"], res["test"]
            rows.append(
                [
                    mining,
                    f"{seconds / 60:.1f} min",
                    f"{cal['eer']:.2%}",
                    f"{cal['threshold']:.3f}",
                    f"{te['top1']:.2%}",
                    f"{te['top1_at_threshold']:.2%}",
                    f"{te['unknown_rejected']:.2%}",
                    f"{te['pair_far']:.2%}",
                    f"{te['enrolled']} / {te['queries']}",
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
            for g in res["by_size"]:
                sizes.append(
                    [
                        mining,
                        str(g["enrolled"]),
                        f"{g['threshold']:.3f}",
                        f"{g['top1']:.2%}",
                        f"{g['top1_at_threshold']:.2%}",
                        f"{g['unknown_rejected']:.2%}",
                        "yes"
                        if g["top1_at_threshold"] >= 0.9
                        and g["enrolled"] >= 10
                        and g["unknown_rejected"] >= 1 - args.target_far
                        else "no",
                    ]
                )
                print(" | ".join(sizes[-1]), flush=True)
    head = [
        "mining",
        "wall time",
        "dev EER",
        "threshold",
        "test top-1",
        "top-1 at threshold",
        "unknown rejected",
        "test pair FAR",
        "enrolled / queries",
    ]
    size_head = [
        "mining",
        "enrolled",
        "threshold",
        "top-1",
        "top-1 at threshold",
        "strangers rejected",
        "bar met",
    ]
    extra = f" ({' '.join(args.set)})" if args.set else ""
    body = (
        _record.md_table(head, rows)
        + (
            f"\n\n{args.identities} synthetic identities x {args.per_identity} images, "
            f"{args.size}x{args.size}; identities split 60/20/20 (train / dev for the "
            f"threshold / test); {args.epochs} epochs of P x K = 16 x 4 batches{extra} "
            "(defaults alpha=0.5, flip=true; `binary` is loss=binary, the Siamese head on "
            "|f_i - f_j|, measured by the distance between encodings); "
            f"threshold by calibrate={args.calibrate} (target FAR {args.target_far:g}) on "
            "dev pairs. Test: half the test persons enrolled from one image each, the other "
            "half unknown.\n\nBy database size: n random test persons enrolled from one "
            "random image each, every image of the others a stranger; 100 draws per size; "
            "the threshold is the identification threshold for n persons. Bar: top-1 at the "
            f"threshold >= 90% with strangers rejected >= {1 - args.target_far:.0%}.\n\n"
        )
        + _record.md_table(size_head, sizes)
    )
    print(body)
    if not args.no_record:
        _record.record(
            "One-shot faces: triplet mining and the Siamese loss compared (cnnkit faces train)",
            body,
            machine_line=machine,
        )


if __name__ == "__main__":
    main()
