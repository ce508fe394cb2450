"""python -m tensorjac: check every op of the catalogue, and a catalogue of numpy composites, against finite differences.

Subcommands:
  (none) | selfcheck [--seed S]   the catalogue's closed forms and the composite engine's Jacobians of
                                  numpy functions against tj.fd.jacobian (exit 1 on a failure)
  check MODULE:FUNC --shape 3,4 [--jac MODULE:JACFUNC] [--layout L] [--seed S] [--at FILE.npy]
        [--method M] [--mode full|fast] [--step H]
                                  check a Jacobian of your own (exit 0 passed, 1 failed, 2 bad input);
                                  without --jac, print the finite-difference Jacobian's shape and error
  info                            version, compiler, OpenMP, threads, memory budget
  --version                       print the version
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import tensorjac as tj

from ._examples import COMPOSITES, example_args


def info() -> int:
    print(f"tensorjac {tj.__version__}")
    print(f"numpy     {np.__version__}")
    print(f"compiler  {tj._core.compiler}")
    print(f"openmp    {'on' if tj._core.openmp else 'off'}")
    print(f"threads   {tj.get_num_threads()}")
    print(f"budget    {tj.get_memory_budget() / 2**30:.2f} GiB")
    return 0


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "()"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [*rows, head]) for i in range(len(head))]
    line = "  ".join("{:<%d}" % w for w in widths)
    print(line.format(*head))
    print(line.format(*("-" * w for w in widths)))
    for r in rows:
        print(line.format(*r))


class _Arg:
    """A function as a function of its argument ``wrt`` alone, the others fixed."""

    def __init__(self, f: Callable[..., Any], args: tuple[np.ndarray, ...], wrt: int) -> None:
        self.f, self.args, self.wrt = f, args, wrt

    def __call__(self, z: np.ndarray) -> Any:
        return self.f(*self.args[: self.wrt], z, *self.args[self.wrt + 1 :])


def _row(kind: str, name: str, f: Callable[..., Any], args: tuple[np.ndarray, ...], wrt: int,
         argname: str) -> tuple[tuple[str, ...], bool]:
    J = tj.jacobian(f, *args, wrt=wrt)
    rep = tj.check(_Arg(f, args, wrt), args[wrt], J)
    shapes = ", ".join(_shape_text(a.shape) for a in args)
    return (kind, name, shapes, argname, _shape_text(J.shape), f"{rep.max_abs_err:.1e}",
            f"{rep.max_rel_err:.1e}", str(rep.n_evals), "ok" if rep.passed else "FAIL"), bool(rep.passed)


def selfcheck(seed: int = 0) -> int:
    """Every op's closed form and every catalogued composite, each argument, against tj.check."""
    rows = []
    failed = 0
    for name, op in tj.CATALOGUE.items():
        args = example_args(name, seed)
        for wrt in range(len(args)):
            row, ok = _row("op", name, op, args, wrt, op.argnames[wrt])
            rows.append(row)
            failed += not ok
    for name, comp in COMPOSITES.items():
        args = tuple(comp.args(np.random.default_rng(seed)))
        for wrt in comp.wrt:
            row, ok = _row("numpy", name, comp.f, args, wrt, f"arg {wrt}")
            rows.append(row)
            failed += not ok
    _table(("kind", "function", "shapes", "wrt", "jacobian", "max abs err", "max rel err", "f evals", "result"),
           rows)
    print(f"\n{len(rows) - failed} of {len(rows)} exact Jacobians (closed-form ops and numpy composites) agree "
          "with tj.fd.jacobian (method='richardson'; tolerances: see help(tj.check)).")
    return 1 if failed else 0


# ----------------------------------------------------------------------------- check


class CliError(Exception):
    """A bad command line: printed without a traceback, exit status 2."""


def load_callable(spec: str) -> Callable[..., Any]:
    """``package.module:func`` (or ``path/to/file.py:func``; ``func`` may be dotted) -> the object."""
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise CliError(f"{spec!r} is not MODULE:FUNC (for example mypkg.model:loss)")
    if mod_name.endswith(".py"):
        path = Path(mod_name)
        if not path.is_file():
            raise CliError(f"no such file: {mod_name}")
        spec_ = importlib.util.spec_from_file_location(path.stem, path)
        assert spec_ is not None and spec_.loader is not None
        module = importlib.util.module_from_spec(spec_)
        sys.modules[path.stem] = module
        try:
            spec_.loader.exec_module(module)
        except Exception as e:
            raise CliError(f"cannot load {mod_name}: {type(e).__name__}: {e}") from None
    else:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())  # the console script does not put the cwd on the path
        try:
            module = importlib.import_module(mod_name)
        except ImportError as e:
            raise CliError(f"cannot import module {mod_name!r}: {e}") from None
        except Exception as e:  # the module itself raised while importing
            raise CliError(f"cannot import module {mod_name!r}: {type(e).__name__}: {e}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CliError(f"module {mod_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise CliError(f"{spec} is not callable (it is a {type(obj).__name__})")
    return obj


def parse_step(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        h = float(text)
    except ValueError:
        raise CliError(f"--step {text!r} is not a number (for example 1e-4)") from None
    if not (h > 0 and np.isfinite(h)):
        raise CliError(f"--step {text!r} must be a positive finite number")
    return h


def parse_shape(text: str) -> tuple[int, ...]:
    t = text.strip().strip("()[] ")
    if not t:
        return ()
    try:
        shape = tuple(int(p) for p in t.replace("x", ",").split(",") if p.strip())
    except ValueError:
        raise CliError(f"--shape {text!r} is not a comma-separated list of sizes (for example 3,4)") from None
    if any(s < 0 for s in shape):
        raise CliError(f"--shape {text!r} has a negative size")
    return shape


def _point(ns: argparse.Namespace) -> np.ndarray:
    shape = None if ns.shape is None else parse_shape(ns.shape)
    if ns.at is not None:
        try:
            x = np.load(ns.at, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CliError(f"cannot read --at {ns.at}: {e}") from None
        if shape is not None and x.shape != shape:
            raise CliError(f"--at {ns.at} holds an array of shape {x.shape}, but --shape says {shape}")
        return x
    if shape is None:
        raise CliError("give the point: --shape 3,4 (a random point) or --at FILE.npy")
    return np.random.default_rng(ns.seed).standard_normal(shape)


def run_check(ns: argparse.Namespace) -> int:
    f = load_callable(ns.func)
    x = _point(ns)
    step = parse_step(ns.step)
    where = f"at {'x from ' + ns.at if ns.at else 'a random x (seed %d)' % ns.seed} of shape {x.shape}"
    if ns.jac is None:
        J, err = tj.fd.jacobian(f, x, method=ns.method, layout=ns.layout, return_error=True, step=step)
        print(f"finite-difference Jacobian of {ns.func} {where}")
        print(f"  layout {ns.layout!r}, shape {J.shape}, dtype {J.dtype}, method {ns.method!r}")
        print(f"  max |J| {np.max(np.abs(J), initial=0.0):.3e}   "
              f"estimated max error {np.max(err, initial=0.0):.3e}   "
              f"median estimated error {np.median(err) if err.size else 0.0:.3e}")
        return 0
    jac = load_callable(ns.jac)
    try:
        J = jac(x.copy())
    except Exception as e:
        raise CliError(f"{ns.jac} raised {type(e).__name__}: {e}") from None
    try:
        report = tj.check(f, x, J, layout=ns.layout, mode=ns.mode, method=ns.method, seed=ns.seed, step=step)
    except (ValueError, TypeError) as e:  # a Jacobian of the wrong shape or dtype, a bad point
        raise CliError(str(e).splitlines()[0]) from None
    print(f"{ns.func} against {ns.jac} {where}")
    print(report)
    return 0 if report.passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: returns the exit status (0 passed, 1 a check failed, 2 bad input).

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int

    Examples
    --------
    >>> main(["check", "no_such_module_tj:f", "--shape", "3"])
    2
    >>> main(["info"])  # doctest: +ELLIPSIS
    tensorjac ...
    0
    """
    parser = argparse.ArgumentParser(
        prog="python -m tensorjac", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"tensorjac {tj.__version__}")
    sub = parser.add_subparsers(dest="cmd")
    sub.add_parser("info", help="version, compiler, OpenMP and thread count")
    sc = sub.add_parser("selfcheck", help="check every op of the catalogue (the default)")
    sc.add_argument("--seed", type=int, default=0)
    ck = sub.add_parser("check", help="check the Jacobian of your own function")
    ck.add_argument("func", metavar="MODULE:FUNC", help="the function f(x), e.g. mypkg.model:forward")
    ck.add_argument("--shape", help="shape of x, e.g. 3,4 (a random standard-normal point)")
    ck.add_argument("--jac", metavar="MODULE:JACFUNC", help="jac(x) returning the Jacobian under test")
    ck.add_argument("--layout", default="tensor", choices=tj.LAYOUTS)
    ck.add_argument("--seed", type=int, default=0, help="seed of the random point and directions")
    ck.add_argument("--at", metavar="FILE.npy", help="evaluate at the array in this .npy file")
    ck.add_argument("--mode", default="full", choices=("full", "fast"))
    ck.add_argument("--method", default="richardson", choices=tj.fd.METHODS)
    ck.add_argument("--step", help="finite-difference step (default: relative to x, see tensorjac.fd)")
    ns = parser.parse_args(argv)
    if ns.cmd == "info":
        return info()
    if ns.cmd == "check":
        try:
            return run_check(ns)
        except CliError as e:
            print(f"python -m tensorjac check: error: {e}", file=sys.stderr)
            return 2
    return selfcheck(getattr(ns, "seed", 0))


if __name__ == "__main__":
    sys.exit(main())
