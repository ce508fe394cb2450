"""tensorjac: explicit Jacobian tensors of matrix-calculus ops, fast and in any layout."""

from __future__ import annotations

from . import _core, fd, testing
from ._ad import chain, jvp, kron_matvec, vjp
from ._check import CheckReport, JacobianMismatchError, check
from ._config import (
    JacobianTooLargeError,
    get_memory_budget,
    get_num_threads,
    set_memory_budget,
    set_num_threads,
)
from ._rule import LAYOUTS, Deriv, Op, jacobian
from .ops import (
    CATALOGUE,
    abs,
    cos,
    det,
    dot,
    exp,
    inv,
    kron,
    log,
    logdet,
    matmul,
    multiply,
    norm,
    outer,
    quadratic,
    relu,
    sandwich,
    sigmoid,
    sin,
    softplus,
    sqrt,
    square,
    sum,
    tanh,
    trace,
    transpose,
)  # fmt: skip

__version__ = _core.__version__


__all__ = [
    "CATALOGUE", "LAYOUTS", "CheckReport", "Deriv", "JacobianMismatchError", "JacobianTooLargeError",
    "Op", "abs", "chain", "check", "cos", "det", "dot", "exp", "fd", "get_memory_budget",
    "get_num_threads", "inv", "jacobian", "jvp", "kron", "kron_matvec", "log", "logdet", "matmul",
    "multiply", "norm", "outer", "quadratic", "relu", "sandwich", "set_memory_budget",
    "set_num_threads", "sigmoid", "sin", "softplus", "sqrt", "square", "sum", "tanh", "testing",
    "trace", "transpose", "vjp",
]  # fmt: skip
