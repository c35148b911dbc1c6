"""Red team 53 on integrity: the HTTP side of an upload, over a real ``app serve``.

What broke:

* A multipart body that went on after its closing boundary (``--B--``). RFC 2046 (5.1.1)
  calls what follows an epilogue, and python-multipart drops it unread: a second ``file``
  part sent there (a client or a proxy that joined two forms) was a 201 for the first file
  alone, the second dropped unsaid, where its client (or a parser in front that reads on)
  counted both. An epilogue of anything but white space is now refused (400 naming it and
  what to send), whether it comes in the chunk that closes the body or after it, and
  nothing of the body is stored (`app.server.multipart._refuse_an_epilogue`).
* A ``file`` part with ``Content-Encoding: gzip``. RFC 7578 (4.8) says a part's other
  headers must be ignored, and so it was: stored compressed, answered 201 and downloaded
  without the coding, under the SHA-256 of the compressed bytes, as a request's own
  ``Content-Encoding`` once was (red team 25) and a part's ``Content-Transfer-Encoding``
  (red team 46). It is now 415 naming the coding, with ``Accept-Encoding: identity``, and
  nothing is stored; two such headers are read together (``identity`` then ``gzip``).
* A ``file`` part that is itself ``multipart/mixed`` (RFC 2388's several files in one
  field, which RFC 7578, 4.3, deprecates): nothing read the part's type, and the nested body,
  boundaries and part headers included, was stored as one file and answered 201, its client
  believing each of its files stored. It is now 400 naming the field and saying to send each
  file in a request of its own; nothing is stored. A part with two ``Content-Type`` headers
  (the last was read, so a second type hid the first) is refused too.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator

import httpx
import pytest
from live_http import a_session
from redteam_s19_http import one_server

from app.dataroot import TMP_DIR
from app.testing import LiveServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with one_server(tmp_path_factory) as live:
        yield live


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as client:
        yield client


def _part(name: str, content: bytes) -> bytes:
    head = f'--B\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'
    return head.encode() + content + b"\r\n"


def _post(http: httpx.Client, session: str, body: bytes | Iterator[bytes]) -> httpx.Response:
    headers = {"Content-Type": "multipart/form-data; boundary=B"}
    return http.post(f"/sessions/{session}/files", content=body, headers=headers)


def _names(http: httpx.Client, session: str) -> list[str]:
    return [f["name"] for f in http.get(f"/sessions/{session}").json()["files"]]


def test_a_part_after_the_closing_boundary_is_refused_and_nothing_is_stored(
    server: LiveServer, http: httpx.Client
) -> None:
    session = a_session(server)
    joined = _part("first.txt", b"one") + b"--B--\r\n" + _part("second.txt", b"two") + b"--B--\r\n"
    answer = _post(http, session, joined)
    assert answer.status_code == 400, answer.text
    message = answer.json()["message"]
    assert "goes on after its closing boundary (--B--)" in message
    assert "Nothing was stored" in message and "end the body at --B--" in message
    # The same, the epilogue arriving in a chunk of its own (a chunked body).
    late = iter([_part("first.txt", b"one") + b"--B--\r\n", b"junk after the form\r\n"])
    answer = _post(http, session, late)
    assert answer.status_code == 400, answer.text
    assert "'junk after the form'" in answer.json()["message"]
    # The closing delimiter cut between two chunks, then a part.
    body = _part("first.txt", b"one") + b"--B--\r\n" + _part("second.txt", b"two")
    cut = body.index(b"--B--") + 3
    answer = _post(http, session, iter([body[:cut], body[cut:]]))
    assert answer.status_code == 400, answer.text
    assert _names(http, session) == []
    if server.data_root is not None:  # no upload's temporary file is left behind either
        assert list((server.data_root / TMP_DIR).iterdir()) == []
    # White space after the close is what clients send: accepted, stored whole.
    answer = _post(http, session, iter([_part("first.txt", b"one") + b"--B--", b"\r\n \r\n"]))
    assert answer.status_code == 201, answer.text
    assert http.get(f"/sessions/{session}/files/first.txt").content == b"one"
    # A byte a chunk: the close is found however it is cut.
    whole = _part("second.txt", b"two") + b"--B--\r\n"
    answer = _post(http, session, iter([whole[i : i + 1] for i in range(len(whole))]))
    assert answer.status_code == 201, answer.text
    answer = _post(http, session, iter([bytes([b]) for b in _part("third.txt", b"3") + b"--B--x"]))
    assert answer.status_code == 400, answer.text
    assert _names(http, session) == ["first.txt", "second.txt"]


def test_a_part_in_a_content_coding_is_refused_and_nothing_is_stored(
    server: LiveServer, http: httpx.Client
) -> None:
    session = a_session(server)
    coded = gzip.compress(b"the file's bytes")
    for headers, shown in [
        ("Content-Encoding: gzip", "gzip"),
        ("Content-Encoding: identity\r\nContent-Encoding: gzip", "identity,gzip"),
    ]:
        part = _part("report.csv", coded)
        body = part.replace(b"\r\n\r\n", f"\r\n{headers}\r\n\r\n".encode(), 1)
        answer = _post(http, session, body + b"--B--\r\n")
        assert answer.status_code == 415, answer.text
        assert answer.headers["accept-encoding"] == "identity"
        message = answer.json()["message"]
        assert f"the form field 'file' has Content-Encoding: {shown}" in message
        assert "Nothing was stored" in message and "without Content-Encoding" in message
    assert _names(http, session) == []
    # `identity` is no coding: stored as sent.
    plain = _part("report.csv", b"a,b\r\n").replace(
        b"\r\n\r\n", b"\r\nContent-Encoding: identity\r\n\r\n", 1
    )
    assert _post(http, session, plain + b"--B--\r\n").status_code == 201
    assert http.get(f"/sessions/{session}/files/report.csv").content == b"a,b\r\n"


def test_several_files_in_one_field_are_refused_and_nothing_is_stored(
    server: LiveServer, http: httpx.Client
) -> None:
    session = a_session(server)
    nested = (
        b"--C\r\nContent-Disposition: file; filename=a.txt\r\n\r\nA\r\n"
        b"--C\r\nContent-Disposition: file; filename=b.txt\r\n\r\nB\r\n--C--"
    )
    body = _part("files", nested).replace(
        b"\r\n\r\n", b"\r\nContent-Type: Multipart/Mixed; boundary=C\r\n\r\n", 1
    )
    answer = _post(http, session, body + b"--B--\r\n")
    assert answer.status_code == 400, answer.text
    message = answer.json()["message"]
    assert "the form field 'file' ('files') is a multipart/mixed body" in message
    assert "Nothing was stored; send each file as 'file', in a request of its own" in message
    # Behind a second Content-Type (the last one was read): refused as the part's two types.
    hidden = body.replace(b"\r\n\r\n", b"\r\nContent-Type: text/plain\r\n\r\n", 1)
    answer = _post(http, session, hidden + b"--B--\r\n")
    assert answer.status_code == 400, answer.text
    assert "a multipart part has two Content-Type headers" in answer.json()["message"]
    assert _names(http, session) == []
