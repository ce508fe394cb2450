"""The public derivative functions: ``jacobian``, ``value_and_jacobian``, ``grad``, ``vjp``, ``jvp``.

Each accepts a tensorjac op (closed form, the fast path) or any Python
callable written with plain numpy, which is traced (tensorjac._trace) and
differentiated exactly (tensorjac._engine).
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _config
from ._dtypes import as_array, as_constant, as_float_array, result_dtype
from ._engine import JacobianProgram, forward, reverse, signature, sparse_jacobians, write_finals
from ._errors import refuse
from ._layout import ALL_LAYOUTS, Layout, batch_position, check_out, placement, prod
from ._rule import Op, op_jacobian, op_product, op_sparse
from ._sparse import check_format
from ._terms import Algebra, Final, Term, finalize
from ._trace import Node, Trace, Tracer, depth, nested

__all__ = ["grad", "jacobian", "jvp", "value_and_jacobian", "vjp"]


# ----------------------------------------------------------------------------- tracing a call

_DTYPES: dict[tuple[np.dtype, np.dtype], np.dtype] = {}


def _plain(args: tuple, kwargs: dict[str, Any]) -> bool:
    """No traced arrays among the arguments (else an op is differentiated like any function)."""
    for a in args:  # a plain loop: this runs on every call of an op (no generator set-up)
        if isinstance(a, Tracer):
            return False
    if kwargs:
        for a in kwargs.values():
            if isinstance(a, Tracer):
                return False
    return True


def _pair_dtype(what: str, out_dt: np.dtype, in_name: str, in_dt: np.dtype) -> np.dtype:
    """The Jacobian's dtype for f's output dtype and the input's (the package's one rule), memoized."""
    hit = _DTYPES.get((out_dt, in_dt))
    if hit is None:
        hit = result_dtype(what, [("f's output", out_dt), (in_name, in_dt)])
        _DTYPES[(out_dt, in_dt)] = hit
    return hit



class _Call:
    """One traced evaluation of ``f(*args, **kwargs)`` with the ``wrt`` arguments traced."""

    def __init__(self, what: str, f: Callable[..., Any], args: tuple, kwargs: dict[str, Any], wrt: Any) -> None:
        if not callable(f):
            raise TypeError(f"{what}: f must be a tensorjac op or a callable, got {type(f).__name__}")
        self.what = what
        self.tuple_wrt = isinstance(wrt, (tuple, list))
        wrts = list(wrt) if self.tuple_wrt else [wrt]
        if not wrts:
            raise ValueError(f"{what}: wrt is an empty tuple; name at least one argument")
        # tensors of other libraries become numpy arrays (zero-copy) before f runs: f is numpy code
        alist = [as_constant(a, f"{what}: argument {i}") for i, a in enumerate(args)]
        kwargs = {k: as_constant(v, f"{what}: argument {k!r}") for k, v in kwargs.items()}
        self.keys = [self._resolve(f, w, alist, kwargs) for w in wrts]
        if len(set(self.keys)) != len(self.keys):
            raise ValueError(f"{what}: wrt={wrt!r} names the same argument twice")
        self.trace = Trace(depth() + 1)
        self.in_names: list[str] = []
        self.in_dtypes: list[np.dtype] = []
        for key in self.keys:
            name = f"argument {key!r}" if isinstance(key, str) else f"argument {key}"
            self.in_names.append(name)
            raw = kwargs[key] if isinstance(key, str) else alist[key]
            if isinstance(raw, Tracer):  # differentiating inside a differentiated function (Hessians)
                x = raw if raw.dtype.kind in "fc" else raw.astype(np.float64)
            else:
                x = as_float_array(raw, f"{what}: {name}")
                x = x.view()
                x.flags.writeable = False  # f sees the values, never a way to write to the caller's array
            self.in_dtypes.append(x.dtype)
            tr = self.trace.input(x)
            if isinstance(key, str):
                kwargs[key] = tr
            else:
                alist[key] = tr
        with nested():
            try:
                res = f(*alist, **kwargs)
            except BaseException:
                self.trace.active = False
                raise
        self.tuple_out = isinstance(res, (tuple, list))
        outs = list(res) if self.tuple_out else [res]
        self.out_nodes: list[Node] = []
        self.out_values: list[np.ndarray] = []
        for i, o in enumerate(outs):
            if isinstance(o, Tracer) and o._trace is self.trace:
                node = o._get()
            elif isinstance(o, Tracer):  # traced by an enclosing trace only: a constant here
                node = Node(None, {}, (), (), o, False, -1)
            else:
                v = as_array(o, f"{what}: f's output") if not isinstance(o, (str, bytes)) else np.asarray(object())
                if v.dtype.kind not in "biufc":
                    raise TypeError(
                        f"{what}: f returned {type(o).__name__}"
                        + (f" as output {i}" if self.tuple_out else "")
                        + "; expected a numpy array, a number, or a tuple of them"
                    )
                node = Node(None, {}, (), (), v, False, -1)
            self.out_nodes.append(node)
            self.out_values.append(node.value)
        self.trace.active = False  # f has returned: its traced arrays must not be used again

    @staticmethod
    def _resolve(f: Callable[..., Any], w: Any, args: list, kwargs: dict[str, Any]) -> int | str:
        if isinstance(w, str):
            if w in kwargs:
                return w
            try:
                params = list(inspect.signature(f).parameters.values())
            except (TypeError, ValueError):
                raise ValueError(f"wrt={w!r}: cannot read the argument names of {f!r}; pass an index") from None
            pos = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            if w in pos and pos.index(w) < len(args):
                return pos.index(w)
            names = pos[: len(args)] + list(kwargs)
            raise ValueError(f"wrt={w!r} is not one of the arguments passed to f ({', '.join(names) or 'none'})")
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)):
            raise TypeError(f"wrt must be an argument index, an argument name, or a tuple of them; got {w!r}")
        n = len(args)
        if not -n <= w < n:
            raise IndexError(f"wrt={w} is out of range for {n} positional argument(s)")
        return int(w) % n

    def dtype(self, i: int, k: int) -> np.dtype:
        return _pair_dtype(self.what, self.out_values[i].dtype, self.in_names[k], self.in_dtypes[k])

    def values(self) -> Any:
        vals = [v if isinstance(v, Tracer) or v.flags.writeable else v.copy() for v in self.out_values]
        vals = [v[()] if v.ndim == 0 and not isinstance(v, np.ndarray) else v for v in vals]
        return tuple(vals) if self.tuple_out else vals[0]

    def shape_result(self, res: list[list[Any]]) -> Any:
        per_out = [tuple(r) if self.tuple_wrt else r[0] for r in res]
        return tuple(per_out) if self.tuple_out else per_out[0]


# ----------------------------------------------------------------------------- jacobian


_PROGRAMS: OrderedDict[tuple, JacobianProgram] = OrderedDict()
_PROGRAMS_MAX = 128


def _batch_axis(call: _Call, batch_axis: Any) -> int | None:
    """The validated per-sample axis (the same axis of every output and every differentiated input)."""
    if batch_axis is None:
        return None
    shapes = [("f's output", v.shape) for v in call.out_values] + [
        (name, n.value.shape) for name, n in zip(call.in_names, call.trace.inputs)
    ]
    return batch_position(batch_axis, shapes, call.what)


def _jacobians(call: _Call, layout: str, out: Any, num_threads: int | None, batch_axis: Any = None,
               hess: int | None = None, fmt: str = "dense") -> Any:
    nt = 0 if num_threads is None else _config.resolve_threads(num_threads)
    if not isinstance(layout, str) or layout not in ALL_LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(ALL_LAYOUTS)}")
    if check_format(fmt, layout, call.what, batch_axis, out) != "dense":
        inputs = call.trace.inputs
        if any(isinstance(n.value, Tracer) for n in inputs):
            raise refuse(f"tensorjac: {call.what}(..., format={fmt!r}) inside a differentiated function is not "
                         "supported")
        dtypes = [[call.dtype(i, k) for k in range(len(call.keys))] for i in range(len(call.out_nodes))]
        flat_res = sparse_jacobians(call.trace, call.out_nodes, inputs, layout, dtypes, fmt, hess, nt)
        nin = len(call.keys)
        return call.shape_result([flat_res[i * nin : (i + 1) * nin] for i in range(len(call.out_nodes))])
    batch = _batch_axis(call, batch_axis)
    if batch is not None and hess is not None:
        hess = None  # per-sample Hessians: the tensor layout of each sample (checked by tj.hessian)
    nout, nin = len(call.out_nodes), len(call.keys)
    outs_flat: list[Any] = [None] * (nout * nin)
    if out is not None:
        if nout * nin == 1:
            outs_flat = [out]
        else:
            flat = [o for row in (out if call.tuple_out else [out]) for o in (row if call.tuple_wrt else [row])]
            if len(flat) != nout * nin:
                raise ValueError("out= must have the same tuple structure as the result")
            outs_flat = flat
    inputs = call.trace.inputs
    dtypes = [[call.dtype(i, k) for k in range(nin)] for i in range(nout)]
    if any(isinstance(n.value, Tracer) for n in inputs):  # inside a differentiated function
        if out is not None or batch is not None:
            raise refuse("tensorjac: tj.jacobian(..., out=/batch_axis=) inside a differentiated function is not "
                         "supported")
        return call.shape_result(_nested_jacobians(call, layout, dtypes))
    for i, node in enumerate(call.out_nodes):
        for k in range(nin):
            o = outs_flat[i * nin + k]
            if o is not None:
                shape, _, _ = placement(layout, node.value.shape, inputs[k].value.shape, batch, hess)
                check_out(o, shape, dtypes[i][k], [n.value for n in inputs])
    if (batch is None and hess is None and layout != "diagonal"
            and all(1 <= v.size <= _REVERSE_MAX_OUT for v in call.out_values)):
        flat_res = write_finals(_reverse_finals(call, layout, dtypes, nt), outs_flat, nt)
    else:  # forward accumulation of terms, replayed from a recorded program when the tape repeats
        key = (signature(call.trace, call.out_nodes, inputs), layout, tuple(map(tuple, dtypes)), batch, hess)
        prog = _PROGRAMS.get(key)
        if prog is None:
            prog = JacobianProgram.record(call.trace, call.out_nodes, inputs, layout, dtypes, batch, hess)
            _PROGRAMS[key] = prog
            if len(_PROGRAMS) > _PROGRAMS_MAX:
                _PROGRAMS.popitem(last=False)
        else:
            _PROGRAMS.move_to_end(key)
        flat_res = prog.run(call.trace, outs_flat, nt)
    res = [[flat_res[i * nin + k] for k in range(nin)] for i in range(nout)]
    return call.shape_result(res)


# Outputs of at most this many entries are differentiated in reverse: one backward sweep with
# one cotangent per output entry (batched), costing a few evaluations of f whatever the input
# size -- where forward accumulation could build factors as large as the intermediates.
_REVERSE_MAX_OUT = 8


def _nested_jacobians(call: _Call, layout: str, dtypes: list[list[np.dtype]]) -> list[list[Any]]:
    """Jacobians as traced arrays (for a derivative that is itself differentiated): one batched
    reverse sweep per output, then the layout by reshapes and transposes, all recorded."""
    res = []
    for i, node in enumerate(call.out_nodes):
        dt = np.result_type(*dtypes[i])
        m = node.value.size
        cot = np.eye(m, dtype=dt).reshape((m, *node.value.shape))
        grads = reverse(call.trace, [node], [cot], call.trace.inputs, dt, 0)
        row = []
        for k, g in enumerate(grads):
            os_, is_ = node.value.shape, call.trace.inputs[k].value.shape
            J = np.zeros(os_ + is_, dtypes[i][k]) if g is None else g.reshape(os_ + is_)
            row.append(_to_layout(J, os_, is_, layout))
        res.append(row)
    return res


def _to_layout(J: Any, os_: tuple[int, ...], is_: tuple[int, ...], layout: str) -> Any:
    P, R = len(os_), len(is_)
    if layout == "tensor":
        return J
    if layout == "gradient":
        return np.transpose(J, list(range(P, P + R)) + list(range(P)))
    if layout == "numerator":
        return np.transpose(J, list(range(P)) + list(range(P + R - 1, P - 1, -1)))
    if layout == "matrix":
        return np.reshape(J, (prod(os_), prod(is_)))
    if layout == "vec":
        T = np.transpose(J, list(range(P - 1, -1, -1)) + list(range(P + R - 1, P - 1, -1)))
        return np.reshape(T, (prod(os_), prod(is_)))
    if os_ != is_:
        raise ValueError("layout='diagonal' needs an elementwise Jacobian")
    letters = "abcdefghijklmnopqrstuvwxyz"[:P]
    return np.einsum(letters + letters + "->" + letters, J)


def _reverse_finals(call: _Call, layout: str, dtypes: list[list[np.dtype]], nt: int) -> list[Final]:
    """Small outputs: reverse accumulation (one batched backward sweep per output), one expand pass each."""
    alg = Algebra()
    finals = []
    for i, node in enumerate(call.out_nodes):
        dt = np.result_type(*dtypes[i])
        m = node.value.size
        cot = np.eye(m, dtype=dt).reshape((m, *node.value.shape))
        grads = reverse(call.trace, [node], [cot], call.trace.inputs, dt, nt)
        for k, g in enumerate(grads):
            in_shape = call.trace.inputs[k].value.shape
            if g is not None:
                g = g + 0.0  # entries that are zeros times a negative coefficient print as 0, not -0
            terms = [] if g is None else [_dense_term(alg, g.reshape(node.value.shape + in_shape), node.value.shape)]
            finals.append(finalize(alg, terms, node.value.shape, in_shape, layout, dtypes[i][k]))
    return finals


def _dense_term(alg: Algebra, J: np.ndarray, out_shape: tuple[int, ...]) -> Term:
    """A Jacobian in the tensor layout (out.shape + in.shape) as one dense term."""
    letters = tuple(alg.new(n) for n in J.shape)
    p = len(out_shape)
    return Term(1, tuple((c,) for c in letters[:p]), tuple((c,) for c in letters[p:]),
                [(alg.prog.leaf(J), letters)])


def jacobian(
    f: Any,
    *args: Any,
    wrt: Any = 0,
    layout: Layout = "tensor",
    out: np.ndarray | None = None,
    num_threads: int | None = None,
    batch_axis: int | None = None,
    format: str = "dense",
    **kwargs: Any,
) -> Any:
    """The exact Jacobian of a tensorjac op or of any function written with plain numpy.

    Returns ``T[m..., n...] = d f(*args)[m...] / d args[wrt][n...]``.

    Parameters
    ----------
    f : tensorjac op or callable
        A catalogue op (``tj.inv``, ...: closed forms, the fastest path) or any
        Python function of numpy arrays written with numpy's operators,
        ufuncs, ``np.*`` and ``np.linalg.*`` functions and array methods.
        Nothing in it needs changing; see the docs for what is supported.
        Unsupported functions raise TypeError pointing to :func:`tensorjac.fd.jacobian`.
    *args, **kwargs
        The arguments of ``f``: numpy arrays, or arrays of other libraries
        (PyTorch CPU tensors, JAX arrays, anything with ``__array__`` or
        ``__dlpack__``), read without a copy.  Arguments not named in ``wrt``
        are constants, passed to ``f`` unchanged, except that other libraries'
        tensors reach ``f`` as numpy arrays (``f`` is numpy code).
    wrt : int, str or tuple, default 0
        The argument to differentiate: its position, its name, or a tuple of
        them (then a tuple of Jacobians, from one evaluation of ``f``).
    layout : {"tensor", "gradient", "numerator", "matrix", "vec", "diagonal"}
        "tensor": ``out.shape + in.shape``; "gradient": ``in.shape + out.shape``;
        "numerator": ``out.shape + in.shape[::-1]``; "matrix": ``(M, N)`` with
        C-order flattening; "vec": ``(M, N)`` with column-major flattening;
        "diagonal": only ``f'(x)`` for elementwise Jacobians.
    out : ndarray, optional
        Filled in place and returned; its shape and dtype must match exactly
        (its contents are unspecified after a KeyboardInterrupt).
    num_threads : int, optional
        Threads of the C++ kernels for this call (results are bitwise identical
        for any count).
    batch_axis : int, optional
        Per-sample Jacobians: when axis ``batch_axis`` of the input holds independent
        samples that ``f`` maps one to one onto the same axis of its output, the result
        is ``J[b, m..., n...]`` of shape ``(B, *out_sample, *in_sample)`` (the layout
        applies to each sample) instead of the block-diagonal full Jacobian.  It is read
        off the derivative's structure: a function that mixes samples (a mean or a sum
        over the batch axis, batch normalization) raises ValueError.
    format : {"dense", "coo", "csr", "csc"}, default "dense"
        With "coo", "csr" or "csc" (and layout "matrix" or "vec"), a
        ``scipy.sparse`` array (``coo_array``, ``csr_array``, ``csc_array``)
        built straight from the derivative's structure: only its structural
        nonzeros are enumerated, never the dense result, and they come out
        sorted (canonical format).  Needs scipy (``pip install 'tensorjac[sparse]'``).

    Returns
    -------
    ndarray, or a tuple for a tuple ``wrt`` or a tuple-valued ``f``
        (a tuple over outputs of tuples over ``wrt`` when both are tuples).
        The dtype is the promotion of ``f``'s output and the input (integers
        count as float64).

    Examples
    --------
    >>> import numpy as np, tensorjac as tj
    >>> W, b = np.array([[1., 2.], [3., 4.]]), np.array([0.5, -0.5])
    >>> J = tj.jacobian(lambda X: np.tanh(X @ W + b), np.zeros((1, 2)))
    >>> J.shape
    (1, 2, 1, 2)
    >>> np.round(J[0, :, 0, :], 6)          # diag(1 - tanh^2(b)) W.T
    array([[0.786448, 2.359343],
           [1.572895, 3.145791]])
    >>> tj.jacobian(lambda x: x @ x, np.array([1., 2.]))  # 2x
    array([2., 4.])
    >>> S = tj.jacobian(lambda X: np.tanh(X) * 2, np.zeros((1000, 1000)), layout="matrix", format="csr")
    >>> S.shape, S.nnz                      # a diagonal 10^6 x 10^6 matrix: 8 TB dense
    ((1000000, 1000000), 1000000)
    """
    if isinstance(f, Op) and batch_axis is None and _plain(args, kwargs):
        if format == "dense":
            return op_jacobian(f, *args, wrt=wrt, layout=layout, out=out, num_threads=num_threads, **kwargs)
        if check_format(format, layout, "tj.jacobian", batch_axis, out) != "dense":
            return op_sparse(f, args, kwargs, wrt, layout, format, num_threads)
    call = _Call("tj.jacobian", f, args, kwargs, wrt)
    return _jacobians(call, layout, out, num_threads, batch_axis, fmt=format)


def value_and_jacobian(
    f: Any,
    *args: Any,
    wrt: Any = 0,
    layout: Layout = "tensor",
    out: np.ndarray | None = None,
    num_threads: int | None = None,
    batch_axis: int | None = None,
    format: str = "dense",
    **kwargs: Any,
) -> tuple[Any, Any]:
    """``(f(*args), jacobian(f, *args, ...))`` from a single evaluation of ``f``.

    Parameters
    ----------
    f, *args, wrt, layout, out, num_threads, batch_axis, format, **kwargs
        As for :func:`jacobian`.

    Returns
    -------
    value : ndarray or tuple
        ``f(*args)`` as plain numpy arrays (a tuple for a tuple-valued ``f``).
    jacobian : ndarray or tuple
        As :func:`jacobian` returns it.

    Examples
    --------
    >>> import numpy as np, tensorjac as tj
    >>> v, J = tj.value_and_jacobian(lambda x: np.sum(x ** 2), np.array([1., 2.]))
    >>> float(v), J
    (5.0, array([2., 4.]))
    """
    if isinstance(f, Op) and batch_axis is None and format == "dense" and _plain(args, kwargs):
        arrs = [as_array(a, f"tj.value_and_jacobian: argument {i}") for i, a in enumerate(args)]
        return f(*arrs, **{k: v for k, v in kwargs.items()}), op_jacobian(
            f, *arrs, wrt=wrt, layout=layout, out=out, num_threads=num_threads, **kwargs
        )
    call = _Call("tj.value_and_jacobian", f, args, kwargs, wrt)
    return call.values(), _jacobians(call, layout, out, num_threads, batch_axis, fmt=format)


def grad(f: Any, *args: Any, wrt: Any = 0, num_threads: int | None = None, **kwargs: Any) -> Any:
    """The gradient of a scalar function, with the shape of the input.

    ``f`` must return a single value of size 1 (a scalar, or an array of one
    entry).  The gradient costs a small multiple of one evaluation of ``f``
    (reverse accumulation).  For complex ``f`` it is the holomorphic
    derivative, not conjugated.

    Parameters
    ----------
    f : tensorjac op or callable
        A function with one scalar output (see :func:`jacobian` for what it
        may contain).
    *args, **kwargs
        The arguments of ``f``; those not named in ``wrt`` are constants.
    wrt : int, str or tuple, default 0
        The argument(s) to differentiate: position(s) or name(s).
    num_threads : int, optional
        Threads of the C++ kernels for this call.

    Returns
    -------
    ndarray, or a tuple of them for a tuple ``wrt``
        The gradient, with the shape of the argument (the "gradient" layout).

    Raises
    ------
    ValueError
        If ``f`` returns more than one value; use :func:`jacobian` or :func:`vjp`.

    Examples
    --------
    >>> import numpy as np, tensorjac as tj
    >>> A = np.array([[2., 1.], [1., 3.]])
    >>> tj.grad(lambda X: np.trace(A @ np.linalg.inv(X)), np.eye(2))   # -(X^-1 A X^-1)^T
    array([[-2., -1.],
           [-1., -3.]])
    """
    if isinstance(f, Op):
        call = _Call("tj.grad", lambda *a, **k: f(*a, **k), args, kwargs, wrt)
    else:
        call = _Call("tj.grad", f, args, kwargs, wrt)
    if call.tuple_out or call.out_values[0].size != 1:
        shape = [v.shape for v in call.out_values] if call.tuple_out else call.out_values[0].shape
        raise ValueError(
            f"tj.grad needs a function with one scalar output; f returned shape {shape}. "
            "Use tj.jacobian for vector-valued functions, or tj.vjp for products with a cotangent."
        )
    nt = 0 if num_threads is None else _config.resolve_threads(num_threads)
    node = call.out_nodes[0]
    dts = [call.dtype(0, k) for k in range(len(call.keys))]
    dt = np.result_type(*dts)
    grads = reverse(call.trace, [node], [np.ones((1, *node.value.shape), dt)], call.trace.inputs, dt, nt)
    res = []
    for k, g in enumerate(grads):
        shape = call.trace.inputs[k].value.shape
        res.append(np.zeros(shape, dts[k]) if g is None else g.reshape(shape).astype(dts[k], copy=False))
    _check_finite("tj.grad", res)
    return tuple(res) if call.tuple_wrt else res[0]


def _check_finite(what: str, arrays: list[np.ndarray]) -> None:
    if not all(np.isfinite(a).all() for a in arrays):
        _config.warn_nonfinite(what, stacklevel=4)


def _batch_of(what: str, name: str, V: np.ndarray, shape: tuple[int, ...], side: str) -> tuple[int, ...]:
    k = len(shape)
    if V.ndim < k or V.shape[V.ndim - k :] != shape:
        raise ValueError(
            f"{what}: {name} has shape {V.shape}, but its trailing axes must equal the {side} shape {shape} "
            f"(after any leading batch axes): expected (*batch, {', '.join(map(str, shape))}"
            f"{',' if len(shape) == 1 else ''})"
        )
    return V.shape[: V.ndim - k]


def vjp(f: Any, *args: Any, cotangent: Any, wrt: Any = 0, num_threads: int | None = None, **kwargs: Any) -> Any:
    """Batched vector-Jacobian products, never building the Jacobian.

    ``cotangent`` has shape ``(*batch, *out.shape)`` (any number of leading batch
    axes); the result has shape ``(*batch, *args[wrt].shape)``:
    ``res[b, n...] = sum_m cotangent[b, m...] J[m..., n...]``.  For a tuple-valued
    ``f`` pass a tuple of cotangents (same batch shape); a tuple ``wrt`` gives a
    tuple of results.  Complex results use the plain transpose (no conjugation).

    Parameters
    ----------
    f : tensorjac op or callable
        As for :func:`jacobian`.
    *args, **kwargs
        The arguments of ``f``; those not named in ``wrt`` are constants.
    cotangent : array_like, or a tuple of them for a tuple-valued ``f``
        Shape ``(*batch, *out.shape)``; keyword only.
    wrt : int, str or tuple, default 0
        The argument(s) to differentiate: position(s) or name(s).
    num_threads : int, optional
        Threads of the C++ kernels for this call.

    Returns
    -------
    ndarray, or a tuple of them for a tuple ``wrt``
        Shape ``(*batch, *args[wrt].shape)``.

    Examples
    --------
    >>> import numpy as np, tensorjac as tj
    >>> x = np.array([1., 2., 3.])
    >>> tj.vjp(lambda x: x ** 2, x, cotangent=np.eye(3))   # the rows of diag(2x)
    array([[2., 0., 0.],
           [0., 4., 0.],
           [0., 0., 6.]])
    """
    if isinstance(f, Op) and _plain(args, kwargs):
        return op_product(f, args, kwargs, cotangent, wrt, num_threads, "vjp")
    nt = _config.resolve_threads(num_threads)
    call = _Call("tj.vjp", f, args, kwargs, wrt)
    cots = list(cotangent) if call.tuple_out else [cotangent]
    if call.tuple_out and (not isinstance(cotangent, (tuple, list)) or len(cotangent) != len(call.out_nodes)):
        raise ValueError(f"tj.vjp: f returns {len(call.out_nodes)} outputs; pass a tuple of as many cotangents")
    batch: tuple[int, ...] | None = None
    Gs = []
    dts = [call.dtype(i, k) for i in range(len(call.out_nodes)) for k in range(len(call.keys))]
    arrs = [as_array(c, "tj.vjp: cotangent") for c in cots]
    dt = result_dtype("tj.vjp", [("the function's dtype", np.result_type(*dts))]
                      + [(f"cotangent{'' if len(arrs) == 1 else f'[{i}]'}", a.dtype) for i, a in enumerate(arrs)])
    for node, C in zip(call.out_nodes, arrs):
        b = _batch_of("tj.vjp", "cotangent", C, node.value.shape, "output")
        if batch is not None and b != batch:
            raise ValueError(f"tj.vjp: cotangents have different batch shapes {batch} and {b}")
        batch = b
        Gs.append(C.astype(dt, copy=False).reshape((prod(b), *node.value.shape)))
    assert batch is not None
    nb = prod(batch)
    for node in call.trace.inputs:
        _config.check_budget((nb, *node.value.shape), dt.itemsize, what="VJP result")
    grads = reverse(call.trace, call.out_nodes, Gs, call.trace.inputs, dt, nt)
    res = []
    for node, g in zip(call.trace.inputs, grads):
        shape = node.value.shape
        r = np.zeros((nb, *shape), dt) if g is None else g
        r = r.reshape(batch + shape)
        res.append(r.copy() if any(np.may_share_memory(r, a) for a in arrs) else r)
    _check_finite("tj.vjp", res)
    return tuple(res) if call.tuple_wrt else res[0]


def jvp(f: Any, *args: Any, tangent: Any, wrt: Any = 0, num_threads: int | None = None, **kwargs: Any) -> Any:
    """Batched Jacobian-vector products, never building the Jacobian.

    ``tangent`` has shape ``(*batch, *args[wrt].shape)``; the result has shape
    ``(*batch, *out.shape)``: ``res[b, m...] = sum_n J[m..., n...] tangent[b, n...]``.
    For a tuple ``wrt`` pass a tuple of tangents (same batch shape): the result
    is the total directional derivative.  A tuple-valued ``f`` gives a tuple.

    Parameters
    ----------
    f : tensorjac op or callable
        As for :func:`jacobian`.
    *args, **kwargs
        The arguments of ``f``; those not named in ``wrt`` are constants.
    tangent : array_like, or a tuple of them for a tuple ``wrt``
        Shape ``(*batch, *args[wrt].shape)``; keyword only.
    wrt : int, str or tuple, default 0
        The argument(s) to differentiate: position(s) or name(s).
    num_threads : int, optional
        Threads of the C++ kernels for this call.

    Returns
    -------
    ndarray, or a tuple of them for a tuple-valued ``f``
        Shape ``(*batch, *out.shape)``.

    Examples
    --------
    >>> import numpy as np, tensorjac as tj
    >>> A = np.array([[1., 2.], [3., 4.]])
    >>> tj.jvp(lambda x: A @ x, np.zeros(2), tangent=np.array([1., 0.]))
    array([1., 3.])
    """
    if isinstance(f, Op) and _plain(args, kwargs):
        return op_product(f, args, kwargs, tangent, wrt, num_threads, "jvp")
    nt = _config.resolve_threads(num_threads)
    call = _Call("tj.jvp", f, args, kwargs, wrt)
    if call.tuple_wrt and (not isinstance(tangent, (tuple, list)) or len(tangent) != len(call.keys)):
        raise ValueError(f"tj.jvp: with wrt={tuple(call.keys)!r}, tangent must be a tuple of {len(call.keys)} arrays")
    tans = [as_array(t, "tj.jvp: tangent") for t in (tangent if call.tuple_wrt else [tangent])]
    dts = [call.dtype(i, k) for i in range(len(call.out_nodes)) for k in range(len(call.keys))]
    dt = result_dtype("tj.jvp", [("the function's dtype", np.result_type(*dts))]
                      + [(f"tangent{'' if len(tans) == 1 else f'[{i}]'}", t.dtype) for i, t in enumerate(tans)])
    batch: tuple[int, ...] | None = None
    Ts = []
    for node, name, T in zip(call.trace.inputs, call.in_names, tans):
        b = _batch_of("tj.jvp", "tangent", T, node.value.shape, f"input ({name})")
        if batch is not None and b != batch:
            raise ValueError(f"tj.jvp: tangents have different batch shapes {batch} and {b}")
        batch = b
        Ts.append(T.astype(dt, copy=False).reshape((prod(b), *node.value.shape)))
    assert batch is not None
    nb = prod(batch)
    for node in call.out_nodes:
        _config.check_budget((nb, *node.value.shape), dt.itemsize, what="JVP result")
    outs = forward(call.trace, call.out_nodes, Ts, call.trace.inputs, dt, nt, nb)
    res = []
    for node, r in zip(call.out_nodes, outs):
        shape = node.value.shape
        r = np.zeros((nb, *shape), dt) if r is None else r.astype(dt, copy=False)
        r = r.reshape(batch + shape)
        res.append(r.copy() if any(np.may_share_memory(r, t) for t in tans) else r)
    _check_finite("tj.jvp", res)
    return tuple(res) if call.tuple_out else res[0]
