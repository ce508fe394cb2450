"""The expand kernel's fused passes and tiles (issue 7), through ExpandPlan and the public API.

Consecutive terms over the same output positions are evaluated in one pass
(summed per element left to right, as term-by-term passes would), whole
panels of short rows go in one call, and big factors are checked for
non-finite values as they are read.  Values are checked against einsum
references placed by the layout contract (docs/layouts.md), and the kernel's
bitwise promises directly: fused == term by term, any thread count.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorjac as tj
from tensorjac._expand import expand_plan

LAYOUTS = ("tensor", "gradient", "numerator", "matrix", "vec")
RNG = np.random.default_rng(7)


def to_layout(T: np.ndarray, layout: str, p: int) -> np.ndarray:
    """A tensor-layout Jacobian T[out..., in...] (p output axes) in ``layout``, by the layout contract."""
    r = T.ndim - p
    outs, ins = list(range(p)), list(range(p, p + r))
    P = int(np.prod(T.shape[:p], dtype=np.int64))
    R = int(np.prod(T.shape[p:], dtype=np.int64))
    if layout == "tensor":
        return T
    if layout == "gradient":
        return T.transpose(ins + outs)
    if layout == "numerator":
        return T.transpose(outs + ins[::-1])
    if layout == "matrix":
        return T.reshape(P, R)
    if layout == "vec":
        return T.transpose(outs[::-1] + ins[::-1]).reshape(P, R)
    raise AssertionError(layout)


def rand(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    a = RNG.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * RNG.standard_normal(shape)
    return a.astype(dtype)


def like_sandwich(G: int, m: int, n: int, dtype: np.dtype) -> tuple[list, dict, list, np.ndarray, tuple, tuple]:
    """G like terms c_g A_g[i,k] B_g[l,j] (one fused pass): (terms, sizes, factors, reference, out, in shapes)."""
    coefs = [1.0, -0.5, 2.0, 0.25, -1.5, 3.0, 0.75, -2.0, 1.25][:G]
    terms, facs = [], []
    ref = np.zeros((m, n, m, n), dtype)
    for g, c in enumerate(coefs):
        A, B = rand((m, m), dtype), rand((n, n), dtype)
        order = [("i", "k"), ("l", "j")] if g % 2 == 0 else [("l", "j"), ("i", "k")]
        terms.append((c, [("i",), ("j",)], [("k",), ("l",)], order))
        facs += [A, B] if g % 2 == 0 else [B, A]
        ref += c * np.einsum("ik,lj->ijkl", A, B)
    return terms, {"i": m, "j": n, "k": m, "l": n}, facs, ref, (m, n), (m, n)


def layer_norm_like(m: int, dtype: np.dtype) -> tuple[list, dict, list, np.ndarray, tuple, tuple]:
    """c + u[i] v[k] (fused) plus d delta(i,k) u[i] (another pass)."""
    u, v = rand((m,), dtype), rand((m,), dtype)
    c = np.asarray(0.3, dtype)
    terms = [
        (1.0, [("i",)], [("k",)], [()]),
        (-1.0, [("i",)], [("k",)], [("i",), ("k",)]),
        (2.0, [("i",)], [("i",)], [("i",)]),
    ]
    ref = c - np.outer(u, v) + 2 * np.diag(u)
    return terms, {"i": m, "k": m}, [c, u, v, u], ref, (m,), (m,)


def delta_first(m: int, dtype: np.dtype, fused: bool) -> tuple[list, dict, list, np.ndarray, tuple, tuple]:
    """2 u[i] delta(i,k) first, then F[i,k] (the kernel runs the covering second term first) or, fused,
    c + F[i,k] (then the result is zero-filled first)."""
    u, F = rand((m,), dtype), rand((m, m), dtype)
    c = np.asarray(-0.75, dtype)
    terms = [(2.0, [("i",)], [("i",)], [("i",)]), (1.0, [("i",)], [("k",)], [("i", "k")])]
    facs = [u, F]
    ref = 2 * np.diag(u) + F
    if fused:
        terms.append((1.0, [("i",)], [("k",)], [()]))
        facs.append(c)
        ref = ref + c
    return terms, {"i": m, "k": m}, facs, ref, (m,), (m,)


def softmax_like(m: int, n: int, dtype: np.dtype) -> tuple[list, dict, list, np.ndarray, tuple, tuple]:
    """delta(i,k) (F[i,j,l] + H[i,j,l]) (fused) plus y[i,j] delta(i,k) delta(j,l)."""
    F, H, y = rand((m, n, n), dtype), rand((m, n, n), dtype), rand((m, n), dtype)
    terms = [
        (1.0, [("i",), ("j",)], [("i",), ("l",)], [("i", "j", "l")]),
        (-1.0, [("i",), ("j",)], [("i",), ("l",)], [("i", "j", "l")]),
        (1.0, [("i",), ("j",)], [("i",), ("j",)], [("i", "j")]),
    ]
    eye_m, eye_n = np.eye(m), np.eye(n)
    ref = np.einsum("ik,ijl->ijkl", eye_m, F - H) + np.einsum("ij,ik,jl->ijkl", y, eye_m, eye_n)
    return terms, {"i": m, "j": n, "l": n}, [F, H, y], ref, (m, n), (m, n)


def kron_like(p: int, q: int, dtype: np.dtype) -> tuple[list, dict, list, np.ndarray, tuple, tuple]:
    """Two like terms B1[k,l] - B2[k,l] into fused output axes (i k), (j l) with deltas to the input (i, j)."""
    B1, B2 = rand((q, q), dtype), rand((q, q), dtype)
    terms = [
        (1.0, [("i", "k"), ("j", "l")], [("i",), ("j",)], [("k", "l")]),
        (-1.0, [("i", "k"), ("j", "l")], [("i",), ("j",)], [("k", "l")]),
    ]
    eye = np.eye(p)
    ref = np.einsum("ia,jb,kl->ikjlab", eye, eye, B1 - B2).reshape(p * q, p * q, p, p)
    return terms, {"i": p, "j": p, "k": q, "l": q}, [B1, B2], ref, (p * q, p * q), (p, p)


STRUCTURES = {
    "sandwich x3": lambda dt: like_sandwich(3, 5, 4, dt),
    "sandwich x9 tiles": lambda dt: like_sandwich(9, 12, 17, dt),
    "layer norm": lambda dt: layer_norm_like(37, dt),
    "delta first": lambda dt: delta_first(23, dt, False),
    "delta first, fused": lambda dt: delta_first(23, dt, True),
    "softmax": lambda dt: softmax_like(6, 9, dt),
    "kron": lambda dt: kron_like(3, 5, dt),
}
DTYPES = [np.float64, np.float32, np.complex128]


def tol(dtype: np.dtype) -> dict[str, float]:
    return {"rtol": 2e-5, "atol": 2e-5} if np.dtype(dtype) == np.float32 else {"rtol": 1e-12, "atol": 1e-12}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", list(STRUCTURES))
def test_values_every_layout(name: str, layout: str, dtype: np.dtype) -> None:
    terms, sizes, facs, ref, oshape, ishape = STRUCTURES[name](dtype)
    shape, plan = expand_plan(terms, sizes, layout, oshape, ishape, np.dtype(dtype))
    want = to_layout(ref, layout, len(oshape))
    assert shape == want.shape
    J, finite = plan(None, facs, 1)
    assert finite and J.dtype == np.dtype(dtype)
    np.testing.assert_allclose(J, want, **tol(dtype))
    for nt in (2, 3):
        assert np.array_equal(plan(None, facs, nt)[0], J)
    # into a non-contiguous, reversed out= (a strided view of a bigger array), then accumulated onto it
    big = np.full((2 * shape[0],) + shape[1:], np.nan, dtype)
    out = big[::-2]
    assert plan(out, facs, 2)[0] is out
    np.testing.assert_array_equal(out, J)
    base = rand(shape, dtype)
    acc = np.asfortranarray(base.copy())
    plan(acc, facs, 2, True)
    np.testing.assert_allclose(acc, base + want, **tol(dtype))


def _one_by_one(terms: list, sizes: dict, facs: list, layout: str, oshape: tuple, ishape: tuple,
                dtype: np.dtype, nt: int) -> np.ndarray:
    """Each term through its own plan: the first writes, the others accumulate."""
    out = None
    k = 0
    for t in terms:
        n = len(t[3])
        _, plan = expand_plan([t], sizes, layout, oshape, ishape, np.dtype(dtype))
        if out is None:
            out = plan(None, facs[k : k + n], nt)[0]
        else:
            plan(out, facs[k : k + n], nt, True)
        k += n
    assert out is not None
    return out


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["sandwich x3", "sandwich x9 tiles", "softmax", "kron"])
def test_fused_pass_is_bitwise_term_by_term(name: str, layout: str) -> None:
    """Fusing like terms changes no bit: each element is the same left-to-right sum."""
    terms, sizes, facs, _, oshape, ishape = STRUCTURES[name](np.float64)
    _, plan = expand_plan(terms, sizes, layout, oshape, ishape, np.dtype(np.float64))
    fused = plan(None, facs, 1)[0]
    for nt in (1, 2):
        assert np.array_equal(fused, _one_by_one(terms, sizes, facs, layout, oshape, ishape, np.float64, nt))
    # accumulate mode: ((out + t1) + t2) + ... in both
    base = rand(fused.shape, np.float64)
    a = base.copy()
    plan(a, facs, 2, True)
    b = base.copy()
    k = 0
    for t in terms:
        n = len(t[3])
        expand_plan([t], sizes, layout, oshape, ishape, np.dtype(np.float64))[1](b, facs[k : k + n], 1, True)
        k += n
    assert np.array_equal(a, b)


def test_nonfinite_factor_reported() -> None:
    """Big factors read in place are checked as the kernel reads them, small ones before; values still written."""
    m = 128
    A = rand((m, m), np.float64)
    _, dense = expand_plan([(1.0, [("i",)], [("j",)], [("i", "j")])], {"i": m, "j": m}, "tensor", (m,), (m,),
                           np.dtype(np.float64))
    assert dense(None, [A], 2)[1]
    A[77, 5] = np.inf
    J, finite = dense(None, [A], 2)
    assert not finite and J[77, 5] == np.inf and np.array_equal(J[:77], A[:77])
    terms, sizes, facs, _, oshape, ishape = like_sandwich(2, 6, 6, np.float64)
    _, plan = expand_plan(terms, sizes, "tensor", oshape, ishape, np.dtype(np.float64))
    facs[3] = facs[3].copy()
    facs[3][2, 1] = np.nan
    assert not plan(None, facs, 1)[1]


@pytest.mark.parametrize("layout", ["tensor", "vec"])
def test_public_api_thread_counts_bitwise(layout: str) -> None:
    """Structures big enough to split across threads (and over tiles) give the same bits at 1 and 2 threads."""
    rng = np.random.default_rng(3)
    n = 17
    A, X, B = (rng.standard_normal((n, n)) + n * np.eye(n) for _ in range(3))
    x = rng.standard_normal(200)
    M = rng.standard_normal((200, 200)) / 15
    W1, W2 = rng.standard_normal((40, 40)) / 7, rng.standard_normal((40, 40)) / 7
    v = rng.standard_normal(40)

    def softmax(X: np.ndarray) -> np.ndarray:
        E = np.exp(X - X.max(axis=1, keepdims=True))
        return E / E.sum(axis=1, keepdims=True)

    calls = [
        lambda nt: tj.jacobian(tj.sandwich, A, X, B, wrt=1, layout=layout, num_threads=nt),
        lambda nt: tj.jacobian(tj.multiply, A, X, layout=layout, num_threads=nt),
        lambda nt: tj.jacobian(tj.kron, A[:6, :6], B[:7, :7], layout=layout, num_threads=nt),
        lambda nt: tj.jacobian(tj.matmul, M, x, wrt=1, layout=layout, num_threads=nt),
        lambda nt: tj.jacobian(lambda X: np.linalg.inv(A @ X @ B), X, layout=layout, num_threads=nt),
        lambda nt: tj.jacobian(softmax, X, layout=layout, num_threads=nt),
        lambda nt: tj.jacobian(lambda x: (x - x.mean()) / np.sqrt(x.var() + 1e-5), x, layout=layout, num_threads=nt),
        lambda nt: tj.jacobian(lambda W: np.tanh(W2 @ np.tanh(W @ v)), W1, layout=layout, num_threads=nt),
    ]
    for call in calls:
        J1 = call(1)
        assert np.array_equal(J1, call(2))
    # and against the closed form of one of them
    ref = np.einsum("ik,lj->ijkl", A, B)
    np.testing.assert_allclose(calls[0](2), to_layout(ref, layout, 2), rtol=1e-13, atol=1e-13)


def test_baseline_and_avx2_row_kernels_agree() -> None:
    """The row kernels compiled for the x86-64 baseline and for AVX2 (chosen at run time) give the same bits."""
    from tensorjac import _core

    level = _core.expand_simd()
    assert level in ("avx2", "baseline")
    with pytest.raises(ValueError, match="expand_simd"):
        _core.expand_simd("sse9")
    cases = []
    for name in STRUCTURES:
        for dtype in DTYPES:
            terms, sizes, facs, _, oshape, ishape = STRUCTURES[name](dtype)
            for layout in ("tensor", "vec"):
                cases.append((expand_plan(terms, sizes, layout, oshape, ishape, np.dtype(dtype))[1], facs))
    results = {}
    try:
        for lvl in ("baseline", "auto"):
            assert _core.expand_simd(lvl) == ("baseline" if lvl == "baseline" else level)
            results[lvl] = [plan(None, facs, 2)[0] for plan, facs in cases]
    finally:
        _core.expand_simd("auto")
    assert _core.expand_simd() == level
    assert all(np.array_equal(a, b) for a, b in zip(results["baseline"], results["auto"]))


@pytest.mark.parametrize("n", [22, 23])  # 22**4 positions run on one thread, 23**4 on the team (2**18 between)
def test_sizes_around_the_parallel_threshold_are_bitwise_equal_for_any_thread_count(n):
    rng = np.random.default_rng(n)
    A, X, B = (rng.standard_normal((n, n)) for _ in range(3))
    ref = np.einsum("ik,lj->ijkl", A, B)  # d(A X B)[i, j] / dX[k, l]
    results = [tj.jacobian(tj.sandwich, A, X, B, wrt=1, num_threads=t) for t in (1, 2, 3)]
    np.testing.assert_allclose(results[0], ref, rtol=1e-14, atol=0)
    for r in results[1:]:
        assert np.array_equal(r.view(np.uint64), results[0].view(np.uint64))
