"""Processes the guard must see as part of a test run, or as holding a data root (red team 20).

Each case is a real process arrangement: a PID namespace made with ``unshare`` (as a
container runtime makes one), a lock file deleted under a live holder, a command line that
only names pytest.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

#: A test of the inner run: a child with a hand-built environment (no pytest variable, no
#: sandbox; production's token, so that nothing else stops the load) asks for production.
HAND_BUILT_CHILD = """
import os
import subprocess
import sys

def test_a_child_with_a_hand_built_environment_asks_for_production():
    assert os.getpid() == 1
    env = {"PATH": os.environ["PATH"], "ENV_FOR_DYNACONF": "production",
           "APP_SETTINGS_DIR": os.environ["APP_SETTINGS_DIR"], "APP_API_TOKEN": "t" * 32}
    code = "from app.config import load; print('LOADED', load().data_root)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    print("CHILD", (done.stdout + done.stderr).strip().splitlines()[-1])
"""


def _unshare_allowed() -> bool:
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc", "true"],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


@pytest.mark.parametrize(
    ("plugin", "refused"),
    [
        pytest.param(
            (),
            "CHILD *SandboxViolationError: refused under pytest (sandbox: *): loading profile "
            "'production'; tests run on the 'testing' profile (this process belongs to the test "
            "run through the process tree (an ancestor process, pytest pid 1, registered in *",
            id="with-the-plugin",
        ),
        pytest.param(
            ("-p", "no:app"),
            "CHILD *SandboxViolationError: refused under pytest: loading profile 'production' "
            "while pytest runs without the app's sandbox (an ancestor process (pid 1) runs "
            "pytest without the app's plugin)*",
            id="without-the-plugin",
        ),
    ],
)
def test_a_child_of_pytest_running_as_pid_1_of_a_container_belongs_to_its_run(
    pytester: pytest.Pytester, plugin: tuple[str, ...], refused: str
) -> None:
    # `docker run image pytest` makes pytest the container's pid 1. The walk up the process
    # tree stopped before pid 1, so such a run's children were never part of it: a child
    # given a hand-built environment loaded production.
    if not _unshare_allowed():
        pytest.skip("this machine does not let an unprivileged user make a PID namespace")
    pytester.makepyfile(test_child=HAND_BUILT_CHILD)
    namespace = ("unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc")
    basetemp = f"--basetemp={pytester.path / 'basetemp'}"
    result = pytester.run(
        *namespace,
        sys.executable,
        "-m",
        "pytest",
        *plugin,
        basetemp,
        "-s",
        "-q",
        "-p",
        "no:randomly",
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([refused])
    assert "LOADED" not in result.stdout.str()
