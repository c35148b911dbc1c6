"""The PostgreSQL + object storage backend against its engines' own clients, in one run.

Starts a throwaway PostgreSQL cluster (Debian's ``initdb``/``postgres``, restarted with
``fsync`` and ``synchronous_commit`` on, so that a commit is durable) and ``weed mini``
(SeaweedFS's S3 server), both on 127.0.0.1, with the start functions the tests use
(tests/engines.py), and one or two ``app serve`` replicas of a production profile on them.
Measures, each against a baseline taken in the same run:

- upload: ``PUT /sessions/{id}/files/{name}`` of ``--size-mib`` (raw socket, 1 MiB chunks,
  timed to the last byte of the response) against boto3's ``put_object`` of the same bytes
  to the same bucket; per-run ratio, median over ``--runs``, order alternated;
- durable create: ``POST /sessions`` from ``--concurrency`` keep-alive connections (spread
  over the replicas) against ``pgbench`` running a one-INSERT-per-transaction script
  (``pgbench_history``, after ``pgbench -i``) with as many clients, on the same cluster;
- page latency: ``GET /sessions?limit=100&after=<cursor>`` at cursors spread through
  100,000 sessions (inserted with COPY in the app's table, ids from the app's own
  ``new_session_id``, so they sort the way the server's do), one keep-alive client;
- round trips: how many one create, upload, delete and read of a replica's store make to
  PostgreSQL (libpq's protocol trace; a count, not a time).

Run: ``.venv/bin/python bench/remote.py [--size-mib 64] [--runs 5] [--creates 2000]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
# tests/engines.py starts the same engines the suite uses; it imports pytest only for its
# skip/fail helpers, which here just end the benchmark with the reason.
sys.path.insert(0, str(BENCH.parent / "tests"))

import _common  # noqa: E402
import upload  # noqa: E402
from _common import (  # noqa: E402
    PROJECT,
    Connection,
    _die_with_parent,
    median,
    p90,
    request_bytes,
    run_workers,
    stop,
    wait_for_health,
)
from upload import MIB, send  # noqa: E402

# A production profile refuses the other benchmarks' guessable token; the helpers borrowed
# from them read it from their module.
TOKEN = _common.TOKEN = upload.TOKEN = secrets.token_urlsafe(32)

SETTINGS = """\
[default]
host = "127.0.0.1"
log_level = "warning"

[development]
data_root = "{work}/development"

[testing]
data_root = "{work}/testing"

[production]
database_url = "{database_url}"
blob_url = "s3://{bucket}/production"
s3_endpoint_url = "{endpoint}"
max_upload_bytes = {max_upload}
"""


class Replica:
    """One ``app serve --port 0`` of the production profile; its URL from its holder row."""

    def __init__(self, env: dict[str, str], database_url: str, log: Path) -> None:
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app", "serve", "--port", "0"],
                env=env,
                stdout=out,
                stderr=out,
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        self.log = log
        self.url = self._published(database_url)
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])
        wait_for_health(self.url, self.process, log)

    def _published(self, database_url: str) -> str:
        import psycopg

        from app.remote import pg

        for _ in range(600):  # bounded: 30 s
            if self.process.poll() is not None:
                raise RuntimeError(f"app serve exited {self.process.returncode}:\n"
                                   + self.log.read_text())  # fmt: skip
            try:
                with psycopg.connect(database_url, autocommit=True) as conn:
                    rows = pg.live_holders(conn)
            except psycopg.Error:
                rows = []  # the first replica is still creating the tables
            for row in rows:
                if row["pid"] == self.process.pid and row["url"]:
                    return str(row["url"]).rstrip("/")
            time.sleep(0.05)
        raise RuntimeError(f"replica {self.process.pid} published no URL")

    def stop(self) -> None:
        stop(self.process)


def durable(engine: Any) -> None:
    """Restart the tests' cluster with its durability settings back to PostgreSQL's defaults
    (the tests turn fsync off: their data is thrown away)."""
    engine.restart(signal.SIGINT, {"max_connections": "200"})


# --- (a) upload --------------------------------------------------------------------------


def measure_upload(replica: Replica, s3: Any, runs: int, size: int) -> dict[str, Any]:
    import httpx

    payload = b"".join(os.urandom(MIB) for _ in range(size // MIB))
    client = s3.client()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    session = httpx.post(f"{replica.url}/sessions", json={"title": "upload"}, headers=headers)
    session.raise_for_status()
    session_id = session.json()["id"]
    rates: dict[str, list[float]] = {"boto3": [], "app": []}
    for run in range(runs):
        kinds = ["boto3", "app"] if run % 2 == 0 else ["app", "boto3"]
        for kind in kinds:
            if kind == "boto3":
                start = time.perf_counter()
                client.put_object(Bucket=s3.bucket, Key=f"baseline/{run}.bin", Body=payload)
                seconds = time.perf_counter() - start
            else:
                line = f"PUT /sessions/{session_id}/files/run-{run}.bin"
                seconds = send(replica.port, line, size)
            rates[kind].append(size / MIB / seconds)
            print(f"upload run {run + 1}: {kind:<5} {rates[kind][-1]:7.1f} MiB/s", flush=True)
    return {
        "size_mib": size // MIB,
        "runs": runs,
        "median_mib_s": {kind: median(values) for kind, values in rates.items()},
        "ratio": median([a / b for a, b in zip(rates["app"], rates["boto3"], strict=True)]),
    }


# --- (b) durable create ------------------------------------------------------------------


def create_rate(ports: list[int], total: int, concurrency: int) -> float:
    """``total`` POST /sessions over ``concurrency`` connections spread over ``ports``."""
    raw = request_bytes("POST", "/sessions", b'{"title": "bench", "metadata": {"n": 1}}')
    connections = [Connection(ports[i % len(ports)]) for i in range(concurrency)]
    failures: list[str] = []

    def worker(connection: Connection) -> None:
        for _ in range(total // concurrency):
            status, body = connection.send(raw)
            if status != 201:
                failures.append(f"{status} {body[:200]!r}")
                return

    elapsed = run_workers(worker, [(c,) for c in connections])
    for connection in connections:
        connection.close()
    if failures:
        raise RuntimeError(f"creates failed: {failures[:5]}")
    return (total // concurrency) * concurrency / elapsed


def pgbench_binary(engine: Any) -> str:
    beside = engine.bindir / "pgbench"
    if beside.exists():
        return str(beside)
    # Debian keeps the server's tools off PATH, one directory per major version.
    found = shutil.which("pgbench")
    if found:
        return found
    versions = Path("/usr/lib/postgresql").glob("*/bin/pgbench")
    return str(
        max(versions, key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0)
    )


def pgbench_rate(engine: Any, work: Path, total: int, concurrency: int) -> float:
    """pgbench's simple-insert rate: one INSERT per transaction, ``concurrency`` clients."""
    script = work / "insert.sql"
    script.write_text(
        "\\set aid random(1, 100000)\n\\set bid random(1, 1)\n\\set tid random(1, 10)\n"
        "\\set delta random(-5000, 5000)\n"
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
        "VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);\n"
    )
    script.chmod(0o644)
    pgbench = pgbench_binary(engine)
    common = ["-h", "127.0.0.1", "-p", str(engine.port), "-U", engine.user]
    result = subprocess.run(
        [pgbench, *common, "-n", "-f", str(script), "-c", str(concurrency), "-j", "2",
         "-t", str(total // concurrency), "pgbench"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    for line in result.stdout.splitlines():
        if line.startswith("tps = "):
            return float(line.split()[2])
    raise RuntimeError(f"no tps in pgbench's output:\n{result.stdout}")


def measure_create(
    engine: Any, work: Path, replicas: list[Replica], rounds: int, total: int, concurrency: int
) -> dict[str, Any]:
    ports = [r.port for r in replicas]
    create_rate(ports, 200, concurrency)  # warm-up
    pgbench_rate(engine, work, 200, concurrency)
    app_rates, pg_rates = [], []
    for round_ in range(rounds):
        order = ["app", "pgbench"] if round_ % 2 == 0 else ["pgbench", "app"]
        for kind in order:
            if kind == "app":
                app_rates.append(create_rate(ports, total, concurrency))
            else:
                pg_rates.append(pgbench_rate(engine, work, total, concurrency))
        print(f"create, {len(replicas)} replica(s), round {round_ + 1}: app "
              f"{app_rates[-1]:7.0f}/s, pgbench {pg_rates[-1]:7.0f}/s", flush=True)  # fmt: skip
    return {
        "replicas": len(replicas),
        "concurrency": concurrency,
        "median_per_s": {"app": median(app_rates), "pgbench": median(pg_rates)},
        "ratio": median([a / b for a, b in zip(app_rates, pg_rates, strict=True)]),
    }


# --- (c) page latency --------------------------------------------------------------------


def fill(database_url: str, sessions: int) -> list[str]:
    """Bring the live sessions up to ``sessions`` with COPY; return every live id, sorted."""
    import psycopg

    from app.store.ids import new_session_id

    with psycopg.connect(database_url, autocommit=True) as conn:
        have = conn.execute("SELECT count(*) FROM app_sessions WHERE deleted_at IS NULL")
        row = have.fetchone()
        assert row is not None
        missing = sessions - int(row[0])
        moment = dt.datetime.now(dt.UTC)
        with conn.cursor() as cursor:
            copy = "COPY app_sessions (id, title, metadata, created_at, updated_at) FROM STDIN"
            with cursor.copy(copy) as copying:
                for n in range(missing):
                    copying.write_row((new_session_id(), f"bulk {n}", '{"n": 1}', moment, moment))
        conn.execute("VACUUM ANALYZE app_sessions")
        rows = conn.execute(
            "SELECT id FROM app_sessions WHERE deleted_at IS NULL ORDER BY id"
        ).fetchall()
    return [r[0] for r in rows]


def measure_pages(replica: Replica, ids: list[str], requests: int) -> dict[str, Any]:
    import httpx

    # Cursors from the second half: deep inside the table, none near its end.
    step = max(1, (len(ids) // 2 - 100) // requests)
    cursors = [ids[len(ids) // 2 + i * step] for i in range(requests)]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    latencies = []
    with httpx.Client(base_url=replica.url, headers=headers) as client:
        for cursor in cursors[:20]:  # warm-up
            client.get("/sessions", params={"limit": 100, "after": cursor}).raise_for_status()
        for cursor in cursors:
            start = time.perf_counter()
            response = client.get("/sessions", params={"limit": 100, "after": cursor})
            latencies.append((time.perf_counter() - start) * 1000)
            response.raise_for_status()
            page = response.json()
            assert len(page["items"]) == 100 and page["total"] == len(ids), page["total"]
    return {
        "sessions": len(ids),
        "requests": requests,
        "median_ms": median(latencies),
        "p90_ms": p90(latencies),
    }


# --- (d) round trips ---------------------------------------------------------------------


def count_round_trips(database_url: str, s3: Any, work: Path) -> dict[str, int]:
    """Round trips to PostgreSQL of one operation of each kind, on a replica's store in this
    process: libpq's protocol trace of its one pooled connection, one per ReadyForQuery."""
    from app.remote import pg
    from app.remote.objects import ObjectStore
    from app.remote.store import RemoteStore

    objects = ObjectStore(
        f"s3://{s3.bucket}/trips", s3.endpoint_url, s3.access_key_id, s3.secret_access_key
    )
    objects.open("production")
    trace = work / "libpq.trace"
    trace.touch()
    counts = {}
    with (
        pg.Holder(database_url, "production") as holder,
        RemoteStore(database_url, objects, "production", holder=holder, pool_size=1) as store,
    ):
        session_id = store.create_session("warm-up")["id"]
        with store.db._pool.connection() as conn:  # the pool's only connection
            conn.pgconn.trace(os.open(trace, os.O_WRONLY | os.O_APPEND))
        operations = {
            "create_session": lambda: store.create_session("trips"),
            "put_file": lambda: store.put_file(session_id, "a.txt", b"bytes"),
            "delete_file": lambda: store.delete_file(session_id, "a.txt"),
            "get_session": lambda: store.get_session(session_id),
        }
        for name, operation in operations.items():
            before = trace.stat().st_size
            operation()
            with trace.open("rb") as lines:
                lines.seek(before)
                counts[name] = sum(b"\tB\t" in line and b"ReadyForQuery" in line for line in lines)
    return counts


# --- the run -----------------------------------------------------------------------------


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from engines import start_postgres, start_s3

    engine = start_postgres()
    s3 = None
    replicas: list[Replica] = []
    try:
        durable(engine)
        s3 = start_s3(work / "seaweedfs")
        database = engine.create_database("bench")
        with engine.connect() as conn:
            conn.execute('CREATE DATABASE "pgbench"')
        subprocess.run(
            [pgbench_binary(engine), "-h", "127.0.0.1", "-p", str(engine.port),
             "-U", engine.user, "-i", "-q", "pgbench"],
            capture_output=True, check=True,
        )  # fmt: skip
        settings = work / "settings"
        settings.mkdir()
        database_url = engine.url(database)
        size = args.size_mib * MIB
        (settings / "settings.toml").write_text(
            SETTINGS.format(
                work=work, database_url=database_url, bucket=s3.bucket,
                endpoint=s3.endpoint_url, max_upload=size + MIB,
            )
        )  # fmt: skip
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("APP_", "PYTEST_", "DYNACONF_")) and k != "ENV_FOR_DYNACONF"
        }
        env.update(
            ENV_FOR_DYNACONF="production",
            APP_SETTINGS_DIR=str(settings),
            APP_API_TOKEN=TOKEN,
            APP_S3_ACCESS_KEY_ID=s3.access_key_id,
            APP_S3_SECRET_ACCESS_KEY=s3.secret_access_key,
        )
        replicas.append(Replica(env, database_url, work / "replica-1.log"))
        result: dict[str, Any] = {}
        if args.only in (None, "upload"):
            result["upload"] = measure_upload(replicas[0], s3, args.runs, size)
        if args.only in (None, "create"):
            result["create_one_replica"] = measure_create(
                engine, work, replicas, args.runs, args.creates, args.concurrency
            )
            replicas.append(Replica(env, database_url, work / "replica-2.log"))
            result["create_two_replicas"] = measure_create(
                engine, work, replicas, args.runs, args.creates, args.concurrency
            )
        if args.only in (None, "trips"):
            result["round_trips"] = count_round_trips(database_url, s3, work)
        if args.only in (None, "pages"):
            ids = fill(database_url, args.sessions)
            result["pages"] = measure_pages(replicas[0], ids, args.page_requests)
    finally:
        for replica in replicas:
            replica.stop()
        if s3 is not None:
            s3.stop()
        engine.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5, help="upload runs and create rounds")
    parser.add_argument("--creates", type=int, default=2000, help="per kind and round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--page-requests", type=int, default=300)
    parser.add_argument("--work-dir", help="where the S3 data goes (default: the system temp)")
    parser.add_argument(
        "--only", choices=["upload", "create", "trips", "pages"], help="measure this part alone"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    os.chdir(PROJECT)
    with tempfile.TemporaryDirectory(prefix="bench-remote-", dir=args.work_dir) as work:
        result = run(args, Path(work))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    if "upload" in result:
        up = result["upload"]
        print(f"\nupload of {up['size_mib']} MiB, median of {up['runs']} runs (MiB/s):")
        print(f"  boto3 put_object            {up['median_mib_s']['boto3']:7.1f}")
        print(f"  app PUT .../files/{{name}}    {up['median_mib_s']['app']:7.1f}   "
              f"ratio {up['ratio']:.2f}")  # fmt: skip
    if "create_one_replica" in result:
        one, two = result["create_one_replica"], result["create_two_replicas"]
        print(f"durable creates, {one['concurrency']} clients, median of {args.runs} rounds (/s):")
        for row in (one, two):
            m = row["median_per_s"]
            print(f"  {row['replicas']} replica(s): app {m['app']:7.0f}, "
                  f"pgbench {m['pgbench']:7.0f}   ratio {row['ratio']:.2f}")  # fmt: skip
    if "round_trips" in result:
        print("round trips to PostgreSQL: " + ", ".join(
            f"{name} {count}" for name, count in result["round_trips"].items()))  # fmt: skip
    if "pages" in result:
        pages = result["pages"]
        print(f"GET /sessions?limit=100 deep in {pages['sessions']} sessions, "
              f"{pages['requests']} requests: median {pages['median_ms']:.1f} ms, "
              f"p90 {pages['p90_ms']:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
