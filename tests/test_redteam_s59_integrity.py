"""Red team 59 on integrity (branch rt-integrity43): see docs/explanation/attacks/.

What broke: a session's restore (`app sessions restore ID`) was dated by nothing. Its
directory moves back from the trash whole, its times with it, so the restored session's
``updated_at`` was its last change before its delete: a session that came back read as
changed before it went, and a client that looks for the sessions changed since the newest
``updated_at`` it saw (the promise red teams 56 and 58 kept for every change of a session's
files) never saw it come back. PostgreSQL's restore left the row's ``updated_at`` as it was
too. What changed: the local restore sets the trashed session's ``records/`` time (made,
empty, for a session that never had a file), which its ``updated_at`` counts, to a moment
after its every change and its delete (`Sessions._date_restored`, since after the move); the remote
one sets the row's ``updated_at`` so in the restore's transaction
(`tests/test_remote_store.py`, `test_a_change_is_never_dated_before_the_sessions_last_change`).

And a change of a session's files was dated after its records and its ``records/``'s time
(red team 56, second round), not after the session's own time (session.json's
``updated_at``: its creation), which its ``updated_at`` counts. A session created with the
clock a day ahead, then stepped back, had its first upload dated a day before it was created,
and its ``updated_at`` did not move for that upload. The floor of a change now counts
session.json's time too (`Files._session_time`); PostgreSQL's already counted the row's.

And `app data check --repair` (every server's start-up) moves the record of a file whose
bytes were lost from outside the app into the trash (red team 48): a change of the session's
files, dated by nothing. With the clock behind the session's newest record, its entry was named
before the version it holds and the session's ``updated_at`` went back as the file went. It
is now dated as a delete is (after `Files.floor`, and ``records/``'s time set to it).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from app.config import Config
from app.storage import Storage
from app.store.records import content_sha256


def test_a_restored_session_is_dated_after_its_delete(app_store: Storage) -> None:
    store = app_store
    with_files = store.create_session("with files")["id"]
    store.put_file(with_files, "a.txt", b"a")
    never = store.create_session("never a file")["id"]
    purged = store.create_session("purged")["id"]
    store.put_file(purged, "p.txt", b"p")
    deletes = {with_files: store.delete_session, never: store.delete_session}
    for session_id, delete in deletes.items():
        before = store.get_session(session_id)["updated_at"]
        deleted = delete(session_id).deleted_at.isoformat(timespec="microseconds")
        back = store.restore(session_id)
        # Before: `back["updated_at"] == before`, a session changed before its delete.
        assert before < deleted < back["updated_at"], (before, deleted, back)
        assert store.get_session(session_id)["updated_at"] == back["updated_at"]
        listed = {s["id"]: s["updated_at"] for s in store.iter_all()}
        assert listed[session_id] == back["updated_at"]
    entries = {entry.session_id: entry for entry in store.purge()}
    back = store.restore(purged)
    assert entries[purged].deleted_at.isoformat(timespec="microseconds") < back["updated_at"]
    assert [f["name"] for f in back["files"]] == ["p.txt"]
    assert store.check().unresolved == []


def test_an_upload_to_a_session_created_before_the_clock_stepped_back_is_dated_after_it(
    app_store: Storage, app_config: Config
) -> None:
    store = app_store
    session_id = store.create_session("created a day ahead")["id"]
    # As the app wrote it with its clock a day ahead, since stepped back.
    meta = app_config.data_root / "sessions" / session_id / "session.json"
    ahead = (datetime.now(UTC) + timedelta(days=1)).isoformat(timespec="microseconds")
    created = {**json.loads(meta.read_text()), "created_at": ahead, "updated_at": ahead}
    created["content_sha256"] = content_sha256(created)  # as the app writes it
    meta.write_text(json.dumps(created))
    assert store.get_session(session_id)["updated_at"] == ahead
    first = store.put_file(session_id, "a.txt", b"a")
    # Before: dated now, a day before the session was created; its updated_at unmoved.
    assert first["uploaded_at"] > ahead, (first, ahead)
    assert store.get_session(session_id)["updated_at"] == first["uploaded_at"]
    gone = store.delete_file(session_id, "a.txt")
    assert gone.deleted_at > datetime.fromisoformat(first["uploaded_at"])
    # The repair of a file whose bytes were lost from outside the app: a change too.
    newest = store.put_file(session_id, "b.txt", b"b")
    records = meta.parent / "records"
    blob = json.loads((records / "b.txt").read_text())["blob"]
    (meta.parent / "blobs" / blob).unlink()
    seen = store.get_session(session_id)["updated_at"]
    assert [f.problem for f in store.check(repair=True).findings] == ["record-without-file"]
    (lost,) = [e for e in store.list_trash() if e.reason == "lost"]
    # Before: named by the trash alone, before b.txt was uploaded; updated_at went back.
    assert lost.deleted_at > datetime.fromisoformat(newest["uploaded_at"]), (lost, newest)
    assert store.get_session(session_id)["updated_at"] > seen
