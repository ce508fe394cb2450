"""Assertions for test suites (pytest or unittest): ``tj.testing.assert_jacobian_close``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._check import CheckReport, JacobianMismatchError, check

__all__ = ["JacobianMismatchError", "assert_jacobian_close"]


def assert_jacobian_close(f: Callable[..., Any], x: Any, jac: Any, **kw: Any) -> CheckReport:
    """Assert that ``jac`` (an array or a callable ``jac(x)``) is the Jacobian of ``f`` at ``x``.

    Keyword arguments are those of :func:`tensorjac.check` (``layout``, ``mode``,
    ``method``, ``rtol``, ``atol``, ...).  Raises :class:`tensorjac.JacobianMismatchError`,
    an ``AssertionError`` whose message is the report's table of the worst
    entries; returns the :class:`tensorjac.CheckReport` when the Jacobian passes.
    """
    __tracebackhide__ = True  # pytest: show the caller's line, not this one
    return check(f, x, jac, **kw).raise_if_failed()
