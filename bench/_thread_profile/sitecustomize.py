"""Loaded by ``bench/thread_profile.py`` into ``app serve`` (through ``PYTHONPATH``): profile
every thread of the server with `cProfile`, timed by that thread's own CPU clock
(`time.thread_time`), so that a thread waiting for the disk, a lock or a core costs nothing
and the kernel's work inside a system call (``mkdir``, ``open``, ``fsync``) counts where it is
made. Not part of the app; inert unless ``THREAD_PROFILE_OUT`` is set.

Each thread's profile goes to ``$THREAD_PROFILE_OUT.<pid>.<thread name>.<n>.prof`` when its
``run`` ends; the main thread's (the event loop's), and those of daemon threads still
running, at exit. A daemon thread's call still in progress at exit (the sync helpers wait in
a lock's ``acquire``) is closed with the exiting thread's clock, so that one line of its
profile is not that thread's CPU: read its system calls, not its wait.

py-spy is not installed here, and cProfile's own calls cost several times the Python they
time: read its figures for where the CPU goes between the kinds of work, the system calls'
against the Python's, never as a request's cost (``bench/request_cpu.py`` measures that,
unprofiled).
"""

from __future__ import annotations

import os

OUT = os.environ.get("THREAD_PROFILE_OUT")
if OUT:
    import atexit
    import cProfile
    import itertools
    import threading
    import time

    _numbers = itertools.count()
    _main = cProfile.Profile(time.thread_time)
    _main.enable()
    _run = threading.Thread.run

    _running: dict[int, tuple[str, cProfile.Profile]] = {}  # threads still running

    def _dump(name: str, profile: cProfile.Profile) -> None:
        name = name.replace("/", "_").replace(".", "_")
        profile.dump_stats(f"{OUT}.{os.getpid()}.{name}.{next(_numbers)}.prof")

    def _profiled_run(self: threading.Thread) -> None:
        profile = cProfile.Profile(time.thread_time)
        _running[id(profile)] = (self.name, profile)
        profile.enable()
        try:
            _run(self)
        finally:
            profile.disable()
            if _running.pop(id(profile), None) is not None:
                _dump(self.name, profile)

    threading.Thread.run = _profiled_run  # type: ignore[method-assign]

    @atexit.register
    def _dump_at_exit() -> None:
        _main.disable()
        _dump("main", _main)
        # Daemon threads still running (the sync helpers wait for work until the process
        # ends): their counts so far, read while they wait.
        for name, profile in list(_running.values()):
            _dump(name, profile)
