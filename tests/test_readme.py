"""The README's Python examples run as written and say what they claim."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tensorjac as tj

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks() -> list[str]:
    if not README.exists():  # installed without the source tree
        pytest.skip("README.md not found next to tests/")
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_examples_run():
    code = "\n".join(_blocks())
    big = "tj.jacobian(tj.multiply, np.ones((2000, 2000)), np.ones((2000, 2000)))"
    check = "tj.testing.assert_jacobian_close(f, X, J)"
    assert big in code and check in code
    code = code.replace(big, "pass").replace(check, "pass")
    ns: dict = {}
    exec(compile(code, str(README), "exec"), ns)  # the blocks assert their own closed forms
    # the claims the README makes in its comments
    assert ns["J"].shape == (4, 4, 4, 5)
    assert not ns["report"].passed
    assert ns["report"].worst[0].out_index == (1, 2) and ns["report"].worst[0].in_index == (1, 4)
    with pytest.raises(tj.JacobianMismatchError):
        tj.testing.assert_jacobian_close(ns["f"], ns["X"], ns["J"])
    with pytest.raises(tj.JacobianTooLargeError, match=r"119,209\.29 GiB"):
        tj.jacobian(tj.multiply, np.ones((2000, 2000)), np.ones((2000, 2000)))
    assert ns["Jx"].shape == (6, 6) and ns["Jg"].shape == (6, 6)
    np.testing.assert_allclose(np.diag(ns["Jg"]), (ns["v"] - ns["be"]) / ns["g"])  # d(g*n+b)/dg = n


def test_readme_commands():
    text = README.read_text()
    assert 'pip install . && python -m tensorjac' in text
    assert 'pip install ".[test]" && python -m pytest' in text
    run = (README.parent / ".ci" / "run").read_text()
    assert 'pip install ".[test]" && python -m pytest' in run
