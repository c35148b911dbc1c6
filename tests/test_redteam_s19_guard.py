"""The guard's explanations, and cases of the guard nobody named before (red team 19).

A process that merely imports pytest (``time-machine`` does, and so does any library that
ships a pytest plugin in its own package) is not a pytest run without the app's plugin:
inside a run it is sandboxed by the run, and outside any run the app cannot tell which it
is. Each refusal must say which of these it saw, and what resolves it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from app import sandbox
from app.config import load
from app.errors import SandboxViolationError

#: A child of the run that imports pytest through a library, as a test's helper script
#: would: testing on a root of the test's own (from APP_DATA_ROOT), then production.
CHILD = """
import sys
import time_machine  # imports _pytest
from app.config import load
from app.errors import SandboxViolationError

assert "_pytest.main" in sys.modules
print("testing", load("testing").data_root)
try:
    load("production")
except SandboxViolationError as refused:
    print("refused", refused)
"""


def _child(tmp_path: Path) -> list[str]:
    env = {**os.environ, "APP_DATA_ROOT": str(tmp_path / "mine"), "ENV_FOR_DYNACONF": "testing"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_a_child_of_the_run_that_imports_pytest_is_sandboxed_by_the_run(tmp_path: Path) -> None:
    testing, refused = _child(tmp_path)
    # A root of the test's own, inside the sandbox, is the run's to allow.
    assert testing == f"testing {tmp_path / 'mine'}"
    # Another profile is refused by the run's own rule, naming the run and the mark.
    assert refused.startswith("refused refused under pytest (sandbox: "), refused
    assert (
        "loading profile 'production'; tests run on the "
        "'testing' profile (this process belongs to the test run through the process tree "
        f"(an ancestor process, pytest pid {os.getpid()}, registered in "
    ) in refused
    assert "@pytest.mark.app_profile('production')" in refused
    assert "-p no:app" not in refused
    assert "plugin was disabled" not in refused


def _outside_any_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `sandbox.context()` see this process as one that no run marked: no mark on
    ``sys``, no ``/proc`` to find an ancestor (or this process's command line) by, and no
    pytest variables."""
    monkeypatch.delattr(sys, "_app_pytest_runs")
    monkeypatch.setattr(sandbox, "_PROC", Path("/nonexistent-proc"))
    for name in ("PYTEST_CURRENT_TEST", "PYTEST_VERSION"):
        monkeypatch.delenv(name, raising=False)


def _in_a_thread_of_its_own() -> sandbox.Context:
    # A thread's stack holds no pytest code: pytest is imported here, not running.
    seen: list[sandbox.Context] = []
    thread = threading.Thread(target=lambda: seen.append(sandbox.context({})))
    thread.start()
    thread.join()
    return seen[0]


def test_a_process_that_only_imports_pytest_is_told_so_and_what_resolves_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time_machine  # noqa: F401 - one module that imports pytest, to be named

    _outside_any_run(monkeypatch)
    where = _in_a_thread_of_its_own()
    assert where.run is None
    with pytest.raises(SandboxViolationError) as refused:
        sandbox.check_profile("development", "data root /srv/dev", "settings.toml", where)
    message = str(refused.value)
    assert message.startswith(
        "refused under pytest: loading profile 'development' while pytest is imported in "
        f"this process (pid {os.getpid()}) and no run of the app's pytest plugin marked it "
        "or an ancestor: it may be a test run with the plugin switched off"
    ), message
    assert "pytest runs without" not in message
    # The modules that brought pytest in are named (here the app's plugin's come first).
    named = re.search(r"\(pytest imported by ([\w., ]+)\)", message)
    assert named is not None, message
    for name in named.group(1).split(", "):
        assert sys.modules[name].pytest is pytest
    assert "If it runs tests, run them with the app's pytest plugin: " in message
    assert "if it runs none, keep pytest out of it" in message


def test_a_pytest_variable_left_in_a_shell_is_named_with_what_resolves_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _outside_any_run(monkeypatch)
    monkeypatch.delitem(sys.modules, "_pytest.main")
    where = sandbox.context({"PYTEST_VERSION": "9.2.0"})
    with pytest.raises(SandboxViolationError) as refused:
        sandbox.check_profile("development", "data root /srv/dev", "settings.toml", where)
    message = str(refused.value)
    assert "while pytest's variable PYTEST_VERSION is set in this process's environment" in (
        message
    )
    assert "if it runs none, unset PYTEST_VERSION" in message


def test_load_names_the_run_in_this_process_not_a_disabled_plugin() -> None:
    with pytest.raises(SandboxViolationError) as refused:
        load("production")
    assert "plugin was disabled" not in str(refused.value)
    assert "this process belongs to the test run through" in str(refused.value)


#: A test of a run with the plugin switched off: a child with a hand-built environment
#: (no pytest variable, no sandbox) asks for production.
HAND_BUILT_CHILD = """
import os
import subprocess
import sys

def test_a_child_with_a_hand_built_environment_is_refused_production():
    env = {"PATH": os.environ["PATH"], "ENV_FOR_DYNACONF": "production",
           "APP_SETTINGS_DIR": os.environ["APP_SETTINGS_DIR"]}
    code = "from app.config import load; print(load().data_root)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 1, done.stdout
    print("CHILD", done.stderr.strip().splitlines()[-1])
"""


ANCESTOR_REFUSED = (
    "CHILD *SandboxViolationError: refused under pytest: loading profile 'production' while "
    "pytest runs without the app's sandbox (an ancestor process (pid *) runs pytest without "
    "the app's plugin)*"
)


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(("-X", "dev", "-W", "default", "-m", "pytest"), id="interpreter-options"),
        pytest.param(("-c", "import sys, pytest; sys.exit(pytest.main())"), id="pytest.main"),
        # Short options run together, the module or the code glued on or following.
        pytest.param(("-bBmpytest",), id="clustered-module"),
        pytest.param(("-Ic", "import sys, pytest; sys.exit(pytest.main())"), id="clustered-code"),
    ],
)
def test_pytest_behind_interpreter_options_is_recognised_as_an_ancestor(
    pytester: pytest.Pytester, command: tuple[str, ...]
) -> None:
    # Inside this suite the child also belongs to this run, which refuses production on its
    # own; the message tells which rule saw it: the inner pytest without the plugin must be
    # seen, as it must be where no outer run exists (a developer's `python -X dev -m pytest
    # -p no:app`, `coverage run --source app -m pytest -p no:app`).
    pytester.makepyfile(test_child=HAND_BUILT_CHILD)
    result = pytester.run(sys.executable, *command, "-p", "no:app", "-s", "-q")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([ANCESTOR_REFUSED])


PRODUCTION_REFUSED = """
import pytest
from app.config import load
from app.errors import SandboxViolationError

def test_production_is_refused():
    with pytest.raises(SandboxViolationError) as refused:
        load("production")
    print("REFUSED", refused.value)
"""


def test_a_plugin_added_with_autoload_off_but_inactive_is_not_said_to_be_missing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The plugin was added as the refusal used to advise; it stayed inactive because the
    # run's rootdir is another project than the settings'. The refusal said to add it.
    monkeypatch.delenv("APP_SETTINGS_DIR")
    monkeypatch.delenv(sandbox.SANDBOX_ENV)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_refused=PRODUCTION_REFUSED)
    result = pytester.runpytest_subprocess("-p", "app", "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            (
                "app: inactive, nothing neutralised or forced: the settings in * belong to "
                "another project than this run's rootdir *"
            ),
            (
                "*REFUSED refused under pytest: loading profile 'production' while pytest runs "
                "without the app's sandbox (pytest runs in this process, and the app's plugin, "
                "loaded, stayed inactive in it). Run the tests with the app's pytest plugin: it "
                "is loaded in this process but stayed inactive: the settings in * belong to "
                "another project than this run's rootdir (*); set APP_SETTINGS_DIR to use them*"
            ),
        ]
    )
    assert "add `-p" not in result.stdout.str()


def test_with_autoload_off_the_refusal_advises_the_option_that_also_works_with_it_on(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `-p app.testing.plugin` (the old advice), kept in addopts for a CI without autoload,
    # stops every run with autoload on: pytest refuses one module under two names.
    monkeypatch.delenv(sandbox.SANDBOX_ENV)
    pytester.makepyfile(test_refused=PRODUCTION_REFUSED)
    crashed = pytester.runpytest_subprocess("-p", "app.testing.plugin")
    assert "Plugin already registered under a different name" in crashed.stderr.str()
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytester.runpytest_subprocess("-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*REFUSED *PYTEST_DISABLE_PLUGIN_AUTOLOAD is set: add `-p app`*"])
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    pytester.runpytest_subprocess("-p", "app", "-s").assert_outcomes(passed=1)
