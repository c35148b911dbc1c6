"""Red team 39 on the guard: what a test and its children may reach.

Each case is real: pytest runs in a subprocess next to a stopped production root named by the
settings (and, by hand, next to live production and development servers).

What broke:

- a child at the end of a long chain of processes. The walk up the process tree stopped
  after 128 ancestors, so a child a test started at the end of a chain of 130 shells (a
  recursive build, a tool that nests itself), on a session of its own and given a hand-built
  environment, found no run above it and purged a stopped production root. Every ancestor
  is read now.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from test_redteam_s31_guard import stopped  # noqa: F401 - a fixture
from test_redteam_s36_guard import _run_beside

#: A chain of `$1` shells, each waiting for the next; the last, on a session of its own
#: (so that no run leads it), runs the app with production's settings alone.
DEEP_CHAIN = """
if [ "$1" -gt 0 ]; then sh "$0" $(($1 - 1)) "$2"; exit $?; fi
exec setsid env -i PATH="$PATH" APP_SETTINGS_DIR="$APP_SETTINGS_DIR" \\
    ENV_FOR_DYNACONF=production "$2" -m app data purge --yes-i-mean-it
"""

DEEP_CHILD_TEST = """
import pathlib, subprocess, sys

def test_a_child_130_processes_down():
    chain = pathlib.Path(__file__).with_name("chain.sh")
    done = subprocess.run(["sh", str(chain), "130", sys.executable],
                          capture_output=True, text=True)
    print("CHILD", done.returncode, done.stdout, done.stderr)
    assert done.returncode == 78
"""


def test_a_child_at_the_end_of_a_long_chain_of_processes_is_still_in_the_run(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # The walk of a child's ancestors stopped after 128: at the end of a chain of 130
    # shells, on a session of its own (no run leads it) and with production's settings as
    # its whole environment, it was outside every run and purged production.
    settings, production = stopped
    project = tmp_path / "project"
    project.mkdir()
    (project / "chain.sh").write_text(DEEP_CHAIN)
    (project / "test_deep.py").write_text(DEEP_CHILD_TEST)
    code, output = _run_beside(production, project, settings, "-s", "-q")
    assert code == 0, output
    assert (
        "refused under pytest (sandbox: " in output
        and "loading profile 'production'; tests run on the 'testing' profile (this process "
        "belongs to the test run through the process tree (an ancestor process, pytest pid "
        in output
    ), output


def test_a_pytest_debug_temproot_in_a_data_root_is_named_as_what_to_change(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # pytest's temporary root is PYTEST_DEBUG_TEMPROOT before TMPDIR (pytester sets it for
    # its runs). Refused, but told that "TMPDIR is <production>/sessions" and to point
    # TMPDIR elsewhere: TMPDIR named another directory, and changing it changed nothing.
    settings, production = stopped
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_a.py").write_text("def test_a():\n    pass\n")
    temproot = production / "sessions"
    code, output = _run_beside(production, project, settings, PYTEST_DEBUG_TEMPROOT=str(temproot))
    assert code == 4, output
    assert (
        f"refusing to run: pytest would create (and clean up) its temporary directories in "
        f"{temproot}/pytest-of-"
        in output
        and f"overlaps the data root of profile 'production' ({production}), because "
        f"PYTEST_DEBUG_TEMPROOT is {temproot}. Point PYTEST_DEBUG_TEMPROOT outside every data "
        "root, or pass --basetemp"
        in output
    ), output


SUBINTERPRETER_TEST = """
import importlib, os, subprocess, sys

CODE = '''
import os
os.environ["ENV_FOR_DYNACONF"] = "production"
from app.config import load
try:
    load("production")
    print("LOADED")
except Exception as error:
    print("REFUSED", error)
'''

def test_a_subinterpreter_loads_production():
    try:
        interpreters = importlib.import_module("_interpreters")
        interpreters.run_string(interpreters.create(), CODE)
    except ImportError:
        interpreters = importlib.import_module("_xxsubinterpreters")
        interpreters.run_string(interpreters.create(), CODE)
"""


def test_a_subinterpreter_is_refused_naming_it_not_an_exec(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # A subinterpreter has a `sys` of its own, without the run's mark: it finds the run
    # through the process tree, by the run's own pid, and was refused, but told that the
    # process "ran another program in its place (exec)", which nothing had.
    if importlib.util.find_spec("_interpreters") is None and (
        importlib.util.find_spec("_xxsubinterpreters") is None
    ):
        pytest.skip("this Python has no subinterpreters")
    settings, production = stopped
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_sub.py").write_text(SUBINTERPRETER_TEST)
    code, output = _run_beside(production, project, settings, "-s", "-q")
    assert code == 0, output
    assert "LOADED" not in output, output
    assert (
        "REFUSED refused under pytest (sandbox: " in output
        and "loading profile 'production'; tests run on the 'testing' profile (this process "
        "belongs to the test run through the process tree (this process, pytest pid "
        in output
        and ", in a subinterpreter (it has a sys module of its own, without the run's mark), "
        "registered in "
        in output
    ), output
    assert "(exec)" not in output, output
