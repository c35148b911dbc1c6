"""The CPU of a pytest command and of each of its tests, from a cgroup around the command.

Usage (from the project directory, as root: it makes a cgroup)::

    .venv/bin/python bench/cgroup_cpu.py run [--top 15] -- -n 1 -q -p no:randomly tests/x.py

``run`` makes a cgroup (v1 ``cpuacct``, else v2), starts ``.venv/bin/python -m pytest`` with
the arguments after ``--`` in it, with this module as a plugin (``-p cgroup_cpu``, found
through ``PYTHONPATH``), waits for the command and then for every process left in the cgroup,
and prints the cgroup's CPU (user + system, every descendant's: the zygotes' forks, the
servers, the engines, Chromium's renderers, which ``/usr/bin/time`` and ``RUSAGE_CHILDREN``
miss once they are reparented; bench/README.md, "perf-suite73b") and the tests that used most.

The plugin reads the cgroup's usage before and after each test's protocol (set-up, call,
tear-down) in the process that runs the test: under ``-n 1`` (or serially) one test at a time,
so the difference is that test's, with what ran beside it in the cgroup (a head start, the
incident's next case started ahead, a zygote's start for the first test that forks). The
file's total less the tests' sum is the run's own start and end (the controller, the worker,
their imports, module fixtures' tear-down). Under ``-n 2`` the tests overlap: read the
command's total only. Measurement only; nothing of the suite loads it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

#: Where the plugin appends one JSON line per test (set by ``run``).
OUT = "CGROUP_CPU_OUT"


def _own_cgroup() -> Path | None:
    """The cgroup directory this process is in, v1 ``cpuacct`` or v2 (None at the root)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpuacct" in controllers.split(","):
            return Path("/sys/fs/cgroup/cpuacct" + path) if path != "/" else None
        if controllers == "" and path != "/":
            return Path("/sys/fs/cgroup" + path)
    return None


def usage(cgroup: Path) -> float:
    """The cgroup's CPU so far, in seconds."""
    if (cgroup / "cpuacct.usage").exists():
        return int((cgroup / "cpuacct.usage").read_text()) / 1e9
    for line in (cgroup / "cpu.stat").read_text().splitlines():
        if line.startswith("usage_usec "):
            return int(line.split()[1]) / 1e6
    raise RuntimeError(f"no CPU usage in {cgroup}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None]:
    out, cgroup = os.environ.get(OUT), _own_cgroup()
    if not out or cgroup is None:
        yield
        return
    before, began = usage(cgroup), time.monotonic()
    yield
    line = {"test": item.nodeid, "cpu": usage(cgroup) - before, "wall": time.monotonic() - began}
    with Path(out).open("a") as lines:
        lines.write(json.dumps(line) + "\n")


def _make_cgroup() -> Path:
    base = Path("/sys/fs/cgroup/cpuacct")
    base = base if (base / "cpuacct.usage").exists() else Path("/sys/fs/cgroup")
    cgroup = base / f"bench-cgroup-cpu-{os.getpid()}"
    cgroup.mkdir()
    return cgroup


def run(pytest_args: list[str], top: int) -> int:
    cgroup = _make_cgroup()
    lines = Path(tempfile.mkdtemp(prefix="cgroup-cpu-")) / "tests.jsonl"
    here = str(Path(__file__).resolve().parent)
    env = {**os.environ, OUT: str(lines)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
    command = [".venv/bin/python", "-m", "pytest", "-p", "cgroup_cpu", *pytest_args]
    began = time.monotonic()
    try:
        # The child joins the cgroup before it execs ("0": the writing process).
        join = lambda: (cgroup / "cgroup.procs").write_text("0")  # noqa: E731
        done = subprocess.run(command, check=False, env=env, preexec_fn=join)
        wall = time.monotonic() - began
        for _ in range(600):  # what outlived the command (reparented servers, renderers)
            if not (cgroup / "cgroup.procs").read_text().strip():
                break
            time.sleep(0.1)
        left = len((cgroup / "cgroup.procs").read_text().split())
        total = usage(cgroup)
    finally:
        if not (cgroup / "cgroup.procs").read_text().strip():
            cgroup.rmdir()
    tests: list[dict[str, Any]] = (
        [json.loads(line) for line in lines.read_text().splitlines()] if lines.exists() else []
    )
    tests.sort(key=lambda test: -test["cpu"])
    summed = sum(test["cpu"] for test in tests)
    print(f"command: {total:.2f} s of CPU, {wall:.1f} s of wall, rc {done.returncode}", end="")
    print(f", {left} process(es) still in {cgroup}" if left else "")
    rest = total - summed
    print(f"tests: {len(tests)}, {summed:.2f} s of CPU; the rest (starts, ends) {rest:.2f} s")
    for test in tests[:top]:
        print(f"{test['cpu']:8.2f} {test['wall']:8.1f}  {test['test']}")
    return done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("action", choices=["run"])
    parser.add_argument("--top", type=int, default=15)
    split = sys.argv.index("--") if "--" in sys.argv else len(sys.argv)
    options = parser.parse_args(sys.argv[1:split])  # --help: its usage, and the end
    if split == len(sys.argv):
        parser.error("the pytest arguments follow `--`")
    return run(sys.argv[split + 1 :], options.top)


if __name__ == "__main__":
    sys.exit(main())
