"""Red team 24: the newest code (the speed work's caches, /health in the protocol, group commit),
tried against a real `app serve` on 127.0.0.1, real files and real commands.

The records a writer keeps in memory were keyed on ``records/``'s device and inode. ext4 gives
a freed inode number to the next file or directory made: a session brought back by hand from a
copy (``rm -rf`` it, ``cp -a`` the copy in), which red team 23's fix was for, got a
``records/`` with the very inode of the one removed, and the server went on answering the files
of the directory that was gone. ``records/``'s ctime, which no process can set and which every
entry added, removed or renamed there changes, is now part of that identity.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from live_http import WAIT, address

from app.server.protocol import close_within

if TYPE_CHECKING:
    from collections.abc import Callable

    from app.config import Config
    from app.store import Store
    from app.testing import LiveServer


def _names(server: LiveServer, sid: str) -> list[str]:
    got = httpx.get(f"{server.url}/sessions/{sid}", headers=server.headers)
    assert got.status_code == 200, got.text
    return [f["name"] for f in got.json()["files"]]


def _page_names(server: LiveServer, sid: str) -> list[str]:
    page = httpx.get(f"{server.url}/sessions?limit=100", headers=server.headers)
    assert page.status_code == 200, page.text
    (item,) = [s for s in page.json()["items"] if s["id"] == sid]
    return [f["name"] for f in item["files"]]


def _put(server: LiveServer, sid: str, name: str, data: bytes) -> None:
    url = f"{server.url}/sessions/{sid}/files/{name}"
    put = httpx.put(url, content=data, headers=server.headers)
    assert put.status_code == 201, put.text


def _run(*command: str) -> None:
    subprocess.run(command, check=True)  # rm and cp, as an operator types them


def _copy_back(backup: Path, target: Path, records: Path, inode: int) -> bool:
    """``rm -rf target && cp -a backup target``; whether ``records`` got ``inode`` again.

    ext4 hands the freed number out again at once, unless a journal commit came between the
    two; tried a few times so that the test meets the reuse it is about.
    """
    for _ in range(10):
        _run("rm", "-rf", str(target))
        _run("cp", "-a", str(backup), str(target))
        if records.stat().st_ino == inode:
            return True
    return False


def test_a_session_copied_back_by_hand_onto_a_reused_inode_is_answered_as_copied(
    app_live_server: LiveServer, tmp_path: Path
) -> None:
    server = app_live_server
    assert server.data_root is not None
    sid = httpx.post(f"{server.url}/sessions", json={}, headers=server.headers).json()["id"]
    _put(server, sid, "a.txt", b"a")
    directory = server.data_root / "sessions" / sid
    backup = tmp_path / "backup"
    _run("cp", "-a", str(directory), str(backup))
    _put(server, sid, "b.txt", b"b")
    assert _names(server, sid) == ["a.txt", "b.txt"]  # kept in memory now
    assert _page_names(server, sid) == ["a.txt", "b.txt"]
    inode = (directory / "records").stat().st_ino

    # The operator brings the session back from the copy while the server holds the root
    # (not what the docs advise, and what red team 23 made hold for `mv` aside).
    reused = _copy_back(backup, directory, directory / "records", inode)
    assert _names(server, sid) == ["a.txt"], f"records/ inode reused: {reused}"
    assert _page_names(server, sid) == ["a.txt"]
    gone = httpx.get(f"{server.url}/sessions/{sid}/files/b.txt", headers=server.headers)
    assert gone.status_code == 404, gone.text

    # records/ alone, its inode reused and its mtime kept by cp -a; session.json untouched.
    _put(server, sid, "c.txt", b"c")
    assert _names(server, sid) == ["a.txt", "c.txt"]
    records = directory / "records"
    inode = records.stat().st_ino
    reused = _copy_back(backup / "records", records, records, inode)
    assert _names(server, sid) == ["a.txt"], f"records/ inode reused: {reused}"
    assert _page_names(server, sid) == ["a.txt"]

    # A record removed by hand (and one added back by a rename, as an editor saves).
    _put(server, sid, "d.txt", b"d")
    assert _names(server, sid) == ["a.txt", "d.txt"]
    aside = tmp_path / "d-record"
    os.rename(records / "d.txt", aside)
    assert _names(server, sid) == ["a.txt"]
    os.rename(aside, records / "d.txt")
    assert _names(server, sid) == ["a.txt", "d.txt"]


def test_answers_kept_encoded_are_not_reused_for_records_copied_onto_a_reused_inode(
    app_store: Store, app_config: Config, tmp_path: Path
) -> None:
    # The encoded answers were kept under records/'s device, inode and mtime: `cp -a` keeps
    # the mtime, and ext4 the inode. In process, with answers kept at once (not after 2 s).
    app_store.sessions.meta.settled_ns = 0
    sid = app_store.create_session("kept", {})["id"]
    app_store.put_file(sid, "a.txt", b"a")
    assert app_config.data_root is not None
    records = app_config.data_root / "sessions" / sid / "records"
    backup = tmp_path / "records-copy"
    _run("cp", "-a", str(records), str(backup))
    app_store.put_file(sid, "b.txt", b"b")
    os.utime(records, ns=(backup.stat().st_atime_ns, backup.stat().st_mtime_ns))
    for _ in range(2):  # the second is answered from what was kept
        assert [f["name"] for f in json.loads(app_store.get_session_json(sid))["files"]] == [
            "a.txt",
            "b.txt",
        ]
    reused = _copy_back(backup, records, records, records.stat().st_ino)
    got = json.loads(app_store.get_session_json(sid))
    assert [f["name"] for f in got["files"]] == ["a.txt"], f"records/ inode reused: {reused}"


def _server_side(server: LiveServer, client: socket.socket) -> list[str]:
    """The server's end of ``client``'s connection as /proc/net/tcp lists it (its state)."""
    port = int(server.url.rsplit(":", 1)[1])
    local = f"0100007F:{port:04X}"
    remote = f"0100007F:{client.getsockname()[1]:04X}"
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return [row[3] for row in rows if row[1] == local and row[2] == remote]


@pytest.mark.parametrize("tight", [{"APP_REQUEST_IDLE_SECONDS": "0.5"}], indirect=True)
def test_a_client_that_reads_nothing_of_its_answer_loses_its_connection_not_only_its_request(
    tight: LiveServer,
) -> None:
    # A client that reads nothing of its answer is given up after request_idle_seconds, and the
    # log says "closing its connection". The close waited for the bytes it had been sent to go
    # out first, which a client that reads nothing never lets happen: the connection, its
    # descriptor and the megabytes the kernel held for it stayed, for good (tried by hand with
    # 2,000 pipelined GET /health too: the same). Enough such clients run the server out of
    # descriptors. The connection is now dropped at once.
    sid = httpx.post(f"{tight.url}/sessions", json={}, headers=tight.headers).json()["id"]
    _put(tight, sid, "big.bin", b"b" * (16 * 2**20))  # more than both sockets' buffers
    token = "".join(f"{k}: {v}\r\n" for k, v in tight.headers.items())
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(WAIT)
        sock.connect(address(tight))
        sock.sendall(
            f"GET /sessions/{sid}/files/big.bin HTTP/1.1\r\nHost: x\r\n{token}\r\n".encode()
        )
        deadline = time.monotonic() + WAIT  # bounds a broken server's wait; measures nothing
        while "read nothing of the response" not in tight.log.read_text(errors="replace"):
            assert time.monotonic() < deadline, (
                "the server kept waiting for a client that reads nothing"
            )
            time.sleep(0.05)
        while _server_side(tight, sock):
            assert time.monotonic() < deadline, (
                f"given up on, but its connection is still held: {_server_side(tight, sock)}"
            )
            time.sleep(0.05)
    assert httpx.get(f"{tight.url}/health").status_code == 200


class _Ends(asyncio.Protocol):
    def __init__(self) -> None:
        self.lost = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


async def _read_after_close(reader: Callable[[socket.socket], int], buffer: int) -> int:
    """A real asyncio transport on TCP closed (`close_within`) with 6 MiB its peer has not
    read, the peer's socket (receive buffer ``buffer``) then read by ``reader``; how many
    bytes the peer got in all."""
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        theirs = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    with theirs:
        transport, ends = await loop.create_connection(_Ends, sock=ours)
        transport.set_write_buffer_limits(high=2**30)  # hold whatever the kernel does not take
        transport.write(b"x" * 6 * 2**20)
        await asyncio.sleep(0)
        assert transport.get_write_buffer_size() > 0  # the kernel took only part of it
        close_within(transport, 0.2)
        got = await loop.run_in_executor(None, reader, theirs)
        await asyncio.wait_for(ends.lost, WAIT)  # bounds a broken close; measures nothing
        return got + _read_to_the_end(theirs, pause=0)


def _read_nothing(sock: socket.socket) -> int:
    return 0


def _read_to_the_end(sock: socket.socket, pause: float = 0.02) -> int:
    sock.settimeout(WAIT)
    got = 0
    try:
        while chunk := sock.recv(256 * 1024):
            got += len(chunk)
            time.sleep(pause)  # well within 0.2 s between reads: it keeps reading
    except ConnectionResetError:
        pass
    return got


def test_a_close_with_bytes_a_client_never_reads_drops_the_connection_and_not_a_slow_one() -> None:
    # What a close waits for, a client that reads nothing never lets happen: the end of an
    # answer handed out whole (no SlowReader) held its connection for good, after a
    # "Connection: close" answer or at the keep-alive wait's end. Tried on a live server with
    # downloads of 2.5 to 3.1 MB that their clients did not read: two of 21 sizes stayed
    # ESTABLISHED. On a socket pair here, with a real event loop's transport.
    assert asyncio.run(_read_after_close(_read_nothing, 4096)) < 6 * 2**20  # dropped
    assert asyncio.run(_read_after_close(_read_to_the_end, 2**18)) == 6 * 2**20
