"""The Examples of tensorjac.fd, tj.check, tj.testing and the CLI are doctested here."""

from __future__ import annotations

import doctest

import pytest
import tensorjac as tj
import tensorjac.__main__ as cli
from tensorjac import _check, _fd, fd, testing


@pytest.mark.parametrize("module", [_fd, _check, testing, cli], ids=lambda m: m.__name__)
def test_examples(module):
    res = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.IGNORE_EXCEPTION_DETAIL, verbose=False)
    assert res.attempted > 0, f"{module.__name__} has no examples"
    assert res.failed == 0


def test_public_functions_have_examples():
    for fn in (fd.jacobian, fd.hessian, tj.check, testing.assert_jacobian_close, cli.main):
        assert fn.__doc__ and "Examples" in fn.__doc__ and ">>>" in fn.__doc__, fn.__name__


def test_fd_namespace_is_clean():
    assert sorted(dir(fd)) == ["METHODS", "NonFiniteWarning", "hessian", "jacobian"]
    for name in ("np", "os", "sys", "functools", "Problem", "warnings"):
        with pytest.raises(AttributeError):
            getattr(fd, name)
    assert fd.__all__ == ["METHODS", "NonFiniteWarning", "hessian", "jacobian"]
    assert "Richardson" in fd.__doc__
