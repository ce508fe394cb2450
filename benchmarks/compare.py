"""Ratios for the foundation issue, every figure against a floor measured in the same run.

    python benchmarks/compare.py            # all sections
    python benchmarks/compare.py --quick    # fewer repeats

Targets (issue "The package and its closed-form Jacobian kernels"):
  dense Jacobian            <= 1.3 x np.full(shape, 1.0)
  dense Jacobian, out=      <= 1.3 x out.fill(1.0)
  any layout                <= 1.5 x the tensor layout
  tiny 3x3 matvec wrt x     <= 3 us per call through tj.jacobian
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import tensorjac as tj
from _harness import machine, median_time, paired, row
from cases import dense_cases, tiny_matvec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ns = ap.parse_args()
    rep = 7 if ns.quick else 21
    print(f"Machine: {machine()}\n")

    print("### Dense Jacobians against np.full / out.fill (median, same run)\n")
    row("case", "threads", "tj (ms)", "np.full (ms)", "ratio", "tj out= (ms)", "out.fill (ms)", "ratio")
    row(*["---"] * 8)
    for name, (op, args, wrt) in dense_cases().items():
        J = op.jacobian(*args, wrt=wrt)
        for nt in (1, 2):
            a, b = paired(lambda: op.jacobian(*args, wrt=wrt, num_threads=nt),
                          lambda: np.full(J.shape, 1.0), repeat=rep)
            c, d = paired(lambda: op.jacobian(*args, wrt=wrt, out=J, num_threads=nt),
                          lambda: J.fill(1.0), repeat=rep)
            row(name, nt, f"{a * 1e3:.2f}", f"{b * 1e3:.2f}", f"**{a / b:.2f}**",
                f"{c * 1e3:.2f}", f"{d * 1e3:.2f}", f"**{c / d:.2f}**")

    print("\n### Layouts against the tensor layout (default threads, median, same run)\n")
    row("case", *tj.LAYOUTS[1:])
    row(*["---"] * len(tj.LAYOUTS))
    for name, (op, args, wrt) in dense_cases().items():
        ratios = []
        for layout in tj.LAYOUTS[1:]:
            a, b = paired(lambda: op.jacobian(*args, wrt=wrt, layout=layout),
                          lambda: op.jacobian(*args, wrt=wrt), repeat=rep)
            ratios.append(f"{a / b:.2f}")
        row(name, *ratios)

    print("\n### Call overhead: 3x3 matvec, Jacobian wrt x through tj.jacobian\n")
    A, x = tiny_matvec()
    t = median_time(lambda: tj.jacobian(tj.matmul, A, x, wrt=1), repeat=rep, number=20000)
    f = median_time(lambda: A.copy(), repeat=rep, number=20000)
    row("call", "median (us)", "A.copy() (us)", "ratio")
    row("---", "---", "---", "---")
    row("tj.jacobian(tj.matmul, A, x, wrt=1)", f"{t * 1e6:.2f}", f"{f * 1e6:.2f}", f"{t / f:.1f}")


if __name__ == "__main__":
    main()
