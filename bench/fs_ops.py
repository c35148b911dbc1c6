"""What the data root's filesystem charges for the operations a write makes, against tmpfs.

Every create, upload and delete makes new inodes (a directory, a file, a record's temporary
file, a trash manifest), fsyncs and renames. On some disks one of these costs far more than
the others, and no change to the server's Python can win that back: this measures each, in
a fresh directory of ``--work-dir`` (default: the system's temporary directory, where the
benchmarks put their data roots) and of ``/dev/shm`` (tmpfs, the baseline), in turn for
``--rounds`` rounds of ``--ops`` operations. Reported per operation: the median over rounds
of the wall time and of the process's system CPU time per call, for each directory, and the
ratio of the two directories' wall times.

Run: ``.venv/bin/python bench/fs_ops.py [--ops 300] [--rounds 5] [--work-dir DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median

BASELINE = "/dev/shm"


def _create(directory: str, i: int) -> None:
    os.close(os.open(f"{directory}/f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _write_fsync(directory: str, i: int) -> None:
    fd = os.open(f"{directory}/f{i}", os.O_WRONLY)
    try:
        os.write(fd, b"x" * 4096)
        os.fsync(fd)
    finally:
        os.close(fd)


def _rename(directory: str, i: int) -> None:
    Path(f"{directory}/f{i}").rename(f"{directory}/g{i}")


def _fsync_dir(directory: str, _: int) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mkdir(directory: str, i: int) -> None:
    Path(f"{directory}/d{i}").mkdir()


def _unlink(directory: str, i: int) -> None:
    Path(f"{directory}/g{i}").unlink()


def _durable_create(directory: str, i: int) -> None:
    # What a POST /sessions must ask of the kernel, nothing else (app.store.sessions): a
    # staging directory, session.json written and fsynced in it, the directory fsynced, one
    # rename into place and an fsync of the parent (shared by concurrent creates in the app).
    staging = f"{directory}/.new-s{i}"
    Path(staging).mkdir(mode=0o700)
    fd = os.open(f"{staging}/session.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"x" * 200)
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(staging, i)
    Path(staging).rename(f"{directory}/s{i}")
    _fsync_dir(directory, i)


# In this order: each works on what the one before left.
OPERATIONS: dict[str, Callable[[str, int], None]] = {
    "create an empty file": _create,
    "write 4 KiB + fsync": _write_fsync,
    "rename": _rename,
    "fsync the directory": _fsync_dir,
    "mkdir": _mkdir,
    "unlink": _unlink,
    "a create's durable steps": _durable_create,
}


def one_round(parent: str, ops: int) -> dict[str, tuple[float, float]]:
    """Each operation ``ops`` times in a fresh directory: (wall, system CPU) seconds per call."""
    with tempfile.TemporaryDirectory(prefix="bench-fs-", dir=parent) as directory:
        result = {}
        for name, operation in OPERATIONS.items():
            system = resource.getrusage(resource.RUSAGE_SELF).ru_stime
            start = time.perf_counter()
            for i in range(ops):
                operation(directory, i)
            wall = time.perf_counter() - start
            system = resource.getrusage(resource.RUSAGE_SELF).ru_stime - system
            result[name] = (wall / ops, system / ops)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=300, help="operations of each kind a round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work-dir", default=tempfile.gettempdir())
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (1 <= args.ops <= 10_000 and 1 <= args.rounds <= 50):
        parser.error("keep the run bounded: --ops in [1, 10000], --rounds in [1, 50]")
    if not Path(BASELINE).is_dir():
        parser.error(f"{BASELINE} (tmpfs, the baseline) does not exist here")

    rounds: dict[str, list[dict[str, tuple[float, float]]]] = {args.work_dir: [], BASELINE: []}
    for _ in range(args.rounds):
        for directory, results in rounds.items():  # in turn: drift hits both alike
            results.append(one_round(directory, args.ops))
    report: dict[str, dict[str, float]] = {}
    for name in OPERATIONS:
        row: dict[str, float] = {}
        for label, directory in (("disk", args.work_dir), ("tmpfs", BASELINE)):
            row[f"{label}_us"] = round(median([r[name][0] for r in rounds[directory]]) * 1e6, 1)
            row[f"{label}_sys_us"] = round(median([r[name][1] for r in rounds[directory]]) * 1e6, 1)
        row["ratio"] = round(row["disk_us"] / max(row["tmpfs_us"], 0.1), 1)
        report[name] = row
    if args.json:
        print(json.dumps({"work_dir": args.work_dir, "operations": report}, indent=2))
        return
    print(f"per call, median of {args.rounds} rounds of {args.ops}; disk = {args.work_dir}")
    head = f"  {'operation':<24} {'disk us':>9} {'(system)':>9} {'tmpfs us':>9} {'(system)':>9}"
    print(f"{head}  ratio")
    for name, row in report.items():
        print(
            f"  {name:<24} {row['disk_us']:>9} {row['disk_sys_us']:>9} {row['tmpfs_us']:>9}"
            f" {row['tmpfs_sys_us']:>9}  {row['ratio']:>5}"
        )
    print(f"load average {[round(x, 2) for x in os.getloadavg()]}")


if __name__ == "__main__":
    main()
