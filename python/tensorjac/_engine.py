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

import numpy as np

from ._ad import apply_deriv
from ._terms import Algebra, Term, compose, identity, merge, rule_terms
from ._trace import Node, Trace

__all__ = ["forward", "forward_terms", "needed", "reverse"]


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


def forward_terms(trace: Trace, outs: Sequence[Node], inputs: Sequence[Node], alg: Algebra) -> list[dict[int, list[Term]]]:
    """For each output, {input position: terms of d output / d input}."""
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
            facs = d.eval_factors(node.args, node.value)
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
            r = apply_deriv(d, "jvp", node.args, t, node.value.shape, shapes[argpos], dt, nt, value=node.value)
            acc = r if acc is None else acc + r
        if acc is not None:
            T[node.index] = acc
        for _, parent in node.parents:
            if last.get(parent.index) == node.index and parent.index not in keep:
                T.pop(parent.index, None)
    return [T.get(o.index) if o.live else None for o in outs]
