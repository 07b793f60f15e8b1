"""Segmentation data: masks of class indices, the YOLO-like layout, palettes, synthetic shapes.

A mask is a single-channel PNG holding one class index per pixel: ``0 .. C-1``, or 255
for pixels to ignore (the "void" of VOC-style masks: not scored, no loss). Masks that
cnnkit writes are palette PNGs (mode ``P``): the stored value of a pixel is still its
class index, and the palette (:func:`palette`, the VOC colour map) only makes them
visible in an image viewer. Greyscale (``L``) PNGs are read the same way; RGB masks are
refused, because a colour is not a class index.

The layout follows YOLO's, with masks where YOLO keeps labels::

    root/data.yaml           path: .  (optional)  train: images/train  val: images/val
                             masks: masks         names: {0: background, 1: circle, ...}
    root/images/train/X.png  (any image format cnnkit decodes)
    root/masks/train/X.png   the mask of X, same n_H x n_W

The mask of ``<path>/<split>/.../X.ext`` is ``<path>/<masks>/<split without its first
'images' folder>/.../X.png``: ``images/train/a/X.jpg`` -> ``masks/train/a/X.png``.
``masks`` defaults to ``masks``. Class 0 is usually the background. A mask labels its
image's stored pixels: when a photo carries an EXIF orientation, the image is decoded
upright and its mask is turned the same way.

:func:`synth_segment` draws a seeded set of coloured circles, squares and triangles on
textured backgrounds (shapes may overlap; the later one is on top in the image and in the
mask) and writes it in that layout; :func:`augment_pair` moves an image and its mask with
the same geometric transform (torchvision ``transforms.v2``; masks resampled by nearest
neighbour, uncovered pixels 255 so that they are ignored).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cnnkit.data.draw import shape_mask, textured_background
from cnnkit.data.yolo_layout import load_yaml, split_images, yaml_names
from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.segment.metrics import IGNORE_INDEX, check_mask

__all__ = [
    "SHAPES",
    "SegmentationSet",
    "augment_pair",
    "check_splits",
    "mask_path",
    "overlay",
    "palette",
    "read_mask",
    "read_segmentation",
    "synth_segment",
    "write_mask",
    "write_segmentation",
]

#: Shapes :func:`synth_segment` can draw.
SHAPES = ("circle", "square", "triangle", "diamond")

_SPLITS = ("train", "val", "test")


@dataclass
class SegmentationSet:
    """Images and their masks, in memory.

    Attributes:
        images: uint8 ``(N, n_C, n_H, n_W)``.
        masks: uint8 ``(N, n_H, n_W)`` class indices (255: ignored).
        ids: One name per image (the file's stem).
        classes: Class names, index order (class 0 is usually the background).
        files: The image files (empty for sets made in memory).
    """

    images: torch.Tensor
    masks: torch.Tensor
    ids: list[str]
    classes: list[str]
    files: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: class ``c`` gets the colour built from the bits of ``c``.

    Class 0 is black, 1 dark red, 2 dark green, 3 olive, ...; 255 (ignored) is cream.

    Args:
        n: Colours wanted.

    Returns:
        uint8 ``(n, 3)``.
    """
    out = np.zeros((n, 3), dtype=np.uint8)
    for c in range(n):
        r = g = b = 0
        v = c
        for k in range(8):
            r |= ((v >> 0) & 1) << (7 - k)
            g |= ((v >> 1) & 1) << (7 - k)
            b |= ((v >> 2) & 1) << (7 - k)
            v >>= 3
        out[c] = (r, g, b)
    return out


def write_mask(mask: np.ndarray | torch.Tensor, path: str | os.PathLike) -> None:
    """Write class indices as a palette PNG (values kept, colours for viewing).

    Args:
        mask: ``(n_H, n_W)`` class indices 0..254 or 255.
        path: The ``.png`` file.
    """
    from PIL import Image

    a = np.asarray(mask)
    if a.ndim != 2 or a.min(initial=0) < 0 or a.max(initial=0) > 255:
        raise CnnkitError(f"a mask is (n_H, n_W) of values 0..255, got {a.shape} for {path}.")
    im = Image.fromarray(a.astype(np.uint8), mode="P")
    im.putpalette(palette().reshape(-1).tolist())
    im.save(path, format="PNG")


def read_mask(path: str | os.PathLike, num_classes: int) -> np.ndarray:
    """Read a mask PNG as class indices, refusing values that are not classes.

    Args:
        path: A single-channel PNG (palette ``P`` or greyscale ``L``).
        num_classes: ``C``: values must be ``0 .. C-1`` or 255.

    Returns:
        uint8 ``(n_H, n_W)``.

    Raises:
        CnnkitError: Naming the file: not a PNG, unreadable, RGB, or a bad value.
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise CnnkitError(f"mask {str(p)!r} does not exist; every image needs its mask there.")
    try:
        with Image.open(p) as im:
            if im.format != "PNG":
                raise CnnkitError(
                    f"mask {str(p)!r} is {im.format}, not PNG; save masks as lossless PNGs of "
                    "class indices (JPEG would blur the class boundaries)."
                )
            if im.mode not in ("P", "L", "1", "I;16", "I"):
                raise CnnkitError(
                    f"mask {str(p)!r} is a {im.mode} image; a mask is a single-channel PNG of "
                    f"class indices (0..{num_classes - 1}, 255 = ignore), not colours."
                )
            a = np.array(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise CnnkitError(f"cannot read mask {str(p)!r} ({e}); replace the file.") from None
    if a.ndim != 2:
        raise CnnkitError(f"mask {str(p)!r} has shape {a.shape}; a mask is (n_H, n_W).")
    check_mask(a, num_classes, str(p))
    return a.astype(np.uint8)


def mask_path(image: Path, root: Path, split_dir: Path, masks: str = "masks") -> Path:
    """Where the mask of ``image`` lies (see the module's layout).

    Args:
        image: The image file.
        root: The data root (``path``).
        split_dir: The split's image folder (or the ``.txt`` file that listed the image:
            the last ``images`` folder of the image's path is then replaced by ``masks``).
        masks: The masks folder, relative to ``root``.

    Returns:
        The ``.png`` path.

    Raises:
        CnnkitError: A listed image with no ``images`` folder in its path.
    """
    if split_dir.is_dir():
        try:
            rel_split = split_dir.relative_to(root)
        except ValueError:
            rel_split = Path(split_dir.name)
        parts = rel_split.parts
        if parts and parts[0] == "images":
            parts = parts[1:]
        return (root / masks / Path(*parts) / image.relative_to(split_dir)).with_suffix(".png")
    ip = list(image.parts)
    for k in range(len(ip) - 2, -1, -1):
        if ip[k] == "images":
            return Path(*ip[:k], *Path(masks).parts, *ip[k + 1 :]).with_suffix(".png")
    raise CnnkitError(
        f"image {str(image)!r} (listed in {str(split_dir)!r}) has no 'images' folder in its "
        "path, so its mask cannot be found; keep images under images/ and masks under masks/."
    )


#: EXIF orientation -> the PIL transpose that shows the image upright (as ImageOps does).
_EXIF_TURNS = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}  # Image.Transpose values


def _orient_like(image: Path, mask: np.ndarray) -> np.ndarray:
    """The mask turned as its image's EXIF orientation turns the image on decoding.

    Masks label the stored pixels; images are decoded upright (``exif_transpose``), so a
    photo taken sideways keeps its labels on the right pixels.
    """
    from PIL import Image

    try:
        with Image.open(image) as im:
            turn = _EXIF_TURNS.get(int(im.getexif().get(0x0112, 1)))
    except Exception:  # the image itself decoded; no readable EXIF means upright
        return mask
    if turn is None:
        return mask
    return np.asarray(Image.fromarray(mask).transpose(Image.Transpose(turn)))


def _root(data: dict, yaml_path: Path) -> Path:
    base = yaml_path.parent
    p = data.get("path")
    if p is None:
        return base
    q = Path(str(p)).expanduser()
    return q if q.is_absolute() else base / q


def check_splits(path: str | os.PathLike, splits: Sequence[str]) -> list[str]:
    """The class names of a ``data.yaml``, once it is known to name every split (cheap).

    Args:
        path: The ``data.yaml``.
        splits: Splits that must be there.

    Returns:
        The class names.

    Raises:
        CnnkitError: A missing file, bad YAML, bad names, or a missing split.
    """
    yaml_path = Path(path)
    data = load_yaml(yaml_path)
    classes = yaml_names(data, yaml_path)
    for split in splits:
        if split not in data:
            have = [s for s in _SPLITS if s in data]
            raise CnnkitError(
                f"{str(yaml_path)!r} has no {split!r} split (it has {', '.join(have) or 'none'})"
                f"; add {split}: images/{split}."
            )
    return classes


def read_segmentation(
    path: str | os.PathLike,
    split: str = "train",
    size: int | Sequence[int] | None = None,
    channels: int = 3,
) -> SegmentationSet:
    """Read one split of a segmentation ``data.yaml``.

    Args:
        path: The ``data.yaml``.
        split: ``train``, ``val`` or ``test``.
        size: ``(n_H, n_W)`` (or one int) to resize to: images bilinearly, masks by nearest
            neighbour (so they keep their class indices); None keeps the files' size (they
            must then agree).
        channels: 1 or 3.

    Returns:
        A :class:`SegmentationSet`.

    Raises:
        CnnkitError: A missing split, image or mask; a mask of another size than its
            image; a bad mask value (naming the file).
    """
    from PIL import Image

    from cnnkit.data.images import ImageDecodeError, decode_image

    yaml_path = Path(path)
    data = load_yaml(yaml_path)
    classes = yaml_names(data, yaml_path)
    if len(classes) > 255:
        raise CnnkitError(
            f"{str(yaml_path)!r} names {len(classes)} classes; at most 255 fit a mask."
        )
    if split not in data:
        have = [s for s in _SPLITS if s in data]
        raise CnnkitError(
            f"{str(yaml_path)!r} has no {split!r} split (it has {', '.join(have) or 'none'}); "
            f"add {split}: images/{split}."
        )
    root = _root(data, yaml_path)
    masks = str(data.get("masks", "masks"))
    spec = data[split]
    if isinstance(size, int):
        size = (size, size)
    images, maps, ids, files = [], [], [], []
    for one in spec if isinstance(spec, list) else [spec]:
        if not isinstance(one, str) or not one:
            raise CnnkitError(
                f"{str(yaml_path)!r} {split}: must be a folder (or list of folders), got {one!r}."
            )
        d = Path(one) if Path(one).is_absolute() else root / one
        for f in split_images(one, root, yaml_path, split):
            try:
                a = decode_image(f, channels)  # (H, W, n_C) uint8
            except ImageDecodeError as e:
                raise CnnkitError(
                    f"cannot decode image {str(f)!r}: {e.reason}; replace or remove the file."
                ) from None
            mp = mask_path(f, root, d, masks)
            m = _orient_like(f, read_mask(mp, len(classes)))
            if m.shape != a.shape[:2]:
                raise CnnkitError(
                    f"mask {str(mp)!r} is {m.shape[0]}x{m.shape[1]} but its image {str(f)!r} is "
                    f"{a.shape[0]}x{a.shape[1]}; a mask labels every pixel of its image."
                )
            if size is not None and tuple(size) != a.shape[:2]:
                n_H, n_W = int(size[0]), int(size[1])
                im = Image.fromarray(a[..., 0] if channels == 1 else a)
                a = np.asarray(im.resize((n_W, n_H), Image.Resampling.BILINEAR)).reshape(
                    n_H, n_W, channels
                )
                m = np.asarray(Image.fromarray(m).resize((n_W, n_H), Image.Resampling.NEAREST))
            images.append(torch.from_numpy(np.array(a)).permute(2, 0, 1))  # (H, W, C) -> (C, H, W)
            maps.append(torch.from_numpy(np.array(m)))
            ids.append(f.stem)
            files.append(f)
    if not images:
        raise CnnkitError(f"the {split} split of {str(yaml_path)!r} holds no images.")
    first = tuple(images[0].shape[1:])
    for im, f in zip(images, files):
        if tuple(im.shape[1:]) != first:
            raise CnnkitError(
                f"image {str(f)!r} is {im.shape[1]}x{im.shape[2]} but {str(files[0])!r} is "
                f"{first[0]}x{first[1]}; pass size= to resize every image and mask on load."
            )
    return SegmentationSet(torch.stack(images), torch.stack(maps), ids, classes, files)


def write_segmentation(
    root: str | os.PathLike, sets: dict[str, SegmentationSet], classes: Sequence[str]
) -> Path:
    """Write splits in the layout above (PNG images, palette masks, ``data.yaml``).

    Args:
        root: The folder (created).
        sets: ``{split: set}``.
        classes: Class names.

    Returns:
        The ``data.yaml`` path.
    """
    import yaml
    from PIL import Image

    out = Path(root)
    for split in sets:
        for sub in ("images", "masks"):
            if (out / sub / split).is_dir() and any((out / sub / split).iterdir()):
                raise CnnkitError(
                    f"{str(out / sub / split)!r} already holds files; write the set to a new "
                    "folder (or delete that one), so that no old image stays in a split."
                )
    for split, ds in sets.items():
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "masks" / split).mkdir(parents=True, exist_ok=True)
        for img, m, i in zip(ds.images, ds.masks, ds.ids):
            a = img.permute(1, 2, 0).numpy()  # (C, H, W) -> (H, W, C)
            Image.fromarray(a[..., 0] if a.shape[2] == 1 else a).save(
                out / "images" / split / f"{i}.png", format="PNG"
            )
            write_mask(m.numpy(), out / "masks" / split / f"{i}.png")
    spec = {
        "path": ".",
        **{s: f"images/{s}" for s in sets},
        "masks": "masks",
        "names": dict(enumerate(classes)),
    }
    path = out / "data.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _synth_one(
    rng: np.random.Generator, size: int, shapes: Sequence[str], max_objects: int
) -> tuple[np.ndarray, np.ndarray]:
    """One textured image (uint8 ``(n_H, n_W, 3)``) and its mask (``(n_H, n_W)``, 0 background)."""
    img = textured_background(rng, size, False)
    mask = np.zeros((size, size), dtype=np.uint8)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        c = int(rng.integers(len(shapes)))
        s = max(6, round(rng.uniform(0.15, 0.45) * size))
        x0, y0 = (int(v) for v in rng.integers(0, size - s + 1, 2))
        m = np.asarray(shape_mask(shapes[c], x0, y0, s, size, bool(rng.integers(2)))) > 0
        if not m.any():
            continue
        under = img[m].mean(0)
        colour = rng.uniform(0, 255, 3)
        for _ in range(10):  # a colour that stands out from what lies under the shape
            if np.abs(colour - under).sum() >= 150:
                break
            colour = rng.uniform(0, 255, 3)
        else:
            colour = np.where(under < 128, 255.0, 0.0)
        img[m] = colour
        mask[m] = c + 1
    img = img + rng.normal(0, 4, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask


def synth_segment(
    root: str | os.PathLike,
    n: int = 1000,
    size: int = 64,
    shapes: Sequence[str] = ("circle", "square", "triangle"),
    max_objects: int = 4,
    seed: int = 0,
    splits: Sequence[float] = (0.8, 0.2),
) -> Path:
    """Draw a seeded segmentation set of shapes on textured backgrounds, with their masks.

    Each image has 1..``max_objects`` shapes of random class, colour (chosen to differ
    from what lies under it), side (15-45% of the image) and position; shapes may overlap
    and the later one wins. Classes are ``background`` (0) and then ``shapes``. The same
    arguments give the same bytes.

    Args:
        root: Folder to write (created).
        n: Images.
        size: Side in pixels (at least 16).
        shapes: Shapes from :data:`SHAPES`, classes 1.. in order.
        max_objects: Most shapes per image.
        seed: Seed of everything drawn.
        splits: Fractions for ``train``, ``val`` (and ``test``), summing to 1.

    Returns:
        The ``data.yaml`` path.
    """
    for s in shapes:
        if s not in SHAPES:
            raise unknown_name("shape", s, SHAPES)
    if len(set(shapes)) != len(shapes) or not shapes:
        raise CnnkitError(f"shapes must be distinct names from {SHAPES}, got {list(shapes)}.")
    for name, v, low in (("n", n, 1), ("size", size, 16), ("max_objects", max_objects, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise CnnkitError(f"{name} must be an integer >= {low}, got {v!r}.")
    fr = [float(f) for f in splits]
    if not 1 <= len(fr) <= 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1) > 1e-6:
        raise CnnkitError(
            f"splits must be 1 to 3 fractions (train, val, test) summing to 1, got {tuple(splits)}."
        )
    edges = [0, *(round(n * x) for x in np.cumsum(fr)[:-1]), n]
    counts = {_SPLITS[k]: edges[k + 1] - edges[k] for k in range(len(fr))}
    empty = [s for s, f in zip(counts, fr) if f > 0 and counts[s] == 0]
    if empty:
        raise CnnkitError(f"n={n} leaves the {', '.join(empty)} split empty; draw more images.")
    rng = np.random.default_rng(seed)
    classes = ["background", *shapes]
    sets: dict[str, SegmentationSet] = {}
    i = 0
    for split, count in counts.items():
        if count == 0:
            continue
        imgs, masks, ids = [], [], []
        for _ in range(count):
            img, m = _synth_one(rng, size, shapes, max_objects)
            imgs.append(torch.from_numpy(img).permute(2, 0, 1))  # (H, W, 3) -> (3, H, W)
            masks.append(torch.from_numpy(m))
            ids.append(f"{i:05d}")
            i += 1
        sets[split] = SegmentationSet(torch.stack(imgs), torch.stack(masks), ids, classes)
    return write_segmentation(root, sets, classes)


def augment_pair(
    img: torch.Tensor,
    mask: torch.Tensor,
    *,
    flip: float = 0.5,
    vflip: float = 0.0,
    degrees: float = 0.0,
    scale: float = 0.0,
    translate: float = 0.0,
    color: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random geometric transform on an image and its mask; colour on the image only.

    Uses torchvision ``transforms.v2`` with the mask wrapped as ``tv_tensors.Mask``, so the
    image is resampled bilinearly and the mask by nearest neighbour, with the very same
    flip, rotation, zoom and shift. Pixels that the shift or rotation uncovers are 0 in the
    image and 255 (ignored) in the mask. Randomness comes from torch's global generator
    (seeded per DataLoader worker by the trainer).

    Args:
        img: float ``(n_C, n_H, n_W)`` in 0-1.
        mask: ``(n_H, n_W)`` class indices.
        flip: Probability of a left-right mirror.
        vflip: Probability of an up-down mirror.
        degrees: Largest rotation, either way.
        scale: Largest zoom change (``1 +- scale``).
        translate: Largest shift, fraction of the side.
        color: Brightness and contrast jitter (image only).

    Returns:
        ``(image, mask)``, same shapes and dtypes.
    """
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    ops: list = []
    if flip:
        ops.append(v2.RandomHorizontalFlip(flip))
    if vflip:
        ops.append(v2.RandomVerticalFlip(vflip))
    if degrees or scale or translate:
        ops.append(
            v2.RandomAffine(
                degrees=degrees,
                translate=(translate, translate) if translate else None,
                scale=(1 - scale, 1 + scale) if scale else None,
                fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX},
            )
        )
    if color:
        ops.append(v2.ColorJitter(brightness=color, contrast=color))
    if not ops:
        return img, mask
    dtype = mask.dtype
    im, m = v2.Compose(ops)(tv_tensors.Image(img), tv_tensors.Mask(mask[None].to(torch.uint8)))
    return im.as_subclass(torch.Tensor), m.as_subclass(torch.Tensor)[0].to(dtype)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """An image with its mask's classes painted over it (background and ignored left clear).

    Args:
        image: uint8 ``(n_H, n_W, n_C)``.
        mask: ``(n_H, n_W)`` class indices.
        alpha: Opacity of the colours.

    Returns:
        uint8 ``(n_H, n_W, 3)``.
    """
    rgb = image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)  # (H, W, 1) -> (H, W, 3)
    colours = palette().astype(np.float64)[mask]  # (H, W) -> (H, W, 3)
    paint = ((mask > 0) & (mask != IGNORE_INDEX))[..., None]
    out = np.where(paint, (1 - alpha) * rgb + alpha * colours, rgb)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
