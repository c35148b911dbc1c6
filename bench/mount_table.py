"""What an open of a data root pays to read the mount table, this checkout against another.

Usage (from the project directory)::

    .venv/bin/python bench/mount_table.py [--against DIR] [--mounts 300] [--rounds 5]

Every open of a data root asks the mount table twice: the mounts inside the root (a rename
cannot cross one) and the root's filesystem type (reads on a network filesystem may wait).
Both come from ``app.dataroot`` (``mounts_inside``, ``filesystem_type``), timed here in a
child process per checkout, 5,000 calls a round, the median of the rounds. ``--mounts N``
(root only) first mounts N small tmpfs in a temporary directory, as a host running
containers has hundreds, and unmounts them at the end; the table's size is reported.

Also the check before every write (``_MountTable.generation``: whose table, then a poll of
it), in CPU time, 100,000 calls a round, the best of the rounds; the checkouts are measured
in turn twice (``--turns``), as the load on a shared machine changes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent

_TIME = """
import statistics, sys, time
from pathlib import Path
from app import dataroot
root = Path(sys.argv[1])
def per_call(call, rounds, count=5000):
    runs = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(count):
            call()
        runs.append((time.perf_counter() - started) / count * 1e6)
    return statistics.median(runs)
rounds = int(sys.argv[2])
inside = per_call(lambda: dataroot.mounts_inside(root), rounds)
kind = per_call(lambda: dataroot.filesystem_type(root), rounds)
check = dataroot._MOUNTS.generation
check()
cpu = []
for _ in range(rounds):
    started = time.process_time()
    for _ in range(100000):
        check()
    cpu.append((time.process_time() - started) * 10)
print(f"{inside:.1f} {kind:.1f} {min(cpu):.2f}")
"""


def measure(tree: Path, root: Path, rounds: int) -> tuple[float, float, float]:
    done = subprocess.run(
        [sys.executable, "-c", _TIME, str(root), str(rounds)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tree,  # `-c` puts the current directory first on sys.path
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
    )
    inside, kind, check = done.stdout.split()
    return float(inside), float(kind), float(check)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="another checkout, measured in turn")
    parser.add_argument("--mounts", type=int, default=0, help="small tmpfs to mount first")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--turns", type=int, default=2, help="times each checkout is measured")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-mount-table-") as work:
        points = [Path(work) / f"m{number}" for number in range(args.mounts)]
        mounted = []
        try:
            for point in points:
                point.mkdir()
                options = ["-t", "tmpfs", "-o", "size=64k", "none", str(point)]
                subprocess.run(["mount", *options], check=True)
                mounted.append(point)
            size = len(Path("/proc/self/mountinfo").read_text().splitlines())
            root = Path(work) / "root"
            root.mkdir()
            trees = [("this checkout", PROJECT)]
            if args.against:
                trees.append((str(args.against), args.against))
            print(f"{size} mounts in the table; microseconds per call, median of {args.rounds}")
            for _ in range(args.turns):
                for name, tree in trees:
                    inside, kind, check = measure(tree, root, args.rounds)
                    print(f"  {name}: mounts_inside {inside:.1f}, filesystem_type {kind:.1f}, "
                          f"an open's two {inside + kind:.1f}; the check before a write "
                          f"{check:.2f} (CPU)")  # fmt: skip
        finally:
            for point in reversed(mounted):
                subprocess.run(["umount", "-l", str(point)], check=False)


if __name__ == "__main__":
    main()
