"""Shared helpers for the tensorjac test suite.

Everything here is an *independent* reference: numpy values of every op, an
explicit einsum construction of every op's rank-(P+R) Jacobian, central
differences of the numpy values, and the five layouts of LAYOUTS.md built from
the tensor with plain numpy transposes and reshapes.  Nothing is copied from
the library's output.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorjac as tj
from tensorjac._examples import example_args

LAYOUTS = ("tensor", "gradient", "numerator", "matrix", "vec")

# The op lists are derived from the registry, so a new op is tested without editing this file;
# test_every_op_has_an_independent_reference (test_ops.py) fails until it gets a reference below.
ALL_OPS = tuple(tj.CATALOGUE)
NARGS = {name: len(op.argnames) for name, op in tj.CATALOGUE.items() if len(op.argnames) != 1}
ELEMENTWISE = tuple(n for n, op in tj.CATALOGUE.items() if op.elementwise and len(op.argnames) == 1)
DIAGONAL_OPS = tuple(n for n, op in tj.CATALOGUE.items() if op.elementwise)
NON_HOLOMORPHIC = tuple(n for n, op in tj.CATALOGUE.items() if not op.holomorphic)
HOLOMORPHIC = tuple(n for n in ALL_OPS if n not in NON_HOLOMORPHIC)

# every (op name, wrt index)
CASES = [(name, w) for name in ALL_OPS for w in range(NARGS.get(name, 1))]
CASE_IDS = [f"{n}-wrt{w}" for n, w in CASES]
HOLO_CASES = [(n, w) for n, w in CASES if n in HOLOMORPHIC]
HOLO_IDS = [f"{n}-wrt{w}" for n, w in HOLO_CASES]


def op_of(name: str) -> tj.Op:
    return getattr(tj, name)


# ----------------------------------------------------------------------------- arguments


def make_args(name: str, dtype=np.float64, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Well-conditioned arguments (from _examples) in the requested dtype."""
    args = example_args(name, seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        rng = np.random.default_rng(1000 + seed)
        # a small imaginary part keeps log/sqrt away from their branch cut and inv well-conditioned
        return tuple((a + 0.3j * rng.standard_normal(a.shape)).astype(dtype) for a in args)
    return tuple(a.astype(dtype) for a in args)


def upcast(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)


# ----------------------------------------------------------------------------- numpy values


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _dsigmoid(x):
    """exp(-x) / (1 + exp(-x))^2, which is even in x: evaluated at -|x| for real x (no overflow)."""
    x = np.asarray(x)
    e = np.exp(-x) if x.dtype.kind == "c" else np.exp(-np.abs(x))
    return e / (1.0 + e) ** 2


def _softplus(x):
    if np.asarray(x).dtype.kind == "c":
        return np.log(1.0 + np.exp(x))
    return np.logaddexp(0.0, x)


ELEMENTWISE_REF = {  # name: (f, f')
    "exp": (np.exp, np.exp),
    "log": (np.log, lambda x: 1.0 / x),
    "sin": (np.sin, np.cos),
    "cos": (np.cos, lambda x: -np.sin(x)),
    "tanh": (np.tanh, lambda x: 1.0 / np.cosh(x) ** 2),
    "sigmoid": (_sigmoid, lambda x: _dsigmoid(x)),
    "relu": (lambda x: np.where(x > 0, x, 0.0), lambda x: np.where(x > 0, 1.0, 0.0)),
    "softplus": (_softplus, _sigmoid),
    "square": (lambda x: x * x, lambda x: 2.0 * x),
    "sqrt": (np.sqrt, lambda x: 0.5 / np.sqrt(x)),
    "abs": (np.abs, np.sign),
}


def ref_value(name: str, *args):
    """The op's value computed with numpy only."""
    if name in ELEMENTWISE_REF:
        return ELEMENTWISE_REF[name][0](args[0])
    A = args
    return {
        "matmul": lambda: np.matmul(A[0], A[1]),
        "sandwich": lambda: A[0] @ A[1] @ A[2],
        "multiply": lambda: A[0] * A[1],
        "kron": lambda: np.kron(A[0], A[1]),
        "outer": lambda: np.outer(A[0], A[1]),
        "transpose": lambda: np.transpose(A[0]),
        "inv": lambda: np.linalg.inv(A[0]),
        "trace": lambda: np.trace(A[0]),
        "det": lambda: np.linalg.det(A[0]),
        "logdet": lambda: np.log(np.abs(np.linalg.det(A[0]))),
        "dot": lambda: np.dot(A[0], A[1]),
        "quadratic": lambda: A[0] @ A[1] @ A[0],
        "sum": lambda: np.sum(A[0]),
        "norm": lambda: np.sqrt(np.sum(np.abs(A[0]) ** 2)),
    }[name]()


# ----------------------------------------------------------------------------- tensor references


def diag_tensor(d: np.ndarray) -> np.ndarray:
    """T[m, n] = delta(m, n) d[m], shape d.shape + d.shape."""
    d = np.asarray(d)
    n = d.size
    return np.einsum("mn,m->mn", np.eye(n), d.reshape(-1)).reshape(d.shape + d.shape)


def transpose_tensor(shape: tuple) -> np.ndarray:
    """Jacobian of X -> X.transpose() (axes reversed): T[m, n] = delta(reversed(m), n)."""
    R = len(shape)
    N = int(np.prod(shape, dtype=np.int64))
    ident = np.eye(N).reshape(tuple(shape) + tuple(shape))
    return ident.transpose(tuple(range(R - 1, -1, -1)) + tuple(range(R, 2 * R)))


def cofactor(X: np.ndarray) -> np.ndarray:
    """C[i, j] = (-1)^(i+j) det(X without row i and column j), by minors."""
    n = X.shape[0]
    C = np.zeros_like(X)
    for i in range(n):
        for j in range(n):
            minor = np.delete(np.delete(X, i, axis=0), j, axis=1)
            C[i, j] = (-1) ** (i + j) * np.linalg.det(minor)
    return C


def _ref_matmul(A, B, wrt):
    if wrt == 0:
        if A.ndim == 2 and B.ndim == 2:  # d(AB)[i,j]/dA[k,a] = delta(i,k) B[a,j]
            return np.einsum("ik,aj->ijka", np.eye(A.shape[0]), B)
        if A.ndim == 2:  # matvec: J[i,k,a] = delta(i,k) x[a]
            return np.einsum("ik,a->ika", np.eye(A.shape[0]), B)
        if B.ndim == 2:  # vecmat: J[j,a] = B[a,j]
            return np.einsum("aj->ja", B)
        return B.copy()  # inner product
    if A.ndim == 2 and B.ndim == 2:  # d(AB)[i,j]/dB[a,l] = A[i,a] delta(j,l)
        return np.einsum("ia,jl->ijal", A, np.eye(B.shape[1]))
    if A.ndim == 2:  # matvec: J[i,a] = A[i,a]
        return A.copy()
    if B.ndim == 2:  # vecmat: J[j,a,l] = x[a] delta(j,l)
        return np.einsum("a,jl->jal", A, np.eye(B.shape[1]))
    return A.copy()


def ref_tensor(name: str, args, wrt: int) -> np.ndarray:
    """Explicit einsum construction of T[m..., n...] = d op(args)[m...] / d args[wrt][n...]."""
    args = tuple(upcast(a) for a in args)
    if name in ELEMENTWISE_REF:
        return diag_tensor(ELEMENTWISE_REF[name][1](args[0]))
    if name == "matmul":
        return _ref_matmul(args[0], args[1], wrt)
    if name == "sandwich":
        A, X, B = args
        if wrt == 0:  # F[i,j] = A[i,a] (XB)[a,j]
            return np.einsum("ik,aj->ijka", np.eye(A.shape[0]), X @ B)
        if wrt == 1:
            return np.einsum("ik,lj->ijkl", A, B)
        return np.einsum("ib,jl->ijbl", A @ X, np.eye(B.shape[1]))
    if name == "multiply":
        return diag_tensor(args[1 - wrt])
    if name == "kron":
        A, B = args
        (m, n), (p, q) = A.shape, B.shape
        if wrt == 0:  # kron[(i,k),(j,l)] = A[i,j] B[k,l]
            T = np.einsum("ia,jb,kl->ikjlab", np.eye(m), np.eye(n), B)
            return T.reshape(m * p, n * q, m, n)
        T = np.einsum("ij,kc,ld->ikjlcd", A, np.eye(p), np.eye(q))
        return T.reshape(m * p, n * q, p, q)
    if name == "outer":
        u, v = args
        M, N = u.size, v.size
        if wrt == 0:
            return np.einsum("ac,b->abc", np.eye(M), v.reshape(-1)).reshape((M, N) + u.shape)
        return np.einsum("a,bc->abc", u.reshape(-1), np.eye(N)).reshape((M, N) + v.shape)
    if name == "transpose":
        return transpose_tensor(args[0].shape)
    if name == "inv":
        Xi = np.linalg.inv(args[0])
        return -np.einsum("ik,lj->ijkl", Xi, Xi)
    if name == "trace":
        m, n = args[0].shape
        return np.eye(m, n)
    if name == "det":
        return cofactor(args[0])
    if name == "logdet":
        return np.linalg.inv(args[0]).T
    if name == "dot":
        return args[1 - wrt].copy()
    if name == "quadratic":
        x, A = args
        if wrt == 0:
            return (A + A.T) @ x
        return np.einsum("i,j->ij", x, x)
    if name == "sum":
        return np.ones(args[0].shape)
    if name == "norm":
        X = args[0]
        nrm = np.sqrt(np.sum(X * X))
        return X / nrm if nrm > 0 else np.zeros_like(X)
    raise KeyError(name)


def fd_tensor(value_fn, args, wrt: int, h: float = 1e-6) -> np.ndarray:
    """Central differences of value_fn(*args) w.r.t. args[wrt]; shape out.shape + in.shape.

    A real step is used, which for holomorphic functions of complex input gives
    the complex derivative.
    """
    args = [upcast(a) for a in args]
    x = args[wrt]
    y0 = np.asarray(value_fn(*args))
    dt = np.result_type(y0, x)
    cols = np.empty(y0.shape + (x.size,), dt)
    for idx in range(x.size):
        xp, xm = x.copy(), x.copy()
        xp.flat[idx] += h
        xm.flat[idx] -= h
        ap = args[:wrt] + [xp] + args[wrt + 1 :]
        am = args[:wrt] + [xm] + args[wrt + 1 :]
        cols[..., idx] = (np.asarray(value_fn(*ap)) - np.asarray(value_fn(*am))) / (2 * h)
    return cols.reshape(y0.shape + x.shape)


# ----------------------------------------------------------------------------- layouts


def to_layout(T: np.ndarray, out_shape: tuple, in_shape: tuple, layout: str) -> np.ndarray:
    """The LAYOUTS.md layouts of a rank-(P+R) tensor, with numpy only."""
    out_shape, in_shape = tuple(out_shape), tuple(in_shape)
    P, R = len(out_shape), len(in_shape)
    assert T.shape == out_shape + in_shape
    M = int(np.prod(out_shape, dtype=np.int64))
    N = int(np.prod(in_shape, dtype=np.int64))
    if layout == "tensor":
        return T
    if layout == "gradient":
        return np.moveaxis(T, tuple(range(P, P + R)), tuple(range(R)))
    if layout == "numerator":
        return T.transpose(tuple(range(P)) + tuple(range(P + R - 1, P - 1, -1)))
    if layout == "matrix":
        return T.reshape(M, N)
    if layout == "vec":  # column-major ravel of each side
        perm = tuple(range(P - 1, -1, -1)) + tuple(range(P + R - 1, P - 1, -1))
        return T.transpose(perm).reshape(M, N)
    if layout == "diagonal":
        assert out_shape == in_shape
        return T.reshape(M, N).diagonal().reshape(in_shape)
    raise ValueError(layout)


def tol(dtype) -> dict:
    """rtol for a result dtype (float32 results are compared with a float64 reference)."""
    return {"rtol": 2e-5} if np.dtype(dtype) in (np.float32, np.complex64) else {"rtol": 1e-12}


def assert_close(got, want, rtol: float, scale_atol: bool = True) -> None:
    """allclose with an absolute tolerance relative to the reference's magnitude."""
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = float(np.max(np.abs(want), initial=0.0)) if scale_atol else 0.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(scale, 1.0))


# ----------------------------------------------------------------------------- memory views


VIEW_KINDS = ("C", "F", "step", "neg", "T")


def as_view(vals: np.ndarray, kind: str) -> np.ndarray:
    """An array equal to vals but with a different memory layout.

    C: contiguous copy; F: Fortran order; step: every other element of a bigger
    array; neg: negative strides; T: a transposed view of a contiguous array.
    """
    vals = np.asarray(vals)
    if kind == "C":
        return np.array(vals, order="C", copy=True)
    if kind == "F":
        return np.array(vals, order="F", copy=True)
    if kind == "step":
        big = np.zeros(tuple(2 * s + 1 for s in vals.shape), dtype=vals.dtype)
        sl = tuple(slice(1, 2 * s, 2) for s in vals.shape) + (Ellipsis,)
        big[sl] = vals
        v = big[sl]
        assert v.shape == vals.shape
        return v
    if kind == "neg":
        rev = (slice(None, None, -1),) * vals.ndim + (Ellipsis,)
        return vals[rev].copy()[rev]
    if kind == "T":
        return np.array(vals.T, order="C", copy=True).T
    raise ValueError(kind)


def empty_view(shape: tuple, dtype, kind: str, fill=np.nan) -> np.ndarray:
    """A writable output buffer of the given shape in the given memory layout, filled with `fill`."""
    return as_view(np.full(shape, fill, dtype=dtype), kind)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _restore_tensorjac_config():
    """Every test leaves the thread count and the memory budget as it found them."""
    threads = tj.get_num_threads()
    budget = tj.get_memory_budget()
    yield
    tj.set_num_threads(threads)
    tj.set_memory_budget(budget)
