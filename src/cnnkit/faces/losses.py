"""The triplet loss, triplet mining, and the Siamese binary alternative.

The course's triplet loss on an anchor ``A``, a positive ``P`` (same person) and a
negative ``N`` (another person), with encodings ``f``::

    L(A, P, N) = max(||f(A) - f(P)||^2 - ||f(A) - f(N)||^2 + alpha, 0)
    J = sum_i L(A(i), P(i), N(i))

The squared distances are summed over the embedding axis *per triplet* and the hinge is
applied *per triplet*; only then is the batch reduced. Summing over the whole batch
before the hinge (``max(sum_i d_ap(i) - sum_i d_an(i) + alpha, 0)``) lets easy triplets
pay for hard ones and is a different (wrong) loss; the tests show a batch where the
two differ.

Random negatives are mostly already far away and give ``L = 0``: nothing to learn. The
miners choose triplets inside a P x K batch (P persons, K images each) instead:

- ``random``: every anchor-positive pair with a random negative (the baseline);
- ``batch_hard`` (Hermans et al. 2017, "In Defense of the Triplet Loss"): for each
  anchor its farthest positive and its nearest negative;
- ``semi_hard`` (Schroff et al. 2015, FaceNet): for each anchor-positive pair the
  nearest negative that is still *farther* than the positive
  (``d_ap < d_an``); when none is, the farthest negative (as TensorFlow Addons'
  ``triplet_semihard_loss`` does).

The Siamese alternative treats verification as binary classification of a pair:
``yhat = sigmoid(sum_k w_k |f(x_i)_k - f(x_j)_k| + b)``, or with the chi-square
similarity ``(f(x_i)_k - f(x_j)_k)^2 / (f(x_i)_k + f(x_j)_k)`` in place of the absolute
difference (DeepFace).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.errors import CnnkitError, unknown_name

__all__ = [
    "MINERS",
    "SiameseHead",
    "batch_all_triplets",
    "batch_hard_triplets",
    "mine_triplets",
    "pairwise_sq_distances",
    "random_triplets",
    "semi_hard_triplets",
    "triplet_loss",
]

MINERS = ("random", "batch_hard", "semi_hard")


def triplet_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    alpha: float = 0.2,
    reduction: str = "sum",
) -> torch.Tensor:
    """The course's triplet loss.

    Args:
        anchor: Encodings ``f(A)``, shape ``(m, d)``.
        positive: Encodings ``f(P)`` of the same persons, ``(m, d)``.
        negative: Encodings ``f(N)`` of other persons, ``(m, d)``.
        alpha: The margin.
        reduction: ``"sum"`` (the course's ``J``), ``"mean"`` or ``"none"``.

    Returns:
        ``J`` (a scalar), or the ``(m,)`` per-triplet losses for ``"none"``.
    """
    if reduction not in ("sum", "mean", "none"):
        raise unknown_name("triplet loss reduction", reduction, ["sum", "mean", "none"])
    if not (anchor.shape == positive.shape == negative.shape) or anchor.ndim != 2:
        raise CnnkitError(
            f"triplet_loss needs anchor, positive and negative of one shape (m, d), got "
            f"{tuple(anchor.shape)}, {tuple(positive.shape)}, {tuple(negative.shape)}."
        )
    pos_dist = (anchor - positive).pow(2).sum(-1)  # (m, d) -> (m,): ||f(A) - f(P)||^2
    neg_dist = (anchor - negative).pow(2).sum(-1)  # (m,)
    losses = torch.clamp(pos_dist - neg_dist + alpha, min=0)  # the hinge, per triplet
    if reduction == "none":
        return losses
    return losses.sum() if reduction == "sum" else losses.mean()


def pairwise_sq_distances(emb: torch.Tensor) -> torch.Tensor:
    """Squared euclidean distances between all rows.

    Args:
        emb: ``(n, d)``.

    Returns:
        ``(n, n)`` with ``D[i, j] = ||emb_i - emb_j||^2`` (exactly 0 on the diagonal).
    """
    d = torch.cdist(emb, emb).pow(2)  # (n, d) x (n, d) -> (n, n)
    return d.fill_diagonal_(0)


def _masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    same = labels[:, None] == labels[None, :]  # (n, n)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same  # positives (not oneself), negatives


def random_triplets(
    labels: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every ordered anchor-positive pair of the batch, each with a random negative.

    Args:
        labels: ``(n,)`` identities.
        generator: Random source (None: torch's global one).

    Returns:
        ``(a, p, n)`` index tensors of equal length.
    """
    pos, neg = _masks(labels)
    a, p = pos.nonzero(as_tuple=True)
    negs = neg[a].float()  # (T, n): the candidates of each pair's anchor
    ok = negs.sum(1) > 0
    a, p, negs = a[ok], p[ok], negs[ok]
    if not len(a):
        return a, p, a.clone()
    n = torch.multinomial(negs, 1, generator=generator).squeeze(1)  # (T, 1) -> (T,)
    return a, p, n


def batch_all_triplets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every valid triplet of the batch (``a != p`` same person, ``n`` another).

    Args:
        labels: ``(n,)`` identities.

    Returns:
        ``(a, p, n)`` index tensors.
    """
    pos, neg = _masks(labels)
    valid = pos[:, :, None] & neg[:, None, :]  # (n, n, n): [a, p, n]
    return valid.nonzero(as_tuple=True)


def batch_hard_triplets(
    emb: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each anchor, its farthest positive and its nearest negative (batch-hard).

    Args:
        emb: ``(n, d)`` encodings.
        labels: ``(n,)`` identities.

    Returns:
        ``(a, p, n)`` index tensors, one triplet per anchor that has both.
    """
    with torch.no_grad():
        D = pairwise_sq_distances(emb.detach().float())
        pos, neg = _masks(labels)
        ok = pos.any(1) & neg.any(1)
        p = torch.where(pos, D, torch.full_like(D, -1.0)).argmax(1)
        n = torch.where(neg, D, torch.full_like(D, float("inf"))).argmin(1)
        a = torch.arange(len(labels), device=labels.device)
    return a[ok], p[ok], n[ok]


def semi_hard_triplets(
    emb: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each anchor-positive pair, the nearest negative farther than the positive.

    FaceNet's semi-hard negatives satisfy ``d_ap < d_an``; when an anchor has none, its
    farthest negative is used (TensorFlow Addons' rule), which gives a zero or small loss
    instead of collapsing onto the hardest negatives.

    Args:
        emb: ``(n, d)`` encodings.
        labels: ``(n,)`` identities.

    Returns:
        ``(a, p, n)`` index tensors, one triplet per anchor-positive pair.
    """
    with torch.no_grad():
        D = pairwise_sq_distances(emb.detach().float())
        pos, neg = _masks(labels)
        a, p = pos.nonzero(as_tuple=True)
        ok = neg[a].any(1)
        a, p = a[ok], p[ok]
        d_an = D[a]  # (T, n): distances from each pair's anchor
        d_ap = D[a, p][:, None]  # (T,) -> (T, 1)
        is_neg = neg[a]
        semi = is_neg & (d_an > d_ap)
        inf = torch.full_like(d_an, float("inf"))
        nearest_semi = torch.where(semi, d_an, inf).argmin(1)
        farthest = torch.where(is_neg, d_an, -inf).argmax(1)
        n = torch.where(semi.any(1), nearest_semi, farthest)
    return a, p, n


def mine_triplets(
    emb: torch.Tensor,
    labels: torch.Tensor,
    strategy: str = "semi_hard",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triplets of a batch chosen by ``strategy`` (one of :data:`MINERS` or ``"all"``).

    Args:
        emb: ``(n, d)`` encodings.
        labels: ``(n,)`` identities.
        strategy: ``random``, ``batch_hard``, ``semi_hard`` or ``all``.
        generator: Random source for ``random``.

    Returns:
        ``(a, p, n)`` index tensors.
    """
    if strategy == "random":
        return random_triplets(labels, generator)
    if strategy == "batch_hard":
        return batch_hard_triplets(emb, labels)
    if strategy == "semi_hard":
        return semi_hard_triplets(emb, labels)
    if strategy == "all":
        return batch_all_triplets(labels)
    raise unknown_name("mining", strategy, [*MINERS, "all"])


class SiameseHead(nn.Module):
    """The course's binary-classification alternative: is this pair one person?

    ``yhat = sigmoid(sum_k w_k phi(f_i, f_j)_k + b)`` with ``phi = |f_i - f_j|``
    (``variant="l1"``) or the chi-square term ``(f_i - f_j)^2 / (f_i + f_j)``
    (``variant="chi2"``; the denominator is taken as ``|f_i + f_j| + eps`` so that
    encodings with negative components stay finite).

    Args:
        dim: Encoding size ``d``.
        variant: ``"l1"`` or ``"chi2"``.
        eps: Added to the chi-square denominator.
    """

    def __init__(self, dim: int = 128, variant: str = "l1", eps: float = 1e-6) -> None:
        super().__init__()
        if variant not in ("l1", "chi2"):
            raise unknown_name("Siamese variant", variant, ["l1", "chi2"])
        self.variant, self.eps = variant, eps
        self.fc = nn.Linear(dim, 1)  # the w_k and b

    def features(self, f_i: torch.Tensor, f_j: torch.Tensor) -> torch.Tensor:
        """``phi(f_i, f_j)``, shape ``(m, d)``."""
        if self.variant == "l1":
            return (f_i - f_j).abs()
        return (f_i - f_j).pow(2) / ((f_i + f_j).abs() + self.eps)

    def forward(self, f_i: torch.Tensor, f_j: torch.Tensor) -> torch.Tensor:
        """The logit ``sum_k w_k phi_k + b`` of each pair, shape ``(m,)`` (sigmoid: yhat)."""
        return self.fc(self.features(f_i, f_j)).squeeze(1)  # (m, 1) -> (m,)

    def loss(self, f_i: torch.Tensor, f_j: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        """Mean logistic loss of the pairs (``same`` is 1 for one person, 0 otherwise)."""
        return F.binary_cross_entropy_with_logits(self(f_i, f_j), same.float())
