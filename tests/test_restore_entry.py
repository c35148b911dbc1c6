"""``app sessions restore --entry``: a copy older than the newest, named by its trash entry.

Before it, a restore took the newest copy only: the version replaced before the last one
could not be had back (red team 42 left it open), while `DELETE`'s answer and the trash
listing gave an entry's name that no command took, and a refusal for a newest copy whose
bytes were lost told the operator to move that entry out of the root by hand. The scenario
(`restore_by_entry`) runs on the local store here and on PostgreSQL and object storage in
tests/test_remote_store.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import cli
from app.config import Config
from app.errors import BadRequestError, NotInTrashError, TrashCopyLostError
from app.storage import Storage, TrashEntry, open_storage


def _read(store: Storage, session_id: str, name: str) -> bytes:
    file, _ = store.open_file(session_id, name)
    with file:
        return file.read()


def _versions(store: Storage, session_id: str) -> list[TrashEntry]:
    """The session's file entries in the trash, oldest first."""
    found = [e for e in store.list_trash() if e.session_id == session_id and e.kind == "file"]
    return sorted(found, key=lambda e: (e.deleted_at, e.name))


def restore_by_entry(store: Storage) -> list[str]:
    """Three versions of one file, each brought back by its entry in turn; a wrong entry is
    refused naming what it holds and the command for that. The entries restored, in order."""
    session_id = store.create_session("versions")["id"]
    store.put_file(session_id, "a.txt", b"v1")
    store.put_file(session_id, "a.txt", b"v2", replace=True)
    store.put_file(session_id, "a.txt", b"v3", replace=True)
    store.delete_file(session_id, "a.txt")
    v1, v2, v3 = _versions(store, session_id)
    taken = []
    # The oldest, past the two newer ones, which stay in the trash.
    store.restore(session_id, file="a.txt", entry=v1.name)
    taken.append(v1.name)
    assert _read(store, session_id, "a.txt") == b"v1"
    assert [e.name for e in _versions(store, session_id)] == [v2.name, v3.name]
    with pytest.raises(NotInTrashError) as gone:
        store.restore(session_id, file="a.txt", entry=v1.name)
    assert str(gone.value) == (
        f"no trash entry {v1.name!r} in the trash (emptied, restored already, or never made); "
        "`app sessions list --trash --json` shows each entry's name"
    )
    # A file there again is not overwritten, whichever entry is named.
    with pytest.raises(BadRequestError, match="again"):
        store.restore(session_id, file="a.txt", entry=v2.name)
    store.delete_file(session_id, "a.txt")
    store.restore(session_id, file="a.txt", entry=v2.name)
    taken.append(v2.name)
    assert _read(store, session_id, "a.txt") == b"v2"
    # Another session's entry, and a file's entry named for the session.
    other = store.create_session("other")["id"]
    store.put_file(other, "b c.txt", b"b")
    store.delete_file(other, "b c.txt")
    (theirs,) = _versions(store, other)
    store.delete_file(session_id, "a.txt")
    for file, asked in (
        ("a.txt", f"file 'a.txt' of session {session_id}"),
        (None, f"session {other}"),
    ):
        with pytest.raises(BadRequestError) as refused:
            store.restore(other if file is None else session_id, file=file, entry=theirs.name)
        assert str(refused.value) == (
            f"trash entry {theirs.name} holds file 'b c.txt' of session {other}, not {asked}; "
            f"nothing was changed. `app sessions restore {other} --file 'b c.txt' --entry "
            f"{theirs.name}` restores what it holds; `app sessions list --trash --json` shows "
            "every entry"
        )
    with pytest.raises(NotInTrashError, match=r"no trash entry '\.\./x' in the trash"):
        store.restore(session_id, file="a.txt", entry="../x")
    store.restore(other, file="b c.txt", entry=theirs.name)  # what the refusal said
    taken.append(theirs.name)
    assert _read(store, other, "b c.txt") == b"b"
    # Without --entry, the newest copy, as before: v3's entry is the oldest left, v2's the
    # newest (deleted last).
    store.restore(session_id, file="a.txt")
    assert _read(store, session_id, "a.txt") == b"v2"
    return taken


def test_an_older_copy_comes_back_by_its_entry_and_a_wrong_entry_is_refused(
    app_config: Config,
) -> None:
    with open_storage(app_config, writer=True, kind="tests", wanted="make") as store:
        taken = restore_by_entry(store)
    lines = (app_config.data_root / "audit.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    restored = [r["details"]["trash"] for r in records if r["operation"] == "restore-file"]
    assert restored[: len(taken)] == taken


def test_a_newest_copy_lost_names_the_entry_before_it_and_that_command_restores_it(
    app_config: Config,
) -> None:
    # Before: "to restore the older copy instead, move the entry out of the data root's
    # .trash/ (with no server on it)", by hand. Now the refusal gives the command.
    with open_storage(app_config, writer=True, kind="tests", wanted="make") as store:
        session_id = store.create_session("lost")["id"]
        store.put_file(session_id, "a.txt", b"v1")
        store.put_file(session_id, "a.txt", b"v2", replace=True)
        store.delete_file(session_id, "a.txt")
        older, newest = _versions(store, session_id)
    (Path(newest.path) / "a.txt").unlink()
    runner = CliRunner()
    refused = runner.invoke(cli, ["sessions", "restore", session_id, "--file", "a.txt"])
    command = f"app sessions restore {session_id} --file a.txt --entry {older.name}"
    assert refused.exit_code == 65, refused.output
    said = " ".join(refused.stderr.split())
    assert f"its newest copy in the trash, entry {newest.name}, has lost its bytes" in said
    assert f"or, to restore the copy before it instead, run `{command}`" in said
    done = runner.invoke(cli, command.split()[1:])
    assert done.exit_code == 0, done.output
    assert done.stdout == (
        f"restored file 'a.txt' of session {session_id} (lost) from trash entry {older.name}\n"
    )
    # Exit codes: an entry of another file is bad input (65), one that is gone not found (66).
    for entry, code in ((older.name, 66), ("20990101T000000000000Z-" + "0" * 32, 66)):
        gone = runner.invoke(cli, [*command.split()[1:-1], entry])
        assert gone.exit_code == code, gone.output
        assert f"no trash entry {entry!r} in the trash" in gone.stderr
    # The lost entry itself, named, is refused as the copy asked for; nothing else is left.
    named = runner.invoke(cli, [*command.split()[1:-1], newest.name])
    assert named.exit_code == 65, named.output
    assert "the copy asked for in the trash, entry" in named.stderr
    with open_storage(app_config, writer=True, kind="tests", wanted="look") as store:
        assert _read(store, session_id, "a.txt") == b"v1"
        store.delete_file(session_id, "a.txt")
        with pytest.raises(TrashCopyLostError) as alone:
            store.restore(session_id, file="a.txt", entry=newest.name)
    assert "nothing was changed. Put the bytes back into that entry" in str(alone.value)
