"""From terms to the C++ expand kernel: one ``_core.ExpandPlan`` per structure and layout.

A term here is ``(coef, out_axes, inp_axes, factor_letters)``: the axis groups
of F's axes and of X's axes (each a tuple of letters, C order inside a fused
axis) and the letters of each factor array.  Letters may be any hashable keys
(the ops use characters, composite functions integers).  The layout decides
only the stride of each letter (tensorjac._layout.layout_placement), so every
layout is written directly, without a temporary.

Like terms are fused by the kernel (cpp/include/tensorjac/expand.hpp):
consecutive terms over the same result entries (the same letter sizes on the
same axes, whatever the letters are called) are written in one pass over the
result, each entry summed left to right exactly as separate passes would sum
it.  So pass like terms as separate terms, next to each other, rather than
densifying them into one factor; put a term that covers every entry (no
delta) first, so that the result needs no zero fill.  Limits: 8 factors per
term; a pass takes up to 8 terms with 16 factors in all (longer runs take
several passes; up to 4 terms per pass is fastest).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from . import _core
from ._deriv import Deriv
from ._layout import letter_places, placement

__all__ = ["build_expand_plan", "expand_plan"]

TermSpec = tuple[complex, Sequence[Sequence[Hashable]], Sequence[Sequence[Hashable]], Sequence[Sequence[Hashable]]]


def expand_plan(
    terms: Sequence[TermSpec],
    sizes: Mapping[Any, int],
    layout: str,
    out_shape: tuple[int, ...],
    in_shape: tuple[int, ...],
    dtype: np.dtype,
    batch: int | None = None,
    hess: int | None = None,
) -> tuple[tuple[int, ...], Any]:
    """The result shape and the C++ plan writing ``sum(terms)`` in ``layout`` (per sample along
    axis ``batch`` of both sides, when given: see tensorjac._layout.placement)."""
    shape, out_place, in_place = placement(layout, out_shape, in_shape, batch, hess)
    cterms = []
    slot = 0
    for coef, out_axes, in_axes, factor_letters in terms:
        letters = list(dict.fromkeys(c for ax in (*out_axes, *in_axes) for c in ax))
        var = {c: i for i, c in enumerate(letters)}
        bindings = [(var[c], dim, mult) for c, dim, mult in letter_places(out_axes, in_axes, out_place, in_place, sizes)]
        frefs = []
        for g in factor_letters:
            unknown = [c for c in g if c not in var]
            if unknown:
                raise AssertionError(f"factor letters {unknown} are not bound to any axis")
            frefs.append((slot, [var[c] for c in g]))
            slot += 1
        cterms.append((complex(coef), [int(sizes[c]) for c in letters], bindings, frefs))
    return shape, _core.ExpandPlan(cterms, list(shape), slot, dtype)


def build_expand_plan(
    deriv: Deriv, layout: str, out_shape: tuple[int, ...], in_shape: tuple[int, ...], dtype: np.dtype
) -> tuple[tuple[int, ...], Any]:
    """The C++ ExpandPlan of one op's Deriv for one layout."""
    sizes = deriv.letter_sizes(out_shape, in_shape)
    terms = [(coef, deriv.out, deriv.inp, groups) for coef, groups in deriv.terms]
    return expand_plan(terms, sizes, layout, out_shape, in_shape, dtype)
