"""Every public docstring's Examples, each op's doc, and the code of the docs pages run as written.

- module doctests: the public functions and classes of the package (``tensorjac._api``, ``_ad``, ...);
- the ops: each op's docstring (ops are instances, which ``doctest.testmod`` does not find);
- every public name has a numpy-style Examples section with ``>>>`` lines;
- the docs pages: every ```pycon block of ``docs/**/*.md`` runs, in order, one namespace per page.
"""

from __future__ import annotations

import doctest
import importlib
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorjac as tj

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
DOCS = Path(__file__).resolve().parent.parent / "docs"

MODULES = [
    "tensorjac._api",  # jacobian, value_and_jacobian, grad, vjp, jvp
    "tensorjac._hessian",  # hessian, hvp
    "tensorjac._ad",  # chain, kron_matvec
    "tensorjac._config",  # threads, memory budget, JacobianTooLargeError
    "tensorjac._rule",  # Op
    "tensorjac._deriv",  # Deriv
    "tensorjac._check",  # check, CheckReport, JacobianMismatchError
    "tensorjac._fd",  # fd.jacobian, fd.hessian
    "tensorjac.testing",
    "tensorjac.__main__",
]


def _run(test: doctest.DocTest, clear_globs: bool = True) -> doctest.TestResults:
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # examples must not use deprecated numpy
        runner.run(test, clear_globs=clear_globs)
    return doctest.TestResults(runner.failures, runner.tries)


@pytest.mark.parametrize("name", MODULES)
def test_module_examples(name):
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder().find(module)
    attempted = failed = 0
    for t in tests:
        r = _run(t)
        attempted += r.attempted
        failed += r.failed
    assert attempted > 0, f"{name} has no examples"
    assert failed == 0, f"{failed} of {attempted} examples of {name} failed (see the output above)"


@pytest.mark.parametrize("name", list(tj.CATALOGUE))
def test_op_examples(name):
    op = tj.CATALOGUE[name]
    test = doctest.DocTestParser().get_doctest(op.__doc__, {}, f"tensorjac.{name}", None, 0)
    r = _run(test)
    assert r.attempted > 0, f"tj.{name} has no examples"
    assert r.failed == 0


def _public_objects():
    skip = {"CATALOGUE", "LAYOUTS", "fd", "testing"}  # data and namespaces
    for name in tj.__all__:
        if name not in skip:
            yield f"tj.{name}", getattr(tj, name)
    for name in ("jacobian", "hessian"):
        yield f"tj.fd.{name}", getattr(tj.fd, name)
    yield "tj.testing.assert_jacobian_close", tj.testing.assert_jacobian_close
    for meth in ("jacobian", "vjp", "jvp"):
        yield f"tj.Op.{meth}", getattr(tj.Op, meth)


@pytest.mark.parametrize("name, obj", list(_public_objects()), ids=lambda v: v if isinstance(v, str) else "")
def test_public_names_have_examples(name, obj):
    doc = obj.__doc__ or ""
    assert re.search(r"^\s*Examples\n\s*--------\n", doc, re.M), f"{name}: no numpy-style Examples section"
    assert ">>>" in doc, f"{name}: the Examples section has no >>> lines"


# ----------------------------------------------------------------------------- the docs pages

BLOCK = re.compile(r"^```pycon\n(.*?)^```", re.S | re.M)


def _pages() -> list[Path]:
    if not DOCS.is_dir():
        return []
    return sorted(DOCS.rglob("*.md"))


def test_docs_pages_found():
    if not DOCS.is_dir():
        pytest.skip("docs/ not found next to tests/ (installed without the source tree)")
    names = {p.relative_to(DOCS).as_posix() for p in _pages()}
    assert {"index.md", "layouts.md", "numpy.md", "fd.md", "gallery/index.md"} <= names


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.relative_to(DOCS).as_posix())
def test_docs_page_code_runs(page):
    text = page.read_text(encoding="utf-8")
    # interactive code must be in ```pycon blocks, which run here; a ```python block must not hide one
    assert not re.search(r"^```python\n>>>", text, re.M), f"{page.name}: use ```pycon for >>> examples"
    for module in re.findall(r"^% doctest-requires: (\S+)$", text, re.M):  # a page's optional dependencies
        pytest.importorskip(module)
    globs: dict = {}
    attempted = failed = 0
    parser = doctest.DocTestParser()
    for m in BLOCK.finditer(text):
        lineno = text.count("\n", 0, m.start(1))
        test = parser.get_doctest(m.group(1), globs, page.name, str(page), lineno)
        r = _run(test, clear_globs=False)
        globs = test.globs  # the next block continues in this namespace (get_doctest copies it)
        attempted += r.attempted
        failed += r.failed
    if page.parent.name == "gallery" and page.name != "index.md":
        assert attempted >= 5, f"{page.name}: a gallery page checks its formulas with code"
    assert failed == 0, f"{failed} of {attempted} examples of {page} failed (see the output above)"


def test_doctest_runner_catches_wrong_output():
    """The page runner is not vacuous: a wrong expected value fails."""
    test = doctest.DocTestParser().get_doctest(">>> 1 + 1\n3\n", {"np": np}, "wrong", None, 0)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    runner.run(test, out=lambda s: None)
    assert runner.failures == 1
