"""The catalogue of composite functions for ``tj.jacobian(f, *args)`` on plain-numpy callables.

Every case is a plain-numpy function ``f(*args)`` drawn from the matrix-calculus
catalogue (traces, determinants, inverses, norms, least squares, softmax, layer
norm, MLP layers, rank-3/4 tensors...) and from the seeds in /work/shared/seeds
(the Q&A tag page, the lecture, the "Matrix Reloaded" tutorial and its
exercises), with:

* ``make(rng)``: well-conditioned arguments (small shapes: every Jacobian has
  at most ~5k entries), kept away from kinks (relu, abs, clip, max ties) by more
  than the largest finite-difference step;
* ``wrt``: the argument indices to differentiate;
* ``closed(args, w)``: optionally, a hand-derived closed form of the Jacobian in
  the tensor layout ``T[m..., n...] = d f[m...] / d args[w][n...]``, written
  with numpy/einsum only (never with tensorjac).

The references (:func:`fd_reference`, the closed forms) are independent of the
composite engine; ``test_composite_catalogue.py`` checks the closed forms
against Richardson finite differences today, and the engine against both once
it exists (:data:`needs_engine`).

Seed errata (the printed answers that are wrong, checked here by finite differences):
the tutorial's d(2x^2 + 4y) is (4x, 4) (not (4x + 4y, 2x^2 + 4)); its ridge
step drops lambda (the gradient is 2 X^T (Xw - y) + 2 lambda w); the lecture's
summary slide labels d/dA of ||Y - XA||^2 as d/dX (d/dA = -2 X^T (Y - XA) in the
tensor layout; d/dX = -2 (Y - XA) A^T).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import tensorjac as tj

# ----------------------------------------------------------------------------- engine detection


def engine_ready() -> bool:
    """True once ``tj.jacobian`` accepts a plain-numpy callable (today it raises TypeError)."""
    try:
        tj.jacobian(lambda x: np.tanh(x), np.ones(2))
    except TypeError:
        return False
    return True


ENGINE = engine_ready()
needs_engine = pytest.mark.skipif(not ENGINE, reason="composite engine not built yet")

# ----------------------------------------------------------------------------- tolerances

FD_RTOL = 1e-7  # engine (or closed form) vs Richardson differences, atol scaled by max|J|
CLOSED_RTOL = 1e-10  # engine vs a hand closed form
MAX_ENTRIES = 5000  # every catalogue Jacobian is at most this big


def assert_close(got, want, rtol: float) -> None:
    """allclose with an absolute tolerance relative to the reference's magnitude."""
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = float(np.max(np.abs(want), initial=0.0))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(scale, 1.0))


# ----------------------------------------------------------------------------- the case record


@dataclass(frozen=True)
class Case:
    name: str
    f: Callable[..., Any]
    make: Callable[[np.random.Generator], tuple]
    wrt: tuple[int, ...] = (0,)
    closed: Callable[[tuple, int], np.ndarray] | None = None
    diagonal: tuple[int, ...] = ()  # wrt indices whose Jacobian is elementwise-diagonal
    source: str = ""  # where the case comes from (catalogue, a seed...)

    def args(self, seed: int = 0) -> tuple:
        return tuple(self.make(np.random.default_rng(seed)))

    def __repr__(self) -> str:  # readable pytest ids
        return self.name


CASES: list[Case] = []


def add(name, f, make, wrt=(0,), closed=None, diagonal=(), source="catalogue") -> None:
    assert name not in {c.name for c in CASES}, name
    CASES.append(Case(name, f, make, tuple(wrt), closed, tuple(diagonal), source))


def by_name(name: str) -> Case:
    for c in CASES:
        if c.name == name:
            return c
    raise KeyError(name)


# ----------------------------------------------------------------------------- argument makers


def N(r: np.random.Generator, *shape: int) -> np.ndarray:
    return r.standard_normal(shape)


def WC(r: np.random.Generator, n: int) -> np.ndarray:
    """A well-conditioned square matrix (eigenvalues near 2)."""
    return 2.0 * np.eye(n) + 0.3 * r.standard_normal((n, n))


def SPD(r: np.random.Generator, n: int) -> np.ndarray:
    """Symmetric positive definite with well-separated eigenvalues 1, 1.7, 2.4, ..."""
    Q = np.linalg.qr(r.standard_normal((n, n)))[0]
    lam = 1.0 + 0.7 * np.arange(n) + 0.1 * r.random(n)
    return (Q * lam) @ Q.T


def SPD_GARBAGE(r: np.random.Generator, n: int) -> np.ndarray:
    """SPD in the lower triangle; the strictly upper triangle is noise numpy never reads."""
    return np.tril(SPD(r, n)) + np.triu(r.standard_normal((n, n)), 1)


def AWAY(r: np.random.Generator, *shape: int, lo: float = 0.2, hi: float = 1.5) -> np.ndarray:
    """Random signs, magnitudes in [lo, hi]: no entry near 0 (kinks of abs, relu, sign)."""
    return r.uniform(lo, hi, shape) * r.choice([-1.0, 1.0], shape)


def POS(r: np.random.Generator, *shape: int, lo: float = 0.5, hi: float = 2.0) -> np.ndarray:
    return r.uniform(lo, hi, shape)


def DISTINCT(r: np.random.Generator, *shape: int) -> np.ndarray:
    """Entries at least 0.25 apart (max/min have a unique, stable argmax/argmin)."""
    n = int(np.prod(shape, dtype=np.int64))
    return ((r.permutation(n) - n / 2) * 0.3 + 0.05 * r.random(n)).reshape(shape)


def S0(v: float) -> np.ndarray:
    """A 0-d float64 array."""
    return np.array(float(v))


def E(n: int, m: int | None = None) -> np.ndarray:
    return np.eye(n, m)


# ----------------------------------------------------------------------------- closed-form helpers


def diag_tensor(d: np.ndarray) -> np.ndarray:
    """T[m, n] = delta(m, n) d[m] (an elementwise Jacobian), shape d.shape * 2."""
    d = np.asarray(d, dtype=float)
    return np.einsum("mn,m->mn", np.eye(d.size), d.reshape(-1)).reshape(d.shape + d.shape)


def lower_convention(G: np.ndarray) -> np.ndarray:
    """From dF/dS_sym (entries of a symmetric S treated as independent, last two axes) to the
    derivative of a numpy function that reads only the LOWER triangle of S:
    strictly lower (k > l): G[k, l] + G[l, k]; diagonal: G[k, k]; strictly upper: 0."""
    n = G.shape[-1]
    low = np.tril(np.ones((n, n)), -1)
    Gt = np.swapaxes(G, -1, -2)
    return low * (G + Gt) + np.eye(n) * G


def sym_from_lower(S: np.ndarray) -> np.ndarray:
    """The symmetric matrix numpy's eigh/cholesky see: lower triangle mirrored."""
    return np.tril(S) + np.tril(S, -1).T


def selection_tensor(out_of_index: np.ndarray, in_shape: tuple) -> np.ndarray:
    """Jacobian of a linear rearrangement from the image of the flat index array (1-based; 0 = none)."""
    n = int(np.prod(in_shape, dtype=np.int64))
    out = np.asarray(out_of_index)
    return (out[..., None] == np.arange(1, n + 1)).astype(float).reshape(out.shape + tuple(in_shape))


def softmax_rows(Z):
    Ez = np.exp(Z - Z.max(axis=1, keepdims=True))
    return Ez / Ez.sum(axis=1, keepdims=True)


def log_softmax_rows(Z):
    Zs = Z - Z.max(axis=1, keepdims=True)
    return Zs - np.log(np.exp(Zs).sum(axis=1, keepdims=True))


def _sm(Z):  # the value for closed forms (plain numpy, a different formula from f's)
    Ez = np.exp(Z - np.max(Z))
    return Ez / np.sum(Ez, axis=-1, keepdims=True)


# ============================================================================ traces


add("trace_AX", lambda A, X: np.trace(A @ X),
    lambda r: (N(r, 3, 4), N(r, 4, 3)), (0, 1),
    lambda a, w: a[1].T if w == 0 else a[0].T, source="lecture: d tr(AX)/dX = A (numerator) = A^T (tensor)")


add("trace_XtAX", lambda X, A: np.trace(X.T @ A @ X),
    lambda r: (N(r, 4, 3), N(r, 4, 4)), (0, 1),
    lambda a, w: (a[1] + a[1].T) @ a[0] if w == 0 else a[0] @ a[0].T)


def _c_trace_AXBXt(a, w):
    A, X, B = a
    if w == 0:
        return X @ B.T @ X.T
    if w == 1:
        return A.T @ X @ B.T + A @ X @ B
    return X.T @ A.T @ X


add("trace_AXBXt", lambda A, X, B: np.trace(A @ X @ B @ X.T),
    lambda r: (N(r, 4, 4), N(r, 4, 3), N(r, 3, 3)), (0, 1, 2), _c_trace_AXBXt)

add("trace_method_diag_sq", lambda X: X.trace() + np.sum(np.diag(X) ** 2),
    lambda r: (N(r, 4, 4),), (0,),
    lambda a, w: np.eye(4) + 2 * np.diag(np.diag(a[0])))

# ============================================================================ determinants


add("det_X", lambda X: np.linalg.det(X), lambda r: (WC(r, 4),), (0,),
    lambda a, w: np.linalg.det(a[0]) * np.linalg.inv(a[0]).T)


def _neg_det(r):
    X = WC(r, 4)
    X[0] *= -1.0  # det < 0: log|det| goes through abs of a negative number
    return (X,)


add("logabsdet_X", lambda X: np.log(np.abs(np.linalg.det(X))), _neg_det, (0,),
    lambda a, w: np.linalg.inv(a[0]).T)


def _f_slogdet_det(X):
    s, l = np.linalg.slogdet(X)
    return s * np.exp(l)


add("slogdet_sign_times_exp", _f_slogdet_det, _neg_det, (0,),
    lambda a, w: np.linalg.det(a[0]) * np.linalg.inv(a[0]).T)


def _c_det_AXB(a, w):
    A, X, B = a
    Y = A @ X @ B
    d, Yi = np.linalg.det(Y), np.linalg.inv(Y)
    if w == 0:
        return d * (X @ B @ Yi).T
    if w == 1:
        return d * (B @ Yi @ A).T
    return d * (Yi @ A @ X).T


def _mk_AXB(r):
    A = 1.5 * E(3, 4) + 0.2 * N(r, 3, 4)
    B = 1.5 * E(4, 3) + 0.2 * N(r, 4, 3)
    return A, WC(r, 4), B


add("det_AXB", lambda A, X, B: np.linalg.det(A @ X @ B), _mk_AXB, (0, 1, 2), _c_det_AXB)


def _c_logdet_leading(a, w):
    X = a[0]
    G = np.zeros_like(X)
    G[:3, :3] = np.linalg.inv(X[:3, :3]).T
    return G


add("logdet_leading_submatrix", lambda X: np.linalg.slogdet(X[:3, :3])[1],
    lambda r: (WC(r, 5),), (0,), _c_logdet_leading,
    source="Q&A: d logdet(X_{i x i}) / dX")

# ============================================================================ inverses


def _c_inv(a, w):
    Xi = np.linalg.inv(a[0])
    return -np.einsum("ik,lj->ijkl", Xi, Xi)


add("inv_X", lambda X: np.linalg.inv(X), lambda r: (WC(r, 3),), (0,), _c_inv)


def _c_inv_AXB(a, w):
    A, X, B = a
    Yi = np.linalg.inv(A @ X @ B)
    if w == 0:
        return -np.einsum("ik,lj->ijkl", Yi, X @ B @ Yi)
    if w == 1:
        return -np.einsum("ik,lj->ijkl", Yi @ A, B @ Yi)
    return -np.einsum("ik,lj->ijkl", Yi @ A @ X, Yi)


add("inv_AXB", lambda A, X, B: np.linalg.inv(A @ X @ B), _mk_AXB, (0, 1, 2), _c_inv_AXB,
    source="COMPOSITES.md worked example")


def _f_dAinv(t, A0, A1, A2):
    return np.linalg.inv(A0 + t * A1 + t**2 * A2)


def _c_dAinv(a, w):
    t, A0, A1, A2 = a
    Ai = np.linalg.inv(A0 + t * A1 + t**2 * A2)
    if w == 0:
        return -Ai @ (A1 + 2 * t * A2) @ Ai
    return -(t**2) * np.einsum("ik,lj->ijkl", Ai, Ai)  # w == 3: dA/dA2 = t^2


add("dAinv_dx", _f_dAinv, lambda r: (S0(0.4), WC(r, 3), N(r, 3, 3), N(r, 3, 3)), (0, 3), _c_dAinv,
    source="tutorial exercise 6: dA^-1/dx = -A^-1 (dA/dx) A^-1")


def _c_ridge_inverse(a, w):
    X, lam = a
    Mi = np.linalg.inv(X.T @ X + lam * np.eye(X.shape[1]))
    if w == 1:
        return -Mi @ Mi
    return -(np.einsum("il,kj->ijkl", Mi, X @ Mi) + np.einsum("ik,lj->ijkl", Mi @ X.T, Mi))


add("ridge_inverse", lambda X, lam: np.linalg.inv(X.T @ X + lam * np.eye(3)),
    lambda r: (N(r, 5, 3), S0(0.7)), (0, 1), _c_ridge_inverse)

# ============================================================================ norms


def _c_sqnorm_Ax(a, w):
    A, x = a
    y = A @ x
    return 2 * np.outer(y, x) if w == 0 else 2 * A.T @ y


add("sqnorm_Ax", lambda A, x: np.sum((A @ x) ** 2), lambda r: (N(r, 4, 3), N(r, 3)), (0, 1), _c_sqnorm_Ax)


def _c_ln_sqnorm(a, w):
    A, x = a
    y = A @ x
    s = y @ y
    return 2 * np.outer(y, x) / s if w == 0 else 2 * A.T @ y / s


add("ln_sqnorm_Ax", lambda A, x: np.log(np.linalg.norm(A @ x) ** 2),
    lambda r: (N(r, 4, 4), N(r, 4)), (0, 1), _c_ln_sqnorm, source="Q&A: gradient of ln ||Ax||^2")


def _c_fro_AXB(a, w):
    A, X, B = a
    Y = A @ X @ B
    return 2 * Y @ (X @ B).T if w == 0 else 2 * A.T @ Y @ B.T


add("fro_AXB_sq", lambda A, X, B: np.linalg.norm(A @ X @ B, "fro") ** 2,
    lambda r: (N(r, 2, 3), N(r, 3, 4), N(r, 4, 2)), (0, 1), _c_fro_AXB,
    source="tutorial exercise 9: 2 A^T (AXB) B^T")


def _c_fro_AXBC(a, w):
    A, X, B, C = a
    R = A @ X @ B + C
    return 2 * A.T @ R @ B.T if w == 1 else 2 * R


add("fro_AXB_plus_C_sq", lambda A, X, B, C: np.sum((A @ X @ B + C) ** 2),
    lambda r: (N(r, 2, 3), N(r, 3, 4), N(r, 4, 2), N(r, 2, 2)), (1, 3), _c_fro_AXBC,
    source="tutorial exercise 9 (generalized)")


def _c_norm_rows(a, w):
    X = a[0]
    n = np.sqrt(np.sum(X * X, axis=1))
    return np.einsum("ik,il->ikl", np.eye(X.shape[0]), X / n[:, None])


add("norm_axis1", lambda X: np.linalg.norm(X, axis=1), lambda r: (N(r, 3, 4),), (0,), _c_norm_rows)


def _c_norm_cols_kd(a, w):
    X = a[0]
    n = np.sqrt(np.sum(X * X, axis=0))
    return np.einsum("jl,kj->jkl", np.eye(X.shape[1]), X / n)[None]


add("norm_axis0_keepdims", lambda X: np.linalg.norm(X, axis=0, keepdims=True),
    lambda r: (N(r, 3, 4),), (0,), _c_norm_cols_kd)

add("norm_vec_ord1", lambda x: np.linalg.norm(x, ord=1), lambda r: (AWAY(r, 5),), (0,),
    lambda a, w: np.sign(a[0]))


def _c_norm_infs(a, w):
    x = a[0]
    g = np.zeros_like(x)
    i, j = np.argmax(np.abs(x)), np.argmin(np.abs(x))
    g[i] += np.sign(x[i])
    g[j] += 2 * np.sign(x[j])
    return g


def _mk_infs(r):
    x = (0.4 + 0.3 * r.permutation(5)) * r.choice([-1.0, 1.0], 5)  # distinct magnitudes 0.3 apart
    return (x,)


add("norm_vec_inf_neginf", lambda x: np.linalg.norm(x, ord=np.inf) + 2 * np.linalg.norm(x, ord=-np.inf),
    _mk_infs, (0,), _c_norm_infs)

add("norm_vec_2", lambda x: np.linalg.norm(x), lambda r: (N(r, 5),), (0,),
    lambda a, w: a[0] / np.sqrt(a[0] @ a[0]))

# ============================================================================ quadratic forms


add("quad_xAx", lambda x, A: x @ A @ x, lambda r: (N(r, 4), N(r, 4, 4)), (0, 1),
    lambda a, w: (a[1] + a[1].T) @ a[0] if w == 0 else np.outer(a[0], a[0]),
    source="tutorial exercise 7 / Q&A: (A + A^T) x")


def _c_quad_AtA(a, w):
    x, A = a
    return 2 * A.T @ A @ x if w == 0 else 2 * np.outer(A @ x, x)


add("quad_xAtAx", lambda x, A: x @ A.T @ A @ x, lambda r: (N(r, 3), N(r, 4, 3)), (0, 1), _c_quad_AtA)


def _c_uXv(a, w):
    u, X, v = a
    return (X @ v, np.outer(u, v), X.T @ u)[w]


add("bilinear_uXv", lambda u, X, v: u @ X @ v, lambda r: (N(r, 3), N(r, 3, 4), N(r, 4)), (0, 1, 2), _c_uXv,
    source="lecture: d u^T X v / dX = v u^T (numerator layout)")

# ============================================================================ least squares, ridge, normal equations


def _c_lstsq(a, w):
    X, y, wv = a
    res = X @ wv - y
    return (2 * np.outer(res, wv), -2 * res, 2 * X.T @ res)[w]


add("lstsq_loss", lambda X, y, w: np.sum((X @ w - y) ** 2), lambda r: (N(r, 6, 3), N(r, 6), N(r, 3)),
    (0, 1, 2), _c_lstsq, source="tutorial: dL/dw = 2 X^T (Xw - y)")


def _c_ridge(a, w):
    X, y, wv, lam = a
    return 2 * X.T @ (X @ wv - y) + 2 * lam * wv if w == 2 else np.array(wv @ wv)


add("ridge_loss", lambda X, y, w, lam: np.linalg.norm(X @ w - y) ** 2 + lam * np.linalg.norm(w) ** 2,
    lambda r: (N(r, 6, 3), N(r, 6), N(r, 3), S0(0.7)), (2, 3), _c_ridge,
    source="tutorial exercise 10 (with the lambda the tutorial drops)")


def _c_ridge_grad(a, w):
    wv, X, y, lam = a
    return 2 * (X.T @ X + lam * np.eye(X.shape[1])) if w == 0 else 2 * wv


add("ridge_gradient_map", lambda w, X, y, lam: 2 * X.T @ (X @ w - y) + 2 * lam * w,
    lambda r: (N(r, 3), N(r, 6, 3), N(r, 6), S0(0.7)), (0, 3), _c_ridge_grad,
    source="tutorial exercise 10: Hessian 2 (X^T X + lambda I)")


def _c_normal_eq(a, w):
    X, y, lam = a
    Mi = np.linalg.inv(X.T @ X + lam * np.eye(X.shape[1]))
    wv = Mi @ X.T @ y
    if w == 0:
        return np.einsum("il,k->ikl", Mi, y - X @ wv) - np.einsum("ik,l->ikl", Mi @ X.T, wv)
    if w == 1:
        return Mi @ X.T
    return -Mi @ wv


add("normal_equations_solve", lambda X, y, lam: np.linalg.solve(X.T @ X + lam * np.eye(3), X.T @ y),
    lambda r: (N(r, 6, 3), N(r, 6), S0(0.5)), (0, 1, 2), _c_normal_eq,
    source="tutorial: w = (X^T X + lambda I)^-1 X^T y")


def _c_pinv(a, w):
    return _c_normal_eq((a[0], a[1], 0.0), w)


add("pinv_solution", lambda X, y: np.linalg.inv(X.T @ X) @ X.T @ y,
    lambda r: (N(r, 6, 3), N(r, 6)), (0, 1), _c_pinv, source="tutorial: w = (X^T X)^-1 X^T y")


def _c_multireg(a, w):
    X, Y, A = a
    R = Y - X @ A
    return -2 * R @ A.T if w == 0 else -2 * X.T @ R


add("multiple_regression", lambda X, Y, A: np.trace((Y - X @ A).T @ (Y - X @ A)),
    lambda r: (N(r, 5, 3), N(r, 5, 2), N(r, 3, 2)), (0, 2), _c_multireg,
    source="lecture: d/dA = -2 X^T (Y - XA) (the summary slide labels it d/dX)")


def _f_lecture_loop(a, X, y):
    total = 0.0
    for i in range(X.shape[0]):  # Python loop over samples, as on the lecture slide
        total = total + (y[i] - a @ X[i]) ** 2
    return total


add("linreg_python_loop", _f_lecture_loop, lambda r: (N(r, 3), N(r, 5, 3), N(r, 5)), (0, 1),
    lambda a, w: -2 * a[1].T @ (a[2] - a[1] @ a[0]) if w == 0 else -2 * np.outer(a[2] - a[1] @ a[0], a[0]),
    source="lecture: sum_i (y_i - a^T x_i)^2")

# ============================================================================ PCA / covariance


def _cov(X):
    Xc = X - X.mean(axis=0)
    return Xc.T @ Xc / (X.shape[0] - 1)


def _c_cov(a, w):
    X = a[0]
    n, k = X.shape
    Xc = X - X.mean(axis=0, keepdims=True)
    I = np.eye(k)
    return (np.einsum("jl,ki->ijkl", I, Xc) + np.einsum("il,kj->ijkl", I, Xc)) / (n - 1)


add("covariance", _cov, lambda r: (N(r, 5, 3),), (0,), _c_cov)

add("covariance_trace", lambda X: np.trace(_cov(X)), lambda r: (N(r, 5, 3),), (0,),
    lambda a, w: 2 * (a[0] - a[0].mean(axis=0)) / (a[0].shape[0] - 1))


def _c_cov_eig(a, w):
    X = a[0]
    n = X.shape[0]
    Xc = X - X.mean(axis=0)
    _, V = np.linalg.eigh(Xc.T @ Xc / (n - 1))
    return 2 * np.einsum("li,ki->ikl", V, Xc @ V) / (n - 1)


add("covariance_eigvalsh", lambda X: np.linalg.eigvalsh(_cov(X)), lambda r: (N(r, 6, 3),), (0,), _c_cov_eig,
    source="PCA: variances along the principal axes")


def _c_pca(a, w):
    wv, X, lam = a
    return 2 * X.T @ X @ wv - 2 * lam * wv


add("pca_lagrangian", lambda w, X, lam: np.linalg.norm(X @ w) ** 2 + lam * (1 - np.linalg.norm(w) ** 2),
    lambda r: (N(r, 3), N(r, 5, 3), S0(1.3)), (0,), _c_pca, source="tutorial exercise 8")

# ============================================================================ softmax


def _f_softmax_vec(z):
    e = np.exp(z - np.max(z))
    return e / e.sum()


add("softmax_vector", _f_softmax_vec, lambda r: (N(r, 5),), (0,),
    lambda a, w: np.diag(_sm(a[0])) - np.outer(_sm(a[0]), _sm(a[0])))


def _c_softmax_rows(a, w):
    Z = a[0]
    s = np.stack([_sm(z) for z in Z])
    m, n = Z.shape
    return np.einsum("ik,ij,jl->ijkl", np.eye(m), s, np.eye(n)) - np.einsum("ik,ij,il->ijkl", np.eye(m), s, s)


add("softmax_rows", softmax_rows, lambda r: (N(r, 3, 4),), (0,), _c_softmax_rows)


def _c_log_softmax_rows(a, w):
    Z = a[0]
    s = np.stack([_sm(z) for z in Z])
    m, n = Z.shape
    # delta_ik (delta_jl - s_il): the second term is constant along j
    return np.einsum("ik,jl->ijkl", np.eye(m), np.eye(n)) - np.einsum("ik,il->ikl", np.eye(m), s)[:, None]


add("log_softmax_rows", log_softmax_rows, lambda r: (N(r, 3, 4),), (0,), _c_log_softmax_rows)


def _mk_xent(r):
    Y = np.eye(4)[r.integers(0, 4, 3)]
    return N(r, 3, 4), Y


add("softmax_cross_entropy", lambda Z, Y: -np.sum(Y * log_softmax_rows(Z)) / Z.shape[0], _mk_xent, (0,),
    lambda a, w: (np.stack([_sm(z) for z in a[0]]) - a[1]) / a[0].shape[0])


def _c_softmax_XW(a, w):
    X, W = a
    s = np.stack([_sm(z) for z in X @ W])
    m, n = s.shape
    if w == 1:  # J[i,j,a,b] = s_ij (delta_jb - s_ib) X_ia
        return np.einsum("ij,jb,ia->ijab", s, np.eye(n), X) - np.einsum("ij,ib,ia->ijab", s, s, X)
    # J[i,j,k,l] = delta_ik (s_ij W_lj - s_ij (s W^T)_il)
    return np.einsum("ik,ij,lj->ijkl", np.eye(m), s, W) - np.einsum("ik,ij,il->ijkl", np.eye(m), s, s @ W.T)


add("softmax_of_XW", lambda X, W: softmax_rows(X @ W), lambda r: (N(r, 3, 4), N(r, 4, 3)), (0, 1), _c_softmax_XW,
    source="COMPOSITES.md row softmax of XW")


def _f_logsumexp(x):
    m = np.max(x)
    return m + np.log(np.sum(np.exp(x - m)))


add("logsumexp", _f_logsumexp, lambda r: (N(r, 6),), (0,), lambda a, w: _sm(a[0]))

# ============================================================================ layer norm

EPS = 1e-5


def _f_layernorm_vec(x, gamma, beta):
    mu = x.mean()
    var = ((x - mu) ** 2).mean()
    return gamma * (x - mu) / np.sqrt(var + EPS) + beta


def _ln_parts(x):
    m = x.shape[-1]
    mu = x.mean(axis=-1, keepdims=True)
    sig = np.sqrt(np.mean((x - mu) ** 2, axis=-1, keepdims=True) + EPS)
    return m, sig, (x - mu) / sig


def _c_layernorm_vec(a, w):
    x, gamma, beta = a
    m, sig, xh = _ln_parts(x)
    if w == 1:
        return np.diag(xh)
    if w == 2:
        return np.eye(m)
    # (gamma_i / sigma) (delta_ik - 1/m - xhat_i xhat_k / m)
    return (gamma / sig)[:, None] * (np.eye(m) - 1.0 / m - np.outer(xh, xh) / m)


add("layernorm_vector", _f_layernorm_vec, lambda r: (N(r, 5) * 2 + 1, N(r, 5), N(r, 5)), (0, 1, 2),
    _c_layernorm_vec, diagonal=(1,), source="Q&A: layer norm gradient w.r.t. x, gamma and beta")


def _f_layernorm_seed(x, gamma, beta):
    m = x.shape[0]
    alpha = 1.0 / m
    mu = alpha * np.sum(x)
    sigma = alpha * np.sum((x - mu) ** 2)
    return gamma * (x - mu) * (sigma + EPS) ** -0.5 + beta


def _c_layernorm_seed(a, w):
    x, gamma, beta = a
    m, sig, xh = _ln_parts(x)
    if w == 1:
        return xh
    if w == 2:
        return np.ones(m)
    return gamma / sig * (np.eye(m) - 1.0 / m - np.outer(xh, xh) / m)


add("layernorm_seed_scalar_affine", _f_layernorm_seed, lambda r: (N(r, 6), S0(1.7), S0(-0.4)), (0, 1, 2),
    _c_layernorm_seed, source="Q&A: f = gamma (x - 1 mu)(sigma + eps)^-1/2 + 1 beta, scalar gamma and beta")


def _f_layernorm_rows(X, gamma, beta):
    mu = X.mean(axis=1, keepdims=True)
    var = X.var(axis=1, keepdims=True)
    return (X - mu) / np.sqrt(var + EPS) * gamma + beta


def _c_layernorm_rows(a, w):
    X, gamma, beta = a
    n, m = X.shape
    _, sig, xh = _ln_parts(X)
    I_n, I_m = np.eye(n), np.eye(m)
    if w == 1:
        return np.einsum("ij,jl->ijl", xh, I_m)
    if w == 2:
        return np.einsum("ij,jl->ijl", np.ones((n, m)), I_m)
    inner = I_m[None] - 1.0 / m - np.einsum("ij,il->ijl", xh, xh) / m  # (n, m, m)
    return np.einsum("ik,j,ijl->ijkl", I_n, gamma, inner / sig[:, :, None])


add("layernorm_rows", _f_layernorm_rows, lambda r: (N(r, 3, 4) + 0.5, N(r, 4), N(r, 4)), (0, 1, 2),
    _c_layernorm_rows)

# ============================================================================ MLP layers, logistic regression


def _c_dense_tanh(a, w):
    X, W, b = a
    D = 1 - np.tanh(X @ W + b) ** 2
    n, o = D.shape
    if w == 0:
        return np.einsum("ij,ik,lj->ijkl", D, np.eye(n), W)
    if w == 1:
        return np.einsum("ij,ik,jl->ijkl", D, X, np.eye(o))
    return np.einsum("ij,jl->ijl", D, np.eye(o))


add("dense_tanh", lambda X, W, b: np.tanh(X @ W + b), lambda r: (N(r, 3, 4), N(r, 4, 2) * 0.5, N(r, 2)),
    (0, 1, 2), _c_dense_tanh)


def _f_mlp2(W1, x, b1, W2, b2):
    return np.tanh(W2 @ np.tanh(W1 @ x + b1) + b2)


def _c_mlp2(a, w):
    W1, x, b1, W2, b2 = a
    h = np.tanh(W1 @ x + b1)
    o = np.tanh(W2 @ h + b2)
    M = (1 - o**2)[:, None] * W2 * (1 - h**2)[None, :]  # D2 W2 D1
    if w == 0:
        return np.einsum("oa,b->oab", M, x)
    if w == 1:
        return M @ W1
    if w == 2:
        return M
    return np.einsum("oa,b->oab", np.diag(1 - o**2), h)


add("mlp_two_layer", _f_mlp2,
    lambda r: (N(r, 3, 4) * 0.6, N(r, 4), N(r, 3), N(r, 2, 3) * 0.6, N(r, 2)), (0, 1, 2, 3), _c_mlp2,
    source="COMPOSITES.md: (D2 W2 D1)[o,h] x[d]")


def _mk_relu_layer(r):
    while True:
        X, W, b = N(r, 3, 4), N(r, 4, 2), N(r, 2)
        if np.min(np.abs(X @ W + b)) > 0.15:
            return X, W, b


def _c_relu_layer(a, w):
    X, W, b = a
    D = (X @ W + b > 0).astype(float)
    n, o = D.shape
    if w == 0:
        return np.einsum("ij,ik,lj->ijkl", D, np.eye(n), W)
    if w == 1:
        return np.einsum("ij,ik,jl->ijkl", D, X, np.eye(o))
    return np.einsum("ij,jl->ijl", D, np.eye(o))


add("relu_layer", lambda X, W, b: np.maximum(X @ W + b, 0.0), _mk_relu_layer, (0, 1, 2), _c_relu_layer)

add("relu_vector_max0x", lambda x: np.maximum(0.0, x), lambda r: (AWAY(r, 6),), (0,),
    lambda a, w: diag_tensor(a[0] > 0), diagonal=(0,),
    source="Q&A: the derivative of max(0, x) is a diagonal matrix")


def _f_logistic(w, X, y):
    p = 1.0 / (1.0 + np.exp(-(X @ w)))
    return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))


def _c_logistic(a, w):
    wv, X, y = a
    p = 1.0 / (1.0 + np.exp(-(X @ wv)))
    n = X.shape[0]
    return X.T @ (p - y) / n if w == 0 else np.outer(p - y, wv) / n


add("logistic_loss", _f_logistic, lambda r: (N(r, 3), N(r, 6, 3), r.integers(0, 2, 6).astype(float)),
    (0, 1), _c_logistic)


def _c_tj_sigmoid(a, w):
    X, wv = a
    p = 1.0 / (1.0 + np.exp(-(X @ wv)))
    d = p * (1 - p)
    return np.einsum("ik,l->ikl", np.diag(d), wv) if w == 0 else d[:, None] * X


add("tj_sigmoid_of_Xw", lambda X, w: tj.sigmoid(X @ w), lambda r: (N(r, 4, 3), N(r, 3)), (0, 1), _c_tj_sigmoid,
    source="a tensorjac op inside f")

# ============================================================================ rank-3 and rank-4 tensors


add("einsum_rank3", lambda T, M: np.einsum("ijk,jk->i", T, M), lambda r: (N(r, 2, 3, 4), N(r, 3, 4)), (0, 1),
    lambda a, w: np.einsum("ia,bc->iabc", np.eye(2), a[1]) if w == 0 else a[0].copy())


def _c_bmm(a, w):
    A, B = a
    nb = A.shape[0]
    if w == 0:  # J[b,i,j,c,k,l] = delta_bc delta_ik B[b,l,j]
        return np.einsum("bc,ik,blj->bijckl", np.eye(nb), np.eye(A.shape[1]), B)
    return np.einsum("bc,bik,jl->bijckl", np.eye(nb), A, np.eye(B.shape[2]))


add("batched_matmul", lambda A, B: A @ B, lambda r: (N(r, 2, 3, 4), N(r, 2, 4, 2)), (0, 1), _c_bmm)

add("sum_axes_rank3", lambda T: T.sum(axis=(0, 2)), lambda r: (N(r, 2, 3, 4),), (0,),
    lambda a, w: np.einsum("jb,a,c->jabc", np.eye(3), np.ones(2), np.ones(4)))

add("mean_sq_keepdims_rank3", lambda T: np.mean(T**2, axis=(0, -1), keepdims=True),
    lambda r: (N(r, 2, 3, 4),), (0,),
    lambda a, w: np.einsum("jb,abc->jabc", np.eye(3), 2 * a[0] / 8)[None, :, None])

add("rank3_tanh_einsum", lambda T, W: np.tanh(np.einsum("bij,jk->bik", T, W)).sum(axis=1),
    lambda r: (N(r, 2, 3, 4), N(r, 4, 2)), (0, 1))


def _f_chain_rank4(X, Y, C):
    Z = X[:, :, None, None] * Y[None, None, :, :]  # a rank-4 intermediate
    return np.einsum("ijkl,jk->il", np.sin(Z), C)


def _c_chain_rank4(a, w):
    X, Y, C = a
    cZ = np.cos(np.einsum("ab,kl->abkl", X, Y))
    if w == 0:  # J[i,l,a,b] = delta_ia sum_k cos(X_ab Y_kl) Y_kl C_bk
        return np.einsum("ia,abkl,kl,bk->ilab", np.eye(X.shape[0]), cZ, Y, C)
    if w == 1:  # J[i,l,c,d] = delta_ld sum_j cos(X_ij Y_cd) X_ij C_jc
        return np.einsum("ld,ijcd,ij,jc->ilcd", np.eye(Y.shape[1]), cZ, X, C)
    return np.einsum("ijkl->iljk", np.sin(np.einsum("ab,kl->abkl", X, Y)))


add("chain_rank4_intermediate", _f_chain_rank4, lambda r: (N(r, 2, 3), N(r, 3, 2), N(r, 3, 3)), (0, 1, 2),
    _c_chain_rank4, source="Q&A: chain rule through high-rank intermediates")


def _f_scalar_matrix_scalar(t, A, B, C):
    G = A + t * B + np.sin(t) * C
    return np.trace(G @ G) + np.linalg.det(G)


def _c_scalar_matrix_scalar(a, w):
    t, A, B, C = a
    G = A + t * B + np.sin(t) * C
    dG = B + np.cos(t) * C
    return np.array(2 * np.trace(G @ dG) + np.linalg.det(G) * np.trace(np.linalg.solve(G, dG)))


add("scalar_to_matrix_to_scalar", _f_scalar_matrix_scalar,
    lambda r: (S0(0.3), WC(r, 3), N(r, 3, 3), N(r, 3, 3)), (0,), _c_scalar_matrix_scalar,
    source="Q&A: h(x) = f(g(x)), g: R -> R^{m x m}, f: R^{m x m} -> R")


def _c_rank4_input(a, w):
    T, M = a
    if w == 1:
        return T**2
    return np.einsum("ia,jb,abcd,cd->ijabcd", np.eye(2), np.eye(2), 2 * T, M)


add("rank4_input", lambda T, M: np.einsum("abcd,cd->ab", T**2, M), lambda r: (N(r, 2, 2, 3, 2), N(r, 3, 2)),
    (0, 1), _c_rank4_input)

# ============================================================================ the seeds' exercises


add("seed_2x2_plus_4y", lambda x, y: 2 * x**2 + 4 * y, lambda r: (S0(0.8), S0(-1.3)), (0, 1),
    lambda a, w: np.array(4 * a[0]) if w == 0 else np.array(4.0),
    source="tutorial: d(2x^2 + 4y) = (4x, 4) (the tutorial prints 4x + 4y and 2x^2 + 4)")


def _c_quotient(a, w):
    x = a[0]
    d = 1 - x[2]
    return np.array([2 / d, 2 * x[1] / d, (2 * x[0] + x[1] ** 2) / d**2])


add("seed_quotient", lambda x: (2 * x[0] + x[1] ** 2) / (1 - x[2]), lambda r: (np.array([0.3, -0.7, 0.2]),),
    (0,), _c_quotient, source="tutorial quick exercise")

add("seed_det2x2", lambda X: X[0, 0] * X[1, 1] - X[0, 1] * X[1, 0], lambda r: (N(r, 2, 2),), (0,),
    lambda a, w: np.array([[a[0][1, 1], -a[0][1, 0]], [-a[0][0, 1], a[0][0, 0]]]),
    source="tutorial exercise: 2x2 determinant")

add("seed_vector_function", lambda x: np.stack([x[0] + x[1], -x[2] ** 2]), lambda r: (N(r, 3),), (0,),
    lambda a, w: np.array([[1.0, 1.0, 0.0], [0.0, 0.0, -2 * a[0][2]]]), source="tutorial exercise")


def _f_matrix_of_scalar(x):
    return np.stack([np.stack([np.sqrt(x), 0 * x + 1]), np.stack([x, x**2])])


add("seed_matrix_of_scalar", _f_matrix_of_scalar, lambda r: (S0(1.7),), (0,),
    lambda a, w: np.array([[0.5 / np.sqrt(a[0]), 0.0], [1.0, 2 * a[0]]]),
    source="tutorial: F(x) = [[sqrt x, 1], [x, x^2]]")

add("seed_Ax_wrt_A", lambda A, x: A @ x, lambda r: (N(r, 3, 4), N(r, 4)), (0, 1),
    lambda a, w: np.einsum("ij,k->ijk", np.eye(3), a[1]) if w == 0 else a[0].copy(),
    source="tutorial exercise 2: dAx/dA is a rank-3 tensor, not x")

add("seed_AX_wrt_A", lambda A, X: A @ X, lambda r: (N(r, 2, 3), N(r, 3, 4)), (0, 1),
    lambda a, w: np.einsum("ik,lj->ijkl", np.eye(2), a[1]) if w == 0 else np.einsum("ik,jl->ijkl", a[0], np.eye(4)),
    source="Q&A: d(AX)/dA as a rank-4 tensor")


def _c_circle(a, w):
    th, r = a
    if w == 0:
        return np.array([-r * np.sin(th), r * np.cos(th)])
    return np.array([np.cos(th), np.sin(th)])


add("seed_circle", lambda th, r: np.stack([r * np.cos(th), r * np.sin(th)]), lambda r: (S0(0.7), S0(2.0)),
    (0, 1), _c_circle, source="lecture: tangent vector of a circle")


def _rot(th):
    c, s = np.cos(th), np.sin(th)
    return np.stack([np.stack([c, -s]), np.stack([s, c])])


def _c_rotation(a, w):
    th, u = a
    if w == 1:
        return _rot(th)
    dT = np.array([[-np.sin(th), -np.cos(th)], [np.cos(th), -np.sin(th)]])
    return dT @ u


add("seed_rotation", lambda th, u: _rot(th) @ u, lambda r: (S0(0.4), N(r, 2)), (0, 1), _c_rotation,
    source="lecture: d(T(theta) u)/dtheta = T'(theta) u")

add("seed_trace_XtX", lambda X: np.trace(X.T @ X), lambda r: (N(r, 3, 4),), (0,), lambda a, w: 2 * a[0],
    source="lecture: d tr(X^T X)/dX = 2X^T in numerator layout (2X in tensor layout)")

add("seed_affine_scalar", lambda a0, a, B: a0 + a @ B, lambda r: (S0(0.5), N(r, 4), N(r, 4)), (0, 2),
    lambda a, w: np.array(1.0) if w == 0 else a[1].copy(), source="Q&A: d(a0 + a^T B)/dB = a")


def _f_polar(B, A):
    D = A - B
    lam, V = np.linalg.eigh(D.T @ D)
    return D @ ((V / np.sqrt(lam)) @ V.T)


add("seed_polar_factor", _f_polar, lambda r: (N(r, 4, 3) * 0.3, N(r, 4, 3) + 2 * E(4, 3)), (0,),
    source="Q&A: (A - B)[(A - B)^T (A - B)]^-1/2 (eigh eigenvectors)")

# ============================================================================ kron, outer, indexing, joining


def _c_kron(a, w):
    A, B = a
    (m, n), (p, q) = A.shape, B.shape
    if w == 0:  # kron[(i,k),(j,l)] = A[i,j] B[k,l]
        return np.einsum("ia,jb,kl->ikjlab", np.eye(m), np.eye(n), B).reshape(m * p, n * q, m, n)
    return np.einsum("ij,kc,ld->ikjlcd", A, np.eye(p), np.eye(q)).reshape(m * p, n * q, p, q)


add("kron_AB", lambda A, B: np.kron(A, B), lambda r: (N(r, 2, 3), N(r, 2, 2)), (0, 1), _c_kron)


def _c_outer_tanh(a, w):
    u, v = a
    t = np.tanh(v)
    if w == 0:
        return np.einsum("ac,b->abc", np.eye(u.size), t)
    return np.einsum("a,bc->abc", u, np.diag(1 - t**2))


add("outer_tanh", lambda u, v: np.outer(u, np.tanh(v)), lambda r: (N(r, 3), N(r, 4)), (0, 1), _c_outer_tanh)


add("slice_step_broadcast", lambda X: 2 * X[1:, ::2] + X[0, ::2], lambda r: (N(r, 3, 5),), (0,),
    lambda a, w: 2 * selection_tensor(np.arange(1, 16).reshape(3, 5)[1:, ::2], (3, 5))
    + selection_tensor(np.broadcast_to(np.arange(1, 16).reshape(3, 5)[0, ::2], (2, 3)), (3, 5)))

add("fancy_index_repeated", lambda X: X[[0, 2, 2]][:, [1, 3]] ** 2, lambda r: (N(r, 3, 4),), (0,),
    lambda a, w: 2 * a[0][[0, 2, 2]][:, [1, 3]][:, :, None, None]
    * selection_tensor(np.arange(1, 13).reshape(3, 4)[[0, 2, 2]][:, [1, 3]], (3, 4)))

add("boolean_mask", lambda X: np.sin(X[X > 0]), lambda r: (AWAY(r, 3, 4),), (0,),
    lambda a, w: np.cos(a[0][a[0] > 0])[:, None, None]
    * selection_tensor(np.arange(1, 13).reshape(3, 4)[a[0] > 0], (3, 4)))

_ROWS, _COLS = np.array([0, 2]), np.array([1, 0, 3])
add("advanced_rows_cols", lambda X: 3 * X[_ROWS[:, None], _COLS], lambda r: (N(r, 3, 4),), (0,),
    lambda a, w: 3 * selection_tensor(np.arange(1, 13).reshape(3, 4)[_ROWS[:, None], _COLS], (3, 4)))


def _c_concat(a, w):
    x = a[0]
    n = x.size
    return np.concatenate([np.eye(n), 2 * np.eye(n)[::-1], np.diag(np.cos(x))])


add("concatenate_mix", lambda x: np.concatenate([x, 2 * x[::-1], np.sin(x)]), lambda r: (N(r, 4),), (0,),
    _c_concat)


def _c_hstack_bias(a, w):
    X, wv = a
    n, k = X.shape
    if w == 1:
        return np.hstack([X, np.ones((n, 1))])
    return np.einsum("ik,l->ikl", np.eye(n), wv[:k])


add("hstack_bias_column", lambda X, w: np.hstack([X, np.ones((X.shape[0], 1))]) @ w,
    lambda r: (N(r, 4, 3), N(r, 4)), (0, 1), _c_hstack_bias)

add("vstack_stack", lambda x, y: np.vstack([x, y**2, np.stack([x, y], axis=-1).prod(axis=-1)]),
    lambda r: (N(r, 3), N(r, 3)), (0, 1))

add("triu_tril", lambda X: np.triu(X) @ np.tril(X, -1).T, lambda r: (N(r, 3, 3),), (0,))

add("tile_repeat_flip", lambda x: np.flip(np.tile(x, 2)) * np.repeat(x, 2), lambda r: (N(r, 3),), (0,))

add("diag_diagonal_trace", lambda X: np.diag(np.diag(X)) @ X + np.diagonal(X, offset=1).sum() + np.trace(X),
    lambda r: (N(r, 3, 3),), (0,))


def _f_transposes(T):
    A1 = np.moveaxis(T, 0, -1).reshape(4, 3)
    A2 = np.swapaxes(T, 1, 2).reshape(4, -1)
    return A1.T @ A2 + np.transpose(T, (2, 0, 1)).reshape(2, 6)[:, :3].T @ np.ones((2, 3))


add("transpose_reshape_family", _f_transposes, lambda r: (N(r, 2, 3, 2),), (0,))


def _f_expand_squeeze(x, c):
    y = np.expand_dims(x, 0) * c[:, None]  # (3, 4)
    return np.squeeze(np.broadcast_to(y[None], (2, 3, 4))[:1], axis=0).ravel() + x.flatten()[::-1].repeat(3)


add("expand_squeeze_broadcast", _f_expand_squeeze, lambda r: (N(r, 4), N(r, 3)), (0,))

add("tensordot_axes", lambda A, X: np.tensordot(A, X, axes=([1, 2], [0, 1])) + np.tensordot(A, X, axes=2),
    lambda r: (N(r, 2, 3, 4), N(r, 3, 4)), (0, 1),
    lambda a, w: np.einsum("ia,bc->iabc", 2 * np.eye(2), a[1]) if w == 0 else 2 * a[0])

add("dot_inner_outer", lambda x, y: np.dot(x, y) * np.inner(x, y) + np.outer(x, y).sum(), lambda r: (N(r, 4), N(r, 4)),
    (0, 1), lambda a, w: 2 * np.dot(a[0], a[1]) * a[1 - w] + np.sum(a[1 - w]))

# ============================================================================ linear-algebra functions


def _c_solve2(a, w):
    A, B = a
    Ai = np.linalg.inv(A)
    if w == 0:
        return -np.einsum("ik,lj->ijkl", Ai, Ai @ B)
    return np.einsum("ik,jl->ijkl", Ai, np.eye(B.shape[1]))


add("solve_matrix_rhs", lambda A, B: np.linalg.solve(A, B), lambda r: (WC(r, 3), N(r, 3, 2)), (0, 1), _c_solve2)


def _c_solve1(a, w):
    A, b = a
    Ai = np.linalg.inv(A)
    return -np.einsum("ik,l->ikl", Ai, Ai @ b) if w == 0 else Ai


add("solve_vector_rhs", lambda A, b: np.linalg.solve(A, b), lambda r: (WC(r, 3), N(r, 3)), (0, 1), _c_solve1)

add("cholesky_of_gram", lambda A: np.linalg.cholesky(A @ A.T + 3 * np.eye(3)), lambda r: (N(r, 3, 4),), (0,))

add("cholesky_lower_triangle", lambda S: np.linalg.cholesky(S), lambda r: (SPD_GARBAGE(r, 3),), (0,),
    source="numpy reads only the lower triangle")


def _c_chol_logdet(a, w):
    return lower_convention(np.linalg.inv(sym_from_lower(a[0])))


add("cholesky_logdet", lambda S: 2 * np.sum(np.log(np.diag(np.linalg.cholesky(S)))),
    lambda r: (SPD_GARBAGE(r, 4),), (0,), _c_chol_logdet)


def _c_eigh_vals(a, w):
    _, V = np.linalg.eigh(a[0])
    return lower_convention(np.einsum("ki,li->ikl", V, V))


add("eigh_eigenvalues", lambda S: np.linalg.eigh(S)[0], lambda r: (SPD_GARBAGE(r, 4),), (0,), _c_eigh_vals)

add("eigvalsh_sum_sq", lambda S: np.sum(np.linalg.eigvalsh(S) ** 2), lambda r: (SPD_GARBAGE(r, 4),), (0,),
    lambda a, w: lower_convention(2 * sym_from_lower(a[0])))


def _f_eig_proj(S):
    V = np.linalg.eigh(S)[1]
    v = V[:, -1:]
    return v @ v.T


add("eigh_top_projector", _f_eig_proj, lambda r: (SPD_GARBAGE(r, 3),), (0,))

add("tj_sandwich_plus_X", lambda A, X, B: tj.sandwich(A, X, B) + X, lambda r: (N(r, 3, 3), N(r, 3, 3), N(r, 3, 3)),
    (1,), lambda a, w: np.einsum("ik,lj->ijkl", a[0], a[2]) + np.einsum("ik,jl->ijkl", np.eye(3), np.eye(3)))


def _c_tj_inv_tanh(a, w):
    Xi = np.linalg.inv(a[0])
    return -np.einsum("ij,ik,lj->ijkl", 1 - np.tanh(Xi) ** 2, Xi, Xi)


add("tj_inv_then_tanh", lambda X: np.tanh(tj.inv(X)), lambda r: (WC(r, 3),), (0,), _c_tj_inv_tanh)

# ============================================================================ elementwise, where/clip/abs


add("power_both_traced", lambda x, y: x**y, lambda r: (POS(r, 5), N(r, 5)), (0, 1),
    lambda a, w: diag_tensor(a[1] * a[0] ** (a[1] - 1) if w == 0 else a[0] ** a[1] * np.log(a[0])),
    diagonal=(0, 1))


def _f_log_family(x):
    y = x + 3
    return (np.expm1(x) + np.log1p(x**2) + np.log2(y) + np.log10(y) + np.cbrt(y) + np.sqrt(y) + np.square(x)
            + np.reciprocal(y) + np.exp(x) + np.log(y))


def _c_log_family(a, w):
    x = a[0]
    y = x + 3
    d = (np.exp(x) + 2 * x / (1 + x**2) + 1 / (y * np.log(2)) + 1 / (y * np.log(10)) + y ** (-2 / 3) / 3
         + 0.5 / np.sqrt(y) + 2 * x - 1 / y**2 + np.exp(x) + 1 / y)
    return diag_tensor(d)


add("ufunc_exp_log_family", _f_log_family, lambda r: (N(r, 2, 3),), (0,), _c_log_family, diagonal=(0,))


def _f_trig_family(x):
    return (np.sin(x) + np.cos(x) + np.tan(x / 2) + np.sinh(x) + np.cosh(x) + np.tanh(x) + np.arcsin(x / 3)
            + np.arccos(x / 3) * 2 + np.arctan(x) + np.arcsinh(x) + np.arccosh(x**2 + 2) + np.arctanh(x / 3))


def _c_trig_family(a, w):
    x = a[0]
    d = (np.cos(x) - np.sin(x) + 0.5 / np.cos(x / 2) ** 2 + np.cosh(x) + np.sinh(x) + 1 / np.cosh(x) ** 2
         + (1 / 3) / np.sqrt(1 - (x / 3) ** 2) - 2 * (1 / 3) / np.sqrt(1 - (x / 3) ** 2) + 1 / (1 + x**2)
         + 1 / np.sqrt(x**2 + 1) + 2 * x / np.sqrt((x**2 + 2) ** 2 - 1) + (1 / 3) / (1 - (x / 3) ** 2))
    return diag_tensor(d)


add("ufunc_trig_hyperbolic_family", _f_trig_family, lambda r: (N(r, 2, 3) * 0.8,), (0,), _c_trig_family,
    diagonal=(0,))


def _mk_where_clip(r):
    x = r.choice([-1.0, 1.0], (2, 4)) * np.where(r.random((2, 4)) < 0.5, r.uniform(0.1, 0.4, (2, 4)),
                                                 r.uniform(0.6, 1.5, (2, 4)))
    return x, r.random((2, 4)) < 0.5


add("where_abs_clip", lambda x, mask: np.where(mask, np.abs(x), np.clip(x, -0.5, 0.5)), _mk_where_clip, (0,),
    lambda a, w: diag_tensor(np.where(a[1], np.sign(a[0]), np.abs(a[0]) < 0.5)), diagonal=(0,))

add("abs_cubed", lambda x: np.abs(x) ** 3, lambda r: (AWAY(r, 5),), (0,),
    lambda a, w: diag_tensor(3 * a[0] * np.abs(a[0])), diagonal=(0,))

add("sign_times_square", lambda x: np.sign(x) * x**2, lambda r: (AWAY(r, 5),), (0,),
    lambda a, w: diag_tensor(2 * np.abs(a[0])), diagonal=(0,), source="sign is a constant (derivative 0)")

# ============================================================================ reductions


add("prod_all", lambda x: np.prod(x), lambda r: (AWAY(r, 5, lo=0.5),), (0,),
    lambda a, w: np.array([np.prod(np.delete(a[0], i)) for i in range(a[0].size)]))


def _c_prod_axis(a, w):
    X = a[0]
    n, m = X.shape
    T = np.zeros((n, n, m))
    for i in range(n):
        for l in range(m):
            T[i, i, l] = np.prod(np.delete(X[i], l))
    return T


add("prod_axis1", lambda X: X.prod(axis=1), lambda r: (AWAY(r, 3, 4, lo=0.5),), (0,), _c_prod_axis)


def _c_var_std(a, w):
    X = a[0]
    n, k = X.shape
    dev = X - X.mean(axis=0)
    sd = np.sqrt(np.mean(dev**2, axis=0))
    G = 2 * dev / (n - 1) + dev / (n * sd)  # d/dX[k,l] of column l's entry
    return np.einsum("jl,kl->jkl", np.eye(k), G)


add("var_ddof1_plus_std", lambda X: np.var(X, axis=0, ddof=1) + np.std(X, axis=0), lambda r: (N(r, 5, 3),), (0,),
    _c_var_std)


def _c_max_rows(a, w):
    X = a[0]
    T = np.zeros(X.shape[:1] + X.shape)
    for i, j in enumerate(np.argmax(X, axis=1)):
        T[i, i, j] = 1.0
    return T


add("max_rows", lambda X: X.max(axis=1), lambda r: (DISTINCT(r, 3, 4),), (0,), _c_max_rows)


def _c_amin_kd(a, w):
    X = a[0]
    T = np.zeros((1, X.shape[1]) + X.shape)
    for j, i in enumerate(np.argmin(X, axis=0)):
        T[0, j, i, j] = 1.0
    return T


add("amin_axis0_keepdims", lambda X: np.amin(X, axis=0, keepdims=True), lambda r: (DISTINCT(r, 3, 4),), (0,),
    _c_amin_kd)


def _c_max_minus_min(a, w):
    X = a[0]
    G = np.zeros_like(X)
    G.flat[np.argmax(X)] += 1.0
    G.flat[np.argmin(X)] -= 1.0
    return G


add("max_minus_min", lambda X: np.max(X) - np.min(X), lambda r: (DISTINCT(r, 3, 4),), (0,), _c_max_minus_min)


# ============================================================================ a few bigger shapes (still < 5k entries)


add("dense_tanh_wide", lambda X, W, b: np.tanh(X @ W + b), lambda r: (N(r, 6, 8), N(r, 8, 5) * 0.3, N(r, 5)),
    (0, 1), _c_dense_tanh)

add("inv_AXB_5x5", lambda A, X, B: np.linalg.inv(A @ X @ B),
    lambda r: (WC(r, 5), WC(r, 5), WC(r, 5)), (1,), _c_inv_AXB)

add("softmax_of_XW_wide", lambda X, W: softmax_rows(X @ W), lambda r: (N(r, 5, 6), N(r, 6, 7) * 0.5), (0, 1),
    _c_softmax_XW)


# ============================================================================ references


def jac_size(case: Case, w: int, seed: int = 0) -> int:
    a = case.args(seed)
    return int(np.size(case.f(*a))) * int(np.size(a[w]))


def partial(f: Callable, args: tuple, w: int) -> Callable[[np.ndarray], Any]:
    """x -> f(*args with x at position w), everything else the same objects."""

    def g(x):
        return f(*args[:w], x, *args[w + 1 :])

    return g


def fd_reference(f: Callable, args: tuple, w: int) -> np.ndarray:
    """Richardson finite differences of f w.r.t. args[w], tensor layout."""
    return np.asarray(tj.fd.jacobian(partial(f, args, w), args[w], method="richardson"))


@functools.cache
def reference(name: str, w: int, seed: int = 0) -> tuple[tuple, np.ndarray, np.ndarray | None]:
    """(out_shape, fd tensor, closed tensor or None) for a case; cached across layouts."""
    case = by_name(name)
    args = case.args(seed)
    out_shape = np.shape(case.f(*args))
    T_fd = fd_reference(case.f, args, w)
    T_fd.flags.writeable = False
    T_cl = None
    if case.closed is not None:
        T_cl = np.asarray(case.closed(args, w), dtype=float)
        T_cl.flags.writeable = False
    return out_shape, T_fd, T_cl


# Cases made of holomorphic operations only: with complex arguments the engine must give the complex
# derivative (no conjugation); central differences with a real step are the reference.
HOLOMORPHIC = (
    "trace_AX", "trace_XtAX", "trace_AXBXt", "trace_method_diag_sq", "det_X", "det_AXB", "inv_X", "inv_AXB",
    "dAinv_dx", "ridge_inverse", "sqnorm_Ax", "fro_AXB_plus_C_sq", "quad_xAx", "quad_xAtAx", "bilinear_uXv",
    "lstsq_loss", "ridge_gradient_map", "normal_equations_solve", "pinv_solution", "multiple_regression",
    "linreg_python_loop", "covariance", "covariance_trace", "dense_tanh", "mlp_two_layer",
    "logistic_loss", "tj_sigmoid_of_Xw", "einsum_rank3", "batched_matmul", "sum_axes_rank3", "mean_sq_keepdims_rank3",
    "rank3_tanh_einsum", "chain_rank4_intermediate", "scalar_to_matrix_to_scalar", "rank4_input", "seed_2x2_plus_4y",
    "seed_quotient", "seed_det2x2", "seed_vector_function", "seed_Ax_wrt_A", "seed_AX_wrt_A", "seed_circle",
    "seed_rotation", "seed_trace_XtX", "seed_affine_scalar", "kron_AB", "outer_tanh", "slice_step_broadcast",
    "fancy_index_repeated", "advanced_rows_cols", "concatenate_mix", "hstack_bias_column", "vstack_stack", "triu_tril",
    "tile_repeat_flip", "diag_diagonal_trace", "transpose_reshape_family", "expand_squeeze_broadcast", "tensordot_axes",
    "dot_inner_outer", "solve_matrix_rhs", "solve_vector_rhs", "tj_sandwich_plus_X", "tj_inv_then_tanh",
    "power_both_traced", "ufunc_trig_hyperbolic_family", "prod_all", "prod_axis1", "dense_tanh_wide", "inv_AXB_5x5",
)


def complex_args(case: Case, seed: int = 0) -> tuple:
    """The case's arguments with a small imaginary part on every float array (away from branch cuts)."""
    r = np.random.default_rng(500 + seed)
    out = []
    for a in case.args(seed):
        a = np.asarray(a)
        out.append(a + 0.1j * r.standard_normal(a.shape) if a.dtype == np.float64 else a)
    return tuple(out)


CASE_WRT = [(c, w) for c in CASES for w in c.wrt]
CASE_WRT_IDS = [f"{c.name}-wrt{w}" for c, w in CASE_WRT]
CLOSED_WRT = [(c, w) for c, w in CASE_WRT if c.closed is not None]
CLOSED_WRT_IDS = [f"{c.name}-wrt{w}" for c, w in CLOSED_WRT]
