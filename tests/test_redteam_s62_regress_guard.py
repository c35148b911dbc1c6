"""Red team 62 on regress, the guard and operations side (branch rt-regress18): the merges of
red team 62 on the guard (a root shown by a bind mount from another root's directory,
``remove_tree`` never crossing a mount) and on operations (every remedy run as written).

What broke:

- a refusal of a root held by a maintenance command or a test run named ``flock -s
  <root>/.server.lock true`` as the way to wait for it (red team 62 on operations), also
  where the holder's lock is no longer the file at that path: the lock file deleted, moved
  (``mv .server.lock .server.lock.old``, as one sets a stale pid file aside) or mounted over
  while it held it, which red team 20, 46 and 60 refuse, naming the holder. The refused
  command had locked a new file at the path, so that ``flock`` returned at once beside the
  running holder, and ``flock -s ... true && app data purge``, run as written, was refused
  again. `app.errors.DataRootInUseError.lock_elsewhere` (set by `app.lock.RootLock` where it
  found such a holder) now names ``tail --pid=<pid> -f /dev/null`` instead, which returns
  once the holder exits;
- a stopped data root whose stamp was lost (deleted by hand, a restore that skipped it)
  kept its empty ``.server.lock``, which red team 59 on regress passes over as another
  program's file: red team 62's refusal of a root inside another one, by its path or through
  a bind mount of the other root's ``.trash/``, found no root above, and a testing or
  development root there was stamped and written into the other root. A directory above
  with no stamp now counts as a data root where its lock file is a root's, or lies beside
  the root's own ``sessions/`` and ``.trash/`` directories (`app.dataroot._a_root_s`);
- red team 62 on operations gives every `app ...` between backticks of a refusal or a log
  line the ``--profile`` the command was given, and did so inside the names they quote: a
  file named "`app status`" was reported, and logged by ``app --profile ... serve``, as
  "`app --profile testing status`", a file that is not there. The values an error quotes
  (`app.errors.quoted_values`) and those given to a log line's format are left as given.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import forked_app
import pytest
from test_redteam_s62_ops import held_by_another

from app.config import load
from app.errors import AppError, DataRootInUseError
from app.lock import RootLock
from app.storage import open_storage


def test_a_holder_whose_lock_file_was_deleted_is_waited_for_by_its_pid(
    app_config: Any, tmp_path: Path
) -> None:
    """``rm <root>/.server.lock`` under a maintenance command: the refusal named ``flock -s
    <root>/.server.lock true``, which returned at once (a new file, locked by nobody), the
    holder still running. It names a wait on the holder's pid now."""
    if shutil.which("tail") is None:
        pytest.skip("needs tail(1), which the refusal names")
    root = app_config.data_root
    with held_by_another(tmp_path) as holder:
        (root / ".server.lock").unlink()
        # As `app data purge` takes it outside a test run (a root of the run's own sandbox
        # skips the look through /proc: only the run's processes hold it).
        newcomer = RootLock(root, kind="maintenance", profile="testing")
        with pytest.raises(DataRootInUseError) as refused:
            newcomer.acquire("purge every session", timeout=0)
        assert not newcomer.held
    message = " ".join(str(refused.value).split())
    assert "which was deleted while it held it" in message, message
    # Before the fix: "(`flock -s <root>/.server.lock true` returns once it lets go)".
    assert "flock -s" not in message, message
    assert (
        f"wait for it to finish (`tail --pid={holder.pid} -f /dev/null` returns once it "
        "exits: its lock is not the file at that path now, so a flock there would not wait "
        "for it) and retry" in message
    ), message
    (wait,) = re.findall(r"`(tail --pid=\d+ -f /dev/null)`", message)
    assert holder.wait() == 0
    assert subprocess.run(["sh", "-c", wait], check=False).returncode == 0


@pytest.mark.app_profile("production")
def test_a_root_inside_a_stopped_root_that_lost_its_stamp_is_refused(tmp_path: Path) -> None:
    """A testing root at the ``.trash/`` of a stopped root whose stamp was deleted, by its
    path, and (as root) through a bind mount of it: opened and stamped before the fix."""
    # A root no settings of the run name (the run does not protect it), stopped, its stamp
    # deleted: its lock file is empty, as every holder leaves it.
    other = tmp_path / "elsewhere" / "production"
    made = dataclasses.replace(load("production", serving=False), data_root=other)
    with open_storage(made, writer=True) as store:
        store.create_session("a review", {})
    (other / ".app-profile.json").unlink()
    assert (other / ".server.lock").read_bytes() == b""
    point = tmp_path / "testing-root"
    point.mkdir()
    said: list[list[str]] = []

    def attempt(where: Path) -> None:
        testing = dataclasses.replace(load(serving=False), data_root=where)
        try:
            with open_storage(testing, writer=True):
                said.append(["opened"])
        except AppError as error:
            said.append([type(error).__name__, " ".join(str(error).split())])

    attempt(other / ".trash")
    if os.geteuid() == 0 and shutil.which("mount") is not None:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # a mount namespace of its own: nothing outlives it
            try:
                os.close(read)
                said.clear()
                if ctypes.CDLL(None, use_errno=True).unshare(0x00020000) != 0:  # CLONE_NEWNS
                    raise OSError(ctypes.get_errno(), "unshare")
                for argv in (["--make-rprivate", "/"], ["--bind", f"{other}/.trash", point]):
                    subprocess.run(["mount", *argv], check=True)
                attempt(point)
            finally:
                os.write(write, json.dumps(said).encode())
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as output:
            said.extend(json.loads(output.read()))
        os.waitpid(pid, 0)
    shown = json.dumps(said, indent=1)
    # Before the fix: opened, testing's stamp, lock, audit log and sessions/ in its .trash/.
    assert sorted(p.name for p in (other / ".trash").iterdir()) == [], shown
    assert [kind for kind, *_ in said] == ["DataRootStateError"] * len(said), shown
    assert said[0][1].startswith(
        f"data root {other}/.trash: it lies inside data root {other} (it holds "
        f"{other}/.server.lock), and no data root may hold another; nothing was opened or "
        "changed; point data_root of profile 'testing' at a directory outside "
    ), shown
    if len(said) == 2:
        assert said[1][1].startswith(
            f"data root {point}: it lies inside data root {other} (it holds {other}/.server"
            f".lock): it is {other}/.trash, seen through a mount on its way (`findmnt -T "
            f"{point}` names it)"
        ), shown


def test_a_name_a_refusal_quotes_is_shown_as_it_was_given(app_config: Any) -> None:
    """A file's name (a session id, an entry's) that holds "`app ...`": the refusal of the
    command line gave it the ``--profile`` of the command (red team 62 on operations), so
    it named a file that is not there, and a ``--file`` copied from it was refused again."""
    with open_storage(load(), writer=True) as store:
        session = store.create_session("a review", {})["id"]
    name = "`app status`"
    refused = forked_app.run(
        dict(os.environ), ["--profile", "testing", "sessions", "restore", session, "--file", name]
    )
    assert refused.returncode != 0
    # Before the fix: "no file '`app --profile testing status`' of session ...".
    assert (
        f"no file {name!r} of session {session!r} in the trash; `app --profile testing "
        "sessions list --trash` shows what can be restored"
    ) in " ".join(refused.stderr.split()), refused.stderr


def test_a_name_a_log_line_is_given_is_logged_as_it_is() -> None:
    """The same in a server's log (`PrintableLines`, on every line a server logs): a file's
    name given to a log line's format was given the ``--profile`` of ``app --profile ...
    serve``, and so was an error's quoted name; the format's own `app ...` still is."""
    import logging

    from app.errors import PrintableLines, SessionNotFoundError, select_for_commands

    name = "`app status`"
    records = [
        logging.LogRecord(
            "app", logging.WARNING, __file__, 1, "file %r of session %s: `app data check` names "
            "it", (name, "0" * 32), None
        ),
        logging.LogRecord(
            "app", logging.WARNING, __file__, 1, "%s %s: %s",
            ("GET", f"/sessions/{name}", SessionNotFoundError(name)), None
        ),
    ]  # fmt: skip
    select_for_commands("testing")
    try:
        for record in records:
            PrintableLines().filter(record)
    finally:
        select_for_commands(None)
    # Before the fix: "file '`app --profile testing status`' of session ...".
    assert records[0].getMessage() == (
        f"file {name!r} of session {'0' * 32}: `app --profile testing data check` names it"
    )
    shown = records[1].getMessage()
    assert shown.startswith(f"GET /sessions/{name}: no session {name!r} "), shown
    assert "`app --profile testing sessions list` shows the sessions" in shown, shown
