"""The pytest plugin with a testing profile on PostgreSQL and object storage, against real
engines: a scratch database and prefix per run (and per xdist worker), dropped at the end,
and production's database and objects untouched. The hostile runs, next to a live
production replica pair, are in tests/test_remote_hostile.py.

Each test checks a pytest run in a subprocess (two or three tests share one: `JOBS`), with a
settings directory whose testing profile names a database on the engine's cluster (it need
not exist: only its scratch copies are made) and whose production profile names another,
real one, with a row and an object in it (one for all the runs, which only read it). The
runs depend on nothing but their own settings, so the module starts them all when its first
test asks (`runs`), two at a time in a serial run, whose tests leave a core idle
(tests/step_ahead.py), one at a time under xdist; each test then checks its own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import step_ahead
from engines import PostgresEngine, S3Engine
from side_by_side import inner_environ, pytest_side_by_side

SETTINGS = """\
[default]
s3_endpoint_url = "{endpoint}"

[development]
data_root = "roots/development"

[testing]
database_url = "{testing_url}"
blob_url = "s3://{bucket}/{testing_prefix}"

[production]
database_url = "{production_url}"
blob_url = "s3://{bucket}/{production_prefix}"
protected = true
"""

SECRETS = """\
[default]
s3_access_key_id = "{key}"
s3_secret_access_key = "{secret}"
"""

# The inner run: every test records where it ran, writes into the database and the prefix,
# and says whether the scratch database exists while it runs.
INNER = """
import json, os
import psycopg
from app.config import load
from app.remote.objects import ObjectStore

def test_writes_into_the_scratch_database_and_prefix():
    config = load()
    assert config.backend == "remote"
    with psycopg.connect(config.database_url, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
        conn.execute("CREATE TABLE IF NOT EXISTS probe (n int)")
        conn.execute("INSERT INTO probe VALUES (1)")
    store = ObjectStore(config.blob_url, config.s3_endpoint_url,
                        config.s3_access_key_id, config.s3_secret_access_key)
    store.put("probe.txt", b"written by a test")
    out = os.environ["PROBE_OUT"]
    with open(os.path.join(out, f"{os.getpid()}.json"), "w") as f:
        json.dump({"database": name, "blob_url": config.blob_url}, f)
"""

# The plugin's own fixtures on the remote backend: the store and the in-process client.
FIXTURES = """
def test_the_store_fixture_writes_to_the_scratch_database(app_store):
    session = app_store.create_session("on the scratch database")
    app_store.put_file(session["id"], "notes.txt", b"hello")
    assert app_store.get_session(session["id"])["files"][0]["size"] == 5

def test_the_client_fixture_serves_the_scratch_database(app_client):
    created = app_client.post("/sessions", json={"title": "through http"})
    assert created.status_code == 201, created.text
    listed = app_client.get("/sessions").json()
    assert created.json()["id"] in [item["id"] for item in listed["items"]]
"""


@dataclass
class Remote:
    """A settings directory for the inner run, and what the outer test checks."""

    directory: Path
    engine: PostgresEngine
    s3: S3Engine
    testing_db: str
    production_db: str
    production_url: str
    production_prefix: str
    testing_prefix: str
    #: Where the inner tests write what they saw (``PROBE_OUT``).
    probes: Path

    def scratch_databases(self) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1",
                (self.testing_db + "_pytest_%",),
            ).fetchall()
        return [row[0] for row in rows]

    def production_state(self) -> tuple[Any, ...]:
        with self.engine.connect(self.production_db) as conn:
            rows = conn.execute("SELECT * FROM ledger ORDER BY id").fetchall()
            tables = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            ).fetchall()
        client = self.s3.client()
        listed = client.list_objects_v2(Bucket=self.s3.bucket, Prefix=self.production_prefix)
        objects = []
        for item in listed.get("Contents", []):
            body = client.get_object(Bucket=self.s3.bucket, Key=item["Key"])["Body"].read()
            objects.append((item["Key"], body))
        return rows, tables, objects

    def testing_objects(self) -> list[str]:
        client = self.s3.client()
        listed = client.list_objects_v2(Bucket=self.s3.bucket, Prefix=self.testing_prefix + "/")
        return [item["Key"] for item in listed.get("Contents", [])]

    def drop(self) -> None:
        for name in self.scratch_databases():  # only what a failing run left behind
            self.engine.drop_database(name)


def make_production(
    postgres_engine: PostgresEngine, s3_engine: S3Engine, where: Path
) -> tuple[str, str]:
    """Production's database (stamped, with a row) and prefix (with an object), made once
    for the module's runs: each only reads it, and checks it is as it was before its run."""
    from app.remote import pg

    production_db = postgres_engine.create_database("production")
    pg.open_database(postgres_engine.url(production_db), "production")  # stamped, like a real one
    with postgres_engine.connect(production_db) as conn:
        conn.execute("CREATE TABLE ledger (id int PRIMARY KEY, what text)")
        conn.execute("INSERT INTO ledger VALUES (1, 'a production row')")
    production_prefix = f"production-{os.getpid()}-{where.name}".replace("_", "-").lower()
    s3_engine.client().put_object(
        Bucket=s3_engine.bucket, Key=f"{production_prefix}/blob", Body=b"production bytes"
    )
    return production_db, production_prefix


def make_remote(
    postgres_engine: PostgresEngine,
    s3_engine: S3Engine,
    where: Path,
    production: tuple[str, str],
) -> Remote:
    """Testing's names and `production` (`make_production`'s), in settings under `where`."""
    production_db, production_prefix = production
    tag = f"{os.getpid()}-{where.name}".replace("_", "-").lower()
    testing_db = f"testing_{os.getpid()}_{abs(hash(where.name)) % 10**6}"
    directory = where / "settings"
    directory.mkdir()
    (directory / "settings.toml").write_text(
        SETTINGS.format(
            endpoint=s3_engine.endpoint_url,
            testing_url=postgres_engine.url(testing_db),
            production_url=postgres_engine.url(production_db),
            bucket=s3_engine.bucket,
            testing_prefix=f"testing-{tag}",
            production_prefix=production_prefix,
        )
    )
    (directory / ".secrets.toml").write_text(
        SECRETS.format(key=s3_engine.access_key_id, secret=s3_engine.secret_access_key)
    )
    probes = where / "probes"
    probes.mkdir()
    return Remote(
        directory,
        postgres_engine,
        s3_engine,
        testing_db,
        production_db,
        postgres_engine.url(production_db),
        production_prefix,
        f"testing-{tag}",
        probes,
    )


def _probes(directory: Path) -> list[dict[str, str]]:
    """What the inner runs' ``INNER`` tests recorded (the live servers' records are
    ``live-*.json``)."""
    return [json.loads(path.read_text()) for path in sorted(directory.glob("[0-9]*.json"))]


def _module_passed(result: pytest.RunResult, module: str, tests: int) -> None:
    """`module`'s `tests` tests passed in `result` (a run of several modules)."""
    result.stdout.fnmatch_lines([f"{module}.py {'.' * tests} *"])


@dataclass
class Run:
    """One inner run: its remote, production as it was before the run, and the result."""

    remote: Remote
    before: tuple[Any, ...]
    result: pytest.RunResult


@dataclass(frozen=True)
class Job:
    """What one test runs: the inner test files, pytest's options, and what to change in
    the settings before the run."""

    files: dict[str, str]
    args: tuple[str, ...]
    prepare: Callable[[Remote], None] | None = None


def _point_testing_at_production(remote: Remote) -> None:
    settings = remote.directory / "settings.toml"
    text = settings.read_text().replace(
        remote.engine.url(remote.testing_db),
        remote.production_url.replace("127.0.0.1", "localhost"),
    )
    settings.write_text(text)


# The live-server fixture on the remote backend: a real `app serve` replica on the scratch
# database, found through its holder row. Each test records its server's pid and URL; the
# last one (the run is in file order) checks that the earlier servers and their rows are gone.
LIVE = """
import json, os
import httpx
import psycopg
from app.config import load

def _record(server):
    out = os.path.join(os.environ["PROBE_OUT"], f"live-{server.pid}.json")
    with open(f"/proc/{server.pid}/stat") as stat:
        parent = int(stat.read().rpartition(")")[2].split()[1])
    with open(out, "w") as f:
        json.dump({"pid": server.pid, "url": server.url, "location": server.location,
                   "worker": os.environ.get("PYTEST_XDIST_WORKER"), "parent": parent,
                   "pytest": os.getpid()}, f)

def test_a_session_created_over_http_reads_back(app_live_server):
    assert app_live_server.data_root is None
    assert app_live_server.config.backend == "remote"
    assert "_pytest_" in app_live_server.location
    created = httpx.post(f"{app_live_server.url}/sessions", json={"title": "live"},
                         headers=app_live_server.headers)
    assert created.status_code == 201, created.text
    read = httpx.get(f"{app_live_server.url}/sessions/{created.json()['id']}",
                     headers=app_live_server.headers)
    assert read.json()["title"] == "live"
    _record(app_live_server)

def test_the_store_sees_what_the_live_server_wrote(app_live_server, app_store):
    created = httpx.post(f"{app_live_server.url}/sessions", json={"title": "seen"},
                         headers=app_live_server.headers)
    assert app_store.get_session(created.json()["id"])["title"] == "seen"
    _record(app_live_server)

def test_the_servers_of_earlier_tests_stopped_and_left_no_row():
    seen = [json.load(open(os.path.join(os.environ["PROBE_OUT"], name)))
            for name in os.listdir(os.environ["PROBE_OUT"]) if name.startswith("live-")]
    assert len(seen) == 2 and seen[0]["url"] != seen[1]["url"], seen
    with psycopg.connect(load("testing").database_url) as conn:
        rows = conn.execute("SELECT pid FROM app_holders").fetchall()
    for server in seen:
        assert (server["pid"],) not in rows, rows
        assert not os.path.exists(f"/proc/{server['pid']}"), server
"""


# Another run whose scratch suffix came out the same (session 66): its marker, written in
# the run's scratch prefix with an object of its own, before the run's first test
# (`claimed`), or over the run's own during its test (`taken`: a store that ignores
# If-None-Match, or a test that removed the run's marker before the other run began).
OTHER_RUN = """
import json
from app.config import load
from app.remote.objects import RUN_MARKER, ObjectStore

def another_run_s():
    config = load("testing")
    store = ObjectStore(config.blob_url, config.s3_endpoint_url,
                        config.s3_access_key_id, config.s3_secret_access_key)
    other = {"run": "_pytest_1_abcd", "token": "0" * 32, "host": "ci-other", "pid": 1,
             "started": "2026-12-06T20:00:00+00:00", "database": "other/testing_pytest_1_abcd"}
    store.put(RUN_MARKER, json.dumps(other).encode())
    store.put("theirs.txt", b"another run's")
"""
CLAIMED = (
    OTHER_RUN
    + """
def pytest_sessionstart(session):
    another_run_s()
"""
)
TAKEN = (
    OTHER_RUN
    + """
def test_another_run_takes_the_prefix():
    another_run_s()
"""
)
_OTHER_NAMED = (
    "run _pytest_1_abcd of pid 1 on host ci-other, started 2026-12-06T20:00:00+00:00, whose "
    "scratch database is other/testing_pytest_1_abcd"
)


# A process of another profile whose blob_url (set where no settings file shows it to the
# run) names the run's scratch prefix: its stamp and an upload of its own there, before the
# run's first test (`occupied`), or during its test (`adopted`: as the open of a release
# that took a prefix holding the run's marker alone as empty made them; rt-regress66c).
ANOTHER_PROFILE = """
import json
from app.config import load
from app.remote.objects import STAMP_NAME, ObjectStore

def another_profile_s():
    config = load("testing")
    store = ObjectStore(config.blob_url, config.s3_endpoint_url,
                        config.s3_access_key_id, config.s3_secret_access_key)
    store.put(STAMP_NAME, json.dumps({"profile": "production"}).encode())
    store.put("blobs/" + "ab" * 16, b"production's upload")
"""
OCCUPIED = (
    ANOTHER_PROFILE
    + """
def pytest_sessionstart(session):
    another_profile_s()
"""
)
ADOPTED = (
    ANOTHER_PROFILE
    + """
def test_another_profile_takes_the_prefix():
    another_profile_s()
"""
)
_ANOTHER_PROFILE_S = [".app-profile.json", "blobs/" + "ab" * 16]
# The same process whose blob_url names a prefix inside the run's (``<scratch>/replica``,
# outside the run: a process of the run is refused such a prefix): its open lists that prefix
# alone, which the run's marker is not in, and stamps it (rt-regress66d).
BELOW = (
    ANOTHER_PROFILE.replace("put(STAMP_NAME", 'put("replica/" + STAMP_NAME').replace(
        'put("blobs/', 'put("replica/blobs/'
    )
    + """
def test_another_profile_takes_a_prefix_below():
    another_profile_s()
"""
)


# Tests that check different things of runs started alike share one run (four runs, not
# seven: each is a pytest start-up with a scratch database and prefix made and dropped, and
# under `-n 2` two workers more). The plain run holds the probe, the store and client
# fixtures and the live servers, each test checking its own module's outcome; the xdist run
# holds the probes and the live servers of both workers: xdist hands each worker two
# consecutive tests first, a module's live server and then its probe. The app's own tests
# come first in either run (test_fixtures.py, the live server): a scratch database that
# holds the probe's table and no stamp yet is one the app refuses to adopt.
LIVE_FIRST = LIVE.split("def test_the_store_sees", maxsplit=1)[0]
JOBS = {
    "plain": Job(
        {"test_inner": INNER, "test_fixtures": FIXTURES, "test_live": LIVE}, ("-p", "no:randomly")
    ),
    "keep": Job({"test_inner": INNER}, ("-p", "no:randomly", "--app-keep-remote")),
    "xdist": Job(
        {f"test_inner_{n}": LIVE_FIRST + INNER for n in range(4)}, ("-p", "no:randomly", "-n", "2")
    ),
    "refused": Job({"test_inner": INNER}, ("-p", "no:randomly"), _point_testing_at_production),
    "claimed": Job({"conftest": CLAIMED, "test_inner": INNER}, ("-p", "no:randomly")),
    "taken": Job({"test_taken": TAKEN}, ("-p", "no:randomly")),
    "occupied": Job({"conftest": OCCUPIED, "test_inner": INNER}, ("-p", "no:randomly")),
    "adopted": Job({"test_adopted": ADOPTED}, ("-p", "no:randomly")),
    "below": Job({"test_below": BELOW}, ("-p", "no:randomly")),
}


@pytest.fixture(scope="module")
def runs(
    postgres_engine: PostgresEngine, s3_engine: S3Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Run]]]:
    """Every job's run, started in the tests' order, `step_ahead.width()` at a time. Each
    is a pytest subprocess as ``pytester.runpytest_subprocess`` starts it (in a directory
    of its own holding the job's files, with pytester's environment:
    `side_by_side.inner_environ`), with ``APP_SETTINGS_DIR`` and ``PROBE_OUT`` its own."""
    environ = dict(os.environ)
    places = {name: tmp_path_factory.mktemp(f"remote-{name}") for name in JOBS}
    made: list[Remote] = []
    # One production for the four runs (a database and a prefix less to make and drop for
    # each): none writes to it, and each test compares it with what it was before its run.
    production = make_production(postgres_engine, s3_engine, places["plain"])

    def run(name: str) -> Run:
        where = places[name]
        remote = make_remote(postgres_engine, s3_engine, where, production)
        made.append(remote)
        job = JOBS[name]
        if job.prepare is not None:
            job.prepare(remote)
        before = remote.production_state()
        project = where / "project"
        project.mkdir()
        for module, source in job.files.items():
            (project / f"{module}.py").write_text(source)
        env = inner_environ(environ, project, where / "tmproot")
        env |= {"APP_SETTINGS_DIR": str(remote.directory), "PROBE_OUT": str(remote.probes)}
        (where / "tmproot").mkdir()
        (result,) = pytest_side_by_side(project, env, job.args)
        return Run(remote, before, result)

    pool = ThreadPoolExecutor(step_ahead.width(), thread_name_prefix="plugin-remote")
    try:
        yield {name: pool.submit(run, name) for name in JOBS}
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for remote in made:
            remote.drop()
        postgres_engine.drop_database(production[0])


def _taken(runs: dict[str, Future[Run]], name: str) -> tuple[Remote, tuple[Any, ...], Any]:
    done = runs[name].result()
    return done.remote, done.before, done.result


def test_a_run_gets_a_scratch_database_and_prefix_and_drops_both(
    runs: dict[str, Future[Run]],
) -> None:
    remote, before, result = _taken(runs, "plain")
    result.assert_outcomes(passed=6)
    _module_passed(result, "test_inner", 1)
    result.stdout.fnmatch_lines(
        [
            (
                f"app: profile=testing (forced), database=postgresql://app@127.0.0.1:*/"
                f"{remote.testing_db}_pytest_*, prefix=s3://*/{remote.testing_prefix}/pytest_*: "
                "scratch, created for this run on testing's server and bucket "
                "(from settings.toml [[]testing]), dropped at the end"
            ),
        ]
    )
    (probe,) = _probes(remote.probes)
    # It ran on a database named from testing's, with the run's suffix, on testing's server.
    assert probe["database"].startswith(f"{remote.testing_db}_pytest_")
    assert f"/{remote.testing_prefix}/pytest_" in probe["blob_url"]
    # ... which is gone now, with its objects; production is as it was.
    assert remote.scratch_databases() == []
    assert remote.testing_objects() == []
    assert remote.production_state() == before


def test_the_store_and_client_fixtures_work_on_the_scratch_database(
    runs: dict[str, Future[Run]],
) -> None:
    remote, before, result = _taken(runs, "plain")
    result.assert_outcomes(passed=6)
    _module_passed(result, "test_fixtures", 2)
    assert remote.scratch_databases() == []
    assert remote.testing_objects() == []
    assert remote.production_state() == before


def test_keep_remote_keeps_the_scratch_database_and_prefix(
    runs: dict[str, Future[Run]],
) -> None:
    remote, _, result = _taken(runs, "keep")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["app: profile=testing *kept at the end (--app-keep-remote)"])
    (probe,) = _probes(remote.probes)
    assert remote.scratch_databases() == [probe["database"]]
    assert any(key.endswith("/probe.txt") for key in remote.testing_objects())


def test_every_xdist_worker_has_a_scratch_database_of_its_own(
    runs: dict[str, Future[Run]],
) -> None:
    remote, before, result = _taken(runs, "xdist")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["app: profile=testing *(+ _gw<N> per xdist worker)*"])
    databases = {probe["database"] for probe in _probes(remote.probes)}
    assert len(databases) == 2
    assert {name.rsplit("_", 1)[1] for name in databases} == {"gw0", "gw1"}
    assert remote.scratch_databases() == []
    assert remote.testing_objects() == []
    assert remote.production_state() == before


def test_a_testing_profile_on_production_s_database_is_refused_before_the_run(
    runs: dict[str, Future[Run]],
) -> None:
    remote, before, result = _taken(runs, "refused")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            (
                "*app: the testing profile cannot be used: profiles 'testing' and 'production' "
                "name the same database*"
            )
        ]
    )
    assert remote.production_state() == before


def test_the_live_server_fixture_serves_the_scratch_database_as_a_replica(
    runs: dict[str, Future[Run]],
) -> None:
    remote, before, result = _taken(runs, "plain")
    result.assert_outcomes(passed=6)
    _module_passed(result, "test_live", 3)
    # Two tests ask for it: both replicas are forked from the run's one warm interpreter
    # (app.testing.zygote), not started plainly by the pytest process (1.35 s of CPU each).
    live = [json.loads(path.read_text()) for path in remote.probes.glob("live-*.json")]
    assert len(live) == 2 and all(s["parent"] != s["pytest"] for s in live), live
    assert len({server["parent"] for server in live}) == 1, live
    assert remote.scratch_databases() == []
    assert remote.testing_objects() == []
    assert remote.production_state() == before


def test_live_servers_of_two_xdist_workers_do_not_collide(
    runs: dict[str, Future[Run]],
) -> None:
    remote, before, result = _taken(runs, "xdist")
    result.assert_outcomes(passed=8)
    live = [json.loads(path.read_text()) for path in remote.probes.glob("live-*.json")]
    # Four servers, each its own process; a worker's two run one after the other, so the
    # kernel may hand a freed port out again (a URL is no identity). What must not be shared
    # is the scratch store: each worker's servers serve that worker's own.
    assert len({server["pid"] for server in live}) == 4, live
    assert {server["worker"] for server in live} == {"gw0", "gw1"}, live
    where = {w: {s["location"] for s in live if s["worker"] == w} for w in ("gw0", "gw1")}
    assert len(where["gw0"]) == len(where["gw1"]) == 1 and where["gw0"] != where["gw1"], live
    assert remote.scratch_databases() == []
    assert remote.production_state() == before


def test_a_run_whose_scratch_prefix_is_another_run_s_is_refused_and_empties_nothing(
    runs: dict[str, Future[Run]],
) -> None:
    # Before: the run went on in the other's prefix, and its end emptied it (theirs.txt).
    remote, before, result = _taken(runs, "claimed")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            (
                f"*app: the run's scratch prefix s3://*/{remote.testing_prefix}/pytest_* is "
                "another "
                f"test run's: its marker .app-pytest-run.json names {_OTHER_NAMED}. The two runs "
                "drew the same scratch suffix (_pytest_*: a pid and 16 random bits*Nothing was "
                "created; run again (a new suffix is drawn)*"
            )
        ]
    )
    assert remote.scratch_databases() == []
    kept = remote.testing_objects()
    assert sorted(key.rsplit("/", 1)[1] for key in kept) == [".app-pytest-run.json", "theirs.txt"]
    assert remote.production_state() == before


def test_a_run_s_end_empties_no_scratch_prefix_another_run_s_marker_names(
    runs: dict[str, Future[Run]],
) -> None:
    # Before: its end emptied the prefix, the other run's theirs.txt with it.
    remote, before, result = _taken(runs, "taken")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            (
                "*app: the run's tests are done, but it could not remove the objects under its "
                f"scratch prefix s3://*/{remote.testing_prefix}/pytest_* (nothing deleted: its "
                f"marker .app-pytest-run.json names another run, {_OTHER_NAMED}, which drew the "
                "same suffix: they are that run's, whose end empties them)*"
            )
        ]
    )
    assert remote.scratch_databases() == []  # its database is its own, and dropped
    kept = remote.testing_objects()
    assert sorted(key.rsplit("/", 1)[1] for key in kept) == [".app-pytest-run.json", "theirs.txt"]
    assert remote.production_state() == before


def _kept(remote: Remote) -> list[str]:
    """The objects under testing's prefix, below the run's scratch prefix."""
    return sorted(key.split("/", 2)[2] for key in remote.testing_objects())


def test_a_run_whose_scratch_prefix_holds_another_profile_s_objects_is_refused(
    runs: dict[str, Future[Run]],
) -> None:
    # Before: marked as the run's, its end emptied it, production's stamp and upload with it.
    remote, before, result = _taken(runs, "occupied")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            (
                f"*app: the run's scratch prefix s3://*/{remote.testing_prefix}/pytest_* holds "
                "objects already (.app-profile.json, blobs/abab*), and no run's marker; its "
                "stamp .app-profile.json names profile 'production'. A run's scratch prefix is "
                "new, and its end empties it: this run's would have deleted them. Nothing was "
                "created, and they are left as they are*"
            )
        ]
    )
    assert remote.scratch_databases() == []
    assert _kept(remote) == _ANOTHER_PROFILE_S  # its marker removed, theirs left
    assert remote.production_state() == before


def test_a_run_s_end_empties_no_scratch_prefix_another_profile_stamped(
    runs: dict[str, Future[Run]],
) -> None:
    # Before: its end emptied the prefix, production's stamp and upload with it.
    remote, before, result = _taken(runs, "adopted")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            (
                "*app: the run's tests are done, but it could not remove the objects under its "
                f"scratch prefix s3://*/{remote.testing_prefix}/pytest_* (nothing deleted: its "
                "stamp .app-profile.json names profile 'production', not 'testing': a process "
                "of that profile took the prefix as its own (its blob_url names it), and they "
                "are that profile's. Leave them*"
            )
        ]
    )
    assert remote.scratch_databases() == []  # its database is its own, and dropped
    assert _kept(remote) == sorted([".app-pytest-run.json", *_ANOTHER_PROFILE_S])
    assert remote.production_state() == before


def test_a_run_s_end_empties_no_prefix_another_profile_stamped_below_its_own(
    runs: dict[str, Future[Run]],
) -> None:
    # Before: its end's listing, every key under the scratch prefix, held the other
    # profile's stamp and upload, and deleted them.
    remote, before, result = _taken(runs, "below")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            (
                "*app: the run's tests are done, but it could not remove the objects under its "
                f"scratch prefix s3://*/{remote.testing_prefix}/pytest_* (nothing deleted: "
                "replica/.app-profile.json, inside it, names profile 'production', not "
                "'testing': a process of that profile took the prefix replica/ below the run's "
                "as its own (its blob_url names it), and the objects there are that profile's. "
                "Leave them*"
            )
        ]
    )
    assert remote.scratch_databases() == []
    assert _kept(remote) == sorted(
        [".app-pytest-run.json", *(f"replica/{name}" for name in _ANOTHER_PROFILE_S)]
    )
    assert remote.production_state() == before
