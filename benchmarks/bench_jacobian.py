"""pytest-benchmark: dense closed-form Jacobians beside their numpy floors.

Run for timings:   python -m pytest benchmarks/bench_jacobian.py --benchmark-enable
CI runs this file with --benchmark-disable (one call each) as a smoke test.
The ratios the issue asks for come from benchmarks/compare.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorjac as tj
from cases import dense_cases, tiny_matvec

CASES = dense_cases()


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("layout", tj.LAYOUTS)
def test_dense_jacobian(benchmark, name, layout):
    op, args, wrt = CASES[name]
    J = benchmark(op.jacobian, *args, wrt=wrt, layout=layout)
    assert J.dtype == np.float64 and J.size == np.prod(op(*args).shape) * args[wrt].size


@pytest.mark.parametrize("name", list(CASES))
def test_dense_jacobian_out(benchmark, name):
    op, args, wrt = CASES[name]
    out = op.jacobian(*args, wrt=wrt)
    expect = out.copy()
    res = benchmark(op.jacobian, *args, wrt=wrt, out=out)
    assert res is out and np.array_equal(out, expect)


@pytest.mark.parametrize("name", list(CASES))
def test_floor_np_full(benchmark, name):
    op, args, wrt = CASES[name]
    shape = op(*args).shape + args[wrt].shape
    J = benchmark(np.full, shape, 1.0)
    assert J.shape == shape


def test_tiny_matvec_call_overhead(benchmark):
    A, x = tiny_matvec()
    J = benchmark(tj.jacobian, tj.matmul, A, x, wrt=1)
    np.testing.assert_array_equal(J, A)
