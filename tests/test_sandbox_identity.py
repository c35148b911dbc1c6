"""What the guard does after every test, made cheap without looking less.

The run's process reads its own identity in ``/proc`` once; a fork reads its own.

`app.sandbox.restore_entry` runs after every test and names the run's registry entry by
this process's pid and start time. Both were read from ``/proc`` at each call, most of what
the guard cost a test that does nothing; they are read once per process now. A fork of the
run's process (a test's ``os.fork``, multiprocessing's fork) is another process with its own
entry name: it must not take the run's. And `hand_on` reads the run's children in
``/proc`` only where one system call says it has any (`_childless`).

`app.testing.python_writes` places a directory it has not seen from its parent's kept answer
(perf-pywrites75): a directory whose answer was kept, then bound to a protected root, or
switched for a link to one, is looked at again, not taken for what it was.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from app import sandbox
from app.testing import python_writes


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


def test_a_kept_directory_bound_or_linked_to_a_root_is_looked_at_again(tmp_path: Path) -> None:
    root = tmp_path / "production"
    (root / "sessions" / "s1").mkdir(parents=True)
    view, other = tmp_path / "tree" / "view", tmp_path / "tree" / "other"
    shield = python_writes.guard([sandbox.Protected.of("production", root)], {})
    try:
        # Each directory of both trees kept as nowhere protected, the new ones by their
        # parent's answer.
        for tree in (view, other):
            (tree / "sessions" / "s1").mkdir(parents=True)
            (tree / "sessions" / "s1" / "x").write_text("x")
        subprocess.run(["mount", "--bind", str(root), str(view)], check=True)
        try:
            with pytest.raises(python_writes.ProtectedRootError) as bound:
                (view / "sessions" / "s1" / "y").write_text("y")
        finally:
            subprocess.run(["umount", str(view)], check=True)
        assert str(bound.value).startswith(
            f"app: refused to write {view}/sessions/s1/y: it lies in production's data root "
            f"{root}, seen as {view}/sessions/s1/y (no server holds it now)"
        )
        other.rename(tmp_path / "moved")
        other.symlink_to(root)
        with pytest.raises(python_writes.ProtectedRootError) as linked:
            (other / "sessions" / "s1" / "y").write_text("y")
        assert str(linked.value).startswith(
            f"app: refused to write {other}/sessions/s1/y (that is, {root}/sessions/s1/y): it "
            f"lies in production's data root {root} (no server holds it now)"
        )
        assert not (root / "sessions" / "s1" / "y").exists()
    finally:
        python_writes.release(shield)
        python_writes.refused_since()  # raised and asserted here, not a test's ignored call
