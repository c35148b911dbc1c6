"""A filesystem mounted inside a data root (red team 20).

The app moves data within a root by rename: a session into the trash, a replaced or deleted
file's bytes into their trash entry, an upload from ``.tmp/`` into its session. The kernel
refuses a rename across a mount point (EXDEV), even between two mounts of one filesystem.
With a tmpfs at ``.trash/`` (to keep deleted data off the disk, say), a replace and a delete
were acknowledged with their old bytes left among the session's, a session's delete was a
bare 500, and the repair that finishes such moves failed every server start-up. The child
mounts in a mount namespace of its own, so nothing outlives it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from app.config import Config
from app.storage import open_storage

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="mounting a filesystem takes root and unshare(1)",
)

_CHILD = """
import subprocess, sys
from app.config import load
from app.errors import DataRootStateError
from app.storage import open_storage

for mount in sys.argv[1:]:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "none", mount], check=True)
    try:
        open_storage(load(), writer=True, kind="tests", wanted="open it").close()
    except DataRootStateError as error:
        print(error)
    else:
        print("opened")
    subprocess.run(["umount", mount], check=True)
"""


def test_a_root_with_a_filesystem_mounted_inside_is_refused_and_left_as_it_was(
    app_config: Config,
) -> None:
    root = app_config.data_root
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        session = store.create_session("kept")["id"]
        store.put_file(session, "a.txt", b"version 1")
    mounts = [root / ".trash", root / "sessions" / session / "blobs"]
    child = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", _CHILD]
        + [str(m) for m in mounts],
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.splitlines() == [
        f"data root {root}: a filesystem is mounted inside it ({mount}); the app moves "
        "sessions, files and trash entries within the root by rename, which cannot cross a "
        "mount point (EXDEV), so deletes and replaces would fail or leave their bytes behind; "
        "copy what it holds onto the data root's own filesystem before you unmount it (a "
        "tmpfs's files are gone once it is unmounted, a disk's are hidden): with no server on "
        f"the root, `cp -a {mount} {mount}.copy && umount {mount} && rmdir {mount} && mv "
        f"{mount}.copy {mount}` (`rmdir` stops it if files lie under the mount point: look at "
        "them first), and keep the whole data root on one filesystem; to keep the data "
        "elsewhere, point data_root of profile 'testing' there (`app config` shows where it "
        "is set)"
        for mount in mounts
    ]
    with open_storage(app_config, writer=True, kind="tests", wanted="use it again") as store:
        store.put_file(session, "a.txt", b"version 2", replace=True)
        store.delete_session(session)
        assert not store.check(repair=False).findings
        assert [e.kind for e in store.list_trash()] == ["file", "session"]
