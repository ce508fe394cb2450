"""Assertions for test suites (pytest or unittest): ``tj.testing.assert_jacobian_close``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._check import CheckReport, JacobianMismatchError, check

__all__ = ["JacobianMismatchError", "assert_jacobian_close"]


def __dir__() -> list[str]:  # only the public names (the imports above are not part of the module)
    return sorted(__all__)


def assert_jacobian_close(f: Callable[..., Any], x: Any, jac: Any, **kw: Any) -> CheckReport:
    """Assert that ``jac`` (an array or a callable ``jac(x)``) is the Jacobian of ``f`` at ``x``.

    Keyword arguments are those of :func:`tensorjac.check` (``layout``, ``mode``,
    ``method``, ``rtol``, ``atol``, ...).  Raises :class:`tensorjac.JacobianMismatchError`,
    an ``AssertionError`` whose message is the report's table of the worst
    entries; returns the :class:`tensorjac.CheckReport` when the Jacobian passes.

    Parameters
    ----------
    f : callable
        The function (several arguments: pass them all, then ``jac``, with ``wrt=``).
    x : array_like
        The point.
    jac : array_like or callable
        The Jacobian under test.
    **kw
        Keyword arguments of :func:`tensorjac.check`.

    Returns
    -------
    CheckReport

    Examples
    --------
    >>> import numpy as np
    >>> import tensorjac as tj
    >>> A = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> tj.testing.assert_jacobian_close(lambda v: A @ v, np.ones(2), A).passed
    True
    >>> tj.testing.assert_jacobian_close(lambda v: A @ v, np.ones(2), A.T)
    Traceback (most recent call last):
    ...
    tensorjac.JacobianMismatchError: tensorjac.check FAILED: 2 of 4 entries outside tolerance ...
    """
    __tracebackhide__ = True  # pytest: show the caller's line, not this one
    return check(f, x, jac, **kw).raise_if_failed()
