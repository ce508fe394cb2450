"""The docs site builds with Sphinx, warnings as errors and nitpicky references (-W --keep-going -n).

The build also checks the generated pages: the op catalogue lists every op of
``tj.CATALOGUE`` and the numpy coverage page every ufunc and function that has
a rule.  The code on the pages runs in tests/test_doctests.py.
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tensorjac as tj
from tensorjac import _rule

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("sphinx", reason="sphinx is not installed (pip install '.[docs]')")
    pytest.importorskip("myst_parser", reason="myst-parser is not installed (pip install '.[docs]')")
    if not (DOCS / "conf.py").exists():
        pytest.skip("docs/conf.py not found next to tests/ (installed without the source tree)")
    out = tmp_path_factory.mktemp("docs-html")
    doctrees = tmp_path_factory.mktemp("docs-doctrees")
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-n", "-q",
           "-d", str(doctrees), str(DOCS), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout}\n{proc.stderr}"
    logged = [ln for ln in proc.stderr.splitlines() if "WARNING:" in ln or "ERROR:" in ln]
    assert not logged, "sphinx-build logged warnings:\n" + "\n".join(logged)
    return out


def _text(path: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", path.read_text(encoding="utf-8")))


def test_pages_built(site):
    for page in ("index", "layouts", "numpy", "catalogue", "fd", "api", "gallery/index", "gallery/regression",
                 "gallery/tensors", "gallery/relu"):
        assert (site / f"{page}.html").exists(), page


def test_catalogue_lists_every_op(site):
    raw = (site / "catalogue.html").read_text(encoding="utf-8")
    for name in tj.CATALOGUE:
        assert f'id="tensorjac.{name}"' in raw, f"op {name} is missing from the generated catalogue"
    assert f"{len(tj.CATALOGUE)} ops." in _text(site / "catalogue.html")


def test_numpy_coverage_lists_every_rule(site):
    text = _text(site / "numpy.html")
    for ufunc in _rule.UFUNCS:
        assert f"numpy.{ufunc.__name__}" in text, ufunc
    for func in _rule.NUMPY:
        name = getattr(func, "__name__", None)
        if name:
            assert f".{name}" in text, func
    assert f"{len(_rule.UFUNCS)} ufuncs" in text


def test_api_reference_documents_every_public_name(site):
    raw = (site / "api.html").read_text(encoding="utf-8") + (site / "catalogue.html").read_text(encoding="utf-8")
    names = [n for n in tj.__all__ if n not in ("fd", "testing")]
    names += [f"fd.{n}" for n in tj.fd.__all__] + ["testing.assert_jacobian_close"]
    for name in names:
        assert f'id="tensorjac.{name}"' in raw, f"tensorjac.{name} has no entry in the API reference"
