"""Errors of the composite engine (COMPOSITE_SPEC.md): never a silently wrong or zero derivative.

Unsupported numpy functions and ufuncs, escapes of a traced value to plain
Python/numpy (np.asarray, float(), .item(), .tolist()), writes of a traced value
into a plain ndarray, non-holomorphic functions of complex traced values, bad
wrt / layout / out= / num_threads, bad inputs and f returning a non-numeric
object.  All of these need the engine; today the whole module is skipped.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorjac as tj
from composite_cases import SPD, WC, needs_engine

pytestmark = needs_engine


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _points_to_fd(msg: str) -> None:
    assert "tj.fd.jacobian" in msg, msg


# ----------------------------------------------------------------------------- unsupported functions

UNSUPPORTED = {  # label: (f, input, names the message may use for the function)
    "np.fft.fft": (lambda x: np.fft.fft(x), np.arange(1.0, 5.0), ("fft",)),
    "np.fft.rfft": (lambda x: np.fft.rfft(x).real, np.arange(1.0, 5.0), ("rfft",)),
    "np.convolve": (lambda x: np.convolve(x, np.array([1.0, 2.0])), np.arange(1.0, 5.0), ("convolve",)),
    "np.linalg.svd": (lambda X: np.linalg.svd(X)[1], np.arange(1.0, 7.0).reshape(2, 3), ("svd",)),
    "np.linalg.qr": (lambda X: np.linalg.qr(X)[1], np.arange(1.0, 7.0).reshape(3, 2), ("qr",)),
    "np.linalg.lstsq": (lambda X: np.linalg.lstsq(X, np.ones(3))[0], np.arange(1.0, 7.0).reshape(3, 2), ("lstsq",)),
    "np.linalg.eig": (lambda X: np.linalg.eig(X)[0], np.array([[2.0, 1.0], [0.5, 3.0]]), ("eig",)),
    "np.linalg.pinv": (lambda X: np.linalg.pinv(X), np.arange(1.0, 7.0).reshape(3, 2), ("pinv", "svd")),
}


@pytest.mark.parametrize("label", sorted(UNSUPPORTED))
def test_unsupported_numpy_function(label):
    f, x, names = UNSUPPORTED[label]
    x0 = x.copy()
    with pytest.raises(TypeError) as exc:
        tj.jacobian(f, x)
    msg = str(exc.value)
    assert any(n in msg for n in names), msg
    _points_to_fd(msg)
    np.testing.assert_array_equal(x, x0)
    for call in (lambda: tj.value_and_jacobian(f, x), lambda: tj.vjp(f, x, cotangent=np.ones(np.shape(f(x))))):
        with pytest.raises(TypeError):
            call()


def test_unsupported_functions_on_constants_are_fine():
    """Only the traced path is restricted: unsupported functions of constants just run."""
    c = np.array([1.0, 2.0, 0.5, 3.0])
    x = np.array([0.3, -0.2, 0.5, 0.1])
    s = float(np.abs(np.fft.fft(c)).sum() + np.sort(c)[0] + np.linalg.svd(np.outer(c, c))[1][0])
    J = tj.jacobian(lambda x, c: x * (np.abs(np.fft.fft(c)).sum() + np.sort(c)[0]
                                      + np.linalg.svd(np.outer(c, c))[1][0]), x, c)
    np.testing.assert_allclose(J, s * np.eye(4), rtol=1e-14)


# ----------------------------------------------------------------------------- escaping the trace

ESCAPES = {  # label: (f, input, names the message may use)
    "np.asarray": (lambda x: np.asarray(x) * 2, np.ones(3), ("array",)),
    "np.array": (lambda x: np.array(x) * 2, np.ones(3), ("array",)),
    "np.array_of_list": (lambda x: np.array([x[0], 1.0]), np.ones(3), ("array",)),
    "float": (lambda x: float(x[0]) * x, np.ones(3), ("float",)),
    "float_0d": (lambda x: float(np.sum(x)) * x, np.ones(3), ("float",)),
    "int": (lambda x: int(x[0]) * x, np.ones(3), ("int",)),
    "math.sqrt": (lambda x: math.sqrt(x[0]) * x, np.ones(3), ("float", "sqrt")),
    ".item": (lambda x: x[0].item() * x, np.ones(3), ("item",)),
    ".tolist": (lambda x: np.array(x.tolist()), np.ones(3), ("tolist",)),
}


@pytest.mark.parametrize("label", sorted(ESCAPES))
def test_escaping_the_trace(label):
    f, x, names = ESCAPES[label]
    with pytest.raises(TypeError) as exc:
        tj.jacobian(f, x)
    msg = str(exc.value)
    assert any(n in msg for n in names), msg
    _points_to_fd(msg)


# ----------------------------------------------------------------------------- writing into plain arrays


def _setitem(x):
    a = np.zeros(3)
    a[0] = x[0]
    return a


def _slice_set(x):
    a = np.zeros(3)
    a[:] = x
    return a


def _iadd(x):
    a = np.ones(3)
    a += x
    return a


def _out_add(x):
    a = np.ones(3)
    np.add(a, x, out=a)
    return a


def _out_exp(x):
    a = np.empty(3)
    np.exp(x, out=a)
    return a


def _out_tuple(x):
    a = np.empty(3)
    np.multiply(x, 2.0, out=(a,))
    return a


FOREIGN = {"setitem": _setitem, "slice_set": _slice_set, "iadd": _iadd, "ufunc_out": _out_add, "exp_out": _out_exp,
           "out_tuple": _out_tuple}


@pytest.mark.parametrize("label", sorted(FOREIGN))
def test_writing_traced_into_plain_array(label):
    with pytest.raises(TypeError) as exc:
        tj.jacobian(FOREIGN[label], np.array([0.5, 1.5, -0.5]))
    _points_to_fd(str(exc.value))


def test_writing_into_users_constant_is_refused_before_writing():
    x = np.array([0.5, 1.5, -0.5])
    a = np.array([1.0, 2.0, 3.0])

    def f(x, a):
        a += x  # a is the user's own array (a constant): must raise before modifying it
        return a

    with pytest.raises(TypeError):
        tj.jacobian(f, x, a)
    np.testing.assert_array_equal(a, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(x, [0.5, 1.5, -0.5])

    def g(x, a):
        a[1] = x[0]
        return a * x

    with pytest.raises(TypeError):
        tj.jacobian(g, x, a)
    np.testing.assert_array_equal(a, [1.0, 2.0, 3.0])


# ----------------------------------------------------------------------------- non-holomorphic on complex values


def _cz(r, *shape):
    return r.standard_normal(shape) + 0.5j * r.standard_normal(shape)


NON_HOLOMORPHIC = {
    "np.abs": lambda z: np.abs(z),
    "abs()": lambda z: abs(z),
    "np.conj": lambda z: np.conj(z),
    "np.conjugate": lambda z: np.conjugate(z),
    ".conj()": lambda z: z.conj(),
    "np.real": lambda z: np.real(z),
    ".real": lambda z: z.real,
    "np.imag": lambda z: np.imag(z),
    ".imag": lambda z: z.imag,
    "np.angle": lambda z: np.angle(z),
    "np.maximum": lambda z: np.maximum(z, 0.1),
    "np.minimum": lambda z: np.minimum(z, z[::-1]),
    "np.max": lambda z: np.max(z),
    "np.min": lambda z: np.min(z),
    "np.clip": lambda z: np.clip(z, -1, 1),
    "np.sign": lambda z: np.sign(z) * z,
    "np.linalg.norm": lambda z: np.linalg.norm(z),
    "slogdet": lambda z: np.linalg.slogdet(np.outer(z, z[::-1]) + 2 * np.eye(4))[1],
    "eigh": lambda z: np.linalg.eigh(np.outer(z, z) + 3 * np.eye(4))[0],
    "eigvalsh": lambda z: np.linalg.eigvalsh(np.outer(z, z) + 3 * np.eye(4)),
    "cholesky": lambda z: np.linalg.cholesky(np.outer(z, z) + 3 * np.eye(4)),
}


@pytest.mark.parametrize("label", sorted(NON_HOLOMORPHIC))
def test_non_holomorphic_on_complex_is_type_error(label):
    z = _cz(_rng(1), 4)
    with pytest.raises(TypeError):
        tj.jacobian(NON_HOLOMORPHIC[label], z)


def test_non_holomorphic_on_real_values_is_fine():
    """The same functions of a real traced value (or of complex constants) are differentiable."""
    x = np.array([0.3, -1.2, 0.8, 2.0])
    c = np.array([1 + 1j, 2 - 1j, 0.5j, 1.0])
    J = tj.jacobian(lambda x: np.abs(x) * np.real(c * np.conj(c)), x)
    np.testing.assert_allclose(J, np.diag(np.sign(x) * np.abs(c) ** 2), rtol=1e-14)


# ----------------------------------------------------------------------------- bad arguments


def _f2(a, b):
    return a * b


@pytest.mark.parametrize(("wrt", "exc"), [(2, IndexError), (-3, IndexError), (5, IndexError), ("c", ValueError),
                                           ("nope", ValueError), (True, TypeError), (1.0, TypeError),
                                           (None, TypeError), ((0, "nope"), ValueError), ((0, 7), IndexError),
                                           ((0, False), TypeError)],
                         ids=["2", "-3", "5", "name_c", "name_nope", "bool", "float", "None", "tuple_badname",
                              "tuple_range", "tuple_bool"])
def test_bad_wrt(wrt, exc):
    a, b = np.ones(2), np.ones(2)
    for fn in (lambda: tj.jacobian(_f2, a, b, wrt=wrt), lambda: tj.grad(lambda a, b: np.sum(a * b), a, b, wrt=wrt),
               lambda: tj.vjp(_f2, a, b, cotangent=np.ones(2), wrt=wrt)):
        with pytest.raises(exc) as info:
            fn()
        assert "wrt" in str(info.value), str(info.value)


@pytest.mark.parametrize("layout", ["bogus", "Tensor", None, 3, ("tensor",)])
def test_bad_layout(layout):
    with pytest.raises(ValueError) as exc:
        tj.jacobian(lambda x: np.tanh(x), np.ones(3), layout=layout)
    assert "tensor" in str(exc.value)  # the message lists the valid layouts


def test_out_with_tuple_wrt_or_tuple_output_is_refused():
    x, y = np.ones(3), np.ones(3)
    with pytest.raises((ValueError, TypeError)):
        tj.jacobian(lambda x, y: x * y, x, y, wrt=(0, 1), out=np.empty((3, 3)))
    with pytest.raises((ValueError, TypeError)):
        tj.jacobian(lambda x: (x, 2 * x), x, out=np.empty((3, 3)))


def test_out_not_an_array():
    with pytest.raises(TypeError):
        tj.jacobian(lambda x: 2 * x, np.ones(3), out=[[0.0] * 3] * 3)


@pytest.mark.parametrize(("num_threads", "exc"), [(0, ValueError), (-1, ValueError), ("2", TypeError),
                                                  (2.0, TypeError), (True, TypeError)])
def test_bad_num_threads(num_threads, exc):
    with pytest.raises(exc):
        tj.jacobian(lambda x: 2 * x, np.ones(3), num_threads=num_threads)


@pytest.mark.parametrize("x", [np.array(["a", "b"]), np.array([1.0, None], dtype=object),
                               np.ones(2, dtype=np.longdouble), [[1.0, 2.0], [3.0]]],
                         ids=["str", "object", "longdouble", "ragged"])
def test_bad_input_arrays(x):
    with pytest.raises(TypeError):
        tj.jacobian(lambda x: x * 2, x)


@pytest.mark.parametrize("ret", ["abc", None, {"a": 1.0}, object(), b"bytes"],
                         ids=["str", "None", "dict", "object", "bytes"])
def test_f_returning_non_numeric(ret):
    with pytest.raises(TypeError):
        tj.jacobian(lambda x: ret, np.ones(3))


def test_f_returning_traced_mixed_with_non_numeric():
    with pytest.raises(TypeError):
        tj.jacobian(lambda x: (2 * x, "label"), np.ones(3))
    with pytest.raises(TypeError):
        tj.jacobian(lambda x: {"y": 2 * x}, np.ones(3))


def test_f_not_callable():
    with pytest.raises(TypeError):
        tj.jacobian(3.0, np.ones(3))
    with pytest.raises(TypeError):
        tj.jacobian("np.tanh", np.ones(3))


def test_arity_mismatch_is_fs_own_type_error():
    """Calling f with the wrong number of arguments raises Python's own TypeError (not a crash)."""
    with pytest.raises(TypeError):
        tj.jacobian(lambda x, y: x * y, np.ones(3))


def test_errors_leave_users_arrays_untouched():
    r = _rng(2)
    S, X = SPD(r, 3), WC(r, 3)
    S0, X0 = S.copy(), X.copy()
    for f, wrt in ((lambda S, X: np.linalg.svd(S @ X)[1], (0, 1)), (lambda S, X: float(S[0, 0]) * X, (0, 1)),
                   (lambda S, X: np.asarray(S) @ X, (0, 1)),
                   (lambda S, X: np.exp(S, out=X), 0)):  # X is the user's constant: a foreign buffer
        with pytest.raises(TypeError):
            tj.jacobian(f, S, X, wrt=wrt)
        np.testing.assert_array_equal(S, S0)
        np.testing.assert_array_equal(X, X0)
