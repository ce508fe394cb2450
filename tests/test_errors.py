"""Errors: each a specific ValueError / TypeError / IndexError whose message names what is wrong."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tensorjac as tj
from conftest import ALL_OPS, CASE_IDS, CASES, DIAGONAL_OPS, LAYOUTS, make_args, op_of


def _mentions_shape(msg: str, shape: tuple) -> bool:
    return str(tuple(shape)) in msg or "x".join(map(str, shape)) in msg


# ----------------------------------------------------------------------------- not a tensorjac op


@pytest.mark.parametrize(
    "f",
    [lambda x: x * 2, np.sin, np.cumsum, "matmul", None],
    ids=["lambda", "ufunc", "numpy-function", "string", "None"],
)
def test_plain_function_points_to_fd(f):
    if callable(f):  # plain numpy functions are differentiated exactly
        assert tj.jacobian(f, np.ones(3)).shape[-1] == 3
    else:
        with pytest.raises(TypeError, match="callable"):
            tj.jacobian(f, np.ones(3))


def test_unsupported_function_points_to_fd():
    def my_function(x):
        return np.fft.fft(x).real

    with pytest.raises(TypeError, match=r"tj\.fd\.jacobian"):
        tj.jacobian(my_function, np.ones(3), wrt=0, layout="gradient")


# ----------------------------------------------------------------------------- shape mismatches


@pytest.mark.parametrize(
    ("name", "args", "shapes"),
    [
        ("matmul", (np.ones((2, 3)), np.ones((4, 5))), [(2, 3), (4, 5)]),
        ("matmul", (np.ones(3), np.ones(4)), [(3,), (4,)]),
        ("matmul", (np.ones((2, 3)), np.ones(2)), [(2, 3), (2,)]),
        ("matmul", (np.ones(3), np.ones((2, 3))), [(3,), (2, 3)]),
        ("multiply", (np.ones((3, 4)), np.ones((4, 3))), [(3, 4), (4, 3)]),
        ("multiply", (np.ones((3, 4)), np.ones((2, 1))), [(3, 4), (2, 1)]),  # not broadcastable
        ("sandwich", (np.ones((2, 3)), np.ones((4, 4)), np.ones((4, 2))), [(2, 3), (4, 4)]),
        ("sandwich", (np.ones((2, 3)), np.ones((3, 4)), np.ones((5, 2))), [(3, 4), (5, 2)]),
        ("dot", (np.ones(3), np.ones(4)), [(3,), (4,)]),
        ("quadratic", (np.ones(3), np.ones((4, 4))), [(3,), (4, 4)]),
    ],
)
def test_shape_mismatch(name, args, shapes):
    op = op_of(name)
    for call in (
        lambda: op(*args),
        lambda: tj.jacobian(op, *args),
        lambda: tj.jacobian(op, *args, wrt=len(args) - 1, layout="vec"),
    ):
        with pytest.raises(ValueError) as exc:
            call()
        msg = str(exc.value)
        for s in shapes:
            assert _mentions_shape(msg, s), msg


@pytest.mark.parametrize("name", ["inv", "det", "logdet"])
@pytest.mark.parametrize("shape", [(2, 3), (3, 2), (1, 4), (4,), (2, 2, 3)])
def test_non_square(name, shape):
    X = np.ones(shape)
    with pytest.raises(ValueError) as exc:
        tj.jacobian(op_of(name), X)
    assert _mentions_shape(str(exc.value), shape), str(exc.value)
    assert "X" in str(exc.value)
    with pytest.raises(ValueError):
        op_of(name)(X)


# ----------------------------------------------------------------------------- layout


@pytest.mark.parametrize("layout", ["row", "Tensor", "", "denominator", None, 0, ("tensor",)])
def test_unknown_layout(layout):
    A, B = make_args("matmul")
    with pytest.raises(ValueError) as exc:
        tj.jacobian(tj.matmul, A, B, layout=layout)
    assert repr(layout) in str(exc.value) or str(layout) in str(exc.value)


@pytest.mark.parametrize(("name", "wrt"), [c for c in CASES if c[0] not in DIAGONAL_OPS], ids=[i for c, i in zip(CASES, CASE_IDS) if c[0] not in DIAGONAL_OPS])
def test_diagonal_rejected_for_non_elementwise(name, wrt):
    args = make_args(name)
    with pytest.raises(ValueError, match="diagonal"):
        tj.jacobian(op_of(name), *args, wrt=wrt, layout="diagonal")


@pytest.mark.parametrize(
    ("name", "args", "want"),
    [
        ("transpose", (np.arange(3.0),), np.ones(3)),
        ("transpose", (np.array(2.0),), np.array(1.0)),
        ("sum", (np.array(2.0),), np.array(1.0)),
        ("norm", (np.array(-2.0),), np.array(-1.0)),
    ],
    ids=["transpose-1d", "transpose-0d", "sum-0d", "norm-0d"],
)
def test_diagonal_layout_follows_the_jacobian_structure(name, args, want):
    """layout='diagonal' is allowed exactly when the Jacobian is structurally diagonal (same shape,
    each output entry depending only on the same input entry) -- decided per shape, as for composites."""
    np.testing.assert_array_equal(tj.jacobian(op_of(name), *args, layout="diagonal"), want)
    with pytest.raises(ValueError, match="diagonal"):
        tj.jacobian(op_of(name), np.ones((2, 3)), layout="diagonal")


# ----------------------------------------------------------------------------- wrt


@pytest.mark.parametrize("name", ALL_OPS)
def test_wrt_out_of_range(name):
    op = op_of(name)
    args = make_args(name)
    n = len(args)
    for bad in (n, n + 5, -n - 1):
        with pytest.raises(IndexError) as exc:
            tj.jacobian(op, *args, wrt=bad)
        assert str(bad) in str(exc.value)


@pytest.mark.parametrize("name", ["matmul", "sandwich", "inv", "quadratic"])
def test_wrt_bad_name(name):
    op = op_of(name)
    args = make_args(name)
    for bad in ("Z", "x0", "", "a b"):
        if bad in op.argnames:
            continue
        with pytest.raises(ValueError) as exc:
            tj.jacobian(op, *args, wrt=bad)
        assert repr(bad) in str(exc.value)


@pytest.mark.parametrize("bad", [True, False, 1.0, 0.0, None, [1], "1"], ids=repr)
def test_wrt_of_wrong_type_is_rejected_even_after_a_valid_call(bad):
    """wrt is an int index or a name; the answer must not depend on earlier calls."""
    A, B = make_args("matmul")
    with pytest.raises((TypeError, ValueError, IndexError)):
        tj.jacobian(tj.matmul, A, B, wrt=bad)
    tj.jacobian(tj.matmul, A, B, wrt=0)  # warm any cache with the valid index
    tj.jacobian(tj.matmul, A, B, wrt=1)
    with pytest.raises((TypeError, ValueError, IndexError)):
        tj.jacobian(tj.matmul, A, B, wrt=bad)


# ----------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize(
    "bad",
    [np.array([["a", "b"], ["c", "d"]]), np.array([[1.0, 2.0], [3.0, 4.0]], dtype=object), np.array([[b"x", b"y"]] * 2)],
    ids=["str", "object", "bytes"],
)
@pytest.mark.parametrize("pos", [0, 1])
def test_non_numeric_dtype_names_argument(bad, pos):
    good = np.ones((2, 2))
    args = [good, good]
    args[pos] = bad
    name = tj.matmul.argnames[pos]
    with pytest.raises(TypeError) as exc:
        tj.jacobian(tj.matmul, *args, wrt=1 - pos)
    assert re.search(rf"\b{name}\b", str(exc.value)), str(exc.value)
    with pytest.raises(TypeError):
        tj.matmul(*args)


@pytest.mark.parametrize("name", ["exp", "inv", "sum", "transpose"])
def test_non_numeric_single_argument(name):
    with pytest.raises(TypeError) as exc:
        tj.jacobian(op_of(name), np.array([["a", "b"], ["c", "d"]]))
    assert "X" in str(exc.value)


def test_string_list_argument():
    with pytest.raises(TypeError):
        tj.jacobian(tj.dot, ["a", "b"], [1.0, 2.0])


@pytest.mark.parametrize("name", ["logdet", "norm", "relu", "abs"])
def test_complex_non_holomorphic_type_error(name):
    args = make_args(name, np.complex128)
    with pytest.raises(TypeError):
        tj.jacobian(op_of(name), *args)


# ----------------------------------------------------------------------------- out=


@pytest.mark.parametrize("layout", LAYOUTS)
def test_out_wrong_shape(layout):
    A, X, B = make_args("sandwich")
    J = tj.jacobian(tj.sandwich, A, X, B, wrt=1, layout=layout)
    for shape in (J.shape[::-1], J.shape + (1,), (J.size,), (J.shape[0] + 1,) + J.shape[1:]):
        if shape == J.shape:
            continue
        out = np.zeros(shape)
        with pytest.raises(ValueError) as exc:
            tj.jacobian(tj.sandwich, A, X, B, wrt=1, layout=layout, out=out)
        assert _mentions_shape(str(exc.value), shape), str(exc.value)
        assert np.all(out == 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.complex128, np.int64, np.float16])
def test_out_wrong_dtype(dtype):
    A, X, B = make_args("sandwich")
    out = np.zeros((2, 2, 3, 4), dtype=dtype)
    with pytest.raises(ValueError) as exc:
        tj.jacobian(tj.sandwich, A, X, B, wrt=1, out=out)
    assert np.dtype(dtype).name in str(exc.value)
    # float32 inputs want a float32 out
    out64 = np.zeros((2, 2, 3, 4))
    with pytest.raises(ValueError):
        tj.jacobian(tj.sandwich, *(a.astype(np.float32) for a in (A, X, B)), wrt=1, out=out64)


def test_out_wrong_dtype_diagonal():
    X = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(ValueError):
        tj.jacobian(tj.exp, X, layout="diagonal", out=np.zeros((2, 3)))
    with pytest.raises(ValueError):
        tj.jacobian(tj.exp, X, layout="diagonal", out=np.zeros((3, 2), np.float32))


def test_out_read_only():
    out = np.zeros((3, 4))
    out.flags.writeable = False
    with pytest.raises(ValueError):
        tj.jacobian(tj.exp, np.ones((3, 4)), layout="diagonal", out=out)


def test_out_not_an_array():
    with pytest.raises((TypeError, ValueError)):
        tj.jacobian(tj.exp, np.ones(3), layout="diagonal", out=[0.0, 0.0, 0.0])


# ----------------------------------------------------------------------------- number of arguments


@pytest.mark.parametrize("name", ALL_OPS)
def test_wrong_number_of_args(name):
    op = op_of(name)
    args = make_args(name)
    for bad in (args[:-1], args + (args[0],)):
        with pytest.raises(TypeError) as exc:
            tj.jacobian(op, *bad)
        assert str(len(args)) in str(exc.value)
        with pytest.raises(TypeError):
            op(*bad)
        with pytest.raises(TypeError):
            op.jacobian(*bad)


# ----------------------------------------------------------------------------- singular input


def test_inv_singular_linalgerror():
    with pytest.raises(np.linalg.LinAlgError):
        tj.jacobian(tj.inv, np.zeros((2, 2)))
