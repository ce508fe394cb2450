"""The composite engine's internals: recorded programs replay only on identical structure,
and structure never depends on values that a replay would not see."""

from __future__ import annotations

import numpy as np
import pytest
import tensorjac as tj


def _fd(f, x):
    return tj.fd.jacobian(f, x, method="richardson")


@pytest.mark.parametrize("order", [([0, 1], [0, 0]), ([0, 0], [0, 1]), ([2, 2], [1, 3])])
def test_assignment_with_and_without_repeated_indices_replays_right(order):
    """The same tape signature with index arrays that do or do not repeat (last write wins)."""

    def f(x, idx):
        y = x * 1.0
        y[idx] = x[:2] ** 2
        return y

    x = np.arange(1.0, 5.0)
    for raw in order:  # the second call replays the program recorded by the first
        idx = np.array(raw)
        ref = _fd(lambda z, idx=idx: f(z, idx), x)
        np.testing.assert_allclose(tj.jacobian(f, x, idx), ref, atol=1e-9)


def test_constants_are_read_afresh_on_replay():
    W = np.ones((3, 3))
    f = lambda x: np.tanh(W @ x)
    x = np.array([0.1, 0.2, 0.3])
    J1 = tj.jacobian(f, x)
    W[:] = np.diag([1.0, 2.0, 3.0])
    J2 = tj.jacobian(f, x)
    np.testing.assert_allclose(J2, _fd(f, x), atol=1e-10)
    assert not np.allclose(J1, J2)


def test_small_outputs_use_reverse_sweeps_and_agree_with_forward():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((3, 50))
    f = lambda x: np.tanh(A @ np.sin(x))
    g = lambda x: np.concatenate([f(x)] * 4)
    x = rng.standard_normal(50)
    Jf, Jg = tj.jacobian(f, x), tj.jacobian(g, x)
    np.testing.assert_allclose(Jf, _fd(f, x), atol=1e-9)
    np.testing.assert_allclose(np.concatenate([Jf] * 4), Jg, rtol=1e-13, atol=1e-15)
    for layout in ("gradient", "numerator", "matrix", "vec"):  # 1-D in and out: all but gradient are T
        want = Jf.T if layout == "gradient" else Jf
        np.testing.assert_array_equal(tj.jacobian(f, x, layout=layout), want)


def test_dense_terms_are_written_directly_in_every_layout():
    """A dense Jacobian (here rank-2 plus a diagonal: layer norm) in every layout and into out=."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(200)
    f = lambda x: (x - x.mean()) / np.sqrt(x.var() + 1e-5)
    T = _fd(f, x)
    for layout in ("tensor", "gradient", "numerator", "matrix", "vec"):
        J = tj.jacobian(f, x, layout=layout)
        want = T.T if layout == "gradient" else T
        np.testing.assert_allclose(J, want, atol=1e-8)
        out = np.empty((200, 400))[:, ::2]  # a non-contiguous out=
        np.testing.assert_array_equal(tj.jacobian(f, x, layout=layout, out=out), J)


@pytest.mark.parametrize(("m", "n"), [(1, 1), (2, 1), (3, 37), (1, 100), (2, 64), (1, 65)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
def test_symmetrize_kernel(m, n, dtype):
    from tensorjac import _core

    A = np.random.default_rng(m * n).standard_normal((m, n, n)).astype(dtype)
    B = A.copy()
    _core.symmetrize(B, m, n, 2)
    np.testing.assert_array_equal(B, np.swapaxes(B, 1, 2))  # bitwise symmetric
    want = (A + np.swapaxes(A, 1, 2)) * dtype(0.5)
    np.testing.assert_array_equal(B, want)  # the same IEEE operations: exactly the mean
    C = A.copy()
    _core.symmetrize(C, m, n, 1)
    np.testing.assert_array_equal(B, C)  # any thread count
