"""EfficientNet B0-B7 (Tan and Le 2019): MBConv blocks scaled by compound scaling.

Compound scaling grows depth, width and resolution together with one
coefficient phi: depth ``d = alpha^phi``, width ``w = beta^phi``, resolution
``r = gamma^phi`` with ``alpha = 1.2, beta = 1.1, gamma = 1.15`` chosen so that
``alpha * beta^2 * gamma^2 ~= 2`` (each step of phi about doubles the FLOPs). The
released B1-B7 round these; :data:`VARIANTS` records the values actually used
(torchvision's, whose weights load unchanged) next to the formula's.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from cnnkit.models._base import ClassifierMixin, finish
from cnnkit.models._registry import register_model

_tv = importlib.import_module("torchvision.models.efficientnet")  # module, not function

__all__ = ["ALPHA", "BETA", "GAMMA", "VARIANTS", "EfficientNet", "Variant", "scaling_table"]


class EfficientNet(ClassifierMixin, _tv.EfficientNet):
    """torchvision's EfficientNet with ``forward_features`` and a replaceable head."""

    classifier_path = "classifier.1"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, MBConv stages, 1x1 head conv: ``-> (B, 1280*w, r/32, r/32)``."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool, flatten, dropout + FC."""
        x = torch.flatten(self.avgpool(x), 1)  # (B, C, 1, 1) -> (B, C)
        return self.classifier(x)


ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15


@dataclass(frozen=True)
class Variant:
    """One EfficientNet variant.

    Attributes:
        phi: Compound coefficient.
        width: Width multiplier used (channels x width).
        depth: Depth multiplier used (layers x depth, rounded up).
        resolution: Input size used (n_H = n_W).
        dropout: Dropout before the FC layer.
    """

    phi: int
    width: float
    depth: float
    resolution: int
    dropout: float

    @property
    def formula(self) -> dict[str, float]:
        """What ``alpha^phi``, ``beta^phi`` and ``224 * gamma^phi`` give for this phi."""
        return {
            "depth": round(ALPHA**self.phi, 3),
            "width": round(BETA**self.phi, 3),
            "resolution": round(224 * GAMMA**self.phi, 1),
        }


VARIANTS: dict[str, Variant] = {
    "efficientnet_b0": Variant(0, 1.0, 1.0, 224, 0.2),
    "efficientnet_b1": Variant(1, 1.0, 1.1, 240, 0.2),
    "efficientnet_b2": Variant(2, 1.1, 1.2, 260, 0.3),
    "efficientnet_b3": Variant(3, 1.2, 1.4, 300, 0.3),
    "efficientnet_b4": Variant(4, 1.4, 1.8, 380, 0.4),
    "efficientnet_b5": Variant(5, 1.6, 2.2, 456, 0.4),
    "efficientnet_b6": Variant(6, 1.8, 2.6, 528, 0.5),
    "efficientnet_b7": Variant(7, 2.0, 3.1, 600, 0.5),
}


def scaling_table() -> str:
    """The variants as a text table: phi, width, depth, resolution, dropout, and the formula's.

    Returns:
        One line per variant.
    """
    lines = [
        f"{'model':<16} {'phi':>3} {'width':>6} {'depth':>6} {'res':>5} {'dropout':>7}   "
        f"formula: beta^phi alpha^phi 224*gamma^phi"
    ]
    for name, v in VARIANTS.items():
        f = v.formula
        lines.append(
            f"{name:<16} {v.phi:>3} {v.width:>6.1f} {v.depth:>6.1f} {v.resolution:>5} "
            f"{v.dropout:>7.1f}   {f['width']:>14.3f} {f['depth']:>9.3f} {f['resolution']:>13.1f}"
        )
    return "\n".join(lines)


def _efficientnet(
    name: str, num_classes: int, in_channels: int, weights: str | None, **kw: Any
) -> EfficientNet:
    v = VARIANTS[name]
    setting, last_channel = _tv._efficientnet_conf(name, width_mult=v.width, depth_mult=v.depth)
    if v.phi >= 5:  # torchvision's (and the reference's) BN settings for B5-B7
        kw.setdefault("norm_layer", partial(nn.BatchNorm2d, eps=0.001, momentum=0.01))
    model = EfficientNet(
        setting,
        kw.pop("dropout", v.dropout),
        last_channel=last_channel,
        num_classes=num_classes,
        **kw,
    )
    return finish(model, name=name, torchvision_name=name, in_channels=in_channels, weights=weights)


def _register(name: str) -> None:
    v = VARIANTS[name]

    @register_model(
        name,
        family="efficientnet",
        input_size=(v.resolution, v.resolution, 3),
        test_input=(32, 32, 3),
        paper="Tan & Le 2019, EfficientNet: rethinking model scaling for CNNs",
        torchvision=name,
        meta=asdict(v),
    )
    def builder(
        num_classes: int = 1000, in_channels: int = 3, weights: str | None = None, **kw: Any
    ) -> EfficientNet:
        return _efficientnet(name, num_classes, in_channels, weights, **kw)

    builder.__name__ = name
    builder.__doc__ = (
        f"{name}: phi={v.phi}, width {v.width}, depth {v.depth}, {v.resolution}x{v.resolution}, "
        f"dropout {v.dropout}."
    )
    globals()[name] = builder


for _name in VARIANTS:
    _register(_name)
