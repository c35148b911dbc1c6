"""Upload throughput of `app serve` against a bare Starlette endpoint, over loopback.

Both servers run uvicorn with uvloop, listen on 127.0.0.1 and fsync what they store; the
baseline parses HTTP with httptools (uvicorn's default), ``app serve`` with h11 (which bounds
the request head: `app.server.protocol`). The baseline endpoint writes ``request.stream()``
straight to a file; the app streams the same bytes through its checks, a SHA-256 and
``.tmp/`` into the session (PUT: raw body; POST: multipart parsed as a stream). The client
is a raw socket sending 1 MiB chunks, timed from the first byte sent to the last byte of the
response.

Also measured: bytes the server process wrote to storage per uploaded byte
(``/proc/<pid>/io`` ``write_bytes``; 1.0 means each byte written once), each server's CPU
time per MiB (all threads, user and system: what the code costs, which other work on the
cores moves far less than the rates), and the server's RSS growth during one 1 GiB upload.

With ``--against DIR`` a second ``app serve`` runs from another checkout (its ``.venv`` if it
has one), and every run also uploads to it: its ratios to the bare endpoint, and this
checkout's rate over its own, per run, compare two versions on the same disk in the same
minutes.

Run: ``.venv/bin/python bench/upload.py [--size-mib 256] [--runs 5] [--big-mib 1024]
[--against DIR]``
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    TOKEN,
    Server,
    app_server,
    cpu_seconds,
    io_write_bytes,
    median,
    per_run_ratio,
    rss_bytes,
    transfer_main,
)

MIB = 2**20
CHUNK = os.urandom(MIB)


def serve_baseline(fd: int, directory: str) -> None:
    """The bare endpoint (run in a subprocess, on the socket ``fd`` it inherited): raw body
    straight to a file, fsync."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    counter = [0]

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def upload(request: Request) -> JSONResponse:
        counter[0] += 1
        path = Path(directory) / f"upload-{counter[0]}"
        size = 0
        with path.open("wb") as out:
            async for chunk in request.stream():
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        return JSONResponse({"size": size}, status_code=201)

    app = Starlette(routes=[Route("/health", health), Route("/upload", upload, methods=["PUT"])])
    config = uvicorn.Config(app, log_level="warning")
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


def send(port: int, request_line: str, size: int, *, multipart: bool = False) -> float:
    """Upload ``size`` bytes; return the seconds from the first byte to the full response."""
    head = tail = b""
    extra = ""
    if multipart:
        head = (
            b'--BENCHBOUNDARY\r\nContent-Disposition: form-data; name="file"; '
            b'filename="upload.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
        )
        tail = b"\r\n--BENCHBOUNDARY--\r\n"
        extra = "Content-Type: multipart/form-data; boundary=BENCHBOUNDARY\r\n"
    length = len(head) + size + len(tail)
    headers = (
        f"{request_line} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Length: {length}\r\n{extra}Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        start = time.perf_counter()
        sock.sendall(headers + head)
        left = size
        while left:
            piece = CHUNK if left >= MIB else CHUNK[:left]
            sock.sendall(piece)
            left -= len(piece)
        sock.sendall(tail)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
        elapsed = time.perf_counter() - start
    status = response.split(b" ", 2)[1]
    if status not in (b"200", b"201"):
        raise RuntimeError(f"upload failed: {response[:500]!r}")
    return elapsed


def new_session(port: int) -> str:
    import httpx

    response = httpx.post(
        f"http://127.0.0.1:{port}/sessions",
        json={"title": "bench"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    response.raise_for_status()
    session_id: str = response.json()["id"]
    return session_id


def measure(args: argparse.Namespace, work: Path) -> dict[str, object]:
    size = args.size_mib * MIB
    kinds = ["baseline", "put", "multipart"]
    if args.against:
        kinds += ["against put", "against multipart"]
    results: dict[str, list[float]] = {kind: [] for kind in kinds}
    written: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
    baseline_dir = work / "baseline"
    baseline_dir.mkdir()
    with socket.create_server(("127.0.0.1", 0)) as listening:
        argv = [sys.executable, __file__, "--serve-baseline", str(listening.fileno())]
        argv.append(str(baseline_dir))
        baseline = Server(argv, dict(os.environ), work / "baseline.log", listening)
    limit = str(max(size, args.big_mib * MIB) + MIB)
    try:
        with ExitStack() as stack:
            app = stack.enter_context(
                app_server(work / "data", work / "app.log", APP_MAX_UPLOAD_BYTES=limit)
            )
            server_of = {"baseline": baseline, "put": app, "multipart": app}
            if args.against:
                other = stack.enter_context(
                    app_server(
                        work / "against-data",
                        work / "against.log",
                        args.against.resolve(),
                        APP_MAX_UPLOAD_BYTES=limit,
                    )
                )
                server_of |= {"against put": other, "against multipart": other}
            for run in range(args.runs):
                # Rotate the order so that no kind always follows the same one; start each
                # upload with nothing dirty in the page cache. Nothing is deleted until the
                # end: on this VM's disk (ext4 mounted with `discard`), rewriting blocks
                # freed a moment ago runs at half speed, which would penalise whichever
                # server writes next to a deleted file.
                shift = run % len(kinds)
                for kind in kinds[shift:] + kinds[:shift]:
                    os.sync()
                    server = server_of[kind]
                    before = io_write_bytes(server.pid)
                    cpu_before = cpu_seconds(server.pid)
                    if kind == "baseline":
                        seconds = send(baseline.port, "PUT /upload", size)
                    else:
                        session = new_session(server.port)  # one file name per session
                        if kind.endswith("put"):
                            line = f"PUT /sessions/{session}/files/put-{run}.bin"
                            seconds = send(server.port, line, size)
                        else:
                            line = f"POST /sessions/{session}/files"
                            seconds = send(server.port, line, size, multipart=True)
                    written[kind].append((io_write_bytes(server.pid) - before) / size)
                    cpu[kind].append((cpu_seconds(server.pid) - cpu_before) * 1000 / (size / MIB))
                    results[kind].append(size / MIB / seconds)
                    print(f"run {run + 1}: {kind:<17} {results[kind][-1]:7.1f} MiB/s", flush=True)
            big = measure_rss(app, args.big_mib * MIB)
    finally:
        baseline.stop()

    result: dict[str, object] = {
        "size_mib": args.size_mib,
        "runs": args.runs,
        "median_mib_s": {kind: median(values) for kind, values in results.items()},
        "ratio_put": per_run_ratio(results, "put", "baseline"),
        "ratio_multipart": per_run_ratio(results, "multipart", "baseline"),
        "written_per_byte": {kind: median(values) for kind, values in written.items()},
        # The server's CPU time (all its threads, user and system) per MiB: what the code
        # costs, much less moved by other processes on the cores than the rates are.
        "cpu_ms_per_mib": {kind: median(values) for kind, values in cpu.items()},
        "big_upload": big,
    }
    if args.against:
        result["against"] = str(args.against)
        result["against_ratio_put"] = per_run_ratio(results, "against put", "baseline")
        result["against_ratio_multipart"] = per_run_ratio(results, "against multipart", "baseline")
        # This checkout against the other in the same runs, the baseline left out.
        result["put_over_against"] = per_run_ratio(results, "put", "against put")
        result["multipart_over_against"] = per_run_ratio(results, "multipart", "against multipart")
    return result


def measure_rss(app: Server, size: int) -> dict[str, float]:
    session = new_session(app.port)
    os.sync()
    start_rss = rss_bytes(app.pid)
    peak = [start_rss]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], rss_bytes(app.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        seconds = send(app.port, f"PUT /sessions/{session}/files/big.bin", size)
    finally:
        done.set()
        sampler.join()
    return {
        "size_mib": size / MIB,
        "mib_s": size / MIB / seconds,
        "rss_before_mib": start_rss / MIB,
        "rss_growth_mib": (peak[0] - start_rss) / MIB,
    }


def main() -> None:
    parsed = transfer_main(
        __doc__.splitlines()[0],
        prefix="bench-upload-",
        runs=5,
        baseline_metavar="DIR",
        serve_baseline=serve_baseline,
        measure=measure,
        extra=lambda parser: parser.add_argument("--big-mib", type=int, default=1024),
    )
    if parsed is None:
        return
    args, result = parsed
    m = result["median_mib_s"]
    assert isinstance(m, dict)
    print(
        f"\n{args.size_mib} MiB upload, median of {args.runs} runs (MiB/s, fsync included; "
        "ratio: median of the per-run ratios):"
    )
    print(f"  bare Starlette endpoint  {m['baseline']:7.1f}")
    print(f"  app PUT (raw body)       {m['put']:7.1f}   ratio {result['ratio_put']:.2f}")
    ratio = result["ratio_multipart"]
    print(f"  app POST (multipart)     {m['multipart']:7.1f}   ratio {ratio:.2f}")
    if args.against:
        print(f"  {args.against} in the same runs:")
        print(
            f"    PUT        {m['against put']:7.1f}   ratio {result['against_ratio_put']:.2f};"
            f" this checkout's per run: {result['put_over_against']:.2f} of it"
        )
        print(
            f"    multipart  {m['against multipart']:7.1f}   ratio "
            f"{result['against_ratio_multipart']:.2f}; this checkout's per run: "
            f"{result['multipart_over_against']:.2f} of it"
        )
    w = result["written_per_byte"]
    assert isinstance(w, dict)
    print("  bytes written to storage per uploaded byte (/proc/<pid>/io write_bytes): "
          + ", ".join(f"{k} {v:.3f}" for k, v in w.items()))  # fmt: skip
    c = result["cpu_ms_per_mib"]
    assert isinstance(c, dict)
    print("  server CPU time per MiB (/proc/<pid>/stat utime + stime): "
          + ", ".join(f"{k} {v:.2f} ms" for k, v in c.items()))  # fmt: skip
    big = result["big_upload"]
    assert isinstance(big, dict)
    print(
        f"  {big['size_mib']:.0f} MiB PUT: {big['mib_s']:.1f} MiB/s, server RSS "
        f"{big['rss_before_mib']:.1f} MiB before, grew by {big['rss_growth_mib']:.1f} MiB"
    )


if __name__ == "__main__":
    main()
