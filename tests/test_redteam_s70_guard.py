"""Red team 70 on the guard (branch rt-guard70): a child whose read of its run's ``/proc``
fails, neither denied nor gone, and one judged by its real user alone.

A test removed its run's entry from the registry of test runs (the descriptors the run keeps
of it left open, which red team 47's fallback reads) and started a child, given production's
settings alone, under a tracer that failed one read of the run's ``/proc`` with ``EIO``
(``strace -P /proc/<pid>/exe -e inject=readlinkat:error=EIO``; ``-P /proc/<pid>/fd``,
``-P /proc/<pid>/status`` or ``-P /proc/<pid>/comm -P /proc/<pid>/cmdline`` with
``inject=openat:error=EIO``, the last two without the run's capabilities): the child took the
run for a process that is not Python, for one that keeps nothing open, or for one whose
denial nothing explains, found no run, and ``app data purge --profile production
--yes-i-mean-it`` moved every session of a stopped production root to its trash. So did a
child given another real user, root's effective one and none of the run's capabilities
(``setpriv --ruid``): the check of an ancestor whose program it may not read looked only at
ancestors of its real user.

What changed: a read of an ancestor's ``exe``, ``fd`` or ``status`` (or of the child's own
``status``) that fails otherwise (``EIO``, ``ENOSYS``, ``EINTR``) is noted, and where no run
is found above, the child is refused, naming that ancestor, the read and how it failed, and
what resolves it; a ``comm`` whose read failed so counts as a Python's; and an ancestor of
the child's effective user counts as one of its own.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from test_redteam_s61_children import PRELUDE, run_inner

#: The inner run's test: its entry removed (the descriptors the run keeps of it left open),
#: then a child under a tracer that fails one read of the run's /proc, for each of them.
INNER = (
    PRELUDE
    + """

#: Every capability dropped, for the child and what it runs.
DROP = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all"]


def traced(calls, *files, drop=()):
    paths = [word for file in files for word in ("-P", f"/proc/{os.getpid()}/{file}")]
    inject = ["strace", "-f", "-qq", "-o", "/dev/null", *paths, "-e", f"inject={calls}:error=EIO"]
    return [*inject, *drop]


def test_removed_then_a_child_whose_reads_fail():
    sandbox._own_entry().unlink()
    children = {
        "exe": traced("readlink,readlinkat", "exe"),
        "fd": traced("open,openat", "fd"),
        # Without the run's capabilities: their reads of the run's status, or of its name.
        "status": traced("open,openat", "status", drop=DROP),
        "comm": traced("open,openat", "comm", "cmdline", drop=DROP),
        # Root's effective user, another real one, and none of the run's capabilities.
        "ruid": ["setpriv", "--ruid=54370", *DROP[1:]],
    }
    # All at once, each to its end: none of them changes what the others read.
    started = {
        name: subprocess.Popen(
            [*words, *PURGE], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for name, words in children.items()
    }
    for name, child in started.items():
        said, _ = child.communicate()
        (OUT / name).write_text(f"{child.returncode}\\n{said}")
"""
)


@pytest.mark.skipif(
    os.geteuid() != 0 or not all(map(shutil.which, ("unshare", "strace", "setpriv"))),
    reason="the faults are injected by strace and the ids changed by setpriv, as root; the "
    "inner run is kept out of this run's process tree in a PID namespace of its own "
    "(unshare --pid, root's)",
)
def test_a_child_whose_read_of_its_runs_proc_fails_or_of_another_real_user_is_refused(
    tmp_path: Path,
) -> None:
    inner, said = run_inner(tmp_path, INNER, ("exe", "fd", "status", "comm", "ruid"))
    for which in ("exe", "fd", "status"):
        code, _, text = said[which].partition("\n")
        assert code == "78", said
        found = re.search(
            r"while a test run may be above this process \(ancestor pid (\d+): ", text
        )
        assert found is not None, text
        pid = found[1]
        assert "; Python, its command line naming no pytest), whose entry" in text, text
        assert (
            f"the registry does not show one, and its read of /proc/{pid}/{which} failed "
            "(EIO: Input/output error), so it cannot tell whether that process keeps a run's "
            "entry open" in text
        ), text
        assert f"Let this process read /proc/{pid} (its exe, fd, status and comm) and" in text
        assert "refused under a Python process that may run tests" in text, text
    # Its name unread: counted as a Python's, the capabilities it lacks named.
    code, _, text = said["comm"].partition("\n")
    assert code == "78", said
    assert "while a test run may be above this process (ancestor pid 1: " in text, text
    assert "its capabilities are not all this process's (it holds " in text, text
    # Judged as of its effective user too: the run's capabilities it lacks are named.
    code, _, text = said["ruid"].partition("\n")
    assert code == "78", said
    assert "(ancestor pid 1: " in text, text
    assert "this process (user 54370) cannot look for: the registry does not show one" in text
    assert "its capabilities are not all this process's (it holds " in text, text
    assert "Start this process with the capabilities of pid 1 in effect" in text, text
    # The run's own check after the test names the removed entry and puts it back.
    assert "this run's entry in " in inner.stdout, inner.stdout


#: The inner run's test, its entry left in place: children in a mount namespace of their own
#: with /proc mounted `hidepid=invisible` (or `noaccess`) for a group they are not in,
#: without the run's capabilities (with them they see the run: red team 69's harness).
HIDDEN = (
    PRELUDE
    + """

MOUNT = "mount -t proc -o hidepid={},gid=54370 proc /proc"
DROP = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all"]


def test_a_child_that_cannot_see_the_run():
    hidden = MOUNT.format("invisible")
    children = {
        # Started by exec (its parent is the run), and below a shell that keeps the run's
        # capabilities, hidden too (the run leads the session).
        "hidden": (f'{hidden} && exec "$@"', DROP),
        "between": (f'{hidden} && "$@"; exit $?', DROP),
        # Shown but denied: as root, and with another real user (root's effective one).
        "noaccess": (MOUNT.format("noaccess") + ' && exec "$@"', DROP),
        "ruid": (MOUNT.format("noaccess") + ' && exec "$@"', [*DROP, "--ruid=54370"]),
    }
    # All at once, each to its end: none of them changes what the others read.
    own = ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
    started = {
        name: subprocess.Popen(
            [*own, shell, "sh", *drop, *PURGE],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, (shell, drop) in children.items()
    }
    for name, child in started.items():
        said, _ = child.communicate()
        (OUT / name).write_text(f"{child.returncode}\\n{said}")
"""
)


#: The inner run made its session's leader (`setsid`, without a fork: pid 1 of its PID
#: namespace leads no group), with a registry of its own (`run_inner`'s).
_LEADING = 'mount -t tmpfs -o mode=0700 app-runs "$1" && shift && exec setsid "$@"'


@pytest.mark.skipif(
    os.geteuid() != 0 or not all(map(shutil.which, ("unshare", "setpriv", "setsid"))),
    reason="only root mounts /proc in a mount namespace of its own and has capabilities to "
    "drop; the inner run is kept out of this run's process tree in a PID namespace of its "
    "own (unshare --pid, root's)",
)
def test_a_child_that_proc_hides_its_run_from_is_refused(
    tmp_path: Path,
) -> None:
    # The run leads its session, as a run from a terminal leads its process group.
    _, said = run_inner(tmp_path, HIDDEN, ("hidden", "between", "noaccess", "ruid"), _LEADING)
    for name, which in (("hidden", "parent"), ("between", "session leader")):
        code, _, text = said[name].partition("\n")
        assert code == "78", said
        assert (
            f"while /proc does not show this process's {which}, pid 1 (/proc is mounted here "
            "with hidepid=invisible, which hides a process this one may not read" in text
        ), text
        found = re.search(
            r"holds an entry for a run of that pid \((/tmp/[^)]+/1-\d+\.json)\)", text
        )
        assert found is not None, text
        assert f"Start this process where /proc shows its {which} (/proc mounted without" in text
        assert f"If no test run of pid 1 is running, remove {found[1]}" in text, text
    # Shown but denied (`hidepid=noaccess`): refused naming the option, not a Landlock ruleset.
    for name in ("noaccess", "ruid"):
        code, _, text = said[name].partition("\n")
        assert code == "78", said
        assert (
            "while this process may not read /proc/1 (an ancestor): /proc is mounted here with "
            "hidepid=noaccess, which denies a process this one may not read" in text
        ), text
        assert "Start this process where /proc lets it read its ancestors (/proc mounted" in text
