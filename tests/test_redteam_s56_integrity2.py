"""Red team 56 on integrity, second round: a change dated before the change it followed.

What broke (a real data root, each step a real process of its own, only its clock moved
with time-machine: ``tests/test_redteam_s18_clock.py``'s ``run``):

* a file deleted, then put again under the same name, after the clock was stepped back (a
  VM restored from a snapshot, a board that boots before NTP, ``date -s``). Red team 50
  stamped a replace's ``uploaded_at`` after the version it replaces, and red team 18 named
  trash entries after the newest one; a name put again after a delete has no version to
  replace, and a delete was named after the trash's newest entry alone. The version put
  again read as uploaded a day *before* the one deleted, a new file was listed before the
  files it came after, and the delete's trash entry was named a day before the upload it
  deleted: a client that fetches what changed since the newest ``uploaded_at`` it saw
  never fetched either file. Every change of a session's files (an upload's switch, a
  delete's entry) is now stamped after the session's newest change (its records'
  ``uploaded_at`` and the time of its ``records/``, `app.store.records.change_floor`); a
  delete is named through the trash's clock, which keeps after the newest entry too; a
  delete (and a file's restore) sets the time of ``records/`` to its own where the kernel's
  is earlier, so the session's ``updated_at`` moves (by reading: the kernel's clock of a
  shared machine is not stepped in a test). On
  PostgreSQL a change is dated after the session's ``updated_at`` too (a replica whose clock
  is behind another's did the same there): tested in ``tests/test_remote_store.py``
  (``test_a_change_is_never_dated_before_the_sessions_last_change``), which has the engines.
* a record edited by hand to the last microsecond Python holds: "just after" it overflowed,
  and every replace of the file (every change of its session, with the fix above) was an
  ``OverflowError``, a 500. A time from the year 9999 on is now damage no change is dated
  after (``app.store.records.LATEST_FLOOR``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from session_files import by_hand
from test_redteam_s18_clock import run

from app.config import Config
from app.storage import Storage


def test_a_name_put_again_after_its_delete_is_never_dated_before_the_version_deleted(
    app_config: Config,
) -> None:
    [sid, one, other, before] = run(
        0,
        ["create", "history"],
        ["put-entry", "$", "a.txt", "one"],
        ["put-entry", "$", "b.txt", "b"],
        ["session", "$"],
    )
    # The clock is stepped back a day; the file is deleted and put again, and a new one put.
    steps = [["delete-entry", sid, "a.txt"], ["put-entry", sid, "a.txt", "two"]]
    [[entry, deleted_at], two, new, after] = run(
        -24, *steps, ["put-entry", sid, "c.txt", "c"], ["session", sid]
    )
    # Before the fix the delete was dated (and its entry named) a day before "one" was
    # uploaded, "two" a day before "one", and c.txt a day before b.txt.
    assert one["uploaded_at"] < other["uploaded_at"] < deleted_at
    named = datetime.strptime(entry.split("-")[0], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
    assert named == datetime.fromisoformat(deleted_at)
    assert deleted_at < two["uploaded_at"] < new["uploaded_at"]
    # A client that asks what changed since the newest time it saw finds both files.
    seen = before["updated_at"]
    changed = [f["name"] for f in after["files"] if f["uploaded_at"] > seen]
    assert changed == ["a.txt", "c.txt"]
    assert [f["name"] for f in after["files"]] == ["b.txt", "a.txt", "c.txt"]
    assert after["updated_at"] > seen


def test_a_time_no_clock_gives_in_a_record_does_not_stop_the_sessions_changes(
    app_store: Storage, app_config: Config
) -> None:
    # A record edited by hand to the last microsecond Python holds: a replace of the file
    # (red team 50's "just after the version it replaces") and, with the fix above, a delete
    # of it or of another file were an OverflowError, a 500 on each, for good.
    store = app_store
    session_id = store.create_session("edited")["id"]
    store.put_file(session_id, "a.txt", b"a")
    record = app_config.data_root / "sessions" / session_id / "records" / "a.txt"
    last = datetime.max.replace(tzinfo=UTC).isoformat()
    edited = record.with_name(".edited")
    edited.write_text(json.dumps(by_hand({**json.loads(record.read_text()), "uploaded_at": last})))
    edited.replace(record)  # renamed in, as an editor saves it: records/ changes
    store.put_file(session_id, "b.txt", b"b")
    replaced = store.put_file(session_id, "a.txt", b"a2", replace=True)
    store.delete_file(session_id, "b.txt")
    store.delete_file(session_id, "a.txt")
    assert replaced["uploaded_at"] < "9999"
    assert [e.file for e in store.list_trash()] == ["a.txt", "b.txt", "a.txt"]
