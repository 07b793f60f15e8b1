"""One-shot face recognition database in SQLite.

A person is enrolled from one or more face embeddings (the L2-normalised vectors
``f(x)`` of an embedding network, computed once, elsewhere); recognising a new face
compares its embedding with the stored ones and never needs the enrolled images
again. Everything lives in one real SQLite file, so several processes can read it
while one enrolls, and a process killed in the middle of an enrollment leaves the
database as it was before that enrollment (every change is one transaction).

This module needs only :mod:`sqlite3` and NumPy (no torch): embeddings come in as
arrays.

Schema (``schema_version`` 1)::

    meta(key TEXT PRIMARY KEY, value TEXT)
        schema_version  "1"
        model_id        identity of the weights that produced the embeddings
                        (e.g. :func:`fingerprint` of the state dict)
        dim             embedding length, e.g. "128"
        metric          "euclidean" or "cosine"
        threshold       decision threshold on the distance, NULL until calibrated
        calibration     JSON text describing how the threshold was chosen ("{}")
    persons(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, created TEXT)
    embeddings(id INTEGER PRIMARY KEY,
               person_id INTEGER NOT NULL REFERENCES persons(id) ON DELETE CASCADE,
               vector BLOB NOT NULL,   -- dim little-endian float32 values (dim * 4 bytes)
               source TEXT,            -- where the vector came from, e.g. an image path
               created TEXT)           -- UTC time, ISO 8601
    index embeddings_person ON embeddings(person_id)

The file is opened in WAL mode (readers never block the writer nor each other),
with foreign keys on and a 30 s busy timeout. A database built with other weights
(another ``model_id``), another embedding length or another metric is refused.

Distances (computed in float64):

- ``"euclidean"``: ``||a - b||_2`` between the vectors as stored (the course's
  ``d(img1, img2) = ||f(img1) - f(img2)||``; the embeddings are expected to be
  L2-normalised already, so it lies in [0, 2]);
- ``"cosine"``: ``1 - a.b / (||a|| ||b||)``, in [0, 2].

A person's distance to a query is the minimum over that person's embeddings.

Caching: :meth:`FaceDB.identify` keeps the stored vectors as one float64 matrix in
memory and reloads it only when the file changed. Changes committed by other
connections are detected with ``PRAGMA data_version`` (read inside the same read
transaction as the vectors, so the cache always matches one committed state);
changes made through this object drop the cache directly (``data_version`` does not
count a connection's own commits).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError, did_you_mean, unknown_name

__all__ = ["METRICS", "SCHEMA_VERSION", "FaceDB", "Match", "fingerprint"]

SCHEMA_VERSION = 1
METRICS = ("euclidean", "cosine")
BUSY_TIMEOUT_S = 30.0
_SQLITE_HEADER = b"SQLite format 3\x00"
# distance matrices are computed for this many (query, embedding) pairs at a time
_CHUNK_ELEMENTS = 1 << 22

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE persons (
    id INTEGER PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    created TEXT
);
CREATE TABLE embeddings (
    id INTEGER PRIMARY KEY,
    person_id INTEGER NOT NULL REFERENCES persons(id) ON DELETE CASCADE,
    vector BLOB NOT NULL,
    source TEXT,
    created TEXT
);
CREATE INDEX embeddings_person ON embeddings(person_id);
"""


def fingerprint(arrays: Iterable[tuple[str, np.ndarray]]) -> str:
    """Identity of a set of weights, to use as a database's ``model_id``.

    The SHA-256 over, for each ``(name, array)`` in the given order: the UTF-8 name,
    the dtype, the shape and the raw little-endian C-order bytes (each part
    length-prefixed so that different splits cannot collide).

    Args:
        arrays: ``(name, array)`` pairs, e.g.
            ``((k, v.cpu().numpy()) for k, v in model.state_dict().items())``.

    Returns:
        The hex digest (64 characters).
    """
    h = hashlib.sha256()

    def part(data: bytes) -> None:
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)

    for name, array in arrays:
        a = np.ascontiguousarray(array)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        part(str(name).encode("utf-8"))
        part(a.dtype.str.encode("ascii"))
        part(repr(tuple(a.shape)).encode("ascii"))
        part(a.tobytes())
    return h.hexdigest()


@dataclass
class Match:
    """The answer of :meth:`FaceDB.identify` for one query.

    Attributes:
        name: The recognised person, or None when even the nearest person is
            farther than the threshold ("not recognised").
        distance: The distance to the nearest person (whether recognised or not).
        top: Up to ``k`` ``(name, distance)`` pairs, nearest first.
    """

    name: str | None
    distance: float
    top: list[tuple[str, float]] = field(default_factory=list)

    @property
    def recognised(self) -> bool:
        """Whether the nearest person is within the threshold."""
        return self.name is not None


@dataclass
class _Snapshot:
    """The stored vectors of one committed state, ready for distances."""

    version: int
    names: list[str]  # persons, sorted by name
    starts: np.ndarray  # first row of each person in ``vectors`` (persons are contiguous)
    vectors: np.ndarray  # (m, dim) float64; unit rows for the cosine metric
    sq_norms: np.ndarray  # (m,) squared norms (euclidean)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _short(model_id: str, other: str) -> str:
    """A short form of ``model_id`` that still differs from ``other``."""
    common = 0
    for a, b in zip(model_id, other):
        if a != b:
            break
        common += 1
    n = max(8, common + 4)
    return model_id if len(model_id) <= n + 3 else model_id[:n] + "..."


def _check_name(name: Any, what: str = "person name") -> str:
    if not isinstance(name, str) or not name.strip():
        raise CnnkitError(f"the {what} {name!r} is empty or not text; give a non-empty name.")
    if name != name.strip():
        raise CnnkitError(f"the {what} {name!r} has leading or trailing spaces; remove them.")
    return name


def _check_threshold(value: Any) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = math.nan
    if not math.isfinite(t) or t < 0:
        raise CnnkitError(
            f"threshold={value!r} is not a distance; give a finite number >= 0 (e.g. 0.7)."
        )
    return t


class FaceDB:
    """A one-shot recognition database stored in one SQLite file.

    Example:
        >>> with FaceDB("faces.db", model_id=fingerprint(weights), dim=128) as db:
        ...     db.enroll("alice", encode(["alice1.jpg"]))
        ...     db.set_threshold(0.7, {"method": "dev pairs"})
        ...     db.identify(encode(["who.jpg"]))[0].name

    One object belongs to one thread; other threads and processes open their own.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        model_id: str,
        dim: int,
        metric: str = "euclidean",
        create: bool = True,
    ) -> None:
        """Open the database file, creating it when it does not exist.

        Args:
            path: The SQLite file, e.g. ``runs/faces/x/faces.db``.
            model_id: Identity of the weights that compute the embeddings (e.g.
                :func:`fingerprint` of the state dict); an existing database built
                with another one is refused.
            dim: Embedding length; must match an existing database.
            metric: ``"euclidean"`` or ``"cosine"``; must match an existing database.
            create: Create the file when missing (False: refuse instead).

        Raises:
            CnnkitError: The file is missing (with ``create=False``), is not a cnnkit
                face database, or was built with other weights, another ``dim`` or
                another metric.
        """
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._cache: _Snapshot | None = None
        if not isinstance(model_id, str) or not model_id:
            raise CnnkitError(
                f"model_id={model_id!r} is not an identity; give a non-empty string "
                "such as fingerprint(weights)."
            )
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise CnnkitError(f"dim={dim!r} is not an embedding length; give an integer >= 1.")
        if metric not in METRICS:
            raise unknown_name("metric", str(metric), METRICS)
        self.model_id = model_id
        self.dim = int(dim)
        self.metric = metric

        shown = str(path)
        if self.path.is_dir():
            raise CnnkitError(f"{shown} is a folder, not a database file; give a file name.")
        exists = self.path.exists()
        if not exists and not create:
            raise CnnkitError(
                f"no database at {shown}; enroll someone first with cnnkit faces enroll "
                f"db={shown} ..."
            )
        if not exists and not self.path.parent.is_dir():
            raise CnnkitError(
                f"cannot create {shown}: the folder {self.path.parent} does not exist; "
                "create it first or give another db=FILE."
            )
        if exists and self.path.stat().st_size > 0:
            with open(self.path, "rb") as f:
                header = f.read(len(_SQLITE_HEADER))
            if header != _SQLITE_HEADER:
                raise CnnkitError(
                    f"{shown} is not a SQLite database; give a face database file "
                    "or a new file name as db=FILE."
                )
        try:
            self._conn = sqlite3.connect(
                str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None
            )
            self._open(shown, create)
        except sqlite3.DatabaseError as e:
            self.close()
            raise CnnkitError(
                f"{shown} cannot be read as a SQLite database ({e}); give a face database "
                "file or a new file name as db=FILE."
            ) from None
        except BaseException:
            self.close()
            raise

    def _open(self, shown: str, create: bool) -> None:
        conn = self._conn
        assert conn is not None
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            if tables:
                raise CnnkitError(
                    f"{shown} is a SQLite database but not a cnnkit face database; give "
                    "a face database file or a new file name as db=FILE."
                )
            if not create:
                raise CnnkitError(
                    f"no database at {shown} (the file is empty); enroll someone first "
                    f"with cnnkit faces enroll db={shown} ..."
                )
            conn.execute("PRAGMA journal_mode = WAL")
            with self._write():
                # another process may have created it since we looked
                has_meta = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
                ).fetchone()
                if not has_meta:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.executemany(
                        "INSERT INTO meta(key, value) VALUES (?, ?)",
                        [
                            ("schema_version", str(SCHEMA_VERSION)),
                            ("model_id", self.model_id),
                            ("dim", str(self.dim)),
                            ("metric", self.metric),
                            ("threshold", None),
                            ("calibration", "{}"),
                            ("created", _now()),
                        ],
                    )
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        missing = {"schema_version", "model_id", "dim", "metric"} - set(meta)
        if missing or not {"persons", "embeddings"} <= self._tables():
            raise CnnkitError(
                f"{shown} is a SQLite database but not a cnnkit face database; give a face "
                "database file or a new file name as db=FILE."
            )
        try:
            version = int(meta["schema_version"])
        except ValueError:
            version = -1
        if version != SCHEMA_VERSION:
            raise CnnkitError(
                f"{shown} has face database schema {meta['schema_version']}, this cnnkit "
                f"reads schema {SCHEMA_VERSION}; use the cnnkit version that wrote it, or "
                "a new db=FILE."
            )
        stored = meta["model_id"]
        if stored != self.model_id:
            raise CnnkitError(
                f"{shown} was built with other weights (model {_short(stored, self.model_id)}), "
                f"not this run's ({_short(self.model_id, stored)}); use the run that built "
                "it, or a new db=FILE."
            )
        if meta["dim"] != str(self.dim):
            raise CnnkitError(
                f"{shown} stores {meta['dim']}-dimensional embeddings, not {self.dim} as this "
                "model produces; use the model that built it, or a new db=FILE."
            )
        if meta["metric"] != self.metric:
            raise CnnkitError(
                f"{shown} compares embeddings with the {meta['metric']} distance, not "
                f"{self.metric}; open it with metric={meta['metric']!r}, or use a new db=FILE."
            )
        # a cnnkit database is WAL already; this only repairs one that was changed
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")

    # ---- plumbing ------------------------------------------------------------------------

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise CnnkitError(f"the face database {self.path} is closed; open it again.")
        return self._conn

    def _tables(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: ``BEGIN IMMEDIATE ... COMMIT``, rolled back on any error."""
        conn = self._db
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise CnnkitError(
                f"cannot write to {self.path} ({e}); wait for the other writer to finish, "
                "or check the file's permissions and free disk space."
            ) from None
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            self._cache = None

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query inside sees the same committed state."""
        conn = self._db
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def _person_id(self, conn: sqlite3.Connection, name: str) -> int:
        row = conn.execute("SELECT id FROM persons WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise self._no_person(conn, name)
        return int(row[0])

    def unknown_person(self, name: str) -> CnnkitError:
        """The one-sentence error for a name that is not enrolled (with a did-you-mean).

        Args:
            name: The name asked for.

        Returns:
            The error to raise.
        """
        with self._read() as conn:
            return self._no_person(conn, name)

    def _no_person(self, conn: sqlite3.Connection, name: str) -> CnnkitError:
        names = [r[0] for r in conn.execute("SELECT name FROM persons ORDER BY name")]
        hits = did_you_mean(str(name), names)
        msg = f"no person {name!r} in {self.path.name}"
        if hits:
            msg += "; did you mean " + " or ".join(repr(h) for h in hits) + "?"
        elif names:
            msg += f"; check the name among the {len(names)} enrolled, or enroll them first."
        else:
            msg += "; the database is empty, enroll them first."
        return CnnkitError(msg)

    def _vectors(self, embeddings: Any, what: str) -> np.ndarray:
        """Validate ``embeddings`` as ``(n, dim)`` finite numbers; float64 copy."""
        try:
            a = np.asarray(embeddings)
        except Exception:  # ragged lists and the like
            a = np.asarray([], dtype=object)
        if a.dtype == object or not (
            np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
        ):
            raise CnnkitError(
                f"the {what} are not an array of numbers; give a float array of shape "
                f"(n, {self.dim})."
            )
        shape = tuple(a.shape)
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2 or a.shape[1] != self.dim or a.shape[0] == 0:
            raise CnnkitError(
                f"the {what} have shape {shape}; give an array of shape (n, {self.dim}) with "
                f"n >= 1 (this database stores {self.dim}-dimensional embeddings)."
            )
        a = a.astype(np.float64)
        with np.errstate(over="ignore"):  # float32 is what is stored: 1e39 becomes inf
            finite = np.isfinite(a.astype(np.float32)).all(axis=1)
        if not finite.all():
            raise CnnkitError(
                f"row {int(np.flatnonzero(~finite)[0])} of the {what} is not finite (NaN or "
                "infinity, or too large for float32); check the encoder's input and weights."
            )
        if self.metric == "cosine":
            zero = np.flatnonzero(~(np.abs(a.astype(np.float32)) > 0).any(axis=1))
            if zero.size:
                raise CnnkitError(
                    f"row {int(zero[0])} of the {what} is all zeros, which has no cosine "
                    "distance; check the encoder's output."
                )
        return a

    def _snapshot(self) -> tuple[_Snapshot, float | None]:
        """The stored vectors (cached per committed state) and the stored threshold."""
        with self._read() as conn:
            # the first SELECT starts the read transaction; data_version then belongs to it
            row = conn.execute("SELECT value FROM meta WHERE key = 'threshold'").fetchone()
            version = int(conn.execute("PRAGMA data_version").fetchone()[0])
            threshold = None if row is None or row[0] is None else float(row[0])
            if self._cache is not None and self._cache.version == version:
                return self._cache, threshold
            rows = conn.execute(
                "SELECT p.name, e.vector FROM embeddings e JOIN persons p "
                "ON p.id = e.person_id ORDER BY p.name, e.id"
            ).fetchall()
        names: list[str] = []
        starts: list[int] = []
        for i, (name, blob) in enumerate(rows):
            if len(blob) != 4 * self.dim:
                raise CnnkitError(
                    f"{self.path} holds an embedding of {len(blob)} bytes for {name!r}, not "
                    f"{4 * self.dim}; the file was changed by another program, rebuild it."
                )
            if not names or names[-1] != name:
                names.append(name)
                starts.append(i)
        vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(-1, self.dim)
        vectors = vectors.astype(np.float64)
        sq_norms = np.einsum("ij,ij->i", vectors, vectors)
        if self.metric == "cosine":
            vectors = vectors / np.sqrt(sq_norms)[:, None]
        snap = _Snapshot(version, names, np.asarray(starts, dtype=np.intp), vectors, sq_norms)
        self._cache = snap
        return snap, threshold

    def _person_distances(self, snap: _Snapshot, queries: np.ndarray) -> np.ndarray:
        """``(n, persons)`` distances: the minimum over each person's embeddings."""
        out = np.empty((len(queries), len(snap.names)))
        step = max(1, _CHUNK_ELEMENTS // max(1, len(snap.vectors)))
        for s in range(0, len(queries), step):
            q = queries[s : s + step]
            if self.metric == "cosine":
                qn = q / np.linalg.norm(q, axis=1, keepdims=True)
                d = np.clip(1.0 - qn @ snap.vectors.T, 0.0, 2.0)
            else:
                d2 = np.einsum("ij,ij->i", q, q)[:, None] + snap.sq_norms[None, :]
                d2 -= 2.0 * (q @ snap.vectors.T)
                d = np.sqrt(np.maximum(d2, 0.0))
            out[s : s + step] = np.minimum.reduceat(d, snap.starts, axis=1)
        return out

    def _resolve_threshold(self, threshold: float | None, stored: float | None) -> float:
        if threshold is not None:
            return _check_threshold(threshold)
        if stored is None:
            raise CnnkitError(
                f"the database {self.path.name} has no threshold; calibrate first (cnnkit "
                "faces calibrate ...) or pass threshold=."
            )
        return stored

    # ---- persons -------------------------------------------------------------------------

    def enroll(
        self,
        name: str,
        embeddings: np.ndarray,
        sources: Sequence[str | os.PathLike[str]] | None = None,
    ) -> int:
        """Add embeddings of one person (created when new) in one transaction.

        Only this person's rows are written; nobody else's embeddings are read or
        rewritten. A process killed during the call leaves the database as before.

        Args:
            name: The person's name.
            embeddings: ``(n, dim)`` (or ``(dim,)``) finite vectors, stored as float32.
            sources: Optional origin of each vector (e.g. the image paths), ``n`` of them.

        Returns:
            The person's number of embeddings after the call.

        Raises:
            CnnkitError: An empty name, a wrong shape, a non-finite value or a
                ``sources`` list of another length.
        """
        name = _check_name(name)
        vectors = self._vectors(embeddings, f"embeddings for {name!r}")
        if sources is None:
            src: list[str | None] = [None] * len(vectors)
        else:
            if isinstance(sources, (str, bytes)) or len(sources) != len(vectors):
                n = 1 if isinstance(sources, (str, bytes)) else len(sources)
                raise CnnkitError(
                    f"{n} sources for {len(vectors)} embeddings of {name!r}; give one source "
                    "per embedding, or none."
                )
            src = [os.fspath(s) for s in sources]
        blobs = [row.tobytes() for row in vectors.astype("<f4")]
        now = _now()
        with self._write() as conn:
            conn.execute("INSERT OR IGNORE INTO persons(name, created) VALUES (?, ?)", (name, now))
            pid = self._person_id(conn, name)
            conn.executemany(
                "INSERT INTO embeddings(person_id, vector, source, created) VALUES (?, ?, ?, ?)",
                [(pid, b, s, now) for b, s in zip(blobs, src)],
            )
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM embeddings WHERE person_id = ?", (pid,)
            ).fetchone()
        return int(count)

    def remove(self, name: str) -> int:
        """Remove a person and all of their embeddings.

        Args:
            name: An enrolled person.

        Returns:
            The number of embeddings removed.

        Raises:
            CnnkitError: No such person (with a did-you-mean suggestion).
        """
        with self._write() as conn:
            pid = self._person_id(conn, name)
            removed = conn.execute("DELETE FROM embeddings WHERE person_id = ?", (pid,)).rowcount
            conn.execute("DELETE FROM persons WHERE id = ?", (pid,))
        return int(removed)

    def rename(self, old: str, new: str) -> None:
        """Give an enrolled person another name (their embeddings stay as they are).

        Args:
            old: An enrolled person.
            new: The new name, not taken by anyone else.

        Raises:
            CnnkitError: No person ``old``, or ``new`` is empty or taken.
        """
        new = _check_name(new, "new name")
        with self._write() as conn:
            pid = self._person_id(conn, old)
            if new == old:
                return
            if conn.execute("SELECT 1 FROM persons WHERE name = ?", (new,)).fetchone():
                raise CnnkitError(
                    f"the name {new!r} is already taken in {self.path.name}; remove or rename "
                    "that person first, or choose another name."
                )
            conn.execute("UPDATE persons SET name = ? WHERE id = ?", (new, pid))

    def list(self) -> list[tuple[str, int]]:
        """The enrolled persons and their number of embeddings.

        Returns:
            ``(name, count)`` pairs sorted by name.
        """
        rows = self._db.execute(
            "SELECT p.name, COUNT(e.id) FROM persons p LEFT JOIN embeddings e "
            "ON e.person_id = p.id GROUP BY p.id ORDER BY p.name"
        ).fetchall()
        return [(str(n), int(c)) for n, c in rows]

    def __len__(self) -> int:
        """The number of enrolled persons."""
        return int(self._db.execute("SELECT COUNT(*) FROM persons").fetchone()[0])

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is an enrolled person."""
        if not isinstance(name, str):
            return False
        row = self._db.execute("SELECT 1 FROM persons WHERE name = ?", (name,)).fetchone()
        return row is not None

    # ---- threshold -----------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    @property
    def threshold(self) -> float | None:
        """The stored decision threshold on the distance (None until calibrated)."""
        value = self._meta("threshold")
        return None if value is None else float(value)

    @property
    def calibration(self) -> dict[str, Any]:
        """How the stored threshold was chosen (``{}`` until calibrated)."""
        value = self._meta("calibration")
        return {} if not value else dict(json.loads(value))

    def set_threshold(self, value: float, calibration: Mapping[str, Any] | None = None) -> None:
        """Store the decision threshold and a description of its calibration.

        Args:
            value: The distance at or below which a face is recognised (finite, >= 0).
            calibration: JSON-serialisable facts about how ``value`` was chosen (e.g.
                the pairs used, the accuracy reached).

        Raises:
            CnnkitError: ``value`` is not a finite number >= 0, or ``calibration`` is
                not JSON-serialisable.
        """
        t = _check_threshold(value)
        try:
            text = json.dumps(dict(calibration or {}), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise CnnkitError(
                f"the calibration cannot be stored as JSON ({e}); give a dict of plain "
                "numbers, strings, lists and dicts."
            ) from None
        with self._write() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                [("threshold", repr(t)), ("calibration", text)],
            )

    # ---- recognition ---------------------------------------------------------------------

    def identify(
        self, queries: np.ndarray, k: int = 5, threshold: float | None = None
    ) -> list[Match]:
        """Find the nearest enrolled person of each query embedding.

        Args:
            queries: ``(n, dim)`` (or ``(dim,)``) embeddings of the faces to recognise.
            k: How many nearest persons to list in :attr:`Match.top`.
            threshold: Recognise iff the nearest distance is at most this; None: the
                stored threshold (see :meth:`set_threshold`).

        Returns:
            One :class:`Match` per query.

        Raises:
            CnnkitError: A wrong shape or non-finite value, ``k < 1``, an empty
                database, or no threshold given nor stored.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise CnnkitError(f"k={k!r} is not a number of persons; give an integer >= 1.")
        q = self._vectors(queries, "query embeddings")
        snap, stored = self._snapshot()
        if not snap.names:
            raise CnnkitError(
                f"the database {self.path.name} has no one enrolled; enroll someone first "
                "with cnnkit faces enroll ..."
            )
        t = self._resolve_threshold(threshold, stored)
        d = self._person_distances(snap, q)
        order = np.argsort(d, axis=1, kind="stable")[:, : int(k)]
        matches = []
        for row, idx in zip(d, order):
            top = [(snap.names[j], float(row[j])) for j in idx]
            best_name, best = top[0]
            matches.append(Match(best_name if best <= t else None, best, top))
        return matches

    def verify(
        self, name: str, queries: np.ndarray, threshold: float | None = None
    ) -> list[tuple[bool, float]]:
        """Check whether each query is the given person (face verification, 1:1).

        Args:
            name: An enrolled person.
            queries: ``(n, dim)`` (or ``(dim,)``) embeddings.
            threshold: Accept iff the distance is at most this; None: the stored one.

        Returns:
            ``(accepted, distance)`` per query; the distance is the minimum over the
            person's embeddings.

        Raises:
            CnnkitError: No such person (with a did-you-mean suggestion), a wrong
                shape or non-finite value, or no threshold given nor stored.
        """
        q = self._vectors(queries, "query embeddings")
        snap, stored = self._snapshot()
        if name not in snap.names:
            raise self._no_person(self._db, name)
        t = self._resolve_threshold(threshold, stored)
        j = snap.names.index(name)
        end = snap.starts[j + 1] if j + 1 < len(snap.names) else len(snap.vectors)
        one = _Snapshot(
            snap.version,
            [name],
            np.zeros(1, dtype=np.intp),
            snap.vectors[snap.starts[j] : end],
            snap.sq_norms[snap.starts[j] : end],
        )
        d = self._person_distances(one, q)[:, 0]
        return [(bool(x <= t), float(x)) for x in d]

    # ---- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (further calls on this object raise)."""
        conn, self._conn = self._conn, None
        self._cache = None
        if conn is not None:
            conn.close()

    def __enter__(self) -> FaceDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else f"{len(self)} persons"
        return (
            f"FaceDB({str(self.path)!r}, model_id={self.model_id[:8]!r}..., dim={self.dim}, "
            f"metric={self.metric!r}, {state})"
        )
