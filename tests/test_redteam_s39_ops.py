"""Red team 39 on operations: the remote backend as an operator meets it.

All real: the suite's PostgreSQL cluster and ``weed`` (tests/engines.py), ``app`` commands
and ``app serve`` replicas in processes of their own (tests/replicas.py). What broke:

- a copy of production's database (a dump restored into a new database to check the
  backup, as the PostgreSQL how-to's restore step says to run ``app data check`` on it) was
  taken for production's own: its rows carry the same database id, so the object prefix
  accepted it, and with production's replicas live on the original, the copy's ``app data
  check`` called every file uploaded since the dump "an upload whose transaction never
  committed" and ``--repair`` deleted it: an acknowledged file lost;
- two profiles' ``database_url`` (or ``s3_endpoint_url``) naming this machine's server by
  two spellings of a loopback address, or by the machine's own name (``127.1``,
  ``2130706433``, ``0x7f000001``, ``0.0.0.0``, ``[::ffff:127.0.0.1]``, ``localhost.``): each
  reached the one server, and each was another database to the overlap check; so was a
  host name that libpq's ``PGHOSTADDR`` (read for ``hostaddr``) sends to production's address;
- a session setting given to every connection by libpq's ``PGOPTIONS`` in the command's
  environment (``-c statement_timeout=1``, ``-c default_transaction_read_only=on``, ``-c
  search_path=nowhere``): each command was refused, rightly, with a remedy naming only
  ``ALTER DATABASE``, ``ALTER ROLE`` and the URL's options, none of which undoes it;
- ``app doctor`` said "ok ... database and bucket answer" (exit 0) for a database bound to
  another prefix, a prefix that belongs to another database, and the restored copy above,
  each of which ``app serve`` refused (78): it checked each half, never that they belong
  together;
- ``app data restamp --profile staging --from production`` of a restored copy of
  production's database (a staging refresh) said "now stamped 'staging'", though the
  database's rows name their objects in production's prefix; the next command said to point
  staging's ``blob_url`` there, and each refusal after it led on into production's prefix;
- a replica of the original served on after a copy of its database was adopted with ``app
  data restamp``: what it wrote from then on only the original's rows named;
- a standby promoted while the old primary still ran (a split brain): replicas served on
  both, and the new primary's ``app data check --repair`` deleted the file the old one had
  just acknowledged;
- a new database its role may not create tables in (PostgreSQL 15's default for a database
  owned by another role): ``app serve`` exited 69 (retry later) with a remedy about
  ``session_replication_role``, and ``app doctor`` said "ok ... the first open creates the
  app's tables";
- a hot standby of production's database named by a command's settings: ``app status``
  said "held by: nobody" and ``app doctor`` "replicas: none live" while a replica served on
  the primary (a standby's ``pg_locks`` holds none of the primary's advisory locks), and
  ``app data check`` called an upload in flight on the primary "never committed";
- a ``PG*`` variable in a command's environment that libpq applies to the connection
  (``PGSSLMODE=require`` against a server without TLS, ``PGTARGETSESSIONATTRS=standby``,
  ``PGREQUIREAUTH``, ``PGGSSENCMODE``): refused with "check that the server runs and that
  database_url names it", both of which held.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import shlex
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import forked_app
import psycopg
import pytest
import test_redteam_s37_remote
from engines import PostgresEngine, S3Engine, cluster_directory, free_ports
from replicas import Production, Replica

from app import sandbox
from app.config import inspect_profiles
from app.remote.errors import ResourceOverlapError
from app.remote.objects import parse_blob_url

production = test_redteam_s37_remote.production  # the fixture, as red team 37 made it


def _pg_bin(name: str) -> str:
    return str(Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]) / name)


def _kept(production: Production, replica: Replica) -> str:
    """A session with one acknowledged file, ``a.txt``, through ``replica``; its id."""
    with production.client(replica) as client:
        sid: str = client.post("/sessions", json={"title": "kept"}).json()["id"]
        assert client.put(f"/sessions/{sid}/files/a.txt", content=b"kept").status_code == 201
    return sid


def _shows_the_file(env: dict[str, str], sid: str) -> None:
    done = forked_app.run(env, ["sessions", "show", sid])
    assert done.returncode == 0 and "a.txt" in done.stdout, done.stdout + done.stderr


def _restored_copy(production: Production, postgres_engine: PostgresEngine) -> dict[str, str]:
    """Production's database dumped and restored into a new database, as the how-to's
    backup and restore steps do; the environment of a production command that names it."""
    run = sandbox.current_run(production.env)
    assert run is not None
    scratch = production.database_url.rpartition("/")[2]
    configured = scratch.removesuffix(run.scratch)
    copy = f"copy_{configured}"
    postgres_engine.create_database_named(f"{copy}{run.scratch}")
    dump = subprocess.run(
        [_pg_bin("pg_dump"), "--format=custom", production.database_url],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(
        [
            _pg_bin("pg_restore"),
            "--no-owner",
            f"--dbname={postgres_engine.url(copy + run.scratch)}",
        ],
        input=dump,
        check=True,
    )
    return _settings_beside(production, f'/{configured}"', f'/{copy}"')


def _settings_beside(production: Production, old: str, new: str) -> dict[str, str]:
    """The environment of a production command whose settings name ``new`` for ``old``."""
    settings = Path(production.env["APP_SETTINGS_DIR"])
    other = settings.parent / f"settings-{len(list(settings.parent.glob('settings-*')))}"
    other.mkdir()
    text = (settings / "settings.toml").read_text()
    assert old in text
    (other / "settings.toml").write_text(text.replace(old, new))
    return {**production.env, "APP_SETTINGS_DIR": str(other)}


def test_a_restored_copy_of_the_database_cannot_repair_away_what_the_original_acknowledged(
    production: Production, postgres_engine: PostgresEngine
) -> None:
    replica = production.start()
    sid = _kept(production, replica)
    with production.client(replica) as client:
        copy = _restored_copy(production, postgres_engine)
        # Acknowledged after the dump: only the original's rows name its object.
        assert client.put(f"/sessions/{sid}/files/b.txt", content=b"later").status_code == 201

        for argv in (["data", "check"], ["data", "check", "--repair"], ["serve"], ["doctor"]):
            done = forked_app.run(copy, argv)
            assert done.returncode == 78, done.stdout + done.stderr
            message = " ".join(done.stderr.split())
            assert "one is a copy of the other (a restored dump" in message
            assert "cluster system identifier/database oid" in message
            assert "would delete the files acknowledged by the other since the copy" in message
            assert "nothing was changed" in message
            assert "app data restamp --profile production --from production --yes-i-mean-it" in (
                message
            )
            assert "repaired" not in done.stdout
        assert client.get(f"/sessions/{sid}/files/b.txt").content == b"later"

        # The original, meanwhile, is as it was.
        assert replica.stop() == 0, replica.output
    done = production.run("data", "check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_restored_copy_is_adopted_by_restamp_and_the_original_is_then_refused(
    production: Production, postgres_engine: PostgresEngine
) -> None:
    replica = production.start()
    sid = _kept(production, replica)
    assert replica.stop() == 0, replica.output
    copy = _restored_copy(production, postgres_engine)

    # The documented restore: the copy replaces the original, once restamped.
    done = forked_app.run(
        copy,
        ["data", "restamp", "--profile", "production", "--from", "production", "--yes-i-mean-it"],
    )
    assert done.returncode == 0, done.stdout + done.stderr
    done = forked_app.run(copy, ["data", "check"])
    assert done.returncode == 0, done.stdout + done.stderr
    _shows_the_file(copy, sid)

    # One writer: the original is now the copy's stranger.
    done = production.run("data", "check", "--repair")
    assert done.returncode == 78, done.stdout + done.stderr
    assert "one is a copy of the other" in " ".join(done.stderr.split())


# Each reaches a server that listens on 127.0.0.1 (libc's inet_aton takes the shorthand and
# whole-number forms; 0.0.0.0 and an IPv4-mapped address connect to the loopback).
_SPELLINGS = ["127.1", "2130706433", "0x7f000001", "0.0.0.0", "[::ffff:127.0.0.1]"]


def _settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **profiles: dict[str, str]) -> None:
    for name in [n for n in os.environ if n.startswith("APP_")]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("ENV_FOR_DYNACONF", raising=False)
    text = f'[development]\ndata_root = "{tmp_path}/development"\n'
    text += f'[testing]\ndata_root = "{tmp_path}/testing"\n'
    for name, keys in profiles.items():
        text += f"[{name}]\n" + "".join(f'{k} = "{v}"\n' for k, v in keys.items())
    (tmp_path / "settings.toml").write_text(text)
    monkeypatch.setenv("APP_SETTINGS_DIR", str(tmp_path))


def _overlaps() -> list[ResourceOverlapError]:
    report = inspect_profiles("development")
    return [p for p in report.problems if isinstance(p, ResourceOverlapError)]


@pytest.mark.parametrize("spelling", [*_SPELLINGS, "machine's name"])
def test_one_database_named_through_another_spelling_of_this_machine_is_one_database(
    postgres_engine: PostgresEngine,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    spelling: str,
) -> None:
    assert postgres_engine.host == "127.0.0.1"
    host = socket.gethostname() if spelling == "machine's name" else spelling
    dbname = database_url.rpartition("/")[2]
    other = f"postgresql://{postgres_engine.user}@{host}:{postgres_engine.port}/{dbname}"
    # It is the same database, for real.
    with psycopg.connect(database_url) as first, psycopg.connect(other) as second:
        query = "SELECT current_database(), inet_server_port(), now() = now()"
        assert first.execute(query).fetchone() == second.execute(query).fetchone()
        pid = second.info.backend_pid
        seen = first.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        assert seen is not None
    keys = {"blob_url": "s3://b/x", "s3_endpoint_url": "http://127.0.0.1:9"}
    _settings(
        tmp_path,
        monkeypatch,
        production={**keys, "database_url": database_url},
        staging={**keys, "blob_url": "s3://b/y", "database_url": other},
    )
    [overlap] = _overlaps()
    assert overlap.kind == "database"
    assert "'production' and 'staging' name the same database" in overlap.message


@pytest.mark.parametrize("spelling", ["127.1", "0x7f000001", "[::ffff:127.0.0.1]", "0.0.0.0"])
def test_one_object_store_named_through_another_spelling_of_this_machine_is_one_store(
    s3_engine: S3Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spelling: str
) -> None:
    port = s3_engine.endpoint_url.rpartition(":")[2]
    assert s3_engine.endpoint_url == f"http://127.0.0.1:{port}"
    other = f"http://{spelling}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=other,
        aws_access_key_id=s3_engine.access_key_id,
        aws_secret_access_key=s3_engine.secret_access_key,
        region_name="us-east-1",
    )
    assert client.head_bucket(Bucket=s3_engine.bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    keys = {"database_url": "postgresql://app@db.internal/a"}
    _settings(
        tmp_path,
        monkeypatch,
        production={
            **keys,
            "blob_url": "s3://b/production",
            "s3_endpoint_url": s3_engine.endpoint_url,
        },
        staging={
            "database_url": "postgresql://app@db.internal/b",
            "blob_url": "s3://b/production/staging",
            "s3_endpoint_url": other,
        },
    )
    [overlap] = _overlaps()
    assert overlap.kind == "object prefix"


@pytest.mark.parametrize(
    ("options", "exit_code", "said"),
    [
        ("-c statement_timeout=1", 69, "SQLSTATE 57014"),
        ("-c default_transaction_read_only=on", 69, "SQLSTATE 25006"),
        ("--search_path=nowhere", 78, "search_path ('nowhere')"),
    ],
)
def test_a_setting_from_pgoptions_is_named_where_it_comes_from(
    production: Production, options: str, exit_code: int, said: str
) -> None:
    done = forked_app.run(
        {**production.env, "PGOPTIONS": options}, ["data", "empty-trash", "--yes-i-mean-it"]
    )
    assert done.returncode == exit_code, done.stdout + done.stderr
    message = " ".join(done.stderr.split())
    assert said in message and "nothing was changed" in message
    assert f"this process's environment: PGOPTIONS={shlex.quote(options)}" in message
    assert "no ALTER DATABASE or ALTER ROLE undoes: unset PGOPTIONS" in message
    # Without it, the same command works: nothing else was the matter.
    done = production.run("data", "empty-trash", "--yes-i-mean-it")
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_database_whose_address_comes_from_pghostaddr_is_the_one_it_reaches(
    postgres_engine: PostgresEngine,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dbname = database_url.rpartition("/")[2]
    staging = (
        f"postgresql://{postgres_engine.user}@db-staging.invalid:{postgres_engine.port}/{dbname}"
    )
    monkeypatch.setenv("PGHOSTADDR", postgres_engine.host)
    # libpq connects to PGHOSTADDR, the host name only names it: production's database.
    with psycopg.connect(staging) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (dbname,)
        assert conn.info.hostaddr == postgres_engine.host
    keys = {"blob_url": "s3://b/x", "s3_endpoint_url": "http://127.0.0.1:9"}
    _settings(
        tmp_path,
        monkeypatch,
        production={**keys, "database_url": database_url},
        staging={**keys, "blob_url": "s3://b/y", "database_url": staging},
    )
    [overlap] = _overlaps()
    assert overlap.kind == "database"


def test_doctor_finds_a_database_and_a_prefix_that_do_not_belong_together(
    production: Production, postgres_engine: PostgresEngine
) -> None:
    replica = production.start()
    _kept(production, replica)
    assert replica.stop() == 0, replica.output
    run = sandbox.current_run(production.env)
    assert run is not None
    configured = production.database_url.rpartition("/")[2].removesuffix(run.scratch)
    postgres_engine.create_database_named(f"fresh_{configured}{run.scratch}")
    settings = (Path(production.env["APP_SETTINGS_DIR"]) / "settings.toml").read_text()
    [blob_url] = [line.split('"')[1] for line in settings.splitlines() if "blob_url" in line]
    cases = {
        # production's database, a new prefix: the rows name objects it does not have.
        "another prefix": (
            _settings_beside(production, f'"{blob_url}"', f'"{blob_url}-elsewhere"'),
            "keeps its files' bytes in",
        ),
        # production's prefix, a new database: its repair would delete every object.
        "another database": (
            _settings_beside(production, f'/{configured}"', f'/fresh_{configured}"'),
            "belongs to another database",
        ),
    }
    for name, (env, said) in cases.items():
        doctor = forked_app.run(env, ["doctor"])
        assert doctor.returncode == 78, (name, doctor.stdout + doctor.stderr)
        report = " ".join((doctor.stdout + doctor.stderr).split())
        assert said in report and "Nothing was changed" in report, (name, report)
        assert "ok: every profile" not in report
        served = forked_app.run(env, ["serve", "--port", "0"])
        assert served.returncode == 78, (name, served.stdout + served.stderr)
        assert said in " ".join(served.stderr.split())
    # And production as it is: the binding is reported, and all is well.
    doctor = production.run("doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "binding: database id " in doctor.stdout


@contextlib.contextmanager
def standby_of(
    postgres_engine: PostgresEngine, *, promote: bool = True
) -> Iterator[PostgresEngine]:
    """A streaming standby of the suite's cluster (``pg_basebackup``), promoted, as a
    failover does, the original left running."""
    base = cluster_directory(postgres_engine.os_user)  # in memory, as the engines' own
    standby = dataclasses.replace(postgres_engine, base=base, port=free_ports(1)[0], process=None)
    try:
        standby._run(
            _pg_bin("pg_basebackup"),
            f"--pgdata={base / 'data'}",
            f"--dbname={postgres_engine.url()}",
            "--write-recovery-conf",
            "--wal-method=stream",
            "--no-sync",
            "--checkpoint=fast",
        )
        assert standby.start(), standby.log()
        if promote:
            standby._run(_pg_bin("pg_ctl"), "promote", "-w", "-D", str(base / "data"))
        yield standby
    finally:
        standby.stop()
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def _promoted_standby(
    production: Production, postgres_engine: PostgresEngine, *, promote: bool = True
) -> Iterator[dict[str, str]]:
    """:func:`standby_of`, and the environment of a production command whose settings
    name it."""
    with standby_of(postgres_engine, promote=promote) as standby:
        yield _settings_beside(production, f":{postgres_engine.port}/", f":{standby.port}/")


def test_a_promoted_standby_is_the_same_database_not_a_copy(
    production: Production, postgres_engine: PostgresEngine
) -> None:
    # What the copy's refusal must not catch: a failover. A streaming standby made with
    # pg_basebackup and promoted keeps the cluster's system identifier and the database's
    # oid; replicas pointed at it serve the acknowledged file, with no restamp.
    replica = production.start()
    sid = _kept(production, replica)
    assert replica.stop() == 0, replica.output
    with _promoted_standby(production, postgres_engine) as env:
        done = forked_app.run(env, ["data", "check"])
        assert done.returncode == 0, done.stdout + done.stderr
        _shows_the_file(env, sid)


def test_a_copy_of_productions_database_is_not_restamped_for_staging(
    production: Production, postgres_engine: PostgresEngine
) -> None:
    replica = production.start()
    sid = _kept(production, replica)
    copy = _restored_copy(production, postgres_engine)
    settings = Path(copy["APP_SETTINGS_DIR"]) / "settings.toml"
    text = settings.read_text()
    [blob_url] = [line.split('"')[1] for line in text.splitlines() if "blob_url" in line]
    settings.write_text(
        text.replace("[production]", "[staging]")
        .replace("protected = true\n", "")
        .replace(blob_url, f"{blob_url}-staging")
    )
    staging = {**copy, "ENV_FOR_DYNACONF": "staging", "PYTEST_APP_ALLOW_PROFILES": "staging"}
    restamp = ["data", "restamp", "--profile", "staging", "--from", "production"]
    done = forked_app.run(staging, [*restamp, "--yes-i-mean-it"])
    assert done.returncode == 78, done.stdout + done.stderr
    message = " ".join(done.stderr.split())
    assert "cannot re-stamp database" in message and "from 'production' to 'staging'" in message
    assert "its rows name their objects in s3://" in message
    assert "another database's prefix" in message
    assert "Nothing was changed" in message and "new or empty database" in message
    # Nothing was changed: still production's, refused for staging as before.
    done = forked_app.run(staging, ["data", "check"])
    assert done.returncode == 78
    assert "belongs to profile 'production'" in " ".join(done.stderr.split())
    with production.client(replica) as client:
        assert client.get(f"/sessions/{sid}/files/a.txt").content == b"kept"


def test_a_replica_of_the_original_stops_once_a_copy_is_handed_the_prefix(
    production: Production, postgres_engine: PostgresEngine
) -> None:
    replica = production.start(APP_LOCK_CHECK_SECONDS="0.2")
    sid = _kept(production, replica)
    copy = _restored_copy(production, postgres_engine)
    restamp = ["data", "restamp", "--profile", "production", "--from", "production"]
    done = forked_app.run(copy, [*restamp, "--yes-i-mean-it"])
    assert done.returncode == 0, done.stdout + done.stderr
    # Its writes are refused from its next check on, and it stops (exit 70, as for a
    # lost hold), saying why; a restart is refused, naming the copy.
    assert replica.process.wait(timeout=30) == 70, replica.output
    said = " ".join(replica.output.split())
    assert "was handed to another database" in said
    assert "Its restart is refused until database_url names the database" in said
    assert "once the database is reachable" not in said
    done = production.run("serve", "--port", "0")
    assert done.returncode == 78, done.stdout + done.stderr
    assert "one is a copy of the other" in " ".join(done.stderr.split())
    _shows_the_file(copy, sid)


def test_the_old_primary_of_a_split_brain_is_fenced_off_by_the_prefix(
    production: Production, postgres_engine: PostgresEngine
) -> None:
    replica = production.start(APP_LOCK_CHECK_SECONDS="0.2")
    sid = _kept(production, replica)
    with _promoted_standby(production, postgres_engine) as promoted:
        # The failover's first replica (here a command) opens the new primary.
        done = forked_app.run(promoted, ["data", "check"])
        assert done.returncode == 0, done.stdout + done.stderr
        # The old primary's replica stops at its next check, before it acknowledges
        # what only the old primary would name.
        assert replica.process.wait(timeout=30) == 70, replica.output
        assert "a split brain" in " ".join(replica.output.split())
        done = production.run("data", "check", "--repair")
        assert done.returncode == 78, done.stdout + done.stderr
        message = " ".join(done.stderr.split())
        assert "is on timeline 1, but object prefix" in message
        assert "records timeline 2 of the same database" in message
        assert "Point database_url at the promoted server" in message
        doctor = production.run("doctor")
        assert doctor.returncode == 78, doctor.stdout + doctor.stderr
        # The new primary has everything acknowledged.
        done = forked_app.run(promoted, ["data", "check", "--repair"])
        assert done.returncode == 0, done.stdout + done.stderr
        _shows_the_file(promoted, sid)


def test_a_new_database_the_role_may_not_create_tables_in_is_refused_naming_the_grant(
    production: Production, postgres_engine: PostgresEngine
) -> None:
    # The DBA's usual first deploy on PostgreSQL 15: the database owned by another role,
    # CONNECT granted to the app's; `public` no longer lets every role create in it.
    role = f"ro23_{os.getpid()}"
    dbname = production.database_url.rpartition("/")[2]
    with postgres_engine.connect() as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'GRANT CONNECT ON DATABASE "{dbname}" TO "{role}"')
    try:
        env = _settings_beside(production, "postgresql://app@", f"postgresql://{role}@")
        for argv in (["serve", "--port", "0"], ["data", "check"], ["doctor"]):
            done = forked_app.run(env, argv)
            assert done.returncode == 78, (argv, done.stdout + done.stderr)
            message = " ".join((done.stdout + done.stderr).split())
            assert f"role '{role}' may not create them in schema 'public'" in message
            assert "nothing was changed" in message
            assert f'ALTER DATABASE "{dbname}" OWNER TO "{role}"' in message
            assert "session_replication_role" not in message
        with postgres_engine.connect() as admin:
            admin.execute(f'ALTER DATABASE "{dbname}" OWNER TO "{role}"')
        done = forked_app.run(env, ["data", "check"])
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        with postgres_engine.connect() as admin:
            admin.execute(f'ALTER DATABASE "{dbname}" OWNER TO "{postgres_engine.user}"')
        with psycopg.connect(production.database_url, autocommit=True) as admin:
            admin.execute(f'DROP OWNED BY "{role}" CASCADE')
        with postgres_engine.connect() as admin:
            admin.execute(f'DROP OWNED BY "{role}" CASCADE')
            admin.execute(f'DROP ROLE "{role}"')


def test_a_standby_is_not_said_to_be_served_by_nobody(
    production: Production, postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    replica = production.start()
    _kept(production, replica)
    # An upload in flight on the primary: its object written, its row not yet.
    location = parse_blob_url(production.blob_url)
    client, _, _ = test_redteam_s37_remote._stamp_object(production, s3_engine)
    client.put_object(Bucket=location.bucket, Key=location.key(f"blobs/{'e' * 32}"), Body=b"x")
    with _promoted_standby(production, postgres_engine, promote=False) as standby:
        done = forked_app.run(standby, ["status"])
        assert done.returncode == 0, done.stdout + done.stderr
        said = " ".join(done.stdout.split())
        assert "held by: nobody" not in said
        assert "served by: unknown: database" in said and "is a standby (in recovery)" in said
        done = forked_app.run(standby, ["status", "--json"])
        assert json.loads(done.stdout)["held"] is None
        doctor = forked_app.run(standby, ["doctor"])
        assert doctor.returncode == 69, doctor.stdout + doctor.stderr
        report = " ".join((doctor.stdout + doctor.stderr).split())
        assert "replicas: none live" not in report and "point database_url at the primary" in report
        done = forked_app.run(standby, ["data", "check"])
        assert done.returncode == 0, done.stdout + done.stderr
        assert "never committed" not in done.stdout
    assert replica.stop() == 0, replica.output


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PGSSLMODE", "require"),
        ("PGTARGETSESSIONATTRS", "standby"),
        ("PGREQUIREAUTH", "password"),
        ("PGGSSENCMODE", "require"),
    ],
)
def test_a_connection_refused_for_a_libpq_variable_names_it(
    production: Production, name: str, value: str
) -> None:
    env = {**production.env, name: value, "PGPASSWORD": "not shown"}
    for argv in (["data", "check"], ["doctor"]):
        done = forked_app.run(env, argv)
        message = " ".join((done.stdout + done.stderr).split())
        assert "not shown" not in message
        if name == "PGTARGETSESSIONATTRS":
            # Asking libpq for a standby is a setting refused before any connection since
            # red team 57 (its own test is in tests/test_redteam_s57_remote.py).
            assert done.returncode == 78, done.stdout + done.stderr
            assert f"target_session_attrs={value}, from the environment's {name}" in message
            continue
        assert done.returncode == 69, done.stdout + done.stderr
        assert "This process's environment also gives libpq" in message
        assert f"{name}={value}" in message and "PGPASSWORD=(set)" in message
    done = production.run("data", "check")
    assert done.returncode == 0, done.stdout + done.stderr
