"""Red team 58 on integrity (branch rt-integrity42): see docs/explanation/attacks/.

What broke: a change of a session is dated after the session's newest change
(`app.store.records.change_floor`, red team 56), which took the app's own times by their text
(UTC to the microsecond, 32 characters ending in ``+00:00``) and parsed only the greatest.
fromisoformat reads other forms of that length as well: a space (or any character) between
date and time, as ``str(datetime)`` and ``isoformat(sep=" ")`` write it, or an ISO week date
(``2020-W01-1T...``). Such a record, written by a migration or a tool and read by the app as
a time, sorted against the app's own by a character that is not the time's: a week date
sorted after every real time and hid them all, and a space-separated time sorted before the
app's own of the same day. After a clock stepped back, an upload was dated before a file it
followed. What changed: only text of the app's own form (`_OWN_TIME`) is taken by its text;
every other is parsed. A session's ``updated_at`` was the greatest text too: a record whose
``uploaded_at`` was a number failed every read of the listing (500), and one past
``LATEST_FLOOR`` or a week date of a later year was its ``updated_at`` for good; it now takes
the records' newest as a time.

And a live server's change trusted its copy of the session's records a minute for that
floor (red team 57's speed-up) on no word of the kernel's events: a record rewritten in place
by hand (``cp`` of one record from a backup onto it) and an upload with no read between was
dated before it. A change now takes the watch's events first, and trusts the copy a minute
only where the watch covers the session (a second elsewhere, as a read); the app's own
additions and removals in ``records/`` no longer expire the copy (its identity tells them).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import forked_app
from session_files import by_hand
from test_change_floor import _edit

from app.config import Config
from app.storage import Storage


def test_a_time_of_another_form_of_the_same_length_is_not_missed_as_the_newest(
    app_store: Storage, app_config: Config
) -> None:
    store = app_store
    records = app_config.data_root / "sessions"
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0)
    latest = tomorrow.replace(hour=23, minute=59)
    for forms in (
        # The app's own form, and a later one of the same day as `str(datetime)` writes it.
        {"a.txt": tomorrow.isoformat(timespec="microseconds"), "b.txt": str(latest)},
        # A week date (the first of 2020's) that sorts after every real time.
        {
            "a.txt": latest.isoformat(timespec="microseconds"),
            "b.txt": "2020-W01-1T00:00:00.000000+00:00",
        },
    ):
        session_id = store.create_session("forms")["id"]
        for name, uploaded_at in forms.items():
            store.put_file(session_id, name, b"x")
            _edit(records / session_id / "records" / name, uploaded_at)
        assert all(len(text) == 32 for text in forms.values())
        new = store.put_file(session_id, "c.txt", b"c")
        # Before: dated tomorrow at 00:00 (after a.txt only), and now (after neither).
        assert datetime.fromisoformat(new["uploaded_at"]) > latest, (new, forms)


def test_a_record_time_of_any_kind_leaves_the_session_readable_and_its_updated_at_true(
    app_store: Storage, app_config: Config
) -> None:
    store = app_store
    later = (datetime.now(UTC) + timedelta(days=1)).replace(hour=23, minute=59)
    for uploaded_at, newest in (
        (5, None),  # before: TypeError for the session and the whole listing (a 500)
        ("9999-12-31T23:59:59.999999+00:00", None),  # before: its updated_at for good
        ("2030-W01-1T00:00:00.000000+00:00", "2029-12-31T00:00:00.000000+00:00"),
        (str(later), later.isoformat(timespec="microseconds")),
    ):
        session_id = store.create_session("times")["id"]
        store.put_file(session_id, "a.txt", b"a")
        _edit(app_config.data_root / "sessions" / session_id / "records" / "a.txt", uploaded_at)
        before = store.get_session(session_id)["updated_at"]
        assert newest is None or before == newest, (uploaded_at, before)
        new = store.put_file(session_id, "b.txt", b"b")
        session = store.get_session(session_id)
        # At least its newest file's time (the rename after it moves records/'s time on).
        assert session["updated_at"] >= new["uploaded_at"] > before, (uploaded_at, session)
        listed = [s for s in store.list_sessions(limit=1000).items if s["id"] == session_id]
        assert listed[0]["updated_at"] == session["updated_at"]


def test_a_record_rewritten_in_place_is_seen_by_the_next_change_with_no_read_between(
    tmp_path: Path,
) -> None:
    with forked_app.served(tmp_path) as (_process, http, root):
        for read_first in (True, False):  # a session read (watched) and one never read
            session_id = http.post("/sessions", json={"title": "in place"}).json()["id"]
            files = f"/sessions/{session_id}/files"
            assert http.put(f"{files}/a.txt", content=b"a").status_code == 201
            if read_first:
                assert http.get(f"/sessions/{session_id}").status_code == 200
            assert http.put(f"{files}/b.txt", content=b"b").status_code == 201
            # a.txt's record put back from a backup taken a day from now's clock, which
            # has since been stepped back: `cp` writes onto the record in place.
            record = root / "sessions" / session_id / "records" / "a.txt"
            ahead = (datetime.now(UTC) + timedelta(days=1)).isoformat(timespec="microseconds")
            data = json.dumps(by_hand({**json.loads(record.read_text()), "uploaded_at": ahead}))
            fd = os.open(record, os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, data.encode())
            finally:
                os.close(fd)
            new = http.put(f"{files}/c.txt", content=b"c").json()
            # Before: dated now, a day before a.txt, which it is listed after.
            assert new["uploaded_at"] > ahead, (read_first, new, ahead)
