"""Red team 70 on regress, the remote backend (branch rt-regress70g): see
docs/explanation/attacks/layer-7-atomic-writes.md.

What got through: the app compares what PostgreSQL prints of its tables' constraints and
indexes (``pg_get_constraintdef``, ``pg_get_indexdef``) with its own definitions: at each
open (`pg.drift`) and at each `app data check` (`pg.trashed_index_problem`, red team 70 on
the remote backend). Under ``quote_all_identifiers = on`` (for the database, the role or the
server: a setting that changes nothing but how identifiers print) every identifier printed
quoted, and a database the app had just made, untouched, was refused at every open as "the
app's tables changed", each column, constraint and index named, its remedy a rewrite of
every table; the check's connection would have called the app's own ``app_files_trashed``
``index-unusable`` and ``--repair`` rebuilt it at every run.

What changed: `pg.printed_plainly` turns the setting off for the connection before either
comparison.

What got through too (rt-remote70's *not stopped*, decided here): a failover to a standby
that had not received the last commits, or a point-in-time recovery to an earlier moment,
is the same database on a new timeline, with no restamp and no ``adopt-copy`` row: the
object of a file acknowledged in a commit lost was "an upload whose transaction never
committed", and ``--repair`` and `app data empty-trash` deleted it.

What changed: the first open on a new timeline (and an adoption) marks the prefix's stamp
(``rewritten``), and an object no row names written before that write, by the store's own
clock (`ObjectStore.stamp_rewritten`), is ``object-of-the-original``, never deleted.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

from engines import PostgresEngine, S3Engine, new_blob_url
from test_redteam_s70_remote import opened_and_bound
from test_remote_store import PROFILE, _maintenance, _replica

from app.remote import pg
from app.remote.objects import STAMP_NAME


def test_a_database_whose_identifiers_print_quoted_opens_and_checks_clean(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    name = postgres_engine.create_database()
    try:
        with postgres_engine.connect() as admin:
            admin.execute(f'ALTER DATABASE "{name}" SET quote_all_identifiers = on'.encode())
            # Held: the app's tables in a schema of another name, first on the search_path
            # (the index's definition printed as in public), and an index of the name in
            # public, another table's (the check reads the app's schema alone).
            admin.execute(f'ALTER DATABASE "{name}" SET search_path = "Files", public'.encode())
        url = postgres_engine.url(name)
        with postgres_engine.connect(name) as conn:
            conn.execute('CREATE SCHEMA "Files"')
        with postgres_engine.connect(name) as conn:
            # Every new session of the database prints identifiers quoted.
            shown = conn.execute("SELECT pg_get_indexdef(to_regclass('pg_class_oid_index'))")
            assert '"pg_class_oid_index"' in str(shown.fetchone())
        # Before: TablesChangedError, "column app_stamp.profile is \"text\", the app's is text".
        pg.open_database(url, PROFILE)
        with postgres_engine.connect(name) as conn:
            made = conn.execute(
                "SELECT relnamespace::regnamespace::text FROM pg_class"
                " WHERE relname = 'app_files_trashed'"
            )
            assert made.fetchall() == [('"Files"',)]  # the app's, in the app's schema
            conn.execute("CREATE TABLE public.notes (n text)")
            conn.execute("CREATE INDEX app_files_trashed ON public.notes (n)")
        opened = (url, new_blob_url(s3_engine))
        with _maintenance(s3_engine, opened) as maintenance:
            # Before (the open alone mended): index-unusable, "the index app_files_trashed
            # is not the app's: CREATE INDEX \"app_files_trashed\" ON ...", and each
            # --repair dropped and made it again.
            assert maintenance.check().findings == []
            assert maintenance.check(repair=True).findings == []
        with _replica(s3_engine, opened) as replica:
            sid = replica.create_session("quoted")["id"]
            replica.put_file(sid, "a.txt", b"a")
            replica.delete_file(sid, "a.txt")  # a trashed row, which the index holds
        with _maintenance(s3_engine, opened) as maintenance:
            assert maintenance.check().findings == []
    finally:
        postgres_engine.drop_database(name)


def test_an_object_of_a_commit_a_new_timeline_lost_is_kept_not_deleted(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    name, blob_url = postgres_engine.create_database(), new_blob_url(s3_engine)
    opened = (postgres_engine.url(name), blob_url)
    try:
        objects, made = opened_and_bound(s3_engine, opened, name)
        with _replica(s3_engine, opened) as replica:
            sid = replica.create_session("lost")["id"]
            replica.put_file(sid, "b.txt", b"acknowledged, then lost")
            with postgres_engine.connect(name) as conn:
                # A point-in-time recovery to before the file's commit (or a failover to a
                # standby that had not received it): the row is gone, its object is not.
                deleted = conn.execute("DELETE FROM app_files WHERE name = 'b.txt' RETURNING blob")
                (blob,) = deleted.fetchone() or ("",)
                (written,) = [i.last_modified for i in objects.objects("") if i.name.endswith(blob)]
            # The cluster's timeline as the stamp recorded it before the new one began (this
            # suite's cluster never fails over: the stamp is set one behind it instead).
            stamp = objects.read_stamp()
            assert stamp is not None and isinstance(stamp.get("timeline"), int)
            objects.put(
                STAMP_NAME, json.dumps({**stamp, "timeline": stamp["timeline"] - 1}).encode()
            )
            while datetime.now(UTC).replace(microsecond=0) <= written:
                time.sleep(0.05)  # the store dates in whole seconds: the open in a later one
            # The first open on the new timeline rewrites the stamp, as `open_remote`'s.
            objects.open(PROFILE, database=(made.database_id, name, made.instance, made.timeline))
            assert (objects.read_stamp() or {}).get("timeline") == stamp["timeline"]
            with _maintenance(s3_engine, opened) as maintenance:
                found = maintenance.check().findings
                assert [(f.problem, f.target) for f in found] == [("object-of-the-original", blob)]
                # Before: "object-without-record", "an upload whose transaction never committed".
                assert (
                    "is named by no row, and was written before the object prefix's stamp was "
                    in (found[0].detail)
                )
                assert "as the first open after a failover or a point-in-time recovery" in (
                    found[0].detail
                )
                url = f"s3://{objects.location.bucket}/{objects.location.key(blob)}"
                # What a human does with it, with the commands (before: no command).
                assert found[0].repair == (
                    f"nothing: the app never deletes it; its bytes are at {url}: upload them "
                    f"again where they belong (`aws s3 cp {url} <file>`, then a PUT of the file "
                    f"to its session), or delete it by hand once it is no one's (`aws s3 rm "
                    f"{url}`)"
                )
                repaired = maintenance.check(repair=True).findings
                assert [(f.problem, f.repaired) for f in repaired] == [
                    ("object-of-the-original", False)
                ]
                maintenance.empty_trash()  # its repair of objects no row names, the same
                with maintenance.objects.get(blob) as stream:
                    assert stream.read() == b"acknowledged, then lost"
    finally:
        postgres_engine.drop_database(name)


def test_an_index_build_under_way_is_told_as_one_and_left_to_end(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    with (
        postgres_engine.opened_database(PROFILE) as (name, url),
        _maintenance(s3_engine, (url, new_blob_url(s3_engine))) as maintenance,
        postgres_engine.connect(name) as writer,
        postgres_engine.connect(name) as dba,
    ):
        # A DBA's CREATE INDEX CONCURRENTLY of the app's index, waiting for a transaction
        # that writes app_files (a replica's upload) to end before it builds.
        dba.execute("DROP INDEX app_files_trashed")  # as a database made before it
        writer.execute("BEGIN")
        writer.execute("LOCK TABLE app_files IN ROW EXCLUSIVE MODE")
        concurrently = pg.TRASHED_INDEX.replace("INDEX", "INDEX CONCURRENTLY", 1).encode()
        pid = dba.info.backend_pid
        build = threading.Thread(target=dba.execute, args=(concurrently,))
        build.start()
        try:
            with postgres_engine.connect(name) as look:
                waiting = "SELECT phase FROM pg_stat_progress_create_index WHERE pid = %s"
                while look.execute(waiting, (pid,)).fetchone() != (
                    "waiting for writers before build",
                ):
                    time.sleep(0.01)
            for repair in (False, True):
                found = maintenance.check(repair=repair).findings
                # Before: "INVALID (a failed CREATE INDEX or REINDEX CONCURRENTLY)", and
                # "drop it and make it again", the DBA's build under way.
                assert [(f.problem, f.repaired) for f in found] == [("index-unusable", False)]
                assert found[0].detail.startswith(
                    "the index app_files_trashed is being built (a CREATE INDEX CONCURRENTLY "
                    f"under way, by process {pid}, waiting for writers before "
                    "build): the database uses it once the build ends: "
                ), found[0].detail
                assert found[0].repair == (
                    "nothing while it is built: let the build end (`SELECT pid, phase FROM "
                    "pg_stat_progress_create_index` shows it; it waits for every transaction "
                    "that writes app_files), then run `app data check` again"
                )
        finally:
            writer.execute("ROLLBACK")
            build.join()
        assert maintenance.check().findings == []
