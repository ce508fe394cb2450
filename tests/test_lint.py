"""Lint in CI: ruff and mypy run as part of the test suite.

``.ci/run`` stays the README's test command (``pip install ".[test]" && python -m
pytest``), so the linters run from here; both are in the ``test`` extra.  Each
is skipped only when it is not installed (e.g. a bare ``pip install pytest``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(tool: str, *args: str) -> None:
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} is not installed (pip install '.[test]')")
    proc = subprocess.run([sys.executable, "-m", tool, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, (
        f"`{tool} {' '.join(args)}` exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    )


def test_ruff():
    paths = [p for p in ("python", "tests", "benchmarks") if (ROOT / p).is_dir()]
    _run("ruff", "check", "--no-cache", *paths)


def test_mypy():
    if not (ROOT / "python" / "tensorjac").is_dir():
        pytest.skip("no source tree")
    # a cache outside the checkout (kept between runs, one per checkout and user): ~3x faster when warm
    key = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    cache = Path(tempfile.gettempdir()) / f"tensorjac-mypy-{user}-{key}" / ".mypy_cache"
    _run("mypy", "--cache-dir", str(cache), "python/tensorjac")
