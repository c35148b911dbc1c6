"""The two ways `app_live_server` starts its ``app serve`` agree in what a test can see.

Forked from the run's warm interpreter (`app.testing.zygote`, the default) or a plain
``python -m app serve --port 0`` process (``--app-live-server=subprocess``, and wherever the
test's environment or inherited values differ from the run's): the same command line in
``/proc``, process group, holder in the lock file, answers, refusal of a second server on the
held root (its words and exit code), and exit on SIGTERM; and the zygote stops a server it still
runs when the run ends (its pytest process killed), and a pytester run in line ends its own
zygote, never the enclosing run's (one zygote per process did: the in-line run's end stopped
the test's server).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from waits import until

from app.lock import read_holder
from app.testing import zygote
from app.testing.fixtures import FORKED, SUBPROCESS, live_server_start
from app.testing.live_server import ServerProcess, start_server, stop_server


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def _parent(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("PPid:")).split()[1])


def _shown(text: str, way: Path) -> str:
    """`text` without what differs from one server to the next (its directory, pids, ports,
    times, how many times its start asked for /health)."""
    shown = re.sub(r"\d+", "N", text.replace(str(way), "WAY"))
    # The start's polls of /health until it answers: as many as the machine's load makes it.
    return re.sub(r'(INFO: +N.N.N.N:N - "GET /health HTTP/N.N" N OK\n)+', r"\1", shown)


@pytest.fixture
def run(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> pytest.Config:
    """This run, as one with more than one test that asks for a live server
    (`zygote.expect`)."""
    monkeypatch.setitem(zygote._RUNS[request.config], "expected", 2)
    return request.config


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "APP_HOST": "127.0.0.1", "APP_DATA_ROOT": str(root)}


def _seen(tmp_path: Path, warm: pytest.Config | None) -> tuple[dict[str, Any], int]:
    """What a test sees of a server started one way, and the pid of its parent."""
    root = tmp_path / ("forked" if warm else "plain") / "first"
    root.parent.mkdir()
    process: ServerProcess
    process, url = start_server(_env(root), root, tmp_path / f"{warm}.log", warm=warm)
    try:
        holder = read_holder(root)
        assert holder is not None
        assert holder["pid"] == process.pid
        seen: dict[str, Any] = {
            "cmdline": _cmdline(process.pid),
            "group": os.getpgid(process.pid) == os.getpgrp(),
            "holder": sorted(holder),
            "health": httpx.get(f"{url}/health").json(),
        }
        second_log = tmp_path / f"{warm}-second.log"
        second, _ = _second(root, second_log, warm)
        seen["second"] = (second, _shown(second_log.read_text(), root.parent))
        parent = _parent(process.pid)
    finally:
        process.terminate()
        seen["terminated"] = process.wait(timeout=60)
    seen["log"] = _shown((tmp_path / f"{warm}.log").read_text(), root.parent)
    return seen, parent


def _second(root: Path, log: Path, warm: pytest.Config | None) -> tuple[int, str]:
    """A second server on the held root, started the same way: its exit code."""
    from app.testing.live_server import _start, published_port

    with pytest.raises(pytest.fail.Exception) as refused:
        _start(_env(root), log, lambda p: str(published_port(root, p, log)), warm)
    status = re.search(r"app serve exited with (\d+)", str(refused.value))
    assert status, refused.value
    return int(status[1]), ""


def test_a_forked_server_is_the_plain_one_in_all_a_test_sees(
    tmp_path: Path, run: pytest.Config
) -> None:
    forked, forked_parent = _seen(tmp_path, warm=run)
    plain, plain_parent = _seen(tmp_path, warm=None)
    assert forked == plain
    assert plain_parent == os.getpid()
    # Both ways were taken: the forked one is the zygote's child.
    assert _cmdline(forked_parent)[1:] == zygote.ZYGOTE, _cmdline(forked_parent)
    assert forked["cmdline"][1:] == ["-m", "app", "serve", "--port", "0"]
    assert forked["second"][0] == 75, forked["second"]  # EX_TEMPFAIL: the root is held
    assert "is held by pid N, kind server" in forked["second"][1], forked["second"]
    assert forked["terminated"] == 0


def test_a_server_of_another_environment_or_directory_is_started_the_plain_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: pytest.Config
) -> None:
    root = tmp_path / "data"
    # A variable the app does not read, changed by the test: a plain start sees it.
    env = {**_env(root), "APP_S62A_UNREAD": "x", "TZ": "Pacific/Kiritimati"}
    process, _ = start_server(env, root, tmp_path / "changed.log", warm=run)
    try:
        assert _parent(process.pid) == os.getpid()
    finally:
        stop_server(process)
    # Another working directory, which `python -m` puts first on sys.path: the zygote's
    # child runs the plain start in its place (execve), the zygote's child still.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dynaconf.py").write_text("raise SystemExit('imported from the test directory')\n")
    log = tmp_path / "shadowed.log"
    from app.testing.live_server import _start

    with pytest.raises(pytest.fail.Exception, match="imported from the test directory"):
        _start(_env(tmp_path / "other"), log, lambda p: "http://127.0.0.1:9", run)


def test_the_zygote_stops_a_server_it_still_runs_when_the_run_ends(
    tmp_path: Path, run: pytest.Config
) -> None:
    root, log = tmp_path / "data", tmp_path / "left.log"
    # The run's zygote (a later test starts another), as its last server is left running.
    own = zygote.forking(_env(root), run)
    assert own is not None
    fd = os.open(log, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        server = own.serve(_env(root), fd)
    finally:
        os.close(fd)
    from app.testing.live_server import published_port

    published_port(root, server, log)
    zygote._RUNS[run].pop("zygote").close()  # as a killed pytest process's end closes it
    assert own.process.returncode == 0
    assert not Path(f"/proc/{server.pid}").exists() or _parent(server.pid) != own.process.pid
    assert "Shutting down" in log.read_text(), log.read_text()
    assert read_holder(root) is None or not Path(f"/proc/{server.pid}").exists()
    with pytest.raises(ChildProcessError, match="zygote"):
        server.wait()
    server.send_signal(signal.SIGTERM)  # its exit unknown: not signalled (pid reuse)


def test_the_option_chooses_the_plain_start(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert live_server_start(request.config) == FORKED
    monkeypatch.setattr(request.config.option, "app_live_server", SUBPROCESS)
    assert live_server_start(request.config) == SUBPROCESS


def test_a_run_in_line_ends_its_own_zygote_not_the_enclosing_run_s(
    tmp_path: Path, run: pytest.Config, pytester: pytest.Pytester
) -> None:
    # A pytester run in this process configures and ends a run of its own: its end closed
    # the enclosing run's zygote, and with it this test's server, while one zygote was
    # kept per process.
    root = tmp_path / "data"
    process, url = start_server(_env(root), root, tmp_path / "outer.log", warm=run)
    try:
        enclosing = zygote._RUNS[run]["zygote"]
        pytester.makepyfile("def test_nothing():\n    pass\n")
        pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
        assert zygote._RUNS[run]["zygote"] is enclosing
        assert enclosing.process.poll() is None
        assert httpx.get(f"{url}/health").status_code == 200
        assert process.poll() is None
    finally:
        stop_server(process)


@pytest.mark.parametrize(
    ("ini", "refusal"),
    [
        (
            "app_live_server = fork",
            (
                "*app: *tox.ini sets app_live_server = 'fork', which is not a way the "
                "app_live_server fixture starts its server: write one of forked, subprocess "
                "(forked, the default: from the run's warm interpreter; subprocess: a plain "
                "python -m app serve)"
            ),
        ),
        (
            "app_live_sever = subprocess",
            (
                "*app: *tox.ini sets 'app_live_sever', which is no ini key of the app (did you "
                "mean 'app_live_server'?); the run would go on without what it asks for. Spell "
                "it app_live_server"
            ),
        ),
    ],
)
def test_an_ini_value_or_key_the_fixture_cannot_use_stops_the_run(
    pytester: pytest.Pytester, ini: str, refusal: str
) -> None:
    # A wrong value in the ini file failed each test that asked for app_live_server and
    # ran the others; a misspelt key was pytest's warning alone. Both are usage errors now,
    # as a wrong --app-live-server is argparse's.
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(test_nothing="def test_nothing(app_live_server): pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:warnings")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([refusal])
    assert "passed" not in result.stdout.str()  # no test ran


def test_a_forked_server_is_signalled_through_its_pidfd_never_by_a_pid_reused(
    tmp_path: Path, run: pytest.Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The zygote reaps its server and then says so: in between, a signal by pid (the run
    # had no other handle) could reach a process given that pid since. The zygote hands
    # over a pidfd with the pid, and the run signals through it.
    import select

    root = tmp_path / "data"
    process, _ = start_server(_env(root), root, tmp_path / "pidfd.log", warm=run)
    assert isinstance(process, zygote.WarmServer)
    assert process.pidfd is not None
    assert os.readlink(f"/proc/self/fd/{process.pidfd}") == "anon_inode:[pidfd]"
    os.kill(process.pid, signal.SIGKILL)
    select.select([process.pidfd], [], [])  # it has exited
    until(lambda: not Path(f"/proc/{process.pid}").exists(), lambda: "the zygote's reap")
    # Its exit not yet read here (as in the window): the signal goes nowhere, by its pidfd.
    monkeypatch.setattr(process, "may_signal", lambda: True)
    process.send_signal(signal.SIGTERM)  # by pid: ProcessLookupError, or another process
    monkeypatch.undo()
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert process.pidfd is None  # closed once its exit was read


def test_a_test_s_root_directory_or_groups_are_never_a_forked_server_s(tmp_path: Path) -> None:
    # What a child inherits was compared without its root directory and its groups (a user
    # switch showed, as it drops capabilities; a group switch drops none): a test that
    # `chroot`s into a jail with its own `/proc`, or `setegid`s or `setgroups` to a group of
    # its own, had its server forked from the run's warm interpreter outside the jail (its
    # data root's path resolved there) and in the run's groups, where a plain start is the
    # test's child, made as it is. Each is now compared (here in a forked child: a `chroot`
    # and the ids are the whole process's, and the run's other threads must not see them).
    if os.geteuid() != 0:
        pytest.skip("chroot, setegid and setgroups need root")
    import ctypes

    jail = tmp_path / "jail"
    (jail / "proc").mkdir(parents=True)
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        said = "the child failed"
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            before = zygote.inherited()
            os.setegid(65534)
            said = f"{zygote.inherited() != before}"
            os.setegid(0)
            groups = os.getgroups()
            os.setgroups([*groups, 65533])
            said += f" {zygote.inherited() != before}"
            os.setgroups(groups)
            said += f" {zygote.inherited() == before}"
            # A mount namespace of the child's own (CLONE_NEWNS), made private in it
            # (MS_PRIVATE | MS_REC), then `/proc` shown in the jail (MS_BIND | MS_REC): the
            # run's own mounts are never touched.
            if libc.unshare(0x00020000) != 0:
                said += " unshare"
            elif libc.mount(b"none", b"/", None, 0x40000 | 0x4000, None) != 0:
                said += " private"
            elif libc.mount(b"/proc", bytes(jail / "proc"), None, 0x1000 | 0x4000, None):
                said += " mount"
            else:
                before = zygote.inherited()  # the new mount namespace, compared alone
                os.chroot(jail)
                os.chdir("/")
                said += f" {Path('/proc/thread-self/ns').is_dir()} {zygote.inherited() != before}"
        finally:
            os.write(writer, said.encode())
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as report:
        said = report.read()
    os.waitpid(child, 0)
    assert said == "True True True True True", said


def test_a_seccomp_filter_a_test_adds_to_a_run_already_filtered_is_never_a_forked_server_s() -> (
    None
):
    # What a child inherits compared the seccomp mode (`Seccomp: 2` once any filter is on),
    # not the filters: in a run already under one (a container runtime's), a test that added
    # its own (a call made to fail, to see the server meet the error) had its server forked
    # from the run's warm interpreter without it, where a plain start is the test's child,
    # filtered as it is (red team 65 on regress). Here in a forked child, whose filters are
    # its own: one that allows everything as the run's, then a second as the test's.
    if not Path("/proc/self/status").read_text().count("Seccomp_filters:"):
        pytest.skip("this kernel does not count seccomp filters (Linux 5.9+)")
    import ctypes

    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        said = "the child failed"
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            # One instruction, BPF_RET | BPF_K of SECCOMP_RET_ALLOW (struct sock_filter:
            # code, jt, jf, k), and struct sock_fprog { unsigned short len; filter * }.
            instruction = ctypes.create_string_buffer(bytes([6, 0, 0, 0, 0, 0, 0xFF, 0x7F]), 8)
            program = (ctypes.c_uint64 * 2)(1, ctypes.addressof(instruction))
            ulong = ctypes.c_ulong

            def add_filter() -> bool:
                # PR_SET_NO_NEW_PRIVS, then PR_SET_SECCOMP with SECCOMP_MODE_FILTER.
                libc.prctl(38, ulong(1), ulong(0), ulong(0), ulong(0))
                return libc.prctl(22, ulong(2), ctypes.byref(program), ulong(0), ulong(0)) == 0

            if not add_filter():
                said = f"seccomp: {os.strerror(ctypes.get_errno())}"
            else:
                before = zygote.inherited()  # the run's, under a filter already
                said = f"{add_filter()} {zygote.inherited() != before}"
        finally:
            os.write(writer, said.encode())
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as report:
        said = report.read()
    os.waitpid(child, 0)
    assert said == "True True", said


#: What a test may change of its own process that a child inherits through ``fork`` and
#: ``exec`` alike, and `zygote.inherited` did not compare (red team 66 on regress): each a
#: call a forked child makes with libc (`ctypes`), answering what the call returned.
CHANGED_IN_A_TEST: dict[str, Callable[[Any], object]] = {
    # ADDR_NO_RANDOMIZE, as `setarch -R` (a test that wants the same addresses each run).
    "personality": lambda libc: libc.personality(0x0040000),
    # SCHED_BATCH: a test that runs its server at a lower priority.
    "scheduler": lambda _: os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0)),
    # ioprio_set of IOPRIO_WHO_PROCESS, the calling thread, the idle class (`ionice -c 3`).
    "io-priority": lambda libc: libc.syscall(_IOPRIO_SET[platform.machine()], 1, 0, 3 << 13),
    "oom-score": lambda _: Path("/proc/self/oom_score_adj").write_text("500") - 3,
    "core-dump-filter": lambda _: Path("/proc/self/coredump_filter").write_text("0x1") - 3,
    # PR_SET_TIMERSLACK, PR_SET_THP_DISABLE, PR_SET_MDWE (PR_MDWE_REFUSE_EXEC_GAIN).
    "timer-slack": lambda libc: libc.prctl(29, ctypes.c_ulong(1000000), 0, 0, 0),
    "transparent-huge-pages": lambda libc: libc.prctl(41, ctypes.c_ulong(1), 0, 0, 0),
    "memory-deny-write-execute": lambda libc: libc.prctl(65, ctypes.c_ulong(1), 0, 0, 0),
    # PR_SET_SECUREBITS: SECBIT_NOROOT (red team 65 on regress's row, said unreadable).
    "securebits": lambda libc: libc.prctl(28, ctypes.c_ulong(1), 0, 0, 0),
    # PR_SET_SPECULATION_CTRL of PR_SPEC_STORE_BYPASS: PR_SPEC_DISABLE.
    "speculation": lambda libc: libc.prctl(53, ctypes.c_ulong(0), ctypes.c_ulong(4), 0, 0),
    # A process group, or a session, of its own: a plain start is in the test's, a forked
    # server in the zygote's, which was the run's as it started (a signal to the group, a
    # terminal's hang-up, `killpg` of the test's group reached one and not the other).
    "process-group": lambda _: os.setpgid(0, 0),
    "session": lambda _: os.setsid(),
}
#: ioprio_set's number on the architectures CI runs on (Python has no call for it).
_IOPRIO_SET = {"x86_64": 251, "aarch64": 30}


@pytest.mark.parametrize("change", CHANGED_IN_A_TEST.values(), ids=CHANGED_IN_A_TEST.keys())
def test_what_else_a_test_s_child_inherits_is_never_a_forked_server_s(
    change: Callable[[Any], object],
) -> None:
    # A child inherits more of its parent than the zygote compared: a personality, a
    # scheduling policy, an I/O priority, an OOM score, a core dump filter, a timer slack,
    # transparent huge pages switched off, memory that may never be made executable, the
    # securebits and speculation controls. A test that set one for its server (the server
    # to be killed first under memory pressure, to run idle, to dump no core) had it forked
    # from the run's warm interpreter without it, where a plain start is the test's child,
    # made as it is (red team 66 on regress). Here in a forked child, which changes its own.
    if change is CHANGED_IN_A_TEST["io-priority"] and platform.machine() not in _IOPRIO_SET:
        pytest.skip(f"ioprio_set's number on {platform.machine()} is not known here")
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        said = "the child failed"
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            before = (zygote.inherited(), zygote.by_call())
            answer = change(libc)
            if answer == -1 and ctypes.get_errno() == errno.ENXIO:
                said = "skip: no speculation control on this machine"
            elif answer not in (None, 0):
                said = f"{answer} {os.strerror(ctypes.get_errno())}"
            else:
                said = f"{(zygote.inherited(), zygote.by_call()) != before}"
        except Exception as error:
            said = repr(error)
        finally:
            os.write(writer, said.encode())
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as report:
        said = report.read()
    os.waitpid(child, 0)
    if said.startswith("skip: "):
        pytest.skip(said.removeprefix("skip: "))
    assert said == "True", said
