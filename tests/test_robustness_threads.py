"""Issue 9: absurd thread counts are capped, bad ones are refused with a clear error.

``num_threads=10**9`` used to segfault inside libgomp and ``2**31`` gave a
pybind11 TypeError naming private functions.  Any positive int is accepted and
capped at the CPUs available to the process; results stay bitwise identical.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorjac as tj

HUGE_COUNTS = [10**9, 2**31 - 1, 2**31, 2**63, 10**30]
BAD_COUNTS = [
    (True, TypeError), (False, TypeError), (2.0, TypeError), (np.float64(2), TypeError), ("2", TypeError),
    (1j, TypeError), (0, ValueError), (-1, ValueError), (-(2**70), ValueError),
]  # fmt: skip


def cap() -> int:
    """The documented cap, computed independently: CPUs in the affinity mask (1 without OpenMP)."""
    if not tj._core.openmp:
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


RNG = np.random.default_rng(9)
X = RNG.standard_normal((200, 200))  # 40 000 elements: above the parallel grain
Y = RNG.standard_normal((200, 200))
A = RNG.standard_normal((16, 16))
B = RNG.standard_normal((16, 16))


def kernels(nt):
    """One call of every kernel family with num_threads=nt, each big enough to go parallel."""
    return {
        "expand": tj.jacobian(tj.sandwich, A, A, B, wrt=1, num_threads=nt),  # 16**4 = 65 536
        "expand-diagonal": tj.jacobian(tj.multiply, X, Y, layout="diagonal", num_threads=nt),
        "op.jacobian": tj.exp.jacobian(X[:20, :20], layout="vec", num_threads=nt),
        "mul_rows": tj.vjp(tj.exp, X, cotangent=np.stack([Y, 2 * Y]), num_threads=nt),
        "kron_vjp_a": tj.vjp(tj.kron, A, B, cotangent=np.ones((3, 256, 256)), wrt=0, num_threads=nt),
        "kron_vjp_b": tj.vjp(tj.kron, A, B, cotangent=np.ones((3, 256, 256)), wrt=1, num_threads=nt),
        "kron_batched": tj.jvp(tj.kron, A, B, tangent=np.ones((3, 16, 16)), wrt=0, num_threads=nt),
        "fd": tj.fd.jacobian(np.sin, X[0, :64], num_threads=nt),
        "fd-vectorized": tj.fd.jacobian(lambda v: np.sin(v), X[0, :64], vectorized=True, num_threads=nt),
    }


SERIAL = kernels(1)


def test_serial_results_are_right():
    """The reference the huge-count results are compared with is itself right."""
    np.testing.assert_allclose(SERIAL["expand"], np.einsum("ik,lj->ijkl", A, B), rtol=1e-13)
    np.testing.assert_array_equal(SERIAL["expand-diagonal"], Y)
    np.testing.assert_allclose(SERIAL["mul_rows"], np.stack([Y, 2 * Y]) * np.exp(X), rtol=1e-14)
    np.testing.assert_allclose(SERIAL["kron_vjp_a"], np.broadcast_to(B.sum(), (3, 16, 16)), rtol=1e-12)
    np.testing.assert_allclose(SERIAL["kron_vjp_b"], np.broadcast_to(A.sum(), (3, 16, 16)), rtol=1e-12)
    np.testing.assert_array_equal(SERIAL["kron_batched"], np.broadcast_to(np.kron(np.ones((16, 16)), B), (3, 256, 256)))
    np.testing.assert_allclose(SERIAL["fd"], np.diag(np.cos(X[0, :64])), atol=1e-8)


@pytest.mark.parametrize("nt", HUGE_COUNTS)
def test_huge_per_call_counts_are_capped(nt):
    got = kernels(nt)
    for name, want in SERIAL.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
        assert got[name].tobytes() == want.tobytes(), name


@pytest.mark.parametrize("nt", HUGE_COUNTS)
def test_huge_default_is_capped(nt):
    tj.set_num_threads(nt)
    assert tj.get_num_threads() == cap()
    got = kernels(None)
    for name, want in SERIAL.items():
        assert got[name].tobytes() == want.tobytes(), name


@pytest.mark.parametrize("n", [1, 2, 3, 64])
def test_get_num_threads_is_the_effective_count(n):
    tj.set_num_threads(n)
    assert tj.get_num_threads() == min(n, cap())
    assert type(tj.get_num_threads()) is int


def test_numpy_integers_accepted():
    tj.set_num_threads(np.int64(1))
    assert tj.get_num_threads() == 1
    np.testing.assert_array_equal(tj.jacobian(tj.multiply, X, Y, layout="diagonal", num_threads=np.int32(2)), Y)


@pytest.mark.parametrize(("bad", "exc"), BAD_COUNTS, ids=[repr(b) for b, _ in BAD_COUNTS])
def test_bad_counts_refused_naming_num_threads(bad, exc):
    tj.set_num_threads(1)
    calls = [
        lambda: tj.set_num_threads(bad),
        lambda: tj.jacobian(tj.sandwich, A, A, B, wrt=1, num_threads=bad),
        lambda: tj.exp.jacobian(X, layout="diagonal", num_threads=bad),
        lambda: tj.vjp(tj.exp, X, cotangent=Y, num_threads=bad),
        lambda: tj.jvp(tj.kron, A, B, tangent=A, num_threads=bad),
        lambda: tj.fd.jacobian(np.sin, X[0, :4], num_threads=bad),
    ]
    for call in calls:
        with pytest.raises(exc, match="num_threads") as info:
            call()
        assert "_core" not in str(info.value) and "incompatible function arguments" not in str(info.value)
    assert tj.get_num_threads() == 1  # a refused setting changes nothing


def test_set_num_threads_none_refused():
    with pytest.raises(TypeError, match="num_threads"):
        tj.set_num_threads(None)  # type: ignore[arg-type]


def _fresh(code: str, **env: str) -> str:
    r = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_omp_num_threads_env_is_capped():
    code = (
        "import numpy as np, tensorjac as tj\n"
        "X = np.arange(40000.0).reshape(200, 200)\n"
        "D = tj.jacobian(tj.multiply, X, X + 1, layout='diagonal')\n"
        "print(tj.get_num_threads(), bool((D == X + 1).all()))\n"
    )
    assert _fresh(code, OMP_NUM_THREADS="1000000000").split() == [str(cap()), "True"]
    assert _fresh(code, OMP_NUM_THREADS="1").split() == ["1", "True"]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_cap_follows_the_affinity_mask():
    """A process restricted to one CPU (taskset) caps every count at 1."""
    code = (
        "import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})\n"
        "import numpy as np, tensorjac as tj\n"
        "tj.set_num_threads(8)\n"
        "X = np.ones((200, 200))\n"
        "D = tj.jacobian(tj.multiply, X, X, layout='diagonal', num_threads=10**9)\n"
        "print(tj.get_num_threads(), float(D.sum()))\n"
    )
    assert _fresh(code).split() == ["1", "40000.0"]
