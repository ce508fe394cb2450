"""Hessians and per-sample Jacobians (issue "Hessians, per-sample Jacobians and sparse Jacobians").

    python benchmarks/compare_hessian.py              # both thread counts (one subprocess each)
    python benchmarks/compare_hessian.py --threads 2  # one thread count, in this process
    python benchmarks/compare_hessian.py --quick      # fewer repeats
    python benchmarks/compare_hessian.py --small      # tiny sizes (a smoke run)

Measured in the same run, round-robin after warm-up (medians), at equal thread counts
(tensorjac num_threads=T, numpy's BLAS limited to T with threadpoolctl, XLA with T intra-op
threads), the same f for both libraries (written with jax.numpy for JAX), float64 (x64 on).
The floor is ``np.full`` of the result.  Each table ends with the share of the machine's CPU
that other processes used while it was measured: on a shared machine, figures taken while
that is more than a few percent (above all at 2 threads) are not the library's.

Targets:
  Hessian of slogdet(S)[1], n=32 (1M entries)              >= 10x faster than jax.jit(jax.hessian), <= 3x floor
  Hessian of sum((tanh(X @ W) - Y)**2) wrt W 32x32, X, Y 64x32
                                                          >= 10x faster than jax.jit(jax.hessian), <= 3x floor
  per-sample Jacobian of tanh(X @ W + b) wrt X, B=256, 128 -> 128
                                                          >= 5x faster than jax.jit(jax.vmap(jax.jacrev(f1)))
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _harness import machine, row
from cases import OtherCPU
from compare_composite import MIB, jax_setup, rounds


def main_threads(threads: int, quick: bool, small: bool) -> None:
    import tensorjac as tj
    from threadpoolctl import threadpool_limits

    jax = jax_setup(threads)
    jnp = jax.numpy if jax is not None else None
    rep = 5 if quick else 11
    rng = np.random.default_rng(0)
    print(f"\n#### {threads} thread{'s' if threads > 1 else ''}\n")
    other = OtherCPU()
    with threadpool_limits(threads):
        row("case", "result", "tj (ms)", "floor (ms)", "tj / floor", "JAX (ms)", "JAX / tj")
        row(*["---"] * 7)
        n = 8 if small else 32
        S = rng.standard_normal((n, n))
        S = S @ S.T + n * np.eye(n)
        m, k = (16, 8) if small else (64, 32)
        X, Y = rng.standard_normal((m, k)), rng.standard_normal((m, k))
        W = rng.standard_normal((k, k)) / np.sqrt(k)
        cases: list[tuple[str, Any, np.ndarray, Any]] = [
            (f"Hessian of slogdet(S)[1], n={n}", lambda S: np.linalg.slogdet(S)[1], S,
             (lambda S: jnp.linalg.slogdet(S)[1]) if jax else None),
            (f"Hessian of sum((tanh(X W) - Y)^2) wrt W {k}x{k}, X, Y {m}x{k}",
             lambda W: np.sum((np.tanh(X @ W) - Y) ** 2), W,
             (lambda W: jnp.sum((jnp.tanh(X @ W) - Y) ** 2)) if jax else None),
        ]
        for name, f, arg, jf in cases:
            H = tj.hessian(f, arg, num_threads=threads)
            fns = {"tj": lambda f=f, arg=arg: tj.hessian(f, arg, num_threads=threads),
                   "floor": lambda shape=H.shape: np.full(shape, 1.0)}
            if jf is not None:
                jh = jax.jit(jax.hessian(jf))
                np.testing.assert_allclose(np.asarray(jh(arg)), H, rtol=1e-8, atol=1e-10 * np.abs(H).max())
                fns["jax"] = lambda jh=jh, arg=arg: np.asarray(jh(arg))
            t = rounds(fns, rep)
            jt = t.get("jax")
            row(name, f"{H.shape} {H.nbytes / MIB:.1f} MiB", f"{t['tj'] * 1e3:.2f}", f"{t['floor'] * 1e3:.2f}",
                f"**{t['tj'] / t['floor']:.2f}**", f"{jt * 1e3:.2f}" if jt else "n/a",
                f"**{jt / t['tj']:.1f}**" if jt else "n/a")

        B, d = (16, 16) if small else (256, 128)
        Wp, bp = rng.standard_normal((d, d)) / np.sqrt(d), rng.standard_normal(d)
        Xp = rng.standard_normal((B, d))
        J = tj.jacobian(lambda X: np.tanh(X @ Wp + bp), Xp, batch_axis=0, num_threads=threads)
        fns = {"tj": lambda: tj.jacobian(lambda X: np.tanh(X @ Wp + bp), Xp, batch_axis=0, num_threads=threads),
               "floor": lambda: np.full(J.shape, 1.0)}
        if jax:
            per = jax.jit(jax.vmap(jax.jacrev(lambda x: jnp.tanh(x @ Wp + bp))))
            np.testing.assert_allclose(np.asarray(per(Xp)), J, rtol=1e-10, atol=1e-12)
            fns["jax"] = lambda: np.asarray(per(Xp))
        t = rounds(fns, rep)
        jt = t.get("jax")
        row(f"per-sample Jacobian of tanh(X W + b), B={B}, {d}->{d} (vs jit(vmap(jacrev)))",
            f"{J.shape} {J.nbytes / MIB:.1f} MiB", f"{t['tj'] * 1e3:.2f}", f"{t['floor'] * 1e3:.2f}",
            f"**{t['tj'] / t['floor']:.2f}**", f"{jt * 1e3:.2f}" if jt else "n/a",
            f"**{jt / t['tj']:.1f}**" if jt else "n/a")
    print(f"\n(other processes' CPU during this table: {other.text()})")


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
