"""Batched VJPs and JVPs of ops, the chain rule for dense tensors, Kronecker matvec.

VJPs and JVPs never build the Jacobian.  Each op's ``Deriv`` describes its
Jacobian as terms over index letters; the generic products here are einsum
contractions of those same terms, with the batch axes flattened into one
extra letter so that BLAS does the products.  Rules whose structure allows a
faster formula (``A^T G B^T`` for sandwich, the kron contraction, ...) give
it as ``Deriv.vjp`` / ``Deriv.jvp``.

Complex (holomorphic) ops: the VJP is the plain transpose, no conjugation:
``vjp(G)[n] = sum_m G[m] J[m, n]``, and ``jvp(V)[m] = sum_n J[m, n] V[n]``,
so ``<vjp(G), V> == <G, jvp(V)>`` with the bilinear ``<a, b> = sum(a * b)``.
For the gradient of a real loss through complex values, pass ``conj`` of the
cotangent and conjugate the result yourself.
"""

from __future__ import annotations

import contextvars
import string
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import _config, _core
from ._deriv import Deriv
from ._dtypes import as_array, result_dtype
from ._layout import LAYOUTS, layout_placement
from ._layout import prod as _prod

__all__ = ["apply_deriv", "call_threads", "chain", "kron_jvp", "kron_matvec", "kron_vjp", "two_sided"]

_BATCH = "Z"  # einsum letter of the flattened batch axis (rules use lowercase letters)

# The num_threads of the vjp/jvp call in progress, for structured hooks that
# run C++ kernels (their signature is fixed: hook(G, *args)).  0: the default.
_call_threads: contextvars.ContextVar[int] = contextvars.ContextVar("tensorjac_ad_threads", default=0)


def call_threads() -> int:
    """Thread count for C++ kernels inside a ``Deriv.vjp`` / ``Deriv.jvp`` hook."""
    return _call_threads.get()


def _scalar(coef: complex, dt: np.dtype) -> Any:
    """A rule coefficient as a scalar of dtype dt (a real dtype needs a real coefficient)."""
    if dt.kind == "c":
        return dt.type(coef)
    if complex(coef).imag != 0:
        raise AssertionError(f"complex coefficient {coef} in a real-valued rule")
    return dt.type(complex(coef).real)


# ----------------------------------------------------------------------------- VJP / JVP of one Deriv


class _Spec(NamedTuple):
    """One direction (vjp or jvp) of a Deriv, prepared for einsum."""

    src_letters: str  # unique letters of the source (cotangent / tangent) view
    src_sizes: tuple[int, ...]
    src_axes: tuple[str, ...]  # axis specs of the source array
    dst_axes: tuple[str, ...]
    dst_letters: str  # unique letters of the destination view
    dst_sizes: tuple[int, ...]
    terms: tuple[tuple[complex, tuple[str, ...], str, str], ...]  # (coef, factor subs, einsum, present)
    direct: bool  # the einsum output is the destination (no deltas to write, nothing to broadcast)
    diagonal: bool  # elementwise: destination = source * one factor of the same shape
    plain_src: bool  # the source axes are its letters one to one: no view needed
    loops: tuple[int, ...]  # per term: the naive einsum loop count for one batch entry


# Up to this many multiply-adds, numpy's C einsum loop beats planning a BLAS path.
_EINSUM_DIRECT_MAX = 4096

_SPECS: dict[tuple[Deriv, str, tuple, tuple], _Spec] = {}


def _spec(d: Deriv, mode: str, out_shape: tuple[int, ...], in_shape: tuple[int, ...]) -> _Spec:
    key = (d, mode, out_shape, in_shape)
    hit = _SPECS.get(key)
    if hit is not None:
        return hit
    sizes0 = d.letter_sizes(out_shape, in_shape)
    # rename the rule's letters to einsum characters other than the batch letter
    chars = [c for c in string.ascii_letters if c != _BATCH]
    rn = {c: chars[i] for i, c in enumerate(dict.fromkeys("".join(d.out) + "".join(d.inp) + "".join(
        "".join(g) for _, gs in d.terms for g in gs)))}
    sizes = {rn[c]: n for c, n in sizes0.items() if c in rn}
    d_out = tuple("".join(rn[c] for c in ax) for ax in d.out)
    d_inp = tuple("".join(rn[c] for c in ax) for ax in d.inp)
    d_terms = [(coef, tuple("".join(rn[c] for c in g) for g in gs)) for coef, gs in d.terms]
    src_axes, dst_axes = (d_out, d_inp) if mode == "vjp" else (d_inp, d_out)
    dst_shape = in_shape if mode == "vjp" else out_shape
    src_letters = "".join(dict.fromkeys("".join(src_axes)))
    dst_all = "".join(dst_axes)
    dst_letters = "".join(dict.fromkeys(dst_all))
    terms = []
    direct = len(dst_letters) == len(dst_all) and all(
        _prod([sizes[c] for c in ax]) == n for ax, n in zip(dst_axes, dst_shape)
    )
    for coef, groups in d_terms:
        have = set(src_letters).union(*groups)
        present = "".join(c for c in dst_letters if c in have)
        direct &= present == dst_letters
        subs = ",".join((_BATCH + src_letters,) + tuple(groups)) + "->" + _BATCH + present
        terms.append((coef, tuple(groups), subs, present))
    direct &= len(terms) == 1
    diagonal = (
        d.is_diagonal
        and len(terms) == 1
        and terms[0][1] == ("".join(d_out),)
        and all(sizes[c] == n for c, n in zip(d_out, out_shape))
    )
    src_shape = out_shape if mode == "vjp" else in_shape
    plain_src = src_axes == tuple(src_letters) and all(sizes[c] == n for c, n in zip(src_letters, src_shape))
    loops = tuple(_prod([sizes[c] for c in set(src_letters).union(*groups)]) for _, groups in d_terms)
    spec = _Spec(
        src_letters, tuple(sizes[c] for c in src_letters), src_axes, dst_axes,
        dst_letters, tuple(sizes[c] for c in dst_letters), tuple(terms), direct, diagonal,
        plain_src, loops,
    )  # fmt: skip
    if len(_SPECS) > 1024:
        _SPECS.clear()
    _SPECS[key] = spec
    return spec


def _letter_view(
    arr: np.ndarray, axes: tuple[str, ...], letters: str, sizes: tuple[int, ...], writeable: bool
) -> np.ndarray:
    """View of ``arr`` (batch, *axes) indexed by (batch, *letters).

    A fused axis "(ik)" splits into sub-axes in C order; a letter on several
    axes walks their diagonal (strides add); a letter may cover only a prefix
    of an axis (trace of a non-square matrix).
    """
    size = dict(zip(letters, sizes))
    stride = dict.fromkeys(letters, 0)
    for ax, s in zip(axes, arr.strides[1:]):
        for c in reversed(ax):
            stride[c] += s
            s *= size[c]
    return as_strided(
        arr, (arr.shape[0], *sizes), (arr.strides[0], *(stride[c] for c in letters)), writeable=writeable
    )


def _scaled(coef: complex, facs: list[np.ndarray], dt: np.dtype) -> tuple[list[np.ndarray], complex]:
    """Fold a term's coefficient into its smallest factor; returns the leftover scale."""
    if coef == 1 or not facs:
        return facs, coef
    t = min(range(len(facs)), key=lambda i: facs[i].size)
    facs = list(facs)
    facs[t] = facs[t] * _scalar(coef, dt)
    return facs, 1


def _contract(spec: _Spec, src: np.ndarray, facs: Sequence[np.ndarray], dst_shape: tuple[int, ...],
              dt: np.dtype, nt: int) -> np.ndarray:
    """The generic product: sum over terms of einsum(source, factors)."""
    nb = src.shape[0]
    if spec.diagonal:  # elementwise rule: one batched row scaling, in C++
        (f,), _ = _scaled(spec.terms[0][0], [facs[0]], dt)
        n = _prod(dst_shape)
        G = np.ascontiguousarray(src.reshape(nb, n))
        return _core.mul_rows(G, np.ascontiguousarray(f).reshape(n), nt).reshape((nb, *dst_shape))
    S = src if spec.plain_src else _letter_view(src, spec.src_axes, spec.src_letters, spec.src_sizes, False)
    result: np.ndarray | None = None
    slot = 0
    for (coef, groups, subs, present), loops in zip(spec.terms, spec.loops):
        tf = list(facs[slot : slot + len(groups)])
        slot += len(groups)
        tf, scale = _scaled(coef, tf, dt)
        # numpy's path search costs ~20 us: worth it (BLAS) only when there is real work
        R = np.einsum(subs, S, *tf, optimize=nb * loops > _EINSUM_DIRECT_MAX)
        if scale != 1:
            R = R * _scalar(scale, dt)
        if spec.direct:
            return R.reshape((nb, *dst_shape))
        if result is None:
            result = np.zeros((nb, *dst_shape), dt)
            W = _letter_view(result, spec.dst_axes, spec.dst_letters, spec.dst_sizes, writeable=True)
        # letters missing from this term broadcast: give them length-1 axes
        R = R.reshape((nb, *(n if c in present else 1 for c, n in zip(spec.dst_letters, spec.dst_sizes))))
        np.add(W, R, out=W)
    if result is None:  # no terms: the Jacobian is zero
        result = np.zeros((nb, *dst_shape), dt)
    return result


def apply_deriv(
    d: Deriv,
    mode: str,
    args: Sequence[np.ndarray],
    vec: np.ndarray,
    out_shape: tuple[int, ...],
    in_shape: tuple[int, ...],
    dt: np.dtype,
    nt: int,
    value: np.ndarray | None = None,
) -> np.ndarray:
    """One batched product with the Jacobian described by ``d``, never building it.

    ``vec`` is (nb, *out_shape) for mode "vjp" and (nb, *in_shape) for "jvp", of
    dtype ``dt``; the result is (nb, *in_shape) resp. (nb, *out_shape), of dtype dt.
    ``args`` are the op's arguments, ``value`` its output when known.
    """
    nb = vec.shape[0]
    dst_shape = in_shape if mode == "vjp" else out_shape
    _config.check_budget((nb, *dst_shape), dt.itemsize, what=f"{mode.upper()} result")
    if _traced(vec) or _traced(value) or any(_traced(a) for a in args):
        # inside a differentiated function (a Hessian): only numpy operations that are traced in turn
        facs = [f if _traced(f) else np.asarray(f) for f in d.eval_factors(args, value)]
        facs = [f if f.dtype == dt else f.astype(dt) for f in facs]
        return _contract_traced(d, mode, vec, facs, out_shape, in_shape, dt)
    hook: Callable[..., np.ndarray] | None = d.vjp if mode == "vjp" else d.jvp
    if hook is not None:
        token = _call_threads.set(nt)
        try:
            R = np.asarray(hook(vec, *args, value=value) if d.uses_value else hook(vec, *args))
        finally:
            _call_threads.reset(token)
        if R.shape != (nb, *dst_shape):  # a rule bug, not a user error
            raise AssertionError(f"{mode} hook returned shape {R.shape}, expected {(nb, *dst_shape)}")
        return R.astype(dt, copy=False)
    facs = [f if f.dtype == dt else f.astype(dt) for f in map(np.asarray, d.eval_factors(args, value))]
    return _contract(_spec(d, mode, out_shape, in_shape), vec, facs, dst_shape, dt, nt)


def _traced(x: Any) -> bool:
    return getattr(type(x), "__tj_apply__", None) is not None


def _contract_traced(
    d: Deriv, mode: str, vec: Any, facs: Sequence[Any], out_shape: tuple[int, ...], in_shape: tuple[int, ...],
    dt: np.dtype,
) -> Any:
    """The product of ``_contract`` with einsum, reshape and constant eye/ones factors only.

    No strided views, no C++ kernels and no writes into buffers: every step is a numpy call that a
    traced array records (the VJP sweep of a gradient that is itself being differentiated).
    """
    sizes = d.letter_sizes(out_shape, in_shape)
    src_axes, dst_axes = (d.out, d.inp) if mode == "vjp" else (d.inp, d.out)
    dst_shape = in_shape if mode == "vjp" else out_shape
    nb = vec.shape[0]
    chars = iter(c for c in string.ascii_letters if c != _BATCH)
    ch: dict[str, str] = {}

    def c_of(letter: str) -> str:
        if letter not in ch:
            ch[letter] = next(chars)
        return ch[letter]

    src_split = [c for ax in src_axes for c in ax]
    V = _reshaped(vec, (nb, *[sizes[c] for c in src_split]))
    src_sub = _BATCH + "".join(c_of(c) for c in src_split)
    dst_split = [c for ax in dst_axes for c in ax]
    total: Any = None
    slot = 0
    for coef, groups in d.terms:
        tf = list(facs[slot : slot + len(groups)])
        slot += len(groups)
        have = set(src_split).union(*groups)
        present = list(dict.fromkeys(c for c in dst_split if c in have))
        k = len(src_split)
        if present[:k] == src_split and len(set(present)) == len(present) and all(
            list(g) == present[len(present) - len(g) :] and np.ndim(f) == len(g) for g, f in zip(groups, tf)
        ):
            # V's letters first, each factor on trailing letters, in order (elementwise, or an outer product
            # with a constant cotangent): broadcasting products record fewer, cheaper tape nodes than an
            # einsum (and none for a term without factors)
            R = _reshaped(V, (*V.shape, *[1] * (len(present) - k)))
            for f in tf:
                R = R * f
        else:
            subs = ",".join([src_sub, *("".join(c_of(c) for c in g) for g in groups)])
            R = np.einsum(subs + "->" + _BATCH + "".join(c_of(c) for c in present), V, *tf)
        if coef != 1:
            R = R * coef
        # place R on the destination axes: a letter's later positions on the diagonal with its first (eye);
        # a letter R lacks is constant along its first position (ones)
        out_chars = [next(chars) for _ in dst_split]
        first: dict[str, str] = {}
        ops: list[Any] = [R]
        subs_in = [_BATCH + "".join(out_chars[dst_split.index(c)] for c in present)]
        for c in present:
            first[c] = out_chars[dst_split.index(c)]
        for p, c in enumerate(dst_split):
            if c not in first:
                first[c] = out_chars[p]
                ops.append(np.ones(sizes[c], dtype=dt))
                subs_in.append(out_chars[p])
            elif first[c] != out_chars[p]:
                ops.append(np.eye(sizes[c], dtype=dt))
                subs_in.append(first[c] + out_chars[p])
        if len(ops) > 1:
            R = np.einsum(",".join(subs_in) + "->" + _BATCH + "".join(out_chars), *ops)
        R = _reshaped(R, (nb, *dst_shape))
        total = R if total is None else total + R
    if total is None:
        return np.zeros((nb, *dst_shape), dtype=dt)
    return total


def _reshaped(a: Any, shape: tuple[int, ...]) -> Any:
    """``a.reshape(shape)``, or ``a`` itself when it has that shape already (no tape node)."""
    return a if tuple(a.shape) == shape else a.reshape(shape)


# ----------------------------------------------------------------------------- structured hooks


def two_sided(L: np.ndarray, M: np.ndarray, R: np.ndarray) -> np.ndarray:
    """``L @ M[b] @ R`` for a batch M (nb, a, b), by BLAS, cheaper association first.

    Right-first multiplies all of M at once as one (nb*a, b) @ (b, d) GEMM.
    """
    nb, a, b = M.shape
    c, d = L.shape[0], R.shape[1]
    if a * b * d + c * a * d <= c * a * b + c * b * d:
        Y = (M.reshape(nb * a, b) @ R).reshape(nb, a, d)
        return np.matmul(L, Y)
    Y = np.matmul(L, M)
    return (Y.reshape(nb * c, b) @ R).reshape(nb, c, d)


def kron_vjp(G: np.ndarray, A: np.ndarray, B: np.ndarray, wrt: int) -> np.ndarray:
    """VJP of kron(A, B): dA[b,i,j] = sum_kl G[b,(i,k),(j,l)] B[k,l] (wrt=0), or
    dB[b,k,l] = sum_ij G[b,(i,k),(j,l)] A[i,j] (wrt=1); one streaming pass over G in C++."""
    (m, n), (p, q) = A.shape, B.shape
    G5 = np.ascontiguousarray(G).reshape(G.shape[0], m, p, n, q)
    F = np.ascontiguousarray(B if wrt == 0 else A, dtype=G.dtype)
    return _core.kron_vjp(G5, F, wrt, call_threads())


def kron_jvp(V: np.ndarray, A: np.ndarray, B: np.ndarray, wrt: int) -> np.ndarray:
    """JVP of kron(A, B): kron(V[b], B) (wrt=0) or kron(A, V[b]) (wrt=1), in C++."""
    V = np.ascontiguousarray(V)
    other = np.ascontiguousarray(B if wrt == 0 else A, dtype=V.dtype)[None]
    X, Y = (V, other) if wrt == 0 else (other, V)
    return _core.kron_batched(X, Y, call_threads())


# ----------------------------------------------------------------------------- chain rule


def chain(J_outer: Any, J_inner: Any, mid_ndim: int, layout: str = "tensor") -> np.ndarray:
    """Chain rule for explicit Jacobian tensors: d(f∘g)/dx = df/dy · dg/dx.

    ``T[m..., n...] = sum_y J_outer[m..., y...] J_inner[y..., n...]``: the
    contraction over the axes of the intermediate y (one BLAS product).

    Parameters
    ----------
    J_outer : array_like
        df/dy in the tensor layout, shape ``out.shape + y.shape``.
    J_inner : array_like
        dg/dx in the tensor layout, shape ``y.shape + in.shape``.
    mid_ndim : int
        ``y.ndim``: how many trailing axes of ``J_outer`` (leading axes of
        ``J_inner``) are contracted.
    layout : {"tensor", "gradient", "numerator", "matrix", "vec"}
        The layout of the result (see the layouts page of the docs); default
        "tensor": ``out.shape + in.shape``.

    Returns
    -------
    ndarray
        d(f∘g)/dx in ``layout``; its dtype is the promotion of both inputs'.

    Examples
    --------
    >>> import numpy as np, tensorjac as tj
    >>> Y = np.array([[2., 1.], [0., 1.]])
    >>> J_inner = tj.jacobian(tj.inv, Y)                 # d inv(Y) / dY: (2, 2) + (2, 2)
    >>> J_outer = tj.jacobian(tj.tanh, tj.inv(Y))        # d tanh(Z) / dZ at Z = inv(Y)
    >>> J = tj.chain(J_outer, J_inner, mid_ndim=2)       # d tanh(inv(Y)) / dY
    >>> J.shape
    (2, 2, 2, 2)
    >>> np.allclose(J, tj.jacobian(lambda Y: np.tanh(np.linalg.inv(Y)), Y))
    True
    >>> tj.chain(J_outer, J_inner, mid_ndim=2, layout="matrix").shape
    (4, 4)
    """
    Jo, Ji = as_array(J_outer, "chain: J_outer"), as_array(J_inner, "chain: J_inner")
    if isinstance(mid_ndim, bool) or not isinstance(mid_ndim, (int, np.integer)):
        raise TypeError(f"chain: mid_ndim must be an int, got {type(mid_ndim).__name__}")
    mid = int(mid_ndim)
    if not 0 <= mid <= min(Jo.ndim, Ji.ndim):
        raise ValueError(
            f"chain: mid_ndim={mid} must be between 0 and the rank of both tensors; "
            f"J_outer has shape {Jo.shape} and J_inner has shape {Ji.shape}"
        )
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ValueError(f"chain: unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    y_outer, y_inner = Jo.shape[Jo.ndim - mid :], Ji.shape[:mid]
    if y_outer != y_inner:
        raise ValueError(
            f"chain: the last {mid} axes of J_outer (shape {Jo.shape}) are {y_outer}, but the first "
            f"{mid} axes of J_inner (shape {Ji.shape}) are {y_inner}; both must be the shape of the "
            "intermediate y"
        )
    dt = result_dtype("tj.chain", [("J_outer", Jo.dtype), ("J_inner", Ji.dtype)])
    out_shape, in_shape = Jo.shape[: Jo.ndim - mid], Ji.shape[mid:]
    shape, out_place, in_place = layout_placement(layout, out_shape, in_shape)
    _config.check_budget(shape, dt.itemsize, what="chain-rule Jacobian")
    Jo, Ji = Jo.astype(dt, copy=False), Ji.astype(dt, copy=False)
    ymid = tuple(range(mid))
    if layout == "gradient":  # in.shape + out.shape: contract in that order, no permutation
        return np.tensordot(Ji, Jo, axes=(ymid, tuple(range(Jo.ndim - mid, Jo.ndim))))
    T = np.tensordot(Jo, Ji, axes=mid)
    if layout in ("tensor", "matrix"):
        return T.reshape(shape)
    # numerator / vec: place every axis of T where layout_placement says (one strided copy)
    res = np.empty(shape, dt)
    strides = [mult * res.strides[dim] for dim, mult in (*out_place, *in_place)]  # type: ignore[misc]
    as_strided(res, T.shape, strides, writeable=True)[...] = T
    return res


# ----------------------------------------------------------------------------- Kronecker matvec

# A mode product done as a stack of GEMMs pays off when each GEMM has at least this many
# multiply-adds; below it, per-GEMM call overhead dominates and one rotating GEMM per mode is
# faster (measured on the 2-core CI VM with OpenBLAS; see _kmv_stacked).
_KMV_STACKED_MIN_WORK = 256
_KMV_DTYPES: dict[tuple[np.dtype, ...], np.dtype] = {}  # memo of the one dtype rule for kron_matvec


def kron_matvec(factors: Sequence[Any], x: Any) -> np.ndarray:
    """``(A1 ⊗ A2 ⊗ ... ⊗ Ak) @ x`` for a batch of vectors, never forming the Kronecker product.

    ``factors``: 2-D arrays A_i of shape (r_i, c_i); ``x``: shape ``(*batch, prod(c_i))``.
    Returns shape ``(*batch, prod(r_i))``, matching ``x @ np.kron(A1, ..., Ak).T``.
    One mode at a time (the vec trick), last mode first, each mode BLAS
    products in the result's own axis order: one GEMM ``X @ A_k^T`` for the
    last mode, then ``A_t @ X[p]`` over a stack of slices for each other mode,
    so no intermediate is ever transposed.  When those slices would be tiny
    (many small factors), each mode is instead one GEMM ``A_t @ X.T`` whose
    output order rotates the next mode into place, and one transposing copy
    of the result ends it.

    Parameters
    ----------
    factors : sequence of 2-D array_like
        ``A1, ..., Ak``; ``A_i`` has shape ``(r_i, c_i)``.
    x : array_like
        Shape ``(*batch, c_1 * ... * c_k)``: any number of leading batch axes.

    Returns
    -------
    ndarray
        Shape ``(*batch, r_1 * ... * r_k)``.

    Examples
    --------
    >>> import numpy as np, tensorjac as tj
    >>> A, B = np.array([[1., 2.], [3., 4.]]), np.eye(3)
    >>> x = np.arange(6.)
    >>> tj.kron_matvec([A, B], x)
    array([ 6.,  9., 12., 12., 19., 26.])
    >>> np.allclose(tj.kron_matvec([A, B], x), np.kron(A, B) @ x)
    True
    >>> tj.kron_matvec([A, B, A], np.ones((5, 12))).shape    # a batch of 5 vectors
    (5, 12)
    """
    if getattr(factors, "ndim", None) == 2 and not isinstance(factors, (list, tuple)):
        raise TypeError("kron_matvec: factors must be a sequence of 2-D arrays; wrap one matrix in a list")
    try:
        items = list(factors)
    except TypeError:
        raise TypeError(
            f"kron_matvec: factors must be a sequence of 2-D arrays, got {type(factors).__name__}"
        ) from None
    fs = [as_array(f, f"kron_matvec: factors[{t}]") for t, f in enumerate(items)]
    if not fs:
        raise ValueError("kron_matvec: factors is empty; give at least one 2-D array")
    for t, f in enumerate(fs):
        if f.ndim != 2:
            raise ValueError(f"kron_matvec: factors[{t}] must be 2-D (r, c), got shape {f.shape}")
    xa = as_array(x, "kron_matvec: x")
    cols = [f.shape[1] for f in fs]
    C = _prod(cols)
    if xa.ndim < 1 or xa.shape[-1] != C:
        raise ValueError(
            f"kron_matvec: the factors' column counts {tuple(cols)} (factor shapes "
            f"{', '.join(str(f.shape) for f in fs)}) multiply to {C}, but x has shape {xa.shape}; "
            f"x must have shape (*batch, {C})"
        )
    key = (xa.dtype, *(f.dtype for f in fs))
    dt = _KMV_DTYPES.get(key)
    if dt is None:
        named = [(f"factors[{t}]", f.dtype) for t, f in enumerate(fs)] + [("x", xa.dtype)]
        dt = _KMV_DTYPES[key] = result_dtype("tj.kron_matvec", named)
        if len(_KMV_DTYPES) > 256:
            _KMV_DTYPES.clear()
    batch = xa.shape[:-1]
    nb = _prod(batch)
    rows = [f.shape[0] for f in fs]
    R = _prod(rows)
    # the result, then the largest intermediate (after mode t: rows t.. times cols ..t-1), fit the budget
    _config.check_budget((*batch, R), dt.itemsize, what="kron_matvec result")
    k = len(fs)
    if k > 1:
        suffix = [1] * (k + 1)  # suffix[t] = prod(rows[t:])
        for t in range(k - 1, -1, -1):
            suffix[t] = suffix[t + 1] * rows[t]
        big, prefix = (0, 0), 1  # prefix = prod(cols[:t])
        for t in range(1, k):
            prefix *= cols[t - 1]
            if suffix[t] * prefix > big[0] * big[1]:
                big = (suffix[t], prefix)
        _config.check_budget((nb, *big), dt.itemsize, what="kron_matvec intermediate")
    if nb == 0 or R == 0 or C == 0:
        return np.zeros((*batch, R), dt)
    mats = [f.astype(dt, copy=False) for f in fs]
    cur = xa.astype(dt, copy=False).reshape(nb, C)
    if k == 1 or _kmv_stacked(rows, cols):
        out = _kmv_stacked_modes(mats, rows, cols, cur, nb)
    else:
        out = _kmv_rotating_modes(mats, cols, cur, nb)
    return out.reshape((*batch, _prod(rows)))


def _kmv_stacked(rows: list[int], cols: list[int]) -> bool:
    """Whether every mode but the last makes GEMMs big enough for the stacked form."""
    post = rows[-1]
    for t in range(len(rows) - 2, -1, -1):
        if rows[t] * cols[t] * post < _KMV_STACKED_MIN_WORK:
            return False
        post *= rows[t]
    return True


def _kmv_stacked_modes(mats: list[np.ndarray], rows: list[int], cols: list[int], cur: np.ndarray,
                       nb: int) -> np.ndarray:
    """Mode products in place, last mode first: every GEMM is BLAS's untransposed case.

    The last mode is one GEMM ``X (nb*c_1..c_{k-1}, c_k) @ A_k^T`` (a small contiguous copy of
    A_k^T); mode t < k is ``A_t @ X[p]`` over the stack ``X (nb*c_1..c_{t-1}, c_t, r_{t+1}..r_k)``.
    Every intermediate stays in the result's axis order, so nothing is ever transposed.
    """
    k = len(mats)
    pre = cur.size // cols[-1]
    out = cur.reshape(pre, cols[-1]) @ np.ascontiguousarray(mats[-1].T)
    post = rows[-1]
    for t in range(k - 2, -1, -1):
        pre //= cols[t]
        out = np.matmul(mats[t], out.reshape(pre, cols[t], post))
        post *= rows[t]
    return out.reshape(nb, post)


def _kmv_rotating_modes(mats: list[np.ndarray], cols: list[int], cur: np.ndarray, nb: int) -> np.ndarray:
    """Mode products as one GEMM each, for many small factors.

    Each mode is ``A_t @ X.T`` with ``X (rest, c_t)``: its output ``(r_t, rest)`` rotates the next
    mode into last place.  After all k modes the result is ``(r_1..r_k, nb)``: one transposing
    copy (none for a single vector) gives ``(nb, r_1..r_k)``.
    """
    for t in range(len(mats) - 1, -1, -1):
        cur = mats[t] @ cur.reshape(cur.size // cols[t], cols[t]).T
    return np.ascontiguousarray(cur.reshape(cur.size // nb, nb).T)
