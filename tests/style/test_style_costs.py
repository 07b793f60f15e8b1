"""Neural-style-transfer costs against plain NumPy loops written here.

Covers the content cost (both normalisations, its analytic gradient, the detached
target), the Gram matrix (double loop, symmetry, batches), the NHWC layout pitfall,
the per-layer and weighted style costs, the total cost (the course exercise's check
``total_cost(0.2, 0.8) == 34``), the anisotropic total variation, and the one-sentence
errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.style import (
    content_cost,
    gram_matrix,
    layer_style_cost,
    style_cost,
    total_cost,
    total_variation,
    unroll,
)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    """A float64 tensor of standard-normal values (float64 so loops and torch agree)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def np_gram(a: np.ndarray) -> np.ndarray:
    """``G[c1, c2] = sum_h sum_w a[c1, h, w] * a[c2, h, w]`` for one image ``(n_C, n_H, n_W)``."""
    n_C, n_H, n_W = a.shape
    G = np.zeros((n_C, n_C))
    for c1 in range(n_C):
        for c2 in range(n_C):
            s = 0.0
            for h in range(n_H):
                for w in range(n_W):
                    s += a[c1, h, w] * a[c2, h, w]
            G[c1, c2] = s
    return G


def np_sum_sq_diff(x: np.ndarray, y: np.ndarray) -> float:
    """``sum (x - y)^2`` over every element, one element at a time."""
    s = 0.0
    for u, v in zip(x.ravel().tolist(), y.ravel().tolist()):
        s += (u - v) ** 2
    return s


def np_layer_style(a_S: np.ndarray, a_G: np.ndarray) -> float:
    """The exercise's per-layer style cost with a loop over the batch."""
    m, n_C, n_H, n_W = a_S.shape
    total = 0.0
    for i in range(m):
        total += np_sum_sq_diff(np_gram(a_S[i]), np_gram(a_G[i]))
    return total / (2 * n_H * n_W * n_C) ** 2


# ----------------------------------------------------------------------------- content


@pytest.mark.parametrize("normalization", ["exercise", "lecture"])
def test_content_cost_matches_a_loop(normalization):
    a_C, a_G = rand(1, 3, 4, 5, seed=1), rand(1, 3, 4, 5, seed=2)
    s = np_sum_sq_diff(a_C.numpy(), a_G.numpy())
    expected = s / (4 * 4 * 5 * 3) if normalization == "exercise" else s / 2
    J = content_cost(a_C, a_G, normalization=normalization)
    assert J.ndim == 0
    assert J.item() == pytest.approx(expected, rel=1e-12)


def test_content_cost_default_is_the_exercise_and_sums_over_the_batch():
    a_C, a_G = rand(2, 3, 4, 5, seed=3), rand(2, 3, 4, 5, seed=4)
    per_image = [content_cost(a_C[i : i + 1], a_G[i : i + 1]).item() for i in range(2)]
    assert content_cost(a_C, a_G).item() == pytest.approx(sum(per_image), rel=1e-12)
    s = np_sum_sq_diff(a_C.numpy(), a_G.numpy())
    assert content_cost(a_C, a_G).item() == pytest.approx(s / (4 * 4 * 5 * 3), rel=1e-12)


def test_content_cost_gradient_is_analytic_and_the_target_gets_none():
    n_C, n_H, n_W = 3, 4, 5
    a_C = rand(1, n_C, n_H, n_W, seed=5).requires_grad_(True)
    a_G = rand(1, n_C, n_H, n_W, seed=6).requires_grad_(True)
    content_cost(a_C, a_G).backward()
    analytic = -(a_C.detach() - a_G.detach()) / (2 * n_H * n_W * n_C)
    torch.testing.assert_close(a_G.grad, analytic, rtol=1e-12, atol=1e-15)
    assert a_C.grad is None


def test_content_cost_shape_mismatch_names_both_shapes():
    with pytest.raises(CnnkitError) as e:
        content_cost(rand(1, 3, 4, 5), rand(1, 3, 5, 4))
    msg = str(e.value)
    assert "(1, 3, 4, 5)" in msg and "(1, 3, 5, 4)" in msg
    assert "\n" not in msg


def test_content_cost_unknown_normalization_suggests_the_close_one():
    with pytest.raises(CnnkitError, match="did you mean 'exercise'"):
        content_cost(rand(1, 3, 4, 5), rand(1, 3, 4, 5), normalization="exercize")


# ----------------------------------------------------------------------------- gram


def test_gram_matrix_matches_a_double_loop_and_is_symmetric():
    a = rand(1, 4, 3, 5, seed=7)
    G = gram_matrix(unroll(a)[0])
    assert G.shape == (4, 4)
    np.testing.assert_allclose(G.numpy(), np_gram(a[0].numpy()), rtol=1e-12)
    torch.testing.assert_close(G, G.T)


def test_gram_matrix_of_a_batch_equals_per_image():
    a = rand(3, 4, 2, 3, seed=8)
    A = unroll(a)
    G = gram_matrix(A)
    assert G.shape == (3, 4, 4)
    for i in range(3):
        torch.testing.assert_close(G[i], gram_matrix(A[i]))
        np.testing.assert_allclose(G[i].numpy(), np_gram(a[i].numpy()), rtol=1e-12)


def test_gram_matrix_rejects_4d_input():
    with pytest.raises(CnnkitError, match="unroll"):
        gram_matrix(rand(1, 2, 3, 4))


# ----------------------------------------------------------------------------- layout


def test_nhwc_unroll_matches_nchw_and_the_naive_reshape_is_wrong():
    m, n_C, n_H, n_W = 1, 3, 4, 5
    x_nchw = rand(m, n_C, n_H, n_W, seed=9)
    x_nhwc = x_nchw.permute(0, 2, 3, 1)  # (m, n_C, n_H, n_W) -> (m, n_H, n_W, n_C)
    torch.testing.assert_close(unroll(x_nhwc, "NHWC"), unroll(x_nchw))
    # row c of the unrolled activations is channel c, row-major over (n_H, n_W)
    for c in range(n_C):
        np.testing.assert_array_equal(unroll(x_nchw)[0, c].numpy(), x_nchw[0, c].numpy().ravel())
    naive = x_nhwc.reshape(m, n_C, n_H * n_W)  # the pitfall: mixes channels and positions
    right = gram_matrix(unroll(x_nhwc, "NHWC"))
    assert not torch.allclose(gram_matrix(naive), right)
    np.testing.assert_allclose(right[0].numpy(), np_gram(x_nchw[0].numpy()), rtol=1e-12)


def test_unroll_rejects_bad_layouts_and_ranks():
    with pytest.raises(CnnkitError, match="did you mean 'NHWC'"):
        unroll(rand(1, 2, 3, 4), "NHCW")
    with pytest.raises(CnnkitError, match=r"\(2, 3, 4\)"):
        unroll(rand(2, 3, 4))


# ----------------------------------------------------------------------------- style


def test_layer_style_cost_matches_a_loop():
    a_S, a_G = rand(2, 3, 4, 2, seed=10), rand(2, 3, 4, 2, seed=11)
    J = layer_style_cost(a_S, a_G)
    assert J.ndim == 0
    assert J.item() == pytest.approx(np_layer_style(a_S.numpy(), a_G.numpy()), rel=1e-12)


def test_layer_style_cost_is_zero_for_identical_activations():
    a = rand(1, 3, 4, 5, seed=12)
    assert layer_style_cost(a, a.clone()).item() == 0.0


def test_layer_style_cost_when_the_generated_activations_double():
    n_C, n_H, n_W = 3, 4, 5
    a_S, a_G = rand(1, n_C, n_H, n_W, seed=13), rand(1, n_C, n_H, n_W, seed=14)
    # doubling a_G multiplies its Gram by 4: J = sum((G_S - 4 G_G)^2) / (2 n_H n_W n_C)^2
    G_S, G_G = np_gram(a_S[0].numpy()), np_gram(a_G[0].numpy())
    expected = np_sum_sq_diff(G_S, 4 * G_G) / (2 * n_H * n_W * n_C) ** 2
    assert layer_style_cost(a_S, 2 * a_G).item() == pytest.approx(expected, rel=1e-12)
    # from a_G == a_S the difference is 3 G_S: J = 9 sum(G_S^2) / (2 n_H n_W n_C)^2
    expected_same = 9 * float((G_S**2).sum()) / (2 * n_H * n_W * n_C) ** 2
    assert layer_style_cost(a_S, 2 * a_S).item() == pytest.approx(expected_same, rel=1e-12)


def test_layer_style_cost_detaches_the_style_target():
    a_S = rand(1, 2, 3, 3, seed=15).requires_grad_(True)
    a_G = rand(1, 2, 3, 3, seed=16).requires_grad_(True)
    layer_style_cost(a_S, a_G).backward()
    assert a_S.grad is None
    assert a_G.grad is not None and a_G.grad.abs().sum() > 0


def test_style_cost_is_the_weighted_sum_over_layers_of_different_shapes():
    shapes = {"conv1": (1, 2, 6, 5), "conv2": (1, 4, 3, 3), "conv3": (1, 5, 2, 1)}
    acts_S = {k: rand(*s, seed=20 + i) for i, (k, s) in enumerate(shapes.items())}
    acts_G = {k: rand(*s, seed=30 + i) for i, (k, s) in enumerate(shapes.items())}
    weights = {"conv1": 0.5, "conv2": 0.3, "conv3": 0.2}
    J = style_cost(acts_S, acts_G, weights)
    assert J.ndim == 0
    expected = sum(weights[k] * layer_style_cost(acts_S[k], acts_G[k]).item() for k in shapes)
    assert J.item() == pytest.approx(expected, rel=1e-12)
    by_loop = sum(weights[k] * np_layer_style(acts_S[k].numpy(), acts_G[k].numpy()) for k in shapes)
    assert J.item() == pytest.approx(by_loop, rel=1e-12)


def test_style_cost_mismatched_layers_name_the_layer():
    acts = {"conv1": rand(1, 2, 3, 3), "conv2": rand(1, 2, 2, 2)}
    with pytest.raises(CnnkitError, match="'conv3'"):
        style_cost(acts, acts, {"conv1": 0.5, "conv2": 0.3, "conv3": 0.2})
    with pytest.raises(CnnkitError, match="'conv2'"):
        style_cost(acts, acts, {"conv1": 1.0})
    with pytest.raises(CnnkitError, match="'conv2'"):
        style_cost(acts, {"conv1": acts["conv1"]}, {"conv1": 0.5, "conv2": 0.5})
    with pytest.raises(CnnkitError, match="'conv1'"):
        style_cost(acts, acts, {"conv1": -0.5, "conv2": 0.5})


# ----------------------------------------------------------------------------- total


def test_total_cost_matches_the_exercise_check():
    assert total_cost(0.2, 0.8) == pytest.approx(34)


def test_total_cost_custom_weights_and_tensors():
    assert total_cost(1.5, 2.5, alpha=2, beta=3) == pytest.approx(2 * 1.5 + 3 * 2.5)
    J_c = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    J_s = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    J = total_cost(J_c, J_s, alpha=5, beta=7.5)
    assert J.item() == pytest.approx(5 * 0.7 + 7.5 * 0.1)
    J.backward()
    assert J_c.grad.item() == pytest.approx(5) and J_s.grad.item() == pytest.approx(7.5)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"alpha": 0}, "alpha"), ({"beta": -1}, "beta"), ({"alpha": True}, "alpha"),
     ({"alpha": "x"}, "alpha")],
)  # fmt: skip
def test_total_cost_rejects_bad_weights_in_one_line(kwargs, name):
    with pytest.raises(CnnkitError) as e:
        total_cost(0.2, 0.8, **kwargs)
    msg = str(e.value)
    assert msg.startswith(f"{name} must be a number > 0") and "\n" not in msg
    assert repr(kwargs[name]) in msg


# ----------------------------------------------------------------------------- TV


def test_total_variation_matches_a_loop():
    G = rand(2, 3, 4, 5, seed=40)
    g = G.numpy()
    m, n_C, n_H, n_W = g.shape
    expected = 0.0
    for i in range(m):
        for c in range(n_C):
            for h in range(n_H):
                for w in range(n_W):
                    if h + 1 < n_H:
                        expected += abs(g[i, c, h + 1, w] - g[i, c, h, w])
                    if w + 1 < n_W:
                        expected += abs(g[i, c, h, w + 1] - g[i, c, h, w])
    J = total_variation(G)
    assert J.ndim == 0
    assert J.item() == pytest.approx(expected, rel=1e-12)


def test_total_variation_is_zero_on_a_constant_image():
    assert total_variation(torch.full((1, 3, 4, 5), 0.37)).item() == 0.0


def test_total_variation_rejects_a_3d_image():
    with pytest.raises(CnnkitError, match=r"G\[None\]"):
        total_variation(rand(3, 4, 5))
