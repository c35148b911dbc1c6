"""Red team 41 on PostgreSQL and object storage: a server or a store that came back as
another, and two spellings of one object prefix.

All real: the suite's cluster, a streaming standby of it made with ``pg_basebackup`` and
promoted (a failover), the suite's ``weed``, real commands and ``app serve`` replicas
(tests/replicas.py), and a TCP relay that only moves bytes (as a virtual IP or a proxy in
front of a primary does, moved to the new primary by a failover). What broke:

- an upload (a replace) whose ``COMMIT`` was cut off by a failover: the old primary never
  committed it, and the relay then sent every new connection to the promoted standby. The
  store asks the database how a transaction whose answer it lost was decided
  (``pg_xact_status`` of its id), and asked the new primary: there the same transaction id
  had been taken, and committed, by another transaction (a promoted standby goes on from
  the last id it replayed). The replace was answered as saved, and neither server had it;
- an object store that came back without its data (its prefix empty, its stamp gone with
  every object: a store restarted without its volume, a new bucket, an endpoint now naming
  another store) while the database bound to it names objects there: every command and
  ``app serve`` stamped it anew and went on, and a live replica served on, acknowledging
  uploads into it that were lost once the right store was back;
- staging's own new database with production's ``blob_url`` (mistyped): the refusal named
  ``app data restamp --profile staging --from production``, which rewrote production's
  prefix stamp, so production's next start was refused, and staging's still was;
- a first open refused by its prefix (another application's objects, another profile's
  prefix) recorded that prefix for the database all the same: with ``blob_url`` mended,
  every command was refused, told to "fix blob_url" back to the refused prefix;
- a ``blob_url`` whose prefix holds a backslash, which SeaweedFS takes for a slash, and an
  ``s3_endpoint_url`` with a path, which boto3 puts before the bucket: each named another
  profile's prefix on the store while the overlap check took it for a prefix of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import forked_app
import psycopg
import pytest
import test_redteam_s37_remote
from engines import PostgresEngine, S3Engine
from replicas import Production
from test_redteam_s20_remote import _COMMIT, Relay, _close, _objects
from test_redteam_s37_remote import _stamp_object
from test_redteam_s39_ops import _kept, _overlaps, _settings, _settings_beside, standby_of

from app import sandbox
from app.config import inspect_profiles
from app.remote import pg
from app.remote.errors import CommitUnknownError, ConnectionLostError
from app.remote.store import RemoteStore

PROFILE = "production"


class FailoverRelay(Relay):
    """Red team 20's relay, which at the next ``COMMIT`` once armed fails over: the COMMIT
    is not forwarded (the old primary rolls the transaction back), ``before_switch`` runs,
    new connections go to ``standby``'s port, and every connection is cut."""

    _failover: tuple[int, Callable[[], object]] | None = None

    def fail_over(self, standby_port: int, before_switch: Callable[[], object]) -> None:
        self.done.clear()
        self._failover = (standby_port, before_switch)

    def _up(self, client: socket.socket, server: socket.socket, cut: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                armed = self._failover
                if armed is not None and _COMMIT in data:
                    self._failover = None
                    armed[1]()
                    self.done.set()
                    self._target = ("127.0.0.1", armed[0])
                    _close(*self._sockets)  # every connection to the old primary
                    return
                server.sendall(data)
        _close(client, server)


def _next_xid(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    row = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()
    assert row is not None
    return int(str(row[0]))


def _catch_up_transaction_ids(primary_url: str, standby_url: str) -> None:
    """Commit transactions on the promoted standby until it has handed out every id the
    old primary has, as the new primary's own traffic does after a failover."""
    with psycopg.connect(primary_url, autocommit=True) as primary:
        wanted = _next_xid(primary)
    with psycopg.connect(standby_url, autocommit=True) as standby:
        standby.execute("CREATE TEMP TABLE burn (n int)")
        while (behind := wanted - _next_xid(standby)) > 0:
            # One id per subtransaction; all committed with their transaction.
            standby.execute(
                "DO $$ BEGIN FOR i IN 1..%s LOOP BEGIN INSERT INTO burn VALUES (i);"
                " EXCEPTION WHEN others THEN NULL; END; END LOOP; END $$" % (behind + 1)
            )


def test_a_commit_cut_off_by_a_failover_is_not_answered_as_saved(
    postgres_engine: PostgresEngine, database_url: str, s3_engine: S3Engine, blob_url: str
) -> None:
    pg.open_database(database_url, PROFILE)
    dbname = database_url.rsplit("/", 1)[1]
    relay = FailoverRelay(postgres_engine.port)
    store = RemoteStore(
        f"postgresql://{postgres_engine.user}@127.0.0.1:{relay.port}/{dbname}",
        _objects(s3_engine, blob_url),
        PROFILE,
        orphan_grace=timedelta(0),
        pool_size=2,
    )
    try:
        with store:
            session = store.create_session("failover")["id"]
            store.put_file(session, "a.txt", b"first version")
            with standby_of(postgres_engine) as standby:
                standby_url = standby.url(dbname)
                relay.fail_over(
                    standby.port, lambda: _catch_up_transaction_ids(database_url, standby_url)
                )
                try:
                    answer: object = store.put_file(session, "a.txt", b"second", replace=True)
                except (CommitUnknownError, ConnectionLostError) as error:
                    answer = error
                assert relay.done.is_set()
                # Neither server has the second version: an answer "saved" would be false.
                for url in (database_url, standby_url):
                    with psycopg.connect(url, autocommit=True) as conn:
                        assert conn.execute(
                            "SELECT sha256 FROM app_files WHERE deleted_at IS NULL"
                        ).fetchall() == [(hashlib.sha256(b"first version").hexdigest(),)]
                # The answer is that nobody can say: the object it wrote is kept (a row of
                # the old primary may name it, should that one be brought back).
                assert isinstance(answer, CommitUnknownError), answer
                message = " ".join(answer.message.split())
                assert "the upload of 'a.txt' into session" in message
                assert "not the server the change was sent to" in message
                assert "failover" in message
    finally:
        relay.close()


production = test_redteam_s37_remote.production  # the fixture, as red team 37 made it
_RESTAMP = ("data", "restamp", "--profile", "production", "--from", "production")


def _empty_the_store(production: Production, s3_engine: S3Engine) -> dict[str, bytes]:
    """Every object under production's prefix gone, its stamp too, as a store that came
    back without its data (a volume not mounted, a new bucket) shows it; what was there."""
    client, bucket, key = _stamp_object(production, s3_engine)
    prefix = key.rpartition("/")[0] + "/"
    kept = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", ()):
            kept[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    assert key in kept and any("/blobs/" in name for name in kept)
    for name in kept:
        client.delete_object(Bucket=bucket, Key=name)
    return kept


def test_a_store_that_came_back_empty_is_not_stamped_anew_and_served(
    production: Production, s3_engine: S3Engine
) -> None:
    replica = production.start()
    _kept(production, replica)
    assert replica.stop() == 0, replica.output
    kept = _empty_the_store(production, s3_engine)
    # Before: every command (and `app serve`) stamped the empty prefix anew and went on; a
    # replica acknowledged uploads into it, lost once the store's data was back.
    for args in (("data", "check"), ("sessions", "list")):
        refused = production.run(*args)
        assert refused.returncode == 78, refused.stdout + refused.stderr
        message = " ".join(refused.stderr.split())
        assert "object prefix s3://" in message and "is empty" in message
        assert "has rows naming objects there (blobs/" in message
        assert "not the store they were written to" in message
        assert "nothing was changed" in message
        assert "Check s3_endpoint_url and blob_url" in message
        assert (
            "run `app data restamp --profile production --from production --yes-i-mean-it`"
            in message
        )
    client, bucket, key = _stamp_object(production, s3_engine)
    assert (
        client.list_objects_v2(Bucket=bucket, Prefix=key.rpartition("/")[0]).get("KeyCount") == 0
    ), "nothing was stamped"
    doctor = production.run("doctor")
    assert doctor.returncode == 78, doctor.stdout + doctor.stderr
    said = " ".join((doctor.stdout + doctor.stderr).split())
    assert "is empty, its stamp object" in said and "the first open stamps it" not in said
    # The store's data back: all is as it was.
    for name, data in kept.items():
        client.put_object(Bucket=bucket, Key=name, Body=data)
    checked = production.run("data", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Lost for good: the restamp the refusal names stamps the empty prefix, and `check`
    # then names the file whose object is gone.
    _empty_the_store(production, s3_engine)
    restamped = production.run(*_RESTAMP, "--yes-i-mean-it")
    assert restamped.returncode == 0, restamped.stdout + restamped.stderr
    checked = production.run("data", "check")
    assert "record-without-object" in checked.stdout + checked.stderr, checked.stdout
    assert "a.txt" in checked.stdout + checked.stderr


def test_a_replica_stops_once_its_store_lost_the_prefixs_stamp(
    production: Production, s3_engine: S3Engine
) -> None:
    replica = production.start(APP_LOCK_CHECK_SECONDS="0.2")
    _kept(production, replica)
    # Before: it served on, and acknowledged uploads into the store that had come back
    # without its data; its restart was refused (above), it never was.
    _empty_the_store(production, s3_engine)
    assert replica.process.wait(timeout=30) == 70, replica.output
    said = " ".join(replica.output.split())
    assert "stamp object .app-profile.json, there when this server opened it, is gone" in said
    assert "could be lost once the right store is back" in said
    assert "app data restamp --profile production --from production --yes-i-mean-it" in said
    assert "database_url names the database" not in said


def test_a_prefix_with_a_backslash_is_refused_as_a_setting(
    s3_engine: S3Engine, blob_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store takes the backslash for a slash: `<prefix>\x` is `<prefix>/x` there.
    bucket, _, prefix = blob_url.removeprefix("s3://").partition("/")
    client = s3_engine.client()
    client.put_object(Bucket=bucket, Key=f"{prefix}\\x/k", Body=b"one")
    assert client.get_object(Bucket=bucket, Key=f"{prefix}/x/k")["Body"].read() == b"one"
    # Before: the overlap check took `prod\x` for a prefix of its own beside `prod/x`, and
    # said nothing of two profiles sharing one.
    endpoint = s3_engine.endpoint_url
    _settings(
        tmp_path,
        monkeypatch,
        production={"database_url": "postgresql://app@db.internal/a", "blob_url": "s3://b/prod/x",
                    "s3_endpoint_url": endpoint},
        staging={"database_url": "postgresql://app@db.internal/b", "blob_url": "s3://b/prod\\\\x",
                 "s3_endpoint_url": endpoint},
    )  # fmt: skip
    report = inspect_profiles("development")
    said = " ".join(" ".join(str(p) for p in report.problems).split())
    assert "blob_url = 's3://b/prod\\\\x'" in said, said
    assert "a prefix with a backslash names a different prefix on each object store" in said
    assert "SeaweedFS takes it for '/'" in said


def test_an_endpoint_with_a_path_names_the_bucket_of_its_path(
    s3_engine: S3Engine, blob_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # boto3 puts the endpoint URL's path before the bucket in every request: with the
    # endpoint `<store>/<bucket>`, bucket `sub` and key `k` are key `sub/k` of `<bucket>`.
    bucket, _, prefix = blob_url.removeprefix("s3://").partition("/")
    through_a_path = s3_engine.client(f"{s3_engine.endpoint_url}/{bucket}")
    through_a_path.put_object(Bucket=prefix, Key="production/k", Body=b"one")
    key = f"{prefix}/production/k"
    assert s3_engine.client().get_object(Bucket=bucket, Key=key)["Body"].read() == b"one"
    # Before: another endpoint path was dropped, and another bucket another bucket: the
    # overlap check said nothing of two profiles sharing one prefix.
    _settings(
        tmp_path,
        monkeypatch,
        production={"database_url": "postgresql://app@db.internal/a",
                    "blob_url": f"s3://{bucket}/{prefix}/production",
                    "s3_endpoint_url": s3_engine.endpoint_url},
        staging={"database_url": "postgresql://app@db.internal/b",
                 "blob_url": f"s3://{prefix}/production/staging",
                 "s3_endpoint_url": f"{s3_engine.endpoint_url}/{bucket}/"},
    )  # fmt: skip
    [overlap] = _overlaps()
    assert overlap.kind == "object prefix"
    said = " ".join(overlap.message.split())
    assert "'production' and 'staging'" in said, said
    assert f"s3://{prefix}/production/staging at http://localhost:" in said
    assert f"/{bucket}" in said


def test_another_profiles_new_database_is_not_handed_productions_prefix(
    production: Production, postgres_engine: PostgresEngine
) -> None:
    # Staging's own new database, and production's blob_url (mistyped, in a settings file
    # of its own, where no overlap check sees both).
    replica = production.start()
    sid = _kept(production, replica)
    run = sandbox.current_run(production.env)
    assert run is not None
    configured = production.database_url.rpartition("/")[2].removesuffix(run.scratch)
    postgres_engine.create_database_named(f"staging_{configured}{run.scratch}")
    env = _settings_beside(production, f'/{configured}"', f'/staging_{configured}"')
    settings = Path(env["APP_SETTINGS_DIR"]) / "settings.toml"
    text = settings.read_text()
    settings.write_text(text.replace("[production]", "[staging]").replace("protected = true\n", ""))
    staging = {**env, "ENV_FOR_DYNACONF": "staging", "PYTEST_APP_ALLOW_PROFILES": "staging"}
    # Before: the refusal named the restamp, and the restamp handed production's prefix to
    # staging: production's next start was refused, and staging's still too.
    restamp = ["data", "restamp", "--profile", "staging", "--from", "production"]
    for args in (["data", "check"], [*restamp, "--yes-i-mean-it"], ["doctor"]):
        refused = forked_app.run(staging, args)
        assert refused.returncode == 78, refused.stdout + refused.stderr
        message = " ".join((refused.stdout + refused.stderr).split())
        assert "object prefix s3://" in message
        assert "belongs to profile 'production' and to its database (id " in message
        assert "has no row naming its objects" in message
        assert "Refusing; nothing was changed" in message
        assert "Point blob_url at a new or empty prefix for 'staging'" in message
        assert "app data restamp" not in message
    listed = production.run("sessions", "list")
    assert listed.returncode == 0 and sid in listed.stdout, listed.stdout + listed.stderr
    # With its own prefix, staging's database opens: the refused one was not recorded.
    settings.write_text(settings.read_text().replace('-production"', '-staging"'))
    done = forked_app.run(staging, ["data", "check"])
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_replica_serves_on_when_only_the_prefixs_stamp_was_deleted(
    production: Production, s3_engine: S3Engine
) -> None:
    # Held: the stamp alone deleted (by hand, a lifecycle rule), the objects in place, is
    # red team 37's refusal of the next open; the replica serves on meanwhile.
    replica = production.start(APP_LOCK_CHECK_SECONDS="0.2")
    sid = _kept(production, replica)
    client, bucket, key = _stamp_object(production, s3_engine)
    client.delete_object(Bucket=bucket, Key=key)
    time.sleep(1)  # five checks of its watch
    with production.client(replica) as http:
        assert http.put(f"/sessions/{sid}/files/b.txt", content=b"b").status_code == 201
        assert http.get(f"/sessions/{sid}/files/a.txt").content == b"kept"
    assert replica.process.poll() is None, replica.output


def test_a_first_open_refused_by_its_prefix_does_not_bind_the_database_to_it(
    production: Production, s3_engine: S3Engine
) -> None:
    # A new profile whose blob_url names another application's prefix (mistyped).
    client, bucket, key = _stamp_object(production, s3_engine)
    client.put_object(Bucket=bucket, Key=key.replace(".app-profile.json", "report.csv"), Body=b"x")
    refused = production.run("data", "check")
    assert refused.returncode == 78, refused.stdout + refused.stderr
    assert "report.csv" in refused.stderr
    # Before: the refused open had recorded that prefix for the database, and with blob_url
    # mended the next one was refused, told to "fix blob_url" back to the other's.
    settings = Path(production.env["APP_SETTINGS_DIR"]) / "settings.toml"
    settings.write_text(settings.read_text().replace('-production"', '-mended"'))
    done = production.run("data", "check")
    assert done.returncode == 0, done.stdout + done.stderr
