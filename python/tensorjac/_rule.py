"""The op machinery: every op is one rule, its Jacobian a short sum of terms.

A term is a product of small factor arrays over named index letters, times
Kronecker deltas.  A delta is written by reusing a letter: in
``Deriv(out="ij", inp="ij", terms=[(1, ("ij",))])`` (Hadamard with W) the
output letters i, j and the input letters i, j are the same variables, so the
Jacobian is ``W[i,j] δ(i,k) δ(j,l)``.  Output axes may be fused from several
letters, written in parentheses: kron's output is ``"(ik)(jl)"``.

From one ``Deriv`` the package derives
  * the dense Jacobian in any layout (the C++ expand kernel, written directly
    with strides: a layout only decides where each letter's stride goes);
  * VJPs and JVPs as einsum contractions of the same terms.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _config, _core
from ._layout import ALL_LAYOUTS, LAYOUTS, check_out, layout_placement
from ._layout import prod as _prod

_ndarray = np.ndarray
_asarray = np.asarray

LETTERS = string.ascii_lowercase


def parse_axes(spec: str) -> tuple[str, ...]:
    """``"ij"`` -> ("i", "j"); ``"(ik)(jl)"`` -> ("ik", "jl"); ``"()"`` is a size-1 axis."""
    axes: list[str] = []
    group: list[str] | None = None
    for ch in spec:
        if ch == "(":
            group = []
        elif ch == ")":
            assert group is not None
            axes.append("".join(group))
            group = None
        elif ch == " ":
            continue
        elif group is not None:
            group.append(ch)
        else:
            axes.append(ch)
    return tuple(axes)


class Deriv:
    """The Jacobian of one op with respect to one argument, for fixed shapes.

    out, inp : axis specs of F's and X's axes (see :func:`parse_axes`).
    terms    : ``[(coef, (letters_of_factor_0, letters_of_factor_1, ...)), ...]``;
               the factor arrays are consecutive slots of ``factors(*args)``.
    factors  : callable taking the op's (dtype-resolved) arguments and
               returning every term's factor arrays, flattened in order.
    sizes    : letter sizes that cannot be read off unfused axes.
    vjp, jvp : optional structured formulas ``vjp(G, *args)`` / ``jvp(V, *args)``
               where G is (batch, *out_shape) and V is (batch, *in_shape) with one
               flattened batch axis.  Without them both are einsum contractions
               of ``terms`` (see tensorjac._ad).
    """

    __slots__ = ("factors", "inp", "jvp", "out", "sizes", "terms", "vjp")

    def __init__(
        self,
        out: str,
        inp: str,
        terms: Sequence[tuple[complex, tuple[str, ...]]],
        factors: Callable[..., tuple[np.ndarray, ...]] = lambda *a: (),
        sizes: dict[str, int] | None = None,
        vjp: Callable[..., np.ndarray] | None = None,
        jvp: Callable[..., np.ndarray] | None = None,
    ) -> None:
        self.vjp = vjp
        self.jvp = jvp
        self.out = parse_axes(out)
        self.inp = parse_axes(inp)
        self.terms = tuple((coef, tuple(fs)) for coef, fs in terms)
        self.factors = factors
        self.sizes = dict(sizes or {})

    @property
    def is_diagonal(self) -> bool:
        """True when the Jacobian is δ(m, n) times something: an elementwise rule."""
        return (
            self.out == self.inp
            and all(len(a) == 1 for a in self.out)
            and len(set(self.out)) == len(self.out)
        )

    def letter_sizes(self, out_shape: Sequence[int], in_shape: Sequence[int]) -> dict[str, int]:
        sizes = dict(self.sizes)
        inferred: dict[str, int] = {}
        for axes, shape in ((self.out, out_shape), (self.inp, in_shape)):
            if len(axes) != len(shape):
                raise AssertionError(f"rule declares {len(axes)} axes for shape {tuple(shape)}")
            for ax, n in zip(axes, shape):
                if len(ax) == 1 and ax not in self.sizes:
                    if inferred.setdefault(ax, n) != n:
                        raise AssertionError(f"letter {ax!r} has sizes {inferred[ax]} and {n}")
        sizes.update(inferred)
        for axes, shape in ((self.out, out_shape), (self.inp, in_shape)):
            for ax, n in zip(axes, shape):
                missing = [c for c in ax if c not in sizes]
                if len(missing) == 1:
                    known = 1
                    for c in ax:
                        if c in sizes:
                            known *= sizes[c]
                    sizes[missing[0]] = n // known if known else 0
                elif missing:
                    raise AssertionError(f"fused axis {ax!r}: sizes of {missing} are not given")
        return sizes


def build_expand_plan(
    deriv: Deriv, layout: str, out_shape: tuple[int, ...], in_shape: tuple[int, ...], dtype: np.dtype
) -> tuple[tuple[int, ...], Any]:
    """Turn a Deriv into the C++ ExpandPlan for one layout."""
    shape, out_place, in_place = layout_placement(layout, out_shape, in_shape)
    sizes = deriv.letter_sizes(out_shape, in_shape)
    letters = list(dict.fromkeys("".join(deriv.out) + "".join(deriv.inp)))
    var = {c: i for i, c in enumerate(letters)}
    bindings: list[tuple[int, int, int]] = []
    for axes, places in ((deriv.out, out_place), (deriv.inp, in_place)):
        for ax, place in zip(axes, places):
            if place is None:
                continue
            dim, mult = place
            for c in reversed(ax):  # C order inside a fused axis
                bindings.append((var[c], dim, mult))
                mult *= sizes[c]
    cterms = []
    slot = 0
    for coef, groups in deriv.terms:
        frefs = []
        for g in groups:
            unknown = set(g) - set(var)
            if unknown:
                raise AssertionError(f"factor letters {sorted(unknown)} are not bound to any axis")
            frefs.append((slot, [var[c] for c in g]))
            slot += 1
        cterms.append((complex(coef), [sizes[c] for c in letters], bindings, frefs))
    return shape, _core.ExpandPlan(cterms, list(shape), slot, dtype)


# ----------------------------------------------------------------------------- dtypes


def result_dtype(op: Op, arrs: Sequence[np.ndarray]) -> np.dtype:
    """numpy promotion of the inputs; integers and bools become float64."""
    for name, a in zip(op.argnames, arrs):
        if a.dtype.kind not in "biufc":
            raise TypeError(
                f"{op.name}: argument {name!r} has non-numeric dtype {a.dtype}; "
                "expected float32, float64, complex128 or an integer type"
            )
    dt = np.result_type(*arrs) if arrs else np.dtype(np.float64)
    if dt.kind in "biu":
        return np.dtype(np.float64)
    if dt.kind == "f":
        if dt.itemsize > 8:
            raise TypeError(f"{op.name}: dtype {dt} is not supported (use float32 or float64)")
        return np.dtype(np.float32) if dt.itemsize <= 4 else np.dtype(np.float64)
    if dt.itemsize > 16:
        raise TypeError(f"{op.name}: dtype {dt} is not supported (use complex64 or complex128)")
    if not op.holomorphic:
        raise TypeError(
            f"{op.name} is not holomorphic, so it has no complex Jacobian; "
            f"got complex input ({dt}). Pass real arrays."
        )
    return dt


@dataclass(slots=True)  # slotted: attribute reads are on the per-call hot path
class _Plan:
    """A validated, cached (op, wrt, layout, shapes, dtypes): everything a call needs."""

    dtype: np.dtype
    cast: bool  # some argument must be converted to dtype first
    shape: tuple[int, ...]  # result shape
    nbytes: int
    core: Any  # _core.ExpandPlan
    factors: Callable[..., tuple[np.ndarray, ...]]
    deriv: Deriv
    out_shape: tuple[int, ...]
    in_shape: tuple[int, ...]


# Plan-cache keys: (wrt, layout, shape0, dtype0, shape1, dtype1, ...).  Spelled
# out per arity because this is on the per-call hot path (~0.3 us cheaper than
# a comprehension).
def _key_any(w: Any, l: Any, a: Sequence[np.ndarray]) -> tuple:
    return (w, l, *[x for arr in a for x in (arr.shape, arr.dtype)])


_KEYS: dict[int, Callable[[Any, Any, Sequence[np.ndarray]], tuple]] = {
    1: lambda w, l, a: (w, l, a[0].shape, a[0].dtype),
    2: lambda w, l, a: (w, l, a[0].shape, a[0].dtype, a[1].shape, a[1].dtype),
    3: lambda w, l, a: (w, l, a[0].shape, a[0].dtype, a[1].shape, a[1].dtype, a[2].shape, a[2].dtype),
}


class Op:
    """A tensorjac op: call it for its value; ``.jacobian`` for closed-form derivatives.

    Ops are defined by a value function, a shape rule and a derivative rule
    returning a :class:`Deriv` for each argument.
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
        holomorphic: bool = True,
        elementwise: bool = False,
        doc: str = "",
    ) -> None:
        self.name = name
        self.elementwise = elementwise  # its Jacobian is diagonal: layout="diagonal" allowed
        self.__name__ = name
        self.__qualname__ = name
        self.argnames = argnames
        self._value = value
        self._shape = shape
        self._deriv = deriv
        self.holomorphic = holomorphic
        self.__doc__ = doc
        self._nargs = len(argnames)
        self._keyfn = _KEYS.get(self._nargs, _key_any)
        self._plans: dict[tuple, _Plan] = {}
        self._dtypes: dict[tuple, tuple[np.dtype, tuple[int, ...]]] = {}

    def __repr__(self) -> str:
        return f"<tensorjac op {self.name}({', '.join(self.argnames)})>"

    # -- argument handling ---------------------------------------------------
    def _arrays(self, args: tuple) -> tuple[np.ndarray, ...]:
        if len(args) != len(self.argnames):
            raise TypeError(
                f"{self.name}() takes {len(self.argnames)} array argument(s) "
                f"({', '.join(self.argnames)}), got {len(args)}"
            )
        return tuple(map(np.asarray, args))

    def _resolve(self, arrs: tuple[np.ndarray, ...]) -> tuple[np.dtype, tuple[int, ...]]:
        """dtype and output shape, validated once per (shapes, dtypes)."""
        key = tuple(a.shape for a in arrs) + tuple(a.dtype for a in arrs)
        hit = self._dtypes.get(key)
        if hit is None:
            dt = result_dtype(self, arrs)
            out_shape = tuple(self._shape(*(a.shape for a in arrs)))
            if len(self._dtypes) > self._MAX_PLANS:
                self._dtypes.clear()
            hit = self._dtypes[key] = (dt, out_shape)
        return hit

    def _cast(self, arrs: Sequence[np.ndarray], dt: np.dtype) -> list[np.ndarray]:
        return [a if a.dtype == dt else a.astype(dt) for a in arrs]

    def __call__(self, *args: Any) -> np.ndarray:
        arrs = self._arrays(args)
        dt, _ = self._resolve(arrs)
        return np.asarray(self._value(*self._cast(arrs, dt)))

    def wrt_index(self, wrt: Any) -> int:
        n = len(self.argnames)
        if isinstance(wrt, str):
            if wrt not in self.argnames:
                raise ValueError(f"{self.name}: wrt={wrt!r} is not one of its arguments {self.argnames}")
            return self.argnames.index(wrt)
        if isinstance(wrt, bool) or not isinstance(wrt, (int, np.integer)):
            raise TypeError(f"{self.name}: wrt must be an argument index or name, got {wrt!r}")
        if not -n <= wrt < n:
            raise IndexError(
                f"{self.name}: wrt={wrt} is out of range for {n} argument(s) ({', '.join(self.argnames)})"
            )
        return int(wrt) % n

    def deriv(self, wrt: int, shapes: Sequence[tuple[int, ...]]) -> Deriv:
        return self._deriv(wrt, *shapes)

    def _key(self, arrs: Sequence[np.ndarray], wrt: Any, layout: Any) -> tuple:
        return self._keyfn(wrt, layout, arrs)

    def _plan(self, arrs: Sequence[np.ndarray], wrt: Any, layout: Any) -> _Plan:
        """Validate once per (wrt, layout, shapes, dtypes) and cache the expand plan.

        The cache is keyed by the validated argument index, so ``wrt=True`` or
        ``wrt=1.0`` can never hit an entry made for ``wrt=1``.
        """
        w = self.wrt_index(wrt)
        if not isinstance(layout, str) or layout not in ALL_LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(ALL_LAYOUTS)}")
        key = self._key(arrs, w, layout)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        if layout == "diagonal" and not self.elementwise:
            raise ValueError(
                f"layout='diagonal' is only for elementwise ops; {self.name} is not one "
                f"(use one of {', '.join(LAYOUTS)})"
            )
        dt, out_shape = self._resolve(tuple(arrs))
        in_shape = arrs[w].shape
        d = self.deriv(w, [a.shape for a in arrs])
        if layout == "diagonal" and not d.is_diagonal:
            raise AssertionError(f"{self.name} is marked elementwise but its rule is not diagonal")
        shape, _, _ = layout_placement(layout, out_shape, in_shape)
        if _prod(shape) * dt.itemsize >= 1 << 62:  # beyond any budget, and beyond int64 strides
            _config.check_budget(shape, dt.itemsize)
        shape, core = build_expand_plan(d, layout, out_shape, in_shape, dt)
        plan = _Plan(
            dtype=dt,
            cast=any(a.dtype != dt for a in arrs),
            shape=shape,
            nbytes=_prod(shape) * dt.itemsize,
            core=core,
            factors=d.factors,
            deriv=d,
            out_shape=out_shape,
            in_shape=in_shape,
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
    ) -> np.ndarray:
        """Closed-form Jacobian of this op with respect to argument ``wrt``.

        ``layout`` is one of "tensor" (default, ``out.shape + in.shape``),
        "gradient", "numerator", "matrix", "vec" (see docs/layouts.md) or,
        for elementwise Jacobians, "diagonal".  ``out=`` is filled in place
        and returned; its shape and dtype must match exactly.
        """
        return jacobian(self, *args, wrt=wrt, layout=layout, out=out, num_threads=num_threads)


def not_an_op(op: Any, what: str) -> TypeError:
    name = getattr(op, "__name__", type(op).__name__)
    return TypeError(
        f"tj.{what} computes closed forms only for tensorjac ops (tj.matmul, tj.inv, ...); "
        f"{name!r} is not one. For an arbitrary Python function use tj.fd.jacobian(f, x)."
    )


def need_op(op: Any, what: str) -> Op:
    """``op`` itself if it is a tensorjac op, else the TypeError pointing to tj.fd."""
    if not isinstance(op, Op):
        raise not_an_op(op, what)
    return op


def jacobian(
    op: Op,
    *args: Any,
    wrt: int | str = 0,
    layout: str = "tensor",
    out: np.ndarray | None = None,
    num_threads: int | None = None,
) -> np.ndarray:
    """Closed-form Jacobian of a tensorjac op; the same as ``op.jacobian(*args, ...)``.

    Returns ``T[m..., n...] = d op(*args)[m...] / d args[wrt][n...]`` in the
    requested layout: "tensor" (default, ``out.shape + in.shape``), "gradient",
    "numerator", "matrix", "vec" (docs/layouts.md), or "diagonal" (``f'(x)``)
    for elementwise Jacobians.  ``out=`` is filled in place and returned; its
    shape and dtype must match exactly.  The dtype follows numpy promotion of
    the inputs, with integers treated as float64.
    """
    if not isinstance(op, Op):
        raise not_an_op(op, "jacobian")
    if len(args) != op._nargs:
        op._arrays(args)  # raises the arity TypeError
    # The hot path: a cached plan, one factor evaluation, one kernel call.
    arrs = [a if type(a) is _ndarray else _asarray(a) for a in args]
    plan = None
    if type(wrt) is int and wrt >= 0:  # the common case; anything else is validated first
        try:
            plan = op._plans.get(op._keyfn(wrt, layout, arrs))
        except TypeError:  # unhashable layout
            pass
    if plan is None:
        plan = op._plan(arrs, wrt, layout)
    if plan.cast:
        arrs = op._cast(arrs, plan.dtype)
    if out is None:
        if plan.nbytes > _config._budget:
            _config.check_budget(plan.shape, plan.dtype.itemsize)
    else:
        check_out(out, plan.shape, plan.dtype, arrs)
    return plan.core(  # allocates when out is None
        out, plan.factors(*arrs), 0 if num_threads is None else _config.resolve_threads(num_threads)
    )


# The products with vectors live in tensorjac._ad; Op delegates to it.
def _op_vjp(self: Op, *args: Any, cotangent: Any, wrt: int | str = 0, num_threads: int | None = None) -> np.ndarray:
    """Batched vector-Jacobian product: cotangent (*batch, *out.shape) -> (*batch, *in.shape)."""
    from . import _ad

    return _ad.vjp(self, *args, cotangent=cotangent, wrt=wrt, num_threads=num_threads)


def _op_jvp(self: Op, *args: Any, tangent: Any, wrt: int | str = 0, num_threads: int | None = None) -> np.ndarray:
    """Batched Jacobian-vector product: tangent (*batch, *in.shape) -> (*batch, *out.shape)."""
    from . import _ad

    return _ad.jvp(self, *args, tangent=tangent, wrt=wrt, num_threads=num_threads)


Op.vjp = _op_vjp  # type: ignore[attr-defined]
Op.jvp = _op_jvp  # type: ignore[attr-defined]
