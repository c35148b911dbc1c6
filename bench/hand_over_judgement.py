"""The check after each test: what judging one process's registry entry costs, side by side.

Usage (from the project directory)::

    .venv/bin/python bench/hand_over_judgement.py [--calls 20000] [--rounds 5]

The hand-over looks at every process a test left running and at the run's long-lived ones
after each test (`app.sandbox._hand_on_descendants`). Session 65 judged an entry once per
what ``stat`` said of it; red team 66 on regress read it each time and judges it once per its
bytes (`app.sandbox._entry_judged`), since ``stat`` can say the same of two contents. This
times both on one unchanged entry (the common case: a memo hit), alternated in one process,
in CPU time: main's `stat` key and its two look-ups (copied here as they were) against this
tree's read, digest and the process's PID namespace (read once per process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app import sandbox

_READ: dict[tuple[object, ...], dict[str, Any] | None] = {}
_KEPT: dict[tuple[object, ...], bool] = {}


def _stat_key(entry: Path) -> tuple[object, ...] | None:
    try:
        seen = entry.stat()
    except OSError:
        return None
    return (str(entry), seen.st_ino, seen.st_size, seen.st_mtime_ns, seen.st_ctime_ns)


def _read_once(entry: Path) -> dict[str, Any] | None:
    key = _stat_key(entry)
    if key is None:
        return None
    if key not in _READ:
        _READ[key] = sandbox._entry_data(entry)
    return _READ[key]


def _kept(entry: Path, run: sandbox.Run, *, while_running: bool) -> bool:
    key = _stat_key(entry)
    if key is None:
        return False
    memo = (key, while_running, run.protected)
    if memo not in _KEPT:
        data = _read_once(entry)
        _KEPT[memo] = sandbox._kept_by_hand_on(data, run, while_running=while_running)
    return _KEPT[memo]


def by_stat(entry: Path, run: sandbox.Run) -> object:
    """Session 65's looks at one descendant after a test: `_a_run_inside`, then the check
    of an entry it does not keep."""
    if not _kept(entry, run, while_running=False):
        return None, _kept(entry, run, while_running=True)
    data = _read_once(entry)
    return "starting" if data is not None and data.get("starting") else "registered"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="hand-over-"))
    run = sandbox.Run(directory, os.getpid(), ())
    fields = sandbox._stat_fields(os.getpid())
    assert fields is not None
    child, started = os.getpid(), fields[1]  # a process whose namespace can be read
    written = {"pid": 1, "argv": ["pytest"] * 8, "sandbox": str(directory), "protected": []}
    # A handed-on entry, as the run's long-lived processes have (kept after a test, written
    # again at the end), and a run's inside this one (a pytest a test left running).
    kinds = {"handed on": {**written, "outlived": 2}, "a run's inside": written}
    for kind, data in kinds.items():
        entry = directory / kind.replace(" ", "-")
        entry.write_text(json.dumps(data))
        ways: dict[str, Callable[[], object]] = {
            "stat (session 65)": lambda entry=entry: by_stat(entry, run),
            "bytes (red team 66)": lambda entry=entry: sandbox._a_run_inside(
                entry, run, child, started
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.rounds):
            for name, way in ways.items():
                began = time.process_time()
                for _ in range(args.calls):
                    way()
                times[name].append((time.process_time() - began) / args.calls * 1e6)
        for name, each in times.items():
            shown = ", ".join(f"{value:.2f}" for value in each)
            median = statistics.median(each)
            print(f"{kind}, {name}: median {median:.2f} us of CPU an entry ({shown})")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
