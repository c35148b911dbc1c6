"""Red team 55 on operations (branch rt-ops27): the wrong user. The service runs as a user
that owns its data root (``app``, mode 0700, as the deploy guide makes it); an operator runs
a maintenance command as root (``sudo app sessions restore ...``), or as a third user.

What broke (tried by hand with a real ``app serve`` as a service user, then kept here on a
root of the run's sandbox given to user 65534):

- ``app sessions restore`` (a session, a file), ``app data check --repair``, ``app data
  empty-trash``, ``app data restamp`` and ``app serve`` run as root on the service user's
  root succeeded, and left what they made there root's, mode 0600 or 0700: ``audit.jsonl``
  (when the log had been rotated away), ``.tmp/``, the restored file's record, a repair's
  trash entry. The service then started as its user, ``/health`` said ``ok``, and every
  upload (its temporary file goes to ``.tmp/``) and every delete (its audit line) was a 503
  ``storage_permission_denied`` until someone found the files with ``ls -lR``;
- the same commands run as a third user, which cannot write the root, were refused by the
  lock file (74) with "``chmod 600`` it, and ``chown`` it if its owner is wrong": the owner
  was right, and the advice sent the operator to give production's root to the wrong user.
- ``app serve`` making a root whose parents are missing under ``umask 000``: the parents were
  0777, so any user could move the root aside and the next start made a new, empty one;
  they are now made with mode 0755, which the umask can only narrow;
- ``app data check`` run as root (``sudo``, which reads everything) on a root where such a
  command had left a session's record root's, mode 0600: "clean", while the server refused
  that session's changes. Run as another user than the root's owner, it now reports each
  entry of ``sessions/`` and ``.trash/`` that is not the owner's (``wrong-owner``);
- (beside the wrong user) a stamp made immutable (``chattr +i``), then ``app data restamp``:
  refused (74), naming only the temporary file the stamp is written to; a refused rename is
  now named by both its paths;
- a root such a command had already left so (``.tmp/`` and ``audit.jsonl`` another user's,
  the rest the owner's): the server started and refused every write, and ``app doctor`` said
  ok.

What changed: every writer (``open_root`` with ``write=True``, and ``restamp``) refuses,
before it makes anything, to run as another effective user than the data root's owner
(``data_root_owner``, exit 78, which the unit's ``RestartPreventExitStatus=`` keeps from a
restart loop), naming the owner and this process's user by name and uid, why, and the
``sudo -u <owner> <the command as run>`` that resolves it (or the ``chown -R`` that hands
the root over, if this user is meant to run the app). Readers (``status``, ``sessions
list``, ``data check``) create nothing and still run as root. Every writer's open and ``app
doctor`` also refuse a root whose own entries (lock file, stamp, audit log, ``sessions/``,
``.trash/``, ``.tmp/``) are not all its owner's (``data_root_state``, 78), naming each and
the ``chown -R`` that gives them back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_server_e2e import app_env, run_app

from app.storage import open_storage

NOBODY = 65534


def _owned_files(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(root)): (path.lstat().st_uid, path.lstat().st_ino)
        for path in sorted(root.rglob("*"))
    }


@pytest.fixture
def service_root(tmp_path: Path, app_config: Any) -> Path:
    """A root of the run's sandbox as the service user left it: a session with a file, a
    deleted file in the trash, the audit log rotated away and ``.tmp/`` gone, all of it
    given to user 65534 (the service's user here)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the root is given to another user with chown")
    with open_storage(app_config, writer=True) as store:
        sid = store.create_session("kept")["id"]
        store.put_file(sid, "a.txt", b"one")
        store.put_file(sid, "b.txt", b"two")
        store.delete_file(sid, "b.txt")
    root = tmp_path / "root"
    shutil.copytree(app_config.data_root, root, symlinks=True)
    (root / ".server.lock").unlink()
    (root / "audit.jsonl").rename(root / "audit.jsonl.1")  # logrotate's move
    shutil.rmtree(root / ".tmp")
    (tmp_path / "sid").write_text(sid)
    for path in [root, *root.rglob("*")]:
        os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
    return root


def test_a_maintenance_command_run_as_root_on_the_service_user_s_root_is_refused(
    service_root: Path,
) -> None:
    root = service_root
    sid = (root.parent / "sid").read_text()
    before = _owned_files(root)
    env = app_env(root)
    for command in (
        ("sessions", "restore", sid, "--file", "b.txt"),
        ("data", "check", "--repair"),
        ("data", "empty-trash", "--older-than", "0m"),
        ("data", "restamp", "--from", "production", "--yes-i-mean-it"),
        ("serve", "--port", "0"),
    ):
        refused = run_app(*command, env=env)
        said = " ".join(refused.stderr.split())
        assert refused.returncode == 78, (command, refused.stdout, refused.stderr)
        assert "Traceback" not in refused.stderr
        assert f"data root {root} belongs to user 'nobody' (uid {NOBODY})" in said, said
        assert "this process runs as user 'root' (uid 0)" in said
        assert "Nothing was changed" in said
        # With what chose the root, which sudo's reset environment drops (red team 57).
        assert "`sudo -u nobody env ENV_FOR_DYNACONF=testing " in said, said
        assert f" {sys.executable} -m app {' '.join(command)}`" in said, said
        assert _owned_files(root) == before, command  # nothing made, nothing moved
    # Readers make nothing: root may still look.
    for command in (("status",), ("data", "check")):
        looked = run_app(*command, env=env)
        assert looked.returncode == 0, (command, looked.stdout, looked.stderr)
    assert _owned_files(root) == before


def test_a_third_user_is_told_to_run_as_the_owner_not_to_chown_the_lock_file(
    service_root: Path,
) -> None:
    # A user that cannot write the root (here uid 1234, with no name, given only the
    # capability to read and search, so that it can reach the run's sandbox and Python):
    # it was refused by the lock file, told to `chmod 600` and `chown` a file whose owner
    # was right.
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    root = service_root
    before = _owned_files(root)
    as_third = [
        "setpriv", "--reuid=1234", "--regid=1234", "--clear-groups",
        "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
    ]  # fmt: skip
    done = subprocess.run(
        [*as_third, sys.executable, "-m", "app", "data", "check", "--repair"],
        env=app_env(root),
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    said = " ".join(done.stderr.split())
    if "Operation not permitted" in said and "setpriv" in said:
        pytest.skip(f"setpriv cannot give the capability here: {said}")
    assert done.returncode == 78, (done.stdout, done.stderr)
    assert f"belongs to user 'nobody' (uid {NOBODY})" in said, said
    assert "this process runs as uid 1234" in said
    assert "`sudo -u nobody env ENV_FOR_DYNACONF=testing " in said, said
    assert f" {sys.executable} -m app data check --repair`" in said
    assert "chmod 600" not in said
    assert _owned_files(root) == before


def test_a_root_left_with_another_user_s_files_by_an_earlier_command_is_named(
    service_root: Path,
) -> None:
    # What such a command left before it was refused (an earlier release, a restore made as
    # root): the root and its sessions the owner's, `.tmp/` and `audit.jsonl` another's. The
    # server started and answered every upload and delete 503 while /health said ok; doctor
    # said ok. Here the owner is root (the run's user) and the leftovers user 65534's.
    root = service_root
    for path in [root, *root.rglob("*")]:
        os.chown(path, 0, 0, follow_symlinks=False)
    (root / ".tmp").mkdir(mode=0o700)
    (root / "audit.jsonl").write_bytes(b"")
    for name in (".tmp", "audit.jsonl"):
        os.chown(root / name, NOBODY, NOBODY)
    before = _owned_files(root)
    env = app_env(root)
    for command in (("data", "check", "--repair"), ("doctor",)):
        refused = run_app(*command, env=env)
        said = " ".join(refused.stderr.split())
        assert refused.returncode == 78, (command, refused.stdout, refused.stderr)
        assert (
            f"data root {root}: audit.jsonl (owned by user 'nobody' (uid {NOBODY})), .tmp "
            f"(owned by user 'nobody' (uid {NOBODY})) are not owned by user 'root' (uid 0), "
            "who owns the root and runs the app"
        ) in said, said
        assert f"(`chown -R root: {root}`)" in said
    assert _owned_files(root) == before


def test_the_parents_a_first_start_makes_under_umask_000_are_not_writable_by_others(
    tmp_path: Path,
) -> None:
    # A root whose parents are missing (`data_root = "/srv/app/data/development"` on a new
    # host), first opened under `umask 000` (a unit's `UMask=0000`): the root was 0700, but
    # its parents were made 0777, so any user could move the root aside (`mv`), and the next
    # start made a new, empty root in its place.
    root = tmp_path / "srv" / "app" / "root"
    opened = (
        "from app.config import load\n"
        "from app.dataroot import open_root\n"
        "open_root(load()).close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", opened],
        env=app_env(root),
        capture_output=True,
        text=True,
        check=False,
        umask=0,
    )
    assert done.returncode == 0, done.stderr
    assert oct(root.stat().st_mode & 0o777) == "0o700"
    for parent in (tmp_path / "srv", tmp_path / "srv" / "app"):
        assert oct(parent.stat().st_mode & 0o777) == "0o755", parent


def test_a_check_run_as_root_names_the_files_that_are_not_the_owner_s(
    service_root: Path,
) -> None:
    # A file's record a restore run as root had left root's, mode 0600, deep in a session:
    # the server, as the owner, could neither read nor replace it. `sudo app data check`,
    # which the operator runs then, reads everything and said "clean".
    root = service_root
    sid = (root.parent / "sid").read_text()
    record = root / "sessions" / sid / "records" / "a.txt"
    os.chown(record, 0, 0)
    done = run_app("data", "check", env=app_env(root))
    said = " ".join(done.stdout.split())
    assert done.returncode == 65, (done.stdout, done.stderr)
    assert (
        f"wrong-owner sessions/{sid}/records/a.txt: owned by user 'root' (uid 0), not by user "
        f"'nobody' (uid {NOBODY}), who owns the data root and runs the app"
    ) in said, said
    assert f"`chown -R nobody: {root}`" in said


def test_a_rename_refused_names_the_file_it_would_replace(app_config: Any, tmp_path: Path) -> None:
    # `chattr +i .app-profile.json` (a hardening script's freeze of a file that "never
    # changes"), then the restamp the stamp's refusal names: refused, rightly (74, nothing
    # changed), but the message named only the temporary file the stamp is written to.
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("chattr +i takes root")
    with open_storage(app_config, writer=True):
        pass
    root = tmp_path / "copy"
    shutil.copytree(app_config.data_root, root, symlinks=True)
    (root / ".server.lock").unlink()
    stamp = root / ".app-profile.json"
    stamp.write_text(stamp.read_text().replace('"testing"', '"development"'))
    if subprocess.run(["chattr", "+i", str(stamp)], check=False).returncode != 0:
        pytest.skip("this filesystem keeps no attributes (chattr +i failed)")
    try:
        refused = run_app("data", "restamp", "--from", "development", env=app_env(root))
    finally:
        subprocess.run(["chattr", "-i", str(stamp)], check=True)
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 74, (refused.stdout, refused.stderr)
    assert f"cannot run `app data restamp` (moving {root / '.tmp'}/write-" in said, said
    assert f".part to {stamp}): the data root's filesystem refused it" in said
    assert "nothing was changed" in said and "`chattr -i -a`" in said
    assert '"development"' in stamp.read_text()
