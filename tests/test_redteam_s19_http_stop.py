"""Red team over HTTP: the server stopped (SIGTERM, then SIGKILL) while uploads stream.

The promise: every 201 a client received is readable, with the same bytes, after a restart;
nothing half-made is listed; and ``app data check`` finds the root clean afterwards.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import forked_app
import httpx
import pytest
from live_http import WAIT
from waits import until

from app import config as appconfig
from app.testing.live_server import stop_server

SIZE = 64 * 1024


class Root:
    """One data root, served by one ``app serve`` after another (each forked from the run's
    zygote when the environment fits: tests/forked_app.py)."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.path = where / "live-data"
        self.env = {**os.environ, "APP_HOST": "127.0.0.1", "APP_DATA_ROOT": str(self.path)}
        token = appconfig.load("testing", environ=self.env).api_token
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.starts = 0

    def start(self) -> tuple[subprocess.Popen[bytes] | forked_app.Forked, str, Path]:
        self.starts += 1
        log = self.where / f"server-{self.starts}.log"
        process, url = forked_app.start_server(self.env, self.path, log)
        return process, url, log

    def temp_files(self) -> list[Path]:
        return [p for p in (self.path / ".tmp").rglob("*") if p.is_file()]


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Root]:
    yield Root(tmp_path)


def _begin_put(url: str, headers: dict[str, str], path: str, sent: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=WAIT)
    head = f"PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {SIZE}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sock.sendall(head.encode() + sent)
    return sock


def _answer(sock: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:  # a killed server's kernel may reset instead of closing
        pass
    return received


def _wait_for_a_temp_file(
    root: Root, process: subprocess.Popen[bytes] | forked_app.Forked, log: Path
) -> None:
    # A poll on a condition: the upload has begun on disk (bounded, a net: tests/waits.py).
    until(root.temp_files, lambda: f"no upload file in .tmp/:\n{log.read_text()}", _alive(process))


def _alive(process: subprocess.Popen[bytes] | forked_app.Forked) -> Callable[[], bool]:
    return lambda: process.poll() is None


def test_uploads_acknowledged_before_a_sigterm_and_a_sigkill_survive_both(root: Root) -> None:
    process, url, log = root.start()
    try:
        with httpx.Client(base_url=url, headers=root.headers) as client:
            session_id = client.post("/sessions", json={}).json()["id"]
            files = f"/sessions/{session_id}/files"
            done, during, killed = os.urandom(SIZE), os.urandom(SIZE), os.urandom(SIZE)
            assert client.put(f"{files}/done.bin", content=done).status_code == 201
            # SIGTERM while an upload is half received: the server finishes it, then stops.
            sock = _begin_put(url, root.headers, f"{files}/during.bin", during[: SIZE // 2])
            _wait_for_a_temp_file(root, process, log)
            process.send_signal(signal.SIGTERM)
            # uvicorn logs this, then marks every connection to close after its answer
            until(
                lambda: "Shutting down" in log.read_text(),
                lambda: f"no 'Shutting down' after SIGTERM:\n{log.read_text()}",
                _alive(process),
            )
            sock.sendall(during[SIZE // 2 :])
            answer = _answer(sock)
            sock.close()
        assert answer.startswith(b"HTTP/1.1 201 "), answer
        assert b"\r\nconnection: close\r\n" in answer.lower(), answer  # it closes after it
        assert process.wait() == 0, log.read_text()
    finally:
        stop_server(process)

    process, url, log = root.start()
    try:
        assert "start-up check" not in log.read_text(), log.read_text()
        with httpx.Client(base_url=url, headers=root.headers) as client:
            for name, data in (("done.bin", done), ("during.bin", during)):
                got = client.get(f"{files}/{name}")
                assert got.content == data, name
                assert got.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
            # SIGKILL while an upload is half received: never acknowledged, never listed.
            sock = _begin_put(url, root.headers, f"{files}/killed.bin", killed[: SIZE // 2])
            _wait_for_a_temp_file(root, process, log)
            process.kill()
            process.wait()
            assert _answer(sock) == b""
            sock.close()
    finally:
        stop_server(process)

    process, url, log = root.start()
    try:
        with httpx.Client(base_url=url, headers=root.headers) as client:
            listed = {f["name"] for f in client.get(f"{files}").json()["items"]}
            assert listed == {"done.bin", "during.bin"}
            for name, data in (("done.bin", done), ("during.bin", during)):
                assert client.get(f"{files}/{name}").content == data, name
        assert root.temp_files() == []
    finally:
        stop_server(process)
    check = forked_app.run(root.env, ["data", "check"])  # forked from the run's zygote
    assert check.returncode == 0, check.stdout + check.stderr
