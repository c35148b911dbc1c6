"""Processes the guard must see as part of a test run, or as holding a data root (red team 20).

Each case is a real process arrangement: a PID namespace made with ``unshare`` (as a
container runtime makes one), a lock file deleted under a live holder, a command line that
only names pytest.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from project_copy import PROJECT, copy_project_settings
from side_by_side import users_registry

from app import sandbox
from app.errors import DataRootInUseError, shell_word
from app.lock import LOCK_FILE, RootLock, probe
from app.testing import guard

#: A test of the inner run: a child with a hand-built environment (no pytest variable, no
#: sandbox; production's token, so that nothing else stops the load) asks for production.
HAND_BUILT_CHILD = """
import os
import subprocess
import sys

def test_a_child_with_a_hand_built_environment_asks_for_production():
    assert os.getpid() == 1
    env = {"PATH": os.environ["PATH"], "ENV_FOR_DYNACONF": "production",
           "APP_SETTINGS_DIR": os.environ["APP_SETTINGS_DIR"], "APP_API_TOKEN": "t" * 32}
    code = "from app.config import load; print('LOADED', load().data_root)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    print("CHILD", (done.stdout + done.stderr).strip().splitlines()[-1])
"""


NAMESPACE = ("unshare", "--user", "--map-current-user", "--pid", "--fork", "--mount-proc")


def _others_can_run_the_app() -> str | None:
    """Why user 65534 cannot import the app from this checkout, or None if it can (a clone in
    a directory only root may enter, as `mktemp -d` makes, cannot)."""
    user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    done = subprocess.run(
        [*user, sys.executable, "-c", "import app"],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["?"])[-1]


def _unshare_allowed() -> bool:
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run(
        [*NAMESPACE, "true"],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


@pytest.mark.parametrize(
    ("plugin", "refused"),
    [
        pytest.param(
            (),
            "CHILD *SandboxViolationError: refused under pytest (sandbox: *): loading profile "
            "'production'; tests run on the 'testing' profile (this process belongs to the test "
            "run through the process tree (an ancestor process, pytest pid 1, registered in *",
            id="with-the-plugin",
        ),
        pytest.param(
            ("-p", "no:app"),
            "CHILD *SandboxViolationError: refused under pytest: loading profile 'production' "
            "while pytest runs without the app's sandbox (an ancestor process (pid 1: *) runs "
            "pytest without the app's plugin)*",
            id="without-the-plugin",
        ),
    ],
)
def test_a_child_of_pytest_running_as_pid_1_of_a_container_belongs_to_its_run(
    pytester: pytest.Pytester, plugin: tuple[str, ...], refused: str
) -> None:
    # `docker run image pytest` makes pytest the container's pid 1. The walk up the process
    # tree stopped before pid 1, so such a run's children were never part of it: a child
    # given a hand-built environment loaded production.
    if not _unshare_allowed():
        pytest.skip("this machine does not let an unprivileged user make a PID namespace")
    pytester.makepyfile(test_child=HAND_BUILT_CHILD)
    basetemp = f"--basetemp={pytester.path / 'basetemp'}"
    result = pytester.run(
        *NAMESPACE,
        sys.executable,
        "-m",
        "pytest",
        *plugin,
        basetemp,
        "-s",
        "-q",
        "-p",
        "no:randomly",
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([refused])
    assert "LOADED" not in result.stdout.str()


#: A run in a PID namespace of its own that shares /tmp (a container with the host's /tmp,
#: `unshare`): it registers as the plugin does, says its entry, and lives until told.
REGISTERS = """
import sys
from pathlib import Path
from app import sandbox
sandbox.register(Path(sys.argv[1]), ())
print(sandbox._own_entry(), flush=True)  # its name, or where another namespace's took it
sys.stdin.readline()
"""


def _own_entry() -> Path:
    started = sandbox._stat_fields(os.getpid())
    assert started is not None
    return sandbox.RUNS_DIR / f"{os.getpid()}-{started[1]}.json"


def test_runs_in_two_pid_namespaces_that_share_tmp_leave_each_other_registered(
    tmp_path: Path,
) -> None:
    # A run forgets the registry entries of runs that are gone, by looking their pids up in
    # /proc. A run in another PID namespace sees other pids there: each took the other's
    # live entries for dead ones and deleted them, and the children of the run it deleted
    # (given a hand-built environment) were no longer part of any run.
    if not _unshare_allowed():
        pytest.skip("this machine does not let an unprivileged user make a PID namespace")
    ours = _own_entry()
    assert ours.is_file()
    inner = subprocess.Popen(
        [*NAMESPACE, sys.executable, "-c", REGISTERS, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert inner.stdin is not None
    assert inner.stdout is not None
    try:
        theirs = Path(inner.stdout.readline().strip())
        assert theirs.is_file(), theirs
        assert ours.is_file(), "the run in the namespace deleted this run's entry"
        # What every run does when it starts, here from outside the namespace.
        sandbox._forget_dead_runs(sandbox.RUNS_DIR)
        assert theirs.is_file(), "this run deleted the entry of the run in the namespace"
    finally:
        inner.stdin.close()
        inner.wait()


LOAD_PRODUCTION = (
    "from app.config import load\n"
    "from app.errors import SandboxViolationError\n"
    "try:\n"
    "    print('LOADED', load('production').data_root)\n"
    "except SandboxViolationError as refused:\n"
    "    print('REFUSED', refused)\n"
)


def test_a_child_with_a_private_tmp_still_finds_its_run() -> None:
    # A child that runs in a mount namespace with a /tmp of its own (bwrap, firejail
    # --private-tmp, a tool's own sandbox) cannot read the run's registry there. With a
    # hand-built environment it was outside the run: refused here only because this run's
    # command line shows pytest, and told that the plugin was off; under a run started by a
    # script that calls pytest.main(), it loaded production.
    # Root's: an unprivileged user needs a user namespace for a mount namespace, and from
    # one, /proc/<pid>/root of a process outside is not readable (the attacks' catalogue says so).
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("only root makes a mount namespace without a user namespace")
    env = {
        "PATH": os.environ["PATH"],
        "APP_SETTINGS_DIR": str(PROJECT),
        "APP_API_TOKEN": "t" * 32,
    }
    # A tmpfs on the registry alone: the child sees an empty registry, as it would in a /tmp
    # of its own, and still sees a checkout that lives under /tmp (a CI's clone).
    private_tmp = (
        f"mkdir -p {sandbox.RUNS_DIR} && mount -t tmpfs none {sandbox.RUNS_DIR} && "
        f'exec {sys.executable} -c "$0"'
    )
    done = subprocess.run(
        [
            "unshare",
            "--mount",
            "sh",
            "-c",
            private_tmp,
            LOAD_PRODUCTION,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    printed = done.stdout + done.stderr
    assert "REFUSED" in printed, printed
    assert (
        "loading profile 'production'; tests run on the 'testing' profile (this process "
        "belongs to the test run through the process tree (an ancestor process, pytest pid "
        f"{os.getpid()}, registered in /proc/{os.getpid()}/root{sandbox.RUNS_DIR})"
    ) in printed, printed


#: A run started under a strict umask (077, as hardened systems set): it registers as the
#: plugin does, then (as root) starts a child as another user, with a hand-built
#: environment, that asks for production, as `sudo -u <service user> app ...` would.
REGISTERS_UNDER_A_STRICT_UMASK = """
import os, stat, subprocess, sys
from pathlib import Path
os.umask(0o077)
from app import sandbox
sandbox.register(Path(sys.argv[1]), ())
entry = sandbox.RUNS_DIR / f"{os.getpid()}-{sandbox._stat_fields(os.getpid())[1]}.json"
print("MODE", oct(stat.S_IMODE(entry.stat().st_mode)))
if os.geteuid() == 0:
    env = {"PATH": os.environ["PATH"], "APP_SETTINGS_DIR": sys.argv[2], "APP_API_TOKEN": "t" * 32}
    user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    code = "from app.config import load; print(load('production').data_root)"
    done = subprocess.run([*user, sys.executable, "-c", code], env=env, cwd="/",
                          capture_output=True, text=True)
    print("CHILD", (done.stdout + done.stderr).strip().splitlines()[-1])
print("PID", os.getpid())
"""


def test_a_run_under_a_strict_umask_is_found_by_a_child_that_switched_user(
    tmp_path: Path,
) -> None:
    # The registry directory is readable by all, so that a child that switched user still
    # finds its run; the entries took the umask's mode, and under 077 such a child could
    # not read its run's entry: refused only where an ancestor's command line showed
    # pytest (told that the plugin was off), and outside the run where none did.
    if os.geteuid() == 0 and (why := _others_can_run_the_app()) is not None:
        pytest.skip(f"the child switches to user 65534, who cannot import the app: {why}")
    done = subprocess.run(
        [sys.executable, "-c", REGISTERS_UNDER_A_STRICT_UMASK, str(tmp_path), str(PROJECT)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert lines["MODE"] == "0o644"
    if "CHILD" in lines:
        assert (
            "this process belongs to the test run through the process tree (an ancestor "
            f"process, pytest pid {lines['PID']}, registered in {sandbox.RUNS_DIR})"
        ) in lines["CHILD"], lines["CHILD"]


#: What a shell that inherited a run's sandbox variable asks for, outside any run.
OUTSIDE_WITH_THE_VARIABLE = """
from pathlib import Path
from app.config import load
from app.errors import SandboxViolationError
from app.sandbox import check_root
for attempt in (lambda: load("development"), lambda: check_root(Path("/srv"), "open data root")):
    try:
        attempt()
    except SandboxViolationError as refused:
        print("REFUSED", refused)
"""


def test_a_shell_that_inherited_the_sandbox_variable_is_told_how_to_leave_it(
    tmp_path: Path,
) -> None:
    # A terminal multiplexer or daemon started by a test keeps PYTEST_APP_SANDBOX after the
    # run, and so does every shell started from it. Outside any run, the variable alone
    # still refuses (a system without /proc has nothing else), but the refusal only said to
    # mark the test, in a shell where no test runs.
    if not _unshare_allowed():
        pytest.skip("this machine does not let an unprivileged user make a PID namespace")
    env = {
        "PATH": os.environ["PATH"],
        "APP_SETTINGS_DIR": str(copy_project_settings(tmp_path)),
        "PYTEST_APP_SANDBOX": str(tmp_path / "an-old-sandbox"),
    }
    done = subprocess.run(
        [*NAMESPACE, sys.executable, "-c", OUTSIDE_WITH_THE_VARIABLE],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    refusals = done.stdout.splitlines()
    assert len(refusals) == 2, done.stdout + done.stderr
    for refused in refusals:
        assert "this process belongs to the test run through the environment" in refused
        assert refused.endswith(
            ". If this process runs no test, unset PYTEST_APP_SANDBOX: it was inherited from "
            "a test run (a shell, terminal multiplexer or daemon started by a test keeps it)"
        ), refused


#: A user's first test run, where another user already made that user's registry directory.
REGISTERS_AS_NOBODY = """
import sys
from pathlib import Path
from app import sandbox
try:
    sandbox.register(Path(sys.argv[1]), ())
except PermissionError as refused:
    print(refused)
"""


def test_a_registry_directory_another_user_made_is_refused_with_a_fix_that_works(
    tmp_path: Path,
) -> None:
    # Another local user can make /tmp/app-pytest-runs-<uid> first. The run is rightly
    # refused (that user could fake or hide runs there), but it said "remove it and run
    # again", which /tmp's sticky bit does not let the refused user do.
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("only root can run a process as another user here")
    if (why := _others_can_run_the_app()) is not None:
        pytest.skip(f"user 65534 cannot import the app from this checkout: {why}")
    with users_registry(65534) as squatted:  # no run of that user's may start meanwhile
        if squatted.exists():
            pytest.skip(f"{squatted} exists already")
        squatted.mkdir(mode=0o755)  # made by root, for user 65534 (nobody)
        try:
            user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            done = subprocess.run(
                [*user, sys.executable, "-c", REGISTERS_AS_NOBODY, str(tmp_path)],
                capture_output=True,
                text=True,
                check=True,
                cwd="/",
            )
        finally:
            squatted.rmdir()
    assert done.stdout.strip() == (
        f"{squatted} is not a directory that only user 65534 may write, so another user could "
        "fake or hide this user's test runs in it: it is owned by user 0 (root), and only "
        "that user or root may remove it from /tmp: ask them or an administrator to"
    ), done.stdout + done.stderr


# --- a holder whose lock file was deleted -------------------------------------------------


@pytest.mark.parametrize("recreated", [False, True], ids=["deleted", "deleted-and-recreated"])
def test_a_holder_whose_lock_file_was_deleted_still_holds_its_root(
    tmp_path: Path, recreated: bool
) -> None:
    # Deleting a "stale" lock file, as one would a pid file, while its server runs: the
    # server keeps its flock on the deleted inode (and stops within lock_check_seconds), but
    # until then a newcomer locked a new file at the path and got the root beside it, and
    # `app status` (a probe) said that nobody held it.
    root = tmp_path / "production"
    root.mkdir()
    with RootLock(root, kind="server", profile="production", port=8080):
        (root / LOCK_FILE).unlink()
        if recreated:
            (root / LOCK_FILE).write_text("")  # by hand: a second inode at the path
        seen = probe(root)
        assert seen.held
        assert seen.holder is not None
        assert (seen.holder["pid"], seen.holder["kind"], seen.holder["port"]) == (
            os.getpid(),
            "server",
            8080,
        )
        newcomer = RootLock(root, kind="maintenance", profile="production")
        with pytest.raises(DataRootInUseError) as refused:
            newcomer.acquire("purge sessions")
        assert not newcomer.held
        assert str(refused.value) == (
            f"cannot purge sessions: data root {root} is held by pid {os.getpid()}, kind "
            f"server, profile production, host {socket.gethostname()}, port 8080, since "
            f"{seen.holder['started_at']}, through its lock file {root / LOCK_FILE}, which "
            "was deleted while it held it (never delete the lock file: a free one is never "
            "in the way); that is this process: close the storage it opened first "
            "(`.close()`, or leave its `with` block) before opening it again, or use that "
            "one. `app status` shows the holder"
        )
    # Once the holder is gone, the root is free again.
    assert not probe(root).held
    RootLock(root, kind="maintenance", profile="production").acquire("purge sessions").release()


# --- a command line that only names pytest ------------------------------------------------

LOAD_DEVELOPMENT = "from app.config import load; print('LOADED', load('development').data_root)"


def _in_a_namespace(command: list[str], tmp_path: Path) -> str:
    """`command` as pid 1 of a PID namespace of its own (outside this run), with a
    hand-built environment; what it printed."""
    env = {"PATH": os.environ["PATH"], "APP_SETTINGS_DIR": str(copy_project_settings(tmp_path))}
    done = subprocess.run(
        [*NAMESPACE, *command], env=env, cwd=tmp_path, capture_output=True, text=True, check=False
    )
    return done.stdout + done.stderr


@pytest.mark.parametrize("runner", ["make", "git"])
def test_a_command_that_only_names_pytest_is_not_taken_for_a_pytest_run(
    tmp_path: Path, runner: str
) -> None:
    # A Makefile target called `pytest` that starts a development server beside the tests,
    # and a git hook run by `git commit -m pytest`: neither runs pytest, but every word of
    # an ancestor's command line was read, and the app refused development there, saying
    # that an ancestor ran pytest without the app's plugin.
    if not _unshare_allowed():
        pytest.skip("this machine does not let an unprivileged user make a PID namespace")
    load = f'{sys.executable} -c "{LOAD_DEVELOPMENT}"'
    if runner == "make":
        (tmp_path / "Makefile").write_text(f"pytest:\n\t{load}\n")
        command = ["make", "-s", "pytest"]
    else:
        subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
        hook = tmp_path / "hooks" / "post-commit"
        hook.parent.mkdir()
        hook.write_text(f"#!/bin/sh\n{load}\n")
        hook.chmod(0o755)
        identity = ["-c", "user.name=dev", "-c", "user.email=dev@example.org"]
        hooks = ["-c", f"core.hooksPath={hook.parent}"]
        command = ["git", *identity, *hooks, "commit", "-q", "--allow-empty", "-m", "pytest"]
    printed = _in_a_namespace(command, tmp_path)
    assert f"LOADED {tmp_path / 'data' / 'development'}" in printed, printed


def test_a_root_whose_lock_file_was_deleted_is_held_among_pytest_s_old_directories(
    tmp_path: Path,
) -> None:
    # What the plugin looks for before pytest deletes its older numbered directories: the
    # lock files held open there. A holder's deleted lock file is named "<path> (deleted)"
    # by the kernel, so its root was not seen, and pytest deleted it under the holder.
    old = tmp_path / "pytest-0"
    root = old / "test_failed0" / "data"
    root.mkdir(parents=True)
    with RootLock(root, kind="server", profile="development", port=8000):
        (root / LOCK_FILE).unlink()
        assert guard._lock_files_under([old]) == {root / LOCK_FILE}
        assert probe(root).held


# --- a holder in another PID namespace ------------------------------------------------------

#: A server's lock, taken in a PID namespace of its own (a container on the same kernel,
#: sharing the data root's directory), held until told.
HOLDS = """
import sys
from pathlib import Path
from app.lock import RootLock
RootLock(Path(sys.argv[1]), kind="server", profile="production", port=8080).acquire("serve")
print("held", flush=True)
sys.stdin.readline()
"""

#: The same root wanted from inside a PID namespace of its own.
WANTS = """
import sys
from pathlib import Path
from app.errors import DataRootInUseError
from app.lock import RootLock
try:
    RootLock(Path(sys.argv[1]), kind="maintenance", profile="production").acquire("purge sessions")
except DataRootInUseError as refused:
    print(refused)
"""


def test_a_holder_in_another_pid_namespace_is_named_by_a_pid_that_stops_it(
    tmp_path: Path,
) -> None:
    # A holder publishes its pid as its PID namespace numbers it: a server in a container is
    # pid 1 there. The refusal advised `kill 1` (init, run as root) or the pid of whatever
    # unrelated process has that number here; inside a container, the same for a holder on
    # the host.
    if not _unshare_allowed():
        pytest.skip("this machine does not let an unprivileged user make a PID namespace")
    root = tmp_path / "production"
    root.mkdir()
    holder = subprocess.Popen(
        [*NAMESPACE, sys.executable, "-c", HOLDS, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline() == "held\n"
        pid = next(int(p.name) for p in Path("/proc").iterdir() if _is_child_of(p, holder.pid))
        seen = probe(root)
        assert seen.holder is not None
        assert (seen.holder["pid"], seen.holder["pid_in_its_namespace"]) == (pid, 1)
        with pytest.raises(DataRootInUseError) as refused:
            RootLock(root, kind="maintenance", profile="production").acquire("purge sessions")
        message = str(refused.value)
        assert f"is held by pid {pid} (pid 1 in a PID namespace of its own), kind server" in (
            message
        )
        assert f"stop it (kill {pid}, or its service's stop" in message
        assert "kill 1)" not in message
    finally:
        holder.stdin.close()
        holder.wait()
    # The other way round: this process holds the root, a process in a namespace wants it.
    with RootLock(root, kind="server", profile="production", port=8080):
        done = subprocess.run(
            [*NAMESPACE, sys.executable, "-c", WANTS, str(root)],
            capture_output=True,
            text=True,
            check=True,
        )
    assert (
        f"is held by pid {os.getpid()} in a PID namespace this process cannot see (another "
        "container's, or the host's: stop it there), kind server"
    ) in done.stdout, done.stdout + done.stderr
    assert (
        "stop that process or wait for it to finish (`flock -s "  # red team 62's waiter
        f"{shell_word(root / '.server.lock')} true` returns once it lets go) and retry"
    ) in done.stdout
    assert f"kill {os.getpid()}" not in done.stdout


def _is_child_of(entry: Path, parent: int) -> bool:
    # The namespace's pid 1, as this PID namespace numbers it: unshare's forked child.
    if not entry.name.isdigit():
        return False
    try:
        stat = (entry / "stat").read_bytes()
    except OSError:
        return False
    return int(stat[stat.rfind(b")") + 2 :].split()[1]) == parent
