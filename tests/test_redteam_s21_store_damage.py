"""Damage from outside the app to a file's record, and what `check --repair` makes of it
(red team 21).

A record torn or edited by hand (a restore from a backup taken mid-write, an editor, a disk
error) leaves the file's bytes with no readable record naming them, which is what an
upload killed before its commit leaves too. `check --repair` called those bytes "never
acknowledged" and moved them to the trash as an orphan, where `empty-trash` (or a timer's
`empty-trash --older-than`) removes them for good: an acknowledged file, lost to a repair.
"""

from __future__ import annotations

import json

from app.config import Config
from app.storage import open_storage


def test_bytes_a_damaged_record_named_stay_in_their_session_for_a_human(
    app_config: Config,
) -> None:
    with open_storage(app_config, writer=True, kind="tests", wanted="fill it") as store:
        session = store.create_session("kept")["id"]
        store.put_file(session, "torn.txt", b"acknowledged bytes")
        store.put_file(session, "edited.txt", b"more acknowledged bytes")
        store.put_file(session, "fine.txt", b"fine")
    directory = app_config.data_root / "sessions" / session
    torn = directory / "records" / "torn.txt"
    torn.write_bytes(torn.read_bytes()[:20])
    edited = directory / "records" / "edited.txt"
    edited.write_text(json.dumps({**json.loads(edited.read_text()), "blob": "0" * 32}))
    blobs = sorted(path.read_bytes() for path in (directory / "blobs").iterdir())

    with open_storage(app_config, writer=True, kind="tests", wanted="repair it") as store:
        report = store.check(repair=True)
        assert store.list_trash() == []
        assert [f["name"] for f in store.list_files(session)] == ["edited.txt", "fine.txt"]
    assert sorted(path.read_bytes() for path in (directory / "blobs").iterdir()) == blobs
    assert edited.exists()
    relative = f"sessions/{session}"
    said = {(f.problem, f.target): (f.detail, f.repair, f.repaired) for f in report.findings}
    held = [target for problem, target in said if problem == "file-without-record"]
    assert len(held) == 2
    assert said == {
        ("unknown-entry", f"{relative}/records/torn.txt"): (
            (
                "a file record that cannot be read (not a record of the app's shape: damage from "
                "outside the app); the file is not listed"
            ),
            "nothing: left for a human (put the record back from a backup)",
            False,
        ),
        ("record-without-file", f"{relative}/records/edited.txt"): (
            (
                "the record of 'edited.txt' names bytes that are not there, and bytes no record "
                "names have its sha256: damage from outside the app"
            ),
            "nothing: left for a human (point the record at those bytes)",
            False,
        ),
        **{
            ("file-without-record", target): (
                (
                    "bytes no record names, next to damaged records of the session ('torn.txt', "
                    "'edited.txt'): damage from outside the app, and these may be one of those "
                    "files' bytes"
                ),
                (
                    "nothing: left for a human (put the record back from a backup, or point it at "
                    "these bytes; `sha256sum` tells which file they are)"
                ),
                False,
            )
            for target in held
        },
    }
