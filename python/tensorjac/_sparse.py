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
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from . import _config
from ._layout import placement, prod
from ._terms import Algebra, Term, fold_coef, merge

__all__ = ["FORMATS", "check_format", "sparse_jacobian"]

FORMATS = ("dense", "coo", "csr", "csc")
_INT32_MAX = np.iinfo(np.int32).max


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


def _coords(order: list[int], sizes: dict[int, int], mults: dict[int, list[int]], d: int,
            target: np.ndarray) -> None:
    """``target[grid] = sum_c letter_c * mult_c[d]``, written in one pass over the grid."""
    present = [k for k, c in enumerate(order) if mults[c][d] and sizes[c] > 1]
    if not present:
        target.fill(0)
        return
    small = np.zeros((), target.dtype)
    for k in present[:-1]:
        c = order[k]
        small = np.add.outer(small, np.arange(sizes[c], dtype=target.dtype) * mults[c][d])
    k_last = present[-1]
    c = order[k_last]
    shp = [1] * len(order)
    for k in present[:-1]:
        shp[k] = sizes[order[k]]
    last = [1] * len(order)
    last[k_last] = sizes[c]
    np.add(small.reshape(shp), (np.arange(sizes[c], dtype=target.dtype) * mults[c][d]).reshape(last), out=target)


def _values(alg: Algebra, t: Term, order: list[int], dtype: np.dtype, target: np.ndarray) -> None:
    """``target[grid] = coef * prod F[letters]`` (broadcast over the letters no factor has)."""
    coef, facs = fold_coef(alg, t, dtype)
    if not facs:
        target.fill(coef)
        return
    arrs = []
    for f, ls in facs:
        a = f.a
        extra = [c for c in ls if c not in order]
        if extra:  # a letter on no axis: contracted (not produced by the engine's final terms)
            keep = [c for c in ls if c in order]
            sub = {c: chr(ord("a") + i) for i, c in enumerate(ls)}
            a = np.einsum(f"{''.join(sub[c] for c in ls)}->{''.join(sub[c] for c in keep)}", a)
            ls = tuple(keep)
        present = [c for c in order if c in ls]
        a = np.transpose(a, [ls.index(c) for c in present])
        arrs.append(a.reshape([alg.sizes[c] if c in ls else 1 for c in order]))
    if len(arrs) == 1:
        np.copyto(target, arrs[0], casting="unsafe")
        return
    np.multiply(arrs[0], arrs[1], out=target, casting="unsafe")
    for a in arrs[2:]:
        np.multiply(target, a, out=target, casting="unsafe")


def _term_parts(alg: Algebra, t: Term, layout: str, out_shape: tuple[int, ...], in_shape: tuple[int, ...],
                dtype: np.dtype, fmt: str, hess: int | None, idx: np.dtype) -> tuple[Any, ...]:
    """One term's canonical sparse arrays: (data, indices, indptr) for csr/csc, (data, coords) for coo."""
    sizes = alg.sizes
    shape, mults = _places(t, layout, out_shape, in_shape, sizes, hess)
    dims = (1, 0) if fmt == "csc" else tuple(range(len(shape)))
    order = _grid_order(mults, dims)
    grid = [sizes[c] for c in order]
    nnz = prod(grid)
    data = np.empty(nnz, dtype)
    _values(alg, t, order, dtype, data.reshape(grid))
    if fmt == "coo":
        coords = []
        for d in range(len(shape)):
            ix = np.empty(nnz, idx)
            _coords(order, sizes, mults, d, ix.reshape(grid))
            coords.append(ix)
        return data, tuple(coords)
    major, minor = dims
    n_lead = sum(1 for c in order if mults[c][major])
    assert all(mults[c][major] for c in order[:n_lead])
    lead = order[:n_lead]
    per_row = prod(grid[n_lead:])
    indices = np.empty(nnz, idx)
    _coords(order, sizes, mults, minor, indices.reshape(grid))
    n_rows = prod(grid[:n_lead])
    if n_rows == shape[major]:  # every row is present (the rows are strictly increasing): a regular indptr
        indptr = np.arange(0, (n_rows + 1) * per_row, per_row, dtype=idx) if per_row else np.zeros(n_rows + 1, idx)
    else:
        rows = np.empty(n_rows, np.intp)
        _coords(lead, sizes, mults, major, rows.reshape(grid[:n_lead]))
        indptr = np.zeros(shape[major] + 1, idx)
        indptr[rows + 1] = per_row
        np.cumsum(indptr, out=indptr)
    return data, indices, indptr


def sparse_jacobian(
    alg: Algebra, terms: list[Term], out_shape: tuple[int, ...], in_shape: tuple[int, ...], layout: str,
    dtype: np.dtype, fmt: str, hess: int | None = None,
) -> tuple[Any, bool]:
    """The Jacobian (or, with ``hess``, the Hessian) of ``terms`` as a scipy.sparse array of format
    ``fmt`` in ``layout`` ("matrix" or "vec"); and whether its values are all finite."""
    sp = _scipy_sparse()
    terms = merge(alg, terms, final=True)
    shape, _, _ = placement(layout, out_shape, in_shape, None, hess)
    if len(shape) != 2 and fmt != "coo":
        raise ValueError(
            f"format={fmt!r}: the result has shape {shape}, and only format='coo' holds more than 2 dimensions"
        )
    nnz = [prod([alg.sizes[c] for c in {c for g in (*t.out, *t.inp) for c in g}]) for t in terms]
    total = sum(nnz)
    idx = np.dtype(np.int32 if max((*shape, total, 0)) <= _INT32_MAX else np.int64)
    n_index = len(shape) if fmt == "coo" else 1
    nbytes = total * (dtype.itemsize + n_index * idx.itemsize) + (0 if fmt == "coo" else (max(shape) + 1) * idx.itemsize)
    if len(terms) > 1:
        nbytes *= 2  # scipy adds the terms into a new array
    _config.check_bytes(
        nbytes, f"the sparse {fmt} Jacobian of shape {shape} with up to {total:,} stored entries"
    )
    parts = [_term_parts(alg, t, layout, out_shape, in_shape, dtype, fmt, hess, idx) for t in terms]
    finite = all(bool(np.isfinite(p[0]).all()) for p in parts)
    if fmt == "coo":
        if not parts:
            return sp.coo_array(shape, dtype=dtype), True
        data = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
        coords = parts[0][1] if len(parts) == 1 else tuple(np.concatenate(c) for c in zip(*(p[1] for p in parts)))
        A = sp.coo_array((data, coords), shape=shape)
        if len(parts) == 1:
            A.has_canonical_format = True
        else:
            A.sum_duplicates()
        return A, finite
    cls = sp.csr_array if fmt == "csr" else sp.csc_array
    if not parts:
        return cls(shape, dtype=dtype), True
    mats = []
    for data, indices, indptr in parts:
        M = cls((data, indices, indptr), shape=shape)
        M.has_canonical_format = True
        mats.append(M)
    A = mats[0]
    for M in mats[1:]:
        A = A + M
    return A, finite
