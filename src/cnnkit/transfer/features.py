"""Cached features: run the frozen backbone once, then train only the head.

With the whole backbone frozen and nothing making it vary (no augmentation, batch norm
frozen, dropout off in the frozen part), every epoch would compute the same backbone
outputs again. :func:`cached_features` computes them once per split, stores them as
safetensors under ``$CNNKIT_CACHE/features/<key>.safetensors`` (default
``~/.cache/cnnkit``), keyed by the backbone's weights, the preprocessing and the images,
and reads them back on the next run with the same three. :class:`HeadOnFeatures` then
trains the head on them; its ``state_dict`` is the whole network's, so the run's
checkpoints hold the whole network.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from cnnkit.data import ImageSet
from cnnkit.transfer.freezing import head_of

__all__ = ["HeadOnFeatures", "cache_dir", "cached_features", "features_of"]

FORMAT = "cnnkit.features.v1"


def cache_dir() -> Path:
    """``$CNNKIT_CACHE/features`` (default ``$XDG_CACHE_HOME/cnnkit/features``)."""
    from cnnkit.train.speed import cache_root

    return cache_root() / "features"


class HeadOnFeatures(nn.Module):
    """The head of ``model`` applied to cached features; saves and loads as ``model``.

    Args:
        model: The whole network (backbone frozen); shared, not copied.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.head_name, self.head = head_of(model)
        object.__setattr__(self, "whole", model)  # not a submodule: keys stay the model's

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """Class scores from the head's input ``f`` of shape (B, D)."""
        return self.head(f)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """The whole network's state (so a checkpoint restores the whole network)."""
        return self.whole.state_dict(*args, **kwargs)

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True, assign: bool = False):  # type: ignore[override]
        """Load the whole network's state."""
        return self.whole.load_state_dict(state, strict=strict, assign=assign)

    def named_parameters(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, nn.Parameter]]:  # type: ignore[override]
        """The head's parameters (under the whole network's names)."""
        for name, p in self.head.named_parameters():
            yield f"{self.head_name}.{name}", p


def features_of(model: nn.Module, data: ImageSet, batch: int = 256) -> torch.Tensor:
    """The input of ``model``'s head for every image of ``data`` (model in eval mode).

    Args:
        model: The network.
        data: Images, with their preprocessing.
        batch: Images per forward pass.

    Returns:
        float32 ``(N, D)``.
    """
    _, head = head_of(model)
    got: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda m, args: got.append(args[0].detach()))
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for i in range(0, len(data), batch):
                model(data.preprocess.normalize(data.images[i : i + batch]))
    finally:
        handle.remove()
        model.train(was)
    # (B, D, ...) -> (B, D*...) only when the head's input is not already flat
    return torch.cat([g.reshape(g.shape[0], -1) for g in got]).float()


def _key(model: nn.Module, sets: Mapping[str, ImageSet]) -> str:
    """Cache key: the frozen network's tensors, the preprocessing and the images."""
    h = hashlib.sha256(FORMAT.encode())
    _, head = head_of(model)
    head_ids = {id(t) for t in head.state_dict(keep_vars=True).values()}
    body = {k: v for k, v in model.state_dict(keep_vars=True).items() if id(v) not in head_ids}
    h.update(type(model).__name__.encode())
    h.update(fingerprint_tensors(body).encode())
    for name, ds in sorted(sets.items()):
        h.update(name.encode())
        h.update(json.dumps(ds.preprocess.to_dict(), sort_keys=True).encode())
        h.update(str(tuple(ds.images.shape)).encode())
        h.update(ds.images.contiguous().numpy().tobytes())
        h.update(ds.labels.contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def fingerprint_tensors(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].detach().cpu().contiguous().reshape(-1)  # 0-dim counts too
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def cached_features(
    model: nn.Module, sets: Mapping[str, ImageSet], batch: int = 256
) -> tuple[dict[str, Dataset], str, bool]:
    """Each split's head inputs, computed once and cached on disk.

    Args:
        model: The network (its backbone frozen; the head's weights are not part of the key).
        sets: Splits by name (``train``, ``dev``, ...).
        batch: Images per forward pass.

    Returns:
        ``({split: TensorDataset(features, labels)}, cache file, whether it was read
        from the cache)``.
    """
    from safetensors.torch import load_file, save_file

    key = _key(model, sets)
    path = cache_dir() / f"{key}.safetensors"
    feats: dict[str, torch.Tensor] = {}
    hit = False
    if path.is_file():
        try:
            loaded = load_file(str(path))
            if all(f"{k}.features" in loaded for k in sets):
                feats = {k: loaded[f"{k}.features"] for k in sets}
                hit = True
        except Exception:  # a torn cache file: compute again
            feats = {}
    if not hit:
        feats = {k: features_of(model, ds, batch) for k, ds in sets.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        save_file(
            {f"{k}.features": v.contiguous() for k, v in feats.items()},
            str(tmp),
            metadata={"format": FORMAT},
        )
        os.replace(tmp, path)
    out: dict[str, Dataset] = {k: TensorDataset(feats[k], sets[k].labels) for k in sets}
    return out, str(path), hit
