"""An upload's bytes arrive whole however the packets split them (`app.server.protocol`).

A ``Content-Length`` body bypasses h11 once h11 has handed out the head and any bytes that
came with it, and the upload routes let the protocol read up to a batch ahead of the
application. Each test splits bodies at many positions (the head's end, the multipart
boundaries, across the read-ahead) and compares the stored file's SHA-256 with the sent one.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time

import httpx

from app.testing import LiveServer

_WAIT = 30.0
_BOUNDARY = b"SPLITBOUNDARY"


def _session(server: LiveServer) -> str:
    response = httpx.post(f"{server.url}/sessions", json={}, headers=server.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _head(server: LiveServer, line: str, length: int, extra: str = "") -> bytes:
    headers = "".join(f"{k}: {v}\r\n" for k, v in server.headers.items())
    return (
        f"{line} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {length}\r\n{extra}"
        "Connection: close\r\n\r\n"
    ).encode()


def _send_in_pieces(server: LiveServer, request: bytes, cuts: list[int]) -> int:
    """Send ``request`` cut at ``cuts``, each piece its own packet; return the status."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=_WAIT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = 0
        for cut in [*cuts, len(request)]:
            sock.sendall(request[start:cut])
            start = cut
            time.sleep(0.002)  # let the server read this piece on its own (not a bound)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def _stored(server: LiveServer, session_id: str) -> dict[str, tuple[int, str]]:
    listing = httpx.get(f"{server.url}/sessions/{session_id}/files", headers=server.headers)
    return {f["name"]: (f["size"], f["sha256"]) for f in listing.json()["items"]}


def test_a_put_body_cut_anywhere_arrives_whole(app_live_server: LiveServer) -> None:
    server = app_live_server
    session_id = _session(server)
    # Over a batch (1 MiB), so reading pauses at the read-ahead and resumes.
    body = os.urandom(3 * 2**20 + 12_345)
    sent = {}
    head_len = len(_head(server, f"PUT /sessions/{session_id}/files/f-00.bin", len(body)))
    cuts_of = {
        "f-00.bin": [],
        "f-01.bin": [head_len - 1],
        "f-02.bin": [head_len],
        "f-03.bin": [head_len + 1],
        "f-04.bin": [head_len - 3, head_len + 2, head_len + 700_000],
        "f-05.bin": [head_len + 2**20 - 1, head_len + 2**20, head_len + 2**20 + 1],
        "f-06.bin": list(range(head_len - 5, len(body) + head_len, 200_003)),
    }
    for name, cuts in cuts_of.items():
        request = _head(server, f"PUT /sessions/{session_id}/files/{name}", len(body)) + body
        assert _send_in_pieces(server, request, cuts) == 201
        sent[name] = (len(body), hashlib.sha256(body).hexdigest())
    assert _stored(server, session_id) == sent


def test_a_multipart_body_cut_at_every_position_around_its_boundaries_arrives_whole(
    app_live_server: LiveServer,
) -> None:
    server = app_live_server
    content = os.urandom(5_000) + b"\r\n--" + _BOUNDARY[:-1] + os.urandom(3_000)  # near-miss
    extra = f"Content-Type: multipart/form-data; boundary={_BOUNDARY.decode()}\r\n"
    for region in ("opening", "closing"):
        session_id = _session(server)
        sent = {}
        part_head = (
            b"--" + _BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; '
            b'filename="%s"\r\nContent-Type: application/octet-stream\r\n\r\n'
        )
        tail = b"\r\n--" + _BOUNDARY + b"--\r\n"
        span = len(part_head) + 8 if region == "opening" else len(tail) + 8
        for offset in range(span):
            name = f"{region}-{offset:03d}.bin"
            body = (part_head % name.encode()) + content + tail
            head = _head(server, f"POST /sessions/{session_id}/files", len(body), extra)
            if region == "opening":
                cut = len(head) + offset
            else:
                cut = len(head) + len(body) - len(tail) - 4 + offset
            assert _send_in_pieces(server, head + body, [cut]) == 201, name
            sent[name] = (len(content), hashlib.sha256(content).hexdigest())
        assert _stored(server, session_id) == sent
