"""`Committer`: the server's creates, made by threads of its own in batches (group commit).

On worker threads, each create paid for its hops more than for its work: about 25 system
calls, each releasing the interpreter lock to the busy event loop and waiting to take it
back, and with eight clients 47 to 58 voluntary context switches per create, more than half
of its CPU (bench/README.md, "Create-session throughput"). Here the event loop queues a
create and awaits a future; a committer thread (at most `THREADS`) takes every create
waiting, makes them together (`app.store.Store.create_sessions`: one fsync of ``sessions/``
for all), and answers the loop once for the batch. The disk's waits stay off the loop: a
filesystem that hangs holds these threads and the creates behind them, never ``/health``
or the other routes (red team 23).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final

from app.errors import ThreadLimitError, thread_limit

__all__ = ["Committer"]

#: At most this many creates in one batch: each holds two descriptors until its fsyncs.
MAX_BATCH: Final = 64
#: An idle thread ends after this many seconds; the next create starts another.
IDLE_SECONDS: Final = 5.0
#: Committer threads at most. With one, the kernel's part of the creates (ext4's inode
#: allocation: 1.1 to 1.5 ms of system CPU per create on this machine's /tmp) ran on one core
#: only, and creates were slower than on anyio's forty threads; two let it use both cores,
#: and on tmpfs two did as well as one (bench/README.md, the eighteenth session).
THREADS: Final = 2

Wanted = tuple[str, dict[str, Any] | None]
_Waiting = tuple[Wanted, asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class Committer:
    """Makes creates on threads of its own, each taking all those waiting at once.

    Args:
        create_many: makes a batch; returns each one's session or the error that refused
            it, in order (the local store's ``create_sessions``).
    """

    def __init__(
        self,
        create_many: Callable[[Sequence[Wanted]], Sequence[object]],
        doing: str = "POST /sessions",
    ) -> None:
        self._create_many = create_many
        self._doing = doing  # what a create is, in its refusal (ThreadLimitError)
        self._cond = threading.Condition()
        self._waiting: list[_Waiting] = []
        self._threads: set[threading.Thread] = set()  # running
        self._idle = 0  # of them, waiting for work
        self._in_hand = 0  # creates taken by a thread and not answered yet
        self._stopping = False

    async def create(self, title: str, metadata: dict[str, Any] | None) -> Any:
        """The session made (once durable), or the error that refused it, raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        waiting = ((title, metadata), loop, future)
        with self._cond:
            self._waiting.append(waiting)
            if self._idle:
                self._cond.notify()
            elif len(self._threads) < THREADS and (error := self._start()) and not self._threads:
                # No thread to take it, now or later: refused before anything was made (it
                # stayed queued, answered 500, and was made by the next thread that started).
                self._waiting.remove(waiting)
                raise error
        # A request cancelled while it waits (its client went away) leaves its create to the
        # batch, as a worker thread went on with it: `_answer` skips a cancelled future.
        return await future

    def stop(self) -> int:
        """Let idle threads end at once (the server stops); how many creates are in hand.

        `serve` calls it once the event loop has stopped serving, then :meth:`join`: a create
        a thread has begun ends before the server releases its data root, as a worker
        thread's does (`app.server.run`).
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            return self._in_hand + len(self._waiting)

    def join(self) -> None:
        """Wait for every committer thread to end (after :meth:`stop`)."""
        with self._cond:
            threads = list(self._threads)
        for thread in threads:
            thread.join()

    def _start(self) -> ThreadLimitError | None:
        """Start a committer thread (under ``_cond``); the refusal if none could start.

        Counted once started only: a thread that never started, counted, took a place of
        `THREADS` for ever (two such, and no create was ever made again) and was joined at
        stop, which raised.
        """
        # Daemon threads: an application that is never stopped (a test's client) does not
        # hold its interpreter's exit; `serve` joins them (see stop).
        thread = threading.Thread(target=self._run, name="app-committer", daemon=True)
        try:
            thread.start()
        except RuntimeError as error:
            refused = thread_limit(error, self._doing)  # at the process's limit of threads
            if refused is None:
                raise
            return refused
        # Before the thread can end: it takes `_cond`, which the caller holds.
        self._threads.add(thread)
        return None

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._waiting:
                        if self._stopping:
                            return
                        self._idle += 1
                        try:
                            woken = self._cond.wait(IDLE_SECONDS)
                        finally:
                            self._idle -= 1
                        if not woken and not self._waiting:
                            return
                    batch = self._waiting[:MAX_BATCH]
                    del self._waiting[:MAX_BATCH]
                    self._in_hand += len(batch)
                try:
                    self._commit(batch)
                finally:
                    with self._cond:
                        self._in_hand -= len(batch)
        finally:
            with self._cond:
                self._threads.discard(threading.current_thread())
                if self._waiting and not self._idle and not self._threads:
                    # Came between the last look and here, or left by a raise.
                    error = self._start()
                    if error is not None:  # nobody will make them: each refused, unmade
                        refused, self._waiting = self._waiting, []
                        _hand_over([(loop, future, error) for _, loop, future in refused])

    def _commit(self, batch: list[_Waiting]) -> None:
        results: Sequence[object]
        try:
            results = self._create_many([wanted for wanted, _, _ in batch])
        except Exception as error:  # the store's batch answers each one's error itself
            results = [error] * len(batch)
        _hand_over(
            [
                (loop, future, result)
                for (_, loop, future), result in zip(batch, results, strict=True)
            ]
        )


def _hand_over(
    answered: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], object]],
) -> None:
    # One hand-over to each event loop for the whole batch (one wake-up, not one each).
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], object]]] = {}
    for loop, future, result in answered:
        by_loop.setdefault(loop, []).append((future, result))
    for loop, answers in by_loop.items():
        with contextlib.suppress(RuntimeError):  # closed: nobody waits for these any more
            loop.call_soon_threadsafe(_answer, answers)


def _answer(answers: list[tuple[asyncio.Future[Any], object]]) -> None:
    for future, result in answers:
        if future.cancelled():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
