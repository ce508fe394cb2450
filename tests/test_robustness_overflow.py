"""Issue 9: size arithmetic in the bindings is checked in 64 bits.

Sizes that overflow int64 give OverflowError (or a ValueError naming the
problem) before any memory is touched, never a wrapped size.  The portable
fallbacks of checked_mul/checked_add are unit-tested in tests/cpp.
"""

from __future__ import annotations

import numpy as np
import pytest
from tensorjac import _core

F8 = np.dtype("f8")


def test_plan_with_overflowing_extent_refused():
    # one term over two variables of 2**40 each: 2**80 positions
    with pytest.raises(OverflowError, match="overflows 64-bit"):
        _core.ExpandPlan([(1.0, [2**40, 2**40], [(0, 0, 1), (1, 1, 1)], [])], [2**40, 2**40], 0, F8)


def test_plan_with_overflowing_reach_refused():
    # the binding's reach (mult * (size - 1)) overflows
    with pytest.raises(OverflowError, match="overflows 64-bit"):
        _core.ExpandPlan([(1.0, [2**40], [(0, 0, 2**40)], [])], [3], 0, F8)


def test_plan_with_negative_size_refused():
    with pytest.raises(ValueError, match="negative variable size"):
        _core.ExpandPlan([(1.0, [-3], [(0, 0, 1)], [])], [3], 0, F8)


def test_small_plan_still_right():
    """The checks do not get in the way: a delta term writes an identity."""
    plan = _core.ExpandPlan([(2.0, [3], [(0, 0, 1), (0, 1, 1)], [])], [3, 3], 0, F8)
    np.testing.assert_array_equal(plan(None, [])[0], 2 * np.eye(3))  # (result, all factors finite)


def test_plan_reach_beyond_out_refused():
    """A plan whose writes would land 2**62 elements apart is refused against a small out=."""
    plan = _core.ExpandPlan([(1.0, [2], [(0, 0, 2**62)], [])], [1], 0, F8)
    out = np.zeros(3)
    with pytest.raises(ValueError, match="too small"):
        plan(out, [])
    assert not out.any()


def test_kron_batched_overflowing_result_refused():
    X = np.empty((1, 2**40, 0))
    Y = np.empty((1, 2**40, 0))  # m * p = 2**80 rows
    with pytest.raises(OverflowError, match="overflows 64-bit"):
        _core.kron_batched(X, Y)
