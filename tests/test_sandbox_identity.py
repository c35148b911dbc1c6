"""The run's process reads its own identity in ``/proc`` once; a fork reads its own.

`app.sandbox.restore_entry` runs after every test and names the run's registry entry by
this process's pid and start time. Both were read from ``/proc`` at each call, most of what
the guard cost a test that does nothing; they are read once per process now. A fork of the
run's process (a test's ``os.fork``, multiprocessing's fork) is another process with its own
entry name: it must not take the run's.
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
    assert sandbox._own_start() == _read_now()
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the forked child: its own pid and start time, not the parent's
        try:
            verdict = b"ok" if sandbox._own_start() == _read_now() else b"parent's"
        except BaseException:
            verdict = b"failed"
        os.write(writer, verdict)
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as answer:
        said = answer.read()
    os.waitpid(child, 0)
    assert said == b"ok"
    assert sandbox._own_start() == _read_now()
