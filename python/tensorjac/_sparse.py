"""Sparse Jacobians: ``scipy.sparse`` arrays written straight from the terms.

A term ``coef * prod F[letters]`` times Kronecker deltas has as its structural
nonzeros exactly one entry per assignment of its letters: the deltas tie the
output and input axes that share a letter, so no assignment is ever wasted
and none repeats.  Each letter adds ``value * mult`` to the coordinate of the
result dimensions it is placed on (the layout's strides, as for the dense
expand kernel).  Enumerating the letters in the order of their most
significant place makes the coordinates come out sorted -- row-major for
"csr" and "coo", column-major for "csc" -- so a one-term Jacobian is a
canonical sparse array built in one pass over its nonzeros, with ``indptr``
from the rows actually present; the dense result is never formed.  Several
terms (whose patterns may overlap) are added by scipy.

The C++ kernels (sparse.hpp) write the coordinates straight into their final
int32/int64 arrays and the values (products of the factors, with their
finiteness) in one pass; a lone factor the program computed, already in the
grid's order, becomes the values without a copy.  scipy's constructors get
canonical arrays and are kept from re-checking or copying them.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from . import _config, _core
from ._layout import placement, prod
from ._terms import Algebra, F, Term, _astype, _matmul, _scale, _stack, fold_coef, merge

__all__ = ["FORMATS", "check_format", "sparse_jacobian"]

FORMATS = ("dense", "coo", "csr", "csc")
_INT32_MAX = np.iinfo(np.int32).max
# Program operations whose result is always a new array of its own (never a view or an input).
_FRESH_OPS = (np.multiply, np.add, _scale, _astype, _stack, _matmul)


def _scipy_sparse() -> Any:
    try:
        return importlib.import_module("scipy.sparse")
    except ImportError:
        raise ImportError(
            "tensorjac: format='coo'/'csr'/'csc' returns scipy.sparse arrays and needs scipy; install it "
            "with pip install 'tensorjac[sparse]' (or pip install scipy)"
        ) from None


def check_format(fmt: Any, layout: str, what: str, batch_axis: Any = None, out: Any = None) -> str:
    """Validate ``format=``; returns it.  Sparse formats need the "matrix" or "vec" layout."""
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise ValueError(f"{what}: unknown format {fmt!r}; expected one of {', '.join(map(repr, FORMATS))}")
    if fmt == "dense":
        return fmt
    if layout not in ("matrix", "vec"):
        raise ValueError(
            f"{what}: format={fmt!r} needs layout='matrix' or layout='vec' (a sparse array is 2-D), "
            f"got layout={layout!r}"
        )
    if batch_axis is not None:
        raise ValueError(f"{what}: format={fmt!r} and batch_axis cannot be combined (per-sample blocks are dense)")
    if out is not None:
        raise ValueError(f"{what}: out= is for dense results; format={fmt!r} returns a new scipy.sparse array")
    _scipy_sparse()
    return fmt


def _places(t: Term, layout: str, out_shape: tuple[int, ...], in_shape: tuple[int, ...],
            sizes: dict[int, int], hess: int | None) -> tuple[tuple[int, ...], dict[int, list[int]]]:
    """The result's shape and each letter's multiplier on every result dimension."""
    shape, out_place, in_place = placement(layout, out_shape, in_shape, None, hess)
    mults: dict[int, list[int]] = {}
    for axes, places in ((t.out, out_place), (t.inp, in_place)):
        for ax, place in zip(axes, places):
            assert place is not None
            dim, mult = place
            for c in reversed(ax):
                mults.setdefault(c, [0] * len(shape))[dim] += mult
                mult *= sizes[c]
    return shape, mults


def _grid_order(mults: dict[int, list[int]], dims: tuple[int, ...]) -> list[int]:
    """Letters in the order that enumerates the entries sorted by the result dimensions ``dims``
    (most significant first): by each letter's largest multiplier on ``dims[0]``, then ``dims[1]``..."""
    return sorted(mults, key=lambda c: tuple(-mults[c][d] for d in dims))


def _index(grid: list[int], sizes: dict[int, int], mult: dict[int, int], n: int, idx: np.dtype,
           nt: int) -> np.ndarray:
    """A new ``idx`` array of ``n`` entries: ``sum_c letter_c * mult[c]`` over the row-major grid of the
    letters ``grid`` (each of size > 1), written by the C++ kernel straight into its final dtype."""
    out = np.empty(n, idx)
    if n:
        if grid:
            _core.sparse_index(out, np.array([sizes[c] for c in grid], np.int64),
                               np.array([mult[c] for c in grid], np.int64), nt)
        else:
            out.fill(0)
    return out


def _fresh(alg: Algebra, f: F) -> bool:
    """Whether a factor's array was made by the program (a ufunc, astype, stack or matmul result:
    never a view, a rule's array or a user's array), so that a result may keep it as its values."""
    a = f.a
    return (isinstance(a, np.ndarray) and a.base is None and a.flags.c_contiguous and a.flags.writeable
            and alg.prog.ins[f.r][0] in _FRESH_OPS)


def _values(alg: Algebra, t: Term, order: list[int], grid: list[int], dtype: np.dtype, nnz: int, nt: int,
            taken: set[int] | None) -> tuple[np.ndarray, bool]:
    """``coef * prod F[letters]`` over the grid (broadcast over the letters no factor has), and whether
    every value is finite.  ``order`` is every letter of the term's axes, ``grid`` those of size > 1.
    A lone factor the program made, already in the grid's order and dtype, is the result's values as
    it is (no copy); its register then goes into ``taken`` (no other result may keep it)."""
    sizes = alg.sizes
    coef, facs = fold_coef(alg, t, dtype)
    if not facs:
        data = np.full(nnz, coef, dtype)
        return data, bool(np.isfinite(data[:1]).all())
    if taken is not None and len(facs) == 1:
        f, ls = facs[0]
        if (f.a.dtype == dtype and f.a.size == nnz and f.r not in taken and _fresh(alg, f)
                and [c for c in ls if sizes[c] > 1] == grid):
            taken.add(f.r)
            data = f.a.reshape(-1)
            return data, nnz == 0 or _core.all_finite(data, nt)
    data = np.empty(nnz, dtype)
    arrs: list[np.ndarray] = []
    strides: list[int] = []
    for f, ls in facs:
        a = f.a
        extra = [c for c in ls if c not in order]
        if extra:  # a letter on no axis: contracted (not produced by the engine's final terms)
            keep = [c for c in ls if c in order]
            sub = {c: chr(ord("a") + i) for i, c in enumerate(dict.fromkeys(ls))}
            a = np.einsum(f"{''.join(sub[c] for c in ls)}->{''.join(sub[c] for c in keep)}", a)
            ls = tuple(keep)
        a = np.asarray(a)
        if a.dtype != dtype:  # the factors in the result's dtype first, as the dense path does
            a = a.astype(dtype)
        if any(s % a.itemsize for s in a.strides):
            a = np.ascontiguousarray(a)
        arrs.append(a)
        # a letter the factor has twice (a diagonal) steps along both of its axes
        strides.extend(sum(a.strides[k] // a.itemsize for k, lc in enumerate(ls) if lc == c) for c in grid)
    if not nnz:
        return data, True
    if not grid:  # a single entry
        grid_sizes, strides = np.ones(1, np.int64), [0] * len(arrs)
    else:
        grid_sizes = np.array([sizes[c] for c in grid], np.int64)
    return data, _core.sparse_values(data, arrs, np.array(strides, np.int64), grid_sizes, nt)


def _term_parts(alg: Algebra, t: Term, layout: str, out_shape: tuple[int, ...], in_shape: tuple[int, ...],
                dtype: np.dtype, fmt: str, hess: int | None, idx: np.dtype, nt: int,
                taken: set[int] | None) -> tuple[np.ndarray, bool, Any]:
    """One term's values, their finiteness, and a function making its index arrays: (indices, indptr)
    for csr/csc, the coordinates for coo (the values come first, so that factors can be freed before
    the indices are allocated)."""
    sizes = alg.sizes
    shape, mults = _places(t, layout, out_shape, in_shape, sizes, hess)
    dims = (1, 0) if fmt == "csc" else tuple(range(len(shape)))
    order = _grid_order(mults, dims)
    grid = [c for c in order if sizes[c] > 1]
    nnz = prod([sizes[c] for c in order])
    data, finite = _values(alg, t, order, grid, dtype, nnz, nt, taken)

    def coo() -> tuple[np.ndarray, ...]:
        return tuple(_index(grid, sizes, {c: mults[c][d] for c in grid}, nnz, idx, nt) for d in range(len(shape)))

    def compressed() -> tuple[np.ndarray, np.ndarray]:
        major, minor = dims
        n_lead = sum(1 for c in order if mults[c][major])
        assert all(mults[c][major] for c in order[:n_lead])
        lead = [c for c in order[:n_lead] if sizes[c] > 1]
        per_row = prod([sizes[c] for c in order[n_lead:]])
        indices = _index(grid, sizes, {c: mults[c][minor] for c in grid}, nnz, idx, nt)
        n_rows = prod([sizes[c] for c in order[:n_lead]])
        if n_rows == shape[major]:  # every row is present (the rows are strictly increasing): a regular indptr
            indptr = _index([-1], {-1: n_rows + 1}, {-1: per_row}, n_rows + 1, idx, nt)
        else:
            rows = _index(lead, sizes, {c: mults[c][major] for c in lead}, n_rows, np.dtype(np.intp), nt)
            indptr = np.zeros(shape[major] + 1, idx)
            indptr[rows + 1] = per_row
            np.cumsum(indptr, out=indptr)
        return indices, indptr

    return data, finite, coo if fmt == "coo" else compressed


def sparse_jacobian(
    alg: Algebra, terms: list[Term], out_shape: tuple[int, ...], in_shape: tuple[int, ...], layout: str,
    dtype: np.dtype, fmt: str, hess: int | None = None, num_threads: int = 0, taken: set[int] | None = None,
) -> tuple[Any, bool]:
    """The Jacobian (or, with ``hess``, the Hessian) of ``terms`` as a scipy.sparse array of format
    ``fmt`` in ``layout`` ("matrix" or "vec"); and whether its values are all finite.

    ``terms`` is consumed (emptied once the values are written, so that its factors can be freed
    before the index arrays are allocated).  With ``taken`` (the registers already kept by other
    results of the same program), a lone factor the program computed becomes the values without
    a copy.  ``num_threads`` as for the C++ kernels (0: the package default)."""
    sp = _scipy_sparse()
    merged = list(merge(alg, terms, final=True))  # (merge may return its argument)
    terms.clear()
    shape, _, _ = placement(layout, out_shape, in_shape, None, hess)
    if len(shape) != 2 and fmt != "coo":
        raise ValueError(
            f"format={fmt!r}: the result has shape {shape}, and only format='coo' holds more than 2 dimensions"
        )
    nnz = [prod([alg.sizes[c] for c in {c for g in (*t.out, *t.inp) for c in g}]) for t in merged]
    total = sum(nnz)
    # scipy's rule: coordinates fit int32 when the shape does; csr/csc pointers also count the entries
    top = max((*shape, 0)) if fmt == "coo" else max((*shape, total, 0))
    idx = np.dtype(np.int32 if top <= _INT32_MAX else np.int64)
    n_index = len(shape) if fmt == "coo" else 1
    nbytes = total * (dtype.itemsize + n_index * idx.itemsize) + (0 if fmt == "coo" else (max(shape) + 1) * idx.itemsize)
    if len(merged) > 1:
        nbytes *= 2  # scipy adds the terms into a new array
    _config.check_bytes(
        nbytes, f"the sparse {fmt} Jacobian of shape {shape} with up to {total:,} stored entries"
    )
    if len(merged) != 1:
        taken = None  # several terms are concatenated or added by scipy anyway
    values = []
    for t in merged:
        values.append(_term_parts(alg, t, layout, out_shape, in_shape, dtype, fmt, hess, idx, num_threads, taken))
    merged.clear()  # the factors not kept as values can go before the indices are allocated
    finite = all(ok for _, ok, _ in values)
    if fmt == "coo":
        if not values:
            return sp.coo_array(shape, dtype=dtype), True
        if len(values) == 1:
            data, coords = values[0][0], values[0][2]()
            # the arrays are canonical: skip the constructor's scans of the coordinates
            A = sp.coo_array((data[:0], tuple(c[:0] for c in coords)), shape=shape)
            A.data, A.coords = data, coords
            A.has_canonical_format = True
            return A, finite
        parts = [(d, make()) for d, _, make in values]
        values.clear()
        data = np.concatenate([p[0] for p in parts])
        coords = tuple(np.concatenate(c) for c in zip(*(p[1] for p in parts)))
        del parts
        A = sp.coo_array((data, coords), shape=shape)
        A.sum_duplicates()
        return A, finite
    cls = sp.csr_array if fmt == "csr" else sp.csc_array
    if not values:
        return cls(shape, dtype=dtype), True
    A = None
    for data, _, make in values:
        indices, indptr = make()
        M = cls((data, indices, indptr), shape=shape, copy=False)  # O(1) checks for int32 indices
        M.has_canonical_format = True
        A = M if A is None else A + M
    return A, finite
