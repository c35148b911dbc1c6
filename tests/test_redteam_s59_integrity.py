"""Red team 59 on integrity (branch rt-integrity43): see docs/explanation/attacks.md.

What broke: a session's restore (`app sessions restore ID`) was dated by nothing. Its
directory moves back from the trash whole, its times with it, so the restored session's
``updated_at`` was its last change before its delete: a session that came back read as
changed before it went, and a client that looks for the sessions changed since the newest
``updated_at`` it saw (the promise red teams 56 and 58 kept for every change of a session's
files) never saw it come back. PostgreSQL's restore left the row's ``updated_at`` as it was
too. What changed: the local restore sets the trashed session's ``records/`` time (made,
empty, for a session that never had a file), which its ``updated_at`` counts, to a moment
after its every change and its delete, before the move (`Sessions._date_restore`); the remote
one sets the row's ``updated_at`` so in the restore's transaction
(`tests/test_remote_store.py`, `test_a_change_is_never_dated_before_the_sessions_last_change`).
"""

from __future__ import annotations

from app.storage import Storage


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
