"""The layout contract (LAYOUTS.md): every op, every wrt, every layout, and the worked examples."""

from __future__ import annotations

import numpy as np
import pytest
import tensorjac as tj
from conftest import (
    CASE_IDS,
    CASES,
    HOLO_CASES,
    HOLO_IDS,
    LAYOUTS,
    assert_close,
    make_args,
    op_of,
    ref_tensor,
    to_layout,
    tol,
)


def test_layout_names():
    assert tuple(tj.LAYOUTS) == LAYOUTS


# ----------------------------------------------------------------------------- every op x wrt x layout


def _check_layout(name, wrt, layout, dtype):
    args = make_args(name, dtype)
    op = op_of(name)
    J = tj.jacobian(op, *args, wrt=wrt, layout=layout)
    out_shape = np.shape(np.asarray(op(*args)))
    T = ref_tensor(name, args, wrt)
    want = to_layout(T, out_shape, args[wrt].shape, layout)
    assert isinstance(J, np.ndarray)
    assert J.dtype == np.dtype(dtype)
    assert J.shape == want.shape
    rtol = tol(dtype)["rtol"]
    if name == "det" and np.dtype(dtype).itemsize >= 8:
        rtol = 1e-10  # cofactors by minors vs the library's formula
    assert_close(J, want, rtol=rtol)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("name", "wrt"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_layout_vs_einsum_reference(name, wrt, layout, dtype):
    _check_layout(name, wrt, layout, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("name", "wrt"), HOLO_CASES, ids=HOLO_IDS)
def test_layout_vs_einsum_reference_complex(name, wrt, layout):
    _check_layout(name, wrt, layout, np.complex128)


def test_default_layout_is_tensor():
    A, X, B = make_args("sandwich")
    J = tj.jacobian(tj.sandwich, A, X, B, wrt=1)
    np.testing.assert_array_equal(J, tj.jacobian(tj.sandwich, A, X, B, wrt=1, layout="tensor"))
    assert J.shape == (2, 2, 3, 4)


# ----------------------------------------------------------------------------- the table, element by element


def _table_cases():
    rng = np.random.default_rng(7)
    X3 = rng.standard_normal((2, 3, 4))
    W3 = rng.standard_normal((2, 3, 4))
    return [
        ("multiply", (X3, W3), 0),
        ("transpose", (rng.standard_normal((2, 3, 4)),), 0),
        ("sandwich", make_args("sandwich"), 1),
        ("kron", make_args("kron"), 1),
        ("outer", (rng.standard_normal((2, 3)), rng.standard_normal(2)), 0),
        ("matmul", make_args("matmul"), 0),
        ("sum", (X3,), 0),
        ("exp", (rng.standard_normal((3, 2)),), 0),
    ]


@pytest.mark.parametrize("case", range(8))
def test_layout_table_element_by_element(case):
    """Each layout's element formula from the LAYOUTS.md table, checked index by index."""
    name, args, wrt = _table_cases()[case]
    op = op_of(name)
    T = ref_tensor(name, args, wrt)
    out_shape = np.asarray(op(*args)).shape
    in_shape = args[wrt].shape
    assert T.shape == out_shape + in_shape
    M, N = int(np.prod(out_shape)), int(np.prod(in_shape))
    J = {lay: tj.jacobian(op, *args, wrt=wrt, layout=lay) for lay in LAYOUTS}
    assert J["tensor"].shape == out_shape + in_shape
    assert J["gradient"].shape == in_shape + out_shape
    assert J["numerator"].shape == out_shape + in_shape[::-1]
    assert J["matrix"].shape == (M, N)
    assert J["vec"].shape == (M, N)
    for m in np.ndindex(*out_shape):
        for n in np.ndindex(*in_shape):
            t = T[m + n]
            assert J["tensor"][m + n] == pytest.approx(t, rel=1e-13, abs=1e-14)
            assert J["gradient"][n + m] == pytest.approx(t, rel=1e-13, abs=1e-14)
            assert J["numerator"][m + n[::-1]] == pytest.approx(t, rel=1e-13, abs=1e-14)
            mc = np.ravel_multi_index(m, out_shape, order="C") if m else 0
            nc = np.ravel_multi_index(n, in_shape, order="C") if n else 0
            mf = np.ravel_multi_index(m, out_shape, order="F") if m else 0
            nf = np.ravel_multi_index(n, in_shape, order="F") if n else 0
            assert J["matrix"][mc, nc] == pytest.approx(t, rel=1e-13, abs=1e-14)
            assert J["vec"][mf, nf] == pytest.approx(t, rel=1e-13, abs=1e-14)


def test_matrix_is_reshape_of_tensor():
    args = make_args("kron")
    for wrt in (0, 1):
        T = tj.jacobian(tj.kron, *args, wrt=wrt)
        Mx = tj.jacobian(tj.kron, *args, wrt=wrt, layout="matrix")
        np.testing.assert_array_equal(Mx, T.reshape(Mx.shape))


# ----------------------------------------------------------------------------- rank-0 sides


@pytest.mark.parametrize("layout", LAYOUTS)
def test_scalar_output_shapes(layout):
    """A scalar output has shape () and prod(()) = 1."""
    X = np.arange(12.0).reshape(3, 4)
    J = tj.jacobian(tj.sum, X, layout=layout)
    want = {"tensor": (3, 4), "gradient": (3, 4), "numerator": (4, 3), "matrix": (1, 12), "vec": (1, 12)}
    assert J.shape == want[layout]
    assert np.all(J == 1.0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_scalar_input_and_output(layout):
    x = np.array(0.7)
    J = tj.jacobian(tj.exp, x, layout=layout)
    want_shape = () if layout in ("tensor", "gradient", "numerator") else (1, 1)
    assert J.shape == want_shape
    assert J.reshape(()) == pytest.approx(np.exp(0.7), rel=1e-15)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_scalar_input_vector_output(layout):
    """multiply of 0-d arrays is 0-d; outer of a 0-d u with v (np.outer ravels: shape (1, n))."""
    u = np.array(2.5)
    v = np.array([1.0, -2.0, 3.0])
    J = tj.jacobian(tj.outer, u, v, wrt=0, layout=layout)
    T = v.reshape(1, 3)  # d outer[0, b] / du = v[b]
    assert_close(J, to_layout(T, (1, 3), (), layout), rtol=1e-15)


# ----------------------------------------------------------------------------- LAYOUTS.md worked examples


def test_worked_trace_AX():
    """y = tr(A X), A n x m: tensor and gradient give A.T (m, n); numerator gives A (n, m).

    tr(A X) = trace(matmul(A, X)); the chain rule is applied to the two ops' Jacobians
    in each layout with numpy.
    """
    rng = np.random.default_rng(1)
    m, n = 3, 4
    A = rng.standard_normal((n, m))
    X = rng.standard_normal((m, n))
    F = A @ X  # n x n
    # tensor: dy/dX = sum_f dy/dF[f] dF[f]/dX
    Jt = np.tensordot(tj.jacobian(tj.trace, F), tj.jacobian(tj.matmul, A, X, wrt=1), axes=2)
    assert Jt.shape == (m, n)
    np.testing.assert_allclose(Jt, A.T, rtol=1e-14)
    # gradient layout: dF/dX is X.shape + F.shape, dy/dF is F.shape
    Jg = np.tensordot(
        tj.jacobian(tj.matmul, A, X, wrt=1, layout="gradient"),
        tj.jacobian(tj.trace, F, layout="gradient"),
        axes=2,
    )
    assert Jg.shape == (m, n)
    np.testing.assert_allclose(Jg, A.T, rtol=1e-14)
    # numerator layout: dy/dF is F.shape[::-1], dF/dX is F.shape + X.shape[::-1]
    Nt = tj.jacobian(tj.trace, F, layout="numerator")
    Nm = tj.jacobian(tj.matmul, A, X, wrt=1, layout="numerator")
    assert Nm.shape == (n, n, n, m)
    Jn = np.tensordot(Nt.T, Nm, axes=2)
    assert Jn.shape == (n, m)
    np.testing.assert_allclose(Jn, A, rtol=1e-14)
    # the same function as sum(A.T * X): the multiply Jacobian in diagonal layout times ones
    Jd = tj.jacobian(tj.multiply, A.T, X, wrt=1, layout="diagonal")
    np.testing.assert_allclose(Jd, A.T, rtol=0)


def test_worked_trace_gradient_is_identity():
    X = np.random.default_rng(2).standard_normal((3, 3))
    np.testing.assert_array_equal(tj.jacobian(tj.trace, X, layout="gradient"), np.eye(3))
    np.testing.assert_array_equal(tj.jacobian(tj.trace, X, layout="numerator"), np.eye(3))


def test_worked_uXv():
    """y = u^T X v: gradient outer(u, v), numerator outer(v, u)."""
    rng = np.random.default_rng(3)
    m, n = 3, 5
    u, v, X = rng.standard_normal(m), rng.standard_normal(n), rng.standard_normal((m, n))
    # as sandwich(u[None, :], X, v[:, None]), whose output is 1 x 1
    G = tj.jacobian(tj.sandwich, u[None, :], X, v[:, None], wrt=1, layout="gradient")
    assert G.shape == (m, n, 1, 1)
    np.testing.assert_allclose(G[:, :, 0, 0], np.outer(u, v), rtol=1e-15)
    Nm = tj.jacobian(tj.sandwich, u[None, :], X, v[:, None], wrt=1, layout="numerator")
    assert Nm.shape == (1, 1, n, m)
    np.testing.assert_allclose(Nm[0, 0], np.outer(v, u), rtol=1e-15)
    T = tj.jacobian(tj.sandwich, u[None, :], X, v[:, None], wrt=1, layout="tensor")
    np.testing.assert_allclose(T[0, 0], np.outer(u, v), rtol=1e-15)
    # as dot(vecmat(u, X), v): chain of gradient layouts
    w = u @ X
    Gc = np.tensordot(
        tj.jacobian(tj.matmul, u, X, wrt=1, layout="gradient"),  # (m, n, n)
        tj.jacobian(tj.dot, w, v, wrt=0, layout="gradient"),  # (n,)
        axes=1,
    )
    np.testing.assert_allclose(Gc, np.outer(u, v), rtol=1e-14)


def test_worked_frobenius_squared():
    """y = ||X||_F^2: gradient 2X, numerator 2X.T."""
    X = np.random.default_rng(4).standard_normal((3, 4))
    # y = sum(square(X)), chained in the gradient layout
    Gsq = tj.jacobian(tj.square, X, layout="gradient")  # X.shape + X.shape
    Gsum = tj.jacobian(tj.sum, X * X, layout="gradient")  # X.shape
    G = np.tensordot(Gsq, Gsum, axes=2)
    np.testing.assert_allclose(G, 2 * X, rtol=1e-15)
    # numerator layout chain
    Nsum = tj.jacobian(tj.sum, X * X, layout="numerator")  # (4, 3)
    Nsq = tj.jacobian(tj.square, X, layout="numerator")  # (3, 4, 4, 3)
    N = np.tensordot(Nsum.T, Nsq, axes=2)
    assert N.shape == (4, 3)
    np.testing.assert_allclose(N, 2 * X.T, rtol=1e-15)
    # y = norm(X)^2: dy/dX = 2 ||X|| d||X||/dX
    nrm = float(tj.norm(X))
    np.testing.assert_allclose(2 * nrm * tj.jacobian(tj.norm, X, layout="gradient"), 2 * X, rtol=1e-13)
    np.testing.assert_allclose(2 * nrm * tj.jacobian(tj.norm, X, layout="numerator"), 2 * X.T, rtol=1e-13)
    # the square's diagonal layout is 2X as well
    np.testing.assert_allclose(tj.jacobian(tj.square, X, layout="diagonal"), 2 * X, rtol=0)


def test_worked_AXB():
    """F = A X B w.r.t. X: tensor J[i,j,k,l] = A[i,k] B[l,j]; vec kron(B.T, A)."""
    rng = np.random.default_rng(5)
    A, X, B = rng.standard_normal((2, 3)), rng.standard_normal((3, 4)), rng.standard_normal((4, 5))
    T = tj.jacobian(tj.sandwich, A, X, B, wrt=1)
    assert T.shape == (2, 5, 3, 4)
    for i, j, k, l in np.ndindex(2, 5, 3, 4):
        assert T[i, j, k, l] == pytest.approx(A[i, k] * B[l, j], rel=1e-15, abs=1e-300)
    V = tj.jacobian(tj.sandwich, A, X, B, wrt=1, layout="vec")
    np.testing.assert_allclose(V, np.kron(B.T, A), rtol=1e-15)
    # and vec(AXB) = kron(B.T, A) vec(X) holds
    np.testing.assert_allclose(V @ X.ravel(order="F"), (A @ X @ B).ravel(order="F"), rtol=1e-12)


def commutation_matrix(m: int, n: int) -> np.ndarray:
    """K(m, n) with vec(X.T) = K vec(X) for X m x n (vec = column-major)."""
    K = np.zeros((m * n, m * n))
    for i in range(m):
        for j in range(n):
            # vec(X)[i + j m] = X[i, j] = X.T[j, i] = vec(X.T)[j + i n]
            K[j + i * n, i + j * m] = 1.0
    return K


@pytest.mark.parametrize(("m", "n"), [(3, 4), (2, 2), (1, 5), (4, 1)])
def test_worked_transpose_commutation(m, n):
    """F = X^T: vec is the commutation matrix K(m, n), a permutation matrix."""
    X = np.random.default_rng(6).standard_normal((m, n))
    K = commutation_matrix(m, n)
    np.testing.assert_array_equal(K @ X.ravel(order="F"), X.T.ravel(order="F"))  # the definition
    V = tj.jacobian(tj.transpose, X, layout="vec")
    np.testing.assert_array_equal(V, K)
    assert np.all(V.sum(axis=0) == 1) and np.all(V.sum(axis=1) == 1)
    np.testing.assert_array_equal(V @ V.T, np.eye(m * n))


def test_worked_hadamard():
    """F = W o X w.r.t. X: vec diag(vec_F(W)); matrix diag(W.ravel())."""
    rng = np.random.default_rng(8)
    W, X = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    for wrt, args in ((1, (W, X)), (0, (X, W))):
        np.testing.assert_array_equal(
            tj.jacobian(tj.multiply, *args, wrt=wrt, layout="vec"), np.diag(W.ravel(order="F"))
        )
        np.testing.assert_array_equal(tj.jacobian(tj.multiply, *args, wrt=wrt, layout="matrix"), np.diag(W.ravel()))
        np.testing.assert_array_equal(tj.jacobian(tj.multiply, *args, wrt=wrt, layout="diagonal"), W)


def test_worked_quadratic_form():
    """f = x^T A x w.r.t. x: gradient (A + A.T) x."""
    rng = np.random.default_rng(9)
    x, A = rng.standard_normal(4), rng.standard_normal((4, 4))  # A not symmetric
    G = tj.jacobian(tj.quadratic, x, A, wrt=0, layout="gradient")
    assert G.shape == (4,)
    np.testing.assert_allclose(G, (A + A.T) @ x, rtol=1e-13)
    GA = tj.jacobian(tj.quadratic, x, A, wrt=1, layout="gradient")
    np.testing.assert_allclose(GA, np.outer(x, x), rtol=1e-15)


@pytest.mark.parametrize("layout", ["tensor", "matrix", "numerator"])
def test_worked_matvec_wrt_x(layout):
    """F = A x w.r.t. the vector x: tensor, matrix and numerator all give A."""
    rng = np.random.default_rng(10)
    A, x = rng.standard_normal((3, 5)), rng.standard_normal(5)
    J = tj.jacobian(tj.matmul, A, x, wrt=1, layout=layout)
    np.testing.assert_array_equal(J, A)


def test_worked_matvec_wrt_x_gradient_and_vec():
    rng = np.random.default_rng(10)
    A, x = rng.standard_normal((3, 5)), rng.standard_normal(5)
    np.testing.assert_array_equal(tj.jacobian(tj.matmul, A, x, wrt=1, layout="gradient"), A.T)
    np.testing.assert_array_equal(tj.jacobian(tj.matmul, A, x, wrt=1, layout="vec"), A)


def test_worked_matvec_wrt_A():
    """F = A x w.r.t. the matrix A (N x K): tensor shape (N, N, K), J[i,j,k] = delta(i,j) x[k]."""
    rng = np.random.default_rng(11)
    N, K = 3, 4
    A, x = rng.standard_normal((N, K)), rng.standard_normal(K)
    J = tj.jacobian(tj.matmul, A, x, wrt=0)
    assert J.shape == (N, N, K)
    for i, j, k in np.ndindex(N, N, K):
        assert J[i, j, k] == (x[k] if i == j else 0.0)
    # Magnus-Neudecker: d vec(A x) / d vec(A)^T = x^T kron I_N; row-major: I_N kron x^T
    np.testing.assert_array_equal(tj.jacobian(tj.matmul, A, x, wrt=0, layout="vec"), np.kron(x[None, :], np.eye(N)))
    np.testing.assert_array_equal(
        tj.jacobian(tj.matmul, A, x, wrt=0, layout="matrix"), np.kron(np.eye(N), x[None, :])
    )


def test_worked_least_squares():
    """L(w) = ||X w - y||^2: gradient 2 X^T (X w - y)."""
    rng = np.random.default_rng(12)
    X, w, y = rng.standard_normal((6, 3)), rng.standard_normal(3), rng.standard_normal(6)
    r = X @ w - y
    want = 2 * X.T @ r
    Gmv = tj.jacobian(tj.matmul, X, w, wrt=1, layout="gradient")  # (3, 6) = X.T
    # L = sum(square(r)); r = X w - y has the Jacobian of X w
    Gsq = tj.jacobian(tj.square, r, layout="gradient")  # (6, 6)
    Gsum = tj.jacobian(tj.sum, r * r, layout="gradient")  # (6,)
    np.testing.assert_allclose(Gmv @ Gsq @ Gsum, want, rtol=1e-13)
    # L = norm(r)^2
    Gn = 2 * float(tj.norm(r)) * tj.jacobian(tj.norm, r, layout="gradient")
    np.testing.assert_allclose(Gmv @ Gn, want, rtol=1e-13)
    # L = quadratic(r, I)
    Gq = tj.jacobian(tj.quadratic, r, np.eye(6), wrt=0, layout="gradient")
    np.testing.assert_allclose(Gmv @ Gq, want, rtol=1e-13)


# ----------------------------------------------------------------------------- further classical identities


def test_vec_of_matmul_identities():
    """d vec(AB)/d vec(A) = B^T kron I; d vec(AB)/d vec(B) = I kron A."""
    rng = np.random.default_rng(13)
    A, B = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    np.testing.assert_array_equal(tj.jacobian(tj.matmul, A, B, wrt=0, layout="vec"), np.kron(B.T, np.eye(3)))
    np.testing.assert_array_equal(tj.jacobian(tj.matmul, A, B, wrt=1, layout="vec"), np.kron(np.eye(2), A))


def test_vec_of_inverse_identity():
    """d vec(X^-1) / d vec(X)^T = -(X^-T kron X^-1)."""
    X = make_args("inv")[0]
    Xi = np.linalg.inv(X)
    np.testing.assert_allclose(tj.jacobian(tj.inv, X, layout="vec"), -np.kron(Xi.T, Xi), rtol=1e-13)


def test_jacobi_formula():
    """d det X / dX = det(X) X^-T (gradient), det(X) X^-1 (numerator); logdet: X^-T, X^-1."""
    X = make_args("det")[0]
    d, Xi = np.linalg.det(X), np.linalg.inv(X)
    np.testing.assert_allclose(tj.jacobian(tj.det, X, layout="gradient"), d * Xi.T, rtol=1e-12)
    np.testing.assert_allclose(tj.jacobian(tj.det, X, layout="numerator"), d * Xi, rtol=1e-12)
    np.testing.assert_allclose(tj.jacobian(tj.logdet, X, layout="gradient"), Xi.T, rtol=1e-12)
    np.testing.assert_allclose(tj.jacobian(tj.logdet, X, layout="numerator"), Xi, rtol=1e-12)


def test_vec_of_kron_against_definition():
    """vec layout of kron w.r.t. B maps vec(dB) to vec(kron(A, dB)) (linear in B)."""
    rng = np.random.default_rng(14)
    A, B = rng.standard_normal((2, 3)), rng.standard_normal((3, 2))
    V = tj.jacobian(tj.kron, A, B, wrt=1, layout="vec")
    for _ in range(3):
        dB = rng.standard_normal(B.shape)
        np.testing.assert_allclose(V @ dB.ravel(order="F"), np.kron(A, dB).ravel(order="F"), rtol=1e-13)
    Mx = tj.jacobian(tj.kron, A, B, wrt=0, layout="matrix")
    dA = rng.standard_normal(A.shape)
    np.testing.assert_allclose(Mx @ dA.ravel(), np.kron(dA, B).ravel(), rtol=1e-13)
