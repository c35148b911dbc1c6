"""Red team 70 on regress, the guard again (branch rt-regress70h): a walk in a signal handler
emptied the notes of the walk it interrupted, and a service under ``ProcSubset=pid`` was told
nothing of why an entry of an earlier boot still counted.

Walks in a process take turns under a re-entrant lock (branch rt-regress70a); a signal
handler's walk, in the thread whose walk it interrupted, went ahead and emptied that walk's
notes, so a walk that only a failed read would have refused found no run. A walk begun in
the middle of another in its own thread now gives that walk its notes back.

An entry of an earlier boot does not count where ``/proc`` hides the run (branch
rt-regress70a), by the boot's id; under ``subset=pid`` (systemd's ``ProcSubset=pid``, most
often set with ``ProtectProc=invisible``) there is no ``/proc/sys`` and so no boot id: the
entry counts (the safe side), and the refusal now says why and names the setting.

The service runs as user 54372 (which no other test file uses), skipped where that user
cannot reach the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from project_copy import copy_project_settings
from test_proc_noaccess import WITH_A_STALE_ENTRY
from test_redteam_s22_guard import _own_proc_allowed

#: The service's user: one no other test file runs as.
AS_THE_SERVICE = ("setpriv", "--reuid=54372", "--regid=54372", "--clear-groups")


def _service_python() -> tuple[str, str]:
    """An interpreter user 54372 can run with the app, and the ``PYTHONPATH`` it needs; the
    test is skipped where there is none (or no root, setpriv, unshare, --mount-proc)."""
    if os.geteuid() != 0 or not all(map(shutil.which, ("setpriv", "unshare"))):
        pytest.skip("needs root, setpriv and unshare, to run as a user whom file modes bind")
    if not _own_proc_allowed():
        pytest.skip("needs unshare --pid --mount-proc")
    path = os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path])
    for python in dict.fromkeys((sys.executable, "/usr/bin/python3")):
        done = subprocess.run(
            [*AS_THE_SERVICE, "env", f"PYTHONPATH={path}", python, "-c", "import app.config"],
            capture_output=True, check=False, cwd="/",
        )  # fmt: skip
        if done.returncode == 0:
            return python, path
    pytest.skip("user 54372 cannot run the app here (the checkout is out of its reach)")


#: As test_proc_noaccess's `WITH_A_STALE_ENTRY`, /proc mounted with systemd's
#: ProtectProc=invisible and ProcSubset=pid (`subset=pid`: no /proc/sys, so no boot id).
WITH_A_STALE_ENTRY_SUBSET = WITH_A_STALE_ENTRY.replace(
    "hidepid=invisible /proc", "hidepid=invisible,subset=pid /proc", 1
)
assert WITH_A_STALE_ENTRY_SUBSET != WITH_A_STALE_ENTRY


def test_a_service_under_proc_subset_pid_is_told_why_an_entry_of_an_earlier_boot_counts(
    tmp_path: Path,
) -> None:
    """systemd's ProtectProc=invisible is most often set with ProcSubset=pid, which leaves no
    /proc/sys: the service cannot read the boot id by which red team 70 (branch rt-regress70a)
    let an entry of an earlier boot not count. Refused still (it cannot tell, and an entry
    without its boot is the safe side), but the words said nothing of the boot nor of the
    setting that lets it be told; with ProcSubset=all the same service runs
    (test_proc_noaccess's test of an earlier boot)."""
    python, path = _service_python()
    registry = Path("/tmp/app-pytest-runs-0")
    if not registry.is_dir():
        pytest.skip(f"{registry} (root's registry of test runs) is where the tmpfs is mounted")
    work = tmp_path / "work"
    copy_project_settings(work)
    subprocess.run(["chown", "-R", "54372:54372", str(work)], check=True)
    seen = Path(tempfile.mkdtemp(prefix="app-stale-", dir="/tmp"))
    seen.chmod(0o755)
    env = {
        "PATH": os.environ["PATH"], "PYTHONPATH": path, "HOME": str(seen),
        "APP_SETTINGS_DIR": str(seen), "ENV_FOR_DYNACONF": "development",
    }  # fmt: skip
    earlier = "0f0f0f0f-0000-4000-8000-000000000000"
    try:
        done = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "--pid", "--fork",
             "--mount-proc", "sh", "-c", WITH_A_STALE_ENTRY_SUBSET, "sh", str(work), str(seen),
             str(registry), earlier, ', "boot_began": 1', *AS_THE_SERVICE, "env", "-i",
             *(f"{k}={v}" for k, v in env.items()), python, "-m", "app", "config"],
            capture_output=True, text=True, check=False, cwd="/",
        )  # fmt: skip
    finally:
        seen.rmdir()
    entry = f"{registry}/1-5.json"
    assert done.returncode == 78, done.stderr
    assert (
        f"and the registry of test runs holds an entry for a run of that pid ({entry}), so this "
        "process cannot tell whether that run is above it (nor whether that run is of this "
        "boot: this process cannot read /proc/sys/kernel/random/boot_id, as where /proc is "
        "mounted with subset=pid)"
    ) in done.stderr, done.stderr
    # Before the fix, the refusal ended at "remove <entry>".
    assert (
        f"If no test run of pid 1 is running, remove {entry}, or let this process read "
        "/proc/sys/kernel/random/boot_id (/proc mounted without subset=pid; systemd: "
        "ProcSubset=all, its default), by which an entry of an earlier boot does not count"
    ) in done.stderr, done.stderr


#: A Python outside any run, in a PID namespace of its own below pid 1 (another Python), whose
#: walk is interrupted (by a signal it sends itself as the walk asks whether its read of pid
#: 1's `exe` failed) by a handler that walks again. What each walk said.
HANDLER_WALKS = """
import json, os, signal, sys
from app import sandbox

said = {}


def handler(signum, frame):
    said["handler"] = sandbox._walk_tree()[1]


def trace(frame, event, arg):
    # Python runs the handler at the walk's next step, in this thread.
    if event == "call" and frame.f_code.co_name == "_proc_read_failed" and "handler" not in said:
        if frame.f_locals.get("pid") == 1:
            os.kill(os.getpid(), signal.SIGUSR1)


signal.signal(signal.SIGUSR1, handler)
sys.settrace(trace)
said["walk"] = sandbox._walk_tree()[1]
sys.settrace(None)
print(json.dumps(said))
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not all(map(shutil.which, ("unshare", "strace"))),
    reason="the fault is injected by strace; the process is kept out of this run's process "
    "tree in a PID namespace of its own (unshare --pid, root's)",
)
def test_a_signal_handler_s_walk_leaves_the_walk_it_interrupted_its_notes(tmp_path: Path) -> None:
    """Walks take turns under a re-entrant lock (branch rt-regress70a), so a walk in a signal
    handler, run by Python in the thread whose walk it interrupted, went ahead and emptied
    that walk's notes: a walk that the failed read of pid 1's `exe` refused alone (the
    handler's own read of it not failing) found no run and no refusal."""
    said = under_a_failed_read_of_pid_1s_exe(tmp_path, HANDLER_WALKS)
    assert said["handler"] is None, said  # its read of pid 1's exe did not fail: no note
    # Before the fix: None, the note of the failed read gone with the handler's walk.
    assert said["walk"] is not None, said
    assert "while a test run may be above this process (ancestor pid 1: " in said["walk"], said
    assert "its read of /proc/1/exe failed (EIO: Input/output error)" in said["walk"], said


def under_a_failed_read_of_pid_1s_exe(tmp_path: Path, code: str) -> dict[str, object]:
    """What `code` printed (JSON), run in a PID namespace of its own under strace, which
    fails the first read of pid 1's ``/proc/1/exe`` (EIO). Pid 1 runs a copy of the
    interpreter: strace's -P follows /proc/1/exe to its file, and the walker's own start
    reads the link of its interpreter's (which would take the fault)."""
    interpreter = tmp_path / Path(os.path.realpath(sys.executable)).name
    shutil.copy2(os.path.realpath(sys.executable), interpreter)
    parent = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", str(interpreter), "-c", parent,
         "strace", "-f", "--seccomp-bpf", "-qq", "-o", "/dev/null", "-P", "/proc/1/exe",
         "-e", "trace=readlink,readlinkat", "-e", "inject=readlink,readlinkat:error=EIO:when=1",
         sys.executable, "-c", code],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    said: dict[str, object] = json.loads(done.stdout)
    return said
