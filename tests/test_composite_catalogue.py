"""The composite catalogue (tests/composite_cases.py) through ``tj.jacobian(f, *args)``.

Reference-only tests (run today): the hand closed forms against Richardson
finite differences for two seeds, the finite-difference error estimates, the
catalogue's size and coverage.

Engine tests (skipped until the composite engine exists): every case, every wrt,
every layout, against the finite-difference reference and the closed form, both
converted to the layout with plain numpy (conftest.to_layout); the diagonal
layout for elementwise cases; value_and_jacobian and tuple wrt across the
catalogue; the user's arrays are left untouched.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorjac as tj
from composite_cases import (
    CASE_WRT,
    CASE_WRT_IDS,
    CASES,
    CLOSED_RTOL,
    CLOSED_WRT,
    CLOSED_WRT_IDS,
    FD_RTOL,
    HOLOMORPHIC,
    MAX_ENTRIES,
    assert_close,
    by_name,
    complex_args,
    fd_reference,
    needs_engine,
    partial,
    reference,
)
from conftest import LAYOUTS, fd_tensor, to_layout

# ----------------------------------------------------------------------------- the references themselves (run today)


def test_catalogue_size_and_coverage():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    assert len(CASES) >= 70, len(CASES)
    assert sum(c.closed is not None for c in CASES) >= 25
    for c in CASES:
        args = c.args()
        assert all(0 <= w < len(args) for w in c.wrt), c.name
        assert set(c.diagonal) <= set(c.wrt), c.name
        out = np.asarray(c.f(*args))
        assert out.dtype == np.float64, (c.name, out.dtype)
        assert np.all(np.isfinite(out)), c.name
        for w in c.wrt:
            assert out.size * np.size(args[w]) <= MAX_ENTRIES, (c.name, w)


def test_args_are_reproducible():
    for c in CASES:
        for a, b in zip(c.args(3), c.args(3)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("case", "w"), CLOSED_WRT, ids=CLOSED_WRT_IDS)
def test_closed_form_matches_fd(case, w):
    """The hand closed forms are right: they agree with Richardson differences at two points."""
    for seed in (0, 1):
        out_shape, T_fd, T_cl = reference(case.name, w, seed)
        args = case.args(seed)
        assert T_cl.shape == out_shape + np.shape(args[w])
        assert T_cl.dtype == np.float64
        assert_close(T_cl, T_fd, FD_RTOL)


@pytest.mark.parametrize(("case", "w"), CASE_WRT, ids=CASE_WRT_IDS)
def test_fd_reference_is_accurate(case, w):
    """Richardson's own error estimate is far below the tolerance the engine is held to."""
    args = case.args()
    J, err = tj.fd.jacobian(partial(case.f, args, w), args[w], method="richardson", return_error=True)
    scale = max(float(np.max(np.abs(J), initial=0.0)), 1.0)
    assert float(np.max(err, initial=0.0)) <= 0.1 * FD_RTOL * scale, case.name
    np.testing.assert_array_equal(J, reference(case.name, w)[1])  # the cached reference is this one


def test_seed_errata():
    """The printed answers the seeds get wrong, checked by finite differences."""
    # tutorial: d(2x^2 + 4y) = (4x, 4), not (4x + 4y, 2x^2 + 4)
    f = lambda x, y: 2 * x**2 + 4 * y
    x, y = np.array(0.8), np.array(-1.3)
    assert abs(fd_reference(f, (x, y), 0) - 4 * x) < 1e-9
    assert abs(fd_reference(f, (x, y), 1) - 4.0) < 1e-9
    assert abs(fd_reference(f, (x, y), 0) - (4 * x + 4 * y)) > 1
    # tutorial exercise 10: the ridge gradient keeps lambda
    rng = np.random.default_rng(5)
    X, yv, w, lam = rng.standard_normal((6, 3)), rng.standard_normal(6), rng.standard_normal(3), 2.5
    g = fd_reference(lambda w: np.sum((X @ w - yv) ** 2) + lam * np.sum(w**2), (w,), 0)
    np.testing.assert_allclose(g, 2 * X.T @ (X @ w - yv) + 2 * lam * w, rtol=1e-8)
    assert np.max(np.abs(g - (2 * X.T @ (X @ w - yv) + 2 * w))) > 0.1
    # lecture summary: -2 X^T (Y - XA) is d/dA (tensor layout), -2 (Y - XA) A^T is d/dX
    X, Y, A = rng.standard_normal((5, 3)), rng.standard_normal((5, 2)), rng.standard_normal((3, 2))
    L = lambda X, Y, A: np.trace((Y - X @ A).T @ (Y - X @ A))
    np.testing.assert_allclose(fd_reference(L, (X, Y, A), 2), -2 * X.T @ (Y - X @ A), rtol=1e-8)
    np.testing.assert_allclose(fd_reference(L, (X, Y, A), 0), -2 * (Y - X @ A) @ A.T, rtol=1e-8)


# ----------------------------------------------------------------------------- the engine


def _fresh(case, seed=0):
    """Fresh arguments and pristine copies, to check the engine does not modify them."""
    args = case.args(seed)
    return args, tuple(np.array(a, copy=True) for a in args)


def _unchanged(args, copies):
    for a, c in zip(args, copies):
        np.testing.assert_array_equal(a, c)


@needs_engine
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("case", "w"), CASE_WRT, ids=CASE_WRT_IDS)
def test_engine_matches_references(case, w, layout):
    args, copies = _fresh(case)
    out_shape, T_fd, T_cl = reference(case.name, w)
    in_shape = np.shape(args[w])
    J = tj.jacobian(case.f, *args, wrt=w, layout=layout)
    assert isinstance(J, np.ndarray)
    assert J.dtype == np.float64
    assert_close(J, to_layout(T_fd, out_shape, in_shape, layout), FD_RTOL)
    if T_cl is not None:
        assert_close(J, to_layout(T_cl, out_shape, in_shape, layout), CLOSED_RTOL)
    _unchanged(args, copies)


DIAG_WRT = [(c, w) for c in CASES for w in c.diagonal]


@needs_engine
@pytest.mark.parametrize(("case", "w"), DIAG_WRT, ids=[f"{c.name}-wrt{w}" for c, w in DIAG_WRT])
def test_engine_diagonal_layout(case, w):
    args, _ = _fresh(case)
    out_shape, T_fd, T_cl = reference(case.name, w)
    in_shape = np.shape(args[w])
    J = tj.jacobian(case.f, *args, wrt=w, layout="diagonal")
    assert J.shape == in_shape
    ref = T_cl if T_cl is not None else T_fd
    assert_close(J, to_layout(ref, out_shape, in_shape, "diagonal"), CLOSED_RTOL if T_cl is not None else FD_RTOL)


@needs_engine
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_engine_value_and_tuple_wrt(case):
    """value_and_jacobian with every wrt at once: the value is f's, each J is the single-wrt one."""
    args, copies = _fresh(case)
    calls = []

    def counted(*a):
        calls.append(1)
        return case.f(*a)

    value, Js = tj.value_and_jacobian(counted, *args, wrt=case.wrt)
    assert len(calls) == 1, "value_and_jacobian evaluates f once"
    want = case.f(*case.args())
    assert type(value) is np.ndarray or np.isscalar(value), type(value)
    np.testing.assert_allclose(value, want, rtol=1e-13, atol=1e-13)
    assert isinstance(Js, tuple) and len(Js) == len(case.wrt)
    for w, J in zip(case.wrt, Js):
        out_shape, T_fd, T_cl = reference(case.name, w)
        assert_close(J, T_cl if T_cl is not None else T_fd, CLOSED_RTOL if T_cl is not None else FD_RTOL)
    _unchanged(args, copies)


@needs_engine
@pytest.mark.parametrize(("case", "w"), CLOSED_WRT, ids=CLOSED_WRT_IDS)
def test_engine_second_point(case, w):
    """Another point (seed 1): catches Jacobians that are right at one point by accident."""
    args = case.args(1)
    _, _, T_cl = reference(case.name, w, 1)
    assert_close(tj.jacobian(case.f, *args, wrt=w), T_cl, CLOSED_RTOL)


@needs_engine
@pytest.mark.parametrize(("case", "w"), CLOSED_WRT, ids=CLOSED_WRT_IDS)
def test_engine_float32_arguments(case, w):
    """float32 arguments: the Jacobian's dtype is the promotion of float32 and f's output dtype
    (float32 when f keeps everything float32), and its values match the float64 closed form."""
    args = tuple(a.astype(np.float32) if np.asarray(a).dtype == np.float64 else a for a in case.args())
    J = tj.jacobian(case.f, *args, wrt=w)
    assert J.dtype == np.result_type(np.float32, np.asarray(case.f(*args)).dtype)
    _, _, T_cl = reference(case.name, w)
    assert_close(J.astype(np.float64), T_cl, 2e-3)


HOLO_WRT = [(by_name(n), w) for n in HOLOMORPHIC for w in by_name(n).wrt]


def test_holomorphic_list_is_valid():
    for name in HOLOMORPHIC:
        case = by_name(name)
        value = np.asarray(case.f(*complex_args(case)))
        assert value.dtype == np.complex128, name
        assert np.all(np.isfinite(value)), name


@needs_engine
@pytest.mark.parametrize(("case", "w"), HOLO_WRT, ids=[f"{c.name}-wrt{w}" for c, w in HOLO_WRT])
def test_engine_complex_holomorphic(case, w):
    """Complex arguments through holomorphic operations: the complex derivative (no conjugation),
    against central differences with a real step (the complex derivative of a holomorphic f)."""
    args = complex_args(case)
    J = tj.jacobian(case.f, *args, wrt=w)
    want = fd_tensor(case.f, args, w, h=1e-6)
    assert J.dtype == np.complex128
    assert_close(J, want, 1e-6)
