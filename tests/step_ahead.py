"""Steps of a loop that depend on no other step, the next one run while this one is checked.

The red teams' loops (tests/test_redteam_s18_crash_points.py,
tests/test_redteam_s20_store_refusals.py) run step N (a forked child that is crashed or
refused at its N-th change, on a fresh copy of one root), check what it left, and go on
until a step completes. No step reads what another left: each starts from its own copy. In
a serial run, whose tests leave a core idle (tests/head_start.py), `steps` runs step N + 1
on a second root, in a second zygote, while step N runs and is checked; the test still
checks every step, in order, on the root that step ran on. Under xdist both cores are busy
with tests, and the steps run one at a time on one root, as before.

A step started ahead of the one that ends the loop is waited for and thrown away: one
step's work more per loop, on the core that would have been idle.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import head_start

T = TypeVar("T")


def width() -> int:
    """How many steps run at once: two if this run leaves a core idle, else one."""
    return 2 if head_start.spare_core() else 1


def lanes(root: Path) -> list[Path]:
    """The roots steps run on, one per lane: `root`, and beside it a second one if a core is
    spare."""
    return [root, root.with_name(f"{root.name}-ahead")][: width()]


@contextmanager
def steps(run: Callable[[int, int], T], lanes: int) -> Iterator[Iterator[tuple[int, int, T]]]:
    """``(n, lane, run(n, lane))`` for n = 0, 1, 2... in order, until the caller stops
    asking. With two lanes, step n + 1 runs (in a thread: `run` waits on a child) while the
    caller checks step n; a lane is given its next step only once the caller has checked the
    one before (it may read what that step left in the lane's root). Leaving the ``with``
    waits for a step still running: none outlives it (a lane's zygote answers in order)."""
    results = _steps(run, lanes)
    try:
        yield results
    finally:
        results.close()


def _steps(run: Callable[[int, int], T], lanes: int) -> Generator[tuple[int, int, T]]:
    if lanes == 1:
        n = 0
        while True:
            yield n, 0, run(n, 0)
            n += 1
    with ThreadPoolExecutor(lanes, thread_name_prefix="step-ahead") as pool:
        pending: list[Future[T]] = [pool.submit(run, n, n) for n in range(lanes)]
        n = 0
        try:
            while True:
                lane = n % lanes
                yield n, lane, pending[lane].result()
                pending[lane] = pool.submit(run, n + lanes, lane)
                n += 1
        finally:
            # The caller stopped (its loop ended or it failed): the steps still running are
            # waited for, so that no child outlives the test's roots; their results unused.
            for future in pending:
                future.cancel()
            _wait(pending)


def _wait(futures: Sequence[Future[T]]) -> None:
    for future in futures:
        if not future.cancelled():
            future.exception()
