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
from app.storage import open_storage

#: A session read (as a page does, and GET /sessions/<id>) while a delete moves it to the
#: trash between its session.json and its records: the delete runs in another thread at the
#: read's scan of records/ (an audit hook, in a process of its own: hooks stay for good).
_READ_ACROSS_A_DELETE = """
import json, os, sys, threading
from app.config import load
from app.errors import SessionNotFoundError
from app.storage import open_storage

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
