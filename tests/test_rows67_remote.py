"""What integrity's checksums left out, on PostgreSQL (branch rows67): see
docs/explanation/attacks/layer-7-atomic-writes.md.

What got through: a session's row whose ``content_sha256`` was set to NULL was read as a
row from before session 66, unchecked, whatever else the edit changed (its title); and a
trashed session's title was listed by the trash's listing as it read, unchecked.

What changed: a database this build makes says in ``app_stamp.content_sha256_since``
(written with the stamp, before any row) that every session's row keeps its key, and a row
without one is damage; one an earlier build made reads as before until `app data check
--repair` (maintenance) has hashed its rows and marked it. The trash's listing compares a
trashed session's row with its key as a read of a live one does.
"""

from __future__ import annotations

import sys

import psycopg
import pytest
from engines import PostgresEngine, S3Engine, new_blob_url
from test_remote_store import PROFILE, _maintenance, _replica

from app.errors import UnreadableSessionError
from app.remote import pg
from app.remote.errors import FileRowOfAnotherShapeError
from app.store.records import record_sha256


def _sql(url: str, statement: str, *args: object) -> None:
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(statement, args)  # type: ignore[arg-type]


def test_a_row_whose_key_was_set_to_null_is_refused_in_a_database_this_build_made(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    with (
        postgres_engine.opened_database(PROFILE) as (_, url),
        _replica(s3_engine, (url, new_blob_url(s3_engine))) as store,
    ):
        with psycopg.connect(url) as admin:
            marked = admin.execute("SELECT content_sha256_since FROM app_stamp").fetchone()
        assert marked is not None and marked[0] is not None  # with the stamp, before a row
        edited = store.create_session("sent", {})["id"]
        dated = store.create_session("dated", {})["id"]
        kept = store.create_session("kept", {})["id"]
        _sql(
            url,
            "UPDATE app_sessions SET updated_at = updated_at + interval '10 years' WHERE id = %s",
            dated,
        )
        # Before: served dated ten years on, every upload's time after it.
        with pytest.raises(UnreadableSessionError) as moved:
            store.get_session(dated)
        assert "holds an updated_at other than the one its last change wrote" in str(moved.value)
        _sql(
            url,
            "UPDATE app_sessions SET title = 'edited', content_sha256 = NULL WHERE id = %s",
            edited,
        )
        # Before: answered with the title 'edited' as acknowledged, listed, check clean.
        with pytest.raises(UnreadableSessionError) as refused:
            store.get_session(edited)
        message = str(refused.value)
        assert f"cannot read session {edited}: its row in app_sessions has no content_sha256" in (
            message
        )
        assert "set app_stamp.content_sha256_since to NULL with every replica stopped" in message
        assert "`app data check --repair`, which hashes the row again" in message
        page = store.list_sessions()
        assert [item["id"] for item in page.items] == [kept]
        assert sorted(left.id for left in page.left_out) == sorted([edited, dated])
        findings = {f.target: f for f in store.check().findings}
        assert sorted((f.problem, t) for t, f in findings.items()) == sorted(
            [("session-unreadable", edited), ("session-unreadable", dated)]
        )
        assert "has no content_sha256, which every session's row" in findings[edited].detail
        assert "set app_stamp.content_sha256_since to NULL" in findings[edited].repair
        assert "put its updated_at back from a backup" in findings[dated].repair


def test_a_database_an_earlier_build_made_reads_as_before_until_the_repair_marks_it(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    with postgres_engine.opened_database(PROFILE) as (name, url):
        blob_url = new_blob_url(s3_engine)
        with _replica(s3_engine, (url, blob_url)) as store:
            old = store.create_session("from before", {})["id"]
            made = store.put_file(old, "a.txt", b"bytes")
        # As a build from before made it: no mark, no columns, no key on its rows.
        with postgres_engine.connect(name) as admin:
            admin.execute("ALTER TABLE app_stamp DROP COLUMN content_sha256_since")
            admin.execute("ALTER TABLE app_files DROP COLUMN content_sha256")
            admin.execute("ALTER TABLE app_sessions DROP COLUMN updated_sha256")
            admin.execute("UPDATE app_sessions SET content_sha256 = NULL")
        pg.open_database(url, PROFILE)  # adds the columns, unmarked
        with _replica(s3_engine, (url, blob_url)) as store:
            assert store.get_session(old)["title"] == "from before"  # read as before
            assert store.list_files(old) == [made]
            assert store.check().findings == []
        with _maintenance(s3_engine, (url, blob_url)) as maintenance:
            report = maintenance.check(repair=True)
            assert [(f.problem, f.target, f.repaired) for f in report.findings] == [
                ("content-unhashed", "app_stamp", True)
            ]
            assert (
                "1 session rows and 1 file rows an earlier build wrote without their "
                "content_sha256, and 1 session rows whose updated_at it set without its "
                "updated_sha256"
            ) in report.findings[0].detail
        with postgres_engine.connect(name) as admin:
            assert admin.execute(
                "SELECT content_sha256 IS NOT NULL FROM app_sessions"
            ).fetchall() == [(True,)]
            audited = admin.execute(
                "SELECT detail FROM app_audit WHERE operation = 'hash'"
            ).fetchall()
            assert audited == [({"sessions": 1, "files": 1, "updated": 1, "argv": sys.argv},)]
            assert admin.execute("SELECT content_sha256 FROM app_files").fetchall() == [
                (record_sha256(made),)
            ]
        _sql(url, "UPDATE app_sessions SET title = 'edited', content_sha256 = NULL")
        with (
            _replica(s3_engine, (url, blob_url)) as store,
            pytest.raises(UnreadableSessionError, match="has no content_sha256"),
        ):
            store.get_session(old)


def test_a_trashed_session_s_title_changed_in_the_database_is_not_listed(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    with (
        postgres_engine.opened_database(PROFILE) as (_, url),
        _replica(s3_engine, (url, new_blob_url(s3_engine))) as store,
    ):
        gone = store.create_session("acknowledged", {})["id"]
        store.delete_session(gone)
        assert [e.title for e in store.list_trash()] == ["acknowledged"]
        _sql(url, "UPDATE app_sessions SET title = 'edited' WHERE id = %s", gone)
        # Before: listed as 'edited', the title the session had when it was deleted.
        [listed] = store.list_trash()
        assert (listed.session_id, listed.title) == (gone, None)
        findings = store.check().findings
        assert [(f.problem, f.target) for f in findings] == [("session-unreadable", gone)]
        assert f"the row in app_sessions of trashed session {gone}" in findings[0].detail


def test_a_file_row_s_upload_time_changed_in_the_database_is_named_never_served(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    with (
        postgres_engine.opened_database(PROFILE) as (_, url),
        _replica(s3_engine, (url, new_blob_url(s3_engine))) as store,
    ):
        session_id = store.create_session("files", {})["id"]
        made = store.put_file(session_id, "a.txt", b"acknowledged")
        kept = store.put_file(session_id, "b.txt", b"kept")
        assert store.list_files(session_id) == [made, kept]
        _sql(
            url,
            "UPDATE app_files SET uploaded_at = uploaded_at + interval '10 years'"
            " WHERE name = 'a.txt'",
        )
        # Before: listed and served dated ten years on, and the session's updated_at too.
        assert store.list_files(session_id) == [kept]
        with pytest.raises(FileRowOfAnotherShapeError) as refused:
            store.open_file(session_id, "a.txt")
        message = str(refused.value)
        assert "its row in the database is of another shape than the app writes" in message
        assert "uploaded_at is not what its upload acknowledged" in message
        [finding] = store.check().findings
        assert (finding.problem, finding.target) == (
            "row-of-another-shape",
            f"{session_id}/a.txt",
        )
        # Its key set to NULL with the change, in a database this build made: the same.
        _sql(url, "UPDATE app_files SET content_sha256 = NULL WHERE name = 'a.txt'")
        with pytest.raises(FileRowOfAnotherShapeError, match="it has no content_sha256"):
            store.open_file(session_id, "a.txt")
