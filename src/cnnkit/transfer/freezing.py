"""Which parts of a network train: stages, freezing, and the batch-norm policy.

A *stage* is a unit of the backbone that transfer learning freezes or unfreezes as a
whole: a top-level child holding parameters (a ResNet's ``layer1``), or each child of a
top-level ``nn.Sequential`` (LeNet-5's convolutions, MobileNet's blocks); a batch norm
directly after a convolution joins its stage. The *head* is the final ``nn.Linear``
(``model.classifier_path``), which is replaced for new classes.

Batch norm has its own policy because "frozen" layers still change in training mode:

- ``train``: every batch norm normalizes with the batch's statistics and updates its
  running averages, also inside frozen stages (their gamma and beta stay fixed);
- ``freeze_stats``: every batch norm runs as at inference: it normalizes with its
  running averages and never changes them; gamma and beta train where their stage does;
- ``freeze_all``: as ``freeze_stats``, and gamma and beta never train.

With ``freeze_stats`` or ``freeze_all`` a frozen stage is a fixed function: its dropout
is off as well, so its output can be computed once and cached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from cnnkit.errors import CnnkitError, unknown_name

__all__ = ["BN_POLICIES", "FreezeReport", "apply_freeze", "head_of", "stages"]

BN_POLICIES = ("train", "freeze_stats", "freeze_all")
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_EXPAND = (nn.Sequential, nn.ModuleList)
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def head_of(model: nn.Module) -> tuple[str, nn.Module]:
    """The model's head: the final linear layer that scores the classes.

    Args:
        model: A cnnkit model (``classifier_path``) or any module ending in ``nn.Linear``.

    Returns:
        ``(dotted name, module)``.
    """
    path = getattr(model, "classifier_path", None)
    if path is not None:
        return path, model.get_submodule(path)
    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            last = (name, m)
    if last is None:
        raise CnnkitError(
            f"{type(model).__name__} has no final nn.Linear to replace; transfer learning "
            "needs a classifier head (cnnkit.models.create builds one)."
        )
    return last


def stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The backbone's stages in forward order (the head and side classifiers excluded).

    Args:
        model: The network.

    Returns:
        ``[(dotted name, module), ...]``; each holds parameters.
    """
    head_name, _ = head_of(model)
    out: list[tuple[str, nn.Module]] = []

    def has_params(m: nn.Module) -> bool:
        return any(True for _ in m.parameters())

    def visit(prefix: str, m: nn.Module, depth: int) -> None:
        for name, child in m.named_children():
            full = f"{prefix}{name}"
            if full == head_name or name.startswith("aux") or not has_params(child):
                continue
            # the head's container (its other layers), or a top-level Sequential: each child
            if head_name.startswith(full + ".") or (isinstance(child, _EXPAND) and depth == 0):
                visit(full + ".", child, depth + 1)
            elif isinstance(child, _BN) and out:  # a batch norm joins the layer before it
                prev_name, prev = out[-1]
                out[-1] = (prev_name, nn.ModuleList([prev, child]))
            else:
                out.append((full, child))

    visit("", model, 0)
    return out


@dataclass
class FreezeReport:
    """What :func:`apply_freeze` did, in numbers.

    Attributes:
        stages: Number of backbone stages.
        frozen_stages: How many of them are frozen.
        trainable: Parameters that train.
        frozen: Parameters that do not.
        bn_layers: Batch-norm layers in the model.
        bn: The batch-norm policy.
        fixed: Whether the frozen part is a fixed function (batch norm frozen, dropout off),
            so its output may be cached.
        notes: What to tell the user.
    """

    stages: int
    frozen_stages: int
    trainable: int
    frozen: int
    bn_layers: int
    bn: str
    fixed: bool
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        """``trainable 850 / non-trainable 61,706 parameters (head only; ...)``."""
        what = (
            "nothing frozen"
            if self.frozen_stages == 0
            else "the whole backbone frozen"
            if self.frozen_stages == self.stages
            else f"the first {self.frozen_stages} of {self.stages} stages frozen"
        )
        bn = f"; batch norm: {self.bn} ({self.bn_layers} layers)" if self.bn_layers else ""
        return (
            f"transfer: {what}: trainable {self.trainable:,} / non-trainable "
            f"{self.frozen:,} parameters{bn}"
        )


def _force_eval(module: nn.Module, when: Any) -> None:
    """Make ``module`` (and every submodule) run in eval mode whenever ``when()`` is true."""

    def hook(m: nn.Module, args: Any) -> None:
        if m.training and when():
            m.training = False

    for sub in module.modules():
        sub.register_forward_pre_hook(hook)


def apply_freeze(
    model: nn.Module, freeze: str | int = "backbone", bn: str = "freeze_stats"
) -> FreezeReport:
    """Freeze the first stages (or the whole backbone) and set the batch-norm policy.

    Frozen parameters get ``requires_grad=False``. A frozen stage also runs in eval mode
    when ``bn`` is not ``train`` (checked at every forward pass, so a stage unfrozen
    later by :func:`~cnnkit.transfer.fine_tune_groups` trains normally again).

    Args:
        model: The network, in place.
        freeze: ``"none"``, ``"backbone"`` (every stage; the head trains) or the number
            of first stages to freeze.
        bn: ``"train"``, ``"freeze_stats"`` or ``"freeze_all"``.

    Returns:
        A :class:`FreezeReport`.
    """
    if bn not in BN_POLICIES:
        raise unknown_name("bn policy", str(bn), BN_POLICIES)
    st = stages(model)
    if freeze == "none":
        k = 0
    elif freeze == "backbone":
        k = len(st)
    elif isinstance(freeze, int) and not isinstance(freeze, bool) and freeze >= 0:
        if freeze > len(st):
            raise CnnkitError(
                f"freeze={freeze}, but {type(model).__name__} has {len(st)} stages; "
                f"pass freeze={len(st)} or freeze=backbone."
            )
        k = freeze
    else:
        raise CnnkitError(
            f"freeze must be none, backbone or a number of stages, got {freeze!r}; "
            "e.g. freeze=backbone."
        )
    _, head = head_of(model)
    head_params = {id(p) for p in head.parameters()}
    for p in model.parameters():
        p.requires_grad_(True)
    frozen_ids: set[int] = set()
    for _, m in st[:k]:
        frozen_ids |= {id(p) for p in m.parameters()}
    if k == len(st):  # the backbone: everything but the head (side classifiers too)
        frozen_ids |= {id(p) for p in model.parameters() if id(p) not in head_params}
    bns = [m for m in model.modules() if isinstance(m, _BN)]
    if bn == "freeze_all":
        for m in bns:
            frozen_ids |= {id(p) for p in m.parameters()}
    for p in model.parameters():
        if id(p) in frozen_ids:
            p.requires_grad_(False)
    if bn != "train":
        for m in bns:
            _force_eval(m, lambda: True)
        for _, m in st[:k]:
            params = list(m.parameters())
            _force_eval(m, lambda params=params: not any(p.requires_grad for p in params))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    rep = FreezeReport(
        stages=len(st),
        frozen_stages=k,
        trainable=trainable,
        frozen=total - trainable,
        bn_layers=len(bns),
        bn=bn,
        # with bn=train a frozen stage keeps training-mode batch norm and dropout
        fixed=bn != "train" or not any(isinstance(m, (*_BN, *_DROPOUT)) for m in model.modules()),
    )
    if trainable == 0:
        raise CnnkitError("nothing would train: the head is frozen too; use freeze=backbone.")
    rep.notes.append(rep.line())
    return rep
