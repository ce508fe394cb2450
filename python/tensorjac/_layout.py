"""Layouts of a Jacobian ``T[m..., n...] = dF[m...]/dX[n...]`` and ``out=`` validation.

A layout is nothing but where each axis of ``T`` lands in the result: a
result dimension and a multiplier (for the flattened layouts).  The table in
:func:`layout_placement` *is* the layout contract documented in
``docs/layouts.md``; every kernel writes straight into it with strides.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np

__all__ = [
    "ALL_LAYOUTS", "LAYOUTS", "Layout", "check_layout", "check_out", "layout_placement", "placement", "prod",
]

LAYOUTS = ("tensor", "gradient", "numerator", "matrix", "vec")
ALL_LAYOUTS = LAYOUTS + ("diagonal",)
Layout = Literal["tensor", "gradient", "numerator", "matrix", "vec", "diagonal"]


def prod(xs: Sequence[int]) -> int:
    """Exact product of sizes (Python ints never overflow)."""
    p = 1
    for x in xs:
        p *= int(x)
    return p


def check_layout(layout: Any, allowed: Sequence[str] = ALL_LAYOUTS) -> str:
    if not isinstance(layout, str) or layout not in allowed:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(allowed)}")
    return layout


def layout_placement(
    layout: str, out_shape: tuple[int, ...], in_shape: tuple[int, ...]
) -> tuple[tuple[int, ...], list[tuple[int, int]], list[tuple[int, int] | None]]:
    """Where each axis of T[m..., n...] lands: (result shape, out places, in places).

    A place is (result dimension, multiplier).
    """
    P, R = len(out_shape), len(in_shape)
    if layout == "tensor":
        return out_shape + in_shape, [(p, 1) for p in range(P)], [(P + r, 1) for r in range(R)]
    if layout == "gradient":
        return in_shape + out_shape, [(R + p, 1) for p in range(P)], [(r, 1) for r in range(R)]
    if layout == "numerator":
        return (
            out_shape + in_shape[::-1],
            [(p, 1) for p in range(P)],
            [(P + R - 1 - r, 1) for r in range(R)],
        )
    if layout == "matrix":  # C-order flattening of each side
        return (
            (prod(out_shape), prod(in_shape)),
            [(0, prod(out_shape[p + 1 :])) for p in range(P)],
            [(1, prod(in_shape[r + 1 :])) for r in range(R)],
        )
    if layout == "vec":  # column-major (Fortran) vec of each side
        return (
            (prod(out_shape), prod(in_shape)),
            [(0, prod(out_shape[:p])) for p in range(P)],
            [(1, prod(in_shape[:r])) for r in range(R)],
        )
    if layout == "diagonal":  # only f'(x): the input axes repeat the output's
        return out_shape, [(p, 1) for p in range(P)], [None] * R
    raise AssertionError(layout)


def batch_position(batch_axis: Any, arrays: Sequence[tuple[str, tuple[int, ...]]], what: str) -> int:
    """The per-sample axis ``batch_axis`` of every named array (``(name, shape)`` pairs), which
    must sit at one position of all of them -- a negative axis counts from the end of each array,
    as in numpy -- and have one length.  An output sample may have another rank than an input
    sample (a scalar loss per sample has f's output of shape ``(B,)``)."""
    if isinstance(batch_axis, bool) or not isinstance(batch_axis, (int, np.integer)):
        raise TypeError(f"{what}: batch_axis must be an int or None, got {batch_axis!r}")
    pos = []
    for name, shape in arrays:
        nd = len(shape)
        if not -nd <= batch_axis < nd:
            raise ValueError(f"{what}: batch_axis={batch_axis} is out of range for {name} of shape {shape}")
        pos.append(int(batch_axis) % nd)
    listing = ", ".join(f"{name} {shape}" for name, shape in arrays)
    if len(set(pos)) != 1:
        raise ValueError(
            f"{what}: batch_axis={batch_axis} falls on different axes of {listing}; the batch axis must be "
            "the same axis of f's output and of the inputs -- give it as a non-negative index or move it "
            "with np.moveaxis"
        )
    b = pos[0]
    if len({shape[b] for _, shape in arrays}) != 1:
        raise ValueError(f"{what}: batch_axis={batch_axis} has different lengths: {listing}")
    return b


def placement(
    layout: str, out_shape: tuple[int, ...], in_shape: tuple[int, ...], batch: int | None = None,
    hess: int | None = None,
) -> tuple[tuple[int, ...], list[tuple[int, int] | None], list[tuple[int, int] | None]]:
    """:func:`layout_placement`, or with ``batch`` (an axis of both F and X holding independent
    samples) the per-sample layout: result dimension 0 is the sample, followed by the layout of
    one sample's Jacobian; X's batch axis is placed nowhere (it is tied to F's by a delta).

    With ``hess = P``, the Hessian layouts: ``out_shape`` is f's output (its first P axes) followed
    by x's axes (the inner derivative), ``in_shape`` is x's; "matrix" is ``(M, N, N)`` (``(N, N)``
    when P = 0) with each group flattened in C order, "vec" the same with column-major groups.
    """
    if hess is not None and layout in ("matrix", "vec"):
        groups = [out_shape[:hess], out_shape[hess:], in_shape]
        first = 0 if hess else 1  # a scalar f has no output dimension
        places: list[list[tuple[int, int] | None]] = []
        for d, g in enumerate(groups):
            if layout == "matrix":
                places.append([(d - first, prod(g[r + 1 :])) for r in range(len(g))])
            else:
                places.append([(d - first, prod(g[:r])) for r in range(len(g))])
        shape = tuple(prod(g) for g in groups[first:])
        return shape, places[0] + places[1], places[2]
    if batch is None:
        return layout_placement(layout, out_shape, in_shape)  # type: ignore[return-value]
    os_ = out_shape[:batch] + out_shape[batch + 1 :]
    is_ = in_shape[:batch] + in_shape[batch + 1 :]
    shape, op, ip = layout_placement(layout, os_, is_)
    op2: list[tuple[int, int] | None] = [(d + 1, m) for d, m in op]
    ip2: list[tuple[int, int] | None] = [None if p is None else (p[0] + 1, p[1]) for p in ip]
    op2.insert(batch, (0, 1))
    ip2.insert(batch, None)
    return (out_shape[batch], *shape), op2, ip2


def letter_places(
    out_axes: Sequence[Sequence[Any]], in_axes: Sequence[Sequence[Any]],
    out_place: Sequence[tuple[int, int] | None], in_place: Sequence[tuple[int, int] | None],
    sizes: Any,
) -> Iterator[tuple[Any, int, int]]:
    """``(letter, result dimension, multiplier)`` for every letter of a term's output and input axes,
    given the axes' places from :func:`placement` (letters of a fused axis in C order; an axis placed
    nowhere binds nothing).  A letter on several axes appears once per axis: a delta between them."""
    for axes, places in ((out_axes, out_place), (in_axes, in_place)):
        for ax, place in zip(axes, places):
            if place is None:
                continue
            dim, mult = place
            for c in reversed(tuple(ax)):
                yield c, dim, mult
                mult *= int(sizes[c])


def _self_overlaps(a: np.ndarray) -> bool:
    """True when two different indices of ``a`` address the same memory."""
    dims = [(abs(s), n) for s, n in zip(a.strides, a.shape) if n > 1]
    if a.size == 0 or not dims:
        return False
    dims.sort()
    reach = a.itemsize  # bytes spanned by the faster dimensions so far
    for s, n in dims:
        if s < reach:
            break
        reach = s * (n - 1) + reach
    else:
        return False  # every stride clears the span of the faster ones: injective
    if a.size > 1 << 22:  # too big to enumerate; treat an interleaved layout as overlapping
        return True
    offsets = np.zeros(1, np.int64)
    for s, n in zip(a.strides, a.shape):
        offsets = (offsets[:, None] + s * np.arange(n, dtype=np.int64)[None, :]).ravel()
    offsets.sort()
    return bool(np.any(np.diff(offsets) < a.itemsize))


def check_out(out: Any, shape: tuple[int, ...], dtype: np.dtype, inputs: Sequence[Any] = ()) -> None:
    """``out=`` must match exactly, be writable, not overlap itself and not overlap an input."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(
            f"out has shape {out.shape} and dtype {out.dtype}; expected shape {shape} and dtype {dtype}"
        )
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    if _self_overlaps(out):
        raise ValueError(
            f"out (shape {out.shape}, strides {out.strides}) overlaps itself: several of its entries share "
            "memory, so a Jacobian cannot be written into it; pass an array without overlapping strides"
        )
    for a in inputs:
        if isinstance(a, np.ndarray) and np.may_share_memory(out, a):
            raise ValueError("out overlaps an input array; pass a separate output buffer")
