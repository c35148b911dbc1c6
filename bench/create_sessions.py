"""Create-session throughput (durable: fsync) against ``GET /health`` on the same server.

One ``app serve`` on 127.0.0.1. The client is a small keep-alive HTTP/1.1 client over raw
sockets in ``--concurrency`` threads (cheaper per request than httpx, so that the client is
not what is measured). Rounds alternate: ``GET /health`` for ``--requests`` requests, then
``POST /sessions`` for as many; each round is also bounded by ``--max-seconds``. Reported:
the median requests per second of each, and their ratio; and the server's CPU time per
request of each kind (all its threads, user and system, from ``/proc/<pid>/stat``), which
other work on the cores moves far less than the rates; of it, the event loop's thread's
(its main thread) and the system time; and the context switches per request (voluntary: a
thread blocked, on the interpreter lock or the disk; involuntary: its core was taken).

``--bursts N``: then N times, 50 creates sent at once, as ``bench/load.py`` starts (every
client's first call is a create): from 50 connections opened beforehand, and from 50 clients
that each connect first, in turn. Reported: when the 37th answer came (the p99 of
``load.py``'s creates counting the start is about its 13th slowest of 1,300, so 37 of its
fifty first creates must be answered within the target) and the last, medians over the bursts.

Run: ``.venv/bin/python bench/create_sessions.py [--requests 3000] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Connection,
    app_server,
    median,
    request_bytes,
    run_workers,
    thread_counters,
)

BURST = 50  # bench/load.py's clients
COUNTERS = ("user", "system", "loop_user", "loop_system", "voluntary", "involuntary")


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

    elapsed = run_workers(worker, [(i,) for i in range(concurrency)])
    for connection in connections:
        connection.close()
    if failures:
        raise RuntimeError(f"requests failed: {failures[:5]}")
    return sum(done) / elapsed, sum(done)


async def _burst_client(
    port: int, raw: bytes, go: asyncio.Event, preconnect: bool, latencies: list[float]
) -> None:
    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer

    if preconnect:
        reader, writer = await connect()
        await go.wait()
    else:
        await go.wait()
        reader, writer = await connect()
    start = time.perf_counter()  # as bench/load.py times a call: once connected
    writer.write(raw)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    latencies.append((time.perf_counter() - start) * 1000)
    if not head.startswith(b"HTTP/1.1 201"):
        raise RuntimeError(f"a create in the burst failed: {head[:40]!r}")
    writer.close()


async def burst(port: int, raw: bytes, preconnect: bool) -> list[float]:
    """BURST creates at once; their latencies in ms, sorted."""
    latencies: list[float] = []
    go = asyncio.Event()
    clients = [
        asyncio.ensure_future(_burst_client(port, raw, go, preconnect, latencies))
        for _ in range(BURST)
    ]
    await asyncio.sleep(0.5)  # the connections made (or not), the server idle again
    go.set()
    await asyncio.gather(*clients)
    return sorted(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="per kind and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=20.0, help="per kind and round")
    parser.add_argument("--work-dir", help="where the data root goes (default: the system temp)")
    parser.add_argument("--bursts", type=int, default=0, help="bursts of 50 creates, each way")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    health_raw = request_bytes("GET", "/health")
    create_raw = request_bytes("POST", "/sessions", b'{"title": "bench", "metadata": {"n": 1}}')
    rates: dict[str, list[float]] = {"health": [], "create": []}
    per_request: dict[str, dict[str, list[float]]] = {
        kind: {name: [] for name in COUNTERS} for kind in ("health", "create")
    }
    bursts: dict[str, dict[str, list[float]]] = {
        way: {"37th_ms": [], "last_ms": []} for way in ("connected", "connecting")
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench-create-", dir=args.work_dir) as work,
        app_server(Path(work) / "data", Path(work) / "app.log") as app,
    ):
        load(app.port, health_raw, 200, args.concurrency, 5)  # warm-up
        for round_ in range(args.rounds):
            for kind, raw in (("health", health_raw), ("create", create_raw)):
                before = thread_counters(app.pid)
                rate, count = load(app.port, raw, args.requests, args.concurrency, args.max_seconds)
                after = thread_counters(app.pid)
                for name in COUNTERS:
                    scale = 1 if name in ("voluntary", "involuntary") else 1e6  # us
                    per_request[kind][name].append((after[name] - before[name]) * scale / count)
                rates[kind].append(rate)
                got = {name: values[-1] for name, values in per_request[kind].items()}
                print(
                    f"round {round_ + 1}: {kind:<6} {rate:8.0f} req/s, server CPU "
                    f"{got['user'] + got['system']:6.0f} us/request ({got['system']:.0f} system; "
                    f"event loop {got['loop_user'] + got['loop_system']:.0f}), context switches "
                    f"{got['voluntary']:.1f} + {got['involuntary']:.1f} involuntary",
                    flush=True,
                )
        for number in range(args.bursts):
            for way in ("connected", "connecting"):
                latencies = asyncio.run(burst(app.port, create_raw, way == "connected"))
                bursts[way]["37th_ms"].append(latencies[36])
                bursts[way]["last_ms"].append(latencies[-1])
                print(
                    f"burst {number + 1}, {way:<10}: 37th answer {latencies[36]:6.1f} ms, "
                    f"last {latencies[-1]:6.1f} ms",
                    flush=True,
                )
        created = sum(1 for _ in (Path(work) / "data" / "sessions").iterdir())
    medians = {kind: median(values) for kind, values in rates.items()}
    ratio = medians["create"] / medians["health"]
    counters = {
        kind: {name: median(values) for name, values in named.items()}
        for kind, named in per_request.items()
    }
    result: dict[str, object] = {
        "concurrency": args.concurrency,
        "median_req_s": medians,
        "ratio": ratio,
        "server_cpu_us_per_request": {
            kind: c["user"] + c["system"] for kind, c in counters.items()
        },
        "per_request": counters,
        "sessions_created": created,
        "load_average": os.getloadavg(),
    }
    if args.bursts:
        result["bursts"] = {
            way: {name: median(values) for name, values in got.items()}
            for way, got in bursts.items()
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
    for kind, got in counters.items():
        print(
            f"  {kind}: event loop {got['loop_user'] + got['loop_system']:.0f} us, system "
            f"{got['system']:.0f} us, context switches {got['voluntary']:.1f} voluntary + "
            f"{got['involuntary']:.1f} involuntary per request"
        )
    print(f"  sessions created and listed on disk: {created}")
    for way, got in result.get("bursts", {}).items():  # type: ignore[union-attr]
        print(
            f"  {BURST} creates at once, {way}: 37th answer {got['37th_ms']:.1f} ms, "
            f"last {got['last_ms']:.1f} ms (medians of {args.bursts})"
        )


if __name__ == "__main__":
    main()
