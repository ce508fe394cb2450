"""pytest-benchmark: VJPs, JVPs and kron_matvec beside their numpy baselines.

Run for timings:   python -m pytest benchmarks/bench_ad.py --benchmark-enable
CI runs this file with --benchmark-disable (one call each) as a smoke test; then
the cases shrink to tiny sizes so the smoke run stays light.  The equal-thread
ratios come from benchmarks/compare_ad.py (same cases, one run, 1 and 2 threads).
Here everything runs on one thread.
"""

from __future__ import annotations

import numpy as np
import pytest
from compare_ad import CASES, check


@pytest.mark.parametrize("name", list(CASES))
def test_tensorjac(benchmark, name):
    case = CASES[name](benchmark.disabled)
    check(case)  # tensorjac's product equals every numpy form's
    want = np.asarray(next(iter(case.baselines.values()))(1))
    got = np.asarray(benchmark(case.tj, 1))
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


@pytest.mark.parametrize("name", list(CASES))
def test_numpy_baseline(benchmark, name):
    case = CASES[name](benchmark.disabled)
    fn = next(iter(case.baselines.values()))
    benchmark(fn, 1)
