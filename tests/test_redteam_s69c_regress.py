"""Red team 69 on regress, the third round (branch rt-regress69c): red team 69a's check of
a child denied its run's ``/proc/<pid>/exe``.

Linux closes ``/proc/<pid>/exe`` and ``fd`` of a process that is not dumpable to every
process without ``CAP_SYS_PTRACE``, whatever their ids and capabilities, and shows the files
of its ``/proc/<pid>`` as root's. A test of a run (``python -m pytest``) that removed its
run's entry, then made the run's own process not dumpable (``prctl(PR_SET_DUMPABLE, 0)``),
had children in which nothing explained the denial: one of a run of a user other than root,
and one of a run as root without ``CAP_SYS_PTRACE`` (a container's default capabilities).
Each was refused only for the run's command line, as under "a pytest without the app's
plugin", and told to run with the plugin, which was on: the refusal now says the run is not
dumpable to it. (Under a runner script whose command line names no pytest, such a child
loaded the development profile: a *not stopped* row.)

And a Python daemon that drops root's ids itself (``celery --uid``; gunicorn's workers under
``--user``), not dumpable, in a rootless container's user namespace, was refused every app
command it started, as "in another user namespace": it runs them now, as it did without a
user namespace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from project_copy import copy_project_settings
from side_by_side import INNER_PLUGINS_OFF
from test_redteam_s69a_regress import in_user_namespace, skip_unless_reachable_as

#: The inner run's test: its entry removed, its own process made not dumpable, then a child
#: with the development profile (loaded outside any run, refused in one).
UNDUMPABLE = """
import ctypes, os, subprocess, sys
from app import sandbox

def test_children():
    sandbox._own_entry().unlink()
    assert ctypes.CDLL(None).prctl(4, 0, 0, 0, 0) == 0  # PR_SET_DUMPABLE
    env = {"PATH": "/usr/bin:/bin", "APP_SETTINGS_DIR": os.environ["APP_SETTINGS_DIR"]}
    app = [sys.executable, "-m", "app", "--profile", "development", "config"]
    done = subprocess.run(app, env=env, capture_output=True, text=True)
    with open(os.path.join(os.environ["RT69C_OUT"], "said"), "w") as file:
        file.write(f"{done.returncode}\\n{done.stderr}")
"""

#: A user no account has here, the run's in the first case.
_USER = 54323  # not red team 69a's 54321: their registries' mount points differ

#: As root in the run's own mount namespace: the registry of the run's user made its own (a
#: tmpfs over it), then the run, as that user or as root without CAP_SYS_PTRACE.
_SHELL = 'mkdir -p "$1" && chmod 755 "$1" && mount -t tmpfs -o mode=0755,uid={0},gid={0} r "$1"'
_AS = {
    _USER: f"setpriv --reuid={_USER} --regid={_USER} --clear-groups",
    0: "setpriv --bounding-set=-sys_ptrace --inh-caps=-sys_ptrace",
}

_ROOT = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("setpriv") is None,
    reason="root makes the run's user and drops its CAP_SYS_PTRACE; the run is kept out of "
    "this run's process tree in a PID namespace of its own (unshare --pid)",
)


def _run(user: int) -> tuple[str, str]:
    """A run of `user` whose test made its process not dumpable: its output, and the child's
    exit code and stderr."""
    # In /tmp, which every user may pass through (the run's user must read the project
    # there), not in TMPDIR: scripts/test's is private to its user (0700, on /dev/shm).
    top = Path(tempfile.mkdtemp(prefix="rt69c-", dir="/tmp"))
    registry = f"/tmp/app-pytest-runs-{user}"
    made = not Path(registry).exists()
    try:
        top.chmod(0o755)
        project = copy_project_settings(top / "project")
        (project / "test_children.py").write_text(UNDUMPABLE)
        out = top / "out"
        out.mkdir(mode=0o777)
        out.chmod(0o777)
        run = subprocess.run(
            [
                *("unshare", "--pid", "--fork", "--mount-proc", "sh", "-c"),
                f'{_SHELL.format(user)} && shift && exec {_AS[user]} "$@"',
                *("sh", registry, sys.executable, "-m", "pytest", "-q", "-p", "no:xdist"),
                *("-p", "no:cacheprovider", "-p", "no:randomly", f"--basetemp={out / 'inner'}"),
            ],
            env={
                "PATH": "/usr/bin:/bin",
                "HOME": str(out),
                "APP_SETTINGS_DIR": str(project),
                "PYTEST_ADDOPTS": INNER_PLUGINS_OFF,
                "RT69C_OUT": str(out),
            },
            cwd=project,
            capture_output=True,
            text=True,
            check=False,
        )
        said = (out / "said").read_text()
    finally:
        shutil.rmtree(top)
        if made:  # the mount point the tmpfs went over in the run's own mount namespace
            with contextlib.suppress(OSError):
                Path(registry).rmdir()
    code, _, stderr = said.partition("\n")
    assert code == "78", (run.stdout, said)
    return run.stdout, stderr


@_ROOT
@pytest.mark.parametrize("user", [_USER, 0], ids=["of-a-user", "root-without-ptrace"])
def test_a_child_of_a_run_made_not_dumpable_is_refused(user: int) -> None:
    if user:
        skip_unless_reachable_as(user, user)
    stdout, said = _run(user)
    assert "this run's entry in " in stdout, stdout
    assert said.startswith(
        "error: refused under pytest: loading profile 'development' while a test run may be "
        "above this process (ancestor pid 1: "
    ), said
    assert (
        "-m pytest -q -p no:xdist -p no:cacheprovider -p no:randomly --basetemp=/tmp/rt69c-"
    ) in said, said
    assert (
        f"), whose entry in the registry of test runs this process (user {user}) cannot look "
        "for: the registry does not show one, and it is not dumpable to this process, as far "
        "as it can tell ("
    ) in said, said
    shown = (
        f"its /proc/1/status is root's while it runs as user {user}, as Linux shows a process "
        "that is not dumpable"
        if user
        else "nothing else this process may read explains why it is closed to it"
    )
    assert (
        f"{shown}: `prctl(PR_SET_DUMPABLE, 0)`, ids changed without an exec, or a security "
        "module such as AppArmor or SELinux), so /proc/1/exe and the descriptors it keeps "
        "open, where a run keeps its entry, are closed to this process"
    ) in said, said
    assert (
        "Start this process where pid 1 is dumpable (no test may call "
        "`prctl(PR_SET_DUMPABLE, 0)` in its run's process) and no security module confines "
        "this process apart from it, or with CAP_SYS_PTRACE, or outside the test run"
    ) in said, said


#: A Python daemon that drops root's ids itself (``celery --uid``; gunicorn's workers under
#: ``--user``), then starts an app command with the development profile.
DAEMON = """
import os, subprocess, sys

os.setgroups([])
os.setgid(54323)
os.setuid(54323)
env = {"PATH": "/usr/bin:/bin", "APP_SETTINGS_DIR": sys.argv[1]}
done = subprocess.run([sys.executable, "-m", "app", "--profile", "development", "config"],
                      env=env, capture_output=True, text=True)
print(done.returncode, done.stderr)
"""

#: A rootless container's runtime, as far as this machine allows: the daemon in a user
#: namespace of its own whose map holds root and the daemon's user (root writes it here;
#: newuidmap does for a user), with setgroups allowed as a container's are.
CONTAINER = in_user_namespace("0 0 1\n54323 54323 1\n")


@_ROOT
def test_a_python_daemon_not_dumpable_in_a_rootless_container_runs_the_app() -> None:
    skip_unless_reachable_as(_USER, _USER)
    # Not under tmp_path: its directories are root's alone (0700), closed to the daemon's user;
    # nor in TMPDIR, for the same reason where scripts/test put it (0700, on /dev/shm).
    top = Path(tempfile.mkdtemp(prefix="rt69c-", dir="/tmp"))
    try:
        top.chmod(0o755)
        settings = copy_project_settings(top / "settings")
        done = subprocess.run(
            [
                *("unshare", "--pid", "--fork", "--mount-proc"),
                # The runtime runs Python with the words after its own program.
                *(sys.executable, "-c", CONTAINER, "-c", DAEMON, str(settings)),
            ],
            env={"PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        shutil.rmtree(top)
    assert done.stdout == "0 \n", done.stdout
