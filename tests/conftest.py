"""Shared test set-up.

Under pytest-xdist (``make test`` with CI=true runs 2 workers on 2 cores) every
worker, and every subprocess it starts, uses one intra-op thread: two workers with
two OpenMP threads each on two cores slow each other down several times over.
"""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
