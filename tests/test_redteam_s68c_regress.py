"""Red team 68 on regress, the newest merges (branch rt-regress68c): see
docs/explanation/attacks/.

What broke:

- A data root's create copied its metadata, sorted, reading each object's values by ``[]``
  (rt-regress68b's copy without recursion, which copies ``dict`` subclasses too, where the
  copy before it kept them as sent): ``json.dumps`` reads a subclass's values by
  ``items()``, so one whose ``[]`` is another view of it was answered with values no read
  gives back, and one whose ``[]`` raised was a bare KeyError, under the lock that
  registers a batch's creates: the creates before it stayed registered as in creation for
  good, every later session left out of every listing. The copy reads ``items()`` now, and
  whatever a create's copy raises is that create's answer alone (a key of a ``str``
  subclass whose order raises, which the checks, not sorting, take, did the same before
  rt-regress68b).
- The run's last hand-over's lists read again (`_settled`) took a child whose start time
  could not be read again (gone since its parent's list was read) for the process the walk
  saw at its pid: one at a zombie's pid, ended after the run's list (read last) was read,
  left its child in no list. Such a child now means another walk.
- A child whose ``/proc/<pid>/stat`` a test as root had bound a copy over (a file of
  another filesystem) was passed over by every walk of the hand-over (no start time, so no
  entry); unmounted once the run had ended, it purged a stopped production root. Its start
  time is now read from its main thread's ``stat``.

The first two on a real root (the suite's ``app_store``); the third on `_settled` itself, a
real child's reads made to fail by strace; the fourth on an inner pytest in a PID namespace
of its own beside a stopped production root (red team 61's harness).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_redteam_s61_children import PRELUDE, run_inner
from test_redteam_s67_guard import _SHELL, assert_refused_after_the_run

from app.store.store import Store


class _Upper(dict[str, Any]):
    """A ``dict`` whose ``[]`` answers another view of what it holds (``json.dumps`` and a
    read give back what it holds)."""

    def __getitem__(self, key: str) -> Any:
        return str(super().__getitem__(key)).upper()


class _Hidden(dict[str, Any]):
    """A ``dict`` whose ``[]`` refuses every key (``json.dumps`` reads ``items()``)."""

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)


class _Unordered(str):
    """A key that refuses to be ordered (the checks do not sort; the copy does)."""

    def __lt__(self, other: object) -> bool:
        raise TypeError("this key refuses to be ordered")

    __gt__ = __lt__


def _listed(store: Store) -> list[str]:
    return [item["id"] for item in store.list_sessions().items]


def test_a_create_s_metadata_of_dict_subclasses_is_answered_as_read_and_leaves_no_create_behind(
    app_store: Store,
) -> None:
    sent = {"u": _Upper({"k": "v"}), "h": [_Hidden({"b": 1, "a": 2})]}
    # Before: the batch's second create a bare KeyError, its first registered as in
    # creation for good (left out of every listing after it); the third answered "V".
    made = app_store.create_sessions([("first", {}), ("hidden", sent), ("upper", sent)])
    assert all(isinstance(one, dict) for one in made), made
    first, hidden, upper = made
    assert isinstance(first, dict) and isinstance(hidden, dict) and isinstance(upper, dict)
    for one in (hidden, upper):
        read = app_store.get_session(one["id"])
        assert json.dumps(one["metadata"]) == json.dumps(read["metadata"])
        assert read["metadata"] == {"h": [{"a": 2, "b": 1}], "u": {"k": "v"}}
    later = app_store.create_session("later", {})
    assert _listed(app_store) == sorted([first["id"], hidden["id"], upper["id"], later["id"]])


def test_a_create_whose_metadata_cannot_be_sorted_is_answered_alone(app_store: Store) -> None:
    made = app_store.create_sessions([("first", {}), ("unordered", {_Unordered("a"): 1, "b": 2})])
    first, unordered = made
    assert isinstance(first, dict), made
    # Before: raised out of the batch, under its lock, its first create registered as in
    # creation for good.
    assert isinstance(unordered, TypeError)
    assert "this key refuses to be ordered" in str(unordered)
    later = app_store.create_session("later", {})
    assert _listed(app_store) == sorted([first["id"], later["id"]])


#: Run by the test: starts X (a child that lives on), reads its start time as a walk
#: would, then has every open of X's ``/proc/<pid>/stat`` fail as a process's gone since
#: its parent's list was read fails (ENOENT, injected by strace attached to this process),
#: and asks `_settled` whether this process's list (X and strace), read again, holds only
#: what the walk saw.
SETTLED = r"""
import os, signal, subprocess, sys, time
from app import sandbox

x = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
started = sandbox._stat_fields(x.pid)[1]
tracer = subprocess.Popen(
    ["strace", "-qq", "-o", "/dev/null", "-p", str(os.getpid()), "-P", f"/proc/{x.pid}/stat",
     "-e", "trace=openat", "-e", "inject=openat:error=ENOENT"]
)
try:
    while True:  # until strace holds this process (no time limit: it attaches, or fails)
        status = open("/proc/self/status").read()
        if "TracerPid:\t0\n" not in status:
            break
        if tracer.poll() is not None:
            sys.exit(f"strace ended ({tracer.returncode}) before it attached")
        time.sleep(0.002)
    seen = {x.pid: started, tracer.pid: sandbox._stat_fields(tracer.pid)[1]}
    gone = sandbox._stat_fields(x.pid) is None
    print(gone, sandbox._settled([os.getpid()], seen))
finally:
    tracer.send_signal(signal.SIGINT)
    tracer.wait()
    x.stdin.close()
    x.wait()
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("strace") is None,
    reason="strace attaches to its own parent as root (ptrace_scope); it injects the fault",
)
def test_a_child_listed_again_whose_start_time_cannot_be_read_is_not_taken_as_seen() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SETTLED], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    # Before: "True True", a child at the pid of one the walk saw, gone before its start
    # time was read again (its children left to a list read already), taken as seen.
    assert done.stdout.split() == ["True", "False"], done.stdout


#: Root mounting over /proc, in the mount namespace of an inner run kept out of this run's
#: process tree in a PID namespace of its own.
needs_root_over_proc = pytest.mark.skipif(
    not hasattr(os, "memfd_create") or os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="only root mounts over /proc, here in the mount namespace of an inner run kept out "
    "of this run's process tree in a PID namespace of its own (unshare --pid --mount-proc)",
)

#: What an inner module whose test mounts over its child's `stat` holds after `PRELUDE`:
#: ``x_with_stat_mounted_over(line)`` starts X (``sh -c line``, production's settings alone)
#: and binds a copy of X's `stat` (a file of another filesystem: `_MISSHOWN`) over
#: ``/proc/<X>/stat``.
STAT_MOUNTED_OVER = r"""

def x_with_stat_mounted_over(line):
    x = subprocess.Popen(["sh", "-c", line], env=ENV)
    fake = OUT / "stat"
    fake.write_bytes(Path(f"/proc/{x.pid}/stat").read_bytes())
    subprocess.run(["mount", "--bind", str(fake), f"/proc/{x.pid}/stat"], check=True)
    assert sandbox._stat_fields(x.pid) is None  # not its own: read as missing
"""


#: The inner run's test: X (waits for the run's process to be gone, unmounts what is bound
#: over its `stat`, then runs a purge given production's settings alone), a copy of X's
#: `stat` bound over `/proc/<X>/stat` (a file of another filesystem: `_MISSHOWN`).
MOUNTED_OVER = (
    PRELUDE
    + STAT_MOUNTED_OVER
    + r"""

def test_leaves_a_child_whose_stat_is_mounted_over():
    out = str(OUT / "late")
    purge = f"{sys.executable} -m app data purge --profile production --yes-i-mean-it"
    line = (
        f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 0.02; done; "
        f"umount /proc/$$/stat && {purge} > {out} 2>&1; echo exit $? >> {out}"
    )
    x_with_stat_mounted_over(line)
"""
)


@needs_root_over_proc
def test_a_child_whose_stat_a_test_mounts_over_is_handed_on_all_the_same(tmp_path: Path) -> None:
    # Before: every walk passed X over (no start time, so no entry); unmounted once the run
    # had ended, it purged the stopped production root (`run_inner` checks it untouched).
    inner, said = run_inner(tmp_path, MOUNTED_OVER, ("late",), shell=_SHELL)
    assert " passed" in inner.stdout, inner.stdout
    assert_refused_after_the_run(said)
