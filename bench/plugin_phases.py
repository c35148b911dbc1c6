"""Where the pytest plugin's time goes in a one-test run, step by step.

Usage (from the project directory)::

    .venv/bin/python bench/plugin_phases.py [--rounds 15] [--warmup 2] [--json FILE]
        [--against DIR]

The run is `bench/plugin_startup.py`'s plugin variant (``python -m pytest -q -p
no:cacheprovider test_one.py`` on a copy of the project's settings), with one more plugin of
this script's, loaded by ``-p`` before the app's. It never imports the app: it wraps the app
plugin's steps as pytest registers that plugin (``pytest_plugin_registered``), so that every
step starts when it would without it. Each step's wall time is its own (a step that calls
another includes it):

- ``import``: from the first import of the ``app`` package to the plugin's registration;
- ``start``: the plugin's first hook, before any conftest (the sandbox, the checks, the
  registry entry), of which ``start: older directories`` is the check of pytest's older
  numbered directories for live data roots (``/proc/locks``), ``start: what pytest
  writes`` the check of the paths pytest and its plugins are told to write, and ``start:
  registry`` the run's registry entry;
- ``configure``: the plugin's ``pytest_configure`` (the session's lock on its testing root)
  and the second check of what pytest writes (once the conftests' options are known);
- ``end: what pytest writes``: the two checks as the tests end;
- ``end: older directories``: the check just before pytest deletes its older directories;
- ``unconfigure``: the lock's release and the registry entry's end.

Reported: the median over the rounds of each step, and of the whole process's wall time;
with ``--against DIR`` (another checkout with its own ``.venv``) the same, run by that
checkout's interpreter, alternating with this one's, round by round. A step the other
checkout does not have is left empty.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import clean_environment, name_the_settings, run_once, write_json
from plugin_startup import TEST_ONE

#: Step name -> (module, function) of the app's plugin, wrapped where the module has it.
STEPS = {
    "start": ("app.testing.plugin", "_before_the_conftests"),
    "start: older directories": ("app.testing.guard", "_refuse_live_roots_in_old_directories"),
    "start: what pytest writes": ("app.testing.writes", "refuse"),
    "start: registry": ("app.testing.guard", "register"),
    "configure": ("app.testing.plugin", "pytest_configure"),
    "end: what pytest writes": ("app.testing.writes", "refuse_at_end"),
    "end: older directories": ("app.testing.guard", "_keep_held_directories"),
    "unconfigure": ("app.testing.plugin", "pytest_unconfigure"),
}

TIMER = '''
"""bench/plugin_phases.py's timing plugin: wraps the app plugin's steps once registered."""
import atexit, functools, json, os, sys, time

STEPS = {steps!r}
TIMES = {{}}
FIRST_IMPORT = []


def _audit(event, args):
    if event == "import" and not FIRST_IMPORT and str(args[0]).split(".")[0] == "app":
        FIRST_IMPORT.append(time.perf_counter())


sys.addaudithook(_audit)


def _timed(step, function):
    @functools.wraps(function)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            TIMES[step] = TIMES.get(step, 0.0) + time.perf_counter() - start

    return timed


def pytest_plugin_registered(plugin, manager):
    if getattr(plugin, "__name__", None) != "app.testing.plugin" or "import" in TIMES:
        return
    TIMES["import"] = time.perf_counter() - FIRST_IMPORT[0] if FIRST_IMPORT else 0.0
    for step, (module_name, name) in STEPS.items():
        module = sys.modules.get(module_name)
        if module is None or not hasattr(module, name):
            TIMES.setdefault("missing", []).append(f"{{module_name}}.{{name}}")
            continue
        setattr(module, name, _timed(step, getattr(module, name)))
        # A hook of the plugin's own: pluggy holds the function itself.
        caller = getattr(manager.hook, name, None) if name.startswith("pytest_") else None
        for impl in caller.get_hookimpls() if caller is not None else ():
            if impl.plugin is plugin:
                impl.function = _timed(step, impl.function)


@atexit.register
def _write():
    with open(os.environ["BENCH_PHASES_OUT"], "a") as out:
        out.write(json.dumps(TIMES) + "\\n")
'''


def run_rounds(
    pythons: dict[str, str], work: Path, env: dict[str, str], rounds: int, warmup: int
) -> tuple[dict[str, list[dict[str, float]]], dict[str, list[float]]]:
    steps: dict[str, list[dict[str, float]]] = {name: [] for name in pythons}
    walls: dict[str, list[float]] = {name: [] for name in pythons}
    out = work / "phases.jsonl"
    names = list(pythons)
    for round_no in range(warmup + rounds):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            out.unlink(missing_ok=True)
            argv = [pythons[name], "-m", "pytest", "-q", "-p", "no:cacheprovider"]
            argv += ["-p", "_bench_phases", "test_one.py"]
            wall = run_once(argv, work, {**env, "BENCH_PHASES_OUT": str(out)})
            times = json.loads(out.read_text().splitlines()[-1])
            if name == "this checkout" and (missing := times.pop("missing", None)):
                raise SystemExit(f"this checkout has no {', '.join(missing)}: update STEPS")
            times.pop("missing", None)
            if round_no >= warmup:
                steps[name].append(times)
                walls[name].append(wall)
    return steps, walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--against", type=Path, help="another checkout (with its .venv) to time side by side"
    )
    args = parser.parse_args()
    pythons = {"this checkout": sys.executable}
    if args.against is not None:
        python = args.against.resolve() / ".venv" / "bin" / "python"
        if not python.is_file():
            raise SystemExit(f"{args.against} has no .venv/bin/python: make its venv first")
        pythons[f"against {args.against}"] = str(python)

    env = clean_environment()
    work = Path(tempfile.mkdtemp(prefix="bench-phases-"))
    try:
        name_the_settings(env, work)
        (work / "test_one.py").write_text(TEST_ONE)
        (work / "_bench_phases.py").write_text(TIMER.format(steps=STEPS))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(work), env.get("PYTHONPATH")]))
        steps, walls = run_rounds(pythons, work, env, args.rounds, args.warmup)
    finally:
        shutil.rmtree(work)

    def median_ms(samples: list[dict[str, float]], step: str) -> float | None:
        values = [times[step] for times in samples if step in times]
        return statistics.median(values) * 1000 if values else None

    print(f"{args.rounds} rounds (+{args.warmup} warm-up), alternating; median wall ms per step")
    print(f"{'step':28}" + "".join(f"{name[:24]:>26}" for name in pythons))
    results: dict[str, dict[str, float | None]] = {name: {} for name in pythons}
    for step in ["import", *STEPS]:
        row = f"{step:28}"
        for name in pythons:
            value = median_ms(steps[name], step)
            results[name][step] = value
            row += f"{'-' if value is None else f'{value:.1f}':>26}"
        print(row)
    row = f"{'whole process':28}"
    for name in pythons:
        results[name]["whole process"] = statistics.median(walls[name]) * 1000
        row += f"{results[name]['whole process']:>26.1f}"
    print(row)
    write_json(args.json, {"rounds": args.rounds, "results": results})


if __name__ == "__main__":
    main()
