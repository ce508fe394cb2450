"""tj.fd.jacobian: accuracy of every method against closed forms, layouts, dtypes, shapes, memory views."""

from __future__ import annotations

import numpy as np
import pytest
import tensorjac as tj
from conftest import CASE_IDS, CASES, LAYOUTS, VIEW_KINDS, as_view, make_args, op_of, ref_tensor, to_layout
from hypothesis import given, settings
from hypothesis import strategies as st

METHODS = tj.fd.METHODS
# Documented accuracy (module docstring of tensorjac.fd), as max |J - exact| / max(1, max|exact|),
# with a safety margin for the smooth, unit-scale test functions below.
ACCURACY = {"forward": 1e-6, "backward": 1e-6, "central": 1e-9, "richardson": 1e-11, "complex": 4e-15}


def poly(x: np.ndarray, A: np.ndarray) -> np.ndarray:
    """f(x) = A @ (x**3) + 0.5 * x**4 (x a vector) - x * sum(x**2); a polynomial of degree 4."""
    return A @ x**3 + 0.5 * x**4 - x * np.sum(x**2)


def poly_jac(x: np.ndarray, A: np.ndarray) -> np.ndarray:
    n = x.size
    return A * (3 * x**2)[None, :] + np.diag(2 * x**3) - np.eye(n) * np.sum(x**2) - 2 * np.outer(x, x)


@pytest.fixture
def poly_case():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((5, 7))
    A = np.vstack([A, rng.standard_normal((2, 7))])  # 7 x 7 so the elementwise terms fit
    x = rng.uniform(-1.5, 1.5, 7)
    return x, A


@pytest.mark.parametrize("method", METHODS)
def test_polynomial_accuracy(poly_case, method):
    x, A = poly_case
    want = poly_jac(x, A)
    J = tj.fd.jacobian(lambda v: poly(v, A), x, method=method)
    assert J.shape == (7, 7) and J.dtype == np.float64
    scale = max(1.0, np.abs(want).max())
    assert np.abs(J - want).max() <= ACCURACY[method] * scale


def test_complex_step_is_exact_to_machine_precision(poly_case):
    x, A = poly_case
    want = poly_jac(x, A)
    J = tj.fd.jacobian(lambda v: poly(v, A), x, method="complex")
    rel = np.abs(J - want) / np.maximum(np.abs(want), 1e-300)
    big = np.abs(want) > 1e-3 * np.abs(want).max()
    assert rel[big].max() <= 5e-15


def test_quadratic_has_only_rounding_error():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((4, 4))
    x = rng.standard_normal(4)
    for m in ("central", "richardson"):  # no truncation error: eps * |f| / h only
        g, err = tj.fd.jacobian(lambda v: v @ A @ v, x, method=m, return_error=True)
        assert np.abs(g - (A + A.T) @ x).max() <= ACCURACY[m]
        assert np.abs(g - (A + A.T) @ x).max() <= 10 * err.max()


def reference_case(seed: int = 0, n: int = 12):
    """The issue's reference: f(X) = tanh(X @ W) + inv(X), X 12x12, and its closed form."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n)) + n * np.eye(n)
    W = rng.standard_normal((n, n))
    T, Xi = np.tanh(X @ W), np.linalg.inv(X)
    J = np.einsum("ik,ij,lj->ijkl", np.eye(n), 1 - T**2, W) - np.einsum("ik,lj->ijkl", Xi, Xi)
    return (lambda S: np.tanh(S @ W) + np.linalg.inv(S)), X, J


def test_reference_case_richardson_vectorized():
    f, X, want = reference_case()
    J = tj.fd.jacobian(f, X, method="richardson", vectorized=True)
    assert np.abs(J - want).max() <= 1e-11
    # the closed-form ops give the inv part as an independent check
    J_inv = tj.fd.jacobian(tj.inv, X, method="richardson")
    assert np.abs(J_inv - tj.jacobian(tj.inv, X)).max() <= 1e-11


def test_vectorized_and_single_evaluation_agree():
    f, X, _ = reference_case(1, n=6)
    a = tj.fd.jacobian(f, X, method="richardson", vectorized=True)
    b = tj.fd.jacobian(f, X, method="richardson")
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)


@pytest.mark.parametrize("name,wrt", CASES, ids=CASE_IDS)
def test_catalogue_against_independent_references(name, wrt):
    op, args = op_of(name), make_args(name)

    def f(z):
        return op(*args[:wrt], z, *args[wrt + 1 :])

    J = tj.fd.jacobian(f, args[wrt], method="richardson")
    want = ref_tensor(name, args, wrt)
    assert J.shape == want.shape
    assert np.abs(J - want).max() <= 1e-10 * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts_match_the_contract(layout):
    rng = np.random.default_rng(3)
    A = rng.standard_normal((2, 3, 4, 5))  # f: x (4, 5) -> (2, 3), a linear map with J = A
    x = rng.standard_normal((4, 5))
    f = lambda v: np.tensordot(A, v, axes=2)
    J = tj.fd.jacobian(f, x, layout=layout, method="richardson")
    want = to_layout(A, (2, 3), (4, 5), layout)
    assert J.shape == want.shape
    np.testing.assert_allclose(J, want, rtol=1e-11, atol=1e-11)
    J2, err = tj.fd.jacobian(f, x, layout=layout, return_error=True)
    assert err.shape == J2.shape and err.dtype == np.float64 and (err >= 0).all()
    np.testing.assert_allclose(J2, want, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts_against_closed_form_inv(layout):
    X = make_args("inv")[0]
    J = tj.fd.jacobian(tj.inv, X, layout=layout, method="richardson")
    np.testing.assert_allclose(J, tj.jacobian(tj.inv, X, layout=layout), rtol=0, atol=1e-11)


def test_diagonal_layout_is_refused():
    with pytest.raises(ValueError, match="diagonal"):
        tj.fd.jacobian(np.sin, np.ones(3), layout="diagonal")


# ----------------------------------------------------------------------------- dtypes


def test_float32_input():
    x = np.linspace(-1, 1, 6).astype(np.float32)
    for method in ("central", "richardson", "forward"):
        J = tj.fd.jacobian(np.sin, x, method=method)
        assert J.dtype == np.float32
        np.testing.assert_allclose(J, np.diag(np.cos(x.astype(np.float64))), atol=3e-3 if method == "forward" else 5e-4)
    J = tj.fd.jacobian(np.sin, x, method="complex")
    assert J.dtype == np.float32
    np.testing.assert_allclose(J, np.diag(np.cos(x.astype(np.float64))), atol=1e-6)


def test_integer_input_is_float64():
    x = np.arange(4)
    J = tj.fd.jacobian(lambda v: v**2, x, method="richardson")
    assert J.dtype == np.float64
    np.testing.assert_allclose(J, np.diag(2.0 * x), atol=1e-11)
    J = tj.fd.jacobian(lambda v: v**2, [1, 2], method="central")
    np.testing.assert_allclose(J, np.diag([2.0, 4.0]), atol=1e-8)


@pytest.mark.parametrize("method", ["forward", "central", "richardson"])
def test_complex128_holomorphic(method):
    X = make_args("inv", dtype=np.complex128)[0]
    J = tj.fd.jacobian(lambda Z: Z @ Z, X, method=method)
    assert J.dtype == np.complex128
    n = X.shape[0]
    eye = np.eye(n)
    want = np.einsum("ik,lj->ijkl", eye, X) + np.einsum("ik,lj->ijkl", X, eye)  # d(XX)/dX
    np.testing.assert_allclose(J, want, atol={"forward": 1e-6, "central": 1e-8, "richardson": 1e-11}[method])


def test_real_input_complex_output():
    x = np.array([0.3, -0.7])
    J = tj.fd.jacobian(lambda v: np.exp(1j * v), x, method="richardson")
    assert J.dtype == np.complex128
    np.testing.assert_allclose(J, np.diag(1j * np.exp(1j * x)), atol=1e-11)


def test_complex_step_rejects_complex_x_and_real_f():
    with pytest.raises(ValueError, match="needs real x"):
        tj.fd.jacobian(np.sin, np.ones(2, complex), method="complex")
    with pytest.raises(TypeError, match="carry complex input"):
        tj.fd.jacobian(lambda v: np.abs(v), np.ones(2), method="complex")


def test_bad_dtypes():
    with pytest.raises(TypeError, match="x has .*dtype"):
        tj.fd.jacobian(lambda v: v, np.array(["a", "b"]))
    with pytest.raises(TypeError, match="f returned dtype"):
        tj.fd.jacobian(lambda v: np.array(["a"]), np.ones(2))


# ----------------------------------------------------------------------------- shapes and views


@pytest.mark.parametrize("kind", VIEW_KINDS)
def test_memory_views_give_the_same_result(kind):
    rng = np.random.default_rng(4)
    vals = rng.standard_normal((3, 4))
    x = as_view(vals, kind)
    before = x.copy()
    W = rng.standard_normal((4, 2))
    J = tj.fd.jacobian(lambda v: np.tanh(v @ W), x, method="richardson")
    ref = tj.fd.jacobian(lambda v: np.tanh(v @ W), vals.copy(), method="richardson")
    np.testing.assert_array_equal(J, ref)
    np.testing.assert_array_equal(x, before)


def test_zero_d_input_and_output():
    J = tj.fd.jacobian(lambda t: t**3, 2.0, method="richardson")
    assert J.shape == () and abs(J - 12.0) < 1e-11
    J = tj.fd.jacobian(lambda t: np.array([t, t**2]), np.float64(3.0))
    assert J.shape == (2,)
    np.testing.assert_allclose(J, [1.0, 6.0], atol=1e-8)
    g = tj.fd.jacobian(lambda v: np.sum(v**2), np.arange(3.0), layout="gradient", method="richardson")
    np.testing.assert_allclose(g, [0.0, 2.0, 4.0], atol=1e-11)
    for layout in ("matrix", "vec"):
        assert tj.fd.jacobian(lambda t: t**2, 1.0, layout=layout).shape == (1, 1)


def test_zero_size_input_and_output():
    J = tj.fd.jacobian(lambda v: np.array([np.sum(v), 1.0]), np.zeros((0, 3)))
    assert J.shape == (2, 0, 3)
    J, err = tj.fd.jacobian(lambda v: v[:0], np.ones(3), return_error=True, layout="matrix")
    assert J.shape == (0, 3) and err.shape == (0, 3)


@settings(max_examples=25, deadline=None)
@given(
    in_shape=st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple),
    out_shape=st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple),
    layout=st.sampled_from(LAYOUTS),
    seed=st.integers(0, 2**16),
)
def test_any_shapes_linear_map(in_shape, out_shape, layout, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal(out_shape + in_shape)
    x = rng.standard_normal(in_shape)
    R = len(in_shape)
    f = lambda v: np.tensordot(A, v, axes=R) if R else A * v
    # richardson: its large relative steps keep the rounding small even where |x[n]| << |f|
    J = tj.fd.jacobian(f, x, layout=layout, method="richardson")
    np.testing.assert_allclose(J, to_layout(A, out_shape, in_shape, layout), rtol=1e-8, atol=1e-8)


def test_vectorized_chunks_respect_chunk_size():
    sizes = []

    def f(S):
        sizes.append(S.shape[0])
        return np.sin(S) * 2

    x = np.linspace(0, 1, 10)
    J = tj.fd.jacobian(f, x, method="richardson", vectorized=True, chunk_size=7)
    np.testing.assert_allclose(J, np.diag(2 * np.cos(x)), atol=1e-11)
    assert sizes[0] == 1 and max(sizes) <= 7 and sum(sizes) == 1 + 12 * 10
    sizes.clear()
    tj.fd.jacobian(f, x, method="richardson", vectorized=True)
    assert sizes == [1, 120]  # one stack for all perturbed inputs
    sizes.clear()
    tj.fd.jacobian(f, x, method="central", vectorized=True, chunk_size=1)
    assert sizes == [1] * 21


def test_vectorized_f_must_return_a_stack():
    with pytest.raises(ValueError, match="vectorized=True"):
        tj.fd.jacobian(lambda S: np.sum(S), np.ones(3), vectorized=True)
    with pytest.raises(ValueError, match="vectorized=True"):
        tj.fd.jacobian(lambda S: np.sum(S, axis=0) if S.shape[0] > 1 else S, np.ones(3), vectorized=True)


def test_f_changing_output_shape_is_an_error():
    calls = []

    def f(v):
        calls.append(1)
        return np.ones(2) if len(calls) == 1 else np.ones(3)

    with pytest.raises(ValueError, match=r"returned shape \(3,\).*shape \(2,\) was expected"):
        tj.fd.jacobian(f, np.ones(2))


# ----------------------------------------------------------------------------- steps and errors


def test_explicit_step():
    x = np.array([1.0, 2.0])
    J = tj.fd.jacobian(lambda v: v**2, x, method="forward", step=0.5)  # (x+h)^2 - x^2 / h = 2x + h
    np.testing.assert_allclose(J, np.diag(2 * x + 0.5), rtol=1e-14)
    J = tj.fd.jacobian(lambda v: v**2, x, method="backward", step=[0.5, 0.25])
    np.testing.assert_allclose(J, np.diag(2 * x - [0.5, 0.25]), rtol=1e-14)


@pytest.mark.parametrize(
    "step,match",
    [(-1.0, "positive"), (0.0, "positive"), (np.nan, "positive"), (np.ones(3), "broadcast"), ("a", "step")],
)
def test_bad_steps(step, match):
    with pytest.raises((ValueError, TypeError), match=match):
        tj.fd.jacobian(np.sin, np.ones(2), step=step)


def test_step_too_small_for_x():
    with pytest.raises(ValueError, match=r"too small for x\[1\]"):
        tj.fd.jacobian(np.sin, np.array([1.0, 1e20]), step=1e-3)


def test_argument_errors():
    with pytest.raises(ValueError, match="unknown method 'cubic'"):
        tj.fd.jacobian(np.sin, np.ones(2), method="cubic")
    with pytest.raises(TypeError, match="f must be callable"):
        tj.fd.jacobian(3, np.ones(2))
    with pytest.raises(ValueError, match="non-finite entries at x\\[1\\]"):
        tj.fd.jacobian(np.sin, np.array([1.0, np.inf]))
    with pytest.raises(ValueError, match="chunk_size"):
        tj.fd.jacobian(np.sin, np.ones(2), vectorized=True, chunk_size=0)
    with pytest.raises(TypeError, match="executor"):
        tj.fd.jacobian(np.sin, np.ones(2), executor=object())
    with pytest.raises(ValueError, match="num_threads"):
        tj.fd.jacobian(np.sin, np.ones(2), num_threads=0)


@pytest.mark.parametrize("method", ["forward", "central", "richardson", "complex"])
def test_error_estimate_bounds_the_error(method):
    f, X, want = reference_case(2, n=5)
    J, err = tj.fd.jacobian(f, X, method=method, return_error=True)
    actual = np.abs(J - want)
    # the estimate is an order of magnitude, within the factor 10 tj.check applies (plus an eps floor)
    assert (actual <= 10 * err + 1e-15).all()


def test_memory_budget_is_checked_before_evaluating():
    calls = []

    def f(v):
        calls.append(1)
        return np.concatenate([v, v])

    tj.set_memory_budget(1000)
    with pytest.raises(tj.JacobianTooLargeError, match="finite-difference Jacobian"):
        tj.fd.jacobian(f, np.ones(100))
    assert len(calls) == 1  # only f(x), for the output shape


def test_progress_bar_optional(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.warns(UserWarning, match="tqdm"):
        J = tj.fd.jacobian(np.sin, np.ones(3), progress=True)
    np.testing.assert_allclose(J, np.diag(np.cos(np.ones(3))), atol=1e-9)


def test_progress_bar_with_tqdm(capsys):
    pytest.importorskip("tqdm")
    J = tj.fd.jacobian(np.sin, np.ones(3), progress=True)
    np.testing.assert_allclose(J, np.diag(np.cos(np.ones(3))), atol=1e-9)


# ----------------------------------------------------------------------------- issue 9: memory


def _traced_peak(fn):
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        out = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, peak - base


@pytest.mark.parametrize("vectorized", [False, True])
def test_peak_memory_at_most_twice_the_result_plus_f(vectorized):
    """tanh(X @ W), X 48x48: the central-difference Jacobian is 2304 x 2304 float64 (40.5 MiB).

    Derivation of the bound: the result J is allocated once (R bytes); the scratch held at
    once -- perturbed inputs and the outputs awaiting combination -- is at most R by
    design; on top of that only what f allocates during one call (its output and its
    temporaries, measured below on the largest stack f received) and O(M + N) bookkeeping.
    So peak <= 2 R + f's own peak (+ 1 MiB of offsets and statistics)."""
    rng = np.random.default_rng(0)
    n = 48
    X, W = rng.standard_normal((n, n)), rng.standard_normal((n, n)) / n
    sizes = []

    def f(S):
        sizes.append(S.shape[0] if vectorized else 1)
        return np.tanh(S @ W)

    J, peak = _traced_peak(lambda: tj.fd.jacobian(f, X, method="central", vectorized=vectorized))
    R = J.nbytes
    assert R == (n * n) ** 2 * 8
    rows = max(sizes)
    S = np.ones((rows, n, n)) if vectorized else np.ones((n, n))
    _, f_own = _traced_peak(lambda: f(S))
    assert peak <= 2 * R + f_own + (1 << 20), (peak / R, f_own / R)
    # and the values: d tanh(X W)[i, j] / d X[k, l] = delta_ik (1 - tanh^2)[i, j] W[l, j]
    T = np.tanh(X @ W)
    want = np.einsum("ik,ij,lj->ijkl", np.eye(n), 1 - T**2, W)
    assert np.abs(J - want).max() <= 1e-7


def test_check_peak_memory():
    """tj.check holds a float32 error ratio (R / 2) and FD blocks of at most R: <= 2 R + f's own."""
    rng = np.random.default_rng(1)
    n = 40
    X, W = rng.standard_normal((n, n)), rng.standard_normal((n, n)) / n
    T = np.tanh(X @ W)
    J = np.einsum("ik,ij,lj->ijkl", np.eye(n), 1 - T**2, W)
    f = lambda S: np.tanh(S @ W)
    rep, peak = _traced_peak(lambda: tj.check(f, X, J, method="central"))
    assert rep.passed
    _, f_own = _traced_peak(lambda: f(X))
    assert peak <= 2 * J.nbytes + f_own + (1 << 20), peak / J.nbytes


def test_inputs_handed_to_f_are_never_overwritten():
    """f keeps every input (and returns views of them): nothing it holds changes afterwards."""
    kept, snapshots = [], []

    def f(S):
        kept.append(S)  # caches its input
        snapshots.append(S.copy())
        return S[:, :2] * 3.0  # a view-derived output

    x = np.linspace(0.1, 1.0, 6)
    J = tj.fd.jacobian(f, x, vectorized=True, chunk_size=5, method="richardson")
    for a, b in zip(kept, snapshots):
        np.testing.assert_array_equal(a, b)
    want = np.zeros((2, 6))
    want[0, 0] = want[1, 1] = 3.0
    np.testing.assert_allclose(J, want, atol=1e-12)
    kept.clear()
    J = tj.fd.jacobian(lambda v: kept.append(v) or v, x, method="central")  # returns its input
    np.testing.assert_allclose(J, np.eye(6), atol=1e-9)
    assert len({id(v) for v in kept}) == len(kept)


def test_budget_counts_the_scratch_and_names_what_works():
    calls = []

    def f(v):
        calls.append(1)
        return np.concatenate([v, v])

    tj.set_memory_budget(1000)
    with pytest.raises(tj.JacobianTooLargeError) as info:
        tj.fd.jacobian(f, np.ones(100))
    msg = str(info.value)
    assert "GiB" in msg and "tj.vjp(f, ...)/tj.jvp(f, ...)" in msg and "chunk_size=" in msg
    assert "vectorized=False" in msg
    assert len(calls) == 1  # only f(x), for the output shape
    # the result alone fits, the result and one entry's scratch do not
    tj.set_memory_budget(100 * 200 * 8 + 8 * 300 + 100)
    with pytest.raises(tj.JacobianTooLargeError, match="scratch"):
        tj.fd.jacobian(f, np.ones(100))


# ----------------------------------------------------------------------------- issue 9: dtypes


def test_f_changing_its_output_dtype_is_an_error():
    calls = []

    def f(v):
        calls.append(1)
        return np.sin(v) if len(calls) == 1 else np.sin(v).astype(np.float32)

    with pytest.raises(TypeError, match=r"f returned float32 \(.*x\[0\] \+=.*\) but float64 at x"):
        tj.fd.jacobian(f, np.ones(3))


@pytest.mark.parametrize("dt", [">f8", ">c16", ">f4", ">i4"])
def test_big_endian_input(dt):
    x = np.ones(3, dt)
    J = tj.fd.jacobian(np.sin, x, method="central")
    assert J.dtype.isnative
    np.testing.assert_allclose(J, np.diag(np.cos(np.ones(3))), atol=2e-3 if dt == ">f4" else 1e-8)
    J = tj.fd.jacobian(lambda v: np.sin(v).astype(dt if dt != ">i4" else ">f8"), np.ones(3), method="central")
    np.testing.assert_allclose(J, np.diag(np.cos(np.ones(3))), atol=2e-3 if dt == ">f4" else 1e-8)


def test_complex_step_refuses_complex_valued_f():
    x = np.array([0.3, -1.2, 0.7])
    with pytest.raises(ValueError, match="real-valued f"):
        tj.fd.jacobian(lambda v: 1j * v**2, x, method="complex")
    with pytest.raises(ValueError, match="real-valued f"):
        tj.fd.hessian(lambda v: 1j * np.inner(v, v), x, method="complex")
    # the other methods differentiate it: d (i x^2) / dx = 2 i x
    J = tj.fd.jacobian(lambda v: 1j * v**2, x, method="richardson")
    np.testing.assert_allclose(J, np.diag(2j * x), atol=1e-12)


# ----------------------------------------------------------------------------- issue 9: steps


def test_default_step_is_relative_to_x():
    J = tj.fd.jacobian(np.log, 0.001, method="richardson")  # the stencil must not cross 0
    assert abs(J - 1000.0) <= 1e-12 * 1000.0
    for method, tol in (("central", 1e-9), ("forward", 1e-7), ("backward", 1e-7), ("complex", 1e-15)):
        J = tj.fd.jacobian(np.log, 0.001, method=method)
        assert abs(J - 1000.0) <= tol * 1000.0, method
    x = np.array([3e-6, 1e-3, 2.0, 1e5])  # mixed scales: each entry its own step
    J = tj.fd.jacobian(lambda v: v**3, x, method="central")
    np.testing.assert_allclose(np.diag(J), 3 * x**2, rtol=1e-9)


def test_explicit_step_is_used_as_given():
    J = tj.fd.jacobian(lambda v: v**2, np.array([1e-3]), method="forward", step=1e-4)
    np.testing.assert_allclose(J, [[2e-3 + 1e-4]], rtol=1e-9)


# ----------------------------------------------------------------------------- issue 9: several arguments


def test_several_arguments():
    rng = np.random.default_rng(5)
    A = rng.standard_normal((3, 4))
    x = rng.standard_normal(4)

    def f(A, x, scale=2.0):
        return scale * np.tanh(A @ x)

    t = 1 - np.tanh(A @ x) ** 2
    want_x = 2.0 * t[:, None] * A
    want_A = 2.0 * np.einsum("ik,l->ikl", np.diag(t), x)
    np.testing.assert_allclose(tj.fd.jacobian(f, A, x, wrt=1, method="richardson"), want_x, atol=1e-11)
    np.testing.assert_allclose(tj.fd.jacobian(f, A, x, wrt="x", method="richardson"), want_x, atol=1e-11)
    JA, Jx = tj.fd.jacobian(f, A, x, wrt=(0, "x"), method="richardson")
    np.testing.assert_allclose(JA, want_A, atol=1e-11)
    np.testing.assert_allclose(Jx, want_x, atol=1e-11)
    (J1, e1), (J2, e2) = tj.fd.jacobian(f, A, x, wrt=(0, 1), return_error=True)
    assert e1.shape == JA.shape and e2.shape == Jx.shape
    # vectorized: only the argument wrt is stacked
    Jv = tj.fd.jacobian(lambda A, X: 2.0 * np.tanh(X @ A.T), A, x, wrt=1, vectorized=True, method="richardson")
    np.testing.assert_allclose(Jv, want_x, atol=1e-11)
    with pytest.raises(ValueError, match="wrt=2 is out of range"):
        tj.fd.jacobian(f, A, x, wrt=2)
    with pytest.raises(ValueError, match="wrt='y' names no positional argument"):
        tj.fd.jacobian(f, A, x, wrt="y")
    with pytest.raises(TypeError, match="missing the point"):
        tj.fd.jacobian(f)
