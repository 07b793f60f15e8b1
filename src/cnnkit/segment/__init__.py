"""Semantic segmentation: U-Net labels every pixel (:mod:`cnnkit.segment.unet`)."""

from cnnkit.segment.unet import UNet

__all__ = ["UNet"]
