"""A corpus of good, odd and broken image files, written here, through the one decoder.

Every file either decodes to the right pixels or raises a CnnkitError naming it; an
ImageFolder mixing them loads with on_error=skip, listing exactly the broken files with
their reasons, and a real `cnnkit train` over it completes and writes skipped.csv.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.data import BadFile, load
from cnnkit.data.images import MAX_PIXELS, decode_image
from cnnkit.errors import CnnkitError

ROOT = Path(__file__).resolve().parents[2]
IMAGES_PY = ROOT / "src" / "cnnkit" / "data" / "images.py"


# --- writers ---------------------------------------------------------------------------------


def blocks(shape=(16, 24), cell=8, seed=0) -> np.ndarray:
    """Grey blocks of cell x cell pixels, every block a different level (JPEG keeps them)."""
    rows, cols = shape[0] // cell, shape[1] // cell
    levels = np.random.default_rng(seed).permutation(np.linspace(0, 250, rows * cols).round())
    return np.kron(levels.reshape(rows, cols), np.ones((cell, cell))).astype(np.uint8)


def jpeg_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def header_only_png(path: Path, height: int, width: int) -> Path:
    """A PNG whose IHDR claims height x width RGB pixels, with a tiny IDAT (a bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def png_with_bad_crc(path: Path, arr: np.ndarray, *, in_data: bool) -> Path:
    """A PNG with one byte flipped: in the IDAT data, or in the IDAT's CRC (data intact)."""
    Image.fromarray(arr).save(path)
    raw = bytearray(path.read_bytes())
    i = raw.index(b"IDAT")
    (length,) = struct.unpack(">I", raw[i - 4 : i])
    raw[i + 4 + (length // 2 if in_data else length)] ^= 0x01
    path.write_bytes(bytes(raw))
    return path


GOOD_RGB = np.kron(
    np.array([[[255, 0, 0], [0, 0, 255]], [[0, 255, 0], [255, 255, 255]]]), np.ones((8, 8, 1))
).astype(np.uint8)  # 16x16, four 8x8 quadrants


def write_bad_files(folder: Path) -> dict[str, Path]:
    """The broken files of the corpus; each must raise."""
    folder.mkdir(parents=True, exist_ok=True)
    jpeg = jpeg_bytes(GOOD_RGB)
    bad = {
        "empty": folder / "empty.png",
        "random": folder / "random.jpg",
        "cut10": folder / "cut10.jpg",
        "cut50": folder / "cut50.jpg",
        "cut90": folder / "cut90.jpg",
        "crc_data": folder / "crc_data.png",
        "crc_field": folder / "crc_field.png",
        "bomb": folder / "bomb.png",
        "big": folder / "big.png",
        "text": folder / "text.png",
    }
    bad["empty"].write_bytes(b"")
    bad["random"].write_bytes(np.random.default_rng(1).integers(0, 256, 3000, np.uint8).tobytes())
    for key, frac in (("cut10", 0.1), ("cut50", 0.5), ("cut90", 0.9)):
        bad[key].write_bytes(jpeg[: int(len(jpeg) * frac)])
    png_with_bad_crc(bad["crc_data"], GOOD_RGB, in_data=True)
    png_with_bad_crc(bad["crc_field"], GOOD_RGB, in_data=False)
    header_only_png(bad["bomb"], 30000, 30000)  # Pillow's own bomb limit
    header_only_png(bad["big"], 9000, 9000)  # 81M pixels: only max_pixels refuses it
    bad["text"].write_text("label,path\ncat,cat.png\n")
    return bad


def write_odd_good_files(folder: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """Unusual but valid files and the RGB pixels each must decode to (exactly)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    one = np.array([[[10, 200, 30]]], np.uint8)
    Image.fromarray(one).save(folder / "one.png")
    out["one"] = (folder / "one.png", one)
    other = np.zeros((16, 16, 3), np.uint8)
    other[:, :, 1] = 255
    frames = [Image.fromarray(GOOD_RGB), Image.fromarray(other)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    out["gif"] = (folder / "anim.gif", GOOD_RGB)
    small = Image.fromarray(other[:4, :4])  # a later page of another size
    frames[0].save(folder / "pages.tif", save_all=True, append_images=[small])
    out["tif"] = (folder / "pages.tif", GOOD_RGB)
    pal = Image.new("P", (16, 16), 0)
    pal.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    pal.paste(1, (0, 0, 8, 16))  # left half colour 1, right half index 0 (transparent)
    pal.save(folder / "palette.png", transparency=0)
    want = np.full((16, 16, 3), 255, np.uint8)
    want[:, :8] = (200, 30, 40)
    out["palette"] = (folder / "palette.png", want)
    return out


# --- single files ----------------------------------------------------------------------------


@pytest.fixture
def bad(tmp_path):
    return write_bad_files(tmp_path / "bad")


@pytest.mark.parametrize(
    "key",
    [
        "empty",
        "random",
        "cut10",
        "cut50",
        "cut90",
        "crc_data",
        "crc_field",
        "bomb",
        "big",
        "text",
    ],
)
def test_broken_file_raises_one_sentence_naming_it(bad, key):
    path = bad[key]
    for channels in (1, 3):
        with pytest.raises(CnnkitError) as e:
            decode_image(path, channels)
        msg = str(e.value)
        assert f"'{path}'" in msg, msg
        assert "\n" not in msg and msg.endswith("."), msg
        assert e.value.path == str(path) and e.value.reason  # what on_error=skip records


def test_reasons_say_what_is_wrong(bad):
    def reason(key):
        with pytest.raises(CnnkitError) as e:
            decode_image(bad[key])
        return e.value.reason

    assert reason("empty") == "the file is empty"
    assert reason("text").startswith("not a PNG, JPEG")
    assert reason("random").startswith("not a PNG, JPEG")
    assert "truncated" in reason("cut90").lower()
    assert reason("crc_field") == "bad CRC in the IDAT chunk: the file is corrupt"
    assert "9000x9000 = 81,000,000 pixels" in reason("big")
    assert "900,000,000 pixels" in reason("bomb")


def test_bad_crc_alone_is_caught(bad):
    """Pillow alone decodes a PNG whose IDAT CRC is wrong; cnnkit refuses it."""
    with Image.open(bad["crc_field"]) as im:
        im.load()  # no error: the check is cnnkit's own
    with pytest.raises(CnnkitError, match="bad CRC"):
        decode_image(bad["crc_field"])


@pytest.mark.parametrize("key", ["bomb", "big"])
def test_bomb_header_rejected_fast(bad, key):
    t0 = time.perf_counter()
    with pytest.raises(CnnkitError, match="max_pixels") as e:
        decode_image(bad[key])
    assert time.perf_counter() - t0 < 1.0
    assert f"'{bad[key]}'" in str(e.value)


_BOUNDED = """
import importlib.util, resource, sys
spec = importlib.util.spec_from_file_location("images_only", sys.argv[1])
images = importlib.util.module_from_spec(spec)
sys.modules["images_only"] = images
spec.loader.exec_module(images)  # numpy + Pillow only: no torch in this process
import PIL.Image
if sys.argv[4] == "unlimited":  # the control: what decoding the header's pixels would cost
    PIL.Image.MAX_IMAGE_PIXELS = None
vm = next(int(ln.split()[1]) * 1024 for ln in open("/proc/self/status") if ln.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (vm + 256 * 2**20, resource.RLIM_INFINITY))
try:
    images.decode_image(sys.argv[2], max_pixels=int(sys.argv[3]))
except images.CnnkitError as e:
    print("refused:", e)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_bomb_never_allocates_its_pixels(bad):
    """With 256 MiB of address space to spare, the 30000x30000 header is refused; without
    a pixel limit, Pillow tries to allocate its 3.6 GB and runs out (the control)."""

    def run(max_pixels: int, mode: str) -> str:
        args = [sys.executable, "-c", _BOUNDED, str(IMAGES_PY), str(bad["bomb"])]
        cp = subprocess.run(
            [*args, str(max_pixels), mode], capture_output=True, text=True, timeout=120
        )
        assert cp.returncode == 0, cp.stderr
        return cp.stdout

    assert run(MAX_PIXELS, "limited").startswith(f"refused: image '{bad['bomb']}' has")
    assert "(MemoryError)" in run(10**10, "unlimited")  # the pixels would not fit


def test_max_pixels_is_the_limit(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(GOOD_RGB).save(path)
    assert decode_image(path, max_pixels=256).shape == (16, 16, 3)
    with pytest.raises(CnnkitError, match=r"16x16 = 256 pixels, more than max_pixels=255"):
        decode_image(path, max_pixels=255)


def test_odd_but_valid_files_decode_exactly(tmp_path):
    for key, (path, want) in write_odd_good_files(tmp_path).items():
        got = decode_image(path, 3)
        np.testing.assert_array_equal(got, want, err_msg=key)
        grey = decode_image(path, 1)
        assert grey.shape == (*want.shape[:2], 1), key


def test_one_pixel_image(tmp_path):
    path = tmp_path / "one.png"
    Image.fromarray(np.array([[77]], np.uint8)).save(path)
    assert decode_image(path, 1).tolist() == [[[77]]]
    assert decode_image(path, 3).tolist() == [[[77, 77, 77]]]


@pytest.mark.parametrize(
    ("cmyk", "rgb"),
    [
        ((255, 0, 0, 0), (0, 255, 255)),  # cyan
        ((0, 255, 0, 0), (255, 0, 255)),  # magenta
        ((0, 0, 255, 0), (255, 255, 0)),  # yellow
        ((0, 0, 0, 255), (0, 0, 0)),  # black
        ((0, 0, 0, 0), (255, 255, 255)),  # paper
        ((0, 0, 0, 128), (127, 127, 127)),  # half black
    ],
)
def test_cmyk_jpeg_colours(tmp_path, cmyk, rgb):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), cmyk).save(path, quality=95)
    with Image.open(path) as im:
        assert im.mode == "CMYK"
    got = decode_image(path, 3).astype(int)
    assert np.abs(got - np.array(rgb)).max() <= 8, got[0, 0]
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    assert np.abs(decode_image(path, 1).astype(int) - luma).max() <= 8


def test_16bit_ramp_keeps_256_levels(tmp_path):
    ramp = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    path = tmp_path / "ramp.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16"
    got = decode_image(path, 1)[..., 0]
    np.testing.assert_array_equal(np.unique(got), np.arange(256))
    np.testing.assert_array_equal(got, np.rint(ramp * (255 / 65535)).astype(np.uint8))


_ORIENT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirror horizontal
    3: lambda a: a[::-1, ::-1],  # rotate 180
    4: lambda a: a[::-1],  # mirror vertical
    5: lambda a: np.rot90(a[:, ::-1], 1),  # mirror horizontal, rotate 270 CW
    6: lambda a: np.rot90(a, -1),  # rotate 90 CW
    7: lambda a: np.rot90(a[:, ::-1], -1),  # mirror horizontal, rotate 90 CW
    8: lambda a: np.rot90(a, 1),  # rotate 270 CW
}


@pytest.mark.parametrize("k", range(1, 9))
def test_exif_orientation(tmp_path, k):
    a = blocks()  # 16x24, six grey blocks: every orientation gives a different image
    path = tmp_path / f"o{k}.jpg"
    exif = Image.Exif()
    exif[0x0112] = k
    Image.fromarray(a).save(path, quality=95, exif=exif)
    want = _ORIENT[k](a).astype(int)
    got = decode_image(path, 1)[..., 0].astype(int)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 6
    others = [j for j in _ORIENT if j != k and _ORIENT[j](a).shape == want.shape]
    assert all(np.abs(got - _ORIENT[j](a)).max() > 40 for j in others)  # tells them apart


def test_files_are_never_rewritten(tmp_path):
    files = [*write_bad_files(tmp_path / "b").values()]
    files += [p for p, _ in write_odd_good_files(tmp_path / "g").values()]
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(blocks()).save(tmp_path / "rot.jpg", exif=exif)
    files.append(tmp_path / "rot.jpg")
    past = time.time() - 3600
    for p in files:
        os.utime(p, (past, past))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    for p in files:
        for channels in (1, 3):
            with contextlib.suppress(CnnkitError):
                decode_image(p, channels)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == before
    assert sorted(q.name for q in tmp_path.rglob("*") if q.is_file()) == sorted(
        p.name for p in files
    )  # nothing written beside them either


# --- a folder mixing them --------------------------------------------------------------------


def mixed_folder(root: Path) -> tuple[dict[str, Path], list[Path]]:
    """root/{cat,dog}: 12 good 16x16 images each (plus the odd valid files), the bad files."""
    rng = np.random.default_rng(0)
    good = []
    for ci, cls in enumerate(("cat", "dog")):
        for i in range(12):
            a = np.clip(rng.normal(80 + 100 * ci, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
            p = root / cls / f"{i:02d}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(a).save(p)
            good.append(p)
    good += [p for p, _ in write_odd_good_files(root / "cat").values()]
    bad = write_bad_files(root / "dog")
    return bad, good


def test_folder_skip_lists_exactly_the_bad_files(tmp_path):
    bad, good = mixed_folder(tmp_path / "mix")
    d = load(str(tmp_path / "mix"), on_error="skip", max_bad_fraction=0.5, dev=0, test=0)
    assert {s.path for s in d.info.skipped} == {str(p) for p in bad.values()}
    assert all(isinstance(s, BadFile) and s.reason for s in d.info.skipped)
    reasons = dict(d.info.skipped)  # (path, reason) pairs
    assert reasons[str(bad["empty"])] == "the file is empty"
    assert set(d.train.ids) == {str(p) for p in good}
    info = d.info.to_dict()  # JSON-friendly
    assert {"path": str(bad["text"]), "reason": reasons[str(bad["text"])]} in info["skipped"]


def test_folder_too_many_bad_files_stops_with_count_fraction_and_first(tmp_path):
    bad, good = mixed_folder(tmp_path / "mix")
    n_bad, total = len(bad), len(bad) + len(good)
    with pytest.raises(CnnkitError) as e:
        load(str(tmp_path / "mix"), on_error="skip")  # default max_bad_fraction 0.05
    msg = str(e.value)
    first = sorted(bad.values())[0]  # files are walked in sorted order
    assert msg.startswith(f"{n_bad} of {total} image files ({100 * n_bad / total:.1f}%) in "), msg
    assert "max_bad_fraction=0.05" in msg
    assert f"the first is '{first}'" in msg
    # exactly at the limit passes, just under it stops
    load(str(tmp_path / "mix"), on_error="skip", max_bad_fraction=n_bad / total, dev=0, test=0)
    with pytest.raises(CnnkitError, match="max_bad_fraction"):
        load(str(tmp_path / "mix"), on_error="skip", max_bad_fraction=(n_bad - 1) / total)
    with pytest.raises(CnnkitError, match="max_bad_fraction must be"):
        load(str(tmp_path / "mix"), on_error="skip", max_bad_fraction=1.5)


def test_folder_raise_names_the_first_bad_file(tmp_path):
    bad, _ = mixed_folder(tmp_path / "mix")
    with pytest.raises(CnnkitError) as e:
        load(str(tmp_path / "mix"))
    assert f"'{sorted(bad.values())[0]}'" in str(e.value)


def test_training_over_the_mixed_folder_writes_skipped_csv(tmp_path):
    bad, _ = mixed_folder(tmp_path / "mix")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "cnnkit.cli", "train", f"data={tmp_path / 'mix'}", "report=false"]
    cmd += ["on_error=skip", "max_bad_fraction=0.5", "epochs=1", "verbose=0", "batch=8"]
    cp = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert cp.returncode == 0, cp.stderr
    with open(tmp_path / "runs" / "classify" / "train" / "skipped.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "reason"]
    assert {r[0] for r in rows[1:]} == {str(p) for p in bad.values()}
    assert len(rows) == 1 + len(bad) and all(r[1] for r in rows[1:])


def test_train_config_checks_max_bad_fraction():
    from cnnkit.train.config import TrainConfig

    assert TrainConfig().max_bad_fraction == 0.05
    for bad_value, words in ((1.5, "must be <= 1"), (-0.1, "must be >= 0"), ("x", "a number")):
        with pytest.raises(CnnkitError, match=words):
            TrainConfig(max_bad_fraction=bad_value).validate()
