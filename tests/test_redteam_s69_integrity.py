"""Red team 69 on integrity (branch rt-integrity69): see docs/explanation/attacks/.

What broke: on PostgreSQL, a trigger of another's after the update that moves a row to the
trash (the kind the open leaves alone: an archiving tool's that moves a trashed row into a
table of its own) took that row away. A replace was answered as saved, a file's or a
session's delete with its trash entry, each audited, and no entry held the version it
named; `app data check --repair` then deleted the objects as no row's. Red team 62 on
regress had an upload's new row read back once every trigger had run, red team 68 on
regress a restore's: every change that moves rows to the trash (a replace's old version, a
file's delete, a session's delete with its files, a purge), and the repair that keys an
earlier build's rows, now finds its rows once every trigger has run, and is refused,
rolled back, where they are not there.

And a file's `DELETE` whose answer was lost, sent again, was told 404 "has no file ...;
GET ... lists its files", as of a file that never was, where a session's names its trash
entry and the restore: a file's 404 now does the same, on both backends.

On the suite's PostgreSQL and SeaweedFS (one database for all of it: each costs its
creation), and on a data root.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from engines import PostgresEngine, S3Engine, new_blob_url
from starlette.testclient import TestClient
from test_redteam_s71_integrity import a_conditional_change_retried_is_told_where_the_file_went
from test_remote_store import PROFILE, _maintenance, _read, _replica

from app.config import Config
from app.remote.errors import WriteNotStoredError
from app.remote.store import RemoteStore
from app.server import create_app

#: An archiving tool's: what the app moves to the trash is copied into a table of its own
#: and deleted from the app's, by a trigger after the update (deferred to the commit, or not).
_ARCHIVE = """
CREATE TABLE archived_app_files AS SELECT * FROM app_files WITH NO DATA;
CREATE FUNCTION archive_file() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  INSERT INTO archived_app_files SELECT NEW.*;
  DELETE FROM app_files WHERE id = NEW.id;
  RETURN NULL; END $$;
CREATE TRIGGER archive_file AFTER UPDATE OF deleted_at ON app_files
  FOR EACH ROW WHEN (OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL)
  EXECUTE FUNCTION archive_file();
CREATE FUNCTION archive_files_of() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  INSERT INTO archived_app_files SELECT * FROM app_files WHERE session_id = NEW.id;
  DELETE FROM app_files WHERE session_id = NEW.id;
  RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER archive_files_of AFTER UPDATE OF deleted_at ON app_sessions
  DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW WHEN (OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL)
  EXECUTE FUNCTION archive_files_of();
"""

#: The same tool's trigger written "whenever a trashed row is touched": after any update.
_ARCHIVE_TOUCHED = """
DROP TRIGGER archive_file ON app_files;
DROP TRIGGER archive_files_of ON app_sessions;
CREATE TRIGGER archive_touched AFTER UPDATE ON app_files
  FOR EACH ROW WHEN (NEW.deleted_at IS NOT NULL) EXECUTE FUNCTION archive_file();
"""


def _refused(error: pytest.ExceptionInfo[WriteNotStoredError], what: str, table: str) -> None:
    message = error.value.message
    assert f"did not store {what}: its UPDATE of {table} " in message, message
    assert "nothing was changed (its transaction was rolled back)" in message, message
    assert f"WHERE tgrelid = '{table}'::regclass AND NOT tgisinternal" in message, message


def test_changes_whose_trashed_rows_a_trigger_takes_away_are_refused_and_keep_the_bytes(
    postgres_engine: PostgresEngine, s3_engine: S3Engine, app_config: Config
) -> None:
    with postgres_engine.opened_database(PROFILE) as (name, url):
        opened = (url, new_blob_url(s3_engine))
        with _replica(s3_engine, opened) as store:
            # Before any trigger: what the checks must not refuse, and the retried DELETE.
            a_session_s_delete_waiting_behind_a_change_of_its_files_counts_them_after_it(
                postgres_engine, name, url, store
            )
            headers = {"Authorization": f"Bearer {app_config.api_token}"}
            with TestClient(create_app(store, app_config), headers=headers) as client:
                trashed = _a_delete_retried_is_told_it_was_made(client)
                # And with If-Match (red team 71 on integrity).
                a_conditional_change_retried_is_told_where_the_file_went(client)
            session = store.create_session("kept", {})["id"]
            store.put_file(session, "a.txt", b"first, acknowledged")
            store.put_file(session, "b.txt", b"second, acknowledged")
            with postgres_engine.connect(name) as admin:
                admin.execute(_ARCHIVE)  # type: ignore[arg-type]
            # Before: 200, audited as replaced into a trash entry that never was; the trash
            # without it, the first version's object no row's.
            with pytest.raises(WriteNotStoredError) as refused:
                store.put_file(session, "a.txt", b"its replacement", replace=True)
            _refused(refused, f"the upload of 'a.txt' into session {session}", "app_files")
            assert "(gone, or back as it was)" in str(refused.value)
            # Before: answered with its trash entry, audited; the trash without it.
            with pytest.raises(WriteNotStoredError) as refused:
                store.delete_file(session, "b.txt")
            _refused(refused, f"the delete of 'b.txt' from session {session}", "app_files")
            # Before (the trigger deferred to the commit): the session in the trash without
            # its files, their objects no row's.
            with pytest.raises(WriteNotStoredError) as refused:
                store.delete_session(session)
            _refused(refused, f"the delete of session {session}", "app_sessions")
            assert "moved the session to the trash with 2 file row(s), but once every " in (
                str(refused.value)
            )
        with _maintenance(s3_engine, opened) as store:
            with pytest.raises(WriteNotStoredError) as refused:
                store.purge()
            _refused(refused, "the purge of every live session", "app_sessions")
            # The repair that deleted the objects no row named deletes none.
            store.check(repair=True)
            assert [f["name"] for f in store.get_session(session)["files"]] == ["a.txt", "b.txt"]
            assert _read(store, session, "a.txt") == b"first, acknowledged"
            assert _read(store, session, "b.txt") == b"second, acknowledged"
        with psycopg.connect(url) as conn:
            audited = [
                row[0] for row in conn.execute("SELECT operation FROM app_audit ORDER BY id")
            ]
            # Those of the session and the files deleted before the triggers (red team 71's
            # conditional delete too), no more.
            assert [op for op in audited if op.startswith(("trash-", "replace-", "purge"))] == [
                "trash-session",
                "trash-file",
                "trash-file",
            ], audited
            assert conn.execute("SELECT count(*) FROM archived_app_files").fetchone() == (0,)
        with postgres_engine.connect(name) as admin:
            # A database an earlier build left: not marked, its rows without keys.
            admin.execute("UPDATE app_stamp SET schema_version = 1, content_sha256_since = NULL")
            admin.execute("UPDATE app_files SET content_sha256 = NULL")
            admin.execute(_ARCHIVE_TOUCHED)  # type: ignore[arg-type]
        with _maintenance(s3_engine, opened) as store:
            # Before: the repair keyed the trashed row, the trigger took it away, and the
            # next repair deleted its object as no row's.
            with pytest.raises(WriteNotStoredError) as refused:
                store.check(repair=True)
            what = "the hashing of the sessions' rows written without content_sha256"
            _refused(refused, what, "app_files")
            files = [(e.session_id, e.file) for e in store.list_trash() if e.kind == "file"]
            assert files.count(trashed) == 1 and len(files) == 2, files  # and red team 71's
            store.restore(trashed[0], file=trashed[1])
            assert _read(store, *trashed) == b"acknowledged"


def a_session_s_delete_waiting_behind_a_change_of_its_files_counts_them_after_it(
    postgres_engine: PostgresEngine, name: str, url: str, store: RemoteStore
) -> None:
    """The check's count of a session's files is not taken before the delete waited for a
    change of them (an upload's commit): counted in the update's snapshot, taken before the
    wait, it missed the upload's row and refused the delete as one a trigger undid."""
    session = store.create_session("deleted", {})["id"]
    store.put_file(session, "a.txt", b"acknowledged")
    answers: list[object] = []

    def delete() -> None:
        try:
            answers.append(store.delete_session(session))
        except Exception as error:  # the answer, whatever it is
            answers.append(error)

    with postgres_engine.connect(name) as change:
        # What an upload's commit does first (`Database.change`), then its row.
        change.execute("BEGIN")
        change.execute("SELECT 1 FROM app_sessions WHERE id = %s FOR NO KEY UPDATE", (session,))
        deleting = threading.Thread(target=delete)
        deleting.start()
        with psycopg.connect(url, autocommit=True) as look:
            while (
                deleting.is_alive()
                and not look.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                ).fetchone()
            ):
                time.sleep(0.01)
        change.execute(
            "INSERT INTO app_files (session_id, name, blob, size, sha256, uploaded_at)"
            " SELECT session_id, 'b.txt', 'blobs/' || md5(name), size, sha256,"
            " uploaded_at FROM app_files WHERE session_id = %s",
            (session,),
        )
        change.execute("COMMIT")
        deleting.join()
    assert [type(answer).__name__ for answer in answers] == ["TrashEntry"], answers


def _a_delete_retried_is_told_it_was_made(client: Any) -> tuple[str, str]:
    """The session and the name of the file it deletes."""
    sid = client.post("/sessions", json={"title": "retried"}).json()["id"]
    path = f"/sessions/{sid}/files/my notes.txt"
    assert client.put(path, content=b"acknowledged").status_code == 201
    first = client.delete(path)  # its answer lost
    assert first.status_code == 200, first.text
    entry = first.json()["trash"]
    # Before: 404 "session ... has no file 'my notes.txt'; GET ... lists its files".
    for again in (client.delete(path), client.get(path)):
        assert again.status_code == 404, again.text
        assert again.json()["code"] == "file_not_found"
        assert again.json()["message"] == (
            f"session '{sid}' has no file 'my notes.txt': it was deleted, and its newest "
            f"version is in the trash (entry {entry}; a DELETE sent again after its answer was "
            f"lost finds it there, deleted on its first try). `app sessions restore {sid} "
            "--file 'my notes.txt'` brings it back; `app sessions list --trash` shows the trash"
        )
    never = client.delete(f"/sessions/{sid}/files/never.txt")
    assert never.json()["message"].endswith(f"has no file 'never.txt'; GET /sessions/{sid}/files "
                                            "lists its files")  # fmt: skip
    return sid, "my notes.txt"


def test_a_file_s_delete_sent_again_is_told_where_its_first_try_put_it(app_client: Any) -> None:
    _a_delete_retried_is_told_it_was_made(app_client)
