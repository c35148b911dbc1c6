"""Red team 29 on the guard: the run's own process replaced by another program, and nose2.

A test can end its pytest process without ending it: ``os.execve`` (or libc's ``execve``
through ``ctypes``, which raises no audit event) runs another program in the same process,
with the same pid and start time, so the same registry entry, and no mark on ``sys`` (a new
interpreter). Each case is real: a stopped production root named by the settings, a pytest
run in a PID namespace with a ``/proc`` of its own (outside this suite's run), production
exported in its shell, a test that ``exec``s a runner script (``python runner.py``, as IDEs
and CI wrappers start pytest, so no command line shows pytest) in another project's
directory with ``PATH`` alone, whose tests' children run ``app data purge --yes-i-mean-it``.
The last case runs a ``TestCase`` with nose2 (no plugin of the app's), in the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
from test_redteam_s22_guard import OWN_PROC, _own_proc_allowed
from test_redteam_s24_guard import _inner_env
from test_redteam_s27_guard import _stopped_production
from test_server_e2e import snapshot

#: The test of the enclosing run: it runs the runner in its own place, as a wrapper that
#: `exec`s its real command does, with PATH and the settings' directory alone.
EXECS = """
import contextlib, os, sys


def test_runs_another_program_in_its_place():
    os.chdir(os.environ["S29_OTHER"])
    # The run's sealed copy of its entry kept across the exec (red team 73 on regress).
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:app-run-entry:"):
                os.set_inheritable(int(fd), True)
    env = {"PATH": os.environ["PATH"], "S29_SETTINGS": os.environ["APP_SETTINGS_DIR"]}
    os.execve(sys.executable, [sys.executable, "runner.py", os.environ["S29_DATA"]], env)
"""

#: The program the run's process becomes: two pytest runs of another project (the app's
#: plugin stays inactive there), then the app's purge by libc's execve (no audit event).
RUNNER = """
import ctypes, os, sys

import pytest

code = pytest.main(["-q", "-s", "-p", "no:cacheprovider", "test_child.py"])
print("CASE child run:", int(code), flush=True)
code = pytest.main(["-q", "-p", "no:cacheprovider", f"--basetemp={sys.argv[1]}", "test_nothing.py"])
print("CASE basetemp run:", int(code), flush=True)
argv = [sys.executable, "-m", "app", "data", "purge", "--yes-i-mean-it"]
env = [f"PATH={os.environ['PATH']}", f"APP_SETTINGS_DIR={os.environ['S29_SETTINGS']}",
       "ENV_FOR_DYNACONF=production", "APP_API_TOKEN=" + "p" * 32]
c_argv = (ctypes.c_char_p * (len(argv) + 1))(*[a.encode() for a in argv], None)
c_env = (ctypes.c_char_p * (len(env) + 1))(*[e.encode() for e in env], None)
ctypes.CDLL(None).execve(sys.executable.encode(), c_argv, c_env)
"""

CHILD = """
import os, subprocess, sys


def test_purges_production_in_a_child():
    env = {"PATH": os.environ["PATH"], "APP_SETTINGS_DIR": os.environ["S29_SETTINGS"],
           "ENV_FOR_DYNACONF": "production", "APP_API_TOKEN": "p" * 32}
    done = subprocess.run([sys.executable, "-m", "app", "data", "purge", "--yes-i-mean-it"],
                          env=env, capture_output=True, text=True)
    said = (done.stdout + done.stderr).strip().replace("\\n", " ")
    print("CASE purge:", done.returncode, said, flush=True)
"""

#: pid 1 of the namespace: the enclosing run, and what its process's last program exited with.
INIT = """
"$1" -m pytest -q -s -p no:cacheprovider --basetemp="$2" test_execs.py
echo "CASE exit: $?"
"""


class Outcome(NamedTuple):
    """Production's files (sha256) before and after, the enclosing run's pid, each case."""

    before: dict[str, str]
    after: dict[str, str]
    production: Path
    cases: dict[str, str]
    output: str


@pytest.fixture(scope="module")
def exec_run(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """The run, once."""
    if not _own_proc_allowed():
        pytest.skip("needs unshare --pid --mount-proc")
    tmp_path = tmp_path_factory.mktemp("s29")
    settings, production = _stopped_production(tmp_path)
    before = snapshot(production)
    project, other = tmp_path / "project", tmp_path / "other"
    for directory, files in (
        (project, {"test_execs.py": EXECS}),
        (other, {"runner.py": RUNNER, "test_child.py": CHILD,
                 "test_nothing.py": "def test_nothing(tmp_path):\n    pass\n"}),
    ):  # fmt: skip
        directory.mkdir()
        for name, text in files.items():
            (directory / name).write_text(text)
    own_proc = ("unshare", "--pid", "--fork", "--mount-proc") if os.geteuid() == 0 else OWN_PROC
    # A shell's environment, production exported: none of this suite's run's variables.
    env = {k: v for k, v in _inner_env().items() if not k.startswith("PYTEST_")}
    env.update(
        APP_SETTINGS_DIR=str(settings), ENV_FOR_DYNACONF="production", APP_API_TOKEN="p" * 32,
        S29_OTHER=str(other), S29_DATA=str(settings / "data"), TMPDIR=str(tmp_path),
    )  # fmt: skip
    done = subprocess.run(
        [*own_proc, "sh", "-c", INIT, "sh", sys.executable, str(tmp_path / "bt")],
        env=env, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        check=False,
    )  # fmt: skip
    cases = dict(
        line.partition("CASE ")[2].split(": ", 1)
        for line in done.stdout.splitlines()
        if "CASE " in line
    )
    after = snapshot(production) if production.is_dir() else {}
    return Outcome(before, after, production, cases, done.stdout)


def test_a_child_of_a_runner_the_run_execs_stays_in_the_run(exec_run: Outcome) -> None:
    # The runner's pytest imported the app's plugin, which wrote "a run is starting" over
    # the run's own entry (same pid and start time), then, inactive in another project,
    # withdrew it: the run's process had no entry left, and a child its tests started with
    # a hand-built environment, under a command line that shows no pytest, purged production.
    before, after, production, cases, output = exec_run
    assert after == before, output
    purge = cases.get("purge", "")
    assert purge.startswith(
        "78 error: refused under pytest (sandbox: "
        f"{production.parent.parent.parent / 'bt'}): loading profile 'production'; tests "
        "run on the 'testing' profile (this process belongs to the test run through the "
        "process tree (an ancestor process, pytest pid "
    ), output
    assert cases.get("child run") == "0", output


def test_a_basetemp_of_a_pytest_the_run_execs_keeps_the_runs_roots(exec_run: Outcome) -> None:
    # The same pytest, inactive, checks its --basetemp by what is on disk and by the roots
    # the enclosing run protects; with the run's entry gone it knew none, skipped the
    # stamped production root below the --basetemp, and pytest deleted it.
    _, _, production, cases, output = exec_run
    data = production.parent
    assert cases.get("basetemp run") == "4", output
    assert (
        f"ERROR: app: refusing --basetemp {data}: pytest empties it before the run, and it "
        "overlaps the data root of profile 'development (protected by the enclosing test run, "
        "pytest pid "
    ) in output, output
    assert "The app's plugin is inactive in this run (" in output, output


def test_the_app_the_run_execs_by_libc_is_refused_naming_the_exec(exec_run: Outcome) -> None:
    # Held before the fix when the test itself execs the app (the entry is the process's
    # own): libc's execve raises no audit event, and the new interpreter has no mark on
    # sys, but its pid and start time are the run's. The refusal now says so. The test
    # kept the run's sealed copy of its entry open across both execs: before red team 73
    # on regress, "(this process, registered in ...", as if it had run no other program.
    _, _, _, cases, output = exec_run
    assert cases.get("exit") == "78", output
    assert (
        "loading profile 'production'; tests run on the 'testing' profile (this process "
        "belongs to the test run through the process tree (this process, pytest pid "
    ) in output, output
    assert "until it ran another program in its place (exec), registered in " in output, output


#: A TestCase as the incident's shell runs it (production exported), whose maintenance
#: command runs in a child: with the shell's environment under `python -m nose2`, with a
#: hand-built one under the `nose2` script.
TESTCASE = """
import os, subprocess, sys, unittest

HAND_BUILT = {"PATH": os.environ["PATH"], "APP_SETTINGS_DIR": os.environ["APP_SETTINGS_DIR"],
              "ENV_FOR_DYNACONF": "production", "APP_API_TOKEN": "p" * 32}


class Purges(unittest.TestCase):
    def test_purges_in_a_child(self):
        env = None if os.environ["S29_RUNNER"] == "module" else HAND_BUILT
        done = subprocess.run(
            [sys.executable, "-m", "app", "data", "purge", "--yes-i-mean-it"],
            env=env, capture_output=True, text=True,
        )
        said = (done.stdout + done.stderr).strip().replace("\\n", " ")
        print(f"CASE {os.environ['S29_RUNNER']}:", done.returncode, said, flush=True)
"""


def test_a_child_of_a_testcase_nose2_runs_is_refused_production(tmp_path: Path) -> None:
    # unittest has no plugins, so the app reads its command lines: `python -m unittest`
    # was a test run, but nose2 (its module and its script), which runs the same
    # TestCases, was not. A TestCase's child purged the production the shell exported,
    # with the shell's environment, as the incident's did, and with a hand-built one.
    if not _own_proc_allowed():
        pytest.skip("needs unshare --pid --mount-proc")
    settings, production = _stopped_production(tmp_path)
    before = snapshot(production)
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_purges.py").write_text(TESTCASE)
    own_proc = ("unshare", "--pid", "--fork", "--mount-proc") if os.geteuid() == 0 else OWN_PROC
    env = {k: v for k, v in _inner_env().items() if not k.startswith("PYTEST_")}
    env.update(
        APP_SETTINGS_DIR=str(settings), ENV_FOR_DYNACONF="production", APP_API_TOKEN="p" * 32
    )
    script = 'S29_RUNNER=module "$1" -m nose2 -s "$3"; S29_RUNNER=script "$2" -s "$3"'
    nose2 = Path(sys.executable).parent / "nose2"
    done = subprocess.run(
        [*own_proc, "sh", "-c", script, "sh", sys.executable, str(nose2), str(tests)],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        check=False,
    )  # fmt: skip
    assert snapshot(production) == before, done.stdout
    cases = [line for line in done.stdout.splitlines() if line.startswith("CASE ")]
    assert len(cases) == 2, done.stdout
    for line in cases:
        assert ": 78 error: refused under unittest: loading profile 'production' while " in line
        assert (
            "unittest runs without the app's sandbox (an ancestor process runs tests with " in line
        )
        assert "unittest (pid " in line and "nose2" in line, line
        assert "Run the tests with pytest instead" in line, line
