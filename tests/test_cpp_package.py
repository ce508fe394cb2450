"""Issue 10, part 1: the C++ package -- headers and CMake config shipped by the wheel, found with
tensorjac.get_include() / get_cmake_dir(), and by ``cmake --install`` of the source tree.

Built and run here (cached under build/cpp-package-tests/, or a temporary directory when the
checkout is read-only; -O1, two builds at a time):

* examples/cpp against the imported package's config (tensorjac.get_cmake_dir());
* the source tree installed with plain CMake (no Python, no pybind11) into a prefix, and
  examples/cpp built against that prefix;
* the C++ API unit tests (tests/cpp/api) against the prefix, with OpenMP and as a consumer
  without it (tensorjac_USE_OPENMP=OFF: no OpenMP flag anywhere);
* every header alone, without OpenMP, with -Wall -Wextra -Wpedantic -Werror.

Skipped with a reason when cmake or a C++ compiler is missing.
"""

from __future__ import annotations

import contextlib
import doctest
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import pytest
import tensorjac as tj
from cpp_tools import build_root, compiler, tool
from tensorjac import _paths

ROOT = Path(__file__).resolve().parents[1]
HEADERS = ROOT / "cpp" / "include" / "tensorjac"
EXAMPLE = ROOT / "examples" / "cpp"
API_TESTS = ROOT / "tests" / "cpp" / "api"
CONFIG_FILES = {"tensorjacConfig.cmake", "tensorjacConfigVersion.cmake", "tensorjacTargets.cmake"}


CMAKE = tool("cmake")
NINJA = tool("ninja")
CXX = compiler()


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One test session at a time builds in `root` (engineers share the checkout)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(cmd: list[str], timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env)


def _env() -> dict[str, str]:
    """The environment of the CMake runs: no CMAKE_PREFIX_PATH or tensorjac_DIR from outside,
    so find_package can only see what each test points it to."""
    env = dict(os.environ)
    for var in ("CMAKE_PREFIX_PATH", "tensorjac_DIR", "tensorjac_ROOT", "TENSORJAC_ROOT"):
        env.pop(var, None)
    return env


def _configure(source: Path, build: Path, *args: str, opt: str = "-O1") -> tuple[bool, str]:
    cmd = [CMAKE, "-S", source, "-B", build, "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_CXX_FLAGS_RELEASE={opt}",
           "-DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON", *args]
    if NINJA and not (build / "CMakeCache.txt").exists():
        cmd += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={NINJA}"]
    r = _run(cmd, env=_env())
    return r.returncode == 0, r.stdout + r.stderr


def _version() -> str:
    return metadata.version("tensorjac")


# ----------------------------------------------------------------------------- the builds


def _installed_from_distribution() -> bool:
    """Is the imported tensorjac the installed distribution (a wheel or an editable install),
    rather than a source staging directory such as tools/sanitize's?"""
    try:
        located = Path(str(metadata.distribution("tensorjac").locate_file("tensorjac"))).resolve()
    except metadata.PackageNotFoundError:
        return False
    return any(Path(p).resolve() == located for p in tj.__path__)


class Build:
    """One CMake project configured, built and (for executables) run."""

    def __init__(self, name: str, source: Path, exe: str, args: list[str], opt: str = "-O1") -> None:
        self.name, self.source, self.exe, self.args, self.opt = name, source, exe, args, opt
        self.dir = build_root("cpp-package-tests") / name
        self.status, self.log, self.out, self.returncode = "pending", "", "", -1

    def run(self) -> Build:
        ok, log = _configure(self.source, self.dir, *self.args, opt=self.opt)
        self.log = log
        if not ok:
            self.status = "configure failed"
            return self
        r = _run([CMAKE, "--build", self.dir, "-j", "1"])
        self.log += r.stdout + r.stderr
        if r.returncode != 0:
            self.status = "build failed"
            return self
        exe = self.dir / (self.exe + (".exe" if os.name == "nt" else ""))
        if not exe.exists():
            exe = next(self.dir.rglob(self.exe + "*"), exe)  # multi-config generators
        r = _run([exe], timeout=300, env=_env())
        self.out, self.returncode = r.stdout + r.stderr, r.returncode
        self.status = "ran"
        return self

    def check_ran(self) -> str:
        assert self.status == "ran", f"{self.name}: {self.status}:\n{self.log}"
        assert self.returncode == 0, f"{self.name} failed (exit code {self.returncode}):\n{self.out}"
        return self.out

    def found(self) -> str:
        """The line of the configure log where the project reports the tensorjac it found."""
        lines = [ln for ln in self.log.splitlines() if "tensorjac " in ln and ("OpenMP" in ln)]
        assert lines, self.log
        return lines[0]


@pytest.fixture(scope="module")
def toolchain() -> None:
    if CMAKE is None:
        pytest.skip("cmake is not installed (pip install cmake)")
    if CXX is None:
        pytest.skip("no C++ compiler (c++, g++, clang++ or $CXX) found")


@pytest.fixture(scope="module")
def session(toolchain: None) -> Iterator[Path]:
    root = build_root("cpp-package-tests")
    with _locked(root):
        yield root


@pytest.fixture(scope="module")
def prefix(session: Path) -> Path:
    """The source tree configured with plain CMake (no scikit-build, no Python module) and
    installed with cmake --install into a fresh prefix."""
    build, pre = session / "source-tree", session / "prefix"
    shutil.rmtree(pre, ignore_errors=True)
    ok, log = _configure(ROOT, build, "-DTJ_PYTHON=OFF")
    if not ok and ("CMAKE_CXX_COMPILER" in log or "No CMAKE_CXX_COMPILER" in log):
        pytest.skip("cmake found no working C++ compiler")
    assert ok, "configuring the source tree without Python failed:\n" + log
    assert "pybind11" not in log and "Python" not in log, log
    r = _run([CMAKE, "--install", build, "--prefix", pre])
    assert r.returncode == 0, r.stdout + r.stderr
    return pre


@pytest.fixture(scope="module")
def builds(session: Path, prefix: Path) -> dict[str, Build]:
    version = _version()
    # longest first; the consumer without OpenMP is also the unoptimised build (-O0: half the compile time)
    todo = [
        Build("api-openmp", API_TESTS, "tj_api_tests", [f"-DCMAKE_PREFIX_PATH={prefix}", f"-DTJ_EXPECT_VERSION={version}"]),
        Build("api-serial", API_TESTS, "tj_api_tests",
              [f"-DCMAKE_PREFIX_PATH={prefix}", "-Dtensorjac_USE_OPENMP=OFF", "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"],
              opt="-O0"),
        Build("example-prefix", EXAMPLE, "tensorjac_example", [f"-DCMAKE_PREFIX_PATH={prefix}"]),
    ]
    if _installed_from_distribution():
        todo.append(Build("example-package", EXAMPLE, "tensorjac_example", [f"-Dtensorjac_DIR={tj.get_cmake_dir()}"]))
    with ThreadPoolExecutor(max_workers=2) as ex:
        return {b.name: b for b in ex.map(Build.run, todo)}


# ----------------------------------------------------------------------------- Python side


def test_get_include_and_get_cmake_dir_of_the_imported_package():
    inc = Path(tj.get_include())
    assert inc.is_absolute() and (inc / "tensorjac" / "tensorjac.hpp").is_file()
    assert {p.name for p in HEADERS.glob("*.hpp")} <= {p.name for p in (inc / "tensorjac").glob("*.hpp")}
    if not _installed_from_distribution():
        pytest.skip(f"tensorjac is imported from {tj.__path__}, not from its installation (e.g. tools/sanitize)")
    d = Path(tj.get_cmake_dir())
    assert d.is_absolute() and CONFIG_FILES <= {p.name for p in d.iterdir()}
    # the config finds the headers get_include() names (share/cmake/tensorjac -> include)
    assert (d.parents[2] / "include").resolve() == inc.resolve()
    text = (d / "tensorjacConfigVersion.cmake").read_text()
    assert f'set(PACKAGE_VERSION "{tj.__version__}")' in text
    # the installed headers are the sources' (an editable install copies them at each build)
    for src in HEADERS.glob("*.hpp"):
        assert (inc / "tensorjac" / src.name).read_bytes() == src.read_bytes(), (
            f"{inc / 'tensorjac' / src.name} differs from {src}: rebuild (pip install -e . --no-build-isolation)"
        )


def test_docstring_examples_of_get_include_and_get_cmake_dir():
    if not _installed_from_distribution():
        pytest.skip(f"tensorjac is imported from {tj.__path__}, not from its installation (e.g. tools/sanitize)")
    tried = 0
    for t in doctest.DocTestFinder().find(_paths):
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        runner.run(t)
        assert runner.failures == 0, t.name
        tried += runner.tries
    assert tried >= 4


def test_paths_search_order_and_errors(tmp_path):
    installed, source_dir = tmp_path / "site" / "tensorjac", tmp_path / "src" / "python" / "tensorjac"
    (installed / "include" / "tensorjac").mkdir(parents=True)
    (installed / "include" / "tensorjac" / "tensorjac.hpp").write_text("// installed\n")
    (installed / "share" / "cmake" / "tensorjac").mkdir(parents=True)
    (installed / "share" / "cmake" / "tensorjac" / "tensorjacConfig.cmake").write_text("# config\n")
    source_dir.mkdir(parents=True)
    checkout_include = tmp_path / "src" / "cpp" / "include"
    (checkout_include / "tensorjac").mkdir(parents=True)
    (checkout_include / "tensorjac" / "tensorjac.hpp").write_text("// source\n")
    # editable install: site-packages first, then the source directory
    assert _paths._find_include([installed, source_dir], checkout_include) == str((installed / "include").resolve())
    assert _paths._find_cmake_dir([installed, source_dir]) == str(
        (installed / "share" / "cmake" / "tensorjac").resolve()
    )
    # a source checkout without installed headers: its cpp/include
    assert _paths._find_include([source_dir], checkout_include) == str(checkout_include)
    with pytest.raises(FileNotFoundError, match="CMake package config is not installed.*cmake --install"):
        _paths._find_cmake_dir([source_dir])
    with pytest.raises(FileNotFoundError, match="C\\+\\+ headers are not installed"):
        _paths._find_include([source_dir], tmp_path / "nowhere")


def test_headers_are_free_of_python():
    for h in HEADERS.glob("*.hpp"):
        text = h.read_text()
        assert not re.search(r"#\s*include\s*[<\"](Python\.h|pybind11)", text), h
        assert "PyObject" not in text and "Py_" not in text, h
    umbrella = (HEADERS / "tensorjac.hpp").read_text()
    for h in ("parallel", "expand", "kron", "fd", "symmetrize", "api"):
        assert f'#include "tensorjac/{h}.hpp"' in umbrella


# ----------------------------------------------------------------------------- C++ side


def test_cmake_install_of_the_source_tree(prefix):
    inc, cmake_dir = prefix / "include" / "tensorjac", prefix / "share" / "cmake" / "tensorjac"
    assert {p.name for p in inc.iterdir()} == {p.name for p in HEADERS.glob("*.hpp")}
    for src in HEADERS.glob("*.hpp"):
        assert (inc / src.name).read_bytes() == src.read_bytes()
    assert {p.name for p in cmake_dir.iterdir()} == CONFIG_FILES
    assert not list(prefix.rglob("_core*")), "the plain install must not build the Python module"
    assert f'set(PACKAGE_VERSION "{_version()}")' in (cmake_dir / "tensorjacConfigVersion.cmake").read_text()


def test_headers_compile_alone_without_openmp(session):
    """Each header is self-contained and warning-free without OpenMP (no -fopenmp, _OPENMP undefined)."""
    flags = ["-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Wpedantic", "-Werror", f"-I{HEADERS.parent}"]
    headers = sorted(HEADERS.glob("*.hpp"))
    # a stamp of the last clean run: the same headers, flags and compiler need not be compiled again
    version = _run([CXX, "--version"], timeout=60).stdout
    key = hashlib.sha256("\0".join([version, *flags, *(h.name + h.read_text() for h in headers)]).encode()).hexdigest()
    stamp = session / "headers-alone.ok"
    if stamp.exists() and stamp.read_text() == key:
        return

    def compile_one(h: Path) -> tuple[str, int, str]:
        src = session / f"alone_{h.stem}.cpp"
        src.write_text(f"#include <tensorjac/{h.name}>\n#ifdef _OPENMP\n#error OpenMP is on\n#endif\nint main() {{}}\n")
        r = _run([CXX, *flags, src], timeout=300)
        return h.name, r.returncode, r.stdout + r.stderr

    with ThreadPoolExecutor(max_workers=2) as ex:
        results = list(ex.map(compile_one, headers))
    failed = [f"{name}:\n{log}" for name, rc, log in results if rc != 0]
    assert not failed, "\n".join(failed)
    stamp.write_text(key)


def test_example_against_the_installed_package(builds):
    """examples/cpp with -Dtensorjac_DIR=$(python -c 'import tensorjac; print(tensorjac.get_cmake_dir())')."""
    if "example-package" not in builds:
        pytest.skip(f"tensorjac is imported from {tj.__path__}, not from its installation (e.g. tools/sanitize)")
    b = builds["example-package"]
    out = b.check_ran()
    assert out.strip().splitlines()[-1].startswith("OK"), out
    assert f"tensorjac {_version()} " in b.found() and b.found().endswith(tj.get_include()), b.found()


def test_example_against_cmake_install_prefix(builds, prefix):
    b = builds["example-prefix"]
    out = b.check_ran()
    lines = out.strip().splitlines()
    assert lines[-1].startswith("OK"), out
    assert sum(line.endswith("ok") for line in lines) == 4, out
    assert b.found().endswith(str(prefix / "include")), b.found()


def test_cpp_api_unit_tests_with_openmp(builds):
    b = builds["api-openmp"]
    out = b.check_ran()
    print(out)
    assert out.strip().splitlines()[-1].endswith(" 0 failed"), out
    warnings = [ln for ln in b.log.splitlines() if "warning" in ln.lower() and "tensorjac/" in ln]
    assert not warnings, "compiler warnings in the tensorjac headers:\n" + "\n".join(warnings)
    if "openmp no" in out.splitlines()[0]:
        pytest.skip("OpenMP not found by CMake: only the serial kernels were tested")
    assert "OpenMP TRUE" in b.found(), b.found()


def test_consumer_without_openmp(builds):
    """tensorjac_USE_OPENMP=OFF: tensorjac::kernels brings no OpenMP flag, and the kernels run serially."""
    b = builds["api-serial"]
    out = b.check_ran()
    assert out.strip().splitlines()[-1].endswith(" 0 failed"), out
    assert "openmp no, thread cap 1" in out.splitlines()[0], out
    assert "OpenMP FALSE" in b.found(), b.found()
    commands = json.loads((b.dir / "compile_commands.json").read_text())
    assert commands and not any("openmp" in c["command"].lower() for c in commands), commands


# find_package(tensorjac) in separate subdirectories (imported targets are directory-scoped), each
# reporting "CHECK name=value" lines
FIND_PACKAGE_CHECKS = {
    "newer-version": """
find_package(tensorjac 99.0 CONFIG QUIET)
message(STATUS "CHECK newer-version-found=${tensorjac_FOUND}")
""",
    "openmp-component-opted-out": """
set(tensorjac_USE_OPENMP OFF)
find_package(tensorjac CONFIG QUIET COMPONENTS OpenMP)
message(STATUS "CHECK openmp-component-opted-out-found=${tensorjac_FOUND}")
""",
    "no-openmp-available": """
set(CMAKE_DISABLE_FIND_PACKAGE_OpenMP TRUE)
find_package(tensorjac CONFIG REQUIRED)
get_target_property(libs tensorjac::kernels INTERFACE_LINK_LIBRARIES)
message(STATUS "CHECK no-openmp-available=${tensorjac_OpenMP_FOUND}:${libs}")
""",
    "default": """
find_package(tensorjac CONFIG REQUIRED)
get_target_property(libs tensorjac::kernels INTERFACE_LINK_LIBRARIES)
get_target_property(hlibs tensorjac::headers INTERFACE_LINK_LIBRARIES)
get_target_property(feats tensorjac::headers INTERFACE_COMPILE_FEATURES)
find_package(OpenMP QUIET COMPONENTS CXX)
message(STATUS "CHECK default=${tensorjac_OpenMP_FOUND}:${libs} openmp-available=${OpenMP_CXX_FOUND}")
message(STATUS "CHECK headers=${hlibs}:${feats}")
""",
}


def test_find_package_version_components_and_openmp(session, prefix):
    src = session / "find-package-checks"
    for name, body in FIND_PACKAGE_CHECKS.items():
        (src / name).mkdir(parents=True, exist_ok=True)
        (src / name / "CMakeLists.txt").write_text(body)
    subdirs = "".join(f"add_subdirectory({name})\n" for name in FIND_PACKAGE_CHECKS)
    (src / "CMakeLists.txt").write_text(
        f"cmake_minimum_required(VERSION 3.18)\nproject(tj_find_package_checks LANGUAGES CXX)\n{subdirs}"
    )
    ok, log = _configure(src, session / "find-package-checks-build", f"-DCMAKE_PREFIX_PATH={prefix}")
    assert ok, log
    checks = dict(re.findall(r"CHECK (\S+?)=(\S*)", log))
    falsy = ("0", "FALSE", "")
    assert checks["newer-version-found"] in falsy, log  # 0.x: a newer minor version is not compatible
    assert checks["openmp-component-opted-out-found"] in falsy, log  # COMPONENTS OpenMP needs OpenMP
    # a compiler without OpenMP: the package is found, tensorjac::kernels is the headers alone
    assert checks["no-openmp-available"] == "FALSE:tensorjac::headers", log
    assert checks["headers"] == "Threads::Threads:cxx_std_17", log
    if "openmp-available=TRUE" in log:
        assert checks["default"] == "TRUE:tensorjac::headers;OpenMP::OpenMP_CXX", log
    else:
        assert checks["default"] == "FALSE:tensorjac::headers", log
