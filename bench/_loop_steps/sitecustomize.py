"""Loaded by ``bench/loop_steps.py`` into ``app serve`` (through ``PYTHONPATH``): time every
step the server's event loop runs. Not part of the app; inert unless ``LOOP_STEPS_OUT`` is set.

Each task's coroutine is wrapped so that each ``send``/``throw`` (one task step) is timed, in
wall time and in the loop thread's CPU time, and so are the HTTP protocol's callbacks
(``data_received`` parses heads with h11 and answers ``GET /health``). A timer due every
millisecond records how late it runs (one pass of the loop). Each cyclic garbage collection
is timed through ``gc.callbacks`` (generation, wall time, on the loop's thread or not, objects
collected; after a full one, how many objects the next will walk, counted outside its time), and
the process's resident memory is sampled every second. At exit the records go to
``$LOOP_STEPS_OUT.<pid>`` as JSON, at most `CAP` of each.
"""

from __future__ import annotations

import os

OUT = os.environ.get("LOOP_STEPS_OUT")
if OUT:
    import asyncio
    import atexit
    import collections
    import collections.abc
    import gc
    import json
    import re
    import resource
    import sys
    import threading
    import time
    from pathlib import Path
    from typing import Any

    CAP = 400_000  # records kept, about 40 MB of JSON at most
    _ID = re.compile(r"[0-9a-f]{32}")
    _HANDLERS = ("data_received", "connection_made", "connection_lost", "eof_received")
    # start, wall, thread CPU, label, and the loop thread's voluntary and involuntary context
    # switches inside the step (getrusage, which keeps the interpreter lock): the loop's
    # thread makes no blocking call in a step, so a voluntary one is a wait for that lock
    # (a system call gave it up and another thread took it), an involuntary one a preemption.
    steps: list[tuple[float, float, float, str, int, int]] = []
    late: list[tuple[float, float]] = []
    # start, wall, thread CPU, generation, on the loop's thread, collected, objects left after
    gc_runs: list[tuple[float, float, float, int, bool, int, int]] = []
    rss: list[tuple[float, int]] = []  # when, resident bytes
    perf, cpu = time.perf_counter, time.thread_time

    def _switches() -> tuple[int, int]:
        usage = resource.getrusage(resource.RUSAGE_THREAD)
        return usage.ru_nvcsw, usage.ru_nivcsw

    def _record(
        start: float, wall: float, used: float, label: str, before: tuple[int, int]
    ) -> None:
        """One step, with the switches made since ``before`` (`_switches` at its start)."""
        if len(steps) < CAP:
            voluntary, involuntary = _switches()
            steps.append((start, wall, used, label, voluntary - before[0], involuntary - before[1]))

    _page = os.sysconf("SC_PAGE_SIZE")
    _began: list[float] = []
    _loop_thread: list[int] = []
    # LOOP_STEPS_GC_TYPES=1: what the collections find, by type (gc.DEBUG_SAVEALL keeps the
    # garbage in gc.garbage, tallied and dropped after each collection; the timings of such a
    # run are not the collector's usual ones).
    garbage_types: collections.Counter[str] = collections.Counter()
    _TALLY = os.environ.get("LOOP_STEPS_GC_TYPES") == "1"

    def _on_collection(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _began[:] = [perf(), cpu()]
            return
        if not _began or len(gc_runs) >= CAP:
            return
        start, used = _began
        _began.clear()
        wall, used = perf() - start, cpu() - used
        generation = info["generation"]
        # What the next full collection walks: every tracked object not frozen. Counted
        # after the timing, and only after full collections (a few per run).
        left = len(gc.get_objects(2)) if generation == 2 else -1
        on_loop = bool(_loop_thread) and threading.get_ident() == _loop_thread[0]
        gc_runs.append((start, wall, used, generation, on_loop, info["collected"], left))
        if _TALLY:
            garbage_types.update(type(found).__qualname__ for found in gc.garbage)
            gc.garbage.clear()

    def _sample_rss() -> None:
        resident = int(Path("/proc/self/statm").read_text().split()[1])
        rss.append((perf(), resident * _page))

    def _label(coro: Any) -> str:
        frame = getattr(coro, "cr_frame", None)
        scope = getattr(frame.f_locals.get("self"), "scope", None) if frame else None
        if isinstance(scope, dict) and "path" in scope:
            big = "?limit=1000" if b"limit=1000" in scope.get("query_string", b"") else ""
            return f"{scope['method']} {_ID.sub('{id}', scope['path'])}{big}"
        return str(getattr(coro, "__qualname__", type(coro).__name__))

    class _Timed(collections.abc.Coroutine):  # type: ignore[type-arg]
        def __init__(self, coro: Any) -> None:
            self.coro, self.label, self.n = coro, "", 0

        def send(self, value: Any) -> Any:
            self.label = self.label or _label(self.coro)
            switched = _switches()
            start, used = perf(), cpu()
            try:
                return self.coro.send(value)
            finally:
                wall, used = perf() - start, cpu() - used
                self.n += 1
                _record(start, wall, used, f"{self.label} #{self.n}", switched)

        def throw(self, *args: Any) -> Any:
            return self.coro.throw(*args)

        def close(self) -> None:
            self.coro.close()

        def __await__(self) -> Any:
            return self.coro.__await__()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.coro, name)

    def _timed_handler(name: str, original: Any) -> Any:
        def timed(self: Any, *args: Any) -> Any:
            switched = _switches()
            start, used = perf(), cpu()
            try:
                return original(self, *args)
            finally:
                wall, used = perf() - start, cpu() - used
                cycle = getattr(self, "cycle", None)
                what = ""
                if name == "data_received" and cycle is not None:
                    what = f" {cycle.scope['method']} {_ID.sub('{id}', cycle.scope['path'])}"
                _record(start, wall, used, f"protocol.{name}{what}", switched)

        return timed

    def _tick(loop: asyncio.AbstractEventLoop, due: float) -> None:
        now = time.perf_counter()
        if len(late) < CAP:
            late.append((now, now - due))
        if not rss or now - rss[-1][0] >= 1.0:
            _sample_rss()
        loop.call_later(0.001, _tick, loop, now + 0.001)

    _run = asyncio.Runner.run

    def _instrumented_run(self: asyncio.Runner, coro: Any, **kwargs: Any) -> Any:
        if "serve" not in sys.argv:
            return _run(self, coro, **kwargs)

        async def instrumented() -> Any:
            loop = asyncio.get_running_loop()
            loop.set_task_factory(lambda loop, c, **kw: asyncio.Task(_Timed(c), loop=loop, **kw))
            for found in gc.get_objects():
                if isinstance(found, type) and found.__name__ == "BoundedH11Protocol":
                    for name in _HANDLERS:
                        setattr(found, name, _timed_handler(name, getattr(found, name)))
            loop.call_later(0.001, _tick, loop, time.perf_counter() + 0.001)
            _loop_thread.append(threading.get_ident())
            gc.callbacks.append(_on_collection)
            if _TALLY:
                gc.set_debug(gc.DEBUG_SAVEALL)
            return await coro

        return _run(self, instrumented(), **kwargs)

    asyncio.Runner.run = _instrumented_run  # type: ignore[method-assign]

    @atexit.register
    def _dump() -> None:
        if steps:
            record = {"steps": steps, "late": late, "collections": gc_runs, "rss": rss}
            record["garbage_types"] = dict(garbage_types.most_common(40))
            Path(f"{OUT}.{os.getpid()}").write_text(json.dumps(record))
