"""Reusable ConvNet layers in the course's terms, built on torchvision's own blocks.

Where torchvision has the block, the class here *is* torchvision's (a subclass
with course-style arguments: ``f``, ``s``, ``p``, ``in_channels``,
``out_channels``), so ``state_dict`` keys match torchvision's and its
pretrained weights load.

- :class:`ConvBNAct`: conv -> batch norm -> activation, 1D/2D/3D.
- :class:`ResidualBlock`: ResNet's basic or bottleneck block with an identity
  or projection (``W_s``) shortcut.
- :class:`InceptionModule`: 1x1 / 3x3 / 5x5 / pool branches stacked on channels.
- :class:`DepthwiseSeparableConv`: MobileNet v1's depthwise + pointwise conv.
- :class:`InvertedResidual`: MobileNet v2's expand -> depthwise -> linear project.
- :class:`MBConv`: EfficientNet's inverted residual with squeeze-and-excitation.
- :class:`SqueezeExcitation`: torchvision's SE block.
- :class:`DoubleConv`, :class:`UNetDown`, :class:`UNetUp`: U-Net's levels.
"""

from __future__ import annotations

from cnnkit.blocks.conv import ACTIVATIONS, ConvBNAct
from cnnkit.blocks.inception import InceptionModule
from cnnkit.blocks.mobile import DepthwiseSeparableConv, InvertedResidual, MBConv, SqueezeExcitation
from cnnkit.blocks.residual import BasicResidualBlock, BottleneckResidualBlock, ResidualBlock
from cnnkit.blocks.unet import DoubleConv, UNetDown, UNetUp

__all__ = [
    "ACTIVATIONS",
    "BasicResidualBlock",
    "BottleneckResidualBlock",
    "ConvBNAct",
    "DepthwiseSeparableConv",
    "DoubleConv",
    "InceptionModule",
    "InvertedResidual",
    "MBConv",
    "ResidualBlock",
    "SqueezeExcitation",
    "UNetDown",
    "UNetUp",
]
