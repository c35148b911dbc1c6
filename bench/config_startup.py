"""Whole-process start-up of `app config` against the floor dynaconf itself sets.

Usage (from the project directory)::

    .venv/bin/python bench/config_startup.py [--rounds 30] [--warmup 3] [--json FILE]
        [--against DIR] [--in-process]

Every round runs each command once, in an order rotated from round to round, so that drift
in the machine's load hits every command alike. Reported: median and p90 wall time of each
command and the ratio of `app config`'s median to the floor's. Target (issue 2): <= 1.25.

- floor: ``python -c`` importing dynaconf and doing one Dynaconf load of the project's
  ``settings.toml`` and ``.secrets.toml`` (absolute paths, ``environments=True``), reading one
  value: what any dynaconf-based CLI pays before doing anything.
- ``python -m app config`` and the ``app`` console script: the real command, which resolves
  every profile (from one Dynaconf load) to check that no two data roots overlap.
- ``python -c pass``: the interpreter alone, for reference.
- with ``--against DIR``: ``python -m app config`` and the console script of another checkout
  of the project that has its own ``.venv`` (say the main branch, in a git worktree), in the
  same rotation: before and after a change, measured side by side.

``--in-process`` times instead, inside fresh processes that have imported click, dynaconf
and tomllib already, what the app's own code costs: ``import app.cli``, then the first
``load()`` (medians over the rounds, this checkout and ``--against``'s alternately).

The environment is this process's without ``APP_*``, ``DYNACONF_*``, ``*_FOR_DYNACONF``,
pytest's variables and ``PYTHONDONTWRITEBYTECODE``, with ``ENV_FOR_DYNACONF=development``.
Nothing is written except the app's bytecode cache (``app/__pycache__``, ignored by git).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PROJECT, clean_environment, p90, run_timed, write_json

FLOOR = """
from dynaconf import Dynaconf
settings = Dynaconf(
    settings_files=[{settings!r}, {secrets!r}],
    environments=True,
    env="development",
    load_dotenv=False,
)
settings.DATA_ROOT
"""


def commands(against: Path | None) -> dict[str, tuple[list[str], Path]]:
    """Every command to time, with the directory it runs in."""
    script = Path(sys.executable).parent / "app"
    floor = FLOOR.format(
        settings=str(PROJECT / "settings.toml"), secrets=str(PROJECT / ".secrets.toml")
    )
    found = {
        "python -c pass": ([sys.executable, "-c", "pass"], PROJECT),
        "floor: dynaconf + one load": ([sys.executable, "-c", floor], PROJECT),
        "python -m app config": ([sys.executable, "-m", "app", "config"], PROJECT),
    }
    if script.is_file():
        found["app config (console script)"] = ([str(script), "config"], PROJECT)
    if against is not None:
        # Its own interpreter and directory: `-m app` imports the package of the current
        # directory, and its console script the package its venv installed (editable).
        bin_dir = against / ".venv" / "bin"
        found["against: python -m app config"] = (
            [str(bin_dir / "python"), "-m", "app", "config"],
            against,
        )
        found["against: app config (script)"] = ([str(bin_dir / "app"), "config"], against)
    return found


IN_PROCESS = """
import time, click, dynaconf, tomllib
start = time.perf_counter()
import app.cli
imported = time.perf_counter()
from app.config import load
load(serving=True)
print(imported - start, time.perf_counter() - imported)
"""


def in_process(trees: list[Path], rounds: int, warmup: int, env: dict[str, str]) -> None:
    """Print the medians of importing the app's modules and of its first load, per checkout."""
    found: dict[Path, list[tuple[float, float]]] = {tree: [] for tree in trees}
    for round_no in range(warmup + rounds):
        for tree in trees if round_no % 2 == 0 else trees[::-1]:
            python = str(tree / ".venv" / "bin" / "python")
            done = subprocess.run(
                [python, "-c", IN_PROCESS],
                cwd=tree,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise SystemExit(f"{tree}: {done.stderr}")
            if round_no >= warmup:
                imported, loaded = (float(word) for word in done.stdout.split())
                found[tree].append((imported, loaded))
    print(f"{rounds} rounds (+{warmup} warm-up), in process; Python {sys.version.split()[0]}")
    print(f"{'checkout':40} {'import app.cli ms':>18} {'first load ms':>14}")
    for tree, times in found.items():
        imported = statistics.median(t[0] for t in times) * 1000
        loaded = statistics.median(t[1] for t in times) * 1000
        print(f"{tree!s:40} {imported:18.2f} {loaded:14.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--against", type=Path, help="another checkout (with its .venv) to time side by side"
    )
    parser.add_argument(
        "--in-process", action="store_true", help="time the app's own imports and first load"
    )
    args = parser.parse_args()

    env = {**clean_environment(), "ENV_FOR_DYNACONF": "development"}
    against = args.against.resolve() if args.against else None
    if against is not None and not (against / ".venv" / "bin" / "app").is_file():
        raise SystemExit(f"{against} has no .venv/bin/app: install it there first")
    if args.in_process:
        in_process([PROJECT, *([against] if against else [])], args.rounds, args.warmup, env)
        return
    cmds = commands(against)
    names = list(cmds)
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for round_no in range(args.warmup + args.rounds):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            argv, cwd = cmds[name]
            elapsed, used = run_timed(argv, cwd, env)
            if round_no >= args.warmup:
                times[name].append(elapsed)
                cpu[name].append(used)

    floor = statistics.median(times["floor: dynaconf + one load"])
    floor_cpu = statistics.median(cpu["floor: dynaconf + one load"])
    print(
        f"{args.rounds} rounds (+{args.warmup} warm-up), interleaved; Python "
        f"{sys.version.split()[0]}; {sys.executable}"
    )
    if against is not None:
        print(f"against: {against}")
    print(
        f"{'command':32} {'median ms':>10} {'p90 ms':>8} {'/ floor':>8} "
        f"{'CPU ms':>8} {'/ floor':>8}"
    )
    results = {}
    for name in names:
        median = statistics.median(times[name])
        results[name] = {
            "median_s": median,
            "p90_s": p90(times[name]),
            "ratio_to_floor": median / floor,
            "cpu_median_s": statistics.median(cpu[name]),
            "cpu_ratio_to_floor": statistics.median(cpu[name]) / floor_cpu,
        }
        print(
            f"{name:32} {median * 1000:10.1f} {p90(times[name]) * 1000:8.1f} "
            f"{median / floor:8.2f} {statistics.median(cpu[name]) * 1000:8.1f} "
            f"{statistics.median(cpu[name]) / floor_cpu:8.2f}"
        )
    worst = max(
        results[n]["ratio_to_floor"]
        for n in names
        if "app" in n and "pass" not in n and not n.startswith("against")
    )
    verdict = "within" if worst <= 1.25 else "ABOVE"
    print(f"app config / floor = {worst:.2f} ({verdict} the 1.25 target)")
    write_json(
        args.json,
        {"rounds": args.rounds, "against": against and str(against), "results": results},
    )


if __name__ == "__main__":
    main()
