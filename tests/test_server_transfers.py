"""Uploads and downloads over HTTP: what a client sends and what it gets, whatever the framing.

Both upload routes stream the body into a temporary file (`app.server.uploads.Pipeline`), and
a refusal must not depend on how the body was framed: the same request is sent with a
``Content-Length``, chunked, and after ``Expect: 100-continue``, and the three answers must be
one status and one problem document. A download is sent from the file the route opened
(`app.server.downloads.OpenFileResponse`); its headers, ranges and ``HEAD`` must be the same
for a file of one read of `FileResponse` and for a larger one. The hostile cases (a session
deleted or swapped while an upload is in flight, a client that sends fewer or more bytes than
it declared, a stored file whose size is not its record's, a file replaced while it is read)
must keep nothing that was refused and send nothing that is not the file's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_http import Answers, a_session, connect, head_of
from starlette.testclient import TestClient

from app.config import Config
from app.server import create_app
from app.server.downloads import OpenFileResponse
from app.store import Store, new_session_id
from app.store.upload import Upload
from app.testing import LiveServer

LIMIT = 1000
CHUNK = 64 * 1024  # FileResponse's chunk: a file of at most this much is sent in one read
_POLL = 0.05


@pytest.fixture
def client(small: TestClient) -> TestClient:
    """The in-process app with an upload limit of LIMIT bytes (conftest's `small`)."""
    return small


@pytest.fixture
def sid(client: TestClient) -> str:
    response = client.post("/sessions", json={"title": "transfers"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def nothing_kept(store: Store, session_id: str, before: list[Any]) -> None:
    assert store.list_files(session_id) == before
    assert list(store.root.tmp_dir.iterdir()) == []


def three_ways(
    client: TestClient, method: str, url: str, body: bytes, headers: dict[str, str] | None = None
) -> list[httpx.Response]:
    """The same bytes sent with a Content-Length, chunked, and after asking for 100 Continue."""
    headers = headers or {}
    return [
        client.request(method, url, content=body, headers=headers),
        client.request(method, url, content=iter([body]), headers=headers),
        client.request(method, url, content=body, headers={**headers, "Expect": "100-continue"}),
    ]


def one_answer(responses: list[httpx.Response], status: int, code: str) -> dict[str, Any]:
    """The status and problem document all ``responses`` share."""
    documents = [(r.status_code, r.headers.get("content-type"), r.json()) for r in responses]
    assert documents[0][0] == status, documents[0]
    assert documents[0][2]["code"] == code, documents[0]
    assert documents[1:] == [documents[0]] * (len(documents) - 1), documents
    document: dict[str, Any] = documents[0][2]
    return document


# --- an upload is refused the same way however its body is framed -----------------------------

_MULTIPART = {"Content-Type": "multipart/form-data; boundary=B"}
_END = b"--B--\r\n"


def part(disposition: bytes, data: bytes) -> bytes:
    return (
        b"--B\r\nContent-Disposition: form-data; "
        + disposition
        + b"\r\nContent-Type: application/octet-stream\r\n\r\n"
        + data
        + b"\r\n"
    )


def file_part(filename: bytes, data: bytes) -> bytes:
    return part(b'name="file"; filename="' + filename + b'"', data)


MULTIPART_REFUSALS = {
    "no closing boundary": (file_part(b"a.txt", b"abc"), 400, "bad_request"),
    "no file field": (part(b'name="note"', b"hi") + _END, 400, "bad_request"),
    "a file field without a filename": (part(b'name="file"', b"abc") + _END, 400, "bad_request"),
    "a path as the filename": (file_part(b"../x", b"abc") + _END, 400, "invalid_name"),
    "a windows path as the filename": (
        file_part(b"C:\\dir\\a", b"abc") + _END,
        400,
        "invalid_name",
    ),
    "two file fields": (
        file_part(b"one", b"1") + file_part(b"two", b"2") + _END,
        400,
        "bad_request",
    ),
    "not multipart at all": (b"just some bytes\r\n", 400, "bad_request"),
    "an empty body": (b"", 400, "bad_request"),
    "a file over the limit": (
        file_part(b"big", b"x" * (LIMIT + 1)) + _END,
        413,
        "upload_too_large",
    ),
    "a file over the limit without its closing boundary": (
        file_part(b"big", b"x" * (LIMIT + 1)),
        413,
        "upload_too_large",
    ),
    "a file over the limit, then a second file field": (
        file_part(b"big", b"x" * (LIMIT + 1)) + file_part(b"two", b"2") + _END,
        400,
        "bad_request",
    ),
}


@pytest.mark.parametrize("case", MULTIPART_REFUSALS)
def test_a_multipart_upload_is_refused_the_same_however_its_body_is_framed(
    client: TestClient, app_store: Store, sid: str, case: str
) -> None:
    body, status, code = MULTIPART_REFUSALS[case]
    answers = three_ways(client, "POST", f"/sessions/{sid}/files", body, _MULTIPART)
    one_answer(answers, status, code)
    nothing_kept(app_store, sid, [])


def test_a_multipart_upload_to_a_missing_session_is_404_before_its_body_is_looked_at(
    client: TestClient, app_store: Store
) -> None:
    url = f"/sessions/{new_session_id()}/files"
    for body in (file_part(b"a.txt", b"abc") + _END, b"not multipart", b""):
        one_answer(three_ways(client, "POST", url, body, _MULTIPART), 404, "session_not_found")
    assert list(app_store.root.tmp_dir.iterdir()) == []


def test_an_upload_to_a_session_in_the_trash_is_404_however_framed(
    client: TestClient, app_store: Store, sid: str
) -> None:
    client.delete(f"/sessions/{sid}")
    post = three_ways(
        client, "POST", f"/sessions/{sid}/files", file_part(b"a", b"1") + _END, _MULTIPART
    )
    one_answer(post, 404, "session_not_found")
    put = three_ways(client, "PUT", f"/sessions/{sid}/files/a", b"1")
    assert one_answer(put, 404, "session_not_found") == post[0].json()
    assert list(app_store.root.tmp_dir.iterdir()) == []


def test_a_taken_name_is_409_before_the_size_however_framed(
    client: TestClient, app_store: Store, sid: str
) -> None:
    assert client.put(f"/sessions/{sid}/files/taken", content=b"first").status_code == 201
    before = app_store.list_files(sid)
    for data in (b"second", b"x" * (LIMIT + 1)):
        body = file_part(b"taken", data) + _END
        answers = three_ways(client, "POST", f"/sessions/{sid}/files", body, _MULTIPART)
        one_answer(answers, 409, "file_exists")
    nothing_kept(app_store, sid, before)


def test_a_session_with_max_files_refuses_a_new_name_however_framed(
    client: TestClient, app_store: Store, sid: str
) -> None:
    app_store.max_files = 1
    assert client.put(f"/sessions/{sid}/files/one", content=b"1").status_code == 201
    before = app_store.list_files(sid)
    post = three_ways(
        client, "POST", f"/sessions/{sid}/files", file_part(b"two", b"2") + _END, _MULTIPART
    )
    one_answer(post, 409, "too_many_files")
    put = three_ways(client, "PUT", f"/sessions/{sid}/files/two", b"2")
    assert one_answer(put, 409, "too_many_files") == post[0].json()
    nothing_kept(app_store, sid, before)


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("a%5Cb", 400, "invalid_name"),
        ("..%2Fx", 400, "invalid_name"),
        (".hidden", 400, "invalid_name"),
    ],
)
def test_a_put_with_a_bad_name_is_refused_the_same_however_framed(
    client: TestClient, app_store: Store, sid: str, name: str, status: int, code: str
) -> None:
    one_answer(three_ways(client, "PUT", f"/sessions/{sid}/files/{name}", b"x"), status, code)
    nothing_kept(app_store, sid, [])


def test_a_put_to_a_missing_session_is_404_however_framed(
    client: TestClient, app_store: Store
) -> None:
    missing = new_session_id()
    one_answer(
        three_ways(client, "PUT", f"/sessions/{missing}/files/a", b"x"), 404, "session_not_found"
    )
    assert list(app_store.root.tmp_dir.iterdir()) == []


def test_an_upload_is_stored_the_same_with_a_length_or_chunked(
    client: TestClient, app_store: Store, sid: str
) -> None:
    data = os.urandom(LIMIT)
    entries = []

    def sent(way: str, body: bytes) -> bytes | Iterator[bytes]:
        return body if way == "length" else iter([body[:50], body[50:]])

    for way in ("length", "chunked"):
        body = file_part(f"m-{way}".encode(), data) + _END
        posted = client.post(f"/sessions/{sid}/files", content=sent(way, body), headers=_MULTIPART)
        assert posted.status_code == 201, posted.text
        put = client.put(f"/sessions/{sid}/files/p-{way}", content=sent(way, data))
        assert put.status_code == 201, put.text
        replaced = client.put(f"/sessions/{sid}/files/p-{way}", content=sent(way, data))
        assert replaced.status_code == 200, replaced.text
        assert "location" in put.headers and "location" not in replaced.headers
        entries += [posted.json(), put.json(), replaced.json()]
    assert {(e["size"], e["sha256"]) for e in entries} == {
        (len(data), hashlib.sha256(data).hexdigest())
    }
    assert list(app_store.root.tmp_dir.iterdir()) == []


# --- a Content-Length with a Transfer-Encoding: the body is chunked, its size unknown -------


def test_a_chunked_put_that_also_declares_a_small_length_is_held_to_the_limit_as_it_comes(
    client: TestClient, app_store: Store, sid: str
) -> None:
    # The Transfer-Encoding frames the body (RFC 9112, 6.3), whatever Content-Length says:
    # trusting the declared 5 bytes, the limit would be skipped and the body held to none.
    # (The test client hands the app a body in one piece: a real server's test is further
    # down.)
    response = client.put(
        f"/sessions/{sid}/files/big",
        content=iter([b"x" * 600] * 10),
        headers={"Content-Length": "5", "Transfer-Encoding": "chunked"},
    )
    assert response.status_code == 413, response.text
    nothing_kept(app_store, sid, [])


def test_a_chunked_multipart_body_that_also_declares_a_small_length_is_held_to_the_bound(
    client: TestClient, app_store: Store, sid: str
) -> None:
    # Junk after the closing boundary is skipped by the parser: held to nothing but the
    # declared 5 bytes, a body of any size would be accepted.
    body = file_part(b"a", b"ok") + _END
    response = client.post(
        f"/sessions/{sid}/files",
        content=iter([body, *[b"x" * 65536] * 16]),
        headers={**_MULTIPART, "Content-Length": "5", "Transfer-Encoding": "chunked"},
    )
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "upload_too_large"
    nothing_kept(app_store, sid, [])


# --- an upload in flight while its session changes ----------------------------------------------


@dataclasses.dataclass
class Gate:
    """Holds an upload on its worker thread at one store call, until the test lets it go.

    ``at`` is ``"begin_upload"`` (before the first byte is kept) or ``"commit"`` (every byte
    is in ``.tmp/``, nothing is in the session yet); None lets every call through.
    """

    at: str | None = None
    reached: threading.Event = dataclasses.field(default_factory=threading.Event)
    go: threading.Event = dataclasses.field(default_factory=threading.Event)

    def hold(self, call: str) -> None:
        if self.at == call:
            self.reached.set()
            self.go.wait()

    def wait_for(self, pending: Future[httpx.Response]) -> None:
        while not self.reached.wait(_POLL):  # a poll on a condition, not a time limit
            assert not pending.done(), pending.result().text


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    held = Gate()
    begin_upload, commit = Store.begin_upload, Upload.commit

    def held_begin(self: Store, *args: Any, **kwargs: Any) -> Any:
        held.hold("begin_upload")
        return begin_upload(self, *args, **kwargs)

    def held_commit(self: Upload) -> Any:
        held.hold("commit")
        return commit(self)

    monkeypatch.setattr(Store, "begin_upload", held_begin)
    monkeypatch.setattr(Upload, "commit", held_commit)
    try:
        yield held
    finally:
        held.go.set()  # never leave a worker thread waiting


def _swap_for_a_link_to(other: Path) -> Callable[[Path], None]:
    def swap(directory: Path) -> None:
        directory.rename(directory.with_name(directory.name + ".moved"))
        directory.symlink_to(other, target_is_directory=True)

    return swap


def _swap_records_for_a_link_to(other: Path) -> Callable[[Path], None]:
    def swap(directory: Path) -> None:
        shutil.rmtree(directory / "records")
        (directory / "records").symlink_to(other / "records", target_is_directory=True)

    return swap


@pytest.mark.parametrize("at", ["begin_upload", "commit"])
@pytest.mark.parametrize("route", ["PUT", "POST"])
@pytest.mark.parametrize("change", ["deleted", "a link to another session", "records/ a link"])
def test_a_session_changed_while_an_upload_is_in_flight_gets_nothing(
    client: TestClient, app_store: Store, sid: str, gate: Gate, at: str, route: str, change: str
) -> None:
    other = app_store.create_session()["id"]
    assert client.put(f"/sessions/{other}/files/kept", content=b"kept").status_code == 201
    assert client.put(f"/sessions/{sid}/files/mine", content=b"mine").status_code == 201
    gate.at = at
    others_before = app_store.list_files(other)
    other_dir = app_store.sessions_dir / other
    other_tree = sorted(str(p.relative_to(other_dir)) for p in other_dir.rglob("*"))
    if route == "PUT":
        send = lambda: client.put(f"/sessions/{sid}/files/new", content=b"new")  # noqa: E731
    else:
        body = file_part(b"new", b"new") + _END
        send = lambda: client.post(  # noqa: E731
            f"/sessions/{sid}/files", content=body, headers=_MULTIPART
        )
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(send)
        gate.wait_for(pending)
        directory = app_store.sessions_dir / sid
        if change == "deleted":
            app_store.delete_session(sid)
        elif change == "a link to another session":
            _swap_for_a_link_to(other_dir)(directory)
        else:
            _swap_records_for_a_link_to(other_dir)(directory)
        gate.go.set()
        response = pending.result()
    expected = {
        "deleted": (404, "session_not_found"),
        "a link to another session": (404, "session_not_found"),
        "records/ a link": (503, "data_root_changed"),
    }
    assert (response.status_code, response.json()["code"]) == expected[change], response.text
    assert app_store.list_files(other) == others_before
    assert sorted(str(p.relative_to(other_dir)) for p in other_dir.rglob("*")) == other_tree
    assert list(app_store.root.tmp_dir.iterdir()) == []
    assert not any(p.name == "new" for p in app_store.root.path.rglob("*") if p.is_file())


def test_an_upload_held_before_its_commit_holds_its_upload_slot(
    app_store: Store, app_config: Config, gate: Gate
) -> None:
    config = dataclasses.replace(app_config, max_uploads_in_flight=1)
    headers = {"Authorization": f"Bearer {config.api_token}"}
    with TestClient(create_app(app_store, config), headers=headers) as one_slot:
        sid = one_slot.post("/sessions", json={}).json()["id"]
        gate.at = "commit"
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(one_slot.put, f"/sessions/{sid}/files/first", content=b"1")
            gate.wait_for(pending)
            refused = one_slot.put(f"/sessions/{sid}/files/second", content=b"2")
            assert refused.status_code == 503, refused.text
            assert refused.json()["code"] == "too_many_uploads"
            gate.go.set()
            assert pending.result().status_code == 201
        assert one_slot.put(f"/sessions/{sid}/files/second", content=b"2").status_code == 201


# --- downloads: a file of one read and a file of many, the same answers ------------------------

ONE_READ_SIZES = [0, 1, CHUNK - 1, CHUNK]
MANY_READS_SIZES = [CHUNK + 1, 3 * CHUNK + 17]
_SHAPE = (
    "content-length",
    "etag",
    "last-modified",
    "content-disposition",
    "accept-ranges",
    "x-content-type-options",
    "content-type",
)


@pytest.fixture
def unlimited(client: TestClient, app_store: Store) -> TestClient:
    app_store.max_upload_bytes = 2**20
    return client


def stored(client: TestClient, sid: str, name: str, data: bytes) -> None:
    response = client.put(f"/sessions/{sid}/files/{name}", content=data)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("size", ONE_READ_SIZES + MANY_READS_SIZES)
def test_a_download_has_the_same_headers_whatever_its_size(
    unlimited: TestClient, sid: str, size: int
) -> None:
    data = os.urandom(size)
    stored(unlimited, sid, "f.bin", data)
    url = f"/sessions/{sid}/files/f.bin"
    got, head = unlimited.get(url), unlimited.head(url)
    assert got.status_code == head.status_code == 200
    assert got.content == data
    assert head.content == b""
    assert got.headers == head.headers  # HEAD is answered by FileResponse itself
    assert [k for k in _SHAPE if k in got.headers] == list(_SHAPE)
    assert got.headers["content-length"] == str(size)
    assert got.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert got.headers["accept-ranges"] == "bytes"
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-disposition"] == 'attachment; filename="f.bin"'
    assert got.headers["content-type"] == "application/octet-stream"


def test_downloads_of_one_read_and_of_many_answer_with_the_same_header_names(
    unlimited: TestClient, sid: str
) -> None:
    stored(unlimited, sid, "small", b"s" * 10)
    stored(unlimited, sid, "large", b"l" * (CHUNK + 10))
    small = unlimited.get(f"/sessions/{sid}/files/small")
    large = unlimited.get(f"/sessions/{sid}/files/large")
    assert sorted(small.headers.keys()) == sorted(large.headers.keys())


def _ranges(etag: str, modified: str) -> list[tuple[str, dict[str, str]]]:
    return [
        ("one range", {"Range": "bytes=2-4"}),
        ("an open range", {"Range": "bytes=5-"}),
        ("a suffix", {"Range": "bytes=-3"}),
        ("two ranges", {"Range": "bytes=0-1,4-5"}),
        ("If-Range with the ETag", {"Range": "bytes=2-4", "If-Range": etag}),
        ("If-Range with Last-Modified", {"Range": "bytes=2-4", "If-Range": modified}),
        ("If-Range with another ETag", {"Range": "bytes=2-4", "If-Range": '"other"'}),
        ("If-Range without a Range", {"If-Range": '"other"'}),
        ("a range past the end", {"Range": "bytes=99999999-"}),
        ("a malformed range", {"Range": "bytes=x-y"}),
        ("not bytes", {"Range": "lines=1-2"}),
    ]


@pytest.mark.parametrize("size", [10, CHUNK, CHUNK + 10])
def test_a_range_on_a_download_is_answered_as_file_response_answers_it(
    unlimited: TestClient, sid: str, size: int
) -> None:
    data = bytes(i % 251 for i in range(size))
    stored(unlimited, sid, "r.bin", data)
    url = f"/sessions/{sid}/files/r.bin"
    first = unlimited.head(url)
    answers = {}
    for case, headers in _ranges(first.headers["etag"], first.headers["last-modified"]):
        got = unlimited.get(url, headers=headers)
        head = unlimited.head(url, headers=headers)
        assert got.status_code == head.status_code, case
        answers[case] = got
    for case in ("one range", "If-Range with the ETag"):
        assert answers[case].status_code == 206, case
        assert answers[case].content == data[2:5], case
        assert answers[case].headers["content-range"] == f"bytes 2-4/{size}", case
        assert answers[case].headers["content-length"] == "3", case
    assert answers["an open range"].content == data[5:]
    assert answers["a suffix"].content == data[-3:]
    two = answers["two ranges"]
    assert two.status_code == 206
    assert two.headers["content-type"].startswith("multipart/byteranges")
    assert data[0:2] in two.content and data[4:6] in two.content
    # A date is not a strong validator: a version replaced within its second has the same one
    # (tests/test_redteam_s19_http_ranges.py).
    # A unit it does not know is ignored, as RFC 9110 (14.2) says it must be (red team 36:
    # it was 400 "Only support bytes range", as FileResponse answers).
    for case in (
        "If-Range with another ETag",
        "If-Range with Last-Modified",
        "If-Range without a Range",
        "not bytes",
    ):
        assert answers[case].status_code == 200, case
        assert answers[case].content == data, case
        assert answers[case].headers["content-length"] == str(size), case
    past = answers["a range past the end"]
    assert past.status_code == 416
    assert past.json()["code"] == "range_not_satisfiable"
    assert past.headers["content-range"] == f"bytes */{size}"
    assert answers["a malformed range"].status_code == 400
    assert answers["a malformed range"].json()["code"] == "bad_request"


@pytest.mark.parametrize("size", [10, CHUNK + 10])
@pytest.mark.parametrize("change", ["deleted", "replaced", "its session deleted"])
def test_a_file_changed_between_its_open_and_its_send_is_sent_as_it_was_opened(
    unlimited: TestClient,
    app_store: Store,
    sid: str,
    monkeypatch: pytest.MonkeyPatch,
    size: int,
    change: str,
) -> None:
    data = os.urandom(size)
    stored(unlimited, sid, "f.bin", data)
    send = OpenFileResponse.__call__

    async def change_first(self: OpenFileResponse, scope: Any, receive: Any, send_: Any) -> None:
        if change == "deleted":
            app_store.delete_file(sid, "f.bin")
        elif change == "its session deleted":
            app_store.delete_session(sid)
        else:
            with app_store.begin_upload(sid, "f.bin", replace=True) as upload:
                upload.write(b"new bytes")
                upload.commit()
        await send(self, scope, receive, send_)

    monkeypatch.setattr(OpenFileResponse, "__call__", change_first)
    got = unlimited.get(f"/sessions/{sid}/files/f.bin")
    monkeypatch.setattr(OpenFileResponse, "__call__", send)
    assert got.status_code == 200, got.text
    assert got.content == data
    assert got.headers["content-length"] == str(size)
    assert got.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    after = unlimited.get(f"/sessions/{sid}/files/f.bin")
    assert after.status_code == (200 if change == "replaced" else 404)
    if change == "replaced":
        assert after.content == b"new bytes"


@pytest.mark.parametrize(
    ("recorded", "on_disk"),
    [(10, 100), (100, 10), (100, 0), (10, CHUNK + 5), (CHUNK + 5, 10), (CHUNK + 5, 3 * CHUNK)],
)
def test_a_file_whose_size_is_not_its_records_is_refused_before_a_byte_is_sent(
    unlimited: TestClient, app_store: Store, sid: str, recorded: int, on_disk: int
) -> None:
    # Never bytes that are not the file's, never a Content-Length that is not the body's.
    # Such bytes were sent as they were on disk, a 200 under the acknowledged ETag, until
    # red team 35 (tests/test_redteam_s35_integrity.py): they are not the acknowledged file.
    stored(unlimited, sid, "f.bin", os.urandom(recorded))
    blob, entry = app_store.file_path(sid, "f.bin")
    assert entry["size"] == recorded
    disk = os.urandom(on_disk)
    blob.chmod(0o600)
    blob.write_bytes(disk)
    got = unlimited.get(f"/sessions/{sid}/files/f.bin")
    assert got.status_code == 500, got.text
    assert got.json()["code"] == "file_damaged"
    assert f"are {on_disk} bytes long, where {recorded} were acknowledged" in got.text
    assert unlimited.head(f"/sessions/{sid}/files/f.bin").status_code == 500


def test_a_head_does_not_read_the_file(
    unlimited: TestClient, sid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored(unlimited, sid, "f.bin", b"bytes")
    reads: list[str] = []
    open_file = OpenFileResponse._open_file

    def counted(self: OpenFileResponse) -> Any:
        reads.append(self._file.name)
        return open_file(self)

    monkeypatch.setattr(OpenFileResponse, "_open_file", counted)
    head = unlimited.head(f"/sessions/{sid}/files/f.bin")
    assert (head.status_code, head.content) == (200, b"")
    assert reads == []
    assert unlimited.get(f"/sessions/{sid}/files/f.bin").content == b"bytes"
    assert len(reads) == 1


# --- a real server: what a client declares and what it sends ----------------------------------


def files_of(server: LiveServer, session_id: str) -> dict[str, int]:
    listing = httpx.get(f"{server.url}/sessions/{session_id}/files", headers=server.headers)
    return {f["name"]: f["size"] for f in listing.json()["items"]}


def temp_files(server: LiveServer) -> list[Path]:
    assert server.data_root is not None
    return [p for p in (server.data_root / ".tmp").rglob("*") if p.is_file()]


_QUICK = {
    "APP_REQUEST_IDLE_SECONDS": "0.5",
    "APP_MAX_UPLOADS_IN_FLIGHT": "1",
    "APP_MAX_UPLOAD_BYTES": str(LIMIT),
}


@pytest.mark.parametrize("tight", [_QUICK], indirect=True)
@pytest.mark.parametrize("route", ["PUT", "POST"])
def test_a_body_that_stops_short_of_its_length_is_408_and_keeps_nothing(
    tight: LiveServer, route: str
) -> None:
    session_id = a_session(tight)
    if route == "PUT":
        line, extra = f"PUT /sessions/{session_id}/files/short.bin", ""
        body = b"x" * 100
    else:
        line = f"POST /sessions/{session_id}/files"
        extra = "Content-Type: multipart/form-data; boundary=B\r\n"
        body = file_part(b"short.bin", b"x" * 100) + _END
    with connect(tight) as sock:
        sock.sendall(head_of(tight, line, extra + f"Content-Length: {len(body)}\r\n") + body[:50])
        status, headers, answer = Answers(sock).next()
    assert status == 408, answer
    assert headers["connection"] == "close"
    assert b"request_idle_seconds" in answer
    assert files_of(tight, session_id) == {}
    assert temp_files(tight) == []


@pytest.mark.parametrize("tight", [_QUICK], indirect=True)
def test_bytes_past_a_declared_length_are_not_part_of_the_file(tight: LiveServer) -> None:
    session_id = a_session(tight)
    line = f"PUT /sessions/{session_id}/files/exact.bin"
    with connect(tight) as sock:
        sock.sendall(
            head_of(tight, line, "Content-Length: 10\r\n") + b"0123456789" + b"MORE BYTES\r\n\r\n"
        )
        answers = Answers(sock)
        status, _, answer = answers.next()
        assert status == 201, answer
        rest = answers.rest()  # the extra bytes were read as a request of their own
    assert rest.startswith(b"HTTP/1.1 400 "), rest
    assert files_of(tight, session_id) == {"exact.bin": 10}
    got = httpx.get(f"{tight.url}/sessions/{session_id}/files/exact.bin", headers=tight.headers)
    assert got.content == b"0123456789"
    assert temp_files(tight) == []


@pytest.mark.parametrize("tight", [_QUICK], indirect=True)
def test_uploads_pipelined_in_one_packet_are_each_stored_whole(tight: LiveServer) -> None:
    session_id = a_session(tight)
    one, two = os.urandom(700), os.urandom(300)
    body = file_part(b"two.bin", two) + _END
    multipart = "Content-Type: multipart/form-data; boundary=B\r\n"
    with connect(tight) as sock:
        sock.sendall(
            head_of(tight, f"PUT /sessions/{session_id}/files/one.bin", "Content-Length: 700\r\n")
            + one
            + head_of(
                tight,
                f"POST /sessions/{session_id}/files",
                multipart + f"Content-Length: {len(body)}\r\n",
            )
            + body
            + head_of(tight, f"GET /sessions/{session_id}/files/one.bin", "Connection: close\r\n")
        )
        answers = Answers(sock)
        assert answers.next()[0] == 201
        assert answers.next()[0] == 201
        status, _, got = answers.next()
    assert (status, got) == (200, one)
    assert files_of(tight, session_id) == {"one.bin": 700, "two.bin": 300}


def _upload_until_accepted(server: LiveServer, session_id: str, name: str) -> None:
    """A PUT of two bytes, retried while the server still holds a slot for a client that left."""
    url = f"{server.url}/sessions/{session_id}/files/{name}"
    for _ in range(600):  # a leaked slot is never given back: this fails after the bound
        response = httpx.put(url, content=b"ok", headers=server.headers)
        if response.status_code != 503:
            break
        time.sleep(_POLL)
    assert response.status_code == 201, response.text


def _refused_and_failed(session_id: str) -> list[tuple[str, str, str, bytes, int]]:
    """Uploads that do not succeed, with a Content-Length and chunked: (case, request line,
    framing headers, the bytes sent, the status expected; 0 for a client that leaves without
    an answer)."""
    files = f"/sessions/{session_id}/files"
    missing = f"/sessions/{new_session_id()}/files"
    multipart = "Content-Type: multipart/form-data; boundary=B\r\n"
    chunked = "Transfer-Encoding: chunked\r\n"
    ok, taken = file_part(b"ok", b"x") + _END, file_part(b"taken", b"x") + _END
    big = file_part(b"big", b"x" * (LIMIT + 1)) + _END

    def length(body: bytes) -> str:
        return f"Content-Length: {len(body)}\r\n"

    def chunks(body: bytes) -> bytes:
        return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)

    expect = "Expect: 100-continue\r\n"
    return [
        ("PUT, no session", f"PUT {missing}/a", length(b"x"), b"x", 404),
        ("POST, no session", f"POST {missing}", multipart + length(ok), ok, 404),
        ("POST, no session, Expect", f"POST {missing}", multipart + length(ok) + expect, b"", 404),
        ("POST, malformed", f"POST {files}", multipart + length(b"garbage"), b"garbage", 400),
        ("POST, name taken", f"POST {files}", multipart + length(taken), taken, 409),
        ("POST, too large", f"POST {files}", multipart + length(big), big, 413),
        ("POST, too large, chunked", f"POST {files}", multipart + chunked, chunks(big), 413),
        ("PUT, too large, chunked", f"PUT {files}/big", chunked, chunks(b"x" * (LIMIT + 1)), 413),
        ("PUT, stalled", f"PUT {files}/s", length(b"x" * 10), b"x", 408),
        ("PUT, chunked, stalled", f"PUT {files}/s", chunked, b"1\r\nx\r\n", 408),
        ("POST, stalled", f"POST {files}", multipart + length(ok), ok[:40], 408),
        ("PUT, client left", f"PUT {files}/l", length(b"x" * 10), b"x", 0),
        ("POST, client left", f"POST {files}", multipart + length(ok), ok[:40], 0),
    ]


@pytest.mark.parametrize("tight", [_QUICK], indirect=True)
def test_no_refused_or_failed_upload_keeps_its_slot(tight: LiveServer) -> None:
    # One slot (max_uploads_in_flight=1): after each refusal or failure, whatever the body's
    # framing, the next upload gets it. N failures, then N + 1 successes.
    server = tight
    session_id = a_session(server)
    url = f"{server.url}/sessions/{session_id}/files"
    assert httpx.put(f"{url}/taken", content=b"t", headers=server.headers).status_code == 201
    failures = _refused_and_failed(session_id)
    for number, (case, line, framing, sent, status) in enumerate(failures):
        with connect(server) as sock:
            sock.sendall(head_of(server, line, framing) + sent)
            if status:
                answer = Answers(sock).next()
                assert answer[0] == status, (case, answer)
        _upload_until_accepted(server, session_id, f"after-{number}")
    assert set(files_of(server, session_id)) == {"taken"} | {
        f"after-{n}" for n in range(len(failures))
    }
    assert temp_files(server) == []


@pytest.mark.parametrize(
    "tight",
    [{"APP_REQUEST_IDLE_SECONDS": "3", "APP_MAX_UPLOAD_BYTES": str(LIMIT)}],
    indirect=True,
)
def test_a_chunked_body_declaring_a_small_length_is_refused_as_it_comes(
    tight: LiveServer,
) -> None:
    # h11 frames the body by its Transfer-Encoding, whatever the Content-Length says: the
    # limit is reached by the bytes as they come, before a terminating chunk that never does
    # (trusting the declared 5 bytes, the server would wait for it and answer 408).
    session_id = a_session(tight)
    line = f"PUT /sessions/{session_id}/files/chunked.bin"
    extra = "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"
    with connect(tight) as sock:
        sock.sendall(head_of(tight, line, extra) + b"258\r\n" + b"x" * 600 + b"\r\n")
        sock.sendall(b"258\r\n" + b"x" * 600 + b"\r\n")  # 1200 bytes: over the limit
        status, _, answer = Answers(sock).next()
    assert status == 413, answer
    assert b"upload_too_large" in answer
    assert files_of(tight, session_id) == {}
    assert temp_files(tight) == []


def test_a_large_download_replaced_while_it_is_read_sends_the_old_bytes_whole(
    forked_server: LiveServer,
) -> None:
    server = forked_server
    session_id = a_session(server)
    url = f"{server.url}/sessions/{session_id}/files/big.bin"
    old = os.urandom(8 * 2**20)
    assert httpx.put(url, content=old, headers=server.headers).status_code == 201
    with httpx.stream("GET", url, headers=server.headers) as response:
        assert response.headers["content-length"] == str(len(old))
        pieces = response.iter_raw(65536)
        received = next(pieces)
        new = httpx.put(url, content=b"new", headers=server.headers)
        assert new.status_code == 200, new.text
        received += b"".join(pieces)
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(old).hexdigest()
    assert httpx.get(url, headers=server.headers).content == b"new"


def test_a_range_starlette_would_half_read_is_refused_naming_the_part(
    unlimited: TestClient, sid: str
) -> None:
    # Starlette skipped a part it could not read and served the rest (bytes=2-4,x was a 206
    # of one range), and read numbers as int() does (+2, 1_0, a full-width digit).
    stored(unlimited, sid, "r.bin", b"0123456789ab")
    url = f"/sessions/{sid}/files/r.bin"
    for wanted, part in (
        ("bytes=2-4,x", "x"),
        ("bytes=+2-4", "+2-4"),
        ("bytes=1_0-11", "1_0-11"),
        ("bytes=\uff12-4", "\uff12-4"),
        ("bytes=0-1,2", "2"),
    ):
        answer = unlimited.get(url, headers={b"Range": wanted.encode()})
        assert answer.status_code == 400, (wanted, answer.text)
        shown = part.encode().decode("latin-1")  # as Starlette decodes a header
        assert answer.json()["message"] == (
            f"malformed Range header {wanted.encode().decode('latin-1')!r}: {shown!r} is not a "
            "range; each is first-last, first- or -suffix in digits (bytes=0-99, bytes=100-, "
            "bytes=-50). Nothing was sent"
        ), wanted
    # Empty list elements and spaces around them are allowed (RFC 9110, 5.6.1).
    answer = unlimited.get(url, headers={"Range": "bytes=2-4, ,\t"})
    assert (answer.status_code, answer.content) == (206, b"234")


def test_a_download_evaluates_if_match_rather_than_ignore_it(
    unlimited: TestClient, sid: str
) -> None:
    # Ignored, If-Match on a GET gave a client that asked for the version it had read another
    # client's newer one, as a 200 it took for that version (RFC 9110, 13.1.1: must evaluate).
    url = f"/sessions/{sid}/files/v.txt"
    stored(unlimited, sid, "v.txt", b"version 1")
    old = unlimited.head(url).headers["etag"]
    assert unlimited.put(url, content=b"version 2").status_code == 200
    new = unlimited.head(url).headers["etag"]
    for method in ("GET", "HEAD"):
        refused = unlimited.request(method, url, headers={"If-Match": old})
        assert refused.status_code == 412, refused.text
    message = unlimited.get(url, headers={"If-Match": old}).json()["message"]
    assert message == (
        f"GET of file 'v.txt' in session {sid} refused: If-Match: {old} does not name its "
        f"current version, ETag {new}, which another request wrote since; nothing was "
        f"changed. GET or HEAD the file for its current bytes and ETag, then send the GET "
        f"again with If-Match: {new}"
    )
    for condition in (new, "*", f"{old}, {new}"):
        answer = unlimited.get(url, headers={"If-Match": condition})
        assert (answer.status_code, answer.content) == (200, b"version 2"), condition
    dated = unlimited.get(url, headers={"If-Unmodified-Since": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert dated.status_code == 400
    assert dated.json()["code"] == "precondition_unsupported"
    assert "does not evaluate If-Unmodified-Since" in dated.json()["message"]
