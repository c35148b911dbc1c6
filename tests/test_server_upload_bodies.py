"""An upload's bytes arrive whole however the packets split them (`app.server.protocol`).

A ``Content-Length`` body bypasses h11 once h11 has handed out the head and any bytes that
came with it, and the upload routes let the protocol read up to a batch ahead of the
application. Each test splits bodies at many positions (the head's end, the multipart
boundaries, across the read-ahead) and compares the stored file's SHA-256 with the sent one.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import time

import httpx
import pytest
from live_http import a_session

from app.server.multipart import occurs
from app.testing import LiveServer

_WAIT = 30.0
_BOUNDARY = b"SPLITBOUNDARY"


def _head(server: LiveServer, line: str, length: int, extra: str = "") -> bytes:
    headers = "".join(f"{k}: {v}\r\n" for k, v in server.headers.items())
    return (
        f"{line} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {length}\r\n{extra}"
        "Connection: close\r\n\r\n"
    ).encode()


def _send_in_pieces(server: LiveServer, request: bytes, cuts: list[int]) -> tuple[int, bytes]:
    """Send ``request`` cut at ``cuts``, each piece its own packet; the status and the body."""
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
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split(b" ", 2)[1]), rest.partition(b"\r\n\r\n")[2]


def _stored(server: LiveServer, session_id: str) -> dict[str, tuple[int, str]]:
    listing = httpx.get(f"{server.url}/sessions/{session_id}/files", headers=server.headers)
    return {f["name"]: (f["size"], f["sha256"]) for f in listing.json()["items"]}


def test_a_put_body_cut_anywhere_arrives_whole(forked_server: LiveServer) -> None:
    server = forked_server
    session_id = a_session(server)
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
        assert _send_in_pieces(server, request, cuts)[0] == 201
        sent[name] = (len(body), hashlib.sha256(body).hexdigest())
    assert _stored(server, session_id) == sent


def test_a_multipart_body_cut_at_every_position_around_its_boundaries_arrives_whole(
    forked_server: LiveServer,
) -> None:
    server = forked_server
    content = os.urandom(5_000) + b"\r\n--" + _BOUNDARY[:-1] + os.urandom(3_000)  # near-miss
    extra = f"Content-Type: multipart/form-data; boundary={_BOUNDARY.decode()}\r\n"
    for region in ("opening", "closing"):
        session_id = a_session(server)
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
            assert _send_in_pieces(server, head + body, [cut])[0] == 201, name
            sent[name] = (len(content), hashlib.sha256(content).hexdigest())
        assert _stored(server, session_id) == sent


# --- a streamed file part skips the parser between delimiters (`MultipartSink._content_only`) --
#
# A chunk inside the ``file`` part that holds no delimiter, and does not end in the beginning
# of one, is queued without python-multipart. These bodies arrive in packets cut where that
# decision matters: after part of a delimiter, through the closing delimiter, before a
# delimiter inside a packet.

_STREAM_BOUNDARY = b"STREAMBOUNDARY"
_DELIMITER = b"\r\n--" + _STREAM_BOUNDARY
_CLOSING = _DELIMITER + b"--\r\n"


def _part_head(field: bytes, filename: bytes | None) -> bytes:
    named = b'; filename="%s"' % filename if filename is not None else b""
    return b'Content-Disposition: form-data; name="%s"%s\r\n\r\n' % (field, named)


def _first_file_part(filename: bytes) -> bytes:
    """The opening delimiter and the head of a ``file`` part: what its content follows."""
    return b"--" + _STREAM_BOUNDARY + b"\r\n" + _part_head(b"file", filename)


def _post_in_pieces(
    server: LiveServer, session_id: str, body: bytes, cuts: list[int]
) -> tuple[int, bytes]:
    """POST ``body`` as multipart, cut at ``cuts`` (offsets in the body); status and body."""
    content_type = f"Content-Type: multipart/form-data; boundary={_STREAM_BOUNDARY.decode()}\r\n"
    head = _head(server, f"POST /sessions/{session_id}/files", len(body), content_type)
    return _send_in_pieces(server, head + body, [len(head) + cut for cut in cuts])


def _digest(content: bytes) -> tuple[int, str]:
    return len(content), hashlib.sha256(content).hexdigest()


@pytest.mark.parametrize(
    ("needle", "haystack"),
    [
        (_DELIMITER, b""),
        (_DELIMITER, _DELIMITER[:-1]),
        (_DELIMITER, _DELIMITER),
        (_DELIMITER, b"\x00" * 1000 + _DELIMITER),
        (_DELIMITER, _DELIMITER + b"\x00" * 1000),
        (_DELIMITER, b"x" * 5000 + _DELIMITER[:-1] + b"x" + _DELIMITER[1:]),
        (b"\x00\r\x00", b"a\x00\r\x00b"),
        (b"\x00\r\x00", b"a\x00\r\x01b"),
    ],
)
def test_the_delimiter_search_agrees_with_bytes_find(needle: bytes, haystack: bytes) -> None:
    assert occurs(needle, haystack) is (haystack.find(needle) != -1)


def test_a_file_part_whose_packets_end_in_part_of_the_delimiter_arrives_whole(
    forked_server: LiveServer,
) -> None:
    server = forked_server
    session_id = a_session(server)
    # Each near-miss ends a packet: the start of a delimiter whose next byte is not its own.
    # The packet after it holds neither a delimiter nor the start of one, but must still go
    # through the parser, which holds the near-miss's bytes until it knows what they are.
    content, cuts_in_content = os.urandom(70_000), []
    for k in range(1, len(_DELIMITER)):
        content += _DELIMITER[:k]
        cuts_in_content.append(len(content))
        content += bytes([_DELIMITER[k] ^ 1]) + os.urandom(20_000) + b"x" * 16
        cuts_in_content.append(len(content))
    head = _first_file_part(b"near.bin")
    body = head + content + _CLOSING
    status, answer = _post_in_pieces(
        server, session_id, body, [len(head) + cut for cut in cuts_in_content]
    )
    assert status == 201, answer
    assert _stored(server, session_id) == {"near.bin": _digest(content)}


def test_a_closing_delimiter_cut_at_every_position_ends_a_streamed_file(
    forked_server: LiveServer,
) -> None:
    server = forked_server
    session_id = a_session(server)
    content = os.urandom(100_000)
    sent = {}
    for offset in range(len(_CLOSING) + 1):
        name = f"closing-{offset:02d}.bin"
        head = _first_file_part(name.encode())
        body = head + content + _CLOSING
        # A packet of content alone before the cut, so the parser is skipped up to it.
        cuts = [len(head) + 80_000, len(head) + len(content) + offset]
        status, answer = _post_in_pieces(server, session_id, body, cuts)
        assert status == 201, (name, answer)
        sent[name] = _digest(content)
    assert _stored(server, session_id) == sent


def test_a_delimiter_inside_a_packet_ends_the_file_part_there(
    forked_server: LiveServer,
) -> None:
    server = forked_server
    session_id = a_session(server)
    content = os.urandom(200_000)
    head = _first_file_part(b"first.bin")
    other = _DELIMITER + b"\r\n" + _part_head(b"note", None) + b"x" * 1_000
    body = head + content + other + _CLOSING
    # The delimiter is 50,000 bytes into a packet that does not end in a delimiter's CR, after
    # two packets of content alone; the closing delimiter comes in a packet of its own.
    cuts = [len(head) + 50_000, len(head) + 150_000, len(body) - len(_CLOSING)]
    status, answer = _post_in_pieces(server, session_id, body, cuts)
    assert status == 201, answer
    assert _stored(server, session_id) == {"first.bin": _digest(content)}


def test_a_second_file_part_after_a_streamed_one_is_400_and_stores_nothing(
    forked_server: LiveServer,
) -> None:
    server = forked_server
    session_id = a_session(server)
    head = _first_file_part(b"one.bin")
    second = _DELIMITER + b"\r\n" + _part_head(b"file", b"two.bin") + b"2"
    # An epilogue after the closing delimiter (RFC 2046 allows one): the last packet, which
    # holds both delimiters after content alone, does not end in a delimiter's CR.
    body = head + os.urandom(200_000) + second + _CLOSING + b"epilogue"
    status, answer = _post_in_pieces(server, session_id, body, [len(head) + 100_000])
    assert status == 400, answer
    assert b"more than one form field 'file'" in answer
    assert _stored(server, session_id) == {}


def test_random_file_parts_cut_at_random_arrive_whole(forked_server: LiveServer) -> None:
    # Differential, seeded: contents strewn with beginnings of the delimiter (each followed by
    # a byte that breaks it) and lone CRs, sometimes followed by another field, cut into
    # packets at random, at the strewn bytes and through the part's real delimiter. The
    # parser decides where the part ends; skipping it must never change a stored byte.
    server = forked_server
    session_id = a_session(server)
    rng = random.Random(20261202)
    sent = {}
    for case in range(40):
        content, marks = bytearray(rng.randbytes(rng.randint(0, 90_000))), []
        for _ in range(rng.randint(0, 12)):
            at = rng.randint(0, len(content))
            k = rng.randint(1, len(_DELIMITER) - 1)
            strewn = _DELIMITER[:k] + bytes([_DELIMITER[k] ^ 0x40]) if rng.random() < 0.8 else b"\r"
            content[at:at] = strewn
            # A packet that ends in the beginning (the parser holds it) or just after it.
            marks.append(at + rng.choice((len(strewn) - 1, len(strewn))))
        name = f"random-{case:02d}.bin"
        head = _first_file_part(name.encode())
        other = b""
        if rng.random() < 0.3:
            other = _DELIMITER + b"\r\n" + _part_head(b"note", None) + rng.randbytes(500)
        body = head + bytes(content) + other + _CLOSING
        end = len(head) + len(content)  # where the part's real delimiter begins
        cuts = {len(head) + m for m in marks if m} | {
            rng.randint(1, len(body) - 1) for _ in range(rng.randint(0, 6))
        }
        cuts.add(end + rng.randint(1, len(_DELIMITER) - 1))  # through the real delimiter
        status, answer = _post_in_pieces(server, session_id, body, sorted(cuts))
        assert status == 201, (name, answer)
        sent[name] = _digest(bytes(content))
    assert _stored(server, session_id) == sent


def test_a_streamed_file_part_that_never_closes_is_400_and_stores_nothing(
    forked_server: LiveServer,
) -> None:
    # The last packets hold content alone (skipped past the parser), then the beginning of a
    # delimiter that the body ends inside: the parser, not the skip, must see the body end.
    server = forked_server
    session_id = a_session(server)
    head = _first_file_part(b"open.bin")
    for tail in (b"", _DELIMITER[:1], _DELIMITER[:-1], _DELIMITER, _DELIMITER + b"-"):
        body = head + os.urandom(200_000) + tail
        status, answer = _post_in_pieces(server, session_id, body, [len(head) + 100_000])
        assert status == 400, (tail, answer)
        assert b"the multipart body ended before its closing boundary" in answer, answer
    assert _stored(server, session_id) == {}
