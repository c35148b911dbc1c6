"""Red team 38 on operations: the remote backend and the running service, as an operator
meets them on a real host.

All real: the suite's PostgreSQL cluster and ``weed`` (tests/engines.py), ``app`` commands
and ``app serve`` replicas in processes of their own (tests/replicas.py). What broke:

- a copy of the app's tables in a schema earlier on the ``search_path`` (a schema named after
  the role is, by default) was read in place of the app's, and ``app data check --repair``
  deleted the acknowledged files' objects; a replica's hold row went to a table of the app's
  name there, so the replica was never named;
- a data root stamped by a later release was opened, served, checked and re-stamped;
- a reload signal to one worker of ``serve --workers`` exited 0, so the service was not
  restarted; the workers of a ``serve`` killed outright served on as orphans;
- a database password in a settings file others may read was not warned of;
- a database renamed under a replica, or a statement_timeout that cancels a new
  connection's settings, was "did not answer ... stopped or frozen", after 30 s;
- a database made read-only, then writable again, refused every change for an hour (the
  pool's connections keep the setting they began with; so with statement_timeout), while
  ``/health`` and ``/ready`` said ok;
- a ``blob_url`` prefix too long for any object name passed ``app doctor``, and ``serve``
  blamed the credentials;
- a 4xx of the object store's own for one object was a bare 500.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import forked_app
import httpx
import psycopg
import pytest
import test_redteam_s37_remote
from engines import PostgresEngine, S3Engine, _s3_ready, scratch, start_s3
from replicas import Production, Replica, cpu_ticks, production_on, wait_for
from test_remote_replicas import _workers_rows
from test_server_e2e import Server, app_env, run_app, snapshot

from app import __version__
from app.remote.errors import ObjectMissingError, ObjectStoreUnavailableError

production = test_redteam_s37_remote.production  # the fixture, as red team 37 made it

_TABLES = ("app_stamp", "app_binding", "app_holders", "app_audit", "app_sessions", "app_files")


def _copy_tables(database_url: str, schema: str, tables: tuple[str, ...], rows: bool) -> None:
    """The app's tables copied into ``schema``, as a backup restored beside them for a look
    is (with the rows of the stamp and the binding when ``rows``)."""
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        for table in tables:
            admin.execute(f"CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)")
            if rows and table in ("app_stamp", "app_binding"):
                admin.execute(f"INSERT INTO {schema}.{table} SELECT * FROM public.{table}")


def _one_file(production: Production) -> str:
    replica = production.start()
    with production.client(replica) as client:
        sid: str = client.post("/sessions", json={"title": "kept"}).json()["id"]
        assert client.put(f"/sessions/{sid}/files/a.txt", content=b"kept").status_code == 201
    assert replica.stop() == 0, replica.output
    return sid


def test_a_copy_of_the_apps_tables_in_the_roles_own_schema_is_refused_not_repaired_from(
    production: Production,
) -> None:
    # A backup's tables restored beside the app's, into a schema named after the app's role
    # (`CREATE SCHEMA app`): the default search_path, '"$user", public', puts it first, with
    # no setting changed. Every command read the copy: `sessions show` said there was no
    # such session, `data check` listed the acknowledged file's object as one no row names,
    # and `data check --repair` deleted it.
    sid = _one_file(production)
    _copy_tables(production.database_url, "app", _TABLES, rows=True)
    for args in (("sessions", "show", sid), ("data", "check", "--repair"), ("serve",)):
        done = production.run(*args)
        assert done.returncode == 78, done.stdout + done.stderr
        message = " ".join(done.stderr.split())
        assert (
            "has the app's tables (a stamp, app_stamp) in schema app and again in schema "
            "public, all on this connection's search_path ('\"$user\", public'"
        ) in message
        assert "Refusing to use it; nothing was changed" in message
        assert "`ALTER SCHEMA <copy> RENAME TO <copy>_backup`" in message
        assert "options=-c search_path=<schema>" in message
    status = production.run("status")
    assert status.returncode == 0 and "served by: unknown" in status.stdout, status.stdout
    # The remedy it names: the copy off the path, and the file is there as it was.
    with psycopg.connect(production.database_url, autocommit=True) as admin:
        admin.execute("ALTER SCHEMA app RENAME TO app_backup")
    checked = production.run("data", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    shown = production.run("sessions", "show", sid)
    assert shown.returncode == 0 and "a.txt  4 bytes" in shown.stdout, shown.stdout


def test_a_replicas_hold_is_in_the_apps_table_not_one_of_its_name_earlier_on_the_path(
    production: Production,
) -> None:
    # Tables of the app's names but no stamp, in the role's own schema. The pool's
    # connections kept to the stamp's schema, but a replica's holding connection, its own,
    # wrote the replica's row into the other one: the replica never published its URL (the
    # pool's UPDATE found no row), `app status` named nobody, and a maintenance command's
    # check of who holds the database read the other table.
    _one_file(production)
    _copy_tables(production.database_url, "app", ("app_audit", "app_holders"), rows=False)
    # The test's own look at the holders reads the app's table.
    production.close()
    production._conn = psycopg.connect(
        production.database_url + "?options=-csearch_path%3Dpublic", autocommit=True
    )
    replica = production.start()
    status = production.run("status")
    assert f"pid {replica.pid}" in status.stdout, status.stdout + replica.output
    refused = production.run("data", "purge", "--yes-i-mean-it")
    assert refused.returncode == 75, refused.stdout + refused.stderr
    assert f"pid {replica.pid}" in refused.stderr, refused.stderr
    assert replica.stop() == 0, replica.output
    done = production.run("data", "purge", "--yes-i-mean-it")
    assert done.returncode == 0, done.stdout + done.stderr
    with psycopg.connect(production.database_url, autocommit=True) as admin:
        operations = [row[0] for row in admin.execute("SELECT operation FROM public.app_audit")]
        assert "purge" in operations, operations
        assert admin.execute("SELECT count(*) FROM app.app_audit").fetchone() == (0,)
        assert admin.execute("SELECT count(*) FROM app.app_holders").fetchone() == (0,)


def _lay_out(
    servers: list[Server], tmp_path: Path
) -> tuple[Path, dict[str, str], Path, dict[str, Any]]:
    """A root laid out and stamped by a real server's start, as a first deploy does: the
    root, its environment, its stamp file and the stamp."""
    root = tmp_path / "data"
    env = app_env(root)
    server = Server(env, tmp_path / f"server-{len(servers)}.log")
    servers.append(server)
    assert server.wait_ready().stop() == 0, server.output
    stamp_file = root / ".app-profile.json"
    return root, env, stamp_file, json.loads(stamp_file.read_text())


@pytest.mark.parametrize(
    ("later", "shown"),
    [
        ({"app_version": "9.0.0", "layout_version": 3, "blob_index": "v2"}, "layout 3"),
        ({"app_version": "9.0.0", "blob_index": "v2"}, "layout not recorded"),
    ],
    ids=["layout-3", "later-version-no-layout"],
)
def test_a_data_root_laid_out_by_a_later_release_is_refused_naming_both_versions(
    servers: list[Server], tmp_path: Path, later: dict[str, object], shown: str
) -> None:
    # A root a later release stamped (an upgrade, then a rollback of the package): opened,
    # served, checked and re-stamped without a word, as if this release could read it.
    root, env, stamp_file, stamp = _lay_out(servers, tmp_path)
    # Layout 2: a root this release makes is marked (`content_sha256_since`) from the start.
    assert (stamp["app_version"], stamp["layout_version"]) == (__version__, 2)
    del stamp["layout_version"]
    stamp_file.write_text(json.dumps({**stamp, **later}))
    before = snapshot(root)
    for args in (
        ("sessions", "list"),
        ("data", "check", "--repair"),
        ("data", "restamp", "--profile", "testing", "--from", "testing"),
        ("serve", "--port", "0"),
    ):
        done = run_app(*args, env=env)
        assert done.returncode == 78, (args, done.stdout + done.stderr)
        message = " ".join(done.stderr.split())
        assert (
            f"data root {root} was laid out by app 9.0.0 ({shown}, in {stamp_file}), "
            f"and this is app {__version__}, which reads layout 2 and earlier only"
        ) in message
        assert "Refusing to open it; nothing was changed. Run app 9.0.0 or later on it" in message
        assert "restore the backup taken before the upgrade into a new data root" in message
    assert snapshot(root) == before
    status = run_app("status", env=env)
    assert status.returncode == 0, status.stderr
    assert f"stamp: unreadable: data root {root} was laid out by app 9.0.0" in status.stdout


def test_a_stamp_of_this_release_or_written_by_hand_is_opened_as_before(
    servers: list[Server], tmp_path: Path
) -> None:
    # No layout_version: a root made before layouts were numbered (this release's first
    # stamps), or a stamp written by hand as the docs say: layout 1, read as ever.
    _, env, stamp_file, stamp = _lay_out(servers, tmp_path)
    for written in (
        {k: v for k, v in stamp.items() if k != "layout_version"},
        {"profile": "testing"},
        {**stamp, "app_version": "0.0.9", "note": "a field this release does not know"},
    ):
        stamp_file.write_text(json.dumps(written))
        done = run_app("data", "check", env=env)
        assert done.returncode == 0, done.stdout + done.stderr


# --- serve --workers and signals ---------------------------------------------------------


def _workers(production: Production) -> tuple[Replica, list[int], str]:
    with forked_app.sighup_at_default():  # the reload tests send it (`nohup pytest ...`)
        server = production.start("--workers", "2", ready=False)
    rows = _workers_rows(production, server, 2)
    return server, sorted(int(row["pid"]) for row in rows), str(rows[0]["url"])


def _upload_in_flight(
    production: Production, url: str
) -> tuple[str, threading.Thread, dict[str, Any], threading.Event]:
    """A PUT whose body is half sent: the signal comes while a worker holds it. Its second
    half is sent once the returned event is set (`_once_held`)."""
    client = httpx.Client(base_url=url, headers=production.headers, timeout=60)
    sid: str = client.post("/sessions", json={}).json()["id"]
    answer: dict[str, Any] = {}
    half, rest = threading.Event(), threading.Event()

    def body() -> Iterator[bytes]:
        yield b"a" * 1000
        half.set()
        rest.wait()  # the signal is sent meanwhile: a wait on the server, not an assertion
        yield b"b" * 1000

    def send() -> None:
        try:
            answer["status"] = client.put(f"/sessions/{sid}/files/up.txt", content=body())
        except httpx.HTTPError as error:
            answer["error"] = error
        finally:
            client.close()

    thread = threading.Thread(target=send)
    thread.start()
    half.wait()
    return sid, thread, answer, rest


#: What uvicorn logs when a worker that is stopping still holds a connection: the upload's.
_HELD = "Waiting for connections to close."


def _once_held(server: Replica, rest: threading.Event) -> None:
    """The upload's second half sent once its worker, told to stop, is waiting for it (it
    slept a fixed second before: a condition is as strict and mostly sooner)."""
    try:
        wait_for(
            lambda: _HELD in server.output,
            "the worker to wait for the upload in flight",
            progress=lambda: cpu_ticks(server.pid),
        )
    finally:
        rest.set()


def _nothing_acknowledged_lost(production: Production, sid: str, answer: dict[str, Any]) -> None:
    shown = production.run("sessions", "show", sid)
    assert shown.returncode == 0, shown.stderr
    if "status" in answer and answer["status"].status_code == 201:
        assert "up.txt  2000 bytes" in shown.stdout, shown.stdout
    checked = production.run("data", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("to", ["serve", "one worker", "every process"])
def test_a_reload_signal_to_serve_with_workers_restarts_the_service_whoever_gets_it(
    production: Production, to: str
) -> None:
    # `kill -HUP` (or logrotate's `pkill -USR1 -f 'app serve'`, which reaches the workers
    # too) sent to one worker: it stopped gracefully, but exited 0, so serve logged "worker
    # stopped (exit 0)" as an error and exited 0, and systemd's Restart=on-failure left the
    # service stopped. To serve itself, or to every process (`systemctl kill -s HUP`), it
    # held: 129.
    server, workers, url = _workers(production)
    sid, thread, answer, rest = _upload_in_flight(production, url)
    targets = {"serve": [server.pid], "one worker": workers[:1]}.get(to, [server.pid, *workers])
    for pid in targets:
        os.kill(pid, signal.SIGHUP)
    _once_held(server, rest)
    thread.join()
    assert server.process.wait() == 129, server.output
    assert all(_gone(pid) for pid in workers)
    assert production.holders() == []
    assert "exits 129 for its service manager to start it again" in server.output
    assert "stopped (exit 0)" not in server.output, server.output
    assert answer["status"].status_code == 201, answer
    _nothing_acknowledged_lost(production, sid, answer)


def test_the_workers_of_a_serve_killed_outright_stop_and_release_the_database(
    production: Production,
) -> None:
    # `kill -9` of serve (the OOM killer, a process manager that signals only its child):
    # its workers served on, orphans holding the database and the port for ever, so that a
    # restart could not bind it and maintenance was refused naming them.
    server, workers, url = _workers(production)
    sid, thread, answer, rest = _upload_in_flight(production, url)
    server.process.kill()
    try:
        wait_for(
            lambda: _HELD in server.output,
            "the worker to wait for the upload in flight",
            progress=lambda: [cpu_ticks(pid) for pid in workers],  # serve is gone
        )
        # Meanwhile the worker that holds the upload is stopping: named so, not "serving"
        # with "stop every one of them", which a second Ctrl-C obeyed cuts (red team 75).
        refused = production.run("data", "purge", "--yes-i-mean-it")
        # Stopped with SIGSTOP as well, it finishes nothing until resumed: it was "wait for
        # it to exit" and "wait for them to exit", for ever (red team 75 on regress, c).
        (held,) = [pid for pid in workers if not _gone(pid)]
        os.kill(held, signal.SIGSTOP)
        try:
            paused = production.run("data", "purge", "--yes-i-mean-it")
        finally:
            os.kill(held, signal.SIGCONT)
    finally:
        rest.set()
    thread.join()
    shown = " ".join(paused.stderr.split())
    assert (
        ", finishing the requests in flight once it runs again, stopped by a signal (SIGSTOP, "
        f"Ctrl-Z in its shell): it waits to be resumed; a stop (kill {held}) takes effect once "
        f"it is resumed (kill -CONT {held}). Nothing was changed; resume the paused one(s) as "
        "said, wait for them to exit, then retry."
    ) in shown, shown
    assert refused.returncode == 75, refused.stderr
    shown = " ".join(refused.stderr.split())
    assert "1 live replica(s) hold it: host " in shown, shown
    assert (
        f", serving {url}, stopping since 20"  # the year of an ISO time
    ) in shown, shown
    assert (
        ", finishing the requests in flight: wait for it to exit (a second Ctrl-C, SIGINT, cuts "
        "them). Nothing was changed; wait for them to exit, then retry."
    ) in shown, shown
    wait_for(
        lambda: all(_gone(pid) for pid in workers),
        "the workers to stop",
        progress=lambda: [cpu_ticks(pid) for pid in workers],
    )
    assert production.holders() == []
    assert "stopped; releasing the hold" in server.output, server.output
    _nothing_acknowledged_lost(production, sid, answer)
    again = production.start("--workers", "2", ready=False)
    assert len(_workers_rows(production, again, 2)) == 2
    assert again.stop() == 0, again.output


# --- the secrets file's mode, through the real commands -----------------------------------


def test_a_protected_profiles_secrets_in_a_file_others_may_read_are_warned_of_by_each_command(
    tmp_path: Path,
) -> None:
    # Red team 37 tested the warning by calling its function. Through the commands: the
    # token and the S3 keys held; production's database password in the same file was said
    # nothing of.
    settings = tmp_path / "settings"
    settings.mkdir()
    (settings / "settings.toml").write_text(
        '[default]\nhost = "127.0.0.1"\n\n[development]\ndata_root = "data/development"\n\n'
        '[testing]\ndata_root = "data/testing"\n\n[production]\nprotected = true\n'
        'blob_url = "s3://prod/data"\ns3_endpoint_url = "http://127.0.0.1:9"\n'
    )
    secrets = settings / ".secrets.toml"
    secrets.write_text(
        '[production]\ndatabase_url = "postgresql://app:S3cretPassw0rd@127.0.0.1:9/prod"\n'
        'api_token = "Zq3vX9kLm2Pw7RtY5sB8nC4dF6gH1jK0"\n'
        's3_access_key_id = "AKIAIOSFODNN7EXAMPLE"\n'
        's3_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"\n'
    )
    secrets.chmod(0o644)
    env = app_env(tmp_path / "data", APP_SETTINGS_DIR=str(settings))
    del env["APP_DATA_ROOT"]
    for args in (("config", "--all"), ("doctor",)):
        done = run_app(*args, env=env)
        output = " ".join(done.stderr.split())
        for key, variable in (
            ("database_url (its password)", "APP_DATABASE_URL"),
            ("api_token", "APP_API_TOKEN"),
            ("s3_secret_access_key", "APP_S3_SECRET_ACCESS_KEY"),
        ):
            assert (
                f"warning: {secrets} holds profile production's {key} and other users of this "
                f"host may read it (mode 0644): `chmod 600 {secrets}` (owned by the user the app "
                f"runs as), or set {variable} in the service's environment instead"
            ) in output, (args, output)
        assert "S3cretPassw0rd" not in done.stdout + done.stderr
    secrets.chmod(0o600)
    for args in (("config", "--all"), ("doctor",)):
        assert "may read it" not in run_app(*args, env=env).stderr


# --- the database under a live replica -----------------------------------------------------


def test_a_database_renamed_under_a_replica_is_refused_saying_it_does_not_exist(
    production: Production, postgres_engine: PostgresEngine
) -> None:
    # `ALTER DATABASE ... RENAME` once its backends were ended (PostgreSQL renames no
    # database in use). A request that came meanwhile waited the pool's whole timeout (30 s)
    # and was refused as a database that "did not answer ... it may be stopped or frozen (a
    # process stopped with SIGSTOP, a host paused)", while each connect was told at once
    # that the database does not exist.
    # The replica's watch looks for its hold's loss every second, not every 5 (the
    # default): the same stop, four seconds sooner, and still after the request below
    # came (sent at once; a request in flight is answered as the replica stops).
    replica = production.start(APP_LOCK_CHECK_SECONDS="1")
    dbname = production.database_url.rpartition("/")[2]
    with production.client(replica) as client:
        sid = client.post("/sessions", json={"title": "kept"}).json()["id"]
        assert client.put(f"/sessions/{sid}/files/a.txt", content=b"kept").status_code == 201
        production.close()
        with psycopg.connect(postgres_engine.url(), autocommit=True) as admin:
            while True:  # until no backend of it is left to refuse the rename
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (dbname,),
                )
                try:
                    admin.execute(f'ALTER DATABASE "{dbname}" RENAME TO "{dbname}_old"')
                    break
                except psycopg.errors.ObjectInUse:
                    continue
        try:
            answer = client.get(f"/sessions/{sid}/files/a.txt")
        except httpx.TransportError:
            answer = None  # the replica saw its hold go first and stopped: said below
        if answer is not None:
            assert answer.status_code == 503, answer.text
            assert answer.json()["code"] == "database_unavailable", answer.text
            assert f'database "{dbname}" does not exist' in answer.json()["message"]
            assert "did not answer" not in answer.json()["message"]
    assert replica.process.wait() == 70, replica.output
    assert "lost the connection that holds database" in replica.output
    refused = production.run("data", "check")
    assert refused.returncode == 69, refused.stderr
    assert f'database "{dbname}" does not exist' in refused.stderr
    with psycopg.connect(postgres_engine.url(), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{dbname}_old" RENAME TO "{dbname}"')
    again = production.start()
    with production.client(again) as client:
        assert client.get(f"/sessions/{sid}/files/a.txt").content == b"kept"
    assert again.stop() == 0


@pytest.mark.parametrize("prefix", ["p" * 300, "/".join(["q" * 200] * 5)], ids=["segment", "key"])
def test_a_prefix_too_long_for_any_object_name_is_refused_as_a_setting_by_doctor_and_serve(
    tmp_path: Path, postgres_engine: PostgresEngine, s3_engine: S3Engine, prefix: str
) -> None:
    # A blob_url whose prefix leaves no room for the app's object names: `app doctor` said
    # "ok ... database and bucket answer" (exit 0), and `app serve` was refused at its first
    # upload of the stamp with KeyTooLongError, "Check s3_endpoint_url, blob_url and the
    # credentials", the endpoint and the credentials being fine.
    url = f"s3://{s3_engine.bucket}/{prefix}{scratch()}"
    with production_on(tmp_path, postgres_engine, s3_engine, url) as production:
        for args in (("doctor",), ("serve", "--port", "0")):
            done = production.run(*args)
            assert done.returncode == 78, (args, done.stdout + done.stderr)
            output = " ".join((done.stdout + done.stderr).split())
            assert "blob_url = 's3://app-tests/" in output
            assert (
                "S3 takes keys of up to 1024 bytes, so the prefix may be 959 bytes at "
                "most, in segments of 255: choose a shorter one" in output
            ), output
            assert "KeyTooLongError" not in output


# --- the object store refusing a live replica ----------------------------------------------


def _rotate_keys(engine: S3Engine, secret: str) -> None:
    """The identity's secret key set to `secret` in ``weed``'s config file, and ``weed``
    told to reload it (``kill -HUP``, as SeaweedFS's S3 documentation has an operator
    rotating the keys do; ``weed mini`` reloads ``-s3.config`` on it): once a put with
    `secret` succeeds, the gateway has the new key, and the old one is refused.

    Not a stop and start of ``weed`` on the same data, as this test first did: the same
    refusals, but the two graceful stops (1 to 1.5 s each) and, after the second start, the
    4 to 5 s before ``weed`` served the volume that holds the older objects again were most
    of the test's time and no part of what it checks (the replica's answers to keys that
    no longer sign)."""
    config = engine.base / "s3.json"
    identities = json.loads(config.read_text())
    identities["identities"][0]["credentials"][0]["secretKey"] = secret
    config.write_text(json.dumps(identities))
    engine.process.send_signal(signal.SIGHUP)
    rotated = dataclasses.replace(engine, secret_access_key=secret)
    client = rotated.client()
    wait_for(
        lambda: _s3_ready(rotated, client) or engine.process.poll() is not None, "weed to reload"
    )
    assert engine.process.poll() is None, "weed exited on SIGHUP"


def test_s3_keys_rotated_under_a_live_replica_are_refused_naming_the_store_and_lose_nothing(
    tmp_path: Path, postgres_engine: PostgresEngine
) -> None:
    engine = start_s3(tmp_path / "weed")
    old_secret = engine.secret_access_key
    try:
        url = f"s3://{engine.bucket}/own{scratch()}"
        with production_on(tmp_path, postgres_engine, engine, url) as production:
            replica = production.start()
            with production.client(replica) as client:
                sid = client.post("/sessions", json={"title": "kept"}).json()["id"]
                put = client.put(f"/sessions/{sid}/files/a.txt", content=b"kept")
                assert put.status_code == 201
                _rotate_keys(engine, "rotated-secret-key-0000000000")
                got = client.get(f"/sessions/{sid}/files/a.txt")
                assert got.status_code == 503, got.text
                assert got.json()["code"] == "object_store_unavailable"
                assert "SignatureDoesNotMatch (HTTP 403)" in got.json()["message"]
                assert f"the download of 'a.txt' from session {sid} was not begun" in got.text
                put = client.put(f"/sessions/{sid}/files/b.txt", content=b"new")
                assert put.status_code == 503, put.text
                assert "was not saved, and the file is as it was" in put.json()["message"]
                wait_for(lambda: client.get("/ready").status_code == 503, "/ready to say so")
                refused = production.run("data", "check")
                assert refused.returncode == 69, refused.stdout + refused.stderr
                assert "s3_access_key_id / s3_secret_access_key" in refused.stderr
                _rotate_keys(engine, old_secret)
                # The keys the replica has sign again: the file is served at once, whole.
                got = client.get(f"/sessions/{sid}/files/a.txt")
                assert (got.status_code, got.content) == (200, b"kept"), got.text
                assert [f["name"] for f in client.get(f"/sessions/{sid}").json()["files"]] == [
                    "a.txt"
                ]
            assert replica.stop() == 0, replica.output
    finally:
        engine.stop()


def test_an_object_stores_own_refusal_of_one_object_is_named_not_passed_through(
    blob_url: str, s3_engine: S3Engine
) -> None:
    # AWS's answer to a GET of an object a lifecycle rule archived (403 InvalidObjectState),
    # or a 409 or 412 of another store, for a named object: passed through as botocore's
    # ClientError, a bare 500 internal_error. Not made by `weed`: its error, as botocore
    # builds it from the answer, is given to the store's classification.
    from botocore.exceptions import ClientError

    store = s3_engine.objects(blob_url)
    for code, status in (("InvalidObjectState", 403), ("OperationAborted", 409), ("x", 412)):
        answer = {
            "Error": {"Code": code, "Message": "m"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        failed = store._fail(ClientError(answer, "GetObject"), "blobs/" + "0" * 32)  # type: ignore[arg-type]
        assert isinstance(failed, ObjectStoreUnavailableError), failed
        assert f"{code} (HTTP {status})" in failed.message
    missing = {"Error": {"Code": "NoSuchKey"}, "ResponseMetadata": {"HTTPStatusCode": 404}}
    failed = store._fail(ClientError(missing, "GetObject"), "blobs/" + "0" * 32)  # type: ignore[arg-type]
    assert isinstance(failed, ObjectMissingError)


def _database_read_only(database_url: str, value: str) -> None:
    """``ALTER DATABASE ... SET default_transaction_read_only``, from a session that may
    write whatever the database's setting is now."""
    dbname = database_url.rpartition("/")[2]
    options = "-c default_transaction_read_only=off"
    with psycopg.connect(database_url, autocommit=True, options=options) as admin:
        admin.execute(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = {value}')


def test_a_database_made_read_only_then_writable_under_a_replica_takes_changes_again(
    production: Production,
) -> None:
    # The database made read-only under a live replica (an operator's freeze, a failover to
    # a standby). Every change was refused, clearly (503 database_refused 25006, naming the
    # RESET), while /health and /ready answered ok. Then, RESET done as the refusal says,
    # every change was still refused: the pool's connections opened meanwhile keep the
    # setting they began with, for their whole life (an hour), and /ready still said ok.
    replica = production.start()
    with production.client(replica) as client:
        sid = client.post("/sessions", json={"title": "kept"}).json()["id"]
        _database_read_only(production.database_url, "on")
        holders = {int(row["backend_pid"]) for row in production.holders()}
        production.close()
        test_redteam_s37_remote._end_backends_but(production.database_url, holders)
        refused = client.put(f"/sessions/{sid}/files/a.txt", content=b"new")
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "database_refused"
        assert "read-only transaction (SQLSTATE 25006); nothing was changed" in refused.text
        health, ready = client.get("/health"), client.get("/ready")
        assert (health.status_code, health.json()["status"]) == (503, "writes_stopped")
        assert "the database refused a change as read-only" in health.json()["reason"]
        assert ready.status_code == 503
        assert "refused a change as read-only" in ready.json()["checks"]["database"]
        assert client.get(f"/sessions/{sid}").status_code == 200  # reads are served
        _database_read_only(production.database_url, "DEFAULT")
        # A refused change renews every connection of the pool, not just its own: at most
        # one more is refused. Each sibling used to refuse one in turn, and when the last
        # PUT met the last of them, /health said writes_stopped while the database took
        # changes (a flaky CI run).
        answers = [
            client.put(f"/sessions/{sid}/files/a.txt", content=b"new").status_code for _ in range(4)
        ]
        assert answers.count(503) <= 1 and set(answers) <= {200, 201, 503}, answers
        assert client.put(f"/sessions/{sid}/files/a.txt", content=b"newer").status_code == 200
        assert client.get(f"/sessions/{sid}/files/a.txt").content == b"newer"
        assert client.get("/health").json()["status"] == "ok"
        assert client.get("/ready").status_code == 200
    assert replica.stop() == 0, replica.output


def test_a_statement_timeout_that_refuses_the_apps_settings_is_named_then_lifted_at_once(
    production: Production,
) -> None:
    # `ALTER DATABASE ... SET statement_timeout = 1` (a millisecond, meant as seconds) under
    # a live replica: each new connection's settings were cancelled, and each request waited
    # the pool's 30 s to be told the database "did not answer ... may be stopped or frozen";
    # the server had said why at once.
    replica = production.start()
    dbname = production.database_url.rpartition("/")[2]
    holders = {int(row["backend_pid"]) for row in production.holders()}
    production.close()
    options = "-c statement_timeout=0"
    with psycopg.connect(production.database_url, autocommit=True, options=options) as admin:
        admin.execute(f'ALTER DATABASE "{dbname}" SET statement_timeout = 1')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname ="
            " current_database() AND pid <> pg_backend_pid() AND NOT pid = ANY(%s)",
            (list(holders),),
        )
        with production.client(replica) as client:
            refused = client.post("/sessions", json={"title": "new"})
            assert refused.status_code == 503, refused.text
            message = refused.json()["message"]
            # Refused on a new connection's settings, or on a statement of the change.
            assert (
                "canceling statement due to statement timeout (SQLSTATE 57014); nothing was changed"
            ) in message, message
            assert "pg_settings" in message and "did not answer" not in message
            admin.execute(f'ALTER DATABASE "{dbname}" RESET statement_timeout')
            # Each refused change gives back its connection: within the pool's size, one is
            # accepted.
            made = [client.post("/sessions", json={}).status_code for _ in range(4)]
            assert 201 in made, made
    assert replica.stop() == 0, replica.output
