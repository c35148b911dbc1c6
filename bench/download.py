"""Download throughput of `app serve` against a bare Starlette ``FileResponse``, over loopback.

Both servers run uvicorn with uvloop and listen on 127.0.0.1. The baseline endpoint answers
one file with Starlette's ``FileResponse`` (no checks); ``app serve`` answers
``GET /sessions/{id}/files/{name}`` for a file of the same size uploaded once through its
``PUT``, with every check a download makes. The client is a raw socket that reads the whole
answer, timed from the request's first byte to the answer's last. The file is in the page
cache for every run (read once before the runs), so the figure is the servers' work, not
the disk's.

Also measured: each server's CPU time per MiB (all threads, user and system), which other
work on the cores moves far less than the rates.

With ``--against DIR`` a second ``app serve`` runs from another checkout (its ``.venv`` if it
has one), and every run also downloads from it: this checkout's rate over the other's, per
run, compares two versions in the same minutes.

Run: ``.venv/bin/python bench/download.py [--size-mib 256] [--runs 7] [--against DIR]``
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    TOKEN,
    Server,
    app_server,
    cpu_seconds,
    median,
    per_run_ratio,
    transfer_main,
)

MIB = 2**20


def serve_baseline(fd: int, path: str) -> None:
    """The bare endpoint (run in a subprocess, on the socket ``fd`` it inherited)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Route

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def download(request: Request) -> FileResponse:
        return FileResponse(path, media_type="application/octet-stream")

    app = Starlette(routes=[Route("/health", health), Route("/file", download)])
    config = uvicorn.Config(app, log_level="warning")
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


def fetch(port: int, target: str, size: int) -> float:
    """Download ``target``; the seconds from the request's first byte to the answer's last."""
    request = (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    buffer = bytearray(4 * MIB)
    view = memoryview(buffer)
    received = 0
    head = b""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        start = time.perf_counter()
        sock.sendall(request)
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"download of {target} ended in its head: {head[:300]!r}")
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        received = len(rest)
        while count := sock.recv_into(view):
            received += count
        elapsed = time.perf_counter() - start
    status = head.split(b" ", 2)[1]
    if status != b"200" or received != size:
        raise RuntimeError(f"download of {target}: {head[:300]!r}, {received} of {size} bytes")
    return elapsed


def upload(port: int, size: int) -> str:
    """A session holding one file of ``size`` random bytes; its download's path."""
    import httpx

    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120) as c:
        made = c.post("/sessions", json={"title": "bench"})
        made.raise_for_status()
        target = f"/sessions/{made.json()['id']}/files/download.bin"

        def body() -> Iterator[bytes]:
            for _ in range(size // MIB):
                yield os.urandom(MIB)

        c.put(target, content=body()).raise_for_status()
    return target


def measure(args: argparse.Namespace, work: Path) -> dict[str, object]:
    size = args.size_mib * MIB
    kinds = ["baseline", "app"] + (["against"] if args.against else [])
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
    plain = work / "baseline.bin"
    with plain.open("wb") as out:
        for _ in range(args.size_mib):
            out.write(os.urandom(MIB))
    with socket.create_server(("127.0.0.1", 0)) as listening:
        argv = [sys.executable, __file__, "--serve-baseline", str(listening.fileno()), str(plain)]
        baseline = Server(argv, dict(os.environ), work / "baseline.log", listening)
    limit = str(size + MIB)
    try:
        with ExitStack() as stack:
            servers = {"baseline": baseline}
            servers["app"] = stack.enter_context(
                app_server(work / "data", work / "app.log", APP_MAX_UPLOAD_BYTES=limit)
            )
            if args.against:
                servers["against"] = stack.enter_context(
                    app_server(
                        work / "against-data",
                        work / "against.log",
                        args.against.resolve(),
                        APP_MAX_UPLOAD_BYTES=limit,
                    )
                )
            targets = {"baseline": "/file"}
            for kind in kinds[1:]:
                targets[kind] = upload(servers[kind].port, size)
            for kind in kinds:  # into the page cache, and each server's first request done
                fetch(servers[kind].port, targets[kind], size)
            for run in range(args.runs):
                shift = run % len(kinds)  # no kind always follows the same one
                for kind in kinds[shift:] + kinds[:shift]:
                    server = servers[kind]
                    cpu_before = cpu_seconds(server.pid)
                    seconds = fetch(server.port, targets[kind], size)
                    cpu[kind].append((cpu_seconds(server.pid) - cpu_before) * 1000 / args.size_mib)
                    rates[kind].append(args.size_mib / seconds)
                    print(f"run {run + 1}: {kind:<9} {rates[kind][-1]:8.1f} MiB/s", flush=True)
    finally:
        baseline.stop()

    result: dict[str, object] = {
        "size_mib": args.size_mib,
        "runs": args.runs,
        "median_mib_s": {kind: median(values) for kind, values in rates.items()},
        "ratio": per_run_ratio(rates, "app", "baseline"),
        "cpu_ms_per_mib": {kind: median(values) for kind, values in cpu.items()},
    }
    if args.against:
        result["against"] = str(args.against)
        result["against_ratio"] = per_run_ratio(rates, "against", "baseline")
        result["app_over_against"] = per_run_ratio(rates, "app", "against")
    return result


def main() -> None:
    parsed = transfer_main(
        __doc__.splitlines()[0],
        prefix="bench-download-",
        runs=7,
        baseline_metavar="FILE",
        serve_baseline=serve_baseline,
        measure=measure,
    )
    if parsed is None:
        return
    args, result = parsed
    rate = result["median_mib_s"]
    cpu = result["cpu_ms_per_mib"]
    assert isinstance(rate, dict)
    assert isinstance(cpu, dict)
    print(f"\n{args.size_mib} MiB download, median of {args.runs} runs (ratio: of per-run ratios)")
    print(f"  bare FileResponse  {rate['baseline']:8.1f} MiB/s, {cpu['baseline']:.2f} ms CPU/MiB")
    print(
        f"  app GET            {rate['app']:8.1f} MiB/s, {cpu['app']:.2f} ms CPU/MiB, "
        f"ratio {result['ratio']:.2f}"
    )
    if args.against:
        print(
            f"  {args.against}: {rate['against']:8.1f} MiB/s, {cpu['against']:.2f} ms CPU/MiB, "
            f"ratio {result['against_ratio']:.2f}; this checkout's per run: "
            f"{result['app_over_against']:.2f} of it"
        )


if __name__ == "__main__":
    main()
