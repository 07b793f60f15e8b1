"""Shared test set-up.

Under pytest-xdist (``make test`` with CI=true runs 2 workers on 2 cores) every
worker, and every subprocess it starts, uses one intra-op thread: two workers with
two OpenMP threads each on two cores slow each other down several times over.
"""

from __future__ import annotations

import os

import pytest

# speed calibrations (cnnkit.train.speed) are cached per machine: the tests keep theirs
# in a folder of their own, never in the user's cache
if "CNNKIT_CACHE" not in os.environ:
    import tempfile

    os.environ["CNNKIT_CACHE"] = tempfile.mkdtemp(prefix="cnnkit-test-cache-")

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture(scope="session")
def cnnkit_cli():
    """``run(args, cwd)``: ``python -m cnnkit.cli ARGS`` as a real subprocess in ``cwd``.

    One intra-op thread (several run side by side on two cores), output captured as
    text, a 300 s limit; returns the ``CompletedProcess``.
    """
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def run(args: list[str], cwd) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "cnnkit.cli", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )

    return run
