"""Red team 59 on regress, the HTTP contract's record checks (branch rt-regress8): see
docs/explanation/attacks/.

The merge of rt-api1 made a record of another shape than the app writes (a size as text, a
SHA-256 in capitals, as PowerShell's ``Get-FileHash`` prints it, a name not in NFC) none of
the app's: left out of its session's files, refused by name, its bytes kept. The one reader
it changed, ``load_record``, is also the app's bookkeeping of which bytes a record names.

What broke, and what changed:

- ``app data check --repair`` (every server's start-up) asked which blob a file's record
  names to tell whether a delete or a replace that left its trash entry holding only its
  manifest had committed; a record of another shape read as "no record", the delete as
  committed, and the repair moved the bytes the record still names into the trash entry,
  for ``empty-trash`` to remove for good; the record named bytes not there;
- a migration to records/ and blobs/ repeated after a crash (the record written, the bytes
  moved, session.json's list not yet dropped) read its own record, copied from a list a
  tool wrote (a size as text), as none, and wrote another over it naming a new blob, which
  no bytes were moved to: the file's record named bytes not there, and its bytes none.

``record_blob`` and the migration now read a record as one that names its file and a blob,
whatever its other fields (``load_record(shaped=False)``); the listing and every request
still leave it out and refuse it.

- an entry of a session's list of files not migrated yet (session.json's ``files``) of
  another shape was left out of the listing without a word in the log, where a record left
  out is said there (red team 46): it is now said, naming the session and the file;
- a record of another shape left out was said in the log to be one that "cannot be read
  (damaged or replaced outside the app)", of a record that reads: the warning now says what
  is not the app's (its size, its SHA-256, its name's form) and what resolves it, as
  ``app data check`` does.

Held: records as earlier builds wrote them (no hash, no time, a time in seconds, no bytes, a
size of ``7.0``) and stored names in NFC that a normalisation check could misjudge (Hangul,
a composed accent, an emoji joined by zero-width joiners, a no-break space) are listed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
from session_files import by_hand

from app.config import Config
from app.storage import Storage


def _session(store: Storage, config: Config, title: str) -> tuple[str, Path]:
    """A new session of the test's store, and its directory."""
    session_id = str(store.create_session(title)["id"])
    return session_id, config.data_root / "sessions" / session_id


def _blob(records: Path, name: str) -> str:
    return str(json.loads((records / name).read_text())["blob"])


def test_a_repair_keeps_the_bytes_a_record_of_another_shape_names(
    app_store: Storage, app_config: Config
) -> None:
    store = app_store
    session_id, directory = _session(store, app_config, "a delete stopped before its commit")
    store.put_file(session_id, "a.txt", b"acknowledged")
    records, blobs = directory / "records", directory / "blobs"
    record = json.loads((records / "a.txt").read_text())
    store.delete_file(session_id, "a.txt")
    # As a delete stopped before its commit leaves it: the entry holds its manifest alone,
    # the record and the bytes are where they were; and the record's SHA-256 in capitals,
    # as a tool wrote it.
    (entry,) = [e.path for e in store.list_trash() if e.file == "a.txt"]
    (entry / "a.txt").rename(blobs / record["blob"])
    (records / "a.txt").write_text(json.dumps({**record, "sha256": record["sha256"].upper()}))
    report = store.check(repair=True)
    # Before: "trash-unfinished", and the record's bytes were moved into the entry.
    assert "trash-unfinished" not in [f.problem for f in report.findings], report.findings
    assert (blobs / record["blob"]).read_bytes() == b"acknowledged"
    assert _blob(records, "a.txt") == record["blob"]
    unknown = [f for f in report.unresolved if f.problem == "unknown-entry"]
    assert unknown, report.findings
    assert "its sha256 is" in unknown[0].detail, unknown[0]


def test_a_repeated_migration_keeps_its_record_of_another_shape(
    app_store: Storage, app_config: Config
) -> None:
    store = app_store
    _, directory = _session(store, app_config, "a migration stopped before its commit")
    data = b"migrated"
    # A list a tool wrote (the size as text), migrated up to its commit: the record written
    # from the list as it was, the bytes moved to blobs/, session.json's list still there.
    listed = {
        "name": "a.txt",
        "size": str(len(data)),
        "sha256": hashlib.sha256(data).hexdigest(),
        "uploaded_at": "2020-01-01T00:00:00.000000+00:00",
    }
    meta = json.loads((directory / "session.json").read_text())
    (directory / "session.json").write_text(json.dumps({**meta, "files": [listed]}))
    blob = "0123456789abcdef0123456789abcdef"
    (directory / "records").mkdir()
    (directory / "blobs").mkdir()
    (directory / "blobs" / blob).write_bytes(data)
    (directory / "records" / "a.txt").write_text(json.dumps({**listed, "blob": blob}))
    store.check(repair=True)
    assert "files" not in json.loads((directory / "session.json").read_text())
    # Before: a new record over it, naming a blob no bytes were moved to.
    assert _blob(directory / "records", "a.txt") == blob
    assert (directory / "blobs" / blob).read_bytes() == data
    assert sorted(p.name for p in (directory / "blobs").iterdir()) == [blob]


#: Names an earlier build stored (`check_stored_name`), each already in NFC: precomposed
#: Hangul, a letter with its accent composed, an emoji of several joined by zero-width
#: joiners, a no-break space; and records as earlier builds wrote them (no hash yet, no time,
#: no bytes).
EARLIER = {
    "한글 문서.txt": {"size": 0, "sha256": None},
    "café.txt": {"size": 3, "sha256": "ab" * 32, "uploaded_at": None},
    "👨\u200d👩\u200d👧.png": {"size": 7.0, "sha256": "0" * 64},
    "a\u00a0b.txt": {"size": 1, "sha256": None, "uploaded_at": 1700000000},
}


def test_records_of_earlier_builds_and_nfc_names_are_listed(
    app_store: Storage, app_config: Config
) -> None:
    """Held: none of these is refused as of another shape."""
    store = app_store
    session_id, directory = _session(store, app_config, "earlier builds")
    records = directory / "records"
    records.mkdir()
    for number, (name, fields) in enumerate(EARLIER.items()):
        record = {"name": name, **fields, "blob": f"{number:032x}"}
        # Keyed as the repair keys them when it marks a root an earlier build laid out
        # (rows67); a root this build lays out refuses a record without its key.
        (records / name).write_text(json.dumps(by_hand(record)))
    files = {f["name"]: f for f in store.get_session(session_id)["files"]}
    assert sorted(files) == sorted(EARLIER)
    assert files["👨\u200d👩\u200d👧.png"]["size"] == 7
    assert files["a\u00a0b.txt"]["uploaded_at"] is None


def test_an_entry_of_a_legacy_list_left_out_is_said_in_the_log(
    app_store: Storage, app_config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    store = app_store
    session_id, directory = _session(store, app_config, "not migrated yet")
    meta_path = directory / "session.json"
    listed = [
        {"name": "kept.txt", "size": 1, "sha256": None, "uploaded_at": "t"},
        {"name": "tool.txt", "size": "5", "sha256": None, "uploaded_at": "t"},
    ]
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "files": listed}))
    with caplog.at_level(logging.WARNING, logger="app.store"):
        files = store.get_session(session_id)["files"]
    assert [f["name"] for f in files] == ["kept.txt"]
    # Before: left out without a word.
    said = [r.getMessage() for r in caplog.records if "'tool.txt' is left out" in r.getMessage()]
    assert said and session_id in said[0] and "session.json's list" in said[0], caplog.text


def test_a_record_of_another_shape_left_out_is_named_so_in_the_log(
    app_store: Storage, app_config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    store = app_store
    session_id, directory = _session(store, app_config, "a size as text")
    store.put_file(session_id, "a.txt", b"hi")
    path = directory / "records" / "a.txt"
    # As a tool rewrites it (a new file renamed over it: one written in place is seen once
    # the record cache's entry expires, `records_max_age`).
    path.with_name(".new").write_text(json.dumps({**json.loads(path.read_text()), "size": "2"}))
    path.with_name(".new").replace(path)
    with caplog.at_level(logging.WARNING, logger="app.store"):
        assert store.get_session(session_id)["files"] == []
    said = [r.getMessage() for r in caplog.records if "'a.txt' is left out" in r.getMessage()]
    # Before: "cannot be read (damaged or replaced outside the app)", of a record that reads.
    assert said and "its size is '2', not a whole number of bytes" in said[0], caplog.text
    assert "put the record back from a backup" in said[0]
