"""Composite functions (issue "Exact Jacobians of whole numpy functions"): tensorjac vs the floor vs JAX.

    python benchmarks/compare_composite.py              # both thread counts (one subprocess each)
    python benchmarks/compare_composite.py --threads 2  # one thread count, in this process
    python benchmarks/compare_composite.py --quick      # fewer repeats
    python benchmarks/compare_composite.py --small      # tiny sizes (a smoke run)

Every figure is measured in the same run, with the candidates timed round-robin
after warm-up (medians), at equal thread counts: tensorjac's kernels get
``num_threads=T``, numpy's BLAS is limited to T threads with threadpoolctl,
and JAX/XLA runs in a process started with T intra-op threads.  "JAX" is the
faster of ``jax.jit(jax.jacfwd(f))`` and ``jax.jit(jax.jacrev(f))`` with x64
enabled, for the same f written with ``jax.numpy``.  The floor is ``np.full``
of the result (a fresh array, as every call returns one).

Targets:
  inv(A @ X @ B) wrt X, n=48            <= 1.5x floor, >= 10x faster than JAX
  layer norm, m=1024                    <= 2x floor,   >= 5x faster than JAX
  row softmax of X @ W (max-shift) 48   <= 2x floor,   >= 5x faster than JAX
  MLP tanh(W2 tanh(W1 x + b1) + b2) wrt W1 (256x256, W2 64x256)
                                        <= 1.5x floor, >= 2x faster than JAX
  tj.grad of trace(A inv(X) B), n=256   <= 1.5x the time of jax.jit(jax.grad)
  tj.vjp of inv(A X B), n=128, 64 cotangents
                                        <= 1.5x the hand-written numpy chain
  inv(A X B), 3x3, per call             no slower than JAX's jit steady state
  sizes 0.5-128 MiB (ops and composites) <= 1.5x floor at every size
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _harness import machine, row

MIB = 1 << 20


def rounds(fns: dict[str, Callable[[], Any]], repeat: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds of each function, sampled round-robin (drift affects all alike).

    The order is shuffled every round and each timed call starts after a pause (5 ms; ``--pause``,
    passed to the subprocesses as TJ_BENCH_PAUSE): a library's worker threads that spin for a while
    after a call (XLA's, OpenMP's) would otherwise slow down whichever function always runs next.
    ``--pause 0`` measures back-to-back calls (steady state: warm caches, no idle vCPU to wake)."""
    pause = float(os.environ.get("TJ_BENCH_PAUSE", "0.005"))
    for _ in range(warmup):
        for f in fns.values():
            f()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    shuffle = random.Random(0).shuffle
    for _ in range(repeat):
        shuffle(order)
        for k in order:
            if pause:
                time.sleep(pause)
            t0 = time.perf_counter()
            fns[k]()
            samples[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def jax_setup(threads: int) -> Any:
    if threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    try:
        import jax
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    return jax


def best_jax(jax: Any, f: Callable[..., Any], x: np.ndarray, argnums: int = 0, *rest: Any) -> tuple[Callable, str]:
    """The faster of jit(jacfwd) and jit(jacrev) (JAX may run out of memory on one of them)."""
    cands = {}
    for name, d in (("jacfwd", jax.jacfwd), ("jacrev", jax.jacrev)):
        g = jax.jit(d(f, argnums=argnums))
        try:
            np.asarray(g(x, *rest))
        except Exception as e:  # e.g. RESOURCE_EXHAUSTED
            print(f"<!-- jax {name}: {type(e).__name__}: {str(e).splitlines()[0][:120]} -->")
            continue
        cands[name] = (lambda g=g: np.asarray(g(x, *rest)))
    if not cands:
        return None, "failed"  # type: ignore[return-value]
    t = rounds(cands, 5)
    name = min(t, key=t.get)  # type: ignore[arg-type]
    return cands[name], name


def main_threads(threads: int, quick: bool, small: bool) -> None:
    import tensorjac as tj
    from threadpoolctl import threadpool_limits

    jax = jax_setup(threads)
    jnp = jax.numpy if jax is not None else None
    rep = 7 if quick else 15
    rng = np.random.default_rng(0)
    print(f"\n#### {threads} thread{'s' if threads > 1 else ''} (tensorjac num_threads={threads}, "
          f"BLAS limited to {threads}, XLA intra-op threads {threads})\n")
    with threadpool_limits(threads):
        # ------------------------------------------------------------------ Jacobians vs floor and JAX
        row("function", "result", "tj (ms)", "floor (ms)", "tj / floor", "JAX (ms)", "JAX / tj")
        row(*["---"] * 7)
        n = 8 if small else 48
        A, B = rng.standard_normal((n, n)), rng.standard_normal((n, n))
        X = rng.standard_normal((n, n)) + n * np.eye(n)
        m = 64 if small else 1024
        x = rng.standard_normal(m)
        s = 8 if small else 48
        W, Xs = rng.standard_normal((s, s)), rng.standard_normal((s, s))
        h = 32 if small else 256
        W1 = rng.standard_normal((h, h)) / np.sqrt(h)
        W2 = rng.standard_normal((64, h)) / np.sqrt(h)
        b1, b2, xx = rng.standard_normal(h), rng.standard_normal(64), rng.standard_normal(h)

        def np_softmax(X: Any, W: Any = W) -> Any:
            Z = X @ W
            Z = Z - Z.max(axis=1, keepdims=True)
            E = np.exp(Z)
            return E / E.sum(axis=1, keepdims=True)

        cases: list[tuple[str, Callable, np.ndarray, Any]] = [
            (f"inv(A @ X @ B) wrt X, n={n}", lambda X: np.linalg.inv(A @ X @ B), X,
             (lambda X: jnp.linalg.inv(A @ X @ B)) if jax else None),
            (f"layer norm, m={m}", lambda x: (x - x.mean()) / np.sqrt(x.var() + 1e-5), x,
             (lambda x: (x - x.mean()) / jnp.sqrt(x.var() + 1e-5)) if jax else None),
            (f"row softmax of X @ W (max-shift), {s}x{s}", np_softmax, Xs,
             (lambda X: jax.nn.softmax(X @ W, axis=1)) if jax else None),
            (f"MLP wrt W1 ({h}x{h}), W2 64x{h}", lambda W1: np.tanh(W2 @ np.tanh(W1 @ xx + b1) + b2), W1,
             (lambda W1: jnp.tanh(W2 @ jnp.tanh(W1 @ xx + b1) + b2)) if jax else None),
        ]
        for name, f, arg, jf in cases:
            J = tj.jacobian(f, arg, num_threads=threads)
            fns: dict[str, Callable[[], Any]] = {
                "tj": lambda f=f, arg=arg: tj.jacobian(f, arg, num_threads=threads),
                "floor": lambda shape=J.shape: np.full(shape, 1.0),
            }
            jname = ""
            if jf is not None:
                g, jname = best_jax(jax, jf, arg)
                if g is not None:
                    np.testing.assert_allclose(g(), J, rtol=1e-8, atol=1e-10 * max(1.0, float(np.abs(J).max())))
                    fns["jax"] = g
            t = rounds(fns, rep)
            jt = t.get("jax")
            row(name, f"{J.shape} {J.nbytes / MIB:.1f} MiB", f"{t['tj'] * 1e3:.2f}", f"{t['floor'] * 1e3:.2f}",
                f"**{t['tj'] / t['floor']:.2f}**", f"{jt * 1e3:.2f} ({jname})" if jt else jname or "n/a",
                f"**{jt / t['tj']:.1f}**" if jt else "n/a")

        # ------------------------------------------------------------------ gradient
        print()
        row("product", "tj (ms)", "baseline (ms)", "tj / baseline")
        row(*["---"] * 4)
        ng = 32 if small else 256
        S = rng.standard_normal((ng, ng)) + ng * np.eye(ng)
        Ag, Bg = rng.standard_normal((ng, ng)), rng.standard_normal((ng, ng))
        fns = {"tj": lambda: tj.grad(lambda X: np.trace(Ag @ np.linalg.inv(X) @ Bg), S, num_threads=threads)}
        if jax:
            jg = jax.jit(jax.grad(lambda X: jnp.trace(Ag @ jnp.linalg.inv(X) @ Bg)))
            fns["jax"] = lambda: np.asarray(jg(S))
            np.testing.assert_allclose(fns["jax"](), fns["tj"](), rtol=1e-8, atol=1e-12)
            t = rounds(fns, rep)
            row(f"tj.grad of trace(A inv(X) B), n={ng} vs jax.jit(jax.grad)", f"{t['tj'] * 1e3:.2f}",
                f"{t['jax'] * 1e3:.2f}", f"**{t['tj'] / t['jax']:.2f}**")
        nv = 16 if small else 128
        Xv = rng.standard_normal((nv, nv)) + nv * np.eye(nv)
        Av, Bv = rng.standard_normal((nv, nv)), rng.standard_normal((nv, nv))
        G = rng.standard_normal((64, nv, nv))

        def hand() -> np.ndarray:
            Yi = np.linalg.inv(Av @ Xv @ Bv)
            H = -(Yi.T @ G @ Yi.T)  # the VJP of inv, batched by BLAS
            return Av.T @ H @ Bv.T  # the VJP of A X B

        np.testing.assert_allclose(tj.vjp(lambda X: np.linalg.inv(Av @ X @ Bv), Xv, cotangent=G), hand(),
                                   rtol=1e-9, atol=1e-12)
        t = rounds({"tj": lambda: tj.vjp(lambda X: np.linalg.inv(Av @ X @ Bv), Xv, cotangent=G,
                                         num_threads=threads), "hand": hand}, rep)
        row(f"tj.vjp of inv(A X B), n={nv}, 64 cotangents vs the numpy chain", f"{t['tj'] * 1e3:.2f}",
            f"{t['hand'] * 1e3:.2f}", f"**{t['tj'] / t['hand']:.2f}**")

        # ------------------------------------------------------------------ tiny per-call
        print()
        row("3x3 inv(A X B) wrt X", "tj (us)", "JAX (us)", "tj / JAX")
        row(*["---"] * 4)
        A3, B3 = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
        X3 = rng.standard_normal((3, 3)) + 3 * np.eye(3)

        def f3(X: Any) -> Any:
            return np.linalg.inv(A3 @ X @ B3)

        t0 = time.perf_counter()
        tj.jacobian(f3, X3)
        first_tj = time.perf_counter() - t0
        if jax:
            t0 = time.perf_counter()
            jf3 = jax.jit(jax.jacfwd(lambda X: jnp.linalg.inv(A3 @ X @ B3)))
            np.asarray(jf3(X3))
            first_jax = time.perf_counter() - t0
            t = rounds({"tj": lambda: tj.jacobian(f3, X3), "jax": lambda: np.asarray(jf3(X3))}, 25 * rep)
            row("steady state (per call)", f"{t['tj'] * 1e6:.1f}", f"{t['jax'] * 1e6:.1f}",
                f"**{t['tj'] / t['jax']:.2f}**")
            row("first call (JAX includes compiling)", f"{first_tj * 1e6:.0f}", f"{first_jax * 1e6:.0f}",
                f"{first_tj / first_jax:.3f}")

        # ------------------------------------------------------------------ sizes
        print()
        row("case", "MiB", "tj (ms)", "floor (ms)", "tj / floor")
        row(*["---"] * 5)
        sizes = [0.5, 2, 8] if small else [0.5, 2, 8, 32, 128]
        for mib in sizes:
            nn = max(2, round((mib * MIB / 8) ** 0.25))
            As, Xs2, Bs = rng.standard_normal((nn, nn)), rng.standard_normal((nn, nn)) + nn * np.eye(nn), \
                rng.standard_normal((nn, nn))
            mm = max(2, round((mib * MIB / 8) ** 0.5))
            xm, Am = rng.standard_normal(mm), rng.standard_normal((mm, mm)) / np.sqrt(mm)
            for name, call in (
                (f"tj.sandwich wrt X, n={nn}", lambda: tj.jacobian(tj.sandwich, As, Xs2, Bs, wrt=1,
                                                                   num_threads=threads)),
                (f"inv(A X B) wrt X, n={nn}", lambda: tj.jacobian(lambda X: np.linalg.inv(As @ X @ Bs), Xs2,
                                                                  num_threads=threads)),
                (f"tanh(A @ x) wrt x (dense), m={mm}", lambda: tj.jacobian(lambda v: np.tanh(Am @ v), xm,
                                                                           num_threads=threads)),
            ):
                J = call()
                t = rounds({"tj": call, "floor": lambda shape=J.shape: np.full(shape, 1.0)}, rep)
                row(name, f"{J.nbytes / MIB:.1f}", f"{t['tj'] * 1e3:.3f}", f"{t['floor'] * 1e3:.3f}",
                    f"**{t['tj'] / t['floor']:.2f}**")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--pause", type=float, help="seconds of idle before each timed call (default 0.005)")
    ns = ap.parse_args()
    if ns.pause is not None:
        os.environ["TJ_BENCH_PAUSE"] = str(ns.pause)  # read by rounds(), here and in the subprocesses
    if ns.threads:
        main_threads(ns.threads, ns.quick, ns.small)
        return
    print(f"Machine: {machine()}; pause before each timed call: {os.environ.get('TJ_BENCH_PAUSE', '0.005')} s")
    for t in (1, 2):
        sys.stdout.flush()
        cmd = [sys.executable, __file__, "--threads", str(t)] + ["--quick"] * ns.quick + ["--small"] * ns.small
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
