"""Red team 55 on the children of tests (branch rt-children1): a child that fakes what the
process tree's walk reads of ``/proc``.

What broke (a real inner pytest with the app's plugin active, its test's child given
production's settings alone, next to a stopped production root of the test's own settings):

- a child a test starts as root in a mount namespace of its own (``unshare -m``, as a
  harness that fakes what a tool reads of ``/proc`` does) that binds ``/proc/1`` over its
  own entry ``/proc/$$``, then execs ``python -m app data purge --profile production``: the
  walk of its ancestors read init's ``stat`` for its own (no parent, init's start time), found
  no run above it and no pytest, and the purge moved every production session to the trash;
- the same with ``/proc/1`` bound over its parent's entry (the inner pytest's own);
- the same with a ``stat`` file of a tmpfs bound over its own ``/proc/$$/stat``, written as
  its own with its parent changed to 1 (the pid, the start time, the rest its own).

``/proc`` was Linux's own filesystem, with ``/proc/self``, so nothing looked hidden (red team
46's check is for a filesystem over the whole of ``/proc``). And, without privileges:

- a child run under a fault injector (``strace -f -P /proc/<parent>/stat -e
  inject=openat:error=ENOENT``): the walk took the parent whose ``stat`` it could not open
  for one that had exited, stopped below the run, and the purge went through;
- under ``strace -P /proc/self -e inject=readlink,readlinkat:error=ENOENT`` the child was
  refused, but told that "a filesystem that is not Linux's proc is mounted" over ``/proc``:
  none was. Where ``/proc`` is Linux's own, the refusal now says ``/proc/self`` could not be
  read.

What changed: every ``/proc/<pid>/stat`` the walk reads must be that process's (its first
field is the pid asked for) and a file of ``/proc``'s own filesystem; where one is not, and no
run is found, the app refuses, naming the entry and ``umount``. Where no run is found, a mount
at or in a process's entry of ``/proc`` (in ``/proc/self/mountinfo``) is refused the same way,
and so is a walk that stopped at a parent whose child still names it (an ancestor that exits
is gone from its child's ``stat`` before its own entry goes), naming ``strace -P``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from project_copy import assert_untouched, inner_project, run_inner, stopped_production
from test_redteam_s24_guard import _inner_env

#: The inner run's one test: three children at once, each given production's settings alone,
#: each faking its walk another way in a mount namespace of its own; their exit codes and
#: output are written where the outer test reads them.
INNER = """
import os
import subprocess
import sys
from pathlib import Path

OUT = Path(os.environ["RT55_OUT"])
ENV = {
    "APP_SETTINGS_DIR": os.environ["RT55_SETTINGS"],
    "APP_API_TOKEN": os.environ["RT55_TOKEN"],
    "PATH": "/usr/bin:/bin",
}
PURGE = "-m app data purge --profile production --yes-i-mean-it"
SCRIPTS = {
    "own-entry": 'mount --bind /proc/1 /proc/$$ && exec "$0" ' + PURGE,
    "parent-entry": 'mount --bind /proc/1 /proc/$PPID && exec "$0" ' + PURGE,
    "fake-stat": (
        'd=$(mktemp -d) && mount -t tmpfs none "$d" '
        "&& awk '{ $4 = 1; print }' /proc/$$/stat > \\"$d/stat\\" "
        '&& mount --bind "$d/stat" /proc/$$/stat && exec "$0" ' + PURGE
    ),
    # No privilege: the parent's stat fails to open under a fault injector.
    "injected": (
        "exec strace -f -qq -o /dev/null -P /proc/$$/stat -e trace=openat "
        '-e inject=openat:error=ENOENT "$0" ' + PURGE
    ),
    "injected-self": (
        "exec strace -f -qq -o /dev/null -P /proc/self -e trace=readlink,readlinkat "
        '-e inject=readlink,readlinkat:error=ENOENT "$0" ' + PURGE
    ),
}


def test_children_that_fake_their_walk():
    started = {
        name: subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script, sys.executable],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for name, script in SCRIPTS.items()
    }
    for name, child in started.items():
        out, _ = child.communicate()
        (OUT / name).write_bytes(b"%d\\n" % child.returncode + out)
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("strace") is None,
    reason="only root mounts over /proc in a mount namespace of its own (unshare -m); "
    "the fault is injected with strace",
)
def test_a_child_that_mounts_over_an_entry_of_proc_is_refused(tmp_path: Path) -> None:
    settings, production, token, sessions = stopped_production(tmp_path)
    project = inner_project(tmp_path, "test_children.py", INNER)
    out = tmp_path / "out"
    out.mkdir()
    env = _inner_env(
        APP_SETTINGS_DIR=str(settings),
        RT55_SETTINGS=str(settings),
        RT55_TOKEN=token,
        RT55_OUT=str(out),
    )
    stdout = run_inner(
        [
            *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider"),
            *(f"--basetemp={tmp_path / 'inner'}", "test_children.py"),
        ],
        env,
        project,
    )
    assert "app: profile=testing (forced)" in stdout, stdout
    assert_untouched(production, sessions)
    names = ("own-entry", "parent-entry", "fake-stat", "injected", "injected-self")
    said = {name: (out / name).read_text() for name in names}
    for name, text in said.items():
        code, _, output = text.partition("\n")
        assert code == "78", (name, text)
        assert "refused under pytest: loading profile 'production' while " in output, output
        assert "cannot tell whether a test run is above it" in output, output
    for name in names[:3]:
        assert "something is mounted over its entry of /proc" in said[name], said[name]
        assert "(umount /proc/" in said[name], said[name]
    assert "it shows process 1's" in said["own-entry"], said["own-entry"]
    assert "it shows process 1's" in said["parent-entry"], said["parent-entry"]
    assert "it is a file of another filesystem than /proc's" in said["fake-stat"]
    assert "cannot be read though process " in said["injected"], said["injected"]
    assert "`strace -P <the file>`" in said["injected"], said["injected"]
    assert (
        "while this process cannot read /proc/self (/proc is Linux's proc filesystem, "
        in (said["injected-self"])
    ), said["injected-self"]
    assert "not Linux's proc is mounted" not in said["injected-self"], said["injected-self"]
