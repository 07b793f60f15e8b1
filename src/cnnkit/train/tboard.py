"""TensorBoard event files for a training run (``tensorboard=true``): ``run/tensorboard/``.

:func:`cnnkit.train.fit` writes, from the main process only, one set of scalars per
epoch (every number of the ``results.csv`` row, at ``global_step`` = the epoch, 1-based)
and, once, a grid of the first training batch as the network sees it (tag
``train/batch``, step 0). Nothing is logged per step, so the loop is not slowed down.

``torch.utils.tensorboard`` (which needs the ``tensorboard`` package) is imported only
when a :class:`TensorBoardLog` is made, so importing :mod:`cnnkit.train` stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.util import find_spec
from numbers import Real
from pathlib import Path
from typing import Any

import torch

from cnnkit.errors import CnnkitError

__all__ = ["TensorBoardLog", "require_tensorboard", "scalar_tag"]

#: The folder of the event files, inside the run folder.
FOLDER = "tensorboard"
#: At most this many images in the ``train/batch`` grid.
MAX_IMAGES = 16
_SPEED = ("img_per_s", "seconds", "data_s")


def require_tensorboard() -> None:
    """Raise :class:`CnnkitError` when the ``tensorboard`` package is not installed.

    Raises:
        CnnkitError: ``tensorboard`` cannot be imported.
    """
    if find_spec("tensorboard") is None:
        raise CnnkitError(
            "tensorboard=true needs the tensorboard package; pip install tensorboard "
            "(or pip install 'cnnkit[tensorboard]')."
        )


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of a ``results.csv`` column.

    ``train_X`` / ``dev_X`` -> ``X/train`` / ``X/dev`` (one chart per metric, both
    splits on it), the timing columns -> ``speed/...``; any other key is kept as is.

    Args:
        key: A column name, e.g. ``dev_loss``.

    Returns:
        The tag, e.g. ``loss/dev``.
    """
    for split in ("train", "dev"):
        if key.startswith(split + "_") and len(key) > len(split) + 1:
            return f"{key[len(split) + 1 :]}/{split}"
    if key in _SPEED:
        return f"speed/{key}"
    return key


def display_images(
    x: torch.Tensor,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    """Network inputs ``(N, C, H, W)`` as float32 images in [0, 1] on the CPU.

    With the normalization's ``mean`` and ``std`` (0-1 units) it is undone; without,
    each image is stretched to its own min-max. One- and three-channel inputs keep their
    channels, others show their first channel.

    Args:
        x: A batch of network inputs.
        mean: Per-channel mean that was subtracted, or None.
        std: Per-channel standard deviation that was divided by, or None.

    Returns:
        A contiguous ``(N, 1 or 3, H, W)`` float32 CPU tensor in [0, 1].
    """
    x = x.detach().to("cpu", torch.float32).contiguous()
    c = x.shape[1]
    if mean is not None and std is not None and len(mean) == c and len(std) == c:
        m = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        x = x * s + m
    else:
        flat = x.reshape(x.shape[0], -1)
        lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
        hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
        x = (x - lo) / (hi - lo).clamp_min(1e-12)
    if c not in (1, 3):
        x = x[:, :1]
    return x.nan_to_num(0.0).clamp_(0.0, 1.0).contiguous()


class TensorBoardLog:
    """A ``SummaryWriter`` on ``run_dir/tensorboard/`` with the run's two kinds of records.

    Args:
        run_dir: The run folder.
        purge_step: Steps from this one on, written by an earlier writer in the folder,
            are hidden by TensorBoard (a resumed run passes the first epoch it trains,
            1-based; a run that starts over passes 0). None: hide nothing.

    Raises:
        CnnkitError: The ``tensorboard`` package is not installed.
    """

    def __init__(self, run_dir: str | Path, purge_step: int | None = None) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(run_dir) / FOLDER
        self._writer: Any = SummaryWriter(log_dir=str(self.folder), purge_step=purge_step)

    def epoch(self, row: Mapping[str, Any], flush: bool = True) -> None:
        """Every number of a ``results.csv`` row but ``epoch`` as a scalar at step ``epoch``.

        Args:
            row: The epoch's row (``epoch`` 1-based, ``train_loss``, ``dev_loss``, ``lr``...).
            flush: Write the events to disk now (once an epoch costs nothing).
        """
        step = int(row["epoch"])
        for key, value in row.items():
            if key == "epoch" or isinstance(value, bool) or not isinstance(value, Real):
                continue
            self._writer.add_scalar(scalar_tag(key), float(value), global_step=step)
        if flush:
            self._writer.flush()

    def images(
        self,
        x: torch.Tensor,
        tag: str = "train/batch",
        step: int = 0,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        """A grid of up to 16 images of a batch of network inputs (see :func:`display_images`).

        Args:
            x: ``(N, C, H, W)`` network inputs (other shapes are not images: ignored).
            tag: The image tag.
            step: Its step.
            mean: Normalization mean to undo (None: per-image min-max).
            std: Normalization standard deviation to undo.
        """
        if x.ndim != 4 or x.shape[0] == 0:
            return
        from torchvision.utils import make_grid

        shown = display_images(x[:MAX_IMAGES], mean, std)
        grid = make_grid(shown, nrow=8, padding=2)  # torchvision's defaults
        self._writer.add_image(tag, grid, global_step=step, dataformats="CHW")

    def close(self) -> None:
        """Flush the pending events and close the event file."""
        self._writer.flush()
        self._writer.close()
