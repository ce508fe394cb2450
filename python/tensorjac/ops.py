"""The op catalogue.  Each op is one rule: value, shape check and Jacobian terms.

Index letters: output axes and input axes that share a letter are tied by a
Kronecker delta; factor arrays are indexed by the letters they carry.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._rule import LETTERS, Deriv, Op

__all__ = [
    "abs", "cos", "det", "dot", "exp", "inv", "kron", "log", "logdet", "matmul",
    "multiply", "norm", "outer", "quadratic", "relu", "sandwich", "sigmoid", "sin",
    "softplus", "sqrt", "square", "sum", "tanh", "trace", "transpose",
]  # fmt: skip

CATALOGUE: dict[str, Op] = {}


def _register(op: Op) -> Op:
    CATALOGUE[op.name] = op
    return op


def _letters(ndim: int, start: int = 0) -> str:
    if start + ndim > len(LETTERS):
        raise ValueError(f"arrays of rank {ndim} are not supported (at most {len(LETTERS) // 2})")
    return LETTERS[start : start + ndim]


def _need_ndim(op: str, name: str, shape: tuple, ndims: tuple[int, ...]) -> None:
    if len(shape) not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{op}: {name} must be {want}, got shape {shape}")


def _need_square(op: str, name: str, shape: tuple) -> None:
    _need_ndim(op, name, shape, (2,))
    if shape[0] != shape[1]:
        raise ValueError(f"{op}: {name} must be square, got shape {shape}")


# ----------------------------------------------------------------------------- products


def _matmul_shape(a: tuple, b: tuple) -> tuple:
    _need_ndim("matmul", "A", a, (1, 2))
    _need_ndim("matmul", "B", b, (1, 2))
    if a[-1] != b[0]:
        raise ValueError(
            f"matmul: shapes A {a} and B {b} are not aligned (A.shape[-1]={a[-1]} != B.shape[0]={b[0]})"
        )
    return a[:-1] + b[1:]


def _matmul_deriv(wrt: int, a: tuple, b: tuple) -> Deriv:
    la = "ia" if len(a) == 2 else "a"
    lb = "aj" if len(b) == 2 else "a"
    out = la[:-1] + lb[1:]
    if wrt == 0:  # d(AB)[i,j]/dA[k,a] = δ(i,k) B[a,j]
        return Deriv(out, la, [(1, (lb,))], lambda A, B: (B,))
    return Deriv(out, lb, [(1, (la,))], lambda A, B: (A,))


matmul = _register(
    Op(
        "matmul", ("A", "B"), np.matmul, _matmul_shape, _matmul_deriv,
        doc="A @ B with numpy semantics for 1-D and 2-D operands (matvec, vecmat, inner).",
    )
)  # fmt: skip


def _sandwich_shape(a: tuple, x: tuple, b: tuple) -> tuple:
    for name, s in (("A", a), ("X", x), ("B", b)):
        _need_ndim("sandwich", name, s, (2,))
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
       doc="A @ X @ B for 2-D operands; its Jacobian in X is kron(B.T, A) in vec layout.")
)  # fmt: skip


def _same_shape(op: str) -> Callable[[tuple, tuple], tuple]:
    def shape(x: tuple, y: tuple) -> tuple:
        if x != y:
            raise ValueError(f"{op}: X and Y must have the same shape, got X {x} and Y {y}")
        return x

    return shape


def _multiply_deriv(wrt: int, x: tuple, y: tuple) -> Deriv:
    L = _letters(len(x))
    return Deriv(L, L, [(1, (L,))], (lambda X, Y: (Y,)) if wrt == 0 else (lambda X, Y: (X,)))


multiply = _register(
    Op("multiply", ("X", "Y"), np.multiply, _same_shape("multiply"), _multiply_deriv, elementwise=True,
       doc="Hadamard product X * Y of same-shaped arrays of any rank.")
)  # fmt: skip


def _kron_shape(a: tuple, b: tuple) -> tuple:
    _need_ndim("kron", "A", a, (2,))
    _need_ndim("kron", "B", b, (2,))
    return (a[0] * b[0], a[1] * b[1])


def _kron_vjp(G: np.ndarray, A: np.ndarray, B: np.ndarray, wrt: int) -> np.ndarray:
    from ._ad import kron_vjp  # the kron contraction: one streaming pass over G in C++

    return kron_vjp(G, A, B, wrt)


def _kron_jvp(V: np.ndarray, A: np.ndarray, B: np.ndarray, wrt: int) -> np.ndarray:
    from ._ad import kron_jvp  # batched kron(V, B) / kron(A, V) in C++

    return kron_jvp(V, A, B, wrt)


def _kron_deriv(wrt: int, a: tuple, b: tuple) -> Deriv:
    # kron(A,B)[(i,k),(j,l)] = A[i,j] B[k,l]: the fused output axes split into sub-axes.
    sizes = {"i": a[0], "j": a[1], "k": b[0], "l": b[1]}
    if wrt == 0:
        return Deriv("(ik)(jl)", "ij", [(1, ("kl",))], lambda A, B: (B,), sizes,
                     vjp=lambda G, A, B: _kron_vjp(G, A, B, 0),
                     jvp=lambda V, A, B: _kron_jvp(V, A, B, 0))
    return Deriv("(ik)(jl)", "kl", [(1, ("ij",))], lambda A, B: (A,), sizes,
                 vjp=lambda G, A, B: _kron_vjp(G, A, B, 1),
                 jvp=lambda V, A, B: _kron_jvp(V, A, B, 1))


kron = _register(
    Op("kron", ("A", "B"), np.kron, _kron_shape, _kron_deriv,
       doc="Kronecker product np.kron(A, B) of 2-D operands.")
)  # fmt: skip


def _outer_deriv(wrt: int, u: tuple, v: tuple) -> Deriv:
    lu, lv = _letters(len(u)), _letters(len(v), len(u))
    sizes = dict(zip(lu + lv, u + v))
    fused = f"({lu})({lv})"  # np.outer ravels its inputs: each output axis fuses one input
    if wrt == 0:
        return Deriv(fused, lu, [(1, (lv,))], lambda U, V: (V,), sizes)
    return Deriv(fused, lv, [(1, (lu,))], lambda U, V: (U,), sizes)


def _outer_shape(u: tuple, v: tuple) -> tuple:
    return (int(np.prod(u, dtype=np.int64)), int(np.prod(v, dtype=np.int64)))


outer = _register(
    Op("outer", ("u", "v"), np.outer, _outer_shape, _outer_deriv,
       doc="np.outer(u, v); like numpy, inputs of higher rank are raveled.")
)  # fmt: skip


def _transpose_deriv(wrt: int, x: tuple) -> Deriv:
    L = _letters(len(x))
    return Deriv(L[::-1], L, [(1, ())])  # a permutation: in vec layout, the commutation matrix


transpose = _register(
    Op("transpose", ("X",), np.transpose, lambda x: x[::-1], _transpose_deriv,
       doc="X.T (reverses the axes; for 2-D, the matrix transpose).")
)  # fmt: skip


# ----------------------------------------------------------------------------- linear algebra


def _square_shape(op: str) -> Callable[[tuple], tuple]:
    def shape(x: tuple) -> tuple:
        _need_square(op, "X", x)
        return ()

    return shape


def _inv_shape(x: tuple) -> tuple:
    _need_square("inv", "X", x)
    return x


def _inv_vjp(G: np.ndarray, X: np.ndarray) -> np.ndarray:
    from ._ad import two_sided  # -X^{-T} G X^{-T} by BLAS

    Xi = np.linalg.inv(X)
    return two_sided(-Xi.T, G, Xi.T)


def _inv_jvp(V: np.ndarray, X: np.ndarray) -> np.ndarray:
    from ._ad import two_sided  # -X^{-1} V X^{-1} by BLAS

    Xi = np.linalg.inv(X)
    return two_sided(-Xi, V, Xi)


def _inv_deriv(wrt: int, x: tuple) -> Deriv:
    def factors(X: np.ndarray) -> tuple:
        Xi = np.linalg.inv(X)
        return (Xi, Xi)

    # -inv(X)[i,k] inv(X)[l,j]
    return Deriv("ij", "kl", [(-1, ("ik", "lj"))], factors, vjp=_inv_vjp, jvp=_inv_jvp)


inv = _register(
    Op("inv", ("X",), np.linalg.inv, _inv_shape, _inv_deriv,
       doc="np.linalg.inv(X); a singular X raises numpy.linalg.LinAlgError.")
)  # fmt: skip


def _trace_shape(x: tuple) -> tuple:
    _need_ndim("trace", "X", x, (2,))
    return ()


trace = _register(
    Op("trace", ("X",), np.trace, _trace_shape,
       lambda wrt, x: Deriv("", "ii", [(1, ())], sizes={"i": min(x)}),
       doc="np.trace(X): the sum of the main diagonal (non-square X allowed, like numpy).")
)  # fmt: skip


def adjugate_transpose(X: np.ndarray) -> np.ndarray:
    """Cofactor matrix of X (= d det X / dX), also for singular X.

    det(X) inv(X).T when X is invertible; otherwise from the SVD X = U S V^H,
    adj(X) = det(U) det(V^H) V adj(S) U^H with adj(S)_ii = prod_{j != i} s_j.
    """
    n = X.shape[0]
    if n == 0:
        return np.zeros((0, 0), X.dtype)
    try:
        return (np.linalg.det(X) * np.linalg.inv(X)).T
    except np.linalg.LinAlgError:
        pass
    U, s, Vh = np.linalg.svd(X)
    others = np.array([np.prod(np.delete(s, i)) for i in range(n)], dtype=s.dtype)
    adj = (np.linalg.det(U) * np.linalg.det(Vh)) * ((Vh.conj().T * others) @ U.conj().T)
    return adj.T.astype(X.dtype, copy=False)


det = _register(
    Op("det", ("X",), np.linalg.det, _square_shape("det"),
       lambda wrt, x: Deriv("", "ij", [(1, ("ij",))], lambda X: (adjugate_transpose(X),)),
       doc="np.linalg.det(X); its gradient is the cofactor matrix (defined for singular X too).")
)  # fmt: skip


def _logdet_value(X: np.ndarray) -> np.ndarray:
    return np.linalg.slogdet(X)[1]


def _logdet_factors(X: np.ndarray) -> tuple:
    sign, _ = np.linalg.slogdet(X)
    if sign == 0:
        raise np.linalg.LinAlgError("logdet: X is singular, log|det X| = -inf has no derivative")
    return (np.linalg.inv(X).T,)


logdet = _register(
    Op("logdet", ("X",), _logdet_value, _square_shape("logdet"),
       lambda wrt, x: Deriv("", "ij", [(1, ("ij",))], _logdet_factors),
       holomorphic=False, doc="log|det X| as in np.linalg.slogdet; gradient inv(X).T.")
)  # fmt: skip


# ----------------------------------------------------------------------------- reductions


def _dot_shape(a: tuple, b: tuple) -> tuple:
    _need_ndim("dot", "a", a, (1,))
    _need_ndim("dot", "b", b, (1,))
    if a != b:
        raise ValueError(f"dot: a and b must have the same length, got a {a} and b {b}")
    return ()


dot = _register(
    Op("dot", ("a", "b"), np.dot, _dot_shape,
       lambda wrt, a, b: Deriv("", "i", [(1, ("i",))],
                               (lambda a, b: (b,)) if wrt == 0 else (lambda a, b: (a,))),
       doc="a @ b for 1-D a, b of equal length.")
)  # fmt: skip


def _quadratic_shape(x: tuple, a: tuple) -> tuple:
    _need_ndim("quadratic", "x", x, (1,))
    _need_square("quadratic", "A", a)
    if a[0] != x[0]:
        raise ValueError(f"quadratic: A must be {x[0]}x{x[0]} to match x {x}, got A {a}")
    return ()


def _quadratic_deriv(wrt: int, x: tuple, a: tuple) -> Deriv:
    if wrt == 0:  # (A + A^T) x
        return Deriv("", "i", [(1, ("i",))], lambda x, A: (A @ x + A.T @ x,))
    return Deriv("", "ij", [(1, ("i", "j"))], lambda x, A: (x, x))  # x[i] x[j]


quadratic = _register(
    Op("quadratic", ("x", "A"), lambda x, A: x @ A @ x, _quadratic_shape, _quadratic_deriv,
       doc="The quadratic form x @ A @ x.")
)  # fmt: skip


def _sum_deriv(wrt: int, x: tuple) -> Deriv:
    return Deriv("", _letters(len(x)), [(1, ())])


sum = _register(
    Op("sum", ("X",), np.sum, lambda x: (), _sum_deriv, doc="X.sum() over all entries.")
)


def _scaled(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(X / max|X|, max|X|): squares of the scaled entries neither overflow nor underflow."""
    m = np.max(np.abs(X), initial=0).astype(X.dtype)
    return (X / m if m > 0 else X), m


def _norm_value(X: np.ndarray) -> np.ndarray:
    Y, m = _scaled(X)  # the Frobenius / 2-norm of all entries, safe at any scale
    return m * np.sqrt(np.sum(Y * Y))


def _norm_factors(X: np.ndarray) -> tuple:
    Y, m = _scaled(X)
    n = np.sqrt(np.sum(Y * Y))
    return (Y / n if m > 0 else np.zeros_like(X),)


norm = _register(
    Op("norm", ("X",), _norm_value, lambda x: (),
       lambda wrt, x: Deriv("", _letters(len(x)), [(1, (_letters(len(x)),))], _norm_factors),
       holomorphic=False,
       doc="Frobenius norm (2-norm for vectors) of all entries; gradient X/||X||, 0 at X = 0.")
)  # fmt: skip


# ----------------------------------------------------------------------------- elementwise


def _elementwise(
    name: str, f: Callable, df: Callable, doc: str, holomorphic: bool = True
) -> Op:
    def deriv(wrt: int, x: tuple) -> Deriv:
        L = _letters(len(x))
        return Deriv(L, L, [(1, (L,))], lambda X: (df(X),))  # δ(m,n) f'(x[m])

    return _register(
        Op(name, ("X",), f, lambda x: x, deriv, holomorphic=holomorphic, elementwise=True, doc=doc)
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind == "c":
        return 1 / (1 + np.exp(-x))
    e = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind == "c":
        return np.log1p(np.exp(x))
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _dtanh(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind == "c":
        t = np.tanh(x)
        return 1 - t * t
    e = np.exp(-2 * np.abs(x))  # sech^2 x = 4e / (1 + e)^2: no cancellation, no overflow
    return 4 * e / ((1 + e) * (1 + e))


def _dsigmoid(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind == "c":
        s = _sigmoid(x)
        return s * (1 - s)
    e = np.exp(-np.abs(x))  # s (1 - s) = e / (1 + e)^2, even in x, accurate in both tails
    return e / ((1 + e) * (1 + e))


exp = _elementwise("exp", np.exp, np.exp, "exp(x); derivative exp(x).")
log = _elementwise("log", np.log, np.reciprocal, "log(x); derivative 1/x.")
sin = _elementwise("sin", np.sin, np.cos, "sin(x); derivative cos(x).")
cos = _elementwise("cos", np.cos, lambda x: -np.sin(x), "cos(x); derivative -sin(x).")
tanh = _elementwise("tanh", np.tanh, _dtanh, "tanh(x); derivative 1 - tanh(x)^2.")
sigmoid = _elementwise("sigmoid", _sigmoid, _dsigmoid, "1/(1+exp(-x)), overflow-free; derivative s(1-s).")
softplus = _elementwise("softplus", _softplus, _sigmoid, "log(1+exp(x)), overflow-free; derivative sigmoid(x).")
square = _elementwise("square", np.square, lambda x: 2 * x, "x^2; derivative 2x.")
sqrt = _elementwise("sqrt", np.sqrt, lambda x: 0.5 / np.sqrt(x), "sqrt(x); derivative 1/(2 sqrt(x)) (inf at 0).")
relu = _elementwise(
    "relu", lambda x: np.maximum(x, 0), lambda x: (x > 0).astype(x.dtype),
    "max(x, 0); derivative 1 for x > 0 and 0 for x <= 0 (0 at the kink).", holomorphic=False,
)  # fmt: skip
abs = _elementwise(
    "abs", np.abs, np.sign, "|x|; derivative sign(x), which is 0 at the kink x = 0.", holomorphic=False
)
