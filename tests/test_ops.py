"""The op catalogue: values, Jacobians against finite differences and einsum references,
dtypes, out=, strides, zero-size and 0-d arrays, special points, random shapes."""

from __future__ import annotations

import numpy as np
import pytest
import tensorjac as tj
from conftest import (
    ALL_OPS,
    CASE_IDS,
    CASES,
    DIAGONAL_OPS,
    ELEMENTWISE,
    ELEMENTWISE_REF,
    HOLO_CASES,
    HOLO_IDS,
    HOLOMORPHIC,
    LAYOUTS,
    NARGS,
    NON_HOLOMORPHIC,
    VIEW_KINDS,
    as_view,
    assert_close,
    cofactor,
    fd_tensor,
    make_args,
    op_of,
    ref_tensor,
    ref_value,
    to_layout,
)
from hypothesis import given, settings
from hypothesis import strategies as st

HYP = settings(max_examples=25, deadline=None, derandomize=True, database=None)


def _want(name, args, wrt, layout):
    out_shape = np.shape(ref_value(name, *[np.asarray(a) for a in args]))
    return to_layout(ref_tensor(name, args, wrt), out_shape, np.shape(args[wrt]), layout)


# ----------------------------------------------------------------------------- the catalogue


def test_catalogue_complete():
    assert len(ALL_OPS) >= 25
    for name in ALL_OPS:
        op = getattr(tj, name)
        assert isinstance(op, tj.Op)
        assert tj.CATALOGUE[name] is op
        assert len(op.argnames) == NARGS.get(name, 1)
        assert name in tj.__all__


@pytest.mark.parametrize("name", ALL_OPS)
def test_every_op_has_an_independent_reference(name):
    """A new op in the registry needs a numpy value and an einsum Jacobian in conftest.py."""
    args = make_args(name)
    ref_value(name, *args)
    for wrt in range(len(args)):
        assert ref_tensor(name, args, wrt).ndim >= 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128], ids=["f64", "f32", "c128"])
@pytest.mark.parametrize("name", ALL_OPS)
def test_value_matches_numpy(name, dtype):
    if np.dtype(dtype).kind == "c" and name not in HOLOMORPHIC:
        pytest.skip("not holomorphic")
    args = make_args(name, dtype)
    got = op_of(name)(*args)
    assert isinstance(got, np.ndarray)
    want = ref_value(name, *[a.astype(np.complex128 if a.dtype.kind == "c" else np.float64) for a in args])
    assert got.shape == np.shape(want)
    assert got.dtype == np.dtype(dtype)
    assert_close(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize(("name", "wrt"), CASES, ids=CASE_IDS)
def test_tensor_vs_central_differences(name, wrt):
    args = make_args(name)
    J = tj.jacobian(op_of(name), *args, wrt=wrt)
    fd = fd_tensor(lambda *a: ref_value(name, *a), args, wrt)
    assert J.shape == fd.shape
    assert_close(J, fd, rtol=1e-6)
    # and the einsum construction agrees with the same differences (the reference is sound)
    assert_close(ref_tensor(name, args, wrt), fd, rtol=1e-6)


@pytest.mark.parametrize(("name", "wrt"), HOLO_CASES, ids=HOLO_IDS)
def test_complex_tensor_vs_central_differences(name, wrt):
    """Holomorphic derivative: a real step in central differences gives f'(z)."""
    args = make_args(name, np.complex128)
    J = tj.jacobian(op_of(name), *args, wrt=wrt)
    assert J.dtype == np.complex128
    fd = fd_tensor(lambda *a: ref_value(name, *a), args, wrt)
    assert_close(J, fd, rtol=1e-6)
    # the derivative along an imaginary step is i f'(z) (Cauchy-Riemann)
    x = args[wrt]
    e = np.zeros(x.shape, complex)
    e.flat[0] = 1e-6j
    plus, minus = list(args), list(args)
    plus[wrt], minus[wrt] = x + e, x - e
    dy = (ref_value(name, *plus) - ref_value(name, *minus)) / 2e-6
    assert_close(dy, 1j * np.reshape(J, np.shape(dy) + (-1,))[..., 0], rtol=1e-6)


@pytest.mark.parametrize("name", NON_HOLOMORPHIC)
def test_complex_input_to_non_holomorphic_op_raises(name):
    args = make_args(name, np.complex128)
    for wrt in range(len(args)):
        with pytest.raises(TypeError):
            tj.jacobian(op_of(name), *args, wrt=wrt)
    # one complex argument is enough
    real = make_args(name)
    with pytest.raises(TypeError):
        tj.jacobian(op_of(name), *(a.astype(complex) for a in real))


# ----------------------------------------------------------------------------- API equivalences


@pytest.mark.parametrize(("name", "wrt"), CASES, ids=CASE_IDS)
def test_method_name_and_negative_wrt_agree(name, wrt):
    op = op_of(name)
    args = make_args(name)
    n = len(args)
    ref = tj.jacobian(op, *args, wrt=wrt, layout="vec")
    np.testing.assert_array_equal(op.jacobian(*args, wrt=wrt, layout="vec"), ref)
    np.testing.assert_array_equal(tj.jacobian(op, *args, wrt=op.argnames[wrt], layout="vec"), ref)
    np.testing.assert_array_equal(tj.jacobian(op, *args, wrt=wrt - n, layout="vec"), ref)
    np.testing.assert_array_equal(tj.jacobian(op, *args, wrt=np.int64(wrt), layout="vec"), ref)
    if wrt == 0:
        np.testing.assert_array_equal(tj.jacobian(op, *args, layout="vec"), ref)  # default wrt=0


def test_argnames():
    assert tj.sandwich.argnames == ("A", "X", "B")
    assert len(tj.matmul.argnames) == 2 and len(set(tj.matmul.argnames)) == 2
    A, X, B = make_args("sandwich")
    want = np.einsum("ik,lj->ijkl", A, B)
    np.testing.assert_allclose(tj.jacobian(tj.sandwich, A, X, B, wrt="X"), want, rtol=1e-15)


def test_args_accept_nested_lists():
    J = tj.jacobian(tj.matmul, [[1.0, 2.0], [3.0, 4.0]], [5.0, 6.0], wrt=1)
    np.testing.assert_array_equal(J, [[1.0, 2.0], [3.0, 4.0]])
    assert J.dtype == np.float64


# ----------------------------------------------------------------------------- dtypes


def _int_args(name):
    args = make_args(name)
    out = tuple(np.rint(2 * a).astype(np.int64) for a in args)
    if name in ("log", "sqrt"):
        out = (np.abs(out[0]) + 1,)
    if name in ("inv", "det", "logdet"):
        out = (out[0] + 8 * np.eye(3, dtype=np.int64),)
    return out


@pytest.mark.parametrize(("name", "wrt"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("layout", ["tensor", "vec"])
def test_integer_input_is_float64(name, wrt, layout):
    args = _int_args(name)
    J = tj.jacobian(op_of(name), *args, wrt=wrt, layout=layout)
    assert J.dtype == np.float64
    fargs = tuple(a.astype(np.float64) for a in args)
    assert_close(J, _want(name, fargs, wrt, layout), rtol=1e-10 if name == "det" else 1e-12)
    v = op_of(name)(*args)
    assert v.dtype == np.float64
    assert_close(v, ref_value(name, *fargs), rtol=1e-12)


@pytest.mark.parametrize("idt", [np.int8, np.int32, np.int64, np.uint16, np.bool_])
def test_small_integer_and_bool_inputs_are_float64(idt):
    X = np.array([[1, 0, 1], [0, 1, 1]]).astype(idt)
    Y = np.array([[1, 1, 0], [0, 1, 1]]).astype(idt)
    J = tj.jacobian(tj.multiply, X, Y, wrt=0, layout="diagonal")
    assert J.dtype == np.float64
    np.testing.assert_array_equal(J, Y.astype(np.float64))
    J = tj.jacobian(tj.matmul, X, Y.T, wrt=1)
    assert J.dtype == np.float64
    np.testing.assert_array_equal(J, np.einsum("ia,jl->ijal", X.astype(float), np.eye(2)))
    assert tj.jacobian(tj.sum, X).dtype == np.float64


@pytest.mark.parametrize(
    ("d0", "d1"),
    [
        (np.float32, np.float64),
        (np.float64, np.float32),
        (np.float32, np.int64),
        (np.int32, np.float32),
        (np.float32, np.complex128),
        (np.float64, np.complex128),
        (np.int64, np.complex128),
    ],
)
@pytest.mark.parametrize("layout", ["tensor", "gradient"])
def test_mixed_dtypes_follow_numpy_promotion(d0, d1, layout):
    A, B = make_args("matmul")
    A, B = np.rint(4 * A).astype(d0), np.rint(4 * B).astype(d1)
    expected = np.result_type(A, B)
    J0 = tj.jacobian(tj.matmul, A, B, wrt=0, layout=layout)
    J1 = tj.jacobian(tj.matmul, A, B, wrt=1, layout=layout)
    assert J0.dtype == expected and J1.dtype == expected
    assert tj.matmul(A, B).dtype == expected
    fa, fb = np.real(A).astype(np.float64), np.real(B).astype(np.float64)
    np.testing.assert_array_equal(J0, _want("matmul", (fa, fb), 0, layout))
    np.testing.assert_array_equal(J1, _want("matmul", (fa, fb), 1, layout))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
@pytest.mark.parametrize("name", DIAGONAL_OPS)
def test_diagonal_dtype_preserved(name, dtype):
    if np.dtype(dtype).kind == "c" and name in NON_HOLOMORPHIC:
        pytest.skip("not holomorphic")
    args = make_args(name, dtype)
    D = tj.jacobian(op_of(name), *args, layout="diagonal")
    assert D.dtype == np.dtype(dtype)
    assert D.shape == args[0].shape


# ----------------------------------------------------------------------------- diagonal layout


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_diagonal_layout_elementwise(name, dtype):
    (X,) = make_args(name, dtype)
    D = tj.jacobian(op_of(name), X, layout="diagonal")
    assert D.shape == X.shape
    assert D.dtype == np.dtype(dtype)
    want = ELEMENTWISE_REF[name][1](X.astype(np.float64))
    assert_close(D, want, rtol=2e-5 if dtype == np.float32 else 1e-12)
    # the full tensor is diag of it
    T = tj.jacobian(op_of(name), X)
    np.testing.assert_array_equal(T.reshape(X.size, X.size), np.diag(D.ravel()))


@pytest.mark.parametrize("shape", [(), (5,), (2, 3), (2, 1, 3), (2, 2, 2, 2)])
def test_diagonal_layout_multiply_any_rank(shape):
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal(shape), rng.standard_normal(shape)
    np.testing.assert_array_equal(tj.jacobian(tj.multiply, X, Y, wrt=0, layout="diagonal"), Y)
    np.testing.assert_array_equal(tj.jacobian(tj.multiply, X, Y, wrt=1, layout="diagonal"), X)
    np.testing.assert_array_equal(tj.jacobian(tj.multiply, X, Y, wrt=0), ref_tensor("multiply", (X, Y), 0))


@pytest.mark.parametrize("shape", [(), (4,), (2, 3), (2, 3, 2)])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_any_rank(name, shape):
    rng = np.random.default_rng(1)
    X = rng.uniform(0.5, 2.0, shape) * (1 if name in ("log", "sqrt") else rng.choice([-1, 1], shape))
    op = op_of(name)
    np.testing.assert_allclose(op(X), ELEMENTWISE_REF[name][0](X), rtol=1e-13)
    D = tj.jacobian(op, X, layout="diagonal")
    assert D.shape == shape
    np.testing.assert_allclose(D, ELEMENTWISE_REF[name][1](X), rtol=1e-12)
    for layout in LAYOUTS:
        J = tj.jacobian(op, X, layout=layout)
        assert_close(J, to_layout(ref_tensor(name, (X,), 0), shape, shape, layout), rtol=1e-12)


# ----------------------------------------------------------------------------- out=


def _out_buffer(shape, dtype, kind):
    """(buffer, check) : an out= array of the requested memory layout, NaN-filled, and
    a function asserting nothing outside the view was written."""
    if kind == "step":
        sentinel = 12345.0
        big = np.full(tuple(2 * s + 1 for s in shape), sentinel, dtype=dtype)
        sl = tuple(slice(1, 2 * s, 2) for s in shape) + (Ellipsis,)
        view = big[sl]
        view[...] = np.nan

        def check():
            mask = np.ones(big.shape, bool)
            mask[sl] = False
            assert np.all(big[mask] == sentinel), "out=: wrote outside the view"

        return view, check
    buf = as_view(np.full(shape, np.nan, dtype=dtype), kind)
    return buf, lambda: None


@pytest.mark.parametrize("kind", VIEW_KINDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("name", "wrt"), CASES, ids=CASE_IDS)
def test_out_is_written_in_place(name, wrt, layout, kind):
    op = op_of(name)
    args = make_args(name)
    want = _want(name, args, wrt, layout)
    out, check = _out_buffer(want.shape, np.float64, kind)
    res = tj.jacobian(op, *args, wrt=wrt, layout=layout, out=out)
    assert res is out
    assert_close(out, want, rtol=1e-10 if name == "det" else 1e-12)
    check()
    # a second call into the same buffer overwrites every element (zeros included)
    out[...] = 7.0
    res = op.jacobian(*args, wrt=wrt, layout=layout, out=out)
    assert res is out
    assert_close(out, want, rtol=1e-10 if name == "det" else 1e-12)


@pytest.mark.parametrize("kind", VIEW_KINDS)
@pytest.mark.parametrize("name", DIAGONAL_OPS)
def test_out_diagonal(name, kind):
    args = make_args(name, np.float32)
    want = to_layout(ref_tensor(name, args, 0), args[0].shape, args[0].shape, "diagonal")
    out, check = _out_buffer(args[0].shape, np.float32, kind)
    assert tj.jacobian(op_of(name), *args, layout="diagonal", out=out) is out
    assert_close(out, want, rtol=2e-5)
    check()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_out_complex_and_float32(layout):
    for dtype in (np.float32, np.complex128):
        args = make_args("sandwich", dtype)
        want = _want("sandwich", args, 1, layout)
        out, check = _out_buffer(want.shape, dtype, "step")
        assert tj.jacobian(tj.sandwich, *args, wrt=1, layout=layout, out=out) is out
        assert_close(out, want, rtol=2e-5 if dtype == np.float32 else 1e-12)
        check()


def test_out_scalar_result():
    x = np.array(1.5)
    out = np.empty(())
    assert tj.jacobian(tj.sum, x, out=out) is out
    assert out[()] == 1.0
    out = np.empty((1, 1))
    assert tj.jacobian(tj.exp, x, layout="matrix", out=out) is out
    assert out[0, 0] == pytest.approx(np.exp(1.5), rel=1e-15)


# ----------------------------------------------------------------------------- non-contiguous inputs


@pytest.mark.parametrize("kind", ["F", "step", "neg", "T"])
@pytest.mark.parametrize(("name", "wrt"), CASES, ids=CASE_IDS)
def test_noncontiguous_inputs(name, wrt, kind):
    args = make_args(name)
    views = tuple(as_view(a, kind) for a in args)
    for a, v in zip(args, views):
        np.testing.assert_array_equal(a, v)
    if kind in ("step", "neg") and any(a.ndim > 0 and a.size > 1 for a in args):
        assert not all(v.flags.c_contiguous for v in views)
    op = op_of(name)
    assert_close(op(*views), ref_value(name, *args), rtol=1e-12)
    for layout in ("tensor", "vec"):
        J = tj.jacobian(op, *views, wrt=wrt, layout=layout)
        assert_close(J, _want(name, args, wrt, layout), rtol=1e-10 if name == "det" else 1e-12)
    if name in DIAGONAL_OPS:
        D = tj.jacobian(op, *views, wrt=wrt, layout="diagonal")
        assert_close(D, _want(name, args, wrt, "diagonal"), rtol=1e-12)


def test_broadcast_zero_stride_inputs():
    """Read-only inputs with zero strides (np.broadcast_to) are valid arrays."""
    X = np.broadcast_to(np.array([1.0, 2.0, 3.0]), (2, 3))
    Y = np.broadcast_to(np.array([[4.0], [5.0]]), (2, 3))
    np.testing.assert_array_equal(tj.jacobian(tj.multiply, X, Y, wrt=0, layout="diagonal"), np.asarray(Y))
    np.testing.assert_array_equal(tj.jacobian(tj.multiply, X, Y, wrt=0), ref_tensor("multiply", (X, Y), 0))
    A = np.broadcast_to(np.arange(3.0), (4, 3))
    B = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(tj.jacobian(tj.matmul, A, B, wrt=1), ref_tensor("matmul", (A, B), 1))


# ----------------------------------------------------------------------------- zero-size and 0-d


@pytest.mark.parametrize(
    ("name", "args", "wrt"),
    [
        ("matmul", (np.ones((0, 3)), np.ones((3, 2))), 0),
        ("matmul", (np.ones((0, 3)), np.ones((3, 2))), 1),
        ("matmul", (np.ones((2, 0)), np.ones((0, 3))), 0),
        ("matmul", (np.ones((2, 0)), np.ones((0, 3))), 1),
        ("matmul", (np.ones(0), np.ones(0)), 0),
        ("matmul", (np.ones((3, 0)), np.ones(0)), 0),
        ("sandwich", (np.ones((2, 0)), np.ones((0, 3)), np.ones((3, 2))), 1),
        ("multiply", (np.ones((0, 4)), np.ones((0, 4))), 0),
        ("multiply", (np.ones((3, 0, 2)), np.ones((3, 0, 2))), 1),
        ("sum", (np.ones(0),), 0),
        ("sum", (np.ones((2, 0)),), 0),
        ("inv", (np.ones((0, 0)),), 0),
        ("det", (np.ones((0, 0)),), 0),
        ("trace", (np.ones((0, 3)),), 0),
        ("transpose", (np.ones((0, 3)),), 0),
        ("kron", (np.ones((0, 2)), np.ones((2, 2))), 0),
        ("kron", (np.ones((0, 2)), np.ones((2, 2))), 1),
        ("outer", (np.ones(0), np.ones(3)), 1),
        ("dot", (np.ones(0), np.ones(0)), 0),
        ("norm", (np.ones((0, 2)),), 0),
        ("exp", (np.ones(0),), 0),
        ("square", (np.ones((2, 0)),), 0),
    ],
    ids=lambda v: str(v) if isinstance(v, (str, int)) else "",
)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_zero_size(name, args, wrt, layout):
    op = op_of(name)
    val = op(*args)
    want_val = ref_value(name, *args)
    assert val.shape == np.shape(want_val)
    np.testing.assert_array_equal(val, want_val)
    J = tj.jacobian(op, *args, wrt=wrt, layout=layout)
    want = to_layout(ref_tensor(name, args, wrt), np.shape(want_val), args[wrt].shape, layout)
    assert J.shape == want.shape
    assert J.dtype == np.float64
    np.testing.assert_array_equal(J, want)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_zero_d(layout):
    x, y = np.array(-3.0), np.array(2.0)
    for wrt, w in ((0, 2.0), (1, -3.0)):
        J = tj.jacobian(tj.multiply, x, y, wrt=wrt, layout=layout)
        assert J.shape == ((1, 1) if layout in ("matrix", "vec") else ())
        assert J.reshape(()) == w
    assert tj.multiply(x, y).shape == () and tj.multiply(x, y) == -6.0
    assert tj.jacobian(tj.sum, x, layout=layout).reshape(()) == 1.0
    assert tj.sum(x) == -3.0
    assert tj.jacobian(tj.exp, x, layout=layout).reshape(()) == pytest.approx(np.exp(-3.0), rel=1e-15)
    assert tj.jacobian(tj.norm, x, layout=layout).reshape(()) == -1.0
    assert tj.jacobian(tj.transpose, x, layout=layout).reshape(()) == 1.0
    assert tj.jacobian(tj.abs, x, layout=layout).reshape(()) == -1.0
    assert tj.jacobian(tj.exp, x, layout="diagonal").shape == ()
    assert tj.jacobian(tj.multiply, x, y, layout="diagonal").shape == ()


# ----------------------------------------------------------------------------- op semantics and special points


def test_matmul_numpy_semantics():
    rng = np.random.default_rng(2)
    A, x, y, B = rng.standard_normal((3, 4)), rng.standard_normal(4), rng.standard_normal(3), rng.standard_normal((4, 2))
    np.testing.assert_allclose(tj.matmul(A, x), A @ x, rtol=1e-15)
    np.testing.assert_allclose(tj.matmul(y, A), y @ A, rtol=1e-15)
    assert tj.matmul(x, x).shape == ()
    np.testing.assert_allclose(tj.matmul(x, x), x @ x, rtol=1e-15)
    np.testing.assert_allclose(tj.matmul(A, B), A @ B, rtol=1e-15)
    # shapes of every Jacobian
    assert tj.jacobian(tj.matmul, A, x, wrt=0).shape == (3, 3, 4)
    assert tj.jacobian(tj.matmul, A, x, wrt=1).shape == (3, 4)
    assert tj.jacobian(tj.matmul, y, A, wrt=0).shape == (4, 3)
    assert tj.jacobian(tj.matmul, y, A, wrt=1).shape == (4, 3, 4)
    assert tj.jacobian(tj.matmul, x, x, wrt=0).shape == (4,)
    assert tj.jacobian(tj.matmul, A, B, wrt=0).shape == (3, 2, 3, 4)
    # values
    np.testing.assert_array_equal(tj.jacobian(tj.matmul, y, A, wrt=0), A.T)
    np.testing.assert_array_equal(tj.jacobian(tj.matmul, x, 2 * x, wrt=0), 2 * x)
    J = tj.jacobian(tj.matmul, y, A, wrt=1)
    for j, a, l in np.ndindex(4, 3, 4):
        assert J[j, a, l] == (y[a] if j == l else 0.0)


def test_outer_ravels_inputs():
    rng = np.random.default_rng(3)
    u, v = rng.standard_normal((2, 3)), rng.standard_normal((2, 2))
    np.testing.assert_array_equal(tj.outer(u, v), np.outer(u, v))
    J = tj.jacobian(tj.outer, u, v, wrt=0)
    assert J.shape == (6, 4, 2, 3)
    np.testing.assert_array_equal(J, ref_tensor("outer", (u, v), 0))
    uf = np.asfortranarray(u)  # ravel is logical C order, whatever the memory order
    np.testing.assert_array_equal(tj.jacobian(tj.outer, uf, v, wrt=1), ref_tensor("outer", (u, v), 1))


@pytest.mark.parametrize("shape", [(3,), (2, 3), (2, 3, 4), (1, 2, 1, 3)])
def test_transpose_reverses_axes(shape):
    X = np.random.default_rng(4).standard_normal(shape)
    np.testing.assert_array_equal(tj.transpose(X), X.T)
    J = tj.jacobian(tj.transpose, X)
    assert J.shape == shape[::-1] + shape
    np.testing.assert_array_equal(J, ref_tensor("transpose", (X,), 0))
    # applying J to X gives X.T
    np.testing.assert_array_equal(np.tensordot(J, X, axes=X.ndim), X.T)


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (1, 4), (4, 4)])
def test_trace_non_square(shape):
    X = np.random.default_rng(5).standard_normal(shape)
    assert tj.trace(X) == pytest.approx(np.trace(X), rel=1e-15)
    for layout in LAYOUTS:
        J = tj.jacobian(tj.trace, X, layout=layout)
        np.testing.assert_array_equal(J, to_layout(np.eye(*shape), (), shape, layout))


def test_inv_singular_raises_linalgerror():
    S = np.array([[1.0, 2.0], [2.0, 4.0]])
    with pytest.raises(np.linalg.LinAlgError):
        tj.inv(S)
    for layout in LAYOUTS:
        with pytest.raises(np.linalg.LinAlgError):
            tj.jacobian(tj.inv, S, layout=layout)
    with pytest.raises(np.linalg.LinAlgError):
        tj.jacobian(tj.inv, np.zeros((3, 3)), out=np.empty((3, 3, 3, 3)))


@pytest.mark.parametrize(
    "X",
    [
        np.array([[1.0, 2.0], [2.0, 4.0]]),
        np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]),
        np.diag([1.0, 2.0, 0.0]),
        np.zeros((3, 3)),
        np.zeros((1, 1)),
        np.outer([1.0, 2.0, 3.0], [1.0, -1.0, 2.0]),
        np.array([[0.0, 0.0], [0.0, 5.0]]),
    ],
    ids=["2x2-rank1", "3x3-rank2", "diag-rank2", "zero3", "zero1", "outer-rank1", "2x2-one-entry"],
)
def test_det_gradient_is_cofactor_also_when_singular(X):
    want = cofactor(X)
    assert tj.det(X) == pytest.approx(np.linalg.det(X), abs=1e-12)
    J = tj.jacobian(tj.det, X)
    np.testing.assert_allclose(J, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(tj.jacobian(tj.det, X, layout="numerator"), want.T, rtol=1e-9, atol=1e-12)


def test_det_cofactor_literal():
    np.testing.assert_allclose(tj.jacobian(tj.det, [[1.0, 2.0], [2.0, 4.0]]), [[4.0, -2.0], [-2.0, 1.0]], atol=1e-14)
    np.testing.assert_allclose(tj.jacobian(tj.det, [[3.0]]), [[1.0]], atol=0)
    np.testing.assert_allclose(
        tj.jacobian(tj.det, np.diag([1.0, 2.0, 0.0])), np.diag([0.0, 0.0, 2.0]), atol=1e-14
    )


def test_logdet_negative_determinant():
    X = np.array([[0.0, 2.0], [3.0, 1.0]])  # det = -6
    assert tj.logdet(X) == pytest.approx(np.log(6.0), rel=1e-14)
    np.testing.assert_allclose(tj.jacobian(tj.logdet, X), np.linalg.inv(X).T, rtol=1e-14)


def test_norm_gradient_and_zero():
    X = np.array([[3.0, 0.0], [0.0, -4.0]])
    assert tj.norm(X) == 5.0
    np.testing.assert_allclose(tj.jacobian(tj.norm, X), X / 5.0, rtol=1e-15)
    for shape in [(3,), (2, 2), (2, 1, 2), ()]:
        Z = np.zeros(shape)
        J = tj.jacobian(tj.norm, Z)
        assert J.shape == shape
        np.testing.assert_array_equal(J, np.zeros(shape))
        assert np.all(np.isfinite(J))
    v = np.array([1.0, -2.0, 2.0])
    np.testing.assert_allclose(tj.jacobian(tj.norm, v), v / 3.0, rtol=1e-15)


@pytest.mark.parametrize("name", ["relu", "abs"])
def test_kink_derivative_is_zero(name):
    X = np.array([-2.0, -0.0, 0.0, 1e-300, 3.0])
    D = tj.jacobian(op_of(name), X, layout="diagonal")
    want = {"relu": [0.0, 0.0, 0.0, 1.0, 1.0], "abs": [-1.0, 0.0, 0.0, 1.0, 1.0]}[name]
    np.testing.assert_array_equal(D, want)
    np.testing.assert_array_equal(tj.jacobian(op_of(name), X), np.diag(want))
    np.testing.assert_array_equal(tj.jacobian(op_of(name), np.array(0.0)), 0.0)


def test_relu_value():
    X = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(tj.relu(X), [0.0, 0.0, 2.0])
    np.testing.assert_array_equal(tj.abs(X), [1.0, 0.0, 2.0])


def test_sigmoid_softplus_extreme_values_finite():
    X = np.array([-800.0, -30.0, 0.0, 30.0, 800.0])
    s = tj.sigmoid(X)
    assert np.all(np.isfinite(s))
    np.testing.assert_allclose(s, [0.0, 1 / (1 + np.exp(30.0)), 0.5, 1 / (1 + np.exp(-30.0)), 1.0], rtol=1e-14, atol=1e-300)
    Ds = tj.jacobian(tj.sigmoid, X, layout="diagonal")
    assert np.all(np.isfinite(Ds)) and Ds[2] == 0.25
    sp = tj.softplus(X)
    np.testing.assert_allclose(sp, np.logaddexp(0.0, X), rtol=1e-14)
    Dsp = tj.jacobian(tj.softplus, X, layout="diagonal")
    np.testing.assert_allclose(Dsp, s, rtol=1e-14)


@pytest.mark.parametrize("x", [-40.0, -20.0, -10.0, 10.0, 20.0, 30.0, 40.0])
def test_sigmoid_derivative_relative_accuracy(x):
    """sigmoid'(x) = e^-|x| / (1 + e^-|x|)^2 is even in x and tiny but representable in
    the tails; float64 results must hold it to high relative accuracy, like any other entry."""
    e = np.exp(-abs(x))
    want = e / (1.0 + e) ** 2
    D = tj.jacobian(tj.sigmoid, np.array([x]), layout="diagonal")
    np.testing.assert_allclose(D, [want], rtol=1e-10, atol=0)
    T = tj.jacobian(tj.sigmoid, np.array([x, 0.0]))
    np.testing.assert_allclose(T, np.diag([want, 0.25]), rtol=1e-10, atol=0)


@pytest.mark.parametrize("x", [-20.0, -10.0, 5.0, 10.0, 20.0])
def test_tanh_derivative_relative_accuracy(x):
    """tanh'(x) = 1 / cosh(x)^2 (= 1.7e-17 at |x| = 20), to high relative accuracy."""
    want = 1.0 / np.cosh(x) ** 2
    D = tj.jacobian(tj.tanh, np.array([x]), layout="diagonal")
    np.testing.assert_allclose(D, [want], rtol=1e-10, atol=0)


@pytest.mark.parametrize(
    ("scale", "dtype"),
    [(1e-200, np.float64), (1e200, np.float64), (1e-30, np.float32), (1e20, np.float32), (1.0, np.float32)],
)
def test_norm_gradient_is_unit_vector_at_any_scale(scale, dtype):
    """d||X||/dX = X / ||X|| depends only on the direction of X: for X = c [3, 4]
    it is [0.6, 0.8] for every c > 0 representable in the dtype (0 is only for X = 0)."""
    X = (np.array([[3.0, 4.0]]) * scale).astype(dtype)
    assert np.all(np.isfinite(X)) and np.all(X != 0)
    J = tj.jacobian(tj.norm, X)
    assert J.dtype == np.dtype(dtype)
    np.testing.assert_allclose(J, [[0.6, 0.8]], rtol=1e-6 if dtype == np.float32 else 1e-14)


def _packed_field(values):
    """A float64 field of a packed structured array: a valid, non-contiguous (and
    unaligned) float64 array whose byte stride (12) is not a multiple of 8."""
    rec = np.zeros(len(values), dtype=np.dtype([("a", "<f8"), ("b", "<f4")]))
    rec["a"] = values
    view = rec["a"]
    assert view.dtype == np.float64 and view.strides == (12,)
    return view


@pytest.mark.parametrize(("name", "wrt"), [("multiply", 0), ("dot", 0), ("matmul", 0), ("outer", 1), ("exp", 0)])
def test_packed_structured_field_inputs(name, wrt):
    """numpy accepts such views everywhere; the Jacobian must too."""
    x = np.array([1.0, -2.0, 3.0, 0.5])
    y = np.array([0.25, 2.0, -1.0, 4.0])
    args = {"exp": (x,)}.get(name, (x, y))
    fields = tuple(_packed_field(a) for a in args)
    op = op_of(name)
    np.testing.assert_array_equal(op(*fields), ref_value(name, *args))
    J = tj.jacobian(op, *fields, wrt=wrt)
    np.testing.assert_allclose(J, ref_tensor(name, args, wrt), rtol=1e-15)


def test_packed_structured_field_out():
    """out= may be any writable non-contiguous float64 view, e.g. a structured-array field."""
    x = np.array([1.0, -2.0, 3.0, 0.5])
    out = _packed_field(np.zeros(4))
    assert tj.jacobian(tj.exp, x, layout="diagonal", out=out) is out
    np.testing.assert_allclose(out, np.exp(x), rtol=1e-15)


def test_python_scalars_and_lists():
    J = tj.jacobian(tj.exp, 1.0)
    assert J.shape == () and J.dtype == np.float64
    assert J == pytest.approx(np.e, rel=1e-15)
    J = tj.jacobian(tj.multiply, 2.0, 3, wrt=0)
    assert J.shape == () and J.dtype == np.float64 and J == 3.0
    J = tj.jacobian(tj.multiply, 2.0, 3j, wrt=0)
    assert J.dtype == np.complex128 and J == 3j
    np.testing.assert_array_equal(tj.jacobian(tj.dot, [1, 2, 3], [4, 5, 6], wrt=1), [1.0, 2.0, 3.0])


def test_det_complex_singular_is_cofactor():
    rng = np.random.default_rng(7)
    for n in (2, 3, 4):
        U = rng.standard_normal((n, n - 1)) + 1j * rng.standard_normal((n, n - 1))
        V = rng.standard_normal((n - 1, n)) + 1j * rng.standard_normal((n - 1, n))
        X = U @ V
        C = cofactor(X)
        J = tj.jacobian(tj.det, X)
        assert J.dtype == np.complex128
        np.testing.assert_allclose(J, C, rtol=1e-9, atol=1e-11 * np.abs(C).max())
    X = np.array([[1.0, 1j], [1j, -1.0]])  # det = 0
    np.testing.assert_allclose(tj.jacobian(tj.det, X), [[-1.0, -1j], [-1j, 1.0]], atol=1e-14)


def test_kron_value_and_shape():
    A, B = make_args("kron")
    np.testing.assert_array_equal(tj.kron(A, B), np.kron(A, B))
    assert tj.jacobian(tj.kron, A, B, wrt=0).shape == (6, 6, 2, 3)
    assert tj.jacobian(tj.kron, A, B, wrt=1).shape == (6, 6, 3, 2)


def test_sandwich_value():
    A, X, B = make_args("sandwich")
    np.testing.assert_allclose(tj.sandwich(A, X, B), A @ X @ B, rtol=1e-14)


def test_plan_cache_uses_fresh_values():
    """Two calls with the same shapes but different values give different Jacobians."""
    rng = np.random.default_rng(6)
    for _ in range(3):
        A, X, B = rng.standard_normal((2, 3)), rng.standard_normal((3, 3)), rng.standard_normal((3, 2))
        np.testing.assert_allclose(tj.jacobian(tj.sandwich, A, X, B, wrt=0), ref_tensor("sandwich", (A, X, B), 0), rtol=1e-13)
        Xi = X + 5 * np.eye(3)
        np.testing.assert_allclose(tj.jacobian(tj.inv, Xi), ref_tensor("inv", (Xi,), 0), rtol=1e-13)


# ----------------------------------------------------------------------------- random shapes and strides

kinds = st.sampled_from(VIEW_KINDS)
layouts = st.sampled_from(LAYOUTS)
dim = st.integers(0, 4)
pdim = st.integers(1, 4)
seeds = st.integers(0, 2**32 - 1)


def _rand(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


def _check(name, args, wrt, layout, out_kind=None):
    op = op_of(name)
    want = _want(name, tuple(np.asarray(a) for a in args), wrt, layout)
    if out_kind is None:
        J = tj.jacobian(op, *args, wrt=wrt, layout=layout)
    else:
        buf, check = _out_buffer(want.shape, np.float64, out_kind)
        J = tj.jacobian(op, *args, wrt=wrt, layout=layout, out=buf)
        assert J is buf
        check()
    assert J.shape == want.shape
    assert_close(J, want, rtol=1e-12)


@HYP
@given(
    a2=st.booleans(), b2=st.booleans(), n=dim, k=dim, m=dim, seed=seeds, ka=kinds, kb=kinds,
    wrt=st.integers(0, 1), layout=layouts, ko=st.one_of(st.none(), kinds),
)  # fmt: skip
def test_hyp_matmul(a2, b2, n, k, m, seed, ka, kb, wrt, layout, ko):
    A = _rand(seed, (n, k) if a2 else (k,))
    B = _rand(seed + 1, (k, m) if b2 else (k,))
    args = (as_view(A, ka), as_view(B, kb))
    np.testing.assert_allclose(tj.matmul(*args), A @ B, rtol=1e-12, atol=1e-12)
    _check("matmul", args, wrt, layout, ko)


@HYP
@given(
    shape=st.tuples(pdim, dim, dim, pdim), seed=seeds, ks=st.tuples(kinds, kinds, kinds),
    wrt=st.integers(0, 2), layout=layouts, ko=st.one_of(st.none(), kinds),
)  # fmt: skip
def test_hyp_sandwich(shape, seed, ks, wrt, layout, ko):
    i, k, l, j = shape
    vals = (_rand(seed, (i, k)), _rand(seed + 1, (k, l)), _rand(seed + 2, (l, j)))
    args = tuple(as_view(v, kd) for v, kd in zip(vals, ks))
    np.testing.assert_allclose(tj.sandwich(*args), vals[0] @ vals[1] @ vals[2], rtol=1e-12, atol=1e-12)
    _check("sandwich", args, wrt, layout, ko)


@HYP
@given(
    shape=st.lists(st.integers(0, 3), min_size=0, max_size=4).map(tuple), seed=seeds,
    ks=st.tuples(kinds, kinds), wrt=st.integers(0, 1),
    layout=st.sampled_from(LAYOUTS + ("diagonal",)), ko=st.one_of(st.none(), kinds),
)  # fmt: skip
def test_hyp_multiply(shape, seed, ks, wrt, layout, ko):
    vals = (_rand(seed, shape), _rand(seed + 1, shape))
    args = tuple(as_view(v, kd) for v, kd in zip(vals, ks))
    np.testing.assert_array_equal(tj.multiply(*args), vals[0] * vals[1])
    _check("multiply", args, wrt, layout, ko)


@HYP
@given(
    shape=st.tuples(dim, dim, dim, dim), seed=seeds, ks=st.tuples(kinds, kinds),
    wrt=st.integers(0, 1), layout=layouts, ko=st.one_of(st.none(), kinds),
)  # fmt: skip
def test_hyp_kron(shape, seed, ks, wrt, layout, ko):
    m, n, p, q = shape
    vals = (_rand(seed, (m, n)), _rand(seed + 1, (p, q)))
    args = tuple(as_view(v, kd) for v, kd in zip(vals, ks))
    np.testing.assert_array_equal(tj.kron(*args), np.kron(*vals))
    _check("kron", args, wrt, layout, ko)


@HYP
@given(
    shape=st.lists(st.integers(0, 3), min_size=0, max_size=4).map(tuple), seed=seeds, k=kinds,
    layout=layouts, ko=st.one_of(st.none(), kinds),
)  # fmt: skip
def test_hyp_transpose(shape, seed, k, layout, ko):
    X = _rand(seed, shape)
    np.testing.assert_array_equal(tj.transpose(as_view(X, k)), X.T)
    _check("transpose", (as_view(X, k),), 0, layout, ko)


@HYP
@given(
    name=st.sampled_from(ELEMENTWISE), shape=st.lists(st.integers(0, 3), min_size=0, max_size=3).map(tuple),
    seed=seeds, k=kinds, layout=st.sampled_from(LAYOUTS + ("diagonal",)), ko=st.one_of(st.none(), kinds),
)  # fmt: skip
def test_hyp_elementwise(name, shape, seed, k, layout, ko):
    X = _rand(seed, shape)
    if name in ("log", "sqrt"):
        X = np.abs(X) + 0.1
    Xv = as_view(X, k)
    np.testing.assert_allclose(op_of(name)(Xv), ELEMENTWISE_REF[name][0](X), rtol=1e-13, atol=1e-300)
    _check(name, (Xv,), 0, layout, ko)


@HYP
@given(
    u=st.lists(st.integers(0, 3), min_size=0, max_size=2).map(tuple),
    v=st.lists(st.integers(0, 3), min_size=0, max_size=2).map(tuple),
    seed=seeds, ks=st.tuples(kinds, kinds), wrt=st.integers(0, 1), layout=layouts,
)  # fmt: skip
def test_hyp_outer_sum_norm(u, v, seed, ks, wrt, layout):
    U, V = _rand(seed, u), _rand(seed + 1, v)
    args = (as_view(U, ks[0]), as_view(V, ks[1]))
    np.testing.assert_array_equal(tj.outer(*args), np.outer(U, V))
    _check("outer", args, wrt, layout)
    _check("sum", args[:1], 0, layout)
    _check("norm", args[1:], 0, layout)


def test_ops_stub_is_current():
    """ops.pyi (real signatures for type checkers) is generated from the registry; regenerate with
    `python -m tensorjac._stubgen` after adding an op."""
    from tensorjac import _stubgen

    assert _stubgen.path().read_text() == _stubgen.render()


@pytest.mark.parametrize("name", ALL_OPS)
def test_real_signature_and_help(name):
    import inspect
    import pydoc

    op = op_of(name)
    params = list(inspect.signature(op).parameters)
    assert params[: len(op.argnames)] == list(op.argnames)
    text = pydoc.render_doc(op, renderer=pydoc.plaintext)
    for method in ("jacobian", "vjp", "jvp"):
        assert method in text


def test_ops_take_keyword_arguments():
    A, X, B = make_args("sandwich")
    J = tj.jacobian(tj.sandwich, A=A, X=X, B=B, wrt="X")
    np.testing.assert_array_equal(J, tj.jacobian(tj.sandwich, A, X, B, wrt=1))
    np.testing.assert_array_equal(tj.sandwich(A=A, X=X, B=B), tj.sandwich(A, X, B))
    X = make_args("sum")[0]
    np.testing.assert_array_equal(tj.sum(X, axis=1), X.sum(axis=1))
    np.testing.assert_allclose(tj.jacobian(tj.sum, X, axis=1), np.einsum("ik,j->ikj", np.eye(X.shape[0]), np.ones(X.shape[1])))
