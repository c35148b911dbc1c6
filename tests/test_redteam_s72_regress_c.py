"""Red team 72 on regress, round c (branch rt-regress72c): see docs/explanation/attacks/.

What broke: red team 72 on the guard keeps, as a run starts (`_forget_dead_runs`), an entry
whose process ``/proc`` does not show while signal 0 finds it (`_hidden_alive`). An entry
named by a pid that no ``pid_t`` holds (a file a test left in the registry of test runs) made
signal 0 raise ``OverflowError`` out of the run's start: every later run of that user failed as
it started, with a traceback that named no file, until someone found the file and removed it.
Before that change such a file was forgotten. No process has that pid: it is forgotten again,
as is one of pid 0, which signal 0 took for the run's own process group and kept for good.
And one named by a digit that ``str.isdigit`` takes and ``int`` refuses (``³``) did the same,
by a ``ValueError``, before that change too: it is passed over, as any name that is not a run's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app import sandbox


def test_an_entry_named_by_a_pid_no_process_can_have_is_forgotten(tmp_path: Path) -> None:
    # Above what a pid_t holds (2**31 - 1), and far above: os.kill refused both with
    # OverflowError, not ProcessLookupError. And pid 0, which kill takes for the caller's
    # process group: found so, it was kept for good.
    junk = [tmp_path / f"{pid}-1.json" for pid in (2**31, 10**30, 0)]
    for entry in junk:
        entry.write_text("{}")
    sandbox._forget_dead_runs(tmp_path)
    assert [entry.name for entry in junk if entry.exists()] == []
    # And signal 0 answers for such a pid as for any pid no process has.
    assert not sandbox._running(2**31)
    assert not sandbox._running(0)


def test_an_entry_named_by_digits_int_refuses_is_passed_over(tmp_path: Path) -> None:
    # str.isdigit takes a superscript digit, which int refuses: the ValueError ended the
    # start of every run (before red team 72 too). No run names its entry so: left alone,
    # as any name that is not a run's.
    odd = tmp_path / "\N{SUPERSCRIPT THREE}-1.json"
    odd.write_text("{}")
    sandbox._forget_dead_runs(tmp_path)
    assert odd.exists()


#: A child's look for its hidden parent in a registry that holds only such names, in a mount
#: namespace of its own with a tmpfs over the registry (the machine's is every run's).
LOOK = """
mount -t tmpfs -o mode=0755 app-runs "$REG" || exit 1
echo '{}' > "$REG/\N{SUPERSCRIPT THREE}-1.json"
echo '{}' > "$REG/1-\N{SUPERSCRIPT THREE}.json"
exec "$PY" -c 'import os; from app import sandbox
print(sandbox._hidden_parent(os.getppid(), "hidepid=invisible"))'
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="only root mounts a tmpfs over the registry in a mount namespace of its own",
)
def test_a_hidden_parent_s_look_passes_over_digits_int_refuses() -> None:
    # `_hidden_parent` (a child whose parent /proc hides) read the same names with
    # str.isdigit too: its ValueError ended the command, before red team 72 as well.
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", LOOK],
        env={**os.environ, "REG": str(sandbox._runs_dir(0)), "PY": sys.executable},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "None\n"), done.stdout + done.stderr
