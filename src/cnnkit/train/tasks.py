"""What differs between tasks: how outputs and targets become a loss, and which metrics to count.

The trainer is generic; a task hands it a :class:`Task`. Classification is here;
detection, faces and segmentation bring their own subclasses later.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from cnnkit.errors import CnnkitError

__all__ = ["Classification", "Task", "masked_bce"]


class Task:
    """The interface the trainer calls. Metric sums are a float64 tensor, added batch by batch.

    Attributes:
        metric_names: Names of the metrics :meth:`summarize` returns (besides ``loss``).
        higher_is_better: For each metric name, whether larger is better.
        images_per_example: Images in one example of the dataset (1; K for the faces
            task, whose examples are groups of K images of one person), so that the
            trainer's speed is in images per second.
    """

    metric_names: tuple[str, ...] = ()
    higher_is_better: ClassVar[dict[str, bool]] = {}
    n_sums: int = 2
    images_per_example: int = 1

    def forward(self, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training step's outputs, from which :meth:`loss` is computed.

        Args:
            net: The network (in training mode).
            x: The batch of inputs.
            y: The batch of targets (most networks ignore them; detectors such as
                torchvision's Faster R-CNN need them to compute their losses).

        Returns:
            ``net(x)`` by default.
        """
        return net(x)

    def eval_forward(self, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The outputs on dev / test, with ``net`` in eval mode (default ``net(x)``)."""
        return net(x)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean loss of a batch."""
        raise NotImplementedError

    def eval_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss reported on dev / test (default: the training loss)."""
        return self.loss(outputs, targets)

    def count(
        self, sums: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor
    ) -> None:
        """Add a batch's contribution to ``sums`` (in place)."""
        raise NotImplementedError

    def summarize(self, sums: torch.Tensor) -> dict[str, float]:
        """Turn the sums into ``{"loss": ..., metric: ...}``."""
        raise NotImplementedError


class Classification(Task):
    """Softmax cross-entropy for classes; sigmoid + logistic loss for binary and multi-label.

    The mode follows the data: integer labels with one output per class use softmax
    cross-entropy; a single output unit means binary logistic regression (``p = sigmoid(z)``,
    ``L = -(y log p + (1-y) log(1-p))``); float multi-hot targets mean multi-label, one
    sigmoid per class. ``accuracy`` is the fraction of correct predictions (per label for
    multi-label, thresholded at 0.5).

    Multi-label targets may have missing entries (``NaN``: the ``?`` of a CSV manifest).
    They are masked out, never read as 0: the loss is the mean logistic loss over the
    *present* entries, ``J = sum_{(i,j) present} L(yhat_j(i), y_j(i)) / #present``,
    which is the course's ``1/m sum_i sum_j L`` up to the constant factor ``1/L`` when
    no label is missing (and equals the plain mean BCE then). A batch with no present
    entry has loss 0 (no gradient). Accuracy counts present entries only, and the
    summarized loss is averaged over present entries of the whole split.

    Args:
        loss: ``"auto"``, ``"ce"`` or ``"bce"``.
        label_smoothing: For cross-entropy.
    """

    metric_names = ("accuracy",)
    higher_is_better: ClassVar[dict[str, bool]] = {"loss": False, "accuracy": True}
    n_sums = 4  # loss * n, correct, units (labels), n (examples)

    def __init__(self, loss: str = "auto", label_smoothing: float = 0.0) -> None:
        self.kind = loss
        self.label_smoothing = label_smoothing

    def mode(self, outputs: torch.Tensor, targets: torch.Tensor) -> str:
        """``"multiclass"``, ``"binary"`` or ``"multilabel"`` for these outputs and targets."""
        if targets.is_floating_point() and targets.ndim == 2:
            if outputs.shape != targets.shape:
                raise CnnkitError(
                    f"multi-label targets {tuple(targets.shape)} need outputs of the same "
                    f"shape, got {tuple(outputs.shape)}."
                )
            return "multilabel"
        if (outputs.ndim == 2 and outputs.shape[1] == 1) or outputs.ndim == 1:
            return "binary"
        if self.kind == "bce":
            raise CnnkitError(
                "loss=bce needs one output (binary) or multi-hot float targets (multi-label)."
            )
        return "multiclass"

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss over the batch."""
        mode = self.mode(outputs, targets)
        if mode == "multiclass":
            return F.cross_entropy(outputs, targets, label_smoothing=self.label_smoothing)
        if mode == "binary":
            z = outputs.reshape(-1)  # (B, 1) -> (B,)
            return F.binary_cross_entropy_with_logits(z, targets.to(z.dtype))
        return masked_bce(outputs, targets)

    def eval_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The plain log loss (no label smoothing): what dev and test losses report."""
        if self.mode(outputs, targets) == "multiclass":
            return F.cross_entropy(outputs, targets)
        return self.loss(outputs, targets)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        """Class indices (or 0/1 per label) from raw outputs."""
        if outputs.ndim == 2 and outputs.shape[1] > 1:
            return outputs.argmax(1)
        return (outputs.reshape(outputs.shape[0], -1) > 0).long().squeeze(1)

    def count(
        self, sums: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor
    ) -> None:
        """Add ``loss * n``, the number correct and ``n``."""
        n = targets.shape[0]
        mode = self.mode(outputs, targets)
        if mode == "multiclass":
            correct = (outputs.argmax(1) == targets).sum()
            units = n
        elif mode == "binary":
            correct = ((outputs.reshape(-1) > 0).long() == targets.long()).sum()
            units = n
        else:
            present = ~torch.isnan(targets)  # (B, L) bool: the labels that are given
            correct = (((outputs > 0) == (targets > 0.5)) & present).sum()
            units = int(present.sum())
        # the loss is a mean over `units` (examples, or present labels): weigh it by them
        sums[0] += loss.double() * units
        sums[1] += correct
        sums[2] += units
        sums[3] += n

    def summarize(self, sums: torch.Tensor) -> dict[str, float]:
        """``{"loss", "accuracy"}`` from the sums (loss averaged over examples, or over the
        present labels for multi-label)."""
        loss_n, correct, units, n = sums.tolist()
        if n == 0 or units == 0:
            return {"loss": float("nan"), "accuracy": float("nan")}
        return {"loss": loss_n / units, "accuracy": correct / units}


def masked_bce(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean logistic loss over the present entries of multi-label targets.

    Args:
        outputs: Logits ``(B, L)``, one sigmoid per label.
        targets: float ``(B, L)``: 1, 0, or NaN for a missing label (skipped, not 0).

    Returns:
        Scalar ``sum_{present} BCE(z, y) / #present`` (0, with no gradient, when no
        entry is present).
    """
    present = ~torch.isnan(targets)  # (B, L) bool
    y = torch.where(present, targets, torch.zeros_like(targets)).to(outputs.dtype)
    per = F.binary_cross_entropy_with_logits(outputs, y, reduction="none")  # (B, L)
    per = torch.where(present, per, torch.zeros_like(per))  # missing entries add nothing
    return per.sum() / present.sum().clamp_min(1)
