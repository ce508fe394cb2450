"""Differentiating a tape: symbolic forward accumulation of terms, and batched VJP/JVP sweeps.

* :func:`forward_terms` -- every node's Jacobian with respect to each input, as
  a short list of :class:`~tensorjac._terms.Term` (factors times deltas),
  composed by the chain rule along the tape.  Nothing dense is built unless
  the structure really is dense; only the final Jacobian is materialized.
* :func:`reverse` -- batched vector-Jacobian products, node by node backwards,
  with each rule's structured VJP (or the einsum contraction of its terms).
  A scalar loss's gradient costs a small multiple of one evaluation of f.
* :func:`forward` -- batched Jacobian-vector products, node by node forwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._ad import apply_deriv
from ._config import warn_nonfinite
from ._deriv import Deriv
from ._sparse import sparse_jacobian
from ._terms import Algebra, Final, Program, Term, compose, finalize, identity, merge, rule_terms
from ._trace import Node, Trace

__all__ = [
    "JacobianProgram", "forward", "forward_terms", "needed", "reverse", "signature", "sparse_jacobians", "write_finals",
]


def needed(trace: Trace, outs: Sequence[Node]) -> tuple[set[int], dict[int, int]]:
    """Indices of the nodes the outputs depend on, and each node's last consumer (for freeing)."""
    need: set[int] = set()
    stack = [o for o in outs if o.live]
    while stack:
        n = stack.pop()
        if n.index in need:
            continue
        need.add(n.index)
        stack.extend(p for _, p in n.parents)
    last: dict[int, int] = {}
    for n in trace.nodes:
        if n.index in need:
            for _, p in n.parents:
                last[p.index] = n.index
    return need, last


def _in_shape(node: Node, pos: int) -> tuple[int, ...]:
    return tuple(np.shape(node.args[pos]))


def forward_terms(
    trace: Trace, outs: Sequence[Node], inputs: Sequence[Node], alg: Algebra,
    sources: list[tuple[int, int, Deriv | None]] | None = None,
) -> list[dict[int, list[Term]]]:
    """For each output, {input position: terms of d output / d input}.

    ``sources`` collects the (node, argument) pairs whose rule factors became
    program leaves, in order (what a replay must evaluate), each with its Deriv
    when that is fixed by the tape's signature (hashable parameters), else None.
    """
    need, last = needed(trace, outs)
    pos = {n.index: k for k, n in enumerate(inputs)}
    keep = {o.index for o in outs}
    J: dict[int, dict[int, list[Term]]] = {}
    for node in trace.nodes:
        if node.index not in need:
            continue
        if node.op is None:
            k = pos.get(node.index)
            J[node.index] = {} if k is None else {k: [identity(alg, node.value.shape)]}
            continue
        res: dict[int, list[Term]] = {}
        for argpos, parent in node.parents:
            pj = J.get(parent.index)
            if not pj:
                continue
            d = node.op.deriv(argpos, [np.shape(a) for a in node.args], node.params)
            with np.errstate(all="ignore"):  # non-finite values are reported once, when written
                facs = d.eval_factors(node.args, node.value)
            if sources is not None:
                sources.append((node.index, argpos, d if _params_hashable(node.params) else None))
            R = rule_terms(alg, d, facs, node.value.shape, _in_shape(node, argpos))
            for k, terms in pj.items():
                lst = res.setdefault(k, [])
                for r in R:
                    for t in terms:
                        c = compose(alg, r, t)
                        if c is not None:
                            lst.append(c)
        J[node.index] = {k: merge(alg, v) for k, v in res.items()}
        for _, parent in node.parents:  # free what no later node needs
            if last.get(parent.index) == node.index and parent.index not in keep:
                J.pop(parent.index, None)
    return [J.get(o.index, {}) if o.live else {} for o in outs]


def reverse(
    trace: Trace, outs: Sequence[Node], cots: Sequence[np.ndarray | None], inputs: Sequence[Node],
    dt: np.dtype, nt: int,
) -> list[np.ndarray | None]:
    """Batched VJPs: ``cots[i]`` is (nb, *outs[i].shape); returns (nb, *input.shape) per input (None: zero)."""
    need, _ = needed(trace, [o for o, c in zip(outs, cots) if c is not None])
    G: dict[int, np.ndarray] = {}
    for o, c in zip(outs, cots):
        if c is not None and o.live:
            G[o.index] = c if o.index not in G else G[o.index] + c
    grads: dict[int, np.ndarray] = {}
    for node in reversed(trace.nodes):
        if node.index not in need:
            continue
        g = G.pop(node.index, None)
        if g is None:
            continue
        if node.op is None:
            grads[node.index] = g
            continue
        shapes = [np.shape(a) for a in node.args]
        for argpos, parent in node.parents:
            d = node.op.deriv(argpos, shapes, node.params)
            with np.errstate(all="ignore"):  # non-finite results are reported once by the caller
                r = apply_deriv(d, "vjp", node.args, g, node.value.shape, shapes[argpos], dt, nt, value=node.value)
            prev = G.get(parent.index)
            G[parent.index] = r if prev is None else prev + r
    return [grads.get(n.index) for n in inputs]


def forward(
    trace: Trace, outs: Sequence[Node], tangents: Sequence[np.ndarray | None], inputs: Sequence[Node],
    dt: np.dtype, nt: int, nb: int,
) -> list[np.ndarray | None]:
    """Batched JVPs: ``tangents[k]`` is (nb, *inputs[k].shape); returns (nb, *out.shape) per output (None: zero)."""
    need, last = needed(trace, outs)
    T: dict[int, np.ndarray] = {}
    for n, t in zip(inputs, tangents):
        if t is not None:
            T[n.index] = t
    keep = {o.index for o in outs}
    for node in trace.nodes:
        if node.index not in need or node.op is None:
            continue
        acc = None
        shapes = [np.shape(a) for a in node.args]
        for argpos, parent in node.parents:
            t = T.get(parent.index)
            if t is None:
                continue
            d = node.op.deriv(argpos, shapes, node.params)
            with np.errstate(all="ignore"):  # non-finite results are reported once by the caller
                r = apply_deriv(d, "jvp", node.args, t, node.value.shape, shapes[argpos], dt, nt, value=node.value)
            acc = r if acc is None else acc + r
        if acc is not None:
            T[node.index] = acc
        for _, parent in node.parents:
            if last.get(parent.index) == node.index and parent.index not in keep:
                T.pop(parent.index, None)
    return [T.get(o.index) if o.live else None for o in outs]


# ----------------------------------------------------------------------------- recorded Jacobian programs


class JacobianProgram:
    """The numeric part of one symbolic Jacobian derivation, replayable on a tape of the same structure."""

    __slots__ = ("finals", "prog", "sources")

    def __init__(self, prog: Program, sources: list[tuple[int, int, Deriv | None]],
                 finals: list[list[Final]]) -> None:
        self.prog = prog
        self.sources = sources
        self.finals = finals

    @classmethod
    def record(
        cls, trace: Trace, outs: Sequence[Node], inputs: Sequence[Node], layout: str,
        dtypes: Sequence[Sequence[np.dtype]], batch: int | None = None, hess: int | None = None,
    ) -> JacobianProgram:
        alg = Algebra()
        sources: list[tuple[int, int, Deriv | None]] = []
        per_out = forward_terms(trace, outs, inputs, alg, sources)
        taken: set[int] = set()
        finals = [
            [
                finalize(alg, per_out[i].get(k, []), o.value.shape, n.value.shape, layout, dtypes[i][k], taken,
                         batch, hess, sym=hess is not None and i == k)  # a Hessian's diagonal blocks
                for k, n in enumerate(inputs)
            ]
            for i, o in enumerate(outs)
        ]
        return cls(alg.prog, sources, finals)

    def run(self, trace: Trace, outs: Sequence[np.ndarray | None], nt: int) -> list[np.ndarray]:
        """Every Jacobian of this tape, written into ``outs`` (flattened over outputs x inputs) or new arrays."""
        return write_finals([f for row in self.finals for f in row], outs, nt, self.prog, self.sources, trace,
                            stacklevel=6)


def sparse_jacobians(
    trace: Trace, outs: Sequence[Node], inputs: Sequence[Node], layout: str,
    dtypes: Sequence[Sequence[np.dtype]], fmt: str, hess: int | None = None, nt: int = 0,
) -> list[Any]:
    """Every Jacobian of the tape as a scipy.sparse array, built from the forward terms (flattened
    over outputs x inputs): only the structural nonzeros are ever enumerated.  Each result's terms
    are dropped once it is written; a factor the program computed may become one result's values."""
    alg = Algebra()
    per_out = forward_terms(trace, outs, inputs, alg)
    res: list[Any] = []
    finite = True
    taken: set[int] = set()
    for i, o in enumerate(outs):
        shared = any(per_out[j] is per_out[i] for j in range(i + 1, len(outs)))  # f returned a node twice
        for k, n in enumerate(inputs):
            terms = list(per_out[i].get(k, [])) if shared else per_out[i].pop(k, [])
            A, ok = sparse_jacobian(alg, terms, o.value.shape, n.value.shape, layout, dtypes[i][k], fmt, hess,
                                    nt, taken)
            finite = finite and ok
            res.append(A)
    if not finite:
        warn_nonfinite("tj.jacobian", stacklevel=5)
    return res


def write_finals(
    finals: Sequence[Final], outs: Sequence[np.ndarray | None], nt: int, prog: Program | None = None,
    sources: Sequence[tuple[int, int, Deriv | None]] = (), trace: Trace | None = None, stacklevel: int = 5,
) -> list[np.ndarray]:
    """Run the program (or use the recording's arrays) and write every Jacobian."""
    Rs = [f.allocate(o) for f, o in zip(finals, outs)]
    finite = True
    if all(f.first is not None for f in finals):  # the recording run: its arrays are at hand
        arrays = [f.first for f in finals]
        for f, R in zip(finals, Rs):
            if f.direct is not None:
                assert R is not None and f.first_direct is not None
                np.copyto(f.view(R), f.first_direct, casting="unsafe")
                finite = finite and bool(np.isfinite(f.first_direct).all())
            f.first = f.first_direct = None
    else:
        assert prog is not None and trace is not None
        leaves: list[np.ndarray] = []
        nodes = trace.nodes
        with np.errstate(all="ignore"):  # non-finite values are reported once, below
            for ni, argpos, d in sources:
                node = nodes[ni]
                assert node.op is not None
                if d is None:  # parameters that are not part of the signature's key (e.g. index arrays)
                    d = node.op.deriv(argpos, [np.shape(a) for a in node.args], node.params)
                if d.uses_value:
                    leaves.extend(d.factors(*node.args, value=node.value))
                else:
                    leaves.extend(d.factors(*node.args))
        dest = {f.direct[0]: f.view(R) for f, R in zip(finals, Rs) if f.direct is not None and R is not None}
        if dest:  # a direct factor is computed from the leaves: check them (they are small)
            finite = all(bool(np.isfinite(a).all()) for a in leaves)
        want = [r for f in finals for r in f.regs]
        with np.errstate(all="ignore"):  # non-finite values are reported once, below
            flat = iter(prog.replay(leaves, want, dest))
        arrays = [[next(flat) for _ in f.regs] for f in finals]
    res = []
    for f, a, R in zip(finals, arrays, Rs):
        r, ok = f.write(a, R, nt)  # type: ignore[arg-type]
        finite = finite and ok
        res.append(r)
    if not finite:
        warn_nonfinite("tj.jacobian", stacklevel=stacklevel)
    return res


def _freeze(v: object) -> object:
    """A hashable stand-in for a rule parameter: its structure, not the values of index arrays."""
    if isinstance(v, slice):
        return ("slice", v.start, v.stop, v.step)
    if isinstance(v, np.ndarray):
        return ("array", v.shape, v.dtype.str)
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, *(_freeze(x) for x in v))
    if isinstance(v, dict):
        return tuple((k, _freeze(x)) for k, x in v.items())
    try:
        hash(v)
    except TypeError:
        return ("object", id(v))
    return v


def _argsig(a: object) -> object:
    if isinstance(a, np.ndarray):
        return (a.shape, a.dtype)
    if isinstance(a, (bool, int, float, complex)):
        return type(a)
    b = np.asarray(a)
    return (b.shape, b.dtype)


def _params_hashable(params: dict) -> bool:
    """Do these parameters key the rule's Deriv cache (tensorjac._rule.Op.deriv) by value?"""
    try:
        hash(tuple(params.items()))
    except TypeError:
        return False
    return True


def _params_key(params: dict) -> object:
    if not params:
        return ()
    key = tuple(params.items())
    try:
        hash(key)
    except TypeError:
        return _freeze(params)
    return key


def signature(trace: Trace, outs: Sequence[Node], inputs: Sequence[Node]) -> tuple:
    """Everything the symbolic derivation depends on: ops, parameters, shapes, dtypes and wiring."""
    nodes = []
    for n in trace.nodes:
        nodes.append((n.op, _params_key(n.params), tuple([_argsig(a) for a in n.args]), n.value.shape,
                      n.value.dtype, tuple([(p, par.index) for p, par in n.parents])))
    return (
        tuple(nodes),
        tuple([n.index for n in inputs]),
        tuple([(o.index, o.live, o.value.shape, o.value.dtype) for o in outs]),
    )
