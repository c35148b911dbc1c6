"""Red team 67 on integrity (branch rt-integrity67): see docs/explanation/attacks/.

What broke: a chunked request's trailer carrying a field that RFC 9110 (6.5.1) has read from
the head alone: a precondition (``If-Match``, ``If-None-Match``), or one that says what the
body is (``Content-Range``, ``Content-Encoding``). The server read it past, as any trailer
field it does not check (the integrity fields are checked there since red team 35), and did
what the request would have done without it: a ``PUT`` whose ``If-Match`` named a version
that was no longer the file's replaced the other client's acknowledged version, 200; one
with ``If-None-Match: *`` replaced an existing file; one with ``Content-Range`` stored the
part as the whole file, and one with ``Content-Encoding: gzip`` stored the coded bytes, where
the same field in the head is evaluated (412) or refused (400, 415). Each is now refused,
400, before the commit, naming the field and where to send it; nothing is stored.

One real ``app serve`` for the module, raw sockets on 127.0.0.1 (httpx sends no trailers);
and each backend's upload given such a trailer directly, the remote one on the suite's
PostgreSQL and ``weed`` (tests/engines.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from engines import PostgresEngine, S3Engine, new_blob_url
from live_http import Answers, connect
from redteam_s19_http import server_and_client
from test_remote_store import PROFILE, _blobs, _replica

from app.digests import Digests
from app.errors import BadRequestError
from app.storage import Storage
from app.testing import LiveServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, httpx.Client]]:
    with server_and_client(tmp_path_factory) as both:
        yield both


def _chunked(
    server: LiveServer, line: str, body: bytes, trailer: str, extra: str = ""
) -> tuple[int, dict[str, Any]]:
    """One chunked request on a raw connection, ``trailer`` after its last chunk."""
    token = "".join(f"{k}: {v}\r\n" for k, v in server.headers.items())
    chunk = f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b""
    request = (
        (
            f"{line} HTTP/1.1\r\nHost: x\r\n{token}{extra}Transfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        + chunk
        + f"0\r\n{trailer}\r\n".encode()
    )
    with connect(server) as sock:
        sock.sendall(request)
        status, _, answer = Answers(sock).next()
    return status, json.loads(answer)


def _replaced_since_seen(client: httpx.Client) -> tuple[str, str, str]:
    """A session, a file of it, and the ETag a client read of the file before another client
    replaced it: an If-Match of that ETag now names no current version."""
    session = client.post("/sessions", json={}).json()["id"]
    path = f"/sessions/{session}/files/kept.txt"
    assert client.put(path, content=b"version 1").status_code == 201
    seen = client.head(path).headers["etag"]
    assert client.put(path, content=b"version 2, another client's").status_code == 200
    return session, path, seen


def test_a_trailer_field_read_from_the_head_alone_is_refused_and_nothing_is_replaced(
    served: tuple[LiveServer, httpx.Client],
) -> None:
    server, client = served
    session, path, seen = _replaced_since_seen(client)
    assert client.put(path, content=b"x", headers={"If-Match": seen}).status_code == 412

    refused = [
        (f"If-Match: {seen}", "If-Match", "a precondition"),
        ("If-None-Match: *", "If-None-Match", "a precondition: a PUT with it only creates"),
        ("Content-Range: bytes 0-2/10", "Content-Range", "says the body is a part of a file"),
        ("Content-Encoding: gzip", "Content-Encoding", "says the body is coded"),
        ("X-Note: read past\r\nif-match: *", "If-Match", "a precondition"),
    ]
    for trailer, shown, says in refused:
        status, problem = _chunked(server, f"PUT {path}", b"version 3", f"{trailer}\r\n")
        assert (status, problem.get("code")) == (400, "bad_request"), (trailer, problem)
        message = problem["message"]
        assert message.startswith(f"PUT refused: the trailer of the body has {shown}: "), message
        assert says in message, message
        assert "RFC 9110 (6.5.1) has it read from the request's head" in message, message
        assert f"Nothing was done. Send {shown} in the head, before the body" in message
    assert client.get(path).content == b"version 2, another client's"
    assert [f["name"] for f in client.get(f"/sessions/{session}/files").json()["items"]] == [
        "kept.txt"
    ]

    # A new file, a form's POST and a session's create alike: nothing made.
    status, problem = _chunked(
        server, f"PUT /sessions/{session}/files/new.txt", b"new", "If-Match: *\r\n"
    )
    assert status == 400, problem
    assert client.get(f"/sessions/{session}/files/new.txt").status_code == 404
    form = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="m.txt"\r\n\r\n'
        b"form\r\n--B--\r\n"
    )
    status, problem = _chunked(
        server,
        f"POST /sessions/{session}/files",
        form,
        "Content-Type: text/plain\r\n",
        "Content-Type: multipart/form-data; boundary=B\r\n",
    )
    assert status == 400, problem
    assert "the trailer of the multipart body has Content-Type" in problem["message"], problem
    assert client.get(f"/sessions/{session}/files/m.txt").status_code == 404
    before = client.get("/sessions", params={"limit": 100}).json()["total"]
    status, problem = _chunked(
        server,
        "POST /sessions",
        b"{}",
        "If-None-Match: *\r\n",
        "Content-Type: application/json\r\n",
    )
    assert status == 400, problem
    assert client.get("/sessions", params={"limit": 100}).json()["total"] == before

    # Any other trailer field is read past as before, and the file is the chunks' bytes.
    status, entry = _chunked(server, f"PUT {path}", b"version 3", "X-Note: read past\r\n")
    assert status == 200, entry
    assert entry["sha256"] == hashlib.sha256(b"version 3").hexdigest()


def test_a_delete_or_an_empty_trash_whose_trailer_has_a_precondition_changes_nothing(
    served: tuple[LiveServer, httpx.Client],
) -> None:
    server, client = served
    session, path, seen = _replaced_since_seen(client)
    # Before: 200, the current version deleted by a client whose If-Match named the one
    # before it; the session deleted alike; the whole trash emptied for good.
    for line in (f"DELETE {path}", f"DELETE /sessions/{session}"):
        status, problem = _chunked(server, line, b"", f"If-Match: {seen}\r\n")
        assert (status, problem.get("code")) == (400, "bad_request"), (line, problem)
        assert "DELETE refused: the trailer of no body has If-Match: " in problem["message"]
    assert client.get(path).content == b"version 2, another client's"

    assert client.delete(f"/sessions/{session}").status_code in (200, 204)
    assert server.data_root is not None
    trash = server.data_root / ".trash"
    entries = sorted(p.name for p in trash.iterdir())
    assert any(session in name for name in entries), entries
    status, problem = _chunked(server, "POST /trash/empty", b"", 'If-Match: "x"\r\n')
    assert (status, problem.get("code")) == (400, "bad_request"), problem
    assert "the trailer of no body has If-Match" in problem["message"], problem
    assert sorted(p.name for p in trash.iterdir()) == entries


def _refused_on(store: Storage) -> None:
    """A replace whose trailer has If-Match, on ``store``: refused at the commit, the
    acknowledged version kept."""
    session = store.create_session("t", {})["id"]
    store.put_file(session, "a.txt", b"acknowledged", replace=False)
    trailer = [(b"If-Match", b'"' + hashlib.sha256(b"another").hexdigest().encode() + b'"')]
    digests = Digests.parse({}, "PUT", trailer=lambda: trailer)
    upload = store.begin_upload(session, "a.txt", replace=True, digests=digests)
    upload.write(b"replaced?")
    with pytest.raises(BadRequestError) as refused:
        upload.commit()
    assert "PUT refused: the trailer of the body has If-Match: " in str(refused.value)
    file, entry = store.open_file(session, "a.txt")
    with file:
        assert file.read() == b"acknowledged"
    assert entry["sha256"] == hashlib.sha256(b"acknowledged").hexdigest()
    assert store.list_trash() == []


def test_the_local_backend_refuses_such_a_trailer_before_its_commit(app_store: Storage) -> None:
    _refused_on(app_store)


def test_the_remote_backend_refuses_such_a_trailer_before_its_row(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    with (
        postgres_engine.opened_database(PROFILE) as (_, url),
        _replica(s3_engine, (url, new_blob_url(s3_engine))) as store,
    ):
        _refused_on(store)
        # The upload's object is deleted with it: the one left is the acknowledged file's.
        assert len(_blobs(store)) == 1
