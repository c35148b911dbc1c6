"""Red team 69 on regress, the second round (branch rt-regress69b): see
docs/explanation/attacks.md.

What broke: a session's delete on PostgreSQL counted every file row of the session as it
moved it to the trash (its live files and the versions already in the trash), and refused
the delete at its commit point where the count was no longer that. An `empty-trash` of
another replica (`DELETE /trash`, which takes no lock on a live session) deleting the
session's old trashed versions in between is not a trigger taking the session's files
away: the delete, which the user asked for, was refused as `write_not_stored` and rolled
back. Only the files the session's entry holds (its live ones) are counted now.

On the suite's PostgreSQL and SeaweedFS, one database.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import psycopg
from engines import PostgresEngine, S3Engine, new_blob_url
from test_remote_store import PROFILE, _read, _replica

#: The test's own hand on the interleaving (not a trigger that changes a row): a session's
#: delete waits at its commit point, once its every statement has run, until the test lets
#: it go. Deferred to the commit, as the app's check is made there.
_WAIT_AT_COMMIT = """
CREATE FUNCTION wait_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  PERFORM pg_advisory_xact_lock_shared(6902);
  RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER wait_at_commit AFTER UPDATE OF deleted_at ON app_sessions
  DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW WHEN (OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL)
  EXECUTE FUNCTION wait_at_commit();
"""


def test_a_session_s_delete_is_not_refused_for_an_empty_trash_of_its_old_versions(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    with postgres_engine.opened_database(PROFILE) as (name, url):
        opened = (url, new_blob_url(s3_engine))
        with _replica(s3_engine, opened) as deleting, _replica(s3_engine, opened) as emptying:
            session = deleting.create_session("kept", {})["id"]
            deleting.put_file(session, "a.txt", b"first")
            deleting.put_file(session, "a.txt", b"second, acknowledged", replace=True)
            with postgres_engine.connect(name) as admin:
                admin.execute(_WAIT_AT_COMMIT)  # type: ignore[arg-type]
            answers: list[object] = []

            def delete() -> None:
                try:
                    answers.append(deleting.delete_session(session))
                except Exception as error:  # the answer, whatever it is
                    answers.append(error)

            with psycopg.connect(url, autocommit=True) as hand:
                hand.execute("SELECT pg_advisory_lock(6902)")
                thread = threading.Thread(target=delete)
                thread.start()
                while (
                    thread.is_alive()
                    and not hand.execute(
                        "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
                    ).fetchone()
                ):
                    time.sleep(0.01)
                # Another replica's `DELETE /trash?older_than=...`, meanwhile: the version
                # the replace put in the trash goes for good, as asked.
                removed = emptying.empty_trash(older_than=timedelta(0), via="http")
                assert [(e.kind, e.file) for e in removed] == [("file", "a.txt")], removed
                hand.execute("SELECT pg_advisory_unlock(6902)")
                thread.join()
            # Before: WriteNotStoredError "... moved the session to the trash with 2 file
            # row(s), but once every trigger had run 1 were there", the delete rolled back.
            assert [type(answer).__name__ for answer in answers] == ["TrashEntry"], answers
            assert [e.session_id for e in emptying.list_trash()] == [session]
            emptying.restore(session)
            assert _read(emptying, session, "a.txt") == b"second, acknowledged"
