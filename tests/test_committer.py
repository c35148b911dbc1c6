"""The server's creates in batches (`app.server.committer`) and the store's batch create.

The committer hands every create waiting to one call of the store; while one batch is on
the disk, the event loop goes on, and the next creates wait for the next batch. Each create
gets its own answer: its session, or the error that refused it alone.
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
