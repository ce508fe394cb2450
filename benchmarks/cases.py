"""Benchmark cases and equal-thread helpers shared by the pytest-benchmark files and the
compare scripts.

Every ratio compares tensorjac and numpy at the same thread count T: tensorjac gets
``num_threads=T``; numpy's BLAS is limited to T with threadpoolctl (by the compare
scripts); and numpy operations that are single-threaded by design (``np.full``,
``ndarray.fill``, ufuncs, ``einsum``'s own loop) are run on T Python threads over T
slices of the work -- numpy releases the GIL in those loops -- so that the 2-thread
floor is really a 2-thread floor.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import tensorjac as tj

THREADS = (1, 2)  # every ratio is reported at 1 vs 1 and 2 vs 2 threads


def dense_cases(seed: int = 0) -> dict[str, tuple[tj.Op, tuple[np.ndarray, ...], int]]:
    """name -> (op, args, wrt): sandwich n=48 (40 MiB), multiply 64x64 and kron 16x16 (128 MiB)."""
    rng = np.random.default_rng(seed)
    n = 48
    return {
        "sandwich n=48 wrt X (40 MiB)": (tj.sandwich, tuple(rng.standard_normal((n, n)) for _ in range(3)), 1),
        "multiply 64x64 wrt X (128 MiB)": (tj.multiply, tuple(rng.standard_normal((64, 64)) for _ in range(2)), 0),
        "kron 16x16 wrt A (128 MiB)": (tj.kron, tuple(rng.standard_normal((16, 16)) for _ in range(2)), 0),
    }


def tiny_matvec(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((3, 3)), rng.standard_normal(3)


# ----------------------------------------------------------------------------- numpy on T threads

_POOLS: dict[int, ThreadPoolExecutor] = {}


def split(fn: Callable[[slice], object], n: int, T: int) -> None:
    """Run ``fn(s)`` for T contiguous slices ``s`` of ``range(n)``, on T Python threads (T == 1: inline)."""
    if T <= 1 or n < 2:
        fn(slice(0, n))
        return
    pool = _POOLS.get(T)
    if pool is None:
        pool = _POOLS[T] = ThreadPoolExecutor(T)
    bounds = [n * i // T for i in range(T + 1)]
    for f in [pool.submit(fn, slice(a, b)) for a, b in zip(bounds, bounds[1:])]:
        f.result()


def full_floor(shape: tuple[int, ...], T: int) -> np.ndarray:
    """``np.full(shape, 1.0)`` on T threads: a fresh array (first-touch page faults included), filled."""
    if T == 1:
        return np.full(shape, 1.0)
    a = np.empty(shape)
    flat = a.reshape(-1)
    split(lambda s: flat[s].fill(1.0), flat.size, T)
    return a


def fill_floor(out: np.ndarray, T: int) -> None:
    """``out.fill(1.0)`` on T threads (out is C-contiguous)."""
    flat = out.reshape(-1)
    split(lambda s: flat[s].fill(1.0), flat.size, T)


def blas_limits(T: int) -> Any:
    """Limit numpy's BLAS (and any OpenMP pool numpy uses) to T threads."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(T)


# Idle time before each sample.  Worker threads keep spinning after a parallel call -- OpenBLAS's
# for ~2**28 cycles (~0.1 s), libgomp's for a few ms -- and a spinning worker of one contender
# takes a core from the next one: measured, the 2-thread kron VJP (19 ms alone) took 25 ms right
# after a 2-thread OpenBLAS GEMM, 21 ms after waiting 0.15 s.  Waiting gives every sample an idle machine.
SETTLE = 0.15


def round_robin(fns: Mapping[str, Callable[..., object]], repeat: int, warmup: int = 2,
                settle: float = SETTLE) -> dict[str, float]:
    """Median seconds of each function, sampled in turn so that drift hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            if settle:
                time.sleep(settle)
            t0 = time.perf_counter()
            fn()
            samples[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


class OtherCPU:
    """The CPU time other processes used while this one measured, as a fraction of the machine.

    /proc/stat's busy time of all CPUs minus this process's own CPU time (all its threads),
    over wall time times CPUs: 0 on an idle machine, whatever the benchmark itself does.
    A figure measured while it exceeds a few percent shares the cores with someone else.
    """

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as fh:
                vals = [int(v) for v in fh.readline().split()[1:9]]
        except OSError:  # pragma: no cover - not Linux
            return None
        busy = (sum(vals) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait
        own = time.process_time()
        return time.perf_counter(), busy, own

    def fraction(self) -> float | None:
        end = self._sample()
        if end is None or self.start is None:
            return None
        (w0, b0, o0), (w1, b1, o1) = self.start, end
        return max(0.0, ((b1 - b0) - (o1 - o0)) / ((w1 - w0) * (os.cpu_count() or 1)))

    def text(self) -> str:
        f = self.fraction()
        return "n/a" if f is None else f"{100 * f:.0f}%"


def load() -> str:
    """The 1-minute load average (the machine is shared: quote it with the figures)."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:  # pragma: no cover - not on Linux/macOS
        return "n/a"
