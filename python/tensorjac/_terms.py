"""The term algebra: Jacobians of composite functions as sums of structured terms.

A :class:`Term` is ``coef * prod_f F_f[letters_f]`` over integer index letters,
with the axes of the differentiated value V (``out``) and of the input X
(``inp``) each labelled by a group of letters (C order inside a fused group).
A letter on both sides is a Kronecker delta; a letter on an axis but in no
factor means "constant along it".  Every factor letter is on some axis.

The chain rule (:func:`compose`) takes a rule term of an op (z axes x v axes,
from its :class:`~tensorjac._deriv.Deriv`) and a term of ``dV/dX``
(v axes x x axes) and returns a term of ``dZ/dX``:

1. unify the v axes of both: letters on the same axis are identified (the
   delta doing its work); fused groups on one side and letters on the other
   are split into common atoms by sizes; groups that share no refinement are
   bridged by a one-hot factor;
2. letters that end up on no axis are contracted: each connected group of
   factors sharing such letters becomes one factor by ``einsum`` (BLAS);
3. factors whose letters are a subset of another's are multiplied into it.

:func:`merge` adds like terms (same axes, after renaming), so the term count
stays small.  Only the final sum is materialized, once, by the C++ expand
kernel (:func:`materialize`), straight into the requested layout.

Every factor this module creates is checked against the memory budget before
it is allocated.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from . import _config, _core
from ._deriv import Deriv
from ._expand import expand_plan
from ._layout import letter_places, placement, prod

__all__ = ["Algebra", "Final", "Program", "Term", "compose", "finalize", "fold_coef", "identity", "merge", "rule_terms"]

_EINSUM_CHARS = string.ascii_letters
# Below this many multiply-adds numpy's C einsum loop beats planning a BLAS path.
_EINSUM_DIRECT_MAX = 4096
# A planned contraction may create intermediates of this many entries (beyond its operands' and result's).
_EINSUM_SCRATCH = 1 << 16
# An intermediate merge may densify like terms into one factor up to this size,
# or up to this multiple of the largest factor it replaces.
_MERGE_SMALL = 1 << 16
_MERGE_GROWTH = 4
_PLAN_CACHE_MAX = 256
# A factor of more entries than this does not absorb smaller factors over a subset of its letters.
_ABSORB_MAX = 1 << 15
# The final sum keeps up to this many like terms separate (the expand kernel fuses them); more are
# densified into one factor (or one GEMM).
_FUSE_MAX = 8
# Results smaller than this many entries are not worth a direct write (plan and view overheads).
_DIRECT_MIN = 1 << 14

Axes = tuple[tuple[int, ...], ...]
Factor = tuple["F", tuple[int, ...]]


class Program:
    """The numeric steps of a symbolic derivation, recorded while they run, for replay.

    Every operation on factor arrays goes through here.  Recording executes it
    and appends an instruction; :meth:`replay` re-executes the instructions on
    new leaf arrays (the rules' factors of a tape with the same structure),
    skipping all symbolic work: letter unification, contraction planning,
    like-term grouping and plan building.
    """

    __slots__ = ("ins", "leaf_count", "peak")

    def __init__(self) -> None:
        self.ins: list[tuple[Any, tuple[int, ...], dict[str, Any]]] = []
        self.leaf_count = 0
        self.peak = 0  # largest array created, in bytes (re-checked against the budget on replay)

    def _emit(self, fn: Any, args: tuple[F, ...], arr: np.ndarray, **static: Any) -> F:
        self.ins.append((fn, tuple(a.r for a in args), static))
        self.peak = max(self.peak, arr.nbytes)
        return F(arr, len(self.ins) - 1)

    def leaf(self, arr: Any) -> F:
        a = np.asarray(arr)
        k = self.leaf_count
        self.leaf_count += 1
        self.ins.append((_LEAF, (), {"k": k}))
        return F(a, len(self.ins) - 1)

    def const(self, arr: np.ndarray) -> F:
        arr = np.asarray(arr)
        arr.flags.writeable = False
        self.ins.append((_CONST, (), {"v": arr}))
        return F(arr, len(self.ins) - 1)

    def reshape(self, h: F, shape: Sequence[int]) -> F:
        return self._emit(_reshape, (h,), h.a.reshape(shape), shape=tuple(shape))

    def transpose(self, h: F, perm: Sequence[int]) -> F:
        return self._emit(_transpose, (h,), np.transpose(h.a, perm), perm=tuple(perm))

    def broadcast(self, h: F, shape: Sequence[int]) -> F:
        return self._emit(_broadcast, (h,), np.broadcast_to(h.a, shape), shape=tuple(shape))

    def einsum(self, subs: str, hs: Sequence[F], optimize: bool) -> F:
        arrays = [h.a for h in hs]
        path: Any = False
        ins, out = subs.split("->")
        summed = set(ins.replace(",", "")) - set(out)
        # a planned path (BLAS) pays only for real contractions; products that sum nothing
        # (outer products, broadcasting) are faster in einsum's own loop
        if optimize and len(arrays) > 1 and summed:
            # numpy's default caps intermediates at the largest operand or result, which can forbid
            # the pairwise (BLAS) path, e.g. ab,ac,ad->bcd: allow small ones beyond that
            dims = {c: n for term, a in zip(ins.split(","), arrays) for c, n in zip(term, a.shape)}
            limit = max(_EINSUM_SCRATCH, prod([dims[c] for c in out]), *[a.size for a in arrays])
            path = np.einsum_path(subs, *arrays, optimize=("greedy", limit))[0]
            if len(arrays) > 2:
                steps = _pairwise_steps(ins.split(","), out, path[1:], [a.shape for a in arrays])
                if steps is not None:  # each step recorded on its own: numpy's einsum re-plans every call
                    return self._pairwise(hs, steps)
        return self._emit(_einsum_op, tuple(hs), np.einsum(subs, *arrays, optimize=path), subs=subs, path=path)

    def _pairwise(self, hs: Sequence[F], steps: list[tuple[int, int, str, Any]]) -> F:
        ops = list(hs)
        for i, j, subs, mm in steps:
            if i < 0:
                (h,) = ops
                ops = [self.transpose(h, mm)]
                continue
            a, b = ops[i], ops[j]
            ops = [h for k, h in enumerate(ops) if k not in (i, j)]
            if mm is None:  # a product that sums nothing: einsum's own loop
                r = self._emit(_einsum_op, (a, b), np.einsum(subs, a.a, b.a), subs=subs, path=False)
            else:
                r = self._emit(_contract, (a, b), _contract(a.a, b.a, mm), mm=mm)
            ops.append(r)
        (res,) = ops
        return res

    def mul(self, a: F, b: F) -> F:
        _check_alloc(prod(np.broadcast_shapes(a.shape, b.shape)), np.result_type(a.a, b.a), "Jacobian factor")
        return self._emit(np.multiply, (a, b), a.a * b.a)

    def scale(self, h: F, c: Any) -> F:
        _check_alloc(h.size, np.result_type(h.a, c), "Jacobian factor")
        return self._emit(_scale, (h,), h.a * c, c=c)

    def add(self, a: F, b: F) -> F:
        _check_alloc(prod(np.broadcast_shapes(a.shape, b.shape)), np.result_type(a.a, b.a), "Jacobian factor")
        return self._emit(np.add, (a, b), a.a + b.a)

    def astype(self, h: F, dtype: np.dtype) -> F:
        _check_alloc(h.size, dtype, "Jacobian factor")
        return self._emit(_astype, (h,), h.a.astype(dtype), dtype=dtype)

    def stack(self, hs: Sequence[F], axis: int) -> F:
        _check_alloc(sum(h.size for h in hs), np.result_type(*[h.a for h in hs]), "Jacobian factor")
        return self._emit(_stack, tuple(hs), np.stack([h.a for h in hs], axis=axis), axis=axis)

    def matmul(self, a: F, b: F) -> F:
        return self._emit(_matmul, (a, b), np.matmul(a.a, b.a))

    def replay(
        self, leaves: Sequence[Any], want: Sequence[int], outs: dict[int, np.ndarray] | None = None
    ) -> list[np.ndarray]:
        """Run the program on new leaves; registers in ``outs`` are computed into the given arrays."""
        if self.peak > _config.get_memory_budget():
            _check_alloc(self.peak, np.int8, "intermediate Jacobian factor")
        regs: list[Any] = [None] * len(self.ins)
        for i, (fn, args, st) in enumerate(self.ins):
            if fn is _LEAF:
                regs[i] = np.asarray(leaves[st["k"]])
            elif fn is _CONST:
                regs[i] = st["v"]
            elif outs is not None and i in outs:
                dest = outs[i]
                if fn in _OUT_CAPABLE:
                    fn(*[regs[j] for j in args], **st, out=dest)
                else:
                    np.copyto(dest, fn(*[regs[j] for j in args], **st))
                regs[i] = dest
            else:
                regs[i] = fn(*[regs[j] for j in args], **st)
        return [regs[r] for r in want]


class F:
    """A factor array and the program register that holds it."""

    __slots__ = ("a", "r")

    def __init__(self, a: np.ndarray, r: int) -> None:
        self.a = a
        self.r = r

    @property
    def size(self) -> int:
        return self.a.size

    @property
    def ndim(self) -> int:
        return self.a.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return self.a.shape

    @property
    def dtype(self) -> np.dtype:
        return self.a.dtype


_LEAF = object()
_CONST = object()


def _reshape(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return a.reshape(shape)


def _transpose(a: np.ndarray, perm: tuple[int, ...]) -> np.ndarray:
    return np.transpose(a, perm)


def _broadcast(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(a, shape)


def _einsum_op(*arrays: np.ndarray, subs: str, path: Any, out: np.ndarray | None = None) -> np.ndarray:
    if out is None:
        return np.einsum(subs, *arrays, optimize=path)
    return np.einsum(subs, *arrays, optimize=path, out=out)


def _pairwise_steps(terms: list[str], out: str, pairs: Sequence[tuple[int, ...]],
                    shapes: Sequence[tuple[int, ...]]) -> list[tuple[int, int, str, Any]] | None:
    """numpy's contraction path as steps (i, j, subscripts, matmul plan or None for a product that sums
    nothing), then (-1, -1, "", axes) when the result's letters need a transpose; None when a step is
    neither (a letter repeated in an operand, or summed in one operand)."""
    terms = list(terms)
    dims = {c: n for t, sh in zip(terms, shapes) for c, n in zip(t, sh)}
    steps: list[tuple[int, int, str, Any]] = []
    for pair in pairs:
        if len(pair) != 2:
            return None
        i, j = sorted(pair)
        ta, tb = terms[i], terms[j]
        rest = [t for k, t in enumerate(terms) if k not in (i, j)]
        keep = set(out).union(*rest)
        if len(set(ta)) != len(ta) or len(set(tb)) != len(tb):
            return None
        summed = (set(ta) | set(tb)) - keep
        if summed - (set(ta) & set(tb)):
            return None  # a letter summed within one operand
        batch = [c for c in ta if c in tb and c in keep]
        left = [c for c in ta if c not in tb]
        right = [c for c in tb if c not in ta]
        tr = "".join(batch + left + right)
        if not summed:
            steps.append((i, j, f"{ta},{tb}->{tr}", None))
        else:
            ss = [c for c in ta if c in summed]
            nb, nl, nr, ns = (prod([dims[c] for c in g]) for g in (batch, left, right, ss))
            sa, sb = ((nl, ns), (ns, nr)) if nb == 1 else ((nb, nl, ns), (nb, ns, nr))  # one GEMM, or a stack
            mm = (tuple(ta.index(c) for c in batch + left + ss), sa, tuple(tb.index(c) for c in batch + ss + right),
                  sb, tuple(dims[c] for c in batch + left + right))
            steps.append((i, j, "", mm))
        terms = rest + [tr]
    if len(terms) != 1 or sorted(terms[0]) != sorted(out):
        return None
    if terms[0] != out:  # the letters in the requested order: a transposed view
        steps.append((-1, -1, "", tuple(terms[0].index(c) for c in out)))
    return steps


def _contract(a: np.ndarray, b: np.ndarray, mm: Any) -> np.ndarray:
    """One pairwise contraction by a (batched) matmul: ``mm`` from :func:`_pairwise_steps`."""
    pa, sa, pb, sb, shape = mm
    A = np.transpose(a, pa).reshape(sa)
    B = np.transpose(b, pb).reshape(sb)
    return np.matmul(A, B).reshape(shape)


def _scale(a: np.ndarray, c: Any, out: np.ndarray | None = None) -> np.ndarray:
    return np.multiply(a, c, out=out)


def _astype(a: np.ndarray, dtype: np.dtype, out: np.ndarray | None = None) -> np.ndarray:
    if out is None:
        return a.astype(dtype)
    np.copyto(out, a, casting="unsafe")
    return out


def _stack(*arrays: np.ndarray, axis: int) -> np.ndarray:
    return np.stack(arrays, axis=axis)


def _matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return np.matmul(a, b, out=out)


_OUT_CAPABLE = {np.multiply, np.add, _einsum_op, _scale, _astype}


class Algebra:
    """Letter allocation and sizes for one composite computation, and its recorded program."""

    __slots__ = ("_next", "prog", "sizes")

    def __init__(self) -> None:
        self._next = itertools.count()
        self.sizes: dict[int, int] = {}
        self.prog = Program()

    def new(self, size: int) -> int:
        n = next(self._next)
        self.sizes[n] = int(size)
        return n

    def size(self, letters: Iterable[int]) -> int:
        s = self.sizes
        return prod([s[c] for c in dict.fromkeys(letters)])


class Term:
    """``coef * prod F[letters]`` with V's axes ``out`` and X's axes ``inp``."""

    __slots__ = ("coef", "facs", "inp", "out")

    def __init__(self, coef: complex, out: Axes, inp: Axes, facs: list[Factor]) -> None:
        self.coef = coef
        self.out = out
        self.inp = inp
        self.facs = facs

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        fs = ", ".join(f"{a.shape}{ls}" for a, ls in self.facs)
        return f"Term({self.coef}, out={self.out}, inp={self.inp}, [{fs}])"


def _check_alloc(n: int, dtype: Any, what: str) -> None:
    if n * np.dtype(dtype).itemsize > _config.get_memory_budget():
        _config.check_budget((n,), np.dtype(dtype).itemsize, what=what)


def _result_type(arrays: Sequence[F]) -> np.dtype:
    return np.result_type(*[a.a for a in arrays]) if arrays else np.dtype(np.float64)


def identity(alg: Algebra, shape: tuple[int, ...]) -> Term:
    """dX/dX: one delta per axis."""
    letters = tuple((alg.new(n),) for n in shape)
    return Term(1, letters, letters, [])


def rule_terms(
    alg: Algebra, d: Deriv, facs: Sequence[np.ndarray], out_shape: tuple[int, ...], in_shape: tuple[int, ...]
) -> list[Term]:
    """The terms of one op's Deriv with fresh integer letters (z axes x v axes)."""
    sizes = d.letter_sizes(out_shape, in_shape)
    ids = {c: alg.new(n) for c, n in sizes.items()}
    out = tuple(tuple(ids[c] for c in ax) for ax in d.out)
    inp = tuple(tuple(ids[c] for c in ax) for ax in d.inp)
    terms = []
    slot = 0
    for coef, groups in d.terms:
        fs = []
        for g in groups:
            fs.append((alg.prog.leaf(facs[slot]), tuple(ids[c] for c in g)))
            slot += 1
        terms.append(Term(coef, out, inp, fs))
    return terms


# ----------------------------------------------------------------------------- chain rule


class _Unifier:
    """Union-find over letters plus splits of letters into finer atoms."""

    def __init__(self, alg: Algebra) -> None:
        self.alg = alg
        self.parent: dict[int, int] = {}
        self.split: dict[int, tuple[int, ...]] = {}

    def find(self, a: int) -> int:
        p = self.parent
        root = a
        while root in p:
            root = p[root]
        while a in p and p[a] != root:  # path compression
            p[a], a = root, p[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra

    def atoms(self, letters: Iterable[int]) -> list[int]:
        out: list[int] = []
        for c in letters:
            s = self.split.get(c)
            if s is None:
                out.append(c)
            else:
                out.extend(self.atoms(s))
        return out


def _suffix_products(sizes: Sequence[int]) -> list[int]:
    ps = [1]
    for n in reversed(sizes):
        ps.append(ps[-1] * n)
    return ps


def _refine(u: _Unifier, a_letters: list[int], b_letters: list[int]) -> bool:
    """Split letters of two groups of equal total size into common atoms.

    Returns False when the groups have no common refinement (a reshape whose
    axis boundaries interleave); True when the groups are now atom-aligned.
    """
    sz = u.alg.sizes
    pa = _suffix_products([sz[c] for c in a_letters])
    pb = _suffix_products([sz[c] for c in b_letters])
    bounds = sorted(set(pa) | set(pb))
    if any(hi % lo for lo, hi in zip(bounds, bounds[1:])):
        return False
    for letters, ps in ((a_letters, pa), (b_letters, pb)):
        k = len(letters)
        for i, c in enumerate(letters):
            # letter i covers suffix products [ps[k-1-i], ps[k-i]]
            lo, hi = ps[k - 1 - i], ps[k - i]
            inner = [q for q in bounds if lo <= q <= hi]
            if len(inner) > 2:  # spans several atoms: split it (C order: largest stride first)
                atoms = [u.alg.new(q2 // q1) for q1, q2 in zip(inner, inner[1:])][::-1]
                u.split[c] = tuple(atoms)
    return True


def _bridge(alg: Algebra, a_letters: list[int], b_letters: list[int]) -> tuple[list[int], Factor]:
    """New letters shaped like ``b_letters`` and the one-hot factor tying them to ``a_letters``."""
    new = [alg.new(alg.sizes[c]) for c in b_letters]
    n = alg.size(a_letters)
    _check_alloc(n * n, np.float64, "reshape selection factor")
    eye = np.eye(n).reshape([alg.sizes[c] for c in a_letters] + [alg.sizes[c] for c in new])
    return new, (alg.prog.const(eye), tuple(a_letters) + tuple(new))


def _reshape_factor(u: _Unifier, arr: F, letters: tuple[int, ...]) -> Factor:
    if not any(c in u.split for c in letters):
        return arr, letters
    shape: list[int] = []
    new: list[int] = []
    for c in letters:
        atoms = u.atoms((c,))
        new.extend(atoms)
        shape.extend(u.alg.sizes[a] for a in atoms)
    return u.alg.prog.reshape(arr, shape), tuple(new)


def compose(alg: Algebra, R: Term, J: Term) -> Term | None:
    """The chain rule for one rule term R (z x v) and one term J (v x x); None when it vanishes."""
    sz = alg.sizes
    if len(R.inp) != len(J.out):
        raise AssertionError(f"rule has {len(R.inp)} input axes, the operand's term {len(J.out)}")
    u = _Unifier(alg)
    extra: list[Factor] = []
    r_inp = [list(g) for g in R.inp]
    v_letters: list[int] = []
    # 1. unify the v axes (repeat until every pair is atom-aligned: splits may cascade)
    for _ in range(64):
        changed = False
        for k, jg in enumerate(J.out):
            ra = [c for c in u.atoms(r_inp[k]) if sz[c] != 1]
            ja = [c for c in u.atoms(jg) if sz[c] != 1]
            if [sz[c] for c in ra] == [sz[c] for c in ja]:
                continue
            total = prod([sz[c] for c in ra])
            if total == 0 or prod([sz[c] for c in ja]) == 0:
                return None  # an empty intermediate contributes nothing
            if not _refine(u, ra, ja):
                new, fac = _bridge(alg, ra, ja)
                extra.append(fac)
                r_inp[k] = new
            changed = True
        if not changed:
            break
    else:  # pragma: no cover - defensive
        raise AssertionError("compose: axis unification did not converge")
    for k, jg in enumerate(J.out):
        ra = [c for c in u.atoms(r_inp[k]) if sz[c] != 1]
        ja = [c for c in u.atoms(jg) if sz[c] != 1]
        for a, b in zip(ra, ja):
            if sz[a] == 0:
                return None
            u.union(a, b)
        v_letters.extend(ra)

    def sub(letters: Iterable[int]) -> tuple[int, ...]:
        return tuple(u.find(c) for c in u.atoms(letters))

    out = tuple(sub(g) for g in R.out)
    inp = tuple(sub(g) for g in J.inp)
    facs: list[Factor] = []
    for arr, ls in itertools.chain(R.facs, J.facs, extra):
        arr, ls = _reshape_factor(u, arr, ls)
        facs.append((arr, tuple(u.find(c) for c in ls)))
    bound = {c for g in out for c in g} | {c for g in inp for c in g}
    if any(sz[c] == 0 for c in bound):
        return None
    coef = R.coef * J.coef
    in_facs = {c for _, ls in facs for c in ls}
    for c in dict.fromkeys(u.find(c) for c in v_letters):
        if c not in bound and c not in in_facs:
            coef = coef * sz[c]  # a sum over a letter nothing depends on
    return Term(coef, out, inp, simplify(alg, facs, bound))


def _einsum(alg: Algebra, operands: Sequence[Factor], out: Sequence[int]) -> F:
    letters = list(dict.fromkeys(itertools.chain(*(ls for _, ls in operands), out)))
    if len(letters) > len(_EINSUM_CHARS):
        raise TypeError(
            f"tensorjac: a contraction needs {len(letters)} index letters, more than einsum's "
            f"{len(_EINSUM_CHARS)}; use tj.fd.jacobian for this function"
        )
    ch = {c: _EINSUM_CHARS[i] for i, c in enumerate(letters)}
    subs = ",".join("".join(ch[c] for c in ls) for _, ls in operands) + "->" + "".join(ch[c] for c in out)
    arrays = [a for a, _ in operands]
    _check_alloc(alg.size(out), _result_type(arrays), "intermediate Jacobian factor")
    work = alg.size(letters)
    return alg.prog.einsum(subs, arrays, optimize=len(arrays) > 2 or work > _EINSUM_DIRECT_MAX)


def simplify(alg: Algebra, facs: list[Factor], bound: set[int]) -> list[Factor]:
    """Contract letters that are on no axis, take diagonals, absorb subset factors."""
    if not facs:
        return facs
    contracted = {c for _, ls in facs for c in ls if c not in bound}
    if contracted or any(len(set(ls)) != len(ls) for _, ls in facs):
        # connected components of factors linked by contracted letters
        comp = list(range(len(facs)))

        def root(i: int) -> int:
            while comp[i] != i:
                comp[i] = comp[comp[i]]
                i = comp[i]
            return i

        owner: dict[int, int] = {}
        for i, (_, ls) in enumerate(facs):
            for c in ls:
                if c in contracted:
                    if c in owner:
                        comp[root(i)] = root(owner[c])
                    else:
                        owner[c] = i
        groups: dict[int, list[int]] = {}
        for i in range(len(facs)):
            groups.setdefault(root(i), []).append(i)
        new: list[Factor] = []
        for members in groups.values():
            ops = [facs[i] for i in members]
            letters = [c for _, ls in ops for c in ls]
            if len(ops) == 1 and not (set(letters) & contracted) and len(set(letters)) == len(letters):
                new.append(ops[0])
                continue
            keep = tuple(dict.fromkeys(c for c in letters if c in bound))
            new.append((_einsum(alg, ops, keep), keep))
        facs = new
    return _absorb(alg, facs)


def _absorb(alg: Algebra, facs: list[Factor]) -> list[Factor]:
    """Multiply factors whose letters are a subset of another factor's into it."""
    if len(facs) < 2:
        return facs
    facs = sorted(facs, key=lambda f: -f[0].ndim)
    out: list[Factor] = []
    budget = _config.get_memory_budget()
    for arr, ls in facs:
        for i, (big, bl) in enumerate(out):
            # absorbing copies the big factor: only when the copy fits the budget (else keep both)
            # and a big factor keeps its small companions separate: the expand kernel multiplies them as it
            # writes, instead of numpy writing a result-sized product first
            if set(ls) <= set(bl) and big.a.nbytes <= budget and (big.size <= _ABSORB_MAX or arr.size == big.size):
                out[i] = (alg.prog.mul(big, _align(alg, arr, ls, bl)), bl)
                break
        else:
            out.append((arr, ls))
    return out


def _align(alg: Algebra, arr: F, ls: tuple[int, ...], target: tuple[int, ...]) -> F:
    """``arr[ls]`` transposed and expanded to broadcast against an array with letters ``target``."""
    order = [c for c in target if c in ls]
    if list(ls) != order:
        arr = alg.prog.transpose(arr, [ls.index(c) for c in order])
    shape = [arr.shape[order.index(c)] if c in ls else 1 for c in target]
    return arr if tuple(shape) == arr.shape else alg.prog.reshape(arr, shape)


# ----------------------------------------------------------------------------- like terms


def _canonical(t: Term) -> tuple[tuple, dict[int, int]]:
    cmap: dict[int, int] = {}
    for g in itertools.chain(t.out, t.inp):
        for c in g:
            if c not in cmap:
                cmap[c] = len(cmap)
    key = (
        tuple(tuple(cmap[c] for c in g) for g in t.out),
        tuple(tuple(cmap[c] for c in g) for g in t.inp),
    )
    return key, cmap


def _dense(alg: Algebra, t: Term, rename: dict[int, int], U: tuple[int, ...], dtype: np.dtype) -> F:
    """``coef * prod(factors)`` of one term as one array over letters U."""
    full_shape = [alg.sizes[c] for c in U]
    if not t.facs:
        return alg.prog.const(np.full(full_shape, t.coef, dtype=dtype))
    ops = [(a, tuple(rename[c] for c in ls)) for a, ls in t.facs]
    present = tuple(c for c in U if any(c in ls for _, ls in ops))
    if len(ops) == 1:
        arr, ls = ops[0]
        full = _align(alg, arr, ls, U)
    else:
        full = _align(alg, _einsum(alg, ops, present), present, U)
    if full.shape != tuple(full_shape):
        full = alg.prog.broadcast(full, full_shape)
    return alg.prog.scale(full, _coef_scalar(t.coef, dtype)) if t.coef != 1 else full


def _coef_scalar(c: complex, dtype: np.dtype) -> Any:
    if dtype.kind != "c":
        return dtype.type(complex(c).real)
    return dtype.type(c)


def merge(alg: Algebra, terms: list[Term], final: bool = False) -> list[Term]:
    """Add terms with the same axes (after renaming letters) into one.

    Terms without factors add their coefficients.  Otherwise the like terms
    are densified into one factor over the union of their factor letters --
    always for the final sum (one expand pass instead of several), and for
    intermediates when that factor stays small.
    """
    if len(terms) < 2:
        return terms
    groups: dict[tuple, list[tuple[Term, dict[int, int]]]] = {}
    for t in terms:
        key, cmap = _canonical(t)
        groups.setdefault(key, []).append((t, cmap))
    out: list[Term] = []
    for members in groups.values():
        if len(members) == 1:
            out.append(members[0][0])
            continue
        base, bmap = members[0]
        inv = {v: k for k, v in bmap.items()}
        renames = [{c: inv[m] for c, m in cmap.items()} for _, cmap in members]
        if all(not t.facs for t, _ in members):
            coef = sum(t.coef for t, _ in members)
            if coef != 0:
                out.append(Term(coef, base.out, base.inp, []))
            continue
        U = tuple(
            dict.fromkeys(
                c for (t, _), rn in zip(members, renames) for _, ls in t.facs for c in (rn[x] for x in ls)
            )
        )
        n = alg.size(U)
        if not final:
            shared = _factor_out(alg, base, members, renames, n)
            if shared is not None:
                out.append(shared)
                continue
        if final and len(members) <= _FUSE_MAX:
            # the expand kernel sums like terms in one pass, each from its own small factors
            out.extend(t for t, _ in members)
            continue
        if not final:
            biggest = max((a.size for t, _ in members for a, _ in t.facs), default=1)
            if n > max(_MERGE_SMALL, _MERGE_GROWTH * biggest):
                out.extend(t for t, _ in members)
                continue
        dtype = np.result_type(*[a.a for t, _ in members for a, _ in t.facs], *[t.coef for t, _ in members])
        _check_alloc(n, dtype, "Jacobian term")
        gemm = _low_rank(alg, base, members, renames, U, dtype)
        if gemm is not None:
            out.append(Term(1, base.out, base.inp, [gemm]))
            continue
        acc: F | None = None
        for (t, _), rn in zip(members, renames):
            d = _dense(alg, t, rn, U, dtype)
            acc = d if acc is None else alg.prog.add(acc, d)
        assert acc is not None
        out.append(Term(1, base.out, base.inp, [(acc, U)]))
    if final:  # terms that cover every entry (no delta) first: the kernel then needs no zero fill
        out.sort(key=lambda t: not _covers(t))
    return out


def _factor_out(
    alg: Algebra, base: Term, members: list[tuple[Term, dict[int, int]]], renames: list[dict[int, int]], n: int,
) -> Term | None:
    """Like terms sharing factors -- the same array over the same letters in every term -- as one term
    ``C * sum_t (coef_t * rest_t)``: the rests are added over their own letters, smaller than the
    ``n`` entries of densifying whole terms (e.g. ``a[i,b] x[i,c] + b[i,b] x[i,c]`` adds two
    (i, b) arrays and keeps ``x``, instead of building two (i, b, c) products).  None when no factor
    is shared or the rests are no smaller."""
    keyed = [[(a.r, tuple(rn[c] for c in ls)) for a, ls in t.facs] for (t, _), rn in zip(members, renames)]
    common = set(keyed[0]).intersection(*keyed[1:])
    if not common:
        return None
    shared: list[Factor] = []
    rests: list[Term] = []
    for i, ((t, _), keys) in enumerate(zip(members, keyed)):
        left = set(common)
        rest: list[Factor] = []
        for (a, ls), k in zip(t.facs, keys):
            if k in left:  # one occurrence of each shared factor leaves the term
                left.discard(k)
                if i == 0:
                    shared.append((a, k[1]))
            else:
                rest.append((a, ls))
        rests.append(Term(t.coef, t.out, t.inp, rest))
    U = tuple(dict.fromkeys(rn[c] for r, rn in zip(rests, renames) for _, ls in r.facs for c in ls))
    if alg.size(U) >= n:
        return None
    if not U:  # the terms differ only by their coefficients
        coef = sum(r.coef for r in rests)
        return Term(coef, base.out, base.inp, shared) if coef != 0 else None
    dtype = np.result_type(*[a.a for r in rests for a, _ in r.facs], *[r.coef for r in rests])
    _check_alloc(alg.size(U), dtype, "Jacobian term")
    acc: F | None = None
    for r, rn in zip(rests, renames):
        d = _dense(alg, r, rn, U, dtype)
        acc = d if acc is None else alg.prog.add(acc, d)
    assert acc is not None
    return Term(1, base.out, base.inp, [*shared, (acc, U)])


def _covers(t: Term) -> bool:
    letters = [c for g in itertools.chain(t.out, t.inp) for c in g]
    return len(set(letters)) == len(letters)


def _low_rank(
    alg: Algebra, base: Term, members: list[tuple[Term, dict[int, int]]], renames: list[dict[int, int]],
    U: tuple[int, ...], dtype: np.dtype,
) -> Factor | None:
    """Like terms that are sums of outer products, ``sum_t a_t[P] b_t[Q]``, as one GEMM ``A @ B.T``.

    P are the letters of U on the output's axes, Q the rest.  Returns None
    unless every term separates into factors over P and over Q (then the sum
    is written in one pass, instead of densifying and adding term by term).
    """
    on_out = {c for g in base.out for c in g}
    P = tuple(c for c in U if c in on_out)
    Q = tuple(c for c in U if c not in on_out)
    if not P or not Q or len(members) < 2:
        return None
    sides: list[tuple[list[Factor], list[Factor], complex]] = []
    for (t, _), rn in zip(members, renames):
        fp, fq = [], []
        for a, ls in t.facs:
            ls2 = tuple(rn[c] for c in ls)
            if set(ls2) <= set(P):
                fp.append((a, ls2))
            elif set(ls2) <= set(Q):
                fq.append((a, ls2))
            else:
                return None
        sides.append((fp, fq, t.coef))
    np_, nq = alg.size(P), alg.size(Q)
    cols_a: list[F] = []
    cols_b: list[F] = []
    for fp, fq, coef in sides:
        for fs, letters, n, cols in ((fp, P, np_, cols_a), (fq, Q, nq, cols_b)):
            if not fs:
                v = alg.prog.const(np.ones(n, dtype=dtype))
            else:
                present = tuple(c for c in letters if any(c in ls for _, ls in fs))
                arr = fs[0][0] if len(fs) == 1 and fs[0][1] == present else _einsum(alg, fs, present)
                arr = _align(alg, arr, present, letters)
                if arr.shape != tuple(alg.sizes[c] for c in letters):
                    arr = alg.prog.broadcast(arr, [alg.sizes[c] for c in letters])
                v = alg.prog.reshape(arr, (n,))
            cols.append(v)
        if coef != 1:
            cols_a[-1] = alg.prog.scale(cols_a[-1], _coef_scalar(coef, dtype))
    A = alg.prog.stack(cols_a, axis=1)
    B = alg.prog.stack(cols_b, axis=0)
    A = alg.prog.reshape(A, [alg.sizes[c] for c in P] + [len(sides)])
    B = alg.prog.reshape(B, [len(sides)] + [alg.sizes[c] for c in Q])
    # sum over the few terms r in one pass over the result; einsum's own loop (not a threaded BLAS GEMM,
    # whose start-up dominates at this tiny inner size) writes it, directly into the result when possible
    ch = _EINSUM_CHARS
    pl, ql = ch[: len(P)], ch[len(P) : len(P) + len(Q)]
    r = ch[len(P) + len(Q)]
    M = alg.prog.einsum(f"{pl}{r},{r}{ql}->{pl}{ql}", [A, B], optimize=False)
    return M, P + Q


# ----------------------------------------------------------------------------- materialization

_PLANS: dict[tuple, tuple[tuple[int, ...], Any]] = {}


def fold_coef(alg: Algebra, t: Term, dtype: np.dtype) -> tuple[complex, list[Factor]]:
    """Move the coefficient into the smallest factor, so plans do not depend on values."""
    if not t.facs or t.coef == 1:
        return t.coef, t.facs
    i = min(range(len(t.facs)), key=lambda k: t.facs[k][0].size)
    facs = list(t.facs)
    arr, ls = facs[i]
    facs[i] = (alg.prog.scale(arr, _coef_scalar(t.coef, dtype)), ls)
    return 1, facs


def _few_factors(alg: Algebra, facs: list[Factor], limit: int = 6) -> list[Factor]:
    """The expand kernel takes a bounded number of factors per term: merge the smallest pairs."""
    facs = list(facs)
    while len(facs) > limit:
        facs.sort(key=lambda f: f[0].size)
        (a, la), (b, lb) = facs[0], facs[1]
        keep = tuple(dict.fromkeys(la + lb))
        facs = [(_einsum(alg, [(a, la), (b, lb)], keep), keep)] + facs[2:]
    return facs


def is_diagonal(t: Term) -> bool:
    return t.out == t.inp and all(len(g) == 1 for g in t.out) and len({g[0] for g in t.out}) == len(t.out)


class Final:
    """A Jacobian ready to be written.

    ``direct`` (optional) is a dense factor covering every entry, computed by the
    program straight into a strided view of the result (no copy); ``core`` is the
    expand plan of the other terms, run in accumulate mode after it (or alone,
    writing, when there is no direct factor); ``regs`` are its factor registers.
    ``sym = (m, n)``: the result, seen as (m, n, n), is made exactly symmetric in
    its last two axes after the write (a Hessian block whose terms could not be
    written symmetric by construction: see :func:`_symmetric_terms`).
    """

    __slots__ = ("core", "direct", "dtype", "fast", "first", "first_direct", "regs", "shape", "sym", "zero_acc")

    def __init__(self, core: Any, regs: list[int], shape: tuple[int, ...], dtype: np.dtype,
                 first: list[np.ndarray], direct: tuple[int, tuple[int, ...], tuple[tuple[int, int], ...]] | None,
                 first_direct: np.ndarray | None, sym: tuple[int, int] | None = None) -> None:
        self.core = core
        self.regs = regs
        self.shape = shape
        self.dtype = dtype
        self.first: list[np.ndarray] | None = first  # the factor arrays of the recording run
        self.direct = direct  # (register, factor shape, ((dim, mult) per factor axis))
        self.first_direct = first_direct
        self.sym = sym
        # (plan, n, pairs): when the arrays at each pair of positions (>= n) hold the same bits, the plan
        # writes the result from arrays[n:] (fewer terms); else the main plan from arrays[:n]
        self.fast: tuple[Any, int, list[tuple[int, int]], bool] | None = None
        # zero-fill, then every pass accumulates (two halves over different entries: 0 + a at both mirrors)
        self.zero_acc = False

    def allocate(self, out: np.ndarray | None) -> np.ndarray | None:
        """The result array when the program writes into it (a direct factor), else None (the plan allocates)."""
        if self.direct is None:
            return out
        if out is None:
            _config.check_budget(self.shape, self.dtype.itemsize)
            out = np.empty(self.shape, self.dtype)
        return out

    def view(self, R: np.ndarray) -> np.ndarray:
        """The direct factor's place in the result R: one strided view."""
        assert self.direct is not None
        _, fshape, binds = self.direct
        return np.lib.stride_tricks.as_strided(R, fshape, [m * R.strides[d] for d, m in binds], writeable=True)

    def write(self, arrays: Sequence[np.ndarray], R: np.ndarray | None, num_threads: int) -> tuple[np.ndarray, bool]:
        """The result, and whether every factor written was finite."""
        if self.fast is not None:
            fcore, n, pairs, zero_acc = self.fast
            if all(_same_bits(arrays[i], arrays[j]) for i, j in pairs):
                return self._run(fcore, arrays[n:], R, num_threads, zero_acc)
            arrays = arrays[:n]
        if self.direct is not None:
            assert R is not None
            if self.core is None:
                return R, True
            res = self.core(R, list(arrays), num_threads, True)
        else:
            res = self._run(self.core, arrays, R, num_threads, self.zero_acc)
        if self.sym is not None:
            symmetrize(res[0], *self.sym, num_threads)
        return res  # type: ignore[no-any-return]


    def _run(self, core: Any, arrays: Sequence[np.ndarray], R: np.ndarray | None, num_threads: int,
             zero_acc: bool) -> tuple[np.ndarray, bool]:
        if R is None:
            _config.check_budget(self.shape, self.dtype.itemsize)
        if not zero_acc:
            return core(R, list(arrays), num_threads)  # type: ignore[no-any-return]
        if R is None:
            R = np.zeros(self.shape, self.dtype)
        else:
            R[...] = 0
        return core(R, list(arrays), num_threads, True)  # type: ignore[no-any-return]


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Do two real arrays hold the same bit patterns (signed zeros and NaN payloads included)?"""
    if a is b:
        return True
    if a.shape != b.shape or a.dtype != b.dtype or a.dtype.kind != "f":
        return False
    u = np.dtype(f"u{a.dtype.itemsize}")
    return bool(np.array_equal(a.view(u), b.view(u)))


def symmetrize(H: np.ndarray, m: int, n: int, num_threads: int = 0) -> None:
    """In place: H, seen as (m, n, n), becomes exactly symmetric in its last two axes -- the mean of
    the two halves written to both (``a + b == b + a`` in IEEE arithmetic, so bitwise), in C++.
    Any memory order (an ``out=`` array of another layout goes through a contiguous copy)."""
    if n < 2 or m == 0:
        return
    if H.flags.c_contiguous:
        _core.symmetrize(H, m, n, num_threads)
        return
    _config.check_budget(H.shape, H.dtype.itemsize, what="contiguous copy of the Hessian")
    V = np.ascontiguousarray(H)
    _core.symmetrize(V, m, n, num_threads)
    H[...] = V


def _bindings(t: Term, layout: str, out_shape: tuple[int, ...], in_shape: tuple[int, ...],
              sizes: dict[int, int]) -> dict[int, list[tuple[int, int]]]:
    """Each letter's (result dimension, multiplier) places in ``layout`` (as the expand plan binds them)."""
    _, out_place, in_place = placement(layout, out_shape, in_shape)
    bind: dict[int, list[tuple[int, int]]] = {}
    for c, dim, mult in letter_places(t.out, t.inp, out_place, in_place, sizes):
        bind.setdefault(c, []).append((dim, mult))
    return bind


def _direct_candidate(alg: Algebra, terms: list[Term], layout: str, out_shape: tuple[int, ...],
                      in_shape: tuple[int, ...]) -> int | None:
    """Index of a term whose one factor covers every entry of the result once (no delta), if any."""
    if layout == "diagonal" or prod(out_shape) * prod(in_shape) < _DIRECT_MIN:
        return None
    for i, t in enumerate(terms):
        if len(t.facs) != 1:
            continue
        letters = [c for g in itertools.chain(t.out, t.inp) for c in g]
        if len(set(letters)) != len(letters) or set(t.facs[0][1]) != set(letters):
            continue
        if len(t.facs[0][1]) != len(letters):
            continue
        return i
    return None


def finalize(
    alg: Algebra,
    terms: list[Term],
    out_shape: tuple[int, ...],
    in_shape: tuple[int, ...],
    layout: str,
    dtype: np.dtype,
    taken: set[int] | None = None,
    batch: int | None = None,
    hess: int | None = None,
    sym: bool = False,
) -> Final:
    """Merge the final terms and build (or fetch) the expand plan writing them into ``layout``.

    ``taken`` collects the registers already written directly into some result
    (a register can be the direct factor of one result only).  With ``batch``, the
    per-sample Jacobian along that axis of output and input: every term must tie the
    two batch axes by a delta (else the function mixes samples: ValueError).  With
    ``hess = P`` and ``sym``, a diagonal Hessian block (``out_shape`` is f's P axes
    followed by x's, ``in_shape`` is x's): the result is exactly symmetric in its two
    input groups, written so by construction where :func:`_symmetric_terms` can, else
    symmetrized after the write.
    """
    terms = merge(alg, terms, final=True)
    if batch is not None:
        for t in terms:
            if t.out[batch] != t.inp[batch]:  # the same letters on both batch axes: a delta
                raise ValueError(
                    f"batch_axis={batch}: the function mixes samples -- an output sample depends on other "
                    "input samples (e.g. a mean, a sum or a normalization over the batch axis), so its "
                    "Jacobian is not block diagonal and has no per-sample form; drop batch_axis to get "
                    "the full Jacobian"
                )
    if layout == "diagonal" and not all(is_diagonal(t) for t in terms):
        raise ValueError(
            "layout='diagonal' needs an elementwise Jacobian (output and input of the same shape, "
            "each output entry depending only on the same input entry); this function's is not"
        )
    post_sym = None
    keep_coef: set[int] = set()  # terms whose coefficient stays out of their factors
    fast = None
    acc: list[bool] = []
    if sym and hess is not None and batch is None:
        same: list[tuple[F, F]] = []
        paired = _symmetric_terms(alg, terms, hess, dtype, same, acc)
        if paired is not None and same:
            # written as fewer terms when factor arrays that are distinct registers hold the same bits (e.g.
            # slogdet's -A[j,k] A[l,i] with one A times a unit cotangent): checked again on every write
            fcore, fregs, ffirst = _plan(alg, paired, {id(t) for t in paired if t not in terms}, layout, out_shape,
                                         in_shape, dtype, batch, hess)
            fast = (fcore, fregs, ffirst, [(a.r, b.r) for a, b in same], bool(acc))
            acc = []
            paired = _symmetric_terms(alg, terms, hess, dtype, None, acc)
        if paired is None:
            post_sym = (prod(out_shape[:hess]), prod(in_shape))
        else:
            keep_coef = {id(t) for t in paired if t not in terms}
            terms = paired
    direct = None
    first_direct = None
    d = None if batch is not None or hess is not None else _direct_candidate(alg, terms, layout, out_shape, in_shape)
    if d is not None and any(f.r == terms[d].facs[0][0].r for j, t in enumerate(terms) if j != d for f, _ in t.facs):
        d = None  # the dense factor is also read by another term, which accumulates into the result
    if d is not None:
        t = terms[d]
        coef, facs = fold_coef(alg, t, dtype)
        (a, ls), = facs
        h = a if a.dtype == dtype else alg.prog.astype(a, dtype)
        bind = _bindings(t, layout, out_shape, in_shape, alg.sizes)
        if taken is None or h.r not in taken:
            direct = (h.r, tuple(h.shape), tuple(bind[c][0] for c in ls))
            first_direct = h.a
            terms = terms[:d] + terms[d + 1 :]
            if taken is not None:
                taken.add(h.r)
    core, regs, first = (None, [], []) if direct is not None and not terms else _plan(
        alg, terms, keep_coef, layout, out_shape, in_shape, dtype, batch, hess)
    shape, _, _ = placement(layout, out_shape, in_shape, batch, hess)
    fin = Final(core, regs, shape, dtype, first, direct, first_direct, post_sym)
    fin.zero_acc = bool(acc)
    if fast is not None:
        fcore, fregs, ffirst, same_regs, fast_acc = fast
        n = len(regs)
        pos = {r: n + i for i, r in enumerate(fregs)}
        for ra, rb in same_regs:  # the compared registers are read by the fast plan's terms
            assert ra in pos and rb in pos
        fin.regs = regs + fregs
        fin.first = first + ffirst
        fin.fast = (fcore, n, [(pos[ra], pos[rb]) for ra, rb in same_regs], fast_acc)
    return fin


def _plan(alg: Algebra, terms: list[Term], keep_coef: set[int], layout: str, out_shape: tuple[int, ...],
          in_shape: tuple[int, ...], dtype: np.dtype, batch: int | None, hess: int | None,
          ) -> tuple[Any, list[int], list[np.ndarray]]:
    """The expand plan writing ``terms`` (built or fetched), its factor registers and their recorded arrays."""
    specs = []
    regs: list[int] = []
    first: list[np.ndarray] = []
    key: list[Any] = [layout, out_shape, in_shape, dtype, batch, hess]
    for t in terms:
        coef, facs = (t.coef, t.facs) if id(t) in keep_coef else fold_coef(alg, t, dtype)
        facs = _few_factors(alg, facs)
        key_t, cmap = _canonical(t)
        fl = tuple(tuple(cmap[c] for c in ls) for _, ls in facs)
        key.append((complex(coef), key_t, fl, tuple(alg.sizes[c] for c in cmap)))
        specs.append((coef, t.out, t.inp, [ls for _, ls in facs]))
        for a, _ in facs:
            h = a if a.dtype == dtype else alg.prog.astype(a, dtype)
            regs.append(h.r)
            first.append(h.a)
    k = tuple(key)
    hit = _PLANS.get(k)
    if hit is None:
        hit = expand_plan(specs, alg.sizes, layout, out_shape, in_shape, dtype, batch, hess)
        if len(_PLANS) > _PLAN_CACHE_MAX:
            _PLANS.clear()
        _PLANS[k] = hit
    return hit[1], regs, first


def _exchange(t: Term, hess: int) -> dict[int, int] | None:
    """The renaming of letters that maps ``t`` with its two input groups exchanged back onto ``t``'s own
    axes (``t`` at the mirrored entry is then ``t`` with its factors' letters renamed), or None when
    the exchanged term has another structure (other deltas)."""
    key, cmap = _canonical(t)
    key2, cmap2 = _canonical(Term(t.coef, t.out[:hess] + t.inp, t.out[hess:], t.facs))
    if key != key2:
        return None
    inv = {v: c for c, v in cmap.items()}
    rho = {c: inv[v] for c, v in cmap2.items()}
    if any(rho.get(rho[c]) != c for c in rho):  # pragma: no cover - an exchange is an involution
        return None
    return rho


def _self_symmetric(alg: Algebra, t: Term, hess: int, dtype: np.dtype,
                    same: list[tuple[F, F]] | None = None) -> Term | None:
    """``t``, or ``(t + t exchanged) / 2`` as one term, written so that the kernel computes bitwise equal
    values at mirrored entries (n, k) and (k, n) by itself; None when that is not guaranteed.

    With the renaming of :func:`_exchange`, each factor ``F[ls]`` is read at the mirrored entry as
    ``F[rho(ls)]``:

    * every factor invariant (``rho(ls) == ls``): mirrored entries read the same elements in the same
      order, so ``t`` itself (any coefficient, any dtype);
    * one factor whose letters are permuted, the others invariant: ``t/2 + t'/2`` is one term whose
      factor is ``G = F + F[rho]`` (``G`` at mirrored entries is ``a + b`` and ``b + a``);
    * two factors, one array whose two reads are exchanged (``-A[j,k] A[l,i]``: slogdet), real, the
      coefficient +-1 kept out of the factors: ``(c a) b == (c b) a == c (a b)`` exactly, so ``t``.
      With ``same`` (a list), also two registers whose recorded arrays hold the same bits (slogdet's
      ``inv`` and ``inv`` times a unit cotangent); the pair is appended to ``same``: the caller must
      check it on every write.
    """
    rho = _exchange(t, hess)
    if rho is None:
        return None
    moved = [k for k, (_, ls) in enumerate(t.facs) if tuple(rho[c] for c in ls) != ls]
    if not moved:
        return t
    if len(moved) == 1:
        (k,) = moved
        F, ls = t.facs[k]
        rl = tuple(rho[c] for c in ls)
        if len(set(ls)) != len(ls) or set(rl) != set(ls):
            return None
        G = alg.prog.add(F, alg.prog.transpose(F, [rl.index(c) for c in ls]))
        facs = list(t.facs)
        facs[k] = (G, ls)
        return Term(t.coef * 0.5, t.out, t.inp, facs)
    if len(t.facs) == 2 and dtype.kind != "c" and complex(t.coef) in (1, -1):
        (a, la), (b, lb) = t.facs
        if tuple(rho[c] for c in la) == lb and tuple(rho[c] for c in lb) == la:
            if a.r == b.r:
                return Term(t.coef, t.out, t.inp, list(t.facs))  # a new term: its coefficient stays out
            if same is not None and la != lb and _same_bits(a.a, b.a):
                same.append((a, b))
                return Term(t.coef, t.out, t.inp, list(t.facs))
    return None


def _symmetric_terms(alg: Algebra, terms: list[Term], hess: int, dtype: np.dtype,
                     same: list[tuple[F, F]] | None = None, acc: list[bool] | None = None) -> list[Term] | None:
    """The final terms of a diagonal Hessian block rewritten so that the expand kernel writes a result
    that is exactly (bitwise) symmetric in the two input groups, or None when that is not guaranteed.

    ``out`` is f's ``hess`` axes followed by x's (group n), ``inp`` is x's (group k).  A term whose
    two groups carry the same letters is nonzero only where n == k, its own mirror: any summation
    order is symmetric there.  A term that is its own mirror (:func:`_self_symmetric`) gives bitwise
    equal values at mirrored entries, so any number of them may be summed in any order.  One other
    term T (if any) becomes ``T/2 + T/2`` with the second half's groups exchanged, over the same
    factor arrays, placed first: at (n, k) the kernel sums ``a + b`` and at (k, n) ``b + a`` (or
    ``0 + a`` at both where only one half is present: when the halves cover different entries,
    ``acc`` gets True and the caller zero-fills and accumulates every pass), equal since IEEE addition
    commutes, then the same values of the other terms -- provided a and b are computed alike at
    mirrored entries.  ``same`` collects register pairs a term relies on holding the same bits
    (:func:`_self_symmetric`).  The
    kernel evaluates an entry as its per-row scalar ``((coef * o1) * o2) ...`` times its row factor
    ``(i1 * i2) ...``, the split of the factors depending on the loop order, hence:

    * no factor or one factor: ``coef * F`` however it is split (``(coef * F) * 1`` is the same);
    * two factors, real: the coefficient folded into one of them (shared by both halves), so that
      every split gives ``a * b == b * a`` (``1 * x`` is exact).

    None (the caller symmetrizes after the write) for several terms that are not their own mirror (the kernel sums like terms
    left to right: ``((a + b) + c) + d`` is not ``((b + a) + d) + c``), more factors, or two complex
    factors (a complex product by 1 may change the sign of a zero).  NaN payloads aside.
    """
    res: list[Term] = []
    off: list[Term] = []
    for u in terms:
        if u.out[hess:] == u.inp:
            res.append(u)
            continue
        s = _self_symmetric(alg, u, hess, dtype, same)
        if s is None:
            off.append(u)
        else:
            res.append(s)
    if not off:
        return res
    if len(off) > 1:
        return None
    (t,) = off
    if len(t.facs) > 2 or (len(t.facs) == 2 and dtype.kind == "c"):
        return None
    coef, facs = t.coef * 0.5, t.facs
    if len(facs) == 2:
        coef, facs = fold_coef(alg, Term(coef, t.out, t.inp, facs), dtype)
    half = Term(coef, t.out, t.inp, facs)
    swapped = Term(coef, t.out[:hess] + t.inp, t.out[hess:], facs)
    if acc is not None and _exchange(t, hess) is None:
        # the halves cover different entries, in separate passes: an entry where only one is present must
        # get 0 + a at both mirrors (a first pass writing a would leave -0 where its mirror gets 0 + -0)
        acc.append(True)
    return [half, swapped, *res]
