"""Over real servers: optimistic concurrency on a file's writes, and headers given twice.

Two clients that read a file and replace it with ``If-Match: <the ETag they read>`` at once:
exactly one writes, the other is refused with 412 naming the version the first wrote. The
comparison sits where the write commits (under the session's lock on a data root, in the
transaction that switches the row on PostgreSQL), so the race is run many times against one
real ``app serve`` on a data root and against two replicas sharing a database and a bucket,
each client on its own replica.

A header the app reads, given twice, is refused: a proxy in front may have read the other one.
Sent over raw sockets, since HTTP clients merge or refuse repeated headers themselves.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx
import pytest
from engines import PostgresEngine, S3Engine
from live_http import Answers, a_session, connect, head_of
from redteam_s19_http import one_server
from replicas import production_on

from app.testing import LiveServer

ROUNDS = 15


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest() + '"'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real ``app serve`` on a data root for the module."""
    with one_server(tmp_path_factory) as live:
        yield live


@pytest.fixture(scope="module")
def local_pair(server: LiveServer) -> Iterator[tuple[httpx.Client, ...]]:
    """Two clients of the module's server."""
    with (
        httpx.Client(base_url=server.url, headers=server.headers) as one,
        httpx.Client(base_url=server.url, headers=server.headers) as other,
    ):
        yield one, other


@pytest.fixture
def remote_pair(
    tmp_path: Path, postgres_engine: PostgresEngine, blob_url: str, s3_engine: S3Engine
) -> Iterator[tuple[httpx.Client, ...]]:
    """Two clients, each of its own replica, on one database and one object prefix."""
    with production_on(tmp_path, postgres_engine, s3_engine, blob_url) as production:
        first, second = production.start_pair()
        with production.client(first) as one, production.client(second) as other:
            yield one, other


def _session(client: httpx.Client) -> str:
    created = client.post("/sessions", json={})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _at_once(*calls: Callable[[], httpx.Response]) -> list[httpx.Response]:
    """The calls, each on its own thread, released together."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], httpx.Response]) -> httpx.Response:
        start.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def _race(one: httpx.Client, other: httpx.Client) -> None:
    session_id = _session(one)
    url = f"/sessions/{session_id}/files/shared.txt"
    body = b"version 0"
    assert one.put(url, content=body).status_code == 201
    for round_ in range(ROUNDS):
        read = _etag(body)
        assert other.head(url).headers["etag"] == read
        mine, theirs = f"mine {round_}".encode(), f"theirs {round_}".encode()
        # Every third round, one of the two deletes the version it read instead.
        deleting = round_ % 3 == 2
        condition = {"If-Match": read}
        answers = _at_once(
            partial(one.put, url, content=mine, headers=condition),
            partial(other.delete, url, headers=condition)
            if deleting
            else partial(other.put, url, content=theirs, headers=condition),
        )
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200, 412], [(a.status_code, a.text) for a in answers]
        won = 0 if answers[0].status_code == 200 else 1
        refused = answers[1 - won].json()
        assert refused["code"] == "precondition_failed"
        if won == 1 and deleting:
            assert "has no file 'shared.txt'" in refused["message"], refused
            assert one.get(url).status_code == 404
            body = b"version 0"
            assert one.put(url, content=body).status_code == 201
            continue
        body = mine if won == 0 else theirs
        # The refusal names the version that won, which is the file now.
        assert f"current version, ETag {_etag(body)}" in refused["message"], refused
        assert f"If-Match: {read} does not name" in refused["message"], refused
        assert one.get(url).content == body


def test_two_clients_replacing_one_version_at_once_on_a_data_root_one_wins(
    local_pair: tuple[httpx.Client, httpx.Client],
) -> None:
    _race(*local_pair)


def test_two_replicas_replacing_one_version_at_once_on_postgres_one_wins(
    remote_pair: tuple[httpx.Client, httpx.Client],
) -> None:
    _race(*remote_pair)


def test_if_match_takes_a_list_and_a_star_and_never_a_weak_tag(
    local_pair: tuple[httpx.Client, httpx.Client],
) -> None:
    client, _ = local_pair
    session_id = _session(client)
    url = f"/sessions/{session_id}/files/doc.txt"

    missing = client.put(url, content=b"a", headers={"If-Match": "*"})
    assert missing.status_code == 412, missing.text
    assert "has no file 'doc.txt'" in missing.json()["message"]
    assert "send the PUT without If-Match" in missing.json()["message"]
    assert client.get(url).status_code == 404

    assert client.put(url, content=b"a").status_code == 201
    assert client.put(url, content=b"b", headers={"If-Match": "*"}).status_code == 200
    listed = f'"{"0" * 64}", , {_etag(b"b")}'
    assert client.put(url, content=b"c", headers={"If-Match": listed}).status_code == 200

    weak = client.put(url, content=b"d", headers={"If-Match": "W/" + _etag(b"c")})
    assert weak.status_code == 412, weak.text
    assert "a weak tag, W/, never matches" in weak.json()["message"]

    malformed = client.put(
        url, content=b"d", headers={"If-Match": hashlib.sha256(b"c").hexdigest()}
    )
    assert malformed.status_code == 400, malformed.text
    assert "is not * or a list of entity tags" in malformed.json()["message"]

    # A date cannot tell two versions of one second apart: refused alone, ignored next to
    # If-Match (RFC 9110, 13.1.4).
    dated = {"If-Unmodified-Since": "Wed, 21 Oct 2015 07:28:00 GMT"}
    alone = client.put(url, content=b"d", headers=dated)
    assert alone.status_code == 400, alone.text
    assert alone.json()["code"] == "precondition_unsupported"
    assert "does not evaluate If-Unmodified-Since" in alone.json()["message"]
    assert "Send If-Match with the file's ETag" in alone.json()["message"]
    both = client.put(url, content=b"d", headers={**dated, "If-Match": _etag(b"c")})
    assert both.status_code == 200, both.text

    stale = client.delete(url, headers={"If-Match": _etag(b"c")})
    assert stale.status_code == 412, stale.text
    assert f"DELETE of file 'doc.txt' in session {session_id} refused" in stale.json()["message"]
    assert client.get(url).content == b"d"
    assert client.delete(url, headers={"If-Match": _etag(b"d")}).status_code == 200

    session = client.delete(f"/sessions/{session_id}", headers={"If-Match": "*"})
    assert session.status_code == 400, session.text
    assert "a session has no ETag to compare with" in session.json()["message"]
    assert client.get(f"/sessions/{session_id}").status_code == 200


# --- a header given twice -----------------------------------------------------------------


TWICE = [
    ("Authorization", "GET /sessions", "Authorization: Bearer not-the-token\r\n"),
    ("Content-Type", "POST /sessions", "Content-Type: application/json\r\n" * 2),
    ("Range", "GET {file}", "Range: bytes=0-0\r\nRange: bytes=1-1\r\n"),
    ("If-Match", "PUT {file}", 'If-Match: {etag}\r\nIf-Match: "x"\r\n'),
    ("If-None-Match", "PUT {file}", "If-None-Match: *\r\n" * 2),
]


def test_a_header_the_app_reads_given_twice_is_refused_naming_it(
    server: LiveServer, local_pair: tuple[httpx.Client, httpx.Client]
) -> None:
    client, _ = local_pair
    session_id = a_session(server)
    file = f"/sessions/{session_id}/files/doc.txt"
    assert client.put(file, content=b"kept").status_code == 201
    sessions = client.get("/sessions").json()["total"]
    with connect(server) as sock:
        answers = Answers(sock)
        for header, request_line, lines in TWICE:
            line = request_line.format(file=file)
            body = b"{}" if line.startswith("POST") else b"new!" if line.startswith("PUT") else b""
            extra = lines.format(etag=_etag(b"kept")) + f"Content-Length: {len(body)}\r\n"
            sock.sendall(head_of(server, line, extra) + body)
            # The connection goes on: the next request on it is answered as usual.
            sock.sendall(head_of(server, f"GET {file}"))
            status, _, answer = answers.next()
            assert status == 400, (header, answer)
            problem = json.loads(answer)
            assert problem["code"] == "bad_request"
            assert f"it has more than one {header} header" in problem["message"], problem
            assert f"Send {header} once" in problem["message"], problem
            assert answers.next()[2] == b"kept"
        # Red team 76 on the server: a page of another site had the browser send a POST
        # without CORS's preflight (`fetch(..., {mode: 'no-cors'})`), and a development
        # server's trash was emptied (no token to send). A change a browser says comes from
        # another origin is refused; a read is served, as a link to a download from elsewhere.
        for site, line in (("cross-site", "POST /trash/empty"), ("same-site", f"DELETE {file}")):
            extra = f"Sec-Fetch-Site: {site}\r\nContent-Length: 0\r\n"
            sock.sendall(head_of(server, line, extra) + head_of(server, f"GET {file}", extra))
            status, _, answer = answers.next()
            said = (
                f"{line} refused: a browser sent it from a page of another origin "
                f"(Sec-Fetch-Site: {site}), which a page the user only visited can do without "
                "the user's knowing, and this API takes no change from a page of another "
                "origin. Nothing was done. Make the change from a program (curl, a client "
                "library) or from the API's own page (/docs); reads (GET, HEAD) are served to "
                "any page"
            )
            assert (status, json.loads(answer)["message"]) == (400, said)
            assert answers.next()[2] == b"kept"
        # A list in one header is one header.
        extra = f'If-Match: "{"0" * 64}", {_etag(b"kept")}\r\nContent-Length: 4\r\n'
        sock.sendall(head_of(server, f"PUT {file}", extra) + b"new!")
        status, _, answer = answers.next()
        assert status == 200, answer
    assert client.get("/sessions").json()["total"] == sessions
    assert client.get(file).content == b"new!"


# Every route that takes no body, with a body its sender meant something by.
BODIES = (
    ("POST /trash/empty", "older_than and confirm", b'{"older_than": 86400}'),
    ("DELETE /sessions/{sid}", "", b'{"dry_run": true}'),
    ("DELETE {file}", "", b'{"version": "1"}'),
    ("GET /sessions", "limit and after", b"limit=5"),
    ("GET /sessions/{sid}/files", "", b"{}"),
)


def test_a_body_on_a_route_that_takes_none_is_refused_not_ignored(
    server: LiveServer, local_pair: tuple[httpx.Client, httpx.Client]
) -> None:
    # FastAPI never reads such a body: POST /trash/empty with {"older_than": 86400} emptied
    # the whole trash for good, and a DELETE with a body deleted whatever the body said.
    client, _ = local_pair
    sid = a_session(server)
    file = f"/sessions/{sid}/files/doc.txt"
    assert client.put(file, content=b"kept").status_code == 201
    client.delete(f"/sessions/{a_session(server)}")
    assert server.data_root is not None
    trash = server.data_root / ".trash"
    kept = client.get("/sessions").json()["total"], sorted(trash.iterdir())
    assert kept[1]
    with connect(server) as sock:
        answers = Answers(sock)
        for template, takes, body in BODIES:
            line = template.format(sid=sid, file=file)
            chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
            for extra, sent, raw in (
                (f"Content-Length: {len(body)}\r\n", f"a body of {len(body)} bytes", body),
                ("Transfer-Encoding: chunked\r\n", "a chunked body", chunked),
            ):
                sock.sendall(head_of(server, line, extra) + raw + head_of(server, f"GET {file}"))
                status, _, answer = answers.next()
                assert status == 400, (line, answer)
                problem = json.loads(answer)
                assert problem["code"] == "bad_request"
                operation = line.replace(sid, "{session_id}").replace("doc.txt", "{name}")
                assert problem["message"] == (
                    f"request refused: {operation} takes no body, and this request has {sent}, "
                    "which the server would ignore, doing other than its sender meant; nothing "
                    "was done. Send no body: "
                    + (
                        f"give what it takes in the query string ({takes})"
                        if takes
                        else "it takes no parameter but its path"
                    )
                ), problem
                # The body was read past as a body: the next request on the connection is
                # answered as usual.
                assert answers.next()[2] == b"kept"
        # No body: Content-Length 0, and chunked with its last chunk alone.
        for extra, raw in (
            ("Content-Length: 0\r\n", b""),
            ("Transfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        ):
            sock.sendall(head_of(server, f"GET /sessions/{sid}/files", extra) + raw)
            assert answers.next()[0] == 200
    assert (client.get("/sessions").json()["total"], sorted(trash.iterdir())) == kept
    assert client.get(file).content == b"kept"
