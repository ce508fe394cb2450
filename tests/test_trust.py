"""Regression tests for the "Trust" issue (9): items the lead implemented.

Self-overlapping ``out=``, det's cofactors at extreme scale, big-endian inputs
everywhere, the one dtype rule, the memory budget of vjp/jvp/kron_matvec,
numpy parity of ``tj.sum`` / ``tj.norm`` / ``tj.multiply``, the non-finite
policy and the package namespace.  Every expected value is independent of the
code under test: numpy, einsum constructions, closed forms or
``tj.fd.jacobian`` (away from kinks).
"""

from __future__ import annotations

import itertools
import tracemalloc
import types
import warnings

import numpy as np
import pytest
import tensorjac as tj
from conftest import cofactor
from numpy.lib.stride_tricks import as_strided
from tensorjac import _config

GIB = 2**30
NonFiniteWarning = _config.NonFiniteWarning


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _orthogonal(n: int, seed: int = 0, complex_: bool = False) -> np.ndarray:
    rng = _rng(seed)
    A = rng.standard_normal((n, n))
    if complex_:
        A = A + 1j * rng.standard_normal((n, n))
    Q, R = np.linalg.qr(A)
    return Q * (np.diag(R) / np.abs(np.diag(R)))  # Haar-distributed, exactly orthogonal/unitary


def _nonfinite(record: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in record if issubclass(w.category, NonFiniteWarning)]


# ============================================================================ out= that overlaps itself


def _strided(shape: tuple[int, ...], strides_items: tuple[int, ...], n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    buf = np.full(n, -7.0)
    return buf, as_strided(buf, shape, tuple(8 * s for s in strides_items))


# (shape, strides in items): every one addresses some memory twice
OVERLAPPING = {
    "all-zero strides": ((2, 3, 2, 3), (0, 0, 0, 0)),
    "equal strides": ((2, 3, 2, 3), (1, 1, 1, 1)),
    "one zero stride": ((2, 3, 2, 3), (9, 3, 0, 1)),
    "interleaved, colliding": ((2, 3, 2, 3), (9, 3, 2, 1)),
}


@pytest.mark.parametrize("kind", list(OVERLAPPING))
@pytest.mark.parametrize("path", ["op", "composite"])
def test_self_overlapping_out_refused(kind, path):
    shape, strides = OVERLAPPING[kind]
    buf, out = _strided(shape, strides)
    X = np.arange(1.0, 7.0).reshape(2, 3)
    Y = X[::-1].copy()
    before = buf.copy()
    f = tj.multiply if path == "op" else (lambda a, b: a * b)
    with pytest.raises(ValueError, match="overlaps itself"):
        tj.jacobian(f, X, Y, out=out)
    np.testing.assert_array_equal(buf, before)  # nothing written


@pytest.mark.parametrize("path", ["op", "composite"])
def test_self_overlapping_out_refused_diagonal_and_matrix(path):
    X = np.arange(1.0, 7.0).reshape(2, 3)
    f = tj.exp if path == "op" else np.exp
    _, diag = _strided((2, 3), (1, 1))  # entries (0, 1) and (1, 0) share memory
    with pytest.raises(ValueError, match="overlaps itself"):
        tj.jacobian(f, X, out=diag, layout="diagonal")
    _, mat = _strided((6, 6), (6, 0))  # every row is one memory cell
    with pytest.raises(ValueError, match="overlaps itself"):
        tj.jacobian(f, X, out=mat, layout="matrix")


def test_interleaved_but_injective_out_accepted():
    """Strides that interleave without colliding are fine, and the values land right."""
    # offsets 16*i + 24*j over i < 3, j < 2: 0, 24, 16, 40, 32, 56 -- all distinct
    buf, out = _strided((3, 2), (2, 3))
    X = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    W = np.array([[0.5, -1.0], [2.0, 3.0], [-4.0, 7.0]])
    res = tj.jacobian(tj.multiply, X, W, out=out, layout="diagonal")
    assert res is out
    np.testing.assert_array_equal(out, W)
    np.testing.assert_array_equal(buf[[0, 3, 2, 5, 4, 7]], W.ravel())
    # and a zero stride on a length-1 axis is no overlap
    _, out1 = _strided((1, 3), (0, 1))
    np.testing.assert_array_equal(tj.jacobian(tj.exp, np.zeros((1, 3)), out=out1, layout="diagonal"), 1.0)


def test_interleaved_colliding_out_refused():
    _, out = _strided((3, 2), (2, 4))  # offsets 16*i + 32*j: (2, 0) and (0, 1) collide
    with pytest.raises(ValueError, match="overlaps itself"):
        tj.jacobian(tj.exp, np.zeros((3, 2)), out=out, layout="diagonal")


# ============================================================================ det at extreme scale


def test_det_jacobian_huge_scale_is_finite_and_right():
    """Q orthogonal => cofactor(c Q) = c**(n-1) det(Q) Q; at c = 1e16, n = 20 that is ~7e303."""
    n, c = 20, 1e16
    Q = _orthogonal(n)
    X = Q * c
    want = c ** (n - 1) * np.linalg.det(Q) * Q
    assert 1e303 < np.abs(want).max() < 1e304
    with np.errstate(over="ignore"):  # numpy's own det(X) overflows to inf
        for J in (
            tj.jacobian(tj.det, X),
            tj.grad(tj.det, X),
            tj.vjp(tj.det, X, cotangent=np.ones(3))[1],
            tj.jacobian(lambda X: np.linalg.det(X), X),
        ):
            assert np.isfinite(J).all()
            np.testing.assert_allclose(J, want, rtol=1e-10, atol=1e-10 * np.abs(want).max())


def test_det_jacobian_complex_unitary_at_huge_scale():
    """U unitary => inv(U) = U^H, so cofactor(c U) = c**(n-1) det(U) conj(U)."""
    n, c = 12, 1e25
    U = _orthogonal(n, seed=3, complex_=True)
    want = c ** (n - 1) * np.linalg.det(U) * U.conj()
    J = tj.jacobian(tj.det, U * c)
    assert np.isfinite(J).all()
    np.testing.assert_allclose(J, want, rtol=1e-10, atol=1e-10 * np.abs(want).max())


def test_det_jacobian_tiny_scale():
    n = 20
    Q = _orthogonal(n, seed=1)
    # 1e-310 (subnormal entries): the cofactors ~1e-5890 are exactly 0 in float64, never NaN
    J = tj.jacobian(tj.det, Q * 1e-310)
    assert not np.isnan(J).any()
    np.testing.assert_array_equal(J, 0.0)
    # 1e-16: det(X) ~ 1e-320 is subnormal, so det(X) * inv(X) would lose digits; cofactors ~1e-304 are normal
    c = 1e-16
    want = c ** (n - 1) * np.linalg.det(Q) * Q
    np.testing.assert_allclose(tj.jacobian(tj.det, Q * c), want, rtol=1e-10, atol=1e-10 * np.abs(want).max())


def test_det_jacobian_stack_of_mixed_scales():
    n = 20
    Qs = [_orthogonal(n, seed=s) for s in range(3)]
    scales = [1e16, 1e-16, 1.0]
    X = np.stack([Q * c for Q, c in zip(Qs, scales)])
    J = tj.jacobian(tj.det, X)  # (3,) + (3, n, n), block diagonal in the stack axis
    for b, (Q, c) in enumerate(zip(Qs, scales)):
        want = c ** (n - 1) * np.linalg.det(Q) * Q
        np.testing.assert_allclose(J[b, b], want, rtol=1e-10, atol=1e-10 * np.abs(want).max())
        for o in range(3):
            if o != b:
                np.testing.assert_array_equal(J[b, o], 0.0)


@pytest.mark.parametrize("scale", [1.0, 1e70, 1e-70])
def test_det_jacobian_singular(scale):
    rng = _rng(2)
    # rank n-1: the cofactor matrix is rank one, nonzero (minors computed independently)
    B = rng.standard_normal((5, 4))
    X = B @ rng.standard_normal((4, 5))
    want = cofactor(X)
    J = tj.jacobian(tj.det, X * scale)
    assert np.isfinite(J).all()
    np.testing.assert_allclose(J, want * scale**4, rtol=1e-8, atol=1e-8 * np.abs(want).max() * scale**4)
    # the classic 3x3 of rank 2
    S = np.arange(1.0, 10.0).reshape(3, 3)
    np.testing.assert_allclose(tj.jacobian(tj.det, S), [[-3, 6, -3], [6, -12, 6], [-3, 6, -3]], atol=1e-12)
    # rank n-2: every minor of size n-1 is singular, the cofactors vanish
    Z = rng.standard_normal((5, 3)) @ rng.standard_normal((3, 5))
    np.testing.assert_allclose(tj.jacobian(tj.det, Z * scale), 0.0, atol=1e-12 * scale**4 * np.abs(Z).max() ** 4)
    # the zero matrix
    np.testing.assert_array_equal(tj.jacobian(tj.det, np.zeros((4, 4))), 0.0)


# ============================================================================ big-endian inputs


def _big(a: np.ndarray) -> np.ndarray:
    b = a.astype(a.dtype.newbyteorder(">"))
    assert b.dtype.byteorder == ">" and np.array_equal(b, a)
    return b


BIG_DTYPES = ["f8", "c16", "f4"]


def _data(dt: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = _rng(seed)
    a = rng.standard_normal(shape)
    if dt.startswith("c"):
        a = a + 0.5j * rng.standard_normal(shape)
    return a.astype(dt)


def _rtol(dt: str) -> float:
    return 1e-4 if dt in ("f4", "c8") else 1e-11


@pytest.mark.parametrize("dt", BIG_DTYPES)
def test_big_endian_jacobians(dt):
    A, x = _data(dt, (3, 4), 0), _data(dt, (4,), 1)
    Ab, xb = _big(A), _big(x)
    A0, x0 = Ab.copy(), xb.copy()
    rt = _rtol(dt)
    # op: d(A x)/dA[k, a] = delta(i, k) x[a]; d(A x)/dx = A
    J = tj.jacobian(tj.matmul, Ab, xb)
    assert J.dtype.isnative and J.dtype == np.dtype(dt)
    np.testing.assert_allclose(J, np.einsum("ik,a->ika", np.eye(3), x), rtol=rt)
    np.testing.assert_allclose(tj.jacobian(tj.matmul, Ab, xb, wrt=1), A, rtol=rt)
    # composite: d tanh(A x)/dx = diag(1 - tanh(A x)^2) A
    y = np.tanh(A.astype(complex if dt.startswith("c") else float) @ x)
    want = (1 - y**2)[:, None] * A
    Jc = tj.jacobian(lambda A, x: np.tanh(A @ x), Ab, xb, wrt=1)
    assert Jc.dtype.isnative
    np.testing.assert_allclose(Jc, want, rtol=rt * 10)
    # grad of a scalar: d sum(sin(A x))/dx = A^T cos(A x)
    g = tj.grad(lambda x: np.sum(np.sin(Ab @ x)), xb)
    assert g.dtype.isnative
    np.testing.assert_allclose(g, A.T @ np.cos(A @ x), rtol=rt * 10)
    # inputs untouched, still big-endian
    assert Ab.dtype.byteorder == ">" and np.array_equal(Ab, A0) and np.array_equal(xb, x0)


@pytest.mark.parametrize("dt", BIG_DTYPES)
def test_big_endian_vjp_jvp(dt):
    A, x = _data(dt, (3, 4), 2), _data(dt, (4,), 3)
    G, V = _data(dt, (5, 3), 4), _data(dt, (5, 4), 5)
    Ab, xb, Gb, Vb = map(_big, (A, x, G, V))
    rt = _rtol(dt)
    for f in (tj.matmul, lambda A, x: A @ x):
        r = tj.vjp(f, Ab, xb, cotangent=Gb, wrt=1)  # G @ A
        assert r.dtype.isnative
        np.testing.assert_allclose(r, G @ A, rtol=rt)
        r = tj.jvp(f, Ab, xb, tangent=Vb, wrt=1)  # V @ A^T
        assert r.dtype.isnative
        np.testing.assert_allclose(r, V @ A.T, rtol=rt)
    # elementwise op through the C++ row scaling: G * exp(x)
    Gx = _big(_data(dt, (2, 4), 6))
    np.testing.assert_allclose(tj.vjp(tj.exp, xb, cotangent=Gx), Gx * np.exp(x), rtol=rt)


@pytest.mark.parametrize("dt", BIG_DTYPES)
def test_big_endian_kron_matvec_chain_fd(dt):
    A, B, X = _data(dt, (2, 3), 7), _data(dt, (3, 2), 8), _data(dt, (4, 6), 9)
    Ab, Bb, Xb = map(_big, (A, B, X))
    rt = _rtol(dt)
    r = tj.kron_matvec([Ab, Bb], Xb)
    assert r.dtype.isnative
    np.testing.assert_allclose(r, X @ np.kron(A, B).T, rtol=rt)
    Jo, Ji = _data(dt, (2, 3, 4), 10), _data(dt, (3, 4, 5), 11)
    c = tj.chain(_big(Jo), _big(Ji), 2)
    assert c.dtype.isnative
    np.testing.assert_allclose(c, np.einsum("myz,yzn->mn", Jo, Ji), rtol=rt)
    # fd: d sin(x)/dx = diag(cos(x)) (the reproducer: np.ones(3, '>c16'))
    x = _data(dt, (3,), 12)
    J = tj.fd.jacobian(np.sin, _big(x))
    assert J.dtype.isnative
    np.testing.assert_allclose(J, np.diag(np.cos(x)), rtol=1e-3 if dt == "f4" else 1e-8, atol=1e-3 if dt == "f4" else 1e-8)
    J1 = tj.fd.jacobian(np.sin, np.ones(3, ">" + dt))
    np.testing.assert_allclose(J1, np.cos(1.0) * np.eye(3), rtol=1e-3 if dt == "f4" else 1e-8)


# ============================================================================ the one dtype rule


def _all_paths(a: np.ndarray, b: np.ndarray) -> dict[str, np.dtype]:
    """The result dtype of every derivative function for the same operands a (2, 2) and b (2, 2)."""
    ones = np.ones((2, 2), a.dtype)
    return {
        "jacobian op": tj.jacobian(tj.matmul, a, b).dtype,
        "jacobian composite": tj.jacobian(lambda p, q: p @ q, a, b).dtype,
        "value_and_jacobian": tj.value_and_jacobian(lambda p, q: p @ q, a, b)[1].dtype,
        "vjp op": tj.vjp(tj.matmul, a, b, cotangent=ones).dtype,
        "vjp composite": tj.vjp(lambda p, q: p @ q, a, b, cotangent=ones).dtype,
        "jvp op": tj.jvp(tj.matmul, a, b, tangent=ones).dtype,
        "jvp composite": tj.jvp(lambda p, q: p @ q, a, b, tangent=ones).dtype,
        "kron_matvec": tj.kron_matvec([a, b], np.ones(4, a.dtype)).dtype,
        "chain": tj.chain(a, b, 1).dtype,
        "fd.jacobian": tj.fd.jacobian(lambda p, q: p @ q, a, b).dtype,
    }


# operand dtypes -> the documented result (written out by hand, not computed by the package)
DTYPE_RULE = [
    ("float32", "int64", "float64"),
    ("float32", "float32", "float32"),
    ("int64", "int32", "float64"),
    ("bool", "float32", "float64"),
    ("float16", "float32", "float32"),
    ("float32", "float64", "float64"),
    ("float32", "complex64", "complex64"),
    ("float64", "complex64", "complex128"),
    ("complex64", "int64", "complex128"),
    ("complex128", "complex128", "complex128"),
]


@pytest.mark.parametrize("da, db, want", DTYPE_RULE)
def test_one_dtype_rule_everywhere(da, db, want):
    a = (np.arange(4).reshape(2, 2) % 2 + 1).astype(da)
    b = (np.arange(4).reshape(2, 2) + 2).astype(db)
    got = _all_paths(a, b)
    assert {k: str(v) for k, v in got.items()} == dict.fromkeys(got, want)


@pytest.mark.skipif(np.dtype(np.longdouble).itemsize <= 8, reason="long double is double here")
@pytest.mark.parametrize("bad_dtype", [np.longdouble, np.clongdouble])
def test_long_double_refused_everywhere(bad_dtype):
    bad = np.ones((2, 2), bad_dtype)
    F = np.ones((2, 2))
    for call in (
        lambda: tj.jacobian(tj.matmul, bad, F),
        lambda: tj.jacobian(lambda p, q: p @ q, bad, F),
        lambda: tj.vjp(tj.matmul, F, F, cotangent=bad),
        lambda: tj.jvp(lambda p, q: p @ q, F, F, tangent=bad),
        lambda: tj.kron_matvec([bad, F], np.ones(4)),
        lambda: tj.chain(bad, F, 1),
        lambda: tj.fd.jacobian(lambda p: p, bad),
    ):
        with pytest.raises(TypeError, match="not supported"):
            call()


# ============================================================================ the memory budget


@pytest.fixture
def budget_256m():
    old = tj.get_memory_budget()
    tj.set_memory_budget("256M")
    yield
    tj.set_memory_budget(old)


def _refused_without_allocating(call, want_gib: float, f_own: int = 0) -> str:
    """``call`` raises JacobianTooLargeError naming ``want_gib`` before allocating more than f's own ``f_own``."""
    tracemalloc.start()
    try:
        with pytest.raises(MemoryError) as exc:
            call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(exc.value, tj.JacobianTooLargeError)
    msg = str(exc.value)
    assert f"{want_gib:,.2f} GiB" in msg, msg
    assert "0.25 GiB" in msg, msg  # the budget
    assert peak < 16 * 2**20 + f_own, f"{peak / 2**20:.1f} MiB allocated before the refusal"
    return msg


def test_budget_vjp_of_sum(budget_256m):
    X, c = np.ones((1000, 1000)), np.ones(300)
    msg = _refused_without_allocating(lambda: tj.vjp(tj.sum, X, cotangent=c), 300 * 10**6 * 8 / GIB)
    assert "(300, 1000, 1000)" in msg
    _refused_without_allocating(lambda: tj.vjp(lambda X: np.sum(X), X, cotangent=c), 300 * 10**6 * 8 / GIB)


def test_budget_kron_matvec(budget_256m):
    msg = _refused_without_allocating(lambda: tj.kron_matvec([np.ones((600, 1))] * 3, np.ones((1, 1))),
                                      600**3 * 8 / GIB)
    assert str(600**3) in msg
    # a small result whose intermediate is not: (1 x 20000) kron (20000 x 1) applied to one vector
    # has 20000 outputs but its mode product holds 20000 x 20000 entries (3.0 GiB)
    _refused_without_allocating(
        lambda: tj.kron_matvec([np.ones((1, 20000)), np.ones((20000, 1))], np.ones(20000)), 20000**2 * 8 / GIB
    )


def test_budget_jvp(budget_256m):
    u = np.ones(3000)
    T = np.ones((4, 3000))
    want = 4 * 3000 * 3000 * 8 / GIB  # 0.27 GiB: just over the budget
    _refused_without_allocating(lambda: tj.jvp(tj.outer, u, u, tangent=T), want)
    # a traced f runs first: its own value (3000 x 3000) is allowed, not the (4, 3000, 3000) result
    _refused_without_allocating(lambda: tj.jvp(lambda u, v: np.outer(u, v), u, u, tangent=T), want, 3000**2 * 8)
    # just under the budget it runs, and is right: J(u, v)[T] = T[b, i] v[j]
    r = tj.jvp(tj.outer, u[:2000], 2 * u[:2000], tangent=T[:, :2000])
    assert r.shape == (4, 2000, 2000) and np.all(r == 2.0)


# ============================================================================ numpy parity: sum, norm, multiply


SUM_AXES = [None, 0, 1, 2, -1, -3, (0, 1), (0, 2), (2, 0), (-1, 0), (0, 1, 2), ()]


@pytest.mark.parametrize("axis", SUM_AXES, ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_sum_matches_numpy(axis, keepdims):
    X = _rng(5).standard_normal((3, 4, 2))
    v = tj.sum(X, axis=axis, keepdims=keepdims)
    want = np.sum(X, axis=axis, keepdims=keepdims)
    assert np.shape(v) == want.shape
    np.testing.assert_allclose(v, want, rtol=1e-14)
    # the Jacobian is the 0/1 indicator "input entry n contributes to output entry m" (linear: fd is exact)
    J = tj.jacobian(tj.sum, X, axis=axis, keepdims=keepdims)
    F = tj.fd.jacobian(lambda X: np.sum(X, axis=axis, keepdims=keepdims), X)
    assert J.shape == want.shape + X.shape
    np.testing.assert_allclose(J, F, atol=1e-9)
    assert set(np.unique(J)) <= {0.0, 1.0}
    assert J.sum() == X.size  # every input entry lands in exactly one output entry
    Jc = tj.jacobian(lambda X: np.sum(X, axis=axis, keepdims=keepdims), X)
    np.testing.assert_array_equal(Jc, J)


def test_sum_bad_axis_like_numpy():
    X = np.ones((2, 3))
    for axis in (2, -3, (0, 0)):
        with pytest.raises(ValueError):  # numpy: AxisError (a ValueError) or "duplicate value in axis"
            np.sum(X, axis=axis)
        with pytest.raises(ValueError):
            tj.sum(X, axis=axis)
        with pytest.raises(ValueError):
            tj.jacobian(tj.sum, X, axis=axis)


VECTOR_ORDS = [None, 2, 1, np.inf, -np.inf, 0, 3, 0.5, -1, -2, -0.5, 2.5]
MATRIX_ORDS = [None, "fro", "nuc", 1, -1, 2, -2, np.inf, -np.inf]


def _norm_fd(x, **kw):
    return tj.fd.jacobian(lambda x: np.linalg.norm(x, **kw), x, method="richardson")


@pytest.mark.parametrize("ord", VECTOR_ORDS, ids=str)
@pytest.mark.parametrize("axis, keepdims", [(None, False), (0, False), (-1, True), (None, True)], ids=str)
def test_norm_vector_matches_numpy(ord, axis, keepdims):
    x = _rng(6).standard_normal(5) + np.array([0, 3, 0, -3, 0])  # no ties in |x|, no zeros
    kw = dict(ord=ord, axis=axis, keepdims=keepdims)
    v, want = tj.norm(x, **kw), np.linalg.norm(x, **kw)
    assert np.shape(v) == np.shape(want)
    np.testing.assert_allclose(v, want, rtol=1e-13)
    J = tj.jacobian(tj.norm, x, **kw)
    assert J.shape == np.shape(want) + x.shape
    np.testing.assert_allclose(J, _norm_fd(x, **kw), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(tj.jacobian(lambda x: np.linalg.norm(x, **kw), x), J, rtol=1e-12, atol=1e-15)


def test_norm_vector_closed_forms():
    x = np.array([3.0, -4.0, 1.0, 0.5])
    p = 3.0
    norms = {
        2: x / np.sqrt(np.sum(x**2)),
        1: np.sign(x),
        np.inf: np.array([0.0, -1.0, 0.0, 0.0]),
        -np.inf: np.array([0.0, 0.0, 0.0, 1.0]),
        0: np.zeros(4),
        p: np.sign(x) * np.abs(x) ** (p - 1) / np.sum(np.abs(x) ** p) ** ((p - 1) / p),
    }
    for ord, want in norms.items():
        np.testing.assert_allclose(tj.jacobian(tj.norm, x, ord=ord), want, rtol=1e-14, atol=1e-16)
    # the 2-norm is scaled: right at magnitudes where x**2 overflows or underflows
    for c in (1e200, 1e-200):
        np.testing.assert_allclose(tj.norm(x * c), np.sqrt(np.sum(x**2)) * c, rtol=1e-14)
        np.testing.assert_allclose(tj.jacobian(tj.norm, x * c), norms[2], rtol=1e-14)
    np.testing.assert_array_equal(tj.jacobian(tj.norm, np.zeros(3)), 0.0)  # 0 where the norm is 0


@pytest.mark.parametrize("ord", MATRIX_ORDS, ids=str)
@pytest.mark.parametrize("shape, axis, keepdims", [((3, 3), None, False), ((3, 3), None, True),
                                                   ((3, 3), (1, 0), False), ((2, 3, 3), (1, 2), False),
                                                   ((3, 2, 3), (-1, 0), True)], ids=str)
def test_norm_matrix_matches_numpy(ord, shape, axis, keepdims):
    X = _rng(7).standard_normal(shape)
    kw = dict(ord=ord, axis=axis, keepdims=keepdims)
    v, want = tj.norm(X, **kw), np.linalg.norm(X, **kw)
    assert np.shape(v) == np.shape(want)
    np.testing.assert_allclose(v, want, rtol=1e-13)
    J = tj.jacobian(tj.norm, X, **kw)
    assert J.shape == np.shape(want) + X.shape
    np.testing.assert_allclose(J, _norm_fd(X, **kw), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(tj.jacobian(lambda X: np.linalg.norm(X, **kw), X), J, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("ord", [None, "fro", "nuc", 1, -1, 2, np.inf, -np.inf], ids=str)
@pytest.mark.parametrize("shape", [(3, 4), (4, 3)])
def test_norm_rectangular_matrix(ord, shape):
    X = _rng(8).standard_normal(shape)
    np.testing.assert_allclose(tj.norm(X, ord=ord), np.linalg.norm(X, ord=ord), rtol=1e-13)
    np.testing.assert_allclose(tj.jacobian(tj.norm, X, ord=ord), _norm_fd(X, ord=ord), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("shape", [(3, 4), (4, 3)])
def test_norm_rectangular_matrix_ord_minus_2(shape):
    X = _rng(8).standard_normal(shape)
    np.testing.assert_allclose(tj.jacobian(tj.norm, X, ord=-2), _norm_fd(X, ord=-2), rtol=1e-6, atol=1e-8)


def test_norm_matrix_closed_forms():
    X = np.array([[2.0, -1.0, 0.5], [0.3, 4.0, -2.0], [1.0, 0.2, -3.0]])
    U, s, Vh = np.linalg.svd(X)
    want = {
        "fro": X / np.sqrt(np.sum(X**2)),
        "nuc": U @ Vh,
        2: np.outer(U[:, 0], Vh[0]),
        -2: np.outer(U[:, -1], Vh[-1]),
        1: np.sign(X) * (np.arange(3) == np.argmax(np.abs(X).sum(0)))[None, :],
        np.inf: np.sign(X) * (np.arange(3) == np.argmax(np.abs(X).sum(1)))[:, None],
    }
    for ord, w in want.items():
        np.testing.assert_allclose(tj.jacobian(tj.norm, X, ord=ord), w, rtol=1e-12, atol=1e-14, err_msg=str(ord))


def test_norm_bad_orders_like_numpy():
    x, X, T = np.ones(3), np.ones((2, 2)), np.ones((2, 2, 2))
    for arr, ord in ((X, 3), (X, 0.5), (x, "fro"), (x, "nuc"), (T, 2), (T, "fro")):
        with pytest.raises(ValueError):
            np.linalg.norm(arr, ord=ord)
        with pytest.raises(ValueError):
            tj.norm(arr, ord=ord)
        with pytest.raises(ValueError):
            tj.jacobian(tj.norm, arr, ord=ord)


def _multiply_reference(X: np.ndarray, Y: np.ndarray, wrt: int) -> np.ndarray:
    """d(X * Y)[m] / dA[n] for A = (X, Y)[wrt], by enumerating the broadcast: T[m, n] = other[m] if m maps to n."""
    A = (X, Y)[wrt]
    out_shape = np.broadcast_shapes(X.shape, Y.shape)
    other = np.broadcast_to((Y, X)[wrt], out_shape)
    T = np.zeros(out_shape + A.shape)
    pad = len(out_shape) - A.ndim
    for m in itertools.product(*map(range, out_shape)):
        n = tuple(0 if A.shape[k] == 1 else m[pad + k] for k in range(A.ndim))
        T[m + n] += other[m]
    return T


MULTIPLY_SHAPES = [((3, 4), (3, 4)), ((3, 4), ()), ((), (3, 4)), ((3, 1), (1, 4)), ((4,), (3, 4)),
                   ((2, 1, 3), (4, 1)), ((), ()), ((1,), (3,))]


@pytest.mark.parametrize("sx, sy", MULTIPLY_SHAPES, ids=str)
def test_multiply_broadcasts_like_numpy(sx, sy):
    rng = _rng(9)
    X, Y = rng.standard_normal(sx), rng.standard_normal(sy)
    v = tj.multiply(X, Y)
    np.testing.assert_array_equal(v, np.multiply(X, Y))
    out_shape = np.broadcast_shapes(sx, sy)
    for wrt in (0, 1):
        want = _multiply_reference(X, Y, wrt)
        np.testing.assert_allclose(tj.jacobian(tj.multiply, X, Y, wrt=wrt), want, rtol=1e-15)
        np.testing.assert_allclose(tj.jacobian(lambda a, b: a * b, X, Y, wrt=wrt), want, rtol=1e-15)
        # products with the same Jacobian, contracted by einsum
        n_out, n_in = len(out_shape), (X, Y)[wrt].ndim
        G = rng.standard_normal((2, *out_shape))
        V = rng.standard_normal((2, *(X, Y)[wrt].shape))
        Jm = want.reshape(int(np.prod(out_shape)), -1)
        np.testing.assert_allclose(tj.vjp(tj.multiply, X, Y, cotangent=G, wrt=wrt).reshape(2, -1),
                                   G.reshape(2, -1) @ Jm, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(tj.jvp(tj.multiply, X, Y, tangent=V, wrt=wrt).reshape(2, -1),
                                   V.reshape(2, -1) @ Jm.T, rtol=1e-13, atol=1e-14)
        assert want.ndim == n_out + n_in


def test_multiply_with_python_scalars_and_keywords():
    X = np.array([[1.0, -2.0], [3.0, 0.5]])
    np.testing.assert_array_equal(tj.multiply(X, 2.5), X * 2.5)
    np.testing.assert_array_equal(tj.multiply(2.5, X), 2.5 * X)
    np.testing.assert_allclose(tj.jacobian(tj.multiply, X, 2.5, layout="diagonal"), np.full((2, 2), 2.5))
    np.testing.assert_allclose(tj.jacobian(tj.multiply, 2.5, X), X)  # d(c X)/dc = X
    np.testing.assert_allclose(tj.jacobian(tj.multiply, X=X, Y=3.0, wrt="Y"), X)
    np.testing.assert_allclose(tj.grad(tj.multiply, 3, 4.0), 4.0)
    assert tj.jacobian(tj.multiply, 3, 4).dtype == np.float64  # integers count as float64
    with pytest.raises(ValueError, match="broadcast"):
        tj.multiply(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="diagonal"):  # a broadcast Jacobian is not diagonal
        tj.jacobian(tj.multiply, np.ones((3, 1)), np.ones(3), layout="diagonal")


# ============================================================================ the non-finite policy


LOG, SQRT = "log", "sqrt"
# name -> (call, which function it differentiates: log' = 1/x, sqrt' = 1/(2 sqrt(x)); both infinite at 0)
INFINITE_DERIVATIVE = {
    "jacobian op": (lambda x: tj.jacobian(tj.log, x), LOG),
    "jacobian op diagonal": (lambda x: tj.jacobian(tj.sqrt, x, layout="diagonal"), SQRT),
    "jacobian composite": (lambda x: tj.jacobian(lambda x: np.log(x), x), LOG),
    "jacobian composite chain": (lambda x: tj.jacobian(lambda x: np.sqrt(x) * 2.0 + 1.0, x) / 2.0, SQRT),
    "value_and_jacobian": (lambda x: tj.value_and_jacobian(lambda x: np.sqrt(x), x)[1], SQRT),
    "grad op": (lambda x: np.array([tj.grad(tj.sqrt, v) for v in x]), SQRT),
    "grad composite": (lambda x: tj.grad(lambda x: np.sum(np.log(x)), x), LOG),
    "vjp op": (lambda x: tj.vjp(tj.sqrt, x, cotangent=np.ones(x.shape)), SQRT),
    "vjp composite": (lambda x: tj.vjp(lambda x: np.log(x), x, cotangent=np.ones(x.shape)), LOG),
    "jvp op": (lambda x: tj.jvp(tj.log, x, tangent=np.ones(x.shape)), LOG),
    "jvp composite": (lambda x: tj.jvp(lambda x: np.sqrt(x), x, tangent=np.ones(x.shape)), SQRT),
    "fd.jacobian": (lambda x: tj.fd.jacobian(np.log, x), LOG),
}


@pytest.mark.parametrize("name", list(INFINITE_DERIVATIVE))
def test_nonfinite_warning_where_the_derivative_is_infinite(name):
    call, _ = INFINITE_DERIVATIVE[name]
    with warnings.catch_warnings(record=True) as rec, np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("always")
        res = call(np.array([0.0, 4.0]))
    assert not np.isfinite(res).all()  # IEEE results: nothing replaced
    hits = _nonfinite(rec)
    assert hits, f"no NonFiniteWarning; got {[str(w.message) for w in rec]}"
    assert all(w.filename == __file__ for w in hits), [w.filename for w in hits]  # points at the caller


@pytest.mark.parametrize("name", list(INFINITE_DERIVATIVE))
def test_no_nonfinite_warning_at_a_finite_point(name):
    call, fn = INFINITE_DERIVATIVE[name]
    x = np.array([0.25, 4.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning at all fails
        res = call(x)
    assert np.isfinite(res).all()
    want = 1 / x if fn == LOG else 0.5 / np.sqrt(x)
    np.testing.assert_allclose(np.diagonal(res) if res.ndim == 2 else res, want, rtol=1e-8)
    if res.ndim == 2:
        np.testing.assert_array_equal(res - np.diag(np.diagonal(res)), 0.0)


def test_nonfinite_warning_class():
    assert issubclass(NonFiniteWarning, RuntimeWarning)
    assert tj.fd.NonFiniteWarning is NonFiniteWarning
    assert tj.NonFiniteWarning is NonFiniteWarning
    # an infinite input is reported too, and an error filter turns it into an exception
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteWarning)
        with pytest.raises(NonFiniteWarning):
            tj.jacobian(tj.exp, np.array([np.inf, 0.0]), layout="diagonal")


# ============================================================================ the namespace


def test_import_leaks_no_names():
    public = [n for n in dir(tj) if not n.startswith("_")]
    assert "annotations" not in dir(tj)
    leaked = [n for n in public if n not in tj.__all__ and not isinstance(getattr(tj, n), types.ModuleType)]
    assert leaked == []
    assert all(hasattr(tj, n) for n in tj.__all__)
    assert len(set(tj.__all__)) == len(tj.__all__)
    # tj.fd shows exactly its public names
    assert [n for n in dir(tj.fd) if not n.startswith("_")] == sorted(tj.fd.__all__)
    for name in ("np", "os", "sys", "annotations"):
        assert not hasattr(tj.fd, name), name
    # every op of the catalogue is public
    assert set(tj.CATALOGUE) <= set(tj.__all__)


def test_testing_namespace_leaks_no_names():
    assert [n for n in dir(tj.testing) if not n.startswith("_")] == sorted(tj.testing.__all__)
