"""Finite-difference Jacobians and Hessians of any Python callable.

``tj.fd.jacobian(f, x)`` differentiates a callable ``f`` over tensors of any
rank and returns ``T[m..., n...] = d f(x)[m...] / d x[n...]`` in any layout
(see the layouts page of the docs, ``docs/layouts.md``), exactly as
``tj.jacobian`` does.  Like
``tj.jacobian``, it takes several positional arguments: ``tj.fd.jacobian(f, A,
x, wrt=1)`` differentiates in ``x`` with ``A`` held constant.

Methods and their accuracy on smooth functions (float64):

==============  ==========================================  ==========  ===========
method          formula                                      evals       accuracy
==============  ==========================================  ==========  ===========
``forward``     (f(x + h e_n) - f(x)) / h                    N + 1       ~1e-8
``backward``    (f(x) - f(x - h e_n)) / h                    N + 1       ~1e-8
``central``     (f(x + h e_n) - f(x - h e_n)) / 2h           2N + 1      ~1e-10
``richardson``  central differences at h, h/2, ..., h/32,    12N + 1     ~1e-14
                adaptive Richardson extrapolation
``complex``     Im f(x + i h e_n) / h                        N + 1       ~1e-16
==============  ==========================================  ==========  ===========

``return_error=True`` measures the truncation error instead of guessing it:
forward and backward differences then also evaluate f at ``x ± 2h e_n``
(2N + 1 evaluations), central differences at ``x ± 2h e_n`` (4N + 1).

Richardson.  The six central differences D_0..D_5 at steps ``h 2**-l`` fill a
Neville tableau whose column j has the h^2, ..., h^2j error terms removed.
Every extrapolated value T[i][j] (j >= 1) is a candidate, with the error
estimate ``|T[i][j] - T[i][j-1]| + |T[i][j] - T[i-1][j-1]|`` plus its
rounding error (``eps`` times the function values carried through the tableau
with absolute weights).  Each entry of the Jacobian takes the candidate with
the smallest estimate, which is also the reported error.  Large steps thus win
for smooth functions (little rounding), small steps where f varies quickly or
where the large stencil leaves f's domain (non-finite values drop out).

The complex step is valid only for a real-analytic f with real output at real
x, carried through complex arithmetic (no ``abs``, ``real``, comparisons...):
a complex-valued f is refused with a ValueError.

Step size.  ``step=None`` uses ``h[n] = eps**p * s[n]`` rounded to a power of
two (so that ``x + h`` is exact), with eps the unit roundoff of the inputs', the
outputs' and the result's dtypes (the coarsest) and p = 1/2 (forward, backward), 1/3 (central),
1/13 (richardson: its largest step, ~0.06 s) or 1 (complex).  The scale is
relative to x, with a floor where x is zero::

    s[n] = max(|x[n]|, 2**20 tiny / eps**p)         if x[n] != 0
    s[n] = min(typical |x|, 1)                        if x[n] == 0

where "typical ``|x|``" is the median of the non-zero ``|x|`` entries (1 if there is
none): an entry at zero takes the scale of its neighbours, never more than 1,
and the tiny term keeps h (and 1/h) far from underflow (overflow) for
subnormal x.  Relative steps
suit functions that vary on the scale of x (powers, logarithms, 1/r
potentials in SI units); for a function that varies on a fixed scale far
above a tiny ``|x|`` (exp(x) at x = 1e-10) they cost accuracy, which the error
estimate reports: pass ``step=`` there.

Domain ends.  A default step never takes x across a boundary of f's domain
on purpose: when f returns a non-finite value on the stencil of entry n
although f(x) is finite (for Richardson: when no candidate is finite), that
entry is evaluated again with smaller steps: the purely relative step
``eps**p * |x[n]|`` (whose stencil stays on x[n]'s side of zero), then that
step divided by 8, 64, ... (down to 2**-36 of the default step) until f is
finite on the whole stencil; failing that, with the one-sided formula that
points away from the non-finite side (forward or backward differences,
extrapolated over four steps for Richardson).  Values that stay non-finite are kept and
reported in a :class:`NonFiniteWarning`.  An explicit ``step`` is used as given.

``step`` may also be a positive scalar or an array broadcastable to x.shape:
the absolute step (for Richardson the largest one).

Error estimate (``return_error=True``), per entry, in the result's layout:
the truncation estimate above (none for the complex step), plus the rounding
error ``eps * sum_k |c_k f_k| / h`` (the weights of the formula times the
function values it combines), plus ``tiny * sum_k |c_k| / h`` (the resolution
of f's values: subnormal results), plus ``eps * max_m |J[m, n]|`` (rounding
inside f, relative to the column's scale).

Evaluation.  ``f`` is called once at ``x`` (for the output shape) and then on
every perturbed input.  With ``vectorized=True`` it receives a stack of
inputs along a new leading axis and must return the stack of outputs (with
several arguments, only the argument ``wrt`` is stacked); the stacks are built
by the C++ kernel (at most ``chunk_size`` inputs each).  Otherwise f is called
once per input: serially, from a thread pool of ``num_threads`` workers, or
through any ``concurrent.futures.Executor`` (``executor=``, e.g. a process
pool: f must then be picklable).  The C++ kernel combines the outputs
directly into the requested layout.

Memory.  Besides the result (and ``err``), the scratch held at once -- the
perturbed inputs handed to f and the outputs awaiting combination -- is at
most the size of the result (or 8 MiB, if that is more), plus what f itself
allocates.  The whole is checked against the memory budget before anything
is allocated.  Every input handed to f is a fresh array that is never written
again, so f may keep it, return it or store views of it.

Faults.  ``x`` is never modified (f only sees copies).  An exception raised by
f propagates unchanged (the same object) with a note saying which input entry
was being perturbed.  f must keep its output's shape and dtype for every
input.  Non-finite values of the Jacobian are kept and reported in a
:class:`NonFiniteWarning` naming the entries.
"""

from __future__ import annotations

import functools
import inspect
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _config, _core, _dtypes
from ._layout import LAYOUTS, batch_position, layout_placement

__all__ = ["METHODS", "NonFiniteWarning", "hessian", "jacobian"]

METHODS = ("forward", "backward", "central", "richardson", "complex")
RICHARDSON_LEVELS = 6
RICHARDSON_RATIO = 2.0
_SCRATCH_FLOOR = 8 << 20  # scratch always allowed, however small the result
_NONVEC_BLOCK_ROWS = 4096
_GIB = 1 << 30


NonFiniteWarning = _config.NonFiniteWarning  # one warning class for every derivative function


# ----------------------------------------------------------------------------- schemes


@dataclass(frozen=True)
class Scheme:
    """A finite-difference formula over K perturbations per entry.

    Row k of entry n evaluates f at ``x + sigma[k] * h[n] * e_n`` (times i for the
    complex step).  A linear scheme gives ``J[:, n] = (sum_k c[k] f_k + c0 f(x)) / h[n]``
    with the truncation estimate ``|sum_k d[k] f_k + d0 f(x)| / h[n]``; the adaptive
    Richardson scheme (``levels`` > 0) picks the best extrapolation in C++.
    """

    name: str
    sigma: np.ndarray
    c: np.ndarray
    c0: float
    d: np.ndarray | None
    d0: float
    step_power: float  # default h = eps**step_power * s
    imag: bool = False
    levels: int = 0  # > 0: adaptive Richardson over this many central differences

    def __post_init__(self) -> None:  # shared through the cache: keep the weights read-only
        for arr in (self.sigma, self.c, self.d):
            if arr is not None:
                arr.flags.writeable = False

    @property
    def K(self) -> int:
        return len(self.sigma)


def _neville(levels: int, factor: Callable[[int], float]) -> tuple[np.ndarray, np.ndarray]:
    """Weights of the last and the previous extrapolation level over D_0..D_{L-1}
    (Neville's tableau on unit vectors; column j divides by ``factor(j)``)."""
    table = [[np.eye(levels)[i]] for i in range(levels)]
    for j in range(1, levels):
        for i in range(j, levels):
            hi, lo = table[i][j - 1], table[i - 1][j - 1]
            table[i].append(hi + (hi - lo) / factor(j))
    return table[-1][-1], table[-1][-2]


def _one_sided_richardson(sign: float, levels: int = 4) -> Scheme:
    """D_l = (f(x + sign h 2**-l) - f(x)) / (sign h 2**-l), extrapolated over all powers of h."""
    w, w_prev = _neville(levels, lambda j: 2.0**j - 1.0)
    sigma = np.array([sign * 0.5**lev for lev in range(levels)])
    per = np.array([sign * 2.0**lev for lev in range(levels)])  # D_l = per_l (f_l - f0) / h
    c = per * w
    d = c - per * w_prev
    name = "forward" if sign > 0 else "backward"
    return Scheme(f"{name} richardson", sigma, c, -float(c.sum()), d, -float(d.sum()), 1 / 7)


@functools.cache
def _scheme(method: str, with_error: bool = False) -> Scheme:
    """The formula of a method (cached: its arrays are read-only).  ``with_error``
    adds the stencil points of an empirical truncation estimate (forward,
    backward, central)."""
    one = np.array([1.0])
    if method == "forward":
        if with_error:  # D(2h) - D(h) = h f''/2 + O(h^2): the error of D(h)
            return Scheme(method, np.array([1.0, 2.0]), np.array([1.0, 0.0]), -1.0, np.array([-1.0, 0.5]), 0.5, 1 / 2)
        return Scheme(method, one, one, -1.0, None, 0.0, 1 / 2)
    if method == "backward":
        if with_error:
            return Scheme(method, np.array([-1.0, -2.0]), np.array([-1.0, 0.0]), 1.0, np.array([1.0, -0.5]), -0.5,
                          1 / 2)
        return Scheme(method, -one, -one, 1.0, None, 0.0, 1 / 2)
    if method == "central":
        if with_error:  # (D(2h) - D(h)) / 3 = h^2 f'''/6 + O(h^4): the error of D(h)
            d = np.array([-0.5, 0.5, 0.25, -0.25]) / 3.0
            return Scheme(method, np.array([1.0, -1.0, 2.0, -2.0]), np.array([0.5, -0.5, 0.0, 0.0]), 0.0, d, 0.0, 1 / 3)
        return Scheme(method, np.array([1.0, -1.0]), np.array([0.5, -0.5]), 0.0, None, 0.0, 1 / 3)
    if method == "complex":
        return Scheme(method, one, one, 0.0, None, 0.0, 1.0, imag=True)
    if method == "richardson":
        L = RICHARDSON_LEVELS
        sigma = np.array([s * RICHARDSON_RATIO**-lev for lev in range(L) for s in (1.0, -1.0)])
        return Scheme(method, sigma, np.zeros(2 * L), 0.0, None, 0.0, 1 / (2 * L + 1), levels=L)
    if method == "richardson3":  # the fixed three-level central extrapolation (tj.fd.hessian)
        L = 3
        w, w_prev = _neville(L, lambda j: 4.0**j - 1.0)
        sigma = np.array([s * 0.5**lev for lev in range(L) for s in (1.0, -1.0)])
        per = np.array([s * 2.0 ** (lev - 1) for lev in range(L) for s in (1.0, -1.0)])
        c = per * np.repeat(w, 2)
        d = c - per * np.repeat(w_prev, 2)
        return Scheme(method, sigma, c, 0.0, d, 0.0, 1 / 7)
    if method == "forward richardson":
        return _one_sided_richardson(1.0)
    if method == "backward richardson":
        return _one_sided_richardson(-1.0)
    raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


def _one_sided(scheme: Scheme, sign: float, with_error: bool) -> Scheme:
    """The one-sided counterpart of a scheme, pointing to ``sign``."""
    side = "forward" if sign > 0 else "backward"
    if scheme.levels or scheme.name.startswith("richardson"):
        return _scheme(f"{side} richardson")
    return _scheme(side, with_error)


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
    """x as a private C-contiguous copy in its float dtype (tensorjac._dtypes: integers
    and bools become float64, float16 float32; native byte order)."""
    a = _dtypes.as_float_array(x, what)  # tensors of other libraries too; ragged lists: TypeError
    out = np.array(a, order="C", copy=True)
    if out.size and not np.isfinite(out).all():
        bad = np.argwhere(~np.isfinite(out))[:5]
        where = ", ".join(format_index(tuple(int(i) for i in b)) for b in bad)
        raise ValueError(f"{what} (shape {out.shape}) has non-finite entries at {what}{where}")
    return out


def _real(dt: np.dtype) -> np.dtype:
    return np.dtype(np.float32 if dt in (np.float32, np.complex64) else np.float64)


def _complex(dt: np.dtype) -> np.dtype:
    return np.dtype(np.complex64 if dt in (np.float32, np.complex64) else np.complex128)


def format_index(idx: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, idx)) + "]" if idx else "[()]"


# ----------------------------------------------------------------------------- helpers


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


def too_large(what: str, nbytes: int, parts: str) -> _config.JacobianTooLargeError:
    budget = _config.get_memory_budget()
    return _config.JacobianTooLargeError(
        f"{what} would need {nbytes / _GIB:,.2f} GiB ({parts}), over the memory budget of "
        f"{budget / _GIB:,.2f} GiB. Use tj.vjp(f, ...)/tj.jvp(f, ...) for exact products of numpy "
        "functions, or fd with vectorized=False/chunk_size=... for smaller stacks, or raise the budget "
        f"with tj.set_memory_budget(bytes) or ${_config.MEMORY_BUDGET_ENV}."
    )


# ----------------------------------------------------------------------------- the problem


class Problem:
    """f, a private copy of x and f(x), with the machinery to evaluate f on blocks
    of perturbed inputs (serial, threads, an executor or vectorized) and count the calls.

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
        argname: str = "x",
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
        self.argname = argname
        self.f = f
        self.vectorized = bool(vectorized)
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.nt = _config.resolve_threads(num_threads)
        self.executor = executor
        self.progress = bool(progress)
        self._pool: ThreadPoolExecutor | None = None
        self.x = input_array(x, argname)
        self.x.flags.writeable = False
        self.in_shape: tuple[int, ...] = self.x.shape
        self.N = self.x.size
        self.n_evals = 0
        self._bar: Any = None
        self.y0 = self._eval_base()
        self.out_shape: tuple[int, ...] = self.y0.shape
        self.M = self.y0.size
        self.dtype = _dtypes.result_dtype(what, [(argname, self.x.dtype), ("f(x)", self.y0.dtype)])
        self.eps = float(max(np.finfo(self.x.dtype).eps, np.finfo(self.dtype).eps, np.finfo(self.y_dtype).eps))
        self.tiny = float(np.finfo(_real(self.dtype)).smallest_subnormal)
        self.stats: np.ndarray | None = None  # per entry: max|J|, max|f| on the stencil, max secant slope
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
            a = _dtypes.as_array(y, "f's output")
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
            _annotate(e, f"{self.what}: f raised when evaluated at the unperturbed {self.argname} "
                         f"(shape {self.in_shape})")
            raise
        self.n_evals += 1
        if self.vectorized:
            a = self._output(y, None, lambda: "for a stack of 1 input")
            if a.ndim == 0 or a.shape[0] != 1:
                raise ValueError(
                    f"{self.what}: vectorized=True, but for a stack of 1 input of shape {(1,) + self.in_shape} "
                    f"f returned shape {a.shape}; it must return a stack (1, *out_shape)"
                )
            a = a[0]
        else:
            a = self._output(y, None, lambda: f"at {self.argname}")
        self.y_dtype = _dtypes.float_dtype(a.dtype, f"{self.what}: f(x)")
        y0 = np.array(a, dtype=self.y_dtype if a.dtype.kind in "fc" else a.dtype, order="C")  # native byte order
        if not np.isfinite(y0).all():
            bad = np.argwhere(~np.isfinite(y0.reshape(y0.shape or (1,))))
            names = ", ".join(f"f{format_index(tuple(map(int, b)) if y0.ndim else ())}" for b in bad[:5])
            warnings.warn(f"{self.what}: f(x) itself is not finite at {names}", NonFiniteWarning, stacklevel=4)
        return y0

    def _accept(self, ya: np.ndarray, need_complex: bool, context: Callable[[], str]) -> None:
        """f must keep its output dtype (up to the complex step's complex outputs)."""
        got = _dtypes.float_dtype(ya.dtype, f"{self.what}: f's output")
        want = _complex(self.y_dtype) if need_complex else self.y_dtype
        if need_complex and got.kind != "c":
            raise TypeError(
                f"{self.what}: method='complex' needs f to carry complex input through, but f returned "
                f"{ya.dtype} for a complex input ({context()}); use another method"
            )
        if got != want:
            raise TypeError(
                f"{self.what}: f returned {ya.dtype} ({context()}) but {self.y0.dtype} at "
                f"{self.argname}; its output dtype must not change with the input"
            )

    def evaluate(
        self, rows: int, make_input: Callable[[int, int], np.ndarray], out_dtype: np.dtype,
        describe: Callable[[int, int], str], need_complex: bool = False, ybuf: np.ndarray | None = None,
    ) -> np.ndarray:
        """Y[r] = f(input r) for r in [0, rows); returns Y (rows, M).

        ``make_input(a, b)`` returns fresh inputs for rows [a, b): a stack (b - a, *in_shape)
        when f is vectorized, else one input (b = a + 1).  They are never written
        again, so f may keep them.  Y is ``ybuf[:rows]`` (allocated if None) or, when
        one vectorized call returned the whole block as a C-contiguous array of
        ``out_dtype``, that array itself.  ``describe(a, b)`` names rows [a, b) for
        error notes.
        """
        if rows == 0:
            return np.empty((0, self.M), out_dtype)
        if self.vectorized:
            per = self.chunk_size or rows
            bounds = [(a, min(rows, a + per)) for a in range(0, rows, per)]
        else:
            bounds = [(r, r + 1) for r in range(rows)]
        tasks: Iterable[np.ndarray] = (make_input(a, b) for a, b in bounds)
        results: Iterable[Any]
        if self.executor is not None:
            tasks = list(tasks)
            workers = getattr(self.executor, "_max_workers", None) or os.cpu_count() or 1
            results = self.executor.map(self.f, tasks, chunksize=max(1, len(tasks) // (4 * workers)))
        elif self._pool is not None and len(bounds) > 1:
            results = self._pool.map(self.f, list(tasks))
        else:
            results = map(self.f, tasks)
        it = iter(results)
        Y: np.ndarray | None = None
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
            self._accept(ya, need_complex, context)
            if len(bounds) == 1 and ya.dtype == out_dtype and ya.flags.c_contiguous:
                Y = ya.reshape(rows, self.M)  # f's own output: no copy
            else:
                if Y is None:
                    Y = ybuf[:rows] if ybuf is not None else np.empty((rows, self.M), out_dtype)
                Y[a:b] = ya.reshape(b - a, self.M)
            del y, ya
            if self._bar is not None:
                self._bar.update(b - a)
        assert Y is not None
        return Y

    # -- steps --------------------------------------------------------------
    def _floor(self) -> float:
        a = np.abs(self.x).reshape(-1)
        nz = a[a > 0]
        return min(float(np.median(nz)), 1.0) if nz.size else 1.0

    def default_steps(self, power: float) -> np.ndarray:
        """``eps**power * s`` as powers of two (flat, float64), s = |x| (x != 0) or
        min(typical |x|, 1) (x == 0), at least 2**20 tiny / eps**power."""
        a = np.abs(self.x).astype(np.float64).reshape(-1)
        lo = float(np.finfo(_real(self.x.dtype)).tiny) * 2.0**20 / self.eps**power  # 1 / h stays far from overflow
        s = np.maximum(np.where(a > 0, a, self._floor()), lo)
        return np.exp2(np.round(np.log2(self.eps**power * s)))

    def steps(self, scheme: Scheme, step: Any, power: float | None = None) -> np.ndarray:
        """The per-entry step h (float64, flat C order)."""
        if step is None:
            return self.default_steps(scheme.step_power if power is None else power)
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
                f"{self.what}: step of shape {h.shape} does not broadcast to {self.argname}'s shape {self.in_shape}"
            ) from None
        bad = ~(np.isfinite(h) & (h > 0))
        if bad.any():
            i = tuple(int(v) for v in np.argwhere(bad)[0])
            raise ValueError(
                f"{self.what}: step must be positive and finite; got {h[i]!r} for {self.argname}{format_index(i)}"
            )
        return np.ascontiguousarray(h, dtype=np.float64).reshape(-1)

    def _check_steps(self, scheme: Scheme, h: np.ndarray) -> None:
        if scheme.imag or not h.size:
            return
        xs = self.x.reshape(-1)
        smallest = np.min(np.abs(scheme.sigma)) * h
        moved = (xs + smallest.astype(xs.real.dtype)) != xs
        if not moved.all():
            n = int(np.argmin(moved))
            raise ValueError(
                f"{self.what}: step {smallest[n]:.3g} is too small for {self._entry(n)}"
                f" = {xs[n]!r} in {xs.dtype}: x + h == x. Use a larger step (or step=None)."
            )

    # -- blocks -------------------------------------------------------------
    def _types(self, scheme: Scheme) -> tuple[np.dtype, np.dtype, np.dtype]:
        """(Jacobian, outputs, stack) dtypes of a scheme."""
        if scheme.imag:
            if self.x.dtype.kind == "c":
                raise ValueError(f"{self.what}: method='complex' needs real {self.argname}, got {self.x.dtype}")
            if self.y_dtype.kind == "c":
                raise ValueError(
                    f"{self.what}: method='complex' needs a real-valued f, but f({self.argname}) is "
                    f"{self.y0.dtype}. The complex step is valid only for real-analytic f with real output; "
                    "use method='central' or 'richardson' (or differentiate real and imaginary parts separately)."
                )
            return _real(self.dtype), _complex(self.dtype), _complex(self.x.dtype)
        return self.dtype, self.dtype, self.x.dtype

    def plan(self, scheme: Scheme, result_bytes: int, what: str) -> int:
        """Entries per block: the scratch (perturbed inputs and outputs held at once)
        stays within max(result, 8 MiB); refuses, before allocating, when the result
        and the least scratch exceed the memory budget."""
        _, ydt, sdt = self._types(scheme)
        K = scheme.K
        stacked = self.vectorized or self.executor is not None or self._pool is not None
        per_entry = K * self.M * ydt.itemsize + (K * self.N * sdt.itemsize if stacked else 0)
        fixed = result_bytes + 8 * (self.M + self.N) + (0 if stacked else self.N * sdt.itemsize)
        need = fixed + per_entry
        if need > _config.get_memory_budget():
            raise too_large(
                f"{self.what}: the {what} of f: {self.argname} {self.in_shape} -> f(x) {self.out_shape}", need,
                f"{result_bytes / _GIB:,.2f} GiB of result and {per_entry / _GIB:,.2f} GiB of scratch for "
                f"the {K} perturbations of one entry",
            )
        # 7/8 of the result: headroom for the bookkeeping (statistics, offsets, f's inputs in flight)
        allowance = min(max(result_bytes * 7 // 8, _SCRATCH_FLOOR), _config.get_memory_budget() - fixed)
        B = max(1, allowance // max(per_entry, 1))
        if not self.vectorized:
            B = min(B, max(1, _NONVEC_BLOCK_ROWS // K))
        return int(max(1, min(B, self.N)))

    def _inputs(self, scheme: Scheme, h: np.ndarray, n0: int, n1: int, sdt: np.dtype,
                entries: np.ndarray | None = None) -> Callable[[int, int], np.ndarray]:
        """make_input for the rows of entries [n0, n1) (or the given entry list)."""
        K = scheme.K
        xs = np.ascontiguousarray(self.x.reshape(-1), dtype=sdt)
        unit = 1j if scheme.imag else 1.0

        def entry_of(r: int) -> int:
            return int(entries[r // K]) if entries is not None else n0 + r // K

        if self.vectorized and entries is None:
            stack = np.empty(((n1 - n0) * K, self.N), sdt)  # fresh per block: f may keep views of it
            _core.fd_build_stack(xs, h, scheme.sigma, n0, n1, scheme.imag, stack, self.nt)

            def make(a: int, b: int) -> np.ndarray:
                return stack[a:b].reshape((b - a,) + self.in_shape)
        else:
            def make(a: int, b: int) -> np.ndarray:
                out = np.empty((b - a, self.N), sdt)
                out[...] = xs
                for r in range(a, b):
                    n = entry_of(r)
                    out[r - a, n] += scheme.sigma[r % K] * h[n] * unit
                return out.reshape((b - a,) + self.in_shape) if self.vectorized else out.reshape(self.in_shape)
        return make

    def blocks(self, scheme: Scheme, h: np.ndarray, B: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """Evaluate f for entries in blocks of B: yields (n0, n1, Y) with Y ((n1 - n0) * K, M)."""
        _, ydt, sdt = self._types(scheme)
        K = scheme.K
        ybuf = None
        for n0 in range(0, self.N, B):
            n1 = min(self.N, n0 + B)
            make = self._inputs(scheme, h, n0, n1, sdt)
            if ybuf is None and not (self.vectorized and self.chunk_size is None):
                ybuf = np.empty((B * K, self.M), ydt)  # ours alone: f never sees it, so it is reused
            Y = self.evaluate((n1 - n0) * K, make, ydt, functools.partial(self._describe, scheme, h, n0),
                              scheme.imag, ybuf)
            yield n0, n1, Y
            del Y, make

    def combine(self, scheme: Scheme, Y: np.ndarray, h: np.ndarray, moff: np.ndarray, noff: np.ndarray,
                n0: int, n1: int, J: np.ndarray, err: np.ndarray | None) -> np.ndarray:
        """Combine a block's outputs into J (and err) at moff[m] + noff[n]; returns the block's
        statistics (n1 - n0, 4): max|J|, max|f| on the stencil, max secant slope, non-finite count."""
        _, ydt, _ = self._types(scheme)
        y0 = np.ascontiguousarray(self.y0.reshape(-1), dtype=ydt)
        stats = np.zeros((n1 - n0, 4))
        if scheme.levels:
            _core.fd_combine_richardson(Y, y0, h, scheme.levels, RICHARDSON_RATIO, self.eps, self.tiny, moff, noff,
                                        n0, n1, J, err, stats, self.nt)
        else:
            _core.fd_combine(Y, y0, h, scheme.c, scheme.c0, scheme.d, scheme.d0, scheme.sigma, self.eps, self.tiny,
                             moff, noff, n0, n1, scheme.imag, J, err, stats, self.nt)
        return stats

    def run(self, scheme: Scheme, h: np.ndarray, B: int, sink: Callable[..., Any],
            adapt: bool, after: Callable[[int, int], Any] | None = None) -> None:
        """Evaluate every entry and hand each block to ``sink(n0, n1, Y)`` (which combines
        it and returns its statistics); entries whose stencil left f's domain are redone
        (``adapt``: the step was the default one), then ``after(n0, n1)`` is called.
        Fills self.stats (N, 3)."""
        self.stats = np.zeros((self.N, 3))
        self._bar = _progress_bar(self.progress, self.N * scheme.K + 1, self.what)
        if self._bar is not None:
            self._bar.update(1)
        try:
            for n0, n1, Y in self.blocks(scheme, h, B):
                st = sink(n0, n1, Y)
                del Y
                self.stats[n0:n1] = st[:, :3]
                if adapt and not scheme.imag:
                    for b in np.flatnonzero(st[:, 3] > 0):
                        self._redo(scheme, h, n0 + int(b), sink)
                if after is not None:
                    after(n0, n1)
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    def _redo(self, scheme: Scheme, h: np.ndarray, n: int, sink: Callable[..., Any]) -> None:
        """Entry n's stencil made f non-finite (where f(x) is finite): again with the purely
        relative step, then with the one-sided formula pointing away from the non-finite side."""
        _, ydt, sdt = self._types(scheme)
        xn = abs(complex(self.x.reshape(-1)[n]))
        h1 = np.array(h, copy=True)

        def attempt(sch: Scheme, step: float) -> tuple[np.ndarray, np.ndarray]:
            h1[n] = step
            make = self._inputs(sch, h1, n, n + 1, sdt, entries=np.array([n]))
            Y = self.evaluate(sch.K, make, ydt, functools.partial(self._describe, sch, h1, n), False)
            return Y, sink(n, n + 1, Y, sch, h1)

        step = h[n]
        rel = float(np.exp2(np.floor(np.log2(self.eps**scheme.step_power * xn)))) if xn > 0 else 0.0
        if 0 < rel < step:
            step = rel
        Y, st = attempt(scheme, step)  # with the same step when no smaller relative one exists: for its rows
        # Shrink towards the domain end (by 8 per try, at most 2**-36 of the default step).
        smallest = h[n] * 2.0**-36
        while st[0, 3] != 0 and step / 8 >= smallest:
            step /= 8
            Y, st = attempt(scheme, step)
        if st[0, 3] == 0:
            self.stats[n] = st[0, :3]  # type: ignore[index]
            return
        side = self._finite_side(scheme, Y)
        if side == 0:
            return
        Y, st = attempt(_one_sided(scheme, side, scheme.d is not None), h[n] if xn == 0 else max(rel, smallest))
        self.stats[n] = st[0, :3]  # type: ignore[index]

    def _finite_side(self, scheme: Scheme, Y: np.ndarray) -> float:
        """The side (+1 or -1) to differentiate from: one whose rows are all finite where
        f(x) is, or the other one of a one-sided scheme that failed; 0 if none."""
        ok0 = np.isfinite(self.y0.reshape(-1))
        fin = (np.isfinite(Y) | ~ok0).all(axis=1)
        plus, minus = scheme.sigma > 0, scheme.sigma < 0
        if plus.any() and fin[plus].all():
            return 1.0
        if minus.any() and fin[minus].all():
            return -1.0
        if not minus.any():
            return -1.0
        if not plus.any():
            return 1.0
        return 0.0

    # -- the Jacobian -------------------------------------------------------
    def jacobian(
        self, method: str, step: Any = None, layout: str = "tensor", return_error: bool = False,
        step_power: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        scheme = _scheme(method, return_error)
        layout = check_layout(layout)
        jdt, _, _ = self._types(scheme)
        edt = _real(jdt)
        shape, moff, noff = layout_offsets(layout, self.out_shape, self.in_shape)
        count = 1
        for s in shape:
            count *= s
        result_bytes = count * (jdt.itemsize + (edt.itemsize if return_error else 0))
        B = self.plan(scheme, result_bytes, "finite-difference Jacobian")
        h = self.steps(scheme, step, step_power)
        self._check_steps(scheme, h)
        J = np.zeros(shape, jdt)
        err = np.zeros(shape, edt) if return_error else None
        if self.N == 0 or self.M == 0:
            return J, err

        def sink(n0: int, n1: int, Y: np.ndarray, sch: Scheme = scheme, hh: np.ndarray = h) -> np.ndarray:
            return self.combine(sch, Y, hh, moff, noff, n0, n1, J, err)

        self.run(scheme, h, B, sink, adapt=step is None)
        if err is not None:
            assert self.stats is not None
            colmax = self.stats[:, 0].reshape(self.in_shape)
            tensor_view(err, layout, self.out_shape, self.in_shape, writeable=True)[...] += self.eps * colmax
        warn_nonfinite(J, layout, self.out_shape, self.in_shape, self.what)
        return J, err

    def _entry(self, n: int) -> str:
        idx = np.unravel_index(n, self.in_shape) if self.in_shape else ()
        return self.argname + format_index(tuple(int(i) for i in idx))

    def _describe(self, scheme: Scheme, h: np.ndarray, n0: int, a: int, b: int) -> str:
        K = scheme.K
        if b - a == 1:
            n, k = n0 + a // K, a % K
            s = scheme.sigma[k] * h[n]
            delta = f"{'+' if s > 0 else '-'}= {abs(s):.6g}{'j' if scheme.imag else ''}"
            return (
                f"{self.what}: f raised while evaluating at {self.argname} with {self._entry(n)} {delta} "
                f"(input entry {n} of {self.N}, perturbation {k + 1} of {K}, method={scheme.name!r})"
            )
        first, last = n0 + a // K, n0 + (b - 1) // K
        return (
            f"{self.what}: f raised on a stack of {b - a} perturbed inputs: entries "
            f"{self._entry(first)} to {self._entry(last)} perturbed (method={scheme.name!r})"
        )

    # -- directional derivatives (tj.check, mode="fast") ---------------------
    def directional(self, scheme: Scheme, U: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Derivatives of f along the rows of U (shape (d, N)) with step t: (d, M) values,
        errors and the (d, 4) statistics.  Choose t and U so that ``x + sigma * t * U`` is exact."""
        jdt, ydt, sdt = self._types(scheme)
        D, K, M = U.shape[0], scheme.K, self.M
        steps = scheme.sigma * t * (1j if scheme.imag else 1.0)
        S = (self.x.reshape(1, 1, -1) + steps.reshape(1, K, 1) * U[:, None, :]).astype(sdt)
        S = np.ascontiguousarray(S.reshape(D * K, self.N))
        out = np.zeros((D, M), jdt)
        err = np.zeros((D, M), _real(jdt))
        if M == 0 or D == 0:
            return out, err, np.zeros((D, 4))

        def describe(a: int, b: int) -> str:
            dirs = f"direction {a // K + 1}" if b - a == 1 else f"directions {a // K + 1}-{(b - 1) // K + 1}"
            return f"{self.what}: f raised while evaluating at x + t*u along random {dirs} of {D} (mode='fast')"

        def make(a: int, b: int) -> np.ndarray:
            rows = S[a:b].copy()
            return rows.reshape((b - a,) + self.in_shape) if self.vectorized else rows.reshape(self.in_shape)

        Y = self.evaluate(D * K, make, ydt, describe, scheme.imag)
        h = np.full(D, t)
        moff = np.arange(M, dtype=np.int64)
        noff = np.arange(D, dtype=np.int64) * M
        stats = self.combine(scheme, Y, h, moff, noff, 0, D, out, err)
        err += self.eps * np.fmax.reduce(np.abs(out), axis=1, initial=0.0)[:, None]
        return out, err, stats


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


# ----------------------------------------------------------------------------- several arguments


class _Shared:
    """f of a perturbation shared by every sample: ``z`` (one sample's shape) is added to each
    sample of x along ``axis`` (picklable when f is)."""

    def __init__(self, f: Callable[..., Any], args: tuple[Any, ...], pos: int, axis: int) -> None:
        self.f, self.args, self.pos, self.axis = f, args, pos, axis

    def __call__(self, z: Any) -> Any:
        x = self.args[self.pos]
        return self.f(*self.args[: self.pos], x + np.expand_dims(z, self.axis), *self.args[self.pos + 1 :])


def _per_sample(
    f: Callable[..., Any], args: tuple[Any, ...], pos: int, batch_axis: Any, method: str, step: Any,
    vectorized: bool, chunk_size: int | None, num_threads: int | None, executor: Executor | None, layout: str,
    return_error: bool, progress: bool, check_batch: bool,
) -> Any:
    """Per-sample finite differences: one perturbation of every sample at once per in-sample entry."""
    if vectorized:
        raise ValueError("tj.fd.jacobian: batch_axis and vectorized=True cannot be combined")
    x = input_array(args[pos], "x")
    ax = batch_position(batch_axis, [("x", x.shape)], "tj.fd.jacobian")
    args = args[:pos] + (x,) + args[pos + 1 :]
    g = _Shared(f, args, pos, ax)
    z0 = np.zeros(tuple(np.delete(np.array(x.shape, dtype=np.int64), ax)), dtype=x.dtype)
    with Problem(g, z0, num_threads=num_threads, executor=executor, progress=progress, argname="x") as prob:
        y0 = np.asarray(prob.y0)  # f(x): the only evaluation besides the perturbed ones
        batch_position(batch_axis, [("f's output", y0.shape), ("x", x.shape)], "tj.fd.jacobian")
        if step is None:  # each in-sample entry: the smallest default step over the samples
            step = _sample_steps(x, ax, prob.eps, _scheme(method).step_power)
        J, err = prob.jacobian(method, step, "tensor", return_error)
    if check_batch:
        _check_independent(f, args, pos, ax, y0, J)
    res = _per_sample_layout(J, ax, y0.ndim, layout)
    if return_error:
        assert err is not None
        return res, _per_sample_layout(err, ax, y0.ndim, layout)
    return res


def _sample_steps(x: np.ndarray, ax: int, eps: float, power: float) -> np.ndarray:
    """The module's default steps of every entry of x (relative to |x|), the smallest over the samples."""
    a = np.abs(x).astype(np.float64)
    nz = a[a > 0]
    floor = min(float(np.median(nz)), 1.0) if nz.size else 1.0
    lo = float(np.finfo(_real(x.dtype)).tiny) * 2.0**20 / eps**power
    s_ = np.maximum(np.where(a > 0, a, floor), lo)
    return np.exp2(np.round(np.log2(eps**power * s_))).min(axis=ax)


def _check_independent(f: Callable[..., Any], args: tuple[Any, ...], pos: int, ax: int, y0: np.ndarray,
                       J: np.ndarray) -> None:
    """Perturb one sample alone (two of them, in turn): the other samples' outputs must not move."""
    x = args[pos]
    B = x.shape[ax]
    eps = float(np.finfo(_real(x.dtype)).eps)
    scale = max(float(np.max(np.abs(x), initial=0.0)), 1.0)
    rng = np.random.default_rng(0)
    for b in sorted({0, B - 1}):
        d = np.zeros_like(x)
        sl = [slice(None)] * x.ndim
        sl[ax] = b
        d[tuple(sl)] = rng.choice([-1.0, 1.0], d[tuple(sl)].shape) * np.sqrt(eps) * scale
        y = _dtypes.as_array(f(*args[:pos], x + d, *args[pos + 1 :]), "f's output")
        moved = np.abs(np.delete(y - y0, b, axis=ax))
        tol = 100 * eps * max(float(np.max(np.abs(y0), initial=0.0)), 1.0)
        if moved.size and float(moved.max()) > tol:
            raise ValueError(
                f"tj.fd.jacobian: batch_axis={ax}: f mixes samples -- perturbing sample {b} alone changed other "
                f"samples' outputs by up to {float(moved.max()):.3g}; the per-sample Jacobian does not describe f"
            )


def _per_sample_layout(J: np.ndarray, ax: int, P: int, layout: str) -> np.ndarray:
    """(out with the batch at ax) + in_sample -> (B, *out_sample, *in_sample) in a per-sample layout."""
    T = np.moveaxis(J, ax, 0)
    out_s, in_s = T.shape[1:P], T.shape[P:]
    p, r = len(out_s), len(in_s)
    if layout == "tensor":
        return T
    if layout == "gradient":
        return np.transpose(T, [0, *range(1 + p, 1 + p + r), *range(1, 1 + p)])
    if layout == "numerator":
        return np.transpose(T, [0, *range(1, 1 + p), *range(p + r, p, -1)])
    M, N = int(np.prod(out_s, dtype=np.int64)), int(np.prod(in_s, dtype=np.int64))
    if layout == "matrix":
        return T.reshape(T.shape[0], M, N)
    if layout == "vec":
        V = np.transpose(T, [0, *range(p, 0, -1), *range(p + r, p, -1)])
        return V.reshape(T.shape[0], M, N)
    raise ValueError(f"tj.fd.jacobian: layout {layout!r} is not available per sample")


class Partial:
    """``f`` as a function of its argument ``pos`` alone, the others fixed (picklable when f is)."""

    def __init__(self, f: Callable[..., Any], args: tuple[Any, ...], pos: int) -> None:
        self.f, self.args, self.pos = f, args, pos

    def __call__(self, z: Any) -> Any:
        return self.f(*self.args[: self.pos], z, *self.args[self.pos + 1 :])


def resolve_wrt(f: Callable[..., Any], nargs: int, wrt: Any, what: str) -> tuple[list[int], bool]:
    """wrt (an index, an argument name, or a tuple of them) as positions; and whether a tuple was given."""
    many = isinstance(wrt, (tuple, list))
    items = list(wrt) if many else [wrt]
    if many and not items:
        raise ValueError(f"{what}: wrt is an empty tuple; name at least one argument")
    names: list[str] | None = None
    out: list[int] = []
    for w in items:
        if isinstance(w, str):
            if names is None:
                try:
                    params = inspect.signature(f).parameters.values()
                    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
                except (TypeError, ValueError):
                    names = []
            if w not in names[:nargs]:
                raise ValueError(
                    f"{what}: wrt={w!r} names no positional argument of f among the {nargs} given"
                    + (f" ({', '.join(names[:nargs])})" if names else " (f's signature is not available: use an index)")
                )
            out.append(names.index(w))
        elif isinstance(w, (int, np.integer)) and not isinstance(w, bool):
            i = int(w)
            if not -nargs <= i < nargs:
                raise ValueError(f"{what}: wrt={i} is out of range for {nargs} argument(s)")
            out.append(i % nargs)
        else:
            raise TypeError(f"{what}: wrt must be an int, an argument name or a tuple of them, got {w!r}")
    return out, many


def _split_args(args: tuple[Any, ...], what: str) -> tuple[Any, ...]:
    if not args:
        raise TypeError(f"{what}() missing the point: pass f and at least one argument x")
    return args


def _argname(f: Callable[..., Any], pos: int, nargs: int) -> str:
    if nargs == 1:
        return "x"
    try:
        params = [p.name for p in inspect.signature(f).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if pos < len(params):
            return params[pos]
    except (TypeError, ValueError):
        pass
    return f"args[{pos}]"


# ----------------------------------------------------------------------------- public API


def jacobian(
    f: Callable[..., Any],
    *args: Any,
    wrt: int | str | Sequence[int | str] = 0,
    method: str = "central",
    step: Any = None,
    vectorized: bool = False,
    chunk_size: int | None = None,
    num_threads: int | None = None,
    executor: Executor | None = None,
    layout: str = "tensor",
    return_error: bool = False,
    progress: bool = False,
    batch_axis: int | None = None,
    check_batch: bool = False,
) -> Any:
    """Finite-difference Jacobian of a callable: ``T[m..., n...] = d f(*args)[m...] / d args[wrt][n...]``.

    Parameters
    ----------
    f : callable
        ``f(*args)`` returns an array of any shape (or, with ``vectorized=True``,
        maps a stack ``(k, *x.shape)`` of the argument ``wrt`` to ``(k, *out_shape)``).
    *args : array_like
        The point: one or several arguments of any shape (0-d and empty
        included). Integers become float64. Arguments other than ``wrt`` are
        passed to f unchanged.
    wrt : int, str or tuple of them
        The argument to differentiate in: its position or its name in f's
        signature.  A tuple gives a tuple of Jacobians, one per argument.
    method : {"forward", "backward", "central", "richardson", "complex"}
        See the module docstring for formulas, cost and accuracy.
    step : None, float or array_like
        None picks steps relative to x (see the module docstring); otherwise the
        absolute step (broadcast to x.shape), for Richardson the largest.
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
    batch_axis : int, optional
        Per-sample Jacobians, as in :func:`tensorjac.jacobian`: when axis ``batch_axis`` of x holds
        independent samples that f maps one to one onto the same axis of its output, the result is
        ``(B, *out_sample, *in_sample)`` (the layout applies to each sample).  Every sample is
        perturbed at once, so f is called about as often as for one sample (B times fewer calls);
        the step of an in-sample entry is the smallest default step over the samples.
    check_batch : bool
        With ``batch_axis``, also verify that f does not mix samples: two extra evaluations perturb
        one sample alone and require every other sample's output to stay unchanged (ValueError).

    Returns
    -------
    J, or (J, err) with ``return_error=True``; a tuple of those when ``wrt`` is a tuple.

    Raises
    ------
    JacobianTooLargeError
        The result and the scratch of one entry exceed the memory budget (nothing
        is allocated).

    Examples
    --------
    >>> import numpy as np
    >>> import tensorjac as tj
    >>> J = tj.fd.jacobian(np.sin, np.array([0.0, 1.0]), method="richardson")
    >>> np.allclose(J, np.diag(np.cos([0.0, 1.0])), rtol=0, atol=1e-13)
    True
    >>> A = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> J = tj.fd.jacobian(lambda A, v: A @ v, A, np.ones(2), wrt="v")
    >>> np.allclose(J, A)
    True
    >>> J, err = tj.fd.jacobian(np.exp, 1.0, method="forward", return_error=True)
    >>> bool(abs(J - np.e) <= 10 * err)
    True
    """
    _split_args(args, "tj.fd.jacobian")
    if method not in METHODS:
        raise ValueError(f"tj.fd.jacobian: unknown method {method!r}; expected one of {', '.join(METHODS)}")
    check_layout(layout)
    positions, many = resolve_wrt(f, len(args), wrt, "tj.fd.jacobian")
    if batch_axis is not None:
        if many:
            raise ValueError("tj.fd.jacobian: batch_axis needs a single wrt")
        return _per_sample(f, args, positions[0], batch_axis, method, step, vectorized, chunk_size,
                           num_threads, executor, layout, return_error, progress, check_batch)
    results = []
    for pos in positions:
        g = f if len(args) == 1 else Partial(f, args, pos)
        with Problem(
            g, args[pos], vectorized=vectorized, chunk_size=chunk_size, num_threads=num_threads,
            executor=executor, progress=progress, argname=_argname(f, pos, len(args)),
        ) as prob:
            J, err = prob.jacobian(method, step, layout, return_error)
        results.append((J, err) if return_error else J)
    return tuple(results) if many else results[0]


class _InnerJacobian:
    """x -> finite-difference Jacobian (tensor layout) of f at x with fixed steps (picklable when f is)."""

    def __init__(self, f: Callable[..., Any], method: str, h: np.ndarray, vectorized: bool,
                 chunk_size: int | None, argname: str) -> None:
        self.f, self.method, self.h = f, method, h
        self.vectorized, self.chunk_size, self.argname = vectorized, chunk_size, argname

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with Problem(self.f, x, vectorized=self.vectorized, chunk_size=self.chunk_size,
                     what="tj.fd.hessian (inner derivative)", argname=self.argname) as p:
            g, _ = p.jacobian(self.method, self.h.reshape(x.shape))
        return g


# Hessian steps: eps**p per level of differencing, balancing truncation
# against rounding amplified by two divisions by h.
_HESSIAN_POWER = {"forward": 1 / 3, "backward": 1 / 3, "central": 1 / 4, "richardson": 1 / 8, "complex": 1 / 3}
_HESSIAN_LAYOUTS = ("tensor", "matrix", "vec")


def hessian(
    f: Callable[..., Any],
    *args: Any,
    wrt: int | str | Sequence[int | str] = 0,
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
    """Finite-difference Hessian ``H[m..., n..., k...] = d^2 f[m...] / d x[n...] d x[k...]``.

    f may return any shape: the result has rank P + 2R (``f(x).shape + x.shape
    + x.shape``) and is exactly symmetric in the two input groups.

    The Jacobian (by ``method``) of the finite-difference Jacobian (by
    ``method``; with method="complex" the inner derivative is a complex step
    and the outer differences are central; "richardson" uses a fixed
    three-level extrapolation at both levels).  Both levels use fixed steps
    chosen at x: ``eps**p * s`` (s as in the module docstring) with p = 1/3
    (forward, backward, complex), 1/4 (central) or 1/8 (richardson).

    Parameters
    ----------
    f : callable
        ``f(*args)`` returns an array of any shape.
    *args, wrt, method, step, vectorized, chunk_size, num_threads, executor, progress
        As for :func:`jacobian` (a tuple ``wrt`` gives the Hessian in each of
        those arguments; mixed second derivatives are not computed).
        ``vectorized`` applies to the inner derivatives; ``num_threads`` and
        ``executor`` parallelise over the outer perturbations.
    layout : {"tensor", "matrix", "vec"}
        "tensor": ``out + in + in``.  "matrix": ``(N, N)`` for a scalar f and
        ``(M, N, N)`` otherwise, each group flattened in C order; "vec": the same
        shape, each group flattened in column-major (Fortran) order.  For a
        scalar f the Jacobian layouts "gradient" and "numerator" are accepted too.
    return_error : bool
        Also return an error estimate: the outer differences' estimate, plus the
        inner derivative's rounding error ``eps |f(x)| sum|c| / h`` amplified by
        the outer formula (``sum|c| / h`` again), plus the asymmetry ``|H - H^T| / 2``.

    Returns
    -------
    H, or (H, err); a tuple of those when ``wrt`` is a tuple.

    Examples
    --------
    >>> import numpy as np
    >>> import tensorjac as tj
    >>> H = tj.fd.hessian(lambda v: v[0] ** 2 * v[1], np.array([1.0, 2.0]), method="richardson")
    >>> np.allclose(H, [[4.0, 2.0], [2.0, 0.0]], atol=1e-8)
    True
    >>> H = tj.fd.hessian(lambda v: np.array([v @ v, v[0] * v[1]]), np.ones(2), layout="matrix")
    >>> H.shape
    (2, 2, 2)
    >>> np.allclose(H[1], [[0.0, 1.0], [1.0, 0.0]], atol=1e-6)
    True
    """
    _split_args(args, "tj.fd.hessian")
    if method not in METHODS:
        raise ValueError(f"tj.fd.hessian: unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ValueError(f"tj.fd.hessian: unknown layout {layout!r}; expected one of {', '.join(_HESSIAN_LAYOUTS)}")
    positions, many = resolve_wrt(f, len(args), wrt, "tj.fd.hessian")
    results = []
    for pos in positions:
        g = f if len(args) == 1 else Partial(f, args, pos)
        results.append(_hessian1(g, args[pos], method, step, vectorized, chunk_size, num_threads, executor, layout,
                                 return_error, progress, _argname(f, pos, len(args))))
    return tuple(results) if many else results[0]


def _hessian1(f: Callable[..., Any], x: Any, method: str, step: Any, vectorized: bool, chunk_size: int | None,
              num_threads: int | None, executor: Executor | None, layout: str, return_error: bool,
              progress: bool, argname: str) -> Any:
    inner_method = "richardson3" if method == "richardson" else method
    with Problem(f, x, vectorized=vectorized, chunk_size=chunk_size, what="tj.fd.hessian", argname=argname) as p:
        out_shape = p.out_shape
        if layout in ("gradient", "numerator") and out_shape != ():
            raise ValueError(
                f"tj.fd.hessian: layout={layout!r} needs a scalar f; f returns shape {out_shape}: "
                f"use one of {', '.join(_HESSIAN_LAYOUTS)}"
            )
        inner = _scheme(inner_method)
        p._types(inner)  # the complex step's checks, before any work
        h = p.steps(inner, step, _HESSIAN_POWER[method])
        xr = p.x
        M, N = p.M, p.N
        bytes_ = M * N * N * p.dtype.itemsize * (4 if return_error else 2)
        if bytes_ > _config.get_memory_budget():
            raise too_large(f"tj.fd.hessian: the Hessian of shape {out_shape + xr.shape + xr.shape}", bytes_,
                            "the Hessian, its transpose and the error estimate")
        # rounding error of the inner derivative (eps |f| sum|c| / h), amplified by the outer differences
        f_mag = np.abs(p.y0).astype(np.float64)
        csum = np.abs(inner.c).sum() + abs(inner.c0)
        if inner.imag:  # the complex step does not cancel: its rounding is relative to g itself
            csum = 0.0
        eps = p.eps
    outer = "central" if method == "complex" else inner_method
    g = _InnerJacobian(f, inner_method, h, vectorized, chunk_size, argname)
    with Problem(g, xr, num_threads=num_threads, executor=executor, progress=progress, what="tj.fd.hessian",
                 argname=argname) as q:
        H, err = q.jacobian(outer, h.reshape(xr.shape), "tensor", return_error)
    P, R = len(out_shape), xr.ndim
    perm = tuple(range(P)) + tuple(range(P + R, P + 2 * R)) + tuple(range(P, P + R))
    Ht = H.transpose(perm)
    asym = np.abs(H - Ht) / 2 if return_error else None
    H = (H + Ht) / 2
    if err is not None:
        assert asym is not None
        osch = _scheme(outer)
        gain = np.abs(osch.c).sum() + abs(osch.c0)
        inner_round = eps * f_mag.reshape(out_shape + (1,) * R) * csum / h.reshape(xr.shape)
        err = err + gain * inner_round.reshape(out_shape + xr.shape + (1,) * R) / h.reshape(xr.shape)
        err = (err + err.transpose(perm)) / 2 + asym
    H = _hessian_layout(H, layout, out_shape, xr.shape)
    if err is not None:
        err = _hessian_layout(err, layout, out_shape, xr.shape)
    return (H, err) if return_error else H


def _hessian_layout(T: np.ndarray, layout: str, out_shape: tuple[int, ...], in_shape: tuple[int, ...]) -> np.ndarray:
    if layout == "tensor":
        return T
    if out_shape == ():
        return from_tensor(T, layout, in_shape, in_shape)
    M = int(np.prod(out_shape, dtype=np.int64))
    N = int(np.prod(in_shape, dtype=np.int64))
    order = "C" if layout == "matrix" else "F"
    P, R = len(out_shape), len(in_shape)
    if order == "F":  # column-major within each group: reverse the axes of each group, then C-flatten
        T = T.transpose(tuple(range(P))[::-1] + tuple(range(P, P + R))[::-1] + tuple(range(P + R, P + 2 * R))[::-1])
    return np.ascontiguousarray(T).reshape(M, N, N)


def from_tensor(T: np.ndarray, layout: str, out_shape: tuple[int, ...], in_shape: tuple[int, ...]) -> np.ndarray:
    """Copy a tensor-layout Jacobian into a new C-contiguous array in ``layout``."""
    shape, _, _ = layout_placement(layout, out_shape, in_shape)
    out = np.empty(shape, T.dtype)
    tensor_view(out, layout, out_shape, in_shape, writeable=True)[...] = T
    return out

