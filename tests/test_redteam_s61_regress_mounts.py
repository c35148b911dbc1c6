"""Red team 61 on the last merges: mounts, the plugin's fsync reset, the write checks' memo
(branch rt-regress17): see docs/explanation/attacks/.

What broke:

- rt-regress13's reset (`app.dataroot.forget_failed_sync`, called by the plugin as each test
  ends) forgot a failed fsync whatever root it was: a store a module-scoped fixture opened
  (in the sandbox, so the guard lets it be), whose fsync failed in one test, took the next
  test's change and acknowledged it, on the very root the kernel may have dropped pages of.
  What changed: the failure is kept while the process holds any data root besides the run's
  own session lock (`app.lock.held_here`); a test's own root is closed by then.
- rt-regress15's walk (`mountinfo.by_point`) took a mount stacked on the namespace's root
  (``mount -t tmpfs none /`` in a namespace of the test's own) for the one on top at ``/``,
  hiding every other mount of the table: a live root bound into the sandbox was "shown from
  nowhere" (`app.dataroot.bound_from` None), though the process, whose lookups start at its
  root and never cross a mount on it, still reached it through the bind mount. The same in a
  chroot's table, a mount over the chroot's directory beside the mounts under it. What
  changed: a mount at ``/`` stacked on a listed mount, or beside other mounts of a parent the
  table does not list, is not the process's, and hides nothing.
- A link ``l -> /proc/<pid>/root/<dir>/l`` to a directory of another process's mount
  namespace reads as a loop to ``realpath``, which gives the path back unchanged:
  `app.sandbox.process_link` (whose first test was ``realpath(path) == path``) and
  perf-startup61's memo of the write checks (`_as_written`) took it for a path through no
  link, while the kernel follows it into that namespace (at f9d0a17 too). What changed: both
  ask `app.sandbox.no_link_on_the_way`, an ``lstat`` of each name.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from app import dataroot, mountinfo
from app.errors import FsyncFailed
from app.testing.guard import STATE

if TYPE_CHECKING:
    from app.storage import Storage


def test_a_failed_fsync_is_kept_while_the_process_still_holds_a_root(
    app_store: Storage, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A store held past the test that failed its fsync, as a module- or session-scoped
    # fixture's is when the plugin's teardown hook asks to forget (this test's own store,
    # held here, stands for it): the hook's own call, with the run's session lock.
    run_s = request.config.stash[STATE].session_lock

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(FsyncFailed) as failed:
        app_store.create_session("lost")
    monkeypatch.undo()
    # Before: forgotten, and the next change on the root whose fsync failed acknowledged.
    assert dataroot.forget_failed_sync(run_s) is None
    with pytest.raises(FsyncFailed) as again:
        app_store.create_session("later")
    assert again.value.earlier
    assert again.value.filename == failed.value.filename
    assert "session.json" in str(again.value.filename)
    app_store.close()  # no root held now but the run's own: forgotten, as after a restart
    assert dataroot.forget_failed_sync(run_s) is not None
    assert dataroot.failed_sync() is None


#: In a mount namespace of its own (private, a tmpfs of its own on /tmp): a "live root"
#: bound into a "sandbox", then a tmpfs mounted on /.
OVER_THE_ROOT = """
import ctypes, json, os
from pathlib import Path

# Imported, and each used once, before /tmp is mounted over: a checkout under /tmp.
from app import mountinfo
from app.dataroot import bound_from

bound_from(Path("/"))
mountinfo.showing("/", mountinfo.table())

libc = ctypes.CDLL(None, use_errno=True)


def call(result):
    if result != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
call(libc.unshare(0x00020000))  # CLONE_NEWNS
call(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None))
call(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
os.makedirs("/tmp/live")
os.makedirs("/tmp/sandbox/x")
Path("/tmp/live/f").write_text("production's")
call(libc.mount(b"/tmp/live", b"/tmp/sandbox/x", None, MS_BIND, None))
call(libc.mount(b"none", b"/", b"tmpfs", 0, None))

shown = mountinfo.showing("/tmp/sandbox/x/f", mountinfo.table())
print(json.dumps({
    "read": Path("/tmp/sandbox/x/f").read_text(),
    "bound_from": str(bound_from(Path("/tmp/sandbox/x/f"))),
    "showing": shown.point.decode() if shown is not None else None,
}))
"""


def _seen_by(script: str) -> dict[str, object]:
    """What `script`, run by a ``python -c`` child of its own, printed last (JSON)."""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    seen: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return seen


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts in a namespace of its own need root")
def test_a_mount_on_the_namespace_s_root_hides_no_bind_mount() -> None:
    seen = _seen_by(OVER_THE_ROOT)
    # The process still reads production's file through the bind mount: its lookups start
    # at its root, and never cross the tmpfs mounted on it.
    assert seen["read"] == "production's", seen
    # Before: bound_from None and showing "/", the tmpfs taken for the one on top.
    assert seen["showing"] == "/tmp/sandbox/x", seen
    assert seen["bound_from"] == "/tmp/live/f", seen


def _entries(lines: bytes) -> list[mountinfo.Entry]:
    parsed = (mountinfo.parse(line.strip()) for line in lines.splitlines())
    return [entry for entry in parsed if entry is not None]


def test_a_mount_over_a_chroot_s_directory_hides_none_of_its_mounts() -> None:
    # A chroot into a directory of mount 5 (no mount point, so not listed): a bind mount
    # and /proc under the new root, then a tmpfs mounted over the chroot's directory.
    entries = _entries(
        b"""20 5 0:20 /live /x rw - ext4 /dev/sdb rw
        21 5 0:21 / /proc rw - proc proc rw
        22 5 0:22 / / rw - tmpfs over rw"""
    )
    found = mountinfo.showing("/x/f", entries)
    # Before: the tmpfs, which the chrooted process never reaches.
    assert found is not None and found.source == b"/dev/sdb"
    assert mountinfo.showing("/etc", entries) is None  # on mount 5, not listed
    points = [entry.point for entry in entries]
    assert mountinfo.nearest(b"/x/f", points, mountinfo.by_point(points, entries)) == 0


#: A process in a mount namespace of its own (its own tmpfs on /tmp, a directory at
#: /tmp/sb/l there); then, in another, a link /tmp/sb/l to that process's
#: /proc/<pid>/root/tmp/sb/l, which reads as a loop and is followed into the first.
THROUGH_ANOTHER_ROOT = """
import ctypes, json, os
from pathlib import Path

from app.sandbox import no_link_on_the_way, process_link  # before /tmp is mounted over

process_link("/proc/self/cwd/x")

libc = ctypes.CDLL(None, use_errno=True)


def call(result):
    if result != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def own_tmp():
    call(libc.unshare(0x00020000))  # CLONE_NEWNS
    call(libc.mount(None, b"/", None, (1 << 14) | (1 << 18), None))  # MS_REC | MS_PRIVATE
    call(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))


ready, told = os.pipe()
hold, held = os.pipe()
pid = os.fork()
if pid == 0:
    own_tmp()
    os.makedirs("/tmp/sb/l")
    Path("/tmp/sb/l/f").write_text("the other namespace's")
    os.write(told, b"x")
    os.read(hold, 1)
    os._exit(0)
os.read(ready, 1)
own_tmp()
os.makedirs("/tmp/sb")
os.symlink(f"/proc/{pid}/root/tmp/sb/l", "/tmp/sb/l")

seen = {
    "pid": pid,
    "read": Path("/tmp/sb/l/f").read_text(),
    "realpath": os.path.realpath("/tmp/sb/l/f"),
    "process_link": process_link("/tmp/sb/l/f.xml", streams=True),
    # What the checks of pytest's writes ask of each directory, once a pass.
    "no_link": no_link_on_the_way("/tmp/sb/l"),
}
os.write(held, b"x")
os.waitpid(pid, 0)
print(json.dumps(seen))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts in a namespace of its own need root")
def test_a_link_that_reads_as_a_loop_through_another_process_s_root_is_named() -> None:
    seen = _seen_by(THROUGH_ANOTHER_ROOT)
    # The kernel follows the link into the other namespace; realpath gives the path back.
    assert seen["read"] == "the other namespace's", seen
    assert seen["realpath"] == "/tmp/sb/l/f", seen
    # Before: None and True, the path taken for one through no link.
    assert seen["process_link"] == f"/proc/{seen['pid']}/root", seen
    assert seen["no_link"] is False, seen
