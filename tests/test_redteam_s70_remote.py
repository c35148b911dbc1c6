"""Red team 70 on the remote backend (branch rt-remote70): see
docs/explanation/attacks.md, Layer 7.

What got through: `app data check` took the index of trashed files' rows by session and name
(``app_files_trashed``, red team 70 on regress) for there as soon as a relation of that name
was, and ``--repair`` made it with ``CREATE INDEX IF NOT EXISTS``. A DBA who builds it by
hand beside live replicas, as a DBA would rather than stop them (``CREATE INDEX
CONCURRENTLY``), and whose build fails (a lock timeout behind an upload, a cancel, a
deadlock) is left with an INVALID index of that name, which the planner never uses and no
insert of a trashed row waits any less for: the check said nothing, and the repair said it had
made an index it had not, for good. So did an index of that name built with another
definition (without its ``COLLATE "C"``, which the order of a restore needs).

What changed: the check reads the index's state (`pg.trashed_index_state`): missing, INVALID,
of another definition, or a relation that is no index of app_files; the repair drops an
unusable index and builds the app's, and names a relation not the app's without touching it.
"""

from __future__ import annotations

import psycopg
import pytest
from engines import PostgresEngine, S3Engine, new_blob_url
from test_remote_store import PROFILE, _maintenance


def _failed_concurrent_build(postgres_engine: PostgresEngine, name: str) -> None:
    """``CREATE INDEX CONCURRENTLY app_files_trashed`` as the app's, refused by its lock
    timeout behind a transaction that writes app_files (a replica's upload): PostgreSQL
    leaves the index it had begun, INVALID."""
    from app.remote import pg

    with postgres_engine.connect(name) as writer, postgres_engine.connect(name) as dba:
        dba.execute("DROP INDEX app_files_trashed")  # as a database made before it
        writer.execute("BEGIN")
        writer.execute("LOCK TABLE app_files IN ROW EXCLUSIVE MODE")
        dba.execute("SET lock_timeout = '50ms'")
        concurrently = pg.TRASHED_INDEX.replace("INDEX", "INDEX CONCURRENTLY", 1)
        with pytest.raises(psycopg.errors.LockNotAvailable):
            dba.execute(concurrently.encode())
        writer.execute("ROLLBACK")
        state = dba.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'app_files_trashed'::regclass"
        ).fetchone()
        assert state == (False,)


def _valid(postgres_engine: PostgresEngine, name: str) -> object:
    with postgres_engine.connect(name) as admin:
        return admin.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'app_files_trashed'::regclass"
        ).fetchone()


def test_an_unusable_index_of_trashed_rows_is_told_and_rebuilt_and_anothers_relation_left(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    with (
        postgres_engine.opened_database(PROFILE) as (name, url),
        _maintenance(s3_engine, (url, new_blob_url(s3_engine))) as maintenance,
    ):
        # The DBA's statements run beside maintenance's hold, as they would beside replicas.
        _failed_concurrent_build(postgres_engine, name)
        found = maintenance.check().findings
        # Before: no finding, and the repair said nothing either (its IF NOT EXISTS).
        assert [(f.problem, f.target, f.repaired) for f in found] == [
            ("index-unusable", "app_files_trashed", False)
        ]
        assert found[0].detail.startswith(
            "the index app_files_trashed is INVALID (a failed CREATE INDEX or REINDEX "
            "CONCURRENTLY): the database never uses it: an upload of a name new to a session "
        )
        assert found[0].repair == (
            "drop it and make it again (`app data check --repair`, with every replica "
            "stopped: it holds writes to app_files while it is built)"
        )
        repaired = maintenance.check(repair=True).findings
        assert [(f.problem, f.repaired) for f in repaired] == [("index-unusable", True)]
        assert maintenance.check().findings == []
        assert _valid(postgres_engine, name) == (True,)

        # An index of that name built by hand, without the order a restore takes.
        with postgres_engine.connect(name) as admin:
            admin.execute("DROP INDEX app_files_trashed")
            admin.execute(
                "CREATE INDEX app_files_trashed ON app_files (session_id, name)"
                " WHERE deleted_at IS NOT NULL"
            )
        found = maintenance.check().findings
        assert [(f.problem, f.repaired) for f in found] == [("index-unusable", False)]
        assert found[0].detail.startswith(
            "the index app_files_trashed is not the app's: CREATE INDEX app_files_trashed "
            "ON app_files USING btree (session_id, name) WHERE (deleted_at IS NOT NULL): "
        )
        repaired = maintenance.check(repair=True).findings
        assert [(f.problem, f.repaired) for f in repaired] == [("index-unusable", True)]
        assert maintenance.check().findings == []

        # A table of someone's of that name: named, never dropped.
        with postgres_engine.connect(name) as admin:
            admin.execute("DROP INDEX app_files_trashed")
            admin.execute("CREATE TABLE app_files_trashed (note text)")
            admin.execute("INSERT INTO app_files_trashed VALUES ('a DBA''s')")
        for repair in (False, True):
            found = maintenance.check(repair=repair).findings
            assert [(f.problem, f.repaired) for f in found] == [("index-unusable", False)]
            assert found[0].detail.startswith(
                "app_files_trashed is a table, not the app's index of trashed files' rows: "
            )
            assert found[0].repair == (
                "nothing: rename or drop that app_files_trashed (not the app's, which never "
                "drops it), then run `app data check --repair` with every replica stopped to "
                "make the index"
            )
        with postgres_engine.connect(name) as admin:
            kept = admin.execute("SELECT note FROM app_files_trashed").fetchall()
        assert kept == [("a DBA's",)]
