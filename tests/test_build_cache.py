"""cmake/objcache.py: the compiler launcher that lets a second ``pip install`` reuse the objects."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cpp_tools import compiler

SCRIPT = Path(__file__).resolve().parents[1] / "cmake" / "objcache.py"
CXX = compiler()

pytestmark = [
    pytest.mark.skipif(not SCRIPT.exists(), reason="cmake/objcache.py not found (installed without the source tree)"),
    pytest.mark.skipif(CXX is None or sys.platform == "win32", reason="needs a C++ compiler on a POSIX system"),
]


@pytest.fixture
def cc(tmp_path):
    """A compiler wrapper that logs every real compile (-c) it is asked to do."""
    log = tmp_path / "compiles.log"
    wrapper = tmp_path / "cxx"
    wrapper.write_text(f'#!/bin/sh\ncase " $* " in *" -c "*) echo "$*" >> "{log}";; esac\nexec "{CXX}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return wrapper, log


def _compile(cc, cache, src, obj):
    dep = str(obj) + ".d"
    cmd = [sys.executable, str(SCRIPT), str(cache), str(cc), "-O1", "-MD", "-MT", str(obj), "-MF", dep,
           "-c", str(src), "-o", str(obj)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc, Path(dep)


def _compiles(log):
    return len(log.read_text().splitlines()) if log.exists() else 0


def _source(tmp_path):
    """a.cpp including h.hpp; returns a.cpp."""
    (tmp_path / "h.hpp").write_text("inline int twice(int x) { return 2 * x; }\n")
    src = tmp_path / "a.cpp"
    src.write_text('#include "h.hpp"\nint f(int x) { return twice(x) + 1; }\n')
    return src


def test_second_build_reuses_the_object_and_its_dependency_file(tmp_path, cc):
    wrapper, log = cc
    src = _source(tmp_path)
    cache = tmp_path / "cache"
    proc, dep = _compile(wrapper, cache, src, tmp_path / "a1.o")
    assert proc.returncode == 0, proc.stderr
    assert _compiles(log) == 1
    first = (tmp_path / "a1.o").read_bytes()
    assert "h.hpp" in dep.read_text()
    # a fresh build tree (scikit-build-core removed the objects): served from the cache
    (tmp_path / "a1.o").unlink()
    dep.unlink()
    proc, dep = _compile(wrapper, cache, src, tmp_path / "a1.o")
    assert proc.returncode == 0, proc.stderr
    assert _compiles(log) == 1
    assert (tmp_path / "a1.o").read_bytes() == first
    assert "h.hpp" in dep.read_text()


def test_a_changed_header_or_flag_recompiles(tmp_path, cc):
    wrapper, log = cc
    src = _source(tmp_path)
    cache = tmp_path / "cache"
    assert _compile(wrapper, cache, src, tmp_path / "a.o")[0].returncode == 0
    (tmp_path / "h.hpp").write_text("inline int twice(int x) { return x + x + 0; }\n")
    assert _compile(wrapper, cache, src, tmp_path / "a.o")[0].returncode == 0
    assert _compiles(log) == 2
    cmd = [sys.executable, str(SCRIPT), str(cache), str(wrapper), "-O2", "-c", str(src), "-o", str(tmp_path / "b.o")]
    assert subprocess.run(cmd).returncode == 0
    assert _compiles(log) == 3


def test_compile_errors_pass_through_and_are_not_cached(tmp_path, cc):
    wrapper, log = cc
    src = tmp_path / "bad.cpp"
    src.write_text("int f( { }\n")
    cache = tmp_path / "cache"
    for _ in range(2):
        proc, _ = _compile(wrapper, cache, src, tmp_path / "bad.o")
        assert proc.returncode != 0 and "error" in proc.stderr
    assert not cache.exists() or not list(cache.glob("*.o"))
    assert _compiles(log) == 2  # compiled (and failed) both times
    # a command that is not a compile (e.g. a link) runs as given
    out = tmp_path / "lib.txt"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(cache), sys.executable, "-c",
                           f"open({str(out)!r}, 'w').write('ran')"])
    assert proc.returncode == 0 and out.read_text() == "ran"
