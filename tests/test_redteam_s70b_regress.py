"""Red team 70 on regress, integrity (branch rt-regress70b): see
docs/explanation/attacks/layer-7-atomic-writes.md.

What got through: on PostgreSQL, each upload of a name new to a session that held 200,000
trashed rows looked for the name's newest trashed row (`Database.change`, under the
session's lock) through the index of trashed rows by time (every session's): 100 to 125 ms
of the database's time (bench/trashed_lookup.py), where any client makes such a session by
replacing files. A file's 404 and a restore sorted every trashed row of its session.

What changed: the index ``app_files_trashed`` (`pg.TRASHED_INDEX`), of trashed rows by
session and name, newest first as a restore takes them; a new database has it, one made
before is reported by `app data check` (``index-missing``) and given it by ``--repair``
under maintenance.
"""

from __future__ import annotations

from typing import Any

import psycopg
from engines import PostgresEngine, S3Engine, new_blob_url
from test_remote_store import PROFILE, _maintenance

from app.remote import db, trash

SESSION = "0" * 31 + "1"


def _filled(url: str) -> None:
    """One session of 100 files, each replaced 20 times, its trashed rows as the app writes
    them; and statistics, as autovacuum would have them."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO app_sessions (id, title, created_at, updated_at)"
            " VALUES (%s, 'made', now(), now())",
            (SESSION,),
        )
        conn.execute(
            "INSERT INTO app_files (session_id, name, blob, size, sha256, uploaded_at,"
            " deleted_at, deleted_reason, trash_name)"
            " SELECT %s, 'f-' || n || '.txt', md5(n || '-' || v), 1, repeat('0', 64), now(),"
            " now() - (v || ' seconds')::interval, 'replace',"
            " to_char(now() - (v || ' seconds')::interval, 'YYYYMMDD\"T\"HH24MISSUS\"Z\"')"
            " || '-' || %s || '-file-' || md5(n || '-' || v)"
            " FROM generate_series(1, 100) n, generate_series(1, 20) v",
            (SESSION, SESSION),
        )
        conn.execute("ANALYZE app_files")


def _plans(url: str) -> dict[str, str]:
    """The plan of each look for a file's trashed rows, as the app's statements are."""
    looks: dict[str, tuple[Any, tuple[object, ...]]] = {
        "a 404's": (trash._NEWEST_TRASHED, (SESSION, "new.txt")),
        "a restore's": (trash._TRASHED_FILE, (SESSION, "f-50.txt", None, None)),
        "an upload's": (db.NEWEST_DELETE, (SESSION, "new.txt")),
    }
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            what: "\n".join(row[0] for row in conn.execute(b"EXPLAIN " + sql.encode(), args))
            for what, (sql, args) in looks.items()
        }


def test_each_look_for_a_files_trashed_rows_takes_their_index(
    postgres_engine: PostgresEngine,
) -> None:
    with postgres_engine.opened_database(PROFILE) as (_, url):
        _filled(url)
        plans = _plans(url)
    # Before: the upload's through app_files_trash, every trashed row of every session; the
    # 404's and the restore's through app_files_session, then a sort of the session's rows.
    for what, plan in plans.items():
        assert "Index Scan using app_files_trashed on app_files" in plan, (what, plan)
        assert "Sort" not in plan, (what, plan)


def test_a_database_made_before_the_index_is_told_of_it_and_given_it_by_the_repair(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    with postgres_engine.opened_database(PROFILE) as (name, url):
        opened = (url, new_blob_url(s3_engine))
        with postgres_engine.connect(name) as admin:
            admin.execute("DROP INDEX app_files_trashed")  # as a database made before it
        with _maintenance(s3_engine, opened) as maintenance:
            found = maintenance.check().findings
            assert [(f.problem, f.target, f.repaired) for f in found] == [
                ("index-missing", "app_files_trashed", False)
            ]
            assert "the database has no index app_files_trashed" in found[0].detail
            assert "an upload of a name new to a session that holds many trashed rows looks " in (
                found[0].detail
            )
            assert found[0].repair == (
                "make it (`app data check --repair`, with every replica stopped: it holds "
                "writes to app_files while it is built)"
            )
            repaired = maintenance.check(repair=True).findings
            assert [(f.problem, f.repaired) for f in repaired] == [("index-missing", True)]
            assert maintenance.check().findings == []
        _filled(url)
        for what, plan in _plans(url).items():
            assert "Index Scan using app_files_trashed on app_files" in plan, (what, plan)
