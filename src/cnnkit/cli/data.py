"""``cnnkit data check DIR``: decode every file of an ImageFolder and list the bad ones."""

from __future__ import annotations

from collections.abc import Sequence

from cnnkit.cli.args import check_keys, split_args
from cnnkit.errors import CnnkitError, did_you_mean

DATA_HELP = """\
usage: cnnkit data check DIR [max_pixels=67108864] [channels=1|3]

subcommands:
  check     decode every image of an ImageFolder, as `cnnkit train data=DIR` would
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

_SUBCOMMANDS = ("check",)
_CHECK_KEYS = ["dir", "max_pixels", "channels"]


def data(argv: Sequence[str]) -> int:
    """``cnnkit data check DIR``."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(DATA_HELP, end="")
        return 0
    sub, rest = argv[0], argv[1:]
    if sub not in _SUBCOMMANDS:
        hits = did_you_mean(sub, _SUBCOMMANDS)
        hint = f"did you mean `cnnkit data {hits[0]}`?" if hits else "run `cnnkit data --help`."
        raise CnnkitError(f"unknown data subcommand {sub!r}: {hint}")
    return check(rest)


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
