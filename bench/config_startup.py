"""Whole-process start-up of `app config` against the floor dynaconf itself sets.

Usage (from the project directory)::

    .venv/bin/python bench/config_startup.py [--rounds 30] [--warmup 3] [--json FILE]

Every round runs each command once, in an order rotated from round to round, so that drift
in the machine's load hits every command alike. Reported: median and p90 wall time of each
command and the ratio of `app config`'s median to the floor's. Target (issue 2): <= 1.25.

- floor: ``python -c`` importing dynaconf and doing one Dynaconf load of the project's
  ``settings.toml`` and ``.secrets.toml`` (absolute paths, ``environments=True``), reading one
  value: what any dynaconf-based CLI pays before doing anything.
- ``python -m app config`` and the ``app`` console script: the real command, which resolves
  every profile (from one Dynaconf load) to check that no two data roots overlap.
- ``python -c pass``: the interpreter alone, for reference.

The environment is this process's without ``APP_*``, ``DYNACONF_*``, ``*_FOR_DYNACONF``,
pytest's variables and ``PYTHONDONTWRITEBYTECODE``, with ``ENV_FOR_DYNACONF=development``.
Nothing is written except the app's bytecode cache (``app/__pycache__``, ignored by git).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PROJECT, clean_environment, p90, run_once

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


def commands() -> dict[str, list[str]]:
    script = Path(sys.executable).parent / "app"
    floor = FLOOR.format(
        settings=str(PROJECT / "settings.toml"), secrets=str(PROJECT / ".secrets.toml")
    )
    found = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "floor: dynaconf + one load": [sys.executable, "-c", floor],
        "python -m app config": [sys.executable, "-m", "app", "config"],
    }
    if script.is_file():
        found["app config (console script)"] = [str(script), "config"]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()

    env = {**clean_environment(), "ENV_FOR_DYNACONF": "development"}
    cmds = commands()
    names = list(cmds)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_no in range(args.warmup + args.rounds):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed = run_once(cmds[name], PROJECT, env)
            if round_no >= args.warmup:
                times[name].append(elapsed)

    floor = statistics.median(times["floor: dynaconf + one load"])
    print(
        f"{args.rounds} rounds (+{args.warmup} warm-up), interleaved; Python "
        f"{sys.version.split()[0]}; {sys.executable}"
    )
    print(f"{'command':32} {'median ms':>10} {'p90 ms':>8} {'/ floor':>8}")
    results = {}
    for name in names:
        median = statistics.median(times[name])
        results[name] = {
            "median_s": median,
            "p90_s": p90(times[name]),
            "ratio_to_floor": median / floor,
        }
        print(
            f"{name:32} {median * 1000:10.1f} {p90(times[name]) * 1000:8.1f} {median / floor:8.2f}"
        )
    worst = max(results[n]["ratio_to_floor"] for n in names if "app" in n and "pass" not in n)
    verdict = "within" if worst <= 1.25 else "ABOVE"
    print(f"app config / floor = {worst:.2f} ({verdict} the 1.25 target)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rounds": args.rounds, "results": results}, indent=2))


if __name__ == "__main__":
    main()
