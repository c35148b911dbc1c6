"""Red team 64 on integrity (branch rt-integrity64): see docs/explanation/attacks.md.

What broke: a request that takes a body but gives it no length, neither ``Content-Length``
nor ``Transfer-Encoding: chunked``. Such a request has no body (RFC 9112, 6.3), and what its
client sends after the head is read as the next request; on HTTP/1.0, whose client cannot
send chunks, a body can only be ended by closing, which RFC 1945 (7.2.2) forbids. The server
acted on the request as bodiless and acknowledged it:

- a file's ``PUT`` (an HTTP/1.0 client, a client streaming without chunks, one that sent
  ``Expect: 100-continue`` and no length) was a 201 for a file of 0 bytes, or a 200 that
  replaced the current version by 0 bytes, the bytes sent dropped without a word;
- a ``POST /sessions`` on HTTP/1.0 with its JSON was a 201 for a session without the title
  and metadata the body held.

What changed: such a request is refused before its body is read, 411 ``length_required``
(RFC 9110, 15.5.12), naming what would have been stored and the header that resolves it, and
the connection closes (what follows the head cannot be told from a request). A file's
``PUT`` and a form's ``POST`` need a length on either version; ``POST /sessions`` on HTTP/1.0
only (on HTTP/1.1, ``curl -X POST`` with no body still makes an untitled session). An
explicit ``Content-Length: 0`` stores an empty file, as before.

One real ``app serve`` for the module, raw sockets on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator

import httpx
import pytest
from click.testing import CliRunner
from faults import attached, needs_strace
from live_http import Answers, a_file, a_session, connect
from redteam_s19_http import server_and_client

from app.cli import cli
from app.config import REMOTE, Config
from app.dataroot import AUDIT_FILE, open_root
from app.store import Store
from app.testing import LiveServer

FORM = "multipart/form-data; boundary=B"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, httpx.Client]]:
    """One server for the module; each test works in sessions of its own."""
    with server_and_client(tmp_path_factory) as both:
        yield both


def _sent(server: LiveServer, line: str, extra: str = "", body: bytes = b"") -> tuple[int, dict]:
    """Send ``line``'s head (the token, ``extra`` headers), then ``body``, then end the
    sending side; the answer's status and JSON, after checking the server closed."""
    version = "HTTP/1.0" if line.endswith(" 1.0") else "HTTP/1.1"
    line = line.removesuffix(" 1.0")
    token = "".join(f"{k}: {v}\r\n" for k, v in server.headers.items())
    with connect(server) as sock:
        sock.sendall(f"{line} {version}\r\nHost: x\r\n{token}{extra}\r\n".encode() + body)
        sock.shutdown(socket.SHUT_WR)
        answers = Answers(sock)
        status, headers, content = answers.next()
        if status == 100:
            status, headers, content = answers.next()
        assert headers.get("connection", "").lower() == "close", headers
        assert answers.rest() == b""  # closed: nothing more was read as a request
    return status, json.loads(content)


def _sessions(client: httpx.Client) -> list[str]:
    return [s["id"] for s in client.get("/sessions", params={"limit": 100}).json()["items"]]


def test_a_body_without_a_length_is_refused_and_nothing_acknowledged_is_emptied(
    served: tuple[LiveServer, httpx.Client],
) -> None:
    server, client = served
    path = a_file(server, client, b"version 1")
    session = path.split("/")[2]
    before = _sessions(client)
    form = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="m.txt"\r\n\r\n'
        b"hello\r\n--B--\r\n"
    )
    refused = [
        # An HTTP/1.0 client ending its body by closing: the file was replaced by 0 bytes.
        (f"PUT {path} 1.0", "", b"version 2"),
        # HTTP/1.1 without chunks: its bytes were the "next request".
        (f"PUT {path}", "", b"version 2"),
        (f"PUT {path}", "Expect: 100-continue\r\n", b""),
        (f"PUT /sessions/{session}/files/new.txt", "", b"new bytes"),
        (f"POST /sessions/{session}/files", f"Content-Type: {FORM}\r\n", form),
        # HTTP/1.0's JSON: a session without its title and metadata.
        ("POST /sessions 1.0", "Content-Type: application/json\r\n", b'{"title": "lost?"}'),
    ]  # fmt: skip
    for line, extra, body in refused:
        status, problem = _sent(server, line, extra, body)
        assert status == 411, (line, status, problem)
        assert problem["code"] == "length_required", problem
        message = problem["message"]
        assert "neither Content-Length nor Transfer-Encoding" in message, message
        assert "Nothing was changed, and the connection is closed" in message, message
        assert "Content-Length: <its size>" in message, message
        assert "an empty body is Content-Length: 0" in message, message
    assert "0 bytes (an existing one replaced by them)" in _sent(server, *refused[0])[1]["message"]
    assert "chunked" not in _sent(server, *refused[0])[1]["message"]
    assert "Transfer-Encoding: chunked" in _sent(server, *refused[1])[1]["message"]
    assert "without the title and metadata" in _sent(server, *refused[-1])[1]["message"]

    assert client.get(path).content == b"version 1"
    listed = client.get(f"/sessions/{session}/files").json()["items"]
    assert [item["name"] for item in listed] == ["kept.txt"]
    assert _sessions(client) == before

    # What a length frames is taken as before: an explicit empty file, an HTTP/1.1 POST
    # /sessions with no body at all (curl -X POST), chunks.
    empty = f"/sessions/{a_session(server)}/files/empty.txt"
    status, entry = _sent(server, f"PUT {empty} 1.0", "Content-Length: 0\r\n")
    assert (status, entry["size"]) == (201, 0)
    status, made = _sent(server, "POST /sessions", "Connection: close\r\n")
    assert (status, made["title"]) == (201, "")
    chunked = b"9\r\nversion 3\r\n0\r\n\r\n"
    status, entry = _sent(server, f"PUT {path}", "Transfer-Encoding: chunked\r\n", chunked)
    assert (status, entry["size"]) == (200, 9)
    assert client.get(path).content == b"version 3"


@needs_strace
def test_a_repair_whose_audit_lines_fail_says_so_rather_than_the_log_lists_them(
    app_config: Config,
) -> None:
    if app_config.backend == REMOTE:
        pytest.skip("the remote backend's check says so since red team 49")
    root = app_config.data_root
    with open_root(app_config, kind="tests") as opened:
        store = Store(opened)
        session = store.create_session("kept")["id"]
        store.put_file(session, "a.txt", b"acknowledged")
    blobs = root / "sessions" / session / "blobs"
    orphan = blobs / ("0" * 32)
    orphan.write_bytes(b"never acknowledged")  # an upload killed before its commit
    (root / ".tmp" / "upload-leftover").write_bytes(b"partial")

    with attached(os.getpid(), "write:error=ENOSPC", root / AUDIT_FILE):
        result = CliRunner().invoke(cli, ["data", "check", "--repair"], catch_exceptions=False)
    # Before: "repaired 1 finding(s); the audit log lists them", which held none of its lines.
    assert "the audit log lists them" not in result.stdout, result.stdout
    assert (
        "repaired 1 finding(s); the audit log could not record them (No space left on device, "
        "at its clear-tmp line): their record is in this command's log, above"
    ) in result.stdout, result.stdout
    assert result.exit_code == 0  # the repairs were made, as on the remote backend
    assert not orphan.exists() and not (root / ".tmp" / "upload-leftover").exists()
    assert "check-repair" not in (root / AUDIT_FILE).read_text()

    # The move it made is found again, and its line written (trash-unaudited); nothing lost.
    again = CliRunner().invoke(cli, ["data", "check", "--repair"], catch_exceptions=False)
    assert "trash-unaudited" in again.stdout and "the audit log lists them" in again.stdout
    assert (blobs.parent / "records" / "a.txt").exists()
    trashed = [
        p
        for p in (root / ".trash").rglob("*")
        if p.is_file() and p.read_bytes() == b"never acknowledged"
    ]
    assert len(trashed) == 1
