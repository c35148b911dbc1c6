"""Create-session throughput (durable: fsync) against ``GET /health`` on the same server.

One ``app serve`` on 127.0.0.1. The client is a small keep-alive HTTP/1.1 client over raw
sockets in ``--concurrency`` threads (cheaper per request than httpx, so that the client is
not what is measured). Rounds alternate: ``GET /health`` for ``--requests`` requests, then
``POST /sessions`` for as many; each round is also bounded by ``--max-seconds``. Reported:
the median requests per second of each, and their ratio; and the server's CPU time per
request of each kind (all its threads, user and system, from ``/proc/<pid>/stat``), which
other work on the cores moves far less than the rates.

Run: ``.venv/bin/python bench/create_sessions.py [--requests 3000] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Connection, app_server, cpu_seconds, median, request_bytes


def load(
    port: int, raw: bytes, total: int, concurrency: int, max_seconds: float
) -> tuple[float, int]:
    """Send ``total`` requests over ``concurrency`` connections; the rate and the count."""
    connections = [Connection(port) for _ in range(concurrency)]
    done = [0] * concurrency
    failures: list[str] = []
    deadline = time.perf_counter() + max_seconds

    def worker(index: int) -> None:
        connection = connections[index]
        share = total // concurrency
        for _ in range(share):
            status, _ = connection.send(raw)
            if status not in (200, 201):
                failures.append(str(status))
                return
            done[index] += 1
            if time.perf_counter() > deadline:
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    for connection in connections:
        connection.close()
    if failures:
        raise RuntimeError(f"requests failed: {failures[:5]}")
    return sum(done) / elapsed, sum(done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="per kind and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=20.0, help="per kind and round")
    parser.add_argument("--work-dir", help="where the data root goes (default: the system temp)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    health_raw = request_bytes("GET", "/health")
    create_raw = request_bytes("POST", "/sessions", b'{"title": "bench", "metadata": {"n": 1}}')
    rates: dict[str, list[float]] = {"health": [], "create": []}
    cpu_us: dict[str, list[float]] = {"health": [], "create": []}
    with (
        tempfile.TemporaryDirectory(prefix="bench-create-", dir=args.work_dir) as work,
        app_server(Path(work) / "data", Path(work) / "app.log") as app,
    ):
        load(app.port, health_raw, 200, args.concurrency, 5)  # warm-up
        for round_ in range(args.rounds):
            for kind, raw in (("health", health_raw), ("create", create_raw)):
                before = cpu_seconds(app.pid)
                rate, count = load(app.port, raw, args.requests, args.concurrency, args.max_seconds)
                cpu_us[kind].append((cpu_seconds(app.pid) - before) * 1e6 / count)
                rates[kind].append(rate)
                print(
                    f"round {round_ + 1}: {kind:<6} {rate:8.0f} req/s, "
                    f"server CPU {cpu_us[kind][-1]:6.0f} us/request",
                    flush=True,
                )
        created = sum(1 for _ in (Path(work) / "data" / "sessions").iterdir())
    medians = {kind: median(values) for kind, values in rates.items()}
    ratio = medians["create"] / medians["health"]
    result: dict[str, object] = {
        "concurrency": args.concurrency,
        "median_req_s": medians,
        "ratio": ratio,
        "server_cpu_us_per_request": {kind: median(values) for kind, values in cpu_us.items()},
        "sessions_created": created,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    m = result["median_req_s"]
    assert isinstance(m, dict)
    print(f"\nmedian of {args.rounds} rounds, {args.concurrency} keep-alive connections:")
    print(f"  GET /health      {m['health']:8.0f} req/s")
    print(f"  POST /sessions   {m['create']:8.0f} req/s (fsync)   ratio {ratio:.2f}")
    c = result["server_cpu_us_per_request"]
    assert isinstance(c, dict)
    print(f"  server CPU per request: health {c['health']:.0f} us, create {c['create']:.0f} us")
    print(f"  sessions created and listed on disk: {created}")


if __name__ == "__main__":
    main()
