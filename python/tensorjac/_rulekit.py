"""Helpers for writing rules: index letters, numpy broadcasting and axes, einsum-shaped rules."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._deriv import LETTERS, Deriv
from ._rule import Op

__all__ = [
    "arr", "copy_of", "traced",
    "batch_letters", "bcast_letters", "bcast_shape", "binary_elementwise_deriv", "einsum_deriv",
    "elementwise_op", "letters", "need_ndim", "need_square", "normalize_axes", "onehot_arg", "reduce_letters",
    "reduce_norm", "reduce_shape", "squeezed_factor", "swap_last",
]  # fmt: skip


def traced(x: Any) -> bool:
    """Is x a traced array (inside a differentiated function: nested differentiation)?"""
    return getattr(type(x), "__tj_apply__", None) is not None


def arr(x: Any) -> Any:
    """x as a numpy array -- unless it is a traced array, which rules must keep (its numpy
    operations are recorded when a derivative is itself differentiated)."""
    return x if traced(x) else np.asarray(x)


def copy_of(x: Any) -> Any:
    return x.copy() if traced(x) else np.array(x, copy=True)


def letters(ndim: int, start: int = 0) -> str:
    if start + ndim > len(LETTERS):
        raise ValueError(f"arrays of rank {ndim} are not supported here (at most {len(LETTERS) - start})")
    return LETTERS[start : start + ndim]


def need_ndim(op: str, name: str, shape: tuple, ndims: tuple[int, ...]) -> None:
    if len(shape) not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{op}: {name} must be {want}, got shape {shape}")


def need_square(op: str, name: str, shape: tuple, stacked: bool = False) -> None:
    if stacked:
        if len(shape) < 2:
            raise ValueError(f"{op}: {name} must be a square matrix or a stack of them, got shape {shape}")
    else:
        need_ndim(op, name, shape, (2,))
    if shape[-1] != shape[-2]:
        raise ValueError(f"{op}: {name} must be square in its last two axes, got shape {shape}")


def normalize_axes(axis: Any, ndim: int, op: str = "reduction") -> tuple[int, ...] | None:
    """numpy's axis argument as a sorted tuple of non-negative ints (None stays None)."""
    if axis is None:
        return None
    seq = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in seq:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"{op}: axis must be an int or a tuple of ints, got {axis!r}")
        if not -ndim <= a < ndim:
            raise np.exceptions.AxisError(int(a), ndim) if hasattr(np, "exceptions") else ValueError(
                f"{op}: axis {a} is out of bounds for an array of dimension {ndim}"
            )
        out.append(int(a) % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: duplicate value in axis {axis!r}")
    return tuple(sorted(out))


def bcast_letters(out_letters: str, out_shape: tuple[int, ...], in_shape: tuple[int, ...], fresh: list[str]) -> str:
    """Letters of an operand broadcast to ``out_shape``: shared where the sizes agree,
    a fresh size-1 letter where the operand is broadcast (taken from ``fresh``)."""
    k = len(out_shape) - len(in_shape)
    if k < 0:
        raise AssertionError("operand of higher rank than the broadcast result")
    res = []
    for d, n in enumerate(in_shape):
        if n == out_shape[k + d]:
            res.append(out_letters[k + d])
        elif n == 1:
            res.append(fresh.pop())
        else:
            raise ValueError(f"shapes {in_shape} and {out_shape} do not broadcast")
    return "".join(res)


def squeezed_factor(out_letters: str, out_shape: tuple[int, ...], shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    """For an array of ``shape`` broadcastable to ``out_shape``: the letters of its non-broadcast
    axes and the axes to squeeze away (so the factor carries no size-1 broadcast axes)."""
    k = len(out_shape) - len(shape)
    keep, drop = [], []
    for d, n in enumerate(shape):
        if n == out_shape[k + d] and n != 1:
            keep.append(out_letters[k + d])
        elif n == 1:
            drop.append(d)
        else:
            raise ValueError(f"shapes {shape} and {out_shape} do not broadcast")
    return "".join(keep), tuple(drop)


def einsum_deriv(specs: Sequence[str], out: str, shapes: Sequence[tuple[int, ...]], wrt: int) -> Deriv:
    """The Deriv of ``einsum(",".join(specs) + "->" + out, *operands)`` in operand ``wrt``.

    Specs are explicit (no ellipsis); a letter repeated within one operand is a
    diagonal, a letter of size 1 in one operand and n in another must have been
    renamed apart by the caller (broadcasting).  The factor is the product of
    the other operands, contracted over letters that are on neither side.
    """
    sizes: dict[str, int] = {}
    for s, shape in zip(specs, shapes):
        for c, n in zip(s, shape):
            if sizes.setdefault(c, n) != n:
                raise ValueError(f"einsum: letter {c!r} has sizes {sizes[c]} and {n}")
    mine = specs[wrt]
    others = [(i, s) for i, s in enumerate(specs) if i != wrt]
    if not others:
        return Deriv(out, mine, [(1, ())], sizes=sizes)
    keep_set = set(out) | set(mine)
    fl = "".join(dict.fromkeys(c for _, s in others for c in s if c in keep_set))
    idx = [i for i, _ in others]
    subs = ",".join(s for _, s in others) + "->" + fl
    plain = len(others) == 1 and others[0][1] == fl

    def factors(*ops: np.ndarray, **_: Any) -> tuple[np.ndarray]:
        if plain:
            return (ops[idx[0]],)
        return (np.einsum(subs, *[ops[i] for i in idx], optimize=len(idx) > 2),)

    return Deriv(out, mine, [(1, (fl,))], factors, sizes=sizes)


def batch_letters(out_batch: tuple[int, ...], shapes: list[tuple[int, ...]], start: int) -> tuple[str, list[str]]:
    """Letters of broadcast batch axes: the result's, and each operand's (fresh size-1 letters where broadcast)."""
    ob = letters(len(out_batch), start)
    fresh = list(letters(8 * (len(out_batch) + 1), start + len(out_batch))[::-1])
    return ob, [bcast_letters(ob, out_batch, s, fresh) for s in shapes]


def bcast_shape(op: str) -> Callable[[tuple, tuple], tuple]:
    def shape(x: tuple, y: tuple) -> tuple:
        try:
            return tuple(np.broadcast_shapes(x, y))
        except ValueError:
            raise ValueError(f"{op}: shapes {x} and {y} do not broadcast") from None

    return shape


def binary_elementwise_deriv(
    wrt: int, a: tuple, b: tuple, factor: Callable[..., np.ndarray] | None, fshape: str, coef: complex = 1,
    uses_value: bool = False,
) -> Deriv:
    """The Deriv of a broadcasting binary elementwise op in argument ``wrt``.

    ``factor(x, y[, value=])`` returns the partial derivative; ``fshape`` says which
    shape it has: "a", "b" (an operand's) or "out" (the broadcast shape).  None: coef only.
    """
    out = tuple(np.broadcast_shapes(a, b))
    L = letters(len(out))
    fresh = list(letters(len(out) + 2, len(out))[::-1])
    inp = bcast_letters(L, out, (a, b)[wrt], fresh)
    if factor is None:
        return Deriv(L, inp, [(coef, ())])
    shp = {"a": a, "b": b, "out": out}[fshape]
    fl, drop = squeezed_factor(L, out, shp)

    def factors(x: np.ndarray, y: np.ndarray, value: Any = None) -> tuple[np.ndarray]:
        f = factor(x, y, value=value) if uses_value else factor(x, y)
        f = np.broadcast_to(f, shp) if np.shape(f) != shp else f
        return (np.squeeze(f, drop) if drop else f,)

    return Deriv(L, inp, [(coef, (fl,))], factors, uses_value=uses_value)


def swap_last(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


def reduce_norm(op: str) -> Callable[..., dict[str, Any]]:
    def norm(shapes: tuple, axis: Any = None, keepdims: bool = False) -> dict[str, Any]:
        ax = normalize_axes(axis, len(shapes[0]), op)
        return {"axis": tuple(range(len(shapes[0]))) if ax is None else ax, "keepdims": bool(keepdims)}

    return norm


def reduce_shape(x: tuple, axis: tuple[int, ...], keepdims: bool, **_: Any) -> tuple:
    if keepdims:
        return tuple(1 if d in axis else n for d, n in enumerate(x))
    return tuple(n for d, n in enumerate(x) if d not in axis)


def reduce_letters(x: tuple, axis: tuple[int, ...], keepdims: bool) -> tuple[str, str]:
    """(output letters, input letters) of a reduction: kept axes shared, reduced ones dropped
    (or fresh size-1 letters with keepdims)."""
    L = letters(len(x))
    K = letters(len(x), len(x))
    out = "".join((K[d] if keepdims else "") if d in axis else c for d, c in enumerate(L))
    return out, L


def onehot_arg(A: np.ndarray, axes: tuple[int, ...], pick: Callable[..., np.ndarray]) -> np.ndarray:
    """One-hot of the entry ``pick`` (np.argmax / np.argmin) selects over ``axes``, per remaining index."""
    ax = tuple(axes)
    rest = [d for d in range(A.ndim) if d not in ax]
    moved = np.transpose(A, rest + list(ax))
    flat = moved.reshape(tuple(moved.shape[: len(rest)]) + (-1,))
    oh: np.ndarray = np.zeros(flat.shape, dtype=np.float64)
    if flat.size:
        idx = pick(flat, axis=-1)
        np.put_along_axis(oh, idx[..., None], 1.0, axis=-1)
    oh = oh.reshape(moved.shape)
    return np.transpose(oh, np.argsort(rest + list(ax)))


def elementwise_op(
    name: str, f: Callable[..., Any], df: Callable[..., Any], doc: str, holomorphic: bool = True,
    numpy: tuple = (), public: bool = True, example: Callable[..., Any] | None = None, uses_value: bool = False,
) -> Op:
    """An elementwise op: δ(m,n) f'(x[m]).  ``df(x)`` (or ``df(x, value=f(x))``) is f'."""

    def deriv(wrt: int, x: tuple) -> Deriv:
        L = letters(len(x))
        if uses_value:
            return Deriv(L, L, [(1, (L,))], lambda X, value=None: (df(X, value=value),), uses_value=True)
        return Deriv(L, L, [(1, (L,))], lambda X: (df(X),))

    return Op(name, ("X",), f, lambda x: x, deriv, holomorphic=holomorphic, elementwise=True, doc=doc,
              numpy=numpy, public=public, example=example)
