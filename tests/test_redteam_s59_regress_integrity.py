"""Red team 59 on the last merges, integrity (branch rt-regress5): see
docs/explanation/attacks/layer-7-atomic-writes.md.

What broke: the API answered a session as its files' records and its ``session.json`` held
it, of whatever type a tool outside the app had written, not as its own OpenAPI schema says
(`app.server.models`). A record's ``uploaded_at`` in epoch seconds (the "tool's epoch
seconds" red team 58 kept the session readable for), a number for its ``sha256``, a size
given as text, ``true``, a fraction or a negative number, and a ``session.json`` whose title
was null or left out, or that left out its metadata or its id: each went out as it was, in
``GET /sessions/ID``, its file listing and every page of ``GET /sessions`` that held it, and
a client generated from the OpenAPI document failed to read the whole page. What changed:
a record's time and hash of another type are unknown, ``null`` as the schema allows
(`app.store.records.public`); a record whose size is not a whole number of bytes is no record
of the app's (`_parsed_record`: the file is left out of its listing, a read or a change of it
refused naming it, `app data check` reports it for a human); a ``session.json`` answers with
its directory's id, an empty title and metadata where they are null or left out, and one
without a time the app always writes is unreadable (`session_object`), as one with a time of
another type already was.

And a ``session.json`` whose ``updated_at`` was written by hand in the year 9999 or as a week
date (greater as text than any time the app writes) was the session's ``updated_at`` for good,
through every upload and restore: red team 58 read the records' times as times, not
session.json's own. It is read as a time now, and damage counts for nothing.

And red team 59's dating of a session's restore (`records/` made and dated in its trash entry,
before the move) changed the entry of a restore whose move was then refused, which said
"nothing was changed": on overlayfs (a session of the image's lower layer, EXDEV) the entry was
copied up into the container's layer, and red team 38's
`test_a_session_from_an_overlays_lower_layer_is_refused_naming_the_cause` failed on main. The
restore now dates the session once it is back (`Sessions._date_restored`), moves it back into
its entry where its ``records/`` cannot be made (a full disk: refused, nothing changed), and
`app data check --repair`, which finishes a restore killed between its move and its line,
dates the session it finds back (`Sessions.date_recovered`): killed between the move and the
dating, it stayed dated before its delete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from faults import app_with_fault, killed_app, needs_strace
from psycopg.conninfo import conninfo_to_dict
from session_files import by_hand, session_by_hand

from app.config import Config
from app.errors import FileRecordUnreadableError, UnreadableSessionError
from app.remote import pg
from app.server.models import FileEntry, Session
from app.storage import Storage, open_storage


def _edited(path: Path, key: str, value: Any) -> None:
    """``path``'s JSON with ``key`` set to ``value`` (left out for ``...``), put in place by a
    rename, as a tool that writes whole files does."""
    content = json.loads(path.read_text())
    content.pop("content_sha256", None)  # such a tool writes no SHA-256 (red team 65)
    content.pop(key) if value is ... else content.update({key: value})
    # Its key put right for the edit: a root this build laid out refuses a file without
    # one (rows67), as it would any tool's edit that did not.
    keyed = session_by_hand(content) if path.name == "session.json" else by_hand(content)
    edit = path.with_name(".edit")
    edit.write_text(json.dumps(keyed))
    os.replace(edit, path)


def _as_the_schema_says(store: Storage, session_id: str) -> Session:
    """The session as the server sends it (`get_session_json`: the bytes of `GET
    /sessions/ID`), its files (`GET /sessions/ID/files`) and every session of the page that
    holds it (`GET /sessions`), each read as the API's own schema says (strict: no value of
    one type taken for another)."""
    session = Session.model_validate_json(store.get_session_json(session_id), strict=True)
    for entry in store.list_files(session_id):
        FileEntry.model_validate(entry, strict=True)
    page = json.loads(store.list_sessions_json(limit=1000))
    for item in page["items"]:
        Session.model_validate(item, strict=True)
    assert session_id in [item["id"] for item in page["items"]]
    return session


def test_a_record_s_fields_of_another_type_are_answered_as_the_schema_says(
    app_store: Storage, app_config: Config
) -> None:
    store, sessions = app_store, app_config.data_root / "sessions"
    for key, value in (("uploaded_at", 1764979200), ("uploaded_at", [1])):
        session_id = store.create_session("a tool's record")["id"]
        store.put_file(session_id, "a.txt", b"a")
        _edited(sessions / session_id / "records" / "a.txt", key, value)
        # Before: the value went out as it was ("uploaded_at": 1764979200), and the strict
        # read of the session, its files and the page failed.
        (entry,) = _as_the_schema_says(store, session_id).files
        assert getattr(entry, key) is None, (key, value, entry)
        file, _ = store.open_file(session_id, "a.txt")
        with file:
            assert file.read() == b"a"
    # A size, or a hash a download checks the bytes against, of another kind: the record is
    # none of the app's (red team 59 on the HTTP contract, `_of_our_shape`), its bytes kept.
    sizes = [("size", size) for size in ("1", -1, True, 0.5, ...)]
    for key, size in [*sizes, ("sha256", 5)]:
        session_id = store.create_session("a tool's size")["id"]
        store.put_file(session_id, "a.txt", b"a")
        _edited(sessions / session_id / "records" / "a.txt", key, size)
        # Before: listed with that size ("size": "1", true), a download served past its check.
        assert _as_the_schema_says(store, session_id).files == [], size
        with pytest.raises(FileRecordUnreadableError) as refused:
            store.open_file(session_id, "a.txt")
        assert (
            f"cannot send file 'a.txt' of session {session_id}: its record is there but the "
            "app cannot read it (it was damaged or replaced outside the app)"
        ) in str(refused.value), (size, str(refused.value))


def test_a_session_json_without_a_field_the_schema_requires_is_answered_or_refused(
    app_store: Storage, app_config: Config
) -> None:
    store, sessions = app_store, app_config.data_root / "sessions"
    for key, value, shown in (
        ("title", None, ""),
        ("title", ..., ""),
        ("metadata", ..., {}),
        ("id", ..., None),
    ):
        session_id = store.create_session("t")["id"]
        _edited(sessions / session_id / "session.json", key, value)
        # Before: answered with "title": null, or with no title, metadata or id at all.
        session = _as_the_schema_says(store, session_id)
        assert getattr(session, key) == (session_id if shown is None else shown), session
    session_id = store.create_session("no time")["id"]
    _edited(sessions / session_id / "session.json", "created_at", ...)
    with pytest.raises(UnreadableSessionError) as refused:
        store.get_session(session_id)
    assert refused.value.code == "session_unreadable"
    assert (
        f"cannot read session {session_id}: its session.json has no 'created_at', which the "
        "app always writes (it was changed outside the app). `app data check` reports it as "
        "session-unreadable."
    ) in str(refused.value), str(refused.value)
    assert session_id not in [s["id"] for s in store.iter_all()]
    found = [(f.problem, f.target) for f in store.check().findings]
    assert found == [("session-unreadable", f"sessions/{session_id}")], found


@needs_strace
def test_a_restore_whose_records_cannot_be_made_after_its_move_changes_nothing(
    app_config: Config,
) -> None:
    root = app_config.data_root
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        never = store.create_session("never a file")["id"]
        entry = store.delete_session(never).path
    before = sorted(str(p.relative_to(entry)) for p in entry.rglob("*"))
    dest = root / "sessions" / never
    refused = app_with_fault(
        root, "mkdir:error=ENOSPC", dest / "records", command=("sessions", "restore", never)
    )
    # Dated after its move now (red team 38's overlay test: before it, in the entry), and
    # moved back into its entry where its records/ cannot be made.
    assert refused.returncode == 74, (refused.stdout, refused.stderr)
    assert (
        "error: cannot run `app sessions restore` "
        f"({dest / 'records'}): the data root's filesystem is full; nothing was changed."
    ) in refused.stderr, refused.stderr
    assert not dest.exists()
    assert sorted(str(p.relative_to(entry)) for p in entry.rglob("*")) == before
    with open_storage(app_config, writer=True, kind="tests", wanted="restore it") as store:
        assert store.check().findings == []
        deleted_at = store.list_trash()[0].deleted_at.isoformat(timespec="microseconds")
        back = store.restore(never)
        assert back["updated_at"] > deleted_at, back
        assert store.get_session(never)["updated_at"] == back["updated_at"]
        again = store.delete_session(never).deleted_at.isoformat(timespec="microseconds")
    # Killed between its move and its dating: the repair that finishes it dates it.
    killed_app(
        root,
        "utimensat:signal=KILL:when=1",
        dest / "records",
        command=("sessions", "restore", never),
    )
    with open_storage(app_config, writer=True, kind="tests", wanted="repair it") as store:
        (found,) = store.check(repair=True).findings
        assert found.problem == "trash-manifest-only", found
        # Before: the session back, dated before its delete, for good.
        assert store.get_session(never)["updated_at"] > again
        assert store.check().findings == []


def test_a_database_url_is_shown_as_a_url_libpq_reads_back_to_the_same_servers() -> None:
    for url, shown in (
        ("postgresql://app@[::1]:5433/db", "postgresql://app@[::1]:5433/db"),
        (
            "host=::1,127.0.0.1 port=5432,5433 user=app dbname=db",
            "postgresql://app@[::1]:5432,127.0.0.1:5433/db",
        ),
        ("host=/run/pg port=5433 user=app dbname=db", "postgresql://app@%2Frun%2Fpg:5433/db"),
    ):
        # Before: "postgresql://app@::1:5433/db" (where does the address end?) and
        # "postgresql://app@/run/pg:5433/db", a database named "run/pg:5433/db" to libpq.
        assert pg.mask_url(url) == shown, url
        read_back = conninfo_to_dict(shown)  # libpq's own parser, through psycopg
        assert read_back["host"] == conninfo_to_dict(url)["host"], (url, read_back)
        assert pg.database_addresses(shown) == pg.database_addresses(url), url


def test_a_session_json_time_of_another_kind_leaves_its_updated_at_true(
    app_store: Storage, app_config: Config
) -> None:
    store, sessions = app_store, app_config.data_root / "sessions"
    for written in ("9999-12-31T23:59:59.999999+00:00", "2030-W01-1T00:00:00.000000+00:00"):
        session_id = store.create_session("a time by hand")["id"]
        _edited(sessions / session_id / "session.json", "updated_at", written)
        first = store.put_file(session_id, "a.txt", b"a")
        # Before: the text written there, for good: greater than every time the app writes.
        now = store.get_session(session_id)["updated_at"]
        # At least the upload's time (the rename after it moves records/'s time on), which
        # is after the week date's (2029-12-31: session.json's time is its floor).
        assert first["uploaded_at"] <= now < "9999" and now != written, (written, now)
        deleted = store.delete_session(session_id).deleted_at.isoformat(timespec="microseconds")
        back = store.restore(session_id)
        assert back["updated_at"] > deleted, (written, back)
        assert store.get_session(session_id)["updated_at"] == back["updated_at"]
