"""The one dtype rule of the package.

Every result dtype -- of ``tj.jacobian`` (ops and composites), ``tj.vjp``,
``tj.jvp``, ``tj.kron_matvec``, ``tj.chain`` and ``tj.fd`` -- is decided by
:func:`result_dtype`:

* integer and bool arrays count as float64;
* float16 counts as float32;
* the rest follows numpy promotion: float32 with float64 gives float64, any
  complex operand makes the result complex (complex64 only when every
  operand is single precision);
* long double and complex long double are refused (TypeError);
* the result is always in native byte order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["SUPPORTED", "as_float_array", "float_dtype", "result_dtype"]

SUPPORTED = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.complex64), np.dtype(np.complex128))
_F64 = np.dtype(np.float64)


def float_dtype(dt: np.dtype, what: str = "argument") -> np.dtype:
    """The floating dtype one array counts as (native byte order)."""
    dt = np.dtype(dt)
    k, size = dt.kind, dt.itemsize
    if k in "biu":
        return _F64
    if k == "f" and size <= 8:
        return np.dtype(np.float32 if size <= 4 else np.float64)
    if k == "c" and size <= 16:
        return np.dtype(np.complex64 if size <= 8 else np.complex128)
    if k in "fc":
        raise TypeError(f"{what} has dtype {dt}, which is not supported (use float32, float64 or complex128)")
    raise TypeError(
        f"{what} has non-numeric dtype {dt}; expected float32, float64, complex128 or an integer type"
    )


def result_dtype(what: str, named: Iterable[tuple[str, Any]]) -> np.dtype:
    """The result dtype for the named operand dtypes (see the module docstring).

    ``what`` names the calling function and each pair names an operand, so
    that a refused dtype is reported as e.g. ``"tj.vjp: cotangent has dtype ..."``.
    """
    dts = [float_dtype(np.dtype(t), f"{what}: {name}") for name, t in named]
    if not dts:
        return _F64
    return np.result_type(*dts).newbyteorder("=")


def as_float_array(x: Any, what: str = "x") -> np.ndarray:
    """``x`` as an array of its float dtype in native byte order (no copy when already so)."""
    try:
        a = np.asarray(x)
    except Exception as e:  # ragged nested lists and such
        raise TypeError(f"{what} must be an array of numbers: {e}") from None
    dt = float_dtype(a.dtype, what)
    if a.dtype != dt:  # also fixes a non-native byte order: '>f8' != '<f8'
        a = a.astype(dt)
    return a
