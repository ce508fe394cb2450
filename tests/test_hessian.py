"""tj.hessian and tj.hvp: exact Hessians against hand closed forms and tj.fd.hessian (issue 8).

Every expected value is independent of the code under test: closed forms written with numpy /
einsum below, and Richardson finite differences (``tj.fd.hessian(..., return_error=True)``,
compared within ten times their own error estimate).  Each Hessian is small (<= ~1k entries).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorjac as tj

rng = np.random.default_rng(8)

# ----------------------------------------------------------------------------- data

A4 = rng.standard_normal((4, 4))  # non-symmetric
x4 = rng.standard_normal(4)
xpos = rng.random(4) + 0.5  # positive entries (products, logs)
Xsq = rng.standard_normal((3, 3)) + 3 * np.eye(3)  # well-conditioned, non-symmetric
Xsq_inv = np.linalg.inv(Xsq)
_G = rng.standard_normal((3, 3))
Sspd = _G @ _G.T + np.eye(3)  # symmetric positive definite
Xd = rng.standard_normal((6, 3))  # a design matrix
yd = rng.standard_normal(6)
wd = rng.standard_normal(3)
ypm = np.sign(rng.standard_normal(6))  # +-1 labels
A54 = rng.standard_normal((5, 4))
Aq = rng.standard_normal((3, 3))  # for tr(X^T A X)
Xr = rng.standard_normal((3, 2))
Af = rng.standard_normal((2, 3))  # ||A X B||_F
Bf = rng.standard_normal((2, 4))
Xm = rng.standard_normal((5, 3))  # MLP data
Wm = 0.7 * rng.standard_normal((3, 2))
Ym = rng.standard_normal((5, 2))
W1 = 0.7 * rng.standard_normal((3, 4))  # two-layer MLP
W2 = 0.7 * rng.standard_normal((4, 2))
Wc = rng.standard_normal((3, 4))  # softmax classifier: 3 classes, 4 features
xc = rng.standard_normal(4)
onehot3 = np.array([0.0, 1.0, 0.0])
Xb = rng.standard_normal((5, 4))  # a batch for the classifier
Yb = np.eye(3)[[0, 2, 1, 1, 0]]
Wb = rng.standard_normal((4, 3))
Bt = rng.standard_normal((4, 4))  # trilinear form
T3 = rng.standard_normal((2, 2, 3))  # rank-3 inputs
C3 = rng.standard_normal((3, 2))
Ct = rng.standard_normal((3, 3))  # sum(inv(X) * C)
bvec, cvec = rng.standard_normal(3), rng.standard_normal(3)
Xe = rng.standard_normal((2, 3))
z3 = rng.standard_normal(3) + 0.5j * rng.standard_normal(3)
Bz = rng.standard_normal((3, 3)) + 0.4j * rng.standard_normal((3, 3))
xr4 = rng.standard_normal(4)
D1, D2 = np.eye(4)[:-1], np.eye(4)[1:]  # x[:-1] and x[1:] as constant matrices
HUNDRED = np.full(3, 100.0)
LAM = np.float64(0.3)  # a numpy scalar: see test_python_scalar_factor (xfail) for Python floats


def _sig(t):
    return 1.0 / (1.0 + np.exp(-t))


def _softmax(v, axis=-1):
    e = np.exp(v - v.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _lse(z):
    m = np.max(z)
    return m + np.log(np.sum(np.exp(z - m)))


# ----------------------------------------------------------------------------- closed forms


def cf_rayleigh(x, A):
    s, Bs = x @ x, A + A.T
    r = x @ A @ x / s
    g = (Bs @ x - 2 * r * x) / s
    return (Bs - 2 * r * np.eye(len(x)) - 2 * np.outer(x, g) - 2 * np.outer(g, x)) / s


def cf_logdet(X):
    Xi = np.linalg.inv(X)
    return -np.einsum("jk,li->ijkl", Xi, Xi)  # H[i,j,k,l] = -inv(X)[j,k] inv(X)[l,i]


def cf_det(X):
    Xi = np.linalg.inv(X)
    return np.linalg.det(X) * (np.einsum("ji,lk->ijkl", Xi, Xi) - np.einsum("jk,li->ijkl", Xi, Xi))


def cf_chol_logdet(S):
    """2 sum(log diag(cholesky(S))) = logdet of the symmetric matrix numpy builds from S's lower triangle:
    H = P^T H_logdet P with P the Jacobian of S -> tril(S) + tril(S, -1)^T."""
    n = len(S)
    I = np.eye(n)
    lower = np.tril(np.ones((n, n)), -1)[None, None]
    P = (np.einsum("ak,bl->abkl", I, I) + np.einsum("al,bk->abkl", I, I)) * lower
    P += np.einsum("ak,bl,kl->abkl", I, I, I)
    return np.einsum("abkl,abcd,cdmn->klmn", P, cf_logdet(S), P)


def cf_inv_weighted(X, C):
    """d^2/dX_ij dX_kl of sum(inv(X) * C)."""
    Xi = np.linalg.inv(X)
    return np.einsum("ab,ai,jk,lb->ijkl", C, Xi, Xi, Xi) + np.einsum("ab,ak,li,jb->ijkl", C, Xi, Xi, Xi)


def cf_inv_op(X):
    """H[a,b,i,j,k,l] = d^2 inv(X)[a,b] / dX_ij dX_kl."""
    Xi = np.linalg.inv(X)
    return np.einsum("ai,jk,lb->abijkl", Xi, Xi, Xi) + np.einsum("ak,li,jb->abijkl", Xi, Xi, Xi)


def cf_ce(z, y):
    p = _softmax(z)
    return np.diag(p) - np.outer(p, p)


def cf_ce_weights(W, x, y):
    return np.einsum("ik,j,l->ijkl", cf_ce(W @ x, y), x, x)


def cf_ce_batch(W, X, Y):
    P = _softmax(X @ W, axis=1)
    S = np.einsum("nj,jl->njl", P, np.eye(P.shape[1])) - np.einsum("nj,nl->njl", P, P)
    return np.einsum("ni,nk,njl->ijkl", X, X, S)


def cf_log_norm2(x, A):
    s = np.sum((A @ x) ** 2)
    g = A.T @ A @ x
    return 2 * A.T @ A / s - 4 * np.outer(g, g) / s**2


def cf_mlp(W, X, Y):
    T = np.tanh(X @ W)
    R = T - Y
    c = 2 * (1 - T**2) ** 2 - 4 * R * T * (1 - T**2)
    return np.einsum("ni,nk,nj,jl->ijkl", X, X, c, np.eye(W.shape[1]))


def cf_mlp2(W1, W2, X, Y):
    """d^2/dW1^2 of sum((tanh(X W1) W2 - Y)**2)."""
    T = np.tanh(X @ W1)
    S = 1 - T**2
    G = 2 * (T @ W2 - Y) @ W2.T  # dL/dT
    P = W2 @ W2.T
    return 2 * np.einsum("ni,nk,nj,jl,nl->ijkl", X, X, S, P, S) + np.einsum(
        "ni,nk,nj,jl->ijkl", X, X, -2 * G * T * S, np.eye(W1.shape[1])
    )


def cf_rosen(x):
    n = len(x)
    H = np.zeros((n, n))
    for i in range(n - 1):
        H[i, i] += 1200 * x[i] ** 2 - 400 * x[i + 1] + 2
        H[i + 1, i + 1] += 200
        H[i, i + 1] = H[i + 1, i] = -400 * x[i]
    return H


def cf_prod(x):
    u = 1 / x
    return np.prod(x) * (np.outer(u, u) - np.diag(u**2))


def cf_trilinear(x, A, B):
    """f = sum_m x_m (Ax)_m (Bx)_m = C(x, x, x): H = sum over the 6 index orders of C, contracted with x."""
    C = np.einsum("mi,mj,mk->ijk", np.eye(len(x)), A, B)
    Cs = sum(C.transpose(p) for p in itertools.permutations(range(3)))
    return np.einsum("pqk,k->pq", Cs, x)


def cf_top_eig(X):
    """Largest eigenvalue of S = X + X^T: 2 sum_m a_m a_m / (lam_n - lam_m), a_m = d(v_m^T S v_n)/dX."""
    lam, V = np.linalg.eigh(X + X.T)
    n = len(lam) - 1
    H = np.zeros(X.shape * 2)
    for m in range(n):
        a = np.outer(V[:, m], V[:, n])
        a = a + a.T
        H += 2 * np.einsum("ij,kl->ijkl", a, a) / (lam[n] - lam[m])
    return H


def cf_tanh_vec(x, A):
    t = np.tanh(A @ x)
    return np.einsum("m,mk,ml->mkl", -2 * t * (1 - t**2), A, A)


def cf_softmax_vec(x):
    p = _softmax(x)
    I = np.eye(len(x))
    d = I - p[None, :]  # d[m, k] = delta_mk - p_k
    return np.einsum("m,ml,mk->mkl", p, d, d) - np.einsum("m,k,kl->mkl", p, p, I - p[None, :])


def cf_outer(n):
    I = np.eye(n)
    return np.einsum("ik,jl->ijkl", I, I) + np.einsum("jk,il->ijkl", I, I)


def cf_quadratic_cross(x):
    """d^2 (x^T A x) / dx_i dA_kl = delta_ik x_l + x_k delta_il."""
    I = np.eye(len(x))
    return np.einsum("ik,l->ikl", I, x) + np.einsum("k,il->ikl", x, I)


# name: (f, args, wrt, closed form)
CASES = {
    "x@A@x": (lambda x: x @ A4 @ x, (x4,), 0, lambda: A4 + A4.T),
    "op tj.quadratic": (tj.quadratic, (x4, A4), 0, lambda: A4 + A4.T),
    "einsum x_i A_ij x_j": (lambda x: np.einsum("i,ij,j->", x, A4, x), (x4,), 0, lambda: A4 + A4.T),
    "Rayleigh x@A@x / x@x": (lambda x: (x @ A4 @ x) * (x @ x) ** -1.0, (x4,), 0, lambda: cf_rayleigh(x4, A4)),
    "slogdet(X)[1]": (lambda X: np.linalg.slogdet(X)[1], (Xsq,), 0, lambda: cf_logdet(Xsq)),
    "op tj.logdet": (tj.logdet, (Xsq,), 0, lambda: cf_logdet(Xsq)),
    "logdet by cholesky": (lambda S: np.sum(np.log(np.diagonal(np.linalg.cholesky(S)) ** 2)), (Sspd,), 0,
                           lambda: cf_chol_logdet(Sspd)),
    "least squares wrt w": (lambda w: np.sum((Xd @ w - yd) ** 2), (wd,), 0, lambda: 2 * Xd.T @ Xd),
    "least squares wrt X": (lambda X: np.sum((X @ wd - yd) ** 2), (Xd,), 0,
                            lambda: 2 * np.einsum("ik,j,l->ijkl", np.eye(6), wd, wd)),
    "ridge": (lambda w: np.sum((Xd @ w - yd) ** 2) + (w @ w) * LAM, (wd,), 0,
              lambda: 2 * Xd.T @ Xd + 2 * LAM * np.eye(3)),
    "softmax cross-entropy wrt logits": (lambda z: _lse(z) - z @ onehot3, (Wc @ xc,), 0,
                                         lambda: cf_ce(Wc @ xc, onehot3)),
    "softmax cross-entropy wrt weights": (lambda W: _lse(W @ xc) - (W @ xc) @ onehot3, (Wc,), 0,
                                          lambda: cf_ce_weights(Wc, xc, onehot3)),
    "batched softmax cross-entropy": (
        lambda W: np.sum(np.log(np.sum(np.exp(Xb @ W - np.max(Xb @ W, axis=1, keepdims=True)), axis=1))
                         + np.max(Xb @ W, axis=1)) - np.sum(Yb * (Xb @ W)),
        (Wb,), 0, lambda: cf_ce_batch(Wb, Xb, Yb)),
    "ln ||Ax||^2": (lambda x: np.log(np.sum((A54 @ x) ** 2)), (x4,), 0, lambda: cf_log_norm2(x4, A54)),
    "tr(X^T A X) as sum(X * AX)": (lambda X: np.sum(X * (Aq @ X)), (Xr,), 0,
                                   lambda: np.einsum("ik,jl->ijkl", Aq + Aq.T, np.eye(2))),
    "tr(X^T A X) as einsum": (lambda X: np.einsum("ij,ik,kj->", X, Aq, X), (Xr,), 0,
                              lambda: np.einsum("ik,jl->ijkl", Aq + Aq.T, np.eye(2))),
    "||A X B||_F^2": (lambda X: np.sum((Af @ X @ Bf) ** 2), (Xr,), 0,
                      lambda: 2 * np.einsum("ik,jl->ijkl", Af.T @ Af, Bf @ Bf.T)),
    "||sandwich(A, X, B)||_F^2": (lambda X: np.sum(tj.sandwich(Af, X, Bf) ** 2), (Xr,), 0,
                                  lambda: 2 * np.einsum("ik,jl->ijkl", Af.T @ Af, Bf @ Bf.T)),
    "MLP sum((tanh(X W) - Y)^2) wrt W": (lambda W: np.sum((np.tanh(Xm @ W) - Ym) ** 2), (Wm,), 0,
                                         lambda: cf_mlp(Wm, Xm, Ym)),
    "two-layer MLP wrt W1": (lambda W: np.sum((np.tanh(Xm @ W) @ W2 - Ym) ** 2), (W1,), 0,
                             lambda: cf_mlp2(W1, W2, Xm, Ym)),
    "log-sum-exp": (lambda z: np.log(np.sum(np.exp(z))), (x4,), 0, lambda: cf_ce(x4, None)),
    "log-sum-exp, max-shifted": (_lse, (3 * x4,), 0, lambda: cf_ce(3 * x4, None)),
    "logistic loss": (lambda w: np.sum(np.log1p(np.exp(-ypm * (Xd @ w)))), (wd,), 0,
                      lambda: Xd.T @ np.diag(_sig(ypm * (Xd @ wd)) * (1 - _sig(ypm * (Xd @ wd)))) @ Xd),
    "sum sigmoid 1/(1+exp(-x))": (lambda x: np.sum(1 / (1 + np.exp(-x))), (x4,), 0,
                                  lambda: np.diag(_sig(x4) * (1 - _sig(x4)) * (1 - 2 * _sig(x4)))),
    "||x|| as sqrt(x@x)": (lambda x: np.sqrt(x @ x), (x4,), 0,
                           lambda: (np.eye(4) - np.outer(x4, x4) / (x4 @ x4)) / np.sqrt(x4 @ x4)),
    "||x||^3": (lambda x: (x @ x) ** 1.5, (x4,), 0,
                lambda: 3 * np.sqrt(x4 @ x4) * np.eye(4) + 3 * np.outer(x4, x4) / np.sqrt(x4 @ x4)),
    "Rosenbrock": (lambda x: np.sum(HUNDRED * (D2 @ x - (D1 @ x) ** 2) ** 2 + (1 - D1 @ x) ** 2), (xr4,), 0,
                   lambda: cf_rosen(xr4)),
    "product exp(sum(log x))": (lambda x: np.exp(np.sum(np.log(x))), (xpos,), 0, lambda: cf_prod(xpos)),
    "trilinear sum(x * Ax * Bx)": (lambda x: np.sum(x * (A4 @ x) * (Bt @ x)), (x4,), 0,
                                   lambda: cf_trilinear(x4, A4, Bt)),
    "sum x^3": (lambda x: np.sum(x**3), (x4,), 0, lambda: np.diag(6 * x4)),
    "var": (lambda x: np.var(x), (x4,), 0, lambda: 2 / 4 * (np.eye(4) - np.ones((4, 4)) / 4)),
    "mean of squares": (lambda x: np.mean(x**2), (x4,), 0, lambda: 2 / 4 * np.eye(4)),
    "sum eigvalsh (= trace: zero)": (lambda S: np.sum(np.linalg.eigvalsh(S)), (Sspd,), 0,
                                     lambda: np.zeros((3, 3, 3, 3))),
    "largest eigenvalue of X + X^T": (lambda X: np.max(np.linalg.eigvalsh(X + X.T)), (Xsq,), 0,
                                      lambda: cf_top_eig(Xsq)),
    "sum(inv(X) * C)": (lambda X: np.sum(np.linalg.inv(X) * Ct), (Xsq,), 0, lambda: cf_inv_weighted(Xsq, Ct)),
    "c @ solve(X, b)": (lambda X: cvec @ np.linalg.solve(X, bvec), (Xsq,), 0,
                        lambda: cf_inv_weighted(Xsq, np.outer(cvec, bvec))),
    "rank-2 input sum(exp(X) X)": (lambda X: np.sum(np.exp(X) * X), (Xe,), 0,
                                   lambda: np.einsum("ij,ik,jl->ijkl", (Xe + 2) * np.exp(Xe), np.eye(2), np.eye(3))),
    "rank-3 input sum((T @ C)^2)": (lambda T: np.sum((T @ C3) ** 2), (T3,), 0,
                                    lambda: 2 * np.einsum("ad,be,cf->abcdef", np.eye(2), np.eye(2), C3 @ C3.T)),
    # vector-valued f: rank P + 2R
    "vector tanh(A x)": (lambda x: np.tanh(A54 @ x), (x4,), 0, lambda: cf_tanh_vec(x4, A54)),
    "vector softmax(x)": (lambda x: np.exp(x - np.log(np.sum(np.exp(x)))), (x4,), 0, lambda: cf_softmax_vec(x4)),
    "vector outer(x, x)": (lambda x: np.outer(x, x), (x4[:3],), 0, lambda: cf_outer(3)),
    "vector kron(x, x)": (lambda x: np.kron(x, x), (x4[:3],), 0, lambda: cf_outer(3).reshape(9, 3, 3)),
    "vector rank-3 in: einsum ijk,ijk->i": (
        lambda T: np.einsum("ijk,ijk->i", T, T), (T3,), 0,
        lambda: 2 * np.einsum("mi,mp,jq,kr->mijkpqr", np.eye(2), np.eye(2), np.eye(2), np.eye(3))),
    "op tj.inv (rank 6)": (tj.inv, (Xsq,), 0, lambda: cf_inv_op(Xsq)),
    # holomorphic, complex
    "complex exp(z) @ z": (lambda z: np.exp(z) @ z, (z3,), 0, lambda: np.diag(np.exp(z3) * (z3 + 2))),
    "complex z @ B @ z": (lambda z: z @ Bz @ z, (z3,), 0, lambda: Bz + Bz.T),
}
# written as one naturally would (these needed nested-tracing fixes: Python-scalar factors, indexing, traced
# division and powers, np.trace's delta, rules whose factors called np.asarray)
CASES.update({
    "0.5 * x@A@x": (lambda x: 0.5 * (x @ A4 @ x), (x4,), 0, lambda: (A4 + A4.T) / 2),
    "ridge with a Python float": (lambda w: np.sum((Xd @ w - yd) ** 2) + 0.3 * (w @ w), (wd,), 0,
                                  lambda: 2 * Xd.T @ Xd + 0.6 * np.eye(3)),
    "Rosenbrock as written": (lambda x: np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2), (xr4,), 0,
                              lambda: cf_rosen(xr4)),
    "x[0]^2 x[1]": (lambda x: x[0] ** 2 * x[1], (x4,), 0,
                    lambda: np.pad([[2 * x4[1], 2 * x4[0]], [2 * x4[0], 0.0]], ((0, 2), (0, 2)))),
    "softmax cross-entropy -log(softmax(z)[c])": (lambda z: -np.log(np.exp(z - _lse(z))[1]), (Wc @ xc,), 0,
                                                  lambda: cf_ce(Wc @ xc, onehot3)),
    "eigvalsh(X + X^T)[-1]": (lambda X: np.linalg.eigvalsh(X + X.T)[-1], (Xsq,), 0, lambda: cf_top_eig(Xsq)),
    "Rayleigh x@A@x / (x@x)": (lambda x: x @ A4 @ x / (x @ x), (x4,), 0, lambda: cf_rayleigh(x4, A4)),
    "vector softmax e / e.sum()": (lambda x: np.exp(x) / np.sum(np.exp(x)), (x4,), 0, lambda: cf_softmax_vec(x4)),
    "x ** x": (lambda x: np.sum(x**x), (xpos,), 0,
               lambda: np.diag(xpos**xpos * ((np.log(xpos) + 1) ** 2 + 1 / xpos))),
    "2 ** x": (lambda x: np.sum(2**x), (x4,), 0, lambda: np.diag(np.log(2) ** 2 * 2**x4)),
    "det": (lambda X: np.linalg.det(X), (Xsq,), 0, lambda: cf_det(Xsq)),
    "op tj.det": (tj.det, (Xsq,), 0, lambda: cf_det(Xsq)),
    "prod": (lambda x: np.prod(x), (xpos,), 0, lambda: cf_prod(xpos)),
    "np.linalg.norm": (lambda x: np.linalg.norm(x), (x4,), 0,
                       lambda: (np.eye(4) - np.outer(x4, x4) / (x4 @ x4)) / np.sqrt(x4 @ x4)),
    "op tj.sigmoid": (lambda x: np.sum(tj.sigmoid(x)), (x4,), 0,
                      lambda: np.diag(_sig(x4) * (1 - _sig(x4)) * (1 - 2 * _sig(x4)))),
    "op tj.softplus": (lambda x: np.sum(tj.softplus(x)), (x4,), 0, lambda: np.diag(_sig(x4) * (1 - _sig(x4)))),
    "diag(x) A diag(x)": (lambda x: np.sum(np.diag(x) @ A4 @ np.diag(x)), (x4,), 0, lambda: A4 + A4.T),
    "tr(X^T A X) by np.trace": (lambda X: np.trace(X.T @ Aq @ X), (Xr,), 0,
                                lambda: np.einsum("ik,jl->ijkl", Aq + Aq.T, np.eye(2))),
    "tr(inv(X))": (lambda X: np.trace(np.linalg.inv(X)), (Xsq,), 0, lambda: cf_inv_weighted(Xsq, np.eye(3))),
    "trace(X)^2": (lambda X: np.trace(X) ** 2, (Xsq,), 0,
                   lambda: 2 * np.einsum("ij,kl->ijkl", np.eye(3), np.eye(3))),
})
NAMES = list(CASES)


def _run(name, **kw):
    f, args, wrt, _ = CASES[name]
    return tj.hessian(f, *args, wrt=wrt, **kw)


def _swap(H, P, R):
    """H with its two input groups exchanged."""
    return H.transpose(tuple(range(P)) + tuple(range(P + R, P + 2 * R)) + tuple(range(P, P + R)))


def _groups(name):
    f, args, wrt, _ = CASES[name]
    out_shape = np.shape(f(*args))
    return out_shape, np.shape(args[wrt])


def test_enough_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", NAMES)
def test_closed_form(name):
    want = CASES[name][3]()
    out_shape, in_shape = _groups(name)
    H = _run(name)
    assert H.shape == out_shape + in_shape + in_shape == want.shape
    assert H.dtype == np.result_type(want.dtype, np.float64)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(H, want, rtol=1e-10, atol=1e-12 * scale)


@pytest.mark.parametrize("name", NAMES)
def test_against_fd(name):
    """Within ten times Richardson's own error estimate (the estimate was checked conservative here)."""
    f, args, wrt, want = CASES[name]
    H = _run(name)
    F, err = tj.fd.hessian(f, *args, wrt=wrt, method="richardson", return_error=True)
    bad = np.abs(H - F) > 10 * err + 1e-13 * max(1.0, float(np.abs(F).max()))
    assert not bad.any(), f"{bad.sum()} entries differ from fd, first at {np.argwhere(bad)[0]}"


@pytest.mark.parametrize("name", NAMES)
def test_exactly_symmetric(name):
    out_shape, in_shape = _groups(name)
    H = _run(name)
    assert np.array_equal(H, _swap(H, len(out_shape), len(in_shape)))


# ----------------------------------------------------------------------------- exactly zero


@pytest.mark.parametrize(
    "f, x",
    [
        (lambda x: A54 @ x + 1.0, x4),
        (lambda x: np.sum(x), x4),
        (lambda X: np.trace(X), Xsq),
        (lambda X: (Af @ X @ Bf).T - X.sum(axis=0), Xr),
        (lambda x: np.concatenate([x, -x, 3 * np.ones(2)]), x4),
    ],
    ids=["affine", "sum", "trace", "sandwich minus column sums", "concatenate"],
)
def test_linear_functions_have_exactly_zero_hessian(f, x):
    H = tj.hessian(f, x)
    assert H.shape == np.shape(f(x)) + x.shape + x.shape
    assert not H.any()


def test_linear_argument_of_an_op_is_exactly_zero():
    H = tj.hessian(tj.quadratic, x4, A4, wrt=1)  # x^T A x is linear in A
    assert H.shape == (4, 4, 4, 4) and not H.any()


# ----------------------------------------------------------------------------- layouts and out=


def _to_layout(T, out_shape, in_shape, layout):
    """tensor -> matrix / vec by explicit index arithmetic: (N, N) for scalar f, else (M, N, N)."""
    if layout == "tensor":
        return T
    order = "C" if layout == "matrix" else "F"
    M, N = int(np.prod(out_shape)), int(np.prod(in_shape))
    R = np.zeros((M, N, N), T.dtype)
    for m in np.ndindex(*out_shape):
        mi = np.ravel_multi_index(m, out_shape, order=order) if out_shape else 0
        for n in np.ndindex(*in_shape):
            ni = np.ravel_multi_index(n, in_shape, order=order)
            for k in np.ndindex(*in_shape):
                R[mi, ni, np.ravel_multi_index(k, in_shape, order=order)] = T[m + n + k]
    return R[0] if out_shape == () else R


LAYOUT_CASES = {
    "scalar f, matrix input": (lambda X: np.sum((Af @ X @ Bf) ** 2) + np.sum(np.tanh(X) ** 3), Xr),
    "matrix f, matrix input": (lambda X: np.tanh(X @ Af) @ Xr, Xr),
    "vector f, rank-3 input": (lambda T: np.sum(np.exp(T) * T, axis=(1, 2)), T3),
}


@pytest.mark.parametrize("layout", ["tensor", "matrix", "vec"])
@pytest.mark.parametrize("case", list(LAYOUT_CASES))
def test_layouts(case, layout):
    f, x = LAYOUT_CASES[case]
    out_shape, in_shape = np.shape(f(x)), x.shape
    T = tj.hessian(f, x)
    H = tj.hessian(f, x, layout=layout)
    want = _to_layout(T, out_shape, in_shape, layout)
    N = x.size
    if layout != "tensor":
        assert H.shape == ((N, N) if out_shape == () else (int(np.prod(out_shape)), N, N))
        assert np.array_equal(H, np.swapaxes(H, -1, -2))
    assert np.array_equal(H, want)  # the same numbers, only placed differently
    F, err = tj.fd.hessian(f, x, method="richardson", layout=layout, return_error=True)
    assert F.shape == H.shape
    assert (np.abs(H - F) <= 10 * err + 1e-12).all()


@pytest.mark.parametrize("layout", ["tensor", "matrix", "vec"])
def test_layouts_closed_form_of_a_non_scalar_f(layout):
    """tanh(A x) (5 outputs): each layout against the closed form converted by index arithmetic."""
    H = tj.hessian(lambda x: np.tanh(A54 @ x), x4, layout=layout)
    want = _to_layout(cf_tanh_vec(x4, A54), (5,), (4,), layout)
    np.testing.assert_allclose(H, want, rtol=1e-12, atol=1e-15)


def test_vec_layout_of_logdet_is_minus_kron():
    """The classical vec form: d^2 log|det X| / dvec(X) dvec(X)^T = -K (X^-T kron X^-1) ... here, entry by entry,
    H_vec[(i + 3j), (k + 3l)] = -inv(X)[j,k] inv(X)[l,i]."""
    H = tj.hessian(lambda X: np.linalg.slogdet(X)[1], Xsq, layout="vec")
    Xi = Xsq_inv
    want = np.zeros((9, 9))
    for i, j, k, l in itertools.product(range(3), repeat=4):
        want[i + 3 * j, k + 3 * l] = -Xi[j, k] * Xi[l, i]
    np.testing.assert_allclose(H, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("layout", ["tensor", "matrix", "vec"])
@pytest.mark.parametrize("order", ["C", "F", "strided"])
def test_out(layout, order):
    f = lambda X: np.tanh(X @ Af)
    ref = tj.hessian(f, Xr, layout=layout)
    if order == "strided":  # every other entry of a bigger buffer
        out = np.full(ref.shape[:-1] + (2 * ref.shape[-1],), np.nan)[..., ::2]
    else:
        out = np.full(ref.shape, np.nan, order=order)
    res = tj.hessian(f, Xr, layout=layout, out=out)
    assert res is out
    assert np.array_equal(out, ref)


def test_out_errors():
    f = lambda x: x @ A4 @ x
    with pytest.raises(ValueError, match="shape"):
        tj.hessian(f, x4, out=np.zeros((4, 5)))
    with pytest.raises(ValueError, match="dtype"):
        tj.hessian(f, x4, out=np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="tuple wrt"):
        tj.hessian(lambda X, w: np.sum((X @ w) ** 2), Xd, wd, wrt=(0, 1), out=np.zeros((6, 3, 6, 3)))
    x = x4.copy()
    H = tj.hessian(f, x, out=np.zeros((4, 4)))
    assert np.array_equal(x, x4)  # the input is untouched
    assert np.array_equal(H, tj.hessian(f, x4))


# ----------------------------------------------------------------------------- tuple wrt


def _ls(X, w, y):
    return np.sum((X @ w - y) ** 2)


def test_tuple_wrt_least_squares_blocks():
    H = tj.hessian(_ls, Xd, wd, yd, wrt=(0, 1, 2))
    assert [[b.shape for b in row] for row in H] == [
        [(6, 3, 6, 3), (6, 3, 3), (6, 3, 6)],
        [(3, 6, 3), (3, 3), (3, 6)],
        [(6, 6, 3), (6, 3), (6, 6)],
    ]
    r = Xd @ wd - yd
    I6, I3 = np.eye(6), np.eye(3)
    want = {
        (0, 0): 2 * np.einsum("ik,j,l->ijkl", I6, wd, wd),
        (1, 1): 2 * Xd.T @ Xd,
        (2, 2): 2 * I6,
        (0, 1): 2 * (np.einsum("jk,i->ijk", I3, r) + np.einsum("ik,j->ijk", Xd, wd)),  # d^2 / dX_ij dw_k
        (0, 2): -2 * np.einsum("in,j->ijn", I6, wd),  # d^2 / dX_ij dy_n
        (1, 2): -2 * Xd.T,  # d^2 / dw_k dy_n
    }
    for (i, j), w in want.items():
        np.testing.assert_allclose(H[i][j], w, rtol=1e-12, atol=1e-13, err_msg=f"block {i}{j}")
    shapes = [Xd.shape, wd.shape, yd.shape]
    for i, j in itertools.product(range(3), repeat=2):  # H[j][i] is H[i][j] with its groups exchanged, exactly
        Ri, Rj = len(shapes[i]), len(shapes[j])
        perm = tuple(range(Ri, Ri + Rj)) + tuple(range(Ri))
        assert np.array_equal(H[j][i], H[i][j].transpose(perm)), (i, j)
    for i in range(3):  # the diagonal blocks are the single-wrt Hessians and agree with fd
        assert np.array_equal(H[i][i], tj.hessian(_ls, Xd, wd, yd, wrt=i))
        F, err = tj.fd.hessian(_ls, Xd, wd, yd, wrt=i, method="richardson", return_error=True)
        assert (np.abs(H[i][i] - F) <= 10 * err + 1e-12).all()


def test_tuple_wrt_two_layer_mlp_against_fd():
    def loss(W1, W2):
        return np.sum((np.tanh(Xm @ W1) @ W2 - Ym) ** 2)

    def grad_W2(W1):  # the hand gradient dL/dW2 = 2 T^T R, for the mixed block by fd
        T = np.tanh(Xm @ W1)
        return 2 * T.T @ (T @ W2 - Ym)

    H = tj.hessian(loss, W1, W2, wrt=(0, 1))
    np.testing.assert_allclose(H[0][0], cf_mlp2(W1, W2, Xm, Ym), rtol=1e-10, atol=1e-12)
    T = np.tanh(Xm @ W1)
    np.testing.assert_allclose(H[1][1], 2 * np.einsum("ik,jl->ijkl", T.T @ T, np.eye(2)), rtol=1e-10, atol=1e-12)
    Fx, err = tj.fd.jacobian(grad_W2, W1, method="richardson", return_error=True)  # (4, 2, 3, 4) = H[1][0]
    assert (np.abs(H[1][0] - Fx) <= 10 * err + 1e-12).all()
    assert np.array_equal(H[0][1], H[1][0].transpose(2, 3, 0, 1))
    for i in range(2):
        F, err = tj.fd.hessian(loss, W1, W2, wrt=i, method="richardson", return_error=True)
        assert (np.abs(H[i][i] - F) <= 10 * err + 1e-12).all()
        assert np.array_equal(H[i][i], _swap(H[i][i], 0, 2))


def test_tuple_wrt_of_an_op_and_layouts():
    H = tj.hessian(tj.quadratic, x4, A4, wrt=(0, 1))
    np.testing.assert_allclose(H[0][0], A4 + A4.T, rtol=1e-14)
    assert not H[1][1].any()
    np.testing.assert_array_equal(H[0][1], cf_quadratic_cross(x4))
    for layout in ("matrix", "vec"):
        HL = tj.hessian(tj.quadratic, x4, A4, wrt=(0, 1), layout=layout)
        assert HL[0][1].shape == (4, 16) and HL[1][0].shape == (16, 4)
        order = "C" if layout == "matrix" else "F"
        np.testing.assert_array_equal(HL[0][1], cf_quadratic_cross(x4).reshape(4, 16, order=order))
        np.testing.assert_array_equal(HL[1][0], HL[0][1].T)


# ----------------------------------------------------------------------------- dtypes, ops, hvp


def test_float32_of_an_op_stays_float32():
    H = tj.hessian(tj.quadratic, x4.astype(np.float32), A4.astype(np.float32))
    assert H.dtype == np.float32
    np.testing.assert_allclose(H, A4 + A4.T, rtol=1e-6)


def test_integer_input_becomes_float64():
    H = tj.hessian(lambda x: np.sum(x**3), np.arange(1, 4))
    assert H.dtype == np.float64
    np.testing.assert_array_equal(H, np.diag(6.0 * np.arange(1, 4)))


def test_zero_dim_and_empty_inputs():
    assert tj.hessian(lambda t: t**3, np.float64(2.0)) == 12.0
    assert tj.hessian(lambda t: np.exp(t + t), np.array(0.5)) == pytest.approx(4 * np.exp(1.0), rel=1e-15)
    assert tj.hessian(lambda x: np.sum(x**2), np.zeros(0)).shape == (0, 0)


def test_non_contiguous_input():
    X = np.asfortranarray(Xsq)[:, ::-1]
    np.testing.assert_allclose(tj.hessian(lambda X: np.linalg.slogdet(X)[1], X), cf_logdet(X), rtol=1e-12)


def _scalar_hess_cases():
    return [
        (lambda x: np.log(np.sum((A54 @ x) ** 2)), x4, cf_log_norm2(x4, A54)),
        (lambda W: np.sum((np.tanh(Xm @ W) - Ym) ** 2), Wm, cf_mlp(Wm, Xm, Ym)),
        (lambda X: np.linalg.slogdet(X)[1], Xsq, cf_logdet(Xsq)),
    ]


@pytest.mark.parametrize("batch", [(), (3,), (2, 3)], ids=["0 batch axes", "1 batch axis", "2 batch axes"])
@pytest.mark.parametrize("k", range(3))
def test_hvp_against_einsum_with_the_closed_form(batch, k):
    f, x, H = _scalar_hess_cases()[k]
    V = np.random.default_rng(k).standard_normal(batch + x.shape)
    R = x.ndim
    letters = "abcdefgh"
    n, m = letters[:R], letters[R : 2 * R]
    want = np.einsum(f"{n}{m},...{m}->...{n}", H, V)
    got = tj.hvp(f, x, vector=V)
    assert got.shape == batch + x.shape
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_hvp_with_constants_and_wrt():
    V = rng.standard_normal((2, 3))
    got = tj.hvp(_ls, Xd, wd, yd, vector=V, wrt=1)
    np.testing.assert_allclose(got, V @ (2 * Xd.T @ Xd), rtol=1e-12)
    got = tj.hvp(tj.quadratic, x4, A4, vector=np.eye(4))
    np.testing.assert_allclose(got, A4 + A4.T, rtol=1e-14)


def test_hvp_errors():
    with pytest.raises(ValueError, match="scalar"):
        tj.hvp(lambda x: np.tanh(x), x4, vector=x4)
    with pytest.raises(ValueError, match="one argument"):
        tj.hvp(_ls, Xd, wd, yd, vector=wd, wrt=(0, 1))
    with pytest.raises(ValueError, match="shape"):
        tj.hvp(lambda x: x @ x, x4, vector=np.ones(5))


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "f",
    [lambda x: (x @ x, np.sum(x)), lambda x: [x @ x]],
    ids=["tuple", "list"],
)
def test_f_returning_several_arrays_is_refused(f):
    with pytest.raises(ValueError, match="one array"):
        tj.hessian(f, x4)


@pytest.mark.parametrize(
    "f",
    [
        lambda x: np.sum(np.fft.fft(x).real),
        lambda x: np.sum(np.fft.rfft(x) * np.conj(np.fft.rfft(x))).real,
        lambda x: np.sum(np.fft.ifft(x * x).imag),
        lambda x: float(x @ x),
    ],
    ids=["fft", "rfft", "ifft", "float()"],
)
def test_non_differentiable_functions_point_to_fd(f):
    with pytest.raises(TypeError, match=r"tj\.fd"):
        tj.hessian(f, x4)


def test_non_holomorphic_complex_is_refused():
    with pytest.raises(TypeError, match="holomorphic"):
        tj.hessian(lambda z: np.sum(np.abs(z) ** 2), z3)


@pytest.mark.parametrize("layout", ["gradient", "numerator", "diagonal", "Tensor", 3])
def test_bad_layout(layout):
    with pytest.raises(ValueError, match="layout"):
        tj.hessian(lambda x: x @ x, x4, layout=layout)


def test_inputs_are_not_modified_even_when_f_raises():
    x = x4.copy()

    def f(v):
        v *= 2.0  # an in-place write on the traced copy, then a failure
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        tj.hessian(f, x)
    assert np.array_equal(x, x4)


def test_threads_give_bitwise_identical_results():
    f = lambda W: np.sum((np.tanh(Xm @ W) @ W2 - Ym) ** 2)
    H1 = tj.hessian(f, W1, num_threads=1)
    H2 = tj.hessian(f, W1, num_threads=2)
    assert np.array_equal(H1, H2)


# ============================================================================ tj.check(..., order=2)

CHECK_NAMES = NAMES  # every closed form above: no false failure


@pytest.mark.parametrize("name", CHECK_NAMES)
def test_check_passes_on_exact_hessians(name):
    f, args, wrt, want = CASES[name]
    rep = tj.check(f, *args, jac=want(), wrt=wrt, order=2)
    assert rep.passed, str(rep)
    out_shape, in_shape = _groups(name)
    N = int(np.prod(in_shape))
    assert rep.order == 2 and rep.n_failed == 0 and rep.n_checked == int(np.prod(out_shape)) * N * N
    assert rep.error_ratio.shape == out_shape + in_shape + in_shape
    assert rep.n_evals > 1


@pytest.mark.parametrize("method", ["central", "forward", "backward"])
@pytest.mark.parametrize("name", ["slogdet(X)[1]", "MLP sum((tanh(X W) - Y)^2) wrt W", "vector softmax(x)",
                                  "largest eigenvalue of X + X^T", "Rosenbrock"])
def test_check_passes_with_other_methods(name, method):
    f, args, wrt, want = CASES[name]
    rep = tj.check(f, *args, jac=want(), wrt=wrt, method=method, order=2)
    assert rep.passed, str(rep)


@pytest.mark.parametrize("layout", ["matrix", "vec"])
@pytest.mark.parametrize("name", ["rank-2 input sum(exp(X) X)", "vector tanh(A x)", "vector rank-3 in: einsum ijk,ijk->i",
                                  "least squares wrt X"])
def test_check_layouts(name, layout):
    f, args, wrt, want = CASES[name]
    out_shape, in_shape = _groups(name)
    W = _to_layout(want(), out_shape, in_shape, layout)
    assert tj.check(f, *args, jac=W, wrt=wrt, layout=layout, order=2).passed
    # a planted wrong entry is named in tensor coordinates, whatever the layout
    T = want().copy()
    idx = tuple(s - 1 for s in T.shape)  # the last entry: its partner (n <-> k) is left alone
    T[idx] += 1e-4 * max(1.0, np.abs(T).max())
    rep = tj.check(f, *args, jac=_to_layout(T, out_shape, in_shape, layout), wrt=wrt, layout=layout, order=2)
    assert not rep.passed and rep.n_failed == 1
    P = len(out_shape)
    assert (rep.worst[0].out_index, rep.worst[0].in_index) == (idx[:P], idx[P:])
    assert rep.worst[0].failed and not any(e.failed for e in rep.worst[1:])


@pytest.mark.parametrize(
    "name, rel",
    [("x@A@x", 1e-6), ("slogdet(X)[1]", 1e-6), ("two-layer MLP wrt W1", 1e-6), ("vector tanh(A x)", 1e-6),
     ("rank-3 input sum((T @ C)^2)", 1e-6), ("logistic loss", 1e-6)],
)
def test_check_names_a_planted_wrong_entry(name, rel):
    f, args, wrt, want = CASES[name]
    H = want().copy()
    flat = np.argmax(np.abs(H))
    idx = np.unravel_index(flat, H.shape)
    H[idx] *= 1 + rel  # a relative error of 1e-6 on the largest entry
    rep = tj.check(f, *args, jac=H, wrt=wrt, order=2)
    assert not rep.passed and rep.n_failed == 1
    out_shape, _ = _groups(name)
    P = len(out_shape)
    w = rep.worst[0]
    assert (w.out_index, w.in_index) == (tuple(int(i) for i in idx[:P]), tuple(int(i) for i in idx[P:]))
    assert w.analytic == H[idx] and w.failed
    assert abs(w.numeric - want()[idx]) < 0.1 * abs(H[idx] - want()[idx])  # fd resolves the planted error
    text = str(rep)
    assert "FAILED" in text and "Hessian layout 'tensor'" in text and "in index (n, k)" in text
    with pytest.raises(tj.JacobianMismatchError):
        rep.raise_if_failed()


def test_check_catches_a_transposed_hessian():
    """d^2 log|det X| has the commutation structure: H[i,j,k,l] = -inv(X)[j,k] inv(X)[l,i], not inv(X)[i,k] ..."""
    Xi = Xsq_inv
    wrong = -np.einsum("ik,lj->ijkl", Xi, Xi)  # a classic slip: d inv(X) without the transpose
    rep = tj.check(lambda X: np.linalg.slogdet(X)[1], Xsq, wrong, order=2)
    assert not rep.passed and rep.n_failed > 10


def test_check_of_tj_hessian_results_and_callables():
    f = lambda W: np.sum((np.tanh(Xm @ W) @ W2 - Ym) ** 2)
    assert tj.check(f, W1, tj.hessian(f, W1), order=2).passed
    assert tj.check(f, W1, lambda W: tj.hessian(f, W), order=2).passed  # a callable, evaluated at a copy of x
    assert tj.check(_ls, Xd, wd, yd, jac=2 * Xd.T @ Xd, wrt=1, order=2).passed
    assert tj.check(_ls, Xd, wd, yd, jac=2 * Xd.T @ Xd, wrt="w", order=2).passed  # by name


def test_check_zero_hessian_where_f_and_its_hessian_vanish():
    """f = c . (x - x0) at x0: f(x) = 0 and H = 0, but the slope is large; FD noise must not fail the check."""
    c = 1e3 * rng.standard_normal(4)
    f = lambda x: c @ (x - x4) + np.sum(x4**2) * 0.0
    rep = tj.check(f, x4.copy(), np.zeros((4, 4)), order=2)
    assert rep.passed, str(rep)
    rep = tj.check(lambda x: np.sum((x - x4) ** 3), x4.copy(), np.zeros((4, 4)), order=2)  # f, grad and H vanish
    assert rep.passed, str(rep)
    bad = np.zeros((4, 4))
    bad[1, 2] = 1e-4
    assert not tj.check(lambda x: np.sum((x - x4) ** 3), x4.copy(), bad, order=2).passed


def test_check_float32():
    x = x4.astype(np.float32)
    t = np.tanh(x)
    want = np.diag(2 * (1 - t**2) * (1 - 3 * t**2)).astype(np.float32)
    rep = tj.check(lambda v: np.sum(np.tanh(v) ** 2), x, want, order=2)
    assert rep.passed, str(rep)
    assert rep.rtol == pytest.approx(np.sqrt(np.finfo(np.float32).eps))
    bad = want.copy()
    bad[2, 2] *= 1.25  # float32 finite-difference Hessians resolve ~1e-2 relative errors, not 1e-6
    rep = tj.check(lambda v: np.sum(np.tanh(v) ** 2), x, bad, order=2)
    assert not rep.passed and rep.n_failed == 1 and rep.worst[0].in_index == (2, 2)


def test_check_user_arrays_untouched():
    x, H = x4.copy(), (A4 + A4.T).copy()
    tj.check(lambda v: v @ A4 @ v, x, H, order=2)
    assert np.array_equal(x, x4) and np.array_equal(H, A4 + A4.T)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(wrt=(0, 1)), ValueError, "one Hessian"),
        (dict(layout="gradient"), ValueError, "layout"),
        (dict(layout="diagonal"), ValueError, "layout"),
        (dict(mode="fast"), ValueError, "mode"),
        (dict(order=3), ValueError, "order"),
        (dict(order=True), ValueError, "order"),
        (dict(order="2"), ValueError, "order"),
        (dict(method="spline"), ValueError, "method"),
    ],
)
def test_check_order2_errors(kwargs, exc, match):
    kw = dict(order=2)
    kw.update(kwargs)
    with pytest.raises(exc, match=match):
        tj.check(_ls, Xd, wd, yd, jac=2 * Xd.T @ Xd, **({"wrt": 1} | kw))


def test_check_order2_wrong_shape_and_dtype():
    f = lambda x: np.tanh(A54 @ x)
    with pytest.raises(ValueError, match=r"has shape \(5, 16\).*\(5, 4, 4\)"):
        tj.check(f, x4, np.zeros((5, 16)), layout="matrix", order=2)
    with pytest.raises(ValueError, match="fits layout='matrix'"):
        tj.check(lambda X: np.sum(X**3), Xe, np.zeros((6, 6)), order=2)  # a matrix given as layout="tensor"
    with pytest.raises(TypeError, match="dtype"):
        tj.check(f, x4, np.zeros((5, 4, 4), dtype=object), order=2)


def test_check_order2_plot():
    pytest.importorskip("matplotlib")
    rep = tj.check(lambda X: np.sum(np.exp(X) * X), Xe, np.zeros((2, 3, 2, 3)), order=2)
    assert not rep.passed
    fig = rep.plot()
    img = fig.axes[0].images[0].get_array()
    assert img.shape == (6, 6)


# ============================================================================ float32, argument names


def test_float32_of_a_numpy_function_stays_float32():
    x = x4.astype(np.float32)
    H = tj.hessian(lambda x: np.sum(np.tanh(x) ** 2), x)
    t = np.tanh(x4)
    assert H.dtype == np.float32
    np.testing.assert_allclose(H, np.diag(2 * (1 - t**2) * (1 - 3 * t**2)), rtol=1e-5, atol=1e-6)


def test_float32_hvp_stays_float32():
    x = x4.astype(np.float32)
    got = tj.hvp(lambda x: np.sum(np.tanh(x) ** 2), x, vector=np.ones(4, np.float32))
    t = np.tanh(x4)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, 2 * (1 - t**2) * (1 - 3 * t**2), rtol=1e-5, atol=1e-6)


def test_named_wrt():
    np.testing.assert_allclose(tj.hessian(_ls, Xd, wd, yd, wrt="w"), 2 * Xd.T @ Xd, rtol=1e-12)
    assert not tj.hessian(tj.quadratic, x4, A4, wrt="A").any()


# ============================================================================ exact symmetry by construction
#
# A diagonal Hessian block whose off-diagonal part is one term T (any number of terms living on
# n == k) is written as T/2 + T/2 with the second half's input groups exchanged (tensorjac._terms.
# _symmetric_terms): mirrored entries get a + b and b + a.  Several such terms (or more factors)
# are symmetrized after the write.  Both must give bitwise symmetric Hessians, with the same values.


def _bits(H):
    """H's bit patterns (signed zeros included), comparable with np.array_equal."""
    H = np.ascontiguousarray(H)
    if H.dtype.kind == "c":
        H = H.view(H.real.dtype)
    return H.view(np.uint32 if H.dtype.itemsize == 4 else np.uint64)


def _assert_bit_symmetric(H, P, R, layout="tensor"):
    S = _swap(H, P, R) if layout == "tensor" else np.swapaxes(H, -1, -2)
    assert np.array_equal(_bits(H), _bits(S)), "not bitwise symmetric"


def _finals(f, *args, **kw):
    """The recorded program's Finals of tj.hessian(f, *args, **kw) (how each block is written)."""
    from tensorjac import _api

    _api._PROGRAMS.clear()
    tj.hessian(f, *args, **kw)
    (prog,) = _api._PROGRAMS.values()
    return [fin for row in prog.finals for fin in row]


Xsq5 = rng.standard_normal((5, 5)) + 4 * np.eye(5)
Xm6, Ym6, Wm6 = rng.standard_normal((7, 4)), rng.standard_normal((7, 3)), 0.6 * rng.standard_normal((4, 3))


def _sym_case(name, dtype=np.float64):
    """(f, x, P, written symmetric by construction?) with x and f's constants of dtype (a float64
    constant would make the Hessian float64)."""
    make, consts, x, P, by_construction = SYM_CASES[name]
    return make(*[a.astype(dtype) for a in consts]), x.astype(dtype), P, by_construction


# name: (f of the constants, constants, x, P, by construction?)
SYM_CASES = {
    "logdet: one term, two factors": (lambda: lambda X: np.linalg.slogdet(X)[1], (), Xsq5, 0, True),
    "0.3 logdet: two factors, a coefficient": (lambda: lambda X: 0.3 * np.linalg.slogdet(X)[1], (), Xsq5, 0, True),
    "MLP: one term, one factor and a delta": (
        lambda X, Y: lambda W: np.sum((np.tanh(X @ W) - Y) ** 2), (Xm6, Ym6), Wm6, 0, True),
    "x@A@x: one dense factor": (lambda A: lambda x: x @ A @ x, (A4,), x4, 0, True),
    "logdet + sum(X^4): and a diagonal term": (
        lambda: lambda X: np.linalg.slogdet(X)[1] + np.sum(X**4), (), Xsq5, 0, True),
    "vector tanh(A x)": (lambda A: lambda x: np.tanh(A @ x), (A54,), x4, 1, True),
    "vector softmax: and a diagonal term": (lambda: lambda x: np.exp(x) / np.sum(np.exp(x)), (), x4, 1, True),
    "matrix f, matrix input": (lambda A, B: lambda X: np.tanh(X @ A) @ B, (Af, Xr), Xr, 2, True),
    "softmax cross-entropy wrt weights: several terms": (
        lambda x, y: lambda W: _lse(W @ x) - (W @ x) @ y, (xc, onehot3), Wc, 0, False),
    "two-layer MLP: several terms, each its own mirror": (
        lambda X, V, Y: lambda W: np.sum((np.tanh(X @ W) @ V - Y) ** 2), (Xm, W2, Ym), W1, 0, True),
    "least squares wrt X: three factors": (lambda w, y: lambda X: np.sum((X @ w - y) ** 2), (wd, yd), Xd, 0, False),
}


@pytest.mark.parametrize("name", list(SYM_CASES))
def test_symmetric_by_construction_where_expected(name):
    f, x, P, by_construction = _sym_case(name)
    (fin,) = _finals(f, x)
    assert (fin.sym is None) == by_construction


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", ["tensor", "matrix", "vec"])
@pytest.mark.parametrize("name", list(SYM_CASES))
def test_bitwise_symmetric_in_every_layout_and_dtype(name, layout, dtype):
    f, x, P, _ = _sym_case(name, dtype)
    H = tj.hessian(f, x, layout=layout)
    assert H.dtype == dtype
    _assert_bit_symmetric(H, P, x.ndim, layout)
    T = tj.hessian(f, x)  # the same numbers in every layout
    out_shape = T.shape[:P]
    assert np.array_equal(_bits(H), _bits(_to_layout(T, out_shape, x.shape, layout)))
    f, x64, _, _ = _sym_case(name)
    F, err = tj.fd.hessian(f, x64, method="richardson", return_error=True)
    tol = 10 * err + 1e-12 * max(1.0, float(np.abs(F).max()))
    if dtype == np.float32:
        tol = tol + 2e-5 * max(1.0, float(np.abs(F).max()))
    assert (np.abs(T - F) <= tol).all()


def test_complex_hessians_are_bitwise_symmetric():
    Hz = tj.hessian(lambda z: z @ Bz @ z, z3)  # one dense factor: written symmetric
    _assert_bit_symmetric(Hz, 0, 1)
    np.testing.assert_allclose(Hz, Bz + Bz.T, rtol=1e-14)
    Z = (Xsq + 0.3j * rng.standard_normal((3, 3))).astype(np.complex128)
    H = tj.hessian(lambda X: np.sum(np.linalg.inv(X) * Ct), Z)  # complex, two factors: symmetrized
    _assert_bit_symmetric(H, 0, 2)
    np.testing.assert_allclose(H, cf_inv_weighted(Z, Ct), rtol=1e-10, atol=1e-12)
    (fin,) = _finals(lambda z: z @ Bz @ z, z3)
    assert fin.sym is None


def _random_loss(seed):
    """A sum of 2-4 random smooth scalar functions of a (3, 2) matrix, and the matrix."""
    r = np.random.default_rng(seed)
    A, B, C = r.standard_normal((4, 3)), r.standard_normal((2, 2)), r.standard_normal((3, 2))
    pool = [
        lambda X: np.sum(np.tanh(A @ X) ** 2),
        lambda X: np.sum((X @ B) ** 3),
        lambda X: np.linalg.slogdet(X.T @ X + np.eye(2))[1],
        lambda X: np.sum(np.exp(0.5 * X) * C),
        lambda X: np.sum(np.sin(X @ X.T)),
        lambda X: np.log(np.sum(X**2)),
        lambda X: np.sum(X * X) * np.sum(X @ B),
    ]
    picks = r.choice(len(pool), size=r.integers(2, 5), replace=False)
    w = r.standard_normal(len(picks))
    return (lambda X: sum(wi * pool[p](X) for wi, p in zip(w, picks))), r.standard_normal((3, 2))


@pytest.mark.parametrize("seed", range(10))
def test_random_sums_of_terms(seed):
    f, X = _random_loss(seed)
    layout = ["tensor", "matrix", "vec"][seed % 3]
    H = tj.hessian(f, X, layout=layout)
    _assert_bit_symmetric(H, 0, 2, layout)
    F, err = tj.fd.hessian(f, X, method="richardson", layout=layout, return_error=True)
    assert (np.abs(H - F) <= 10 * err + 1e-11 * max(1.0, float(np.abs(F).max()))).all()
    H1 = tj.hessian(f, X.astype(np.float32), layout=layout)
    _assert_bit_symmetric(H1, 0, 2, layout)


@pytest.mark.parametrize("name", ["logdet: one term, two factors", "MLP: one term, one factor and a delta",
                                  "two-layer MLP: several terms, each its own mirror",
                                  "vector softmax: and a diagonal term", "least squares wrt X: three factors"])
@pytest.mark.parametrize("order", ["F", "strided", "reversed"])
@pytest.mark.parametrize("layout", ["tensor", "vec"])
def test_out_of_any_memory_order(name, order, layout):
    f, x, P, _ = _sym_case(name)
    ref = tj.hessian(f, x, layout=layout)
    if order == "F":
        out = np.full(ref.shape, np.nan, order="F")
    elif order == "strided":  # every third entry of the last axis, odd byte strides of the others
        out = np.full(ref.shape[:-1] + (3 * ref.shape[-1],), np.nan)[..., 1::3]
    else:
        out = np.full(ref.shape, np.nan)[(slice(None, None, -1),) * ref.ndim]
    res = tj.hessian(f, x, layout=layout, out=out)
    assert res is out
    assert np.array_equal(_bits(out), _bits(ref))


def test_big_hessians_thread_counts_and_instruction_sets_bitwise_equal():
    """Large enough to be split across threads (>= 2**15 entries): one term written symmetric, and
    several terms symmetrized after the write."""
    from tensorjac import _core

    r = np.random.default_rng(3)
    X16 = r.standard_normal((16, 16)) + 6 * np.eye(16)
    Xb, Yb2, W2b = r.standard_normal((20, 12)), r.standard_normal((20, 3)), r.standard_normal((16, 3))
    W1b = 0.3 * r.standard_normal((12, 16))
    wb, yb = r.standard_normal(14), r.standard_normal(14)
    cases = [
        (lambda X: np.linalg.slogdet(X)[1], X16, True),
        (lambda W: np.sum((np.tanh(Xb @ W) @ W2b - Yb2) ** 2), W1b, True),  # terms that are their own mirrors
        (lambda X: np.sum((X @ wb - yb) ** 2), r.standard_normal((14, 14)), False),
    ]
    for f, x, by_construction in cases:
        (fin,) = _finals(f, x)
        assert (fin.sym is None) == by_construction
        H1 = tj.hessian(f, x, num_threads=1)
        _assert_bit_symmetric(H1, 0, 2)
        for nt in (2, 3):
            assert np.array_equal(_bits(tj.hessian(f, x, num_threads=nt)), _bits(H1))
        simd = _core.expand_simd()
        try:
            _core.expand_simd("baseline")
            assert np.array_equal(_bits(tj.hessian(f, x, num_threads=2)), _bits(H1))
        finally:
            _core.expand_simd("auto")
        assert _core.expand_simd() == simd
    Xi = np.linalg.inv(X16)
    np.testing.assert_allclose(tj.hessian(cases[0][0], X16), -np.einsum("jk,li->ijkl", Xi, Xi), rtol=1e-10,
                               atol=1e-14)


def test_tuple_wrt_diagonal_blocks_by_construction_off_diagonal_blocks_untouched():
    fins = _finals(_ls, Xd, wd, yd, wrt=(0, 1))
    assert len(fins) == 4
    assert all(fin.sym is None for fin in fins[1:3])  # H[0][1], H[1][0]: not symmetric, never symmetrized
    H = tj.hessian(_ls, Xd, wd, yd, wrt=(0, 1))
    _assert_bit_symmetric(H[1][1], 0, 1)
    _assert_bit_symmetric(H[0][0], 0, 2)
    r = Xd @ wd - yd
    np.testing.assert_allclose(H[0][1], 2 * (np.einsum("jk,i->ijk", np.eye(3), r) + np.einsum("ik,j->ijk", Xd, wd)),
                               rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", ["tensor", "matrix", "vec"])
@pytest.mark.parametrize("nfac", [0, 1, 2])
def test_one_term_with_any_coefficient_is_written_symmetric(nfac, layout, dtype):
    """H[i,j,k,l] = c A[j,k] B[l,i] (a logdet-like term; 1 factor: c A[j,k] B[l,i] as one array; none:
    c everywhere) with a coefficient that is not a power of two: written as two halves, exactly
    symmetric, equal to c/2 (T + T swapped)."""
    from tensorjac import _terms

    r = np.random.default_rng(nfac)
    n, c = 5, 0.3
    A, B = r.standard_normal((n, n)), r.standard_normal((n, n)) * 1e-3
    alg = _terms.Algebra()
    i, j, k, l = (alg.new(n) for _ in range(4))
    if nfac == 2:
        facs = [(alg.prog.leaf(A), (j, k)), (alg.prog.leaf(B), (l, i))]
        T = c * np.einsum("jk,li->ijkl", A, B)
    elif nfac == 1:
        facs = [(alg.prog.leaf(np.einsum("jk,li->ijkl", A, B)), (i, j, k, l))]
        T = c * np.einsum("jk,li->ijkl", A, B)
    else:
        facs = []
        T = np.full((n,) * 4, c)
    t = _terms.Term(c, ((i,), (j,)), ((k,), (l,)), facs)
    fin = _terms.finalize(alg, [t], (n, n), (n, n), layout, np.dtype(dtype), hess=0, sym=True)
    assert fin.sym is None  # by construction, no symmetrization afterwards
    assert fin.first is not None
    H, finite = fin.write(fin.first, None, 1)
    assert finite and H.dtype == dtype
    _assert_bit_symmetric(H, 0, 2, layout)
    want = _to_layout(0.5 * (T + T.transpose(2, 3, 0, 1)), (), (n, n), layout)
    scale = float(np.abs(want).max())
    if dtype == np.float32:
        np.testing.assert_allclose(H, want, rtol=1e-5, atol=1e-6 * scale)
    else:
        np.testing.assert_allclose(H, want, rtol=1e-12, atol=1e-15 * scale)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
@pytest.mark.parametrize("layout", ["tensor", "matrix", "vec"])
def test_terms_that_are_their_own_mirror_are_written_symmetric(layout, dtype):
    """Terms whose exchanged half has the same structure (tensorjac._terms._self_symmetric) next to one that
    has not, no symmetrization afterwards: ``c D[j] S[j,i,k] delta_jl`` (D read at the same entry of the
    mirror, S permuted by the exchange: one term over ``S + S.transpose(0, 2, 1)``), ``-B[j,k] B[l,i]`` (one
    array whose two reads are exchanged: kept whole, real only), and ``c A[i,j] C[k,l]`` (real) or
    ``c Q[i,j,k] delta_il`` (complex), written as two halves first -- exactly symmetric, equal to the sum of the
    two halves of every term."""
    from tensorjac import _terms

    r = np.random.default_rng(5)
    n, c = 4, 0.3
    real = np.dtype(dtype).kind != "c"

    def arr(*shape):
        a = r.standard_normal(shape)
        return (a if real else a + 1j * r.standard_normal(shape)).astype(dtype)

    S, D, B, A, C, Q = arr(n, n, n), arr(n), arr(n, n), arr(n, n), arr(n, n), arr(n, n, n)
    alg = _terms.Algebra()
    i, j, k, l = (alg.new(n) for _ in range(4))
    terms = [_terms.Term(c, ((i,), (j,)), ((k,), (j,)), [(alg.prog.leaf(D), (j,)), (alg.prog.leaf(S), (j, i, k))])]
    T = c * np.einsum("j,jik,jl->ijkl", D, S, np.eye(n))
    if real:
        bl = alg.prog.leaf(B)
        terms += [_terms.Term(-1, ((i,), (j,)), ((k,), (l,)), [(bl, (j, k)), (bl, (l, i))]),
                  _terms.Term(c, ((i,), (j,)), ((k,), (l,)), [(alg.prog.leaf(A), (i, j)), (alg.prog.leaf(C), (k, l))])]
        T = T - np.einsum("jk,li->ijkl", B, B) + c * np.einsum("ij,kl->ijkl", A, C)
    else:
        terms.append(_terms.Term(c, ((i,), (j,)), ((k,), (i,)), [(alg.prog.leaf(Q), (i, j, k))]))
        T = T + c * np.einsum("ijk,il->ijkl", Q, np.eye(n))
    fin = _terms.finalize(alg, terms, (n, n), (n, n), layout, np.dtype(dtype), hess=0, sym=True)
    assert fin.sym is None  # by construction, no symmetrization afterwards
    # D and S + S^T; the two reads of B; A and C in each half (Q in each half)
    assert len(fin.regs) == (8 if real else 4)
    H, finite = fin.write(fin.first, None, 1)
    assert finite and H.dtype == dtype
    _assert_bit_symmetric(H, 0, 2, layout)
    want = _to_layout(0.5 * (T + T.transpose(2, 3, 0, 1)), (), (n, n), layout)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(H, want, rtol=tol, atol=tol * float(np.abs(want).max()))


def test_mlp_loss_hessian_is_one_term_over_a_symmetrized_factor():
    """sum((tanh(X W) - Y)^2): the Gauss-Newton and the tanh'' parts contract to one term c S[j,i,k] delta_jl,
    written as one term over S + S^T (no second half, no symmetrization), equal to the closed form."""
    f, x, _, _ = _sym_case("MLP: one term, one factor and a delta")
    (fin,) = _finals(f, x)
    assert fin.sym is None and len(fin.regs) == 1
    for nt in (1, 2, 3):
        H = tj.hessian(f, x, num_threads=nt)
        _assert_bit_symmetric(H, 0, 2)
        np.testing.assert_allclose(H, cf_mlp(x, Xm6, Ym6), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", ["tensor", "matrix", "vec"])
def test_two_registers_with_the_same_bits_are_checked_on_every_write(layout, dtype):
    """``-A[j,k] B[l,i]`` with A and B distinct registers that held the same bits when recorded (slogdet: inv
    and inv times a unit cotangent) is written as one term while they still do, and as two halves (exactly
    symmetric too) when a replay gives them different values."""
    from tensorjac import _terms

    r = np.random.default_rng(7)
    n = 5
    A = r.standard_normal((n, n)).astype(dtype)
    alg = _terms.Algebra()
    i, j, k, l = (alg.new(n) for _ in range(4))
    t = _terms.Term(-1, ((i,), (j,)), ((k,), (l,)), [(alg.prog.leaf(A), (j, k)), (alg.prog.leaf(A.copy()), (l, i))])
    fin = _terms.finalize(alg, [t], (n, n), (n, n), layout, np.dtype(dtype), hess=0, sym=True)
    assert fin.sym is None and fin.fast is not None
    fcore, nmain, pairs, zero_acc = fin.fast
    assert not zero_acc
    calls = []

    def spy(*a):
        calls.append(1)
        return fcore(*a)

    fin.fast = (spy, nmain, pairs, zero_acc)
    H, finite = fin.write(fin.first, None, 1)  # the recording run
    assert finite and calls == [1]
    _assert_bit_symmetric(H, 0, 2, layout)
    np.testing.assert_array_equal(H, _to_layout(-np.einsum("jk,li->ijkl", A, A), (), (n, n), layout))
    for B, fast in ((A.copy(), True), (A + 1e-3 * r.standard_normal((n, n)).astype(dtype), False)):
        calls.clear()
        arrays = alg.prog.replay([A, B], fin.regs)
        H, finite = fin.write(arrays, None, 2)
        assert finite and calls == ([1] if fast else [])
        _assert_bit_symmetric(H, 0, 2, layout)
        T = -np.einsum("jk,li->ijkl", A, B)
        want = _to_layout(0.5 * (T + T.transpose(2, 3, 0, 1)), (), (n, n), layout)
        np.testing.assert_allclose(H, want, rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", ["tensor", "matrix", "vec"])
@pytest.mark.parametrize("given_out", [False, True])
def test_two_halves_over_different_entries_keep_signed_zeros_symmetric(given_out, layout, dtype):
    """``Q[i,j,k] delta_il`` and its exchange cover different entries (separate passes): where only one half is
    present both mirrors must get ``0 + a`` -- with -0.0 in Q a first pass writing ``a`` would leave -0.0 at
    one mirror and +0.0 at the other.  Bit patterns compared, values against the two halves."""
    from tensorjac import _terms

    n = 3
    Q = np.random.default_rng(11).standard_normal((n, n, n)).astype(dtype)
    Q[0, 1, 2] = Q[1, 2, 0] = -0.0
    Q[:, :, 1] = -0.0
    alg = _terms.Algebra()
    i, j, k = (alg.new(n) for _ in range(3))
    t = _terms.Term(1.0, ((i,), (j,)), ((k,), (i,)), [(alg.prog.leaf(Q), (i, j, k))])
    fin = _terms.finalize(alg, [t], (n, n), (n, n), layout, np.dtype(dtype), hess=0, sym=True)
    assert fin.sym is None
    R = np.full(fin.shape, np.nan, dtype=dtype, order="F") if given_out else None
    H, finite = fin.write(fin.first, R, 2)
    assert finite and (H is R or not given_out)
    _assert_bit_symmetric(H, 0, 2, layout)
    T = np.einsum("ijk,il->ijkl", Q, np.eye(n, dtype=dtype))
    np.testing.assert_array_equal(H, _to_layout(0.5 * (T + T.transpose(2, 3, 0, 1)), (), (n, n), layout))


@pytest.mark.parametrize("subs, shapes", [
    ("ab,ac,ad->bcd", [(9, 4), (9, 5), (9, 6)]),        # the tanh loss's Hessian factor
    ("ab,ac,ad->dcb", [(9, 4), (9, 5), (9, 6)]),        # a transposed result
    ("zab,zbc,zcd->zad", [(3, 4, 5), (3, 5, 6), (3, 6, 2)]),  # batch letters: a stack of GEMMs
    ("ij,jk,kl,lm->im", [(4, 5), (5, 6), (6, 7), (7, 3)]),
    ("abc,cd,de->abe", [(2, 3, 40), (40, 50), (50, 4)]),
])
def test_planned_contractions_recorded_pairwise_equal_einsum(subs, shapes):
    """Program.einsum records numpy's planned path step by step (products by einsum's loop, contractions by
    matmul), and a replay on new arrays computes the same contraction as np.einsum."""
    from tensorjac import _terms

    r = np.random.default_rng(2)
    arrays = [r.standard_normal(s) for s in shapes]
    prog = _terms.Program()
    hs = [prog.leaf(a) for a in arrays]
    res = prog.einsum(subs, hs, optimize=True)
    np.testing.assert_allclose(res.a, np.einsum(subs, *arrays), rtol=1e-12, atol=1e-12)
    new = [r.standard_normal(s) for s in shapes]
    (again,) = prog.replay(new, [res.r])
    np.testing.assert_allclose(again, np.einsum(subs, *new), rtol=1e-12, atol=1e-12)


def test_pairwise_steps_refuse_what_is_not_a_product_or_a_matmul():
    from tensorjac import _terms

    shapes = [(3, 3), (3, 4), (3, 5)]
    assert _terms._pairwise_steps(["aa", "ab", "ac"], "bc", [(0, 1), (0, 1)], shapes) is None  # a diagonal
    assert _terms._pairwise_steps(["ab", "ac", "ad"], "bcd", [(0, 1, 2)], shapes) is None  # three at once
    steps = _terms._pairwise_steps(["ab", "ac", "ad"], "bcd", [(0, 1), (0, 1)], shapes)
    assert steps is not None and steps[0][3] is None and steps[1][3] is not None


@pytest.mark.parametrize("wrt, exc, match", [
    (5, IndexError, "wrt=5 is out of range for 1 positional"),
    (-3, IndexError, "wrt=-3 is out of range"),
    (True, TypeError, "wrt must be an argument index"),
    (1.5, TypeError, "wrt must be an argument index"),
    ("y", ValueError, "wrt='y' is not one of the arguments"),
])
def test_bad_wrt_of_a_scalar_f_is_named(wrt, exc, match):
    with pytest.raises(exc, match=match):
        tj.hessian(lambda x: np.sum(x**2), np.ones(2), wrt=wrt)


def test_scalar_f_out_of_a_wrong_shape_names_the_hessian_shape():
    with pytest.raises(ValueError, match=r"expected shape \(2, 2\)"):
        tj.hessian(lambda x: np.sum(x**3), np.ones(2), out=np.empty((1, 2, 2)))
    out = np.empty((2, 2))
    assert tj.hessian(lambda x: np.sum(x**3), np.ones(2), out=out) is out
    np.testing.assert_array_equal(out, 6 * np.eye(2))
