"""GoogLeNet / Inception v1 (Szegedy et al. 2015), with its two side-branch classifiers.

In training the side branches (after inception 4a and 4d) predict the classes
too; their losses are added to the main loss with weight 0.3 (the paper's) by
:meth:`GoogLeNet.compute_loss`. At inference they are not run. torchvision's
definition, so its weights load (they come without the side branches:
``aux_logits=False``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from cnnkit.models._base import ClassifierMixin, finish
from cnnkit.models._registry import register_model

_tv = importlib.import_module("torchvision.models.googlenet")  # module, not function

__all__ = ["GoogLeNet", "GoogLeNetOutputs", "googlenet"]

GoogLeNetOutputs = _tv.GoogLeNetOutputs


class GoogLeNet(ClassifierMixin, _tv.GoogLeNet):
    """torchvision's GoogLeNet with ``forward_features``, a replaceable head and the aux loss.

    Args:
        num_classes: Classes.
        aux_logits: Build the two side-branch classifiers (used in training only).
        aux_weight: Weight of each side-branch loss in :meth:`compute_loss`.
        **kw: torchvision's options (``transform_input``, ``dropout``, ``dropout_aux``).
    """

    classifier_path = "fc"
    # side branches may be absent from (or extra in) a weights file: they are training aids
    optional_prefixes = ("aux1.", "aux2.")

    def __init__(
        self, num_classes: int = 1000, aux_logits: bool = True, aux_weight: float = 0.3, **kw: Any
    ) -> None:
        kw.setdefault("init_weights", True)
        super().__init__(num_classes=num_classes, aux_logits=aux_logits, **kw)
        self.aux_weight = aux_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:
        """torchvision's forward: logits, or ``GoogLeNetOutputs`` with the side branches."""
        return _tv.GoogLeNet.forward(self, x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Main path without the side branches: ``(B, 3, 224, 224) -> (B, 1024, 7, 7)``."""
        x = self._transform_input(x)
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4c(self.inception4b(self.inception4a(x)))
        x = self.maxpool4(self.inception4e(self.inception4d(x)))
        return self.inception5b(self.inception5a(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool, dropout, FC."""
        x = torch.flatten(self.avgpool(x), 1)  # (B, 1024, 1, 1) -> (B, 1024)
        return self.fc(self.dropout(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the main head and, when present, both side-branch heads."""
        super().reset_classifier(num_classes)
        for aux in (self.aux1, self.aux2):
            if aux is not None:
                aux.fc2 = torch.nn.Linear(aux.fc2.in_features, num_classes)

    def compute_loss(
        self,
        outputs: torch.Tensor | GoogLeNetOutputs,
        target: torch.Tensor,
        loss_fn: Callable[..., torch.Tensor] = F.cross_entropy,
    ) -> torch.Tensor:
        """``J = J_main + aux_weight * (J_aux1 + J_aux2)`` in training, ``J_main`` otherwise.

        Args:
            outputs: What ``forward`` returned.
            target: Class indices.
            loss_fn: Loss of one classifier.

        Returns:
            The scalar loss.
        """
        if isinstance(outputs, GoogLeNetOutputs):
            main = loss_fn(outputs.logits, target)
            aux = loss_fn(outputs.aux_logits1, target) + loss_fn(outputs.aux_logits2, target)
            return main + self.aux_weight * aux
        return loss_fn(outputs, target)


@register_model(
    "googlenet",
    family="googlenet",
    input_size=(224, 224, 3),
    test_input=(32, 32, 3),
    paper="Szegedy et al. 2015, Going deeper with convolutions",
    torchvision="googlenet",
)
def googlenet(
    num_classes: int = 1000,
    in_channels: int = 3,
    weights: str | None = None,
    aux_logits: bool | None = None,
    **kw: Any,
) -> GoogLeNet:
    """GoogLeNet (Inception v1). Side branches on by default, off when loading weights."""
    if aux_logits is None:
        aux_logits = weights is None
    model = GoogLeNet(num_classes=num_classes, aux_logits=aux_logits, **kw)
    return finish(
        model,
        name="googlenet",
        torchvision_name="googlenet",
        in_channels=in_channels,
        weights=weights,
    )
