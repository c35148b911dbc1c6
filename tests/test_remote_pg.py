"""The PostgreSQL primitives against a real cluster: stamp, distinctness, live replicas."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from engines import PostgresEngine, scratch
from waits import until_set

from app.errors import EX_TEMPFAIL
from app.remote import pg
from app.remote.errors import (
    DatabaseUnavailableError,
    HolderLostError,
    MaintenanceRunningError,
    RemoteStampMismatchError,
    ReplicasLiveError,
    UnstampedNotEmptyError,
)

# A replica in another process: holds the database until its standard input closes.
_REPLICA = """
import sys
from app.remote.pg import Holder
holder = Holder(sys.argv[1], sys.argv[2], sys.argv[3]).start()
print(holder.row["backend_pid"], flush=True)
sys.stdin.read()
holder.close()
"""


def _backend_gone(database_url: str, backend_pid: int) -> None:
    # PostgreSQL ends a backend as soon as its client's socket closes; wait for that here
    # rather than assume it already happened.
    with psycopg.connect(database_url, autocommit=True) as conn:
        while conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend_pid,)
        ).fetchone():
            time.sleep(0.01)


@pytest.fixture
def stamped(database_url: str) -> str:
    pg.open_database(database_url, "production")
    return database_url


class Replica:
    """`app serve` stood for by another process that holds the database until it is told."""

    def __init__(self, database_url: str, url: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _REPLICA, database_url, "production", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.backend_pid = int(self.process.stdout.readline())
        self.pid = self.process.pid

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.fixture
def replicas(stamped: str) -> Iterator[list[Replica]]:
    started = [Replica(stamped, f"http://10.0.0.{n}:8000") for n in (1, 2)]
    yield started
    for replica in started:
        replica.kill()


# --- stamp ---------------------------------------------------------------------------------


def test_the_first_open_creates_the_tables_and_stamps_the_profile(database_url: str) -> None:
    stamp = pg.open_database(database_url, "production")
    assert (stamp.profile, stamp.schema_version) == ("production", pg.SCHEMA_VERSION)
    assert pg.open_database(database_url, "production") == stamp
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT operation FROM app_audit").fetchall()
    assert rows == [("stamp",)]


def test_another_profile_is_refused_with_the_restamp_command(stamped: str) -> None:
    with pytest.raises(RemoteStampMismatchError) as caught:
        pg.open_database(stamped, "testing", protected=lambda stamped: stamped == "production")
    message = str(caught.value)
    assert "belongs to profile 'production'" in message
    assert "app data restamp --profile testing --from production (add --yes-i-mean-it" in message
    assert caught.value.exit_code == 78


def test_a_database_with_other_tables_and_no_stamp_is_refused(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE TABLE invoices (id int)")
    with pytest.raises(UnstampedNotEmptyError, match=r"public\.invoices"):
        pg.open_database(database_url, "production")
    with psycopg.connect(database_url) as conn:
        assert pg.read_stamp(conn) is None


def test_two_first_opens_at_once_stamp_once(database_url: str) -> None:
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(pg.open_database(database_url, "prod")))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1


def test_restamp_under_maintenance_hands_the_database_over_and_audits(stamped: str) -> None:
    with pg.maintenance(stamped, "staging", "re-stamp") as held:
        with pytest.raises(RemoteStampMismatchError, match="--from production"):
            held.restamp("development")
        assert held.restamp("production").profile == "staging"
    assert pg.open_database(stamped, "staging").restamped_from == "production"


def test_the_audit_table_is_append_only(stamped: str) -> None:
    with psycopg.connect(stamped) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("DELETE FROM app_audit")
        conn.rollback()
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("TRUNCATE app_audit")


# --- distinctness --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("postgresql://a@db.example:5432/app", "postgres://b:secret@DB.example/app"),
        ("postgresql://localhost/app", "postgresql://127.0.0.1:5432/app"),
        ("host=/var/run/postgresql dbname=app", "postgresql://[::1]/app"),
        ("postgresql://h1,db.example:5432/app", "host=db.example port=5432 dbname=app"),
    ],
)
def test_the_same_database_is_recognised_however_it_is_spelled(first: str, second: str) -> None:
    assert pg.same_database(first, second)


@pytest.mark.parametrize(
    "other",
    ["postgresql://db.example:5432/app_test", "postgresql://db.example:5433/app"],
)
def test_another_port_or_name_is_another_database(other: str) -> None:
    assert not pg.same_database("postgresql://db.example/app", other)


def test_shown_urls_never_carry_the_password() -> None:
    shown = pg.mask_url("postgresql://app:hunter2@db.example/prod?sslmode=require")
    assert shown == "postgresql://app@db.example:5432/prod"


def test_an_unreachable_server_is_named_without_its_password(
    postgres_engine: PostgresEngine,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(DatabaseUnavailableError) as caught:
            pg.connect(f"postgresql://app:hunter2@127.0.0.1:{port}/nowhere{scratch()}")
    assert f"127.0.0.1:{port}/nowhere{scratch()}" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert caught.value.exit_code == 69


# --- live replicas -------------------------------------------------------------------------


def test_two_replicas_are_both_live_and_maintenance_names_both(stamped: str) -> None:
    with (
        pg.Holder(stamped, "production", "http://10.0.0.1:8000") as first,
        pg.Holder(stamped, "production", "http://10.0.0.2:8000") as second,
    ):
        with psycopg.connect(stamped) as conn:
            live = pg.live_holders(conn)
        assert [row["url"] for row in live] == ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]
        with (
            pytest.raises(ReplicasLiveError) as caught,
            pg.maintenance(stamped, "production", "empty the trash"),
        ):
            pytest.fail("maintenance ran beside live replicas")
        message = str(caught.value)
        assert message.startswith("cannot empty the trash: database ")
        assert "2 live replica(s)" in message
        for holder in (first, second):
            assert f"pid {os.getpid()}" in message
            assert f"serving {holder.url}" in message
            assert f"since {holder.row['since']}" in message
        assert f"host {socket.gethostname()}" in message
        assert caught.value.exit_code == EX_TEMPFAIL
    with pg.maintenance(stamped, "production", "empty the trash") as held:
        held.audit("empty-trash", "trash", {"sessions": 0})


def test_replicas_in_two_processes_are_live_until_one_is_killed(
    stamped: str, replicas: list[Replica]
) -> None:
    first, second = replicas
    with pytest.raises(ReplicasLiveError) as caught, pg.maintenance(stamped, "production", "wipe"):
        pass
    assert f"pid {first.pid}, profile production" in str(caught.value)
    assert f"pid {second.pid}, profile production" in str(caught.value)

    second.process.send_signal(signal.SIGKILL)
    second.kill()
    _backend_gone(stamped, second.backend_pid)
    with psycopg.connect(stamped) as conn:
        assert [row["pid"] for row in pg.live_holders(conn)] == [first.pid]
        # Its row is still there, just not live; a cleaner removes it.
        assert pg.clean_stale_holders(conn) == 1
    with pytest.raises(ReplicasLiveError) as caught, pg.maintenance(stamped, "production", "wipe"):
        pass
    assert f"pid {second.pid}" not in str(caught.value)

    assert first.process.stdin is not None
    first.process.stdin.close()  # a clean stop deletes its row
    assert first.process.wait() == 0
    with pg.maintenance(stamped, "production", "wipe") as held:
        assert pg.live_holders(held.conn) == []
        assert held.conn.execute("SELECT count(*) FROM app_holders").fetchone() == (0,)


def test_a_reused_backend_pid_does_not_revive_a_stale_row(stamped: str) -> None:
    with pg.Holder(stamped, "production") as holder, psycopg.connect(stamped) as conn:
        # A row left by a crashed replica whose backend pid is now another live replica's.
        conn.execute(
            "INSERT INTO app_holders (host, pid, profile, backend_pid) VALUES (%s, %s, %s, %s)",
            ("gone", 1, "production", holder.row["backend_pid"]),
        )
        conn.commit()
        assert [row["host"] for row in pg.live_holders(conn)] == [holder.row["host"]]


def test_maintenance_excludes_a_replica_from_starting(stamped: str) -> None:
    with pg.maintenance(stamped, "production", "wipe"):
        with pytest.raises(MaintenanceRunningError, match="app maintenance: wipe") as caught:
            pg.Holder(stamped, "production").start()
        assert caught.value.exit_code == EX_TEMPFAIL
        with (
            pytest.raises(ReplicasLiveError, match=r"app maintenance: wipe") as again,
            pg.maintenance(stamped, "production", "check"),
        ):
            pass
        assert "wait for that maintenance command to finish" in str(again.value)
    pg.Holder(stamped, "production").start().close()


def test_a_replica_notices_at_once_that_its_connection_was_terminated(stamped: str) -> None:
    noticed = threading.Event()
    holder = pg.Holder(stamped, "production", on_lost=lambda error: noticed.set())
    with holder:
        holder.check()
        with psycopg.connect(stamped, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (holder.row["backend_pid"],))
        until_set(noticed, holder._thread, "the holder's notice of its terminated connection")
        assert holder.lost
        with pytest.raises(HolderLostError, match="refuses every write") as caught:
            holder.check()
        assert "terminat" in caught.value.reason
        assert caught.value.http_status == 503
        with psycopg.connect(stamped) as conn:
            assert pg.live_holders(conn) == []
    with pg.maintenance(stamped, "production", "wipe"):
        pass


def test_a_replica_notices_that_the_server_stopped(postgres_engine: PostgresEngine) -> None:
    # Its own cluster, so that stopping it leaves the session's cluster alone.
    from engines import start_postgres

    engine = start_postgres()
    try:
        url = engine.url(engine.create_database())
        pg.open_database(url, "production")
        noticed = threading.Event()
        holder = pg.Holder(url, "production", on_lost=lambda error: noticed.set()).start()
        engine.stop()
        until_set(noticed, holder._thread, "the holder's notice of the stopped server")
        assert holder.lost
        holder.close()
    finally:
        engine.stop()


def test_a_scratch_database_is_created_beside_testing_and_dropped(database_url: str) -> None:
    suffix = f"_gw0{scratch()}"  # an xdist worker's, ending with the run's own suffix
    url = pg.create_scratch_database(database_url, suffix)
    assert pg.database_addresses(url)[0].dbname.endswith(suffix)
    assert not pg.same_database(url, database_url)
    assert pg.open_database(url, "testing").profile == "testing"
    with pg.Holder(url, "testing"):
        pg.drop_scratch_database(database_url, suffix)  # even while connected
    with pytest.raises(DatabaseUnavailableError, match=suffix):
        pg.connect(url)
    with pytest.raises(ValueError, match="not a scratch database"):
        pg.drop_scratch_database(database_url, "")
