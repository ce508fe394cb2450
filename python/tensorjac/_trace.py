"""Traced arrays: plain numpy code in, a tape of rule applications out.

``tj.jacobian(f, x)`` calls ``f`` on :class:`Tracer` objects.  A Tracer holds
the concrete value (so Python control flow on values works) and the tape
node that produced it.  numpy calls on Tracers arrive through numpy's own
protocols (``__array_ufunc__``, ``__array_function__``) and the operators, and
each looks up *the* rule of that function in the op registry
(tensorjac._rule.NUMPY / UFUNCS): the same rule ``tj.jacobian(op, ...)`` uses.

Nothing is differentiated here; the tape is differentiated afterwards by
tensorjac._engine.  Anything without a rule raises TypeError pointing to
``tj.fd.jacobian`` -- a traced function never gets a silently wrong or zero
derivative.

In-place writes follow numpy's semantics for the forms users write
(``y += x``, ``y[0] = x``, ``y[1:] += x``): a write into a basic slice of a
traced array is written through to that array.  Other views of an array that
was written in place become stale, and using a stale view raises TypeError
(numpy would show the write through the alias; tensorjac refuses rather than
differentiate the wrong function).
"""

from __future__ import annotations

import numbers
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._dtypes import as_constant
from ._errors import refuse, unsupported
from ._nprules import cast, copy, getitem, is_basic_key, scatter
from ._rule import NUMPY, UFUNCS, Op

__all__ = ["Node", "Trace", "Tracer", "TracerND", "make", "constant_functions", "constant_ufuncs", "refuse", "unsupported"]


class Node:
    """One tape entry: ``value = op(*args, **params)``; ``parents`` are the traced arguments."""

    __slots__ = ("args", "index", "live", "op", "params", "parents", "value")

    def __init__(self, op: Op | None, params: dict[str, Any], args: tuple, parents: tuple, value: Any,
                 live: bool, index: int) -> None:
        self.op = op
        self.params = params
        self.args = args
        self.parents = parents  # ((argument position, Node), ...) for live traced arguments
        self.value = value
        self.live = live  # depends on a differentiated input
        self.index = index


class Trace:
    """The tape of one evaluation of f.

    ``level`` is the nesting depth: a differentiated function may itself call
    ``tj.grad`` / ``tj.jacobian`` / ... (that is how Hessians are traced).  For the
    inner trace, traced arrays of the enclosing traces are constants whose values
    are recorded by the enclosing trace.
    """

    __slots__ = ("__weakref__", "active", "inputs", "level", "nodes")

    def __init__(self, level: int = 1) -> None:
        self.nodes: list[Node] = []
        self.inputs: list[Node] = []
        self.level = level
        self.active = True  # False once its function has returned: its traced arrays are then dead

    def input(self, value: Any) -> Tracer:
        node = Node(None, {}, (), (), value, True, len(self.nodes))
        self.nodes.append(node)
        self.inputs.append(node)
        return make(self, node)

    def constant(self, value: Any) -> Tracer:
        return make(self, Node(None, {}, (), (), _as_value(value), False, -1))


def _as_value(v: Any) -> Any:
    """A node's value: an array, or a traced array of an enclosing trace (nested differentiation)."""
    return v if isinstance(v, Tracer) else np.asarray(v)


_DEPTH = [0]  # how many traces are being recorded right now (their functions are running)


class nested:
    """Context of one traced evaluation: the depth a new trace starts at."""

    def __enter__(self) -> int:
        _DEPTH[0] += 1
        return _DEPTH[0]

    def __exit__(self, *exc: Any) -> None:
        _DEPTH[0] -= 1


def depth() -> int:
    return _DEPTH[0]


def _fname(func: Any) -> str:
    mod = getattr(func, "__module__", None) or "numpy"
    mod = mod.replace("numpy.linalg._linalg", "numpy.linalg").replace("numpy._core.", "numpy.")
    if mod.startswith("numpy._core") or mod.startswith("numpy.core"):
        mod = "numpy"
    return f"{mod}.{getattr(func, '__name__', repr(func))}"


# ----------------------------------------------------------------------------- constants

# numpy functions whose result does not depend differentiably on array values:
# evaluated on the plain values, their results are constants.
constant_functions: set[Callable[..., Any]] = set()
constant_ufuncs: set[np.ufunc] = set()


def _unwrap(x: Any) -> Any:
    if isinstance(x, Tracer):
        return x._get().value
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


# ----------------------------------------------------------------------------- applying rules


def _common_trace(args: Sequence[Any]) -> Trace:
    trace = None
    for a in args:
        if isinstance(a, Tracer):
            if trace is None:
                trace = a._trace
            elif a._trace is not trace:
                raise refuse(
                    "tensorjac: traced arrays of two different tj.jacobian/tj.vjp/... calls were mixed (for "
                    "example an array traced by a call that has returned); differentiate each function "
                    "separately"
                )
    assert trace is not None
    return trace


def apply(op: Op, args: Sequence[Any], params: dict[str, Any]) -> Tracer:
    """Record ``op(*args, **params)`` on the tape of the innermost trace among the arguments."""
    trace = None
    nested_ = False
    for a in args:
        if isinstance(a, Tracer):
            if not a._trace.active:
                raise _dead()
            if trace is None:
                trace = a._trace
            elif a._trace is not trace:
                nested_ = True
                if a._trace.level > trace.level:
                    trace = a._trace
    assert trace is not None
    vals = []
    parents = []
    for i, a in enumerate(args):
        if isinstance(a, Tracer) and a._trace is trace:
            n = a._get()
            vals.append(n.value)
            if n.live:
                parents.append((i, n))
        elif nested_ and isinstance(a, Tracer):
            if a._trace.level >= trace.level:
                _common_trace(args)  # raises the mixing error
            vals.append(a)  # a traced array of an enclosing trace: a constant here
        else:
            vals.append(as_constant(a, "a constant array in f"))  # another library's tensor: a numpy view
    if op.params:
        params = op.normalize([np.shape(v) for v in vals], params)
    value = _as_value(op._value(*vals, **params))
    if value.dtype.kind not in "fc" and parents:
        # e.g. an integer-valued rule; keep floats so that derivatives have a dtype
        value = value.astype(np.float64)
    if parents and not op.holomorphic:
        for _, n in parents:
            if n.value.dtype.kind == "c":
                raise refuse(
                    f"tensorjac: {op.name} is not holomorphic, so a complex traced value has no complex "
                    f"derivative through it. Differentiate real and imaginary parts separately with "
                    "tj.fd.jacobian, or keep the computation real."
                )
    node = Node(op, params, tuple(vals), tuple(parents), value, bool(parents), len(trace.nodes))
    if parents:
        trace.nodes.append(node)
    res = make(trace, node)
    if op.view and isinstance(args[0], Tracer):
        _view_of(res, args[0])
    return res


def _dead() -> TypeError:
    return refuse(
        "tensorjac: a traced array was used after the tj.jacobian/tj.grad/... call that traced it returned "
        "(for example stored in a variable by the function); its derivative is gone. Return it from the "
        "function instead, or pass plain arrays"
    )


def _view_of(result: Tracer, base: Any, key: Any = None, writable: bool = False) -> Tracer:
    """Mark ``result`` as a numpy view of traced ``base`` when their values share memory."""
    if (isinstance(base, Tracer) and not isinstance(result._node.value, Tracer)
            and np.may_share_memory(result._node.value, base._node.value)):
        if result._base is not base:
            result._base = base
            base._views.append(weakref.ref(result))
        result._key = key if writable else _NOT_WRITABLE
    return result


_NOT_WRITABLE = object()


# ----------------------------------------------------------------------------- the traced array


def _binary(ufunc: np.ufunc, reflected: bool = False) -> Callable[[Tracer, Any], Any]:
    if reflected:
        return lambda self, other: ufunc(other, self)
    return lambda self, other: ufunc(self, other)


def _inplace(ufunc: np.ufunc) -> Callable[[Tracer, Any], Tracer]:
    def op(self: Tracer, other: Any) -> Tracer:
        self._assign(ufunc(self, other), f"{ufunc.__name__} in place")
        return self

    return op


class Tracer:
    """An array being differentiated: its value, plus where it came from on the tape.

    It supports numpy's functions, operators and array methods; see the docs
    for the list.  It cannot be converted to a plain numpy array (the
    derivative would be lost): ``np.asarray(x)``, ``float(x)`` and ``x.item()``
    raise TypeError.
    """

    __slots__ = ("__weakref__", "_base", "_key", "_node", "_stale", "_trace", "_views")
    __array_priority__ = 1000.0
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, trace: Trace, node: Node) -> None:
        self._trace = trace
        self._node = node
        self._base: Tracer | None = None
        self._key: Any = None
        self._views: list[weakref.ref[Tracer]] = []
        self._stale = False

    # -- tape plumbing -------------------------------------------------------
    @classmethod
    def __tj_apply__(cls, op: Op, args: Sequence[Any], params: dict[str, Any]) -> Tracer:
        return apply(op, args, params)

    def _get(self) -> Node:
        if not self._trace.active:
            raise _dead()
        if self._stale:
            raise refuse(
                "tensorjac: this traced array is a view of an array that was later modified in place "
                "(numpy would show the write through the view). tensorjac does not follow that aliasing: "
                "take a copy (y = x[1:].copy()) or avoid the in-place write."
            )
        return self._node

    def _invalidate_views(self, keep: Tracer | None = None) -> None:
        for ref in self._views:
            v = ref()
            if v is not None and v is not keep:
                v._stale = True
                v._invalidate_views()
        self._views = [r for r in self._views if r() is keep] if keep is not None else []

    def _assign(self, new: Any, what: str, keep: Tracer | None = None) -> None:
        """In-place update: ``self`` now holds ``new`` (numpy's casting rules, shape kept).

        Views of ``self`` become stale, except ``keep`` (the view being written through).
        """
        self._get()
        new = _as_traced(self._trace, new)
        nv = new._node.value
        if nv.shape != self.shape:
            raise ValueError(
                f"non-broadcastable output operand with shape {self.shape} doesn't match the broadcast "
                f"shape {nv.shape} ({what})"
            )
        if nv.dtype != self.dtype:
            if not np.can_cast(nv.dtype, self.dtype, "same_kind"):
                raise refuse(f"Cannot cast {what} output from {nv.dtype} to {self.dtype}")
            new = new.astype(self.dtype)
        if self._base is not None:
            if self._key is _NOT_WRITABLE:
                raise refuse(
                    "tensorjac: in-place write into a traced view made by transpose/reshape/broadcast_to/"
                    "diagonal is not supported; write into a copy (y = x.T.copy()) instead"
                )
            self._base._setitem(self._key, new, keep=self)  # write through to the array this slices
            self._node = new._node
            self._invalidate_views()
            return
        self._node = new._node
        self._invalidate_views(keep)

    def _setitem(self, key: Any, value: Any, keep: Tracer | None = None) -> None:
        key = _unwrap(key)
        self._assign(scatter(self, value, key), "assignment", keep)

    # -- numpy protocols -----------------------------------------------------
    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise refuse(
            "tensorjac: a traced array cannot be converted to a plain numpy array (np.asarray, np.array, "
            "writing it into a numpy array, ...): its derivative would be lost. Keep the computation in "
            "numpy functions on the traced value, create buffers with np.zeros_like(x) instead of "
            "np.zeros(shape), or use tj.fd.jacobian(f, x) for code that needs plain arrays."
        )

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        # PyTorch calls this for a traced array given to a torch function (its TypeError on a Tensor's
        # operator makes Python try the traced array's, which converts the tensor constant: that works)
        name = getattr(func, "__name__", repr(func))
        raise TypeError(
            f"tensorjac: the PyTorch function {name}() was called on a traced array. tensorjac differentiates "
            "numpy code only and would not see through it: write f with numpy (its numpy equivalent), or "
            "differentiate torch code with torch.func"
        )

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        out = kwargs.pop("out", None)
        if out is not None:
            outs = out if isinstance(out, tuple) else (out,)
            if len(outs) != 1 or not isinstance(outs[0], Tracer):
                raise refuse(
                    f"tensorjac: numpy.{ufunc.__name__}(..., out=...) would write a traced value into a plain "
                    "numpy array, losing its derivative; assign the result to a new name instead"
                )
            if any(isinstance(i, Tracer) for i in inputs):
                res = self.__array_ufunc__(ufunc, method, *inputs, **kwargs)
            else:  # constants written into a traced array: the result is a constant
                res = getattr(ufunc, method)(*inputs, **kwargs)
            outs[0]._assign(res, f"{ufunc.__name__}(out=...)")
            return outs[0]
        if method == "__call__":
            op = UFUNCS.get(ufunc)
            if op is not None:
                if kwargs:
                    _check_ufunc_kwargs(ufunc, kwargs)
                if len(inputs) == op._nargs and not op.params:
                    return apply(op, inputs, {})
                return op(*inputs)
            handler = NUMPY.get(ufunc)
            if handler is not None:
                _check_ufunc_kwargs(ufunc, kwargs)
                return handler(*inputs)
            if ufunc in constant_ufuncs:
                if ufunc is np.sign and any(isinstance(i, Tracer) and i.dtype.kind == "c" for i in inputs):
                    raise refuse("tensorjac: numpy.sign of a complex traced value (z/|z|) is not holomorphic")
                return ufunc(*_unwrap(inputs), **_unwrap(kwargs))
            raise unsupported(f"numpy.{ufunc.__name__}")
        if method == "reduce":
            red = {np.add: np.sum, np.multiply: np.prod, np.maximum: np.max, np.minimum: np.min}.get(ufunc)
            if red is not None and len(inputs) == 1:
                kwargs.setdefault("axis", 0)
                return red(inputs[0], **kwargs)
        if method == "accumulate" and ufunc is np.add and len(inputs) == 1:
            kwargs.setdefault("axis", 0)
            return np.cumsum(inputs[0], **kwargs)
        if method == "outer" and len(inputs) == 2 and not kwargs:
            a, b = inputs
            a2 = np.reshape(a, np.shape(a) + (1,) * np.ndim(b))
            return ufunc(a2, b)
        if ufunc in constant_ufuncs and method in ("reduce", "accumulate", "outer", "reduceat"):
            return getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs))
        raise unsupported(f"numpy.{ufunc.__name__}.{method}")

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        handler = NUMPY.get(func)
        if handler is None:
            if func in constant_functions:
                return func(*_unwrap(args), **_unwrap(kwargs))
            raise unsupported(_fname(func))
        if isinstance(handler, Op):
            if not kwargs and len(args) == handler._nargs and not handler.params:
                return apply(handler, args, {})  # the common positional call, no binding needed
            arrays, params = handler.bind(tuple(args), dict(kwargs), numpy=True)
            return handler(*arrays, **params)
        return handler(*args, **kwargs)

    # -- conversions that would lose the derivative --------------------------
    def _no(self, what: str) -> TypeError:
        return refuse(
            f"tensorjac: {what} of a traced array would lose its derivative. Keep it an array (e.g. use "
            "x.sum() rather than float(x.sum()) in arithmetic), or use tj.fd.jacobian(f, x)."
        )

    def __float__(self) -> float:
        raise self._no("float() (also used when writing it into a plain numpy array, a[i] = x)")

    def __int__(self) -> int:
        raise self._no("int()")

    def __complex__(self) -> complex:
        raise self._no("complex()")

    def __index__(self) -> int:
        raise self._no("using it as an index (__index__)")

    def item(self, *args: Any) -> Any:
        raise self._no(".item()")

    def tolist(self) -> Any:
        raise self._no(".tolist()")

    def tobytes(self, *a: Any, **k: Any) -> bytes:
        raise self._no(".tobytes()")

    def view(self, *a: Any, **k: Any) -> Any:
        raise self._no(".view()")

    def __bool__(self) -> bool:
        return bool(self._get().value)


    def __repr__(self) -> str:
        return f"traced {np.array_repr(self._node.value)}"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return format(self._node.value, spec)

    # -- attributes -------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self._node.value.shape

    @property
    def ndim(self) -> int:
        return self._node.value.ndim

    @property
    def size(self) -> int:
        return self._node.value.size

    @property
    def dtype(self) -> np.dtype:
        return self._node.value.dtype

    @property
    def itemsize(self) -> int:
        return self._node.value.itemsize

    @property
    def nbytes(self) -> int:
        return self._node.value.nbytes

    @property
    def T(self) -> Any:
        return np.transpose(self)

    @property
    def mT(self) -> Any:
        return np.swapaxes(self, -1, -2)

    @property
    def real(self) -> Any:
        return np.real(self)

    @property
    def imag(self) -> Any:
        return np.imag(self)

    @property
    def flat(self) -> Any:
        raise self._no(".flat iteration")

    # -- operators --------------------------------------------------------
    __add__ = _binary(np.add)
    __radd__ = _binary(np.add, True)
    __sub__ = _binary(np.subtract)
    __rsub__ = _binary(np.subtract, True)
    __mul__ = _binary(np.multiply)
    __rmul__ = _binary(np.multiply, True)
    __truediv__ = _binary(np.true_divide)
    __rtruediv__ = _binary(np.true_divide, True)
    __floordiv__ = _binary(np.floor_divide)
    __rfloordiv__ = _binary(np.floor_divide, True)
    __mod__ = _binary(np.remainder)
    __rmod__ = _binary(np.remainder, True)
    __pow__ = _binary(np.power)
    __rpow__ = _binary(np.power, True)
    __matmul__ = _binary(np.matmul)
    __rmatmul__ = _binary(np.matmul, True)
    __lt__ = _binary(np.less)
    __le__ = _binary(np.less_equal)
    __gt__ = _binary(np.greater)
    __ge__ = _binary(np.greater_equal)
    __eq__ = _binary(np.equal)  # type: ignore[assignment]
    __ne__ = _binary(np.not_equal)  # type: ignore[assignment]
    __iadd__ = _inplace(np.add)
    __isub__ = _inplace(np.subtract)
    __imul__ = _inplace(np.multiply)
    __itruediv__ = _inplace(np.true_divide)
    __ipow__ = _inplace(np.power)
    __imatmul__ = _inplace(np.matmul)

    def __neg__(self) -> Any:
        return np.negative(self)

    def __pos__(self) -> Any:
        return np.positive(self)

    def __abs__(self) -> Any:
        return np.absolute(self)

    def __copy__(self) -> Any:
        return self.copy()

    def __deepcopy__(self, memo: Any) -> Any:
        return self.copy()

    # -- methods (each is the numpy function of the same name) ---------------
    def sum(self, *a: Any, **k: Any) -> Any:
        return np.sum(self, *a, **k)

    def mean(self, *a: Any, **k: Any) -> Any:
        return np.mean(self, *a, **k)

    def var(self, *a: Any, **k: Any) -> Any:
        return np.var(self, *a, **k)

    def std(self, *a: Any, **k: Any) -> Any:
        return np.std(self, *a, **k)

    def prod(self, *a: Any, **k: Any) -> Any:
        return np.prod(self, *a, **k)

    def max(self, *a: Any, **k: Any) -> Any:
        return np.max(self, *a, **k)

    def min(self, *a: Any, **k: Any) -> Any:
        return np.min(self, *a, **k)

    def ptp(self, *a: Any, **k: Any) -> Any:
        return np.ptp(self, *a, **k)

    def cumsum(self, *a: Any, **k: Any) -> Any:
        return np.cumsum(self, *a, **k)

    def cumprod(self, *a: Any, **k: Any) -> Any:
        return np.cumprod(self, *a, **k)

    def argmax(self, *a: Any, **k: Any) -> Any:
        return np.argmax(self, *a, **k)

    def argmin(self, *a: Any, **k: Any) -> Any:
        return np.argmin(self, *a, **k)

    def argsort(self, *a: Any, **k: Any) -> Any:
        return np.argsort(self, *a, **k)

    def nonzero(self) -> Any:
        return np.nonzero(self)

    def all(self, *a: Any, **k: Any) -> Any:
        return np.all(self, *a, **k)

    def any(self, *a: Any, **k: Any) -> Any:
        return np.any(self, *a, **k)

    def reshape(self, *shape: Any, **k: Any) -> Any:
        if len(shape) == 1 and not isinstance(shape[0], numbers.Integral):
            shape = shape[0]
        return np.reshape(self, shape, **k)

    def transpose(self, *axes: Any) -> Any:
        ax: Any = axes
        if len(axes) == 1 and (axes[0] is None or not isinstance(axes[0], numbers.Integral)):
            ax = axes[0]
        return np.transpose(self, ax or None)

    def swapaxes(self, a: int, b: int) -> Any:
        return np.swapaxes(self, a, b)

    def squeeze(self, axis: Any = None) -> Any:
        return np.squeeze(self, axis)

    def ravel(self, order: str = "C") -> Any:
        return np.ravel(self, order)

    def flatten(self, order: str = "C") -> Any:
        return np.ravel(self, order).copy()

    def diagonal(self, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Any:
        return np.diagonal(self, offset, axis1, axis2)

    def trace(self, *a: Any, **k: Any) -> Any:
        return np.trace(self, *a, **k)

    def dot(self, b: Any) -> Any:
        return np.dot(self, b)

    def clip(self, *a: Any, **k: Any) -> Any:
        return np.clip(self, *a, **k)

    def repeat(self, *a: Any, **k: Any) -> Any:
        return np.repeat(self, *a, **k)

    def take(self, *a: Any, **k: Any) -> Any:
        return np.take(self, *a, **k)

    def round(self, *a: Any, **k: Any) -> Any:
        return np.round(self, *a, **k)

    def conj(self) -> Any:
        return np.conjugate(self)

    conjugate = conj

    def copy(self, order: str = "K") -> Any:
        return copy(self)

    def astype(self, dtype: Any, *a: Any, **k: Any) -> Any:
        dt = np.dtype(dtype)
        if dt.kind in "fc":
            return cast(self, dtype=dt.newbyteorder("="))
        return self._get().value.astype(dt)  # integers/bools: piecewise constant, a constant

    def sort(self, axis: int = -1, kind: Any = None, order: Any = None) -> None:
        self._assign(np.sort(self, axis=axis, kind=kind, order=order), "sort")

    def fill(self, value: Any) -> None:
        self._assign(self._trace.constant(np.full(self.shape, value, self.dtype)), "fill")


class TracerND(Tracer):
    """A traced array of rank >= 1: it also supports indexing, len() and iteration.

    (0-d traced values have no ``__getitem__``, so numpy does not mistake them for
    sequences: ``a[0] = x.sum()`` then raises TypeError instead of numpy's ValueError.)
    """

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._node.value)

    def __iter__(self) -> Any:
        for i in range(len(self)):
            yield self[i]

    # -- indexing ---------------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        key = _unwrap(key)
        res = getitem(self, key=key)
        return _view_of(res, self, key, writable=is_basic_key(key))

    def __setitem__(self, key: Any, value: Any) -> None:
        self._setitem(key, value)


def make(trace: Trace, node: Node) -> Tracer:
    return (TracerND if node.value.ndim else Tracer)(trace, node)


def _as_traced(trace: Trace, x: Any) -> Tracer:
    if isinstance(x, Tracer):
        return x
    return trace.constant(x)


def _check_ufunc_kwargs(ufunc: np.ufunc, kwargs: dict[str, Any]) -> None:
    for k, v in kwargs.items():
        if k == "where" and v is True:
            continue
        if k in ("casting", "order", "subok") or (k in ("dtype", "signature") and v is None):
            continue
        raise refuse(
            f"tensorjac: numpy.{ufunc.__name__}(..., {k}={v!r}) is not supported on traced arrays; "
            "drop the keyword, or use tj.fd.jacobian"
        )


def make_constant(trace_from: Any, value: Any) -> Any:
    """A constant traced array on the same tape as ``trace_from`` (used by zeros_like & co)."""
    for a in (trace_from if isinstance(trace_from, (list, tuple)) else (trace_from,)):
        if isinstance(a, Tracer):
            return a._trace.constant(value)
    return value
