"""Red team 71 on integrity (branch rt-integrity71): see docs/explanation/attacks/.

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

And a `PUT` with ``If-Match`` of a file an earlier build named (a no-break space), deleted
since, was 400 ``invalid_name``, the rule for new names checked before the condition, of a
name the file had kept for its whole life; it is the 412 above now (a data root's; the remote
backend never stored such a name).

And `app sessions restore ID --file NAME` run again after its output was lost (a dropped ssh
session) was refused, rightly, as the file is there, but told "has a file 'a.txt' again" and
to delete it and run `restore --entry` of the copy it named: an older version than the one
its first run had brought back. Where the audit log's newest change to the file is a
restore, the refusal says so now, with that restore's entry, and that nothing may need
doing (on PostgreSQL from `app_audit`, in `tests/test_remote_store.py`'s
`test_restore_a_session_and_a_file`, which calls `a_restore_run_again_is_told_it_may_be_made`).

Red team 71 on regress, round b (branch rt-regress71b): that refusal was never reached on a
data root by the commonest retry, the first run having taken the only copy ("no file ... in
the trash"), and a file there with no copy in the trash was told on PostgreSQL to have "that
copy back" by a PUT; both are cases of `a_restore_run_again_is_told_it_may_be_made` now.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote

import pytest
from test_redteam_s38_integrity import _first_builds_session

from app.errors import NotInTrashError, PreconditionFailedError, RestoreOverwriteError
from app.storage import IfMatch, Storage
from app.store import Store


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


def test_a_conditional_put_of_an_earlier_builds_name_deleted_since_is_412_not_a_bad_name(
    app_store: Store, app_client: Any
) -> None:
    nbsp = "report\u00a0final.pdf"
    session = _first_builds_session(app_store, {nbsp: b"no-break", "b.txt": b"b"})
    app_store.check(repair=True)  # migrated, as every start-up does
    condition = IfMatch.parse(_etag(b"no-break"))
    upload = app_store.begin_upload(session, nbsp, replace=True, if_match=condition)
    upload.write(b"the conditional replace that lost the race")
    entry = app_store.delete_file(session, nbsp)  # another client's, while the PUT streams
    # Before: InvalidNameError "... U+00A0 ...", at the commit and at a PUT's start alike.
    with pytest.raises(PreconditionFailedError) as refused:
        upload.commit()
    assert refused.value.current is None
    with pytest.raises(PreconditionFailedError):
        app_store.begin_upload(session, nbsp, replace=True, if_match=condition)
    again = app_client.put(
        f"/sessions/{session}/files/{quote(nbsp)}",
        content=b"x",
        headers={"If-Match": condition.header},
    )
    assert again.status_code == 412, again.text
    assert (
        f"it was deleted, and its newest version is in the trash (entry {entry.name};"
        in (again.json()["message"])
    )
    # A new file of that name is refused still, naming the character; nothing was stored.
    new = app_client.put(f"/sessions/{session}/files/{quote(nbsp)}", content=b"x")
    assert new.status_code == 400, new.text
    assert "U+00A0" in new.json()["message"]
    assert [f["name"] for f in app_store.list_files(session)] == ["b.txt"]


def a_restore_run_again_is_told_it_may_be_made(store: Storage) -> None:
    """A file's restore run twice: the second is refused naming the first's entry and time,
    and the copy it names is the older one; after another change, as before."""
    sid = store.create_session("restored twice")["id"]
    store.put_file(sid, "a.txt", b"first")
    store.put_file(sid, "a.txt", b"second, deleted", replace=True)
    store.delete_file(sid, "a.txt")
    taken = max(e.name for e in store.list_trash() if e.session_id == sid)
    older = min(e.name for e in store.list_trash() if e.session_id == sid)
    store.restore(sid, file="a.txt")  # its output lost
    with pytest.raises(RestoreOverwriteError) as again:
        store.restore(sid, file="a.txt")
    said = str(again.value)
    # Before: "... has a file 'a.txt' again; refusing to overwrite it with its copy in the
    # trash ... delete the current file ..., then run `app sessions restore ... --entry`" of
    # the first version, which the one brought back had replaced.
    assert said.startswith(
        f"session {sid!r} has a file 'a.txt', and the audit log's newest change to it is its "
        f"restore from trash entry {taken}, which may be an earlier run of this command whose "
        "output was lost: then nothing needs doing (`app sessions show` lists the file, with "
        f"its SHA-256). Refusing to overwrite it with the copy in trash entry {older}. "
    ), said
    assert again.value.restored == taken
    # Another change since: the restore is no longer the newest, and is not named.
    store.put_file(sid, "a.txt", b"third", replace=True)
    with pytest.raises(RestoreOverwriteError) as replaced:
        store.restore(sid, file="a.txt")
    assert replaced.value.restored is None
    assert str(replaced.value).startswith(f"session {sid!r} has a file 'a.txt' again;")
    # The commonest retry: the one copy in the trash taken by the first run. On a data root
    # it was "no file 'c.txt' ... in the trash; `app sessions list --trash` shows what can
    # be restored", of the file just brought back; on PostgreSQL, where no restore was the
    # log's newest change (a file never deleted), "has a file 'b.txt' again ... To have that
    # copy back, upload its bytes with a PUT", of no copy (red team 71 on regress, round b).
    store.put_file(sid, "c.txt", b"deleted once")
    only = store.delete_file(sid, "c.txt").name
    store.restore(sid, file="c.txt")  # its output lost
    with pytest.raises(RestoreOverwriteError) as once:
        store.restore(sid, file="c.txt")
    assert once.value.restored == only
    assert str(once.value) == (
        f"session {sid!r} has a file 'c.txt', and the audit log's newest change to it is its "
        f"restore from trash entry {only}, which may be an earlier run of this command whose "
        "output was lost: then nothing needs doing (`app sessions show` lists the file, with "
        "its SHA-256). Refusing to overwrite it with a copy in the trash: there is none left; "
        "nothing was changed"
    )
    store.put_file(sid, "b.txt", b"never deleted")
    with pytest.raises(RestoreOverwriteError) as never_deleted:
        store.restore(sid, file="b.txt")
    assert str(never_deleted.value) == (
        f"session {sid!r} has a file 'b.txt' (restored already, or never deleted), and the "
        f"trash holds no copy of it to restore; nothing was changed. `app sessions show {sid}` "
        "lists the file, with its SHA-256"
    )
    # A session's restore run again, and a file never deleted: the refusal `app sessions
    # restore` reads for "restored already" (`NotInTrashError`), in the same words on both
    # backends. Before, on PostgreSQL: a SessionNotFoundError, which the command passed on as
    # "no session ... in the trash; `app sessions list --trash` shows what can be restored",
    # and "no session '<id>/never' in the trash" of the file.
    store.delete_session(sid)
    store.restore(sid)
    with pytest.raises(NotInTrashError) as session_again:
        store.restore(sid)
    assert str(session_again.value) == (
        f"no session {sid!r} in the trash; `app sessions list --trash` shows what can be restored"
    )
    with pytest.raises(NotInTrashError) as never:
        store.restore(sid, file="never.txt")
    assert str(never.value) == (
        f"no file 'never.txt' of session {sid!r} in the trash; `app sessions list --trash` "
        "shows what can be restored"
    )


def test_a_restore_run_again_is_told_it_may_be_made(app_store: Store) -> None:
    a_restore_run_again_is_told_it_may_be_made(app_store)
