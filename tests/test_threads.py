"""Threads: results are bitwise identical for any thread count; the thread settings."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tensorjac as tj
from conftest import LAYOUTS, VIEW_KINDS, as_view, assert_close, op_of, ref_tensor, ref_value, to_layout

PARALLEL_GRAIN = 2**15  # Jacobians larger than this go parallel


def thread_cap() -> int:
    """The documented cap on thread counts: the CPUs in the affinity mask (1 without OpenMP)."""
    if not tj._core.openmp:
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _big_cases():
    rng = np.random.default_rng(42)
    n = 16
    return {
        "sandwich": (rng.standard_normal((n, n)), rng.standard_normal((n, n)), rng.standard_normal((n, n))),
        "kron": (rng.standard_normal((8, 8)), rng.standard_normal((8, 8))),
        "multiply": (rng.standard_normal((20, 20)), rng.standard_normal((20, 20))),
        "inv": (rng.standard_normal((14, 14)) + 14 * np.eye(14),),  # 14**4 = 38416 > 2**15
        "matmul": (rng.standard_normal((16, 16)), rng.standard_normal((16, 16))),
        "transpose": (rng.standard_normal((14, 15)),),
        "exp": (rng.standard_normal((14, 15)),),
        "outer": (rng.standard_normal((14, 14)), rng.standard_normal(14)),
    }


BIG = _big_cases()
BIG_CASES = [(name, w) for name, args in BIG.items() for w in range(len(args))]


def _want(name, args, wrt, layout):
    return to_layout(ref_tensor(name, args, wrt), np.shape(ref_value(name, *args)), args[wrt].shape, layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("name", "wrt"), BIG_CASES, ids=[f"{n}-wrt{w}" for n, w in BIG_CASES])
def test_bitwise_identical_across_thread_counts(name, wrt, layout):
    args = BIG[name]
    op = op_of(name)
    J1 = tj.jacobian(op, *args, wrt=wrt, layout=layout, num_threads=1)
    assert J1.size > PARALLEL_GRAIN
    for nt in (2, 3, 4):
        Jn = tj.jacobian(op, *args, wrt=wrt, layout=layout, num_threads=nt)
        assert Jn.dtype == J1.dtype and Jn.shape == J1.shape
        assert np.array_equal(Jn, J1)
        assert Jn.tobytes() == J1.tobytes()
    # and the result is right, not merely reproducible
    assert_close(J1, _want(name, args, wrt, layout), rtol=1e-12)


@pytest.mark.parametrize("kind", VIEW_KINDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["sandwich", "kron", "multiply", "inv"])
def test_bitwise_identical_into_noncontiguous_out(name, layout, kind):
    args = BIG[name]
    wrt = 1 if name == "sandwich" else 0
    res = []
    for nt in (1, 2):
        out = as_view(np.full(_want(name, args, wrt, layout).shape, np.nan), kind)
        assert tj.jacobian(op_of(name), *args, wrt=wrt, layout=layout, out=out, num_threads=nt) is out
        res.append(np.array(out, order="C"))
    assert res[0].tobytes() == res[1].tobytes()
    assert_close(res[0], _want(name, args, wrt, layout), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.complex128])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_bitwise_identical_other_dtypes(dtype, layout):
    args = tuple(a.astype(dtype) for a in BIG["sandwich"])
    J1 = tj.jacobian(tj.sandwich, *args, wrt=1, layout=layout, num_threads=1)
    J2 = tj.jacobian(tj.sandwich, *args, wrt=1, layout=layout, num_threads=2)
    assert J1.dtype == np.dtype(dtype)
    assert J1.tobytes() == J2.tobytes()


def test_bitwise_identical_diagonal():
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((200, 200)), rng.standard_normal((200, 200))
    for op, args in ((tj.multiply, (X, Y)), (tj.tanh, (X,)), (tj.sqrt, (np.abs(X) + 0.1,))):
        D1 = tj.jacobian(op, *args, layout="diagonal", num_threads=1)
        D2 = tj.jacobian(op, *args, layout="diagonal", num_threads=2)
        assert D1.size > PARALLEL_GRAIN
        assert D1.tobytes() == D2.tobytes()
    np.testing.assert_array_equal(tj.jacobian(tj.multiply, X, Y, layout="diagonal", num_threads=2), Y)


def test_default_threads_match_explicit():
    args = BIG["sandwich"]
    J1 = tj.jacobian(tj.sandwich, *args, wrt=1, num_threads=1)
    for n in (1, 2, 3):
        tj.set_num_threads(n)
        assert tj.get_num_threads() == min(n, thread_cap())
        assert tj.jacobian(tj.sandwich, *args, wrt=1).tobytes() == J1.tobytes()
        assert tj.sandwich.jacobian(*args, wrt=1, layout="vec").tobytes() == tj.jacobian(
            tj.sandwich, *args, wrt=1, layout="vec", num_threads=1
        ).tobytes()


def test_more_threads_than_work():
    x = np.array([1.0, 2.0])
    np.testing.assert_array_equal(tj.jacobian(tj.square, x, num_threads=64), np.diag(2 * x))
    np.testing.assert_array_equal(tj.jacobian(tj.sum, np.ones((0, 3)), num_threads=8), np.ones((0, 3)))


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize("bad", [0, -1, -8])
def test_num_threads_non_positive_rejected(bad):
    A, B = BIG["matmul"]
    with pytest.raises(ValueError):
        tj.jacobian(tj.matmul, A, B, num_threads=bad)
    with pytest.raises(ValueError):
        tj.matmul.jacobian(A, B, num_threads=bad)
    with pytest.raises(ValueError):
        tj.jacobian(tj.exp, A, layout="diagonal", num_threads=bad)


@pytest.mark.parametrize("bad", [0, -1])
def test_set_num_threads_non_positive_rejected(bad):
    tj.set_num_threads(2)
    with pytest.raises(ValueError):
        tj.set_num_threads(bad)
    assert tj.get_num_threads() == 2  # unchanged by the failed call


def test_set_get_num_threads():
    for n in (1, 2, 5):
        tj.set_num_threads(n)
        assert tj.get_num_threads() == min(n, thread_cap())
    assert isinstance(tj.get_num_threads(), int)


def test_num_threads_setting_is_restored_by_fixture_and_positive():
    assert tj.get_num_threads() >= 1


def _subprocess_threads(env_value: str) -> int:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = env_value
    r = subprocess.run(
        [sys.executable, "-c", "import tensorjac as tj; print(tj.get_num_threads())"],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return int(r.stdout.strip())


def test_omp_num_threads_env_is_honoured():
    assert _subprocess_threads("1") == 1
    assert _subprocess_threads("3") == min(3, thread_cap())


# ----------------------------------------------------------------------------- concurrent Python threads


def test_concurrent_calls_from_python_threads():
    """The GIL is released around the kernels: concurrent calls must not interfere."""
    jobs = []
    for name, w in BIG_CASES:
        for layout in ("tensor", "vec"):
            jobs.append((name, w, layout))
    serial = {j: tj.jacobian(op_of(j[0]), *BIG[j[0]], wrt=j[1], layout=j[2], num_threads=1) for j in jobs}

    def work(job):
        name, w, layout = job
        return job, tj.jacobian(op_of(name), *BIG[name], wrt=w, layout=layout, num_threads=2)

    with ThreadPoolExecutor(max_workers=4) as ex:
        for job, J in ex.map(work, jobs * 3):
            assert J.tobytes() == serial[job].tobytes(), job
