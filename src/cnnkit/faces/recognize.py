"""Enroll, verify and identify with a trained run and a recognition database.

Each function encodes only the images it is given, once: enrolling a person never
touches the encodings of the others, and a query is compared with the stored
encodings (``Encoder.count`` tells how many images were encoded).

A new database takes the run's calibrated threshold (``calibration.json``); ``cnnkit
faces calibrate run=... data=DIR db=FILE`` refits it on the user's own pairs.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cnnkit.errors import CnnkitError
from cnnkit.faces.db import FaceDB, Match
from cnnkit.faces.train import Encoder, calibrate_on, load_encoder
from cnnkit.faces.verify import Calibration, open_set_threshold, plot_roc

__all__ = [
    "Verdict",
    "calibrate_run",
    "enroll",
    "identification_threshold",
    "identify",
    "open_db",
    "verify",
]


def _files(source: str | os.PathLike) -> list[Path]:
    from cnnkit.train.classify import _image_files

    return _image_files(source)


def open_db(encoder: Encoder, db: str | os.PathLike, *, create: bool) -> FaceDB:
    """The database at ``db`` for this encoder's weights (refused if built with others).

    A new database gets the run's calibrated threshold.

    Args:
        encoder: The run's encoder.
        db: The SQLite file.
        create: Create it when missing (enroll); otherwise a missing file is an error.

    Returns:
        The open :class:`~cnnkit.faces.db.FaceDB`.
    """
    meta = encoder.meta
    fdb = FaceDB(
        db, model_id=meta["model_id"], dim=encoder.dim, metric=meta["metric"], create=create
    )
    cal = meta.get("calibration")
    if fdb.threshold is None and cal:
        fdb.set_threshold(float(cal["threshold"]), cal)
    return fdb


def enroll(
    run: str | os.PathLike,
    db: str | os.PathLike,
    name: str,
    source: str | os.PathLike,
    *,
    encoder: Encoder | None = None,
) -> tuple[int, int]:
    """Add a person from one or more images (one-shot: one image is enough).

    Args:
        run: The faces run folder.
        db: The database file (created when missing).
        name: The person.
        source: An image or a folder of images of that person.
        encoder: A loaded encoder to reuse (default: load the run's).

    Returns:
        ``(the person's stored encodings, images encoded now)``.
    """
    files = _files(source)
    enc = encoder or load_encoder(run)
    before = enc.count
    vectors = enc.files(files)  # only these images are encoded
    with open_db(enc, db, create=True) as fdb:
        n = fdb.enroll(name, vectors, [str(f) for f in files])
    return n, enc.count - before


@dataclass
class Verdict:
    """One verification answer.

    Attributes:
        file: The query image.
        accepted: True when the distance is within the threshold.
        distance: Distance to the claimed person's nearest stored encoding.
        threshold: The threshold used.
    """

    file: str
    accepted: bool
    distance: float
    threshold: float


def verify(
    run: str | os.PathLike,
    db: str | os.PathLike,
    name: str,
    source: str | os.PathLike,
    *,
    encoder: Encoder | None = None,
) -> list[Verdict]:
    """Is each image of ``source`` the enrolled person ``name``?

    Args:
        run: The faces run folder.
        db: The database file.
        name: The claimed identity.
        source: An image or a folder of images.
        encoder: A loaded encoder to reuse.

    Returns:
        One :class:`Verdict` per image.
    """
    files = _files(source)
    enc = encoder or load_encoder(run)
    with open_db(enc, db, create=False) as fdb:
        if name not in fdb:  # before any image is decoded or encoded
            raise fdb.unknown_person(name)
        t = _threshold(fdb)
        answers = fdb.verify(name, enc.files(files), threshold=t)
    return [Verdict(str(f), bool(a), float(d), t) for f, (a, d) in zip(files, answers)]


def identify(
    run: str | os.PathLike,
    db: str | os.PathLike,
    source: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    k: int = 5,
    encoder: Encoder | None = None,
) -> list[tuple[str, Match]]:
    """Who is in each image of ``source``: the nearest enrolled person, or nobody.

    Args:
        run: The faces run folder.
        db: The database file.
        source: An image or a folder of images.
        out: A CSV to write (``file,identity,distance``; identity empty when not
            recognised).
        k: Persons listed in each match's ``top``.
        encoder: A loaded encoder to reuse.

    Returns:
        ``(file, match)`` per image.
    """
    if out is not None:
        o = Path(out) if isinstance(out, (str, os.PathLike)) and str(out) else None
        if o is None or not o.parent.is_dir():
            raise CnnkitError(f"out={out!r} is not a file in an existing folder; e.g. out=who.csv.")
    files = _files(source)
    enc = encoder or load_encoder(run)
    with open_db(enc, db, create=False) as fdb:
        t = identification_threshold(fdb)
        matches = fdb.identify(enc.files(files), k=k, threshold=t)
    rows = [(str(f), m) for f, m in zip(files, matches)]
    if out is not None:
        try:
            with open(out, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(["file", "identity", "distance"])
                for f, m in rows:
                    w.writerow([f, m.name or "", f"{m.distance:.6f}"])
        except OSError as e:
            raise CnnkitError(f"cannot write out={str(out)!r} ({e.strerror}).") from None
    return rows


def calibrate_run(
    run: str | os.PathLike,
    data: str | os.PathLike,
    *,
    method: str = "eer",
    target_far: float = 0.01,
    pairs: int = 2000,
    seed: int = 0,
    db: str | os.PathLike | None = None,
) -> Calibration:
    """Refit a run's threshold on the user's own labelled identities.

    Writes ``calibration.json`` and ``roc.png`` in the run folder, and stores the
    threshold in ``db`` when given.

    Args:
        run: The faces run folder.
        data: One sub-folder of images per identity (persons not used in training).
        method: ``eer``, ``far`` or ``accuracy``.
        target_far: For ``far``.
        pairs: Pairs drawn.
        seed: Seed of the pairs.
        db: A database whose threshold is replaced.

    Returns:
        The :class:`~cnnkit.faces.verify.Calibration`.
    """
    from cnnkit.errors import unknown_name
    from cnnkit.faces.data import read_faces
    from cnnkit.faces.verify import METHODS

    if method not in METHODS:
        raise unknown_name("calibration method", str(method), METHODS)
    bad = isinstance(target_far, bool) or not isinstance(target_far, (int, float))
    if bad or not 0 <= target_far <= 1:
        raise CnnkitError(f"target_far must be a number between 0 and 1, got {target_far!r}.")
    for key, v in (("pairs", pairs), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (1 if key == "pairs" else 0):
            raise CnnkitError(f"{key} must be a whole number >= {int(key == 'pairs')}, got {v!r}.")
    if db is not None and (not isinstance(db, (str, os.PathLike)) or not str(db)):
        raise CnnkitError(f"db must name a database file, got {db!r}; e.g. db=faces.db.")
    enc = load_encoder(run)
    fdb = open_db(enc, db, create=False) if db is not None else None  # refused before work
    try:
        faces = read_faces(data, size=enc.size, channels=enc.channels)
        cal, d, same = calibrate_on(
            enc, faces, method=method, target_far=target_far, pairs=pairs, seed=seed
        )
        r = Path(run)
        (r / "calibration.json").write_text(json.dumps(cal.to_dict(), indent=2))
        plot_roc(d, same, cal).savefig(r / "roc.png", dpi=100)
        if fdb is not None:
            fdb.set_threshold(cal.threshold, cal.to_dict())
    finally:
        if fdb is not None:
            fdb.close()
    return cal


def identification_threshold(fdb: FaceDB) -> float:
    """The threshold ``identify`` uses for this database's size.

    With the run's calibration stored in the database it is
    :func:`~cnnkit.faces.verify.open_set_threshold` for as many comparisons as there are
    stored encodings (a stranger meets each of them; strangers are let in at most at the
    calibration's ``target_far``); a threshold set by hand is used as it is.

    Args:
        fdb: The open database.

    Returns:
        The distance threshold.
    """
    t = _threshold(fdb)
    cal = fdb.calibration
    if not cal.get("low_tail"):
        return t
    comparisons = sum(n for _, n in fdb.list())  # a query meets every stored encoding
    return open_set_threshold(Calibration.from_dict({**cal, "threshold": t}), comparisons)


def _threshold(fdb: FaceDB) -> float:
    t = fdb.threshold
    if t is None:
        raise CnnkitError(
            "the database has no threshold; calibrate first: cnnkit faces calibrate run=RUN "
            "data=DIR db=FILE."
        )
    return float(t)
