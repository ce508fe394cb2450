"""Per-sample Jacobians (batch_axis=): read off the terms' batch delta, checked against the
block diagonal of the full Jacobian, and refused when the function mixes samples."""

from __future__ import annotations

import numpy as np
import pytest
import tensorjac as tj
from conftest import LAYOUTS, to_layout

rng = np.random.default_rng(7)
B = 4
W = rng.standard_normal((3, 5))
b = rng.standard_normal(5)
V = rng.standard_normal((5, 2))


def _softmax_rows(X):
    Z = X @ W
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


CASES = {
    "tanh(X W + b)": (lambda X: np.tanh(X @ W + b), (B, 3), 0),
    "two-layer MLP": (lambda X: np.tanh(np.tanh(X @ W + b) @ V), (B, 3), 0),
    "row softmax": (_softmax_rows, (B, 3), 0),
    "row layer norm": (lambda X: (X - X.mean(axis=1, keepdims=True)) / X.std(axis=1, keepdims=True), (B, 5), 0),
    "row norms times x": (lambda X: X * np.linalg.norm(X, axis=1, keepdims=True), (B, 3), 0),
    "batched matrices": (lambda X: np.linalg.inv(X + 3 * np.eye(3)) @ X, (B, 3, 3), 0),
    "samples on axis 1": (lambda X: np.tanh(W.T @ X), (3, B), 1),
    "negative axis": (lambda X: np.sin(X) * X[::-1], (2, B), -1),
    "within-sample indexing": (lambda X: X[:, [2, 0]] ** 2 + X[:, 1:2], (B, 3), 0),
    "rank-3 samples": (lambda X: np.einsum("bij,jk->bik", X, W), (B, 2, 3), 0),
}


def _per_sample_reference(J, out_shape, in_shape, axis):
    """The blocks J[b, ..., b, ...] of the full tensor-layout Jacobian, batch axis first."""
    P = len(out_shape)
    a = axis % P
    J = np.moveaxis(J, (a, P + a), (0, 1))
    return np.einsum("bb...->b...", J)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_per_sample_is_the_block_diagonal(name, layout):
    f, shape, axis = CASES[name]
    X = rng.standard_normal(shape)
    full = tj.fd.jacobian(f, X, method="richardson")
    want = _per_sample_reference(full, f(X).shape, X.shape, axis)  # (B, *out_sample, *in_sample)
    out_s = np.delete(np.array(f(X).shape), axis % X.ndim)
    in_s = np.delete(np.array(X.shape), axis % X.ndim)
    want = np.stack([to_layout(w, tuple(out_s), tuple(in_s), layout) for w in want])
    got = tj.jacobian(f, X, batch_axis=axis, layout=layout)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize(
    "f",
    [
        lambda X: X - X.mean(axis=0),  # centring over the batch
        lambda X: (X - X.mean(axis=0)) / X.std(axis=0),  # batch normalization
        lambda X: X * X.sum(),  # a sum over everything
        lambda X: X[::-1],  # sample b comes from sample B-1-b
        lambda X: np.cumsum(X, axis=0),  # sample b depends on samples 0..b
        lambda X: np.broadcast_to(X[:1], X.shape) * 1.0,  # every sample from sample 0
    ],
    ids=["centring", "batch-norm", "global-sum", "reversal", "cumsum", "first-sample"],
)
def test_functions_that_mix_samples_are_refused(f):
    X = rng.standard_normal((B, 3))
    with pytest.raises(ValueError, match="mixes samples"):
        tj.jacobian(f, X, batch_axis=0)


def test_ops_tuple_wrt_out_and_dtype():
    X = rng.standard_normal((B, 3)).astype(np.float32)
    J = tj.jacobian(tj.tanh, X, batch_axis=0)
    assert J.shape == (B, 3, 3) and J.dtype == np.float32
    np.testing.assert_allclose(J, np.stack([np.diag(1 - np.tanh(x) ** 2) for x in X]), rtol=1e-6)
    Y = rng.standard_normal((B, 3))
    Jx, Jy = tj.jacobian(lambda X, Y: X * Y + np.sin(X), X.astype(np.float64), Y, wrt=(0, 1), batch_axis=0)
    np.testing.assert_allclose(Jy, np.stack([np.diag(x) for x in X.astype(np.float64)]), rtol=1e-12)
    out = np.empty((B, 3, 3))
    assert tj.jacobian(lambda Y: Y**2, Y, batch_axis=0, out=out) is out
    np.testing.assert_allclose(out, np.stack([np.diag(2 * y) for y in Y]))


def test_bad_batch_axis():
    X = rng.standard_normal((B, 3))
    with pytest.raises(ValueError, match="out of range"):
        tj.jacobian(np.tanh, X, batch_axis=2)
    with pytest.raises(TypeError, match="batch_axis"):
        tj.jacobian(np.tanh, X, batch_axis=0.0)
    with pytest.raises(ValueError, match="different axes"):
        tj.jacobian(lambda X: X.sum(axis=0), X.T, batch_axis=-1)  # axis 0 of the output, 1 of X.T
    with pytest.raises(ValueError, match="different lengths"):
        tj.jacobian(lambda X: X[:2] * 1.0, X, batch_axis=0)


# ----------------------------------------------------------------------------- finite differences


@pytest.mark.parametrize("name", ["tanh(X W + b)", "row softmax", "samples on axis 1", "batched matrices"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_fd_per_sample_matches_the_exact_one(name, layout):
    f, shape, axis = CASES[name]
    X = rng.standard_normal(shape)
    got, err = tj.fd.jacobian(f, X, batch_axis=axis, layout=layout, method="richardson", return_error=True)
    want = tj.jacobian(f, X, batch_axis=axis, layout=layout)
    assert got.shape == want.shape == err.shape
    np.testing.assert_allclose(got, want, atol=1e-8 + 10 * float(err.max()))


def test_fd_per_sample_calls_f_once_per_sample_entry():
    calls = []

    def f(X):
        calls.append(1)
        return np.tanh(X @ W + b)

    X = rng.standard_normal((64, 3))
    tj.fd.jacobian(f, X, batch_axis=0, method="central")
    per_sample = len(calls)
    calls.clear()
    tj.fd.jacobian(f, X, method="central")
    assert per_sample == 2 * 3 + 1  # every sample perturbed at once
    assert len(calls) == 2 * 64 * 3 + 1


def test_fd_per_sample_check_refuses_mixing():
    X = rng.standard_normal((B, 3))
    with pytest.raises(ValueError, match="mixes samples"):
        tj.fd.jacobian(lambda X: X - X.mean(axis=0), X, batch_axis=0, check_batch=True)
    J = tj.fd.jacobian(lambda X: np.sin(X) * 2, X, batch_axis=0, check_batch=True)
    np.testing.assert_allclose(J, np.stack([np.diag(2 * np.cos(x)) for x in X]), atol=1e-7)
    with pytest.raises(ValueError, match="different axes"):
        tj.fd.jacobian(lambda X: X.sum(axis=0), X.T, batch_axis=-1)


def test_per_sample_scalar_outputs_give_per_sample_gradients():
    """An output sample may have another rank than an input sample: a loss per sample gives the
    per-sample gradients (B, *x_sample), exactly and by finite differences."""
    X = rng.standard_normal((B, 3))
    f = lambda X: np.log(np.exp(X @ W).sum(axis=1))
    P = np.exp(X @ W)
    P /= P.sum(axis=1, keepdims=True)
    want = P @ W.T  # d/dx log sum exp(x W) = W softmax(x W)
    np.testing.assert_allclose(tj.jacobian(f, X, batch_axis=0), want, rtol=1e-12)
    np.testing.assert_allclose(tj.fd.jacobian(f, X, batch_axis=0, check_batch=True), want, rtol=1e-6)
    np.testing.assert_allclose(tj.jacobian(f, X, batch_axis=0, layout="matrix"), want[:, None, :], rtol=1e-12)


# ----------------------------------------------------------------------------- per-sample Hessians


def _hessian_blocks(H, out_shape, in_shape, axis):
    """H[..b.., ..b.., ..b..] of the full tensor-layout Hessian, batch axis first: (B, *out_s, *in_s, *in_s)."""
    P, R = len(out_shape), len(in_shape)
    a, r = axis % P, axis % R
    H = np.moveaxis(H, (a, P + r, P + R + r), (0, 1, 2))
    return np.einsum("bbb...->b...", H)


HESSIAN_CASES = {
    "row sums of tanh(X W)": (lambda X: np.tanh(X @ W).sum(axis=1), (B, 3), 0),
    "row log-sum-exp": (lambda X: np.log(np.exp(X @ W).sum(axis=1)), (B, 3), 0),
    "vector output per sample": (lambda X: np.sin(X) * X[:, ::-1], (B, 3), 0),
    "samples on axis 1": (lambda X: (np.tanh(W.T @ X) ** 2).sum(axis=0, keepdims=True), (3, B), 1),
}


@pytest.mark.parametrize("name", list(HESSIAN_CASES))
def test_per_sample_hessian_is_the_block_diagonal(name):
    f, shape, axis = HESSIAN_CASES[name]
    X = rng.standard_normal(shape)
    want = _hessian_blocks(tj.hessian(f, X), f(X).shape, X.shape, axis)
    got = tj.hessian(f, X, batch_axis=axis)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(HESSIAN_CASES))
def test_per_sample_hessian_matches_differences_of_the_gradient(name):
    """Independent of tj.hessian: central differences of the per-sample Jacobian, one input entry of
    every sample perturbed at once (the samples do not mix)."""
    f, shape, axis = HESSIAN_CASES[name]
    X = rng.standard_normal(shape)
    got = np.moveaxis(tj.hessian(f, X, batch_axis=axis), 0, -1)  # (*out_s, *in_s, *in_s, B)
    sample_in = tuple(np.delete(np.array(shape), axis % len(shape)))
    h = 1e-5
    for k in range(int(np.prod(sample_in))):
        e = np.zeros(sample_in)
        e.flat[k] = 1.0
        E = np.expand_dims(e, axis % len(shape)) * np.ones(shape)
        col = (tj.jacobian(f, X + h * E, batch_axis=axis) - tj.jacobian(f, X - h * E, batch_axis=axis)) / (2 * h)
        col = np.moveaxis(col, 0, -1)  # (*out_s, *in_s, B)
        kk = np.unravel_index(k, sample_in)
        np.testing.assert_allclose(got[(Ellipsis, *kk, slice(None))], col, atol=1e-7)


def test_per_sample_hessian_refuses_mixing_and_bad_arguments():
    X = rng.standard_normal((B, 3))
    with pytest.raises(ValueError, match="mixes samples"):
        tj.hessian(lambda X: ((X - X.mean(axis=0)) ** 2).sum(axis=1), X, batch_axis=0)
    with pytest.raises(ValueError, match="out of range"):
        tj.hessian(lambda X: (X**3).sum(axis=1), X, batch_axis=2)
    with pytest.raises(TypeError, match="batch_axis"):
        tj.hessian(lambda X: (X**3).sum(axis=1), X, batch_axis="0")
