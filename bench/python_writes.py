"""What the run's check of Python's writes (`app.testing.python_writes`) costs a write.

Each round runs three fresh processes in turn, each doing `--writes` times what a test does
most (open a file for writing, write a byte, close, replace another name with it) in a
directory of `--depth` levels under `--dir`: without the hook (the baseline), with it as a
test's own code meets it (every call checked), and with it as the app's own code meets it
(each call made from a function compiled from a file of the app's package: checked as a
test's since red team 76 on the guard, when the app's calls stopped being exempt). Then
the same for reads (open the file, read it, close), the most of a process's opens: without
the hook and with it (the event let go at its flags). One root is
protected, elsewhere. Prints each variant's median process CPU per write or read (user +
system, from ``wait4``: whole processes) and its ratio to the baseline of the same rounds.

    python bench/python_writes.py --rounds 7 --writes 20000
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = """
import os, sys, tempfile, time
from pathlib import Path
import app
from app.sandbox import Protected
from app.testing import python_writes

variant, directory, protected, writes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
SOURCE = '''
import os
def work(directory, writes):
    for i in range(writes):
        name = os.path.join(directory, "f%d" % (i % 50))
        with open(name, "w") as handle:
            handle.write("x")
        os.replace(name, os.path.join(directory, "g%d" % (i % 50)))
def read(directory, reads):
    name = os.path.join(directory, "r")
    with open(name, "w") as handle:
        handle.write("x")
    for _ in range(reads):
        with open(name) as handle:
            handle.read()
'''
# The app's variant: the same function, compiled as if from a file of the app's package.
own = os.path.join(os.path.dirname(app.__file__), "bench_writes.py")
filename = own if variant == "app" else "<bench>"
space = {}
exec(compile(SOURCE, filename, "exec"), space)
if variant not in ("none", "none-read"):
    python_writes.guard([Protected.of("production", Path(protected))], {})
space["read" if variant.endswith("read") else "work"](directory, writes)
"""


def _cpu(variant: str, directory: Path, protected: Path, writes: int) -> float:
    process = subprocess.Popen(
        [sys.executable, "-c", _CHILD, variant, str(directory), str(protected), str(writes)]
    )
    _, status, usage = os.wait4(process.pid, 0)
    if status:
        raise SystemExit(f"the {variant} child failed ({status})")
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--writes", type=int, default=20_000)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        directory = Path(work, *(f"d{i}" for i in range(args.depth)))
        directory.mkdir(parents=True)
        protected = Path(work, "production")
        (protected / "sessions").mkdir(parents=True)
        # The process's start alone, subtracted from each variant's CPU.
        start = statistics.median(_cpu("none", directory, protected, 0) for _ in range(3))
        found: dict[str, list[float]] = {
            "none": [],
            "test": [],
            "app": [],
            "none-read": [],
            "read": [],
        }
        for _ in range(args.rounds):
            for variant, runs in found.items():
                runs.append(_cpu(variant, directory, protected, args.writes) - start)
    for variant, runs in found.items():
        median = statistics.median(runs)
        base = statistics.median(found["none-read" if variant.endswith("read") else "none"])
        print(
            f"{variant:9} {median / args.writes * 1e6:7.2f} µs a "
            f"{'read' if variant.endswith('read') else 'write'} "
            f"(median of {args.rounds}), {median / base:5.2f} x the baseline"
        )


if __name__ == "__main__":
    main()
