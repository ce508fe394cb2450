"""Batched VJPs and JVPs of every op: against dense Jacobians contracted with tensordot,
closed-form structured formulas, the adjoint identity, thread-count reproducibility,
memory layouts, random shapes (zero-size and 0-d included), dtypes and errors."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import tensorjac as tj
from conftest import (
    CASE_IDS,
    CASES,
    ELEMENTWISE,
    ELEMENTWISE_REF,
    HOLO_CASES,
    HOLO_IDS,
    VIEW_KINDS,
    as_view,
    assert_close,
    make_args,
    op_of,
    ref_tensor,
    tol,
)
from hypothesis import given, settings
from hypothesis import strategies as st

HYP = settings(max_examples=30, deadline=None, derandomize=True, database=None)
BATCHES = [(), (3,), (2, 3)]


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _rand(rng, shape, dtype=np.float64):
    dtype = np.dtype(dtype)
    x = rng.standard_normal(shape)
    if dtype.kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def _contract_vjp(G, J, P):
    """sum over the output axes: G (*batch, *out) with T (*out, *in)."""
    nb = G.ndim - P
    return np.tensordot(G, J, axes=(list(range(nb, G.ndim)), list(range(P))))


def _contract_jvp(V, J, P, R):
    nb = V.ndim - R
    return np.tensordot(V, J, axes=(list(range(nb, V.ndim)), list(range(P, P + R))))


def _shapes(name, args, wrt):
    out = np.shape(op_of(name)(*args))
    return out, np.shape(args[wrt])


# ----------------------------------------------------------------------------- against the dense Jacobian


@pytest.mark.parametrize("batch", BATCHES, ids=["unbatched", "b3", "b2x3"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("name", "wrt"), CASES, ids=CASE_IDS)
def test_matches_dense_jacobian(name, wrt, dtype, batch):
    op = op_of(name)
    args = make_args(name, dtype)
    out, inn = _shapes(name, args, wrt)
    rng = _rng(7)
    G, V = _rand(rng, batch + out, dtype), _rand(rng, batch + inn, dtype)
    vj = tj.vjp(op, *args, cotangent=G, wrt=wrt)
    jv = tj.jvp(op, *args, tangent=V, wrt=wrt)
    assert vj.shape == batch + inn and jv.shape == batch + out
    assert vj.dtype == dtype and jv.dtype == dtype
    # the library's dense Jacobian and the independent einsum construction of conftest
    J64 = ref_tensor(name, args, wrt)
    Jtj = op.jacobian(*[a.astype(np.float64) for a in args], wrt=wrt)
    G64, V64 = G.astype(np.float64), V.astype(np.float64)
    for J in (J64, Jtj):
        assert_close(vj, _contract_vjp(G64, J, len(out)), **tol(dtype))
        assert_close(jv, _contract_jvp(V64, J, len(out), len(inn)), **tol(dtype))
    # the methods are the same functions
    np.testing.assert_array_equal(op.vjp(*args, cotangent=G, wrt=wrt), vj)
    np.testing.assert_array_equal(op.jvp(*args, tangent=V, wrt=wrt), jv)


@pytest.mark.parametrize(("name", "wrt"), HOLO_CASES, ids=HOLO_IDS)
def test_complex_holomorphic_plain_transpose(name, wrt):
    """complex128: vjp(G) = G^T J with no conjugation, jvp(V) = J V."""
    op = op_of(name)
    args = make_args(name, np.complex128)
    out, inn = _shapes(name, args, wrt)
    rng = _rng(3)
    G, V = _rand(rng, (2,) + out, np.complex128), _rand(rng, (2,) + inn, np.complex128)
    J = ref_tensor(name, args, wrt)
    vj = tj.vjp(op, *args, cotangent=G, wrt=wrt)
    jv = tj.jvp(op, *args, tangent=V, wrt=wrt)
    assert vj.dtype == jv.dtype == np.complex128
    assert_close(vj, _contract_vjp(G, J, len(out)), rtol=1e-10)
    assert_close(jv, _contract_jvp(V, J, len(out), len(inn)), rtol=1e-10)


@pytest.mark.parametrize(("name", "wrt"), CASES, ids=CASE_IDS)
def test_complex_vectors_real_op(name, wrt):
    """A complex cotangent/tangent through a real Jacobian: the linear map applied to re and im."""
    op = op_of(name)
    args = make_args(name)
    out, inn = _shapes(name, args, wrt)
    rng = _rng(4)
    G, V = _rand(rng, (2,) + out, np.complex128), _rand(rng, (2,) + inn, np.complex128)
    vj = tj.vjp(op, *args, cotangent=G, wrt=wrt)
    jv = tj.jvp(op, *args, tangent=V, wrt=wrt)
    assert vj.dtype == jv.dtype == np.complex128
    for part in (np.real, np.imag):
        assert_close(part(vj), tj.vjp(op, *args, cotangent=part(G), wrt=wrt), rtol=1e-12)
        assert_close(part(jv), tj.jvp(op, *args, tangent=part(V), wrt=wrt), rtol=1e-12)


@pytest.mark.parametrize(("name", "wrt"), CASES, ids=CASE_IDS)
def test_adjoint_identity(name, wrt):
    """<vjp(G), V> == <G, jvp(V)> on random data, per batch entry."""
    op = op_of(name)
    args = make_args(name, seed=5)
    out, inn = _shapes(name, args, wrt)
    rng = _rng(11)
    G, V = _rand(rng, (4,) + out), _rand(rng, (4,) + inn)
    vj = tj.vjp(op, *args, cotangent=G, wrt=wrt)
    jv = tj.jvp(op, *args, tangent=V, wrt=wrt)
    lhs = (vj * V).reshape(4, -1).sum(axis=1)
    rhs = (G * jv).reshape(4, -1).sum(axis=1)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-11, atol=1e-11 * max(1.0, np.abs(lhs).max()))


# ----------------------------------------------------------------------------- structured closed forms


def test_sandwich_closed_forms():
    rng = _rng(1)
    A, X, B = rng.standard_normal((5, 4)), rng.standard_normal((4, 6)), rng.standard_normal((6, 3))
    G, V = rng.standard_normal((7, 5, 3)), rng.standard_normal((7, 4, 6))
    assert_close(tj.vjp(tj.sandwich, A, X, B, cotangent=G, wrt=1), A.T @ G @ B.T, rtol=1e-12)
    assert_close(tj.jvp(tj.sandwich, A, X, B, tangent=V, wrt=1), A @ V @ B, rtol=1e-12)
    assert_close(tj.vjp(tj.sandwich, A, X, B, cotangent=G, wrt=0), G @ (X @ B).T, rtol=1e-12)
    assert_close(tj.vjp(tj.sandwich, A, X, B, cotangent=G, wrt="B"), (A @ X).T @ G, rtol=1e-12)
    # both association orders of the BLAS path (tall and wide shapes)
    A2, B2 = rng.standard_normal((2, 4)), rng.standard_normal((6, 9))
    G2 = rng.standard_normal((3, 2, 9))
    assert_close(tj.vjp(tj.sandwich, A2, X, B2, cotangent=G2, wrt=1), A2.T @ G2 @ B2.T, rtol=1e-12)
    A3, B3 = rng.standard_normal((9, 4)), rng.standard_normal((6, 2))
    G3 = rng.standard_normal((3, 9, 2))
    assert_close(tj.vjp(tj.sandwich, A3, X, B3, cotangent=G3, wrt=1), A3.T @ G3 @ B3.T, rtol=1e-12)


def test_kron_closed_forms():
    rng = _rng(2)
    (m, n), (p, q) = (3, 5), (4, 2)
    A, B = rng.standard_normal((m, n)), rng.standard_normal((p, q))
    G = rng.standard_normal((6, m * p, n * q))
    G5 = G.reshape(6, m, p, n, q)
    assert_close(tj.vjp(tj.kron, A, B, cotangent=G), np.einsum("bikjl,kl->bij", G5, B), rtol=1e-12)
    assert_close(tj.vjp(tj.kron, A, B, cotangent=G, wrt=1), np.einsum("bikjl,ij->bkl", G5, A), rtol=1e-12)
    VA, VB = rng.standard_normal((6, m, n)), rng.standard_normal((6, p, q))
    np.testing.assert_array_equal(tj.jvp(tj.kron, A, B, tangent=VA), [np.kron(v, B) for v in VA])
    np.testing.assert_array_equal(tj.jvp(tj.kron, A, B, tangent=VB, wrt=1), [np.kron(A, v) for v in VB])


def test_inv_det_logdet_elementwise_closed_forms():
    rng = _rng(3)
    X = rng.standard_normal((4, 4)) + 4 * np.eye(4)
    Xi = np.linalg.inv(X)
    G, V = rng.standard_normal((5, 4, 4)), rng.standard_normal((5, 4, 4))
    assert_close(tj.vjp(tj.inv, X, cotangent=G), -Xi.T @ G @ Xi.T, rtol=1e-12)
    assert_close(tj.jvp(tj.inv, X, tangent=V), -Xi @ V @ Xi, rtol=1e-12)
    g = rng.standard_normal(5)
    assert_close(tj.vjp(tj.det, X, cotangent=g), g[:, None, None] * np.linalg.det(X) * Xi.T, rtol=1e-12)
    assert_close(tj.vjp(tj.logdet, X, cotangent=g), g[:, None, None] * Xi.T, rtol=1e-12)
    assert_close(tj.jvp(tj.logdet, X, tangent=V), np.einsum("bij,ji->b", V, Xi), rtol=1e-12)
    for name in ELEMENTWISE:
        x = np.abs(rng.standard_normal((3, 4))) + 0.2
        np.testing.assert_allclose(
            tj.vjp(op_of(name), x, cotangent=G[:, :3]), G[:, :3] * ELEMENTWISE_REF[name][1](x), rtol=1e-13
        )


# ----------------------------------------------------------------------------- threads


@pytest.mark.parametrize(("name", "wrt"), CASES, ids=CASE_IDS)
def test_bitwise_threads_small(name, wrt):
    op = op_of(name)
    args = make_args(name)
    out, inn = _shapes(name, args, wrt)
    rng = _rng(9)
    G, V = _rand(rng, (5,) + out), _rand(rng, (5,) + inn)
    for f, kw in ((tj.vjp, {"cotangent": G}), (tj.jvp, {"tangent": V})):
        ref = f(op, *args, wrt=wrt, num_threads=1, **kw)
        np.testing.assert_array_equal(f(op, *args, wrt=wrt, num_threads=2, **kw), ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
def test_bitwise_threads_large(dtype):
    """Sizes above the parallel grain, with thread blocks ending mid-row."""
    rng = _rng(10)
    A, B = _rand(rng, (5, 7), dtype), _rand(rng, (9, 6), dtype)
    G = _rand(rng, (31, 45, 42), dtype)
    VA, VB = _rand(rng, (31, 5, 7), dtype), _rand(rng, (31, 9, 6), dtype)
    X = _rand(rng, (3001, 13), dtype)
    calls = [
        lambda nt: tj.vjp(tj.kron, A, B, cotangent=G, wrt=0, num_threads=nt),
        lambda nt: tj.vjp(tj.kron, A, B, cotangent=G, wrt=1, num_threads=nt),
        lambda nt: tj.jvp(tj.kron, A, B, tangent=VA, wrt=0, num_threads=nt),
        lambda nt: tj.jvp(tj.kron, A, B, tangent=VB, wrt=1, num_threads=nt),
        lambda nt: tj.vjp(tj.multiply, X[0], X[1], cotangent=X, num_threads=nt),
    ]
    if dtype != np.complex128:
        calls.append(lambda nt: tj.jvp(tj.tanh, X[0], tangent=X, num_threads=nt))
    # fewer output rows than threads: the split falls inside one row
    A1, B1, G1 = _rand(rng, (1, 601), dtype), _rand(rng, (8, 9), dtype), _rand(rng, (8, 601 * 9), dtype)
    calls.append(lambda nt: tj.vjp(tj.kron, A1, B1, cotangent=G1, wrt=0, num_threads=nt))
    A2, B2, G2 = _rand(rng, (60, 70), dtype), _rand(rng, (1, 9), dtype), _rand(rng, (60, 630), dtype)
    calls.append(lambda nt: tj.vjp(tj.kron, A2, B2, cotangent=G2, wrt=1, num_threads=nt))
    for call in calls:
        ref = call(1)
        for nt in (2, 3):
            np.testing.assert_array_equal(call(nt), ref)
    # and the parallel kron VJP is right, not only reproducible
    G5 = G.reshape(31, 5, 9, 7, 6).astype(np.complex128)
    assert_close(calls[0](2), np.einsum("bikjl,kl->bij", G5, B), **tol(dtype))
    assert_close(calls[1](2), np.einsum("bikjl,ij->bkl", G5, A), **tol(dtype))
    assert_close(calls[-2](2), np.einsum("kjl,kl->j", G1.reshape(8, 601, 9).astype(complex), B1)[None],
                 **tol(dtype))  # fmt: skip
    assert_close(calls[-1](2), np.einsum("ijl,ij->l", G2.reshape(60, 70, 9).astype(complex), A2)[None],
                 **tol(dtype))  # fmt: skip


def test_complex64_kernels():
    rng = _rng(14)
    A, B = _rand(rng, (3, 4), np.complex64), _rand(rng, (2, 5), np.complex64)
    G = _rand(rng, (2, 6, 20), np.complex64)
    got = tj.vjp(tj.kron, A, B, cotangent=G, wrt=1)
    assert got.dtype == np.complex64
    want = np.einsum("bikjl,ij->bkl", G.reshape(2, 3, 2, 4, 5).astype(complex), A)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    got = tj.jvp(tj.exp, A, tangent=G[:, :3, :4])
    assert got.dtype == np.complex64
    np.testing.assert_allclose(got, G[:, :3, :4] * np.exp(A), rtol=1e-6)


def test_default_threads_setting_is_used():
    rng = _rng(12)
    A, B = rng.standard_normal((5, 7)), rng.standard_normal((9, 6))
    G = rng.standard_normal((31, 45, 42))
    ref = tj.vjp(tj.kron, A, B, cotangent=G, num_threads=1)
    tj.set_num_threads(2)
    np.testing.assert_array_equal(tj.vjp(tj.kron, A, B, cotangent=G), ref)


# ----------------------------------------------------------------------------- never the dense Jacobian


@pytest.mark.parametrize(
    ("name", "args", "wrt"),
    [
        ("kron", ((24, 24), (24, 24)), 0),
        ("kron", ((24, 24), (24, 24)), 1),
        ("sandwich", ((96, 96), (96, 96), (96, 96)), 1),
        ("inv", ((96, 96),), 0),
        ("matmul", ((96, 96), (96, 96)), 0),
        ("exp", ((96, 96),), 0),
        ("transpose", ((96, 96),), 0),
        ("outer", ((300,), (30, 10)), 1),
        ("multiply", ((96, 96), (96, 96)), 1),
    ],
)
def test_no_dense_jacobian(name, args, wrt):
    """Peak memory stays far below the dense Jacobian's size (>= 100 MB here)."""
    op = op_of(name)
    rng = _rng(13)
    arrs = [rng.standard_normal(s) + (s[0] * np.eye(s[0]) if name == "inv" else 0) for s in args]
    out, inn = _shapes(name, arrs, wrt)
    dense = np.prod(out + inn, dtype=np.int64) * 8
    G, V = rng.standard_normal((2,) + out), rng.standard_normal((2,) + inn)
    tj.vjp(op, *arrs, cotangent=G, wrt=wrt)  # warm caches
    tracemalloc.start()
    try:
        tj.vjp(op, *arrs, cotangent=G, wrt=wrt)
        tj.jvp(op, *arrs, tangent=V, wrt=wrt)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert dense > 1e8
    assert peak < max(20 * (G.nbytes + V.nbytes), 1 << 20), (peak, dense)


# ----------------------------------------------------------------------------- memory layouts and shapes


@HYP
@given(case=st.sampled_from(CASES), kv=st.sampled_from(VIEW_KINDS), ka=st.sampled_from(VIEW_KINDS),
       batch=st.sampled_from(BATCHES), seed=st.integers(0, 2**31))  # fmt: skip
def test_views(case, kv, ka, batch, seed):
    """Fortran, strided, negative-stride and transposed inputs and vectors."""
    name, wrt = case
    op = op_of(name)
    args = make_args(name, seed=seed % 7)
    out, inn = _shapes(name, args, wrt)
    rng = _rng(seed)
    G, V = _rand(rng, batch + out), _rand(rng, batch + inn)
    vargs = tuple(as_view(a, ka) for a in args)
    J = ref_tensor(name, args, wrt)
    got = tj.vjp(op, *vargs, cotangent=as_view(G, kv), wrt=wrt)
    assert_close(got, _contract_vjp(G, J, len(out)), rtol=1e-12)
    got = tj.jvp(op, *vargs, tangent=as_view(V, kv), wrt=wrt)
    assert_close(got, _contract_jvp(V, J, len(out), len(inn)), rtol=1e-12)


dims = st.integers(0, 3)
ranks = st.lists(dims, min_size=0, max_size=3).map(tuple)


@st.composite
def op_and_args(draw):
    """An op and arguments of random shapes (zero-size and 0-d included)."""
    name = draw(st.sampled_from(sorted(tj.CATALOGUE)))
    seed = draw(st.integers(0, 2**31))
    r = _rng(seed)
    if name in ELEMENTWISE + ("transpose", "sum", "norm"):
        x = r.standard_normal(draw(ranks))
        args = (np.abs(x) + 0.2 if name in ("log", "sqrt") else x,)
    elif name == "multiply":
        s = draw(ranks)
        args = (r.standard_normal(s), r.standard_normal(s))
    elif name == "matmul":
        n, k, m = draw(dims), draw(dims), draw(dims)
        args = (r.standard_normal((n, k) if draw(st.booleans()) else (k,)),
                r.standard_normal((k, m) if draw(st.booleans()) else (k,)))  # fmt: skip
    elif name == "sandwich":
        i, k, l, j = (draw(dims) for _ in range(4))
        args = (r.standard_normal((i, k)), r.standard_normal((k, l)), r.standard_normal((l, j)))
    elif name == "kron":
        args = (r.standard_normal((draw(dims), draw(dims))), r.standard_normal((draw(dims), draw(dims))))
    elif name == "outer":
        args = (r.standard_normal(draw(st.lists(dims, max_size=2).map(tuple))),
                r.standard_normal(draw(st.lists(dims, max_size=2).map(tuple))))  # fmt: skip
    elif name == "trace":
        args = (r.standard_normal((draw(dims), draw(dims))),)
    elif name == "dot":
        n = draw(dims)
        args = (r.standard_normal(n), r.standard_normal(n))
    elif name == "quadratic":
        n = draw(dims)
        args = (r.standard_normal(n), r.standard_normal((n, n)))
    else:  # inv, det, logdet
        n = draw(dims)
        args = (r.standard_normal((n, n)) + (n + 1) * np.eye(n),)
    wrt = draw(st.integers(0, len(args) - 1))
    batch = draw(st.lists(st.integers(0, 3), max_size=2).map(tuple))
    return name, args, wrt, batch, seed


@HYP
@given(case=op_and_args())
def test_random_shapes(case):
    name, args, wrt, batch, seed = case
    op = op_of(name)
    out, inn = _shapes(name, args, wrt)
    rng = _rng(seed + 1)
    G, V = rng.standard_normal(batch + out), rng.standard_normal(batch + inn)
    J = ref_tensor(name, args, wrt)
    vj = tj.vjp(op, *args, cotangent=G, wrt=wrt)
    jv = tj.jvp(op, *args, tangent=V, wrt=wrt)
    assert vj.shape == batch + inn and jv.shape == batch + out
    assert_close(vj, _contract_vjp(G, J, len(out)), rtol=1e-12)
    assert_close(jv, _contract_jvp(V, J, len(out), len(inn)), rtol=1e-12)


def test_zero_d_and_scalars():
    x = np.float64(0.5)
    np.testing.assert_allclose(tj.vjp(tj.exp, x, cotangent=2.0), 2 * np.exp(0.5))
    assert tj.vjp(tj.exp, x, cotangent=2.0).shape == ()
    np.testing.assert_allclose(tj.jvp(tj.sin, x, tangent=[1.0, 2.0]), [np.cos(0.5), 2 * np.cos(0.5)])
    X = np.arange(6.0).reshape(2, 3)
    want = [np.ones((2, 3)), 3 * np.ones((2, 3))]
    np.testing.assert_array_equal(tj.vjp(tj.sum, X, cotangent=[1.0, 3.0]), want)
    assert tj.vjp(tj.sum, X, cotangent=np.zeros((0,))).shape == (0, 2, 3)


def test_integer_inputs_are_float64():
    A, B = np.arange(6).reshape(2, 3), np.arange(6).reshape(3, 2)
    G = np.ones((2, 2), dtype=np.int32)
    r = tj.vjp(tj.matmul, A, B, cotangent=G)
    assert r.dtype == np.float64
    np.testing.assert_array_equal(r, G @ B.T)
    assert tj.jvp(tj.matmul, A, B, tangent=np.ones((2, 3), np.int64)).dtype == np.float64
    # one dtype rule for the package: integers count as float64, so they promote float32 like float64 does
    assert tj.vjp(tj.exp, np.ones(3, np.float32), cotangent=np.ones(3, np.int64)).dtype == np.float64
    assert tj.vjp(tj.exp, np.ones(3, np.float32), cotangent=np.ones(3)).dtype == np.float64


def test_result_never_aliases_the_vector():
    X = np.arange(6.0).reshape(2, 3)
    G = np.arange(6.0).reshape(3, 2)
    r = tj.vjp(tj.transpose, X, cotangent=G)
    r[...] = -1
    np.testing.assert_array_equal(G, np.arange(6.0).reshape(3, 2))


# ----------------------------------------------------------------------------- errors


def test_cotangent_shape_error_names_both_shapes():
    A, B = np.ones((2, 3)), np.ones((3, 4))
    with pytest.raises(ValueError, match=r"cotangent has shape \(5, 2, 3\).*output shape \(2, 4\)"):
        tj.vjp(tj.matmul, A, B, cotangent=np.ones((5, 2, 3)))
    with pytest.raises(ValueError, match=r"tangent has shape \(4, 3\).*input 'B' shape \(3, 4\)"):
        tj.jvp(tj.matmul, A, B, tangent=np.ones((4, 3)), wrt=1)
    with pytest.raises(ValueError, match=r"cotangent has shape \(4,\).*output shape \(2, 4\)"):
        tj.vjp(tj.matmul, A, B, cotangent=np.ones(4))


def test_other_errors():
    with pytest.raises(TypeError, match="tj.fd.jacobian"):
        tj.vjp(np.fft.fft, np.ones(3), cotangent=np.ones(3))
    with pytest.raises(TypeError, match="tj.fd.jacobian"):
        tj.jvp(lambda x: np.fft.fft(x), np.ones(3), tangent=np.ones(3))
    with pytest.raises(ValueError, match="broadcast"):
        tj.vjp(tj.multiply, np.ones(3), np.ones(4), cotangent=np.ones(3))
    with pytest.raises(IndexError):
        tj.vjp(tj.exp, np.ones(3), cotangent=np.ones(3), wrt=1)
    with pytest.raises(TypeError, match="non-numeric"):
        tj.vjp(tj.exp, np.ones(3), cotangent=np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match="num_threads"):
        tj.vjp(tj.exp, np.ones(3), cotangent=np.ones(3), num_threads=0)
    with pytest.raises(TypeError, match="not holomorphic"):
        tj.vjp(tj.abs, np.ones(3, complex), cotangent=np.ones(3))
    with pytest.raises(TypeError, match="takes 2"):
        tj.vjp(tj.matmul, np.ones((2, 2)), cotangent=np.ones((2, 2)))
    with pytest.raises(np.linalg.LinAlgError):
        tj.vjp(tj.inv, np.zeros((2, 2)), cotangent=np.ones((2, 2)))
