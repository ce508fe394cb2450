"""tensorjac: explicit Jacobian tensors of matrix-calculus ops, fast and in any layout."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core, fd
from ._ad import chain, jvp, kron_matvec, vjp
from ._config import (
    JacobianTooLargeError,
    get_memory_budget,
    get_num_threads,
    set_memory_budget,
    set_num_threads,
)
from ._rule import LAYOUTS, Deriv, Op
from .ops import (
    CATALOGUE, abs, cos, det, dot, exp, inv, kron, log, logdet, matmul, multiply, norm,
    outer, quadratic, relu, sandwich, sigmoid, sin, softplus, sqrt, square, sum, tanh,
    trace, transpose,
)  # fmt: skip

__version__ = _core.__version__


def _need_op(op: Any, what: str) -> Op:
    if isinstance(op, Op):
        return op
    name = getattr(op, "__name__", type(op).__name__)
    raise TypeError(
        f"tj.{what} computes closed forms only for tensorjac ops (tj.matmul, tj.inv, ...); "
        f"{name!r} is not one. For an arbitrary Python function use tj.fd.jacobian(f, x)."
    )


def jacobian(
    op: Op,
    *args: Any,
    wrt: int | str = 0,
    layout: str = "tensor",
    out: np.ndarray | None = None,
    num_threads: int | None = None,
) -> np.ndarray:
    """Closed-form Jacobian of a tensorjac op; the same as ``op.jacobian(*args, ...)``.

    Returns ``T[m..., n...] = d op(*args)[m...] / d args[wrt][n...]`` in the
    requested layout: "tensor" (default), "gradient", "numerator", "matrix",
    "vec", or "diagonal" for elementwise Jacobians.
    """
    return _need_op(op, "jacobian").jacobian(
        *args, wrt=wrt, layout=layout, out=out, num_threads=num_threads
    )


__all__ = [
    "CATALOGUE", "chain", "fd", "jvp", "kron_matvec", "vjp", "LAYOUTS", "Deriv", "JacobianTooLargeError", "Op", "abs", "cos", "det",
    "dot", "exp", "get_memory_budget", "get_num_threads", "inv", "jacobian", "kron", "log",
    "logdet", "matmul", "multiply", "norm", "outer", "quadratic", "relu", "sandwich",
    "set_memory_budget", "set_num_threads", "sigmoid", "sin", "softplus", "sqrt", "square",
    "sum", "tanh", "trace", "transpose",
]  # fmt: skip
