"""Red team 56 on integrity (branch rt-integrity38): the walks of a data root.

What broke:

- ``app data check`` run as another user than the data root's owner (``sudo app data
  check``, which reads everything) walks ``sessions/`` and ``.trash/`` for what is not the
  owner's (red team 55's ``wrong-owner``) with ``os.walk``, which on Python 3.11 recurses once
  per level and opens each directory by its whole path. A tree deeper than Python's stack in
  a session (a tool's cache, a ``mkdir -p`` in a loop: red team 51's tree) made the check a
  ``RecursionError`` traceback, exit 1; a tree whose path is longer than ``PATH_MAX`` (20
  levels of long names) was passed over in silence (``ENAMETOOLONG``, which ``os.walk``
  ignores), so a directory of root's below it, which the server cannot empty, was said
  "clean". The walk now keeps a list of its own and opens each directory relative to its
  parent's descriptor (`app.dataroot.walk_tree`), so neither the depth nor the path's length
  bounds it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import forked_app
import pytest
from test_redteam_s51_ops import LIMIT, UNDER_LIMIT

from app.storage import open_storage

NOBODY = 65534

#: Levels past `LIMIT` (Python's recursion limit in the command, lowered for time as red team
#: 51's test does), and levels of `LONG` names whose path passes PATH_MAX (4,096 bytes).
DEPTH, LONG_LEVELS, LONG = LIMIT + 40, 21, "n" * 200


def _descend(top: Path, name: str, levels: int) -> int:
    """``top/name/name/...`` made `levels` deep, relative to each descriptor (its path may be
    longer than PATH_MAX), owned by the service's user; the deepest's descriptor."""
    here = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(levels):
        os.mkdir(name, dir_fd=here)
        os.chown(name, NOBODY, NOBODY, dir_fd=here)
        below = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=here)
        os.close(here)
        here = below
    return here


def _roots_directory(fd: int) -> None:
    """In the directory ``fd``: a directory of root's, mode 0700, holding a file (left by a
    command run as root): the server, as its owner, can neither read nor remove it."""
    os.mkdir("cache", 0o700, dir_fd=fd)
    inner = os.open("cache", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=inner))
    os.close(inner)
    os.close(fd)


def test_a_check_as_root_walks_a_tree_of_any_depth_and_length_of_path(
    app_config: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the root is given to another user with chown")
    with open_storage(app_config, writer=True) as store:
        sid = store.create_session("kept")["id"]
        store.put_file(sid, "a.txt", b"one")
        trashed = store.create_session("gone")["id"]
    root = tmp_path / "root"
    shutil.copytree(app_config.data_root, root, symlinks=True)
    (root / ".server.lock").unlink()
    for path in [root, *root.rglob("*")]:
        os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
    # A tree deeper than the stack in a session, another in a deleted session's trash entry
    # whose path passes PATH_MAX; a directory of root's at the bottom of each.
    _roots_directory(_descend(root / "sessions" / sid, "a", DEPTH))
    entry = f"20260101T000000Z-{trashed}"
    (root / "sessions" / trashed).rename(root / ".trash" / entry)
    _roots_directory(_descend(root / ".trash" / entry, LONG, LONG_LEVELS))
    monkeypatch.setenv("APP_DATA_ROOT", str(root))

    log = tmp_path / "check.log"
    code = forked_app.python_c(UNDER_LIMIT, ["data", "check", "--quick"], log).wait(timeout=120)
    said = " ".join(log.read_text().split())
    assert "Traceback" not in said, said
    assert code == 65, said
    deep = "/".join(["a"] * DEPTH)
    assert (
        f"wrong-owner sessions/{sid}/{deep}/cache: owned by user 'root' (uid 0), not by user "
        f"'nobody' (uid {NOBODY}), who owns the data root and runs the app"
    ) in said, said
    long = "/".join([LONG] * LONG_LEVELS)
    assert f"wrong-owner .trash/{entry}/{long}/cache: owned by user 'root' (uid 0)" in said
    assert f"`chown -R nobody: {root}`" in said
    assert said.count("wrong-owner") == 2, said  # each directory once, not what it holds
