"""The final lines of a run: percentages that never claim a perfect score that is not."""

import pytest

from cnnkit.train.classify import percent, score_line


@pytest.mark.parametrize(
    ("q", "text"),
    [
        (0.994, "99.4%"),
        (9998 / 10000, "99.98%"),  # 2 of 10,000 wrong is not 100.0%
        (9999 / 10000, "99.99%"),
        (1.0, "100.0%"),
        (0.0, "0.0%"),
        (1 / 10000, "0.01%"),  # 1 right is not 0.0%
        (0.5, "50.0%"),
        (0.99949, "99.9%"),
    ],
)
def test_percent(q, text):
    assert percent(q) == text


def test_score_line_names_split_metric_and_count():
    line = score_line("test", {"accuracy": 357 / 359, "loss": 0.1149, "n": 359})
    assert line == "test accuracy 99.4%  (loss 0.115, 359 images)"
    line = score_line("dev", {"accuracy": 5999 / 6000, "loss": 0.088, "n": 6000})
    assert line == "dev accuracy 99.98%  (loss 0.088, 6,000 images)"
