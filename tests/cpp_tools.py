"""Finding the tools the C++ tests build with (tests/test_cpp_kernels.py, tests/test_cpp_package.py,
tests/test_build_cache.py), and a build directory for them."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tool(name: str) -> str | None:
    """A command-line tool on PATH, or the one shipped by its pip package (cmake, ninja)."""
    found = shutil.which(name)
    if found:
        return found
    try:
        module = __import__(name)
        bindir = Path(getattr(module, "CMAKE_BIN_DIR", None) or getattr(module, "BIN_DIR", ""))
    except ImportError:
        return None
    exe = bindir / name
    return str(exe) if exe.exists() else None


def compiler() -> str | None:
    """The C++ compiler: $CXX, else the first of c++, g++, clang++ on PATH."""
    for cand in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if cand and shutil.which(cand):
            return cand
    return None


def build_root(name: str) -> Path:
    """``build/<name>`` of the checkout, or a per-checkout temporary directory when that is read-only."""
    root = ROOT / "build" / name
    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / ".writable").touch()
        return root
    except OSError:
        tag = hashlib.sha1(str(ROOT).encode()).hexdigest()[:10]
        root = Path(tempfile.gettempdir()) / f"tensorjac-{name}-{tag}"
        root.mkdir(parents=True, exist_ok=True)
        return root
