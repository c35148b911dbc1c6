"""Every command waits on PostgreSQL for a bounded time, as a replica's requests do.

Red team 28 bounded the replicas' pooled connections (``database_wait_seconds``,
``database_lock_wait_seconds``). The connections the app opens itself were not: the first
open of the database (every command and every replica's start), a maintenance command's
hold, ``app status``, ``app doctor`` and ``app data restamp``. Behind a first open stopped
halfway (its transaction holds the schema lock), every ``app sessions list``, ``app data``
command and ``app serve`` waited for ever; a database that accepted the connection and then
stopped answering kept them waiting too. All real: the suite's cluster, a transaction of the
test's own holding the lock, and a TCP proxy that goes silent at a connection's first
statement.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import forked_app
import psycopg
from engines import PostgresEngine, S3Engine
from replicas import Production, production_on
from test_redteam_s28_remote import _Proxy

from app.remote import pg

# Short bounds, as a deployment's (30 s, 10 s) would be.
BOUNDS = {"APP_DATABASE_WAIT_SECONDS": "1", "APP_DATABASE_LOCK_WAIT_SECONDS": "0.5"}


class _SilentProxy(_Proxy):
    """A TCP proxy to the cluster that lets a connection in (start-up, authentication) and
    then never forwards its first statement: a database that accepted the connection and
    stopped answering, while the kernel still acknowledges every byte."""

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        if source.getsockname()[1] != self.port:  # the cluster's side: forwarded
            super()._pipe(source, target)
            return
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                # After start-up, a client's message begins with its type: Parse or Query
                # is a statement (p, lower case, is a password). It is never forwarded.
                if data[:1] in (b"P", b"Q"):
                    return
                target.sendall(data)


@contextlib.contextmanager
def _silent_database(production: Production, port: int) -> Iterator[str]:
    proxy = _SilentProxy(port)
    user_host, _, dbname = production.database_url.rpartition("/")
    user = user_host.removeprefix("postgresql://").partition("@")[0]
    try:
        yield f"postgresql://{user}@127.0.0.1:{proxy.port}/{dbname}"
    finally:
        proxy.close()


def _run(production: Production, args: tuple[str, ...], **extra: str) -> tuple[int, str, str]:
    # Forked from the run's zygote (tests/forked_app.py), which bounds each at 120 s: a
    # command past the bounds and its start-up by that much waited unbounded.
    done = forked_app.run({**production.env, **BOUNDS, **extra}, list(args))
    return done.returncode, done.stdout, done.stderr


def _side_by_side(
    production: Production, commands: list[tuple[tuple[str, ...], dict[str, str]]]
) -> list[tuple[int, str, str]]:
    """Commands (arguments, extra environment) run at once: their start-ups overlap."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda command: _run(production, command[0], **command[1]), commands))


def test_no_command_waits_for_ever_on_the_database(
    tmp_path: Path, postgres_engine: PostgresEngine, s3_engine: S3Engine, blob_url: str
) -> None:
    with production_on(tmp_path, postgres_engine, s3_engine, blob_url) as production:
        replica = production.start()
        with production.client(replica) as client:
            kept = client.post("/sessions", json={"title": "kept"}).json()["id"]
            trashed = client.post("/sessions", json={"title": "trashed"}).json()["id"]
            assert client.delete(f"/sessions/{trashed}").status_code == 200
        replica.stop()

        # Side by side: (1) a first open stopped halfway, its transaction holding the schema
        # lock; (2) a database that takes the connection, then answers nothing.
        lock_waits: list[tuple[str, ...]] = [
            ("sessions", "list"),
            ("data", "empty-trash", "--yes-i-mean-it"),
            ("data", "check"),
            ("serve", "--port", "0"),
        ]
        silent_ones: list[tuple[str, ...]] = [
            ("status",),
            ("doctor",),
            ("data", "purge", "--yes-i-mean-it"),
            ("data", "restamp", "--from", "development", "--yes-i-mean-it"),
        ]
        with (
            psycopg.connect(production.database_url) as blocker,
            _silent_database(production, postgres_engine.port) as silent,
        ):
            blocker.execute("SELECT pg_advisory_xact_lock(%s, %s)", pg.SCHEMA_LOCK)
            done = _side_by_side(
                production,
                [(args, {}) for args in lock_waits]
                + [(args, {"APP_DATABASE_URL": silent}) for args in silent_ones],
            )
        refused, answers = (
            done[: len(lock_waits)],
            dict(zip(silent_ones, done[len(lock_waits) :], strict=True)),
        )
        for args, (code, _, err) in zip(lock_waits, refused, strict=True):
            assert code == 69, (args, err)
            assert "refused opening it for profile 'production'" in err, (args, err)
            assert "lock timeout (SQLSTATE 55P03); nothing was changed" in err, (args, err)
            assert "pg_blocking_pids" in err  # who holds it
            assert "database_lock_wait_seconds (APP_DATABASE_LOCK_WAIT_SECONDS)" in err

        code, out, err = answers[("status",)]
        assert code == 0, err  # status only looks, and says what it could not see
        assert "did not answer the settings of a connection (app status) within 1 s" in out
        assert "not stamped yet" not in out and "nobody" not in out
        assert "served by: unknown, since the database could not be read" in out
        code, out, err = answers[("doctor",)]
        assert code == 69, out + err
        assert "database: postgresql://" in out and "connected, then no answer within 1 s" in out
        assert "accepted the connection, then did not answer within 1 s" in err, err
        assert "database_wait_seconds, from environment APP_DATABASE_WAIT_SECONDS" in err
        for args in silent_ones[2:]:
            code, _, err = answers[args]
            assert code == 69, (args, err)
            assert "did not answer the settings of a connection" in err, (args, err)
            assert "within 1 s" in err and "nothing was changed" in err
            assert "database_wait_seconds (APP_DATABASE_WAIT_SECONDS)" in err

        # Nothing was changed: the trash still holds its session, the stamp is production's.
        (code, trash, err), (_, listed, _) = _side_by_side(
            production, [(("sessions", "list", "--trash"), {}), (("sessions", "list"), {})]
        )
        assert code == 0, err
        assert trashed in trash
        assert kept in listed
        with psycopg.connect(production.database_url) as conn:
            assert conn.execute("SELECT profile FROM app_stamp").fetchone() == ("production",)
