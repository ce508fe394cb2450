"""tj.kron_matvec: (A1 ⊗ ... ⊗ Ak) x by mode products, against np.kron."""

from __future__ import annotations

from functools import reduce

import numpy as np
import pytest
import tensorjac as tj
from conftest import VIEW_KINDS, as_view, assert_close, tol
from hypothesis import given, settings
from hypothesis import strategies as st

HYP = settings(max_examples=40, deadline=None, derandomize=True, database=None)


def _rand(rng, shape, dtype=np.float64):
    x = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def _ref(factors, x):
    K = reduce(np.kron, [np.asarray(f, dtype=np.complex128) for f in factors])
    return np.asarray(x, dtype=np.complex128) @ K.T


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
@pytest.mark.parametrize("batch", [(), (5,), (2, 3)])
@pytest.mark.parametrize("dims", [[(3, 4)], [(2, 3), (4, 2)], [(3, 2), (2, 4), (5, 3)], [(2, 2)] * 4])
def test_matches_np_kron(dims, batch, dtype):
    rng = np.random.default_rng(len(dims))
    fs = [_rand(rng, d, dtype) for d in dims]
    C = int(np.prod([c for _, c in dims]))
    x = _rand(rng, batch + (C,), dtype)
    got = tj.kron_matvec(fs, x)
    assert got.dtype == dtype and got.shape == batch + (int(np.prod([r for r, _ in dims])),)
    want = _ref(fs, x)
    assert_close(got, want if dtype == np.complex128 else want.real, **tol(dtype))


@HYP
@given(dims=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=3),
       batch=st.lists(st.integers(0, 3), max_size=2).map(tuple),
       kx=st.sampled_from(VIEW_KINDS), kf=st.sampled_from(VIEW_KINDS),
       seed=st.integers(0, 2**31))  # fmt: skip
def test_random_shapes_and_views(dims, batch, kx, kf, seed):
    rng = np.random.default_rng(seed)
    fs = [rng.standard_normal(d) for d in dims]
    x = rng.standard_normal(batch + (int(np.prod([c for _, c in dims])),))
    got = tj.kron_matvec([as_view(f, kf) for f in fs], as_view(x, kx))
    assert_close(got, _ref(fs, x).real, rtol=1e-12)


def test_tuple_generator_and_mixed_dtypes():
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((3, 2)), rng.standard_normal((2, 3))
    x = rng.standard_normal(6)
    want = x @ np.kron(A, B).T
    assert_close(tj.kron_matvec((A, B), x), want, rtol=1e-12)
    assert_close(tj.kron_matvec((f for f in (A, B)), x), want, rtol=1e-12)
    f32 = [A.astype(np.float32), B.astype(np.float32)]
    assert tj.kron_matvec(f32, x.astype(np.float32)).dtype == np.float32
    assert tj.kron_matvec([A.astype(np.float32), B], x.astype(np.float32)).dtype == np.float64
    xi = np.arange(6)
    got = tj.kron_matvec([np.eye(3, 2, dtype=int), np.ones((2, 3), int)], xi)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, xi @ np.kron(np.eye(3, 2), np.ones((2, 3))).T)
    assert tj.kron_matvec([A, B], np.zeros((0, 6))).shape == (0, 6)


def test_larger_case_like_the_benchmark():
    rng = np.random.default_rng(2)
    fs = [rng.standard_normal((16, 16)) for _ in range(3)]
    x = rng.standard_normal((8, 4096))
    assert_close(tj.kron_matvec(fs, x), x @ reduce(np.kron, fs).T, rtol=1e-12)


def test_errors_name_both_shapes():
    A, B = np.ones((3, 2)), np.ones((4, 5))
    with pytest.raises(ValueError, match=r"column counts \(2, 5\).*multiply to 10.*x has shape \(7, 11\)"):
        tj.kron_matvec([A, B], np.ones((7, 11)))
    with pytest.raises(ValueError, match=r"x has shape \(\)"):
        tj.kron_matvec([A], np.float64(1.0))
    with pytest.raises(ValueError, match=r"factors\[1\] must be 2-D.*\(5,\)"):
        tj.kron_matvec([A, np.ones(5)], np.ones(10))
    with pytest.raises(ValueError, match="empty"):
        tj.kron_matvec([], np.ones(1))
    with pytest.raises(TypeError, match="sequence of 2-D arrays"):
        tj.kron_matvec(A, np.ones(2))
    with pytest.raises(TypeError, match="sequence of 2-D arrays"):
        tj.kron_matvec(3, np.ones(2))
    with pytest.raises(TypeError, match="non-numeric"):
        tj.kron_matvec([np.array([["a"]])], np.ones(1))
