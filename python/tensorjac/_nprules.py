"""The rules of numpy functions that have no public tensorjac op.

Rules (ops) here are registered exactly like the catalogue's; they are just
not part of the public ``tj.*`` namespace.  Composite numpy functions, written
with other numpy calls, are in tensorjac._numpy_api.  Each numpy function is
named in exactly one place: an op's ``numpy=`` or one ``@implements``.
"""

from __future__ import annotations

import builtins
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._deriv import Deriv
from ._errors import refuse, unsupported
from ._layout import prod
from ._rule import Op
from ._rulekit import (
    arr,
    batch_letters,
    bcast_letters,
    bcast_shape,
    binary_elementwise_deriv,
    copy_of,
    einsum_deriv,
    elementwise_op,
    letters,
    need_square,
    normalize_axes,
    onehot_arg,
    reduce_letters,
    reduce_norm,
    reduce_shape,
    squeezed_factor,
    swap_last,
    traced,
)

__all__ = ["cast", "copy", "getitem", "is_basic_key", "scatter"]


def _np(*names: str) -> tuple[Any, ...]:
    """The distinct numpy callables with these (possibly version-dependent) names."""
    out: list[Any] = []
    for n in names:
        obj: Any = np
        for part in n.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None and all(obj is not o for o in out):
            out.append(obj)
    return tuple(out)


# ----------------------------------------------------------------------------- elementwise, one operand

_LN2, _LN10 = math.log(2.0), math.log(10.0)


def _linear(name: str, coef: float, numpy: tuple, holomorphic: bool = True) -> Op:
    def deriv(wrt: int, x: tuple) -> Deriv:
        L = letters(len(x))
        return Deriv(L, L, [(coef, ())])

    return Op(name, ("X",), numpy[0], lambda x: x, deriv, elementwise=True, numpy=numpy, public=False,
              holomorphic=holomorphic)


negative = _linear("negative", -1, _np("negative"))
positive = _linear("positive", 1, _np("positive"))
deg2rad = _linear("deg2rad", math.pi / 180, _np("deg2rad", "radians"), holomorphic=False)
rad2deg = _linear("rad2deg", 180 / math.pi, _np("rad2deg", "degrees"), holomorphic=False)
conjugate = _linear("conjugate", 1, _np("conjugate"), holomorphic=False)  # real input: the identity

_UNARY: list[tuple[str, Callable[..., Any], bool, tuple]] = [
    ("expm1", lambda x, value=None: np.exp(x) if value is None else value + 1, True, _np("expm1")),
    ("log1p", lambda x: 1 / (1 + x), True, _np("log1p")),
    ("log2", lambda x: 1 / (x * _LN2), True, _np("log2")),
    ("log10", lambda x: 1 / (x * _LN10), True, _np("log10")),
    ("exp2", lambda x, value=None: _LN2 * (np.exp2(x) if value is None else value), True, _np("exp2")),
    ("cbrt", lambda x, value=None: 1 / (3 * (np.cbrt(x) if value is None else value) ** 2), False, _np("cbrt")),
    ("reciprocal", lambda x: -1 / (x * x), True, _np("reciprocal")),
    ("tan", lambda x: 1 / np.cos(x) ** 2, True, _np("tan")),
    ("sinh", np.cosh, True, _np("sinh")),
    ("cosh", np.sinh, True, _np("cosh")),
    ("arcsin", lambda x: 1 / np.sqrt(1 - x * x), True, _np("arcsin")),
    ("arccos", lambda x: -1 / np.sqrt(1 - x * x), True, _np("arccos")),
    ("arctan", lambda x: 1 / (1 + x * x), True, _np("arctan")),
    ("arcsinh", lambda x: 1 / np.sqrt(x * x + 1), True, _np("arcsinh")),
    ("arccosh", lambda x: 1 / np.sqrt(x * x - 1), True, _np("arccosh")),
    ("arctanh", lambda x: 1 / (1 - x * x), True, _np("arctanh")),
    ("fabs", np.sign, False, _np("fabs")),
]
for _name, _df, _holo, _funcs in _UNARY:
    _code = getattr(_df, "__code__", None)
    _uv = _code is not None and "value" in _code.co_varnames
    elementwise_op(_name, _funcs[0], _df, f"numpy.{_name}", holomorphic=_holo, numpy=_funcs, public=False,
                   uses_value=_uv)

# piecewise constant: derivative 0 wherever it exists; their results are constants


# ----------------------------------------------------------------------------- elementwise, two operands


def _binary(name: str, func: Any, df0: Any, df1: Any, shapes: tuple[str, str] = ("out", "out"),
            holomorphic: bool = True, numpy: tuple = (), uses_value: bool = False) -> Op:
    """df0/df1: the partials ("coef" for +-1 constants, else callables of (a, b[, value]))."""

    def deriv(wrt: int, a: tuple, b: tuple) -> Deriv:
        df = (df0, df1)[wrt]
        if isinstance(df, (int, float)):
            return binary_elementwise_deriv(wrt, a, b, None, "out", coef=df)
        return binary_elementwise_deriv(wrt, a, b, df, shapes[wrt], uses_value=uses_value)

    return Op(name, ("a", "b"), func, bcast_shape(name), deriv, holomorphic=holomorphic, elementwise=True,
              numpy=numpy, public=False)


def _pow_da(a: Any, b: Any, value: Any = None) -> np.ndarray:
    if not traced(b) and np.ndim(b) == 0 and b == 2:  # x**2: b * a, the same bits (one traced op when nested)
        return arr(b * a)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = b * np.power(a, b - 1)
    return np.where(arr(b) == 0, 0, d)


def _pow_db(a: Any, b: Any, value: Any = None) -> np.ndarray:
    v = np.power(a, b) if value is None else value
    with np.errstate(divide="ignore", invalid="ignore"):
        d = v * np.log(a)
    return np.where((arr(a) == 0) & (np.real(arr(b)) > 0), 0, d)


def _div_db(a: Any, b: Any, value: Any = None) -> np.ndarray:
    v = np.true_divide(a, b) if value is None else value
    return -v / b


def _nanfirst(mask: Any, a: Any) -> np.ndarray:
    return (arr(mask) | np.isnan(a)).astype(np.float64)


add = _binary("add", np.add, 1, 1, numpy=_np("add"))
subtract = _binary("subtract", np.subtract, 1, -1, numpy=_np("subtract"))
divide = _binary("true_divide", np.true_divide, lambda a, b, value=None: 1 / arr(b), _div_db,
                 shapes=("b", "out"), numpy=_np("true_divide"), uses_value=True)
power = _binary("power", np.power, _pow_da, _pow_db, numpy=_np("power"), uses_value=True)
float_power = _binary("float_power", np.float_power, _pow_da, _pow_db, numpy=_np("float_power"), uses_value=True)
maximum = _binary("maximum", np.maximum, lambda a, b: _nanfirst(a >= b, a), lambda a, b: 1 - _nanfirst(a >= b, a),
                  holomorphic=False, numpy=_np("maximum"))
minimum = _binary("minimum", np.minimum, lambda a, b: _nanfirst(a <= b, a), lambda a, b: 1 - _nanfirst(a <= b, a),
                  holomorphic=False, numpy=_np("minimum"))
fmax = _binary("fmax", np.fmax, lambda a, b: _nanfirst(a >= b, b), lambda a, b: 1 - _nanfirst(a >= b, b),
               holomorphic=False, numpy=_np("fmax"))
fmin = _binary("fmin", np.fmin, lambda a, b: _nanfirst(a <= b, b), lambda a, b: 1 - _nanfirst(a <= b, b),
               holomorphic=False, numpy=_np("fmin"))
arctan2 = _binary("arctan2", np.arctan2, lambda y, x: x / (x * x + y * y), lambda y, x: -y / (x * x + y * y),
                  holomorphic=False, numpy=_np("arctan2"))


def _hypot_d(k: int) -> Callable[..., np.ndarray]:
    def d(a: Any, b: Any, value: Any = None) -> np.ndarray:
        h = np.hypot(a, b) if value is None else value
        x = (a, b)[k]
        return np.where(h > 0, arr(x) / np.where(h > 0, h, 1), 0)

    return d


hypot = _binary("hypot", np.hypot, _hypot_d(0), _hypot_d(1), holomorphic=False, numpy=_np("hypot"),
                uses_value=True)
logaddexp = _binary("logaddexp", np.logaddexp,
                    lambda a, b, value=None: np.exp(a - (np.logaddexp(a, b) if value is None else value)),
                    lambda a, b, value=None: np.exp(b - (np.logaddexp(a, b) if value is None else value)),
                    holomorphic=False, numpy=_np("logaddexp"), uses_value=True)
remainder = _binary("remainder", np.remainder, 1, lambda a, b: -np.floor_divide(a, b), holomorphic=False,
                    numpy=_np("remainder"))
fmod = _binary("fmod", np.fmod, 1, lambda a, b: -np.trunc(np.true_divide(a, b)), holomorphic=False,
               numpy=_np("fmod"))


def _where_shape(c: tuple, x: tuple, y: tuple) -> tuple:
    return tuple(np.broadcast_shapes(c, x, y))


def _where_deriv(wrt: int, c: tuple, x: tuple, y: tuple) -> Deriv:
    out = _where_shape(c, x, y)
    L = letters(len(out))
    fresh = list(letters(len(out) + 1, len(out))[::-1])
    inp = bcast_letters(L, out, (c, x, y)[wrt], fresh)
    if wrt == 0:  # the condition is not differentiable: a constant
        return Deriv(L, inp, [])
    fl, drop = squeezed_factor(L, out, c)
    sel = (lambda C: C) if wrt == 1 else (lambda C: ~C)

    def factors(C: Any, X: Any, Y: Any) -> tuple[np.ndarray]:
        m = sel(np.asarray(C, dtype=bool)).astype(np.float64)
        return (np.squeeze(m, drop) if drop else m,)

    return Deriv(L, inp, [(1, (fl,))], factors)


where = Op("where", ("condition", "x", "y"), np.where, _where_shape, _where_deriv, public=False)


# ----------------------------------------------------------------------------- reductions


def _excl_prod(X: np.ndarray, axis: tuple[int, ...]) -> np.ndarray:
    """prod over ``axis`` of every entry except one, X-shaped: exact even with zeros."""
    if traced(X):  # differentiated again (a Hessian): prod / x, valid where no entry is zero
        if np.any(X == 0):
            raise refuse("tensorjac: the second derivative of prod at a zero entry is not supported")
        return np.prod(X, axis=axis, keepdims=True) / X
    rest = [d for d in range(X.ndim) if d not in axis]
    moved = np.transpose(X, rest + list(axis))
    flat = moved.reshape(moved.shape[: len(rest)] + (-1,))
    one = np.ones(flat.shape[:-1] + (1,), dtype=flat.dtype)
    left = np.cumprod(np.concatenate([one, flat[..., :-1]], axis=-1), axis=-1)
    right = np.cumprod(np.concatenate([one, flat[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
    res = (left * right).reshape(moved.shape)
    return np.transpose(res, np.argsort(rest + list(axis)))


def _reduction(name: str, value: Callable[..., Any], factor: Callable[..., np.ndarray] | None, numpy: tuple,
               holomorphic: bool = True) -> Op:
    def deriv(wrt: int, x: tuple, axis: tuple[int, ...], keepdims: bool) -> Deriv:
        out, inp = reduce_letters(x, axis, keepdims)
        assert factor is not None
        return Deriv(out, inp, [(1, (inp,))], lambda X: (factor(X, axis),))

    return Op(name, ("X",), lambda X, axis, keepdims: value(X, axis=axis, keepdims=keepdims), reduce_shape, deriv,
              params={"axis": None, "keepdims": False}, normalize=reduce_norm(name), numpy=numpy,
              numpy_extra=("dtype", "out", "initial", "where"), holomorphic=holomorphic, public=False)


prod_ = _reduction("prod", np.prod, _excl_prod, _np("prod"))
amax = _reduction("amax", np.max, lambda X, ax: onehot_arg(X, ax, np.argmax), _np("max", "amax"),
                  holomorphic=False)
amin = _reduction("amin", np.min, lambda X, ax: onehot_arg(X, ax, np.argmin), _np("min", "amin"),
                  holomorphic=False)


def _cumsum_norm(shapes: tuple, axis: Any) -> dict[str, Any]:
    ax = normalize_axes(axis, len(shapes[0]), "cumsum")
    assert ax is not None
    return {"axis": ax[0]}


def _cumsum_deriv(wrt: int, x: tuple, axis: int) -> Deriv:
    L = letters(len(x))
    o = letters(1, len(x))
    out = L[:axis] + o + L[axis + 1:]
    n = x[axis]
    ax = axis + 1  # the batch axis comes first in hooks

    def vjp(G: np.ndarray, X: np.ndarray) -> np.ndarray:
        return np.flip(np.cumsum(np.flip(G, ax), axis=ax), ax)

    def jvp(V: np.ndarray, X: np.ndarray) -> np.ndarray:
        return np.cumsum(V, axis=ax)

    return Deriv(out, L, [(1, (o + L[axis],))], lambda X: (np.tril(np.ones((n, n))),), vjp=vjp, jvp=jvp)


cumsum = Op("cumsum", ("X",), lambda X, axis: np.cumsum(X, axis=axis), lambda x, axis: x, _cumsum_deriv,
            params={"axis": 0}, normalize=_cumsum_norm, public=False)


# ----------------------------------------------------------------------------- identity-like


def _identity_deriv(wrt: int, x: tuple, **_: Any) -> Deriv:
    L = letters(len(x))
    return Deriv(L, L, [(1, ())], vjp=lambda G, X: G, jvp=lambda V, X: V)


copy = Op("copy", ("X",), copy_of, lambda x: x, _identity_deriv, elementwise=True,
          numpy=_np("copy"), numpy_extra=("order", "subok"), public=False)
_cast = Op("astype", ("X",), lambda X, dtype: arr(X).astype(dtype), lambda x, dtype: x, _identity_deriv,
           params={"dtype": None}, elementwise=True, public=False)


def cast(x: Any, dtype: np.dtype) -> Any:
    """x.astype(dtype) for a float or complex dtype (complex to real would drop the imaginary part: refused)."""
    if np.iscomplexobj(x) and dtype.kind != "c":
        raise refuse("tensorjac: casting a complex traced value to a real dtype discards its imaginary part, "
                        "which is not holomorphic; use tj.fd.jacobian on real and imaginary parts")
    return _cast(x, dtype=dtype)


# ----------------------------------------------------------------------------- shape


def _reshape_norm(shapes: tuple, shape: Any) -> dict[str, Any]:
    (x,) = shapes
    sh = (shape,) if isinstance(shape, numbers.Integral) else tuple(int(s) for s in shape)
    n = prod(x)
    if sh.count(-1) > 1:
        raise ValueError("reshape: can only specify one unknown dimension")
    if -1 in sh:
        known = prod([s for s in sh if s != -1])
        if known == 0 or n % known:
            raise ValueError(f"cannot reshape array of size {n} into shape {shape}")
        sh = tuple(n // known if s == -1 else s for s in sh)
    if prod(sh) != n or builtins.any(s < 0 for s in sh):
        raise ValueError(f"cannot reshape array of size {n} into shape {shape}")
    return {"shape": sh}


def _suffix(sizes: Sequence[int]) -> list[int]:
    ps = [1]
    for n in reversed(sizes):
        ps.append(ps[-1] * n)
    return ps


def _reshape_deriv(wrt: int, x: tuple, shape: tuple[int, ...]) -> Deriv:
    """Fused letter groups where the two shapes share a refinement; one-hot factors where they don't."""
    pool = iter(letters(52))
    sizes: dict[str, int] = {}

    def new(n: int) -> str:
        c = next(pool)
        sizes[c] = n
        return c

    if prod(x) == 0:
        return Deriv([new(n) for n in shape], [new(n) for n in x], [], sizes=sizes)
    inp: list[str] = ["" for _ in x]
    out: list[str] = ["" for _ in shape]
    factors: list[tuple[str, np.ndarray]] = []
    ia = [d for d, n in enumerate(x) if n != 1]
    ob = [d for d, n in enumerate(shape) if n != 1]
    i = j = 0
    while i < len(ia) or j < len(ob):  # segments whose products agree
        si, sj = [ia[i]], [ob[j]]
        pi, pj = x[ia[i]], shape[ob[j]]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj:
                si.append(ia[i])
                pi *= x[ia[i]]
                i += 1
            else:
                sj.append(ob[j])
                pj *= shape[ob[j]]
                j += 1
        A = [x[d] for d in si]
        B = [shape[d] for d in sj]
        pa, pb = _suffix(A), _suffix(B)
        bounds = sorted(set(pa) | set(pb))
        if all(hi % lo == 0 for lo, hi in zip(bounds, bounds[1:])):
            atoms = [new(hi // lo) for lo, hi in zip(bounds, bounds[1:])][::-1]  # C order
            for dims, ps in ((si, pa), (sj, pb)):
                k = len(dims)
                for t, d in enumerate(dims):
                    lo, hi = ps[k - 1 - t], ps[k - t]
                    span = [q for q in bounds if lo <= q <= hi]
                    first = len(bounds) - 1 - bounds.index(span[-1])
                    group = "".join(atoms[first: first + len(span) - 1])
                    if dims is si:
                        inp[d] = group
                    else:
                        out[d] = group
        else:  # interleaved boundaries: a one-hot block S[b..., a...] = δ(flat b, flat a)
            for d in si:
                inp[d] = new(x[d])
            for d in sj:
                out[d] = new(shape[d])
            S = np.eye(prod(A)).reshape(B + A)
            factors.append(("".join(out[d] for d in sj) + "".join(inp[d] for d in si), S))
    for d, n in enumerate(x):
        if n == 1:
            inp[d] = new(1)
    for d, n in enumerate(shape):
        if n == 1:
            out[d] = new(1)
    fl = tuple(f for f, _ in factors)
    arrays = tuple(a for _, a in factors)

    def vjp(G: np.ndarray, X: np.ndarray) -> np.ndarray:
        return G.reshape((G.shape[0], *x))

    def jvp(V: np.ndarray, X: np.ndarray) -> np.ndarray:
        return V.reshape((V.shape[0], *shape))

    return Deriv(out, inp, [(1, fl)], lambda X: arrays, sizes=sizes, vjp=vjp, jvp=jvp)


reshape = Op("reshape", ("X",), lambda X, shape: np.reshape(X, shape), lambda x, shape: shape, _reshape_deriv,
             params={"shape": None}, normalize=_reshape_norm, public=False, view=True)


def _bto_norm(shapes: tuple, shape: Any) -> dict[str, Any]:
    sh = (shape,) if isinstance(shape, numbers.Integral) else tuple(int(s) for s in shape)
    return {"shape": sh}


def _broadcast_to_deriv(wrt: int, x: tuple, shape: tuple[int, ...]) -> Deriv:
    L = letters(len(shape))
    fresh = list(letters(len(x) + 1, len(shape))[::-1])
    return Deriv(L, bcast_letters(L, shape, x, fresh), [(1, ())])


broadcast_to = Op("broadcast_to", ("X",), lambda X, shape: np.broadcast_to(X, shape), lambda x, shape: shape,
                  _broadcast_to_deriv, params={"shape": None}, normalize=_bto_norm, public=False, view=True)


# ----------------------------------------------------------------------------- indexing


def is_basic_key(key: Any) -> bool:
    items = key if isinstance(key, tuple) else (key,)
    return all(k is None or k is Ellipsis or isinstance(k, (slice, numbers.Integral)) and not isinstance(k, bool)
               for k in items)


class _Index:
    """numpy's indexing of an array of ``shape`` by ``key``, per input axis.

    entries: one per input axis: ("full", out_pos) | ("slice", out_pos, start, step, n) | ("int", i) |
    ("adv", t) (the t-th advanced index array); new: output positions of None axes; adv: the broadcast
    advanced index arrays (non-negative) and the output position of their block.
    """

    def __init__(self, shape: tuple[int, ...], key: Any) -> None:
        items = list(key) if isinstance(key, tuple) else [key]
        conv: list[Any] = []
        for k in items:
            if isinstance(k, list) or (isinstance(k, np.ndarray) and k.ndim > 0) or isinstance(k, np.ndarray):
                k = np.asarray(k)
                if k.dtype == bool:
                    if k.ndim == 0:
                        raise unsupported("indexing with a 0-d boolean")
                    conv.append(("bool", k))
                    continue
                if k.dtype.kind not in "iu":
                    raise IndexError("arrays used as indices must be of integer (or boolean) type")
            if isinstance(k, bool) or isinstance(k, np.bool_):
                raise unsupported("indexing with a Python bool")
            conv.append(k)
        consumed = builtins.sum(
            0 if (k is None or k is Ellipsis) else (k[1].ndim if isinstance(k, tuple) else 1) for k in conv
        )
        if builtins.sum(1 for k in conv if k is Ellipsis) > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        exp: list[Any] = []
        for k in conv:
            if k is Ellipsis:
                exp.extend([slice(None)] * (len(shape) - consumed))
            elif isinstance(k, tuple):  # boolean mask: one integer array per masked axis
                exp.extend(("arr", a) for a in np.nonzero(k[1]))
            elif isinstance(k, np.ndarray):
                exp.append(("arr", k))
            else:
                exp.append(k)
        if not builtins.any(k is Ellipsis for k in conv):
            exp.extend([slice(None)] * (len(shape) - consumed))
        any_adv = builtins.any(isinstance(k, tuple) for k in exp)
        adv_pos = [p for p, k in enumerate(exp) if isinstance(k, tuple)
                   or (any_adv and isinstance(k, numbers.Integral))]
        arrays = []
        self.entries: list[tuple] = []
        self.new: list[int] = []
        out_shape: list[int] = []
        d = 0
        adjacent = bool(adv_pos) and adv_pos == list(range(adv_pos[0], adv_pos[-1] + 1))
        if any_adv:
            arrays = list(np.broadcast_arrays(*[np.asarray(exp[p][1] if isinstance(exp[p], tuple) else exp[p])
                                           for p in adv_pos]))
            bshape = arrays[0].shape if arrays else ()
        block_at = None
        for p, k in enumerate(exp):
            if k is None:
                self.new.append(len(out_shape))
                out_shape.append(1)
                continue
            n = shape[d]
            if p in adv_pos:
                t = adv_pos.index(p)
                idx = arrays[t]
                if idx.size and (idx.max() >= n or idx.min() < -n):
                    raise IndexError(f"index out of bounds for axis {d} with size {n}")
                arrays[t] = np.where(idx < 0, idx + n, idx)
                self.entries.append(("adv", t))
                if adjacent and block_at is None:
                    block_at = len(out_shape)
                    out_shape.extend(bshape)
            elif isinstance(k, slice):
                start, stop, step = k.indices(n)
                m = len(range(start, stop, step))
                if start == 0 and step == 1 and m == n:
                    self.entries.append(("full", len(out_shape)))
                else:
                    self.entries.append(("slice", len(out_shape), start, step, m))
                out_shape.append(m)
            else:
                i = int(k)
                if not -n <= i < n:
                    raise IndexError(f"index {i} is out of bounds for axis {d} with size {n}")
                self.entries.append(("int", i % n))
            d += 1
        if any_adv and not adjacent:
            block_at = 0
            out_shape[0:0] = bshape
            self.new = [q + len(bshape) for q in self.new]
            self.entries = [(e[0], e[1] + len(bshape), *e[2:]) if e[0] in ("full", "slice") else e
                            for e in self.entries]
        self.adv = arrays
        self.block_at = block_at
        self.bshape = tuple(arrays[0].shape) if any_adv and arrays else ()
        self.out_shape = tuple(out_shape)
        self.shape = shape

    def deriv_parts(self) -> tuple[str, str, list[str], list[np.ndarray], dict[str, int]]:
        """(output letters, input letters, factor letters, factor arrays, sizes) of x[key]."""
        pool = iter(letters(52))
        sizes: dict[str, int] = {}

        def new(n: int) -> str:
            c = next(pool)
            sizes[c] = n
            return c

        out = [""] * len(self.out_shape)
        inp = []
        fl: list[str] = []
        fa: list[np.ndarray] = []
        blk = [new(n) for n in self.bshape]
        if self.block_at is not None:
            for t, c in enumerate(blk):
                out[self.block_at + t] = c
        for q in self.new:
            out[q] = new(1)
        for d, e in enumerate(self.entries):
            n = self.shape[d]
            a = new(n)
            inp.append(a)
            if e[0] == "full":
                out[e[1]] = a
            elif e[0] == "slice":
                _, pos, start, step, m = e
                o = new(m)
                out[pos] = o
                S = np.zeros((m, n))
                S[np.arange(m), start + step * np.arange(m)] = 1
                fl.append(o + a)
                fa.append(S)
            elif e[0] == "int":
                v = np.zeros(n)
                v[e[1]] = 1
                fl.append(a)
                fa.append(v)
            else:
                idx = self.adv[e[1]]
                A = (idx[..., None] == np.arange(n)).astype(np.float64)
                fl.append("".join(blk) + a)
                fa.append(A)
        return "".join(out), "".join(inp), fl, fa, sizes

    def flat(self) -> np.ndarray:
        return np.arange(prod(self.shape)).reshape(self.shape)[self._key_for_flat()]

    def _key_for_flat(self) -> tuple:
        return self._key  # type: ignore[attr-defined,no-any-return]


def _index(shape: tuple[int, ...], key: Any) -> _Index:
    ix = _Index(shape, key)
    ix._key = key  # type: ignore[attr-defined]
    return ix


def _getitem_deriv(wrt: int, x: tuple, key: Any) -> Deriv:
    ix = _index(x, key)
    out, inp, fl, fa, sizes = ix.deriv_parts()
    flat = ix.flat()
    unique = np.unique(flat).size == flat.size
    n = prod(x)

    def vjp(G: np.ndarray, X: np.ndarray) -> np.ndarray:
        nb = G.shape[0]
        res = np.zeros((nb, n), dtype=G.dtype)
        g = G.reshape(nb, -1)
        if unique:
            res[:, flat.ravel()] = g
        else:
            for b in range(nb):
                res[b] = np.bincount(flat.ravel(), weights=g[b].real, minlength=n) if G.dtype.kind != "c" else \
                    np.bincount(flat.ravel(), weights=g[b].real, minlength=n) + \
                    1j * np.bincount(flat.ravel(), weights=g[b].imag, minlength=n)
        return res.reshape((nb, *x))

    def jvp(V: np.ndarray, X: np.ndarray) -> np.ndarray:
        return V.reshape(V.shape[0], -1)[:, flat.ravel()].reshape((V.shape[0], *flat.shape))

    return Deriv(out, inp, [(1, tuple(fl))], lambda X: tuple(fa), sizes=sizes, vjp=vjp, jvp=jvp)


getitem = Op("getitem", ("X",), lambda X, key: arr(X)[key], lambda x, key: _index(x, key).out_shape,
             _getitem_deriv, params={"key": None}, public=False, view=True)


def _winners(shape: tuple[int, ...], key: Any, sel_shape: tuple[int, ...]) -> np.ndarray:
    """Which entries of the assigned value numpy keeps in ``x[key] = v`` (the last of repeated indices)."""
    probe = np.full(shape, -1, dtype=np.int64)
    probe[key] = np.arange(prod(sel_shape)).reshape(sel_shape)
    keep = np.zeros(prod(sel_shape), dtype=bool)
    keep[probe[probe >= 0]] = True
    return keep.reshape(sel_shape)


def _scatter_deriv(wrt: int, x: tuple, v: tuple, key: Any) -> Deriv:
    ix = _index(x, key)
    sel = ix.out_shape
    L = letters(len(x))
    if wrt == 0:  # entries not overwritten pass through
        def keep(X: np.ndarray, V: np.ndarray) -> tuple[np.ndarray]:
            k = np.ones(x)
            k[key] = 0
            return (k,)

        def hk(G: np.ndarray, X: np.ndarray, V: np.ndarray) -> np.ndarray:
            k = np.ones(x, dtype=G.dtype)
            k[key] = 0
            return G * k

        return Deriv(L, L, [(1, (L,))], keep, vjp=hk, jvp=hk)
    out, inp, fl, fa, sizes = ix.deriv_parts()  # of x[key]: sel letters x x letters; swap the roles
    win = _winners(x, key, sel)
    if ix.adv:  # repeated advanced indices: only the last write counts (the mask is always a factor,
        # so that the rule's structure never depends on the index values: recorded programs replay it)
        blk = "".join(out[ix.block_at + t] for t in range(len(ix.bshape))) if ix.block_at is not None else ""
        wmask = np.zeros(ix.bshape)
        # project the winners onto the advanced block (they differ only along it)
        sel_letters = out
        order = [sel_letters.index(c) for c in blk]
        other = tuple(k for k in range(len(sel)) if k not in order)
        wmask = np.transpose(win, order + list(other)).reshape(ix.bshape + (-1,))[..., 0].astype(np.float64)
        fl = fl + [blk]
        fa = fa + [wmask]
    flat = ix.flat()
    wf = win.ravel()
    tgt = flat.ravel()[wf]
    n = prod(x)

    def vjp(G: np.ndarray, X: np.ndarray, V: np.ndarray) -> np.ndarray:
        nb = G.shape[0]
        res = np.zeros((nb, prod(sel)), dtype=G.dtype)
        res[:, wf] = G.reshape(nb, -1)[:, tgt]
        return res.reshape((nb, *sel))

    def jvp(T: np.ndarray, X: np.ndarray, V: np.ndarray) -> np.ndarray:
        nb = T.shape[0]
        res = np.zeros((nb, n), dtype=T.dtype)
        res[:, tgt] = T.reshape(nb, -1)[:, wf]
        return res.reshape((nb, *x))

    return Deriv(inp, out, [(1, tuple(fl))], lambda X, V: tuple(fa), sizes=sizes, vjp=vjp, jvp=jvp)


def _scatter_value(X: np.ndarray, V: np.ndarray, key: Any) -> np.ndarray:
    if traced(V) and not traced(X):  # a traced value written into a constant: the result is traced
        out = np.zeros_like(V, shape=np.shape(X), dtype=np.result_type(X.dtype, V.dtype)) + X
    else:
        out = copy_of(X)
    out[key] = V
    return out


_scatter = Op("scatter", ("X", "V"), _scatter_value, lambda x, v, key: x, _scatter_deriv, params={"key": None},
              public=False)


def scatter(x: Any, v: Any, key: Any) -> Any:
    """``x`` with ``x[key] = v`` (numpy's assignment semantics), as a new traced array."""
    sel = np.shape(np.empty(np.shape(x), dtype=np.int8)[key])
    vs = np.shape(v)
    if vs != sel:
        if len(vs) > len(sel) and builtins.all(n == 1 for n in vs[: len(vs) - len(sel)]):
            v = np.reshape(v, vs[len(vs) - len(sel):])
        if np.shape(v) != sel:
            v = np.broadcast_to(v, sel)
    if np.iscomplexobj(v) and not np.iscomplexobj(x):
        raise refuse("tensorjac: assigning complex traced values into a real array discards the imaginary "
                        "part, which is not holomorphic")
    return _scatter(x, v, key=key)


# ----------------------------------------------------------------------------- diagonals and triangles


def _diagonal_norm(shapes: tuple, offset: int = 0, axis1: int = 0, axis2: int = 1) -> dict[str, Any]:
    (x,) = shapes
    if len(x) < 2:
        raise ValueError(f"diagonal requires an array of at least two dimensions, got shape {x}")
    a1, a2 = int(axis1) % len(x), int(axis2) % len(x)
    if a1 == a2:
        raise ValueError("axis1 and axis2 cannot be the same")
    return {"offset": int(offset), "axis1": a1, "axis2": a2}


def _diag_len(n1: int, n2: int, k: int) -> int:
    return builtins.max(0, builtins.min(n1 - builtins.max(-k, 0), n2 - builtins.max(k, 0)))


def _diagonal_shape(x: tuple, offset: int, axis1: int, axis2: int) -> tuple:
    return tuple(n for d, n in enumerate(x) if d not in (axis1, axis2)) + (_diag_len(x[axis1], x[axis2], offset),)


def _diagonal_deriv(wrt: int, x: tuple, offset: int, axis1: int, axis2: int) -> Deriv:
    L = list(letters(len(x)))
    rest = "".join(c for d, c in enumerate(L) if d not in (axis1, axis2))
    n1, n2 = x[axis1], x[axis2]
    if offset == 0 and n1 == n2:
        L[axis2] = L[axis1]
        return Deriv(rest + L[axis1], "".join(L), [(1, ())])
    m = _diag_len(n1, n2, offset)
    dl = letters(1, len(x))
    r0, c0 = builtins.max(-offset, 0), builtins.max(offset, 0)
    Sa = np.zeros((m, n1))
    Sa[np.arange(m), r0 + np.arange(m)] = 1
    Sb = np.zeros((m, n2))
    Sb[np.arange(m), c0 + np.arange(m)] = 1
    return Deriv(rest + dl, "".join(L), [(1, (dl + L[axis1], dl + L[axis2]))], lambda X: (Sa, Sb))


diagonal = Op("diagonal", ("X",), lambda X, offset, axis1, axis2: np.diagonal(X, offset, axis1, axis2),
              _diagonal_shape, _diagonal_deriv, params={"offset": 0, "axis1": 0, "axis2": 1},
              normalize=_diagonal_norm, public=False, view=True)


# ----------------------------------------------------------------------------- joining


def _concat_norm(shapes: tuple, axis: int = 0) -> dict[str, Any]:
    if not shapes:
        raise ValueError("need at least one array to concatenate")
    nd = len(shapes[0])
    if nd == 0:
        raise ValueError("zero-dimensional arrays cannot be concatenated")
    ax = int(axis) % nd
    for s in shapes:
        if len(s) != nd or builtins.any(a != b for d, (a, b) in enumerate(zip(s, shapes[0])) if d != ax):
            raise ValueError(f"concatenate: array shapes {list(shapes)} do not match except along axis {axis}")
    return {"axis": ax}


def _concat_shape(*shapes: tuple, axis: int) -> tuple:
    s = list(shapes[0])
    s[axis] = builtins.sum(x[axis] for x in shapes)
    return tuple(s)


def _concat_deriv(wrt: int, *shapes: tuple, axis: int) -> Deriv:
    x = shapes[wrt]
    L = letters(len(x))
    if len(shapes) == 1:
        return Deriv(L, L, [(1, ())])
    off = builtins.sum(s[axis] for s in shapes[:wrt])
    total = builtins.sum(s[axis] for s in shapes)
    n = x[axis]
    o = letters(1, len(x))
    out = L[:axis] + o + L[axis + 1:]
    S = np.zeros((total, n))
    S[off + np.arange(n), np.arange(n)] = 1
    ax = axis + 1

    def vjp(G: np.ndarray, *a: Any) -> np.ndarray:
        return G[(slice(None),) * ax + (slice(off, off + n),)]

    def jvp(V: np.ndarray, *a: Any) -> np.ndarray:
        res = np.zeros(V.shape[:ax] + (total,) + V.shape[ax + 1:], dtype=V.dtype)
        res[(slice(None),) * ax + (slice(off, off + n),)] = V
        return res

    return Deriv(out, L, [(1, (o + L[axis],))], lambda *a: (S,), vjp=vjp, jvp=jvp)


concatenate = Op("concatenate", ("arrays",), lambda *a, axis: np.concatenate(a, axis=axis), _concat_shape,
                 _concat_deriv, params={"axis": 0}, normalize=_concat_norm, variadic=True, public=False)


# ----------------------------------------------------------------------------- products


def _einsum_norm(shapes: tuple, spec: Any) -> dict[str, Any]:
    return {"spec": _explicit_einsum(spec, shapes)}


def _explicit_einsum(subscripts: str, shapes: Sequence[tuple[int, ...]]) -> str:
    """Explicit, ellipsis-free subscripts (broadcast size-1 ellipsis axes get letters of their own)."""
    s = subscripts.replace(" ", "")
    if "->" in s:
        ins, out = s.split("->")
    else:
        ins, out = s, None
    specs = ins.split(",")
    if len(specs) != len(shapes):
        raise ValueError(f"einsum: {len(specs)} operand subscripts for {len(shapes)} operands")
    used = {c for c in s if c.isalpha()}
    free = [c for c in letters(52) if c not in used]
    ell = [len(shape) - len(sp.replace("...", "")) if "..." in sp else 0 for sp, shape in zip(specs, shapes)]
    E = builtins.max(ell) if ell else 0
    ell_shapes = [tuple(shape[sp.index("..."): sp.index("...") + e]) if "..." in sp else ()
                  for sp, shape, e in zip(specs, shapes, ell)]
    try:
        bshape = tuple(np.broadcast_shapes(*ell_shapes))
    except ValueError:
        raise ValueError(f"einsum: operands could not be broadcast together ({subscripts!r})") from None
    if len(free) < 2 * E + 1:
        raise ValueError("einsum: too many index letters")
    el = "".join(free[:E])
    pool = free[E:]
    new_specs: list[str] = []
    for sp, e, es in zip(specs, ell, ell_shapes):
        if "..." not in sp:
            if len(sp) != len(shapes[len(new_specs)]):
                raise ValueError(f"einsum: subscripts {sp!r} do not match an operand of shape "
                                 f"{shapes[len(new_specs)]}")
            new_specs.append(sp)
            continue
        mine = el[E - e:]
        mine = "".join(c if es[t] == bshape[E - e + t] else pool.pop() for t, c in enumerate(mine))
        new_specs.append(sp.replace("...", mine))
    if out is None:
        counts: dict[str, int] = {}
        for sp in specs:
            for c in sp.replace(".", ""):
                counts[c] = counts.get(c, 0) + 1
        out = el + "".join(sorted(c for c, k in counts.items() if k == 1))
    else:
        out = out.replace("...", el)
    return ",".join(new_specs) + "->" + out


def _einsum_parts(spec: str) -> tuple[list[str], str]:
    ins, out = spec.split("->")
    return ins.split(","), out


def _einsum_shape(*shapes: tuple, spec: str) -> tuple:
    specs, out = _einsum_parts(spec)
    sizes: dict[str, int] = {}
    for sp, sh in zip(specs, shapes):
        sizes.update(zip(sp, sh))
    return tuple(sizes[c] for c in out)


def _einsum_deriv(wrt: int, *shapes: tuple, spec: str) -> Deriv:
    specs, out = _einsum_parts(spec)
    try:
        return einsum_deriv(specs, out, shapes, wrt)
    except ValueError:
        raise unsupported("numpy.einsum with a size-1 named axis broadcast against another operand") from None


einsum = Op("einsum", ("operands",), lambda *ops, spec: np.einsum(spec, *ops), _einsum_shape, _einsum_deriv,
            params={"spec": ""}, normalize=_einsum_norm, variadic=True, public=False)


# ----------------------------------------------------------------------------- linear algebra


def _solve_vector(a: tuple, b: tuple) -> bool:
    return len(b) == 1 or (np.lib.NumpyVersion(np.__version__) < "2.0.0" and len(b) == len(a) - 1)


def _solve_specs(a: tuple, b: tuple) -> tuple[str, str, str, str]:
    """(spec of a, spec of b, spec of x, spec of a's inverse) with broadcast stack letters."""
    need_square("solve", "a", a, stacked=True)
    vec = _solve_vector(a, b)
    bm = b if vec else b[:-1]
    if bm[-1] != a[-1]:
        raise ValueError(f"solve: a {a} and b {b} do not match (b has {bm[-1]} rows, a is {a[-1]}x{a[-1]})")
    sa, sb = a[:-2], (b[:-1] if vec else b[:-2])
    out_batch = tuple(np.broadcast_shapes(sa, sb))
    ob, (la, lb) = batch_letters(out_batch, [sa, sb], 0)
    if vec:
        return la + "ij", lb + "j", ob + "i", la + "ij"
    return la + "ij", lb + "jk", ob + "ik", la + "ij"


def _solve_shape(a: tuple, b: tuple) -> tuple:
    sa, sb, sx, _ = _solve_specs(a, b)
    sizes = dict(zip(sa, a)) | dict(zip(sb, b))
    return tuple(sizes[c] for c in sx)


def _solve_deriv(wrt: int, a: tuple, b: tuple) -> Deriv:
    sa, sb, sx, _ = _solve_specs(a, b)
    vec = _solve_vector(a, b)
    nb = len(sa) - 2
    z = sa[:nb]
    if wrt == 1:  # dx = inv(a) db
        return Deriv(sx, sb, [(1, (sa,))], lambda A, B: (np.linalg.inv(A),),
                     vjp=lambda G, A, B: _bsolve(A, G, vec, True), jvp=lambda V, A, B: _bsolve(A, V, vec, False))
    # dx = -inv(a) da x: d x[i(k)] / d a[p q] = -Ai[i p] x[q (k)]
    xi = sx[len(sx) - (1 if vec else 2):]
    q = "q"
    xq = sx[: len(sx) - len(xi)] + q + xi[1:]

    def factors(A: np.ndarray, B: np.ndarray, value: np.ndarray | None = None) -> tuple:
        X = np.linalg.solve(A, B) if value is None else value
        return (np.linalg.inv(A), X)

    def vjp(G: np.ndarray, A: np.ndarray, B: np.ndarray, value: np.ndarray | None = None) -> np.ndarray:
        X = np.linalg.solve(A, B) if value is None else value
        Gb = _bsolve(A, G, vec, True)  # (batch, ..., i(, k))
        if vec:
            R = -Gb[..., :, None] * X[..., None, :]
        else:
            R = -(Gb @ swap_last(X))
        return _sum_to(R, (G.shape[0],) + a)

    def jvp(V: np.ndarray, A: np.ndarray, B: np.ndarray, value: np.ndarray | None = None) -> np.ndarray:
        X = np.linalg.solve(A, B) if value is None else value
        VX = (V @ X[..., None])[..., 0] if vec else V @ X
        return -_bsolve(A, VX, vec, False)

    return Deriv(sx, z + "pq", [(-1, (z + "i" + "p", xq))], factors, vjp=vjp, jvp=jvp, uses_value=True)


def _sum_to(R: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum broadcast axes of R away so that it has ``shape`` (the batch axis first)."""
    extra = R.ndim - len(shape)
    if extra:
        R = R.sum(axis=tuple(range(1, 1 + extra)))
    ax = tuple(d for d in range(1, len(shape)) if shape[d] == 1 and R.shape[d] != 1)
    return R.sum(axis=ax, keepdims=True) if ax else R


def _bsolve(A: np.ndarray, R: np.ndarray, vec: bool, transpose: bool) -> np.ndarray:
    """solve(A or A^T, R) for a batch R (leading batch axis) broadcast against A's stack."""
    M = swap_last(A) if transpose else A
    if vec:
        return np.linalg.solve(M, R[..., None])[..., 0]
    return np.linalg.solve(M, R)


solve = Op("solve", ("a", "b"), np.linalg.solve, _solve_shape, _solve_deriv, numpy=(np.linalg.solve,), public=False)


def _lower_mask(n: int, uplo: str) -> np.ndarray:
    """1 below the read triangle's diagonal, 1/2 on it, 0 in the triangle numpy does not read."""
    M = np.tril(np.ones((n, n)), -1) + 0.5 * np.eye(n)
    return M if uplo == "L" else M.T


def _chol_deriv(wrt: int, a: tuple) -> Deriv:
    z = letters(len(a) - 2, 4)
    n = a[-1]

    def factors(A: np.ndarray, value: np.ndarray | None = None) -> tuple:
        L = np.linalg.cholesky(A) if value is None else value
        Li = np.linalg.inv(L)
        Phi = np.tril(np.ones((n, n)), -1) + 0.5 * np.eye(n)
        F1 = np.einsum("...ip,pj,...pa->...ija", L, Phi, Li)
        M = _lower_mask(n, "L")
        return (F1, Li, M, F1, Li, M)

    terms = [(1, (z + "ija", z + "jb", "ab")), (1, (z + "ijb", z + "ja", "ab"))]
    return Deriv(z + "ij", z + "ab", terms, factors, uses_value=True)


def _chol_shape(a: tuple) -> tuple:
    need_square("cholesky", "a", a, stacked=True)
    return a


cholesky = Op("cholesky", ("a",), np.linalg.cholesky, _chol_shape, _chol_deriv, numpy=(np.linalg.cholesky,),
              numpy_extra=(), holomorphic=False, public=False)


def _eigh_norm(shapes: tuple, UPLO: str = "L") -> dict[str, Any]:
    u = str(UPLO).upper()
    if u not in ("L", "U"):
        raise ValueError("UPLO argument must be 'L' or 'U'")
    return {"UPLO": u}


def _eigh_shape(k: int) -> Callable[..., tuple]:
    def shape(a: tuple, UPLO: str = "L") -> tuple:
        need_square("eigh", "a", a, stacked=True)
        return a[:-1] if k == 0 else a

    return shape


def _eigvals_deriv(wrt: int, a: tuple, UPLO: str) -> Deriv:
    z = letters(len(a) - 2, 4)

    def factors(A: np.ndarray) -> tuple:
        _, V = np.linalg.eigh(A, UPLO)  # type: ignore[call-overload]
        return (V, V, _lower_mask(a[-1], UPLO))

    return Deriv(z + "i", z + "ab", [(2, (z + "ai", z + "bi", "ab"))], factors)


def _eigvecs_deriv(wrt: int, a: tuple, UPLO: str) -> Deriv:
    z = letters(len(a) - 2, 4)

    def factors(A: np.ndarray) -> tuple:
        w, V = np.linalg.eigh(A, UPLO)  # type: ignore[call-overload]
        gap = w[..., None, :] - w[..., :, None]  # w_j - w_i
        off = ~np.eye(a[-1], dtype=bool)
        if np.any(gap[..., off] == 0):
            raise ValueError(
                "eigh: the eigenvectors are not differentiable where eigenvalues repeat (the input has a "
                "repeated eigenvalue); differentiate only the eigenvalues, or use tj.fd.jacobian"
            )
        with np.errstate(divide="ignore"):
            F = np.where(off, 1 / np.where(off, gap, 1), 0)
        G = np.einsum("...ci,...ij,...ai->...cja", V, F, V)
        M = _lower_mask(a[-1], UPLO)
        return (G, V, M, G, V, M)

    terms = [(1, (z + "cja", z + "bj", "ab")), (1, (z + "cjb", z + "aj", "ab"))]
    return Deriv(z + "cj", z + "ab", terms, factors)


eigh_values = Op("eigh_values", ("a",), lambda A, UPLO: np.linalg.eigh(A, UPLO)[0], _eigh_shape(0), _eigvals_deriv,
                 params={"UPLO": "L"}, normalize=_eigh_norm, holomorphic=False, public=False)
eigh_vectors = Op("eigh_vectors", ("a",), lambda A, UPLO: np.linalg.eigh(A, UPLO)[1], _eigh_shape(1),
                  _eigvecs_deriv, params={"UPLO": "L"}, normalize=_eigh_norm, holomorphic=False, public=False)


