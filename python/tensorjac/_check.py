"""``tj.check``: is a hand-derived Jacobian (or Hessian) right?  Compared with finite differences.

See :func:`check` for the tolerances and the two modes.
"""

from __future__ import annotations

import functools
import heapq
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _config
from ._dtypes import as_array
from ._fd import (
    _HESSIAN_LAYOUTS,
    METHODS,
    NonFiniteWarning,
    Partial,
    Problem,
    _annotate,
    _argname,
    _scheme,
    check_layout,
    format_index,
    resolve_wrt,
    tensor_view,
)
from ._fd import hessian as fd_hessian
from ._fd import jacobian as fd_jacobian
from ._layout import LAYOUTS, layout_placement, prod

__all__ = ["CheckEntry", "CheckReport", "CheckReports", "JacobianMismatchError", "check"]

ERR_FACTOR = 10.0  # safety factor on the FD error estimate
# The screen may be strict: failing it only costs the full comparison.  Its
# error estimate (the previous Richardson level's error) is conservative already.
SCREEN_ERR_FACTOR = 1.0
N_WORST = 10


class JacobianMismatchError(AssertionError):
    """The Jacobian under test disagrees with finite differences; ``.report`` has the details.

    Raised by :meth:`CheckReport.raise_if_failed` and
    :func:`tensorjac.testing.assert_jacobian_close`; an ``AssertionError``, so
    test runners report it as a failed assertion.  Its message is the report's
    table of the worst entries.

    Examples
    --------
    >>> import numpy as np, tensorjac as tj
    >>> x = np.array([0.5, 1.0])
    >>> try:
    ...     tj.check(np.sin, x, np.diag(np.sin(x))).raise_if_failed()   # sin' is not sin
    ... except tj.JacobianMismatchError as e:
    ...     print(e.report.n_failed, e.report.worst[0].out_index)
    2 (1,)
    """

    def __init__(self, report: CheckReport) -> None:
        super().__init__(str(report))
        self.report = report


@dataclass(frozen=True)
class CheckEntry:
    """One entry ``T[out_index, in_index]`` of the compared Jacobians.

    For a Hessian (``tj.check(..., order=2)``) ``in_index`` is the pair ``(n..., k...)`` of
    ``H[m..., n..., k...]``: the two input indices one after the other.

    Examples
    --------
    >>> import numpy as np, tensorjac as tj
    >>> J = np.diag([2.0, 4.0]); J[1, 1] = 5.0           # the second entry is wrong
    >>> e = tj.check(lambda x: x**2, np.array([1.0, 2.0]), J).worst[0]
    >>> e.out_index, e.in_index, float(e.analytic), round(float(e.numeric), 6)
    ((1,), (1,), 5.0, 4.0)
    """

    out_index: tuple[int, ...]
    in_index: tuple[int, ...]
    analytic: float | complex
    numeric: float | complex
    abs_err: float
    rel_err: float  # abs_err / max(|analytic|, |numeric|)
    tol: float  # the tolerance this entry had to meet
    failed: bool


@dataclass
class CheckReport:
    """Outcome of :func:`check`. ``print(report)`` shows a table of the worst entries.

    ``bool(report)`` is ``report.passed``.  ``worst`` lists the entries with the
    largest ``|analytic - numeric| / tol`` (each a ``CheckEntry`` with
    ``out_index``, ``in_index``, ``analytic``, ``numeric``, ``abs_err``,
    ``rel_err``, ``tol`` and ``failed``); ``n_failed`` of ``n_checked`` entries
    (or directional values, in fast mode) failed; ``rtol`` and ``atol`` are the
    tolerances used, ``n_evals`` the evaluations of f.  :meth:`plot` draws a
    heatmap of the error ratio.

    Examples
    --------
    >>> import numpy as np, tensorjac as tj
    >>> x = np.array([0.5, 1.0])
    >>> rep = tj.check(np.sin, x, np.diag(np.cos(x)))
    >>> rep.passed, rep.n_failed, rep.n_checked, rep.mode
    (True, 0, 4, 'full')
    >>> print(rep)                                        # doctest: +ELLIPSIS
    tensorjac.check PASSED: 0 of 4 entries outside tolerance (mode full, method richardson, ...)
    ...
    >>> bad = tj.check(np.sin, x, np.diag(np.sin(x)))
    >>> bool(bad), bad.worst[0].out_index, bad.worst[0].in_index
    (False, (1,), (1,))
    """

    passed: bool
    max_abs_err: float
    max_rel_err: float
    n_evals: int
    worst: list[CheckEntry]
    rtol: float
    atol: float
    err_factor: float
    mode: str  # "full", "fast" (the screen passed) or "fast->full" (it failed)
    method: str
    layout: str
    out_shape: tuple[int, ...]
    in_shape: tuple[int, ...]
    n_failed: int
    n_checked: int
    # |analytic - numeric| / tolerance over T[m..., n...] (full; H[m..., n..., k...] for order 2) or
    # over (direction, m...) (fast mode that passed); for plot().
    error_ratio: np.ndarray | None = field(default=None, repr=False)
    order: int = 1  # 1: a Jacobian was checked; 2: a Hessian (tj.check(..., order=2))

    def raise_if_failed(self) -> CheckReport:
        """Raise :class:`JacobianMismatchError` (an AssertionError) unless the check passed."""
        if not self.passed:
            raise JacobianMismatchError(self)
        return self

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        shp = lambda s: "()" if not s else "(" + ", ".join(map(str, s)) + ("," if len(s) == 1 else "") + ")"
        unit = "directional values" if self.mode == "fast" else "entries"
        status = "PASSED" if self.passed else "FAILED"
        lines = [
            f"tensorjac.check {status}: {self.n_failed} of {self.n_checked} {unit} outside tolerance "
            f"(mode {self.mode}, method {self.method}, {self.n_evals} evaluations of f)",
            f"f: x {shp(self.in_shape)} -> f(x) {shp(self.out_shape)}; "
            f"{'Hessian' if self.order == 2 else 'Jacobian'} layout {self.layout!r}",
            f"max abs err {self.max_abs_err:.3e}   max rel err {self.max_rel_err:.3e}   "
            f"rtol {self.rtol:.2e}   atol {self.atol:.2e}   (+ {self.err_factor:g} x FD error estimate)",
        ]
        shown = [e for e in self.worst if e.failed] if not self.passed else self.worst[:3]
        if shown:
            lines.append("worst entries, by |analytic - numeric| / tol:")
            head = ("out index", "in index (n, k)" if self.order == 2 else "in index", "analytic", "numeric",
                    "abs err", "rel err", "tol", "result")
            rows = [
                (format_index(e.out_index), format_index(e.in_index), _num(e.analytic), _num(e.numeric),
                 f"{e.abs_err:.2e}", f"{e.rel_err:.2e}", f"{e.tol:.2e}", "FAIL" if e.failed else "ok")
                for e in shown
            ]
            widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
            fmt = "  ".join("{:<%d}" % w for w in widths)
            lines += ["  " + fmt.format(*head).rstrip(), "  " + fmt.format(*("-" * w for w in widths)).rstrip()]
            lines += ["  " + fmt.format(*r).rstrip() for r in rows]
        return "\n".join(lines)

    def plot(self, ax: Any = None) -> Any:
        """Heatmap of ``log10(|analytic - numeric| / tol)`` over the matrix layout; returns the Figure.

        Rows are the outputs m and columns the inputs n, both flattened in C
        order, with lines between the blocks of the leading axes so a wrong
        block stands out (for a Hessian, rows are the pairs (m, n) and columns k).
        Values above 0 fail.  Needs matplotlib
        (``pip install 'tensorjac[plot]'``).
        """
        try:
            from matplotlib.colors import TwoSlopeNorm
            from matplotlib.figure import Figure
        except ImportError:
            raise ImportError(
                "CheckReport.plot needs matplotlib: pip install 'tensorjac[plot]' (or pip install matplotlib)"
            ) from None
        if ax is None:
            fig = Figure(figsize=(7.0, 5.5), layout="constrained")
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        M = int(np.prod(self.out_shape, dtype=np.int64))
        ratio = self.error_ratio
        if ratio is None or ratio.size == 0:
            ax.text(0.5, 0.5, "nothing to show (empty Jacobian)", ha="center", va="center")
            ax.set_axis_off()
            return fig
        if self.mode == "fast":  # the screen passed: only directional values exist
            data = ratio.reshape(ratio.shape[0], M).T
            xlabel = "random direction u (fast mode: directional check only)"
            col_shape: tuple[int, ...] = (data.shape[1],)
        elif self.order == 2:  # rows (m, n), columns k: an N x N picture for a scalar f
            data = ratio.reshape(-1, max(1, prod(self.in_shape)))
            xlabel = f"input entry k of x {self.in_shape} (C order)"
            col_shape = self.in_shape
        else:
            data = ratio.reshape(M, -1)
            xlabel = f"input entry n of x {self.in_shape} (C order)"
            col_shape = self.in_shape
        ylabel = f"output entry m of f(x) {self.out_shape} (C order)"
        row_shape = self.out_shape
        if self.order == 2:
            ylabel = f"output entry m of f(x) {self.out_shape}, then input entry n of x {self.in_shape} (C order)"
            row_shape = self.out_shape + self.in_shape
        with np.errstate(divide="ignore"):
            logr = np.log10(np.where(np.isfinite(data), data, np.inf))
        finite = logr[np.isfinite(logr)]
        hi = float(max(1.0, finite.max(initial=0.0)))
        lo = float(min(-1.0, finite.min(initial=0.0)))
        img = np.clip(np.where(np.isnan(logr), hi, logr), lo, hi)
        im = ax.imshow(img, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, lo, hi), interpolation="nearest", aspect="auto")
        fig.colorbar(im, ax=ax, label="log10(|analytic - numeric| / tol)   (> 0 fails)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        for shape, line in ((row_shape, ax.axhline), (col_shape, ax.axvline)):
            if len(shape) >= 2 and shape[0] > 1:
                block = int(np.prod(shape[1:], dtype=np.int64))
                for b in range(1, shape[0]):
                    line(b * block - 0.5, color="k", lw=0.5, alpha=0.4)
        fails = np.argwhere(data > 1)
        if 0 < len(fails) <= 2000:  # ring the failing entries: single pixels are easy to miss
            ax.scatter(fails[:, 1], fails[:, 0], s=60, facecolors="none", edgecolors="k", linewidths=1.0)
        title = f"tensorjac.check {'passed' if self.passed else 'FAILED'} ({self.mode}, {self.method})"
        if self.worst and not self.passed:
            w = self.worst[0]
            title += f"\nworst: out {format_index(w.out_index)}, in {format_index(w.in_index)}"
        ax.set_title(title)
        return fig


def _num(v: float | complex) -> str:
    if isinstance(v, complex):
        return f"{v.real:.8e}{v.imag:+.8e}j"
    return f"{v:.10e}"


def _scalar(v: Any) -> float | complex:
    v = v.item() if hasattr(v, "item") else v
    return complex(v) if isinstance(v, complex) else float(v)


class CheckReports(tuple):  # type: ignore[type-arg]
    """The reports of ``tj.check(..., wrt=(i, j, ...))``, one per argument.

    True only when every check passed (a plain tuple would always be true).

    Examples
    --------
    >>> import numpy as np, tensorjac as tj
    >>> f = lambda a, b: a * b
    >>> a, b = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    >>> reps = tj.check(f, a, b, (np.diag(b), np.diag(a)), wrt=(0, 1))
    >>> bool(reps), len(reps), reps.passed
    (True, 2, True)
    """

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self)

    def __bool__(self) -> bool:
        return self.passed

    def raise_if_failed(self) -> CheckReports:
        """Raise :class:`JacobianMismatchError` for the first failed report."""
        for r in self:
            r.raise_if_failed()
        return self

    def __str__(self) -> str:
        return "\n\n".join(str(r) for r in self)


def _eps(*dts: np.dtype) -> float:
    e = np.finfo(np.float64).eps
    for dt in dts:
        if dt.kind in "fc":
            e = max(e, np.finfo(dt).eps)
    return float(e)


def _read_jacobian(A: np.ndarray, layout: str, out_shape: tuple[int, ...], in_shape: tuple[int, ...]) -> np.ndarray:
    """The user's Jacobian reshaped to the layout's shape; ValueError when its shape fits no reading of it."""
    want, _, _ = layout_placement(layout, out_shape, in_shape)
    squeeze = lambda s: tuple(d for d in s if d != 1)
    if A.shape != want:
        if squeeze(A.shape) != squeeze(want):
            fits = [L for L in LAYOUTS if squeeze(layout_placement(L, out_shape, in_shape)[0]) == squeeze(A.shape)]
            hint = f"; that shape fits layout={fits[0]!r}" if fits else ""
            raise ValueError(
                f"tj.check: jac has shape {A.shape}, but for f: x {in_shape} -> f(x) {out_shape} the "
                f"{layout!r} layout has shape {want}{hint}"
            )
        A = A.reshape(want)  # only size-1 axes differ: the same entries in the same order
    return A


def check(
    f: Callable[..., Any],
    *args: Any,
    jac: Any = None,
    wrt: int | str | Sequence[int | str] = 0,
    layout: str = "tensor",
    mode: str = "full",
    method: str = "richardson",
    step: Any = None,
    rtol: float | None = None,
    atol: float | None = None,
    vectorized: bool = False,
    num_threads: int | None = None,
    executor: Executor | None = None,
    seed: int | None = 0,
    directions: int = 2,
    progress: bool = False,
    order: int = 1,
) -> Any:
    """Compare a Jacobian (or, with ``order=2``, a Hessian) with finite differences of ``f``.

    Call it as ``check(f, x, jac)`` or, for a function of several arguments,
    ``check(f, *args, jac)``: the last positional argument is the Jacobian
    under test (or pass it as ``jac=`` and every positional argument is an
    argument of f).  ``wrt`` (an index or an argument name) says which argument
    it is the Jacobian in; the others are held constant.  With a tuple ``wrt``,
    ``jac`` is a tuple of Jacobians and the result a tuple of reports
    (a ``CheckReports``, true only when every check passed).

    Parameters
    ----------
    f : callable
        The function ``f(*args)``.
    *args : array_like
        The point, then the Jacobian (unless ``jac=`` is given).
    jac : array_like or callable, optional
        The Jacobian in ``layout`` (see the layouts page of the docs), as an array or a callable
        ``jac(*args)`` returning it.
    wrt : int, str or tuple of them
        The argument(s) the Jacobian is taken in.
    layout : str
        The layout of ``jac``.
    mode : {"full", "fast"}
        "full" compares every entry; "fast" screens with ``directions`` random
        directional derivatives (O(1) evaluations of f, directions drawn from
        ``seed``) and falls back to the full comparison only when the screen fails.
    method : str
        The finite-difference method (see ``tensorjac.fd``); forward, backward
        and central differences add stencil points for an empirical error estimate.
    step : None, float or array_like
        As for ``tj.fd.jacobian``.
    rtol, atol : float, optional
        Tolerances (defaults below).
    vectorized, num_threads, executor, progress
        Passed to the finite-difference engine (see ``tj.fd.jacobian``);
        ``progress`` shows a tqdm bar in full mode.
    order : {1, 2}
        1 (default): ``jac`` is the Jacobian.  2: it is the Hessian
        ``H[m..., n..., k...] = d^2 f[m...] / dx[n...] dx[k...]`` in the layouts of
        :func:`tensorjac.hessian` ("tensor", "matrix" or "vec"), compared with
        :func:`tensorjac.fd.hessian` (see "Hessians" below).

    Returns
    -------
    CheckReport (or CheckReports); call ``.raise_if_failed()`` to turn a
    failure into an AssertionError.

    Notes
    -----
    Entry ``T[m, n]`` of the user's Jacobian (``analytic``) passes against the
    finite-difference value (``numeric``) when::

        |analytic - numeric| <= atol[n] + rtol * |numeric| + 10 * err[m, n]

    where ``err`` is the finite-difference engine's per-entry error estimate (see
    ``tensorjac.fd``).  With ``eps`` the unit roundoff of the coarsest dtype
    involved (x, f(x) and the given Jacobian), the defaults are

    * ``rtol = sqrt(eps)``: 1.5e-8 for float64, 3.5e-4 for float32;
    * ``atol[n] = eps**(2/3) * scale[n]`` (3.7e-11 * scale for float64), the noise
      floor of entries that are zero, where ``scale[n]`` is the size of the
      problem seen from input entry n: the largest of ``max|jac|``, ``max_m
      |numeric[m, n]|``, the secant slopes ``|f(x + s e_n) - f(x)| / |s|`` over
      the stencil, and ``max|f|`` over the stencil (and at x) divided by
      ``max(1, max|x|)``.  So a correct Jacobian passes where f(x) = 0 (a
      least-squares residual at its solution) and at tiny or subnormal x.
      ``report.atol`` is the largest ``atol[n]``.

    Memory: the full mode compares block by block, holding the report's
    float32 ``error_ratio`` (half a float64 Jacobian) and finite-difference
    blocks of at most the size of the Jacobian.

    Mode "fast" first compares ``J @ u`` with the directional finite difference
    along ``directions`` (default 2) random directions u, entries
    ``±[0.5, 1] * s / sqrt(N)`` (s the step scale of ``tensorjac.fd``) rounded
    to powers of two so that every input entry takes part.  That costs
    ``1 + directions * K`` evaluations of f whatever the size of x.  The screen
    is strict: it passes only if every directional value is within what a single
    entry at its allowance could explain, ``(atol + rtol * max_n |J[m, n]|) *
    max|u| + err``.  Failing the screen only costs the full comparison, which
    then names the wrong entries.  Near the FD noise floor (entries below ~1e-8
    of f's scale) the screen can miss an error that the full mode would catch.

    Hessians (``order=2``).  The reference is ``tj.fd.hessian(f, ..., method=method,
    return_error=True)``: a Jacobian of finite-difference Jacobians, whose error is
    much larger than a Jacobian's (typically 1e-9 to 1e-7 of the Hessian's scale with
    Richardson, 1e-6 with central differences; ~1e-2 for float32 f), so the comparison leans on its
    per-entry error estimate ``err`` (outer truncation, inner rounding amplified by
    the outer differences, and the asymmetry ``|H - H^T| / 2``).  Entry
    ``H[m, n, k]`` passes when::

        |analytic - numeric| <= atol + rtol * |numeric| + 10 * err[m, n, k]

    with ``rtol = sqrt(eps)`` and ``atol = eps**(2/3) * scale`` as for Jacobians,
    ``scale`` being the largest of ``max|H|`` (given), ``max|numeric|``,
    ``max|f(x)| / max(1, max|x|)**2`` and ``max|J| / max(1, max|x|)`` (J the central
    finite-difference Jacobian at x, which costs 2N + 1 more evaluations and
    covers a Hessian that vanishes where f and its slope do not).  On 45 exact
    Hessians of the test suite the largest ``|analytic - numeric| / tol`` is 0.1
    (Richardson) and 0.2 (central or forward differences).  Only ``mode="full"``
    and a single ``wrt`` are supported (check each diagonal block of a tuple
    ``wrt`` with its own call; mixed blocks have no finite-difference reference).
    The report's ``worst`` entries have ``in_index`` = ``(n..., k...)``, its
    ``n_checked`` is ``M * N * N`` and its ``n_evals`` counts the calls of f made
    in this process.  Memory: the finite-difference Hessian, its error estimate
    and the float32 ``error_ratio`` (the comparison goes block by block).

    Examples
    --------
    >>> import numpy as np
    >>> import tensorjac as tj
    >>> W = np.array([[1.0, 2.0], [0.5, -1.0]])
    >>> x = np.array([0.3, -0.2])
    >>> J = (1 - np.tanh(W @ x) ** 2)[:, None] * W
    >>> tj.check(lambda v: np.tanh(W @ v), x, J).passed
    True
    >>> tj.check(lambda W, v: np.tanh(W @ v), W, x, J, wrt="v").passed
    True
    >>> bad = J.copy(); bad[1, 0] *= 1.001
    >>> rep = tj.check(lambda v: np.tanh(W @ v), x, bad)
    >>> rep.passed, rep.n_failed, rep.worst[0].in_index
    (False, 1, (0,))

    A Hessian: ``x @ A @ x`` has ``A + A.T``; a wrong entry is named by ``in_index = (n, k)``:

    >>> A = np.array([[1.0, 2.0], [0.0, 3.0]])
    >>> tj.check(lambda v: v @ A @ v, x, A + A.T, order=2).passed
    True
    >>> rep = tj.check(lambda v: v @ A @ v, x, 2 * A, order=2)      # forgot to symmetrize
    >>> rep.passed, rep.n_failed, sorted(e.in_index for e in rep.worst if e.failed)
    (False, 2, [(0, 1), (1, 0)])
    """
    if isinstance(order, bool) or order not in (1, 2):
        raise ValueError(f"tj.check: order must be 1 (a Jacobian) or 2 (a Hessian), got {order!r}")
    if jac is None:
        if len(args) < 2:
            raise TypeError("tj.check: pass f, its argument(s) and the Jacobian: check(f, x, jac)")
        args, jac = args[:-1], args[-1]
    elif not args:
        raise TypeError("tj.check: pass f and its argument(s): check(f, x, jac=...)")
    if order == 1:
        layout = check_layout(layout)
    elif not isinstance(layout, str) or layout not in _HESSIAN_LAYOUTS:
        raise ValueError(f"tj.check: order=2 checks a Hessian in layout {', '.join(map(repr, _HESSIAN_LAYOUTS))} "
                         f"(those of tj.hessian), got {layout!r}")
    if mode not in ("full", "fast"):
        raise ValueError(f"tj.check: mode must be 'full' or 'fast', got {mode!r}")
    if method not in METHODS:
        raise ValueError(f"tj.check: unknown method {method!r}; expected one of {', '.join(METHODS)}")
    for name, v in (("rtol", rtol), ("atol", atol)):
        if v is not None and not (isinstance(v, (int, float, np.floating)) and np.isfinite(v) and v >= 0):
            raise ValueError(f"tj.check: {name} must be a finite number >= 0 or None, got {v!r}")
    if isinstance(directions, bool) or not isinstance(directions, int) or directions < 1:
        raise ValueError(f"tj.check: directions must be a positive int, got {directions!r}")
    positions, many = resolve_wrt(f, len(args), wrt, "tj.check")
    if order == 2:
        if many:
            raise ValueError(
                f"tj.check: order=2 checks one Hessian at a time, but wrt={wrt!r} is a tuple; check each diagonal "
                "block d^2 f / dx_i^2 with its own call (wrt=i): mixed blocks have no finite-difference reference"
            )
        if mode != "full":
            raise ValueError(f"tj.check: order=2 compares every entry (mode='full'); got mode={mode!r}")
        return _check_hessian(f, args, positions[0], jac, layout, method, step, rtol, atol, vectorized,
                              num_threads, executor, progress)
    if many:
        if not isinstance(jac, (tuple, list)) or len(jac) != len(positions):
            raise ValueError(f"tj.check: wrt={wrt!r} needs a tuple of {len(positions)} Jacobians as jac")
        jacs = list(jac)
    else:
        jacs = [jac]
    reports = []
    for pos, J in zip(positions, jacs):
        g = f if len(args) == 1 else Partial(f, args, pos)
        with Problem(g, args[pos], vectorized=vectorized, num_threads=num_threads, executor=executor,
                     progress=progress and mode == "full", what="tj.check",
                     argname=_argname(f, pos, len(args))) as prob:
            if callable(J):
                try:
                    J = J(*[np.array(as_array(a), copy=True) for a in args]) if len(args) > 1 else J(prob.x.copy())
                except Exception as e:
                    _annotate(e, "tj.check: raised by the jac callable under test")
                    raise
            reports.append(_check1(prob, as_array(J, "tj.check: jac"), layout, mode, method, step, rtol, atol, seed, directions))
    return CheckReports(reports) if many else reports[0]


def _check1(prob: Problem, A: np.ndarray, layout: str, mode: str, method: str, step: Any, rtol: float | None,
            atol: float | None, seed: int | None, directions: int) -> CheckReport:
    if A.dtype.kind not in "biufc":
        raise TypeError(f"tj.check: jac has dtype {A.dtype}; expected a numeric array")
    A = _read_jacobian(A, layout, prob.out_shape, prob.in_shape)
    eps = _eps(prob.x.dtype, prob.y0.dtype, A.dtype)
    rtol_ = float(np.sqrt(eps)) if rtol is None else float(rtol)
    absA_max = 0.0
    A_t = tensor_view(A, layout, prob.out_shape, prob.in_shape)
    step_n = max(1, (1 << 16) // max(prob.M, 1))
    for n0 in range(0, prob.N if prob.M else 0, step_n):  # in pieces: no temporary of the Jacobian's size
        piece = np.abs(_gather(A_t, prob, n0, min(prob.N, n0 + step_n)))
        absA_max = max(absA_max, float(np.max(piece, initial=0.0, where=np.isfinite(piece))))
    xmax = max(1.0, float(np.max(np.abs(prob.x), initial=0.0)))
    y_scale = float(np.max(np.abs(prob.y0), initial=0.0, where=np.isfinite(prob.y0))) / xmax
    base_scale = max(absA_max, y_scale)
    common = dict(method=method, layout=layout, out_shape=prob.out_shape, in_shape=prob.in_shape,
                  rtol=rtol_, err_factor=ERR_FACTOR)
    if mode == "fast":
        report = _fast(prob, A, layout, method, rtol_, atol, eps, base_scale, xmax, seed, directions, common)
        if report is not None:
            return report
    return _full(prob, A, layout, method, step, rtol_, atol, eps, base_scale, xmax,
                 "full" if mode == "full" else "fast->full", common)


def _gather(A_t: np.ndarray, prob: Problem, n0: int, n1: int) -> np.ndarray:
    """Columns [n0, n1) (flat C order over x) of T[m..., n...] as an (M, n1 - n0) array, for any strides."""
    if not prob.in_shape:
        return np.asarray(A_t).reshape(prob.M, 1)
    idx = np.unravel_index(np.arange(n0, n1), prob.in_shape)
    key: tuple[Any, ...] = (Ellipsis, *idx)
    return A_t[key].reshape(prob.M, n1 - n0)


def _full(prob: Problem, A: np.ndarray, layout: str, method: str, step: Any, rtol: float, atol: float | None,
          eps: float, base_scale: float, xmax: float, mode: str, common: dict) -> CheckReport:
    scheme = _scheme(method, True)
    jdt, _, _ = prob._types(scheme)
    M, N = prob.M, prob.N
    ratio = np.zeros((M, N), np.float32)
    h = prob.steps(scheme, step)
    prob._check_steps(scheme, h)
    # The Jacobian's own size bounds the scratch: FD blocks (values, errors) and the comparison's temporaries.
    jbytes = M * N * jdt.itemsize
    B = prob.plan(scheme, jbytes, "finite-difference Jacobian (compared block by block)") if N and M else 1
    B = int(max(1, min(B, max(jbytes // 2, 8 << 20) // max(1, M * 96))))
    A_t = tensor_view(A, layout, prob.out_shape, prob.in_shape)
    Jb = np.zeros((M, B), jdt)
    Eb = np.zeros((M, B), np.float64 if jdt.itemsize >= 8 else np.float32)
    moff_b = np.arange(M, dtype=np.int64) * B
    noff_b = np.arange(N, dtype=np.int64) % B  # blocks start at multiples of B: column n - n0
    state = dict(n_failed=0, max_abs=0.0, max_rel=0.0, atol=0.0 if atol is None else float(atol), nonfinite=0)
    heap: list[tuple[float, int, CheckEntry]] = []
    ctype = np.result_type(A.dtype, jdt, np.float64)

    def sink(n0: int, n1: int, Y: np.ndarray, sch: Any = scheme, hh: np.ndarray = h) -> np.ndarray:
        return prob.combine(sch, Y, hh, moff_b, noff_b, n0, n1, Jb, Eb)

    def compare(n0: int, n1: int) -> None:
        b = n1 - n0
        Nm = Jb[:, :b].astype(ctype)
        err = Eb[:, :b]
        An = _gather(A_t, prob, n0, n1).astype(ctype)
        absN = np.abs(Nm)
        assert prob.stats is not None
        st = prob.stats[n0:n1]
        if atol is None:
            colmax = np.max(absN, axis=0, initial=0.0, where=np.isfinite(absN))
            scale = np.maximum(np.maximum(colmax, base_scale), np.maximum(st[:, 2], st[:, 1] / xmax))
            atol_n = eps ** (2 / 3) * scale
            state["atol"] = max(state["atol"], float(atol_n.max(initial=0.0)))
        else:
            atol_n = np.full(b, float(atol))
        diff = np.abs(An - Nm)
        tol = atol_n[None, :] + rtol * absN + ERR_FACTOR * err
        ok = (diff <= tol) & np.isfinite(An) & np.isfinite(Nm)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(diff == 0, 0.0, diff / tol)
            r = np.where(np.isnan(r) | ~(ok | np.isfinite(diff)), np.inf, r)
            denom = np.maximum(np.abs(An), absN)
            rel = np.where(denom > 0, diff / np.where(denom > 0, denom, 1.0), np.where(diff > 0, np.inf, 0.0))
        ratio[:, n0:n1] = r
        state["nonfinite"] += int(Nm.size - np.count_nonzero(np.isfinite(Nm)))
        state["n_failed"] += int(ok.size - np.count_nonzero(ok))
        if diff.size:
            state["max_abs"] = max(state["max_abs"], float(np.max(diff)))
            state["max_rel"] = max(state["max_rel"], float(np.max(rel)))
        flat = r.reshape(-1)
        k = min(N_WORST, flat.size)
        if k:
            top = np.argpartition(-flat, k - 1)[:k] if flat.size > k else np.arange(flat.size)
            for i in top:
                m, bb = divmod(int(i), b)
                gidx = m * N + n0 + bb  # position in T[m..., n...] (ties: the first one wins)
                entry = (float(flat[i]), -gidx)
                item = (entry[0], entry[1], _entry(prob, gidx, An[m, bb], Nm[m, bb], diff[m, bb], rel[m, bb],
                                                   tol[m, bb], bool(ok[m, bb])))
                if len(heap) < N_WORST:
                    heapq.heappush(heap, item)  # type: ignore[misc]
                elif (item[0], item[1]) > (heap[0][0], heap[0][1]):
                    heapq.heapreplace(heap, item)  # type: ignore[misc]

    if N and M:
        prob.run(scheme, h, B, sink, adapt=step is None, after=compare)
    worst = [e for _, _, e in sorted(heap, key=lambda t: (-t[0], -t[1]))]
    n_failed = int(state["n_failed"])
    if state["nonfinite"]:
        warnings.warn(f"tj.check: f returned non-finite values; {int(state['nonfinite'])} finite-difference "
                      "entries are not finite (they fail the check)", NonFiniteWarning, stacklevel=4)
    return CheckReport(
        passed=n_failed == 0,
        max_abs_err=float(state["max_abs"]),
        max_rel_err=float(state["max_rel"]),
        n_evals=prob.n_evals,
        worst=worst,
        atol=float(state["atol"]),
        mode=mode,
        n_failed=n_failed,
        n_checked=M * N,
        error_ratio=ratio.reshape(prob.out_shape + prob.in_shape),
        **common,
    )


def _entry(prob: Problem, gidx: int, a: Any, n: Any, diff: Any, rel: Any, tol: Any, ok: bool) -> CheckEntry:
    P = len(prob.out_shape)
    idx = tuple(int(v) for v in np.unravel_index(gidx, prob.out_shape + prob.in_shape))
    return CheckEntry(out_index=idx[:P], in_index=idx[P:], analytic=_scalar(a), numeric=_scalar(n),
                      abs_err=float(diff), rel_err=float(rel), tol=float(tol), failed=not ok)


@functools.lru_cache(maxsize=64)
def _unit_directions(n: int, size: int, seed: int) -> np.ndarray:
    r = np.random.default_rng(seed).random((n, size)) * 2.0 - 1.0  # sign and magnitude
    u = np.round((0.5 + 0.5 * np.abs(r)) * 1024.0) * np.copysign(1.0 / 1024.0, r)
    u.flags.writeable = False
    return u


def _directions(prob: Problem, n: int, seed: int | None) -> np.ndarray:
    """Random directions with entries ±[0.5, 1] * 2**round(log2(s)) / 2**ceil(log2(sqrt(N)))
    on a 1/1024 grid, s the step scale of tensorjac.fd (relative to |x|, with its floor):
    every entry takes part, the whole step stays as small as one entry's step (in 2-norm),
    and ``x + t * sigma * u`` is exact for power-of-two t."""
    if seed is None:
        u = _unit_directions.__wrapped__(n, prob.N, int(np.random.SeedSequence().generate_state(1)[0]))
    else:
        u = _unit_directions(n, prob.N, int(seed))
    s = prob.default_steps(0.0)  # eps**0 * s: the scale itself, as a power of two
    return u * (s.reshape(1, -1) / 2.0 ** np.ceil(0.5 * np.log2(max(prob.N, 1))))


def _fast(prob: Problem, A: np.ndarray, layout: str, method: str, rtol: float, atol: float | None, eps: float,
          base_scale: float, xmax: float, seed: int | None, n_dir: int, common: dict) -> CheckReport | None:
    """The directional screen; a report when it passes, None when the full comparison must decide."""
    if prob.N == 0 or prob.M == 0:
        return None
    U = _directions(prob, n_dir, seed)
    scheme = _scheme(method, True)
    t = float(np.exp2(np.round(np.log2(prob.eps**scheme.step_power))))
    D, errD, st = prob.directional(scheme, U, t)
    A_t = tensor_view(A, layout, prob.out_shape, prob.in_shape)
    ctype = np.result_type(A.dtype, D.dtype, np.float64)
    Am = np.asarray(A_t, dtype=ctype).reshape(prob.M, prob.N)
    absA = np.abs(Am)
    scale = max(base_scale, float(np.max(st[:, 2], initial=0.0)), float(np.max(st[:, 1], initial=0.0)) / xmax)
    atol_ = eps ** (2 / 3) * scale if atol is None else float(atol)
    Ju = (Am @ U.T).T  # (directions, M)
    diff = np.abs(Ju - D)
    # As strict as one entry at its allowance: a wrong entry must not hide in the sum over
    # the others' allowances (failing the screen only costs the full comparison).
    umax = np.abs(U).max(axis=1, keepdims=True)  # (directions, 1)
    tol = (atol_ + rtol * absA.max(axis=1)[None, :]) * umax + SCREEN_ERR_FACTOR * errD
    if not (diff <= tol).all():  # NaN compares False: non-finite values fall back to the full check
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = np.maximum(np.abs(Ju), np.abs(D))
        rel = np.where(denom > 0, diff / np.where(denom > 0, denom, 1.0), 0.0)
        ratio = np.where(tol > 0, diff / np.where(tol > 0, tol, 1.0), 0.0)
    return CheckReport(
        passed=True,
        max_abs_err=float(diff.max()),
        max_rel_err=float(rel.max()),
        n_evals=prob.n_evals,
        worst=[],
        atol=atol_,
        mode="fast",
        n_failed=0,
        n_checked=int(diff.size),
        error_ratio=ratio.reshape((n_dir,) + prob.out_shape),
        **common,
    )


# ----------------------------------------------------------------------------- Hessians (order=2)


def _unwrap(f: Callable[..., Any]) -> Callable[..., Any]:
    return f


class _Counted:
    """f, counting its evaluations in this process (pickled, e.g. for a process pool, it is f itself)."""

    def __init__(self, f: Callable[..., Any], pos: int, ndim: int, vectorized: bool) -> None:
        self.f, self.pos, self.ndim, self.vectorized = f, pos, ndim, vectorized
        self.__wrapped__ = f  # inspect.signature (argument names in messages) sees f
        self.n = 0

    def __call__(self, *a: Any, **k: Any) -> Any:
        shp: tuple[int, ...] = np.shape(a[self.pos]) if self.pos < len(a) else ()
        self.n += shp[0] if self.vectorized and len(shp) > self.ndim else 1  # a stack: one evaluation per row
        return self.f(*a, **k)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_unwrap, (self.f,))


def _hessian_shape(layout: str, out_shape: tuple[int, ...], in_shape: tuple[int, ...]) -> tuple[int, ...]:
    if layout == "tensor":
        return out_shape + in_shape + in_shape
    N = prod(in_shape)
    return (N, N) if out_shape == () else (prod(out_shape), N, N)


def _read_hessian(A: np.ndarray, layout: str, out_shape: tuple[int, ...], in_shape: tuple[int, ...]) -> np.ndarray:
    """The user's Hessian as a tensor H[m..., n..., k...] (a view where possible); ValueError on a wrong shape."""
    want = _hessian_shape(layout, out_shape, in_shape)
    if A.shape != want:
        squeeze = lambda s: tuple(d for d in s if d != 1)
        if squeeze(A.shape) != squeeze(want):
            fits = [L for L in _HESSIAN_LAYOUTS if squeeze(_hessian_shape(L, out_shape, in_shape)) == squeeze(A.shape)]
            hint = f"; that shape fits layout={fits[0]!r}" if fits else ""
            raise ValueError(
                f"tj.check: the Hessian has shape {A.shape}, but for f: x {in_shape} -> f(x) {out_shape} the "
                f"{layout!r} layout has shape {want}{hint}"
            )
        A = A.reshape(want)  # only size-1 axes differ: the same entries in the same order
    if layout == "tensor":
        return A
    if layout == "matrix":
        return A.reshape(out_shape + in_shape + in_shape)
    # "vec": each group flattened column-major, i.e. its axes reversed, then C order
    P, R = len(out_shape), len(in_shape)
    T = A.reshape(out_shape[::-1] + in_shape[::-1] + in_shape[::-1])
    return T.transpose(tuple(range(P))[::-1] + tuple(range(P, P + R))[::-1] + tuple(range(P + R, P + 2 * R))[::-1])


def _rows(T: np.ndarray, lead: tuple[int, ...], r0: int, r1: int, N: int) -> np.ndarray:
    """Rows [r0, r1) of T[lead..., k...] seen as (prod(lead), N) (C order over lead), for any strides."""
    if not lead:
        return np.asarray(T).reshape(1, N)
    key: tuple[Any, ...] = (*np.unravel_index(np.arange(r0, r1), lead), Ellipsis)
    return T[key].reshape(r1 - r0, N)


def _check_hessian(f: Callable[..., Any], args: tuple[Any, ...], pos: int, H: Any, layout: str, method: str,
                   step: Any, rtol: float | None, atol: float | None, vectorized: bool, num_threads: int | None,
                   executor: Executor | None, progress: bool) -> CheckReport:
    argname = _argname(f, pos, len(args))
    g = f if len(args) == 1 else Partial(f, args, pos)
    with Problem(g, args[pos], what="tj.check", argname=argname) as prob:  # x, f(x) and the shapes
        x, y0 = prob.x, prob.y0
        out_shape, in_shape, M, N = prob.out_shape, prob.in_shape, prob.M, prob.N
        if callable(H):
            try:
                H = H(*[np.array(as_array(a), copy=True) for a in args]) if len(args) > 1 else H(x.copy())
            except Exception as e:
                _annotate(e, "tj.check: raised by the Hessian callable under test")
                raise
    A = as_array(H, "tj.check: the Hessian")
    if A.dtype.kind not in "biufc":
        raise TypeError(f"tj.check: the Hessian has dtype {A.dtype}; expected a numeric array")
    A_t = _read_hessian(A, layout, out_shape, in_shape)
    eps = _eps(x.dtype, y0.dtype, A.dtype)
    rtol_ = float(np.sqrt(eps)) if rtol is None else float(rtol)
    fdt = np.result_type(x.dtype, y0.dtype)
    # fd.hessian refuses (before allocating) what exceeds the budget for its own arrays; add the error ratio
    _config.check_budget((M, N, N), 4 * max(fdt.itemsize, 8) + 4,
                         what="Hessian check (finite-difference Hessian, its error estimate and the error ratio)")
    counted = _Counted(f, pos, x.ndim, vectorized)
    F, E = fd_hessian(counted, *args, wrt=pos, method=method, step=step, vectorized=vectorized,
                      num_threads=num_threads, executor=executor, layout="tensor", return_error=True,
                      progress=progress)
    J = fd_jacobian(counted, *args, wrt=pos, method="central", vectorized=vectorized, num_threads=num_threads,
                    executor=executor) if N and M and atol is None else np.zeros(0)
    P = len(out_shape)
    lead = out_shape + in_shape
    rows = M * N
    Fr, Er = F.reshape(rows, N), E.reshape(rows, N)
    block = max(1, (1 << 18) // max(N, 1))
    finite_max = lambda a: float(np.max(np.abs(a), initial=0.0, where=np.isfinite(a)))
    absA = 0.0
    for r0 in range(0, rows, block):
        absA = max(absA, finite_max(_rows(A_t, lead, r0, min(rows, r0 + block), N)))
    xmax = max(1.0, float(np.max(np.abs(x), initial=0.0)))
    scale = max(absA, finite_max(F), finite_max(y0) / xmax**2, finite_max(J) / xmax)
    atol_ = eps ** (2 / 3) * scale if atol is None else float(atol)
    ctype = np.result_type(A.dtype, F.dtype, np.float64)
    ratio = np.zeros((rows, N), np.float32)
    n_failed, max_abs, max_rel, nonfinite = 0, 0.0, 0.0, 0
    heap: list[tuple[float, int, CheckEntry]] = []
    for r0 in range(0, rows, block):
        r1 = min(rows, r0 + block)
        An = _rows(A_t, lead, r0, r1, N).astype(ctype)
        Nm = Fr[r0:r1].astype(ctype)
        absN = np.abs(Nm)
        diff = np.abs(An - Nm)
        tol = atol_ + rtol_ * absN + ERR_FACTOR * Er[r0:r1]
        ok = (diff <= tol) & np.isfinite(An) & np.isfinite(Nm)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(diff == 0, 0.0, diff / tol)
            r = np.where(np.isnan(r) | ~(ok | np.isfinite(diff)), np.inf, r)
            denom = np.maximum(np.abs(An), absN)
            rel = np.where(denom > 0, diff / np.where(denom > 0, denom, 1.0), np.where(diff > 0, np.inf, 0.0))
        ratio[r0:r1] = r
        nonfinite += int(Nm.size - np.count_nonzero(np.isfinite(Nm)))
        n_failed += int(ok.size - np.count_nonzero(ok))
        if diff.size:
            max_abs = max(max_abs, float(np.max(diff)))
            max_rel = max(max_rel, float(np.max(rel)))
        flat = r.reshape(-1)
        k = min(N_WORST, flat.size)
        top = np.argpartition(-flat, k - 1)[:k] if flat.size > k else np.arange(flat.size)
        for i in top:
            rr, kk = divmod(int(i), N)
            gidx = (r0 + rr) * N + kk  # the position in H[m..., n..., k...] (ties: the first one wins)
            idx = tuple(int(v) for v in np.unravel_index(gidx, lead + in_shape))
            entry = CheckEntry(out_index=idx[:P], in_index=idx[P:], analytic=_scalar(An[rr, kk]),
                               numeric=_scalar(Nm[rr, kk]), abs_err=float(diff[rr, kk]),
                               rel_err=float(rel[rr, kk]), tol=float(tol[rr, kk]), failed=not bool(ok[rr, kk]))
            item = (float(flat[i]), -gidx, entry)
            if len(heap) < N_WORST:
                heapq.heappush(heap, item)  # type: ignore[misc]
            elif (item[0], item[1]) > (heap[0][0], heap[0][1]):
                heapq.heapreplace(heap, item)  # type: ignore[misc]
    if nonfinite:
        warnings.warn(f"tj.check: f returned non-finite values; {nonfinite} finite-difference Hessian entries are "
                      "not finite (they fail the check)", NonFiniteWarning, stacklevel=3)
    return CheckReport(
        passed=n_failed == 0,
        max_abs_err=max_abs,
        max_rel_err=max_rel,
        n_evals=counted.n + 1,  # and the evaluation at x above
        worst=[e for _, _, e in sorted(heap, key=lambda t: (-t[0], -t[1]))],
        rtol=rtol_,
        atol=atol_,
        err_factor=ERR_FACTOR,
        mode="full",
        method=method,
        layout=layout,
        out_shape=out_shape,
        in_shape=in_shape,
        n_failed=n_failed,
        n_checked=M * N * N,
        error_ratio=ratio.reshape(lead + in_shape),
        order=2,
    )
