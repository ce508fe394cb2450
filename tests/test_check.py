"""tj.check, CheckReport and tj.testing: planted errors are caught and named, correct Jacobians pass."""

from __future__ import annotations

import numpy as np
import pytest
import tensorjac as tj
from conftest import (
    CASE_IDS,
    CASES,
    HOLO_CASES,
    LAYOUTS,
    VIEW_KINDS,
    as_view,
    make_args,
    op_of,
    ref_tensor,
    to_layout,
)
from hypothesis import given, settings
from hypothesis import strategies as st


class Wrt:
    """op as a function of argument ``wrt`` alone."""

    def __init__(self, name: str, args: tuple, wrt: int) -> None:
        self.op, self.args, self.wrt = op_of(name), args, wrt

    def __call__(self, z):
        return self.op(*self.args[: self.wrt], z, *self.args[self.wrt + 1 :])


SEEDS = range(30)


@pytest.mark.parametrize("name,wrt", CASES, ids=CASE_IDS)
def test_correct_catalogue_jacobians_never_fail(name, wrt):
    """0 false failures over many random points, in both modes."""
    for seed in SEEDS:
        args = make_args(name, seed=seed)
        J = op_of(name).jacobian(*args, wrt=wrt)
        full = tj.check(Wrt(name, args, wrt), args[wrt], J)
        assert full.passed, f"seed {seed}\n{full}"
        fast = tj.check(Wrt(name, args, wrt), args[wrt], J, mode="fast", seed=seed)
        assert fast.passed and fast.mode == "fast", f"seed {seed}\n{fast}"


@pytest.mark.parametrize("name,wrt", HOLO_CASES[::3])
def test_correct_complex_jacobians_pass(name, wrt):
    for seed in range(3):
        args = make_args(name, dtype=np.complex128, seed=seed)
        J = op_of(name).jacobian(*args, wrt=wrt)
        assert tj.check(Wrt(name, args, wrt), args[wrt], J).passed


@pytest.mark.parametrize("name,wrt", [("inv", 0), ("sandwich", 1), ("tanh", 0), ("det", 0), ("kron", 0)])
def test_correct_float32_jacobians_pass(name, wrt):
    for seed in range(3):
        args = make_args(name, dtype=np.float32, seed=seed)
        J = op_of(name).jacobian(*args, wrt=wrt)
        rep = tj.check(Wrt(name, args, wrt), args[wrt], J)
        assert rep.passed, str(rep)
        assert rep.rtol == pytest.approx(np.sqrt(np.finfo(np.float32).eps))


PLANT = [("inv", 0), ("sandwich", 1), ("matmul", 0), ("kron", 1), ("det", 0), ("norm", 0), ("softplus", 0),
         ("quadratic", 1)]  # fmt: skip


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("name,wrt", PLANT)
def test_planted_error_is_caught_and_named(name, wrt, mode):
    rng = np.random.default_rng(hash((name, wrt)) % 2**32)
    for seed in range(4):
        args = make_args(name, seed=seed)
        J = ref_tensor(name, args, wrt)
        candidates = np.argwhere(np.abs(J) >= 0.05 * np.abs(J).max())
        idx = tuple(int(i) for i in candidates[rng.integers(len(candidates))])
        bad = J.copy()
        bad[idx] *= 1 + 1e-3
        rep = tj.check(Wrt(name, args, wrt), args[wrt], bad, mode=mode)
        assert not rep.passed
        assert rep.n_failed == 1
        P = J.ndim - args[wrt].ndim
        assert (rep.worst[0].out_index, rep.worst[0].in_index) == (idx[:P], idx[P:])
        assert rep.worst[0].failed and rep.worst[0].rel_err == pytest.approx(1e-3, rel=1e-2)
        assert rep.mode == ("full" if mode == "full" else "fast->full")


@settings(max_examples=20, deadline=None)
@given(
    in_shape=st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple),
    out_shape=st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple),
    layout=st.sampled_from(LAYOUTS),
    seed=st.integers(0, 2**16),
)
def test_planted_error_any_shape_any_layout(in_shape, out_shape, layout, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal(out_shape + in_shape) + 0.5
    x = rng.standard_normal(in_shape)
    R = len(in_shape)

    def f(v):  # f = tanh(A . v) elementwise over the outputs: J = (1 - tanh^2)[m] A[m, n]
        return np.tanh(np.tensordot(A, v, axes=R) if R else A * v)

    T = np.asarray((1 - f(x) ** 2).reshape(out_shape + (1,) * R) * A)
    assert tj.check(f, x, to_layout(T, out_shape, in_shape, layout), layout=layout).passed
    idx = tuple(int(rng.integers(s)) for s in T.shape)
    if abs(T[idx]) < max(1e-3 * np.abs(T).max(), 1e-4):  # 1e-3 of it must stand above the FD noise
        return
    bad = T.copy()
    bad[idx] *= 1 + 1e-3
    for mode in ("full", "fast"):
        rep = tj.check(f, x, to_layout(bad, out_shape, in_shape, layout), layout=layout, mode=mode)
        assert not rep.passed
        w = rep.worst[0]
        assert w.out_index + w.in_index == idx


def test_transposed_jacobian_fails():
    rng = np.random.default_rng(5)
    X = make_args("inv")[0]
    J = tj.jacobian(tj.inv, X)
    wrong = np.ascontiguousarray(to_layout(J, (3, 3), (3, 3), "gradient"))  # handed over in the wrong layout
    rep = tj.check(tj.inv, X, wrong)
    assert not rep.passed and rep.n_failed > 0
    assert tj.check(tj.inv, X, wrong, layout="gradient").passed
    # f: R^4 -> R^3 with its 3x4 Jacobian transposed fits no reading of the tensor layout
    A = rng.standard_normal((3, 4))
    with pytest.raises(ValueError, match=r"shape \(4, 3\).*\(3, 4\).*layout='gradient'"):
        tj.check(lambda v: A @ v, np.ones(4), A.T)
    with pytest.raises(ValueError, match="jac has shape"):
        tj.check(lambda v: A @ v, np.ones(4), np.ones((3, 5)))


@pytest.mark.parametrize("kind", VIEW_KINDS)
def test_jacobian_and_x_in_any_memory_layout(kind):
    rng = np.random.default_rng(9)
    W = rng.standard_normal((3, 4))
    X = rng.standard_normal((2, 3))
    J = np.einsum("ik,lj->ijkl", np.eye(2), W)  # d(X @ W) / dX
    for layout in ("tensor", "vec"):
        JL = as_view(to_layout(J, (2, 4), (2, 3), layout), kind)
        assert tj.check(lambda Z: Z @ W, as_view(X, kind), JL, layout=layout).passed
        bad = np.array(JL, order="C")
        bad.reshape(-1)[5] += 1e-3
        assert not tj.check(lambda Z: Z @ W, as_view(X, kind), as_view(bad, kind), layout=layout).passed


def test_size_one_axes_may_differ():
    rng = np.random.default_rng(6)
    A = rng.standard_normal((1, 4))
    assert tj.check(lambda v: A @ v, rng.standard_normal(4), A[0]).passed  # (4,) for (1, 4)
    assert tj.check(lambda v: np.sum(v**2), np.ones((3, 1)), 2 * np.ones(3)).passed


def test_jac_callable_and_layouts():
    X = make_args("inv", seed=3)[0]
    for layout in LAYOUTS:
        rep = tj.check(tj.inv, X, lambda Z, L=layout: tj.jacobian(tj.inv, Z, layout=L), layout=layout)
        assert rep.passed and rep.layout == layout


def test_report_fields_and_counts():
    rng = np.random.default_rng(7)
    W = rng.standard_normal((5, 4))
    x = rng.standard_normal(4)
    f = lambda v: np.sin(W @ v)
    J = np.cos(W @ x)[:, None] * W
    rep = tj.check(f, x, J)
    assert rep.passed and bool(rep) and rep.mode == "full" and rep.method == "richardson"
    assert rep.n_evals == 1 + 12 * 4 and rep.n_checked == 20 and rep.n_failed == 0
    assert rep.out_shape == (5,) and rep.in_shape == (4,)
    eps = np.finfo(np.float64).eps
    assert rep.rtol == pytest.approx(np.sqrt(eps))
    # the noise floor: eps**(2/3) times the problem's scale (max |J| here, or a slightly larger secant slope)
    assert eps ** (2 / 3) * np.abs(J).max() <= rep.atol <= 1.5 * eps ** (2 / 3) * np.abs(J).max()
    assert rep.max_abs_err < 1e-11 and rep.max_rel_err < 1e-9
    assert len(rep.worst) == 10 and rep.worst[0].abs_err / rep.worst[0].tol >= rep.worst[-1].abs_err / rep.worst[-1].tol
    assert rep.raise_if_failed() is rep
    s = str(rep)
    assert "PASSED" in s and "out index" in s
    fast = tj.check(f, x, J, mode="fast")
    assert fast.n_evals == 1 + 2 * 12 and fast.worst == []  # two directions, twelve evaluations each
    vec = tj.check(lambda S: np.sin(S @ W.T), x, J, vectorized=True)
    assert vec.passed and vec.n_evals == 1 + 12 * 4
    central = tj.check(f, x, J, method="central")  # x +- h and x +- 2h: the error estimate is measured
    assert central.passed and central.n_evals == 1 + 4 * 4


def test_fast_mode_costs_o1_evaluations_for_large_inputs():
    n = 256
    rng = np.random.default_rng(8)
    w = rng.standard_normal(n)
    f = lambda v: np.array([np.tanh(w @ v), np.sum(v**2)])
    x = rng.standard_normal(n) / np.sqrt(n)
    J = np.vstack([(1 - np.tanh(w @ x) ** 2) * w, 2 * x])
    fast = tj.check(f, x, J, mode="fast")
    full = tj.check(f, x, J, mode="full")
    assert fast.passed and full.passed
    assert fast.n_evals == 25 and full.n_evals == 1 + 12 * n


def test_failure_raises_mismatch_error_with_the_table():
    A = np.arange(6.0).reshape(2, 3) + 1
    bad = A.copy()
    bad[1, 2] = 7.0
    rep = tj.check(lambda v: A @ v, np.ones(3), bad)
    with pytest.raises(tj.JacobianMismatchError) as info:
        rep.raise_if_failed()
    assert isinstance(info.value, AssertionError) and info.value.report is rep
    msg = str(info.value)
    assert "FAILED" in msg and "[1]" in msg and "[2]" in msg and "FAIL" in msg


def test_assert_jacobian_close():
    A = np.arange(6.0).reshape(2, 3) + 1
    rep = tj.testing.assert_jacobian_close(lambda v: A @ v, np.ones(3), A)
    assert rep.passed
    bad = A.copy()
    bad[1, 2] *= 1 + 1e-3
    with pytest.raises(AssertionError, match=r"FAILED: 1 of 6"):
        tj.testing.assert_jacobian_close(lambda v: A @ v, np.ones(3), bad)
    # keyword arguments reach tj.check
    tj.testing.assert_jacobian_close(lambda v: A @ v, np.ones(3), A.T, layout="gradient", mode="fast")


def test_explicit_tolerances():
    A = np.arange(6.0).reshape(2, 3) + 1
    off = A + 1e-6
    assert not tj.check(lambda v: A @ v, np.ones(3), off).passed
    assert tj.check(lambda v: A @ v, np.ones(3), off, atol=1e-5).passed
    assert tj.check(lambda v: A @ v, np.ones(3), off, rtol=1e-5).passed


def test_nan_from_f_fails_the_check():
    def f(v):  # f[1] is NaN as soon as x[1] moves at all: no stencil avoids it
        y = v.copy()
        y[1] = np.nan if v[1] != 1.0 - 1e-9 else y[1]
        return y

    x = np.array([0.5, 1.0 - 1e-9])
    with pytest.warns(tj.fd.NonFiniteWarning):
        rep = tj.check(f, x, np.eye(2))
    assert not rep.passed
    assert rep.worst[0].in_index == (1,) and rep.worst[0].failed


def test_domain_end_does_not_fail_a_correct_jacobian():
    f = lambda v: np.where(v > 1.0, np.nan, v)  # f(x) finite, the default stencil of x[1] leaves the domain
    x = np.array([0.5, 1.0 - 1e-9])
    for method in tj.fd.METHODS[:4]:
        assert tj.check(f, x, np.eye(2), method=method).passed


def test_zero_jacobian_and_empty():
    assert tj.check(lambda v: np.zeros(2), np.ones(3), np.zeros((2, 3))).passed
    assert tj.check(lambda v: v * 0.0 + 1.0, np.ones(3), 1e-17 * np.eye(3)).passed  # roundoff-level entries
    rep = tj.check(lambda v: v, np.ones((0, 2)), np.zeros((0, 2, 0, 2)), mode="fast")
    assert rep.passed and rep.n_checked == 0


def test_check_argument_errors():
    x = np.ones(2)
    with pytest.raises(ValueError, match="mode"):
        tj.check(np.sin, x, np.eye(2), mode="quick")
    with pytest.raises(ValueError, match="method"):
        tj.check(np.sin, x, np.eye(2), method="spline")
    with pytest.raises(ValueError, match="rtol"):
        tj.check(np.sin, x, np.eye(2), rtol=-1.0)
    with pytest.raises(ValueError, match="layout"):
        tj.check(np.sin, x, np.eye(2), layout="diagonal")
    with pytest.raises(TypeError, match="dtype"):
        tj.check(np.sin, x, np.array([["a", "b"], ["c", "d"]]))

    def jac(_):
        raise ZeroDivisionError("in jac")

    with pytest.raises(ZeroDivisionError) as info:
        tj.check(np.sin, x, jac)
    assert "jac callable" in "\n".join(info.value.__notes__)


# ----------------------------------------------------------------------------- plot


def test_plot_heatmap():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    X = make_args("inv")[0]
    bad = tj.jacobian(tj.inv, X).copy()
    bad[1, 2, 0, 1] *= 1.01
    rep = tj.check(tj.inv, X, bad)
    fig = rep.plot()
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert "output" in ax.get_ylabel() and "input" in ax.get_xlabel()
    assert "out [1, 2], in [0, 1]" in ax.get_title()
    img = ax.images[0].get_array()
    assert img.shape == (9, 9)
    assert np.unravel_index(np.argmax(img), img.shape) == (1 * 3 + 2, 0 * 3 + 1)
    fast = tj.check(tj.inv, X, tj.jacobian(tj.inv, X), mode="fast")
    assert isinstance(fast.plot(), Figure)
    empty = tj.check(lambda v: v, np.ones(0), np.zeros((0, 0)))
    assert isinstance(empty.plot(), Figure)


def test_plot_without_matplotlib(monkeypatch):
    import sys

    for mod in ("matplotlib", "matplotlib.figure", "matplotlib.colors"):
        monkeypatch.setitem(sys.modules, mod, None)
    rep = tj.check(np.sin, np.ones(2), np.diag(np.cos(np.ones(2))))
    with pytest.raises(ImportError, match=r"tensorjac\[plot\]"):
        rep.plot()


# ----------------------------------------------------------------------------- issue 9: no false failures


def test_forward_and_backward_near_zero():
    for method in ("forward", "backward", "central", "richardson", "complex"):
        for x in (0.01, 0.05, -0.03, 1e-7, 0.0):
            rep = tj.check(lambda v: np.sum(v**2), np.array(x), np.array(2 * x), method=method)
            assert rep.passed, f"{method} at {x}\n{rep}"


def test_least_squares_residual_at_its_solution():
    """f(c) = (c0 + c1 exp(c2 XD) - YD)^2 at the c that fits the data: f and J are rounding noise."""
    XD = np.linspace(0.0, 2.0, 9)
    c = np.array([0.7, 2.3, -1.1])
    YD = np.round(c[0] + c[1] * np.exp(c[2] * XD), 15)  # data as printed: residuals of ~1e-16

    def f(c):
        return (c[0] + c[1] * np.exp(c[2] * XD) - YD) ** 2

    def jac(c):
        r = c[0] + c[1] * np.exp(c[2] * XD) - YD
        dr = np.stack([np.ones_like(XD), np.exp(c[2] * XD), c[1] * XD * np.exp(c[2] * XD)], axis=1)
        return 2 * r[:, None] * dr

    for method in tj.fd.METHODS:
        rep = tj.check(f, c, jac, method=method)
        assert rep.passed, f"{method}\n{rep}"
        assert tj.check(lambda c: np.sum(f(c)), c, np.sum(jac(c), axis=0), method=method).passed
    bad = jac(c) + 1e-6  # an error well above the noise still fails
    assert not tj.check(f, c, bad).passed


def test_complex_step_at_subnormal_inputs():
    for x in (5e-320, -3e-310, 1e-300, 0.0):
        for f, df in ((lambda v: v**2, lambda v: 2 * v), (np.sin, np.cos), (lambda v: v**3 + v, lambda v: 3 * v**2 + 1)):
            v = np.array([x, 1.5])
            for method in tj.fd.METHODS:
                rep = tj.check(f, v, np.diag(df(v)), method=method)
                assert rep.passed, f"{method} at {x}\n{rep}"


GRID_POINTS = [
    np.array([0.0]), np.array([5e-320]), np.array([-5e-320]), np.array([1e-300]), np.array([1e-10]),
    np.array([-3e-6]), np.array([0.01]), np.array([-0.05]), np.array([1.0]), np.array([-2.5]),
    np.array([1e5]), np.array([-1e80]), np.array([0.0, 0.0, 0.0]), np.array([1e-10, 1.0, 1e5]),
    np.array([0.0, 1e-300, -1.0]), np.array([3e-6, -2e-6, 0.0]), np.array([-7.0, 1e-3, 250.0]),
]  # fmt: skip


def _grid_functions():
    """Smooth maps with closed-form Jacobians, finite on every grid point (holomorphic too)."""
    return [
        ("cubic", lambda v: v**3 - 2 * v, lambda v: np.diag(3 * v**2 - 2)),
        ("arctan", np.arctan, lambda v: np.diag(1 / (1 + v**2))),
        ("log1p(x^2)", lambda v: np.log1p(v**2), lambda v: np.diag(2 * v / (1 + v**2))),
        ("hypot", lambda v: np.sqrt(1 + v**2), lambda v: np.diag(v / np.sqrt(1 + v**2))),
        ("coupled", lambda v: np.array([np.sum(v**2), v[0] * v[-1], np.prod(np.cos(v / (1 + np.abs(v.real)))) * 0 + np.sum(v) ** 2]),
         lambda v: np.vstack([2 * v, np.eye(len(v))[0] * v[-1] + np.eye(len(v))[-1] * v[0], 2 * np.sum(v) * np.ones(len(v))])),
    ]  # fmt: skip


@pytest.mark.parametrize("method", tj.fd.METHODS)
def test_no_false_failures_over_a_grid_of_points(method):
    """Correct Jacobians at tiny, huge, zero, negative, subnormal and mixed-scale points: all pass."""
    failures = []
    for name, f, jac in _grid_functions():
        for x in GRID_POINTS:
            with np.errstate(all="ignore"):
                for mode in ("full", "fast"):
                    rep = tj.check(f, x, jac(x), method=method, mode=mode)
                    if not rep.passed:
                        failures.append(f"{name} at {x} ({mode})\n{rep}")
    assert not failures, "\n\n".join(failures[:3]) + f"\n({len(failures)} failures)"


def test_check_several_arguments_and_step():
    A = np.array([[1.0, 2.0], [0.5, -1.0]])
    x = np.array([0.3, -0.2])
    f = lambda A, x: np.tanh(A @ x)
    t = 1 - np.tanh(A @ x) ** 2
    Jx = t[:, None] * A
    JA = np.einsum("ik,l->ikl", np.diag(t), x)
    assert tj.check(f, A, x, Jx, wrt=1).passed
    assert tj.check(f, A, x, jac=Jx, wrt="x").passed
    reps = tj.check(f, A, x, (JA, Jx), wrt=(0, 1))
    assert reps.passed and bool(reps) and len(reps) == 2
    bad = Jx.copy()
    bad[0, 1] *= 1.001
    reps = tj.check(f, A, x, (JA, bad), wrt=(0, 1))
    assert not reps and reps[0].passed and not reps[1].passed
    with pytest.raises(tj.JacobianMismatchError):
        reps.raise_if_failed()
    assert tj.check(f, A, x, lambda A, x: t[:, None] * A, wrt=1).passed  # jac(*args)
    rep = tj.check(lambda v: v**2, np.array([1.0, 2.0]), np.diag([2.0, 4.0]), method="forward", step=2.0**-20)
    assert rep.passed and rep.n_evals == 1 + 2 * 2
    with pytest.raises(TypeError, match="pass f, its argument"):
        tj.check(np.sin, np.ones(2))


def test_full_mode_progress_bar():
    pytest.importorskip("tqdm")
    assert tj.check(np.sin, np.ones(3), np.diag(np.cos(np.ones(3))), progress=True).passed
