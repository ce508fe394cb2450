"""tj.fd.hessian against closed-form Hessians."""

from __future__ import annotations

import numpy as np
import pytest
import tensorjac as tj
from conftest import LAYOUTS, to_layout

ACCURACY = {"forward": 1e-3, "backward": 1e-3, "central": 1e-6, "richardson": 1e-9, "complex": 1e-9}


def case():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((4, 4))
    x = rng.standard_normal(4)

    def f(v):
        return v @ A @ v + np.sum(v**4) + np.prod(np.cos(v))

    c, s = np.cos(x), np.sin(x)
    P = np.prod(c)
    G = np.outer(s / c, s / c) * P  # d2 prod(cos) / dx_i dx_j, i != j
    np.fill_diagonal(G, -P)
    return f, x, A + A.T + np.diag(12 * x**2) + G


@pytest.mark.parametrize("method", tj.fd.METHODS)
def test_hessian_accuracy_and_estimate(method):
    f, x, want = case()
    H, err = tj.fd.hessian(f, x, method=method, return_error=True)
    assert H.shape == (4, 4)
    np.testing.assert_array_equal(H, H.T)
    actual = np.abs(H - want)
    assert actual.max() <= ACCURACY[method] * np.abs(want).max()
    assert (actual <= 10 * err).all()


def test_hessian_of_matrix_input_and_layouts():
    rng = np.random.default_rng(1)
    B = rng.standard_normal((2, 3))
    X = rng.standard_normal((2, 3))
    f = lambda Z: np.sum(B * Z**2) + np.sum(Z) ** 2
    want = np.einsum("ik,jl->ijkl", np.eye(2), np.eye(3)) * (2 * B)[:, :, None, None] + 2.0
    H = tj.fd.hessian(f, X, method="richardson")
    assert H.shape == (2, 3, 2, 3)
    np.testing.assert_allclose(H, want, atol=1e-8)
    for layout in LAYOUTS:
        HL = tj.fd.hessian(f, X, method="central", layout=layout)
        np.testing.assert_allclose(HL, to_layout(want, (2, 3), (2, 3), layout), atol=1e-5)


def test_hessian_vectorized_and_threads_agree():
    f, x, want = case()
    serial = tj.fd.hessian(f, x, method="central")
    np.testing.assert_array_equal(serial, tj.fd.hessian(f, x, method="central", num_threads=2))
    vec = tj.fd.hessian(lambda S: np.array([f(s) for s in S]), x, method="central", vectorized=True)
    np.testing.assert_allclose(vec, serial, atol=1e-12)


def test_hessian_0d_and_errors():
    H = tj.fd.hessian(lambda t: t**4, 1.5, method="richardson")
    assert H.shape == () and abs(H - 12 * 1.5**2) < 1e-9
    with pytest.raises(ValueError, match=r"f must return a scalar.*\(2,\)"):
        tj.fd.hessian(lambda v: v, np.ones(2))
    with pytest.raises(ValueError, match="unknown method"):
        tj.fd.hessian(np.sum, np.ones(2), method="spline")
