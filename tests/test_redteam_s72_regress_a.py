"""Red team 72 on regress, round a (branch rt-regress72a): see docs/explanation/attacks/.

What broke: red team 72 on integrity renews the pool after a refusal as read-only only where
the text of ``pg_db_role_setting`` (the database's and the role's settings) is not what the
refusing connection read as it opened. A session takes those settings as its server process
starts, and the pool reads the text later, in its ``configure``: an ``ALTER DATABASE ... RESET
default_transaction_read_only`` committed between the two (a reset made while the pool opens
connections) left connections that are read-only for life with the reset's text as theirs.
Each then refused one change after the reset, alone, its siblings kept: the flake session 72's
drain was made for (red team 38's test), and ``/health`` said ``writes_stopped`` again after
each though writes were back. The refusing session's own setting is now asked
too: read-only by the database's or the role's setting, which no longer says so, it is stale.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import psycopg
import pytest

from app.remote.db import Connection, Database, _session_defaults
from app.remote.errors import DatabaseRefusedError


def _admin(database_url: str) -> psycopg.Connection[tuple[object, ...]]:
    # A session that may write whatever the database's setting is.
    options = "-c default_transaction_read_only=off"
    return psycopg.connect(database_url, autocommit=True, options=options)


def _alter(database_url: str, setting: str, *, role: bool = False) -> None:
    """``ALTER DATABASE`` (or the connecting role in it) ``setting``."""
    dbname = database_url.rpartition("/")[2]
    who = f'ROLE CURRENT_USER IN DATABASE "{dbname}"' if role else f'DATABASE "{dbname}"'
    with _admin(database_url) as admin:
        admin.execute(f"ALTER {who} {setting}")


@contextmanager
def _pool(database_url: str) -> Iterator[tuple[Database, list[Connection]]]:
    """A pool whose three connections are open and idle, and those connections."""
    db = Database(database_url, "test", holder=None, kind="test", pool_size=3)
    try:
        with ExitStack() as lent:
            opened = [lent.enter_context(db.conn()) for _ in range(3)]
        yield db, opened
    finally:
        db.close()


@contextmanager
def _opened_read_only_then_reset(database_url: str) -> Iterator[tuple[Database, list[Connection]]]:
    """A table ``t``, and `_pool`'s three connections opened while the database was
    read-only, then looked at by the pool's configure after the RESET: the interleaving of a
    RESET committed while each of them opened (its server process had taken the setting,
    and the pool read the catalog after the commit)."""
    with _admin(database_url) as admin:
        admin.execute("CREATE TABLE t (x int)")
    _alter(database_url, "SET default_transaction_read_only = on")
    with _pool(database_url) as (db, opened):
        _alter(database_url, "RESET default_transaction_read_only")
        for conn in opened:
            db._keep_session_defaults(conn)
        yield db, opened


def _stored(database_url: str) -> list[int]:
    with _admin(database_url) as admin:
        row = admin.execute("SELECT array_agg(x ORDER BY x) FROM t").fetchone()
    return list(row[0] or []) if row else []


def _insert(db: Database, value: int) -> None:
    with db.write("an insert") as conn:
        conn.execute("INSERT INTO t VALUES (%s)", (value,))


def test_a_reset_between_a_sessions_start_and_the_pools_look_still_renews_the_pool(
    database_url: str,
) -> None:
    with _opened_read_only_then_reset(database_url) as (db, opened):
        for conn in opened:
            # As it was before the pool kept such a connection from being lent (session 72,
            # below): where the look at its opening failed, its refusal is still judged.
            db._began_with[conn] = _session_defaults(conn)
        with pytest.raises(DatabaseRefusedError, match=r"read-only transaction \(SQLSTATE 25006\)"):
            _insert(db, 1)
        # Before: the refusing one alone, its two siblings each to refuse a change of its own.
        assert all(c.closed for c in opened), [c.closed for c in opened]
        _insert(db, 2)
        _insert(db, 3)
    assert _stored(database_url) == [2, 3]


def test_a_connection_that_opened_with_a_read_only_setting_reset_since_is_never_lent(
    database_url: str,
) -> None:
    # Session 72, after round a: the pool's drain at a refusal misses a connection that was
    # opening then (psycopg_pool adds it as new), and one change more was refused after the
    # reset (a flaky run of red team 38's test). Seen as it opens, such a connection is closed
    # as the pool gives it, and the change goes to one opened since: none is refused.
    with _opened_read_only_then_reset(database_url) as (db, opened):
        _insert(db, 1)
        assert all(c.closed for c in opened), [c.closed for c in opened]
    assert _stored(database_url) == [1]


def test_a_role_read_only_in_this_database_still_keeps_its_pool_at_a_refusal(
    database_url: str,
) -> None:
    # Read-only by ALTER ROLE ... IN DATABASE, which still says so: not stale, and the pool's
    # siblings (as read-only as new ones would be) stay.
    with _admin(database_url) as admin:
        admin.execute("CREATE TABLE t (x int)")
    _alter(database_url, "SET default_transaction_read_only = on", role=True)
    try:
        with _pool(database_url) as (db, opened):
            with pytest.raises(DatabaseRefusedError, match=r"SQLSTATE 25006"):
                _insert(db, 1)
            assert [c.closed for c in opened].count(True) == 1, [c.closed for c in opened]
    finally:
        _alter(database_url, "RESET ALL", role=True)
