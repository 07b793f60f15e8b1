"""Face-identity data: identity folders, a synthetic face generator, P x K batches, pairs.

A face set on disk is one folder per person (the layout of LFW and of most face
datasets)::

    root/person_000/0.png
    root/person_000/1.png
    root/person_001/0.png
    ...

:func:`read_faces` reads it into a :class:`FaceSet`: same-sized uint8 images
``(N, n_C, n_H, n_W)``, one identity label per image into the sorted identity names.
Files directly in ``root`` (such as the ``identities.json`` that :func:`synth_faces`
writes) are ignored.

Recognition is learned on some identities and measured on others, so splits are of
identities, not images (:func:`split_identities`). The triplet loss needs several
images of each person in a batch: :class:`PKGroups` yields one item per identity (K of
its images), so a DataLoader batch of P items is a P x K batch. Verification is
measured on pairs of images of the same or of different people (:func:`sample_pairs`).

:func:`synth_faces` draws a seeded set of cartoon faces where the identity fixes the
face's geometry and colours and each image varies pose, lighting, expression and
background, so that a small CNN can learn identities that colour statistics alone do
not separate.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.errors import CnnkitError, unknown_name

__all__ = [
    "HAIR_STYLES",
    "IMAGE_SUFFIXES",
    "FaceSet",
    "PKGroups",
    "load_images",
    "read_faces",
    "sample_pairs",
    "split_identities",
    "synth_faces",
]

#: File suffixes :func:`read_faces` reads (compared case-insensitively).
IMAGE_SUFFIXES = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
)

#: Hair styles :func:`synth_faces` draws.
HAIR_STYLES = ("bald", "short", "fringe", "long", "curly")

# Palettes (RGB). Identities draw from a handful of colours with a small jitter, so that
# many of them share a skin or hair colour and only the geometry tells them apart.
_SKIN = (
    (255, 224, 196),
    (241, 194, 160),
    (224, 172, 105),
    (198, 134, 66),
    (141, 85, 36),
    (92, 56, 30),
)
_HAIR = (
    (20, 17, 15),
    (60, 40, 28),
    (110, 75, 45),
    (205, 170, 110),
    (165, 70, 35),
    (170, 170, 170),
    (235, 225, 200),
)
_IRIS = ((70, 45, 25), (60, 110, 170), (70, 130, 80), (110, 115, 120), (25, 20, 20))
_LIPS = ((190, 90, 90), (160, 70, 70), (200, 120, 120), (130, 60, 55))
_FRAMES = ((15, 15, 15), (110, 70, 30), (200, 170, 60), (140, 20, 30))

_SUPERSAMPLE = 2  # faces are drawn at twice the size and box-averaged down (antialiasing)
_SHIFT_PX = 4  # PKGroups: largest shift of the augmentation, in pixels
_JITTER = 0.1  # PKGroups: brightness and contrast jitter, +-10%


# ---------------------------------------------------------------------- synthetic faces


def _pick(rng: np.random.Generator, palette: Sequence[Sequence[int]], jitter: float) -> list:
    """A palette colour with a uniform jitter of up to ``jitter`` per channel."""
    c = np.asarray(palette[int(rng.integers(len(palette)))], dtype=np.float64)
    c = np.clip(c + rng.uniform(-jitter, jitter, 3), 0, 255)
    return [int(v) for v in np.rint(c)]


def _identity(rng: np.random.Generator) -> dict[str, Any]:
    """Draw one person's fixed traits (plain JSON values; lengths relative to the image)."""
    hair_style = HAIR_STYLES[int(rng.integers(len(HAIR_STYLES)))]
    return {
        "face_width": round(float(rng.uniform(0.25, 0.33)), 4),  # half-width / image side
        "face_aspect": round(float(rng.uniform(1.12, 1.42)), 4),  # half-height / half-width
        "skin": _pick(rng, _SKIN, 6),
        "hair_style": hair_style,
        "hair": _pick(rng, _HAIR, 8),
        "hairline": round(float(rng.uniform(0.45, 0.75)), 4),  # above the centre, in b
        "eye_y": round(float(rng.uniform(0.02, 0.18)), 4),  # above the centre, in b
        "eye_spacing": round(float(rng.uniform(0.30, 0.46)), 4),  # half-distance, in a
        "eye_size": round(float(rng.uniform(0.11, 0.19)), 4),  # radius, in a
        "iris": _pick(rng, _IRIS, 10),
        "brow_thickness": round(float(rng.uniform(0.025, 0.07)), 4),  # in a
        "brow_slope": round(float(rng.uniform(-0.35, 0.35)), 4),  # rise outwards / length
        "brow_gap": round(float(rng.uniform(0.08, 0.2)), 4),  # above the eye, in b
        "nose_length": round(float(rng.uniform(0.18, 0.34)), 4),  # in b
        "nose_width": round(float(rng.uniform(0.08, 0.2)), 4),  # half-width, in a
        "mouth_y": round(float(rng.uniform(0.42, 0.58)), 4),  # below the centre, in b
        "mouth_width": round(float(rng.uniform(0.28, 0.58)), 4),  # half-width, in a
        "lip_thickness": round(float(rng.uniform(0.03, 0.07)), 4),  # in a
        "lips": _pick(rng, _LIPS, 12),
        "glasses": _pick(rng, _FRAMES, 10) if rng.random() < 0.25 else None,
        "beard": bool(rng.random() < 0.2),
        "mole": (
            [round(float(v), 4) for v in rng.uniform(-0.6, 0.6, 2)] if rng.random() < 0.3 else None
        ),  # (x in a, y in b) from the centre
    }


def _background(rng: np.random.Generator, S: int) -> np.ndarray:
    """A float ``(S, S, 3)`` background: a two-colour gradient plus smooth blotches."""
    from PIL import Image

    c1, c2 = rng.uniform(0, 255, (2, 3))
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:S, 0:S] / max(S - 1, 1)
    t = xx * math.cos(angle) + yy * math.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-9)
    base = c1 * (1 - t)[..., None] + c2 * t[..., None]  # (S, S) -> (S, S, 3)
    k = int(rng.integers(3, 8))
    coarse = rng.integers(0, 256, (k, k, 3)).astype(np.uint8)
    smooth = Image.fromarray(coarse).resize((S, S), Image.Resampling.BICUBIC)
    smooth = np.asarray(smooth, dtype=np.float64)  # (k, k, 3) -> (S, S, 3)
    amount = rng.uniform(0.1, 0.4)
    return base * (1 - amount) + smooth * amount


def _shade(colour: Sequence[int], f: float) -> tuple[int, int, int]:
    r, g, b = (int(np.clip(round(c * f), 0, 255)) for c in colour)
    return r, g, b


def _draw_face(ident: dict[str, Any], rng: np.random.Generator, size: int) -> np.ndarray:
    """One image of one person: uint8 ``(size, size, 3)``."""
    from PIL import Image, ImageDraw

    S = size * _SUPERSAMPLE
    # per-image nuisance: pose, expression, lighting, clothes
    angle = rng.uniform(-10, 10)
    scale = rng.uniform(0.92, 1.08)
    shift = rng.uniform(-3, 3, 2) * size / 64 * _SUPERSAMPLE
    smile = rng.uniform(-1, 1)  # -1 frown, 0 neutral, 1 smile
    openness = rng.uniform(0.45, 1.0)
    light_angle = rng.uniform(0, 2 * math.pi)
    light = rng.uniform(0.0, 0.35)
    shirt = tuple(int(v) for v in rng.integers(0, 256, 3))

    a = ident["face_width"] * S * scale  # half-width of the face ellipse
    b = a * ident["face_aspect"]  # half-height
    cx, cy = S / 2 + shift[0], S * 0.53 + shift[1]
    skin, hair = tuple(ident["skin"]), tuple(ident["hair"])
    layer = Image.new("RGBA", (S, S), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)

    def box(x: float, y: float, rx: float, ry: float) -> list[float]:
        return [x - rx, y - ry, x + rx, y + ry]

    # shoulders and neck, behind the head
    d.ellipse(box(cx, cy + b * 1.55, a * 1.9, b * 0.7), fill=shirt)
    d.rectangle(
        [cx - a * 0.42, cy + b * 0.5, cx + a * 0.42, cy + b * 1.15], fill=_shade(skin, 0.85)
    )
    style = ident["hair_style"]
    if style == "long":
        d.rounded_rectangle(
            [cx - a * 1.22, cy - b * 1.12, cx + a * 1.22, cy + b * 0.95], radius=a * 0.6, fill=hair
        )
    elif style in ("short", "fringe"):
        d.ellipse(box(cx, cy - b * 0.12, a * 1.1, b * 1.0), fill=hair)
    # ears, then the face
    for side in (-1, 1):
        d.ellipse(box(cx + side * a * 0.98, cy - b * 0.02, a * 0.16, b * 0.16), fill=skin)
    d.ellipse(box(cx, cy, a, b), fill=skin)
    if ident["beard"]:
        d.chord(box(cx, cy, a, b), 22, 158, fill=hair)  # the lower face
        d.ellipse(box(cx, cy + b * ident["mouth_y"], a * 0.45, b * 0.14), fill=skin)
    # hair over the top of the face: a chord cut at the hairline
    line = 0.42 if style == "fringe" else ident["hairline"]  # above the centre, in b
    if style in ("short", "fringe", "long", "curly"):
        h = math.degrees(math.asin(min(max(line, 0.05), 0.95)))
        d.chord(box(cx, cy, a * 1.02, b * 1.02), 180 + h, 360 - h, fill=hair)
    if style == "fringe":  # a jagged fringe below the cut
        y0 = cy - b * line
        teeth = 6
        pts = [(cx - a * 0.85, y0)]
        for k in range(teeth + 1):
            x = cx - a * 0.85 + k * (1.7 * a / teeth)
            pts.append((x, y0 + (b * 0.08 if k % 2 else 0)))
        pts.append((cx + a * 0.85, y0))
        d.polygon(pts, fill=hair)
    if style == "curly":  # curls along the top of the head
        for k in range(11):
            t = math.pi * (1 + k / 10)
            x, y = cx + a * 1.02 * math.cos(t), cy + b * 1.0 * math.sin(t)
            d.ellipse(box(x, y, a * 0.2, a * 0.2), fill=hair)
    if style == "bald":  # a little hair above the ears
        for side in (-1, 1):
            d.ellipse(box(cx + side * a * 0.9, cy - b * 0.3, a * 0.13, b * 0.2), fill=hair)
    # eyes, brows, nose, mouth
    ey = cy - b * ident["eye_y"]
    er = a * ident["eye_size"]
    brow_w = max(1, round(a * ident["brow_thickness"]))
    for side in (-1, 1):
        ex = cx + side * a * ident["eye_spacing"]
        ry = er * 0.62 * openness
        d.ellipse(box(ex, ey, er, ry), fill=(245, 245, 245))
        ir = min(er * 0.55, ry)
        d.ellipse(box(ex, ey, ir, ir), fill=tuple(ident["iris"]))
        d.ellipse(box(ex, ey, ir * 0.45, ir * 0.45), fill=(10, 10, 10))
        by = ey - er * 0.62 - b * ident["brow_gap"]
        rise = ident["brow_slope"] * er * 1.2
        d.line(
            [(ex - side * er * 1.1, by + rise), (ex + side * er * 1.1, by - rise)],
            fill=_shade(hair, 0.8),
            width=brow_w,
        )
        if ident["glasses"] is not None:
            d.ellipse(
                box(ex, ey, er * 1.55, er * 1.3),
                outline=tuple(ident["glasses"]),
                width=max(1, round(a * 0.04)),
            )
    if ident["glasses"] is not None:
        gap = a * ident["eye_spacing"] - er * 1.55
        d.line(
            [(cx - gap, ey), (cx + gap, ey)],
            fill=tuple(ident["glasses"]),
            width=max(1, round(a * 0.04)),
        )
    ny0, ny1 = ey + er * 0.5, ey + er * 0.5 + b * ident["nose_length"]
    nw = a * ident["nose_width"]
    d.polygon([(cx, ny0), (cx + nw, ny1), (cx - nw, ny1)], fill=_shade(skin, 0.8))
    my = cy + b * ident["mouth_y"]
    mw = a * ident["mouth_width"]
    depth = b * 0.12 * smile
    pts = [(cx + t * mw, my - depth * (t * t - 0.5)) for t in np.linspace(-1, 1, 9)]
    d.line(pts, fill=tuple(ident["lips"]), width=max(1, round(a * ident["lip_thickness"])))
    if ident["mole"] is not None:
        mx, my_ = ident["mole"]
        d.ellipse(box(cx + mx * a, cy + my_ * b * 0.7, a * 0.04, a * 0.04), fill=(70, 40, 30))

    layer = layer.rotate(angle, resample=Image.Resampling.BICUBIC, center=(cx, cy))
    rgba = np.asarray(layer, dtype=np.float64)  # (S, S, 4)
    alpha = rgba[..., 3:] / 255.0  # (S, S, 1)
    # light from one side across the person
    yy, xx = (np.mgrid[0:S, 0:S] - S / 2) / (S / 2)
    g = 1 + light * (xx * math.cos(light_angle) + yy * math.sin(light_angle))
    fg = rgba[..., :3] * g[..., None]  # (S, S) -> (S, S, 1) broadcast over RGB
    img = fg * alpha + _background(rng, S) * (1 - alpha)
    # exposure: global brightness and contrast
    mean = img.mean()
    img = (img - mean) * rng.uniform(0.8, 1.2) + mean * rng.uniform(0.8, 1.2)
    f = _SUPERSAMPLE
    img = img.reshape(size, f, size, f, 3)  # (S, S, 3) -> (size, f, size, f, 3)
    img = img.mean((1, 3))  # (size, f, size, f, 3) -> (size, size, 3): box average
    img = img + rng.normal(0, rng.uniform(1.5, 6), img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def synth_faces(
    out: str | os.PathLike,
    identities: int = 40,
    per_identity: int = 10,
    size: int = 64,
    seed: int = 0,
) -> Path:
    """Draw a seeded set of synthetic faces, one folder per person.

    Each person has fixed traits: face outline (size and aspect), skin, hair colour and
    style (bald, short, fringe, long, curly), eye position, spacing, size and iris
    colour, eyebrow thickness, slope and height, nose length and width, mouth position,
    width and lip thickness and colour, and possibly glasses, a beard or a mole. Colours
    come from small palettes, so many people share a skin or hair colour. Each image
    varies what does not identify a person: pose (rotation +-10 degrees, a shift of a
    few pixels, scale +-8%), light (a brightness gradient from a random side, global
    brightness and contrast +-20%), expression (smile to frown, eye openness), clothes,
    background (gradient and blotches) and pixel noise.

    Person ``i`` is drawn from the seed and ``i`` alone, and its image ``k`` from the
    seed, ``i`` and ``k``: a smaller set is a prefix of a larger one with the same seed,
    and the same arguments give the same bytes. Files already in ``out`` are
    overwritten or left alone, never deleted.

    Args:
        out: Folder to write (created): ``out/person_000/0.png`` ... (RGB PNG) and
            ``out/identities.json`` (each person's traits).
        identities: Number of people.
        per_identity: Images per person.
        size: Image side in pixels (at least 32).
        seed: Seed of everything drawn (non-negative).

    Returns:
        The ``out`` folder.

    Raises:
        CnnkitError: If a count, the size or the seed is out of range.
    """
    from PIL import Image

    for name, v, low, example in (
        ("identities", identities, 1, 40),
        ("per_identity", per_identity, 1, 10),
        ("size", size, 32, 64),
        ("seed", seed, 0, 0),
    ):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise CnnkitError(
                f"{name} must be an integer >= {low}, got {v!r}; e.g. {name}={example}."
            )
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise CnnkitError(f"{str(root)!r} is a file, not a folder; pass a folder as out.")
    width = max(3, len(str(identities - 1)))
    traits: dict[str, dict[str, Any]] = {}
    for i in range(identities):
        person = f"person_{i:0{width}d}"
        ident = _identity(np.random.default_rng([seed, 0, i]))
        traits[person] = ident
        folder = root / person
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_identity):
            img = _draw_face(ident, np.random.default_rng([seed, 1, i, k]), size)
            Image.fromarray(img).save(folder / f"{k}.png", format="PNG")
    (root / "identities.json").write_text(json.dumps(traits, indent=1, sort_keys=True) + "\n")
    return root


# ---------------------------------------------------------------------- identity folders


@dataclass
class FaceSet:
    """Same-sized face images with one identity label each, all in memory.

    Attributes:
        images: uint8 ``(N, n_C, n_H, n_W)``.
        labels: int64 ``(N,)``, indices into ``names``.
        names: The identity names, sorted.
        files: Per image, the file it was read from.
    """

    images: torch.Tensor
    labels: torch.Tensor
    names: list[str]
    files: list[Path]

    def __post_init__(self) -> None:
        """Check that images, labels, names and files agree.

        Raises:
            CnnkitError: If the images are not uint8 ``(N, n_C, n_H, n_W)``, the labels
                or files are not one per image, or a label is outside the names.
        """
        if (
            not isinstance(self.images, torch.Tensor)
            or self.images.dtype != torch.uint8
            or self.images.ndim != 4
        ):
            raise CnnkitError(
                "images must be a uint8 tensor (N, n_C, n_H, n_W); convert with "
                "(x * 255).round().to(torch.uint8) and stack them."
            )
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64).reshape(-1)  # (N,)
        self.names = [str(n) for n in self.names]
        n = len(self.images)
        if len(self.labels) != n or len(self.files) != n:
            raise CnnkitError(
                f"got {n} images, {len(self.labels)} labels and {len(self.files)} files; "
                "give one label and one file per image."
            )
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.names)):
            raise CnnkitError(
                f"labels must index the {len(self.names)} names (0..{len(self.names) - 1}), "
                f"got {int(self.labels.min())}..{int(self.labels.max())}; fix the labels or "
                "the names."
            )

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        n_C, n_H, n_W = self.images.shape[1:]
        return f"FaceSet({len(self)} images {n_C}x{n_H}x{n_W}, {len(self.names)} identities)"

    def subset(self, names: Sequence[str]) -> FaceSet:
        """The images of some identities only, labels re-indexed to their sorted names.

        Args:
            names: Identity names (each one of ``self.names``).

        Returns:
            The smaller set (sharing no storage with this one).

        Raises:
            CnnkitError: If ``names`` is empty or has a name not in this set.
        """
        if isinstance(names, str):
            names = [names]
        for n in names:
            if n not in self.names:
                raise unknown_name("identity", n, self.names)
        keep = sorted(set(names))
        if not keep:
            raise CnnkitError("subset needs at least one identity name; pass some of set.names.")
        new_of_old = torch.full((len(self.names),), -1, dtype=torch.int64)
        for j, n in enumerate(keep):
            new_of_old[self.names.index(n)] = j
        mapped = new_of_old[self.labels]
        mask = mapped >= 0
        idx = mask.nonzero().flatten().tolist()
        return FaceSet(self.images[mask].clone(), mapped[mask], keep, [self.files[i] for i in idx])

    def counts(self) -> dict[str, int]:
        """The number of images of each identity.

        Returns:
            ``{name: count}`` in name order (0 for a name with no images).
        """
        c = torch.bincount(self.labels, minlength=len(self.names)).tolist()
        return dict(zip(self.names, c))


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def read_faces(root: str | os.PathLike, size: int = 64, channels: int = 3) -> FaceSet:
    """Read identity folders ``root/<person>/*`` into a :class:`FaceSet`.

    Every image (PNG, JPEG, BMP, GIF, TIFF, WebP, PPM/PGM by suffix, any case) is
    decoded with :func:`cnnkit.data.images.decode_image` and resized to ``size x size``
    (bilinear; faces are expected to be roughly square, aligned crops). Folders and
    files starting with ``.`` are skipped, and so are files directly in ``root`` (like
    ``identities.json``) and, inside a person's folder, sub-folders and files of other
    suffixes. Images are in name order within each person, persons in name order.

    Args:
        root: The folder holding one sub-folder per person.
        size: Side of the loaded images, in pixels.
        channels: 1 (grayscale) or 3 (RGB).

    Returns:
        The set.

    Raises:
        CnnkitError: If ``root`` is missing or not a folder, has no person folders, or
            a person folder has no images; ``size`` or ``channels`` is invalid.
        cnnkit.data.images.ImageDecodeError: If an image cannot be decoded (it names
            the file).
    """

    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise CnnkitError(f"size must be a positive integer, got {size!r}; e.g. size=64.")
    if channels not in (1, 3):
        raise CnnkitError(f"channels must be 1 or 3, got {channels!r}.")
    base = Path(root)
    if not base.exists():
        raise CnnkitError(
            f"face folder {str(base)!r} does not exist; pass a folder with one sub-folder of "
            "images per person."
        )
    if not base.is_dir():
        raise CnnkitError(
            f"{str(base)!r} is a file, not a folder; pass a folder with one sub-folder of "
            "images per person."
        )
    people = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not people:
        raise CnnkitError(
            f"face folder {str(base)!r} has no identity sub-folders; put each person's "
            "images in a sub-folder of it named after the person."
        )
    labels: list[int] = []
    files: list[Path] = []
    for label, person in enumerate(people):
        found = _image_files(person)
        if not found:
            raise CnnkitError(
                f"identity folder {str(person)!r} has no images; add at least one image or "
                "remove the folder."
            )
        labels += [label] * len(found)
        files += found
    return FaceSet(
        load_images(files, size, channels),
        torch.tensor(labels, dtype=torch.int64),
        [p.name for p in people],
        files,
    )


def load_images(files: Sequence[Path], size: int, channels: int) -> torch.Tensor:
    """Decode image files and resize them to ``size x size`` (PIL bilinear).

    :func:`read_faces` and the encoder of a trained run (enroll, verify, identify) both
    read images through it, so a query is prepared exactly as the training images were.

    Args:
        files: Image paths.
        size: Side to resize to.
        channels: 1 (grey) or 3 (RGB).

    Returns:
        uint8 ``(N, n_C, size, size)``.

    Raises:
        ImageDecodeError: For a file that cannot be decoded (the message names it).
    """
    from PIL import Image

    from cnnkit.data.images import decode_image

    images = []
    for f in files:
        a = decode_image(f, channels)  # (n_H, n_W, n_C) uint8
        if a.shape[:2] != (size, size):
            im = Image.fromarray(a[..., 0] if channels == 1 else a)
            im = im.resize((size, size), Image.Resampling.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
            a = a.reshape(size, size, channels)  # (size, size[, n_C]) -> (size, size, n_C)
        images.append(a)
    if not images:
        return torch.zeros(0, channels, size, size, dtype=torch.uint8)
    stack = torch.from_numpy(np.stack(images))  # (N, n_H, n_W, n_C)
    return stack.permute(0, 3, 1, 2).contiguous()  # (N, n_H, n_W, n_C) -> (N, n_C, n_H, n_W)


def split_identities(
    names: Sequence[str], dev: float = 0.2, test: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str], list[str]]:
    """Split identities (not images) into train, dev and test.

    The names are sorted, shuffled with ``seed`` and cut: dev gets ``round(n * dev)``
    names and test ``round(n * test)``, at least one each when its fraction is above 0,
    and train the rest (at least one; dev and test give back names if needed).

    Args:
        names: Distinct identity names.
        dev: Fraction of the identities for dev, in ``[0, 1)``.
        test: Fraction for test, in ``[0, 1)``; ``dev + test`` below 1.
        seed: Seed of the shuffle.

    Returns:
        ``(train, dev, test)`` name lists, each sorted, disjoint, together all names.

    Raises:
        CnnkitError: If a fraction is out of range, a name repeats, or there are too few
            identities for a non-empty train and each requested split.
    """
    for key, f in (("dev", dev), ("test", test)):
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
            raise CnnkitError(f"{key} must be a fraction in [0, 1), got {f!r}; e.g. {key}=0.2.")
    if dev + test >= 1:
        raise CnnkitError(
            f"dev + test must be below 1 to leave identities for training, got {dev} + {test}."
        )
    ordered = sorted(str(n) for n in names)
    dupes = sorted({n for i, n in enumerate(ordered) if i and ordered[i - 1] == n})
    if dupes:
        raise CnnkitError(f"identity {dupes[0]!r} is given twice; give each identity once.")
    n = len(ordered)
    need = 1 + (dev > 0) + (test > 0)
    if n < need:
        raise CnnkitError(
            f"{n} identities cannot fill train, dev and test with at least one each; "
            f"give at least {need} identities."
        )
    n_dev = max(1, round(n * dev)) if dev > 0 else 0
    n_test = max(1, round(n * test)) if test > 0 else 0
    while n - n_dev - n_test < 1:  # give back to train from the larger of dev and test
        if n_dev >= n_test and n_dev > 1:
            n_dev -= 1
        else:
            n_test -= 1
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [ordered[i] for i in order]
    dev_names = sorted(shuffled[:n_dev])
    test_names = sorted(shuffled[n_dev : n_dev + n_test])
    train_names = sorted(shuffled[n_dev + n_test :])
    return train_names, dev_names, test_names


# ---------------------------------------------------------------------- batches and pairs


class PKGroups(torch.utils.data.Dataset):
    """One item per identity: K of its images, for P x K triplet batches.

    ``ds[i]`` is ``(x, y)``: ``x`` float32 ``(K, n_C, n_H, n_W)`` normalised as
    ``(image / 255 - mean) / std``, ``y`` int64 ``(K,)`` all equal to the identity's
    label in ``faces``. ``DataLoader(ds, batch_size=P, shuffle=True)`` stacks P items
    into ``(P, K, n_C, n_H, n_W)`` and ``(P, K)``: P different identities with K images
    each, which the triplet loss needs (every anchor has positives and negatives in the
    batch). Flatten with ``x.flatten(0, 1)`` to ``(P * K, n_C, n_H, n_W)``.

    Identities with a single image are left out. With ``augment=True`` each item draws
    its K images from torch's global RNG (so a DataLoader's worker seeding applies):
    without replacement when the identity has at least K images, otherwise all of them
    once plus the rest with replacement; then each image is flipped left-right with
    probability 0.5, shifted by up to 4 pixels (edges repeated) and jittered in
    brightness and contrast by up to 10%. With ``augment=False`` an item is the
    identity's first K images in file order (cycling when it has fewer), unchanged.

    Attributes:
        faces: The set the images come from.
        K: Images per item.
        identities: The identity name of each item, in item order.
        indices: Per item, the indices into ``faces`` of that identity's images.
    """

    def __init__(
        self,
        faces: FaceSet,
        K: int = 4,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        augment: bool = True,
    ) -> None:
        """Group the images by identity.

        Args:
            faces: The images and labels.
            K: Images per item (at least 2).
            mean: Per-channel mean (one value for every channel, or one per channel).
            std: Per-channel standard deviation (above 0), same form as ``mean``.
            augment: Draw and augment images at random (training), or not (evaluation).

        Raises:
            CnnkitError: If ``K`` is below 2, ``mean``/``std`` have the wrong length or a
                std is not above 0, or fewer than 2 identities have 2 or more images.
        """
        if isinstance(K, bool) or not isinstance(K, int) or K < 2:
            raise CnnkitError(
                f"K must be an integer >= 2 (images per identity), got {K!r}; e.g. K=4."
            )
        n_C = int(faces.images.shape[1])
        m = torch.as_tensor(mean, dtype=torch.float32).flatten()
        s = torch.as_tensor(std, dtype=torch.float32).flatten()
        if len(m) not in (1, n_C) or len(s) not in (1, n_C):
            raise CnnkitError(
                f"mean and std need 1 or {n_C} values for {n_C}-channel images, got "
                f"{len(m)} and {len(s)}."
            )
        if not bool((s > 0).all()):
            raise CnnkitError(f"std must be above 0, got {s.tolist()}.")
        self.mean = m.expand(n_C).reshape(n_C, 1, 1).clone()  # (n_C,) -> (n_C, 1, 1)
        self.std = s.expand(n_C).reshape(n_C, 1, 1).clone()  # (n_C,) -> (n_C, 1, 1)
        self.faces = faces
        self.K = K
        self.augment = bool(augment)
        self.identities: list[str] = []
        self.indices: list[torch.Tensor] = []
        for label, name in enumerate(faces.names):
            idx = (faces.labels == label).nonzero().flatten()
            if len(idx) >= 2:
                self.identities.append(name)
                self.indices.append(idx)
        if len(self.identities) < 2:
            raise CnnkitError(
                f"P x K batches need at least 2 identities with 2 or more images each, got "
                f"{len(self.identities)}; add images or identities."
            )

    def __len__(self) -> int:
        return len(self.identities)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.indices[i]
        n, K = len(idx), self.K
        if not self.augment:
            pick = idx[torch.arange(K) % n]
        elif n >= K:
            pick = idx[torch.randperm(n)[:K]]
        else:
            pick = idx[torch.cat([torch.randperm(n), torch.randint(n, (K - n,))])]
        x = self.faces.images[pick].float() / 255.0  # (K, n_C, n_H, n_W)
        if self.augment:
            x = _augment(x)
        x = (x - self.mean) / self.std
        label = int(self.faces.labels[idx[0]])
        return x, torch.full((K,), label, dtype=torch.int64)


def _augment(x: torch.Tensor) -> torch.Tensor:
    """Flip, shift and jitter each image of ``x`` float ``(K, n_C, n_H, n_W)`` in [0, 1]."""
    K, _, n_H, n_W = x.shape
    flip = torch.rand(K) < 0.5
    x = torch.where(flip.view(K, 1, 1, 1), x.flip(-1), x)
    p = _SHIFT_PX
    padded = torch.nn.functional.pad(x, (p, p, p, p), mode="replicate")  # (K, n_C, H+2p, W+2p)
    dx = torch.randint(0, 2 * p + 1, (K,)).tolist()
    dy = torch.randint(0, 2 * p + 1, (K,)).tolist()
    x = torch.stack([padded[k, :, dy[k] : dy[k] + n_H, dx[k] : dx[k] + n_W] for k in range(K)])
    bright = 1 + (torch.rand(K, 1, 1, 1) * 2 - 1) * _JITTER
    contrast = 1 + (torch.rand(K, 1, 1, 1) * 2 - 1) * _JITTER
    mu = x.mean((1, 2, 3), keepdim=True)  # (K, 1, 1, 1)
    return ((x - mu) * contrast + mu * bright).clamp(0, 1)


def sample_pairs(
    faces: FaceSet, n_pairs: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw verification pairs: half of one person, half of two different people.

    The first ``n_pairs // 2`` pairs (before shuffling) are "same": a random identity
    with at least 2 images, then two different images of it. The rest are "different":
    two different identities, then one random image of each. The pairs come shuffled;
    a pair may repeat when ``n_pairs`` is large for the set, but no pair is an image
    with itself.

    Args:
        faces: The images and labels.
        n_pairs: Number of pairs (at least 1).
        seed: Seed of the draws.

    Returns:
        ``(i, j, same)``: int64 ``(n_pairs,)`` image indices into ``faces`` and bool
        ``(n_pairs,)``, true where both images show one person.

    Raises:
        CnnkitError: If ``n_pairs`` is below 1, or the set lacks an identity with 2
            images (for same pairs) or 2 identities (for different pairs).
    """
    if isinstance(n_pairs, bool) or not isinstance(n_pairs, (int, np.integer)) or n_pairs < 1:
        raise CnnkitError(f"n_pairs must be an integer >= 1, got {n_pairs!r}; e.g. n_pairs=1000.")
    n_same = int(n_pairs) // 2
    n_diff = int(n_pairs) - n_same
    labels = faces.labels.numpy()
    order = np.argsort(labels, kind="stable")  # image indices grouped by label
    count = np.bincount(labels, minlength=len(faces.names))
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    rng = np.random.default_rng(seed)
    i_parts, j_parts = [], []
    if n_same:
        multi = np.flatnonzero(count >= 2)
        if len(multi) == 0:
            raise CnnkitError(
                "no identity has 2 or more images, so no same-person pair exists; add a "
                "second image of some person."
            )
        who = multi[rng.integers(len(multi), size=n_same)]
        c = count[who]
        a = np.floor(rng.random(n_same) * c).astype(np.int64)
        b = np.floor(rng.random(n_same) * (c - 1)).astype(np.int64)
        b = b + (b >= a)  # a different image of the same person
        i_parts.append(order[start[who] + a])
        j_parts.append(order[start[who] + b])
    present = np.flatnonzero(count >= 1)
    if len(present) < 2:
        raise CnnkitError(
            f"different-person pairs need at least 2 identities with images, got "
            f"{len(present)}; add another person."
        )
    p = rng.integers(len(present), size=n_diff)
    q = rng.integers(len(present) - 1, size=n_diff)
    q = q + (q >= p)  # a different person
    p, q = present[p], present[q]
    a = np.floor(rng.random(n_diff) * count[p]).astype(np.int64)
    b = np.floor(rng.random(n_diff) * count[q]).astype(np.int64)
    i_parts.append(order[start[p] + a])
    j_parts.append(order[start[q] + b])
    i = np.concatenate(i_parts).astype(np.int64)
    j = np.concatenate(j_parts).astype(np.int64)
    same = np.concatenate([np.ones(n_same, bool), np.zeros(n_diff, bool)])
    perm = rng.permutation(n_pairs)
    return i[perm], j[perm], same[perm]
