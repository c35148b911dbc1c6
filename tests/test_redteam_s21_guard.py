"""Processes the guard must see as part of a test run, and processes it must not (red team 21).

Each case is a real process arrangement: a PID namespace that still sees the run's ``/proc``
(``unshare --pid --fork`` without ``--mount-proc``), a daemon that outlives its run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from project_copy import PROJECT

from app import sandbox

#: A PID namespace of its own that keeps the /proc it was started under (no --mount-proc):
#: its processes are numbered one way by os.getpid(), another by /proc.
OWN_PIDS_SHARED_PROC = ("unshare", "--user", "--map-current-user", "--pid", "--fork")

#: Production's token must pass its strength check, so that nothing but the guard refuses.
HAND_BUILT_ENV = {
    "PATH": os.environ["PATH"],
    "APP_SETTINGS_DIR": str(PROJECT),
    "APP_API_TOKEN": "Zq8vN3xR7kLp2WmC9tYb4HsD6fJg1QeA",
}

LOAD_PRODUCTION = (
    "from app.config import load\n"
    "from app.errors import SandboxViolationError\n"
    "try:\n"
    "    print('LOADED', load('production').data_root)\n"
    "except SandboxViolationError as refused:\n"
    "    print('REFUSED', refused)\n"
)


def _namespaces_allowed() -> bool:
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run([*OWN_PIDS_SHARED_PROC, "true"], capture_output=True, check=False)
    return done.returncode == 0


needs_namespaces = pytest.mark.skipif(
    not _namespaces_allowed(), reason="this machine does not let this user make a PID namespace"
)


@needs_namespaces
def test_a_child_in_a_pid_namespace_that_shares_the_run_s_proc_belongs_to_the_run() -> None:
    # `unshare --pid --fork` without --mount-proc (a tool's sandbox, a container given the
    # host's /proc): the child is pid 1 to itself, and it read /proc/1 (the host's init)
    # as itself, so it walked none of its real ancestors, and with a hand-built
    # environment it loaded production. The run is in plain sight in that /proc.
    done = subprocess.run(
        [*OWN_PIDS_SHARED_PROC, sys.executable, "-c", LOAD_PRODUCTION],
        env=HAND_BUILT_ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    printed = done.stdout + done.stderr
    assert "REFUSED" in printed, printed
    assert (
        "loading profile 'production'; tests run on the 'testing' profile (this process "
        "belongs to the test run through the process tree (an ancestor process, pytest pid "
        f"{os.getpid()}, registered in {sandbox.RUNS_DIR})"
    ) in printed, printed


#: A run in such a namespace: it registers as the plugin does, says its entry and its pid as
#: /proc numbers it, and lives until told.
REGISTERS = """
import os, sys
from pathlib import Path
from app import sandbox
sandbox.register(Path(sys.argv[1]), ())
print(os.getpid(), os.readlink("/proc/self"), *sorted(os.listdir(sandbox.RUNS_DIR)), flush=True)
sys.stdin.readline()
"""


@needs_namespaces
def test_a_run_in_a_pid_namespace_that_shares_proc_claims_only_its_own_processes(
    tmp_path: Path,
) -> None:
    # The reverse: such a run registered under its pid as its namespace numbers it, 1, and
    # /proc's start time of pid 1, the host's init. Every process of its user on the machine
    # has init among its ancestors, so each was taken for part of that run: a developer's
    # `app serve --profile production` was refused, told that tests run on 'testing'.
    inner = subprocess.Popen(
        [*OWN_PIDS_SHARED_PROC, sys.executable, "-c", REGISTERS, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert inner.stdin is not None
    assert inner.stdout is not None
    try:
        own_pid, proc_pid, *entries = inner.stdout.readline().split()
        assert own_pid == "1"
        init = sandbox._stat_fields(1)
        assert init is not None
        assert sandbox._entry_name(1, init[1]) not in entries
        started = sandbox._stat_fields(int(proc_pid))
        assert started is not None
        assert sandbox._entry_name(int(proc_pid), started[1]) in entries
    finally:
        inner.stdin.close()
        inner.wait()


#: A run (registered as the plugin does) whose test starts a daemon as `( cmd & )` in `sh -c`
#: does, with a hand-built environment, and ends. The daemon waits for the run's end (the
#: pipe's other end closes), then asks for production.
DAEMON_AFTER_THE_RUN = """
import json, os, shlex, subprocess, sys
from pathlib import Path
from app import sandbox
sandbox.register(Path(sys.argv[1]), ())
ended, running = os.pipe()
env = {**json.loads(sys.argv[2]), "LOAD": sys.argv[3]}
daemon = f"import os; os.read({ended}, 1); exec(os.environ['LOAD'])"
shell = f"({shlex.quote(sys.executable)} -c {shlex.quote(daemon)} &)"
subprocess.run(["sh", "-c", shell], env=env, pass_fds=[ended], check=True)
"""


def test_a_daemon_that_outlives_its_run_still_belongs_to_it(tmp_path: Path) -> None:
    # A daemon a test starts (double-forked, so the run adopts it as its subreaper) is
    # re-parented to init when the run's process exits: it left the run's tree, and with a
    # hand-built environment it loaded production a moment after the run had ended. Here
    # the run that ends is an inner one: the daemon must still belong to it, not merely to
    # this run (which adopts it in turn), nor, as outside any test, to none.
    import json

    inner_sandbox = tmp_path / "inner-sandbox"
    inner_sandbox.mkdir()
    args = [str(inner_sandbox), json.dumps(HAND_BUILT_ENV), LOAD_PRODUCTION]
    with subprocess.Popen(
        [sys.executable, "-c", DAEMON_AFTER_THE_RUN, *args], stdout=subprocess.PIPE, text=True
    ) as inner:
        # The daemon holds the pipe too: EOF once it has answered and exited.
        printed = inner.communicate()[0]
    assert "REFUSED" in printed, printed
    assert f"(sandbox: {inner_sandbox})" in printed, printed
    assert (
        "this process, started by the test run of pytest pid "
        f"{inner.pid}, which has ended, registered in {sandbox.RUNS_DIR})"
    ) in printed, printed
    assert re.search(
        rf"This process outlived the test run that started it \(pytest pid {inner.pid}\) and "
        r"stays under its rules while it runs: if no test needs it, stop it \(kill \d+\)$",
        printed.rstrip(),
    ), printed


#: A run that registers as the plugin does, in a /tmp with no space left on the registry.
REGISTERS_ON_A_FULL_TMP = """
import sys
from pathlib import Path
import pytest
from app import sandbox
from app.testing import guard
try:
    guard.register(Path(sys.argv[1]), ())
except pytest.UsageError as refused:
    print("REFUSED", refused)
print("LEFT", *sorted(p.name for p in sandbox.RUNS_DIR.iterdir()))
"""


#: What frees a full registry: space, or (red team 75 on integrity) inodes, where every one
#: is used and blocks are free, and "Free space in /tmp (`df -h /tmp`)" showed room.
REGISTRY_FULL_FIXES = {
    "blocks": "Free space in /tmp (`df -h /tmp`) and run again\n",
    "inodes": (
        "/tmp has no free inodes (each file takes one: `df -i /tmp` counts them, where `df -h` "
        "shows free space): remove files there and run again\n"
    ),
}


@pytest.mark.parametrize("used_up", REGISTRY_FULL_FIXES)
def test_a_run_whose_registry_is_full_is_refused_saying_what_frees_it(
    tmp_path: Path, used_up: str
) -> None:
    # /tmp full (ENOSPC) when the run writes its entry: the run was refused, but said only
    # "[Errno 28] No space left on device", neither where nor what to do, and each refused
    # run left an empty temporary file in the registry that nothing ever removed.
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("only root mounts a tmpfs without a user namespace")
    # The tmpfs's root takes one of its 2 inodes, the filler the other.
    size, filler = (
        ("size=4k", f"head -c 65536 /dev/zero > {sandbox.RUNS_DIR}/filler")
        if used_up == "blocks"
        else ("size=1m,nr_inodes=2", f"mkdir {sandbox.RUNS_DIR}/filler")
    )
    full = (
        f"mount -t tmpfs -o {size},mode=755 none {sandbox.RUNS_DIR} && "
        f"({filler}; "
        f'exec {sys.executable} -c "$0" "$1")'
    )
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", full, REGISTERS_ON_A_FULL_TMP, str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    printed = done.stdout + done.stderr
    assert (
        f"REFUSED app: refusing to run: the test run cannot be registered in {sandbox.RUNS_DIR} "
        f"(No space left on device, writing {sandbox.RUNS_DIR}"
    ) in printed, printed
    assert (
        "); without its entry there, a process its tests start with a hand-built environment "
        f"could not be told apart from a production shell. {REGISTRY_FULL_FIXES[used_up]}"
    ) in printed, printed
    assert "LEFT filler\n" in printed, printed


#: Tests of an inner run, in a mount namespace with a /tmp of its own (the registry the
#: tests damage is that run's alone): each breaks the registry as a clean-up of /tmp would;
#: the last starts a child with a hand-built environment that asks for production.
DAMAGES_THE_REGISTRY = """
import os, shutil, subprocess, sys
from app import sandbox

def _entry():
    return sandbox.RUNS_DIR / f"{os.getpid()}-{sandbox._stat_fields(os.getpid())[1]}.json"

def test_1_removes_its_entry():
    _entry().unlink()

def test_2_removes_the_registry():
    shutil.rmtree(sandbox.RUNS_DIR)

def test_3_makes_the_registry_writable_by_all():
    sandbox.RUNS_DIR.chmod(0o777)

def test_4_a_child_with_a_hand_built_environment_asks_for_production():
    assert _entry().is_file()
    env = {"PATH": os.environ["PATH"], "APP_SETTINGS_DIR": os.environ["APP_SETTINGS_DIR"],
           "APP_API_TOKEN": "Zq8vN3xR7kLp2WmC9tYb4HsD6fJg1QeA"}
    code = "from app.config import load; print('LOADED', load('production').data_root)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "LOADED" not in done.stdout
    assert "tests run on the 'testing' profile" in done.stderr, done.stderr
"""


def test_a_test_that_damages_the_run_s_registry_fails_and_the_run_stays_guarded(
    pytester: pytest.Pytester,
) -> None:
    # A test that cleans up /tmp/app-* (or its run's entry, or makes the directory writable
    # by all, after which its entries are ignored) took every process the run started from
    # then on, given a hand-built environment, out of the run, silently.
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("only root mounts a tmpfs without a user namespace")
    pytester.makepyfile(test_damage=DAMAGES_THE_REGISTRY)
    # A /tmp of its own, where this run's sandbox (the inner run's directory, and its
    # settings) and the checkout with its interpreter (CI clones into `mktemp -d`) stay
    # visible at their paths.
    run = sandbox.current_run()
    assert run is not None
    keep = [
        path for path in (run.sandbox, PROJECT, Path(sys.prefix)) if path.is_relative_to("/tmp")
    ]
    private_tmp = 'mount -t tmpfs none /tmp && exec "$@"'
    if keep:
        binds = "".join(
            f'mkdir -p {path}; mount --bind "$old"/{path.relative_to("/tmp")} {path}; '
            for path in keep
        )
        private_tmp = (
            'set -e; old=$(mktemp -d /run/app-s21-tmp.XXXXXX); mount --bind /tmp "$old"; '
            f'mount -t tmpfs none /tmp; {binds}umount "$old"; rmdir "$old"; exec "$@"'
        )
    result = pytester.run(
        *("unshare", "--mount", "sh", "-c", private_tmp, "sh"),
        *(sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"),
    )
    result.assert_outcomes(passed=4, errors=3)
    entry = f"this run's entry in {sandbox.RUNS_DIR} was removed"
    removed = f"the registry {sandbox.RUNS_DIR} was removed"
    writable = f"the registry {sandbox.RUNS_DIR} was made writable by others (drwxrwxrwx)"
    result.stdout.fnmatch_lines(
        [
            (
                f"*app: after test_damage.py::test_1_removes_its_entry, {entry}; it was put "
                "back. Until then, a process started with a hand-built environment (and any "
                "after the run) was part of the run only through the descriptors of the registry "
                "and of its entry that the run keeps open. Tests must not remove or change "
                f"{sandbox.RUNS_DIR} (if this test did not, another process of user "
                f"{os.getuid()} did meanwhile, such as a test of another run beside this one)"
            ),
            f"*app: after test_damage.py::test_2_removes_the_registry, {removed}; it was put*",
            f"*app: after test_damage.py::test_3_*_by_all, {writable}; it was put back.*",
        ],
        consecutive=False,
    )


@needs_namespaces
def test_a_conftest_that_loads_the_configuration_under_pytest_help_is_told_why(
    tmp_path: Path,
) -> None:
    # `pytest --help` imports the conftests (for their options) while the plugin, as
    # pytest-django does, sets nothing up. A conftest that loads the configuration was
    # refused (rightly: no sandbox), but told that the plugin was disabled with `-p no:app`
    # or that the run's rootdir was another project: neither was so. (Outside this run: a
    # PID namespace with its own /proc, and a hand-built environment.)
    (tmp_path / "conftest.py").write_text("from app.config import load\nload()\n")
    done = subprocess.run(
        [
            *(*OWN_PIDS_SHARED_PROC, "--mount-proc", sys.executable, "-m", "pytest", "--help"),
            *("-W", "error::pytest.PytestConfigWarning", "-p", "no:cacheprovider"),
        ],
        env={"PATH": os.environ["PATH"], "APP_SETTINGS_DIR": str(PROJECT)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (
        "refused under pytest: loading profile 'development' while pytest runs without the "
        "app's sandbox (pytest runs in this process, and the app's plugin, loaded, stayed "
        "inactive in it). Run the tests with the app's pytest plugin: it is loaded in this "
        "process but stayed inactive: pytest --help imports the conftests but runs no test, "
        "so the plugin makes no sandbox; run the tests to load the configuration under it"
    ) in done.stderr, done.stderr


#: A time namespace whose boot time is a day later (`unshare --time`, as checkpoint and
#: restore tools make one): the kernel shows every process's start time shifted by it.
LATER_BOOT = ("unshare", "--user", "--map-current-user", "--time", "--boottime", "86400")


def test_a_child_in_a_time_namespace_still_finds_its_run() -> None:
    # Registry entries are named by pid and start time, and /proc shows a start time in the
    # reader's time namespace: a child whose boot time is moved saw another start time for
    # every ancestor, found no entry, and with a hand-built environment was outside the run
    # (refused here only because this run's command line shows pytest, and told that the
    # plugin was off; under a script that calls pytest.main(), it loaded production).
    done = subprocess.run(
        [*LATER_BOOT, sys.executable, "-c", LOAD_PRODUCTION],
        env=HAND_BUILT_ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    if "unshare failed" in done.stderr or "unshare: " in done.stderr:
        pytest.skip(f"this machine does not let this user make a time namespace: {done.stderr}")
    printed = done.stdout + done.stderr
    assert (
        "loading profile 'production'; tests run on the 'testing' profile (this process "
        "belongs to the test run through the process tree (an ancestor process, pytest pid "
        f"{os.getpid()}, registered in {sandbox.RUNS_DIR})"
    ) in printed, printed
