"""The op catalogue.  Each op is one rule: value, shape check, Jacobian terms, numpy aliases.

Index letters: output axes and input axes that share a letter are tied by a
Kronecker delta; factor arrays are indexed by the letters they carry.  Every
op follows numpy's semantics (broadcasting, stacks, axis arguments), and the
numpy function it names in ``numpy=`` is differentiated by this same rule
inside functions given to ``tj.jacobian``.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

import numpy as np

from ._deriv import Deriv
from ._rule import REGISTRY, Op
from ._rulekit import (
    arr,
    batch_letters,
    bcast_shape,
    binary_elementwise_deriv,
    einsum_deriv,
    elementwise_op,
    letters,
    need_ndim,
    need_square,
    normalize_axes,
    onehot_arg,
    reduce_letters,
    reduce_norm,
    reduce_shape,
    swap_last,
    traced,
)

CATALOGUE: dict[str, Op] = {}


def _register(op: Op) -> Op:
    CATALOGUE[op.name] = op
    return op


# ----------------------------------------------------------------------------- examples


def _spd(rng: np.random.Generator, n: int) -> np.ndarray:
    """A well-conditioned square matrix (far from singular)."""
    return rng.standard_normal((n, n)) + n * np.eye(n)


def _pos(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    return rng.uniform(0.5, 2.0, shape)


def _away_from_zero(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    return rng.choice([-1.5, -0.5, 0.5, 1.5], shape) + 0.1 * rng.standard_normal(shape)


def _normal(*shapes: tuple) -> Callable[[np.random.Generator], tuple]:
    return lambda r: tuple(r.standard_normal(s) for s in shapes)


# ----------------------------------------------------------------------------- products


def _matmul_specs(a: tuple, b: tuple) -> tuple[str, str, str]:
    """einsum specs of np.matmul for these shapes (1-D operands promoted as numpy does)."""
    if len(a) == 0 or len(b) == 0:
        raise ValueError(f"matmul: operands must not be 0-D (use *), got shapes {a} and {b}")
    ka = a[-1]
    kb = b[-2] if len(b) >= 2 else b[0]
    if ka != kb:
        raise ValueError(
            f"matmul: shapes A {a} and B {b} are not aligned (A.shape[-1]={ka} != B.shape[{-2 if len(b) >= 2 else 0}]={kb})"
        )
    ab, bb = a[:-2], b[:-2]
    try:
        out_batch = tuple(np.broadcast_shapes(ab, bb))
    except ValueError:
        raise ValueError(f"matmul: the stack shapes of A {a} and B {b} do not broadcast") from None
    ob, (la, lb) = batch_letters(out_batch, [ab, bb], 0)
    sa = la + ("ik" if len(a) >= 2 else "k")
    sb = lb + ("kj" if len(b) >= 2 else "k")
    so = ob + ("i" if len(a) >= 2 else "") + ("j" if len(b) >= 2 else "")
    return sa, sb, so


def _matmul_shape(a: tuple, b: tuple) -> tuple:
    sa, sb, so = _matmul_specs(a, b)
    sizes = dict(zip(sa, a)) | dict(zip(sb, b))
    return tuple(sizes[c] for c in so)


def _matmul_deriv(wrt: int, a: tuple, b: tuple) -> Deriv:
    sa, sb, so = _matmul_specs(a, b)
    return einsum_deriv([sa, sb], so, [a, b], wrt)


matmul = _register(
    Op(
        "matmul", ("A", "B"), np.matmul, _matmul_shape, _matmul_deriv, numpy=(np.matmul,),
        example=_normal((3, 4), (4, 2)),
        doc="""A @ B with numpy's semantics: matrix products, matvec/vecmat/inner for 1-D
operands, and stacks of matrices with broadcasting.

Examples
--------
>>> import numpy as np, tensorjac as tj
>>> A, B = np.arange(6.).reshape(2, 3), np.ones((3, 2))
>>> tj.jacobian(tj.matmul, A, B, wrt=0).shape   # d(AB)[i,j]/dA[k,a] = δ(i,k) B[a,j]
(2, 2, 2, 3)
""",
    )
)  # fmt: skip


def _sandwich_shape(a: tuple, x: tuple, b: tuple) -> tuple:
    for name, s in (("A", a), ("X", x), ("B", b)):
        need_ndim("sandwich", name, s, (2,))
    if a[1] != x[0] or x[1] != b[0]:
        raise ValueError(f"sandwich: shapes A {a}, X {x}, B {b} do not chain for A @ X @ B")
    return (a[0], b[1])


def _sandwich_x_vjp(G: np.ndarray, A: np.ndarray, X: np.ndarray, B: np.ndarray) -> np.ndarray:
    from ._ad import two_sided  # A^T G B^T by BLAS

    return two_sided(A.T, G, B.T)


def _sandwich_x_jvp(V: np.ndarray, A: np.ndarray, X: np.ndarray, B: np.ndarray) -> np.ndarray:
    from ._ad import two_sided  # A V B by BLAS

    return two_sided(A, V, B)


def _sandwich_deriv(wrt: int, a: tuple, x: tuple, b: tuple) -> Deriv:
    if wrt == 0:
        return Deriv("ij", "ia", [(1, ("aj",))], lambda A, X, B: (X @ B,))
    if wrt == 1:  # A[i,k] B[l,j]; in vec layout kron(B.T, A)
        return Deriv("ij", "kl", [(1, ("ik", "lj"))], lambda A, X, B: (A, B),
                     vjp=_sandwich_x_vjp, jvp=_sandwich_x_jvp)
    return Deriv("ij", "bj", [(1, ("ib",))], lambda A, X, B: (A @ X,))


sandwich = _register(
    Op("sandwich", ("A", "X", "B"), lambda A, X, B: A @ X @ B, _sandwich_shape, _sandwich_deriv,
       example=_normal((2, 3), (3, 4), (4, 2)),
       doc="""A @ X @ B for 2-D operands; its Jacobian in X is kron(B.T, A) in vec layout.

Examples
--------
>>> import numpy as np, tensorjac as tj
>>> A, X, B = np.eye(2), np.ones((2, 3)), 2 * np.eye(3)
>>> J = tj.jacobian(tj.sandwich, A, X, B, wrt="X", layout="vec")
>>> np.array_equal(J, np.kron(B.T, A))
True
""")
)  # fmt: skip


def _multiply_deriv(wrt: int, x: tuple, y: tuple) -> Deriv:
    if wrt == 0:
        return binary_elementwise_deriv(0, x, y, lambda X, Y: Y, "b")
    return binary_elementwise_deriv(1, x, y, lambda X, Y: X, "a")


multiply = _register(
    Op("multiply", ("X", "Y"), np.multiply, bcast_shape("multiply"), _multiply_deriv, elementwise=True,
       numpy=(np.multiply,), example=_normal((3, 4), (3, 4)),
       doc="""Hadamard product X * Y with numpy broadcasting (scalars included).

Its Jacobian is diagonal when X and Y have the same shape (``layout="diagonal"``).

Examples
--------
>>> import numpy as np, tensorjac as tj
>>> tj.jacobian(tj.multiply, np.array([1., 2.]), np.array([3., 4.]), layout="diagonal")
array([3., 4.])
""")
)  # fmt: skip


def _kron_shape(a: tuple, b: tuple) -> tuple:
    if len(a) == 0 or len(b) == 0:
        return b if len(a) == 0 else a
    n = builtins.max(len(a), len(b))
    a1, b1 = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    return tuple(p * q for p, q in zip(a1, b1))


def _kron_vjp(G: np.ndarray, A: np.ndarray, B: np.ndarray, wrt: int) -> np.ndarray:
    from ._ad import kron_vjp  # the kron contraction: one streaming pass over G in C++

    return kron_vjp(G, A, B, wrt)


def _kron_jvp(V: np.ndarray, A: np.ndarray, B: np.ndarray, wrt: int) -> np.ndarray:
    from ._ad import kron_jvp  # batched kron(V, B) / kron(A, V) in C++

    return kron_jvp(V, A, B, wrt)


def _kron_deriv(wrt: int, a: tuple, b: tuple) -> Deriv:
    if len(a) == 0 or len(b) == 0:  # a scalar times an array
        if wrt == 0:
            return binary_elementwise_deriv(0, a, b, lambda X, Y: Y, "b")
        return binary_elementwise_deriv(1, a, b, lambda X, Y: X, "a")
    n = builtins.max(len(a), len(b))
    # kron(A,B)[(i,k),...] = A[i,...] B[k,...]: each output axis fuses an A axis and a B axis
    la, lb = letters(n), letters(n, n)
    sizes = dict(zip(la, (1,) * (n - len(a)) + a)) | dict(zip(lb, (1,) * (n - len(b)) + b))
    out = "".join(f"({p}{q})" for p, q in zip(la, lb))
    ia, ib = la[n - len(a):], lb[n - len(b):]
    hooks: dict[str, Any] = {}
    if len(a) == len(b) == 2:
        hooks = {"vjp": lambda G, A, B: _kron_vjp(G, A, B, wrt), "jvp": lambda V, A, B: _kron_jvp(V, A, B, wrt)}
    if wrt == 0:
        return Deriv(out, ia, [(1, (ib,))], lambda A, B: (B,), sizes, **hooks)
    return Deriv(out, ib, [(1, (ia,))], lambda A, B: (A,), sizes, **hooks)


kron = _register(
    Op("kron", ("A", "B"), np.kron, _kron_shape, _kron_deriv, numpy=(np.kron,), example=_normal((2, 3), (3, 2)),
       doc="""Kronecker product np.kron(A, B), for operands of any rank (numpy's semantics).

Examples
--------
>>> import numpy as np, tensorjac as tj
>>> tj.jacobian(tj.kron, np.ones((2, 2)), np.eye(2), wrt=0).shape
(4, 4, 2, 2)
""")
)  # fmt: skip


def _outer_deriv(wrt: int, u: tuple, v: tuple) -> Deriv:
    lu, lv = letters(len(u)), letters(len(v), len(u))
    sizes = dict(zip(lu + lv, u + v))
    fused = f"({lu})({lv})"  # np.outer ravels its inputs: each output axis fuses one input
    if wrt == 0:
        return Deriv(fused, lu, [(1, (lv,))], lambda U, V: (V,), sizes)
    return Deriv(fused, lv, [(1, (lu,))], lambda U, V: (U,), sizes)


def _outer_shape(u: tuple, v: tuple) -> tuple:
    return (int(np.prod(u, dtype=np.int64)), int(np.prod(v, dtype=np.int64)))


outer = _register(
    Op("outer", ("u", "v"), np.outer, _outer_shape, _outer_deriv, numpy=(np.outer,),
       example=_normal((3,), (4,)),
       doc="""np.outer(u, v); like numpy, inputs of higher rank are raveled.

Examples
--------
>>> import numpy as np, tensorjac as tj
>>> tj.jacobian(tj.outer, np.array([1., 2.]), np.array([3., 4., 5.]), wrt=1).shape
(2, 3, 3)
""")
)  # fmt: skip


def _transpose_norm(shapes: tuple, axes: Any = None) -> dict[str, Any]:
    (x,) = shapes
    if axes is None:
        return {"axes": tuple(range(len(x)))[::-1]}
    ax = tuple(int(a) % len(x) if len(x) else int(a) for a in axes)
    if sorted(ax) != list(range(len(x))):
        raise ValueError(f"transpose: axes {axes!r} are not a permutation of the axes of an array of shape {x}")
    return {"axes": ax}


def _transpose_deriv(wrt: int, x: tuple, axes: tuple[int, ...]) -> Deriv:
    L = letters(len(x))
    out = "".join(L[a] for a in axes)
    return Deriv(out, L, [(1, ())])  # a permutation: in vec layout, the commutation matrix


transpose = _register(
    Op("transpose", ("X",), lambda X, axes: np.transpose(X, axes), lambda x, axes: tuple(x[a] for a in axes),
       _transpose_deriv, params={"axes": None}, normalize=_transpose_norm, numpy=(np.transpose,), view=True,
       example=_normal((3, 4)),
       doc="""np.transpose(X, axes): X.T by default (all axes reversed), or the given permutation.

Examples
--------
>>> import numpy as np, tensorjac as tj
>>> J = tj.jacobian(tj.transpose, np.ones((2, 3)), layout="matrix")   # the commutation matrix
>>> J.shape, float(J.sum())
((6, 6), 6.0)
""")
)  # fmt: skip


# ----------------------------------------------------------------------------- linear algebra


def _inv_shape(x: tuple) -> tuple:
    need_square("inv", "X", x, stacked=True)
    return x


def _inv_vjp(G: np.ndarray, X: np.ndarray, value: np.ndarray | None = None) -> np.ndarray:
    Xi = np.linalg.inv(X) if value is None else value
    if X.ndim == 2:
        from ._ad import two_sided  # -X^{-T} G X^{-T} by BLAS

        return two_sided(-Xi.T, G, Xi.T)
    XiT = swap_last(Xi)
    return -(XiT @ G @ XiT)


def _inv_jvp(V: np.ndarray, X: np.ndarray, value: np.ndarray | None = None) -> np.ndarray:
    Xi = np.linalg.inv(X) if value is None else value
    if X.ndim == 2:
        from ._ad import two_sided  # -X^{-1} V X^{-1} by BLAS

        return two_sided(-Xi, V, Xi)
    return -(Xi @ V @ Xi)


def _inv_deriv(wrt: int, x: tuple) -> Deriv:
    z = letters(len(x) - 2, 4)

    def factors(X: np.ndarray, value: np.ndarray | None = None) -> tuple:
        Xi = np.linalg.inv(X) if value is None else value
        return (Xi, Xi)

    # -inv(X)[i,k] inv(X)[l,j], per matrix of a stack
    return Deriv(z + "ij", z + "kl", [(-1, (z + "ik", z + "lj"))], factors, vjp=_inv_vjp, jvp=_inv_jvp,
                 uses_value=True)


inv = _register(
    Op("inv", ("X",), np.linalg.inv, _inv_shape, _inv_deriv, numpy=(np.linalg.inv,),
       example=lambda r: (_spd(r, 3),),
       doc="""np.linalg.inv(X), also for stacks of matrices; a singular X raises numpy.linalg.LinAlgError.

Examples
--------
>>> import numpy as np, tensorjac as tj
>>> J = tj.jacobian(tj.inv, 2 * np.eye(2))   # -inv(X)[i,k] inv(X)[l,j]
>>> float(J[0, 0, 0, 0])
-0.25
""")
)  # fmt: skip


def _trace_norm(shapes: tuple, offset: int = 0, axis1: int = 0, axis2: int = 1) -> dict[str, Any]:
    (x,) = shapes
    if len(x) < 2:
        raise ValueError(f"trace: X must have at least 2 dimensions, got shape {x}")
    a1, a2 = (normalize_axes(a, len(x), "trace")[0] for a in (axis1, axis2))  # type: ignore[index]
    if a1 == a2:
        raise ValueError(f"trace: axis1 and axis2 must differ, got {axis1} and {axis2}")
    return {"offset": int(offset), "axis1": a1, "axis2": a2}


def _trace_shape(x: tuple, offset: int = 0, axis1: int = 0, axis2: int = 1) -> tuple:
    return tuple(n for d, n in enumerate(x) if d not in (axis1, axis2))


def _diag_mask(n1: int, n2: int, offset: int) -> np.ndarray:
    return np.eye(n1, n2, offset)


def _trace_deriv(wrt: int, x: tuple, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Deriv:
    L = list(letters(len(x)))
    out = "".join(c for d, c in enumerate(L) if d not in (axis1, axis2))
    n1, n2 = x[axis1], x[axis2]
    if offset == 0 and n1 == n2:  # δ between the two axes
        L[axis2] = L[axis1]
        return Deriv(out, "".join(L), [(1, ())])
    mask = "".join((L[axis1], L[axis2]))
    return Deriv(out, "".join(L), [(1, (mask,))], lambda X: (_diag_mask(n1, n2, offset),))


trace = _register(
    Op("trace", ("X",), lambda X, offset=0, axis1=0, axis2=1: np.trace(X, offset, axis1, axis2), _trace_shape,
       _trace_deriv, params={"offset": 0, "axis1": 0, "axis2": 1}, normalize=_trace_norm,
       numpy=(np.trace,), numpy_extra=("dtype", "out"), example=_normal((3, 3)),
       doc="""np.trace(X, offset, axis1, axis2): sums along diagonals (non-square X allowed, like numpy).

Examples
--------
>>> import numpy as np, tensorjac as tj
>>> tj.jacobian(tj.trace, np.ones((2, 2)))
array([[1., 0.],
       [0., 1.]])
""")
)  # fmt: skip


def _frexp_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Y, e) with X = Y * 2**e per matrix and max|Y| in [0.5, 1): exact scaling."""
    m = np.max(np.abs(X), axis=(-1, -2), keepdims=True) if X.size else np.zeros(X.shape[:-2] + (1, 1))
    _, e = np.frexp(m.real.astype(np.float64))
    e = np.where(m == 0, 0, e)
    return _ldexp(X, -e), e


def _ldexp(X: np.ndarray, e: np.ndarray) -> np.ndarray:
    if X.dtype.kind == "c":
        return (np.ldexp(X.real, e) + 1j * np.ldexp(X.imag, e)).astype(X.dtype)
    return np.ldexp(X, e).astype(X.dtype, copy=False)


def _adjugate_t_scaled(Y: np.ndarray) -> np.ndarray:
    """Cofactor matrix of one square matrix with entries of order 1 (singular allowed)."""
    n = Y.shape[0]
    if n == 0:
        return np.zeros((0, 0), Y.dtype)
    try:
        with np.errstate(all="raise"):
            return (np.linalg.det(Y) * np.linalg.inv(Y)).T
    except (np.linalg.LinAlgError, FloatingPointError):
        pass
    U, s, Vh = np.linalg.svd(Y)
    others = np.array([np.prod(np.delete(s, i)) for i in range(n)], dtype=s.dtype)
    adj = (np.linalg.det(U) * np.linalg.det(Vh)) * ((Vh.conj().T * others) @ U.conj().T)
    return adj.T.astype(Y.dtype, copy=False)


def adjugate_transpose(X: np.ndarray) -> np.ndarray:
    """Cofactor matrix of X (= d det X / dX) per matrix of a stack, also for singular X.

    Each matrix is first scaled exactly by a power of two to entries of order
    one, then ``det(Y) inv(Y).T`` (or, when Y is singular, from the SVD
    ``Y = U S V^H``: ``adj(Y) = det(U) det(V^H) V adj(S) U^H``), and scaled back
    by ``2**((n-1) e)`` with ``ldexp``: no intermediate overflows or underflows.
    """
    X = np.asarray(X)
    n = X.shape[-1]
    if X.size == 0:
        return np.zeros(X.shape, X.dtype)
    Y, e = _frexp_scale(X)
    flat = Y.reshape((-1, n, n))
    adj = np.stack([_adjugate_t_scaled(M) for M in flat]) if flat.shape[0] else np.zeros_like(flat)
    adj = adj.reshape(X.shape)
    return _ldexp(adj, (n - 1) * e) if n > 1 else adj


def _det_shape(x: tuple) -> tuple:
    need_square("det", "X", x, stacked=True)
    return x[:-2]


def _cofactors(X: Any) -> Any:
    if traced(X):  # differentiated again (a Hessian): det(X) inv(X).T, for invertible X
        d = np.linalg.det(X)
        return np.reshape(d, np.shape(d) + (1, 1)) * swap_last(np.linalg.inv(X))
    return adjugate_transpose(X)


def _det_deriv(wrt: int, x: tuple) -> Deriv:
    z = letters(len(x) - 2, 4)
    return Deriv(z, z + "ij", [(1, (z + "ij",))], lambda X: (_cofactors(X),))


det = _register(
    Op("det", ("X",), np.linalg.det, _det_shape, _det_deriv, numpy=(np.linalg.det,),
       example=lambda r: (_spd(r, 3),),
       doc="""np.linalg.det(X), also for stacks; its gradient is the cofactor matrix.

The cofactors are computed with exact power-of-two scaling, so they are
right at any magnitude, and they are defined for singular X too.

Examples
--------
>>> import numpy as np, tensorjac as tj
>>> tj.jacobian(tj.det, np.diag([2., 3.]))
array([[3., 0.],
       [0., 2.]])
""")
)  # fmt: skip


def _logdet_value(X: np.ndarray) -> np.ndarray:
    return np.linalg.slogdet(X)[1]


def _logdet_factors(X: np.ndarray) -> tuple:
    V = X
    while traced(V):  # the check needs values only: no traced slogdet inside a Hessian's sweep
        V = V._get().value
    sign, _ = np.linalg.slogdet(V)
    if np.any(sign == 0):
        raise np.linalg.LinAlgError("logdet: X is singular, log|det X| = -inf has no derivative")
    return (swap_last(np.linalg.inv(X)),)


def _logdet_deriv(wrt: int, x: tuple) -> Deriv:
    z = letters(len(x) - 2, 4)
    return Deriv(z, z + "ij", [(1, (z + "ij",))], _logdet_factors)


def _logdet_shape(x: tuple) -> tuple:
    need_square("logdet", "X", x, stacked=True)
    return x[:-2]


logdet = _register(
    Op("logdet", ("X",), _logdet_value, _logdet_shape, _logdet_deriv, holomorphic=False,
       example=lambda r: (_spd(r, 3),),
       doc="""``log|det X|`` as in np.linalg.slogdet(X)[1] (stacks too); gradient inv(X).T.

Examples
--------
>>> import numpy as np, tensorjac as tj
>>> tj.jacobian(tj.logdet, np.diag([2., 4.]))
array([[0.5 , 0.  ],
       [0.  , 0.25]])
""")
)  # fmt: skip


# ----------------------------------------------------------------------------- reductions


def _dot_specs(a: tuple, b: tuple) -> tuple[str, str, str]:
    """einsum specs of np.dot (numpy's rules for every rank)."""
    if len(a) == 0 or len(b) == 0:
        la, lb = letters(len(a)), letters(len(b))
        return la, lb, la or lb
    if len(b) == 1:
        if a[-1] != b[0]:
            raise ValueError(f"dot: shapes a {a} and b {b} are not aligned ({a[-1]} != {b[0]})")
        la = letters(len(a) - 1)
        return la + "Z", "Z", la
    if a[-1] != b[-2]:
        raise ValueError(f"dot: shapes a {a} and b {b} are not aligned ({a[-1]} != {b[-2]})")
    la, lb = letters(len(a) - 1), letters(len(b) - 2, len(a) - 1)
    return la + "Z", lb + "ZY", la + lb + "Y"


def _dot_shape(a: tuple, b: tuple) -> tuple:
    sa, sb, so = _dot_specs(a, b)
    sizes = dict(zip(sa, a)) | dict(zip(sb, b))
    return tuple(sizes[c] for c in so)


def _dot_deriv(wrt: int, a: tuple, b: tuple) -> Deriv:
    sa, sb, so = _dot_specs(a, b)
    return einsum_deriv([sa, sb], so, [a, b], wrt)


dot = _register(
    Op("dot", ("a", "b"), np.dot, _dot_shape, _dot_deriv, numpy=(np.dot,), numpy_extra=("out",),
       example=_normal((4,), (4,)),
       doc="""np.dot(a, b) with numpy's rules for every rank (inner product of vectors, matrix products,
sum over the last axis of a and the second-to-last of b).

Examples
--------
>>> import numpy as np, tensorjac as tj
>>> tj.jacobian(tj.dot, np.array([1., 2.]), np.array([3., 4.]))
array([3., 4.])
""")
)  # fmt: skip


def _quadratic_shape(x: tuple, a: tuple) -> tuple:
    need_ndim("quadratic", "x", x, (1,))
    need_square("quadratic", "A", a)
    if a[0] != x[0]:
        raise ValueError(f"quadratic: A must be {x[0]}x{x[0]} to match x {x}, got A {a}")
    return ()


def _quadratic_deriv(wrt: int, x: tuple, a: tuple) -> Deriv:
    if wrt == 0:  # (A + A^T) x
        return Deriv("", "i", [(1, ("i",))], lambda x, A: (A @ x + A.T @ x,))
    return Deriv("", "ij", [(1, ("i", "j"))], lambda x, A: (x, x))  # x[i] x[j]


quadratic = _register(
    Op("quadratic", ("x", "A"), lambda x, A: x @ A @ x, _quadratic_shape, _quadratic_deriv,
       example=_normal((3,), (3, 3)),
       doc="""The quadratic form x @ A @ x.

Examples
--------
>>> import numpy as np, tensorjac as tj
>>> tj.jacobian(tj.quadratic, np.array([1., 2.]), np.eye(2))   # (A + A.T) x
array([2., 4.])
""")
)  # fmt: skip


def _sum_deriv(wrt: int, x: tuple, axis: tuple[int, ...], keepdims: bool) -> Deriv:
    out, inp = reduce_letters(x, axis, keepdims)
    return Deriv(out, inp, [(1, ())])


sum = _register(
    Op("sum", ("X",), lambda X, axis, keepdims: np.sum(X, axis=axis, keepdims=keepdims), reduce_shape,
       _sum_deriv, params={"axis": None, "keepdims": False}, normalize=reduce_norm("sum"),
       numpy=(np.sum,), numpy_extra=("dtype", "out", "initial", "where"), example=_normal((3, 4)),
       doc="""np.sum(X, axis=None, keepdims=False): the sum over all entries or over the given axes.

Examples
--------
>>> import numpy as np, tensorjac as tj
>>> tj.jacobian(tj.sum, np.ones((2, 3)), axis=1)[0]
array([[1., 1., 1.],
       [0., 0., 0.]])
""")
)  # fmt: skip


def _scaled(X: np.ndarray, axis: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(X / max|X|, max|X|) per reduced slice: squares neither overflow nor underflow."""
    if X.size == 0:
        return X, np.zeros(tuple(1 if d in axis else n for d, n in enumerate(X.shape)), np.abs(X).dtype)
    m = np.max(np.abs(X), axis=axis, keepdims=True)
    safe = np.where(m > 0, m, 1)
    return X / safe, m


def _two_norm(X: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    Y, m = _scaled(X, axis)
    r = m * np.sqrt(np.sum((Y * Y.conj()).real if Y.dtype.kind == "c" else Y * Y, axis=axis, keepdims=True))
    return r if keepdims else np.squeeze(r, axis)


def _norm_kind(ndim: int, ord: Any, axis: Any) -> tuple[str, tuple[int, ...]]:
    """("vector" | "matrix", axes) as numpy's linalg.norm decides."""
    if axis is None:
        if ord is None:
            return "vector", tuple(range(ndim))  # Frobenius / 2-norm of all entries
        if ndim == 1:
            return "vector", (0,)
        if ndim == 2:
            return "matrix", (0, 1)
        raise ValueError(f"norm: improper number of dimensions ({ndim}) to norm with ord={ord!r}")
    ax = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    nax = normalize_axes(ax, ndim, "norm")
    assert nax is not None
    if len(ax) == 1:
        return "vector", nax
    if len(ax) == 2:
        return "matrix", tuple(int(a) % ndim for a in ax)
    raise ValueError(f"norm: improper number of dimensions to norm, axis={axis!r}")


_VECTOR_ORDS = (None, 2, 1, np.inf, -np.inf, 0)
_MATRIX_ORDS = (None, "fro", "nuc", 1, -1, 2, -2, np.inf, -np.inf)


def _norm_norm(shapes: tuple, ord: Any = None, axis: Any = None, keepdims: bool = False) -> dict[str, Any]:
    kind, ax = _norm_kind(len(shapes[0]), ord, axis)
    if kind == "matrix" and ord not in _MATRIX_ORDS:
        raise ValueError(f"norm: invalid norm order {ord!r} for matrices")
    if kind == "vector" and isinstance(ord, str):
        raise ValueError(f"norm: invalid norm order {ord!r} for vectors")
    if ord is not None and not isinstance(ord, str):
        ord = float(ord)
    return {"ord": ord, "axis": axis if axis is None else (int(axis) if isinstance(axis, (int, np.integer))
                                                           else tuple(int(a) for a in axis)),
            "keepdims": bool(keepdims)}


def _norm_value(X: np.ndarray, ord: Any = None, axis: Any = None, keepdims: bool = False) -> np.ndarray:
    kind, ax = _norm_kind(X.ndim, ord, axis)
    if ord is None or ord == "fro" or (kind == "vector" and ord == 2):
        r = _two_norm(X, ax, True)  # scaled: right at any magnitude
        if keepdims:
            return r
        if axis is None and not keepdims:
            return r.reshape(())
        return np.squeeze(r, ax)
    return np.linalg.norm(X, ord, axis, keepdims)


def _norm_shape(x: tuple, ord: Any = None, axis: Any = None, keepdims: bool = False) -> tuple:
    kind, ax = _norm_kind(len(x), ord, axis)
    if axis is None and not keepdims:
        return ()
    return reduce_shape(x, tuple(sorted(a % builtins.max(len(x), 1) for a in ax)), keepdims)


def norm_gradient(X: np.ndarray, ord: Any = None, axis: Any = None) -> np.ndarray:
    """d norm(X, ord, axis) / dX, X-shaped (0 where the norm is 0 and for ord=0)."""
    kind, ax = _norm_kind(X.ndim, ord, axis)
    absX = np.abs(X)
    sgn = np.sign(X)
    if ord is None or ord == "fro" or (kind == "vector" and ord == 2):
        Y, m = _scaled(X, ax)
        n = np.sqrt(np.sum(Y * Y, axis=ax, keepdims=True))
        return np.where(m > 0, Y / np.where(n > 0, n, 1), 0)
    if kind == "vector":
        if ord == 1:
            return sgn
        if ord == np.inf:
            return sgn * onehot_arg(absX, ax, np.argmax)
        if ord == -np.inf:
            return sgn * onehot_arg(absX, ax, np.argmin)
        if ord == 0:
            return np.zeros_like(X)
        p = float(ord)
        nrm = np.sum(absX**p, axis=ax, keepdims=True) ** (1 / p)
        with np.errstate(divide="ignore", invalid="ignore"):
            g = sgn * absX ** (p - 1) / nrm ** (p - 1)
        return np.where(nrm > 0, g, 0)
    r, c = ax
    if ord in (1, -1, np.inf, -np.inf):
        sum_ax, pick_ax = (r, c) if ord in (1, -1) else (c, r)  # 1: max column sum; inf: max row sum
        s = np.sum(absX, axis=sum_ax, keepdims=True)
        oh = onehot_arg(s, (pick_ax,), np.argmax if ord > 0 else np.argmin)
        return sgn * oh
    # spectral norms via the SVD of each matrix (axes moved last)
    Xm = np.moveaxis(X, (r, c), (-2, -1))
    U, s, Vh = np.linalg.svd(Xm)
    if ord == "nuc":
        k = builtins.min(Xm.shape[-2:])
        G = U[..., :, :k] @ Vh[..., :k, :]
    else:  # the largest (ord 2) or smallest (ord -2) of the min(m, n) singular values
        i = 0 if ord == 2 else builtins.min(Xm.shape[-2:]) - 1
        G = U[..., :, i, None] * Vh[..., i, None, :]
    return np.moveaxis(G, (-2, -1), (r, c))


def _norm_deriv(wrt: int, x: tuple, ord: Any = None, axis: Any = None, keepdims: bool = False) -> Deriv:
    kind, ax = _norm_kind(len(x), ord, axis)
    L = letters(len(x))
    if axis is None and not keepdims:
        out = ""
    else:
        K = letters(len(x), len(x))
        out = "".join((K[d] if keepdims else "") if d in ax else c for d, c in enumerate(L))
    return Deriv(out, L, [(1, (L,))], lambda X: (norm_gradient(X, ord, axis),))


norm = _register(
    Op("norm", ("X",), _norm_value, _norm_shape, _norm_deriv, holomorphic=False,
       params={"ord": None, "axis": None, "keepdims": False}, normalize=_norm_norm,
       numpy=(np.linalg.norm,), example=_normal((3, 4)),
       doc="""np.linalg.norm(X, ord=None, axis=None, keepdims=False), every order numpy offers.

The Frobenius / vector 2-norm is computed with scaling, so value and gradient
are right at any magnitude; the gradient is 0 where the norm is 0.  Orders
with kinks (1, inf, max/min selections) differentiate through numpy's selected
entry; spectral norms ("nuc", 2, -2 for matrices) through the SVD.

Examples
--------
>>> import numpy as np, tensorjac as tj
>>> tj.jacobian(tj.norm, np.array([3., 4.]))
array([0.6, 0.8])
""")
)  # fmt: skip


# ----------------------------------------------------------------------------- elementwise


def elementwise(
    name: str, f: Callable, df: Callable, doc: str, holomorphic: bool = True, numpy: tuple = (),
    example: Callable | None = None, uses_value: bool = False,
) -> Op:
    """A public elementwise op of the catalogue (see tensorjac._rulekit.elementwise_op)."""
    return _register(elementwise_op(name, f, df, doc, holomorphic, numpy, True, example or _normal((3, 4)), uses_value))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    x = arr(x)
    if x.dtype.kind == "c":
        return 1 / (1 + np.exp(-x))
    e = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x: np.ndarray) -> np.ndarray:
    x = arr(x)
    if x.dtype.kind == "c":
        return np.log1p(np.exp(x))
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _dtanh(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind == "c":
        t = np.tanh(x)
        return 1 - t * t
    if traced(x):  # a derivative being differentiated again: numpy operations only
        e = np.exp(-2 * np.abs(x))
        d = 1 + e
        return 4 * e / (d * d)
    e = np.asarray(np.abs(x))  # sech^2 x = 4e / (1 + e)^2 with e = exp(-2|x|): no cancellation, no overflow
    e *= -2  # (in place: two passes' worth of fresh memory instead of six)
    np.exp(e, out=e)
    d = e + 1
    d *= d
    np.divide(e, d, out=e)
    e *= 4
    return e


def _dsigmoid(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind == "c":
        s = _sigmoid(x)
        return s * (1 - s)
    if traced(x):  # a derivative being differentiated again: numpy operations only
        e = np.exp(-np.abs(x))
        return e / ((1 + e) * (1 + e))
    e = np.asarray(np.abs(x))  # s (1 - s) = e / (1 + e)^2 with e = exp(-|x|): even in x, accurate in both tails
    np.negative(e, out=e)
    np.exp(e, out=e)
    d = e + 1
    d *= d
    np.divide(e, d, out=e)
    return e


def _ex(fn: str, body: str) -> str:
    return f"\n\nExamples\n--------\n>>> import numpy as np, tensorjac as tj\n>>> tj.jacobian(tj.{fn}, {body}"


exp = elementwise("exp", np.exp, lambda x, value=None: np.exp(x) if value is None else value,
                  "exp(x); derivative exp(x)." + _ex("exp", "np.zeros(2), layout='diagonal')\narray([1., 1.])\n"),
                  numpy=(np.exp,), uses_value=True)
log = elementwise("log", np.log, np.reciprocal,
                  "log(x); derivative 1/x." + _ex("log", "np.array([2., 4.]), layout='diagonal')\narray([0.5 , 0.25])\n"),
                  numpy=(np.log,), example=lambda r: (_pos(r, (3, 4)),))
sin = elementwise("sin", np.sin, np.cos,
                  "sin(x); derivative cos(x)." + _ex("sin", "np.zeros(2), layout='diagonal')\narray([1., 1.])\n"),
                  numpy=(np.sin,))
cos = elementwise("cos", np.cos, lambda x: -np.sin(x),
                  "cos(x); derivative -sin(x)." + _ex("cos", "np.zeros(2), layout='diagonal')\narray([-0., -0.])\n"),
                  numpy=(np.cos,))
tanh = elementwise("tanh", np.tanh, _dtanh,
                   "tanh(x); derivative 1 - tanh(x)^2, in an overflow-free form."
                   + _ex("tanh", "np.zeros(2), layout='diagonal')\narray([1., 1.])\n"), numpy=(np.tanh,))
sigmoid = elementwise("sigmoid", _sigmoid, _dsigmoid,
                      "1/(1+exp(-x)), overflow-free; derivative s(1-s)."
                      + _ex("sigmoid", "np.zeros(2), layout='diagonal')\narray([0.25, 0.25])\n"))
softplus = elementwise("softplus", _softplus, _sigmoid,
                       "log(1+exp(x)), overflow-free; derivative sigmoid(x)."
                       + _ex("softplus", "np.zeros(2), layout='diagonal')\narray([0.5, 0.5])\n"))
square = elementwise("square", np.square, lambda x: 2 * x,
                     "x^2; derivative 2x." + _ex("square", "np.array([1., 2.]), layout='diagonal')\narray([2., 4.])\n"),
                     numpy=(np.square,))
sqrt = elementwise("sqrt", np.sqrt, lambda x, value=None: 0.5 / (np.sqrt(x) if value is None else value),
                   "sqrt(x); derivative 1/(2 sqrt(x)) (inf at 0)."
                   + _ex("sqrt", "np.array([1., 4.]), layout='diagonal')\narray([0.5 , 0.25])\n"),
                   numpy=(np.sqrt,), example=lambda r: (_pos(r, (3, 4)),), uses_value=True)
relu = elementwise(
    "relu", lambda x: np.maximum(x, 0), lambda x: (x > 0).astype(x.dtype),
    "max(x, 0); derivative 1 for x > 0 and 0 for x <= 0 (0 at the kink)."
    + _ex("relu", "np.array([-1., 2.]), layout='diagonal')\narray([0., 1.])\n"),
    holomorphic=False, example=lambda r: (_away_from_zero(r, (3, 4)),),
)  # fmt: skip
abs = elementwise(
    "abs", np.abs, np.sign, "``|x|``; derivative sign(x), which is 0 at the kink x = 0."
    + _ex("abs", "np.array([-1., 2.]), layout='diagonal')\narray([-1.,  1.])\n"),
    holomorphic=False, numpy=(np.absolute,), example=lambda r: (_away_from_zero(r, (3, 4)),),
)  # fmt: skip

assert set(CATALOGUE) <= set(REGISTRY)
__all__ = sorted(CATALOGUE)
