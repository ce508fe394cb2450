"""Nested differentiation: tj.jacobian / tj.jvp / tj.vjp / tj.grad of functions that call tj.grad, tj.vjp, tj.jvp.

References are hand closed forms (numpy / einsum) and Richardson finite differences of the inner call.
What is not supported must raise TypeError, never return a wrong value; traced arrays that leak out of a
finished call must not be usable as if they were values.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorjac as tj

rng = np.random.default_rng(11)
A = rng.standard_normal((5, 4))
x = rng.standard_normal(4)
X = rng.standard_normal((3, 3)) + 3 * np.eye(3)
Xm = rng.standard_normal((5, 3))
Ym = rng.standard_normal((5, 2))
W = 0.7 * rng.standard_normal((3, 2))
y0 = rng.standard_normal(4)


def _fd_ok(got, F, err):
    return bool((np.abs(got - F) <= 10 * err + 1e-12).all())


# scalar functions with their closed-form gradient and Hessian
def _lnorm(v):
    return np.log(np.sum((A @ v) ** 2))


def _lnorm_grad(v):
    return 2 * A.T @ A @ v / np.sum((A @ v) ** 2)


def _lnorm_hess(v):
    s = np.sum((A @ v) ** 2)
    g = A.T @ A @ v
    return 2 * A.T @ A / s - 4 * np.outer(g, g) / s**2


def _logdet_hess(M):
    Mi = np.linalg.inv(M)
    return -np.einsum("jk,li->ijkl", Mi, Mi)


def _mlp(Wv):
    return np.sum((np.tanh(Xm @ Wv) - Ym) ** 2)


def _mlp_hess(Wv):
    T = np.tanh(Xm @ Wv)
    c = 2 * (1 - T**2) ** 2 - 4 * (T - Ym) * T * (1 - T**2)
    return np.einsum("ni,nk,nj,jl->ijkl", Xm, Xm, c, np.eye(2))


FUNCS = {
    "ln ||Ax||^2": (_lnorm, x, _lnorm_hess),
    "slogdet": (lambda M: np.linalg.slogdet(M)[1], X, _logdet_hess),
    "MLP loss": (_mlp, W, _mlp_hess),
}


def _mv(H, V, R):
    """(H @ v) over the trailing R axes of a batch V."""
    letters = "abcdefgh"
    n, m = letters[:R], letters[R : 2 * R]
    return np.einsum(f"{n}{m},...{m}->...{n}", H, V)


@pytest.mark.parametrize("name", list(FUNCS))
def test_jacobian_of_grad_is_the_hessian(name):
    f, x0, hess = FUNCS[name]
    J = tj.jacobian(lambda v: tj.grad(f, v), x0)
    want = hess(x0)
    np.testing.assert_allclose(J, want, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(J, tj.hessian(f, x0), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("layout", ["matrix", "vec", "gradient", "numerator"])
def test_jacobian_of_grad_in_layouts(layout):
    J = tj.jacobian(lambda M: tj.grad(lambda N: np.linalg.slogdet(N)[1], M), X, layout=layout)
    T = _logdet_hess(X)  # T[i,j,k,l] = d grad[i,j] / dX[k,l]
    want = {
        "matrix": T.reshape(9, 9),
        "vec": T.transpose(1, 0, 3, 2).reshape(9, 9),
        "gradient": T.transpose(2, 3, 0, 1),
        "numerator": T.transpose(0, 1, 3, 2),
    }[layout]
    np.testing.assert_allclose(J, want, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("batch", [(), (2,), (2, 3)])
@pytest.mark.parametrize("name", list(FUNCS))
def test_jvp_and_vjp_of_grad(name, batch):
    f, x0, hess = FUNCS[name]
    H = hess(x0)
    V = np.random.default_rng(len(batch)).standard_normal(batch + x0.shape)
    R = x0.ndim
    jv = tj.jvp(lambda v: tj.grad(f, v), x0, tangent=V)
    np.testing.assert_allclose(jv, _mv(H, V, R), rtol=1e-10, atol=1e-12)
    vj = tj.vjp(lambda v: tj.grad(f, v), x0, cotangent=V)  # H is symmetric: the same numbers
    np.testing.assert_allclose(vj, _mv(H, V, R), rtol=1e-10, atol=1e-12)


def test_grad_of_a_gradient_norm():
    """d/dx ||grad f(x)||^2 = 2 H(x) grad f(x)."""
    got = tj.grad(lambda v: np.sum(tj.grad(_lnorm, v) ** 2), x)
    np.testing.assert_allclose(got, 2 * _lnorm_hess(x) @ _lnorm_grad(x), rtol=1e-10)


def test_grad_with_wrt_inside_and_mixed_partials():
    """d/dx of grad_y f(x, y): the mixed block, against its closed form and fd of the inner gradient."""

    def f(u, v):
        return np.sum(np.tanh(u * v)) + u @ A.T @ A @ v

    def grad_y(u):
        return tj.grad(f, u, y0, wrt=1)

    J = tj.jacobian(grad_y, x)
    s = 1 - np.tanh(x * y0) ** 2
    want = np.diag(s - 2 * x * y0 * np.tanh(x * y0) * s) + A.T @ A  # d/du_k [u_j s_j + (A^T A u)_j]
    np.testing.assert_allclose(J, want, rtol=1e-10, atol=1e-13)
    F, err = tj.fd.jacobian(grad_y, x, method="richardson", return_error=True)
    assert _fd_ok(J, F, err)


def test_closure_over_the_outer_traced_value():
    """The inner function reads the outer traced x (not its own argument)."""

    def g(u):
        return tj.grad(lambda v: np.sum(np.tanh(u * v)), y0)

    J = tj.jacobian(g, x)
    F, err = tj.fd.jacobian(g, x, method="richardson", return_error=True)
    assert _fd_ok(J, F, err)
    t = np.tanh(x * y0)
    np.testing.assert_allclose(J, np.diag((1 - t**2) * (1 - 2 * x * y0 * t)), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("kind", ["vjp", "jvp"])
def test_jacobian_of_vjp_and_jvp(kind):
    c = rng.standard_normal(5)
    t = rng.standard_normal(4)
    if kind == "vjp":
        g = lambda v: tj.vjp(lambda u: np.tanh(A @ u), v, cotangent=c)
    else:
        g = lambda v: tj.jvp(lambda u: np.tanh(A @ u), v, tangent=t)
    J = tj.jacobian(g, x)
    th = np.tanh(A @ x)
    d2 = -2 * th * (1 - th**2)  # tanh''
    if kind == "vjp":  # d/dx_l sum_m c_m (1 - th_m^2) A_mk = sum_m c_m d2_m A_mk A_ml
        want = np.einsum("m,m,mk,ml->kl", c, d2, A, A)
    else:  # d/dx_l (1 - th_m^2) (A t)_m = d2_m (A t)_m A_ml
        want = (d2 * (A @ t))[:, None] * A
    np.testing.assert_allclose(J, want, rtol=1e-10, atol=1e-13)
    F, err = tj.fd.jacobian(g, x, method="richardson", return_error=True)
    assert _fd_ok(J, F, err)


def test_outer_trace_sees_the_inner_gradient_value():
    """The inner gradient used as a value in the outer function (not only differentiated)."""
    v, J = tj.value_and_jacobian(lambda u: tj.grad(_lnorm, u) * u, x)
    np.testing.assert_allclose(v, _lnorm_grad(x) * x, rtol=1e-13)
    want = np.diag(_lnorm_grad(x)) + x[:, None] * _lnorm_hess(x)
    np.testing.assert_allclose(J, want, rtol=1e-10, atol=1e-13)


# ----------------------------------------------------------------------------- unsupported: TypeError or right


def _third(v):  # d^3/dx^3 of sum(x^4) contracted twice with y0: 24 x y0^2
    return 24 * v * y0**2


@pytest.mark.parametrize(
    "call",
    [
        lambda: tj.grad(lambda u: tj.grad(lambda w: tj.grad(lambda z: np.sum(z**4), w) @ y0, u) @ y0, x),
        lambda: tj.jvp(lambda u: tj.jvp(lambda w: tj.grad(lambda z: np.sum(z**4), w), u, tangent=y0), x,
                       tangent=y0),
        lambda: tj.hvp(lambda u: tj.grad(lambda z: np.sum(z**4), u) @ y0, x, vector=y0),
    ],
    ids=["grad(grad(grad))", "jvp(jvp(grad))", "hvp(grad)"],
)
def test_third_order_is_right_or_a_type_error(call):
    try:
        got = call()
    except TypeError:
        return
    np.testing.assert_allclose(got, _third(x), rtol=1e-10)


@pytest.mark.parametrize(
    "inner",
    [
        lambda v: tj.jacobian(lambda u: np.tanh(A @ u), v),
        lambda v: tj.value_and_jacobian(lambda u: np.tanh(A @ u), v)[1],
        lambda v: tj.jacobian(tj.tanh, v),
        lambda v: tj.fd.jacobian(lambda u: np.tanh(A @ u), v),
        lambda v: tj.vjp(tj.tanh, v, cotangent=np.ones(4)),
        lambda v: tj.jvp(tj.inv, v[:, None] * v + 3 * np.eye(4), tangent=np.eye(4)),
    ],
    ids=["jacobian", "value_and_jacobian", "jacobian of an op", "fd.jacobian", "vjp of an op", "jvp of an op"],
)
def test_grad_of_a_function_calling_an_unsupported_derivative(inner):
    """Either the right value (against fd of the same function) or a TypeError."""
    f = lambda v: np.sum(inner(v) ** 2)
    try:
        got = tj.grad(f, x)
    except TypeError:
        return
    F, err = tj.fd.jacobian(f, x, method="richardson", return_error=True)
    assert _fd_ok(got, F, err)


# ----------------------------------------------------------------------------- leaked traced arrays


def _leak():
    store = []

    def f(v):
        store.append(v)
        z = np.tanh(v)
        store.append(z)
        return np.sum(z)

    tj.grad(f, x)
    return store


@pytest.mark.parametrize(
    "use",
    [
        lambda z: tj.jacobian(lambda u: u * z, x),
        lambda z: tj.grad(lambda u: np.sum(u * z), x),
        lambda z: tj.hessian(lambda u: np.sum(u * z * u), x),
        lambda z: tj.vjp(lambda u: u * z, x, cotangent=np.ones(4)),
        lambda z: tj.jvp(lambda u: u * z, x, tangent=np.ones(4)),
        lambda z: tj.jacobian(np.tanh, z),
        lambda z: tj.fd.jacobian(np.tanh, z),
        lambda z: np.asarray(z),
        lambda z: float(z[0]),
        lambda z: np.zeros(4).__setitem__(slice(None), z),
    ],
    ids=["jacobian", "grad", "hessian", "vjp", "jvp", "as argument", "as fd argument", "asarray", "float",
         "written into numpy"],
)
@pytest.mark.parametrize("which", [0, 1], ids=["leaked input", "leaked intermediate"])
def test_leaked_traced_array_in_a_later_call_raises(use, which):
    z = _leak()[which]
    with pytest.raises(TypeError):
        use(z)


# ----------------------------------------------------------------------------- fixed in 52d6ab5 (were xfails)


def test_grad_of_a_function_calling_hvp():
    f = lambda u: np.sum(tj.hvp(lambda z: np.sum(z**4), u, vector=y0))
    np.testing.assert_allclose(tj.grad(f, x), 24 * x * y0, rtol=1e-12)


@pytest.mark.parametrize("outer", ["jacobian", "grad", "vjp", "jvp"])
def test_inner_leak_into_the_outer_function_raises(outer):
    """An array traced by an inner tj.grad that has returned, used by the outer function: TypeError, never a
    silent zero derivative."""

    def f(u):
        store = []
        g = tj.grad(lambda v: (store.append(v), np.sum(v**3))[1], u)
        return g * store[0]  # the inner call's traced input, after that call returned

    calls = {
        "jacobian": lambda: tj.jacobian(f, x),
        "grad": lambda: tj.grad(lambda u: np.sum(f(u)), x),
        "vjp": lambda: tj.vjp(f, x, cotangent=np.ones(4)),
        "jvp": lambda: tj.jvp(f, x, tangent=np.ones(4)),
    }
    with pytest.raises(TypeError, match="returned"):
        calls[outer]()


@pytest.mark.parametrize(
    "use", [lambda z: z + 1, lambda z: np.sum(z), lambda z: tj.tanh(z), lambda z: z @ z, lambda z: z > 0],
    ids=["z + 1", "np.sum", "op", "matmul", "comparison"],
)
def test_arithmetic_on_a_leaked_traced_array_raises(use):
    z = _leak()[1]
    with pytest.raises(TypeError, match="returned"):
        use(z)


def test_gradient_of_trace_used_as_a_value_in_an_outer_trace():
    """grad tr(Y) = I and grad tr(Y)^2 = 2 tr(Y) I, also when the outer function is being traced."""
    v, J = tj.value_and_jacobian(lambda M: tj.grad(lambda N: np.trace(N), M) * M, X)
    np.testing.assert_array_equal(v, np.diag(np.diag(X)))
    v, J = tj.value_and_jacobian(lambda M: tj.grad(lambda N: np.trace(N) ** 2, M), X)
    np.testing.assert_allclose(v, 2 * np.trace(X) * np.eye(3), rtol=1e-15)
    np.testing.assert_array_equal(J, 2 * np.einsum("ij,kl->ijkl", np.eye(3), np.eye(3)))


def test_third_order_tensor():
    """d^3/dx^3 of f = sum(exp(x) * (A x)) by jacobian(jacobian(grad)), against its closed form and fd."""
    A4 = A[:4]
    f = lambda v: np.sum(np.exp(v) * (A4 @ v))
    T = tj.jacobian(lambda u: tj.jacobian(lambda w: tj.grad(f, w), u), x)
    e, a = np.exp(x), A4 @ x
    I = np.eye(4)
    # f = sum_i e_i a_i; d3 f / dx_p dx_q dx_r = sum_i [d_ipqr e_i a_i + e_i (d_ipq A_ir + d_ipr A_iq + d_iqr A_ip)]
    want = np.einsum("i,ip,iq,ir->pqr", e * a, I, I, I)
    want += np.einsum("i,ip,iq,ir->pqr", e, I, I, A4) + np.einsum("i,ip,ir,iq->pqr", e, I, I, A4)
    want += np.einsum("i,iq,ir,ip->pqr", e, I, I, A4)
    np.testing.assert_allclose(T, want, rtol=1e-12, atol=1e-13)
    F, err = tj.fd.jacobian(lambda u: tj.hessian(f, u), x, method="richardson", return_error=True)
    assert _fd_ok(T, F, err)


# ----------------------------------------------------------------------------- tj.hessian inside a traced function


def test_jacobian_of_hessian():
    got = tj.jacobian(lambda u: tj.hessian(lambda z: np.sum(z**4), u), x) @ y0 @ y0
    np.testing.assert_allclose(got, _third(x), rtol=1e-10)


def test_grad_of_a_function_calling_hessian():
    f = lambda v: np.sum(tj.hessian(_lnorm, v) ** 2)
    F, err = tj.fd.jacobian(f, x, method="richardson", return_error=True)
    assert _fd_ok(tj.grad(f, x), F, err)
