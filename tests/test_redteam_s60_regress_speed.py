"""Red team 60 on regress, the speed and children merges (branch rt-regress11).

What broke: rt-children6 made a registry whose own look (``lstat``) fails other than as
absent a run that may be above, so that a tracer's injected ``EIO`` no longer hides a run
(that refusal stands). A denial of that look is the same refusal, but it was worded as a
failed read: a process whose user may not search ``/tmp`` (left mode 0700, in a mount
namespace of a test or on a machine) was told that "the read failed (EACCES: Permission
denied)" and to let it read ``/tmp/app-pytest-runs-<uid>``, which no ``chmod`` of the
registry opens. The refusal now names the directory on the way that this process may not
search, and the command that opens it (``chmod 1777 /tmp``).

What held (docs/explanation/attacks/, "Red team 60 on regress, the speed and children
merges"): the mount table's index against the walk (spaces, newlines and backslashes in
mount points, a mount over a mount, a bind mount, ``/``), the subreaper in each start path,
the resolver's bytes, a process at its limit of open files outside any run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a mount namespace and setpriv"),
    pytest.mark.skipif(
        shutil.which("unshare") is None or shutil.which("setpriv") is None,
        reason="needs unshare and setpriv (util-linux)",
    ),
]

_CONTEXT = """
from app import sandbox
found = sandbox.context()
print(found.bare)
print(found.fix)
"""


def _nobody_runs_the_app() -> bool:
    """Whether user 65534 can start this interpreter and import the app from where this
    checkout lies (CI's clone sits in a directory that only root may enter)."""
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-c", "import app.sandbox"],
        capture_output=True, check=False, cwd="/",
    )  # fmt: skip
    return done.returncode == 0


def test_a_registry_behind_an_unsearchable_tmp_names_tmp_and_its_chmod() -> None:
    # Its own tmpfs on /tmp, mode 0700 (root's), in a private mount namespace: the shared
    # /tmp and its registry are left alone. User nobody may not look up the registry.
    if Path(sys.prefix).resolve().is_relative_to("/tmp") or Path(__file__).resolve().is_relative_to(
        "/tmp"
    ):
        pytest.skip(f"{sys.prefix} lies under /tmp, which this test mounts over")
    if not _nobody_runs_the_app():
        pytest.skip("user 65534 cannot run this interpreter with the app from this checkout")
    script = (
        "mount -t tmpfs -o mode=0700 tmpfs /tmp && "
        'exec setpriv --reuid=65534 --regid=65534 --clear-groups "$0" -c "$1"'
    )
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, sys.executable, _CONTEXT],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    bare, fix = done.stdout.splitlines()[-2:]
    assert "while a test run may be above this process" in bare
    assert "this process (user 65534) may not look for" in bare
    assert "as /tmp may not be searched by it" in bare
    assert "the read failed" not in bare
    assert fix.startswith("Let this process's user search /tmp (ls -ld /tmp; chmod 1777 /tmp)")
