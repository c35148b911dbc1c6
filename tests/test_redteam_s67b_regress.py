"""Red team 67 on regress, integrity's marks (branch rt-regress67b): see
docs/explanation/attacks/layer-7-atomic-writes.md, "Red team 67 on regress, integrity's marks".

What the repair that marks a root (`app data check --repair`, run by every server start-up)
left keyless, and what then read as damage: an acknowledged version in the trash refused.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from engines import PostgresEngine, S3Engine, new_blob_url
from test_remote_store import PROFILE, _maintenance, _replica

from app.dataroot import STAMP_FILE
from app.remote import pg
from app.store.records import CONTENT_KEY

HASHED_KEY = "content_sha256_since"  # spelt out: these tests run against the build before


def invoke(*args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from app.cli import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout + result.stderr


def _earlier_build(root: Path) -> None:
    """The root's stamp as a build from before the mark left it."""
    stamp = json.loads((root / STAMP_FILE).read_bytes())
    del stamp[HASHED_KEY]
    (root / STAMP_FILE).write_text(json.dumps(stamp, indent=2))


def test_a_file_trashed_before_keys_is_restorable_after_the_repair_marks_the_root(
    app_config: Any,
) -> None:
    """A file uploaded before records had keys and deleted before the mark: its trash.json's
    ``entry`` (the version's record) has none. The repair keyed the manifest but not its
    entry, then marked the root, and the restore of that acknowledged version was refused as
    damage (`entry_changed`), and `app data check` named it for a human."""
    from app.dataroot import open_root
    from app.store import Store

    with open_root(app_config, kind="tests") as opened:
        store = Store(opened)
        sid = store.create_session("kept", {})["id"]
        made = store.put_file(sid, "a.txt", io.BytesIO(b"bytes"))
        entry = store.delete_file(sid, "a.txt")
    root = app_config.data_root
    _earlier_build(root)
    manifest = entry.path / "trash.json"
    found = json.loads(manifest.read_bytes())
    del found[CONTENT_KEY]
    del found["entry"][CONTENT_KEY]  # a record from before keys: `trashed_entry` kept none
    manifest.write_text(json.dumps(found, indent=2))

    code, out = invoke("data", "check", "--repair")
    assert code == 0, out
    assert HASHED_KEY in json.loads((root / STAMP_FILE).read_bytes())
    assert CONTENT_KEY in json.loads(manifest.read_bytes())["entry"]
    code, out = invoke("data", "check")
    assert code == 0, out  # before: 65, the entry named as damaged
    with open_root(app_config, kind="tests") as opened:
        store = Store(opened)
        store.restore(sid, file="a.txt")  # before: refused (trash_copy_lost)
        assert store.list_files(sid) == [made]


def test_a_marked_root_is_refused_by_a_build_that_writes_files_without_keys(
    app_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found with the build before rows67 (7c21408b^1) run on a root this one marked: it
    opened the root (its stamp said layout 1), and a file it deleted left a trash.json
    without a key, which the mark makes damage: listed by its name alone, its restore refused
    (`trash_manifest_damaged`), `app data check` exit 65. A marked root is layout 2 now,
    which that build refuses before it writes; a root not marked stays layout 1."""
    from app import dataroot
    from app.dataroot import open_root
    from app.errors import DataRootTooNewError
    from app.store import Store

    with open_root(app_config, kind="tests") as opened:
        Store(opened).create_session("kept", {})
    root = app_config.data_root
    stamp = json.loads((root / STAMP_FILE).read_bytes())
    assert (stamp["layout_version"], HASHED_KEY in stamp) == (2, True)  # before: 1
    # A root an earlier build laid out: layout 1, open to it, until the repair marks it.
    (root / STAMP_FILE).write_text(json.dumps({**stamp, "layout_version": 1, HASHED_KEY: None}))
    _earlier_build(root)
    code, out = invoke("data", "check", "--repair")
    assert code == 0, out
    assert json.loads((root / STAMP_FILE).read_bytes())["layout_version"] == 2  # before: 1
    # The earlier build, which reads layout 1 and earlier (its check is this one's, with
    # its own number): refused before anything is written.
    monkeypatch.setattr(dataroot, "LAYOUT_VERSION", 1)
    with pytest.raises(DataRootTooNewError) as refused:
        open_root(app_config, kind="tests")
    said = str(refused.value)
    assert "(layout 2, in " in said and "which reads layout 1 and earlier only" in said, said
    assert "Run the build that laid it out (`app --version` there)" in said, said


#: What each refusal of an edit now says resolves it (`app.store.records.REHASH`, spelt out).
REHASH = (
    "remove its content_sha256 line, and, with no server on the root, the "
    "content_sha256_since line of the root's stamp (.app-profile.json), then run `app data "
    "check --repair`, which hashes it again"
)
ENTRY_REHASH = REHASH.replace("its content_sha256 line", "the content_sha256 line of its entry")


def _rewritten(path: Path, change: Any) -> None:
    found = json.loads(path.read_bytes())
    change(found)
    path.write_text(json.dumps(found, indent=2))


def test_each_remedy_of_an_edit_made_on_purpose_resolves_it_in_a_marked_root(
    app_config: Any,
) -> None:
    """A session.json or a trash entry's version changed by hand was refused with "after an
    edit made on purpose, remove that line" (its content_sha256): done, in a marked root, it
    was refused again, as a file without its key, and the version's refusal still said its
    fields were "not what its upload acknowledged". Each now names the whole remedy, which
    the repair carries out (the entry's key too, since this round)."""
    from app.dataroot import open_root
    from app.errors import TrashCopyLostError, UnreadableSessionError
    from app.store import Store

    with open_root(app_config, kind="tests") as opened:
        store = Store(opened)
        sid = store.create_session("kept", {})["id"]
        store.put_file(sid, "a.txt", io.BytesIO(b"bytes"))
        entry = store.delete_file(sid, "a.txt")
    root = app_config.data_root
    later = "2036-01-01T00:00:00.000000+00:00"
    _rewritten(entry.path / "trash.json", lambda m: m["entry"].update(uploaded_at=later))
    with open_root(app_config, kind="tests") as opened, pytest.raises(TrashCopyLostError) as lost:
        Store(opened).restore(sid, file="a.txt")
    # Before: "(after an edit made on purpose, remove the content_sha256 line of its entry)".
    assert f"from a backup (after an edit made on purpose, {ENTRY_REHASH})" in str(lost.value)
    acknowledged = (root / "sessions" / sid / "session.json").read_bytes()
    _rewritten(root / "sessions" / sid / "session.json", lambda s: s.update(title="edited"))
    with (
        open_root(app_config, kind="tests") as opened,
        pytest.raises(UnreadableSessionError) as refused,
    ):
        Store(opened).get_session(sid)
    # Before: "after an edit made on purpose, remove that line".
    assert f"after an edit made on purpose, {REHASH})" in str(refused.value)
    code, out = invoke("data", "check")
    assert code == 65, out
    assert f"restore session.json from a backup; after an edit made on purpose, {REHASH})" in out
    assert f"trash.json back from a backup; after an edit made on purpose, {ENTRY_REHASH})" in out
    # The lines alone removed (what the refusals said): refused still, now for what it is.
    _rewritten(root / "sessions" / sid / "session.json", lambda s: s.pop(CONTENT_KEY))
    with open_root(app_config, kind="tests") as opened, pytest.raises(UnreadableSessionError):
        Store(opened).get_session(sid)
    (root / "sessions" / sid / "session.json").write_bytes(acknowledged)
    _rewritten(entry.path / "trash.json", lambda m: m["entry"].pop(CONTENT_KEY))
    with open_root(app_config, kind="tests") as opened, pytest.raises(TrashCopyLostError) as lost:
        Store(opened).restore(sid, file="a.txt")
    assert (  # before: "... not what its upload acknowledged ..."
        "has a trash.json whose entry has no content_sha256, which every one of this data root "
        "carries since its stamp's content_sha256_since"
    ) in str(lost.value)
    _rewritten(
        root / "sessions" / sid / "session.json",
        lambda s: s.update(title="edited") or s.pop(CONTENT_KEY),
    )
    # The whole remedy: served as edited, restored as edited.
    _earlier_build(root)
    code, out = invoke("data", "check", "--repair")
    assert code == 0, out
    code, out = invoke("data", "check")
    assert code == 0, out
    with open_root(app_config, kind="tests") as opened:
        store = Store(opened)
        assert store.get_session(sid)["title"] == "edited"
        store.restore(sid, file="a.txt")
        assert [f["uploaded_at"] for f in store.list_files(sid)] == [later]


def test_a_marked_database_is_refused_by_a_release_that_writes_rows_without_keys(
    postgres_engine: PostgresEngine, s3_engine: S3Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found with the build before rows67 (7c21408b^1) as a replica beside this one's, on a
    database this one made (marked from its stamp): it opened it (schema version 1, its own),
    and its upload's 201 left a file row without a key and the session's updated_at without
    updated_sha256, which the mark makes damage: the whole session refused
    (`session_unreadable`), the file too, and the session it created. A marked database is
    schema version 2 now, which that release refuses at its start; one not marked stays 1."""
    from app.errors import UnreadableSessionError
    from app.remote.errors import SchemaTooNewError

    with postgres_engine.opened_database(PROFILE) as (name, url):
        blob_url = new_blob_url(s3_engine)
        with _replica(s3_engine, (url, blob_url)) as store:
            edited = store.create_session("acknowledged", {})["id"]
        with postgres_engine.connect(name) as admin:
            stamp = "SELECT schema_version, content_sha256_since IS NOT NULL FROM app_stamp"
            assert admin.execute(stamp).fetchone() == (2, True)  # before: (1, True)
            admin.execute("UPDATE app_sessions SET title = 'edited'")
        # What its refusal says resolves an edit made on purpose, the whole of it (before:
        # "set that column to NULL", then refused as a row without its key).
        remedy = (
            "set that column and app_stamp.content_sha256_since to NULL with every replica "
            "stopped, then run `app data check --repair`, which hashes the row again"
        )
        with (
            _replica(s3_engine, (url, blob_url)) as store,
            pytest.raises(UnreadableSessionError, match=re.escape(remedy)),
        ):
            store.get_session(edited)
        with postgres_engine.connect(name) as admin:
            # Done; and the stamp as an earlier build made it: schema version 1, open to it.
            admin.execute("UPDATE app_sessions SET content_sha256 = NULL")
            admin.execute("UPDATE app_stamp SET schema_version = 1, content_sha256_since = NULL")
        with _maintenance(s3_engine, (url, blob_url)) as maintenance:
            found = maintenance.check(repair=True).findings
            assert [(f.problem, f.repaired) for f in found] == [("content-unhashed", True)]
        with postgres_engine.connect(name) as admin:
            assert admin.execute(stamp).fetchone() == (2, True)  # before: (1, True)
        with _replica(s3_engine, (url, blob_url)) as store:
            assert store.get_session(edited)["title"] == "edited"
        # The earlier release, whose start's check is this one's with its own number.
        monkeypatch.setattr(pg, "SCHEMA_VERSION", 1)
        with pytest.raises(SchemaTooNewError) as refused:
            pg.open_database(url, PROFILE)
        assert (
            "has schema version 2, this release of the app knows up to 1; nothing was changed. "
            "Upgrade the app (every replica) to the release that wrote it"
        ) in str(refused.value)


def test_a_deletion_time_changed_in_the_database_neither_lists_nor_empties_an_entry(
    postgres_engine: PostgresEngine, s3_engine: S3Engine
) -> None:
    """Found on the suite's PostgreSQL: a trashed session's and file's ``deleted_at`` moved
    ten years back in the database (no key covers it) were listed so, `app data check` said
    clean, and `empty-trash --older-than 30d` deleted both for good, a second after their
    delete. The trash is now listed and emptied by the time its entry's name gives, written
    in the same statement and answered by the delete, as a data root's trash always was."""
    from datetime import timedelta

    with (
        postgres_engine.opened_database(PROFILE) as (name, url),
        _replica(s3_engine, (url, new_blob_url(s3_engine))) as store,
    ):
        sid = store.create_session("kept", {})["id"]
        store.put_file(sid, "a.txt", b"bytes")
        store.delete_file(sid, "a.txt")
        gone = store.create_session("gone", {})["id"]
        store.delete_session(gone)
        listed = [(e.name, e.deleted_at) for e in store.list_trash()]
        with postgres_engine.connect(name) as admin:
            for table in ("app_sessions", "app_files"):
                admin.execute(
                    f"UPDATE {table} SET deleted_at = deleted_at - interval '10 years'"
                    " WHERE deleted_at IS NOT NULL"
                )
        assert [(e.name, e.deleted_at) for e in store.list_trash()] == listed  # before: 2016
        assert store.empty_trash(timedelta(days=30)) == []  # before: both deleted for good
        assert len(store.list_trash()) == 2
        assert sorted(e.name for e in store.empty_trash(None)) == sorted(n for n, _ in listed)
        # A file's newest version, dated back so in the database: restored all the same.
        store.put_file(sid, "b.txt", b"older")
        store.delete_file(sid, "b.txt")
        store.put_file(sid, "b.txt", b"newest")
        newest = store.delete_file(sid, "b.txt")
        _sql_at(
            url,
            "UPDATE app_files SET deleted_at = deleted_at - interval '10 years'"
            " WHERE trash_name = %s",
            newest.name,
        )
        store.restore(sid, file="b.txt")
        file, _ = store.open_file(sid, "b.txt")
        with file:
            assert file.read() == b"newest"  # before: b"older"


def _sql_at(url: str, statement: str, *args: object) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(statement, args)  # type: ignore[arg-type]
