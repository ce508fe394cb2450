"""numpy functions written with other numpy calls, for traced arrays.

Inside a differentiated function, ``np.mean(x)`` runs the handler registered
here, whose own numpy calls are traced in turn, so its derivative follows from
the rules (tensorjac.ops, tensorjac._nprules).  Also here: the numpy functions
whose results are constants (comparisons, ``argmax``, ...).  Each numpy
function is named in exactly one place: an op's ``numpy=`` or one
``@implements``.
"""

from __future__ import annotations

import builtins
import numbers
from collections import namedtuple
from collections.abc import Callable
from typing import Any

import numpy as np

from ._errors import refuse, unsupported
from ._layout import prod
from ._nprules import (
    _np,
    broadcast_to,
    concatenate,
    cumsum,
    diagonal,
    eigh_values,
    eigh_vectors,
    einsum,
    reshape,
    where,
)
from ._rule import implements
from ._rulekit import letters, normalize_axes
from ._trace import Tracer, constant_functions, constant_ufuncs, make_constant
from .ops import logdet

__all__: list[str] = []

constant_ufuncs.update(
    _np("sign", "floor", "ceil", "trunc", "rint", "floor_divide", "heaviside", "isfinite", "isnan", "isinf",
        "isnat", "signbit", "equal", "not_equal", "less", "less_equal", "greater", "greater_equal",
        "logical_and", "logical_or", "logical_xor", "logical_not", "bitwise_and", "bitwise_or",
        "bitwise_xor", "invert", "left_shift", "right_shift", "spacing", "nextafter", "gcd", "lcm")
)
constant_functions.update(
    _np("shape", "ndim", "size", "result_type", "iscomplexobj", "isrealobj", "argmax", "argmin", "argsort",
        "argwhere", "nonzero", "flatnonzero", "count_nonzero", "allclose", "isclose", "array_equal",
        "array_equiv", "any", "all", "searchsorted", "isin", "may_share_memory", "shares_memory", "fix",
        "round", "around", "argpartition", "digitize", "isfinite", "isreal", "iscomplex", "min_scalar_type",
        "can_cast", "common_type", "linalg.matrix_rank", "linalg.cond", "histogram", "bincount",
        "unravel_index", "ravel_multi_index", "lexsort", "sign")
)


@implements(np.where)
def _np_where(condition: Any, x: Any = None, y: Any = None) -> Any:
    cond = condition._get().value if isinstance(condition, Tracer) else condition
    if x is None and y is None:
        return np.nonzero(cond)
    return where(np.asarray(cond, dtype=bool), x, y)


@implements(*_np("clip"))
def _np_clip(a: Any, a_min: Any = None, a_max: Any = None, out: Any = None, **kw: Any) -> Any:
    """clip = minimum(maximum(a, lo), hi): derivative 1 for lo <= a <= hi (ties go to a)."""
    lo = kw.pop("min", a_min)
    hi = kw.pop("max", a_max)
    if out is not None or kw:
        raise refuse(f"tensorjac: numpy.clip(..., {', '.join(kw) or 'out'}=...) is not supported here")
    r = a
    if lo is not None:
        r = np.maximum(r, lo)
    if hi is not None:
        r = np.minimum(r, hi)
    return r


@implements(*_np("ptp"))
def _np_ptp(a: Any, axis: Any = None, out: Any = None, keepdims: bool = False) -> Any:
    return np.max(a, axis=axis, keepdims=keepdims) - np.min(a, axis=axis, keepdims=keepdims)


def _count(shape: tuple[int, ...], axis: Any) -> int:
    ax = normalize_axes(axis, len(shape), "mean")
    return prod(shape if ax is None else [shape[a] for a in ax])


@implements(np.mean)
def _np_mean(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False, **kw: Any) -> Any:
    if dtype is not None or out is not None or kw:
        raise refuse("tensorjac: numpy.mean(..., dtype/out/where=...) is not supported inside traced functions")
    s = np.sum(a, axis=axis, keepdims=keepdims)
    return s / _count(np.shape(a), axis)


def _var(a: Any, axis: Any, ddof: Any, keepdims: bool) -> Any:
    if np.iscomplexobj(a):
        raise refuse("tensorjac: var/std of complex values are not holomorphic; differentiate real and "
                        "imaginary parts, or use tj.fd.jacobian")
    n = _count(np.shape(a), axis)
    c = a - np.sum(a, axis=axis, keepdims=True) / n
    return np.sum(c * c, axis=axis, keepdims=keepdims) / builtins.max(n - ddof, 0)


@implements(np.var)
def _np_var(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, ddof: Any = 0, keepdims: bool = False,
            **kw: Any) -> Any:
    if dtype is not None or out is not None or kw:
        raise refuse("tensorjac: numpy.var(..., dtype/out/where/mean/correction=...) is not supported here")
    return _var(a, axis, ddof, keepdims)


@implements(np.std)
def _np_std(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, ddof: Any = 0, keepdims: bool = False,
            **kw: Any) -> Any:
    if dtype is not None or out is not None or kw:
        raise refuse("tensorjac: numpy.std(..., dtype/out/where/mean/correction=...) is not supported here")
    return np.sqrt(_var(a, axis, ddof, keepdims))


@implements(*_np("average"))
def _np_average(a: Any, axis: Any = None, weights: Any = None, returned: bool = False, keepdims: bool = False) -> Any:
    if weights is None:
        avg = np.mean(a, axis=axis, keepdims=keepdims)
        scl = _count(np.shape(a), axis)
    else:
        if np.shape(weights) != np.shape(a):
            raise refuse("tensorjac: numpy.average with weights of another shape is not supported; "
                            "broadcast the weights first")
        scl = np.sum(weights, axis=axis, keepdims=keepdims)
        avg = np.sum(a * weights, axis=axis, keepdims=keepdims) / scl
    return (avg, scl) if returned else avg


@implements(np.cumsum)
def _np_cumsum(a: Any, axis: Any = None, dtype: Any = None, out: Any = None) -> Any:
    if dtype is not None or out is not None:
        raise refuse("tensorjac: numpy.cumsum(..., dtype/out=...) is not supported here")
    if axis is None:
        return cumsum(np.ravel(a), axis=0)
    return cumsum(a, axis=axis)


@implements(np.real)
def _np_real(val: Any) -> Any:
    if np.iscomplexobj(val):
        raise refuse("tensorjac: numpy.real of a complex traced value is not holomorphic")
    return val


@implements(np.imag)
def _np_imag(val: Any) -> Any:
    if np.iscomplexobj(val):
        raise refuse("tensorjac: numpy.imag of a complex traced value is not holomorphic")
    return make_constant(val, np.zeros(np.shape(val), dtype=val.dtype))


def _like_handler(f: Callable[..., Any]) -> Callable[..., Any]:
    def h(prototype: Any, *a: Any, **k: Any) -> Any:
        val = prototype._get().value if isinstance(prototype, Tracer) else prototype
        return make_constant(prototype, f(val, *[x._get().value if isinstance(x, Tracer) else x for x in a], **k))

    return h


for _f in _np("zeros_like", "ones_like", "empty_like", "full_like"):
    implements(_f)(_like_handler(_f))


@implements(np.reshape)
def _np_reshape(a: Any, *args: Any, **kw: Any) -> Any:
    shape = kw.pop("shape", kw.pop("newshape", args[0] if args else None))
    order = kw.pop("order", args[1] if len(args) > 1 else "C")
    kw.pop("copy", None)
    if shape is None or kw:
        raise TypeError("reshape() needs a shape")
    if order == "F":
        sh = (shape,) if isinstance(shape, numbers.Integral) else tuple(shape)
        return np.transpose(reshape(np.transpose(a), shape=tuple(sh)[::-1]))
    if order not in ("C", "A"):
        raise refuse(f"tensorjac: reshape order={order!r} is not supported")
    return reshape(a, shape=shape)


@implements(np.ravel)
def _np_ravel(a: Any, order: str = "C") -> Any:
    return np.reshape(a, (-1,), order=order)


@implements(np.squeeze)
def _np_squeeze(a: Any, axis: Any = None) -> Any:
    shape = np.shape(a)
    if axis is None:
        return np.reshape(a, tuple(n for n in shape if n != 1))
    ax = normalize_axes(axis, len(shape), "squeeze") or ()
    for d in ax:
        if shape[d] != 1:
            raise ValueError("cannot select an axis to squeeze out which has size not equal to one")
    return np.reshape(a, tuple(n for d, n in enumerate(shape) if d not in ax))


@implements(np.expand_dims)
def _np_expand_dims(a: Any, axis: Any) -> Any:
    shape = list(np.shape(a))
    ax = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    nd = len(shape) + len(ax)
    ax = normalize_axes(ax, nd, "expand_dims") or ()
    for d in ax:
        shape.insert(d, 1)
    return np.reshape(a, tuple(shape))


def _atleast_handler(k: int) -> Callable[..., Any]:
    def h(*arys: Any) -> Any:
        res = []
        for a in arys:
            s = np.shape(a)
            if len(s) >= k:
                res.append(a)
            elif k == 3 and len(s) == 2:
                res.append(np.reshape(a, s + (1,)))
            elif k == 3 and len(s) == 1:
                res.append(np.reshape(a, (1,) + s + (1,)))
            else:
                res.append(np.reshape(a, (1,) * (k - len(s)) + s))
        return res[0] if len(res) == 1 else tuple(res)

    return h


for _k, _f in zip((1, 2, 3), _np("atleast_1d", "atleast_2d", "atleast_3d")):
    implements(_f)(_atleast_handler(_k))


@implements(np.swapaxes)
def _np_swapaxes(a: Any, axis1: int, axis2: int) -> Any:
    n = np.ndim(a)
    axes = list(range(n))
    i, j = int(axis1) % n, int(axis2) % n
    axes[i], axes[j] = axes[j], axes[i]
    return np.transpose(a, axes)


@implements(*_np("matrix_transpose", "linalg.matrix_transpose"))
def _np_matrix_transpose(x: Any) -> Any:
    if np.ndim(x) < 2:
        raise ValueError(f"matrix_transpose: input must be at least 2-D, got shape {np.shape(x)}")
    return np.swapaxes(x, -1, -2)


@implements(np.moveaxis)
def _np_moveaxis(a: Any, source: Any, destination: Any) -> Any:
    n = np.ndim(a)
    src = normalize_axes(source, n, "moveaxis")
    s = [int(v) % n for v in ((source,) if isinstance(source, numbers.Integral) else source)]
    d = [int(v) % n for v in ((destination,) if isinstance(destination, numbers.Integral) else destination)]
    assert src is not None
    order = [k for k in range(n) if k not in s]
    for dest, sr in sorted(zip(d, s)):
        order.insert(dest, sr)
    return np.transpose(a, order)


@implements(np.broadcast_to)
def _np_broadcast_to(array: Any, shape: Any, subok: bool = False) -> Any:
    return broadcast_to(array, shape=shape)


@implements(np.broadcast_arrays)
def _np_broadcast_arrays(*args: Any, subok: bool = False) -> Any:
    shape = np.broadcast_shapes(*[np.shape(a) for a in args])
    return tuple(np.broadcast_to(a, shape) for a in args)


@implements(np.take)
def _np_take(a: Any, indices: Any, axis: Any = None, out: Any = None, mode: str = "raise") -> Any:
    if out is not None or mode != "raise":
        raise refuse("tensorjac: numpy.take(..., out/mode=...) is not supported here")
    if axis is None:
        return np.ravel(a)[indices]
    ax = int(axis) % np.ndim(a)
    return a[(slice(None),) * ax + (np.asarray(indices),)]


@implements(np.take_along_axis)
def _np_take_along_axis(arr: Any, indices: Any, axis: Any) -> Any:
    idx = np.asarray(indices)
    if axis is None:
        return np.ravel(arr)[idx]
    shape = np.shape(arr)
    ax = int(axis) % len(shape)
    grids = list(np.ogrid[tuple(slice(n) for n in idx.shape)])
    grids[ax] = idx
    return arr[tuple(grids)]


@implements(np.sort)
def _np_sort(a: Any, axis: Any = -1, kind: Any = None, order: Any = None, **kw: Any) -> Any:
    val = a._get().value if isinstance(a, Tracer) else np.asarray(a)
    if axis is None:
        return np.sort(np.ravel(a), axis=0, kind=kind)
    return np.take_along_axis(a, np.argsort(val, axis=axis, kind=kind or "stable"), axis)


@implements(np.flip)
def _np_flip(m: Any, axis: Any = None) -> Any:
    n = np.ndim(m)
    ax = range(n) if axis is None else normalize_axes(axis, n, "flip") or ()
    return m[tuple(slice(None, None, -1) if d in ax else slice(None) for d in range(n))]


@implements(np.fliplr)
def _np_fliplr(m: Any) -> Any:
    return np.flip(m, 1)


@implements(np.flipud)
def _np_flipud(m: Any) -> Any:
    return np.flip(m, 0)


@implements(np.roll)
def _np_roll(a: Any, shift: Any, axis: Any = None) -> Any:
    if axis is None:
        return np.reshape(np.roll(np.ravel(a), shift, 0), np.shape(a))
    shifts = (shift,) if isinstance(shift, numbers.Integral) else tuple(shift)
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    res = a
    for s, ax in np.broadcast(shifts, axes):
        n = np.shape(a)[ax]
        idx = (np.arange(n) - s) % n if n else np.arange(0)
        res = np.take(res, idx, axis=ax)
    return res


@implements(np.rot90)
def _np_rot90(m: Any, k: int = 1, axes: tuple = (0, 1)) -> Any:
    k %= 4
    a0, a1 = axes
    if k == 0:
        return m
    if k == 2:
        return np.flip(np.flip(m, a0), a1)
    perm = list(range(np.ndim(m)))
    perm[a0], perm[a1] = perm[a1], perm[a0]
    if k == 1:
        return np.transpose(np.flip(m, a1), perm)
    return np.flip(np.transpose(m, perm), a1)


@implements(np.diagonal)
def _np_diagonal(a: Any, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Any:
    return diagonal(a, offset=offset, axis1=axis1, axis2=axis2)


@implements(np.diag)
def _np_diag(v: Any, k: int = 0) -> Any:
    s = np.shape(v)
    if len(s) == 2:
        return np.diagonal(v, k)
    if len(s) != 1:
        raise ValueError("Input must be 1- or 2-d.")
    n = s[0] + builtins.abs(k)
    z = make_constant(v, np.zeros((n, n), dtype=v.dtype))
    i = np.arange(s[0])
    r, c = (i, i + k) if k >= 0 else (i - k, i)
    z[r, c] = v
    return z


@implements(np.triu)
def _np_triu(m: Any, k: int = 0) -> Any:
    s = np.shape(m)
    mask = np.triu(np.ones(s[-2:], dtype=bool), k)
    return np.where(mask, m, 0)


@implements(np.tril)
def _np_tril(m: Any, k: int = 0) -> Any:
    s = np.shape(m)
    mask = np.tril(np.ones(s[-2:], dtype=bool), k)
    return np.where(mask, m, 0)


@implements(*_np("concatenate", "concat"))
def _np_concatenate(arrays: Any, axis: Any = 0, out: Any = None, dtype: Any = None, casting: Any = "same_kind") -> Any:
    if out is not None or dtype is not None:
        raise refuse("tensorjac: numpy.concatenate(..., out/dtype=...) is not supported here")
    arrays = list(arrays)
    if axis is None:
        return concatenate(*[np.ravel(a) for a in arrays], axis=0)
    return concatenate(*arrays, axis=axis)


@implements(np.stack)
def _np_stack(arrays: Any, axis: int = 0, out: Any = None, **kw: Any) -> Any:
    arrays = list(arrays)
    if not arrays:
        raise ValueError("need at least one array to stack")
    nd = np.ndim(arrays[0]) + 1
    ax = int(axis) % nd
    return np.concatenate([np.expand_dims(a, ax) for a in arrays], axis=ax)


@implements(np.hstack)
def _np_hstack(tup: Any, **kw: Any) -> Any:
    arrs = [np.atleast_1d(a) for a in tup]
    return np.concatenate(arrs, axis=0 if arrs and np.ndim(arrs[0]) == 1 else 1)


@implements(*_np("vstack", "row_stack"))
def _np_vstack(tup: Any, **kw: Any) -> Any:
    return np.concatenate([np.atleast_2d(a) for a in tup], axis=0)


@implements(np.dstack)
def _np_dstack(tup: Any) -> Any:
    return np.concatenate([np.atleast_3d(a) for a in tup], axis=2)


@implements(np.column_stack)
def _np_column_stack(tup: Any) -> Any:
    cols = [np.reshape(a, (-1, 1)) if np.ndim(a) < 2 else a for a in tup]
    return np.concatenate(cols, axis=1)


@implements(np.tile)
def _np_tile(A: Any, reps: Any) -> Any:
    reps = (reps,) if isinstance(reps, numbers.Integral) else tuple(reps)
    s = np.shape(A)
    n = builtins.max(len(s), len(reps))
    s1 = (1,) * (n - len(s)) + tuple(s)
    r1 = (1,) * (n - len(reps)) + tuple(int(r) for r in reps)
    a = np.reshape(A, [k for p in s1 for k in (1, p)])
    b = np.broadcast_to(a, [k for r, p in zip(r1, s1) for k in (r, p)])
    return np.reshape(b, [r * p for r, p in zip(r1, s1)])


@implements(np.repeat)
def _np_repeat(a: Any, repeats: Any, axis: Any = None) -> Any:
    if axis is None:
        a = np.ravel(a)
        axis = 0
    s = np.shape(a)
    ax = int(axis) % len(s)
    r = np.asarray(repeats)
    if r.ndim == 0:
        k = int(r)
        e = np.expand_dims(a, ax + 1)
        b = np.broadcast_to(e, s[: ax + 1] + (k,) + s[ax + 1:])
        return np.reshape(b, s[:ax] + (s[ax] * k,) + s[ax + 1:])
    return np.take(a, np.repeat(np.arange(s[ax]), r), axis=ax)


@implements(np.einsum)
def _np_einsum(*operands: Any, out: Any = None, optimize: Any = False, **kw: Any) -> Any:
    if out is not None or kw:
        raise refuse("tensorjac: numpy.einsum(..., out/dtype/order/casting=...) is not supported here")
    if not operands or not isinstance(operands[0], str):
        raise unsupported("numpy.einsum in its sublist form", "pass the subscripts as a string")
    return einsum(*operands[1:], spec=operands[0])


@implements(np.tensordot)
def _np_tensordot(a: Any, b: Any, axes: Any = 2) -> Any:
    na, nb = np.ndim(a), np.ndim(b)
    if isinstance(axes, numbers.Integral):
        ax_a, ax_b = list(range(na - int(axes), na)), list(range(int(axes)))
    else:
        ax_a, ax_b = axes
        ax_a = [ax_a] if isinstance(ax_a, numbers.Integral) else list(ax_a)
        ax_b = [ax_b] if isinstance(ax_b, numbers.Integral) else list(ax_b)
    ax_a = [int(x) % na for x in ax_a]
    ax_b = [int(x) % nb for x in ax_b]
    la, lb = list(letters(na)), list(letters(nb, na))
    for i, j in zip(ax_a, ax_b):
        lb[j] = la[i]
    out = "".join(c for d, c in enumerate(la) if d not in ax_a) + "".join(c for d, c in enumerate(lb) if d not in ax_b)
    return einsum(a, b, spec=f"{''.join(la)},{''.join(lb)}->{out}")


@implements(np.inner)
def _np_inner(a: Any, b: Any) -> Any:
    if np.ndim(a) == 0 or np.ndim(b) == 0:
        return a * b
    na, nb = np.ndim(a), np.ndim(b)
    la, lb = letters(na - 1), letters(nb - 1, na)
    return einsum(a, b, spec=f"{la}Z,{lb}Z->{la}{lb}")


@implements(np.vdot)
def _np_vdot(a: Any, b: Any) -> Any:
    if np.iscomplexobj(a):
        raise refuse("tensorjac: numpy.vdot conjugates its first argument, which is not holomorphic")
    return np.dot(np.ravel(a), np.ravel(b))


@implements(*_np("vecdot", "linalg.vecdot"))
def _np_vecdot(x1: Any, x2: Any, axis: int = -1, **kw: Any) -> Any:
    if np.iscomplexobj(x1):
        raise refuse("tensorjac: numpy.vecdot conjugates its first argument, which is not holomorphic")
    return np.sum(x1 * x2, axis=axis)


@implements(*_np("linalg.outer"))
def _np_linalg_outer(x1: Any, x2: Any) -> Any:
    if np.ndim(x1) != 1 or np.ndim(x2) != 1:
        raise ValueError("linalg.outer: both inputs must be 1-D")
    return np.outer(x1, x2)


@implements(np.linalg.multi_dot)
def _np_multi_dot(arrays: Any, *, out: Any = None) -> Any:
    arrays = list(arrays)
    res = arrays[0]
    for a in arrays[1:]:
        res = np.dot(res, a)
    return res


@implements(np.linalg.matrix_power)
def _np_matrix_power(a: Any, n: int) -> Any:
    n = int(n)
    s = np.shape(a)
    if n == 0:
        return make_constant(a, np.broadcast_to(np.eye(s[-1], dtype=a.dtype), s).copy())
    if n < 0:
        a, n = np.linalg.inv(a), -n
    result = None
    z = a
    while n:
        if n & 1:
            result = z if result is None else result @ z
        n >>= 1
        if n:
            z = z @ z
    return result


@implements(*_np("linalg.trace"))
def _np_linalg_trace(x: Any, offset: int = 0, dtype: Any = None) -> Any:
    return np.trace(x, offset, -2, -1)


@implements(np.linalg.slogdet)
def _np_slogdet(a: Any) -> Any:
    val = a
    while isinstance(val, Tracer):  # the sign of nested traced arrays from their values: a constant
        val = val._get().value
    sign = np.linalg.slogdet(np.asarray(val))[0]
    return SlogdetResult(sign, logdet(a))


SlogdetResult = namedtuple("SlogdetResult", ["sign", "logabsdet"])
EighResult = namedtuple("EighResult", ["eigenvalues", "eigenvectors"])


@implements(np.linalg.eigh)
def _np_eigh(a: Any, UPLO: str = "L") -> Any:
    return EighResult(eigh_values(a, UPLO=UPLO), eigh_vectors(a, UPLO=UPLO))


@implements(np.linalg.eigvalsh)
def _np_eigvalsh(a: Any, UPLO: str = "L") -> Any:
    return eigh_values(a, UPLO=UPLO)
