"""Timing helpers shared by the benchmark scripts: warm-up, interleaving, medians.

Absolute times on shared VMs are noise; every figure we report is a ratio
against a floor measured in the same run, with the candidate and the floor
timed alternately so that drift affects both alike.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], repeat: int = 15, number: int = 1, warmup: int = 3) -> float:
    """Median seconds per call over ``repeat`` samples of ``number`` calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) / number)
    return statistics.median(samples)


def paired(candidate: Callable[[], object], floor: Callable[[], object], repeat: int = 15,
           number: int = 1, warmup: int = 3) -> tuple[float, float]:
    """Median times of candidate and floor, sampled alternately."""
    for _ in range(warmup):
        candidate()
        floor()
    a, b = [], []
    for _ in range(repeat):
        for fn, acc in ((candidate, a), (floor, b)):
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            acc.append((time.perf_counter() - t0) / number)
    return statistics.median(a), statistics.median(b)


def row(*cols: object) -> None:
    """Print one Markdown table row."""
    print("| " + " | ".join(str(c) for c in cols) + " |")


def machine() -> str:
    import os

    import numpy as np
    import tensorjac as tj

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"numpy {np.__version__}, tensorjac {tj.__version__} ({tj._core.compiler}, "
            f"OpenMP {'on' if tj._core.openmp else 'off'})")
