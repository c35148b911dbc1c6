"""A ``session.json`` damaged from outside the app: it stops nothing but itself, and says so.

The app replaces ``session.json`` whole, so a file that is not a JSON object, or that holds
a field of a type the app never writes, came from a hand edit, a restore gone wrong or a
disk fault. Reading that session is a 500 that names it and what resolves it; the server
stays sound (no ``Connection: close``); a delete moves it to the trash as it is, so a
client can clear it; a purge is whole and audited; ``check`` reports it.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from app.errors import UnreadableSessionError
from app.store import Store
from app.testing import LiveServer

#: What the app says of a session.json whose title, metadata, id, creation or update time
#: are no longer those its create acknowledged (red team 65).
CHANGED = (
    "holds a title, metadata, id, creation or update time other than those its create "
    "acknowledged (their SHA-256 is no longer the content_sha256 written with them; after an "
    "edit made on purpose, remove its content_sha256 line, and, with no server on the root, "
    "the content_sha256_since line of the root's stamp (.app-profile.json), then run `app data "
    "check --repair`, which hashes it again)"
)


def _flipped(raw: bytes) -> bytes:
    # A bit flipped on the disk in the title: still JSON, the same size, and served as the
    # title its create acknowledged, `app data check` finding nothing, before red team 65.
    assert raw.count(b'"bits-flipped"') == 1, raw
    return raw.replace(b'"bits-flipped"', b'"bits-flIpped"')


DAMAGE: dict[str, tuple[bytes | Callable[[bytes], bytes], str]] = {
    "torn": (b'{"id": "x", "ti', "is not a JSON object"),
    "number-in-updated_at": (
        b'{"title": "t", "metadata": {}, "created_at": "2026-01-01T00:00:00", "updated_at": 5}',
        "has a int in 'updated_at', which the app never writes",
    ),
    "bits-flipped": (_flipped, CHANGED),
}


def _damage(root: Path, session_id: str, content: bytes | Callable[[bytes], bytes]) -> bytes:
    """Write ``content`` (or what it makes of the file) as the session's session.json."""
    path = root / "sessions" / session_id / "session.json"
    data = content(path.read_bytes()) if callable(content) else content
    path.write_bytes(data)
    return data


def _answer(connection: http.client.HTTPConnection) -> tuple[int, dict[str, str], bytes]:
    response = connection.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def test_over_http_a_damaged_session_is_named_and_can_be_deleted(
    app_live_server: LiveServer,
) -> None:
    assert app_live_server.data_root is not None
    host, port = app_live_server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port))
    headers = {**app_live_server.headers, "Content-Type": "application/json"}
    ids = {}
    for name in (*DAMAGE, "kept"):
        connection.request("POST", "/sessions", body=json.dumps({"title": name}), headers=headers)
        status, _, body = _answer(connection)
        assert status == 201, body
        ids[name] = json.loads(body)["id"]
    written = {
        name: _damage(app_live_server.data_root, ids[name], content)
        for name, (content, _) in DAMAGE.items()
    }

    for name, (_, damage) in DAMAGE.items():
        session_id = ids[name]
        connection.request("GET", f"/sessions/{session_id}", headers=app_live_server.headers)
        status, answer_headers, body = _answer(connection)
        problem = json.loads(body)
        assert (status, problem["code"]) == (500, "session_unreadable"), body
        assert problem["message"] == (
            f"cannot read session {session_id}: its session.json {damage} (it was changed "
            "outside the app). `app data check` reports it as session-unreadable. Put "
            "session.json back from a backup, or delete the session (DELETE "
            f"/sessions/{session_id}) to move it to the trash as it is"
        )
        # Only that session's file is unsound, not the server: the connection stays open.
        assert "connection" not in answer_headers
        # Nothing is written into it either.
        connection.request(
            "PUT", f"/sessions/{session_id}/files/a", body=b"bytes", headers=app_live_server.headers
        )
        status, _, body = _answer(connection)
        assert (status, json.loads(body)["code"]) == (500, "session_unreadable")
        assert list((app_live_server.data_root / "sessions" / session_id).glob("*/*")) == []

    connection.request("GET", "/sessions", headers=app_live_server.headers)
    status, _, body = _answer(connection)
    assert [s["id"] for s in json.loads(body)["items"]] == [ids["kept"]]

    # A delete clears it from the API; its bytes stay in the trash, as they were.
    for name in DAMAGE:
        connection.request("DELETE", f"/sessions/{ids[name]}", headers=app_live_server.headers)
        status, _, body = _answer(connection)
        assert status == 200, body
        trashed = app_live_server.data_root / ".trash" / json.loads(body)["trash"]
        assert (trashed / "session" / "session.json").read_bytes() == written[name]
        connection.request("GET", f"/sessions/{ids[name]}", headers=app_live_server.headers)
        status, _, body = _answer(connection)
        assert (status, json.loads(body)["code"]) == (404, "session_not_found")
    connection.close()


def test_a_purge_with_a_damaged_session_is_whole_and_audited(app_store: Store) -> None:
    # The purge once stopped at the damaged session: those before it were in the trash,
    # the rest were not, and no audit line said what had been moved.
    first, damaged, last = (app_store.create_session(t)["id"] for t in ("a", "b", "c"))
    root = Path(app_store.location)
    _damage(root, damaged, b'{"id": "x", "ti')
    moved = app_store.purge()
    assert sorted(e.session_id for e in moved) == sorted([first, damaged, last])
    (line,) = [json.loads(x) for x in (root / "audit.jsonl").read_bytes().splitlines()]
    assert line["operation"] == "purge"
    assert sorted(line["details"]["sessions"]) == sorted([first, damaged, last])


def test_restoring_a_damaged_session_brings_it_back_audited_and_says_it_is_unreadable(
    app_store: Store,
) -> None:
    session_id = app_store.create_session("damaged")["id"]
    root = Path(app_store.location)
    torn = _damage(root, session_id, b'{"id": "x", "ti')
    app_store.delete_session(session_id)
    with pytest.raises(UnreadableSessionError, match=f"restored session {session_id} from "):
        app_store.restore(session_id)
    assert (root / "sessions" / session_id / "session.json").read_bytes() == torn
    operations = [
        json.loads(x)["operation"] for x in (root / "audit.jsonl").read_bytes().splitlines()
    ]
    assert operations == ["trash-session", "restore-session"]
    assert app_store.list_trash() == []
    found = {(f.problem, Path(f.target).name) for f in app_store.check().findings}
    assert found == {("session-unreadable", session_id)}


def test_a_field_of_another_type_is_left_out_of_pages_even_with_files(app_store: Store) -> None:
    # With a file, the page compared the number with the records' times: every page
    # holding the session was a 500.
    damaged = app_store.create_session("damaged")["id"]
    kept = app_store.create_session("kept")["id"]
    app_store.put_file(damaged, "a", b"a")
    _damage(Path(app_store.location), damaged, DAMAGE["number-in-updated_at"][0])
    assert [s["id"] for s in app_store.list_sessions().items] == [kept]
    assert [s["id"] for s in json.loads(app_store.list_sessions_json())["items"]] == [kept]


def test_a_title_or_metadata_changed_on_the_disk_is_named_and_never_served(
    app_store: Store,
) -> None:
    # Red team 65: a file's bytes are checked against their SHA-256 by every download and
    # by `check`; a session's JSON had none, and a bit flipped on the disk in its metadata
    # (the same size, still JSON) was served as what its create acknowledged, and `check`
    # found nothing. session.json now keeps the SHA-256 of what was acknowledged.
    root = Path(app_store.location)
    damaged = app_store.create_session("sent", {"run": 1})["id"]
    kept = app_store.create_session("kept", {"run": 1})["id"]
    assert app_store.check().findings == []
    path = root / "sessions" / damaged / "session.json"
    acknowledged = path.read_bytes()
    assert acknowledged.count(b'"run": 1') == 1, acknowledged
    path.write_bytes(acknowledged.replace(b'"run": 1', b'"run": 7'))

    with pytest.raises(UnreadableSessionError) as raised:
        app_store.get_session(damaged)
    assert f"its session.json {CHANGED} (it was changed outside the app)" in str(raised.value)
    page = app_store.list_sessions()
    assert [s["id"] for s in page.items] == [kept]
    assert [(s.id, s.reason) for s in page.left_out] == [(damaged, "unreadable")]
    assert [s["id"] for s in json.loads(app_store.list_sessions_json())["items"]] == [kept]
    found = [(f.problem, f.target, f.detail, f.repair) for f in app_store.check().findings]
    assert found == [
        (
            "session-unreadable",
            f"sessions/{damaged}",
            (
                f"a session directory whose session.json {CHANGED}: damage from outside the "
                "app, or an edit by hand"
            ),
            (
                "nothing: left for a human (restore session.json from a backup; after an edit "
                "made on purpose, remove its content_sha256 line, and, with no server on the "
                "root, the content_sha256_since line of the root's stamp (.app-profile.json), "
                "then run `app data check --repair`, which hashes it again)"
            ),
        )
    ]

    # A NaN there (json.loads reads one; no create writes one) is no traceback either.
    path.write_bytes(acknowledged.replace(b'"run": 1', b'"run": NaN'))
    with pytest.raises(UnreadableSessionError, match="its create acknowledged"):
        app_store.get_session(damaged)

    # Put back, it is served again, as acknowledged; the key is never part of an answer.
    path.write_bytes(acknowledged)
    assert app_store.get_session(damaged)["metadata"] == {"run": 1}
    assert app_store.check().findings == []
    assert "content_sha256" not in app_store.get_session(kept)
    assert b"content_sha256" not in app_store.list_sessions_json()

    # Without the key: in a root a build before red team 65 wrote, read as it was; in one
    # this build laid out (its stamp says so, rows67), refused as the change is.
    older = json.loads(acknowledged)
    del older["content_sha256"]
    path.write_text(json.dumps({**older, "title": "edited by a tool"}))
    with pytest.raises(UnreadableSessionError, match="has no content_sha256, which every"):
        app_store.get_session(damaged)
