"""Where the server's CPU goes, thread by thread: a benchmark run under `cProfile`.

Runs another benchmark (by default ``bench/request_cpu.py --kinds create``; its options after
``--``) with ``bench/_thread_profile/sitecustomize.py`` loaded into ``app serve`` through
``PYTHONPATH``: every thread of the server is profiled by its own CPU clock. Then prints, for
each kind of thread (the event loop's ``main``, ``app-committer``, the sync helpers, anyio's
workers), its CPU seconds in all and the functions that used the most of it themselves
(``tottime``): for a system call, the kernel's time in it. cProfile's overhead inflates the
Python's share several times; compare system calls with system calls, and take a request's
cost from ``bench/request_cpu.py`` run without it.

Run: ``.venv/bin/python bench/thread_profile.py [--top 12] [-- --requests 2000 --kinds create]``
"""

from __future__ import annotations

import argparse
import os
import pstats
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=12, help="functions shown per thread kind")
    parser.add_argument(
        "--bench", default="request_cpu.py", help="the benchmark to run (a file in bench/)"
    )
    parser.add_argument("rest", nargs="*", help="the benchmark's options (after --)")
    args = parser.parse_args()
    rest = args.rest or ["--requests", "2000", "--rounds", "1", "--kinds", "create"]
    with tempfile.TemporaryDirectory(prefix="thread-profile-") as out:
        env = {
            **os.environ,
            "THREAD_PROFILE_OUT": f"{out}/p",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(BENCH / "_thread_profile"), os.environ.get("PYTHONPATH")) if p
            ),
        }
        subprocess.run([sys.executable, str(BENCH / args.bench), *rest], env=env, check=True)
        # Only the server's threads: the client's process is profiled too, and told apart
        # by its threads' names (the server's name its committer, sync helpers or workers).
        by_pid: dict[str, list[Path]] = defaultdict(list)
        for path in Path(out).glob("p.*.prof"):
            by_pid[path.name.split(".")[1]].append(path)
        for pid, paths in sorted(by_pid.items()):
            kinds: dict[str, list[Path]] = defaultdict(list)
            for path in paths:
                name = path.name.split(".")[2]
                kinds[name.split("_")[0] if name.startswith("AnyIO") else name].append(path)
            if not any(kind.startswith(("app-", "AnyIO")) for kind in kinds):
                continue  # a client's process
            print(f"\nprocess {pid}")
            for kind, files in sorted(kinds.items()):
                stats = pstats.Stats(*map(str, files))
                total = stats.total_tt  # type: ignore[attr-defined]
                print(f"  {kind} ({len(files)} thread(s)): {total:.3f} s of CPU")
                rows = sorted(
                    stats.stats.items(),  # type: ignore[attr-defined]
                    key=lambda item: item[1][2],
                    reverse=True,
                )
                for (file, line, function), (_, calls, own, _, _) in rows[: args.top]:
                    where = function if file == "~" else f"{Path(file).name}:{line}({function})"
                    print(f"    {own:8.3f} s  {calls:8d} calls  {where}")


if __name__ == "__main__":
    main()
