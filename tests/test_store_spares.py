"""Spare staging directories made ahead of creates (`app.store.spares`): what a create that
takes one promises, what a crash leaves, and that the pool never outlives its root's hold."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from app.store import Store
from app.store.spares import SparePool

_WAIT = 30.0


def _spares(store: Store) -> list[str]:
    return sorted(p.name for p in store.sessions_dir.iterdir() if p.name.startswith(".spare-"))


def _pool(store: Store, count: int) -> SparePool:
    store.keep_spares(count)
    pool = store.root.store_state.spares
    assert pool is not None
    assert pool.wait_ready(count, _WAIT), "the pool never filled"
    return pool


def _record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path fsynced from now on, in order (the real fsync still runs)."""
    synced: list[str] = []
    real: Callable[[int], None] = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_a_spare_is_durable_before_it_is_ready_and_a_create_in_it_before_its_answer(
    app_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = _record_fsyncs(monkeypatch)
    pool = _pool(app_store, 3)
    where = str(app_store.sessions_dir)
    spares = _spares(app_store)
    assert len(spares) == 3
    # Each spare's directory (its empty session.json's entry), then sessions/ once.
    assert sorted(synced[:3]) == [f"{where}/{name}" for name in spares]
    assert synced[3:] == [where]
    inodes = {os.lstat(f"{where}/{name}").st_ino: name for name in spares}
    del synced[:]

    session = app_store.create_session("in a spare", {"k": 1})
    taken = inodes[os.lstat(f"{where}/{session['id']}").st_ino]
    # The file's bytes and size, then the rename's entry in sessions/, before the return.
    assert synced[:2] == [f"{where}/{taken}/session.json", where]
    stored = json.loads((app_store.sessions_dir / session["id"] / "session.json").read_text())
    assert stored == {k: v for k, v in session.items() if k != "files"}
    assert app_store.get_session(session["id"]) == session
    assert not pool.knows(taken)
    assert taken not in _spares(app_store)


def test_spares_are_never_sessions_and_a_check_finds_nothing(app_store: Store) -> None:
    _pool(app_store, 4)
    made = [app_store.create_session(f"s{i}")["id"] for i in range(6)]
    assert _spares(app_store), "the pool keeps spares"
    assert app_store.session_ids() == made
    page = app_store.list_sessions(limit=100)
    assert ([s["id"] for s in page.items], page.total) == (made, 6)
    assert json.loads(app_store.list_sessions_json(limit=100))["total"] == 6
    assert app_store.check().findings == []
    assert app_store.check(repair=True).findings == []
    assert _spares(app_store), "a check removes none of the live pool's spares"


def test_a_clean_close_removes_the_ready_spares(app_store: Store) -> None:
    _pool(app_store, 4)
    app_store.root.close()
    assert _spares(app_store) == []


def test_what_a_crash_leaves_is_cleared_by_the_next_writer_and_never_listed(
    app_store: Store,
) -> None:
    sessions = app_store.sessions_dir
    blank = sessions / ".spare-0123456789abcdef0123456789abcdef"  # made, ready
    blank.mkdir(mode=0o700)
    (blank / "session.json").touch()
    bare = sessions / ".spare-00000000000000000000000000000001"  # stopped before its file
    bare.mkdir(mode=0o700)
    torn = sessions / ".spare-00000000000000000000000000000002"  # a create stopped in it
    torn.mkdir(mode=0o700)
    (torn / "session.json").write_text('{"id": ')
    kept = app_store.create_session("kept")["id"]

    assert app_store.session_ids() == [kept]
    report = app_store.check()
    assert [(f.problem, f.target) for f in report.findings] == [
        ("unfinished-create", f"sessions/{torn.name}")
    ]
    Store(app_store.root)  # the next writer's start
    assert _spares(app_store) == []
    cleared = [
        line
        for line in map(json.loads, app_store.root.audit_path.read_text().splitlines())
        if line["operation"] == "clear-unfinished-create"
    ]
    assert [line["details"]["removed"] for line in cleared] == [[torn.name]]
    assert app_store.check().findings == []
    assert app_store.session_ids() == [kept]


def test_a_spare_changed_from_outside_is_not_written_into(app_store: Store) -> None:
    _pool(app_store, 1)
    (name,) = _spares(app_store)
    (app_store.sessions_dir / name / "session.json").write_text("not the pool's")
    session = app_store.create_session("elsewhere")  # takes the one spare ready
    assert not (app_store.sessions_dir / name).exists()
    assert app_store.get_session(session["id"]) == session
    stored = json.loads((app_store.sessions_dir / session["id"] / "session.json").read_text())
    assert stored["title"] == "elsewhere"
    assert app_store.check().findings == []


def test_a_lost_lock_stops_the_pool_and_its_spares_stay_for_the_next_holder(
    app_store: Store,
) -> None:
    pool = _pool(app_store, 2)
    before = _spares(app_store)
    assert app_store.root.lock is not None
    app_store.root.lock.path.unlink()
    assert pool.take() is not None
    assert pool.take() is not None  # below half: the refill runs, and finds the lock gone
    assert not pool.wait_ready(1, _WAIT)
    assert pool.lost is not None
    assert "was deleted" in pool.lost
    assert _spares(app_store) == before, "nothing made in a root no longer held"
    app_store.root.close()
    assert _spares(app_store) == before, "nothing removed from a root no longer held"


def test_a_reader_keeps_no_spares(app_store: Store, tmp_path: Path) -> None:
    from app.dataroot import open_root

    reader = Store(open_root(app_store.root.config, write=False))
    with pytest.raises(RuntimeError, match="read-only"):
        reader.keep_spares(4)
    assert reader.root.store_state.spares is None


_KILLED = """
import os, sys, time
from app import config as appconfig
from app.dataroot import open_root
from app.store import Store

store = Store(open_root(appconfig.load(), kind="server"))
store.keep_spares(8)
assert store.root.store_state.spares.wait_ready(8, 30)
print(store.create_session("before the kill")["id"], flush=True)
store.root.store_state.spares.take()  # keep the refill busy when the kill comes
time.sleep(60)
"""


def test_a_killed_holder_leaves_nothing_the_next_one_or_a_check_complains_about(
    app_store: Store, tmp_path: Path
) -> None:
    config = app_store.root.config
    app_store.root.close()
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_KILLED)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "APP_DATA_ROOT": str(app_store.root.path)},
    )
    assert child.stdout is not None
    made = child.stdout.readline().strip()
    child.send_signal(signal.SIGKILL)
    child.wait()
    from app.dataroot import open_root

    assert made, "the child created its session"
    assert _spares(app_store), "the killed holder left its spares"
    reader = Store(open_root(config, write=False))
    assert reader.session_ids() == [made]
    assert reader.check().findings == []
    writer = Store(open_root(config, kind="tests"))
    try:
        assert _spares(writer) == []
        assert writer.check().findings == []
        assert writer.session_ids() == [made]
    finally:
        writer.close()
