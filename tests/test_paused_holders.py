"""A data root's holder that exists but does not run: at a debugger's breakpoint (a tracing
stop), or frozen with its cgroup (`docker pause`, `systemctl freeze`, cgroup v1's freezer).

Each was told "stop it (kill <pid>)", or for a maintenance command "wait for it to finish":
neither happens to a process that does not run (a signal but SIGKILL waits until it runs
again), so every start and command was refused 75 for as long as the pause lasted, with a
remedy that did nothing. The refusal now says how the holder is kept from running, by whom
(the debugger's pid, the cgroup's directory) and what lets it run or ends it. A holder
stopped by a signal (Ctrl-Z) is red team 48's (tests/test_redteam_s48_ops.py).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_redteam_s48_ops import _maintenance_holder  # noqa: F401 - a fixture
from test_server_e2e import app_env, run_app, wait_for

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/proc/self/mountinfo").exists(),
    reason="tracing another user's process and making cgroups need root and Linux's /proc",
)

#: A debugger's attach, as gdb's and pdb's `attach` make it: PTRACE_ATTACH, then the wait
#: for the tracee's stop. It keeps the tracee until its standard input closes.
_TRACER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
pid = int(sys.argv[1])
if libc.ptrace(16, pid, None, None) != 0:  # PTRACE_ATTACH
    raise OSError(ctypes.get_errno(), "ptrace")
os.waitpid(pid, getattr(os, "__WALL", 0x40000000))
print("attached", flush=True)
sys.stdin.read()
"""


def test_a_holder_at_a_debuggers_breakpoint_names_the_debugger_and_what_lets_it_go(
    maintenance_holder: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    root, process = maintenance_holder
    tracer = subprocess.Popen(
        [sys.executable, "-c", _TRACER, str(process.pid)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert tracer.stdout is not None
        assert tracer.stdout.readline() == "attached\n"
        refused = run_app("data", "purge", env=app_env(root))
        status = run_app("status", env=app_env(root))
    finally:
        tracer.communicate("")
    h, t = process.pid, tracer.pid
    assert refused.returncode == 75, refused.stderr
    assert (
        f"running `app data check --repair`, stopped by a debugger (pid {t} traces it): it "
        f"waits for the debugger to continue it; continue or detach it in the debugger (pid "
        f"{t}), or end the debugger (pid {t}) and then resume it (kill -CONT {h}), and let it "
        f"finish; or end it (kill -KILL {h}, which skips its clean-up); then retry. `app "
        "status` shows the holder\n"
    ) in refused.stderr, refused.stderr
    assert f"stopped by a debugger (pid {t} traces it)" in status.stdout, status.stdout


def _freezer_dirs() -> list[tuple[str, Path]]:
    """Where this process sees cgroup v2 and cgroup v1's freezer mounted, writable."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        dash = fields.index("-", 6)
        kind, options = fields[dash + 1], fields[-1].split(",")
        point = Path(fields[4])
        if kind == "cgroup2" and (point / "cgroup.procs").exists() and "ro" not in options:
            found.append(("v2", point))
        elif kind == "cgroup" and "freezer" in options and "ro" not in fields[5].split(","):
            found.append(("v1", point))
    return found


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_a_holder_frozen_with_its_cgroup_names_the_cgroup_and_how_to_thaw_it(
    maintenance_holder: tuple[Path, subprocess.Popen[bytes]], version: str
) -> None:
    root, process = maintenance_holder
    mounts = [point for kind, point in _freezer_dirs() if kind == version]
    if not mounts:
        pytest.skip(f"no writable cgroup {version} hierarchy with a freezer is mounted here")
    group = mounts[0] / f"app-test-frozen-{os.getpid()}-{process.pid}"
    control, thawed, frozen = (
        ("cgroup.freeze", "0", "1") if version == "v2" else ("freezer.state", "THAWED", "FROZEN")
    )
    try:
        group.mkdir()
    except OSError as error:
        pytest.skip(f"cannot make a cgroup here ({error})")
    try:
        (group / "cgroup.procs").write_text(str(process.pid))
        (group / control).write_text(frozen)
        if version == "v2":
            wait_for(
                lambda: "frozen 1" in (group / "cgroup.events").read_text(), "the cgroup to freeze"
            )
        refused = run_app("data", "purge", env=app_env(root))
        status = run_app("status", env=app_env(root))
    finally:
        (group / control).write_text(thawed)
        process.kill()
        process.wait()
        group.rmdir()
    assert refused.returncode == 75, refused.stderr
    thaw = f"echo {thawed} > {shlex.quote(str(group / control))}"
    assert (
        f"running `app data check --repair`, frozen with its cgroup {group}: it waits to be "
        f"thawed; thaw it (`docker unpause` or `systemctl thaw`, whichever froze it, or "
        f"`{thaw}`), then let it finish or stop it (kill {process.pid}), then retry. `app "
        "status` shows the holder\n"
    ) in refused.stderr, refused.stderr
    assert f"frozen with its cgroup {group}" in status.stdout, status.stdout
