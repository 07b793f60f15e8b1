"""``cnnkit faces train | calibrate | enroll | verify | identify | remove | rename | list``
on a tiny synthetic face set, through the command line and a real SQLite file."""

from __future__ import annotations

import csv
import json
import sqlite3

import numpy as np
import pytest

from cnnkit.cli import main


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 3-epoch run on 15 synthetic identities x 4 images at 32x32."""
    from cnnkit.faces.data import synth_faces

    root = tmp_path_factory.mktemp("faces")
    data = synth_faces(root / "faces", identities=15, per_identity=4, size=32, seed=1)
    args = ["faces", "train", f"data={data}", "size=32", "epochs=3", "persons=4"]
    args += ["per_person=2", "width=8", "dim=16", "pairs=200", "verbose=0", "workers=0"]
    args += [f"project={root / 'runs'}"]
    assert main(args) == 0
    return root, data, root / "runs" / "faces" / "train"


def test_run_numbers_are_reproduced_from_the_saved_weights(world):
    from cnnkit.faces.data import read_faces
    from cnnkit.faces.train import calibrate_on, evaluate_one_shot, load_encoder

    _, data, run = world
    for f in ("faces.json", "calibration.json", "roc.png", "summary.txt", "results.csv"):
        assert (run / f).is_file(), f
    saved = json.loads((run / "faces.json").read_text())
    enc = load_encoder(run)
    ids = enc.meta["identities"]
    assert not set(ids["train"]) & set(ids["dev"]) and not set(ids["dev"]) & set(ids["test"])
    faces = read_faces(data, size=32)
    cal, _, _ = calibrate_on(enc, faces.subset(ids["dev"]), pairs=200, seed=0)
    assert cal.threshold == pytest.approx(saved["calibration"]["threshold"], abs=1e-6)
    te = faces.subset(ids["test"])
    s = evaluate_one_shot(enc(te.images), te, cal, "euclidean", 200, 1)
    assert s.top1 == pytest.approx(saved["test"]["top1"])
    assert s.unknown_rejected == pytest.approx(saved["test"]["unknown_rejected"])
    assert s.enrolled == saved["test"]["enrolled"] == (len(ids["test"]) + 1) // 2


def _vectors(db):
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT p.name, e.vector FROM embeddings e JOIN persons p ON p.id = e.person_id "
        "ORDER BY e.id"
    ).fetchall()
    con.close()
    return rows


def test_enroll_encodes_only_the_new_person_and_identify_is_brute_force(world, capsys):
    from cnnkit.faces import recognize as rec
    from cnnkit.faces.train import load_encoder
    from cnnkit.faces.verify import distance_matrix

    root, data, run = world
    db = root / "one.db"
    enc = load_encoder(run)
    people = sorted(p.name for p in data.iterdir() if p.is_dir())[:5]
    for k, name in enumerate(people):
        n, encoded = rec.enroll(run, db, name, data / name / "0.png", encoder=enc)
        assert (n, encoded) == (1, 1) and enc.count == k + 1  # one image, once
    before = _vectors(db)
    n, encoded = rec.enroll(run, db, "late", data / people[0], encoder=enc)
    assert encoded == 4 and enc.count == 5 + 4  # only the new person's 4 images
    assert _vectors(db)[: len(before)] == before  # the others' bytes untouched
    assert main(["faces", "remove", f"run={run}", f"db={db}", "name=late"]) == 0
    assert _vectors(db) == before
    # identify: nearest enrolled person by brute force over the stored vectors
    out = root / "who.csv"
    query = data / people[2]
    args = ["faces", "identify", f"run={run}", f"db={db}", f"source={query}", f"out={out}"]
    assert main(args) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["file"] for r in rows] == [str(p) for p in sorted(query.glob("*.png"))]
    q = enc.files([r["file"] for r in rows])
    stored = np.stack([np.frombuffer(v, "<f4") for _, v in before])
    D = distance_matrix(q, stored)
    from cnnkit.faces.verify import Calibration, open_set_threshold

    cal = Calibration.from_dict(json.loads((run / "calibration.json").read_text()))
    t = open_set_threshold(cal, 5)  # identification: strangers kept out with 5 enrolled
    assert t <= cal.threshold
    for r, d in zip(rows, D):
        assert float(r["distance"]) == pytest.approx(d.min(), abs=1e-5)
        want = people[int(d.argmin())] if d.min() <= t else ""
        assert r["identity"] == want
    capsys.readouterr()
    assert main(["faces", "list", f"run={run}", f"db={db}"]) == 0
    listed = capsys.readouterr().out
    assert "5 person(s)" in listed and f"  {people[0]}: 1 encoding(s)" in listed


def test_verify_rename_and_mistakes(world, capsys):
    root, data, run = world
    db = root / "two.db"
    person = sorted(p.name for p in data.iterdir() if p.is_dir())[0]
    img = f"source={data / person / '0.png'}"
    assert main(["faces", "enroll", f"run={run}", f"db={db}", "name=alice", img]) == 0
    capsys.readouterr()
    status = main(["faces", "verify", f"run={run}", f"db={db}", "name=alice", img])
    out = capsys.readouterr().out
    assert status == 0 and "accepted as alice (distance 0.0000" in out  # the enrolled image
    assert main(["faces", "rename", f"run={run}", f"db={db}", "name=alice", "to=alicia"]) == 0
    for args, words in [
        (["verify", "name=alise", f"source={data / person}"], "no person 'alise' in two.db"),
        (["enroll", "name=bob", f"source={root / 'nope'}"], "does not exist"),
        (
            ["identify", f"source={data / person}", f"out={root / 'no' / 'x.csv'}"],
            "existing folder",
        ),
        (["calibrate", f"data={data}", "target_far=abc"], "target_far must be a number"),
        (["calibrate", f"data={data}", "method=err"], "did you mean 'eer'"),
    ]:
        capsys.readouterr()
        assert main(["faces", args[0], f"run={run}", f"db={db}", *args[1:]]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
    bad = root / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    capsys.readouterr()
    assert main(["faces", "enroll", f"run={run}", f"db={db}", "name=bob", f"source={bad}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.jpg" in err[0], err
    assert "bob" not in {n for n, _ in _vectors(db)}


def test_a_database_of_other_weights_is_refused(world, capsys):
    from cnnkit.faces.data import read_faces
    from cnnkit.faces.train import calibrate_on, load_encoder
    from cnnkit.train.checkpoint import load_weights_file

    root, data, run = world
    other = ["faces", "train", f"data={data}", "size=32", "epochs=1", "persons=4"]
    other += ["per_person=2", "width=8", "dim=16", "pairs=50", "verbose=0", "workers=0"]
    other += [f"project={root / 'runs'}", "name=other", "seed=7", "loss=binary"]
    assert main(other) == 0
    # the Siamese run: its head (w_k, b) is saved with the network and loaded back
    run2 = root / "runs" / "faces" / "other"
    state, meta = load_weights_file(run2 / "weights" / "best.safetensors")
    assert meta["loss"] == "binary" and state["head.fc.weight"].shape == (1, 16)
    assert "dev_pair_error" in (run2 / "results.csv").read_text().splitlines()[0]
    enc = load_encoder(run2)
    assert enc.model.head is not None and enc.meta["model_id"] != load_encoder(run).meta["model_id"]
    dev = read_faces(data, size=32).subset(meta["identities"]["dev"])
    cal, _, _ = calibrate_on(enc, dev, pairs=50, seed=7)
    saved = json.loads((run2 / "faces.json").read_text())["calibration"]["threshold"]
    assert cal.threshold == pytest.approx(saved, abs=1e-6)
    db = root / "three.db"
    img = next((data / "person_000").glob("*.png"))
    assert main(["faces", "enroll", f"run={run}", f"db={db}", "name=a", f"source={img}"]) == 0
    capsys.readouterr()
    assert main(["faces", "enroll", f"run={run2}", f"db={db}", "name=b", f"source={img}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other weights" in err[0], err


def test_too_few_identities_for_the_split_is_one_sentence(tmp_path, capsys):
    from cnnkit.faces.data import synth_faces

    data = synth_faces(tmp_path / "f", identities=6, per_identity=2, size=32)
    assert main(["faces", "train", f"data={data}", "size=32", "verbose=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the dev split has 1 identity with 2 or more images" in err[0], err


def test_training_data_mistakes_are_one_sentence(tmp_path, capsys):
    (tmp_path / "d" / "ann").mkdir(parents=True)
    (tmp_path / "d" / "bob").mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "d" / "ann" / "1.png")
    for args, words in [
        ([f"data={tmp_path / 'd'}"], "bob"),  # an empty identity folder
        ([f"data={tmp_path / 'd'}", "mining=semihard"], "did you mean 'semi_hard'"),
        ([f"data={tmp_path / 'd'}", "per_person=1"], "per_person must be an integer >= 2"),
        ([f"data={tmp_path / 'd'}", "loss=binery"], "did you mean 'binary'"),
        ([f"data={tmp_path / 'd'}", "dev=0.5", "test=0.5"], "leaves no identities"),
    ]:
        assert main(["faces", "train", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], (args, err)
