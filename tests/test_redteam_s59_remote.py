"""Red team 59 on PostgreSQL and object storage.

What broke:

- A connection parameter given empty (``dbname=``, ``?port=``, ``host=''``, a service
  section's ``dbname=``; an empty address in a ``hostaddr`` list). libpq takes an empty value
  as given: it fills it with its built-in default (the user's name, 5432, the socket
  directory; the host named at the same place of the list), never with the ``PG*``
  variable, which fills only a parameter not given at all (checked against the suite's
  cluster with libpq's own connection). The app read an empty value as unset and took the
  variable: beside a shell's ``PGDATABASE``, staging's ``dbname=`` was that database to the
  overlap check and the user's (production's) to libpq, two profiles on one database with
  nothing said; and under a test run with ``PGDATABASE`` naming the run's scratch database,
  the sandbox took ``dbname=`` for the scratch database and a store's pool connected to the
  database named after the URL's user, outside the run (production's, where it is named
  after its role on testing's server). Each parameter is now read as libpq reads it, an
  empty one as given, so the pair is refused (``resource_overlap``) and the sandbox refuses
  the URL before any connection, naming the database libpq reaches.

- A store's pool checked its URL once, as it opened, and never where each connection it
  opened later reached: libpq reads the ``PG*`` variables as it connects, and a test that
  changed ``PGDATABASE`` afterwards had the pool's next connection reach a database outside
  the run. Each connection the pool opens is now checked where libpq reached, as every other
  connection of the app's own code was (red team 37).

- Every message naming a ``database_url`` of several hosts (a standby listed before the
  primary, whose refusal says to point it at the primary) showed the list with one port, the
  first address's after sorting, for every host. Each host is now shown with its own port,
  in the URL's order.

- ``app data check --repair`` whose connections reached two servers (``load_balance_hosts``
  over a primary and its standby, a balancer): maintenance held the primary, the store's
  pool read the rows on the standby, whose replay lagged (paused, or delayed by
  ``recovery_min_apply_delay``) past the orphan grace. The object of a file the primary
  acknowledged since was "named by no row" and deleted. The check now counts an object's
  age from the last commit the rows' server replayed, not from now. Its test needs a
  standby of the suite's cluster (about 3 s), so it runs with ``RT_STANDBY=1``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from engines import PostgresEngine, S3Engine
from test_redteam_s39_ops import _overlaps, _settings, standby_of
from test_remote_store import _objects

from app import sandbox
from app.errors import SandboxViolationError
from app.remote import db, pg
from app.remote.errors import DatabaseUnavailableError
from app.remote.objects import ObjectStore
from app.remote.store import RemoteStore

_KEYS = {"blob_url": "s3://b/x", "s3_endpoint_url": "http://127.0.0.1:9"}
_PG_VARIABLES = ("PGUSER", "PGDATABASE", "PGSERVICE", "PGHOST", "PGHOSTADDR", "PGPORT")


@pytest.fixture(scope="module")
def named_after_its_role(postgres_engine: PostgresEngine) -> Iterator[str]:
    """A role and a database of the same name, outside the run (as production's ``app``
    database of role ``app`` is): the database libpq names after the user by default."""
    name = f"rt59_{os.getpid()}"
    ident = psycopg.sql.Identifier(name)
    with postgres_engine.connect() as conn:
        conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(ident))
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {} OWNER {}").format(ident, ident))
    yield name
    with postgres_engine.connect() as conn:
        conn.execute(psycopg.sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident))
        conn.execute(psycopg.sql.SQL("DROP ROLE {}").format(ident))


@pytest.fixture(autouse=True)
def _no_pg_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq's variables as each test sets them, none from the shell that runs the suite."""
    for name in _PG_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _overlap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, production: str, staging: str) -> str:
    """The one overlap the configuration reports between the two profiles' databases."""
    _settings(
        tmp_path,
        monkeypatch,
        production={**_KEYS, "database_url": production},
        staging={**_KEYS, "blob_url": "s3://b/y", "database_url": staging},
    )
    [overlap] = _overlaps()
    assert overlap.kind == "database"
    return overlap.message


@dataclass(frozen=True)
class Beside:
    """A run's scratch database and prefix, beside a database outside the run."""

    role: str  # the outside database's name, and its role's
    scratch: str  # the scratch database's name
    objects: ObjectStore


@pytest.fixture
def beside(
    named_after_its_role: str, database_url: str, s3_engine: S3Engine, blob_url: str
) -> Beside:
    scratch = database_url.rpartition("/")[2]
    return Beside(named_after_its_role, scratch, _objects(s3_engine, blob_url))


def _reached(url: str) -> tuple[str, int]:
    with psycopg.connect(url) as conn:
        return conn.info.dbname, conn.info.port


def test_an_empty_dbname_is_the_user_s_database_to_the_overlap_check_as_to_libpq(
    postgres_engine: PostgresEngine,
    named_after_its_role: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    role, port = named_after_its_role, postgres_engine.port
    monkeypatch.setenv("PGDATABASE", "postgres")  # a developer's shell
    named = f"postgresql://{role}@127.0.0.1:{port}/{role}"
    empty = f"host=127.0.0.1 port={port} user={role} dbname="
    # It is the same database, for real: libpq does not fill a given value from PGDATABASE.
    assert _reached(empty) == _reached(named) == (role, port)
    # Before: none, the check taking staging's for database 'postgres'.
    message = _overlap(tmp_path, monkeypatch, named, empty)
    assert "'production' and 'staging' name the same database" in message


@pytest.mark.parametrize(
    ("variable", "staging", "production"),
    [
        # libpq's own default port, not PGPORT's.
        ("PGPORT=6543", "postgresql://u@db.lan/app?port=", "postgresql://u@db.lan:5432/app"),
        # The default socket directory (this machine), not PGHOST's host.
        ("PGHOST=db.lan", "host='' port=5432 user=u dbname=app", "postgresql://u@localhost/app"),
        # An empty address of a hostaddr list: the host named at its place.
        ("PGUSER=u", "host=db.lan,x hostaddr=,10.0.0.9 dbname=app",
         "postgresql://u@db.lan/app"),
    ],
)  # fmt: skip
def test_an_empty_parameter_is_libpq_s_default_to_the_overlap_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, staging: str, production: str
) -> None:
    monkeypatch.setenv(*variable.split("="))
    _overlap(tmp_path, monkeypatch, production, staging)


def test_a_test_s_empty_dbname_under_a_scratch_pgdatabase_is_refused_by_the_sandbox(
    beside: Beside, postgres_engine: PostgresEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    role, port, scratch = beside.role, postgres_engine.port, beside.scratch
    monkeypatch.setenv("PGDATABASE", scratch)
    url = f"host=127.0.0.1 port={port} user={role} dbname="
    # Before: taken for the scratch database; the store's pool reached the role's own.
    with pytest.raises(SandboxViolationError) as refused:
        RemoteStore(url, beside.objects, "testing", pool_size=1).close()
    message = " ".join(str(refused.value).split())
    assert f"/{role}, which is not a scratch database" in message, message
    with postgres_engine.connect(role) as conn:
        tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        assert conn.execute(tables).fetchone() == (0,)  # nothing was made there


def test_a_pool_s_later_connection_is_checked_where_libpq_reached(
    beside: Beside, postgres_engine: PostgresEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    role, port, scratch = beside.role, postgres_engine.port, beside.scratch
    monkeypatch.setattr(db, "_FAILING_WAIT_SECONDS", 0.05)  # how often a waiter looks
    monkeypatch.setenv("PGDATABASE", scratch)
    url = f"host=127.0.0.1 port={port} user=app"  # no dbname: PGDATABASE's, as it connects
    store = RemoteStore(url, beside.objects, "testing", pool_size=2)
    try:
        monkeypatch.setenv("PGDATABASE", role)
        with store.db.conn() as first:
            assert first.info.dbname == scratch
            # Before: the pool's second connection reached the role's database.
            with pytest.raises(SandboxViolationError) as refused, store.db.conn():
                pass
        message = " ".join(str(refused.value).split())
        assert f"/{role}, which is not a scratch database" in message, message
    finally:
        store.close()


def test_a_refusal_of_a_list_of_hosts_names_each_with_its_own_port(
    postgres_engine: PostgresEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = postgres_engine.port
    dbname = f"nosuch{sandbox.current_run().scratch}"  # a scratch name no database has
    # As a standby listed before the primary: libpq tries each host in turn, here the
    # first one answers nothing and the second has no such database.
    url = f"host=127.0.0.1,localhost port=1,{port} user=app dbname={dbname}"
    with pytest.raises(DatabaseUnavailableError) as refused:
        pg.connect(url).close()
    message = " ".join(str(refused.value).split())
    # Before: "postgresql://app@127.0.0.1,localhost:1/...", the second host given the
    # first one's port.
    assert f"database postgresql://app@127.0.0.1:1,localhost:{port}/{dbname}" in message
    assert f'database "{dbname}" does not exist' in message, message


@pytest.mark.skipif(
    not os.environ.get("RT_STANDBY"),
    reason="a standby of the suite's cluster (RT_STANDBY=1): about 3 s, past the file's share",
)
def test_a_check_on_a_lagging_standby_keeps_what_the_primary_acknowledged_since(
    postgres_engine: PostgresEngine, database_url: str, beside: Beside
) -> None:
    scratch = beside.scratch
    pg.open_database(database_url, "testing")
    with RemoteStore(database_url, beside.objects, "testing", kind="tests") as store:
        sid = store.create_session("t")["id"]
        store.files.put(sid, "old.txt", b"before the standby", replace=False)
        with standby_of(postgres_engine, promote=False) as standby:
            with standby.connect(scratch) as conn:
                conn.execute("SELECT pg_wal_replay_pause()")  # as recovery_min_apply_delay
            acknowledged = store.files.put(sid, "new.txt", b"acknowledged", replace=False)
            # A URL that reaches the standby (load_balance_hosts over both, a balancer):
            # the rows are its, the objects the store's; no grace, as past a long lag.
            behind = standby.url(scratch)
            lagging = RemoteStore(behind, beside.objects, "testing", orphan_grace=timedelta(0))
            with lagging:
                # Before: its object "named by no row: an upload whose transaction never
                # committed", to delete.
                assert lagging.check(repair=False).findings == []
            with (
                pg.maintenance(database_url, "testing", "check") as held,
                RemoteStore(
                    behind, beside.objects, "testing", kind="maintenance", maintenance=held,
                    orphan_grace=timedelta(0),
                ) as repairing,
            ):  # fmt: skip
                # Before: deleted, "repaired": an acknowledged file's bytes gone.
                assert repairing.check(repair=True).findings == []
        stream, entry = store.open_file(sid, "new.txt")
        with stream:
            assert stream.read() == b"acknowledged"
        assert entry == acknowledged
