"""Package-wide settings: threads, the memory budget, and error types."""

from __future__ import annotations

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


def set_num_threads(n: int) -> None:
    """Set the default number of OpenMP threads used by tensorjac kernels.

    The initial default is OpenMP's own (it honours ``OMP_NUM_THREADS``).
    Every kernel also takes ``num_threads=`` per call.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"num_threads must be an int, got {type(n).__name__}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """The default number of threads tensorjac kernels use."""
    return _core.get_num_threads()


def resolve_threads(num_threads: int | None) -> int:
    """0 means "the package default" to the C++ side."""
    if num_threads is None:
        return 0
    if isinstance(num_threads, bool) or not isinstance(num_threads, int):
        raise TypeError(f"num_threads must be an int or None, got {type(num_threads).__name__}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    return num_threads


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
