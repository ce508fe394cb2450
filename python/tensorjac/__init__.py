"""tensorjac: exact Jacobian tensors of numpy functions and matrix-calculus ops, fast and in any layout."""

from . import _core, _numpy_api, fd, testing
from ._ad import chain, kron_matvec
from ._api import grad, jacobian, jvp, value_and_jacobian, vjp
from ._check import CheckEntry, CheckReport, CheckReports, JacobianMismatchError, check
from ._config import (
    JacobianTooLargeError,
    NonFiniteWarning,
    get_memory_budget,
    get_num_threads,
    set_memory_budget,
    set_num_threads,
)
from ._deriv import Deriv
from ._hessian import hessian, hvp
from ._layout import LAYOUTS
from ._paths import get_cmake_dir, get_include
from ._rule import Op
from .ops import *  # noqa: F403  (the catalogue: one name per op, derived from the registry)
from .ops import CATALOGUE

del _numpy_api  # registers the numpy functions (and, through it, their rules); not part of the namespace

# public classes show as tensorjac.X in reprs and tracebacks, not as their private modules
for _cls in (CheckEntry, CheckReport, CheckReports, JacobianMismatchError, JacobianTooLargeError, NonFiniteWarning):
    _cls.__module__ = "tensorjac"
del _cls

__version__ = _core.__version__

__all__ = sorted(
    [
        "CATALOGUE", "LAYOUTS", "CheckEntry", "CheckReport", "CheckReports", "Deriv", "JacobianMismatchError",
        "JacobianTooLargeError", "NonFiniteWarning", "Op",
        "chain", "check", "fd", "get_memory_budget", "get_num_threads", "grad", "hessian", "hvp", "jacobian", "jvp",
        "get_cmake_dir", "get_include",
        "kron_matvec",
        "set_memory_budget", "set_num_threads", "testing", "value_and_jacobian", "vjp",
    ]
    + list(CATALOGUE)
)  # fmt: skip
