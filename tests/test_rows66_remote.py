"""Rows of the remote backend closed in session 66 (branch rows66): see
docs/explanation/attacks/, "Rows closed in session 66".

A session's row whose title or metadata changed in the database (a DBA's ``UPDATE``, a page
damaged on a cluster without ``data_checksums``) was served as what its create acknowledged,
where a data root's ``session.json`` so changed is refused (red team 65). The row now keeps
``content_sha256``, the local store's hash of the same values, compared on every read.
"""

from __future__ import annotations

import sys

import psycopg
import pytest
from engines import PostgresEngine, S3Engine, new_blob_url
from test_remote_store import PROFILE, _replica

from app.errors import RestoredUnreadableSessionError, UnreadableSessionError
from app.remote import pg
from app.remote.rows import CONTENT_CHANGED
from app.store.ids import new_session_id
from app.store.records import content_sha256

# Each a change made in the database to a session created as ("sent", {"n": 1}).
_EDITS = {
    "title": "UPDATE app_sessions SET title = 'sENT' WHERE id = %s",
    "metadata": """UPDATE app_sessions SET metadata = '{"n": 7}' WHERE id = %s""",
    "created_at": "UPDATE app_sessions SET created_at = created_at + interval '10 years'"
    " WHERE id = %s",
}


def _edit(url: str, statement: str, session_id: str) -> None:
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(statement, (session_id,))  # type: ignore[arg-type]


def test_a_session_row_changed_in_the_database_is_named_and_never_served(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    # Before: GET answered 'sENT', {"n": 7} or a creation time ten years on as what the
    # create acknowledged, the page listed it, and `app data check` said nothing.
    with (
        postgres_engine.opened_database(PROFILE) as (_, url),
        _replica(s3_engine, (url, new_blob_url(s3_engine))) as store,
    ):
        made = {edit: store.create_session("sent", {"n": 1}) for edit in sorted(_EDITS)}
        kept = store.create_session("kept", {})
        first = made["created_at"]
        assert "content_sha256" not in first
        assert store.get_session(first["id"]) == first  # read back as acknowledged
        # The one definition both backends use, of the values the create answered.
        with psycopg.connect(url) as admin:
            row = admin.execute(
                "SELECT content_sha256 FROM app_sessions WHERE id = %s", (first["id"],)
            ).fetchone()
        assert row == (content_sha256(first),)

        for edit, session in made.items():
            _edit(url, _EDITS[edit], session["id"])
        changed = sorted(session["id"] for session in made.values())

        for session_id in changed:
            with pytest.raises(UnreadableSessionError) as refused:
                store.get_session(session_id)
            message = str(refused.value)
            assert refused.value.code == "session_unreadable"
            assert f"cannot read session {session_id}: its row in app_sessions" in message
            assert CONTENT_CHANGED in message
            assert "set that column and app_stamp.content_sha256_since to NULL" in message
            assert "reports it as session-unreadable" in message
        page = store.list_sessions()
        assert [item["id"] for item in page.items] == [kept["id"]]
        assert page.total == 4
        assert [left.id for left in page.left_out] == changed
        assert all(CONTENT_CHANGED in left.message for left in page.left_out)
        named = store.left_out({kept["id"]})
        assert [session_id for session_id, _ in named] == changed
        assert all(CONTENT_CHANGED in why for _, why in named)
        report = store.check()
        findings = [(f.problem, f.target) for f in report.findings]
        assert findings == [("session-unreadable", session_id) for session_id in changed]
        assert all(CONTENT_CHANGED in finding.detail for finding in report.findings)

        # Deleted as it is, and restored as it is, said so (not "cannot read" alone).
        store.delete_session(first["id"])
        assert [(f.problem, f.target) for f in store.check().findings] == findings
        with pytest.raises(RestoredUnreadableSessionError) as restored:
            store.restore(first["id"])
        assert f"restored session {first['id']} from trash entry" in str(restored.value)
        assert CONTENT_CHANGED in str(restored.value)

        # The column set to NULL: in a database this build made (its stamp's
        # content_sha256_since set), refused as damage too (rows67).
        _edit(url, "UPDATE app_sessions SET content_sha256 = NULL WHERE id = %s", first["id"])
        with pytest.raises(UnreadableSessionError, match="has no content_sha256"):
            store.get_session(first["id"])
        assert len(store.check().findings) == 3


def test_a_database_from_before_gets_the_column_and_its_rows_are_read_as_before(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    # A database a release before session 66 made: app_sessions without content_sha256,
    # and a session's row as that release's create inserted it.
    with postgres_engine.opened_database(PROFILE) as (name, url):
        old = new_session_id()
        with postgres_engine.connect(name) as admin:
            admin.execute("ALTER TABLE app_sessions DROP COLUMN content_sha256")
            # Nor its stamp's mark (rows67): rows without a key read unchecked.
            admin.execute("UPDATE app_stamp SET content_sha256_since = NULL")
            admin.execute(
                "INSERT INTO app_sessions (id, title, metadata, created_at, updated_at)"
                " VALUES (%s, 'from before', '{}', now(), now())",
                (old,),
            )
        pg.open_database(url, PROFILE)  # adds it, audited
        with postgres_engine.connect(name) as admin:
            audited = admin.execute(
                "SELECT kind, operation, detail FROM app_audit WHERE operation = 'schema'"
            ).fetchall()
            assert audited == [
                ("open", "schema", {"added": "app_sessions.content_sha256", "argv": sys.argv})
            ]
            admin.execute("UPDATE app_sessions SET title = 'edited' WHERE id = %s", (old,))
            assert pg.drift(admin) == ((), ())
        with _replica(s3_engine, (url, new_blob_url(s3_engine))) as store:
            assert store.get_session(old)["title"] == "edited"  # no hash: read as before
            new = store.create_session("after", {})
            _edit(url, _EDITS["title"], new["id"])
            with pytest.raises(UnreadableSessionError):
                store.get_session(new["id"])
        pg.open_database(url, PROFILE)  # nothing more to add
        with postgres_engine.connect(name) as admin:
            count = admin.execute("SELECT count(*) FROM app_audit WHERE operation = 'schema'")
            assert count.fetchone() == (1,)


def at_the_commit(schema: str, table: str, event: str) -> str:
    """SQL for an observer that records, in ``<schema>.seen`` (by its function
    ``<schema>.seen()``, made already), the ``synchronous_commit`` a transaction that ran
    ``event`` on ``table`` commits with: a constraint trigger deferred to the commit that
    defers constraints again (in its function) and queues a second one, which the COMMIT
    itself fires. A trigger that is only deferred runs at the commit point's `SET
    CONSTRAINTS ALL IMMEDIATE` since session 66, before the setting, and sees nothing of it.
    """
    return f"""
CREATE TABLE {schema}.probe (id serial);
CREATE FUNCTION {schema}.again() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SET CONSTRAINTS ALL DEFERRED;
    INSERT INTO {schema}.probe DEFAULT VALUES;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER {schema}_b_again AFTER {event} ON {table}
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {schema}.again();
CREATE CONSTRAINT TRIGGER {schema}_seen AFTER INSERT ON {schema}.probe
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {schema}.seen();
"""


# A constraint trigger deferred to the commit that makes the commit asynchronous (named to
# fire before the observer's), and the observer (`at_the_commit`).
_DEFERRED_OFF = """
CREATE SCHEMA rt66;
CREATE TABLE rt66.seen (id serial, value text);
CREATE FUNCTION rt66.off() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SET LOCAL synchronous_commit = off;
    RETURN NULL;
END $$;
CREATE FUNCTION rt66.seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rt66.seen (value) VALUES (current_setting('synchronous_commit'));
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER rt66_a_off AFTER UPDATE ON {table}
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION rt66.off();
"""


def _deferred_off(table: str) -> str:
    return _DEFERRED_OFF.replace("{table}", table) + at_the_commit("rt66", table, "UPDATE")


def _seen(postgres_engine: PostgresEngine, name: str) -> list[str]:
    with postgres_engine.connect(name) as admin:
        return [v for (v,) in admin.execute("SELECT value FROM rt66.seen ORDER BY id")]


def test_a_write_commits_durably_whatever_a_trigger_deferred_to_the_commit_sets(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    # Before: a session's delete (an UPDATE, no read back) and a re-stamp committed with
    # `off`, which the deferred trigger set after the commit point's setting.
    with postgres_engine.opened_database(PROFILE) as (name, url):
        with _replica(s3_engine, (url, new_blob_url(s3_engine)), pool_size=1) as store:
            session_id = store.create_session("deferred")["id"]
            with postgres_engine.connect(name) as admin:
                admin.execute(_deferred_off("app_sessions"))
            store.delete_session(session_id)
        assert _seen(postgres_engine, name) == ["on"]
        with postgres_engine.connect(name) as admin:
            admin.execute("DROP SCHEMA rt66 CASCADE")
            admin.execute(_deferred_off("app_stamp"))
        with pg.maintenance(url, "development", "re-stamp it") as maintenance:
            maintenance.restamp(PROFILE)
        assert _seen(postgres_engine, name) == ["on"]
