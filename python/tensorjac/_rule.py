"""Ops: one rule per op, the registry, and the closed-form Jacobian of a single op.

An op is a value function, a shape rule and a :class:`~tensorjac._deriv.Deriv`
per argument.  Every layout of its dense Jacobian, its VJP and JVP, and its
place in the chain rule of composite functions come from that one rule.  The
same rule serves the numpy function it implements: an op declares its numpy
aliases (``numpy=(np.tanh,)``), and a numpy call on a traced array inside a
function given to ``tj.jacobian`` looks the op up in :data:`NUMPY`.

Ops may take static parameters besides their array arguments (``axis``,
``keepdims``, ...): ``tj.sum(X, axis=1)``.  Parameters are not differentiated.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _ad, _config
from ._deriv import Deriv
from ._dtypes import as_array, float_dtype
from ._expand import build_expand_plan
from ._layout import ALL_LAYOUTS, check_out, layout_placement
from ._layout import prod as _prod
from ._sparse import sparse_jacobian
from ._terms import Algebra, rule_terms

__all__ = ["NUMPY", "REGISTRY", "UFUNCS", "Op", "implements", "op_jacobian", "op_product"]

_ndarray = np.ndarray

REGISTRY: dict[str, Op] = {}  # every rule, public or not
NUMPY: dict[Callable[..., Any], Any] = {}  # numpy function -> the op (or composite) implementing it
UFUNCS: dict[np.ufunc, Op] = {}  # numpy ufunc -> the op implementing it

_NOVALUE = getattr(np, "_NoValue", None)
# numpy keywords an op accepts only at their default (they change nothing then)
_NUMPY_DEFAULTS: dict[str, tuple[Any, ...]] = {
    "dtype": (None,),
    "out": (None,),
    "initial": (_NOVALUE,),
    "where": (_NOVALUE, True),
    "order": ("K", "C", "A", None),
    "casting": ("same_kind",),
    "subok": (True,),
    "signature": (None,),
    "copy": (None, True, False),
    "like": (None,),
}


def implements(*funcs: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a composite handler: a numpy function written with other numpy calls.

    Inside a differentiated function, ``func(*args, **kwargs)`` on traced arrays
    runs ``handler(*args, **kwargs)``, whose numpy calls are traced in turn.
    """

    def deco(handler: Callable[..., Any]) -> Callable[..., Any]:
        for f in funcs:
            if f in NUMPY:
                raise AssertionError(f"{f} is implemented twice")
            NUMPY[f] = handler
        return handler

    return deco


def op_dtype(op: Op, arrs: Sequence[np.ndarray]) -> np.dtype:
    """The op's dtype: the package's one rule, plus the holomorphy check for complex input."""
    dts = [float_dtype(a.dtype, f"{op.name}: argument {name!r}") for name, a in zip(op.arg_names(len(arrs)), arrs)]
    dt = np.result_type(*dts).newbyteorder("=") if dts else np.dtype(np.float64)
    if dt.kind == "c" and not op.holomorphic:
        raise TypeError(
            f"{op.name} is not holomorphic, so it has no complex Jacobian; "
            f"got complex input ({dt}). Pass real arrays, or use tj.fd.jacobian on real and imaginary parts."
        )
    return dt


@dataclass(slots=True)  # slotted: attribute reads are on the per-call hot path
class _Plan:
    """A validated, cached (op, wrt, layout, shapes, dtypes, params): everything a call needs."""

    dtype: np.dtype
    cast: bool  # some argument must be converted to dtype first
    shape: tuple[int, ...]  # result shape
    nbytes: int
    core: Any  # _core.ExpandPlan
    factors: Callable[..., tuple[np.ndarray, ...]]
    deriv: Deriv
    out_shape: tuple[int, ...]
    in_shape: tuple[int, ...]
    params: dict[str, Any]


# Plan-cache keys: (wrt, layout, shape0, dtype0, shape1, dtype1, ...).  Spelled
# out per arity because this is on the per-call hot path.
def _key_any(w: Any, l: Any, a: Sequence[np.ndarray]) -> tuple:
    return (w, l, *[x for arr in a for x in (arr.shape, arr.dtype)])


_KEYS: dict[int, Callable[[Any, Any, Sequence[np.ndarray]], tuple]] = {
    1: lambda w, l, a: (w, l, a[0].shape, a[0].dtype),
    2: lambda w, l, a: (w, l, a[0].shape, a[0].dtype, a[1].shape, a[1].dtype),
    3: lambda w, l, a: (w, l, a[0].shape, a[0].dtype, a[1].shape, a[1].dtype, a[2].shape, a[2].dtype),
}


class Op:
    """A tensorjac op: call it for its value; ``.jacobian``, ``.vjp`` and ``.jvp`` for derivatives.

    Every op is one rule: a value function, a shape rule and a derivative
    rule returning a :class:`~tensorjac.Deriv` for each argument.  Ops work
    on numpy arrays and, unchanged, inside functions given to
    :func:`tensorjac.jacobian`.  The catalogue's ops (``tj.inv``, ...) are
    instances; ``tj.CATALOGUE`` maps their names to them.

    Parameters
    ----------
    name : str
        The op's name (``repr``, error messages, the registry).
    argnames : tuple of str
        Names of the array arguments (``wrt="X"`` refers to them).
    value : callable
        ``value(*arrays, **params)``: the op's value.
    shape : callable
        ``shape(*shapes, **params)``: the output shape; raises ValueError
        (naming the arguments and shapes) for shapes that do not fit.
    deriv : callable
        ``deriv(wrt, *shapes, **params)``: the :class:`~tensorjac.Deriv` of
        the output in argument ``wrt`` for these shapes.
    params : dict, optional
        Static keyword parameters and their defaults (``axis``, ...); they
        are not differentiated.
    holomorphic : bool, default True
        False refuses complex input with a TypeError.
    elementwise : bool, default False
        The Jacobian is diagonal: ``layout="diagonal"`` is allowed.
    doc : str
        The op's docstring (``help(op)``, the docs' op catalogue).
    register : bool, default True
        Add the op to the package registry, and its ``numpy=`` functions to
        the rules used inside traced functions.  User-defined ops should
        pass ``register=False``.

    The other keywords (``numpy``, ``numpy_extra``, ``example``,
    ``variadic``, ``normalize``, ``public``, ``view``) are used by the
    package's own rules.

    Examples
    --------
    >>> import numpy as np, tensorjac as tj
    >>> isinstance(tj.inv, tj.Op), tj.inv
    (True, <tensorjac op inv(X)>)
    >>> X = np.array([[2., 0.], [0., 4.]])
    >>> tj.inv.jacobian(X, layout="matrix").shape
    (4, 4)

    A user-defined op: 2 X, whose Jacobian is 2 δ(i, k).

    >>> double = tj.Op("double", ("X",), lambda X: 2 * X, lambda x: x,
    ...                lambda wrt, x: tj.Deriv("i", "i", [(2, ())]),
    ...                elementwise=True, register=False)
    >>> double(np.array([1., 2.]))
    array([2., 4.])
    >>> double.jacobian(np.array([1., 2.]), layout="diagonal")
    array([2., 2.])
    >>> tj.jacobian(lambda x: double(x) + x, np.ones(2))     # inside a traced function too
    array([[3., 0.],
           [0., 3.]])
    """

    _MAX_PLANS = 512

    def __init__(
        self,
        name: str,
        argnames: tuple[str, ...],
        value: Callable[..., Any],
        shape: Callable[..., tuple[int, ...]],
        deriv: Callable[..., Deriv],
        *,
        params: dict[str, Any] | None = None,
        holomorphic: bool = True,
        elementwise: bool = False,
        doc: str = "",
        numpy: Sequence[Any] = (),
        numpy_extra: Sequence[str] = (),
        example: Callable[[np.random.Generator], tuple] | None = None,
        variadic: bool = False,
        normalize: Callable[..., dict[str, Any]] | None = None,
        public: bool = True,
        register: bool = True,
        view: bool = False,
    ) -> None:
        self.name = name
        self.__name__ = name
        self.__qualname__ = name
        self.argnames = argnames
        self.params = dict(params or {})
        self.elementwise = elementwise  # its Jacobian is diagonal: layout="diagonal" allowed
        self.holomorphic = holomorphic
        self.variadic = variadic
        self.public = public
        self.view = view  # numpy returns a view of the first argument (in-place writes must follow it)
        self.example = example
        self._value = value
        self._shape = shape
        self._deriv = deriv
        self._normalize = normalize
        self._nargs = -1 if variadic else len(argnames)
        self._keyfn = _KEYS.get(self._nargs, _key_any)
        self._plans: dict[tuple, _Plan] = {}
        self._derivs: dict[tuple, Deriv] = {}
        self._numpy_extra = tuple(numpy_extra)
        # tensorjac's own signature takes parameters by keyword only (tj.sum(X, axis=1)), so that a
        # surplus array argument is an arity error; numpy's allows them by position (np.sum(x, 1))
        kind, kw = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY
        if variadic:
            ps = [inspect.Parameter(argnames[0], inspect.Parameter.VAR_POSITIONAL)]
        else:
            ps = [inspect.Parameter(n, kind) for n in argnames]
        own = [inspect.Parameter(p, kw, default=d) for p, d in self.params.items()]
        self.__signature__ = inspect.Signature(ps + own)
        positional = [inspect.Parameter(p, kw if variadic else kind, default=d) for p, d in self.params.items()]
        extra = [inspect.Parameter(p, kw, default=_NUMPY_DEFAULTS[p][0]) for p in self._numpy_extra]
        self._numpy_signature = inspect.Signature(ps + positional + extra)
        # each op is an instance of its own subclass, so help(tj.<op>) shows its docs and methods
        self.__class__ = type(name, (Op,), {"__doc__": doc or Op.__doc__, "__module__": "tensorjac"})
        if register:
            if name in REGISTRY:
                raise ValueError(
                    f"an op named {name!r} is already registered; choose another name, or pass register=False "
                    "for an op that is not part of the registry"
                )
            REGISTRY[name] = self
            for f in numpy:
                if isinstance(f, np.ufunc):
                    UFUNCS[f] = self
                else:
                    NUMPY[f] = self

    def __repr__(self) -> str:
        return f"<tensorjac op {self.name}{self.__signature__}>"

    def __reduce__(self) -> str | tuple[Any, ...]:
        return (_registered, (self.name,))

    def arg_names(self, n: int) -> tuple[str, ...]:
        if self.variadic:
            return tuple(f"{self.argnames[0]}[{i}]" for i in range(n))
        return self.argnames

    # -- argument handling ---------------------------------------------------
    def bind(self, args: tuple, kwargs: dict[str, Any], numpy: bool = False) -> tuple[tuple, dict[str, Any]]:
        """Split a call into (array arguments, parameters), as the op's signature says."""
        if not self.variadic and len(args) == len(self.argnames) and kwargs.keys() <= self.params.keys():
            # the common call: the arrays by position, the op's own parameters by keyword
            return tuple(args), {**self.params, **kwargs}
        sig = self._numpy_signature if numpy else self.__signature__
        try:
            b = sig.bind(*args, **kwargs)
        except TypeError as e:
            n = "any number of" if self.variadic else str(len(self.argnames))
            raise TypeError(
                f"{self.name}{self.__signature__} takes {n} array argument(s); got {len(args)} positional "
                f"and {sorted(kwargs)} by keyword: {e}"
            ) from None
        b.apply_defaults()
        a = b.arguments
        if self.variadic:
            arrays = tuple(a[self.argnames[0]])
        else:
            arrays = tuple(a[n] for n in self.argnames)
        params = {p: a[p] for p in self.params}
        for p in self._numpy_extra if numpy else ():
            if not any(a[p] is d or (type(a[p]) is type(d) and a[p] == d) for d in _NUMPY_DEFAULTS[p]):
                raise TypeError(
                    f"tensorjac: {self.name}(..., {p}={a[p]!r}) is not supported inside a differentiated "
                    "function; leave it at its default, or use tj.fd.jacobian"
                )
        return arrays, params

    def _arrays(self, args: tuple) -> tuple[np.ndarray, ...]:
        if not self.variadic and len(args) != len(self.argnames):
            raise TypeError(
                f"{self.name}() takes {len(self.argnames)} array argument(s) "
                f"({', '.join(self.argnames)}), got {len(args)}"
            )
        return tuple(a if type(a) is _ndarray else _op_input(self, args, a) for a in args)

    def normalize(self, shapes: Sequence[tuple[int, ...]], params: dict[str, Any]) -> dict[str, Any]:
        """Canonical, hashable parameters for these shapes (validated)."""
        if not self.params:
            return params
        if len(params) != len(self.params):
            params = {**self.params, **params}
        if self._normalize is None:
            return params
        return self._normalize(tuple(shapes), **params)

    def out_shape(self, shapes: Sequence[tuple[int, ...]], params: dict[str, Any]) -> tuple[int, ...]:
        return tuple(self._shape(*shapes, **params))

    def value(self, arrays: Sequence[Any], params: dict[str, Any]) -> Any:
        return self._value(*arrays, **params)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs or len(args) != self._nargs:
            args, params = self.bind(args, kwargs)
        else:
            params = {}
        for a in args:
            apply = getattr(type(a), "__tj_apply__", None)
            if apply is not None:  # a traced array: record the op (tensorjac._trace)
                return apply(self, args, params)
        arrs = self._arrays(args)
        dt = op_dtype(self, arrs)
        params = self.normalize([a.shape for a in arrs], params)
        self.out_shape([a.shape for a in arrs], params)  # validates shapes with a clear message
        return np.asarray(self._value(*self._cast(arrs, dt), **params))

    def _cast(self, arrs: Sequence[np.ndarray], dt: np.dtype) -> list[np.ndarray]:
        return [a if a.dtype == dt else a.astype(dt) for a in arrs]

    def wrt_index(self, wrt: Any, nargs: int | None = None) -> int:
        names = self.arg_names(nargs if nargs is not None else len(self.argnames))
        n = len(names)
        if isinstance(wrt, str):
            if wrt not in names:
                raise ValueError(f"{self.name}: wrt={wrt!r} is not one of its arguments {names}")
            return names.index(wrt)
        if isinstance(wrt, bool) or not isinstance(wrt, (int, np.integer)):
            raise TypeError(f"{self.name}: wrt must be an argument index or name, got {wrt!r}")
        if not -n <= wrt < n:
            raise IndexError(f"{self.name}: wrt={wrt} is out of range for {n} argument(s) ({', '.join(names)})")
        return int(wrt) % n

    def deriv(self, wrt: int, shapes: Sequence[tuple[int, ...]], params: dict[str, Any] | None = None) -> Deriv:
        """The rule's Deriv for argument ``wrt`` at these shapes and (normalized) parameters; cached."""
        params = params or {}
        try:
            key: tuple | None = (wrt, tuple(shapes), tuple(params.items()))
            hash(key)
        except TypeError:
            key = None
        if key is not None:
            d = self._derivs.get(key)
            if d is not None:
                return d
        d = self._deriv(wrt, *shapes, **params)
        if key is not None:
            if len(self._derivs) > self._MAX_PLANS:
                self._derivs.clear()
            self._derivs[key] = d
        return d

    def _plan(self, arrs: Sequence[np.ndarray], wrt: Any, layout: Any, params: dict[str, Any]) -> _Plan:
        """Validate once per (wrt, layout, shapes, dtypes, params) and cache the expand plan.

        The cache is keyed by the validated argument index, so ``wrt=True`` or
        ``wrt=1.0`` can never hit an entry made for ``wrt=1``.
        """
        w = self.wrt_index(wrt, len(arrs))
        if not isinstance(layout, str) or layout not in ALL_LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(ALL_LAYOUTS)}")
        key = self._keyfn(w, layout, arrs)
        if params:
            key = key + tuple(params.items())
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        dt = op_dtype(self, arrs)
        shapes = [a.shape for a in arrs]
        nparams = self.normalize(shapes, params)
        out_shape = self.out_shape(shapes, nparams)
        in_shape = arrs[w].shape
        d = self.deriv(w, shapes, nparams)
        if layout == "diagonal" and not (d.is_diagonal and out_shape == in_shape):
            raise ValueError(
                f"layout='diagonal' is only for elementwise Jacobians; {self.name} "
                f"with these shapes is not one (use one of tensor, gradient, numerator, matrix, vec)"
            )
        shape, _, _ = layout_placement(layout, out_shape, in_shape)
        if _prod(shape) * dt.itemsize >= 1 << 62:  # beyond any budget, and beyond int64 strides
            _config.check_budget(shape, dt.itemsize)
        shape, core = build_expand_plan(d, layout, out_shape, in_shape, dt)
        factors = d.factors
        if d.uses_value:
            base = d.factors

            def factors(*a: np.ndarray) -> tuple[np.ndarray, ...]:
                return tuple(base(*a, value=None))

        plan = _Plan(
            dtype=dt,
            cast=any(a.dtype != dt for a in arrs),
            shape=shape,
            nbytes=_prod(shape) * dt.itemsize,
            core=core,
            factors=factors,
            deriv=d,
            out_shape=out_shape,
            in_shape=in_shape,
            params=nparams,
        )
        if len(self._plans) > self._MAX_PLANS:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    def jacobian(
        self,
        *args: Any,
        wrt: int | str = 0,
        layout: str = "tensor",
        out: np.ndarray | None = None,
        num_threads: int | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Closed-form Jacobian ``T[m..., n...] = d op(*args)[m...] / d args[wrt][n...]``.

        ``layout`` is one of "tensor" (default, ``out.shape + in.shape``),
        "gradient", "numerator", "matrix", "vec" (see the layouts page of the
        docs) or, for elementwise Jacobians, "diagonal".  ``out=`` is filled in
        place and returned; its shape and dtype must match exactly.
        Parameters of the op (e.g. ``axis=``) are passed as keywords.
        The same as ``tj.jacobian(op, *args, ...)``.

        Examples
        --------
        >>> import numpy as np, tensorjac as tj
        >>> tj.sum.jacobian(np.ones((2, 3)), axis=0).shape
        (3, 2, 3)
        """
        return op_jacobian(self, *args, wrt=wrt, layout=layout, out=out, num_threads=num_threads, **kwargs)

    def vjp(self, *args: Any, cotangent: Any, wrt: int | str = 0, num_threads: int | None = None,
            **kwargs: Any) -> np.ndarray:
        """Batched vector-Jacobian product: cotangent ``(*batch, *out.shape)`` -> ``(*batch, *in.shape)``.

        ``res[b, n...] = sum_m cotangent[b, m...] J[m..., n...]``, without building J.

        Examples
        --------
        >>> import numpy as np, tensorjac as tj
        >>> X = np.array([[2., 0.], [0., 4.]])
        >>> tj.inv.vjp(X, cotangent=np.eye(2))               # -inv(X).T @ G @ inv(X).T
        array([[-0.25  ,  0.    ],
               [ 0.    , -0.0625]])
        """
        return op_product(self, args, kwargs, cotangent, wrt, num_threads, "vjp")

    def jvp(self, *args: Any, tangent: Any, wrt: int | str = 0, num_threads: int | None = None,
            **kwargs: Any) -> np.ndarray:
        """Batched Jacobian-vector product: tangent ``(*batch, *in.shape)`` -> ``(*batch, *out.shape)``.

        ``res[b, m...] = sum_n J[m..., n...] tangent[b, n...]``, without building J.

        Examples
        --------
        >>> import numpy as np, tensorjac as tj
        >>> A, B = np.eye(2), np.array([[1., 2.], [3., 4.]])
        >>> tj.sandwich.jvp(A, np.zeros((2, 2)), B, tangent=np.ones((3, 2, 2)), wrt="X").shape
        (3, 2, 2)
        """
        return op_product(self, args, kwargs, tangent, wrt, num_threads, "jvp")


def _registered(name: str) -> Op:
    return REGISTRY[name]


def _op_input(op: Op, args: tuple, a: Any) -> np.ndarray:
    """One array argument of an op that is not a numpy array: a number, a list, another library's tensor."""
    i = next(k for k, b in enumerate(args) if b is a)
    names = op.arg_names(len(args))
    return as_array(a, f"{op.name}: argument {names[i]!r}" if i < len(names) else f"{op.name}: argument {i}")


def _op_args(op: Op, args: tuple, kwargs: dict[str, Any]) -> tuple[list[np.ndarray], dict[str, Any]]:
    if kwargs or len(args) != op._nargs:
        args, params = op.bind(args, kwargs)
    else:
        params = {}
    if op._nargs >= 0 and len(args) != op._nargs:
        op._arrays(args)  # raises the arity TypeError
    return [a if type(a) is _ndarray else _op_input(op, args, a) for a in args], params


def op_jacobian(
    op: Op,
    *args: Any,
    wrt: Any = 0,
    layout: str = "tensor",
    out: np.ndarray | None = None,
    num_threads: int | None = None,
    **kwargs: Any,
) -> Any:
    """Closed-form Jacobian of one op (the hot path of ``tj.jacobian(op, ...)``)."""
    if kwargs or len(args) != op._nargs:
        arrs, params = _op_args(op, args, kwargs)
    else:  # the common case: positional arrays, no parameters
        arrs, params = [a if type(a) is _ndarray else _op_input(op, args, a) for a in args], {}
    if isinstance(wrt, tuple):
        if out is not None:
            raise ValueError("out= is not supported with a tuple wrt; call once per argument")
        return tuple(
            op_jacobian(op, *arrs, wrt=w, layout=layout, num_threads=num_threads, **params) for w in wrt
        )
    # The hot path: a cached plan, one factor evaluation, one kernel call.
    plan = None
    if type(wrt) is int and wrt >= 0 and not params:  # anything else is validated first
        try:
            plan = op._plans.get(op._keyfn(wrt, layout, arrs))
        except TypeError:  # unhashable layout
            pass
    if plan is None:
        plan = op._plan(arrs, wrt, layout, params)
    if plan.cast:
        arrs = op._cast(arrs, plan.dtype)
    if out is None:
        if plan.nbytes > _config._budget:
            _config.check_budget(plan.shape, plan.dtype.itemsize)
    else:
        check_out(out, plan.shape, plan.dtype, arrs)
    res, finite = plan.core(  # allocates when out is None
        out, plan.factors(*arrs), 0 if num_threads is None else _config.resolve_threads(num_threads)
    )
    if not finite:
        _config.warn_nonfinite(f"tj.jacobian({op.name})", stacklevel=4)
    return res


def op_sparse(op: Op, args: Sequence[Any], kwargs: dict[str, Any], wrt: Any, layout: str, fmt: str,
              num_threads: int | None = None) -> Any:
    """One op's Jacobian as a scipy.sparse array (``format=``): its rule's terms, never the dense result."""
    arrs, params = _op_args(op, tuple(args), kwargs)
    if isinstance(wrt, tuple):
        return tuple(op_sparse(op, arrs, params, w, layout, fmt, num_threads) for w in wrt)
    plan = op._plan(arrs, wrt, "tensor", params)  # validates wrt, shapes and dtypes (cached)
    if plan.cast:
        arrs = op._cast(arrs, plan.dtype)
    alg = Algebra()
    terms = rule_terms(alg, plan.deriv, plan.factors(*arrs), plan.out_shape, plan.in_shape)
    res, finite = sparse_jacobian(alg, terms, plan.out_shape, plan.in_shape, layout, plan.dtype, fmt,
                                  num_threads=_config.resolve_threads(num_threads))
    if not finite:
        _config.warn_nonfinite(f"tj.jacobian({op.name})", stacklevel=4)
    return res


def op_product(op: Op, args: tuple, kwargs: dict[str, Any], vec: Any, wrt: Any, num_threads: int | None,
               mode: str) -> Any:
    """Batched VJP or JVP of one op (``tj.vjp(op, ...)`` / ``tj.jvp(op, ...)``)."""
    nt = _config.resolve_threads(num_threads)
    arrs, params = _op_args(op, args, kwargs)
    if isinstance(wrt, tuple):
        if mode == "vjp":
            return tuple(op_product(op, tuple(arrs), params, vec, w, num_threads, mode) for w in wrt)
        if not isinstance(vec, (tuple, list)) or len(vec) != len(wrt):
            raise ValueError(f"{op.name}.jvp: with wrt={wrt!r}, tangent must be a tuple of {len(wrt)} arrays")
        parts = [op_product(op, tuple(arrs), params, v, w, num_threads, mode) for v, w in zip(vec, wrt)]
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        return total
    plan = op._plan(arrs, wrt, "tensor", params)  # validates wrt, shapes and dtypes (cached)
    d, out_shape, in_shape = plan.deriv, plan.out_shape, plan.in_shape
    vname = "cotangent" if mode == "vjp" else "tangent"
    V = as_array(vec, f"{op.name}.{mode}: {vname}")
    src_shape, dst_shape = (out_shape, in_shape) if mode == "vjp" else (in_shape, out_shape)
    k = len(src_shape)
    if V.ndim < k or V.shape[V.ndim - k :] != src_shape:
        side = "output" if mode == "vjp" else f"input {op.arg_names(len(arrs))[op.wrt_index(wrt, len(arrs))]!r}"
        raise ValueError(
            f"{op.name}.{mode}: {vname} has shape {V.shape}, but its trailing axes must equal "
            f"the {side} shape {src_shape} (after any leading batch axes): expected "
            f"(*batch, {', '.join(map(str, src_shape))}{',' if len(src_shape) == 1 else ''})"
        )
    dt = plan.dtype
    if V.dtype != dt:
        dt = np.result_type(dt, float_dtype(V.dtype, f"{op.name}.{mode}: {vname}")).newbyteorder("=")
    batch = V.shape[: V.ndim - k]
    nb = _prod(batch)
    Vf = V.astype(dt, copy=False).reshape((nb, *src_shape))
    cargs = op._cast(arrs, plan.dtype) if plan.cast else list(arrs)
    R = _ad.apply_deriv(d, mode, cargs, Vf, out_shape, in_shape, dt, nt)
    R = R.reshape(batch + dst_shape)
    if np.may_share_memory(R, V):  # e.g. transpose's VJP is a view: never alias the caller's array
        R = R.copy()
    if not np.isfinite(R).all():
        _config.warn_nonfinite(f"tj.{mode}({op.name})", stacklevel=4)
    return R
