"""Red team 60 on PostgreSQL and object storage.

What broke:

- A file's row in ``app_files`` that a tool or an edit wrote, of another shape than the app
  writes: a ``sha256`` in capitals (an export through a tool that upper-cases hex) or no hex
  at all, a negative size, a name in NFD (copied through macOS) or holding a ``/``. The
  columns take any text and any ``bigint``, and the remote backend, unlike the local one's
  records, took every row as the app's. Such a file was listed as written (a negative size
  against the document's own schema; a name no request could reach, each answered "no such
  file"); its download was a 500 ``internal_error`` with a traceback in the log (the digest
  of a SHA-256 that is no hex) or, for capitals, cut before its last byte, though its bytes
  were the file's; and `app data check` called those bytes "overwritten outside the app",
  sending the operator to the bucket's versioning for bytes that were sound, and said
  nothing of a name no request could reach. The local store's rule for a record's shape now
  holds for a row (``app.remote.rows``), and a name a request can name with it: such a row
  is left out of its session's files with a warning in the log, a read of its name is
  refused (``file_record_unreadable``, naming what is not the app's), and `app data check`
  reports it (``row-of-another-shape``) with its object's size and SHA-256, the values that
  correct it; a ``PUT`` of the name replaces it as any file, the row kept in the trash, and
  a restore of such a row from the trash is refused for the row, not as a copy "lost".

- Such a row naming another key than one the app makes: ``blobs//<hex of another file>``
  (SeaweedFS stores a doubled slash as one: that file's object) or the prefix's stamp
  ``.app-profile.json``. Its download served that key's bytes (cut, their SHA-256 not the
  row's), and once the file was deleted, `app data empty-trash` deleted the key: another
  file's acknowledged bytes were lost (its download then 500 "not there") and the prefix's
  stamp was gone. An object's name is part of the row's rule now (the row left out, refused,
  reported), and emptying the trash deletes only keys the app makes, saying which it kept.

- A session's row a tool wrote whose ``metadata`` (a ``json`` column) is not an object:
  ``null``, ``[1, 2]``, ``"text"``. It was answered as it was, in the session and in every
  page, against the document's schema, where a data root's ``session.json`` of that shape is
  ``session_unreadable`` and left out of pages. It is now the same here: refused by id
  (``session_unreadable``, naming the row), named in its page's ``left_out``, reported by
  `app data check` (``row-of-another-shape``); a ``DELETE`` moves it to the trash as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import unicodedata
from collections.abc import Iterator

import psycopg
import pytest
from engines import PostgresEngine, S3Engine, new_blob_url
from fastapi.testclient import TestClient
from test_remote_store import PROFILE, _replica

from app.config import load
from app.remote import pg
from app.remote.errors import FileRowOfAnotherShapeError
from app.remote.store import RemoteStore
from app.server import create_app
from app.storage import Finding

_DATA = b"the acknowledged bytes"


@contextlib.contextmanager
def serving(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> Iterator[tuple[RemoteStore, TestClient]]:
    """A replica over a scratch database and prefix of its own, and an HTTP client of it
    (the database dropped at the end)."""
    name = postgres_engine.create_database()
    database_url = postgres_engine.url(name)
    pg.open_database(database_url, PROFILE)
    config = load("testing")
    try:
        with _replica(s3_engine, (database_url, new_blob_url(s3_engine))) as store:
            headers = {"Authorization": f"Bearer {config.api_token}"}
            with TestClient(create_app(store, config), headers=headers) as client:
                yield store, client
    finally:
        postgres_engine.drop_database(name)


@pytest.fixture(scope="module")
def served(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> Iterator[tuple[RemoteStore, TestClient]]:
    """The module's replica and client (`serving`): each test works in sessions of its
    own, and looks at those alone."""
    with serving(postgres_engine, s3_engine) as pair:
        yield pair


def _findings(store: RemoteStore, *mine: str) -> dict[str, Finding]:
    """The check's row-of-another-shape findings of the sessions ``mine``, by target."""
    return {
        f.target: f
        for f in store.check(repair=False).findings
        if f.problem == "row-of-another-shape" and f.target.split("/")[0] in mine
    }


def _session_with(client: TestClient, files: dict[str, bytes]) -> tuple[str, str]:
    """A new session holding ``files``: its id and the path of its files."""
    session_id = client.post("/sessions", json={"title": "t"}).json()["id"]
    path = f"/sessions/{session_id}/files"
    for name, data in files.items():
        assert client.put(f"{path}/{name}", content=data).status_code == 201
    return session_id, path


#: A row as a tool may write it: the file's name, the SQL that changes its row, what the
#: refusal and the check say is not the app's.
_TOOLS_ROWS = {
    "capitals.txt": ("sha256 = upper(sha256)", "not 64 lower-case hex digits"),
    "nohex.txt": ("sha256 = 'see attachment'", "its sha256 is 'see attachment'"),
    "negative.txt": ("size = -1", "its size is -1, not a whole number of bytes"),
    "café.txt": (
        f"name = '{unicodedata.normalize('NFD', 'café.txt')}'",
        "its name is not in NFC",
    ),
    "slash.txt": ("name = 'in/slash.txt'", "its name is not one a request can name"),
}


def test_a_file_row_a_tool_wrote_is_left_out_refused_by_name_and_reported(
    served: tuple[RemoteStore, TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    # Before: listed as written; capitals' download cut before its last byte, nohex's and
    # negative's 500 internal_error (a traceback) or "overwritten outside the app"; the check
    # said every sound object was overwritten, and nothing of the two names.
    store, client = served
    session_id, files = _session_with(client, {name: _DATA for name in (*_TOOLS_ROWS, "kept.txt")})
    with psycopg.connect(store.database_url, autocommit=True) as admin:
        for name, (change, _) in _TOOLS_ROWS.items():
            admin.execute(f"UPDATE app_files SET {change} WHERE name = %s", (name,))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="app.remote.store"):
        listed = client.get(files)
    assert listed.status_code == 200, listed.text
    assert [f["name"] for f in listed.json()["items"]] == ["kept.txt"]
    said = caplog.text
    for _, fault in _TOOLS_ROWS.values():
        assert fault in said
    assert "row-of-another-shape" in said
    for name in ("capitals.txt", "nohex.txt", "negative.txt"):
        refused = client.get(f"{files}/{name}")
        assert refused.status_code == 500, refused.text
        body = refused.json()
        assert body["code"] == "file_record_unreadable"
        assert body["message"].startswith(
            f"cannot send file {name!r} of session {session_id}: its row in the database is "
            "of another shape than the app writes (its "
        )
        assert _TOOLS_ROWS[name][1] in body["message"]
        assert "`app data check` reports the row (row-of-another-shape)" in body["message"]
    assert client.get(f"{files}/kept.txt").content == _DATA

    findings = _findings(store, session_id)
    sha = hashlib.sha256(_DATA).hexdigest()
    stored = {"café.txt": unicodedata.normalize("NFD", "café.txt"), "slash.txt": "in/slash.txt"}
    assert set(findings) == {f"{session_id}/{stored.get(name, name)}" for name in _TOOLS_ROWS}
    for name, (_, fault) in _TOOLS_ROWS.items():
        finding = findings[f"{session_id}/{stored.get(name, name)}"]
        assert finding.problem == "row-of-another-shape"
        assert fault in finding.detail
        assert f"is {len(_DATA)} bytes with the SHA-256 {sha}" in finding.detail
        assert finding.repair.startswith("nothing: left for a human (with every replica stopped")
        assert f"give the row size {len(_DATA)} and sha256 '{sha}'" in finding.repair
        assert not finding.repaired

    # A change of the name works as for any file: the row goes to the trash, its object kept.
    assert client.put(f"{files}/nohex.txt", content=b"again").status_code == 200
    assert client.get(f"{files}/nohex.txt").content == b"again"
    # Its restore from the trash is refused for the row, not as a copy "lost" (before: "holds
    # bytes whose SHA-256 is <its own>, where <the same in capitals> was acknowledged").
    assert client.delete(f"{files}/capitals.txt").status_code == 200
    with pytest.raises(FileRowOfAnotherShapeError) as refused_restore:
        store.restore(session_id, file="capitals.txt")
    assert refused_restore.value.message.startswith(
        f"cannot restore file 'capitals.txt' of session {session_id}: its row in the database "
        "is of another shape than the app writes (its sha256 is "
    )
    assert "and nothing was changed." in refused_restore.value.message


def test_a_trashed_row_naming_another_file_s_key_or_the_stamp_never_deletes_it(
    served: tuple[RemoteStore, TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    # Before: b's download sent a's bytes (cut), and after b and c were deleted,
    # empty-trash deleted a's object (a's download: 500 "its bytes are not there") and the
    # prefix's stamp object.
    store, client = served
    session_id, files = _session_with(
        client, {name: _DATA + name.encode() for name in ("a.txt", "b.txt", "c.txt")}
    )
    with psycopg.connect(store.database_url, autocommit=True) as admin:
        row = admin.execute("SELECT blob FROM app_files WHERE name = 'a.txt'").fetchone()
        assert row is not None
        doubled = row[0].replace("blobs/", "blobs//")
        admin.execute("UPDATE app_files SET blob = %s WHERE name = 'b.txt'", (doubled,))
        admin.execute("UPDATE app_files SET blob = '.app-profile.json' WHERE name = 'c.txt'")
    refused = client.get(f"{files}/b.txt")
    assert refused.status_code == 500, refused.text
    assert refused.json()["code"] == "file_record_unreadable"
    assert f"its object's name {doubled!r} is not one the app makes" in refused.json()["message"]
    assert [f["name"] for f in client.get(files).json()["items"]] == ["a.txt"]
    findings = _findings(store, session_id)
    assert set(findings) == {f"{session_id}/b.txt", f"{session_id}/c.txt"}
    assert "it names object '.app-profile.json', which may be another file's or the prefix's " in (
        findings[f"{session_id}/c.txt"].detail
    )
    for name in ("b.txt", "c.txt"):
        assert client.delete(f"{files}/{name}").status_code == 200
    with caplog.at_level(logging.WARNING, logger="app.remote.store"):
        emptied = store.empty_trash()
    assert {e.file for e in emptied if e.session_id == session_id} == {"b.txt", "c.txt"}
    assert f"named object {doubled!r}, not one the app makes" in caplog.text
    assert "the object is kept" in caplog.text
    assert client.get(f"{files}/a.txt").content == _DATA + b"a.txt"
    assert ".app-profile.json" in {info.name for info in store.objects.objects("")}


def test_a_session_row_whose_metadata_is_no_object_is_left_out_and_refused_by_id(
    served: tuple[RemoteStore, TestClient],
) -> None:
    # Before: each answered with its metadata as written (null, a list, a string), in the
    # session and in the page, against the schema; the check said nothing.
    store, client = served
    ids = [client.post("/sessions", json={"title": f"t{i}"}).json()["id"] for i in range(4)]
    written = {ids[0]: ("null", "a null"), ids[1]: ("[1, 2]", "a list"), ids[2]: ('"x"', "a str")}
    with psycopg.connect(store.database_url, autocommit=True) as admin:
        for session_id, (metadata, _) in written.items():
            admin.execute(
                "UPDATE app_sessions SET metadata = %s WHERE id = %s", (metadata, session_id)
            )
    page = client.get("/sessions").json()
    assert [s["id"] for s in page["items"] if s["id"] in ids] == [ids[3]]
    assert [(o["id"], o["reason"]) for o in page["left_out"] if o["id"] in ids] == [
        (i, "unreadable") for i in ids[:3]
    ]
    total = page["total"]
    assert total == len(page["items"]) + len(page["left_out"])
    for session_id, (_, kind) in written.items():
        refused = client.get(f"/sessions/{session_id}")
        assert refused.status_code == 500, refused.text
        assert refused.json()["code"] == "session_unreadable"
        assert refused.json()["message"].startswith(
            f"cannot read session {session_id}: its row in app_sessions has {kind} in "
            "'metadata', which the app never writes (it was changed outside the app). "
            "`app data check` reports it as row-of-another-shape."
        )
    assert set(_findings(store, *ids)) == set(ids[:3])
    # `app sessions list` names them (before: left out without a word).
    said = dict(store.left_out({s["id"] for s in store.iter_all()}))
    assert set(said) >= set(ids[:3])
    assert said[ids[1]].startswith(
        "its row in app_sessions has a list in 'metadata', which the app never writes"
    )
    assert client.delete(f"/sessions/{ids[0]}").status_code == 200
    assert client.get("/sessions").json()["total"] == total - 1
