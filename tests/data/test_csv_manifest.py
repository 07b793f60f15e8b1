"""Multi-label CSV manifests (``image,<label>,...[,split]``) and the synthetic driving scenes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnkit.data as d
from cnnkit.data.formats import read_manifest
from cnnkit.errors import CnnkitError

LABELS = ["pedestrian", "car", "stop_sign", "traffic_light"]


def _pngs(root: Path, n: int, size: int = 8) -> list[str]:
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"img/{i}.png"
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), mode="L").save(
            root / name
        )
        names.append(name)
    return names


def _csv(root: Path, text: str) -> Path:
    p = root / "labels.csv"
    p.write_text(text)
    return p


def test_manifest_reads_labels_missing_cells_and_splits(tmp_path):
    names = _pngs(tmp_path, 20)
    rows = ["image,pedestrian,car,stop_sign,traffic_light"]
    for i, n in enumerate(names):
        cells = ["1", "0", "?", ""] if i == 0 else [str((i + j) % 2) for j in range(4)]
        rows.append(",".join([n, *cells]))
    csv = _csv(tmp_path, "\n".join(rows) + "\n")
    m = read_manifest(csv)
    assert m.labels == LABELS and m.splits is None and len(m.files) == 20
    assert m.values[0, :2].tolist() == [1.0, 0.0] and np.isnan(m.values[0, 2:]).all()
    data = d.load(csv, dev=2, test=4)
    assert data.info.multilabel and data.info.classes == LABELS
    assert d.resolve_source(csv) == ("manifest", csv)
    assert [len(s) for s in (data.train, data.dev, data.test)] == [14, 2, 4]
    assert data.train.labels.dtype == torch.float32 and data.train.labels.shape[1] == 4
    assert "random" in data.info.splits_from["dev"]
    # every row kept once across the splits, the ? and empty cells as NaN
    all_ids = data.train.ids + data.dev.ids + data.test.ids
    assert sorted(Path(i).name for i in all_ids) == sorted(Path(n).name for n in names)
    ys = torch.cat([data.train.labels, data.dev.labels, data.test.labels])
    assert int(torch.isnan(ys).sum()) == 2
    assert d.load(csv, dev=2, test=4).train.ids == data.train.ids  # seeded


def test_manifest_split_column(tmp_path):
    names = _pngs(tmp_path, 12)
    rows = ["image,car,stop_sign,split"]
    for i, n in enumerate(names):
        split = "test" if i < 3 else "val" if i < 5 else "train"
        rows.append(f"{n},{i % 2},?,{split}")
    data = d.load(_csv(tmp_path, "\n".join(rows)))
    assert [len(s) for s in (data.train, data.dev, data.test)] == [7, 2, 3]
    assert data.info.splits_from["dev"] == "source"
    assert data.info.classes == ["car", "stop_sign"]
    assert torch.isnan(data.test.labels[:, 1]).all()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("image,car\nimg/0.png,2\n", r"row 2, column 'car': '2' is not a label"),
        ("image,car\nimg/0.png,yes\n", r"write 1 \(present\), 0 \(absent\), or \?"),
        ("image,car\nimg/nope.png,1\n", r"row 2: image 'img/nope.png' does not exist"),
        ("image\nimg/0.png\n", "no label columns"),
        ("image,split\nimg/0.png,train\n", "no label columns"),
        ("image,car,car\nimg/0.png,1,0\n", "'car' appears twice"),
        ("path,car\nimg/0.png,1\n", "first column of the header must be 'image'"),
        ("image,car,split\nimg/0.png,1,holdout\n", "'holdout' is not a split"),
        ("image,car\nimg/0.png,1,0\n", "row 2 has 3 cells but the header has 2"),
        ("image,car\n", "no rows"),
        ("", "is empty"),
    ],
)
def test_manifest_mistakes_are_one_sentence_errors(tmp_path, text, match):
    _pngs(tmp_path, 1)
    csv = _csv(tmp_path, text)
    with pytest.raises(CnnkitError, match=match) as e:
        d.load(csv)
    assert "\n" not in str(e.value) and str(e.value).endswith(".")


def test_other_files_are_still_refused(tmp_path):
    p = tmp_path / "labels.txt"
    p.write_text("x")
    with pytest.raises(CnnkitError, match="CSV manifest"):
        d.resolve_source(p)


def test_synthetic_scenes_are_seeded_and_balanced():
    x, t = d.multilabel_scenes(200, size=32, seed=3)
    assert x.shape == (200, 1, 32, 32) and x.dtype == np.uint8 and t.shape == (200, 4)
    x2, t2 = d.multilabel_scenes(200, size=32, seed=3)
    assert np.array_equal(x, x2) and np.array_equal(t, t2)
    assert not np.array_equal(x, d.multilabel_scenes(200, size=32, seed=4)[0])
    assert np.all(np.abs(t.mean(0) - 0.5) < 0.12)  # each label present ~half the time
    with pytest.raises(CnnkitError, match="1 to 4 labels"):
        d.multilabel_scenes(2, labels=("a", "b", "c", "d", "e"))


def test_write_scenes_hides_an_exact_fraction_of_training_labels(tmp_path):
    splits = ["train"] * 30 + ["test"] * 10
    csv = d.write_scenes(tmp_path, 40, size=32, seed=1, missing=0.3, splits=splits)
    m = read_manifest(csv)
    hidden = np.isnan(m.values)
    assert hidden[:30].sum() == round(0.3 * 30 * 4) and not hidden[30:].any()
    data = d.load(csv)
    assert data.test is not None and not torch.isnan(data.test.labels).any()
    _, t = d.multilabel_scenes(40, size=32, seed=1)
    present = ~hidden
    assert np.array_equal(m.values[present], t[present].astype(np.float32))
    assert math.isclose(hidden.mean(), 0.3 * 30 / 40)
