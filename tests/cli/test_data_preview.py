"""`cnnkit data preview`: the PNG grid of augmented training images, and its mistakes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from cnnkit.cli import main
from cnnkit.cli.data import DATA_HELP, PREVIEW_HELP


def _run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["data", "preview", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_preview_writes_the_same_png_for_the_same_seed(tmp_path, capsys):
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    rc, out, _ = _run(capsys, "data=digits", "aug=strong", "n=3", "k=4", f"out={a}")
    assert rc == 0 and str(a) in out and "aug=strong" in out and "shear=10" in out
    assert out.splitlines()[-1].startswith(f"preview saved in {a} (")
    assert _run(capsys, "aug=strong", "n=3", "k=4", f"out={b}")[0] == 0  # data=digits default
    assert _run(capsys, "aug=strong", "n=3", "k=4", "seed=1", f"out={c}")[0] == 0
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b, c)]
    assert digest[0] == digest[1] != digest[2]
    img = np.asarray(Image.open(a))
    # digits are 8x8, upscaled 8x, with 2-pixel gaps: 3 rows, 1 + 4 columns
    assert img.shape == (2 + 3 * 66, 2 + 5 * 66, 3) and img.dtype == np.uint8


def test_preview_op_overrides_and_size(tmp_path, capsys):
    out = tmp_path / "sub" / "p.png"
    rc, text, _ = _run(capsys, "aug=none", "fliplr=1", "size=16", "n=2", "k=1", f"out={out}")
    assert rc == 0 and "fliplr=1" in text
    img = np.asarray(Image.open(out))[..., 0]
    z = 4  # 16 px tiles upscaled to 64
    tile = 16 * z + 2
    orig = img[2 : 2 + 16 * z, 2 : 2 + 16 * z]
    mirrored = img[2 : 2 + 16 * z, 2 + tile : 2 + tile + 16 * z]
    assert np.array_equal(mirrored, orig[:, ::-1])


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["aug=strng"], ["'strong'"]),
        (["sher=20"], ["shear="]),
        (["shear=100"], ["shear", "80"]),
        (["aug=photo"], ["channel", "pca_color=0"]),
        (["n=0"], ["n must be"]),
        (["out=x.jpg"], [".png"]),
        (["digits"], ["key=value"]),
    ],
)
def test_preview_mistakes_exit_2_with_one_sentence(tmp_path, capsys, args, words):
    rc, _, err = _run(capsys, *args, *([] if "out=" in args[0] else [f"out={tmp_path}/x.png"]))
    assert rc == 2
    line = err.strip()
    assert line.startswith("cnnkit: error:") and "\n" not in line
    for w in words:
        assert w in line
    assert not (tmp_path / "x.png").exists()


def test_preview_help(capsys):
    assert main(["data", "preview", "--help"]) == 0
    assert capsys.readouterr().out == PREVIEW_HELP
    assert main(["data", "--help"]) == 0
    text = capsys.readouterr().out
    assert text == DATA_HELP and "cnnkit data preview" in text
    assert main(["data", "previw"]) == 2
    assert "cnnkit data preview" in capsys.readouterr().err
