"""A real run's report.html, rendered in headless Chromium.

``cnnkit train`` (a real subprocess) trains LeNet-5 on the bundled digits and writes
the page; Chromium (Debian's ``chromium``, installed by ``make test``) opens it
offline through Playwright with every network request refused, and the test checks
what a reader sees: no console errors, every image decoded, the sections present, the
numbers equal to an independent scoring of the run, and a print layout. The
screenshot and the PDF are kept in ``build/test-artifacts/`` (or
``$CNNKIT_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("CNNKIT_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
KEY_SECTIONS = {
    "summary",
    "curves",
    "diagnosis",
    "per-class",
    "confusion",
    "errors",
    "saliency",
    "filters",
    "augmentation",
    "speed",
    "config",
}


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, (
        "Chromium is missing: `make test` installs Debian's chromium package "
        "(apt-get install chromium); the report test needs it."
    )
    return exe


@pytest.fixture(scope="module")
def run(tmp_path_factory, cnnkit_cli):
    """A 2-epoch LeNet-5 digits run made by the command line, with human=2%."""
    root = tmp_path_factory.mktemp("page")
    p = cnnkit_cli(
        ["train", "epochs=2", "verbose=2", "human=2%", "compile=false", "project=runs"], root
    )
    assert p.returncode == 0, p.stderr
    lines = p.stdout.rstrip("\n").splitlines()
    folder = root / "runs" / "classify" / "train"
    return folder, lines


@pytest.fixture(scope="module")
def page(run):
    """The page in Chromium: its console messages, refused requests, DOM facts, PDF."""
    from playwright.sync_api import sync_playwright

    folder, _ = run
    html = folder / "report.html"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    got: dict = {"console": [], "errors": [], "requests": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium(), args=FLAGS)
        try:
            ctx = browser.new_context(viewport={"width": 1366, "height": 768}, offline=True)
            pg = ctx.new_page()

            def route(r):
                if r.request.url.startswith("file:"):
                    r.continue_()
                else:  # nothing may be fetched: the page must be self-contained
                    got["requests"].append(r.request.url)
                    r.abort()

            pg.route("**/*", route)
            pg.on("console", lambda m: got["console"].append((m.type, m.text)))
            pg.on("pageerror", lambda e: got["errors"].append(str(e)))
            pg.goto(html.as_uri(), wait_until="load")
            got["images"] = pg.evaluate(
                "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])"
            )
            got["sections"] = pg.evaluate(
                "Array.from(document.querySelectorAll('section[id]')).map(s => s.id)"
            )
            got["gallery"] = pg.evaluate("document.querySelectorAll('.gallery figure').length")
            got["tables"] = pg.evaluate(
                """Array.from(document.querySelectorAll('section')).map(s => [s.id,
                   Array.from(s.querySelectorAll('tr')).map(
                     r => Array.from(r.cells).map(c => c.innerText.trim()))])"""
            )
            got["text"] = pg.evaluate("document.body.innerText")
            got["width"] = pg.evaluate("document.documentElement.scrollWidth")
            pg.screenshot(path=str(ARTIFACTS / "report_page.png"), full_page=True)
            pg.emulate_media(media="print")
            nav = "getComputedStyle(document.querySelector('nav')).display"
            got["nav_print"] = pg.evaluate(nav)
            got["pdf"] = pg.pdf(format="A4", print_background=True)
            (ARTIFACTS / "report_page.pdf").write_bytes(got["pdf"])
        finally:
            browser.close()
    return got


def test_train_writes_the_page_and_names_it_in_its_last_line(run):
    folder, lines = run
    last = lines[-1]
    assert last.startswith("run saved in runs/classify/train/: report.html, plots/, "), last
    assert (folder / "report.html").is_file()
    pngs = sorted(p.name for p in (folder / "plots").glob("*.png"))
    assert pngs == sorted(
        f"{n}.png"
        for n in (
            "augmentation",
            "confusion",
            "filters",
            "learning_curves",
            "saliency",
            "top_losses",
        )
    )


def test_page_is_self_contained_and_small(run):
    folder, _ = run
    text = (folder / "report.html").read_text()
    size = (folder / "report.html").stat().st_size
    assert size < 5_000_000, size  # the limit for a digits run
    # every image is inline; nothing points outside the file
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", text)
    assert "<script" not in text.lower()
    # each plot saved beside the page is the very PNG the page embeds (top_losses.png is
    # the gallery as one picture: the page shows the images one by one instead)
    import base64

    for png in (folder / "plots").glob("*.png"):
        if png.name == "top_losses.png":
            continue
        assert base64.b64encode(png.read_bytes()).decode() in text, png.name


def test_chromium_renders_it_offline_without_errors(page):
    assert page["requests"] == []
    assert page["errors"] == []
    assert [m for m in page["console"] if m[0] in ("error", "warning")] == []
    assert len(page["images"]) >= 8
    bad = [img for img in page["images"] if not (img[1] and img[2] > 0)]
    assert bad == []
    assert set(page["sections"]) >= KEY_SECTIONS
    assert page["width"] <= 1366  # no sideways scrolling on a laptop screen
    assert (ARTIFACTS / "report_page.png").stat().st_size > 10_000


def test_printable(page):
    assert page["nav_print"] == "none"  # the links are hidden on paper
    pdf = page["pdf"]
    assert pdf.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf))
    assert pages >= 3, pages


def _table(page, section):
    return next(rows for sid, rows in page["tables"] if sid == section)


def test_numbers_on_the_page_equal_an_independent_scoring(run, page):
    """The split table, per-class table and gallery agree with cnnkit.evaluate.report."""
    from cnnkit.evaluate.metrics import report

    folder, _ = run
    rows = {r[0]: r for r in _table(page, "summary") if r and r[0] in ("train", "dev", "test")}
    assert set(rows) == {"train", "dev", "test"}
    from cnnkit.train.classify import evaluate

    for split in ("dev", "test"):
        rep = report(folder, split=split)
        val = evaluate(folder, split=split)  # the `cnnkit val` path (the trainer's own)
        assert rows[split][3] == f"{100 * val['accuracy']:.2f}%"
        assert rows[split][2] == f"{val['loss']:.4f}"
        assert rows[split][1] == f"{rep.n:,}"
        assert rows[split][3] == f"{100 * rep.accuracy:.2f}%"
        assert rows[split][2] == f"{rep.loss:.4f}"
    dev = report(folder, split="dev")
    wrong = round(dev.n * (1 - dev.accuracy))
    assert page["gallery"] == min(wrong, 48)
    per_class = {r[0]: r for r in _table(page, "per-class") if r and r[0] in dev.classes}
    for c, p, r, f, s in zip(dev.classes, dev.precision, dev.recall, dev.f1, dev.support):
        assert per_class[c][1:] == [
            f"{100 * p:.1f}%",
            f"{100 * r:.1f}%",
            f"{100 * f:.1f}%",
            f"{s:,}",
        ]
    assert "human-level error" in page["text"] and "2.00%" in page["text"]
    assert "avoidable bias" in page["text"]


def test_report_command_rebuilds_the_page(run, cnnkit_cli, tmp_path):
    folder, _ = run
    out = tmp_path / "again.html"
    p = cnnkit_cli(["report", f"run={folder}", "human=0.5%", f"out={out}"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1].startswith(f"report saved in {out} (")
    text = out.read_text()
    assert "human-level error (0.50%)" in text or "0.50%" in text
    assert (tmp_path / "plots" / "learning_curves.png").is_file()
