"""Red team 70 on profiles and roots: the namespace a writer's thread is in.

A writer's check before each write (`DataRoot.ensure_held`) asks the mount table whether it
changed; the table and the namespace it is compared with are those of the thread that
writes, not of the process's first thread.
"""

from __future__ import annotations

import os
import shutil

import pytest
from test_redteam_config69 import delete_beside_a_mount, mounted_inside

from app.config import Config

needs_mounts = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting takes root"
)

_UNSHARE_IN_A_THREAD = """
import ctypes, os, subprocess, threading
from app.config import load
from app.storage import open_storage

session, mount = ARGS
libc = ctypes.CDLL(None, use_errno=True)
said = []

def writer(store):
    # A mount namespace of this thread's own (unshare(2) gives a thread one: CLONE_NEWNS
    # implies CLONE_FS, which a thread may unshare), after the open: what it mounts is seen
    # by this thread and its children alone; /proc/self is the first thread's.
    assert libc.unshare(0x00020000) == 0, os.strerror(ctypes.get_errno())  # CLONE_NEWNS
    assert libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None) == 0  # MS_REC | MS_PRIVATE
    subprocess.run(["mount", "--bind", mount, mount], check=True)
    try:
        store.delete_file(session, "b.txt")
    except Exception as error:
        said.append(f"{type(error).__name__} {error}")
    else:
        said.append("deleted")

with open_storage(load(), writer=True, kind="tests", wanted="use it") as store:
    store.put_file(session, "a.txt", b"version 2", replace=True)  # the table read here
    thread = threading.Thread(target=writer, args=(store,))
    thread.start()
    thread.join()
print(*said, sep="\\n")
"""


@needs_mounts
def test_a_mount_in_a_namespace_a_writer_s_thread_entered_is_refused(
    app_config: Config,
) -> None:
    # Found by reading red team 69's `_MountTable._whose`: the namespace compared is
    # /proc/self/ns/mnt, the process's first thread's, and the table polled is
    # /proc/self/mountinfo, that thread's view. A thread that entered a mount namespace of
    # its own after the open (unshare(CLONE_NEWNS) in a thread, as a Go program's locked OS
    # thread does) wrote through mounts the first thread never sees: a bind mount of the
    # root's `.trash/` made there went unseen, and a file's delete was acknowledged across
    # it (EXDEV, red team 38).
    out, err = delete_beside_a_mount(app_config, _UNSHARE_IN_A_THREAD)
    assert out.splitlines() == [mounted_inside(app_config.data_root)], err
