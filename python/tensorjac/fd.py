"""Finite-difference Jacobians and Hessians of any Python callable.

(Issue 4: to be implemented.)
"""

from __future__ import annotations

from typing import Any


def jacobian(f: Any, x: Any, **kwargs: Any):
    raise NotImplementedError("tj.fd.jacobian is not implemented yet")


def hessian(f: Any, x: Any, **kwargs: Any):
    raise NotImplementedError("tj.fd.hessian is not implemented yet")
