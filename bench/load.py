"""Latency under mixed load: 50 clients creating, listing, uploading, downloading, deleting.

One ``app serve`` on 127.0.0.1 (development profile, a temporary data root seeded with
``--seed`` sessions through the `Store`, as ``bench/listing.py`` does). Three phases:

1. **idle**: only the ``/health`` probe runs, for ``--idle-seconds``;
2. **mixed**: ``--clients`` keep-alive clients (asyncio, raw HTTP/1.1) each loop over a mix of
   small calls on their own sessions: create, get, list a page of 100 (after a random
   cursor), upload 4 KiB (``PUT``, and multipart ``POST`` every other time), download it,
   delete a session. The phase ends after ``--seconds`` or ``--max-requests``, whichever
   comes first. Every client's first call is a create, so all of them arrive at once: the
   first ``--warmup`` seconds are reported apart as well (``steady_calls``, and ``/health``'s
   ``warm-up`` phase), next to the figures over every call;
3. **big lists**: ``--big-list-clients`` clients send ``--big-lists`` requests in all for
   pages of 1,000 sessions;
4. **idle after**: the probe alone again, for ``--idle-seconds``. ``/health``'s idle figures
   (the ratios' denominator) pool both idle windows, about a thousand samples at the
   defaults, so that one scheduling hiccup among five hundred does not make the p99; each
   window's p99 is reported as well (``idle before``, ``idle after``), to show how far the
   denominator itself moves.

Throughout, a separate process probes ``GET /health`` every ``--probe-interval`` seconds
over its own keep-alive connection (a process of its own, so that the load generator's
event loop does not delay it). Reported per phase: throughput, the server's CPU time per call
(user + system, from ``/proc``: less at the mercy of whatever else the machine runs than the
latencies are), the share of a core the server, its event loop's thread and (in the mixed
phase) the clients used, and how long the loop's thread waited for a core, p50/p99 latency
per kind of call, and the mean over every call next to
clients / throughput (in a closed loop without pauses they are equal, Little's law: a kind of
call can be faster only if others are slower, unless throughput rises); ``/health``'s p50/p99
idle, under the mix and during the big lists, and the ratio of its p99 under load to its p99
idle. Targets
(issue 11): ``/health`` p99 under load within 3 times idle; no small call (create, get, list
of 100, delete) above 100 ms at p99.

Every request goes to 127.0.0.1, has a 30 s timeout, and the whole run is bounded in time
and count. The client shares the machine's cores with the server, as a real one would not:
compare runs on one machine, not across machines.

With ``--against DIR`` (a worktree of main: ``git worktree add --detach DIR main``; its
``.venv`` if it has one, else this interpreter importing DIR's ``app``), whole runs of this
checkout's server and DIR's alternate, ``--pairs`` of each, the order turning every pair
(ABBA...), so that both meet the same minutes of a shared machine; reported: each run's
figures, the medians of each tree and the median of the per-pair ratios (this over DIR).

Run: ``.venv/bin/python bench/load.py [--seconds 30] [--clients 50] [--json]
[--against DIR --pairs 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PROJECT, app_server, median, request_bytes
from listing import seed

#: The small calls whose p99 the targets bound (issue 11).
SMALL_CALLS = ("create", "get", "list 100", "delete")
REQUEST_TIMEOUT = 30.0
UPLOAD = bytes(range(256)) * 16  # 4 KiB
BOUNDARY = "bench-load-boundary-7d3f"


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU time of process ``pid`` so far, or of one of its threads (``/proc``)."""
    where = f"/proc/{pid}" if thread is None else f"/proc/{pid}/task/{thread}"
    fields = Path(f"{where}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def waited_for_a_core(pid: int) -> float:
    """Seconds the main thread of ``pid`` (the server's event loop) has spent runnable but
    waiting for a core (``/proc/<pid>/task/<pid>/schedstat``, second field)."""
    return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[1]) / 1e9


def loop_switches(pid: int) -> tuple[int, int]:
    """The voluntary and involuntary context switches of the main thread of ``pid`` (the
    server's event loop) so far (``/proc/<pid>/task/<pid>/status``). An involuntary one is a
    preemption: the loop taken off its core while it had work, by another process's thread
    or by one of the server's own woken up (a worker back from its fsync)."""
    status = Path(f"/proc/{pid}/task/{pid}/status").read_text().splitlines()
    count = dict(line.split(":\t") for line in status if line.endswith(tuple("0123456789")))
    return int(count["voluntary_ctxt_switches"]), int(count["nonvoluntary_ctxt_switches"])


def mark_phase(name: str, pid: int | None = None) -> None:
    """Where ``LOAD_PHASES_FILE`` names a file, append when a phase began (``time.monotonic``,
    the clock ``perf record -k CLOCK_MONOTONIC`` stamps events with): `bench/loop_waits.py`."""
    if (path := os.environ.get("LOAD_PHASES_FILE")) is not None:
        with Path(path).open("a") as out:
            who = f" {pid} {os.getpid()}" if pid is not None else ""
            out.write(f"{time.monotonic():.6f} {name.replace(' ', '_')}{who}\n")


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# --- the /health probe, in a process of its own ----------------------------------------------


def _probe(port: int, interval: float, stop: Any, marks: Any, out: Any) -> None:
    """Send GET /health every `interval` s until `stop`; tag each sample with the phase."""
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    sock = socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    samples: list[tuple[str, float]] = []
    buffer = b""
    next_at = time.perf_counter()
    while not stop.is_set() and len(samples) < 200_000:
        start = time.perf_counter()
        sock.sendall(request)
        while b"\r\n\r\n" not in buffer:
            buffer += sock.recv(65536)
        head, _, rest = buffer.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(rest) < length:
            rest += sock.recv(65536)
        buffer = rest[length:]
        samples.append((marks.value.decode(), time.perf_counter() - start))
        # A probe that fell behind skips the times it missed: catching up sent its samples
        # back to back once the server was quick again, and those counted in whichever
        # phase had begun (after a slow mix, most of the large pages' samples were such).
        next_at = max(next_at + interval, time.perf_counter())
        time.sleep(max(0.0, next_at - time.perf_counter()))
    sock.close()
    out.send(samples)


# --- the load clients (asyncio, raw HTTP/1.1 over keep-alive connections) ----------------------


class Client:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def call(
        self, method: str, path: str, body: bytes = b"", content_type: str = "application/json"
    ) -> tuple[int, bytes]:
        self.writer.write(request_bytes(method, path, body, content_type))
        await self.writer.drain()
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length) if length else b""
        return status, payload

    def close(self) -> None:
        self.writer.close()


class Recorder:
    def __init__(self) -> None:
        self.errors: dict[str, list[int]] = {}
        self.count = 0
        self.started: list[tuple[str, float, float]] = []  # kind, start, latency

    async def timed(
        self, kind: str, client: Client, method: str, path: str, body: bytes = b"", **kw: str
    ) -> tuple[int, bytes]:
        start = time.perf_counter()
        status, payload = await asyncio.wait_for(
            client.call(method, path, body, **kw), REQUEST_TIMEOUT
        )
        latency = time.perf_counter() - start
        self.started.append((kind, start, latency))
        self.count += 1
        if status >= 300:
            self.errors.setdefault(kind, []).append(status)
        return status, payload


def multipart(name: str, data: bytes) -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


async def mixed_client(
    port: int, recorder: Recorder, deadline: float, budget: list[int], ids: list[str], seed_: int
) -> None:
    rng = random.Random(seed_)
    client = Client(port)
    await client.connect()
    own: list[str] = []
    files: list[tuple[str, str]] = []
    uploads = 0
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            roll = rng.random()
            if not own or roll < 0.20:
                status, body = await recorder.timed(
                    "create", client, "POST", "/sessions", b'{"title": "load", "metadata": {}}'
                )
                if status == 201:
                    own.append(json.loads(body)["id"])
            elif roll < 0.40:
                await recorder.timed("get", client, "GET", f"/sessions/{rng.choice(own)}")
            elif roll < 0.60:
                await recorder.timed(
                    "list 100", client, "GET", f"/sessions?limit=100&after={rng.choice(ids)}"
                )
            elif roll < 0.75:
                session, uploads = rng.choice(own), uploads + 1
                name = f"f{uploads}.bin"
                if uploads % 2:
                    status, _ = await recorder.timed(
                        "upload 4 KiB", client, "PUT", f"/sessions/{session}/files/{name}", UPLOAD
                    )
                else:
                    status, _ = await recorder.timed(
                        "upload 4 KiB",
                        client,
                        "POST",
                        f"/sessions/{session}/files",
                        multipart(name, UPLOAD),
                        content_type=f"multipart/form-data; boundary={BOUNDARY}",
                    )
                if status in (200, 201):
                    files.append((session, name))
            elif roll < 0.90:
                if files:
                    session, name = rng.choice(files)
                    await recorder.timed(
                        "download", client, "GET", f"/sessions/{session}/files/{name}"
                    )
            elif len(own) > 1:
                session = own.pop(rng.randrange(len(own)))
                files = [f for f in files if f[0] != session]
                await recorder.timed("delete", client, "DELETE", f"/sessions/{session}")
    finally:
        client.close()


async def big_list_client(
    port: int, recorder: Recorder, budget: list[int], deadline: float
) -> None:
    client = Client(port)
    await client.connect()
    try:
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            await recorder.timed("list 1000", client, "GET", "/sessions?limit=1000")
    finally:
        client.close()


async def run_mixed(
    port: int, args: argparse.Namespace, ids: list[str], marks: Any
) -> tuple[Recorder, float, float]:
    recorder = Recorder()
    budget = [args.max_requests]
    start = time.perf_counter()
    deadline = start + args.seconds

    async def warmed_up() -> None:
        await asyncio.sleep(args.warmup)
        marks.value = b"mixed"
        mark_phase("mixed")

    marks.value = b"warm-up" if args.warmup else b"mixed"
    mark_phase(marks.value.decode())
    waiting = asyncio.ensure_future(warmed_up()) if args.warmup else None
    await asyncio.gather(
        *(mixed_client(port, recorder, deadline, budget, ids, n) for n in range(args.clients))
    )
    if waiting is not None:
        waiting.cancel()
    return recorder, time.perf_counter() - start, start + args.warmup


async def run_big_lists(port: int, args: argparse.Namespace) -> tuple[Recorder, float]:
    recorder = Recorder()
    budget = [args.big_lists]
    start = time.perf_counter()
    deadline = start + args.seconds
    await asyncio.gather(
        *(big_list_client(port, recorder, budget, deadline) for _ in range(args.big_list_clients))
    )
    return recorder, time.perf_counter() - start


def per_kind(recorder: Recorder, since: float) -> dict[str, dict[str, Any]]:
    """p50/p99 per kind over the calls that started at ``since`` or later."""
    latencies: dict[str, list[float]] = {}
    for kind, start, latency in recorder.started:
        if start >= since:
            latencies.setdefault(kind, []).append(latency)
    return {
        kind: {
            "count": len(values),
            "p50_ms": round(quantile(values, 0.50) * 1000, 1),
            "p99_ms": round(quantile(values, 0.99) * 1000, 1),
        }
        for kind, values in sorted(latencies.items())
    }


def summary(
    recorder: Recorder,
    elapsed: float,
    server_cpu: float,
    clients: int,
    since: float | None = None,
    client_cpu: float | None = None,
    loop_cpu: float | None = None,
    loop_waited: float | None = None,
    loop_preempted: int | None = None,
) -> dict[str, Any]:
    kinds = {
        kind: {
            **row,
            "per_s": round(row["count"] / elapsed, 1),
            "errors": recorder.errors.get(kind, []),
        }
        for kind, row in per_kind(recorder, float("-inf")).items()
    }
    every = [latency for _, _, latency in recorder.started]
    per_s = recorder.count / elapsed
    return {
        "seconds": round(elapsed, 1),
        "per_s": round(per_s, 1),
        # Little's law: in a closed loop without pauses the mean time of a call over all kinds
        # is clients / throughput, whatever the server does with it; the kinds only share it.
        "mean_ms": round(sum(every) / max(len(every), 1) * 1000, 1),
        "clients_over_rate_ms": round(clients / per_s * 1000, 1) if per_s else None,
        # The server's CPU per call: what the code costs, whatever else the machine runs.
        "server_cpu_ms_per_call": round(server_cpu / max(recorder.count, 1) * 1000, 2),
        "server_cpu_share": round(server_cpu / elapsed, 2),
        # The clients' own CPU (this process; the /health probe apart): on two cores, what the
        # load generator takes is not the server's.
        "client_cpu_share": None if client_cpu is None else round(client_cpu / elapsed, 2),
        # The server's main thread, which runs its event loop: near 1, every call queues for it.
        "loop_cpu_share": None if loop_cpu is None else round(loop_cpu / elapsed, 2),
        # ... and the share of the time it was ready to run but waited for a core.
        "loop_waiting_share": None if loop_waited is None else round(loop_waited / elapsed, 2),
        # ... and how often it was taken off its core while it had work, per call.
        "loop_preempted_per_call": None
        if loop_preempted is None
        else round(loop_preempted / max(recorder.count, 1), 3),
        "calls": kinds,
        # The same without the first --warmup seconds, when every client's first call is a
        # create and all fifty arrive at once.
        "steady_calls": per_kind(recorder, since) if since is not None else kinds,
    }


def measure(args: argparse.Namespace, checkout: Path | None = None) -> dict[str, Any]:
    """One whole run (a fresh root, a server of its own, every phase); with ``checkout``,
    that checkout's server (`app_server`)."""
    with tempfile.TemporaryDirectory(prefix="bench-load-", dir=args.work_dir) as work:
        root = Path(work) / "data"
        seed(root, args.seed)
        ids = sorted(p.name for p in (root / "sessions").iterdir() if len(p.name) == 32)
        settings = dict(setting.split("=", 1) for setting in args.setting)
        with app_server(root, Path(work) / "app.log", checkout, **settings) as app:
            context = multiprocessing.get_context("spawn")
            stop = context.Event()
            marks = context.Array("c", 16)
            marks.value = b"idle"
            mark_phase("idle", app.process.pid)
            receive, send = context.Pipe(duplex=False)
            prober = context.Process(
                target=_probe, args=(app.port, args.probe_interval, stop, marks, send)
            )
            prober.start()
            try:
                time.sleep(args.idle_seconds)
                pid = app.process.pid
                cpu, loop, own = cpu_seconds(pid), cpu_seconds(pid, pid), time.process_time()
                waited = waited_for_a_core(pid)
                switches = loop_switches(pid)
                mixed, mixed_s, steady = asyncio.run(run_mixed(app.port, args, ids, marks))
                mixed_cpu = cpu_seconds(pid) - cpu
                mixed_loop_cpu = cpu_seconds(pid, pid) - loop
                mixed_client_cpu = time.process_time() - own
                mixed_loop_waited = waited_for_a_core(pid) - waited
                mixed_loop_preempted = loop_switches(pid)[1] - switches[1]
                marks.value = b"big lists"
                mark_phase("big lists")
                cpu = cpu_seconds(app.process.pid)
                big, big_s = asyncio.run(run_big_lists(app.port, args))
                big_cpu = cpu_seconds(app.process.pid) - cpu
                marks.value = b"idle after"
                mark_phase("idle after")
                time.sleep(args.idle_seconds)
                marks.value = b"after"
                mark_phase("after")
                time.sleep(0.2)
            finally:
                stop.set()
                samples = receive.recv() if receive.poll(60) else []
                prober.join(10)
                if prober.is_alive():
                    prober.terminate()
    health: dict[str, dict[str, float]] = {}
    pooled = {"idle": ("idle before", "idle after")}
    samples = [("idle before" if p == "idle" else p, v) for p, v in samples]
    for phase in ("idle", "warm-up", "mixed", "big lists", "idle before", "idle after"):
        values = [v for p, v in samples if p in pooled.get(phase, (phase,))]
        health[phase] = {
            "count": len(values),
            "p50_ms": round(quantile(values, 0.50) * 1000, 1),
            "p99_ms": round(quantile(values, 0.99) * 1000, 1),
        }
    result = {
        "clients": args.clients,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "warmup_seconds": args.warmup,
        "mixed": summary(
            mixed,
            mixed_s,
            mixed_cpu,
            args.clients,
            steady,
            mixed_client_cpu,
            mixed_loop_cpu,
            mixed_loop_waited,
            mixed_loop_preempted,
        ),
        "big_lists": summary(big, big_s, big_cpu, args.big_list_clients),
        "health": health,
        "health_p99_ratio_mixed": round(health["mixed"]["p99_ms"] / health["idle"]["p99_ms"], 1),
        "health_p99_ratio_mixed_with_warmup": round(
            quantile([v for p, v in samples if p in ("warm-up", "mixed")], 0.99)
            * 1000
            / health["idle"]["p99_ms"],
            1,
        ),
        "health_p99_ratio_big_lists": round(
            health["big lists"]["p99_ms"] / health["idle"]["p99_ms"], 1
        ),
    }
    return result


def figures(result: dict[str, Any]) -> dict[str, float]:
    """What `compare` reports of one run."""
    health, mixed = result["health"], result["mixed"]
    row = {
        "health_idle_p99_ms": health["idle"]["p99_ms"],
        "health_mixed_p99_ms": health["mixed"]["p99_ms"],
        "health_p99_ratio_mixed": result["health_p99_ratio_mixed"],
        "health_p99_ratio_big_lists": result["health_p99_ratio_big_lists"],
        "calls_per_s": mixed["per_s"],
        "server_cpu_ms_per_call": mixed["server_cpu_ms_per_call"],
        "loop_waiting_share": mixed["loop_waiting_share"],
        "loop_preempted_per_call": mixed["loop_preempted_per_call"],
    }
    for kind in SMALL_CALLS:
        row[f"{kind} p99_ms"] = mixed["steady_calls"].get(kind, {}).get("p99_ms", float("nan"))
    return row


def compare(args: argparse.Namespace) -> None:
    """This checkout and ``--against`` in turn, ``--pairs`` times, the order alternating
    (ABBA...): each run a whole `measure` with a server of its tree's code; the medians of
    each tree, and of the per-pair ratios (this checkout's figure over the other's)."""
    trees = {"this": PROJECT, "against": args.against.resolve()}
    runs: dict[str, list[dict[str, float]]] = {"this": [], "against": []}
    for pair in range(args.pairs):
        order = ("this", "against") if pair % 2 == 0 else ("against", "this")
        for name in order:
            started = time.strftime("%H:%M:%S", time.gmtime())
            row = figures(measure(args, trees[name]))
            runs[name].append(row)
            print(
                f"pair {pair + 1} {name:<8} {started} UTC, load average "
                f"{os.getloadavg()[0]:.1f}: "
                + ", ".join(f"{key} {value:g}" for key, value in row.items()),
                flush=True,
            )
    keys = list(runs["this"][0])
    result = {
        "against": str(trees["against"]),
        "pairs": args.pairs,
        "runs": runs,
        "medians": {
            name: {k: round(median([r[k] for r in rows]), 2) for k in keys}
            for name, rows in runs.items()
        },
        "pair_ratios": {
            k: round(
                median(
                    [
                        t[k] / a[k] if a[k] else float("nan")
                        for t, a in zip(runs["this"], runs["against"], strict=True)
                    ]
                ),
                2,
            )
            for k in keys
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"medians of {args.pairs} runs each; this checkout over {trees['against']}, per pair:")
    print(f"  {'figure':<28} {'this':>10} {'against':>10} {'ratio':>8}")
    for key in keys:
        print(
            f"  {key:<28} {result['medians']['this'][key]:>10g} "
            f"{result['medians']['against'][key]:>10g} {result['pair_ratios'][key]:>8.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="mixed phase, at most")
    parser.add_argument("--max-requests", type=int, default=200_000, help="mixed phase, at most")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1200, help="sessions before the run")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="first seconds of the mixed phase reported apart (steady_calls, /health's mixed)",
    )
    parser.add_argument("--probe-interval", type=float, default=0.01)
    parser.add_argument("--big-lists", type=int, default=100)
    parser.add_argument("--big-list-clients", type=int, default=10)
    parser.add_argument("--work-dir", help="where the data root goes (default: the system temp)")
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="APP_KEY=VALUE",
        help="a setting for the server, e.g. APP_MAX_TRANSFERS_AT_ONCE=8 (repeatable)",
    )
    parser.add_argument(
        "--against",
        type=Path,
        help="another checkout (a worktree of main): its server and this one's in turn, "
        "--pairs times, the order alternating; medians and per-pair ratios",
    )
    parser.add_argument("--pairs", type=int, default=3, help="with --against: runs of each")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not 0 < args.seconds <= 600 or args.clients > 200:
        parser.error("keep the run bounded: --seconds in (0, 600], --clients at most 200")
    if any(not setting.startswith("APP_") or "=" not in setting for setting in args.setting):
        parser.error("--setting takes APP_KEY=VALUE")
    if not 0 <= args.warmup < args.seconds:
        parser.error("--warmup must be shorter than --seconds")

    if args.against is not None:
        compare(args)
        return
    result = measure(args)
    health = result["health"]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"mixed phase: {args.clients} clients, {result['mixed']['seconds']} s, "
        f"{result['mixed']['per_s']} calls/s in all; server CPU "
        f"{result['mixed']['server_cpu_ms_per_call']} ms per call "
        f"({result['mixed']['server_cpu_share']} of a core, its event loop's thread "
        f"{result['mixed']['loop_cpu_share']}, waiting for a core "
        f"{result['mixed']['loop_waiting_share']}, taken off it "
        f"{result['mixed']['loop_preempted_per_call']} times per call; the clients "
        f"{result['mixed']['client_cpu_share']}); load average "
        f"{', '.join(map(str, result['load_average']))}"
    )
    print(
        f"  mean over every call {result['mixed']['mean_ms']} ms; clients / calls per s "
        f"{result['mixed']['clients_over_rate_ms']} ms (Little's law: the kinds share this mean)"
    )
    print(
        f"  {'call':<14} {'count':>7} {'per s':>7} {'p50 ms':>8} {'p99 ms':>8}  "
        f"{f'after the first {args.warmup:g} s: p50 / p99 ms':<36} errors"
    )
    for phase in ("mixed", "big_lists"):
        steady_rows = result[phase]["steady_calls"]  # type: ignore[index]
        for kind, row in result[phase]["calls"].items():  # type: ignore[index]
            errors = ",".join(str(e) for e in sorted(set(row["errors"]))) or "-"
            steady_row = steady_rows.get(kind, {})
            after = f"{steady_row.get('p50_ms', '-')} / {steady_row.get('p99_ms', '-')}"
            print(
                f"  {kind:<14} {row['count']:>7} {row['per_s']:>7} {row['p50_ms']:>8} "
                f"{row['p99_ms']:>8}  {after:<36} {errors}"
            )
    print("GET /health (probe every %.0f ms):" % (args.probe_interval * 1000))
    for phase, row in health.items():
        print(
            f"  {phase:<10} n={row['count']:<6} p50 {row['p50_ms']:>7} ms  "
            f"p99 {row['p99_ms']:>7} ms"
        )
    print(
        f"  p99 under the mix / idle: {result['health_p99_ratio_mixed']} (with the warm-up: "
        f"{result['health_p99_ratio_mixed_with_warmup']}); during 1,000-item "
        f"pages / idle: {result['health_p99_ratio_big_lists']} (target: at most 3)"
    )


if __name__ == "__main__":
    main()
