"""``python -m tensorjac``: the self-check table, ``info`` and ``check MODULE:FUNC``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorjac as tj
from tensorjac.__main__ import main

USER_MODULE = textwrap.dedent(
    """
    import numpy as np

    W = np.arange(12.0).reshape(3, 4) / 10

    def f(x):
        return np.tanh(W @ x)

    def jac(x):
        return (1 - np.tanh(W @ x) ** 2)[:, None] * W

    def jac_gradient(x):
        return jac(x).T

    def bad_jac(x):
        J = jac(x)
        J[1, 2] *= 1.001
        return J

    def mat(X):
        return X @ X

    not_callable = 3
    """
)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "tj_cli_user.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("tj_cli_user", None)


def test_selfcheck_is_the_default(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    from tensorjac._examples import COMPOSITES

    for name in tj.CATALOGUE:
        assert f"\nop     {name} " in out
    for name in COMPOSITES:
        assert f"\nnumpy  {name} " in out
    n = sum(len(op.argnames) for op in tj.CATALOGUE.values()) + sum(len(c.wrt) for c in COMPOSITES.values())
    assert f"{n} of {n} exact Jacobians (closed-form ops and numpy composites) agree with tj.fd.jacobian" in out
    assert "FAIL" not in out
    assert main(["selfcheck", "--seed", "3"]) == 0


def test_info(capsys):
    assert main(["info"]) == 0
    assert "tensorjac" in capsys.readouterr().out


def test_check_passing_and_failing(user_module, capsys):
    assert main(["check", "tj_cli_user:f", "--shape", "4", "--jac", "tj_cli_user:jac"]) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "random x (seed 0)" in out
    assert main(["check", "tj_cli_user:f", "--shape", "4", "--jac", "tj_cli_user:bad_jac", "--seed", "5"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out
    row = next(line for line in out.splitlines() if line.strip().endswith("FAIL"))
    assert row.split()[:2] == ["[1]", "[2]"]
    args = ["check", "tj_cli_user:f", "--shape", "4", "--jac", "tj_cli_user:jac_gradient"]
    assert main([*args, "--layout", "gradient", "--mode", "fast"]) == 0
    assert "mode fast" in capsys.readouterr().out


def test_check_without_jac_prints_the_fd_jacobian(user_module, capsys):
    assert main(["check", "tj_cli_user:mat", "--shape", "2,2", "--layout", "matrix"]) == 0
    out = capsys.readouterr().out
    assert "shape (4, 4)" in out and "estimated max error" in out


def test_check_at_a_given_point(user_module, capsys):
    x = np.array([0.1, -0.2, 0.3, 0.4])
    np.save(user_module / "x.npy", x)
    assert main(["check", "tj_cli_user:f", "--at", "x.npy", "--jac", "tj_cli_user:jac"]) == 0
    assert "x from x.npy" in capsys.readouterr().out
    assert main(["check", "tj_cli_user:f", "--at", "x.npy", "--shape", "3"]) == 2
    assert "shape (4,)" in capsys.readouterr().err


def test_check_file_path_spec(user_module, capsys):
    assert main(["check", str(user_module / "tj_cli_user.py") + ":f", "--shape", "4"]) == 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["check", "tj_cli_user", "--shape", "4"], "not MODULE:FUNC"),
        (["check", "no_such_module_tj:f", "--shape", "4"], "cannot import"),
        (["check", "tj_cli_user:g", "--shape", "4"], "no attribute 'g'"),
        (["check", "tj_cli_user:not_callable", "--shape", "4"], "not callable"),
        (["check", "tj_cli_user:f"], "--shape"),
        (["check", "tj_cli_user:f", "--shape", "a,b"], "comma-separated"),
        (["check", "tj_cli_user:f", "--at", "missing.npy"], "cannot read"),
    ],
)
def test_check_usage_errors(user_module, capsys, args, message):
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_exit_status_of_the_real_command(user_module):
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "tensorjac", "check", *a], capture_output=True, text=True, cwd=user_module
    )
    ok = run("tj_cli_user:f", "--shape", "4", "--jac", "tj_cli_user:jac")
    assert ok.returncode == 0, ok.stderr
    bad = run("tj_cli_user:f", "--shape", "4", "--jac", "tj_cli_user:bad_jac")
    assert bad.returncode == 1 and "FAILED" in bad.stdout


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"tensorjac {tj.__version__}"


def test_help_has_no_rest_markup(capsys):
    for args in (["--help"], ["check", "--help"]):
        with pytest.raises(SystemExit):
            main(args)
        out = capsys.readouterr().out
        assert "``" not in out and "usage" in out


BAD_JAC_MODULE = textwrap.dedent(
    """
    import numpy as np

    def f(x):
        return np.tanh(x)

    def wrong_shape(x):
        return np.ones((3, 5))

    raise_on_import = False
    """
)


@pytest.mark.parametrize(
    "args,message",
    [
        (["check", "tj_cli_bad:f", "--shape", "4", "--jac", "tj_cli_bad:wrong_shape"], "jac has shape (3, 5)"),
        (["check", "tj_cli_bad:f", "--shape", "4x", "--jac", "tj_cli_bad:wrong_shape"], "jac has shape"),
        (["check", "tj_cli_bad:f", "--shape", "4", "--step", "-1"], "--step"),
        (["check", "tj_cli_bad:f", "--shape", "4", "--step", "abc"], "--step"),
        (["check", "tj_cli_broken:f", "--shape", "4"], "ZeroDivisionError"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, message):
    (tmp_path / "tj_cli_bad.py").write_text(BAD_JAC_MODULE)
    (tmp_path / "tj_cli_broken.py").write_text("x = 1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    try:
        assert main(args) == 2
    finally:
        sys.modules.pop("tj_cli_bad", None)
        sys.modules.pop("tj_cli_broken", None)
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_check_with_step(user_module, capsys):
    assert main(["check", "tj_cli_user:f", "--shape", "4", "--jac", "tj_cli_user:jac", "--method", "central",
                 "--step", "1e-5"]) == 0
    assert "PASSED" in capsys.readouterr().out
