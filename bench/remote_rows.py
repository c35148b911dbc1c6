"""What a session's ``content_sha256`` costs on PostgreSQL, against another tree of the app.

Starts the suite's throwaway PostgreSQL cluster and ``weed mini`` (tests/engines.py), then
runs, in turns (``--rounds``, the order alternated), one process of this tree and one of
``--baseline`` (a directory holding another tree of the app, e.g. ``git archive main``
unpacked), each on a database of its own: ``--count`` creates of a session (``POST
/sessions``'s store call, ``RemoteStore.create_session``) and as many reads of one
(``get_session``), with metadata of ``--metadata-bytes``. Reported per tree: the medians
over the rounds of each process's median CPU time (``time.process_time``, the client's:
the hash is computed there) and wall time per call, in microseconds.

Run: ``.venv/bin/python bench/remote_rows.py --baseline /tmp/main-tree [--rounds 5]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PROJECT = BENCH.parent


def _worker(database_url: str, blob_url: str, endpoint: str, keys: list[str], count: int,
            size: int) -> dict[str, float]:  # fmt: skip
    from app.remote import pg
    from app.remote.objects import ObjectStore
    from app.remote.store import RemoteStore

    pg.open_database(database_url, "production")
    objects = ObjectStore(blob_url, endpoint, keys[0], keys[1])
    objects.open("production")
    metadata = {"note": "x" * max(0, size - 12)} if size else {"run": 1, "who": "bench"}
    out: dict[str, list[float]] = {"create_cpu": [], "create_wall": [], "get_cpu": [],
                                   "get_wall": []}  # fmt: skip
    with RemoteStore(database_url, objects, "production") as store:
        ids = []
        for _ in range(count):
            cpu, wall = time.process_time(), time.perf_counter()
            ids.append(store.create_session("a session's title", metadata)["id"])
            out["create_cpu"].append(time.process_time() - cpu)
            out["create_wall"].append(time.perf_counter() - wall)
        for session_id in ids:
            cpu, wall = time.process_time(), time.perf_counter()
            store.get_session(session_id)
            out["get_cpu"].append(time.process_time() - cpu)
            out["get_wall"].append(time.perf_counter() - wall)
        # The hash alone, in this process, where the tree has it: what each create adds to
        # the client's work, and each read (`content_fault`) as much.
        try:
            from app.remote.rows import content_sha256
        except ImportError:
            content_sha256 = None
        if content_sha256 is not None:
            session = store.get_session(ids[0])
            runs = 200
            start = time.process_time()
            for _ in range(runs):
                content_sha256(session)
            out["hash_cpu"] = [(time.process_time() - start) / runs]
    return {key: statistics.median(values) * 1e6 for key, values in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", required=True, type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--metadata-bytes", type=int, default=0)
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        url, blob, endpoint, key, secret = args.worker
        result = _worker(url, blob, endpoint, [key, secret], args.count, args.metadata_bytes)
        print(json.dumps(result))
        return
    sys.path.insert(0, str(PROJECT / "tests"))
    from engines import start_postgres, start_s3

    postgres = start_postgres()
    s3 = start_s3(Path(tempfile.mkdtemp(prefix="bench-remote-rows-")))
    trees = {"baseline": args.baseline.resolve(), "this tree": PROJECT}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    try:
        for round_ in range(args.rounds):
            order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
            for name in order:
                database = postgres.create_database("bench")
                env = {**os.environ, "PYTHONPATH": str(trees[name])}
                worker = [sys.executable, str(Path(__file__).resolve()),
                          "--baseline", str(args.baseline), "--count", str(args.count),
                          "--metadata-bytes", str(args.metadata_bytes), "--worker",
                          postgres.url(database), f"s3://{s3.bucket}/{database}",
                          s3.endpoint_url, s3.access_key_id, s3.secret_access_key]  # fmt: skip
                done = subprocess.run(worker, env=env, cwd=trees[name], check=True,
                                      capture_output=True, text=True)  # fmt: skip
                results[name].append(json.loads(done.stdout.splitlines()[-1]))
                postgres.drop_database(database)
    finally:
        s3.stop()
        postgres.stop()
    load = os.getloadavg()[0]
    print(f"{args.count} creates and reads a process, {args.rounds} rounds, metadata "
          f"{args.metadata_bytes or 'small'} bytes, load {load:.1f}")  # fmt: skip
    for name, rounds in results.items():
        medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        print(name, " ".join(f"{key} {value:.0f} us" for key, value in medians.items()))


if __name__ == "__main__":
    main()
