"""Issue 9: long kernels stop promptly on Ctrl-C and raise KeyboardInterrupt.

A 4 GB single-thread ``tj.jacobian(tj.multiply, B, B)`` used to keep running
for 7-12 s after SIGINT.  Kernels now poll a flag set by a temporary C-level
SIGINT handler and stop within about a millisecond of memory traffic.

Each scenario runs in a fresh interpreter.  A helper thread there waits until
an interruptible kernel is running (``_core._interrupt_stats()["running"]``)
and then either sends SIGINT itself or tells the parent (this test), which
sends it.  The child checks that KeyboardInterrupt came out of the kernel
(``_interrupt_stats()["interrupted"]`` counts kernels that stopped early:
Python raising it after a kernel ran to completion does not count), that the
inputs are untouched, and reports the latency from the signal to the
KeyboardInterrupt.  The bound asserted here is deliberately generous (a
loaded machine must not fail the suite); the measured latencies are printed
(``pytest -s``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals only")

TIMEOUT = 120
LATENCY_BOUND = 5.0  # seconds; the requirement is 0.2 s, measured values are printed

PRELUDE = r'''
import json, os, signal, sys, threading, time
import numpy as np
import tensorjac as tj

def stats():
    return tj._core._interrupt_stats()

def helper(action):
    """Acts once an interruptible kernel is running (or gives up when `done` is set)."""
    done, box = threading.Event(), {}
    def run():
        while not stats()["running"]:
            if done.wait(0.0002):
                return
        box["t"] = time.monotonic()
        if action == "self":
            os.kill(os.getpid(), signal.SIGINT)
        else:
            print("started", flush=True)  # the parent sends SIGINT
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return done, box, th

def attempt(call, inputs, action):
    """One interrupted call: a dict describing what happened."""
    copies = [np.array(a, copy=True) for a in inputs]
    before = stats()["interrupted"]
    done, box, th = helper(action)
    try:
        call()
        outcome, t_ki = "finished", None
    except KeyboardInterrupt:
        outcome, t_ki = "KeyboardInterrupt", time.monotonic()
    done.set()
    th.join()
    return {
        "outcome": outcome,
        "in_kernel": stats()["interrupted"] - before,
        "latency": None if t_ki is None or action != "self" else t_ki - box["t"],
        "t_ki": t_ki,
        "inputs_untouched": all(np.array_equal(a, c) for a, c in zip(inputs, copies)),
    }

def scenario(call, inputs, action="self", before=None, after=None):
    if before:
        before()
    r = attempt(call, inputs, action)
    if after:
        r.update(after())
    print("RESULT " + json.dumps(r), flush=True)
'''

# name: (setup code, call expression, inputs, before, after): every kernel family.
# Sizes keep each uninterrupted kernel well above a millisecond, memory modest.
KERNELS = {
    # the case: a fresh dense multiply Jacobian (0.8 GB; the issue had 4 GB)
    "expand-multiply": ("B = np.ones((100, 100))", "tj.jacobian(tj.multiply, B, B, num_threads=NT)", "[B]", "None", "None"),
    # into a given out= (65.6 M entries, 1 M per poll): entries never reached keep their NaN
    "expand-out": (
        "rng = np.random.default_rng(0); A, X, C = (rng.standard_normal((90, 90)) for _ in range(3))\n"
        "OUT = np.full((8100, 8100), np.nan)",
        "tj.jacobian(tj.sandwich, A, X, C, wrt=1, layout='vec', out=OUT, num_threads=NT)",
        "[A, X, C]",
        "lambda: OUT.fill(np.nan)",
        "lambda: {'nan_left': int(np.isnan(OUT).sum())}",
    ),
    "kron_vjp": (
        "rng = np.random.default_rng(1); KA, KB = rng.standard_normal((60, 60)), rng.standard_normal((60, 60))\n"
        "G = np.ones((4, 3600, 3600))",
        "tj.vjp(tj.kron, KA, KB, cotangent=G, wrt=NT - 1, num_threads=NT)",  # kron_vjp_a, then kron_vjp_b
        "[KA, KB, G]",
        "None",
        "None",
    ),
    "kron_batched": (
        "rng = np.random.default_rng(2); KA, KB = rng.standard_normal((60, 60)), rng.standard_normal((60, 60))\n"
        "V = rng.standard_normal((4, 60, 60))",
        "tj.jvp(tj.kron, KA, KB, tangent=V, wrt=0, num_threads=NT)",
        "[KA, KB, V]",
        "None",
        "None",
    ),
    "mul_rows": (
        "rng = np.random.default_rng(3); X = rng.standard_normal((1000, 1000)); G = np.ones((32, 1000, 1000))",
        "tj.vjp(tj.exp, X, cotangent=G, num_threads=NT)",
        "[X, G]",
        "None",
        "None",
    ),
}


def run_child(code: str, parent_sends: bool = False) -> list[dict]:
    """Runs code in a fresh interpreter (own session, killed on timeout).

    With parent_sends, answers every "started" line with SIGINT, timing it.
    Returns the RESULT records, each with the parent-side latency when it sent.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    results, sent = [], None
    deadline = time.monotonic() + TIMEOUT
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("started") and parent_sends:
                sent = time.monotonic()  # CLOCK_MONOTONIC: comparable with the child's clock
                proc.send_signal(signal.SIGINT)
            elif line.startswith("RESULT "):
                r = json.loads(line[len("RESULT ") :])
                if parent_sends and sent is not None and r["t_ki"] is not None:
                    r["latency"] = r["t_ki"] - sent
                results.append(r)
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(proc.args, TIMEOUT)
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"child did not finish within {TIMEOUT} s (a kernel ignored SIGINT?)")
    err = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 0, f"exit code {proc.returncode}\n{err}"
    return results


def check(results: list[dict], label: str) -> None:
    for r in results:
        print(f"{label}: {r['outcome']}, latency {r['latency'] * 1e3:.1f} ms" if r["latency"] is not None else r)
        assert r["outcome"] == "KeyboardInterrupt", r
        assert r["in_kernel"] == 1, f"KeyboardInterrupt was not raised by the kernel itself: {r}"
        assert r["inputs_untouched"], r
        assert r["latency"] is not None and 0 <= r["latency"] < LATENCY_BOUND, r


@pytest.mark.parametrize("name", list(KERNELS))
def test_sigint_stops_kernel(name):
    setup, call, inputs, before, after = KERNELS[name]
    body = "".join(
        f"NT = {nt}\nscenario(lambda: {call}, {inputs}, before={before}, after={after})\n" for nt in (1, 2)
    )
    results = run_child(PRELUDE + setup + "\n" + body)
    assert len(results) == 2
    check(results, name)
    if name == "expand-out":
        assert all(r["nan_left"] > 0 for r in results), results  # it really stopped early


def test_sigint_from_parent_process():
    """The issue's scenario as a user sees it: SIGINT from outside while a 1.5 GB kernel runs."""
    code = PRELUDE + textwrap.dedent(
        """
        B = np.ones((120, 120))
        scenario(lambda: tj.jacobian(tj.multiply, B, B, num_threads=1), [B], action="parent")
        """
    )
    results = run_child(code, parent_sends=True)
    assert len(results) == 1
    check(results, "parent-sent SIGINT, 1.5 GB multiply Jacobian")


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_python_handler_that_does_not_raise_lets_the_kernel_finish():
    """A SIGINT handler that returns normally: the kernel restarts and the result is right."""
    out = _run(
        PRELUDE
        + textwrap.dedent(
            """
            hits = []
            signal.signal(signal.SIGINT, lambda s, f: hits.append(s))
            B = np.arange(1.0, 1 + 80 * 80).reshape(80, 80)
            done, box, th = helper("self")
            J = tj.jacobian(tj.multiply, B, B, num_threads=1)
            done.set()
            th.join()
            want = np.einsum("ik,jl,ij->ijkl", np.eye(80), np.eye(80), B)
            print("RESULT", len(hits), stats()["interrupted"], np.array_equal(J, want))
            """
        )
    )
    assert out.split() == ["RESULT", "1", "1", "True"]


def test_ignored_sigint_is_respected():
    """SIG_IGN: the kernel is neither stopped nor does anything raise."""
    out = _run(
        PRELUDE
        + textwrap.dedent(
            """
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            B = np.arange(1.0, 1 + 80 * 80).reshape(80, 80)
            t = threading.Thread(target=lambda: (time.sleep(0.05), os.kill(os.getpid(), signal.SIGINT)))
            t.start()
            J = tj.jacobian(tj.multiply, B, B, num_threads=1)
            t.join()
            print("RESULT", stats()["interrupted"], float(J.sum()) == float(B.sum()))
            """
        )
    )
    assert out.split() == ["RESULT", "0", "True"]


def test_kernel_in_worker_thread_is_not_interrupted():
    """Only the main thread gets KeyboardInterrupt; a worker thread's kernel completes correctly."""
    out = _run(
        PRELUDE
        + textwrap.dedent(
            """
            B = np.arange(1.0, 1 + 100 * 100).reshape(100, 100)
            box = {}
            def work():
                box["J"] = tj.jacobian(tj.multiply, B, B, num_threads=1)
            th = threading.Thread(target=work)
            try:
                th.start()
                time.sleep(0.02)
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(30)
                main = "slept"
            except KeyboardInterrupt:
                main = "KeyboardInterrupt"
            th.join()
            ok = float(box["J"].sum()) == float(B.sum()) and np.count_nonzero(box["J"]) == B.size
            print("RESULT", main, stats()["interrupted"], ok)
            """
        )
    )
    assert out.split() == ["RESULT", "KeyboardInterrupt", "0", "True"]
