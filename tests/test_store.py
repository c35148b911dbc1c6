"""The store: sessions and files on a data root, atomic writes, soft delete, the trash."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
from session_files import edited

from app.errors import (
    BadRequestError,
    DataRootChangedError,
    FileExistsInSessionError,
    FileNotFoundInSessionError,
    InvalidNameError,
    LockLostError,
    NotInTrashError,
    SessionNotFoundError,
    SessionNotServedError,
    UnreadableSessionError,
    UploadTooLargeError,
)
from app.store import (
    Store,
    check_file_name,
    check_session_id,
    new_session_id,
)
from app.store.records import content_sha256


def audit_lines(store: Store) -> list[dict[str, object]]:
    path = store.root.audit_path
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def all_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


# --- ids and names ----------------------------------------------------------------------


def test_session_ids_sort_in_creation_order() -> None:
    ids = [new_session_id() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(check_session_id(i) == i for i in ids)


@pytest.mark.parametrize(
    "bad", ["", "x", "../" + "0" * 29, "0" * 31, "0" * 33, "A" * 32, "g" * 32, "0" * 31 + "\0"]
)
def test_a_malformed_session_id_is_refused(bad: str) -> None:
    with pytest.raises(InvalidNameError, match="session ids are 32 lower-case hex digits"):
        check_session_id(bad)


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("", "empty"),
        (".", "starts with '.'"),
        ("..", "starts with '.'"),
        (".hidden", "starts with '.'"),
        ("../x", "path separator"),
        ("/etc/passwd", "path separator"),
        ("a\\b", "path separator"),
        ("a\0b", "U+0000"),
        ("a\nb", "U+000A"),
        ("a\x7fb", "U+007F"),
        ("evil\u202etxt.exe", "U+202E"),
        ("x" * 256, "256 bytes"),
        ("é" * 128, "256 bytes"),
        ("\udcff", "not valid Unicode"),
    ],
)
def test_an_unsafe_file_name_is_refused_with_the_reason(bad: str, problem: str) -> None:
    with pytest.raises(InvalidNameError) as caught:
        check_file_name(bad)
    assert problem in caught.value.message
    assert caught.value.http_status == 400


def test_file_names_are_normalised_to_nfc() -> None:
    assert check_file_name("cafe\u0301.txt") == "caf\u00e9.txt"
    assert check_file_name("x" * 255) == "x" * 255
    assert check_file_name("résumé final (2).pdf") == "résumé final (2).pdf"


# --- sessions ---------------------------------------------------------------------------


def test_a_created_session_is_stored_and_read_back(app_store: Store) -> None:
    session = app_store.create_session("first", {"reviewer": "ana"})
    assert session["title"] == "first"
    assert session["metadata"] == {"reviewer": "ana"}
    assert session["files"] == []
    assert app_store.get_session(session["id"]) == session
    on_disk = json.loads((app_store.sessions_dir / session["id"] / "session.json").read_text())
    stored = {k: v for k, v in session.items() if k != "files"}  # files: records/
    # With the SHA-256 of what was acknowledged (red team 65), never part of an answer.
    assert on_disk == {**stored, "content_sha256": content_sha256(stored)}


def test_creating_a_session_leaves_nothing_in_tmp(app_store: Store) -> None:
    app_store.create_session("x")
    assert list(app_store.root.tmp_dir.iterdir()) == []
    assert [p.name for p in app_store.sessions_dir.iterdir() if p.name.startswith(".")] == []


def test_a_missing_session_is_not_found(app_store: Store) -> None:
    with pytest.raises(SessionNotFoundError, match="no session"):
        app_store.get_session(new_session_id())


@pytest.mark.parametrize(
    ("title", "metadata", "problem"),
    [
        ("t" * 1001, None, "title is 1001 characters"),
        ("", {"k": "v" * 70000}, "metadata is"),
        ("", [1, 2], "metadata must be a JSON object"),
        # The remote backend cannot store it; the local one stored it, so the two differed.
        ("a\x00b", None, r"title contains the character U\+0000 \(NUL\), which no backend"),
    ],
)
def test_oversized_or_mistyped_session_fields_are_refused(
    app_store: Store, title: str, metadata: object, problem: str
) -> None:
    with pytest.raises(BadRequestError, match=problem):
        app_store.create_session(title, metadata)  # type: ignore[arg-type]


def test_a_crashed_create_is_cleared_by_the_next_store(app_store: Store) -> None:
    leftover = app_store.sessions_dir / f".new-{new_session_id()}"
    leftover.mkdir()
    (leftover / "session.json").write_text("{")
    Store(app_store.root)
    assert not leftover.exists()


def test_listing_pages_through_every_session_in_creation_order(app_store: Store) -> None:
    ids = [app_store.create_session(f"s{i}")["id"] for i in range(7)]
    seen: list[str] = []
    cursor = None
    while True:
        page = app_store.list_sessions(limit=3, after=cursor)
        assert page.total == 7
        seen += [s["id"] for s in page.items]
        cursor = page.next
        if cursor is None:
            break
    assert seen == ids


def test_a_listing_cursor_survives_deletion_of_the_cursor_session(app_store: Store) -> None:
    ids = [app_store.create_session()["id"] for _ in range(4)]
    page = app_store.list_sessions(limit=2)
    assert page.next == ids[1]
    app_store.delete_session(ids[1])
    rest = app_store.list_sessions(limit=2, after=page.next)
    assert [s["id"] for s in rest.items] == ids[2:]
    assert rest.next is None


def test_listing_refuses_a_bad_cursor_or_limit(app_store: Store) -> None:
    with pytest.raises(InvalidNameError):
        app_store.list_sessions(after="../../etc")
    with pytest.raises(BadRequestError):
        app_store.list_sessions(limit=0)


# --- files ------------------------------------------------------------------------------


def test_an_upload_streams_to_tmp_and_appears_only_on_commit(app_store: Store) -> None:
    session = app_store.create_session()
    record = app_store.sessions_dir / session["id"] / "records" / "a.bin"
    with app_store.begin_upload(session["id"], "a.bin") as upload:
        upload.write(b"hello ")
        upload.write(b"world")
        assert upload.temp_path.parent == app_store.root.tmp_dir
        assert not record.exists()
        entry = upload.commit()
    assert app_store.file_path(session["id"], "a.bin")[0].read_bytes() == b"hello world"
    assert entry["size"] == 11
    assert entry["sha256"] == hashlib.sha256(b"hello world").hexdigest()
    assert app_store.list_files(session["id"]) == [entry]
    assert list(app_store.root.tmp_dir.iterdir()) == []


def test_an_upload_over_the_limit_is_refused_and_leaves_nothing(app_store: Store) -> None:
    session = app_store.create_session()
    app_store.max_upload_bytes = 10
    upload = app_store.begin_upload(session["id"], "big")
    upload.write(b"x" * 10)
    with pytest.raises(UploadTooLargeError, match="limit of 10 bytes") as caught:
        upload.write(b"y")
    assert caught.value.http_status == 413
    assert list(app_store.root.tmp_dir.iterdir()) == []
    assert app_store.list_files(session["id"]) == []
    assert not (app_store.sessions_dir / session["id"] / "records" / "big").exists()
    assert not list((app_store.sessions_dir / session["id"]).glob("blobs/*"))


def test_an_aborted_upload_leaves_nothing(app_store: Store) -> None:
    session = app_store.create_session()
    with (
        pytest.raises(RuntimeError, match="client went away"),
        app_store.begin_upload(session["id"], "a") as upload,
    ):
        upload.write(b"partial")
        raise RuntimeError("client went away")
    assert list(app_store.root.tmp_dir.iterdir()) == []
    assert app_store.list_files(session["id"]) == []


def test_an_existing_file_is_not_overwritten_without_replace(app_store: Store) -> None:
    session = app_store.create_session()
    app_store.put_file(session["id"], "a", b"one")
    with pytest.raises(FileExistsInSessionError, match="already has a file 'a'"):
        app_store.put_file(session["id"], "a", b"two")
    assert app_store.file_path(session["id"], "a")[0].read_bytes() == b"one"


def test_replacing_a_file_keeps_the_old_bytes_in_the_trash(app_store: Store) -> None:
    session = app_store.create_session()
    app_store.put_file(session["id"], "a", b"one")
    app_store.put_file(session["id"], "a", b"two", replace=True)
    path, entry = app_store.file_path(session["id"], "a")
    assert path.read_bytes() == b"two"
    assert entry["size"] == 3
    [trashed] = app_store.list_trash()
    assert (trashed.kind, trashed.file, trashed.reason) == ("file", "a", "replace")
    assert (trashed.path / "a").read_bytes() == b"one"
    assert audit_lines(app_store)[-1]["operation"] == "replace-file"


def test_a_file_in_a_missing_session_is_refused_before_any_byte(app_store: Store) -> None:
    with pytest.raises(SessionNotFoundError):
        app_store.begin_upload(new_session_id(), "a")
    assert list(app_store.root.tmp_dir.iterdir()) == []


@pytest.mark.parametrize(
    "hostile", ["../x", "../../escape", "/tmp/abs", "a\0b", "x" * 300, "..", "files/../../x"]
)
def test_hostile_file_names_never_write_anything(app_store: Store, hostile: str) -> None:
    session = app_store.create_session()
    before = all_files(app_store.root.path.parent)
    with pytest.raises(InvalidNameError):
        app_store.put_file(session["id"], hostile, b"payload")
    assert all_files(app_store.root.path.parent) == before


def test_a_missing_file_is_not_found(app_store: Store) -> None:
    session = app_store.create_session()
    with pytest.raises(FileNotFoundInSessionError, match="has no file 'nope'"):
        app_store.file_path(session["id"], "nope")


# --- trash, restore, purge, empty-trash -------------------------------------------------


def test_a_deleted_session_goes_to_the_trash_and_is_audited(app_store: Store) -> None:
    sid = app_store.create_session("keep me")["id"]
    app_store.put_file(sid, "f", b"data")
    entry = app_store.delete_session(sid)
    assert app_store.session_ids() == []
    assert (entry.path / "session" / "records" / "f").is_file()
    [blob] = (entry.path / "session" / "blobs").iterdir()
    assert blob.read_bytes() == b"data"
    assert entry.title == "keep me"
    [line] = [x for x in audit_lines(app_store) if x["operation"] == "trash-session"]
    assert line["target"] == sid
    assert line["pid"] == os.getpid()


def test_a_deleted_session_is_restored_with_its_files_and_audited(app_store: Store) -> None:
    sid = app_store.create_session("back")["id"]
    app_store.put_file(sid, "f", b"data")
    app_store.delete_session(sid)
    restored = app_store.restore(sid)
    assert restored["title"] == "back"
    assert app_store.file_path(sid, "f")[0].read_bytes() == b"data"
    assert app_store.list_trash() == []
    assert [x["operation"] for x in audit_lines(app_store)][-2:] == [
        "trash-session",
        "restore-session",
    ]


def test_restoring_what_is_not_in_the_trash_says_where_to_look(app_store: Store) -> None:
    with pytest.raises(SessionNotFoundError, match="sessions list --trash"):
        app_store.restore(new_session_id())


def test_restoring_a_file_that_is_not_in_the_trash_names_the_file_not_a_session(
    app_store: Store,
) -> None:
    sid = app_store.create_session()["id"]
    with pytest.raises(NotInTrashError) as caught:
        app_store.restore(sid, file="notes.txt")
    assert str(caught.value) == (
        f"no file 'notes.txt' of session {sid!r} in the trash; "
        "`app sessions list --trash` shows what can be restored"
    )


def test_the_server_and_the_command_line_reach_storage_through_the_seam_only() -> None:
    import ast

    import app

    backend = {"app.store", "app.dataroot", "app.lock", "app.check"}
    package = Path(app.__file__).parent
    for source in [package / "cli.py", *sorted((package / "server").glob("*.py"))]:
        tree = ast.parse(source.read_text())
        imported = {
            name
            for node in ast.walk(tree)
            for name in (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
        }
        reached = sorted(
            name for name in imported if any(name == b or name.startswith(f"{b}.") for b in backend)
        )
        assert not reached, f"{source.name} imports {reached}; use app.storage"


def test_a_deleted_file_is_restorable(app_store: Store) -> None:
    sid = app_store.create_session()["id"]
    app_store.put_file(sid, "f", b"data")
    app_store.delete_file(sid, "f")
    assert app_store.list_files(sid) == []
    session = app_store.restore(sid, file="f")
    assert [f["name"] for f in session["files"]] == ["f"]
    assert session["files"][0]["sha256"] == hashlib.sha256(b"data").hexdigest()
    assert app_store.file_path(sid, "f")[0].read_bytes() == b"data"
    assert [x["operation"] for x in audit_lines(app_store)][-2:] == ["trash-file", "restore-file"]


def test_a_file_is_not_restored_over_a_newer_one(app_store: Store) -> None:
    sid = app_store.create_session()["id"]
    app_store.put_file(sid, "f", b"old")
    app_store.delete_file(sid, "f")
    app_store.put_file(sid, "f", b"new")
    with pytest.raises(BadRequestError, match="has a file 'f' again"):
        app_store.restore(sid, file="f")
    assert app_store.file_path(sid, "f")[0].read_bytes() == b"new"


def test_purge_moves_every_session_to_the_trash_in_one_audit_line(app_store: Store) -> None:
    ids = [app_store.create_session()["id"] for _ in range(3)]
    entries = app_store.purge()
    assert sorted(e.session_id for e in entries) == ids
    assert app_store.session_ids() == []
    [line] = [x for x in audit_lines(app_store) if x["operation"] == "purge"]
    assert line["details"]["count"] == 3  # type: ignore[index]
    app_store.restore(ids[1])
    assert app_store.session_ids() == [ids[1]]


def test_empty_trash_is_the_only_thing_that_removes_bytes(app_store: Store) -> None:
    sid = app_store.create_session()["id"]
    app_store.put_file(sid, "f", b"data")
    app_store.delete_session(sid)
    assert app_store.empty_trash(older_than=timedelta(days=7)) == []
    assert len(app_store.list_trash()) == 1
    removed = app_store.empty_trash()
    assert [e.session_id for e in removed] == [sid]
    assert list(app_store.root.trash_dir.iterdir()) == []
    lines = [x for x in audit_lines(app_store) if x["operation"] == "empty-trash"]
    assert [x["details"]["count"] for x in lines] == [0, 1]  # type: ignore[index]


def test_destructive_operations_stop_when_the_lock_file_is_gone(app_store: Store) -> None:
    sid = app_store.create_session()["id"]
    assert app_store.root.lock is not None
    app_store.root.lock.path.unlink()
    with pytest.raises(LockLostError, match="was deleted"):
        app_store.delete_session(sid)
    assert app_store.session_ids() == [sid]


def test_the_listing_index_of_a_writer_matches_the_directory(app_store: Store) -> None:
    ids = [app_store.create_session()["id"] for _ in range(6)]
    assert app_store.list_sessions(limit=2).total == 6  # builds the index
    app_store.delete_session(ids[0])
    app_store.create_session()
    app_store.restore(ids[0])
    app_store.delete_session(ids[3])
    assert app_store.session_ids() == app_store.scan_ids()
    app_store.purge()
    assert app_store.session_ids() == app_store.scan_ids() == []


def test_a_symlink_planted_at_a_file_name_does_not_carry_an_upload_elsewhere(
    app_store: Store,
) -> None:
    a, b = app_store.create_session()["id"], app_store.create_session()["id"]
    app_store.put_file(b, "y", b"b's bytes")
    b_record = (app_store.sessions_dir / b / "records" / "y").read_bytes()
    (app_store.sessions_dir / a / "records").mkdir()
    (app_store.sessions_dir / a / "records" / "x").symlink_to(
        app_store.sessions_dir / b / "records" / "y"
    )
    app_store.put_file(a, "x", b"new", replace=True)
    assert (app_store.sessions_dir / b / "records" / "y").read_bytes() == b_record
    assert app_store.file_path(b, "y")[0].read_bytes() == b"b's bytes"
    assert not (app_store.sessions_dir / a / "records" / "x").is_symlink()
    assert app_store.file_path(a, "x")[0].read_bytes() == b"new"


def test_a_symlinked_session_or_files_directory_is_neither_read_nor_written(
    app_store: Store, tmp_path: Path
) -> None:
    a, b = app_store.create_session()["id"], app_store.create_session()["id"]
    app_store.put_file(b, "y", b"b's bytes")
    (app_store.sessions_dir / a / "records").symlink_to(app_store.sessions_dir / b / "records")
    with pytest.raises(DataRootChangedError, match="records is a symbolic link"):
        app_store.put_file(a, "z", b"into b")
    assert sorted(p.name for p in (app_store.sessions_dir / b / "records").iterdir()) == ["y"]
    assert not (app_store.sessions_dir / a / "blobs").exists()  # refused before any write
    # Not read through, and not read as "no files" either (red team 36): damaged, said so.
    with pytest.raises(UnreadableSessionError, match="its records/ is a symbolic link"):
        app_store.get_session(a)
    with pytest.raises(FileNotFoundInSessionError):
        app_store.open_file(a, "y")

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "session.json").write_text(json.dumps({"id": "x", "files": []}))
    fake = new_session_id()
    (app_store.sessions_dir / fake).symlink_to(outside)
    with pytest.raises(SessionNotFoundError):
        app_store.get_session(fake)


def test_two_stores_on_one_open_root_list_each_others_sessions(app_store: Store) -> None:
    other = Store(app_store.root)
    assert app_store.list_sessions().total == 0  # builds the listing index
    made = other.create_session()["id"]
    assert [s["id"] for s in app_store.list_sessions().items] == [made]
    app_store.delete_session(made)
    assert other.list_sessions().total == 0
    app_store.restore(made)
    assert other.session_ids() == [made]


def test_a_new_store_does_not_clear_a_create_in_flight_on_the_same_root(
    app_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.store import sessions as sessions_module

    fsync_dir = sessions_module.fsync_dir

    def open_another_store_midway(path: Path | str) -> None:
        if Path(path).name.startswith(".new-"):
            Store(app_store.root)  # e.g. a second app built on the same root by a test
        fsync_dir(path)

    monkeypatch.setattr(sessions_module, "fsync_dir", open_another_store_midway)
    session = app_store.create_session("in flight")
    assert app_store.get_session(session["id"]) == session


def test_a_writers_file_lists_stay_what_a_fresh_reader_of_the_disk_sees(app_store: Store) -> None:
    # The writer keeps each session's records in memory (reads stay cheap with many files);
    # every change must reach that copy, whichever Store on the root makes it.
    from app.dataroot import open_root

    reader = Store(open_root(app_store.root.config, write=False))
    other = Store(app_store.root)
    sid = app_store.create_session()["id"]

    def same() -> None:
        on_disk = reader.get_session(sid)["files"]
        assert app_store.get_session(sid)["files"] == on_disk
        assert other.get_session(sid)["files"] == on_disk

    same()
    other.put_file(sid, "a", b"one")
    same()
    app_store.put_file(sid, "a", b"two", replace=True)
    other.put_file(sid, "b", b"bee")
    same()
    other.delete_file(sid, "a")
    same()
    app_store.restore(sid, file="a")
    same()
    assert {f["name"]: f["size"] for f in app_store.get_session(sid)["files"]} == {"a": 3, "b": 3}
    other.delete_session(sid)
    app_store.restore(sid)
    same()


def test_a_session_json_changed_on_disk_is_read_afresh_even_with_its_size_and_mtime(
    app_store: Store,
) -> None:
    # The cache of session.json files keeps one as soon as it is read here (in a server,
    # only once it is two seconds old), so every read below after the first could be served
    # from it if its key missed a change.
    app_store.sessions.meta.settled_ns = 0
    session = app_store.create_session("aaaa")
    path = app_store.sessions_dir / session["id"] / "session.json"
    assert app_store.get_session(session["id"])["title"] == "aaaa"
    before = path.stat()

    # Rewritten in place, same size, its mtime put back: only the ctime tells.
    path.write_bytes(edited(path.read_bytes(), b'"aaaa"', b'"bbbb"'))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert app_store.get_session(session["id"])["title"] == "bbbb"
    page = app_store.list_sessions(limit=10)
    assert [s["title"] for s in page.items] == ["bbbb"]

    # Replaced by a rename, as the store writes: another inode.
    replacement = path.with_name("replacement")
    replacement.write_bytes(edited(path.read_bytes(), b'"bbbb"', b'"cccc"'))
    replacement.rename(path)
    assert app_store.get_session(session["id"])["title"] == "cccc"

    # Gone, the directory left: not served (its place holds no session), not a remembered copy.
    path.unlink()
    with pytest.raises(SessionNotServedError):
        app_store.get_session(session["id"])


def test_a_session_directory_replaced_by_a_symlink_is_not_read_through_it(
    app_store: Store, tmp_path: Path
) -> None:
    app_store.sessions.meta.settled_ns = 0
    session = app_store.create_session("kept")
    app_store.get_session(session["id"])  # remembered
    directory = app_store.sessions_dir / session["id"]
    elsewhere = tmp_path / "elsewhere"
    directory.rename(elsewhere)
    directory.symlink_to(elsewhere)
    with pytest.raises(SessionNotFoundError):
        app_store.get_session(session["id"])
    assert app_store.list_sessions(limit=10).items == []


def test_deleting_a_session_syncs_sessions_the_trash_entry_and_the_audit_log(
    app_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = app_store.create_session("going")
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    entry = app_store.delete_session(session["id"])
    assert str(app_store.sessions_dir) in synced  # the rename out of sessions/ (shared)
    assert str(entry.path) in synced
    assert str(app_store.root.path / "audit.jsonl") in synced


def test_a_fifo_planted_as_session_json_is_not_a_session_and_does_not_hang_a_read(
    app_store: Store,
) -> None:
    session = app_store.create_session("planted")
    path = app_store.sessions_dir / session["id"] / "session.json"
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(SessionNotServedError):
        app_store.get_session(session["id"])
    assert app_store.list_sessions(limit=10).items == []


def test_a_data_root_swapped_for_a_link_to_itself_is_refused_before_a_write(
    app_store: Store,
) -> None:
    # The holder check lstats the root's own path: through "<root>/" it would follow the link
    # to the same directory and find nothing changed.
    root = app_store.root.path
    moved = root.with_name(f"{root.name}-moved")
    root.rename(moved)
    root.symlink_to(moved)
    try:
        with pytest.raises(DataRootChangedError, match="the data root was replaced or moved"):
            app_store.create_session("through a link")
        assert list((moved / "sessions").iterdir()) == []
    finally:
        root.unlink()
        moved.rename(root)


def test_a_record_switched_in_as_a_change_looks_is_never_taken_for_a_damaged_one(
    tmp_path: Path,
) -> None:
    """A PUT checks a file's record before its body, outside the session's lock. That check
    read nothing (another client's delete had just moved the record away), then looked at
    the name again and met a third client's new record there: "its record is there but the
    app cannot read it" (500 file_record_unreadable) for a sound record, once in red team
    30's randomized history. What is there is judged by the open that read it."""
    import threading

    from app.errors import FileRecordUnreadableError
    from app.store.records import record_to_change

    path = tmp_path / "a.txt"
    source = tmp_path / ".record"
    blob = "01a246e1e42a7358aa3397434a0cb84f"
    source.write_text(json.dumps({"name": "a.txt", "blob": blob, "size": 1, "sha256": "0" * 64}))
    stop = threading.Event()

    def switch_in_and_delete() -> None:  # as commits and deletes do it: a rename, an unlink
        while not stop.is_set():
            os.link(source, tmp_path / ".next")
            os.rename(tmp_path / ".next", path)
            os.unlink(path)

    churn = threading.Thread(target=switch_in_and_delete)
    churn.start()
    seen: dict[str, int] = {"record": 0, "nothing": 0, "refused": 0}
    try:
        for _ in range(50_000):
            try:
                found = record_to_change(path, "s", "store")
            except FileRecordUnreadableError:
                seen["refused"] += 1
            else:
                seen["record" if found is not None else "nothing"] += 1
    finally:
        stop.set()
        churn.join()
    assert seen["refused"] == 0, seen
    assert seen["record"] and seen["nothing"], seen  # the race was run, both ways
    # A record the app cannot read is still refused, judged by the same open.
    path.write_text("{torn")
    with pytest.raises(FileRecordUnreadableError):
        record_to_change(path, "s", "store")
    path.unlink()
    path.mkdir()
    with pytest.raises(FileRecordUnreadableError):
        record_to_change(path, "s", "store")


def test_an_entry_of_a_file_named_trash_json_is_not_kept_by_another_entrys_manifest(
    app_store: Store,
) -> None:
    """`check` asks whether another trash entry keeps a lost version's bytes. It looked for
    them under the file's own name, where a file named ``trash.json`` has its entry's
    manifest (its bytes are kept as ``.trash.json``): so any other entry of that version
    "kept" them, and two entries whose bytes were both removed from outside the app (a
    backup that copied an entry's manifest alone) were each taken for a crash's leftover
    rather than reported for a human. Found by reading (red teams 49 and 50)."""
    import shutil

    from app.store.records import bytes_in_entry

    sid = app_store.create_session()["id"]
    app_store.put_file(sid, "trash.json", b"acknowledged")
    app_store.delete_file(sid, "trash.json")
    (entry,) = [e for e in app_store.list_trash() if e.file == "trash.json"]
    stamp, rest = entry.name.split("-", 1)
    twin = entry.path.with_name(f"{stamp[:-3]}{int(stamp[-3:-1]) + 1:02d}Z-{rest}")
    twin.mkdir()
    shutil.copy2(entry.path / "trash.json", twin / "trash.json")  # the manifest alone
    (entry.path / bytes_in_entry("trash.json")).unlink()  # removed from outside the app
    findings = app_store.check(repair=True, thorough=False).findings
    for path in (entry.path, twin):
        assert path.is_dir(), findings  # removed as "a delete that stopped before its commit"
        (finding,) = [f for f in findings if str(f.target).endswith(path.name)]
        assert (finding.problem, finding.repaired) == ("file-damaged", False), finding
