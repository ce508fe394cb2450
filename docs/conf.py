"""Sphinx configuration of the tensorjac docs (built by tests/test_docs.py with -W -n).

Pages are Markdown (myst-parser); the API reference comes from the numpy-style
docstrings (autodoc + napoleon); the op catalogue and the numpy coverage tables
are generated from the registries at build time (_ext/tensorjac_docs.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import tensorjac

sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))

project = "tensorjac"
author = "the tensorjac developers"
copyright = "the tensorjac developers"
version = release = tensorjac.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "myst_parser",
    "tensorjac_docs",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_ext", "README.md"]
root_doc = "index"

myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath"]

# the docstrings are numpy style; types are prose ("tensorjac op or callable"),
# so render them as text rather than as cross-references
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_param = False
napoleon_use_rtype = False
napoleon_use_ivar = True
autodoc_typehints = "none"
autodoc_member_order = "bysource"
autodoc_default_options = {"exclude-members": "__init__, __new__"}

nitpicky = True
# numpy's and the standard library's own objects have no inventory here (the
# build runs offline): references to them are plain text
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|np)\..*"),
    (r"py:.*", r"concurrent\..*"),
    (r"py:class", r"(array_like|ndarray|callable|optional|scalar)"),
]

html_theme = "alabaster"
html_title = f"tensorjac {release}"
html_theme_options = {"description": "Explicit Jacobian tensors for matrix calculus", "fixed_sidebar": True}
html_static_path: list[str] = []
