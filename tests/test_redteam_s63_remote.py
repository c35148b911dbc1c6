"""Red team 63 on PostgreSQL and object storage.

What broke: the app's own tables changed by a DBA under a live replica, or before an open.

- ``ALTER TABLE app_sessions ALTER COLUMN metadata TYPE jsonb`` (the usual advice: jsonb can
  be indexed): each create was answered with its metadata as sent and stored otherwise (its
  keys reordered, ``1e300`` read back as an integer); metadata holding ``\\u0000`` was a
  bare ``UntranslatableCharacter`` (500).
- ``app_files.name`` given a case-insensitive (nondeterministic ICU) collation: a ``PUT`` of
  ``a.txt`` replaced the acknowledged ``A.txt`` (moved to the trash as replaced), and a read
  of ``A.txt`` served ``a.txt``'s bytes. On a data root they are two files.
- A ``CHECK`` of another's (a quota on ``size``, ``NOT VALID``), a ``varchar(8)`` name, a
  dropped column, a renamed schema: each write they touch was a bare psycopg error (500, a
  traceback on the command line) with no word of what changed.
- A sequence behind its table's largest id (logical replication copies rows, never
  sequences; a data-only restore leaves them too): every upload and every audited change
  was a bare ``UniqueViolation`` on the table's primary key (500), until as many had failed
  as the table held rows.
- The default of ``app_holders.backend_pid`` changed (``SET DEFAULT 0``): every live
  replica's row named no backend, so none was live to `app status`, and maintenance's
  refusal (by the lock) called them stopped replicas' writes still committing. A replica's
  row now names its backend itself.
- The next open (a replica's start, every command) and `app doctor` said nothing of any.

What changed: the open and `app doctor` (``tables``) compare the app's tables with the ones
it makes (each column's type, ``NOT NULL`` and a nondeterministic collation; a column of
another's no insert fills; every constraint; the unique index the app's names rely on; each
sequence against its table's largest id) and
refuse a difference (``tables_changed``, 78), naming each and the statements that undo it.
Under a live replica: every lookup of a file by name compares in the database's own,
deterministic collation (``COLLATE "default"``, which the index still serves), so the
case-insensitive unique index refuses ``a.txt`` rather than the lookup replacing
``A.txt``; a session's create reads its row back as stored (``write_not_stored``, 503); and
a statement the changed tables refuse (SQLSTATE classes 22 and 23, an undefined column or
table, a type mismatch) is ``database_refused``, naming what changes cause it and `app
doctor`.
"""

from __future__ import annotations

import os

import pytest
from engines import PostgresEngine, S3Engine, new_blob_url
from test_redteam_s62_remote import doctor_probes
from test_remote_store import PROFILE, _replica

from app.remote import pg
from app.remote.errors import (
    DatabaseRefusedError,
    ReplicasLiveError,
    TablesChangedError,
    WriteNotStoredError,
)

_REMEDY = (
    "nothing was changed. The app's tables are not as the app made them, or not where this "
    "process found them: a column dropped, renamed, of another type or of a case-insensitive "
    "collation, a constraint or column of another's that refuses the app's rows, a sequence "
    "behind its table's ids (a copy made by logical replication), a table or its schema "
    "renamed, since it opened the database. `app doctor` names each difference "
    "from the app's tables and the statements that undo it: run them as the tables' owner, "
    "then retry"
)


def test_the_app_s_tables_changed_under_a_live_replica_are_refused_at_each_write_and_the_open(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    # Before: the create below was answered and stored reordered, the PUT of a.txt replaced
    # A.txt, the CHECK was a bare CheckViolation, and the open took the tables.
    with (
        postgres_engine.opened_database(PROFILE) as (name, url),
        _replica(s3_engine, (url, new_blob_url(s3_engine)), pool_size=1) as store,
    ):
        where = pg.mask_url(url)
        session_id = store.create_session("t")["id"]
        store.put_file(session_id, "A.txt", b"acknowledged")
        with postgres_engine.connect(name) as admin:
            admin.execute(
                "ALTER TABLE app_sessions ALTER COLUMN metadata TYPE jsonb;"
                "CREATE COLLATION rt63_ci (provider = icu, locale = 'und-u-ks-level2',"
                " deterministic = false);"
                "ALTER TABLE app_files ALTER COLUMN name TYPE text COLLATE rt63_ci"
            )
        sessions = store.session_ids()
        with pytest.raises(WriteNotStoredError) as reordered:
            store.create_session("u", {"b": 1, "a": 2})
        assert (reordered.value.http_status, reordered.value.exit_code) == (503, 69)
        assert reordered.value.message.startswith(
            f"database {where} did not store the creation of a session titled 'u': its "
            "INSERT into app_sessions wrote a row, but once every trigger had run that "
            "row was gone or not as sent (its title or its metadata, kept as sent), as a "
            "column of another type than the app's (metadata retyped jsonb reorders its "
            "keys) or a trigger"
        ), reordered.value.message
        assert store.session_ids() == sessions

        blobs = len(list(store.objects.objects()))
        with pytest.raises(DatabaseRefusedError) as taken:
            store.put_file(session_id, "a.txt", b"lower", replace=True)
        assert taken.value.message.startswith(
            f"database {where} refused the upload of 'a.txt' into session {session_id}: "
            'duplicate key value violates unique constraint "app_files_live"'
        ), taken.value.message
        assert taken.value.message.endswith(f"(SQLSTATE 23505); {_REMEDY}")
        file, entry = store.open_file(session_id, "A.txt")
        with file:
            assert (file.read(), entry["name"]) == (b"acknowledged", "A.txt")
        with postgres_engine.connect(name) as admin:
            admin.execute(
                "ALTER TABLE app_files ADD CONSTRAINT rt63_quota CHECK (size < 5) NOT VALID"
            )
        with pytest.raises(DatabaseRefusedError, match=r"rt63_quota.*\(SQLSTATE 23514\)"):
            store.put_file(session_id, "big.txt", b"0123456789")
        assert len(list(store.objects.objects())) == blobs

        with pytest.raises(TablesChangedError) as refused:
            pg.open_database(url, PROFILE)
        undo = (
            'ALTER TABLE "app_sessions" ALTER COLUMN "metadata" TYPE json USING '
            '"metadata"::json; ALTER TABLE "app_files" ALTER COLUMN "name" TYPE text '
            'COLLATE "default" USING "name"::text; ALTER TABLE "app_files" DROP '
            'CONSTRAINT "rt63_quota"'
        )
        assert refused.value.exit_code == 78
        assert refused.value.message == (
            f"profile {PROFILE!r}: database {where} has the app's tables changed from the "
            "ones the app made: column app_sessions.metadata is jsonb, the app's is json; "
            'column app_files.name is text COLLATE "rt63_ci" (nondeterministic: names '
            "that differ compare equal), the app's is text; constraint rt63_quota on "
            "app_files is not the app's: CHECK ((size < 5)) NOT VALID. The app's "
            "statements rely on each column's type, on its constraints and unique "
            "indexes and on its sequences: another type stores a row otherwise than the "
            "app answered (jsonb reorders a session's metadata), and a constraint or "
            "column of another's, or a sequence behind, refuses the app's writes halfway. "
            "Refusing to open it; nothing was changed. "
            f"As the tables' owner, run `{undo}`; what such a change was for belongs in a "
            "table or view of its own"
        )
        probes = doctor_probes(url, where)
        assert [p.problem for p in probes if p.subject == "tables"] == [refused.value.message]

        # The statements, run as written, open it again; the replica's writes are kept.
        with postgres_engine.connect(name) as admin:
            admin.execute(undo)  # type: ignore[arg-type]
        assert pg.open_database(url, PROFILE).profile == PROFILE
        created = store.create_session("u", {"b": 1, "a": 2})
        assert list(store.get_session(created["id"])["metadata"]) == ["b", "a"]
        store.put_file(session_id, "a.txt", b"lower")
        assert [f["name"] for f in store.list_files(session_id)] == ["A.txt", "a.txt"]

        # A sequence behind its table's ids, as logical replication leaves it. Before: the
        # open took it; every upload and every audited change was a bare UniqueViolation
        # on the table's primary key (500), until as many had failed as it held rows.
        store.delete_file(session_id, "a.txt")  # app_audit's id 2, after the open's
        with postgres_engine.connect(name) as admin:
            admin.execute("ALTER SEQUENCE app_audit_id_seq RESTART")
        with pytest.raises(DatabaseRefusedError, match=r"app_audit_pkey.*\(SQLSTATE 23505\)"):
            store.delete_session(created["id"])
        with pytest.raises(TablesChangedError) as behind:
            pg.open_database(url, PROFILE)
        assert behind.value.message.startswith(
            f"profile {PROFILE!r}: database {where} has the app's tables changed from the "
            "ones the app made: sequence public.app_audit_id_seq is at 1, behind "
            "app_audit's largest id 2 (logical replication copies no sequence, nor does a "
            "data-only restore): each insert of the app's there meets a row already "
            "numbered. "
        ), behind.value.message
        setval = "SELECT setval('public.app_audit_id_seq', (SELECT max(id) FROM \"app_audit\"))"
        assert f"As the tables' owner, run `{setval}`;" in behind.value.message
        with postgres_engine.connect(name) as admin:
            admin.execute(setval)  # type: ignore[arg-type]
        assert pg.open_database(url, PROFILE).profile == PROFILE
        assert store.delete_session(created["id"]).kind == "session"

        # The default a holder's row took its backend from, changed. Before: the replica was
        # "not live" (`app status` listed none), and maintenance's refusal called it "a write
        # of a replica that has stopped ... still committing; retry in a moment".
        with postgres_engine.connect(name) as admin:
            admin.execute("ALTER TABLE app_holders ALTER COLUMN backend_pid SET DEFAULT 0")
        with pg.Holder(url, PROFILE).start() as holder:
            with pg.connect(url) as conn:
                assert [h["pid"] for h in pg.live_holders(conn)] == [os.getpid()]
            with (
                pytest.raises(ReplicasLiveError, match="1 live replica"),
                pg.maintenance(url, PROFILE, "empty the trash"),
            ):
                pass
            assert not holder.lost

        # A schema renamed under the replica: its statements' refusal names it.
        with postgres_engine.connect(name) as admin:
            admin.execute("ALTER SCHEMA public RENAME TO rt63_elsewhere")
        try:
            with pytest.raises(DatabaseRefusedError) as moved:
                store.get_session(session_id)
            assert moved.value.message.endswith(f"(SQLSTATE 42P01); {_REMEDY}")
        finally:
            with postgres_engine.connect(name) as admin:
                admin.execute("ALTER SCHEMA rt63_elsewhere RENAME TO public")
