"""The store's promises under cases nobody named before (red team 19).

Each test runs on a real data root of its own, in this process; a file size limit
(``RLIMIT_FSIZE``, systemd's ``LimitFSIZE=``) is the kernel's own refusal of a write part
of the way through, as a full disk is.
"""

from __future__ import annotations

import contextlib
import json
import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

import app.dataroot
from app.errors import UnreadableSessionError
from app.store import Store


@contextlib.contextmanager
def file_size_limit(size: int) -> Iterator[None]:
    """This process may write files up to `size` bytes (Python ignores SIGXFSZ: the write
    that crosses it is cut short, and the next one fails with EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def _lines(audit: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in audit.read_bytes().splitlines()]


def test_an_audit_line_cut_short_by_the_file_size_limit_never_swallows_the_next(
    app_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A line longer than the room a change keeps for it under the limit (red team 46
    # refuses a change whose line may not fit: `test_redteam_s46_integrity.py`), as a
    # purge's of many sessions may be: the change is made, and its line does not fit.
    monkeypatch.setattr(app.dataroot, "_AUDIT_LINE_ROOM", -(1 << 20))
    session = app_store.create_session("audited")["id"]
    for name in ("a", "b", "c"):
        app_store.put_file(session, name, name.encode())
    app_store.put_file(session, "a", b"a2", replace=True)  # the first audit line
    audit = Path(app_store.location) / "audit.jsonl"
    # A longer log (as a server's grows), so that the limit cuts only the audit line, not
    # the trash entry's manifest written before it.
    with audit.open("ab") as log:
        log.write(
            json.dumps({"operation": "earlier", "details": {"padding": "x" * 16384}}).encode()
            + b"\n"
        )
    with file_size_limit(audit.stat().st_size + 10):
        # The delete is made and acknowledged; its audit line does not fit.
        app_store.delete_file(session, "b")
    app_store.delete_file(session, "c")
    # Every line is whole: the one that did not fit left nothing the next was glued to.
    operations = [line["operation"] for line in _lines(audit)]
    assert operations == ["replace-file", "earlier", "trash-file"], operations
    # The missing line is the one `check` writes; after that the root checks clean.
    repaired = app_store.check(repair=True)
    assert [f.problem for f in repaired.findings] == ["trash-unaudited"]
    assert app_store.check().findings == []
    assert [line["operation"] for line in _lines(audit)][-2:] == ["trash-file", "check-repair"]


def test_a_fragment_left_at_the_end_of_the_audit_log_is_not_glued_to_the_next_line(
    app_store: Store,
) -> None:
    # What a power loss in the middle of an append can leave (the app syncs whole lines).
    session = app_store.create_session("audited")["id"]
    app_store.put_file(session, "a", b"a")
    audit = Path(app_store.location) / "audit.jsonl"
    audit.write_bytes(b'{"argv": [')
    app_store.delete_file(session, "a")
    assert json.loads(audit.read_bytes().splitlines()[-1])["operation"] == "trash-file"


def test_audit_lines_of_another_shape_do_not_stop_the_check(app_store: Store) -> None:
    # JSON, but not the app's shape: a hand-written note, a log shipper's marker, a line
    # edited by hand. `check` runs at every server start-up, so it must read past them.
    session = app_store.create_session("audited")["id"]
    app_store.put_file(session, "a", b"a")
    audit = Path(app_store.location) / "audit.jsonl"
    with audit.open("ab") as log:
        for odd in (
            [1, 2],
            "note",
            {"details": "x"},
            {"operation": "purge", "details": {"sessions": 5}},
        ):
            log.write(json.dumps(odd).encode() + b"\n")
    app_store.delete_file(session, "a")
    assert app_store.check().findings == []


@pytest.mark.parametrize("content", [b"null", b"[]", b"{torn"], ids=["null", "list", "torn"])
def test_a_session_json_or_trash_manifest_that_is_not_an_object_stops_nothing_else(
    app_store: Store, content: bytes
) -> None:
    # Damage from outside the app (it replaces these files whole) made every page of GET
    # /sessions that held the session a 500, and JSON of another shape made the trash
    # listing, restore, empty-trash and `check` (so every server start-up) crash.
    damaged = app_store.create_session("damaged")["id"]
    kept = app_store.create_session("kept")["id"]
    app_store.put_file(kept, "a", b"a1")
    app_store.put_file(kept, "a", b"a2", replace=True)
    root = Path(app_store.location)
    (root / "sessions" / damaged / "session.json").write_bytes(content)
    (entry,) = app_store.list_trash()
    (entry.path / "trash.json").write_bytes(content)

    assert [s["id"] for s in app_store.list_sessions().items] == [kept]
    assert [s["id"] for s in json.loads(app_store.list_sessions_json())["items"]] == [kept]
    # Reading that one session says it is damaged (a 500 over HTTP), not that it is gone.
    with pytest.raises(UnreadableSessionError, match=f"cannot read session {damaged}: its"):
        app_store.get_session(damaged)
    (listed,) = app_store.list_trash()
    assert (listed.name, listed.file) == (entry.name, None)
    found = {(f.problem, Path(f.target).name) for f in app_store.check().findings}
    assert found == {("trash-no-manifest", entry.name), ("session-unreadable", damaged)}
    assert [e.name for e in app_store.empty_trash()] == [entry.name]
