"""Hostile input over HTTP: every bad request is a 4xx with a message, and nothing is written.

In process (Starlette's TestClient) for the request bodies and names; against a real
``app serve`` (the `forked_server` fixture: `app_live_server`'s server) where the HTTP server
itself takes part: raw bytes in the request line, and what a client's connection looks like
after a 500.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from session_files import session_by_hand
from starlette.testclient import TestClient

from app.store import Store
from app.testing import LiveServer


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}


def assert_error(response: Any, status: int, code: str, *texts: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    for text in texts:
        assert text in body["message"], body


# --- a 500 never leaves a broken keep-alive connection -----------------------------------


# A real uvicorn over the app, with one route that fails as only a bug can: every fault the
# app knows of (a damaged session.json included) has an answer of its own.
_FAULTY_SERVER = """
import socket, sys
import uvicorn
from app.config import load
from app.server import create_app
from app.storage import open_storage

config = load()
app = create_app(open_storage(config, writer=True, kind="server"), config)

@app.get("/fault")
def fault() -> None:
    raise RuntimeError("a bug")

listener = socket.socket(fileno=int(sys.argv[1]))
uvicorn.run(app, fd=listener.fileno(), log_level="warning")
"""


def test_after_a_500_the_client_keeps_a_working_connection(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    env = {**os.environ, "APP_DATA_ROOT": str(tmp_path / "root")}
    with (tmp_path / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-c", _FAULTY_SERVER, str(listener.fileno())],
            env=env,
            pass_fds=[listener.fileno()],
            stdout=log,
            stderr=log,
        )
    try:
        connection = http.client.HTTPConnection(*listener.getsockname())
        listener.close()
        connection.request("GET", "/fault")
        broken = connection.getresponse()
        body = json.loads(broken.read())
        assert (broken.status, body["code"]) == (500, "internal_error"), body
        assert body["message"] == "internal server error; the server log has details"
        # The server says it closes the connection, so the client opens a new one instead of
        # sending its next request into a socket the server already reset.
        assert broken.getheader("connection") == "close"
        connection.request("GET", "/health")
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "RuntimeError: a bug" in (tmp_path / "server.log").read_text()


# --- metadata is bounded at the door (5) --------------------------------------------------


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"x": value}
    return value


def test_deeply_nested_metadata_is_422_and_never_stored(
    app_client: TestClient, app_store: Store, tmp_path: Path
) -> None:
    before = files_under(tmp_path)
    # 255 levels in a 1.5 KB body once was stored with 201, and broke every listing after.
    response = app_client.post("/sessions", json={"metadata": nested(255)})
    assert_error(response, 422, "validation_error", "metadata", "nested 255 levels deep", "32")
    assert files_under(tmp_path) == before
    assert app_client.get("/sessions").json()["total"] == 0


def test_a_deep_session_stored_before_the_bound_does_not_break_listings(
    app_client: TestClient, app_store: Store
) -> None:
    # Written by an older server (or by hand): reading it must still work, page and all.
    sid = app_store.create_session("old")["id"]
    path = app_store.sessions_dir / sid / "session.json"
    record = json.loads(path.read_text())
    record["metadata"] = nested(255)
    # An older server wrote no key (red team 65's); the repair that marks its root keys it
    # (rows67), as it is.
    path.write_text(json.dumps(session_by_hand(record)))
    assert app_client.get(f"/sessions/{sid}").json()["metadata"] == nested(255)
    assert app_client.get("/sessions").json()["items"][0]["id"] == sid


def test_metadata_at_the_depth_limit_is_stored_and_listed(app_client: TestClient) -> None:
    created = app_client.post("/sessions", json={"metadata": nested(32)})
    assert created.status_code == 201, created.text
    assert app_client.get("/sessions").status_code == 200
    assert app_client.get(f"/sessions/{created.json()['id']}").json()["metadata"] == nested(32)


def test_nesting_too_deep_for_the_json_parser_is_422_not_500(app_client: TestClient) -> None:
    body = b'{"metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = app_client.post(
        "/sessions", content=body, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 422, "validation_error", "nested", "32")


def test_metadata_with_too_many_keys_is_422(app_client: TestClient) -> None:
    metadata = {f"k{i}": [{"a": 1, "b": 2}] for i in range(400)}  # 1,200 keys in all
    response = app_client.post("/sessions", json={"metadata": metadata})
    assert_error(response, 422, "validation_error", "1200 keys", "1000")
    assert app_client.get("/sessions").json()["total"] == 0


def test_metadata_over_64_kib_is_413(app_client: TestClient) -> None:
    response = app_client.post("/sessions", json={"metadata": {"blob": "x" * 70_000}})
    assert_error(response, 413, "metadata_too_large", "65536")
    assert app_client.get("/sessions").json()["total"] == 0


def test_a_session_body_over_the_limit_is_413_before_it_is_parsed(app_client: TestClient) -> None:
    body = b'{"title": "' + b" " * (300 * 1024) + b'"}'
    response = app_client.post(
        "/sessions", content=body, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 413, "body_too_large", "262144")
    chunked = app_client.post(
        "/sessions",
        content=iter([body[:1000], body[1000:]]),
        headers={"Content-Type": "application/json"},
    )
    assert_error(chunked, 413, "body_too_large")
    assert app_client.get("/sessions").json()["total"] == 0


# --- bad JSON is a 4xx, the error handler never fails (6) -----------------------------------


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b'{"metadata": {"x": NaN}}', "NaN"),
        (b'{"metadata": {"x": Infinity}}', "Infinity"),
        (b'{"metadata": {"x": -Infinity}}', "-Infinity"),
        (b'{"metadata": {"x": 1e999}}', "1e999"),
        (b'{"title": "\\ud800"}', "unpaired surrogate"),
        (b'{"metadata": {"\\udfff": 1}}', "unpaired surrogate"),
        (b'{"title": "\\ud800' + b"x" * 2000 + b'"}', "unpaired surrogate"),
        (b'{"title": "\xff\xfe"}', "UTF-8"),
        (b'{"metadata": {"n": ' + b"9" * 5000 + b"}}", "digits"),
        (b'{"title": ', "JSON"),
        (b"\x0b", "JSON"),  # found by schemathesis: stripped, it looked like no body at all
        (b"  ", "JSON"),
        (b"[]", "object"),
        # JSON, but no backend stores it in a title: a 201 on disk, a 400 on PostgreSQL.
        (b'{"title": "a\\u0000b"}', "title contains the character U+0000 (NUL)"),
    ],
)
def test_a_body_that_is_not_strict_json_text_is_a_4xx_and_writes_nothing(
    app_client: TestClient, tmp_path: Path, body: bytes, text: str
) -> None:
    before = files_under(tmp_path)
    response = app_client.post(
        "/sessions", content=body, headers={"Content-Type": "application/json"}
    )
    assert 400 <= response.status_code < 500, response.text
    assert text in response.json()["message"]
    assert files_under(tmp_path) == before
    assert app_client.get("/sessions").json()["total"] == 0


def test_a_lone_surrogate_next_to_other_errors_is_still_a_422_naming_it(
    app_client: TestClient,
) -> None:
    # Quoting the surrogate in the answer once made the error handler itself fail (a 500).
    body = b'{"title": 5, "x": "\\udc00"}'
    response = app_client.post(
        "/sessions", content=body, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 422, "validation_error", "body.x", "unpaired surrogate U+DC00")


def test_a_multipart_boundary_longer_than_70_characters_is_400(
    app_client: TestClient, app_store: Store, tmp_path: Path
) -> None:
    sid = app_store.create_session()["id"]
    before = files_under(tmp_path)
    boundary = "b" * 300
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
        f"x\r\n--{boundary}--\r\n"
    ).encode()
    response = app_client.post(
        f"/sessions/{sid}/files",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_error(response, 400, "bad_request", "boundary", "300 characters", "70")
    assert files_under(tmp_path) == before


# --- names: one rule, invalid bytes refused, never replaced (7) ----------------------------


def multipart(filename: bytes, data: bytes) -> tuple[bytes, dict[str, str]]:
    body = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="'
        + filename
        + b'"\r\n\r\n'
        + data
        + b"\r\n--B--\r\n"
    )
    return body, {"Content-Type": "multipart/form-data; boundary=B"}


@pytest.mark.parametrize(
    ("filename", "problem"),
    [
        (b"C:\\x\\evil.txt", "path separator"),
        (b"\\\\server\\share\\evil.txt", "path separator"),
        (b"C:\\\\x\\\\evil.txt", "path separator"),  # the backslashes escaped, as httpx sends
        (b"dir/evil.txt", "path separator"),
        ("a\u200bb".encode(), "U+200B"),
        ("\ufeffnotes.txt".encode(), "U+FEFF"),
        ("dir\uff0fevil.txt".encode(), "U+FF0F"),
    ],
)
def test_a_multipart_filename_with_a_path_or_an_invisible_character_is_400(
    app_client: TestClient, app_store: Store, tmp_path: Path, filename: bytes, problem: str
) -> None:
    sid = app_store.create_session()["id"]
    before = files_under(tmp_path)
    body, headers = multipart(filename, b"payload")
    response = app_client.post(f"/sessions/{sid}/files", content=body, headers=headers)
    assert_error(response, 400, "invalid_name", problem)
    assert files_under(tmp_path) == before


@pytest.mark.parametrize(
    ("raw", "problem"),
    [("a%E2%80%8Bb", "U+200B"), ("%EF%BB%BFnotes", "U+FEFF"), ("dir%EF%BC%8Fevil", "U+FF0F")],
)
def test_a_put_name_with_an_invisible_or_lookalike_character_is_400(
    app_client: TestClient, app_store: Store, raw: str, problem: str
) -> None:
    sid = app_store.create_session()["id"]
    response = app_client.put(f"/sessions/{sid}/files/{raw}", content=b"payload")
    assert_error(response, 400, "invalid_name", problem)
    assert app_store.list_files(sid) == []


def raw_request(server: LiveServer, method: str, target: str, body: bytes = b"") -> tuple[int, Any]:
    """Send a request line as bytes (httpx would re-encode an invalid percent-escape)."""
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port))
    connection.putrequest(method, target, skip_accept_encoding=True)
    for header, value in server.headers.items():
        connection.putheader(header, value)
    connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body)
    response = connection.getresponse()
    payload = json.loads(response.read())
    connection.close()
    return response.status, payload


def test_a_control_character_in_a_path_is_refused_never_routed_to_another_name(
    forked_server: LiveServer,
) -> None:
    # Starlette's `$` matches before a final newline and `{name:path}` stops at one: a PUT
    # to `ab%0A` replaced the file `ab`, a DELETE of it deleted `ab`.
    status, created = raw_request(forked_server, "POST", "/sessions")
    sid = created["id"]
    status, _ = raw_request(forked_server, "PUT", f"/sessions/{sid}/files/ab", b"kept")
    assert status == 201
    for method, target in [
        ("PUT", f"/sessions/{sid}/files/ab%0A"),
        ("DELETE", f"/sessions/{sid}/files/ab%0A"),
        ("GET", f"/sessions/{sid}/files/ab%0a"),
        ("PUT", f"/sessions/{sid}/files/a%0Ab"),
        ("DELETE", f"/sessions/{sid}%0A"),
        ("PUT", f"/sessions/{sid}/files/ab%00"),
        ("PUT", f"/sessions/{sid}/files/ab%7F"),
        ("PUT", f"/sessions/{sid}/files/ab%C2%85"),
    ]:
        status, body = raw_request(forked_server, method, target, b"OTHER")
        assert status == 400, (method, target, body)
        assert body["code"] == "invalid_name", body
        assert "contains the control character U+00" in body["message"], body
        assert "once percent-decoded" in body["message"] and "nothing was done" in body["message"]
        assert target.split("/")[-1] in body["message"]
    status, files = raw_request(forked_server, "GET", f"/sessions/{sid}/files")
    assert [(f["name"], f["size"]) for f in files["items"]] == [("ab", 4)]
    assert list((forked_server.data_root / ".tmp").iterdir()) == []


def test_names_that_are_not_utf8_are_refused_never_replaced(forked_server: LiveServer) -> None:
    # Decoded with replacement, %FF and %FE both became U+FFFD: one name, and the second PUT
    # silently replaced the first file.
    status, created = raw_request(forked_server, "POST", "/sessions")
    sid = created["id"]
    for raw in ("a%FF", "a%FE", "caf%E9.txt", "%C0%AE%C0%AE"):
        status, body = raw_request(forked_server, "PUT", f"/sessions/{sid}/files/{raw}", b"x")
        assert status == 400, (raw, body)
        assert body["code"] == "invalid_name"
        assert "not valid UTF-8" in body["message"]
    status, files = raw_request(forked_server, "GET", f"/sessions/{sid}/files")
    assert files["items"] == []
    assert list((forked_server.data_root / ".tmp").iterdir()) == []
