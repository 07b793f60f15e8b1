"""The inception module (GoogLeNet): several filter sizes side by side, stacked on channels."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.googlenet import BasicConv2d, Inception

from cnnkit.blocks._checks import positive_int
from cnnkit.errors import CnnkitError

__all__ = ["InceptionModule"]


class InceptionModule(Inception):
    """The course's inception module: four branches concatenated on channels.

    Branches (every conv is followed by batch norm and ReLU; all keep
    ``n_H x n_W``):

    1. ``1x1`` conv to ``ch1x1`` channels;
    2. ``1x1`` conv to ``ch3x3red`` (the bottleneck that cuts the cost), then
       ``3x3`` (``p=1``) to ``ch3x3``;
    3. ``1x1`` conv to ``ch5x5red``, then ``5x5`` (``p=2``) to ``ch5x5``;
    4. ``3x3`` max pool (``s=1``, ``p=1``), then ``1x1`` conv to ``pool_proj``
       (shrinking the pooled channels).

    Output channels: ``n_C = ch1x1 + ch3x3 + ch5x5 + pool_proj``.

    This subclasses ``torchvision.models.googlenet.Inception`` (same
    ``branch1 .. branch4`` submodules and ``state_dict`` keys, batch norm with
    ``eps=0.001``). One difference: torchvision's "5x5" branch uses a **3x3**
    kernel (a known bug kept so its pretrained GoogLeNet weights still load,
    pytorch/vision#906). Here the branch is a true 5x5 by default; pass
    ``kernel_5x5=3`` to get torchvision's module exactly (and load its weights).

    Args:
        in_channels: ``n_C_prev`` of the input.
        ch1x1: Filters of the 1x1 branch.
        ch3x3red: 1x1 reduction before the 3x3 conv.
        ch3x3: Filters of the 3x3 conv.
        ch5x5red: 1x1 reduction before the 5x5 conv.
        ch5x5: Filters of the 5x5 conv.
        pool_proj: Filters of the 1x1 conv after max pooling.
        kernel_5x5: Kernel size of the "5x5" branch (odd; padding ``(f - 1)/2``).

    Raises:
        CnnkitError: On a non-positive channel count or an even ``kernel_5x5``.
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        kernel_5x5: int = 5,
    ) -> None:
        for name, v in (
            ("in_channels", in_channels),
            ("ch1x1", ch1x1),
            ("ch3x3red", ch3x3red),
            ("ch3x3", ch3x3),
            ("ch5x5red", ch5x5red),
            ("ch5x5", ch5x5),
            ("pool_proj", pool_proj),
        ):
            positive_int(name, v)
        positive_int("kernel_5x5", kernel_5x5)
        if kernel_5x5 % 2 == 0:
            raise CnnkitError(
                f"kernel_5x5 must be odd so the branch keeps n_H x n_W, got {kernel_5x5}: "
                "use 5 or 3."
            )
        super().__init__(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)
        if kernel_5x5 != 3:
            self.branch3[1] = BasicConv2d(
                ch5x5red, ch5x5, kernel_size=kernel_5x5, padding=(kernel_5x5 - 1) // 2
            )
        self.in_channels = in_channels
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj
        self.kernel_5x5 = kernel_5x5

    def forward(self, x: Tensor) -> Tensor:
        """Run the four branches and stack them on channels.

        Args:
            x: Input of shape ``(B, n_C_prev, n_H, n_W)``.

        Returns:
            Output of shape ``(B, ch1x1 + ch3x3 + ch5x5 + pool_proj, n_H, n_W)``.
        """
        outputs = self._forward(x)
        # 4 x (B, C_i, H, W) -> (B, sum C_i, H, W)
        return torch.cat(outputs, 1)
