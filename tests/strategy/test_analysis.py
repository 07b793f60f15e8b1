"""Error analysis: export a real run's dev errors, tag them, read the table back; and the
estimates (confident learning, top losses, confused pairs) against independent arithmetic."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnkit.cli import main
from cnnkit.errors import CnnkitError
from cnnkit.strategy import (
    confused_pairs,
    export_errors,
    read_tags,
    suspected_mislabels,
    tag_table,
    top_losses,
)
from cnnkit.strategy.analysis import class_thresholds


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """LeNet-5 on the bundled digits for one epoch: a real run that still makes errors."""
    from cnnkit.train.classify import train

    tmp = tmp_path_factory.mktemp("analysis-runs")
    torch.manual_seed(0)
    return train(
        model="lenet5",
        data="digits",
        epochs=1,
        batch=64,
        verbose=0,
        project=str(tmp),
        precision="fp32",
        memory_format="contiguous",
        compile=False,
    )


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]


def _write_csv(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow([r.get(h, "") for h in header])


def _dev_scores(run):
    """Independent: the run's best model on its dev split -> (probabilities, labels)."""
    dev = run.data.dev
    model = run.fit.model.eval()
    with torch.no_grad():
        logits = model(dev.preprocess.normalize(dev.images)).double()
    return logits, dev.labels


# ---------------------------------------------------------------------------------------------
# a real run: export, tag, table


def test_export_writes_every_error_with_its_image(run, tmp_path):
    res = export_errors(run.run_dir, tmp_path / "a", tags="sevens,unsure", sheet=7)
    header, rows = _read_csv(res.csv)
    assert header == [
        "id",
        "file",
        "source",
        "label",
        "pred",
        "prob",
        "loss",
        "suspect",
        "mislabeled",
        "sevens",
        "unsure",
        "notes",
    ]
    logits, y = _dev_scores(run)
    probs = logits.softmax(1)
    pred = probs.argmax(1)
    wrong = torch.nonzero(pred != y).flatten().tolist()  # (E, 1) -> (E,)
    classes = run.data.info.classes
    assert 0 < len(wrong) < len(y)  # one epoch: some errors, not all
    assert [int(r["id"]) for r in rows] == wrong
    loss = F.cross_entropy(logits, y, reduction="none")
    for r in rows:
        i = int(r["id"])
        assert r["label"] == classes[y[i]] and r["pred"] == classes[pred[i]]
        assert abs(float(r["prob"]) - probs[i, pred[i]].item()) < 1e-4
        assert abs(float(r["loss"]) - loss[i].item()) < 1e-4
        assert r["source"] == run.data.dev.ids[i]
        png = np.asarray(Image.open(tmp_path / "a" / r["file"]))
        assert np.array_equal(png, run.data.dev.images[i, 0].numpy())  # (1, H, W) grey
        assert r["mislabeled"] == r["sevens"] == r["unsure"] == r["notes"] == ""
    side = json.loads(res.sidecar.read_text())
    assert side["examples"] == len(y) == res.examples
    assert side["errors"] == len(wrong) == res.errors
    assert side["error_rate"] == pytest.approx(len(wrong) / len(y))
    # the contact sheet is capped, and says so
    assert res.shown == min(7, len(wrong))
    sheet = Image.open(res.contact_sheet)
    assert sheet.width >= min(7, len(wrong)) * 96
    assert any("(the first 7 rows; sheet=N)" in line for line in res.lines())
    # suspects flagged in the CSV are the confident-learning ones
    sus = {s.index: classes[s.suggested] for s in suspected_mislabels(probs, y)}
    assert {int(r["id"]): r["suspect"] for r in rows if r["suspect"]} == {
        i: c for i, c in sus.items() if i in wrong
    }


def test_tag_table_percentages_and_ceilings(run, tmp_path):
    res = export_errors(run.run_dir, tmp_path / "b", tags="sevens,unsure", sheet=0)
    assert res.contact_sheet is None and not (tmp_path / "b" / "contact_sheet.png").exists()
    header, rows = _read_csv(res.csv)
    # tag programmatically, overlapping tags allowed, three spellings of "yes";
    # and a column the user added (a new tag)
    header = [*header[:-1], "odd_id", "notes"]
    for k, r in enumerate(rows):
        r["sevens"] = "1" if r["label"] == "7" else ""
        r["unsure"] = "x" if float(r["prob"]) < 0.5 else "0"
        r["mislabeled"] = "yes" if k % 3 == 0 else "no"
        r["odd_id"] = "X" if int(r["id"]) % 2 else ""
        r["notes"] = "looks like a 1" if k == 0 else ""
    _write_csv(res.csv, header, rows)

    n_dev, m = len(run.data.dev), len(rows)
    E = m / n_dev  # every error is in the CSV
    want = {
        "sevens": sum(r["label"] == "7" for r in rows),
        "unsure": sum(float(r["prob"]) < 0.5 for r in rows),
        "odd_id": sum(int(r["id"]) % 2 == 1 for r in rows),
        "mislabeled": sum(k % 3 == 0 for k in range(m)),
    }
    assert want["sevens"] > 0 and want["unsure"] > 0  # the rules did tag something

    tagged = read_tags(res.csv)
    assert tagged.tags == ["sevens", "unsure", "odd_id"]
    assert tagged.examples == n_dev and tagged.errors == m
    table = tag_table(tagged)
    got = {r.tag: r for r in table.rows}
    assert set(got) == set(want)
    for tag, count in want.items():
        assert got[tag].count == count
        assert got[tag].share == pytest.approx(count / m, abs=1e-12)
        assert got[tag].best == pytest.approx(E * (1 - count / m), abs=1e-12)
    counts = [r.count for r in table.rows]
    assert counts == sorted(counts, reverse=True)  # most frequent first
    assert table.mislabeled == want["mislabeled"]
    assert table.label_error == pytest.approx(E * want["mislabeled"] / m, abs=1e-12)
    assert table.other_error == pytest.approx(E - E * want["mislabeled"] / m, abs=1e-12)
    untagged = sum(
        1
        for k, r in enumerate(rows)
        if k % 3 and r["label"] != "7" and float(r["prob"]) >= 0.5 and int(r["id"]) % 2 == 0
    )
    assert table.untagged == untagged
    assert tagged.notes[0] == "looks like a 1"

    # the printed table says the same numbers
    text = "\n".join(table.lines())
    assert f"error {100 * E:.1f}% -> at least {100 * E * (1 - want['sevens'] / m):.1f}%" in text
    assert f"{100 * want['sevens'] / m:.1f}%" in text

    # a sample of the errors: the shares are over the rows kept, the error stays the split's
    half = rows[: m // 2 + 1]
    _write_csv(res.csv, header, half)
    sample = tag_table(res.csv)
    assert sample.examined == len(half) and sample.errors == m
    s7 = sum(r["label"] == "7" for r in half)
    row7 = next(r for r in sample.rows if r.tag == "sevens")
    assert row7.best == pytest.approx(E * (1 - s7 / len(half)), abs=1e-12)
    assert f"{len(half)} of {m} errors examined" in "\n".join(sample.lines())


def test_course_example_and_advice(tmp_path):
    """The course's numbers: 5% dogs of a 10% error -> at best 9.5%; the two label cases."""
    header = ["id", "label", "pred", "mislabeled", "dog", "notes"]

    def table(n_rows, n_dog, n_mis, examples, errors):
        rows = [
            {
                "id": str(i),
                "label": "cat",
                "pred": "dog",
                "dog": "1" if i < n_dog else "",
                "mislabeled": "1" if i >= n_rows - n_mis else "",
            }
            for i in range(n_rows)
        ]
        path = tmp_path / f"t{n_rows}-{n_dog}-{n_mis}-{examples}.csv"
        _write_csv(path, header, rows)
        return tag_table(read_tags(path, examples=examples, errors=errors))

    t = table(100, 5, 6, 10_000, 1_000)  # 100 of 1,000 errors examined, error 10%
    dog = next(r for r in t.rows if r.tag == "dog")
    assert dog.best == pytest.approx(0.095)
    assert "error 10.0% -> at least 9.5%" in "\n".join(t.lines())
    assert t.label_error == pytest.approx(0.006) and t.other_error == pytest.approx(0.094)
    assert "not the priority" in t.advice
    t2 = table(100, 5, 30, 10_000, 200)  # error 2%: labels cause 0.6%
    assert t2.label_error == pytest.approx(0.006) and t2.other_error == pytest.approx(0.014)
    assert "take the time to fix the labels" in t2.advice


# ---------------------------------------------------------------------------------------------
# the estimates, against arithmetic done here


def test_confident_learning_by_hand():
    # t0 = mean(.9, .8, .1) = .6, t1 = mean(.8, .7, .3) = .6, t2 = mean(.8, .8, .38) = .66
    P = np.array(
        [
            [0.90, 0.05, 0.05],  # 0
            [0.80, 0.10, 0.10],  # 0
            [0.10, 0.80, 0.10],  # 0: p1 >= t1, only 1 above -> suspect, suggests 1
            [0.10, 0.80, 0.10],  # 1
            [0.20, 0.70, 0.10],  # 1
            [0.10, 0.30, 0.60],  # 1: argmax 2, but .6 < t2: nothing above -> not suspect
            [0.10, 0.10, 0.80],  # 2
            [0.00, 0.20, 0.80],  # 2
            [0.62, 0.00, 0.38],  # 2: p0 >= t0 -> suspect, suggests 0
        ]
    )
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    np.testing.assert_allclose(class_thresholds(P, y), [0.6, 0.6, (0.8 + 0.8 + 0.38) / 3])
    s = suspected_mislabels(P, y)
    assert [(x.index, x.label, x.suggested) for x in s] == [(2, 0, 1), (8, 2, 0)]  # p(label) up
    assert s[0].prob_label == 0.1 and s[0].prob_suggested == 0.8

    # the label is above its threshold too, but another class is above and larger
    P = np.array(
        [
            [0.45, 0.50, 0.05],  # 0: p0 >= t0=.40 and p1 >= t1=.4833; p1 larger -> suspect
            [0.35, 0.05, 0.60],  # 0: no example is labelled 2 (t2 = inf) -> not suspect
            [0.10, 0.50, 0.40],  # 1
            [0.30, 0.40, 0.30],  # 1: nothing above threshold
            [0.41, 0.55, 0.04],  # 1: p0 and p1 above, p1 (its label) larger -> not suspect
        ]
    )
    y = torch.tensor([0, 0, 1, 1, 1])  # torch works as well as numpy
    t = class_thresholds(torch.from_numpy(P), y)
    np.testing.assert_allclose(t[:2], [0.40, (0.5 + 0.4 + 0.55) / 3])
    assert t[2] == np.inf
    assert [(x.index, x.suggested) for x in suspected_mislabels(P, y)] == [(0, 1)]


def _brute_force_suspects(P, y):
    K = len(P[0])
    t = []
    for j in range(K):
        vals = [P[n][j] for n in range(len(y)) if y[n] == j]
        t.append(sum(vals) / len(vals) if vals else float("inf"))
    out = {}
    for n in range(len(y)):
        above = [j for j in range(K) if P[n][j] >= t[j]]
        if above:
            best = max(above, key=lambda j: (P[n][j], -j))
            if best != y[n]:
                out[n] = best
    return out


def test_confident_learning_agrees_with_brute_force():
    rng = np.random.default_rng(0)
    for K in (2, 3, 7):
        y = rng.integers(0, K, 300)
        P = rng.dirichlet(np.ones(K) * 0.7, 300)
        P[np.arange(200), y[:200]] += 1.5  # most examples lean to their label
        P /= P.sum(1, keepdims=True)
        want = _brute_force_suspects(P.tolist(), y.tolist())
        got = suspected_mislabels(P, y)
        assert {s.index: s.suggested for s in got} == want
        assert len(want) > 0
        p_label = [s.prob_label for s in got]
        assert p_label == sorted(p_label)


def test_top_losses_match_cross_entropy():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(60, 5, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 5, (60,), generator=g)
    ce = F.cross_entropy(logits, y, reduction="none")
    probs = logits.softmax(1)
    top = top_losses(probs, y, k=10)
    want = torch.argsort(ce, descending=True)[:10].tolist()
    assert [h.index for h in top] == want
    for h in top:
        assert h.loss == pytest.approx(ce[h.index].item(), rel=1e-9)
        assert h.label == y[h.index].item()
        assert h.pred == logits[h.index].argmax().item()
        assert h.prob_pred == pytest.approx(probs[h.index].max().item())
    assert len(top_losses(probs, y, k=100)) == 60


def test_confused_pairs_match_confusion_matrix():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(2)
    K = 6
    y = rng.integers(0, K, 400)
    p = np.where(rng.random(400) < 0.7, y, rng.integers(0, K, 400))
    p[(y == 3) & (rng.random(400) < 0.5)] = 5  # a pair the model confuses often
    cm = confusion_matrix(y, p, labels=list(range(K)))
    np.fill_diagonal(cm, 0)
    cells = sorted(
        ((-cm[i, j], i, j) for i in range(K) for j in range(K) if cm[i, j]),
    )
    got = confused_pairs(y, p, k=K * K)
    assert [(g.label, g.pred, g.count) for g in got] == [(i, j, -c) for c, i, j in cells]
    assert (got[0].label, got[0].pred) == (3, 5)
    assert sum(g.share for g in got) == pytest.approx(1.0)
    assert got[0].share == pytest.approx(cm[3, 5] / cm.sum())
    assert len(confused_pairs(y, p, k=3)) == 3


def test_estimates_refuse_bad_input():
    with pytest.raises(CnnkitError, match=r"class indices in 0\.\.2"):
        suspected_mislabels(np.full((2, 3), 1 / 3), [0, 3])
    with pytest.raises(CnnkitError, match=r"\(N, K\)"):
        top_losses(np.ones(4), [0, 1, 0, 1])
    with pytest.raises(CnnkitError, match="k must be"):
        confused_pairs([0, 1], [1, 0], k=0)


# ---------------------------------------------------------------------------------------------
# the command line


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["analyze", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_export_then_table(run, tmp_path, capsys):
    out_dir = tmp_path / "cli"
    status, out, err = _cli(
        capsys, f"run={run.run_dir}", f"out={out_dir}", "tags=dog,great_cat", "sheet=5"
    )
    assert status == 0, err
    n_dev = len(run.data.dev)
    header, rows = _read_csv(out_dir / "errors.csv")
    assert header[-3:] == ["dog", "great_cat", "notes"]
    assert f"dev: {len(rows)} errors in {n_dev} images" in out
    assert "contact_sheet.png   5 errors, label -> pred (the first 5 rows; sheet=N)" in out
    assert "top losses" in out and "most-confused pairs" in out
    assert "suspected mislabels (confident learning, Northcutt et al. 2021)" in out
    assert f"cnnkit analyze tags={out_dir / 'errors.csv'}" in out

    for r in rows[:2]:
        r["dog"] = "yes"
    _write_csv(out_dir / "errors.csv", header, rows)
    status, out, err = _cli(capsys, f"tags={out_dir / 'errors.csv'}")
    assert status == 0, err
    E = len(rows) / n_dev
    assert f"dev error {100 * E:.1f}% ({len(rows)} of {n_dev} images)" in out
    line = next(x for x in out.splitlines() if x.startswith("dog "))
    assert f"{100 * 2 / len(rows):.1f}%" in line
    assert f"at least {100 * E * (1 - 2 / len(rows)):.1f}%" in line
    assert "errors due to incorrect labels" in out and "advice:" in out

    # the tagged CSV is not overwritten by a new export, unless asked
    status, _, err = _cli(capsys, f"run={run.run_dir}", f"out={out_dir}")
    assert status == 2 and "already holds tags" in err
    status, _, err = _cli(capsys, f"run={run.run_dir}", f"out={out_dir}", "overwrite=true")
    assert status == 0, err
    assert _read_csv(out_dir / "errors.csv")[0][-4:] == ["blurry", "ambiguous", "other", "notes"]

    # without its errors.json, the split size must be given
    (out_dir / "errors.json").unlink()
    status, _, err = _cli(capsys, f"tags={out_dir / 'errors.csv'}")
    assert status == 2 and "pass examples=N" in err
    status, out, err = _cli(capsys, f"tags={out_dir / 'errors.csv'}", f"examples={n_dev}")
    assert status == 0, err
    assert f"({len(rows)} of {n_dev} images)" in out


def test_cli_mistakes_are_one_sentence(run, tmp_path, capsys):
    good = tmp_path / "good.csv"
    _write_csv(good, ["id", "label", "pred", "mislabeled", "blurry"], [{"id": "1"}])
    bad_cell = tmp_path / "bad_cell.csv"
    _write_csv(
        bad_cell,
        ["id", "label", "pred", "mislabeled", "blurry"],
        [{"id": "1"}, {"id": "4", "blurry": "maybe"}],
    )
    renamed = tmp_path / "renamed.csv"
    _write_csv(renamed, ["id", "label", "pred", "mislabelled", "blurry"], [{"id": "1"}])
    dup = tmp_path / "dup.csv"
    _write_csv(dup, ["id", "label", "pred", "mislabeled"], [{"id": "1"}, {"id": "1"}])
    cases = [
        ((), "pass run=runs/classify/NAME"),
        ((f"run={run.run_dir}", "spilt=dev"), "did you mean split=?"),
        (("run=/no/such/run",), "does not exist"),
        ((f"run={tmp_path}",), "not a run folder"),
        ((f"run={run.run_dir}", "split=deev"), "did you mean 'dev'"),
        ((f"run={run.run_dir}", "tags=dog,dog"), "named twice"),
        ((f"run={run.run_dir}", "tags=great cat"), "no spaces"),
        ((f"run={run.run_dir}", "tags=label"), "already has"),
        ((f"run={run.run_dir}", "sheet=-1"), "sheet must be a whole number >= 0"),
        ((f"run={run.run_dir}", f"tags={good}"), "drop run="),
        (("tags=dog,cat",), "add run=runs/classify/NAME"),
        ((f"tags={tmp_path / 'none.csv'}",), "does not exist"),
        ((f"tags={good}",), "no errors.json beside"),
        ((f"tags={good}", "examples=0"), "examples must be a whole number >= 1"),
        ((f"tags={bad_cell}", "examples=10"), "row 3 (id 4), column 'blurry': 'maybe'"),
        ((f"tags={renamed}", "examples=10"), "no 'mislabeled' column ('mislabelled' looks"),
        ((f"tags={dup}", "examples=10"), "lists id 1 twice"),
        ((f"tags={good}", "examples=10", "split=dev"), "split= is for exporting"),
        ((f"run={run.run_dir}", "examples=10"), "examples= is for reading"),
    ]
    for args, words in cases:
        status, out, err = _cli(capsys, *args)
        assert status == 2, (args, out, err)
        assert words in err, (args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cnnkit: error: "), (args, err)
        assert lines[0].endswith((".", "?")), (args, err)


def test_cli_help(capsys):
    status, out, _ = _cli(capsys, "--help")
    assert status == 0 and "cnnkit analyze tags=FOLDER/errors.csv" in out


def test_contact_sheet_of_colour_images():
    from cnnkit.strategy.analysis import _contact_sheet

    colours = [(230, 20, 20), (20, 200, 40), (30, 40, 220)]
    images = [
        # (3,) -> (3, 1, 1) -> (3, 20, 30): one flat colour per image
        torch.tensor(c, dtype=torch.uint8).view(3, 1, 1).expand(3, 20, 30).contiguous()
        for c in colours
    ]
    sheet = _contact_sheet(images, ["#0 a -> b", "#1 b -> c", "#2 c -> a"], ["p 0.9"] * 3, "t")
    assert sheet.mode == "RGB"
    px = np.asarray(sheet)
    # each tile is drawn 96 px wide (30 -> 96) and 64 px high (20 -> 64)
    for c in colours:
        assert (px == np.array(c, dtype=np.uint8)).all(-1).sum() >= 96 * 64 - 200
