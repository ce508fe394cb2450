"""Batched VJPs/JVPs of ops, the chain rule for dense tensors, Kronecker matvec.

(Issue 3: to be implemented.)
"""

from __future__ import annotations

from typing import Any


def vjp(op: Any, *args: Any, cotangent: Any, wrt: int | str = 0, num_threads: int | None = None):
    raise NotImplementedError("tj.vjp is not implemented yet")


def jvp(op: Any, *args: Any, tangent: Any, wrt: int | str = 0, num_threads: int | None = None):
    raise NotImplementedError("tj.jvp is not implemented yet")


def chain(J_outer: Any, J_inner: Any, mid_ndim: int, layout: str = "tensor"):
    raise NotImplementedError("tj.chain is not implemented yet")


def kron_matvec(factors: Any, x: Any):
    raise NotImplementedError("tj.kron_matvec is not implemented yet")
