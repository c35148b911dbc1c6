"""Red team 70 on the HTTP contract: requests a real ``app serve`` must answer as its routes
do, sent raw (httpx would not send them so). One server for the module; each test works in a
session of its own.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator

import httpx
import pytest
from live_http import Answers, a_session, connect, head_of
from redteam_s19_http import one_server

from app.testing import LiveServer

# What a WebSocket client (a browser's `new WebSocket(...)`) sends with its GET (RFC 6455, 4.1).
WEBSOCKET = (
    "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with one_server(tmp_path_factory) as live:
        yield live


def _answer(server: LiveServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with connect(server) as sock:
        sock.sendall(request)
        return Answers(sock).next()


def test_a_websocket_handshake_is_answered_as_the_request_it_is(server: LiveServer) -> None:
    # Found by hand, sending RFC 6455's handshake to each route: uvicorn handed it to the
    # websockets library before any check of the app. `GET /sessions` with a good token was
    # a 403 with no body, a file's DELETE a plain-text 405 with `Allow: GET`, a PUT with its
    # body a 408 saying its head had not come (the protocol's timer for a head, firing on a
    # connection it no longer read), and nothing was stored. The server speaks no WebSocket:
    # it ignores `Upgrade` (RFC 9110, 7.8) and answers each as its route does.
    session_id = a_session(server)
    files = f"/sessions/{session_id}/files"
    status, headers, body = _answer(server, head_of(server, "GET /sessions?limit=1", WEBSOCKET))
    assert (status, headers["content-type"]) == (200, "application/json"), body
    assert "items" in json.loads(body)

    put = head_of(server, f"PUT {files}/ws.txt", f"{WEBSOCKET}Content-Length: 5\r\n") + b"hello"
    status, _, body = _answer(server, put)
    assert status == 201, body
    assert httpx.get(f"{server.url}{files}/ws.txt", headers=server.headers).content == b"hello"

    status, headers, body = _answer(server, head_of(server, f"PATCH {files}/ws.txt", WEBSOCKET))
    assert (status, headers["allow"]) == (405, "DELETE, GET, HEAD, PUT"), body
    assert json.loads(body)["code"] == "method_not_allowed"

    # The token is still read first: without it, the problem every route answers.
    status, headers, body = _answer(
        server, f"GET {files} HTTP/1.1\r\nHost: x\r\n{WEBSOCKET}\r\n".encode()
    )
    assert (status, headers["content-type"]) == (401, "application/problem+json"), body
    assert json.loads(body)["code"] == "unauthorized"


def test_a_405_of_the_docs_assets_names_the_methods_they_take(server: LiveServer) -> None:
    # Found by hand, sending each method to each path: `/docs-assets/` (Swagger UI's files,
    # a mount rather than a route) answered `Allow:` empty and "allowed: .", which says the
    # path takes no method at all, where GET and HEAD serve it.
    for method in ("POST", "DELETE", "OPTIONS"):
        line = f"{method} /docs-assets/favicon.png"
        status, headers, body = _answer(server, head_of(server, line, "Content-Length: 0\r\n"))
        assert (status, headers["allow"]) == (405, "GET, HEAD"), (method, body)
        assert b"allowed: GET, HEAD." in body
    assert httpx.head(f"{server.url}/docs-assets/favicon.png").status_code == 200


def test_a_404_names_the_path_without_its_slash_only_where_that_is_a_route(
    server: LiveServer,
) -> None:
    # Found by hand: `GET /docs-assets/` answered "without the trailing slash: /docs-assets",
    # and `GET /nope/` named `/nope`, both 404 as well: a remedy that is none.
    for path in ("/docs-assets/", "/nope/", "/docs-assets/nope/"):
        status, _, body = _answer(server, head_of(server, f"GET {path}"))
        assert status == 404, body
        assert json.loads(body)["message"] == f"no route {path}; GET /docs lists the API"
    message = json.loads(_answer(server, head_of(server, "GET /sessions/"))[2])["message"]
    assert (
        message
        == "no route /sessions/; without the trailing slash: /sessions; GET /docs lists the API"
    )


def _form(*parts: bytes) -> bytes:
    body = b"".join(b"--B\r\n" + part + b"\r\n" for part in parts)
    return body + b"--B--\r\n"


_FILE = b'Content-Disposition: form-data; name="file"; filename="kept.txt"\r\n\r\nkept'


@pytest.mark.parametrize(
    ("form", "said"),
    [
        # A part with no Content-Disposition (RFC 7578, 4.2, requires one), beside the file:
        # its bytes were dropped as a text field's, and the answer a 201 for the file alone.
        (_form(b"Content-Type: text/plain\r\n\r\nlost", _FILE), "has no Content-Disposition"),
        (_form(b'Content-Disposition: attachment; name="x"\r\n\r\nlost', _FILE), "not form-data"),
        # Unquoted, `a;b.txt` was stored as `a`, where a reader of the whole value saw a;b.txt.
        (
            _form(b"Content-Disposition: form-data; name=file; filename=a;b.txt\r\n\r\nx"),
            "'b.txt' in its Content-Disposition, which is not a parameter",
        ),
    ],
)
def test_a_form_part_rfc_7578_does_not_allow_is_refused_and_nothing_stored(
    server: LiveServer, form: bytes, said: str
) -> None:
    session_id = a_session(server)
    line = f"POST /sessions/{session_id}/files"
    head = f"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {len(form)}\r\n"
    status, _, body = _answer(server, head_of(server, line, head) + form)
    assert status == 400, body
    problem = json.loads(body)
    assert problem["code"] == "bad_request" and said in problem["message"], problem
    assert "Nothing was stored" in problem["message"]
    files = httpx.get(f"{server.url}/sessions/{session_id}/files", headers=server.headers)
    assert files.json()["items"] == []


def test_a_target_in_absolute_form_is_served_as_its_path(server: LiveServer) -> None:
    # Found by hand: RFC 9112 (3.2.2) asks a server to accept `GET http://host/path`, which a
    # client sends to a proxy (the server given as its HTTP_PROXY) and some proxies forward.
    # uvicorn took the whole URL for the path: a 404 "no route /http://host/sessions/...".
    session_id = a_session(server)
    path = f"/sessions/{session_id}/files/kept.txt"
    put = head_of(server, f"PUT HTTPS://other.example{path}", "Content-Length: 4\r\n") + b"kept"
    assert _answer(server, put)[0] == 201
    status, _, body = _answer(server, head_of(server, f"GET http://other.example{path}"))
    assert (status, body) == (200, b"kept")
    assert _answer(server, head_of(server, "GET http://other.example/health"))[0] == 200
    # The path's checks still hold: a percent-encoded separator is refused as in origin form.
    status, _, body = _answer(server, head_of(server, f"GET http://h/sessions/{session_id}%2Ff"))
    assert (status, json.loads(body)["code"]) == (400, "invalid_name"), body


def test_a_target_in_asterisk_or_authority_form_is_refused_naming_it(
    server: LiveServer,
) -> None:
    # Red team 74 on the HTTP contract, found by hand: `OPTIONS *` (RFC 9112, 3.2.4) and
    # `CONNECT 127.0.0.1:80` (3.2.3) were 404 "no route /*" and "no route /127.0.0.1:80",
    # naming a path the client never sent. Neither is a path; each is a 400 naming its form.
    for line, target, form in (
        ("OPTIONS *", "*", "asterisk form"),
        ("GET *", "*", "asterisk form"),
        ("CONNECT 127.0.0.1:80", "127.0.0.1:80", "authority form, or no path at all"),
    ):
        status, _, body = _answer(server, head_of(server, line))
        problem = json.loads(body)
        assert (status, problem["code"]) == (400, "bad_request"), (line, body)
        assert problem["message"] == (
            f"{line.split()[0]} {target} refused: its target is not a path ({form}); this "
            "server is no proxy and answers requests for its own paths alone, which start "
            "with '/'. Nothing was done. Send a path, such as GET /sessions; GET /docs lists "
            "the API"
        ), line


def test_a_target_holding_a_raw_hash_is_refused_and_nothing_stored(server: LiveServer) -> None:
    # Red team 74 on the HTTP contract, found by hand: `PUT .../files/a#b` stored a file
    # 'a#b', where a proxy or a client library that cuts the fragment reads `.../files/a`.
    session_id = a_session(server)
    files = f"/sessions/{session_id}/files"
    for target, path in ((f"{files}/a#b", f"{files}/a#b"), (f"{files}/a?x=1#b", f"{files}/a")):
        put = head_of(server, f"PUT {target}", "Content-Length: 4\r\n") + b"kept"
        status, _, body = _answer(server, put)
        problem = json.loads(body)
        assert (status, problem["code"]) == (400, "bad_request"), (target, body)
        assert problem["message"] == (
            f"PUT {path} refused: its target holds a '#', which starts a fragment (RFC 3986, "
            "3.5) that a request target never holds (RFC 9112, 3.2): a proxy in front may "
            "have cut the target there, where this server would read it whole. Nothing was "
            "done. Percent-encode a '#' of a name as %23"
        ), target
    assert _stored(server, session_id) == []
    put = head_of(server, f"PUT {files}/a%23b", "Content-Length: 4\r\n") + b"kept"
    assert _answer(server, put)[0] == 201
    assert _stored(server, session_id) == ["a#b"]


def test_http_1_0_with_a_transfer_encoding_is_refused_and_nothing_stored(
    server: LiveServer,
) -> None:
    # Found by hand: RFC 9112 (6.1) says a request of HTTP/1.0, which has no transfer coding,
    # that comes with a Transfer-Encoding has faulty framing. h11 read its chunks and the PUT
    # was a 201, where a proxy in front that speaks HTTP/1.0 framed the body by its length
    # (`3`, the chunk's size line) or by the connection's end, and passed other bytes.
    session_id = a_session(server)
    files = f"/sessions/{session_id}/files"
    token = "".join(f"{k}: {v}\r\n" for k, v in server.headers.items())
    chunked = "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    request = f"PUT {files}/old.txt HTTP/1.0\r\nHost: x\r\n{token}{chunked}".encode()
    status, headers, body = _answer(server, request)
    assert (status, headers["connection"]) == (400, "close"), body
    message = json.loads(body)["message"]
    assert f"PUT {files}/old.txt refused: it is HTTP/1.0 with a Transfer-Encoding" in message
    assert httpx.get(f"{server.url}{files}", headers=server.headers).json()["items"] == []


# Red team 70 on regress, the HTTP contract (branch rt-regress70f): what the merge above left
# through, on the same server.


def _stored(server: LiveServer, session_id: str) -> list[str]:
    files = httpx.get(f"{server.url}/sessions/{session_id}/files", headers=server.headers)
    return [item["name"] for item in files.json()["items"]]


@pytest.mark.parametrize("version", ["0.9", "2.0"])
def test_a_request_line_of_another_version_than_1_x_is_refused_and_nothing_stored(
    server: LiveServer, version: str
) -> None:
    # Found by sending each version h11 reads (`HTTP/d.d`, any digits): red team 70 refused
    # HTTP/1.0 with a Transfer-Encoding, but `PUT ... HTTP/0.9` or `HTTP/2.0` with chunks
    # was read by them and stored, 201, where HTTP/0.9 has no headers and HTTP/2 no such line
    # nor Transfer-Encoding: a proxy in front that read the version framed it otherwise.
    session_id = a_session(server)
    path = f"/sessions/{session_id}/files/v.txt"
    token = "".join(f"{k}: {v}\r\n" for k, v in server.headers.items())
    chunks = "Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(f"PUT {path} HTTP/{version}\r\nHost: x\r\n{token}{chunks}".encode())
        answers = Answers(sock)
        status, headers, body = answers.next()
        assert (status, headers["connection"].lower()) == (400, "close"), body
        assert answers.rest() == b""  # closed: the bytes after the head read as nothing
    message = json.loads(body)["message"]
    assert message.startswith(
        f"PUT {path} refused: its request line says HTTP/{version}, and this server speaks "
        "HTTP/1.1 (and 1.0) alone"
    ), message
    assert "Nothing was done" in message
    assert _stored(server, session_id) == []


def test_a_higher_minor_version_is_served_as_http_1_1(server: LiveServer) -> None:
    # RFC 9112 (2.3): a minor version above the one implemented is read as the highest.
    session_id = a_session(server)
    with connect(server) as sock:
        sock.sendall(head_of(server, f"GET /sessions/{session_id}").replace(b"/1.1", b"/1.2"))
        status, _, body = Answers(sock).next()
    assert (status, json.loads(body)["id"]) == (200, session_id)


@pytest.mark.parametrize(
    ("head", "said"),
    [
        (
            "GET /health HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET /health refused: it is HTTP/1.0 with a Transfer-Encoding",
        ),
        (
            'GET /health HTTP/1.1\r\nHost: x\r\nIf_None_Match: "a"\r\n\r\n',
            "it has a header 'if_none_match', which is not If-None-Match",
        ),
    ],
)
def test_health_answered_in_the_protocol_refuses_what_the_application_refuses(
    server: LiveServer, head: str, said: str
) -> None:
    # Found by sending red team 70's refused heads to each route: `GET /health` is answered
    # in the protocol, which checked only for a repeated header, and said 200 where every
    # other route (and `GET http://host/health`, which reaches the application) said 400.
    with connect(server) as sock:
        sock.sendall(head.encode())
        status, _, body = Answers(sock).next()
    assert status == 400, body
    assert said in json.loads(body)["message"]


@pytest.mark.parametrize(
    ("form", "said"),
    [
        # RFC 7578 (4.2): every part MUST have a name. Without one (or with an empty one),
        # beside the file, its bytes were dropped as a text field's and the file stored, 201.
        (_form(b"Content-Disposition: form-data\r\n\r\nlost", _FILE), "without a name"),
        (_form(_FILE, b'Content-Disposition: form-data; name=""\r\n\r\nlost'), "without a name"),
        # Stored as `"j.txt" x.exe`, read as j.txt by a reader that ends the value at its quote.
        (
            _form(b'Content-Disposition: form-data; name="file"; filename="j.txt" x.exe\r\n\r\nx'),
            (
                "'filename=\"\" x.exe' in its Content-Disposition (its quoted values shown as "
                '""), which is not name= followed by one quoted value or one token'
            ),
        ),
        # Stored as `a b.txt`, read as `a` by a reader that ends a token at white space.
        (
            _form(b"Content-Disposition: form-data; name=file; filename=a b.txt\r\n\r\nx"),
            "'filename=a b.txt' in its Content-Disposition",
        ),
        # Stored as `q"p.txt`; a browser's reader (WHATWG) ends the name at that quote: `q\`.
        (
            _form(b'Content-Disposition: form-data; name="file"; filename="q\\"p.txt"\r\n\r\nx'),
            "with the escape '\\\"' in a quoted value, which readers of the part undo differently",
        ),
    ],
)
def test_a_form_part_named_ambiguously_or_not_at_all_is_refused_and_nothing_stored(
    server: LiveServer, form: bytes, said: str
) -> None:
    # Found by sending each Content-Disposition the brief lists, and python-multipart's
    # reading of each beside a strict reader's.
    session_id = a_session(server)
    line = f"POST /sessions/{session_id}/files"
    head = f"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {len(form)}\r\n"
    with connect(server) as sock:
        sock.sendall(head_of(server, line, head) + form)
        status, _, body = Answers(sock).next()
    assert status == 400, body
    message = json.loads(body)["message"]
    assert said in message and "Nothing was stored" in message, message
    assert _stored(server, session_id) == []


def test_a_chunked_trailer_is_read_for_a_target_in_absolute_form(server: LiveServer) -> None:
    # Found by reading where the protocol hands the application what it learns after the
    # head: it sets a chunked body's trailer (`TRAILERS`) on the request's own scope, and
    # reads the request's place among the transfers there, and `origin_form` gave the
    # application a copy. `PUT http://host/...` whose trailer came once the application read
    # the body was stored unchecked, 201, with bytes changed on the way beside its
    # `Repr-Digest`; in origin form it is refused 400 `digest_mismatch`.
    session_id = a_session(server)
    path = f"/sessions/{session_id}/files/t.txt"
    sent = base64.b64encode(hashlib.sha256(b"sent").digest()).decode()
    body = b"changed on the way"
    trailer = f"0\r\nRepr-Digest: sha-256=:{sent}:\r\n\r\n".encode()
    chunked = "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n"
    for target in (path, f"http://other.example{path}"):
        with connect(server) as sock:
            sock.sendall(head_of(server, f"PUT {target}", chunked))
            answers = Answers(sock)
            assert answers.next()[0] == 100  # the application reads the body: it runs
            sock.sendall(f"{len(body):x}\r\n".encode() + body + b"\r\n" + trailer)
            status, _, answer = answers.next()
        assert (status, json.loads(answer)["code"]) == (400, "digest_mismatch"), (target, answer)
    assert _stored(server, session_id) == []
    # uvicorn's access log reads the same scope: it names the path served, not the URL
    # (`"PUT http%3A//other.example/sessions/..."`).
    logged = server.log.read_text()
    assert logged.count(f'"PUT {path} HTTP/1.1" 400') == 2, logged[-2000:]
    assert "other.example" not in logged


def test_a_dotnet_form_naming_its_file_twice_alike_is_stored_and_apart_is_refused(
    server: LiveServer,
) -> None:
    # Red team 70 on regress (rt-regress70j), found by sending each client's form: .NET's
    # MultipartFormDataContent gives every file `filename=` and `filename*=` (RFC 8187) both,
    # and `filename*` was refused whatever it said, so every upload of .NET's HttpClient was
    # a 400. Where the two name one file it is stored; where they differ (.NET's own for a
    # name not ASCII, an RFC 2047 word in `filename=`), refused as before.
    session_id = a_session(server)
    line = f"POST /sessions/{session_id}/files"
    euro_star, dotnet_star = (
        b"filename*=UTF-8'en'%E2%82%AC%20b.txt",
        b"filename*=utf-8''%E2%82%AC.txt",
    )
    for disposition, status in (
        (b"form-data; name=file; filename=a.txt; filename*=utf-8''a.txt", 201),
        (b'form-data; name=file; filename="\xe2\x82\xac b.txt"; ' + euro_star, 201),
        (b'form-data; name=file; filename="=?utf-8?B?4oKsLnR4dA==?="; ' + dotnet_star, 400),
        (b"form-data; name=file; filename=c.txt; filename*=utf-8''d.txt", 400),
        (b"form-data; name=file; filename=\"\xc3\xa9.txt\"; filename*=us-ascii''%C3%A9.txt", 400),
    ):
        form = (
            b"--B\r\nContent-Type: text/plain\r\nContent-Disposition: " + disposition
            + b"\r\n\r\nhello\r\n--B--\r\n"
        )  # fmt: skip
        head = f"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {len(form)}\r\n"
        with connect(server) as sock:
            sock.sendall(head_of(server, line, head) + form)
            answer = Answers(sock).next()
        assert answer[0] == status, (disposition, answer)
        if status == 400:
            assert "filename*=, which RFC 7578" in json.loads(answer[2])["message"], answer
    assert sorted(_stored(server, session_id)) == ["a.txt", "€ b.txt"]


def test_a_filename_cut_in_rfc_2231_continuations_is_refused(server: LiveServer) -> None:
    # Red team 70 on regress (rt-regress70k), found by trying RFC 2231 on the `filename*`
    # check: `filename*0*=utf-8''b; filename*1=.exe` beside `filename="a.txt"` was stored as
    # a.txt (python-multipart reads past continuations), where Werkzeug and Python's email
    # package join them and read a second name, b.exe. A part naming its file in pieces is
    # refused, and the .NET form (`filename*=` alone, naming the same) is still stored.
    session_id = a_session(server)
    line = f"POST /sessions/{session_id}/files"
    for disposition, refused in (
        (b"name=file; filename=\"a.txt\"; filename*0*=utf-8''b; filename*1=.exe", b"filename*0*"),
        (b'name=file; filename*0="b"; filename*1=".exe"; filename="a.txt"', b"filename*0"),
        (b"name=file; filename=e.txt; filename*=utf-8''e.txt", None),
    ):
        form = (
            b"--B\r\nContent-Disposition: form-data; " + disposition
            + b"\r\n\r\nhello\r\n--B--\r\n"
        )  # fmt: skip
        head = f"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {len(form)}\r\n"
        with connect(server) as sock:
            sock.sendall(head_of(server, line, head) + form)
            status, _, body = Answers(sock).next()
        if refused is None:
            assert status == 201, (disposition, body)
            continue
        assert status == 400, (disposition, body)
        message = json.loads(body)["message"]
        assert f"gives {refused.decode()!r} in its Content-Disposition" in message, message
        assert "RFC 2231 continuation" in message and "Nothing was stored" in message, message
    assert _stored(server, session_id) == ["e.txt"]


# Red team 72 on the HTTP contract (branch rt-http72), on the same server.


@pytest.mark.parametrize(
    ("chunks", "ending"),
    [
        (b"5\nabcde\n0\n\n", "LF"),
        (b"5\r\nabcde\r\n0\n\n", "LF"),
        # Red team 72 on regress, round g, found reading rt-http72's checks: a size line
        # waited on was looked at for an LF only, so chunks framed with bare CRs were waited
        # on as one size line still coming, as bare LFs were.
        (b"5\rabcde\r0\r\r", "CR"),
    ],
)
def test_a_chunk_size_line_ended_by_a_bare_lf_or_cr_is_refused_at_once(
    server: LiveServer, chunks: bytes, ending: str
) -> None:
    # Found by hand (`printf` of chunks into `nc`): h11 ends a chunk's size line at a CRLF
    # alone, so a body whose size lines end with bare LFs was waited on as one line still
    # coming, and its client, which had sent the whole body, got 408 "sent no more of its
    # body" after request_idle_seconds (30 s; nothing at all had it shut its side).
    session_id = a_session(server)
    path = f"/sessions/{session_id}/files/{ending.lower()}.txt"
    head = head_of(server, f"PUT {path}", "Transfer-Encoding: chunked\r\n")
    with connect(server) as sock:
        sock.sendall(head + chunks)
        answers = Answers(sock)
        status, headers, body = answers.next()  # a socket timeout (WAIT) fails here
        assert (status, headers["connection"].lower()) == (400, "close"), body
        assert answers.rest() == b""
    assert json.loads(body)["message"] == (
        f"PUT {path} refused: a chunk's size line of its body ends with a bare {ending}; RFC "
        "9112 (7.1) ends it with CRLF. Nothing of it was kept and the connection is closed. "
        "Check the client"
    )
    assert _stored(server, session_id) == []


def test_a_head_or_a_trailer_whose_lines_end_with_bare_crs_is_refused_at_once(
    server: LiveServer,
) -> None:
    # Found by hand, as the test above: h11 ends a head's and a trailer's lines at an LF, so
    # lines ended by CRs alone were waited on as a head or a trailer still coming, and 408
    # "the request line and headers did not arrive" after request_idle_seconds, where RFC
    # 9112 (2.2) calls a bare CR invalid (and one in a head that came whole was 400 at once).
    with connect(server) as sock:
        sock.sendall(b"GET /sessions HTTP/1.1\rHost: x\r\r")
        answers = Answers(sock)
        status, headers, body = answers.next()  # a socket timeout (WAIT) fails here
        assert (status, headers["connection"].lower()) == (400, "close"), body
        assert json.loads(body)["message"].startswith("malformed HTTP request: it is not")
    session_id = a_session(server)
    path = f"/sessions/{session_id}/files/cr.txt"
    head = head_of(server, f"PUT {path}", "Transfer-Encoding: chunked\r\n")
    with connect(server) as sock:
        sock.sendall(head + b"2\r\nhi\r\n0\r\nX-A: 1\rX-B: 2\r\r")
        status, headers, body = Answers(sock).next()
        assert (status, headers["connection"].lower()) == (400, "close"), body
    assert json.loads(body)["message"].startswith(f"PUT {path} refused: its chunked body is")
    assert _stored(server, session_id) == []


def test_a_form_of_many_empty_parts_beside_its_file_is_refused_and_nothing_stored(
    server: LiveServer,
) -> None:
    # Red team 73, found by hand: only the whole body was held to max_upload_bytes plus 128
    # KiB, so a 5-byte file could come with 100 MiB of empty parts, which python-multipart
    # parses a byte at a time on the event loop (15 s for 200,000 parts, 10 MiB): the
    # server's other clients waited up to 2.3 s for a `GET /health` meanwhile, and the form was
    # stored. What is not the file's own is now held to the 128 KiB, as it comes.
    empty = b'Content-Disposition: form-data; name="x"\r\n\r\n'
    for count, status in ((100, 201), (2_700, 400)):
        session_id = a_session(server)
        line = f"POST /sessions/{session_id}/files"
        form = _form(_FILE, *[empty] * count)
        head = f"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {len(form)}\r\n"
        answer = _answer(server, head_of(server, line, head) + form)
        assert answer[0] == status, answer
    assert json.loads(answer[2])["message"] == (
        f"POST /sessions/{session_id}/files refused: the multipart body holds more than 131072 "
        "bytes (128 KiB) besides the file's own: boundaries, part headers and fields other "
        "than 'file', which this server parses and ignores, and whose parsing would hold its "
        "other clients. Nothing was stored; send the file in the field 'file' with few other "
        f"fields, or its bytes alone with PUT /sessions/{session_id}/files/{{name}}"
    )
    assert _stored(server, session_id) == []
    root = server.data_root
    assert root is None or not [p for p in (root / ".tmp").rglob("*") if p.is_file()]


def test_a_chunked_body_of_tiny_chunks_is_stored_a_turn_of_chunks_at_a_time(
    server: LiveServer,
) -> None:
    # Red team 73 found that h11, the protocol and uvicorn each handle every chunk in Python
    # on the event loop: a PUT of 1 MB in one-byte chunks held the server's other clients up
    # to 5.9 s for a `GET /health`. It refused a body whose chunks averaged under 64 bytes
    # past its first 1,024, and with it httpx given a generator of a CSV's lines, refused at
    # the 1,025th (red team 73 on regress, round d). The loop now reads 256 chunks a turn.
    session_id = a_session(server)
    lines = [f"{i},2026-12-07,ok\n".encode() for i in range(1_200)]
    url = f"{server.url}/sessions/{session_id}/files/log.csv"
    answer = httpx.put(url, headers=server.headers, content=iter(lines))
    assert answer.status_code == 201, answer.text
    assert answer.json()["sha256"] == hashlib.sha256(b"".join(lines)).hexdigest()
    # One-byte chunks with extensions and a trailer (RFC 9112, 7.1.1 and 7.1.2), all in one
    # write, and a request pipelined behind them, read once the body's turns are done.
    path = f"/sessions/{session_id}/files/bytes.bin"
    chunks = b"1;n=v\r\nx\r\n" * 1_200 + b"0\r\nX-Note: end\r\n\r\n"
    head = head_of(server, f"PUT {path}", "Transfer-Encoding: chunked\r\n")
    with connect(server) as sock:
        sock.sendall(head + chunks + head_of(server, "GET /health"))
        answers = Answers(sock)
        assert [answers.next()[0], answers.next()[0]] == [201, 200]
    got = httpx.get(f"{server.url}{path}", headers=server.headers)
    assert got.content == b"x" * 1_200
    assert sorted(_stored(server, session_id)) == ["bytes.bin", "log.csv"]
