"""Interop (issue 10, part 3): arrays of other libraries as inputs, numpy arrays as outputs.

Every public entry point that takes arrays reads them through ``tensorjac._dtypes.as_array``:
``__array__`` through ``np.asarray``, objects with only ``__dlpack__`` through ``np.from_dlpack``,
both without a copy.  Checked here:

* values: every entry point gives, for a foreign input, the result it gives for the same numpy
  array, to the bit and of the same dtype, and always plain ``np.ndarray`` (float32 and float64);
  the source array is never modified;
* zero-copy: the converted array is a view of the source (``np.shares_memory``), and an ``out=``
  sharing the source's memory is refused as overlapping an input;
* errors: a tensor on a non-CPU DLPack device, a tensor that requires grad, bfloat16, and a
  PyTorch function called on a traced array raise TypeError naming the argument; ``out=`` stays
  numpy only.

Without any library: two pure-Python stand-ins, one with only ``__dlpack__``/``__dlpack_device__``
(delegating to a numpy array's own), one with only ``__array__``; and read-only numpy views (what
JAX gives).  With JAX (CPU) and PyTorch when installed, skipped otherwise.  Both start threads of their
own (JAX warns that a later ``os.fork()`` may deadlock), and other test files fork, so the tests that
import them run in a child pytest process (``test_libraries_in_a_child_process``), with the JAX and
PyTorch examples of docs/interop.md.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorjac as tj
from tensorjac._dtypes import as_array

HAVE_JAX = importlib.util.find_spec("jax") is not None
HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_SCIPY = importlib.util.find_spec("scipy") is not None
CHILD = os.environ.get("TENSORJAC_INTEROP_CHILD") == "1"  # set by test_libraries_in_a_child_process
ROOT = Path(__file__).resolve().parent.parent
needs_jax = pytest.mark.skipif(not (HAVE_JAX and CHILD), reason="jax not installed" if not HAVE_JAX
                               else "runs in a child process (test_libraries_in_a_child_process)")
needs_torch = pytest.mark.skipif(not (HAVE_TORCH and CHILD), reason="torch not installed" if not HAVE_TORCH
                                 else "runs in a child process (test_libraries_in_a_child_process)")


# ----------------------------------------------------------------------------- stand-ins


class DLPackOnly:
    """Only the DLPack protocol, delegating to a numpy array (what a tensor library without
    ``__array__`` offers)."""

    def __init__(self, a: np.ndarray) -> None:
        self._a = a

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


class ArrayOnly:
    """Only ``__array__`` (numpy's protocol), returning the wrapped array itself."""

    def __init__(self, a: np.ndarray) -> None:
        self._a = a

    def __array__(self, dtype=None, copy=None):
        if copy:
            return np.array(self._a, dtype=dtype, copy=True)
        return self._a if dtype is None else self._a.astype(dtype, copy=False)


class FakeTensor:
    """Both protocols, like PyTorch and JAX, with a device and ``requires_grad`` (PyTorch's refusals
    of ``numpy()`` reproduced: a GPU tensor or one that requires grad cannot be read)."""

    def __init__(self, a: np.ndarray, device: tuple[int, int] = (1, 0), requires_grad: bool = False) -> None:
        self._a, self._device, self.requires_grad = a, device, requires_grad
        self.dtype = a.dtype

    def _refuse(self) -> None:
        if self._device[0] != 1:
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() first.")
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy()")

    def __array__(self, dtype=None, copy=None):
        self._refuse()
        return self._a

    def __dlpack__(self, **kwargs):
        self._refuse()
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._device


def _readonly(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


def _jax(a: np.ndarray):
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True):  # float64 stays float64; the global setting is restored on exit
        return jnp.asarray(a, dtype=a.dtype)


def _torch(a: np.ndarray):
    import torch

    return torch.from_numpy(a)  # a view of a: the conversion back must be one too


WRAPS = {
    "dlpack-only": DLPackOnly,
    "array-only": ArrayOnly,
    "readonly-numpy": _readonly,
    "jax": pytest.param(_jax, marks=needs_jax),
    "torch": pytest.param(_torch, marks=needs_torch),
}


# ----------------------------------------------------------------------------- every entry point


def _data(dt: np.dtype) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    d = {
        "x": rng.uniform(-1.0, 1.0, 3),
        "A": rng.standard_normal((2, 2)) + 3 * np.eye(2),
        "X": rng.standard_normal((2, 3)),
        "B": rng.standard_normal((3, 2)),
        "C": rng.standard_normal((4, 2, 2)),  # cotangents / tangents of A's shape, a batch of 4
        "v": rng.standard_normal(6),
        "J1": rng.standard_normal((2, 3)),
        "J2": rng.standard_normal((3, 4)),
        "Jx": rng.standard_normal((3, 3)),
    }
    return {k: v.astype(dt) for k, v in d.items()}


def _f(x, A):  # a composite: tanh of a product with a constant, a reduction and an elementwise power
    return np.tanh(A @ x[:2]) * np.sum(x**2)


def _loss(x):
    return np.sum(np.tanh(x) ** 3) + x[0] * x[1]


ENTRY = {
    "jacobian(op)": lambda w, d: tj.jacobian(tj.tanh, w(d["x"])),
    "jacobian(op, tuple wrt, matrix)": lambda w, d: tj.jacobian(
        tj.sandwich, w(d["A"]), w(d["X"]), w(d["B"]), wrt=("A", "X"), layout="matrix"),
    "op call": lambda w, d: tj.inv(w(d["A"])),
    "op call, keyword array": lambda w, d: tj.sandwich(w(d["A"]), w(d["X"]), B=w(d["B"])),
    "op.jacobian": lambda w, d: tj.inv.jacobian(w(d["A"]), layout="vec"),
    "op.vjp": lambda w, d: tj.inv.vjp(w(d["A"]), cotangent=w(d["C"])),
    "op.jvp": lambda w, d: tj.inv.jvp(w(d["A"]), tangent=w(d["C"])),
    "vjp(op)": lambda w, d: tj.vjp(tj.inv, w(d["A"]), cotangent=w(d["C"])),
    "value_and_jacobian(op)": lambda w, d: tj.value_and_jacobian(tj.inv, w(d["A"])),
    "jacobian(f), constant argument": lambda w, d: tj.jacobian(_f, w(d["x"]), w(d["A"])),
    "jacobian(f), keyword constant": lambda w, d: tj.jacobian(_f, w(d["x"]), A=w(d["A"])),
    "jacobian(f), tuple wrt": lambda w, d: tj.jacobian(_f, w(d["x"]), w(d["A"]), wrt=(0, 1), layout="gradient"),
    "jacobian(f), batch_axis": lambda w, d: tj.jacobian(lambda X: np.tanh(X) * X[:, :1], w(d["X"]), batch_axis=0),
    "value_and_jacobian(f)": lambda w, d: tj.value_and_jacobian(_f, w(d["x"]), w(d["A"])),
    "grad": lambda w, d: tj.grad(_loss, w(d["x"])),
    "vjp(f)": lambda w, d: tj.vjp(_f, w(d["x"]), w(d["A"]), cotangent=w(d["J1"][:, :2].T.copy())),
    "jvp(f)": lambda w, d: tj.jvp(_f, w(d["x"]), w(d["A"]), tangent=w(d["Jx"])),
    "hessian": lambda w, d: tj.hessian(_loss, w(d["x"])),
    "hessian, tuple wrt": lambda w, d: tj.hessian(lambda x, A: np.sum(_f(x, A) ** 2), w(d["x"]), w(d["A"]),
                                                 wrt=(0, 1), layout="matrix"),
    "hvp": lambda w, d: tj.hvp(_loss, w(d["x"]), vector=w(d["Jx"])),
    "kron_matvec": lambda w, d: tj.kron_matvec([w(d["A"]), w(d["X"])], w(d["v"])),
    "chain": lambda w, d: tj.chain(w(d["J1"]), w(d["J2"]), mid_ndim=1, layout="matrix"),
    "fd.jacobian": lambda w, d: tj.fd.jacobian(np.tanh, w(d["x"])),
    "fd.jacobian, constant": lambda w, d: tj.fd.jacobian(_f, w(d["x"]), d["A"], wrt=0, return_error=True),
    "fd.hessian": lambda w, d: tj.fd.hessian(_loss, w(d["x"])),
    "check": lambda w, d: tj.check(np.tanh, w(d["x"]), w(np.diag(1 - np.tanh(d["x"]) ** 2))).max_abs_err,
    "check, order 2": lambda w, d: tj.check(
        _loss, w(d["x"]), w(tj.hessian(_loss, d["x"])), order=2).max_abs_err,
}
if HAVE_SCIPY:
    ENTRY["jacobian(op), format csr"] = lambda w, d: tj.jacobian(
        tj.tanh, w(d["x"]), layout="matrix", format="csr").toarray()
    ENTRY["jacobian(f), format coo"] = lambda w, d: tj.jacobian(
        _f, w(d["x"]), w(d["A"]), layout="matrix", format="coo").toarray()


def _leaves(r):
    if isinstance(r, (tuple, list)):
        return [leaf for item in r for leaf in _leaves(item)]
    return [r]


@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("wrap", list(WRAPS.values()), ids=list(WRAPS))
@pytest.mark.parametrize("entry", list(ENTRY), ids=list(ENTRY))
def test_entry_point_equals_numpy(entry, wrap, dt):
    """Foreign input -> the numpy-input result, bitwise and of the same dtype, as plain np.ndarray;
    the source arrays are never written to (the stand-ins and torch tensors are views of them)."""
    case = ENTRY[entry]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tj.NonFiniteWarning)
        ref = case(lambda a: a, _data(dt))
        d = _data(dt)
        before = {k: v.copy() for k, v in d.items()}
        got = case(wrap, d)
    ref_l, got_l = _leaves(ref), _leaves(got)
    assert len(ref_l) == len(got_l)
    for r, g in zip(ref_l, got_l):
        if isinstance(r, float):  # CheckReport.max_abs_err
            assert type(g) is float and (g == r or (np.isnan(g) and np.isnan(r)))
            continue
        assert type(g) is np.ndarray, type(g)
        assert g.dtype == r.dtype and g.shape == r.shape
        assert np.array_equal(g, r), np.max(np.abs(g - r))
    for k in d:
        assert np.array_equal(d[k], before[k]), k


def test_entry_points_give_real_derivatives():
    """The comparisons above are against tensorjac's own numpy results; two of them against closed
    forms, through the stand-ins, so that they cannot agree on a wrong answer."""
    d = _data(np.float64)
    x, A = d["x"], d["A"]
    J = tj.jacobian(tj.tanh, DLPackOnly(x), layout="diagonal")
    assert np.allclose(J, 1 - np.tanh(x) ** 2, rtol=1e-15, atol=0)
    Ai = np.linalg.inv(A)
    V = tj.inv.jacobian(ArrayOnly(A), layout="vec")
    assert np.allclose(V, -np.kron(Ai.T, Ai), rtol=1e-13, atol=1e-15)
    G = tj.grad(lambda x, A: np.sum(A @ x[:2]), DLPackOnly(x), DLPackOnly(A))
    assert np.allclose(G, np.r_[A.sum(axis=0), 0.0], rtol=1e-15, atol=0)


# ----------------------------------------------------------------------------- zero-copy


SOURCES = {
    "contiguous": lambda a: a,
    "transposed": lambda a: a.T,
    "strided": lambda a: a[:, ::2],
    "negative strides": lambda a: a[::-1],
    "zero-size": lambda a: a[:0],
    "0-d": lambda a: a[0, 0, ...],
}


@pytest.mark.parametrize("dt", [np.float32, np.float64, np.complex128, np.int32, np.bool_])
@pytest.mark.parametrize("src", list(SOURCES), ids=list(SOURCES))
@pytest.mark.parametrize("wrap", [DLPackOnly, ArrayOnly], ids=["dlpack-only", "array-only"])
def test_conversion_is_a_view(wrap, src, dt):
    a = SOURCES[src](np.arange(12).reshape(3, 4).astype(dt))
    got = as_array(wrap(a), "x")
    assert type(got) is np.ndarray and got.dtype == a.dtype and got.shape == a.shape
    assert np.array_equal(got, a)
    if a.size:
        assert np.shares_memory(got, a)


class _Sub(np.ndarray):
    pass


def test_numpy_arrays_pass_unchanged():
    a = np.ones((2, 3))
    assert as_array(a) is a
    r = _readonly(a)
    assert as_array(r) is r and not as_array(r).flags.writeable
    m = np.eye(2).view(_Sub)  # an ndarray subclass: a plain view, as np.asarray gives
    got = as_array(m)
    assert type(got) is np.ndarray and np.shares_memory(got, m)
    assert as_array([[1, 2]]).dtype == np.int64 and as_array(2.5).shape == ()


@pytest.mark.parametrize("wrap", [DLPackOnly, ArrayOnly, FakeTensor], ids=["dlpack-only", "array-only", "both"])
def test_out_overlapping_a_foreign_input_is_refused(wrap):
    """The converted input is the source's memory: out= sharing it is refused as overlapping an input."""
    buf = np.zeros((3, 3))
    with pytest.raises(ValueError, match="out overlaps an input"):
        tj.jacobian(tj.tanh, wrap(buf[0]), out=buf)
    with pytest.raises(ValueError, match="out overlaps an input"):
        tj.jacobian(lambda x: np.tanh(x) * 2, wrap(buf[0]), out=buf)
    out = np.empty((3, 3))  # a separate buffer is filled and returned
    x = np.array([0.1, -0.2, 0.3])
    assert tj.jacobian(tj.tanh, wrap(x), out=out) is out
    assert np.array_equal(out, tj.jacobian(tj.tanh, x))


@pytest.mark.parametrize("wrap", [DLPackOnly, ArrayOnly, FakeTensor], ids=["dlpack-only", "array-only", "both"])
def test_out_must_be_numpy(wrap):
    x = np.array([0.1, -0.2, 0.3])
    for f in (tj.tanh, lambda x: np.tanh(x)):
        with pytest.raises(TypeError, match="out must be a numpy.ndarray"):
            tj.jacobian(f, x, out=wrap(np.empty((3, 3))))


def test_traced_function_sees_numpy_arrays():
    """Tensors given as constant arguments reach f as numpy arrays (views); other objects unchanged."""
    seen = {}
    x, W = np.array([1.0, 2.0]), np.array([[1.0, 2.0], [3.0, 4.0]])
    marker = object()

    def f(x, W, tag=None):
        seen["W"], seen["tag"] = W, tag
        return W @ x

    J = tj.jacobian(f, x, DLPackOnly(W), tag=marker)
    assert type(seen["W"]) is np.ndarray and np.shares_memory(seen["W"], W) and seen["tag"] is marker
    assert np.array_equal(J, W)
    J = tj.jacobian(f, x, ArrayOnly(W))  # no __dlpack__: passed on as it is; numpy reads it in W @ x
    assert isinstance(seen["W"], ArrayOnly) and np.array_equal(J, W)


def test_closure_constants_inside_f():
    """Tensors that f uses from its closure reach the rules as numpy views; one that requires grad is refused."""
    W = np.arange(9.0).reshape(3, 3) / 4
    x = np.array([0.1, -0.2, 0.3])
    ref = tj.jacobian(lambda x: np.tanh(W @ x) * W[0], x)
    for wrap in (DLPackOnly, FakeTensor):
        Wt = wrap(W)
        assert np.array_equal(tj.jacobian(lambda x, Wt=Wt, wrap=wrap: np.tanh(Wt @ x) * wrap(W[0]), x), ref)
        assert np.array_equal(tj.jacobian(lambda x, Wt=Wt, wrap=wrap: np.tanh(np.matmul(Wt, x)) * wrap(W[0]), x), ref)
    bad = FakeTensor(W, requires_grad=True)
    with pytest.raises(TypeError, match=r"a constant array in f \(.*\) requires grad; .*detach"):
        tj.jacobian(lambda x: bad @ x, x)


def test_function_returning_a_foreign_array():
    """f's output (traced f: a constant; tj.fd: any callable) is read by the same conversion."""
    x = np.array([0.1, -0.2, 0.3])
    J = tj.fd.jacobian(lambda x: DLPackOnly(np.sin(x)), x, method="richardson")
    assert type(J) is np.ndarray and np.allclose(J, np.diag(np.cos(x)), rtol=0, atol=1e-12)
    v, J = tj.value_and_jacobian(lambda x: (x * 2, DLPackOnly(np.ones(2))), x)
    assert type(v[1]) is np.ndarray and np.array_equal(v[1], np.ones(2))
    assert np.array_equal(J[0], 2 * np.eye(3)) and np.array_equal(J[1], np.zeros((2, 3)))
    with pytest.raises(TypeError, match=r"f's output \(.*\) requires grad"):
        tj.fd.jacobian(lambda x: FakeTensor(np.sin(x), requires_grad=True), x)


def test_hessian_batch_axis_foreign():
    """Per-sample Hessians read the batch axis from the foreign array's shape."""
    X = np.random.default_rng(1).standard_normal((4, 3))
    ref = tj.hessian(lambda X: np.sum(np.tanh(X) ** 2, axis=1), X, batch_axis=0)
    for wrap in (_readonly, DLPackOnly, ArrayOnly):
        got = tj.hessian(lambda X: np.sum(np.tanh(X) ** 2, axis=1), wrap(X), batch_axis=0)
        assert type(got) is np.ndarray and np.array_equal(got, ref)
    # the closed form: per sample, diag(d2/dx2 tanh(x)^2) = 2 (1 - t^2)(1 - 3 t^2)
    t = np.tanh(X)
    diag = 2 * (1 - t**2) * (1 - 3 * t**2)
    np.testing.assert_allclose(ref, diag[:, :, None] * np.eye(3), rtol=1e-12, atol=1e-14)


def test_dask_jacobian_foreign():
    tjd = pytest.importorskip("tensorjac.dask")
    pytest.importorskip("dask.array")
    x = np.linspace(0.0, 1.0, 5)
    A = np.arange(10.0).reshape(2, 5)
    for wrap in (DLPackOnly, ArrayOnly, _readonly):
        J = tjd.jacobian(lambda x, A: np.sin(A @ x), wrap(x), wrap(A), chunks=2).compute()
        assert np.array_equal(J, tj.jacobian(lambda x, A: np.sin(A @ x), x, A))
        K = tjd.jacobian(tj.kron, wrap(A), wrap(A[:, :2]), layout="matrix", chunks=7).compute()
        assert np.array_equal(K, tj.jacobian(tj.kron, A, A[:, :2], layout="matrix"))
    with pytest.raises(TypeError, match=r"argument 0 \(.*FakeTensor of dtype float64\) is on device cuda:0"):
        tjd.jacobian(lambda x: np.sin(x), FakeTensor(x, device=(2, 0)))


# ----------------------------------------------------------------------------- errors


ONES = np.array([0.1, 0.2, 0.3])

# (entry, call with the bad object b, the argument's name in the message)
ERROR_ENTRY = {
    "jacobian(op)": (lambda b: tj.jacobian(tj.tanh, b), "tanh: argument 'X'"),
    "op call": (lambda b: tj.tanh(b), "tanh: argument 'X'"),
    "op call, second argument": (lambda b: tj.sandwich(np.eye(3), np.eye(3), b), "sandwich: argument 'B'"),
    "op.jacobian": (lambda b: tj.tanh.jacobian(b), "tanh: argument 'X'"),
    "op.vjp cotangent": (lambda b: tj.tanh.vjp(ONES, cotangent=b), "tanh.vjp: cotangent"),
    "op.jvp tangent": (lambda b: tj.tanh.jvp(ONES, tangent=b), "tanh.jvp: tangent"),
    "value_and_jacobian(op)": (lambda b: tj.value_and_jacobian(tj.tanh, b), "argument 0"),
    "jacobian(f)": (lambda b: tj.jacobian(lambda x: np.tanh(x), b), "tj.jacobian: argument 0"),
    "jacobian(f) constant": (lambda b: tj.jacobian(lambda x, c: x * c, ONES, b), "tj.jacobian: argument 1"),
    "jacobian(f) keyword constant": (lambda b: tj.jacobian(lambda x, c=1: x * c, ONES, c=b),
                                     "tj.jacobian: argument 'c'"),
    "grad": (lambda b: tj.grad(lambda x: np.sum(x), b), "tj.grad: argument 0"),
    "vjp cotangent": (lambda b: tj.vjp(lambda x: 2 * x, ONES, cotangent=b), "tj.vjp: cotangent"),
    "jvp tangent": (lambda b: tj.jvp(lambda x: 2 * x, ONES, tangent=b), "tj.jvp: tangent"),
    "hessian": (lambda b: tj.hessian(lambda x: np.sum(x**3), b), "tj.hessian: argument 0"),
    "hvp vector": (lambda b: tj.hvp(lambda x: np.sum(x**3), ONES, vector=b), "tj.hvp: vector"),
    "kron_matvec factor": (lambda b: tj.kron_matvec([b, np.eye(2)], np.ones(6)), "kron_matvec: factors[0]"),
    "kron_matvec x": (lambda b: tj.kron_matvec([np.eye(3)], b), "kron_matvec: x"),
    "chain": (lambda b: tj.chain(b, np.eye(3), 1), "chain: J_outer"),
    "fd.jacobian": (lambda b: tj.fd.jacobian(np.tanh, b), "x"),
    "fd.hessian": (lambda b: tj.fd.hessian(lambda x: np.sum(x**3), b), "x"),
    "check x": (lambda b: tj.check(np.tanh, b, np.eye(3)), "x"),
    "check jac": (lambda b: tj.check(np.tanh, ONES, b), "tj.check: jac"),
}


@pytest.mark.parametrize("entry", list(ERROR_ENTRY), ids=list(ERROR_ENTRY))
def test_non_cpu_device_is_refused(entry):
    call, name = ERROR_ENTRY[entry]
    bad = FakeTensor(np.ones(3), device=(2, 0))  # kDLCUDA, device 0
    with pytest.raises(TypeError, match=r"on device cuda:0; .*move it to the CPU") as e:
        call(bad)
    assert name in str(e.value)
    with pytest.raises(TypeError, match=r"on device rocm:1"):
        call(FakeTensor(np.ones(3), device=(10, 1)))
    with pytest.raises(TypeError, match=r"on device cuda:0"):  # only DLPack, no __array__: refused first too
        call(_DLPackOnDevice(np.ones(3)))


class _DLPackOnDevice(DLPackOnly):
    def __dlpack_device__(self):
        return (2, 0)


@pytest.mark.parametrize("entry", list(ERROR_ENTRY), ids=list(ERROR_ENTRY))
def test_requires_grad_is_refused(entry):
    call, name = ERROR_ENTRY[entry]
    with pytest.raises(TypeError, match=r"requires grad; .*pass x\.detach\(\)") as e:
        call(FakeTensor(np.ones(3), requires_grad=True))
    assert name in str(e.value)


@pytest.mark.parametrize("entry", list(ERROR_ENTRY), ids=list(ERROR_ENTRY))
def test_bfloat16_is_refused(entry):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    call, name = ERROR_ENTRY[entry]
    a = np.ones(3, dtype=ml_dtypes.bfloat16)
    with pytest.raises(TypeError, match=r"bfloat16.*convert it") as e:
        call(FakeTensor(a))  # __array__ gives a bfloat16 array numpy cannot compute with
    assert name in str(e.value)
    with pytest.raises(TypeError, match=r"cannot be read as a numpy array .*convert it first") as e:
        call(DLPackOnly(a))  # numpy's DLPack export refuses bfloat16
    assert name in str(e.value)


def test_a_broken_dlpack_device_does_not_hide_the_array():
    class OddDevice(ArrayOnly):
        def __dlpack_device__(self):
            raise RuntimeError("no device")

    x = np.array([0.5, 1.0])
    assert np.array_equal(tj.jacobian(tj.tanh, OddDevice(x)), tj.jacobian(tj.tanh, x))


def test_user_object_untouched_after_refusal():
    t = FakeTensor(np.ones(3), requires_grad=True)
    with pytest.raises(TypeError):
        tj.jacobian(tj.tanh, t)
    assert t.requires_grad is True and np.array_equal(t._a, np.ones(3))


# ----------------------------------------------------------------------------- JAX


@pytest.fixture
def jax_x64():
    """JAX with float64 for the test, the global setting restored afterwards."""
    jax = pytest.importorskip("jax")
    before = jax.config.jax_enable_x64
    with jax.enable_x64(True):
        yield jax
    assert jax.config.jax_enable_x64 == before


@needs_jax
def test_jax_arrays_read_only_views(jax_x64):
    import jax.numpy as jnp

    for dt in (jnp.float32, jnp.float64):
        j = jnp.linspace(-1.0, 1.0, 6, dtype=dt).reshape(2, 3)
        a = as_array(j, "x")
        assert type(a) is np.ndarray and a.dtype == np.dtype(dt) and not a.flags.writeable
        assert np.shares_memory(a, np.asarray(j))  # JAX's own host buffer, not a copy of it
        J = tj.jacobian(lambda X: np.tanh(X) @ X.T, j)
        assert type(J) is np.ndarray and J.dtype == np.dtype(dt)
        assert np.array_equal(J, tj.jacobian(lambda X: np.tanh(X) @ X.T, np.asarray(j).copy()))


@needs_jax
def test_jax_inside_traced_function():
    """A JAX function on a traced array raises TypeError (never a zero derivative); JAX constants
    inside numpy code are read as numpy arrays."""
    jnp = pytest.importorskip("jax.numpy")
    x = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    with pytest.raises(TypeError):
        tj.jacobian(lambda x: jnp.tanh(x), x)
    with pytest.raises(TypeError, match="cannot be converted to a plain numpy array"):
        tj.jacobian(lambda x: jnp.asarray(x) * 2, x)
    W = jnp.arange(9.0, dtype=jnp.float32).reshape(3, 3)
    Wn = np.asarray(W)
    for f, ref in [(lambda x: W @ x, lambda x: Wn @ x), (lambda x: x * W, lambda x: x * Wn),
                   (lambda x: np.tanh(x) + W[0], lambda x: np.tanh(x) + Wn[0])]:
        assert np.array_equal(tj.jacobian(f, x), tj.jacobian(ref, x))


@needs_jax
def test_jax_bfloat16_and_fd_of_jax_code():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    with pytest.raises(TypeError, match=r"tj.jacobian: argument 0 has dtype bfloat16.*convert it"):
        tj.jacobian(lambda x: np.tanh(x), jnp.ones(3, dtype=jnp.bfloat16))
    with jax.enable_x64(True):  # tj.fd calls f with numpy arrays; JAX code returning JAX arrays works
        x = jnp.array([0.1, 0.2], dtype=jnp.float64)
        J = tj.fd.jacobian(lambda v: jnp.sin(v), x, method="richardson")
    assert type(J) is np.ndarray and J.dtype == np.float64
    assert np.allclose(J, np.diag(np.cos([0.1, 0.2])), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- PyTorch


@needs_torch
def test_torch_zero_copy_and_values():
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(3).standard_normal((3, 4))
    t = torch.from_numpy(a)
    assert np.shares_memory(as_array(t), a) and np.shares_memory(as_array(t.T), a)
    assert np.array_equal(tj.jacobian(lambda X: np.tanh(X).sum(axis=0), t.T), tj.jacobian(
        lambda X: np.tanh(X).sum(axis=0), a.T))
    t32 = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=torch.float32)
    H = tj.hessian(lambda X: np.linalg.slogdet(X)[1], t32, layout="matrix")
    assert H.dtype == np.float32 and type(H) is np.ndarray
    assert np.array_equal(H, tj.hessian(lambda X: np.linalg.slogdet(X)[1], t32.numpy(), layout="matrix"))


@needs_torch
def test_torch_errors():
    torch = pytest.importorskip("torch")
    x = torch.linspace(-1.0, 1.0, 3, dtype=torch.float64)
    xg = x.clone().requires_grad_()
    with pytest.raises(TypeError, match=r"tj.jacobian: argument 0 \(torch.Tensor of dtype torch.float64\) requires grad.*detach"):
        tj.jacobian(lambda v: np.tanh(v), xg)
    with pytest.raises(TypeError, match=r"tanh: argument 'X' \(torch.Tensor of dtype torch.float64\) requires grad"):
        tj.jacobian(tj.tanh, xg)
    assert np.array_equal(tj.jacobian(tj.tanh, xg.detach()), tj.jacobian(tj.tanh, x.numpy()))
    with pytest.raises(TypeError, match=r"tj.grad: argument 0 \(torch.Tensor of dtype torch.bfloat16\) cannot be "
                                        r"read .*convert it first"):
        tj.grad(lambda v: np.sum(v), x.to(torch.bfloat16))
    with pytest.raises(TypeError, match=r"the PyTorch function tanh\(\) was called on a traced array"):
        tj.jacobian(lambda v: torch.tanh(v), x)
    with pytest.raises(TypeError, match=r"the PyTorch function relu\(\)"):
        tj.grad(lambda v: torch.nn.functional.relu(v).sum(), x.numpy())
    with pytest.raises(TypeError, match="out must be a numpy.ndarray"):
        tj.jacobian(tj.tanh, x, out=torch.empty((3, 3), dtype=torch.float64))


@needs_torch
def test_torch_constants_inside_numpy_code():
    torch = pytest.importorskip("torch")
    W = torch.arange(9.0, dtype=torch.float64).reshape(3, 3)
    Wn = W.numpy()
    x = np.array([0.1, 0.2, 0.3])
    for f, ref in [(lambda x: W @ x, lambda x: Wn @ x), (lambda x: W * x, lambda x: Wn * x),
                   (lambda x: x @ W, lambda x: x @ Wn), (lambda x: np.tanh(x) + W[0], lambda x: np.tanh(x) + Wn[0])]:
        assert np.array_equal(tj.jacobian(f, x), tj.jacobian(ref, x))
    assert np.array_equal(tj.jacobian(lambda x, W: W @ x, x, W), Wn)  # a constant argument


# ----------------------------------------------------------------------------- hygiene, the docs, the child process


@needs_jax
def test_jax_x64_not_leaked():
    """The helper above scopes JAX's float64 switch: nothing leaks into other tests."""
    jax = pytest.importorskip("jax")
    before = jax.config.jax_enable_x64
    assert _jax(np.ones(2)).dtype == np.float64
    assert jax.config.jax_enable_x64 == before


@pytest.mark.skipif(not CHILD or not (HAVE_JAX or HAVE_TORCH), reason="runs in the child process, with jax or torch")
def test_docs_interop_python_blocks():
    """docs/interop.md shows JAX and PyTorch in ```python blocks (the page's doctests need neither): they run
    here, each in a fresh namespace, and assert what they claim."""
    page = ROOT / "docs" / "interop.md"
    if not page.exists():
        pytest.skip("docs/ not found next to tests/ (installed without the source tree)")
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 4
    ran = 0
    for code in blocks:
        if ("import torch" in code and not HAVE_TORCH) or ("import jax" in code and not HAVE_JAX):
            continue
        exec(compile(code, str(page), "exec"), {})
        ran += 1
    assert ran >= 1


@pytest.mark.skipif(CHILD or not (HAVE_JAX or HAVE_TORCH), reason="jax and torch are not installed")
def test_libraries_in_a_child_process():
    """The JAX and PyTorch tests above, and the page's examples, in a child pytest: this process never
    imports either library, so the fork tests of other files never fork a process running their threads."""
    env = {**os.environ, "TENSORJAC_INTEROP_CHILD": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__).resolve()),
           "-k", "jax or torch or docs_interop"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    tail = r.stdout[-6000:] + r.stderr[-2000:]
    assert r.returncode == 0, tail
    summary = r.stdout.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    expected = 1 + (2 * len(ENTRY) + 4 if HAVE_JAX else 0) + (2 * len(ENTRY) + 3 if HAVE_TORCH else 0)  # 2 dtypes
    assert passed == expected and "failed" not in summary and "error" not in summary, tail
