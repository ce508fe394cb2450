"""VJPs, JVPs and Kronecker kernels against numpy, at equal thread counts, in one run.

    python benchmarks/compare_ad.py            # the issue's sizes (pip install ".[bench]" for threadpoolctl)
    python benchmarks/compare_ad.py --quick    # fewer repeats
    python benchmarks/compare_ad.py --small    # tiny sizes (a smoke run)

Every ratio compares tensorjac at T threads (``num_threads=T``) with the fastest numpy
form at up to T threads, for T = 1 and T = 2: numpy's BLAS is limited to T with
threadpoolctl, and numpy forms that are single-threaded by design (``einsum``'s own loop,
broadcasting ufuncs) are timed both as one call and as T Python threads over T slices of
the batch (numpy releases the GIL there), so the 2-thread baseline really can use two cores.  Each product is computed from the same inputs
by every contender; the first baseline's result is checked against tensorjac's.
Candidate and baselines are timed round-robin after warm-up; medians.

Targets (issue "Batched VJPs and JVPs, the chain rule, and Kronecker kernels"):
  kron VJP wrt A, p=32, batch 64     >= 1.5x faster than np.einsum("bikjl,kl->bij")
  sandwich VJP wrt X, n=128, batch 64 <= 1.2x the time of A.T @ G @ B.T
  kron_matvec, three 16x16, batch 8   >= 10x faster than x @ kron(kron(A1, A2), A3).T,
                                      and no slower than the best numpy reshape/einsum form
  JVPs of the same cases              reported
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import tensorjac as tj
from cases import THREADS, OtherCPU, blas_limits, load, round_robin, split

Fn = Callable[[int], object]  # called with the thread count T


@dataclass
class Case:
    """One measured product: tensorjac's call and numpy forms computing the same thing, each run at T threads."""

    title: str
    tj: Fn
    baselines: dict[str, Fn]  # the ratio is against the fastest of these at each T
    target: str = ""
    extra: dict[str, Fn] = field(default_factory=dict)  # reported, no target


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _batched(nb: int, shape: tuple[int, ...], body: Callable[[slice, np.ndarray], object]) -> Fn:
    """A numpy form over the batch axis: body(s, out) fills out[s]; T Python threads take a slice each."""

    def run(T: int) -> np.ndarray:
        out = np.empty((nb, *shape))
        split(lambda s: body(s, out), nb, T)
        return out

    run.split = True  # type: ignore[attr-defined]  # main also times it on one thread at T > 1
    return run


def kron_vjp(wrt: int, small: bool = False) -> Case:
    p, b = (8, 4) if small else (32, 64)  # G: b x p^2 x p^2 float64 = 512 MiB at p=32, b=64
    r = _rng()
    A, B = r.standard_normal((p, p)), r.standard_normal((p, p))
    G = r.standard_normal((b, p * p, p * p))
    G5 = G.reshape(b, p, p, p, p)
    sub, F = ("bikjl,kl->bij", B) if wrt == 0 else ("bikjl,ij->bkl", A)
    return Case(
        f"kron VJP wrt {'AB'[wrt]}, p={p}, batch {b} (G: {G.nbytes >> 20} MiB)",
        lambda T: tj.vjp(tj.kron, A, B, cotangent=G, wrt=wrt, num_threads=T),
        {
            f"np.einsum('{sub}')": _batched(b, (p, p), lambda s, out: np.einsum(sub, G5[s], F, out=out[s])),
            f"np.einsum('{sub}', optimize=True)": lambda T: np.einsum(sub, G5, F, optimize=True),
        },
        target=">= 1.5x faster" if wrt == 0 else "",
    )


def kron_jvp(wrt: int, small: bool = False) -> Case:
    p, b = (8, 4) if small else (32, 64)
    r = _rng()
    A, B = r.standard_normal((p, p)), r.standard_normal((p, p))
    V = r.standard_normal((b, p, p))
    if wrt == 0:  # kron(V[b], B)
        def mul(s: slice, out: np.ndarray) -> None:
            np.multiply(V[s, :, None, :, None], B[None, None, :, None, :], out=out[s])

        ein = "bij,kl->bikjl"
        ops: tuple[np.ndarray, np.ndarray] = (V, B)
    else:  # kron(A, V[b])
        def mul(s: slice, out: np.ndarray) -> None:
            np.multiply(A[None, :, None, :, None], V[s, None, :, None, :], out=out[s])

        ein = "ij,bkl->bikjl"
        ops = (A, V)

    def einsum(s: slice, out: np.ndarray) -> None:
        np.einsum(ein, *((ops[0][s], ops[1]) if wrt == 0 else (ops[0], ops[1][s])), out=out[s])

    return Case(
        f"kron JVP wrt {'AB'[wrt]}, p={p}, batch {b} (writes {b * p**4 * 8 >> 20} MiB)",
        lambda T: tj.jvp(tj.kron, A, B, tangent=V, wrt=wrt, num_threads=T),
        {"broadcast multiply": _batched(b, (p, p, p, p), mul), f"np.einsum('{ein}')": _batched(b, (p, p, p, p), einsum)},
    )


def sandwich(jvp: bool, small: bool = False) -> Case:
    n, b = (16, 4) if small else (128, 64)
    r = _rng()
    A, X, B = r.standard_normal((n, n)), r.standard_normal((n, n)), r.standard_normal((n, n))
    W = r.standard_normal((b, n, n))
    if jvp:
        return Case(
            f"sandwich JVP wrt X, n={n}, batch {b}",
            lambda T: tj.jvp(tj.sandwich, A, X, B, tangent=W, wrt=1, num_threads=T),
            {"A @ V @ B": lambda T: A @ W @ B},
        )
    return Case(
        f"sandwich VJP wrt X, n={n}, batch {b}",
        lambda T: tj.vjp(tj.sandwich, A, X, B, cotangent=W, wrt=1, num_threads=T),
        {"A.T @ G @ B.T": lambda T: A.T @ W @ B.T},
        target="<= 1.2x the time",
    )


def kron_matvec(small: bool = False) -> Case:
    k, b = (8, 2) if small else (16, 8)
    r = _rng()
    A1, A2, A3 = (r.standard_normal((k, k)) for _ in range(3))
    x = r.standard_normal((b, k**3))
    K = np.kron(np.kron(A1, A2), A3)

    def seq_matmul(T: int) -> np.ndarray:  # mode products with broadcast matmul, batch first
        X = x.reshape(b, k, k, k) @ A3.T
        X = np.matmul(A2, X)
        return np.matmul(A1, X.reshape(b, k, k * k)).reshape(b, -1)

    def seq_tensordot(T: int) -> np.ndarray:
        X = np.tensordot(x.reshape(b, k, k, k), A3, axes=([3], [1]))
        X = np.tensordot(X, A2, axes=([2], [1]))
        X = np.tensordot(X, A1, axes=([1], [1]))
        return X.transpose(0, 3, 2, 1).reshape(b, -1)

    sub = "ai,bj,ck,nijk->nabc"
    path = np.einsum_path(sub, A1, A2, A3, x.reshape(b, k, k, k), optimize="optimal")[0]
    return Case(
        f"kron_matvec, three {k}x{k} factors, batch {b}",
        lambda T: tj.kron_matvec([A1, A2, A3], x),
        {"x @ kron(kron(A1, A2), A3).T": lambda T: x @ np.kron(np.kron(A1, A2), A3).T},
        target=">= 10x faster",
        extra={
            "x @ K.T (K prebuilt)": lambda T: x @ K.T,
            "mode products, broadcast matmul": seq_matmul,
            "mode products, tensordot": seq_tensordot,
            "einsum, optimal path": lambda T: np.einsum(sub, A1, A2, A3, x.reshape(b, k, k, k), optimize=path),
        },
    )


def elementwise(small: bool = False) -> Case:
    n, b = (16, 4) if small else (256, 64)
    r = _rng()
    X, G = r.standard_normal((n, n)), r.standard_normal((b, n, n))

    def numpy_form(T: int) -> np.ndarray:  # the same product: G * tanh'(X), tanh' computed from X
        d = 1 - np.tanh(X) ** 2
        out = np.empty_like(G)
        split(lambda s: np.multiply(G[s], d, out=out[s]), b, T)
        return out

    numpy_form.split = True  # type: ignore[attr-defined]

    return Case(
        f"tanh VJP (batched elementwise), {n}x{n}, batch {b}",
        lambda T: tj.vjp(tj.tanh, X, cotangent=G, num_threads=T),
        {"G * (1 - tanh(X)**2)": numpy_form},
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


def check(case: Case, T: int = 1) -> None:
    """tensorjac's product equals every baseline's."""
    got = np.asarray(case.tj(T))
    for fn in (*case.baselines.values(), *case.extra.values()):
        want = np.asarray(fn(T))
        np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


def _ms(t: float) -> str:
    return f"{t * 1e3:.3f}" if t < 1e-2 else f"{t * 1e3:.1f}"


def main() -> None:
    from _harness import machine

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--threads", type=int, nargs="*", default=list(THREADS))
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    ns = ap.parse_args()
    rep = 7 if ns.quick else 21
    print(f"Machine: {machine()}; load average at start {load()}\n")
    print("| case | threads | tensorjac (ms) | numpy form (fastest at these threads) | numpy (ms) | tj speedup | target "
          "| other CPU |")
    print("|---|---|---|---|---|---|---|---|")
    for key in ns.cases:
        case = CASES[key](ns.small)
        check(case)
        for T in ns.threads:
            # numpy at up to T threads: a form split over T Python threads is also timed as one call
            base: dict[str, Callable[..., object]] = {k: (lambda f=f, T=T: f(T)) for k, f in case.baselines.items()}
            for k, f in case.baselines.items():
                if T > 1 and getattr(f, "split", False):
                    base[k] = lambda f=f, T=T: f(T)
                    base[f"{k} (1 thread)"] = lambda f=f: f(1)
            with blas_limits(T):
                fns = {"tj": lambda T=T, c=case: c.tj(T), **base,
                       **{k: (lambda f=f, T=T: f(T)) for k, f in case.extra.items()}}
                other = OtherCPU()
                med = round_robin(fns, rep)
            t = med.pop("tj")
            best = min(base, key=lambda k: med[k])
            print(f"| {case.title} | {T} | {_ms(t)} | {best} | {_ms(med[best])} | **{med[best] / t:.2f}x** | "
                  f"{case.target} | {other.text()} |")  # fmt: skip
            for name in case.extra:
                print(f"| | {T} | | {name} | {_ms(med[name])} | **{med[name] / t:.2f}x** | reported | |")
        del case
    print("\nspeedup = numpy median / tensorjac median at the same thread count (> 1: tensorjac is faster;")
    print("the sandwich target <= 1.2x the time means speedup >= 0.83). other CPU: the share of the machine other")
    print("processes used during that row's measurement (figures above a few percent are disturbed).")
    print(f"load average at the end: {load()}")


if __name__ == "__main__":
    main()
