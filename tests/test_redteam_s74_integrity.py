"""Red team 74 on integrity (branch rt-integrity74): see docs/explanation/attacks/.

What broke: a maintenance command stopped between its steps, run again, said "nothing was
changed" of what the stopped run had left undone. ``app data restamp`` writes the new stamp,
then its ``restamp`` audit line, then the new profile's mark on the root's own directories
(``user.app.layout``); SIGKILLed after the stamp's rename (by hand: strace attached with
``inject=write:signal=SIGKILL:when=2``), the same command run again, as the brief and the
reference tell a user to, answered "is already stamped 'staging': nothing was changed", exit
0: the hand-over recorded nowhere in the log (only `app data check` said so), and the
directories still marked for the profile it was taken from, which a writer of that profile
takes for its own once the stamp is lost. Run again, it now finishes both, under its lock,
and says so.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from app.cli import cli
from app.config import Config
from app.dataroot import AUDIT_FILE, LAYOUT_MARK, STAMP_FILE, marked_profile
from app.storage import open_storage

MARKED = ("sessions", ".trash", ".tmp")


def _lines(root: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (root / AUDIT_FILE).read_text().splitlines()]


def _mark(root: Path, profile: str) -> None:
    for name in MARKED:
        value = json.dumps({"dir": name, "profile": profile}).encode()
        os.setxattr(root / name, LAYOUT_MARK, value, follow_symlinks=False)


def test_a_restamp_stopped_after_its_stamp_is_finished_by_running_it_again(
    app_config: Config,
) -> None:
    root = app_config.data_root
    with open_storage(app_config, writer=True, kind="maintenance", wanted="test it") as store:
        store.create_session("kept")
    # The root as development's, handed to testing by `app data restamp`, which a SIGKILL
    # stopped after its stamp's rename: the stamp it wrote, no restamp line, the root's
    # directories still marked for development (where the filesystem keeps marks).
    stamp = json.loads((root / STAMP_FILE).read_text())
    made = datetime.now(UTC).isoformat()
    stamped = {**stamp, "created_at": made, "restamped_from": "development"}
    (root / STAMP_FILE).write_text(json.dumps(stamped))
    marked = marked_profile(root) is not None  # a filesystem without user attributes: none
    if marked:
        _mark(root, "development")

    again = CliRunner().invoke(cli, ["data", "restamp", "--from", "development"])
    assert again.exit_code == 0, again.output
    # Before: "... is already stamped 'testing': nothing was changed".
    finished = "its restamp line in the audit log" + (
        " and the mark of profile 'testing' on sessions, .trash, .tmp" if marked else ""
    )
    assert again.stdout == (
        f"data root {root} is already stamped 'testing'; finished what an earlier run "
        f"stopped before: {finished}\n"
    )
    line = _lines(root)[-1]
    assert (line["operation"], line["details"]) == (
        "restamp",
        {"from": "development", "to": "testing", "stamp": made, "recovered": True},
    )
    assert marked_profile(root) == ("testing" if marked else None)
    with open_storage(app_config, writer=False, kind="maintenance", wanted="check it") as store:
        assert store.check().findings == []
    # Finished, the next run has nothing left to do, and says so.
    last = CliRunner().invoke(cli, ["data", "restamp", "--from", "development"])
    assert last.stdout == f"data root {root} is already stamped 'testing': nothing was changed\n"


def test_a_restore_stopped_after_its_move_is_said_as_such_when_run_again(
    app_config: Config,
) -> None:
    root = app_config.data_root
    with open_storage(app_config, writer=True, kind="maintenance", wanted="test it") as store:
        sid = store.create_session("kept")["id"]
        entry = store.delete_session(sid).name
        manifest = (root / ".trash" / entry / "trash.json").read_bytes()
        store.restore(sid)
        store.put_file(sid, "a.txt", b"acknowledged")
        file_entry = store.delete_file(sid, "a.txt").name
        file_manifest = (root / ".trash" / file_entry / "trash.json").read_bytes()
        store.restore(sid, file="a.txt")
    # Killed after its move and its line (SIGKILL at the unlink of the entry's trash.json):
    # the entry left with its manifest alone. Run again, the restore removed it (audited),
    # then said "nothing was changed".
    (root / ".trash" / entry).mkdir()
    (root / ".trash" / entry / "trash.json").write_bytes(manifest)
    again = CliRunner().invoke(cli, ["sessions", "restore", sid])
    assert again.exit_code == 66, again.output
    assert " ".join(again.stderr.split()) == (
        f"error: no session {sid!r} in the trash: it is in sessions (restored already, or "
        "never deleted), so it was not restored again; this run first finished what an "
        "earlier restore, stopped after it had moved the session back, left in the trash (1 "
        f"repair(s), in a check-repair line in the audit log). `app sessions show {sid}` "
        "shows it"
    )
    assert not (root / ".trash" / entry).exists()
    # Killed a step later (at the rmdir of the entry): the empty directory was said to be
    # "a delete that stopped before its manifest", a delete nobody made.
    (root / ".trash" / entry).mkdir()
    with open_storage(app_config, writer=False, kind="maintenance", wanted="check it") as store:
        [found] = store.check().findings
    assert (found.problem, found.detail) == (
        "trash-empty",
        (
            "an empty trash entry: a restore from it (its line is in the audit log) that "
            "stopped before it removed the entry's directory"
        ),
    )
    last = CliRunner().invoke(cli, ["sessions", "restore", sid])
    assert "so nothing was changed" in last.stderr, last.output
    # A file's restore, the same: "there is none left; nothing was changed".
    (root / ".trash" / file_entry).mkdir()
    (root / ".trash" / file_entry / "trash.json").write_bytes(file_manifest)
    again = CliRunner().invoke(cli, ["sessions", "restore", sid, "--file", "a.txt"])
    assert again.exit_code == 65, again.output
    assert " ".join(again.stderr.split()).endswith(
        "Refusing to overwrite it with a copy in the trash: there is none left; this run first "
        "finished what an earlier restore, stopped after it had moved the file back, left in "
        "the trash (1 repair(s), in a check-repair line in the audit log)"
    ), again.output
    assert not (root / ".trash" / file_entry).exists()


def test_an_empty_trash_run_again_names_what_it_finished(app_config: Config) -> None:
    root = app_config.data_root
    with open_storage(app_config, writer=True, kind="maintenance", wanted="test it") as store:
        sid = store.create_session("gone")["id"]
        entry = store.delete_session(sid).name
    # Killed once it had taken the entry out of the trash (SIGKILL at its first unlinkat).
    (root / ".trash" / entry).rename(root / ".trash" / f".emptying-{entry}")
    again = CliRunner().invoke(cli, ["data", "empty-trash"])
    assert again.exit_code == 0, again.output
    # Before: "removed 0 trash entries", of the entry whose bytes it had just removed.
    assert again.stdout == (
        "removed 0 trash entries, and finished removing 1 that an earlier run, stopped "
        f"partway, had taken out of the trash ({entry}; this run's audit line names them)\n"
    )
    assert not (root / ".trash" / f".emptying-{entry}").exists()
    assert _lines(root)[-1]["details"] == {
        "count": 0,
        "entries": [],
        "finished": [entry],
        "older_than": None,
        "via": "command",
    }
