"""Verification: distances between encodings, the ROC, and a threshold fitted on your pairs.

Two images are "the same person" when ``d(f(x1), f(x2)) <= threshold``. The threshold
is not a constant of the network: it is chosen on the user's own labelled pairs (dev
identities the network never trained on), by one of three rules:

- ``eer``: the equal error rate point, where the false-accept rate (FAR, different
  persons accepted) equals the false-reject rate (FRR, one person rejected);
- ``far``: the most accepting threshold whose FAR is at most ``target_far`` (a bank
  that tolerates 1 false accept in 1,000 pairs asks ``target_far=0.001``);
- ``accuracy``: the threshold with the most pairs right.

Candidate thresholds are the midpoints between consecutive distinct distances (and
one below the smallest, one above the largest), so a threshold never sits exactly on
a pair's distance.

Identification is not verification. Asking "is this anyone of my N enrolled persons?"
accepts a stranger when ANY of the N distances is within the threshold, so with a
1:1 false-accept rate ``p`` a stranger gets in with probability ``1 - (1 - p)^N``
(about ``N p``): 26% for ``p = 1%`` and 30 persons. :func:`open_set_threshold` turns
the target into the 1:1 rate each comparison may have, ``1 - (1 - target)^(1/N)``,
and reads the threshold off the smallest different-person distances kept with the
calibration, so that identification keeps strangers out at the target whatever the
size of the database (``cnnkit faces identify`` uses it; ``verify`` is 1:1 and uses
the calibrated threshold itself).

Distances: ``euclidean`` is ``||f1 - f2||`` (on unit vectors, between 0 and 2) and
``cosine`` is ``1 - f1 . f2`` (between 0 and 2); on unit vectors
``euclidean^2 = 2 * cosine``, so both rank pairs the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError, unknown_name

__all__ = [
    "METHODS",
    "METRICS",
    "Calibration",
    "calibrate",
    "distance_matrix",
    "open_set_threshold",
    "pair_distances",
    "plot_roc",
    "roc",
]

METRICS = ("euclidean", "cosine")
METHODS = ("eer", "far", "accuracy")
#: Different-person distances kept with a calibration (the smallest ones).
TAIL = 5000


def pair_distances(a: np.ndarray, b: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """Distances between rows ``a[i]`` and ``b[i]``.

    Args:
        a: ``(m, d)`` encodings.
        b: ``(m, d)`` encodings.
        metric: ``euclidean`` or ``cosine``.

    Returns:
        ``(m,)`` float64 distances.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if metric == "euclidean":
        return np.sqrt(((a - b) ** 2).sum(1))
    if metric == "cosine":
        na = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        return 1.0 - (a * b).sum(1) / np.maximum(na, 1e-12)
    raise unknown_name("distance", metric, METRICS)


def distance_matrix(a: np.ndarray, b: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """Distances between every row of ``a`` and every row of ``b``.

    Args:
        a: ``(m, d)`` encodings.
        b: ``(n, d)`` encodings.
        metric: ``euclidean`` or ``cosine``.

    Returns:
        ``(m, n)`` float64 distances (``D[i, j] = d(a_i, b_j)``).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if metric == "euclidean":
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return np.sqrt(np.maximum(sq, 0))
    if metric == "cosine":
        na = np.maximum(np.linalg.norm(a, axis=1), 1e-12)[:, None]
        nb = np.maximum(np.linalg.norm(b, axis=1), 1e-12)[None, :]
        return 1.0 - (a @ b.T) / (na * nb)
    raise unknown_name("distance", metric, METRICS)


def roc(distances: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC of "accept when ``d <= t``" over every candidate threshold.

    Args:
        distances: ``(m,)`` pair distances.
        same: ``(m,)`` bool, True for pairs of one person.

    Returns:
        ``(thresholds, far, tar)``, each ``(T,)``, thresholds increasing: ``far[i]`` is
        the share of different-person pairs with ``d <= thresholds[i]`` and ``tar[i]``
        the share of same-person pairs (true-accept rate, ``1 - FRR``).
    """
    d = np.asarray(distances, np.float64)
    s = np.asarray(same, bool)
    if d.shape != s.shape or d.ndim != 1:
        raise CnnkitError(f"distances {d.shape} and same {s.shape} must be two (m,) arrays.")
    n_pos, n_neg = int(s.sum()), int((~s).sum())
    if not n_pos or not n_neg:
        raise CnnkitError(
            f"calibration needs pairs of one person and pairs of two persons, got {n_pos} "
            f"and {n_neg}; use more identities with at least 2 images each."
        )
    u = np.unique(d)
    mids = (u[1:] + u[:-1]) / 2
    t = np.concatenate([[max(u[0] - 1e-6, 0.0)], mids, [u[-1] + 1e-6]])  # distances >= 0
    order = np.sort(d[s]), np.sort(d[~s])
    tar = np.searchsorted(order[0], t, side="right") / n_pos
    far = np.searchsorted(order[1], t, side="right") / n_neg
    return t, far, tar


@dataclass
class Calibration:
    """A verification threshold and how it was chosen.

    Attributes:
        method: ``eer``, ``far`` or ``accuracy``.
        metric: ``euclidean`` or ``cosine``.
        threshold: Accept a pair when its distance is at most this.
        far: False-accept rate at the threshold, on the calibration pairs.
        frr: False-reject rate there.
        accuracy: Share of pairs right there.
        eer: The equal error rate of these pairs (whatever the method).
        auc: Area under the ROC (TAR against FAR).
        target_far: The false-accept rate asked for: the ``far`` method's 1:1 target,
            and the target of identification (:func:`open_set_threshold`) for every
            method.
        n_same: Same-person pairs used.
        n_diff: Different-person pairs used.
        low_tail: The smallest different-person distances, sorted (the
            ``max(TAIL, target_far * n_diff + 1)`` smallest), for :func:`open_set_threshold`.
    """

    method: str
    metric: str
    threshold: float
    far: float
    frr: float
    accuracy: float
    eer: float
    auc: float
    target_far: float
    n_same: int
    n_diff: int
    low_tail: list[float] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        """The calibration saved by :meth:`to_dict` (``calibration.json``)."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values."""
        return asdict(self)

    def line(self) -> str:
        """One line for the terminal."""
        how = f"FAR <= {self.target_far:g}" if self.method == "far" else self.method
        return (
            f"threshold {self.threshold:.4f} ({self.metric} distance, chosen by {how} on "
            f"{self.n_same} same / {self.n_diff} different pairs): FAR {self.far:.2%}, FRR "
            f"{self.frr:.2%}, accuracy {self.accuracy:.2%}; EER {self.eer:.2%}, AUC {self.auc:.4f}"
        )


def calibrate(
    distances: np.ndarray,
    same: np.ndarray,
    method: str = "eer",
    target_far: float = 0.01,
    metric: str = "euclidean",
) -> Calibration:
    """Choose the threshold on labelled pairs.

    Args:
        distances: ``(m,)`` pair distances.
        same: ``(m,)`` bool.
        method: ``eer``, ``far`` or ``accuracy``.
        target_far: For ``far``: the largest false-accept rate allowed.
        metric: The distance's name (recorded).

    Returns:
        The :class:`Calibration`.
    """
    if method not in METHODS:
        raise unknown_name("calibration method", method, METHODS)
    if not 0 <= target_far <= 1:
        raise CnnkitError(f"target_far must be between 0 and 1, got {target_far!r}; e.g. 0.01.")
    t, far, tar = roc(distances, same)
    s = np.asarray(same, bool)
    n_pos, n_neg = int(s.sum()), int((~s).sum())
    frr = 1 - tar
    acc = (tar * n_pos + (1 - far) * n_neg) / (n_pos + n_neg)
    e = int(np.argmin(np.abs(far - frr)))
    eer = float((far[e] + frr[e]) / 2)
    if method == "eer":
        i = e
    elif method == "accuracy":
        i = int(np.argmax(acc))
    else:
        ok = np.nonzero(far <= target_far)[0]
        i = int(ok.max()) if len(ok) else 0  # none (different persons at distance 0): strictest
    auc = float(((far[1:] - far[:-1]) * (tar[1:] + tar[:-1]) / 2).sum())  # trapezoids
    return Calibration(
        method=method,
        metric=metric,
        threshold=float(t[i]),
        far=float(far[i]),
        frr=float(frr[i]),
        accuracy=float(acc[i]),
        eer=eer,
        auc=auc,
        target_far=float(target_far),
        n_same=n_pos,
        n_diff=n_neg,
        low_tail=np.sort(np.asarray(distances, np.float64)[~s])[
            : max(TAIL, int(np.ceil(target_far * n_neg)) + 1)
        ].tolist(),
    )


def open_set_threshold(cal: Calibration, n_enrolled: int, target_far: float | None = None) -> float:
    """The identification threshold for a database of ``n_enrolled`` persons.

    A stranger is compared with ``n_enrolled`` persons; to let strangers in with
    probability at most ``target_far`` (comparisons taken as independent), each 1:1
    comparison may accept with ``p = 1 - (1 - target_far)^(1/n_enrolled)``. The
    threshold is the most accepting candidate (a midpoint between the calibration's
    different-person distances) whose 1:1 false-accept rate is at most ``p``, and never
    above the 1:1 calibrated threshold.

    Args:
        cal: The calibration (with its ``low_tail``).
        n_enrolled: Persons in the database.
        target_far: Strangers' acceptance rate allowed (default: the calibration's).

    Returns:
        The distance threshold for identification.
    """
    target = cal.target_far if target_far is None else target_far
    if n_enrolled < 1 or not cal.low_tail:
        return cal.threshold
    p = 1 - (1 - target) ** (1 / n_enrolled)
    k = int(np.floor(p * cal.n_diff))  # different-person distances allowed below t
    tail = np.asarray(cal.low_tail)
    u = np.unique(tail)
    below = np.searchsorted(tail, u, side="right")  # distances <= each distinct value
    ok = np.nonzero(below <= k)[0]
    if not len(ok):
        t = max(tail[0] - 1e-6, 0.0)
    elif ok[-1] + 1 < len(u):
        t = (u[ok[-1]] + u[ok[-1] + 1]) / 2
    else:  # k reaches past the kept tail: accept fewer than len(tail) <= k, still safe
        t = (u[-2] + u[-1]) / 2 if len(u) > 1 else max(u[-1] - 1e-6, 0.0)
    return float(min(t, cal.threshold))


def plot_roc(distances: np.ndarray, same: np.ndarray, cal: Calibration | None = None) -> Any:
    """The ROC (true-accept rate against false-accept rate), with the chosen point.

    Args:
        distances: ``(m,)`` pair distances.
        same: ``(m,)`` bool.
        cal: The operating point to mark (optional).

    Returns:
        A matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    _, far, tar = roc(distances, same)
    fig = Figure(figsize=(5, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.plot(far, tar, color="C0", lw=1.8, label="ROC")
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--", label="chance")
    if cal is not None:
        ax.plot(
            [cal.far],
            [1 - cal.frr],
            "o",
            color="C3",
            label=f"threshold {cal.threshold:.3f} ({cal.method})",
        )
    ax.set_xlabel("false-accept rate (different persons accepted)")
    ax.set_ylabel("true-accept rate (1 - FRR)")
    ax.set_xlim(-0.01, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig
