"""``cnnkit.strategy.diagnosis``: the course's worked tables, a measured run, the CLI.

Each table test quotes the table of the course notes (seeds/001, "Comparing to
human-level performance" and "Mismatched training and dev/test set") it reproduces.
"""

from __future__ import annotations

import pytest

from cnnkit.cli import main
from cnnkit.errors import CnnkitError
from cnnkit.strategy import Diagnosis, diagnose, diagnose_run
from cnnkit.strategy.diagnosis import REMEDIES, fmt_percent

approx = pytest.approx


def gaps(d: Diagnosis) -> tuple:
    return d.avoidable_bias, d.variance, d.data_mismatch, d.dev_overfitting


# ---------------------------------------------------------------- the course's tables


def test_avoidable_bias_cat_classification():
    # "Avoidable bias / Cat classification example":
    #   Humans          1%     7.5%
    #   Training error  8%     8%
    #   Dev error       10%    10%
    #                   focus on bias   focus on variance
    d = diagnose(human="1%", train="8%", dev="10%")
    assert (d.human, d.train, d.dev) == (0.01, 0.08, 0.10)
    assert d.avoidable_bias == approx(0.07) and d.variance == approx(0.02)
    assert d.problem == "avoidable bias" and d.problems == ["avoidable bias"]
    assert d.remedies == {"avoidable bias": REMEDIES["avoidable bias"]}
    assert any("bigger" in r for r in d.remedies["avoidable bias"])
    assert any("Adam" in r for r in d.remedies["avoidable bias"])

    d = diagnose(human=7.5, train=8, dev=10)  # the same numbers written as percentages
    assert d.avoidable_bias == approx(0.005) and d.variance == approx(0.02)
    assert d.problem == "variance" and d.problems == ["variance"]
    assert any("dropout" in r for r in d.remedies["variance"])
    assert any("more training data" in r for r in d.remedies["variance"])


def test_medical_human_level_is_the_best_level():
    # "Understanding human-level performance": (a) typical human 3%, (b) typical doctor
    # 1%, (c) experienced doctor 0.7%, (d) team of experienced doctors 0.5%:
    # "Bayes error is <= 0.5%", so 0.5% is the proxy.
    levels = {
        "typical human": 0.03,
        "typical doctor": 0.01,
        "experienced doctor": 0.007,
        "team of experienced doctors": 0.005,
    }
    d = diagnose(human=levels, train=0.05, dev=0.06)
    assert d.human == 0.005 and d.human_levels == levels
    note = d.notes[0]
    assert "0.5% (team of experienced doctors), the best of typical human 3.0%" in note
    # the same levels as one string, and in percent
    assert diagnose(human="0.03,0.01,0.007,0.005", train=0.05, dev=0.06).human == 0.005
    for human in ("3%,1%,0.7%,0.5%", [3, 1, 0.7, 0.5]):
        assert diagnose(human=human, train=5, dev=6).human == 0.005


@pytest.mark.parametrize(
    ("case", "train", "dev", "bias", "variance", "problem"),
    [
        # "Error analysis example", human (proxy for Bayes err) 1, 0.7, 0.5% in each case:
        #   Train err  5%   1%   0.7%
        #   Dev err    6%   5%   0.8%
        # Case 1: avoidable bias (5 - 1%) is bigger than variance (6 - 5): bias.
        (1, 5, 6, 0.045, 0.01, "avoidable bias"),
        # Case 2: focus on variance.
        (2, 1, 5, 0.005, 0.04, "variance"),
        # Case 3: "very important you use 0.5 as your human-level error": focus on bias.
        (3, 0.7, 0.8, 0.002, 0.001, "avoidable bias"),
    ],
)
def test_error_analysis_example_cases(case, train, dev, bias, variance, problem):
    d = diagnose(human="1%,0.7%,0.5%", train=f"{train}%", dev=f"{dev}%")
    assert d.human == 0.005
    assert d.avoidable_bias == approx(bias) and d.variance == approx(variance)
    assert d.problem == problem and d.problems == [problem]
    if case == 1:  # "it doesn't matter" which human level: 1% gives bias 4% > variance 1%
        assert diagnose(human="1%", train="5%", dev="6%").problem == "avoidable bias"
    if case == 3:  # with the typical doctor's 1% the bias would be hidden (train < 1%)
        d1 = diagnose(human="1%", train="0.7%", dev="0.8%")
        assert d1.avoidable_bias is None and d1.problem == "variance"


def test_surpassing_human_level_performance():
    # "Surpassing human-level performance":
    #   Team            0.5%   0.5%
    #   One human       1%     1%
    #   Training error  0.6%   0.3%
    #   Dev error       0.8%   0.4%
    #   Avoidable bias? ~0.5% (the proxy; bias 0.1%)   can't know
    human = {"team": "0.5%", "one human": "1%"}
    d = diagnose(human=human, train="0.6%", dev="0.8%")
    assert d.human == 0.005
    assert d.avoidable_bias == approx(0.001) and d.variance == approx(0.002)
    assert d.problem == "variance"

    d = diagnose(human=human, train="0.3%", dev="0.4%")
    assert d.avoidable_bias is None and d.variance == approx(0.001)
    assert any("surpasses human-level" in n and "can't be known" in n for n in d.notes)
    assert any("progress usually slows" in n for n in d.notes)
    assert "avoidable bias" in d.table() and "can't know" in d.table()
    assert "variance (0.1%, the largest known gap; avoidable bias can't be known)" in d.table()


def test_mismatched_cat_classifier_without_train_dev():
    # "Bias and Variance with mismatched data distribution / Cat classifier example":
    # humans ~0%, training error 1%, dev error 10%: "maybe there isn't a variance pb
    # as the distribution is different" -> dev - train mixes variance and mismatch.
    d = diagnose(human=0, train=0.01, dev=0.10)
    assert d.variance == approx(0.09) and d.data_mismatch is None
    assert d.problem == "variance"
    assert any("no training-dev set" in n and "data mismatch" in n for n in d.notes)
    assert "variance (dev - train)" in d.table()


@pytest.mark.parametrize(
    ("human", "train", "train_dev", "dev", "expect", "problems"),
    [
        # Train err 1% / Train-dev err 9% / dev err 10%: "Var pb"
        (0, 1, 9, 10, (0.01, 0.08, 0.01), ["variance"]),
        # Train err 1% / Train-dev err 1.5% / dev err 10%: "data mismatch pb"
        (0, 1, 1.5, 10, (0.01, 0.005, 0.085), ["data mismatch"]),
        # "Other examples": Human 0% / Train 10% / Train-dev 11% / dev 12%: "Bias pb"
        (0, 10, 11, 12, (0.10, 0.01, 0.01), ["avoidable bias"]),
        # Human 0% / Train 10% / Train-dev 11% / dev 20%: "Bias + data mismatch pb"
        (0, 10, 11, 20, (0.10, 0.01, 0.09), ["avoidable bias", "data mismatch"]),
    ],
)
def test_train_dev_tables(human, train, train_dev, dev, expect, problems):
    d = diagnose(human=f"{human}%", train=f"{train}%", train_dev=f"{train_dev}%", dev=f"{dev}%")
    assert gaps(d)[:3] == approx(expect)
    assert d.problems == problems and d.problem == problems[0]
    assert list(d.remedies) == problems
    if "data mismatch" in problems:
        assert any("error analysis" in r for r in d.remedies["data mismatch"])
        assert any("synthesis" in r for r in d.remedies["data mismatch"])


def test_ladder_with_test_error():
    # "Bias/variance on mismatched training and dev/test sets":
    # Human level 4% / avoidable bias / Training 7% / variance / Training-dev 10% /
    # data mismatch / Dev 12% / degree of overfitting to dev set / Test 12%
    d = diagnose(human=0.04, train=0.07, train_dev=0.10, dev=0.12, test=0.12)
    assert gaps(d) == approx((0.03, 0.03, 0.02, 0.0))
    assert d.problems == ["avoidable bias", "variance"]  # a tie: fit the training set first
    lines = d.table().splitlines()
    labels = [line.strip().split("  ")[0] for line in lines[1:10]]
    assert labels == [
        "human-level error (proxy for Bayes error)",
        "avoidable bias",
        "training error",
        "variance",
        "training-dev error",
        "data mismatch",
        "dev error",
        "dev overfitting (test - dev)",
        "test error",
    ]
    assert "4.0%" in lines[1] and "3.0%  <- dominant problem" in lines[2]
    assert "2.0%" in lines[6] and "12.0%" in lines[9]
    # overfitting to the dev set is the problem once test is well above dev
    d = diagnose(human=0.04, train=0.045, train_dev=0.05, dev=0.055, test=0.10)
    assert d.dev_overfitting == approx(0.045) and d.problem == "dev overfitting"
    assert d.remedies["dev overfitting"] == [
        "get a bigger dev set (choosing on the dev set has overfit it)"
    ]


def test_training_harder_than_dev():
    # "Example, training is much harder than dev/test set distribution":
    # Human 4% / Training 7% / Training-dev 10% / Dev 6% / Test 6%
    d = diagnose(human="4%", train="7%", train_dev="10%", dev="6%", test="6%")
    assert gaps(d) == approx((0.03, 0.03, -0.04, 0.0))
    assert "data mismatch" not in d.problems
    assert any("dev/test data is easier" in n for n in d.notes)
    assert "-4.0%" in d.table()


def test_rearview_mirror_table():
    # "More general formulation" (speech recognition, rearview mirror):
    #                               General speech rec   Rearview mirror speech data
    #   Human level                 4%                   6%
    #   error on trained on         7%                   6%
    #   error not trained on        10% (training-dev)   6% (dev/test)
    d = diagnose(human="4%", train="7%", train_dev="10%", dev="6%", test="6%", human_dev="6%")
    assert d.human_dev == 0.06
    assert gaps(d) == approx((0.03, 0.03, -0.04, 0.0))
    assert d.problems == ["avoidable bias", "variance"]
    assert any("harder for humans too" in n for n in d.notes)
    assert any("dev error 6.0% is at human-level on the dev/test data (6.0%)" in n for n in d.notes)
    assert "human-level error on dev/test data" in d.table()


def test_gaps_within_noise_are_not_problems():
    # 1 and 2 wrong of 100 images: the 1% gap is chance; of 100,000 images it is not
    small = diagnose(train=0.01, dev=0.02, counts={"train": 100, "dev": 100})
    q1, q2 = 2 / 102, 3 / 102  # (k + 1) / (n + 2)
    noise = 2 * (q1 * (1 - q1) / 100 + q2 * (1 - q2) / 100) ** 0.5
    assert small.noise == {"variance": approx(noise)} and noise == approx(0.0437, abs=1e-4)
    assert small.problem is None and small.problems == []
    assert any("within the noise" in n and "variance 1.0% (noise ±4.37%)" in n for n in small.notes)
    assert "±4.37% (within noise)" in small.table()
    assert "no dominant problem (every positive gap is within its noise)." in small.table()
    big = diagnose(train=0.01, dev=0.02, counts={"train": 100_000, "dev": 100_000})
    assert big.noise["variance"] < 0.01 and big.problem == "variance"
    with pytest.raises(CnnkitError, match="unknown split 'deev': did you mean 'dev'"):
        diagnose(train=0.01, dev=0.02, counts={"deev": 100})


def test_human_level_unknown():
    d = diagnose(train=0.08, train_dev=0.09, dev=0.15)
    assert d.human is None and d.avoidable_bias is None
    assert d.variance == approx(0.01) and d.data_mismatch == approx(0.06)
    assert d.problem == "data mismatch"
    assert any("avoidable bias can't be known" in n for n in d.notes)


# ---------------------------------------------------------------- units and mistakes


def test_units_percent_and_fraction_agree():
    a = diagnose(human=0.01, train=0.08, train_dev=0.09, dev=0.10, test=0.11)
    b = diagnose(human=1, train=8, train_dev=9, dev=10, test=11)
    c = diagnose(human="1%", train="8%", train_dev="9%", dev="10%", test="11%")
    d = diagnose(human="1%", train="8%", train_dev=9, dev="10 %", test="1.1e1%")
    for x in (b, c, d):
        assert gaps(x) == approx(gaps(a))
        assert (x.train, x.dev) == (a.train, a.dev)
    # a bare value <= 1 beside values > 1 is percent too (the course writes 0.5, 5, 6)
    assert diagnose(human=0.5, train=5, dev=6).human == 0.005
    # unit= settles it outright
    assert diagnose(train=0.5, dev=0.9, unit="percent").train == 0.005
    assert diagnose(train=0.5, dev=0.9).train == 0.5
    assert fmt_percent(0.0005) == "0.05%" and fmt_percent(0.07) == "7.0%"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train": "8%", "dev": 0.1}, "dev=0.1 is ambiguous next to train=8%: write dev=0.1% or "),
        ({"train": 0.08, "dev": 120}, "dev=120% is over 100%"),
        ({"train": -0.1, "dev": 0.1}, "train=-0.1 must be a rate from 0 up"),
        ({"train": "eight", "dev": 0.1}, "train='eight' is not an error rate"),
        ({"train": 0.08}, "give at least two neighbouring errors"),
        ({"train": "8%", "dev": "9%", "unit": "fraction"}, "written with % but unit=fraction"),
        ({"train": 0.1, "dev": 0.2, "unit": "percnt"}, "did you mean 'percent'"),
        ({"human": [], "train": 0.1}, "human= lists no error"),
    ],
)
def test_mistakes_are_one_sentence(kwargs, message):
    with pytest.raises(CnnkitError) as e:
        diagnose(**kwargs)
    assert message in str(e.value)
    assert str(e.value).count("\n") == 0


# ---------------------------------------------------------------- a measured run


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from cnnkit.train.classify import train

    project = tmp_path_factory.mktemp("diag")
    result = train(
        model="lenet5",
        data="digits",
        train_dev=0.1,
        epochs=2,
        batch=64,
        verbose=0,
        project=str(project),
        precision="fp32",
        memory_format="contiguous",
        compile=False,
    )
    return result.run_dir


@pytest.fixture(scope="module")
def digits_diagnosis(digits_run):
    return diagnose_run(digits_run, human=0.005)


def test_diagnose_run_measures_every_split(digits_run, digits_diagnosis):
    from cnnkit.train.classify import evaluate

    d = digits_diagnosis
    assert d.source == str(digits_run)
    measured = {s: evaluate(digits_run, split=s) for s in ("train", "train_dev", "dev", "test")}
    for split, s in measured.items():
        assert getattr(d, split) == approx(1 - s["accuracy"], abs=1e-12)
        assert d.counts[split] == s["n"]
    # digits: 1,797 images in all; test 20% of them
    assert sum(d.counts.values()) == 1797
    assert d.counts["test"] == 359 and d.counts["train_dev"] > 0
    # the arithmetic of the ladder
    train_err = 1 - measured["train"]["accuracy"]
    td_err = 1 - measured["train_dev"]["accuracy"]
    dev_err = 1 - measured["dev"]["accuracy"]
    test_err = 1 - measured["test"]["accuracy"]
    if train_err > 0.005:
        assert d.avoidable_bias == approx(train_err - 0.005)
    else:
        assert d.avoidable_bias is None
    assert d.variance == approx(td_err - train_err)
    assert d.data_mismatch == approx(dev_err - td_err)
    assert d.dev_overfitting == approx(test_err - dev_err)

    # the noise of a gap: two standard errors of the difference of two binomial rates
    # (Laplace-smoothed: k wrong of n -> q = (k + 1) / (n + 2))
    def var(err, n):
        q = (err * n + 1) / (n + 2)
        return q * (1 - q) / n

    n = d.counts
    assert d.noise["dev overfitting"] == approx(
        2 * (var(test_err, n["test"]) + var(dev_err, n["dev"])) ** 0.5
    )
    assert d.noise["variance"] == approx(
        2 * (var(td_err, n["train_dev"]) + var(train_err, n["train"])) ** 0.5
    )
    # the dominant problem: the largest positive gap beyond its noise
    real = {k: v for k, v in d.gaps().items() if v is not None and v > d.noise.get(k, 0) and v > 0}
    assert d.problem == (max(real, key=lambda k: real[k]) if real else None)
    text = d.table()
    wrong = round(td_err * n["train_dev"])
    assert f"({wrong} of {n['train_dev']:,} images wrong)" in text
    assert "training-dev error" in text


def test_cli_diagnose_run(digits_run, digits_diagnosis, capsys):
    assert main(["diagnose", f"run={digits_run}", "human=0.5%"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == digits_diagnosis.table().strip()
    assert main(["diagnose", f"run={digits_run}", "train=0.1"]) == 2
    err = capsys.readouterr().err
    assert "with run= the errors are measured, so drop train=" in err
    assert main(["diagnose", f"run={digits_run}x"]) == 2
    assert "does not exist; runs are in runs/classify/" in capsys.readouterr().err


# ---------------------------------------------------------------- the command line


def test_cli_diagnose_numbers(capsys):
    assert main(["diagnose", "human=0.01", "train=0.08", "train_dev=0.10", "dev=0.12"]) == 0
    out = capsys.readouterr().out
    assert "avoidable bias" in out and "7.0%  <- dominant problem" in out
    assert "dominant problem: avoidable bias (7.0%, the largest gap)" in out
    assert "  - train longer (epochs=)" in out
    # percent, --key value and several human levels
    argv = ["diagnose", "--human", "3%,1%,0.7%,0.5%", "train=5%", "dev=6%"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "0.5% (level 4), the best of level 1 3.0%, level 2 1.0%" in out
    assert "4.5%  <- dominant problem" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["trian=0.08", "dev=0.1"],
            "unknown key 'trian' for `cnnkit diagnose`: did you mean train=?",
        ),
        (["train=0.08", "dev_err=0.1"], "did you mean dev="),
        (["train=8%", "dev=0.1"], "dev=0.1 is ambiguous next to train=8%"),
        (["train=8%", "dev=abc"], "dev='abc' is not an error rate"),
        (["train=", "dev=0.1"], "train= has no value"),
        (["0.08", "0.1"], "takes key=value settings"),
        (["train=0.1", "dev=0.2", "batch=3"], "batch= is for run="),
    ],
)
def test_cli_diagnose_mistakes_exit_2(argv, message, capsys):
    assert main(["diagnose", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnkit: error: ") and message in err
    assert err.count("\n") == 1


def test_cli_diagnose_help(capsys):
    assert main(["diagnose", "--help"]) == 0
    assert "avoidable bias = train - human" in capsys.readouterr().out
