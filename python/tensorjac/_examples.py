"""Example arguments for every op, and a catalogue of composite numpy functions.

The op examples live with each op (``Op(..., example=...)``); this module only
looks them up.  The composite catalogue exercises the engine on the
matrix-calculus functions users ask about.  Both feed the self-check
(``python -m tensorjac``), the tests and the benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ._rule import REGISTRY


def example_args(name: str, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Well-conditioned arguments for the op ``name`` (its ``example=``)."""
    op = REGISTRY[name]
    if op.example is None:
        raise KeyError(f"op {name!r} has no example arguments")
    return tuple(op.example(np.random.default_rng(seed)))


class Composite(NamedTuple):
    f: Callable[..., Any]
    args: Callable[[np.random.Generator], tuple[np.ndarray, ...]]
    wrt: tuple[int, ...]


def _spd(r: np.random.Generator, n: int) -> np.ndarray:
    M = r.standard_normal((n, n))
    return M @ M.T + n * np.eye(n)


def _softmax_rows(X: np.ndarray, W: np.ndarray) -> Any:
    Z = X @ W
    Z = Z - Z.max(axis=1, keepdims=True)
    E = np.exp(Z)
    return E / E.sum(axis=1, keepdims=True)


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> Any:
    return g * (x - x.mean()) / np.sqrt(x.var() + 1e-5) + b


COMPOSITES: dict[str, Composite] = {
    "tanh(X @ W + b)": Composite(lambda X, W, b: np.tanh(X @ W + b),
                                 lambda r: (r.standard_normal((2, 3)), r.standard_normal((3, 4)), r.standard_normal(4)),
                                 (0, 1, 2)),
    "inv(A @ X @ B)": Composite(lambda A, X, B: np.linalg.inv(A @ X @ B),
                                lambda r: (np.eye(3) + 0.1 * r.standard_normal((3, 3)), _spd(r, 3),
                                           np.eye(3) + 0.1 * r.standard_normal((3, 3))), (1,)),
    "layer norm": Composite(_layer_norm, lambda r: (r.standard_normal(5), r.uniform(0.5, 2, 5), r.standard_normal(5)),
                            (0, 1, 2)),
    "row softmax of X @ W": Composite(_softmax_rows, lambda r: (r.standard_normal((3, 4)), r.standard_normal((4, 3))),
                                      (0, 1)),
    "two-layer MLP": Composite(lambda W1, x, W2: np.tanh(W2 @ np.tanh(W1 @ x)),
                               lambda r: (r.standard_normal((4, 3)), r.standard_normal(3), r.standard_normal((2, 4))),
                               (0, 1, 2)),
    "ln ||A x||^2": Composite(lambda A, x: np.log(np.sum((A @ x) ** 2)),
                              lambda r: (r.standard_normal((3, 3)), r.standard_normal(3)), (0, 1)),
    "||A X B||_F^2": Composite(lambda A, X, B: np.linalg.norm(A @ X @ B, "fro") ** 2,
                               lambda r: (r.standard_normal((2, 3)), r.standard_normal((3, 4)), r.standard_normal((4, 2))),
                               (1,)),
    "log|det X|": Composite(lambda X: np.linalg.slogdet(X)[1], lambda r: (_spd(r, 3),), (0,)),
    "least squares ||X w - y||^2": Composite(lambda X, w, y: np.sum((X @ w - y) ** 2),
                                             lambda r: (r.standard_normal((5, 3)), r.standard_normal(3),
                                                        r.standard_normal(5)), (0, 1)),
    "ridge solution": Composite(lambda X, y: np.linalg.solve(X.T @ X + 0.5 * np.eye(3), X.T @ y),
                                lambda r: (r.standard_normal((5, 3)), r.standard_normal(5)), (0, 1)),
    "covariance eigenvalues": Composite(lambda X: np.linalg.eigvalsh((X - X.mean(0)).T @ (X - X.mean(0)) / 4),
                                        lambda r: (r.standard_normal((5, 3)),), (0,)),
    "x^T A x / x^T x": Composite(lambda x, A: (x @ A @ x) / (x @ x),
                                 lambda r: (r.standard_normal(3), r.standard_normal((3, 3))), (0, 1)),
    "rank-3 einsum": Composite(lambda T, M: np.einsum("ijk,kl->ijl", np.sin(T), M).sum(axis=0),
                               lambda r: (r.standard_normal((2, 3, 4)), r.standard_normal((4, 2))), (0, 1)),
    "indexing, concatenation, cumsum": Composite(
        lambda x: np.cumsum(np.concatenate([x[::2] ** 2, x[[1, 0]], np.maximum(x, 0.1)])),
        lambda r: (r.uniform(0.5, 2, 4) * r.choice([-1, 1], 4),), (0,)),
    "cholesky": Composite(np.linalg.cholesky, lambda r: (_spd(r, 3),), (0,)),
}
