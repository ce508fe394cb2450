"""The dense-Jacobian benchmark cases of the foundation issue, shared by the
pytest-benchmark file and compare.py."""

from __future__ import annotations

import numpy as np
import tensorjac as tj


def dense_cases(seed: int = 0) -> dict[str, tuple[tj.Op, tuple[np.ndarray, ...], int]]:
    """name -> (op, args, wrt): sandwich n=48 (40 MiB), multiply 64x64 and kron 16x16 (128 MiB)."""
    rng = np.random.default_rng(seed)
    n = 48
    return {
        "sandwich n=48 wrt X (40 MiB)": (tj.sandwich, tuple(rng.standard_normal((n, n)) for _ in range(3)), 1),
        "multiply 64x64 wrt X (128 MiB)": (tj.multiply, tuple(rng.standard_normal((64, 64)) for _ in range(2)), 0),
        "kron 16x16 wrt A (128 MiB)": (tj.kron, tuple(rng.standard_normal((16, 16)) for _ in range(2)), 0),
    }


def tiny_matvec(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((3, 3)), rng.standard_normal(3)
