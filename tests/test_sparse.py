"""Sparse Jacobians and Hessians (format="coo"/"csr"/"csc"): scipy.sparse arrays built from the terms.

Every result is checked against an independent reference (Richardson differences, the catalogue's
einsum closed forms, hand formulas), and its storage is checked to be what scipy calls canonical
when tensorjac says it is (sorted indices, no duplicates), since a wrong flag would silently break
scipy's own algorithms.
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
import tensorjac as tj
from composite_cases import CASE_WRT, CASE_WRT_IDS, FD_RTOL, assert_close, reference
from conftest import CASE_IDS, CASES, make_args, op_of, ref_tensor, to_layout

sp = pytest.importorskip("scipy.sparse")

FORMATS = ("csr", "csc", "coo")
rng = np.random.default_rng(11)


def assert_canonical(A) -> None:
    """The storage scipy would produce itself: sorted, duplicate-free (and claimed so truthfully)."""
    if A.format == "coo":
        assert A.has_canonical_format
        B = sp.coo_array((A.data.copy(), tuple(c.copy() for c in A.coords)), shape=A.shape)
        B.has_canonical_format = False
        B.sum_duplicates()  # sorts (row-major) and merges duplicates
        assert B.nnz == A.nnz
        for a, b in zip(A.coords, B.coords):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(A.data, B.data)
        return
    assert A.has_canonical_format and A.has_sorted_indices
    B = type(A)((A.data.copy(), A.indices.copy(), A.indptr.copy()), shape=A.shape)
    B.has_canonical_format = False
    B.has_sorted_indices = False
    B.sum_duplicates()
    assert B.nnz == A.nnz
    np.testing.assert_array_equal(A.indices, B.indices)
    np.testing.assert_array_equal(A.indptr, B.indptr)
    np.testing.assert_array_equal(A.data, B.data)


def _fmt_for(i: int) -> str:
    return FORMATS[i % 3]


# ----------------------------------------------------------------------------- the op catalogue


@pytest.mark.parametrize("layout", ["matrix", "vec"])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("name", "w"), CASES, ids=CASE_IDS)
def test_ops_match_the_einsum_closed_forms(name, w, fmt, layout):
    args = make_args(name)
    T = ref_tensor(name, args, w)
    out_shape = np.shape(op_of(name)(*args))
    want = to_layout(T, out_shape, args[w].shape, layout)
    A = tj.jacobian(op_of(name), *args, wrt=w, layout=layout, format=fmt)
    assert isinstance(A, sp.sparray) and A.format == fmt and A.shape == want.shape
    assert A.dtype == np.float64
    np.testing.assert_allclose(A.toarray(), want, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(want).max()))
    assert_canonical(A)
    # the same result through a traced function (the same rule, reached from numpy code)
    B = tj.jacobian(lambda *a: op_of(name)(*a), *args, wrt=w, layout=layout, format=fmt)
    np.testing.assert_array_equal(B.toarray(), A.toarray())


# ----------------------------------------------------------------------------- composites


@pytest.mark.parametrize(("case", "w"), CASE_WRT, ids=CASE_WRT_IDS)
def test_composites_match_finite_differences(case, w):
    i = CASE_WRT.index((case, w))
    fmt, layout = _fmt_for(i), ("matrix", "vec")[(i // 3) % 2]
    args = case.args()
    out_shape, T_fd, _ = reference(case.name, w)
    want = to_layout(T_fd, out_shape, np.shape(args[w]), layout)
    copies = [np.array(a, copy=True) for a in args]
    A = tj.jacobian(case.f, *args, wrt=w, layout=layout, format=fmt)
    assert A.format == fmt and A.shape == want.shape
    assert_close(A.toarray(), want, FD_RTOL)
    assert_canonical(A)
    for a, c in zip(args, copies):
        np.testing.assert_array_equal(a, c)


def test_the_pattern_is_the_structure():
    """Only structural nonzeros are stored: a diagonal has n entries, a Kronecker factor's pattern
    is one entry per output entry, and a dense dependence stores everything."""
    X, Y = rng.standard_normal((30, 40)), rng.standard_normal((30, 40))
    A = tj.jacobian(lambda X: np.tanh(X * Y), X, layout="matrix", format="csr")
    assert A.nnz == X.size
    np.testing.assert_allclose(A.diagonal(), (Y / np.cosh(X * Y) ** 2).ravel(), rtol=1e-12)
    P, Q = rng.standard_normal((6, 5)), rng.standard_normal((4, 3))
    K = tj.jacobian(tj.kron, P, Q, wrt=0, layout="matrix", format="coo")
    assert K.nnz == P.size * Q.size
    dense = tj.jacobian(lambda X: np.linalg.inv(X + 5 * np.eye(4)), rng.standard_normal((4, 4)),
                        layout="matrix", format="csc")
    assert dense.nnz == 16 * 16


def test_kron_values_by_hand():
    """d kron(P, Q)[(i,k), (j,l)] / dP[i, j] = Q[k, l]: every stored entry, read off its coordinates."""
    P, Q = rng.standard_normal((3, 2)), rng.standard_normal((4, 5))
    K = tj.jacobian(tj.kron, P, Q, wrt=0, layout="matrix", format="coo")
    rows, cols = K.coords
    orow, ocol = np.divmod(rows, P.shape[1] * Q.shape[1])  # the output kron(P, Q) is (12, 10), row-major
    (pi, qk), (pj, ql) = np.divmod(orow, Q.shape[0]), np.divmod(ocol, Q.shape[1])
    np.testing.assert_array_equal(cols, pi * P.shape[1] + pj)
    np.testing.assert_array_equal(K.data, Q[qk, ql])
    assert K.nnz == P.size * Q.size


def test_overlapping_terms_are_added():
    """X + X.T has two delta terms meeting on the diagonal: the diagonal entries are 2, stored once."""
    X = rng.standard_normal((5, 5))
    for fmt in FORMATS:
        A = tj.jacobian(lambda X: X + X.T, X, layout="matrix", format=fmt)
        want = np.eye(25) + np.eye(25)[[j * 5 + i for i in range(5) for j in range(5)]]
        np.testing.assert_array_equal(A.toarray(), want)
        assert_canonical(A)
        assert A.nnz == 25 + 25 - 5


def test_huge_sparse_results_within_the_budget():
    """A Jacobian whose dense form is 7.3 TiB, at 16 bytes per nonzero, under a 64 MiB budget."""
    X, Y = rng.standard_normal((1000, 1000)), rng.standard_normal((1000, 1000))
    old = tj.get_memory_budget()
    try:
        tj.set_memory_budget("64M")
        A = tj.jacobian(tj.multiply, X, Y, layout="matrix", format="csr")
        assert A.shape == (10**6, 10**6) and A.nnz == 10**6
        np.testing.assert_array_equal(A.diagonal(), Y.ravel())
        assert A.indices.dtype == np.int32
        tj.set_memory_budget("8M")
        with pytest.raises(tj.JacobianTooLargeError, match=r"sparse csr Jacobian .* GiB"):
            tj.jacobian(tj.multiply, X, Y, layout="matrix", format="csr")
        with pytest.raises(tj.JacobianTooLargeError, match="GiB"):
            tj.jacobian(lambda X: np.tanh(X * Y), X, layout="vec", format="coo")
    finally:
        tj.set_memory_budget(old)


def test_dtypes_and_value_and_jacobian():
    x32 = rng.standard_normal(6).astype(np.float32)
    A = tj.jacobian(lambda x: np.sin(x) * 2, x32, layout="matrix", format="csr")
    assert A.dtype == np.float32
    np.testing.assert_allclose(A.toarray(), np.diag(2 * np.cos(x32)), rtol=1e-6)
    z = rng.standard_normal(4) + 1j * rng.standard_normal(4)
    C = tj.jacobian(lambda z: z * z, z, layout="matrix", format="coo")
    assert C.dtype == np.complex128
    np.testing.assert_allclose(C.toarray(), np.diag(2 * z), rtol=1e-14)
    I = tj.jacobian(lambda x: x * 3.0, np.arange(4), layout="matrix", format="csc")
    assert I.dtype == np.float64
    np.testing.assert_array_equal(I.toarray(), 3 * np.eye(4))
    v, J = tj.value_and_jacobian(lambda x: x**2, np.arange(3.0), layout="vec", format="csr")
    np.testing.assert_array_equal(v, [0.0, 1.0, 4.0])
    np.testing.assert_array_equal(J.toarray(), np.diag([0.0, 2.0, 4.0]))


def test_tuples_and_no_dependence():
    x, y = rng.standard_normal(3), rng.standard_normal(3)
    Jx, Jy = tj.jacobian(lambda x, y: x * y, x, y, wrt=(0, 1), layout="matrix", format="csr")
    np.testing.assert_array_equal(Jx.toarray(), np.diag(y))
    np.testing.assert_array_equal(Jy.toarray(), np.diag(x))
    Z = tj.jacobian(lambda x, y: np.sin(y), x, y, wrt=0, layout="matrix", format="coo")
    assert Z.shape == (3, 3) and Z.nnz == 0
    Kx, Ky = tj.jacobian(tj.multiply, x, y, wrt=(0, 1), layout="vec", format="csc")
    np.testing.assert_array_equal(Ky.toarray(), np.diag(x))


def test_nonfinite_values_warn():
    x = np.array([0.0, 1.0])
    with pytest.warns(tj.NonFiniteWarning):
        A = tj.jacobian(lambda x: np.sqrt(x), x, layout="matrix", format="csr")
    assert np.isinf(A.toarray()[0, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tj.jacobian(lambda x: np.sqrt(x), x + 1, layout="matrix", format="csr")


def test_bad_format_arguments():
    x = rng.standard_normal(3)
    with pytest.raises(ValueError, match="unknown format"):
        tj.jacobian(np.sin, x, layout="matrix", format="dok")
    with pytest.raises(ValueError, match="layout='matrix' or layout='vec'"):
        tj.jacobian(np.sin, x, format="csr")
    with pytest.raises(ValueError, match="layout='matrix' or layout='vec'"):
        tj.jacobian(tj.sin, x, layout="diagonal", format="csr")
    with pytest.raises(ValueError, match="batch_axis"):
        tj.jacobian(np.sin, x[None], layout="matrix", format="csr", batch_axis=0)
    with pytest.raises(ValueError, match="out="):
        tj.jacobian(np.sin, x, layout="matrix", format="csr", out=np.empty((3, 3)))
    with pytest.raises(ValueError, match="only format='coo'"):
        tj.hessian(lambda x: np.sin(x) * x, x, layout="matrix", format="csr")


def test_without_scipy_a_clear_import_error(monkeypatch):
    real = importlib.import_module

    def no_scipy(name, *a, **k):
        if name.startswith("scipy"):
            raise ImportError("No module named 'scipy'")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", no_scipy)
    with pytest.raises(ImportError, match=r"tensorjac\[sparse\]"):
        tj.jacobian(np.sin, np.ones(3), layout="matrix", format="csr")
    np.testing.assert_array_equal(tj.jacobian(np.sin, np.zeros(2), layout="matrix"), np.eye(2))


# ----------------------------------------------------------------------------- Hessians

HESSIANS = {
    "x A x": (lambda x, A: x @ A @ x, lambda: (rng.standard_normal(5), rng.standard_normal((5, 5)))),
    "logdet": (lambda S: np.linalg.slogdet(S)[1], lambda: (np.eye(4) * 4 + rng.standard_normal((4, 4)) * 0.3,)),
    "least squares": (lambda w, X, y: np.sum((X @ w - y) ** 2),
                      lambda: (rng.standard_normal(3), rng.standard_normal((6, 3)), rng.standard_normal(6))),
    "tanh regression": (lambda W, X, Y: np.sum((np.tanh(X @ W) - Y) ** 2),
                        lambda: (rng.standard_normal((3, 2)), rng.standard_normal((5, 3)), rng.standard_normal((5, 2)))),
    "separable": (lambda x: np.sum(np.sin(x) * x), lambda: (rng.standard_normal(7),)),
}


@pytest.mark.parametrize("layout", ["matrix", "vec"])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(HESSIANS))
def test_hessians_match_fd_and_are_symmetric(name, fmt, layout):
    f, make = HESSIANS[name]
    args = make()
    x = args[0]
    H = tj.hessian(f, *args, layout=layout, format=fmt)
    n = x.size
    assert H.format == fmt and H.shape == (n, n)
    D = H.toarray()
    np.testing.assert_array_equal(D, D.T)  # bitwise
    np.testing.assert_array_equal(D, tj.hessian(f, *args, layout=layout))  # the dense path, bitwise
    ref = tj.fd.hessian(lambda z: f(z, *args[1:]), x)  # tensor layout (x.shape + x.shape)
    if layout == "vec":
        order = np.arange(n).reshape(x.shape).ravel(order="F")
        ref = ref.reshape(n, n)[np.ix_(order, order)]
    np.testing.assert_allclose(D, ref.reshape(n, n), atol=1e-3 * max(1.0, np.abs(ref).max()))


def test_hessian_closed_forms_and_structure():
    A = rng.standard_normal((6, 6))
    H = tj.hessian(lambda x: x @ A @ x, rng.standard_normal(6), layout="matrix", format="csr")
    np.testing.assert_allclose(H.toarray(), A + A.T, rtol=1e-14)
    x = rng.standard_normal(50)
    S = tj.hessian(lambda x: np.sum(np.sin(x) * x), x, layout="matrix", format="csr")
    assert S.nnz == 50  # the separable Hessian is diagonal, and stored so
    np.testing.assert_allclose(S.diagonal(), 2 * np.cos(x) - x * np.sin(x), rtol=1e-13)


def test_vector_hessians_are_3d_coo_and_tuple_blocks():
    x = rng.standard_normal(4)
    f = lambda x: np.sin(x) * x.sum()
    H = tj.hessian(f, x, layout="matrix", format="coo")
    assert H.shape == (4, 4, 4) and H.format == "coo"
    D = tj.hessian(f, x, layout="matrix")
    np.testing.assert_array_equal(H.toarray(), D)
    g = lambda x, y: np.sum((x * y) ** 2) + np.sum(x**3)
    y = rng.standard_normal(4)
    blocks = tj.hessian(g, x, y, wrt=(0, 1), layout="matrix", format="csr")
    dense = tj.hessian(g, x, y, wrt=(0, 1), layout="matrix")
    for i in range(2):
        for j in range(2):
            assert blocks[i][j].format == "csr"
            np.testing.assert_array_equal(blocks[i][j].toarray(), dense[i][j])
    np.testing.assert_allclose(blocks[0][1].toarray(), np.diag(4 * x * y), rtol=1e-14)  # d2/dx dy (x y)^2


# ----------------------------------------------------------------------------- the C++ kernels' paths


@pytest.mark.parametrize(("case", "w"), CASE_WRT, ids=CASE_WRT_IDS)
def test_composites_match_the_dense_path(case, w):
    """Every composite's sparse Jacobian (each format, both layouts) against the engine's dense one."""
    i = CASE_WRT.index((case, w))
    layout = ("matrix", "vec")[i % 2]
    args = case.args()
    D = tj.jacobian(case.f, *args, wrt=w, layout=layout)
    for fmt in FORMATS:
        A = tj.jacobian(case.f, *args, wrt=w, layout=layout, format=fmt)
        assert A.format == fmt and A.dtype == D.dtype
        np.testing.assert_allclose(A.toarray(), D, rtol=1e-12, atol=1e-13 * max(1.0, np.abs(D).max(initial=0)))
        assert_canonical(A)


def _storage(A):
    return (A.data, *(A.coords if A.format == "coo" else (A.indices, A.indptr)))


LARGE = {  # above the kernels' parallel grain (2**15 entries), with transposed, broadcast and multi-factor terms
    "tanh(X * Y)": (lambda X, Y: np.tanh(X * Y), lambda X, Y: (Y / np.cosh(X * Y) ** 2).ravel()),
    "sin(X.T) * Y.T": (lambda X, Y: np.sin(X.T) * Y.T, None),
    "X * Y[0]": (lambda X, Y: X * Y[0], lambda X, Y: np.broadcast_to(Y[0], X.shape).ravel()),
    "exp(X) * Y * X": (lambda X, Y: np.exp(X) * Y * X, lambda X, Y: (np.exp(X) * Y * (X + 1)).ravel()),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(LARGE))
def test_large_results_are_bitwise_identical_for_any_thread_count(name, fmt):
    f, diag = LARGE[name]
    X, Y = rng.standard_normal((240, 180)), rng.standard_normal((240, 180))
    A1 = tj.jacobian(f, X, Y, layout="matrix", format=fmt, num_threads=1)
    A2 = tj.jacobian(f, X, Y, layout="matrix", format=fmt, num_threads=2)
    for a, b in zip(_storage(A1), _storage(A2)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert_canonical(A1)
    assert A1.nnz == X.size
    assert _storage(A1)[1].dtype == np.int32
    if diag is not None:
        want = diag(X, Y)
        np.testing.assert_allclose(A1.diagonal(), want, rtol=1e-12, atol=1e-14 * np.abs(want).max())
    else:  # d sin(X.T)[i, j] * Y.T[i, j] / dX[j, i]: the transposed diagonal
        rows = np.arange(X.size)
        i, j = np.divmod(rows, X.shape[0])
        want = sp.coo_array(((np.cos(X.T) * Y.T).ravel(), (rows, j * X.shape[1] + i)), shape=A1.shape)
        assert np.abs((A1 - want).tocoo().data).max(initial=0.0) <= 1e-14


@pytest.mark.parametrize("fmt", FORMATS)
def test_op_path_large_and_kron_bitwise_for_any_thread_count(fmt):
    X, Y = rng.standard_normal((200, 300)), rng.standard_normal((200, 300))
    A1 = tj.jacobian(tj.multiply, X, Y, layout="vec", format=fmt, num_threads=1)
    A2 = tj.jacobian(tj.multiply, X, Y, layout="vec", format=fmt, num_threads=2)
    for a, b in zip(_storage(A1), _storage(A2)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(A1.diagonal(), Y.ravel(order="F"))  # "vec": column-major
    assert_canonical(A1)
    P, Q = rng.standard_normal((12, 14)), rng.standard_normal((16, 15))
    K1 = tj.jacobian(tj.kron, P, Q, wrt=1, layout="matrix", format=fmt, num_threads=1)
    K2 = tj.jacobian(tj.kron, P, Q, wrt=1, layout="matrix", format=fmt, num_threads=2)
    for a, b in zip(_storage(K1), _storage(K2)):
        np.testing.assert_array_equal(a, b)
    assert_canonical(K1)
    # d kron(P, Q)[(i,k), (j,l)] / dQ[k, l] = P[i, j], against the dense closed form
    T = np.einsum("ij,kK,lL->ikjlKL", P, np.eye(16), np.eye(15)).reshape(P.size * Q.size, Q.size)
    np.testing.assert_array_equal(K1.toarray(), T)


def test_results_never_share_memory():
    """Values are the user's arrays never, and one result's values never another's."""
    X, Y = rng.standard_normal((40, 50)), rng.standard_normal((40, 50))
    for fmt in FORMATS:
        for J in (tj.jacobian(tj.multiply, X, Y, layout="matrix", format=fmt),
                  tj.jacobian(lambda X: X * Y, X, layout="matrix", format=fmt)):
            assert not np.shares_memory(J.data, Y)
            np.testing.assert_array_equal(J.diagonal(), Y.ravel())
        J1, J2 = tj.jacobian(lambda X: (lambda y: (y, y))(np.sin(X) * Y), X, layout="matrix", format=fmt)
        K1, K2 = tj.jacobian(lambda X, Z: np.sin(X * Z) * Y, X, Y, wrt=(0, 1), layout="matrix", format=fmt)
        for a, b in ((J1, J2), (K1, K2)):
            assert not np.shares_memory(a.data, b.data)
        want = (np.cos(X) * Y).ravel()
        J1.data[:] = 0
        np.testing.assert_array_equal(J2.diagonal(), want)


@pytest.mark.parametrize("fmt", FORMATS)
def test_nonfinite_values_warn_on_every_path(fmt):
    X = rng.standard_normal((30, 30))
    Y = X.copy()
    Y[3, 4] = np.inf
    with pytest.warns(tj.NonFiniteWarning):  # the op's factor, copied by the values kernel
        tj.jacobian(tj.multiply, X, Y, layout="matrix", format=fmt)
    with pytest.warns(tj.NonFiniteWarning):  # a product the program made, kept as the values
        A = tj.jacobian(lambda X: np.sin(X) * Y, X, layout="matrix", format=fmt)
    assert np.isinf(A.toarray()[3 * 30 + 4, 3 * 30 + 4])
    x32, y32 = np.array([1.0, 2.0, 3.0], np.float32), np.array([1.0, 2.0, np.inf], np.float32)
    with pytest.warns(tj.NonFiniteWarning):  # float32, copied and kept
        A = tj.jacobian(lambda x: x * y32, x32, layout="matrix", format=fmt)
    with pytest.warns(tj.NonFiniteWarning):
        B = tj.jacobian(lambda x: (x * 2) * y32, x32, layout="matrix", format=fmt)
    assert A.dtype == B.dtype == np.float32
    np.testing.assert_array_equal(B.toarray(), np.diag(2 * y32))
    z = np.array([1 + 1j, np.nan + 0j])
    with pytest.warns(tj.NonFiniteWarning):
        tj.jacobian(lambda z: z * z, z, layout="matrix", format=fmt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tj.jacobian(lambda x: x * x, x32[:2], layout="matrix", format=fmt)
        tj.jacobian(lambda X: np.sin(X) * X, X, layout="matrix", format=fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_odd_inputs(fmt):
    """Zero-size, 0-d, size-1 axes, negative strides, Fortran order, big-endian factors."""
    Z = tj.jacobian(lambda X: np.tanh(X) * 2, np.zeros((0, 3)), layout="matrix", format=fmt)
    assert Z.shape == (0, 0) and Z.nnz == 0
    s = tj.jacobian(lambda x: np.sin(x) * x, np.float64(0.5), layout="matrix", format=fmt)
    np.testing.assert_allclose(s.toarray(), [[np.cos(0.5) * 0.5 + np.sin(0.5)]], rtol=1e-15)
    X = rng.standard_normal((1, 7, 1))
    A = tj.jacobian(lambda X: np.exp(X) * X.sum(), X, layout="matrix", format=fmt)
    D = tj.jacobian(lambda X: np.exp(X) * X.sum(), X, layout="matrix")
    np.testing.assert_allclose(A.toarray(), D, rtol=1e-14)
    assert_canonical(A)
    base = rng.standard_normal((9, 8))
    Y = base.astype(">f8")[::-1, ::2]
    W = np.asfortranarray(rng.standard_normal((9, 4)))
    for f in (lambda X: X * Y, lambda X: np.cos(X) * W, lambda X: X.T * Y.T):
        A = tj.jacobian(f, W, layout="vec", format=fmt)
        np.testing.assert_allclose(A.toarray(), tj.jacobian(f, W, layout="vec"), rtol=1e-15)
        assert_canonical(A)


def test_kernel_arguments_are_checked():
    from tensorjac import _core

    out = np.empty(6)
    a = np.arange(6.0).reshape(2, 3)
    with pytest.raises(ValueError, match="leave its memory"):
        _core.sparse_values(out, [a], np.array([3, 2]), np.array([2, 3]))
    with pytest.raises(TypeError, match="dtype"):
        _core.sparse_values(out, [a.astype(np.float32)], np.array([3, 1]), np.array([2, 3]))
    with pytest.raises(ValueError, match="6 entries"):
        _core.sparse_values(np.empty(5), [a], np.array([3, 1]), np.array([2, 3]))
    assert _core.sparse_values(out, [a, a[0]], np.array([3, 1, 0, 1]), np.array([2, 3]))
    np.testing.assert_array_equal(out, (a * a[0]).ravel())
    idx = np.empty(6, np.int32)
    _core.sparse_index(idx, np.array([2, 3]), np.array([10, 1]))
    np.testing.assert_array_equal(idx, [0, 1, 2, 10, 11, 12])
    with pytest.raises(ValueError, match="int32"):
        _core.sparse_index(idx, np.array([2, 3]), np.array([2**31, 1]))
    with pytest.raises(TypeError, match="int32 or int64"):
        _core.sparse_index(np.empty(6), np.array([2, 3]), np.array([3, 1]))
    assert not _core.all_finite(np.array([1.0, np.nan])) and _core.all_finite(np.ones(3, np.complex64))
