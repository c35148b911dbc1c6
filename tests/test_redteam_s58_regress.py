"""Red team 58 on the last merges (branch rt-regress3): see docs/explanation/attacks/.

What broke: since rt-integrity42 a name event in a watched session's ``records/`` (a record
added, removed or renamed there) no longer expires the server's copy of the session's
records; records/'s identity (its ctime) was to tell such changes. But the app takes that
identity after its own write (`identity_after_change`, after the directory's ``fsync``) and
keeps its copy under it: a record renamed onto by hand (``mv new records/b.txt``, a hard link,
an ``rm``) between the app's rename and that look moved the identity the copy was then kept
under, and its event was dropped. The session was answered without the change, and the next
upload, trusting the copy a minute for its floor, was dated before the record put back.
What changed: the record cache counts the names the app itself changed
(`RecordCache.changed`); the watch hands each name event to it (`RecordCache.entry`), and one
that is not the app's own expires the copy, as every name event did before.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import faults
import forked_app
import httpx
from session_files import by_hand


@faults.needs_strace
def test_a_record_renamed_onto_by_hand_during_an_upload_is_not_dropped_by_the_copy(
    tmp_path: Path,
) -> None:
    with forked_app.served(tmp_path) as (process, http, root):
        session_id = http.post("/sessions", json={"title": "by hand"}).json()["id"]
        files = f"/sessions/{session_id}/files"
        for name in ("a.txt", "b.txt"):
            assert http.put(f"{files}/{name}", content=b"xy").status_code == 201
        assert http.get(f"/sessions/{session_id}").status_code == 200  # now watched
        records = root / "sessions" / session_id / "records"
        # b.txt's record put back from a backup taken a day from now's clock (stepped
        # back since), renamed onto it as `mv` does, while the app uploads d.txt: after
        # its rename, before its look at records/ (held at the directory's fsync).
        ahead = (datetime.now(UTC) + timedelta(days=1)).isoformat(timespec="microseconds")
        backup = tmp_path / "b.txt"
        backup.write_text(
            json.dumps(
                by_hand({**json.loads((records / "b.txt").read_text()), "uploaded_at": ahead})
            )
        )
        answers: list[httpx.Response] = []
        with faults.attached(process.pid, "fsync,fdatasync:delay_enter=300000", records):
            upload = threading.Thread(
                target=lambda: answers.append(http.put(f"{files}/d.txt", content=b"d"))
            )
            upload.start()
            while not (records / "d.txt").exists() and upload.is_alive():
                time.sleep(0.002)
            os.rename(backup, records / "b.txt")
            assert upload.is_alive(), "the upload ended before its fsync was held"
            upload.join()
        assert answers[0].status_code == 201, answers[0].text
        listed = {f["name"]: f for f in http.get(f"/sessions/{session_id}").json()["files"]}
        # Before: b.txt as the app last wrote it (a second for reads, a minute for changes).
        assert listed["b.txt"]["uploaded_at"] == ahead, listed
        new = http.put(f"{files}/e.txt", content=b"e").json()
        # Before: dated now, a day before b.txt, which it is listed after.
        assert new["uploaded_at"] > ahead, (new, ahead)
