"""The metric a run monitors is better when the task says so: an error is minimized."""

from __future__ import annotations

from typing import ClassVar

import torch

from cnnkit.train import fit
from cnnkit.train.tasks import Classification


class WithError(Classification):
    """Classification plus ``err`` = 1 - accuracy, a metric that is better when lower."""

    metric_names = ("accuracy", "err")
    higher_is_better: ClassVar[dict[str, bool]] = {"loss": False, "accuracy": True, "err": False}

    def summarize(self, sums: torch.Tensor) -> dict[str, float]:
        out = super().summarize(sums)
        return {**out, "err": 1.0 - out["accuracy"]}


def test_a_lower_is_better_metric_keeps_the_epoch_with_its_lowest_value():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(240, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long()
    train = torch.utils.data.TensorDataset(x[:160], y[:160])
    dev = torch.utils.data.TensorDataset(x[160:], y[160:])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    res = fit(
        model,
        train,
        dev,
        task=WithError(),
        epochs=6,
        batch=16,
        lr=0.05,
        verbose=0,
        monitor="dev_err",
        workers=0,
        aug="none",
        precision="fp32",
        memory_format="contiguous",
        compile=False,
    )
    errs = [row["dev_err"] for row in res.history]
    # the lowest error; on a tie the later (longer-trained) epoch, as for a loss
    assert res.best_epoch == 1 + max(i for i, e in enumerate(errs) if e == min(errs))
    assert res.best == min(errs)
    assert len(set(errs)) > 1  # the epochs differ, so the choice is a real one
