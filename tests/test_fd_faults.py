"""tj.fd faults (f raising, NaN, mutating f) and the parallel paths (threads, executors, C++ threads)."""

from __future__ import annotations

import re
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest
import tensorjac as tj


# Module level so that process-pool workers can unpickle them.
def smooth(x: np.ndarray) -> np.ndarray:
    """A non-trivial smooth map R^(2x3) -> R^(3,): rows of sin(x) @ [1, 2, 3] + prod of squares."""
    return np.sin(x).T @ np.array([1.0, 2.0]) + np.prod(1.0 + x**2, axis=0)


def fails_on_negative_entry(x: np.ndarray) -> np.ndarray:
    if (x < -0.5).any():
        raise ArithmeticError("negative input")
    return x**2


class Boom(Exception):
    pass


def test_f_raising_on_kth_call_propagates_the_original_exception():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    before = x.copy()
    boom = Boom("third call")
    calls = []

    def f(v):
        calls.append(v.copy())
        if len(calls) == 3:
            raise boom
        return v * 2

    with pytest.raises(Boom) as info:
        tj.fd.jacobian(f, x, method="central")
    assert info.value is boom  # the same object, not a wrapper
    notes = "\n".join(getattr(boom, "__notes__", []))
    # call 1 is f(x); calls 2 and 3 perturb x[0, 0] by +h and -h
    assert "x[0, 0] -=" in notes and "perturbation 2 of 2" in notes
    np.testing.assert_array_equal(x, before)
    assert x.flags.writeable


def test_f_raising_at_x_and_in_a_stack():
    def at_x(v):
        raise KeyError("k")

    with pytest.raises(KeyError) as info:
        tj.fd.jacobian(at_x, np.ones(2))
    assert "unperturbed x" in "\n".join(info.value.__notes__)

    def stack(S):
        if S.shape[0] > 1:
            raise Boom("stack")
        return S

    with pytest.raises(Boom) as info:
        tj.fd.jacobian(stack, np.ones((2, 2)), vectorized=True, chunk_size=4)
    notes = "\n".join(info.value.__notes__)
    assert "stack of 4 perturbed inputs" in notes and "x[0, 0] to x[0, 1]" in notes


def test_f_mutating_its_input_does_not_touch_x():
    x = np.linspace(0.0, 1.0, 4)
    before = x.copy()

    def f(v):
        v += 100.0  # bad manners: f works in place on its argument
        return v - 100.0

    J = tj.fd.jacobian(f, x, method="central")
    np.testing.assert_array_equal(x, before)
    np.testing.assert_allclose(J, np.eye(4), atol=1e-8)


def test_nan_is_flagged_and_kept():
    x = np.array([0.5, 1.0, 2.0])

    def f(v):  # f[1] is NaN whenever x[2] is perturbed
        y = v.copy()
        y[1] = np.nan if v[2] != 2.0 else y[1]
        return y

    with pytest.warns(tj.fd.NonFiniteWarning, match=r"d f\[1\] / d x\[2\]"):
        J = tj.fd.jacobian(f, x)
    assert np.isnan(J[1, 2])
    assert np.isfinite(np.delete(J.ravel(), 1 * 3 + 2)).all()


def test_nan_warning_names_entries_in_any_layout():
    def f(v):  # every perturbation of x[1] gives inf in f[1]: no stencil avoids it
        return np.where(v != 0.5, np.inf, v) if v[1] != 0.5 else v

    x = np.array([0.0, 0.5, 0.0])
    with pytest.warns(tj.fd.NonFiniteWarning, match=r"d f\[1\] / d x\[1\]"):
        J = tj.fd.jacobian(f, x, layout="gradient")
    assert not np.isfinite(J[1, 1])


def test_domain_end_switches_to_one_sided():
    """f(x) is finite but the default stencil crosses x = 0.99 where f becomes inf:
    the entry is redone one-sided (backward), and the result is exact (f is linear)."""
    def f(v):
        return np.where(v > 0.99, np.inf, v)

    x = np.array([0.0, 0.99 - 1e-9, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for method in ("central", "richardson", "forward"):
            J = tj.fd.jacobian(f, x, layout="gradient", method=method)
            np.testing.assert_allclose(J, np.eye(3), atol=1e-9)


def test_no_warning_for_finite_results():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tj.fd.jacobian(np.sin, np.ones(3))


@pytest.mark.parametrize("method", ["central", "richardson"])
def test_thread_pool_matches_serial(method):
    x = np.random.default_rng(0).standard_normal((2, 3))
    serial = tj.fd.jacobian(smooth, x, method=method)
    threaded = tj.fd.jacobian(smooth, x, method=method, num_threads=2)
    np.testing.assert_array_equal(serial, threaded)
    with ThreadPoolExecutor(3) as ex:
        np.testing.assert_array_equal(serial, tj.fd.jacobian(smooth, x, method=method, executor=ex))


def test_process_pool_matches_serial():
    x = np.random.default_rng(1).standard_normal((2, 3))
    serial = tj.fd.jacobian(smooth, x, method="richardson", layout="vec")
    with ProcessPoolExecutor(2) as ex:
        pooled = tj.fd.jacobian(smooth, x, method="richardson", layout="vec", executor=ex)
        np.testing.assert_array_equal(serial, pooled)
        # a raising f: the same exception type comes back, with the context note
        with pytest.raises(ArithmeticError, match="negative input") as info:
            tj.fd.jacobian(fails_on_negative_entry, np.array([0.0, -0.5 + 1e-9]), executor=ex, step=0.01)
        assert "x[1] -= 0.01" in "\n".join(info.value.__notes__)


def test_thread_pool_raising():
    x = np.array([0.0, -0.5 + 1e-9])
    before = x.copy()
    with pytest.raises(ArithmeticError):
        tj.fd.jacobian(fails_on_negative_entry, x, step=0.01, num_threads=2)
    np.testing.assert_array_equal(x, before)


def test_vectorized_with_executor_chunks():
    x = np.linspace(-1, 1, 7)
    serial = tj.fd.jacobian(np.tanh, x, method="richardson", vectorized=True, chunk_size=5)
    with ThreadPoolExecutor(2) as ex:
        par = tj.fd.jacobian(np.tanh, x, method="richardson", vectorized=True, chunk_size=5, executor=ex)
    np.testing.assert_array_equal(serial, par)
    np.testing.assert_allclose(serial, np.diag(1 - np.tanh(x) ** 2), atol=1e-11)


def test_kernel_threads_bitwise_identical():
    # big enough for the C++ kernels to use their OpenMP team (>= 4M elements of work)
    x = np.linspace(-2, 2, 1024)
    W = np.linspace(0.5, 1.5, 1024)
    f = lambda S: np.sin(S) * W
    kw = dict(method="richardson", vectorized=True, return_error=True, layout="vec")
    J1, e1 = tj.fd.jacobian(f, x, num_threads=1, **kw)
    J2, e2 = tj.fd.jacobian(f, x, num_threads=2, **kw)
    assert J1.tobytes() == J2.tobytes() and e1.tobytes() == e2.tobytes()
    np.testing.assert_allclose(np.diag(J1), np.cos(x) * W, atol=1e-11)


def test_nan_at_x_is_flagged_even_when_unused():
    with pytest.warns(tj.fd.NonFiniteWarning) as rec:
        tj.fd.jacobian(lambda v: np.array([v[0], np.nan if v[1] == 1.0 else v[1]]), np.ones(2), method="central")
    messages = [str(w.message) for w in rec]
    assert any(re.search(r"f\(x\) itself is not finite at f\[1\]", m) for m in messages)
    assert any("d f[1] / d x[0]" in m for m in messages)  # and the Jacobian entry it spoils
