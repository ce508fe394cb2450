"""Scale-out (issue 10): throughput per core of tensorjac.dask.jacobian against the in-memory kernel.

    python benchmarks/compare_dask.py                    # 1 and 2 threads (one subprocess each)
    python benchmarks/compare_dask.py --threads 2        # one thread count, in this process
    python benchmarks/compare_dask.py --only cluster     # one of the two tables
    python benchmarks/compare_dask.py --quick            # fewer repeats
    python benchmarks/compare_dask.py --small            # tiny sizes (a smoke run)

Needs the dask extra (``pip install '.[dask]'``) and threadpoolctl (the bench extra).

Every figure is measured in the same run, round-robin after warm-up (medians), at equal thread
counts T (numpy/BLAS limited to T with threadpoolctl):

* **in-memory**: ``tj.jacobian(f, *args, layout=..., num_threads=T)``, a fresh result -- the kernel the
  dask blocks are compared with; **out=**: the same kernel writing into an existing array (no page
  faults), for orientation;
* **sync**: ``tensorjac.dask.jacobian(..., num_threads=T)`` computed by dask's synchronous scheduler (one
  block at a time, T kernel threads in it); **threads**: the threaded scheduler with T workers and one
  kernel thread per block; **cluster**: a ``dask.distributed.LocalCluster`` of T worker processes with one
  thread each.

A dask time covers the whole call: tracing f, building the graph (one task per block) and computing
every block, each handed to a store that drops it (``da.store`` into a null target), so that no dense
result is ever assembled -- the way a Jacobian bigger than memory is used.  Throughput per core is
bytes of Jacobian per second divided by T (threads, or worker processes), so every ratio is
``t_in_memory / t_dask``.  Table 1 (in-process schedulers): 128 MiB Jacobians in 16 MiB blocks (and
4 MiB for the last column).  Table 2 (cluster): about 1 GiB in 64 MiB blocks, since a distributed
computation has a fixed cost of tens of milliseconds here.

Goal (issue 10): throughput per core >= 0.7x the in-memory kernel.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _harness import machine, row
from compare_composite import MIB, rounds


class NullStore:
    """A ``da.store`` target that drops every block (a block is computed, then released)."""

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


def _mlp(W1: np.ndarray, x: np.ndarray, W2: np.ndarray) -> Any:
    return np.tanh(W2 @ np.tanh(W1 @ x))


def _cases(rng: np.random.Generator, n: int, kp: int, kq: int, m: int, h: int) -> list[tuple]:
    """(name, f, args, kwargs, layout): the structures of RESULTS.md's other sections."""
    import tensorjac as tj

    A, X, B = (rng.standard_normal((n, n)) for _ in range(3))
    K1, K2 = rng.standard_normal((kp, kp)), rng.standard_normal((kq, kq))
    M, x = rng.standard_normal((m, m // 4)) / 30, rng.standard_normal(m // 4)
    W1, xh, W2 = rng.standard_normal((h, h)) / 16, rng.standard_normal(h), rng.standard_normal((h, h)) / 16
    return [
        (f"tj.sandwich wrt X, n={n}", tj.sandwich, (A, X, B), {"wrt": 1}, "tensor"),
        (f"tj.multiply wrt X, n={n}", tj.multiply, (A, X), {}, "tensor"),
        (f"tj.kron wrt A, A {kp}x{kp}, B {kq}x{kq}", tj.kron, (K1, K2), {}, "tensor"),
        (f"tj.kron wrt A, A {kp}x{kp}, B {kq}x{kq}", tj.kron, (K1, K2), {}, "matrix"),
        (f"tanh(M @ x) wrt x, M {m}x{m // 4}", lambda x: np.tanh(M @ x), (x,), {}, "tensor"),
        (f"MLP tanh(W2 tanh(W1 x)) wrt W1, h={h}", _mlp, (W1, xh, W2), {}, "tensor"),
        (f"MLP tanh(W2 tanh(W1 x)) wrt W1, h={h}", _mlp, (W1, xh, W2), {}, "vec"),
    ]


def in_process_cases(small: bool) -> list[tuple]:
    """128 MiB each (the in-process schedulers)."""
    rng = np.random.default_rng(0)
    if small:
        return _cases(rng, 8, 2, 2, 256, 32)
    return _cases(rng, 64, 16, 16, 8192, 256)


def cluster_cases(small: bool) -> list[tuple]:
    """About 1 GiB each (512 MiB for the dense tanh(M @ x), whose factor is as big and travels in the graph):
    a cluster's fixed cost per computation (tens of ms here) must be small against the work."""
    rng = np.random.default_rng(1)
    if small:
        return _cases(rng, 8, 2, 2, 256, 32)
    return _cases(rng, 108, 16, 45, 16384, 512)


def _setup(f: Any, args: tuple, kw: dict, layout: str, T: int) -> tuple[int, np.ndarray]:
    import tensorjac as tj

    ref = tj.jacobian(f, *args, layout=layout, num_threads=T, **kw)
    return ref.nbytes, np.empty_like(ref)


def table_in_process(T: int, rep: int, small: bool) -> list[float]:
    import dask
    import dask.array as da
    import tensorjac as tj
    import tensorjac.dask as tjd

    print(f"\n#### In-process schedulers, {T} thread{'s' if T > 1 else ''}: blocks of 16 MiB (median, same run)\n")
    row("case", "layout", "MiB", "blocks", "in-memory (ms)", "out= (ms)", "sync (ms)", "ratio", "threads (ms)",
        "ratio", "sync, 4 MiB blocks: ratio")
    row(*["---"] * 11)
    ratios: list[float] = []
    for name, f, args, kw, layout in in_process_cases(small):
        nbytes, out = _setup(f, args, kw, layout, T)

        def build(chunk: str, nt: int) -> Any:
            with dask.config.set({"array.chunk-size": chunk}):
                return tjd.jacobian(f, *args, layout=layout, num_threads=nt, **kw)

        fns = {
            "mem": lambda: tj.jacobian(f, *args, layout=layout, num_threads=T, **kw),
            "out": lambda: tj.jacobian(f, *args, layout=layout, num_threads=T, out=out, **kw),
            "sync": lambda: da.store(build("16MiB", T), NullStore(), lock=False, scheduler="sync"),
            "threads": lambda: da.store(build("16MiB", 1), NullStore(), lock=False, scheduler="threads",
                                        num_workers=T),
            "sync4": lambda: da.store(build("4MiB", T), NullStore(), lock=False, scheduler="sync"),
        }
        t = rounds(fns, rep)
        r = {k: t["mem"] / t[k] for k in ("sync", "threads", "sync4")}
        ratios.extend(r.values())
        blocks = int(np.prod(build("16MiB", 1).numblocks))
        row(name, layout, f"{nbytes / MIB:.0f}", blocks, f"{t['mem'] * 1e3:.1f}", f"{t['out'] * 1e3:.1f}",
            f"{t['sync'] * 1e3:.1f}", f"**{r['sync']:.2f}**", f"{t['threads'] * 1e3:.1f}", f"**{r['threads']:.2f}**",
            f"{r['sync4']:.2f}")
    return ratios


def table_cluster(T: int, rep: int, small: bool) -> list[float]:
    import dask
    import dask.array as da
    import tensorjac as tj
    import tensorjac.dask as tjd
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=T, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    client = Client(cluster, set_as_default=False)
    print(f"\n#### LocalCluster of {T} worker process{'es' if T > 1 else ''} (1 thread each) against {T} "
          f"thread{'s' if T > 1 else ''} in memory: blocks of 64 MiB (median, same run)\n")
    row("case", "layout", "MiB", "blocks", "in-memory (ms)", "out= (ms)", "cluster (ms)", "ratio", "threads (ms)",
        "ratio")
    row(*["---"] * 10)
    ratios: list[float] = []
    try:
        for name, f, args, kw, layout in cluster_cases(small):
            nbytes, out = _setup(f, args, kw, layout, T)

            def build(nt: int) -> Any:
                with dask.config.set({"array.chunk-size": "64MiB"}):
                    return tjd.jacobian(f, *args, layout=layout, num_threads=nt, **kw)

            def on_cluster() -> None:
                with warnings.catch_warnings():  # "Sending large graph": the dense factor's slices
                    warnings.simplefilter("ignore", UserWarning)
                    client.compute(da.store(build(1), NullStore(), lock=False, compute=False)).result()

            fns = {
                "mem": lambda: tj.jacobian(f, *args, layout=layout, num_threads=T, **kw),
                "out": lambda: tj.jacobian(f, *args, layout=layout, num_threads=T, out=out, **kw),
                "cluster": on_cluster,
                "threads": lambda: da.store(build(1), NullStore(), lock=False, scheduler="threads", num_workers=T),
            }
            t = rounds(fns, rep)
            r = {k: t["mem"] / t[k] for k in ("cluster", "threads")}
            ratios.append(r["cluster"])
            blocks = int(np.prod(build(1).numblocks))
            row(name, layout, f"{nbytes / MIB:.0f}", blocks, f"{t['mem'] * 1e3:.0f}", f"{t['out'] * 1e3:.0f}",
                f"{t['cluster'] * 1e3:.0f}", f"**{r['cluster']:.2f}**", f"{t['threads'] * 1e3:.0f}",
                f"**{r['threads']:.2f}**")
    finally:
        client.close()
        cluster.close()
    return ratios


def main_threads(threads: int, quick: bool, small: bool, which: str) -> None:
    from threadpoolctl import threadpool_limits

    rep = 5 if quick else 11
    with threadpool_limits(threads):
        if which in ("all", "in-process"):
            r = table_in_process(threads, rep, small)
            print(f"\nlowest in-process ratio at {threads} thread(s): {min(r):.2f} (goal: >= 0.7)")
        if which in ("all", "cluster"):
            r = table_cluster(threads, max(5, rep - 4), small)
            print(f"\nlowest cluster ratio at {threads} thread(s): {min(r):.2f} (goal: >= 0.7)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, choices=(1, 2))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--only", choices=("all", "in-process", "cluster"), default="all")
    a = ap.parse_args()
    if a.threads is None:
        print(f"Machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
        for T in (1, 2):
            cmd = [sys.executable, __file__, "--threads", str(T), "--only", a.only] + (
                ["--quick"] if a.quick else []) + (["--small"] if a.small else [])
            subprocess.run(cmd, check=True)
        return
    main_threads(a.threads, a.quick, a.small, a.only)


if __name__ == "__main__":
    main()
