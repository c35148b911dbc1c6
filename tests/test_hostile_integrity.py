"""Integrity under faults nobody had named: real servers, real limits, real files.

What `tests/test_integrity.py` does not cover: a server whose file size limit
(``RLIMIT_FSIZE``, ``ulimit -f``, systemd's ``LimitFSIZE=``) is smaller than an upload, two
clients replacing one file at once, and a replace or a delete while a download of the same
file streams.
"""

from __future__ import annotations

import contextlib
import hashlib
import resource
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_server_e2e import Server, app_env, run_app
from waits import until_set

KIB = 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def start_with_file_size_limit(env: dict[str, str], log: Path, limit: int) -> Server:
    """`app serve` with RLIMIT_FSIZE set to `limit` (in the child only: forked_app.serve)."""
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    return Server(env, log, {resource.RLIMIT_FSIZE: (limit, hard)}).wait_ready()


def test_an_upload_over_the_server_s_file_size_limit_is_507_and_keeps_the_old_file(
    tmp_path: Path, servers: list[Server]
) -> None:
    root = tmp_path / "data"
    env = app_env(root)
    server = start_with_file_size_limit(env, tmp_path / "server.log", 256 * KIB)
    servers.append(server)
    old = b"version 1" * 1000
    big = b"x" * (512 * KIB)
    with server.client() as client:
        sid = client.post("/sessions", json={"title": "t"}).json()["id"]
        assert client.put(f"/sessions/{sid}/files/a.bin", content=old).status_code == 201
        before = client.get(f"/sessions/{sid}").json()
        for response in (
            client.put(f"/sessions/{sid}/files/a.bin", content=big),
            client.put(f"/sessions/{sid}/files/new.bin", content=big),
            client.post(f"/sessions/{sid}/files", files={"file": ("m.bin", big)}),
        ):
            assert response.status_code == 507, response.text
            body = response.json()
            assert body["code"] == "file_too_large_for_server", body
            assert (
                "the file is larger than this process may write (its file size limit: "
                in (body["message"])
            )
            assert "nothing was changed" in body["message"]
            assert str(root) not in body["message"]
        got = client.get(f"/sessions/{sid}/files/a.bin")
        assert (got.status_code, got.content) == (200, old)
        assert client.get(f"/sessions/{sid}").json() == before
        assert client.put(f"/sessions/{sid}/files/b.bin", content=b"small").status_code == 201
    assert server.stop() == 0
    check = run_app("data", "check", env=env)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.fixture
def server(tmp_path: Path, servers: list[Server]) -> Server:
    servers.append(Server(app_env(tmp_path / "data"), tmp_path / "server.log").wait_ready())
    return servers[-1]


def trashed_bodies(root: Path) -> list[bytes]:
    """The bytes of every file in the trash (a replaced or deleted version, kept)."""
    return sorted(
        path.read_bytes()
        for path in (root / ".trash").rglob("*")
        if path.is_file() and path.name != "trash.json"
    )


def test_two_clients_replacing_one_file_at_once_lose_no_acknowledged_version(
    server: Server,
) -> None:
    with server.client() as client:
        sid = client.post("/sessions", json={"title": "t"}).json()["id"]
    acknowledged: list[bytes] = []
    lock = threading.Lock()

    def replace(writer: int) -> None:
        with server.client() as client:
            for n in range(15):
                body = f"writer {writer} version {n} ".encode() * (1 + 700 * (n % 3))
                response = client.put(f"/sessions/{sid}/files/same.txt", content=body)
                assert response.status_code in (200, 201), response.text
                with lock:
                    acknowledged.append(body)

    threads = [threading.Thread(target=replace, args=(w,)) for w in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with server.client() as client:
        current = client.get(f"/sessions/{sid}/files/same.txt")
        assert current.status_code == 200
        assert current.headers["etag"] == f'"{sha(current.content)}"'
    assert server.stop() == 0
    # One version is the file; every other acknowledged one was moved to the trash, whole.
    assert sorted([current.content, *trashed_bodies(server.root)]) == sorted(acknowledged)


def test_a_download_streams_the_version_it_started_with_through_a_replace_and_a_delete(
    server: Server,
) -> None:
    old = bytes(range(256)) * (32 * KIB)  # 8 MiB: more than the socket buffers hold
    with server.client() as client:
        sid = client.post("/sessions", json={"title": "t"}).json()["id"]
        assert client.put(f"/sessions/{sid}/files/big.bin", content=old).status_code == 201
        with client.stream("GET", f"/sessions/{sid}/files/big.bin") as download:
            chunks = download.iter_bytes()
            received = [next(chunks)]
            with server.client() as other:
                replaced = other.put(f"/sessions/{sid}/files/big.bin", content=b"new")
                assert replaced.status_code == 200, replaced.text
                assert other.delete(f"/sessions/{sid}/files/big.bin").status_code == 200
            received.extend(chunks)
        assert download.headers["etag"] == f'"{sha(old)}"'
        assert b"".join(received) == old
        assert client.get(f"/sessions/{sid}/files/big.bin").status_code == 404
    assert server.stop() == 0
    assert trashed_bodies(server.root) == sorted([old, b"new"])


def test_deleting_a_session_while_its_upload_streams_acknowledges_neither_half(
    server: Server,
) -> None:
    with server.client() as client:
        sid = client.post("/sessions", json={"title": "t"}).json()["id"]
        assert client.put(f"/sessions/{sid}/files/kept.txt", content=b"kept").status_code == 201
    started, deleted = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def body() -> Iterator[bytes]:
        yield b"first half " * 10_000
        started.set()
        deleted.wait()
        yield b"second half " * 10_000

    def upload() -> None:
        with server.client() as client:
            outcome["response"] = client.put(f"/sessions/{sid}/files/late.bin", content=body())

    thread = threading.Thread(target=upload)
    thread.start()
    until_set(started, thread, "the upload's first half")
    with server.client() as client:
        assert client.delete(f"/sessions/{sid}").status_code == 200
        deleted.set()
        thread.join()
        response: httpx.Response = outcome["response"]
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "session_not_found"
    assert server.stop() == 0
    restored = run_app("sessions", "restore", sid, env=server.env)
    assert restored.returncode == 0, restored.stderr
    check = run_app("data", "check", env=server.env)
    assert check.returncode == 0, check.stdout + check.stderr
    again = Server(server.env, server.log).wait_ready()
    try:
        with again.client() as client:
            files = client.get(f"/sessions/{sid}").json()["files"]
            assert [f["name"] for f in files] == ["kept.txt"]
            assert client.get(f"/sessions/{sid}/files/kept.txt").content == b"kept"
    finally:
        assert again.stop() == 0


def test_kill_9_in_the_middle_of_a_streamed_replace_keeps_the_acknowledged_version(
    server: Server, tmp_path: Path
) -> None:
    old = b"acknowledged " * 5000
    with server.client() as client:
        sid = client.post("/sessions", json={"title": "t"}).json()["id"]
        assert client.put(f"/sessions/{sid}/files/a.bin", content=old).status_code == 201
    halfway, killed = threading.Event(), threading.Event()

    def body() -> Iterator[bytes]:
        yield b"half of a new version " * 50_000
        halfway.set()
        killed.wait()  # the server dies under it
        yield b"the rest, to a dead server"

    def upload() -> None:
        with server.client() as client, contextlib.suppress(httpx.TransportError):
            client.put(f"/sessions/{sid}/files/a.bin", content=body())

    thread = threading.Thread(target=upload)
    thread.start()
    until_set(halfway, thread, "half of the new version")
    # The first half is in .tmp/ (or in a socket buffer) when the server dies.
    server.kill()
    server.wait_exit()
    killed.set()
    thread.join()
    again = Server(server.env, tmp_path / "again.log").wait_ready()
    try:
        with again.client() as client:
            got = client.get(f"/sessions/{sid}/files/a.bin")
            assert (got.status_code, got.content) == (200, old)
            assert [f["sha256"] for f in client.get(f"/sessions/{sid}").json()["files"]] == [
                sha(old)
            ]
    finally:
        assert again.stop() == 0
    assert list((server.root / ".tmp").iterdir()) == []  # the half upload was cleared
    check = run_app("data", "check", env=server.env)
    assert check.returncode == 0, check.stdout + check.stderr
