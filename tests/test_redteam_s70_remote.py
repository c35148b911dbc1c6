"""Red team 70 on the remote backend (branch rt-remote70): see
docs/explanation/attacks/layer-7-atomic-writes.md.

What got through: `app data check` took the index of trashed files' rows by session and name
(``app_files_trashed``, red team 70 on regress) for there as soon as a relation of that name
was, and ``--repair`` made it with ``CREATE INDEX IF NOT EXISTS``. A DBA who builds it by
hand beside live replicas, as a DBA would rather than stop them (``CREATE INDEX
CONCURRENTLY``), and whose build fails (a lock timeout behind an upload, a cancel, a
deadlock) is left with an INVALID index of that name, which the planner never uses and no
insert of a trashed row waits any less for: the check said nothing, and the repair said it had
made an index it had not, for good. So did an index of that name built with another
definition (without its ``COLLATE "C"``, which the order of a restore needs).

What changed: the check reads the index's state (`pg.trashed_index_problem`): missing,
INVALID, of another definition, or a relation that is no index of app_files; the repair
drops an unusable index and builds the app's, and names a relation not the app's without
touching it.

What got through too: the restore the PostgreSQL how-to describes (a dump restored into a new
database, adopted with `app data restamp --profile P --from P`), while the bucket kept every
object: `app data check` called the object of a file the original acknowledged after the dump
"an upload whose transaction never committed" and ``--repair`` deleted it, "nobody could ever
read it", the last bytes of a file a client was told were saved.

What changed: an object no row names that was written before the database's adoption (its
``adopt-copy`` row in ``app_audit``) is ``object-of-the-original``, named with its key and
never deleted; one written after the adoption is an orphan as before.
"""

from __future__ import annotations

import time

import psycopg
import pytest
from engines import PostgresEngine, S3Engine, new_blob_url
from test_remote_store import PROFILE, _maintenance, _replica

from app.remote import check, pg, storage
from app.remote.objects import BLOBS, ObjectStore


def _failed_concurrent_build(postgres_engine: PostgresEngine, name: str) -> None:
    """``CREATE INDEX CONCURRENTLY app_files_trashed`` as the app's, refused by its lock
    timeout behind a transaction that writes app_files (a replica's upload): PostgreSQL
    leaves the index it had begun, INVALID."""
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


def test_a_restored_copy_adopted_by_restamp_keeps_what_the_original_acknowledged_since(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    name, blob_url = postgres_engine.create_database(), new_blob_url(s3_engine)
    copy = f"c{name}"  # a scratch database's name still: it ends with the run's suffix
    original = (postgres_engine.url(name), blob_url)
    restored = (postgres_engine.url(copy), blob_url)
    try:
        objects, _ = opened_and_bound(s3_engine, original, name)
        where = objects.location
        with _replica(s3_engine, original) as replica:
            sid = replica.create_session("kept")["id"]
            replica.put_file(sid, "a.txt", b"kept")
        # The backup: a copy of the database (as pg_dump and pg_restore make one; a template
        # copies the same rows, with another oid, in a fraction of the time).
        with postgres_engine.connect() as admin:
            admin.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{name}"'.encode())
        with _replica(s3_engine, original) as replica:
            replica.put_file(sid, "b.txt", b"acknowledged after the dump")
        with postgres_engine.connect(name) as conn:
            (kept_blob,) = conn.execute(
                "SELECT blob FROM app_files WHERE name = 'b.txt'"
            ).fetchone()
        # The original lost; the copy restored and adopted, as `app data restamp` does.
        with pg.maintenance(restored[0], PROFILE, "re-stamp") as hold:
            assert storage.adopt_copy(PROFILE, objects, hold) == (True, None)
        with _maintenance(s3_engine, restored) as maintenance:
            # An upload of the adopted database's killed before its row: an orphan still,
            # once the store's clock (its times are whole seconds) has passed the adoption's
            # (one in the same second is kept, as the original's may be).
            adopted = check._adopted_at(maintenance.db)
            assert adopted is not None
            while True:
                orphan = maintenance.objects.new_blob_name()
                maintenance.objects.put(orphan, b"never committed")
                (info,) = [i for i in maintenance.objects.objects(BLOBS) if i.name == orphan]
                if info.last_modified >= adopted:
                    break
                maintenance.objects.delete(orphan)
                time.sleep(0.1)
            found = maintenance.check().findings
            assert sorted((f.problem, f.target) for f in found) == [
                ("object-of-the-original", kept_blob),
                ("object-without-record", orphan),
            ], found
            (ours,) = [f for f in found if f.problem == "object-of-the-original"]
            assert "is named by no row, and was written before this database was adopted " in (
                ours.detail
            )
            assert "it may be a file the original acknowledged after the copy was made" in (
                ours.detail
            )
            assert ours.repair.startswith(
                "nothing: the app never deletes it; its bytes are at "
                f"s3://{where.bucket}/{where.key(kept_blob)}: upload them again"
            )
            repaired = maintenance.check(repair=True).findings
            assert sorted((f.problem, f.repaired) for f in repaired) == [
                ("object-of-the-original", False),
                ("object-without-record", True),
            ]
            # Before: deleted as "an upload whose transaction never committed".
            with maintenance.objects.get(kept_blob) as stream:
                assert stream.read() == b"acknowledged after the dump"
    finally:
        postgres_engine.drop_database(copy)
        postgres_engine.drop_database(name)


def opened_and_bound(
    s3_engine: S3Engine, opened: tuple[str, str], name: str
) -> tuple[ObjectStore, pg.Stamp]:
    """The database `name` (at ``opened[0]``) and the prefix at ``opened[1]`` opened and bound
    to each other, as `open_remote` does: the store, and the database's stamp."""
    objects = s3_engine.objects(opened[1])
    where = objects.location
    stamp = pg.open_database(
        opened[0], PROFILE, objects=(where.bucket, where.prefix, objects.where)
    )
    objects.open(PROFILE, database=(stamp.database_id, name, stamp.instance, stamp.timeline))
    return objects, stamp
