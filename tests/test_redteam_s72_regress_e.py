"""Red team 72 on regress, round e (branch rt-regress72e): see docs/explanation/attacks/.

What broke: session 72's pool asks `_READ_ONLY_GONE` of each connection as it opens, to
never lend one whose session took a read-only setting reset since. That look reads
``pg_settings``, which the server builds whole for each look: every connection opened cost
about a fifth more server time, though a session that is not read-only (the ordinary case)
cannot be stale so. A reader's connections were looked at and closed too, though a reader
changes nothing and a read-only session serves it as well. The look is now asked only of a
writer's session that the server does not report as ``off``.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import psycopg
from psycopg.pq import Trace

from app.remote.db import Connection, Database


def _alter_database(database_url: str, setting: str) -> None:
    dbname = database_url.rpartition("/")[2]
    options = "-c default_transaction_read_only=off"  # may write whatever the setting is
    with psycopg.connect(database_url, autocommit=True, options=options) as admin:
        admin.execute(f'ALTER DATABASE "{dbname}" {setting}')


def _traced(db: Database, conn: Connection, trace: Path) -> str:
    """What the pool's look at an opening connection sends the server (libpq's trace)."""
    with trace.open("w") as out:
        conn.pgconn.trace(out.fileno())
        conn.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS)
        try:
            db._keep_session_defaults(conn)
        finally:
            conn.pgconn.untrace()
    return trace.read_text()


def test_a_writable_session_is_not_asked_for_pg_settings_as_it_opens(
    database_url: str, tmp_path: Path
) -> None:
    db = Database(database_url, "test", holder=None, kind="test", pool_size=1)
    try:
        with db.conn() as conn:
            sent = _traced(db, conn, tmp_path / "trace")
        # The defaults it began with are read (the look is traced) ...
        assert "pg_db_role_setting" in sent, sent
        # ... but not pg_settings: the server said the session is not read-only.
        assert "pg_settings" not in sent, sent
    finally:
        db.close()


def test_a_readers_read_only_session_from_a_setting_reset_since_is_still_lent(
    database_url: str,
) -> None:
    _alter_database(database_url, "SET default_transaction_read_only = on")
    try:
        reader = Database(
            database_url, "test", holder=None, kind="test", pool_size=2, read_only=True
        )
        try:
            with ExitStack() as lent:
                opened = [lent.enter_context(reader.conn()) for _ in range(2)]
            _alter_database(database_url, "RESET default_transaction_read_only")
            # A RESET committed while each opened: its session took the old setting.
            for conn in opened:
                reader._keep_session_defaults(conn)
            with reader.conn() as conn:
                assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
                assert conn in opened
            # Before: each was closed as the pool gave it, and a third opened for a read.
            assert not any(c.closed for c in opened), [c.closed for c in opened]
        finally:
            reader.close()
    finally:
        _alter_database(database_url, "RESET default_transaction_read_only")
