"""Representative, well-conditioned arguments for every op in the catalogue.

Used by the self-check (``python -m tensorjac``), the tests and the benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _spd(rng: np.random.Generator, n: int) -> np.ndarray:
    """A well-conditioned square matrix (far from singular)."""
    return rng.standard_normal((n, n)) + n * np.eye(n)


def _pos(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    return rng.uniform(0.5, 2.0, shape)


EXAMPLES: dict[str, Callable[[np.random.Generator], tuple[np.ndarray, ...]]] = {
    "matmul": lambda r: (r.standard_normal((3, 4)), r.standard_normal((4, 2))),
    "sandwich": lambda r: (r.standard_normal((2, 3)), r.standard_normal((3, 4)), r.standard_normal((4, 2))),
    "multiply": lambda r: (r.standard_normal((3, 4)), r.standard_normal((3, 4))),
    "kron": lambda r: (r.standard_normal((2, 3)), r.standard_normal((3, 2))),
    "outer": lambda r: (r.standard_normal(3), r.standard_normal(4)),
    "transpose": lambda r: (r.standard_normal((3, 4)),),
    "inv": lambda r: (_spd(r, 3),),
    "trace": lambda r: (r.standard_normal((3, 3)),),
    "det": lambda r: (_spd(r, 3),),
    "logdet": lambda r: (_spd(r, 3),),
    "dot": lambda r: (r.standard_normal(4), r.standard_normal(4)),
    "quadratic": lambda r: (r.standard_normal(3), r.standard_normal((3, 3))),
    "sum": lambda r: (r.standard_normal((3, 4)),),
    "norm": lambda r: (r.standard_normal((3, 4)),),
    "exp": lambda r: (r.standard_normal((3, 4)),),
    "log": lambda r: (_pos(r, (3, 4)),),
    "sin": lambda r: (r.standard_normal((3, 4)),),
    "cos": lambda r: (r.standard_normal((3, 4)),),
    "tanh": lambda r: (r.standard_normal((3, 4)),),
    "sigmoid": lambda r: (r.standard_normal((3, 4)),),
    "relu": lambda r: (r.choice([-1.5, -0.5, 0.5, 1.5], (3, 4)) + 0.1 * r.standard_normal((3, 4)),),
    "softplus": lambda r: (r.standard_normal((3, 4)),),
    "square": lambda r: (r.standard_normal((3, 4)),),
    "sqrt": lambda r: (_pos(r, (3, 4)),),
    "abs": lambda r: (r.choice([-1.5, -0.5, 0.5, 1.5], (3, 4)) + 0.1 * r.standard_normal((3, 4)),),
}


def example_args(name: str, seed: int = 0) -> tuple[np.ndarray, ...]:
    return EXAMPLES[name](np.random.default_rng(seed))
