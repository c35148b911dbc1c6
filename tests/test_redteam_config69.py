"""Red team 69 on profiles and roots: what a root's checks at open kept for speed.

A writer's check before each write (`DataRoot.ensure_held`) asks the mount table whether it
changed with one poll of the file it opened, read in the namespace the process had then.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import forked_app
import pytest

from app.config import Config
from app.storage import open_storage

needs_mounts = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting takes root"
)

_UNSHARE_UNDER_A_WRITER = """
import ctypes, os, subprocess, sys
from app.config import load
from app.storage import open_storage

session, mount = ARGS
libc = ctypes.CDLL(None, use_errno=True)
with open_storage(load(), writer=True, kind="tests", wanted="use it") as store:
    store.put_file(session, "a.txt", b"version 2", replace=True)  # the table read here
    # A mount namespace of this process's own, after the open: what it mounts is seen by
    # this process alone, and the table it opened shows the namespace it left.
    assert libc.unshare(0x00020000) == 0, os.strerror(ctypes.get_errno())  # CLONE_NEWNS
    assert libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None) == 0  # MS_REC | MS_PRIVATE
    subprocess.run(["mount", "--bind", mount, mount], check=True)
    try:
        store.delete_file(session, "b.txt")
    except Exception as error:
        print(type(error).__name__, error)
    else:
        print("deleted")
"""


@needs_mounts
def test_a_mount_in_a_namespace_the_writer_entered_after_its_open_is_refused(
    app_config: Config,
) -> None:
    # Found by reading `_MountTable.generation`: "within one process the namespace and root
    # are those the table was read for". A writer that entered a mount namespace of its own
    # after its open (`unshare`, `setns`) polled the table of the one it left, which never
    # changes for what is mounted in the new one: a bind mount of its `.trash/` made there
    # went unseen, and a file's delete was acknowledged across it (EXDEV, red team 38).
    out, err = delete_beside_a_mount(app_config, _UNSHARE_UNDER_A_WRITER)
    assert out.splitlines() == [mounted_inside(app_config.data_root)], err


def delete_beside_a_mount(app_config: Config, code: str, *more: str) -> tuple[str, str]:
    """A session of two files in `app_config`'s root; then `code` run in a forked child,
    given (the session, the root's `.trash/`, `more`) for its ``ARGS``, which mounts over
    `.trash/` and deletes ``b.txt``: what it printed, and its standard error. ``b.txt`` is
    checked kept, and the root consistent, after it (the delete refused, nothing lost)."""
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        session = store.create_session("kept")["id"]
        store.put_file(session, "a.txt", b"version 1")
        store.put_file(session, "b.txt", b"b")
    mount = app_config.data_root / ".trash"
    child = forked_app.run_c(
        code.replace("ARGS", repr((session, str(mount), *more))), dict(os.environ)
    )
    with open_storage(app_config, writer=True, kind="tests", wanted="look") as store:
        assert store.file_path(session, "b.txt")[0].read_bytes() == b"b", child.stderr
        assert not store.check(repair=False).findings, child.stderr
    return child.stdout, child.stderr


def mounted_inside(root: Path) -> str:
    """How a writer refuses a delete across a mount made over `root`'s `.trash/`."""
    mount = root / ".trash"
    return (
        f"DataRootChangedError data root {root} changed while open: a filesystem was "
        f"mounted inside it since it was opened ({mount}; `umount {mount}`): the app moves "
        "data within the root by rename, which cannot cross a mount point (EXDEV), even one "
        "of the same filesystem. Nothing was changed; this process stops writing to it. Put "
        "the directory back (the app never uses symbolic links or mounts inside a data root) "
        "and restart"
    )
