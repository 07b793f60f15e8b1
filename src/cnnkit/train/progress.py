"""Training progress as Keras shows it: ``verbose=0`` silent, 1 a live bar, 2 a line per epoch.

The live bar (rich) updates one line per epoch and leaves it behind when the epoch
ends, with the dev metrics added; it works in terminals and notebooks. When the
output is not a terminal (a pipe, CI) ``verbose=1`` prints the finished lines only.
The text is refreshed at most 4 times a second, so the bar costs nothing measurable.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch
from rich.console import Console  # here, not in fit(): importing rich draws from `random`

__all__ = ["Progress", "format_metrics"]


def _fmt(key: str, v: float) -> str:
    if "accuracy" in key:
        return f"{key.replace('accuracy', 'acc')} {100 * v:.2f}%"
    return f"{key} {v:.4f}"


def format_metrics(row: dict[str, Any]) -> str:
    """``train_loss 0.1234  train_acc 97.50%  dev_loss ...`` from a results row."""
    keys = [k for k in row if k.startswith(("train_", "dev_"))]
    return "  ".join(_fmt(k, float(row[k])) for k in keys)


class Progress:
    """Progress output for :func:`cnnkit.train.fit`.

    Args:
        verbose: 0, 1 or 2.
        epochs: Planned epochs.
        steps: Batches per epoch.
    """

    def __init__(self, verbose: int, epochs: int, steps: int) -> None:
        self.verbose = verbose
        self.epochs = epochs
        self.steps = steps
        self.console = Console(file=sys.stdout, highlight=False)
        if not self.console.is_terminal:
            self.console.width = max(self.console.width, 160)
        self.live = verbose == 1 and (self.console.is_terminal or self.console.is_jupyter)
        self._bar = None
        self._task = None
        self._last = 0.0
        self._t0 = 0.0

    def __enter__(self) -> Progress:
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]epoch {task.fields[ep]}"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TextColumn("{task.fields[text]}"),
                TimeRemainingColumn(),
                console=self.console,
                refresh_per_second=4,
            )
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def note(self, text: str) -> None:
        """Print a line (unless silent)."""
        if self.verbose:
            self.console.print(text, markup=False, soft_wrap=True)

    def start_epoch(self, epoch: int, done: int) -> None:
        """Begin epoch ``epoch`` (0-based), ``done`` batches already trained (after a resume)."""
        self._ep = f"{epoch + 1}/{self.epochs}"
        self._t0 = time.perf_counter()
        self._last = 0.0
        if self._bar is not None:
            self._task = self._bar.add_task(
                "", total=self.steps, completed=done, ep=self._ep, text=""
            )

    def step(self, sums: torch.Tensor, task: Any, lr: float, seen: int, elapsed: float) -> None:
        """After a batch: advance the bar; refresh the text at most 4 times a second."""
        if self._bar is None:
            return
        if elapsed - self._last < 0.25:
            self._bar.advance(self._task)
            return
        self._last = elapsed
        m = task.summarize(sums)
        text = "  ".join(_fmt(k, v) for k, v in m.items())
        text += f"  lr {lr:.2e}  {seen / max(elapsed, 1e-9):,.0f} img/s"
        self._bar.update(self._task, advance=1, text=text)

    def end_epoch(self, row: dict[str, Any], improved: bool, monitor: str) -> None:
        """After an epoch: leave one finished line with train and dev metrics."""
        if not self.verbose:
            return
        mark = " *" if improved and monitor.startswith("dev_") else ""
        speed = f"{row['img_per_s']:,.0f} img/s  {row['seconds']:.1f}s"
        text = f"{format_metrics(row)}  lr {row['lr']:.2e}  {speed}{mark}"
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=self.steps, text=text)
            self._bar.stop_task(self._task)
        else:
            self.console.print(f"epoch {self._ep}  {text}", markup=False, soft_wrap=True)
