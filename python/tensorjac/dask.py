"""Jacobians bigger than memory, as dask arrays: ``tensorjac.dask.jacobian``.

``f`` is traced once on the calling process (the driver), exactly as
:func:`tensorjac.jacobian` does, which gives the Jacobian as a short sum of
terms: coefficients times small factor arrays over index letters, times
Kronecker deltas.  Every block of the returned ``dask.array.Array`` is
then written independently from those terms by the C++ expand kernel,
touching only its own memory (tensorjac._blocks): no block ever needs the
dense result, so the Jacobian may be many times larger than the memory of any
one machine, and stored with ``.to_zarr``, reduced with ``.sum()`` or sliced
like any dask array.

dask and zarr are optional (``pip install 'tensorjac[dask]'``); this module
imports without them and :func:`jacobian` raises ImportError naming the extra.
"""

from __future__ import annotations

import importlib
import itertools
import uuid
from typing import Any

import numpy as np

from . import _config
from ._api import _REVERSE_MAX_OUT, _Call, _dense_term, _plain
from ._blocks import BlockSpec, Group, block_passes, compute_block, make_groups
from ._engine import forward_terms, reverse
from ._layout import ALL_LAYOUTS, placement, prod
from ._rule import Op, _op_args
from ._terms import Algebra, _few_factors, fold_coef, is_diagonal, merge
from ._trace import Tracer

__all__ = ["jacobian"]

_WHAT = "tensorjac.dask.jacobian"
_GIB = 1 << 30
# "auto" chunks: blocks of at most this fraction of the memory budget (a few are in flight at once:
# one per worker thread, plus what the next task in the graph holds).
_AUTO_FRACTION = 8
_FINITE_STEP = 1 << 20  # entries per isfinite() pass over a factor (no temporary as big as the factor)


def _dask() -> tuple[Any, Any]:
    try:
        da = importlib.import_module("dask.array")
        hlg = importlib.import_module("dask.highlevelgraph")
    except ImportError:
        raise ImportError(
            f"{_WHAT} returns dask arrays and needs dask: install it with pip install 'tensorjac[dask]' "
            "(or pip install 'dask[array]')"
        ) from None
    return da, hlg.HighLevelGraph


class _Result:
    """One Jacobian's terms: groups of like terms over factor ids, and the factor arrays."""

    __slots__ = ("dtype", "factors", "groups", "shape")

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, groups: list[Group], factors: list[np.ndarray]) -> None:
        self.shape = shape
        self.dtype = dtype
        self.groups = groups
        self.factors = factors


def _register(arrays: list[np.ndarray], ids: dict[int, int], a: Any) -> int:
    a = np.asarray(a)
    k = ids.get(id(a))
    if k is None:
        k = ids[id(a)] = len(arrays)
        arrays.append(a)
    return k


def _op_results(op: Op, args: tuple, kwargs: dict[str, Any], wrt: Any, layout: str) -> Any:
    """An op's Jacobian(s): the terms of its rule (as ``tj.jacobian(op, ...)`` writes them)."""
    arrs, params = _op_args(op, tuple(args), kwargs)
    if isinstance(wrt, (tuple, list)):
        if not wrt:
            raise ValueError(f"{_WHAT}: wrt is an empty tuple; name at least one argument")
        return tuple(_op_results(op, tuple(arrs), params, w, layout) for w in wrt)
    plan = op._plan(arrs, wrt, layout, params)  # validates wrt, the layout ("diagonal" too), shapes, dtypes
    if plan.cast:
        arrs = op._cast(arrs, plan.dtype)
    d = plan.deriv
    with np.errstate(all="ignore"):  # non-finite factors are reported once, as a NonFiniteWarning
        facs = list(plan.factors(*arrs))
    sizes = d.letter_sizes(plan.out_shape, plan.in_shape)
    arrays: list[np.ndarray] = []
    ids: dict[int, int] = {}
    terms = []
    slot = 0
    for coef, letter_groups in d.terms:
        fl = []
        for g in letter_groups:
            fl.append((_register(arrays, ids, facs[slot]), g))
            slot += 1
        terms.append((coef, d.out, d.inp, fl))
    groups = make_groups(terms, sizes, layout, plan.out_shape, plan.in_shape)
    shape, _, _ = placement(layout, plan.out_shape, plan.in_shape)
    return _Result(shape, plan.dtype, groups, arrays)


def _composite_results(call: _Call, layout: str) -> list[list[_Result]]:
    """Every Jacobian of a traced call: the final terms of forward accumulation, prepared exactly as
    tensorjac._terms.finalize prepares them for the in-memory result (merged like terms, the
    coefficient folded into the smallest factor, at most 6 factors per term, the result's dtype)."""
    inputs = call.trace.inputs
    if any(isinstance(n.value, Tracer) for n in inputs):
        raise TypeError(f"{_WHAT} cannot be called inside a function that is itself differentiated")
    alg = Algebra()
    dtypes = [[call.dtype(i, k) for k in range(len(inputs))] for i in range(len(call.out_nodes))]
    if layout != "diagonal" and all(1 <= v.size <= _REVERSE_MAX_OUT for v in call.out_values):
        # as tj.jacobian: outputs of a few entries are differentiated in reverse (a few evaluations of f),
        # each Jacobian one dense term (of at most 8 times the input's size)
        per_out: list[dict[int, list]] = []
        for i, node in enumerate(call.out_nodes):
            dt = np.result_type(*dtypes[i])
            m = node.value.size
            cot = np.eye(m, dtype=dt).reshape((m, *node.value.shape))
            grads = reverse(call.trace, [node], [cot], inputs, dt, 0)
            per_out.append({
                k: [_dense_term(alg, (g + 0.0).reshape(node.value.shape + inputs[k].value.shape), node.value.shape)]
                for k, g in enumerate(grads) if g is not None
            })
    else:
        per_out = forward_terms(call.trace, call.out_nodes, inputs, alg)
    res = []
    for i, node in enumerate(call.out_nodes):
        row = []
        for k, inp in enumerate(inputs):
            dtype = dtypes[i][k]
            out_shape, in_shape = node.value.shape, inp.value.shape
            terms = merge(alg, per_out[i].get(k, []), final=True)
            if layout == "diagonal" and not all(is_diagonal(t) for t in terms):
                raise ValueError(
                    "layout='diagonal' needs an elementwise Jacobian (output and input of the same shape, "
                    "each output entry depending only on the same input entry); this function's is not"
                )
            arrays: list[np.ndarray] = []
            ids: dict[int, int] = {}
            specs = []
            for t in terms:
                coef, facs = fold_coef(alg, t, dtype)
                facs = _few_factors(alg, facs)
                fl = []
                for a, ls in facs:
                    h = a if a.dtype == dtype else alg.prog.astype(a, dtype)
                    fl.append((_register(arrays, ids, h.a), ls))
                specs.append((coef, t.out, t.inp, fl))
            groups = make_groups(specs, alg.sizes, layout, out_shape, in_shape)
            shape, _, _ = placement(layout, out_shape, in_shape)
            row.append(_Result(shape, dtype, groups, arrays))
        res.append(row)
    return res


def _finite(a: np.ndarray) -> bool:
    flat = a.reshape(-1) if a.flags.c_contiguous else a.ravel(order="K") if a.size <= _FINITE_STEP else None
    if flat is None:  # a large non-contiguous factor: by slabs along its first axis
        step = max(1, _FINITE_STEP // max(1, a.size // max(1, a.shape[0])))
        return all(bool(np.isfinite(a[i : i + step]).all()) for i in range(0, a.shape[0], step))
    return all(bool(np.isfinite(flat[i : i + _FINITE_STEP]).all()) for i in range(0, flat.size, _FINITE_STEP))


def _chunks(chunks: Any, shape: tuple[int, ...], dtype: np.dtype) -> tuple[tuple[int, ...], ...]:
    import dask
    from dask.array.core import normalize_chunks
    from dask.utils import parse_bytes

    budget = _config.get_memory_budget()
    limit = max(dtype.itemsize, min(budget // _AUTO_FRACTION, parse_bytes(dask.config.get("array.chunk-size"))))
    try:
        norm = normalize_chunks(chunks, shape, limit=limit, dtype=dtype)
    except (TypeError, ValueError, NotImplementedError) as e:
        raise ValueError(f"{_WHAT}: chunks={chunks!r} do not fit the Jacobian of shape {shape}: {e}") from None
    biggest = tuple(max(c, default=0) for c in norm)
    nbytes = prod(biggest) * dtype.itemsize
    if nbytes > budget:
        raise _config.JacobianTooLargeError(
            f"{_WHAT}: a block of shape {biggest} (chunks={chunks!r}) would need {nbytes / _GIB:,.2f} GiB, over "
            f"the memory budget of {budget / _GIB:,.2f} GiB; pass smaller chunks (chunks='auto' picks blocks of "
            f"at most 1/{_AUTO_FRACTION} of the budget) or raise the budget with tj.set_memory_budget(bytes) or "
            f"${_config.MEMORY_BUDGET_ENV}"
        )
    return norm  # type: ignore[no-any-return]


def _array(r: _Result, chunks: Any, nt: int, da: Any, HighLevelGraph: Any) -> Any:
    """The dask array of one Jacobian: one task per block, and one graph key per distinct factor slice
    (a factor needed whole by many blocks is stored once; a big one is cut into the blocks' slices)."""
    budget = _config.get_memory_budget()
    for a in r.factors:
        if a.nbytes > budget:
            raise _config.JacobianTooLargeError(
                f"{_WHAT}: a factor of this Jacobian's terms, of shape {a.shape}, needs {a.nbytes / _GIB:,.2f} GiB "
                f"on the calling process, over the memory budget of {budget / _GIB:,.2f} GiB"
            )
    if not all(_finite(a) for a in r.factors):
        _config.warn_nonfinite(_WHAT, stacklevel=4)
    norm = _chunks(chunks, r.shape, r.dtype)
    name = f"tensorjac-jacobian-{uuid.uuid4().hex}"
    fname = f"{name}-factor"
    starts = [list(itertools.accumulate(c, initial=0)) for c in norm]
    dsk: dict[Any, Any] = {}
    slice_keys: dict[tuple, tuple[str, int]] = {}
    for idx in itertools.product(*[range(len(c)) for c in norm]):
        ranges = [(starts[d][i], starts[d][i + 1]) for d, i in enumerate(idx)]
        zero, passes = block_passes(r.groups, ranges)
        keys = []
        for _, refs in passes:
            for fid, rngs in refs:
                key = slice_keys.get((fid, rngs))
                if key is None:
                    key = slice_keys[(fid, rngs)] = (fname, len(slice_keys))
                    a = r.factors[fid]
                    whole = all(lo == 0 and hi == n for (lo, hi), n in zip(rngs, a.shape))
                    dsk[key] = a if whole else a[tuple(slice(lo, hi) for lo, hi in rngs)]
                keys.append(key)
        spec = BlockSpec(tuple(hi - lo for lo, hi in ranges), r.dtype.str, zero, tuple(p for p, _ in passes), nt)
        dsk[(name, *idx)] = (compute_block, spec, *keys)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    return da.Array(graph, name, norm, dtype=r.dtype, meta=np.empty((0,) * len(r.shape), r.dtype))


def jacobian(
    f: Any,
    *args: Any,
    wrt: Any = 0,
    layout: str = "tensor",
    chunks: Any = "auto",
    num_threads: int | None = 1,
    **kwargs: Any,
) -> Any:
    """The exact Jacobian of an op or a numpy function as a lazy ``dask.array.Array``.

    The same Jacobian as :func:`tensorjac.jacobian` (equal values, see Notes),
    in blocks that are computed independently, each touching only its own
    memory: the result may be far larger than memory.  Store it with
    ``.to_zarr(path)``, reduce it (``.sum()``), slice it or combine it like any
    dask array, with any scheduler (threads, processes, ``dask.distributed``).

    Parameters
    ----------
    f : tensorjac op or callable
        As for :func:`tensorjac.jacobian`: a catalogue op or any function
        written with plain numpy.  ``f`` is evaluated (traced) once, here.
    *args, **kwargs
        The arguments of ``f`` (numpy arrays); those not named in ``wrt`` are
        constants.
    wrt : int, str or tuple, default 0
        The argument(s) to differentiate; a tuple gives a tuple of arrays.
    layout : {"tensor", "gradient", "numerator", "matrix", "vec", "diagonal"}
        As for :func:`tensorjac.jacobian`.  Every layout takes any chunks.
    chunks : int, tuple, dict or "auto", default "auto"
        The block shape, in any form ``dask.array.core.normalize_chunks``
        accepts.  "auto" picks blocks of at most 1/8 of the memory budget
        (and dask's ``array.chunk-size``).  A block larger than the budget is
        refused (:class:`tensorjac.JacobianTooLargeError`).
    num_threads : int or None, default 1
        Threads of the C++ kernel within one block (dask already runs blocks
        in parallel); None is the package default.

    Returns
    -------
    dask.array.Array, or a tuple of them
        Of the shape and dtype :func:`tensorjac.jacobian` would return (a
        tuple for a tuple ``wrt`` or a tuple-valued ``f``, as there).

    Raises
    ------
    ImportError
        Without dask (``pip install 'tensorjac[dask]'``).
    JacobianTooLargeError
        A block, or one of the factors of the Jacobian's terms, is larger than
        the memory budget.

    Notes
    -----
    Memory.  The calling process holds ``f``'s trace and the factors of the
    Jacobian's terms.  They are usually small (vectors and matrices of the
    size of ``f``'s arguments and intermediates), but a function whose
    Jacobian is dense has a factor as large as the Jacobian itself; it is then
    cut into the blocks' slices, but it must fit the memory budget of the
    calling process (else :class:`tensorjac.JacobianTooLargeError`).  Each
    block task receives only the factor slices it reads, allocates its block
    (checked against the memory budget of the process that runs it: set
    ``TENSORJAC_MEMORY_BUDGET`` in the environment of dask workers) and
    nothing else.

    Values.  The blocks hold the values of :func:`tensorjac.jacobian`: the
    same terms, summed in the same order by the same kernel.  They are equal
    to the bit, except for a term with three or more factors (some
    composites), whose product the kernel may associate in another order
    inside a block than in the whole result: a few ulp.

    Examples
    --------
    >>> import numpy as np, tensorjac as tj
    >>> import tensorjac.dask as tjd
    >>> x = np.linspace(0.0, 1.0, 6)
    >>> J = tjd.jacobian(lambda x: np.outer(np.sin(x), x), x, chunks=(4, 5, 3))
    >>> J                                     # nothing computed yet
    dask.array<tensorjac-jacobian, shape=(6, 6, 6), dtype=float64, chunksize=(4, 5, 3), chunktype=numpy.ndarray>
    >>> bool(np.array_equal(J.compute(), tj.jacobian(lambda x: np.outer(np.sin(x), x), x)))
    True
    >>> K = tjd.jacobian(tj.kron, np.ones((30, 30)), np.eye(40), layout="matrix", chunks=1000)
    >>> K.shape, K.numblocks                  # 11 GB dense: blocks of 8 MB, computed on demand
    ((1440000, 900), (1440, 1))
    >>> float(K[:2000].sum().compute())       # rows 0..1999: kron(A, B) wrt A is B[k, l] in its place
    50.0
    """
    da, HighLevelGraph = _dask()
    if not isinstance(layout, str) or layout not in ALL_LAYOUTS:
        raise ValueError(f"{_WHAT}: unknown layout {layout!r}; expected one of {', '.join(ALL_LAYOUTS)}")
    nt = _config.resolve_threads(num_threads)
    if isinstance(f, Op) and _plain(args, kwargs):
        res = _op_results(f, args, kwargs, wrt, layout)
        if isinstance(res, tuple):
            return tuple(_array(r, chunks, nt, da, HighLevelGraph) for r in res)
        return _array(res, chunks, nt, da, HighLevelGraph)
    call = _Call(_WHAT, f, args, kwargs, wrt)
    results = _composite_results(call, layout)
    return call.shape_result([[_array(r, chunks, nt, da, HighLevelGraph) for r in row] for row in results])
