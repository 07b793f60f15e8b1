"""`cnnkit data check DIR` as a real subprocess: the counts, the bad files, the exit status."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def _png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(path)
    return path


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "cnnkit.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The folders, and every command run once, side by side (the torch import dominates)."""
    tmp = tmp_path_factory.mktemp("check")
    good = tmp / "good"  # train/val/test layout: 3 + 2 cat, 1 + 1 dog, 1 + 0 test
    for i in range(3):
        _png(good / "train" / "cat" / f"{i}.png", 10 * i)
    for i in range(2):
        _png(good / "train" / "dog" / f"{i}.png", 100 + i)
    _png(good / "val" / "cat" / "a.png")
    _png(good / "val" / "dog" / "b.png")
    _png(good / "test" / "cat" / "c.png")
    (good / "train" / "cat" / "notes.txt").write_text("not an image, not counted")
    flat = tmp / "flat"  # flat layout with bad files
    for c in ("cat", "dog"):
        for i in range(4):
            _png(flat / c / f"{i}.png", i)
    bad = [flat / "cat" / "empty.png", flat / "dog" / "text.jpg", flat / "dog" / "cut.png"]
    bad[0].write_bytes(b"")
    bad[1].write_text("hello")
    whole = (flat / "dog" / "0.png").read_bytes()
    bad[2].write_bytes(whole[: len(whole) // 2])
    commands = {
        "good": ["data", "check", str(good)],
        "bad": ["data", "check", str(flat)],
        "missing": ["data", "check", str(tmp / "no" / "such")],
        "help": ["data", "check", "--help"],
        "typo": ["data", "check", str(good), "max_pixel=10"],
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip(commands, pool.map(lambda a: _run(a, tmp), commands.values())))
    return {"tmp": tmp, "good_dir": good, "bad_files": bad, "run": done}


def _table(out: str) -> dict[tuple[str, str], tuple[int, int]]:
    """{(split, class): (images, bad)} from the report's rows."""
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2].isdigit() and parts[3].isdigit():
            rows[(parts[0], parts[1])] = (int(parts[2]), int(parts[3]))
    return rows


def test_good_folder_exit_0_and_counts(world):
    cp = world["run"]["good"]
    assert cp.returncode == 0, cp.stderr
    assert _table(cp.stdout) == {
        ("train", "cat"): (3, 0),
        ("train", "dog"): (2, 0),
        ("val", "cat"): (1, 0),
        ("val", "dog"): (1, 0),
        ("test", "cat"): (1, 0),
        ("test", "dog"): (0, 0),
    }
    assert cp.stdout.splitlines()[0] == f"{world['good_dir']}: 2 classes, 8 image files"
    assert cp.stdout.splitlines()[-1] == "all 8 image files decode."
    assert cp.stderr == ""


def test_bad_files_exit_1_each_named_with_reason(world):
    cp = world["run"]["bad"]
    assert cp.returncode == 1, cp.stderr
    assert _table(cp.stdout) == {("all", "cat"): (4, 1), ("all", "dog"): (4, 2)}
    listed = {
        line.strip().split(": ", 1)[0]: line.split(": ", 1)[1]
        for line in cp.stdout.splitlines()
        if line.startswith("  ")
    }
    assert set(listed) == {str(p) for p in world["bad_files"]}
    assert listed[str(world["bad_files"][0])] == "the file is empty"
    assert listed[str(world["bad_files"][1])].startswith("not a PNG, JPEG")
    assert "3 of 11 image files (27.3%) cannot be decoded" in cp.stdout
    assert "max_bad_fraction=0.28" in cp.stdout  # what on_error=skip would need
    assert "Traceback" not in cp.stderr


def test_missing_dir_exit_2_one_line(world):
    cp = world["run"]["missing"]
    assert cp.returncode == 2
    assert cp.stdout == ""
    lines = cp.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnkit: error: "), cp.stderr
    assert f"'{world['tmp'] / 'no' / 'such'}' does not exist" in lines[0]


def test_unknown_key_suggests(world):
    cp = world["run"]["typo"]
    assert cp.returncode == 2
    assert cp.stderr.strip() == (
        "cnnkit: error: unknown key 'max_pixel' for `cnnkit data check`: did you mean max_pixels=?"
    )


def test_help_states_exit_statuses(world):
    cp = world["run"]["help"]
    assert cp.returncode == 0
    assert cp.stdout.startswith("usage: cnnkit data check DIR")
    assert "0 every file decodes, 1 bad files were found, 2 a mistake" in " ".join(
        cp.stdout.split()
    )


def test_in_process_main_and_top_level_usage(tmp_path, capsys):
    from cnnkit.cli import USAGE, main

    assert "cnnkit data check DIR" in USAGE
    assert main(["data", "chek", str(tmp_path)]) == 2
    assert "did you mean `cnnkit data check`?" in capsys.readouterr().err
    assert main(["data", "check", str(tmp_path)]) == 2  # no class folders
    assert "has no class folders" in capsys.readouterr().err
    _png(tmp_path / "a" / "x.png")
    _png(tmp_path / "b" / "y.png")
    assert main(["data", "check", f"dir={tmp_path}"]) == 0
    assert capsys.readouterr().out.endswith("all 2 image files decode.\n")
