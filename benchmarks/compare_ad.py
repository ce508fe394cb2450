"""Ratios for issue 3 (VJPs, JVPs, Kronecker kernels), every figure against numpy
baselines measured in the same run.

    python benchmarks/compare_ad.py            # the issue's sizes
    python benchmarks/compare_ad.py --quick    # fewer repeats
    python benchmarks/compare_ad.py --small    # tiny sizes (a smoke run)

Targets (issue "Batched VJPs and JVPs, the chain rule, and Kronecker kernels"):
  kron VJP wrt A, p=32, batch 64, 2 threads   >= 1.5x faster than np.einsum("bikjl,kl->bij")
  sandwich VJP wrt X, n=128, batch 64         <= 1.2x the time of A.T @ G @ B.T
  kron_matvec, three 16x16, batch 8           >= 10x faster than x @ kron(kron(A1, A2), A3).T,
                                              and no slower than the best numpy reshape/einsum form
  JVPs of the same cases                      reported

Candidate and baselines are timed round-robin (after warm-up) and the medians
compared, so drift on the shared VM affects all alike.  benchmarks/bench_ad.py
runs the same cases under pytest-benchmark.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import tensorjac as tj

THREADS = 2  # the thread count for the C++ kernels


@dataclass
class Case:
    """One measured product: tensorjac's call and numpy baselines computing the same thing."""

    title: str
    tj: Callable[[], object]
    baselines: dict[str, Callable[[], object]]
    target: str = ""
    # which baselines the target refers to: "each" (every one) or "best" (the fastest)
    mode: str = "each"
    extra: dict[str, Callable[[], object]] = field(default_factory=dict)  # reported, no target


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def kron_vjp(wrt: int, small: bool = False) -> Case:
    p, b = (8, 4) if small else (32, 64)  # G: b x p^2 x p^2 float64 = 512 MiB at p=32, b=64
    r = _rng()
    A, B = r.standard_normal((p, p)), r.standard_normal((p, p))
    G = r.standard_normal((b, p * p, p * p))
    G5 = G.reshape(b, p, p, p, p)
    if wrt == 0:
        base = {"np.einsum('bikjl,kl->bij')": lambda: np.einsum("bikjl,kl->bij", G5, B)}
    else:
        base = {"np.einsum('bikjl,ij->bkl')": lambda: np.einsum("bikjl,ij->bkl", G5, A)}
    return Case(
        f"kron VJP wrt {'AB'[wrt]}, p={p}, batch {b} ({G.nbytes >> 20} MiB), {THREADS} threads",
        lambda: tj.vjp(tj.kron, A, B, cotangent=G, wrt=wrt, num_threads=THREADS),
        base,
        target=">= 1.5x faster" if wrt == 0 else "",
    )


def kron_jvp(wrt: int, small: bool = False) -> Case:
    p, b = (8, 4) if small else (32, 64)
    r = _rng()
    A, B = r.standard_normal((p, p)), r.standard_normal((p, p))
    V = r.standard_normal((b, p, p))
    if wrt == 0:  # kron(V[b], B)
        base = {
            "broadcast multiply": lambda: (V[:, :, None, :, None] * B[None, None, :, None, :]).reshape(
                b, p * p, p * p
            ),
            "np.einsum('bij,kl->bikjl')": lambda: np.einsum("bij,kl->bikjl", V, B).reshape(b, p * p, p * p),
        }
    else:  # kron(A, V[b])
        base = {
            "broadcast multiply": lambda: (A[None, :, None, :, None] * V[:, None, :, None, :]).reshape(
                b, p * p, p * p
            ),
            "np.einsum('ij,bkl->bikjl')": lambda: np.einsum("ij,bkl->bikjl", A, V).reshape(b, p * p, p * p),
        }
    return Case(
        f"kron JVP wrt {'AB'[wrt]}, p={p}, batch {b} (writes {b * p**4 * 8 >> 20} MiB), {THREADS} threads",
        lambda: tj.jvp(tj.kron, A, B, tangent=V, wrt=wrt, num_threads=THREADS),
        base,
        mode="best",
    )


def sandwich(jvp: bool, small: bool = False) -> Case:
    n, b = (16, 4) if small else (128, 64)
    r = _rng()
    A, X, B = r.standard_normal((n, n)), r.standard_normal((n, n)), r.standard_normal((n, n))
    W = r.standard_normal((b, n, n))
    if jvp:
        return Case(
            f"sandwich JVP wrt X, n={n}, batch {b}",
            lambda: tj.jvp(tj.sandwich, A, X, B, tangent=W, wrt=1),
            {"A @ V @ B": lambda: A @ W @ B},
        )
    return Case(
        f"sandwich VJP wrt X, n={n}, batch {b}",
        lambda: tj.vjp(tj.sandwich, A, X, B, cotangent=W, wrt=1),
        {"A.T @ G @ B.T": lambda: A.T @ W @ B.T},
        target="<= 1.2x the time",
    )


def kron_matvec(small: bool = False) -> Case:
    k, b = (8, 2) if small else (16, 8)
    r = _rng()
    A1, A2, A3 = (r.standard_normal((k, k)) for _ in range(3))
    x = r.standard_normal((b, k**3))
    K = np.kron(np.kron(A1, A2), A3)

    def seq_matmul() -> np.ndarray:  # mode products with broadcast matmul, batch first
        X = x.reshape(b, k, k, k) @ A3.T
        X = np.matmul(A2, X)
        return np.matmul(A1, X.reshape(b, k, k * k)).reshape(b, -1)

    def seq_tensordot() -> np.ndarray:
        X = np.tensordot(x.reshape(b, k, k, k), A3, axes=([3], [1]))
        X = np.tensordot(X, A2, axes=([2], [1]))
        X = np.tensordot(X, A1, axes=([1], [1]))
        return X.transpose(0, 3, 2, 1).reshape(b, -1)

    sub = "ai,bj,ck,nijk->nabc"
    path = np.einsum_path(sub, A1, A2, A3, x.reshape(b, k, k, k), optimize="optimal")[0]
    return Case(
        f"kron_matvec, three {k}x{k} factors, batch {b}",
        lambda: tj.kron_matvec([A1, A2, A3], x),
        {"x @ kron(kron(A1, A2), A3).T": lambda: x @ np.kron(np.kron(A1, A2), A3).T},
        target=">= 10x faster",
        extra={
            "x @ K.T (K prebuilt)": lambda: x @ K.T,
            "mode products, broadcast matmul": seq_matmul,
            "mode products, tensordot": seq_tensordot,
            "einsum, optimal path": lambda: np.einsum(sub, A1, A2, A3, x.reshape(b, k, k, k), optimize=path),
        },
    )


def elementwise(small: bool = False) -> Case:
    n, b = (16, 4) if small else (256, 64)
    r = _rng()
    X, G = r.standard_normal((n, n)), r.standard_normal((b, n, n))
    return Case(
        f"tanh VJP (batched elementwise), {n}x{n}, batch {b}, {THREADS} threads",
        lambda: tj.vjp(tj.tanh, X, cotangent=G, num_threads=THREADS),
        {"G * (1 - tanh(X)**2)": lambda: G * (1 - np.tanh(X) ** 2)},
    )


CASES: dict[str, Callable[[bool], Case]] = {
    "kron_vjp_A": lambda s: kron_vjp(0, s),
    "kron_vjp_B": lambda s: kron_vjp(1, s),
    "kron_jvp_A": lambda s: kron_jvp(0, s),
    "kron_jvp_B": lambda s: kron_jvp(1, s),
    "sandwich_vjp": lambda s: sandwich(False, s),
    "sandwich_jvp": lambda s: sandwich(True, s),
    "kron_matvec": kron_matvec,
    "elementwise_vjp": elementwise,
}


def round_robin(fns: dict[str, Callable[[], object]], repeat: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds of each function, sampled in turn so that drift hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def _check(case: Case) -> None:
    want = np.asarray(next(iter(case.baselines.values()))())
    got = np.asarray(case.tj())
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


def _ms(t: float) -> str:
    return f"{t * 1e3:.3f}" if t < 1e-2 else f"{t * 1e3:.1f}"


def main() -> None:
    from _harness import machine

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--small", action="store_true")
    ns = ap.parse_args()
    rep = 7 if ns.quick else 21
    print(f"Machine: {machine()}; OpenBLAS/numpy threads: default; tensorjac C++ kernels: "
          f"{THREADS} threads where stated.\n")  # fmt: skip
    print("| case | tensorjac (ms) | numpy baseline | baseline (ms) | tj speedup | target |")
    print("|---|---|---|---|---|---|")
    for build in CASES.values():
        case = build(ns.small)
        _check(case)
        fns = {"tj": case.tj, **case.baselines, **case.extra}
        med = round_robin(fns, rep)
        t = med.pop("tj")
        base = {k: med[k] for k in case.baselines}
        if case.mode == "best":
            best = min(base, key=base.get)  # type: ignore[arg-type]
            base = {best: base[best]}
        for i, (name, tb) in enumerate(base.items()):
            tgt = case.target if i == 0 else ""
            print(f"| {case.title if i == 0 else ''} | {_ms(t) if i == 0 else ''} | {name} | {_ms(tb)} | "
                  f"**{tb / t:.2f}x** | {tgt} |")  # fmt: skip
        for name in case.extra:
            print(f"| | | {name} | {_ms(med[name])} | **{med[name] / t:.2f}x** | reported |")
        del case
    print("\nspeedup = baseline median / tensorjac median (> 1: tensorjac is faster; the sandwich")
    print("target <= 1.2x the time means speedup >= 0.83).")


if __name__ == "__main__":
    main()
