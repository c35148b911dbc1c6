"""What one new inode costs on each filesystem: the floor under `app_store`'s cost per test.

Usage (from the project directory)::

    .venv/bin/python bench/inodes.py [--rounds 7] [--count 300] [--dir /tmp --dir /dev/shm]

A test's data root is six new inodes (the root, `sessions/`, `.trash/`, `.tmp/`, the lock
file, the profile stamp); a test that takes `tmp_path` and writes a file makes one fewer
directory and one file. Per round and per directory, in turn: ``--count`` directories made
with ``mkdir`` in a new directory, then a file created (``O_CREAT | O_EXCL``) in each, then
all of it removed, as pytest removes old base temporary directories. Reported: the median
and range over the rounds of the microseconds per ``mkdir`` and per create. What a test's
root costs the filesystem alone is about ``4 x mkdir + 2 x create``, of which the
``tmp_path`` baseline pays one create.

Nothing here is the app's code: it measures the disk, in the same run as `bench/fixtures.py`
if run beside it, so that the fixtures' figures can be read against it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time


def one_round(base: str, count: int) -> tuple[float, float]:
    """Microseconds per mkdir and per file create, ``count`` of each in a new directory."""
    work = tempfile.mkdtemp(prefix="bench-inodes-", dir=base)
    try:
        started = time.perf_counter()
        for number in range(count):
            os.mkdir(f"{work}/d{number}", 0o700)  # noqa: PTH102 - the call alone, no Path
        made = time.perf_counter()
        for number in range(count):
            flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
            os.close(os.open(f"{work}/d{number}/f", flags, 0o600))
        created = time.perf_counter()
    finally:
        shutil.rmtree(work)
    return (made - started) / count * 1e6, (created - made) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--dir", action="append", help="repeatable (default: /tmp, /dev/shm)")
    args = parser.parse_args()
    bases = args.dir or ["/tmp", "/dev/shm"]
    results: dict[str, list[tuple[float, float]]] = {base: [] for base in bases}
    for _ in range(args.rounds):
        for base in bases:  # interleaved, so both see the same moments of the machine
            results[base].append(one_round(base, args.count))
    print(f"{args.rounds} rounds of {args.count} mkdir and {args.count} creates, interleaved")
    print(f"{'directory':<12} {'mkdir (us)':>24} {'create (us)':>24} {'a root (ms)':>12}")
    for base, rounds in results.items():
        mkdirs = [m for m, _ in rounds]
        creates = [c for _, c in rounds]
        mkdir, create = statistics.median(mkdirs), statistics.median(creates)
        print(
            f"{base:<12} {mkdir:8.1f} ({min(mkdirs):6.1f}-{max(mkdirs):6.1f}) "
            f"{create:8.1f} ({min(creates):6.1f}-{max(creates):6.1f}) "
            f"{(4 * mkdir + create) / 1000:12.2f}"
        )
    print("a root: 4 mkdir + 2 creates, less the tmp_path test's own create")


if __name__ == "__main__":
    main()
