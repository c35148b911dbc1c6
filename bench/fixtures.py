"""Marginal cost per test of the plugin's `app_config` and `app_store` fixtures above `tmp_path`.

Usage (from the project directory)::

    .venv/bin/python bench/fixtures.py [--rounds 5] [--small 50] [--large 250] [--json FILE]

Six generated test modules, each in a suite of ``--small`` and of ``--large`` tests:

- ``tmp_path`` (the baseline): every test takes ``tmp_path`` and writes a small file in it;
- ``app_config``: every test takes ``app_config`` and reads its ``data_root``;
- ``app_store``: every test takes ``app_store`` and lists its sessions (an open, locked root);
- ``nothing`` and ``bare``: every test takes no fixture and does nothing, run with the plugin
  and without the app (`plugin_startup.without_the_app`): their difference is what the guard's
  checks around every test cost (not a target of the issue; reported);
- ``beside``: ``nothing``'s tests in a session that keeps `KEPT` processes running (a
  session-scoped fixture's, as a suite's database or servers are): the guard looks at each
  after every test (`app.sandbox.hand_on`), and their difference is what that costs.

Each suite runs as a whole pytest process (``python -m pytest -q -p no:cacheprovider``, no
xdist, a fresh ``--basetemp`` per run, removed outside the timing). A round runs all ten
once, in an order rotated from round to round. Per round, a fixture's marginal cost per
test is ``(time(large) - time(small)) / (large - small)``, which cancels every one-time cost
(interpreter and pytest start-up, importing dynaconf, the first load); its cost above the
baseline is that minus the ``tmp_path`` suite's marginal cost of the same round. Reported:
the medians over the rounds. Targets (issue 11): ``app_config`` at most 1 ms and ``app_store``
at most 2 ms above ``tmp_path``.

The environment is this process's without ``APP_*``, ``DYNACONF_*``, ``*_FOR_DYNACONF``,
pytest's variables and ``PYTHONDONTWRITEBYTECODE``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import clean_environment, name_the_settings, run_once, write_json
from plugin_startup import without_the_app

#: The suite of tests that do nothing, run without the app's plugin.
BARE = "bare"
#: The suite of tests that do nothing beside `KEPT` processes its session keeps running.
BESIDE = "beside"
KEPT = 20
#: `BESIDE`'s conftest: the processes, started once for the session and stopped after it.
KEEPS_PROCESSES = f"""\
import subprocess

import pytest


@pytest.fixture(scope="session", autouse=True)
def kept():
    started = [subprocess.Popen(["sleep", "3600"]) for _ in range({KEPT})]
    yield
    for process in started:
        process.kill()
        process.wait()
"""

BODIES = {
    "tmp_path": (
        "tmp_path",
        '    (tmp_path / "note.txt").write_text("x")\n',
    ),
    # A test that does nothing, with the plugin and without it (`without_the_app`): what the
    # guard's checks around every test cost, fixtures or not.
    "nothing": ("", "    pass\n"),
    BARE: ("", "    pass\n"),
    BESIDE: ("", "    pass\n"),
    "app_config": (
        "app_config",
        '    assert app_config.data_root.name == "app-data"\n',
    ),
    "app_store": (
        "app_store",
        "    assert app_store.session_ids() == []\n",
    ),
}
BASELINE = "tmp_path"
TARGETS_MS = {"app_config": 1.0, "app_store": 2.0}


def write_suite(directory: Path, fixture: str, count: int) -> None:
    """A directory holding one module of ``count`` tests that each take ``fixture``."""
    argument, body = BODIES[fixture]
    directory.mkdir(parents=True)
    lines = ["from __future__ import annotations\n\n"]
    for number in range(count):
        lines.append(f"\ndef test_{number:04d}({argument}):\n{body}")
    (directory / f"test_{fixture}.py").write_text("".join(lines))
    if fixture == BESIDE:
        (directory / "conftest.py").write_text(KEEPS_PROCESSES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="at least 3")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--large", type=int, default=250)
    parser.add_argument(
        "--work-dir", help="where the suites and their --basetemp go (default: the system temp)"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    if args.rounds < 3 or args.large <= args.small:
        parser.error("use --rounds 3 or more and --large above --small")

    env = clean_environment()
    work = Path(tempfile.mkdtemp(prefix="bench-fixtures-", dir=args.work_dir))
    name_the_settings(env, work)
    runs = [(fixture, size) for fixture in BODIES for size in (args.small, args.large)]
    times: dict[tuple[str, int], list[float]] = {run: [] for run in runs}
    try:
        for fixture, size in runs:
            write_suite(work / f"{fixture}-{size}", fixture, size)
        for round_no in range(args.warmup + args.rounds):
            shift = round_no % len(runs)
            for fixture, size in runs[shift:] + runs[:shift]:
                basetemp = work / "basetemp"
                argv = [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    f"--basetemp={basetemp}",
                    f"test_{fixture}.py",
                ]
                if fixture == BARE:
                    argv = without_the_app(argv)
                elapsed = run_once(argv, work / f"{fixture}-{size}", env)
                shutil.rmtree(basetemp, ignore_errors=True)
                if round_no >= args.warmup:
                    times[(fixture, size)].append(elapsed)
                    print(
                        f"round {round_no - args.warmup + 1}: {fixture:<10} x{size:<4} "
                        f"{elapsed * 1000:8.0f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    extra = args.large - args.small
    marginal = {
        fixture: [
            (big - small) / extra
            for small, big in zip(
                times[(fixture, args.small)], times[(fixture, args.large)], strict=True
            )
        ]
        for fixture in BODIES
    }
    results: dict[str, dict[str, float]] = {}
    print(
        f"{args.rounds} rounds (+{args.warmup} warm-up), interleaved, {args.small} vs "
        f"{args.large} tests; Python {sys.version.split()[0]}; in {work.parent}"
    )
    print(
        f"{'fixture':12} {'suite ' + str(args.small):>10} {'suite ' + str(args.large):>10} "
        f"{'per test':>9} {'above tmp_path':>15}"
    )
    for fixture in BODIES:
        above = [m - b for m, b in zip(marginal[fixture], marginal[BASELINE], strict=True)]
        results[fixture] = {
            "median_small_s": statistics.median(times[(fixture, args.small)]),
            "median_large_s": statistics.median(times[(fixture, args.large)]),
            "marginal_ms": statistics.median(marginal[fixture]) * 1000,
            "above_baseline_ms": statistics.median(above) * 1000,
            "above_baseline_min_ms": min(above) * 1000,
            "above_baseline_max_ms": max(above) * 1000,
        }
        r = results[fixture]
        shown = "(baseline)" if fixture == BASELINE else f"{r['above_baseline_ms']:.2f} ms"
        print(
            f"{fixture:12} {r['median_small_s'] * 1000:8.0f}ms {r['median_large_s'] * 1000:8.0f}ms "
            f"{r['marginal_ms']:7.2f}ms {shown:>15}"
        )
    for fixture, target in TARGETS_MS.items():
        r = results[fixture]
        verdict = "within" if r["above_baseline_ms"] <= target else "ABOVE"
        print(
            f"{fixture}: {r['above_baseline_ms']:.2f} ms per test above tmp_path (rounds ranged "
            f"{r['above_baseline_min_ms']:.2f} to {r['above_baseline_max_ms']:.2f}; {verdict} "
            f"the {target:g} ms target)"
        )
    guard = [m - b for m, b in zip(marginal["nothing"], marginal[BARE], strict=True)]
    results["guard"] = {"per_test_ms": statistics.median(guard) * 1000}
    print(
        f"the guard around a test that takes nothing: {statistics.median(guard) * 1000:.2f} ms "
        f"per test above the same test without the plugin (rounds ranged "
        f"{min(guard) * 1000:.2f} to {max(guard) * 1000:.2f})"
    )
    beside = [m - b for m, b in zip(marginal[BESIDE], marginal["nothing"], strict=True)]
    results["beside"] = {"per_test_ms": statistics.median(beside) * 1000}
    print(
        f"the guard's look at {KEPT} processes the session keeps: "
        f"{statistics.median(beside) * 1000:.2f} ms per test above the same test without them "
        f"(rounds ranged {min(beside) * 1000:.2f} to {max(beside) * 1000:.2f})"
    )
    write_json(args.json, {"rounds": args.rounds, "results": results})


if __name__ == "__main__":
    main()
