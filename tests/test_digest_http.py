"""Over real servers: uploads checked against the client's digest (RFC 9530), downloads
carrying the file's.

A body changed on the way used to be stored and acknowledged though the client had sent its
SHA-256. Now a ``Repr-Digest`` or ``Content-Digest`` that is not the SHA-256 of what arrived
stores nothing (the old version stays, and downloads still give it), on a data root and on
PostgreSQL plus an object store alike: both backends call one check before they commit.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from engines import PostgresEngine, S3Engine
from live_http import Answers, a_session, connect, head_of
from redteam_s19_http import one_server
from replicas import production_on
from test_redteam_s35_integrity import _chunked

from app.testing import LiveServer


def _digest(body: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with one_server(tmp_path_factory) as live:
        yield live


@pytest.fixture(scope="module")
def local(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=server.headers) as client:
        yield client


@pytest.fixture
def remote(
    tmp_path: Path, postgres_engine: PostgresEngine, blob_url: str, s3_engine: S3Engine
) -> Iterator[httpx.Client]:
    with production_on(tmp_path, postgres_engine, s3_engine, blob_url) as production:
        replica = production.start()
        with production.client(replica) as client:
            yield client


def _session(client: httpx.Client) -> str:
    created = client.post("/sessions", json={})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _right_digest_stores_and_wrong_one_keeps_the_old_bytes(client: httpx.Client) -> None:
    sid = _session(client)
    url = f"/sessions/{sid}/files/report.bin"
    old, new = b"version one\n", b"version two\n"
    stored = client.put(url, content=old, headers={"Repr-Digest": _digest(old)})
    assert stored.status_code == 201, stored.text

    # The client computed the digest of `new`; the body arrived changed (one bit flipped).
    damaged = bytes([new[0] ^ 1]) + new[1:]
    refused = client.put(url, content=damaged, headers={"Repr-Digest": _digest(new)})
    assert refused.status_code == 400, refused.text
    assert refused.headers["want-repr-digest"] == "sha-256=10"
    problem = refused.json()
    assert problem["code"] == "digest_mismatch"
    message = problem["message"]
    assert f"PUT of file 'report.bin' in session {sid} refused: Repr-Digest: " in message
    assert _digest(new) in message  # expected
    assert _digest(damaged) in message  # computed
    assert "nothing was stored and the file is as it was. Send the upload again" in message

    # Content-Digest: the same bytes for an identity-coded body, checked the same way.
    other = client.put(url, content=damaged, headers={"Content-Digest": _digest(new)})
    assert other.status_code == 400 and "Content-Digest: sha-256=" in other.json()["message"]

    got = client.get(url)
    assert got.content == old
    assert got.headers["repr-digest"] == _digest(old)
    assert got.headers["etag"] == '"' + hashlib.sha256(old).hexdigest() + '"'
    listed = client.get(f"/sessions/{sid}/files").json()["items"]
    assert [(f["name"], f["size"]) for f in listed] == [("report.bin", len(old))]

    # Another algorithm alongside sha-256 is ignored; the sha-256 is what is checked.
    both = f"md5=:AAAAAAAAAAAAAAAAAAAAAA==:, {_digest(new)}"
    replaced = client.put(url, content=new, headers={"Repr-Digest": both})
    assert replaced.status_code == 200, replaced.text
    assert client.get(url).content == new


def test_a_wrong_digest_on_a_data_root_stores_nothing_and_a_right_one_stores(
    local: httpx.Client,
) -> None:
    _right_digest_stores_and_wrong_one_keeps_the_old_bytes(local)


def test_a_wrong_digest_on_postgres_stores_nothing_and_a_right_one_stores(
    remote: httpx.Client,
) -> None:
    _right_digest_stores_and_wrong_one_keeps_the_old_bytes(remote)
    _a_changed_session_json_makes_none(remote)


def test_a_range_carries_the_whole_files_digest(local: httpx.Client) -> None:
    sid = _session(local)
    body = bytes(range(256)) * 8
    url = f"/sessions/{sid}/files/data.bin"
    assert local.put(url, content=body).status_code == 201
    part = local.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == body[10:20]
    assert part.headers["repr-digest"] == _digest(body)  # RFC 9530, 3: the representation's
    assert local.head(url).headers["repr-digest"] == _digest(body)


def test_malformed_and_unsupported_digests_are_refused_before_the_body(
    local: httpx.Client,
) -> None:
    sid = _session(local)
    url = f"/sessions/{sid}/files/x.txt"
    cases = {
        "sha-256=abc": "sha-256 is not a byte sequence",
        "sha-256=:AA=A:": "is not a structured-field dictionary (RFC 9651)",
        "SHA-256=:AAAA:": "is not a structured-field dictionary (RFC 9651)",
        "sha-256=:AAAA:": "sha-256 is 3 bytes; a SHA-256 is 32 bytes",
    }
    for header, words in cases.items():
        answer = local.put(url, content=b"x", headers={"Repr-Digest": header})
        assert answer.status_code == 400, (header, answer.text)
        assert answer.json()["code"] == "bad_request"
        assert words in answer.json()["message"], (header, answer.json())
        assert "nothing was stored" in answer.json()["message"]
    only_md5 = local.put(
        url, content=b"x", headers={"Repr-Digest": "md5=:AAAAAAAAAAAAAAAAAAAAAA==:"}
    )
    assert only_md5.status_code == 400
    assert only_md5.json()["code"] == "digest_unsupported"
    assert only_md5.headers["want-repr-digest"] == "sha-256=10"
    assert "Repr-Digest names md5, and the server checks sha-256 only" in only_md5.json()["message"]
    assert local.get(f"/sessions/{sid}/files").json()["items"] == []


def _form(body: bytes, name: str = "notes.txt") -> tuple[bytes, str]:
    boundary = "digestboundary42"
    content = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + body
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return content, f"multipart/form-data; boundary={boundary}"


def test_a_multipart_upload_is_checked_against_the_digest_of_its_whole_body(
    local: httpx.Client,
) -> None:
    sid = _session(local)
    content, kind = _form(b"the file's bytes\n")
    damaged = content.replace(b"file's", b"file-s")
    refused = local.post(
        f"/sessions/{sid}/files",
        content=damaged,
        headers={"Content-Type": kind, "Content-Digest": _digest(content)},
    )
    assert refused.status_code == 400, refused.text
    message = refused.json()["message"]
    assert f"POST of file 'notes.txt' in session {sid} refused: Content-Digest: " in message
    assert "is not the SHA-256 of the multipart body the server received" in message
    assert local.get(f"/sessions/{sid}/files").json()["items"] == []

    stored = local.post(
        f"/sessions/{sid}/files",
        content=content,
        headers={"Content-Type": kind, "Content-Digest": _digest(content)},
    )
    assert stored.status_code == 201, stored.text
    assert local.get(f"/sessions/{sid}/files/notes.txt").content == b"the file's bytes\n"


def test_a_digest_given_twice_is_refused_naming_it(server: LiveServer) -> None:
    sid = a_session(server)
    sock = connect(server)
    with sock:
        extra = (
            f"Repr-Digest: {_digest(b'a')}\r\nRepr-Digest: {_digest(b'b')}\r\nContent-Length: 1\r\n"
        )
        sock.sendall(head_of(server, f"PUT /sessions/{sid}/files/twice.txt", extra) + b"a")
        status, _, body = Answers(sock).next()
    assert status == 400, body
    assert b"repr-digest" in body.lower()


# --- a session's JSON (red team 65) ---

RIGHT = b'{"title": "sent", "metadata": {"run": 1}}'
CHANGED = b'{"title": "sENT", "metadata": {"run": 7}}'  # same length, bits flipped on the way
JSON = {"Content-Type": "application/json"}


def _sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _titles(client: httpx.Client) -> list[str]:
    titles: list[str] = []
    params: dict[str, str | int] = {"limit": 1000}
    while True:
        page = client.get("/sessions", params=params).json()
        titles += [item["title"] for item in page["items"]]
        if page["next"] is None:
            return titles
        params["after"] = page["next"]


def test_a_session_whose_json_changed_on_the_way_is_refused_and_none_is_made(
    server: LiveServer, local: httpx.Client
) -> None:
    # Red team 65: POST /sessions read no integrity field, and a body changed on the way was
    # a 201 for a session with a title and metadata its client never sent. Checked now as
    # an upload's body is, before its JSON is read; no session is made.
    client = local
    before = _titles(client)
    fields = {
        "Repr-Digest": f"sha-256=:{_sha256(RIGHT)}:",
        "Content-Digest": f"sha-256=:{_sha256(RIGHT)}:",
        "Digest": f"SHA-256={_sha256(RIGHT)}",  # RFC 3230's, which clients still send
    }
    for field, value in fields.items():
        answer = client.post("/sessions", content=CHANGED, headers={**JSON, field: value})
        assert answer.status_code == 400, (field, answer.text)
        assert answer.headers["want-repr-digest"] == "sha-256=10"
        problem = answer.json()
        assert problem["code"] == "digest_mismatch", problem
        assert problem["message"] == (
            f"POST /sessions refused: {field}: sha-256=:{_sha256(RIGHT)}: is not the SHA-256 "
            f"of the session's JSON the server received, sha-256=:{_sha256(CHANGED)}:, so the "
            "bytes were changed on the way (or the digest was computed over other bytes); no "
            "session was made. Send the request again, with the SHA-256 of exactly the bytes "
            "sent"
        ), problem["message"]
    # In a chunked body's trailer (RFC 9530 allows it), as the uploads check it.
    status, problem = _chunked(
        server,
        "POST /sessions",
        CHANGED,
        f"Repr-Digest: sha-256=:{_sha256(RIGHT)}:\r\n",
        "Content-Type: application/json\r\n",
    )
    assert (status, problem["code"]) == (400, "digest_mismatch"), problem
    assert "Repr-Digest (in the trailer)" in problem["message"], problem["message"]
    # A digest the server does not compute is refused rather than taken as checked.
    unsupported = {
        "Content-MD5": base64.b64encode(hashlib.md5(RIGHT).digest()).decode(),
        "Repr-Digest": "md5=:AAAAAAAAAAAAAAAAAAAAAA==:",
    }
    for field, value in unsupported.items():
        answer = client.post("/sessions", content=CHANGED, headers={**JSON, field: value})
        assert answer.status_code == 400, (field, answer.text)
        assert answer.json()["code"] == "digest_unsupported", answer.text
        assert f"{field} names md5, and the server checks sha-256 only" in answer.text
    assert _titles(client) == before  # nothing of the refused ones was made

    # The bytes the digest names are taken, on every field, and with no body at all.
    for field, value in fields.items():
        answer = client.post("/sessions", content=RIGHT, headers={**JSON, field: value})
        assert answer.status_code == 201, (field, answer.text)
        assert (answer.json()["title"], answer.json()["metadata"]) == ("sent", {"run": 1})
    empty = client.post("/sessions", headers={"Repr-Digest": f"sha-256=:{_sha256(b'')}:"})
    assert empty.status_code == 201, empty.text
    status, made = _chunked(
        server,
        "POST /sessions",
        RIGHT,
        f"Content-Digest: sha-256=:{_sha256(RIGHT)}:\r\n",
        "Content-Type: application/json\r\n",
    )
    assert (status, made["title"]) == (201, "sent"), made
    assert _titles(client) == [*before, "sent", "sent", "sent", "", "sent"]


def _a_changed_session_json_makes_none(client: httpx.Client) -> None:
    """The same check on another backend (one route checks both)."""
    header = {**JSON, "Repr-Digest": f"sha-256=:{_sha256(RIGHT)}:"}
    refused = client.post("/sessions", content=CHANGED, headers=header)
    assert (refused.status_code, refused.json()["code"]) == (400, "digest_mismatch"), refused.text
    assert "sENT" not in _titles(client)  # the changed title, made by nothing
    assert client.post("/sessions", content=RIGHT, headers=header).json()["title"] == "sent"


# --- a body lost on its way to a route that takes none (rt-regress66b) ---


def _sent_bodiless(server: LiveServer, line: str, extra: str) -> tuple[int, dict[str, str], bytes]:
    """``line`` sent with ``extra`` headers and no body; its answer."""
    with connect(server) as sock:
        sock.sendall(head_of(server, line, extra))
        return Answers(sock).next()


def test_a_body_lost_on_the_way_to_a_route_that_takes_none_is_refused_by_its_digest(
    server: LiveServer, local: httpx.Client
) -> None:
    # POST /trash/empty takes no body: one sent, then lost (a proxy that forwards it with
    # `Content-Length: 0`, or never framed), was no body, and the whole trash was emptied for
    # good, though the client's digest named the JSON it meant. Refused now, on every route
    # that takes no body, as POST /sessions and the uploads refuse theirs.
    sid = a_session(server)
    assert local.delete(f"/sessions/{sid}").status_code == 200
    trash = server.data_root / ".trash"

    def entries() -> list[str]:
        return [p.name for p in trash.iterdir() if sid in p.name]

    assert len(entries()) == 1
    meant = b'{"older_than": 86400}'
    fields = {
        "Content-Digest": f"sha-256=:{_sha256(meant)}:",
        "Repr-Digest": f"sha-256=:{_sha256(meant)}:",
        "Digest": f"SHA-256={_sha256(meant)}",
    }
    for field, value in fields.items():
        for framing in ("Content-Length: 0\r\n", ""):  # a proxy's, or none at all
            status, _, body = _sent_bodiless(
                server,
                "POST /trash/empty",
                f"{framing}Content-Type: application/json\r\n{field}: {value}\r\n",
            )
            # Before: 200, {"removed": [... every entry ...]}.
            assert status == 400, (field, framing, body)
            assert (
                "request refused: POST /trash/empty takes no body, and none arrived, but its "
                f"{field} names the SHA-256 of some bytes (sha-256=:{_sha256(meant)}:): a body "
                "its client sent was lost on the way"
            ).encode() in body, body
            assert b"give what it takes in the query string (older_than and confirm)" in body, body
            assert len(entries()) == 1
    # Chunked, its last chunk alone, the digest in the trailer (RFC 9530 allows it there).
    with connect(server) as sock:
        sock.sendall(
            head_of(server, "POST /trash/empty", "Transfer-Encoding: chunked\r\n")
            + f"0\r\nRepr-Digest: sha-256=:{_sha256(meant)}:\r\n\r\n".encode()
        )
        status, _, body = Answers(sock).next()
    assert status == 400, body
    assert b"but its Repr-Digest (in the trailer) names the SHA-256 of some bytes" in body, body
    assert len(entries()) == 1
    # A session's delete alike; a digest of no bytes is what a bodiless request names.
    other = a_session(server)
    line = f"DELETE /sessions/{other}"
    status, _, body = _sent_bodiless(server, line, f"Repr-Digest: sha-256=:{_sha256(meant)}:\r\n")
    assert status == 400 and b"it takes no parameter but its path" in body, body
    status, _, body = _sent_bodiless(
        server, line, "Repr-Digest: md5=:AAAAAAAAAAAAAAAAAAAAAA==:\r\n"
    )
    assert status == 400 and b"digest_unsupported" in body, body
    assert local.get(f"/sessions/{other}").status_code == 200
    status, _, body = _sent_bodiless(server, line, f"Repr-Digest: sha-256=:{_sha256(b'')}:\r\n")
    assert status == 200, body
    assert local.post("/trash/empty", headers={"Repr-Digest": f"sha-256=:{_sha256(b'')}:"}).json()[
        "removed"
    ]
    assert entries() == []


def test_a_field_naming_sha256_twice_is_refused_whichever_comes_last(local: httpx.Client) -> None:
    # RFC 9651 keeps the last of a dictionary's key given twice: `sha-256=:<wrong>:,
    # sha-256=:<right>:` (two Repr-Digest lines a proxy joined into one) was a 201, one digest
    # never compared. Refused now, as the two lines are (rt-regress66b).
    sid = _session(local)
    before = _titles(local)
    for first, last in ((CHANGED, RIGHT), (RIGHT, CHANGED)):
        value = f"sha-256=:{_sha256(first)}:, sha-256=:{_sha256(last)}:"
        for field in ("Repr-Digest", "Content-Digest"):
            answer = local.post("/sessions", content=RIGHT, headers={**JSON, field: value})
            assert answer.status_code == 400, (field, answer.text)
            assert answer.json()["code"] == "bad_request", answer.text
            assert answer.json()["detail"] == (
                f"{field}: {value} names sha-256 twice, so which one counts is ambiguous; "
                f"nothing was stored. Send {field} with each algorithm once"
            )
            put = local.put(f"/sessions/{sid}/files/a.txt", content=RIGHT, headers={field: value})
            assert put.status_code == 400 and "names sha-256 twice" in put.text, put.text
    assert _titles(local) == before
    assert local.get(f"/sessions/{sid}/files").json()["items"] == []


# --- the reads answered before FastAPI, a body lost on the way (rt-regress66c) ---


def _sent_as(server: LiveServer, line: str, extra: str, version: str = "1.1") -> tuple[int, bytes]:
    """``line`` sent with ``extra`` headers and no body, as HTTP/``version``; its answer."""
    head = head_of(server, line, extra).replace(
        b" HTTP/1.1\r\n", f" HTTP/{version}\r\n".encode(), 1
    )
    with connect(server) as sock:
        sock.sendall(head)
        status, _, body = Answers(sock).next()
    return status, body


def test_the_reads_answered_before_fastapi_refuse_a_lost_body_as_its_routes_do(
    server: LiveServer,
) -> None:
    sid = a_session(server)
    meant = b'{"x": 1}'
    lost = {
        "Content-Digest": f"sha-256=:{_sha256(meant)}:",
        "Repr-Digest": f"sha-256=:{_sha256(meant)}:",
        "Digest": f"SHA-256={_sha256(meant)}",
    }
    # The two reads answered before FastAPI, and one FastAPI answers, for comparison.
    for line in (f"GET /sessions/{sid}", "GET /sessions", "GET /sessions?limit=5"):
        plain = _sent_as(server, line, "")
        assert plain[0] == 200, plain
        for field, value in lost.items():
            for framing, version in (("Content-Length: 0\r\n", "1.1"), ("", "1.1"), ("", "1.0")):
                status, body = _sent_as(server, line, f"{framing}{field}: {value}\r\n", version)
                # Before: 200, the session or the page, as if nothing had been sent.
                assert status == 400, (line, field, framing, version, body)
                assert b"takes no body, and none arrived, but its " + field.encode() in body
                assert (
                    f"names the SHA-256 of some bytes (sha-256=:{_sha256(meant)}:)".encode() in body
                )
        # A field without sha-256 is refused as FastAPI's routes refuse it (before: 200).
        sha512 = base64.b64encode(hashlib.sha512(b"").digest()).decode()
        status, body = _sent_as(server, line, f"Repr-Digest: sha-512=:{sha512}:\r\n")
        assert (status, b"digest_unsupported" in body) == (400, True), (line, body)
        # A digest of no bytes is what a bodiless request names: answered as without it.
        assert _sent_as(server, line, f"Repr-Digest: sha-256=:{_sha256(b'')}:\r\n") == plain
    # HEAD comes to the direct reads as the GET it is answered as.
    with connect(server) as sock:
        extra = f"Content-Digest: {lost['Content-Digest']}\r\n"
        sock.sendall(head_of(server, f"HEAD /sessions/{sid}", extra))
        answered = b""
        while b"\r\n" not in answered:
            answered += sock.recv(4096)
    assert answered.startswith(b"HTTP/1.1 400 "), answered
    # The route FastAPI answers, which refused it already.
    status, body = _sent_as(server, f"GET /sessions/{sid}/files", f"Digest: {lost['Digest']}\r\n")
    assert status == 400 and b"takes no body, and none arrived" in body, body
