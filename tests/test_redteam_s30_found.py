"""Red team 30: what the randomized history (tests/test_redteam_s30_history.py) found, each
replayed on its own, against real processes and a real data root.
"""

from __future__ import annotations

import hashlib
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


#: An upload's commit and a file's restore, each with another file put (`mv`, as a process
#: outside the app would) at the name the app renames into blobs/, just before that rename:
#: the moment after the app judged the bytes (received, hashed) and before it moves them.
_MOVED_AFTER_ITS_CHECK = """
import json, os, sys
from app.config import load
from app.errors import AppError
from app.storage import open_storage

root = sys.argv[1]
config = load("testing", environ={**os.environ, "APP_DATA_ROOT": root})
store = open_storage(config, writer=True, kind="tests", wanted="move after a check")
session_id = store.create_session("s")["id"]
store.put_file(session_id, "r.txt", b"acknowledged")
store.delete_file(session_id, "r.txt")
armed = []


def swap_at_the_move(event, args):
    if event == "os.rename" and armed == ["create"] and str(args[0]).startswith(".new-"):
        armed.clear()  # the staged session.json, before its directory's rename
        with open(root + "/other.json", "w") as other:
            other.write('{"garbage": true}')
        os.replace(root + "/other.json", f"{root}/sessions/{args[0]}/session.json")
        return
    into = "/records/" if armed == ["record"] else "/blobs/"
    if event == "os.rename" and armed and into in os.fsdecode(args[1]):
        source = os.fsdecode(args[0])
        how = armed.pop()
        if how == "in place":  # the same inode and size, in the app's own clock tick
            with open(source, "r+b") as same:
                same.write(b"other bytes!")  # as many as b"acknowledged"
            return
        with open(source + ".other", "wb") as other:
            other.write(b"other bytes!")
        os.replace(source + ".other", source)


def written_while_streamed():
    # Between two chunks, as `dd conv=notrunc` would: the size stays as received, and the
    # app's next write sets the modification time. Chunks as large as a server's, which
    # go past the file object's buffer, and 2 MiB in all: read back on a thread of its own.
    with store.begin_upload(session_id, "w.txt") as upload:
        upload.write(b"a" * 2**20)
        with open(upload.temp_path, "r+b") as same:
            same.write(b"other!")
        upload.write(b"b" * 2**20)
        upload.commit()


sys.addaudithook(swap_at_the_move)
said = {"session": session_id}
for what, change, how in (
    ("upload", lambda: store.put_file(session_id, "u.txt", b"acknowledged"), "moved"),
    ("restore", lambda: store.restore(session_id, file="r.txt"), "moved"),
    ("in place", lambda: store.put_file(session_id, "p.txt", b"acknowledged"), "in place"),
    ("streamed", written_while_streamed, ""),
    ("record", lambda: store.put_file(session_id, "m.txt", b"acknowledged"), "record"),
    ("create", lambda: said.update(made=store.create_session("mine")["id"]), "create"),
):
    armed[:] = [how] if how else []
    try:
        change()
        said[what] = "done"
    except AppError as error:
        said[what] = str(error)
said["files"] = [f["name"] for f in store.get_session(session_id)["files"]]
with store.open_file(session_id, "m.txt")[0] as served:
    said["m.txt"] = served.read().decode()
said["mine"] = store.get_session(said["made"])["title"]
said["trash"] = [e.name for e in store.trash.entries()]
said["findings"] = [f.problem for f in store.check(repair=False, thorough=True).findings]
print(json.dumps(said))
"""


def sha256(data: bytes) -> str:
    """The SHA-256 of ``data``, in hex."""
    return hashlib.sha256(data).hexdigest()


def test_bytes_put_at_their_name_between_the_app_s_check_and_its_move_are_never_acknowledged(
    tmp_path: Path,
) -> None:
    # Broke (red team 75 on integrity, round 2): the upload was acknowledged with the SHA-256
    # of the bytes received and the restore answered "restored", each of the other bytes.
    log = tmp_path / "moved.log"
    child = forked_app.python_c(_MOVED_AFTER_ITS_CHECK, [str(tmp_path / "root")], log)
    assert child.wait() == 0, log.read_text()
    said = json.loads(log.read_text().splitlines()[-1])
    session_id, entry = said["session"], said["trash"][-1:]
    assert said["upload"] == (
        f"cannot store file 'u.txt' of session {session_id}: its temporary file in the data "
        "root's .tmp/ is another file, put at its name (cut, replaced or written to from "
        "outside the app while the upload was written), so nothing was acknowledged and the "
        "session is unchanged. Send the file again; an operator finds what writes in the data "
        "root's .tmp/ (a clean-up job, `fuser -v`) and stops it"
    )
    assert said["restore"] == (
        f"cannot restore file 'r.txt' of session {session_id}: its newest copy in the "
        f"trash, entry {''.join(entry)}, was changed while it was restored: what was moved "
        "is another file, put at its name; run the restore again once that is done "
        "(changed from outside the app; `app data check` reports it as file-damaged), "
        "nothing was changed. Put the bytes back into that entry as 'r.txt' from a backup "
        "(their SHA-256 is in its trash.json); no other copy of it is in the trash"
    )
    # Broke (red team 76 on integrity): written to in place while the body streamed, the
    # upload was acknowledged with the SHA-256 of the bytes received, the disk holding others.
    sent = b"a" * 2**20 + b"b" * 2**20
    assert said["streamed"] == (
        f"cannot store file 'w.txt' of session {session_id}: its temporary file in the data "
        "root's .tmp/ holds other bytes than were received (their SHA-256 is "
        f"{sha256(b'other!' + sent[6:])}, that of the bytes received {sha256(sent)}) "
        "(cut, replaced or written to from outside the app while the upload was written), "
        "so nothing was acknowledged and the session is unchanged. Send the file again; an "
        "operator finds what writes in the data root's .tmp/ (a clean-up job, `fuser -v`) "
        "and stops it"
    )
    # Written in place after the app's look, in the tick of its last write: the time the
    # look sealed moves.
    assert said["in place"] == said["upload"].replace("'u.txt'", "'p.txt'").replace(
        "is another file, put at its name", "was written to"
    )
    # Broke (red team 76 on integrity): another file put at a record's temporary name went
    # in its place, the PUT acknowledged; the record is written again.
    assert said["record"] == "done" and said["m.txt"] == "acknowledged"
    # The same of a new session's session.json, staged in sessions/.new-<id>/.
    assert said["create"] == "done" and said["mine"] == "mine"
    # Nothing acknowledged of the other bytes; the copy the restore found changed is in its
    # entry, reported as what it is.
    assert said["files"] == ["m.txt"] and len(said["trash"]) == 1
    assert said["findings"] == ["file-damaged"]
