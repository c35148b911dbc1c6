"""Replicas end to end: real `app serve` processes sharing one production profile on a real
PostgreSQL cluster and a real S3 server (tests/engines.py), and the commands next to them.
The replicas and the production profile they serve come from tests/replicas.py.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import forked_app
import psycopg
import pytest
from engines import PostgresEngine, S3Engine
from replicas import SETTINGS, Production, Replica, cpu_ticks, production_on, wait_for

from app import config as appconfig
from app.errors import WorkerSettingsChangedError
from app.server.run import check_same_settings, setting_digests
from app.testing import wait_until_serving


@pytest.fixture
def production(
    tmp_path: Path, postgres_engine: PostgresEngine, blob_url: str, s3_engine: S3Engine
) -> Iterator[Production]:
    """Production on the engines (a scratch database of this run; see `production_on`)."""
    with production_on(tmp_path, postgres_engine, s3_engine, blob_url) as prod:
        yield prod


# --- several replicas, one profile ------------------------------------------------------


def test_a_session_made_through_one_replica_is_listed_read_and_deleted_through_the_other(
    production: Production,
) -> None:
    first, second = production.start_pair()
    assert first.url != second.url
    with production.client(first) as one, production.client(second) as other:
        created = one.post("/sessions", json={"title": "review", "metadata": {"n": 1}})
        assert created.status_code == 201, created.text
        session_id = created.json()["id"]
        body = os.urandom(300_000)
        uploaded = one.put(f"/sessions/{session_id}/files/scan.bin", content=body)
        assert uploaded.status_code in (200, 201), uploaded.text

        listed = other.get("/sessions").json()
        assert [s["id"] for s in listed["items"]] == [session_id]
        shown = other.get(f"/sessions/{session_id}")
        assert shown.status_code == 200
        assert shown.json()["title"] == "review"
        assert [f["name"] for f in shown.json()["files"]] == ["scan.bin"]
        downloaded = other.get(f"/sessions/{session_id}/files/scan.bin")
        assert downloaded.status_code == 200
        assert downloaded.content == body

        assert other.delete(f"/sessions/{session_id}").status_code in (200, 204)
        assert one.get(f"/sessions/{session_id}").status_code == 404
        assert one.get("/sessions").json()["items"] == []


def test_pages_are_stable_across_replicas(production: Production) -> None:
    replicas = list(production.start_pair())
    clients = [production.client(replica) for replica in replicas]
    try:
        made = []
        for n in range(7):
            response = clients[n % 2].post("/sessions", json={"title": f"s{n}"})
            assert response.status_code == 201, response.text
            made.append(response.json()["id"])
        seen: list[str] = []
        after: str | None = None
        for turn in range(10):
            params: dict[str, Any] = {"limit": 3}
            if after is not None:
                params["after"] = after
            page = clients[turn % 2].get("/sessions", params=params).json()
            seen += [item["id"] for item in page["items"]]
            assert page["total"] == 7 + turn
            after = page["next"]
            if after is None:
                break
            # Created meanwhile, through the other replica: after every page seen so far.
            clients[(turn + 1) % 2].post("/sessions", json={"title": "late"})
        assert seen[:7] == made
        assert len(seen) == len(set(seen))
        everything = [
            [item["id"] for item in client.get("/sessions", params={"limit": 100}).json()["items"]]
            for client in clients
        ]
        assert everything[0] == everything[1] == seen
    finally:
        for client in clients:
            client.close()


# --- maintenance, live replicas ----------------------------------------------------------


def test_maintenance_is_refused_while_either_replica_lives_and_done_once_both_stopped(
    production: Production,
) -> None:
    first, second = production.start_pair()
    with production.client(first) as client:
        session_id = client.post("/sessions", json={"title": "keep"}).json()["id"]
        agent = {"User-Agent": "cleanup-script/1.0"}
        assert client.delete(f"/sessions/{session_id}", headers=agent).status_code in (200, 204)
        client.post("/sessions", json={"title": "live"})

    purge = ("data", "purge", "--profile", "production", "--yes-i-mean-it")
    empty = ("data", "empty-trash", "--profile", "production", "--yes-i-mean-it")
    *refusals, hint = production.run_side_by_side(
        purge, empty, ("data", "check", "--repair"), empty
    )
    for refused in refusals:
        assert refused.returncode == 75, refused.stderr
        assert "2 live replica(s)" in refused.stderr
        assert f"pid {first.pid}" in refused.stderr
        assert f"pid {second.pid}" in refused.stderr
        assert "Nothing was changed" in refused.stderr
    assert "/trash/empty?confirm=yes-i-mean-it" in hint.stderr

    assert first.stop() == 0
    refused = production.run(*purge)
    assert refused.returncode == 75, refused.stderr
    assert "1 live replica(s)" in refused.stderr
    assert f"pid {second.pid}" in refused.stderr
    assert f"pid {first.pid}" not in refused.stderr
    with production.client(second) as client:
        assert len(client.get("/sessions").json()["items"]) == 1  # nothing was purged

    assert second.stop() == 0
    purged = production.run(*purge)
    assert purged.returncode == 0, purged.stderr
    assert "moved 1 session(s)" in purged.stdout
    emptied = production.run(*empty)
    assert emptied.returncode == 0, emptied.stderr
    assert "removed 2 trash entries" in emptied.stdout
    with psycopg.connect(production.database_url) as conn:
        audit = conn.execute("SELECT operation, detail FROM app_audit ORDER BY id")
        details = dict(audit.fetchall())
    assert "empty-trash" in details
    # Who made each change (red team 75 on the documentation: a row named a host and a pid
    # alone): a replica's names the client that asked, a command's its command line.
    client = {"address": "127.0.0.1", "user_agent": "cleanup-script/1.0"}
    assert details["trash-session"]["client"] == client
    assert "serve" in details["trash-session"]["argv"]
    assert "client" not in details["purge"]
    assert details["purge"]["argv"][1:] == list(purge)


def test_a_replica_cannot_start_while_maintenance_holds_the_database(
    production: Production,
) -> None:
    from app.remote import pg

    production.start().stop()  # stamps the database and the prefix
    with pg.maintenance(production.database_url, "production", "hold it for a test"):
        refused = production.start(ready=False)
        assert refused.process.wait(timeout=60) == 75
    assert "a maintenance command holds it exclusively" in refused.output
    production.start()


# --- live, killed, lost -----------------------------------------------------------------


def test_status_lists_every_live_replica_and_forgets_one_killed_with_sigkill(
    production: Production,
) -> None:
    first, second = production.start_pair()
    shown = production.run("status")
    assert shown.returncode == 0, shown.stderr
    assert "served by 2 live replica(s):" in shown.stdout
    assert f"pid {first.pid}, profile production" in shown.stdout
    assert f"serving {second.url}" in shown.stdout
    assert "stamp: profile production" in shown.stdout
    assert "storage: database postgresql://" in shown.stdout

    os.kill(first.pid, signal.SIGKILL)
    first.process.wait()

    def only_second() -> bool:
        return [holder["pid"] for holder in production.holders()] == [second.pid]

    wait_for(only_second, "PostgreSQL to drop the killed replica's locks")
    shown, refused = production.run_side_by_side(
        ("status", "--json"), ("data", "purge", "--yes-i-mean-it")
    )
    as_json = json.loads(shown.stdout)
    assert [holder["pid"] for holder in as_json["holders"]] == [second.pid]
    assert as_json["held"] is True
    assert refused.returncode == 75
    assert f"pid {first.pid}" not in refused.stderr

    assert second.stop() == 0
    assert "held by: nobody" in production.run("status").stdout


def test_a_replica_whose_connection_is_terminated_refuses_writes_and_stops(
    production: Production,
) -> None:
    # The first checks its hold only when a write comes (its watcher would take an hour);
    # the second has no request at all, and its watcher stops it.
    first = production.start(ready=False, APP_LOCK_CHECK_SECONDS="3600")
    second = production.start(ready=False, APP_LOCK_CHECK_SECONDS="0.2")
    production.wait_ready(first)
    production.wait_ready(second)
    rows = {holder["pid"]: holder for holder in production.holders()}
    with psycopg.connect(production.database_url, autocommit=True) as conn:
        for replica in (first, second):
            backend = rows[replica.pid]["backend_pid"]
            conn.execute("SELECT pg_terminate_backend(%s)", (backend,))

    with production.client(first) as client:
        refused = client.post("/sessions", json={"title": "must not exist"})
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "holder_lost"
    assert "postgresql://" not in refused.text  # the address stays in the server's log
    assert first.process.wait(timeout=60) == 70
    assert second.process.wait(timeout=60) == 70
    for replica in (first, second):
        assert "lost the connection that holds database" in replica.output
    assert production.holders() == []
    with psycopg.connect(production.database_url) as conn:
        titles = [row[0] for row in conn.execute("SELECT title FROM app_sessions")]
    assert titles == []


def test_a_replica_told_to_stop_while_it_warms_up_stops(production: Production) -> None:
    # The warm-up's page of sessions (app.server.warm) waits for CREATE_LOCK, held here: the
    # replica has published its URL and is in its warm-up, before uvicorn serves, when
    # SIGTERM comes. The way `serve --workers` stops its other workers (stops 25-27's flake).
    from app.remote.pg import CREATE_LOCK

    waiting = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid = %s AND objid = %s AND objsubid = 2"
    )
    with psycopg.connect(production.database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s, %s)", CREATE_LOCK)
        replica = production.start(ready=False)
        replica.url = production._published_url(replica)
        wait_for(
            lambda: conn.execute(waiting, CREATE_LOCK).fetchone() == (1,),
            "the replica's warm-up to wait for the page lock",
        )
        replica.process.terminate()
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", CREATE_LOCK)
    try:
        code = replica.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still serving 60 s after SIGTERM in its warm-up:\n{replica.output}")
    assert code == 0, replica.output
    assert "stopped; releasing the hold" in replica.output
    assert production.holders() == []


# --- serve --workers ---------------------------------------------------------------------


def _workers_rows(production: Production, server: Replica, count: int) -> list[dict[str, Any]]:
    def rows() -> list[dict[str, Any]] | None:
        if server.process.poll() is not None:
            pytest.fail(f"app serve exited {server.process.returncode}:\n{server.output}")
        try:
            found = [row for row in production.holders() if row["url"]]
        except psycopg.Error:
            return None  # the first worker is still creating the tables
        return found if len(found) == count else None

    # Bounded by what serve and its workers do, not by wall time: each worker is forked,
    # connects and publishes its row, two at once, 19 to 20 s at a load of 20 on 2 cores
    # when they were spawned interpreters (bounded by 120 s of wall time until red team 75
    # on this session's leftovers).
    found: list[dict[str, Any]] = wait_for(
        rows, f"{count} workers to publish their rows", progress=lambda: cpu_ticks(server.pid)
    )
    return found


def test_serve_with_workers_runs_one_replica_per_worker_on_one_port(
    production: Production,
) -> None:
    server = production.start("--workers", "2", ready=False)
    rows = _workers_rows(production, server, 2)
    assert len({row["url"] for row in rows}) == 1
    workers = sorted(row["pid"] for row in rows)
    assert server.pid not in workers
    # Forked from serve, which has imported the server already, not each a spawned
    # interpreter (`python -c "from multiprocessing.spawn import ..."`) that imports it
    # again: about 0.7 s of CPU less per worker. A fork runs serve's command line.
    command = Path(f"/proc/{server.pid}/cmdline").read_bytes()
    assert all(Path(f"/proc/{pid}/cmdline").read_bytes() == command for pid in workers)
    server.url = rows[0]["url"]
    wait_until_serving(server.url, server.process, log=server.log)
    with production.client(server) as client:
        made = [client.post("/sessions", json={"title": f"w{n}"}).json()["id"] for n in range(6)]
        assert [s["id"] for s in client.get("/sessions").json()["items"]] == made
    # A worker stopped with SIGSTOP (Ctrl-Z, a debugger's detach) serves nothing and acts on
    # no stop: named so, with what resumes it (red team 75 on serve --workers: "serving").
    # So is it as a listener on the port a second `serve` wants (before the fix, "pid N
    # (... serve ...)" and "stop it"): `serve` and both workers hold the socket.
    os.kill(workers[1], signal.SIGSTOP)
    port = server.url.rpartition(":")[2]
    refused, taken, listed = production.run_side_by_side(
        ("data", "purge", "--yes-i-mean-it"),
        ("serve", "--port", port, "--workers", "2"),
        ("status", "--json"),
    )
    # Red team 76 on the server: said so in words only, `app status --json` gave the stopped
    # worker's row as the running one's, and a monitor reading it saw two serving replicas.
    # It now carries a data root's holder's fields for it (`stopped`).
    paused = {h["pid"]: h.get("stopped") for h in json.loads(listed.stdout)["holders"]}
    assert paused == {workers[0]: None, workers[1]: True}, listed.stdout
    stopped = (
        f"stopped by a signal (SIGSTOP, Ctrl-Z in its shell): it waits to be resumed; a stop "
        f"(kill {workers[1]}) takes effect once it is resumed (kill -CONT {workers[1]})"
    )
    assert taken.returncode == 69, taken.stderr
    shown = " ".join(taken.stderr.split())
    assert shown.count(f"), {stopped}") == 1 and shown.count("stopped by") == 1, shown
    assert shown.index(f"pid {workers[1]} (") < shown.index(stopped), shown
    assert refused.returncode == 75
    assert "2 live replica(s)" in refused.stderr
    assert all(f"pid {pid}" in refused.stderr for pid in workers)
    shown = " ".join(refused.stderr.split())
    assert shown.count(f"serving {server.url}, {stopped}") == 1, shown
    assert shown.count("stopped by") == 1, shown
    assert shown.index(f"pid {workers[1]},") < shown.index(stopped), shown
    # A worker killed outright (the OOM killer): its session, advisory lock and holder row
    # end with it (its connection is its own, not a copy a sibling forked from serve holds),
    # and serve names the signal (red team 74 on regress, round b: "stopped (exit -9)").
    # serve stopped by SIGTERM is red team 60's (tests/test_redteam_s60_regress_late.py).
    # The stopped worker is sent SIGCONT with its SIGTERM, as systemd's stop does: serve
    # waited for it for ever, silently, while it held the database (red team 75).
    # Resumed, then frozen with its cgroup (a debugger's breakpoint alike): neither SIGTERM
    # nor SIGCONT moves it, and serve waited for it for ever, silently (red team 75 on this
    # session's leftovers); it now says once whom it waits for, why, and what thaws it.
    os.kill(workers[1], signal.SIGCONT)
    group = _frozen(workers[1])
    try:
        os.kill(workers[0], signal.SIGKILL)
        if group is not None:
            wait_for(
                lambda: "waiting for worker" in server.output, "serve to say whom it waits for"
            )
    finally:
        if group is not None:
            (group / "freezer.state").write_text("THAWED")
            server.process.wait()  # its worker with it: the group is empty
            group.rmdir()
    assert server.process.wait() == 70, server.output
    if group is not None:
        thaw = f"echo THAWED > {group / 'freezer.state'}"
        assert (
            f"waiting for worker {workers[1]} to stop, told 1 s ago (SIGTERM): it is frozen with "
            f"its cgroup {group}: it waits to be thawed (`{thaw}`), and acts on no signal but kill "
            f"-KILL {workers[1]} until then; `app serve` exits, and frees the port, once it has "
            "stopped"
        ) in " ".join(server.output.split()), server.output
    assert production.holders() == []
    assert (
        f"worker {workers[0]} was killed by SIGKILL (the kernel's OOM killer, `journalctl -k` "
        "shows, or a `kill -9`); stopping the others, and exits 70 for its service manager "
        "to start it again"
    ) in " ".join(server.output.split()), server.output


def _frozen(pid: int) -> Path | None:
    """A new cgroup v1 freezer group holding `pid`, frozen; None where none can be made."""
    group = Path("/sys/fs/cgroup/freezer") / f"app-test-worker-{os.getpid()}-{pid}"
    try:
        group.mkdir()
    except OSError:
        return None
    (group / "cgroup.procs").write_text(str(pid))
    (group / "freezer.state").write_text("FROZEN")
    return group


def test_a_worker_that_loses_its_connection_stops_every_worker_with_exit_70(
    production: Production,
) -> None:
    server = production.start("--workers", "2", ready=False, APP_LOCK_CHECK_SECONDS="0.2")
    rows = _workers_rows(production, server, 2)
    with psycopg.connect(production.database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (rows[0]["backend_pid"],))
    try:
        code = server.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        # Seen twice under load (stops 25 and 26), not reproduced in 10 runs: say where it
        # stood, so the next one can be read.
        pytest.fail(f"still running 60 s after its worker lost its connection:\n{server.output}")
    assert code == 70
    assert "lost the connection that holds database" in server.output
    assert f"worker {rows[0]['pid']} stopped (exit 70); stopping the others" in server.output
    assert production.holders() == []


def test_a_data_root_refuses_several_workers(tmp_path: Path) -> None:
    env = {**os.environ, "ENV_FOR_DYNACONF": "testing", "APP_DATA_ROOT": str(tmp_path / "root")}
    result = forked_app.run(env, ["serve", "--port", "0", "--workers", "2"])
    assert result.returncode == 2
    assert "--workers above 1 needs a profile on PostgreSQL and object storage" in result.stderr
    assert "profile 'testing' uses a local data root" in result.stderr
    assert not (tmp_path / "root").exists()


# --- stamps ------------------------------------------------------------------------------


def test_storage_stamped_for_another_profile_is_refused_until_restamped(
    production: Production, s3_engine: S3Engine
) -> None:
    from app.remote import pg

    pg.open_database(production.database_url, "development")
    objects = s3_engine.objects(production.blob_url)
    objects.open("development")
    refused = production.start(ready=False)
    assert refused.process.wait(timeout=60) == 78
    assert "belongs to profile 'development'" in refused.output
    command = "app data restamp --profile production --from development (add --yes-i-mean-it"
    assert command in refused.output
    assert "NOT 'production': refused" in production.run("status").stdout

    unconfirmed = production.run("data", "restamp", "--from", "development")
    assert unconfirmed.returncode == 77, unconfirmed.stderr
    done = production.run("data", "restamp", "--from", "development", "--yes-i-mean-it")
    assert done.returncode == 0, done.stderr
    assert "is now stamped 'production' (was 'development')" in done.stdout
    assert (objects.read_stamp() or {})["profile"] == "production"
    with psycopg.connect(production.database_url) as conn:
        audited = conn.execute(
            "SELECT target FROM app_audit WHERE operation = 'restamp' ORDER BY id"
        ).fetchall()
    assert len(audited) == 2  # the database, then the prefix
    repeated = production.run("data", "restamp", "--from", "development", "--yes-i-mean-it")
    assert repeated.returncode == 0, repeated.stderr
    assert "is already stamped 'production': nothing was changed" in repeated.stdout
    production.start()
    again = production.run("data", "restamp", "--from", "development", "--yes-i-mean-it")
    assert again.returncode == 75  # a replica lives
    assert "live replica(s)" in again.stderr


def test_a_database_with_tables_of_its_own_and_no_stamp_is_refused(
    production: Production,
) -> None:
    with psycopg.connect(production.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id integer)")
    refused = production.start(ready=False)
    assert refused.process.wait(timeout=60) == 78
    assert "is not empty and has no profile stamp" in refused.output
    assert "public.invoices" in refused.output
    shown = production.run("status")
    assert shown.returncode == 0, shown.stderr
    assert "stamp: none" in shown.stdout
    with psycopg.connect(production.database_url) as conn:
        tables = conn.execute("SELECT to_regclass('app_stamp')").fetchone()
    assert tables == (None,)


#: `serve --workers 3` in a cgroup of its own whose pids.max lets it fork one worker: as
#: `python -m app` would run it, its exit code printed.
_LIMITED_SERVE = """
import os, runpy, sys
from pathlib import Path
(Path(sys.argv[1]) / "cgroup.procs").write_text(str(os.getpid()))
sys.argv[1:] = ["serve", "--port", "0", "--workers", "3"]
try:
    runpy.run_module("app", run_name="__main__", alter_sys=True)
except SystemExit as stop:
    print("exit", stop.code)
"""


def _pids_cgroup(name: str) -> Path | None:
    """A new cgroup with a pids controller (cgroup v1's pids hierarchy, or v2's), or None."""
    for hierarchy in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        group = hierarchy / name
        try:
            group.mkdir()
        except OSError:
            continue
        if (group / "pids.max").exists():
            return group
        group.rmdir()
    return None


def _production_refusing_its_database(tmp_path: Path) -> dict[str, str]:
    """Production's settings in `tmp_path`, with a database and an object store nothing
    answers at (127.0.0.1:9), and the environment that selects them."""
    (tmp_path / "settings.toml").write_text(
        SETTINGS.format(
            base=tmp_path,
            database_url="postgresql://app@127.0.0.1:9/refused",
            blob_url="s3://app-tests/refused",
            endpoint="http://127.0.0.1:9",
        )
    )
    env = {
        **os.environ,
        "ENV_FOR_DYNACONF": "production",
        "APP_SETTINGS_DIR": str(tmp_path),
        "APP_API_TOKEN": secrets.token_urlsafe(32),
        "PYTEST_APP_ALLOW_PROFILES": "production",
    }
    env.pop("APP_DATA_ROOT", None)
    return env


def test_a_worker_the_system_refuses_a_process_stops_serve_naming_the_limit(
    tmp_path: Path,
) -> None:
    # A fork refused at a limit of tasks (systemd's TasksMax= is a pids cgroup's pids.max):
    # serve was a traceback ending in multiprocessing's "can only join a started process",
    # exit 1, its refusal hidden (red team 75). No database is reached: the worker started
    # is stopped as it starts.
    env = _production_refusing_its_database(tmp_path)
    group = _pids_cgroup(f"app-tests-{os.getpid()}-{tmp_path.name}")
    if group is None:
        pytest.skip("no pids cgroup can be made here (it takes root and a writable hierarchy)")
    try:
        (group / "pids.max").write_text("2")  # serve and one worker
        done = forked_app.run_c(_LIMITED_SERVE.replace("sys.argv[1]", repr(str(group))), env)
    finally:
        group.rmdir()  # empty: serve joined its worker before it exited
    assert done.stdout == "exit 75\n", done.stdout + done.stderr
    shown = " ".join(done.stderr.split())
    assert shown.startswith("error: cannot start worker 2 of 3 of `app serve --workers 3` "), shown
    assert (
        ": the system refused it a new process (Resource temporarily unavailable, EAGAIN). The "
        "worker started before it (pid "
    ) in shown, shown
    assert (
        ") was stopped, before serving a request. Serve with fewer workers (--workers), or "
        "raise the limit that refused it, then start it again: systemd's TasksMax= for the "
        "service, the container's pids limit, or `ulimit -u` for the user that runs the server"
    ) in shown, shown
    assert "Traceback" not in done.stderr


#: `serve --workers 2` whose settings file is changed after serve read it, as its workers
#: start (an operator's edit, a deploy's copy): `app.server.run.bind` comes between the two.
_SETTINGS_CHANGED_AS_WORKERS_START = """
import runpy, sys
from pathlib import Path
import app.server.run as run
settings = Path(sys.argv[1])
bind = run.bind
def changing(host, port):
    said = settings.read_text().replace("[production]\\n", "[production]\\nport = 0\\n")
    settings.write_text(said)
    return bind(host, port)
run.bind = changing
sys.argv[1:] = ["serve", "--port", "0", "--workers", "2"]
try:
    runpy.run_module("app", run_name="__main__", alter_sys=True)
except SystemExit as stop:
    print("exit", stop.code)
"""


def test_workers_serve_with_the_settings_serve_read_though_the_file_changed(
    tmp_path: Path,
) -> None:
    # Each worker loaded the settings again: a file changed as the workers started gave two
    # workers different settings on one port (red team 75 on this session's leftovers), here
    # a port no load accepts, which each refused (exit 78). A forked worker is now handed
    # serve's own; with no database to reach (127.0.0.1:9), each is refused it.
    env = _production_refusing_its_database(tmp_path)
    code = _SETTINGS_CHANGED_AS_WORKERS_START.replace(
        "sys.argv[1]", repr(str(tmp_path / "settings.toml"))
    )
    done = forked_app.run_c(code, env)
    assert done.stdout == "exit 69\n", done.stdout + done.stderr
    assert "cannot connect to database postgresql://app@127.0.0.1:9/refused" in done.stderr
    # A spawned worker (serve runs another thread) loads them again, and is refused when
    # they are not serve's: the file as serve read it, then as its worker would.
    settings = tmp_path / "settings.toml"
    settings.write_text(settings.read_text().replace("port = 0\n", ""))
    read = appconfig.load("testing", environ=env)
    settings.write_text(
        settings.read_text().replace("[testing]\n", "[testing]\nmax_upload_bytes = 5\n")
    )
    with pytest.raises(WorkerSettingsChangedError) as refused:
        check_same_settings(appconfig.load("testing", environ=env), setting_digests(read), 1)
    assert str(refused.value) == (
        f"worker {os.getpid()} of `app serve --workers` (pid 1) read settings of profile "
        f"'testing' other than those `app serve` read as it started: max_upload_bytes changed "
        f"in between (in {tmp_path}, or in the environment), and every worker on one port "
        "serves with one set of settings. It served no request and `app serve` stops the "
        "others. Start `app serve` again once the settings are as intended (`app config` "
        "shows them)"
    )


@pytest.mark.parametrize(
    "said",
    [
        "sorry, too many clients already",
        "remaining connection slots are reserved for non-replication superuser connections",
    ],
)
def test_a_server_at_its_max_connections_is_named_so_not_as_one_that_does_not_run(
    said: str,
) -> None:
    # `serve --workers 2` on the suite's cluster filled to its max_connections (by hand:
    # filling its 200 takes 3.5 s): each worker was "cannot connect to database ...: FATAL:
    # sorry, too many clients already. Check that the server runs and that database_url
    # names it", both of which held (red team 75). The server's words, as that run gave
    # them (PostgreSQL 15's; the second at the slots kept for superusers).
    from app.remote import pg

    reason = f'connection to server at "127.0.0.1", port 5432 failed: FATAL:  {said}'
    error = psycopg.OperationalError(f"connection failed: {reason}")
    refused = pg.refused_connection("postgresql://app@db:5432/app", error, 8, "a connection")
    assert refused is not None and refused.sqlstate == "53300"
    assert " ".join(refused.message.split()) == (
        "database postgresql://app@db:5432/app refused a connection: connection failed: "
        f"{' '.join(reason.split())} (SQLSTATE 53300); nothing was changed. The database server "
        "is at its max_connections (less the slots it keeps for superusers): `SELECT usename, "
        "application_name, client_addr, count(*) FROM pg_stat_activity GROUP BY 1, 2, 3 ORDER "
        "BY 4 DESC` lists who holds them (each replica, and each worker of `app serve "
        "--workers N`, holds one for its lock and up to 8 in its pool, each `app` command one "
        "or two); end those that should not run, or serve with fewer workers or replicas, or "
        "raise max_connections (`ALTER SYSTEM SET max_connections = <n>` as a superuser, then "
        "restart PostgreSQL); then retry"
    )


def test_a_wait_kept_going_by_progress_is_still_bounded() -> None:
    # Red team 75 on regress, round b: a start that loops (a poll for tables a dead peer
    # never made) uses CPU all along, as a serving replica's lock check ticks every few
    # seconds: each reset the 30 s, and the wait had no end.
    ticks = iter(range(1 << 62))
    with pytest.raises(pytest.fail.Exception) as gave_up:
        wait_for(
            lambda: None, "a start that loops", seconds=0.05, progress=ticks.__next__, limit=0.2
        )
    assert str(gave_up.value) == (
        "gave up waiting for a start that loops (at work all along, but not done in 0.2 s: "
        "looping, not slow)"
    )
