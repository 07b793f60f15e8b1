"""Neural style transfer's cost functions: content, Gram-matrix style, total and TV.

See :mod:`cnnkit.style.costs` for the normalisations (they differ between
implementations, so the weights ``alpha`` and ``beta`` do not transfer).
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

__all__ = [
    "content_cost",
    "gram_matrix",
    "layer_style_cost",
    "style_cost",
    "total_cost",
    "total_variation",
    "unroll",
]
