"""Property tests of the composite engine over random shapes (hypothesis).

Random broadcast-compatible shapes for binary operations (x traced and c
constant in either order, or both traced), random reduction axes and keepdims,
random transposes/reshapes and random basic slices.  References: Richardson
differences of the same plain-numpy function, or, for the rearrangements, the
exact 0/1 (times a constant weight) Jacobian built from numpy's own index
arithmetic.  Small shapes and few examples: the module runs in a few seconds.
"""

from __future__ import annotations

import operator

import numpy as np
import tensorjac as tj
from composite_cases import FD_RTOL, assert_close, fd_reference, needs_engine
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

pytestmark = needs_engine

HYP = settings(max_examples=40, deadline=None, derandomize=True, database=None)

BINARY = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
    "pow": operator.pow, "maximum": np.maximum, "minimum": np.minimum,
}


@HYP
@given(
    shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=0, max_side=3),
    op=st.sampled_from(sorted(BINARY)),
    mode=st.sampled_from(["x_op_c", "c_op_x", "both"]),
    seed=st.integers(0, 2**16),
)
def test_broadcast_binary(shapes, op, mode, seed):
    sx, sc = shapes.input_shapes
    r = np.random.default_rng(seed)
    x, c = r.uniform(0.5, 2.0, sx), r.uniform(0.5, 2.0, sc)
    if op in ("maximum", "minimum"):
        bx, bc = np.broadcast_arrays(x, c)
        assume(np.all(np.abs(bx - bc) > 0.05))  # away from ties (the tie rule has its own exact tests)
    u = BINARY[op]
    if mode == "x_op_c":
        f, wrt = (lambda x, c: u(x, c)), 0
    elif mode == "c_op_x":
        f, wrt = (lambda x, c: u(c, x)), 0
    else:
        f, wrt = (lambda x, c: u(x, c)), (0, 1)
    Js = tj.jacobian(f, x, c, wrt=wrt)
    Js = Js if isinstance(wrt, tuple) else (Js,)
    out_shape = shapes.result_shape
    for w, J in zip(wrt if isinstance(wrt, tuple) else (wrt,), Js):
        assert J.shape == out_shape + np.shape((x, c)[w])
        assert_close(J, fd_reference(f, (x, c), w), FD_RTOL)


REDUCTIONS = {
    "sum": np.sum, "mean": np.mean, "prod": np.prod, "max": np.max, "min": np.min, "var": np.var, "std": np.std,
}


@st.composite
def reduction_case(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3))
    nd = len(shape)
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        axis = None
    elif kind == "int":
        axis = draw(st.integers(-nd, nd - 1))
    else:
        axes = draw(st.lists(st.integers(0, nd - 1), min_size=1, max_size=nd, unique=True))
        axis = tuple(a - nd if draw(st.booleans()) else a for a in axes)  # mix negative and positive
    return shape, axis, draw(st.booleans()), draw(st.sampled_from(sorted(REDUCTIONS))), draw(st.integers(0, 2**16))


@HYP
@given(case=reduction_case())
def test_random_reduction(case):
    shape, axis, keepdims, name, seed = case
    r = np.random.default_rng(seed)
    n = int(np.prod(shape))
    x = ((r.permutation(n) - n / 2) * 0.2 + 0.03 * r.random(n)).reshape(shape)  # distinct entries
    if name == "std":  # sqrt(0) is a kink: reduce over at least 2 entries
        count = n if axis is None else int(np.prod([shape[a] for a in np.atleast_1d(axis)]))
        assume(count >= 2)
    red = REDUCTIONS[name]
    f = lambda x: red(x, axis=axis, keepdims=keepdims)
    J = tj.jacobian(f, x)
    assert J.shape == np.shape(f(x)) + shape
    assert_close(J, fd_reference(f, (x,), 0), FD_RTOL)


@st.composite
def rearrangement(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=3))
    perm = tuple(draw(st.permutations(range(len(shape)))))
    tshape = tuple(shape[p] for p in perm)
    # merge random runs of adjacent axes, then maybe insert unit axes or use -1
    groups, cur = [], [tshape[0]]
    for s in tshape[1:]:
        if draw(st.booleans()):
            cur.append(s)
        else:
            groups.append(int(np.prod(cur)))
            cur = [s]
    groups.append(int(np.prod(cur)))
    if draw(st.booleans()):
        groups.insert(draw(st.integers(0, len(groups))), 1)
    if draw(st.booleans()):
        groups[draw(st.integers(0, len(groups) - 1))] = -1
    return shape, perm, tuple(groups), draw(st.sampled_from(["method", "np", "T"])), draw(st.integers(0, 2**16))


@HYP
@given(case=rearrangement())
def test_random_transpose_reshape(case):
    shape, perm, target, style, seed = case
    n = int(np.prod(shape))
    if style == "T":
        perm = tuple(range(len(shape) - 1, -1, -1))

    def move(x):
        if style == "method":
            return x.transpose(perm).reshape(target)
        if style == "np":
            return np.reshape(np.transpose(x, perm), target)
        return x.T.reshape(target)

    idx = move(np.arange(n).reshape(shape))  # which input entry lands where (numpy's own index arithmetic)
    w = np.random.default_rng(seed).uniform(0.5, 2.0, idx.shape)  # a constant weight per output entry
    J = tj.jacobian(lambda x: move(x) * w, np.random.default_rng(seed + 1).standard_normal(shape))
    want = (w[..., None] * (idx[..., None] == np.arange(n))).reshape(idx.shape + shape)
    np.testing.assert_array_equal(J, want)


@st.composite
def basic_slices(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    index = []
    for s in shape:
        kind = draw(st.sampled_from(["slice", "int", "all"]))
        if kind == "int":
            index.append(draw(st.integers(-s, s - 1)))
        elif kind == "slice":
            start = draw(st.one_of(st.none(), st.integers(-s - 1, s)))
            stop = draw(st.one_of(st.none(), st.integers(-s - 1, s)))
            step = draw(st.sampled_from([None, 1, 2, -1, -2]))
            index.append(slice(start, stop, step))
        else:
            index.append(slice(None))
    if draw(st.booleans()):
        index.insert(draw(st.integers(0, len(index))), None)
    return shape, tuple(index), draw(st.integers(0, 2**16))


@HYP
@given(case=basic_slices())
def test_random_basic_slicing(case):
    shape, index, seed = case
    n = int(np.prod(shape))
    idx = np.arange(n).reshape(shape)[index]
    J = tj.jacobian(lambda x: x[index] * 3.0, np.random.default_rng(seed).standard_normal(shape))
    want = 3.0 * (np.asarray(idx)[..., None] == np.arange(n)).reshape(np.shape(idx) + shape)
    np.testing.assert_array_equal(J, want)
