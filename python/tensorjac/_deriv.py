"""``Deriv``: the Jacobian of one op with respect to one argument, as terms over index letters.

A term is a product of small factor arrays over named index letters, times
Kronecker deltas.  A delta is written by reusing a letter: in
``Deriv(out="ij", inp="ij", terms=[(1, ("ij",))])`` (Hadamard with W) the
output letters i, j and the input letters i, j are the same variables, so the
Jacobian is ``W[i,j] δ(i,k) δ(j,l)``.  Axes may be fused from several letters,
written in parentheses (C order inside the group): kron's output is
``"(ik)(jl)"``.  A letter on an axis but in no factor means "constant along
that axis"; a letter on an output axis only means the Jacobian is constant
along it (broadcasting).

From one ``Deriv`` the package derives every layout of the dense Jacobian (the
C++ expand kernel), the batched VJP and JVP (einsum contractions of the same
terms), and the chain rule of composite functions (tensorjac._terms).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["LETTERS", "Deriv", "parse_axes"]

LETTERS = string.ascii_lowercase + string.ascii_uppercase


def parse_axes(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"ij"`` -> ("i", "j"); ``"(ik)(jl)"`` -> ("ik", "jl"); a sequence of groups is taken as is."""
    if not isinstance(spec, str):
        return tuple(spec)
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

    Parameters
    ----------
    out, inp : str or sequence of str
        Axis specs of F's and X's axes (``"ij"``, or ``"(ik)(jl)"`` for fused
        axes; see ``parse_axes``); every axis's letters must multiply to
        exactly its length.
    terms : sequence of (coef, tuple of str)
        ``[(coef, (letters_of_factor_0, letters_of_factor_1, ...)), ...]``;
        the factor arrays are consecutive slots of ``factors(*args)``.
    factors : callable
        Takes the op's arguments and returns every term's factor arrays,
        flattened in order.
    sizes : dict, optional
        Letter sizes that cannot be read off unfused axes.
    vjp, jvp : callable, optional
        Structured formulas ``vjp(G, *args)`` / ``jvp(V, *args)`` where G is
        ``(batch, *out_shape)`` and V is ``(batch, *in_shape)`` with one
        flattened batch axis.  Without them both are einsum contractions of
        ``terms`` (see tensorjac._ad).
    uses_value : bool, default False
        When True, ``factors``, ``vjp`` and ``jvp`` also take the keyword
        ``value=``: the op's output when the caller already has it (a traced
        function does), else None (the callable computes what it needs).

    Examples
    --------
    The Jacobian of ``A @ X @ B`` in X, ``A[i, k] B[l, j]``: output axes i, j,
    input axes k, l, one term with two factors.

    >>> import numpy as np, tensorjac as tj
    >>> d = tj.Deriv("ij", "kl", [(1, ("ik", "lj"))], lambda A, X, B: (A, B))
    >>> d.out, d.inp, d.is_diagonal
    (('i', 'j'), ('k', 'l'), False)

    An elementwise product ``X * W`` in X: the output letters are the input
    letters (a Kronecker delta), one factor W.

    >>> tj.Deriv("ij", "ij", [(1, ("ij",))], lambda X, W: (W,)).is_diagonal
    True
    """

    __slots__ = ("factors", "inp", "jvp", "out", "sizes", "terms", "uses_value", "vjp")

    def __init__(
        self,
        out: str | Sequence[str],
        inp: str | Sequence[str],
        terms: Sequence[tuple[complex, tuple[str, ...]]],
        factors: Callable[..., tuple[np.ndarray, ...]] = lambda *a, **k: (),
        sizes: dict[str, int] | None = None,
        vjp: Callable[..., np.ndarray] | None = None,
        jvp: Callable[..., np.ndarray] | None = None,
        uses_value: bool = False,
    ) -> None:
        self.vjp = vjp
        self.jvp = jvp
        self.out = parse_axes(out)
        self.inp = parse_axes(inp)
        self.terms = tuple((coef, tuple(fs)) for coef, fs in terms)
        self.factors = factors
        self.sizes = dict(sizes or {})
        self.uses_value = uses_value

    def __repr__(self) -> str:
        return f"Deriv(out={self.out}, inp={self.inp}, terms={self.terms})"

    @property
    def is_diagonal(self) -> bool:
        """True when the Jacobian is δ(m, n) times something: an elementwise rule."""
        return (
            self.out == self.inp
            and all(len(a) == 1 for a in self.out)
            and len(set(self.out)) == len(self.out)
        )

    def eval_factors(self, args: Sequence[np.ndarray], value: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        if self.uses_value:
            return tuple(self.factors(*args, value=value))
        return tuple(self.factors(*args))

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
