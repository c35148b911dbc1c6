"""The same commands under two Python builds: the CPU each process takes, side by side.

Usage (from the project directory)::

    .venv/bin/python bench/interpreters.py --baseline /path/to/other/.venv [--rounds 15] \\
        [--file tests/test_store.py ...] [--json FILE]

Every test run starts about two thousand Python processes (inner pytest runs, ``app``
commands, servers: ``bench/process_census.py``), so what one interpreter costs to start and
to run the app's code is paid that many times; a build made with profile-guided and
link-time optimisation, its library linked into the executable (Debian's ``/usr/bin/python3``),
runs the same bytecode with fewer cycles than one built without (pyenv's default build,
``--enable-shared``, no ``--enable-optimizations``). Both virtualenvs must hold the same
packages (``pip freeze`` is compared, and the run refuses if they differ).

Each round runs each command once under each virtualenv, alternating which goes first, and
reads the child's user + system CPU (``RUSAGE_CHILDREN``) and its wall time. Reported: the
median of each, and the ratio of the medians (this virtualenv's over the baseline's). The
commands: ``python -c pass``; ``python -m app config`` under the testing profile; a one-test
pytest run with the app's plugin; and each ``--file`` run whole by pytest (``-p
no:randomly``), which starts the children its tests start under the same interpreter.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_json

PROJECT = Path(__file__).resolve().parent.parent


def _frozen(venv: Path) -> str:
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    )
    # The project's own editable install names its checkout: compare the rest.
    return "\n".join(line for line in done.stdout.splitlines() if "file://" not in line)


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(CPU in ms, wall in ms) of one run of `argv` to its end, its children's included."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=PROJECT, env=env, capture_output=True, check=False)
    wall = (time.perf_counter() - started) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace")
        raise SystemExit(f"{argv} exited {done.returncode}:\n{output[-4000:]}")
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=PROJECT / ".venv")
    parser.add_argument("--baseline", type=Path, required=True, help="the other virtualenv")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--file", action="append", default=[], help="a test file, run whole")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    venvs = {"this": args.venv.resolve(), "baseline": args.baseline.resolve()}
    if _frozen(venvs["this"]) != _frozen(venvs["baseline"]):
        raise SystemExit("the two virtualenvs hold different packages (pip freeze differs)")
    with tempfile.TemporaryDirectory() as scratch:
        one_test = Path(scratch) / "test_one.py"
        one_test.write_text("def test_one():\n    assert True\n")
        commands: dict[str, list[str]] = {
            "python -c pass": ["-c", "pass"],
            "app config": ["-m", "app", "config"],
            "one-test pytest": ["-m", "pytest", "-q", "-p", "no:cacheprovider", str(one_test)],
        }
        for file in args.file:
            commands[file] = ["-m", "pytest", "-q", "-p", "no:randomly", file]
        env = dict(os.environ, ENV_FOR_DYNACONF="testing")
        env.pop("PYTEST_ADDOPTS", None)
        samples: dict[tuple[str, str], list[tuple[float, float]]] = {
            (name, which): [] for name in commands for which in venvs
        }
        for round_ in range(args.rounds + 1):  # round 0 writes the bytecode caches
            for name, tail in commands.items():
                order = list(venvs) if round_ % 2 else list(venvs)[::-1]
                for which in order:
                    measured = _run([str(venvs[which] / "bin" / "python"), *tail], env)
                    if round_:
                        samples[(name, which)].append(measured)
    results = {}
    print(f"{'command':32s} {'CPU this':>10s} {'baseline':>10s} {'ratio':>6s}   wall ratio")
    for name in commands:
        cpu = {w: statistics.median(s[0] for s in samples[(name, w)]) for w in venvs}
        wall = {w: statistics.median(s[1] for s in samples[(name, w)]) for w in venvs}
        results[name] = {"cpu_ms": cpu, "wall_ms": wall}
        print(
            f"{name:32s} {cpu['this']:8.1f}ms {cpu['baseline']:8.1f}ms"
            f" {cpu['this'] / cpu['baseline']:6.3f}   {wall['this'] / wall['baseline']:.3f}"
        )
    if args.json:
        write_json(args.json, {"venvs": {k: str(v) for k, v in venvs.items()}, **results})


if __name__ == "__main__":
    main()
