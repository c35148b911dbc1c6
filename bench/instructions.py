"""Start-up cost counted in instructions, which other work on the machine does not move.

Usage (from the project directory; needs Valgrind, Debian package ``valgrind``)::

    .venv/bin/python bench/instructions.py [--runs 3] [--json FILE] [--against DIR]

The wall-time benchmarks (`plugin_startup.py`, `config_startup.py`) need a quiet machine:
with other people's test suites on the two cores their ratios move by 0.05 to 0.10 between
runs, more than most changes to measure. This one runs the same commands once each under
Valgrind's callgrind and reports the instructions each process executed in user space (its
``Collected`` total): the same code reads the same number, within a few tenths of a percent
(hash randomisation, the environment's size), whatever else runs. It is not the figure users
feel: it leaves out what the kernel does (reading ``/proc/locks`` waits 10 to 30 ms there for
a few thousand instructions) and what waits on the disk, and an instruction that misses the
cache counts as one. Use it to see whether a change cut work and by how much; the targets are
the wall-time benchmarks'.

Commands, the same as theirs (each built by that script):

- ``plugin_startup.py``: a one-test pytest run with the plugin, and without the app's entry
  points (the baseline);
- ``config_startup.py``: ``python -m app config``, against dynaconf's one load (the floor);
- the guard around every test: a module of ``--per-test`` tests that do nothing, run with the
  plugin and without it; per test is ``(that run - the one-test run) / (tests - 1)``, so the
  start-up cancels out.

With ``--against DIR`` (another checkout with its own ``.venv``), that checkout's plugin run
and ``app config`` are counted too. Each command runs ``--runs`` times (median reported); a
warm-up run first writes the bytecode caches.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import config_startup
import plugin_startup
from _common import clean_environment, name_the_settings, write_json

_COLLECTED = re.compile(rb"Collected : (\d+)")


def instructions(argv: list[str], cwd: Path, env: dict[str, str]) -> int:
    """The instructions one run of `argv` executed in user space (callgrind's total)."""
    valgrind = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    done = subprocess.run([*valgrind, *argv], cwd=cwd, env=env, capture_output=True, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        output = (done.stdout + done.stderr).decode(errors="replace")
        raise SystemExit(f"{argv} under valgrind exited {done.returncode}:\n{output}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--against", type=Path, help="another checkout (with its .venv)")
    parser.add_argument(
        "--per-test", type=int, default=200, help="tests in the module for the cost per test"
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    against = args.against.resolve() if args.against else None

    env = clean_environment()
    work = Path(tempfile.mkdtemp(prefix="bench-instructions-"))
    name_the_settings(env, work)
    config_env = {**env, "ENV_FOR_DYNACONF": "development"}
    config_env.pop("APP_SETTINGS_DIR")
    try:
        plugin = plugin_startup.prepare(work, against)
        plugin_startup.check_active(plugin["pytest (plugin)"], env)
        config = config_startup.commands(against)
        # (name, command, environment, baseline's name)
        plan = [
            (name, plugin[name], env, "pytest -p no:app")
            for name in ("pytest -p no:app", "pytest (plugin)", "against: pytest (plugin)")
            if name in plugin
        ]
        plan += [
            (name, config[name], config_env, "floor: dynaconf + one load")
            for name in (
                "floor: dynaconf + one load",
                "python -m app config",
                "against: python -m app config",
            )
            if name in config
        ]
        many = work / "plain" / "test_many.py"
        many.write_text("".join(f"def test_{n}():\n    pass\n\n" for n in range(args.per_test)))
        per_test = {
            f"{name}, per test": ([many.name if a == "test_one.py" else a for a in argv], cwd)
            for name, (argv, cwd) in plugin.items()
            if name.endswith(("(plugin)", "-p no:app"))
        }
        counts: dict[str, list[int]] = {}
        for name, (argv, cwd), environ, _ in plan:
            subprocess.run(argv, cwd=cwd, env=environ, capture_output=True, check=False)
            counts[name] = [instructions(argv, cwd, environ) for _ in range(args.runs)]
        for name, (argv, cwd) in per_test.items():
            one = name.removesuffix(", per test")
            counts[name] = [
                round((instructions(argv, cwd, env) - counts[one][run]) / (args.per_test - 1))
                for run in range(args.runs)
            ]
        plan += [
            (name, command, env, "pytest -p no:app, per test") for name, command in per_test.items()
        ]
    finally:
        shutil.rmtree(work)

    print(f"{args.runs} runs each under callgrind; Python {sys.version.split()[0]}")
    if against is not None:
        print(f"against: {against}")
    print(f"{'command':32} {'instructions':>14} {'spread':>7} {'ratio':>6}  baseline")
    results = {}
    for name, _, _, base in plan:
        median = statistics.median(counts[name])
        spread = (max(counts[name]) - min(counts[name])) / median
        ratio = median / statistics.median(counts[base])
        results[name] = {"instructions": median, "runs": counts[name], "ratio": ratio}
        shown = "" if name == base else base
        print(f"{name:32} {median:14,.0f} {spread:7.2%} {ratio:6.3f}  {shown}")
    write_json(args.json, {"runs": args.runs, "against": against and str(against), **results})


if __name__ == "__main__":
    main()
