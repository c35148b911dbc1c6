"""Red team 70 on regress, the newest guard merge (branch rt-regress70j): a signal handler
that forked in the middle of its thread's walk left a child whose walk took a handler's walk
in its middle for none, and emptied its notes (the bug rt-regress70h mended, back in the
child), and whose every later walk took itself for a nested one.

A fork's child starts its count of walks under way at 0 and takes a new lock (rt-regress70h),
right where another thread was walking; where the forking thread was walking itself, the
child carries that walk on, whose end took the count to -1. And a KeyboardInterrupt raised as
a call in a walk's ``finally`` returned left the count at 1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_redteam_s70h_guard import under_a_failed_read_of_pid_1s_exe

#: A Python outside any run, in a PID namespace of its own below pid 1 (another Python), as in
#: tests/test_redteam_s70h_guard.py, whose walk is interrupted twice: as it begins by a
#: handler that forks (the parent waits, the child carries the walk on), then, in the child,
#: as the walk asks whether its read of pid 1's `exe` failed, by a handler that walks again.
#: What each walk said, and the child's count of walks under way once they ended.
FORKED_HANDLER_WALKS = """
import json, os, signal, sys
from app import sandbox

said = {}


def forked(signum, frame):
    if pid := os.fork():
        os._exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))


def handler(signum, frame):
    said["handler"] = sandbox._walk_tree()[1]


def trace(frame, event, arg):
    # Python runs each handler at the walk's next step, in this thread.
    if event == "call" and frame.f_code.co_name == "_ancestry" and "forked" not in said:
        said["forked"] = True
        os.kill(os.getpid(), signal.SIGUSR2)
    if event == "call" and frame.f_code.co_name == "_proc_read_failed" and "handler" not in said:
        if frame.f_locals.get("pid") == 1:
            os.kill(os.getpid(), signal.SIGUSR1)


signal.signal(signal.SIGUSR1, handler)
signal.signal(signal.SIGUSR2, forked)
sys.settrace(trace)
said["walk"] = sandbox._walk_tree()[1]
sys.settrace(None)
said["walks"] = sandbox._WALKS[0]
print(json.dumps(said))
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not all(map(shutil.which, ("unshare", "strace"))),
    reason="the fault is injected by strace; the process is kept out of this run's process "
    "tree in a PID namespace of its own (unshare --pid, root's)",
)
def test_a_child_forked_by_a_handler_mid_walk_keeps_the_walk_s_notes_and_count(
    tmp_path: Path,
) -> None:
    """Found by forking in a handler in the middle of a walk (rt-regress70h's test, one fork
    added): the child's count of walks went from 0 (reset at the fork) to -1 as the walk it
    carried on ended, and a handler's walk in the middle of that walk, counted as none,
    emptied its notes: the walk that the failed read of pid 1's `exe` refused alone found no
    run and no refusal."""
    said = under_a_failed_read_of_pid_1s_exe(tmp_path, FORKED_HANDLER_WALKS)
    assert said["forked"] and said["handler"] is None, said  # its own read did not fail
    # Before the fix: -1, and None (the note of the failed read gone with the handler's walk).
    assert said["walks"] == 0, said
    assert said["walk"] is not None, said
    assert "while a test run may be above this process (ancestor pid 1: " in said["walk"], said
    assert "its read of /proc/1/exe failed (EIO: Input/output error)" in said["walk"], said


#: A walk whose `finally` is cut by a KeyboardInterrupt as its first call returns, as where a
#: SIGINT came then: Python runs a signal handler's raise as a call returns, which a profile
#: function's raise on that call's ``c_return`` stands for here, deterministically. The count
#: of walks under way, the memo stack and the lock, after it.
INTERRUPTED_WALK_END = """
import json, sys
from app import sandbox

seen = {}


def profile(frame, event, arg):
    if event == "return" and frame.f_code.co_name == "_walk_tree_listed":
        seen["walked"] = True
    elif event == "c_return" and frame.f_code.co_name == "_walk_tree" and "walked" in seen:
        if "cut" not in seen:
            seen["cut"] = arg.__name__
            raise KeyboardInterrupt


sys.setprofile(profile)
try:
    sandbox._walk_tree()
except KeyboardInterrupt:
    seen["interrupted"] = True
sys.setprofile(None)
seen.update(walks=sandbox._WALKS[0], listed=len(sandbox._LISTED))
seen["held"] = sandbox._WALKING[0]._is_owned()
print(json.dumps(seen))
"""


def test_a_walk_whose_end_a_keyboard_interrupt_cuts_counts_itself_out(tmp_path: Path) -> None:
    """Found by reading the walk's `finally` for the brief's "does it stay incremented":
    a KeyboardInterrupt as ``_LISTED.pop()`` returned skipped the count's decrement, which
    stayed at 1, and every later walk of the process took itself for a nested one."""
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_WALK_END],
        capture_output=True, text=True, check=False, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["interrupted"], seen
    # Before the fix: {"cut": "pop", "walks": 1}.
    assert (seen["walks"], seen["listed"], seen["held"]) == (0, 0, False), seen
