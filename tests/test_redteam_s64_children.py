"""Red team 64 on the children of tests (branch rt-children64): a child started by a thread the
run never joined, after the run's last hand-over, as the run's process exits.

A run hands its registry entry on to what it started as it exits (`app.sandbox._end_entry`):
whatever still runs then gets an entry of its own and stays in the run once the run's process
is gone. A daemon thread a test leaves runs on after that hand-over until the interpreter
finalises. Next to a stopped production root of the test's own settings, a real inner pytest
with the app's plugin active, under a runner script that calls pytest through another module
(found by its entry alone, red team 42), in a PID namespace of its own (out of this run's
tree), left a daemon thread that waited for an exit hook Python runs after the run's own
(``logging.shutdown``, closing a handler the test added), then started a child given
production's settings alone (``APP_SETTINGS_DIR``, production's token, ``PATH``) that ran
``python -m app data purge --profile production --yes-i-mean-it`` and was left running.

What broke: the child started after the last hand-over; once the run's process was gone it was
re-parented to the namespace's first process, found nothing of the run (``exec`` drops the
anchored copy, its environment was built by hand), and the purge moved every production
session to the trash (red team 63's *not stopped* row).

What changed: the run's last hand-over (atexit's), where a thread other than the main one
still runs, first makes the kernel refuse every new process and every ``exec`` in the run's
process, in all its threads (a seccomp filter, `app.noforks`), then hands on what started
before: the thread's child is refused at its start (``EPERM``), and nothing can start after
the hand-over. With the main thread alone (most runs) nothing is refused, and a child of a
later exit hook stays in the run as red team 28 left it.

And: a test that emptied ``atexit`` (``atexit._clear()``) took that last hand-over away with
the rest; threading's shutdown hook, which runs first, now puts it back where ``atexit`` holds
fewer callbacks than it did once the run registered.
"""

from __future__ import annotations

import atexit
import os
import platform
import shutil
from collections.abc import Callable

import pytest
from test_redteam_s61_children import PRELUDE, run_inner

from app import sandbox
from app.noforks import _ARCH

#: The inner run's test: a daemon thread that starts the purge, left running (a shell whose
#: standard output, this run's pipe, keeps the namespace open until it ends), once
#: ``logging.shutdown`` closes the test's handler; what it could not start, in OUT/thread.
INNER = (
    PRELUDE
    + """
import logging
import threading

GO, DONE = threading.Event(), threading.Event()


def left_running(name):
    line = " ".join(PURGE) + f" > {OUT / name} 2>&1; echo exit $? >> {OUT / name}"
    try:
        subprocess.Popen(["sh", "-c", line], env=ENV, stdin=subprocess.DEVNULL)
    except OSError as error:
        (OUT / name).write_text(f"not started: {error!r}\\n")


class AtShutdown(logging.Handler):
    def emit(self, record):
        pass

    def close(self):  # logging.shutdown: an exit hook after the run's own
        GO.set()
        DONE.wait()
        super().close()


def daemon():
    GO.wait()
    left_running("thread")
    DONE.set()


def test_thread():
    threading.Thread(target=daemon, daemon=True).start()
    logging.getLogger("rt64").addHandler(AtShutdown())
"""
)


def forked(then: Callable[[], str]) -> str:
    """What `then()` returned in a fork of this test's process (sealed or changed, then gone)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the fork's own
        os.close(read)
        try:
            os.write(write, then().encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as output:
        said = output.read()
    os.waitpid(pid, 0)
    return said


def tried_starts(
    more: tuple[tuple[str, Callable[[], object]], ...] = (),
) -> list[tuple[str, OSError | None]]:
    """Each way to a new process or program tried (a subprocess, ``fork``, ``posix_spawn``,
    ``execv``, then `more`): its name and what it raised (None: it started; in a fork of a
    test's process, sealed, where none should)."""
    import subprocess
    import sys

    said: list[tuple[str, OSError | None]] = []
    for name, start in (
        ("subprocess", lambda: subprocess.run(["true"], check=False)),
        ("fork", os.fork),
        ("posix_spawn", lambda: os.posix_spawn("/bin/true", ["true"], {})),
        ("execv", lambda: os.execv(sys.executable, [sys.executable, "-c", ""])),
        *more,
    ):
        try:
            start()
            said.append((name, None))
        except OSError as error:
            said.append((name, error))
    return said


#: In a PID namespace of its own, with a registry of its own (red team 63's): the run as a
#: child of the namespace's first process, its output through a pipe the child holds open.
_NAMESPACE = 'mount -t tmpfs -o mode=0700 app-runs "$1" && shift && "$@" | cat'


@pytest.mark.skipif(
    platform.machine() not in _ARCH or os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="the run's process refuses new processes with a seccomp filter written for x86_64 "
    "and aarch64, and the inner run is kept out of this run's process tree in a PID "
    "namespace of its own (unshare --pid needs root here)",
)
def test_a_daemon_threads_child_after_the_runs_last_hand_over_is_refused(tmp_path):
    inner, said = run_inner(tmp_path, INNER, ("thread",), _NAMESPACE)
    assert "1 passed" in inner.stdout, inner.stdout + inner.stderr
    # Refused in words since red team 64 on regress, the seal (the kernel's EPERM behind).
    assert said["thread"].startswith('not started: PermissionError(1, "app: pytest run '), said
    assert "has ended and a thread it left still runs ('Thread-1 (daemon)'" in said["thread"]


@pytest.mark.skipif(platform.machine() not in _ARCH, reason="a filter for x86_64 and aarch64 only")
def test_the_seal_refuses_every_new_process_and_keeps_threads() -> None:
    # In a fork of this test's process (sealed for good, then gone): a thread still starts
    # (clone with CLONE_THREAD, after clone3's ENOSYS), and every way to a new process or
    # program is refused by the kernel, a call through libc that no Python hook sees too.
    import ctypes
    import threading

    from app.noforks import refuse_new_processes

    def sealed() -> str:
        said = [str(refuse_new_processes())]
        started = threading.Thread(target=said.append, args=("thread",))
        started.start()
        started.join()
        for name, error in tried_starts():
            said.append(f"{name} {error.errno}" if error is not None else f"{name} started")
        said.append(f"libc fork {ctypes.CDLL(None).fork()}")
        return " ".join(said)

    said = forked(sealed)
    assert said == "None thread subprocess 1 fork 1 posix_spawn 1 execv 1 libc fork -1", said


def test_a_run_whose_atexit_a_test_emptied_gets_its_last_hand_over_back() -> None:
    # atexit._clear() took the run's last hand-over (and its seal) away: a daemon thread's
    # child started after threading's hand-over escaped the run. threading's hook puts it
    # back where atexit was emptied; where it was not, it adds nothing.
    def cleared() -> str:
        atexit._clear()
        atexit.register(print)  # a test's own exit hook, after
        sandbox._at_threads_shutdown()
        return str(atexit._ncallbacks())

    def kept() -> str:
        before = atexit._ncallbacks()
        sandbox._at_threads_shutdown()
        return str(atexit._ncallbacks() - before)

    if not sandbox._ATEXIT_HELD:
        pytest.skip("this process registered no run (the plugin is off)")
    assert forked(cleared) == "2"
    assert forked(kept) == "0"
