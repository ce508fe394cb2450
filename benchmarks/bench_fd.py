"""pytest-benchmark: finite differences (issue 4) beside scipy and numdifftools.

Run for timings:   python -m pytest benchmarks/bench_fd.py --benchmark-enable
CI runs this file with --benchmark-disable (one call each) as a smoke test.
The ratios the issue asks for come from benchmarks/compare_fd.py, which shares
the cases defined here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import tensorjac as tj

# ----------------------------------------------------------------------------- cases


def reference_case(n: int = 12, seed: int = 0) -> tuple[Callable, np.ndarray, np.ndarray]:
    """f(X) = tanh(X @ W) + inv(X), X n x n well conditioned (randn + n I), vectorizable
    over a leading stack axis; returns (f, X, the closed-form tensor Jacobian)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n)) + n * np.eye(n)
    W = rng.standard_normal((n, n))

    def f(S: np.ndarray) -> np.ndarray:
        return np.tanh(S @ W) + np.linalg.inv(S)

    T, Xi = np.tanh(X @ W), np.linalg.inv(X)
    J = np.einsum("ik,ij,lj->ijkl", np.eye(n), 1 - T**2, W) - np.einsum("ik,lj->ijkl", Xi, Xi)
    return f, X, J


def tj_reference(f: Callable, X: np.ndarray) -> np.ndarray:
    return tj.fd.jacobian(f, X, method="richardson", vectorized=True)


def scipy_reference(f: Callable, X: np.ndarray) -> np.ndarray:
    """scipy.differentiate.jacobian with the vectorized f it needs: x (N, ...) -> f (M, ...)."""
    from scipy.differentiate import jacobian

    n = X.shape[0]

    def fs(xi: np.ndarray) -> np.ndarray:
        batch = xi.shape[1:]
        S = np.moveaxis(xi, 0, -1).reshape(batch + (n, n))
        return np.moveaxis(f(S).reshape(batch + (n * n,)), -1, 0)

    return jacobian(fs, X.reshape(-1)).df.reshape(n, n, n, n)


def numdifftools_reference(f: Callable, X: np.ndarray) -> np.ndarray:
    """numdifftools.Jacobian calls f once per point: the same f, given one n x n point at a time."""
    import numdifftools as nd

    n = X.shape[0]
    return nd.Jacobian(lambda v: f(v.reshape(n, n)).reshape(-1))(X.reshape(-1)).reshape(n, n, n, n)


def check_case(n: int = 256, seed: int = 0) -> tuple[Callable, np.ndarray, np.ndarray]:
    """A non-vectorized f: R^n -> R^32, f(x) = tanh(W x) * (1 + |x|^2), and its correct Jacobian."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((32, n)) / np.sqrt(n)
    x = rng.standard_normal(n) / np.sqrt(n)

    def f(v: np.ndarray) -> np.ndarray:
        return np.tanh(W @ v) * (1.0 + v @ v)

    t = np.tanh(W @ x)
    J = (1 - t**2)[:, None] * W * (1.0 + x @ x) + np.outer(t, 2 * x)
    return f, x, J


# ----------------------------------------------------------------------------- benchmarks

REF = reference_case()


def test_tensorjac_richardson_vectorized(benchmark):
    f, X, want = REF
    J = benchmark(tj_reference, f, X)
    assert np.abs(J - want).max() <= 1e-11


def test_tensorjac_richardson_per_point(benchmark):
    f, X, want = REF
    J = benchmark(tj.fd.jacobian, f, X, method="richardson")
    assert np.abs(J - want).max() <= 1e-11


def test_scipy_differentiate_jacobian(benchmark):
    pytest.importorskip("scipy", minversion="1.15")
    f, X, want = REF
    J = benchmark(scipy_reference, f, X)
    assert np.abs(J - want).max() <= 1e-8


def test_numdifftools_jacobian(benchmark):
    pytest.importorskip("numdifftools")
    f, X, want = REF
    J = benchmark(numdifftools_reference, f, X)
    assert np.abs(J - want).max() <= 1e-8


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_check_mode(benchmark, mode):
    f, x, J = check_case()
    rep = benchmark(tj.check, f, x, J, mode=mode)
    assert rep.passed and rep.mode == mode
