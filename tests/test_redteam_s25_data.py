"""Red team 25: integrity and the HTTP contract, what earlier rounds and schemathesis did not
send, against a real ``app serve`` on 127.0.0.1 (one server for the module; each test works in
a session of its own).

What broke: a body the server stored as something other than the file its client meant. A
``PUT`` with ``Content-Range`` (a client resuming an upload, or patching part of a file) was
stored as the whole file: ``0123456789`` patched with ``XYZ`` at 7-9 became ``XYZ``, answered
200. A body with ``Content-Encoding: gzip`` was stored compressed, and downloaded so, without
the coding, under the SHA-256 of the compressed bytes. A form sent with ``PUT`` (``curl -X PUT
-F file=@x``) was stored with its boundaries and part headers as the file's bytes. Each is now
refused before its body is read, and nothing is changed.
"""

from __future__ import annotations

import gzip
import hashlib
import socket
from collections.abc import Iterator

import httpx
import pytest
from live_http import WAIT, Answers, a_session, connect, head_of
from redteam_s19_http import one_server

from app.storage import Storage
from app.testing import LiveServer

OLD = b"0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = {"APP_REQUEST_IDLE_SECONDS": "0.5", "APP_REQUEST_SECONDS": "2"}
    with one_server(tmp_path_factory, **settings) as live:
        yield live


@pytest.fixture(scope="module")
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=WAIT) as client:
        yield client


def _with_old_file(server: LiveServer, http: httpx.Client) -> str:
    """A new session holding ``a.txt`` = `OLD`; the files' URL."""
    files = f"/sessions/{a_session(server)}/files"
    assert http.put(f"{files}/a.txt", content=OLD).status_code == 201
    return files


def _unchanged(server: LiveServer, http: httpx.Client, files: str) -> None:
    """``a.txt`` is still `OLD`, the only file, and nothing of its session went to the trash."""
    got = http.get(f"{files}/a.txt")
    assert got.content == OLD
    assert got.headers["etag"] == f'"{hashlib.sha256(OLD).hexdigest()}"'
    assert [f["name"] for f in http.get(files).json()["items"]] == ["a.txt"]
    assert server.data_root is not None
    session_id = files.split("/")[2]
    assert not list((server.data_root / ".trash").glob(f"*{session_id}*"))


# --- a PUT of part of a file -------------------------------------------------------------------


def test_a_put_with_content_range_is_refused_not_stored_as_the_whole_file(
    server: LiveServer, http: httpx.Client
) -> None:
    # RFC 9110 (14.5): an origin server that allows PUT MUST answer 400 to one with
    # Content-Range, "since the payload is likely to be partial content". It was stored as the
    # whole file, 200, and the client believed it had patched three bytes.
    files = _with_old_file(server, http)
    refused = http.put(f"{files}/a.txt", content=b"XYZ", headers={"Content-Range": "bytes 7-9/10"})
    assert refused.status_code == 400, refused.text
    problem = refused.json()
    assert problem["code"] == "bad_request"
    message = problem["message"]
    assert "Content-Range: bytes 7-9/10" in message
    assert "whole files only" in message
    assert "Nothing was changed" in message
    assert "send the whole file without Content-Range" in message
    _unchanged(server, http, files)
    # A new name alike: nothing is created from a part.
    part = http.put(f"{files}/b.txt", content=b"XYZ", headers={"Content-Range": "bytes 0-2/*"})
    assert part.status_code == 400
    _unchanged(server, http, files)


# --- a body in a content coding ----------------------------------------------------------------


def test_a_body_with_a_content_coding_is_refused_not_stored_encoded(
    server: LiveServer, http: httpx.Client
) -> None:
    # The server decodes no content coding, and stored the gzip bytes as the file: downloaded
    # without Content-Encoding, under the SHA-256 of the compressed bytes. RFC 9110 (15.5.16)
    # answers such a body with 415 and Accept-Encoding naming what the server takes.
    files = _with_old_file(server, http)
    coded = gzip.compress(b"new bytes")
    for coding in ("gzip", "GZIP", "identity, gzip", "br", "x-custom"):
        refused = http.put(f"{files}/a.txt", content=coded, headers={"Content-Encoding": coding})
        assert refused.status_code == 415, (coding, refused.text)
        assert refused.headers["accept-encoding"] == "identity"
        problem = refused.json()
        assert problem["code"] == "unsupported_media_type"
        assert f"Content-Encoding: {coding}" in problem["message"]
        assert "does not decode" in problem["message"]
        assert "Nothing was changed" in problem["message"]
        assert "without Content-Encoding" in problem["message"]
    _unchanged(server, http, files)
    # The form route and a session's create alike, before their bodies are read.
    form = http.post(
        files,
        files={"file": ("c.txt", coded)},
        headers={"Content-Encoding": "gzip"},
    )
    assert form.status_code == 415, form.text
    assert "POST" in form.json()["message"]
    _unchanged(server, http, files)
    before = http.get("/sessions", params={"limit": 1}).json()["total"]
    created = http.post(
        "/sessions",
        content=gzip.compress(b'{"title": "t"}'),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert created.status_code == 415, created.text
    assert created.headers["accept-encoding"] == "identity"
    assert http.get("/sessions", params={"limit": 1}).json()["total"] == before
    # `identity` is no coding at all: accepted, and stored as sent.
    plain = http.put(f"{files}/d.txt", content=b"plain", headers={"Content-Encoding": "identity"})
    assert plain.status_code == 201, plain.text
    assert http.get(f"{files}/d.txt").content == b"plain"


# --- a form sent with PUT ----------------------------------------------------------------------


def test_a_form_sent_with_put_is_refused_not_stored_with_its_boundaries(
    server: LiveServer, http: httpx.Client
) -> None:
    # `curl -X PUT -F file=@a.txt .../files/a.txt`: the multipart envelope (boundaries, part
    # headers) was stored as the file's bytes, 200, the old version in the trash.
    files = _with_old_file(server, http)
    refused = http.put(f"{files}/a.txt", files={"file": ("a.txt", b"new bytes")})
    assert refused.status_code == 415, refused.text
    message = refused.json()["message"]
    assert "multipart/form-data" in message
    assert "boundaries" in message
    assert "Nothing was changed" in message
    assert f"POST the form to {files}" in message
    assert "--data-binary @" in message
    _unchanged(server, http, files)
    # Any other media type is the file's business: stored as sent.
    for kind in ("application/octet-stream", "application/x-www-form-urlencoded", "text/plain"):
        kept = http.put(f"{files}/e.txt", content=b"--B\r\n", headers={"Content-Type": kind})
        assert kept.status_code in (200, 201), kept.text
        assert http.get(f"{files}/e.txt").content == b"--B\r\n"


# --- what held ---------------------------------------------------------------------------------


def test_bodies_that_end_early_store_nothing(server: LiveServer, http: httpx.Client) -> None:
    # A Content-Length that promises more than comes, chunks never closed by their last
    # chunk, and `Expect: 100-continue` answered with 100 and then no body: each connection
    # closed or idled out, and no file of any of them appears.
    files = _with_old_file(server, http)
    heads = {
        "short.txt": ("Content-Length: 100\r\n", b"abc"),
        "chunks.txt": ("Transfer-Encoding: chunked\r\n", b"3\r\nabc\r\n"),
        "expect.txt": ("Content-Length: 5\r\nExpect: 100-continue\r\n", b""),
    }
    for name, (extra, body) in heads.items():
        with connect(server) as sock:
            sock.sendall(head_of(server, f"PUT {files}/{name}", extra) + body)
            if name == "expect.txt":
                assert Answers(sock).next()[0] == 100
                # Then nothing: the server gives up after request_idle_seconds.
                rest = sock.recv(4096)
                assert rest.startswith(b"HTTP/1.1 408"), rest
            else:
                sock.shutdown(socket.SHUT_WR)
                answer = b""
                while chunk := sock.recv(4096):
                    answer += chunk
                # Closed unanswered (the client went first), or with a 4xx: never a 2xx.
                assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer
    _unchanged(server, http, files)


# --- names that are one, and names that are two, on a data root ---------------------------------

#: Each name, and the one it is stored as: its NFC form (NFD input, the Ohm and Kelvin signs,
#: which NFC maps to Omega and K); compatibility forms (the `fi` ligature) and case stay apart.
NAMES = {
    "a" * 255: "a" * 255,
    "é" * 127 + "a": "é" * 127 + "a",  # 255 bytes
    "\U0001f600" * 63 + "abc": "\U0001f600" * 63 + "abc",  # 255 bytes, 66 characters
    "e\u0301" * 85: "é" * 85,  # 255 bytes in NFD, 170 in NFC
    "\u03a9": "\u03a9",
    "\u2126": "\u03a9",
    "K": "K",
    "\u212a": "K",
    "\ufb01le": "\ufb01le",
    "file": "file",
    "A.txt": "A.txt",
    "a.txt": "a.txt",
}


def names_hold(store: Storage) -> None:
    """Every write, read, delete and restore finds the one file a name's NFC form names, and
    names at the 255-byte limit (counted in UTF-8 after NFC) go through the trash and back:
    on a data root here, on PostgreSQL and object storage in test_redteam_s25_remote.py."""
    app_store = store
    session_id = app_store.create_session("names", {})["id"]
    for sent, stored in NAMES.items():
        entry = app_store.put_file(session_id, sent, sent.encode(), replace=True)
        assert entry["name"] == stored
    for sent, stored in NAMES.items():
        opened, entry = app_store.open_file(session_id, sent)
        with opened:
            # The last of the names that are one wrote it.
            last = [s for s, t in NAMES.items() if t == stored][-1]
            assert (opened.read(), entry["name"]) == (last.encode(), stored)
    for sent, stored in list(NAMES.items())[:4]:
        app_store.delete_file(session_id, sent)
        app_store.restore(session_id, file=stored)
    listed = sorted(f["name"] for f in app_store.list_files(session_id))
    assert listed == sorted(set(NAMES.values()))
    assert app_store.check().findings == []


def test_names_that_normalise_alike_are_one_file_and_the_rest_stay_apart(
    app_store: Storage,
) -> None:
    names_hold(app_store)
