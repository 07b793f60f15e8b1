"""One image decoder for every loader: files become uint8 arrays the way the model expects.

Pillow reads the file; this module fixes what a bare ``Image.open(...).convert()``
gets wrong or leaves open:

- Only raster formats are read: PNG, JPEG, BMP, GIF, TIFF, WebP and PPM/PGM
  (:data:`ALLOWED_FORMATS`, Pillow's ``formats=``); an EPS, PSD or anything else named
  ``.png`` is refused, never handed to another plugin.
- The pixel count is checked from the header, before any pixel is decoded: an image
  larger than ``max_pixels`` (default :data:`MAX_PIXELS` = 2**26, about 67 million) is
  refused at once, in bounded memory (a decompression bomb).
- A PNG's chunk checksums (CRC) are verified, the image data's included (Pillow
  skips those), as libpng does.
- The EXIF orientation a phone camera writes is applied.
- 16-bit images are *scaled* to 8 bits (``v * 255 / 65535``) rather than clamped at
  255 (Pillow's ``convert("L")`` on an ``I;16`` image saturates everything brighter
  than 255/65535).
- Palette and alpha images are composited over a background instead of having their
  alpha channel dropped (which reveals whatever colour lies under transparent pixels).
- CMYK JPEGs (Adobe's inverted convention included) become RGB or grey
  (``R = 255 * (1 - C) * (1 - K)``; an embedded ICC profile is not applied).
- Multi-frame files (animated GIF / WebP / PNG, multi-page TIFF) give their first frame.

Input files are only read, never rewritten. Every failure is a :class:`ImageDecodeError`
(a :class:`~cnnkit.errors.CnnkitError`) whose one-sentence message names the file.
"""

from __future__ import annotations

import os
import re
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnkit.errors import CnnkitError

__all__ = [
    "ALLOWED_FORMATS",
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "BadFile",
    "ImageDecodeError",
    "decode_image",
    "to_channels",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: Pillow format names :func:`decode_image` reads (Pillow's PPM plugin also reads PGM).
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
#: Default largest image, in pixels (n_H * n_W), that :func:`decode_image` decodes.
MAX_PIXELS = 2**26
_FORMAT_NAMES = "PNG, JPEG, BMP, GIF, TIFF, WebP or PPM/PGM"
_FIX = "remove or replace the file, or pass on_error=skip to leave it out"


@dataclass(frozen=True)
class BadFile:
    """A file that could not be decoded, and why (plain strings: JSON- and CSV-friendly).

    ``path, reason = bad`` unpacks it.

    Attributes:
        path: The file.
        reason: What is wrong with it, e.g. ``"image file is truncated"``.
    """

    path: str
    reason: str

    def __iter__(self):
        return iter((self.path, self.reason))


class ImageDecodeError(CnnkitError):
    """An image file that cannot be decoded; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str, message: str | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(message or f"cannot decode image {self.path!r} ({reason}); {_FIX}.")


def decode_image(
    path: str | os.PathLike,
    channels: int = 3,
    *,
    background: int = 255,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Decode an image file into a uint8 array ``(n_H, n_W, n_C)``.

    Args:
        path: The image file (PNG, JPEG, BMP, GIF, TIFF, WebP, PPM or PGM; for
            multi-frame files the first frame).
        channels: 1 (grayscale) or 3 (RGB).
        background: Grey level (0-255) that transparent pixels are composited over.
        max_pixels: Largest ``n_H * n_W`` decoded; larger images are refused from their
            header, before any pixel memory is allocated. Pillow refuses images above
            ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (about 179 million) on its own, whatever
            this says.

    Returns:
        A ``uint8`` array of shape ``(n_H, n_W, channels)``.

    Raises:
        ImageDecodeError: If the file is missing, not an allowed format, too large,
            corrupt or truncated (the message names the path).
        CnnkitError: If ``channels`` is not 1 or 3.
    """
    from PIL import Image, ImageOps

    if channels not in (1, 3):
        raise CnnkitError(f"channels must be 1 or 3, got {channels!r}.")
    p = Path(path)
    try:
        with warnings.catch_warnings():
            # the size is checked below against max_pixels; Pillow's own limit stays an error
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(p, formats=ALLOWED_FORMATS)
    except FileNotFoundError:
        raise ImageDecodeError(p, "does not exist", f"image {str(p)!r} does not exist.") from None
    except Image.DecompressionBombError as e:
        m = re.search(r"\((\d+) pixels\)", str(e))
        raise _too_large(p, int(m.group(1)) if m else None, None, max_pixels) from None
    except Exception as e:  # any failure to identify the file is about the file
        raise ImageDecodeError(p, _open_reason(p, e)) from None
    with im:
        if im.width * im.height > max_pixels:
            raise _too_large(p, im.width * im.height, (im.height, im.width), max_pixels)
        try:
            if im.format == "PNG":
                _verify_png(p)
            im.load()  # the first frame only
            im = ImageOps.exif_transpose(im)
            return _to_uint8(im, channels, background)
        except Exception as e:  # corrupt data surfaces as many exception types
            raise ImageDecodeError(p, _reason(e)) from None


def _too_large(
    p: Path, n: int | None, size: tuple[int, int] | None, max_pixels: int
) -> ImageDecodeError:
    what = (
        f"{size[0]}x{size[1]} = {n:,} pixels"
        if size
        else f"{n:,} pixels"
        if n
        else "too many pixels"
    )
    reason = f"{what}, more than max_pixels={max_pixels:,}"
    return ImageDecodeError(
        p,
        reason,
        f"image {str(p)!r} has {what}, more than max_pixels={max_pixels:,} allows (a "
        "decompression bomb?); shrink or remove the file, raise max_pixels if it is genuine, "
        "or pass on_error=skip to leave it out.",
    )


def _open_reason(p: Path, e: Exception) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(e, UnidentifiedImageError):
        try:
            empty = p.stat().st_size == 0
        except OSError:
            empty = False
        return "the file is empty" if empty else f"not a {_FORMAT_NAMES} file"
    return _reason(e)


def _reason(e: BaseException) -> str:
    text = str(e).splitlines()[0].strip() if str(e).strip() else ""
    if text == "Truncated File Read":  # Pillow's words for a file that ends in its header
        return "the file is truncated"
    return text or type(e).__name__


def _verify_png(p: Path) -> None:
    """Check every complete chunk's CRC (Pillow does not check the image data's).

    Reads the file in blocks of at most 1 MiB. A file that ends early is left to the
    decoder, which knows whether the pixels are complete.
    """
    with open(p, "rb") as f:
        f.read(8)  # the signature, already identified by Pillow
        while True:
            head = f.read(8)
            if len(head) < 8:
                return
            length, ctype = struct.unpack(">I4s", head)
            crc = zlib.crc32(ctype)
            left = length
            while left:
                block = f.read(min(left, 1 << 20))
                if not block:
                    return
                crc = zlib.crc32(block, crc)
                left -= len(block)
            tail = f.read(4)
            if len(tail) < 4:
                return
            if struct.unpack(">I", tail)[0] != crc:
                name = ctype.decode("latin-1")
                raise ValueError(f"bad CRC in the {name} chunk: the file is corrupt")
            if ctype == b"IEND":
                return


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
        im = im.convert("RGB")  # CMYK (Adobe's inverted JPEGs are read as plain CMYK), ...
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
