"""Red team 62 on the children of tests (branch rt-children62): a test that closes its run's
sealed copy of its registry entry, or puts a sealed copy of its own making beside it, then
rewrites the entry and starts a child with production's settings alone.

Red team 61 made a run keep each entry it writes for itself in a sealed anonymous file
(``memfd_create``, sealed against every write) that its children read where the entry says
anything else; its *not stopped* row: the copy is the run's word only as long as the run's
process is not the test's to change, and it is. Next to a stopped production root of the
test's own settings, a real inner pytest with the app's plugin active, run by a script that
calls pytest through another module (found by its entry alone, red team 42) in a PID namespace
of its own, rewrote its entry to claim PID namespace 1 (which no namespace has), with another
sandbox and no protected roots; its child, given production's settings alone
(``APP_SETTINGS_DIR``, production's token, ``PATH``), ran ``python -m app data purge --profile
production --yes-i-mean-it``.

What broke: a test that closed the copy's descriptor first (the child found no copy and
followed the entry), or that put a sealed ``memfd`` of its own under the copy's name, saying
what the rewritten entry says, beside the run's (an entry equal to any copy was taken): the
walk passed over the entry as another namespace's process's, found no run, and the purge moved
every production session to the trash.

What changed: as it registers, before any test runs, a run maps its first sealed copy read only
at an address its entry's name gives and seals the mapping in place (``mseal``, Linux 6.10):
nothing unmaps, moves or replaces it, the run's process included. A child reads that address in
``/proc/<pid>/maps`` (a test can put its own copies anywhere else, never there), reads the copy
through the run's descriptor of it, or through the run's memory where a test closed that, and
takes the entry (or another copy) only where it keeps within the anchored one: the same
process and namespaces, a sandbox inside its sandbox, every root it protects. Otherwise it
reads the anchored copy, and its refusal names the entry, the fields changed, and the copy.

Also: a run that started removed a FIFO a test of another run (in a PID namespace of its own)
had put at its entry's name, taking it for a dead run's entry it could not read; it now leaves
what is no regular file to its own run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_redteam_s61_children import PRELUDE, run_inner

from app import sandbox

#: The inner run's tests: its entry rewritten (every field the walk reads changed at once)
#: beside a sealed copy of the test's own making, then with every descriptor of the run's
#: copies closed too (the copy the run closed alone, by hand: the same); each time a child
#: given production's settings alone. Results go where the outer test reads them.
INNER = (
    PRELUDE
    + """
import fcntl


def plant(entry, text):
    fd = os.memfd_create(sandbox._COPY_NAME + entry.name, os.MFD_ALLOW_SEALING)
    os.write(fd, text)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, sandbox._SEALS)
    return fd


def test_planted():
    fd = plant(*rewrite())
    purge("planted")
    os.close(fd)


def test_all_closed_and_planted():
    # Every descriptor of the run's copies, as code that daemonises in the test's process
    # closes every one.
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("/memfd:app-run-"):
                os.close(int(name))
        except OSError:
            pass
    fd = plant(*rewrite())
    purge("all_closed")
    os.close(fd)
"""
)


@pytest.mark.skipif(
    not sandbox._seals_in_place() or os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="the run's anchored copy needs a kernel that seals a mapping in place (mseal, "
    "Linux 6.10, 64-bit), and the inner run is kept out of this run's process tree in a PID "
    "namespace of its own (unshare --pid needs root here)",
)
def test_a_test_that_closes_or_forges_its_runs_sealed_copy_leaves_its_children_in_the_run(
    tmp_path: Path,
) -> None:
    names = ("planted", "all_closed")
    inner, said = run_inner(tmp_path, INNER, names)
    # The run's own check after each test names it and puts the entry back.
    assert inner.stdout.count("this run's entry in ") == len(names), inner.stdout
    for name in names:
        code, _, output = said[name].partition("\n")
        assert code == "78", (name, said[name])
        assert (
            "error: refused under pytest (sandbox: " + str(tmp_path / "inner") + "): loading "
            "profile 'production'; tests run on the 'testing' profile (this process belongs to "
            "the test run through the process tree (an ancestor process, pytest pid "
        ) in output, output
        assert (
            f"registered in {sandbox.RUNS_DIR}, though a test of the run changed its entry "
        ) in output, output
        assert (
            "(its fields own_pid_namespace, protected, sandbox changed) since the run wrote it, "
            "so this process read the sealed copy the run keeps of it (/proc/1/"
        ) in output, output
        assert (
            "instead; the run puts its entry back after that test and names it: a test must "
            "leave the registry of test runs alone"
        ) in output, output
    # Every descriptor of its copies closed, the anchored one too: that is read where the
    # run maps it.
    assert "keeps of it (/proc/1/map_files/" in said["all_closed"], said["all_closed"]


def test_a_fifo_at_a_run_s_name_is_left_to_that_run(tmp_path: Path) -> None:
    """A test of a run in a PID namespace of its own put a FIFO at its run's entry (red team
    61's case); another run that started meanwhile took the name's pid for a dead one of its
    own namespace, could not read the FIFO for the entry's namespace, and removed it: the
    first run's children then found it by the descriptors it keeps, not its sealed copy, and
    red team 61's test failed now and then under load. Only a regular file is forgotten."""
    fifo = tmp_path / f"{os.getpid()}-1.json"  # a start time no process here has
    os.mkfifo(fifo)
    dead = tmp_path / f"{os.getpid()}-2.json"
    dead.write_text("{}")  # unreadable as a run's: forgotten, as before
    sandbox._forget_dead_runs(tmp_path)
    assert fifo.exists()
    assert not dead.exists()
