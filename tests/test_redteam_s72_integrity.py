"""Red team 72 on integrity (branch rt-integrity72): see docs/explanation/attacks/.

What broke: session 72 had a change refused by one connection's stale settings renew the whole
pool (psycopg_pool's ``drain``), for a read-only refusal and for a statement past its
``statement_timeout`` alike. Neither says that a setting is stale: a timeout that was always
there fires on a slow database, and a database that stays read-only (a standby, a freeze)
refuses every change. Each such refusal closed every idle connection of the pool and opened
as many again: under a storm of timeouts (one every 30 ms, two readers beside it) about three
connections were opened per refusal and the readers served about half as many reads, on a
database already slow. The pool is renewed now only where the database's or the role's
settings (``ALTER DATABASE``/``ALTER ROLE ... SET``, which a session takes once, when it begins)
are not those the refusing connection began with; otherwise only that connection goes.

What held (the same storm, by a probe): every change acknowledged while its siblings were
renewed under it is stored, and the pool never held more than its size.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import psycopg
import pytest

from app.remote.db import Connection, Database
from app.remote.errors import DatabaseRefusedError


def _admin(database_url: str) -> psycopg.Connection[tuple[object, ...]]:
    # A session that may write whatever the database's setting is.
    options = "-c default_transaction_read_only=off"
    return psycopg.connect(database_url, autocommit=True, options=options)


def _read_only(database_url: str, value: str) -> None:
    dbname = database_url.rpartition("/")[2]
    with _admin(database_url) as admin:
        admin.execute(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = {value}')


def _three_idle(db: Database) -> list[Connection]:
    """The pool's three connections, each opened (as many as it holds) and given back."""
    with ExitStack() as lent:
        return [lent.enter_context(db.conn()) for _ in range(3)]


@contextmanager
def _pool_of_three(database_url: str) -> Iterator[tuple[Database, list[Connection]]]:
    """A pool whose three connections are open and idle, and those connections."""
    db = Database(database_url, "test", holder=None, kind="test", pool_size=3)
    try:
        yield db, _three_idle(db)
    finally:
        db.close()


def _insert(db: Database, value: int) -> None:
    with db.write("an insert") as conn:
        conn.execute("INSERT INTO t VALUES (%s)", (value,))


def test_a_statement_past_its_timeout_renews_its_own_connection_not_the_pool(
    database_url: str,
) -> None:
    with _pool_of_three(database_url) as (db, opened):
        timed_out = pytest.raises(DatabaseRefusedError, match=r"timeout \(SQLSTATE 57014\)")
        with timed_out, db.conn() as conn:
            conn.execute("SET statement_timeout = 1")
            conn.execute("SELECT pg_sleep(0.05)")
        # Before: all three closed (and opened again), by each such refusal.
        assert [c.closed for c in opened].count(True) == 1, [c.closed for c in opened]
        with db.conn() as conn:
            assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}


def test_a_database_that_stays_read_only_renews_the_pool_once_its_setting_is_reset(
    database_url: str,
) -> None:
    with _admin(database_url) as admin:
        admin.execute("CREATE TABLE t (x int)")
    _read_only(database_url, "on")
    with _pool_of_three(database_url) as (db, opened):
        with pytest.raises(DatabaseRefusedError, match=r"read-only transaction \(SQLSTATE 25006\)"):
            _insert(db, 1)
        # Still read-only: the refusing connection goes, its siblings (as read-only as a new
        # one would be) stay. Before: all three closed and opened again at each refused change.
        assert [c.closed for c in opened].count(True) == 1, [c.closed for c in opened]
        stale = _three_idle(db)  # the one that went made again, read-only
        _read_only(database_url, "DEFAULT")
        # Reset: the next refusal finds the database's settings changed since its connection
        # began, and renews them all (session 72's drain), so the change after it is taken.
        with pytest.raises(DatabaseRefusedError, match=r"SQLSTATE 25006"):
            _insert(db, 2)
        assert all(c.closed for c in stale), [c.closed for c in stale]
        _insert(db, 3)
    with _admin(database_url) as admin:
        assert admin.execute("SELECT array_agg(x) FROM t").fetchone() == ([3],)
