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
--map-root-user`` made, holding every capability in a user namespace of its own.

And a Python supervisor that runs no tests, starting an app command with fewer capabilities
than its own, was refused "under pytest", with no pytest anywhere: the refusal now says what
it knows (a Python process that may run tests) and what resolves it where none runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from project_copy import copy_project_settings
from test_redteam_s61_children import PRELUDE, run_inner

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

#: The inner run's tests: its entry removed (what the run keeps open of it left open), then
#: a child given production's settings alone, its effective capabilities cleared, or in a
#: user namespace of its own.
INNER = (
    PRELUDE
    + f"""

DROP_EFFECTIVE = {DROP_EFFECTIVE!r}


def child(name, argv):
    sandbox._own_entry().unlink()
    done = subprocess.run(argv, env=ENV, capture_output=True, text=True)
    (OUT / name).write_text(f"{{done.returncode}}\\n{{done.stdout}}{{done.stderr}}")


def test_effective_cleared():
    child("effective", [sys.executable, "-c", DROP_EFFECTIVE, *PURGE[3:]])


def test_user_namespace():
    child("userns", ["unshare", "--user", "--map-root-user", *PURGE])
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
    inner, said = run_inner(tmp_path, INNER, ("effective", "userns"))
    for name, text in said.items():
        code, _, output = text.partition("\n")
        assert code == "78", (name, text)
        assert "while a test run may be above this process (ancestor pid " in output, output
        assert "run_tests.py -p no:cacheprovider" in output, output
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
        "its capabilities are not all this process's: it lives in another user namespace than "
        "this process (`unshare --user`, a container's), where this process's capabilities "
        "count for nothing, so /proc/"
    ) in said["userns"], said["userns"]
    assert "Start this process in the user namespace of pid " in said["userns"], said["userns"]
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
