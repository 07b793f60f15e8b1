"""Transfer learning runs: build from pretrained weights, freeze, cache, fine-tune.

:func:`train` is ``cnnkit train pretrained=... freeze=... bn=...``: it hands
:func:`cnnkit.train.classify.train` a builder (the pretrained network with a new head,
the data prepared as the weights expect) and a plan (what ``fit`` trains: the head on
cached features, or parameter groups for fine-tuning). One trainer serves it all, with
its checkpoints, resume and early stopping.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from cnnkit.data import Data
from cnnkit.errors import CnnkitError
from cnnkit.train.classify import FitPlan, RunResult, load_splits, prepare
from cnnkit.train.classify import resume as classify_resume
from cnnkit.train.classify import train as classify_train
from cnnkit.train.config import TrainConfig
from cnnkit.transfer.features import HeadOnFeatures, cached_features
from cnnkit.transfer.freezing import apply_freeze, head_of, stages
from cnnkit.transfer.pretrained import load_source, with_preprocess

__all__ = ["auto_unfreeze", "build", "fine_tune_groups", "plan", "resume", "train"]


def _policies(cfg: TrainConfig) -> tuple[str | int, str]:
    """``freeze`` and ``bn`` with ``auto`` resolved."""
    freeze = cfg.freeze
    if freeze == "auto":
        freeze = "backbone" if cfg.pretrained or cfg.fine_tune else "none"
    if cfg.fine_tune:
        freeze = "backbone"  # the head first; fine_tune_groups unfreezes later
    bn = cfg.bn if cfg.bn != "auto" else ("freeze_stats" if cfg.pretrained else "train")
    return freeze, bn


def build(cfg: TrainConfig) -> tuple[Data, nn.Module, list[str]]:
    """The data, prepared as the pretrained weights expect, and the network with a new head.

    Args:
        cfg: Settings (``pretrained``, ``freeze``, ``bn`` ...).

    Returns:
        ``(data, model, notes)`` as :func:`cnnkit.train.classify.prepare` returns them.
    """
    from cnnkit.train.classify import check

    check(cfg)
    notes: list[str] = []
    if cfg.pretrained is None:
        data, model, notes = prepare(cfg)
    else:
        src = load_source(cfg.pretrained, cfg.model, cfg.model_args)
        if src.name != cfg.model or src.model_args != cfg.model_args:
            notes.append(f"model {src.name}: the architecture of pretrained={cfg.pretrained}")
            # the run is of the weights' architecture: config.yaml and the weights say so
            cfg.model, cfg.model_args = src.name, dict(src.model_args)
        pre = src.preprocess
        if pre is None:
            data, _, notes0 = prepare(cfg)
            notes += notes0
            notes.append(
                f"{src.origin} records no preprocessing; the data's own mean and std are used"
            )
        else:
            if cfg.size is not None:
                want = [cfg.size, cfg.size] if isinstance(cfg.size, int) else list(cfg.size)
                if want != list(pre.size):
                    raise CnnkitError(
                        f"pretrained={cfg.pretrained} expects {pre.size[0]}x{pre.size[1]} "
                        f"inputs, size={cfg.size} was given; drop size= (the weights' size is "
                        "used automatically)."
                    )
            data = with_preprocess(load_splits(cfg, tuple(pre.size), pre.channels), pre)
            notes.append(
                f"preprocessing of the pretrained weights: {pre.size[0]}x{pre.size[1]}, "
                f"{pre.channels} channel(s), mean {_fmt(pre.mean)}, std {_fmt(pre.std)} "
                "(bilinear resize)"
            )
            if src.interpolation != "bilinear":
                notes.append(
                    f"the weights were trained on {src.interpolation}-resized images; cnnkit "
                    "resizes bilinearly, which can cost a little accuracy"
                )
        model = src.model
        K = data.info.num_classes
        outputs = 1 if K == 2 and cfg.loss in ("auto", "bce") else K
        _, head = head_of(model)
        same = src.classes is not None and list(src.classes) == list(data.info.classes)
        if not (same and head.out_features == outputs):
            torch.manual_seed(cfg.seed)
            model.reset_classifier(outputs)  # type: ignore[operator]
            notes.append(
                f"new head: {head.in_features} -> {outputs} for {K} classes "
                f"(the weights' head had {head.out_features} outputs)"
            )
    freeze, bn = _policies(cfg)
    rep = apply_freeze(model, freeze, bn)
    notes += rep.notes
    model._cnnkit_freeze = rep  # type: ignore[assignment]  # read by plan()
    return data, model, notes


def _fmt(v: Any) -> str:
    return "(" + ", ".join(f"{x:.3g}" for x in v) + ")"


def auto_unfreeze(n_train: int, num_classes: int, n_stages: int) -> tuple[int, str]:
    """The course's rule for how much to fine-tune: more data, unfreeze more.

    Args:
        n_train: Training examples.
        num_classes: Classes.
        n_stages: Stages of the backbone.

    Returns:
        ``(stages to unfreeze, why)``.
    """
    per = n_train / max(num_classes, 1)
    if per < 100:
        return 1, f"{per:.0f} training images per class (< 100): the last stage only"
    if per < 1000:
        k = max(1, n_stages // 2)
        return k, f"{per:.0f} training images per class (< 1,000): the last {k} stages"
    return n_stages, f"{per:.0f} training images per class: every stage"


def fine_tune_groups(
    model: nn.Module, unfreeze: int, head_epochs: int, lr_mult: float
) -> tuple[list[dict[str, Any]], list[str]]:
    """Parameter groups: the head from epoch 0, then the last stages at lower rates.

    The head trains at ``lr``; the last stage joins at epoch ``head_epochs`` with
    ``lr_mult * lr``, the one before it with ``lr_mult**2 * lr``, and so on.

    Args:
        model: The network (its backbone frozen by :func:`apply_freeze`).
        unfreeze: Stages to unfreeze, counted from the last.
        head_epochs: Epochs of head-only training.
        lr_mult: Factor between consecutive stages' learning rates.

    Returns:
        ``(groups for fit, notes)``.
    """
    st = stages(model)
    if not 0 <= unfreeze <= len(st):
        raise CnnkitError(
            f"unfreeze={unfreeze}, but the model has {len(st)} stages; pass at most {len(st)}."
        )
    _, head = head_of(model)
    groups: list[dict[str, Any]] = [{"params": [p for p in head.parameters()], "lr_mult": 1.0}]
    taken = {id(p) for p in head.parameters()}
    names = []
    for i, (name, m) in enumerate(reversed(st[len(st) - unfreeze :]), start=1):
        params = [p for p in m.parameters() if id(p) not in taken]
        # batch-norm gamma/beta stay fixed under bn=freeze_all (requires_grad off already)
        bn_fixed = {id(p) for p in params if not p.requires_grad and _is_bn_param(m, p)}
        params = [p for p in params if id(p) not in bn_fixed]
        taken |= {id(p) for p in params}
        groups.append({"params": params, "lr_mult": lr_mult**i, "start_epoch": head_epochs})
        names.append(f"{name} x{lr_mult**i:.3g}")
    note = (
        f"fine_tune: the head alone for {head_epochs} epoch(s), then the last {unfreeze} "
        f"stage(s) at lower learning rates ({', '.join(names)})"
        if unfreeze
        else "fine_tune: the head alone (unfreeze=0)"
    )
    return groups, [note]


def _is_bn_param(stage: nn.Module, p: nn.Parameter) -> bool:
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and any(q is p for q in m.parameters())
        for m in stage.modules()
    )


def plan(cfg: TrainConfig, data: Data, model: nn.Module) -> FitPlan:
    """What ``fit`` trains: the head on cached features, fine-tuning groups, or the model.

    Args:
        cfg: Settings.
        data: The prepared data.
        model: The network from :func:`build`.

    Returns:
        A :class:`~cnnkit.train.classify.FitPlan`.
    """
    from cnnkit.train.config import AUG_OPS

    rep = getattr(model, "_cnnkit_freeze", None)
    if rep is None:
        raise CnnkitError("plan() needs the model from cnnkit.transfer.build(cfg).")
    # what Augment.active says, from the settings alone (fit builds the Augment, and fits
    # its PCA colour, once)
    augmenting = any(cfg.resolved(k) for k in AUG_OPS)
    whole = rep.frozen_stages == rep.stages
    reasons = []
    if not whole:
        reasons.append("the backbone is not wholly frozen")
    if not rep.fixed:
        reasons.append("bn=train changes the frozen batch norms")
    if augmenting:
        reasons.append("augmentation changes the images every epoch (aug=none turns it off)")
    if cfg.fine_tune:
        reasons.append("fine_tune unfreezes stages")
    if cfg.cache_features is True and reasons:
        raise CnnkitError(f"cache_features=true, but {reasons[0]}; drop cache_features.")
    if cfg.fine_tune:
        unfreeze, why = cfg.unfreeze, "as given"
        if unfreeze == "auto":
            unfreeze, why = auto_unfreeze(len(data.train), data.info.num_classes, rep.stages)
        groups, notes = fine_tune_groups(model, int(unfreeze), cfg.head_epochs, cfg.lr_mult)
        notes[0] += f" [unfreeze: {why}]"
        return FitPlan(model, data.train, data.dev, param_groups=groups, notes=notes)
    if cfg.cache_features is True or (cfg.cache_features == "auto" and not reasons):
        sets = {k: v for k, v in (("train", data.train), ("dev", data.dev)) if v is not None}
        feats, path, hit = cached_features(model, sets)
        how = "read from" if hit else "computed once and stored in"
        n = sum(len(s) for s in sets.values())
        note = (
            f"cached features: the frozen backbone's output for {n:,} images {how} {path}; "
            "each epoch trains only the head"
        )
        return FitPlan(
            HeadOnFeatures(model),
            feats["train"],
            feats.get("dev"),
            notes=[note],
            settings={"workers": 0},  # in memory already: no worker processes
        )
    return FitPlan(model, data.train, data.dev)


def train(cfg: TrainConfig | None = None, **settings: Any) -> RunResult:
    """Train with transfer learning and leave a run folder (``cnnkit train pretrained=...``).

    Args:
        cfg: Settings; ``pretrained``, ``freeze``, ``bn``, ``fine_tune``, ``head_epochs``,
            ``unfreeze``, ``lr_mult``, ``cache_features`` are the transfer ones.
        **settings: Single settings overriding ``cfg``.

    Returns:
        A :class:`~cnnkit.train.classify.RunResult`.
    """
    return classify_train(cfg, build=build, plan=plan, **settings)


def resume(run_dir: str | os.PathLike, **settings: Any) -> RunResult:
    """Continue an interrupted transfer run (``cnnkit train resume=RUN``).

    Args:
        run_dir: The run folder.
        **settings: As for :func:`cnnkit.train.classify.resume`.

    Returns:
        A :class:`~cnnkit.train.classify.RunResult`.
    """
    return classify_resume(run_dir, build=build, plan=plan, **settings)
