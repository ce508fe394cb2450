"""Expand-kernel structures from 0.5 to 128 MiB against the np.full floor (issue 7's performance line).

    python benchmarks/bench_expand_structures.py                     # every structure and size, 1 and 2 threads
    python benchmarks/bench_expand_structures.py --layouts           # plus every layout of every structure
    python benchmarks/bench_expand_structures.py --quick --sizes 0.5 2 --structures sandwich multiply

Every Jacobian is built through the public API (``tj.jacobian`` of an op or of a
plain numpy composite).  Per structure, size and thread count the table gives,
each a ratio against a floor timed alternately with it in the same run (medians
after warm-up):

* ``tj / full``: the call returning a fresh Jacobian against ``np.full(shape, 1.0)``
  (a fresh array, single-threaded numpy);
* ``out= / fill``: the same call writing into an existing array, against ``out.fill(1.0)``;
* ``write / full``: the C++ expand plan alone (binding + kernel; factors computed
  beforehand) against ``np.full``: what the kernel costs once the Python side
  (tracing a composite, evaluating its factors) is taken away.  "direct" when
  numpy writes the one dense factor straight into the result (no kernel).

Thread counts are equal on both sides: tensorjac gets ``num_threads=T`` and
numpy/BLAS is limited to T threads (threadpoolctl); ``np.full`` and ``fill`` are
single-threaded whatever T is, as the targets define the floor.

pytest collects this file (``bench_*.py``) as a smoke test: one small case of
every structure, checked against an independent reference (einsum / closed forms).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import tensorjac as tj

MIB = 1 << 20
SIZES = (0.5, 2, 8, 32, 128)


# ----------------------------------------------------------------------------- the structures


class Case:
    """One Jacobian built through the public API, with an independent reference."""

    def __init__(self, name: str, structure: str, f: Any, args: tuple, wrt: int,
                 reference: Callable[[], np.ndarray]) -> None:
        self.name = name
        self.structure = structure
        self.f = f
        self.args = args
        self.wrt = wrt
        self.reference = reference

    def __call__(self, num_threads: int | None = None, layout: str = "tensor",
                 out: np.ndarray | None = None) -> np.ndarray:
        if isinstance(self.f, tj.Op):
            return tj.jacobian(self.f, *self.args, wrt=self.wrt, layout=layout, out=out, num_threads=num_threads)
        return tj.jacobian(self.f, self.args[0], layout=layout, out=out, num_threads=num_threads)

    def writer(self, num_threads: int, layout: str = "tensor") -> Callable[[], Any] | None:
        """The expand plan alone (factors computed beforehand), or None when numpy writes the result directly."""
        if isinstance(self.f, tj.Op):
            arrs = [np.asarray(a) for a in self.args]
            plan = self.f._plan(arrs, self.wrt, layout, {})
            facs = plan.factors(*arrs)
            return lambda: plan.core(None, facs, num_threads)
        from tensorjac import _terms

        seen: list[tuple[Any, list[np.ndarray]]] = []
        orig = _terms.Final.write

        def spy(final: Any, arrays: Any, R: Any, nt: int) -> Any:
            seen.append((final, [np.array(a, copy=True) for a in arrays]))
            return orig(final, arrays, R, nt)

        _terms.Final.write = spy  # type: ignore[method-assign]
        try:
            self(num_threads, layout)
        finally:
            _terms.Final.write = orig  # type: ignore[method-assign]
        if len(seen) != 1 or seen[0][0].direct is not None or seen[0][0].core is None:
            return None
        final, arrays = seen[0]
        return lambda: final.core(None, arrays, num_threads)


def _sizes(mib: float) -> tuple[int, int, int]:
    e = mib * MIB / 8
    return max(2, round(e ** 0.25)), max(2, round(e ** 0.5)), max(2, round(e ** (1 / 3)))


def make_case(structure: str, mib: float, seed: int = 0) -> Case:
    """One structure at (about) ``mib`` MiB of float64 result."""
    rng = np.random.default_rng(seed)
    n4, n2, n3 = _sizes(mib)
    if structure == "sandwich":  # A[i,k] B[l,j]: 2-factor outer product (op)
        A, X, B = (rng.standard_normal((n4, n4)) for _ in range(3))
        return Case(f"tj.sandwich wrt X, n={n4}", structure, tj.sandwich, (A, X, B), 1,
                    lambda: np.einsum("ik,lj->ijkl", A, B))
    if structure == "inv":  # -(Y A)[i,k] (B Y)[l,j]: the same structure from a composite
        A, B = (rng.standard_normal((n4, n4)) + n4 * np.eye(n4) for _ in range(2))
        X = rng.standard_normal((n4, n4)) + n4 * np.eye(n4)

        def ref_inv() -> np.ndarray:
            Y = np.linalg.inv(A @ X @ B)
            return -np.einsum("ik,lj->ijkl", Y @ A, B @ Y)

        return Case(f"inv(A @ X @ B) wrt X, n={n4}", structure, lambda X: np.linalg.inv(A @ X @ B), (X,), 0,
                    ref_inv)
    if structure == "matvec":  # A[i,j]: one dense factor, copied (op)
        M, x = rng.standard_normal((n2, n2)), rng.standard_normal(n2)
        return Case(f"tj.matmul(A, x) wrt x, m={n2}", structure, tj.matmul, (M, x), 1, lambda: M.copy())
    if structure == "tanh":  # (1 - t**2)[i] M[i,j]: one dense factor (composite)
        M, x = rng.standard_normal((n2, n2)) / np.sqrt(n2), rng.standard_normal(n2)
        return Case(f"tanh(M @ x) wrt x, m={n2}", structure, lambda x: np.tanh(M @ x), (x,), 0,
                    lambda: (1 - np.tanh(M @ x) ** 2)[:, None] * M)
    if structure == "multiply":  # W[i,j] d(i,k) d(j,l): zero fill + scatter (op)
        X, Y = rng.standard_normal((n4, n4)), rng.standard_normal((n4, n4))
        eye = np.eye(n4)
        return Case(f"tj.multiply wrt X, n={n4}", structure, tj.multiply, (X, Y), 0,
                    lambda: np.einsum("ij,ik,jl->ijkl", Y, eye, eye))
    if structure == "kron":  # B[k,l] d(i,a) d(j,b) into fused axes (op)
        p = 8
        q = max(1, round((mib * MIB / 8 / p**4) ** 0.5))
        A, B = rng.standard_normal((p, p)), rng.standard_normal((q, q))
        eye = np.eye(p)
        return Case(f"tj.kron wrt A, A {p}x{p}, B {q}x{q}", structure, tj.kron, (A, B), 0,
                    lambda: np.einsum("ia,jb,kl->ikjlab", eye, eye, B).reshape(p * q, p * q, p, p))
    if structure == "mlp":  # M[o,a] x[b] (composite)
        h = n3
        W1, W2 = (rng.standard_normal((h, h)) / np.sqrt(h) for _ in range(2))
        x = rng.standard_normal(h)

        def ref_mlp() -> np.ndarray:
            h1 = np.tanh(W1 @ x)
            y = np.tanh(W2 @ h1)
            return np.einsum("o,oa,a,b->oab", 1 - y**2, W2, 1 - h1**2, x)

        return Case(f"MLP tanh(W2 tanh(W1 x)) wrt W1, h={h}", structure,
                    lambda W1: np.tanh(W2 @ np.tanh(W1 @ x)), (W1,), 0, ref_mlp)
    if structure == "softmax":  # d(i,k) S[i,j] (d(j,l) - S[i,l]): a 3-D factor with a delta (composite)
        X = rng.standard_normal((n4, n4))

        def softmax(X: Any) -> Any:
            E = np.exp(X - X.max(axis=1, keepdims=True))
            return E / E.sum(axis=1, keepdims=True)

        def ref_softmax() -> np.ndarray:
            S = softmax(X)
            eye = np.eye(n4)
            return np.einsum("ik,ijl->ijkl", eye, S[:, :, None] * (eye[None] - S[:, None, :]))

        return Case(f"row softmax wrt X, n={n4}", structure, softmax, (X,), 0, ref_softmax)
    if structure == "layernorm":  # (d(i,k) - 1/m - y[i] y[k] / m) / s: constant + rank 1 + diagonal
        x = rng.standard_normal(n2)

        def ref_ln() -> np.ndarray:
            s = np.sqrt(x.var() + 1e-5)
            y = (x - x.mean()) / s
            return (np.eye(n2) - 1.0 / n2 - np.outer(y, y) / n2) / s

        return Case(f"layer norm wrt x, m={n2}", structure, lambda x: (x - x.mean()) / np.sqrt(x.var() + 1e-5),
                    (x,), 0, ref_ln)
    raise ValueError(f"unknown structure {structure!r}")


STRUCTURES = ("sandwich", "inv", "matvec", "tanh", "multiply", "kron", "mlp", "softmax", "layernorm")


# ----------------------------------------------------------------------------- timing


def rounds(fns: dict[str, Callable[[], Any]], repeat: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each function, sampled round-robin (drift affects all alike).

    Fast functions are called several times per sample so that each sample lasts about a millisecond.
    """
    number: dict[str, int] = {}
    for k, f in fns.items():
        for _ in range(warmup):
            f()
        t0 = time.perf_counter()
        f()
        dt = time.perf_counter() - t0
        number[k] = max(1, min(1000, int(1e-3 / max(dt, 1e-7))))
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            n = number[k]
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            samples[k].append((time.perf_counter() - t0) / n)
    return {k: statistics.median(v) for k, v in samples.items()}


def row(*cols: object) -> None:
    print("| " + " | ".join(str(c) for c in cols) + " |", flush=True)


def _ms(t: float) -> str:
    return f"{t * 1e3:.3f}" if t < 0.01 else f"{t * 1e3:.2f}"


def measure(case: Case, nt: int, repeat: int, layout: str = "tensor") -> dict[str, float]:
    """Times of the call and its floor, and the ratios of out= and of the plan alone to theirs."""
    J = case(nt, layout)
    t = rounds({"tj": lambda: case(nt, layout), "full": lambda: np.full(J.shape, 1.0)}, repeat)
    res = {"tj": t["tj"], "full": t["full"], "mib": J.nbytes / MIB}
    out = np.empty_like(J)
    t = rounds({"out": lambda: case(nt, layout, out), "fill": lambda: out.fill(1.0)}, repeat)
    res["out/fill"] = t["out"] / t["fill"]
    w = case.writer(nt, layout)
    if w is not None:
        t = rounds({"write": w, "full": lambda: np.full(J.shape, 1.0)}, repeat)
        res["write/full"] = t["write"] / t["full"]
    return res


def fusion_cases(mib: float, seed: int = 0) -> dict[str, tuple[dict[str, Callable[[], Any]], tuple[int, ...]]]:
    """Like terms fused in one kernel pass against what the Python side does today (a dense factor or a
    low-rank einsum over the whole result, then the kernel), at the same result size."""
    from tensorjac._expand import expand_plan

    rng = np.random.default_rng(seed)
    n4, n2, _ = _sizes(mib)
    f8 = np.dtype(np.float64)
    out: dict[str, tuple[dict[str, Callable[[], Any]], tuple[int, ...]]] = {}
    # d(A X B + C X D)/dX = A[i,k] B[l,j] + C[i,k] D[l,j]
    A, B, C, D = (rng.standard_normal((n4, n4)) for _ in range(4))
    sz = {"i": n4, "j": n4, "k": n4, "l": n4}
    two = [(1.0, [("i",), ("j",)], [("k",), ("l",)], [("i", "k"), ("l", "j")])] * 2
    shape, fused = expand_plan(two, sz, "tensor", (n4, n4), (n4, n4), f8)
    AC, BD = np.stack([A, C], axis=-1), np.stack([B, D], axis=0)

    def low_rank() -> np.ndarray:  # what merge(final=True) does today: one einsum straight into the result
        R = np.empty(shape)
        return np.einsum("ikr,rlj->ijkl", AC, BD, out=R, optimize=False)

    out[f"A[i,k]B[l,j] + C[i,k]D[l,j], n={n4}"] = ({
        "fused": lambda: fused(None, [A, B, C, D], 0),
        "low-rank einsum (today)": low_rank,
    }, shape)
    # layer norm: c + u[i] v[k] + d[i] delta(i,k)
    u, v, d = (rng.standard_normal(n2) for _ in range(3))
    c = np.asarray(0.5)
    szl = {"i": n2, "k": n2}
    diag_t = (1.0, [("i",)], [("i",)], [("i",)])
    shape2, fused3 = expand_plan([(1.0, [("i",)], [("k",)], [()]), (1.0, [("i",)], [("k",)], [("i",), ("k",)]),
                                  diag_t], szl, "tensor", (n2,), (n2,), f8)
    _, diag = expand_plan([diag_t], szl, "tensor", (n2,), (n2,), f8)

    def dense_today() -> np.ndarray:  # today: the dense like terms written by numpy into the result, then the delta
        R = np.multiply.outer(u, v)
        R += c
        return diag(R, [d], 0, True)[0]

    out[f"c + u[i]v[k] + d[i] delta(i,k), m={n2}"] = ({
        "fused": lambda: fused3(None, [c, u, v, d], 0),
        "dense factor (today)": dense_today,
    }, shape2)
    return out


def main() -> None:
    from _harness import machine
    from threadpoolctl import threadpool_limits

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="7 samples instead of 15")
    ap.add_argument("--sizes", type=float, nargs="+", default=list(SIZES), help="result sizes in MiB")
    ap.add_argument("--structures", nargs="+", default=list(STRUCTURES), choices=STRUCTURES)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--layouts", action="store_true", help="also every layout against np.full")
    ap.add_argument("--fusion", action="store_true", help="only the fused-terms comparison")
    ns = ap.parse_args()
    repeat = 7 if ns.quick else 15
    print(f"Machine: {machine()}")
    print(f"Load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    if ns.fusion:
        print("Like terms: one fused kernel pass against today's densified factor / low-rank einsum "
              "(time / np.full of the result, default threads)\n")
        row("terms", "MiB", "fused / full", "today / full", "fused (ms)", "np.full (ms)")
        row(*["---"] * 6)
        for mib in ns.sizes:
            for name, (fns, shape) in fusion_cases(mib).items():
                t = rounds({**fns, "full": lambda shape=shape: np.full(shape, 1.0)}, repeat)
                today = next(k for k in fns if k != "fused")
                row(name, f"{np.prod(shape) * 8 / MIB:.1f}", f"**{t['fused'] / t['full']:.2f}**",
                    f"{t[today] / t['full']:.2f}", _ms(t["fused"]), _ms(t["full"]))
        return
    row("structure", "MiB", "threads", "tj (ms)", "np.full (ms)", "tj / full", "out= / fill", "write / full")
    row(*["---"] * 8)
    for s in ns.structures:
        for mib in ns.sizes:
            case = make_case(s, mib)
            for nt in ns.threads:
                with threadpool_limits(nt):
                    r = measure(case, nt, repeat)
                wr = f"{r['write/full']:.2f}" if "write/full" in r else "direct"
                row(case.name, f"{r['mib']:.1f}", nt, _ms(r["tj"]), _ms(r["full"]), f"**{r['tj'] / r['full']:.2f}**",
                    f"{r['out/fill']:.2f}", wr)
    if ns.layouts:
        print(f"\nLayouts: tj / np.full per layout (load average {os.getloadavg()[0]:.2f})\n")
        row("structure", "MiB", "threads", *tj.LAYOUTS)
        row(*["---"] * (3 + len(tj.LAYOUTS)))
        for s in ns.structures:
            for mib in ns.sizes:
                case = make_case(s, mib)
                for nt in ns.threads:
                    ratios = []
                    with threadpool_limits(nt):
                        for layout in tj.LAYOUTS:
                            J = case(nt, layout)
                            t = rounds({"tj": lambda layout=layout: case(nt, layout),
                                        "full": lambda J=J: np.full(J.shape, 1.0)}, repeat)
                            ratios.append(f"{t['tj'] / t['full']:.2f}")
                    row(case.name, f"{J.nbytes / MIB:.1f}", nt, *ratios)
    print(f"\nLoad average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


# ----------------------------------------------------------------------------- pytest smoke run

try:
    import pytest
except ImportError:  # pragma: no cover - the script runs without pytest
    pytest = None

if pytest is not None:

    @pytest.mark.parametrize("structure", STRUCTURES)
    def test_structure_smoke(benchmark: Any, structure: str) -> None:
        case = make_case(structure, 0.02)
        J = benchmark(case)
        ref = case.reference()
        np.testing.assert_allclose(J, ref, rtol=1e-10, atol=1e-12)
        out = np.full_like(J, np.nan)
        assert case(1, "tensor", out) is out
        np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)


if __name__ == "__main__":
    main()
