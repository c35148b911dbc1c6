"""Waits on a thread's event that end on its condition, or on the thread that would set it."""

from __future__ import annotations

import threading

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
