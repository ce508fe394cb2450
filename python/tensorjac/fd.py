"""Finite-difference Jacobians and Hessians of any Python callable.

``tj.fd.jacobian(f, x)`` differentiates a callable ``f`` over tensors of any
rank and returns ``T[m..., n...] = d f(x)[m...] / d x[n...]`` in any layout of
LAYOUTS.md, exactly as ``tj.jacobian`` does for the closed-form ops.

Methods and their accuracy on smooth functions (float64, unit-scale x and f):

==============  ======================================  ==========  ===========
method          formula                                  evals       accuracy
==============  ======================================  ==========  ===========
``forward``     (f(x + h e_n) - f(x)) / h                N + 1       ~1e-8
``backward``    (f(x) - f(x - h e_n)) / h                N + 1       ~1e-8
``central``     (f(x + h e_n) - f(x - h e_n)) / 2h       2N + 1      ~1e-10
``richardson``  central differences at h, h/2, h/4      6N + 1      ~1e-12
                extrapolated (Richardson, order 6)
``complex``     Im f(x + i h e_n) / h                    N + 1       ~1e-15
==============  ======================================  ==========  ===========

The complex step needs real ``x`` and an ``f`` that carries complex input
through holomorphic operations (no ``abs``, ``real``, comparisons...).

Step size.  ``step=None`` uses ``h[n] = eps**p * max(|x[n]|, 1)`` rounded to
a power of two (so ``x + h`` is exact), with eps the unit roundoff of the
inputs' and outputs' dtypes (the coarser) and p = 1/2 (forward, backward),
1/3 (central), 1/7 (richardson: the largest of its three steps) or 1 (complex).
``step`` may also be a positive scalar or an array broadcastable to x.shape:
the absolute step (for Richardson the largest one).

Error estimate (``return_error=True``), per entry, in the result's layout:
a rounding term ``eps * sum_k |c_k f_k| / h`` (the weights of the formula times
the function values it combines), plus ``eps * colmax`` where colmax is the
largest ``|J[m, n]|`` over the outputs m of the same input entry n (rounding
inside f), plus a truncation term: for Richardson the difference to the
previous extrapolation level (conservative: it is the error of the order-4
result), for forward/backward ``(h / max(|x|, 1)) * colmax`` and for central
``(h / max(|x|, 1))**2 * colmax`` (heuristics that assume derivatives of unit
relative scale), none for the complex step.

Evaluation.  ``f`` is called once at ``x`` (for the output shape) and then on
every perturbed input.  With ``vectorized=True`` it receives a stack of
inputs along a new leading axis and must return the stack of outputs; the
perturbed inputs are then built by the C++ kernel in as few stacks as the
memory budget allows (at most ``chunk_size`` inputs each).  Otherwise f is
called once per input: serially, from a thread pool of ``num_threads``
workers, or through any ``concurrent.futures.Executor`` (``executor=``,
e.g. a process pool: f must then be picklable).  The C++ kernel combines the
outputs directly into the requested layout.

Faults.  ``x`` is never modified (f only sees copies).  An exception raised by
f propagates unchanged (the same object) with a note saying which input entry
was being perturbed.  Non-finite values of the Jacobian are kept and reported
in a :class:`NonFiniteWarning` naming the entries.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _config, _core
from ._layout import LAYOUTS, layout_placement

__all__ = ["METHODS", "NonFiniteWarning", "hessian", "jacobian"]

METHODS = ("forward", "backward", "central", "richardson", "complex")
RICHARDSON_LEVELS = 3
_NONVEC_BLOCK_BYTES = 64 << 20  # stack + outputs held at once when f takes one input
_NONVEC_BLOCK_ROWS = 4096


class NonFiniteWarning(RuntimeWarning):
    """f returned inf or NaN: some finite-difference entries are not finite."""


# ----------------------------------------------------------------------------- schemes


@dataclass(frozen=True)
class Scheme:
    """A finite-difference formula as a linear rule over K perturbations per entry.

    Row k of entry n evaluates f at ``x + sigma[k] * h[n] * e_n`` (times i for the
    complex step); ``J[:, n] = (sum_k c[k] f_k + c0 f(x)) / h[n]`` and the
    truncation estimate is ``|sum_k d[k] f_k + d0 f(x)| / h[n]``.
    """

    name: str
    sigma: np.ndarray
    c: np.ndarray
    c0: float
    d: np.ndarray | None
    d0: float
    step_power: float  # default h = eps**step_power * max(|x|, 1)
    trunc_order: int  # heuristic truncation (h / scale)**order * colmax|J|; 0 for none
    imag: bool = False

    def __post_init__(self) -> None:  # shared through the cache: keep the weights read-only
        for arr in (self.sigma, self.c, self.d):
            if arr is not None:
                arr.flags.writeable = False

    @property
    def K(self) -> int:
        return len(self.sigma)


def _richardson_weights(levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights of the last and the previous extrapolation level over the central
    differences D_0..D_{L-1} at steps h / 2**l (Neville's tableau on unit vectors)."""
    table = [[np.eye(levels)[i]] for i in range(levels)]
    for j in range(1, levels):
        for i in range(j, levels):
            hi, lo = table[i][j - 1], table[i - 1][j - 1]
            table[i].append(hi + (hi - lo) / (4.0**j - 1.0))
    return table[-1][-1], table[-1][-2]


@functools.cache
def _scheme(method: str, levels: int = RICHARDSON_LEVELS) -> Scheme:
    """The formula of a method (cached: treat its arrays as read-only); ``levels``
    is the number of Richardson steps h, h/2, ... (default step eps**(1/(2 levels + 1)))."""
    one = np.array([1.0])
    if method == "forward":
        return Scheme(method, one, one, -1.0, None, 0.0, 1 / 2, 1)
    if method == "backward":
        return Scheme(method, -one, -one, 1.0, None, 0.0, 1 / 2, 1)
    if method == "central":
        return Scheme(method, np.array([1.0, -1.0]), np.array([0.5, -0.5]), 0.0, None, 0.0, 1 / 3, 2)
    if method == "complex":
        return Scheme(method, one, one, 0.0, None, 0.0, 1.0, 0, imag=True)
    if method == "richardson":
        L = levels
        w, w_prev = _richardson_weights(L)
        # D_l = (f(x + h_l) - f(x - h_l)) / (2 h_l) with h_l = h / 2**l, i.e. 2**(l-1) (f+ - f-) / h
        sigma = np.array([s * 0.5**lev for lev in range(L) for s in (1.0, -1.0)])
        per = np.array([s * 2.0 ** (lev - 1) for lev in range(L) for s in (1.0, -1.0)])
        c = per * np.repeat(w, 2)
        d = c - per * np.repeat(w_prev, 2)
        return Scheme(method, sigma, c, 0.0, d, 0.0, 1 / (2 * L + 1), 0)
    raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


# ----------------------------------------------------------------------------- layouts


def layout_offsets(
    layout: str, out_shape: tuple[int, ...], in_shape: tuple[int, ...]
) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """Result shape and element offsets into a C-contiguous result of that shape:
    entry T[m, n] (m, n flat C-order indices) lives at ``moff[m] + noff[n]``."""
    shape, out_place, in_place = layout_placement(layout, out_shape, in_shape)
    cstride = [int(np.prod(shape[d + 1 :], dtype=np.int64)) for d in range(len(shape))]

    def offsets(sub: tuple[int, ...], places: Sequence[tuple[int, int] | None]) -> np.ndarray:
        off = np.zeros(sub, dtype=np.int64)
        for axis, (size, place) in enumerate(zip(sub, places)):
            assert place is not None
            dim, mult = place
            bshape = [1] * len(sub)
            bshape[axis] = size
            off = off + (np.arange(size, dtype=np.int64) * (mult * cstride[dim])).reshape(bshape)
        return np.ascontiguousarray(off).reshape(-1)

    return shape, offsets(out_shape, out_place), offsets(in_shape, in_place)


def tensor_view(
    arr: np.ndarray, layout: str, out_shape: tuple[int, ...], in_shape: tuple[int, ...],
    writeable: bool = False,
) -> np.ndarray:
    """A view of ``arr`` (a Jacobian in ``layout``) as T[m..., n...]; read-only unless asked."""
    shape, out_place, in_place = layout_placement(layout, out_shape, in_shape)
    if arr.shape != shape:
        raise ValueError(f"array of shape {arr.shape} is not a {layout!r} Jacobian of shape {shape}")
    strides = [mult * arr.strides[dim] for dim, mult in out_place]
    strides += [mult * arr.strides[dim] for dim, mult in in_place]  # type: ignore[misc]
    return np.lib.stride_tricks.as_strided(
        arr, out_shape + in_shape, tuple(strides), writeable=writeable and arr.flags.writeable
    )


def check_layout(layout: Any) -> str:
    if not isinstance(layout, str) or layout not in LAYOUTS:
        extra = " (finite differences do not produce layout='diagonal')" if layout == "diagonal" else ""
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}{extra}")
    return layout


# ----------------------------------------------------------------------------- dtypes


def input_array(x: Any, what: str = "x") -> np.ndarray:
    """x as a private C-contiguous copy: integers and bools become float64,
    float16 becomes float32; float32/64 and complex64/128 are kept."""
    try:
        a = np.asarray(x)
    except Exception as e:  # ragged lists and such
        raise TypeError(f"{what} must be an array of numbers: {e}") from None
    k, size = a.dtype.kind, a.dtype.itemsize
    dt: np.dtype
    if k in "biu":
        dt = np.dtype(np.float64)
    elif k == "f" and size <= 8:
        dt = np.dtype(np.float32 if size <= 4 else np.float64)
    elif k == "c" and size <= 16:
        dt = a.dtype
    else:
        raise TypeError(
            f"{what} has dtype {a.dtype}; expected float32, float64, complex64, complex128 or an integer type"
        )
    out = np.array(a, dtype=dt, order="C", copy=True)
    if out.size and not np.isfinite(out).all():
        bad = np.argwhere(~np.isfinite(out))[:5]
        where = ", ".join(format_index(tuple(int(i) for i in b)) for b in bad)
        raise ValueError(f"{what} (shape {out.shape}) has non-finite entries at {what}{where}")
    return out


def _result_dtype(xdt: np.dtype, ydt: np.dtype) -> np.dtype:
    single = xdt.itemsize <= (8 if xdt.kind == "c" else 4) and ydt.itemsize <= (8 if ydt.kind == "c" else 4)
    if ydt.kind in "biu":
        single = False
    complex_ = xdt.kind == "c" or ydt.kind == "c"
    if complex_:
        return np.dtype(np.complex64 if single else np.complex128)
    return np.dtype(np.float32 if single else np.float64)


def _real(dt: np.dtype) -> np.dtype:
    return np.dtype(np.float32 if dt in (np.float32, np.complex64) else np.float64)


def _complex(dt: np.dtype) -> np.dtype:
    return np.dtype(np.complex64 if dt in (np.float32, np.complex64) else np.complex128)


def format_index(idx: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, idx)) + "]" if idx else "[()]"


# ----------------------------------------------------------------------------- evaluation


def _annotate(exc: BaseException, note: str) -> None:
    """Attach context to an exception raised by f without changing its type or identity."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
        return
    # Python 3.10: keep the note where 3.11 would (PEP 678's __notes__), and chain
    # it as the cause so that the traceback shows it too.
    try:
        notes = exc.__dict__.setdefault("__notes__", [])
        if isinstance(notes, list):
            notes.append(note)
    except AttributeError:  # an exception type without a __dict__
        pass
    if exc.__cause__ is None:
        exc.__cause__ = RuntimeError(note)


def _progress_bar(enabled: bool, total: int, desc: str) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        warnings.warn(
            "progress=True needs tqdm: pip install 'tensorjac[progress]' (continuing without a progress bar)",
            stacklevel=4,
        )
        return None
    return tqdm(total=total, desc=desc, unit="eval", delay=0.5)


_SCRATCH = threading.local()
_SCRATCH_MAX = 32 << 20  # at most this much stays allocated per thread between calls


def _scratch(key: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array, reusing this thread's buffer of the same name when
    nothing else holds it (f may keep references to its inputs: then a new one).

    Fresh large allocations are page-faulted in on first touch, which on VMs
    costs as much as writing the stack itself."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    cache: dict[str, np.ndarray] = _SCRATCH.__dict__.setdefault("buffers", {})
    buf = cache.get(key)
    # references: the dict, `buf`, getrefcount's argument; any more and someone else holds it
    if buf is None or buf.nbytes < nbytes or sys.getrefcount(buf) > 3:
        buf = np.empty(max(nbytes, 1), np.uint8)
        if nbytes <= _SCRATCH_MAX:
            cache[key] = buf
        else:
            cache.pop(key, None)
    return buf[:nbytes].view(dtype).reshape(shape)


def _threads(num_threads: int | None) -> int:
    return _config.resolve_threads(num_threads)


class Problem:
    """f, a private copy of x and f(x), with the machinery to evaluate f on stacks
    of perturbed inputs (serial, threads or an executor) and count the calls.

    Used by :func:`jacobian`, :func:`hessian` and ``tj.check``; close it (or use it
    as a context manager) to release its thread pool.
    """

    def __init__(
        self,
        f: Callable[..., Any],
        x: Any,
        *,
        vectorized: bool = False,
        chunk_size: int | None = None,
        num_threads: int | None = None,
        executor: Executor | None = None,
        progress: bool = False,
        what: str = "tj.fd.jacobian",
    ) -> None:
        if not callable(f):
            raise TypeError(f"{what}: f must be callable, got {type(f).__name__}")
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1
        ):
            raise ValueError(f"{what}: chunk_size must be a positive int or None, got {chunk_size!r}")
        if executor is not None and not callable(getattr(executor, "map", None)):
            raise TypeError(
                f"{what}: executor must be a concurrent.futures.Executor (with .map), got {type(executor).__name__}"
            )
        self.what = what
        self.f = f
        self.vectorized = bool(vectorized)
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.nt = _threads(num_threads)
        self.executor = executor
        self.progress = bool(progress)
        self._pool: ThreadPoolExecutor | None = None
        self.x = input_array(x)
        self.x.flags.writeable = False
        self.in_shape: tuple[int, ...] = self.x.shape
        self.N = self.x.size
        self.n_evals = 0
        self._bar: Any = None
        self.y0 = self._eval_base()
        self.out_shape: tuple[int, ...] = self.y0.shape
        self.M = self.y0.size
        self.dtype = _result_dtype(self.x.dtype, self.y0.dtype)
        self.eps = float(max(np.finfo(self.x.dtype).eps, np.finfo(self.dtype).eps))
        if executor is None and num_threads is not None and self.nt > 1:
            self._pool = ThreadPoolExecutor(max_workers=self.nt, thread_name_prefix="tensorjac-fd")

    # -- lifetime -----------------------------------------------------------
    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Problem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calling f ----------------------------------------------------------
    def _output(self, y: Any, shape: tuple[int, ...] | None, context: Callable[[], str]) -> np.ndarray:
        try:
            a = np.asarray(y)
        except Exception as e:
            raise TypeError(f"{self.what}: f returned something that is not an array ({context()}): {e}") from None
        if a.dtype.kind not in "biufc":
            raise TypeError(f"{self.what}: f returned dtype {a.dtype} ({context()}); expected numbers")
        if shape is not None and a.shape != shape:
            raise ValueError(
                f"{self.what}: f returned shape {a.shape} ({context()}), but shape {shape} was expected"
                + (" (vectorized=True: f must map a stack of inputs to the stack of outputs)"
                   if self.vectorized else "")
            )
        return a

    def _eval_base(self) -> np.ndarray:
        xc = self.x.copy()  # f never sees our reference copy
        try:
            y = self.f(xc[None] if self.vectorized else xc)
        except Exception as e:
            _annotate(e, f"{self.what}: f raised when evaluated at the unperturbed x (shape {self.in_shape})")
            raise
        self.n_evals += 1
        if self.vectorized:
            a = self._output(y, None, lambda: "for a stack of 1 input")
            if a.ndim == 0 or a.shape[0] != 1:
                raise ValueError(
                    f"{self.what}: vectorized=True, but for a stack of 1 input of shape {(1,) + self.in_shape} "
                    f"f returned shape {a.shape}; it must return a stack (1, *out_shape)"
                )
            y0 = np.array(a[0])
        else:
            y0 = np.array(self._output(y, None, lambda: "at x"))
        if not np.isfinite(y0).all():
            bad = np.argwhere(~np.isfinite(y0.reshape(y0.shape or (1,))))
            names = ", ".join(f"f{format_index(tuple(map(int, b)) if y0.ndim else ())}" for b in bad[:5])
            warnings.warn(f"{self.what}: f(x) itself is not finite at {names}", NonFiniteWarning, stacklevel=4)
        return y0

    def evaluate(
        self, stack: np.ndarray, out: np.ndarray, describe: Callable[[int, int], str], need_complex: bool = False
    ) -> np.ndarray:
        """Y[r] = f(stack[r]) for every row (or per chunk for vectorized f); returns Y.

        Y is ``out`` or, when one call returned the whole block as a C-contiguous
        array of out's dtype, that array itself (saving a copy).
        ``describe(a, b)`` names the perturbations of rows [a, b) for error notes;
        ``need_complex`` (the complex step) refuses real outputs.
        """
        R = stack.shape[0]
        if R == 0:
            return out
        if self.vectorized:
            per = self.chunk_size or R
            bounds = [(a, min(R, a + per)) for a in range(0, R, per)]
            tasks: list[np.ndarray] = [stack[a:b].reshape((b - a,) + self.in_shape) for a, b in bounds]
        else:
            bounds = [(r, r + 1) for r in range(R)]
            # fresh copies: f may keep its argument, and the stack buffer is reused
            tasks = [row.reshape(self.in_shape).copy() for row in stack]
        results: Iterable[Any]
        if self.executor is not None:
            workers = getattr(self.executor, "_max_workers", None) or os.cpu_count() or 1
            results = self.executor.map(self.f, tasks, chunksize=max(1, len(tasks) // (4 * workers)))
        elif self._pool is not None and len(tasks) > 1:
            results = self._pool.map(self.f, tasks)
        else:
            results = map(self.f, tasks)
        it = iter(results)
        for a, b in bounds:
            try:
                y = next(it)
            except Exception as e:
                _annotate(e, describe(a, b))
                raise
            self.n_evals += b - a
            context = lambda a=a, b=b: describe(a, b).split(": ", 1)[-1]
            shape = ((b - a,) + self.out_shape) if self.vectorized else self.out_shape
            ya = self._output(y, shape, context)
            if need_complex and ya.dtype.kind != "c":
                raise TypeError(
                    f"{self.what}: method='complex' needs f to carry complex input through, but f returned "
                    f"{ya.dtype} for a complex input ({context()}); use another method"
                )
            if len(bounds) == 1 and ya.dtype == out.dtype and ya.flags.c_contiguous:
                out = ya.reshape(out.shape)
            else:
                try:
                    np.copyto(out[a:b], ya.reshape(b - a, -1), casting="same_kind")
                except TypeError:
                    raise TypeError(
                        f"{self.what}: f returned {ya.dtype} ({context()}) but {self.y0.dtype} at x; "
                        "its output dtype must not change with the input"
                    ) from None
            if self._bar is not None:
                self._bar.update(b - a)
        return out

    # -- steps --------------------------------------------------------------
    def steps(self, scheme: Scheme, step: Any, power: float | None = None) -> np.ndarray:
        """The per-entry step h (float64, flat C order)."""
        if step is None:
            scale = np.maximum(np.abs(self.x), 1.0).astype(np.float64).reshape(-1)
            p = scheme.step_power if power is None else power
            return np.exp2(np.round(np.log2(self.eps**p * scale)))
        try:
            h = np.asarray(step, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(
                f"{self.what}: step must be None, a number or an array, got {type(step).__name__}"
            ) from None
        try:
            h = np.broadcast_to(h, self.in_shape)
        except ValueError:
            raise ValueError(
                f"{self.what}: step of shape {h.shape} does not broadcast to x's shape {self.in_shape}"
            ) from None
        bad = ~(np.isfinite(h) & (h > 0))
        if bad.any():
            i = tuple(int(v) for v in np.argwhere(bad)[0])
            raise ValueError(f"{self.what}: step must be positive and finite; got {h[i]!r} for x{format_index(i)}")
        return np.ascontiguousarray(h, dtype=np.float64).reshape(-1)

    def _check_steps(self, scheme: Scheme, h: np.ndarray, xs: np.ndarray) -> None:
        if scheme.imag or not h.size:
            return
        smallest = np.min(np.abs(scheme.sigma)) * h
        moved = (xs + smallest.astype(xs.real.dtype)) != xs
        if not moved.all():
            n = int(np.argmin(moved))
            idx = np.unravel_index(n, self.in_shape) if self.in_shape else ()
            raise ValueError(
                f"{self.what}: step {smallest[n]:.3g} is too small for x{format_index(tuple(map(int, idx)))}"
                f" = {xs[n]!r} in {xs.dtype}: x + h == x. Use a larger step (or step=None)."
            )

    # -- the Jacobian -------------------------------------------------------
    def jacobian(
        self, method: str, step: Any = None, layout: str = "tensor", return_error: bool = False,
        step_power: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        scheme = _scheme(method)
        layout = check_layout(layout)
        if scheme.imag and self.x.dtype.kind == "c":
            raise ValueError(f"{self.what}: method='complex' needs real x, got {self.x.dtype}")
        jdt = _real(self.dtype) if scheme.imag else self.dtype
        ydt = _complex(self.dtype) if scheme.imag else self.dtype
        sdt = _complex(self.x.dtype) if scheme.imag else self.x.dtype
        edt = _real(jdt)
        shape, moff, noff = layout_offsets(layout, self.out_shape, self.in_shape)
        _config.check_budget(
            shape, jdt.itemsize + (edt.itemsize if return_error else 0), "finite-difference Jacobian"
        )
        h = self.steps(scheme, step, step_power)
        xs = self.x.reshape(-1)
        self._check_steps(scheme, h, xs)
        J = np.zeros(shape, jdt)
        err = np.zeros(shape, edt) if return_error else None
        N, M, K = self.N, self.M, scheme.K
        if N == 0 or M == 0:
            return J, err
        B = self._block_entries(K, sdt.itemsize, ydt.itemsize, J.nbytes + (err.nbytes if err is not None else 0))
        xs = np.ascontiguousarray(xs, dtype=sdt)
        y0 = np.ascontiguousarray(self.y0.reshape(-1), dtype=ydt)
        S = _scratch("stack", (B * K, N), sdt)
        Y = np.empty((B * K, M), ydt)
        self._bar = _progress_bar(self.progress, N * K + 1, self.what)
        if self._bar is not None:
            self._bar.update(1)
        try:
            for n0 in range(0, N, B):
                n1 = min(N, n0 + B)
                rows = (n1 - n0) * K
                s, y = S[:rows], Y[:rows]
                _core.fd_build_stack(xs, h, scheme.sigma, n0, n1, scheme.imag, s, self.nt)
                describe = functools.partial(self._describe, scheme, h, n0)
                y = self.evaluate(s, y, describe, scheme.imag)
                _core.fd_combine(
                    y, y0, h, scheme.c, scheme.c0, scheme.d, scheme.d0, self.eps, moff, noff,
                    n0, n1, scheme.imag, J, err, self.nt,
                )
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
        if err is not None:
            # Column-scale terms: rounding inside f and the truncation heuristic.
            scale = np.maximum(np.abs(self.x), 1.0).astype(np.float64)
            fac = self.eps + ((h.reshape(self.in_shape) / scale) ** scheme.trunc_order if scheme.trunc_order else 0.0)
            P = len(self.out_shape)
            colmax = np.fmax.reduce(np.abs(tensor_view(J, layout, self.out_shape, self.in_shape)),
                                    axis=tuple(range(P)), initial=0.0)
            tensor_view(err, layout, self.out_shape, self.in_shape, writeable=True)[...] += fac * colmax
        warn_nonfinite(J, layout, self.out_shape, self.in_shape, self.what)
        return J, err

    def _block_entries(self, K: int, sitem: int, yitem: int, result_bytes: int) -> int:
        """Input entries whose K perturbed inputs (and outputs) are held at once."""
        per_entry = K * (self.N * sitem + self.M * yitem)
        if per_entry > _config.get_memory_budget():
            _config.check_budget((K, self.N + self.M), max(sitem, yitem), "stack of perturbed inputs of one entry")
        if self.vectorized:
            limit = max(per_entry, (_config.get_memory_budget() - result_bytes) // 4)
            B = limit // per_entry
            if self.chunk_size is not None:
                B = min(B, max(1, self.chunk_size // K))
        else:
            B = min(_NONVEC_BLOCK_BYTES // per_entry, _NONVEC_BLOCK_ROWS // K)
        return int(max(1, min(B, self.N)))

    def _entry(self, n: int) -> str:
        idx = np.unravel_index(n, self.in_shape) if self.in_shape else ()
        return "x" + format_index(tuple(int(i) for i in idx))

    def _describe(self, scheme: Scheme, h: np.ndarray, n0: int, a: int, b: int) -> str:
        K = scheme.K
        if b - a == 1:
            n, k = n0 + a // K, a % K
            s = scheme.sigma[k] * h[n]
            delta = f"{'+' if s > 0 else '-'}= {abs(s):.6g}{'j' if scheme.imag else ''}"
            return (
                f"{self.what}: f raised while evaluating at x with {self._entry(n)} {delta} "
                f"(input entry {n} of {self.N}, perturbation {k + 1} of {K}, method={scheme.name!r})"
            )
        first, last = n0 + a // K, n0 + (b - 1) // K
        return (
            f"{self.what}: f raised on a stack of {b - a} perturbed inputs: entries "
            f"{self._entry(first)} to {self._entry(last)} perturbed (method={scheme.name!r})"
        )

    # -- directional derivatives (tj.check, mode="fast") ---------------------
    def directional(self, scheme: Scheme, U: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Derivatives of f along the rows of U (shape (d, N)) with step t: (d, M) values and errors.

        Choose t and U so that ``x + sigma * t * U`` is exact (powers of two)."""
        if scheme.imag and self.x.dtype.kind == "c":
            raise ValueError(f"{self.what}: method='complex' needs real x, got {self.x.dtype}")
        jdt = _real(self.dtype) if scheme.imag else self.dtype
        ydt = _complex(self.dtype) if scheme.imag else self.dtype
        sdt = _complex(self.x.dtype) if scheme.imag else self.x.dtype
        D, K, M = U.shape[0], scheme.K, self.M
        steps = scheme.sigma * t * (1j if scheme.imag else 1.0)
        S = (self.x.reshape(1, 1, -1) + steps.reshape(1, K, 1) * U[:, None, :]).astype(sdt)
        S = np.ascontiguousarray(S.reshape(D * K, self.N))
        Y = np.empty((D * K, M), ydt)
        out = np.zeros((D, M), jdt)
        err = np.zeros((D, M), _real(jdt))
        if M == 0 or D == 0:
            return out, err

        def describe(a: int, b: int) -> str:
            dirs = f"direction {a // K + 1}" if b - a == 1 else f"directions {a // K + 1}-{(b - 1) // K + 1}"
            return f"{self.what}: f raised while evaluating at x + t*u along random {dirs} of {D} (mode='fast')"

        Y = self.evaluate(S, Y, describe, scheme.imag)
        h = np.full(D, t)
        y0 = np.ascontiguousarray(self.y0.reshape(-1), dtype=ydt)
        moff = np.arange(M, dtype=np.int64)
        noff = np.arange(D, dtype=np.int64) * M
        _core.fd_combine(Y, y0, h, scheme.c, scheme.c0, scheme.d, scheme.d0, self.eps, moff, noff,
                         0, D, scheme.imag, out, err, self.nt)
        fac = self.eps + (t**scheme.trunc_order if scheme.trunc_order else 0.0)
        err += fac * np.fmax.reduce(np.abs(out), axis=1, initial=0.0)[:, None]
        return out, err


def warn_nonfinite(
    J: np.ndarray, layout: str, out_shape: tuple[int, ...], in_shape: tuple[int, ...], what: str
) -> None:
    """Warn, naming the entries, when a finite-difference result is not finite."""
    if np.isfinite(J).all():
        return
    T = tensor_view(J, layout, out_shape, in_shape)
    bad = np.argwhere(~np.isfinite(T))
    P = len(out_shape)
    names = [
        f"d f{format_index(tuple(map(int, b[:P])))} / d x{format_index(tuple(map(int, b[P:])))}" for b in bad[:5]
    ]
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    warnings.warn(
        f"{what}: f returned non-finite values; {len(bad)} Jacobian entr{'y is' if len(bad) == 1 else 'ies are'} "
        f"not finite: {', '.join(names)}{more}",
        NonFiniteWarning,
        stacklevel=4,  # warn_nonfinite <- Problem.jacobian <- tj.fd.jacobian <- the caller
    )


# ----------------------------------------------------------------------------- public API


def jacobian(
    f: Callable[..., Any],
    x: Any,
    *,
    method: str = "central",
    step: Any = None,
    vectorized: bool = False,
    chunk_size: int | None = None,
    num_threads: int | None = None,
    executor: Executor | None = None,
    layout: str = "tensor",
    return_error: bool = False,
    progress: bool = False,
) -> Any:
    """Finite-difference Jacobian of a callable: ``T[m..., n...] = d f(x)[m...] / d x[n...]``.

    Parameters
    ----------
    f : callable
        ``f(x)`` returns an array of any shape (or, with ``vectorized=True``,
        ``f(stack)`` maps a stack ``(k, *x.shape)`` to ``(k, *out_shape)``).
    x : array_like
        The point, any shape (0-d and empty included). Integers become float64.
    method : {"forward", "backward", "central", "richardson", "complex"}
        See the module docstring for formulas, cost and accuracy.
    step : None, float or array_like
        None picks ``eps**p * max(|x|, 1)`` per entry (see the module docstring);
        otherwise the absolute step (broadcast to x.shape), for Richardson the largest.
    vectorized, chunk_size
        Evaluate f on stacks of at most ``chunk_size`` perturbed inputs.
    num_threads : int, optional
        Threads of the C++ kernels and, for f, of a thread pool (useful when f
        releases the GIL). Results do not depend on it.
    executor : concurrent.futures.Executor, optional
        Evaluate f through ``executor.map`` (e.g. a process pool).
    layout : str
        "tensor" (default), "gradient", "numerator", "matrix" or "vec".
    return_error : bool
        Also return a per-entry error estimate (same shape and layout, real dtype).
    progress : bool
        Show a tqdm progress bar (optional extra ``tensorjac[progress]``).

    Returns
    -------
    J, or (J, err) with ``return_error=True``.
    """
    if method not in METHODS:
        raise ValueError(f"tj.fd.jacobian: unknown method {method!r}; expected one of {', '.join(METHODS)}")
    check_layout(layout)
    with Problem(
        f, x, vectorized=vectorized, chunk_size=chunk_size, num_threads=num_threads,
        executor=executor, progress=progress,
    ) as prob:
        J, err = prob.jacobian(method, step, layout, return_error)
    return (J, err) if return_error else J


class _InnerGradient:
    """x -> finite-difference gradient of a scalar f at x with fixed steps (picklable when f is)."""

    def __init__(self, f: Callable[..., Any], method: str, h: np.ndarray, vectorized: bool,
                 chunk_size: int | None) -> None:
        self.f, self.method, self.h = f, method, h
        self.vectorized, self.chunk_size = vectorized, chunk_size

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with Problem(self.f, x, vectorized=self.vectorized, chunk_size=self.chunk_size,
                     what="tj.fd.hessian (inner gradient)") as p:
            if p.out_shape != ():
                raise ValueError(f"tj.fd.hessian: f must return a scalar, got shape {p.out_shape}")
            g, _ = p.jacobian(self.method, self.h.reshape(x.shape))
        return g


# Hessian steps: eps**p per level of differencing, balancing truncation
# against rounding amplified by two divisions by h.
_HESSIAN_POWER = {"forward": 1 / 3, "backward": 1 / 3, "central": 1 / 4, "richardson": 1 / 8, "complex": 1 / 3}


def hessian(
    f: Callable[..., Any],
    x: Any,
    *,
    method: str = "central",
    step: Any = None,
    vectorized: bool = False,
    chunk_size: int | None = None,
    num_threads: int | None = None,
    executor: Executor | None = None,
    layout: str = "tensor",
    return_error: bool = False,
    progress: bool = False,
) -> Any:
    """Finite-difference Hessian of a scalar-valued f: shape ``x.shape + x.shape`` (layout "tensor").

    The Jacobian (by ``method``) of the finite-difference gradient (by ``method``;
    with method="complex" the gradient is a complex step and the outer
    differences are central).  Both levels use fixed steps chosen at x:
    ``eps**p * max(|x|, 1)`` with p = 1/3 (forward, backward, complex),
    1/4 (central) or 1/8 (richardson).  The result is symmetrised.
    ``return_error`` estimates the error as the outer differences' estimate,
    plus the inner gradient's rounding error ``eps |f(x)| sum|c| / h``
    amplified by the outer formula (``sum|c| / h`` again), plus the asymmetry
    ``|H - H^T| / 2``.
    ``vectorized`` applies to the inner gradients; ``num_threads`` and
    ``executor`` parallelise over the outer perturbations.
    """
    if method not in METHODS:
        raise ValueError(f"tj.fd.hessian: unknown method {method!r}; expected one of {', '.join(METHODS)}")
    check_layout(layout)
    with Problem(f, x, vectorized=vectorized, chunk_size=chunk_size, what="tj.fd.hessian") as p:
        if p.out_shape != ():
            raise ValueError(f"tj.fd.hessian: f must return a scalar (shape ()), got shape {p.out_shape}")
        power = _HESSIAN_POWER[method]
        h = p.steps(_scheme(method), step, power)
        xr = p.x
        inner = _scheme(method)
        # rounding error of the inner gradient (eps |f| sum|c| / h), amplified by the outer differences
        f_mag = float(np.abs(p.y0))
        inner_round = p.eps * f_mag * (np.abs(inner.c).sum() + abs(inner.c0)) / h
        if inner.imag:  # the complex step does not cancel: its rounding is relative to g itself
            inner_round = np.zeros_like(h)
    outer = "central" if method == "complex" else method
    g = _InnerGradient(f, method, h, vectorized, chunk_size)
    with Problem(g, xr, num_threads=num_threads, executor=executor, progress=progress, what="tj.fd.hessian") as q:
        H, err = q.jacobian(outer, h.reshape(xr.shape), "tensor", return_error)
    R = xr.ndim
    perm = tuple(range(R, 2 * R)) + tuple(range(R))
    Ht = H.transpose(perm)
    asym = np.abs(H - Ht) / 2
    H = (H + Ht) / 2
    if err is not None:
        gain = np.abs(_scheme(outer).c).sum() + abs(_scheme(outer).c0)
        err = err + gain * inner_round.reshape(xr.shape + (1,) * R) / h.reshape(xr.shape)
        err = (err + err.transpose(perm)) / 2 + asym
    if layout != "tensor":
        H = from_tensor(H, layout, xr.shape, xr.shape)
        err = None if err is None else from_tensor(err, layout, xr.shape, xr.shape)
    return (H, err) if return_error else H


def from_tensor(T: np.ndarray, layout: str, out_shape: tuple[int, ...], in_shape: tuple[int, ...]) -> np.ndarray:
    """Copy a tensor-layout Jacobian into a new C-contiguous array in ``layout``."""
    shape, _, _ = layout_placement(layout, out_shape, in_shape)
    out = np.empty(shape, T.dtype)
    tensor_view(out, layout, out_shape, in_shape, writeable=True)[...] = T
    return out
