"""Ratios for issue 4 (finite differences and verification), each against a baseline
measured in the same run (timed alternately after warm-up; medians).

    python benchmarks/compare_fd.py            # the issue's cases
    python benchmarks/compare_fd.py --quick    # fewer repeats

Targets (issue "Finite differences and verification"):
  reference f(X) = tanh(X @ W) + inv(X), X 12x12, method="richardson", vectorized=True:
      max abs error <= 1e-11 against the closed form
      >= 10x faster than scipy.differentiate.jacobian (given the vectorized f it needs)
      >= 25x faster than numdifftools.Jacobian
  check(mode="fast") >= 20x faster than mode="full" on a correct Jacobian, n >= 200 inputs

Needs the "bench" extra: pip install "tensorjac[bench]" (scipy, numdifftools).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import tensorjac as tj
from _harness import machine, paired, row
from bench_fd import (
    check_case,
    numdifftools_reference,
    reference_case,
    scipy_reference,
    tj_reference,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ns = ap.parse_args()
    rep = 5 if ns.quick else 15
    print(f"Machine: {machine()}\n")

    f, X, want = reference_case()
    print("### Reference case: tanh(X @ W) + inv(X), X 12x12 (median, same run)\n")
    row("method", "max abs error", "time (ms)", "tensorjac faster by", "target")
    row(*["---"] * 5)
    J = tj_reference(f, X)
    err_tj = np.abs(J - want).max()
    row('tj.fd.jacobian(method="richardson", vectorized=True)', f"{err_tj:.1e}", "", "", "error <= 1e-11")
    baselines = [
        ("scipy.differentiate.jacobian (vectorized f)", scipy_reference, ">= 10x", rep),
        ("numdifftools.Jacobian", numdifftools_reference, ">= 25x", max(3, rep // 2)),
    ]
    for name, fn, target, r in baselines:
        err = np.abs(fn(f, X) - want).max()
        t_tj, t_base = paired(lambda: tj_reference(f, X), lambda fn=fn: fn(f, X), repeat=r, warmup=2)
        row(name, f"{err:.1e}", f"{t_base * 1e3:.1f} (tensorjac {t_tj * 1e3:.2f})",
            f"**{t_base / t_tj:.1f}x**", target)

    print("\n### Accuracy of every method on the reference case (no timing)\n")
    row("method", "vectorized f calls", "inputs evaluated", "max abs error", "max error estimate")
    row(*["---"] * 5)
    for method in tj.fd.METHODS:
        calls = []

        def counted(S):
            calls.append(S.shape[0])
            return f(S)

        Jm, err = tj.fd.jacobian(counted, X, method=method, vectorized=True, return_error=True)
        row(method, len(calls), sum(calls), f"{np.abs(Jm - want).max():.1e}", f"{err.max():.1e}")

    print("\n### tj.check: fast mode against full mode, correct Jacobian (median, same run)\n")
    row("inputs n", "outputs", "fast evals", "full evals", "fast (ms)", "full (ms)", "fast faster by", "target")
    row(*["---"] * 8)
    for n in (200, 400):
        fc, x, Jc = check_case(n)
        fast, full = tj.check(fc, x, Jc, mode="fast"), tj.check(fc, x, Jc, mode="full")
        assert fast.passed and full.passed and fast.mode == "fast"
        t_fast, t_full = paired(lambda: tj.check(fc, x, Jc, mode="fast"), lambda: tj.check(fc, x, Jc, mode="full"),
                                repeat=rep)
        row(n, Jc.shape[0], fast.n_evals, full.n_evals, f"{t_fast * 1e3:.2f}", f"{t_full * 1e3:.1f}",
            f"**{t_full / t_fast:.1f}x**", ">= 20x")


if __name__ == "__main__":
    main()
