"""Transfers take turns (``max_transfers_at_once``): queued, never refused, never held idle.

The live tests run a real ``app serve`` with one transfer at a time, the tightest setting, and
play the slow client with a raw socket: if a client waiting to send or read kept its turn, or a
failed transfer never gave its turn back, the next transfer would wait for ever, and the
bounded client calls here (`WAIT`) fail.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from typing import Any

import anyio
import httpx
import pytest
from live_http import WAIT, a_session, address, connect
from test_server_resources import read_answer, token_header

from app.server.limits import Turn, is_transfer
from app.testing import LiveServer

ONE_AT_A_TIME = {"APP_MAX_TRANSFERS_AT_ONCE": "1"}
MULTIPART = "multipart/form-data; boundary=x"


def scope(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path}


@pytest.mark.parametrize(
    ("method", "path", "transfer"),
    [
        ("PUT", "/sessions/abc/files/a.bin", True),
        ("GET", "/sessions/abc/files/a.bin", True),
        ("HEAD", "/sessions/abc/files/a.bin", True),
        ("POST", "/sessions/abc/files", True),
        ("GET", "/sessions/abc/files/dir/a.bin", True),
        ("DELETE", "/sessions/abc/files/a.bin", False),
        ("GET", "/sessions/abc/files", False),
        ("GET", "/sessions/abc", False),
        ("DELETE", "/sessions/abc", False),
        ("POST", "/sessions", False),
        ("GET", "/sessions", False),
        ("GET", "/health", False),
        ("GET", "/openapi.json", False),
        ("POST", "/trash/empty", False),
        ("GET", "/sessions/abc/other/a.bin", False),
    ],
)
def test_uploads_and_downloads_are_transfers_and_small_calls_are_not(
    method: str, path: str, transfer: bool
) -> None:
    assert is_transfer(scope(method, path)) is transfer


def test_a_turn_is_held_once_however_often_it_is_entered_or_left() -> None:
    async def main() -> None:
        places = anyio.Semaphore(1, fast_acquire=True)
        turn = Turn(places)
        turn.leave()  # never entered: nothing to give back
        assert places.value == 1
        await turn.enter()
        await turn.enter()
        assert places.value == 0
        turn.leave()
        turn.leave()
        assert places.value == 1

    anyio.run(main)


def test_two_tasks_of_one_request_entering_at_once_hold_one_place() -> None:
    async def main() -> None:
        places = anyio.Semaphore(1, fast_acquire=True)
        other = Turn(places)
        await other.enter()
        turn = Turn(places)
        async with anyio.create_task_group() as group:
            group.start_soon(turn.enter)
            group.start_soon(turn.enter)
            await anyio.wait_all_tasks_blocked()
            other.leave()
        assert places.value == 0  # one place, for the request
        turn.leave()
        assert places.value == 1

    anyio.run(main)


def test_a_request_cancelled_while_it_waits_for_its_turn_takes_no_place() -> None:
    async def main() -> None:
        places = anyio.Semaphore(1, fast_acquire=True)
        holder = Turn(places)
        await holder.enter()
        waiting = Turn(places)
        with anyio.move_on_after(0.05):
            await waiting.enter()
        waiting.leave()
        holder.leave()
        assert places.value == 1
        last = Turn(places)
        with anyio.fail_after(WAIT):
            await last.enter()
        last.leave()

    anyio.run(main)


def normal_transfers(server: LiveServer, session_id: str, name: str) -> None:
    """An upload and its download by a well-behaved client, each bounded by `WAIT`."""
    url = f"{server.url}/sessions/{session_id}/files/{name}"
    body = name.encode() * 1000
    put = httpx.put(url, content=body, headers=server.headers, timeout=WAIT)
    assert put.status_code == 201, put.text
    got = httpx.get(url, headers=server.headers, timeout=WAIT)
    assert got.status_code == 200 and got.content == body


def start_upload(server: LiveServer, session_id: str, name: str, length: int) -> socket.socket:
    """A PUT whose head and first 10 bytes are sent; the rest waits for the caller."""
    sock = connect(server)
    sock.sendall(
        f"PUT /sessions/{session_id}/files/{name} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {length}\r\n".encode()
        + token_header(server)
        + b"\r\n"
        + b"s" * 10
    )
    return sock


@pytest.mark.parametrize("tight", [ONE_AT_A_TIME], indirect=True)
def test_clients_that_stall_mid_upload_or_mid_download_keep_no_transfer_waiting(
    tight: LiveServer,
) -> None:
    session_id = a_session(tight)
    size = 16 * 2**20  # more than the socket buffers on both sides hold
    big = f"{tight.url}/sessions/{session_id}/files/big.bin"
    assert httpx.put(big, content=b"b" * size, headers=tight.headers).status_code == 201
    length = 5000
    stalled = [start_upload(tight, session_id, f"slow{n}.bin", length) for n in range(3)]
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.settimeout(WAIT)
    reader.connect(address(tight))
    reader.sendall(
        f"GET /sessions/{session_id}/files/big.bin HTTP/1.1\r\nHost: x\r\n".encode()
        + token_header(tight)
        + b"\r\n"
    )
    try:
        # Each of the four holds a connection and is part way through its transfer; with one
        # transfer at a time, a turn kept while waiting for its client would block these.
        for n in range(3):
            normal_transfers(tight, session_id, f"ok{n}.txt")
        # The stalled uploads go on when their clients do, and are stored whole.
        for sock in stalled:
            sock.sendall(b"s" * (length - 10))
        for n, sock in enumerate(stalled):
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 201"), head
            got = httpx.get(
                f"{tight.url}/sessions/{session_id}/files/slow{n}.bin", headers=tight.headers
            )
            assert got.content == b"s" * length
        # So does the download, read to its end: with a buffer of the usual size now that
        # the stall has done its part (4 KiB at a time, the 16 MiB are 4,096 turns of the
        # server's event loop, 2.6 s alone and 10 s beside the other xdist worker).
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 2**20)
        data = b""
        while len(data) < size:
            chunk = reader.recv(2**20)
            assert chunk, f"the download ended after {len(data)} bytes"
            data += chunk
        assert data.endswith(b"b" * 1000)
    finally:
        reader.close()
        for sock in stalled:
            sock.close()


@pytest.mark.parametrize("tight", [ONE_AT_A_TIME], indirect=True)
def test_transfers_beyond_the_limit_are_queued_and_all_served(tight: LiveServer) -> None:
    session_id = a_session(tight)
    results: dict[int, tuple[int, str]] = {}

    def upload(n: int) -> None:
        body = f"file {n}".encode() * 5000
        url = f"{tight.url}/sessions/{session_id}/files/q{n}.bin"
        response = httpx.put(url, content=body, headers=tight.headers, timeout=WAIT)
        results[n] = (response.status_code, hashlib.sha256(body).hexdigest())

    threads = [threading.Thread(target=upload, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {status for status, _ in results.values()} == {201}
    listed = httpx.get(f"{tight.url}/sessions/{session_id}/files", headers=tight.headers).json()
    stored = {entry["name"]: entry["sha256"] for entry in listed["items"]}
    assert stored == {f"q{n}.bin": digest for n, (_, digest) in results.items()}


@pytest.mark.parametrize(
    "tight", [{**ONE_AT_A_TIME, "APP_REQUEST_IDLE_SECONDS": "0.5"}], indirect=True
)
def test_no_failed_or_abandoned_transfer_keeps_its_turn(tight: LiveServer) -> None:
    session_id = a_session(tight)
    files = f"/sessions/{session_id}/files"
    auth = token_header(tight)
    # A client that disconnects mid-body.
    with start_upload(tight, session_id, "gone.bin", 5000):
        pass
    # One whose body stops: 408 after request_idle_seconds.
    with start_upload(tight, session_id, "stops.bin", 5000) as sock:
        status, _, _ = read_answer(sock)
        assert status == 408
    # A declared length over the limit, a missing session, a missing file, a bad multipart body.
    refused = [
        (f"PUT {files}/huge.bin HTTP/1.1\r\nContent-Length: {2**40}\r\n", b"", 413),
        (f"PUT /sessions/{'0' * 32}/files/a HTTP/1.1\r\nContent-Length: 2\r\n", b"ab", 404),
        (f"GET {files}/missing.bin HTTP/1.1\r\n", b"", 404),
        (
            f"POST {files} HTTP/1.1\r\nContent-Type: {MULTIPART}\r\nContent-Length: 5\r\n",
            b"nope!",
            400,
        ),
    ]
    for head, body, expected in refused:
        with connect(tight) as sock:
            sock.sendall(
                head.encode() + b"Host: x\r\nConnection: close\r\n" + auth + b"\r\n" + body
            )
            status, _, _ = read_answer(sock)
            assert status == expected, head
    # A download its client closes after the head.
    url = f"{tight.url}{files}/big.bin"
    assert httpx.put(url, content=b"b" * 2**22, headers=tight.headers).status_code == 201
    with connect(tight) as sock:
        sock.sendall(f"GET {files}/big.bin HTTP/1.1\r\nHost: x\r\n".encode() + auth + b"\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
    # Had any of them kept its turn, these would wait for ever (and fail after WAIT).
    for n in range(3):
        normal_transfers(tight, session_id, f"after{n}.txt")


@pytest.mark.parametrize(
    "tight", [{**ONE_AT_A_TIME, "APP_MAX_UPLOAD_BYTES": str(2**30)}], indirect=True
)
def test_a_large_upload_whose_client_never_waits_lets_a_small_download_through(
    tight: LiveServer,
) -> None:
    # Over loopback the uploading client stays ahead of the server, so the upload never waits
    # for it and would keep its turn to the end; after a quantum it lets a waiting one in.
    session_id = a_session(tight)
    small = f"{tight.url}/sessions/{session_id}/files/small.txt"
    assert httpx.put(small, content=b"small", headers=tight.headers).status_code == 201
    size, piece = 256 * 2**20, memoryview(b"u" * 2**20)
    answered = threading.Event()
    status: list[bytes] = []

    def upload() -> None:
        with connect(tight) as sock:
            sock.sendall(
                f"PUT /sessions/{session_id}/files/large.bin HTTP/1.1\r\nHost: x\r\n"
                f"Content-Length: {size}\r\n".encode()
                + token_header(tight)
                + b"\r\n"
            )
            for _ in range(size // len(piece)):
                sock.sendall(piece)
            status.append(sock.recv(100))
            answered.set()

    uploading = threading.Thread(target=upload)
    uploading.start()
    try:
        # Wait until the upload holds the turn: its temporary file is growing.
        for _ in range(int(WAIT / 0.01)):
            if any(p.stat().st_size for p in (tight.data_root / ".tmp").rglob("*") if p.is_file()):
                break
            threading.Event().wait(0.01)
        got = httpx.get(small, headers=tight.headers, timeout=WAIT)
        assert got.status_code == 200 and got.content == b"small"
        assert not answered.is_set(), "the download waited for the whole upload"
    finally:
        uploading.join(WAIT * 4)
    assert status and status[0].startswith(b"HTTP/1.1 201"), status
