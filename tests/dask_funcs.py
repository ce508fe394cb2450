"""Functions for the dask tests (tests/test_dask.py), in a module that dask workers can import.

Worker processes import this module by name (``dask_funcs``) when they unpickle a task: the
cluster fixture puts this directory on their ``PYTHONPATH``.  Everything here is plain numpy.
"""

from __future__ import annotations

import os
import time

import numpy as np

X0 = 0.5  # the test point's entries: a perturbed input differs from it


class SimulatorError(RuntimeError):
    """The exception a failing "simulator" raises in a worker (its type must reach the caller)."""


def simulator(x: np.ndarray) -> np.ndarray:
    """A smooth function of every entry, with a dense Jacobian."""
    return np.sin(x) * np.sum(x**2) + np.cumsum(x.reshape(-1)).reshape(x.shape) ** 2


def simulator_jacobian(x: np.ndarray) -> np.ndarray:
    """The closed form of :func:`simulator`'s Jacobian in the tensor layout (independent of tensorjac)."""
    n = x.size
    xf = x.reshape(-1)
    c = np.cumsum(xf)
    J = np.diag(np.cos(xf) * np.sum(xf**2)) + np.outer(np.sin(xf), 2 * xf)
    J += 2 * c[:, None] * (np.arange(n)[None, :] <= np.arange(n)[:, None])
    return J.reshape(x.shape + x.shape)


def loss(x: np.ndarray) -> np.ndarray:
    """A scalar function (for Hessians)."""
    return np.sum(np.sin(x) * x**2)


def two_args(A: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.tanh(A @ v) * np.sum(v**2)


def fails_on_entry(x: np.ndarray) -> np.ndarray:
    """Raises SimulatorError when entry 3 is perturbed (so only in workers, never at the unperturbed x)."""
    if x.reshape(-1)[3] != X0:
        raise SimulatorError("the simulator diverged (entry 3 perturbed)")
    return simulator(x)


def _in_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def dies_on_entry(x: np.ndarray) -> np.ndarray:
    """Kills its worker process (as a segfaulting simulator would) when entry 2 is perturbed."""
    if x.reshape(-1)[2] != X0 and _in_worker():
        os._exit(13)
    return simulator(x)


def slow(x: np.ndarray) -> np.ndarray:
    """:func:`simulator`, taking 0.1 s per evaluation (long enough to kill a worker mid-run)."""
    time.sleep(0.1)
    return simulator(x)


def worker_state() -> dict:
    """What a worker sees: its process id, tensorjac's memory budget, and whether this module is importable."""
    import tensorjac as tj

    return {"pid": os.getpid(), "budget": tj.get_memory_budget()}


def start_tracing() -> None:
    import tracemalloc

    tracemalloc.stop()
    tracemalloc.start()


def traced_peak() -> int:
    """The peak of the memory traced since :func:`start_tracing` (numpy's allocations included)."""
    import tracemalloc

    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak
