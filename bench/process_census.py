"""Every Python process a test run starts, by kind, and the CPU each used (a census).

Usage (from the project directory)::

    .venv/bin/python bench/process_census.py on       # every Python of .venv logs at its exit
    .venv/bin/python -m pytest -n 3 --dist loadfile --no-loadscope-reorder ...
    .venv/bin/python bench/process_census.py off      # removes the hook and stops the log
    .venv/bin/python bench/process_census.py report [--top 25]

``on`` puts a ``.pth`` file in the virtualenv's site-packages (not in the environment, so
that no test that wipes or rebuilds its children's environment loses it, and none sees a
variable of it): each Python process of the virtualenv that ends through ``atexit`` appends
one JSON line (its command line, its own user + system CPU, ``PYTEST_CURRENT_TEST`` if it
inherited one, its parent, whether it imported dynaconf) to `LOG`. A zygote's child
(tests/forked_app.py, tests/forked_pytest.py) runs the ``atexit`` functions it inherited and
is counted too, as forked. Processes that end by a signal's default action, by ``os._exit``
without ``atexit`` or under SIGKILL are not counted, nor are non-Python children
(PostgreSQL, weed, Chromium); but each logged process also logs what the children it reaped
used (``reaped``), and ``report`` lists, under the parent's kind and file, what that leaves
after its logged children: the step sweeps' forked cases (red teams 18, 20, 21, 28), killed
servers, the engines, Chromium (bench/README.md, "perf-suite72": red team 20's file was one
process of 0.71 s in a whole count, about 20 s by ``/usr/bin/time``).
Measurement only: always ``off`` after the run (the hook costs each process an ``open`` at
exit while `FLAG` exists, and nothing otherwise).

``report`` groups the processes by kind (inner pytest, ``python -m app`` command, xdist
worker, ``python -c``, multiprocessing child...) and by the test file that started them: the
nearest logged ancestor's ``PYTEST_CURRENT_TEST``, as it was when that process started or
ended. pytester and the incident's launcher remove it from their inner runs: such a process
counts under the test whose ``tmp_path`` it started in (pytest names that directory after
the test, cut to 30 characters), else under "?".
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import re
import site
from pathlib import Path
from typing import Any

#: In /tmp, which every user a test runs as can write, named for this checkout: another
#: checkout's census on the same machine (a hook of its own, its own flag) counts apart.
_CHECKOUT = hashlib.sha256(str(Path(__file__).resolve().parents[1]).encode()).hexdigest()[:8]
LOG = Path(f"/tmp/app-process-census-{_CHECKOUT}.jsonl")
FLAG = Path(f"/tmp/app-process-census-{_CHECKOUT}.on")
HOOK = "zz_app_process_census"
SOURCE = f"""\
import os, sys
if os.path.exists({str(FLAG)!r}):
    import atexit, json

    _app_census_start = (os.environ.get("PYTEST_CURRENT_TEST", ""), os.getcwd(), os.getpid())

    def _app_process_census():
        times = os.times()
        line = json.dumps({{
            "pid": os.getpid(), "ppid": os.getppid(), "argv": sys.orig_argv[:8],
            "cpu": times.user + times.system,
            "reaped": times.children_user + times.children_system,
            # a fork's own environment and directory, not its zygote's at the zygote's start
            "test": os.environ.get("PYTEST_CURRENT_TEST", "") or (
                "" if os.getpid() != _app_census_start[2] else _app_census_start[0]
            ),
            "cwd": os.getcwd() if os.getpid() != _app_census_start[2] else _app_census_start[1],
            # a fork of a zygote (tests/forked_app.py, tests/forked_pytest.py) runs the
            # atexit functions it inherited (`app.testing.zygote.leave`), in another pid
            "forked": os.getpid() != _app_census_start[2],
            "dynaconf": "dynaconf" in sys.modules,
        }})
        try:
            fd = os.open({str(LOG)!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            os.write(fd, (line + "\\n").encode())
            os.close(fd)
        except OSError:
            pass

    atexit.register(_app_process_census)
"""


def _site_packages() -> Path:
    return Path(site.getsitepackages()[0])


def on() -> None:
    packages = _site_packages()
    (packages / f"{HOOK}.py").write_text(SOURCE)
    (packages / f"{HOOK}.pth").write_text(f"import {HOOK}\n")
    LOG.unlink(missing_ok=True)
    FLAG.touch()


def off() -> None:
    FLAG.unlink(missing_ok=True)
    for suffix in (".pth", ".py"):
        (_site_packages() / f"{HOOK}{suffix}").unlink(missing_ok=True)


def kind(row: dict[str, Any]) -> str:
    argv: list[str] = row["argv"]
    line = " ".join(argv[1:])
    if row.get("forked"):  # a zygote's child: an app command's argv is the zygote's own,
        # an inner run's the one it was given (tests/forked_pytest.py's `become`)
        if "import atexit, ctypes" in line:
            return "forked app (tests/forked_app.py)"
        return "forked pytest" if "pytest" in line else "forked " + kind({**row, "forked": False})
    if line.startswith("-u -c import sys;exec"):
        return "xdist worker (execnet)"
    if "pytest" in line.split(" ", 2)[:2] or "-mpytest" in line or argv[0].endswith("pytest"):
        return "pytest"
    if line.startswith("-m app") or argv[0].endswith("/app"):
        words = argv[3:] if line.startswith("-m app") else argv[1:]
        if words[:1] == ["--profile"]:
            words = words[2:]
        return "app " + next((word for word in words if not word.startswith("-")), "")
    if "import atexit, ctypes" in line:
        return "zygote or a fork of it (tests/forked_app.py)"
    if "multiprocessing" in line:
        return "multiprocessing child"
    if line.startswith("-m "):
        return "python " + " ".join(argv[1:3])
    if line.startswith("-c"):
        return "python -c"
    return "other"


def _rows() -> list[dict[str, Any]]:
    """The log's lines; a line cut short (a test's process under a file size limit,
    ``RLIMIT_FSIZE``, writes only part of it) is counted and left out."""
    rows, cut = [], 0
    for line in LOG.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            cut += bool(line)
    if cut:
        print(f"{cut} line(s) of {LOG} cut short, left out")
    return rows


def report(top: int) -> None:
    rows = _rows()
    by_pid = {row["pid"]: row for row in rows}

    by_dir = _test_files_by_directory_name()

    def started_by(row: dict[str, Any]) -> str:
        seen: set[int] = set()
        first = row
        while row and not row["test"] and row["pid"] not in seen:
            seen.add(row["pid"])
            row = by_pid.get(row["ppid"], {})
        if row:
            return str(row["test"].split("::", 1)[0])
        # No ancestor kept the variable: the directory the process started in, if it is a
        # test's tmp_path (pytest names it after the test, cut to 30 characters).
        return by_dir.get(_test_directory_name(first.get("cwd", "")), "?")

    kinds: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0])
    files: dict[str, dict[str, list[float]]] = collections.defaultdict(
        lambda: collections.defaultdict(lambda: [0, 0.0])
    )
    # What each process's children used that no logged child accounts for: reaped by it
    # (a child's own CPU and what that child reaped in turn), not logged (a fork that ended
    # with os._exit, a killed process, a program other than this virtualenv's Python).
    logged_below: dict[int, float] = collections.defaultdict(float)
    for row in rows:
        logged_below[row["ppid"]] += row["cpu"] + row.get("reaped", 0.0)
    for row in rows:
        name = kind(row)
        kinds[name][0] += 1
        kinds[name][1] += row["cpu"]
        kinds[name][2] += bool(row.get("dynaconf"))
        files[started_by(row)][name][0] += 1
        files[started_by(row)][name][1] += row["cpu"]
        unlogged = row.get("reaped", 0.0) - logged_below.get(row["pid"], 0.0)
        if unlogged > 0.005:
            hidden = f"reaped by {name}, not logged"
            kinds[hidden][0] += 1
            kinds[hidden][1] += unlogged
            files[started_by(row)][hidden][0] += 1
            files[started_by(row)][hidden][1] += unlogged
    hidden = sum(cpu for name, (_, cpu, _) in kinds.items() if name.startswith("reaped by"))
    print(f"{len(rows)} processes, {sum(row['cpu'] for row in rows):.1f} s of CPU; {hidden:.1f} s")
    print("more reaped by them that no logged process accounts for\n")
    print("| kind | processes | CPU (s) | mean (s) | imported dynaconf |")
    print("|---|---:|---:|---:|---:|")
    for name, (count, cpu, dynaconf) in sorted(kinds.items(), key=lambda item: -item[1][1])[:top]:
        print(f"| {name} | {count:.0f} | {cpu:.1f} | {cpu / count:.3f} | {dynaconf:.0f} |")
    print()
    totals = {name: sum(cpu for _, cpu in each.values()) for name, each in files.items()}
    for name in sorted(totals, key=lambda name: -totals[name])[:top]:
        parts = sorted(files[name].items(), key=lambda item: -item[1][1])[:4]
        listed = ", ".join(f"{k} {count:.0f}x {cpu:.1f} s" for k, (count, cpu) in parts)
        print(f"{totals[name]:6.1f} s  {name}: {listed}")


def _test_directory_name(cwd: str) -> str:
    """The test's name as pytest cut it for a ``tmp_path`` the process started under."""
    parts = Path(cwd).parts
    for at, part in enumerate(parts):
        if re.fullmatch(r"pytest-\d+", part):
            rest = [p for p in parts[at + 1 :] if not p.startswith("popen-gw")]
            return re.sub(r"\d+$", "", rest[0]) if rest else ""
    return ""


def _test_files_by_directory_name() -> dict[str, str]:
    """Every test function's 30-character directory name, to its file (tests/ here)."""
    found: dict[str, str] = {}
    for path in sorted(Path("tests").glob("test_*.py")):
        for name in re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.M):
            found.setdefault(name[:30], str(path))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["on", "off", "report"])
    parser.add_argument("--top", type=int, default=25, help="kinds and files to list")
    args = parser.parse_args()
    if args.action == "on":
        on()
    elif args.action == "off":
        off()
    else:
        report(args.top)


if __name__ == "__main__":
    main()
