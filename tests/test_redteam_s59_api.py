"""Red team 59 on the HTTP contract (branch rt-api1): see docs/explanation/attacks/.

The promise: what `GET /openapi.json` says is what the server answers, on every path,
including a data root holding what a tool or an earlier build wrote. Schemathesis fuzzes the
requests on a clean root; these tests damage the root under a real ``app serve`` and check
every answer against the document it serves (jsonschema-rs).

What broke, and what changed:

- a file's record written by a tool: ``"size": "11"``, ``-1``, ``true`` or none, a
  ``sha256`` that is a number or no hex (``"ab\\r\\nX-Evil: 1"``), was listed as it was, a page
  against the schema (a string where it says integer), and its download a 500
  ``internal_error`` (a traceback: the ``Repr-Digest`` of a SHA-256 that is no hex) or a
  "damaged" refusal; a name stored in NFD or holding a control character was listed, and every
  request for it answered "no such file" or "invalid path". Such a record is now none of the
  app's (`app.store.records._of_our_shape`): left out of the listing with a warning, its name
  refused with ``file_record_unreadable``, reported by ``app data check``; the bytes are kept;
- a record's ``uploaded_at`` that is not text (a number of seconds) was sent as it was against
  the schema's ``string | null``: it is now null, and the file stays readable;
- a ``session.json`` without ``title`` (or with a null one), ``metadata`` or ``id`` was
  answered without them, against the schema: they are now ``""``, ``{}`` and the directory's
  id; one without ``created_at`` is refused as damage (``session_unreadable``, and the listing
  names it in ``left_out``); a list of files not yet migrated is shown entry by entry as a
  record is;
- ``app data check`` said of such a record only "cannot be read ... put the record back from a
  backup"; it now names what is not the app's (the size, the SHA-256, the name's form) and,
  for a name in NFD, the name to rename it to;
- every route may answer 500 with a documented code (``session_unreadable``,
  ``file_record_unreadable``, ``file_damaged``, ``internal_error``): the document listed no 500
  anywhere; it now does, in the problem shape.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from redteam_s19_http import one_server
from session_files import by_hand, session_by_hand

from app.config import Config
from app.storage import open_storage
from app.testing import LiveServer

jsonschema_rs = pytest.importorskip("jsonschema_rs", reason="jsonschema-rs (the dev extras)")

SESSION, FILES, FILE = (
    "/sessions/{session_id}",
    "/sessions/{session_id}/files",
    "/sessions/{session_id}/files/{name}",
)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LiveServer, httpx.Client, dict[str, Any]]]:
    """One server for the module, a client of it, and the document it serves; each test
    works in sessions of its own."""
    with (
        one_server(tmp_path_factory) as server,
        httpx.Client(base_url=server.url, headers=server.headers) as client,
    ):
        yield server, client, client.get("/openapi.json").json()


def _conforms(document: dict[str, Any], path: str, answer: httpx.Response) -> None:
    """``answer`` is one the document states for ``path``: its status is listed, and its
    JSON body (a problem's too) validates against that status's schema."""
    method = answer.request.method.lower()
    responses = document["paths"][path][method]["responses"]
    status = str(answer.status_code)
    assert status in responses, (method, path, status, answer.text)
    if method == "head" or not answer.content:
        return
    content = responses[status]["content"]
    media = answer.headers["content-type"].split(";")[0]
    if media == "application/octet-stream" or media.startswith("multipart/"):
        return
    schema = {**content[media]["schema"], "components": document["components"]}
    body = answer.json()
    issues = [str(e) for e in jsonschema_rs.validator_for(schema).iter_errors(body)]
    assert not issues, (method, path, status, issues)


def _session_with(client: httpx.Client, title: str, name: str = "a.txt") -> str:
    session_id = str(client.post("/sessions", json={"title": title}).json()["id"])
    assert client.put(f"/sessions/{session_id}/files/{name}", content=b"hello world").is_success
    return session_id


def _listed(client: httpx.Client, document: dict[str, Any], session_id: str) -> dict[str, Any]:
    """The session as GET, its files and the listing show it, each checked against the
    document; the listing's entry (or None, with why, where it is left out)."""
    _conforms(document, SESSION, client.get(f"/sessions/{session_id}"))
    _conforms(document, FILES, client.get(f"/sessions/{session_id}/files"))
    page = client.get("/sessions", params={"limit": 1000})
    _conforms(document, "/sessions", page)
    items = [s for s in page.json()["items"] if s["id"] == session_id]
    left = [s for s in page.json()["left_out"] if s["id"] == session_id]
    return items[0] if items else {"left_out": left}


#: A record as a tool might rewrite it: each is none of the app's, and refused by name.
DAMAGED_RECORDS = {
    "size as text": lambda r: {**r, "size": str(r["size"])},
    "negative size": lambda r: {**r, "size": -1},
    "size true": lambda r: {**r, "size": True},
    "no size": lambda r: {k: v for k, v in r.items() if k != "size"},
    "sha256 a number": lambda r: {**r, "sha256": 7},
    "sha256 a header": lambda r: {**r, "sha256": "ab\r\nX-Evil: 1"},
}


def test_a_record_a_tool_wrote_is_listed_per_the_schema_or_refused_by_name(
    served: tuple[LiveServer, httpx.Client, dict[str, Any]],
) -> None:
    server, client, document = served
    assert server.data_root is not None
    for label, edit in DAMAGED_RECORDS.items():
        session_id = _session_with(client, label)
        record = server.data_root / "sessions" / session_id / "records" / "a.txt"
        record.write_text(json.dumps(by_hand(edit(json.loads(record.read_text())))))
        # Before: listed as it was ("11" where the schema says integer, -1 under its minimum).
        assert _listed(client, document, session_id)["files"] == [], label
        url = f"/sessions/{session_id}/files/a.txt"
        for method, headers in (("GET", {}), ("HEAD", {}), ("GET", {"Range": "bytes=2-4"})):
            answer = client.request(method, url, headers=headers)
            _conforms(document, FILE, answer)
            # Before: 500 internal_error (a traceback) for the SHA-256 that is no hex.
            assert answer.status_code == 500, (label, method, answer.text)
            if method == "GET":
                assert answer.json()["code"] == "file_record_unreadable", (label, answer.text)
                assert "app data check" in answer.json()["message"]
        # Nothing is written over it: the bytes it names stay acknowledged.
        put = client.put(url, content=b"other")
        assert put.json()["code"] == "file_record_unreadable", (label, put.text)


def test_a_name_no_request_can_name_is_not_listed(
    served: tuple[LiveServer, httpx.Client, dict[str, Any]],
) -> None:
    server, client, document = served
    assert server.data_root is not None
    for name in (unicodedata.normalize("NFD", "café.txt"), "a\nb.txt"):
        session_id = _session_with(client, "names", "x")
        records = server.data_root / "sessions" / session_id / "records"
        record = json.loads((records / "x").read_text())
        (records / "x").rename(records / name)
        (records / name).write_text(json.dumps(by_hand({**record, "name": name})))
        # Before: listed, and every GET, HEAD and DELETE of it 404 (the name is taken in NFC)
        # or 400 (a control character in a path).
        assert _listed(client, document, session_id)["files"] == [], name
        answer = client.get(f"/sessions/{session_id}/files/{quote(name)}")
        _conforms(document, FILE, answer)
        assert answer.status_code in (400, 404), answer.text


def test_a_record_time_that_is_not_text_is_null_and_the_file_readable(
    served: tuple[LiveServer, httpx.Client, dict[str, Any]],
) -> None:
    server, client, document = served
    assert server.data_root is not None
    session_id = _session_with(client, "time")
    record = server.data_root / "sessions" / session_id / "records" / "a.txt"
    record.write_text(
        json.dumps(by_hand({**json.loads(record.read_text()), "uploaded_at": 1733450000}))
    )
    # Before: `"uploaded_at": 1733450000` where the schema says string or null.
    (entry,) = _listed(client, document, session_id)["files"]
    assert entry["uploaded_at"] is None and entry["size"] == 11
    answer = client.get(f"/sessions/{session_id}/files/a.txt", headers={"Range": "bytes=0-4"})
    assert (answer.status_code, answer.content) == (206, b"hello")


def _rewrite(root: Path, session_id: str, edit: Any) -> None:
    # As a tool or an earlier build writes it: without the SHA-256 of what a create
    # acknowledged, which red team 65 added (and which such an edit would no longer match).
    path = root / "sessions" / session_id / "session.json"
    meta = json.loads(path.read_text())
    meta.pop("content_sha256")
    # Its key put right for the edit, as a root this build laid out requires (rows67).
    path.write_text(json.dumps(session_by_hand(edit(meta))))


def test_a_session_json_without_a_field_the_document_requires(
    served: tuple[LiveServer, httpx.Client, dict[str, Any]],
) -> None:
    server, client, document = served
    root = server.data_root
    assert root is not None
    without = {"title": "", "metadata": {}, "id": None}
    for key, shown in without.items():
        session_id = _session_with(client, "fields")
        _rewrite(root, session_id, lambda m, key=key: {k: v for k, v in m.items() if k != key})
        # Before: answered without it ("'title' is a required property").
        session = _listed(client, document, session_id)
        assert session[key] == (session_id if key == "id" else shown), (key, session)
    session_id = _session_with(client, "null title")
    _rewrite(root, session_id, lambda m: {**m, "title": None})
    assert _listed(client, document, session_id)["title"] == ""
    # No time of its creation: damage, refused by name, and the listing says so.
    session_id = _session_with(client, "no created_at")
    _rewrite(root, session_id, lambda m: {k: v for k, v in m.items() if k != "created_at"})
    assert _listed(client, document, session_id)["left_out"][0]["reason"] == "unreadable"
    answer = client.get(f"/sessions/{session_id}")
    assert answer.json()["code"] == "session_unreadable"
    assert "has no 'created_at'" in answer.json()["message"]
    # A list of files from before records/ (a writer migrates it at its start): each entry
    # shown as a record is, one of another shape left out.
    session_id = _session_with(client, "legacy")
    listed = [
        {"name": "b.txt", "size": "3", "uploaded_at": 4},
        {"name": "c.txt", "size": 3, "sha256": None, "uploaded_at": 4},
    ]
    _rewrite(root, session_id, lambda m: {**m, "files": listed})
    files = _listed(client, document, session_id)["files"]
    assert files == [{"name": "c.txt", "size": 3, "sha256": None, "uploaded_at": None}]


def test_every_operation_documents_its_500_in_the_problem_shape(
    served: tuple[LiveServer, httpx.Client, dict[str, Any]],
) -> None:
    _server, _client, document = served
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            fault = operation["responses"].get("500")
            # Before: no operation listed a 500, though each may answer one of these codes.
            assert fault is not None, (method, path)
            assert "session_unreadable" in fault["description"]
            assert fault["content"]["application/problem+json"]["schema"] == {
                "$ref": "#/components/schemas/Problem"
            }


def test_app_data_check_names_what_is_not_the_apps_and_keeps_the_bytes(
    app_config: Config,
) -> None:
    nfd = unicodedata.normalize("NFD", "café.txt")
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        session_id = store.create_session("check")["id"]
        for name in ("a.txt", "b.txt"):
            store.put_file(session_id, name, name.encode())
    records = app_config.data_root / "sessions" / session_id / "records"
    record = json.loads((records / "a.txt").read_text())
    (records / "a.txt").write_text(json.dumps(by_hand({**record, "size": "5"})))
    record = json.loads((records / "b.txt").read_text())
    (records / "b.txt").rename(records / nfd)
    (records / nfd).write_text(json.dumps(by_hand({**record, "name": nfd})))
    blobs = sorted((records.parent / "blobs").iterdir())
    with open_storage(app_config, writer=True, kind="tests", wanted="repair it") as store:
        assert store.list_files(session_id) == []
        report = store.check(repair=True)
    found = {
        Path(f.target).name: (f.problem, f.detail, f.repair)
        for f in report.findings
        if f.problem == "unknown-entry"
    }
    # Before: both listed, and `check` clean (a size as text was never compared).
    assert "its size is '5', not a whole number of bytes" in found["a.txt"][1]
    assert "put the record back from a backup" in found["a.txt"][2]
    assert "its name is not in NFC" in found[nfd][1]
    assert "rename the record to 'café.txt'" in found[nfd][2]
    assert sorted((records.parent / "blobs").iterdir()) == blobs  # kept, for a human
