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
