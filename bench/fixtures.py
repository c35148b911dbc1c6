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

With ``--live-server``, the `app_live_server` fixture instead (each test asks its server for
``/health``): a suite of ``--small`` and of ``--large`` such tests (default 2 and 8), each run
with the fixture's two ways of starting its server, ``forked`` (from one warm interpreter per
run, `app.testing.zygote`) and ``subprocess`` (a plain ``python -m app serve``): the marginal
wall time and CPU (user + system, every process the run waited for) per test of each way.

Each suite's CPU time (user + system of the pytest process) is taken too, and the same
marginal figures are reported for it (``cpu_*`` in the JSON): on a machine whose cores other
work shares, wall times move by whole milliseconds per test between rounds while the CPU
time says whether a difference is real. ``--fixtures tmp_path,app_store`` runs only those
suites (the baseline always), for a run short enough to repeat side by side.

With ``--instructions``, each suite runs once under Valgrind's callgrind instead (suites of
``--small`` and ``--large`` tests, default 5 and 25; needs ``valgrind``), and the report is
the instructions per test above ``tmp_path`` (`instructions.instructions`): what the load
on the machine does not move, to compare two trees side by side (run the other tree's code
with ``PYTHONPATH=<tree>``, which the suites inherit).

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

from _common import clean_environment, name_the_settings, run_timed, write_json
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


#: `--live-server`'s test body, and the fixture's two ways of starting its server.
LIVE_BODY = (
    '    import httpx\n\n    assert httpx.get(f"{app_live_server.url}/health").status_code == 200\n'
)
LIVE_WAYS = ("forked", "subprocess")


def live_server(args: argparse.Namespace) -> None:
    """`--live-server`: the marginal wall time and CPU per test of `app_live_server`, each
    way, over `args.rounds` interleaved rounds."""
    small, large = args.small or 2, args.large or 8
    env = clean_environment()
    work = Path(tempfile.mkdtemp(prefix="bench-live-server-", dir=args.work_dir))
    name_the_settings(env, work)
    runs = [(way, size) for way in LIVE_WAYS for size in (small, large)]
    times: dict[tuple[str, int], list[tuple[float, float]]] = {run: [] for run in runs}
    try:
        for size in (small, large):
            directory = work / f"live-{size}"
            directory.mkdir()
            tests = [f"\ndef test_{n:04d}(app_live_server):\n{LIVE_BODY}" for n in range(size)]
            (directory / "test_live.py").write_text("".join(tests))
        for round_no in range(args.warmup + args.rounds):
            shift = round_no % len(runs)
            for way, size in runs[shift:] + runs[:shift]:
                basetemp = work / "basetemp"
                argv = [
                    sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    f"--basetemp={basetemp}", f"--app-live-server={way}", "test_live.py",
                ]  # fmt: skip
                wall, cpu = run_timed(argv, work / f"live-{size}", env)
                shutil.rmtree(basetemp, ignore_errors=True)
                if round_no >= args.warmup:
                    times[(way, size)].append((wall, cpu))
                    print(
                        f"round {round_no - args.warmup + 1}: {way:<10} x{size:<3} "
                        f"{wall * 1000:7.0f} ms wall {cpu * 1000:7.0f} ms CPU",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results: dict[str, dict[str, float]] = {}
    print(f"app_live_server: {args.rounds} rounds, {small} vs {large} tests, interleaved")
    for way in LIVE_WAYS:
        pairs = zip(times[(way, small)], times[(way, large)], strict=True)
        per_test = [
            ((b[0] - a[0]) / (large - small), (b[1] - a[1]) / (large - small)) for a, b in pairs
        ]
        results[way] = {
            "marginal_wall_ms": statistics.median(w for w, _ in per_test) * 1000,
            "marginal_cpu_ms": statistics.median(c for _, c in per_test) * 1000,
            "median_small_cpu_s": statistics.median(c for _, c in times[(way, small)]),
            "median_large_cpu_s": statistics.median(c for _, c in times[(way, large)]),
        }
        r = results[way]
        print(
            f"{way:<10} per test: {r['marginal_wall_ms']:6.0f} ms wall, "
            f"{r['marginal_cpu_ms']:6.0f} ms CPU (suite of {small}: "
            f"{r['median_small_cpu_s']:.2f} s CPU; of {large}: {r['median_large_cpu_s']:.2f} s)"
        )
    write_json(args.json, {"rounds": args.rounds, "live_server": results})


def count_instructions(args: argparse.Namespace) -> None:
    """``--instructions``: each suite once under callgrind; instructions per test above
    ``tmp_path``'s."""
    from instructions import instructions

    small, large = args.small or 5, args.large or 25
    chosen = [name.strip() for name in (args.fixtures or "app_config,app_store").split(",")]
    fixtures = [name for name in BODIES if name in chosen or name == BASELINE]
    env = clean_environment()
    work = Path(tempfile.mkdtemp(prefix="bench-fixtures-", dir=args.work_dir))
    name_the_settings(env, work)
    per_test: dict[str, float] = {}
    try:
        for fixture in fixtures:
            counts = []
            for size in (small, large):
                suite = work / f"{fixture}-{size}"
                write_suite(suite, fixture, size)
                basetemp = work / "basetemp"
                argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
                argv += ["-p", "no:randomly", f"--basetemp={basetemp}", f"test_{fixture}.py"]
                if fixture == BARE:
                    argv = without_the_app(argv)
                run_timed(argv, suite, env)  # the bytecode caches written
                shutil.rmtree(basetemp, ignore_errors=True)
                counts.append(instructions(argv, suite, env))
                shutil.rmtree(basetemp, ignore_errors=True)
            per_test[fixture] = (counts[1] - counts[0]) / (large - small)
            print(
                f"{fixture:12} {counts[0]:>16,} {counts[1]:>16,} {per_test[fixture]:>14,.0f}",
                file=sys.stderr,
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"instructions (callgrind), {small} vs {large} tests; Python {sys.version.split()[0]}")
    results = {}
    for fixture in fixtures:
        above = per_test[fixture] - per_test[BASELINE]
        results[fixture] = {"per_test": per_test[fixture], "above_baseline": above}
        shown = "(baseline)" if fixture == BASELINE else f"{above / 1e6:.2f} M above tmp_path"
        print(f"{fixture:12} {per_test[fixture] / 1e6:8.2f} M a test  {shown}")
    write_json(args.json, {"small": small, "large": large, "instructions": results})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="at least 3")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--small", type=int, help="default 50 (--live-server: 2)")
    parser.add_argument("--large", type=int, help="default 250 (--live-server: 8)")
    parser.add_argument(
        "--live-server", action="store_true", help="app_live_server's two ways instead"
    )
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions (callgrind) instead"
    )
    parser.add_argument(
        "--work-dir", help="where the suites and their --basetemp go (default: the system temp)"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--fixtures",
        help=f"comma-separated suites to run (default all: {','.join(BODIES)}); "
        f"{BASELINE} is always run",
    )
    args = parser.parse_args()
    if args.live_server:
        if args.rounds < 3 or (args.large or 8) <= (args.small or 2):
            parser.error("use --rounds 3 or more and --large above --small")
        live_server(args)
        return
    if args.instructions:
        count_instructions(args)
        return
    args.small, args.large = args.small or 50, args.large or 250
    if args.rounds < 3 or args.large <= args.small:
        parser.error("use --rounds 3 or more and --large above --small")

    chosen = [name.strip() for name in (args.fixtures or ",".join(BODIES)).split(",")]
    if unknown := sorted(set(chosen) - set(BODIES)):
        parser.error(f"unknown suites {unknown}: choose among {', '.join(BODIES)}")
    fixtures = [name for name in BODIES if name in chosen or name == BASELINE]
    env = clean_environment()
    work = Path(tempfile.mkdtemp(prefix="bench-fixtures-", dir=args.work_dir))
    name_the_settings(env, work)
    runs = [(fixture, size) for fixture in fixtures for size in (args.small, args.large)]
    times: dict[tuple[str, int], list[float]] = {run: [] for run in runs}
    cpus: dict[tuple[str, int], list[float]] = {run: [] for run in runs}
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
                elapsed, cpu = run_timed(argv, work / f"{fixture}-{size}", env)
                shutil.rmtree(basetemp, ignore_errors=True)
                if round_no >= args.warmup:
                    times[(fixture, size)].append(elapsed)
                    cpus[(fixture, size)].append(cpu)
                    print(
                        f"round {round_no - args.warmup + 1}: {fixture:<10} x{size:<4} "
                        f"{elapsed * 1000:8.0f} ms {cpu * 1000:8.0f} ms CPU",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    extra = args.large - args.small

    def per_test(measured: dict[tuple[str, int], list[float]]) -> dict[str, list[float]]:
        return {
            fixture: [
                (big - small) / extra
                for small, big in zip(
                    measured[(fixture, args.small)], measured[(fixture, args.large)], strict=True
                )
            ]
            for fixture in fixtures
        }

    marginal, marginal_cpu = per_test(times), per_test(cpus)
    results: dict[str, dict[str, float]] = {}
    print(
        f"{args.rounds} rounds (+{args.warmup} warm-up), interleaved, {args.small} vs "
        f"{args.large} tests; Python {sys.version.split()[0]}; in {work.parent}"
    )
    print(
        f"{'fixture':12} {'suite ' + str(args.small):>10} {'suite ' + str(args.large):>10} "
        f"{'per test':>9} {'above tmp_path':>15} {'CPU per test':>13} {'CPU above':>10}"
    )
    for fixture in fixtures:
        above = [m - b for m, b in zip(marginal[fixture], marginal[BASELINE], strict=True)]
        above_cpu = [
            m - b for m, b in zip(marginal_cpu[fixture], marginal_cpu[BASELINE], strict=True)
        ]
        results[fixture] = {
            "cpu_marginal_ms": statistics.median(marginal_cpu[fixture]) * 1000,
            "cpu_above_baseline_ms": statistics.median(above_cpu) * 1000,
            "cpu_above_baseline_min_ms": min(above_cpu) * 1000,
            "cpu_above_baseline_max_ms": max(above_cpu) * 1000,
            "median_small_s": statistics.median(times[(fixture, args.small)]),
            "median_large_s": statistics.median(times[(fixture, args.large)]),
            "marginal_ms": statistics.median(marginal[fixture]) * 1000,
            "above_baseline_ms": statistics.median(above) * 1000,
            "above_baseline_min_ms": min(above) * 1000,
            "above_baseline_max_ms": max(above) * 1000,
        }
        r = results[fixture]
        shown = "(baseline)" if fixture == BASELINE else f"{r['above_baseline_ms']:.2f} ms"
        shown_cpu = "" if fixture == BASELINE else f"{r['cpu_above_baseline_ms']:.2f} ms"
        print(
            f"{fixture:12} {r['median_small_s'] * 1000:8.0f}ms {r['median_large_s'] * 1000:8.0f}ms "
            f"{r['marginal_ms']:7.2f}ms {shown:>15} {r['cpu_marginal_ms']:11.2f}ms "
            f"{shown_cpu:>10}"
        )
    for fixture, target in TARGETS_MS.items():
        if fixture not in results:
            continue
        r = results[fixture]
        verdict = "within" if r["above_baseline_ms"] <= target else "ABOVE"
        print(
            f"{fixture}: {r['above_baseline_ms']:.2f} ms per test above tmp_path (rounds ranged "
            f"{r['above_baseline_min_ms']:.2f} to {r['above_baseline_max_ms']:.2f}; {verdict} "
            f"the {target:g} ms target); CPU {r['cpu_above_baseline_ms']:.2f} ms (rounds ranged "
            f"{r['cpu_above_baseline_min_ms']:.2f} to {r['cpu_above_baseline_max_ms']:.2f})"
        )
    if "nothing" not in marginal or BARE not in marginal:
        write_json(args.json, {"rounds": args.rounds, "results": results})
        return
    guard = [m - b for m, b in zip(marginal["nothing"], marginal[BARE], strict=True)]
    results["guard"] = {"per_test_ms": statistics.median(guard) * 1000}
    print(
        f"the guard around a test that takes nothing: {statistics.median(guard) * 1000:.2f} ms "
        f"per test above the same test without the plugin (rounds ranged "
        f"{min(guard) * 1000:.2f} to {max(guard) * 1000:.2f})"
    )
    if BESIDE not in marginal:
        write_json(args.json, {"rounds": args.rounds, "results": results})
        return
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
