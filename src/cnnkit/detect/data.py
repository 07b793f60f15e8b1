"""Detection data: an in-memory dataset, YOLO and COCO files, synthetic shapes, augmentation.

Inside cnnkit a detection set is a stack of same-sized uint8 images
``(N, n_C, n_H, n_W)`` with, per image, absolute ``xyxy`` pixel boxes (float32
``(K_i, 4)``) and class indices (int64 ``(K_i,)``) into ``classes``
(:class:`DetectionSet`). The pixel grid is continuous: pixel ``(i, j)`` covers
``[j, j + 1) x [i, i + 1)``, so a box tight around columns 3..5 is ``x1 = 3, x2 = 6``.

On-disk layouts (nothing here downloads; nothing written is a pickle):

YOLO (the ultralytics layout), read by :func:`read_yolo`, written by :func:`write_yolo`::

    root/data.yaml              names: {0: circle, 1: square}, nc: 2,
                                train: images/train, val: images/val
    root/images/train/00000.png
    root/labels/train/00000.txt one object a line: "class cx cy w h", normalized to [0, 1]

``path`` in ``data.yaml`` (optional) is the root the splits are relative to; a relative
``path`` is taken from the yaml's folder, and without it the yaml's folder is the root.
A split is a folder (searched recursively), a list of folders, or a ``.txt`` file of
image paths. An image's label file replaces the last ``images`` folder of its path with
``labels`` and its suffix with ``.txt``; a missing or empty label file means no objects.

COCO, read by :func:`read_coco`, written by :func:`write_coco`::

    root/train.json             {"images": [{id, file_name, width, height}],
                                 "annotations": [{id, image_id, category_id,
                                                  bbox: [x, y, w, h], area, iscrowd}],
                                 "categories": [{id, name}]}
    root/images/00000.png

Category ids become contiguous class indices in category-id order; ``iscrowd=1``
annotations are skipped.

:func:`synth_shapes` draws a seeded set of coloured shapes on textured backgrounds in
either layout, and :func:`augment_detection` flips, scales, translates and colour-jitters
an image together with its boxes (torchvision's ``transforms.v2`` kernels).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.data.draw import shape_mask as _shape_mask
from cnnkit.data.draw import textured_background as _background
from cnnkit.data.yolo_layout import load_yaml as _load_yaml
from cnnkit.data.yolo_layout import split_images as _split_images
from cnnkit.data.yolo_layout import yaml_names as _yolo_names
from cnnkit.errors import CnnkitError, unknown_name

__all__ = [
    "SHAPES",
    "DetectionSample",
    "DetectionSet",
    "affine_detection",
    "augment_detection",
    "collate_detection",
    "read_coco",
    "read_yolo",
    "synth_shapes",
    "write_coco",
    "write_yolo",
]

#: Shapes :func:`synth_shapes` can draw.
SHAPES = ("circle", "square", "triangle", "diamond")

_TOL = 1e-6  # YOLO normalized coordinates may stray this far outside [0, 1]
_COCO_TOL = 1.0  # COCO boxes may stray this many pixels outside the image (then clipped)
_SPLIT_NAMES = ("train", "val", "test")
_ID_OK = re.compile(r"^[A-Za-z0-9_.+-]+$")

Size = tuple[int, int]
Target = dict[str, torch.Tensor]


@dataclass
class DetectionSample:
    """One image with its objects.

    Attributes:
        image: uint8 ``(n_C, n_H, n_W)``.
        boxes: float32 ``(K, 4)``, absolute ``xyxy`` pixels.
        labels: int64 ``(K,)`` class indices.
        id: The image's name (its file stem).
    """

    image: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    id: str


class DetectionSet(torch.utils.data.Dataset):
    """Same-sized images with per-image boxes and labels, all in memory.

    ``ds[i]`` is ``(image, {"boxes": (K, 4) float32, "labels": (K,) int64})`` with the
    image as float ``(n_C, n_H, n_W)`` in ``[0, 1]`` (after ``transform``, if given).
    Batch it with ``DataLoader(ds, collate_fn=collate_detection)``.

    Attributes:
        images: uint8 ``(N, n_C, n_H, n_W)``.
        boxes: Per image, float32 ``(K_i, 4)`` absolute ``xyxy``.
        labels: Per image, int64 ``(K_i,)``.
        ids: Per image, its name (file stem).
        classes: The class names; labels index them.
        transform: Optional ``(image, target) -> (image, target)`` applied by ``ds[i]``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        boxes: Sequence[torch.Tensor],
        labels: Sequence[torch.Tensor],
        ids: Sequence[str],
        classes: Sequence[str],
        transform: Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]] | None = None,
    ) -> None:
        """Check and store the arrays.

        Args:
            images: uint8 ``(N, n_C, n_H, n_W)``.
            boxes: N float tensors ``(K_i, 4)``, absolute ``xyxy`` inside the image.
            labels: N integer tensors ``(K_i,)`` in ``0..len(classes) - 1``.
            ids: N image names.
            classes: The class names.
            transform: Optional ``(image, target) -> (image, target)`` for ``ds[i]``.

        Raises:
            CnnkitError: If the shapes, dtypes, boxes or labels disagree.
        """
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            raise CnnkitError(
                "images must be a uint8 tensor (N, n_C, n_H, n_W); convert with "
                "(x * 255).round().to(torch.uint8) and stack them."
            )
        N, _, n_H, n_W = images.shape
        if not (len(boxes) == len(labels) == len(ids) == N):
            raise CnnkitError(
                f"got {N} images but {len(boxes)} box sets, {len(labels)} label sets and "
                f"{len(ids)} ids; give one of each per image."
            )
        self.images = images
        self.classes = [str(c) for c in classes]
        self.ids = [str(i) for i in ids]
        self.boxes: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        for i, (b, y) in enumerate(zip(boxes, labels)):
            b = torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4)  # (K, 4)
            y = torch.as_tensor(y, dtype=torch.int64).reshape(-1)  # (K,)
            if len(b) != len(y):
                raise CnnkitError(
                    f"image {self.ids[i]!r} has {len(b)} boxes but {len(y)} labels; give one "
                    "label per box."
                )
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
                raise CnnkitError(
                    f"image {self.ids[i]!r} has a label outside 0..{len(self.classes) - 1} "
                    f"({len(self.classes)} classes); fix the label or extend classes."
                )
            bad = (
                ~torch.isfinite(b).all(1)
                | (b[:, 2] <= b[:, 0])
                | (b[:, 3] <= b[:, 1])
                | (b[:, 0] < -1e-3)
                | (b[:, 1] < -1e-3)
                | (b[:, 2] > n_W + 1e-3)
                | (b[:, 3] > n_H + 1e-3)
            )
            if bad.any():
                k = int(bad.nonzero()[0, 0])
                raise CnnkitError(
                    f"image {self.ids[i]!r} box {k} = {b[k].tolist()} is empty or outside its "
                    f"{n_H}x{n_W} image; boxes are absolute xyxy pixels with x1 < x2 <= n_W."
                )
            self.boxes.append(b)
            self.labels.append(y)
        self.transform = transform

    @classmethod
    def from_samples(
        cls, samples: Sequence[DetectionSample], classes: Sequence[str]
    ) -> DetectionSet:
        """Stack samples of one size into a set.

        Args:
            samples: The samples (all images the same shape).
            classes: The class names.

        Returns:
            The set.

        Raises:
            CnnkitError: If there are no samples or their image shapes differ.
        """
        if not samples:
            raise CnnkitError("no samples to stack; give at least one DetectionSample.")
        shapes = {tuple(s.image.shape) for s in samples}
        if len(shapes) > 1:
            raise CnnkitError(
                f"samples have images of shapes {sorted(shapes)}; resize them to one size first."
            )
        return cls(
            torch.stack([s.image for s in samples]),
            [s.boxes for s in samples],
            [s.labels for s in samples],
            [s.id for s in samples],
            classes,
        )

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Target]:
        image = self.images[i].float() / 255.0
        target = {"boxes": self.boxes[i].clone(), "labels": self.labels[i].clone()}
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target

    def sample(self, i: int) -> DetectionSample:
        """The ``i``-th image as a :class:`DetectionSample` (uint8, untransformed).

        Args:
            i: The index.

        Returns:
            The sample.
        """
        return DetectionSample(self.images[i], self.boxes[i], self.labels[i], self.ids[i])

    @property
    def size(self) -> Size:
        """The images' ``(n_H, n_W)``."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    @property
    def n_objects(self) -> int:
        """The number of boxes over all images."""
        return sum(len(b) for b in self.boxes)

    def __repr__(self) -> str:
        n_C, n_H, n_W = self.images.shape[1:]
        return (
            f"DetectionSet({len(self)} images {n_C}x{n_H}x{n_W}, {self.n_objects} objects, "
            f"classes={self.classes})"
        )


def collate_detection(
    batch: Sequence[tuple[torch.Tensor, Target]],
) -> tuple[torch.Tensor, list[Target]]:
    """Batch ``DetectionSet`` items: images stacked, targets kept as a list.

    Args:
        batch: ``(image, target)`` pairs.

    Returns:
        Images ``(m, n_C, n_H, n_W)`` and the m targets.
    """
    return torch.stack([x for x, _ in batch]), [t for _, t in batch]


# ---------------------------------------------------------------------------- images


def _as_size(size: int | Sequence[int] | None) -> Size | None:
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or any(int(s) < 1 for s in size):
        raise CnnkitError(f"size must be (n_H, n_W) with positive sides, got {size!r}.")
    return int(size[0]), int(size[1])


def _load_image(
    path: Path, channels: int, size: Size | None, listed_in: Path | None = None
) -> tuple[torch.Tensor, Size]:
    """Decode ``path`` to uint8 ``(n_C, n_H, n_W)``, resized to ``size``; also its original
    ``(n_H, n_W)``."""
    from PIL import Image

    from cnnkit.data.images import ImageDecodeError, decode_image

    try:
        a = decode_image(path, channels)  # (n_H, n_W, n_C)
    except ImageDecodeError as e:
        where = f" (listed in {str(listed_in)!r})" if listed_in is not None else ""
        raise CnnkitError(
            f"cannot decode image {str(path)!r}{where}: {e.reason}; replace or remove the file."
        ) from None
    H0, W0 = a.shape[:2]
    if size is not None and size != (H0, W0):
        mode = "L" if channels == 1 else "RGB"
        im = Image.fromarray(a[..., 0] if channels == 1 else a, mode=mode)
        im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        a = np.asarray(im, dtype=np.uint8).reshape(size[0], size[1], channels)
    return torch.from_numpy(np.array(a, copy=True)).permute(2, 0, 1), (H0, W0)  # (n_C, n_H, n_W)


def _stack(images: list[torch.Tensor], paths: list[Path]) -> torch.Tensor:
    first = tuple(images[0].shape[1:])
    for im, p in zip(images, paths):
        if tuple(im.shape[1:]) != first:
            raise CnnkitError(
                f"image {str(p)!r} is {im.shape[1]}x{im.shape[2]} but {str(paths[0])!r} is "
                f"{first[0]}x{first[1]}; pass size=(n_H, n_W) to resize every image on load."
            )
    return torch.stack(images)


def _save_png(image: torch.Tensor, path: Path) -> None:
    from PIL import Image

    a = image.detach().cpu().permute(1, 2, 0).numpy()  # (n_C, n_H, n_W) -> (n_H, n_W, n_C)
    if a.shape[2] == 1:
        Image.fromarray(np.ascontiguousarray(a[..., 0]), mode="L").save(path, format="PNG")
    else:
        Image.fromarray(np.ascontiguousarray(a), mode="RGB").save(path, format="PNG")


def _check_id(i: str) -> str:
    if not _ID_OK.match(i) or i in (".", ".."):
        raise CnnkitError(
            f"image id {i!r} cannot be a file name; use letters, digits, '_', '-', '.' or '+'."
        )
    return i


def _as_set(
    data: DetectionSet | Sequence[DetectionSample], classes: Sequence[str] | None
) -> DetectionSet:
    if isinstance(data, DetectionSet):
        return data
    if classes is None:
        raise CnnkitError("pass classes=[...] when the splits are lists of samples.")
    return DetectionSet.from_samples(list(data), classes)


# ------------------------------------------------------------------------------ YOLO


def _label_path(image: Path) -> Path:
    """``.../images/a/b.png`` -> ``.../labels/a/b.txt`` (the last ``images`` folder)."""
    parts = list(image.parts)
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == "images":
            parts[k] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def _parse_yolo_labels(path: Path, nc: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one label file: classes ``(K,)`` and normalized ``cxcywh`` ``(K, 4)``."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise CnnkitError(f"label file {str(path)!r} is not UTF-8 text; rewrite it.") from None
    classes: list[int] = []
    rows: list[list[float]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        cells = line.split()
        if not cells:
            continue
        where = f"label file {str(path)!r}, line {n}"
        if len(cells) != 5:
            extra = " (polygon segmentation labels are not supported)" if len(cells) > 5 else ""
            raise CnnkitError(
                f"{where} has {len(cells)} values{extra}; write 'class cx cy w h' (5 values)."
            )
        try:
            c = int(cells[0])
        except ValueError:
            raise CnnkitError(
                f"{where}: class id {cells[0]!r} is not an integer; write the class index "
                f"0..{nc - 1} first."
            ) from None
        if not 0 <= c < nc:
            raise CnnkitError(
                f"{where}: class id {c} is outside 0..{nc - 1} (names has {nc} entries); fix "
                "the id or add the class to names in data.yaml."
            )
        try:
            v = [float(x) for x in cells[1:]]
        except ValueError:
            bad = next(x for x in cells[1:] if not _is_float(x))
            raise CnnkitError(
                f"{where}: {bad!r} is not a number; write cx cy w h as numbers in [0, 1]."
            ) from None
        if not all(math.isfinite(x) and -_TOL <= x <= 1 + _TOL for x in v):
            raise CnnkitError(
                f"{where}: coordinates {cells[1:]} are outside [0, 1]; divide cx and w "
                "by the image width, cy and h by its height."
            )
        if v[2] <= 0 or v[3] <= 0:
            raise CnnkitError(
                f"{where}: width {cells[3]} and height {cells[4]} must be above 0; remove the "
                "empty box."
            )
        classes.append(c)
        rows.append(v)
    return np.asarray(classes, dtype=np.int64), np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def _is_float(x: str) -> bool:
    try:
        float(x)
    except ValueError:
        return False
    return True


def read_yolo(
    yaml_path: str | os.PathLike,
    split: str = "train",
    size: int | Sequence[int] | None = None,
    *,
    channels: int = 3,
) -> DetectionSet:
    """Read one split of a YOLO (ultralytics layout) dataset.

    Args:
        yaml_path: The ``data.yaml`` file.
        split: The key of the split to read (``train``, ``val`` or ``test``).
        size: ``(n_H, n_W)`` (or one int for a square) to resize every image to, boxes
            scaled with it; None keeps the files' size, which must then be the same.
        channels: 1 (grey) or 3 (RGB).

    Returns:
        The set; ids are the image file stems, classes the yaml's names. Box edges
        (``cx +- w / 2``) past the image border are clipped to it.

    Raises:
        CnnkitError: If a key, folder or image is missing, an image cannot be decoded, or
            a label line is malformed (the file and line are named).
    """
    yp = Path(yaml_path)
    data = _load_yaml(yp)
    classes = _yolo_names(data, yp)
    if split not in data or data[split] in (None, ""):
        have = [k for k in _SPLIT_NAMES if data.get(k)]
        raise CnnkitError(
            f"{str(yp)!r} has no {split!r} key; add {split}: images/{split} or read one of "
            f"{', '.join(have) or 'train, val'}."
        )
    root = yp.parent
    if data.get("path"):
        root = Path(str(data["path"]))
        root = root if root.is_absolute() else yp.parent / root
    files = _split_images(data[split], root, yp, split)
    if not files:
        raise CnnkitError(
            f"the {split!r} split of {str(yp)!r} holds no images; put PNG/JPEG files in its folder."
        )
    shape = _as_size(size)
    images, boxes, labels = [], [], []
    for f in files:
        img, _ = _load_image(f, channels, shape)
        lp = _label_path(f)
        c, v = (
            _parse_yolo_labels(lp, len(classes))
            if lp.is_file()
            else (np.zeros(0, np.int64), np.zeros((0, 4)))
        )
        n_H, n_W = img.shape[1:]
        cx, cy, w, h = v[:, 0] * n_W, v[:, 1] * n_H, v[:, 2] * n_W, v[:, 3] * n_H
        b = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)  # (K, 4) xyxy
        b = np.clip(b, 0, [n_W, n_H, n_W, n_H])
        images.append(img)
        boxes.append(torch.from_numpy(b.astype(np.float32)))
        labels.append(torch.from_numpy(c))
    return DetectionSet(_stack(images, files), boxes, labels, [f.stem for f in files], classes)


def write_yolo(
    root: str | os.PathLike,
    splits: Mapping[str, DetectionSet | Sequence[DetectionSample]],
    classes: Sequence[str] | None = None,
) -> Path:
    """Write sets in the YOLO layout: PNG images, one label file each, and ``data.yaml``.

    ``data.yaml`` has no ``path`` key, so the folder can be moved: readers (cnnkit and
    ultralytics) then take the splits relative to the yaml's folder.

    Args:
        root: The dataset folder (created).
        splits: Split name (``train``, ``val``, ``test``) -> a set or a list of samples.
        classes: The class names; None takes those of the first set.

    Returns:
        The path of ``data.yaml``.

    Raises:
        CnnkitError: If a split name or image id cannot be a folder or file name, ids
            repeat within a split, or classes are missing.
    """
    import yaml

    out = Path(root)
    sets = {name: _as_set(s, classes) for name, s in splits.items()}
    if not sets:
        raise CnnkitError("no splits to write; pass e.g. {'train': ds, 'val': ds_val}.")
    names = list(classes) if classes is not None else next(iter(sets.values())).classes
    spec: dict[str, Any] = {}
    for split, ds in sets.items():
        _check_id(split)
        if len(set(ds.ids)) != len(ds.ids):
            raise CnnkitError(
                f"split {split!r} has repeated image ids; give every image a unique id."
            )
        img_dir, lab_dir = out / "images" / split, out / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lab_dir.mkdir(parents=True, exist_ok=True)
        n_H, n_W = ds.size
        for i in range(len(ds)):
            name = _check_id(ds.ids[i])
            _save_png(ds.images[i], img_dir / f"{name}.png")
            b = ds.boxes[i].double()
            lines = [
                f"{int(c)} {(x1 + x2) / 2 / n_W:.8f} {(y1 + y2) / 2 / n_H:.8f} "
                f"{(x2 - x1) / n_W:.8f} {(y2 - y1) / n_H:.8f}\n"
                for c, (x1, y1, x2, y2) in zip(ds.labels[i].tolist(), b.tolist())
            ]
            (lab_dir / f"{name}.txt").write_text("".join(lines), encoding="utf-8")
        spec[split] = f"images/{split}"
    spec["nc"] = len(names)
    spec["names"] = dict(enumerate(names))
    yaml_path = out / "data.yaml"
    yaml_path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return yaml_path


# ------------------------------------------------------------------------------ COCO


def _need(obj: Any, keys: Sequence[str], what: str, path: Path) -> None:
    if not isinstance(obj, dict):
        raise CnnkitError(f"{str(path)!r}: {what} is not a JSON object; fix the file.")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise CnnkitError(
            f"{str(path)!r}: {what} lacks the key{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(k) for k in missing)}; add {'them' if len(missing) > 1 else 'it'}."
        )


def read_coco(
    json_path: str | os.PathLike,
    images_dir: str | os.PathLike | None = None,
    size: int | Sequence[int] | None = None,
    *,
    channels: int = 3,
) -> DetectionSet:
    """Read a COCO detection JSON and its images.

    Args:
        json_path: The annotation file.
        images_dir: Folder the ``file_name`` entries are relative to; None tries the
            JSON's folder, then its ``images/`` subfolder.
        size: ``(n_H, n_W)`` (or one int) to resize every image to, boxes scaled with it;
            None keeps the files' size, which must then be the same.
        channels: 1 (grey) or 3 (RGB).

    Returns:
        The set, in the JSON's image order; classes are the category names in
        category-id order (class index = rank of the category id). Boxes that stray up
        to 1 pixel outside the image are clipped to it.

    Raises:
        CnnkitError: If a key is missing, an annotation names an unknown image or
            category, a box is empty or outside its image, or an image cannot be decoded.
    """
    jp = Path(json_path)
    if not jp.is_file():
        raise CnnkitError(f"COCO file {str(jp)!r} does not exist; check the path.")
    try:
        data = json.loads(jp.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CnnkitError(f"{str(jp)!r}, line {e.lineno}: {e.msg}; fix the JSON there.") from None
    _need(data, ("images", "annotations", "categories"), "the top level", jp)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise CnnkitError(f"{str(jp)!r}: {key!r} must be a JSON list; fix the file.")
    if not data["images"]:
        raise CnnkitError(f"{str(jp)!r} lists no images; add entries to 'images'.")
    cats = data["categories"]
    for c in cats:
        _need(c, ("id", "name"), "a category", jp)
    cat_ids = sorted({c["id"] for c in cats})
    if len(cat_ids) != len(cats):
        raise CnnkitError(f"{str(jp)!r} repeats a category id; give each category its own id.")
    name_of = {c["id"]: str(c["name"]) for c in cats}
    index_of = {cid: k for k, cid in enumerate(cat_ids)}
    classes = [name_of[cid] for cid in cat_ids]

    entries = data["images"]
    order: dict[Any, int] = {}
    for k, im in enumerate(entries):
        _need(im, ("id", "file_name"), f"image entry {k}", jp)
        if im["id"] in order:
            raise CnnkitError(f"{str(jp)!r} repeats image id {im['id']!r}; make ids unique.")
        order[im["id"]] = k
    base = Path(images_dir) if images_dir is not None else None
    shape = _as_size(size)
    images, paths, orig = [], [], []
    for im in entries:
        p = base / im["file_name"] if base is not None else jp.parent / im["file_name"]
        if base is None and not p.exists() and (jp.parent / "images" / im["file_name"]).exists():
            p = jp.parent / "images" / im["file_name"]
        img, (H0, W0) = _load_image(p, channels, shape, listed_in=jp)
        for key, have in (("height", H0), ("width", W0)):
            if key in im and im[key] is not None and int(im[key]) != have:
                raise CnnkitError(
                    f"{str(jp)!r} gives image id {im['id']!r} a {key} of {im[key]} but "
                    f"{str(p)!r} is {H0}x{W0}; fix the entry or the file."
                )
        images.append(img)
        paths.append(p)
        orig.append((H0, W0))
    per_boxes: list[list[list[float]]] = [[] for _ in entries]
    per_labels: list[list[int]] = [[] for _ in entries]
    for k, a in enumerate(data["annotations"]):
        _need(a, ("id", "image_id", "category_id", "bbox"), f"annotation {k}", jp)
        aid = a["id"]
        if a.get("iscrowd", 0):
            continue
        if a["image_id"] not in order:
            raise CnnkitError(
                f"{str(jp)!r}: annotation id {aid!r} names image_id {a['image_id']!r}, which "
                "is not in images; add the image or remove the annotation."
            )
        if a["category_id"] not in index_of:
            raise CnnkitError(
                f"{str(jp)!r}: annotation id {aid!r} has category_id {a['category_id']!r}, "
                f"not among the categories {cat_ids}; add the category or fix the id."
            )
        i = order[a["image_id"]]
        bb = a["bbox"]
        ok = isinstance(bb, list) and len(bb) == 4
        ok = ok and all(isinstance(v, (int, float)) and math.isfinite(v) for v in bb)
        if not ok:
            raise CnnkitError(
                f"{str(jp)!r}: annotation id {aid!r} bbox {bb!r} is not 4 numbers; write "
                "[x, y, width, height] in pixels."
            )
        x, y, w, h = (float(v) for v in bb)
        H0, W0 = orig[i]
        if (
            w <= 0
            or h <= 0
            or x < -_COCO_TOL
            or y < -_COCO_TOL
            or x + w > W0 + _COCO_TOL
            or y + h > H0 + _COCO_TOL
        ):
            raise CnnkitError(
                f"{str(jp)!r}: annotation id {aid!r} bbox {bb} is empty or outside its "
                f"{W0}x{H0} (width x height) image; fix it to [x, y, w, h] inside the image."
            )
        x1, y1 = max(x, 0.0), max(y, 0.0)
        x2, y2 = min(x + w, float(W0)), min(y + h, float(H0))
        n_H, n_W = images[i].shape[1:]
        sx, sy = n_W / W0, n_H / H0
        per_boxes[i].append([x1 * sx, y1 * sy, x2 * sx, y2 * sy])
        per_labels[i].append(index_of[a["category_id"]])
    boxes = [torch.tensor(b, dtype=torch.float64).reshape(-1, 4).float() for b in per_boxes]
    labels = [torch.tensor(y, dtype=torch.int64) for y in per_labels]
    return DetectionSet(_stack(images, paths), boxes, labels, [p.stem for p in paths], classes)


def write_coco(
    ds: DetectionSet,
    json_path: str | os.PathLike,
    images_dir: str | os.PathLike,
) -> Path:
    """Write a set as COCO: PNG images in ``images_dir`` and one annotation JSON.

    Image ids are the stems when these are integers (``00042.png`` -> 42), else a running
    index that skips the ids taken; category ids are ``1..len(classes)``; ``file_name`` is
    the bare file name (relative to ``images_dir``).

    Args:
        ds: The set.
        json_path: The JSON file to write.
        images_dir: Folder for the ``<id>.png`` images (created).

    Returns:
        The JSON path.

    Raises:
        CnnkitError: If an id cannot be a file name or ids repeat.
    """
    jp, idir = Path(json_path), Path(images_dir)
    if len(set(ds.ids)) != len(ds.ids):
        raise CnnkitError("the set has repeated image ids; give every image a unique id.")
    idir.mkdir(parents=True, exist_ok=True)
    jp.parent.mkdir(parents=True, exist_ok=True)
    taken: set[int] = set()
    nums: list[int | None] = []
    for s in ds.ids:
        v = int(s) if s.isascii() and s.isdigit() and int(s) not in taken else None
        if v is not None:
            taken.add(v)
        nums.append(v)
    counter = 1
    n_H, n_W = ds.size
    images, annotations = [], []
    for i, s in enumerate(ds.ids):
        name = _check_id(s) + ".png"
        img_id = nums[i]
        if img_id is None:
            while counter in taken:
                counter += 1
            img_id = counter
            taken.add(counter)
        _save_png(ds.images[i], idir / name)
        images.append({"id": img_id, "file_name": name, "width": n_W, "height": n_H})
        for c, (x1, y1, x2, y2) in zip(ds.labels[i].tolist(), ds.boxes[i].double().tolist()):
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": img_id,
                    "category_id": int(c) + 1,
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": k + 1, "name": n, "supercategory": ""} for k, n in enumerate(ds.classes)]
    doc = {"images": images, "annotations": annotations, "categories": categories}
    jp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return jp


# --------------------------------------------------------------------- synthetic shapes


def _iou_cover(box: np.ndarray, others: list[np.ndarray]) -> tuple[float, float]:
    """The largest IoU of ``box`` with ``others`` and the largest fraction of one of them
    that ``box`` covers."""
    iou, cover = 0.0, 0.0
    for o in others:
        iw = min(box[2], o[2]) - max(box[0], o[0])
        ih = min(box[3], o[3]) - max(box[1], o[1])
        inter = max(iw, 0.0) * max(ih, 0.0)
        a, b = (box[2] - box[0]) * (box[3] - box[1]), (o[2] - o[0]) * (o[3] - o[1])
        iou = max(iou, inter / (a + b - inter))
        cover = max(cover, inter / b)
    return iou, cover


def _synth_image(
    rng: np.random.Generator,
    size: int,
    n_classes: int,
    shapes: list[str],
    max_objects: int,
    plain: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image (uint8 ``(n_H, n_W, 3)``), its boxes ``(K, 4)`` and labels ``(K,)``."""
    img = _background(rng, size, plain)
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        c = int(rng.integers(n_classes))
        for _attempt in range(20):
            s = max(4, round(rng.uniform(0.1, 0.4) * size))
            x0, y0 = (int(v) for v in rng.integers(0, size - s + 1, 2))
            mask = _shape_mask(shapes[c], x0, y0, s, size, bool(rng.integers(2)))
            bbox = mask.getbbox()
            if bbox is None:
                continue
            box = np.asarray(bbox, dtype=np.float64)  # (x0, y0, x1 + 1, y1 + 1): tight xyxy
            iou, cover = _iou_cover(box, boxes)
            if iou > 0.3 or cover > 0.5:  # later shapes hide at most half of an earlier one
                continue
            m = np.asarray(mask) > 0
            under = img[m].mean(0)
            colour = rng.uniform(0, 255, 3)
            for _ in range(10):  # a colour that stands out from what lies under the shape
                if np.abs(colour - under).sum() >= 150:
                    break
                colour = rng.uniform(0, 255, 3)
            else:
                colour = np.where(under < 128, 255.0, 0.0)
            img[m] = colour
            boxes.append(box)
            labels.append(c)
            break
    if not plain:
        img = img + rng.normal(0, 4, img.shape)
    out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out, np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, np.int64)


def synth_shapes(
    root: str | os.PathLike,
    n: int,
    size: int = 64,
    classes: Sequence[str] = ("circle", "square", "triangle"),
    max_objects: int = 4,
    seed: int = 0,
    fmt: str = "yolo",
    splits: Sequence[float] = (0.8, 0.2),
    *,
    background: str = "texture",
) -> Path:
    """Draw a seeded detection set of coloured shapes and write it as YOLO or COCO.

    Each image has 1..``max_objects`` shapes of random class, colour, side (10-40% of
    the image side) and position; a placement whose box has IoU above 0.3 with an earlier
    one, or covers more than half of one, is redrawn (up to 20 times, then the object is
    left out). Boxes are the tight pixel bounds of the drawn shapes. The same arguments
    give the same bytes.

    Args:
        root: Folder to write to (created).
        n: Number of images.
        size: Image side in pixels (at least 16).
        classes: Shape names from :data:`SHAPES`, in class-index order.
        max_objects: Most objects per image.
        seed: Seed of everything drawn.
        fmt: ``"yolo"`` (``data.yaml``, ``images/<split>/``, ``labels/<split>/``) or
            ``"coco"`` (``images/`` and ``<split>.json``).
        splits: Fractions of the images for ``train``, ``val`` (and ``test``), in order.
        background: ``"texture"`` (colour gradient, smooth noise and grain) or
            ``"plain"`` (one colour per image, no grain: every pixel that differs from
            it belongs to a shape).

    Returns:
        The ``data.yaml`` path (YOLO) or ``train.json`` path (COCO).

    Raises:
        CnnkitError: If a shape name, format, background or split is unknown or invalid.
    """
    for c in classes:
        if c not in SHAPES:
            raise unknown_name("shape", c, SHAPES)
    if fmt not in ("yolo", "coco"):
        raise unknown_name("format", fmt, ("yolo", "coco"))
    if background not in ("texture", "plain"):
        raise unknown_name("background", background, ("texture", "plain"))
    if size < 16 or n < 1 or max_objects < 1:
        raise CnnkitError(
            f"need size >= 16, n >= 1 and max_objects >= 1; got size={size}, n={n}, "
            f"max_objects={max_objects}."
        )
    fr = [float(f) for f in splits]
    if not 1 <= len(fr) <= 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1) > 1e-6:
        raise CnnkitError(
            f"splits must be 1 to 3 non-negative fractions (train, val, test) summing to 1, "
            f"got {tuple(splits)}."
        )
    edges = [0, *(round(n * x) for x in np.cumsum(fr)[:-1]), n]
    counts = {name: edges[k + 1] - edges[k] for k, name in enumerate(_SPLIT_NAMES[: len(fr)])}
    empty = [s for s, f in zip(counts, fr) if f > 0 and counts[s] == 0]
    if empty:
        raise CnnkitError(
            f"n={n} leaves the {', '.join(empty)} split empty; draw more images or set its "
            "fraction to 0."
        )
    rng = np.random.default_rng(seed)
    sets: dict[str, DetectionSet] = {}
    i = 0
    for split, count in counts.items():
        if count == 0:
            continue
        images, boxes, labels, ids = [], [], [], []
        for _ in range(count):
            img, b, y = _synth_image(
                rng, size, len(classes), list(classes), max_objects, background == "plain"
            )
            images.append(torch.from_numpy(img).permute(2, 0, 1))  # (n_H, n_W, 3) -> (3, ..)
            boxes.append(torch.from_numpy(b))
            labels.append(torch.from_numpy(y))
            ids.append(f"{i:05d}")
            i += 1
        sets[split] = DetectionSet(torch.stack(images), boxes, labels, ids, classes)
    out = Path(root)
    if fmt == "yolo":
        return write_yolo(out, sets, classes)
    for split, ds in sets.items():
        write_coco(ds, out / f"{split}.json", out / "images")
    return out / f"{next(iter(sets))}.json"


# ---------------------------------------------------------------------- augmentation


def affine_detection(
    image: torch.Tensor,
    boxes: torch.Tensor,
    scale: float = 1.0,
    translate: Sequence[float] = (0.0, 0.0),
    *,
    min_visible: float = 0.25,
    fill: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scale about the image centre, then shift, an image and its boxes alike.

    A point ``(x, y)`` goes to ``(c_x + scale * (x - c_x) + t_x, c_y + scale * (y - c_y)
    + t_y)`` with ``(c_x, c_y) = (n_W / 2, n_H / 2)``. Boxes are clipped to the image;
    a box keeping less than ``min_visible`` of its (transformed) area is dropped.

    Args:
        image: Float ``(n_C, n_H, n_W)``.
        boxes: ``(K, 4)`` absolute ``xyxy``.
        scale: Zoom factor (above 0).
        translate: ``(t_x, t_y)`` in pixels.
        min_visible: Smallest kept fraction of a box's area inside the image.
        fill: Value of the pixels uncovered by the transform.

    Returns:
        The image, the kept boxes ``(K', 4)`` and the keep mask ``(K,)`` (index the labels
        with it).

    Raises:
        CnnkitError: If ``scale`` is not above 0.
    """
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as F

    if not scale > 0:
        raise CnnkitError(f"scale must be above 0, got {scale}.")
    n_H, n_W = image.shape[-2:]
    t = [float(translate[0]), float(translate[1])]
    out = F.affine(
        image,
        angle=0.0,
        translate=t,
        scale=float(scale),
        shear=[0.0, 0.0],
        interpolation=F.InterpolationMode.BILINEAR,
        fill=[float(fill)] * image.shape[0],
    )
    b = boxes.float().reshape(-1, 4)  # (K, 4)
    if len(b) == 0:
        return out, b, torch.zeros(0, dtype=torch.bool)
    moved = F.affine_bounding_boxes(
        b,
        format=tv_tensors.BoundingBoxFormat.XYXY,
        canvas_size=(n_H, n_W),
        angle=0.0,
        translate=t,
        scale=float(scale),
        shear=[0.0, 0.0],
        clamping_mode=None,
    )
    clipped = torch.stack(
        [
            moved[:, 0].clamp(0, n_W),
            moved[:, 1].clamp(0, n_H),
            moved[:, 2].clamp(0, n_W),
            moved[:, 3].clamp(0, n_H),
        ],
        dim=1,
    )  # (K, 4)
    area = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
    left = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (left > 0) & (left >= min_visible * area)
    return out, clipped[keep], keep


def augment_detection(
    image: torch.Tensor,
    boxes: torch.Tensor,
    generator: torch.Generator | None = None,
    flip: float = 0.5,
    scale: float = 0.2,
    translate: float = 0.1,
    color: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Randomly flip, scale, translate and colour-jitter an image with its boxes.

    With probability ``flip`` the image is mirrored (``x1' = n_W - x2``,
    ``x2' = n_W - x1``); then it is zoomed by ``1 + U(-scale, scale)`` about its centre
    and shifted by ``U(-translate, translate)`` of its width and height
    (:func:`affine_detection`: boxes clipped, those less than 25% visible dropped); then
    each channel gets a contrast ``1 + U(-color, color)`` about its mean and a brightness
    ``U(-color, color)``, clipped to ``[0, 1]``. A zero argument turns its step off.

    Args:
        image: Float ``(n_C, n_H, n_W)`` in ``[0, 1]``.
        boxes: ``(K, 4)`` absolute ``xyxy``.
        generator: Source of the random draws (None: torch's global one).
        flip: Probability of the horizontal flip.
        scale: Largest relative zoom change.
        translate: Largest shift, as a fraction of the image side.
        color: Largest brightness shift and relative contrast change.

    Returns:
        The image, the kept boxes ``(K', 4)`` and the keep mask ``(K,)`` (index the labels
        with it).

    Raises:
        CnnkitError: If the image is not ``(n_C, n_H, n_W)`` or boxes not ``(K, 4)``.
    """
    from torchvision.transforms.v2 import functional as F

    if image.ndim != 3 or not image.is_floating_point():
        raise CnnkitError(
            f"image must be float (n_C, n_H, n_W) in [0, 1], got {tuple(image.shape)} "
            f"{image.dtype}; use ds[i] or x.float() / 255."
        )
    b = torch.as_tensor(boxes, dtype=torch.float32)
    if b.numel() and (b.ndim != 2 or b.shape[1] != 4):
        raise CnnkitError(f"boxes must be (K, 4) xyxy, got {tuple(b.shape)}.")
    b = b.reshape(-1, 4)  # (K, 4)
    n_C, n_H, n_W = image.shape
    keep = torch.ones(len(b), dtype=torch.bool)

    def uniform(n: int, r: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) * 2 - 1) * r

    if flip > 0 and float(torch.rand(1, generator=generator)) < flip:
        image = F.horizontal_flip(image)
        b = torch.stack([n_W - b[:, 2], b[:, 1], n_W - b[:, 0], b[:, 3]], dim=1)  # (K, 4)
    if scale > 0 or translate > 0:
        s = 1.0 + float(uniform(1, scale)) if scale > 0 else 1.0
        t = uniform(2, translate) * torch.tensor([n_W, n_H]) if translate > 0 else torch.zeros(2)
        image, b, keep = affine_detection(image, b, s, t.tolist())
    if color > 0:
        contrast = 1.0 + uniform(n_C, color).view(n_C, 1, 1)  # (n_C,) -> (n_C, 1, 1)
        bright = uniform(n_C, color).view(n_C, 1, 1)
        mean = image.mean(dim=(1, 2), keepdim=True)
        image = ((image - mean) * contrast + mean + bright).clamp(0, 1)
    return image, b, keep
