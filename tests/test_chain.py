"""tj.chain: the chain rule for explicit Jacobian tensors, in every layout."""

from __future__ import annotations

import numpy as np
import pytest
import tensorjac as tj
from conftest import LAYOUTS, VIEW_KINDS, as_view, assert_close, fd_tensor, to_layout
from hypothesis import given, settings
from hypothesis import strategies as st

HYP = settings(max_examples=40, deadline=None, derandomize=True, database=None)
shapes = st.lists(st.integers(0, 3), min_size=0, max_size=3).map(tuple)


def _ref(Jo, Ji, mid):
    """Explicit einsum over the intermediate's axes."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    P, R = Jo.ndim - mid, Ji.ndim - mid
    o, y, i = letters[:P], letters[P : P + mid], letters[P + mid : P + mid + R]
    return np.einsum(f"{o}{y},{y}{i}->{o}{i}", Jo, Ji)


@HYP
@given(out=shapes, mid=shapes, inn=shapes, layout=st.sampled_from(LAYOUTS),
       ko=st.sampled_from(VIEW_KINDS), ki=st.sampled_from(VIEW_KINDS),
       seed=st.integers(0, 2**31))  # fmt: skip
def test_random_shapes_and_layouts(out, mid, inn, layout, ko, ki, seed):
    rng = np.random.default_rng(seed)
    Jo, Ji = rng.standard_normal(out + mid), rng.standard_normal(mid + inn)
    got = tj.chain(as_view(Jo, ko), as_view(Ji, ki), len(mid), layout=layout)
    want = to_layout(_ref(Jo, Ji, len(mid)), out, inn, layout)
    assert got.shape == want.shape and got.dtype == np.float64
    assert_close(got, want, rtol=1e-12)


def test_composition_of_ops_against_finite_differences():
    """d inv(A X B) / dX by the chain rule of two closed-form Jacobians."""
    rng = np.random.default_rng(0)
    A, X, B = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal((2, 3))
    Y = A @ X @ B + 3 * np.eye(3)
    C = 3 * np.eye(3)
    J_inner = tj.jacobian(tj.sandwich, A, X, B, wrt=1)  # (3, 3, 4, 2)
    J_outer = tj.jacobian(tj.inv, Y)  # (3, 3, 3, 3)
    J = tj.chain(J_outer, J_inner, 2)
    assert J.shape == (3, 3, 4, 2)
    fd = fd_tensor(lambda A, X, B: np.linalg.inv(A @ X @ B + C), (A, X, B), 1)
    np.testing.assert_allclose(J, fd, rtol=1e-6, atol=1e-7)
    # J applied to a tangent is the JVP of the composition, and J^T to a cotangent its VJP
    V, G = rng.standard_normal((5, 4, 2)), rng.standard_normal((5, 3, 3))
    jv = tj.jvp(tj.inv, Y, tangent=tj.jvp(tj.sandwich, A, X, B, tangent=V, wrt=1))
    assert_close(np.tensordot(V, J, axes=([1, 2], [2, 3])), jv, rtol=1e-12)
    vj = tj.vjp(tj.sandwich, A, X, B, cotangent=tj.vjp(tj.inv, Y, cotangent=G), wrt=1)
    assert_close(np.tensordot(G, J, axes=([1, 2], [0, 1])), vj, rtol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts_agree_with_op_jacobian(layout):
    """chain(J_f, identity) in a layout is exactly what op.jacobian returns in it."""
    rng = np.random.default_rng(1)
    A, X, B = rng.standard_normal((2, 3)), rng.standard_normal((3, 4)), rng.standard_normal((4, 5))
    J = tj.jacobian(tj.sandwich, A, X, B, wrt=1)
    ident = np.eye(X.size).reshape(X.shape + X.shape)
    got = tj.chain(J, ident, 2, layout=layout)
    np.testing.assert_array_equal(got, tj.jacobian(tj.sandwich, A, X, B, wrt=1, layout=layout))


def test_scalar_and_zero_mid():
    assert tj.chain(np.float64(2.0), np.float64(3.0), 0) == 6.0
    assert tj.chain(2.0, 3.0, 0).shape == ()
    g = np.arange(3.0)  # a gradient of a scalar (out = ()) chained with a (3,) -> (2,) map
    Ji = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(tj.chain(g, Ji, 1), g @ Ji)
    np.testing.assert_array_equal(tj.chain(g, Ji, 0), np.multiply.outer(g, Ji))  # outer product
    assert tj.chain(np.ones((2, 0)), np.ones((0, 4)), 1).tolist() == [[0.0] * 4] * 2


def test_dtypes():
    rng = np.random.default_rng(2)
    Jo, Ji = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    assert tj.chain(Jo.astype(np.float32), Ji.astype(np.float32), 1).dtype == np.float32
    assert tj.chain(Jo.astype(np.float32), Ji, 1).dtype == np.float64
    assert tj.chain(np.ones((3, 4), int), np.ones((4, 2), np.int8), 1).dtype == np.float64
    Zo = Jo + 1j * rng.standard_normal((3, 4))
    got = tj.chain(Zo, Ji, 1, layout="vec")
    assert got.dtype == np.complex128
    assert_close(got, to_layout(Zo @ Ji, (3,), (2,), "vec"), rtol=1e-12)


def test_errors_name_both_shapes():
    msg = r"J_outer \(shape \(2, 3, 4\)\).*\(3, 4\).*J_inner \(shape \(4, 3, 5\)\)"
    with pytest.raises(ValueError, match=msg):
        tj.chain(np.ones((2, 3, 4)), np.ones((4, 3, 5)), 2)
    with pytest.raises(ValueError, match=r"mid_ndim=3.*\(2, 3\).*\(3, 5\)"):
        tj.chain(np.ones((2, 3)), np.ones((3, 5)), 3)
    with pytest.raises(ValueError, match="mid_ndim=-1"):
        tj.chain(np.ones((2, 3)), np.ones((3, 5)), -1)
    with pytest.raises(TypeError, match="mid_ndim must be an int"):
        tj.chain(np.ones((2, 3)), np.ones((3, 5)), 1.0)
    with pytest.raises(ValueError, match="unknown layout 'diagonal'"):
        tj.chain(np.ones((2, 3)), np.ones((3, 5)), 1, layout="diagonal")
    with pytest.raises(TypeError, match="non-numeric"):
        tj.chain(np.array(["a"]), np.ones(1), 1)


def test_memory_budget():
    tj.set_memory_budget(1000)
    with pytest.raises(tj.JacobianTooLargeError, match="chain-rule Jacobian"):
        tj.chain(np.ones((20, 3)), np.ones((3, 20)), 1)
