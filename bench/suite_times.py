"""The test suite's seconds by file, from pytest's JUnit XML reports, side by side.

Usage (from the project directory)::

    .venv/bin/python -m pytest -p no:cacheprovider \\
        --junitxml=serial.xml -o junit_duration_report=total          # [-n 2]
    .venv/bin/python bench/suite_times.py serial.xml [other.xml ...] [--top 20] [--tests 10]

Each report gives one column: the seconds of every test of a file (set-up, call and
tear-down: ``junit_duration_report=total``; a module-scoped fixture counts in the first test
that asks for it), summed per file, the files ordered by the first report's figure, and a
total. ``--tests N`` lists the first report's N slowest tests too: under ``-n 2`` the longest
ones set the tail of the run. The wall time of a run is pytest's own last line, not a sum.

pytest's ``--durations=0`` prints the same per-phase figures, but per test only; the JUnit
report is the machine-readable form of them, read here with the standard library.
"""

from __future__ import annotations

import argparse
import collections
import xml.etree.ElementTree as ET  # our own pytest runs' reports, not untrusted input
from pathlib import Path


def per_test(report: Path) -> dict[str, float]:
    """Each test's seconds in `report`, by node id (``file::name[params]``)."""
    times: dict[str, float] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        module = case.get("classname", "")
        path = module.replace(".", "/") + ".py"
        times[f"{path}::{case.get('name')}"] = float(case.get("time", "0"))
    return times


def per_file(times: dict[str, float]) -> dict[str, float]:
    files: dict[str, float] = collections.defaultdict(float)
    for nodeid, seconds in times.items():
        files[nodeid.split("::", 1)[0]] += seconds
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path, help="JUnit XML files of pytest runs")
    parser.add_argument("--top", type=int, default=25, help="files to list (default 25)")
    parser.add_argument("--tests", type=int, default=0, help="slowest tests to list too")
    args = parser.parse_args()
    tests = [per_test(report) for report in args.reports]
    files = [per_file(times) for times in tests]
    order = sorted(files[0], key=files[0].__getitem__, reverse=True)
    order += sorted(set().union(*files[1:]) - set(order))
    names = " | ".join(report.name for report in args.reports)
    print(f"| file | {names} |")
    print("|---|" + "---:|" * len(files))
    for name in order[: args.top]:
        print(f"| {name} | " + " | ".join(f"{f.get(name, 0):.1f}" for f in files) + " |")
    rest = order[args.top :]
    if rest:
        sums = [sum(f.get(name, 0) for name in rest) for f in files]
        print(f"| {len(rest)} other files | " + " | ".join(f"{s:.1f}" for s in sums) + " |")
    print("| **all** | " + " | ".join(f"{sum(f.values()):.1f}" for f in files) + " |")
    if args.tests:
        print()
        slowest = sorted(tests[0].items(), key=lambda item: item[1], reverse=True)
        for nodeid, seconds in slowest[: args.tests]:
            print(f"{seconds:7.2f} s  {nodeid}")


if __name__ == "__main__":
    main()
