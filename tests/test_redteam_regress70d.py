"""Red team 70 on regress, profiles and roots: a writer's thread under a root of its own.

The check before each write (`DataRoot.ensure_held`) reads the mount table as the writing
thread sees it; the table is shared between threads while they see the same one.
"""

from __future__ import annotations

import os
import shutil

import forked_app
import pytest

from app.config import Config
from app.storage import open_storage

needs_mounts = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting takes root"
)

_CHROOT_IN_A_THREAD = """
import ctypes, os, subprocess, tempfile, threading
from app.config import load
from app.storage import open_storage

session, mount, how = ARGS
libc = ctypes.CDLL(None, use_errno=True)
said = []

def check(result):
    assert result == 0, os.strerror(ctypes.get_errno())

# A mount namespace of this process's own, where `/` is mounted again at `again`: with
# every mount below it (--rbind), or alone (--bind: no /proc there).
check(libc.unshare(0x00020000))  # CLONE_NEWNS
check(libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None))  # MS_REC | MS_PRIVATE
again = tempfile.mkdtemp()
subprocess.run(["mount", how, "/", again], check=True)

def writer(store):
    # A root directory of this thread's own (unshare(CLONE_FS), then chroot): the same
    # filesystem, the same directory, `stat("/")` alike, in the same namespace; but each
    # mount point this thread sees is another mount, named otherwise in the first thread's
    # table (`again` + its path).
    check(libc.unshare(0x00000200))  # CLONE_FS
    os.chroot(again)
    os.chdir("/")
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


def _delete_from_a_chroot(app_config: Config, how: str) -> tuple[str, str]:
    root = app_config.data_root
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        session = store.create_session("kept")["id"]
        store.put_file(session, "a.txt", b"version 1")
        store.put_file(session, "b.txt", b"b")
    mount = root / ".trash"
    code = _CHROOT_IN_A_THREAD.replace("ARGS", repr((session, str(mount), how)))
    child = forked_app.run_c(code, dict(os.environ))
    with open_storage(app_config, writer=True, kind="tests", wanted="look") as store:
        assert store.file_path(session, "b.txt")[0].read_bytes() == b"b"
    return child.stdout, child.stderr


@needs_mounts
def test_a_mount_seen_from_a_writer_s_thread_s_own_root_is_refused(app_config: Config) -> None:
    # Found by reading rt-config70's `_MountTable._whose`: threads share one open table
    # while the process, the namespace and `stat("/")` are alike. A thread that chroots
    # into a bind mount of `/` has a `/` of the same device and inode, but sees each mount
    # as another (that bind's), named otherwise in the first thread's table: a bind mount
    # of the root's `.trash/` it made went unseen, and a file's delete was acknowledged
    # across it (EXDEV, red team 38). The key holds the root's mount id now (statx).
    root = app_config.data_root
    mount = root / ".trash"
    out, err = _delete_from_a_chroot(app_config, "--rbind")
    refusal = (
        f"DataRootChangedError data root {root} changed while open: a filesystem was "
        f"mounted inside it since it was opened ({mount}; `umount {mount}`): the app moves "
        "data within the root by rename, which cannot cross a mount point (EXDEV), even one "
        "of the same filesystem. Nothing was changed; this process stops writing to it. Put "
        "the directory back (the app never uses symbolic links or mounts inside a data root) "
        "and restart"
    )
    assert out.splitlines() == [refusal], err


@needs_mounts
def test_a_writer_s_thread_that_cannot_read_the_mount_table_is_refused(
    app_config: Config,
) -> None:
    # Found with the test above's chroot, made without /proc in it (a plain --bind of `/`):
    # the table read as the root was opened could not be read from the writing thread,
    # which the check took for "nothing mounted inside", and the delete across the bind
    # mount of `.trash/` was acknowledged. A writer that read a table once refuses where it
    # cannot read it now, saying why and what to mount.
    root = app_config.data_root
    out, err = _delete_from_a_chroot(app_config, "--bind")
    refusal = (
        f"DataRootChangedError data root {root} changed while open: the mount table "
        "(/proc/thread-self/mountinfo), read when it was opened, cannot be read from the "
        "thread that writes now (No such file or directory: a chroot with no /proc mounted "
        "in it, /proc unmounted, or its reads refused), so a filesystem mounted inside the "
        "root would go unseen and a rename across it lose data; write from where /proc is "
        "mounted (in a chroot: `mount -t proc proc <chroot>/proc`). Nothing was changed; "
        "this process stops writing to it. Put the directory back (the app never uses "
        "symbolic links or mounts inside a data root) and restart"
    )
    assert out.splitlines() == [refusal], err
