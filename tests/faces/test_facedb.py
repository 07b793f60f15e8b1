"""The one-shot recognition database: real SQLite files, real processes, NumPy references.

Covers the round trip (enroll, list, rename, remove; vectors bit-exact in the BLOBs),
identify/verify against brute-force NumPy distances (euclidean and cosine), the
refusal of databases built with other weights, atomic enrollment under SIGKILL,
readers running while another process enrolls, that nobody else's embeddings are
touched (or re-encoded) when one person is enrolled or removed, and the one-sentence
errors.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cnnkit.errors import CnnkitError
from cnnkit.faces.db import FaceDB, Match, fingerprint

DIM = 16
MODEL = fingerprint([("w", np.arange(12, dtype=np.float32).reshape(3, 4))])
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def open_db(path: Path, **kw) -> FaceDB:
    return FaceDB(path, model_id=kw.pop("model_id", MODEL), dim=kw.pop("dim", DIM), **kw)


def blobs(path: Path, name: str) -> list[bytes]:
    """The stored vectors of ``name``, read with plain sqlite3 (not through FaceDB)."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT e.vector FROM embeddings e JOIN persons p ON p.id = e.person_id "
            "WHERE p.name = ? ORDER BY e.id",
            (name,),
        ).fetchall()
    conn.close()
    return [r[0] for r in rows]


def brute_force(
    persons: dict[str, np.ndarray], queries: np.ndarray, metric: str
) -> dict[str, np.ndarray]:
    """Per person, the distance of every query: min over that person's float32 vectors."""
    out = {}
    for name, vecs in persons.items():
        stored = vecs.astype(np.float32).astype(np.float64)
        d = np.empty((len(queries), len(stored)))
        for i, q in enumerate(queries):
            for j, e in enumerate(stored):
                if metric == "euclidean":
                    d[i, j] = np.sqrt(np.sum((q - e) ** 2))
                else:
                    d[i, j] = 1.0 - np.dot(q, e) / (np.linalg.norm(q) * np.linalg.norm(e))
        out[name] = d.min(axis=1)
    return out


def one_sentence(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg.count("; ") <= 2, msg
    return msg


# ---- round trip --------------------------------------------------------------------------


def test_enroll_list_rename_remove_round_trip(tmp_path):
    path = tmp_path / "faces.db"
    rng = np.random.default_rng(0)
    alice, bob = unit(rng, 3), unit(rng, 2)
    with open_db(path) as db:
        assert len(db) == 0 and db.list() == []
        assert db.enroll("alice", alice, sources=["a1.jpg", "a2.jpg", Path("a3.jpg")]) == 3
        assert db.enroll("bob", bob[0]) == 1  # one (dim,) vector
        assert db.enroll("bob", bob[1:]) == 2  # added to the existing person
        assert db.list() == [("alice", 3), ("bob", 2)]
        assert len(db) == 2 and "alice" in db and "carol" not in db and 3 not in db
        db.rename("alice", "carol")
        assert db.list() == [("bob", 2), ("carol", 3)]
        assert db.remove("bob") == 2
        assert db.list() == [("carol", 3)]
    # bit-exact little-endian float32 BLOBs, and the sources, read without FaceDB
    assert blobs(path, "carol") == [row.astype("<f4").tobytes() for row in alice]
    with sqlite3.connect(path) as conn:
        sources = [r[0] for r in conn.execute("SELECT source FROM embeddings ORDER BY id")]
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        orphans = conn.execute(
            "SELECT COUNT(*) FROM embeddings WHERE person_id NOT IN (SELECT id FROM persons)"
        ).fetchone()[0]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    assert sources == ["a1.jpg", "a2.jpg", "a3.jpg"]
    assert orphans == 0 and mode == "wal"
    assert meta["model_id"] == MODEL and meta["dim"] == str(DIM) and meta["metric"] == "euclidean"
    assert meta["schema_version"] == "1" and meta["threshold"] is None
    # reopened: everything is still there
    with open_db(path, create=False) as db:
        assert db.list() == [("carol", 3)] and db.threshold is None and db.calibration == {}


def test_threshold_and_calibration_are_stored(tmp_path):
    path = tmp_path / "faces.db"
    with open_db(path) as db:
        db.set_threshold(0.73, {"pairs": 400, "accuracy": 0.95, "method": "dev pairs"})
    with open_db(path) as db:
        assert db.threshold == 0.73
        assert db.calibration == {"pairs": 400, "accuracy": 0.95, "method": "dev pairs"}
        with pytest.raises(CnnkitError, match="threshold") as e:
            db.set_threshold(-1.0, {})
        one_sentence(e)
        with pytest.raises(CnnkitError, match="JSON"):
            db.set_threshold(0.5, {"bad": object()})
        assert db.threshold == 0.73  # a refused update changes nothing


def test_fingerprint_identifies_weights():
    a = [("conv.weight", np.ones((2, 3), np.float32)), ("conv.bias", np.zeros(2, np.float32))]
    assert fingerprint(a) == fingerprint([(n, v.copy()) for n, v in a])
    assert len(fingerprint(a)) == 64 and int(fingerprint(a), 16) >= 0
    changed = [a[0], ("conv.bias", np.array([0.0, 1e-7], np.float32))]
    assert fingerprint(changed) != fingerprint(a)
    assert fingerprint(a[::-1]) != fingerprint(a)  # order matters
    assert fingerprint([("w", np.ones(6, np.float32))]) != fingerprint(
        [("w", np.ones((2, 3), np.float32))]
    )  # same bytes, other shape
    assert fingerprint([("w", np.ones(2, np.float32))]) != fingerprint(
        [("w", np.ones(2, np.float64))]
    )


# ---- identify and verify -----------------------------------------------------------------


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_identify_matches_brute_force(tmp_path, metric):
    rng = np.random.default_rng(1)
    persons = {f"p{i}": unit(rng, n) for i, n in enumerate([1, 3, 2, 5, 1, 4])}
    queries = np.vstack(
        [
            unit(rng, 7),
            persons["p3"][2] + 0.05 * unit(rng, 1)[0],  # near one of p3's five embeddings
            persons["p5"][0],  # exactly a stored vector
        ]
    )
    with open_db(tmp_path / "faces.db", metric=metric) as db:
        for name, vecs in persons.items():
            db.enroll(name, vecs)
        matches = db.identify(queries, k=4, threshold=10.0)
    ref = brute_force(persons, queries, metric)
    names = sorted(ref)
    assert len(matches) == len(queries)
    for i, m in enumerate(matches):
        dist = np.array([ref[n][i] for n in names])
        order = np.argsort(dist, kind="stable")
        assert isinstance(m, Match)
        assert [n for n, _ in m.top] == [names[j] for j in order[:4]]
        np.testing.assert_allclose([d for _, d in m.top], dist[order[:4]], rtol=1e-9, atol=1e-7)
        assert m.name == names[order[0]] and m.recognised
        assert m.distance == m.top[0][1]
    assert matches[-2].name == "p3" and matches[-1].name == "p5"
    assert abs(matches[-1].distance) < 1e-6


def test_min_over_embeddings_threshold_and_override(tmp_path):
    rng = np.random.default_rng(2)
    a1, a2, b1 = unit(rng, 3)
    q = a2 + 0.1 * unit(rng, 1)[0]
    d_a = min(np.linalg.norm(q - a1.astype(np.float32)), np.linalg.norm(q - a2.astype(np.float32)))
    d_b = np.linalg.norm(q - b1.astype(np.float32))
    assert d_a < d_b
    with open_db(tmp_path / "faces.db") as db:
        db.enroll("alice", np.stack([a1, a2]))
        db.enroll("bob", b1)
        with pytest.raises(CnnkitError, match="no threshold; calibrate first") as e:
            db.identify(q)
        one_sentence(e)
        (m,) = db.identify(q, k=1, threshold=d_a + 1e-6)
        assert m.name == "alice" and m.top == [("alice", pytest.approx(d_a, abs=1e-9))]
        db.set_threshold(d_a - 1e-3, {"method": "test"})
        (m,) = db.identify(q)  # stored threshold: just below alice's distance
        assert m.name is None and not m.recognised
        assert m.distance == pytest.approx(d_a, abs=1e-9)
        assert [n for n, _ in m.top] == ["alice", "bob"]  # still listed when not recognised
        (m,) = db.identify(q, threshold=d_a + 1e-3)  # an explicit threshold wins
        assert m.name == "alice"
        (ok_a,) = db.verify("alice", q)
        (ok_b,) = db.verify("bob", q, threshold=d_b + 1e-3)
        assert ok_a[0] is False and ok_a[1] == pytest.approx(d_a, abs=1e-9)
        assert ok_b[0] is True and ok_b[1] == pytest.approx(d_b, abs=1e-9)
        with pytest.raises(CnnkitError, match="did you mean 'alice'"):
            db.verify("alise", q)


def test_identify_sees_changes_made_by_another_connection(tmp_path):
    rng = np.random.default_rng(3)
    v = unit(rng, 2)
    path = tmp_path / "faces.db"
    with open_db(path) as reader, open_db(path) as writer:
        writer.enroll("alice", v[0])
        assert reader.identify(v[1], threshold=2.0)[0].top == [
            ("alice", pytest.approx(np.linalg.norm(v[1] - v[0].astype(np.float32))))
        ]
        writer.enroll("bob", v[1])  # the reader's cached matrix must be reloaded
        assert reader.identify(v[1], threshold=0.01)[0].name == "bob"
        writer.remove("bob")
        writer.rename("alice", "carol")
        assert [n for n, _ in reader.identify(v[1], threshold=2.0)[0].top] == ["carol"]


def test_enrolling_and_removing_never_touches_or_reencodes_others(tmp_path):
    """Counted: encoder calls per image, and embedding rows written per operation."""
    rng = np.random.default_rng(4)
    W = rng.standard_normal((64, DIM))
    calls: Counter[str] = Counter()

    def encode(images: dict[str, np.ndarray]) -> np.ndarray:
        calls.update(list(images))  # one count per image key
        f = np.stack([img.reshape(-1) for img in images.values()]) @ W
        return f / np.linalg.norm(f, axis=1, keepdims=True)

    images = {
        person: {f"{person}/{i}.png": rng.random((8, 8)) for i in range(n)}
        for person, n in [("alice", 2), ("bob", 3), ("carol", 1), ("dave", 2)]
    }
    path = tmp_path / "faces.db"
    with open_db(path) as db:
        db.set_threshold(0.5, {})
        for person in ["alice", "bob", "carol"]:
            db.enroll(person, encode(images[person]), sources=list(images[person]))
    # an audit table filled by triggers counts every row written to `embeddings`
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE audit (op TEXT, person_id INTEGER);
            CREATE TRIGGER audit_i AFTER INSERT ON embeddings
                BEGIN INSERT INTO audit VALUES ('insert', NEW.person_id); END;
            CREATE TRIGGER audit_u AFTER UPDATE ON embeddings
                BEGIN INSERT INTO audit VALUES ('update', NEW.person_id); END;
            CREATE TRIGGER audit_d AFTER DELETE ON embeddings
                BEGIN INSERT INTO audit VALUES ('delete', OLD.person_id); END;
            """
        )
    conn.close()

    def audit_and_rows() -> tuple[list[tuple[str, str]], dict[str, list]]:
        with sqlite3.connect(path) as c:
            audit = c.execute(
                "SELECT a.op, p.name FROM audit a LEFT JOIN persons p ON p.id = a.person_id"
            ).fetchall()
            rows = c.execute(
                "SELECT p.name, e.id, e.vector FROM embeddings e JOIN persons p "
                "ON p.id = e.person_id ORDER BY e.id"
            ).fetchall()
            c.execute("DELETE FROM audit")
        c.close()
        by_person: dict[str, list] = {}
        for name, rowid, blob in rows:
            by_person.setdefault(name, []).append((rowid, blob))
        return audit, by_person

    _, before = audit_and_rows()
    queries = {f"query/{i}.png": img for i, img in enumerate(images["alice"].values())}
    with open_db(path) as db:
        for _ in range(3):
            assert [m.name for m in db.identify(encode(queries))] == ["alice", "alice"]
        audit, after = audit_and_rows()
        assert audit == [] and after == before  # queries write nothing

        db.enroll("dave", encode(images["dave"]))
        audit, after = audit_and_rows()
        assert audit == [("insert", "dave")] * 2
        assert {n: r for n, r in after.items() if n != "dave"} == before

        assert db.remove("bob") == 3
        audit, after_remove = audit_and_rows()
        assert audit == [("delete", None)] * 3  # bob's rows, and nobody else's
        assert after_remove == {n: r for n, r in after.items() if n != "bob"}

        db.rename("carol", "erin")
        audit, after_rename = audit_and_rows()
        assert audit == [] and after_rename["erin"] == after_remove["carol"]
        assert [m.name for m in db.identify(encode(queries))] == ["alice", "alice"]

    # every enrolled image was encoded exactly once; queries once per identify call
    for person in ["alice", "bob", "carol", "dave"]:
        assert all(calls[key] == 1 for key in images[person])
    assert all(calls[key] == 4 for key in queries)
    assert sum(calls.values()) == 8 + 4 * 2


# ---- refusing databases that are not ours ------------------------------------------------


def test_database_built_with_other_weights_dim_or_metric_is_refused(tmp_path):
    path = tmp_path / "faces.db"
    other = fingerprint([("w", np.ones((3, 4), np.float32))])
    with open_db(path) as db:
        db.enroll("alice", np.ones(DIM))
    with pytest.raises(CnnkitError, match="other weights") as e:
        open_db(path, model_id=other)
    msg = one_sentence(e)
    assert MODEL[:8] in msg and other[:8] in msg and "faces.db" in msg
    with pytest.raises(CnnkitError, match="stores 16-dimensional embeddings, not 32") as e:
        open_db(path, dim=32)
    one_sentence(e)
    with pytest.raises(CnnkitError, match="metric='euclidean'") as e:
        open_db(path, metric="cosine")
    one_sentence(e)
    with pytest.raises(CnnkitError, match="did you mean 'cosine'"):
        open_db(path, metric="cosin")
    # nothing was changed by the refused opens
    with open_db(path) as db:
        assert db.list() == [("alice", 1)]


def test_files_that_are_not_face_databases(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, but long enough to have a header\n")
    with pytest.raises(CnnkitError, match="not a SQLite database") as e:
        open_db(text)
    one_sentence(e)
    assert text.read_text().startswith("not a database")  # left alone

    garbled = tmp_path / "garbled.db"
    garbled.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 64)
    with pytest.raises(CnnkitError, match="cannot be read as a SQLite database") as e:
        open_db(garbled)
    one_sentence(e)

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(CnnkitError, match="not a cnnkit face database") as e:
        open_db(other)
    one_sentence(e)

    missing = tmp_path / "missing.db"
    with pytest.raises(CnnkitError, match=r"no database at .*; enroll someone first") as e:
        open_db(missing, create=False)
    one_sentence(e)
    assert not missing.exists()
    with pytest.raises(CnnkitError, match="does not exist"):
        open_db(tmp_path / "no" / "such" / "faces.db")
    with pytest.raises(CnnkitError, match="folder"):
        open_db(tmp_path)


# ---- user mistakes -----------------------------------------------------------------------


def test_unknown_names_get_did_you_mean(tmp_path):
    with open_db(tmp_path / "faces.db") as db:
        db.enroll("alice", np.ones(DIM))
        db.enroll("bob", -np.ones(DIM))
        with pytest.raises(
            CnnkitError, match=r"no person 'alise' in faces\.db; did you mean 'alice'\?"
        ):
            db.remove("alise")
        with pytest.raises(CnnkitError, match="did you mean 'bob'"):
            db.rename("bobb", "robert")
        with pytest.raises(CnnkitError, match="no person 'zed'") as e:
            db.verify("zed", np.ones(DIM), threshold=1.0)
        one_sentence(e)
        with pytest.raises(CnnkitError, match="'bob' is already taken") as e:
            db.rename("alice", "bob")
        one_sentence(e)
        assert db.list() == [("alice", 1), ("bob", 1)]


@pytest.mark.parametrize(
    ("embeddings", "pattern"),
    [
        (np.ones(DIM - 1), "shape"),
        (np.ones((2, DIM + 1)), "shape"),
        (np.ones((0, DIM)), "shape"),
        (np.ones((2, 2, DIM)), "shape"),
        (np.array([[*[1.0] * (DIM - 1), np.nan]]), "row 0 .*not finite"),
        (np.vstack([np.ones(DIM), np.full(DIM, np.inf)]), "row 1 .*not finite"),
        (np.full((1, DIM), 1e39), "not finite"),  # overflows float32
        (np.array([["a"] * DIM]), "not an array of numbers"),
    ],
)
def test_bad_embeddings_are_one_sentence(tmp_path, embeddings, pattern):
    with open_db(tmp_path / "faces.db") as db:
        with pytest.raises(CnnkitError, match=pattern) as e:
            db.enroll("alice", embeddings)
        one_sentence(e)
        with pytest.raises(CnnkitError, match=pattern):
            db.identify(embeddings, threshold=1.0)
        assert db.list() == []


def test_other_mistakes_are_one_sentence(tmp_path):
    with open_db(tmp_path / "faces.db") as db:
        with pytest.raises(CnnkitError, match="no one enrolled") as e:
            db.identify(np.ones(DIM), threshold=1.0)
        one_sentence(e)
        for bad in ["", "   ", None, " alice"]:
            with pytest.raises(CnnkitError, match="name") as e:
                db.enroll(bad, np.ones(DIM))
            one_sentence(e)
        with pytest.raises(CnnkitError, match="2 sources for 3 embeddings"):
            db.enroll("alice", np.ones((3, DIM)), sources=["a.jpg", "b.jpg"])
        assert db.list() == []
        db.enroll("alice", np.ones(DIM))
        with pytest.raises(CnnkitError, match="k=0"):
            db.identify(np.ones(DIM), k=0, threshold=1.0)
        with pytest.raises(CnnkitError, match=r"threshold=-0\.5 is not a distance"):
            db.identify(np.ones(DIM), threshold=-0.5)
    with (
        open_db(tmp_path / "cos.db", metric="cosine") as db,
        pytest.raises(CnnkitError, match="all zeros"),
    ):
        db.enroll("alice", np.zeros(DIM))
    with pytest.raises(CnnkitError, match="model_id"):
        FaceDB(tmp_path / "x.db", model_id="", dim=DIM)
    with pytest.raises(CnnkitError, match="dim=0"):
        FaceDB(tmp_path / "x.db", model_id=MODEL, dim=0)
    assert not (tmp_path / "x.db").exists()


# ---- kill during enrollment --------------------------------------------------------------

# 8,000 x 128 float32 per person (4 MB, twice SQLite's default 2 MB page cache): pages
# spill into the WAL before the commit, so a kill mid-transaction leaves uncommitted frames
KILL_N, KILL_DIM, KILL_PERSONS = 8000, 128, 60

WRITER = """
import sys
import numpy as np
from cnnkit.faces.db import FaceDB

path, n, dim, persons = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
block = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
db = FaceDB(path, model_id="kill-test", dim=dim)
for i in range(persons):
    name = f"p{i:03d}"
    print("start", name, flush=True)
    db.enroll(name, block + np.float32(i))
    print("done", name, flush=True)
"""


def uncommitted_wal_frames(wal: Path) -> int:
    """Frames of the current WAL generation written after its last commit frame.

    WAL format (sqlite.org/fileformat2.html#walformat): a 32-byte header (page size at
    bytes 8-12, salts at 16-24), then frames of a 24-byte header (bytes 4-8: the database
    size for a commit frame, else 0; bytes 8-16: the salts) and one page. Only the frame
    headers are read, so this is cheap enough to poll while another process writes.
    """
    frames, last_commit = 0, -1
    try:
        with open(wal, "rb") as f:
            header = f.read(32)
            page = int.from_bytes(header[8:12], "big") if len(header) == 32 else 0
            while page:
                f.seek(32 + frames * (24 + page))
                frame = f.read(24)
                if len(frame) < 24 or frame[8:16] != header[16:24]:
                    break  # the end, or a frame left over from an earlier generation
                if int.from_bytes(frame[4:8], "big"):
                    last_commit = frames
                frames += 1
    except FileNotFoundError:
        pass
    return frames - 1 - last_commit


def kill_during_enrollment(path: Path, after: int, min_frames: int) -> tuple[list, list, int]:
    """Run WRITER; SIGKILL it during enrollment ``after`` (0-based) or a later one.

    It is killed as soon as that enrollment has started and at least ``min_frames``
    uncommitted pages are in the WAL (0: right away, before or at ``BEGIN``).

    Returns:
        The names it started, the names it reported committed, and the number of
        uncommitted WAL frames seen just before the kill.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(KILL_N), str(KILL_DIM), str(KILL_PERSONS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    started: list[str] = []
    done: list[str] = []
    frames = 0
    wal = path.with_name(path.name + "-wal")
    try:
        while True:
            try:
                line = lines.get(timeout=0.002)
            except queue.Empty:
                line = ""
            if line is None:
                break  # it finished: the test fails below
            if line:
                (started if line.startswith("start") else done).append(line.split()[1])
            if len(started) > len(done) >= after:  # inside enrollment `after` or later
                frames = uncommitted_wal_frames(wal)
                if frames >= min_frames:
                    proc.kill()
                    break
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=60)
        pumper.join(timeout=60)
    assert proc.returncode == -9, err  # killed, not finished nor crashed
    while (line := lines.get()) is not None:  # what it printed before dying
        (started if line.startswith("start") else done).append(line.split()[1])
    return started, done, frames


@pytest.mark.parametrize(
    ("after", "min_frames"),
    [(1, 0), (2, 1), (3, 300)],
    ids=["at-begin", "first-spilled-page", "300-pages-in"],
)
def test_kill_during_enrollment_leaves_a_consistent_database(tmp_path, after, min_frames):
    path = tmp_path / "faces.db"
    started, done, frames = kill_during_enrollment(path, after, min_frames)
    assert len(done) >= after and len(started) < KILL_PERSONS
    assert frames >= min_frames  # killed mid-write: the WAL held uncommitted pages

    with sqlite3.connect(path) as conn:  # recovers the WAL: drops uncommitted frames
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        counts = dict(
            conn.execute(
                "SELECT p.name, COUNT(e.id) FROM persons p LEFT JOIN embeddings e "
                "ON e.person_id = p.id GROUP BY p.id"
            ).fetchall()
        )
    conn.close()
    assert set(done) <= set(counts) <= set(started)  # every reported commit survived
    assert all(c == KILL_N for c in counts.values()), counts  # no partial enrollment
    if min_frames > 0:  # the interrupted enrollment left nothing behind
        assert started[-1] not in counts
    block = np.random.default_rng(0).standard_normal((KILL_N, KILL_DIM)).astype(np.float32)
    last = max(counts)
    expected = (block + np.float32(int(last[1:]))).astype("<f4")
    assert b"".join(blobs(path, last)) == expected.tobytes()

    with FaceDB(path, model_id="kill-test", dim=KILL_DIM, create=False) as db:
        assert db.enroll("after-kill", -block[:5]) == 5
        assert ("after-kill", 5) in db.list() and len(db) == len(counts) + 1
        (m,) = db.identify(-block[3], k=1, threshold=1e-6)
        assert m.name == "after-kill"


# ---- readers while another process enrolls -----------------------------------------------

READ_PERSONS, READ_M, READ_DIM = 20, 300, 64

SLOW_WRITER = """
import sys, time
import numpy as np
from cnnkit.faces.db import FaceDB

path, probes_file, m = sys.argv[1], sys.argv[2], int(sys.argv[3])
probes = np.load(probes_file)
rng = np.random.default_rng(5)
db = FaceDB(path, model_id="reader-test", dim=probes.shape[1], create=False)
for i, probe in enumerate(probes):
    filler = rng.standard_normal((m - 1, probes.shape[1]))
    filler /= np.linalg.norm(filler, axis=1, keepdims=True)
    db.enroll(f"p{i:02d}", np.vstack([filler, probe]))  # the probe itself is the last row
    print(f"p{i:02d}", flush=True)
    time.sleep(0.03)
"""


def test_readers_see_consistent_states_while_another_process_enrolls(tmp_path):
    path = tmp_path / "faces.db"
    probes = unit(np.random.default_rng(6), READ_PERSONS, READ_DIM).astype(np.float32)
    np.save(tmp_path / "probes.npy", probes)
    FaceDB(path, model_id="reader-test", dim=READ_DIM).close()
    writer = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(path), str(tmp_path / "probes.npy"), str(READ_M)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[set[int]] = [set(), set()]

    def read(slot: int) -> None:
        try:
            with FaceDB(path, model_id="reader-test", dim=READ_DIM) as db:
                while not stop.is_set():
                    listing = db.list()
                    # a person is visible with all of their vectors, or not at all
                    assert all(c == READ_M for _, c in listing), listing
                    time.sleep(0.002)  # leave the CPU to the writer now and then
                    if not listing:
                        continue
                    matches = db.identify(probes, k=READ_PERSONS, threshold=1e-4)
                    n = len(matches[0].top)
                    # persons are enrolled in order: a snapshot holds a prefix of them
                    assert {name for name, _ in matches[0].top} == {f"p{i:02d}" for i in range(n)}
                    for i, m in enumerate(matches):
                        # probe i is the last row of person i: distance 0 only if all rows are in
                        assert (m.name == f"p{i:02d}") == (i < n), (i, n, m)
                        if i < n:
                            assert m.distance < 1e-4
                    seen[slot].add(n)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    readers = [threading.Thread(target=read, args=(s,)) for s in range(2)]
    for t in readers:
        t.start()
    try:
        out, err = writer.communicate(timeout=120)
    finally:
        stop.set()
        for t in readers:
            t.join(timeout=60)
    assert writer.returncode == 0 and err == "", err  # no "database is locked" in the writer
    assert out.split() == [f"p{i:02d}" for i in range(READ_PERSONS)]
    assert errors == []  # nor in the readers
    assert all(len(s) >= 3 for s in seen), seen  # both readers saw the database grow
    with FaceDB(path, model_id="reader-test", dim=READ_DIM) as db:
        matches = db.identify(probes, k=1, threshold=1e-4)
    assert [m.name for m in matches] == [f"p{i:02d}" for i in range(READ_PERSONS)]
