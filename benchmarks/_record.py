"""Shared by the benchmark scripts: what machine this is, and appending to RESULTS.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    """One line: CPU model, cores this process may use, memory, Python."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        have = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in text]
        flags = f" ({', '.join(have)})" if have else ""
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average {os.getloadavg()[0]:.1f} at the start"
    return f"{cpu}{flags}, {cores} cores{mem}, Python {platform.python_version()}{load}"


def command() -> str:
    """The command line that ran this script, as a user would type it."""
    return " ".join([".venv/bin/python", *sys.argv])


def md_table(head: list[str], rows: list[list[str]]) -> str:
    """A Markdown table: a header row, the rule, one line per row."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def record(title: str, body: str, *, machine_line: str | None = None) -> None:
    """Append a dated section to ``benchmarks/RESULTS.md``.

    Args:
        title: Section heading.
        body: Markdown (tables, notes) that the script printed.
        machine_line: The machine, as measured at the start (default: now).
    """
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"\n## {title} ({when})\n\n"
        f"Machine: {machine_line or machine()}.\n\n"
        f"```console\n$ {command()}\n```\n\n{body.rstrip()}\n"
    )
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(text)
    print(f"\nappended to {RESULTS}")
