"""Red team 55 on integrity: what the command line tells an operator to send a live server.

What broke:

* ``app data empty-trash --older-than AGE`` beside a live server is refused (75: the server
  holds the data root) with a hint: the ``curl`` that asks the server to empty its trash
  itself, ``POST /trash/empty?older_than=SECONDS``. The hint cut the age to whole seconds
  (``int()``): ``--older-than 0.5s`` became ``older_than=0``, which empties every entry, the
  ones deleted in the last half second the operator asked to keep too, and ``0.99m`` became
  59 s where 59.4 was asked. The hint now gives the age exactly, as the server reads it
  (``app.cli._seconds_text``), so the command it names removes no entry the operator asked
  to keep.
* ``app sessions restore ID --file NAME`` of a file deleted with its session (it has no trash
  entry of its own: it is in the session's) was refused "no file NAME of session ID in the
  trash; `app sessions list --trash` shows what can be restored", which lists no entry for it
  either: an operator told the bytes are gone, where the session's restore brings them back.
  The local store looked for the file's own entry before it looked at the session (the
  remote backend looks at the session first). It now names the session's entry and its
  restore, as it did for a file with an entry of its own (red team 45).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import timedelta

import forked_app
import httpx
import pytest
from redteam_s19_http import one_server

from app.cli import _seconds_text
from app.errors import SessionNotFoundError
from app.storage import Storage
from app.testing import LiveServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with one_server(tmp_path_factory) as live:
        yield live


def _hinted_query(server: LiveServer, age: str) -> str:
    """The query string `app data empty-trash --older-than AGE` tells the operator to send."""
    env = {**os.environ, "APP_DATA_ROOT": str(server.data_root)}
    refused = forked_app.run(env, ["data", "empty-trash", "--older-than", age])
    assert refused.returncode == 75, refused.stderr
    found = re.search(r'"(http://[^"]+)/trash/empty(\?[^"]*)?"', refused.stderr)
    assert found is not None, refused.stderr
    assert found.group(1) == server.url
    return found.group(2) or ""


def test_the_hint_to_empty_a_live_servers_trash_keeps_what_the_age_keeps(
    server: LiveServer,
) -> None:
    # --older-than 0.99m was hinted as older_than=59 (0.5s as older_than=0: every entry).
    query = _hinted_query(server, "0.99m")
    assert query == "?older_than=59.4"
    assert [_seconds_text(timedelta(seconds=s)) for s in (0.5, 129600, 0.000001, 0)] == [
        "0.5",
        "129600",
        "0.000001",
        "0",
    ]
    # The server reads the hinted age as given (a point and digits: http-api.md's numbers),
    # and keeps an entry younger than it.
    session = httpx.post(f"{server.url}/sessions", json={}, headers=server.headers).json()["id"]
    deleted = httpx.delete(f"{server.url}/sessions/{session}", headers=server.headers)
    assert deleted.status_code == 200, deleted.text
    emptied = httpx.post(f"{server.url}/trash/empty{query}", headers=server.headers)
    assert emptied.status_code == 200, emptied.text
    assert deleted.json()["trash"] not in emptied.json()["entries"]


def test_a_file_deleted_with_its_session_is_named_in_the_sessions_entry(
    app_store: Storage,
) -> None:
    session = app_store.create_session(title="kept")["id"]
    app_store.put_file(session, "a.txt", b"a")
    app_store.put_file(session, "b.txt", b"b")
    app_store.delete_file(session, "a.txt")
    entry = app_store.delete_session(session).name
    for name in ("b.txt", "a.txt"):  # b.txt went with the session, a.txt has an entry too
        with pytest.raises(SessionNotFoundError) as refused:
            app_store.restore(session, file=name)
        # Before the fix, of b.txt: "no file 'b.txt' of session ... in the trash".
        assert str(refused.value) == (
            f"no session {session!r} in sessions: it is in the trash (entry {entry}), and a "
            "file is restored into its session; nothing was changed. `app sessions restore "
            f"{session}` brings the session back, with the files it held when it was deleted; "
            "then restore the file, if it is not among them"
        )
        assert refused.value.exit_code == 66
    app_store.restore(session)  # as it says: b.txt comes back with it, then a.txt
    app_store.restore(session, file="a.txt")
    files = app_store.get_session(session)["files"]
    assert sorted(f["name"] for f in files) == ["a.txt", "b.txt"]
