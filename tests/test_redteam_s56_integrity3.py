"""Red team 56 on integrity, third round: a chunked upload whose framing fails after its head.

What broke:

* A chunked ``PUT`` (or multipart ``POST``) whose trailer fields, or one chunk's size line
  with its extensions, outgrew ``max_header_bytes``, or whose chunk framing was malformed
  (a size that is not hexadecimal), was refused by h11 after the application had begun to
  read the body. Nothing was stored (rightly), but the answer was the one for a request's
  head: a 431 "its request line and headers are larger than 32768 bytes ... Send shorter
  headers", to a client whose headers were a few hundred bytes, or a 400 "malformed HTTP
  request" that did not say which request nor whether the upload was kept. The refusal now
  names the request (method and path), the part of the body at fault (the trailer or a chunk's
  size line, the chunk framing), that nothing of the body was kept, and what resolves it
  (`app.server.protocol`'s ``send_400_response``).
* A chunked upload refused at once (413, over ``max_upload_bytes``) whose rest, read past the
  refusal, was malformed got a second answer after the 413: the 400 "malformed HTTP request",
  an answer to no request the client sent. It now gets the one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from live_http import Answers, a_session, connect, head_of
from redteam_s19_http import one_server

from app.testing import LiveServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with one_server(
        tmp_path_factory, APP_MAX_HEADER_BYTES="4096", APP_MAX_UPLOAD_BYTES="100"
    ) as live:
        yield live


_FORM = "multipart/form-data; boundary=B"
_PART = b'--B\r\nContent-Disposition: form-data; name="file"; filename="notes.txt"\r\n\r\nabcd'
_PART_START = b"%x\r\n%s\r\n" % (len(_PART), _PART)
_LONG_LINE = ["trailer fields or a chunk's size line", "larger than 4096 bytes", "max_header_bytes"]
_LONG_TRAILER = b"".join(b"X-Note-%d: %s\r\n" % (i, b"v" * 500) for i in range(20))


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        # Neither ended: h11 bounds a line it is still waiting for the end of.
        (b"4\r\nabcd\r\n0\r\n" + _LONG_TRAILER, 431, _LONG_LINE),
        (b"4;" + b"e" * 9000, 431, _LONG_LINE),
        (b"zz\r\nabcd\r\n0\r\n\r\n", 400, ["chunked body is malformed", "framing"]),
        (_PART_START + b"zz\r\n", 400, ["chunked body is malformed", "framing"]),
    ],
    ids=["long-trailer", "long-chunk-extension", "bad-chunk-size", "multipart-bad-chunk-size"],
)
def test_a_chunked_body_refused_after_its_head_is_named_and_keeps_nothing(
    server: LiveServer, body: bytes, status: int, words: list[str]
) -> None:
    session = a_session(server)
    path = f"/sessions/{session}/files/notes.txt"
    sock = connect(server)
    with sock:
        if body.startswith(_PART_START):  # the same file by a multipart POST
            line, extra = f"POST /sessions/{session}/files", f"Content-Type: {_FORM}\r\n"
        else:
            line, extra = f"PUT {path}", ""
        sock.sendall(head_of(server, line, extra + "Transfer-Encoding: chunked\r\n"))
        # The head alone first, so that the route is reading the body when the framing fails.
        sock.sendall(body)
        answers = Answers(sock)
        got, headers, content = answers.next()
        assert answers.rest() == b""
    assert got == status, content
    assert headers["connection"] == "close"
    message = json.loads(content)["detail"]
    for word in [line, "nothing of it was kept", *words]:
        assert word in message, message
    assert "Send shorter headers" not in message
    kept = httpx.get(f"{server.url}{path}", headers=server.headers)
    assert kept.status_code == 404, kept.text


def test_an_upload_refused_before_its_malformed_rest_is_answered_once(server: LiveServer) -> None:
    session = a_session(server)
    path = f"/sessions/{session}/files/big.bin"
    sock = connect(server)
    with sock:
        head = head_of(server, f"PUT {path}", "Transfer-Encoding: chunked\r\n")
        sock.sendall(head + b"c8\r\n" + b"x" * 200 + b"\r\n")
        answers = Answers(sock)
        assert answers.next()[0] == 413
        sock.sendall(b"zz\r\n")  # the rest, read past the refusal, is malformed
        # It had a second answer, a 400 for no request the client sent.
        assert answers.rest() == b""
    kept = httpx.get(f"{server.url}{path}", headers=server.headers)
    assert kept.status_code == 404, kept.text
