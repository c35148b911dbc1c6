"""A registry entry names its process by pid and start time; pids repeat from PID namespace
to PID namespace, and the start time is counted in ticks of 10 ms.

CI of stop 47 failed once on it: on one worker `tests/test_redteam_s29_powerloss.py` traced
a child as pid 2 of a namespace of its own, under `strace` as pid 1, while another worker's
test ran `pytest -p no:app` as pid 1 of another namespace started in the same tick. The
child found that pytest's entry at its own pid 1's name and was refused as under a pytest
without the app's plugin. An entry says which PID namespace its process lives in; one of
another is another process's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0,
    reason="a PID namespace of its own with its own /proc takes unshare(1) and root",
)

#: Run as pid 2 of a new PID namespace, under `sh` as its pid 1: writes an entry at pid 1's
#: name that says pid 1 runs pytest without the app's plugin, living in this namespace
#: ("ours") or in another, then asks for another profile than testing.
CHILD = """
import json, os, sys
from app import sandbox
from app.errors import SandboxViolationError

assert sandbox.current_run().pid is None, "the child must be outside the test run"
own = os.stat("/proc/1/ns/pid").st_ino
entry = sandbox._own_runs_dir() / sandbox._entry_name(1, sandbox._stat_fields(1)[1])
data = {
    "pid": 1, "argv": ["pytest", "-p", "no:app"], "starting": True, "without_plugin": True,
    "pid_namespace": own, "own_pid_namespace": own if sys.argv[1] == "ours" else own + 1,
}
entry.write_text(json.dumps(data))
os.chmod(entry, 0o644)
try:
    sandbox.check_given_profile("staging", "data root /srv/staging", "lock")
    print("allowed")
except SandboxViolationError as error:
    print("refused:", error)
finally:
    entry.unlink()
"""


def run_child(whose: str) -> str:
    # `; exit` keeps sh as pid 1 (it would run a last lone command in its own place).
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", '"$0" -c "$1" "$2"; exit $?',
         sys.executable, CHILD, whose],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_entry_of_another_pid_namespace_at_a_process_s_name_is_not_its_own() -> None:
    assert run_child("another") == "allowed\n"


def test_an_entry_of_the_process_s_own_pid_namespace_still_counts() -> None:
    said = run_child("ours")
    assert said.startswith("refused: refused under pytest: lock data root /srv/staging"), said
    assert "an ancestor process (pid 1: sh -c" in said
    assert "runs pytest without the app's plugin" in said
