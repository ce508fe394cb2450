"""Sphinx directives that write tensorjac's generated pages from its registries.

``.. tj-catalogue::``
    Every op of ``tensorjac.CATALOGUE``: a summary table, then one
    ``py:function`` entry per op with its signature and docstring.  A new op
    appears here without any edit to the docs.

``.. tj-numpy-coverage:: ufuncs | functions | constants``
    The numpy ufuncs and functions that have a rule inside differentiated
    functions (``tensorjac._rule.UFUNCS`` and ``NUMPY``), and those evaluated
    as constants (``tensorjac._trace.constant_ufuncs`` / ``constant_functions``).

Both emit reStructuredText; in a Markdown page, wrap them in an ``{eval-rst}`` block.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import numpy as np
import tensorjac
from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.ext.napoleon.docstring import NumpyDocstring
from sphinx.util.docutils import SphinxDirective
from tensorjac import _rule, _trace

# ----------------------------------------------------------------------------- numpy names

_NAMESPACES = (("numpy", np), ("numpy.linalg", np.linalg))


def _numpy_names(objs: Any) -> dict[int, list[str]]:
    """id(obj) -> every public numpy name bound to it (numpy.x, numpy.linalg.x)."""
    wanted = {id(o) for o in objs}
    names: dict[int, list[str]] = {}
    for prefix, ns in _NAMESPACES:
        for attr in sorted(dir(ns)):
            if attr.startswith("_"):
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    obj = getattr(ns, attr)
                except Exception:  # removed or deprecated aliases
                    continue
            if id(obj) in wanted:
                names.setdefault(id(obj), []).append(f"{prefix}.{attr}")
    return names


def _fallback_name(obj: Any) -> str:
    mod = getattr(obj, "__module__", None) or "numpy"
    return f"{mod}.{getattr(obj, '__name__', repr(obj))}"


# Grouping of numpy functions on the coverage page.  A function missing here is
# still listed (under "Other functions"): the lists come from the registries.
_GROUPS: list[tuple[str, set[str]]] = [
    ("Reductions", {"sum", "mean", "var", "std", "prod", "max", "min", "amax", "amin", "ptp", "average",
                    "cumsum", "norm"}),
    ("Shape, copying and selection", {
        "reshape", "ravel", "transpose", "swapaxes", "moveaxis", "matrix_transpose", "expand_dims", "squeeze",
        "broadcast_to", "broadcast_arrays", "atleast_1d", "atleast_2d", "atleast_3d", "flip", "fliplr", "flipud",
        "roll", "rot90", "concatenate", "stack", "hstack", "vstack", "dstack", "column_stack", "row_stack", "tile",
        "repeat", "diag", "diagonal", "triu", "tril", "take", "take_along_axis", "sort", "copy", "where", "clip",
        "real", "imag", "zeros_like", "ones_like", "empty_like", "full_like"}),
    ("Products and contractions", {"dot", "vdot", "inner", "outer", "matmul", "tensordot", "kron", "einsum",
                                   "vecdot", "multi_dot", "matrix_power", "trace"}),
    ("Inverses, determinants and decompositions", {"inv", "solve", "det", "slogdet", "cholesky", "eigh",
                                                   "eigvalsh"}),
]


def _rule_cell(handler: Any) -> str:
    if isinstance(handler, _rule.Op):
        if handler.name in tensorjac.CATALOGUE:
            return f":py:func:`tensorjac.{handler.name}`"
        return f"rule ``{handler.name}``"
    return "composite (other rules)"


def _complex_cell(handler: Any) -> str:
    if isinstance(handler, _rule.Op):
        return "holomorphic" if handler.holomorphic else "real only"
    return "as its parts"


def _list_table(header: list[str], rows: list[list[str]], widths: str | None = None) -> list[str]:
    out = [".. list-table::", "   :header-rows: 1"]
    if widths:
        out.append(f"   :widths: {widths}")
    out.append("")
    for row in [header, *rows]:
        out.append(f"   * - {row[0] or ' '}")
        out += [f"     - {c or ' '}" for c in row[1:]]
    out.append("")
    return out


# ----------------------------------------------------------------------------- directives


class _RstDirective(SphinxDirective):
    def render(self, lines: list[str]) -> list[nodes.Node]:
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="<tensorjac generated>"), self.content_offset, container)
        return list(container.children)


class CatalogueDirective(_RstDirective):
    """The op catalogue, from ``tensorjac.CATALOGUE``."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        aliases: dict[str, list[Any]] = {}
        for f, h in list(_rule.NUMPY.items()) + list(_rule.UFUNCS.items()):
            if isinstance(h, _rule.Op):
                aliases.setdefault(h.name, []).append(f)
        names = _numpy_names([f for fs in aliases.values() for f in fs])
        rows = []
        for name, op in tensorjac.CATALOGUE.items():
            doc = inspect.cleandoc(type(op).__doc__ or "")
            summary = doc.split("\n\n")[0].replace("\n", " ")
            np_names = sorted({n for f in aliases.get(name, []) for n in names.get(id(f), [_fallback_name(f)])})
            rows.append([
                f":py:func:`{name} <tensorjac.{name}>`",
                summary,
                "yes" if op.elementwise else "",
                "yes" if op.holomorphic else "no",
                ", ".join(f"``{n}``" for n in np_names),
            ])
        lines = [
            f"{len(rows)} ops.  *diagonal*: ``layout=\"diagonal\"`` is available; *complex*: holomorphic "
            "derivatives for complex input; *numpy*: the numpy functions differentiated by the same rule "
            "inside functions given to :py:func:`tensorjac.jacobian`.",
            "",
        ]
        lines += _list_table(["op", "value", "diagonal", "complex", "numpy"], rows, "12 48 10 10 20")
        for name, op in tensorjac.CATALOGUE.items():
            doc = inspect.cleandoc(type(op).__doc__ or "")
            body = str(NumpyDocstring(doc, self.config, what="function", name=f"tensorjac.{name}"))
            sig = str(op.__signature__)
            lines += [f".. py:function:: tensorjac.{name}{sig}", ""]
            lines += ["   " + ln if ln.strip() else "" for ln in body.splitlines()]
            lines += [
                "",
                f"   Jacobian: ``tj.jacobian(tj.{name}, ...)`` or ``tj.{name}.jacobian(...)``; also "
                f"``tj.{name}.vjp`` and ``tj.{name}.jvp`` (see :py:class:`tensorjac.Op`).",
                "",
            ]
        return self.render(lines)


class NumpyCoverageDirective(_RstDirective):
    """Tables of the numpy functions that work inside differentiated functions."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        what = self.arguments[0]
        if what == "ufuncs":
            return self.render(self._ufuncs())
        if what == "functions":
            return self.render(self._functions())
        if what == "constants":
            return self.render(self._constants())
        raise self.error(f"tj-numpy-coverage: unknown table {what!r} (ufuncs, functions or constants)")

    def _ufuncs(self) -> list[str]:
        ufuncs = sorted(_rule.UFUNCS.items(), key=lambda kv: kv[0].__name__)
        names = _numpy_names([u for u, _ in ufuncs])
        rows = []
        for u, op in ufuncs:
            ns = names.get(id(u), [f"numpy.{u.__name__}"])
            rows.append([", ".join(f"``{n}``" for n in ns), _rule_cell(op), _complex_cell(op)])
        return [f"{len(rows)} ufuncs (their operator forms included).", ""] + _list_table(
            ["numpy ufunc", "rule", "complex input"], rows, "45 30 25")

    def _functions(self) -> list[str]:
        funcs = [f for f in _rule.NUMPY if not isinstance(f, np.ufunc)]
        names = _numpy_names(funcs)
        groups: dict[str, list[list[str]]] = {g: [] for g, _ in _GROUPS}
        groups["Other functions"] = []
        for f in funcs:
            ns = names.get(id(f), [_fallback_name(f)])
            short = ns[0].rsplit(".", 1)[1]
            group = next((g for g, members in _GROUPS if short in members), "Other functions")
            groups[group].append([", ".join(f"``{n}``" for n in ns), _rule_cell(_rule.NUMPY[f]),
                                  _complex_cell(_rule.NUMPY[f])])
        lines = [f"{len(funcs)} functions.", ""]
        for group, rows in groups.items():
            if not rows:
                continue
            rows.sort(key=lambda r: r[0])
            lines += [f".. rubric:: {group}", ""]
            lines += _list_table(["numpy function", "rule", "complex input"], rows, "45 30 25")
        return lines

    def _constants(self) -> list[str]:
        ufs = sorted(_trace.constant_ufuncs, key=lambda u: u.__name__)
        fs = list(_trace.constant_functions)
        names = _numpy_names(ufs + fs)
        uf_names = sorted({n for u in ufs for n in names.get(id(u), [f"numpy.{u.__name__}"])})
        f_names = sorted({n for f in fs for n in names.get(id(f), [_fallback_name(f)])})
        return [
            ".. rubric:: Ufuncs evaluated as constants",
            "",
            ", ".join(f"``{n}``" for n in uf_names),
            "",
            ".. rubric:: Functions evaluated as constants",
            "",
            ", ".join(f"``{n}``" for n in f_names),
            "",
        ]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("tj-catalogue", CatalogueDirective)
    app.add_directive("tj-numpy-coverage", NumpyCoverageDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
