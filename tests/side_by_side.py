"""Inner pytest runs started at the same time, each still a pytest subprocess of its own.

`NEXT_ITEM` (kept by tests/conftest.py) is the test this process runs after an item, when
pytest knows it: a test may start its successor's child while its own runs.

`pytester.runpytest_subprocess` waits for each run before the next one starts, and writes
every run's output to the same two files; the runs of one test that do not depend on each
other start here together, so that a serial outer run's idle core takes one of them.
Each run is what ``runpytest_subprocess`` would start: ``python -mpytest``, a numbered
``--basetemp`` under the test's directory, pytester's environment (`inner_environ`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import forked_pytest
import pytest

#: Options of every inner pytest run (``PYTEST_ADDOPTS``; tests/conftest.py and the incident's
#: shell set it): the plugins the project's environment autoloads that no inner run uses
#: (anyio's, time-machine's, platformdirs', pytest-cov's), and pytest's cache, which no inner
#: run reads. About 170 ms of an inner run's 550 ms of CPU at start-up (bench/README.md, "The
#: suite's time"), pytest-cov's about 45 ms more of what was left; the suite starts about a
#: hundred. The app's plugin and xdist stay (some inner runs use ``-n 2``).
INNER_ADDOPTS = (
    "-p no:anyio -p no:time_machine -p no:platformdirs -p no:pytest_cov -p no:cacheprovider"
)
#: The same plugins alone, for the red teams' inner runs (tests/test_redteam_s24_guard.py,
#: `_inner_env`), which choose for themselves whether pytest's cache is on. anyio's is most of
#: it: an inner run of one trivial test used 0.58 s of CPU with them and 0.32 s without.
INNER_PLUGINS_OFF = "-p no:anyio -p no:time_machine -p no:platformdirs -p no:pytest_cov"
#: The same but pytest-cov's, for the inner runs that give ``--cov``.
WITH_COVERAGE = INNER_PLUGINS_OFF.removesuffix(" -p no:pytest_cov")

#: The item that runs next in this process (pytest's ``nextitem``), None at the end of a run
#: or of an xdist worker's current batch.
NEXT_ITEM = pytest.StashKey["pytest.Item | None"]()


def inner_environ(environ: Mapping[str, str], path: Path, tmproot: Path) -> dict[str, str]:
    """What an inner run in `path` gets from `pytester` in a test whose environment is
    `environ`: pytester's set-up (its home, its temporary root, no outer options, no colours),
    tests/conftest.py's `INNER_ADDOPTS`, and `Pytester.popen`'s ``PYTHONPATH``. Built here so
    that a head start (tests/head_start.py), which has no pytester, starts the same runs."""
    env = dict(environ)
    env.pop("TOX_ENV_DIR", None)
    env |= {"PYTEST_DEBUG_TEMPROOT": str(tmproot), "PYTEST_ADDOPTS": INNER_ADDOPTS}
    env |= {"HOME": str(path), "USERPROFILE": str(path), "PY_COLORS": "0"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), env.get("PYTHONPATH")]))
    return env


def pytest_side_by_side(
    path: Path, env: Mapping[str, str], *runs: Sequence[str]
) -> list[pytest.RunResult]:
    """Start one pytest per argument list at once, each as ``runpytest_subprocess`` would
    (in `path`, with `env`: `inner_environ`); their results in order."""
    started = []
    for args in runs:
        directory = Path(tempfile.mkdtemp(prefix="runpytest-", dir=path))  # 0700
        out, err = directory.with_suffix(".stdout"), directory.with_suffix(".stderr")
        argv = [sys.executable, "-mpytest", f"--basetemp={directory}", *args]
        out.touch()
        err.touch()
        process = forked_pytest.start(argv, dict(env), path, out, err)  # or the plain way:
        if process is None:
            with out.open("w", encoding="utf8") as stdout, err.open("w", encoding="utf8") as stderr:
                process = subprocess.Popen(
                    argv,
                    cwd=path,
                    env=env,
                    stdin=subprocess.DEVNULL,  # pytester's is a pipe it closes at once
                    stdout=stdout,
                    stderr=stderr,
                )
        started.append((process, out, err, time.monotonic()))
    results = []
    for process, out, err, began in started:
        ret = process.wait()
        results.append(
            pytest.RunResult(
                ret,
                out.read_text(encoding="utf8").splitlines(),
                err.read_text(encoding="utf8").splitlines(),
                time.monotonic() - began,
            )
        )
    return results


@contextlib.contextmanager
def users_registry(uid: int) -> Iterator[Path]:
    """User `uid`'s registry of test runs (``/tmp/app-pytest-runs-<uid>``), for a test that
    makes, squats, hides or removes it, or runs pytest as that user (which makes it and
    writes its entry there): held against every other such test of the machine's runs, on
    any worker, until the test is done with it.

    One user's registry is the machine's, shared by every test that runs pytest as that
    user (65534 here): red team 20's test made it root's for a moment, as a squatter would,
    and red team 46's pytest as user 65534 on another worker at that moment was refused
    ("the test run cannot be registered in /tmp/app-pytest-runs-65534 ... it is owned by
    user 0"); red team 39's made it unreadable (``chmod 0311``) and removed it at its end,
    under such a run. Each now waits for the one before.
    """
    from filelock import FileLock

    from app import sandbox

    registry = sandbox.RUNS_DIR.with_name(f"app-pytest-runs-{uid}")
    # Beside it, named as no registry (`app.sandbox._registries` reads those in /tmp).
    with FileLock(registry.with_name(f".app-tests-{registry.name}.lock")):
        yield registry
