"""Red team 69 on regress, the first round (branch rt-regress69a): red team 69 on the
guard's check of a child without its run's capabilities.

Linux lets a process read another's ``/proc/<pid>/exe`` and the links of its ``fd`` where
its *effective* capabilities hold all of the other's permitted ones, in one user namespace
(PTRACE_MODE_FSCREDS). The check compared the child's permitted set, in any namespace. In a
run as root whose test removed its entry, two children given production's settings alone,
each denied the descriptors the run keeps of its entry, were not refused and ran ``app data
purge --profile production --yes-i-mean-it``, which moved every session of a stopped
production root to its trash: one that kept every capability permitted but cleared its
effective set (``capset``, then the app in its own process), and one that ``unshare --user
--map-root-user`` made, holding every capability in a user namespace of its own; and,
once the namespaces' maps of user ids were compared, one in a namespace whose map takes
every id to itself (which reads as the run's does).

A child of a run of a user other than root, started through a setgid program (a copy a
user makes of one of its groups; ``sg``), holds the run's capabilities (none) but not its
group: Linux closes the run's descriptors to it all the same, and with the run's entry
removed it loaded the development profile, outside any run.

And a Python supervisor that runs no tests, starting an app command with fewer capabilities
than its own, was refused "under pytest", with no pytest anywhere: the refusal now says what
it knows (a Python process that may run tests) and what resolves it where none runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from project_copy import copy_project_settings
from side_by_side import INNER_PLUGINS_OFF
from test_redteam_s61_children import PRELUDE, RUNNER, RUNNER_MODULE, run_inner

#: A child that keeps its permitted capabilities but clears its effective ones (``capset``,
#: by ctypes: no library of the standard one does), then runs the app in its own process.
DROP_EFFECTIVE = """
import ctypes, runpy, sys

libc = ctypes.CDLL(None, use_errno=True)
class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class Data(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in ("effective", "permitted", "inheritable")]
header, data = Header(0x20080522, 0), (Data * 2)()
assert libc.capget(ctypes.byref(header), data) == 0
for half in data:
    half.effective = 0
assert libc.capset(ctypes.byref(header), data) == 0
sys.argv = ["app", *sys.argv[1:]]
runpy.run_module("app", run_name="__main__", alter_sys=True)
"""


def in_user_namespace(mapping: str) -> str:
    """A script that runs its arguments (a Python command line) in a user namespace of its
    own, whose user and group maps its parent (root in the run's namespace) writes as
    `mapping` (lines of ``inside outside count``, as newuidmap writes them for a user)."""
    return """
import ctypes, os, sys

ready, go = os.pipe(), os.pipe()
pid = os.fork()
if pid == 0:
    assert ctypes.CDLL(None, use_errno=True).unshare(0x10000000) == 0  # CLONE_NEWUSER
    os.write(ready[1], b"x")
    os.read(go[0], 1)
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
os.read(ready[0], 1)
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{pid}/{name}", "w") as file:
        file.write(MAPPING)
os.write(go[1], b"x")
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
""".replace("MAPPING", repr(mapping))


#: A child in a user namespace of its own whose map takes every id to itself (written by its
#: parent, root in the run's namespace), then the app there: the map reads as the run's does.
FULL_MAP = in_user_namespace("0 0 4294967295\n")

#: The inner run's tests: its entry removed (what the run keeps open of it left open), then
#: a child given production's settings alone, its effective capabilities cleared, or in a
#: user namespace of its own.
INNER = (
    PRELUDE
    + f"""

DROP_EFFECTIVE = {DROP_EFFECTIVE!r}
FULL_MAP = {FULL_MAP!r}


def child(name, argv):
    sandbox._own_entry().unlink()
    done = subprocess.run(argv, env=ENV, capture_output=True, text=True)
    (OUT / name).write_text(f"{{done.returncode}}\\n{{done.stdout}}{{done.stderr}}")


def test_effective_cleared():
    child("effective", [sys.executable, "-c", DROP_EFFECTIVE, *PURGE[3:]])


def test_user_namespace():
    child("userns", ["unshare", "--user", "--map-root-user", *PURGE])


def test_user_namespace_of_every_id():
    child("fullmap", [sys.executable, "-c", FULL_MAP, *PURGE[1:]])
"""
)


def _held() -> int:
    """How many capabilities this process holds permitted, as its inner runs do."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if "CapPrm" in x)
    return bin(int(line.split()[1], 16)).count("1")


_ROOT = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("setpriv") is None,
    reason="only a process with capabilities (root) has any for its child to lack; the run "
    "is kept out of this run's process tree in a PID namespace of its own (unshare --pid)",
)


@_ROOT
def test_a_child_without_its_runs_capabilities_in_effect_or_in_its_namespace_is_refused(
    tmp_path: Path,
) -> None:
    inner, said = run_inner(tmp_path, INNER, ("effective", "userns", "fullmap"))
    for name, text in said.items():
        code, _, output = text.partition("\n")
        assert code == "78", (name, text)
        assert "while a test run may be above this process (ancestor pid " in output, output
        # The run, or (of the map of every id) the nearer Python that wrote the map.
        assert "run_tests.py -p no:cacheprovider" in output or name == "fullmap", output
        assert "; Python, its command line naming no pytest), whose entry in " in output
        assert output.startswith("error: refused under a Python process that may run tests: ")
        assert "/exe and the descriptors it keeps open, where a run keeps its entry, " in output
    assert (
        f"(it holds {_held()} capabilities that this process holds permitted but not in effect, "
        "CAP_SYS_PTRACE among them)"
    ) in said["effective"], said["effective"]
    assert "with the capabilities of pid " in said["effective"], said["effective"]
    assert (
        " in effect (not under `setpriv --bounding-set=-all`, `capsh --drop`" in (said["effective"])
    )
    assert (
        "the registry does not show one, and it lives in another user namespace than "
        "this process (`unshare --user`, a container's), where this process's capabilities "
        "count for nothing, so /proc/"
    ) in said["userns"], said["userns"]
    assert "Start this process in the user namespace of pid " in said["userns"], said["userns"]
    assert (
        "the registry does not show one, and it lives in another user namespace than this "
        "process, as far as it can tell (this process's, user:["
    ) in said["fullmap"], said["fullmap"]
    assert (
        "], is not Linux's first, and nothing else it may read explains why /proc/"
        in (said["fullmap"])
    )
    assert "this run's entry in " in inner.stdout, inner.stdout


#: A Python supervisor that runs no tests: an app command started with every capability
#: dropped, then with its own.
SUPERVISOR = """
import json, subprocess, sys

env = {"PATH": "/usr/bin:/bin", "APP_SETTINGS_DIR": sys.argv[1]}
app = [sys.executable, "-m", "app", "config"]
drop = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all"]
for argv in (drop + app, app):
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    print(json.dumps([done.returncode, done.stderr.strip()]))
"""


@_ROOT
def test_a_python_supervisor_is_not_named_pytest_in_the_refusal(tmp_path: Path) -> None:
    settings = copy_project_settings(tmp_path / "settings")
    done = subprocess.run(
        [
            # Out of this run's tree, its own namespace's pid 1, as a service's would be.
            *("unshare", "--pid", "--fork", "--mount-proc"),
            *(sys.executable, "-c", SUPERVISOR, str(settings)),
        ],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    (code, dropped), kept = (json.loads(line) for line in done.stdout.splitlines())
    assert kept == [0, ""], done.stdout
    assert code == 78, dropped
    assert dropped.startswith(
        "error: refused under a Python process that may run tests: loading profile "
        "'development' while a test run may be above this process (ancestor pid 1: "
    ), dropped
    assert "under pytest" not in dropped, dropped
    assert "; Python, its command line naming no pytest), whose entry in the " in dropped
    assert (
        f"(it holds {_held()} capabilities that this process lacks, CAP_SYS_PTRACE among them)"
    ) in dropped, dropped
    assert (
        ". If pid 1 runs no tests, this process still cannot tell it from a run whose entry a "
        "test removed: start this process with its capabilities in effect, or start pid 1 "
        "without those this process lacks (a unit's CapabilityBoundingSet=, `setpriv "
        "--bounding-set`)"
    ) in dropped, dropped


#: A run of a user other than root (`_USER`) whose test removes its entry, then starts
#: a child with the development profile through a setgid program.
AS_USER = """
import os, subprocess, sys
from app import sandbox

def test_children():
    sandbox._own_entry().unlink()
    env = {"PATH": "/usr/bin:/bin", "APP_SETTINGS_DIR": os.environ["APP_SETTINGS_DIR"]}
    app = [sys.executable, "-m", "app", "--profile", "development", "config"]
    argv = [os.environ["RT69A_SETGID"], *app]
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    with open(os.path.join(os.environ["RT69A_OUT"], "setgid"), "w") as file:
        file.write(f"{done.returncode}\\n{done.stderr}")
"""

#: A user and a group no account has here, the run's and the setgid program's.
_USER, _GROUP = 54321, 54320

#: As root in the run's own mount namespace: a registry of the run's user made its own (a
#: tmpfs over it, as `run_inner` does), then the run as that user, its groups its own.
_AS_USER = (
    f'mkdir -p "$1" && chown {_USER}:{_USER} "$1" && chmod 755 "$1" && '
    f'mount -t tmpfs -o mode=0755,uid={_USER},gid={_USER} app-runs "$1" && shift && '
    f'exec setpriv --reuid={_USER} --regid={_USER} --clear-groups "$@"'
)


def skip_unless_reachable_as(uid: int, gid: int) -> None:
    """Skip, saying why, where user `uid` may not run this checkout's interpreter and import
    the app from it: a checkout under a directory closed to other users (root's home, a CI
    runner's workspace of mode 0700), where the run of that user could not start at all."""
    as_user = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    done = subprocess.run(
        [*as_user, sys.executable, "-c", "import app.sandbox"],
        env={"PATH": "/usr/bin:/bin"},
        cwd="/",
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(
            f"user {uid} may not run {sys.executable} and import the app from this checkout "
            f"(a directory above it is closed to other users): {done.stderr.strip()[-200:]}"
        )


@_ROOT
def test_a_child_of_another_group_than_its_runs_is_refused_where_the_entry_is_gone() -> None:
    skip_unless_reachable_as(_USER, _USER)
    # Not under tmp_path: its directories are root's alone (0700), closed to the run's user.
    # In /tmp by name: the run's user must enter it, and TMPDIR may be closed to it
    # (scripts/test's, 0700, on /dev/shm).
    top = Path(tempfile.mkdtemp(prefix="rt69a-", dir="/tmp"))
    try:
        top.chmod(0o755)
        project = copy_project_settings(top / "project")
        (project / "test_children.py").write_text(AS_USER)
        (project / "run_tests.py").write_text(RUNNER)
        (project / "runner_module.py").write_text(RUNNER_MODULE)
        out = top / "out"
        out.mkdir(mode=0o777)
        out.chmod(0o777)
        # A setgid program of a group the run's user lacks (root makes it here; a user
        # makes one of a group of its own: `cp /usr/bin/env .; chmod g+s env`).
        setgid = top / "env"
        shutil.copy("/usr/bin/env", setgid)
        os.chown(setgid, 0, _GROUP)
        setgid.chmod(0o2755)
        run = subprocess.run(
            [
                *("unshare", "--pid", "--fork", "--mount-proc"),
                *("sh", "-c", _AS_USER, "sh", f"/tmp/app-pytest-runs-{_USER}"),
                *(sys.executable, "run_tests.py", "-q", "-p", "no:cacheprovider"),
                *("-p", "no:xdist", "-p", "no:randomly", f"--basetemp={out / 'inner'}"),
            ],
            env={
                "PATH": "/usr/bin:/bin",
                "HOME": str(out),
                "APP_SETTINGS_DIR": str(project),
                "PYTEST_ADDOPTS": INNER_PLUGINS_OFF,
                "RT69A_OUT": str(out),
                "RT69A_SETGID": str(setgid),
            },
            cwd=project,
            capture_output=True,
            text=True,
            check=False,
        )
        by_group = (out / "setgid").read_text()
    finally:
        shutil.rmtree(top)
        # The registry's mount point, made on this machine's /tmp before the tmpfs went over
        # it in the run's own mount namespace: empty here, and no one's (no account has
        # that user), so not left behind.
        with contextlib.suppress(OSError):
            Path(f"/tmp/app-pytest-runs-{_USER}").rmdir()
    assert "this run's entry in " in run.stdout, run.stdout
    code, _, said = by_group.partition("\n")
    assert code == "78", by_group
    assert said.startswith(
        "error: refused under a Python process that may run tests: loading profile "
        "'development' while a test run may be above this process (ancestor pid 1: "
    ), said
    assert (
        f"this process (user {_USER}) cannot look for: the registry does not show one, and its "
        f"user or group ids are not this process's (it runs with group ids {_USER}/{_USER}/"
        f"{_USER} where this process's is {_GROUP}: a setgid program, `sg` or `newgrp` between "
        "them), so /proc/1/exe and the descriptors it keeps open"
    ) in said, said
    assert (
        "Start this process with the user and groups of pid 1 (not through a setgid or setuid "
        "program, `sg` or `newgrp`), or outside the test run"
    ) in said, said
