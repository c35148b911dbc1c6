"""Store calls on worker threads, in two turns of the event loop instead of four.

Starlette's ``run_in_threadpool`` (anyio's ``to_thread.run_sync``) yields to the event loop
twice before the thread even starts: a cancellation checkpoint, then its thread limiter's.
Under load a turn of the loop is the cost that matters: with 50 clients it lasted about
17 ms, and a create, which awaits the store once, spent 32 ms of its 90 ms median reaching
its thread (bench/load.py). `asyncio`'s own executor hand-off starts the thread at once and
costs the two turns any await of a thread's result costs: one to take the result, one to
resume the route.

What anyio's default gives and this keeps: the call runs in a copy of the caller's context,
and a route cancelled while its call runs waits for the call to finish before it unwinds,
so that its clean-up (an upload's ``abort``, say) never races the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Final, ParamSpec, TypeVar

__all__ = ["outcome", "run_on_worker", "start_on_worker"]

P = ParamSpec("P")
T = TypeVar("T")

# As many as anyio's default limiter allows: store calls mostly wait on the disk (fsync),
# and a create's group commit shares one fsync among every create waiting for it.
WORKER_THREADS: Final = 40


@functools.cache
def _executor() -> ThreadPoolExecutor:
    # Made on first use, so a process that never serves starts no threads.
    return ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="app-worker")


# A forked child has none of its parent's threads: it makes a pool of its own.
os.register_at_fork(after_in_child=_executor.cache_clear)


def start_on_worker(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
    """Start ``fn(*args, **kwargs)`` on a worker thread now; :func:`outcome` awaits it."""
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return _executor().submit(call)


async def run_on_worker(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` on a worker thread; its result or its exception."""
    return await outcome(start_on_worker(fn, *args, **kwargs))


async def outcome(job: Future[T]) -> T:
    """The result (or exception) of a call started on a worker thread.

    A cancellation while the call runs is raised once it has returned; a call not yet
    started is dropped, as anyio drops it.
    """
    try:
        return await asyncio.wrap_future(job)
    except asyncio.CancelledError:
        # Cancelling the awaited wrapper cancelled `job` if it had not started; a started
        # one runs on, and the caller waits for it however often it is cancelled meanwhile.
        while not job.done():
            with contextlib.suppress(BaseException):  # its outcome belongs to nobody now
                await asyncio.wrap_future(job)
        raise
