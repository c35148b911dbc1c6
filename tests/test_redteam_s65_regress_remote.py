"""Red team 65 on regress, the remote backend's durable commits (branch rt-regress65b): see
docs/explanation/attacks/.

What broke: red team 64 made each write commit with ``synchronous_commit`` on by setting it,
for the write's transaction, with its ``BEGIN``. A statement of the transaction run after
that can set it again: a trigger of another's after each row's insert (the kind the open
leaves alone, a change-data-capture or logging tool's) that says ``SET LOCAL
synchronous_commit = off`` (the advice for a cheap log write, which lasts to the
transaction's end) made the app's write commit with ``off``: answered before its WAL was
written, lost by a crash of the server.

What changed: the value is set where it counts, at the commit point, in the query that
already runs there (the UNLOGGED check and the replica's hold), after every statement of the
change and its triggers: no round trip more.
"""

from __future__ import annotations

from engines import PostgresEngine, S3Engine, new_blob_url
from test_remote_store import PROFILE, _replica
from test_rows66_remote import at_the_commit

# A logging trigger that makes its transaction's commit asynchronous (`SET LOCAL`, in a
# function: it lasts to the transaction's end), and an observer that records the value the
# commit is made with (`at_the_commit`, run by the COMMIT itself since session 66): of a
# session's delete, an update of its row.
_LOGGING = """
CREATE SCHEMA rt65;
CREATE TABLE rt65.seen (id serial, value text);
CREATE FUNCTION rt65.cheap_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SET LOCAL synchronous_commit = off;
    RETURN NULL;
END $$;
CREATE TRIGGER rt65_cheap_log AFTER INSERT OR UPDATE ON app_sessions FOR EACH ROW
    EXECUTE FUNCTION rt65.cheap_log();
CREATE FUNCTION rt65.seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rt65.seen (value) VALUES (current_setting('synchronous_commit'));
    RETURN NULL;
END $$;
""" + at_the_commit("rt65", "app_sessions", "UPDATE")


def test_a_write_commits_with_synchronous_commit_on_whatever_its_triggers_set(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    # Before: the session was committed with `off`, the trigger's.
    with postgres_engine.opened_database(PROFILE) as (name, url):
        with postgres_engine.connect(name) as admin:
            admin.execute(_LOGGING)  # type: ignore[arg-type]
        with _replica(s3_engine, (url, new_blob_url(s3_engine)), pool_size=1) as store:
            session_id = store.create_session("logged cheaply")["id"]
            store.delete_session(session_id)
        with postgres_engine.connect(name) as admin:
            seen = [v for (v,) in admin.execute("SELECT value FROM rt65.seen ORDER BY id")]
    assert seen == ["on"]
