"""Neural style transfer: J(G) = alpha * J_content(C, G) + beta * J_style(S, G).

The costs (:mod:`cnnkit.style.costs`, every normalisation stated: they differ between
implementations, so the weights ``alpha`` and ``beta`` do not transfer), the frozen
feature network (:mod:`cnnkit.style.features`, VGG-19 by default) and the optimisation
of G's pixels (:func:`cnnkit.style.transfer.transfer`).
"""

from cnnkit.style.costs import (
    content_cost,
    gram_matrix,
    layer_style_cost,
    style_cost,
    total_cost,
    total_variation,
    unroll,
)
from cnnkit.style.transfer import StyleResult, transfer

__all__ = [
    "StyleResult",
    "content_cost",
    "gram_matrix",
    "layer_style_cost",
    "style_cost",
    "total_cost",
    "total_variation",
    "transfer",
    "unroll",
]
