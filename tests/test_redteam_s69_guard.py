"""Red team 69 on the guard (branch rt-guard69): a child that lacks capabilities its run's
process holds.

Linux lets a process read another's ``/proc/<pid>/exe`` and the links of its
``/proc/<pid>/fd`` only where its effective capabilities hold all of the other's (or it has
``CAP_SYS_PTRACE``), whatever their user. A test of a run as root removed its run's entry
from the registry of test runs (a tmpfs mounted over the registry did the same) and started
a child with every capability dropped (``setpriv --bounding-set=-all``), given production's
settings alone (``APP_SETTINGS_DIR``, production's token, ``PATH``): the child found no entry
in the registry, could not read the descriptor the run keeps of its entry (red team 47's
fallback), found no run, and ``app data purge --profile production --yes-i-mean-it`` moved
every session of a stopped production root to its trash. With its capabilities kept, the
same child read the entry through that descriptor and was refused.

What changed: a walk that finds no entry for an ancestor of its own user whose program it may
not read, and which holds capabilities it lacks, notes it as an ancestor that may be a run
unseen, where its name or its command line's first word is Python's or pytest's (the inner
pytest runs as its namespace's pid 1, as a container's does); where no run is found above,
the child is refused, naming that ancestor, the capabilities it lacks, and what resolves it.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from test_redteam_s61_children import PRELUDE, run_inner

#: The inner run's test: its entry removed (the descriptors the run keeps of it left open),
#: then a child with every capability dropped, given production's settings alone.
INNER = (
    PRELUDE
    + """

def test_removed_then_a_child_without_capabilities():
    sandbox._own_entry().unlink()
    done = subprocess.run(
        ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", *PURGE],
        env=ENV,
        capture_output=True,
        text=True,
    )
    (OUT / "nocaps").write_text(f"{done.returncode}\\n{done.stdout}{done.stderr}")
"""
)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("setpriv") is None,
    reason="only a process with capabilities (root) has any for its child to lack; the inner "
    "run is kept out of this run's process tree in a PID namespace of its own (unshare --pid)",
)
def test_a_child_without_its_runs_capabilities_is_refused_where_the_entry_is_gone(
    tmp_path: Path,
) -> None:
    inner, said = run_inner(tmp_path, INNER, ("nocaps",))
    code, _, text = said["nocaps"].partition("\n")
    assert code == "78", said
    # The run's pytest, its namespace's init (pid 1), named as Python.
    found = re.search(r"while a test run may be above this process \(ancestor pid (\d+): ", text)
    assert found is not None, text
    pid = found[1]
    assert f"{pid}: {sys.executable} run_tests.py -p no:cacheprovider" in text, text
    assert "its capabilities are not all this process's (it holds " in text, text
    assert f"CAP_SYS_PTRACE among them), so /proc/{pid}/exe and the descriptors" in text, text
    assert (
        f"Start this process with the capabilities of pid {pid} in effect (not under `setpriv"
        in text
    )
    # The run's own check after the test names the removed entry and puts it back.
    assert "this run's entry in " in inner.stdout, inner.stdout
