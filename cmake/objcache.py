"""A compiler launcher that caches object files across pip builds (what ccache does, for our build).

pip builds in an isolated environment, and scikit-build-core clears the CMake cache and
CMakeFiles/ (the object files) whenever that environment is new, so ``pip install ".[test]"``
after ``pip install .`` would recompile every binding.  CMake runs each compile as

    python objcache.py CACHE_DIR <compiler> <args...> -c <src> -o <obj> [-MD -MT <t> -MF <dep>]

and this script reuses ``<obj>`` (and its dependency file) from CACHE_DIR when the compiler,
its flags and the preprocessed source are identical to an earlier build; otherwise it runs the
compile and stores the result.  Anything it does not recognise as a plain compile runs as given.
The cache keeps the 64 most recent entries.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

KEEP = 64


def _opt(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args and args.index(flag) + 1 < len(args) else None


def _preprocess_command(args: list[str]) -> list[str]:
    """The compile command with -c/-o/-MD/-MT/-MF removed and -E added (output on stdout)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ("-o", "-MT", "-MF", "-MQ"):
            skip = True
            continue
        if a in ("-c", "-MD", "-MMD"):
            continue
        out.append(a)
    return [*out, "-E", "-P"]


def _key(cmd: list[str]) -> str | None:
    compiler = shutil.which(cmd[0]) or cmd[0]
    try:
        st = os.stat(compiler)
        pre = subprocess.run(_preprocess_command(cmd), capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    h = hashlib.sha256()
    h.update(f"{os.path.realpath(compiler)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    h.update("\0".join(cmd[1:]).encode())
    h.update(pre)
    return h.hexdigest()


def _store(src: Path, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dst.parent)
    os.close(fd)
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)  # atomic: a concurrent build never sees half a file


def _prune(cache: Path) -> None:
    entries = sorted(cache.glob("*.o"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[KEEP:]:
        for p in (old, old.with_suffix(".d")):
            p.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    cache, cmd = Path(argv[0]), argv[1:]
    obj, dep = _opt(cmd, "-o"), _opt(cmd, "-MF")
    if "-c" not in cmd or obj is None:
        return subprocess.call(cmd)
    key = _key(cmd)
    if key is None:
        return subprocess.call(cmd)
    hit = cache / f"{key}.o"
    if hit.exists() and (dep is None or hit.with_suffix(".d").exists()):
        shutil.copyfile(hit, obj)
        if dep is not None:
            shutil.copyfile(hit.with_suffix(".d"), dep)
        os.utime(hit)
        return 0
    rc = subprocess.call(cmd)
    if rc == 0:
        cache.mkdir(parents=True, exist_ok=True)
        if dep is not None and os.path.exists(dep):
            _store(Path(dep), hit.with_suffix(".d"))
        _store(Path(obj), hit)
        _prune(cache)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
