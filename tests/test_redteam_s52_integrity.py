"""Red team 52 on integrity: what a look that fails, or a restore cut after its commit, said.

Faults are injected by the kernel into calls of a real process (``strace --inject``: a real
``app serve`` attached for one request, or this test's own process for one call of the
store), so those tests need strace(1) and root. What broke (no byte was lost in any of them;
each told the operator something that was not so):

* ``app sessions restore ID --file NAME --entry X`` whose look at entry X failed (``EIO`` at
  its ``lstat``) refused "no trash entry X in the trash (emptied, restored already, or never
  made)", of an entry the listing shows. ``os.path.lexists`` says "nothing" of a look that
  failed; every use of it in the store and in ``check`` is now `app.dataroot.lexists`, which
  raises such a failure (the restore is refused by ``storage_io_error``, naming the entry,
  ``dmesg`` and the repair). A trash entry whose listing fails is no longer read as holding
  nothing but its manifest either (`Trash.remove_empty` keeps it whole).
* A replace (or a file's delete) whose look at the old bytes failed after its commit logged
  that they were "not there, removed from outside the app". They were there: the server's
  log now says the look failed, that they stay among the session's blobs, and that
  ``app data check --repair`` moves them into the entry, which it does.
* A restore killed after its commit (the data back, its trash entry left holding only its
  manifest, no audit line): ``check`` called the entry "a file delete that stopped before
  its commit; the file is unchanged" (or "a session delete that stopped before its move"),
  where a restore had happened and been answered. The change that made an entry is logged
  only after its commit: an entry the log names, holding only its manifest, whose data is
  back in its session, is now said to be a restore's that stopped after its commit, and the
  repair appends the restore's missing audit line as it removes the entry. A restore now
  writes its line before it removes the entry: killed between them, the line was lost for
  good (the entry gone, nothing for ``check`` to find).
* A purge's audit line named its sessions, not their entries, and ``check`` took any purge
  line naming an entry's session for that entry's line: a second purge of a session, killed
  between its move and its line, was never logged ("clean"). The line now names its entries.
* ``check --repair`` named the ``.trash/.emptying-<entry>`` it finished (an ``empty-trash``
  killed before its line) only in its one line at the end of its run: killed in between, the
  entry's removal was logged nowhere. It now writes the entry's ``empty-trash`` line first.
* (With them, a trash entry whose listing fails is no longer taken for one holding only its
  manifest by the undo of a change.)
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from faults import attached, killed_app, needs_strace
from test_redteam_s51_integrity import _command

from app.config import Config
from app.errors import NotInTrashError
from app.storage import open_storage

# --- restore --entry whose look at the entry fails ---------------------------------------------


@needs_strace
def test_a_look_at_a_named_entry_that_fails_is_not_said_to_be_no_entry(
    app_config: Config,
) -> None:
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        session = store.create_session("t")["id"]
        store.put_file(session, "a.txt", b"deleted")
        entry = store.delete_file(session, "a.txt")
        # The look restore --entry makes at the entry it is given, under the session's lock
        # (`Files.restore`) and before it (`Store.restore`): its lstat fails (EIO).
        with (
            attached(os.getpid(), "newfstatat:error=EIO:when=1+", entry.path),
            pytest.raises(OSError) as failed,
        ):
            store.trash.chosen(session, "a.txt", entry.name, lost=True)
        # Before the fix: None, and the restore refused "no trash entry ... (emptied,
        # restored already, or never made)".
        assert not isinstance(failed.value, NotInTrashError)
        assert failed.value.filename == str(entry.path), failed.value
        store.restore(session, file="a.txt", entry=entry.name)
        assert store.file_path(session, "a.txt")[0].read_bytes() == b"deleted"


@needs_strace
def test_an_entry_the_undo_of_a_change_cannot_list_keeps_its_manifest(app_config: Config) -> None:
    # The undo of a change that raised (a Ctrl-C right after a session's move) removes its
    # entry only if it holds nothing but its manifest: a listing that failed (EIO) was read
    # as "nothing else", the manifest removed from an entry holding the session, which
    # `check` could only leave for a human (`trash-no-manifest`).
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        session = store.create_session("t")["id"]
        entry = store.delete_session(session)
        with attached(os.getpid(), "openat:error=EIO:when=1+", entry.path):
            store.trash.remove_empty(entry)
        assert (entry.path / "trash.json").is_file()  # before the fix: removed
        assert store.check(repair=False).findings == []
        store.restore(session)
        assert store.get_session(session)["title"] == "t"


# --- a replace whose look at the old bytes fails after its commit ------------------------------


@needs_strace
def test_a_replace_whose_look_at_the_old_bytes_fails_does_not_log_them_removed(
    app_config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    root = app_config.data_root
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        session = store.create_session("t")["id"]
        store.put_file(session, "a.txt", b"version 1")
        old = store.file_path(session, "a.txt")[0]
        with (
            caplog.at_level(logging.WARNING, logger="app.store"),
            attached(os.getpid(), "newfstatat:error=EIO:when=1+", old),
        ):
            store.put_file(session, "a.txt", b"version 2", replace=True)
        (entry,) = store.list_trash()
        said = "\n".join(r.getMessage() for r in caplog.records)
        # Before the fix: "its bytes (blob ...) were not there, removed from outside the app".
        assert "removed from outside the app" not in said, said
        assert (
            f"file 'a.txt' of session {session}: could not look at its old bytes (blob "
            f"{old.name}: Input/output error); they stay among the session's blobs, and `app "
            f"data check --repair` moves them into trash entry {entry.name} once the disk "
            "reads (a server's start-up runs it)"
        ) in said, said
        assert old.read_bytes() == b"version 1"
        store.check(repair=True)
        assert (entry.path / "a.txt").read_bytes() == b"version 1"
        assert store.check(repair=False).findings == []
        store.delete_file(session, "a.txt")
        store.restore(session, file="a.txt", entry=entry.name)
        assert store.file_path(session, "a.txt")[0].read_bytes() == b"version 1"
    assert root.is_dir()


# --- a restore killed after its commit ---------------------------------------------------------


def _killed_restore(root: Path, entry: Path, *restore: str) -> None:
    """`app sessions restore ...` killed at the unlink of the entry's manifest: after its
    commit (and, since red team 52, after its audit line)."""
    killed_app(
        root,
        "unlink,unlinkat:signal=KILL:when=1",
        entry / "trash.json",
        command=("sessions", "restore", *restore),
    )


@needs_strace
def test_a_restore_killed_after_its_commit_is_said_to_have_happened(app_config: Config) -> None:
    root = app_config.data_root
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        session = store.create_session("t")["id"]
        store.put_file(session, "a.txt", b"deleted, then restored")
        file_entry = store.delete_file(session, "a.txt").path
        other = store.create_session("u")["id"]
        session_entry = store.delete_session(other).path
    _killed_restore(root, file_entry, session, "--file", "a.txt")
    _killed_restore(root, session_entry, other)
    assert (file_entry / "trash.json").is_file() and (session_entry / "trash.json").is_file()
    code, said = _command("data", "check")
    assert code == 65, said
    # Before the fix: "a file delete that stopped before its commit; the file is unchanged"
    # and "a session delete that stopped before its move; the session is unchanged".
    assert "stopped before its" not in said, said
    assert (
        f"trash-manifest-only  .trash/{file_entry.name}: a restore of file 'a.txt' from this "
        "entry that stopped before removing it: the file is back in its session, and the log "
        "has the restore's line; --repair: remove the entry (it holds no data)"
    ) in said, said
    assert (
        f"trash-manifest-only  .trash/{session_entry.name}: a restore of the session from this "
        "entry that stopped before removing it: the session is back"
    ) in said, said
    # An empty-trash (or a restore) finishes its session's half-made entries first, as
    # the start-up's repair would: the same, in its `check-repair` line.
    code, said = _command("data", "empty-trash")
    assert code == 0, said
    lines = [json.loads(line) for line in (root / "audit.jsonl").read_text().splitlines()]
    (repaired,) = (line for line in lines if line["operation"] == "check-repair")
    assert "stopped before its" not in json.dumps(repaired), repaired
    restores = {
        (line["operation"], line["target"], line["details"]["trash"])
        for line in lines
        if line["operation"].startswith("restore-")
    }
    assert restores == {
        ("restore-file", f"{session}/a.txt", file_entry.name),
        ("restore-session", other, session_entry.name),
    }, restores
    with open_storage(app_config, writer=True, kind="tests", wanted="look") as store:
        assert store.file_path(session, "a.txt")[0].read_bytes() == b"deleted, then restored"
        assert store.get_session(other)["id"] == other
        assert store.list_trash() == []
        assert store.check(repair=False).findings == []


@needs_strace
def test_a_purge_killed_before_its_move_is_not_taken_for_a_restore(app_config: Config) -> None:
    # A purge's audit line names the sessions it moved, not their entries: an earlier
    # purge's line named the session, so an entry of a later purge killed before its move
    # read as "logged", and (with the session there) as a restore's leftover: a
    # `restore-session` line appended for a restore that never happened.
    root = app_config.data_root
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        session = store.create_session("t")["id"]
        store.purge()
        store.restore(session)
    killed_app(
        root,
        "rename,renameat,renameat2:signal=KILL:when=1",
        root / "sessions" / session,
        command=("data", "purge"),
    )
    (entry,) = (root / ".trash").iterdir()
    code, said = _command("data", "check")
    assert code == 65, said
    # Its purge's line names no entry of its own (a line before red team 52's named only
    # sessions: then it is said to be either, and no line is appended either).
    assert (
        f"trash-manifest-only  .trash/{entry.name}: a session purge that stopped before its "
        "move; the session is unchanged; --repair: remove the entry (it holds no data)"
    ) in said, said
    code, said = _command("data", "check", "--repair")
    assert code == 0, said
    audit = (root / "audit.jsonl").read_text()
    assert audit.count('"restore-session"') == 1, audit  # the one restore made
    with open_storage(app_config, writer=True, kind="tests", wanted="look") as store:
        assert store.get_session(session)["title"] == "t"
        assert store.check(repair=False).findings == []


@needs_strace
def test_a_purge_killed_before_its_audit_line_is_logged_though_an_earlier_purge_named_the_session(
    app_config: Config,
) -> None:
    # A purge's line named its sessions, not their entries: a second purge of a session
    # (purged, restored, purged again) killed after its move and before its line left an
    # entry an earlier line "named", and `check` never reported or logged the second purge.
    root = app_config.data_root
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        session = store.create_session("t")["id"]
        store.put_file(session, "a.txt", b"kept")
        store.purge()
        store.restore(session)
    audit = root / "audit.jsonl"
    killed_app(root, "write,pwrite64:signal=KILL:when=1", audit, command=("data", "purge"))
    (entry,) = (root / ".trash").iterdir()
    code, said = _command("data", "check", "--repair")
    assert code == 0, said
    # Before the fix: "clean": the second purge's move into the trash logged nowhere.
    assert f"trash-unaudited  .trash/{entry.name}: a complete trash entry (purge)" in said, said
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [line["details"]["trash"] for line in lines if line["details"].get("recovered")] == [
        entry.name
    ], lines
    with open_storage(app_config, writer=True, kind="tests", wanted="look") as store:
        assert store.check(repair=False).findings == []
        store.restore(session)
        assert store.file_path(session, "a.txt")[0].read_bytes() == b"kept"


@needs_strace
def test_a_restore_killed_at_its_audit_line_is_logged_by_the_next_check(
    app_config: Config,
) -> None:
    # A restore removed its entry, then wrote its line: killed between the two (or cut by a
    # power loss), the file was back and no line of the log said so, for good (`check`
    # found nothing to report). The line now comes first, the entry's removal after it.
    root = app_config.data_root
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        session = store.create_session("t")["id"]
        store.put_file(session, "a.txt", b"back")
        entry = store.delete_file(session, "a.txt").path
    audit = root / "audit.jsonl"
    restore = ("sessions", "restore", session, "--file", "a.txt")
    killed_app(root, "write,pwrite64:signal=KILL:when=1", audit, command=restore)
    code, said = _command("data", "check", "--repair")
    assert code == 0, said
    # Before the fix: "clean", and no line named the restore.
    assert f"trash-manifest-only  .trash/{entry.name}: a restore of file 'a.txt'" in said, said
    restored = [line for line in audit.read_text().splitlines() if '"restore-file"' in line]
    assert len(restored) == 1 and entry.name in restored[0], restored
    with open_storage(app_config, writer=True, kind="tests", wanted="look") as store:
        assert store.file_path(session, "a.txt")[0].read_bytes() == b"back"
        assert store.check(repair=False).findings == []


def _killed_at_audit_write(root: Path, *command: str) -> None:
    """`app <command>` killed by strace at its first write to the audit log."""
    killed_app(root, "write,pwrite64:signal=KILL:when=1", root / "audit.jsonl", command=command)


@needs_strace
def test_a_repair_killed_after_finishing_an_emptying_entry_leaves_its_removal_logged(
    app_config: Config,
) -> None:
    # An `empty-trash` killed before its line leaves `.trash/.emptying-<entry>` (red team
    # 51), which `check --repair` removes and names in its one line, written at the end of
    # its run. Killed in between (a second crash), the entry's removal was logged nowhere.
    root = app_config.data_root
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        session = store.create_session("t")["id"]
        store.put_file(session, "a.txt", b"deleted")
        entry = store.delete_file(session, "a.txt").name
    _killed_at_audit_write(root, "data", "empty-trash")
    assert (root / ".trash" / f".emptying-{entry}").is_dir()
    _killed_at_audit_write(root, "data", "check", "--repair")
    code, said = _command("data", "check", "--repair")
    assert code == 0, said
    lines = [json.loads(line) for line in (root / "audit.jsonl").read_text().splitlines()]
    # Before the fix: the entry's directory gone, "clean", and no line named it.
    assert any(
        line["operation"] == "empty-trash" and line["details"]["entries"] == [entry]
        for line in lines
    ), lines
    assert not (root / ".trash").exists() or not any((root / ".trash").iterdir())
