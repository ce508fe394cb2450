"""Blocks of a Jacobian written independently from its terms (the engine of ``tensorjac.dask``).

A Jacobian is a sum of terms ``coef * prod F[letters]`` times Kronecker deltas
(tensorjac._terms).  The layout places each letter on result dimensions with
a multiplier (``(dim, mult)`` bindings, tensorjac._layout): a letter on an
output and an input axis (a delta) is bound twice; the letters of a fused axis
(kron's ``(ik)``) or of a flattened layout ("matrix", "vec") share a dimension,
each with the product of the sizes after it as multiplier.

One block of the result covers ``[lo_d, hi_d)`` on every dimension d.  The
assignments of a term's letters that land in it are found dimension by
dimension: the positions on dimension d are ``p = sum_c mult_c * c`` over the
letters bound to d, a mixed-radix number (letters sorted by multiplier, each
dominating the reach of the smaller ones), so ``lo <= p < hi`` is a union of at
most ``2k - 1`` boxes for k letters -- a fixed prefix of leading letters, one
letter restricted to a range, the trailing letters free -- and each box is a
contiguous run of positions.  A block's boxes are the intersections of one box
per dimension (a letter on several dimensions -- a delta -- gets the
intersection of its ranges; empty means the term adds nothing there).  For
each box, every factor is sliced to the box's letter ranges and the C++ expand
kernel (``_core.ExpandPlan``) writes the term into a strided view of the block
starting at the box's first position: a letter restricted to ``[a, b)`` is the
letter ``c - a`` of size ``b - a`` at an offset of ``mult * a``, and the
multipliers stay those of the full result.  So a block touches only its own
memory, never the dense result, for every layout, arbitrary chunks and fused
axes alike.

Like terms (the same structure, consecutive, as ``merge(final=True)`` leaves
them) share their boxes and are written by one kernel call, which sums them
left to right exactly as the in-memory Jacobian does.  When the first group of
like terms covers every entry (no delta), its boxes tile the block and are
written in write mode (no zero fill); otherwise the block starts from zeros
and every box is added (accumulate mode).

This module is numpy and ``_core`` only: :func:`compute_block` runs on dask
workers, and everything it receives (:class:`BlockSpec` and factor slices)
pickles.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _config, _core
from ._layout import letter_places, placement

__all__ = ["BlockSpec", "Group", "Pass", "block_passes", "compute_block", "make_groups"]

# A block whose structure splits into more boxes than this is refused (it cannot happen for the
# engine's terms, whose positions on a dimension are mixed-radix numbers: at most 2k - 1 boxes per
# dimension of k letters; a guard against pathological hand-made terms).
_MAX_BOXES = 1 << 16

Range = tuple[int, int]


@dataclass(frozen=True, eq=False)  # compared and hashed by identity (slices are unhashable before 3.12)
class Pass:
    """One kernel call: the terms of one box written into ``block[view]``.

    ``cterms`` is the ExpandPlan term list (as nested tuples, hashable: the plan cache key),
    ``extent`` the view's shape, ``nslots`` how many factor arrays it takes (the task's next ones).
    """

    view: tuple[slice, ...]
    extent: tuple[int, ...]
    cterms: tuple
    nslots: int
    accumulate: bool


@dataclass(frozen=True, eq=False)
class BlockSpec:
    """Everything a worker needs to write one block, besides its factor slices."""

    shape: tuple[int, ...]
    dtype: str
    zero: bool
    passes: tuple[Pass, ...]
    num_threads: int


class Group:
    """Consecutive like terms: one structure (letters on axes, bindings), several factor lists.

    Letters are renamed to canonical variables 0..V-1 (their order of appearance on the axes).
    ``members`` are ``(coef, [(factor id, variables of its axes), ...])``.
    """

    __slots__ = ("_cache", "bind", "covers", "digits", "members", "reach", "sizes")

    def __init__(self, sizes: list[int], bind: list[list[tuple[int, int]]], covers: bool, ndim: int) -> None:
        self.sizes = sizes
        self.bind = bind
        self.covers = covers
        self.members: list[tuple[complex, list[tuple[int, tuple[int, ...]]]]] = []
        # per dimension: (variable, multiplier) of the letters bound there (size > 1), largest multiplier
        # first, and the reach of the letters after each: sum of mult * (size - 1)
        self.digits: list[list[tuple[int, int, int]]] = []
        self.reach: list[list[int]] = []
        for d in range(ndim):
            mults: dict[int, int] = {}
            for v, places in enumerate(bind):
                for dim, m in places:
                    if dim == d and sizes[v] > 1:
                        mults[v] = mults.get(v, 0) + m
            digs = sorted(((v, m, sizes[v]) for v, m in mults.items()), key=lambda t: -t[1])
            reach = [0] * (len(digs) + 1)
            for k in range(len(digs) - 1, -1, -1):
                reach[k] = reach[k + 1] + digs[k][1] * (digs[k][2] - 1)
            self.digits.append(digs)
            self.reach.append(reach)
        self._cache: dict[tuple[int, int, int], list[dict[int, Range]]] = {}

    def dim_boxes(self, d: int, lo: int, hi: int) -> list[dict[int, Range]]:
        """The assignments whose position on dimension d is in [lo, hi), as boxes (variable -> range;
        variables not named are free)."""
        key = (d, lo, hi)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        digs, reach = self.digits[d], self.reach[d]
        out: list[dict[int, Range]] = []

        def rec(k: int, lo: int, hi: int, fixed: dict[int, Range]) -> None:
            if hi <= lo:
                return
            if k == len(digs):
                if lo <= 0 < hi:
                    out.append(fixed)
                return
            v, m, n = digs[k]
            R = reach[k + 1]
            q0 = max(0, -((R - lo) // m))  # the first q with q*m + R >= lo
            q1 = min(n - 1, (hi - 1) // m)  # the last q with q*m < hi
            if q0 > q1:
                return
            f0 = max(q0, -(-lo // m))  # q whose whole run [q*m, q*m + R] is inside [lo, hi)
            f1 = min(q1, (hi - 1 - R) // m)
            partial: Iterable[int] = range(q0, q1 + 1)
            if f0 <= f1:
                out.append({**fixed, v: (f0, f1 + 1)})
                partial = itertools.chain(range(q0, f0), range(f1 + 1, q1 + 1))
            for q in partial:
                if len(out) > _MAX_BOXES:
                    raise ValueError(
                        f"tensorjac.dask: a block splits into more than {_MAX_BOXES} pieces along dimension {d}; "
                        "use chunks that span that dimension whole"
                    )
                rec(k + 1, lo - q * m, hi - q * m, {**fixed, v: (q, q + 1)})

        rec(0, lo, hi, {})
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = out
        return out


def make_groups(
    terms: Sequence[tuple[complex, Sequence[Sequence[Hashable]], Sequence[Sequence[Hashable]],
                          Sequence[tuple[int, Sequence[Hashable]]]]],
    sizes: dict[Any, int], layout: str, out_shape: tuple[int, ...], in_shape: tuple[int, ...],
) -> list[Group]:
    """Terms ``(coef, out axes, input axes, [(factor id, factor letters), ...])`` as groups of like terms
    (consecutive terms with the same structure), with their bindings in ``layout``."""
    shape, out_place, in_place = placement(layout, out_shape, in_shape)
    groups: list[Group] = []
    last_key: Any = None
    for coef, out_axes, in_axes, facs in terms:
        cmap: dict[Any, int] = {}
        for ax in (*out_axes, *in_axes):
            for c in ax:
                cmap.setdefault(c, len(cmap))
        vsizes = [0] * len(cmap)
        for c, v in cmap.items():
            vsizes[v] = int(sizes[c])
        key = (
            tuple(tuple(cmap[c] for c in ax) for ax in out_axes),
            tuple(tuple(cmap[c] for c in ax) for ax in in_axes),
            tuple(vsizes),
        )
        if key != last_key:
            bind: list[list[tuple[int, int]]] = [[] for _ in vsizes]
            for c, dim, mult in letter_places(out_axes, in_axes, out_place, in_place, sizes):
                bind[cmap[c]].append((dim, mult))
            n_letters = sum(len(ax) for ax in (*out_axes, *in_axes))
            groups.append(Group(vsizes, bind, n_letters == len(cmap), len(shape)))
            last_key = key
        for _, ls in facs:
            unknown = [c for c in ls if c not in cmap]
            if unknown:
                raise AssertionError(f"factor letters {unknown} are not bound to any axis")
        groups[-1].members.append((complex(coef), [(fid, tuple(cmap[c] for c in ls)) for fid, ls in facs]))
    return groups


def _boxes(g: Group, ranges: Sequence[Range]) -> list[dict[int, Range]]:
    per_dim = [g.dim_boxes(d, lo, hi) for d, (lo, hi) in enumerate(ranges)]
    if any(not b for b in per_dim):
        return []
    out = []
    for combo in itertools.product(*per_dim):
        box: dict[int, Range] = {}
        for part in combo:
            for v, (a, b) in part.items():
                if v in box:
                    a, b = max(a, box[v][0]), min(b, box[v][1])
                box[v] = (a, b)
        if all(a < b for a, b in box.values()):
            out.append(box)
    if len(out) > _MAX_BOXES:
        raise ValueError(f"tensorjac.dask: a block splits into {len(out)} pieces; use larger or aligned chunks")
    return out


def block_passes(
    groups: Sequence[Group], ranges: Sequence[Range]
) -> tuple[bool, list[tuple[Pass, list[tuple[int, tuple[Range, ...]]]]]]:
    """The kernel calls writing the block ``ranges`` (one ``[lo, hi)`` per result dimension): whether
    the block must start from zeros, and each pass with its factor slices ``(factor id, ranges per axis)``."""
    if any(lo >= hi for lo, hi in ranges):
        return True, []
    zero = not (groups and groups[0].covers)
    passes: list[tuple[Pass, list[tuple[int, tuple[Range, ...]]]]] = []
    ndim = len(ranges)
    for gi, g in enumerate(groups):
        accumulate = gi > 0 or zero
        for box in _boxes(g, ranges):
            rng = [box.get(v, (0, n)) for v, n in enumerate(g.sizes)]
            vsizes = tuple(b - a for a, b in rng)
            off = [-lo for lo, _ in ranges]
            ext = [1] * ndim
            bindings = []
            for v, places in enumerate(g.bind):
                a, n = rng[v][0], vsizes[v]
                for dim, m in places:
                    off[dim] += m * a
                    ext[dim] += m * (n - 1)
                    bindings.append((v, dim, m))
            cterms = []
            refs: list[tuple[int, tuple[Range, ...]]] = []
            for coef, facs in g.members:
                frefs = []
                for fid, vs in facs:
                    frefs.append((len(refs), vs))
                    refs.append((fid, tuple(rng[v] for v in vs)))
                cterms.append((coef, vsizes, tuple(bindings), tuple(frefs)))
            view = tuple(slice(o, o + e) for o, e in zip(off, ext))
            passes.append((Pass(view, tuple(ext), tuple(cterms), len(refs), accumulate), refs))
    return zero, passes


# ----------------------------------------------------------------------------- on the workers

_PLANS: OrderedDict[tuple, Any] = OrderedDict()
_PLANS_MAX = 256
_PLANS_LOCK = threading.Lock()  # blocks are computed from several threads (dask's threaded scheduler)


def _plan(p: Pass, dtype: np.dtype) -> Any:
    """The ExpandPlan of a pass, cached per process by its terms and extent (blocks of one chunk
    pattern share them)."""
    key = (p.cterms, p.extent, dtype.str)
    with _PLANS_LOCK:
        plan = _PLANS.get(key)
        if plan is not None:
            _PLANS.move_to_end(key)
            return plan
    terms = [(c, list(s), [tuple(b) for b in bs], [(sl, list(vs)) for sl, vs in fr]) for c, s, bs, fr in p.cterms]
    plan = _core.ExpandPlan(terms, list(p.extent), p.nslots, dtype)
    with _PLANS_LOCK:
        _PLANS[key] = plan
        if len(_PLANS) > _PLANS_MAX:
            _PLANS.popitem(last=False)
    return plan


def compute_block(spec: BlockSpec, *factors: np.ndarray) -> np.ndarray:
    """One block of the Jacobian, from its passes and factor slices (in the passes' order).

    The block is checked against this process's memory budget before it is allocated.
    """
    dtype = np.dtype(spec.dtype)
    _config.check_budget(spec.shape, dtype.itemsize, what="Jacobian block")
    out = np.zeros(spec.shape, dtype) if spec.zero else np.empty(spec.shape, dtype)
    k = 0
    with np.errstate(all="ignore"):
        for p in spec.passes:
            fs = factors[k : k + p.nslots]
            k += p.nslots
            view = out[p.view] if p.view else out  # (a 0-d block indexed by () would be a scalar copy)
            _plan(p, dtype)(view, fs, spec.num_threads, p.accumulate)
    return out
