"""Red team 64 on regress: the remote merge's durable commits (each write's ``BEGIN`` sets
``synchronous_commit`` for its transaction; each write reads, at its commit point, whether a
table or sequence of the app's is UNLOGGED).

What broke:

- The cost of the UNLOGGED check, which every write of a replica runs: its query picked the
  app's relations out of ``pg_class`` by ``relpersistence``, which no index has, and by a
  table name that may be the owner's rather than its own, so PostgreSQL read every row of
  ``pg_class`` on each write. In a database of 20,000 relations (other schemas' tables and
  their indexes, by hand on a cluster of its own) each write took 1.7 ms more than before
  the merge, and the cost grew with every table anyone made in the database. The query
  now finds the app's relations through ``pg_class``'s index on names and ``pg_depend``'s
  on what depends on them (0.25 ms there), and finds what it found before (the app's
  UNLOGGED tables and sequences in its schema, not another schema's).
- ``app data restamp`` of a database whose ``app_stamp`` (or any table of the app's) is
  UNLOGGED: every other command refuses to open it (red team 62), the re-stamp said "is now
  stamped 'production'", exit 0, committed the stamp and its audit row into tables a crash
  empties, and handed the object prefix over too (whose stamp a crash would then leave
  naming a profile the database no longer did). It is now refused as the open refuses it
  (``tables_unlogged``, exit 78, the ``ALTER ... SET LOGGED`` statements), before the
  database or the prefix changes.
"""

from __future__ import annotations

from typing import Any

import pytest
from engines import PostgresEngine

from app.remote import pg
from app.remote.errors import UnloggedTablesError

# Relations enough that PostgreSQL's planner reads pg_class through an index where it can.
_MANY = 1500


def _rows_read(conn: Any, table: str) -> int:
    row = conn.execute(
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)"
        " FROM pg_stat_xact_sys_tables WHERE relname = %s",
        (table,),
    ).fetchone()
    return int(row[0])


def test_a_write_s_unlogged_check_reads_the_app_s_relations_not_the_whole_catalog(
    postgres_engine: PostgresEngine,
) -> None:
    # Before: the check read every row of pg_class (1,500 relations more: 1,500 rows more).
    name = postgres_engine.create_database("rt64d")
    try:
        with postgres_engine.connect(name) as conn:
            conn.execute("CREATE SCHEMA app; CREATE SCHEMA other")
            conn.execute(
                f"DO $$ BEGIN FOR i IN 1..{_MANY} LOOP"
                " EXECUTE format('CREATE TABLE other.t%s ()', i); END LOOP; END $$"
            )
            conn.execute("CREATE UNLOGGED TABLE other.app_files (id int)")
            conn.execute("CREATE TABLE app.app_files (id serial)")
            conn.execute("ANALYZE pg_class; ANALYZE pg_depend")
            conn.execute("SET search_path = app")
            with conn.transaction():
                before = _rows_read(conn, "pg_class")
                found = conn.execute(
                    f"SELECT c.relname {pg.UNLOGGED_FROM}", {"tables": list(pg.APP_TABLES)}
                ).fetchall()
                read = _rows_read(conn, "pg_class") - before
            # Another schema's UNLOGGED table of the app's name is not the app's.
            assert found == []
            conn.execute("ALTER SEQUENCE app_files_id_seq SET UNLOGGED")
            conn.execute("ALTER TABLE app_files SET UNLOGGED")
            with conn.transaction():
                found = conn.execute(
                    f"SELECT c.relname {pg.UNLOGGED_FROM}", {"tables": list(pg.APP_TABLES)}
                ).fetchall()
            assert sorted(found) == [("app_files",), ("app_files_id_seq",)]
        assert read < 100, f"the check read {read} rows of pg_class"
    finally:
        postgres_engine.drop_database(name)


def test_a_restamp_of_a_database_whose_tables_are_unlogged_is_refused(
    postgres_engine: PostgresEngine,
) -> None:
    # Before: the stamp and its audit row committed ("is now stamped 'production'", exit 0,
    # from `app data restamp`, which then hands the object prefix over).
    name = postgres_engine.create_database("rt64r")
    url = postgres_engine.url(name)
    try:
        pg.open_database(url, "development")
        with postgres_engine.connect(name) as conn:
            conn.execute("ALTER TABLE app_stamp SET UNLOGGED")
        with (
            pytest.raises(UnloggedTablesError) as refused,
            pg.maintenance(url, "production", "re-stamp it") as maintenance,
        ):
            maintenance.restamp("development")
        assert (refused.value.code, refused.value.exit_code) == ("tables_unlogged", 78)
        assert refused.value.message.startswith(
            f"profile 'production': database {pg.mask_url(url)} has the app's table "
            "app_stamp UNLOGGED"
        )
        assert 'As their owner, run `ALTER TABLE "app_stamp" SET LOGGED`' in (refused.value.message)
        with postgres_engine.connect(name) as conn:
            assert conn.execute("SELECT profile FROM app_stamp").fetchall() == [("development",)]
            audited = conn.execute("SELECT count(*) FROM app_audit WHERE operation = 'restamp'")
            assert audited.fetchone() == (0,)
    finally:
        postgres_engine.drop_database(name)
