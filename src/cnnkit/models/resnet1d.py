"""A residual ConvNet for 1D signals (He et al. 2016's ResNet with 1D filters).

The course's ideas carry over to signals unchanged: a filter of size ``f`` slides
along one axis instead of two, so an input ``n x n_C`` gives
``floor((n + 2p - f)/s) + 1`` outputs per filter, and a conv layer has
``(f*n_C_prev + 1)*n_C`` parameters (``f*n_C_prev*n_C`` without the bias that batch
norm replaces). Inputs are ``(B, n_C, n)`` tensors: a time series with ``n`` steps
and ``n_C`` channels (sensor axes, ECG leads, stereo audio, I/Q radio samples).

For the default 256x2 input and 10 classes:

    256x2 -> stem conv f=7 s=2, 32 filters + BN + ReLU -> 128x32
    -> max-pool f=3 s=2 p=1 -> 64x32
    -> layer1: 2 basic blocks (two f=3 convs + shortcut), 32 filters -> 64x32
    -> layer2: 2 basic blocks, 64 filters, the first with s=2 -> 32x64
    -> layer3: 2 basic blocks, 128 filters, the first with s=2 -> 16x128
    -> global average pool -> 128 -> FC -> 10

241,546 parameters: 448 + 64 (stem conv, BN) + 12,544 + 45,696 + 181,504 (the
stages; each stride or width change adds a 1x1 projection shortcut
``n_C_prev*n_C + 2*n_C``) + 1,290 (FC). Any length ``n`` works (the global pool
makes the head independent of it). It trains on a CPU in minutes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cnnkit.blocks import ConvBNAct, ResidualBlock
from cnnkit.errors import CnnkitError
from cnnkit.models._base import ClassifierMixin, finish
from cnnkit.models._registry import register_model

__all__ = ["CONFIGS", "ResNet1d", "resnet1d"]


class ResNet1d(ClassifierMixin, nn.Module):
    """ResNet for signals: stem conv, max-pool, stages of basic residual blocks, FC.

    Args:
        num_classes: Outputs of the FC layer.
        in_channels: Input channels ``n_C`` of the signal.
        widths: Filters ``n_C`` of each stage; every stage after the first halves
            ``n`` (stride 2 on its first block).
        blocks: Basic residual blocks per stage (one entry per width).
        stem_f: Filter size of the stem conv (stride 2, 'same'-style padding).
        stem_pool: Add the f=3, s=2 max-pool after the stem (halves ``n`` again).
        dropout: Dropout probability before the FC layer.

    Raises:
        CnnkitError: On widths or blocks that are not positive integers, lists of
            different lengths, or a dropout outside [0, 1).
    """

    classifier_path = "fc"

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 2,
        widths: Sequence[int] = (32, 64, 128),
        blocks: Sequence[int] = (2, 2, 2),
        stem_f: int = 7,
        stem_pool: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        widths, blocks = _check_stages(widths, blocks)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise CnnkitError(f"resnet1d dropout must be a number in [0, 1), got {dropout!r}.")
        if not 0 <= dropout < 1:
            raise CnnkitError(f"resnet1d dropout must be in [0, 1), got {dropout!r}; e.g. 0.2.")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["stem"] = ConvBNAct(in_channels, widths[0], f=stem_f, s=2, dims=1)  # n -> n/2
        if stem_pool:
            layers["pool"] = nn.MaxPool1d(kernel_size=3, stride=2, padding=1)  # -> n/4
        n_C_prev = widths[0]
        for i, (n_C, k) in enumerate(zip(widths, blocks, strict=True)):
            layers[f"layer{i + 1}"] = _stage(n_C_prev, n_C, k, s=1 if i == 0 else 2)
            n_C_prev = n_C
        self.features = nn.Sequential(layers)
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(n_C_prev, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and stages: ``(B, n_C, 256) -> (B, 128, 16)`` with the defaults.

        Args:
            x: Signals ``(B, n_C, n)``.

        Returns:
            The last feature map ``(B, widths[-1], n')``.

        Raises:
            CnnkitError: If ``x`` is not a batch of 1D signals.
        """
        if x.dim() != 3:
            raise CnnkitError(
                f"resnet1d takes signals shaped (B, n_C, n) (course order n x n_C) but got a "
                f"{x.dim()}D tensor {tuple(x.shape)}; use a 2D/3D model for images or volumes."
            )
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool, flatten, dropout, FC: ``(B, C, n') -> (B, num_classes)``."""
        x = self.avgpool(x)
        x = torch.flatten(x, 1)  # (B, C, 1) -> (B, C)
        return self.fc(self.dropout(x))


def _stage(n_C_prev: int, n_C: int, k: int, s: int) -> nn.Sequential:
    """``k`` basic 1D residual blocks; the first has stride ``s`` (and a projection if needed)."""
    return nn.Sequential(
        *(
            ResidualBlock(n_C_prev if j == 0 else n_C, n_C, s=s if j == 0 else 1, dims=1)
            for j in range(k)
        )
    )


def _check_stages(
    widths: Sequence[int], blocks: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Check the per-stage widths and block counts: positive integers, one of each per stage."""
    for what, values in (("widths", widths), ("blocks", blocks)):
        ok = isinstance(values, (list, tuple)) and len(values) > 0
        if not ok or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values
        ):
            raise CnnkitError(
                f"resnet1d {what} must be a non-empty list of positive integers, one per "
                f"stage (e.g. widths=[32, 64, 128] blocks=[2, 2, 2]), got {values!r}."
            )
    if len(widths) != len(blocks):
        raise CnnkitError(
            f"resnet1d has {len(widths)} widths but {len(blocks)} block counts; give one "
            "block count per stage, e.g. widths=[32, 64] blocks=[2, 2]."
        )
    return tuple(widths), tuple(blocks)


# name -> (filters per stage, basic blocks per stage)
CONFIGS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "resnet1d": ((32, 64, 128), (2, 2, 2)),
}


def _resnet1d(
    name: str, num_classes: int, in_channels: int, weights: str | None, **kw: Any
) -> ResNet1d:
    widths, blocks = CONFIGS[name]
    kw.setdefault("widths", widths)
    kw.setdefault("blocks", blocks)
    model = ResNet1d(num_classes=num_classes, in_channels=in_channels, **kw)
    return finish(model, name=name, in_channels=in_channels, weights=weights)


@register_model(
    "resnet1d",
    family="resnet1d",
    input_size=(256, 2),
    test_input=(64, 2),
    num_classes=10,
    paper="He et al. 2016, Deep residual learning for image recognition (with 1D filters)",
    dims=1,
    meta={"widths": list(CONFIGS["resnet1d"][0]), "blocks": list(CONFIGS["resnet1d"][1])},
)
def resnet1d(
    num_classes: int = 10, in_channels: int = 2, weights: str | None = None, **kw: Any
) -> ResNet1d:
    """ResNet for ``n x n_C`` signals (241,546 parameters for 2 channels and 10 classes).

    Args:
        num_classes: Classes.
        in_channels: Channels ``n_C`` of the signal.
        weights: ``None`` or a ``.safetensors`` / ``.pth`` file of a trained resnet1d.
        **kw: ``widths``, ``blocks``, ``stem_f``, ``stem_pool``, ``dropout``
            (see :class:`ResNet1d`).

    Returns:
        The model.
    """
    return _resnet1d("resnet1d", num_classes, in_channels, weights, **kw)
