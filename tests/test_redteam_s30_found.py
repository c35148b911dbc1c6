"""Red team 30: what the randomized history (tests/test_redteam_s30_history.py) found, each
replayed on its own, against real processes and a real data root.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import forked_app
import pytest

from app import config as appconfig
from app.storage import Storage, open_storage

#: A session read (as a page does, and GET /sessions/<id>) while a delete moves it to the
#: trash between its session.json and its records: the delete runs in another thread at the
#: read's scan of records/ (an audit hook, in a process of its own: hooks stay for good).
_READ_ACROSS_A_DELETE = """
import json, os, sys, threading
from app.config import load
from app.errors import SessionNotFoundError
from app.storage import Storage, open_storage

root, session_id, how = sys.argv[1:]
config = load("testing", environ={**os.environ, "APP_DATA_ROOT": root})
store = open_storage(config, writer=True, kind="tests", wanted="read across a delete")
moved = []


def delete_at_the_scan(event, args):
    if event == "os.scandir" and os.fsdecode(args[0]).endswith("/records") and not moved:
        moved.append(True)
        deleting = threading.Thread(target=store.delete_session, args=(session_id,))
        deleting.start()
        deleting.join()


sys.addaudithook(delete_at_the_scan)
try:
    if how == "page":
        shown = [s["files"] for s in store.list_sessions(limit=10).items]
    else:
        shown = [store.get_session(session_id)["files"]]
except SessionNotFoundError:
    shown = []
print(json.dumps({"moved": bool(moved), "shown": shown}))
"""


@pytest.mark.parametrize("how", ["page", "get"])
def test_a_session_read_while_it_is_deleted_is_shown_whole_or_not_at_all(
    tmp_path: Path, how: str
) -> None:
    # Found by the history: a page of GET /sessions showed a session with no files while
    # a DELETE of it ran, a state it never had (it held a.txt until it went, whole).
    config = appconfig.load("testing", environ={**os.environ, "APP_DATA_ROOT": str(tmp_path)})
    with open_storage(config, writer=True, kind="tests", wanted="set up") as store:
        session_id = store.create_session("s")["id"]
        store.put_file(session_id, "a.txt", b"kept until the session went")
    log = tmp_path.parent / f"{how}.log"
    child = forked_app.python_c(_READ_ACROSS_A_DELETE, [str(tmp_path), session_id, how], log)
    assert child.wait() == 0, log.read_text()
    answer = json.loads(log.read_text().splitlines()[-1])
    assert answer["moved"], answer
    for files in answer["shown"]:
        assert [f["name"] for f in files] == ["a.txt"], answer


#: A file's delete, in a process of its own that SIGKILLs itself just after the commit (the
#: record unlinked and synced), at the move of the deleted bytes into their trash entry.
_DELETE_KILLED_AFTER_ITS_COMMIT = """
import os, signal, sys
from app.config import load
from app.storage import Storage, open_storage

root, session_id = sys.argv[1:]
config = load("testing", environ={**os.environ, "APP_DATA_ROOT": root})
store = open_storage(config, writer=True, kind="tests", wanted="delete a file")


def killed_before_the_bytes_move(event, args):
    if event == "os.rename" and "/.trash/" in os.fsdecode(args[1]):
        os.kill(os.getpid(), signal.SIGKILL)


sys.addaudithook(killed_before_the_bytes_move)
store.delete_file(session_id, "a.txt")
"""


def killed_after_a_delete_committed(tmp_path: Path) -> tuple[appconfig.Config, str]:
    """A root whose a.txt (version 2, version 1 replaced before it) was deleted by a process
    killed after the delete's commit, before its bytes moved into their trash entry."""
    env = {**os.environ, "APP_DATA_ROOT": str(tmp_path / "root")}
    config = appconfig.load("testing", environ=env)
    with open_storage(config, writer=True, kind="tests", wanted="set up") as store:
        session_id = store.create_session("s")["id"]
        store.put_file(session_id, "a.txt", b"version 1")
        store.put_file(session_id, "a.txt", b"version 2", replace=True)
    log = tmp_path / "killed.log"
    child = forked_app.python_c(
        _DELETE_KILLED_AFTER_ITS_COMMIT, [str(config.data_root), session_id], log
    )
    assert child.wait() == -9, log.read_text()
    return config, session_id


def test_a_restore_right_after_a_crash_in_a_delete_brings_back_the_deleted_version(
    tmp_path: Path,
) -> None:
    # Found while modelling the history's restores: `app sessions restore --file`, run after a
    # crash and before any start-up (stop, restore, start, as the how-to says), skipped the
    # newest trash entry, still waiting for its bytes, and brought back the version before: a
    # state that never was, while the deleted version then went to the trash unasked.
    config, session_id = killed_after_a_delete_committed(tmp_path)
    env = {**os.environ, "APP_DATA_ROOT": str(config.data_root)}
    done = forked_app.run(env, ["sessions", "restore", session_id, "--file", "a.txt"])
    assert done.returncode == 0, done.stdout + done.stderr
    with open_storage(config, writer=True, kind="tests", wanted="read it back") as store:
        assert_the_deleted_version_is_back(store, session_id)


def assert_the_deleted_version_is_back(store: Storage, session_id: str) -> None:
    """a.txt of `killed_after_a_delete_committed` restored: the version its delete took
    (2), a clean root, and the version replaced before it still in the trash, whole."""
    restored, entry = store.open_file(session_id, "a.txt")
    with restored:
        assert restored.read() == b"version 2", entry
    assert store.check(repair=False).findings == []
    [kept] = store.list_trash()
    assert (kept.file, kept.reason) == ("a.txt", "replace")
    assert (kept.path / "a.txt").read_bytes() == b"version 1"
