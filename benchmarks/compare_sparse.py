"""Sparse Jacobians (format="csr"/"csc"/"coo") against the floor of writing the same arrays.

    python benchmarks/compare_sparse.py              # both thread counts (one subprocess each)
    python benchmarks/compare_sparse.py --threads 1  # one thread count, in this process
    python benchmarks/compare_sparse.py --small      # tiny sizes (a smoke run)
    python benchmarks/compare_sparse.py --malloc default   # glibc's own trimming (see below)

The floor, measured in the same run, round-robin with the candidate (medians after warm-up), is
``np.full`` of the nnz float64 values plus ``np.full`` of every nnz-long int32 index array of the
format (one for csr/csc, with their row/column pointer array; two for coo).  For a composite f the
time of evaluating f alone once is shown too (tracing f costs at least that), and what the call
costs beyond it, (tj - f) / floor.  Peak memory is the tracemalloc peak of the call (numpy reports
its allocations there; the inputs are not counted) over the result's own bytes; for a composite,
the peak of evaluating f alone (its own intermediates and value) is shown on the same scale.
Memory that is new to the process costs a page fault per 4 KiB on first touch (about 4 us each on
a VM: ~10 ms for the 16 MiB of the 1000x1000 cases, 10x the floor's writes).  glibc returns freed
heap memory to the OS when more than its trim threshold (dynamic, ~2x the largest freed block) is
free at the top, so whether a call's arrays start warm or cold depends on how much scratch the
previous calls freed: the floor (three arrays) stays warm while a traced call (f's intermediates,
the derivative factors) is trimmed and faults again -- ratios then measure the allocator's
heuristics.  By default the subprocesses run with GLIBC_TUNABLES keeping freed heap memory (trim
threshold 1 GiB, mmap threshold 32 MiB), so floor and candidate both reuse warm memory and the
ratio measures their work; ``--malloc default`` measures with glibc's own settings.  Arrays above
32 MiB (the kron case) are always mapped afresh, for the floor as for tensorjac.

JAX has no sparse Jacobian output (jax#1032), so there is no peer; the dense results would be
128 GiB to 7.3 TiB.

Targets (issue "Hessians, per-sample Jacobians and sparse Jacobians"):
  kron(A, B) wrt A, p=64 (nnz 16.8M)   <= 3x the floor, peak memory <= 2x the result
  multiply of 1000x1000 arrays         the same
  np.tanh(X * Y) wrt X, 1000x1000      the same
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _harness import machine, row
from compare_composite import MIB, rounds


def _nbytes(A: Any) -> int:
    if A.format == "coo":
        return A.data.nbytes + sum(c.nbytes for c in A.coords)
    return A.data.nbytes + A.indices.nbytes + A.indptr.nbytes


def _floor(A: Any) -> Any:
    nnz = A.nnz
    if A.format == "coo":
        return lambda: (np.full(nnz, 1.0), [np.full(nnz, 1, np.int32) for _ in A.coords])
    n = A.indptr.size
    return lambda: (np.full(nnz, 1.0), np.full(nnz, 1, np.int32), np.full(n, 1, np.int32))


def _peak(fn: Any) -> int:
    tracemalloc.start()
    try:
        r = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del r
    return peak


def main_threads(threads: int, quick: bool, small: bool, only: str = "") -> None:
    import tensorjac as tj
    from threadpoolctl import threadpool_limits

    rep = 5 if quick else 11
    rng = np.random.default_rng(0)
    p = 8 if small else 64
    n = 100 if small else 1000
    A, B = rng.standard_normal((p, p)), rng.standard_normal((p, p))
    X, Y = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    print(f"\n#### {threads} thread{'s' if threads > 1 else ''}\n")
    cases: list[tuple[str, Any, Any]] = [
        (f"kron(A, B) wrt A, p={p}", lambda fmt: tj.jacobian(tj.kron, A, B, wrt=0, layout="matrix", format=fmt,
                                                            num_threads=threads), None),
        (f"multiply {n}x{n}", lambda fmt: tj.jacobian(tj.multiply, X, Y, layout="matrix", format=fmt,
                                                      num_threads=threads), None),
        (f"np.tanh(X * Y) wrt X, {n}x{n}",
         lambda fmt: tj.jacobian(lambda X: np.tanh(X * Y), X, layout="matrix", format=fmt, num_threads=threads),
         lambda: np.tanh(X * Y)),
    ]
    with threadpool_limits(threads):
        row("case", "format", "nnz", "result (MiB)", "tj (ms)", "floor (ms)", "tj / floor", "f alone (ms)",
            "(tj - f) / floor", "peak / result", "f's peak / result")
        row(*["---"] * 11)
        for name, fn, f_alone in cases:
            if only not in name:
                continue
            for fmt in ("csr", "csc", "coo"):
                S = fn(fmt)
                fns = {"tj": lambda fn=fn, fmt=fmt: fn(fmt), "floor": _floor(S)}
                if f_alone is not None:
                    fns["f"] = f_alone
                t = rounds(fns, rep)
                peak = _peak(lambda fn=fn, fmt=fmt: fn(fmt))
                nb = _nbytes(S)
                f_peak = _peak(f_alone) if f_alone is not None else None
                row(name, fmt, f"{S.nnz:,}", f"{nb / MIB:.0f}", f"{t['tj'] * 1e3:.1f}", f"{t['floor'] * 1e3:.1f}",
                    f"**{t['tj'] / t['floor']:.2f}**", f"{t['f'] * 1e3:.1f}" if "f" in t else "-",
                    f"{(t['tj'] - t['f']) / t['floor']:.2f}" if "f" in t else "-",
                    f"**{peak / nb:.2f}**", f"{f_peak / nb:.2f}" if f_peak is not None else "-")
                del S


WARM_MALLOC = "glibc.malloc.trim_threshold=1073741824:glibc.malloc.mmap_threshold=33554432"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, help="one thread count, measured in this process")
    ap.add_argument("--quick", action="store_true", help="5 rounds instead of 11")
    ap.add_argument("--small", action="store_true", help="tiny sizes (a smoke run)")
    ap.add_argument("--case", default="", help="only the cases whose name contains this")
    ap.add_argument("--malloc", choices=("warm", "default"), default="warm",
                    help="warm: the subprocesses keep freed heap memory (GLIBC_TUNABLES); default: glibc's trimming")
    ns = ap.parse_args()
    if ns.threads:
        main_threads(ns.threads, ns.quick, ns.small, ns.case)
        return
    env = dict(os.environ)
    if ns.malloc == "warm":
        env["GLIBC_TUNABLES"] = ":".join(filter(None, (env.get("GLIBC_TUNABLES"), WARM_MALLOC)))
    print(f"Machine: {machine()}")
    print(f"Allocator: {'GLIBC_TUNABLES=' + env['GLIBC_TUNABLES'] if env.get('GLIBC_TUNABLES') else 'glibc defaults'}")
    for t in (1, 2):
        sys.stdout.flush()
        cmd = [sys.executable, __file__, "--threads", str(t), "--case", ns.case]
        cmd += ["--quick"] * ns.quick + ["--small"] * ns.small
        subprocess.run(cmd, check=True, env=env)


if __name__ == "__main__":
    main()
