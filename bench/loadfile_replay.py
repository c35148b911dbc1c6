"""Replay `bash scripts/test`'s distribution of files to xdist workers from a run's seconds.

Usage (from the project directory)::

    .venv/bin/python -m pytest -n 3 --dist loadfile --no-loadscope-reorder -p no:cacheprovider \\
        --junitxml=run.xml -o junit_duration_report=total
    .venv/bin/python bench/loadfile_replay.py run.xml [--workers 3] [--last 12]

Under ``--dist loadfile`` a file is one unit, handed out in the order tests/conftest.py sorts
the items (``SLOWEST_FILES`` first, in that order, then every other file in collection order);
xdist (``LoadScopeScheduling``) gives a worker its next file once two or fewer of its tests are
left to report, so the run ends when the last of those units does. This replays that rule with
each test's seconds from the report (set-up, call and tear-down), for the conftest's order and
for every file longest first, and prints when each worker would end and which files it would
run last: whether the tail of a run is a straggler that another order would cut, or even.

A replay, not a measurement: each worker's tests take the seconds they took in the measured
run, whatever ran beside them (three workers share two cores, so a file's seconds depend on
its neighbours). Differences of a few seconds between orders are within that.
"""

from __future__ import annotations

import argparse
import ast
import collections
import xml.etree.ElementTree as ET  # our own pytest runs' reports, not untrusted input
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def file_of(classname: str) -> str:
    """The path of a JUnit ``classname``: ``tests.test_x`` (or ``tests.test_x.TestY``) is
    ``tests/test_x.py``, ``docs.how-to.page.md`` (a Markdown page's examples) the page."""
    if classname.endswith(".md"):
        return classname[: -len(".md")].replace(".", "/") + ".md"
    parts = classname.split(".")
    while len(parts) > 1 and parts[-1][:1].isupper():  # a test class, not a module
        parts.pop()
    return "/".join(parts) + ".py"


def tests_by_file(report: Path) -> dict[str, list[float]]:
    """Each file's tests' seconds, in the order the report lists them (a file's tests run in
    their order on one worker, and reach the report in it)."""
    files: dict[str, list[float]] = collections.defaultdict(list)
    for case in ET.parse(report).getroot().iter("testcase"):
        files[file_of(case.get("classname", ""))].append(float(case.get("time", "0")))
    return dict(files)


def slowest_files() -> list[str]:
    """tests/conftest.py's ``SLOWEST_FILES``, read from its source (importing the conftest
    would load the suite's plugins)."""
    tree = ast.parse((PROJECT / "tests" / "conftest.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "SLOWEST_FILES" for target in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise SystemExit("SLOWEST_FILES not found in tests/conftest.py")


def conftest_order(files: dict[str, list[float]]) -> list[str]:
    """The conftest's order: SLOWEST_FILES, then the rest as collected (``testpaths``:
    tests/ before docs/, each alphabetically)."""
    listed = [name for name in slowest_files() if name in files]
    rest = sorted(
        (name for name in files if name not in listed),
        key=lambda name: (not name.startswith("tests/"), name),
    )
    return listed + rest


def replay(
    order: list[str], files: dict[str, list[float]], workers: int
) -> tuple[list[float], list[list[tuple[float, str]]]]:
    """Each worker's end, and the files it ran with their start, under xdist's rule."""
    queue = collections.deque(order)
    clock = [0.0] * workers
    pending: list[collections.deque[float]] = [collections.deque() for _ in range(workers)]
    ran: list[list[tuple[float, str]]] = [[] for _ in range(workers)]

    def assign(worker: int) -> None:
        if queue:
            name = queue.popleft()
            pending[worker].extend(files[name])
            ran[worker].append((clock[worker], name))

    for worker in range(workers):
        assign(worker)
    for worker in range(workers):  # at least two units each to begin with, as xdist does
        if len(pending[worker]) <= 2:
            assign(worker)
    while any(pending):
        worker = min((w for w in range(workers) if pending[w]), key=clock.__getitem__)
        clock[worker] += pending[worker].popleft()
        if len(pending[worker]) <= 2:
            assign(worker)
    return clock, ran


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="JUnit XML of a -n N --dist loadfile run")
    parser.add_argument("--workers", type=int, default=3, help="xdist workers (default 3)")
    parser.add_argument("--last", type=int, default=3, help="last files to list per worker")
    args = parser.parse_args()
    files = tests_by_file(args.report)
    total = sum(map(sum, files.values()))
    print(f"{len(files)} files, {total:.1f} s of tests, {args.workers} workers")
    orders = {
        "conftest (SLOWEST_FILES, then as collected)": conftest_order(files),
        "every file longest first": sorted(files, key=lambda name: -sum(files[name])),
    }
    for label, order in orders.items():
        ends, ran = replay(order, files, args.workers)
        spread = max(ends) - min(ends)
        print(f"\n{label}: ends {', '.join(f'{end:.1f}' for end in ends)} s (spread {spread:.1f})")
        for worker, started in enumerate(ran):
            tail = ", ".join(f"{name} at {start:.1f}" for start, name in started[-args.last :])
            print(f"  worker {worker}: ... {tail}")


if __name__ == "__main__":
    main()
