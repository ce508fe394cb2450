"""Issue 9: the C++ unit tests of the header-only kernels (tests/cpp), built and run.

The kernels are built twice, with OpenMP and without (the headers must work
without it), into cached build directories under build/cpp-tests/ (a temporary
directory when the checkout is read-only); both builds run concurrently.
Skipped with a reason when cmake or a C++ compiler is missing.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cpp_tools import build_root, compiler, tool

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "cpp"
VARIANTS = {"openmp": ["-DTJ_TEST_OPENMP=ON"], "serial": ["-DTJ_TEST_OPENMP=OFF"]}


CMAKE = tool("cmake")
NINJA = tool("ninja")


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _build(variant: str) -> tuple[str, str | None, str]:
    """Configures and builds one variant: ("ok", exe, log), ("skip", None, reason) or ("fail", None, log)."""
    build = build_root("cpp-tests") / variant
    cmd = [CMAKE, "-S", str(SOURCE), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", *VARIANTS[variant]]
    if NINJA and not (build / "CMakeCache.txt").exists():
        cmd += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={NINJA}"]
    conf = _run(cmd, 300)
    log = conf.stdout + conf.stderr
    if conf.returncode != 0:
        if "CMAKE_CXX_COMPILER" in log or "No CMAKE_CXX_COMPILER" in log:
            return "skip", None, "cmake found no working C++ compiler"
        return "fail", None, "configure failed:\n" + log
    built = _run([CMAKE, "--build", str(build)], 900)
    log = built.stdout + built.stderr
    if built.returncode != 0:
        return "fail", None, "build failed:\n" + log
    exe = build / ("tj_kernel_tests.exe" if os.name == "nt" else "tj_kernel_tests")
    if not exe.exists():
        exe = next(build.rglob("tj_kernel_tests*"), exe)  # multi-config generators
    return "ok", str(exe), log


@pytest.fixture(scope="module")
def builds() -> dict[str, tuple[str, str | None, str]]:
    if CMAKE is None:
        pytest.skip("cmake is not installed (pip install cmake)")
    if compiler() is None:
        pytest.skip("no C++ compiler (c++, g++, clang++ or $CXX) found")
    with ThreadPoolExecutor(max_workers=len(VARIANTS)) as ex:
        return dict(zip(VARIANTS, ex.map(_build, VARIANTS)))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cpp_kernel_unit_tests(variant, builds):
    status, exe, log = builds[variant]
    if status == "skip":
        pytest.skip(log)
    assert status == "ok", log
    assert exe is not None
    warnings = [line for line in log.splitlines() if "warning" in line.lower() and "cpp/include" in line]
    r = _run([exe], 300)
    out = r.stdout + r.stderr
    print(out)
    assert r.returncode == 0, f"C++ kernel tests failed (exit code {r.returncode}):\n{out}"
    assert " 0 failed" in out.splitlines()[-1], out
    header = out.splitlines()[0]
    if variant == "serial":
        assert "openmp no" in header, header
    elif "openmp no" in header:
        pytest.skip("OpenMP not found by CMake: only the serial kernels were tested")
    assert not warnings, "compiler warnings in the kernel headers:\n" + "\n".join(warnings)
