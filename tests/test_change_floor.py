"""A change of a session is dated after its newest change, kept as the session changes.

Each upload, replace and delete is dated no earlier than just after the newest
``uploaded_at`` among the session's records (`app.store.records.change_floor`, red team 56's
second round), so that a clock stepped back cannot list a change before the one it follows.
That read every record of the session on every change: at 9,000 files, a third of an
upload's time (bench/session_size.py). The record cache now keeps the newest time as writes
change the session (`RecordCache.newest`), folding the whole session again only when the
record it came from goes; these tests hold that what it keeps is always the fold of what
the session holds.

The fold is a true maximum now: before, a record whose time sorted last but was damage (the
year 9999, or a month 13) hid every real time in the session, and a change after a clock
stepped back was dated before the real newest one.
"""

from __future__ import annotations

import json
import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from session_files import by_hand

from app.config import Config
from app.storage import Storage
from app.store.concurrency import RecordCache
from app.store.records import change_floor


def _edit(path: Path, uploaded_at: str) -> None:
    """Rewrite a record's ``uploaded_at`` by hand, renamed in as an editor saves it."""
    edited = path.with_name(".edited")
    edited.write_text(
        json.dumps(by_hand({**json.loads(path.read_text()), "uploaded_at": uploaded_at}))
    )
    edited.replace(path)


def test_a_damaged_time_does_not_hide_the_newest_real_one(
    app_store: Storage, app_config: Config
) -> None:
    store = app_store
    session_id = store.create_session("damaged")["id"]
    store.put_file(session_id, "a.txt", b"a")
    store.put_file(session_id, "b.txt", b"b")
    records = app_config.data_root / "sessions" / session_id / "records"
    # b.txt was put a day from now's clock, which has since been stepped back; a.txt's time
    # is damage, and sorts after every real one.
    ahead = (datetime.now(UTC) + timedelta(days=1)).isoformat(timespec="microseconds")
    _edit(records / "b.txt", ahead)
    _edit(records / "a.txt", "9999-12-31T23:59:59.999999+00:00")
    new = store.put_file(session_id, "c.txt", b"c")
    assert new["uploaded_at"] > ahead, new
    # And again once the cache keeps the fold: the next change is dated after both.
    newer = store.put_file(session_id, "d.txt", b"d")
    assert newer["uploaded_at"] > new["uploaded_at"]
    store.delete_file(session_id, "c.txt")
    entry = store.list_trash()[-1]
    assert entry.file == "c.txt"
    assert entry.deleted_at.isoformat(timespec="microseconds") > newer["uploaded_at"]


def _time(rng: random.Random, base: datetime) -> str | int | None:
    moment = base + timedelta(seconds=rng.randrange(-1000, 1000))
    kind = rng.random()
    if kind < 0.75:
        return moment.isoformat(timespec="microseconds")
    if kind < 0.8:
        return moment.replace(tzinfo=None).isoformat()  # no zone: damage
    if kind < 0.85:
        return "9999-12-31T23:59:59.999999+00:00"  # past `LATEST_FLOOR`: damage
    if kind < 0.9:
        return "2026-13-01T00:00:00.000000+00:00"  # sorts as the app's own, never parses
    if kind < 0.95:
        return moment.astimezone(UTC).replace(tzinfo=None).isoformat() + "+03:00"
    return rng.choice([None, 5])


def test_the_kept_newest_change_is_always_the_fold_of_the_session() -> None:
    rng = random.Random(57)
    base = datetime(2026, 12, 5, tzinfo=UTC)
    for _ in range(40):
        cache = RecordCache()
        names = [f"f{i}" for i in range(rng.randrange(1, 8))]
        copy: dict[str, Any] = {}
        for name in rng.sample(names, rng.randrange(len(names) + 1)):
            copy[name] = {"name": name, "uploaded_at": _time(rng, base)}
        token = cache.token("s")
        cache.store("s", list(copy.values()), token, identity=1)
        for _ in range(30):
            found, kept = cache.newest("s", 1, float("inf"), change_floor)
            assert found and kept == change_floor(list(copy.values())), (copy, kept)
            name = rng.choice(names)
            if rng.random() < 0.35:
                copy.pop(name, None)
                cache.changed("s", name, None, identity=1)
            else:
                record = {"name": name, "uploaded_at": _time(rng, base)}
                copy[name] = record
                cache.changed("s", name, record, identity=1)
        # A write whose identity could not be read drops the copy: nothing is kept.
        cache.changed("s", names[0], None, identity=None)
        assert cache.newest("s", 1, float("inf"), change_floor) == (False, None)


def _watched_session(
    store: Storage, title: str, names: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> tuple[str, list[object]]:
    """A session of ``names`` in ``store``, watched as a server's are, and the list each
    later read of its whole records/ is added to."""
    import app.store.sessions as sessions

    if not store.watch_sessions():
        pytest.skip("inotify cannot be had here (no instance left): nothing is watched")
    session_id = store.create_session(title)["id"]
    for name in names:  # the first: the watch begins, and the copy is read again
        store.put_file(session_id, name, b"x")
    scans: list[object] = []
    scan = sessions.scan_records_linked
    monkeypatch.setattr(
        sessions, "scan_records_linked", lambda d, **kw: scans.append(d) or scan(d, **kw)
    )
    return session_id, scans


def test_a_change_a_second_after_the_last_does_not_read_the_whole_session_again(
    app_store: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A write trusted the copy of the records a second, as a read of an unwatched session
    # does: every change a second after the one before read every record again (490 ms at
    # 9,000 files on a busy machine). The floor trusts it a minute where the watch covers the
    # session, as a server's does (red team 58: on no word of the watch's, a record rewritten
    # in place by hand was missed); a record added or removed by hand still shows at once
    # (records/ changes identity).
    store = app_store
    session_id, scans = _watched_session(store, "a second on", ("a.txt", "b.txt"), monkeypatch)
    store.sessions.records_max_age = 0.0  # every copy a second old, or older
    store.put_file(session_id, "c.txt", b"c")
    store.delete_file(session_id, "a.txt")
    assert scans == []
    # A record put in by hand (a restore from a backup) is seen by the next change.
    records = Path(store.location) / "sessions" / session_id / "records"
    copied = {**json.loads((records / "c.txt").read_text()), "name": "d.txt"}
    (records / "d.txt").write_text(
        json.dumps(by_hand({**copied, "uploaded_at": "2999-01-01T00:00:00+00:00"}))
    )
    later = store.put_file(session_id, "e.txt", b"e")
    assert len(scans) == 1 and later["uploaded_at"] > "2999", later


def test_a_delete_that_sets_the_records_time_keeps_them_for_the_next_change(
    app_store: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A delete sets records/' times to its moment where the kernel's are earlier (a clock
    # stepped back, or the kernel's coarse clock a tick behind, which is often): the watch's
    # event for it, twice (records/' own watch and its session directory's), expired the kept
    # records like any other, and the session's next change read every record again. The
    # moment is put a day ahead here, so that the delete sets the times every time.
    import time_machine

    store = app_store
    names = ("a.txt", "b.txt", "c.txt")
    session_id, scans = _watched_session(store, "dated", names, monkeypatch)
    records = Path(store.location) / "sessions" / session_id / "records"
    before = records.stat().st_mtime_ns
    with time_machine.travel(datetime.now(UTC) + timedelta(days=1), tick=True):
        store.delete_file(session_id, "a.txt")
    assert records.stat().st_mtime_ns > before + 86_000 * 10**9  # the delete set it
    store.put_file(session_id, "d.txt", b"d")
    store.delete_file(session_id, "b.txt")
    assert scans == []
    # records/' times set by hand are not the app's: the next change reads them again.
    os.utime(records)
    store.put_file(session_id, "e.txt", b"e")
    assert len(scans) == 1
