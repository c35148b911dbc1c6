"""Red team 63 on regress, the layout marks (branch rt-regress23): what real operators do
beside red team 63 on the guard's marks (``user.app.layout`` on a root's ``sessions/``,
``.trash/`` and ``.tmp/``), and its ``_laid_out``, which counts a directory with neither stamp
nor lock file as a data root where it holds the three directories a writer makes.

What broke:

- false refusals: a directory of the user's that holds ``sessions/``, ``.trash/`` and
  ``.tmp/`` of another tool's (a home directory with a ``.tmp/``, a ``.trash/`` and a web
  app's file-backed ``sessions/``), unmarked, was taken for a data root "whose stamp and lock
  file are gone": every data root made anywhere under it was refused (78), and so was every
  pytest run whose cache (``.pytest_cache`` of a checkout in it) or ``--junitxml`` lay under
  it, the app's plugin inactive in that run and the project another;
- ``app data restamp`` of a root restored in part (its stamp lost, ``cp -a prod/*
  staging/``, whose glob leaves out ``.trash/``, ``.tmp/`` and the stamp: the copied
  ``sessions/`` is marked production's, and the refusal of a writer of staging names this
  restamp) wrote the new stamp, then failed marking the ``.trash/`` that was not there: exit
  74, "the data root's filesystem failed a call with ENOENT ... A change it met ... may be
  made in part", for a hand-over that had been made; and the refusal of the writer named
  the mark on ``<root>/sessions`` where the copy was of ``.trash/`` alone, a directory not
  there;
- a workspace bound from another tool's directory named as a session's (a CI runner's
  ``sessions/<uuid>/``, the uuid's 32 hexadecimal digits as the app's ids): every data root
  in it was refused as "a directory of a session of another data root, by its place in its
  filesystem", and every pytest run whose cache or report went there;
- a root not marked yet (a release before the marks opened it) on a full filesystem, or
  whose ``.tmp/`` had no room left for an extended attribute: every writer's open failed
  with ENOSPC at the mark, ``app data empty-trash`` (the remedy its refusal names) and a
  server's start among them.

What changed (``app.dataroot``): unmarked, the three directories count as a root's only
where the directory also holds what the app alone writes in a root (its ``audit.jsonl``, or a
directory in ``sessions/`` or ``.trash/`` named as a session's or a trash entry's, the first
sixteen entries read: ``_holds_the_app_s``); a mark on any of them still counts alone. A
restamp marks only the root's own directories that are there; the next writer's open makes
and marks the others; the refusal names the directory whose mark it read. A place a mount
shows a root from counts as a session's only in a session's ``records/`` or ``blobs/``, in
a trash entry named as the app names them, or in a directory named as a session's that
holds a ``session.json``, ``records/`` or ``blobs/`` (``shown_from_a_session``). Where a
mark finds no room (ENOSPC, EDQUOT, E2BIG), the open goes on unmarked, as where the
filesystem keeps no user extended attributes. A refusal by a marked directory alone names
it, its mark, and the ``setfattr -x`` that frees a copy. A mark's profile is quoted for the
shell in every command a message names.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import own_mounts
import pytest
from test_redteam_s62_guard import _needs_root

from app.config import load
from app.dataroot import LAYOUT_MARK, filesystem_type, layout_mark, restamp
from app.errors import AppError
from app.storage import open_storage
from app.testing.writes import Target, _conflict

#: A session id as the app makes them, and another tool's session file named alike.
HEX = "0123456789abcdef0123456789abcdef"


def _another_tool_s(directory: Path) -> Path:
    """`directory` holding another tool's ``sessions/`` (a file per session, named by a
    32-digit hexadecimal digest, as Flask-Session's file cache names them), ``.trash/`` and
    ``.tmp/``: no data root's, and unmarked."""
    for name in ("sessions", ".trash", ".tmp"):
        (directory / name).mkdir(parents=True)
    (directory / "sessions" / HEX).write_bytes(b"a web app's session")
    (directory / ".trash" / f"2026-{HEX}").write_bytes(b"a file manager's")
    return directory


def _testing(root: Path) -> object:
    return dataclasses.replace(load(serving=False), data_root=root)


@pytest.mark.app_profile("production")
def test_another_tool_s_sessions_trash_and_tmp_are_no_data_root(tmp_path: Path) -> None:
    """A data root under a directory that holds another tool's ``sessions/``, ``.trash/`` and
    ``.tmp/`` opens, and a pytest run whose cache and report lie there runs; a root that lost
    its stamp, lock file and marks (a release before the marks), with a session, is still a
    root above: the class closed is the false one only."""
    home = _another_tool_s(tmp_path / "home")
    # Before the fix: refused, "it lies inside data root <home> (its stamp and lock file are
    # gone, but it holds a root's own directories, sessions/, .trash/, .tmp/)".
    root = home / "work" / "data"
    with open_storage(_testing(root), writer=True) as store:
        store.create_session("kept", {})
    assert (root / ".app-profile.json").is_file()
    # What the plugin says of a report pytest would write in it, and of its cache in a
    # checkout there (before: "which lies in the data root <home> (its stamp and lock file
    # are gone ...)", and the run refused).
    for path, what in ((home / "r.xml", "--junitxml"), (home / "proj" / ".pytest_cache", "cache")):
        assert _conflict(Target(path, f"pytest's {what} writes {{path}}"), {}, {}) is None

    # A real root of production's (a session in it), marks removed, stamp and lock deleted:
    # the three directories and a session's directory name it a root still.
    lost = home / "lost"
    made = dataclasses.replace(load("production", serving=False), data_root=lost)
    with open_storage(made, writer=True) as store:
        store.create_session("a review", {})
    for name in ("sessions", ".trash", ".tmp"):
        os.removexattr(lost / name, LAYOUT_MARK)
    for name in (".app-profile.json", ".server.lock"):
        (lost / name).unlink()
    with pytest.raises(AppError) as refused, open_storage(_testing(lost / ".trash"), writer=True):
        pass
    assert str(refused.value).startswith(
        f"data root {lost}/.trash: it lies inside data root {lost} (its stamp and lock file are "
        "gone, but it holds a root's own directories, sessions/, .trash/, .tmp/)"
    ), refused.value
    assert sorted(p.name for p in (lost / ".trash").iterdir()) == []
    said = _conflict(Target(lost / "r.xml", "pytest's --junitxml writes {path}"), {}, {})
    assert said is not None and f"lies in the data root {lost} (its stamp" in said, said


@pytest.mark.app_profile("production")
def test_a_restamp_of_a_root_restored_in_part_hands_it_over(tmp_path: Path) -> None:
    """``cp -a production/* staging/`` (the glob leaves ``.trash/``, ``.tmp/`` and the stamp
    out), a writer of the other profile refused naming ``app data restamp``, which then hands
    the root over: exit 0, the copied ``sessions/`` marked for the new profile."""
    production = tmp_path / "production"
    made = dataclasses.replace(load("production", serving=False), data_root=production)
    with open_storage(made, writer=True) as store:
        session = store.create_session("a review", {})["id"]
    # Its trash alone first: the refusal names the directory whose mark it read (before:
    # "<staging>/sessions", which is not there).
    trash_only = tmp_path / "trash-only"
    trash_only.mkdir()
    subprocess.run(["cp", "-a", production / ".trash", trash_only], check=True)
    with pytest.raises(AppError) as refused, open_storage(_testing(trash_only), writer=True):
        pass
    assert (
        f"marked as profile 'production''s (extended attribute {LAYOUT_MARK} on "
        f"{trash_only}/.trash, written by every writer"
    ) in str(refused.value), refused.value
    staging = tmp_path / "staging"
    staging.mkdir()
    subprocess.run(["cp", "-a", production / "sessions", staging], check=True)
    assert sorted(p.name for p in staging.iterdir()) == ["sessions"]
    named = "app data restamp --profile testing --from production"
    with pytest.raises(AppError, match=named), open_storage(_testing(staging), writer=True):
        pass
    # Before the fix: "the data root's filesystem failed a call with ENOENT" (`app data
    # restamp`: 74), the new stamp written all the same.
    done = restamp(_testing(staging), "production")
    assert (done["restamped_from"], done["profile"], done["changed"]) == (
        "production",
        "testing",
        True,
    ), done
    assert not (staging / ".trash").exists()  # made by the next writer's open, not here
    assert layout_mark(staging / "sessions") == {"dir": "sessions", "profile": "testing"}
    with open_storage(_testing(staging), writer=True) as store:
        assert [s["id"] for s in store.list_sessions().items] == [session]
    assert layout_mark(staging / ".trash") == {"dir": ".trash", "profile": "testing"}


@pytest.mark.app_profile("production")
def test_a_copy_of_a_root_s_sessions_alone_is_refused_naming_its_mark(tmp_path: Path) -> None:
    """``cp -a <root>/sessions <dir>/`` (an operator's copy to look at): ``<dir>`` counts as a
    root that lost its stamp, lock file and other directories, as red team 63 on the guard
    meant; the refusal named three directories that are not there and no way out. It names
    the marked copy and the ``setfattr -x`` now, which frees the directory."""
    production = tmp_path / "production"
    made = dataclasses.replace(load("production", serving=False), data_root=production)
    with open_storage(made, writer=True):
        pass
    copies = tmp_path / "copies"
    copies.mkdir()
    subprocess.run(["cp", "-a", production / "sessions", copies], check=True)
    why = (
        f"its stamp and lock file are gone, but it holds sessions/, one of a data root's own "
        f"directories, marked as profile 'production''s (extended attribute {LAYOUT_MARK}); "
        "if that directory is a copy that belongs to no data root now, remove the mark "
        f"(`setfattr -x {LAYOUT_MARK} {copies}/sessions`)"
    )
    with pytest.raises(AppError) as refused, open_storage(_testing(copies / "r"), writer=True):
        pass
    # Before the fix: "(its stamp and lock file are gone, but it holds a root's own
    # directories, sessions/, .trash/, .tmp/)", and nothing of the mark.
    assert str(refused.value).startswith(
        f"data root {copies}/r: it lies inside data root {copies} ({why}), and no data root"
    ), refused.value
    said = _conflict(Target(copies / "r.xml", "pytest's --junitxml writes {path}"), {}, {})
    assert said == f"which lies in the data root {copies} ({why})", said
    os.removexattr(copies / "sessions", LAYOUT_MARK)  # as `setfattr -x` does
    with open_storage(_testing(copies / "r"), writer=True):
        pass


@pytest.mark.app_profile("production")
def test_a_forged_mark_s_profile_is_quoted_in_the_commands_a_refusal_names(
    tmp_path: Path,
) -> None:
    """A root that lost its stamp, its ``sessions/`` marked by whoever owns it with a profile
    that is a shell command: the refusal's ``app data restamp --from ...`` and ``app
    --profile ... data check --repair`` ran it once pasted. They quote it now, as a stamp's
    profile is quoted (session 55), and the hand-over works as quoted."""
    root = tmp_path / "root"
    made = dataclasses.replace(load("production", serving=False), data_root=root)
    with open_storage(made, writer=True):
        pass
    for name in (".app-profile.json", ".server.lock"):
        (root / name).unlink()
    forged = "x; touch pwned; echo "
    mark = {"dir": "sessions", "profile": forged}
    os.setxattr(root / "sessions", LAYOUT_MARK, json.dumps(mark).encode())
    with pytest.raises(AppError) as refused, open_storage(_testing(root), writer=True):
        pass
    message = str(refused.value)
    # Before the fix: "`app data restamp --profile testing --from x; touch pwned; echo
    # --yes-i-mean-it`", unquoted.
    assert f"`app --profile '{forged}' data check --repair`" in message, message
    assert f"`app data restamp --profile testing --from '{forged}' --yes-i-mean-it`" in message, (
        message
    )
    assert restamp(_testing(root), forged)["restamped_from"] == forged


#: A test's child in a mount namespace of its own (`own_mounts`). argv: a CI runner's
#: workspace (``.../sessions/<uuid>``, another tool's), and the point it is bound at.
BOUND_WORKSPACE = r"""
import dataclasses, json, subprocess, sys
from pathlib import Path

from app.config import load
from app.errors import AppError
from app.storage import open_storage
from app.testing.writes import Target, _conflict

workspace, point, emptying, point2 = map(Path, sys.argv[1:5])
said = []


def attempt(where):
    testing = dataclasses.replace(load(serving=False), data_root=where)
    try:
        with open_storage(testing, writer=True):
            said.append("opened")
    except AppError as error:
        said.append(" ".join(str(error).split()))


subprocess.run(["mount", "--bind", workspace, point], check=True)
attempt(point / "data")
cache = Target(point / "proj" / ".pytest_cache", "pytest's cache provider writes {path}")
said.append(_conflict(cache, {}, {}))
# The same directory as a session's: it holds its records/ (its session.json lost), then
# its session.json.
(workspace / "records").mkdir()
attempt(point / "again")
(workspace / "records").rmdir()
(workspace / "session.json").write_text("{}")
attempt(point / "again")
# A trash entry an empty-trash is removing still is a root's.
subprocess.run(["mount", "--bind", emptying, point2], check=True)
attempt(point2)
print(json.dumps(said))
"""


def test_a_workspace_bound_from_another_tool_s_sessions_uuid_is_no_session(
    tmp_path: Path,
) -> None:
    """A directory bound from another tool's ``sessions/<uuid>/`` (a CI runner's workspace,
    the uuid's 32 hexadecimal digits as the app's ids): a data root in it opens, and the
    cache of a pytest run there is let through; one that holds a ``records/`` or a
    ``session.json`` is a session's, and refused."""
    _needs_root()
    workspace = tmp_path / "ci" / "sessions" / HEX
    (workspace / "proj").mkdir(parents=True)
    point = tmp_path / "point"
    point.mkdir()
    name = f".emptying-20261206T135131666822Z-{HEX}"
    emptying = tmp_path / "old" / ".trash" / name / "session" / "records"
    emptying.mkdir(parents=True)
    point2 = tmp_path / "point2"
    point2.mkdir()
    args = (workspace, point, emptying, point2)
    done = own_mounts.python_c(BOUND_WORKSPACE, *map(str, args))
    opened, cache, by_records, again, in_emptying = json.loads(done.stdout.splitlines()[-1])
    assert in_emptying.startswith(
        f"data root {point2}: it is a directory of a session of another data root"
    ), in_emptying
    assert by_records == again, done.stdout
    # Before the fix: "data root <point>/data: it is a directory of a session of another data
    # root, by its place in its filesystem ...", and pytest's run refused for its cache.
    assert (opened, cache) == ("opened", None), done.stdout
    assert again.startswith(
        f"data root {point}/again: it is a directory of a session of another data root, by "
        "its place in its filesystem (a session's records/ or blobs/, or a trash entry's), "
        f"seen through a mount on its way that shows {_in_its_filesystem(workspace)}/again of "
    ), again
    assert sorted(p.name for p in workspace.iterdir()) == ["data", "proj", "session.json"]


def _in_its_filesystem(path: Path) -> str:
    """`path` as the mount table shows it within its filesystem (a bind mount's source):
    the root of the mount it lies on, then the rest of it. `path` itself on a /tmp of the
    disk mounted at `/`; not where the temporary directory is a tmpfs of its own (scripts/test
    puts it on /dev/shm, whose files the table names from that tmpfs's root)."""
    shown = subprocess.run(
        ["findmnt", "-n", "-o", "FSROOT,TARGET", "-T", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    root, target = shown.stdout.splitlines()[-1].split()  # the last mounted there shows
    return str(Path(root) / path.relative_to(target))


def _fill_attributes(directory: Path) -> None:
    """Fill `directory`'s extended attribute space with attributes of another tool's (halving
    the size at each refusal, at most 64 of them), or skip where the app's mark still fits."""
    size, count = 4096, 0
    while size and count < 64:
        try:
            os.setxattr(directory, f"user.other.{count}", b"x" * size)
            count += 1
        except OSError as error:
            if error.errno not in {errno.ENOSPC, errno.E2BIG, errno.ENOTSUP}:
                raise
            if error.errno == errno.ENOTSUP:
                pytest.skip(f"no user extended attributes on {directory}'s filesystem")
            size //= 2
    try:
        os.setxattr(directory, LAYOUT_MARK, b'{"dir": ".tmp", "profile": "production"}')
    except OSError as error:
        assert error.errno in {errno.ENOSPC, errno.E2BIG}, error
    else:
        pytest.skip(f"{directory}'s filesystem keeps room for the mark beside 64 attributes")


@contextlib.contextmanager
def _on_ext4(tmp_path: Path) -> Iterator[Path]:
    """A directory of `tmp_path` on an ext4: `tmp_path` itself where it lies on one (a /tmp
    on this machine kind's disk), else a small ext4 image of its own mounted in it (where
    the temporary directory is a tmpfs, as scripts/test's on /dev/shm: a tmpfs keeps no
    limit on a directory's extended attributes, and the test would skip)."""
    if filesystem_type(tmp_path) == "ext4":
        yield tmp_path
        return
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.skip(f"{tmp_path} is no ext4, and making one takes root and mkfs.ext4")
    with own_mounts.ext4_image(tmp_path / "ext4.img", tmp_path / "ext4") as disk:
        yield disk


@pytest.mark.app_profile("production")
def test_a_root_whose_directory_has_no_room_for_its_mark_is_opened(tmp_path: Path) -> None:
    """A root not marked yet (opened by a release before the marks, or its marks removed)
    whose ``.tmp/`` has no room left for an extended attribute (ext4 keeps a directory's in
    its inode and one block: full there, or the filesystem full with no block to give): a
    writer's open goes on unmarked, as where the filesystem keeps none."""
    with _on_ext4(tmp_path) as disk:
        root = disk / "production"
        made = dataclasses.replace(load("production", serving=False), data_root=root)
        with open_storage(made, writer=True) as store:
            session = store.create_session("a review", {})["id"]
        for name in ("sessions", ".trash", ".tmp"):
            os.removexattr(root / name, LAYOUT_MARK)
        _fill_attributes(root / ".tmp")
        # Before the fix: OSError ENOSPC (`app data empty-trash`, the remedy its own refusal
        # names, and a server's start: 74, "the data root's filesystem is full").
        with open_storage(made, writer=True) as store:
            assert [s["id"] for s in store.list_sessions().items] == [session]
        assert layout_mark(root / ".tmp") is None
        assert layout_mark(root / ".trash") == {"dir": ".trash", "profile": "production"}


def test_a_mark_on_the_last_of_a_root_s_directories_alone_or_beside_others_counts(
    tmp_path: Path,
) -> None:
    """perf-start72 looks at a directory's second and third names with ``access`` once the
    first was looked at, and lists a directory's extended attributes before reading the mark:
    a marked ``.tmp/`` alone (the last name looked at), beside another tool's attribute,
    still makes its directory a root's; another tool's attribute alone, or none, does not."""
    from app.dataroot import a_root_s_own

    alone = tmp_path / "alone"
    (alone / ".tmp").mkdir(parents=True)
    os.setxattr(alone / ".tmp", "user.other.tool", b"x")
    assert layout_mark(alone / ".tmp") is None
    assert a_root_s_own(alone) is None
    os.setxattr(alone / ".tmp", LAYOUT_MARK, b'{"dir": ".tmp", "profile": "production"}')
    assert layout_mark(alone / ".tmp") == {"dir": ".tmp", "profile": "production"}
    assert a_root_s_own(alone) == (
        "its stamp and lock file are gone, but it holds .tmp/, one of a data root's own "
        f"directories, marked as profile 'production''s (extended attribute {LAYOUT_MARK}); "
        "if that directory is a copy that belongs to no data root now, remove the mark "
        f"(`setfattr -x {LAYOUT_MARK} {alone}/.tmp`)"
    )
    assert a_root_s_own(alone / ".tmp") == (
        f"it is the .tmp/ directory of a data root of profile 'production' (extended "
        f"attribute {LAYOUT_MARK})"
    )
    assert a_root_s_own(tmp_path / "nowhere") is None
    assert a_root_s_own(alone / ".tmp" / "nowhere") is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as real id nobody, effective root")
def test_a_root_marked_on_its_trash_alone_counts_for_a_process_whose_real_id_may_not_reach_it(
    tmp_path: Path,
) -> None:
    """perf-start72 asked ``access`` whether a root's ``.trash/`` and ``.tmp/`` were there,
    which asks as the real ids, with the capabilities of a user that is not root dropped: a
    setuid run (real id nobody, effective root), whose ``lstat`` reaches the directory, was
    told both were missing, and a root known by the mark on its ``.trash/`` was no root's
    (red team 72 on regress, round d). Asked as the effective ids, it is found."""
    from app.dataroot import a_root_s_own

    root = tmp_path / "private" / "root"
    (root / ".trash").mkdir(parents=True)
    os.chmod(root.parent, 0o700)  # root's own: nobody may not search it
    os.setxattr(root / ".trash", LAYOUT_MARK, b'{"dir": ".trash", "profile": "production"}')
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's answer is read below
        try:
            os.close(read)
            os.setresuid(65534, 0, 0)
            os.write(write, repr(a_root_s_own(root)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        said = answer.read().decode()
    assert os.waitpid(child, 0)[1] == 0
    assert said == repr(
        "its stamp and lock file are gone, but it holds .trash/, one of a data root's own "
        f"directories, marked as profile 'production''s (extended attribute {LAYOUT_MARK}); "
        "if that directory is a copy that belongs to no data root now, remove the mark "
        f"(`setfattr -x {LAYOUT_MARK} {root}/.trash`)"
    )


def test_a_mark_among_more_names_than_a_list_of_them_holds_still_counts() -> None:
    """perf-start72 listed a directory's extended attributes before reading the mark, and
    took a list that failed for no mark: past 64 KiB of names (another tool's, on tmpfs,
    XFS or btrfs) ``listxattr`` fails with E2BIG, and a marked ``.trash/`` was no root's
    directory, while its ``getxattr`` reads the mark (red team 72 on regress, round d)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("no /dev/shm to write in")
    import shutil
    import tempfile

    place = Path(tempfile.mkdtemp(dir=shm, prefix="rt-regress72d-"))
    try:
        trash = place / ".trash"
        trash.mkdir()
        try:
            os.setxattr(trash, LAYOUT_MARK, b'{"dir": ".trash", "profile": "production"}')
            for number in range(270):  # 270 names of 250 bytes: past the 64 KiB a list holds
                os.setxattr(trash, f"user.other.{number:03}.".ljust(250, "x"), b"")
        except OSError as error:
            pytest.skip(f"/dev/shm keeps no such attributes here ({error})")
        with pytest.raises(OSError) as listed:
            os.listxattr(trash)
        assert listed.value.errno == errno.E2BIG
        assert layout_mark(trash) == {"dir": ".trash", "profile": "production"}
        assert layout_mark(place / "nowhere") is None
    finally:
        shutil.rmtree(place)
