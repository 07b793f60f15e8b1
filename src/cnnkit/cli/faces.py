"""``cnnkit faces train | calibrate | enroll | remove | rename | list | verify | identify``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

from cnnkit.cli.args import check_keys, task_mode
from cnnkit.errors import CnnkitError

HELP = """\
usage: cnnkit faces train data=DIR [loss=triplet|binary mining=semi_hard alpha=0.5 persons=16 ...]
       cnnkit faces calibrate run=RUN data=DIR [method=eer|far|accuracy target_far=0.01 db=FILE]
       cnnkit faces enroll run=RUN db=FILE name=PERSON source=IMG_OR_DIR
       cnnkit faces verify run=RUN db=FILE name=PERSON source=IMG_OR_DIR
       cnnkit faces identify run=RUN db=FILE source=IMG_OR_DIR [out=FILE.csv k=5]
       cnnkit faces remove run=RUN db=FILE name=PERSON
       cnnkit faces rename run=RUN db=FILE name=PERSON to=NEW
       cnnkit faces list run=RUN db=FILE

An embedding network f(x) (an L2-normalised vector) trained with the triplet loss
(or as a Siamese binary classifier of pairs: loss=binary) on P x K batches (P persons,
K images each) of DIR/<person>/*.jpg; identities are split
train / dev / test (never one person's images across splits). The threshold on the
distance d(f(x1), f(x2)) is calibrated on dev pairs (eer, a target false-accept rate,
or best accuracy). enroll stores a person's encodings in a SQLite database (one image
is enough: one-shot); identify answers the nearest person, or nobody above the
threshold; a database built with other weights is refused.

exit status: 0 done (verify: every image accepted), 1 verify rejected an image,
2 a mistake (a bad setting, an unknown person, an image that cannot be decoded).

train settings: {settings}
"""

MODES = ("train", "calibrate", "enroll", "verify", "identify", "remove", "rename", "list")


def _need(opts: dict, mode: str, *keys: str) -> None:
    for k in keys:
        if k not in opts or opts[k] is True:
            example = {
                "run": "run=runs/faces/NAME",
                "db": "db=faces.db",
                "name": "name=PERSON",
                "source": "source=IMG_OR_DIR",
                "data": "data=DIR",
                "to": "to=NEW_NAME",
            }[k]
            raise CnnkitError(f"`cnnkit faces {mode}` needs {example}.")


def faces(argv: Sequence[str]) -> int:
    """``cnnkit faces MODE key=value ...``."""
    from cnnkit.faces.train import FacesConfig

    keys = [f.name for f in fields(FacesConfig) if f.name != "extra"]
    parsed = task_mode(argv, "faces", MODES, HELP.format(settings=", ".join(keys)))
    if parsed is None:  # help was printed
        return 0
    mode, opts = parsed
    if mode == "train":
        from cnnkit.faces.train import train

        check_keys(opts, keys, "faces train")
        train(**opts)
        return 0
    from cnnkit.faces import recognize as rec

    if mode == "calibrate":
        check_keys(
            opts, ["run", "data", "method", "target_far", "pairs", "seed", "db"], "faces calibrate"
        )
        _need(opts, mode, "run", "data")
        cal = rec.calibrate_run(
            str(opts["run"]),
            str(opts["data"]),
            method=str(opts.get("method", "eer")),
            target_far=opts.get("target_far", 0.01),
            pairs=opts.get("pairs", 2000),
            seed=opts.get("seed", 0),
            db=opts.get("db"),
        )
        print(cal.line())
        where = f" and {opts['db']}" if opts.get("db") else ""
        print(f"calibration saved in {opts['run']}/calibration.json{where} (ROC in roc.png)")
        return 0
    allowed = {
        "enroll": ["run", "db", "name", "source"],
        "verify": ["run", "db", "name", "source"],
        "identify": ["run", "db", "source", "out", "k"],
        "remove": ["run", "db", "name"],
        "rename": ["run", "db", "name", "to"],
        "list": ["run", "db"],
    }[mode]
    check_keys(opts, allowed, f"faces {mode}")
    required = [k for k in allowed if k not in ("out", "k")]
    _need(opts, mode, *required)
    run, db = str(opts["run"]), str(opts["db"])
    if mode == "enroll":
        n, encoded = rec.enroll(run, db, str(opts["name"]), str(opts["source"]))
        print(f"{opts['name']}: {n} encoding(s) stored ({encoded} image(s) encoded now)")
        print(f"database saved in {db}")
        return 0
    if mode == "verify":
        verdicts = rec.verify(run, db, str(opts["name"]), str(opts["source"]))
        for v in verdicts:
            word = "accepted" if v.accepted else "rejected"
            print(
                f"{v.file}: {word} as {opts['name']} (distance {v.distance:.4f}, "
                f"threshold {v.threshold:.4f})"
            )
        return 0 if all(v.accepted for v in verdicts) else 1
    if mode == "identify":
        out = opts.get("out")
        rows = rec.identify(run, db, str(opts["source"]), out=out, k=opts.get("k", 5))
        for f, m in rows:
            who = m.name if m.name is not None else "not recognised"
            top = ", ".join(f"{n} {d:.3f}" for n, d in m.top)
            print(f"{f}: {who} (distance {m.distance:.4f}; nearest: {top})")
        if out:
            print(f"identities saved in {out}")
        return 0
    from cnnkit.faces.train import load_encoder

    enc = load_encoder(run)
    with rec.open_db(enc, db, create=False) as fdb:
        if mode == "remove":
            fdb.remove(str(opts["name"]))
            print(f"{opts['name']} removed from {db} ({len(fdb)} person(s) left)")
        elif mode == "rename":
            fdb.rename(str(opts["name"]), str(opts["to"]))
            print(f"{opts['name']} renamed {opts['to']} in {db}")
        else:
            t = fdb.threshold
            print(f"{db}: {len(fdb)} person(s); threshold {t if t is None else f'{t:.4f}'}")
            for name, n in fdb.list():
                print(f"  {name}: {n} encoding(s)")
    return 0
