"""``cnnkit data check DIR`` (decode every file of an ImageFolder and list the bad ones),
``cnnkit data preview`` (a PNG grid of augmented training images),
``cnnkit data synth detect`` (a synthetic shapes detection set) and
``cnnkit data synth faces`` (synthetic faces, one folder per person)."""

from __future__ import annotations

from collections.abc import Sequence

from cnnkit.cli.args import check_keys, split_args
from cnnkit.errors import CnnkitError, did_you_mean

DATA_HELP = """\
usage: cnnkit data check DIR [max_pixels=67108864] [channels=1|3]
       cnnkit data preview [data=digits] [aug=strong] [n=8] [k=5] [seed=0] [out=aug_preview.png]
       cnnkit data synth detect out=DIR [n=1000] [size=64] [max_objects=4] [seed=0]
                                [format=yolo|coco]
       cnnkit data synth faces out=DIR [ids=40] [per_id=10] [size=64] [seed=0]
       cnnkit data synth segment out=DIR [n=1000] [size=64] [max_objects=4] [seed=0]
                                 [shapes=circle,square,triangle]
       cnnkit data synth signals out=DIR [n=200] [length=256] [noise=0.5] [seed=0]
       cnnkit data synth volumes out=DIR [n=200] [size=32] [noise=0.3] [seed=0]

subcommands:
  check     decode every image of an ImageFolder, as `cnnkit train data=DIR` would
  preview   write a PNG of training images and k augmented copies of each (aug=...)
  synth     detect: write a synthetic detection set: coloured circles, squares and
            triangles on textured backgrounds, 1..max_objects per image, 80% train /
            20% val, as YOLO txt + data.yaml (format=yolo) or COCO JSON (format=coco)
            faces: write synthetic faces, DIR/<person>/<k>.png (ids people, per_id
            images each, size x size RGB): the person fixes the face's shape, colours
            and hair; each image varies pose, light, expression and background
            segment: write a synthetic segmentation set: shapes on textured
            backgrounds with their masks (class 0 background, then one class per
            shape; overlapping shapes, the later on top), 80% train / 20% val, as
            images/, masks/ (palette PNGs of class indices) and data.yaml
            signals: write noisy 1D waveforms (chirp, sawtooth, sine, square; random
            frequency, phase, amplitude and offset), n per class, one channel of
            length samples, as DIR/{train,val,test}/<class>/<k>.npy (60/20/20);
            train with cnnkit train model=resnet1d data=DIR
            volumes: write noisy size^3 volumes holding one solid cube, cylinder or
            sphere (random size, position and intensity), n per class, as
            DIR/{train,val,test}/<class>/<k>.npy (60/20/20); train with
            cnnkit train model=convnet3d data=DIR
"""

PREVIEW_HELP = """\
usage: cnnkit data preview [data=digits] [aug=default] [n=8] [k=5] [seed=0] [size=N]
                           [channels=1|3] [out=aug_preview.png] [OP=VALUE ...]

Write a PNG grid: one row per training image (the first n of the training split),
the original in the first column, then k augmented copies, drawn as training draws
them (the same seed gives the same file, byte for byte). aug= is a preset (none,
default, light, strong, photo); OP=VALUE overrides one op of it: degrees, translate,
scale, fliplr, shear, crop, resized_crop, elastic, color_shift, pca_color, erase
(docs/augment.md). size= resizes the images first, as training does (lenet5: 32).

example: cnnkit data preview data=digits aug=strong size=32 n=6 k=6 out=digits_strong.png

exit status: 0 the file was written, 2 a mistake (an unknown key or preset, a bad value).
"""

CHECK_HELP = """\
usage: cnnkit data check DIR [max_pixels=67108864] [channels=1|3]

Decode every image file of an ImageFolder (DIR/<class>/* or
DIR/{train,dev|val,test}/<class>/*) with the checks training applies: allowed
formats (PNG, JPEG, BMP, GIF, TIFF, WebP, PPM/PGM), at most max_pixels pixels read
from the header (decompression bombs), PNG checksums, truncation. Prints the image
files per split and class, then each bad file with its reason.

exit status: 0 every file decodes, 1 bad files were found, 2 a mistake (no such
folder, not an ImageFolder, an unknown key).
"""

_SUBCOMMANDS = ("check", "preview", "synth")
_SYNTH_KINDS = ("detect", "faces", "segment", "signals", "volumes")
_SYNTH_KEYS = ["out", "n", "size", "max_objects", "seed", "format"]
_SYNTH_FACES_KEYS = ["out", "ids", "per_id", "size", "seed"]
_SYNTH_SEGMENT_KEYS = ["out", "n", "size", "max_objects", "seed", "shapes"]
_SYNTH_SIGNALS_KEYS = ["out", "n", "length", "noise", "seed"]
_SYNTH_VOLUMES_KEYS = ["out", "n", "size", "noise", "seed"]
_CHECK_KEYS = ["dir", "max_pixels", "channels"]
_PREVIEW_KEYS = ["data", "aug", "n", "k", "seed", "size", "channels", "out", "data_dir"]


def data(argv: Sequence[str]) -> int:
    """``cnnkit data check DIR``, ``cnnkit data preview`` and ``cnnkit data synth``."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(DATA_HELP, end="")
        return 0
    sub, rest = argv[0], argv[1:]
    if sub not in _SUBCOMMANDS:
        hits = did_you_mean(sub, _SUBCOMMANDS)
        hint = f"did you mean `cnnkit data {hits[0]}`?" if hits else "run `cnnkit data --help`."
        raise CnnkitError(f"unknown data subcommand {sub!r}: {hint}")
    if sub == "synth":
        return synth(rest)
    return preview(rest) if sub == "preview" else check(rest)


def synth(argv: Sequence[str]) -> int:
    """``cnnkit data synth detect out=DIR [n=1000] ...`` or ``cnnkit data synth faces out=DIR``."""
    pos, opts, wants_help = split_args(argv)
    if wants_help or not pos:
        print(DATA_HELP, end="")
        return 0
    if len(pos) != 1 or pos[0] not in _SYNTH_KINDS:
        hits = did_you_mean(pos[0], _SYNTH_KINDS) if len(pos) == 1 else []
        hint = (
            f"did you mean `cnnkit data synth {hits[0]}`?"
            if hits
            else "use cnnkit data synth detect|faces|segment out=DIR."
        )
        raise CnnkitError(
            "`cnnkit data synth` makes a detect, faces, segment, signals or volumes set, got "
            f"{' '.join(pos)!r}: {hint}"
        )
    if pos == ["faces"]:
        return _synth_faces(opts)
    if pos == ["segment"]:
        return _synth_segment(opts)
    if pos[0] in ("signals", "volumes"):
        return _synth_arrays(pos[0], opts)
    check_keys(opts, _SYNTH_KEYS, "data synth detect")
    if "out" not in opts or opts["out"] is True:
        raise CnnkitError("`cnnkit data synth detect` needs out=DIR (the folder to write).")
    fmt = str(opts.get("format", "yolo"))
    if fmt not in ("yolo", "coco"):
        raise CnnkitError(f"format={fmt!r} is not known; use format=yolo or format=coco.")
    for key, low, example in (
        ("n", 1, 1000),
        ("size", 16, 64),
        ("max_objects", 1, 4),
        ("seed", 0, 0),
    ):
        v = opts.get(key, example)
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise CnnkitError(
                f"{key} must be an integer >= {low}, got {v!r}; e.g. {key}={example}."
            )
    from cnnkit.detect.data import synth_shapes

    path = synth_shapes(
        str(opts["out"]),
        opts.get("n", 1000),
        size=opts.get("size", 64),
        max_objects=opts.get("max_objects", 4),
        seed=opts.get("seed", 0),
        fmt=fmt,
    )
    print(f"shapes saved in {opts['out']}/ (train with: cnnkit detect train data={path})")
    return 0


def _synth_faces(opts: dict) -> int:
    """``cnnkit data synth faces out=DIR [ids=40] [per_id=10] [size=64] [seed=0]``."""
    check_keys(opts, _SYNTH_FACES_KEYS, "data synth faces")
    if "out" not in opts or opts["out"] is True or opts["out"] is None:
        raise CnnkitError("`cnnkit data synth faces` needs out=DIR (the folder to write).")
    ids = _count(opts, "ids", 40, 1)
    per_id = _count(opts, "per_id", 10, 1)
    size = _count(opts, "size", 64, 32)
    seed = _count(opts, "seed", 0, 0)
    from cnnkit.faces.data import synth_faces

    out = str(opts["out"])
    synth_faces(out, identities=ids, per_identity=per_id, size=size, seed=seed)
    print(f"{ids} people x {per_id} images of {size}x{size} px, seed={seed}")
    print(f"faces saved in {out}/ (train with: cnnkit faces train data={out})")
    return 0


def _synth_segment(opts: dict) -> int:
    """``cnnkit data synth segment out=DIR [n=1000] [size=64] [max_objects=4] [seed=0]``."""
    check_keys(opts, _SYNTH_SEGMENT_KEYS, "data synth segment")
    if "out" not in opts or opts["out"] is True or opts["out"] is None:
        raise CnnkitError("`cnnkit data synth segment` needs out=DIR (the folder to write).")
    n = _count(opts, "n", 1000, 1)
    size = _count(opts, "size", 64, 16)
    max_objects = _count(opts, "max_objects", 4, 1)
    seed = _count(opts, "seed", 0, 0)
    shapes = opts.get("shapes", "circle,square,triangle")
    shapes = shapes if isinstance(shapes, list) else str(shapes).split(",")
    from cnnkit.segment.data import synth_segment

    path = synth_segment(
        str(opts["out"]),
        n,
        size=size,
        shapes=[str(s).strip() for s in shapes],
        max_objects=max_objects,
        seed=seed,
    )
    print(f"{n} images of {size}x{size} px with their masks, seed={seed}")
    print(f"saved in {opts['out']}/ (train with: cnnkit segment train data={path})")
    return 0


def _synth_arrays(kind: str, opts: dict) -> int:
    """``cnnkit data synth signals|volumes out=DIR [n=200] [length=256|size=32] [seed=0]``."""
    keys = _SYNTH_SIGNALS_KEYS if kind == "signals" else _SYNTH_VOLUMES_KEYS
    check_keys(opts, keys, f"data synth {kind}")
    if "out" not in opts or opts["out"] is True or opts["out"] is None:
        raise CnnkitError(f"`cnnkit data synth {kind}` needs out=DIR (the folder to write).")
    n = _count(opts, "n", 200, 3)
    seed = _count(opts, "seed", 0, 0)
    noise = opts.get("noise", 0.5 if kind == "signals" else 0.3)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise CnnkitError(f"noise must be a number >= 0, got {noise!r}; e.g. noise=0.5.")
    from cnnkit.data.signals import SIGNAL_CLASSES, VOLUME_CLASSES, write_signals, write_volumes

    out = str(opts["out"])
    if kind == "signals":
        length = _count(opts, "length", 256, 32)
        write_signals(out, n, length, seed=seed, noise=float(noise))
        what = f"{len(SIGNAL_CLASSES)} classes ({', '.join(SIGNAL_CLASSES)}) x {n} signals"
        what += f" of {length} samples x 1 channel"
        model = "resnet1d"
    else:
        size = _count(opts, "size", 32, 8)
        write_volumes(out, n, size, seed=seed, noise=float(noise))
        what = f"{len(VOLUME_CLASSES)} classes ({', '.join(VOLUME_CLASSES)}) x {n} volumes"
        what += f" of {size}x{size}x{size} x 1 channel"
        model = "convnet3d"
    print(f"{what}, noise={float(noise):g}, seed={seed}; 60% train / 20% val / 20% test")
    print(f"{kind} saved in {out}/ (train with: cnnkit train model={model} data={out})")
    return 0


def check(argv: Sequence[str]) -> int:
    """``cnnkit data check DIR [max_pixels=N] [channels=1|3]``."""
    pos, opts, wants_help = split_args(argv)
    if wants_help:
        print(CHECK_HELP, end="")
        return 0
    check_keys(opts, _CHECK_KEYS, "data check")
    if "dir" in opts:
        pos = [str(opts.pop("dir")), *pos]
    if len(pos) != 1:
        raise CnnkitError(
            f"`cnnkit data check` needs one DIR, got {len(pos)}; "
            "e.g. `cnnkit data check data/pets`."
        )
    from cnnkit.data import check_folder
    from cnnkit.data.images import MAX_PIXELS

    max_pixels = opts.get("max_pixels", MAX_PIXELS)
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise CnnkitError(
            f"max_pixels must be a positive integer, got {max_pixels!r}; e.g. max_pixels=100000000."
        )
    report = check_folder(pos[0], channels=opts.get("channels"), max_pixels=max_pixels)
    print(report.to_text(), end="")
    return 0 if report.ok else 1


def _count(opts: dict, key: str, default: int, low: int) -> int:
    v = opts.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise CnnkitError(f"{key} must be an integer >= {low}, got {v!r}; e.g. {key}={default}.")
    return v


def preview(argv: Sequence[str]) -> int:
    """``cnnkit data preview [data=digits] [aug=default] [n=8] [k=5] [seed=0] [out=...]``."""
    pos, opts, wants_help = split_args(argv)
    if wants_help:
        print(PREVIEW_HELP, end="")
        return 0
    from cnnkit.train.config import AUG_OPS, TrainConfig

    check_keys(opts, [*_PREVIEW_KEYS, *AUG_OPS], "data preview")
    if pos:
        raise CnnkitError(
            f"`cnnkit data preview` takes key=value settings only, got {pos[0]!r}; "
            "e.g. `cnnkit data preview data=digits aug=strong`."
        )
    n, k = _count(opts, "n", 8, 1), _count(opts, "k", 5, 1)
    seed = _count(opts, "seed", 0, 0)
    cfg = TrainConfig.from_dict(
        {"aug": opts.get("aug", "default"), **{o: opts[o] for o in AUG_OPS if o in opts}},
        source="cnnkit data preview",
    )
    from pathlib import Path

    from PIL import Image

    from cnnkit.data import load
    from cnnkit.data.augment import Augment, preview_grid

    source = str(opts.get("data", "digits"))
    from cnnkit.data.sources import resolve_source

    if resolve_source(source, opts.get("data_dir"))[0] == "arrays":
        raise CnnkitError(
            f"data={source} holds 1D signals or 3D volumes, which are trained without "
            "augmentation; `cnnkit data preview` shows augmented images."
        )
    data = load(
        source, size=opts.get("size"), channels=opts.get("channels"), data_dir=opts.get("data_dir")
    )
    aug = Augment.from_config(cfg, data.train)
    grid = preview_grid(data.train.images[:n], aug, k=k, seed=seed)
    out = Path(str(opts.get("out", "aug_preview.png")))
    if out.suffix.lower() != ".png":
        raise CnnkitError(f"out must name a .png file, got {str(out)!r}; e.g. out=preview.png.")
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(out, format="PNG")
    ops = ", ".join(f"{o}={getattr(aug, o):g}" for o in AUG_OPS if getattr(aug, o)) or "off"
    rows = min(n, len(data.train))
    print(
        f"preview saved in {out} ({grid.shape[1]}x{grid.shape[0]} px): {rows} training images of "
        f"{source} (rows), the original and {k} augmented copies (columns), aug={cfg.aug}: "
        f"{ops}; seed={seed}"
    )
    return 0
