"""Red team over HTTP, round two: framing, methods, paths and bodies a clumsy or hostile client
sends to a real ``app serve`` (one server for the module; each test works in a session of its
own, or on routes that change nothing).

The server's waits are short here (``request_idle_seconds`` 0.5 s, ``request_seconds`` 1 s) so
that a bound that holds shows within a second; a bound that does not hold leaves the
connection open until the socket's own timeout (`live_http.WAIT`) fails the test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest
from live_http import WAIT, Answers, a_session, connect, head_of
from redteam_s19_http import one_server

from app.testing import LiveServer

LIMIT = 100


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = {
        "APP_REQUEST_IDLE_SECONDS": "0.5",
        "APP_REQUEST_SECONDS": "1",
        "APP_MAX_UPLOAD_BYTES": str(LIMIT),
    }
    with one_server(tmp_path_factory, **settings) as live:
        yield live


@pytest.fixture(scope="module")
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=server.headers) as client:
        yield client


def _file(http: httpx.Client, session_id: str, name: str) -> bytes | None:
    got = http.get(f"/sessions/{session_id}/files/{name}")
    return got.content if got.status_code == 200 else None


# --- a body the server refused before reading it ----------------------------------------------


def test_a_refused_upload_whose_body_trickles_is_disconnected(server: LiveServer) -> None:
    # A 413 answered from the declared length, then a byte every 0.2 s: each byte cancelled
    # the keep-alive timer, and nothing else bounded the reading of a body the server had
    # refused: it held the connection for as long as the client went on. It is now held to
    # `request_idle_seconds` between bytes and `request_seconds` in all, as a body is.
    line = f"PUT /sessions/{a_session(server)}/files/big.bin"
    with connect(server) as sock:
        sock.sendall(head_of(server, line, "Content-Length: 1000000000\r\n"))
        assert Answers(sock).next()[0] == 413
        sock.settimeout(0.2)
        gone = False
        for _ in range(int(WAIT / 0.2)):
            try:
                sock.sendall(b"x")
                gone = sock.recv(100) == b""
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                gone = True
            if gone:
                break
        assert gone, "the server still reads the refused body"


def test_a_refused_body_is_read_past_never_as_a_request_then_the_connection_idles_out(
    server: LiveServer, http: httpx.Client
) -> None:
    # Its bytes spell a whole request: they are dropped as the body they are declared to be,
    # and the request pipelined after them is the next one answered (held). But once such a
    # body had come, with no request after it, the connection waited for one for ever: no
    # keep-alive timer was armed again. It is now.
    session_id = a_session(server)
    smuggled = head_of(server, f"DELETE /sessions/{session_id}")
    body = smuggled.ljust(LIMIT + 50, b" ")
    head = head_of(
        server, f"PUT /sessions/{session_id}/files/big.bin", f"Content-Length: {len(body)}\r\n"
    )
    with connect(server) as sock:
        sock.sendall(head)
        answers = Answers(sock)
        assert answers.next()[0] == 413
        sock.sendall(body + head_of(server, "GET /health"))
        assert answers.next()[0] == 200
    assert http.get(f"/sessions/{session_id}").status_code == 200
    with connect(server) as sock:
        sock.sendall(head)
        answers = Answers(sock)
        assert answers.next()[0] == 413
        sock.sendall(body)
        assert answers.rest() == b""


def test_an_upload_refused_before_its_100_continue_closes_the_connection(
    server: LiveServer,
) -> None:
    # The client waits for "100 Continue" before its body, and gets a final answer instead:
    # it may send the body or not (RFC 9110, 10.1.1). The answer did not say that the
    # connection would close, so a client that skipped the body sent its next request on it,
    # and the server read that request's first bytes as the body: the request was lost, and
    # the rest answered as a malformed one. It now says it closes, and does.
    line = "PUT /sessions/0123456789abcdef0123456789abcdef/files/a.bin"
    expect = "Content-Length: 10\r\nExpect: 100-continue\r\n"
    with connect(server) as sock:
        sock.sendall(head_of(server, line, expect))
        answers = Answers(sock)
        status, headers, _ = answers.next()
        assert (status, headers.get("connection")) == (404, "close")
        assert answers.rest() == b""


# --- framing --------------------------------------------------------------------------------


def test_a_request_with_a_length_and_a_chunked_body_is_answered_then_closed(
    server: LiveServer, http: httpx.Client
) -> None:
    # RFC 9112, 6.3: the chunked coding frames the body, and the server MUST close the
    # connection after answering, since a proxy before it may have framed the body by its
    # Content-Length and sent what follows as a request of another client. It stayed open.
    session_id = a_session(server)
    line = f"PUT /sessions/{session_id}/files/both.bin"
    framing = "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"
    with connect(server) as sock:
        sock.sendall(head_of(server, line, framing) + b"5\r\nhello\r\n0\r\n\r\n")
        answers = Answers(sock)
        status, headers, _ = answers.next()
        assert (status, headers.get("connection")) == (201, "close")
        sock.sendall(head_of(server, "GET /health"))
        assert answers.rest() == b""
    assert _file(http, session_id, "both.bin") == b"hello"


@pytest.mark.parametrize(
    "framing",
    [
        "Content-Length: 3\r\nContent-Length: 5\r\n",
        "Content-Length: -5\r\n",
        "Content-Length: +5\r\n",
        "Content-Length: 99999999999999999999999999\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
    ],
)
def test_a_body_framed_two_ways_or_not_at_all_is_a_400_problem_and_closes(
    server: LiveServer, http: httpx.Client, framing: str
) -> None:
    session_id = a_session(server)
    line = f"PUT /sessions/{session_id}/files/framed.bin"
    with connect(server) as sock:
        sock.sendall(head_of(server, line, framing) + b"hello")
        answers = Answers(sock)
        status, headers, body = answers.next()
        assert (status, headers["connection"]) == (400, "close"), body
        assert b'"code": "bad_request"' in body and b"framing" in body
        assert answers.rest() == b""
    assert _file(http, session_id, "framed.bin") is None


def test_chunk_extensions_and_trailers_are_read_past(
    server: LiveServer, http: httpx.Client
) -> None:
    session_id = a_session(server)
    line = f"PUT /sessions/{session_id}/files/ext.bin"
    chunks = b"3;name=value\r\nhel\r\n2\r\nlo\r\n0\r\nX-Trailer: 1\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(head_of(server, line, "Transfer-Encoding: chunked\r\n") + chunks)
        assert Answers(sock).next()[0] == 201
    assert _file(http, session_id, "ext.bin") == b"hello"


# --- methods and paths ----------------------------------------------------------------------


def test_head_answers_every_get_route_with_its_headers_and_no_body(
    server: LiveServer, http: httpx.Client
) -> None:
    # RFC 9110, 9.1: a server that has GET has HEAD. Only a file's HEAD was routed; on the
    # others a monitor's `HEAD /health` or `curl -I` got 405, whose Allow did not list HEAD.
    session_id = a_session(server)
    assert http.put(f"/sessions/{session_id}/files/a.txt", content=b"abc").status_code == 201
    paths = [
        "/health",
        "/sessions?limit=1",
        f"/sessions/{session_id}",
        f"/sessions/{session_id}/files",
        f"/sessions/{session_id}/files/a.txt",
        "/openapi.json",
        "/docs",
        f"/sessions/{session_id}/files/missing.txt",
        "/no-such-route",
    ]
    for path in paths:
        got, head = http.get(path), http.head(path)
        assert head.status_code == got.status_code, path
        assert head.content == b"", path
        assert {**head.headers, "date": ""} == {**got.headers, "date": ""}, path
    refused = http.post("/health")
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET, HEAD"
    unauthorised = httpx.head(f"{server.url}/sessions/{session_id}")
    assert unauthorised.status_code == 401


def test_a_trailing_slash_is_a_404_problem_never_a_redirect_to_the_host_it_names(
    server: LiveServer,
) -> None:
    # Starlette redirected `/sessions/` and `/sessions/{id}/` (307, no body, no token needed)
    # to the host the request's Host header named: an open redirect for anyone who can get a
    # link followed, and the only answer of the API that was not a problem document.
    session_id = a_session(server)
    for line in (f"GET /sessions/{session_id}/", "POST /sessions/"):
        with connect(server) as sock:
            sock.sendall(
                f"{line} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n".encode()
            )
            status, headers, body = Answers(sock).next()
        assert status == 404, (line, headers)
        assert "location" not in headers
        assert headers["content-type"] == "application/problem+json"
        path = line.split()[1]
        assert f"no route {path}; without the trailing slash: {path.rstrip('/')}".encode() in body


# --- bodies ---------------------------------------------------------------------------------


def test_a_json_key_given_twice_is_422_and_creates_nothing(
    server: LiveServer, http: httpx.Client
) -> None:
    # Python's json keeps the last of two equal keys; a proxy or a validator in front may
    # read the first (RFC 8259, 4: behaviour is unpredictable). The body is strict JSON.
    before = http.get("/sessions?limit=1").json()["total"]
    for body in (b'{"title": "a", "title": "b"}', b'{"metadata": {"k": 1, "k": {"x": 2}}}'):
        refused = http.post("/sessions", content=body, headers={"content-type": "application/json"})
        assert refused.status_code == 422, refused.text
        assert "appears twice in one object" in refused.json()["message"]
    assert http.get("/sessions?limit=1").json()["total"] == before


@pytest.mark.parametrize(
    "disposition",
    [
        b'form-data; name="file"; filename="shown.txt"; filename="stored.txt"',
        b'form-data; name="file"; filename="shown.txt"; filename*=UTF-8\'\'stored.txt',
        b"form-data; name=\"file\"; filename*=UTF-8''stored.txt",
        (
            b'form-data; name="file"; filename="shown.txt"\r\n'
            b'Content-Disposition: form-data; name="file"; filename="stored.txt"'
        ),
    ],
)
def test_a_multipart_part_that_names_its_file_twice_is_400_and_stores_nothing(
    http: httpx.Client, server: LiveServer, disposition: bytes
) -> None:
    # python-multipart kept the last `filename` (and the last Content-Disposition), and took
    # no notice of `filename*`: a proxy or a scanner that read the first name checked another
    # file than the one stored. RFC 7578, 4.2 forbids `filename*` in a form.
    session_id = a_session(server)
    body = b"--B\r\nContent-Disposition: " + disposition + b"\r\n\r\nhello\r\n--B--\r\n"
    refused = http.post(
        f"/sessions/{session_id}/files",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=B"},
    )
    assert refused.status_code == 400, refused.text
    message = refused.json()["message"]
    assert "more than once" in message or "filename*=, which RFC 7578" in message, message
    assert http.get(f"/sessions/{session_id}/files").json()["items"] == []


# --- preconditions ----------------------------------------------------------------------------


def test_a_conditional_replace_or_delete_is_done_only_at_the_version_it_names(
    server: LiveServer, http: httpx.Client
) -> None:
    # The server never evaluated If-Match: a client that sent the ETag it had read, to
    # replace only that version, silently replaced whatever another client had put there
    # meanwhile (RFC 9110, 13.1.1: an origin server MUST evaluate it). It is evaluated now
    # (races: tests/test_s22_preconditions.py); a date is still refused, never ignored.
    session_id = a_session(server)
    url = f"/sessions/{session_id}/files/doc.txt"
    assert http.put(url, content=b"first").status_code == 201
    old = http.head(url).headers["etag"]
    assert http.put(url, content=b"theirs").status_code == 200
    for method, headers, status in [
        ("PUT", {"If-Match": old}, 412),
        ("PUT", {"If-Unmodified-Since": "Wed, 21 Oct 2015 07:28:00 GMT"}, 400),
        ("DELETE", {"If-Match": old}, 412),
    ]:
        refused = http.request(
            method, url, content=b"mine" if method == "PUT" else None, headers=headers
        )
        assert refused.status_code == status, (method, headers, refused.text)
        message = refused.json()["message"]
        assert "nothing was changed" in message and "If-Match" in message, message
    assert _file(http, session_id, "doc.txt") == b"theirs"
    current = '"' + hashlib.sha256(b"theirs").hexdigest() + '"'
    assert http.put(url, content=b"mine", headers={"If-Match": current}).status_code == 200
    assert _file(http, session_id, "doc.txt") == b"mine"


def test_if_none_match_star_creates_a_file_and_never_replaces_one(
    server: LiveServer, http: httpx.Client
) -> None:
    session_id = a_session(server)
    url = f"/sessions/{session_id}/files/once.txt"
    created = http.put(url, content=b"first", headers={"If-None-Match": "*"})
    assert created.status_code == 201, created.text
    refused = http.put(url, content=b"second", headers={"If-None-Match": "*"})
    assert refused.status_code == 412, refused.text
    assert refused.json()["code"] == "precondition_failed"
    assert "already has a file 'once.txt'" in refused.json()["message"]
    assert _file(http, session_id, "once.txt") == b"first"
