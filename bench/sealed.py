"""What sealing a run's protected roots read-only (`app.testing.sealed`) costs a run and a test.

Each round runs two fresh processes in turn: one that imports the module and seals nothing
(the baseline), one that moves into a mount namespace of its own and seals `--roots` roots
(each a directory made under `--dir`), as a run's first process does as it starts. Each then
does `--checks` times what the plugin does after every test (`unsealed`: one ``statvfs`` a
root) and as many ``os.stat`` of the same root (the baseline of the check). Prints the median
process CPU of each variant (user + system, from ``wait4``: whole processes, the namespace's
creation and its end included), its difference from the baseline, and the median cost of a
check against a ``stat``. Needs ``CAP_SYS_ADMIN`` (root), as the seal does.

    python bench/sealed.py --rounds 9 --roots 3 --checks 5000
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
import os, sys, time
from pathlib import Path
from app.testing import sealed

variant, checks = sys.argv[1], int(sys.argv[2])
roots = [Path(p) for p in sys.argv[3:]]
if variant == "sealed":
    done, left = sealed.seal(roots, [])
    assert done == roots and not left, (done, left)
start = time.perf_counter_ns()
for _ in range(checks):
    sealed.unsealed(roots)
middle = time.perf_counter_ns()
for _ in range(checks):
    for root in roots:
        os.stat(root)
end = time.perf_counter_ns()
print((middle - start) / checks, (end - middle) / checks)
"""


def _child(variant: str, checks: int, roots: list[str]) -> tuple[float, float, float]:
    process = subprocess.Popen(
        [sys.executable, "-c", _CHILD, variant, str(checks), *roots],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)  # reaped here, with its rusage
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"bench/sealed.py: the {variant} child failed")
    check, stat = (float(word) for word in out.split())
    return usage.ru_utime + usage.ru_stime, check, stat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--roots", type=int, default=3)
    parser.add_argument("--checks", type=int, default=5000)
    parser.add_argument("--dir", default=None, help="where the roots are made (a temporary one)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/sealed.py: the seal needs CAP_SYS_ADMIN: run it as root")
    with tempfile.TemporaryDirectory(dir=args.dir) as base:
        roots = [str(Path(base, f"root{i}")) for i in range(args.roots)]
        for root in roots:
            Path(root, "sessions").mkdir(parents=True)
        cpu: dict[str, list[float]] = {"none": [], "sealed": []}
        checks: list[float] = []
        stats: list[float] = []
        for _ in range(args.rounds):
            for variant, used in cpu.items():
                spent, check, stat = _child(variant, args.checks, roots)
                used.append(spent)
                if variant == "sealed":
                    checks.append(check)
                    stats.append(stat)
    base_cpu = statistics.median(cpu["none"])
    sealed_cpu = statistics.median(cpu["sealed"])
    print(f"process CPU, median of {args.rounds} (each {args.checks} checks and stats):")
    print(f"  none   {base_cpu * 1e3:8.2f} ms  1.000x")
    print(
        f"  sealed {sealed_cpu * 1e3:8.2f} ms  {sealed_cpu / base_cpu:.3f}x "
        f"({(sealed_cpu - base_cpu) * 1e3:+.2f} ms)"
    )
    check, stat = statistics.median(checks), statistics.median(stats)
    print(
        f"a test's check of {args.roots} sealed roots: {check / 1e3:.2f} us, "
        f"against {stat / 1e3:.2f} us for a stat of each ({check / stat:.2f}x)"
    )


if __name__ == "__main__":
    main()
