"""Red team 70 on regress, profiles and roots: a writer's thread under a root of its own.

The check before each write (`DataRoot.ensure_held`) reads the mount table as the writing
thread sees it; the table is shared between threads while they see the same one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_redteam_config69 import delete_beside_a_mount, mounted_inside
from test_redteam_s59_guard import outside_any_run

from app.config import Config

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

# A mount namespace of this process's own, where `/` is mounted again at `again` with every
# mount below it (--rbind), or so but /proc (`no-proc`: unmounted there, as a chroot made
# without it has none; every other mount kept, the root's filesystem among them wherever the
# temporary directory lies: a tmpfs on /dev/shm under scripts/test).
check(libc.unshare(0x00020000))  # CLONE_NEWNS
check(libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None))  # MS_REC | MS_PRIVATE
again = tempfile.mkdtemp()
subprocess.run(["mount", "--rbind", "/", again], check=True)
if how == "no-proc":
    subprocess.run(["umount", "-l", again + "/proc"], check=True)

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
    said.append(f"health: {store.writes_stopped}")  # what GET /health says

with open_storage(load(), writer=True, kind="tests", wanted="use it") as store:
    store.put_file(session, "a.txt", b"version 2", replace=True)  # the table read here
    thread = threading.Thread(target=writer, args=(store,))
    thread.start()
    thread.join()
print(*said, sep="\\n")
"""


def _delete_from_a_chroot(app_config: Config, how: str) -> tuple[str, str]:
    return delete_beside_a_mount(app_config, _CHROOT_IN_A_THREAD, how)


@needs_mounts
def test_a_mount_seen_from_a_writer_s_thread_s_own_root_is_refused(app_config: Config) -> None:
    # Found by reading rt-config70's `_MountTable._whose`: threads share one open table
    # while the process, the namespace and `stat("/")` are alike. A thread that chroots
    # into a bind mount of `/` has a `/` of the same device and inode, but sees each mount
    # as another (that bind's), named otherwise in the first thread's table: a bind mount
    # of the root's `.trash/` it made went unseen, and a file's delete was acknowledged
    # across it (EXDEV, red team 38). The key holds the root's mount id now (statx).
    root = app_config.data_root
    out, err = _delete_from_a_chroot(app_config, "--rbind")
    refusal = mounted_inside(root)
    health = (
        "health: a filesystem was mounted inside the data root, at its .trash/ while the "
        "server ran: every change is refused until it is put back as it was"
    )
    assert out.splitlines() == [refusal, health], err


@needs_mounts
def test_a_writer_s_thread_that_cannot_read_the_mount_table_is_refused(
    app_config: Config,
) -> None:
    # Found with the test above's chroot, made without /proc in it (a plain --bind of `/`;
    # here /proc unmounted from its --rbind, which keeps a root on a tmpfs of its own):
    # the table read as the root was opened could not be read from the writing thread,
    # which the check took for "nothing mounted inside", and the delete across the bind
    # mount of `.trash/` was acknowledged. A writer that read a table once refuses where it
    # cannot read it now, saying why and what to mount.
    root = app_config.data_root
    out, err = _delete_from_a_chroot(app_config, "no-proc")
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
    health = (
        "health: the mount table cannot be read (No such file or directory: /proc is not "
        "mounted, or not readable, where the thread that asks runs) while the server ran: "
        "every change is refused until it is put back as it was"
    )
    assert out.splitlines() == [refusal, health], err


#: PID 1 of a PID namespace of its own (`outside_any_run`): a holder of production's root
#: (a fork), then a thread in a mount namespace of its own that mirrors the root's parent
#: with bindfs and opens the root through the mirror as a writer.
_MIRROR_IN_A_THREAD = r"""
import ctypes, json, os, signal, subprocess, sys, threading
from pathlib import Path
from app.config import load
from app.storage import open_storage

work = Path(sys.argv[1])
real, mirror = work / "real", work / "mirror"
libc = ctypes.CDLL(None, use_errno=True)
read, write = os.pipe()
holder = os.fork()
if holder == 0:
    with open_storage(load(serving=False), writer=True):
        os.write(write, b"held")
        signal.pause()
    os._exit(0)
assert os.read(read, 4) == b"held"
said = []

def challenger():
    assert libc.unshare(0x00020000) == 0, os.strerror(ctypes.get_errno())  # CLONE_NEWNS
    assert libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None) == 0  # MS_REC | MS_PRIVATE
    subprocess.run(["bindfs", str(real), str(mirror)], check=True)
    os.environ["APP_DATA_ROOT"] = str(mirror / "production")
    try:
        with open_storage(load(serving=False), writer=True):
            said.append("opened")
    except Exception as error:
        said.append(f"{type(error).__name__} {error}")
    finally:
        subprocess.run(["fusermount", "-u", str(mirror)], check=True)

thread = threading.Thread(target=challenger)
thread.start()
thread.join()
os.kill(holder, signal.SIGKILL)
os.waitpid(holder, 0)
print("RESULTS", json.dumps({"holder": holder, "said": said}))
"""


def test_a_live_root_through_a_mirror_a_writer_s_thread_mounted_is_refused(
    tmp_path: Path,
) -> None:
    # Found by reading app/lock.py after rt-config70 made `mountinfo.table` the calling
    # thread's: the looks for a holder through a FUSE mount still read `"self"`'s table,
    # the first thread's. A thread in a mount namespace of its own that mirrored a live
    # root with bindfs (which passes no flock on) opened the mirror as a second writer
    # beside the holder ("opened"), where the same open from the first thread is refused.
    needed = ("unshare", "bindfs", "fusermount")
    if os.geteuid() != 0 or any(shutil.which(tool) is None for tool in needed):
        pytest.skip("needs root, unshare, bindfs and fusermount for a FUSE mirror")
    if not Path("/dev/fuse").exists():
        pytest.skip("needs /dev/fuse for a FUSE mirror")
    (tmp_path / "real").mkdir()
    (tmp_path / "mirror").mkdir()
    root, through = tmp_path / "real" / "production", tmp_path / "mirror" / "production"
    seen = outside_any_run(tmp_path, root, _MIRROR_IN_A_THREAD, str(tmp_path))
    [said] = seen["said"]
    assert said.startswith(
        "DataRootInUseError cannot open the data root as a maintenance process: data root "
        f"{through} is held by pid {seen['holder']}, kind maintenance, profile production"
    ), said
    assert (
        f"through its lock file {root}/.server.lock, which is {through}/.server.lock seen "
        "through a FUSE mount"
    ) in said, said
