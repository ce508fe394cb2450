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

Arrays of other libraries are read by :func:`as_array`, the one input conversion
of the package: anything with ``__array__`` (PyTorch CPU tensors, JAX arrays,
...) through ``np.asarray``, objects with only ``__dlpack__`` through
``np.from_dlpack``, both without a copy where the library allows it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["SUPPORTED", "as_array", "as_constant", "as_float_array", "float_dtype", "result_dtype"]

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
    if k == "V" and dt.names is None and dt.itemsize <= 2:  # ml_dtypes' bfloat16, float8_*: numbers numpy cannot promote
        raise TypeError(f"{what} has dtype {dt}, which is not supported: convert it to float32 or float64 first "
                        "(e.g. x.astype(np.float32))")
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


# DLPack device types (dlpack.h) that are host memory numpy can read, and the names of the others
_HOST_DEVICES = (1, 3, 11)  # kDLCPU, kDLCUDAHost, kDLROCMHost
_DEVICE_NAMES = {2: "cuda", 4: "opencl", 7: "vulkan", 8: "metal", 9: "vpi", 10: "rocm", 12: "ext_dev",
                 13: "cuda_managed", 14: "oneapi", 15: "webgpu", 16: "hexagon", 17: "maia"}
_PLAIN = (float, int, complex, bool, list, tuple, np.generic)
_NUMPY_PROTOCOLS = ("__array__", "__array_interface__", "__array_struct__")


def _describe(x: Any) -> str:
    """``"torch.Tensor of dtype torch.float32"``: what the object is, for the messages."""
    t = type(x)
    mod = getattr(t, "__module__", None)
    name = t.__qualname__ if mod in (None, "builtins", "__main__") else f"{mod}.{t.__qualname__}"
    dtype = getattr(x, "dtype", None)
    return name + (f" of dtype {dtype}" if dtype is not None else "")


def as_array(x: Any, what: str = "x") -> np.ndarray:
    """``x`` as a numpy array, without a copy wherever the source allows it; the input conversion of the package.

    * a numpy array is returned as it is;
    * an object with ``__array__`` (PyTorch CPU tensors, JAX arrays, ...) or numpy's array
      interface goes through ``np.asarray``: a view of its memory when the library offers one
      (JAX's is read-only; nothing in the package writes into an input);
    * an object with only ``__dlpack__`` goes through ``np.from_dlpack`` (a view);
    * anything else (numbers, nested lists) goes through ``np.asarray``.

    ``what`` names the argument in the errors: TypeError for a tensor on a device other than the
    CPU, for a tensor that requires grad (PyTorch: pass ``x.detach()``), and for a dtype numpy
    cannot compute with (bfloat16, float8: convert first).  The caller's object is never modified.
    """
    if type(x) is np.ndarray:
        return x
    if isinstance(x, _PLAIN) or isinstance(x, np.ndarray):
        return np.asarray(x)  # numbers, lists, numpy scalars; ndarray subclasses become plain arrays
    return _foreign(x, what)


def _foreign(x: Any, what: str) -> np.ndarray:
    t = type(x)
    numpy_protocol = any(hasattr(t, p) for p in _NUMPY_PROTOCOLS)
    if not numpy_protocol and not hasattr(x, "__dlpack__"):
        return np.asarray(x)  # not an array of any library (a buffer, a generator, ...): numpy decides
    device = getattr(x, "__dlpack_device__", None)
    if device is not None:
        try:
            kind, index = device()
            kind = int(kind)
        except Exception:  # no usable DLPack device: the conversion below decides
            kind, index = 1, 0
        if kind not in _HOST_DEVICES:
            raise TypeError(
                f"{what} ({_describe(x)}) is on device {_DEVICE_NAMES.get(kind, f'type {kind}')}:{index}; tensorjac "
                "computes on the CPU with numpy: move it to the CPU first (PyTorch: x.cpu(); JAX: "
                "jax.device_put(x, jax.devices('cpu')[0]); CuPy: x.get())"
            )
    if getattr(x, "requires_grad", False) is True:
        raise TypeError(
            f"{what} ({_describe(x)}) requires grad; tensorjac reads plain values and does not take "
            "part in autograd: pass x.detach()"
        )
    try:
        a = np.asarray(x) if numpy_protocol else np.from_dlpack(x)
    except Exception as e:  # the library's refusal: an unsupported dtype, a sparse or lazy tensor, ...
        raise TypeError(
            f"{what} ({_describe(x)}) cannot be read as a numpy array ({type(e).__name__}: {e}). tensorjac takes "
            "float32, float64, complex, integer and bool arrays in CPU memory: convert it first (PyTorch: "
            "x.to(torch.float32); JAX and numpy: x.astype(np.float32))"
        ) from None
    if a.dtype.kind == "V":  # bfloat16, float8_* (ml_dtypes): numbers numpy cannot compute with
        float_dtype(a.dtype, what)
    return a


def as_constant(x: Any, what: str = "x") -> Any:
    """A constant argument of a traced function: a tensor of another library (anything with ``__dlpack__``)
    becomes a numpy array (:func:`as_array`), so that ``f``, numpy code, sees numpy arrays; every other
    object is passed on unchanged."""
    if isinstance(x, (np.ndarray, np.generic)) or not hasattr(x, "__dlpack__"):
        return x
    return as_array(x, what)


def as_float_array(x: Any, what: str = "x") -> np.ndarray:
    """``x`` as an array of its float dtype in native byte order (no copy when already so)."""
    try:
        a = as_array(x, what)
    except TypeError:
        raise
    except Exception as e:  # ragged nested lists and such
        raise TypeError(f"{what} must be an array of numbers: {e}") from None
    dt = float_dtype(a.dtype, what)
    if a.dtype != dt:  # also fixes a non-native byte order: '>f8' != '<f8'
        a = a.astype(dt)
    return a
