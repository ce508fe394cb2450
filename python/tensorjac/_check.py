"""``tj.check``: is a hand-derived Jacobian right?  Compared with finite differences.

See :func:`check` for the tolerances and the two modes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._layout import LAYOUTS, layout_placement
from .fd import METHODS, Problem, _annotate, _scheme, check_layout, format_index, tensor_view

__all__ = ["CheckEntry", "CheckReport", "JacobianMismatchError", "check"]

ERR_FACTOR = 10.0  # safety factor on the FD error estimate
# The screen may be strict: failing it only costs the full comparison.  Its
# error estimate (the previous Richardson level's error) is conservative already.
SCREEN_ERR_FACTOR = 1.0
N_WORST = 10


class JacobianMismatchError(AssertionError):
    """The Jacobian under test disagrees with finite differences; ``.report`` has the details."""

    def __init__(self, report: CheckReport) -> None:
        super().__init__(str(report))
        self.report = report


@dataclass(frozen=True)
class CheckEntry:
    """One entry ``T[out_index, in_index]`` of the compared Jacobians."""

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
    """Outcome of :func:`check`. ``print(report)`` shows a table of the worst entries."""

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
    # |analytic - numeric| / tolerance over T[m..., n...] (full) or over
    # (direction, m...) (fast mode that passed); for plot().
    error_ratio: np.ndarray | None = field(default=None, repr=False)

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
            f"f: x {shp(self.in_shape)} -> f(x) {shp(self.out_shape)}; Jacobian layout {self.layout!r}",
            f"max abs err {self.max_abs_err:.3e}   max rel err {self.max_rel_err:.3e}   "
            f"rtol {self.rtol:.2e}   atol {self.atol:.2e}   (+ {self.err_factor:g} x FD error estimate)",
        ]
        shown = [e for e in self.worst if e.failed] if not self.passed else self.worst[:3]
        if shown:
            lines.append("worst entries, by |analytic - numeric| / tol:")
            head = ("out index", "in index", "analytic", "numeric", "abs err", "rel err", "tol", "result")
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
        """Heatmap of log10(|analytic - numeric| / tol) over the matrix layout; returns the Figure.

        Rows are the outputs m and columns the inputs n, both flattened in C
        order, with lines between the blocks of the leading axes so a wrong
        block stands out.  Values above 0 fail.  Needs matplotlib
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
        else:
            data = ratio.reshape(M, -1)
            xlabel = f"input entry n of x {self.in_shape} (C order)"
            col_shape = self.in_shape
        ylabel = f"output entry m of f(x) {self.out_shape} (C order)"
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
        for shape, line in ((self.out_shape, ax.axhline), (col_shape, ax.axvline)):
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


def _eps(*dts: np.dtype) -> float:
    e = np.finfo(np.float64).eps
    for dt in dts:
        if dt.kind in "fc":
            e = max(e, np.finfo(dt).eps)
    return float(e)


def _read_jacobian(A: np.ndarray, layout: str, out_shape: tuple[int, ...], in_shape: tuple[int, ...]) -> np.ndarray:
    """The user's Jacobian as T[m..., n...]; ValueError when its shape fits no reading of the layout."""
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
    return tensor_view(A, layout, out_shape, in_shape)


def check(
    f: Callable[..., Any],
    x: Any,
    jac: Any,
    *,
    layout: str = "tensor",
    mode: str = "full",
    method: str = "richardson",
    rtol: float | None = None,
    atol: float | None = None,
    vectorized: bool = False,
    num_threads: int | None = None,
    executor: Executor | None = None,
    seed: int | None = 0,
    directions: int = 2,
) -> CheckReport:
    """Compare a Jacobian with finite differences of ``f`` at ``x``.

    ``jac`` is the Jacobian in ``layout`` (see LAYOUTS.md), as an array or a
    callable ``jac(x)`` returning it.  ``mode="full"`` compares every entry;
    ``mode="fast"`` screens with ``directions`` random directional derivatives
    (O(1) evaluations of f, directions drawn from ``seed``) and falls back to
    the full comparison only when the screen fails.  ``vectorized``,
    ``num_threads`` and ``executor`` are passed to the finite-difference
    engine (see ``tj.fd.jacobian``).  Returns a :class:`CheckReport`; call
    ``.raise_if_failed()`` to turn a failure into an AssertionError.

    Tolerances.  Entry ``T[m, n]`` of the user's Jacobian (``analytic``) passes
    against the finite-difference value (``numeric``) when

        |analytic - numeric| <= atol + rtol * |numeric| + 10 * err[m, n]

    where ``err`` is the finite-difference engine's per-entry error estimate (see
    ``tensorjac.fd``).  With ``eps`` the unit roundoff of the coarsest dtype
    involved (x, f(x) and the given Jacobian), the defaults are

    * ``rtol = sqrt(eps)``: 1.5e-8 for float64, 3.5e-4 for float32;
    * ``atol = eps**(2/3) * scale``: 3.7e-11 * scale for float64, where ``scale``
      is the largest ``|numeric|`` (in fast mode the largest ``|analytic|``), or
      ``max|f(x)| / max(1, max|x|)`` if that is larger: the noise floor of entries
      that are zero.

    Mode "fast" first compares ``J @ u`` with the directional finite difference
    along ``directions`` (default 2) random directions u, entries
    ``±[0.5, 1] * max(|x|, 1) / sqrt(N)`` rounded to powers of two so that every
    input entry takes part.  That costs ``1 + directions * K`` evaluations of f
    (K = 6 for Richardson) whatever the size of x.  The screen is strict: it
    passes only if every directional value is within what a single entry at its
    allowance could explain, ``(atol + rtol * max_n |J[m, n]|) * max|u| + err``
    (err: the directional estimate, which for Richardson is conservative).
    Failing the screen only costs the full comparison, which then names the
    wrong entries, so a correct Jacobian whose entries all carry small errors
    may take the slow path.  Near the FD noise floor (entries below ~1e-8 of
    f's scale) the screen can miss an error that the full mode, comparing each
    entry with its own tolerance, would catch.
    """
    layout = check_layout(layout)
    if mode not in ("full", "fast"):
        raise ValueError(f"tj.check: mode must be 'full' or 'fast', got {mode!r}")
    if method not in METHODS:
        raise ValueError(f"tj.check: unknown method {method!r}; expected one of {', '.join(METHODS)}")
    for name, v in (("rtol", rtol), ("atol", atol)):
        if v is not None and not (isinstance(v, (int, float, np.floating)) and np.isfinite(v) and v >= 0):
            raise ValueError(f"tj.check: {name} must be a finite number >= 0 or None, got {v!r}")
    if isinstance(directions, bool) or not isinstance(directions, int) or directions < 1:
        raise ValueError(f"tj.check: directions must be a positive int, got {directions!r}")
    with Problem(
        f, x, vectorized=vectorized, num_threads=num_threads, executor=executor, what="tj.check"
    ) as prob:
        if callable(jac):
            try:
                jac = jac(prob.x.copy())
            except Exception as e:
                _annotate(e, "tj.check: raised by the jac callable under test")
                raise
        A = np.asarray(jac)
        if A.dtype.kind not in "biufc":
            raise TypeError(f"tj.check: jac has dtype {A.dtype}; expected a numeric array")
        A_t = _read_jacobian(A, layout, prob.out_shape, prob.in_shape)
        eps = _eps(prob.x.dtype, prob.y0.dtype, A.dtype)
        rtol_ = float(np.sqrt(eps)) if rtol is None else float(rtol)
        y_scale = float(np.max(np.abs(prob.y0), initial=0.0)) / max(1.0, float(np.max(np.abs(prob.x), initial=0.0)))
        common = dict(method=method, layout=layout, out_shape=prob.out_shape, in_shape=prob.in_shape,
                      rtol=rtol_, err_factor=ERR_FACTOR)
        if mode == "fast":
            report = _fast(prob, A_t, method, rtol_, atol, eps, y_scale, seed, directions, common)
            if report is not None:
                return report
        return _full(prob, A_t, method, rtol_, atol, eps, y_scale, "full" if mode == "full" else "fast->full", common)


def _full(prob: Problem, A_t: np.ndarray, method: str, rtol: float, atol: float | None, eps: float,
          y_scale: float, mode: str, common: dict) -> CheckReport:
    N_t, err = prob.jacobian(method, None, "tensor", True)
    assert err is not None
    ctype = np.result_type(A_t.dtype, N_t.dtype, np.float64)
    A = A_t.astype(ctype)
    Nm = N_t.astype(ctype)
    absN = np.abs(Nm)
    scale = max(float(np.max(absN, initial=0.0, where=np.isfinite(absN))), y_scale)
    atol_ = eps ** (2 / 3) * scale if atol is None else float(atol)
    diff = np.abs(A - Nm)
    tol = atol_ + rtol * absN + ERR_FACTOR * err
    ok = (diff <= tol) & np.isfinite(A) & np.isfinite(Nm)  # non-finite entries fail
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / tol)
        ratio = np.where(ok | np.isfinite(diff), ratio, np.inf)
        ratio = np.where(np.isnan(ratio), np.inf, ratio)
        denom = np.maximum(np.abs(A), absN)
        rel = np.where(denom > 0, diff / np.where(denom > 0, denom, 1.0), np.where(diff > 0, np.inf, 0.0))
    n_failed = int(ok.size - np.count_nonzero(ok))
    worst = _worst(ratio, A, Nm, diff, rel, tol, ok, prob.out_shape)
    return CheckReport(
        passed=n_failed == 0,
        max_abs_err=float(np.max(diff, initial=0.0)) if diff.size else 0.0,
        max_rel_err=float(np.max(rel, initial=0.0)) if rel.size else 0.0,
        n_evals=prob.n_evals,
        worst=worst,
        atol=atol_,
        mode=mode,
        n_failed=n_failed,
        n_checked=int(ok.size),
        error_ratio=ratio,
        **common,
    )


def _worst(ratio: np.ndarray, A: np.ndarray, Nm: np.ndarray, diff: np.ndarray, rel: np.ndarray,
           tol: np.ndarray, ok: np.ndarray, out_shape: tuple[int, ...]) -> list[CheckEntry]:
    flat = ratio.reshape(-1)
    k = min(N_WORST, flat.size)
    if k == 0:
        return []
    top = np.argpartition(-flat, k - 1)[:k] if flat.size > k else np.arange(flat.size)
    top = top[np.lexsort((top, -flat[top]))]  # worst first; ties by position
    P = len(out_shape)
    out: list[CheckEntry] = []
    for i in top:
        idx = tuple(int(v) for v in np.unravel_index(int(i), ratio.shape))
        out.append(CheckEntry(
            out_index=idx[:P], in_index=idx[P:], analytic=_scalar(A[idx]), numeric=_scalar(Nm[idx]),
            abs_err=float(diff[idx]), rel_err=float(rel[idx]), tol=float(tol[idx]), failed=not bool(ok[idx]),
        ))  # fmt: skip
    return out


@functools.lru_cache(maxsize=64)
def _unit_directions(n: int, size: int, seed: int) -> np.ndarray:
    r = np.random.default_rng(seed).random((n, size)) * 2.0 - 1.0  # sign and magnitude
    u = np.round((0.5 + 0.5 * np.abs(r)) * 1024.0) * np.copysign(1.0 / 1024.0, r)
    u.flags.writeable = False
    return u


def _directions(prob: Problem, n: int, seed: int | None) -> np.ndarray:
    """Random directions with entries ±[0.5, 1] * 2**round(log2(max(|x|, 1))) / 2**ceil(log2(sqrt(N)))
    on a 1/1024 grid: every entry takes part, the whole step stays as small as one
    entry's step (in 2-norm), and ``x + t * sigma * u`` is exact for power-of-two t."""
    if seed is None:
        u = _unit_directions.__wrapped__(n, prob.N, int(np.random.SeedSequence().generate_state(1)[0]))
    else:
        u = _unit_directions(n, prob.N, int(seed))
    scale = np.exp2(np.round(np.log2(np.maximum(np.abs(prob.x), 1.0).astype(np.float64)))).reshape(1, -1)
    return u * (scale / 2.0 ** np.ceil(0.5 * np.log2(max(prob.N, 1))))


def _fast(prob: Problem, A_t: np.ndarray, method: str, rtol: float, atol: float | None, eps: float,
          y_scale: float, seed: int | None, n_dir: int, common: dict) -> CheckReport | None:
    """The directional screen; a report when it passes, None when the full comparison must decide."""
    if prob.N == 0 or prob.M == 0:
        return None
    U = _directions(prob, n_dir, seed)
    scheme = _scheme(method)
    t = float(np.exp2(np.round(np.log2(prob.eps**scheme.step_power))))
    D, errD = prob.directional(scheme, U, t)
    ctype = np.result_type(A_t.dtype, D.dtype, np.float64)
    A = np.asarray(A_t, dtype=ctype).reshape(prob.M, prob.N)
    absA = np.abs(A)
    scale = max(float(np.max(absA, initial=0.0)), y_scale)
    atol_ = eps ** (2 / 3) * scale if atol is None else float(atol)
    Ju = (A @ U.T).T  # (directions, M)
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
