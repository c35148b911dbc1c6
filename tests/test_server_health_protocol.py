"""``GET /health`` answered by the HTTP protocol sends the application's bytes.

The real application over a real store is served twice over real sockets by uvicorn with the
project's protocol: once answering ``/health`` in the protocol (as `app serve` does), once
leaving it to the application. Every exchange below is sent to both, and what the client
receives is compared byte for byte (the ``date`` header masked), with which requests reached
the application: the plain ones must not have in the first server, the unusual ones must
have (they fall back).
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn

from app.config import Config
from app.server import create_app
from app.server.protocol import bounded_h11, run_now
from app.server.routes_sessions import HealthResponse
from app.storage import Storage

WAIT = 15.0  # bounds a read from a broken server, so that a hung test fails
GET = b"GET /health HTTP/1.1\r\nhost: t\r\n\r\n"
CLOSE = b"GET /health HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"

# name: (rounds, each sent once the answers to the one before came; how many requests reach
# the application when /health is answered in the protocol)
EXCHANGES: dict[str, tuple[list[tuple[list[str], bytes]], int]] = {
    "kept alive, then closed": ([(["GET"], GET), (["GET"], CLOSE)], 0),
    "HEAD": (
        [
            (["HEAD"], b"HEAD /health HTTP/1.1\r\nhost: t\r\n\r\n"),
            (["HEAD"], b"HEAD /health HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"),
        ],
        0,
    ),
    "query string": (
        [(["GET"], b"GET /health?verbose=1&x HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")],
        0,
    ),
    "a wrong bearer token": (
        [
            (
                ["GET"],
                (
                    b"GET /health HTTP/1.1\r\nhost: t\r\nauthorization: Bearer nope\r\n"
                    b"connection: close\r\n\r\n"
                ),
            )
        ],
        0,
    ),
    "HTTP/1.0": ([(["GET"], b"GET /health HTTP/1.0\r\n\r\n")], 0),
    "HTTP/1.0 asking for keep-alive": (
        [(["GET"], b"GET /health HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")],
        0,
    ),
    "an empty body by its length": (
        [
            (["GET"], b"GET /health HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\n\r\n"),
            (["GET"], CLOSE),
        ],
        0,
    ),
    "an empty chunked body": (
        [
            (
                ["GET"],
                b"GET /health HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
            (["GET"], CLOSE),
        ],
        0,
    ),
    "100-continue expected, no body": (
        [
            (["GET"], b"GET /health HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\n\r\n"),
            (["GET"], CLOSE),
        ],
        0,
    ),
    # The unusual: the application answers them in both servers.
    "a body": (
        [
            (
                ["GET"],
                b"GET /health HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello",
            ),
            (["GET"], CLOSE),
        ],
        1,
    ),
    "a body that comes later": (
        [
            (["GET"], b"GET /health HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\n"),
            (["GET"], b"hello" + CLOSE),  # read past, as for any answer before its body
        ],
        1,
    ),
    "a repeated Authorization header": (
        [
            (
                ["GET"],
                (
                    b"GET /health HTTP/1.1\r\nhost: t\r\nauthorization: Bearer a\r\n"
                    b"authorization: Bearer b\r\nconnection: close\r\n\r\n"
                ),
            )
        ],
        1,
    ),
    "a percent-encoded path": (
        [(["GET"], b"GET /heal%74h HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")],
        1,
    ),
    "POST": (
        [(["POST"], b"POST /health HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")],
        1,
    ),
    "pipelined: the last one only": ([(["GET", "GET", "GET"], GET + GET + CLOSE)], 2),
    "pipelined behind another route": (
        [(["GET", "GET"], b"GET /sessions HTTP/1.1\r\nhost: t\r\n\r\n" + CLOSE)],
        1,
    ),
}


class _Reader:
    """The responses on one connection, one at a time, and every byte received."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = b""
        self.at = 0

    def _more(self) -> bool:
        piece = self.sock.recv(65536)
        self.data += piece
        return bool(piece)

    def one(self, method: str) -> None:
        while (end := self.data.find(b"\r\n\r\n", self.at)) < 0:
            assert self._more(), self.data
        head = self.data[self.at : end].lower()
        found = re.search(rb"\r\ncontent-length: *(\d+)", head)
        length = 0 if method == "HEAD" or found is None else int(found[1])
        while len(self.data) < end + 4 + length:
            assert self._more(), self.data
        self.at = end + 4 + length

    def to_end(self) -> bytes:
        while self._more():
            pass
        return self.data


def _talk(port: int, rounds: list[tuple[list[str], bytes]]) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        reader = _Reader(sock)
        for n, (methods, data) in enumerate(rounds):
            sock.sendall(data)
            if n < len(rounds) - 1:
                for method in methods:
                    reader.one(method)
        return re.sub(rb"(?im)^date: [^\r]*\r$", b"date: *\r", reader.to_end())


@contextmanager
def _serving(application: Any, health: Any) -> Iterator[int]:
    """uvicorn as `app serve` configures it, on a thread; its port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(
            application,
            http=bounded_h11(16 * 1024, 30.0, 600.0, health=health),
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        while not server.started and thread.is_alive():
            time.sleep(0.005)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


def test_health_answered_by_the_protocol_is_what_the_application_sends(
    app_store: Storage, app_config: Config
) -> None:
    application = create_app(app_store, app_config)
    reached: list[bytes] = []

    async def recorded(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["raw_path"])
        await application(scope, receive, send)

    with (
        _serving(recorded, HealthResponse(app_config, app_store)) as fast,
        _serving(recorded, None) as slow,
    ):
        for name, (rounds, to_app) in EXCHANGES.items():
            reached.clear()
            expected = _talk(slow, rounds)
            assert len(reached) == sum(len(methods) for methods, _ in rounds), name
            assert expected.startswith(b"HTTP/1."), name
            reached.clear()
            assert _talk(fast, rounds) == expected, name
            assert len(reached) == to_app, (name, reached)


def test_a_coroutine_run_now_that_waits_after_all_is_resumed_by_a_task() -> None:
    steps: list[str] = []

    async def waits_once(event: asyncio.Event) -> None:
        steps.append("before")
        await event.wait()
        steps.append("after")

    async def main() -> None:
        event = asyncio.Event()
        loop = asyncio.get_running_loop()
        assert run_now(loop, waits_once(event)) is False
        assert steps == ["before"]  # ran here, up to its wait
        event.set()
        for _ in range(3):
            await asyncio.sleep(0)
        assert steps == ["before", "after"]
        assert run_now(loop, asyncio.sleep(0, None)) is False  # a bare yield: resumed too
        await asyncio.sleep(0)
        done = asyncio.Event()
        done.set()
        assert run_now(loop, waits_once(done)) is True  # nothing to wait for: ended here

    asyncio.run(main())


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_health_response_is_the_route_s(app_client: Any, app_config: Config, method: str) -> None:
    response = app_client.request(method, "/health")
    expected = HealthResponse(app_config).ok
    assert response.status_code == expected.status_code == 200
    assert response.headers["content-type"] == expected.headers["content-type"]
    assert response.content == (expected.body if method == "GET" else b"")
