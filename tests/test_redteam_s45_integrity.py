"""Red team 45 on integrity: restores by entry (``app sessions restore --entry``).

What broke: a file's newest trash entry whose ``trash.json`` was torn or removed from
outside the app (its bytes still in it, under the file's name) was passed over by
``app sessions restore --file``, which brought back the version before it, answered as the
one deleted; and ``--entry`` of such an entry was refused as holding "file '?'", with a
command, ``--file '?'``, that could never restore it. Both are now `TrashManifestDamagedError`,
naming the entry, what it holds, and what to do (the older entry's command included).
A newest copy of the acknowledged size with one byte changed was restored, answered with the
acknowledged SHA-256 it no longer had, and its entry removed; it is now refused as
`TrashCopyLostError` (the size mismatch's refusal said "no other copy of it is in the
trash" where there was one: it now names it).

A kill -9 before every change of a restore that takes an older entry of a file (three
versions in the trash, the oldest asked for): each crash point repaired as a start-up
repairs it, and every byte kept, the other entries untouched.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from session_files import manifest_by_hand
from test_redteam_s18_crash_points import (
    _ZYGOTE,
    Zygote,
    check_after_crashes,
    contents,
    open_store,
    sha,
)

from app.config import Config
from app.errors import (
    SessionNotFoundError,
    TrashCopyLostError,
    TrashEntryLinkedError,
    TrashManifestDamagedError,
)
from app.store import Store

_ENTRY_OP = '    elif op == "repair":'
_ZYGOTE_ENTRY = _ZYGOTE.replace(
    _ENTRY_OP,
    '    elif op == "restore-entry":\n'
    "        store.restore(args[0], file=args[1], entry=args[2])\n" + _ENTRY_OP,
    1,
)


class EntryZygote(Zygote):
    """`Zygote`, with ``restore-entry`` (a file's restore from the entry it names)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _ZYGOTE_ENTRY],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )


def _three_versions(store: Store) -> tuple[str, list[str]]:
    """A session whose ``a.txt`` was replaced twice and deleted: its three entries, oldest
    first."""
    sid = store.create_session("versions")["id"]
    store.put_file(sid, "a.txt", b"version 1")
    store.put_file(sid, "a.txt", b"version 2", replace=True)
    store.put_file(sid, "a.txt", b"version 3", replace=True)
    store.delete_file(sid, "a.txt")
    names = sorted(e.name for e in store.trash.entries() if e.session_id == sid)
    return sid, names


def test_a_kill_at_each_change_of_a_restore_by_entry_keeps_every_version(
    app_store: Store, app_config: Config, tmp_path: Path
) -> None:
    sid, names = _three_versions(app_store)
    assert len(names) == 3
    app_store.close()
    root = app_config.data_root
    saved = tmp_path / "saved"
    shutil.copytree(root, saved, symlinks=True)
    before = contents(saved)
    zygote = EntryZygote()
    try:
        crash_at = 0
        while True:
            shutil.rmtree(root)
            shutil.copytree(saved, root, symlinks=True)
            completed = zygote.run("restore-entry", crash_at, [sid, "a.txt", names[0]], root)
            after = check_after_crashes(app_config, before, f"at {crash_at}")
            with open_store(app_config) as store:
                left = sorted(e.name for e in store.trash.entries() if e.session_id == sid)
                session = store.get_session(sid)
                files = {f["name"]: f["sha256"] for f in session["files"]}
                if "a.txt" in files:
                    assert files["a.txt"] == sha("version 1"), crash_at
                    assert left == names[1:], crash_at
                else:
                    assert left == names, crash_at
            assert {sha("version 2"), sha("version 3")} <= after
            if completed:
                break
            crash_at += 1
    finally:
        zygote.close()
    assert crash_at > 3


@pytest.mark.parametrize("damage", ["torn", "removed", "a list"])
def test_a_newest_entry_whose_manifest_is_damaged_is_refused_never_passed_over(
    app_store: Store, damage: str
) -> None:
    sid, names = _three_versions(app_store)
    newest = app_store.trash.path / names[-1]
    manifest = newest / "trash.json"
    if damage == "removed":
        manifest.unlink()
    else:
        manifest.write_text("{torn" if damage == "torn" else "[]")
    with pytest.raises(TrashManifestDamagedError) as refused:
        app_store.restore(sid, file="a.txt")
    message = str(refused.value)
    assert f"trash entry {names[-1]}, which may hold its newest copy" in message
    assert "it holds 'a.txt'" in message and "trash-no-manifest" in message
    assert f"Put {newest}/trash.json back from a backup" in message
    older = f"app sessions restore {sid} --file a.txt --entry {names[1]}`"
    assert message.endswith(older), message
    assert refused.value.exit_code == 65
    # Nothing changed, and asked for by name it is refused so too, never "--file '?'".
    assert [f["name"] for f in app_store.get_session(sid)["files"]] == []
    for asked in ("a.txt", None):
        with pytest.raises(TrashManifestDamagedError) as named:
            app_store.restore(sid, file=asked, entry=names[-1])
        assert "the entry asked for" in str(named.value) and "'?'" not in str(named.value)
    # The command the refusal names brings back the copy before it, on purpose.
    session = app_store.restore(sid, file="a.txt", entry=names[1])
    assert [f["sha256"] for f in session["files"]] == [sha("version 2")]
    # Its audit line names the entry it took.
    last = json.loads(app_store.root.audit_path.read_text().splitlines()[-1])
    assert (last["operation"], last["details"]["trash"]) == ("restore-file", names[1]), last


def test_a_newest_entry_whose_manifest_names_another_file_is_refused(app_store: Store) -> None:
    sid, names = _three_versions(app_store)
    manifest = app_store.trash.path / names[-1] / "trash.json"
    edited = json.loads(manifest.read_text().replace('"file": "a.txt"', '"file": "b.txt"'))
    manifest.write_text(json.dumps(manifest_by_hand(edited)))  # its key kept right (rows67)
    for entry in (None, names[-1]):
        with pytest.raises(TrashManifestDamagedError) as refused:
            app_store.restore(sid, file="a.txt", entry=entry)
        assert "names file 'b.txt', whose bytes it does not hold" in str(refused.value)
    assert app_store.get_session(sid)["files"] == []
    found = [f.problem for f in app_store.check(repair=False).findings]
    assert found == ["file-damaged"]


def test_left_out_over_pages_with_sessions_made_damaged_and_deleted_between_them(
    app_store: Store,
) -> None:
    """Held: each session there throughout is named once, in ``items`` or ``left_out``."""

    def page(after: str | None) -> dict[str, Any]:
        return cast(dict[str, Any], json.loads(app_store.list_sessions_json(limit=2, after=after)))

    ids = [app_store.create_session(f"s{i}")["id"] for i in range(6)]
    (app_store.sessions_dir / ids[3] / "session.json").unlink()
    first = page(None)
    assert [s["id"] for s in first["items"]] == ids[:2] and first["total"] == 6
    app_store.delete_session(ids[0])  # listed already
    (app_store.sessions_dir / ids[1] / "session.json").write_text("[]")  # before the cursor
    new = [app_store.create_session("new")["id"] for _ in range(2)]
    second = page(first["next"])
    assert [s["id"] for s in second["items"]] == [ids[2]]
    assert [s["id"] for s in second["left_out"]] == [ids[3]] and second["total"] == 7
    shutil.rmtree(app_store.sessions_dir / ids[3])  # named already
    seen, after = [], second["next"]
    while after:
        more = page(after)
        assert not more["left_out"] and more["total"] == 7
        seen += [s["id"] for s in more["items"]]
        after = more.get("next")
    assert seen == [*ids[4:], *new]


@pytest.mark.parametrize("asked", [False, True])
def test_a_trash_copy_of_the_acknowledged_size_with_a_changed_byte_is_refused(
    app_store: Store, asked: bool
) -> None:
    sid, names = _three_versions(app_store)
    copy = app_store.trash.path / names[-1] / "a.txt"
    copy.write_bytes(b"versioN 3")
    with pytest.raises(TrashCopyLostError) as refused:
        app_store.restore(sid, file="a.txt", entry=names[-1] if asked else None)
    message = str(refused.value)
    assert f"holds bytes whose SHA-256 is {sha('versioN 3')}, where {sha('version 3')}" in message
    assert "`app data check` reports it as file-damaged" in message
    if not asked:
        assert message.endswith(f"--file a.txt --entry {names[1]}`"), message
    assert app_store.get_session(sid)["files"] == [] and copy.read_bytes() == b"versioN 3"


def test_a_files_restore_whose_session_is_in_the_trash_names_the_session_restore(
    app_store: Store,
) -> None:
    sid, names = _three_versions(app_store)
    app_store.put_file(sid, "b.txt", b"b")
    session_entry = app_store.delete_session(sid).name
    for entry in (None, names[0]):
        with pytest.raises(SessionNotFoundError) as refused:
            app_store.restore(sid, file="a.txt", entry=entry)
        assert str(refused.value) == (
            f"no session {sid!r} in sessions: it is in the trash (entry {session_entry}), and "
            "a file is restored into its session; nothing was changed. `app sessions restore "
            f"{sid}` brings the session back, with the files it held when it was deleted; "
            "then restore the file, if it is not among them"
        )
        assert refused.value.exit_code == 66
    app_store.restore(sid)  # as it says
    session = app_store.restore(sid, file="a.txt", entry=names[0])
    assert sorted(f["sha256"] for f in session["files"]) == sorted([sha("b"), sha("version 1")])


def test_a_trash_entry_linked_to_nowhere_names_removing_the_link(
    app_store: Store, tmp_path: Path
) -> None:
    sid, names = _three_versions(app_store)
    link = app_store.trash.path / names[-1]
    link.rename(tmp_path / "moved")
    link.symlink_to(tmp_path / "gone")
    with pytest.raises(TrashEntryLinkedError) as refused:
        app_store.restore(sid, file="a.txt")
    # Broke: "move that back in its place: `rm <link> && mv <gone> <link>`; else restore
    # again", which the same link refused again.
    assert (
        f"It leads to {tmp_path / 'gone'}, which is not there (removed, or on a disk not "
        "mounted): mount that disk and retry, or remove the link and restore again to bring "
        "back the copy before it"
    ) in str(refused.value)
    assert "mv " not in str(refused.value)
    link.unlink()  # as it says
    session = app_store.restore(sid, file="a.txt")
    assert [f["sha256"] for f in session["files"]] == [sha("version 2")]


def test_an_orphan_restored_from_the_trash_is_recorded_with_its_sha256(app_store: Store) -> None:
    sid = app_store.create_session("orphan")["id"]
    app_store.put_file(sid, "kept.txt", b"kept")
    (app_store.sessions_dir / sid / "blobs" / ("ab" * 16)).write_bytes(b"stray bytes")
    app_store.check(repair=True, thorough=True)  # to the trash, as "never acknowledged"
    (entry,) = app_store.trash.entries()
    assert entry.reason == "orphan" and entry.file is not None
    # Broke: listed and served with "sha256": null, never found damaged by a check.
    files = app_store.restore(sid, file=entry.file)["files"]
    assert {f["name"]: f["sha256"] for f in files}[entry.file] == sha("stray bytes")
    blob, _ = app_store.file_path(sid, entry.file)
    blob.write_bytes(b"stray bytez")
    found = app_store.check(repair=False, thorough=True).findings
    assert [f.problem for f in found] == ["file-damaged"]
