"""``cnnkit analyze``: export a run's errors for tagging, or read the tags back (glue only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cnnkit.cli.args import check_keys, flag, split_args
from cnnkit.errors import CnnkitError

ANALYZE_HELP = """\
usage: cnnkit analyze run=runs/classify/NAME [split=dev] [out=FOLDER] [tags=blurry,ambiguous,other]
       cnnkit analyze tags=FOLDER/errors.csv [examples=N errors=N]

Error analysis, as the course runs it.

1. With run=: score the run's best weights on the split (rebuilt from its config.yaml)
   and write into out= (default RUN/analysis/SPLIT):
     errors.csv         one row per misclassified image:
                        id,file,source,label,pred,prob,loss,suspect,mislabeled,<tags>,notes
     images/<id>.png    each misclassified image (id = its position in the split)
     contact_sheet.png  a grid of the errors captioned "#id label -> pred" (at most sheet=100)
     errors.json        the split's size and error rate, classes and suspected mislabels
   and print the top losses, the most-confused class pairs and the suspected mislabels
   (confident learning, Northcutt et al. 2021: suspect = "suggests" a class other than its
   label). tags= names the tag columns (default blurry,ambiguous,other).
2. Fill the tag cells with 1, x or yes (leave the others empty), mark the mislabeled
   column, write notes, add columns for new tags, delete rows to tag a sample.
3. With tags=FOLDER/errors.csv: print the course's table (per tag: count, % of errors,
   and the error if all of them were fixed: error * (1 - share)), and the split of the
   error into incorrect labels and other causes, with advice.

settings: run, split=dev|train_dev|test|train, out, tags, sheet=100, top=10,
overwrite=false (replace an errors.csv that holds tags); with tags=FILE.csv: examples
and errors (the split's size and error count, needed only when errors.json is missing)
"""

_EXPORT_KEYS = ("run", "split", "out", "tags", "sheet", "top", "overwrite")
_READ_KEYS = ("tags", "examples", "errors")


def _count(opts: dict[str, Any], key: str, default: int | None, low: int, eg: int) -> int | None:
    v = opts.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise CnnkitError(f"{key} must be a whole number >= {low}, got {v!r}; e.g. {key}={eg}.")
    return v


def analyze(argv: Sequence[str]) -> int:
    """``cnnkit analyze run=... [split=dev] [out=FOLDER]`` or ``cnnkit analyze tags=FILE.csv``.

    Args:
        argv: The arguments after ``analyze``.

    Returns:
        0 on success (a mistake raises :class:`~cnnkit.errors.CnnkitError`: exit status 2).
    """
    pos, opts, wants_help = split_args(argv)
    if wants_help:
        print(ANALYZE_HELP, end="")
        return 0
    check_keys(opts, dict.fromkeys([*_EXPORT_KEYS, *_READ_KEYS]), "analyze")
    if pos:
        raise CnnkitError(
            f"`cnnkit analyze` takes key=value settings, got {' '.join(pos)!r}; "
            "e.g. run=runs/classify/NAME or tags=FOLDER/errors.csv."
        )
    if "run" in opts:
        return _export(opts)
    if "tags" in opts:
        return _read(opts)
    raise CnnkitError(
        "pass run=runs/classify/NAME to export a run's errors, or tags=FOLDER/errors.csv "
        "to read them back once tagged."
    )


def _export(opts: dict[str, Any]) -> int:
    for key in _READ_KEYS[1:]:
        if key in opts:
            raise CnnkitError(f"{key}= is for reading a tagged CSV (tags=FILE.csv), not with run=.")
    run = opts["run"]
    if run is True or run is None or str(run) == "":
        raise CnnkitError("run needs the run folder: run=runs/classify/NAME.")
    tags = opts.get("tags")
    if isinstance(tags, str) and tags.lower().endswith(".csv"):
        raise CnnkitError(
            f"with run=, tags= names the tag columns (e.g. tags=dog,great_cat,blurry); "
            f"to read {tags} back, drop run=."
        )
    if tags is True or (tags is not None and not isinstance(tags, (str, int, list))):
        raise CnnkitError(f"tags must be names, got {tags!r}; e.g. tags=dog,great_cat,blurry.")
    if isinstance(tags, int):
        tags = str(tags)
    sheet = _count(opts, "sheet", 100, 0, 100)
    top = _count(opts, "top", 10, 1, 10)
    overwrite = flag(opts, "overwrite", False)
    out = opts.get("out")
    if out is True or (out is not None and str(out) == ""):
        raise CnnkitError("out needs a folder: out=analysis/dev.")

    from cnnkit.strategy.analysis import DEFAULT_TAGS, export_errors

    res = export_errors(
        str(run),
        None if out is None else str(out),
        split=str(opts.get("split", "dev")),
        tags=DEFAULT_TAGS if tags is None else tags,
        sheet=sheet,  # type: ignore[arg-type]
        top=top,  # type: ignore[arg-type]
        overwrite=overwrite,
    )
    print("\n".join(res.lines()))
    return 0


def _read(opts: dict[str, Any]) -> int:
    for key in _EXPORT_KEYS[1:]:
        if key in opts and key != "tags":
            raise CnnkitError(
                f"{key}= is for exporting a run's errors (run=...), not with tags=FILE.csv."
            )
    path = opts["tags"]
    if not isinstance(path, str) or not path.lower().endswith(".csv"):
        raise CnnkitError(
            f"tags={path!r}: without run=, tags= is the tagged CSV (tags=FOLDER/errors.csv); "
            "to name tag columns, add run=runs/classify/NAME."
        )
    examples = _count(opts, "examples", None, 1, 180)
    errors = _count(opts, "errors", None, 0, 12)

    from cnnkit.strategy.analysis import read_tags, tag_table

    table = tag_table(read_tags(path, examples=examples, errors=errors))
    print("\n".join(table.lines()))
    return 0
