"""``cnnkit.evaluate`` metrics, checked against sklearn.metrics, torchmetrics and hand arithmetic.

Random logits with a known seed give per-class precision / recall / F1, macro and micro
averages, the confusion matrix (counts and row-normalized), top-k accuracy and the log
loss, each compared with the two libraries; the weighted error is worked out by hand.
A tiny real run (LeNet-5 on the bundled digits, one epoch) checks that ``cnnkit.evaluate``
is still the function it was and that ``report`` agrees with it.
"""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.metrics as skm
import torch
import torchmetrics.functional.classification as tmf

import cnnkit.evaluate as ev
from cnnkit.errors import CnnkitError

K = 7


@pytest.fixture(scope="module")
def outputs():
    """Random logits biased toward the true class (about 60% right), every class present."""
    g = torch.Generator().manual_seed(0)
    y = torch.cat([torch.arange(K), torch.randint(0, K, (293,), generator=g)])
    z = torch.randn(len(y), K, generator=g)
    z[torch.arange(len(y)), y] += 1.5
    return z, y


def test_per_class_and_averages_match_sklearn_and_torchmetrics(outputs):
    z, y = outputs
    r = ev.classification_report(z, y)
    yhat = z.argmax(1).numpy()
    P, R, F, S = skm.precision_recall_fscore_support(y.numpy(), yhat, labels=range(K))
    np.testing.assert_allclose(r.precision, P, atol=1e-12)
    np.testing.assert_allclose(r.recall, R, atol=1e-12)
    np.testing.assert_allclose(r.f1, F, atol=1e-12)
    assert r.support == S.tolist() and r.n == 300
    # F1 is the harmonic mean of P and R, class by class
    np.testing.assert_allclose(r.f1, 2 * P * R / (P + R), atol=1e-12)
    for avg in ("macro", "micro"):
        p, rr, f, _ = skm.precision_recall_fscore_support(y.numpy(), yhat, average=avg)
        got = getattr(r, avg)
        assert got["precision"] == pytest.approx(p, abs=1e-12)
        assert got["recall"] == pytest.approx(rr, abs=1e-12)
        assert got["f1"] == pytest.approx(f, abs=1e-12)
    tm = {
        "precision": tmf.multiclass_precision,
        "recall": tmf.multiclass_recall,
        "f1": tmf.multiclass_f1_score,
    }
    for name, fn in tm.items():
        per_class = fn(z, y, num_classes=K, average=None)
        np.testing.assert_allclose(getattr(r, name), per_class.double().numpy(), atol=1e-6)
        for avg in ("macro", "micro"):
            want = float(fn(z, y, num_classes=K, average=avg))
            assert getattr(r, avg)[name] == pytest.approx(want, abs=1e-6)
    # single-label classes: micro P = micro R = micro F1 = accuracy
    assert r.micro["f1"] == pytest.approx(r.accuracy, abs=1e-12)
    assert r.accuracy == pytest.approx(skm.accuracy_score(y, yhat), abs=1e-12)
    assert r.error == pytest.approx(1 - r.accuracy, abs=1e-12)
    assert 0.4 < r.accuracy < 0.9  # a real mix of right and wrong


def test_confusion_matrix_counts_and_rows_match_both_libraries(outputs):
    z, y = outputs
    yhat = z.argmax(1).numpy()
    C = ev.confusion_matrix(z, y)
    assert C.dtype == torch.int64 and C.shape == (K, K)
    np.testing.assert_array_equal(C.numpy(), skm.confusion_matrix(y, yhat, labels=range(K)))
    np.testing.assert_array_equal(C.numpy(), tmf.multiclass_confusion_matrix(z, y, K).numpy())
    rows = ev.confusion_matrix(z, y, normalize=True)
    want = skm.confusion_matrix(y, yhat, labels=range(K), normalize="true")
    np.testing.assert_allclose(rows.numpy(), want, atol=1e-12)
    tm_rows = tmf.multiclass_confusion_matrix(z, y, K, normalize="true")
    np.testing.assert_allclose(rows.numpy(), tm_rows.double().numpy(), atol=1e-6)
    np.testing.assert_allclose(rows.sum(1).numpy(), np.ones(K), atol=1e-12)
    r = ev.classification_report(z, y)
    assert torch.equal(r.confusion, C)
    assert torch.allclose(r.confusion_normalized, rows)
    # predicted classes (integers) give the same matrix as the logits they came from
    assert torch.equal(ev.confusion_matrix(torch.as_tensor(yhat), y, num_classes=K), C)


def test_topk_and_loss_match_sklearn_and_torchmetrics(outputs):
    z, y = outputs
    probs = z.double().softmax(1).numpy()
    for k in (1, 2, 3, 5):
        want = skm.top_k_accuracy_score(y.numpy(), probs, k=k, labels=range(K))
        assert ev.topk_accuracy(z, y, k) == pytest.approx(want, abs=1e-12)
        tm = float(tmf.multiclass_accuracy(z, y, num_classes=K, top_k=k, average="micro"))
        assert ev.topk_accuracy(z, y, k) == pytest.approx(tm, abs=1e-6)
    r = ev.classification_report(z, y, k=3)
    assert list(r.topk) == [3]
    assert r.topk[3] == pytest.approx(skm.top_k_accuracy_score(y, probs, k=3), abs=1e-12)
    assert r.loss == pytest.approx(skm.log_loss(y.numpy(), probs, labels=range(K)), abs=1e-9)
    assert ev.classification_report(z, y, k=K).topk == {}  # top-K of K classes says nothing


def test_classes_never_seen_are_left_out_of_macro_like_both_libraries():
    # class 3 never occurs and is never predicted; class 2 is predicted but never true
    y = torch.tensor([0, 0, 1, 1, 1, 0, 4, 4])
    yhat = torch.tensor([0, 1, 1, 2, 1, 0, 4, 0])
    z = torch.nn.functional.one_hot(yhat, 5).float()
    r = ev.classification_report(z, y)
    assert r.precision[3] == r.recall[3] == r.f1[3] == 0.0 and r.support[3] == 0
    assert r.precision[2] == 0.0 and r.recall[2] == 0.0  # 0/1 and 0/0
    for avg in ("macro", "micro"):
        p, rr, f, _ = skm.precision_recall_fscore_support(y, yhat, average=avg, zero_division=0)
        got = getattr(r, avg)
        assert (got["precision"], got["recall"]) == pytest.approx((p, rr))
        assert got["f1"] == pytest.approx(f)
        assert got["f1"] == pytest.approx(
            float(tmf.multiclass_f1_score(z, y, num_classes=5, average=avg))
        )
    # by hand: classes 0, 1, 2, 4 count; P = (2/3, 2/3, 0, 1), R = (2/3, 2/3, 0, 1/2)
    assert r.macro["precision"] == pytest.approx((2 / 3 + 2 / 3 + 0 + 1) / 4)
    assert r.macro["recall"] == pytest.approx((2 / 3 + 2 / 3 + 0 + 1 / 2) / 4)


def test_weighted_error_by_hand():
    y = torch.tensor([0, 1, 2, 1, 0])
    yhat = torch.tensor([0, 2, 2, 0, 0])  # wrong at i = 1 and i = 3
    z = torch.nn.functional.one_hot(yhat, 3).float()
    # w = (1, 10, 1, 1, 2): (10 + 1) / (1 + 10 + 1 + 1 + 2) = 11/15
    assert ev.weighted_error(z, y, [1, 10, 1, 1, 2]) == pytest.approx(11 / 15)
    assert ev.weighted_error(yhat, y, torch.tensor([1.0, 10, 1, 1, 2])) == pytest.approx(11 / 15)
    # every class-1 image weighs 10: w = (1, 10, 1, 10, 1): (10 + 10) / 23
    assert ev.weighted_error(z, y, {1: 10}) == pytest.approx(20 / 23)
    assert ev.weighted_error(z, y, {"dog": 10}, classes=["cat", "dog", "bird"]) == pytest.approx(
        20 / 23
    )
    # equal weights: the plain error, 2/5
    assert ev.weighted_error(z, y, [3] * 5) == pytest.approx(0.4) == ev.error_rate(z, y)
    r = ev.classification_report(z, y, weights=[1, 10, 1, 1, 2])
    assert r.weighted_error == pytest.approx(11 / 15)
    assert "weighted error 73.3%" in r.table()
    assert ev.classification_report(z, y).weighted_error is None


def test_one_sigmoid_output_is_two_classes():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(50, generator=g)
    y = (torch.rand(50, generator=g) < torch.sigmoid(2 * z)).long()
    r = ev.classification_report(z[:, None], y, classes=["no", "yes"])
    yhat = (z > 0).long()
    assert r.accuracy == pytest.approx(skm.accuracy_score(y, yhat))
    np.testing.assert_allclose(r.f1, skm.f1_score(y, yhat, average=None), atol=1e-12)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(z.double(), y.double())
    assert r.loss == pytest.approx(float(bce), abs=1e-9)
    assert torch.allclose(ev.log_probs(z).exp()[:, 1], torch.sigmoid(z), atol=1e-6)


def test_table_shows_matrix_and_top_confusions():
    # hand-made: 3 of 10 "3"s read as "8", 1 "7" read as "1"
    y = torch.tensor([3] * 10 + [7] * 5 + [8] * 4)
    yhat = torch.tensor([3] * 7 + [8] * 3 + [7] * 4 + [1] + [8] * 4)
    z = torch.nn.functional.one_hot(yhat, 10).float()
    r = ev.classification_report(z, y, classes=[str(i) for i in range(10)], title="hand")
    assert r.top_confusions() == [("3", "8", 3, 0.3), ("7", "1", 1, 0.2)]
    text = r.table()
    assert text.startswith("hand: 19 images, 10 classes\naccuracy 78.9%   error 21.1%")
    assert "  3 -> 8: 3 (30.0%)" in text and "  7 -> 1: 1 (20.0%)" in text
    row3 = next(line for line in text.splitlines() if line.startswith("3  ") and "%" not in line)
    assert row3.split() == ["3", "0", "0", "0", "7", "0", "0", "0", "0", "3", "0"]
    # precision of "8": 4 of the 7 images predicted as 8 are 8s
    line8 = next(line for line in text.splitlines() if line.startswith("8 ") and "%" in line)
    assert line8.split() == ["8", "57.1%", "100.0%", "72.7%", "4"]


def test_many_classes_list_only_the_largest_confusions():
    n = 30
    y = torch.arange(n).repeat(3)
    yhat = y.clone()
    yhat[:5] = (y[:5] + 1) % n  # five single confusions k -> k+1
    yhat[n : n + 2] = 29  # classes 0 and 1 read as 29 once more
    classes = [f"class_{i}" for i in range(n)]
    r = ev.classification_report(torch.nn.functional.one_hot(yhat, n).float(), y, classes)
    text = r.table(max_classes=20, top=3)
    assert "30 classes are too many to print (more than 20); its 3 largest" in text
    tail = text.splitlines()[-3:]
    assert tail[0] == "  class_0 -> class_1: 1 (33.3%)"
    assert len(tail) == 3 and all(" -> " in t for t in tail)
    assert "true \\ pred" not in text


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ev.classification_report(torch.zeros(3, 2), [0, 1, 2]), "labels must lie in 0..1"),
        (lambda: ev.classification_report(torch.zeros(3, 2), [0, 1]), "one class index per"),
        (lambda: ev.classification_report(torch.zeros(2, 2), [0, 1], ["a"]), "1 class names"),
        (lambda: ev.classification_report(torch.zeros(2, 2), [0, 1], k=0), "k (top-k) must be"),
        (lambda: ev.classification_report(torch.zeros(0, 2), []), "no examples to score"),
        (lambda: ev.weighted_error(torch.zeros(2, 2), [0, 1], [0, 0]), "not all 0"),
        (lambda: ev.weighted_error(torch.zeros(2, 2), [0, 1], [1, 2, 3]), "one w(i) per image"),
        (
            lambda: ev.weighted_error(torch.zeros(2, 2), [0, 1], {"dgo": 2}, ["cat", "dog"]),
            "unknown class 'dgo': did you mean 'dog'?",
        ),
        (lambda: ev.accuracy(torch.zeros(2, 2, 2), [0, 1]), "multi-label outputs"),
        (lambda: ev.report(crops=3), "crops must be 1, 5 or 10, got 3"),
    ],
)
def test_mistakes_are_one_sentence_errors(call, message):
    with pytest.raises(CnnkitError) as e:
        call()
    assert message in str(e.value)


# --- a real run ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from cnnkit.train.classify import train

    root = tmp_path_factory.mktemp("metrics_run")
    r = train(model="lenet5", data="digits", epochs=1, batch=64, verbose=0, project=str(root))
    return r.run_dir


def test_cnnkit_evaluate_is_still_the_function(run):
    import cnnkit
    from cnnkit.train.classify import evaluate

    want = evaluate(run)
    assert ev(run) == want
    assert ev(str(run), split="dev") == evaluate(run, split="dev")
    assert callable(cnnkit.evaluate) and cnnkit.evaluate(run) == want  # the attribute too
    r = ev.report(run)
    assert r.n == want["n"] == 359
    assert r.accuracy == pytest.approx(want["accuracy"], abs=1e-12)
    assert r.loss == pytest.approx(want["loss"], abs=1e-5)
    assert r.title == f"test split of {run} (lenet5)"
    assert r.classes == [str(i) for i in range(10)]
    assert sum(r.support) == 359 and int(r.confusion.trace()) == round(r.accuracy * 359)


def test_cli_val_report(run, capsys):
    from cnnkit.cli import main

    assert main(["val", f"run={run}", "report=true", "topk=2"]) == 0
    out = capsys.readouterr().out
    r = ev.report(run, k=2)
    lines = out.splitlines()
    assert lines[0].startswith("test accuracy ") and "359 images" in lines[0]
    assert "top-2 accuracy " in lines[3] and "macro avg" in out and "micro avg" in out
    assert "confusion matrix (rows: true class, columns: predicted class, counts):" in out
    assert out.rstrip().endswith(r.table().splitlines()[-1])
    assert main(["val", f"run={run}", "report=maybe"]) == 2
    assert "report must be true or false" in capsys.readouterr().err
