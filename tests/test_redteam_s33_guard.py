"""Red team 33 on the guard: what a run trusted another process to have checked.

An xdist worker skipped the check of what pytest writes, trusting its controller to have made
it. A process passes for a worker when ``PYTEST_XDIST_WORKER`` is set and its parent is the
run that owns the sandbox it inherited: a pytest that a test of a run without xdist starts
with that one variable set is such a process (its parent, the test's process, is the run).
Its ``--junitxml`` rewrote a live production session's ``session.json`` (the server then
answered 500 for it). The same trust in a name: the second check of what pytest writes, once
the conftests have added their options, was a plugin registered under a name of its own,
which ``-p no:<name>`` blocks. Each case is real: pytest runs in a subprocess, next to a stopped
production root named by the settings.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import forked_pytest
from test_redteam_s24_guard import A_TEST, _inner_env
from test_redteam_s27_guard import _tmpdir
from test_redteam_s31_guard import stopped  # noqa: F401 - a fixture
from test_server_e2e import snapshot


def test_a_pytest_passed_off_as_an_xdist_worker_checks_what_it_writes(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    settings, production = stopped
    [record] = production.glob("sessions/*/session.json")
    (tmp_path / "test_inner.py").write_text(A_TEST)
    before = snapshot(production)
    env = _inner_env(
        APP_SETTINGS_DIR=str(settings),
        TMPDIR=_tmpdir(tmp_path),
        # All a test of a run without xdist sets: the owner is its own process there. Under
        # xdist it is the controller, so this test names its own process, as a worker's
        # test that copies a serial run's environment would.
        PYTEST_XDIST_WORKER="gw0",
        PYTEST_APP_SANDBOX_OWNER=str(os.getpid()),
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
         f"--junitxml={record}", "test_inner.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert snapshot(production) == before, output
    assert done.returncode == 4, output
    assert (
        f"app: refusing to run: pytest's --junitxml rewrites {record} as the run ends, which "
        "lies in the data root of profile 'production'"
    ) in " ".join(output.split()), output


def test_the_check_of_what_a_conftests_plugin_writes_cannot_be_blocked_by_name(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # The check once the conftests have added their options was a plugin object registered
    # as `app-pytest-writes`, which `-p no:app-pytest-writes` blocked with the app's plugin
    # active; pytest's junitxml, blocked as `junitxml` and registered by a conftest under its
    # module's name, then rewrote a live production session's record.
    settings, production = stopped
    [record] = production.glob("sessions/*/session.json")
    (tmp_path / "test_inner.py").write_text(A_TEST)
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["_pytest.junitxml"]\n')
    before = snapshot(production)
    env = _inner_env(APP_SETTINGS_DIR=str(settings), TMPDIR=_tmpdir(tmp_path))
    done = forked_pytest.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-p", "no:junitxml",
         "-p", "no:app-pytest-writes", f"--junitxml={record}", "test_inner.py"],
        cwd=tmp_path, env=env,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert snapshot(production) == before, output
    assert done.returncode == 4, output
    assert (
        f"app: refusing to run: pytest's --junitxml rewrites {record} as the run ends, which "
        "lies in the data root of profile 'production'"
    ) in " ".join(output.split()), output


#: A test that says no run is on, as a unit test of the app outside tests would, then purges
#: the production its settings name.
SAYS_NO_RUN = """from app import sandbox
from app.config import load
from app.storage import open_storage


def test_purge(monkeypatch):
    monkeypatch.setattr(sandbox, "context", lambda environ=None: sandbox.OUTSIDE)
    config = load("production", serving=False)
    print("LOADED", config.data_root)
    with open_storage(config, writer=True) as store:
        store.purge()
"""


def test_a_test_that_replaces_the_sandboxs_answer_still_meets_its_checks(
    stopped: tuple[Path, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # With `app.sandbox.context` replaced, `load` took production's settings unchecked, and
    # the store opened on them purged a stopped production root. The checks of a root now
    # read the process's mark and the process tree themselves.
    settings, production = stopped
    (tmp_path / "test_inner.py").write_text(SAYS_NO_RUN)
    before = snapshot(production)
    env = _inner_env(APP_SETTINGS_DIR=str(settings), TMPDIR=_tmpdir(tmp_path))
    done = forked_pytest.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s", "test_inner.py"],
        cwd=tmp_path, env=env,
    )  # fmt: skip
    output = " ".join((done.stdout + done.stderr).split())
    assert snapshot(production) == before, output
    assert f"LOADED {production}" in output, output
    assert re.search(
        rf"SandboxViolationError: refused under pytest \(sandbox: [^)]*\): open data root "
        rf"{re.escape(str(production))}, which lies outside the test sandbox \(this process "
        r"belongs to the test run through this process; the app's own answer to which run "
        r"this process is in "
        r"\(app.sandbox.context, current_run\) said none, so a test replaced it \(monkeypatch, "
        r"mock.patch\), which keeps no data root out of a test's reach\)",
        output,
    ), output
