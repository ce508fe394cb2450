"""Where the C++ package lives: ``tensorjac.get_include()`` and ``tensorjac.get_cmake_dir()``.

The wheel installs the headers under ``tensorjac/include`` and the CMake package config under
``tensorjac/share/cmake/tensorjac`` (cmake/tensorjacPackage.cmake).  The package's directories
are searched in order: an installed wheel has one; an editable install (scikit-build-core) has
the installed files in site-packages next to the source directory of the Python files.  When
the headers are not installed (the package imported from a source checkout, e.g. by
tools/sanitize), get_include() falls back to the checkout's ``cpp/include``.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["get_cmake_dir", "get_include"]

_HEADER = Path("tensorjac") / "tensorjac.hpp"
_CONFIG = "tensorjacConfig.cmake"


def _package_dirs() -> list[Path]:
    """The package's directories: an installed wheel's, or an editable install's site-packages
    directory (holding the files CMake installed) and its source directory."""
    package = sys.modules[__name__.rpartition(".")[0]]
    return [Path(p) for p in getattr(package, "__path__", [])]


_SOURCE_INCLUDE = Path(__file__).resolve().parents[2] / "cpp" / "include"  # python/tensorjac/ -> cpp/include


def _find_include(dirs: list[Path], source: Path) -> str:
    for d in dirs:
        inc = d / "include"
        if (inc / _HEADER).is_file():
            return str(inc.resolve())
    if (source / _HEADER).is_file():
        return str(source)
    raise FileNotFoundError(
        "tensorjac's C++ headers are not installed with this copy of the package "
        f"(searched {', '.join(str(d / 'include') for d in dirs)} and {source}); "
        "reinstall it with pip (pip install tensorjac, or pip install -e . in a checkout)"
    )


def _find_cmake_dir(dirs: list[Path]) -> str:
    for d in dirs:
        cmake_dir = d / "share" / "cmake" / "tensorjac"
        if (cmake_dir / _CONFIG).is_file():
            return str(cmake_dir.resolve())
    raise FileNotFoundError(
        "tensorjac's CMake package config is not installed with this copy of the package "
        f"(searched {', '.join(str(d / 'share' / 'cmake' / 'tensorjac') for d in dirs)}); "
        "install the package with pip (pip install tensorjac, or pip install -e . in a checkout), "
        "or install the C++ package from the source tree with cmake --install"
    )


def get_include() -> str:
    """The directory holding tensorjac's C++ headers (``<tensorjac/tensorjac.hpp>``).

    Pass it to a compiler as ``-I``; CMake projects use :func:`get_cmake_dir` instead.  The
    headers are C++17, header-only and free of Python; compile with ``-fopenmp`` for parallel
    kernels (without it every kernel runs on the calling thread)::

        c++ -std=c++17 -O2 -fopenmp -I"$(python -c 'import tensorjac; print(tensorjac.get_include())')" app.cpp

    Returns
    -------
    str
        An absolute path: the headers installed with the package, or the ``cpp/include`` of the
        source checkout the package is imported from when they are not installed.

    Raises
    ------
    FileNotFoundError
        When neither exists.

    Examples
    --------
    >>> import os, tensorjac as tj
    >>> inc = tj.get_include()
    >>> os.path.isfile(os.path.join(inc, "tensorjac", "tensorjac.hpp"))
    True
    """
    return _find_include(_package_dirs(), _SOURCE_INCLUDE)


def get_cmake_dir() -> str:
    """The directory of tensorjac's CMake package config, for ``find_package(tensorjac)``.

    A C++ project links the header-only kernels with::

        find_package(tensorjac CONFIG REQUIRED)
        target_link_libraries(app PRIVATE tensorjac::kernels)

    configured with ``-Dtensorjac_DIR="$(python -c 'import tensorjac; print(tensorjac.get_cmake_dir())')"``
    (or with this directory in ``CMAKE_PREFIX_PATH``).  ``tensorjac::kernels`` adds OpenMP where
    CMake finds it; ``tensorjac::headers`` never does.  See the C++ page of the docs.

    Returns
    -------
    str
        An absolute path to the directory holding ``tensorjacConfig.cmake``.

    Raises
    ------
    FileNotFoundError
        When the package was not installed with its CMake config (imported from a source
        checkout): install it with pip, or ``cmake --install`` the source tree.

    Examples
    --------
    >>> import os, tensorjac as tj
    >>> d = tj.get_cmake_dir()
    >>> sorted(f for f in os.listdir(d) if f.startswith("tensorjacConfig"))
    ['tensorjacConfig.cmake', 'tensorjacConfigVersion.cmake']
    """
    return _find_cmake_dir(_package_dirs())
