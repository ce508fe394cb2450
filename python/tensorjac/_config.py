"""Package-wide settings: threads, the memory budget, and error types."""

from __future__ import annotations

import math
import numbers
import operator
import os
import warnings

from . import _core

__all__ = [
    "JacobianTooLargeError",
    "NonFiniteWarning",
    "get_memory_budget",
    "get_num_threads",
    "set_memory_budget",
    "set_num_threads",
]

MEMORY_BUDGET_ENV = "TENSORJAC_MEMORY_BUDGET"
_GIB = 1 << 30


class NonFiniteWarning(RuntimeWarning):
    """A derivative has inf or NaN entries.

    One policy for the whole package: results follow IEEE arithmetic, as numpy
    does (nothing is raised and nothing is replaced), and every derivative
    function -- :func:`tensorjac.jacobian`, ``grad``, ``vjp``, ``jvp`` and
    ``tj.fd.*`` -- emits this warning when its result may hold non-finite
    entries.  The exact paths check the factors of the result's terms (cheap:
    they are small), so they warn exactly when an input, a value of ``f`` or a
    derivative of one of its steps is not finite; a product of finite factors
    that overflows is not reported.  Finite differences check their result.

    Examples
    --------
    >>> import warnings, numpy as np, tensorjac as tj
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     J = tj.jacobian(tj.log, np.array([0.0, 1.0]), layout="diagonal")
    >>> J, w[-1].category.__name__
    (array([inf,  1.]), 'NonFiniteWarning')
    """


def warn_nonfinite(what: str, stacklevel: int = 3) -> None:
    warnings.warn(
        f"{what}: the result has inf or NaN entries (an input, a value of the function, or one of its "
        "derivatives is not finite there)",
        NonFiniteWarning,
        stacklevel=stacklevel,
    )


class JacobianTooLargeError(MemoryError):
    """A dense result would exceed the memory budget; nothing was allocated.

    A :class:`MemoryError` whose message gives the result's shape and size in
    GiB, and the way out: :func:`tensorjac.vjp` / :func:`tensorjac.jvp` apply a
    Jacobian without building it; :func:`tensorjac.set_memory_budget` raises
    the budget.

    Examples
    --------
    >>> import numpy as np, tensorjac as tj
    >>> X = np.ones((2000, 2000))
    >>> tj.jacobian(tj.multiply, X, X)
    Traceback (most recent call last):
        ...
    tensorjac.JacobianTooLargeError: the dense Jacobian would have shape (2000, 2000, 2000, 2000) and need 119,209.29 GiB, ...
    >>> tj.vjp(tj.multiply, X, X, cotangent=X).shape     # the same derivative, applied to a vector
    (2000, 2000)
    """


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
    >>> import os, tensorjac as tj
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
    >>> import os, tensorjac as tj
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


_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_BUDGET_EXAMPLES = "examples: 4000000000, '4G', '512M', '1.5G'"


def _parse_budget(value: object, env: str | None = None) -> int:
    """A budget in bytes from an int, a float or a string such as "4G".

    Strings are a number with an optional binary suffix K, M, G or T (also
    KB/KiB, ...; case-insensitive).  Fractions of a byte round down.  Errors
    name the value and, for an environment variable, its name `env`.
    """
    label = f"{env}={value!r}" if env else f"memory budget {value!r}"
    kinds = "a number of bytes or a string such as '4G'"
    if isinstance(value, bool):
        raise TypeError(f"{label}: expected {kinds}, got a bool")
    if hasattr(type(value), "__index__"):
        number: int | float = operator.index(value)  # type: ignore[arg-type]
        mult = 1
    elif isinstance(value, numbers.Real):
        number, mult = float(value), 1
    elif isinstance(value, str):
        text = value.strip().upper()
        for suffix in ("IB", "B"):
            if len(text) > len(suffix) and text[-len(suffix) - 1] in _UNITS and text.endswith(suffix):
                text = text[: -len(suffix)]
                break
        mult = 1
        if text and text[-1] in _UNITS:
            mult, text = _UNITS[text[-1]], text[:-1].rstrip()
        try:
            number = int(text) if text.isdigit() else float(text)
        except ValueError:
            raise ValueError(f"{label} is not a byte count ({_BUDGET_EXAMPLES})") from None
    else:
        raise TypeError(f"{label}: expected {kinds}, got {type(value).__name__}")
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(f"{label} is not a finite byte count ({_BUDGET_EXAMPLES})")
    if number <= 0:
        raise ValueError(f"{label} is not positive")
    nbytes = number * mult if isinstance(number, int) else math.floor(number * mult)
    if nbytes < 1:
        raise ValueError(f"{label} is less than one byte")
    return int(nbytes)


def _physical_default() -> int:
    # Half of physical memory: a Jacobian may be large, but leave room for the rest.
    return _physical_memory() // 2


def _default_budget() -> int:
    env = os.environ.get(MEMORY_BUDGET_ENV)
    if env:
        try:
            return _parse_budget(env, MEMORY_BUDGET_ENV)
        except (TypeError, ValueError) as e:
            default = _physical_default()
            warnings.warn(
                f"{e}; ignoring it and using the default memory budget of "
                f"{default / _GIB:,.2f} GiB (half of physical memory)",
                RuntimeWarning,
                stacklevel=2,
            )
            return default
    return _physical_default()


_budget = _default_budget()


def set_memory_budget(nbytes: int | float | str | None) -> None:
    """Set the largest dense result, in bytes, that tensorjac will allocate.

    Larger results (and scratch buffers) are refused before allocation with
    :class:`JacobianTooLargeError`.

    Parameters
    ----------
    nbytes : int, float, str or None
        A positive number of bytes, or a string as accepted by the
        ``TENSORJAC_MEMORY_BUDGET`` environment variable: a number with an
        optional binary suffix ``K``, ``M``, ``G`` or ``T`` (``"512M"``,
        ``"1.5G"``, ``"4GiB"``, ``"4000000000"``; case-insensitive).
        Fractions of a byte round down.  ``None`` restores the default:
        ``$TENSORJAC_MEMORY_BUDGET`` if set and valid, otherwise half of the
        physical memory (an invalid variable gives a RuntimeWarning and the
        latter).

    Raises
    ------
    TypeError
        For a bool or a non-numeric, non-string value.
    ValueError
        For zero, negative, NaN or infinite values, a value under one byte,
        or an unreadable string.  The budget is then left unchanged.

    Examples
    --------
    >>> import tensorjac as tj
    >>> old = tj.get_memory_budget()
    >>> tj.set_memory_budget("512M")
    >>> tj.get_memory_budget()
    536870912
    >>> tj.set_memory_budget("1.5G") ; tj.get_memory_budget()
    1610612736
    >>> tj.set_memory_budget(4_000_000_000) ; tj.get_memory_budget()
    4000000000
    >>> tj.set_memory_budget("inf")
    Traceback (most recent call last):
        ...
    ValueError: memory budget 'inf' is not a finite byte count (examples: ...)
    >>> tj.set_memory_budget(0.25)
    Traceback (most recent call last):
        ...
    ValueError: memory budget 0.25 is less than one byte
    >>> tj.get_memory_budget()  # unchanged by the refused calls
    4000000000
    >>> tj.set_memory_budget(old)
    """
    global _budget
    if nbytes is None:
        _budget = _default_budget()
        return
    _budget = _parse_budget(nbytes)


def get_memory_budget() -> int:
    """The current memory budget in bytes (see :func:`set_memory_budget`).

    Examples
    --------
    >>> import tensorjac as tj
    >>> old = tj.get_memory_budget()
    >>> tj.set_memory_budget("1K")
    >>> tj.get_memory_budget()
    1024
    >>> tj.set_memory_budget(old)
    """
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


def check_bytes(nbytes: int, what: str) -> None:
    """Refuse, before allocating, ``nbytes`` over the budget; ``what`` says what they would hold."""
    if nbytes > _budget:
        raise JacobianTooLargeError(
            f"{what} would need {nbytes / _GIB:,.2f} GiB, over the memory budget of {_budget / _GIB:,.2f} GiB. "
            "Use tj.vjp / tj.jvp to apply it without building it, or raise the budget with "
            f"tj.set_memory_budget(bytes) or ${MEMORY_BUDGET_ENV}."
        )
