"""The incident, replayed on PostgreSQL and object storage: hostile test suites run next to a
live production replica pair, and production's rows and objects stay byte-identical.

Two real ``app serve`` replicas of one production profile (tests/replicas.py, on the engines
of tests/engines.py) are started and filled over HTTP (through one replica, read back through
the other). The hostile suites of tests/hostile_suites.py (``REMOTE_SUITES``) then run in a
pytest subprocess whose shell exported production (ENV_FOR_DYNACONF, APP_DATABASE_URL,
APP_BLOB_URL, the S3 credentials and the API token) and whose settings name, for production,
the very database and prefix the replicas serve; its testing profile is on the same
PostgreSQL server and bucket. Every inner test asserts on the refusal it meets. Afterwards
every row of every table (and every sequence) of production's database, and every object
version under its prefix, must be as before; both replicas must still serve the same
sessions, and still be listed as holders.

The suites run once serially, those a worker must refuse on its own again under ``-n 2``, and
a suite of its own with ``-p no:app``, next to the same pair, in one test: starting replicas
per case would cost seconds each, and the cases need only that the pair is live.
A serial run starts the pair and the three runs when collection ends, on the core its tests
leave idle (tests/head_start.py), and the test checks what they reported; under xdist the
test starts them itself.

The app's own classes are replayed too, built by hand on production's URL (``RemoteStore``,
``pg.Holder``, ``pg.maintenance``, ``ObjectStore``...: the ``below_the_seam`` suite). What is
not replayed, because no code of the app runs and nothing could refuse it: a test that
hard-codes ``psycopg.connect(<production's URL>)`` or an S3 client of its own on production's
bucket (the explanation page says so).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import head_start
import pytest
from engines import PostgresEngine, S3Engine, new_blob_url
from hostile_suites import (
    REMOTE_HELPERS,
    REMOTE_SUITES,
    REMOTE_WITHOUT_PLUGIN,
    REMOTE_XDIST_SUITES,
)
from replicas import Production, production_on
from side_by_side import inner_environ, pytest_side_by_side
from test_incident import fill, list_sessions

SETTINGS = """\
[default]
host = "127.0.0.1"
s3_endpoint_url = "{endpoint}"

[development]
data_root = "{others}/development"

[testing]
database_url = "{testing_url}"
blob_url = "s3://{bucket}/{testing_prefix}"

[production]
database_url = "{production_url}"
blob_url = "{production_blob}"
protected = true
"""

#: How many inner tests pass in each run.
PASSED = {"serial": 48, "xdist": 21, "without the plugin": 4}

SECRETS = """\
[default]
s3_access_key_id = "{key}"
s3_secret_access_key = "{secret}"
"""


def database_state(production: Production) -> dict[str, Any]:
    """Every table's rows (as COPY writes them, in primary key order), every sequence's
    position, and the schema's tables: byte for byte."""
    import psycopg

    state: dict[str, Any] = {}
    with psycopg.connect(production.database_url, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
        ]
        state["tables"] = tables
        for table in tables:
            query = f'COPY (SELECT * FROM "{table}" ORDER BY 1) TO STDOUT'
            with conn.cursor().copy(query) as copy:  # type: ignore[arg-type]
                state[table] = b"".join(bytes(chunk) for chunk in copy)
        state["sequences"] = conn.execute(
            "SELECT sequencename, last_value FROM pg_sequences ORDER BY 1"
        ).fetchall()
    return state


def object_state(s3: S3Engine, production: Production) -> list[tuple[Any, ...]]:
    """Every object version under production's prefix: key, version, ETag, size, sha256."""
    client = s3.client()
    prefix = production.blob_url.removeprefix(f"s3://{s3.bucket}/").rstrip("/") + "/"
    found = []
    paginator = client.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=s3.bucket, Prefix=prefix):
        for version in page.get("Versions", []):
            body = client.get_object(
                Bucket=s3.bucket, Key=version["Key"], VersionId=version["VersionId"]
            )["Body"].read()
            found.append(
                (
                    version["Key"],
                    version["VersionId"],
                    version["ETag"],
                    version["Size"],
                    hashlib.sha256(body).hexdigest(),
                )
            )
        found += [("deleted", m["Key"], m["VersionId"]) for m in page.get("DeleteMarkers", [])]
    return sorted(found, key=repr)


class Pair:
    """The live pair, what it held before any hostile run, and the inner runs' settings."""

    def __init__(self, production: Production, s3: S3Engine, settings_dir: Path) -> None:
        self.production = production
        self.s3 = s3
        self.settings_dir = settings_dir
        # Filled through one replica, read back through the other.
        first, second = production.replicas
        fill(first.url, production.headers)
        self.sessions = list_sessions(second.url, production.headers)
        assert self.sessions["total"] == 3
        self.rows = database_state(production)
        self.objects = object_state(s3, production)

    def assert_untouched(self) -> None:
        production = self.production
        assert database_state(production) == self.rows
        assert object_state(self.s3, production) == self.objects
        for replica in production.replicas:
            assert replica.process.poll() is None, f"replica {replica.pid} died"
            assert list_sessions(replica.url, production.headers) == self.sessions
            with production.client(replica) as client:
                assert client.get("/health").status_code == 200
                for session in self.sessions["items"]:
                    shown = client.get(f"/sessions/{session['id']}")
                    assert shown.status_code == 200, shown.text
                    assert shown.json() == session
        pids = sorted(replica.pid for replica in production.replicas)
        assert sorted(holder["pid"] for holder in production.holders()) == pids
        status = production.run("status")
        assert "served by 2 live replica(s):" in status.stdout, status.stdout + status.stderr
        assert all(f"pid {pid}, profile production" in status.stdout for pid in pids)


#: The inner runs, side by side: they share nothing but the pair they must leave alone.
RUNS = {
    "serial": ("-p", "no:randomly", *REMOTE_SUITES),
    "xdist": ("-p", "no:randomly", "-n", "2", *REMOTE_XDIST_SUITES),
    "without the plugin": ("-p", "no:randomly", "-p", "no:app", *REMOTE_WITHOUT_PLUGIN),
}


@dataclass
class Hostile:
    """What the hostile runs next to the pair reported, and what checking the pair after
    them raised (None: production untouched and still served)."""

    results: dict[str, pytest.RunResult]
    untouched: BaseException | None


def run_hostile_next_to_a_pair(
    tmp_path: Path, postgres_engine: PostgresEngine, s3_engine: S3Engine, environ: dict[str, str]
) -> Hostile:
    """Start production's pair and fill it, run the hostile suites (`RUNS`) from the shell of
    the incident next to it, check the pair, and stop it. `environ` is the test's (its
    run's): a serial run starts this when collection ends (tests/head_start.py)."""
    base = tmp_path / "remote-production"
    base.mkdir()
    blob_url = new_blob_url(s3_engine, environ)
    with production_on(base, postgres_engine, s3_engine, blob_url, environ) as production:
        production.start_pair()
        settings_dir = base / "hostile-settings"
        settings_dir.mkdir()
        (settings_dir / "settings.toml").write_text(
            SETTINGS.format(
                endpoint=s3_engine.endpoint_url,
                others=base / "other-profiles",
                testing_url=postgres_engine.url(f"hostile_testing_{os.getpid()}"),
                bucket=s3_engine.bucket,
                testing_prefix=f"{blob_url.rsplit('/', 1)[1]}-testing",
                production_url=production.database_url,
                production_blob=production.blob_url,
            )
        )
        (settings_dir / ".secrets.toml").write_text(
            SECRETS.format(key=s3_engine.access_key_id, secret=s3_engine.secret_access_key)
        )
        pair = Pair(production, s3_engine, settings_dir)
        inner, tmproot = tmp_path / "inner", tmp_path / "inner-tmp"
        inner.mkdir()
        tmproot.mkdir()
        write_suites(inner)
        env = export_production(inner_environ(environ, inner, tmproot), pair)
        results = pytest_side_by_side(inner, env, *RUNS.values())
        try:
            # Whatever the inner runs reported, production must be untouched and still served.
            pair.assert_untouched()
        except BaseException as error:  # the test raises it, after its own checks
            return Hostile(dict(zip(RUNS, results, strict=True)), error)
        return Hostile(dict(zip(RUNS, results, strict=True)), None)


def export_production(env: dict[str, str], pair: Pair) -> dict[str, str]:
    """The shell of the incident: production exported, no pytest of ours around."""
    production, s3 = pair.production, pair.s3
    for name in ("PYTEST_APP_SANDBOX", "PYTEST_APP_SANDBOX_OWNER", "PYTEST_CURRENT_TEST"):
        env.pop(name, None)
    return env | {
        "HOSTILE_DATABASE_URL": production.database_url,
        "HOSTILE_BLOB_URL": production.blob_url,
        "HOSTILE_PRODUCTION_TOKEN": production.token,
        "HOSTILE_REPLICA_PIDS": ",".join(str(replica.pid) for replica in production.replicas),
        "HOSTILE_S3_ENDPOINT_URL": s3.endpoint_url,
        "HOSTILE_S3_ACCESS_KEY_ID": s3.access_key_id,
        "HOSTILE_S3_SECRET_ACCESS_KEY": s3.secret_access_key,
        "APP_SETTINGS_DIR": str(pair.settings_dir),
        "ENV_FOR_DYNACONF": "production",
        "APP_DATABASE_URL": production.database_url,
        "APP_BLOB_URL": production.blob_url,
        "APP_S3_ENDPOINT_URL": s3.endpoint_url,
        "APP_S3_ACCESS_KEY_ID": s3.access_key_id,
        "APP_S3_SECRET_ACCESS_KEY": s3.secret_access_key,
        "APP_API_TOKEN": production.token,
    }


def write_suites(path: Path) -> None:
    (path / "hostile_helpers.py").write_text(REMOTE_HELPERS)
    for directory, files in {**REMOTE_SUITES, **REMOTE_WITHOUT_PLUGIN}.items():
        package = path / directory
        package.mkdir()
        (package / "__init__.py").write_text("")
        for name, source in files.items():
            (package / name).write_text(source)


HEADER = (
    "app: profile=testing (forced; the shell asked for 'production'), database=*",
    (
        "*neutralised: APP_API_TOKEN, APP_BLOB_URL, APP_DATABASE_URL, APP_S3_ACCESS_KEY_ID, "
        "APP_S3_ENDPOINT_URL, APP_S3_SECRET_ACCESS_KEY, ENV_FOR_DYNACONF=production*"
    ),
)


def test_hostile_runs_leave_production_s_replica_pair_byte_identical(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    postgres_engine: PostgresEngine,
    s3_engine: S3Engine,
) -> None:
    # One test for the three runs: one pair, on one xdist worker of the outer run.
    hostile = head_start.result(
        request.config,
        "remote-hostile",
        lambda: run_hostile_next_to_a_pair(tmp_path, postgres_engine, s3_engine, dict(os.environ)),
    )
    try:
        for name, result in hostile.results.items():
            # Every inner test passes: each asserts on the refusal it meets.
            assert result.ret == 0, f"{name}: {result.stdout.str()}{result.stderr.str()}"
            result.assert_outcomes(passed=PASSED[name])
            if name != "without the plugin":
                result.stdout.fnmatch_lines(HEADER)
            if name == "serial":  # under xdist a worker's atexit output is not the run's
                result.stdout.fnmatch_lines(["ATEXIT exit=78 refused: *"])
    finally:
        # Whatever the inner runs reported, production must be untouched and still served.
        if hostile.untouched is not None:
            raise hostile.untouched


@pytest.mark.app_profile("production")
def test_a_reader_of_production_s_database_refuses_every_change(
    tmp_path: Path, postgres_engine: PostgresEngine, s3_engine: S3Engine, blob_url: str
) -> None:
    from app.config import load
    from app.storage import open_storage

    # A reader holds no lock: neither the replicas' nor maintenance's could stop its writes.
    with production_on(tmp_path, postgres_engine, s3_engine, blob_url) as production:
        config = load("production", environ=production.env, serving=False)
        with open_storage(config, writer=True) as writer:
            session_id = writer.create_session("kept")["id"]
            writer.put_file(session_id, "notes.txt", b"notes")
        before = (database_state(production), object_state(s3_engine, production))
        with open_storage(config, writer=False) as reader:
            assert reader.get_session(session_id)["files"][0]["name"] == "notes.txt"
            changes = {
                "purge": reader.purge,
                "delete": lambda: reader.delete_session(session_id),
                "upload": lambda: reader.put_file(session_id, "new.txt", b"new"),
                "empty-trash": reader.empty_trash,
                "audit": lambda: reader.audit("purge", "everything"),
            }
            for what, change in changes.items():
                with pytest.raises(RuntimeError, match="it was opened read-only") as refused:
                    change()
                assert "open it with writer=True, which takes its lock" in str(refused.value), what
        assert (database_state(production), object_state(s3_engine, production)) == before
