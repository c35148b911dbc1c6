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
  parent's descriptor (`app.dataroot.visit_tree`), so neither the depth nor the path's length
  bounds it;
- the same check looked only below ``sessions/`` and ``.trash/``: the root's own entries (the
  two directories themselves, ``.tmp/``, the stamp, the lock file, the audit log) left root's
  by a command run as root, for which every writer refuses the root, were said "clean" (exit
  0) by ``sudo app data check``, which the operator runs to find them. It now names each, as
  ``wrong-owner`` with the ``chown -R`` that gives them back;
- a removal the owner may not make (a directory of root's in a deleted session):
  ``empty-trash`` said "Permission denied: '<entry>/.../r'; `check` will" and ``check
  --repair`` "not done: Permission denied; resolve that", naming neither the file nor its
  owner. Both now name the whole path, whose it is, and the ``chown -R``
  (`app.dataroot.refusal_words`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.dataroot import remove_tree, visit_tree
from app.storage import open_storage

NOBODY = 65534

#: Levels past Python's recursion limit (1,000), at which the command runs (a child of its own,
#: not the run's zygote: its start costs more than the levels), and levels of `LONG` names
#: whose path passes PATH_MAX (4,096 bytes).
DEPTH, LONG_LEVELS, LONG = 1100, 21, "n" * 200


def _app(root: Path, *command: str, user: tuple[str, ...] = ()) -> tuple[int, str]:
    """``python -m app *command`` on ``root`` (as ``user``'s prefix runs it), in a child of
    its own (the run's zygote starts slower than this file's tests take): its exit code and
    output on one line; never a traceback."""
    done = subprocess.run(
        [*user, sys.executable, "-m", "app", *command],
        env={**os.environ, "APP_DATA_ROOT": str(root)},
        capture_output=True,
        text=True,
        check=False,
    )
    said = " ".join((done.stdout + done.stderr).split())
    assert "Traceback" not in said, said
    return done.returncode, said


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
    app_config: Any, tmp_path: Path
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
    try:
        # A tree deeper than the stack in a session, another in a deleted session's trash entry
        # whose path passes PATH_MAX; a directory of root's at the bottom of each.
        _roots_directory(_descend(root / "sessions" / sid, "a", DEPTH))
        entry = f"20260101T000000Z-{trashed}"
        (root / "sessions" / trashed).rename(root / ".trash" / entry)
        _roots_directory(_descend(root / ".trash" / entry, LONG, LONG_LEVELS))
        # And the root's own entries left root's (every writer refuses the root then): the
        # check looked only below `sessions/` and `.trash/`, and said "clean" of these.
        for name in (".tmp", ".app-profile.json"):
            os.chown(root / name, 0, 0)

        code, said = _app(root, "data", "check", "--quick")
        assert code == 65, said
        deep = "/".join(["a"] * DEPTH)
        assert (
            f"wrong-owner sessions/{sid}/{deep}/cache: owned by user 'root' (uid 0), not by user "
            f"'nobody' (uid {NOBODY}), who owns the data root and runs the app"
        ) in said, said
        long = "/".join([LONG] * LONG_LEVELS)
        assert f"wrong-owner .trash/{entry}/{long}/cache: owned by user 'root' (uid 0)" in said
        assert f"`chown -R nobody: {root}`" in said
        for name in (".tmp", ".app-profile.json"):
            assert (
                f"wrong-owner {name}: owned by user 'root' (uid 0), not by user 'nobody' (uid "
                f"{NOBODY}), who owns the data root and runs the app (a command run as another "
                "user made it): every writer (a server's start-up, a restore, a purge, `check "
                "--repair`) refuses the root while it is"
            ) in said, said
        assert said.count("wrong-owner") == 4, said  # each directory once, not what it holds
    finally:
        # pytest's clean-up of old temporary directories recurses once per level (red team
        # 51): a tree this deep left behind would make a later run's end a traceback.
        remove_tree(root)


def test_a_walk_goes_on_past_a_directory_moved_while_it_is_below_it(tmp_path: Path) -> None:
    # A live server's delete moves a session into the trash while `check` walks below it:
    # going back up by `..` then leads elsewhere; the walk goes down again from its top by
    # name, leaves out what moved and goes on with the rest.
    for path in ("x/a/b/c", "x/a/b/d", "x/e/f", "y/z"):
        (tmp_path / "top" / path).mkdir(parents=True)
    seen: list[str] = []

    def visit(relative: str, found: os.stat_result) -> bool:
        seen.append(relative)
        if relative == "x/a/b/c":
            (tmp_path / "top" / "x" / "a").rename(tmp_path / "moved")
        return True

    visit_tree(tmp_path / "top", visit)
    assert seen == ["x", "y", "x/a", "x/e", "x/a/b", "x/a/b/c", "x/a/b/d", "x/e/f", "y/z"]


#: A command run as the service's user, as the server runs (its Python lives where only root
#: may look, so the user is given the capability to read and search, and no other).
AS_OWNER = (
    "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
    "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
)  # fmt: skip
EMPTY, REPAIR = ("data", "empty-trash"), ("data", "check", "--repair")


def test_a_removal_the_owner_may_not_make_names_the_path_and_its_owner(
    app_config: Any, tmp_path: Path
) -> None:
    # A session holding a directory of root's (a command run as root made it), deleted:
    # `empty-trash` said "could not finish removing .emptying-... yet (Permission denied:
    # '.../.../r'); `check` will", and `check --repair` "not done: Permission denied; resolve
    # that", naming neither the file nor its owner, where no repair by the owner can finish.
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv: the root is given to another user, who runs it")
    with open_storage(app_config, writer=True) as store:
        sid = store.create_session("kept")["id"]
        os.mkdir(app_config.data_root / "sessions" / sid / "r")  # root's, mode 0755
        (app_config.data_root / "sessions" / sid / "r" / "f").write_bytes(b"x")
        entry = store.delete_session(sid).name
    root = tmp_path / "root"
    shutil.copytree(app_config.data_root, root, symlinks=True)
    (root / ".server.lock").unlink()
    for path in [root, *root.rglob("*")]:
        if path.name != "r":
            os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
    said = [_app(root, *command, user=AS_OWNER)[1] for command in (EMPTY, REPAIR)]
    where = root / ".trash" / f".emptying-{entry}" / "session" / "r" / "f"
    owned = (
        f"Permission denied: {where}; its directory is owned by user 'root' (uid 0), not by user "
        f"'nobody' (uid {NOBODY}), who owns the data root and runs the app (a command run as "
        "another user made it): with the server stopped, give it back as root "
        f"(`chown -R nobody: {root}`)"
    )
    assert f"(not done: {owned}; resolve that" in said[1], said[1]
    assert f"yet ({owned}); `app data check --repair` finishes it once" in said[0], said[0]
