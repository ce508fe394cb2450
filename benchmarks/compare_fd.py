"""Finite-difference ratios (issues 4 and 9), each against a baseline measured in the same run
(timed alternately after warm-up; medians), at equal thread counts (threadpoolctl limits
numpy's BLAS; tensorjac gets the same num_threads).

    python benchmarks/compare_fd.py            # all tables
    python benchmarks/compare_fd.py --quick    # fewer repeats

Same f for every library: the reference f(X) = tanh(X @ W) + inv(X) accepts one point or a
stack of points.  numdifftools calls it once per point, so it is compared with tensorjac
calling it once per point too (vectorized=False); scipy.differentiate.jacobian needs the
vectorized f, so it is compared with tensorjac's vectorized=True.

Accuracy: every case of tests/test_fd_peers.py (closed-form references) through
tj.fd (method="richardson") and numdifftools (its defaults).

Needs the "bench" extra: pip install "tensorjac[bench]" (scipy, numdifftools, threadpoolctl).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

import tensorjac as tj
from _harness import machine, paired, row
from bench_fd import check_case, numdifftools_reference, reference_case, scipy_reference


def accuracy_table() -> None:
    import numdifftools as nd
    from test_fd_peers import CASES, rel_error, run_case

    print("### Accuracy on the peers' kind of cases (tests/test_fd_peers.py), relative error\n")
    wins = ties = 0
    rows = []
    for case in CASES:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            e_tj = rel_error(case, run_case(case, "richardson"))
            if case.kind == "hessian":
                v = nd.Hessian(case.f)(case.x)
            elif case.kind == "gradient":
                v = nd.Gradient(case.f)(case.x)
            else:
                flat = lambda z, c=case: np.asarray(c.f(z.reshape(c.x.shape))).reshape(-1)
                v = nd.Jacobian(flat)(case.x.reshape(-1))
            v = np.asarray(v).reshape(case.exact.shape)
            e_nd = rel_error(case, v)
        if not np.isfinite(e_nd):
            e_nd = np.inf
        win = e_tj <= e_nd
        tie = not win and e_tj <= 2 * e_nd + 4 * np.finfo(float).eps
        wins += win
        ties += tie
        rows.append((case.kind, case.name, f"{e_tj:.1e}", f"{e_nd:.1e}", "yes" if win else ("within 2x" if tie else "no")))
    row("kind", "case", "tensorjac richardson", "numdifftools", "tensorjac error <= numdifftools'")
    row(*["---"] * 5)
    for r in rows:
        row(*r)
    n = len(CASES)
    print(f"\ntensorjac at least as accurate on **{wins} of {n}** cases ({100 * wins / n:.0f}%); "
          f"within a factor 2 (+4 eps) on {wins + ties} ({100 * (wins + ties) / n:.0f}%).\n")


def main() -> None:
    from threadpoolctl import threadpool_limits

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ns = ap.parse_args()
    rep = 5 if ns.quick else 15
    print(f"Machine: {machine()}\n")

    f, X, want = reference_case()
    print("### Reference case: tanh(X @ W) + inv(X), X 12x12 (median, same run)\n")
    row("threads", "tensorjac call", "baseline", "baseline error", "tensorjac error", "baseline (ms)",
        "tensorjac (ms)", "tensorjac faster by")
    row(*["---"] * 8)
    for threads in (1, 2):
        with threadpool_limits(threads):
            tj_vec = lambda: tj.fd.jacobian(f, X, method="richardson", vectorized=True, num_threads=threads)
            tj_pp = lambda: tj.fd.jacobian(f, X, method="richardson", num_threads=threads)
            e_vec = np.abs(tj_vec() - want).max()
            e_pp = np.abs(tj_pp() - want).max()
            cases = [("vectorized=True", tj_vec, e_vec, "scipy.differentiate.jacobian (vectorized f)",
                      lambda: scipy_reference(f, X), rep),
                     ("vectorized=False", tj_pp, e_pp, "numdifftools.Jacobian (per-point f)",
                      lambda: numdifftools_reference(f, X), max(3, rep // 3))]
            for tj_name, tj_fn, e_tj, base_name, base_fn, r in cases:
                e_b = np.abs(base_fn() - want).max()
                t_tj, t_b = paired(tj_fn, base_fn, repeat=r, warmup=1)
                row(threads, tj_name, base_name, f"{e_b:.1e}", f"{e_tj:.1e}", f"{t_b * 1e3:.1f}",
                    f"{t_tj * 1e3:.2f}", f"**{t_b / t_tj:.1f}x**")

    print("\n### Accuracy and cost of every method on the reference case (no timing)\n")
    row("method", "inputs evaluated", "max abs error", "max error estimate")
    row(*["---"] * 4)
    for method in tj.fd.METHODS:
        calls = []

        def counted(S):
            calls.append(S.shape[0])
            return f(S)

        Jm, err = tj.fd.jacobian(counted, X, method=method, vectorized=True, return_error=True)
        row(method, sum(calls), f"{np.abs(Jm - want).max():.1e}", f"{err.max():.1e}")

    print("\n### tj.check: fast mode against full mode, correct Jacobian (median, same run, 1 thread)\n")
    row("inputs n", "outputs", "fast evals", "full evals", "fast (ms)", "full (ms)", "fast faster by")
    row(*["---"] * 7)
    with threadpool_limits(1):
        for n in (200, 400):
            fc, x, Jc = check_case(n)
            fast, full = tj.check(fc, x, Jc, mode="fast"), tj.check(fc, x, Jc, mode="full")
            assert fast.passed and full.passed and fast.mode == "fast"
            t_fast, t_full = paired(lambda: tj.check(fc, x, Jc, mode="fast"),
                                    lambda: tj.check(fc, x, Jc, mode="full"), repeat=rep)
            row(n, Jc.shape[0], fast.n_evals, full.n_evals, f"{t_fast * 1e3:.2f}", f"{t_full * 1e3:.1f}",
                f"**{t_full / t_fast:.1f}x**")
    print()
    accuracy_table()


if __name__ == "__main__":
    main()
