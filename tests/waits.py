"""Waits that end on their condition: a thread's event (or the end of the thread that would
set it), processes' ends."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

#: How often a wait looks at the thread (it measures nothing: the event ends it at once).
POLL = 0.01


def until_set(event: threading.Event, setter: threading.Thread | None, what: str) -> None:
    """Wait until `event` is set by the thread `setter`; fail, saying `what` never came, once
    `setter` ended without setting it (an exception it died of, a return it took). A bare
    ``event.wait()`` there hung the test, and the run, for good."""
    assert setter is not None, f"{what}: no thread was started to set it"
    while not event.wait(POLL):
        if not setter.is_alive():
            assert event.is_set(), f"{what}: never came; {setter.name} ended without it"
            return


def ended(pid: int) -> bool:
    """Whether process `pid` is gone, or a zombie: the run adopts orphans (the sandbox makes
    it a subreaper), and reaps them only when it gets to it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def until_ended(*pids: int) -> None:
    """Wait until every process of `pids` has `ended`: at once if it does; after a minute,
    for a hung test only, it returns and the caller's assertions name what outlived."""
    for _ in range(6000):
        if all(ended(pid) for pid in pids):
            return
        time.sleep(POLL)


#: How long `until` waits at most: a net under a wait for an event that may never come, where
#: a bare ``while not ...: time.sleep`` hung the test and the run; never a measure of speed
#: (what it waits for comes within a second or two, even under a load average of 26).
NET_SECONDS = 120


def until(
    condition: Callable[[], object],
    explain: Callable[[], str],
    alive: Callable[[], bool] | None = None,
    seconds: float = NET_SECONDS,
) -> None:
    """Wait until `condition()` holds, looking every `POLL`; fail with `explain()` (the output
    that says why: a server's log, a child's) at once when `alive()` says what would bring
    it has ended, or after `seconds` (`NET_SECONDS`) as a net."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert alive is None or alive(), f"ended before it came: {explain()}"
        assert time.monotonic() < deadline, f"never came in {seconds:g} s: {explain()}"
        time.sleep(POLL)
