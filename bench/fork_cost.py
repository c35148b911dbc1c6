"""What a fork of a warm Python process costs the kernel, by what its child does.

The suite forks most of its children from warm interpreters (tests/forked_app.py,
tests/forked_pytest.py, app/testing/zygote.py, red team 20's and 18's step children): their
kernel time is the fork's copy of the parent's page tables (the parent's system time), then
the child's copy-on-write faults on every inherited page it writes (a reference count, an
object allocated into a pool the parent had begun) and its exit's teardown of the address
space (the child's system time, from ``wait4``). This makes a parent of about `--objects`
small strings (a zygote's heap of imports is a few hundred thousand objects), freezes them
out of the collector's sight as the zygotes do, and forks `--forks` children per mode:

- ``none``: the child exits at once (``os._exit``): the fork and the exit alone;
- ``alloc``: the child makes 20,000 small strings and exits;
- ``touch``: the child reads one object in every `--stride` of the parent's list (each read
  writes the object's reference count) and exits.

Prints one line per mode: the child's system and user milliseconds and minor faults, and
the parent's system milliseconds, per fork (means). ``perf record`` does not show a child's
exit on Linux 6.18 (no sample under ``do_exit``), which this does: `bench/README.md`,
"perf-kernel74".

    python bench/fork_cost.py --objects 300000 --forks 30
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=300_000)
    parser.add_argument("--forks", type=int, default=30)
    parser.add_argument("--stride", type=int, default=150)
    args = parser.parse_args()
    heap = [str(i) * 3 for i in range(args.objects)]
    gc.collect()
    gc.freeze()
    resident = Path("/proc/self/statm").read_text().split()[1]
    rss = int(resident) * os.sysconf("SC_PAGESIZE") >> 20
    print(f"parent: {args.objects} objects, {rss} MiB resident")
    for mode in ("none", "alloc", "touch"):
        child_sys = child_user = faults = 0.0
        before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        for _ in range(args.forks):
            pid = os.fork()
            if pid == 0:
                if mode == "alloc":
                    made = [str(j) * 3 for j in range(20_000)]
                    del made
                elif mode == "touch":
                    sum(len(s) for s in heap[:: args.stride])
                os._exit(0)
            _, _, usage = os.wait4(pid, 0)
            child_sys += usage.ru_stime
            child_user += usage.ru_utime
            faults += usage.ru_minflt
        parent_sys = resource.getrusage(resource.RUSAGE_SELF).ru_stime - before
        n = args.forks
        print(
            f"{mode:5s}  child system {1000 * child_sys / n:6.2f} ms  user "
            f"{1000 * child_user / n:5.2f} ms  minor faults {faults / n:6.0f}  "
            f"parent system {1000 * parent_sys / n:5.2f} ms"
        )


if __name__ == "__main__":
    main()
