"""Issue 9: kernels work in forked children.

libgomp's thread pool does not survive fork(): a child forked after a
multi-threaded kernel used to hang forever in its first kernel.  Each scenario
runs in a fresh interpreter (the "parent") that first runs large multi-threaded
kernels, then forks; children must finish, with results bitwise equal to the
parent's.  Everything runs under a timeout in its own session, so a regression
fails (and its hung children are killed) instead of hanging the suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import tensorjac as tj

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")

TIMEOUT = 90

# Shared by every scenario: kernels of each family, big enough to run multi-threaded.
PRELUDE = """
import os, sys, hashlib
import numpy as np
import tensorjac as tj

rng = np.random.default_rng(5)
A, X, B = (rng.standard_normal((24, 24)) for _ in range(3))
Ka, Kb = rng.standard_normal((12, 12)), rng.standard_normal((12, 12))
G = rng.standard_normal((4, 144, 144))
W = rng.standard_normal((300, 300))

def kernels(nt=2):
    return [
        tj.jacobian(tj.sandwich, A, X, B, wrt=1, layout="vec", num_threads=nt),  # expand, 24**4 entries
        tj.jacobian(tj.multiply, W, W, layout="diagonal", num_threads=nt),  # expand, diagonal
        tj.vjp(tj.tanh, W, cotangent=np.stack([W, -W]), num_threads=nt),  # mul_rows
        tj.vjp(tj.kron, Ka, Kb, cotangent=G, wrt=0, num_threads=nt),  # kron_vjp_a
        tj.vjp(tj.kron, Ka, Kb, cotangent=G, wrt=1, num_threads=nt),  # kron_vjp_b
        tj.jvp(tj.kron, Ka, Kb, tangent=G[:, :12, :12].copy(), wrt=1, num_threads=nt),  # kron_batched
    ]

def digest(arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(a.tobytes())
    return h.hexdigest()

def check_values(arrays):
    # independent references, so that "equal to the parent" also means "right"
    J, D, V, dA, dB, K = arrays
    assert np.allclose(J, np.kron(B.T, A), rtol=1e-12), "sandwich vec"
    assert np.array_equal(D, W), "multiply diagonal"
    assert np.allclose(V, np.stack([W, -W]) * (1 - np.tanh(W) ** 2), rtol=1e-13), "tanh vjp"
    G5 = G.reshape(4, 12, 12, 12, 12)
    assert np.allclose(dA, np.einsum("bikjl,kl->bij", G5, Kb), rtol=1e-11), "kron vjp a"
    assert np.allclose(dB, np.einsum("bikjl,ij->bkl", G5, Ka), rtol=1e-11), "kron vjp b"
    assert np.allclose(K, np.stack([np.kron(Ka, v) for v in G[:, :12, :12]]), rtol=1e-14), "kron jvp"

PARENT = kernels()
check_values(PARENT)
PARENT_DIGEST = digest(PARENT)
assert PARENT_DIGEST == digest(kernels(1)), "thread count changed the parent's results"

def child_work(_=None):
    # runs in the forked child: the default and an explicit 2-thread request
    res = kernels(None)
    assert digest(res) == digest(kernels(2)) == PARENT_DIGEST
    return digest(res), tj.get_num_threads()
"""


def run_script(code: str) -> str:
    """Runs code in a fresh interpreter in its own session; returns stdout.

    On timeout the whole session (the script and any hung child) is killed.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "2"},
    )  # fmt: skip
    timed_out = False
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    if timed_out:
        pytest.fail(f"timed out after {TIMEOUT} s (a forked child hung?)\nstdout:\n{out}\nstderr:\n{err}")
    assert proc.returncode == 0, f"exit code {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    return out


def run_parent(body: str) -> str:
    """PRELUDE (multi-threaded kernels in the parent) followed by body."""
    return run_script(PRELUDE + textwrap.dedent(body))


def test_parent_really_multithreaded():
    """The scenarios are only meaningful when the parent's team has several threads."""
    if not tj._core.openmp or tj._core.thread_cap() < 2:
        pytest.skip("needs OpenMP and 2 CPUs for the parent to start a team")
    assert run_parent("print(tj.get_num_threads())").split() == ["2"]


def test_os_fork():
    out = run_parent(
        """
        pid = os.fork()
        if pid == 0:  # child: never return into the parent's code
            try:
                d, nt = child_work()
                # and its own child (a grandchild of the parent) too
                gpid = os.fork()
                if gpid == 0:
                    os._exit(0 if child_work()[0] == PARENT_DIGEST else 4)
                _, gst = os.waitpid(gpid, 0)
                os._exit(0 if (nt == 1 and os.waitstatus_to_exitcode(gst) == 0) else 3)
            except BaseException:
                import traceback; traceback.print_exc()
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        print("child exit code", os.waitstatus_to_exitcode(status))
        print("parent still parallel", tj.get_num_threads(), digest(kernels()) == PARENT_DIGEST)
        """
    )
    lines = out.splitlines()
    assert lines[0] == "child exit code 0", out
    assert lines[1] == f"parent still parallel {min(2, tj._core.thread_cap())} True", out


def test_multiprocessing_fork_pool():
    out = run_parent(
        """
        import multiprocessing as mp
        with mp.get_context("fork").Pool(2) as pool:
            results = pool.map_async(child_work, range(4)).get(timeout=60)
        print(sorted(set(results)) == [(PARENT_DIGEST, 1)], len(results))
        """
    )
    assert out.split() == ["True", "4"], out


def test_process_pool_executor_fork():
    out = run_parent(
        """
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("fork")) as ex:
            results = [f.result(timeout=60) for f in [ex.submit(child_work) for _ in range(4)]]
        print(sorted(set(results)) == [(PARENT_DIGEST, 1)], len(results))
        """
    )
    assert out.split() == ["True", "4"], out


def test_fork_before_any_team_keeps_threads():
    """A process forked before any kernel ran multi-threaded keeps its threads."""
    code = textwrap.dedent(
        """
        import os
        import numpy as np
        import tensorjac as tj
        pid = os.fork()
        if pid == 0:
            X = np.arange(90000.0).reshape(300, 300)
            ok = np.array_equal(tj.jacobian(tj.multiply, X, X, layout="diagonal", num_threads=2), X)
            os._exit(10 * tj.get_num_threads() + ok)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        """
    )
    assert int(run_script(code)) == 10 * min(2, tj._core.thread_cap()) + 1
