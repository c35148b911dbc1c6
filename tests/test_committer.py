"""The server's creates in batches (`app.server.committer`) and the store's batch create.

The committer hands every create waiting to one call of the store; while one batch is on
the disk, the event loop goes on, and the next creates wait for the next batch. Each create
gets its own answer: its session, or the error that refused it alone. A batch's fsyncs are
made at once (`app.store.concurrency.SyncHelpers`): each exactly once, each answered, all of
them by the caller where no helper thread can start, and every one before the first rename
(one after another, the store's batch failed the last test: BrokenBarrierError).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from app.errors import BadRequestError, LockLostError
from app.lock import LOCK_FILE
from app.server.committer import Committer
from app.store import Store
from app.store.concurrency import SyncHelpers


class _Disk:
    """A ``create_many`` that waits while ``stalled`` is clear and records each batch."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.stalled = threading.Event()
        self.entered = threading.Event()
        self.go = threading.Event()

    def create_many(self, wanted: Sequence[tuple[str, Any]]) -> list[object]:
        self.batches.append([title for title, _ in wanted])
        self.entered.set()
        if self.stalled.is_set():
            self.go.wait()
        return [
            BadRequestError(f"refused {title}") if title == "bad" else {"id": title}
            for title, _ in wanted
        ]


def test_creates_waiting_behind_a_stalled_batch_go_together_and_the_loop_goes_on() -> None:
    disk = _Disk()
    disk.stalled.set()
    committer = Committer(disk.create_many)

    async def main() -> list[object]:
        first = asyncio.ensure_future(committer.create("first", None))
        await asyncio.to_thread(disk.entered.wait)
        # The first batch waits on its "disk": the loop still answers everything else.
        others = [
            asyncio.ensure_future(committer.create(title, {})) for title in ("a", "bad", "b", "c")
        ]
        for _ in range(20):
            await asyncio.sleep(0)
        assert not first.done() and not any(o.done() for o in others)
        disk.go.set()
        return await asyncio.gather(first, *others, return_exceptions=True)

    answers = asyncio.run(main())
    assert answers[0] == {"id": "first"}
    assert answers[1] == {"id": "a"} and answers[3:] == [{"id": "b"}, {"id": "c"}]
    assert isinstance(answers[2], BadRequestError) and str(answers[2]) == "refused bad"
    # Two batches at most took the four creates that came while the first was stalled.
    assert disk.batches[0] == ["first"]
    assert sorted(t for batch in disk.batches[1:] for t in batch) == ["a", "b", "bad", "c"]
    assert len(disk.batches) <= 3


def test_a_batch_that_raises_answers_each_create_with_the_error() -> None:
    def create_many(wanted: Sequence[tuple[str, Any]]) -> list[object]:
        raise OSError(24, "Too many open files")

    committer = Committer(create_many)

    async def main() -> list[object]:
        return await asyncio.gather(
            *(committer.create(str(n), None) for n in range(3)), return_exceptions=True
        )

    answers = asyncio.run(main())
    assert all(isinstance(a, OSError) and a.errno == 24 for a in answers), answers


def test_a_batch_makes_every_valid_session_durably_and_refuses_the_invalid_one_alone(
    app_store: Store,
) -> None:
    made = app_store.create_sessions([("one", {"k": 1}), ("two", []), ("three", None)])  # type: ignore[list-item]
    assert isinstance(made[1], BadRequestError) and "metadata" in str(made[1]), made[1]
    one, three = made[0], made[2]
    assert not isinstance(one, Exception) and not isinstance(three, Exception)
    assert one["id"] < three["id"]
    listed = [s["id"] for s in app_store.list_sessions(limit=10).items]
    assert listed == [one["id"], three["id"]]
    assert app_store.get_session(one["id"])["metadata"] == {"k": 1}
    sessions = app_store.root.sessions_dir
    assert not [p.name for p in sessions.iterdir() if p.name.startswith(".new-")]
    assert app_store.check(repair=False).findings == []


def test_a_batch_on_a_root_whose_lock_was_lost_makes_nothing(app_store: Store) -> None:
    (app_store.root.path / LOCK_FILE).unlink()
    made = app_store.create_sessions([("one", None), ("two", None)])
    assert all(isinstance(m, LockLostError) for m in made), made
    assert app_store.scan_ids() == []
    with pytest.raises(LockLostError):
        app_store.create_session("three")


def test_a_batch_of_syncs_is_made_at_once_each_step_once_and_each_answered_in_order() -> None:
    helpers = SyncHelpers(most=3)
    together = threading.Barrier(4, timeout=60)  # a hang, if they were one after another
    made: list[int] = []
    threads: set[int] = set()

    def step(n: int) -> None:
        threads.add(threading.get_ident())
        together.wait()
        made.append(n)
        if n == 2:
            raise OSError(5, "Input/output error")

    results = helpers.at_once(step, [0, 1, 2, 3])
    assert sorted(made) == [0, 1, 2, 3]
    assert [r is None for r in results] == [True, True, False, True]
    assert isinstance(results[2], OSError) and results[2].errno == 5
    assert threading.get_ident() in threads and len(threads) == 4
    # A second batch reuses the idle helpers and starts no more than the most.
    assert helpers.at_once(lambda n: None, list(range(10))) == [None] * 10
    assert helpers._threads <= 3


def test_syncs_whose_helpers_cannot_start_are_all_made_by_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refused(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    helpers = SyncHelpers(most=4)
    monkeypatch.setattr(threading.Thread, "start", refused)
    here = threading.current_thread()
    made: list[tuple[int, threading.Thread]] = []
    results = helpers.at_once(lambda n: made.append((n, threading.current_thread())), [0, 1, 2])
    assert results == [None, None, None]
    assert made == [(0, here), (1, here), (2, here)]
    assert helpers._threads == 0 and not helpers._batches  # nothing left queued


def test_a_store_batch_syncs_its_sessions_at_once_and_all_before_any_rename(
    app_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.store import sessions

    events: list[tuple[str, int]] = []
    together = threading.Barrier(3, timeout=60)  # a hang, if they were one after another
    sync, rename = sessions._Staging.sync, sessions._Staging.rename

    def synced(self: Any) -> None:
        together.wait()
        sync(self)
        events.append(("synced", threading.get_ident()))

    def renamed(self: Any, sessions_fd: int, *rest: Any) -> None:
        events.append(("rename", threading.get_ident()))
        rename(self, sessions_fd, *rest)

    monkeypatch.setattr(sessions._Staging, "sync", synced)
    monkeypatch.setattr(sessions._Staging, "rename", renamed)
    made = app_store.create_sessions([("one", None), ("two", None), ("three", None)])
    assert not [m for m in made if isinstance(m, Exception)], made
    assert [kind for kind, _ in events] == ["synced"] * 3 + ["rename"] * 3
    assert len({ident for kind, ident in events if kind == "synced"}) == 3
    assert app_store.check(repair=False).findings == []
