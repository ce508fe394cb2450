"""Scale-out on dask (issue 10, part 2).

1. ``tensorjac.dask.jacobian``: Jacobians as dask arrays whose blocks are written independently from
   the terms.  Values are checked against the in-memory ``tj.jacobian`` (equal to the bit for the ops;
   for composites equal except where a term has three or more factors, whose product the kernel may
   associate in another order inside a block: a few ulp) and against independent references
   (conftest's einsum closed forms, hand formulas), in every layout, with odd chunks, deltas and fused
   axes across block boundaries, zero-size and 0-d arrays; ``.sum()``, slicing and a ``.to_zarr``
   round trip; the memory budget (blocks, factors, a Jacobian twice the budget with the traced peak
   under it, in this process and on a cluster).
2. Finite differences and ``tj.check`` on a ``dask.distributed`` LocalCluster with worker processes
   (f in tests/dask_funcs.py, importable by the workers): results equal the serial run bitwise, an
   exception in a worker reaches the caller with its type and message, a killed worker gives a clear
   error without hanging, and x is never modified.

One module-scoped cluster (2 worker processes, 1 thread each) serves every cluster test.
"""

from __future__ import annotations

import doctest
import importlib
import itertools
import logging
import os
import subprocess
import sys
import threading
import time
import tracemalloc
import warnings
from pathlib import Path

import dask_funcs as dfn
import numpy as np
import pytest
import tensorjac as tj
import tensorjac.dask as tjd
from composite_cases import CASE_WRT, CASE_WRT_IDS
from conftest import CASE_IDS, CASES, make_args, op_of, ref_tensor, to_layout

HAVE_DASK = importlib.util.find_spec("dask") is not None and importlib.util.find_spec("dask.array") is not None
needs_dask = pytest.mark.skipif(not HAVE_DASK, reason="dask is not installed (pip install '.[dask]')")

LAYOUTS = ("tensor", "gradient", "numerator", "matrix", "vec")
TESTS = str(Path(__file__).resolve().parent)
MIB = 1 << 20
EPS = np.finfo(np.float64).eps
rng = np.random.default_rng(2024)


def sync(J):
    return J.compute(scheduler="sync")


def odd_chunks(shape, k: int = 0):
    """Chunk sizes that divide nothing: 1, 2, 3, 5, 7 in turn (k shifts the cycle), never a whole dimension."""
    sizes = (3, 2, 5, 1, 7)
    return tuple(max(1, min(sizes[(i + k) % 5], n - 1 if n > 1 else 1)) for i, n in enumerate(shape))


def assert_same_bits(got, want):
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
    assert np.array_equal(got.view(np.uint8), want.view(np.uint8)), "not bitwise equal"


def assert_ulps(got, want, terms: int = 8):
    """Equal up to a few roundings of each product (see the module docstring)."""
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = float(np.max(np.abs(want), initial=0.0))
    np.testing.assert_allclose(got, want, rtol=terms * EPS, atol=terms * EPS * scale)


# ============================================================================= tensorjac.dask.jacobian


@needs_dask
@pytest.mark.parametrize(("name", "w"), CASES, ids=CASE_IDS)
def test_ops_every_layout_odd_chunks(name, w):
    """Every op, every layout: bitwise the in-memory Jacobian, and the einsum closed form of conftest."""
    op = op_of(name)
    args = make_args(name)
    T = ref_tensor(name, args, w)
    out_shape, in_shape = T.shape[: T.ndim - args[w].ndim], args[w].shape
    for k, layout in enumerate(LAYOUTS + (("diagonal",) if op.elementwise else ())):
        want = tj.jacobian(op, *args, wrt=w, layout=layout)
        J = tjd.jacobian(op, *args, wrt=w, layout=layout, chunks=odd_chunks(want.shape, k))
        assert J.shape == want.shape and J.dtype == want.dtype
        got = sync(J)
        assert_same_bits(got, want)
        np.testing.assert_allclose(got, to_layout(T, out_shape, in_shape, layout), rtol=1e-10,
                                   atol=1e-10 * max(1.0, float(np.max(np.abs(T), initial=0.0))))


@needs_dask
@pytest.mark.parametrize(("case", "w"), CASE_WRT, ids=CASE_WRT_IDS)
def test_composites_every_layout_odd_chunks(case, w):
    """The composite catalogue: the in-memory Jacobian (to a few ulp; mostly bitwise), and the hand
    closed form where the catalogue has one."""
    args = case.args(0)
    for k, layout in enumerate(LAYOUTS):
        want = tj.jacobian(case.f, *args, wrt=w, layout=layout)
        got = sync(tjd.jacobian(case.f, *args, wrt=w, layout=layout, chunks=odd_chunks(want.shape, k)))
        assert_ulps(got, want)
        if case.closed is not None:
            T = np.asarray(case.closed(args, w), dtype=float)
            out_shape = np.shape(case.f(*args))
            np.testing.assert_allclose(got, to_layout(T, out_shape, np.shape(args[w]), layout), rtol=1e-9,
                                       atol=1e-9 * max(1.0, float(np.max(np.abs(T), initial=0.0))))


@needs_dask
def test_most_composites_are_bitwise_equal():
    """The in-memory kernel's terms and summation order are kept: only terms of three or more factors
    may differ (in the last bits), so nearly every composite Jacobian is bitwise equal."""
    n = equal = 0
    for case, w in CASE_WRT:
        args = case.args(0)
        want = tj.jacobian(case.f, *args, wrt=w, layout="matrix")
        got = sync(tjd.jacobian(case.f, *args, wrt=w, layout="matrix", chunks=odd_chunks(want.shape)))
        n += 1
        equal += bool(np.array_equal(got, want))
    assert equal >= 0.97 * n, (equal, n)


KRON_SHAPES = [((2, 3), (3, 2)), ((3, 1), (2, 4)), ((1, 1), (3, 3))]


@needs_dask
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("sa", "sb"), KRON_SHAPES)
def test_fused_axes_kron_any_chunks(sa, sb, layout):
    """kron's output axes are fused (i k) and (j l): every chunking, aligned or not, gives the
    closed form d kron(A, B)[(ik), (jl)] / dA[i', j'] = B[k, l] d(i, i') d(j, j')."""
    A, B = rng.standard_normal(sa), rng.standard_normal(sb)
    (p, q), (r, s) = sa, sb
    T = np.einsum("ac,bd,kl->akblcd", np.eye(p), np.eye(q), B).reshape(p * r, q * s, p, q)
    want = to_layout(T, (p * r, q * s), (p, q), layout)
    for ch in itertools.product((1, 2, 3, 4, 5, 7), repeat=2):
        chunks = tuple(ch[i % 2] for i in range(want.ndim))
        got = sync(tjd.jacobian(tj.kron, A, B, layout=layout, chunks=chunks))
        np.testing.assert_array_equal(got, want)


@needs_dask
@pytest.mark.parametrize("layout", LAYOUTS)
def test_deltas_across_block_boundaries(layout):
    """A diagonal (X * W), a transpose (X.T) and a reshape's fused input axes, with chunks that cut the
    diagonals anywhere: the hand formulas."""
    X, W = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    cases = [
        (lambda X: X * W, np.einsum("ij,ik,jl->ijkl", W, np.eye(4), np.eye(6)), (4, 6)),
        (lambda X: X.T * 3.0, 3.0 * np.einsum("jk,il->ijkl", np.eye(4), np.eye(6)), (6, 4)),
        (lambda X: np.reshape(X, (3, 8)) ** 2,
         (2 * X.reshape(-1)[:, None] * np.eye(24)).reshape(3, 8, 4, 6), (3, 8)),
    ]
    for f, T, out_shape in cases:
        want = to_layout(T, out_shape, (4, 6), layout)
        for k in range(5):
            got = sync(tjd.jacobian(f, X, layout=layout, chunks=odd_chunks(want.shape, k)))
            np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)


@needs_dask
def test_diagonal_layout():
    x = rng.standard_normal(11)
    for f in (tj.tanh, lambda x: np.exp(x) * 2.0):
        got = sync(tjd.jacobian(f, x, layout="diagonal", chunks=4))
        np.testing.assert_allclose(got, (1 - np.tanh(x) ** 2) if f is tj.tanh else 2 * np.exp(x), rtol=1e-14,
                                   atol=1e-15)
        assert_same_bits(got, tj.jacobian(f, x, layout="diagonal"))
    with pytest.raises(ValueError, match="diagonal"):
        tjd.jacobian(lambda x: np.cumsum(x), x, layout="diagonal")
    with pytest.raises(ValueError, match="diagonal"):
        tjd.jacobian(tj.sandwich, np.eye(2), np.eye(2), np.eye(2), wrt=1, layout="diagonal")


@needs_dask
@pytest.mark.parametrize("layout", LAYOUTS)
def test_zero_size_and_0d(layout):
    for x, f in [
        (np.zeros((0, 3)), lambda x: np.tanh(x) * 2),
        (np.zeros((3, 0)), lambda x: x.T @ np.ones((3, 2))),
        (np.ones(4), lambda x: np.zeros((0, 2)) @ x[:2]),
    ]:
        want = tj.jacobian(f, x, layout=layout)
        J = tjd.jacobian(f, x, layout=layout, chunks=2)
        assert J.shape == want.shape and J.size == 0
        assert sync(J).shape == want.shape
    s = np.array(0.7)
    got = sync(tjd.jacobian(lambda s: np.sin(s) * np.arange(5.0), s, layout=layout, chunks=2))
    np.testing.assert_allclose(got.reshape(-1), np.cos(0.7) * np.arange(5.0), rtol=1e-15)
    got = sync(tjd.jacobian(lambda x: np.sum(x**3), np.arange(4.0), layout=layout, chunks=3))
    np.testing.assert_allclose(got.reshape(-1), 3 * np.arange(4.0) ** 2, rtol=1e-15)
    got = sync(tjd.jacobian(lambda s: s**2, s, layout=layout))
    assert got.shape == tj.jacobian(lambda s: s**2, s, layout=layout).shape and float(got.reshape(())) == 1.4


@needs_dask
def test_dtypes():
    X = rng.standard_normal((3, 3)) + 3 * np.eye(3)
    for dt in (np.float32, np.float64, np.complex128, np.int64):
        x = X.astype(dt) if dt is not np.int64 else np.arange(9).reshape(3, 3)
        for f in (tj.inv if dt is not np.int64 else tj.square, lambda X: np.tanh(X @ X) * 2):
            want = tj.jacobian(f, x, layout="matrix")
            J = tjd.jacobian(f, x, layout="matrix", chunks=(4, 5))
            assert J.dtype == want.dtype
            assert_ulps(sync(J), want)


@needs_dask
def test_tuples_and_arguments():
    """A tuple wrt, a tuple-valued f, names, keyword arguments and op parameters, like tj.jacobian."""
    A, v = rng.standard_normal((4, 3)), rng.standard_normal(3)
    got = tjd.jacobian(dfn.two_args, A, v, wrt=("A", 1), chunks=2)
    want = tj.jacobian(dfn.two_args, A, v, wrt=("A", 1))
    assert isinstance(got, tuple) and len(got) == 2
    for g, w in zip(got, want):
        assert_same_bits(sync(g), w)
    f = lambda x, scale=1.0: (np.sin(x) * scale, np.sum(x**2))
    got = tjd.jacobian(f, v, scale=3.0, chunks=2)
    want = tj.jacobian(f, v, scale=3.0)
    for g, w in zip(got, want):
        assert_ulps(sync(g), w)
    X = rng.standard_normal((3, 4))
    assert_same_bits(sync(tjd.jacobian(tj.sum, X, axis=1, chunks=2)), tj.jacobian(tj.sum, X, axis=1))
    gots = tjd.jacobian(tj.sandwich, A, X, X.T, wrt=(0, 2), chunks=3)
    for g, w in zip(gots, tj.jacobian(tj.sandwich, A, X, X.T, wrt=(0, 2))):
        assert_same_bits(sync(g), w)


@needs_dask
def test_inputs_untouched_and_f_traced_once():
    calls = []

    def f(X):
        calls.append(1)
        return np.tanh(X) @ X

    X = rng.standard_normal((5, 5))
    X0 = X.copy()
    J = tjd.jacobian(f, X, chunks=3)
    sync(J.sum())
    sync(J)
    assert len(calls) == 1 and np.array_equal(X, X0)


@needs_dask
def test_sum_slicing_and_threads():
    x = rng.standard_normal(40)
    J = tjd.jacobian(lambda x: np.outer(np.sin(x), x), x, chunks=(7, 9, 11))
    want = np.einsum("i,j,ik->ijk", np.cos(x), x, np.eye(40)) + np.einsum("i,jk->ijk", np.sin(x), np.eye(40))
    np.testing.assert_allclose(J.sum().compute(scheduler="threads"), want.sum(), rtol=1e-12)
    np.testing.assert_allclose(sync(J[3:17, ::3, -5:]), want[3:17, ::3, -5:], rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(sync(J.sum(axis=(0, 2))), want.sum(axis=(0, 2)), rtol=1e-13)
    a = J.compute(scheduler="threads")
    b = tjd.jacobian(lambda x: np.outer(np.sin(x), x), x, chunks=(7, 9, 11), num_threads=2).compute(scheduler="sync")
    assert_same_bits(a, b)


@needs_dask
def test_threads_share_the_plan_cache(monkeypatch):
    """Blocks computed from several threads while the per-process plan cache evicts all the time."""
    import tensorjac._blocks as blocks

    monkeypatch.setattr(blocks, "_PLANS_MAX", 2)
    A, B = rng.standard_normal((6, 5)), rng.standard_normal((4, 7))
    want = tj.jacobian(tj.kron, A, B, layout="matrix")
    for _ in range(3):
        J = tjd.jacobian(tj.kron, A, B, layout="matrix", chunks=(13, 4))
        assert_same_bits(J.compute(scheduler="threads", num_workers=4), want)


@needs_dask
def test_to_zarr_round_trip(tmp_path):
    pytest.importorskip("zarr")
    import dask.array as da

    A, B = rng.standard_normal((5, 4)), rng.standard_normal((3, 6))
    J = tjd.jacobian(tj.kron, A, B, wrt=1, layout="matrix", chunks=(7, 5))
    J.to_zarr(str(tmp_path / "J.zarr"))
    back = da.from_zarr(str(tmp_path / "J.zarr"))
    assert back.shape == J.shape and back.dtype == J.dtype
    assert_same_bits(back.compute(), tj.jacobian(tj.kron, A, B, wrt=1, layout="matrix"))


@needs_dask
def test_graph_carries_only_slices():
    """A dense factor (as big as the Jacobian) is cut into the blocks' slices: the graph's data add
    up to the factor once, not once per block."""
    A = rng.standard_normal((60, 40))
    x = rng.standard_normal(40)
    f = lambda x: np.tanh(A @ x)
    J = tjd.jacobian(f, x, chunks=(7, 9))
    data = [v for v in dict(J.dask).values() if isinstance(v, np.ndarray)]
    assert sum(a.nbytes for a in data) == A.nbytes  # the dense factor diag(tanh') A, in 9 x 5 slices
    assert max(a.nbytes for a in data) <= 7 * 9 * 8
    np.testing.assert_allclose(sync(J), (1 - np.tanh(A @ x) ** 2)[:, None] * A, rtol=1e-14, atol=1e-15)


@needs_dask
def test_nonfinite_warning():
    with pytest.warns(tj.NonFiniteWarning):
        J = tjd.jacobian(tj.log, np.array([0.0, 1.0]), chunks=1)
    assert np.isinf(sync(J)[0, 0])


@needs_dask
def test_errors():
    x = np.ones(3)
    with pytest.raises(ValueError, match="unknown layout"):
        tjd.jacobian(np.sin, x, layout="rows")
    with pytest.raises(ValueError, match="chunks"):
        tjd.jacobian(lambda x: np.sin(x), x, chunks=(1, 2, 3))
    with pytest.raises(ValueError, match="num_threads"):
        tjd.jacobian(lambda x: np.sin(x), x, num_threads=0)
    with pytest.raises(IndexError):
        tjd.jacobian(tj.kron, x, x, wrt=2)
    with pytest.raises(TypeError, match="tj.fd"):
        tjd.jacobian(lambda x: np.sort(x) * 2 if False else np.fft.fft(x).real, x)


# ----------------------------------------------------------------------------- the memory budget


@needs_dask
def test_budget_blocks_and_auto_chunks():
    tj.set_memory_budget("1M")
    x = np.ones(64)
    f = lambda x: np.outer(np.sin(x), x)  # 64**3 * 8 = 2 MiB: twice the budget
    with pytest.raises(tj.JacobianTooLargeError):
        tj.jacobian(f, x)
    with pytest.raises(tj.JacobianTooLargeError, match="block of shape"):
        tjd.jacobian(f, x, chunks=(64, 64, 64))
    J = tjd.jacobian(f, x)  # "auto": blocks of at most 1/8 of the budget
    assert max(c for c in J.chunksize) ** 0 and np.prod(J.chunksize) * 8 <= tj.get_memory_budget() // 8
    want = np.cos(1.0) * 64 * 64 + 64 * np.sin(1.0) * 64
    np.testing.assert_allclose(sync(J.sum()), want, rtol=1e-12)
    # the block is checked again where it is computed (here: after the budget shrank)
    J = tjd.jacobian(f, x, chunks=(32, 64, 64))
    tj.set_memory_budget("100K")
    with pytest.raises(tj.JacobianTooLargeError, match="Jacobian block"):
        sync(J)


@needs_dask
def test_budget_factor_on_the_driver():
    """A dense Jacobian's factor must fit the caller's budget: refused clearly, never allocated beyond it."""
    A = rng.standard_normal((300, 200))  # the factor diag(tanh') A has 480 KB
    tj.set_memory_budget("256K")
    with pytest.raises(tj.JacobianTooLargeError):
        tjd.jacobian(lambda x: np.tanh(A @ x), np.zeros(200), chunks=(50, 50))
    with pytest.raises(tj.JacobianTooLargeError, match="factor"):
        tjd.jacobian(tj.multiply, np.ones((200, 200)), np.ones((200, 200)), chunks=10)


def _outer_sum(x):
    """sum over i, j, k of d(sin(x_i) x_j)/dx_k = (sum cos x)(sum x) + n sum sin x."""
    return np.sum(np.cos(x)) * np.sum(x) + x.size * np.sum(np.sin(x))


@needs_dask
def test_twice_the_budget_in_process():
    """A Jacobian of 2x the budget, summed with the threaded scheduler: the traced peak (numpy's
    allocations included) stays under the budget."""
    tj.set_memory_budget("16M")
    x = np.linspace(0.1, 1.0, 160)  # 160**3 * 8 = 31.25 MiB
    f = lambda x: np.outer(np.sin(x), x)
    tjd.jacobian(f, x[:3]).sum().compute(scheduler="threads")  # warm-up: imports are not the Jacobian's memory
    tracemalloc.start()
    try:
        J = tjd.jacobian(f, x)
        assert J.nbytes > 1.9 * tj.get_memory_budget()
        total = J.sum().compute(scheduler="threads", num_workers=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_allclose(total, _outer_sum(x), rtol=1e-12)
    assert peak < tj.get_memory_budget(), f"peak {peak / MIB:.1f} MiB"


@needs_dask
def test_import_error_without_dask(monkeypatch):
    for name in ("dask", "dask.array", "dask.highlevelgraph"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"tensorjac\[dask\]"):
        tjd.jacobian(np.sin, np.ones(2))


def test_package_imports_without_dask():
    code = (
        "import sys; sys.modules['dask'] = None; sys.modules['dask.array'] = None\n"
        "import numpy as np, tensorjac as tj, tensorjac.dask as tjd\n"
        "assert tj.jacobian(np.sin, np.zeros(2)).shape == (2, 2)\n"
        "try:\n    tjd.jacobian(np.sin, np.zeros(2))\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install 'tensorjac[dask]'" in out.stdout


@needs_dask
def test_docstring_examples():
    res = doctest.testmod(tjd, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.attempted >= 5 and res.failed == 0


# ============================================================================= a dask.distributed cluster

BUDGET = "64M"


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    import dask

    env = {
        # the workers import tests/dask_funcs.py by name, and get the budget at tensorjac's import
        "PYTHONPATH": os.pathsep.join(p for p in (TESTS, os.environ.get("PYTHONPATH", "")) if p),
        "TENSORJAC_MEMORY_BUDGET": BUDGET,
    }
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None, env=env,
            silence_logs=logging.CRITICAL,
        )
    c = distributed.Client(cluster, set_as_default=False)
    try:
        state = c.run(dfn.worker_state)
        assert len(state) == 2 and all(s["budget"] == 64 * MIB for s in state.values())
        yield c
    finally:
        c.close()
        cluster.close()


def within(seconds: float, fn):
    """fn() in a thread; fails (instead of hanging the suite) when it takes longer than `seconds`.
    Returns fn's result or re-raises its exception."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t0 = time.monotonic()
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s: a hang"
    box["elapsed"] = time.monotonic() - t0
    if "error" in box:
        raise box["error"]
    return box["value"]


def _wait_for_two(client):
    client.wait_for_workers(2, timeout=60)


@needs_dask
def test_cluster_fd_equals_serial(client):
    x = dfn.X0 + 0.05 * np.arange(12.0).reshape(3, 4)
    x0 = x.copy()
    ex = client.get_executor()
    for method in ("central", "richardson", "forward"):
        serial = tj.fd.jacobian(dfn.simulator, x, method=method)
        dist = within(60, lambda m=method: tj.fd.jacobian(dfn.simulator, x, method=m, executor=ex))
        assert_same_bits(dist, serial)
    J, err = tj.fd.jacobian(dfn.simulator, x, executor=ex, layout="matrix", return_error=True)
    J1, err1 = tj.fd.jacobian(dfn.simulator, x, layout="matrix", return_error=True)
    assert_same_bits(J, J1)
    assert_same_bits(err, err1)
    np.testing.assert_allclose(J, dfn.simulator_jacobian(x).reshape(12, 12), rtol=1e-8, atol=1e-8)
    assert_same_bits(tj.fd.hessian(dfn.loss, x[0], executor=ex), tj.fd.hessian(dfn.loss, x[0]))
    A, v = rng.standard_normal((4, 3)), rng.standard_normal(3)
    for g, s in zip(tj.fd.jacobian(dfn.two_args, A, v, wrt=("A", "v"), executor=ex),
                    tj.fd.jacobian(dfn.two_args, A, v, wrt=("A", "v"))):
        assert_same_bits(g, s)
    assert np.array_equal(x, x0)


@needs_dask
def test_cluster_check(client):
    x = np.full((2, 3), dfn.X0)
    ex = client.get_executor()
    good = dfn.simulator_jacobian(x)
    for mode in ("full", "fast"):
        r = tj.check(dfn.simulator, x, good, mode=mode, executor=ex, seed=1)
        r1 = tj.check(dfn.simulator, x, good, mode=mode, seed=1)
        assert r.passed and r1.passed
        assert r.n_evals == r1.n_evals and r.max_abs_err == r1.max_abs_err
    bad = good.copy()
    bad[1, 2, 0, 1] += 0.1
    r = tj.check(dfn.simulator, x, bad, executor=ex)
    assert not r.passed and r.worst[0].out_index == (1, 2) and r.worst[0].in_index == (0, 1)


@needs_dask
def test_cluster_worker_exception_reaches_caller(client):
    x = np.full(6, dfn.X0)
    x0 = x.copy()
    with pytest.raises(dfn.SimulatorError, match="the simulator diverged") as info:
        within(60, lambda: tj.fd.jacobian(dfn.fails_on_entry, x, executor=client.get_executor()))
    assert type(info.value) is dfn.SimulatorError
    assert any("input entry 3" in n for n in getattr(info.value, "__notes__", []))
    with pytest.raises(dfn.SimulatorError, match="diverged"):
        within(60, lambda: tj.check(dfn.fails_on_entry, x, np.eye(6), executor=client.get_executor()))
    assert np.array_equal(x, x0)


@needs_dask
def test_cluster_killed_worker_is_a_clear_error(client):
    """f kills its worker process whenever entry 2 is perturbed: after the cluster's allowed
    retries, KilledWorker names the task and the perturbed entry; nothing hangs, x is unchanged."""
    from distributed.scheduler import KilledWorker

    x = np.full(5, dfn.X0)
    x0 = x.copy()
    try:
        with pytest.raises(KilledWorker, match="workers died") as info:
            within(90, lambda: tj.fd.jacobian(dfn.dies_on_entry, x, executor=client.get_executor()))
        assert any("input entry 2" in n for n in getattr(info.value, "__notes__", []))
        assert np.array_equal(x, x0)
    finally:
        _wait_for_two(client)  # the nannies restart the killed workers


@needs_dask
def test_cluster_survives_a_worker_killed_mid_run(client):
    """A worker killed from outside while f runs: its tasks are run again elsewhere (dask's retry),
    and the result still equals the serial run."""
    import signal

    x = np.full(6, dfn.X0)
    pids = [s["pid"] for s in client.run(dfn.worker_state).values()]
    timer = threading.Timer(0.35, os.kill, (pids[0], signal.SIGKILL))
    try:
        timer.start()
        got = within(90, lambda: tj.fd.jacobian(dfn.slow, x, executor=client.get_executor()))
    finally:
        timer.cancel()
        _wait_for_two(client)
    assert_same_bits(got, tj.fd.jacobian(dfn.slow, x))
    assert all(s["pid"] != pids[0] for s in client.run(dfn.worker_state).values())


@needs_dask
def test_cluster_jacobian_twice_the_budget(client, tmp_path):
    """A 128 MiB Jacobian with a 64 MiB budget on the caller and on every worker: blocks are computed
    on the workers, the traced peak of every worker (numpy's allocations included) and of this
    process stay under the budget; .sum() matches the closed form, a .to_zarr store round-trips."""
    import dask.array as da

    tj.set_memory_budget(BUDGET)
    budget = tj.get_memory_budget()
    x = np.linspace(0.1, 1.0, 256)  # 256**3 * 8 bytes = 128 MiB
    f = lambda x: np.outer(np.sin(x), x)
    client.compute(tjd.jacobian(f, x[:3]).sum()).result()  # warm-up: imports are not the Jacobian's memory
    client.run(dfn.start_tracing)
    tracemalloc.start()
    try:
        J = tjd.jacobian(f, x)
        assert J.nbytes == 2 * budget
        total = within(120, lambda: client.compute(J.sum()).result())
        _, peak_here = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        peaks = client.run(dfn.traced_peak)
    np.testing.assert_allclose(total, _outer_sum(x), rtol=1e-12)
    print(f"traced peaks: workers {sorted(round(p / MIB, 1) for p in peaks.values())} MiB, caller {peak_here / MIB:.1f} MiB")
    assert all(0 < p < budget for p in peaks.values()), {k: f"{p / MIB:.1f} MiB" for k, p in peaks.items()}
    assert peak_here < budget, f"{peak_here / MIB:.1f} MiB"
    # zarr: written by the workers, read back block by block
    pytest.importorskip("zarr")
    small = tjd.jacobian(f, x[:40], chunks=(9, 40, 13))
    within(120, lambda: client.compute(small.to_zarr(str(tmp_path / "J.zarr"), compute=False)).result())
    back = da.from_zarr(str(tmp_path / "J.zarr"))
    np.testing.assert_array_equal(back.compute(scheduler="sync"), tj.jacobian(f, x[:40]))


@needs_dask
def test_cluster_ops_match(client):
    A, B = rng.standard_normal((6, 5)), rng.standard_normal((4, 3))
    for layout in LAYOUTS:
        J = tjd.jacobian(tj.kron, A, B, layout=layout, chunks=7)
        assert_same_bits(client.compute(J).result(), tj.jacobian(tj.kron, A, B, layout=layout))


def test_no_stray_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import tensorjac.dask  # noqa: F401  (importing never warns, with or without dask)
