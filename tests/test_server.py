"""The HTTP routes, in process (Starlette's TestClient): auth, errors, uploads, names, trash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from app.config import Config
from app.server import create_app
from app.store import Store, new_session_id

LIMIT = 1000


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}


@pytest.fixture
def sid(app_client: TestClient) -> str:
    response = app_client.post("/sessions", json={"title": "review", "metadata": {"k": 1}})
    assert response.status_code == 201
    session_id: str = response.json()["id"]
    return session_id


def assert_error(response: Any, status: int, code: str, text: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert text in body["message"]


# --- health, auth, errors ---------------------------------------------------------------


def test_health_needs_no_token_and_does_not_reveal_the_data_root(
    app_client: TestClient, app_config: Config
) -> None:
    response = app_client.get("/health", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["profile"] == "testing"
    assert str(app_config.data_root) not in response.text


def test_a_request_without_the_token_is_401_with_a_bearer_challenge(app_client: TestClient) -> None:
    response = app_client.get("/sessions", headers={"Authorization": ""})
    assert_error(response, 401, "unauthorized", "missing bearer token")
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_wrong_token_is_401(app_client: TestClient) -> None:
    response = app_client.get("/sessions", headers={"Authorization": "Bearer nope"})
    assert_error(response, 401, "unauthorized", "invalid bearer token")


def test_a_request_without_the_token_is_401_before_its_parameters_are_checked(
    app_client: TestClient,
) -> None:
    # The token is checked first, as FastAPI solved it first as a dependency: a client
    # without it learns nothing of what else was wrong.
    bad = app_client.get("/sessions?limit=5000", headers={"Authorization": ""})
    assert_error(bad, 401, "unauthorized", "missing bearer token")
    trash = app_client.post("/trash/empty?older_than=-1", headers={"Authorization": "Bearer x"})
    assert_error(trash, 401, "unauthorized", "invalid bearer token")


def test_an_upload_without_the_token_writes_nothing(
    app_client: TestClient, app_store: Store
) -> None:
    sid = app_store.create_session()["id"]
    response = app_client.put(
        f"/sessions/{sid}/files/a", content=b"x", headers={"Authorization": ""}
    )
    assert response.status_code == 401
    assert app_store.list_files(sid) == []
    assert list(app_store.root.tmp_dir.iterdir()) == []


def test_unknown_routes_and_methods_answer_in_the_error_shape(app_client: TestClient) -> None:
    assert_error(app_client.get("/nope"), 404, "not_found", "no route /nope")
    assert_error(app_client.patch("/sessions"), 405, "method_not_allowed", "PATCH is not allowed")


def test_validation_errors_answer_in_the_error_shape(app_client: TestClient) -> None:
    assert_error(app_client.get("/sessions?limit=5000"), 422, "validation_error", "query.limit")
    assert_error(app_client.post("/sessions", json={"title": 3}), 422, "validation_error", "title")


def test_the_openapi_schema_is_served(app_client: TestClient) -> None:
    schema = app_client.get("/openapi.json").json()
    assert "/sessions/{session_id}/files" in schema["paths"]
    upload = schema["paths"]["/sessions/{session_id}/files"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]


# --- sessions ---------------------------------------------------------------------------


def test_a_created_session_is_returned_with_its_id(app_client: TestClient, sid: str) -> None:
    session = app_client.get(f"/sessions/{sid}").json()
    assert session["id"] == sid
    assert session["title"] == "review"
    assert session["metadata"] == {"k": 1}


def test_a_session_can_be_created_without_a_body(app_client: TestClient) -> None:
    response = app_client.post("/sessions")
    assert response.status_code == 201
    assert response.json()["title"] == ""


def test_sessions_are_listed_in_pages_with_a_cursor_and_the_total(app_client: TestClient) -> None:
    ids = [app_client.post("/sessions", json={}).json()["id"] for _ in range(5)]
    first = app_client.get("/sessions?limit=2").json()
    assert [s["id"] for s in first["items"]] == ids[:2]
    assert first["total"] == 5
    second = app_client.get(f"/sessions?limit=2&after={first['next']}").json()
    assert [s["id"] for s in second["items"]] == ids[2:4]
    last = app_client.get(f"/sessions?limit=2&after={second['next']}").json()
    assert [s["id"] for s in last["items"]] == ids[4:]
    assert last["next"] is None


def test_large_pages_read_concurrently_are_each_complete(
    app_client: TestClient, app_store: Store
) -> None:
    # Pages over 100 wait for one of a few listing slots; none may be lost or mixed up.
    ids = [app_store.create_session(f"s{n}")["id"] for n in range(120)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        pages = list(pool.map(lambda _: app_client.get("/sessions?limit=1000").json(), range(6)))
    for page in pages:
        assert [s["id"] for s in page["items"]] == ids
        assert (page["total"], page["next"]) == (120, None)
    tail = app_client.get(f"/sessions?limit=101&after={ids[0]}").json()
    assert [s["id"] for s in tail["items"]] == ids[1:102]
    assert tail["next"] == ids[101]


def test_a_malformed_session_id_is_400_and_a_missing_one_404(app_client: TestClient) -> None:
    assert_error(app_client.get("/sessions/xyz"), 400, "invalid_name", "32 lower-case hex")
    assert_error(app_client.get(f"/sessions/{new_session_id()}"), 404, "session_not_found")


def test_deleting_a_session_moves_it_to_the_trash(
    app_client: TestClient, app_store: Store, sid: str
) -> None:
    response = app_client.delete(f"/sessions/{sid}")
    assert response.status_code == 200
    assert response.json()["id"] == sid
    [entry] = app_store.list_trash()
    assert entry.session_id == sid
    assert response.json()["trash"] == entry.name
    # Every later request to it (another client's, one in flight) names its trash entry and
    # the restore: "`app sessions list` shows the sessions" does not show it.
    for gone in (
        app_client.get(f"/sessions/{sid}"),
        app_client.get(f"/sessions/{sid}/files"),
        app_client.put(f"/sessions/{sid}/files/a.txt", content=b"a"),
        app_client.delete(f"/sessions/{sid}"),
    ):
        assert_error(
            gone,
            404,
            "session_not_found",
            f"no session '{sid}' in sessions: it was deleted, and is in the trash (entry "
            f"{entry.name}). `app sessions restore {sid}` brings it back; `app sessions list "
            "--trash` shows the trash",
        )
    assert_error(
        app_client.get(f"/sessions/{new_session_id()}"),
        404,
        "session_not_found",
        "`app sessions list` shows the sessions",
    )
    audit = [json.loads(x) for x in app_store.root.audit_path.read_text().splitlines()]
    assert audit[-1]["operation"] == "trash-session"
    assert audit[-1]["target"] == sid


# --- uploads ----------------------------------------------------------------------------


def test_a_multipart_upload_is_stored_under_its_filename(
    app_client: TestClient, app_store: Store, sid: str
) -> None:
    data = bytes(range(256)) * 100
    response = app_client.post(f"/sessions/{sid}/files", files={"file": ("scan.pdf", data)})
    assert response.status_code == 201, response.text
    entry = response.json()
    assert entry["name"] == "scan.pdf"
    assert entry["size"] == len(data)
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert app_client.get(f"/sessions/{sid}/files").json()["items"] == [entry]
    download = app_client.get(f"/sessions/{sid}/files/scan.pdf")
    assert download.content == data
    assert download.headers["content-type"] == "application/octet-stream"
    assert list(app_store.root.tmp_dir.iterdir()) == []


def test_other_form_fields_are_ignored(app_client: TestClient, sid: str) -> None:
    response = app_client.post(
        f"/sessions/{sid}/files", data={"note": "hi"}, files={"file": ("a.txt", b"abc")}
    )
    assert response.status_code == 201
    assert response.json()["name"] == "a.txt"


def test_a_multipart_upload_of_an_existing_name_is_409(app_client: TestClient, sid: str) -> None:
    app_client.post(f"/sessions/{sid}/files", files={"file": ("a.txt", b"one")})
    response = app_client.post(f"/sessions/{sid}/files", files={"file": ("a.txt", b"two")})
    assert_error(response, 409, "file_exists", "use PUT")
    assert app_client.get(f"/sessions/{sid}/files/a.txt").content == b"one"


def test_a_multipart_body_without_a_file_field_is_400(app_client: TestClient, sid: str) -> None:
    response = app_client.post(
        f"/sessions/{sid}/files", data={"other": "x"}, files={"f": (None, b"")}
    )
    assert_error(response, 400, "bad_request", "no form field 'file'")


def test_a_file_in_a_form_field_other_than_file_is_refused_not_dropped(
    app_client: TestClient, app_store: Store, sid: str
) -> None:
    # curl -F file=@a -F attachment=@b was a 201 for a alone, b silently dropped; either order.
    for files in (
        [("file", ("a.txt", b"a")), ("attachment", ("b.txt", b"b"))],
        [("attachment", ("b.txt", b"b")), ("file", ("a.txt", b"a"))],
    ):
        response = app_client.post(f"/sessions/{sid}/files", files=files)
        assert_error(
            response,
            400,
            "bad_request",
            "the form field 'attachment' holds a file ('b.txt'), which this server would not "
            "store: it stores the field 'file' only, one file a request. Nothing was stored; "
            "send each file as 'file', in a request of its own",
        )
    assert app_client.get(f"/sessions/{sid}/files").json()["items"] == []
    assert list(app_store.root.tmp_dir.iterdir()) == []


def test_a_body_that_is_not_multipart_is_400(app_client: TestClient, sid: str) -> None:
    response = app_client.post(f"/sessions/{sid}/files", content=b"raw")
    assert_error(response, 400, "bad_request", "multipart/form-data")


def test_a_truncated_multipart_body_is_400_and_leaves_nothing(
    app_client: TestClient, app_store: Store, sid: str
) -> None:
    body = b'--B\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\npartial'
    response = app_client.post(
        f"/sessions/{sid}/files",
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=B"},
    )
    assert_error(response, 400, "bad_request", "ended before its closing boundary")
    assert app_store.list_files(sid) == []
    assert list(app_store.root.tmp_dir.iterdir()) == []


def test_put_creates_then_replaces_keeping_the_old_bytes_in_the_trash(
    app_client: TestClient, app_store: Store, sid: str
) -> None:
    assert app_client.put(f"/sessions/{sid}/files/notes.md", content=b"v1").status_code == 201
    assert app_client.put(f"/sessions/{sid}/files/notes.md", content=b"v2").status_code == 200
    assert app_client.get(f"/sessions/{sid}/files/notes.md").content == b"v2"
    [old] = app_store.list_trash()
    assert (old.path / "notes.md").read_bytes() == b"v1"


def test_put_streams_a_chunked_body(app_client: TestClient, sid: str) -> None:
    chunks = [b"a" * 100, b"b" * 100, b"c"]
    response = app_client.put(f"/sessions/{sid}/files/x", content=iter(chunks))
    assert response.status_code == 201
    assert response.json()["size"] == 201


def test_deleting_a_file_moves_it_to_the_trash(
    app_client: TestClient, app_store: Store, sid: str
) -> None:
    app_client.put(f"/sessions/{sid}/files/a", content=b"data")
    response = app_client.delete(f"/sessions/{sid}/files/a")
    assert response.status_code == 200
    assert response.json()["name"] == "a"
    assert_error(app_client.get(f"/sessions/{sid}/files/a"), 404, "file_not_found")
    assert_error(app_client.delete(f"/sessions/{sid}/files/a"), 404, "file_not_found")
    [entry] = app_store.list_trash()
    assert (entry.path / "a").read_bytes() == b"data"


def test_an_upload_to_a_missing_session_is_404(app_client: TestClient) -> None:
    response = app_client.put(f"/sessions/{new_session_id()}/files/a", content=b"x")
    assert_error(response, 404, "session_not_found")


# --- limits -----------------------------------------------------------------------------


def test_a_put_declared_over_the_limit_is_413_before_reading(
    small: TestClient, app_store: Store
) -> None:
    sid = app_store.create_session()["id"]
    response = small.put(f"/sessions/{sid}/files/big", content=b"x" * (LIMIT + 1))
    assert_error(response, 413, "upload_too_large", f"limit of {LIMIT} bytes")
    assert app_store.list_files(sid) == []
    assert list(app_store.root.tmp_dir.iterdir()) == []


def test_a_chunked_put_over_the_limit_is_413_and_leaves_no_temporary_file(
    small: TestClient, app_store: Store
) -> None:
    sid = app_store.create_session()["id"]
    body = iter([b"x" * 600, b"y" * 600])
    response = small.put(f"/sessions/{sid}/files/big", content=body)
    assert_error(response, 413, "upload_too_large", "received 1200 bytes so far")
    assert list(app_store.root.tmp_dir.iterdir()) == []
    assert not (app_store.sessions_dir / sid / "files" / "big").exists()


def test_a_multipart_upload_over_the_limit_is_413_and_leaves_nothing(
    small: TestClient, app_store: Store
) -> None:
    sid = app_store.create_session()["id"]
    response = small.post(f"/sessions/{sid}/files", files={"file": ("big", b"x" * (LIMIT + 1))})
    assert_error(response, 413, "upload_too_large")
    assert app_store.list_files(sid) == []
    assert list(app_store.root.tmp_dir.iterdir()) == []


def test_an_upload_of_exactly_the_limit_is_accepted(small: TestClient, app_store: Store) -> None:
    sid = app_store.create_session()["id"]
    response = small.put(f"/sessions/{sid}/files/fits", content=b"x" * LIMIT)
    assert response.status_code == 201


# --- hostile names ----------------------------------------------------------------------

HOSTILE = [
    ("..%2Fx", "path separator"),
    ("..%2F..%2F..%2Fescape", "path separator"),
    ("%2Fetc%2Fpasswd", "path separator"),
    ("a%00b", "U+0000"),
    ("%2E%2E", "starts with '.'"),
    ("x" * 300, "300 bytes"),
    ("a%5Cb", "path separator"),
]


@pytest.mark.parametrize(("raw", "problem"), HOSTILE)
def test_a_hostile_name_in_a_put_is_400_and_writes_nothing(
    app_client: TestClient, app_store: Store, tmp_path: Path, raw: str, problem: str
) -> None:
    sid = app_store.create_session()["id"]
    before = files_under(tmp_path)
    response = app_client.put(f"/sessions/{sid}/files/{raw}", content=b"payload")
    assert_error(response, 400, "invalid_name", problem)
    assert files_under(tmp_path) == before


def multipart(filename: bytes, data: bytes) -> tuple[bytes, dict[str, str]]:
    """A multipart body built by hand, so the filename's bytes reach the server unescaped."""
    body = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="'
        + filename
        + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
        + data
        + b"\r\n--B--\r\n"
    )
    return body, {"Content-Type": "multipart/form-data; boundary=B"}


@pytest.mark.parametrize(
    "name",
    [b"../x", b"../../escape", b"/etc/passwd", b"a\0b", b"x" * 300, b"..", b"a\nb", b"\xff\xfe"],
)
def test_a_hostile_multipart_filename_is_400_and_writes_nothing(
    app_client: TestClient, app_store: Store, tmp_path: Path, name: bytes
) -> None:
    sid = app_store.create_session()["id"]
    before = files_under(tmp_path)
    body, headers = multipart(name, b"payload")
    response = app_client.post(f"/sessions/{sid}/files", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert files_under(tmp_path) == before


def test_a_windows_path_as_filename_is_refused_like_a_unix_path(
    app_client: TestClient, app_store: Store, tmp_path: Path
) -> None:
    # python-multipart drops the directories old browsers sent ("C:\\dir\\a"); a name that
    # had them is refused like "dir/a", not stored under its last part.
    sid = app_store.create_session()["id"]
    before = files_under(tmp_path)
    body, headers = multipart(b"C:\\dir\\a", b"payload")
    response = app_client.post(f"/sessions/{sid}/files", content=body, headers=headers)
    assert_error(response, 400, "invalid_name", "path separator")
    assert files_under(tmp_path) == before


def test_a_path_in_the_download_route_is_refused(app_client: TestClient, sid: str) -> None:
    response = app_client.get(f"/sessions/{sid}/files/..%2Fsession.json")
    assert_error(response, 400, "invalid_name")


# --- downloads racing deletes -----------------------------------------------------------


def test_a_file_deleted_as_its_download_starts_is_never_a_500(
    app_client: TestClient, app_store: Store, sid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The route has found the file; a DELETE lands before the response is sent. The bytes
    # the route chose are sent whole (the delete came after the read), never a 500.
    from starlette import responses

    data = b"z" * 200_000
    app_client.put(f"/sessions/{sid}/files/doomed", content=data)
    send = responses.FileResponse.__call__

    async def delete_first(self: Any, scope: Any, receive: Any, send_: Any) -> None:
        app_store.delete_file(sid, "doomed")
        await send(self, scope, receive, send_)

    monkeypatch.setattr(responses.FileResponse, "__call__", delete_first)
    download = app_client.get(f"/sessions/{sid}/files/doomed")
    assert download.status_code == 200, download.text
    assert download.content == data
    assert download.headers["content-length"] == str(len(data))
    assert app_client.get(f"/sessions/{sid}/files/doomed").status_code == 404


def test_a_file_listed_whose_bytes_are_gone_from_disk_is_damaged_not_missing(
    app_client: TestClient, app_store: Store, sid: str
) -> None:
    # Its record is there (GET lists it): a 404 "no file" hid the loss (red team 48).
    app_client.put(f"/sessions/{sid}/files/gone", content=b"bytes")
    app_store.file_path(sid, "gone")[0].unlink()
    got = app_client.get(f"/sessions/{sid}/files/gone")
    assert_error(got, 500, "file_damaged", "'gone'")
    assert "are not there" in got.json()["message"]
    assert "app data check --repair" in got.json()["message"]


def test_a_ranged_download_is_served_from_the_opened_file(app_client: TestClient, sid: str) -> None:
    app_client.put(f"/sessions/{sid}/files/r", content=b"0123456789")
    part = app_client.get(f"/sessions/{sid}/files/r", headers={"Range": "bytes=2-4"})
    assert part.status_code == 206
    assert part.content == b"234"


# --- multipart bodies without a Content-Length ------------------------------------------


def chunked(*parts: bytes) -> Iterator[bytes]:
    """A body sent with Transfer-Encoding: chunked (no Content-Length to refuse it by)."""
    yield from parts


def test_a_chunked_multipart_body_is_held_to_the_limit_a_content_length_would_be(
    small: TestClient, app_store: Store
) -> None:
    # Junk after the closing boundary costs nothing to parse, but a body this size with a
    # Content-Length would be refused up front; without one it must not be accepted.
    sid = app_store.create_session()["id"]
    body, headers = multipart(b"a", b"ok")
    declared = small.post(
        f"/sessions/{sid}/files", content=body + b"x" * (1024 * 1024), headers=headers
    )
    assert_error(declared, 413, "upload_too_large")
    response = small.post(
        f"/sessions/{sid}/files",
        content=chunked(body, *[b"x" * 65536] * 16),
        headers=headers,
    )
    assert_error(response, 413, "upload_too_large")
    assert app_store.list_files(sid) == []
    assert list(app_store.root.tmp_dir.iterdir()) == []


_URL_IN_PAGE = r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']|(https?://[^\s"'<>)]+)"""


def test_the_api_docs_page_loads_nothing_from_another_host(app_client: TestClient) -> None:
    """/docs was blank offline: FastAPI's page loads Swagger UI from a CDN."""
    import re

    response = app_client.get("/docs", headers={"Authorization": ""})  # the page needs no token
    assert response.status_code == 200
    found = [next(g for g in m.groups() if g) for m in re.finditer(_URL_IN_PAGE, response.text)]
    external = [url for url in found if "//" in url]
    assert external == [], f"/docs references other hosts: {external}"
    local = [url for url in found if url.startswith("/")]
    assert {url.rsplit(".", 1)[-1] for url in local} >= {"js", "css", "json"}, found
    for url in local:
        assert app_client.get(url).status_code == 200, url


def test_redoc_is_not_served(app_client: TestClient) -> None:
    # FastAPI's ReDoc page loads its script from a CDN, and ReDoc fetches its logo from
    # cdn.redoc.ly even when self-hosted; /docs is the one API page, and it works offline.
    assert app_client.get("/redoc").status_code == 404


def test_emptying_the_trash_over_http_on_a_protected_profile_needs_its_confirmation(
    app_store: Store, app_config: Config
) -> None:
    import dataclasses

    protected = dataclasses.replace(app_config, protected=True)
    headers = {"Authorization": f"Bearer {app_config.api_token}"}
    sid = app_store.create_session()["id"]
    app_store.delete_session(sid)
    with TestClient(create_app(app_store, protected), headers=headers) as client:
        refused = client.post("/trash/empty")
        assert_error(refused, 403, "confirmation_required", "?confirm=yes-i-mean-it")
        assert (
            "refusing to empty the trash on protected profile 'testing'"
            in (refused.json()["message"])
        )
        assert len(app_store.list_trash()) == 1
        emptied = client.post("/trash/empty", params={"confirm": "yes-i-mean-it"})
        assert emptied.status_code == 200, emptied.text
        assert emptied.json()["removed"] == 1
    assert app_store.list_trash() == []


def test_a_mistyped_or_repeated_query_parameter_is_refused_and_empties_nothing(
    app_client: TestClient, app_store: Store
) -> None:
    # FastAPI ignores a parameter a route does not take and keeps the last of a repeated
    # one: both requests below emptied the whole trash for good.
    app_store.delete_session(app_store.create_session()["id"])
    typo = app_client.post("/trash/empty?older_then=86400")
    assert_error(
        typo,
        400,
        "bad_request",
        "POST /trash/empty has no query parameter 'older_then' (did you mean 'older_than'?); "
        "it takes older_than and confirm. Nothing was done",
    )
    twice = app_client.post("/trash/empty?older_than=86400&older_than=0")
    assert_error(twice, 400, "bad_request", "the query parameter 'older_than' is given 2 times")
    assert "which one counts is ambiguous; nothing was done. Give it once" in twice.text
    assert len(app_store.list_trash()) == 1


def test_a_field_a_session_does_not_have_is_refused_not_dropped(
    app_client: TestClient, app_store: Store
) -> None:
    # A typo'd metadata was a 201 with the metadata silently gone.
    response = app_client.post("/sessions", json={"title": "a", "metdata": {"parcel": "A-17"}})
    assert_error(
        response,
        422,
        "validation_error",
        "body.metdata: is not a field of a session (did you mean 'metadata'?); the body takes "
        "title and metadata (anything else goes inside metadata), and nothing was stored",
    )
    assert response.json()["errors"][0]["loc"] == ["body", "metdata"]
    assert_error(app_client.post("/sessions", json={"id": "x"}), 422, "validation_error", "id")
    assert app_store.list_sessions().total == 0
    schema = app_client.get("/openapi.json").json()["components"]["schemas"]["SessionCreate"]
    assert schema["additionalProperties"] is False


def test_every_route_with_a_token_checks_its_query_after_the_token(
    app_client: TestClient, app_store: Store
) -> None:
    sid = app_store.create_session()["id"]
    assert_error(app_client.get("/sessions?limt=5"), 400, "bad_request", "(did you mean 'limit'?)")
    assert_error(app_client.get("/sessions?limit=1&limit=2"), 400, "bad_request", "'limit'")
    assert_error(
        app_client.get(f"/sessions/{sid}?verbose"),
        400,
        "bad_request",
        "GET /sessions/{session_id} has no query parameter 'verbose'; it takes no query",
    )
    stranger = app_client.get("/sessions?limt=5", headers={"Authorization": ""})
    assert stranger.status_code == 401  # a client without the token learns nothing more
    assert app_client.get("/sessions?limit=1&after=" + sid).status_code == 200
    assert app_client.get("/health?probe=1").status_code == 200


def test_emptying_the_trash_older_than_forever_is_a_422_not_a_500(app_client: TestClient) -> None:
    # schemathesis: ?older_than=9.5e307 overflowed timedelta.
    response = app_client.post("/trash/empty", params={"older_than": 9.5e307})
    assert_error(response, 422, "validation_error", "older_than")


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_a_multipart_body_cut_anywhere_into_chunks_is_stored_whole(
    app_client: TestClient, app_store: Store, sid: str, size: int
) -> None:
    # The upload begins on a worker thread after the chunk holding the part's headers is
    # parsed; the file's first bytes in that same chunk must not be lost or reordered.
    data = bytes(range(256)) * 40
    body, headers = multipart(b"cut.bin", data)
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    response = app_client.post(f"/sessions/{sid}/files", content=chunked(*pieces), headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["sha256"] == hashlib.sha256(data).hexdigest()
    assert app_client.get(f"/sessions/{sid}/files/cut.bin").content == data
    assert list(app_store.root.tmp_dir.iterdir()) == []


def test_a_second_file_field_in_the_same_chunk_is_400(
    app_client: TestClient, app_store: Store, sid: str
) -> None:
    one, headers = multipart(b"one.txt", b"1")
    two, _ = multipart(b"two.txt", b"2")
    body = one.removesuffix(b"--B--\r\n") + two
    response = app_client.post(f"/sessions/{sid}/files", content=body, headers=headers)
    assert_error(response, 400, "bad_request", "more than one form field 'file'")
    assert app_store.list_files(sid) == []
    assert list(app_store.root.tmp_dir.iterdir()) == []


def test_a_session_holds_at_most_max_files_per_session_files(app_config: Config) -> None:
    import dataclasses

    from app.dataroot import open_root

    config = dataclasses.replace(app_config, max_files_per_session=2)
    headers = {"Authorization": f"Bearer {config.api_token}"}
    with (
        open_root(config, kind="tests") as root,
        TestClient(create_app(Store(root), config), headers=headers) as client,
    ):
        sid = client.post("/sessions", json={"title": "full"}).json()["id"]
        for name in ("a.txt", "b.txt"):
            assert client.put(f"/sessions/{sid}/files/{name}", content=b"x").status_code == 201
        before = sorted(p.name for p in (root.path / "sessions" / sid).rglob("*"))
        refused = client.put(f"/sessions/{sid}/files/c.txt", content=b"x")
        assert_error(refused, 409, "too_many_files", "it holds 2 files, the most one session")
        multipart = client.post(f"/sessions/{sid}/files", files={"file": ("d.txt", b"x")})
        assert_error(multipart, 409, "too_many_files", "max_files_per_session")
        assert sorted(p.name for p in (root.path / "sessions" / sid).rglob("*")) == before
        # A replace is always allowed; so is a new name once a file is deleted.
        assert client.put(f"/sessions/{sid}/files/a.txt", content=b"y").status_code == 200
        assert client.delete(f"/sessions/{sid}/files/b.txt").status_code == 200
        assert client.put(f"/sessions/{sid}/files/c.txt", content=b"z").status_code == 201


def test_a_json_body_in_a_charset_other_than_utf8_is_refused_not_misread(
    app_client: TestClient, app_store: Store
) -> None:
    # Latin-1's "Ã©" is the bytes C3 A9, which read as UTF-8 are "é": a 201 for a title its
    # client did not send.
    for charset in ("latin-1", "ISO-8859-1", '"utf-16"'):
        response = app_client.post(
            "/sessions",
            content='{"title": "Ã©"}'.encode("latin-1"),
            headers={"Content-Type": f"Application/JSON; Charset={charset}"},
        )
        assert_error(
            response,
            415,
            "unsupported_media_type",
            f"POST /sessions reads its JSON as UTF-8 (RFC 8259), and this body says "
            f"charset={charset.strip(chr(34))!r}: read as UTF-8, its text would not be the text "
            "sent, so nothing was stored. Send the JSON in UTF-8, with charset=utf-8 or no charset",
        )
    assert app_store.list_sessions().total == 0
    for charset in ("utf-8", "UTF8", '"UTF-8"'):
        response = app_client.post(
            "/sessions",
            content='{"title": "é"}'.encode(),
            headers={"Content-Type": f"application/json; charset={charset}"},
        )
        assert response.status_code == 201, response.text
        assert response.json()["title"] == "é"
