"""Red team 71 on integrity (branch rt-integrity71): see docs/explanation/attacks.md.

What broke: a client's retry after a lost answer, with ``If-Match``. A file's ``DELETE``
with ``If-Match`` whose answer was lost (a cut connection, a proxy's timeout), sent again,
was answered 412 "... the session has no file 'a.txt' (deleted, or never uploaded); nothing
was changed. To create it, send the PUT without If-Match": its first try had deleted the
file, and the client was told that nothing had been done and to make the file again. A plain
``DELETE`` sent again names the trash entry (red team 69 on integrity); the conditional one
did not, nor did a ``PUT`` with ``If-Match`` of a file another client had deleted. A 412
that finds no file now names the file's newest trash entry where a delete put it there, and
the restore that brings it back, on both backends (the remote case runs in red team 69's
test on the suite's PostgreSQL and SeaweedFS, which calls `a_conditional_change_retried_is_
told_where_the_file_went`).
"""

from __future__ import annotations

import hashlib
from typing import Any


def _etag(data: bytes) -> str:
    return f'"{hashlib.sha256(data).hexdigest()}"'


def a_conditional_change_retried_is_told_where_the_file_went(client: Any) -> None:
    """A DELETE with If-Match sent again after its lost answer, and a PUT with If-Match of
    the file it deleted: each 412 names the entry and the restore; a name never used is
    answered as before."""
    sid = client.post("/sessions", json={"title": "retried, conditionally"}).json()["id"]
    path = f"/sessions/{sid}/files/my notes.txt"
    assert client.put(path, content=b"acknowledged").status_code == 201
    condition = {"If-Match": _etag(b"acknowledged")}
    first = client.delete(path, headers=condition)  # its answer lost
    assert first.status_code == 200, first.text
    entry = first.json()["trash"]
    restore = f"`app sessions restore {sid} --file 'my notes.txt'` brings it back"
    asked = (
        f"of file 'my notes.txt' in session {sid} refused: If-Match: {condition['If-Match']} "
        "asked for a version of it, and the session has no file 'my notes.txt': it was "
        f"deleted, and its newest version is in the trash (entry {entry}; "
    )
    # Before: 412 "... (deleted, or never uploaded); nothing was changed. To create it,
    # send the PUT without If-Match (with If-None-Match: * to create it only)".
    again = client.delete(path, headers=condition)
    assert again.status_code == 412, again.text
    assert again.json()["code"] == "precondition_failed"
    assert again.json()["message"] == (
        f"DELETE {asked}a DELETE sent again after its answer was lost finds it there, deleted "
        f"on its first try); nothing was changed. {restore}"
    )
    stale = client.put(path, content=b"another client's", headers=condition)
    assert stale.status_code == 412, stale.text
    assert stale.json()["message"] == (
        f"PUT {asked}a PUT with If-Match changes only a version that is there); nothing was "
        f"changed. {restore}; to create it anew, send the PUT without If-Match (with "
        "If-None-Match: * to create it only)"
    )
    # Nothing of either was kept: the trash holds the one version, the session no file.
    assert client.get(f"/sessions/{sid}/files").json()["items"] == []
    never = client.delete(f"/sessions/{sid}/files/never.txt", headers={"If-Match": "*"})
    assert never.status_code == 412, never.text
    assert never.json()["message"].endswith(
        "asked for a version of it, and the session has no file 'never.txt' (deleted, or "
        "never uploaded); nothing was changed. To create it, send the PUT without If-Match "
        "(with If-None-Match: * to create it only)"
    )


def test_a_conditional_change_retried_is_told_where_the_file_went(app_client: Any) -> None:
    a_conditional_change_retried_is_told_where_the_file_went(app_client)
