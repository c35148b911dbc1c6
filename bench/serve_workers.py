"""What ``app serve --workers N`` costs to start and stop, against another tree of the app.

Starts the suite's throwaway PostgreSQL cluster and ``weed mini`` (tests/engines.py), then,
in turns (``--rounds``, the order alternated), one ``python -m app serve --workers N`` of
this tree and one of ``--baseline`` (a directory holding another tree of the app, e.g. ``git
archive main`` unpacked), each on a database and prefix of its own: it waits for the N
workers' holder rows, then sends SIGTERM and waits for the exit. Reported per tree: the
medians over the rounds of the CPU time of the whole command (``serve``, its workers, and
whatever else it started: this process is made the subreaper of what outlives ``serve``,
so that every descendant is waited for and counted in ``RUSAGE_CHILDREN``) and of the wall
time from the start to the last worker's row.

Run: ``.venv/bin/python bench/serve_workers.py --baseline /tmp/main-tree [--workers 2]
[--rounds 5]``
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PROJECT = BENCH.parent
_PR_SET_CHILD_SUBREAPER = 36

SETTINGS = """\
[production]
database_url = "{database_url}"
blob_url = "{blob_url}"
s3_endpoint_url = "{endpoint}"

[default]
host = "127.0.0.1"
"""


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _one(database_url: str, workers: int) -> None:
    """In a process of its own (``--one``), made the subreaper of what outlives ``serve``:
    one ``serve --workers``, started, waited for, stopped; every descendant waited for,
    then the CPU they used and the seconds to the last worker's row printed."""
    import psycopg

    from app.remote import pg

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit("could not become a subreaper")
    start = time.perf_counter()
    serve = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", "0", "--workers", str(workers)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            if serve.poll() is not None:
                assert serve.stderr is not None
                raise SystemExit(f"serve exited {serve.returncode}: {serve.stderr.read()!r}")
            try:
                if len([row for row in pg.live_holders(conn) if row["url"]]) == workers:
                    break
            except psycopg.Error:
                pass  # the first worker is still creating the tables
            time.sleep(0.02)
    ready = time.perf_counter() - start
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(timeout=60) == 0
    while True:  # the forkserver, the resource tracker: reparented here
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    print(f"{_children_cpu():.3f} {ready:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", required=True, type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        _one(args.one, args.workers)
        return
    sys.path.insert(0, str(PROJECT / "tests"))
    from engines import start_postgres, start_s3

    base = Path(tempfile.mkdtemp(prefix="bench-serve-workers-"))
    postgres = start_postgres()
    s3 = start_s3(base / "s3")
    trees = {"baseline": args.baseline.resolve(), "this tree": PROJECT}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    try:
        for round_ in range(args.rounds):
            order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
            for name in order:
                database = postgres.create_database("bench")
                settings = base / f"settings-{database}"
                settings.mkdir()
                (settings / "settings.toml").write_text(
                    SETTINGS.format(
                        database_url=postgres.url(database),
                        blob_url=f"s3://{s3.bucket}/{database}",
                        endpoint=s3.endpoint_url,
                    )
                )
                env = {
                    **os.environ,
                    "PYTHONPATH": str(trees[name]),
                    "ENV_FOR_DYNACONF": "production",
                    "APP_SETTINGS_DIR": str(settings),
                    "APP_API_TOKEN": secrets.token_urlsafe(32),
                    "APP_S3_ACCESS_KEY_ID": s3.access_key_id,
                    "APP_S3_SECRET_ACCESS_KEY": s3.secret_access_key,
                }
                one = [sys.executable, str(Path(__file__).resolve()), "--baseline",
                       str(args.baseline), "--workers", str(args.workers), "--one",
                       postgres.url(database)]  # fmt: skip
                done = subprocess.run(one, env=env, cwd=trees[name], check=True,
                                      capture_output=True, text=True)  # fmt: skip
                cpu, ready = done.stdout.split()[-2:]
                results[name].append((float(cpu), float(ready)))
                postgres.drop_database(database)
    finally:
        s3.stop()
        postgres.stop()
        shutil.rmtree(base, ignore_errors=True)
    load = os.getloadavg()[0]
    print(f"serve --workers {args.workers}, {args.rounds} rounds, load {load:.1f}")
    for name, rounds in results.items():
        cpu = statistics.median(r[0] for r in rounds)
        ready = statistics.median(r[1] for r in rounds)
        print(f"{name}: CPU {cpu:.2f} s (each: {', '.join(f'{r[0]:.2f}' for r in rounds)}), "
              f"start to every worker's row {ready:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
