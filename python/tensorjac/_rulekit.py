"""Helpers for writing rules: index letters, numpy broadcasting and axes, einsum-shaped rules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._deriv import LETTERS, Deriv

__all__ = [
    "bcast_letters", "einsum_deriv", "letters", "need_ndim", "need_square", "normalize_axes",
    "squeezed_factor",
]  # fmt: skip


def letters(ndim: int, start: int = 0) -> str:
    if start + ndim > len(LETTERS):
        raise ValueError(f"arrays of rank {ndim} are not supported here (at most {len(LETTERS) - start})")
    return LETTERS[start : start + ndim]


def need_ndim(op: str, name: str, shape: tuple, ndims: tuple[int, ...]) -> None:
    if len(shape) not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{op}: {name} must be {want}, got shape {shape}")


def need_square(op: str, name: str, shape: tuple, stacked: bool = False) -> None:
    if stacked:
        if len(shape) < 2:
            raise ValueError(f"{op}: {name} must be a square matrix or a stack of them, got shape {shape}")
    else:
        need_ndim(op, name, shape, (2,))
    if shape[-1] != shape[-2]:
        raise ValueError(f"{op}: {name} must be square in its last two axes, got shape {shape}")


def normalize_axes(axis: Any, ndim: int, op: str = "reduction") -> tuple[int, ...] | None:
    """numpy's axis argument as a sorted tuple of non-negative ints (None stays None)."""
    if axis is None:
        return None
    seq = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in seq:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"{op}: axis must be an int or a tuple of ints, got {axis!r}")
        if not -ndim <= a < ndim:
            raise np.exceptions.AxisError(int(a), ndim) if hasattr(np, "exceptions") else ValueError(
                f"{op}: axis {a} is out of bounds for an array of dimension {ndim}"
            )
        out.append(int(a) % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: duplicate value in axis {axis!r}")
    return tuple(sorted(out))


def bcast_letters(out_letters: str, out_shape: tuple[int, ...], in_shape: tuple[int, ...], fresh: list[str]) -> str:
    """Letters of an operand broadcast to ``out_shape``: shared where the sizes agree,
    a fresh size-1 letter where the operand is broadcast (taken from ``fresh``)."""
    k = len(out_shape) - len(in_shape)
    if k < 0:
        raise AssertionError("operand of higher rank than the broadcast result")
    res = []
    for d, n in enumerate(in_shape):
        if n == out_shape[k + d]:
            res.append(out_letters[k + d])
        elif n == 1:
            res.append(fresh.pop())
        else:
            raise ValueError(f"shapes {in_shape} and {out_shape} do not broadcast")
    return "".join(res)


def squeezed_factor(out_letters: str, out_shape: tuple[int, ...], shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    """For an array of ``shape`` broadcastable to ``out_shape``: the letters of its non-broadcast
    axes and the axes to squeeze away (so the factor carries no size-1 broadcast axes)."""
    k = len(out_shape) - len(shape)
    keep, drop = [], []
    for d, n in enumerate(shape):
        if n == out_shape[k + d] and n != 1:
            keep.append(out_letters[k + d])
        elif n == 1:
            drop.append(d)
        else:
            raise ValueError(f"shapes {shape} and {out_shape} do not broadcast")
    return "".join(keep), tuple(drop)


def einsum_deriv(specs: Sequence[str], out: str, shapes: Sequence[tuple[int, ...]], wrt: int) -> Deriv:
    """The Deriv of ``einsum(",".join(specs) + "->" + out, *operands)`` in operand ``wrt``.

    Specs are explicit (no ellipsis); a letter repeated within one operand is a
    diagonal, a letter of size 1 in one operand and n in another must have been
    renamed apart by the caller (broadcasting).  The factor is the product of
    the other operands, contracted over letters that are on neither side.
    """
    sizes: dict[str, int] = {}
    for s, shape in zip(specs, shapes):
        for c, n in zip(s, shape):
            if sizes.setdefault(c, n) != n:
                raise ValueError(f"einsum: letter {c!r} has sizes {sizes[c]} and {n}")
    mine = specs[wrt]
    others = [(i, s) for i, s in enumerate(specs) if i != wrt]
    if not others:
        return Deriv(out, mine, [(1, ())], sizes=sizes)
    keep_set = set(out) | set(mine)
    fl = "".join(dict.fromkeys(c for _, s in others for c in s if c in keep_set))
    idx = [i for i, _ in others]
    subs = ",".join(s for _, s in others) + "->" + fl
    plain = len(others) == 1 and others[0][1] == fl

    def factors(*ops: np.ndarray, **_: Any) -> tuple[np.ndarray]:
        if plain:
            return (ops[idx[0]],)
        return (np.einsum(subs, *[ops[i] for i in idx], optimize=len(idx) > 2),)

    return Deriv(out, mine, [(1, (fl,))], factors, sizes=sizes)
