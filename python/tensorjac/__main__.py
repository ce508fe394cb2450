"""``python -m tensorjac``: self-check of the op catalogue; ``info``: build facts."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

import tensorjac as tj

from ._examples import example_args


def info() -> int:
    print(f"tensorjac {tj.__version__}")
    print(f"numpy     {np.__version__}")
    print(f"compiler  {tj._core.compiler}")
    print(f"openmp    {'on' if tj._core.openmp else 'off'}")
    print(f"threads   {tj.get_num_threads()}")
    print(f"budget    {tj.get_memory_budget() / 2**30:.2f} GiB")
    return 0


def _central(op: tj.Op, args: tuple, wrt: int, h: float = 1e-6) -> np.ndarray:
    """Plain central differences of the op's value: an independent reference."""
    x = args[wrt]
    y0 = np.asarray(op(*args))
    J = np.empty(y0.shape + x.shape)
    for idx in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        ap = args[:wrt] + (xp,) + args[wrt + 1 :]
        am = args[:wrt] + (xm,) + args[wrt + 1 :]
        J[(...,) + idx] = (np.asarray(op(*ap)) - np.asarray(op(*am))) / (2 * h)
    return J


def selfcheck(seed: int = 0) -> int:
    rows = []
    failed = 0
    for name, op in tj.CATALOGUE.items():
        args = example_args(name, seed)
        for wrt in range(len(args)):
            J = op.jacobian(*args, wrt=wrt)
            err = float(np.max(np.abs(J - _central(op, args, wrt)), initial=0.0))
            scale = max(1.0, float(np.max(np.abs(J), initial=0.0)))
            ok = err <= 1e-6 * scale
            failed += not ok
            shapes = ", ".join("x".join(map(str, a.shape)) or "()" for a in args)
            rows.append((name, shapes, op.argnames[wrt], "x".join(map(str, J.shape)) or "()",
                         f"{err:.1e}", "ok" if ok else "FAIL"))
    head = ("op", "shapes", "wrt", "jacobian", "max |J - fd|", "result")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = "  ".join("{:<%d}" % w for w in widths)
    print(line.format(*head))
    print(line.format(*("-" * w for w in widths)))
    for r in rows:
        print(line.format(*r))
    print(f"\n{len(rows) - failed} of {len(rows)} Jacobians agree with central differences.")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tensorjac", description=__doc__)
    sub = parser.add_subparsers(dest="cmd")
    sub.add_parser("info", help="version, compiler, OpenMP and thread count")
    sc = sub.add_parser("selfcheck", help="check every op of the catalogue (the default)")
    sc.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.cmd == "info":
        return info()
    return selfcheck(getattr(args, "seed", 0))


if __name__ == "__main__":
    sys.exit(main())
