"""``python -m app`` children forked from one process that imported the app once.

An ``app`` child spends most of its start-up importing before it does anything a test looks
at: about 0.45 s of CPU for a local ``app serve`` (dynaconf, filelock, the store, FastAPI),
about 1 s for a remote profile's (psycopg, boto3 and botocore's S3 model too). So this process
(the zygote) makes those imports once per pytest process, and forks one child per command,
local or remote, server or CLI. Each child is a process of its own (its own pid, killed with
SIGKILL, SIGTERM or SIGINT for real by the tests that do so, its own exit code), below the
zygote in the test run's process tree, with the test's environment, arguments, working
directory and output files, running ``app`` as ``python -m app`` would (``runpy``,
``SystemExit``, ``atexit``), or a script of the app's classes as ``python -c`` would
(`python_c`). What a fork cannot give is the command line in ``/proc/<pid>/cmdline`` (the
zygote's): a test that checks that starts its child itself, as does every test of the guard
that reads how its process was started. A child ends as the interpreter's exit would end it
(its status, its threads joined, ``atexit``, its output flushed) but skips the finalisation of
the heap it inherited (the zygote's ``leave``), which cost more CPU than most commands' work.

The zygote ends when the tests' process does (its standard input closes), even one killed
with SIGKILL, and its children end with it (a parent-death signal, SIGKILL): a killed xdist
worker leaves no server running (tests/test_forked_app.py).

A command runs as a plain subprocess instead when its environment differs from the run's in
anything but the variables the app reads when it runs (`_GIVEN_AT_FORK`), when this process's
umask, resource limits, ignored signals or nice value (which a child inherits from the zygote,
not from the test) differ from the run's (`_inherited`), and every command when
``os.pidfd_open`` is missing (the zygote watches its children through them).

This replaced a second mechanism (standby interpreters that imported the app while an earlier
test ran, one interpreter per command): that hid the imports from a serial run's wall time but
still paid them once per command, which ``-n 2``, both cores busy, could not hide.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.testing.zygote import Signalled, inherited

if TYPE_CHECKING:
    import httpx

#: What the child reads when it runs (the app's settings and the plugin's markers; the
#: terminal width that click and ``shutil.get_terminal_size`` read when they print; libpq's
#: ``PG*``, which it reads as it connects, never as psycopg is imported): set per child.
#: Every other variable Python or a library may have read while the zygote imported.
_GIVEN_AT_FORK = ("APP_", "ENV_FOR_DYNACONF", "PYTEST_", "COLUMNS", "PG")


#: What a child inherits from the process that forks or starts it besides its environment and
#: working directory, and a test may change for its server (a lowered RLIMIT_FSIZE, a umask,
#: an ignored signal, a nice value): as the plugin's zygote compares it.
_inherited = inherited


#: The run's environment and inherited values, once tests/conftest.py configured them
#: (`remember_the_run`): what every zygote is started with, and what a command must match.
_RUN: dict[str, Any] = {}


def as_the_run_for_the_rest(env: dict[str, str]) -> dict[str, str]:
    """`env` with every variable but those given at fork (`_GIVEN_AT_FORK`) as the run's
    environment has it: for a child that needs nothing of what a test changed beside those
    (``pytester``'s ``HOME``, ``USERPROFILE``, ``PY_COLORS``), so that it is forked (`serve`)
    rather than started. Not for a child whose environment is what a test checks."""
    if not _RUN:
        return dict(env)
    given = {k: v for k, v in env.items() if k.startswith(_GIVEN_AT_FORK)}
    return {k: v for k, v in _RUN["environ"].items() if not k.startswith(_GIVEN_AT_FORK)} | given


def left_in_the_environment() -> list[str]:
    """The variables of this process's environment that differ from the run's, outside those
    given at fork (`_GIVEN_AT_FORK`): while one does, no command of this process fits its
    zygote (`Zygote.fits`), and every later one starts plainly."""
    if not _RUN:
        return []
    run = _RUN["environ"]
    return sorted(
        name
        for name in set(os.environ) | set(run)
        if not name.startswith(_GIVEN_AT_FORK) and os.environ.get(name) != run.get(name)
    )


def put_back_the_environment(names: list[str]) -> None:
    """`names` (`left_in_the_environment`) as the run's environment has them, or unset."""
    for name in names:
        if name in _RUN["environ"]:
            os.environ[name] = _RUN["environ"][name]
        else:
            os.environ.pop(name, None)


def children_take_sigint() -> None:
    """Give SIGINT its Python handler again in a run started with it ignored, so that every
    child the tests start (exec'd, or forked from a zygote this run starts) takes it.

    A shell without job control starts a command given ``&`` (a script's ``pytest ... &``,
    ``nohup``-like wrappers) with SIGINT ignored, and a child inherits that, which the app
    honours on purpose (an ignored SIGINT stays ignored: `app.cli._listened`, the server's
    `_ignored`, red team 60 on regress). Every test that Ctrl-Cs a server or a command it
    started then tested nothing it meant to: ``app serve`` never stopped and red team 59's
    ``while "stopping_since" not in ...`` waited for ever (once its upload file was in
    ``.tmp/``), and a purge under strace's ``signal=INT`` finished, exit 0 for 130 (red team
    60). Tests of an ignored SIGINT ignore it in their own child. SIGQUIT, which the same
    shells ignore, no test sends.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        try:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        except ValueError:  # not the main thread (an xdist worker's execnet): left as it is
            return


@contextlib.contextmanager
def sighup_at_default() -> Iterator[None]:
    """SIGHUP at its default for the children started meanwhile, in a run started with it
    ignored (``nohup pytest ...``), where a test sends a server ``kill -HUP``.

    The server honours an inherited ignored SIGHUP on purpose (`app.server.run._ignored`, as
    ``nohup app serve`` asks), so under ``nohup`` red team 38's three reload tests each
    waited 30 s for a worker that never stopped and red team 37's HUP case waited for an
    exit that never came (session 72). Not given back to the whole run, as SIGINT is
    (`children_take_sigint`): what ``nohup`` is for, the run living on once its terminal
    hangs up, holds for every other test."""
    ignored = signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)


def remember_the_run() -> None:
    """Take this process's environment and inherited values as the run's (tests/conftest.py,
    at the end of pytest_configure: before any test changed them for its own children)."""
    _RUN["environ"] = dict(os.environ)
    _RUN["inherited"] = _inherited()


#: A child's start in a zygote (tests/forked_pytest.py's too): nothing of the zygote's open
#: (its selector, the other children's pidfds), the test's directory, an empty standard
#: input, the test's output files and environment.
TAKE = """
def take(given):
    selector.close()
    for fd in given["close"]:
        os.close(fd)
    os.chdir(given["cwd"])
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        os.dup2(os.open(given[name], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644), fd)
    os.environ.clear()
    os.environ.update(given["env"])
"""

#: What the zygote imports before it forks anything: what a child would import itself.
WARM = """
import dynaconf, psycopg, boto3, zxcvbn
import app.cli, app.config_files, app.server, app.server.run, app.remote.storage
# What loading the settings and opening a local data root import lazily (the pytest plugin's
# start-up never pays for them). dynaconf reads its *_FOR_DYNACONF variables when imported,
# but again (`default_settings.reload`) whenever a Dynaconf is configured, which is the only
# use the app makes of it.
import _strptime, dynaconf.loaders.toml_loader, filelock
import app.check, app.dataroot, app.store
from app.remote.objects import _new_client
# What `app serve` imports once it builds its application and serves, which a forked server
# imported again in every child (about 0.1 s of CPU each): FastAPI's check, as create_app
# adds each route, that a response model is not pydantic v1's (it imports pydantic.v1, as
# FastAPI does, with its UserWarning silenced), uvicorn's server, protocols and loop, anyio's
# sockets. Imports only: nothing here starts a thread or changes a setting.
import warnings
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    from pydantic import v1
import encodings.idna, importlib.readers, fastapi_offline.core, h11, uvicorn.config, uvicorn.main
import uvicorn.protocols.http.h11_impl
import uvicorn.loops.uvloop, anyio._core._sockets, anyio._core._streams

# The process-wide boto3 session, with botocore's S3 model loaded: its children's stores make
# their clients from it. Explicit keys: no credential chain is searched (nor an instance's
# metadata endpoint asked); a client sends nothing until a request is made.
_new_client(service_name="s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
            aws_access_key_id="warm-up", aws_secret_access_key="warm-up")
"""

#: The zygote's own part: what reads its commands and becomes a child (`LOOP` follows).
BARE = (
    """
import atexit, ctypes, json, os, runpy, selectors, signal, sys

selector = selectors.DefaultSelector()
selector.register(0, selectors.EVENT_READ)


def answer(message):
    os.write(1, (json.dumps(message) + "\\n").encode())


"""
    + TAKE
    + """
ZYGOTE_PID = os.getpid()
prctl = ctypes.CDLL(None, use_errno=True).prctl


def become(given):
    # Killed when the zygote ends (PR_SET_PDEATHSIG; this process has one thread, the one
    # that forks), which it does when the tests' process ends, however: a server forked for
    # an xdist worker that was SIGKILLed ran on until its data root's lock file went.
    prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG, <linux/prctl.h>
    if os.getppid() != ZYGOTE_PID:  # the zygote ended before prctl: nobody would signal it
        os._exit(1)
    # The child: only what `python -m app` would have, the test's output files.
    take(given)
    if given.get("own_s3_session"):
        # The S3 client's session (app.remote.objects) as a new process has it: made from
        # this child's AWS_* variables and AWS files at its first store, not the zygote's.
        import app.remote.objects
        app.remote.objects._sessions.clear()
    try:
        if given.get("code") is None:
            sys.argv[1:] = given["args"]
            runpy.run_module("app", run_name="__main__", alter_sys=True)
        else:  # as `python -c CODE *args` runs it
            sys.argv[:] = ["-c", *given["args"]]
            exec(compile(given["code"], "<string>", "exec"), {"__name__": "__main__"})
    except SystemExit as stop:
        leave(stop.code)
    leave(None)  # any other exception: the interpreter's own exit prints and sets it


# What the interpreter's exit does that anyone can see, without the finalisation of the
# heap the child inherited (0.5 s of CPU per child, five times what a forked `data purge`
# does: bench/README.md, "The suite's time", suite6b): the plugin's zygote's own.
from app.testing.zygote import leave


"""
)

#: The zygote the tests fork from: the app imported once (`WARM`), then its own part.
ZYGOTE = "\nimport atexit, ctypes, json, os, runpy, selectors, signal, sys\n" + WARM + BARE

#: The zygote's loop: a child forked per line read (`become`), its exit reported; the
#: zygote ends when its standard input does (tests/forked_pytest.py's too).
# What the imports above made lives as long as this process and every child inherits it: out
# of the cyclic collector's sight (as tests/conftest.py, `app.cli.main` and a server's start
# do with theirs), so that a child's collections, and the ones at its interpreter's exit, no
# longer walk it and write to its pages, which the fork shares until then: an inner run forked
# by tests/forked_pytest.py (whose collections and exit are pytest's own, not `leave`'s) about
# 65 ms of CPU less, a quarter; this process's exit about 0.3 s less (bench/README.md,
# "perf-suite71"). Nothing but the collector's walk changes: no object of the zygote is
# garbage before it exits.
LOOP = """
import gc
gc.collect()
gc.freeze()
pending = b""
watched = {}
while True:
    for key, _ in selector.select():
        if key.fd != 0:
            pid = watched.pop(key.fd)
            selector.unregister(key.fd)
            os.close(key.fd)
            _, status = os.waitpid(pid, 0)
            answer({"exited": pid, "code": os.waitstatus_to_exitcode(status)})
            continue
        data = os.read(0, 65536)
        if not data:
            sys.exit(0)  # the tests' process ended: no more commands
        pending += data
        while b"\\n" in pending:
            line, pending = pending.split(b"\\n", 1)
            given = json.loads(line)
            given["close"] = list(watched)
            pid = os.fork()
            if pid == 0:
                become(given)  # never returns: `leave` ends the child, or its exception
            pidfd = os.pidfd_open(pid)
            watched[pidfd] = pid
            selector.register(pidfd, selectors.EVENT_READ)
            answer({"id": given["id"], "pid": pid})
"""


class Forked(Signalled):
    """A forked ``app`` child, with the part of `subprocess.Popen` that the tests use."""

    def __init__(self, pid: int, args: list[str]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None
        self.exited = threading.Event()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        # `exited` is set when the zygote says this child exited, or when the zygote itself
        # ended (its reader sets every child's): without the latter, a wait with no timeout
        # on a child of a zygote that died (then the child too, by its parent-death signal)
        # never returned.
        if not self.exited.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        if self.returncode is None:
            raise ChildProcessError(
                f"the app's zygote ended before its child {self.pid}: its exit status is unknown"
            )
        return self.returncode

    def may_signal(self) -> bool:
        return self.returncode is None


class Zygote:
    """The forking process: started on first use, one per pytest process; it ends when this
    process does (its standard input closes)."""

    running: Zygote | None = None
    #: What this zygote imports and how its child becomes what it runs (`LOOP` follows).
    script = ZYGOTE
    #: Arguments after the script (tests/forked_pytest.py's room for a child's command line).
    padding: tuple[str, ...] = ()
    #: Its reader thread's name, and the command line a child is reported under.
    name, shown = "forked-app", ("app",)
    #: Where it starts, whatever directory the test that started it was in: ``python -c``
    #: imports from its working directory first, and a zygote started by a pytester test (in
    #: a directory of that test's files) imported that test's ``json.py`` in place of the
    #: standard one, for every later child of the process; tests/forked_pytest.py's check
    #: of such a module (`shadowing`) reads each child's directory, never the zygote's (red
    #: team 71 on regress, round s). Each child changes into its own.
    directory = "/"

    def __init__(self) -> None:
        # The environment of the run, not of the test that happened to come first (which
        # may have changed a variable for its own children only).
        if not _RUN:
            remember_the_run()  # outside this project's conftest: from now on
        self.environ = self.environment(_RUN["environ"])
        self.inherited = _RUN["inherited"]
        self.process = subprocess.Popen(
            [sys.executable, "-c", self.script + LOOP, *self.padding],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self.environ,
            cwd=self.directory,
        )
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._started: dict[int, Forked | None] = {}
        self._by_pid: dict[int, Forked] = {}
        self._answered = threading.Condition(self._lock)
        threading.Thread(target=self._read, daemon=True, name=self.name).start()

    def environment(self, run: dict[str, str]) -> dict[str, str]:
        """The zygote's own environment, from the run's."""
        return run

    def fits(self, env: dict[str, str], given: tuple[str, ...] = _GIVEN_AT_FORK) -> bool:
        def own(environ: dict[str, str]) -> dict[str, str]:
            return {k: v for k, v in environ.items() if not k.startswith(given)}

        return (
            self.process.poll() is None
            and own(env) == own(self.environ)
            and _inherited() == self.inherited
        )

    def fork(
        self,
        env: dict[str, str],
        args: list[str],
        stdout: Path,
        stderr: Path,
        code: str | None = None,
        cwd: Path | None = None,
        own_s3_session: bool = False,
    ) -> Forked:
        given = {"env": env, "args": args, "cwd": str(cwd or os.getcwd()), "code": code}
        given["own_s3_session"] = own_s3_session
        return self.send({**given, "stdout": str(stdout), "stderr": str(stderr)})

    def send(self, given: dict[str, Any]) -> Forked:
        """The child forked for `given` (what `become` reads), once the zygote named it."""
        assert self.process.stdin is not None
        with self._lock:
            ident = next(self._ids)
            self._started[ident] = None
            self.process.stdin.write(json.dumps({**given, "id": ident}).encode() + b"\n")
            self.process.stdin.flush()
            while (child := self._started[ident]) is None:
                assert self.process.poll() is None, "the zygote exited"
                self._answered.wait(1)
            del self._started[ident]
        return child

    def child(self, pid: int) -> Forked:
        return Forked(pid, list(self.shown))

    def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            for line in self.process.stdout:
                message = json.loads(line)
                with self._lock:
                    if "exited" in message:  # always after its start: one pipe, in order
                        child = self._by_pid.pop(message["exited"])
                        child.returncode = message["code"]
                        child.exited.set()
                        continue
                    child = self.child(message["pid"])
                    self._by_pid[child.pid] = child
                    self._started[message["id"]] = child
                    self._answered.notify_all()
        finally:  # the zygote ended (or said something unreadable): nothing more will come
            with self._lock:
                for child in self._by_pid.values():
                    child.exited.set()  # its returncode stays None: `Forked.wait` says why
                self._by_pid.clear()


_starting = threading.Lock()


def _forking(env: dict[str, str], given: tuple[str, ...] = _GIVEN_AT_FORK) -> Zygote | None:
    """This process's zygote (started now if it is the first command) if it fits `env`, the
    variables `given` (given to the child) aside."""
    if not hasattr(os, "pidfd_open"):
        return None
    with _starting:
        if Zygote.running is None:
            if _RUN and _inherited() != _RUN["inherited"]:
                return None  # a zygote started now would inherit this test's values
            Zygote.running = Zygote()
    return Zygote.running if Zygote.running.fits(env, given) else None


def serve(
    env: dict[str, str],
    log: Path,
    args: list[str],
    limits: dict[int, tuple[int, int]] | None = None,
) -> subprocess.Popen[bytes] | Forked:
    """``python -m app *args`` in `env`, its output appended to `log`, left running; with
    `limits` (``resource.RLIMIT_*`` to soft and hard), a subprocess of its own that sets them.

    Set in the child, never in this process for the instant of the fork: that changed them
    for the whole process: a serial run's head-start thread (tests/head_start.py) starting a
    server or a pytest at that instant would have given it the test's limit too.
    """
    zygote = _forking(env) if limits is None else None
    if zygote is not None:
        return zygote.fork(env, args, log, log)

    def set_limits() -> None:
        for limit, values in (limits or {}).items():
            resource.setrlimit(limit, values)

    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app", *args],
            env=env,
            stdout=out,
            stderr=out,
            preexec_fn=set_limits if limits else None,  # noqa: PLW1509 - a C call, no lock
        )


def start_server(
    env: dict[str, str], root: Path, log: Path
) -> tuple[subprocess.Popen[bytes] | Forked, str]:
    """`app.testing.start_server`'s server (``app serve --port 0`` on `root`, which `env`
    gives it; its URL once it answers), forked when `env` fits (`serve`): a plain start costs
    about 0.6 s of CPU, mostly imports the zygote has made (bench/README.md, "The suite's
    time"). The caller stops it (`app.testing.stop_server`)."""
    from app.testing import published_port
    from app.testing.live_server import make_first_deploy_root, serving_at

    make_first_deploy_root(env, root)
    process = serve(env, log, ["serve", "--port", "0"])
    url = serving_at(
        process, log, lambda started: f"http://127.0.0.1:{published_port(root, started, log)}"
    )
    return process, url


def run(
    env: dict[str, str], args: list[str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m app *args`` in `env` (and `cwd`, else this process's) run to its end, its
    output captured, as ``subprocess.run(..., capture_output=True, text=True)`` would; its
    standard input empty."""
    return _run_to_its_end(env, args, None, cwd)


def run_with_its_aws(env: dict[str, str], args: list[str]) -> subprocess.CompletedProcess[str]:
    """`run` for a command whose ``AWS_*`` variables (and the AWS files they name) are what a
    test sets and checks: forked even where those differ from the run's, its S3 client's
    session (botocore's, which reads them, and its AWS configuration, as it is made) dropped
    in the child, so that its first store makes one as a new process would. About a third of
    a plain start's CPU (its imports done, botocore's S3 model loaded again)."""
    return _run_to_its_end(env, args, None, own_s3_session=True)


def run_inner(env: dict[str, str], args: list[str]) -> subprocess.CompletedProcess[str]:
    """`run` in an environment built for an inner run (red team 24's ``_inner_env``, which
    leaves out the outer run's ``CI`` and ``BUILD_NUMBER``): those two put back as the run has
    them, which no code of the app reads, so that the zygote fits in CI as it does elsewhere."""
    ci = {name: os.environ[name] for name in ("CI", "BUILD_NUMBER") if name in os.environ}
    return run({**env, **ci}, args)


def run_c(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -c code`` in `env` run to its end, as `run` runs a command, its exit status
    checked: a script of the app's classes that sets up what a test needs (a
    root with a session), for about a tenth of a plain child's CPU (the zygote imported the
    app). Not for a child whose start is what a test checks: a fork is not an exec."""
    done = _run_to_its_end(env, [], code)
    assert done.returncode == 0, f"python -c exited with {done.returncode}: {done.stderr}"
    return done


def run_python(
    code: str, args: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """``python -c code *args`` in `env` and `cwd` run to its end, its output captured, as
    `run` runs a command: a script whose imports and work are what a test checks (the
    benchmarks' own, tests/test_bench_scripts.py), not its interpreter's start."""
    return _run_to_its_end(env, args, code, cwd)


def _run_to_its_end(
    env: dict[str, str],
    args: list[str],
    code: str | None,
    cwd: Path | None = None,
    own_s3_session: bool = False,
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, *(["-m", "app"] if code is None else ["-c", code]), *args]
    zygote = _forking(env, (*_GIVEN_AT_FORK, "AWS_") if own_s3_session else _GIVEN_AT_FORK)
    if zygote is None:
        return subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=120, check=False,
            stdin=subprocess.DEVNULL, cwd=cwd,
        )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="forked-app-") as directory:
        out, err = Path(directory) / "stdout", Path(directory) / "stderr"
        child = zygote.fork(env, args, out, err, code, cwd, own_s3_session)
        try:
            status = child.wait(timeout=120)
        except subprocess.TimeoutExpired:
            child.kill()  # as subprocess.run does
            child.wait()
            raise
        texts = [path.read_text() if path.exists() else "" for path in (out, err)]
    return subprocess.CompletedProcess(argv, status, *texts)


def python_c(code: str, args: list[str], log: Path) -> subprocess.Popen[bytes] | Forked:
    """``python -c code *args`` in this process's environment, its output appended to `log`,
    left running: a script of the app's classes (the zygote imported them)."""
    zygote = _forking(dict(os.environ))
    if zygote is not None:
        return zygote.fork(dict(os.environ), args, log, log, code)
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-c", code, *args], stdout=out, stderr=out)


@contextmanager
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes] | Forked, httpx.Client, Path]]:
    """A `start_server` server on the testing root ``tmp_path/data``: its process, a client
    of it (with the profile's token, if any) and the root; stopped at the block's end."""
    import httpx
    from test_server_e2e import app_env

    from app.config import load
    from app.testing.live_server import stop_server

    root = tmp_path / "data"
    env = app_env(root)
    token = load("testing", environ=env).api_token
    process, url = start_server(env, root, tmp_path / "serve.log")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            yield process, http, root
    finally:
        stop_server(process)
