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


@pytest.fixture(scope="session")
def cocoeval_stats():
    """pycocotools' own 12 bbox statistics for a ground-truth and a results file (quiet).

    ``stats[0]`` is mAP@[.5:.95], ``stats[1]`` mAP@0.5: the independent reference that
    cnnkit's detection scores are checked against.
    """
    import contextlib
    import io

    def stats(gt_path, results_path) -> list[float]:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(gt_path))
            ev = COCOeval(gt, gt.loadRes(str(results_path)), "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return [float(v) for v in ev.stats]

    return stats
