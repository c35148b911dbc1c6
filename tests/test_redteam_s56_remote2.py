"""Red team 56 on remote, second round: a ``database_url`` that goes through a pooler.

What broke:

- A pooler in transaction mode (PgBouncer's ``pool_mode = transaction``) between the app and
  PostgreSQL: each transaction runs on whichever server connection is idle, and the session
  state it leaves there (the app's session-level advisory locks) stays with that server
  connection for the next client. The docs said not to, nothing detected it. A maintenance
  command's exclusive lock stayed on the server connection the pooler gave it; a replica
  started meanwhile was given that same server session, where PostgreSQL grants the shared
  lock at once (the session already holds the lock), and it served during the purge. A
  maintenance command given a replica's server session took the database exclusively the
  same way. Taking a hold now checks, in the transaction that takes it, that the server
  session holds none of the app's locks (a session PostgreSQL began for this connection
  holds none): otherwise ``transaction_pooler`` (exit 78), naming the pooler mode, the
  backend and the fix. A replica's shared lock, its row and the row's lock are taken in
  one transaction (one server session), and its heartbeat, as a maintenance command's
  check, notices a statement run in another server session than the one holding its locks,
  and stops (``holder_lost``, ``maintenance_lost``) naming the pooler.

- Behind a pooler in session mode, which the docs recommend: a pooler answers each client
  with a process id of its own (``BackendKeyData``), and a maintenance command looked for
  its exclusive lock under that id at every write's commit, found none, and stopped (exit
  70, "lost the connection ... backend 4242 no longer holds its exclusive lock"): no
  ``empty-trash`` or ``purge`` ever worked there. It now keeps the server session's own id
  (``pg_backend_pid()``, read in the transaction that took the lock).

All real: the suite's cluster, a pooler speaking PostgreSQL's protocol (tests/txpooler.py,
LIFO as PgBouncer's default), the holds ``app serve`` and the maintenance commands take (the
app's own code, in the test's process: a real ``app serve`` through the pooler, refused the
same way, took 4 s more, tried by hand).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import psycopg
import pytest
from engines import PostgresEngine
from replicas import wait_for
from txpooler import transaction_pooler

from app.errors import AppError
from app.remote import pg


@dataclasses.dataclass(frozen=True)
class Pooled:
    """A database of the run's, stamped for production (each test reaches it through a
    pooler of its own: locks a pooler's server connection keeps outlive the test)."""

    direct_url: str
    name: str


@pytest.fixture(scope="module")
def pooled(postgres_engine: PostgresEngine) -> Iterator[Pooled]:
    name = postgres_engine.create_database("pooled")
    direct = postgres_engine.url(name)
    pg.open_database(direct, "production")
    try:
        yield Pooled(direct, name)
    finally:
        postgres_engine.drop_database(name)


def test_a_replica_behind_a_transaction_pooler_is_refused_while_maintenance_holds_the_database(
    postgres_engine: PostgresEngine, pooled: Pooled
) -> None:
    """Maintenance's exclusive lock stays on the server connection the pooler gave it; a
    replica whose transaction the pooler ran there took its shared lock in that same
    session, which PostgreSQL grants at once: it served during maintenance. (By hand, a
    real ``app serve`` through this pooler did: it served, and its row was listed live,
    while the purge held the database.)"""
    # A pooler of its own: maintenance's unlock, run by this pooler on whichever server
    # connection it picks, may leave the lock on the one that took it until the pooler
    # closes, and a later test's maintenance was then refused as beside a live holder.
    with (
        transaction_pooler(postgres_engine.host, postgres_engine.port) as pooler,
        pg.maintenance(
            url := pooler.url(pooled.name, postgres_engine.user),
            "production",
            "purge every session",
        ),
        pytest.raises(AppError) as refused,
    ):
        pg.Holder(url, "production", ping_seconds=3600).start().close()
    assert refused.value.code == "transaction_pooler"
    assert refused.value.exit_code == 78
    message = str(refused.value)
    assert "is reached through a connection pooler in transaction mode" in message
    assert "already holds 1 of the app's advisory locks" in message
    assert "refusing serving, nothing was changed" in message
    assert "pool_mode = session" in message
    with psycopg.connect(pooled.direct_url, autocommit=True) as conn:
        assert pg.live_holders(conn) == []


def test_maintenance_behind_a_transaction_pooler_is_refused_while_a_replica_holds_it(
    postgres_engine: PostgresEngine, pooled: Pooled
) -> None:
    """The other way round: a replica's locks stay on its server connection, and a
    maintenance command given it took the lock exclusively in that same session (then
    stopped at its first write, blaming a lost connection)."""
    with (
        transaction_pooler(postgres_engine.host, postgres_engine.port) as pooler,
        pg.Holder(
            pooled_url := pooler.url(pooled.name, postgres_engine.user),
            "production",
            ping_seconds=3600,
        ) as holder,
    ):
        with (
            pytest.raises(AppError) as refused,
            pg.maintenance(pooled_url, "production", "empty the trash"),
        ):
            pass
        assert not holder.lost
    assert refused.value.code == "transaction_pooler"
    assert refused.value.exit_code == 78
    message = str(refused.value)
    assert "connection pooler in transaction mode" in message
    assert "refusing the hold to empty the trash, nothing was changed" in message


def test_a_hold_whose_next_statement_runs_in_another_server_session_is_lost(
    postgres_engine: PostgresEngine, pooled: Pooled
) -> None:
    """A pooler that gives a transaction another server connection than the one holding
    the locks (another client has that one): the replica's heartbeat and maintenance's
    check say so and stop, naming the pooler, rather than hold nothing. (Each on a pooler
    of its own: the locks stay on the pooler's server connection until it is closed.)"""
    name, user = pooled.name, postgres_engine.user
    with transaction_pooler(postgres_engine.host, postgres_engine.port) as pooler:
        url = pooler.url(name, user)
        # The server connection the holder just gave back, kept by another in a transaction.
        with pg.Holder(url, "production") as holder, psycopg.connect(url) as other:
            taken = other.execute("SELECT pg_backend_pid()").fetchone()
            assert taken == (holder.row["backend_pid"],)
            wait_for(lambda: holder.lost, "the heartbeat to notice")
    lost = str(holder.error)
    assert "statements now run in server session" in lost
    assert "goes through a connection pooler in transaction mode" in lost
    assert "refuses every write and stops" in lost and "pool_mode = session" in lost
    with transaction_pooler(postgres_engine.host, postgres_engine.port) as pooler:
        url = pooler.url(name, user)
        with (
            pg.maintenance(url, "production", "purge every session") as held,
            psycopg.connect(url) as other,
        ):
            assert other.execute("SELECT pg_backend_pid()").fetchone() == (held.backend_pid,)
            with pytest.raises(AppError, match="pooler in transaction mode") as stopped:
                held.check()
    assert stopped.value.code == "maintenance_lost"


def test_maintenance_behind_a_pooler_in_session_mode_finds_its_own_lock(
    postgres_engine: PostgresEngine, pooled: Pooled
) -> None:
    """A pooler answers each client with a process id of its own (``BackendKeyData``): a
    maintenance command looked for its exclusive lock under that id at each write's commit,
    found none, and stopped as if its connection were lost, behind the pooler mode the docs
    recommend."""
    name = pooled.name
    host, port, user = postgres_engine.host, postgres_engine.port, postgres_engine.user
    with (
        transaction_pooler(host, port, session_mode=True) as pooler,
        pg.maintenance(pooler.url(name, user), "production", "purge") as held,
        psycopg.connect(pooled.direct_url) as direct,
    ):
        assert held.conn.info.backend_pid == 4242  # the pooler's
        held.check()
        held.still_held(direct)
