"""A registry entry names its process by pid and start time; pids repeat from PID namespace
to PID namespace, and the start time is counted in ticks of 10 ms.

CI of stop 47 failed once on it: on one worker `tests/test_redteam_s29_powerloss.py` traced
a child as pid 2 of a namespace of its own, under `strace` as pid 1, while another worker's
test ran `pytest -p no:app` as pid 1 of another namespace started in the same tick. The
child found that pytest's entry at its own pid 1's name and was refused as under a pytest
without the app's plugin. An entry says which PID namespace its process lives in; one of
another is another process's.

The write side (red team 60 on flaky): two runs that are each pid 1 of such a namespace,
started in the same tick, have one name; the second wrote its entry over the first's, whose
children were then outside any run. A first entry is now linked at its name, and where
another namespace's process holds it, named with the process's own namespace too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0,
    reason="a PID namespace of its own with its own /proc takes unshare(1) and root",
)

#: The children's start: `forge(data)` writes `data` as the entry at pid 1's name in the
#: registry, which every run on the machine shares, never over an entry there (a real
#: process's, of another worker's test: the child then says TAKEN and ends, and is run
#: again), and `forged()` removes it, if it is still the one written.
FORGE = """
import json, os, sys
from app import sandbox

own = os.stat("/proc/1/ns/pid").st_ino
registry = sandbox._own_runs_dir()
name = registry / sandbox._entry_name(1, sandbox._stat_fields(1)[1])

def forge(data):
    made = registry / f".forged-{os.getpid()}.tmp"
    made.write_text(json.dumps(data))
    os.chmod(made, 0o644)
    try:
        os.link(made, name)
    except FileExistsError:
        print("TAKEN", flush=True)
        os._exit(0)
    finally:
        made.unlink()
    return name.stat().st_ino

def forged(inode):
    if name.stat().st_ino == inode:
        name.unlink()
"""

#: Run as pid 2 of a new PID namespace, under `sh` as its pid 1: writes an entry at pid 1's
#: name that says pid 1 runs pytest without the app's plugin, living in this namespace
#: ("ours") or in another, then asks for another profile than testing.
CHILD = (
    FORGE
    + """
from app.errors import SandboxViolationError

assert sandbox.current_run().pid is None, "the child must be outside the test run"
inode = forge({
    "pid": 1, "argv": ["pytest", "-p", "no:app"], "starting": True, "without_plugin": True,
    "pid_namespace": own, "own_pid_namespace": own if sys.argv[1] == "ours" else own + 1,
})
try:
    sandbox.check_given_profile("staging", "data root /srv/staging", "lock")
    print("allowed")
except SandboxViolationError as error:
    print("refused:", error)
finally:
    forged(inode)
"""
)


def in_a_pid_namespace(*argv: str) -> str:
    """What `argv` prints, run in a PID namespace of its own (again, where its entry's name
    was TAKEN: see `FORGE`)."""
    for _ in range(3):
        done = subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", *argv],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        if done.stdout != "TAKEN\n":
            break
    return done.stdout


def run_child(whose: str) -> str:
    # `; exit` keeps sh as pid 1 (it would run a last lone command in its own place).
    return in_a_pid_namespace(
        "sh", "-c", '"$0" -c "$1" "$2"; exit $?', sys.executable, CHILD, whose
    )


def test_an_entry_of_another_pid_namespace_at_a_process_s_name_is_not_its_own() -> None:
    assert run_child("another") == "allowed\n"


def test_an_entry_of_the_process_s_own_pid_namespace_still_counts() -> None:
    said = run_child("ours")
    assert said.startswith("refused: refused under pytest: lock data root /srv/staging"), said
    assert "an ancestor process (pid 1: sh -c" in said
    assert "runs pytest without the app's plugin" in said


#: Run as pid 1 of a new PID namespace: another namespace's pytest run, whose pid 1 started
#: in the same tick, has its entry at this process's name (written here as that run wrote
#: it); this process then registers a run of its own, and a child of it with a hand-built
#: environment looks for its run, after the other run wrote its entry again. Prints what
#: became of the other run's entry, what the child found, and what the check after a test
#: says of this run's entry.
REGISTERS_SECOND = (
    FORGE
    + """
import subprocess
from pathlib import Path

theirs = {"pid": 1, "argv": ["pytest"], "sandbox": sys.argv[2], "protected": [], "scratch": "",
          "pid_namespace": 1, "own_pid_namespace": 1}
# 1: no namespace's number (the kernel's start at 0xF0000000). Not own + 1, most likely the
# next namespace made on the machine: a run starting in it would forget this entry (a
# process of its own namespace that it does not see) while the test reads it.
inode = forge(theirs)
before = name.read_bytes()
run = sandbox.register(Path(sys.argv[1]), ())
try:
    print("THEIRS", "kept" if name.read_bytes() == before else "REPLACED")
    name.write_bytes(before)  # the other run's own rewrite (its check after a test, its end)
    found = subprocess.run(
        [sys.executable, "-c", "from app import sandbox; print(sandbox.active_sandbox())"],
        env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, check=False,
    )
    print("CHILD", found.stdout.strip() or found.stderr.strip())
    print("CHECK", sandbox.restore_entry(run))
    print("THEIRS", "kept" if name.read_bytes() == before else "REPLACED")
finally:
    ours = sandbox._entry_at(registry, 1, sandbox._stat_fields(1)[1])
    if ours.stat().st_ino != inode:
        ours.unlink()
    if name.exists():
        forged(inode)
    sys.stdout.flush()
    os._exit(0)  # no exit hook: it would write this run's entry again
"""
)


def test_a_run_whose_name_another_pid_namespace_s_run_holds_keeps_both_entries(
    tmp_path: Path,
) -> None:
    # Two runs, each pid 1 of a PID namespace of its own (sharing /tmp), started in the same
    # tick have the same name in the registry. The second wrote its entry over the first's:
    # the first's children found another namespace's entry at their run's name and were
    # outside any run, and the first's check after each test said its entry was changed
    # and wrote it back over the second's. Each now keeps an entry of its own.
    said = in_a_pid_namespace(
        sys.executable, "-c", REGISTERS_SECOND, str(tmp_path), str(tmp_path / "other-run")
    )
    assert said.splitlines() == ["THEIRS kept", f"CHILD {tmp_path}", "CHECK None", "THEIRS kept"]
