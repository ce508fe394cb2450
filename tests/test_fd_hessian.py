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
    with pytest.raises(ValueError, match=r"layout='gradient' needs a scalar f.*\(2,\)"):
        tj.fd.hessian(lambda v: v, np.ones(2), layout="gradient")
    with pytest.raises(ValueError, match="unknown method"):
        tj.fd.hessian(np.sum, np.ones(2), method="spline")


def ion_trap(q: float = 2.7e-17):
    """Three ions on a line in a harmonic trap, positions in metres (~3e-6):
    V = sum x_i^2 / 2 + q sum_{i<j} 1 / |x_i - x_j| (|d| written sqrt(d^2): complex-step friendly)."""

    def V(x):
        d = x[:, None] - x[None, :]
        iu = np.triu_indices(len(x), 1)
        return 0.5 * np.sum(x**2) + q * np.sum(1.0 / np.sqrt(d[iu] ** 2))

    def H(x):
        d = np.abs(x[:, None] - x[None, :])
        np.fill_diagonal(d, np.inf)
        off = -2 * q / d**3
        out = off.copy()
        np.fill_diagonal(out, 1.0 - off.sum(axis=1))
        return out

    return V, H


@pytest.mark.parametrize("method", tj.fd.METHODS)
def test_ion_trap_hessian_at_micrometre_scale(method):
    V, Hx = ion_trap()
    x = np.array([-3.1e-6, 0.2e-6, 2.9e-6])
    H = tj.fd.hessian(V, x, method=method)
    want = Hx(x)
    tol = {"forward": 1e-3, "backward": 1e-3, "central": 1e-6, "richardson": 1e-8, "complex": 1e-6}[method]
    assert np.abs(H - want).max() <= tol * np.abs(want).max()


def test_hessian_of_vector_valued_f_and_layouts():
    def f(v):
        return np.array([[v[0] ** 2 * v[1], np.sin(v[0]) * v[1] ** 3], [v[0] * v[1], np.sum(v**2)]])

    x = np.array([0.7, -1.3])
    a, b = x
    want = np.zeros((2, 2, 2, 2))
    want[0, 0] = [[2 * b, 2 * a], [2 * a, 0.0]]
    want[0, 1] = [[-np.sin(a) * b**3, 3 * np.cos(a) * b**2], [3 * np.cos(a) * b**2, 6 * np.sin(a) * b]]
    want[1, 0] = [[0.0, 1.0], [1.0, 0.0]]
    want[1, 1] = [[2.0, 0.0], [0.0, 2.0]]
    H = tj.fd.hessian(f, x, method="richardson")
    assert H.shape == (2, 2, 2, 2)
    np.testing.assert_array_equal(H, H.transpose(0, 1, 3, 2))  # exactly symmetric
    np.testing.assert_allclose(H, want, atol=1e-8)
    Hm = tj.fd.hessian(f, x, method="richardson", layout="matrix")
    np.testing.assert_array_equal(Hm, H.reshape(4, 2, 2))
    Hv = tj.fd.hessian(f, x, method="richardson", layout="vec")
    np.testing.assert_array_equal(Hv, H.transpose(1, 0, 2, 3).reshape(4, 2, 2))  # column-major output
    Hs, err = tj.fd.hessian(lambda v: f(v)[1, 1], x, method="central", layout="matrix", return_error=True)
    assert Hs.shape == (2, 2) and err.shape == (2, 2)
    np.testing.assert_allclose(Hs, want[1, 1], atol=1e-6)
    # a matrix input: (2,) + (2, 2) + (2, 2)
    X = np.array([[0.5, -0.2], [0.3, 1.1]])
    g = lambda Z: np.array([np.sum(Z**3), np.prod(Z)])
    HX = tj.fd.hessian(g, X, method="richardson")
    assert HX.shape == (2, 2, 2, 2, 2)
    np.testing.assert_allclose(HX[0].reshape(4, 4), np.diag(6 * X.ravel()), atol=1e-8)
    HXm = tj.fd.hessian(g, X, method="richardson", layout="vec")
    assert HXm.shape == (2, 4, 4)
    np.testing.assert_array_equal(HXm[0], HX[0].transpose(1, 0, 3, 2).reshape(4, 4))


def test_hessian_several_arguments():
    f = lambda a, x: a * np.sum(x**3)
    x = np.array([0.5, 2.0])
    H = tj.fd.hessian(f, 3.0, x, wrt="x", method="richardson")
    np.testing.assert_allclose(H, np.diag(18 * x), atol=1e-8)
    Ha, Hx = tj.fd.hessian(f, 3.0, x, wrt=(0, 1), method="richardson")
    assert Ha.shape == () and abs(Ha) < 1e-8 and Hx.shape == (2, 2)
