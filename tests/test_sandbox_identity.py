"""What the guard does after every test, made cheap without looking less.

The run's process reads its own identity in ``/proc`` once; a fork reads its own.

`app.sandbox.restore_entry` runs after every test and names the run's registry entry by
this process's pid and start time. Both were read from ``/proc`` at each call, most of what
the guard cost a test that does nothing; they are read once per process now. A fork of the
run's process (a test's ``os.fork``, multiprocessing's fork) is another process with its own
entry name: it must not take the run's. And `hand_on` reads the run's children in
``/proc`` only where one system call says it has any (`_childless`).
"""

from __future__ import annotations

import os
from pathlib import Path

from app import sandbox


def _read_now() -> tuple[int, int]:
    pid = int(Path("/proc/self").readlink().name)
    fields = sandbox._stat_fields(pid)
    assert fields is not None
    return pid, fields[1]


def test_the_process_s_identity_is_read_once_and_a_fork_reads_its_own() -> None:
    assert sandbox.own_start() == _read_now()
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the forked child: its own pid and start time, not the parent's
        try:
            verdict = b"ok" if sandbox.own_start() == _read_now() else b"parent's"
        except BaseException:
            verdict = b"failed"
        os.write(writer, verdict)
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as answer:
        said = answer.read()
    os.waitpid(child, 0)
    assert said == b"ok"
    assert sandbox.own_start() == _read_now()


def test_a_process_with_any_child_running_or_exited_is_not_taken_for_childless() -> None:
    """`hand_on` (after every test) reads the run's children only where `_childless` says
    there may be some: a child running, or exited and not yet reaped, must count."""
    import subprocess
    import sys

    # A process of its own: this one may hold children an earlier test left to the run.
    alone = "from app import sandbox; print(sandbox._childless())"
    done = subprocess.run([sys.executable, "-c", alone], capture_output=True, text=True, check=True)
    assert done.stdout == "True\n"
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        assert not sandbox._childless()  # running
        assert child.stdin is not None
        child.stdin.close()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
        assert not sandbox._childless()
        assert child.poll() == 0  # reaped: the look reaped nothing before
    finally:
        child.kill()
        child.wait()
