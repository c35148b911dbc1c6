"""Red team 68 on regress, the fourth round (branch rt-regress68d): see
docs/explanation/attacks/.

What broke, both on an inner pytest in a PID namespace of its own beside a stopped
production root (red team 61's harness), by a test run as root:

- An empty file bound over a child's ``/proc/<X>/task/<X>/children`` (a file of another
  filesystem) hid X's own child Y from every walk of the run's last hand-over (no entry);
  once the run and X had ended, Y purged the stopped production root. A ``children`` file
  that is not ``/proc``'s now means X's children are read from the parent each process of
  ``/proc`` names.
- A child X whose ``stat`` is mounted over got its entry at the run's end by its main
  thread's start time (rt-regress68c), but a run that registered once the run had ended, in
  the same mount namespace, read X's start time from ``stat`` alone, took the entry for a
  dead process's and removed it; X unmounted the file and purged the stopped production
  root. `_forget_dead_runs` reads the main thread's too now.
"""

from __future__ import annotations

from pathlib import Path

from test_redteam_s61_children import PRELUDE, run_inner
from test_redteam_s67_guard import _SHELL, assert_refused_after_the_run
from test_redteam_s68c_regress import STAT_MOUNTED_OVER, needs_root_over_proc

#: The inner run's test: X (a shell that starts Y, then waits for the run's process to be
#: gone and exits), an empty file bound over X's ``/proc/<X>/task/<X>/children`` (where Y
#: is listed); Y waits for the run and X to be gone, then runs a purge given production's
#: settings alone.
CHILDREN_MOUNTED_OVER = (
    PRELUDE
    + r"""

def test_leaves_a_grandchild_whose_parent_s_children_file_is_mounted_over():
    import time
    out = str(OUT / "late")
    purge = f"{sys.executable} -m app data purge --profile production --yes-i-mean-it"
    run = os.getpid()
    y = (
        f"while kill -0 {run} 2>/dev/null || kill -0 $1 2>/dev/null; do sleep 0.02; done; "
        f"{purge} > {out} 2>&1; echo exit $? >> {out}"
    )
    line = (
        f"sh -c '{y}' y $$ & "
        f"while kill -0 {run} 2>/dev/null; do sleep 0.02; done"
    )
    x = subprocess.Popen(["sh", "-c", line], env=ENV)
    children = f"/proc/{x.pid}/task/{x.pid}/children"
    while not Path(children).read_text().strip():  # Y started (no time limit: it starts)
        time.sleep(0.002)
    empty = OUT / "empty"
    empty.write_bytes(b"")
    subprocess.run(["mount", "--bind", str(empty), children], check=True)
    assert Path(children).read_text() == ""
"""
)


@needs_root_over_proc
def test_a_grandchild_hidden_by_a_children_file_mounted_over_is_handed_on_all_the_same(
    tmp_path: Path,
) -> None:
    inner, said = run_inner(tmp_path, CHILDREN_MOUNTED_OVER, ("late",), shell=_SHELL)
    assert " passed" in inner.stdout, inner.stdout
    assert_refused_after_the_run(said)


#: The inner run's test: X (a shell that waits for the run's process to be gone, has another
#: run register in the same mount namespace meanwhile, unmounts what is bound over its
#: `stat`, then runs a purge given production's settings alone), a copy of X's `stat` bound
#: over `/proc/<X>/stat`.
FORGOTTEN = (
    PRELUDE
    + STAT_MOUNTED_OVER
    + r"""

def test_leaves_a_child_whose_stat_is_mounted_over_and_another_run_registers():
    out = str(OUT / "late")
    purge = f"{sys.executable} -m app data purge --profile production --yes-i-mean-it"
    other = OUT / "other"
    other.mkdir()
    register = (
        f"from pathlib import Path; from app import sandbox; sandbox.register(Path('{other}'), ())"
    )
    line = (
        f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 0.02; done; "
        f'{sys.executable} -c "{register}" > {OUT / "registered"} 2>&1; '
        f"umount /proc/$$/stat && {purge} > {out} 2>&1; echo exit $? >> {out}"
    )
    x_with_stat_mounted_over(line)
"""
)


@needs_root_over_proc
def test_a_run_that_registers_later_keeps_the_entry_of_a_child_whose_stat_is_mounted_over(
    tmp_path: Path,
) -> None:
    # Before: the later run (`register`, as a pytest's plugin calls it) removed X's entry,
    # read as a dead process's, and X, unmounting its file, purged the stopped root.
    inner, said = run_inner(tmp_path, FORGOTTEN, ("late", "registered"), shell=_SHELL)
    assert " passed" in inner.stdout, inner.stdout
    assert said["registered"] == "", said
    assert_refused_after_the_run(said)
