"""The API of the composite engine on plain-numpy callables (COMPOSITE_SPEC.md, "API" and "dtypes").

wrt forms, tuple outputs, value_and_jacobian, grad, vjp/jvp, out=, threads,
dtypes, memory layouts, 0-d and zero-size arrays, the user's arrays, the op
path, Python control flow, the diagonal layout and the memory budget.

The references are hand closed forms (verified against finite differences by
the ``test_reference_*`` tests, which run today) and Richardson differences.
Everything else needs the engine and is skipped until it exists.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import tensorjac as tj
from composite_cases import CLOSED_RTOL, FD_RTOL, WC, assert_close, by_name, fd_reference, needs_engine
from conftest import LAYOUTS, VIEW_KINDS, as_view, empty_view, fd_tensor, to_layout


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- functions with closed forms


def tanh_sandwich(A, X, B):
    return np.tanh(A @ X @ B)


def tanh_sandwich_T(args, w):
    """d tanh(AXB)[i,j] / d args[w]: D = 1 - tanh^2."""
    A, X, B = args
    D = 1 - np.tanh(A @ X @ B) ** 2
    if w == 0:
        return np.einsum("ij,ik,lj->ijkl", D, np.eye(A.shape[0]), X @ B)
    if w == 1:
        return np.einsum("ij,ik,lj->ijkl", D, A, B)
    return np.einsum("ij,ik,jl->ijkl", D, A @ X, np.eye(B.shape[1]))


def sandwich_args(seed=0, dtype=np.float64):
    r = _rng(seed)
    return tuple(a.astype(dtype) for a in (r.standard_normal((2, 3)), r.standard_normal((3, 4)), r.standard_normal((4, 2))))


def dense(X, W):
    return np.tanh(X @ W)


def dense_T(args, w):
    X, W = args
    D = 1 - np.tanh(X @ W) ** 2
    if w == 0:
        return np.einsum("ij,ik,lj->ijkl", D, np.eye(X.shape[0]), W)
    return np.einsum("ij,ik,jl->ijkl", D, X, np.eye(W.shape[1]))


def dense_args(seed=0, n=3, k=4, m=2):
    r = _rng(seed)
    return r.standard_normal((n, k)), 0.5 * r.standard_normal((k, m))


# complex holomorphic functions and their complex derivatives (no conjugation anywhere)


def cexp_Ax(A, x):
    return np.exp(A @ x)


def cexp_Ax_T(args, w):
    A, x = args
    e = np.exp(A @ x)
    return e[:, None] * A if w == 1 else np.einsum("i,ik,l->ikl", e, np.eye(A.shape[0]), x)


def cpoly(z):
    return z**3 + np.sin(z) / (1 + z**2)


def cpoly_T(args, w):
    z = args[0]
    d = 3 * z**2 + np.cos(z) / (1 + z**2) - np.sin(z) * 2 * z / (1 + z**2) ** 2
    return np.einsum("mn,m->mn", np.eye(z.size), d.ravel()).reshape(z.shape * 2)


def cinv_T(args, w):
    Xi = np.linalg.inv(args[0])
    return -np.einsum("ik,lj->ijkl", Xi, Xi)


def cdet_T(args, w):
    X = args[0]
    return np.linalg.det(X) * np.linalg.inv(X).T


def csolve(A, b):
    return np.linalg.solve(A, b) * np.tanh(b)


def csolve_T(args, w):
    A, b = args
    Ai = np.linalg.inv(A)
    x, t = Ai @ b, np.tanh(b)
    if w == 0:  # -t_i Ai[i,k] x[l]
        return -np.einsum("i,ik,l->ikl", t, Ai, x)
    return t[:, None] * Ai + np.diag(x * (1 - t**2))


def _c(r, *shape):
    return r.standard_normal(shape) + 0.5j * r.standard_normal(shape)


def _cwc(r, n):
    return 2 * np.eye(n) + 0.3 * _c(r, n, n)


COMPLEX = {  # name: (f, args maker, wrt, closed)
    "exp_Ax": (cexp_Ax, lambda r: (_c(r, 3, 2), _c(r, 2)), (0, 1), cexp_Ax_T),
    "poly_sin": (cpoly, lambda r: (_c(r, 2, 3) * 0.7,), (0,), cpoly_T),
    "inv": (lambda X: np.linalg.inv(X), lambda r: (_cwc(r, 3),), (0,), cinv_T),
    "det": (lambda X: np.linalg.det(X), lambda r: (_cwc(r, 3),), (0,), cdet_T),
    "solve_tanh": (csolve, lambda r: (_cwc(r, 3), _c(r, 3) * 0.5), (0, 1), csolve_T),
}
COMPLEX_CASES = [(k, w) for k, v in COMPLEX.items() for w in v[2]]
COMPLEX_IDS = [f"{k}-wrt{w}" for k, w in COMPLEX_CASES]


# ----------------------------------------------------------------------------- the references (run today)


def test_reference_tanh_sandwich_and_dense():
    args = sandwich_args()
    for w in range(3):
        assert_close(tanh_sandwich_T(args, w), fd_reference(tanh_sandwich, args, w), FD_RTOL)
    args = dense_args()
    for w in range(2):
        assert_close(dense_T(args, w), fd_reference(dense, args, w), FD_RTOL)


@pytest.mark.parametrize(("name", "w"), COMPLEX_CASES, ids=COMPLEX_IDS)
def test_reference_complex_closed_forms(name, w):
    """A real step of central differences gives the complex derivative of a holomorphic f."""
    f, make, _, closed = COMPLEX[name]
    args = make(_rng(4))
    T = closed(args, w)
    assert T.dtype == np.complex128
    assert_close(T, fd_tensor(f, args, w, h=1e-5), 1e-8)


# ----------------------------------------------------------------------------- wrt forms, one evaluation


@needs_engine
def test_wrt_by_index_name_negative():
    args = sandwich_args()
    want = tanh_sandwich_T(args, 1)
    for wrt in (1, "X", -2):
        assert_close(tj.jacobian(tanh_sandwich, *args, wrt=wrt), want, CLOSED_RTOL)
    assert_close(tj.jacobian(tanh_sandwich, *args, wrt="B"), tanh_sandwich_T(args, 2), CLOSED_RTOL)
    assert_close(tj.jacobian(tanh_sandwich, *args), tanh_sandwich_T(args, 0), CLOSED_RTOL)  # default wrt=0


@needs_engine
@pytest.mark.parametrize("layout", LAYOUTS)
def test_tuple_wrt_one_evaluation(layout):
    args = sandwich_args()
    calls = []

    def f(A, X, B):
        calls.append(1)
        return tanh_sandwich(A, X, B)

    Js = tj.jacobian(f, *args, wrt=("A", -1, 1), layout=layout)
    assert len(calls) == 1, f"tuple wrt must evaluate f once, got {len(calls)}"
    assert isinstance(Js, tuple) and len(Js) == 3
    out_shape = (2, 2)
    for J, w in zip(Js, (0, 2, 1)):
        assert_close(J, to_layout(tanh_sandwich_T(args, w), out_shape, args[w].shape, layout), CLOSED_RTOL)


@needs_engine
def test_wrt_name_of_parameter_with_default():
    def f(x, A, scale=2.0):
        return scale * (A @ x)

    r = _rng(1)
    x, A = r.standard_normal(3), r.standard_normal((2, 3))
    assert_close(tj.jacobian(f, x, A, wrt="x"), 2.0 * A, CLOSED_RTOL)
    assert_close(tj.jacobian(f, x, A, 3.0, wrt="scale"), A @ x, CLOSED_RTOL)


@needs_engine
def test_constants_are_the_users_objects():
    """Arguments not in wrt reach f unchanged: the same objects, integer dtype kept."""
    r = _rng(2)
    x = r.standard_normal(3)
    A = np.arange(6).reshape(2, 3)  # int64, stays int64 (only wrt inputs become float64)
    meta = {"scale": 3.0}
    seen = []

    def f(x, A, meta):
        seen.append((A, meta))
        return meta["scale"] * (A @ x)

    J = tj.jacobian(f, x, A, meta, wrt=0)
    assert all(a is A and m is meta for a, m in seen)
    assert_close(J, 3.0 * A, CLOSED_RTOL)


@needs_engine
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.bool_])
def test_integer_and_bool_wrt_become_float64(dtype):
    x = np.array([1, 0, 1, 1]).astype(dtype)
    seen = []

    def f(x):
        seen.append(x.dtype)
        return x / 3 + x**2

    J = tj.jacobian(f, x)
    assert J.dtype == np.float64
    assert seen and all(np.dtype(d) == np.float64 for d in seen), seen
    xf = x.astype(np.float64)
    np.testing.assert_allclose(J, np.diag(1 / 3 + 2 * xf), rtol=1e-14)


@needs_engine
def test_python_number_inputs():
    assert_close(tj.jacobian(lambda t: t**3, 2.0), np.array(12.0), CLOSED_RTOL)
    assert_close(tj.jacobian(lambda t: t**3, 2), np.array(12.0), CLOSED_RTOL)
    assert tj.jacobian(lambda t: t**3, 2).dtype == np.float64


# ----------------------------------------------------------------------------- outputs


@needs_engine
@pytest.mark.parametrize("container", [tuple, list])
def test_tuple_and_list_outputs(container):
    r = _rng(3)
    x, A = r.standard_normal(4), r.standard_normal((3, 4))
    Js = tj.jacobian(lambda x: container([A @ x, np.sum(x**2), 2 * x]), x)
    assert isinstance(Js, tuple) and len(Js) == 3
    assert_close(Js[0], A, CLOSED_RTOL)
    assert_close(Js[1], 2 * x, CLOSED_RTOL)
    assert_close(Js[2], 2 * np.eye(4), CLOSED_RTOL)


@needs_engine
@pytest.mark.parametrize("layout", LAYOUTS)
def test_tuple_outputs_times_tuple_wrt(layout):
    r = _rng(4)
    x, y = r.standard_normal(3), r.standard_normal(3)

    def f(x, y):
        return x * y, np.sum(x) + 2 * np.sum(y**2)

    Js = tj.jacobian(f, x, y, wrt=(0, 1), layout=layout)
    assert isinstance(Js, tuple) and len(Js) == 2
    assert all(isinstance(row, tuple) and len(row) == 2 for row in Js)
    want = [[np.diag(y), np.diag(x)], [np.ones(3), 4 * y]]
    outs = [(3,), ()]
    for i in range(2):
        for j in range(2):
            assert_close(Js[i][j], to_layout(want[i][j], outs[i], (3,), layout), CLOSED_RTOL)


@needs_engine
def test_output_not_depending_on_input_is_zero():
    x = np.arange(3.0)
    for f, out_shape in ((lambda x: np.ones((2, 2)), (2, 2)), (lambda x: 3.0, ()), (lambda x: np.float64(2.5), ())):
        J = tj.jacobian(f, x)
        assert J.shape == out_shape + (3,)
        assert J.dtype == np.float64
        np.testing.assert_array_equal(J, 0.0)
    Js = tj.jacobian(lambda x: (2 * x, np.zeros(2)), x)
    np.testing.assert_array_equal(Js[0], 2 * np.eye(3))
    np.testing.assert_array_equal(Js[1], np.zeros((2, 3)))


@needs_engine
def test_identity_function():
    x = _rng(5).standard_normal((2, 3))
    J = tj.jacobian(lambda x: x, x)
    np.testing.assert_array_equal(J, np.eye(6).reshape(2, 3, 2, 3))
    np.testing.assert_array_equal(tj.jacobian(lambda x: x, x, layout="diagonal"), np.ones((2, 3)))


# ----------------------------------------------------------------------------- value_and_jacobian, grad


@needs_engine
def test_value_and_jacobian():
    args = sandwich_args()
    calls = []

    def f(A, X, B):
        calls.append(1)
        return tanh_sandwich(A, X, B)

    value, J = tj.value_and_jacobian(f, *args, wrt=1)
    assert len(calls) == 1
    assert type(value) is np.ndarray
    np.testing.assert_allclose(value, tanh_sandwich(*args), rtol=1e-14, atol=1e-15)
    np.testing.assert_array_equal(J, tj.jacobian(tanh_sandwich, *args, wrt=1))
    assert_close(J, tanh_sandwich_T(args, 1), CLOSED_RTOL)


@needs_engine
def test_value_and_jacobian_tuple_output_and_layout():
    r = _rng(6)
    x = r.standard_normal(4)
    calls = []

    def f(x):
        calls.append(1)
        return np.sin(x), np.sum(x**2)

    value, Js = tj.value_and_jacobian(f, x, layout="matrix")
    assert len(calls) == 1
    assert isinstance(value, tuple) and len(value) == 2
    assert all(isinstance(v, (np.ndarray, np.generic, float)) for v in value)
    np.testing.assert_allclose(value[0], np.sin(x), rtol=1e-15)
    np.testing.assert_allclose(value[1], np.sum(x**2), rtol=1e-15)
    assert_close(Js[0], np.diag(np.cos(x)), CLOSED_RTOL)
    assert_close(Js[1], (2 * x).reshape(1, 4), CLOSED_RTOL)


@needs_engine
def test_grad():
    X, W = dense_args(7, 4, 3, 2)
    f = lambda X, W: np.sum(np.tanh(X @ W))
    D = 1 - np.tanh(X @ W) ** 2
    g = tj.grad(f, X, W)
    assert g.shape == X.shape
    assert_close(g, D @ W.T, CLOSED_RTOL)
    assert_close(g, fd_reference(f, (X, W), 0), FD_RTOL)
    gX, gW = tj.grad(f, X, W, wrt=(0, "W"))
    assert_close(gX, D @ W.T, CLOSED_RTOL)
    assert_close(gW, X.T @ D, CLOSED_RTOL)


@needs_engine
def test_grad_size_one_output_and_0d_input():
    r = _rng(8)
    x = r.standard_normal(3)
    g = tj.grad(lambda x: np.reshape(np.sum(x**3), (1, 1)), x)  # size-1 output of shape (1, 1)
    assert g.shape == (3,)
    assert_close(g, 3 * x**2, CLOSED_RTOL)
    g0 = tj.grad(lambda t: np.sin(t) * t, np.array(0.7))
    assert np.shape(g0) == ()
    assert_close(g0, np.cos(0.7) * 0.7 + np.sin(0.7), CLOSED_RTOL)


@needs_engine
def test_grad_of_non_scalar_is_value_error():
    x = np.ones((2, 3))
    with pytest.raises(ValueError) as exc:
        tj.grad(lambda x: x * 2, x)
    assert "(2, 3)" in str(exc.value)
    with pytest.raises(ValueError) as exc:
        tj.grad(lambda x: x.sum(axis=0), x)
    assert "(3,)" in str(exc.value)


# ----------------------------------------------------------------------------- vjp / jvp


BATCHES = [(), (2,), (2, 3)]
BATCH_IDS = ["unbatched", "b2", "b2x3"]


@needs_engine
@pytest.mark.parametrize("batch", BATCHES, ids=BATCH_IDS)
def test_vjp_jvp_batched(batch):
    args = sandwich_args(9)
    out_shape = (2, 2)
    r = _rng(10)
    for w in range(3):
        T = tanh_sandwich_T(args, w)
        in_shape = args[w].shape
        G = r.standard_normal(batch + out_shape)
        V = r.standard_normal(batch + in_shape)
        vj = tj.vjp(tanh_sandwich, *args, cotangent=G, wrt=w)
        jv = tj.jvp(tanh_sandwich, *args, tangent=V, wrt=w)
        assert vj.shape == batch + in_shape and jv.shape == batch + out_shape
        assert_close(vj, np.einsum("...ij,ijkl->...kl", G, T), CLOSED_RTOL)
        assert_close(jv, np.einsum("ijkl,...kl->...ij", T, V), CLOSED_RTOL)


@needs_engine
@pytest.mark.parametrize("batch", BATCHES, ids=BATCH_IDS)
def test_vjp_jvp_tuple_wrt(batch):
    args = sandwich_args(11)
    r = _rng(12)
    G = r.standard_normal(batch + (2, 2))
    Vs = tuple(r.standard_normal(batch + args[w].shape) for w in (0, 2))
    vjs = tj.vjp(tanh_sandwich, *args, cotangent=G, wrt=(0, "B"))
    assert isinstance(vjs, tuple) and len(vjs) == 2
    for vj, w in zip(vjs, (0, 2)):
        assert_close(vj, np.einsum("...ij,ijkl->...kl", G, tanh_sandwich_T(args, w)), CLOSED_RTOL)
    jv = tj.jvp(tanh_sandwich, *args, tangent=Vs, wrt=(0, "B"))  # the total directional derivative
    want = sum(np.einsum("ijkl,...kl->...ij", tanh_sandwich_T(args, w), V) for w, V in zip((0, 2), Vs))
    assert jv.shape == batch + (2, 2)
    assert_close(jv, want, CLOSED_RTOL)


@needs_engine
def test_vjp_jvp_with_fd_jacobian():
    """A catalogue case without a closed form: vjp/jvp against the finite-difference Jacobian."""
    case = by_name("rank3_tanh_einsum")
    args = case.args()
    r = _rng(13)
    for w in case.wrt:
        T = fd_reference(case.f, args, w)
        out_shape = np.shape(case.f(*args))
        P, R = len(out_shape), np.ndim(args[w])
        G = r.standard_normal((3,) + out_shape)
        V = r.standard_normal((3,) + np.shape(args[w]))
        vj = tj.vjp(case.f, *args, cotangent=G, wrt=w)
        jv = tj.jvp(case.f, *args, tangent=V, wrt=w)
        assert_close(vj, np.tensordot(G, T, axes=(list(range(1, 1 + P)), list(range(P)))), FD_RTOL)
        assert_close(jv, np.tensordot(V, T, axes=(list(range(1, 1 + R)), list(range(P, P + R)))), FD_RTOL)


@needs_engine
def test_vjp_jvp_never_build_the_jacobian():
    """With a budget far below the Jacobian's size, vjp and jvp still work (the Jacobian would not)."""
    X, W = dense_args(14, 40, 40, 40)  # J: 40^4 float64 = 20 MB
    G = _rng(15).standard_normal((40, 40))
    tj.set_memory_budget(1 << 20)  # 1 MiB (restored by conftest's autouse fixture)
    with pytest.raises(tj.JacobianTooLargeError):
        tj.jacobian(dense, X, W)
    D = 1 - np.tanh(X @ W) ** 2
    assert_close(tj.vjp(dense, X, W, cotangent=G, wrt=0), (G * D) @ W.T, CLOSED_RTOL)
    assert_close(tj.jvp(dense, X, W, tangent=G, wrt=0), D * (G @ W), CLOSED_RTOL)


@needs_engine
def test_complex_vjp_plain_transpose():
    f, make, _, closed = COMPLEX["exp_Ax"]
    args = make(_rng(16))
    T = closed(args, 1)
    r = _rng(17)
    G = _c(r, 2, 3)
    V = _c(r, 4, 2)
    assert_close(tj.vjp(f, *args, cotangent=G, wrt=1), np.einsum("bi,ik->bk", G, T), CLOSED_RTOL)  # no conj
    assert_close(tj.jvp(f, *args, tangent=V, wrt=1), np.einsum("ik,bk->bi", T, V), CLOSED_RTOL)


# ----------------------------------------------------------------------------- out=, threads


@needs_engine
@pytest.mark.parametrize("layout", LAYOUTS)
def test_out_filled_and_returned(layout):
    args = sandwich_args(18)
    want = to_layout(tanh_sandwich_T(args, 1), (2, 2), (3, 4), layout)
    out = np.full(want.shape, np.nan)
    res = tj.jacobian(tanh_sandwich, *args, wrt=1, layout=layout, out=out)
    assert res is out
    assert_close(out, want, CLOSED_RTOL)


@needs_engine
@pytest.mark.parametrize("kind", VIEW_KINDS)
def test_out_in_any_memory_layout(kind):
    args = sandwich_args(30)
    want = to_layout(tanh_sandwich_T(args, 1), (2, 2), (3, 4), "matrix")
    out = empty_view(want.shape, np.float64, kind)
    res = tj.jacobian(tanh_sandwich, *args, wrt=1, layout="matrix", out=out)
    assert res is out
    assert_close(out, want, CLOSED_RTOL)


@needs_engine
def test_out_errors():
    args = sandwich_args(19)
    shape = (2, 2, 3, 4)
    with pytest.raises(ValueError):
        tj.jacobian(tanh_sandwich, *args, wrt=1, out=np.empty((2, 2, 4, 3)))
    with pytest.raises(ValueError):
        tj.jacobian(tanh_sandwich, *args, wrt=1, out=np.empty(shape, np.float32))
    ro = np.empty(shape)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        tj.jacobian(tanh_sandwich, *args, wrt=1, out=ro)


@needs_engine
def test_threads_bitwise_equal():
    r = _rng(20)
    A, X, B = WC(r, 9), WC(r, 9), WC(r, 9)
    f = lambda A, X, B: np.tanh(np.linalg.inv(A @ X @ B))
    J1 = tj.jacobian(f, A, X, B, wrt=1, num_threads=1)
    J2 = tj.jacobian(f, A, X, B, wrt=1, num_threads=2)
    np.testing.assert_array_equal(J1, J2)
    tj.set_num_threads(2)
    np.testing.assert_array_equal(tj.jacobian(f, A, X, B, wrt=1, layout="vec"),
                                  tj.jacobian(f, A, X, B, wrt=1, layout="vec", num_threads=1))
    assert_close(J1, fd_reference(f, (A, X, B), 1), FD_RTOL)


# ----------------------------------------------------------------------------- dtypes


@needs_engine
def test_float32_stays_float32():
    x = _rng(21).standard_normal((2, 3)).astype(np.float32)
    f = lambda x: np.tanh(2 * x) + x**2  # Python scalars keep float32
    J = tj.jacobian(f, x)
    assert f(x).dtype == np.float32
    assert J.dtype == np.float32
    x64 = x.astype(np.float64)
    want = np.diag((2 * (1 - np.tanh(2 * x64) ** 2) + 2 * x64).ravel()).reshape(2, 3, 2, 3)
    assert_close(J, want, 2e-6)


@needs_engine
def test_float32_with_float64_constants_is_float64():
    r = _rng(22)
    x = r.standard_normal(3).astype(np.float32)
    A = r.standard_normal((2, 3))
    J = tj.jacobian(lambda x, A: A @ x, x, A)
    assert J.dtype == np.float64
    np.testing.assert_array_equal(J, A)
    J = tj.jacobian(lambda x: x * np.float64(1.5), x)  # numpy float64 scalar: float64 output
    assert J.dtype == np.float64


@needs_engine
def test_real_input_complex_constant_gives_complex():
    x = np.array([0.5, -1.0])
    c = np.array([1 + 2j, 3 - 1j])
    J = tj.jacobian(lambda x: c * x**2, x)
    assert J.dtype == np.complex128
    np.testing.assert_allclose(J, np.diag(2 * c * x), rtol=1e-14)


@needs_engine
@pytest.mark.parametrize(("name", "w"), COMPLEX_CASES, ids=COMPLEX_IDS)
def test_complex_holomorphic(name, w):
    f, make, _, closed = COMPLEX[name]
    args = make(_rng(4))
    J = tj.jacobian(f, *args, wrt=w)
    assert J.dtype == np.complex128
    assert_close(J, closed(args, w), CLOSED_RTOL)


# ----------------------------------------------------------------------------- memory layouts, 0-d, zero-size


@needs_engine
@pytest.mark.parametrize("kind", VIEW_KINDS + ("big-endian",))
def test_memory_layouts_of_inputs(kind):
    args = sandwich_args(23)

    def view(a):
        return a.astype(a.dtype.newbyteorder(">")) if kind == "big-endian" else as_view(a, kind)

    vargs = tuple(view(a) for a in args)
    for w in range(3):
        J = tj.jacobian(tanh_sandwich, *vargs, wrt=w)
        assert J.dtype == np.float64 and J.dtype.isnative
        assert_close(J, tanh_sandwich_T(args, w), CLOSED_RTOL)


@needs_engine
def test_zero_d_inputs_and_outputs():
    t = np.array(0.3)
    f = lambda t: np.sin(t) * t
    d = np.cos(0.3) * 0.3 + np.sin(0.3)
    for layout, shape in (("tensor", ()), ("gradient", ()), ("numerator", ()), ("matrix", (1, 1)), ("vec", (1, 1)),
                          ("diagonal", ())):
        J = tj.jacobian(f, t, layout=layout)
        assert np.shape(J) == shape, (layout, np.shape(J))
        assert_close(np.reshape(J, ()), d, CLOSED_RTOL)
    J = tj.jacobian(lambda t: np.array([1.0, 2.0, 3.0]) * t**2, t)
    assert J.shape == (3,)
    assert_close(J, np.array([1.0, 2.0, 3.0]) * 2 * 0.3, CLOSED_RTOL)
    X = _rng(24).standard_normal((2, 3))
    J = tj.jacobian(lambda X: np.sum(X**2), X, layout="matrix")
    assert J.shape == (1, 6)
    assert_close(J, 2 * X.reshape(1, 6), CLOSED_RTOL)


@needs_engine
def test_zero_size():
    X = np.zeros((0, 3))
    J = tj.jacobian(lambda X: np.tanh(X), X)
    assert J.shape == (0, 3, 0, 3)
    J = tj.jacobian(lambda X: np.sum(X), X)
    assert J.shape == (0, 3)
    A, W = np.zeros((3, 0)), np.zeros((0, 2))
    value, J = tj.value_and_jacobian(lambda A, W: A @ W, A, W, wrt=0)
    np.testing.assert_array_equal(value, np.zeros((3, 2)))
    assert J.shape == (3, 2, 3, 0)
    J = tj.jacobian(lambda A, W: A @ W, A, W, wrt=1, layout="matrix")
    assert J.shape == (6, 0)
    J = tj.jacobian(lambda x: np.sum(x**2) + 1.0, np.zeros(0))  # empty input, scalar output
    assert J.shape == (0,)


# ----------------------------------------------------------------------------- the user's arrays, f raising


@needs_engine
def test_in_place_on_traced_input_leaves_user_array():
    x = _rng(25).standard_normal(4)
    x0 = x.copy()

    def f(x):
        x += 1.0
        x[0] = 3 * x[1]
        x *= x
        return 2 * x

    J = tj.jacobian(f, x)
    np.testing.assert_array_equal(x, x0)
    assert_close(J, fd_reference(f, (x.copy(),), 0), FD_RTOL)
    np.testing.assert_array_equal(x, x0)


@needs_engine
def test_f_raising_propagates_same_exception_and_leaves_arrays():
    r = _rng(26)
    x, A = r.standard_normal(3), r.standard_normal((3, 3))
    x0, A0 = x.copy(), A.copy()
    err = KeyError("boom")

    def f(x, A):
        x *= 2
        x[0] = 0.0
        raise err

    for call in (lambda: tj.jacobian(f, x, A), lambda: tj.jacobian(f, x, A, wrt=(0, 1)),
                 lambda: tj.value_and_jacobian(f, x, A), lambda: tj.grad(f, x, A),
                 lambda: tj.vjp(f, x, A, cotangent=np.ones(3)), lambda: tj.jvp(f, x, A, tangent=np.ones(3))):
        with pytest.raises(KeyError) as exc:
            call()
        assert exc.value is err
        np.testing.assert_array_equal(x, x0)
        np.testing.assert_array_equal(A, A0)


@needs_engine
def test_numpy_errors_inside_f_propagate():
    with pytest.raises(np.linalg.LinAlgError):
        tj.jacobian(lambda X: np.linalg.inv(X), np.zeros((3, 3)))
    with pytest.raises(ValueError):  # numpy's own broadcasting error, not a TypeError
        tj.jacobian(lambda x: x + np.ones(5), np.ones(3))


# ----------------------------------------------------------------------------- the op path


def _op_args(r):
    A, X, B = r.standard_normal((2, 3)), r.standard_normal((3, 4)), r.standard_normal((4, 2))
    S = WC(r, 3)
    x, y = r.standard_normal(3), r.standard_normal(4)
    M = r.standard_normal((3, 4))
    P = r.uniform(0.5, 2.0, (3, 4))
    return {
        "inv": (tj.inv, (S,), (0,)),
        "det": (tj.det, (S,), (0,)),
        "logdet": (tj.logdet, (S,), (0,)),
        "sandwich": (tj.sandwich, (A, X, B), (0, 1, 2)),
        "matmul": (tj.matmul, (X, B), (0, 1)),
        "kron": (tj.kron, (A, r.standard_normal((2, 2))), (0, 1)),
        "outer": (tj.outer, (x, y), (0, 1)),
        "trace": (tj.trace, (S,), (0,)),
        "norm": (tj.norm, (M,), (0,)),
        "quadratic": (tj.quadratic, (x, S), (0, 1)),
        "dot": (tj.dot, (y, y[::-1].copy()), (0, 1)),
        "tanh": (tj.tanh, (M,), (0,)),
        "sigmoid": (tj.sigmoid, (M,), (0,)),
        "log": (tj.log, (P,), (0,)),
        "sqrt": (tj.sqrt, (P,), (0,)),
        "transpose": (tj.transpose, (M,), (0,)),
        "sum": (tj.sum, (M,), (0,)),
    }


OP_PATH = sorted(_op_args(_rng(0)))


@pytest.mark.parametrize("name", OP_PATH)
def test_reference_op_path_args(name):
    """The op-path arguments are valid for the ops (this runs today, through the op path only)."""
    op, args, wrts = _op_args(_rng(27))[name]
    for w in wrts:
        assert_close(tj.jacobian(op, *args, wrt=w), fd_reference(op, args, w), FD_RTOL)


@needs_engine
def test_numpy_function_itself_as_f():
    r = _rng(29)
    x, X = r.standard_normal(4), WC(r, 3)
    assert_close(tj.jacobian(np.tanh, x), np.diag(1 - np.tanh(x) ** 2), CLOSED_RTOL)
    Xi = np.linalg.inv(X)
    assert_close(tj.jacobian(np.linalg.inv, X), -np.einsum("ik,lj->ijkl", Xi, Xi), CLOSED_RTOL)


@needs_engine
@pytest.mark.parametrize("layout", ["tensor", "vec"])
@pytest.mark.parametrize("name", OP_PATH)
def test_same_result_as_op_path(name, layout):
    op, args, wrts = _op_args(_rng(27))[name]
    for w in wrts:
        J_op = tj.jacobian(op, *args, wrt=w, layout=layout)
        J_f = tj.jacobian(lambda *a: op(*a), *args, wrt=w, layout=layout)
        assert J_f.shape == J_op.shape and J_f.dtype == J_op.dtype
        np.testing.assert_allclose(J_f, J_op, rtol=1e-14, atol=1e-14 * max(1.0, np.max(np.abs(J_op), initial=0)))


# ----------------------------------------------------------------------------- Python control flow


@needs_engine
def test_if_on_values_takes_the_branch():
    def f(x):
        if x.sum() > 0:
            return np.sin(x)
        return x**2

    xp = np.array([0.5, 1.0, -0.2])
    xn = -xp
    assert_close(tj.jacobian(f, xp), np.diag(np.cos(xp)), CLOSED_RTOL)
    assert_close(tj.jacobian(f, xn), np.diag(2 * xn), CLOSED_RTOL)


@needs_engine
def test_loops_and_early_return():
    def f(x):
        y = x
        for _ in range(3):
            y = np.tanh(y)
        return y

    x = np.array([0.3, -0.8, 1.1])
    d, y = np.ones(3), x
    for _ in range(3):
        y = np.tanh(y)
        d = d * (1 - y**2)
    assert_close(tj.jacobian(f, x), np.diag(d), CLOSED_RTOL)

    def halve(x):
        while np.max(np.abs(x)) > 0.1:  # a value-dependent number of iterations
            x = x / 2
        return x

    x = np.array([1.5, -0.7])
    k = int(np.ceil(np.log2(1.5 / 0.1)))  # halvings until max |x| <= 0.1
    assert np.max(np.abs(x / 2**k)) <= 0.1 < np.max(np.abs(x / 2 ** (k - 1)))
    assert_close(tj.jacobian(halve, x), np.eye(2) / 2**k, CLOSED_RTOL)

    def early(x):
        if bool(x[0] > 0) and (x > -5).all():
            return 2 * x
        return x**3

    assert_close(tj.jacobian(early, np.array([1.0, 2.0])), 2 * np.eye(2), CLOSED_RTOL)
    assert_close(tj.jacobian(early, np.array([-1.0, 2.0])), np.diag([3.0, 12.0]), CLOSED_RTOL)


@needs_engine
def test_python_builtins_on_traced_values():
    x = np.array([0.3, -1.2, 2.0])
    assert_close(tj.jacobian(lambda x: sum(x[i] ** 2 for i in range(3)), x), 2 * x, CLOSED_RTOL)
    assert_close(tj.jacobian(lambda x: max(x[0], x[2]) * 3, x), np.array([0.0, 0.0, 3.0]), CLOSED_RTOL)
    assert_close(tj.jacobian(lambda x: x * len(x) + x.shape[0] + x.ndim + x.size, x), 3 * np.eye(3), CLOSED_RTOL)


@needs_engine
def test_iterating_over_a_traced_array_is_right_or_refused():
    X = _rng(31).standard_normal((3, 2))
    try:
        J = tj.jacobian(lambda X: np.stack([np.sum(row**2) for row in X]), X)
    except TypeError as e:
        assert "tj.fd.jacobian" in str(e), str(e)
    else:
        assert_close(J, np.einsum("ik,kl->ikl", np.eye(3), 2 * X), CLOSED_RTOL)


@needs_engine
def test_comparisons_are_plain_bool_arrays():
    seen = []

    def f(x):
        m = x > 0
        seen.append(m)
        return np.where(m, x, 0.1 * x)

    x = np.array([0.5, -0.5, 2.0])
    J = tj.jacobian(f, x)
    assert type(seen[0]) is np.ndarray and seen[0].dtype == np.bool_
    np.testing.assert_array_equal(seen[0], x > 0)
    assert_close(J, np.diag([1.0, 0.1, 1.0]), CLOSED_RTOL)


# ----------------------------------------------------------------------------- the diagonal layout


DIAGONAL_OK = {
    "tanh_affine_vec": (lambda x: np.tanh(2 * x + 1), lambda x: 2 * (1 - np.tanh(2 * x + 1) ** 2), (5,)),
    "tanh_affine_mat": (lambda x: np.tanh(2 * x + 1), lambda x: 2 * (1 - np.tanh(2 * x + 1) ** 2), (2, 3)),
    "exp_times_sin": (lambda x: np.exp(x) * np.sin(x), lambda x: np.exp(x) * (np.sin(x) + np.cos(x)), (2, 3)),
    "times_constant": (lambda x: x * np.arange(6.0).reshape(2, 3), lambda x: np.arange(6.0).reshape(2, 3), (2, 3)),
    "maximum_const": (lambda x: np.maximum(x, 0.3) ** 2, lambda x: np.where(x >= 0.3, 2 * x, 0.0), (4,)),
    "tj_sigmoid_sq": (lambda x: tj.sigmoid(x) ** 2,
                      lambda x: 2 * np.exp(-x) / (1 + np.exp(-x)) ** 3, (3,)),
}


@needs_engine
@pytest.mark.parametrize("name", sorted(DIAGONAL_OK))
def test_diagonal_layout(name):
    f, d, shape = DIAGONAL_OK[name]
    x = np.linspace(-1.3, 1.1, int(np.prod(shape))).reshape(shape)
    x = x + 0.05 * (np.abs(x - 0.3) < 0.05)  # away from maximum's tie at 0.3
    J = tj.jacobian(f, x, layout="diagonal")
    assert J.shape == shape
    assert_close(J, d(x), CLOSED_RTOL)
    assert_close(J, to_layout(fd_reference(f, (x,), 0), shape, shape, "diagonal"), FD_RTOL)


DIAGONAL_BAD = {
    "reverse": (lambda x: x[::-1], (4,)),
    "matvec": (lambda x: np.arange(16.0).reshape(4, 4) @ x, (4,)),
    "minus_mean": (lambda x: x - x.mean(), (4,)),
    "transpose_square": (lambda X: X.T, (3, 3)),
    "sum": (lambda x: np.sum(x), (4,)),
    "outer": (lambda x: np.outer(x, x), (4,)),
    "roll_by_concat": (lambda x: np.concatenate([x[1:], x[:1]]), (4,)),
}


@needs_engine
@pytest.mark.parametrize("name", sorted(DIAGONAL_BAD))
def test_diagonal_layout_refused(name):
    f, shape = DIAGONAL_BAD[name]
    x = np.linspace(0.1, 0.9, int(np.prod(shape))).reshape(shape)
    with pytest.raises(ValueError):
        tj.jacobian(f, x, layout="diagonal")


# ----------------------------------------------------------------------------- the memory budget


@needs_engine
@pytest.mark.parametrize("layout", ["tensor", "matrix"])
def test_memory_budget_refused_before_allocation(layout):
    X, W = dense_args(28, 60, 60, 60)  # J: 60^4 float64 = 104 MB
    tj.set_memory_budget(1 << 20)  # restored by conftest's autouse fixture
    tracemalloc.start()
    try:
        with pytest.raises(tj.JacobianTooLargeError) as exc:
            tj.jacobian(dense, X, W, wrt=0, layout=layout)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(exc.value, MemoryError)
    assert "GiB" in str(exc.value)
    assert peak < 10 * 2**20, f"peak {peak / 2**20:.1f} MiB before the refusal"
    with pytest.raises(tj.JacobianTooLargeError):
        tj.jacobian(dense, X, W, wrt=(0, 1), layout=layout)
    tj.set_memory_budget(None)
    J = tj.jacobian(dense, X[:5], W[:, :5], wrt=0)  # small again: works after the refusal
    assert_close(J, dense_T((X[:5], W[:, :5]), 0), CLOSED_RTOL)


# ----------------------------------------------------------------------------- repeated calls (no stale state)


@needs_engine
def test_repeated_calls_see_new_constants():
    """The same f called again with the same shapes: every constant is read afresh (arguments,
    closure arrays mutated in place, Python numbers, index arrays, masks, einsum subscripts)."""
    r = _rng(40)
    x = r.standard_normal(3)
    f = lambda x, A: np.tanh(A @ x)
    for seed in (1, 2, 3):
        A = _rng(seed).standard_normal((2, 3))
        assert_close(tj.jacobian(f, x, A), (1 - np.tanh(A @ x) ** 2)[:, None] * A, CLOSED_RTOL)

    C = np.ones(3)
    g = lambda x: x * C
    np.testing.assert_array_equal(tj.jacobian(g, x), np.eye(3))
    C[:] = [2.0, 3.0, 4.0]  # same object, new contents
    np.testing.assert_array_equal(tj.jacobian(g, x), np.diag([2.0, 3.0, 4.0]))

    scale = [2.0]
    h = lambda x: x * scale[0]
    np.testing.assert_array_equal(tj.jacobian(h, x), 2 * np.eye(3))
    scale[0] = -1.5
    np.testing.assert_array_equal(tj.jacobian(h, x), -1.5 * np.eye(3))

    idx = np.array([0, 1])
    k = lambda x: x[idx] * 1.0
    np.testing.assert_array_equal(tj.jacobian(k, x), np.eye(3)[[0, 1]])
    idx[:] = [2, 2]
    np.testing.assert_array_equal(tj.jacobian(k, x), np.eye(3)[[2, 2]])

    mask = np.array([True, False, True])
    m = lambda x: np.where(mask, x**2, 3 * x)
    np.testing.assert_array_equal(tj.jacobian(m, x, layout="diagonal"), np.where(mask, 2 * x, 3.0))
    mask[:] = [False, True, False]
    np.testing.assert_array_equal(tj.jacobian(m, x, layout="diagonal"), np.where(mask, 2 * x, 3.0))

    subs = ["ij->ij"]
    e = lambda X: np.einsum(subs[0], X) * 1.0
    X = r.standard_normal((2, 2))
    np.testing.assert_array_equal(tj.jacobian(e, X), np.eye(4).reshape(2, 2, 2, 2))
    subs[0] = "ji->ij"
    np.testing.assert_array_equal(tj.jacobian(e, X), np.eye(4).reshape(2, 2, 2, 2).transpose(1, 0, 2, 3))


@needs_engine
def test_repeated_calls_random_constants_and_values():
    """A constant drawn afresh inside f on every call: J uses the constant of that very call."""
    x = np.array([0.5, -1.0, 2.0, 1.5])
    rng = np.random.default_rng(41)

    def f(x):
        c = rng.uniform(1.0, 2.0, 4)
        return x * c

    for _ in range(3):
        value, J = tj.value_and_jacobian(f, x)
        np.testing.assert_allclose(J, np.diag(value / x), rtol=1e-15)


@needs_engine
def test_repeated_calls_other_branch_dtype_wrt_and_layout():
    def f(x, y):
        if np.sum(x) > 0:
            return x * y
        return x**2 + y

    x, y = np.array([1.0, 2.0]), np.array([3.0, -1.0])
    for _ in range(2):  # alternate the branches several times with the same shapes
        assert_close(tj.jacobian(f, x, y), np.diag(y), CLOSED_RTOL)
        assert_close(tj.jacobian(f, -x, y), np.diag(-2 * x), CLOSED_RTOL)
        assert_close(tj.jacobian(f, x, y, wrt=1), np.diag(x), CLOSED_RTOL)
        assert_close(tj.jacobian(f, -x, y, wrt=1), np.eye(2), CLOSED_RTOL)
        J32 = tj.jacobian(f, x.astype(np.float32), y.astype(np.float32))
        assert J32.dtype == np.float32
        assert_close(tj.jacobian(f, x, y, layout="vec"), np.diag(y), CLOSED_RTOL)

    X = _rng(42).standard_normal((3, 3)) + 3 * np.eye(3)
    inv = lambda X: np.linalg.inv(X)
    for s in (1.0, 2.0, -0.5):
        Xi = np.linalg.inv(s * X)
        assert_close(tj.jacobian(inv, s * X), -np.einsum("ik,lj->ijkl", Xi, Xi), CLOSED_RTOL)


@needs_engine
def test_repeated_calls_in_place_on_constant_copy():
    """f mutates a fresh constant each call (a plain array built inside f): no state carries over."""
    def f(x):
        w = np.arange(1.0, 4.0)
        w[0] += 10.0  # plain array, plain numbers: fine
        return x * w

    for _ in range(3):
        np.testing.assert_array_equal(tj.jacobian(f, np.ones(3)), np.diag([11.0, 2.0, 3.0]))
