"""Red team 57 on the children of tests, third round (branch rt-children3): unittest run by
a command line that the walk up the process tree read only up to a word it did not know, and
a refusal that named the wrong cause.

What broke (next to a stopped production root of the test's own settings, a test's child
given production's settings alone ran ``python -m app data purge --profile production
--yes-i-mean-it``):

- a TestCase run by ``python -W default -m unittest`` (or ``-X importtime``, ``-X
  frozen_modules=off``, ``--check-hash-based-pycs always``): the value of Python's option
  was read as a script's name, which ended the look at the command line, so the run was no
  unittest run, no run was found above the child, and the purge moved every production
  session to the trash;
- a TestCase run by a module or a script that runs its program in its own process:
  ``coverage run -m unittest`` (how coverage measures a unittest suite), ``python -m
  coverage run -m unittest``, ``python -m cProfile -m unittest``, ``python -m pdb -c
  continue -m unittest``, ``python -m trace --count --module unittest``, ``python -m runpy
  unittest``, and ``python -c 'runpy.run_module("unittest", run_name="__main__")'``: only the
  first ``-m`` was read, and it named the profiler (or coverage, or runpy), not unittest;
- (a refusal that named the wrong cause) a child of a run of ``python -m pytest`` with its
  plugin on, confined by a Landlock ruleset that lets it read every path but the registry of
  test runs: refused, but as under "a pytest without the app's plugin", told to run without
  ``-p no:app``. The command line's guess came before the entry it could not read.

What changed: `app.sandbox._looks_like_unittest` passes over the values of Python's options
that take the next word, reads past a module or a script that runs another program in its
own process (``coverage``, ``cProfile``, ``profile``, ``pdb``, ``trace``, ``runpy``,
``debugpy``, ``memray``, ``pyinstrument``, ``viztracer``, ``scalene``, and their console
scripts) for unittest's modules and its runners' scripts (behind any other module, for a
``-m`` that names unittest's), and takes ``-c`` code that runs unittest's module through
``runpy.run_module``, or names its ``main`` another way (``import unittest as ut;
ut.main()``, ``__import__("unittest").main()``, ``TestProgram``), and Twisted's ``trial``
script, for unittest's too. The child is refused under unittest, naming the run's command
line. The walk no longer guesses a pytest or a unittest run from a command line at or above
an ancestor whose entry it may not read, so the refusal says what it could not read and how
to let it (red team 48's words).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from project_copy import assert_untouched, inner_project, stopped_production
from test_redteam_s24_guard import _inner_env
from test_redteam_s56_children2 import INNER

from app import sandbox

#: coverage's console script beside this Python, where the environment has one.
COVERAGE = Path(sys.executable).with_name("coverage")

#: The unittest run, in a PID namespace of its own: coverage's (how coverage measures a
#: unittest suite), else one with a value of Python's own options; its command line after
#: this Python (``$1``; ``$2`` is coverage's script).
RUNS = {
    "coverage": 'COVERAGE_FILE="$0/.coverage" "$1" "$2" run -m unittest test_purge',
    "value-option": '"$1" -W default -m unittest test_purge',
}

#: A test's child given production's settings alone, run as ``python -c CONFINED <the
#: registry>``: it confines itself with a Landlock ruleset that lets it read every path but
#: the registry of test runs (as code that confines its workers does), then purges.
CONFINED = """
import ctypes, os, struct, sys

READ = (1 << 2) | (1 << 3)  # LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR
libc = ctypes.CDLL(None, use_errno=True)
ruleset = libc.syscall(444, struct.pack("=Q", READ), 8, 0)  # landlock_create_ruleset
assert ruleset >= 0, ctypes.get_errno()
for top in ("/", "/tmp"):
    for name in os.listdir(top):
        path = os.path.join(top, name)
        if path in ("/tmp", sys.argv[1]):
            continue
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        libc.syscall(445, ruleset, 1, struct.pack("=Qi", READ, fd), 0)  # landlock_add_rule
        os.close(fd)
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
assert libc.syscall(446, ruleset, 0) == 0, ctypes.get_errno()  # landlock_restrict_self
purge = ["-m", "app", "data", "purge", "--profile", "production", "--yes-i-mean-it"]
os.execv(sys.executable, [sys.executable, *purge])
"""


def _landlock() -> bool:
    """Whether this kernel confines a process with Landlock (its ABI version is 1 or more)."""
    import ctypes

    try:
        return int(ctypes.CDLL(None).syscall(444, None, 0, 1)) >= 1
    except (AttributeError, OSError):
        return False


UNSHARE = os.geteuid() == 0 and shutil.which("unshare") is not None and shutil.which("bash")


@pytest.mark.skipif(
    not UNSHARE and not _landlock(),
    reason="the unittest runs are kept out of this run's tree in a PID namespace of their "
    "own (unshare --pid needs root here), and this kernel has no Landlock",
)
def test_a_child_of_unittest_behind_an_option_or_a_runner_or_denied_its_registry_is_refused(
    tmp_path: Path,
) -> None:
    # The unittest run and the confined child run at once, next to one stopped production root.
    settings, production, token, sessions = stopped_production(tmp_path)
    project = inner_project(tmp_path, "test_purge.py", INNER)
    env = _inner_env(
        APP_SETTINGS_DIR=str(settings),
        RT56_SETTINGS=str(settings),
        RT56_TOKEN=token,
        RT56_PYTHON=sys.executable,
    )
    # One run (samples: the other forms are read below by `_looks_like_unittest` alone).
    name = "coverage" if COVERAGE.exists() else "value-option"
    runs = {name: RUNS[name]} if UNSHARE else {}
    script = "".join(f'RT56_OUT="$0/{name}" {line} &\n' for name, line in runs.items()) + "wait\n"
    started = (
        [
            subprocess.Popen(
                [
                    *("unshare", "--pid", "--fork", "--mount-proc", "bash", "-c", script),
                    *(str(tmp_path), sys.executable, str(COVERAGE)),
                ],
                env=env,
                cwd=project,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        ]
        if runs
        else []
    )
    if _landlock():
        # The child of this very run (its plugin on), as a test of any run starts one.
        started.append(
            subprocess.Popen(
                [sys.executable, "-c", CONFINED, str(sandbox.RUNS_DIR)],
                env={
                    "APP_SETTINGS_DIR": str(settings),
                    "APP_API_TOKEN": token,
                    "PATH": "/usr/bin:/bin",
                },
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    for process in started[:1] if runs else ():
        out, _ = process.communicate()
        assert process.returncode == 0, out.decode(errors="replace")
    for name in runs:
        code, _, said = (tmp_path / name).read_text().partition("\n")
        assert_untouched(production, sessions, said)
        assert code == "78", (name, said)
        assert "refused under unittest: loading profile 'production' while unittest " in said
        assert "an ancestor process runs tests with unittest (pid " in said, said
        assert "Run the tests with pytest instead" in said, said
    if "coverage" in runs:
        shown = f"{sys.executable} {COVERAGE} run -m unittest test_purge)"
        assert shown in (tmp_path / "coverage").read_text()
    if _landlock():
        out, _ = started[-1].communicate()
        said = out.decode(errors="replace")
        assert_untouched(production, sessions, said)
        assert started[-1].returncode == 78, said
        assert "refused under pytest: loading profile 'production' while a test run may be " in said
        assert f"registry of test runs {sandbox.RUNS_DIR} this process (user " in said, said
        assert f"Give this process read access to {sandbox.RUNS_DIR} (a Landlock " in said, said
        assert "without the app's plugin" not in said, said


@pytest.mark.parametrize(
    "argv",
    [
        ["-W", "default", "-m", "unittest"],
        ["-X", "frozen_modules=off", "-m", "unittest"],
        ["--check-hash-based-pycs", "always", "-m", "unittest", "discover"],
        ["-m", "cProfile", "-o", "out", "-m", "unittest"],
        ["-m", "pdb", "-c", "continue", "-m", "unittest", "test_x"],
        ["-m", "trace", "--count", "--module", "unittest"],
        ["-m", "runpy", "unittest", "discover"],
        ["-c", "import runpy; runpy.run_module('unittest', run_name='__main__')"],
        ["-c", "import sys\nimport unittest as ut\nut.main(module=None)"],
        ["-c", "__import__('unittest').main(module=None)"],
        ["-c", "from unittest import TestProgram; TestProgram(module=None)"],
        ["-m", "coverage", "run", "-m", "nose2"],
        ["/venv/bin/coverage-3.12", "run", "-munittest"],
        ["/venv/bin/coverage", "run", "/venv/bin/nose2"],
        ["/venv/bin/memray", "run", "-m", "unittest"],
        ["/venv/bin/trial", "tests"],
        ["-m", "debugpy", "--listen", "5678", "-m", "unittest", "discover"],
        ["-m", "a_wrapper", "--its-option", "-m", "unittest"],
    ],
)
def test_unittest_behind_an_option_or_a_runner_is_taken_for_a_test_run(argv: list[str]) -> None:
    assert sandbox._looks_like_unittest([sys.executable, *argv])


@pytest.mark.parametrize(
    "argv",
    [
        ["-W", "default", "script.py", "unittest"],
        ["-m", "cProfile", "-m", "app", "serve"],
        ["/venv/bin/coverage", "run", "-m", "app", "data", "purge"],
        ["-m", "pdb", "script.py"],
        ["-m", "a_wrapper", "unittest"],
        ["-c", "import unittest as ut; ut.mock.patch"],
    ],
)
def test_a_runner_of_another_program_is_not_taken_for_a_test_run(argv: list[str]) -> None:
    assert not sandbox._looks_like_unittest([sys.executable, *argv])
