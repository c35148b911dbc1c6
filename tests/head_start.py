"""Slow set-ups a serial run starts when collection ends, on the core its tests leave idle.

A serial run's tests keep one core busy. What a fixture or a test would otherwise start
when it is reached (the engines' start-ups, PostgreSQL ~0.7 s and ``weed mini`` ~1 s; the
docs site's ``mkdocs build``, ~5 s; part of the suite in a pytest subprocess next to live
servers, ~10 s; schemathesis against a server of its own, ~9 s; fifteen servers killed at
random instants, ~11 s; the hostile suites next to production's replica pair on the engines,
~19 s) runs meanwhile, one after the other, in a thread of this process, for the collected
tests that need it. The test or
fixture then takes the result (`result`): the same objects or outcome it would have made
itself, and an engine that cannot start raises its skip or failure there, in the test that
asked. Under xdist both cores are busy with tests, so nothing starts early (the fixtures
and tests start what they need, as before).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

_STARTED = pytest.StashKey[dict[str, "Future[Any]"]]()
_POOL = pytest.StashKey[ThreadPoolExecutor]()
#: Every head start by name, taken or not (`shared`).
_EVERY = pytest.StashKey[dict[str, "Future[Any]"]]()


def spare_core() -> bool:
    """Whether this run leaves a core idle: a serial one, not an xdist worker."""
    return not os.environ.get("PYTEST_XDIST_WORKER")


def wanted(session: pytest.Session, fixture: str) -> bool:
    """Whether a collected test uses `fixture`, and this run has a core to spare for it."""
    return spare_core() and any(
        fixture in getattr(item, "fixturenames", ()) for item in session.items
    )


def collected(session: pytest.Session, nodeid: str) -> pytest.Item | None:
    """The collected test `nodeid`, if this run has a core to spare for it."""
    found = [item for item in session.items if item.nodeid == nodeid]
    return found[0] if found and spare_core() else None


def _yield_to_the_tests() -> None:
    """Lower the head-start thread's CPU priority (Linux: per thread), and so that of what
    it starts from now on: a serial run's servers and children use the other core too, and
    at equal priority the head starts slowed every test that ran meanwhile."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def begin(
    config: pytest.Config,
    name: str,
    start: Callable[[], T],
    stop: Callable[[T], None],
    *,
    serves_tests: bool = False,
) -> None:
    """Queue `start` for the run's one head-start thread (one at a time: a second would
    take a core from the tests); `stop` its result at the end of the run if no fixture
    took it. Unless it `serves_tests` (an engine the tests then wait on, queued first),
    it runs at a lower CPU priority than the tests."""
    if not serves_tests:
        start = _niced(start)
    if _POOL not in config.stash:
        config.stash[_POOL] = pool = ThreadPoolExecutor(1, thread_name_prefix="head-start")
        config.add_cleanup(lambda: pool.shutdown(wait=True, cancel_futures=True))
    started = config.stash.setdefault(_STARTED, {})
    if name in started:
        return
    started[name] = future = config.stash[_POOL].submit(start)
    config.stash.setdefault(_EVERY, {})[name] = future

    def untaken() -> None:
        if config.stash[_STARTED].pop(name, None) is None or future.cancel():
            return  # a fixture took it (and stops it itself), or it never started
        try:
            value = future.result()
        except BaseException:  # a skip or a failure that no test asked to see
            return
        stop(value)

    config.add_cleanup(untaken)


def _niced(start: Callable[[], T]) -> Callable[[], T]:
    def niced() -> T:
        _yield_to_the_tests()
        return start()

    return niced


def result(config: pytest.Config, name: str, start: Callable[[], T]) -> T:
    """What `begin` started under `name` (waited for), or `start()` now if nothing was."""
    future = config.stash.get(_STARTED, {}).pop(name, None)
    if future is None:
        return start()
    value: T = future.result()
    return value


def shared(config: pytest.Config, name: str) -> Any:
    """What the head start `name` made, for a later head start that uses it too (an
    engine): it stays the fixture's to take and to stop. Queued earlier, it is done."""
    return config.stash[_EVERY][name].result()
