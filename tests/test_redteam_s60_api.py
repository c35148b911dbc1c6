"""Red team 60 on the HTTP contract (branch rt-api2): see docs/explanation/attacks/.

The promise: the routes and error bodies of docs/reference/http-api.md and the OpenAPI
document are what the server does, on every path. Red team 59 fuzzed what a tool wrote; these
tests send, to a real ``app serve``, requests schemathesis does not make.

What broke, and what changed:

- a percent-encoded ``/`` (``%2F``) in the path's structure, rather than inside a name: the
  router matches the decoded path, so ``POST /trash%2Fempty`` emptied the trash, ``DELETE
  /sessions/<id>%2Ffiles%2Fa.txt`` deleted a file, ``PUT`` of it created one and ``GET
  /sessions%2F<id>`` read a session. A proxy or gateway in front that matches the path as
  sent reads each as one segment: a rule that keeps ``/trash/empty`` from the outside, or
  allows only reads under ``/sessions/<id>``, let them through. A name's ``%2F`` was refused
  only once routed, where it fell inside a name. No session id or file name holds a ``/``, so
  any ``%2F`` in the path is now 400 ``invalid_name`` before any route runs, naming it
  (`app.server.limits._refused_path`), and nothing is done;
- ``GET /sessions?limit=`` with more than 4300 digits was a 500 ``internal_error``: the
  listing's fast path (`app.server.direct.DirectReads`) took any digits for a limit and
  ``int()`` refused the string. A limit of more than four digits now goes to FastAPI's route,
  which answers 422 ``validation_error`` naming ``query.limit`` (or reads leading zeros as the
  number they write);
- ``If-Match: W/<the current ETag>`` on a file's ``PUT``, ``DELETE`` or ``GET`` was 412 saying
  the tag "does not name its current version, ETag <the same tag>, which another request wrote
  since": a client that read the file again got the same ETag and sent the same header. It
  now says the weak tag names the current version, that no request changed it, and to send
  the tag without ``W/`` (`app.errors.PreconditionFailedError`);
- a 422 quoted what the body sent whole, three times (``detail``, ``message`` and
  ``errors``): a field named by 200,000 characters, or a number of as many digits, got a
  600 KB answer. A 422's message (and each part of its place) is now shortened past 2000
  characters (300), keeping its start, its end (what to do) and how long it was
  (`app.server.problems`);
- a ``Range`` of an empty file was 416 saying "ask for bytes=0--1 at most", and ``GET /``
  a 404 saying "without the trailing slash: ;": each now says what the client can do (send the
  ``GET`` without ``Range``; the route list at ``/docs``).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from redteam_s19_http import server_and_client

from app.testing import LiveServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, httpx.Client]]:
    """One server for the module; each test works in sessions of its own."""
    with server_and_client(tmp_path_factory) as both:
        yield both


def _refused_encoded_slash(answer: httpx.Response, path: str) -> None:
    assert answer.status_code == 400, (path, answer.text)
    body = answer.json()
    assert body["code"] == "invalid_name", body
    assert f"invalid path {path!r}" in body["message"], body
    assert "'%2F', a percent-encoded path separator" in body["message"], body
    assert "nothing was done" in body["message"], body
    assert body["detail"] == body["message"]


def test_an_encoded_slash_between_a_paths_parts_runs_no_route(
    served: tuple[LiveServer, httpx.Client],
) -> None:
    _, client = served
    session_id = client.post("/sessions", json={"title": "s60 %2F"}).json()["id"]
    assert client.put(f"/sessions/{session_id}/files/a.txt", content=b"kept").status_code == 201
    assert client.delete(f"/sessions/{session_id}/files/a.txt").status_code == 200
    trash_before = client.post("/trash/empty", params={"older_than": "1e9"}).json()
    assert trash_before["removed"] == 0
    assert client.put(f"/sessions/{session_id}/files/a.txt", content=b"kept").status_code == 201
    for method, path in (
        # Before: 200, the trash emptied (the entry of a.txt's first version included).
        ("POST", "/trash%2Fempty"),
        # Before: 200, the file deleted; 201, a file created; 200, the session read.
        ("DELETE", f"/sessions/{session_id}%2Ffiles%2Fa.txt"),
        ("PUT", f"/sessions/{session_id}%2ffiles%2fb.txt"),
        ("GET", f"/sessions%2F{session_id}"),
        ("HEAD", f"/sessions/{session_id}%2Ffiles"),
    ):
        answer = client.request(method, path, content=b"x" if method == "PUT" else None)
        if method == "HEAD":
            assert answer.status_code == 400 and not answer.content, answer
            continue
        _refused_encoded_slash(answer, path)
    files = client.get(f"/sessions/{session_id}/files").json()["items"]
    assert [f["name"] for f in files] == ["a.txt"]
    assert client.get(f"/sessions/{session_id}/files/a.txt").content == b"kept"
    # The trash still holds a.txt's first version: only POST /trash/empty empties it.
    assert client.post("/trash/empty").json()["removed"] >= 1
    # A name that is '%2F' written out (its '%' encoded) is a name like any other.
    assert client.put(f"/sessions/{session_id}/files/x%252Fy", content=b"1").status_code == 201
    assert client.get(f"/sessions/{session_id}/files/x%252Fy").content == b"1"


def test_a_range_of_an_empty_file_and_the_root_path_say_what_to_do(
    served: tuple[LiveServer, httpx.Client],
) -> None:
    _, client = served
    session_id = client.post("/sessions", json={"title": "s60 ranges"}).json()["id"]
    empty, ten = (f"/sessions/{session_id}/files/{n}" for n in ("empty", "ten"))
    assert client.put(empty, content=b"").status_code == 201
    assert client.put(ten, content=b"0123456789").status_code == 201
    for wanted in ("bytes=0-", "bytes=-1"):
        answer = client.get(empty, headers={"Range": wanted})
        assert answer.status_code == 416 and answer.headers["content-range"] == "bytes */0"
        message = answer.json()["message"]
        # Before: "... the file's 0 bytes; ask for bytes=0--1 at most".
        assert "0--1" not in message, message
        assert "the file is empty" in message and "send the GET without Range" in message
    assert client.get(empty).status_code == 200
    message = client.get(ten, headers={"Range": "bytes=-0"}).json()["message"]
    assert "-0, a suffix of no byte; ask for bytes=0-9 at most" in message, message
    # Before: "no route /; without the trailing slash: ; GET /docs lists the API".
    root = client.get("/")
    assert root.status_code == 404
    assert root.json()["message"] == "no route /; GET /docs lists the API"
    assert "without the trailing slash: /sessions;" in client.get("/sessions/").json()["message"]


def test_a_limit_of_thousands_of_digits_is_a_422_not_a_500(
    served: tuple[LiveServer, httpx.Client],
) -> None:
    _, client = served
    # Before: 500 internal_error (int() of more than 4300 digits, a traceback), both.
    answer = client.get("/sessions", params={"limit": "9" * 4301})
    assert answer.status_code == 422, answer.text[:300]
    body = answer.json()
    assert body["code"] == "validation_error"
    assert body["errors"][0]["loc"] == ["query", "limit"], body["errors"]
    # Leading zeros are digits of the number 1, as FastAPI's route reads them.
    assert client.get("/sessions", params={"limit": "0" * 4400 + "1"}).status_code == 200


def test_a_weak_tag_of_the_current_version_is_told_to_drop_its_w(
    served: tuple[LiveServer, httpx.Client],
) -> None:
    _, client = served
    session_id = client.post("/sessions", json={"title": "s60 weak"}).json()["id"]
    url = f"/sessions/{session_id}/files/w.txt"
    assert client.put(url, content=b"one").status_code == 201
    etag = client.head(url).headers["etag"]
    for method in ("PUT", "DELETE", "GET"):
        answer = client.request(
            method,
            url,
            content=b"two" if method == "PUT" else None,
            headers={"If-Match": f"W/{etag}"},
        )
        assert answer.status_code == 412, answer.text
        message = answer.json()["message"]
        # Before: "... does not name its current version, ETag <etag>, which another request
        # wrote since".
        assert "another request wrote since" not in message, message
        assert f"names its current version, ETag {etag}, as a weak tag" in message, message
        assert f"If-Match: {etag}, without W/" in message, message
    assert client.get(url).content == b"one"


def test_a_422_quotes_a_huge_value_shortened(served: tuple[LiveServer, httpx.Client]) -> None:
    _, client = served
    json_type = {"Content-Type": "application/json"}
    number = b'{"metadata": {"a": 0.' + b"1" * 100_000 + b"}}"
    field = b'{"x' + b"k" * 100_000 + b'": 1}'
    for body, ends in ((number, "To keep it exactly, send it as a string"), (field, "metadata")):
        answer = client.post("/sessions", content=body, headers=json_type)
        assert answer.status_code == 422, answer.text[:300]
        # Before: 300,400 bytes (the value three times) for a body of 100,000.
        assert len(answer.content) < 10_000, len(answer.content)
        problem = answer.json()
        assert "characters in all" in problem["message"], problem["message"][:300]
        assert ends in problem["message"][-200:], problem["message"][-200:]
        assert problem["detail"] == problem["message"]
