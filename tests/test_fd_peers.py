"""Accuracy of tj.fd on the kind of cases numdifftools' and jacobi's test suites use.

Every case is written here from the mathematics (classic test functions, compositions
of exp/sin/log, polynomials, an ion-trap potential, least-squares residuals, functions
near the end of their domain, Hessians of quadratic and non-quadratic functions), with
a hand-derived closed form as the reference.  The tests assert accuracy against those
closed forms only; ``benchmarks/compare_fd.py`` runs the same cases through
numdifftools and reports who is more accurate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import tensorjac as tj


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "jacobian" (f any shape), "gradient" (scalar f) or "hessian" (scalar f)
    f: Callable[[np.ndarray], np.ndarray]
    x: np.ndarray
    exact: np.ndarray  # tensor layout: f.shape + x.shape (+ x.shape for Hessians)


def _scalar_derivatives() -> list[Case]:
    """f: R -> R at several points, f' by hand."""
    fs = [
        ("exp", np.exp, np.exp, [0.0, 1e-3, 1.0, 5.0, -3.0, 20.0]),
        ("sin", np.sin, np.cos, [0.0, 0.5, 2.0, 10.0]),
        ("log", np.log, lambda x: 1 / x, [1e-3, 0.5, 1.0, 10.0, 1e4]),
        ("1/x", lambda x: 1 / x, lambda x: -1 / x**2, [3e-6, 0.1, 2.0]),
        ("sqrt", np.sqrt, lambda x: 0.5 / np.sqrt(x), [1e-4, 1.0, 100.0]),
        ("tanh", np.tanh, lambda x: 1 - np.tanh(x) ** 2, [0.0, 0.3, 3.0]),
        ("exp(sin)", lambda x: np.exp(np.sin(x)), lambda x: np.cos(x) * np.exp(np.sin(x)), [0.2, 1.5, -2.0]),
        ("x^4", lambda x: x**4, lambda x: 4 * x**3, [0.5, 1.0, 3.0]),
        ("arctan", np.arctan, lambda x: 1 / (1 + x * x), [0.1, 1.0, 30.0]),
        ("exp(10x)", lambda x: np.exp(10 * x), lambda x: 10 * np.exp(10 * x), [0.0, 0.5, -1.0]),
        ("arcsin", np.arcsin, lambda x: 1 / np.sqrt(1 - x * x), [0.5, 0.999]),
    ]  # fmt: skip
    return [Case(f"d {name} at {x:g}", "jacobian", f, np.array(float(x)), np.array(df(float(x))))
            for name, f, df, xs in fs for x in xs]


def _rosenbrock(x: np.ndarray) -> np.ndarray:
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def _rosenbrock_grad(x: np.ndarray) -> np.ndarray:
    g = np.zeros_like(x)
    g[:-1] = -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
    g[1:] += 200.0 * (x[1:] - x[:-1] ** 2)
    return g


def _rosenbrock_hess(x: np.ndarray) -> np.ndarray:
    n = len(x)
    H = np.zeros((n, n))
    for i in range(n - 1):
        H[i, i] += 1200.0 * x[i] ** 2 - 400.0 * x[i + 1] + 2
        H[i, i + 1] = H[i + 1, i] = -400.0 * x[i]
        H[i + 1, i + 1] += 200.0
    return H


Q = 3.0e-18  # ion-trap coupling: equilibrium spacing (Q / 1)**(1/3) ~ 1.4 micrometres


def _ion_energy(x: np.ndarray) -> np.ndarray:
    d = x[:, None] - x[None, :]
    iu = np.triu_indices(len(x), 1)
    return 0.5 * np.sum(x**2) + Q * np.sum(1.0 / np.abs(d[iu]))


def _ion_grad(x: np.ndarray) -> np.ndarray:
    d = x[:, None] - x[None, :]
    np.fill_diagonal(d, np.inf)
    return x - Q * np.sum(np.sign(d) / d**2, axis=1)


def _ion_hess(x: np.ndarray) -> np.ndarray:
    d = np.abs(x[:, None] - x[None, :])
    np.fill_diagonal(d, np.inf)
    H = -2 * Q / d**3
    np.fill_diagonal(H, 1.0 - H.sum(axis=1))
    return H


def _vector_cases() -> list[Case]:
    rng = np.random.default_rng(7)
    W = rng.standard_normal((4, 3))
    XD = np.linspace(0.0, 2.0, 7)
    c = np.array([0.5, 1.7, -0.8])
    YD = c[0] + c[1] * np.exp(c[2] * XD) + 0.01 * np.sin(7 * XD)
    X = rng.standard_normal((3, 3)) + 2 * np.eye(3)
    ions = np.array([-2.0e-6, -0.6e-6, 0.7e-6, 2.1e-6])
    x2 = np.array([0.5, 1.2])
    out = [
        Case("exp/sin map", "jacobian", lambda v: np.array([np.exp(v[0]) * np.sin(v[1]), v[0] ** 2 + np.cos(v[1])]),
             x2, np.array([[np.exp(0.5) * np.sin(1.2), np.exp(0.5) * np.cos(1.2)], [1.0, -np.sin(1.2)]])),
        Case("Rosenbrock residuals", "jacobian", lambda v: np.array([10 * (v[1] - v[0] ** 2), 1 - v[0]]),
             np.array([-1.2, 1.0]), np.array([[24.0, 10.0], [-1.0, 0.0]])),
        Case("log map", "jacobian", lambda v: np.array([np.log(1 + v[0] * v[1]), np.log(v[0]) + v[1]]),
             x2, np.array([[1.2 / 1.6, 0.5 / 1.6], [2.0, 1.0]])),
        Case("polynomial", "jacobian", lambda v: v**3 - 2 * v**2 + v, np.array([-1.5, 0.2, 3.0]),
             np.diag(3 * np.array([-1.5, 0.2, 3.0]) ** 2 - 4 * np.array([-1.5, 0.2, 3.0]) + 1)),
        Case("tanh(W x)", "jacobian", lambda v: np.tanh(W @ v), np.array([0.3, -0.5, 0.8]),
             (1 - np.tanh(W @ np.array([0.3, -0.5, 0.8])) ** 2)[:, None] * W),
        Case("least-squares residuals", "jacobian", lambda c: c[0] + c[1] * np.exp(c[2] * XD) - YD, c,
             np.stack([np.ones_like(XD), np.exp(c[2] * XD), c[1] * XD * np.exp(c[2] * XD)], axis=1)),
        Case("X @ X", "jacobian", lambda Z: Z @ Z, X,
             np.einsum("ik,lj->ijkl", np.eye(3), X) + np.einsum("ik,lj->ijkl", X, np.eye(3))),
        Case("ion-trap forces", "jacobian", _ion_grad, ions, _ion_hess(ions)),
        Case("sqrt near 0", "jacobian", np.sqrt, np.array([1e-6, 4e-4]), np.diag(0.5 / np.sqrt([1e-6, 4e-4]))),
        Case("log near 0", "jacobian", np.log, np.array([1e-3, 2e-5]), np.diag(1 / np.array([1e-3, 2e-5]))),
    ]  # fmt: skip
    A = rng.standard_normal((4, 4))
    A = A + A.T
    xq = rng.standard_normal(4)
    grads = [
        Case(f"Rosenbrock gradient at {p}", "gradient", _rosenbrock, np.array(p), _rosenbrock_grad(np.array(p)))
        for p in ([-1.2, 1.0], [1.0, 1.0], [0.3, -0.4, 1.1], [2.0, 4.0])
    ] + [
        Case("quadratic gradient", "gradient", lambda v: v @ A @ v, xq, 2 * A @ xq),
        Case("exp*sin gradient", "gradient", lambda v: np.sum(np.exp(v) * np.sin(v)), np.array([0.1, 1.0, -2.0]),
             np.exp([0.1, 1.0, -2.0]) * (np.sin([0.1, 1.0, -2.0]) + np.cos([0.1, 1.0, -2.0]))),
        Case("log-sum-exp gradient", "gradient", lambda v: np.log(np.sum(np.exp(v))), np.array([1.0, 2.0, 3.0]),
             np.exp([1.0, 2.0, 3.0]) / np.sum(np.exp([1.0, 2.0, 3.0]))),
        Case("ion-trap energy gradient", "gradient", _ion_energy, ions, _ion_grad(ions)),
        Case("1/|x| gradient", "gradient", lambda v: 1 / np.sqrt(v @ v), np.array([0.3, -0.4]),
             -np.array([0.3, -0.4]) / 0.5**3),
    ]  # fmt: skip
    p = np.array([0.7, -0.3])
    hessians = [
        Case("quadratic Hessian", "hessian", lambda v: v @ A @ v, xq, 2 * A),
        Case("Rosenbrock Hessian at (-1.2, 1)", "hessian", _rosenbrock, np.array([-1.2, 1.0]),
             _rosenbrock_hess(np.array([-1.2, 1.0]))),
        Case("Rosenbrock Hessian at (1, 1)", "hessian", _rosenbrock, np.array([1.0, 1.0]),
             _rosenbrock_hess(np.array([1.0, 1.0]))),
        Case("exp(x) sin(y) Hessian", "hessian", lambda v: np.exp(v[0]) * np.sin(v[1]), p,
             np.exp(0.7) * np.array([[np.sin(-0.3), np.cos(-0.3)], [np.cos(-0.3), -np.sin(-0.3)]])),
        Case("sum x^4 Hessian", "hessian", lambda v: np.sum(v**4), np.array([0.5, -1.5, 2.0]),
             np.diag(12 * np.array([0.5, -1.5, 2.0]) ** 2)),
        Case("log(1 + x^2 + y^2) Hessian", "hessian", lambda v: np.log(1 + v @ v), p,
             (2 * np.eye(2) * (1 + p @ p) - 4 * np.outer(p, p)) / (1 + p @ p) ** 2),
        Case("ion-trap Hessian", "hessian", _ion_energy, ions, _ion_hess(ions)),
    ]  # fmt: skip
    return out + grads + hessians


CASES = _scalar_derivatives() + _vector_cases()


def run_case(case: Case, method: str = "richardson") -> np.ndarray:
    if case.kind == "hessian":
        return tj.fd.hessian(case.f, case.x, method=method)
    return tj.fd.jacobian(case.f, case.x, method=method)


def rel_error(case: Case, value: np.ndarray) -> float:
    """max |value - exact| / max |exact| (the error relative to the result's scale; absolute if exact is 0)."""
    scale = float(np.max(np.abs(case.exact)))
    return float(np.max(np.abs(value - case.exact)) / (scale if scale > 0 else 1.0))


# Documented accuracy, relative to the result's scale, with margin.
TOL = {
    ("jacobian", "richardson"): 1e-11, ("gradient", "richardson"): 1e-11, ("hessian", "richardson"): 1e-6,
    ("jacobian", "central"): 1e-7, ("gradient", "central"): 1e-7, ("hessian", "central"): 1e-4,
}  # fmt: skip


def test_the_case_set_is_large():
    assert len(CASES) >= 60
    assert {c.kind for c in CASES} == {"jacobian", "gradient", "hessian"}


@pytest.mark.parametrize("method", ["richardson", "central"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_accuracy_against_closed_forms(case, method):
    with np.errstate(invalid="ignore"):  # arcsin beyond 1 on the first stencil: the step shrinks
        value = run_case(case, method)
    assert value.shape == case.exact.shape
    # arcsin at 0.999 sits 1e-3 from a square-root singularity: no step is both small and safe
    tol = 1e-4 if "arcsin at 0.999" in case.name else TOL[(case.kind, method)]
    assert rel_error(case, value) <= tol


@pytest.mark.parametrize("case", [c for c in CASES if c.kind != "hessian"][::4], ids=lambda c: c.name)
def test_error_estimate_covers_the_error(case):
    with np.errstate(invalid="ignore"):
        J, err = tj.fd.jacobian(case.f, case.x, method="richardson", return_error=True)
    assert (np.abs(J - case.exact) <= 10 * err + 4 * np.finfo(float).eps * np.abs(case.exact)).all()
