"""The memory budget: oversized Jacobians are refused before allocation."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import tensorjac as tj
from conftest import LAYOUTS

GIB = 2**30


def huge(shape):
    """A read-only array of any size that costs no memory (zero strides)."""
    return np.broadcast_to(np.float64(1.5), shape)


def _gib_numbers(msg: str) -> list[float]:
    return [float(m.replace(",", "")) for m in re.findall(r"\d[\d,]*\.?\d*(?:e[+-]?\d+)?", msg)]


def test_error_type():
    assert issubclass(tj.JacobianTooLargeError, MemoryError)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_multiply_2000x2000_refused(layout):
    tj.set_memory_budget(16 * GIB)
    X = np.ones((2000, 2000))
    with pytest.raises(tj.JacobianTooLargeError) as exc:
        tj.jacobian(tj.multiply, X, X, wrt=0, layout=layout)
    assert type(exc.value) is tj.JacobianTooLargeError  # not numpy's own MemoryError
    msg = str(exc.value)
    shape = (2000,) * 4 if layout in ("tensor", "gradient", "numerator") else (4 * 10**6, 4 * 10**6)
    assert str(shape) in msg, msg
    assert "GiB" in msg
    assert "vjp" in msg and "jvp" in msg
    want_gib = 2000**4 * 8 / GIB  # 119209.29 GiB (128 TB)
    assert any(abs(v - want_gib) <= 0.01 * want_gib for v in _gib_numbers(msg)), msg


def test_refused_before_allocation():
    """Nothing of the size of the Jacobian is allocated before the refusal."""
    rng = np.random.default_rng(0)
    A, X, B = rng.standard_normal((20, 20)), rng.standard_normal((20, 20)), rng.standard_normal((20, 20))
    nbytes = 20**4 * 8  # 1.28 MB
    tj.set_memory_budget(nbytes // 4)
    tracemalloc.start()
    try:
        with pytest.raises(tj.JacobianTooLargeError):
            tj.jacobian(tj.sandwich, A, X, B, wrt=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < nbytes // 4


def test_budget_boundary():
    A, X, B = (np.ones((3, 3)),) * 3
    nbytes = 3**4 * 8
    tj.set_memory_budget(nbytes)
    assert tj.get_memory_budget() == nbytes
    np.testing.assert_array_equal(tj.jacobian(tj.sandwich, A, X, B, wrt=1), np.einsum("ik,lj->ijkl", A, B))
    tj.set_memory_budget(nbytes - 1)
    with pytest.raises(tj.JacobianTooLargeError) as exc:
        tj.jacobian(tj.sandwich, A, X, B, wrt=1)
    assert "(3, 3, 3, 3)" in str(exc.value)
    # float32 halves the size
    np.testing.assert_array_equal(
        tj.jacobian(tj.sandwich, *(a.astype(np.float32) for a in (A, X, B)), wrt=1),
        np.einsum("ik,lj->ijkl", A, B).astype(np.float32),
    )
    # the diagonal layout is small enough
    np.testing.assert_array_equal(tj.jacobian(tj.multiply, A, X, layout="diagonal"), X)
    # values are not Jacobians
    np.testing.assert_array_equal(tj.sandwich(A, X, B), A @ X @ B)


def test_set_get_and_restore_default():
    tj.set_memory_budget(None)
    default = tj.get_memory_budget()
    assert isinstance(default, int) and default > 0
    tj.set_memory_budget(12345)
    assert tj.get_memory_budget() == 12345
    tj.set_memory_budget(None)
    assert tj.get_memory_budget() == default
    # the default is what a fresh process reports
    r = subprocess.run(
        [sys.executable, "-c", "import tensorjac as tj; print(tj.get_memory_budget())"],
        env=dict(os.environ), capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert int(r.stdout) == default


@pytest.mark.parametrize("bad", [0, -1])
def test_set_memory_budget_rejects_non_positive(bad):
    tj.set_memory_budget(10**9)
    with pytest.raises((ValueError, TypeError)):
        tj.set_memory_budget(bad)
    assert tj.get_memory_budget() == 10**9


def _run_with_env(value: str, code: str) -> str:
    env = dict(os.environ)
    env["TENSORJAC_MEMORY_BUDGET"] = value
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.parametrize(("value", "nbytes"), [("1M", 2**20), ("512K", 512 * 2**10), ("2G", 2 * GIB), ("1000000", 10**6)])
def test_env_var_budget(value, nbytes):
    code = (
        "import tensorjac as tj\n"
        "a = tj.get_memory_budget()\n"
        "tj.set_memory_budget(77)\n"
        "tj.set_memory_budget(None)\n"
        "print(a, tj.get_memory_budget())\n"
    )
    assert _run_with_env(value, code).split() == [str(nbytes), str(nbytes)]


def test_env_var_budget_is_enforced():
    code = (
        "import numpy as np, tensorjac as tj\n"
        "X = np.ones((20, 20))\n"  # tensor Jacobian 1.28 MB > 1 MiB
        "try:\n"
        "    tj.jacobian(tj.multiply, X, X)\n"
        "    print('allocated')\n"
        "except tj.JacobianTooLargeError as e:\n"
        "    print('refused', '(20, 20, 20, 20)' in str(e))\n"
        "print(tj.jacobian(tj.multiply, np.ones((10, 10)), X[:10, :10]).shape)\n"  # 80 kB fits
    )
    assert _run_with_env("1M", code).splitlines() == ["refused True", "(10, 10, 10, 10)"]


# ----------------------------------------------------------------------------- huge shapes never overflow


HUGE = [
    ("multiply", (huge((10**6, 10**6)), huge((10**6, 10**6))), 0),
    ("multiply", (huge((10**6, 10**6)), huge((10**6, 10**6))), 1),
    ("multiply", (huge((10**6,) * 3), huge((10**6,) * 3)), 0),
    ("matmul", (huge((10**5, 10**5)), huge((10**5, 10**5))), 0),
    ("matmul", (huge((10**5, 10**5)), huge((10**5, 10**5))), 1),
    ("matmul", (huge((10**6, 10**6)), huge(10**6)), 0),
    ("sandwich", (huge((10**5, 10**5)),) * 3, 0),
    ("sandwich", (huge((10**5, 10**5)),) * 3, 1),
    ("sandwich", (huge((10**5, 10**5)),) * 3, 2),
    ("kron", (huge((10**3, 10**3)), huge((10**3, 10**3))), 0),
    ("kron", (huge((10**3, 10**3)), huge((10**3, 10**3))), 1),
    ("outer", (huge(10**6), huge(10**6)), 0),
    ("transpose", (huge((10**6, 10**6)),), 0),
    ("inv", (huge((10**5, 10**5)),), 0),
    ("trace", (huge((10**6, 10**6)),), 0),
    ("det", (huge((10**6, 10**6)),), 0),
    ("logdet", (huge((10**6, 10**6)),), 0),
    ("dot", (huge(10**12), huge(10**12)), 0),
    ("quadratic", (huge(10**6), huge((10**6, 10**6))), 1),
    ("sum", (huge((10**6, 10**6)),), 0),
    ("norm", (huge((10**6, 10**6)),), 0),
    ("exp", (huge((10**6, 10**6)),), 0),
    ("sqrt", (huge((10**6, 10**6)),), 0),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("name", "args", "wrt"), HUGE, ids=[f"{n}-wrt{w}-{i}" for i, (n, a, w) in enumerate(HUGE)])
def test_huge_shapes_refused(name, args, wrt, layout):
    """Refused with JacobianTooLargeError before any work (the factors of these
    inputs would take hours and terabytes), never an overflow or a crash."""
    tj.set_memory_budget(GIB)
    with pytest.raises(tj.JacobianTooLargeError) as exc:
        tj.jacobian(getattr(tj, name), *args, wrt=wrt, layout=layout)
    assert "GiB" in str(exc.value)


@pytest.mark.parametrize("name", ["multiply", "exp", "abs"])
def test_huge_diagonal_refused(name):
    tj.set_memory_budget(GIB)
    X = huge((10**6, 10**6))
    args = (X, X) if name == "multiply" else (X,)
    with pytest.raises(tj.JacobianTooLargeError) as exc:
        tj.jacobian(getattr(tj, name), *args, layout="diagonal")
    assert "(1000000, 1000000)" in str(exc.value)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("outer", (huge(10**10), huge(10**10))),  # output 1e20 entries: more than int64 counts
        ("kron", (huge((10**5, 10**5)), huge((10**5, 10**5)))),
    ],
    ids=["outer-1e10", "kron-1e5"],
)
def test_huge_output_beyond_int64_refused(name, args, layout):
    """Even when a side of the Jacobian has more than 2**63 entries, the answer is
    JacobianTooLargeError (with the exact shape), not an integer overflow."""
    tj.set_memory_budget(GIB)
    with pytest.raises(tj.JacobianTooLargeError) as exc:
        tj.jacobian(getattr(tj, name), *args, wrt=0, layout=layout)
    assert "GiB" in str(exc.value)
