"""Numpy inside f: one focused test per feature of COMPOSITE_SPEC.md's "Numpy inside f".

Operators (reflected, Python-scalar and broadcast operands), every listed ufunc,
every reduction with axis=None/int/negative/tuple and keepdims, var/std ddof,
norm variants, every shape function, every indexing form, every
linear-algebra function (einsum with repeated indices, implicit output, ellipsis
and broadcasting; tensordot forms; stacked matmul; solve with 1-D and 2-D b;
slogdet; cholesky and eigh with numpy's LOWER-triangle convention), the tie
conventions (exact 0/1 values by hand), in-place forms, tensorjac ops inside f.

References: Richardson differences of the very same function run on plain
numpy (so the conventions are numpy's own), exact linear-map references built
by applying the (affine) function to unit tensors, hand derivatives for the
ufuncs and hand 0/1 values at ties.  The ``test_reference_*`` tests check the
references against finite differences and run today; the rest waits for the
composite engine.
"""

from __future__ import annotations

import operator

import numpy as np
import pytest
import tensorjac as tj
from composite_cases import (
    AWAY,
    CLOSED_RTOL,
    DISTINCT,
    FD_RTOL,
    SPD_GARBAGE,
    WC,
    assert_close,
    fd_reference,
    lower_convention,
    needs_engine,
)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _copies(args):
    return tuple(np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in args)


def check_fd(f, *args, wrt=0, rtol=FD_RTOL):
    """tj.value_and_jacobian(f): the value is numpy's own f(*args) and J agrees with Richardson
    differences of the same f, for every wrt."""
    wrts = wrt if isinstance(wrt, tuple) else (wrt,)
    value, Js = tj.value_and_jacobian(f, *args, wrt=wrt)
    want = f(*_copies(args))  # copies: f may write in place into its arguments
    np.testing.assert_allclose(value, want, rtol=1e-13, atol=1e-13 * max(1.0, np.max(np.abs(want), initial=0.0)))
    if not isinstance(wrt, tuple):
        Js = (Js,)
    assert len(Js) == len(wrts)
    for w, J in zip(wrts, Js):
        ref = fd_reference(f, args, w)
        assert np.shape(J) == ref.shape, (np.shape(J), ref.shape)
        assert_close(J, ref, rtol)
    return Js


def affine_reference(g, shape) -> np.ndarray:
    """Exact Jacobian of an affine g: column n is g(e_n) - g(0) (sums of 0/1 entries are exact)."""
    shape = tuple(shape)
    n = int(np.prod(shape, dtype=np.int64))
    g0 = np.asarray(g(np.zeros(shape)), dtype=float)
    cols = []
    for k in range(n):
        e = np.zeros(n)
        e[k] = 1.0
        cols.append(np.asarray(g(e.reshape(shape)), dtype=float) - g0)
    return np.stack(cols, axis=-1).reshape(g0.shape + shape) if n else np.zeros(g0.shape + shape)


# ============================================================================ operators

BIN_OPS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
           "pow": operator.pow}

# Forms of "x op c": how the other operand is given.  x is traced, shape (2, 3), positive.
OPERAND_FORMS = {
    "x_op_pyscalar": lambda op, x, c: op(x, 1.7),
    "pyscalar_op_x": lambda op, x, c: op(1.7, x),
    "x_op_pyint": lambda op, x, c: op(x, 2),
    "npscalar_op_x": lambda op, x, c: op(np.float64(1.3), x),
    "x_op_npscalar": lambda op, x, c: op(x, np.float64(1.3)),
    "0d_op_x": lambda op, x, c: op(np.array(1.4), x),
    "x_op_row": lambda op, x, c: op(x, c[0]),  # (3,) broadcast over rows
    "col_op_x": lambda op, x, c: op(c[:, :1], x),  # (2, 1) broadcast over columns
    "x_op_bigger": lambda op, x, c: op(x, np.stack([c, c + 0.5])),  # (2, 2, 3): result has more dims
    "x_op_x": lambda op, x, c: op(x, x[::-1]),
}


def _pos(r, *shape):
    return r.uniform(0.5, 2.0, shape)


@needs_engine
@pytest.mark.parametrize("form", sorted(OPERAND_FORMS))
@pytest.mark.parametrize("opname", sorted(BIN_OPS))
def test_binary_operator_with_constant(opname, form):
    r = _rng(1)
    x, c = _pos(r, 2, 3), _pos(r, 2, 3)
    op = BIN_OPS[opname]
    check_fd(lambda x, c: OPERAND_FORMS[form](op, x, c), x, c)


@needs_engine
@pytest.mark.parametrize("opname", sorted(BIN_OPS))
@pytest.mark.parametrize(("sx", "sy"), [((2, 3), (2, 3)), ((2, 3), (3,)), ((2, 1), (1, 3)), ((3,), (2, 1, 3)), ((), (3,))])
def test_binary_operator_both_traced(opname, sx, sy):
    r = _rng(2)
    check_fd(BIN_OPS[opname], _pos(r, *sx), _pos(r, *sy), wrt=(0, 1))


@needs_engine
def test_unary_operators_and_exponents():
    r = _rng(3)
    x = _pos(r, 2, 3)
    e = r.uniform(-1.5, 2.5, (2, 3))
    for f in (lambda x: -x, lambda x: +x, lambda x: abs(x - 3.0), lambda x: x**2, lambda x: x**0.5,
              lambda x: x**-1, lambda x: x**3.0, lambda x: x**e, lambda x: (e**2 + 0.5) ** x, lambda x: 2.0**x,
              lambda x: np.float64(0.5) ** x, lambda x: -(x**2) + +x):
        check_fd(f, x)
    J = tj.jacobian(lambda x: x**0, x)  # a constant
    np.testing.assert_array_equal(J, np.zeros((2, 3, 2, 3)))


MATMUL_SHAPES = {
    "1d@1d": ((3,), (3,)),
    "2d@1d": ((2, 3), (3,)),
    "1d@2d": ((3,), (3, 2)),
    "2d@2d": ((2, 3), (3, 4)),
    "stacked": ((2, 2, 3), (2, 3, 2)),
    "stacked@2d": ((2, 2, 3), (3, 2)),
    "1d@stacked": ((3,), (2, 3, 2)),
    "broadcast": ((2, 1, 2, 3), (3, 3, 2)),
}


@needs_engine
@pytest.mark.parametrize("kind", sorted(MATMUL_SHAPES))
def test_matmul_operator(kind):
    sa, sb = MATMUL_SHAPES[kind]
    r = _rng(4)
    a, b = r.standard_normal(sa), r.standard_normal(sb)
    check_fd(lambda a, b: a @ b, a, b, wrt=(0, 1))
    check_fd(lambda a, b: np.matmul(a, b), a, b, wrt=1)  # a constant ndarray on the left


@needs_engine
def test_comparisons_give_plain_bool_arrays():
    r = _rng(5)
    x, y = r.standard_normal(4), r.standard_normal(4)
    seen = {}

    def f(x, y):
        seen["lt"], seen["ge"], seen["eq"] = x < y, x >= 0.0, x == x
        seen["ne"], seen["gt"], seen["le"] = x != y, 1.0 > x, x <= y
        return x * y

    tj.jacobian(f, x, y, wrt=(0, 1))
    for k, v in seen.items():
        assert type(v) is np.ndarray and v.dtype == np.bool_, k
    np.testing.assert_array_equal(seen["lt"], x < y)
    np.testing.assert_array_equal(seen["eq"], np.ones(4, bool))


# ============================================================================ ufuncs

_LN2, _LN10 = np.log(2.0), np.log(10.0)
UNARY = {  # name: (ufunc, derivative, domain(rng) of shape (2, 3))
    "exp": (np.exp, np.exp, lambda r: r.standard_normal((2, 3))),
    "expm1": (np.expm1, np.exp, lambda r: r.standard_normal((2, 3))),
    "log": (np.log, lambda x: 1 / x, lambda r: _pos(r, 2, 3)),
    "log1p": (np.log1p, lambda x: 1 / (1 + x), lambda r: _pos(r, 2, 3) - 0.4),
    "log2": (np.log2, lambda x: 1 / (x * _LN2), lambda r: _pos(r, 2, 3)),
    "log10": (np.log10, lambda x: 1 / (x * _LN10), lambda r: _pos(r, 2, 3)),
    "sqrt": (np.sqrt, lambda x: 0.5 / np.sqrt(x), lambda r: _pos(r, 2, 3)),
    "cbrt": (np.cbrt, lambda x: np.abs(x) ** (-2 / 3) / 3, lambda r: AWAY(r, 2, 3, lo=0.3)),
    "square": (np.square, lambda x: 2 * x, lambda r: r.standard_normal((2, 3))),
    "reciprocal": (np.reciprocal, lambda x: -1 / x**2, lambda r: AWAY(r, 2, 3, lo=0.4)),
    "sin": (np.sin, np.cos, lambda r: r.standard_normal((2, 3))),
    "cos": (np.cos, lambda x: -np.sin(x), lambda r: r.standard_normal((2, 3))),
    "tan": (np.tan, lambda x: 1 / np.cos(x) ** 2, lambda r: r.uniform(-1.2, 1.2, (2, 3))),
    "sinh": (np.sinh, np.cosh, lambda r: r.standard_normal((2, 3))),
    "cosh": (np.cosh, np.sinh, lambda r: r.standard_normal((2, 3))),
    "tanh": (np.tanh, lambda x: 1 / np.cosh(x) ** 2, lambda r: r.standard_normal((2, 3))),
    "arcsin": (np.arcsin, lambda x: 1 / np.sqrt(1 - x**2), lambda r: r.uniform(-0.8, 0.8, (2, 3))),
    "arccos": (np.arccos, lambda x: -1 / np.sqrt(1 - x**2), lambda r: r.uniform(-0.8, 0.8, (2, 3))),
    "arctan": (np.arctan, lambda x: 1 / (1 + x**2), lambda r: r.standard_normal((2, 3))),
    "arcsinh": (np.arcsinh, lambda x: 1 / np.sqrt(x**2 + 1), lambda r: r.standard_normal((2, 3))),
    "arccosh": (np.arccosh, lambda x: 1 / np.sqrt(x**2 - 1), lambda r: r.uniform(1.2, 3.0, (2, 3))),
    "arctanh": (np.arctanh, lambda x: 1 / (1 - x**2), lambda r: r.uniform(-0.8, 0.8, (2, 3))),
    "abs": (np.abs, np.sign, lambda r: AWAY(r, 2, 3)),
    "absolute": (np.absolute, np.sign, lambda r: AWAY(r, 2, 3)),
    "negative": (np.negative, lambda x: -np.ones_like(x), lambda r: r.standard_normal((2, 3))),
    "positive": (np.positive, np.ones_like, lambda r: r.standard_normal((2, 3))),
    "sign": (np.sign, np.zeros_like, lambda r: AWAY(r, 2, 3)),
}


def _diag(d):
    return np.einsum("mn,m->mn", np.eye(d.size), d.ravel()).reshape(d.shape * 2)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_reference_ufunc_derivatives(name):
    u, d, dom = UNARY[name]
    x = dom(_rng(6))
    assert_close(_diag(d(x)), fd_reference(u, (x,), 0), FD_RTOL)


@needs_engine
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_ufunc(name):
    u, d, dom = UNARY[name]
    x = dom(_rng(6))
    J = tj.jacobian(lambda x: u(x), x)
    assert_close(J, _diag(d(x)), CLOSED_RTOL)
    assert_close(tj.jacobian(lambda x: u(x), x, layout="diagonal"), d(x), CLOSED_RTOL)
    check_fd(lambda x: u(2 * x) * x, x / 2)  # inside a chain


BINARY_UFUNCS = {
    "add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.divide,
    "true_divide": np.true_divide, "power": np.power, "maximum": np.maximum, "minimum": np.minimum,
}


def _no_ties(r):
    """Positive x (2, 3) and y (3,) with |x[i, j] - y[j]| >= 0.2 (maximum/minimum away from ties)."""
    x, y = _pos(r, 2, 3), _pos(r, 3)
    for j in range(3):
        while np.min(np.abs(x[:, j] - y[j])) < 0.2:
            y[j] += 0.25
    return x, y


@needs_engine
@pytest.mark.parametrize("name", sorted(BINARY_UFUNCS))
def test_binary_ufunc_as_function(name):
    u = BINARY_UFUNCS[name]
    x, y = _no_ties(_rng(7))
    check_fd(lambda x, y: u(x, y), x, y, wrt=(0, 1))  # both traced, broadcast
    check_fd(lambda x, y: u(x, y), x, y, wrt=0)  # y a constant array
    check_fd(lambda x, y: u(y, x), x, y, wrt=0)  # the constant first
    check_fd(lambda x: u(x, 1.3) + u(1.3, x), np.where(np.abs(x - 1.3) < 0.2, x + 0.45, x))


# ufuncs the spec does not list: the engine may support them (then they must be right) or refuse them
# (TypeError pointing to tj.fd.jacobian); a zero or wrong derivative is the one thing not allowed.
EXTRA_UFUNCS = {
    "arctan2": (np.arctan2, 2), "hypot": (np.hypot, 2), "logaddexp": (np.logaddexp, 2),
    "logaddexp2": (np.logaddexp2, 2), "fmax": (np.fmax, 2), "fmin": (np.fmin, 2),
    "float_power": (np.float_power, 2), "copysign": (np.copysign, 2), "exp2": (np.exp2, 1),
    "deg2rad": (np.deg2rad, 1), "rad2deg": (np.rad2deg, 1), "sinc": (np.sinc, 1), "heaviside": (np.heaviside, 2),
}


@needs_engine
@pytest.mark.parametrize("name", sorted(EXTRA_UFUNCS))
def test_ufuncs_beyond_the_spec_are_right_or_refused(name):
    u, nin = EXTRA_UFUNCS[name]
    x, y = _no_ties(_rng(30))
    args, wrt = ((x, y), (0, 1)) if nin == 2 else ((x,), 0)
    try:
        check_fd(lambda *a: u(*a), *args, wrt=wrt)
    except TypeError as e:
        assert "tj.fd.jacobian" in str(e), str(e)


EXTRA_FUNCTIONS = {  # numpy functions the spec does not list: right or refused, as above
    "cumsum": (lambda x: np.cumsum(x, axis=1), (2, 3)),
    "cumprod": (lambda x: np.cumprod(x), (2, 3)),
    "diff": (lambda x: np.diff(x, axis=0), (3, 2)),
    "roll": (lambda x: np.roll(x, 1, axis=1), (2, 3)),
    "sort": (lambda x: np.sort(x, axis=-1), (2, 3)),
    "cross": (lambda x: np.cross(x[0], x[1]), (2, 3)),
    "matrix_power": (lambda x: np.linalg.matrix_power(x, 3), (3, 3)),
    "multi_dot": (lambda x: np.linalg.multi_dot([x, x.T, x]), (2, 3)),
    "norm_spectral": (lambda x: np.linalg.norm(x, ord=2), (3, 3)),
    "norm_nuclear": (lambda x: np.linalg.norm(x, ord="nuc"), (3, 3)),
    "norm_matrix_1": (lambda x: np.linalg.norm(x, ord=1), (3, 3)),
    "average": (lambda x: np.average(x, axis=0, weights=[1.0, 3.0]), (2, 3)),
    "polyval": (lambda x: np.polyval([1.0, -2.0, 0.5], x), (2, 3)),
    "linalg_matrix_norm": (lambda x: np.linalg.matrix_norm(x), (3, 3)),
    "linalg_vector_norm": (lambda x: np.linalg.vector_norm(x, axis=0), (3, 3)),
    "argmax_gather": (lambda x: x.ravel()[np.argmax(x)] * x, (2, 3)),
    "argsort_gather": (lambda x: x[0][np.argsort(x[0])] * 2, (2, 3)),
    "astype_float32": (lambda x: x.astype(np.float32) * x, (2, 3)),
    "take": (lambda x: np.take(x, [2, 0, 2], axis=1), (2, 3)),
    "outer_of_flat": (lambda x: np.outer(x.ravel(), x[0]), (2, 3)),
    "copy_method": (lambda x: x.copy() * x, (2, 3)),
    "np.copy": (lambda x: np.copy(x) ** 2, (2, 3)),
    "zeros_like_fill": (lambda x: _fill_like(x), (2, 3)),
    "in_place_through_a_view": (lambda x: _view_inplace(x), (2, 3)),
    "in_place_through_reshape_view": (lambda x: _reshape_view_inplace(x), (2, 3)),
    "in_place_through_transpose_view": (lambda x: _transpose_view_inplace(x), (2, 3)),
    "in_place_through_swapaxes_view": (lambda x: _swapaxes_view_inplace(x), (2, 3)),
    "in_place_through_newaxis_view": (lambda x: _newaxis_view_inplace(x), (2, 3)),
    "chained_basic_index_assignment": (lambda x: _chained_setitem(x), (2, 3)),
    "in_place_through_row_view": (lambda x: _row_view_inplace(x), (2, 3)),
    "view_taken_before_in_place": (lambda x: _view_before_inplace(x), (2, 3)),
    "input_view_then_in_place_input": (lambda x: _input_view_then_inplace(x), (2, 3)),
}


def _view_before_inplace(x):
    y = x * 1.0
    v = y[0]  # numpy: a view, so it sees the updates below
    y *= 2
    y += x
    return v * 1.0


def _input_view_then_inplace(x):
    v = x[:, 1:]
    x *= 3  # in place on the traced input itself
    return v**2


def _swapaxes_view_inplace(x):
    y = x * 2.0
    s = np.swapaxes(y, 0, 1)
    s[1] += x[:, 0]
    return y


def _newaxis_view_inplace(x):
    y = x - 1.0
    e = y[None]
    e[0, 1] = x[0] ** 2
    return y


def _chained_setitem(x):
    y = x * 1.0
    y[1:][0] = x[0] * 3  # numpy: y[1:] is a view, so this writes y[1]
    y[:, 1:][:, 0] *= x[:, 2]
    return y


def _row_view_inplace(x):
    y = x**2
    row = y[0]
    row += x[1]
    return y


def _fill_like(x):
    z = np.zeros_like(x)
    z[0] = x[1] * 2
    return z + x


def _view_inplace(x):
    """numpy semantics: v is a view of y, so v *= 2 changes y."""
    y = x * 1.0
    v = y[1:]
    v *= 2
    v[0, 0] = x[0, 0] ** 2
    return y


def _reshape_view_inplace(x):
    y = x + 0.0
    flat = y.reshape(-1)  # a view
    flat[::2] += x.ravel()[::2] ** 2
    return y


def _transpose_view_inplace(x):
    y = x * 3.0
    t = y.T  # a view
    t[0] = x[:, 1]
    return y


@needs_engine
@pytest.mark.parametrize("name", sorted(EXTRA_FUNCTIONS))
def test_functions_beyond_the_spec_are_right_or_refused(name):
    f, shape = EXTRA_FUNCTIONS[name]
    x = DISTINCT(_rng(31), *shape) * 0.4 + 0.05  # distinct entries (sort), no zeros
    try:
        check_fd(f, x)
    except TypeError as e:
        assert "tj.fd.jacobian" in str(e), str(e)


@needs_engine
def test_where_with_constant_condition():
    r = _rng(8)
    x, y = r.standard_normal((2, 3)), r.standard_normal((2, 3))
    cond = np.array([True, False, True])
    c = r.standard_normal((2, 3))
    check_fd(lambda x, y: np.where(cond, x, y), x, y, wrt=(0, 1))
    check_fd(lambda x: np.where(cond, x, c), x)
    check_fd(lambda x: np.where(cond[:, None, None], x**2, 2.0), x)  # broadcasts to (3, 2, 3)
    check_fd(lambda x: np.where(x > 0, x, 0.01 * x), AWAY(r, 2, 3))  # condition from a comparison


@needs_engine
def test_clip_constant_and_traced_bounds():
    r = _rng(9)
    x = r.choice([-1.2, -0.8, -0.2, 0.3, 1.0, 1.4], (2, 4)) + 0.05 * r.standard_normal((2, 4))
    check_fd(lambda x: np.clip(x, -0.5, 0.7), x)
    lo, hi = np.array(-0.6), np.array(0.8)
    x = np.array([-1.2, -0.3, 0.1, 0.5, 1.3])
    check_fd(lambda x, lo, hi: np.clip(x, lo, hi), x, lo, hi, wrt=(0, 1, 2))
    lo_v, hi_v = np.full(5, -0.4), np.full(5, 0.4)
    check_fd(lambda x, lo, hi: np.clip(x, lo, hi), x, lo_v, hi_v, wrt=(0, 1, 2))
    check_fd(lambda x: x.clip(-0.4, 0.4), x)  # the method


# ============================================================================ conventions: ties, kinks, constants


@needs_engine
def test_abs_derivative_at_zero_is_zero():
    x = np.array([0.0, 1.5, -2.0, 0.0])
    np.testing.assert_array_equal(tj.jacobian(np.abs, x, layout="diagonal"), [0.0, 1.0, -1.0, 0.0])
    np.testing.assert_array_equal(tj.jacobian(lambda x: np.absolute(x), x), np.diag([0.0, 1.0, -1.0, 0.0]))
    np.testing.assert_array_equal(tj.jacobian(lambda x: abs(x), x), np.diag([0.0, 1.0, -1.0, 0.0]))


@needs_engine
def test_piecewise_constant_functions_have_zero_derivative():
    x = np.array([-1.7, -0.2, 0.4, 2.5, 3.0])

    def f(x):
        return (x**2 + np.sign(x) + np.floor(x) + np.ceil(x) + np.rint(x) + np.round(x) + np.round(x, 1)
                + np.trunc(x) + x.astype(int) + x.round())

    J = tj.jacobian(f, x)
    np.testing.assert_array_equal(J, np.diag(2 * x))


@needs_engine
def test_max_min_reductions_ties_take_the_first():
    x = np.array([1.0, 3.0, 3.0, 2.0])
    np.testing.assert_array_equal(tj.jacobian(np.max, x), [0.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(tj.jacobian(np.amax, x), [0.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(tj.jacobian(lambda x: x.max(), x), [0.0, 1.0, 0.0, 0.0])
    y = np.array([2.0, 1.0, 1.0, 5.0])
    np.testing.assert_array_equal(tj.jacobian(np.min, y), [0.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(tj.jacobian(np.amin, y), [0.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(tj.jacobian(lambda y: y.min(), y), [0.0, 1.0, 0.0, 0.0])
    X = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]])
    J = tj.jacobian(lambda X: X.max(axis=1), X)  # row 0: column 1 (first of the tie); row 1: column 0
    want = np.zeros((2, 2, 3))
    want[0, 0, 1] = want[1, 1, 0] = 1.0
    np.testing.assert_array_equal(J, want)
    J = tj.jacobian(lambda X: np.min(X, axis=0, keepdims=True), np.array([[1.0, 2.0, 4.0], [1.0, 0.0, 4.0]]))
    want = np.zeros((1, 3, 2, 3))
    want[0, 0, 0, 0] = want[0, 1, 1, 1] = want[0, 2, 0, 2] = 1.0
    np.testing.assert_array_equal(J, want)
    J = tj.jacobian(lambda X: np.max(X), np.array([[2.0, 5.0], [5.0, 1.0]]))  # flat argmax: (0, 1)
    np.testing.assert_array_equal(J, [[0.0, 1.0], [0.0, 0.0]])


@needs_engine
def test_maximum_minimum_ties_go_to_the_first_argument():
    a = np.array([1.0, 2.0, 3.0, -1.0])
    b = np.array([1.0, 5.0, 0.0, -1.0])
    Ja, Jb = tj.jacobian(np.maximum, a, b, wrt=(0, 1), layout="diagonal")
    np.testing.assert_array_equal(Ja, [1.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(Jb, [0.0, 1.0, 0.0, 0.0])
    Ja, Jb = tj.jacobian(np.minimum, a, b, wrt=(0, 1), layout="diagonal")
    np.testing.assert_array_equal(Ja, [1.0, 1.0, 0.0, 1.0])
    np.testing.assert_array_equal(Jb, [0.0, 0.0, 1.0, 0.0])
    x = np.array([0.0, 1.0, -1.0])
    np.testing.assert_array_equal(tj.jacobian(lambda x: np.maximum(x, 0.0), x, layout="diagonal"), [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(tj.jacobian(lambda x: np.maximum(0.0, x), x, layout="diagonal"), [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(tj.jacobian(lambda x: np.minimum(x, 0.0), x, layout="diagonal"), [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(tj.jacobian(lambda x: np.minimum(0.0, x), x, layout="diagonal"), [0.0, 0.0, 1.0])


@needs_engine
def test_clip_bounds_are_inclusive():
    x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    np.testing.assert_array_equal(tj.jacobian(lambda x: np.clip(x, -0.5, 0.5), x, layout="diagonal"),
                                  [0.0, 1.0, 1.0, 1.0, 0.0])
    # traced bounds: d/dx is 1 on [lo, hi] inclusive; clip(x+t, lo+t, hi+t) = clip(x, lo, hi) + t, so the
    # three derivatives sum to 1 everywhere: the bounds get 0 at the ties
    Jx, Jlo, Jhi = tj.jacobian(lambda x, lo, hi: np.clip(x, lo, hi), x, np.array(-0.5), np.array(0.5), wrt=(0, 1, 2))
    np.testing.assert_array_equal(Jx, np.diag([0.0, 1.0, 1.0, 1.0, 0.0]))
    np.testing.assert_array_equal(Jlo, [1.0, 0.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(Jhi, [0.0, 0.0, 0.0, 0.0, 1.0])


# ============================================================================ reductions

REDUCTIONS = {  # label: f(x, axis, keepdims)
    "np.sum": lambda x, a, k: np.sum(x, axis=a, keepdims=k),
    "sum()": lambda x, a, k: x.sum(axis=a, keepdims=k),
    "np.mean": lambda x, a, k: np.mean(x, axis=a, keepdims=k),
    "mean()": lambda x, a, k: x.mean(axis=a, keepdims=k),
    "np.var": lambda x, a, k: np.var(x, axis=a, keepdims=k),
    "var()": lambda x, a, k: x.var(axis=a, keepdims=k),
    "np.std": lambda x, a, k: np.std(x, axis=a, keepdims=k),
    "std()": lambda x, a, k: x.std(axis=a, keepdims=k),
    "np.prod": lambda x, a, k: np.prod(x, axis=a, keepdims=k),
    "prod()": lambda x, a, k: x.prod(axis=a, keepdims=k),
    "np.max": lambda x, a, k: np.max(x, axis=a, keepdims=k),
    "np.amax": lambda x, a, k: np.amax(x, axis=a, keepdims=k),
    "max()": lambda x, a, k: x.max(axis=a, keepdims=k),
    "np.min": lambda x, a, k: np.min(x, axis=a, keepdims=k),
    "np.amin": lambda x, a, k: np.amin(x, axis=a, keepdims=k),
    "min()": lambda x, a, k: x.min(axis=a, keepdims=k),
}
AXES = {"None": None, "0": 0, "1": 1, "-1": -1, "(0,2)": (0, 2), "(-1,0)": (-1, 0), "(0,1,2)": (0, 1, 2)}


@needs_engine
@pytest.mark.parametrize("keepdims", [False, True], ids=["flat", "keepdims"])
@pytest.mark.parametrize("axis", list(AXES), ids=list(AXES))
@pytest.mark.parametrize("red", sorted(REDUCTIONS))
def test_reduction(red, axis, keepdims):
    x = DISTINCT(_rng(10), 2, 3, 4) * 0.3  # distinct entries (max/min), moderate products
    f = REDUCTIONS[red]
    a = AXES[axis]
    J = check_fd(lambda x: f(x, a, keepdims), x)[0]
    assert J.shape == np.shape(f(x, a, keepdims)) + x.shape


@needs_engine
def test_reduction_axis_empty_tuple_and_positional_axis():
    """axis=() reduces nothing (numpy: the identity for sum/mean/prod/max/min, zeros for var)."""
    x = DISTINCT(_rng(32), 2, 3) * 0.3
    eye = np.eye(6).reshape(2, 3, 2, 3)
    for f in (np.sum, np.mean, np.prod, np.max, np.min, np.amax, np.amin):
        np.testing.assert_array_equal(tj.jacobian(lambda x, f=f: f(x, axis=()), x), eye)
    np.testing.assert_array_equal(tj.jacobian(lambda x: np.var(x, axis=()), x), np.zeros((2, 3, 2, 3)))
    for f in (lambda x: np.sum(x, 0), lambda x: x.sum(1, keepdims=True), lambda x: np.mean(x, (0, 1)),
              lambda x: x.max(0), lambda x: np.linalg.norm(x, 2, 0), lambda x: np.std(x, 1, None, None, 1),
              lambda x: np.transpose(x, axes=(1, 0)) ** 2, lambda x: np.tensordot(x, x, axes=([-1], [-1])),
              lambda x: x.ravel(order="F") * np.arange(6.0), lambda x: np.squeeze(x[:, None, :, None], axis=(1, 3)),
              lambda x: x[..., np.newaxis] @ x[..., np.newaxis, :]):
        check_fd(f, x)


@needs_engine
@pytest.mark.parametrize("ddof", [0, 1, 2])
def test_var_std_ddof(ddof):
    X = _rng(11).standard_normal((4, 3))
    for f in (lambda X: np.var(X, ddof=ddof), lambda X: np.std(X, axis=0, ddof=ddof),
              lambda X: X.var(axis=1, ddof=ddof, keepdims=True), lambda X: X.std(axis=(0, 1), ddof=ddof)):
        check_fd(f, X)
    # a closed form for one of them: d var_ddof(x) / dx = 2 (x - mean) / (n - ddof)
    x = X.ravel()
    assert_close(tj.jacobian(lambda x: np.var(x, ddof=ddof), x), 2 * (x - x.mean()) / (x.size - ddof), CLOSED_RTOL)


@needs_engine
def test_prod_with_zero_entries():
    """d prod / dx_i is the product of the others, also when some x_j are 0 (no division by x_i)."""
    np.testing.assert_array_equal(tj.jacobian(np.prod, np.array([0.0, 2.0, 3.0])), [6.0, 0.0, 0.0])
    np.testing.assert_array_equal(tj.jacobian(np.prod, np.array([0.0, 0.0, 3.0])), [0.0, 0.0, 0.0])
    X = np.array([[0.0, 2.0, 5.0], [1.0, 2.0, 3.0]])
    J = tj.jacobian(lambda X: X.prod(axis=1), X)
    want = np.zeros((2, 2, 3))
    want[0, 0] = [10.0, 0.0, 0.0]
    want[1, 1] = [6.0, 3.0, 2.0]
    np.testing.assert_array_equal(J, want)


NORMS = {
    "vec2": (lambda x: np.linalg.norm(x), (5,)),
    "vec_ord2": (lambda x: np.linalg.norm(x, ord=2), (5,)),
    "vec_ord1": (lambda x: np.linalg.norm(x, ord=1), (5,)),
    "vec_inf": (lambda x: np.linalg.norm(x, ord=np.inf), (5,)),
    "vec_neginf": (lambda x: np.linalg.norm(x, ord=-np.inf), (5,)),
    "fro_default": (lambda X: np.linalg.norm(X), (3, 4)),
    "fro": (lambda X: np.linalg.norm(X, "fro"), (3, 4)),
    "fro_axes": (lambda X: np.linalg.norm(X, axis=(0, 1)), (3, 4)),
    "rows": (lambda X: np.linalg.norm(X, axis=1), (3, 4)),
    "cols_keepdims": (lambda X: np.linalg.norm(X, axis=0, keepdims=True), (3, 4)),
    "last_axis_rank3": (lambda T: np.linalg.norm(T, axis=-1), (2, 3, 4)),
    "rows_ord1": (lambda X: np.linalg.norm(X, ord=1, axis=1), (3, 4)),
    "rows_inf_keepdims": (lambda X: np.linalg.norm(X, ord=np.inf, axis=1, keepdims=True), (3, 4)),
    "fro_rank3_axes": (lambda T: np.linalg.norm(T, axis=(1, 2)), (2, 3, 4)),
    "fro_keepdims": (lambda X: np.linalg.norm(X, keepdims=True), (3, 4)),
}


@needs_engine
@pytest.mark.parametrize("name", sorted(NORMS))
def test_norm_variants(name):
    f, shape = NORMS[name]
    n = int(np.prod(shape))
    r = _rng(12)
    x = ((0.3 + 0.25 * r.permutation(n)) * r.choice([-1.0, 1.0], n)).reshape(shape)  # distinct |x|, none near 0
    check_fd(f, x)


# ============================================================================ shape functions, indexing, joining

_mask23 = np.array([[True, False, True], [False, True, True]])
_mask3 = np.array([True, False, True])
_rows, _cols = np.array([0, 1]), np.array([2, 0, 2])

LINEAR_MAPS = {  # name: (f, input shape); every f is linear (or affine) in x
    # shape functions
    "reshape_-1": (lambda x: x.reshape(-1), (2, 3, 2)),
    "reshape_tuple": (lambda x: x.reshape((4, 3)), (2, 3, 2)),
    "reshape_args": (lambda x: x.reshape(3, -1), (2, 3, 2)),
    "np.reshape_F": (lambda x: np.reshape(x, (3, 4), order="F"), (2, 3, 2)),
    "ravel": (lambda x: x.ravel(), (2, 3, 2)),
    "np.ravel": (lambda x: np.ravel(x), (2, 3, 2)),
    "flatten": (lambda x: x.flatten(), (2, 3, 2)),
    ".T": (lambda x: x.T, (2, 3, 2)),
    "np.transpose": (lambda x: np.transpose(x), (2, 3, 2)),
    "transpose_axes": (lambda x: x.transpose(1, 2, 0), (2, 3, 2)),
    "np.transpose_axes": (lambda x: np.transpose(x, (2, 0, 1)), (2, 3, 2)),
    "swapaxes": (lambda x: np.swapaxes(x, 0, 2), (2, 3, 2)),
    "swapaxes_method": (lambda x: x.swapaxes(-1, 1), (2, 3, 2)),
    "moveaxis": (lambda x: np.moveaxis(x, 0, -1), (2, 3, 2)),
    "moveaxis_multi": (lambda x: np.moveaxis(x, [0, 1], [-1, 0]), (2, 3, 2)),
    "expand_dims": (lambda x: np.expand_dims(x, 1), (2, 3)),
    "expand_dims_tuple": (lambda x: np.expand_dims(x, (0, -1)), (2, 3)),
    "squeeze": (lambda x: np.squeeze(x), (2, 1, 3, 1)),
    "squeeze_axis": (lambda x: x.squeeze(axis=1), (2, 1, 3, 1)),
    "broadcast_to": (lambda x: np.broadcast_to(x, (2, 4, 3)), (3,)),
    "broadcast_to_col": (lambda x: np.broadcast_to(x, (2, 3, 4)), (3, 1)),
    # indexing
    "slice_step": (lambda x: x[1:, ::2], (3, 5)),
    "negative_step": (lambda x: x[::-1, -2::-2], (3, 5)),
    "int_index": (lambda x: x[0], (3, 5)),
    "negative_int": (lambda x: x[-1, -2], (3, 5)),
    "newaxis": (lambda x: x[..., None], (3, 5)),
    "newaxis_middle": (lambda x: x[:, np.newaxis, 1:3], (3, 5)),
    "ellipsis_int": (lambda x: x[..., 1], (2, 3, 4)),
    "ellipsis_middle": (lambda x: x[0, ..., ::2], (2, 3, 4)),
    "int_list": (lambda x: x[[0, 2]], (3, 5)),
    "int_list_repeated_negative": (lambda x: x[[2, -1, 0, 2]], (3, 5)),
    "int_array_2d": (lambda x: x[np.array([[0, 1], [2, 0]])], (3, 5)),
    "adv_then_slice": (lambda x: x[[0, 2], 1:], (3, 5)),
    "slice_then_adv": (lambda x: x[1:, [0, 0, 4]], (3, 5)),
    "rows_cols_broadcast": (lambda x: x[_rows[:, None], _cols], (3, 5)),
    "pairs": (lambda x: x[_rows, _cols[:2]], (3, 5)),
    "adv_nonadjacent": (lambda x: x[[0, 1], :, [3, 0]], (2, 3, 4)),  # numpy puts the advanced axis first
    "adv_with_newaxis": (lambda x: x[None, [1, 0], ..., 2], (2, 3, 4)),
    "bool_mask_full": (lambda x: x[_mask23], (2, 3)),
    "bool_mask_axis": (lambda x: x[:, _mask3], (2, 3)),
    "bool_mask_first_axis": (lambda x: x[np.array([False, True])], (2, 3)),
    "scalar_entry": (lambda x: x[1, 2], (2, 3)),
    # diag family
    "diag_of_vector": (lambda x: np.diag(x), (3,)),
    "diag_of_vector_k1": (lambda x: np.diag(x, k=1), (3,)),
    "diag_of_matrix": (lambda x: np.diag(x), (3, 4)),
    "diag_of_matrix_k-1": (lambda x: np.diag(x, -1), (3, 4)),
    "diagonal_offset": (lambda x: np.diagonal(x, offset=1), (3, 4)),
    "diagonal_method": (lambda x: x.diagonal(-1), (3, 4)),
    "diagonal_axes_rank3": (lambda x: np.diagonal(x, axis1=0, axis2=2), (3, 2, 3)),
    "trace": (lambda x: np.trace(x), (3, 4)),
    "trace_offset": (lambda x: np.trace(x, offset=1), (3, 4)),
    "trace_method": (lambda x: x.trace(), (3, 3)),
    "trace_axes_rank3": (lambda x: np.trace(x, axis1=1, axis2=2), (2, 3, 3)),
    "triu": (lambda x: np.triu(x), (3, 4)),
    "triu_k1": (lambda x: np.triu(x, 1), (3, 4)),
    "tril_k-1": (lambda x: np.tril(x, k=-1), (3, 4)),
    "tril_stack": (lambda x: np.tril(x), (2, 3, 3)),
    # joining and repeating
    "concatenate_0": (lambda x: np.concatenate([x, 2 * x]), (2, 3)),
    "concatenate_1": (lambda x: np.concatenate((x[:, :1], x, -x), axis=1), (2, 3)),
    "concatenate_-1": (lambda x: np.concatenate([x, x[::-1]], axis=-1), (2, 3)),
    "concatenate_None": (lambda x: np.concatenate([x, x.T], axis=None), (2, 3)),
    "stack_0": (lambda x: np.stack([x, 3 * x]), (2, 3)),
    "stack_-1": (lambda x: np.stack([x, x.T.T, -x], axis=-1), (2, 3)),
    "stack_1": (lambda x: np.stack((x[0], x[1]), axis=1), (2, 3)),
    "hstack_1d": (lambda x: np.hstack([x, x[::-1]]), (3,)),
    "hstack_2d": (lambda x: np.hstack([x, x[:, :1]]), (2, 3)),
    "vstack_1d": (lambda x: np.vstack([x, 2 * x]), (3,)),
    "vstack_2d": (lambda x: np.vstack((x, x[:1])), (2, 3)),
    "tile_int": (lambda x: np.tile(x, 2), (2, 3)),
    "tile_tuple_more_dims": (lambda x: np.tile(x, (2, 1, 2)), (2, 3)),
    "repeat_int": (lambda x: np.repeat(x, 2), (2, 3)),
    "repeat_axis": (lambda x: np.repeat(x, 2, axis=1), (2, 3)),
    "repeat_counts": (lambda x: np.repeat(x, [1, 0, 3], axis=-1), (2, 3)),
    "repeat_method": (lambda x: x.repeat(3, axis=0), (2, 3)),
    "flip_all": (lambda x: np.flip(x), (2, 3)),
    "flip_axis": (lambda x: np.flip(x, axis=1), (2, 3)),
    "flip_axes": (lambda x: np.flip(x, (0, 1)), (2, 3)),
    # affine, with constant pieces
    "concatenate_with_constant": (lambda x: np.concatenate([x, np.ones(2)]), (3,)),
    "hstack_bias_column": (lambda x: np.hstack([x, np.ones((x.shape[0], 1))]), (2, 3)),
    "stack_with_constant": (lambda x: np.stack([x, np.zeros(3), x]), (3,)),
}


@pytest.mark.parametrize("name", sorted(LINEAR_MAPS))
def test_reference_linear_maps(name):
    f, shape = LINEAR_MAPS[name]
    x = _rng(13).standard_normal(shape)
    assert_close(affine_reference(f, shape), fd_reference(f, (x,), 0), 1e-9)


@needs_engine
@pytest.mark.parametrize("name", sorted(LINEAR_MAPS))
def test_shape_index_and_joining(name):
    f, shape = LINEAR_MAPS[name]
    x = _rng(13).standard_normal(shape)
    J = tj.jacobian(f, x)
    np.testing.assert_array_equal(J, affine_reference(f, shape))  # 0/1 (small integer) entries: exact
    val, _ = tj.value_and_jacobian(f, x)
    np.testing.assert_array_equal(val, f(x))


@needs_engine
def test_boolean_mask_from_a_comparison():
    x = AWAY(_rng(14), 3, 4)
    mask = x > 0
    J = tj.jacobian(lambda x: x[x > 0] * 2, x)
    np.testing.assert_array_equal(J, affine_reference(lambda v: v[mask] * 2, x.shape))


# ============================================================================ linear algebra

DOTS = {
    "dot_1d_1d": (np.dot, (3,), (3,)),
    "dot_2d_1d": (np.dot, (2, 3), (3,)),
    "dot_1d_2d": (np.dot, (3,), (3, 2)),
    "dot_2d_2d": (np.dot, (2, 3), (3, 2)),
    "dot_3d_1d": (np.dot, (2, 2, 3), (3,)),
    "dot_scalar": (np.dot, (), (2, 3)),
    "dot_method": (lambda a, b: a.dot(b), (2, 3), (3, 2)),
    "inner_1d": (np.inner, (4,), (4,)),
    "inner_2d": (np.inner, (2, 3), (4, 3)),
    "outer_1d": (np.outer, (3,), (4,)),
    "outer_2d_flattens": (np.outer, (2, 2), (3,)),
    "matmul_fn": (np.matmul, (2, 2, 3), (3, 2)),
    "tensordot_0": (lambda a, b: np.tensordot(a, b, axes=0), (2, 2), (3,)),
    "tensordot_1": (lambda a, b: np.tensordot(a, b, axes=1), (2, 3), (3, 2)),
    "tensordot_2": (lambda a, b: np.tensordot(a, b, axes=2), (2, 3, 2), (3, 2, 2)),
    "tensordot_pairs": (lambda a, b: np.tensordot(a, b, axes=([1, 0], [0, 2])), (3, 2, 2), (2, 2, 3)),
    "tensordot_int_pair": (lambda a, b: np.tensordot(a, b, axes=(2, 0)), (2, 3, 2), (2, 3)),
    "kron_2d": (np.kron, (2, 3), (2, 2)),
    "kron_1d": (np.kron, (3,), (2,)),
    "kron_2d_1d": (np.kron, (2, 2), (3,)),
}


@needs_engine
@pytest.mark.parametrize("name", sorted(DOTS))
def test_products(name):
    f, sa, sb = DOTS[name]
    r = _rng(15)
    check_fd(lambda a, b: f(a, b), r.standard_normal(sa), r.standard_normal(sb), wrt=(0, 1))


EINSUMS = {  # name: (subscripts, operand shapes); every operand traced
    "matmul": ("ij,jk->ik", [(2, 3), (3, 2)]),
    "trace": ("ii->", [(3, 3)]),
    "diag": ("ii->i", [(3, 3)]),
    "frobenius_inner": ("ij,ij->", [(2, 3), (2, 3)]),
    "implicit_matmul": ("ij,jk", [(2, 3), (3, 2)]),
    "implicit_trace": ("ii", [(3, 3)]),
    "implicit_transpose": ("ba", [(2, 3)]),  # implicit output is sorted: a transpose
    "implicit_outer": ("i,j", [(2,), (3,)]),
    "ellipsis_bmm": ("...ij,...jk->...ik", [(2, 2, 3), (2, 3, 2)]),
    "ellipsis_broadcast": ("...ij,...jk->...ik", [(2, 1, 2, 3), (3, 3, 2)]),
    "ellipsis_implicit": ("...ij,...jk", [(2, 2, 3), (3, 2)]),
    "ellipsis_sum": ("i...->...", [(3, 2, 2)]),
    "batched": ("bij,bjk->bik", [(2, 2, 3), (2, 3, 2)]),
    "three_operands": ("ij,jk,kl->il", [(2, 3), (3, 3), (3, 2)]),
    "sum_all": ("ijk->", [(2, 3, 2)]),
    "permute": ("ijk->kij", [(2, 3, 2)]),
    "repeated_in_two": ("ij,ji->i", [(2, 3), (3, 2)]),
    "diag_times_vec": ("ii,i->i", [(3, 3), (3,)]),
    "broadcast_row": ("ij,j->ij", [(2, 3), (3,)]),
    "outer3": ("i,j,k->ijk", [(2,), (3,), (2,)]),
}


@needs_engine
@pytest.mark.parametrize("name", sorted(EINSUMS))
def test_einsum(name):
    subs, shapes = EINSUMS[name]
    r = _rng(16)
    ops = [r.standard_normal(s) for s in shapes]
    check_fd(lambda *ops: np.einsum(subs, *ops), *ops, wrt=tuple(range(len(ops))))


@needs_engine
def test_einsum_same_traced_operand_twice_and_optimize():
    r = _rng(17)
    X, A = r.standard_normal((2, 3)), r.standard_normal((3, 3))
    check_fd(lambda X: np.einsum("ij,ij->", X, X), X)
    check_fd(lambda X: np.einsum("ij,jk,lk->il", X, A, X), X)  # X A X^T
    check_fd(lambda X, A: np.einsum("ij,jk,lk->il", X, A, X, optimize=True), X, A, wrt=(0, 1))
    check_fd(lambda A: np.einsum("ii,jj->", A, A), A)


@needs_engine
def test_inv_det_slogdet():
    r = _rng(18)
    X = WC(r, 3)
    X[0] *= -1  # negative determinant: slogdet's sign is -1, a constant
    check_fd(np.linalg.inv, X)
    check_fd(np.linalg.det, X)
    check_fd(lambda X: np.linalg.slogdet(X)[1], X)
    check_fd(lambda X: np.linalg.slogdet(X).logabsdet, X)

    def sign_times(X):
        s, l = np.linalg.slogdet(X)
        return s * l + s * np.sum(X)

    Js = check_fd(sign_times, X)
    assert_close(Js[0], -(np.linalg.inv(X).T + 1.0), CLOSED_RTOL)


@needs_engine
@pytest.mark.parametrize("bshape", [(3,), (3, 1), (3, 2)], ids=["b1d", "b2d_col", "b2d"])
def test_solve(bshape):
    r = _rng(19)
    A, b = WC(r, 3), r.standard_normal(bshape)
    Js = check_fd(np.linalg.solve, A, b, wrt=(0, 1))
    Ai = np.linalg.inv(A)
    x = np.linalg.solve(A, b)
    if b.ndim == 1:
        assert_close(Js[0], -np.einsum("ik,l->ikl", Ai, x), CLOSED_RTOL)
        assert_close(Js[1], Ai, CLOSED_RTOL)
    else:
        assert_close(Js[0], -np.einsum("ik,lj->ijkl", Ai, x), CLOSED_RTOL)


@needs_engine
def test_stacked_linalg():
    """numpy's stacking semantics for inv, det, slogdet and solve (leading batch axes)."""
    r = _rng(20)
    X = np.stack([WC(r, 3), WC(r, 3)])
    B = r.standard_normal((2, 3, 2))
    check_fd(np.linalg.inv, X)
    check_fd(np.linalg.det, X)
    check_fd(lambda X: np.linalg.slogdet(X)[1], X)
    check_fd(np.linalg.solve, X, B, wrt=(0, 1))


@needs_engine
def test_cholesky_lower_triangle():
    S = SPD_GARBAGE(_rng(21), 3)  # the strictly upper triangle is noise numpy never reads
    J = check_fd(np.linalg.cholesky, S)[0]
    upper = np.triu(np.ones((3, 3), bool), 1)
    np.testing.assert_array_equal(J[..., upper], 0.0)  # exactly 0 for the entries numpy does not read
    np.testing.assert_array_equal(J[upper], 0.0)  # and L's own upper triangle is the constant 0
    check_fd(lambda S: np.sum(np.log(np.diag(np.linalg.cholesky(S)))), S)


@needs_engine
def test_eigh_values_lower_triangle():
    S = SPD_GARBAGE(_rng(22), 4)
    for f in (lambda S: np.linalg.eigh(S)[0], lambda S: np.linalg.eigh(S).eigenvalues, np.linalg.eigvalsh):
        J = check_fd(f, S)[0]
        V = np.linalg.eigh(S)[1]
        assert_close(J, lower_convention(np.einsum("ki,li->ikl", V, V)), CLOSED_RTOL)
        np.testing.assert_array_equal(J[..., np.triu(np.ones((4, 4), bool), 1)], 0.0)


def eigh_vectors_closed(S):
    """dV[m, i] / dS[k, l] for numpy's eigh (LOWER triangle): sum_{j != i} V[m,j] V[k,j] V[l,i] / (lam_i - lam_j)."""
    lam, V = np.linalg.eigh(S)
    n = lam.size
    gap = lam[None, :] - lam[:, None]  # [j, i] = lam_i - lam_j
    F = np.where(np.eye(n, dtype=bool), 0.0, 1.0 / np.where(np.eye(n, dtype=bool), 1.0, gap))
    return lower_convention(np.einsum("mj,kj,li,ji->mikl", V, V, V, F))


def test_reference_eigh_vectors_and_values():
    """numpy's eigh differentiated by finite differences matches the lower-triangle closed forms."""
    S = SPD_GARBAGE(_rng(23), 3)
    assert_close(eigh_vectors_closed(S), fd_reference(lambda S: np.linalg.eigh(S)[1], (S,), 0), 1e-7)
    S = SPD_GARBAGE(_rng(22), 4)
    V = np.linalg.eigh(S)[1]
    assert_close(lower_convention(np.einsum("ki,li->ikl", V, V)), fd_reference(np.linalg.eigvalsh, (S,), 0), 1e-8)


@needs_engine
def test_eigh_vectors_distinct_eigenvalues():
    S = SPD_GARBAGE(_rng(23), 3)
    J = check_fd(lambda S: np.linalg.eigh(S)[1], S, rtol=1e-6)[0]
    assert_close(J, eigh_vectors_closed(S), 1e-9)
    check_fd(lambda S: np.linalg.eigh(S).eigenvectors[:, 0] * np.linalg.eigh(S).eigenvalues[0], S, rtol=1e-6)
    check_fd(lambda S: (lambda V: V @ np.diag(np.arange(1.0, 4.0)) @ V.T)(np.linalg.eigh(S)[1]), S, rtol=1e-6)


@needs_engine
def test_tensorjac_ops_inside_f():
    r = _rng(24)
    A, X, B = r.standard_normal((2, 3)), r.standard_normal((3, 4)), r.standard_normal((4, 2))
    S = WC(r, 3)
    x = r.standard_normal(3)
    check_fd(lambda A, X, B: np.tanh(tj.sandwich(A, X, B)) + 1.0, A, X, B, wrt=(0, 1, 2))
    check_fd(lambda X: tj.sigmoid(X).sum(axis=0) ** 2, X)
    check_fd(lambda S: tj.inv(S) @ S.T + tj.logdet(S) * np.eye(3), S)
    check_fd(lambda x, S: tj.quadratic(np.sin(x), S) + tj.dot(x, x), x, S, wrt=(0, 1))
    check_fd(lambda A, x: tj.matmul(A, x) + tj.kron(A, x[:2, None]).sum(), A, x, wrt=(0, 1))
    check_fd(lambda X: tj.transpose(tj.exp(X)) @ np.ones(3), X)


# ============================================================================ in-place forms


def _inplace_add(x):
    y = x * 1.0
    y += x
    y *= 2
    y -= 0.5 * x
    y /= 3.0
    y **= 2
    return y


def _setitem_traced(x):
    y = x + 0.0
    y[0] = x[1] ** 2
    y[-1] = 5.0  # a constant: that row of the Jacobian becomes 0
    return y


def _slice_iadd(x):
    y = 2 * x
    y[1:] += x[:-1]
    y[::2] *= x[::2]
    return y


def _repeated_assign(x):
    y = x * 1.0
    y[[0, 0]] = x[[1, 2]]  # last write wins: y[0] = x[2]
    return y


def _repeated_iadd(x):
    y = x * 1.0
    y[[0, 0, 1]] += x[[1, 2, 3]]  # numpy: y[idx] = y[idx] + v, so y[0] = x[0] + x[2] (the last write)
    return y


def _mask_setitem(x):
    y = x**2
    y[x > 0] = x[x > 0] * 3
    return y


def _setitem_2d(X):
    Y = X * 2
    Y[:, 0] = X[:, 1]
    Y[1] = X.sum(axis=0)
    Y[..., -1] += 1.0
    return Y


def _broadcast_setitem(x):
    y = x + 1
    y[:] = x[0]
    return y * x


def _snapshot_before_inplace(x):
    y = x * 1.0
    z = y * 2  # a new array: later in-place updates of y do not reach it
    y += 1.0
    y *= x
    return z + y


INPLACE = {
    "snapshot_before_in_place": (_snapshot_before_inplace, (4,)),
    "iadd_imul_isub_idiv_ipow": (_inplace_add, (4,)),
    "setitem_traced_and_constant": (_setitem_traced, (4,)),
    "slice_iadd_imul": (_slice_iadd, (5,)),
    "repeated_index_assignment": (_repeated_assign, (4,)),
    "repeated_index_iadd": (_repeated_iadd, (4,)),
    "mask_setitem": (_mask_setitem, (5,)),
    "setitem_2d": (_setitem_2d, (3, 3)),
    "broadcast_setitem": (_broadcast_setitem, (3,)),
}


@needs_engine
@pytest.mark.parametrize("name", sorted(INPLACE))
def test_in_place_on_traced(name):
    f, shape = INPLACE[name]
    x = AWAY(_rng(25), *shape)
    x0 = x.copy()
    check_fd(f, x)
    np.testing.assert_array_equal(x, x0)


@needs_engine
def test_last_write_wins_exactly():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    J = tj.jacobian(_repeated_assign, x)
    want = np.eye(4)
    want[0] = [0.0, 0.0, 1.0, 0.0]
    np.testing.assert_array_equal(J, want)
    J = tj.jacobian(_setitem_traced, x)
    want = np.eye(4)
    want[0] = [0.0, 4.0, 0.0, 0.0]
    want[3] = 0.0
    np.testing.assert_array_equal(J, want)
