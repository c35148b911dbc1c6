"""Red team 53 on integrity: the HTTP side of an upload, over a real ``app serve``.

What broke:

* A multipart body that went on after its closing boundary (``--B--``). RFC 2046 (5.1.1)
  calls what follows an epilogue, and python-multipart drops it unread: a second ``file``
  part sent there (a client or a proxy that joined two forms) was a 201 for the first file
  alone, the second dropped unsaid, where its client (or a parser in front that reads on)
  counted both. An epilogue of anything but white space is now refused (400 naming it and
  what to send), whether it comes in the chunk that closes the body or after it, and
  nothing of the body is stored (`app.server.multipart._refuse_an_epilogue`).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from live_http import a_session
from redteam_s19_http import one_server

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
    # White space after the close is what clients send: accepted, stored whole.
    answer = _post(http, session, iter([_part("first.txt", b"one") + b"--B--", b"\r\n \r\n"]))
    assert answer.status_code == 201, answer.text
    assert http.get(f"/sessions/{session}/files/first.txt").content == b"one"
