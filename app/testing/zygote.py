"""``app serve`` for the `app_live_server` fixture, forked from a warm interpreter.

A plain start of ``python -m app serve --port 0`` spends about 0.45 s of CPU importing
(dynaconf, filelock, the store, FastAPI, uvicorn) before it does anything a test looks at. So
each pytest process (each xdist worker) starts, on its first live server, one process of its
own that makes those imports once: ``python -m app.testing.zygote``, never a fork of the pytest
process itself (it has threads, and the guard's state). It then forks one child per server,
and each child runs ``app`` as ``python -m app serve --port 0`` would (``runpy``,
``SystemExit``, ``atexit``): it loads its own profile, takes its own lock, publishes its own
pid and port, and exits with the same codes and messages, in the test's environment, working
directory and standard input, writing to the log the fixture opened. It is a child of the
zygote, below the pytest process, in its process group (a Ctrl-C reaches it as it did), and
its ``/proc/<pid>/cmdline`` reads as the plain start's (a holder's command line is what the
app's refusals name); only the environment the kernel shows in ``/proc/<pid>/environ`` is the
zygote's (the app never reads it).

The fixture starts a server the plain way (`subprocess`) instead when the test's environment
differs from the run's in anything but the variables the app reads when it runs
(`GIVEN_AT_FORK`), when what a child inherits (umask, resource limits, ignored signals, nice
value, blocked signals, CPU affinity, namespaces, control groups, capabilities and seccomp
filters, process group and session, personality, scheduling, OOM score, core dump filter,
timer slack, transparent huge pages and speculation controls) differs from the run's, or
what only a system call reads (securebits, ``PR_SET_MDWE``, I/O priority) from the
zygote's, when ``os.pidfd_open`` or
descriptor passing is missing, and when the ini option ``app_live_server = subprocess`` (or
``--app-live-server=subprocess``) says so; a child whose working directory would import
another module than the zygote did (``python -m`` puts that directory first on ``sys.path``)
is replaced by the plain start in place (``execve``). A server the zygote still runs when
the pytest process ends (killed: its fixtures never stopped it) is sent SIGTERM, as the
fixture would, and waited for: the zygote watches the pytest process that started it, not
only its socket, which a copy held elsewhere kept open (red team 62).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import sys
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

# The plugin's configure imports this module for `remember_the_run` alone: what a server's
# start needs is imported where it is used.

#: What a server reads when it runs (the app's settings, the plugin's markers and dynaconf's
#: profile; the terminal width that click reads): given to each child, compared for nothing.
GIVEN_AT_FORK = ("APP_", "ENV_FOR_DYNACONF", "PYTEST_", "COLUMNS")
#: What the fixture runs, as a plain start's command line has it after the interpreter.
SERVE = ["-m", "app", "serve", "--port", "0"]
#: The zygote's own arguments: as long as `SERVE`'s, so that a child can write its command
#: line over the zygote's in place (the kernel shows that memory as ``/proc/<pid>/cmdline``).
ZYGOTE = ["-m", "app.testing.zygote"]
assert len("\0".join(ZYGOTE)) == len("\0".join(SERVE))


def inherited() -> tuple[object, ...]:
    """What a child inherits from the process that starts it besides its environment and
    working directory, and a test may change for its server (a lowered RLIMIT_FSIZE, a umask,
    an ignored signal, a nice value, the calling thread's blocked signals, the CPUs it may
    run on).

    The blocked signals and the CPUs were not compared: a zygote started while a test had
    SIGTERM blocked (``signal.pthread_sigmask``) gave every later server of the run SIGTERM
    blocked, which then ignored the fixture's graceful stop (red team 62)."""
    umask = os.umask(0o22)
    os.umask(umask)
    limits = [
        resource.getrlimit(getattr(resource, n)) for n in dir(resource) if n.startswith("RLIMIT_")
    ]
    ignored = [s for s in signal.valid_signals() if signal.getsignal(s) is signal.SIG_IGN]
    blocked = sorted(signal.pthread_sigmask(signal.SIG_BLOCK, ()))
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    return umask, limits, ignored, nice, blocked, cpus, *_task(), *_scheduled()


#: The namespaces a child is made in (``/proc/<tid>/ns``): ``pid`` and ``time`` are the
#: thread's own, which a child does not take; ``*_for_children`` are what it takes.
_NAMESPACES = (
    "cgroup", "ipc", "mnt", "net", "pid_for_children", "time_for_children", "user", "uts",
)  # fmt: skip
#: What ``/proc/<tid>/status`` says a child inherits of its privileges. ``Seccomp`` alone
#: is the mode, 2 once any filter is on: a test that added a filter of its own to a run
#: already under one (a container runtime's, Docker's default profile) had its server forked
#: without it, where a plain start is the test's child, filtered as it is (red team 65 on
#: regress); ``Seccomp_filters`` counts them (Linux 5.9+).
_PRIVILEGES = (
    "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Seccomp_filters",
    # Transparent huge pages switched off (``PR_SET_THP_DISABLE``), and the speculation
    # controls (``PR_SET_SPECULATION_CTRL``): a child keeps both through ``exec`` (red team 66
    # on regress).
    "THP_enabled", "Speculation_Store_Bypass", "SpeculationIndirectBranch",
)  # fmt: skip
#: What else ``/proc`` shows of a process that a child keeps through ``fork`` and ``exec``:
#: its personality (``setarch -R``), OOM score (a server to be killed first), core dump
#: filter and timer slack (the thread group leader's, the thread that starts servers).
_PROC_INHERITED = (
    "thread-self/personality", "self/oom_score_adj", "self/coredump_filter",
    "self/timerslack_ns",
)  # fmt: skip


def _scheduled() -> tuple[object, ...]:
    """The process's group and session, the calling thread's scheduling policy and priority
    (``SCHED_BATCH``, ``SCHED_IDLE``, with ``SCHED_RESET_ON_FORK``) and what
    `_PROC_INHERITED` names, each None where it cannot be read. A child inherits them all,
    through ``exec`` too: a test that set one for its server (run idle, killed first under
    memory pressure, no core dumped, the same addresses each run) had it forked from the
    run's warm interpreter without it, where a plain start is the test's child, made as it
    is (red team 66 on regress)."""
    # Its process group and session: a plain start is in the test's, a forked server in the
    # zygote's, the run's as it started (a test that leaves its group, `os.setpgid(0, 0)`,
    # and then signals it, or a terminal's hang-up of its session).
    found: list[object] = [os.getpgid(0), os.getsid(0)]
    try:
        found += [os.sched_getscheduler(0), os.sched_getparam(0).sched_priority]
    except (AttributeError, OSError):
        found += [None, None]  # not this system's
    for name in _PROC_INHERITED:
        try:
            with open(f"/proc/{name}", "rb") as shown:  # noqa: PTH123 - one read, no Path
                found.append(shown.read())
        except OSError:
            found.append(None)
    return tuple(found)


#: ``ioprio_get``'s number on the architectures it is known for here (no module wraps it).
_IOPRIO_GET: Final = {"x86_64": 252, "aarch64": 31}


def by_call() -> tuple[object, ...]:
    """What a child inherits that only a system call reads, through ``exec`` too: the
    calling thread's securebits (``SECBIT_NOROOT``), whether it may make memory executable
    that was writable (``PR_SET_MDWE``), and its I/O priority (``ionice``); each None where
    the call fails. Read with `ctypes`, whose import costs some 8 M instructions: not at
    every run's start (`inherited`), only where a server would be forked, against what the
    zygote took as it started (red team 66 on regress)."""
    import ctypes
    import platform

    libc = ctypes.CDLL(None, use_errno=True)
    zero = ctypes.c_ulong(0)
    # PR_GET_SECUREBITS and PR_GET_MDWE; -1 where this kernel has neither.
    found: list[object] = [libc.prctl(option, zero, zero, zero, zero) for option in (27, 66)]
    number = _IOPRIO_GET.get(platform.machine())
    # IOPRIO_WHO_PROCESS of 0, the calling thread.
    found.append(None if number is None else libc.syscall(number, 1, 0))
    return tuple(found)


def _task() -> tuple[object, ...]:
    """The calling thread's namespaces, control groups and privileges, which a process it
    starts is made in: a test that entered a network namespace of its own (``unshare``, for
    its thread, then ``setns`` back after it) had its server forked in the run's, where the
    fixture's wait for it never reached it ("app serve did not answer", after 24 s); a
    zygote started while a test was in one forked every later server of the run there
    (red team 63 on regress). A control group (a memory or pids limit a test put itself
    under) and dropped capabilities or a seccomp filter are handed on the same way, as are
    its root directory and its user and groups (session 64)."""
    here = Path("/proc/thread-self")
    # Its root directory (a test that ``chroot``s: a forked server resolved its data root's
    # path outside the test's root) and its user and groups (a test that ``seteuid``s, whose
    # server would have been forked as the run's user): the mount, device and inode of
    # "/", which a bind of "/" mounted elsewhere and entered keeps but for its mount.
    root = os.open("/", os.O_PATH)
    try:
        seen = os.fstat(root)
        try:
            with (here / "fdinfo" / str(root)).open() as info:
                mount = next((line for line in info if line.startswith("mnt_id:")), None)
        except OSError:
            mount = None  # no /proc: the device and inode alone
    finally:
        os.close(root)
    found: list[object] = [(mount, seen.st_dev, seen.st_ino)]
    found += [os.getresuid(), os.getresgid(), sorted(os.getgroups())]
    for name in _NAMESPACES:
        try:
            found.append(str((here / "ns" / name).readlink()))
        except OSError:
            found.append(None)  # not this kernel's, or no /proc: nothing to compare
    try:
        with (here / "cgroup").open() as groups, (here / "status").open() as status:
            found.append(groups.read())
            found.extend(line for line in status if line.partition(":")[0] in _PRIVILEGES)
    except OSError:
        found.append(None)
    return tuple(found)


def _own(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if not k.startswith(GIVEN_AT_FORK)}


class Signalled:
    """`subprocess.Popen`'s signals for a child this process did not fork itself."""

    pid: int
    #: A pidfd of the child where its forking process handed one over: a signal sent through
    #: it reaches that process or none, never another given its pid once it was reaped.
    pidfd: int | None = None

    def may_signal(self) -> bool:
        raise NotImplementedError

    def send_signal(self, signum: int) -> None:
        # As Popen does: not once it is known to have exited (its pid may be reused).
        if not self.may_signal():
            return
        if self.pidfd is None:
            os.kill(self.pid, signum)
            return
        # Reaped by the forking process, its exit not yet read here: a signal by pid could
        # reach a process given the pid since (stop 50's note); through the pidfd, none.
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self.pidfd, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class WarmServer(Signalled):
    """A forked ``app serve``, with the part of `subprocess.Popen` the fixture uses."""

    def __init__(self, zygote: Zygote, pid: int, pidfd: int | None) -> None:
        self.zygote = zygote
        self.pid = pid
        self.pidfd = pidfd
        self.args = [sys.executable, *SERVE]
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.zygote.pump(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        import subprocess
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            if not self.zygote.pump(left):
                raise ChildProcessError(
                    f"app: the live servers' zygote (pid {self.zygote.process.pid}) ended "
                    f"before its server {self.pid}: its exit status is unknown"
                )
        return self.returncode

    def may_signal(self) -> bool:
        # Not once it is known to have exited, nor once its zygote ended (which waited for it).
        return self.poll() is None and not self.zygote.closed


class Zygote:
    """The forking process of one pytest process, and the end of the socket it reads."""

    def __init__(self, environ: Mapping[str, str], cwd: str, given: tuple[object, ...]) -> None:
        import socket
        import subprocess
        import threading

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.environ = dict(environ)
        self.inherited = given
        # What it inherits of this thread that only a system call reads, as it starts.
        self.by_call = by_call()
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, *ZYGOTE],
                stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL,
                env=self.environ,
                cwd=cwd,
            )
        self.socket = ours
        self.closed = False
        self._lock = threading.RLock()
        self._children: dict[int, WarmServer] = {}

    def fits(self, env: Mapping[str, str]) -> bool:
        return (
            self.process.poll() is None
            and _own(env) == _own(self.environ)
            and inherited() == self.inherited
            and by_call() == self.by_call
        )

    def serve(self, env: Mapping[str, str], log_fd: int, remote: bool = False) -> WarmServer:
        """A forked ``app serve --port 0`` in `env` and this process's working directory, its
        output to `log_fd`, its standard input this process's; `remote`: a replica on
        PostgreSQL and object storage (the zygote imports their clients first, once)."""
        import json
        import socket

        request = {"env": dict(env), "cwd": str(Path.cwd()), "remote": remote}
        try:
            os.fstat(0)
            stdin = 0
        except OSError:  # none (a run started with it closed): the server gets /dev/null
            stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with self._lock:
                socket.send_fds(self.socket, [json.dumps(request).encode()], [stdin, log_fd])
                while True:
                    message = self._receive(None)
                    if message is None:
                        raise ChildProcessError(
                            f"app: the live servers' zygote (pid {self.process.pid}) ended "
                            f"before it started a server (exit status {self.process.wait()})"
                        )
                    if "pid" in message:
                        child = WarmServer(self, message["pid"], message.pop("pidfd", None))
                        self._children[child.pid] = child
                        return child
        finally:
            if stdin != 0:
                os.close(stdin)

    def pump(self, timeout: float | None) -> bool:
        """Read what the zygote said within `timeout` (None: until it says something);
        False once it has ended."""
        with self._lock:
            if self.closed:
                return False
            message = self._receive(timeout)
            while message:  # and whatever else it said meanwhile
                message = self._receive(0)
            return message is not None

    def _receive(self, timeout: float | None) -> dict[str, Any] | None:
        import json
        import select
        import socket

        ready, _, _ = select.select([self.socket], [], [], timeout)
        if not ready:
            return {}
        data, fds, _, _ = socket.recv_fds(self.socket, 65536, 1)
        if not data:
            for fd in fds:
                os.close(fd)
            return None
        message: dict[str, Any] = json.loads(data)
        if fds:  # a started server's pidfd, with its pid
            message["pidfd"] = fds[0]
        if "exited" in message:
            child = self._children.pop(message["exited"], None)
            if child is not None:
                child.returncode = message["code"]
                _close_pidfd(child)
        return message

    def close(self) -> None:
        """End the zygote (it stops a server still running first) and wait for it."""
        import subprocess

        with self._lock:
            self.closed = True
            self.socket.close()
            for child in self._children.values():
                _close_pidfd(child)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _close_pidfd(child: Signalled) -> None:
    if child.pidfd is not None:
        os.close(child.pidfd)
        child.pidfd = None


def _fork_supported() -> bool:
    import socket

    return hasattr(os, "pidfd_open") and hasattr(socket, "send_fds")


#: Each run's environment and inherited values (`remember_the_run`), and its zygote, by
#: its pytest configuration: a run of pytester's in this process (``runpytest`` in line)
#: has its own, and its end stops its own zygote alone, never the enclosing run's.
_RUNS: weakref.WeakKeyDictionary[object, dict[str, Any]] = weakref.WeakKeyDictionary()


def _forget_zygotes_in_child() -> None:
    """In a fork of a pytest process (a test's ``os.fork``, multiprocessing's fork start):
    close the run's end of each zygote's socket, which the fork copied. A copy kept the
    zygote's socket open after the pytest process was killed, and could ask it for servers;
    the fork starts its own zygote if it starts a live server (red team 62)."""
    for state in list(_RUNS.values()):
        zygote = state.pop("zygote", None)
        if zygote is not None:
            zygote.closed = True
            with contextlib.suppress(OSError):
                zygote.socket.close()


os.register_at_fork(after_in_child=_forget_zygotes_in_child)


def remember_the_run(run: object) -> None:
    """Take this process's environment, working directory and inherited values as those of
    `run` (a pytest configuration: the plugin's configure, once it set its own variables,
    before any test changed one)."""
    _RUNS.setdefault(run, {}).update(
        environ=dict(os.environ), cwd=str(Path.cwd()), inherited=inherited()
    )


def expect(run: object, servers: int) -> None:
    """Say how many of the tests `run` collected ask for `app_live_server` (the plugin,
    once it collected them): a run with one such test, as most of a suite's inner pytest
    runs are, starts its server the plain way: a zygote's imports and a fork cost more than
    one plain start's imports (bench/README.md, "perf-suite62a")."""
    _RUNS.setdefault(run, {})["expected"] = servers


def forking(env: Mapping[str, str], run: object) -> Zygote | None:
    """`run`'s zygote (started on first use) if a server in `env` may be forked from it."""
    if not _fork_supported():
        return None
    state = _RUNS.setdefault(run, {})
    if "environ" not in state:
        remember_the_run(run)
    if state.get("expected", 2) < 2 and "zygote" not in state:
        return None
    zygote: Zygote | None = state.get("zygote")
    if zygote is None:
        if inherited() != state["inherited"]:
            return None  # a zygote started now would inherit this test's values
        zygote = state["zygote"] = Zygote(state["environ"], state["cwd"], state["inherited"])
    return zygote if zygote.fits(env) else None


def end_the_run(run: object) -> None:
    """Stop `run`'s zygote, if it started one (the plugin's unconfigure)."""
    zygote = _RUNS.pop(run, {}).get("zygote")
    if zygote is not None:
        zygote.close()


# The zygote's side: ``python -m app.testing.zygote``, its standard input the socket.


def _shadowed(start: str, cwd: str) -> bool:
    """Whether ``python -m`` run in `cwd` could import another module than the zygote, run
    in `start`, did: each puts its working directory first on ``sys.path``."""
    if Path(cwd).resolve() == Path(start).resolve():
        return False
    try:
        here = {entry.name.partition(".")[0] for entry in Path(cwd).iterdir()}
    except OSError:
        return True
    loaded = {name.partition(".")[0] for name in list(sys.modules)}
    if here & loaded:
        return True
    top = Path(start).resolve()
    for module in list(sys.modules.values()):
        origin = getattr(module, "__file__", None)
        if origin and Path(origin).resolve().is_relative_to(top):
            return True
    return False


def _write_command_line(argv: list[str]) -> None:
    """Write `argv` over this process's arguments in memory, which the kernel shows as
    ``/proc/<pid>/cmdline``, if it fits exactly (as ``setproctitle`` does); else leave it."""
    import ctypes

    fields = Path("/proc/self/stat").read_bytes().rpartition(b")")[2].split()
    start, end = int(fields[45]), int(fields[46])  # arg_start and arg_end, proc(5)
    wanted = b"\0".join(os.fsencode(word) for word in argv) + b"\0"
    shown = Path("/proc/self/cmdline").read_bytes()
    # Only over what the kernel shows as the arguments now, of the same length.
    if len(wanted) == end - start == len(shown) and ctypes.string_at(start, end - start) == shown:
        ctypes.memmove(start, wanted, len(wanted))


def _become(request: dict[str, Any], fds: list[int], start: str) -> None:
    """The child: ``python -m app serve --port 0`` as a plain start would run it."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stdin, log = fds
    os.dup2(stdin, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    # As Popen's close_fds: only the standard three.
    os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if request.get("remote"):
        # The S3 client's session as a new process makes it, from this child's AWS_*
        # variables and AWS files (which may have changed since the zygote's warm-up).
        from app.remote import objects

        objects._sessions.clear()
    argv = [sys.orig_argv[0], *SERVE]
    if _shadowed(start, request["cwd"]):
        os.execv(sys.executable, argv)  # noqa: S606 - the plain start, as Popen makes it
    _write_command_line(argv)
    sys.orig_argv[:] = argv
    sys.path[0] = str(Path.cwd())
    sys.argv[1:] = SERVE[2:]
    import runpy

    try:
        runpy.run_module("app", run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        leave(stop.code)
    leave(None)


def leave(code: object) -> None:
    # A forked child's end (tests/forked_app.py's children's too). What the interpreter's
    # exit does that anyone can see, in its order (CPython's
    # handle_system_exit, then Py_FinalizeEx): the exit status (a message printed), the
    # non-daemon threads joined, atexit's functions (logging's shutdown among them), the
    # standard streams flushed (status 120 if that fails). Not the finalisation of every
    # module and object the zygote imported, which writes to every inherited page.
    import atexit

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    if "threading" in sys.modules:
        sys.modules["threading"]._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            status = 120
    os._exit(status & 0xFF)


def _warm_up() -> None:
    """Import what `app serve` imports before it serves (what loading the settings and
    opening a data root import lazily, FastAPI's, uvicorn's server, protocols and loop,
    anyio's sockets): imports only, none starts a thread, keeps a file open or changes a
    setting."""
    import importlib
    import warnings

    for name in (
        "_strptime", "dynaconf.loaders.toml_loader", "filelock", "app.check", "app.cli",
        "app.config_files", "app.dataroot", "app.server", "app.server.run", "app.store",
        "encodings.idna", "importlib.readers", "fastapi_offline.core", "h11", "uvicorn.config",
        "uvicorn.main", "uvicorn.protocols.http.h11_impl", "uvicorn.loops.uvloop",
        "anyio._core._sockets", "anyio._core._streams",
    ):  # fmt: skip
        importlib.import_module(name)
    # FastAPI checks, as create_app adds each route, that a response model is not pydantic
    # v1's: it imports pydantic.v1, its UserWarning silenced as FastAPI does.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        importlib.import_module("pydantic.v1")


def _warm_up_remote() -> None:
    """Import what a replica on PostgreSQL and object storage imports before it serves
    (psycopg, boto3 and the S3 client's modules, the app's remote store): once, at the
    zygote's first such server, so that a run on a local profile never pays for them. The S3
    client made here (explicit keys: no credential chain searched, nothing sent) imports the
    client's modules; each child makes its own session (`_become`)."""
    import psycopg  # noqa: F401

    import app.remote.pg
    import app.remote.storage
    import app.remote.store  # noqa: F401
    from app.remote.objects import _new_client

    _new_client(
        service_name="s3",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="warm-up",
        aws_secret_access_key="warm-up",  # noqa: S106 (no credential: nothing is sent)
    )


def _warm_for(request: dict[str, Any]) -> bool:
    """Whether `request` is for a replica, its imports made (`_warm_up_remote`)."""
    if request.get("remote"):
        _warm_up_remote()
        return True
    return False


def _run_process(channel: Any) -> int | None:
    """A pidfd of the pytest process that started this zygote, or None if it has ended.

    The zygote's end is the run's: the socket's end alone did not say it, since a process
    that holds a copy of the run's end (a fork of the pytest process, a child given the
    descriptor) keeps it open after that process is killed (SIGKILL); the zygote then ran on,
    its servers holding their roots, outside the run's process tree, forking a server for
    whoever asked (red team 62)."""
    import socket
    import struct

    parent = os.getppid()
    # The process that made the socket pair (SO_PEERCRED): the one that started this zygote.
    made = channel.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    if struct.unpack("3i", made)[0] != parent:
        return None  # re-parented already: that process ended before this line
    try:
        watched = os.pidfd_open(parent)
    except OSError:
        return None
    if os.getppid() != parent:  # it ended before the pidfd was opened: another's pid
        os.close(watched)
        return None
    return watched


def main() -> None:
    """Fork a server per request read on the socket (standard input); say each one's pid,
    then its exit status; end when the socket closes or the pytest process that started it
    ends, after the servers still running."""
    import json
    import select
    import socket

    # A Ctrl-C reaches the whole process group: the servers stop on it, the zygote waits
    # for them (and for the pytest process to close the socket).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = socket.socket(fileno=os.dup(0))
    run = _run_process(channel)
    if run is None:
        return
    _warm_up()
    start = str(Path.cwd())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    children: dict[int, int] = {}  # pidfd: pid
    remote = False  # whether `_warm_up_remote` ran (`_warm_for`)

    def say(message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # the run's process is gone: nobody to tell
            channel.send(json.dumps(message).encode())

    def reap(pidfd: int) -> None:
        pid = children.pop(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        say({"exited": pid, "code": os.waitstatus_to_exitcode(status)})

    def end() -> None:
        for pid in children.values():
            os.kill(pid, signal.SIGTERM)  # as the fixture stops one
        for pidfd in list(children):
            select.select([pidfd], [], [])
            pid = children.pop(pidfd)
            os.waitpid(pid, 0)

    while True:
        ready, _, _ = select.select([channel.fileno(), run, *children], [], [])
        if run in ready:  # the run's process ended (killed): serve no one else
            end()
            return
        for fd in ready:
            if fd != channel.fileno():
                reap(fd)
                continue
            data, fds, _, _ = socket.recv_fds(channel, 1 << 20, 2)
            if not data:
                end()
                return
            request = json.loads(data)
            remote = remote or _warm_for(request)
            pid = os.fork()
            if pid == 0:
                channel.close()
                _become(request, fds, start)
            for fd_given in fds:
                os.close(fd_given)
            pidfd = os.pidfd_open(pid)
            children[pidfd] = pid
            # The pidfd goes with the pid (the run signals through it): unreaped until now,
            # the pid is this child's.
            with contextlib.suppress(OSError):
                socket.send_fds(channel, [json.dumps({"pid": pid}).encode()], [pidfd])


if __name__ == "__main__":
    main()
