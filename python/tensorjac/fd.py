"""Finite-difference Jacobians and Hessians of any Python callable: ``tj.fd.jacobian``, ``tj.fd.hessian``.

The implementation (and the full description of methods, steps, error
estimates, memory and faults) lives in :mod:`tensorjac._fd`; this module is
the public namespace and holds nothing else (``dir(tj.fd)`` lists only the
public names).
"""

from ._fd import METHODS, NonFiniteWarning, hessian, jacobian
from ._fd import __doc__ as _impl_doc

__all__ = ["METHODS", "NonFiniteWarning", "hessian", "jacobian"]
__doc__ = _impl_doc
del _impl_doc


def __dir__() -> list[str]:
    return sorted(__all__)
