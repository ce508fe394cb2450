"""Exact Hessians and Hessian-vector products, by differentiating the derivative.

The first derivative is computed by a batched reverse sweep whose every step is
a numpy operation; run inside a traced function (nested tracing), that sweep is
itself recorded, so its Jacobian -- the Hessian -- comes from the same term
algebra: composed symbolically, written once into the requested layout.  No
finite differences, and no loop over the Hessian's columns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import _config
from ._api import _Call, _jacobians, jvp
from ._dtypes import as_array
from ._engine import reverse
from ._layout import batch_position, check_out, placement, prod
from ._rule import Op
from ._sparse import check_format
from ._terms import symmetrize
from ._trace import Tracer

__all__ = ["hessian", "hvp"]

_HESSIAN_LAYOUTS = ("tensor", "matrix", "vec")


def _first_derivative(f: Callable[..., Any], wrt: Any, batch: int | None = None,
                      lead: dict[str, bool] | None = None) -> Callable[..., Any]:
    """``x -> d f / d x`` (the gradient, or the Jacobian ``out.shape + x.shape``) by one batched
    reverse sweep: a function of plain numpy steps, so a traced call of it is differentiated again.

    With ``lead`` (a dict), the gradient of a 0-d f keeps the sweep's leading axis of length 1,
    ``(1, *x.shape)``, and ``lead["kept"]`` is set: no reshape node in the traced sweep (the caller
    takes the Hessian's entry 0 along that axis, a view).

    With ``batch`` (f maps samples along that axis one to one), the per-sample derivative of shape
    ``out.shape + x_sample.shape``: one cotangent per entry of an output sample, shared by every
    sample, since a sample's output depends only on that sample.
    """

    def deriv(*args: Any, **kwargs: Any) -> Any:
        call = _Call("tj.hessian", f, args, kwargs, wrt)
        if call.tuple_out:
            raise ValueError("tj.hessian: f must return one array, not a tuple")
        node = call.out_nodes[0]
        oshape = node.value.shape
        dt = np.result_type(*[call.dtype(0, k) for k in range(len(call.keys))])
        if batch is None:
            m = node.value.size
            cot = np.eye(m, dtype=dt).reshape((m, *oshape))
        else:
            if node.value.ndim <= batch:
                raise ValueError(f"tj.hessian: batch_axis={batch} is out of range for f's output {oshape}")
            sample = oshape[:batch] + oshape[batch + 1 :]
            m = prod(sample)
            eye = np.eye(m, dtype=dt).reshape((m, *sample))
            cot = np.broadcast_to(np.expand_dims(eye, batch + 1), (m, *oshape))
        grads = reverse(call.trace, [node], [cot], call.trace.inputs, dt, 0)
        res = []
        for n, g in zip(call.trace.inputs, grads):
            ishape = n.value.shape
            if batch is None:
                if lead is not None and oshape == () and g is not None:
                    lead["kept"] = True
                    res.append(g)
                    continue
                shape = oshape + ishape
                res.append(np.zeros(shape, dt) if g is None else g.reshape(shape))
                continue
            # g[m, x...] = d y[b(x), m] / d x: put the sample axis of x where the output's is
            if g is None:
                g = np.zeros((m, *ishape), dt)
            g = np.moveaxis(np.reshape(g, (*sample, *ishape)), len(sample) + batch, batch)
            res.append(g)
        return tuple(res) if call.tuple_wrt else res[0]

    return deriv


def _symmetrize(H: Any, m: int, n: int, nt: int = 0) -> Any:
    """Make H, seen as (m, n, n), exactly symmetric in its last two groups: the mean of the two
    computed halves written to both (a + b == b + a in IEEE arithmetic, so bitwise), in C++.
    A traced H (a Hessian inside a differentiated function) is returned as that mean instead.

    The Hessians of tj.hessian's recorded programs need none of this: their diagonal blocks are
    written exactly symmetric by the program itself (tensorjac._terms.finalize with ``sym``)."""
    if getattr(type(H), "__tj_apply__", None) is not None:
        V = np.reshape(H, (m, n, n))
        return np.reshape((V + np.swapaxes(V, 1, 2)) * 0.5, H.shape)
    symmetrize(H, m, n, nt)
    return H


def hessian(
    f: Any,
    *args: Any,
    wrt: Any = 0,
    layout: str = "tensor",
    out: Any = None,
    num_threads: int | None = None,
    batch_axis: int | None = None,
    format: str = "dense",
    **kwargs: Any,
) -> Any:
    """The exact Hessian ``H[m..., n..., k...] = d^2 f[m...] / dx[n...] dx[k...]`` of a numpy function.

    Parameters
    ----------
    f : tensorjac op or callable
        Anything :func:`tensorjac.jacobian` differentiates, returning one array of any
        shape (a scalar loss gives the usual Hessian).
    *args, **kwargs
        The arguments of ``f``; those not in ``wrt`` are constants.
    wrt : int, str or tuple
        The argument(s).  A tuple gives the blocks ``H[i][j] = d^2 f / dx_i dx_j`` as a tuple of
        tuples, with ``H[j][i]`` the transpose of ``H[i][j]``.
    layout : {"tensor", "matrix", "vec"}
        "tensor": ``out.shape + x.shape + x.shape``; "matrix": ``(N, N)`` for a scalar f and
        ``(M, N, N)`` otherwise, each group flattened in C order; "vec": the same shape with
        column-major (Fortran) groups.
    out : ndarray, optional
        Filled in place and returned (single ``wrt``).
    num_threads : int, optional
        Threads of the C++ kernels for this call.
    batch_axis : int, optional
        Per-sample Hessians (layout "tensor", one wrt): when f maps the samples along this axis
        of x one to one onto the same axis of its output, the result is
        ``(B, *out_sample, *x_sample, *x_sample)``; a function that mixes samples raises ValueError.
    format : {"dense", "coo", "csr", "csc"}, default "dense"
        A ``scipy.sparse`` array (layouts "matrix" and "vec") built from the Hessian's structure,
        as for :func:`tensorjac.jacobian`; a vector-valued f gives a 3-D ``coo_array`` (only
        "coo" holds more than two dimensions).  Exactly symmetric too.

    Returns
    -------
    ndarray (or a tuple of tuples for a tuple ``wrt``), exactly symmetric in the two input
    groups (bitwise).

    Notes
    -----
    The first derivative is a batched reverse sweep (one cotangent per entry of f's output)
    made of numpy operations; tracing that sweep and differentiating it with the term algebra
    gives the Hessian symbolically, written once.  The cost grows with the size of f's output,
    so vector-valued f of many entries are expensive; functions the sweep cannot trace raise
    TypeError pointing to ``tj.fd.hessian``.

    Examples
    --------
    >>> import numpy as np, tensorjac as tj
    >>> A = np.array([[1., 2.], [0., 3.]])
    >>> tj.hessian(lambda x: x @ A @ x, np.array([0.5, -1.0]))   # A + A.T
    array([[2., 2.],
           [2., 6.]])
    >>> S = np.array([[2., 1.], [1., 3.]])
    >>> H = tj.hessian(lambda X: np.linalg.slogdet(X)[1], S, layout="matrix")
    >>> Si = np.linalg.inv(S)
    >>> T = -np.einsum("jk,li->ijkl", Si, Si)           # d inv(S).T[i,j] / dS[k,l]
    >>> np.allclose(H, T.reshape(4, 4)), H.shape
    (True, (4, 4))
    """
    if not isinstance(layout, str) or layout not in _HESSIAN_LAYOUTS:
        raise ValueError(f"tj.hessian: layout must be one of {', '.join(_HESSIAN_LAYOUTS)}, got {layout!r}")
    check_format(format, layout, "tj.hessian", batch_axis, out)
    wrt = _positions(f, wrt, args, kwargs)
    if isinstance(f, Op):
        op = f
        f = lambda *a, **k: op(*a, **k)
    if batch_axis is not None:
        return _per_sample_hessian(f, args, kwargs, wrt, layout, out, num_threads, batch_axis)
    lead: dict[str, bool] | None = None
    if format == "dense" and not isinstance(wrt, tuple):
        try:  # a bad wrt is reported by _Call below
            x = kwargs.get(wrt) if isinstance(wrt, str) else args[wrt]
        except (IndexError, TypeError):
            x = None
        lead = None if isinstance(x, Tracer) else {}
    g = _first_derivative(f, wrt, lead=lead)
    call = _Call("tj.hessian", g, args, kwargs, wrt)
    pairs = call.tuple_out  # the first derivative is a tuple when wrt is
    if out is not None and pairs:
        raise ValueError("tj.hessian: out= is not supported with a tuple wrt")
    n_out = call.out_values[0].ndim - call.trace.inputs[0].value.ndim
    if lead and lead.get("kept"):  # a 0-d f's gradient with the sweep's axis of length 1: H[0] is the Hessian
        if out is not None:
            xv = call.trace.inputs[0].value
            shape, _, _ = placement(layout, xv.shape, xv.shape, None, 0)
            check_out(out, shape, call.dtype(0, 0), [xv])
        res = _jacobians(call, layout, None if out is None else out[None], num_threads, hess=1)
        return res[0] if out is None else out
    res = _jacobians(call, layout, out, num_threads, hess=n_out, fmt=format)
    if format != "dense":
        return _symmetrize_sparse(res, pairs, format)
    inputs = call.trace.inputs
    nested = any(isinstance(n.value, Tracer) for n in inputs)  # a Hessian of traced arrays
    if not pairs:
        if not nested:  # the diagonal blocks of a recorded program are written exactly symmetric
            return res
        N = prod(inputs[0].value.shape)
        return _symmetrize(res, res.size // max(N * N, 1) if N else 0, N)
    blocks = [list(row) for row in res]
    for i in range(len(blocks)):
        Ni = prod(inputs[i].value.shape)
        if nested:
            blocks[i][i] = _symmetrize(blocks[i][i], blocks[i][i].size // max(Ni * Ni, 1) if Ni else 0, Ni)
        for j in range(i + 1, len(blocks)):  # H[j][i] is H[i][j] with its two input groups swapped
            blocks[j][i] = _swap_groups(blocks[i][j], call, i, j, n_out, layout)
    return tuple(tuple(row) for row in blocks)


def _per_sample_hessian(f: Callable[..., Any], args: tuple, kwargs: dict[str, Any], wrt: Any, layout: str,
                        out: Any, num_threads: int | None, batch_axis: Any) -> Any:
    if isinstance(wrt, (tuple, list)) or layout != "tensor":
        raise ValueError("tj.hessian: batch_axis needs one wrt and layout='tensor'")
    xshape = as_array(args[wrt] if isinstance(wrt, int) else kwargs[wrt], "x").shape
    b = batch_position(batch_axis, [("x", xshape)], "tj.hessian")
    g = _first_derivative(f, wrt, b)
    call = _Call("tj.hessian", g, args, kwargs, wrt)
    H = _jacobians(call, "tensor", out, num_threads, b, hess=0)
    N = prod(xshape) // max(xshape[b], 1)
    return _symmetrize(H, H.size // max(N * N, 1) if N else 0, N, _config.resolve_threads(num_threads))


def _swap_sparse(H: Any) -> Any:
    """A sparse Hessian block with its two input groups (its last two dimensions) swapped."""
    return H.T if H.ndim == 2 else H.transpose((0, 2, 1))


def _symmetrize_sparse(res: Any, pairs: bool, fmt: str) -> Any:
    """Sparse Hessians made exactly symmetric, ``(H + H^T) / 2`` (IEEE addition commutes, so bitwise),
    and the blocks below the diagonal as the transposes of those above."""
    if not pairs:
        return ((res + _swap_sparse(res)) * 0.5).asformat(fmt)
    blocks = [list(row) for row in res]
    for i in range(len(blocks)):
        blocks[i][i] = ((blocks[i][i] + _swap_sparse(blocks[i][i])) * 0.5).asformat(fmt)
        for j in range(i + 1, len(blocks)):
            blocks[j][i] = _swap_sparse(blocks[i][j]).asformat(fmt)
    return tuple(tuple(row) for row in blocks)


def _positions(f: Callable[..., Any], wrt: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
    """Argument names of f resolved to positions (the derivative function takes *args, **kwargs)."""
    ws = list(wrt) if isinstance(wrt, (tuple, list)) else [wrt]
    if isinstance(f, Op):
        res = [f.wrt_index(w, len(args)) if isinstance(w, str) and w not in kwargs else w for w in ws]
    else:
        res = [_Call._resolve(f, w, list(args), dict(kwargs)) if isinstance(w, str) else w for w in ws]
    return tuple(res) if isinstance(wrt, (tuple, list)) else res[0]


def _swap_groups(Hij: np.ndarray, call: _Call, i: int, j: int, p: int, layout: str) -> np.ndarray:
    si, sj = call.trace.inputs[i].value.shape, call.trace.inputs[j].value.shape
    if layout == "tensor":
        ri, rj = len(si), len(sj)
        axes = list(range(p)) + list(range(p + ri, p + ri + rj)) + list(range(p, p + ri))
        return np.ascontiguousarray(np.transpose(Hij, axes))
    lead = Hij.shape[:-2]
    return np.ascontiguousarray(np.swapaxes(Hij.reshape(lead + (prod(si), prod(sj))), -1, -2))


def hvp(f: Any, *args: Any, vector: Any, wrt: Any = 0, num_threads: int | None = None, **kwargs: Any) -> Any:
    """Batched Hessian-vector products ``H @ v`` of a scalar function, never building H.

    ``vector`` has shape ``(*batch, *x.shape)``; the result has the same shape:
    ``res[b, n...] = sum_k H[n..., k...] v[b, k...]`` -- the directional derivative of the
    gradient, by a forward sweep over the traced gradient computation.

    Examples
    --------
    >>> import numpy as np, tensorjac as tj
    >>> A = np.array([[1., 2.], [0., 3.]])
    >>> tj.hvp(lambda x: x @ A @ x, np.zeros(2), vector=np.eye(2))   # the rows of A + A.T
    array([[2., 2.],
           [2., 6.]])
    """
    if isinstance(wrt, (tuple, list)):
        raise ValueError("tj.hvp: wrt must be one argument")
    wrt = _positions(f, wrt, args, kwargs)
    if isinstance(f, Op):
        op = f
        f = lambda *a, **k: op(*a, **k)
    g = _first_derivative(f, wrt)

    def grad_only(*a: Any, **k: Any) -> Any:
        G = g(*a, **k)
        if G.ndim != np.ndim(a[wrt] if isinstance(wrt, int) else k.get(wrt, a[0])):
            raise ValueError(f"tj.hvp needs a scalar function; its derivative has shape {G.shape}")
        return G

    res = jvp(grad_only, *args, tangent=as_array(vector, "tj.hvp: vector"), wrt=wrt, num_threads=num_threads, **kwargs)
    if not np.isfinite(res).all():
        _config.warn_nonfinite("tj.hvp", stacklevel=3)
    return res
