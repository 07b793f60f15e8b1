"""The YOLO-style ``data.yaml`` layout that detection and segmentation share.

``data.yaml`` names a root (``path``, optional: the yaml's folder by default; relative to
the yaml's folder when relative), the splits (``train``, ``val``, optionally ``test``:
a folder searched recursively, a list of folders, or a ``.txt`` file of image paths) and
the classes (``names``: a list, or an ``{id: name}`` mapping numbered from 0). Detection
puts its labels beside the images (``labels/``), segmentation its masks (``masks/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError

__all__ = ["load_yaml", "split_images", "yaml_names"]


def load_yaml(path: Path) -> dict[str, Any]:
    """The mapping in ``path``, or one sentence naming the file and the line at fault."""
    import yaml

    if not path.is_file():
        raise CnnkitError(f"dataset file {str(path)!r} does not exist; check the path.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise CnnkitError(f"{str(path)!r}{line}: {problem}; fix the YAML syntax there.") from None
    except UnicodeDecodeError:
        raise CnnkitError(f"{str(path)!r} is not UTF-8 text; save it as UTF-8.") from None
    if not isinstance(data, dict):
        raise CnnkitError(f"{str(path)!r} must be a YAML mapping with train, val and names keys.")
    return data


def yaml_names(data: dict[str, Any], path: Path) -> list[str]:
    """The class names of a ``data.yaml`` (``names``: a list or ``{id: name}``), checked."""
    if "names" not in data:
        raise CnnkitError(f"{str(path)!r} has no 'names' key; add names: [class0, class1, ...].")
    names = data["names"]
    if isinstance(names, dict):
        try:
            keyed = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            keyed = {}
        if sorted(keyed) != list(range(len(names))):
            raise CnnkitError(
                f"{str(path)!r} names keys must be the class ids 0..{len(names) - 1}; "
                "number the classes from 0 without gaps."
            )
        out = [keyed[k] for k in range(len(names))]
    elif isinstance(names, list):
        out = [str(n) for n in names]
    else:
        raise CnnkitError(
            f"{str(path)!r} names must be a list or an {{id: name}} mapping; got "
            f"{type(names).__name__}."
        )
    if not out:
        raise CnnkitError(f"{str(path)!r} names is empty; list the class names.")
    nc = data.get("nc")
    if nc is not None and nc != len(out):
        raise CnnkitError(
            f"{str(path)!r} says nc: {nc} but names has {len(out)} entries; make them agree."
        )
    return out


def split_images(spec: Any, root: Path, yaml_path: Path, split: str) -> list[Path]:
    """The image files a split names (folders searched recursively, or a .txt list)."""
    from cnnkit.data.images import IMAGE_SUFFIXES

    specs = spec if isinstance(spec, list) else [spec]
    files: list[Path] = []
    for s in specs:
        if not isinstance(s, str) or not s:
            raise CnnkitError(
                f"{str(yaml_path)!r} {split}: must be a folder (or list of folders), got {s!r}."
            )
        p = Path(s)
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            found = [f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
            files += sorted(found, key=lambda f: f.relative_to(p).as_posix())
        elif p.is_file() and p.suffix == ".txt":
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line:
                    q = Path(line)
                    files.append(q if q.is_absolute() else (p.parent / q))
        else:
            raise CnnkitError(
                f"image folder {str(p)!r} ({split}: in {str(yaml_path)!r}) does not exist; "
                "fix the path (relative to 'path', or to the yaml's folder)."
            )
    return files
