"""Red team 70 on the guard (branch rt-guard70): a child whose read of its run's
``/proc/<pid>/exe`` or ``/proc/<pid>/fd`` fails, neither denied nor gone.

A test removed its run's entry from the registry of test runs (the descriptors the run keeps
of it left open, which red team 47's fallback reads) and started a child, given production's
settings alone, under a tracer that failed one read of the run's ``/proc`` with ``EIO``
(``strace -P /proc/<pid>/exe -e inject=readlinkat:error=EIO``, or ``-P /proc/<pid>/fd -e
inject=openat:error=EIO``): the child took the run for a process that is not Python, or for
one that keeps nothing open, found no run, and ``app data purge --profile production
--yes-i-mean-it`` moved every session of a stopped production root to its trash. A denied
read was refused since red team 69 on the guard; a gone process is passed over as before.

What changed: a read of an ancestor's ``exe`` or ``fd`` that fails otherwise (``EIO``,
``ENOSYS``, ``EINTR``) is noted, and where no run is found above, the child is refused,
naming that ancestor, the read and how it failed, and what resolves it.
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

def traced(name, path, calls):
    done = subprocess.run(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-P", path,
         "-e", f"inject={calls}:error=EIO", *PURGE],
        env=ENV,
        capture_output=True,
        text=True,
    )
    (OUT / name).write_text(f"{done.returncode}\\n{done.stdout}{done.stderr}")


def test_removed_then_a_child_whose_reads_fail():
    sandbox._own_entry().unlink()
    traced("exe", f"/proc/{os.getpid()}/exe", "readlink,readlinkat")
    traced("fd", f"/proc/{os.getpid()}/fd", "open,openat")
    # Root's effective user, another real one, and none of the run's capabilities.
    drop = ["--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all"]
    done = subprocess.run(
        ["setpriv", "--ruid=54370", *drop, *PURGE], env=ENV, capture_output=True, text=True
    )
    (OUT / "ruid").write_text(f"{done.returncode}\\n{done.stdout}{done.stderr}")
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
    inner, said = run_inner(tmp_path, INNER, ("exe", "fd", "ruid"))
    for which in ("exe", "fd"):
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
            "(EIO: Input/output error), where a run keeps its entry open" in text
        ), text
        assert f"Let this process read /proc/{pid}/exe and /proc/{pid}/fd: a tracer" in text
        assert "refused under a Python process that may run tests" in text, text
    # Judged as of its effective user too: the run's capabilities it lacks are named.
    code, _, text = said["ruid"].partition("\n")
    assert code == "78", said
    assert "(ancestor pid 1: " in text, text
    assert "this process (user 54370) cannot look for: the registry does not show one" in text
    assert "its capabilities are not all this process's (it holds " in text, text
    assert "Start this process with the capabilities of pid 1 in effect" in text, text
    # The run's own check after the test names the removed entry and puts it back.
    assert "this run's entry in " in inner.stdout, inner.stdout
