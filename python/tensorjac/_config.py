"""Package-wide settings: threads, the memory budget, and error types."""

from __future__ import annotations

import operator
import os

from . import _core

__all__ = [
    "JacobianTooLargeError",
    "get_memory_budget",
    "get_num_threads",
    "set_memory_budget",
    "set_num_threads",
]

MEMORY_BUDGET_ENV = "TENSORJAC_MEMORY_BUDGET"
_GIB = 1 << 30


class JacobianTooLargeError(MemoryError):
    """A dense result would exceed the memory budget; nothing was allocated."""


# The largest team a kernel uses: the CPUs available to this process (its
# affinity mask, as len(os.sched_getaffinity(0)); else the online CPUs), further
# limited by OMP_THREAD_LIMIT; 1 when the extension was built without OpenMP.
_THREAD_CAP: int = _core.thread_cap()


def _check_threads(n: object) -> int:
    """A valid ``num_threads`` (any positive int, however large), capped at ``_THREAD_CAP``."""
    if isinstance(n, bool) or not hasattr(type(n), "__index__"):
        raise TypeError(f"num_threads must be a positive int, got {type(n).__name__} {n!r}")
    value = operator.index(n)  # type: ignore[arg-type]
    if value < 1:
        raise ValueError(f"num_threads must be a positive int, got {value}")
    return min(value, _THREAD_CAP)


def set_num_threads(n: int) -> None:
    """Set the default number of threads of tensorjac's C++ kernels.

    Parameters
    ----------
    n : int
        Any positive integer.  Counts above the number of CPUs available to
        the process (its affinity mask, ``len(os.sched_getaffinity(0))``, or
        ``os.cpu_count()`` where there is none; also ``OMP_THREAD_LIMIT`` if
        set) are capped at that number: more threads than cores only slow
        these memory-bound kernels down.  Without OpenMP the cap is 1.

    Raises
    ------
    TypeError
        If `n` is not an integer (``bool`` and ``float`` included).
    ValueError
        If `n` is zero or negative.

    Notes
    -----
    The initial default is OpenMP's (it honours ``OMP_NUM_THREADS``), capped
    the same way.  Every kernel also takes ``num_threads=`` per call, validated
    and capped alike.  In a process forked after kernels ran multi-threaded,
    kernels run on one thread (OpenMP's thread pool does not survive fork).

    Examples
    --------
    >>> import tensorjac as tj
    >>> old = tj.get_num_threads()
    >>> tj.set_num_threads(1)
    >>> tj.get_num_threads()
    1
    >>> tj.set_num_threads(10**9)  # capped at the available CPUs
    >>> tj.get_num_threads() <= (os.cpu_count() or 1)
    True
    >>> tj.set_num_threads(0)
    Traceback (most recent call last):
        ...
    ValueError: num_threads must be a positive int, got 0
    >>> tj.set_num_threads(old)
    """
    _core.set_num_threads(_check_threads(n))


def get_num_threads() -> int:
    """The number of threads tensorjac kernels use by default.

    This is the effective team size: the value set with
    :func:`set_num_threads` (or ``OMP_NUM_THREADS``) after capping at the
    available CPUs, and 1 in a forked child process (see
    :func:`set_num_threads`).

    Examples
    --------
    >>> import tensorjac as tj
    >>> 1 <= tj.get_num_threads() <= (os.cpu_count() or 1)
    True
    """
    return _core.get_num_threads()


def resolve_threads(num_threads: int | None) -> int:
    """A call's ``num_threads`` for the C++ side: 0 means "the package default".

    Validated like :func:`set_num_threads` and capped, so the value always fits a C int.
    """
    if num_threads is None:
        return 0
    return _check_threads(num_threads)


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * _GIB


def _parse_bytes(text: str) -> int:
    s = text.strip().upper().removesuffix("B")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    mult = 1
    if s and s[-1] in units:
        mult = units[s[-1]]
        s = s[:-1]
    try:
        value = float(s)
    except ValueError:
        raise ValueError(
            f"{MEMORY_BUDGET_ENV}={text!r} is not a byte count (examples: 4000000000, 4G, 512M)"
        ) from None
    if value <= 0:
        raise ValueError(f"{MEMORY_BUDGET_ENV} must be positive, got {text!r}")
    return int(value * mult)


def _default_budget() -> int:
    env = os.environ.get(MEMORY_BUDGET_ENV)
    if env:
        return _parse_bytes(env)
    # Half of physical memory: a Jacobian may be large, but leave room for the rest.
    return _physical_memory() // 2


_budget = _default_budget()


def set_memory_budget(nbytes: int | None) -> None:
    """Largest dense result (bytes) tensorjac will allocate.

    ``None`` restores the default: ``$TENSORJAC_MEMORY_BUDGET`` if set
    (accepts suffixes K/M/G/T), otherwise half of physical memory.
    """
    global _budget
    if nbytes is None:
        _budget = _default_budget()
        return
    if isinstance(nbytes, bool) or not isinstance(nbytes, int):
        raise TypeError(f"memory budget must be an int number of bytes, got {type(nbytes).__name__}")
    if nbytes <= 0:
        raise ValueError(f"memory budget must be positive, got {nbytes}")
    _budget = nbytes


def get_memory_budget() -> int:
    """The current memory budget in bytes."""
    return _budget


def check_budget(shape: tuple[int, ...], itemsize: int, what: str = "Jacobian") -> None:
    """Refuse, before allocating, a result larger than the budget.

    Python integers do not overflow, so the size is exact however large.
    """
    n = 1
    for s in shape:
        n *= s
    nbytes = n * itemsize
    if nbytes > _budget:
        raise JacobianTooLargeError(
            f"the dense {what} would have shape {tuple(shape)} and need "
            f"{nbytes / _GIB:,.2f} GiB, over the memory budget of {_budget / _GIB:,.2f} GiB. "
            "Use tj.vjp / tj.jvp to apply it without building it, or raise the budget with "
            f"tj.set_memory_budget(bytes) or ${MEMORY_BUDGET_ENV}."
        )
