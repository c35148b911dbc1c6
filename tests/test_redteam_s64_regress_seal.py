"""Red team 64 on regress, the seal at the run's end (branch rt-regress27): what a run's last
hand-over says where a thread it left still runs.

Since red team 64 on the children of tests, the run's last hand-over (atexit's), where a thread
besides the main one still runs, has the kernel refuse every new process and program in the
run's process (`app.noforks`, a seccomp filter). Real runs' ends were tried against it (xdist's
workers and controller with pytest-cov, a `multiprocessing` pool of each start method, a
``ProcessPoolExecutor`` and a ``Manager`` left open, a ``weakref.finalize`` that runs a program,
a runner script that starts one after ``pytest.main`` returns): they were sealed only where a
test left a thread, and nothing of theirs was refused.

What broke: where the run was sealed, an exit hook that runs after the run's own (a logging
handler a test added, closed by ``logging.shutdown``) and started a program got
``PermissionError: [Errno 1] Operation not permitted``, naming neither the run, nor the thread,
nor what to do; and where the filter could not be installed (a thread with a seccomp filter of
its own, so ``SECCOMP_FILTER_FLAG_TSYNC`` fails), the run ended unsealed without a word.

What changed: once sealed, Python's calls that start a process or run a program (the audit
events of ``subprocess.Popen``, ``os.fork``, ``os.forkpty``, ``os.posix_spawn``, ``os.exec``,
``os.system``) are refused first by an audit hook, with the same ``errno`` and a message naming
the run, the threads still running and what to do; libc's calls through ``ctypes`` still get
the kernel's refusal. Where the filter could not be installed, the run says so on its standard
error, naming why and the threads. Either way the hand-over follows.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import platform
import subprocess
import tempfile
import threading

import pytest
from test_redteam_s64_children import forked, tried_starts

from app import sandbox
from app.noforks import _ARCH


def _has_seccomp() -> bool:
    with open("/proc/self/status") as status:
        return any(line.startswith("Seccomp:") for line in status)


pytestmark = pytest.mark.skipif(
    platform.machine() not in _ARCH or not _has_seccomp(),
    reason="a seccomp filter for x86_64 and aarch64 only, on a kernel with seccomp",
)

_SECCOMP = 317 if platform.machine() == "x86_64" else 277


def _with_thread(then, *, own_filter: bool = False) -> str:
    """`then()` in a fork of this process, while a thread named 'left' runs there (which
    first installs an allow-all seccomp filter of its own where `own_filter`)."""

    def in_fork() -> str:
        ready, done = threading.Event(), threading.Event()

        def left() -> None:
            if own_filter:
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
                allow = (ctypes.c_ushort * 4)(0x06, 0, 0, 0)  # one BPF "return allow"
                ctypes.c_uint.from_buffer(allow, 4).value = 0x7FFF0000
                prog = (ctypes.c_ulong * 2)(1, ctypes.addressof(allow))
                libc.syscall(_SECCOMP, 1, 0, ctypes.byref(prog))
            ready.set()
            done.wait()

        threading.Thread(target=left, name="left", daemon=True).start()
        ready.wait()
        return then()

    return forked(in_fork)


def test_a_sealed_runs_refusals_say_why_and_what_to_do() -> None:
    def sealed() -> str:
        sandbox._seal(4242)
        said = [
            f"{name} {error.errno} {error.strerror}" if error is not None else f"{name} started"
            for name, error in tried_starts(
                (
                    ("system", lambda: os.system("true")),
                    ("spawn", multiprocessing.get_context("spawn").Process(target=print).start),
                )
            )
        ]
        said.append(f"libc fork {ctypes.CDLL(None).fork()}")
        return "\n".join(said)

    said = _with_thread(sealed).splitlines()
    why = (
        "1 app: pytest run 4242 has ended and a thread it left still runs ('left'): its "
        "process refuses every new process and program from its last hand-over on, so that "
        "nothing a test left starts one outside the run; start it before the run ends (join "
        "or stop that thread in the test or fixture that started it, or do an exit hook's "
        "work in a fixture's teardown)"
    )
    names = ("subprocess", "fork", "posix_spawn", "execv", "system", "spawn")
    assert said == [f"{name} {why}" for name in names] + ["libc fork -1"], said


def test_a_run_that_cannot_seal_says_so() -> None:
    def unsealable() -> str:
        with tempfile.TemporaryFile() as err:
            saved = os.dup(2)
            os.dup2(err.fileno(), 2)
            try:
                sandbox._seal(4242)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            err.seek(0)
            line = err.read().decode()
        child = subprocess.run(["true"], check=False)  # not sealed: still starts
        return f"{line}started {child.returncode}"

    said = _with_thread(unsealable, own_filter=True)
    assert said.startswith(
        "app: pytest run 4242 could not refuse new processes as it ended (seccomp: thread "
    ), said
    assert said.endswith(
        " has a filter of its own) with a thread it left still running ('left'): a process "
        "that thread starts from now on is not held by the run; join or stop that thread in "
        "the test or fixture that started it\nstarted 0"
    ), said
