"""cnnkit.faces.data: synthetic faces, identity folders, identity splits, P x K items, pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.cli import main
from cnnkit.data.images import ImageDecodeError
from cnnkit.errors import CnnkitError
from cnnkit.faces.data import (
    FaceSet,
    PKGroups,
    read_faces,
    sample_pairs,
    split_identities,
    synth_faces,
)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """3 people x 3 images of 32 px (seed 5)."""
    return synth_faces(tmp_path_factory.mktemp("faces") / "set", 3, 3, size=32, seed=5)


def _hand_set(counts=(5, 2, 1), size=4):
    """Constant-colour images: image k of the set is filled with value 10 + 50 * (k % 5).

    Identity ``i`` gets ``counts[i]`` images (names ``id0``, ``id1``, ...).
    """
    labels = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
    values = torch.tensor([10 + 50 * (k % 5) for k in range(len(labels))], dtype=torch.uint8)
    images = values.view(-1, 1, 1, 1).expand(-1, 3, size, size).clone()
    names = [f"id{i}" for i in range(len(counts))]
    return FaceSet(images, labels, names, [f"{k}.png" for k in range(len(labels))])


# ---------------------------------------------------------------------- synth_faces


def test_synth_faces_is_seeded_byte_for_byte_with_one_folder_per_person(synth, tmp_path):
    again = synth_faces(tmp_path / "again", 3, 3, size=32, seed=5)
    assert again == tmp_path / "again"
    first = _files(synth)
    assert sorted(first) == sorted(
        ["identities.json"] + [f"person_{i:03d}/{k}.png" for i in range(3) for k in range(3)]
    )
    assert _files(again) == first
    with Image.open(synth / "person_001" / "2.png") as im:
        assert (im.mode, im.size, im.format) == ("RGB", (32, 32), "PNG")
    traits = json.loads((synth / "identities.json").read_text())
    assert sorted(traits) == ["person_000", "person_001", "person_002"]
    assert traits["person_000"]["hair_style"] in ("bald", "short", "fringe", "long", "curly")
    # person i depends on the seed and i only: a smaller set is a prefix of a larger one
    prefix = synth_faces(tmp_path / "prefix", 2, 2, size=32, seed=5)
    for i in range(2):
        for k in range(2):
            name = f"person_{i:03d}/{k}.png"
            assert (prefix / name).read_bytes() == first[name]
    other = synth_faces(tmp_path / "other", 1, 1, size=32, seed=6)
    assert (other / "person_000/0.png").read_bytes() != first["person_000/0.png"]


def test_synth_faces_same_person_is_closer_than_another(tmp_path):
    root = synth_faces(tmp_path / "f", 5, 3, size=32, seed=1)
    faces = read_faces(root, size=32)
    x = faces.images.float()[:, :, 8:24, 8:24].reshape(len(faces), -1)  # the face region
    d = (x[:, None] - x[None]).abs().mean(-1)  # (N, N) mean absolute pixel distance
    y = faces.labels
    same = (y[:, None] == y[None]) & ~torch.eye(len(y), dtype=torch.bool)
    diff = y[:, None] != y[None]
    assert d[same].mean() < 0.8 * d[diff].mean(), (d[same].mean(), d[diff].mean())
    # yet images of one person are not copies: pose, light and background vary
    assert d[same].min() > 5


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"identities": 0}, "identities"),
        ({"per_identity": -1}, "per_identity"),
        ({"size": 16}, "size"),
        ({"seed": -1}, "seed"),
        ({"identities": 2.5}, "identities"),
    ],
)
def test_synth_faces_refuses_bad_arguments(tmp_path, kwargs, word):
    with pytest.raises(CnnkitError, match=f"^{word} must be an integer >= ") as e:
        synth_faces(tmp_path / "x", **kwargs)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------- read_faces


def test_read_faces_round_trip_labels_names_counts_and_sizes(synth, tmp_path):
    faces = read_faces(synth, size=32)
    assert faces.names == ["person_000", "person_001", "person_002"]
    assert faces.images.dtype == torch.uint8 and faces.images.shape == (9, 3, 32, 32)
    assert faces.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert faces.counts() == {"person_000": 3, "person_001": 3, "person_002": 3}
    assert [f.relative_to(synth).as_posix() for f in faces.files][:2] == [
        "person_000/0.png",
        "person_000/1.png",
    ]
    png = np.array(Image.open(synth / "person_001/2.png"))  # (n_H, n_W, 3)
    assert torch.equal(faces.images[5], torch.from_numpy(png).permute(2, 0, 1))
    small = read_faces(synth, size=20)
    assert small.images.shape == (9, 3, 20, 20)
    expect = Image.open(synth / "person_001/2.png").resize((20, 20), Image.Resampling.BILINEAR)
    assert torch.equal(small.images[5], torch.from_numpy(np.array(expect)).permute(2, 0, 1))
    grey = read_faces(synth, size=32, channels=1)
    assert grey.images.shape == (9, 1, 32, 32)
    luma = (faces.images.float() * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(1)
    assert (grey.images[:, 0].float() - luma).abs().max() <= 1.0


def test_read_faces_skips_root_files_other_suffixes_and_reads_any_case(tmp_path):
    root = tmp_path / "people"
    for person, n in (("bob", 2), ("ann", 1)):
        (root / person).mkdir(parents=True)
        for k in range(n):
            Image.new("RGB", (10, 6), (k * 100, 20, 30)).save(root / person / f"{k}.PNG")
    (root / "bob" / "notes.txt").write_text("not an image")
    (root / "readme.md").write_text("ignored")
    (root / ".cache").mkdir()
    faces = read_faces(root, size=8)
    assert faces.names == ["ann", "bob"]
    assert faces.counts() == {"ann": 1, "bob": 2}
    assert faces.labels.tolist() == [0, 1, 1]
    assert faces.images.shape == (3, 3, 8, 8)
    assert faces.images[2, 0].unique().tolist() == [100]  # bob/1.PNG, resized


def test_read_faces_errors_are_one_sentence_naming_the_path(tmp_path):
    def error(root, exc=CnnkitError):
        with pytest.raises(exc) as e:
            read_faces(root)
        msg = str(e.value)
        assert "\n" not in msg and msg.endswith(".")
        return msg

    assert "does not exist" in error(tmp_path / "nope")
    assert str(tmp_path / "nope") in error(tmp_path / "nope")
    (tmp_path / "file.png").write_bytes(b"x")
    assert "is a file, not a folder" in error(tmp_path / "file.png")
    (tmp_path / "empty").mkdir()
    assert "has no identity sub-folders" in error(tmp_path / "empty")
    root = tmp_path / "people"
    (root / "ann").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "ann" / "0.png")
    (root / "zed").mkdir()
    (root / "zed" / "notes.txt").write_text("no images here")
    msg = error(root)
    assert msg == (
        f"identity folder {str(root / 'zed')!r} has no images; add at least one image or "
        "remove the folder."
    )
    (root / "zed" / "x.jpg").write_bytes(b"this is not a jpeg at all")
    msg = error(root, ImageDecodeError)
    assert str(root / "zed" / "x.jpg") in msg
    with pytest.raises(CnnkitError, match="channels must be 1 or 3"):
        read_faces(root, channels=2)


def test_faceset_subset_reindexes_and_suggests_names(synth):
    faces = read_faces(synth, size=32)
    sub = faces.subset(["person_002", "person_000"])
    assert sub.names == ["person_000", "person_002"]
    assert sub.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(sub.images[3:], faces.images[6:])
    assert sub.files == faces.files[:3] + faces.files[6:]
    assert len(sub) == 6 and sub.counts() == {"person_000": 3, "person_002": 3}
    with pytest.raises(CnnkitError, match=r"unknown identity 'person_02'.*'person_002'") as e:
        faces.subset(["person_02"])
    assert "\n" not in str(e.value)


def test_faceset_refuses_mismatched_fields():
    images = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    with pytest.raises(CnnkitError, match="got 3 images, 2 labels and 3 files"):
        FaceSet(images, torch.tensor([0, 1]), ["a", "b"], ["x", "y", "z"])
    with pytest.raises(CnnkitError, match="labels must index the 2 names"):
        FaceSet(images, torch.tensor([0, 1, 2]), ["a", "b"], ["x", "y", "z"])
    with pytest.raises(CnnkitError, match="images must be a uint8 tensor"):
        FaceSet(images.float(), torch.tensor([0, 1, 1]), ["a", "b"], ["x", "y", "z"])


# ---------------------------------------------------------------------- split_identities


def test_split_identities_is_disjoint_complete_and_seeded():
    names = [f"p{i:02d}" for i in range(10)]
    train, dev, test = split_identities(names, dev=0.2, test=0.3, seed=0)
    assert (len(train), len(dev), len(test)) == (5, 2, 3)
    assert set(train).isdisjoint(dev) and set(train).isdisjoint(test)
    assert set(dev).isdisjoint(test)
    assert sorted(train + dev + test) == names
    assert all(part == sorted(part) for part in (train, dev, test))
    assert split_identities(names[::-1], 0.2, 0.3, seed=0) == (train, dev, test)
    assert split_identities(names, 0.2, 0.3, seed=1) != (train, dev, test)
    three = split_identities(["a", "b", "c"], 0.1, 0.1)  # 0.3 rounds to 0: still 1 each
    assert sorted(three) == [["a"], ["b"], ["c"]]
    two = split_identities(["a", "b"], dev=0.5, test=0)  # no test split: 2 are enough
    assert two[2] == [] and sorted(two[0] + two[1]) == ["a", "b"] and two[0] and two[1]
    train4, dev4, test4 = split_identities(list("abcd"), dev=0.4, test=0.4)
    assert len(train4) == 1 and len(dev4) + len(test4) == 3 and dev4 and test4


@pytest.mark.parametrize(
    "names, kwargs, match",
    [
        (["a", "b"], {}, "2 identities cannot fill train, dev and test"),
        (["a", "b", "a"], {}, "identity 'a' is given twice"),
        (list("abcde"), {"dev": 0.6, "test": 0.4}, "dev \\+ test must be below 1"),
        (list("abcde"), {"dev": -0.1}, "dev must be a fraction in \\[0, 1\\)"),
    ],
)
def test_split_identities_refuses(names, kwargs, match):
    with pytest.raises(CnnkitError, match=match) as e:
        split_identities(names, **kwargs)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------- PKGroups


def test_pkgroups_items_are_k_images_of_one_identity_normalised():
    faces = _hand_set()  # id0: values 10, 60, 110, 160, 210; id1: 10, 60; id2: one image
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    ds = PKGroups(faces, K=4, mean=mean, std=std, augment=False)
    assert len(ds) == 2 and ds.identities == ["id0", "id1"]  # id2 has a single image
    x, y = ds[1]
    assert x.dtype == torch.float32 and x.shape == (4, 3, 4, 4)
    assert y.dtype == torch.int64 and y.tolist() == [1, 1, 1, 1]
    # id1's two images (values 10, 60), cycled; channel 2 of pixel (3, 1) by hand
    assert x[:, 2, 3, 1].tolist() == pytest.approx(
        [(v / 255 - 0.6) / 0.3 for v in (10, 60, 10, 60)], abs=1e-6
    )
    x0, y0 = ds[0]
    assert y0.tolist() == [0] * 4
    assert x0[:, 0, 0, 0].tolist() == pytest.approx(
        [(v / 255 - 0.4) / 0.2 for v in (10, 60, 110, 160)], abs=1e-6
    )
    assert torch.equal(ds[0][0], x0)  # no randomness
    xb, yb = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    assert xb.shape == (2, 4, 3, 4, 4) and yb.shape == (2, 4)
    assert yb[:, 0].unique().numel() == 2 and bool((yb == yb[:, :1]).all())


def test_pkgroups_augment_draws_distinct_images_from_the_global_rng():
    faces = _hand_set((5, 2, 1), size=12)
    ds = PKGroups(faces, K=4, mean=(0.0,), std=(1.0,), augment=True)

    def picked(x):  # constant images: flip and shift keep them, brightness moves <= 10%
        v = x.mean((1, 2, 3)) * 255  # (K,)
        assert bool((x.amax((1, 2, 3)) - x.amin((1, 2, 3)) < 1e-5).all())
        return sorted(min((10, 60, 110, 160, 210), key=lambda c: abs(c - float(u))) for u in v)

    torch.manual_seed(0)
    draws = [ds[0] for _ in range(6)]
    for x, y in draws:
        assert y.tolist() == [0] * 4
        assert len(set(picked(x))) == 4  # 5 images >= K: no repeats
    assert len({tuple(picked(x)) for x, _ in draws}) > 1  # the pick varies
    torch.manual_seed(0)
    assert all(torch.equal(ds[0][0], x) for x, _ in draws)  # the global seed repeats it
    x1, _ = ds[1]
    assert set(picked(x1)) == {10, 60}  # 2 images < K: both, then with replacement


def test_pkgroups_augment_shifts_and_flips_within_bounds():
    img = torch.zeros(2, 1, 16, 16, dtype=torch.uint8)
    img[:, :, 8, :5] = 255  # a bar at the left edge of row 8
    faces = FaceSet(
        torch.cat([img, img]), torch.tensor([0, 0, 1, 1]), ["a", "b"], ["0", "1", "2", "3"]
    )
    ds = PKGroups(faces, K=2, mean=(0.0,), std=(1.0,), augment=True)
    torch.manual_seed(3)
    rows, right = set(), 0
    for _ in range(20):
        x, _ = ds[0]
        for k in range(2):
            bar = x[k, 0] > 0.5  # (16, 16)
            r = bar.any(1).nonzero().flatten().tolist()
            assert len(r) == 1 and 4 <= r[0] <= 12  # shifted by at most 4 rows
            rows.add(r[0])
            right += int(bar[r[0], 8:].any())  # flipped to the right half
    assert len(rows) > 1 and 0 < right < 40


def test_pkgroups_refuses_too_few_identities_and_bad_k():
    with pytest.raises(CnnkitError, match="at least 2 identities with 2 or more images"):
        PKGroups(_hand_set((3, 1)))
    with pytest.raises(CnnkitError, match="K must be an integer >= 2"):
        PKGroups(_hand_set(), K=1)
    with pytest.raises(CnnkitError, match="mean and std need 1 or 3 values"):
        PKGroups(_hand_set(), mean=(0.5, 0.5))


# ---------------------------------------------------------------------- sample_pairs


def test_sample_pairs_is_balanced_correct_and_seeded():
    faces = _hand_set((5, 2, 1, 3))
    i, j, same = sample_pairs(faces, 101, seed=0)
    assert i.shape == j.shape == same.shape == (101,)
    assert i.dtype == np.int64 and same.dtype == bool
    assert int(same.sum()) == 50
    labels = faces.labels.numpy()
    assert np.array_equal(same, labels[i] == labels[j])
    assert not np.any(i == j)
    assert not np.any(labels[i[same]] == 2)  # id2 has a single image: no same pair
    assert 2 in set(labels[i[~same]]) | set(labels[j[~same]])  # but it has different pairs
    again = sample_pairs(faces, 101, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((i, j, same), again))
    assert not np.array_equal(sample_pairs(faces, 101, seed=1)[0], i)


def test_sample_pairs_refuses_sets_without_pairs():
    with pytest.raises(CnnkitError, match="different-person pairs need at least 2 identities"):
        sample_pairs(_hand_set((4,)), 10)
    with pytest.raises(CnnkitError, match="no identity has 2 or more images"):
        sample_pairs(_hand_set((1, 1)), 10)
    with pytest.raises(CnnkitError, match="n_pairs must be an integer >= 1"):
        sample_pairs(_hand_set(), 0)


# ---------------------------------------------------------------------- CLI


def test_cli_data_synth_faces_writes_the_seeded_set(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["data", "synth", "faces", f"out={out}", "ids=3", "per_id=2", "size=32", "seed=2"]
    assert main(args) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"faces saved in {out}/ (train with: cnnkit faces train data={out})"
    synth_faces(tmp_path / "py", 3, 2, size=32, seed=2)
    assert _files(out) == _files(tmp_path / "py")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["ids=0"], "ids must be an integer >= 1, got 0; e.g. ids=40."),
        (["size=8"], "size must be an integer >= 32, got 8; e.g. size=64."),
        (["per_id=two"], "per_id must be an integer >= 1, got 'two'; e.g. per_id=10."),
        (["ids=3", "per_ids=2"], "unknown key 'per_ids' for `cnnkit data synth faces`"),
    ],
)
def test_cli_data_synth_faces_refuses_bad_values(tmp_path, capsys, extra, message):
    assert main(["data", "synth", "faces", f"out={tmp_path / 'x'}", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "x").exists()


def test_cli_data_synth_needs_out_and_a_known_kind(capsys):
    assert main(["data", "synth", "faces", "ids=3"]) == 2
    assert "needs out=DIR" in capsys.readouterr().err
    assert main(["data", "synth", "face", "out=x"]) == 2
    assert "did you mean `cnnkit data synth faces`?" in capsys.readouterr().err
