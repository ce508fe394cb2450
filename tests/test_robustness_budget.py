"""Issue 9: the memory budget variable and setter accept the same values and refuse bad ones clearly.

``TENSORJAC_MEMORY_BUDGET=inf``, ``nan`` or ``1e400`` used to make ``import
tensorjac`` fail and ``0.1`` silently set a zero budget.  A bad variable now
gives a RuntimeWarning naming it and its value, and the default is used.
"""

from __future__ import annotations

import doctest
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorjac as tj
import tensorjac._config

ENV = "TENSORJAC_MEMORY_BUDGET"
GIB = 2**30


def physical_half() -> int:
    """The documented default, computed independently: half of the physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


VALID = [
    ("1G", GIB), ("512M", 512 * 2**20), ("4000000000", 4_000_000_000), ("1.5G", 3 * GIB // 2),
    ("4GiB", 4 * GIB), ("4 GB", 4 * GIB), ("2kb", 2048), (" 64k ", 65536), ("1T", 2**40), ("1e9", 10**9),
    ("1_000", 1000), ("1.5", 1), ("3", 3),
]  # fmt: skip
BAD_STRINGS = ["inf", "-inf", "nan", "1e400", "0.1", "0", "-5", "-1G", "abc", "   ", "G", "0x10", "4 GBytes", "1e-10G"]


@pytest.mark.parametrize(("text", "nbytes"), VALID, ids=[v for v, _ in VALID])
def test_valid_strings_in_env_and_setter(text, nbytes, monkeypatch):
    tj.set_memory_budget(text)
    assert tj.get_memory_budget() == nbytes
    tj.set_memory_budget(7)
    monkeypatch.setenv(ENV, text)
    tj.set_memory_budget(None)  # re-reads the variable
    assert tj.get_memory_budget() == nbytes


@pytest.mark.parametrize("text", BAD_STRINGS)
def test_bad_env_warns_and_falls_back_to_default(text, monkeypatch):
    monkeypatch.setenv(ENV, text)
    with pytest.warns(RuntimeWarning) as rec:
        tj.set_memory_budget(None)
    msg = str(rec[0].message)
    assert f"{ENV}={text!r}" in msg and "default" in msg, msg
    assert tj.get_memory_budget() == physical_half()


@pytest.mark.parametrize("text", BAD_STRINGS)
def test_bad_strings_refused_by_setter(text):
    tj.set_memory_budget(12345)
    with pytest.raises(ValueError, match="memory budget") as info:
        tj.set_memory_budget(text)
    assert repr(text) in str(info.value)
    assert tj.get_memory_budget() == 12345


@pytest.mark.parametrize(
    ("bad", "exc"),
    [
        (0, ValueError), (-1, ValueError), (-(2**70), ValueError), (0.0, ValueError), (-2.5, ValueError),
        (float("nan"), ValueError), (float("inf"), ValueError), (np.float64("nan"), ValueError),
        (0.4, ValueError), (1e-300, ValueError), (True, TypeError), (False, TypeError), (np.True_, TypeError),
        ([1], TypeError), (b"1G", TypeError), (1j, TypeError),
    ],
    ids=repr,
)  # fmt: skip
def test_bad_values_refused_by_setter(bad, exc):
    tj.set_memory_budget(12345)
    with pytest.raises(exc, match="memory budget"):
        tj.set_memory_budget(bad)
    assert tj.get_memory_budget() == 12345


@pytest.mark.parametrize(
    ("value", "nbytes"),
    [(10**9, 10**9), (np.int64(2**40), 2**40), (2**70, 2**70), (1e9, 10**9), (2.9, 2), (np.float32(1024), 1024)],
    ids=repr,
)
def test_numbers_accepted_by_setter(value, nbytes):
    tj.set_memory_budget(value)
    assert tj.get_memory_budget() == nbytes
    assert type(tj.get_memory_budget()) is int


def test_string_budget_is_enforced():
    X = np.ones((6, 6))  # tensor Jacobian of multiply: 6**4 * 8 = 10 368 bytes
    tj.set_memory_budget("10K")  # 10 240 bytes
    with pytest.raises(tj.JacobianTooLargeError, match="(6, 6, 6, 6)"):
        tj.jacobian(tj.multiply, X, X)
    tj.set_memory_budget("11K")
    np.testing.assert_array_equal(tj.jacobian(tj.multiply, X, 2 * X), 2 * np.einsum("ik,jl->ijkl", np.eye(6), np.eye(6)))


@pytest.mark.parametrize("text", ["inf", "nan", "1e400", "0.1"])
def test_import_with_bad_env_warns_instead_of_failing(text):
    code = "import tensorjac as tj; print(tj.get_memory_budget())"
    env = {**os.environ, ENV: text}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == physical_half()
    assert "RuntimeWarning" in r.stderr and f"{ENV}={text!r}" in r.stderr, r.stderr


def test_config_docstring_examples():
    result = doctest.testmod(tensorjac._config, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted >= 15
    assert result.failed == 0
