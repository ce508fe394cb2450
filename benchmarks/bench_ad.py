"""pytest-benchmark: VJPs, JVPs and kron_matvec beside their numpy baselines.

Run for timings:   python -m pytest benchmarks/bench_ad.py --benchmark-enable
CI runs this file with --benchmark-disable (one call each) as a smoke test; then
the cases shrink to tiny sizes so the smoke run stays light.  The ratios the
issue asks for come from benchmarks/compare_ad.py (same cases, one run).
"""

from __future__ import annotations

import numpy as np
import pytest
from compare_ad import CASES


@pytest.mark.parametrize("name", list(CASES))
def test_tensorjac(benchmark, name):
    case = CASES[name](benchmark.disabled)
    want = np.asarray(next(iter(case.baselines.values()))())
    got = np.asarray(benchmark(case.tj))
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


@pytest.mark.parametrize("name", list(CASES))
def test_numpy_baseline(benchmark, name):
    case = CASES[name](benchmark.disabled)
    fn = next(iter(case.baselines.values()))
    benchmark(fn)
