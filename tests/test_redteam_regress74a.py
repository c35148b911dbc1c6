"""Red team 74 on regress, round a (branch rt-regress74a): see docs/explanation/attacks/.

What broke: what rt-integrity74 left open of "a maintenance command run again after one
stopped partway says what it finished". `app data restamp` killed while it wrote its stamp
(before the rename) left ``.tmp/write-*.part``; run again, it re-stamped the root and left
the file for the next writer, `app data check` reporting it (``tmp-leftover``) meanwhile.
``POST /trash/empty`` sent again after one that stopped answered ``"removed": 0`` of the
entries whose removal it finished (the command said so). `app sessions restore --entry` run
again after one killed after its move said "(emptied, restored already, or never made)".
`app data restamp` run again on a full disk said "nothing was changed" under the warning
that the restamp line it owed was refused again, and, where the log had been rotated by a
rename, wrote that line a second time (`app data check` called the stamp unaudited). A
bind of a directory with a blank in its name, lazily unmounted, was told put back by a
`mount --bind` that, pasted, bound another.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from faults import attached, needs_strace

from app.cli import cli
from app.config import Config
from app.dataroot import AUDIT_FILE, STAMP_FILE, _unmounted_said
from app.storage import open_storage


def _lines(root: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (root / AUDIT_FILE).read_text().splitlines()]


@needs_strace
def test_a_restamp_run_again_finishes_what_a_killed_one_left_or_says_it_could_not(
    app_config: Config,
) -> None:
    root = app_config.data_root
    with open_storage(app_config, writer=True, kind="maintenance", wanted="test it") as store:
        store.create_session("kept")
    # The root as development's, and a restamp to testing SIGKILLed at its stamp's write:
    # the stamp unchanged, its temporary file left in .tmp/ (never visible, no flock held).
    stamp = json.loads((root / STAMP_FILE).read_text())
    (root / STAMP_FILE).write_text(json.dumps({**stamp, "profile": "development"}))
    part = root / ".tmp" / "write-0123456789abcdef.part"
    part.write_bytes(b'{"profile": "tes')

    again = CliRunner().invoke(cli, ["data", "restamp", "--from", "development"])
    assert again.exit_code == 0, again.output
    # Before: the first line alone, the .part left for the next writer.
    assert again.stdout == (
        f"data root {root} is now stamped 'testing' (was 'development')\n"
        "removed 1 file(s) in .tmp/ that a write which stopped left (write-0123456789abcdef"
        ".part; a clear-tmp line in the audit log names them)\n"
    )
    assert not part.exists()
    line = _lines(root)[-1]
    assert (line["operation"], line["details"]) == (
        "clear-tmp",
        {"removed": ["write-0123456789abcdef.part"]},
    )
    with open_storage(app_config, writer=False, kind="maintenance", wanted="check it") as store:
        assert store.check().findings == []

    # Killed after its stamp this time, and run again on a full disk: the line it owes
    # refused again.
    stamp = json.loads((root / STAMP_FILE).read_text())
    made = datetime.now(UTC).isoformat()
    (root / STAMP_FILE).write_text(json.dumps({**stamp, "created_at": made}))
    with attached(os.getpid(), "write:error=ENOSPC", root / AUDIT_FILE):
        again = CliRunner().invoke(cli, ["data", "restamp", "--from", "development"])
    assert again.exit_code == 0, again.output
    # Before: "... is already stamped 'testing': nothing was changed", under the warning
    # that the line was refused, the hand-over still logged nowhere.
    assert again.stdout == (
        f"data root {root} is already stamped 'testing'; could not write what an earlier run "
        "stopped before: its restamp line, which the audit log refused (No space left on "
        "device): the line is in this command's log, above, and `app data check --repair` "
        "writes it once that is resolved\n"
    )
    assert _lines(root)[-1]["operation"] == "clear-tmp"

    # Written by the next run, then the log rotated by a rename (`mv`, logrotate's
    # `nocreate`): until the next line there is no audit.jsonl, only audit.jsonl.1.
    written = CliRunner().invoke(cli, ["data", "restamp", "--from", "development"])
    assert written.stdout.endswith(
        "finished what an earlier run stopped before: its restamp line in the audit log\n"
    ), written.output
    (root / AUDIT_FILE).rename(root / f"{AUDIT_FILE}.1")
    last = CliRunner().invoke(cli, ["data", "restamp", "--from", "development"])
    # Before: "finished what an earlier run stopped before: its restamp line in the audit
    # log", a second line of it written (the first rotated copy was not read where the log
    # was missing), and `app data check` said `stamp-unaudited`.
    assert last.stdout == f"data root {root} is already stamped 'testing': nothing was changed\n"
    assert not (root / AUDIT_FILE).exists()


def test_a_subdirectory_bind_unmounted_is_put_back_by_a_command_that_can_be_pasted() -> None:
    # `mount --bind "/mnt/disk/app data" /srv/app`, lazily unmounted under a writer, no other
    # mount of that filesystem left (the held case of leftovers74 names the other mount).
    said = _unmounted_said(
        Path("/srv/app"), Path("/"), gone=True, through=None, bound=Path("/app data")
    )
    # Before: `mount --bind <where the filesystem is mounted>/app data /srv/app`, which,
    # pasted with the placeholder filled in, bound /mnt/disk/app.
    assert said.endswith(
        "bind its directory /app data at /srv/app again (`mount --bind <where the filesystem "
        "is mounted>'/app data' /srv/app`; `findmnt /srv/app` says what is mounted there now)"
    ), said


def test_an_empty_trash_sent_again_over_http_names_what_it_finished(
    app_client: Any, app_config: Config
) -> None:
    root = app_config.data_root
    sid = app_client.post("/sessions", json={}).json()["id"]
    entry = app_client.delete(f"/sessions/{sid}").json()["trash"]
    # What an empty whose audit line a full disk refused leaves (its bytes removed and its
    # directory kept for the line, as one killed after taking it out of the trash does).
    (root / ".trash" / entry).rename(root / ".trash" / f".emptying-{entry}")
    emptied = app_client.post("/trash/empty")
    assert emptied.status_code == 200, emptied.text
    # Before: {"removed": 0, "entries": []}, where the command says what it finished.
    assert emptied.json() == {"removed": 0, "entries": [], "finished": [entry]}
    assert not (root / ".trash" / f".emptying-{entry}").exists()
    assert _lines(root)[-1]["details"]["finished"] == [entry]
    # Nothing left to finish: the answer as before.
    assert app_client.post("/trash/empty").json() == {"removed": 0, "entries": []}


def test_a_restore_of_an_entry_run_again_after_its_move_says_what_it_finished(
    app_config: Config,
) -> None:
    root = app_config.data_root
    with open_storage(app_config, writer=True, kind="maintenance", wanted="test it") as store:
        sid = store.create_session("kept")["id"]
        entry = store.delete_session(sid).name
        manifest = (root / ".trash" / entry / "trash.json").read_bytes()
        store.restore(sid, entry=entry)
    # Killed after its move and its line (SIGKILL at the unlink of the entry's trash.json).
    (root / ".trash" / entry).mkdir()
    (root / ".trash" / entry / "trash.json").write_bytes(manifest)
    again = CliRunner().invoke(cli, ["sessions", "restore", sid, "--entry", entry])
    assert again.exit_code == 66, again.output
    # Before: "(emptied, restored already, or never made)" of the entry it had just removed.
    assert " ".join(again.stderr.split()) == (
        f"error: no trash entry {entry!r} in the trash: restored already, so it was not "
        "restored again; this run first finished what an earlier restore, stopped after it "
        "had moved it back, left in the trash (1 repair(s), in a check-repair line in the "
        f"audit log). `app sessions show {sid}` shows the session"
    )
    assert not (root / ".trash" / entry).exists()
    # Red team 75: what a replace killed before its commit left (its entry holding its
    # manifest alone) was counted among the restore's repairs, and said to be a restore's.
    # Both at once: each said for what it is.
    (root / ".trash" / entry).mkdir()
    (root / ".trash" / entry / "trash.json").write_bytes(manifest)
    replaced = _a_replace_killed_before_its_commit(app_config, sid)
    again = CliRunner().invoke(cli, ["sessions", "restore", sid, "--entry", entry])
    assert " ".join(again.stderr.split()) == (
        f"error: no trash entry {entry!r} in the trash: restored already, so it was not "
        "restored again; this run first finished what an earlier restore, stopped after it "
        "had moved it back, left in the trash (1 repair(s)), and repaired other trash "
        f"entries of the session (1 repair(s): entry {replaced}, a replace of file 'a.txt' "
        "that stopped before its commit: removed, it held no data), both in a check-repair "
        f"line in the audit log. `app sessions show {sid}` shows the session"
    )
    # The replace's alone, by session and by the entry it left: it was "so it was not
    # restored again; ... what an earlier restore ... left", of a session never restored.
    for by_entry in (False, True):
        replaced = _a_replace_killed_before_its_commit(app_config, sid)
        asked = ["--entry", replaced] if by_entry else []
        again = CliRunner().invoke(cli, ["sessions", "restore", sid, *asked])
        assert again.exit_code == 66, again.output
        repaired = (
            "this run first repaired trash entries of the session (1 repair(s): entry "
            f"{replaced}, a replace of file 'a.txt' that stopped before its commit: removed, "
            "it held no data), in a check-repair line in the audit log"
        )
        assert " ".join(again.stderr.split()) == (
            f"error: no trash entry {replaced!r} in the trash, so nothing was restored; "
            f"{repaired}. `app sessions list --trash --json` shows each entry's name"
            if by_entry
            else f"error: no session {sid!r} in the trash: it is in sessions (restored "
            f"already, or never deleted), so nothing was restored; {repaired}. `app "
            f"sessions show {sid}` shows it"
        )
        assert not (root / ".trash" / replaced).exists()
    # A file's restore, the same: "nothing was changed" of the entry it had just removed.
    replaced = _a_replace_killed_before_its_commit(app_config, sid)
    again = CliRunner().invoke(cli, ["sessions", "restore", sid, "--file", "a.txt"])
    assert again.exit_code == 65, again.output
    assert " ".join(again.stderr.split()) == (
        f"error: session {sid!r} has a file 'a.txt' (restored already, or never deleted), and "
        "the trash holds no copy of it to restore; nothing was restored; this run first "
        "repaired trash entries of the session (1 repair(s): entry "
        f"{replaced}, a replace of file 'a.txt' that stopped before its commit: removed, it "
        "held no data), in a check-repair line in the audit log. `app sessions show "
        f"{sid}` lists the file, with its SHA-256"
    )
    # Red team 76 on integrity: a record `check` kept of bytes lost from outside the app,
    # the bytes then put back among the session's blobs, was said to be left by "changes,
    # stopped partway", which no change of the app's had been.
    record = json.loads((root / "sessions" / sid / "records" / "a.txt").read_bytes())
    blob = root / "sessions" / sid / "blobs" / record["blob"]
    blob.rename(root / "put-aside")
    with open_storage(app_config, writer=True, kind="maintenance", wanted="test it") as store:
        store.check(repair=True)
    [kept] = sorted((root / ".trash").iterdir())[-1:]
    (root / "put-aside").rename(blob)
    again = CliRunner().invoke(cli, ["sessions", "restore", sid])
    assert again.exit_code == 66, again.output
    assert " ".join(again.stderr.split()) == (
        f"error: no session {sid!r} in the trash: it is in sessions (restored already, or "
        "never deleted), so nothing was restored; this run first repaired trash entries of "
        f"the session (1 repair(s): entry {kept.name}, the record of file 'a.txt' kept when "
        "its bytes were lost from outside the app: those bytes, found back among the "
        "session's blobs, moved into it (a restore of the file checks them)), in a "
        f"check-repair line in the audit log. `app sessions show {sid}` shows it"
    )
    assert (kept / "a.txt").read_bytes() == b"acknowledged"


def _a_replace_killed_before_its_commit(config: Config, sid: str) -> str:
    """What a replace of the session's file a.txt SIGKILLed before its commit (at the
    ``openat`` of the audit log, which it opens before its record's rename) leaves: its
    trash entry holding its manifest alone, the record and bytes unchanged. Made by a real
    replace, then undone by hand as far as its commit. Returns the entry's name."""
    root = config.data_root
    record = next((root / "sessions" / sid / "records").glob("a.txt"), None)
    with open_storage(config, writer=True, kind="maintenance", wanted="test it") as store:
        if record is None:
            store.put_file(sid, "a.txt", b"acknowledged")
            record = root / "sessions" / sid / "records" / "a.txt"
        before = record.read_bytes()
        store.put_file(sid, "a.txt", b"never committed", replace=True)
    [made] = sorted((root / ".trash").iterdir())[-1:]
    (made / "a.txt").rename(root / "sessions" / sid / "blobs" / json.loads(before)["blob"])
    (root / "sessions" / sid / "blobs" / json.loads(record.read_bytes())["blob"]).unlink()
    record.write_bytes(before)
    # Its audit line, written after the commit, never was.
    log = (root / AUDIT_FILE).read_text().splitlines(keepends=True)
    assert json.loads(log[-1])["operation"] == "replace-file"
    (root / AUDIT_FILE).write_text("".join(log[:-1]))
    return made.name
