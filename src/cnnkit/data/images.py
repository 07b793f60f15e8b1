"""One image decoder for every loader: files become uint8 arrays the way the model expects.

Pillow reads the file; this module fixes what a bare ``Image.open(...).convert()``
gets wrong: the EXIF orientation a phone camera writes is applied; 16-bit images
are *scaled* to 8 bits (``v * 255 / 65535``) rather than clamped at 255 (Pillow's
``convert("L")`` on an ``I;16`` image saturates everything brighter than 255/65535);
palette and alpha images are composited over a background instead of having their
alpha channel dropped (which reveals whatever colour lies under transparent pixels).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cnnkit.errors import CnnkitError

__all__ = ["IMAGE_SUFFIXES", "decode_image", "to_channels"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def decode_image(
    path: str | os.PathLike, channels: int = 3, *, background: int = 255
) -> np.ndarray:
    """Decode an image file into a uint8 array ``(n_H, n_W, n_C)``.

    Args:
        path: The image file.
        channels: 1 (grayscale) or 3 (RGB).
        background: Grey level (0-255) that transparent pixels are composited over.

    Returns:
        A ``uint8`` array of shape ``(n_H, n_W, channels)``.

    Raises:
        CnnkitError: If the file is missing or cannot be decoded (the path is named).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if channels not in (1, 3):
        raise CnnkitError(f"channels must be 1 or 3, got {channels!r}.")
    p = Path(path)
    try:
        with Image.open(p) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            arr = _to_uint8(im, channels, background)
    except FileNotFoundError:
        raise CnnkitError(f"image {str(p)!r} does not exist.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CnnkitError(
            f"cannot decode image {str(p)!r} ({reason}); remove or replace the file, "
            "or pass on_error=skip to leave it out."
        ) from None
    return arr


def _to_uint8(im, channels: int, background: int) -> np.ndarray:
    from PIL import Image

    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        a = np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)
        return _gray_to(a[..., None], channels)
    if mode == "F":
        a = np.asarray(im).astype(np.float64)
        top = 1.0 if a.max(initial=0) <= 1.0 else 255.0
        a = np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)
        return _gray_to(a[..., None], channels)
    if mode == "1":
        im = im.convert("L")
        mode = "L"
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("LA", "La", "PA"):
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "RGBa"):
        bg = Image.new("RGBA", im.size, (background, background, background, 255))
        im = Image.alpha_composite(bg, im.convert("RGBA")).convert("RGB")
        mode = "RGB"
    if channels == 1:
        if mode != "L":
            im = im.convert("L")
        return np.asarray(im, dtype=np.uint8)[..., None].copy()
    if mode == "L":
        return _gray_to(np.asarray(im, dtype=np.uint8)[..., None], 3)
    if mode != "RGB":
        im = im.convert("RGB")  # CMYK, YCbCr, LAB ...
    return np.asarray(im, dtype=np.uint8).copy()


def _gray_to(a: np.ndarray, channels: int) -> np.ndarray:
    return np.repeat(a, 3, axis=2) if channels == 3 else a


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """Convert a uint8 batch ``(N, n_H, n_W, c)`` to ``channels`` (ITU-R 601 luma for grey).

    Args:
        images: uint8 array with 1 or 3 channels last.
        channels: Wanted channels, 1 or 3.

    Returns:
        The converted array.
    """
    have = images.shape[-1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return np.repeat(images, 3, axis=-1)
    if have == 3 and channels == 1:
        w = np.array([0.299, 0.587, 0.114])
        return np.clip(np.rint(images @ w), 0, 255).astype(np.uint8)[..., None]
    raise CnnkitError(f"cannot convert {have}-channel images to {channels} channels.")
