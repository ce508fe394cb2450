"""Dense closed-form Jacobians against the memory floor, at equal thread counts, in one run.

    python benchmarks/compare.py            # all sections (pip install ".[bench]" for threadpoolctl)
    python benchmarks/compare.py --quick    # fewer repeats
    python benchmarks/compare.py --dense-only --threads 1   # only the dense table at 1 thread

Every ratio is tensorjac at T threads (``num_threads=T``) against a floor at T threads,
timed alternately after warm-up (medians):
  T = 1: ``np.full(shape, 1.0)`` (fresh result) and ``out.fill(1.0)`` (``out=``);
  T = 2: the same fills on 2 Python threads, each filling half with ``ndarray.fill``
         (numpy releases the GIL there; the fresh array's page faults happen in both threads).
numpy's BLAS is limited to T threads with threadpoolctl throughout.

Targets (issue "The package and its closed-form Jacobian kernels"):
  dense Jacobian            <= 1.3 x the fresh-fill floor
  dense Jacobian, out=      <= 1.3 x the out.fill floor
  any layout                <= 1.5 x the tensor layout
  tiny 3x3 matvec wrt x     <= 3 us per call through tj.jacobian
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import tensorjac as tj
from _harness import machine, median_time, row
from cases import (
    THREADS,
    OtherCPU,
    blas_limits,
    dense_cases,
    fill_floor,
    full_floor,
    load,
    round_robin,
    tiny_matvec,
)


def dense(rep: int, threads: tuple[int, ...]) -> None:
    print("### Dense Jacobians against the fill floor at the same thread count (median, same run)\n")
    row("case", "threads", "tj (ms)", "fresh floor (ms)", "ratio", "tj out= (ms)", "out floor (ms)", "ratio",
        "other CPU")
    row(*["---"] * 9)
    for name, (op, args, wrt) in dense_cases().items():
        J = op.jacobian(*args, wrt=wrt)
        for T in threads:
            other = OtherCPU()
            with blas_limits(T):
                med = round_robin({
                    "tj": lambda: op.jacobian(*args, wrt=wrt, num_threads=T),
                    "full": lambda: full_floor(J.shape, T),
                    "tj out": lambda: op.jacobian(*args, wrt=wrt, out=J, num_threads=T),
                    "fill": lambda: fill_floor(J, T),
                }, rep)  # fmt: skip
            a, b, c, d = med["tj"], med["full"], med["tj out"], med["fill"]
            row(name, T, f"{a * 1e3:.2f}", f"{b * 1e3:.2f}", f"**{a / b:.2f}**",
                f"{c * 1e3:.2f}", f"{d * 1e3:.2f}", f"**{c / d:.2f}**", other.text())
    print("\nfresh floor: np.full(shape, 1.0) at 1 thread; at 2 threads np.empty(shape) filled by two Python")
    print("threads, half each (ndarray.fill). out floor: out.fill(1.0), at 2 threads half each.")
    print("other CPU: the share of the machine other processes used during the row's measurement.")


def layouts(rep: int, threads: tuple[int, ...]) -> None:
    print("\n### Layouts against the tensor layout (same thread count, median, same run)\n")
    row("case", "threads", *tj.LAYOUTS[1:], "other CPU")
    row(*["---"] * (len(tj.LAYOUTS) + 2))
    for name, (op, args, wrt) in dense_cases().items():
        for T in threads:
            fns = {lay: (lambda lay=lay: op.jacobian(*args, wrt=wrt, layout=lay, num_threads=T)) for lay in tj.LAYOUTS}
            other = OtherCPU()
            med = round_robin(fns, rep)
            row(name, T, *(f"{med[lay] / med['tensor']:.2f}" for lay in tj.LAYOUTS[1:]), other.text())


def overhead(rep: int) -> None:
    print("\n### Call overhead: 3x3 matvec, Jacobian wrt x through tj.jacobian (1 thread)\n")
    A, x = tiny_matvec()
    t = median_time(lambda: tj.jacobian(tj.matmul, A, x, wrt=1, num_threads=1), repeat=rep, number=20000)
    f = median_time(lambda: A.copy(), repeat=rep, number=20000)
    row("call", "median (us)", "A.copy() (us)", "ratio")
    row("---", "---", "---", "---")
    row("tj.jacobian(tj.matmul, A, x, wrt=1)", f"{t * 1e6:.2f}", f"{f * 1e6:.2f}", f"{t / f:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dense-only", action="store_true", help="only the dense table")
    ap.add_argument("--threads", type=int, nargs="*", default=list(THREADS))
    ns = ap.parse_args()
    rep = 7 if ns.quick else 21
    threads = tuple(ns.threads)
    print(f"Machine: {machine()}; load average at start {load()}\n")
    dense(rep, threads)
    if not ns.dense_only:
        layouts(rep, threads)
        overhead(rep)
    print(f"\nload average at the end: {load()}")


if __name__ == "__main__":
    main()
