"""The neural-style-transfer cost functions, with every normalisation spelled out.

The course generates an image ``G`` whose activations ``a_G`` at a chosen layer match
the content image's ``a_C`` (the content cost) and whose Gram matrices (channel
correlations) match the style image's at several layers (the style cost)::

    J(G) = alpha * J_content(C, G) + beta * J_style(S, G)

Activations are ``(m, n_C, n_H, n_W)`` (PyTorch's NCHW layout) throughout; the course
exercise's TensorFlow tensors are ``(m, n_H, n_W, n_C)`` (NHWC) and go through
:func:`unroll` with ``layout="NHWC"``, which moves the channels first *before*
reshaping. Reshaping ``(n_H, n_W, n_C)`` straight to ``(n_C, n_H*n_W)`` is legal but
mixes channels and positions, and gives a wrong Gram matrix.

Normalisations (``N = n_H * n_W * n_C``, the number of activations of one image at the
layer):

- Content, ``"exercise"`` (the default, the programming exercise)::

      J_content = 1/(4 n_H n_W n_C) * sum (a_C - a_G)^2

  Dividing by ``N`` makes the cost a mean squared difference: it does not grow with
  the layer's size or the image's resolution, so one ``alpha`` works whatever layer is
  chosen. The extra ``1/4`` is the exercise's choice (it mirrors the ``4`` of the style
  cost); its gradient is ``-(a_C - a_G) / (2 n_H n_W n_C)``.
- Content, ``"lecture"`` (the lecture and Gatys et al. 2015)::

      J_content = 1/2 * sum (a_C - a_G)^2

  unnormalised: it grows with ``N``.
- Style at layer ``l`` (the exercise and Gatys et al.'s ``1/(4 N_l^2 M_l^2)``, with
  ``N_l = n_C`` and ``M_l = n_H n_W``)::

      J_style[l] = 1/(2 n_H n_W n_C)^2 * sum_{k,k'} (G_S[k,k'] - G_G[k,k'])^2
      G[k,k'] = sum_{h,w} a[k,h,w] * a[k',h,w]          (unnormalised Gram)

  Each Gram entry is a sum of ``n_H n_W`` products, so its squared difference grows
  like ``(n_H n_W)^2``: the ``1/(n_H n_W)^2`` undoes that, the ``1/n_C^2`` averages over
  the ``n_C^2`` entries, and the ``1/4`` is Gatys et al.'s constant.
- Style over layers: ``J_style = sum_l lambda[l] * J_style[l]``.
- With ``m > 1`` images in a batch every sum above also runs over the batch (the
  costs add up, they are not averaged).

Other implementations scale differently. The PyTorch tutorial ("Neural Transfer Using
PyTorch") divides the Gram matrix by ``m * n_C * n_H * n_W`` and takes the mean squared
error of the Grams (dividing by ``n_C^2`` again), and its content loss is the mean
squared error (``1/(n_H n_W n_C)``, 4 times the exercise's). The weights ``alpha`` and
``beta`` (the tutorial's ``content_weight=1``, ``style_weight=1e6``; the exercise's
``alpha=10``, ``beta=40``) therefore do not transfer from one implementation to
another.

:func:`total_variation` is an optional smoothness term (not in the course) that can be
added to ``J`` with a small weight of its own to reduce high-frequency noise in ``G``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import torch

from cnnkit.errors import CnnkitError, unknown_name

__all__ = [
    "CONTENT_NORMALIZATIONS",
    "LAYOUTS",
    "content_cost",
    "gram_matrix",
    "layer_style_cost",
    "style_cost",
    "total_cost",
    "total_variation",
    "unroll",
]

LAYOUTS = ("NCHW", "NHWC")
CONTENT_NORMALIZATIONS = ("exercise", "lecture")


def _check_4d(name: str, a: torch.Tensor, dims: str = "(m, n_C, n_H, n_W)") -> None:
    """Raise unless ``a`` is a 4-dim tensor.

    Args:
        name: The argument's name, for the message.
        a: The activations.
        dims: The expected axes, for the message.

    Raises:
        CnnkitError: ``a`` is not a tensor or does not have 4 dims.
    """
    if not isinstance(a, torch.Tensor):
        raise CnnkitError(
            f"{name} must be a torch tensor of shape {dims}, got {type(a).__name__}; "
            f"convert it with torch.as_tensor({name})."
        )
    if a.ndim != 4:
        raise CnnkitError(
            f"{name} must have 4 dims {dims}, got shape {tuple(a.shape)}; "
            f"add the batch axis of one image with {name}[None]."
        )


def _check_same_shape(fn: str, name_1: str, a_1: torch.Tensor, name_2: str, a_2: torch.Tensor):
    """Raise unless ``a_1`` and ``a_2`` are 4-dim tensors of one shape.

    Args:
        fn: The calling function's name, for the message.
        name_1: The first argument's name.
        a_1: The first activations.
        name_2: The second argument's name.
        a_2: The second activations.

    Raises:
        CnnkitError: Either is not 4-dim, or their shapes differ.
    """
    _check_4d(name_1, a_1)
    _check_4d(name_2, a_2)
    if a_1.shape != a_2.shape:
        raise CnnkitError(
            f"{fn} needs {name_1} and {name_2} of one shape (m, n_C, n_H, n_W), got "
            f"{tuple(a_1.shape)} and {tuple(a_2.shape)}; take both from the same layer "
            f"with images of the same size."
        )


def unroll(a: torch.Tensor, layout: str = "NCHW") -> torch.Tensor:
    """Unroll one layer's activations to ``(m, n_C, n_H*n_W)``.

    For ``"NHWC"`` the channels are moved first *before* reshaping: reshaping
    ``(m, n_H, n_W, n_C)`` straight to ``(m, n_C, n_H*n_W)`` mixes channels and
    positions (the course exercise's pitfall).

    Args:
        a: Activations ``(m, n_C, n_H, n_W)`` for ``"NCHW"`` (PyTorch's layout) or
            ``(m, n_H, n_W, n_C)`` for ``"NHWC"`` (TensorFlow's, the exercise's).
        layout: ``"NCHW"`` or ``"NHWC"``.

    Returns:
        The unrolled activations, ``(m, n_C, n_H*n_W)``; row ``c`` of image ``i`` is
        channel ``c`` read position by position, row-major over ``(n_H, n_W)``.

    Raises:
        CnnkitError: An unknown layout, or ``a`` without 4 dims.
    """
    if layout not in LAYOUTS:
        raise unknown_name("activation layout", str(layout), LAYOUTS)
    if layout == "NHWC":
        _check_4d("a", a, "(m, n_H, n_W, n_C)")
        a = a.permute(0, 3, 1, 2)  # (m, n_H, n_W, n_C) -> (m, n_C, n_H, n_W)
    else:
        _check_4d("a", a)
    m, n_C, n_H, n_W = a.shape
    return a.reshape(m, n_C, n_H * n_W)  # (m, n_C, n_H, n_W) -> (m, n_C, n_H*n_W)


def content_cost(
    a_C: torch.Tensor, a_G: torch.Tensor, normalization: str = "exercise"
) -> torch.Tensor:
    """The content cost between the content image's and the generated image's activations.

    ``"exercise"``: ``1/(4 n_H n_W n_C) * sum((a_C - a_G)^2)``; ``"lecture"``:
    ``1/2 * sum((a_C - a_G)^2)``. With ``m > 1`` the sum also runs over the batch (the
    per-image costs are added, not averaged). ``a_C`` is a fixed target: it is detached
    and gets no gradient.

    Args:
        a_C: The content image's activations at the chosen layer, ``(m, n_C, n_H, n_W)``.
        a_G: The generated image's activations at the same layer, same shape.
        normalization: ``"exercise"`` (default) or ``"lecture"``.

    Returns:
        ``J_content``, a 0-dim tensor differentiable with respect to ``a_G``.

    Raises:
        CnnkitError: An unknown normalization, or ``a_C`` and ``a_G`` not of one
            4-dim shape.
    """
    if normalization not in CONTENT_NORMALIZATIONS:
        raise unknown_name("content cost normalization", str(normalization), CONTENT_NORMALIZATIONS)
    _check_same_shape("content_cost", "a_C", a_C, "a_G", a_G)
    _, n_C, n_H, n_W = a_G.shape
    squared = ((a_C.detach() - a_G) ** 2).sum()
    if normalization == "exercise":
        return squared / (4 * n_H * n_W * n_C)
    return squared / 2


def gram_matrix(A: torch.Tensor) -> torch.Tensor:
    """The Gram (style) matrix ``A @ A.T`` of unrolled activations.

    ``G[k, k'] = sum_p A[k, p] * A[k', p]``: how much channels ``k`` and ``k'`` fire
    together, summed over the ``n_H*n_W`` positions (not normalised).

    Args:
        A: Unrolled activations ``(n_C, n_H*n_W)``, or a batch ``(m, n_C, n_H*n_W)``
            (from :func:`unroll`).

    Returns:
        ``(n_C, n_C)``, or ``(m, n_C, n_C)`` for a batch; symmetric.

    Raises:
        CnnkitError: ``A`` without 2 or 3 dims.
    """
    if not isinstance(A, torch.Tensor) or A.ndim not in (2, 3):
        shape = tuple(A.shape) if isinstance(A, torch.Tensor) else type(A).__name__
        raise CnnkitError(
            f"gram_matrix needs unrolled activations (n_C, n_H*n_W) or (m, n_C, n_H*n_W), "
            f"got {shape}; unroll (m, n_C, n_H, n_W) activations first with unroll(a)."
        )
    return A @ A.transpose(-2, -1)  # (..., n_C, n_H*n_W) @ (..., n_H*n_W, n_C) -> (..., n_C, n_C)


def layer_style_cost(a_S: torch.Tensor, a_G: torch.Tensor) -> torch.Tensor:
    """The style cost of one layer.

    ``1/(2 n_H n_W n_C)^2 * sum_{k,k'} (G_S[k,k'] - G_G[k,k'])^2`` with ``G_S``, ``G_G``
    the unnormalised Gram matrices of the unrolled activations. With ``m > 1`` the sum
    also runs over the batch. ``a_S`` is a fixed target: it is detached.

    Args:
        a_S: The style image's activations at the layer, ``(m, n_C, n_H, n_W)``.
        a_G: The generated image's activations at the same layer, same shape.

    Returns:
        ``J_style[l]``, a 0-dim tensor differentiable with respect to ``a_G``.

    Raises:
        CnnkitError: ``a_S`` and ``a_G`` not of one 4-dim shape.
    """
    _check_same_shape("layer_style_cost", "a_S", a_S, "a_G", a_G)
    _, n_C, n_H, n_W = a_G.shape
    G_S = gram_matrix(unroll(a_S.detach()))  # (m, n_C, n_C)
    G_G = gram_matrix(unroll(a_G))  # (m, n_C, n_C)
    return ((G_S - G_G) ** 2).sum() / (2 * n_H * n_W * n_C) ** 2


def _check_weight(name: str, value: object, strict: bool, example: str) -> float:
    """Return ``value`` as a float after checking it is a finite number (> 0 or >= 0).

    Args:
        name: The weight's name, for the message.
        value: The weight.
        strict: Require ``> 0`` (else ``>= 0``).
        example: A valid setting, for the message, e.g. ``"alpha=10"``.

    Returns:
        ``value`` as a float.

    Raises:
        CnnkitError: Not a number (``bool`` is not one), not finite, or out of range.
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        ok = math.isfinite(float(value)) and (float(value) > 0 if strict else float(value) >= 0)
    if not ok:
        bound = "> 0" if strict else ">= 0"
        raise CnnkitError(f"{name} must be a number {bound}, got {value!r}; e.g. {example}.")
    return float(value)


def style_cost(
    acts_S: Mapping[str, torch.Tensor],
    acts_G: Mapping[str, torch.Tensor],
    weights: Mapping[str, float],
) -> torch.Tensor:
    """The style cost over several layers: ``sum_l lambda[l] * J_style[l]``.

    Args:
        acts_S: Layer name -> the style image's activations ``(m, n_C, n_H, n_W)``.
        acts_G: Layer name -> the generated image's activations, the same layers and
            shapes.
        weights: Layer name -> ``lambda[l]`` (a number >= 0), the same layers; the
            course uses equal weights summing to 1, e.g. 0.2 for each of 5 layers.

    Returns:
        ``J_style``, a 0-dim tensor differentiable with respect to every ``acts_G``.

    Raises:
        CnnkitError: No layers, a layer missing from or extra in one of the mappings,
            a weight that is not a number >= 0, or mismatched shapes at a layer.
    """
    if not weights:
        raise CnnkitError(
            "style_cost needs at least one layer in weights; e.g. weights={'conv1_1': 1.0}."
        )
    for what, acts in (("acts_S", acts_S), ("acts_G", acts_G)):
        missing = [name for name in weights if name not in acts]
        if missing:
            raise CnnkitError(
                f"style_cost has a weight for layer {missing[0]!r} but no {what} for it; "
                f"pass its activations in {what} or drop it from weights."
            )
        extra = [name for name in acts if name not in weights]
        if extra:
            raise CnnkitError(
                f"style_cost has {what} for layer {extra[0]!r} but no weight for it; "
                f"add weights[{extra[0]!r}] (0 to ignore it) or drop it from {what}."
            )
    lambdas = {
        name: _check_weight(
            f"the weight of layer {name!r}", weight, strict=False, example=f"weights[{name!r}]=0.2"
        )
        for name, weight in weights.items()
    }
    terms = [lam * layer_style_cost(acts_S[name], acts_G[name]) for name, lam in lambdas.items()]
    return torch.stack(terms).sum()  # (n_layers,) -> ()


def total_cost(
    J_content: float | torch.Tensor,
    J_style: float | torch.Tensor,
    alpha: float = 10,
    beta: float = 40,
) -> float | torch.Tensor:
    """The total cost ``J(G) = alpha * J_content + beta * J_style``.

    The defaults are the course exercise's (``total_cost(0.2, 0.8) == 34``); they suit
    the normalisations of this module only (see the module docstring).

    Args:
        J_content: The content cost (a float or a 0-dim tensor).
        J_style: The style cost (a float or a 0-dim tensor).
        alpha: The content weight, a number > 0.
        beta: The style weight, a number > 0.

    Returns:
        ``J``: a tensor if either cost is one (differentiable through it), else a float.

    Raises:
        CnnkitError: ``alpha`` or ``beta`` not a finite number > 0 (``bool`` is not a
            number).
    """
    alpha = _check_weight("alpha", alpha, strict=True, example="alpha=10")
    beta = _check_weight("beta", beta, strict=True, example="beta=40")
    return alpha * J_content + beta * J_style


def total_variation(G: torch.Tensor) -> torch.Tensor:
    """The anisotropic total variation of an image, an optional smoothness term.

    ``sum |G[..., i+1, j] - G[..., i, j]| + sum |G[..., i, j+1] - G[..., i, j]|``: the
    absolute differences between vertical and horizontal neighbours, summed over
    channels, positions and the batch (not normalised). Add it to ``J`` with a small
    weight of its own to smooth out high-frequency noise; it is not part of the course's
    cost.

    Args:
        G: The image (or activations), ``(m, n_C, n_H, n_W)``.

    Returns:
        The total variation, a 0-dim tensor differentiable with respect to ``G``.

    Raises:
        CnnkitError: ``G`` without 4 dims.
    """
    _check_4d("G", G)
    vertical = (G[..., 1:, :] - G[..., :-1, :]).abs().sum()
    horizontal = (G[..., :, 1:] - G[..., :, :-1]).abs().sum()
    return vertical + horizontal
