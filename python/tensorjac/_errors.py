"""The TypeErrors for what tensorjac cannot differentiate exactly: each points to finite differences."""

from __future__ import annotations

__all__ = ["FD_HINT", "refuse", "unsupported"]

FD_HINT = " Differentiate such code numerically with tj.fd.jacobian(f, x)."


def refuse(msg: str) -> TypeError:
    """A TypeError for something tensorjac cannot differentiate exactly, pointing to tj.fd."""
    return TypeError(msg if "tj.fd.jacobian" in msg else msg.rstrip(".") + "." + FD_HINT)


def unsupported(name: str, why: str = "") -> TypeError:
    return TypeError(
        f"tensorjac cannot differentiate {name}{': ' + why if why else ''}. Inside a function given to "
        "tj.jacobian / tj.grad / tj.vjp / tj.jvp, use the supported numpy functions (see the docs' "
        "'numpy coverage' page), or differentiate f numerically with tj.fd.jacobian(f, x)."
    )
